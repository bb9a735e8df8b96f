//! The store's one writer thread, with group commit: every connection hands it the changes of
//! one read at a time; the thread takes all that is waiting and makes it durable with one sync
//! for the whole group, then answers each sender. No connection ever syncs on its own task, and
//! the cost of a sync is shared by everything that arrived while the previous one ran.
//!
//! Durable mode: a group is appended to the write-ahead log (`persistence/wal.rs`) and the log is
//! synced (`fdatasync`) before the senders are answered; the changes are then folded into redb
//! in the background in commits that are not synced (`persistence/fold.rs` cancels a queued copy
//! removed before its fold), and now and then a checkpoint — one synced redb commit recording the
//! last folded log sequence — lets the log be emptied. A crash loses nothing the log synced:
//! the next start replays the records redb does not hold (docs/persistence.md, "Write-ahead
//! log").
//!
//! Changes nobody waits for (removals of acknowledged copies, a session's record when its client
//! leaves, wills) are appended without a sync even in durable mode: the next waited-for group's
//! sync covers them too (the log is written in order), and so does the writer after a second
//! without one. Losing them in a crash costs at most a duplicate delivery or a session record a
//! moment old.
//!
//! Autosave mode goes through the same log, fold and checkpoints, but appends each group with a
//! plain write and answers the senders without a sync: the log is synced only when
//! `persistence/autosave.rs` says so (every `autosave_interval` seconds or changes), at a
//! checkpoint (only when the log has grown to `CHECKPOINT_BYTES`) and when the writer stops. A
//! kill -9 of the process loses nothing written (the page cache keeps it for the next start's
//! replay); an OS crash or power loss loses at most what came since the last sync.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::autosave::Autosave;
use super::fold::Pending;
use super::records;
use super::store::{Op, Store, StoreError};
use super::wal::{self, Wal};
use crate::config::{PersistenceMode, PersistenceSettings};

/// The most changes one group takes (a bound on the memory and time of one log record).
const MAX_GROUP: usize = 16_384;
/// How long changes nobody waited for stay unsynced in durable mode.
const BACKGROUND_SYNC: Duration = Duration::from_secs(1);
/// The writer folds the log's changes into redb once this many are waiting...
const FOLD_OPS: usize = 8_192;
/// ... or the oldest has waited this long.
const FOLD_AFTER: Duration = Duration::from_millis(100);
/// A checkpoint (synced redb commit, then the log emptied) once the log holds this many bytes...
const CHECKPOINT_BYTES: u64 = 32 << 20;
/// ... or this long after the last one, when something was folded since.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(2);
/// How long the writer sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);

type Reply = oneshot::Sender<Result<(), String>>;

/// A group of changes and who waits for it.
struct Job {
    ops: Vec<Op>,
    reply: Option<Reply>,
}

/// See the module documentation.
pub struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Applies the write-ahead log's records that the redb file does not hold (a crash came before
/// their checkpoint), makes them durable in redb and empties the log. Runs at start, before the
/// store is read. Returns the log and the sequence its next record follows.
pub fn recover(store: &Store) -> Result<(Wal, u64), StoreError> {
    let held = store.wal_sequence()?;
    let path = wal::path_for(store.path());
    let (mut wal, recovered) = Wal::open(&path, held)?;
    let damaged = |reason: String| StoreError::Damaged { path: path.clone(), reason };
    let mut last = held;
    for (sequence, payload) in &recovered.records {
        let ops: Vec<Op> = records::decode(payload).map_err(|e| {
            damaged(format!("the write-ahead log record with sequence {sequence} does not decode: {e}"))
        })?;
        store.fold(ops.iter(), *sequence).map_err(|e| damaged(format!("replaying sequence {sequence}: {e}")))?;
        last = *sequence;
    }
    if !recovered.records.is_empty() || recovered.torn_at.is_some() {
        info!(
            file = %path.display(),
            records = recovered.records.len(),
            torn_at = ?recovered.torn_at,
            "persistence: write-ahead log replayed"
        );
    }
    store.sync().map_err(|e| StoreError::Io { path: store.path().to_path_buf(), reason: e })?;
    let io = |e: std::io::Error| StoreError::Io { path: path.clone(), reason: e.to_string() };
    if !wal.is_empty() {
        wal.reset().map_err(io)?;
    }
    Ok((wal, last))
}

