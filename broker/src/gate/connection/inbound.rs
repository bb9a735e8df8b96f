//! The inbound path: complete frames are cut from the read buffer, decoded and dispatched; the
//! router link is attached when something first needs it and handed one batch per read.

use bytes::{Buf, BytesMut};
use rumqttd::protocol::{DisconnectReasonCode, Packet, PingReq, PubRecReason};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::Connection;
use super::exit::Exit;
use super::publish::ControlRequest;
use crate::gate::client_log;
use crate::gate::codec::{self, FrameError, reason};
use crate::logging::client_text;
use crate::metrics::METRICS;
use crate::routing::router_link::{RouterLink, RoutingEngine};

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Handles every complete packet in the read buffer, then hands the router one batch.
    pub(super) async fn handle_reads(&mut self) -> Result<(), Exit> {
        let max_packet = self.shared.config.max_packet_size as usize;
        self.reads_pending = false;
        // This read's acknowledgements start here: they go out only once its changes are saved.
        let acks_from = self.write_buf.len();
        // Publishes read now wait for subscriptions whose links began attaching before.
        let horizon = self.shared.attach_fence.horizon();
        loop {
            if self.held_by_hub() {
                // A congested hub queue: leave the rest for when it has drained (`routing::hub`).
                self.reads_pending = true;
                break;
            }
            if self.extras.held_lanes().is_some() {
                if self.held() {
                    // Back-pressure: leave the rest for when these lanes may continue.
                    self.reads_pending = true;
                    break;
                }
                if let Some(extras) = self.extras.get_mut() {
                    extras.held_lanes = None;
                }
            }
            let header = match codec::peek_frame(&self.read_buf, max_packet) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(FrameError::TooLarge(size)) => {
                    info!(client_id = %client_text(&self.client_id), size, "packet larger than max_packet_size");
                    return Err(Exit::Protocol(reason::PACKET_TOO_LARGE));
                }
                Err(error) => {
                    info!(client_id = %client_text(&self.client_id), %error, "malformed packet");
                    return Err(Exit::Protocol(reason::MALFORMED_PACKET));
                }
            };
            if header.packet_type() == codec::PUBACK && header.remaining == 2 {
                // The common acknowledgement (a QoS 1 subscriber's, one per message), read in
                // place: no frame split, no decoded `Packet` to move around.
                let at = header.header_len;
                let pkid = u16::from_be_bytes([self.read_buf[at], self.read_buf[at + 1]]);
                self.read_buf.advance(header.frame_len());
                client_log::received_ack("PUBACK", &self.client_id, pkid, Some(0));
                METRICS.packet_in();
                self.on_client_puback(pkid);
                continue;
            }
            let frame = self.read_buf.split_to(header.frame_len());
            METRICS.packet_in();
            // Synchronous on purpose: only a `$CONTROL` request has something to await, and a
            // future per packet would be moved around for nothing.
            if let Some(request) = self.handle_frame(frame)? {
                self.attach_if_wanted().await?;
                self.flush_router()?; // what came before the request is not kept waiting
                Box::pin(self.control_request(request)).await;
            }
        }
        if std::mem::take(&mut self.client_acked)
            && let Some(extras) = self.extras.get_mut()
        {
            extras.backlog.progress(); // once per read, not per acknowledgement: it reads the clock
        }
        self.attach_if_wanted().await?;
        let outstanding = self.extras.outstanding();
        if self.link.is_attached()
            && let Some(extras) = self.extras.get_mut()
            && extras.backlog.wants_probe(&self.shared.pressure, outstanding, false)
        {
            self.link.push(Packet::PingReq(PingReq));
        }
        if self.shared.attach_fence.waits_for(horizon) {
            // Boxed: the wait's timer and notification stay out of every connection's state.
            Box::pin(self.shared.attach_fence.wait_for(horizon)).await;
        }
        self.flush_router()?;
        self.confirm_forwarded(acks_from).await?;
        // With persistence, this read's acknowledgements wait for its changes to be saved; the
        // connection reads on meanwhile (`saving`).
        self.save_changes(acks_from)
    }

    /// In a cluster: this read's QoS 1/2 messages are in JetStream before its acknowledgements
    /// are written (docs/cluster.md). If JetStream does not confirm them in time, the
    /// acknowledgements are withdrawn and the client disconnected, so that it sends again.
    async fn confirm_forwarded(&mut self, acks_from: usize) -> Result<(), Exit> {
        let Some(extras) = self.extras.get_mut().filter(|extras| !extras.forwarded.is_empty()) else {
            return Ok(());
        };
        let pending = std::mem::take(&mut extras.forwarded);
        match Box::pin(crate::cluster::reliable::Confirmation::all(pending)).await {
            Ok(()) => Ok(()),
            Err(reason) => {
                warn!(client_id = %client_text(&self.client_id), %reason, "cluster: QoS 1/2 message not confirmed by JetStream: client disconnected unacknowledged");
                self.write_buf.truncate(acks_from.min(self.write_buf.len()));
                Err(Exit::NotSaved)
            }
        }
    }

    /// Attaches the router link once something was pushed for it (see `lazy_link`).
    pub(super) async fn attach_if_wanted(&mut self) -> Result<(), Exit> {
        if !self.link.wants_attach() {
            return Ok(());
        }
        Box::pin(self.attach()).await
    }

    pub(super) async fn attach(&mut self) -> Result<(), Exit> {
        if self.persistent_link {
            // Nothing the router may still keep for this id belongs to this session.
            self.shared.engine.purge(&self.client_id).await;
        }
        let shared = self.shared.clone();
        let ticket = self.link.queued_subscribe().then(|| shared.attach_fence.enter());
        match self.shared.engine.attach(&self.client_id, self.persistent_link).await {
            Ok(attached) => {
                self.link.install(attached.link);
                // the link's start-up PINGREQ
                self.extras.make(self.conn_id).backlog.probe_sent(&self.shared.pressure, 0);
                if ticket.is_some() {
                    // The SUBSCRIBE reaches the router before the ticket lets publishers go.
                    self.flush_router()?;
                }
                drop(ticket);
                Ok(())
            }
            Err(error) => {
                warn!(client_id = %client_text(&self.client_id), %error, "router refused the client");
                Err(Exit::RouterRefused)
            }
        }
    }

    pub(super) fn flush_router(&mut self) -> Result<(), Exit> {
        // The pool first: what went there was read before what waits in the link (`hub`).
        self.flush_pool()?;
        self.link.flush().map_err(|_| Exit::RouterGone)
    }

    pub(super) fn on_client_puback(&mut self, pkid: u16) {
        self.client_acked = true;
        if self.hub_puback(pkid) {
            return;
        }
        let link = &mut self.link;
        if let Some(extras) = self.extras.get_mut()
            && extras.acks.client_ack(pkid, 1, false, &mut |p| link.push(p))
        {
            self.client_finished(pkid);
        }
    }

    /// The client is done with a delivery's packet id: room for what waits.
    fn client_finished(&mut self, pkid: u16) {
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.acknowledged(&self.client_id, pkid);
        }
        self.window.release(pkid);
        self.write_waiting();
    }

    pub(super) fn handle_frame(&mut self, frame: BytesMut) -> Result<Option<ControlRequest>, Exit> {
        let packet_type = frame[0] >> 4;
        if packet_type == codec::CONNECT {
            info!(client_id = %client_text(&self.client_id), "second CONNECT: closing");
            return Err(Exit::Protocol(reason::PROTOCOL_ERROR));
        }
        let meta = if packet_type == codec::PUBLISH { codec::publish_meta(&frame) } else { None };
        let packet = match codec::decode(self.protocol, frame) {
            Ok(packet) => packet,
            Err(error) => {
                info!(client_id = %client_text(&self.client_id), %error, "malformed packet");
                return Err(Exit::Protocol(reason::MALFORMED_PACKET));
            }
        };
        match packet {
            Packet::Publish(publish, properties) => {
                let meta = meta.ok_or(Exit::Protocol(reason::MALFORMED_PACKET))?;
                METRICS.publish_in(publish.payload.len());
                self.on_publish(meta, publish, properties)
            }
            Packet::PubAck(ack, _) => {
                client_log::received_ack("PUBACK", &self.client_id, ack.pkid, Some(puback_code(&ack.reason)));
                self.on_client_puback(ack.pkid);
                Ok(None)
            }
            Packet::PubRec(rec, _) => {
                client_log::received_ack("PUBREC", &self.client_id, rec.pkid, None);
                self.client_acked = true;
                let refused = !matches!(rec.reason, PubRecReason::Success | PubRecReason::NoMatchingSubscribers);
                if self.hub_pubrec(rec.pkid, refused) {
                    return Ok(None);
                }
                let link = &mut self.link;
                if let Some(extras) = self.extras.get_mut()
                    && extras.acks.client_ack(rec.pkid, 2, refused, &mut |p| link.push(p))
                {
                    if refused {
                        self.client_finished(rec.pkid);
                    } else if let Some(persist) = self.persist.as_deref_mut() {
                        persist.pubrec(&self.client_id, rec.pkid);
                    }
                }
                Ok(None)
            }
            Packet::PubComp(comp, _) => {
                let code = match comp.reason {
                    rumqttd::protocol::PubCompReason::Success => reason::SUCCESS,
                    rumqttd::protocol::PubCompReason::PacketIdentifierNotFound => reason::PACKET_IDENTIFIER_NOT_FOUND,
                };
                client_log::received_ack("PUBCOMP", &self.client_id, comp.pkid, Some(code));
                self.client_acked = true;
                if self.hub_pubcomp(comp.pkid) {
                    return Ok(None);
                }
                let link = &mut self.link;
                if let Some(extras) = self.extras.get_mut()
                    && extras.acks.client_pubcomp(comp.pkid, &mut |p| link.push(p))
                {
                    self.client_finished(comp.pkid);
                }
                Ok(None)
            }
            Packet::PubRel(rel, _) => {
                client_log::received_ack("PUBREL", &self.client_id, rel.pkid, None);
                if self.extras.get_mut().is_some_and(|extras| extras.inbound_qos2.remove(&rel.pkid)) {
                    self.inbound_qos2_changed(rel.pkid, false);
                }
                codec::ack(&mut self.write_buf, self.protocol, codec::PUBCOMP, rel.pkid, reason::SUCCESS);
                client_log::sending_ack("PUBCOMP", &self.client_id, rel.pkid, None);
                Ok(None)
            }
            Packet::Subscribe(subscribe, properties) => {
                client_log::received("SUBSCRIBE", &self.client_id);
                self.on_subscribe(subscribe, properties).map(|()| None)
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                client_log::received("UNSUBSCRIBE", &self.client_id);
                self.on_unsubscribe(unsubscribe).map(|()| None)
            }
            Packet::PingReq(_) => {
                client_log::received("PINGREQ", &self.client_id);
                codec::pingresp(&mut self.write_buf);
                client_log::sending("PINGRESP", &self.client_id);
                Ok(None)
            }
            Packet::Disconnect(disconnect, properties) => {
                client_log::received("DISCONNECT", &self.client_id);
                if let Some(expiry) = properties.and_then(|p| p.session_expiry_interval) {
                    self.session_expiry = expiry;
                }
                let will = disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
                Err(Exit::Disconnected { will })
            }
            _ => Err(Exit::Protocol(reason::PROTOCOL_ERROR)),
        }
    }

    pub(super) fn write_ack(&mut self, qos: u8, pkid: u16, reason: u8) {
        match qos {
            1 => {
                codec::ack(&mut self.write_buf, self.protocol, codec::PUBACK, pkid, reason);
                client_log::sending_ack("PUBACK", &self.client_id, pkid, Some(reason));
            }
            2 => {
                codec::ack(&mut self.write_buf, self.protocol, codec::PUBREC, pkid, reason);
                client_log::sending_ack("PUBREC", &self.client_id, pkid, Some(reason));
            }
            _ => {}
        }
    }
}

/// The reason code of a v5 PUBACK (0 for 3.x, which has none).
fn puback_code(code: &rumqttd::protocol::PubAckReason) -> u8 {
    use rumqttd::protocol::PubAckReason;
    match code {
        PubAckReason::Success => reason::SUCCESS,
        PubAckReason::NoMatchingSubscribers => reason::NO_MATCHING_SUBSCRIBERS,
        PubAckReason::UnspecifiedError => reason::UNSPECIFIED_ERROR,
        PubAckReason::ImplementationSpecificError => reason::IMPLEMENTATION_SPECIFIC_ERROR,
        PubAckReason::NotAuthorized => reason::NOT_AUTHORIZED,
        PubAckReason::TopicNameInvalid => reason::TOPIC_NAME_INVALID,
        PubAckReason::PacketIdentifierInUse => reason::PACKET_IDENTIFIER_IN_USE,
        PubAckReason::QuotaExceeded => reason::QUOTA_EXCEEDED,
        PubAckReason::PayloadFormatInvalid => reason::PAYLOAD_FORMAT_INVALID,
    }
}
