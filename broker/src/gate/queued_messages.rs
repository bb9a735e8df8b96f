//! The messages the router holds for an offline persistent session, taken out of it when the
//! session moves to another node (`cluster::session_moves`, docs/cluster.md "Sessions on
//! takeover"). rumqttd keeps such a session's queue as cursors into its filters' logs, which only
//! a link of that client id reads; so the session is attached here as a reconnect does, every
//! message the router sends is taken (and acknowledged to it, as a client would), and the link is
//! closed again. The caller purges the router's session afterwards.
//!
//! Knowing when the queue is empty: after attaching, an *end marker* is routed on a topic that
//! each of the session's plain filters matches, addressed to this client alone (every other
//! client drops it, `routing::envelope::Stamp::addressee`). Each filter's log delivers in order,
//! so once every marker has come through every filter that matches it, every filter's log has
//! been read to its end. The wait is bounded ([`COLLECT_WAIT`]); a filter the router does not
//! hold for the session (nothing queued through it) is then what is missing, and a warning says so.
//!
//! What is kept of each message is what the persistence store keeps of a queued one
//! (`persistence::records::StoredMessage`): topic, publish QoS, payload, expiry as a Unix instant,
//! the properties that travel, and the publisher — as this client's id when it was this client
//! (No Local), otherwise [`OTHER_PUBLISHER`] (the envelope carries only a hash of the
//! publisher's id). Not kept: copies for `$share` subscriptions (a group's message is one
//! member's), QoS 0 messages unless `queue_qos0_messages`, expired messages, and what exceeds
//! `max_queued_messages` / `max_queued_bytes` (the newest go, as mosquitto drops for a full queue).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttd::protocol::{Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason};

use crate::gate::saved_session::{SavedSession, SubscriptionKind};
use crate::gate::subscriptions;
use crate::persistence::records::{StoredMessage, StoredProperties, unix_ms};
use crate::routing::envelope::{self, Publisher, Stamp};
use crate::routing::router_link::{FromRouter, Routed, RouterLink, RoutingEngine};
use crate::routing::shared_filter;

/// How long the router may take to hand over a session's queue (its end markers included).
pub const COLLECT_WAIT: Duration = Duration::from_secs(1);

/// The publisher recorded for a message another client published: no client id can be it
/// (MQTT strings never hold U+0000), so No Local never takes it for the session's own.
pub const OTHER_PUBLISHER: &str = "\u{0}other";

/// The envelope origin of end markers (connection ids count up from 1 and never get here; the
/// persistence module's origins are the three below it).
const MARKER_ORIGIN: u64 = u64::MAX - 5;

/// What may be taken out of a session's queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// `max_queued_messages` (0: no limit).
    pub max_messages: usize,
    /// `max_queued_bytes` (0: no limit).
    pub max_bytes: u64,
    /// `queue_qos0_messages`.
    pub queue_qos0: bool,
}

/// What was taken: each message with its sequence in the persistence store when it is queued
/// there, in the order the router sent them; and how many were left out for the bounds.
#[derive(Debug, Default)]
pub struct Collected {
    pub messages: Vec<(Option<u64>, StoredMessage)>,
    pub over_bounds: usize,
}

/// Takes the router's queue for `client_id`'s offline session `session` (see the module
/// documentation). Nobody may be attached with the client id meanwhile (the caller holds it).
pub async fn collect<E: RoutingEngine>(engine: &E, client_id: &str, session: &SavedSession, rules: Rules) -> Collected {
    let mut collected = Collected::default();
    let attached = match engine.attach(client_id, true).await {
        Ok(attached) => attached,
        Err(e) => {
            tracing::warn!(client_id = %crate::logging::client_text(client_id), "cluster: the router's queue for the session could not be read: {e}");
            return collected;
        }
    };
    let mut link = attached.link;
    if !attached.session_present {
        link.detach();
        return collected;
    }
    let filters: Vec<&str> = session
        .subscriptions
        .values()
        .filter(|s| s.kind == SubscriptionKind::Routed && !shared_filter::is_shared(&s.filter.path))
        .map(|s| s.filter.path.as_str())
        .collect();
    let mut markers = Markers::route(engine, client_id, &filters);
    let me = Publisher::of(client_id);
    let mut taken = Taking { filters: &filters, session, me, client_id, rules, seen: HashSet::new(), bytes: 0 };
    let deadline = tokio::time::Instant::now() + COLLECT_WAIT;
    while !markers.all_seen() {
        let note = match tokio::time::timeout_at(deadline, link.recv()).await {
            Ok(Ok(note)) => note,
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::warn!(
                    client_id = %crate::logging::client_text(client_id),
                    "cluster: the router did not finish handing over the session's queue in {COLLECT_WAIT:?}; what it sent moves"
                );
                break;
            }
        };
        let mut next = Some(Ok(note));
        while let Some(Ok(note)) = next.take() {
            match note {
                FromRouter::Publish(routed) => {
                    acknowledge(&mut link, &routed);
                    if let Some((stamp, body)) = envelope::open(routed.payload.clone())
                        && !markers.seen(&stamp)
                    {
                        taken.take(&mut collected, &stamp, body, &routed);
                    }
                }
                FromRouter::PubRel(pkid) => {
                    link.push(Packet::PubComp(PubComp { pkid, reason: PubCompReason::Success }, None));
                }
                FromRouter::Paused => {
                    let _ = link.flush();
                    if link.resume().await.is_err() {
                        break;
                    }
                }
                FromRouter::SubAck(_) | FromRouter::PingResp | FromRouter::Nothing => {}
            }
            next = link.try_recv();
        }
        if link.flush().is_err() {
            break;
        }
    }
    link.detach();
    collected
}

