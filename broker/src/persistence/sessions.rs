//! The persistent sessions the store knows, in memory: each one's subscriptions (to decide what
//! a publish queues for it while its client is offline), whether its client is connected, the
//! sequence numbers of its queued messages (with their sizes, for `max_queued_messages` and
//! `max_queued_bytes`), and whether the router holds its queue too.
//!
//! Every message a persistent session's subscriptions match is queued in the store (QoS 0 only
//! with `queue_qos0_messages`), whether its client is connected or not — so that a message still
//! unacknowledged by a connected client when the broker is killed is delivered after the restart
//! too — under one sequence number per publish that the message's envelope carries (`routing::envelope::Stamp::queued`). The router queues the same
//! message for the session when it holds the session (the client attached since the broker
//! started); when it does not (the session was restored from the file), the gate keeps the
//! message here and hands it to the router, addressed to that client alone, when the client
//! comes back ([`SessionIndex::connected`]). Either way the store's copy is removed when the
//! client acknowledges the delivery, or when the gate drops it ([`SessionIndex::delivered`]).
//!
//! A publish finds the sessions it may concern through an index of their filters (`FilterIndex`),
//! not by looking at every session. Shared subscriptions are not queued in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use rumqttd::protocol::{Filter, QoS, RetainForwardRule};

use super::records::{self, StoredMessage, StoredSession, StoredSubscription};
use super::store::{ClientId, Op, Qos2Direction};
use crate::config::PersistenceSettings;
use crate::gate::saved_session::{Subscription, SubscriptionKind};

/// One persistent session.
#[derive(Debug, Default)]
struct Tracked {
    session: Option<StoredSession>,
    live: bool,
    /// The router queues for this session too (its client attached since the start).
    router_holds: bool,
    /// Queued messages in the store: sequence → payload bytes.
    queued: BTreeMap<u64, u64>,
    bytes: u64,
    /// Messages the router does not hold, to hand it when the client comes back.
    replay: BTreeMap<u64, StoredMessage>,
}

#[derive(Debug, Default)]
struct Index {
    sessions: HashMap<ClientId, Tracked>,
    filters: FilterIndex,
    next_sequence: u64,
    /// The sessions a publish concerns (`FilterIndex::candidates`), kept between publishes so
    /// that finding them allocates nothing.
    candidates: Vec<ClientId>,
    /// Where queued copies are encoded: each message once into `scratch`, then copied to the end
    /// of `encoded`, whose slices the `Queue` changes carry (one allocation per `ENCODED_CHUNK`
    /// bytes rather than one per message; the chunk is freed when its last change is).
    scratch: Vec<u8>,
    encoded: bytes::BytesMut,
}

/// The size of the buffers queued copies are encoded into (a few hundred 100-byte messages).
const ENCODED_CHUNK: usize = 64 << 10;

/// Which persistent sessions hold which filters, so that a publish looks at the sessions whose
/// filters may match it rather than at every session: a filter without wildcards by its topic
/// (a device's own command topic: one lookup), wildcard filters by filter (each distinct one
/// matched once per publish). Shared subscriptions are not queued (a group's message goes to one
/// member, which the store cannot know in advance).
#[derive(Debug, Default)]
struct FilterIndex {
    exact: HashMap<String, HashSet<ClientId>>,
    patterns: HashMap<String, HashSet<ClientId>>,
}

impl FilterIndex {
    fn queueable(filter: &StoredSubscription) -> bool {
        !crate::routing::shared_filter::is_shared(&filter.filter)
            && crate::gate::subscriptions::kind_of(&filter.filter) == SubscriptionKind::Routed
    }

    fn map(&mut self, filter: &str) -> &mut HashMap<String, HashSet<ClientId>> {
        if filter.contains(['+', '#']) { &mut self.patterns } else { &mut self.exact }
    }

