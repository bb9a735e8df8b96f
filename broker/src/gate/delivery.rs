//! What a client receives of a message the router hands its connection, decided by MQTT's
//! rules rather than the router's: which of the client's subscriptions the message matches (No
//! Local, the `$` rule), one copy per client however many of its subscriptions match, the
//! delivery QoS `min(publish QoS, granted QoS)`, the retain flag (Retain As Published, retained
//! messages sent on subscribe), Retain Handling 2, subscription identifiers, message expiry.
//!
//! The router delivers one copy per matching filter, each at that filter's QoS, and knows
//! nothing of the publish QoS, the publisher or the retain flag; the envelope (`routing::envelope`)
//! carries those to here. A copy the client must not receive is dropped by the caller (and still
//! acknowledged to the router, see `routing::ack_sequencer`).

use std::collections::{HashSet, VecDeque};

use rumqttd::protocol::RetainForwardRule;

use crate::gate::saved_session::SubscriptionKind;
use crate::gate::subscription_set::SubscriptionSet;
use crate::gate::subscriptions;
use crate::routing::envelope::{Publisher, Stamp};

/// How many message identities a connection remembers to recognise further copies of a
/// message it already delivered (only messages that matched two or more of its subscriptions
/// are remembered).
const RECENT_COPIES: usize = 4096;

/// A router copy, as the connection received it.
#[derive(Debug, Clone, Copy)]
pub struct RouterCopy<'a> {
    pub topic: &'a str,
    pub stamp: &'a Stamp,
    /// The QoS the router delivered it with (the QoS of the filter it came through).
    pub router_qos: u8,
    /// The router sends a retained message when a filter is subscribed: with the retain flag.
    pub retained_replay: bool,
    /// This node is part of a cluster: shared subscriptions take only the copies NATS gave
    /// their group (`cluster::shared_groups`), and only those.
    pub clustered: bool,
}

/// What to write to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub qos: u8,
    pub retain: bool,
    /// v5 Subscription Identifiers of the matching subscriptions.
    pub subscription_ids: Vec<usize>,
    /// v5 Message Expiry Interval left, seconds.
    pub expiry_left: Option<u32>,
}

/// Why a copy is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// None of the client's subscriptions matches by MQTT's rules (No Local, `$` topics, a
    /// subscription removed since the router read the message).
    NoSubscription,
    /// Another copy of the message carries it (overlapping subscriptions).
    Duplicate,
    /// Its Message Expiry Interval has passed.
    Expired,
    /// A retained message for subscriptions that asked for none (Retain Handling 2).
    RetainedNotWanted,
}

/// The identities of recently delivered messages that matched several subscriptions. Made on
/// the first such message: a client with one subscription never needs it, and inline it was 80
/// bytes of every connection (docs/benchmarks.md, "The connection's own state and task").
#[derive(Debug, Default)]
pub struct RecentCopies(Option<Box<Recent>>);

