//! The store's one writer thread, with group commit: every connection hands it the changes of
//! one read at a time; the thread takes all that is waiting, applies it in one transaction and
//! syncs once for the whole group, then answers each sender. No connection ever syncs on its
//! own task, and the cost of a sync is shared by everything that arrived while the previous one
//! ran. In autosave mode the commits are not synced; a sync runs every `autosave_interval`
//! seconds (or changes) and when the writer stops.
//!
//! Changes nobody waits for (removals of acknowledged copies, a session's record when its client
//! leaves, wills) are committed without a sync even in durable mode: the next waited-for commit
//! syncs them too, and so does the writer after a second without one. Losing them in a crash
//! costs at most a duplicate delivery or a session record a moment old.

use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, warn};

use super::store::{Op, Store};
use crate::config::{PersistenceMode, PersistenceSettings};

/// The most changes one transaction takes (a bound on the memory and time of one commit).
const MAX_GROUP: usize = 16_384;
/// How long changes nobody waited for stay unsynced in durable mode.
const BACKGROUND_SYNC: Duration = Duration::from_secs(1);

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

/// When autosave mode syncs.
struct Autosave {
    interval: u64,
    on_changes: bool,
    changes: u64,
    last: Instant,
}

impl Autosave {
    fn due(&self) -> bool {
        match (self.interval, self.on_changes) {
            (0, _) => false,
            (n, true) => self.changes >= n,
            (n, false) => self.changes > 0 && self.last.elapsed() >= Duration::from_secs(n),
        }
    }

    fn wait(&self) -> Duration {
        if self.interval == 0 || self.on_changes || self.changes == 0 {
            return Duration::from_secs(3600);
        }
        Duration::from_secs(self.interval).saturating_sub(self.last.elapsed())
    }
}

impl Writer {
    pub fn start(store: Store, settings: &PersistenceSettings) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let durable = settings.mode == PersistenceMode::Durable;
        let mut autosave = Autosave {
            interval: settings.autosave_interval,
            on_changes: settings.autosave_on_changes,
            changes: 0,
            last: Instant::now(),
        };
        let thread = std::thread::Builder::new().name("persistence".into()).spawn(move || {
            // Durable mode: changes committed without a sync since the last sync.
            let mut unsynced = false;
            loop {
                let first = if durable {
                    queue.recv_timeout(if unsynced { BACKGROUND_SYNC } else { Duration::from_secs(3600) })
                } else {
                    queue.recv_timeout(autosave.wait())
                };
                let mut group = match first {
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
                autosave.changes += count as u64;
                let waited = group.iter().any(|job| job.reply.is_some());
                let sync = if durable { waited || (group.is_empty() && unsynced) } else { autosave.due() };
                let ops: Vec<Op> = group.iter_mut().flat_map(|job| std::mem::take(&mut job.ops)).collect();
                let result = if ops.is_empty() && sync {
                    store.sync()
                } else if ops.is_empty() {
                    Ok(())
                } else {
                    store.commit(&ops, sync)
                };
                if let Err(reason) = &result {
                    error!(file = %store.path().display(), %reason, "persistence: changes could not be saved");
                } else if sync {
                    autosave.changes = 0;
                    autosave.last = Instant::now();
                    unsynced = false;
                } else if !ops.is_empty() {
                    unsynced = true;
                }
                for job in group {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(result.clone());
                    }
                }
            }
            if let Err(reason) = store.sync() {
                warn!(file = %store.path().display(), %reason, "persistence: the last save at shutdown failed");
            }
        })?;
        Ok(Writer { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)) })
    }

    /// Hands `ops` to the writer; resolves once they are committed (durable mode: synced).
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
