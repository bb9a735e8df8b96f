//! The write-ahead log's shared state and the store's one writer thread (group commit).
//!
//! Connections append to the log themselves: the changes of one read become one record, encoded
//! and written (`write()`) on the connection's task under the log's lock, so that no message
//! waits for a hand-off to another thread to be written. Changes nobody waits for (removals of
//! acknowledged copies, a session's record when its client leaves, wills) are not written on
//! their own: they wait in memory and go first in the next record (or are written by the writer
//! thread after `UNWRITTEN_AFTER`); losing them in a crash costs at most a duplicate delivery or a
//! session record a moment old (docs/persistence.md, "Write-ahead log").
//!
//! Durable mode: a connection whose read must be durable before its acknowledgements waits for
//! the writer thread's next `fdatasync` of the log. The thread syncs whatever was appended when
//! the sync began (group commit: every connection that appended meanwhile shares it), answers
//! everyone that sync covers, and starts the next one if others appended while it ran (their
//! records were already written: pipelining) — once a connection it just answered appends again,
//! or after as long as the last sync took (`Log::gather_until`). Connections never wait for the
//! writer's long hold of the log's lock (a checkpoint's tail): their changes are set aside and
//! appended when it ends (`Aside`). Autosave mode never waits: the write is
//! done before the acknowledgement (a kill -9 loses nothing, the page cache keeps it), and the
//! thread syncs the log when `persistence/autosave.rs` says so.
//!
//! Both modes: the thread folds the logged changes into redb in commits that are not synced
//! (`persistence/fold.rs` cancels a queued copy removed before its fold), and now and then a
//! checkpoint — one synced redb commit recording the last folded log sequence — lets the log be
//! emptied. A crash loses nothing the log holds: the next start replays the records redb does
//! not hold.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

/// How many changes nobody waits for are held before they are written on their own.
const MAX_UNWRITTEN: usize = 4_096;
/// How long changes nobody waited for stay unsynced in durable mode.
const BACKGROUND_SYNC: Duration = Duration::from_secs(1);
/// Changes appended and not yet taken over by the writer thread (`Log::logged`) wake it once
/// they are this many (it takes them over between syncs anyway, and at every fold).
const ABSORB_OPS: usize = 16_384;
/// The writer folds the log's changes into redb once this many are waiting (after cancelling)...
/// Large enough that a subscriber lagging its publisher by a fraction of a second still has its
/// copies cancelled rather than inserted and deleted in redb (docs/persistence.md, "Where the
/// time goes"); at most a few tens of MB in memory.
const FOLD_OPS: usize = 65_536;
/// ... or the oldest has waited this long ...
const FOLD_AFTER: Duration = Duration::from_millis(500);
/// ... and then only the records taken over at least this long ago: a copy whose removal comes
/// within this time cancels in memory (docs/persistence.md, "Folding the settled records").
const KEEP_YOUNG: Duration = Duration::from_millis(250);
/// Beyond this many changes waiting, a fold takes them all, young or not.
const FOLD_OPS_MAX: usize = 4 * FOLD_OPS;
/// How long removals nobody waits for stay unwritten at most.
const UNWRITTEN_AFTER: Duration = Duration::from_millis(100);
/// A checkpoint (synced redb commit, then the log emptied) once the log holds this many bytes...
const CHECKPOINT_BYTES: u64 = 32 << 20;
/// ... or this long after the last one, when something was logged since (durable mode).
const CHECKPOINT_AFTER: Duration = Duration::from_secs(2);
/// Checkpoints by size come at least this far apart.
const CHECKPOINT_SPACING: Duration = Duration::from_millis(250);
/// How long the writer sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);
/// The longest a sync waits for the record of a connection just answered (`Log::gather`).
const GATHER_MAX: Duration = Duration::from_millis(1);
/// The record buffer is kept between records up to this size.
const RECORD_BUFFER_KEEP: usize = 1 << 20;

type Reply = oneshot::Sender<Result<(), String>>;

/// What the log did since the start, for the breakdown in docs/persistence.md (logged when the
/// writer stops).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Records appended, the changes in them and their bytes (headers included).
    pub records: u64,
    pub ops: u64,
    pub bytes: u64,
    /// Commits that waited for a sync (durable mode), and the syncs of the log.
    pub waited: u64,
    pub syncs: u64,
    /// Times a connection woke the writer thread.
    pub wakes: u64,
    /// Syncs that waited for a record from a connection just answered (`Log::gather_until`).
    pub gathers: u64,
    /// Changes set aside while the writer held the log's lock for long (`Aside`), and the
    /// longest time one connection's append took (waiting for the lock and the `write()`), µs.
    pub set_aside: u64,
    pub slowest_append_us: u64,
    /// Folds into redb and the changes they applied (after cancelling), checkpoints.
    pub folds: u64,
    pub folded_ops: u64,
    pub checkpoints: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    /// Checkpoint and stop (shutdown).
    Stop,
    /// Stop at once, as a kill would (tests).
    #[cfg(test)]
    Abandon,
}