/// The writer thread's state between groups (both modes).
struct LogWriter {
    store: Store,
    wal: Wal,
    /// The sequence of the last record appended to the log.
    sequence: u64,
    /// Appended, not yet folded into redb.
    pending: Pending,
    /// When the oldest of `pending` came.
    pending_since: Option<Instant>,
    /// The last sequence redb holds (folded, maybe not synced yet) and holds durably.
    folded: u64,
    checkpointed: u64,
    last_checkpoint: Instant,
    unsynced_since: Option<Instant>,
    /// Autosave mode: when to sync (`None`: durable mode, a sync per waited-for group).
    autosave: Option<Autosave>,
}

impl LogWriter {
    fn new(store: Store, wal: Wal, sequence: u64, autosave: Option<Autosave>) -> LogWriter {
        LogWriter {
            store,
            wal,
            sequence,
            pending: Pending::default(),
            pending_since: None,
            folded: sequence,
            checkpointed: sequence,
            last_checkpoint: Instant::now(),
            unsynced_since: None,
            autosave,
        }
    }

    /// Appends one group's changes and, if anyone waits, syncs the log (durable mode; autosave
    /// mode only counts them). The changes are kept for
    /// the fold even when this fails (the senders get the error and the client sends again: at
    /// worst a duplicate, as after a crash).
    fn write(&mut self, ops: Vec<Op>, waited: bool) -> Result<(), String> {
        let mut result = Ok(());
        if !ops.is_empty() {
            let payload = records::encode(&ops);
            match self.wal.append(self.sequence + 1, &payload) {
                Ok(()) => {
                    self.sequence += 1;
                    self.unsynced_since.get_or_insert_with(Instant::now);
                }
                Err(e) => result = Err(e.to_string()),
            }
            self.pending_since.get_or_insert_with(Instant::now);
            if let Some(autosave) = &mut self.autosave {
                autosave.written(ops.len());
            }
            for op in ops {
                self.pending.push(op);
            }
        }
        if result.is_ok() && waited && self.autosave.is_none() {
            result = self.sync();
        }
        result
    }

    fn sync(&mut self) -> Result<(), String> {
        self.wal.sync().map_err(|e| e.to_string())?;
        self.unsynced_since = None;
        if let Some(autosave) = &mut self.autosave {
            autosave.synced();
        }
        Ok(())
    }

    /// When the thread must wake up with nothing received.
    fn next_due(&self) -> Option<Instant> {
        let fold = self.pending_since.map(|t| t + FOLD_AFTER);
        let (sync, checkpoint) = match &self.autosave {
            Some(autosave) => (autosave.due_at(), None),
            None => (
                self.unsynced_since.map(|t| t + BACKGROUND_SYNC),
                (self.checkpointed < self.sequence).then_some(self.last_checkpoint + CHECKPOINT_AFTER),
            ),
        };
        [fold, sync, checkpoint].into_iter().flatten().min()
    }

    /// What is due after a group (or a timeout): the background sync (durable mode) or the
    /// autosave, a fold, a checkpoint (autosave mode: only by size, its syncs are the autosave's).
    fn maintain(&mut self) {
        let now = Instant::now();
        let sync_due = match &self.autosave {
            Some(autosave) => autosave.due(),
            None => self.unsynced_since.is_some_and(|t| now >= t + BACKGROUND_SYNC),
        };
        if sync_due && let Err(reason) = self.sync() {
            error!(file = %self.wal.path().display(), %reason, "persistence: the write-ahead log could not be synced");
        }
        if self.pending.count() >= FOLD_OPS || self.pending_since.is_some_and(|t| now >= t + FOLD_AFTER) {
            self.fold();
        }
        if self.wal.len() >= CHECKPOINT_BYTES
            || (self.autosave.is_none()
                && self.checkpointed < self.sequence
                && now >= self.last_checkpoint + CHECKPOINT_AFTER)
        {
            self.checkpoint();
        }
    }

    /// Applies the pending changes to redb (not synced). On failure they stay pending, and the
    /// log keeps them (no checkpoint passes them).
    fn fold(&mut self) -> bool {
        if self.pending_since.is_none() {
            return true;
        }
        match self.store.fold(self.pending.iter(), self.sequence) {
            Ok(()) => {
                self.pending.clear();
                self.pending_since = None;
                self.folded = self.sequence;
                true
            }
            Err(reason) => {
                error!(file = %self.store.path().display(), %reason, "persistence: changes could not be folded into the store; the write-ahead log keeps them");
                false
            }
        }
    }