#[derive(Debug, Default)]
struct Recent {
    seen: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

impl RecentCopies {
    /// Records `id`; false if it was already recorded.
    fn first_time(&mut self, id: (u64, u64)) -> bool {
        let recent = self.0.get_or_insert_default();
        if !recent.seen.insert(id) {
            return false;
        }
        recent.order.push_back(id);
        if recent.order.len() > RECENT_COPIES
            && let Some(old) = recent.order.pop_front()
        {
            recent.seen.remove(&old);
        }
        true
    }
}

/// Decides one router copy for a client with `subscriptions`, who is `receiver`.
pub fn decide(
    copy: RouterCopy<'_>,
    subscriptions: &SubscriptionSet,
    receiver: Publisher,
    recent: &mut RecentCopies,
    now_ms: impl FnOnce() -> u64,
) -> Result<Delivery, Skip> {
    let own = copy.stamp.publisher == receiver;
    let mut matching = subscriptions.values().filter(|s| {
        s.kind == SubscriptionKind::Routed
            && !(own && s.filter.nolocal)
            && (!copy.clustered || takes_in_cluster(copy.stamp, &s.filter.path))
            && subscriptions::matches_mqtt(&s.filter.path, copy.topic.as_bytes())
    });
    let Some(first) = matching.next() else { return Err(Skip::NoSubscription) };
    let mut granted = first.filter.qos as u8;
    let mut count = 1;
    let mut retain_as_published = first.filter.preserve_retain;
    let mut wants_retained = first.filter.retain_forward_rule != RetainForwardRule::Never;
    let mut subscription_ids: Vec<usize> = first.id.into_iter().collect();
    for s in matching {
        count += 1;
        granted = granted.max(s.filter.qos as u8);
        retain_as_published |= s.filter.preserve_retain;
        wants_retained |= s.filter.retain_forward_rule != RetainForwardRule::Never;
        subscription_ids.extend(s.id);
    }
    subscription_ids.sort_unstable();
    // (The clock is read only for messages that expire: this is the delivery hot path.)
    let expiry_left = copy.stamp.expires_at_ms.and_then(|_| copy.stamp.expiry_left(now_ms()));
    if expiry_left == Some(0) {
        return Err(Skip::Expired);
    }
    if copy.retained_replay {
        if !wants_retained {
            return Err(Skip::RetainedNotWanted);
        }
        // One per subscribed filter, as the router sends them.
        let qos = copy.stamp.qos.min(copy.router_qos);
        return Ok(Delivery { qos, retain: true, subscription_ids, expiry_left });
    }
    let qos = copy.stamp.qos.min(granted);
    if count > 1 {
        // The router sends a copy through each matching filter, at that filter's QoS: the first
        // copy that can carry the message at its QoS carries it, once.
        if copy.router_qos < qos || !recent.first_time(copy.stamp.message_id()) {
            return Err(Skip::Duplicate);
        }
    }
    // (Lower than `qos` only while the router still holds a subscription's previous QoS.)
    let qos = qos.min(copy.router_qos);
    let retain = copy.stamp.retain && retain_as_published;
    Ok(Delivery { qos, retain, subscription_ids, expiry_left })
}

/// In a cluster, which copies a subscription takes: a plain one takes the copies every node gets;
/// a shared one only the copies NATS gave its group (one node's for the whole cluster), so that
/// the group gets each message once however many nodes hold its members.
fn takes_in_cluster(stamp: &Stamp, filter: &str) -> bool {
    match (stamp.share_group, subscriptions::share_group(filter)) {
        (None, None) => true,
        (Some(group), Some(name)) => group == Publisher::of(name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::saved_session::Subscription;
    use rumqttd::protocol::{Filter, QoS};

    fn sub(path: &str, qos: QoS, nolocal: bool, rap: bool, rule: RetainForwardRule, id: Option<usize>) -> Subscription {
        let filter = Filter { path: path.into(), qos, nolocal, preserve_retain: rap, retain_forward_rule: rule };
        Subscription {
            filter,
            kind: SubscriptionKind::Routed,
            id,
            count: crate::metrics::SubscriptionCount::new(subscriptions::is_shared(path)),
            share: None,
        }
    }

    fn plain(path: &str, qos: QoS) -> Subscription {
        sub(path, qos, false, false, RetainForwardRule::OnEverySubscribe, None)
    }

    fn subs(list: Vec<Subscription>) -> SubscriptionSet {
        list.into_iter().collect()
    }

    fn stamp(qos: u8, retain: bool, from: &str) -> Stamp {
        Stamp::for_test(qos, retain, from)
    }

    fn live<'a>(topic: &'a str, stamp: &'a Stamp, router_qos: u8) -> RouterCopy<'a> {
        RouterCopy { topic, stamp, router_qos, retained_replay: false, clustered: false }
    }

    #[test]
    fn delivery_qos_is_the_lower_of_publish_and_granted() {
        let s = subs(vec![plain("a/b", QoS::ExactlyOnce)]);
        for (published, expected) in [(0, 0), (1, 1), (2, 2)] {
            let st = stamp(published, false, "p");
            let d = decide(live("a/b", &st, 2), &s, Publisher::of("me"), &mut RecentCopies::default(), || 0).unwrap();
            assert_eq!(d.qos, expected);
        }
    }

    #[test]
    fn no_local_skips_own_messages_only() {
        let s = subs(vec![sub("a/#", QoS::AtLeastOnce, true, false, RetainForwardRule::OnEverySubscribe, None)]);
        let own = stamp(1, false, "me");
        let other = stamp(1, false, "you");
        let me = Publisher::of("me");
        assert_eq!(decide(live("a/b", &own, 1), &s, me, &mut RecentCopies::default(), || 0), Err(Skip::NoSubscription));
        assert!(decide(live("a/b", &other, 1), &s, me, &mut RecentCopies::default(), || 0).is_ok());
    }

    #[test]
    fn a_wildcard_first_filter_never_matches_a_dollar_topic() {
        let s = subs(vec![plain("#", QoS::AtMostOnce), plain("+/x", QoS::AtMostOnce)]);
        let st = stamp(0, false, "p");
        assert_eq!(
            decide(live("$app/x", &st, 0), &s, Publisher::of("me"), &mut RecentCopies::default(), || 0),
            Err(Skip::NoSubscription)
        );
    }

    #[test]
    fn overlapping_subscriptions_get_one_copy_at_the_highest_granted_qos() {
        let s = subs(vec![
            sub("a/#", QoS::AtLeastOnce, false, false, RetainForwardRule::OnEverySubscribe, Some(3)),
            sub("a/b", QoS::ExactlyOnce, false, false, RetainForwardRule::OnEverySubscribe, Some(1)),
        ]);
        let st = stamp(2, false, "p");
        let mut recent = RecentCopies::default();
        let me = Publisher::of("me");
        assert_eq!(decide(live("a/b", &st, 1), &s, me, &mut recent, || 0), Err(Skip::Duplicate));
        let d = decide(live("a/b", &st, 2), &s, me, &mut recent, || 0).unwrap();
        assert_eq!((d.qos, d.subscription_ids), (2, vec![1, 3]));
        assert_eq!(decide(live("a/b", &st, 2), &s, me, &mut recent, || 0), Err(Skip::Duplicate));
    }

    #[test]
    fn retain_flag_live_only_as_published_and_always_on_replay() {
        let rap = subs(vec![sub("t", QoS::AtMostOnce, false, true, RetainForwardRule::OnEverySubscribe, None)]);
        let plain_subs = subs(vec![plain("t", QoS::AtMostOnce)]);
        let st = stamp(0, true, "p");
        let me = Publisher::of("me");
        let mut recent = RecentCopies::default();
        assert!(decide(live("t", &st, 0), &rap, me, &mut recent, || 0).unwrap().retain);
        assert!(!decide(live("t", &st, 0), &plain_subs, me, &mut recent, || 0).unwrap().retain);
        let replay = RouterCopy { topic: "t", stamp: &st, router_qos: 0, retained_replay: true, clustered: false };
        assert!(decide(replay, &plain_subs, me, &mut recent, || 0).unwrap().retain);
    }

    #[test]
    fn retain_handling_2_drops_replays() {
        let never = subs(vec![sub("t", QoS::AtMostOnce, false, false, RetainForwardRule::Never, None)]);
        let st = stamp(0, true, "p");
        let replay = RouterCopy { topic: "t", stamp: &st, router_qos: 0, retained_replay: true, clustered: false };
        assert_eq!(
            decide(replay, &never, Publisher::of("me"), &mut RecentCopies::default(), || 0),
            Err(Skip::RetainedNotWanted)
        );
    }

    #[test]
    fn expired_messages_are_skipped_and_the_rest_carry_the_time_left() {
        let s = subs(vec![plain("t", QoS::AtMostOnce)]);
        let mut st = stamp(0, false, "p");
        st.expires_at_ms = Some(5_000);
        let me = Publisher::of("me");
        let d = decide(live("t", &st, 0), &s, me, &mut RecentCopies::default(), || 1_500).unwrap();
        assert_eq!(d.expiry_left, Some(4));
        assert_eq!(decide(live("t", &st, 0), &s, me, &mut RecentCopies::default(), || 5_000), Err(Skip::Expired));
    }

    #[test]
    fn the_byte_matcher_agrees_with_the_reference_matcher() {
        let filters = [
            "#", "+", "a", "a/#", "a/+", "+/b", "a/+/c", "+/+", "/#", "/+", "a/b/#", "$SYS/#", "$x/+", "a//b",
            "a/+/+/#", "+/#",
        ];
        let topics = ["a", "a/b", "a/b/c", "/a", "a/", "/", "b", "$SYS/x", "$x/y", "a//b", "a/b/c/d", "ab", "a/bc"];
        for filter in filters {
            for topic in topics {
                assert_eq!(
                    subscriptions::matches_mqtt(filter, topic.as_bytes()),
                    dynsec::topic::topic_matches_filter(filter, topic),
                    "{filter} ~ {topic}"
                );
            }
        }
    }

    #[test]
    fn dollar_deliveries_need_a_matching_routed_subscription() {
        let mut local = plain("$SYS/#", QoS::AtMostOnce);
        local.kind = SubscriptionKind::Local;
        let mut s = subs(vec![plain("#", QoS::AtMostOnce), local]);
        let st = stamp(0, false, "p");
        let me = Publisher::of("me");
        let mut recent = RecentCopies::default();
        assert!(decide(live("a/b", &st, 0), &s, me, &mut recent, || 0).is_ok());
        assert_eq!(decide(live("$x/y", &st, 0), &s, me, &mut recent, || 0), Err(Skip::NoSubscription));
        assert_eq!(decide(live("$SYS/x", &st, 0), &s, me, &mut recent, || 0), Err(Skip::NoSubscription));
        s.insert(plain("$share/g/$x/+", QoS::AtMostOnce));
        assert!(decide(live("$x/y", &st, 0), &s, me, &mut recent, || 0).is_ok());
        assert_eq!(decide(live("$x/y/z", &st, 0), &s, me, &mut recent, || 0), Err(Skip::NoSubscription));
    }

    #[test]
    fn shared_subscriptions_match_by_their_filter() {
        let s = subs(vec![plain("$share/g/a/+", QoS::AtLeastOnce)]);
        let st = stamp(1, false, "p");
        assert!(decide(live("a/b", &st, 1), &s, Publisher::of("me"), &mut RecentCopies::default(), || 0).is_ok());
    }

    #[test]
    fn in_a_cluster_shared_subscriptions_take_only_their_groups_copies() {
        let s = subs(vec![plain("$share/g/a/+", QoS::AtLeastOnce), plain("$share/h/a/#", QoS::AtLeastOnce)]);
        let me = Publisher::of("me");
        let plain_copy = stamp(1, false, "p");
        let for_g = Stamp { share_group: Some(Publisher::of("g")), ..plain_copy };
        let for_other = Stamp { share_group: Some(Publisher::of("x")), ..plain_copy };
        let copy = |stamp| RouterCopy { topic: "a/b", stamp, router_qos: 1, retained_replay: false, clustered: true };
        let decided = |stamp| decide(copy(stamp), &s, me, &mut RecentCopies::default(), || 0);
        assert_eq!(decided(&plain_copy), Err(Skip::NoSubscription), "every node gets the plain copy");
        assert_eq!(decided(&for_other), Err(Skip::NoSubscription));
        assert!(decided(&for_g).is_ok());
        let both = subs(vec![plain("a/#", QoS::AtLeastOnce), plain("$share/g/a/+", QoS::AtLeastOnce)]);
        let d = decide(copy(&for_g), &both, me, &mut RecentCopies::default(), || 0).unwrap();
        assert_eq!(d.qos, 1, "a group copy goes through the group's subscription only");
    }
}
