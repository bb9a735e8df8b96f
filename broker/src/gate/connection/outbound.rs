//! The outbound path: router notifications (deliveries checked against the client's ACL and
//! maximum packet size, paced by its Receive Maximum, acknowledgements, back-pressure probes),
//! the mailbox (control replies, `$SYS` messages, kicks), and the one write per wake-up.

use bytes::{Buf, Bytes, BytesMut};
use rumqttd::protocol::{Packet, PingReq, Publish};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::info;

use super::exit::Exit;
use super::{Connection, WRITE_BUFFER_KEEP, WRITE_HIGH_WATER};
use crate::gate::client_log::{self, PublishLine};
use crate::gate::codec::{self, Outgoing, PublishMeta};
use crate::gate::delivery::{self, RouterCopy};
use crate::gate::flow_control::Waiting;
use crate::gate::session::Mail;
use crate::gate::subscriptions;
use crate::logging::client_text;
use crate::metrics::{METRICS, Metrics};
use crate::routing::backpressure::ProbeStep;
use crate::routing::envelope;
use crate::routing::router_link::{FromRouter, Routed, RouterError, RouterLink, RoutingEngine, carries_any};
use crate::security::{Access, ControlReply, Protocol};

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Writes what the wake-up produced (one write), then lets a paused router continue.
    /// (With persistence, what waits for a read's sync stays in the buffer: `saving`.)
    pub(super) async fn write_out(&mut self) -> Result<(), Exit> {
        let writable = self.writable();
        if writable > 0 {
            let timeout = self.shared.config.gate.write_timeout;
            // Flushed too: a websocket (see `websocket`) sends a message only when flushed; for TCP
            // and TLS this costs nothing.
            let written = async {
                self.stream.write_all(&self.write_buf[..writable]).await?;
                self.stream.flush().await
            };
            match tokio::time::timeout(timeout, written).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Exit::Lost),
                Err(_) => {
                    info!(client_id = %client_text(&self.client_id), "client not reading: write timed out");
                    return Err(Exit::Lost);
                }
            }
            if writable < self.write_buf.len() {
                self.write_buf.advance(writable);
                if let Some(persist) = self.persist.as_deref_mut() {
                    persist.written_out(writable);
                }
            } else if self.write_buf.capacity() > WRITE_BUFFER_KEEP {
                self.write_buf = BytesMut::new();
            } else {
                self.write_buf.clear();
            }
        }
        if std::mem::take(&mut self.router_paused) {
            // Boxed: rare, and rumqttd's wake-up future inline would be ~700 bytes of every
            // connection's task (docs/benchmarks.md, "The gate's memory per connection").
            Box::pin(self.link.resume()).await.map_err(|_| Exit::RouterGone)?;
        }
        Ok(())
    }

    /// Handles one router notification and everything else already waiting.
    pub(super) fn handle_router(&mut self, first: Result<FromRouter, RouterError>) -> Result<(), Exit> {
        self.on_router(first)?;
        while self.write_buf.len() < WRITE_HIGH_WATER {
            let Some(note) = self.link.try_recv() else { break };
            self.on_router(note)?;
        }
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.submit_dequeued(&self.client_id);
        }
        self.flush_router()
    }

    pub(super) fn on_router(&mut self, note: Result<FromRouter, RouterError>) -> Result<(), Exit> {
        match note.map_err(|_| Exit::RouterGone)? {
            FromRouter::Publish(routed) => self.deliver(routed),
            FromRouter::SubAck(suback) => {
                self.pending_acks.router_suback(suback.return_codes.into_iter().map(subscriptions::router_code));
                self.write_ready_acks();
            }
            FromRouter::PubRel(pkid) => {
                let link = &mut self.link;
                let acks = &mut self.extras.make(self.conn_id).acks;
                if let Some(client_pkid) = acks.router_pubrel(pkid, &mut |p| link.push(p)) {
                    codec::ack(&mut self.write_buf, self.protocol, codec::PUBREL, client_pkid, 0);
                    client_log::sending_ack("PUBREL", &self.client_id, client_pkid, None);
                }
            }
            FromRouter::PingResp => self.on_probe_answer(),
            FromRouter::Paused => {
                self.router_paused = true;
                if let Some(extras) = self.extras.get_mut() {
                    extras.backlog.router_paused();
                }
            }
            FromRouter::Nothing => {}
        }
        Ok(())
    }

    /// A message from the router for this client: taken out of its envelope, decided by MQTT's
    /// rules (`gate::delivery`), checked against the client's ACL, written at once (QoS 0, or
    /// while the client's window has room) or kept until there is room (`gate::flow_control`).
    /// A QoS>0 router copy the client does not get, or gets at a lower QoS, is still
    /// acknowledged to the router, in order.
    pub(super) fn deliver(&mut self, routed: Routed) {
        let Routed { topic, payload, qos: router_qos, pkid, retain: retained_replay, properties } = routed;
        if let Some(extras) = self.extras.get_mut() {
            extras.backlog.forwarded(router_qos, 4 + topic.len() + payload.len());
        }
        if retained_replay && self.router_replays_dropped() {
            // The gate replays retained messages itself (`replay_retained_for_routed`).
            return self.drop_router_copy(pkid, router_qos);
        }
        // Set when the client will never get this message (its ACL, its expiry): a stored copy
        // queued for it goes.
        let mut settled = None;
        let decided = match envelope::open(payload) {
            // (The empty payload of a retained-message clear: its sealed twin carries it.)
            None => None,
            // (A stored message handed back for another client is not this client's.)
            Some((stamp, _)) if stamp.addressee.is_some_and(|to| to != self.publisher) => None,
            Some((stamp, payload)) => match std::str::from_utf8(&topic).ok().filter(|t| self.wants_delivery(t)) {
                None => None,
                Some(topic_str) if !self.authz.allows(Access::Receive, topic_str) => {
                    settled = stamp.queued;
                    None
                }
                Some(topic_str) => {
                    if stamp.retain && !retained_replay {
                        self.note_live_retained(&topic);
                    }
                    let clustered = self.shared.cluster.is_some();
                    let copy = RouterCopy { topic: topic_str, stamp: &stamp, router_qos, retained_replay, clustered };
                    let decision = delivery::decide(
                        copy,
                        &self.subscriptions,
                        self.publisher,
                        &mut self.recent_copies,
                        envelope::now_ms,
                    );
                    match decision {
                        Ok(decision) => Some((decision, stamp, payload)),
                        Err(skip) => {
                            if skip == delivery::Skip::Expired {
                                settled = stamp.queued;
                            }
                            None
                        }
                    }
                }
            },
        };
        let Some((decision, stamp, payload)) = decided else {
            if settled.is_some() {
                self.stored_copy_written(0, settled);
            }
            return self.drop_router_copy(pkid, router_qos);
        };
        let mut properties = properties;
        if !decision.subscription_ids.is_empty() {
            properties.get_or_insert_default().subscription_identifiers = decision.subscription_ids;
        } else if let Some(carried) = properties.as_mut() {
            carried.subscription_identifiers.clear(); // (the router's own: not the client's)
        }
        let qos = decision.qos;
        let delivery = Waiting { topic, payload, properties, stamp, qos, retain: decision.retain, router_pkid: pkid };
        let queued = stamp.queued;
        if qos == 0 {
            self.write_delivery(delivery, 0);
            self.stored_copy_written(0, queued);
            self.drop_router_copy(pkid, router_qos); // (the client has nothing to acknowledge)
        } else if self.window.must_wait() {
            // Its slot is taken now, so that what the router sent after it is acknowledged after it.
            let link = &mut self.link;
            self.extras.make(self.conn_id).acks.sent_as(pkid, router_qos, qos, None, &mut |p| link.push(p));
            self.window.wait(delivery);
        } else {
            let client_pkid = self.window.take_pkid();
            if self.write_delivery(delivery, client_pkid) {
                self.stored_copy_written(client_pkid, queued);
                let link = &mut self.link;
                let acks = &mut self.extras.make(self.conn_id).acks;
                acks.sent_as(pkid, router_qos, qos, Some(client_pkid), &mut |p| link.push(p));
            } else {
                self.window.release(client_pkid);
                self.stored_copy_written(0, queued); // (dropped: the client will never get it)
                self.drop_router_copy(pkid, router_qos);
            }
        }
    }

    /// Writes the deliveries that waited, in order, while the client's window has room.
    pub(super) fn write_waiting(&mut self) {
        while let Some(delivery) = self.window.next_ready() {
            let router_pkid = delivery.router_pkid;
            if router_pkid == crate::gate::flow_control::HUB_PKID {
                let client_pkid = self.window.take_pkid();
                self.write_hub_delivery(delivery, client_pkid);
                continue;
            }
            let queued = delivery.stamp.queued;
            let client_pkid = self.window.take_pkid();
            if self.write_delivery(delivery, client_pkid) {
                self.stored_copy_written(client_pkid, queued);
                self.extras.make(self.conn_id).acks.written(router_pkid, client_pkid);
            } else {
                self.window.release(client_pkid);
                self.stored_copy_written(0, queued);
                let link = &mut self.link;
                self.extras.make(self.conn_id).acks.abandoned(router_pkid, &mut |p| link.push(p));
            }
        }
        self.drain_hub();
    }

    /// Writes one delivery with the client's packet id `pkid` (none at QoS 0). False when it is not
    /// written: its Message Expiry Interval ran out (while it waited), or it is larger than the
    /// client's maximum packet size.
    pub(super) fn write_delivery(&mut self, delivery: Waiting, pkid: u16) -> bool {
        let Waiting { topic, payload, mut properties, stamp, qos, retain, .. } = delivery;
        if stamp.expires_at_ms.is_some() {
            match stamp.expiry_left(envelope::now_ms()) {
                Some(0) => return false,
                left => properties.get_or_insert_default().message_expiry_interval = left,
            }
        } else if let Some(carried) = properties.as_mut() {
            carried.message_expiry_interval = None;
        }
        let start = self.write_buf.len();
        let (alias, new_alias) = self.outgoing_alias(&topic);
        if alias.is_some() {
            properties.get_or_insert_default().topic_alias = alias;
        } else if let Some(carried) = properties.as_mut() {
            carried.topic_alias = None;
        }
        let message = Outgoing {
            topic: if alias.is_some() && new_alias.is_none() { b"" } else { &topic },
            payload: &payload,
            qos,
            pkid,
            retain,
        };
        let properties = properties.as_deref().filter(|p| carries_any(p));
        let meta = codec::encode_delivery(&mut self.write_buf, self.protocol, message, properties);
        if self.write_buf.len() - start > self.client_max_packet {
            Metrics::inc(&METRICS.publish_dropped);
            self.write_buf.truncate(start);
            return false;
        }
        if let Some(alias) = new_alias {
            self.extras.make(self.conn_id).outgoing_aliases.insert(topic.clone(), alias);
        }
        METRICS.publish_out(payload.len());
        if tracing::enabled!(tracing::Level::DEBUG) {
            let PublishMeta { qos, pkid, dup, retain } = meta;
            let line = PublishLine { dup, qos, retain, pkid, topic: &topic, payload_len: payload.len() };
            client_log::sending_publish(&self.client_id, &line);
        }
        true
    }

    /// With persistence: a delivery of a stored copy was written with the client's packet id
    /// (0: at QoS 0, or dropped), so the copy goes now or with the client's acknowledgement.
    fn stored_copy_written(&mut self, client_pkid: u16, queued: Option<u64>) {
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.written(client_pkid, queued);
        }
    }

    /// A router copy the client does not get: a QoS>0 one is acknowledged to the router in turn.
    fn drop_router_copy(&mut self, pkid: u16, router_qos: u8) {
        if router_qos > 0 {
            let link = &mut self.link;
            self.extras.make(self.conn_id).acks.dropped(pkid, router_qos, &mut |p| link.push(p));
        }
    }

    /// v5 outgoing topic aliases, per topic (never per filter: see docs/rumqttd.md defect 8),
    /// while the client's Topic Alias Maximum leaves room; then topics go out in full. Returns
    /// the alias to send and, for a new one, the alias to remember once the message is written
    /// (a new alias goes out with its topic, a known one with an empty topic).
    fn outgoing_alias(&self, topic: &Bytes) -> (Option<u16>, Option<u16>) {
        if self.protocol != Protocol::V5 || self.client_topic_alias_max == 0 {
            return (None, None);
        }
        let aliases = self.extras.get().map(|extras| &extras.outgoing_aliases);
        if let Some(&alias) = aliases.and_then(|aliases| aliases.get(topic)) {
            return (Some(alias), None);
        }
        match u16::try_from(aliases.map_or(0, |aliases| aliases.len()) + 1) {
            Ok(next) if next <= self.client_topic_alias_max => (Some(next), Some(next)),
            _ => (None, None),
        }
    }

    /// The router answered a back-pressure probe (we answer the client's PINGREQs ourselves).
    pub(super) fn on_probe_answer(&mut self) {
        let outstanding = self.extras.outstanding();
        let Some(extras) = self.extras.get_mut() else { return };
        let again = match extras.backlog.probe_answered(&self.shared.pressure) {
            ProbeStep::SendSecond => true,
            // A probe that proved nothing, or a lag that grew meanwhile: probe again now rather
            // than wait for a request that was already made (one probe at a time, so the router's
            // answers pace this).
            ProbeStep::Done => extras.backlog.wants_probe(&self.shared.pressure, outstanding, true),
        };
        if again {
            self.link.push(Packet::PingReq(PingReq));
        }
    }

    pub(super) fn handle_mail(&mut self, first: Mail) -> Result<(), Exit> {
        let mut next = Some(first);
        while let Some(mail) = next.take() {
            match mail {
                Mail::Kick(reason) => return Err(Exit::Kicked(reason)),
                Mail::Control(reply) => self.write_control_reply(&reply),
                Mail::Sys(message) => self.write_sys(&message),
                Mail::Describe(reply) => {
                    let _ = reply.send(self.details());
                }
            }
            next = self.mailbox.try_recv().ok();
        }
        Ok(())
    }

    /// What the console's connected-clients view shows of this connection.
    fn details(&self) -> crate::gate::mailbox::ConnectionDetails {
        let protocol = match self.protocol {
            crate::security::Protocol::V31 => "3.1",
            crate::security::Protocol::V311 => "3.1.1",
            crate::security::Protocol::V5 => "5",
        };
        let mut subscriptions: Vec<String> = self.subscriptions.keys().cloned().collect();
        subscriptions.sort();
        crate::gate::mailbox::ConnectionDetails {
            protocol,
            subscriptions,
            in_flight: self.window.in_flight(),
            queued: self.window.queued(),
        }
    }

    pub(super) fn write_control_reply(&mut self, reply: &ControlReply) {
        let publish =
            Publish::new(Bytes::copy_from_slice(reply.topic.as_bytes()), Bytes::copy_from_slice(&reply.payload), false);
        self.write_local(publish);
    }

    /// SUBACKs and UNSUBACKs that are complete, then the retained `$SYS` values they bring.
    pub(super) fn write_ready_acks(&mut self) {
        for message in self.pending_acks.write_ready(&mut self.write_buf, self.protocol, &self.client_id) {
            self.write_sys(&message);
        }
        self.hub_retained_after_suback();
    }

    pub(super) fn write_sys(&mut self, message: &crate::sys_topics::SysMessage) {
        let topic = Bytes::copy_from_slice(message.topic.as_bytes());
        self.write_local(Publish::new(topic, message.payload.clone(), message.retain));
    }

    /// Writes a QoS 0 message the gate itself publishes, unless it exceeds the client's maximum
    /// packet size.
    pub(super) fn write_local(&mut self, publish: Publish) {
        let payload_len = publish.payload.len();
        let topic = publish.topic.clone(); // (refcounted) for the `-v` line
        let start = self.write_buf.len();
        if let Some(meta) = codec::encode_publish(&mut self.write_buf, self.protocol, publish, None) {
            if self.write_buf.len() - start > self.client_max_packet {
                self.write_buf.truncate(start);
                Metrics::inc(&METRICS.publish_dropped);
            } else {
                METRICS.publish_out(payload_len);
                let PublishMeta { qos, pkid, dup, retain } = meta;
                let line = PublishLine { dup, qos, retain, pkid, topic: &topic, payload_len };
                client_log::sending_publish(&self.client_id, &line);
            }
        }
    }
}
