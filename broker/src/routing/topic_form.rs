//! The router's form of topics and filters: what the gate hands rumqttd is spelled so that the
//! router handles every valid MQTT topic, and deliveries are unspelled before the client sees
//! them. `router_link` applies it to every packet it pushes (`to_router`, `filter_to_router`)
//! and every delivery it receives (`from_router`); the gate itself only ever sees client topics.
//!
//! A filter that is `#` alone is spelled `+/#`, which the router matches the same way: the
//! router's `#` belongs to the fleet hub, whose log is sized for it ([`HUB_ALL_TOPICS`]).
//!
//! Two kinds of first level need the spelling (rumqttd-0.20.0 locations):
//! - **`$` topics** (`$x/...`, anything but `$SYS`, `$share` and `$CONTROL`, which the gate serves
//!   or refuses itself): `protocol/mod.rs:658` `matches()` never matches a topic starting with
//!   `$`, and `router/routing.rs:1736` disconnects a client subscribing to a `$` filter other
//!   than `$share/...` (docs/rumqttd.md, defect 9). mosquitto routes them: explicit `$x/...`
//!   subscribers receive them.
//! - **a multi-byte first character** (`é/x`, `€`): `matches()` slices `topic[..1]` by byte and
//!   panics on the router thread, and all routing stops.
//!
//! Such a first level gets the prefix [`ESCAPE`] (U+0001, which no client topic or filter can
//! contain: both go through `valid_mqtt_utf8`); a level that starts with `ESCAPE` is prefixed too,
//! so the form is injective for any input. Matching is kept: literal levels compare equal after
//! the spelling exactly when they did before, and `+`/`#` match any level. One MQTT rule is lost
//! and restored on delivery: a filter starting with a wildcard must not match a `$` topic
//! (MQTT-4.7.2-1), but in the router `#` and `+/...` do match the spelled `\u{1}$x/...`. The gate
//! drops such deliveries unless the receiving client has a subscription that matches by MQTT
//! rules (`gate::delivery::decide`, with `gate::subscriptions::matches_mqtt`).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// The byte that marks a first level spelled for the router (U+0001).
pub const ESCAPE: u8 = 0x01;

/// Whether a topic that passed the client's ACL goes to the router: everything except what the
/// gate serves itself (`$CONTROL/...` requests) or never routes (`$SYS`, `$share`: mosquitto's
/// prefixes, refused to publishers before this; wills likewise).
pub fn routed(topic: &str) -> bool {
    !(topic.starts_with("$SYS") || topic.starts_with("$share") || topic.starts_with("$CONTROL/"))
}

/// Does a first level starting with this byte need the spelling?
fn needs_escape(level_start: Option<&u8>) -> bool {
    match level_start {
        Some(b'$') => true,
        Some(&b) => (b >= 0x80 || b == ESCAPE) && !unguarded(),
        None => false,
    }
}

/// The router's form of a topic (see the module doc).
pub fn to_router(topic: Bytes) -> Bytes {
    if !needs_escape(topic.first()) {
        return topic;
    }
    let mut spelled = BytesMut::with_capacity(topic.len() + 1);
    spelled.put_u8(ESCAPE);
    spelled.put_slice(&topic);
    spelled.freeze()
}

/// The client's topic for one the router delivers.
pub fn from_router(topic: Bytes) -> Bytes {
    if topic.first() == Some(&ESCAPE) && needs_escape(topic.get(1)) { topic.slice(1..) } else { topic }
}

/// The fleet hub's filter of every routed topic (`routing::hub`), as the gate names it: the only
/// filter spelled `#` for the router. A client's `#` (plain or shared) is spelled `+/#`, which the
/// router matches the same way (its `#` also matches the parent level, so `+/#` matches `a`),
/// so that the router's log of `#` is the hub's alone and is sized for the hub (the router's
/// default segments; every other filter gets `gate_segment_size` through rumqttd's per-filter
/// override, `router_link::Rumqttd::start`). The name starts with [`ESCAPE`], which no client
/// filter can contain.
pub const HUB_ALL_TOPICS: &str = "\u{1}#";

