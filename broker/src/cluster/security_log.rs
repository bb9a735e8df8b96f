//! Shared dynamic security: a JetStream stream is the replicated, ordered log of every change
//! (docs/cluster.md).
//!
//! A node that receives a control request hashes its passwords once, then, holding its log
//! position N: catches up to the end of the log, runs the request against its state at N without
//! keeping the result ([`Dynsec::propose`]), and appends the resulting entries with "expected last
//! sequence N" and a message id. JetStream refuses the append if another node appended first: the
//! node catches up and proposes again. The admin is answered only once JetStream acknowledged the
//! entry, and the node has applied it. Every node applies the log in order (woken by the log's
//! subject, checking once a second too) and kicks its own clients that an entry names. A stream
//! sequence is the `changeIndex` of the state it leads to.
//!
//! Snapshots: every `cluster_snapshot_every` entries, the node that appended the last one appends
//! its whole state (mosquitto's file format) on the snapshot subject and purges what precedes it,
//! so a (re)starting node reads at most one snapshot and that many entries. The first node of a
//! new cluster seeds the log with a snapshot of its file.
//!
//! Without JetStream (no quorum, NATS down), an append fails within the JetStream timeout and the
//! request is answered with an error for each changing command; logins and ACL checks go on from
//! the local state, which catches up when the log is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use dynsec::Dynsec;
use dynsec::commands::{Admin, Kicks};
use dynsec::engine::{ControlResult, Prepared};
use dynsec::json::{self, Json};
use futures_util::StreamExt;
use tokio::sync::{Mutex, mpsc};

use super::config::ClusterConfig;
use crate::security::KickTarget;

/// How often an append is re-sent (same message id) when JetStream did not answer.
const PUBLISH_ATTEMPTS: usize = 3;
/// How many times a request is proposed again after another node appended first.
const CONFLICT_ATTEMPTS: usize = 50;
/// How long JetStream may take to answer a request.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a node looks at the log when nothing woke it.
const POLL: Duration = Duration::from_secs(1);

/// Where this node is in the log.
struct Position {
    /// The last sequence applied (its `changeIndex`).
    applied: u64,
    /// The sequence of the last snapshot seen.
    last_snapshot: u64,
}

/// Why an append did not happen.
enum AppendError {
    /// Another entry was appended since our position: catch up and propose again.
    Conflict,
    /// JetStream did not take it (no quorum, NATS unreachable, …).
    Unavailable(String),
}

/// This node's end of the replicated security log.
pub struct SecurityLog {
    engine: Arc<Dynsec>,
    js: Context,
    stream: Stream,
    log_subject: String,
    snapshot_subject: String,
    node: String,
    snapshot_every: u64,
    position: Mutex<Position>,
    kicks: mpsc::UnboundedSender<KickTarget>,
    /// Message ids: node name, start time, counter (unique across restarts of the node).
    id_prefix: String,
    next_id: AtomicU64,
}

