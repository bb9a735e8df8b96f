//! The wire form of a message between nodes, read back: the NATS headers a node sets on what its
//! clients publish, and a message from another node turned into what the local router takes
//! (topic, envelope stamp, MQTT 5 properties) and handed to it ([`inject`]). `messages` writes the
//! headers; `messages`, `reliable` and `shared_groups` read messages with [`remote_message`].

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rumqttd::protocol::PublishProperties;

use super::subject::subject_to_topic;
use crate::routing::envelope::{self, Publisher, Stamp};
use crate::routing::router_link::RoutingEngine;

pub(super) const NODE: &str = "Dynsec-Node";
pub(super) const QOS: &str = "Dynsec-Qos";
pub(super) const RETAIN: &str = "Dynsec-Retain";
pub(super) const EXPIRY: &str = "Dynsec-Expiry";
/// The envelope origin of messages from other nodes: above every local connection id.
pub(super) const REMOTE_ORIGIN: u64 = 1 << 63;

/// Identities of messages from other nodes (with [`REMOTE_ORIGIN`]): one counter for the plain
/// and the `$share` group copies, so that no two copies a client sees share one.
static REMOTE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// One message from another node as the local router takes it: its topic, payload, stamp (from
/// the headers) and MQTT 5 properties.
pub(super) struct Remote {
    pub topic: Bytes,
    pub payload: Bytes,
    pub stamp: Stamp,
    pub properties: Option<PublishProperties>,
}

/// The messages a NATS message carries (one, or a [`super::batch`]), as the local router takes
/// them. `share_group`: the `$share` group NATS gave this copy to ([`super::shared_groups`]).
/// Empty for a subject or topic that is not a message's, and for a damaged batch (logged).
pub(super) fn remote_messages(
    message: &async_nats::Message,
    prefix: &str,
    share_group: Option<Publisher>,
) -> Vec<Remote> {
    let Some(headers) = message.headers.as_ref() else { return Vec::new() };
    let from = headers.get(NODE).map(|v| v.as_str()).unwrap_or_default();
    let Some(topic) = subject_to_topic(prefix, message.subject.as_str()) else { return Vec::new() };
    if !crate::routing::topic_form::routed(&topic) {
        return Vec::new();
    }
    let payloads = match super::batch::payloads(message) {
        Ok(payloads) => payloads,
        Err(e) => {
            tracing::warn!(subject = %message.subject, "cluster: a batch from node {from:?} dropped: {e}");
            return Vec::new();
        }
    };
    let number = |name: &str| headers.get(name).and_then(|v| v.as_str().parse::<u32>().ok());
    let qos = number(QOS).unwrap_or(0).min(2) as u8;
    let retain = headers.get(RETAIN).is_some();
    let publisher = Publisher::of(&format!("%cluster/{from}"));
    let expires_at_ms = number(EXPIRY).map(|secs| envelope::now_ms() + u64::from(secs) * 1000);
    let properties = headers.get(super::properties::HEADER).and_then(|v| super::properties::decode(v.as_str()));
    let topic = Bytes::from(topic);
    payloads
        .into_iter()
        .map(|payload| {
            if share_group.is_none() {
                // (Counted once per message: the plain copy, which every node gets.)
                crate::metrics::METRICS.routed(&topic, payload.len(), retain);
            }
            let stamp = Stamp {
                qos,
                retain,
                publisher,
                origin: REMOTE_ORIGIN,
                sequence: REMOTE_SEQUENCE.fetch_add(1, Ordering::Relaxed),
                expires_at_ms,
                // (Persistence stores what this node's clients publish; see docs/cluster.md.)
                queued: None,
                addressee: None,
                share_group,
            };
            Remote { topic: topic.clone(), payload, stamp, properties: properties.clone() }
        })
        .collect()
}

/// Hands a message from another node (or the retained stream) to the local router, sealed in
/// its envelope like a local client's.
pub(super) fn inject<E: RoutingEngine>(
    engine: &E,
    topic: Bytes,
    payload: &[u8],
    stamp: Stamp,
    properties: Option<PublishProperties>,
) {
    engine.inject(envelope::routable(topic, payload, stamp, properties));
}
