//! Every filter handed to the router in this run, as a topic tree, so that a PUBLISH no filter
//! matches is not handed to the router at all.
//!
//! rumqttd matches a topic it has not seen against every filter it holds, one by one, and caches
//! only a non-empty result (router/logs.rs `DataLog::matches`): in a device fleet, where each
//! device publishes telemetry nobody subscribes to and subscribes to its own command topic, every
//! telemetry message is compared with every device's filter. With 19,000 devices that took the
//! router thread whole, and no command was delivered (docs/benchmarks.md, issue 22). A tree
//! answers "does any filter match?" in a walk over the topic's levels.
//!
//! The tree only grows: a filter stays once subscribed, so that no message the router could
//! still deliver is ever kept from it (a persistent session's filters live in the router while
//! its client is away; an UNSUBSCRIBE of one client does not end another's). The router keeps a
//! log per filter anyway; past [`MAX_FILTERS`] the tree stops answering "no" and every message is
//! routed, as before. Matching follows MQTT's rules, which the gate applies to every delivery
//! (`gate::delivery`): a filter starting with a wildcard never matches a `$` topic;
//! `$share/<group>/<filter>` matches as `<filter>`.

use std::ops::ControlFlow;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::filter_tree::FilterTree;

/// Beyond this many filters the tree routes everything (a bound on its memory).
pub const MAX_FILTERS: usize = 1_000_000;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SubscribedFilters {
    tree: RwLock<Tree>,
    /// Bumped by every new filter: a connection's remembered answer is valid while it is unchanged.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Tree {
    filters: FilterTree<()>,
    count: usize,
    /// [`MAX_FILTERS`] was reached: everything matches.
    overflowed: bool,
}

/// A connection's last answer: the topic it asked about, the generation it was given under, and
/// whether a filter matched (a publisher mostly repeats its topic).
#[derive(Debug, Default)]
pub struct LastAnswer {
    topic: Vec<u8>,
    generation: u64,
    matched: bool,
}

impl SubscribedFilters {
    /// Records `filter` (client spelling, validated at SUBSCRIBE) before it goes to the router.
    pub fn insert(&self, filter: &str) {
        let path = super::shared_filter::matching_path(filter).as_bytes();
        let mut tree = self.tree.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if tree.overflowed {
            return;
        }
        let (_, new) = tree.filters.slot(path, || ());
        if new {
            tree.count += 1;
            if tree.count > MAX_FILTERS {
                tree.overflowed = true;
                tree.filters = FilterTree::default();
            }
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Whether any filter recorded so far matches `topic` (client spelling). `last` is the
    /// asking connection's memory of its previous answer.
    pub fn any_match(&self, topic: &[u8], last: &mut LastAnswer) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if last.generation == generation && last.topic == topic && generation != 0 {
            return last.matched;
        }
        let tree = self.tree.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let matched = tree.overflowed || tree.filters.matching(topic, |()| ControlFlow::Break(())).is_break();
        drop(tree);
        last.topic.clear();
        last.topic.extend_from_slice(topic);
        last.generation = generation;
        last.matched = matched;
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERS: [&str; 18] = [
        "#",
        "+",
        "a",
        "a/#",
        "a/+",
        "+/b",
        "a/+/c",
        "+/+",
        "/#",
        "/+",
        "a/b/#",
        "$SYS/#",
        "$x/+",
        "a//b",
        "a/+/+/#",
        "+/#",
        "$share/g/q/+",
        "$x/#",
    ];
    const TOPICS: [&str; 17] = [
        "a", "a/b", "a/b/c", "/a", "a/", "/", "b", "$SYS/x", "$x/y", "a//b", "a/b/c/d", "ab", "a/bc", "q/1", "q", "$x",
        "x/y/z",
    ];

    #[test]
    fn one_filter_at_a_time_agrees_with_the_delivery_matcher() {
        for filter in FILTERS {
            let filters = SubscribedFilters::default();
            filters.insert(filter);
            for topic in TOPICS {
                assert_eq!(
                    filters.any_match(topic.as_bytes(), &mut LastAnswer::default()),
                    crate::gate::subscriptions::matches_mqtt(filter, topic.as_bytes()),
                    "{filter} ~ {topic}"
                );
            }
        }
    }

    #[test]
    fn several_filters_match_when_any_does_and_answers_follow_new_filters() {
        let filters = SubscribedFilters::default();
        let mut last = LastAnswer::default();
        assert!(!filters.any_match(b"dev/1/cmd", &mut last), "nothing subscribed");
        filters.insert("dev/2/cmd");
        filters.insert("$share/backend/telemetry/+/t");
        assert!(!filters.any_match(b"dev/1/cmd", &mut last));
        assert!(filters.any_match(b"dev/2/cmd", &mut last));
        assert!(filters.any_match(b"telemetry/9/t", &mut last));
        assert!(!filters.any_match(b"telemetry/9/u", &mut last));
        filters.insert("dev/1/cmd");
        assert!(filters.any_match(b"dev/1/cmd", &mut last), "a new filter is seen at once");
        filters.insert("dev/1/cmd");
        assert!(filters.any_match(b"dev/1/cmd", &mut last));
    }
}
