//! Persistence (`persistence true`): retained messages, persistent sessions and the messages
//! queued for their offline clients, kept in a redb file so that they survive a restart and a
//! crash. rumqttd stays the router and keeps its own state in memory; this module keeps the
//! durable copy beside it and gives it back to the router at start. docs/persistence.md says
//! what is kept, when it is durable, and the bounds.
//!
//! - `store`: the file (tables, format check, one transaction per group of changes);
//! - `wal`: the write-ahead log beside it (durable mode syncs this, not redb, per group; autosave
//!   mode writes it per group and syncs it now and then);
//! - `writer`: the writer thread (group commit: one log sync for the changes of many
//!   connections; folding them into redb in the background, checkpoints, replay at start);
//! - `autosave`: when autosave mode syncs (`autosave_interval`, `autosave_on_changes`);
//! - `fold`: the changes logged and not yet folded (a copy queued and removed in between cancels);
//! - `number_hash`: a cheap hasher for maps keyed by numbers the broker counts up;
//! - `records`: what a record holds;
//! - `sessions`: which persistent sessions exist, their subscriptions, and the queue of each
//!   (what a publish must queue, what an acknowledgement removes).
//!
//! The gate calls in at four places: a PUBLISH (a retained message, or a message for a
//! persistent session), a SUBSCRIBE/UNSUBSCRIBE and a connect or disconnect of a persistent
//! session, a delivery acknowledged by a persistent session's client, and the start (restore).
//! The changes of one read of a connection are committed together before its acknowledgements
//! are written (durable mode).

mod autosave;
pub mod connection;
mod fold;
mod number_hash;
pub mod records;
pub mod sessions;
pub mod store;
pub mod wal;
mod writer;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumqttd::protocol::PublishProperties;
use tracing::{info, warn};

use crate::config::PersistenceSettings;
use crate::routing::envelope::{self, Publisher, Stamp};
use crate::routing::router_link::{Routed, RoutingEngine};
use records::{StoredMessage, StoredProperties, unix_ms};
pub use sessions::SessionIndex;
pub use store::{ClientId, Op, Qos2Direction, StoreError};
pub use writer::Saved;

/// The envelope origins of restored retained messages and of replayed queued messages
/// (connection ids count up from 1 and never get here).
const RESTORED_ORIGIN: u64 = u64::MAX - 1;
const REPLAY_ORIGIN: u64 = u64::MAX - 2;
/// The envelope origin of wills restored from the store.
const RESTORED_WILL_ORIGIN: u64 = u64::MAX - 3;
/// The envelope origin of messages moved from another node to a node without persistence.
const MOVED_ORIGIN: u64 = u64::MAX - 4;

/// The open store and what it loaded. See the module documentation.
pub struct Persistence {
    settings: PersistenceSettings,
    writer: writer::Writer,
    /// What the file held at start, until the restore takes it.
    loaded: Mutex<Option<store::Loaded>>,
    /// The persistent sessions and their queues.
    pub sessions: SessionIndex,
}

impl Persistence {
    /// Opens the store when `persistence` is on (`None` when it is off).
    pub fn open(settings: &PersistenceSettings) -> Result<Option<Arc<Persistence>>, StoreError> {
        if !settings.enabled {
            return Ok(None);
        }
        let path = settings.path();
        let store = store::Store::open(&path)?;
        // The log's records redb does not hold yet go in first, so that what is read below is
        // everything that was durable when the broker stopped.
        let (wal, sequence) = writer::recover(&store)?;
        let loaded = store.load()?;
        info!(
            file = %path.display(),
            retained = loaded.retained.len(),
            sessions = loaded.sessions.len(),
            queued = loaded.queued.len(),
            mode = ?settings.mode,
            "persistence: store opened"
        );
        let writer = writer::Writer::start(store, wal, sequence, settings)
            .map_err(|e| StoreError::Io { path: path.clone(), reason: e.to_string() })?;
        Ok(Some(Arc::new(Persistence {
            sessions: SessionIndex::new(settings),
            settings: settings.clone(),
            writer,
            loaded: Mutex::new(Some(loaded)),
        })))
    }

