//! A subscription as the gate remembers it, and the subscriptions a session holds, by filter (as
//! the client spelled it, `$share/<g>/…` included): a connection's, and a saved session's while
//! its client is away.
//!
//! Almost every session holds one or two filters (a device subscribes to its own command topic),
//! and a hash map is a poor fit for that: its first insertion reserves four slots (with the key
//! beside each value, 112 bytes a slot) and the key repeats the filter that the subscription
//! already holds, ~640 bytes for one filter (docs/benchmarks.md, "Per-user and per-subscription
//! data"). Up to [`FEW`] filters are kept in a vector sized to its contents and searched in
//! order, keyed by the subscription's own filter; beyond that, in a hash map, so that a client
//! with many filters (up to `max_subscriptions_per_client`) still finds one in constant time.

use std::collections::HashMap;

use rumqttd::protocol::Filter;

/// How a subscription is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// Routed through the router.
    Routed,
    /// `$CONTROL/...`: answered from the gate's control registry.
    Control,
    /// `$SYS` and `$SYS/...` filters: served by the gate's `$SYS` tree (`sys_topics`).
    Local,
}

/// A subscription the gate remembers (to resubscribe a resumed session and to answer UNSUBSCRIBE).
#[derive(Debug, Clone)]
pub struct Subscription {
    pub filter: Filter,
    pub kind: SubscriptionKind,
    /// v5 subscription identifier.
    pub id: Option<usize>,
    /// Counts it in `$SYS/broker/subscriptions/count` for as long as it is kept.
    pub count: crate::metrics::SubscriptionCount,
    /// In a cluster, a shared subscription's membership of its cluster-wide group.
    pub share: Option<crate::cluster::shared_groups::ShareMembership>,
}

/// Up to this many filters are searched in order.
const FEW: usize = 8;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct SubscriptionSet {
    entries: Entries,
}

#[derive(Debug, Clone)]
enum Entries {
    /// At most [`FEW`], each filter once, in the order they were first subscribed.
    Few(Vec<Subscription>),
    /// More than `FEW / 2`: by filter.
    Many(HashMap<String, Subscription>),
}

impl Default for SubscriptionSet {
    fn default() -> Self {
        SubscriptionSet { entries: Entries::Few(Vec::new()) }
    }
}

impl SubscriptionSet {
    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Few(list) => list.len(),
            Entries::Many(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subscription of `filter`.
    pub fn get(&self, filter: &str) -> Option<&Subscription> {
        match &self.entries {
            Entries::Few(list) => list.iter().find(|s| s.filter.path == filter),
            Entries::Many(map) => map.get(filter),
        }
    }

    pub fn contains_key(&self, filter: &str) -> bool {
        self.get(filter).is_some()
    }

    /// Keeps `subscription` under its filter; returns the one it replaces.
    pub fn insert(&mut self, subscription: Subscription) -> Option<Subscription> {
        match &mut self.entries {
            Entries::Few(list) => {
                if let Some(slot) = list.iter_mut().find(|s| s.filter.path == subscription.filter.path) {
                    return Some(std::mem::replace(slot, subscription));
                }
                if list.len() < FEW {
                    // Room for exactly one more: a session rarely grows past its first filters.
                    list.reserve_exact(1);
                    list.push(subscription);
                    return None;
                }
                let mut map: HashMap<String, Subscription> =
                    list.drain(..).map(|s| (s.filter.path.clone(), s)).collect();
                map.insert(subscription.filter.path.clone(), subscription);
                self.entries = Entries::Many(map);
                None
            }
            Entries::Many(map) => map.insert(subscription.filter.path.clone(), subscription),
        }
    }

    /// Removes the subscription of `filter`.
    pub fn remove(&mut self, filter: &str) -> Option<Subscription> {
        match &mut self.entries {
            Entries::Few(list) => {
                let at = list.iter().position(|s| s.filter.path == filter)?;
                let removed = list.remove(at);
                if list.is_empty() {
                    *list = Vec::new();
                }
                Some(removed)
            }
            Entries::Many(map) => {
                let removed = map.remove(filter)?;
                // Back to the list once it would be half full (not at `FEW`: a client subscribing
                // and unsubscribing around the bound would convert every time).
                if map.len() <= FEW / 2 {
                    let list = map.drain().map(|(_, s)| s).collect();
                    self.entries = Entries::Few(list);
                }
                Some(removed)
            }
        }
    }

    /// The filters, as subscribed.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.values().map(|s| &s.filter.path)
    }

    pub fn values(&self) -> impl Iterator<Item = &Subscription> {
        let (few, many) = match &self.entries {
            Entries::Few(list) => (Some(list.iter()), None),
            Entries::Many(map) => (None, Some(map.values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl FromIterator<Subscription> for SubscriptionSet {
    fn from_iter<I: IntoIterator<Item = Subscription>>(subscriptions: I) -> Self {
        let mut set = SubscriptionSet::default();
        for subscription in subscriptions {
            set.insert(subscription);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::{QoS, RetainForwardRule};

    use super::*;

    fn subscription(path: &str, qos: QoS) -> Subscription {
        Subscription {
            filter: Filter {
                path: path.into(),
                qos,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            },
            kind: SubscriptionKind::Routed,
            id: None,
            count: crate::metrics::SubscriptionCount::new(false),
            share: None,
        }
    }

    fn sorted_keys(set: &SubscriptionSet) -> Vec<String> {
        let mut keys: Vec<String> = set.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The set answers as a map by filter would, across the change of representation both ways.
    #[test]
    fn answers_as_a_map_through_both_representations() {
        let mut set = SubscriptionSet::default();
        let mut model: HashMap<String, QoS> = HashMap::new();
        let filters: Vec<String> = (0..3 * FEW).map(|i| format!("dev/{i}/cmd")).collect();
        for (round, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce].into_iter().enumerate() {
            for filter in &filters {
                let replaced = set.insert(subscription(filter, qos)).map(|s| s.filter.qos);
                assert_eq!(replaced, model.insert(filter.clone(), qos), "round {round}: insert {filter}");
                assert_eq!(set.len(), model.len());
            }
            for filter in filters.iter().step_by(2) {
                assert_eq!(set.remove(filter).map(|s| s.filter.qos), model.remove(filter), "remove {filter}");
                assert_eq!(set.remove(filter).map(|s| s.filter.qos), None, "removed twice");
            }
            let mut expected: Vec<String> = model.keys().cloned().collect();
            expected.sort();
            assert_eq!(sorted_keys(&set), expected);
            for filter in &filters {
                assert_eq!(set.get(filter).map(|s| s.filter.qos), model.get(filter).copied(), "get {filter}");
                assert_eq!(set.contains_key(filter), model.contains_key(filter));
            }
        }
        for filter in &filters {
            set.remove(filter);
        }
        assert!(set.is_empty());
        assert!(matches!(set.entries, Entries::Few(ref list) if list.capacity() == 0), "an empty set holds nothing");
    }

    #[test]
    fn one_filter_takes_one_slot() {
        let mut set = SubscriptionSet::default();
        set.insert(subscription("dev/1/cmd", QoS::AtLeastOnce));
        assert!(matches!(set.entries, Entries::Few(ref list) if list.capacity() == 1));
        let collected: SubscriptionSet =
            [subscription("a", QoS::AtMostOnce), subscription("a", QoS::AtLeastOnce)].into_iter().collect();
        assert_eq!(collected.len(), 1, "a filter is kept once");
        assert_eq!(collected.get("a").map(|s| s.filter.qos), Some(QoS::AtLeastOnce), "the last one wins");
    }
}