/// The router's form of a filter's path (for `$share/<group>/<path>`, of `<path>`).
pub fn filter_to_router(filter: &str) -> Cow<'_, str> {
    if filter == HUB_ALL_TOPICS {
        // Owned: a borrowed answer tells the caller the filter is unchanged (`router_link`).
        return Cow::Owned("#".to_owned());
    }
    let path_start = match filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')) {
        Some((group, _)) => "$share/".len() + group.len() + 1,
        None => 0,
    };
    if &filter[path_start..] == "#" {
        return Cow::Owned(format!("{}+/#", &filter[..path_start]));
    }
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
/// multi-byte first characters are not spelled, so a test can make the real router thread die
/// the way it did before the guard and check that the broker then exits.
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
        let topic = to_router(Bytes::copy_from_slice(topic.as_bytes()));
        let topic = std::str::from_utf8(&topic).unwrap();
        // The router's own matcher: it must not panic.
        rumqttd::protocol::matches(topic, &filter_to_router(filter))
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
            ("$x/y", "$x/y", true),
            ("$x/y", "$x/+", true),
            ("$x/y", "$x/#", true),
            ("$x", "$x/#", true),
            ("$x/y", "$y/#", false),
            ("$x/y", "x/y", false),
            ("x/y", "$x/y", false),
            ("$", "$", true),
            ("a/$x", "a/$x", true),
            ("a/$x", "a/+", true),
        ] {
            assert_eq!(matches(topic, filter), expected, "{topic} against {filter}");
            assert_eq!(dynsec::topic::topic_matches_filter(filter, topic), expected, "mosquitto: {topic} {filter}");
        }
    }

    #[test]
    fn only_the_hub_has_the_routers_hash_filter_and_a_clients_hash_matches_as_before() {
        assert_eq!(filter_to_router(HUB_ALL_TOPICS), "#");
        assert_eq!(filter_to_router("#"), "+/#");
        assert_eq!(filter_to_router("$share/g/#"), "$share/g/+/#");
        assert_eq!(filter_to_router("a/#"), "a/#");
        for topic in ["a", "a/b", "/", "/a", "a/", "a/b/c/d", "é", "$x/y", "$x"] {
            let spelled = to_router(Bytes::copy_from_slice(topic.as_bytes()));
            let spelled = std::str::from_utf8(&spelled).unwrap();
            assert!(rumqttd::protocol::matches(spelled, &filter_to_router("#")), "{topic}");
            assert!(rumqttd::protocol::matches(spelled, &filter_to_router(HUB_ALL_TOPICS)), "{topic}");
        }
    }

    #[test]
    fn wildcards_match_spelled_dollar_topics_in_the_router() {
        // What the gate's delivery check exists for (see the module doc).
        for filter in ["#", "+/y", "+/+"] {
            assert!(matches("$x/y", filter), "{filter}");
            assert!(!dynsec::topic::topic_matches_filter(filter, "$x/y"), "{filter}");
        }
    }

    #[test]
    fn the_spelling_is_undone_on_delivery_and_is_injective() {
        for topic in ["é/x", "€", "\u{1}", "\u{1}\u{1}é", "plain", "a/é", "$x/y", "$", "\u{1}$x", "a/$b"] {
            let spelled = to_router(Bytes::copy_from_slice(topic.as_bytes()));
            assert!(spelled[0] < 0x80 && spelled[0] != b'$', "{topic}");
            assert_eq!(&from_router(spelled)[..], topic.as_bytes());
        }
        assert_ne!(to_router(Bytes::from_static("\u{1}é".as_bytes())), to_router(Bytes::from_static("é".as_bytes())));
        assert_ne!(to_router(Bytes::from_static(b"\x01$x")), to_router(Bytes::from_static(b"$x")));
        assert_eq!(filter_to_router("$share/g/é/#"), "$share/g/\u{1}é/#");
        assert_eq!(filter_to_router("$share/g/$x/#"), "$share/g/\u{1}$x/#");
        assert_eq!(filter_to_router("$x/#"), "\u{1}$x/#");
        assert_eq!(filter_to_router("$share/g/a"), "$share/g/a");
        assert_eq!(filter_to_router("+/é"), "+/é");
    }

    #[test]
    fn what_is_routed() {
        for topic in ["a", "$x/y", "$CONTROL", "$CONTROLx/y", "$", "$sys/x"] {
            assert!(routed(topic), "{topic}");
        }
        for topic in ["$SYS/x", "$SYS", "$SYSTEM", "$share/g/x", "$sharex", "$CONTROL/dynamic-security/v1"] {
            assert!(!routed(topic), "{topic}");
        }
    }
}
