//! The budget of topics new to the router (`gate_new_topics_per_second`, `gate_new_topics_burst`).
//!
//! rumqttd remembers every topic it ever routed (router/logs.rs `publish_filters`, about 380
//! bytes each) and has no API to forget one, so a client publishing unique topics grows the
//! router for good. The gate keeps its own index of the topics it has handed to the router, as
//! 8-byte hashes ([`RouterIndex`], shared by all connections), and charges a per-connection
//! token bucket ([`TopicBudget`]) only for a topic that index has never seen. A backend cycling
//! through the command topics of 10,000 devices pays once per topic, ever; a client inventing
//! topics is slowed to the configured rate. The bound this gives is documented in
//! docs/security.md ("Router safety and resource limits").

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use super::token_bucket::TokenBucket;

/// Shards of the index, so that publishers on different topics rarely wait for each other.
const SHARDS: usize = 64;

/// What the gate has let into the router, by hash: the topics here, and the filters in
/// `filter_budget`. A hash collision lets a new key pass as known, which costs one unbudgeted
/// topic or filter, nothing else.
#[derive(Debug)]
pub struct RouterIndex {
    shards: Vec<Mutex<HashSet<u64>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for RouterIndex {
    fn default() -> Self {
        RouterIndex { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: Default::default() }
    }
}

impl RouterIndex {
    fn hash(&self, topic: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(topic);
        hasher.finish()
    }

    /// Records `topic` if `admit` allows it; `true` if the topic is (now) known to the router.
    pub(super) fn enter(&self, topic: &[u8], admit: impl FnOnce() -> bool) -> bool {
        let hash = self.hash(topic);
        let mut shard = self.shards[(hash as usize) % SHARDS].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.contains(&hash) {
            return true;
        }
        admit() && shard.insert(hash)
    }

    /// Keys recorded so far.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()).sum()
    }

    /// `true` before the first key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's budget of new topics. Topics it published recently are remembered in a
/// small direct-mapped cache so that its usual topics skip the shared index.
#[derive(Debug)]
pub struct TopicBudget {
    /// `None`: the budget is off.
    tokens: Option<TokenBucket>,
    /// Made at the first publish: most connections of a fleet publish little or nothing, and
    /// inline it was a quarter of an idle connection's state (P6, docs/benchmarks.md).
    recent: Option<Box<[u64; RECENT]>>,
}

/// Topics remembered per connection (by hash).
const RECENT: usize = 64;

impl TopicBudget {
    /// `per_second` 0 switches the budget off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        TopicBudget { tokens: (per_second > 0).then(|| TokenBucket::new(per_second, burst)), recent: None }
    }

    /// May the client publish to `topic` now? A topic the router already knows is always allowed.
    pub fn allows(&mut self, routed: &RouterIndex, topic: &[u8]) -> bool {
        let Some(tokens) = &mut self.tokens else { return true };
        let hash = routed.hash(topic) | 1; // never the empty slot's 0
        let slot = (hash as usize) % RECENT;
        if self.recent.as_ref().is_some_and(|recent| recent[slot] == hash) {
            return true;
        }
        let allowed = routed.enter(topic, || tokens.take());
        if allowed {
            self.recent.get_or_insert_with(|| Box::new([0; RECENT]))[slot] = hash;
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_topics_are_free_and_new_ones_cost_a_token() {
        let routed = RouterIndex::default();
        let mut budget = TopicBudget::new(1, 3);
        for topic in [&b"a"[..], b"b", b"c"] {
            assert!(budget.allows(&routed, topic));
        }
        assert!(!budget.allows(&routed, b"d"), "the burst is spent");
        for _ in 0..100 {
            assert!(budget.allows(&routed, b"a") && budget.allows(&routed, b"b") && budget.allows(&routed, b"c"));
        }
        assert_eq!(routed.len(), 3);
    }

    #[test]
    fn topics_known_to_the_router_cost_nothing_even_beyond_the_recent_cache() {
        let routed = RouterIndex::default();
        let mut first = TopicBudget::new(0, 0);
        let mut backend = TopicBudget::new(1, 1);
        // Another connection (budget off) made 1,000 topics known ...
        for i in 0..1000 {
            assert!(first.allows(&routed, format!("cmd/{i}").as_bytes()));
        }
        assert!(routed.is_empty(), "a connection without a budget does not fill the index");
        for i in 0..1000 {
            assert!(backend.allows(&routed, format!("t/{i}").as_bytes()) == (i == 0));
        }
        // ... and cycling through more topics than the cache holds costs nothing once known.
        let mut generous = TopicBudget::new(1, 1000);
        for round in 0..3 {
            for i in 0..1000 {
                assert!(generous.allows(&routed, format!("d/{i}").as_bytes()), "round {round} topic {i}");
            }
        }
    }

    #[test]
    fn zero_switches_it_off() {
        let routed = RouterIndex::default();
        let mut budget = TopicBudget::new(0, 0);
        assert!((0..10_000).all(|i| budget.allows(&routed, format!("t/{i}").as_bytes())));
    }
}