/// The log and what waits around it, behind one lock shared by the connections and the thread.
struct Log {
    wal: Wal,
    /// The sequence of the last record appended, and of the last one synced.
    sequence: u64,
    synced: u64,
    unsynced_since: Option<Instant>,
    /// Appended, not yet taken over by the writer thread (its `Pending`, which cancels a
    /// copy's queueing against its removal): the changes of each record, in order, and how many.
    /// Kept as they came, so that appending costs the connection one push per record, not the
    /// fold's bookkeeping per change (docs/persistence.md, "Where the gate's CPU goes").
    logged: Vec<(u64, Vec<Op>)>,
    logged_ops: usize,
    /// When the oldest change not yet folded into redb came.
    pending_since: Option<Instant>,
    /// Changes nobody waits for, not written yet: the next record carries them first.
    unwritten: Vec<Op>,
    unwritten_since: Option<Instant>,
    /// Durable mode: who waits for the sync of which record.
    waiters: Vec<(u64, Reply)>,
    /// Durable mode: a sync just answered its waiters, and records are already waiting for the
    /// next one. That one starts once a record comes after the answers, or at this instant
    /// (`None`: at once). A connection answered writes its acknowledgements, its client sends
    /// the next messages and the connection appends them: waiting for that record (at most as
    /// long as the last sync took, `GATHER_MAX`) lets one sync cover both the records that were
    /// waiting and the new ones, where starting at once would leave the new ones for the sync
    /// after (one publisher keeping a window of messages in flight then gets half its window per
    /// sync; docs/persistence.md, "Durable mode").
    gather_until: Option<Instant>,
    /// Autosave mode: when to sync (`None`: durable mode).
    autosave: Option<Autosave>,
    /// The record being built (kept between records: no allocation per record).
    record: Vec<u8>,
    /// The thread waits for a wake-up (connections wake it only then, and only when needed).
    asleep: bool,
    /// The last fold failed: the next waits for its timer, not for the count.
    fold_failing: bool,
    run: Run,
    counters: Counters,
}

impl Log {
    /// Appends the unwritten changes and then `ops` as one record (not synced). They are kept
    /// for the fold even when the write fails (the senders get the error and the client sends
    /// again: at worst a duplicate, as after a crash). Returns the record's sequence.
    fn append(&mut self, ops: Vec<Op>) -> Result<u64, String> {
        let mut all = std::mem::take(&mut self.unwritten);
        self.unwritten_since = None;
        if all.is_empty() {
            all = ops;
        } else {
            all.extend(ops);
        }
        if all.is_empty() {
            return Ok(self.sequence);
        }
        let mut record = std::mem::take(&mut self.record);
        wal::begin_record(&mut record);
        // Serializing these plain types into a vector cannot fail.
        record = postcard::to_extend(&all, record).unwrap_or_default();
        let result = match self.wal.append_record(self.sequence + 1, &mut record) {
            Ok(()) => {
                self.sequence += 1;
                self.gather_until = None;
                self.unsynced_since.get_or_insert_with(Instant::now);
                self.counters.records += 1;
                self.counters.ops += all.len() as u64;
                self.counters.bytes += record.len() as u64;
                Ok(self.sequence)
            }
            Err(e) => Err(e.to_string()),
        };
        if record.capacity() <= RECORD_BUFFER_KEEP {
            self.record = record;
        }
        self.pending_since.get_or_insert_with(Instant::now);
        if let Some(autosave) = &mut self.autosave {
            autosave.written(all.len());
        }
        self.logged_ops += all.len();
        self.logged.push((self.sequence, all));
        result
    }

    /// Changes nobody waits for: removals of delivered copies wait for the next record (or
    /// `UNWRITTEN_AFTER`, `MAX_UNWRITTEN`); anything else is written at once.
    fn submitted(&mut self, ops: Vec<Op>) {
        let removals_only = ops.iter().all(|op| matches!(op, Op::Dequeue { .. }));
        self.unwritten.extend(ops);
        self.unwritten_since.get_or_insert_with(Instant::now);
        if !removals_only || self.unwritten.len() >= MAX_UNWRITTEN {
            self.flush_unwritten();
        }
    }

    /// [`Log::submitted`] from a buffer the caller keeps.
    fn submitted_from(&mut self, ops: &mut Vec<Op>) {
        let removals_only = ops.iter().all(|op| matches!(op, Op::Dequeue { .. }));
        self.unwritten.append(ops);
        self.unwritten_since.get_or_insert_with(Instant::now);
        if !removals_only || self.unwritten.len() >= MAX_UNWRITTEN {
            self.flush_unwritten();
        }
    }

    /// Writes the changes nobody waits for now.
    fn flush_unwritten(&mut self) {
        if !self.unwritten.is_empty()
            && let Err(reason) = self.append(Vec::new())
        {
            error!(file = %self.wal.path().display(), %reason, "persistence: changes could not be written to the log");
        }
    }

    /// Nothing is pending: the thread may be asleep for longer than the next change needs.
    fn idle(&self) -> bool {
        self.pending_since.is_none() && self.unwritten_since.is_none()
    }

    /// Whether the thread has work at once (besides timers it computed before sleeping).
    fn urgent(&self) -> bool {
        self.sync_wanted(Instant::now())
            || self.logged_ops >= ABSORB_OPS
            || self.autosave.as_ref().is_some_and(Autosave::due)
    }

    /// Someone waits for a sync, and it need not wait for more records (`gather_until`).
    fn sync_wanted(&self, now: Instant) -> bool {
        !self.waiters.is_empty() && self.gather_until.is_none_or(|until| now >= until)
    }

    /// Takes the waiters whose records are at or below `through` (answered once the lock is
    /// dropped).
    fn covered(&mut self, through: u64) -> Vec<Reply> {
        let mut covered = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].0 <= through {
                covered.push(self.waiters.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        covered
    }
}

struct Shared {
    log: Mutex<Log>,
    wake: Condvar,
    aside: Mutex<Aside>,
}

/// While the writer thread holds the log's lock for long — a checkpoint's tail: a synced redb
/// commit and emptying the log, milliseconds — connections do not wait for it: their changes
/// wait here, and the writer appends them, in the order they came, before it lets go of the lock.
/// (The gate's runtime may be one thread for all connections, `gate_worker_threads`: one task
/// waiting for a lock there stops every connection.)
#[derive(Default)]
struct Aside {
    holding: bool,
    /// A read's changes and who waits for them (`commit`), or changes nobody waits for
    /// (`submit`).
    changes: Vec<(Vec<Op>, Option<Reply>)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn aside(&self) -> MutexGuard<'_, Aside> {
        self.aside.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets `ops` aside (with `reply()`, who waits for them) if the writer holds the log's lock
    /// for long; gives them back if not.
    fn set_aside(&self, ops: Vec<Op>, reply: impl FnOnce() -> Option<Reply>) -> Result<(), Vec<Op>> {
        let mut aside = self.aside();
        if !aside.holding {
            return Err(ops);
        }
        aside.changes.push((ops, reply()));
        Ok(())
    }

