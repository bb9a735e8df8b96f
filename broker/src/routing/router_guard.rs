//! The gate's guard in front of rumqttd's router: no topic, filter, will or retained message a
//! client sends may reach one of the router's panics, or one of its silent disconnects.
//!
//! rumqttd 0.20.0 trusts its links: it was read for every panic and disconnect reachable from
//! packet contents, and each hazard has one arm in [`admit`], the single check the gate runs on
//! what it hands the router (PUBLISH, will, SUBSCRIBE and UNSUBSCRIBE filters). Locations are in
//! the rumqttd-0.20.0 crate source. Three hazards are not refusals but spellings or repairs,
//! because the topics and packets behind them are valid MQTT and must keep working:
//!
//! - `protocol/mod.rs:658`, `matches()`: `topic[..1]` slices one *byte*, and panics on the
//!   router thread when a topic starts with a multi-byte character (`é/x`, `€`, `日本/語`). All
//!   routing stops. The same function never matches a `$` topic, and `router/routing.rs:1736`
//!   disconnects a client subscribing to a `$` filter. Both first levels are spelled for the router
//!   by `topic_form`, which `router_link` applies to everything it pushes and receives.
//! - `router/routing.rs:512`, `handle_disconnection`: `.expect("group must exists")` panics when a
//!   persistent link that was the only member of a shared group leaves with a delivery of that
//!   filter unacknowledged (the group is dropped a few lines before it is looked up). The router
//!   link keeps such groups alive with a short-lived anchor member while a persistent link
//!   detaches (see `RumqttdLink::anchor_shared_groups`).
//! - `router/routing.rs:710-760`, UNSUBSCRIBE of a shared filter: its request keeps delivering and
//!   the client leaves every shared group it is in (docs/rumqttd.md, defect 18); the router link
//!   repairs both in the same batch (`RumqttdLink::push`).
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

use rumqttd::protocol::PublishProperties;

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
    #[error("unresolved topic alias")]
    TopicAlias,
    #[error("subscription identifier in a PUBLISH")]
    SubscriptionIdentifierInPublish,
    #[error("subscription identifier 0")]
    SubscriptionIdentifierZero,
    #[error("invalid topic filter")]
    InvalidFilter,
}

impl Hazard {
    /// The MQTT v5 reason code for refusing it.
    pub fn reason_code(self) -> u8 {
        match self {
            Hazard::EmptyTopic | Hazard::SubscriptionIdentifierInPublish | Hazard::SubscriptionIdentifierZero => 0x82,
            Hazard::WildcardTopic => 0x90,
            Hazard::TopicAlias => 0x94,
            Hazard::InvalidFilter => 0x8F,
        }
    }
}

/// The one check on client data bound for the router. `Ok` means the router can take it once
/// spelled by `topic_form`.
pub fn admit(item: ToRouter<'_>) -> Result<(), Hazard> {
    match item {
        ToRouter::Publish { topic, properties } => {
            // protocol/mod.rs:657 `matches`: an empty topic is matched by every `#` and `+`
            // filter, and router/logs.rs `insert_to_retained_publishes` would store it.
            if topic.is_empty() {
                return Err(Hazard::EmptyTopic);
            }
            // protocol/mod.rs:658: a `$` topic is never matched, and a retained one would be kept
            // in the retained map forever (router/routing.rs:1233): spelled, see `topic_form`.
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
            // `topic_form`.
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
    // router/routing.rs:1753 `extract_group`: `$share/<group>/<path>` splits at the first `/`
    // after the group, so `valid_filter` (non-empty group and path) is all it needs; the group is
    // renamed per filter by `router_link::router_filter`. router/routing.rs:1719
    // `validate_subscription` disconnects on any other filter starting with `$` (and `$share`
    // itself, which is not a valid filter): `topic_form` spells their first level.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hazards_are_refused() {
        let publish = |topic| admit(ToRouter::Publish { topic, properties: None });
        assert_eq!(publish(""), Err(Hazard::EmptyTopic));
        assert_eq!(publish("$x/y"), Ok(()));
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
        assert_eq!(subscribe("$x/#"), Ok(()));
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
        assert_eq!(admit(ToRouter::Unsubscribe { filter: "$x/y" }), Ok(()));
    }
}
