//! Routing across nodes: every message a client publishes on one node is published on core NATS
//! under its topic's subject ([`super::subject`]), and every node injects what the others publish
//! into its own router, where it is delivered as any message is — matched by MQTT's rules, checked
//! against each receiving client's ACL on the delivery path. Retained messages are stored by
//! every node that is running when they are published.
//!
//! Headers carry what the envelope says (`routing::envelope`): QoS, retain flag, the seconds left
//! before the message expires, and the node it came from (a node skips its own messages).
//!
//! Client ids: each claim of a client id on a node is announced on `<cluster>.claim`; a node with
//! a live connection of that id takes it over, as it would for a second connection of its own.
//! Sessions do not move between nodes.
//!
//! Core NATS delivers at most once: a message in flight when a node or NATS fails is lost across
//! nodes, whatever its QoS (docs/cluster.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::config::ClusterConfig;
use super::subject::{subject_to_topic, topic_to_subject};
use crate::routing::envelope::{self, Publisher, Stamp};
use crate::routing::router_link::RoutingEngine;

const NODE: &str = "Dynsec-Node";
const QOS: &str = "Dynsec-Qos";
const RETAIN: &str = "Dynsec-Retain";
const EXPIRY: &str = "Dynsec-Expiry";
/// Messages waiting for NATS before new ones are dropped (with a warning).
const OUTBOX: usize = 65_536;
/// The envelope origin of messages from other nodes: above every local connection id.
const REMOTE_ORIGIN: u64 = 1 << 63;

/// One message on its way to the other nodes.
struct Outgoing {
    topic: Bytes,
    payload: Bytes,
    qos: u8,
    retain: bool,
    expiry_secs: Option<u32>,
}

/// This node's side of cross-node routing.
pub struct MessageBus {
    outbox: mpsc::Sender<Outgoing>,
    dropped: AtomicU64,
    client: async_nats::Client,
    claim_subject: String,
    node: String,
}

impl MessageBus {
    /// Subscribes to the other nodes' messages (injected into `engine`) and starts the sender.
    /// `take_over` is called with each client id another node claims.
    pub async fn start<E: RoutingEngine>(
        client: &async_nats::Client,
        config: &ClusterConfig,
        engine: Arc<E>,
        take_over: impl Fn(&str) + Send + 'static,
    ) -> Result<Arc<MessageBus>, String> {
        let prefix = format!("{}.msg", config.name);
        let node = config.node_name.clone();
        let claim_subject = format!("{}.claim", config.name);
        let claims = client
            .subscribe(claim_subject.clone())
            .await
            .map_err(|e| format!("subscribing to the other nodes' client ids: {e}"))?;
        tokio::spawn(receive_claims(claims, node.clone(), take_over));
        let inbound = client
            .subscribe(format!("{prefix}.>"))
            .await
            .map_err(|e| format!("subscribing to the other nodes' messages: {e}"))?;
        tokio::spawn(receive(inbound, prefix.clone(), node.clone(), engine));
        let (outbox, queued) = mpsc::channel(OUTBOX);
        tokio::spawn(send(client.clone(), prefix, node.clone(), queued));
        Ok(Arc::new(MessageBus { outbox, dropped: AtomicU64::new(0), client: client.clone(), claim_subject, node }))
    }

    /// Announces that a client connecting here claimed `client_id` (never blocks).
    pub fn claimed(&self, client_id: &str) {
        let (client, subject) = (self.client.clone(), self.claim_subject.clone());
        let mut headers = HeaderMap::new();
        headers.insert(NODE, self.node.as_str());
        let id = Bytes::copy_from_slice(client_id.as_bytes());
        tokio::spawn(async move {
            if let Err(e) = client.publish_with_headers(subject, headers, id).await {
                tracing::debug!("cluster: client id claim not announced: {e}");
            }
        });
    }

    /// Sends a message a local client published to the other nodes (never blocks).
    pub fn forward(&self, topic: &Bytes, payload: &Bytes, qos: u8, retain: bool, expiry_secs: Option<u32>) {
        let message = Outgoing { topic: topic.clone(), payload: payload.clone(), qos, retain, expiry_secs };
        if self.outbox.try_send(message).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(
                    dropped = dropped + 1,
                    "cluster: NATS is not keeping up; messages for other nodes dropped"
                );
            }
        }
    }
}

async fn send(client: async_nats::Client, prefix: String, node: String, mut queued: mpsc::Receiver<Outgoing>) {
    while let Some(message) = queued.recv().await {
        let Ok(topic) = std::str::from_utf8(&message.topic) else { continue };
        let mut headers = HeaderMap::new();
        headers.insert(NODE, node.as_str());
        headers.insert(QOS, message.qos.to_string().as_str());
        if message.retain {
            headers.insert(RETAIN, "1");
        }
        if let Some(secs) = message.expiry_secs {
            headers.insert(EXPIRY, secs.to_string().as_str());
        }
        if let Err(e) = client.publish_with_headers(topic_to_subject(&prefix, topic), headers, message.payload).await {
            tracing::debug!("cluster: message not sent to NATS: {e}");
        }
    }
}

async fn receive_claims(mut claims: async_nats::Subscriber, node: String, take_over: impl Fn(&str)) {
    while let Some(message) = claims.next().await {
        let from = message.headers.as_ref().and_then(|h| h.get(NODE)).map(|v| v.as_str().to_owned());
        if from.as_deref() == Some(node.as_str()) {
            continue;
        }
        if let Ok(client_id) = std::str::from_utf8(&message.payload) {
            take_over(client_id);
        }
    }
}

async fn receive<E: RoutingEngine>(mut inbound: async_nats::Subscriber, prefix: String, node: String, engine: Arc<E>) {
    let mut sequence = 0u64;
    while let Some(message) = inbound.next().await {
        let Some(headers) = message.headers.as_ref() else { continue };
        let from = headers.get(NODE).map(|v| v.as_str()).unwrap_or_default();
        if from == node {
            continue;
        }
        let Some(topic) = subject_to_topic(&prefix, message.subject.as_str()) else { continue };
        if !crate::routing::topic_form::routed(&topic) {
            continue;
        }
        let number = |name: &str| headers.get(name).and_then(|v| v.as_str().parse::<u32>().ok());
        let qos = number(QOS).unwrap_or(0).min(2) as u8;
        let retain = headers.get(RETAIN).is_some();
        sequence += 1;
        let stamp = Stamp {
            qos,
            retain,
            publisher: Publisher::of(&format!("%cluster/{from}")),
            origin: REMOTE_ORIGIN,
            sequence,
            expires_at_ms: number(EXPIRY).map(|secs| envelope::now_ms() + u64::from(secs) * 1000),
        };
        crate::metrics::METRICS.routed(topic.as_bytes(), message.payload.len(), retain);
        envelope::router_packets(Bytes::from(topic), &message.payload, stamp, None, |packet| {
            if let rumqttd::protocol::Packet::Publish(publish, properties) = packet {
                engine.inject(publish.topic, publish.payload, publish.retain, properties);
            }
        });
    }
}