    /// The writer begins a long hold of the log's lock (said before it takes it, so that no
    /// connection starts waiting for it meanwhile).
    fn begin_long_hold(&self) {
        self.aside().holding = true;
    }

    /// The writer ends its long hold (still holding the log's lock): what was set aside is
    /// appended in order. Returns the answers to give once the lock is let go.
    fn end_long_hold(&self, log: &mut Log) -> Vec<(Reply, Result<(), String>)> {
        let mut aside = self.aside();
        aside.holding = false;
        let mut answers = Vec::new();
        for (ops, reply) in aside.changes.drain(..) {
            log.counters.set_aside += 1;
            let Some(reply) = reply else {
                log.submitted(ops);
                continue;
            };
            match log.append(ops) {
                Err(reason) => answers.push((reply, Err(reason))),
                Ok(sequence) if log.autosave.is_none() => {
                    log.waiters.push((sequence, reply));
                    log.counters.waited += 1;
                }
                Ok(_) => answers.push((reply, Ok(()))),
            }
        }
        answers
    }
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

/// The writer thread: syncs, folds, checkpoints.
struct Thread {
    store: Store,
    /// The log's file, for syncing it without holding the lock.
    sync_file: File,
    /// The last sequence redb holds (folded, maybe not synced yet) and holds durably.
    folded: u64,
    checkpointed: u64,
    last_checkpoint: Instant,
    /// The changes taken over from the log (`Log::logged`) and not yet folded into redb, a
    /// copy's queueing cancelled against its removal (kept between folds: no reallocation).
    pending: Pending,
}

fn answer(replies: Vec<Reply>, result: &Result<(), String>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

impl Thread {
    /// Syncs what was appended when the sync begins (without the lock: connections keep
    /// appending meanwhile) and answers those it covers.
    fn sync<'a>(&mut self, shared: &'a Shared, mut log: MutexGuard<'a, Log>) -> MutexGuard<'a, Log> {
        let target = log.sequence;
        log.gather_until = None;
        if log.synced < target {
            drop(log);
            let began = Instant::now();
            let result = self.sync_file.sync_data().map_err(|e| e.to_string());
            let took = began.elapsed();
            log = shared.lock();
            log.counters.syncs += 1;
            if log.autosave.is_none() && log.waiters.iter().any(|(sequence, _)| *sequence > target) {
                // Records came during the sync; those answered now will come back (`gather_until`).
                log.gather_until = Some(Instant::now() + took.min(GATHER_MAX));
                log.counters.gathers += 1;
            }
            match &result {
                Ok(()) => {
                    log.synced = log.synced.max(target);
                    if log.sequence == target {
                        log.wal.mark_synced();
                        log.unsynced_since = None;
                    }
                    if let Some(autosave) = &mut log.autosave {
                        autosave.synced();
                    }
                }
                Err(reason) => {
                    error!(file = %log.wal.path().display(), %reason, "persistence: the write-ahead log could not be synced");
                    // Tried again with the next waiter, after BACKGROUND_SYNC, or at the next
                    // autosave.
                    log.unsynced_since = Some(Instant::now());
                    if let Some(autosave) = &mut log.autosave {
                        autosave.synced();
                    }
                }
            }
            let covered = log.covered(target);
            drop(log);
            answer(covered, &result);
            return shared.lock();
        }
        let covered = log.covered(target);
        drop(log);
        answer(covered, &Ok(()));
        shared.lock()
    }

    /// Takes over the changes connections appended (in order), without the lock.
    fn absorb<'a>(&mut self, shared: &'a Shared, mut log: MutexGuard<'a, Log>) -> MutexGuard<'a, Log> {
        if log.logged.is_empty() {
            return log;
        }
        let batches = std::mem::take(&mut log.logged);
        log.logged_ops = 0;
        drop(log);
        self.pending.extend(batches, Instant::now());
        shared.lock()
    }

    /// Applies pending changes to redb (not synced), without the lock: all of them (`full`: a
    /// checkpoint, shutdown), or only the records taken over at least `KEEP_YOUNG` ago, so that
    /// a copy queued just now still cancels against its removal in memory rather than being
    /// inserted into redb and deleted again (docs/persistence.md, "Folding the settled records").
    /// On failure they stay pending, before the newer ones (the log keeps them all: no
    /// checkpoint passes them).
    fn fold<'a>(
        &mut self,
        shared: &'a Shared,
        mut log: MutexGuard<'a, Log>,
        full: bool,
    ) -> (MutexGuard<'a, Log>, bool) {
        log.flush_unwritten();
        if log.pending_since.is_none() {
            return (log, true);
        }
        // Everything appended up to the log's sequence is taken over.
        let batches = std::mem::take(&mut log.logged);
        log.logged_ops = 0;
        log.pending_since = None;
        drop(log);
        let now = Instant::now();
        self.pending.extend(batches, now);
        let until = if full {
            self.pending.newest()
        } else {
            now.checked_sub(KEEP_YOUNG).and_then(|t| self.pending.settled(t))
        };
        let result = match until {
            Some(mark) => self.store.fold(self.pending.iter_until(mark), mark.sequence).map(|()| Some(mark)),
            None => Ok(None),
        };
        let ok = result.is_ok();
        let mut log = match result {
            Ok(Some(mark)) => {
                let count = self.pending.fold_until(mark) as u64;
                let mut log = shared.lock();
                self.folded = self.folded.max(mark.sequence);
                log.counters.folds += 1;
                log.counters.folded_ops += count;
                log
            }
            Ok(None) => shared.lock(),
            Err(reason) => {
                error!(file = %self.store.path().display(), %reason, "persistence: changes could not be folded into the store; the write-ahead log keeps them");
                let mut log = shared.lock();
                // Tried again after FOLD_AFTER.
                log.pending_since = Some(Instant::now());
                log
            }
        };
        // What stays pending is due after FOLD_AFTER from when it was taken over (or appended,
        // for what came meanwhile); after a failure, FOLD_AFTER from now.
        if ok {
            log.pending_since = match (self.pending.oldest(), log.pending_since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        log.fold_failing = !ok;
        (log, ok)
    }

    /// Folds what is pending, makes redb durable, then empties the log (every record in it is
    /// now in redb's durable state). The bulk is folded and synced without the lock; what came
    /// meanwhile is folded and synced under it, so that the log can be emptied whole.
    fn checkpoint<'a>(&mut self, shared: &'a Shared, log: MutexGuard<'a, Log>) -> MutexGuard<'a, Log> {
        self.last_checkpoint = Instant::now();
        let (log, ok) = self.fold(shared, log, true);
        if !ok {
            return log;
        }
        drop(log);
        let synced = self.store.sync();
        // From here to the end the lock is held across syncs: connections set their changes
        // aside meanwhile (`Aside`).
        shared.begin_long_hold();
        let mut log = shared.lock();
        let emptied = match synced {
            Ok(()) => self.checkpoint_tail(&mut log),
            Err(reason) => {
                error!(file = %self.store.path().display(), %reason, "persistence: checkpoint failed; the write-ahead log keeps the changes");
                false
            }
        };
        let through = log.sequence;
        let answers = shared.end_long_hold(&mut log);
        let covered = if emptied { log.covered(through) } else { Vec::new() };
        drop(log);
        answer(covered, &Ok(()));
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
        shared.lock()
    }

    /// Under the lock, after the bulk is durable in redb: folds and commits (synced) what came
    /// meanwhile, then empties the log. Returns whether it did (every record so far is in redb's
    /// durable state, which answers every waiter).
    fn checkpoint_tail(&mut self, log: &mut Log) -> bool {
        self.checkpointed = self.folded;
        log.flush_unwritten();
        if log.sequence > self.folded || log.pending_since.is_some() {
            let through = log.sequence;
            log.logged_ops = 0;
            self.pending.extend(std::mem::take(&mut log.logged), Instant::now());
            let result = self.store.fold(self.pending.iter(), through).and_then(|()| self.store.sync());
            if let Err(reason) = result {
                error!(file = %self.store.path().display(), %reason, "persistence: checkpoint failed; the write-ahead log keeps the changes");
                return false;
            }
            log.counters.folds += 1;
            log.counters.folded_ops += self.pending.count() as u64;
            self.pending.clear();
            log.pending_since = None;
            self.folded = through;
            self.checkpointed = through;
        }
        log.counters.checkpoints += 1;
        if log.sequence != self.checkpointed {
            return false;
        }
        match log.wal.reset() {
            // Everything written is in redb's durable state now.
            Ok(()) => {
                log.synced = log.sequence;
                log.unsynced_since = None;
                if let Some(autosave) = &mut log.autosave {
                    autosave.synced();
                }
                true
            }
            Err(e) => {
                error!(file = %log.wal.path().display(), reason = %e, "persistence: the write-ahead log could not be emptied");
                false
            }
        }
    }

    /// Does what is due now: a sync someone waits for, the background sync (durable mode) or
    /// the autosave, writing the unwritten changes, a fold, a checkpoint (autosave mode: only by
    /// size, its syncs are the autosave's).
    fn service<'a>(&mut self, shared: &'a Shared, mut log: MutexGuard<'a, Log>) -> MutexGuard<'a, Log> {
        let now = Instant::now();
        let sync_due = log.sync_wanted(now)
            || match &log.autosave {
                Some(autosave) => autosave.due(),
                None => log.unsynced_since.is_some_and(|t| now >= t + BACKGROUND_SYNC),
            };
        if sync_due {
            log = self.sync(shared, log);
        }
        if log.unwritten_since.is_some_and(|t| now >= t + UNWRITTEN_AFTER) {
            log.flush_unwritten();
        }
        // Taken over between syncs, never before one that is wanted now: acknowledgements do not
        // wait for this bookkeeping (durable mode: right after a sync, while the next gathers).
        if !log.logged.is_empty() && !log.sync_wanted(Instant::now()) {
            log = self.absorb(shared, log);
        }
        if (self.pending.count() >= FOLD_OPS && !log.fold_failing)
            || log.pending_since.is_some_and(|t| now >= t + FOLD_AFTER)
        {
            let full = self.pending.count() >= FOLD_OPS_MAX;
            log = self.fold(shared, log, full).0;
        }
        if (log.wal.len() >= CHECKPOINT_BYTES && now >= self.last_checkpoint + CHECKPOINT_SPACING)
            || (log.autosave.is_none()
                && self.checkpointed < log.sequence
                && now >= self.last_checkpoint + CHECKPOINT_AFTER)
        {
            log = self.checkpoint(shared, log);
        }
        log
    }

    /// When the thread must wake up with nothing asked of it.
    fn next_due(&self, log: &Log) -> Option<Instant> {
        let fold = [log.pending_since.map(|t| t + FOLD_AFTER), log.unwritten_since.map(|t| t + UNWRITTEN_AFTER)]
            .into_iter()
            .flatten()
            .min();
        let (sync, checkpoint) = match &log.autosave {
            Some(autosave) => (autosave.due_at(), None),
            None => (
                log.unsynced_since.map(|t| t + BACKGROUND_SYNC),
                (self.checkpointed < log.sequence).then_some(self.last_checkpoint + CHECKPOINT_AFTER),
            ),
        };
        let full = (log.wal.len() >= CHECKPOINT_BYTES).then_some(self.last_checkpoint + CHECKPOINT_SPACING);
        let gathered = log.gather_until.filter(|_| !log.waiters.is_empty());
        [fold, sync, checkpoint, full, gathered].into_iter().flatten().min()
    }

    fn run(mut self, shared: Arc<Shared>) {
        let shared = &*shared;
        let mut log = shared.lock();
        loop {
            #[cfg(test)]
            if log.run == Run::Abandon {
                return;
            }
            if log.run != Run::Running {
                break;
            }
            log = self.service(shared, log);
            if log.urgent() || log.run != Run::Running {
                continue;
            }
            let wait = self.next_due(&log).map_or(IDLE, |due| due.saturating_duration_since(Instant::now()));
            log.asleep = true;
            log = shared.wake.wait_timeout(log, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
            log.asleep = false;
        }
        // Shutdown: everything into redb, synced, and the log emptied; if that fails, at least
        // the log is synced for the next start's replay.
        log = self.checkpoint(shared, log);
        log = self.sync(shared, log);
        if log.synced < log.sequence {
            warn!(file = %log.wal.path().display(), "persistence: the last sync at shutdown failed");
        }
        let counters = log.counters;
        let waiters = log.covered(u64::MAX);
        drop(log);
        answer(waiters, &stopped());
        info!(?counters, "persistence: writer stopped");
    }
}

/// See the module documentation.
pub struct Writer {
    shared: Arc<Shared>,
    durable: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn parts(store: Store, wal: Wal, sequence: u64, autosave: Option<Autosave>) -> std::io::Result<(Arc<Shared>, Thread)> {
    let sync_file = wal.sync_handle()?;
    let log = Log {
        wal,
        sequence,
        synced: sequence,
        unsynced_since: None,
        logged: Vec::new(),
        logged_ops: 0,
        pending_since: None,
        unwritten: Vec::new(),
        unwritten_since: None,
        waiters: Vec::new(),
        gather_until: None,
        autosave,
        record: Vec::new(),
        asleep: false,
        fold_failing: false,
        run: Run::Running,
        counters: Counters::default(),
    };
    let shared = Arc::new(Shared { log: Mutex::new(log), wake: Condvar::new(), aside: Mutex::default() });
    let thread = Thread {
        store,
        sync_file,
        folded: sequence,
        checkpointed: sequence,
        last_checkpoint: Instant::now(),
        pending: Pending::default(),
    };
    Ok((shared, thread))
}

/// The answer to a [`Writer::commit`]: known at once (autosave mode, a failed write, or a sync
/// that already covers the record), or when the writer thread's sync covers the record. A
/// connection keeps it while it reads on (`gate/connection/inbound.rs`, pipelining), so it is a
/// type of its own rather than an `async` block.
pub struct Saved(Outcome);

enum Outcome {
    Done(Option<Result<(), String>>),
    Wait(oneshot::Receiver<Result<(), String>>),
}

fn stopped() -> Result<(), String> {
    Err("the persistence writer has stopped".to_owned())
}

impl Saved {
    /// The answer, if it is known without waiting (taken: asked once).
    pub fn ready(&mut self) -> Option<Result<(), String>> {
        match &mut self.0 {
            Outcome::Done(result) => Some(result.take().unwrap_or_else(stopped)),
            Outcome::Wait(done) => match done.try_recv() {
                Ok(result) => Some(result),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(stopped()),
            },
        }
    }
}

impl Future for Saved {
    type Output = Result<(), String>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            Outcome::Done(result) => std::task::Poll::Ready(result.take().unwrap_or_else(stopped)),
            Outcome::Wait(done) => std::pin::Pin::new(done).poll(cx).map(|answer| answer.unwrap_or_else(|_| stopped())),
        }
    }
}

impl Writer {
    /// Starts the writer on `store`; `wal` and `sequence` are what [`recover`] returned.
    pub fn start(store: Store, wal: Wal, sequence: u64, settings: &PersistenceSettings) -> std::io::Result<Writer> {
        let durable = settings.mode != PersistenceMode::Autosave;
        let autosave = (!durable).then(|| Autosave::new(settings.autosave_interval, settings.autosave_on_changes));
        let (shared, thread) = parts(store, wal, sequence, autosave)?;
        let thread = std::thread::Builder::new().name("persistence".into()).spawn({
            let shared = shared.clone();
            move || thread.run(shared)
        })?;
        Ok(Writer { shared, durable, thread: Mutex::new(Some(thread)) })
    }

    /// Wakes the thread if it sleeps and something needs it before its timer.
    fn wake(&self, mut log: MutexGuard<'_, Log>, was_idle: bool) {
        if log.asleep && (was_idle || log.urgent()) {
            log.asleep = false;
            log.counters.wakes += 1;
            drop(log);
            self.shared.wake.notify_one();
        }
    }

    /// Appends `ops` to the log (on the caller's thread); the answer resolves once they are
    /// durable (durable mode: synced by the writer thread) — in autosave mode at once, written.
    pub fn commit(&self, ops: Vec<Op>) -> Saved {
        let began = Instant::now();
        let mut answer = None;
        let aside = self.shared.set_aside(ops, || {
            let (reply, done) = oneshot::channel();
            answer = Some(done);
            Some(reply)
        });
        let ops = match aside {
            Ok(()) => return Saved(answer.map_or_else(|| Outcome::Done(Some(stopped())), Outcome::Wait)),
            Err(ops) => ops,
        };
        let mut log = self.shared.lock();
        if log.run != Run::Running {
            return Saved(Outcome::Done(Some(stopped())));
        }
        let was_idle = log.idle();
        let appended = log.append(ops);
        let took = began.elapsed().as_micros() as u64;
        log.counters.slowest_append_us = log.counters.slowest_append_us.max(took);
        let outcome = match appended {
            Err(reason) => Outcome::Done(Some(Err(reason))),
            Ok(sequence) if !self.durable || log.synced >= sequence => Outcome::Done(Some(Ok(()))),
            Ok(sequence) => {
                let (reply, done) = oneshot::channel();
                log.waiters.push((sequence, reply));
                log.counters.waited += 1;
                Outcome::Wait(done)
            }
        };
        self.wake(log, was_idle);
        Saved(outcome)
    }

    /// Hands over `ops` without waiting (changes nothing acknowledged depends on). Removals of
    /// acknowledged copies, the changes of every delivery, wait for the next record (or
    /// `UNWRITTEN_AFTER`): losing them in a kill costs a duplicate delivery, which QoS 1 allows.
    /// Anything else (a session's record, a will, QoS 2 state) is written at once, so that a
    /// kill -9 does not lose it.
    pub fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let Err(ops) = self.shared.set_aside(ops, || None) else { return };
        let mut log = self.shared.lock();
        if log.run != Run::Running {
            return;
        }
        let was_idle = log.idle();
        log.submitted(ops);
        self.wake(log, was_idle);
    }

    /// [`Writer::submit`] from a buffer the caller keeps (left empty, with its capacity).
    pub fn submit_from(&self, ops: &mut Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if self.shared.aside().holding {
            self.submit(std::mem::take(ops));
            return;
        }
        let mut log = self.shared.lock();
        if log.run != Run::Running {
            ops.clear();
            return;
        }
        let was_idle = log.idle();
        log.submitted_from(ops);
        self.wake(log, was_idle);
    }

    /// What the log did so far.
    #[cfg(test)]
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters
    }

    /// Stops the writer once everything handed to it is saved and synced.
    pub fn stop(&self) {
        self.halt(Run::Stop);
    }

    fn halt(&self, run: Run) {
        {
            let mut log = self.shared.lock();
            if log.run == Run::Running {
                log.run = run;
            }
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path, autosave: Option<Autosave>) -> (Arc<Shared>, Thread) {
        let store = Store::open(path).unwrap();
        let (wal, sequence) = recover(&store).unwrap();
        parts(store, wal, sequence, autosave).unwrap()
    }

    fn message(topic: &str) -> Vec<u8> {
        records::encode(&crate::persistence::stored_message(topic, b"v", 1, "p", None, None))
    }

    fn retain(topic: &str) -> Op {
        Op::Retain { topic: topic.into(), message: message(topic) }
    }

    fn queue(sequence: u64) -> Op {
        Op::Queue { client_id: "c".into(), sequence, message: message("q").into() }
    }

    fn dequeue(sequence: u64) -> Op {
        Op::Dequeue { client_id: "c".into(), sequence }
    }

    fn state(store: &Store) -> (Vec<String>, Vec<(String, u64)>) {
        let loaded = store.load().unwrap();
        (
            loaded.retained.into_iter().map(|m| m.topic).collect(),
            loaded.queued.into_iter().map(|(c, s, _)| (c, s)).collect(),
        )
    }

    /// Appends `ops` as a connection's read does, and syncs as the thread does for its waiter.
    fn durable_commit(shared: &Shared, thread: &mut Thread, ops: Vec<Op>) {
        let mut log = shared.lock();
        log.append(ops).unwrap();
        drop(thread.sync(shared, log));
    }

    #[test]
    fn a_crash_after_a_checkpoint_replays_only_the_records_redb_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let (shared, mut thread) = open(&path, None);
        durable_commit(&shared, &mut thread, vec![retain("a")]);
        durable_commit(&shared, &mut thread, vec![queue(1)]);
        drop(thread.checkpoint(&shared, shared.lock()));
        assert!(shared.lock().wal.is_empty(), "a checkpoint empties the log");
        assert_eq!(thread.store.wal_sequence().unwrap(), 2);
        durable_commit(&shared, &mut thread, vec![retain("b")]);
        // A removal nobody waits for goes first in the next record.
        shared.lock().unwritten.push(dequeue(1));
        durable_commit(&shared, &mut thread, vec![queue(2)]);
        assert!(shared.lock().unwritten.is_empty());
        // The process dies before the fold: no fold, no checkpoint, no shutdown (a kill -9
        // after an unsynced fold is the crash harness's case: redb then reopens at its last
        // synced commit, which is this file's state here).
        let wal_path = shared.lock().wal.path().to_path_buf();
        drop((shared, thread));
        // And a write the crash cut short (nothing in it was acknowledged).
        let mut torn = std::fs::read(&wal_path).unwrap();
        let whole = torn.len();
        torn.extend_from_slice(b"DSW1\x40\x00\x00\x00\x06");
        std::fs::write(&wal_path, &torn).unwrap();
        assert!(whole > 0);

        let (shared, thread) = open(&path, None);
        assert_eq!(shared.lock().sequence, 4, "the next record follows the replayed ones");
        assert!(shared.lock().wal.is_empty(), "replayed, checkpointed and emptied at start");
        assert_eq!(thread.store.wal_sequence().unwrap(), 4);
        assert_eq!(state(&thread.store), (vec!["a".into(), "b".into()], vec![("c".into(), 2)]));
    }

    /// The changes as the previous version declared them (a `String` per client id, byte fields
    /// as serde's default sequence of `u8`): its log must replay here, and the bytes this
    /// version writes must be the ones it wrote (so that it could still replay ours).
    #[derive(serde::Serialize, serde::Deserialize)]
    enum PreviousOp {
        Retain { topic: String, message: Vec<u8> },
        Unretain { topic: String },
        Session { client_id: String, session: Vec<u8> },
        EndSession { client_id: String },
        Queue { client_id: String, sequence: u64, message: Vec<u8> },
        Dequeue { client_id: String, sequence: u64 },
        Will { client_id: String, will: Vec<u8> },
        Unwill { client_id: String },
        Qos2 { client_id: String, direction: super::super::store::Qos2Direction, pkid: u16, held: bool },
    }

    #[test]
    fn a_log_written_by_the_previous_version_replays_and_encodes_the_same() {
        use super::super::store::Qos2Direction;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        drop(Store::open(&path).unwrap());
        let previous = vec![
            PreviousOp::Retain { topic: "r".into(), message: message("r") },
            PreviousOp::Session {
                client_id: "c".into(),
                session: records::encode(&records::StoredSession {
                    owner: None,
                    subscriptions: Vec::new(),
                    expiry: None,
                    offline_since_unix_ms: Some(1),
                }),
            },
            PreviousOp::Queue { client_id: "c".into(), sequence: 1, message: message("q") },
            PreviousOp::Queue { client_id: "c".into(), sequence: 2, message: message("q") },
            PreviousOp::Dequeue { client_id: "c".into(), sequence: 1 },
            PreviousOp::Qos2 { client_id: "c".into(), direction: Qos2Direction::PubrelDue, pkid: 7, held: true },
            PreviousOp::Will { client_id: "w".into(), will: vec![1, 2, 3] },
            PreviousOp::Unwill { client_id: "w".into() },
            PreviousOp::Unretain { topic: "gone".into() },
            PreviousOp::EndSession { client_id: "ended".into() },
        ];
        let old_bytes = records::encode(&previous);
        let ops: Vec<Op> = records::decode(&old_bytes).unwrap();
        assert_eq!(records::encode(&ops), old_bytes, "this version writes what the previous one did");
        let (mut wal, _) = Wal::open(&wal::path_for(&path), 0).unwrap();
        wal.append(1, &old_bytes).unwrap();
        drop(wal);
        let (shared, thread) = open(&path, None);
        assert_eq!(shared.lock().sequence, 1, "replayed");
        assert_eq!(state(&thread.store), (vec!["r".into()], vec![("c".into(), 2)]));
        let loaded = thread.store.load().unwrap();
        assert_eq!(loaded.qos2, [("c".to_owned(), Qos2Direction::PubrelDue, 7)]);
        assert_eq!(loaded.sessions.len(), 1);
    }

    #[test]
    fn a_copy_queued_and_removed_between_folds_never_reaches_redb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let (shared, mut thread) = open(&path, None);
        for sequence in 1..=100u64 {
            durable_commit(&shared, &mut thread, vec![queue(sequence)]);
            if sequence % 10 != 0 {
                shared.lock().unwritten.push(dequeue(sequence));
            }
        }
        drop(thread.checkpoint(&shared, shared.lock()));
        let counters = shared.lock().counters;
        assert_eq!((counters.records, counters.ops, counters.syncs), (100, 190, 100));
        assert_eq!(counters.folded_ops, 10, "90 copies cancelled against their removals");
        assert_eq!(std::fs::metadata(wal::path_for(&path)).unwrap().len(), 0, "emptied by the checkpoint");
        drop((shared, thread));
        let store = Store::open(&path).unwrap();
        let (_, queued) = state(&store);
        assert_eq!(queued.iter().map(|(_, s)| *s).collect::<Vec<_>>(), (1..=10).map(|i| i * 10).collect::<Vec<_>>());
    }