    /// Folds what is pending, makes redb durable, then empties the log (every record in it is
    /// now in redb's durable state).
    fn checkpoint(&mut self) {
        self.last_checkpoint = Instant::now();
        if !self.fold() {
            return;
        }
        if let Err(reason) = self.store.sync() {
            error!(file = %self.store.path().display(), %reason, "persistence: checkpoint failed; the write-ahead log keeps the changes");
            return;
        }
        self.checkpointed = self.folded;
        if self.checkpointed == self.sequence {
            match self.wal.reset() {
                // Everything written is in redb's durable state now.
                Ok(()) => {
                    if let Some(autosave) = &mut self.autosave {
                        autosave.synced();
                    }
                }
                Err(e) => {
                    error!(file = %self.wal.path().display(), reason = %e, "persistence: the write-ahead log could not be emptied")
                }
            }
        }
    }

    fn run(mut self, queue: Receiver<Job>) {
        loop {
            let wait = self.next_due().map_or(IDLE, |due| due.saturating_duration_since(Instant::now()));
            let mut group = match queue.recv_timeout(wait) {
                Ok(job) => vec![job],
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut count: usize = group.iter().map(|job| job.ops.len()).sum();
            while count < MAX_GROUP {
                let Ok(job) = queue.try_recv() else { break };
                count += job.ops.len();
                group.push(job);
            }
            let waited = group.iter().any(|job| job.reply.is_some());
            let ops: Vec<Op> = group.iter_mut().flat_map(|job| std::mem::take(&mut job.ops)).collect();
            let result = self.write(ops, waited);
            if let Err(reason) = &result {
                error!(file = %self.wal.path().display(), %reason, "persistence: changes could not be saved");
            }
            for job in group {
                if let Some(reply) = job.reply {
                    let _ = reply.send(result.clone());
                }
            }
            self.maintain();
        }
        // Shutdown: everything into redb, synced, and the log emptied; if that fails, at least
        // the log is synced for the next start's replay.
        self.checkpoint();
        if let Err(reason) = self.sync() {
            warn!(file = %self.wal.path().display(), %reason, "persistence: the last sync at shutdown failed");
        }
    }
}

impl Writer {
    /// Starts the writer on `store`; `wal` and `sequence` are what [`recover`] returned.
    pub fn start(store: Store, wal: Wal, sequence: u64, settings: &PersistenceSettings) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let settings = settings.clone();
        let thread = std::thread::Builder::new().name("persistence".into()).spawn(move || {
            let autosave = (settings.mode == PersistenceMode::Autosave)
                .then(|| Autosave::new(settings.autosave_interval, settings.autosave_on_changes));
            LogWriter::new(store, wal, sequence, autosave).run(queue);
        })?;
        Ok(Writer { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)) })
    }

    /// Hands `ops` to the writer; resolves once they are in the log (durable mode: synced).
    pub fn commit(&self, ops: Vec<Op>) -> impl Future<Output = Result<(), String>> + Send + use<> {
        let (reply, done) = oneshot::channel();
        let sent = self.send(Job { ops, reply: Some(reply) });
        async move {
            if !sent {
                return Err("the persistence writer has stopped".to_owned());
            }
            done.await.unwrap_or_else(|_| Err("the persistence writer has stopped".to_owned()))
        }
    }

    /// Hands `ops` to the writer without waiting (changes nothing acknowledged depends on).
    pub fn submit(&self, ops: Vec<Op>) {
        if !ops.is_empty() {
            self.send(Job { ops, reply: None });
        }
    }

    fn send(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// Stops the writer once everything handed to it is saved and synced.
    pub fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable(store: Store) -> LogWriter {
        let (wal, sequence) = recover(&store).unwrap();
        LogWriter::new(store, wal, sequence, None)
    }

    fn autosave(store: Store, interval: u64, on_changes: bool) -> LogWriter {
        let (wal, sequence) = recover(&store).unwrap();
        LogWriter::new(store, wal, sequence, Some(Autosave::new(interval, on_changes)))
    }

    fn message(topic: &str) -> Vec<u8> {
        records::encode(&crate::persistence::stored_message(topic, b"v", 1, "p", None, None))
    }

    fn state(store: &Store) -> (Vec<String>, Vec<(String, u64)>) {
        let loaded = store.load().unwrap();
        (
            loaded.retained.into_iter().map(|m| m.topic).collect(),
            loaded.queued.into_iter().map(|(c, s, _)| (c, s)).collect(),
        )
    }

    #[test]
    fn a_crash_after_a_checkpoint_replays_only_the_records_redb_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let mut writer = durable(Store::open(&path).unwrap());
        writer.write(vec![Op::Retain { topic: "a".into(), message: message("a") }], true).unwrap();
        writer.write(vec![Op::Queue { client_id: "c".into(), sequence: 1, message: message("q") }], true).unwrap();
        writer.checkpoint();
        assert!(writer.wal.is_empty(), "a checkpoint empties the log");
        assert_eq!(writer.store.wal_sequence().unwrap(), 2);
        writer.write(vec![Op::Retain { topic: "b".into(), message: message("b") }], true).unwrap();
        // A removal nobody waits for, then a waited-for group whose sync covers it.
        writer.write(vec![Op::Dequeue { client_id: "c".into(), sequence: 1 }], false).unwrap();
        writer.write(vec![Op::Queue { client_id: "c".into(), sequence: 2, message: message("q") }], true).unwrap();
        // The process dies before the fold: no fold, no checkpoint, no shutdown (a kill -9
        // after an unsynced fold is the crash harness's case: redb then reopens at its last
        // synced commit, which is this file's state here).
        let wal_path = writer.wal.path().to_path_buf();
        drop(writer);
        // And a write the crash cut short (nothing in it was acknowledged).
        let mut torn = std::fs::read(&wal_path).unwrap();
        let whole = torn.len();
        torn.extend_from_slice(b"DSW1\x40\x00\x00\x00\x06");
        std::fs::write(&wal_path, &torn).unwrap();
        assert!(whole > 0);

        let store = Store::open(&path).unwrap();
        let writer = durable(store);
        assert_eq!(writer.sequence, 5, "the next record follows the replayed ones");
        assert!(writer.wal.is_empty(), "replayed, checkpointed and emptied at start");
        assert_eq!(writer.store.wal_sequence().unwrap(), 5);
        assert_eq!(state(&writer.store), (vec!["a".into(), "b".into()], vec![("c".into(), 2)]));
    }

    #[test]
    fn a_copy_queued_and_removed_between_folds_never_reaches_redb_and_shutdown_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let (jobs, queue) = mpsc::channel();
        let writer = durable(Store::open(&path).unwrap());
        let thread = std::thread::spawn(move || writer.run(queue));
        for sequence in 1..=100u64 {
            let ops = vec![Op::Queue { client_id: "c".into(), sequence, message: message("q") }];
            jobs.send(Job { ops, reply: None }).unwrap();
            if sequence % 10 != 0 {
                jobs.send(Job { ops: vec![Op::Dequeue { client_id: "c".into(), sequence }], reply: None }).unwrap();
            }
        }
        drop(jobs);
        thread.join().unwrap();
        assert_eq!(std::fs::metadata(wal::path_for(&path)).unwrap().len(), 0, "emptied at shutdown");
        let store = Store::open(&path).unwrap();
        let (_, queued) = state(&store);
        assert_eq!(queued.iter().map(|(_, s)| *s).collect::<Vec<_>>(), (1..=10).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn autosave_answers_without_a_sync_and_a_kill_loses_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        // autosave_interval 0: synced only at shutdown.
        let mut writer = autosave(Store::open(&path).unwrap(), 0, false);
        writer.write(vec![Op::Retain { topic: "a".into(), message: message("a") }], true).unwrap();
        writer.write(vec![Op::Queue { client_id: "c".into(), sequence: 1, message: message("q") }], true).unwrap();
        writer.maintain();
        assert!(writer.wal.unsynced(), "waited-for groups are written, not synced");
        // The process dies (no fold, no checkpoint, no shutdown); the written log survives it.
        drop(writer);
        let writer = autosave(Store::open(&path).unwrap(), 0, false);
        assert_eq!(writer.sequence, 2);
        assert_eq!(state(&writer.store), (vec!["a".into()], vec![("c".into(), 1)]));

        // autosave_on_changes with an interval of 3: the third change syncs.
        let mut writer = autosave(writer.store, 3, true);
        writer.write(vec![Op::Dequeue { client_id: "c".into(), sequence: 1 }], true).unwrap();
        writer.write(vec![Op::Retain { topic: "b".into(), message: message("b") }], true).unwrap();
        writer.maintain();
        assert!(writer.wal.unsynced());
        writer.write(vec![Op::Retain { topic: "c".into(), message: message("c") }], false).unwrap();
        writer.maintain();
        assert!(!writer.wal.unsynced(), "synced after autosave_interval changes");
    }
}
