//! SUBSCRIBE and UNSUBSCRIBE rules of the gate, and the ordering of their acknowledgements.
//!
//! Each filter of a SUBSCRIBE is validated, authorised with its full text (`$share/<g>/…`
//! included), then either routed (other `$` filters too, spelled for the router by
//! `routing::topic_form`), kept locally (`$CONTROL/…` and `$SYS`, which the gate serves) or
//! denied. Only the routed part goes to the router; its SUBACK fills the routed slots. A `$` topic
//! delivered by the router is checked against the client's filters by MQTT's rules
//! ([`matches_mqtt`], in `gate::delivery`), which the router's matcher does not follow for
//! spelled topics. UNSUBSCRIBE is answered by the gate
//! (the router sends none for unknown filters and one per filter otherwise: docs/rumqttd.md,
//! defect 4).
//! [`PendingAcks`] keeps SUBACKs and UNSUBACKs in the order the client's packets came.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use rumqttd::protocol::SubscribeReasonCode;

use crate::gate::codec;
use crate::gate::mailbox::SysMessage;
use crate::gate::saved_session::SubscriptionKind;
use crate::security::Protocol;

/// Marks a SUBACK slot that the router's answer fills.
const FROM_ROUTER: u8 = 0xFF;

pub use crate::routing::shared_filter::{is_shared, matching_path, share_group};
pub use dynsec::topic::valid_subscription_filter as valid_filter;

/// How a (valid, allowed) filter is served.
pub fn kind_of(filter: &str) -> SubscriptionKind {
    if filter.starts_with("$CONTROL/") {
        SubscriptionKind::Control
    } else if filter == "$SYS" || filter.starts_with("$SYS/") {
        SubscriptionKind::Local
    } else {
        SubscriptionKind::Routed
    }
}

/// Does `filter`, as the client subscribed it (`$share/<group>/<filter>` included), match `topic`
/// by MQTT's rules? (Unlike the router's matcher: a filter starting with a wildcard never matches
/// a topic starting with `$`, MQTT-4.7.2-1.) The filter was validated at SUBSCRIBE, so this is
/// the one matcher of the delivery hot path: on bytes, without re-validating the filter on each
/// call as `dynsec::topic::topic_matches_filter` does.
pub fn matches_mqtt(filter: &str, topic: &[u8]) -> bool {
    filter_matches(matching_path(filter).as_bytes(), topic)
}

