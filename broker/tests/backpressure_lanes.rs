//! Property test of back-pressure's lanes: a message is always counted in the lane of every
//! subscriber it can reach, so a subscriber's lane count bounds its lag. Checked against the
//! MQTT matcher on random filter sets and topics (deeper than the five counted levels).
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use dynsec::topic::{topic_matches_filter, valid_filter};
use dynsec_broker::routing::backpressure::{Lane, TopicLanes};
use proptest::prelude::*;

/// Few names, so that random filters and topics share prefixes and match.
fn literal() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["site", "dev1", "dev2", "cmd", "", "x"])
}

fn filter() -> impl Strategy<Value = String> {
    let level =
        prop_oneof![6 => literal().prop_map(str::to_owned), 2 => Just("+".to_owned()), 1 => Just("#".to_owned())];
    prop::collection::vec(level, 1..9)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a valid filter", |filter| valid_filter(filter))
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(literal(), 1..9).prop_map(|levels| levels.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn a_matched_message_is_counted_in_the_subscribers_lane(
        filters in prop::collection::vec(filter(), 1..4),
        topic in topic(),
    ) {
        let lane = Lane::of_filters(filters.iter().map(String::as_str));
        if filters.iter().any(|filter| topic_matches_filter(filter, &topic)) {
            prop_assert!(
                TopicLanes::of(topic.as_bytes()).counted_in(lane),
                "{topic} matches {filters:?} but is not counted in their lane"
            );
        }
    }
}

#[test]
fn the_property_is_not_vacuous() {
    // Device filters get a lane of their own, which other devices' messages do not reach.
    let device = Lane::of_filters(["site/dev1/cmd", "site/dev1/x/#"]);
    assert_ne!(device, Lane::TOTAL);
    assert!(TopicLanes::of(b"site/dev1/x/y/z/a/b").counted_in(device));
    assert!(!TopicLanes::of(b"site/dev2/cmd").counted_in(device));
}