    fn add(&mut self, client_id: &ClientId, session: &StoredSession) {
        for s in session.subscriptions.iter().filter(|s| Self::queueable(s)) {
            self.map(&s.filter).entry(s.filter.clone()).or_default().insert(client_id.clone());
        }
    }

    fn remove(&mut self, client_id: &str, session: &StoredSession) {
        for s in session.subscriptions.iter().filter(|s| Self::queueable(s)) {
            let map = self.map(&s.filter);
            if let Some(clients) = map.get_mut(&s.filter) {
                clients.remove(client_id);
                if clients.is_empty() {
                    map.remove(&s.filter);
                }
            }
        }
    }

    /// The sessions with a filter that matches `topic`, each once, into `found` (emptied first).
    fn candidates(&self, topic: &str, found: &mut Vec<ClientId>) {
        found.clear();
        if let Some(clients) = self.exact.get(topic) {
            found.extend(clients.iter().cloned());
        }
        let mut sources = usize::from(!found.is_empty());
        for (filter, clients) in &self.patterns {
            if crate::gate::subscriptions::matches_mqtt(filter, topic.as_bytes()) {
                found.extend(clients.iter().cloned());
                sources += 1;
            }
        }
        // One set holds each client once; only several sets can repeat one.
        if sources > 1 {
            found.sort_unstable();
            found.dedup();
        }
    }
}

impl Index {
    /// Sets a session's record, keeping the filter index in step.
    fn set_session(&mut self, client_id: &str, session: StoredSession) -> &mut Tracked {
        let id = match self.sessions.get_key_value(client_id) {
            Some((id, _)) => id.clone(),
            None => ClientId::from(client_id),
        };
        let tracked = self.sessions.entry(id.clone()).or_default();
        if let Some(old) = tracked.session.take() {
            self.filters.remove(client_id, &old);
        }
        self.filters.add(&id, &session);
        tracked.session = Some(session);
        tracked
    }

    fn remove_session(&mut self, client_id: &str) -> bool {
        let Some(tracked) = self.sessions.remove(client_id) else { return false };
        if let Some(session) = &tracked.session {
            self.filters.remove(client_id, session);
        }
        true
    }
}

/// A session loaded from the file, for the gate's registry.
pub struct RestoredSession {
    pub client_id: String,
    pub session: StoredSession,
    /// How long it still lives (`None`: until its client comes back).
    pub expires_in: Option<Duration>,
    /// Packet ids of the client's QoS 2 messages still waiting for their PUBREL.
    pub inbound_qos2: Vec<u16>,
    /// Packet ids the broker still owes the client a PUBREL for.
    pub pubrels_due: Vec<u16>,
}

/// What [`SessionIndex::restore`] gives the gate.
#[derive(Default)]
pub struct Restored {
    pub sessions: Vec<RestoredSession>,
    /// Wills waiting for their delay (also those of sessions that ended meanwhile: a session's
    /// end publishes its will).
    pub wills: Vec<(String, records::StoredWill)>,
}

/// See the module documentation.
pub struct SessionIndex {
    index: Mutex<Index>,
    max_messages: usize,
    max_bytes: u64,
    queue_qos0: bool,
    default_expiry: Option<Duration>,
}

