//! The gate's guard in front of rumqttd's router: no topic, filter, will or retained message a
//! client sends may reach one of the router's panics, or one of its silent disconnects.
//!
//! rumqttd 0.20.0 trusts its links: it was read for every panic and disconnect reachable from
//! packet contents, and each hazard has one arm in [`admit`], the single check the gate runs on
//! what it hands the router (PUBLISH, will, SUBSCRIBE and UNSUBSCRIBE filters). Locations are in
//! the rumqttd-0.20.0 crate source. Two hazards are not refusals but spellings, because the
//! topics behind them are valid MQTT and must keep working:
//!
//! - `protocol/mod.rs:658`, `matches()`: `topic[..1]` slices one *byte*, and panics on the
//!   router thread when a topic starts with a multi-byte character (`é/x`, `€`, `日本/語`). All
//!   routing stops. [`router_topic`] prefixes such a topic's first level with [`ESCAPE`] (U+0001,
//!   which no client topic or filter can contain: both go through `valid_mqtt_utf8`), filters'
//!   literal first levels get the same prefix ([`router_filter_path`]), and [`client_topic`]
//!   removes it on delivery. A level that starts with `ESCAPE` is prefixed too, so the spelling
//!   stays injective for any input, and matching is unchanged: levels compare equal after the
//!   spelling exactly when they did before, `+`/`#` match any level, and a spelled level never
//!   starts with `$`.
//! - `router/routing.rs:512`, `handle_disconnection`: `.expect("group must exists")` panics when a
//!   persistent link that was the only member of a shared group leaves with a delivery of that
//!   filter unacknowledged (the group is dropped a few lines before it is looked up). The router
//!   link keeps such groups alive with a short-lived anchor member while a persistent link
//!   detaches (see `RumqttdLink::anchor_shared_groups`).
//!
//! Hazards handled elsewhere in the gate, listed so that this file is the whole inventory:
//! - `protocol/v4/mod.rs:364` `unreachable!()` when writing a PUBLISH with properties to a v3
//!   client: the gate encodes deliveries itself (`codec::encode_publish`).
//! - `router/routing.rs:770/784/857` out-of-order or unsolicited PUBACK/PUBREC/PUBCOMP disconnect
//!   the link: `ack_sequencer` releases acknowledgements in the router's order.
//! - `router/routing.rs:813` a PUBREL the router has no QoS 2 record of disconnects the link:
//!   inbound QoS 2 is handled by the gate and routed as QoS 0.
//! - `router/routing.rs:1743` client ids containing `+ $ # /` are refused without an answer:
//!   `router_link::router_client_id` escapes them.
//! - `segments/mod.rs:67/71` panics for a segment smaller than 1 KiB or no segment: the
//!   configuration refuses such values (`gate_segment_size`, `gate_segment_count`).
//! - Memory and CPU (each new topic is matched against every filter, each new filter against
//!   every topic ever routed, `router/logs.rs` `DataLog::matches`/`next_native_offset`): the
//!   per-client limits of `config::GateSettings` bound what one client can add.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::PublishProperties;

/// The byte that marks a first level spelled for the router (U+0001).
pub const ESCAPE: u8 = 0x01;

/// What the gate is about to hand the router.
#[derive(Debug, Clone, Copy)]
pub enum ToRouter<'a> {
    /// A PUBLISH (retained or not) or a will.
    Publish {
        topic: &'a str,
        properties: Option<&'a PublishProperties>,
    },
    Subscribe {
        filter: &'a str,
        subscription_id: Option<usize>,
    },
    Unsubscribe {
        filter: &'a str,
    },
}

/// Why something may not reach the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Hazard {
    #[error("empty topic")]
    EmptyTopic,
    #[error("topic contains a wildcard")]
    WildcardTopic,
    #[error("$ topics are not routed")]
    DollarTopic,
    #[error("unresolved topic alias")]
    TopicAlias,
    #[error("subscription identifier in a PUBLISH")]
    SubscriptionIdentifierInPublish,
    #[error("subscription identifier 0")]
    SubscriptionIdentifierZero,
    #[error("invalid topic filter")]
    InvalidFilter,
    #[error("$ filters are not routed")]
    DollarFilter,
}

impl Hazard {
    /// The MQTT v5 reason code for refusing it.
    pub fn reason_code(self) -> u8 {
        match self {
            Hazard::EmptyTopic | Hazard::SubscriptionIdentifierInPublish | Hazard::SubscriptionIdentifierZero => 0x82,
            Hazard::WildcardTopic | Hazard::DollarTopic => 0x90,
            Hazard::TopicAlias => 0x94,
            Hazard::InvalidFilter | Hazard::DollarFilter => 0x8F,
        }
    }
}

