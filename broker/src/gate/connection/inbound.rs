//! The inbound path: complete frames are cut from the read buffer, decoded and dispatched; the
//! router link is attached when something first needs it and handed one batch per read.

use bytes::{Buf, BytesMut};
use rumqttd::protocol::{DisconnectReasonCode, Packet, PingReq, PubRecReason};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use super::Connection;
use super::exit::Exit;
use super::publish::ControlRequest;
use crate::gate::codec::{self, FrameError, reason};
use crate::logging::client_text;
use crate::metrics::METRICS;
use crate::routing::router_link::{RouterLink, RoutingEngine};

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Handles every complete packet in the read buffer, then hands the router one batch.
    pub(super) async fn handle_reads(&mut self) -> Result<(), Exit> {
        let max_packet = self.shared.config.max_packet_size as usize;
        self.reads_pending = false;
        loop {
            if self.held_lanes.is_some() {
                if self.held() {
                    // Back-pressure: leave the rest for when these lanes may continue.
                    self.reads_pending = true;
                    break;
                }
                self.held_lanes = None;
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
        if std::mem::take(&mut self.client_acked) {
            self.backlog.progress(); // once per read, not per acknowledgement: it reads the clock
        }
        self.attach_if_wanted().await?;
        if self.link.is_attached() && self.backlog.wants_probe(&self.shared.pressure, self.acks.outstanding(), false) {
            self.link.push(Packet::PingReq(PingReq));
        }
        self.flush_router()
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
        match self.shared.engine.attach(&self.client_id, self.persistent_link).await {
            Ok(attached) => {
                self.link.install(attached.link);
                self.backlog.probe_sent(&self.shared.pressure, 0); // the link's start-up PINGREQ
                Ok(())
            }
            Err(error) => {
                warn!(client_id = %client_text(&self.client_id), %error, "router refused the client");
                Err(Exit::RouterRefused)
            }
        }
    }

    pub(super) fn flush_router(&mut self) -> Result<(), Exit> {
        self.link.flush().map_err(|_| Exit::RouterGone)
    }

    pub(super) fn on_client_puback(&mut self, pkid: u16) {
        self.client_acked = true;
        let link = &mut self.link;
        self.acks.client_ack(pkid, 1, false, &mut |p| link.push(p));
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
                info!(client_id = %client_text(&self.client_id), ?error, "malformed packet");
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
                self.on_client_puback(ack.pkid);
                Ok(None)
            }
            Packet::PubRec(rec, _) => {
                self.client_acked = true;
                let refused = !matches!(rec.reason, PubRecReason::Success | PubRecReason::NoMatchingSubscribers);
                let link = &mut self.link;
                self.acks.client_ack(rec.pkid, 2, refused, &mut |p| link.push(p));
                Ok(None)
            }
            Packet::PubComp(comp, _) => {
                self.client_acked = true;
                let link = &mut self.link;
                self.acks.client_pubcomp(comp.pkid, &mut |p| link.push(p));
                Ok(None)
            }
            Packet::PubRel(rel, _) => {
                self.inbound_qos2.remove(&rel.pkid);
                codec::ack(&mut self.write_buf, self.protocol, codec::PUBCOMP, rel.pkid, reason::SUCCESS);
                Ok(None)
            }
            Packet::Subscribe(subscribe, properties) => self.on_subscribe(subscribe, properties).map(|()| None),
            Packet::Unsubscribe(unsubscribe, _) => self.on_unsubscribe(unsubscribe).map(|()| None),
            Packet::PingReq(_) => {
                codec::pingresp(&mut self.write_buf);
                Ok(None)
            }
            Packet::Disconnect(disconnect, properties) => {
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
            1 => codec::ack(&mut self.write_buf, self.protocol, codec::PUBACK, pkid, reason),
            2 => codec::ack(&mut self.write_buf, self.protocol, codec::PUBREC, pkid, reason),
            _ => {}
        }
    }
}