impl SessionIndex {
    pub fn new(settings: &PersistenceSettings) -> Self {
        SessionIndex {
            index: Mutex::default(),
            max_messages: settings.max_queued_messages,
            max_bytes: settings.max_queued_bytes,
            queue_qos0: settings.queue_qos0_messages,
            default_expiry: settings.persistent_client_expiration,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the loaded sessions and queues; sessions that expired while the broker was down are
    /// ended (their ops are returned). A session whose client was connected when the broker
    /// stopped counts as offline from now.
    pub fn restore(
        &self,
        sessions: Vec<(String, StoredSession)>,
        queued: Vec<(String, u64, StoredMessage)>,
        qos2: Vec<(String, Qos2Direction, u16)>,
        now_unix_ms: u64,
    ) -> (Restored, Vec<Op>) {
        let mut index = self.lock();
        let mut ops = Vec::new();
        let mut restored = Restored::default();
        for (client_id, mut session) in sessions {
            let offline_since = *session.offline_since_unix_ms.get_or_insert(now_unix_ms);
            let lifetime = session.expiry.map(|secs| Duration::from_secs(secs.into())).or(self.default_expiry);
            let expires_in = match lifetime {
                None => None,
                Some(lifetime) => {
                    let gone = Duration::from_millis(now_unix_ms.saturating_sub(offline_since));
                    match lifetime.checked_sub(gone) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => {
                            ops.push(Op::EndSession { client_id: client_id.into() });
                            continue;
                        }
                    }
                }
            };
            index.set_session(&client_id, session.clone());
            restored.sessions.push(RestoredSession {
                client_id,
                session,
                expires_in,
                inbound_qos2: Vec::new(),
                pubrels_due: Vec::new(),
            });
        }
        let at: HashMap<String, usize> =
            restored.sessions.iter().enumerate().map(|(i, s)| (s.client_id.clone(), i)).collect();
        for (client_id, direction, pkid) in qos2 {
            match at.get(&client_id).map(|&i| &mut restored.sessions[i]) {
                Some(session) if direction == Qos2Direction::Inbound => session.inbound_qos2.push(pkid),
                Some(session) => session.pubrels_due.push(pkid),
                None => ops.push(Op::Qos2 { client_id: client_id.into(), direction, pkid, held: false }),
            }
        }
        for (client_id, sequence, message) in queued {
            index.next_sequence = index.next_sequence.max(sequence);
            match index.sessions.get_mut(client_id.as_str()) {
                Some(tracked) => {
                    tracked.bytes += message.payload.len() as u64;
                    tracked.queued.insert(sequence, message.payload.len() as u64);
                    tracked.replay.insert(sequence, message);
                }
                // (A queue whose session ended, or expired just now.)
                None => ops.push(Op::Dequeue { client_id: client_id.into(), sequence }),
            }
        }
        (restored, ops)
    }

    /// A client connected. A clean start ends a stored session; a persistent one is recorded as
    /// connected. Returns the queued messages the router does not hold (to hand it now).
    pub fn connected(
        &self,
        ops: &mut Vec<Op>,
        client_id: &str,
        persistent: bool,
        session: impl FnOnce() -> StoredSession,
    ) -> Vec<(u64, StoredMessage)> {
        let mut index = self.lock();
        if !persistent {
            if index.remove_session(client_id) {
                ops.push(Op::EndSession { client_id: client_id.into() });
            }
            return Vec::new();
        }
        let session = session();
        let id = ClientId::from(client_id);
        ops.push(Op::Session { client_id: id.clone(), session: records::encode(&session) });
        // Its client is back: a will waiting for its delay is not published (gate::session).
        ops.push(Op::Unwill { client_id: id });
        let tracked = index.set_session(client_id, session);
        tracked.live = true;
        tracked.router_holds = true;
        std::mem::take(&mut tracked.replay).into_iter().collect()
    }

    /// A persistent session's subscriptions changed, or its client left (`offline`): the new
    /// record.
    pub fn update(&self, ops: &mut Vec<Op>, client_id: &str, session: StoredSession) {
        let mut index = self.lock();
        let live = session.offline_since_unix_ms.is_none();
        ops.push(Op::Session { client_id: client_id.into(), session: records::encode(&session) });
        index.set_session(client_id, session).live = live;
    }

    /// The session ended (clean disconnect of a session that does not outlive its connection,
    /// expiry): forgotten with its queue.
    pub fn ended(&self, ops: &mut Vec<Op>, client_id: &str) {
        if self.lock().remove_session(client_id) {
            ops.push(Op::EndSession { client_id: client_id.into() });
        }
    }

    /// A routed PUBLISH: queued for every persistent session whose subscriptions match it
    /// (within the queue bounds). Returns the sequence number the message's envelope carries,
    /// if it was queued for anyone.
    #[allow(clippy::too_many_arguments)] // the parts of one message
    pub fn offer(
        &self,
        ops: &mut Vec<Op>,
        topic: &str,
        payload: &[u8],
        qos: u8,
        publisher: &str,
        expiry_secs: Option<u32>,
        properties: Option<&rumqttd::protocol::PublishProperties>,
    ) -> Option<u64> {
        let mut guard = self.lock();
        let index = &mut *guard;
        if index.sessions.is_empty() {
            return None;
        }
        index.filters.candidates(topic, &mut index.candidates);
        if index.candidates.is_empty() {
            return None;
        }
        let sequence = index.next_sequence + 1;
        let expires_at_unix_ms = expiry_secs.map(|secs| records::unix_ms() + u64::from(secs) * 1000);
        let parts = records::MessageParts::of(topic, payload, qos, publisher, expires_at_unix_ms, properties);
        let first = ops.len();
        for client_id in index.candidates.drain(..) {
            let Some(tracked) = index.sessions.get_mut(&*client_id) else { continue };
            let Some(session) = tracked.session.as_ref() else { continue };
            let Some(granted) = best_match(session, topic, &client_id, publisher) else { continue };
            if qos.min(granted) == 0 && !self.queue_qos0 {
                continue;
            }
            let size = payload.len() as u64;
            if (self.max_messages > 0 && tracked.queued.len() >= self.max_messages)
                || (self.max_bytes > 0 && tracked.bytes + size > self.max_bytes)
            {
                continue; // mosquitto drops what exceeds an offline client's queue, too
            }
            tracked.queued.insert(sequence, size);
            tracked.bytes += size;
            if !tracked.router_holds {
                tracked.replay.insert(sequence, parts.to_stored());
            }
            ops.push(Op::Queue { client_id, sequence, message: bytes::Bytes::new() });
        }
        if ops.len() == first {
            return None;
        }
        index.next_sequence = sequence;
        // Encoded once, straight from the message's parts; every copy shares the bytes.
        parts.encode_into(&mut index.scratch);
        if index.encoded.capacity() < index.scratch.len() {
            index.encoded = bytes::BytesMut::with_capacity(ENCODED_CHUNK.max(index.scratch.len()));
        }
        index.encoded.extend_from_slice(&index.scratch);
        let bytes = index.encoded.split().freeze();
        for op in &mut ops[first..] {
            if let Op::Queue { message, .. } = op {
                *message = bytes.clone();
            }
        }
        Some(sequence)
    }

    /// A message queued under `sequence` reached `client_id` (acknowledged, delivered at QoS 0,
    /// or dropped by the gate): its stored copy goes.
    pub fn delivered(&self, ops: &mut Vec<Op>, client_id: &ClientId, sequence: u64) {
        self.delivered_all(ops, client_id, [sequence]);
    }

    /// [`SessionIndex::delivered`] for several of one session's messages (one lock, one lookup:
    /// a connection gathers its client's acknowledgements of a read).
    pub fn delivered_all(&self, ops: &mut Vec<Op>, client_id: &ClientId, sequences: impl IntoIterator<Item = u64>) {
        let mut index = self.lock();
        let Some(tracked) = index.sessions.get_mut(&**client_id) else { return };
        for sequence in sequences {
            if let Some(size) = tracked.queued.remove(&sequence) {
                tracked.bytes -= size;
                ops.push(Op::Dequeue { client_id: client_id.clone(), sequence });
            }
        }
    }

    /// The session is moving to another node (`cluster::session_moves`) and the router no
    /// longer holds it: what is queued for it from now on is kept for a hand-back, and the queued
    /// messages the router never held (restored from the file) are returned, by sequence.
    pub fn handing_over(&self, client_id: &str) -> Vec<(u64, StoredMessage)> {
        let mut index = self.lock();
        let Some(tracked) = index.sessions.get_mut(client_id) else { return Vec::new() };
        tracked.router_holds = false;
        std::mem::take(&mut tracked.replay).into_iter().collect()
    }

    /// The move was not confirmed: the session stays, and `messages` (still queued here) are
    /// handed to the router when its client comes back, with what was queued meanwhile.
    pub fn handed_back(&self, client_id: &str, messages: Vec<(u64, StoredMessage)>) {
        let mut index = self.lock();
        let Some(tracked) = index.sessions.get_mut(client_id) else { return };
        for (sequence, message) in messages {
            if tracked.queued.contains_key(&sequence) {
                tracked.replay.insert(sequence, message);
            }
        }
    }

    /// Messages moved here with `client_id`'s session from another node, queued in the store
    /// (within the bounds) under new sequences, oldest first; returned with them, to hand the
    /// router. The session was recorded as connected just before ([`SessionIndex::connected`]).
    pub fn adopt(&self, ops: &mut Vec<Op>, client_id: &str, messages: Vec<StoredMessage>) -> Vec<(u64, StoredMessage)> {
        let mut index = self.lock();
        let mut next = index.next_sequence;
        let Some(tracked) = index.sessions.get_mut(client_id) else { return Vec::new() };
        let mut adopted = Vec::with_capacity(messages.len());
        for message in messages {
            let size = message.payload.len() as u64;
            if (self.max_messages > 0 && tracked.queued.len() >= self.max_messages)
                || (self.max_bytes > 0 && tracked.bytes + size > self.max_bytes)
            {
                continue; // (the sender already kept to this node's bounds: see `session_moves`)
            }
            next += 1;
            tracked.queued.insert(next, size);
            tracked.bytes += size;
            ops.push(Op::Queue {
                client_id: client_id.into(),
                sequence: next,
                message: records::encode(&message).into(),
            });
            adopted.push((next, message));
        }
        index.next_sequence = next;
        adopted
    }

    /// Persistent sessions known (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The highest QoS among the session's routed subscriptions that match `topic` (No Local ones
/// skip the session's own messages), or `None`.
fn best_match(session: &StoredSession, topic: &str, client_id: &str, publisher: &str) -> Option<u8> {
    session
        .subscriptions
        .iter()
        .filter(|s| !(s.no_local && client_id == publisher))
        .filter(|s| FilterIndex::queueable(s))
        .filter(|s| crate::gate::subscriptions::matches_mqtt(&s.filter, topic.as_bytes()))
        .map(|s| s.qos)
        .max()
}

/// The stored form of a session's subscriptions.
pub fn stored_subscriptions<'a>(subscriptions: impl Iterator<Item = &'a Subscription>) -> Vec<StoredSubscription> {
    subscriptions
        .map(|s| StoredSubscription {
            filter: s.filter.path.clone(),
            qos: s.filter.qos as u8,
            no_local: s.filter.nolocal,
            retain_as_published: s.filter.preserve_retain,
            retain_handling: match s.filter.retain_forward_rule {
                RetainForwardRule::OnEverySubscribe => 0,
                RetainForwardRule::OnNewSubscribe => 1,
                RetainForwardRule::Never => 2,
            },
            id: s.id,
        })
        .collect()
}

/// A stored session as the gate's registry keeps it (the router does not hold it yet).
pub fn saved_session(restored: RestoredSession) -> crate::gate::saved_session::SavedSession {
    let stored = restored.session;
    crate::gate::saved_session::SavedSession {
        owner: stored.owner.map(std::sync::Arc::from),
        subscriptions: stored.subscriptions.iter().map(subscription).collect(),
        inbound_qos2: restored.inbound_qos2.into_iter().collect(),
        // The router does not hold the session: only the PUBRELs owed to the client remain.
        outbound_qos2: crate::routing::ack_sequencer::Unfinished::owed_to_client(restored.pubrels_due),
        routed: false,
        moved: None,
    }
}

/// A stored subscription as the gate keeps it.
pub fn subscription(stored: &StoredSubscription) -> Subscription {
    let filter = Filter {
        path: stored.filter.clone(),
        qos: match stored.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        },
        nolocal: stored.no_local,
        preserve_retain: stored.retain_as_published,
        retain_forward_rule: match stored.retain_handling {
            0 => RetainForwardRule::OnEverySubscribe,
            1 => RetainForwardRule::OnNewSubscribe,
            _ => RetainForwardRule::Never,
        },
    };
    let shared = crate::routing::shared_filter::is_shared(&stored.filter);
    Subscription {
        kind: crate::gate::subscriptions::kind_of(&stored.filter),
        filter,
        id: stored.id,
        count: crate::metrics::SubscriptionCount::new(shared),
        share: crate::cluster::shared_groups::ShareMembership::join(&stored.filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(filters: &[(&str, u8)]) -> StoredSession {
        StoredSession {
            owner: None,
            subscriptions: filters
                .iter()
                .map(|(filter, qos)| StoredSubscription {
                    filter: (*filter).into(),
                    qos: *qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    id: None,
                })
                .collect(),
            expiry: None,
            offline_since_unix_ms: Some(1),
        }
    }

    fn index(max_messages: usize) -> SessionIndex {
        let settings = PersistenceSettings { max_queued_messages: max_messages, ..PersistenceSettings::default() };
        SessionIndex::new(&settings)
    }

    #[test]
    fn only_sessions_with_a_matching_subscription_queue() {
        let sessions = index(0);
        let mut ops = Vec::new();
        sessions.update(&mut ops, "off", session(&[("a/#", 1)]));
        sessions.update(&mut ops, "other", session(&[("b/#", 1)]));
        let mut live = session(&[("a/#", 1)]);
        live.offline_since_unix_ms = None;
        sessions.update(&mut ops, "on", live);
        ops.clear();
        let sequence = sessions.offer(&mut ops, "a/x", b"m", 1, "pub", None, None);
        assert_eq!(sequence, Some(1));
        let mut queued: Vec<&str> = ops
            .iter()
            .map(|op| match op {
                Op::Queue { client_id, sequence: 1, .. } => &**client_id,
                other => panic!("{other:?}"),
            })
            .collect();
        queued.sort();
        assert_eq!(queued, ["off", "on"]);
        assert_eq!(sessions.offer(&mut Vec::new(), "a/x", b"m", 0, "pub", None, None), None, "QoS 0 not queued");
        ops.clear();
        sessions.delivered(&mut ops, &"off".into(), 1);
        sessions.delivered(&mut ops, &"off".into(), 1);
        assert_eq!(ops.len(), 1, "one dequeue");
    }

    #[test]
    fn publishes_find_sessions_through_their_filters_and_changes_are_followed() {
        let sessions = index(0);
        let mut ops = Vec::new();
        sessions.update(&mut ops, "exact", session(&[("dev/1/cmd", 1)]));
        sessions.update(&mut ops, "wild", session(&[("dev/+/cmd", 1)]));
        sessions.update(&mut ops, "shared", session(&[("$share/g/dev/#", 1)]));
        let queued_for = |topic: &str| {
            let mut ops = Vec::new();
            sessions.offer(&mut ops, topic, b"m", 1, "p", None, None);
            let mut ids: Vec<String> = ops
                .into_iter()
                .filter_map(|op| match op {
                    Op::Queue { client_id, .. } => Some(client_id.to_string()),
                    _ => None,
                })
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(queued_for("dev/1/cmd"), ["exact", "wild"], "shared subscriptions are not queued");
        // A session matched by several of its filters gets one copy.
        sessions.update(&mut ops, "both", session(&[("dev/3/cmd", 1), ("dev/+/cmd", 1), ("dev/#", 0)]));
        assert_eq!(queued_for("dev/3/cmd"), ["both", "wild"]);
        sessions.ended(&mut ops, "both");
        assert_eq!(queued_for("dev/2/cmd"), ["wild"]);
        sessions.update(&mut ops, "exact", session(&[("dev/2/cmd", 1)]));
        assert_eq!(queued_for("dev/1/cmd"), ["wild"], "the old filter is gone");
        assert_eq!(queued_for("dev/2/cmd"), ["exact", "wild"]);
        sessions.ended(&mut ops, "wild");
        assert_eq!(queued_for("dev/2/cmd"), ["exact"]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let sessions = index(2);
        let mut ops = Vec::new();
        sessions.update(&mut ops, "off", session(&[("a", 2)]));
        let queued: Vec<_> = (0..3).map(|_| sessions.offer(&mut ops, "a", b"m", 2, "p", None, None)).collect();
        assert_eq!(queued, [Some(1), Some(2), None]);
    }

    #[test]
    fn a_moving_session_gives_its_store_queue_takes_it_back_unconfirmed_and_adopts_a_moved_one() {
        let sessions = index(3);
        let message = |topic: &str| super::super::stored_message(topic, b"m", 1, "p", None, None);
        let (_, ops) = sessions.restore(
            vec![("away".into(), session(&[("a/#", 1)]))],
            vec![("away".into(), 4, message("a/1")), ("away".into(), 5, message("a/2"))],
            Vec::new(),
            1,
        );
        assert!(ops.is_empty());
        let taken = sessions.handing_over("away");
        assert_eq!(taken.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [4, 5]);
        // Queued meanwhile (the router no longer holds the session): kept for a hand-back.
        assert_eq!(sessions.offer(&mut Vec::new(), "a/3", b"m", 1, "p", None, None), Some(6));
        sessions.handed_back("away", taken);
        let replay = sessions.connected(&mut Vec::new(), "away", true, || session(&[("a/#", 1)]));
        assert_eq!(replay.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [4, 5, 6]);
        // Moved in on another node: queued under new sequences, within the bounds (3).
        let mut ops = Vec::new();
        sessions.connected(&mut ops, "here", true, || session(&[("a/#", 1)]));
        ops.clear();
        let adopted = sessions.adopt(&mut ops, "here", (1..=4).map(|n| message(&format!("a/{n}"))).collect());
        assert_eq!(
            adopted.iter().map(|(seq, m)| (*seq, m.topic.as_str())).collect::<Vec<_>>(),
            [(7, "a/1"), (8, "a/2"), (9, "a/3")]
        );
        assert!(ops.iter().all(|op| matches!(op, Op::Queue { client_id, .. } if client_id == "here")));
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn expired_sessions_are_ended_at_restore_and_their_queues_dropped() {
        let sessions = index(0);
        let mut expiring = session(&[("a", 1)]);
        expiring.expiry = Some(10);
        let kept = session(&[("a", 1)]);
        let message = super::super::stored_message("a", b"m", 1, "p", None, None);
        let (restored, ops) = sessions.restore(
            vec![("old".into(), expiring), ("kept".into(), kept)],
            vec![("old".into(), 4, message.clone()), ("kept".into(), 5, message)],
            vec![("old".into(), Qos2Direction::Inbound, 3), ("kept".into(), Qos2Direction::PubrelDue, 9)],
            20_000,
        );
        assert_eq!(restored.sessions.len(), 1);
        assert_eq!(restored.sessions[0].pubrels_due, [9]);
        assert!(matches!(&ops[0], Op::EndSession { client_id } if client_id == "old"));
        assert!(matches!(&ops[1], Op::Qos2 { client_id, pkid: 3, held: false, .. } if client_id == "old"));
        assert!(matches!(&ops[2], Op::Dequeue { client_id, sequence: 4 } if client_id == "old"));
        let replay = sessions.connected(&mut Vec::new(), "kept", true, || session(&[("a", 1)]));
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].0, 5);
        assert_eq!(sessions.offer(&mut Vec::new(), "b", b"m", 1, "p", None, None), None, "no subscription");
    }
}