/// The one check on client data bound for the router. `Ok` means the router can take it once
/// spelled by [`router_topic`] / [`router_filter_path`].
pub fn admit(item: ToRouter<'_>) -> Result<(), Hazard> {
    match item {
        ToRouter::Publish { topic, properties } => {
            // protocol/mod.rs:657 `matches`: an empty topic is matched by every `#` and `+`
            // filter, and router/logs.rs `insert_to_retained_publishes` would store it.
            if topic.is_empty() {
                return Err(Hazard::EmptyTopic);
            }
            // protocol/mod.rs:658: a `$` topic is never matched, and a retained one is kept in
            // the retained map forever (router/routing.rs:1233). The gate serves `$` itself.
            if topic.starts_with('$') {
                return Err(Hazard::DollarTopic);
            }
            // The router never validates topics (`valid_topic` is not called on the publish
            // path): `a/#` would be cached in logs.rs `publish_filters` and matched as a level.
            if topic.contains(['+', '#']) {
                return Err(Hazard::WildcardTopic);
            }
            if let Some(properties) = properties {
                // router/routing.rs:1335 `validate_and_set_topic_alias`: an alias above the
                // router's maximum disconnects the link — for the system link, every will after.
                if properties.topic_alias.is_some() {
                    return Err(Hazard::TopicAlias);
                }
                // router/routing.rs:1205 `append_to_commitlog`: subscription identifiers in a
                // PUBLISH disconnect the link (MalformedPacket).
                if !properties.subscription_identifiers.is_empty() {
                    return Err(Hazard::SubscriptionIdentifierInPublish);
                }
            }
            // protocol/mod.rs:658 `topic[..1]` on a multi-byte first character: spelled, see
            // `router_topic`.
            Ok(())
        }
        ToRouter::Subscribe { filter, subscription_id } => {
            // router/routing.rs:678: subscription identifier 0 disconnects the link.
            if subscription_id == Some(0) {
                return Err(Hazard::SubscriptionIdentifierZero);
            }
            routable_filter(filter)
        }
        ToRouter::Unsubscribe { filter } => routable_filter(filter),
    }
}

fn routable_filter(filter: &str) -> Result<(), Hazard> {
    // The router validates no filter (protocol/mod.rs `valid_filter` is never called): `a/#/b`
    // or an empty filter would get a commit log and be matched by `matches()`, which assumes
    // valid input. (Empty levels, `/`, `//`, long filters are valid and safe: levels are split,
    // never indexed.)
    if !dynsec::topic::valid_subscription_filter(filter) {
        return Err(Hazard::InvalidFilter);
    }
    match filter.strip_prefix("$share/") {
        // router/routing.rs:1753 `extract_group`: `$share/<group>/<path>` splits at the first `/`
        // after the group, so `valid_filter` (non-empty group and path) is all it needs; the
        // group is renamed per filter by `router_link::router_filter`. A path starting with `$`
        // is harmless: nothing is ever routed to it.
        Some(_) => Ok(()),
        // router/routing.rs:1719 `validate_subscription`: any other `$` filter (and `$share`
        // itself) disconnects the link without a SUBACK.
        None if filter.starts_with('$') => Err(Hazard::DollarFilter),
        None => Ok(()),
    }
}

/// Does a first level need the router spelling?
fn needs_escape(level_start: Option<&u8>) -> bool {
    level_start.is_some_and(|&b| b >= 0x80 || b == ESCAPE) && !unguarded()
}

/// The router's spelling of a topic (see the module doc).
pub fn router_topic(topic: Bytes) -> Bytes {
    if !needs_escape(topic.first()) {
        return topic;
    }
    let mut spelled = BytesMut::with_capacity(topic.len() + 1);
    spelled.put_u8(ESCAPE);
    spelled.put_slice(&topic);
    spelled.freeze()
}

/// The client's topic for one the router delivers.
pub fn client_topic(topic: Bytes) -> Bytes {
    if topic.first() == Some(&ESCAPE) && !unguarded() { topic.slice(1..) } else { topic }
}

/// The router's spelling of a filter's path (for `$share/<group>/<path>`, of `<path>`).
pub fn router_filter_path(filter: &str) -> Cow<'_, str> {
    let path_start = match filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')) {
        Some((group, _)) => "$share/".len() + group.len() + 1,
        None => 0,
    };
    if !needs_escape(filter.as_bytes().get(path_start)) {
        return Cow::Borrowed(filter);
    }
    let mut spelled = String::with_capacity(filter.len() + 1);
    spelled.push_str(&filter[..path_start]);
    spelled.push(char::from(ESCAPE));
    spelled.push_str(&filter[path_start..]);
    Cow::Owned(spelled)
}