    pub fn settings(&self) -> &PersistenceSettings {
        &self.settings
    }

    fn take_loaded(&self) -> store::Loaded {
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take().unwrap_or_default()
    }

    /// Returns the persistent sessions and their queues for the gate's registry, and the loaded
    /// retained messages, sealed with the expiry they have left, for the gate's retained index
    /// (`routing::retained_index`; the router never holds one); those that expired while the
    /// broker was down are deleted (docs/persistence.md, "Retained messages after a restart").
    pub fn restore(&self) -> (sessions::Restored, Vec<Routed>) {
        let loaded = self.take_loaded();
        let mut retained = Vec::with_capacity(loaded.retained.len());
        let now = unix_ms();
        let mut expired = Vec::new();
        let mut restored = 0usize;
        for (index, message) in loaded.retained.into_iter().enumerate() {
            let Some(expires_at_ms) = expires_at(message.expires_at_unix_ms, now) else {
                expired.push(Op::Unretain { topic: message.topic });
                continue;
            };
            let stamp = Stamp {
                qos: message.qos,
                retain: true,
                publisher: Publisher::of(&message.publisher),
                origin: RESTORED_ORIGIN,
                sequence: index as u64 + 1,
                expires_at_ms,
                queued: None,
                addressee: None,
                share_group: None,
            };
            crate::metrics::METRICS.routed(message.topic.as_bytes(), message.payload.len(), true);
            let topic = Bytes::from(message.topic.into_bytes());
            let properties = message.properties.to_properties();
            let envelope::Routable { topic, sealed, properties } =
                envelope::routable(topic, &message.payload, stamp, properties);
            retained.push(Routed::retained(topic, sealed, &properties));
            restored += 1;
        }
        if !expired.is_empty() {
            info!(count = expired.len(), "persistence: retained messages expired while the broker was down");
        }
        info!(count = restored, "persistence: retained messages restored");
        let (mut restored_sessions, ops) = self.sessions.restore(loaded.sessions, loaded.queued, loaded.qos2, now);
        restored_sessions.wills = loaded.wills;
        expired.extend(ops);
        self.writer.submit(expired);
        (restored_sessions, retained)
    }

    /// Records a retained PUBLISH (an empty payload clears the topic) into `ops`.
    #[allow(clippy::too_many_arguments)] // the parts of one message
    pub fn retained(
        &self,
        ops: &mut Vec<Op>,
        topic: &str,
        payload: &[u8],
        qos: u8,
        publisher: &str,
        expiry_secs: Option<u32>,
        properties: Option<&PublishProperties>,
    ) {
        if payload.is_empty() {
            ops.push(Op::Unretain { topic: topic.to_owned() });
            return;
        }
        let expires_at_unix_ms = expiry_secs.map(|secs| unix_ms() + u64::from(secs) * 1000);
        let message = records::MessageParts::of(topic, payload, qos, publisher, expires_at_unix_ms, properties);
        ops.push(Op::Retain { topic: topic.to_owned(), message: records::encode(&message) });
    }

    /// Hands the router the stored messages queued for `client_id` that the router does not
    /// hold (its session was restored from the file), addressed to that client alone: every
    /// other subscriber drops them (`envelope::Stamp::addressee`). The caller has already
    /// handed the router the client's subscriptions. Expired ones are removed instead.
    pub fn replay<E: RoutingEngine>(&self, engine: &E, client_id: &str, messages: Vec<(u64, StoredMessage)>) {
        let mut ops = Vec::new();
        let id = store::ClientId::from(client_id);
        for (sequence, message) in messages {
            if !route_addressed(engine, client_id, message, REPLAY_ORIGIN, sequence, Some(sequence)) {
                self.sessions.delivered(&mut ops, &id, sequence);
            }
        }
        self.writer.submit(ops);
    }

    /// Commits `ops`; resolves once they are durable (durable mode) or written to the log, not
    /// synced (autosave mode).
    pub fn commit(&self, ops: Vec<Op>) -> Saved {
        self.writer.commit(ops)
    }