impl SecurityLog {
    /// Opens (or creates) the log, seeds it if it is new, brings `engine` to its end and keeps it
    /// there. Fails when JetStream cannot be reached.
    pub async fn open(
        client: &async_nats::Client,
        config: &ClusterConfig,
        engine: Arc<Dynsec>,
        kicks: mpsc::UnboundedSender<KickTarget>,
    ) -> Result<Arc<SecurityLog>, String> {
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(JETSTREAM_TIMEOUT);
        let subjects = format!("{}.security.>", config.name);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{}_security", config.name),
                subjects: vec![subjects.clone()],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("the JetStream stream of the security log: {e}"))?;
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let log = Arc::new(SecurityLog {
            engine,
            js,
            stream,
            log_subject: format!("{}.security.log", config.name),
            snapshot_subject: format!("{}.security.snapshot", config.name),
            node: config.node_name.clone(),
            snapshot_every: config.snapshot_every,
            position: Mutex::new(Position { applied: 0, last_snapshot: 0 }),
            kicks,
            id_prefix: format!("{}-{}", config.node_name, started.as_nanos()),
            next_id: AtomicU64::new(0),
        });
        log.start().await?;
        let wake = client.subscribe(subjects).await.map_err(|e| format!("subscribing to the security log: {e}"))?;
        tokio::spawn(follow(Arc::downgrade(&log), wake));
        Ok(log)
    }

    /// Seeds a new log with this node's configuration, then loads the latest snapshot and what
    /// follows it.
    async fn start(&self) -> Result<(), String> {
        let info = self.stream.get_info().await.map_err(|e| format!("reading the security log: {e}"))?;
        if info.state.last_sequence == 0 {
            let snapshot = Bytes::from(self.engine.export());
            match self.append(&self.snapshot_subject, snapshot, 0).await {
                Ok(_) => tracing::info!("cluster: security log started from this node's configuration"),
                Err(AppendError::Conflict) => {}
                Err(AppendError::Unavailable(e)) => return Err(format!("seeding the security log: {e}")),
            }
        }
        let mut position = self.position.lock().await;
        self.install_latest_snapshot(&mut position).await?;
        self.catch_up(&mut position).await?;
        tracing::info!(node = %self.node, change_index = position.applied, "cluster: security state loaded from the log");
        Ok(())
    }

    async fn install_latest_snapshot(&self, position: &mut Position) -> Result<(), String> {
        let message = self
            .stream
            .get_last_raw_message_by_subject(&self.snapshot_subject)
            .await
            .map_err(|e| format!("reading the latest security snapshot: {e}"))?;
        let engine = Arc::clone(&self.engine);
        let sequence = message.sequence;
        let kicks = tokio::task::spawn_blocking(move || engine.install_snapshot(&message.payload, sequence as i64))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the security snapshot at {sequence}: {e}"))?;
        position.applied = sequence;
        position.last_snapshot = sequence;
        self.kick(&kicks);
        Ok(())
    }

    /// Applies every entry after `position`, up to the end of the log.
    async fn catch_up(&self, position: &mut Position) -> Result<(), String> {
        loop {
            let next = position.applied + 1;
            match self.stream.get_raw_message(next).await {
                Ok(message) => {
                    let kicks = self.apply(position, message.sequence, &message.subject, message.payload).await?;
                    self.kick(&kicks);
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    let info = self.stream.get_info().await.map_err(|e| format!("reading the security log: {e}"))?;
                    if info.state.last_sequence < next {
                        return Ok(());
                    }
                    if info.state.first_sequence > next {
                        // Purged behind a snapshot while this node was away.
                        self.install_latest_snapshot(position).await?;
                    } else {
                        position.applied = next; // a hole inside the log: nothing to apply
                    }
                }
                Err(e) => return Err(format!("reading the security log at {next}: {e}")),
            }
        }
    }

    /// Applies the entry at `sequence`, which must follow `position`; returns whom it kicks.
    async fn apply(
        &self,
        position: &mut Position,
        sequence: u64,
        subject: &str,
        payload: Bytes,
    ) -> Result<Kicks, String> {
        let engine = Arc::clone(&self.engine);
        let (kicks, entries) = if subject == self.snapshot_subject {
            // Taken by a node at `sequence - 1`: the state this node has too.
            position.last_snapshot = sequence;
            (Kicks::default(), Bytes::from_static(b"[]"))
        } else {
            decode_entry(&payload).ok_or_else(|| format!("the security log entry {sequence} is damaged"))?
        };
        tokio::task::spawn_blocking(move || engine.apply_entries(&entries, sequence as i64))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the security log entry {sequence}: {e}"))?;
        position.applied = sequence;
        Ok(kicks)
    }

    fn kick(&self, kicks: &Kicks) {
        for target in KickTarget::all_of(kicks) {
            let _ = self.kicks.send(target);
        }
    }

    /// Runs one `$CONTROL/dynamic-security/v1` request through the log; resolves once its change
    /// is in JetStream and applied here (or refused).
    pub async fn control(self: Arc<Self>, payload: Vec<u8>, admin: Admin) -> ControlResult {
        let engine = Arc::clone(&self.engine);
        let prepared = match tokio::task::spawn_blocking(move || engine.prepare(&payload)).await {
            Ok(Ok(prepared)) => Arc::new(prepared),
            Ok(Err(response)) => return ControlResult { response, kicks: Kicks::default() },
            Err(e) => return failed(&e.to_string()),
        };
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut position = self.position.lock().await;
            if let Err(e) = self.catch_up(&mut position).await {
                return self
                    .refuse(prepared, admin, format!("Cluster error: the security log cannot be read ({e})"))
                    .await;
            }
            let engine = Arc::clone(&self.engine);
            let (trial, who) = (Arc::clone(&prepared), admin.clone());
            let proposal = match tokio::task::spawn_blocking(move || engine.propose(&trial, who)).await {
                Ok(proposal) => proposal,
                Err(e) => return failed(&e.to_string()),
            };
            let Some(entries) = proposal.entries else {
                return ControlResult { response: proposal.response, kicks: proposal.kicks };
            };
            let body = encode_entry(&proposal.kicks, &entries);
            match self.append(&self.log_subject, body.clone(), position.applied).await {
                Ok(sequence) => {
                    // Kicked by the caller after the reply, not through the kick channel.
                    if let Err(e) = self.apply(&mut position, sequence, &self.log_subject.clone(), body).await {
                        tracing::error!("cluster: {e}");
                    }
                    self.snapshot_if_due(&mut position).await;
                    return ControlResult { response: proposal.response, kicks: proposal.kicks };
                }
                Err(AppendError::Conflict) => continue,
                Err(AppendError::Unavailable(e)) => {
                    let message = format!(
                        "Cluster error: the change was not confirmed by JetStream ({e}); it is not applied on this node, and takes effect everywhere only if JetStream stored it"
                    );
                    return self.refuse(prepared, admin, message).await;
                }
            }
        }
        self.refuse(prepared, admin, "Cluster error: the security log is too busy, try again".to_owned()).await
    }

    async fn refuse(&self, prepared: Arc<Prepared>, admin: Admin, message: String) -> ControlResult {
        tracing::error!(node = %self.node, "{message}");
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || engine.refuse(&prepared, admin, message))
            .await
            .unwrap_or_else(|e| failed(&e.to_string()))
    }

    /// Appends `body` if the log ends at `expected_last`; the new entry's sequence.
    async fn append(&self, subject: &str, body: Bytes, expected_last: u64) -> Result<u64, AppendError> {
        let id = format!("{}-{}", self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut last_error = String::new();
        for _ in 0..PUBLISH_ATTEMPTS {
            let message =
                PublishMessage::build().payload(body.clone()).message_id(&id).expected_last_sequence(expected_last);
            let sent = match self.js.send_publish(subject.to_owned(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Err(AppendError::Conflict),
                Err(e) if matches!(e.kind(), PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe) => {
                    last_error = e.to_string();
                }
                Err(e) => return Err(AppendError::Unavailable(e.to_string())),
            }
        }
        Err(AppendError::Unavailable(last_error))
    }

    /// Every `snapshot_every` entries: the whole state on the snapshot subject, then what came
    /// before it purged. A failure only means the log stays longer.
    async fn snapshot_if_due(&self, position: &mut Position) {
        if position.applied.saturating_sub(position.last_snapshot) < self.snapshot_every {
            return;
        }
        let engine = Arc::clone(&self.engine);
        let Ok(state) = tokio::task::spawn_blocking(move || engine.export()).await else { return };
        match self.append(&self.snapshot_subject, Bytes::from(state), position.applied).await {
            Ok(sequence) => {
                if let Err(e) = self.apply(position, sequence, &self.snapshot_subject.clone(), Bytes::new()).await {
                    tracing::warn!("cluster: {e}");
                }
                match self.stream.purge().sequence(sequence).await {
                    Ok(_) => tracing::info!("cluster: security snapshot at {sequence}; the log before it purged"),
                    Err(e) => tracing::warn!("cluster: the security log was not shortened: {e}"),
                }
            }
            Err(AppendError::Conflict) => {}
            Err(AppendError::Unavailable(e)) => tracing::warn!("cluster: no security snapshot taken: {e}"),
        }
    }
}

/// An answer for a request that could not run at all.
fn failed(reason: &str) -> ControlResult {
    tracing::error!("cluster: control request failed: {reason}");
    ControlResult { response: dynsec::commands::envelope_error("Internal error"), kicks: Kicks::default() }
}

/// A log entry: one line saying whom it kicks, then the engine's entries.
fn encode_entry(kicks: &Kicks, entries: &[u8]) -> Bytes {
    let users = Json::Array(kicks.users.iter().map(|u| Json::str(u)).collect());
    let head = Json::object().with("kick", users).with("kickAnonymous", Json::Bool(kicks.anonymous)).to_compact();
    let mut body = Vec::with_capacity(head.len() + 1 + entries.len());
    body.extend_from_slice(&head);
    body.push(b'\n');
    body.extend_from_slice(entries);
    Bytes::from(body)
}

fn decode_entry(body: &[u8]) -> Option<(Kicks, Bytes)> {
    let newline = body.iter().position(|&b| b == b'\n')?;
    let head = json::parse(&body[..newline]).ok()?;
    let mut kicks = Kicks::default();
    for user in head.get("kick")?.as_array()? {
        kicks.users.insert(String::from_utf8(user.as_bytes()?.to_vec()).ok()?);
    }
    kicks.anonymous = matches!(head.get("kickAnonymous"), Some(Json::Bool(true)));
    Some((kicks, Bytes::copy_from_slice(&body[newline + 1..])))
}

/// Keeps this node at the end of the log: woken by every message on the log's subjects, and
/// once a second in case a wake-up was missed (NATS reconnecting).
async fn follow(log: std::sync::Weak<SecurityLog>, mut wake: async_nats::Subscriber) {
    let mut failing = false;
    loop {
        if let Ok(None) = tokio::time::timeout(POLL, wake.next()).await {
            return; // the connection is closed for good
        }
        let Some(log) = log.upgrade() else { return };
        let mut position = log.position.lock().await;
        match log.catch_up(&mut position).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("cluster: the security log is readable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cluster: {e}; logins and ACL checks go on from the local state");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_their_kicks() {
        let mut kicks = Kicks::default();
        kicks.users.insert("a\nb".into());
        kicks.users.insert("é".into());
        kicks.anonymous = true;
        let body = encode_entry(&kicks, br#"[{"op":"deleteClient","username":"x"}]"#);
        let (decoded, entries) = decode_entry(&body).unwrap();
        assert_eq!(decoded, kicks);
        assert_eq!(&entries[..], br#"[{"op":"deleteClient","username":"x"}]"#);
        assert!(decode_entry(b"no newline").is_none());
    }
}