    /// The periodic fold takes only the records taken over at least `KEEP_YOUNG` ago: a copy
    /// queued just before it and removed just after cancels in memory instead of reaching redb
    /// (an insert and a delete), while older records are folded (and the log sequence with them).
    #[test]
    fn a_periodic_fold_leaves_the_young_records_to_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let (shared, mut thread) = open(&path, Some(Autosave::new(0, false)));
        // A record taken over long ago, and one just now.
        shared.lock().append(vec![retain("old")]).unwrap();
        let old = std::mem::take(&mut shared.lock().logged);
        thread.pending.extend(old, Instant::now() - 2 * KEEP_YOUNG);
        shared.lock().append(vec![queue(1), queue(2)]).unwrap();
        drop(thread.fold(&shared, shared.lock(), false));
        assert_eq!(shared.lock().counters.folded_ops, 1, "only the settled record is folded");
        assert_eq!(thread.folded, 1, "through the settled record's sequence");
        assert_eq!(thread.pending.count(), 2);
        // The client acknowledges one copy: it cancels against its queueing, in memory.
        shared.lock().append(vec![dequeue(1)]).unwrap();
        drop(thread.checkpoint(&shared, shared.lock()));
        assert_eq!(shared.lock().counters.folded_ops, 2, "the copy still queued, not the cancelled one");
        assert_eq!(state(&thread.store), (vec!["old".into()], vec![("c".into(), 2)]));
        assert_eq!(thread.store.wal_sequence().unwrap(), 3);
    }