/// Test hook (feature `testkit` only): with `DYNSEC_TESTKIT_UNGUARDED_ROUTER=1` in the environment
/// the spelling is off, so a test can make the real router thread die the way it did before the
/// guard and check that the broker then exits.
#[cfg(feature = "testkit")]
fn unguarded() -> bool {
    static UNGUARDED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNGUARDED.get_or_init(|| std::env::var_os("DYNSEC_TESTKIT_UNGUARDED_ROUTER").is_some_and(|v| v == "1"))
}

#[cfg(not(feature = "testkit"))]
fn unguarded() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(topic: &str, filter: &str) -> bool {
        let topic = router_topic(Bytes::copy_from_slice(topic.as_bytes()));
        let topic = std::str::from_utf8(&topic).unwrap();
        // The router's own matcher: it must not panic, and must agree with mosquitto's.
        rumqttd::protocol::matches(topic, &router_filter_path(filter))
    }

    #[test]
    fn spelled_topics_are_routable_and_match_as_before() {
        for (topic, filter, expected) in [
            ("é/x", "é/x", true),
            ("é/x", "é/+", true),
            ("é/x", "+/x", true),
            ("é/x", "#", true),
            ("€", "€", true),
            ("€", "+", true),
            ("日本/語", "日本/#", true),
            ("日本/語", "日/#", false),
            ("\u{1}a", "\u{1}a", true),
            ("\u{1}a", "a", false),
            ("a/é", "a/é", true),
            ("é", "e", false),
            ("x/y", "x/#", true),
        ] {
            assert_eq!(matches(topic, filter), expected, "{topic} against {filter}");
            assert_eq!(dynsec::topic::topic_matches_filter(filter, topic), expected, "mosquitto: {topic} {filter}");
        }
    }

    #[test]
    fn the_spelling_is_undone_on_delivery_and_is_injective() {
        for topic in ["é/x", "€", "\u{1}", "\u{1}\u{1}é", "plain", "a/é"] {
            let spelled = router_topic(Bytes::copy_from_slice(topic.as_bytes()));
            assert!(spelled[0] < 0x80 && spelled[0] != b'$', "{topic}");
            assert_eq!(&client_topic(spelled)[..], topic.as_bytes());
        }
        assert_ne!(
            router_topic(Bytes::from_static("\u{1}é".as_bytes())),
            router_topic(Bytes::from_static("é".as_bytes()))
        );
        assert_eq!(router_filter_path("$share/g/é/#"), "$share/g/\u{1}é/#");
        assert_eq!(router_filter_path("$share/g/a"), "$share/g/a");
        assert_eq!(router_filter_path("+/é"), "+/é");
    }

    #[test]
    fn hazards_are_refused() {
        let publish = |topic| admit(ToRouter::Publish { topic, properties: None });
        assert_eq!(publish(""), Err(Hazard::EmptyTopic));
        assert_eq!(publish("$SYS/x"), Err(Hazard::DollarTopic));
        assert_eq!(publish("a/#"), Err(Hazard::WildcardTopic));
        assert_eq!(publish("é/x"), Ok(()));
        let aliased = PublishProperties { topic_alias: Some(1), ..Default::default() };
        assert_eq!(admit(ToRouter::Publish { topic: "a", properties: Some(&aliased) }), Err(Hazard::TopicAlias));
        let with_id = PublishProperties { subscription_identifiers: vec![1], ..Default::default() };
        assert_eq!(
            admit(ToRouter::Publish { topic: "a", properties: Some(&with_id) }),
            Err(Hazard::SubscriptionIdentifierInPublish)
        );
        let subscribe = |filter| admit(ToRouter::Subscribe { filter, subscription_id: None });
        assert_eq!(subscribe("$SYS/#"), Err(Hazard::DollarFilter));
        assert_eq!(subscribe("$share"), Err(Hazard::InvalidFilter));
        assert_eq!(subscribe("$share/g"), Err(Hazard::InvalidFilter));
        assert_eq!(subscribe("a/#/b"), Err(Hazard::InvalidFilter));
        assert_eq!(subscribe(""), Err(Hazard::InvalidFilter));
        for ok in ["é/#", "$share/g/é", "$share/g/$SYS/x", "/", "//", "a//b"] {
            assert_eq!(subscribe(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            admit(ToRouter::Subscribe { filter: "a", subscription_id: Some(0) }),
            Err(Hazard::SubscriptionIdentifierZero)
        );
        assert_eq!(admit(ToRouter::Unsubscribe { filter: "$SYS/x" }), Err(Hazard::DollarFilter));
    }
}