    /// Hands `ops` to the writer without waiting.
    pub fn submit(&self, ops: Vec<Op>) {
        self.writer.submit(ops);
    }

    /// [`Persistence::submit`], leaving `ops` empty with its capacity (a connection's
    /// background changes, every read).
    pub fn submit_from(&self, ops: &mut Vec<Op>) {
        self.writer.submit_from(ops);
    }

    /// Saves and syncs what is pending, then stops the writer (shutdown).
    pub fn close(&self) {
        self.writer.stop();
        info!("persistence: store closed");
    }
}

/// Hands the router messages for `client_id` that no store holds (a session's queue moved from
/// another node to a node without persistence, `cluster::session_moves`), addressed to that
/// client alone, as [`Persistence::replay`] does with stored ones. Expired ones are skipped.
pub fn replay_unstored<E: RoutingEngine>(engine: &E, client_id: &str, messages: Vec<StoredMessage>) {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    for message in messages {
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        route_addressed(engine, client_id, message, MOVED_ORIGIN, sequence, None);
    }
}

/// Routes `message` to `client_id` alone, with the envelope identity (`origin`, `sequence`);
/// false when it has expired (not routed).
fn route_addressed<E: RoutingEngine>(
    engine: &E,
    client_id: &str,
    message: StoredMessage,
    origin: u64,
    sequence: u64,
    queued: Option<u64>,
) -> bool {
    let Some(expires_at_ms) = expires_at(message.expires_at_unix_ms, unix_ms()) else { return false };
    let stamp = Stamp {
        qos: message.qos,
        retain: false,
        publisher: Publisher::of(&message.publisher),
        origin,
        sequence,
        expires_at_ms,
        queued,
        addressee: Some(Publisher::of(client_id)),
        share_group: None,
    };
    let topic = Bytes::from(message.topic.into_bytes());
    let properties = message.properties.to_properties();
    engine.inject(envelope::routable(topic, &message.payload, stamp, properties));
    true
}

/// A restored will as the session registry publishes it, checked with `authz` then (the
/// authorization of its username on its listener now: ACLs changed while the broker was down
/// apply).
pub fn pending_will(
    client_id: &str,
    stored: records::StoredWill,
    authz: Arc<dyn crate::security::ClientAuthz>,
) -> crate::gate::saved_session::PendingWill {
    let mut properties = stored.message.properties.to_properties();
    if let Some(secs) = stored.expiry_secs {
        properties.get_or_insert_with(PublishProperties::default).message_expiry_interval = Some(secs);
    }
    crate::gate::saved_session::PendingWill {
        topic: stored.message.topic,
        payload: Bytes::from(stored.message.payload),
        qos: stored.message.qos,
        retain: stored.retain,
        publisher: Publisher::of(client_id),
        origin: RESTORED_WILL_ORIGIN,
        properties,
        authz,
    }
}

/// A message as the store keeps it.
pub fn stored_message(
    topic: &str,
    payload: &[u8],
    qos: u8,
    publisher: &str,
    expiry_secs: Option<u32>,
    properties: Option<&PublishProperties>,
) -> StoredMessage {
    StoredMessage {
        topic: topic.to_owned(),
        qos,
        payload: payload.to_vec(),
        publisher: publisher.to_owned(),
        expires_at_unix_ms: expiry_secs.map(|secs| unix_ms() + u64::from(secs) * 1000),
        properties: StoredProperties::of(properties),
    }
}

/// The gate-clock expiry of a stored message: `Some(None)` never expires, `None` has expired.
fn expires_at(expires_at_unix_ms: Option<u64>, now_unix_ms: u64) -> Option<Option<u64>> {
    match expires_at_unix_ms {
        None => Some(None),
        Some(at) if at <= now_unix_ms => None,
        Some(at) => Some(Some(envelope::now_ms() + (at - now_unix_ms))),
    }
}

/// Logs that a change could not be saved, once per failure.
pub fn log_failure(client_id: &str, reason: &str) {
    warn!(client_id = %crate::logging::client_text(client_id), %reason, "persistence: not saved; the client is disconnected without acknowledgement");
}