/// Acknowledges a router copy as the client would, at once and in order.
fn acknowledge<L: RouterLink>(link: &mut L, routed: &Routed) {
    match routed.qos {
        1 => link.push(Packet::PubAck(PubAck { pkid: routed.pkid, reason: PubAckReason::Success }, None)),
        2 => link.push(Packet::PubRec(PubRec { pkid: routed.pkid, reason: PubRecReason::Success }, None)),
        _ => {}
    }
}

/// The session's end markers and the copies of each still to come.
struct Markers {
    /// Marker sequence → copies still due (one per plain filter its topic matches).
    due: HashMap<u64, usize>,
}

impl Markers {
    fn route<E: RoutingEngine>(engine: &E, client_id: &str, filters: &[&str]) -> Markers {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut due = HashMap::new();
        for filter in filters {
            let topic = marker_topic(filter);
            let copies = filters.iter().filter(|f| subscriptions::matches_mqtt(f, topic.as_bytes())).count();
            if copies == 0 {
                continue;
            }
            let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
            due.insert(sequence, copies);
            let stamp = Stamp {
                qos: 0,
                retain: false,
                publisher: Publisher::of(OTHER_PUBLISHER),
                origin: MARKER_ORIGIN,
                sequence,
                expires_at_ms: None,
                queued: None,
                addressee: Some(Publisher::of(client_id)),
                share_group: None,
            };
            engine.inject(envelope::routable(Bytes::from(topic.into_bytes()), b"", stamp, None));
        }
        Markers { due }
    }

    /// Whether `stamp` is one of the markers (counted if so).
    fn seen(&mut self, stamp: &Stamp) -> bool {
        if stamp.origin != MARKER_ORIGIN {
            return false;
        }
        if let Some(left) = self.due.get_mut(&stamp.sequence) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.due.remove(&stamp.sequence);
            }
        }
        true
    }

    fn all_seen(&self) -> bool {
        self.due.is_empty()
    }
}

/// A topic `filter` matches: each `+` and the `#` become one level `m` (`a/#` matches `a/m`).
fn marker_topic(filter: &str) -> String {
    filter.split('/').map(|level| if level == "+" || level == "#" { "m" } else { level }).collect::<Vec<_>>().join("/")
}

/// What decides, message by message, what is taken.
struct Taking<'a> {
    filters: &'a [&'a str],
    session: &'a SavedSession,
    me: Publisher,
    client_id: &'a str,
    rules: Rules,
    /// The identities of the messages taken (one copy per message, whatever the filters).
    seen: HashSet<(u64, u64)>,
    bytes: u64,
}

impl Taking<'_> {
    fn take(&mut self, collected: &mut Collected, stamp: &Stamp, body: Bytes, routed: &Routed) {
        if routed.retain || stamp.share_group.is_some() || stamp.addressee.is_some_and(|to| to != self.me) {
            return;
        }
        let Ok(topic) = std::str::from_utf8(&routed.topic) else { return };
        let granted = self
            .filters
            .iter()
            .filter(|f| subscriptions::matches_mqtt(f, topic.as_bytes()))
            .filter_map(|f| self.session.subscriptions.get(f))
            .filter(|s| !(s.filter.nolocal && stamp.publisher == self.me))
            .map(|s| s.filter.qos as u8)
            .max();
        let Some(granted) = granted else { return };
        if stamp.qos.min(granted) == 0 && !self.rules.queue_qos0 {
            return;
        }
        let now = envelope::now_ms();
        let expires_at_unix_ms = match stamp.expires_at_ms {
            Some(at) if at <= now => return,
            Some(at) => Some(unix_ms() + (at - now)),
            None => None,
        };
        if !self.seen.insert(stamp.message_id()) {
            return;
        }
        let size = body.len() as u64;
        let full = (self.rules.max_messages > 0 && collected.messages.len() >= self.rules.max_messages)
            || (self.rules.max_bytes > 0 && self.bytes + size > self.rules.max_bytes);
        if full {
            collected.over_bounds += 1;
            return;
        }
        self.bytes += size;
        let publisher = if stamp.publisher == self.me { self.client_id } else { OTHER_PUBLISHER };
        let message = StoredMessage {
            topic: topic.to_owned(),
            qos: stamp.qos,
            payload: body.to_vec(),
            publisher: publisher.to_owned(),
            expires_at_unix_ms,
            properties: StoredProperties::of(routed.properties.as_deref()),
        };
        collected.messages.push((stamp.queued, message));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_marker_topic_matches_its_filter() {
        for filter in ["a/b", "a/+/c", "a/#", "#", "+", "/#", "+/+/x", "$dev/+/cmd"] {
            let topic = super::marker_topic(filter);
            assert!(crate::gate::subscriptions::matches_mqtt(filter, topic.as_bytes()), "{filter} → {topic}");
        }
    }
}