/// Topic matching for a validated filter. A topic never holds a wildcard, so a filter equal to
/// it matches (one comparison: the common case of a device's own topic).
fn filter_matches(filter: &[u8], topic: &[u8]) -> bool {
    if filter == topic {
        return true;
    }
    if topic.first() == Some(&b'$') && matches!(filter.first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut levels = topic.split(|&b| b == b'/');
    for level in filter.split(|&b| b == b'/') {
        match level {
            b"#" => return true,
            b"+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// The SUBACK code of a denied filter: v5 0x87, 3.1.1 0x80, and 3.1 echoes the requested QoS
/// although nothing was subscribed (mosquitto's behaviour, docs/compatibility.md §3.6).
pub fn denied_code(protocol: Protocol, requested_qos: u8) -> u8 {
    match protocol {
        Protocol::V5 => 0x87,
        Protocol::V311 => 0x80,
        Protocol::V31 => requested_qos,
    }
}

/// The SUBACK code of a filter the router cannot take (`router_guard`): v5 the hazard's reason
/// code, 3.x 0x80.
pub fn refused_code(protocol: Protocol, hazard: crate::routing::router_guard::Hazard) -> u8 {
    match protocol {
        Protocol::V5 => hazard.reason_code(),
        Protocol::V311 | Protocol::V31 => 0x80,
    }
}

/// A router SUBACK code as a byte.
pub fn router_code(code: SubscribeReasonCode) -> u8 {
    match code {
        SubscribeReasonCode::QoS0 => 0,
        SubscribeReasonCode::QoS1 => 1,
        SubscribeReasonCode::QoS2 => 2,
        SubscribeReasonCode::Success(qos) => qos as u8,
        _ => 0x80,
    }
}

#[derive(Debug)]
enum Kind {
    SubAck,
    UnsubAck,
    /// A SUBACK the client must not see (re-subscription of a resumed session).
    Silent,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    pkid: u16,
    codes: Vec<u8>,
    waiting_for_router: bool,
    /// Retained `$SYS` values the new subscriptions get, written after this SUBACK.
    then: Vec<Arc<SysMessage>>,
}

/// SUBACK/UNSUBACK in client order, merged with the router's answers.
#[derive(Debug, Default)]
pub struct PendingAcks {
    queue: VecDeque<Pending>,
}

impl PendingAcks {
    /// A SUBSCRIBE: `codes` has [`PendingAcks::ROUTED`] in the slots the router answers.
    /// `then`: retained messages to write once the SUBACK is (MQTT clients expect the SUBACK first).
    pub fn subscribe(&mut self, pkid: u16, codes: Vec<u8>, then: Vec<Arc<SysMessage>>) {
        let waiting_for_router = codes.contains(&FROM_ROUTER);
        self.queue.push_back(Pending { kind: Kind::SubAck, pkid, codes, waiting_for_router, then });
    }

    /// A re-subscription sent to the router whose SUBACK is swallowed.
    pub fn silent(&mut self) {
        self.queue.push_back(Pending {
            kind: Kind::Silent,
            pkid: 0,
            codes: Vec::new(),
            waiting_for_router: true,
            then: Vec::new(),
        });
    }

    pub fn unsubscribe(&mut self, pkid: u16, codes: Vec<u8>) {
        self.queue.push_back(Pending {
            kind: Kind::UnsubAck,
            pkid,
            codes,
            waiting_for_router: false,
            then: Vec::new(),
        });
    }

    /// A resumed session's subscriptions are still on their way to the router (a silent SUBACK is
    /// due).
    pub fn resubscribing(&self) -> bool {
        self.queue.iter().any(|pending| matches!(pending.kind, Kind::Silent))
    }

    /// No acknowledgement waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The router's SUBACK (they come in the order the SUBSCRIBEs were sent).
    pub fn router_suback(&mut self, codes: impl IntoIterator<Item = u8>) {
        let Some(pending) = self.queue.iter_mut().find(|p| p.waiting_for_router) else { return };
        let mut codes = codes.into_iter();
        for slot in pending.codes.iter_mut().filter(|c| **c == FROM_ROUTER) {
            *slot = codes.next().unwrap_or(0x80);
        }
        pending.waiting_for_router = false;
    }

    /// Writes every acknowledgement that is complete and no longer waits behind another; returns
    /// the retained messages the caller must write next. (`client_id` is for the log lines.)
    #[must_use]
    pub fn write_ready(&mut self, buf: &mut BytesMut, protocol: Protocol, client_id: &str) -> Vec<Arc<SysMessage>> {
        let mut then = Vec::new();
        while self.queue.front().is_some_and(|p| !p.waiting_for_router) {
            let Some(pending) = self.queue.pop_front() else { break };
            match pending.kind {
                Kind::SubAck => {
                    codec::suback(buf, protocol, pending.pkid, &pending.codes);
                    crate::gate::client_log::sending("SUBACK", client_id);
                }
                Kind::UnsubAck => {
                    codec::unsuback(buf, protocol, pending.pkid, &pending.codes);
                    crate::gate::client_log::sending("UNSUBACK", client_id);
                }
                Kind::Silent => {}
            }
            then.extend(pending.then);
        }
        if self.queue.is_empty() {
            // Subscribing is rare after the first packets: an idle connection keeps no queue.
            self.queue = VecDeque::new();
        }
        then
    }
}

impl PendingAcks {
    /// The placeholder for a slot answered by the router.
    pub const ROUTED: u8 = FROM_ROUTER;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        for good in ["a", "a/+/b", "#", "$SYS/#", "$share/g/a/#", "$CONTROL/dynamic-security/v1/response"] {
            assert!(valid_filter(good), "{good}");
        }
        for bad in ["", "a/#/b", "a+", "$share/g", "$share//a", "$share/g+/a", "$share/g/", "$share"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn kinds() {
        for routed in ["a/b", "$share/g/a", "$x/#", "$CONTROL", "$SYSTEM/x", "$share/g/$SYS/#", "#"] {
            assert_eq!(kind_of(routed), SubscriptionKind::Routed, "{routed}");
        }
        assert_eq!(kind_of("$CONTROL/x/#"), SubscriptionKind::Control);
        assert_eq!(kind_of("$SYS/#"), SubscriptionKind::Local);
        assert_eq!(kind_of("$SYS"), SubscriptionKind::Local);
    }

    #[test]
    fn mqtt_matching_keeps_dollar_topics_from_wildcards() {
        for (filter, topic, expected) in [
            ("$x/#", "$x/y", true),
            ("$x/+", "$x/y", true),
            ("$share/g/$x/#", "$x/y", true),
            ("#", "$x/y", false),
            ("+/y", "$x/y", false),
            ("$share/g/#", "$x/y", false),
            ("$share/g/+/y", "$x/y", false),
            ("#", "a/y", true),
            ("$share/g/a/+", "a/y", true),
            ("a/+", "a/$y", true),
        ] {
            assert_eq!(matches_mqtt(filter, topic.as_bytes()), expected, "{filter} {topic}");
        }
    }

    #[test]
    fn acks_keep_client_order_and_merge_router_codes() {
        let mut pending = PendingAcks::default();
        let mut buf = BytesMut::new();
        pending.subscribe(1, vec![PendingAcks::ROUTED, 0x80, PendingAcks::ROUTED], Vec::new());
        pending.unsubscribe(2, vec![]);
        let _ = pending.write_ready(&mut buf, Protocol::V311, "c");
        assert!(buf.is_empty(), "the UNSUBACK waits behind the SUBACK");
        pending.router_suback([1, 2]);
        let _ = pending.write_ready(&mut buf, Protocol::V311, "c");
        assert_eq!(&buf[..], &[0x90, 5, 0, 1, 1, 0x80, 2, 0xB0, 2, 0, 2]);
    }

    #[test]
    fn silent_subacks_are_swallowed_in_turn() {
        let mut pending = PendingAcks::default();
        let mut buf = BytesMut::new();
        pending.silent();
        pending.subscribe(7, vec![PendingAcks::ROUTED], Vec::new());
        assert!(pending.resubscribing());
        pending.router_suback([0]);
        let _ = pending.write_ready(&mut buf, Protocol::V5, "c");
        assert!(buf.is_empty());
        assert!(!pending.resubscribing());
        pending.router_suback([1]);
        let _ = pending.write_ready(&mut buf, Protocol::V5, "c");
        assert_eq!(&buf[..], &[0x90, 4, 0, 7, 0, 1]);
    }

    #[test]
    fn denied_codes_per_version() {
        assert_eq!(denied_code(Protocol::V5, 1), 0x87);
        assert_eq!(denied_code(Protocol::V311, 1), 0x80);
        assert_eq!(denied_code(Protocol::V31, 2), 2);
    }
}
