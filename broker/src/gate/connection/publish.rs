//! A PUBLISH from the client: topic alias, topic checks, the client's ACL, then one of three ways:
//! a `$CONTROL` request for the security chain, a message for the router (through its guards and
//! back-pressure, sealed in its envelope: `routing::envelope`), or nothing (`$SYS`, which the gate
//! serves itself).

use bytes::Bytes;
use rumqttd::protocol::{Publish, PublishProperties};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::Connection;
use super::exit::Exit;
use crate::gate::client_log::{self, PublishLine};
use crate::gate::codec::{PublishMeta, reason};
use crate::logging::client_text;
use crate::metrics::METRICS;
use crate::routing::backpressure::TopicLanes;
use crate::routing::envelope::{self, Stamp};
use crate::routing::router_guard::{self, ToRouter};
use crate::routing::router_link::RoutingEngine;
use crate::security::{Access, ControlOutcome, ControlSender, Protocol};

/// A `$CONTROL/...` PUBLISH that passed the ACL, to be executed by `Security::control`.
pub(super) struct ControlRequest {
    topic: String,
    payload: Bytes,
    qos: u8,
    pkid: u16,
}

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// A PUBLISH from the client; a `$CONTROL/...` request is returned to be executed.
    pub(super) fn on_publish(
        &mut self,
        meta: PublishMeta,
        mut publish: Publish,
        mut properties: Option<PublishProperties>,
    ) -> Result<Option<ControlRequest>, Exit> {
        let PublishMeta { qos, pkid, dup, retain } = meta;
        let inbound_qos2 = self.extras.get().map(|extras| &extras.inbound_qos2);
        if qos == 2
            && inbound_qos2.map_or(0, |ids| ids.len()) >= self.inbound_maximum
            && !inbound_qos2.is_some_and(|ids| ids.contains(&pkid))
        {
            // MQTT 5 §4.9: more unfinished QoS 2 messages than the Receive Maximum announced.
            info!(client_id = %client_text(&self.client_id), maximum = self.inbound_maximum, "client exceeded the broker's Receive Maximum");
            return Err(Exit::Protocol(reason::RECEIVE_MAXIMUM_EXCEEDED));
        }
        if let Some(alias) = properties.as_mut().and_then(|p| p.topic_alias.take()) {
            if alias == 0 || alias > self.max_topic_alias {
                return Err(Exit::Protocol(reason::TOPIC_ALIAS_INVALID));
            }
            if publish.topic.is_empty() {
                let known = self.extras.get().and_then(|extras| extras.topic_aliases.get(&alias));
                publish.topic = known.cloned().ok_or(Exit::Protocol(reason::PROTOCOL_ERROR))?;
            } else {
                self.extras.make(self.conn_id).topic_aliases.insert(alias, publish.topic.clone());
            }
        }
        if let Some(props) = &properties {
            if !props.subscription_identifiers.is_empty() {
                return Err(Exit::Protocol(reason::PROTOCOL_ERROR));
            }
            if *props == PublishProperties::default() {
                properties = None;
            }
        }
        let topic_bytes = publish.topic.clone();
        let Some(topic) = dynsec::topic::valid_mqtt_utf8(&topic_bytes) else {
            info!(client_id = %client_text(&self.client_id), "PUBLISH topic is not valid UTF-8");
            return Err(Exit::Protocol(reason::MALFORMED_PACKET));
        };
        if !dynsec::topic::valid_topic(topic) {
            info!(client_id = %client_text(&self.client_id), topic = %client_text(topic), "invalid PUBLISH topic");
            return Err(Exit::Protocol(if topic.is_empty() {
                reason::PROTOCOL_ERROR
            } else {
                reason::TOPIC_NAME_INVALID
            }));
        }
        // docs/compatibility.md §3.5: `$SYS` and `$share` are never publishable; then the client's ACL.
        let allowed =
            !topic.starts_with("$SYS") && !topic.starts_with("$share") && self.authz.allows(Access::Publish, topic);
        let line = PublishLine { dup, qos, retain, pkid, topic: topic.as_bytes(), payload_len: publish.payload.len() };
        if !allowed {
            client_log::denied_publish(&self.client_id, &line);
            // v3: the normal flow, message dropped; v5: reason 0x87 (docs/compatibility.md §3.6).
            let code = if self.protocol == Protocol::V5 { reason::NOT_AUTHORIZED } else { reason::SUCCESS };
            if qos == 2 && code == reason::SUCCESS {
                self.extras.make(self.conn_id).inbound_qos2.insert(pkid);
            }
            self.write_ack(qos, pkid, code);
            return Ok(None);
        }
        client_log::received_publish(&self.client_id, &line);
        if qos == 2 {
            if !self.extras.make(self.conn_id).inbound_qos2.insert(pkid) {
                // A re-sent QoS 2 message whose PUBREL is still due: acknowledge, do not route again.
                self.write_ack(2, pkid, 0);
                return Ok(None);
            }
            self.inbound_qos2_changed(pkid, true);
        }
        if retain && !self.shared.config.persistence.retain_available {
            info!(client_id = %client_text(&self.client_id), "retained PUBLISH while retain_available is false");
            return Err(Exit::Protocol(reason::RETAIN_NOT_SUPPORTED));
        }
        if topic.starts_with("$CONTROL/") {
            return Ok(Some(ControlRequest { topic: topic.to_owned(), payload: publish.payload, qos, pkid }));
        }
        // A message no filter matches reaches nobody: the router is spared matching it against
        // every filter it holds (`routing::subscribed_filters`). A retained one is kept for
        // later subscribers, and with persistence the store decides what it keeps.
        // In a cluster, other nodes' subscribers count too.
        let wanted = retain
            || self.persist.is_some()
            || self.shared.cluster.is_some()
            || self.shared.subscribed_filters.any_match(&publish.topic, &mut self.last_routing_answer);
        if wanted && crate::routing::topic_form::routed(topic) {
            if let Err(hazard) = router_guard::admit(ToRouter::Publish { topic, properties: properties.as_ref() }) {
                info!(client_id = %client_text(&self.client_id), topic = %client_text(topic), %hazard, "PUBLISH the router cannot take");
                return Err(Exit::Protocol(hazard.reason_code()));
            }
            if !self.topic_budget.allows(&self.shared.routed_topics, &publish.topic) {
                debug!(client_id = %self.client_id, topic, "PUBLISH over the new-topic budget: dropped");
                let code = if self.protocol == Protocol::V5 { reason::QUOTA_EXCEEDED } else { reason::SUCCESS };
                if qos == 2 && code == reason::SUCCESS {
                    self.extras.make(self.conn_id).inbound_qos2.insert(pkid);
                }
                self.write_ack(qos, pkid, code);
                return Ok(None);
            }
            let size = 4 + publish.topic.len() + publish.payload.len();
            let lanes = TopicLanes::of(&publish.topic);
            if self.shared.pressure.record_published(&lanes, size as u64) {
                // This message still goes (the window leaves room for it); the next waits.
                self.extras.make(self.conn_id).held_lanes = Some(lanes);
            }
            METRICS.routed(&publish.topic, publish.payload.len(), retain);
            let queued = self.persist_publish(topic, &publish.payload, qos, retain, properties.as_ref());
            let mut stamp = self.stamp(qos, retain, properties.as_mut());
            stamp.queued = queued;
            if let Some(bus) = &self.shared.cluster {
                let expiry = stamp.expires_at_ms.map(|_| stamp.expiry_left(envelope::now_ms()).unwrap_or(0));
                // QoS 1/2 with persistence: this read's acknowledgements wait for JetStream
                // (`handle_reads`); for its storing only when they wait for this node's store
                // too (durable mode). Without persistence nothing waits (`MessageBus::forward`).
                use crate::cluster::reliable::Confirm;
                let durable = self.persist.is_some()
                    && self.shared.config.persistence.mode == crate::config::PersistenceMode::Durable;
                let confirm = if durable { Confirm::Stored } else { Confirm::Sent };
                let confirm =
                    bus.forward(&publish.topic, &publish.payload, qos, retain, expiry, properties.as_ref(), confirm);
                if let Some(confirm) = confirm {
                    self.extras.make(self.conn_id).forwarded.push(confirm);
                }
            }
            self.push_publish(envelope::router_packet(publish.topic, &publish.payload, stamp, properties));
        }
        self.write_ack(qos, pkid, 0);
        Ok(None)
    }

    /// With persistence: a retained message is recorded, and a message for offline persistent
    /// sessions queued; returns its store sequence if it was queued.
    fn persist_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: Option<&PublishProperties>,
    ) -> Option<u64> {
        let persist = self.persist.as_deref_mut()?;
        let expiry = properties.and_then(|p| p.message_expiry_interval);
        let persistence = &persist.persistence;
        if retain {
            persistence.retained(&mut persist.ops, topic, payload, qos, &self.client_id, expiry, properties);
        }
        persistence.sessions.offer(&mut persist.ops, topic, payload, qos, &self.client_id, expiry, properties)
    }

    /// The envelope of this client's next message; a v5 Message Expiry Interval moves from the
    /// properties into it (the gate ages it, see `envelope`).
    fn stamp(&mut self, qos: u8, retain: bool, properties: Option<&mut PublishProperties>) -> Stamp {
        self.sequence += 1;
        let expiry = properties.and_then(|p| p.message_expiry_interval.take());
        Stamp {
            qos,
            retain,
            publisher: self.publisher,
            origin: self.conn_id,
            sequence: self.sequence,
            expires_at_ms: expiry.map(|secs| envelope::now_ms() + u64::from(secs) * 1000),
            queued: None,
            addressee: None,
            share_group: None,
        }
    }

    /// A `$CONTROL/...` request: executed, acknowledged, then its replies and kicks go out (in
    /// that order, through the mailboxes, so a kicked admin still gets its PUBACK and reply).
    pub(super) async fn control_request(&mut self, request: ControlRequest) {
        let ControlRequest { topic, payload, qos, pkid } = request;
        let sender = ControlSender {
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            listener: self.listener.id,
            origin: crate::security::audit::ControlOrigin::Mqtt,
        };
        let who = (&*self.client_id, self.username.as_deref());
        let outcome = match self.shared.broker_api.handle(&topic, &payload, who) {
            Some(reply) => Some(ControlOutcome { replies: vec![reply], kicks: Vec::new() }),
            None => match self.shared.security.control(sender, &topic, payload.to_vec()) {
                Some(pending) => Some(pending.await),
                None => None,
            },
        };
        self.write_ack(qos, pkid, 0);
        if outcome.is_none() {
            // mosquitto 2.1.2 answers the requester alone, subscribed or not.
            debug!(client_id = %client_text(&self.client_id), topic = %client_text(&topic), "no control endpoint");
            self.write_control_reply(&crate::gate::broker_api::endpoint_not_available(&topic));
        }
        if let Some(outcome) = outcome {
            let security = &self.shared.security;
            for reply in outcome.replies {
                let topic = reply.topic.clone();
                let everywhere = topic == crate::gate::broker_api::RESPONSE_TOPIC;
                self.shared.control.deliver(reply, |listener| everywhere || security.serves_control(listener, &topic));
            }
            for target in &outcome.kicks {
                self.shared.sessions.kick(target);
            }
        }
    }
}