    /// A crash after a periodic fold (its commit not synced, or synced by a later checkpoint
    /// that never came): the next start replays the records after the folded one, so the young
    /// records left pending are not lost.
    #[test]
    fn a_crash_after_a_periodic_fold_replays_the_records_it_left_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let (shared, mut thread) = open(&path, Some(Autosave::new(0, false)));
        shared.lock().append(vec![retain("old"), queue(1)]).unwrap();
        let old = std::mem::take(&mut shared.lock().logged);
        thread.pending.extend(old, Instant::now() - 2 * KEEP_YOUNG);
        shared.lock().append(vec![queue(2)]).unwrap();
        shared.lock().append(vec![dequeue(1), retain("young")]).unwrap();
        drop(thread.fold(&shared, shared.lock(), false));
        assert_eq!((thread.folded, thread.pending.count()), (1, 2), "the first record folded");
        // Killed here: no checkpoint, no shutdown.
        drop((shared, thread));
        let (shared, thread) = open(&path, Some(Autosave::new(0, false)));
        assert_eq!(shared.lock().sequence, 3);
        assert_eq!(state(&thread.store), (vec!["old".into(), "young".into()], vec![("c".into(), 2)]));
    }

    #[test]
    fn autosave_answers_without_a_sync_and_a_kill_loses_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        // autosave_interval 0: synced only at shutdown.
        let (shared, mut thread) = open(&path, Some(Autosave::new(0, false)));
        shared.lock().append(vec![retain("a")]).unwrap();
        shared.lock().append(vec![queue(1)]).unwrap();
        drop(thread.service(&shared, shared.lock()));
        assert!(shared.lock().wal.unsynced(), "written, not synced");
        assert_eq!(shared.lock().counters.syncs, 0);
        // The process dies (no fold, no checkpoint, no shutdown); the written log survives it.
        drop((shared, thread));
        let (shared, thread) = open(&path, Some(Autosave::new(0, false)));
        assert_eq!(shared.lock().sequence, 2);
        assert_eq!(state(&thread.store), (vec!["a".into()], vec![("c".into(), 1)]));
        drop((shared, thread));

        // autosave_on_changes with an interval of 3: the third change syncs.
        let (shared, mut thread) = open(&path, Some(Autosave::new(3, true)));
        shared.lock().append(vec![dequeue(1)]).unwrap();
        shared.lock().append(vec![retain("b")]).unwrap();
        drop(thread.service(&shared, shared.lock()));
        assert!(shared.lock().wal.unsynced());
        shared.lock().append(vec![retain("c")]).unwrap();
        assert!(shared.lock().urgent(), "the writer is woken for the autosave");
        drop(thread.service(&shared, shared.lock()));
        assert!(!shared.lock().wal.unsynced(), "synced after autosave_interval changes");
    }

    /// While the writer holds the log's lock for a checkpoint's tail, connections do not wait
    /// for it: their changes are set aside and appended in the order they came when the hold
    /// ends, and a commit's answer comes with the sync after that.
    #[test]
    fn changes_during_a_long_hold_are_set_aside_and_appended_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let (shared, mut thread) = open(&path, None);
        let writer = Writer { shared: shared.clone(), durable: true, thread: Mutex::new(None) };
        durable_commit(&shared, &mut thread, vec![queue(1)]);
        shared.begin_long_hold();
        let mut second = writer.commit(vec![queue(2)]);
        writer.submit(vec![dequeue(1), retain("r")]);
        let mut third = writer.commit(vec![queue(3)]);
        assert_eq!(shared.lock().sequence, 1, "nothing appended during the hold");
        assert!(second.ready().is_none() && third.ready().is_none());

        let mut log = shared.lock();
        let answers = shared.end_long_hold(&mut log);
        assert!(answers.is_empty(), "durable mode: answered by the next sync");
        assert_eq!((log.sequence, log.waiters.len(), log.counters.set_aside), (4, 2, 3));
        drop(thread.sync(&shared, log));
        assert_eq!((second.ready(), third.ready()), (Some(Ok(())), Some(Ok(()))));
        // After the hold, appends take the lock again.
        assert_eq!(writer.commit(vec![queue(4)]).ready(), None);
        drop(thread.checkpoint(&shared, shared.lock()));
        assert_eq!(state(&thread.store), (vec!["r".into()], vec![("c".into(), 2), ("c".into(), 3), ("c".into(), 4)]));
    }

    /// The writer as the broker runs it: many connections commit at once; each commit resolves
    /// only once its record is synced, syncs are shared, and a kill right after loses nothing
    /// any commit resolved for.
    #[test]
    fn concurrent_commits_share_syncs_and_survive_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let settings = PersistenceSettings::default();
        assert_eq!(settings.mode, PersistenceMode::Durable);
        let store = Store::open(&path).unwrap();
        let (wal, sequence) = recover(&store).unwrap();
        let writer = Arc::new(Writer::start(store, wal, sequence, &settings).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for connection in 0..8u64 {
                let writer = writer.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..50u64 {
                        let sequence = connection * 1000 + i + 1;
                        writer.commit(vec![queue(sequence)]).await.unwrap();
                        // Its client acknowledged the previous one.
                        if i % 2 == 1 {
                            writer.submit(vec![dequeue(sequence - 1)]);
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let counters = writer.counters();
        assert_eq!(counters.waited, 400);
        assert!(counters.syncs >= 1 && counters.syncs <= 400, "{counters:?}");
        writer.halt(Run::Abandon);
        let wal_len = std::fs::metadata(wal::path_for(&path)).unwrap().len();
        let store = Store::open(&path).unwrap();
        let (_, sequence) = recover(&store).unwrap();
        assert!(sequence >= 1 && wal_len > 0);
        let (_, queued) = state(&store);
        let queued: std::collections::BTreeSet<u64> = queued.into_iter().map(|(_, s)| s).collect();
        for connection in 0..8u64 {
            // Every other one was removed; the last removals may not have been written (a
            // duplicate delivery at worst), but every committed copy is there or removed.
            for i in (0..50u64).step_by(2) {
                let kept = connection * 1000 + i + 2;
                assert!(queued.contains(&kept), "{kept} committed and not removed: {queued:?}");
            }
        }
    }
}
