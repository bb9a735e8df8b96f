//! The gate's retained index: the last retained message per topic, with its envelope (QoS,
//! expiry, properties). The gate owns retained messages entirely: it hands rumqttd every message
//! with retain 0 (`envelope::router_packets`), because rumqttd scans its whole retained store on
//! the router thread for every new filter and replays at most one batch of it (docs/rumqttd.md
//! defect 19). Every new subscription, whoever serves it, takes its retained messages from here
//! (`gate::connection::hub`).
//!
//! Fed by the hub's reader of the router's `#` log (`routing::hub`), in routing order; at start
//! by what persistence restores and what a cluster node loads from the other nodes' retained
//! stream, before any client connects.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::routing::envelope;
use crate::routing::router_link::Routed;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RetainedIndex {
    by_topic: Mutex<HashMap<Bytes, Routed>>,
}

impl RetainedIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Routed>> {
        self.by_topic.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `routed` (topic in client spelling, payload sealed) as its topic's retained message;
    /// an empty body clears it.
    pub fn keep(&self, routed: Routed) {
        let mut retained = self.lock();
        match envelope::open(routed.payload.clone()) {
            Some((_, body)) if !body.is_empty() => {
                retained.insert(routed.topic.clone(), routed);
            }
            _ => {
                retained.remove(&routed.topic);
            }
        }
    }

    /// Clears `topic`'s retained message.
    pub fn forget(&self, topic: &Bytes) {
        self.lock().remove(topic);
    }

    /// The retained messages `filter` matches (by MQTT's rules), marked as replays (`retain`)
    /// with the subscription's QoS as their router QoS (`gate::delivery` delivers a replay at
    /// `min(publish QoS, that)`). A filter without wildcards is one lookup; others scan the
    /// index.
    pub fn matching(&self, filter: &str, qos: u8) -> Vec<Routed> {
        let retained = self.lock();
        let replay = |routed: &Routed| Routed { retain: true, qos, pkid: 0, ..routed.clone() };
        if !filter.contains(['+', '#']) {
            return retained.get(filter.as_bytes()).map(replay).into_iter().collect();
        }
        retained
            .values()
            .filter(|routed| crate::gate::subscriptions::matches_mqtt(filter, &routed.topic))
            .map(replay)
            .collect()
    }

    /// Retained messages in the index.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}
