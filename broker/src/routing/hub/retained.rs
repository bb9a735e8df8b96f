//! The hub's retained index: the last retained message per topic, with its envelope (QoS,
//! expiry, properties). The router sends retained messages to a link when it subscribes, and the
//! hub subscribes once, so new hub subscriptions take theirs from here (`routing::hub`).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::routing::envelope;
use crate::routing::router_link::Routed;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Retained {
    by_topic: Mutex<HashMap<Bytes, Routed>>,
}

impl Retained {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Routed>> {
        self.by_topic.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `routed` as its topic's retained message (an empty body clears it).
    pub(super) fn keep(&self, routed: Routed) {
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

    pub(super) fn forget(&self, topic: &Bytes) {
        self.lock().remove(topic);
    }

    /// The retained messages `filter` matches (by MQTT's rules), marked as replays (`retain`)
    /// with the subscription's QoS as their router QoS (`gate::delivery` delivers a replay at
    /// `min(publish QoS, that)`). A filter without wildcards is one lookup; others scan the
    /// index.
    pub(super) fn matching(&self, filter: &str, qos: u8) -> Vec<Routed> {
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
    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }
}
