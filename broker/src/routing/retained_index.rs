//! The gate's retained index: the last retained message per topic, with its envelope (QoS,
//! expiry, properties). The gate owns retained messages entirely: it hands rumqttd every message
//! with retain 0 (`envelope::router_packet`), because rumqttd scans its whole retained store on
//! the router thread for every new filter and replays at most one batch of it (docs/rumqttd.md
//! defect 19). Every new subscription, whoever serves it, takes its retained messages from here
//! (`gate::connection::hub`).
//!
//! A tree of topic levels, so that a subscription's lookup walks only the branches its filter
//! can match (a scan of every retained topic per new wildcard subscription is what stalls
//! rumqttd's router; here it would stall the subscribing connection's worker instead).
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
    tree: Mutex<Tree>,
}

#[derive(Debug, Default)]
struct Tree {
    root: Level,
    count: usize,
}

/// One topic level: the retained message of the topic ending here, and the levels below.
#[derive(Debug, Default)]
struct Level {
    retained: Option<Routed>,
    below: HashMap<Box<[u8]>, Level>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.retained.is_none() && self.below.is_empty()
    }

    /// Takes the retained message of the topic `levels` below this one, pruning the levels
    /// left empty.
    fn remove(&mut self, levels: &[&[u8]]) -> Option<Routed> {
        let Some((first, rest)) = levels.split_first() else { return self.retained.take() };
        let below = self.below.get_mut(*first)?;
        let removed = below.remove(rest);
        if below.is_empty() {
            self.below.remove(*first);
        }
        removed
    }

    /// Every retained message at and below this level; at the top level (`top`), none of the
    /// topics starting with `$` (MQTT: a filter starting with a wildcard does not match them).
    fn all<'a>(&'a self, top: bool, out: &mut Vec<&'a Routed>) {
        out.extend(self.retained.as_ref());
        for (name, below) in &self.below {
            if !(top && name.first() == Some(&b'$')) {
                below.all(false, out);
            }
        }
    }

    /// The retained messages of the topics below this level that the filter levels `filter`
    /// match.
    fn matching<'a>(&'a self, filter: &[&[u8]], top: bool, out: &mut Vec<&'a Routed>) {
        let Some((first, rest)) = filter.split_first() else {
            out.extend(self.retained.as_ref());
            return;
        };
        match *first {
            // (`a/#` matches `a` too: this level's own message, which `all` includes.)
            b"#" if top => {
                for (name, below) in &self.below {
                    if name.first() != Some(&b'$') {
                        below.all(false, out);
                    }
                }
            }
            b"#" => self.all(false, out),
            b"+" => {
                for (name, below) in &self.below {
                    if !(top && name.first() == Some(&b'$')) {
                        below.matching(rest, false, out);
                    }
                }
            }
            literal => {
                if let Some(below) = self.below.get(literal) {
                    below.matching(rest, false, out);
                }
            }
        }
    }
}

fn levels(topic: &[u8]) -> Vec<&[u8]> {
    topic.split(|&b| b == b'/').collect()
}

impl RetainedIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `routed` (topic in client spelling, payload sealed) as its topic's retained message;
    /// an empty body clears it.
    pub fn keep(&self, routed: Routed) {
        if !matches!(envelope::open(routed.payload.clone()), Some((_, body)) if !body.is_empty()) {
            return self.forget(&routed.topic);
        }
        let topic = routed.topic.clone();
        let mut tree = self.lock();
        let mut level = &mut tree.root;
        for name in levels(&topic) {
            level = level.below.entry(name.into()).or_default();
        }
        let new = level.retained.replace(routed).is_none();
        tree.count += usize::from(new);
    }

    /// Clears `topic`'s retained message.
    pub fn forget(&self, topic: &Bytes) {
        let mut tree = self.lock();
        if tree.root.remove(&levels(topic)).is_some() {
            tree.count -= 1;
        }
    }

    /// The retained messages `filter` (valid, not shared) matches by MQTT's rules, marked as
    /// replays (`retain`) with the subscription's QoS as their router QoS (`gate::delivery`
    /// delivers a replay at `min(publish QoS, that)`).
    pub fn matching(&self, filter: &str, qos: u8) -> Vec<Routed> {
        let tree = self.lock();
        let mut found = Vec::new();
        tree.root.matching(&levels(filter.as_bytes()), true, &mut found);
        found.into_iter().map(|routed| Routed { retain: true, qos, pkid: 0, ..routed.clone() }).collect()
    }

    /// Retained messages in the index.
    pub fn count(&self) -> usize {
        self.lock().count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::envelope::Stamp;

    fn retained(topic: &str, body: &[u8]) -> Routed {
        let sealed = envelope::seal(&Stamp::for_test(1, true, "p"), body);
        Routed::retained(Bytes::copy_from_slice(topic.as_bytes()), sealed, &None)
    }

    #[test]
    fn a_filter_finds_the_retained_messages_mqtt_matches_it_with() {
        const TOPICS: [&str; 14] =
            ["a", "a/b", "a/b/c", "/a", "a/", "/", "b", "$x/y", "a//b", "a/b/c/d", "ab", "$x", "x/y/z", "$SYS/a"];
        const FILTERS: [&str; 17] = [
            "#", "+", "a", "a/#", "a/+", "+/b", "a/+/c", "+/+", "/#", "a/b/#", "$x/+", "a//b", "+/#", "$x/#", "$SYS/#",
            "+/+/+/+", "a/+/#",
        ];
        let index = RetainedIndex::default();
        for topic in TOPICS {
            index.keep(retained(topic, b"v"));
        }
        assert_eq!(index.count(), TOPICS.len());
        for filter in FILTERS {
            let mut got: Vec<String> =
                index.matching(filter, 1).iter().map(|r| String::from_utf8_lossy(&r.topic).into_owned()).collect();
            got.sort();
            let mut expected: Vec<String> = TOPICS
                .iter()
                .filter(|t| crate::gate::subscriptions::matches_mqtt(filter, t.as_bytes()))
                .map(|t| t.to_string())
                .collect();
            expected.sort();
            assert_eq!(got, expected, "{filter}");
        }
    }

    #[test]
    fn a_message_replaces_its_topics_and_a_clear_prunes_it() {
        let index = RetainedIndex::default();
        index.keep(retained("a/b", b"one"));
        index.keep(retained("a/b", b"two"));
        index.keep(retained("a", b"up"));
        assert_eq!(index.count(), 2);
        let replay = index.matching("a/b", 2);
        assert_eq!(replay.len(), 1);
        let (_, body) = envelope::open(replay[0].payload.clone()).unwrap();
        assert_eq!((&body[..], replay[0].retain, replay[0].qos), (&b"two"[..], true, 2));
        index.keep(retained("a/b", b""));
        index.forget(&Bytes::from_static(b"a/b/c"));
        assert_eq!(index.count(), 1);
        assert!(index.matching("a/b", 0).is_empty());
        index.forget(&Bytes::from_static(b"a"));
        assert_eq!(index.count(), 0);
        assert!(index.lock().root.is_empty(), "pruned");
    }
}
