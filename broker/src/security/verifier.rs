//! The password-verification pool: a fixed set of threads, below normal scheduling priority, that
//! run the deliberately slow password hashes of logins, and the queue in front of them.
//!
//! Why not tokio's blocking pool: a login storm keeps every verification thread busy for
//! milliseconds per hash, and at normal priority those threads take the CPU from the router and
//! the connection workers, so connected clients see their messages wait behind hashes (bench P4).
//! These threads lower their own priority (nice +10 on Linux, where nice is per thread), so the
//! scheduler runs a woken router or worker first; when nothing else wants the CPU, hashing still
//! gets all of it. The pool's size is `gate_login_verifications`.
//!
//! The queue (issue 15, item 8): a login first takes one of its username's slots — a username
//! may hold at most half the threads (at least one), so logins for one expensive or attacked
//! account cannot occupy them all — then one of the threads; [`VerifierPool::admit`] gives up
//! after `gate_login_queue_timeout`. The admission travels with the job and is released when the
//! thread is free again. A login whose client left is cancelled: it leaves the queue at once, a
//! job not started yet is skipped, and a hash already running (it cannot be interrupted) has its
//! result dropped.
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// How much the verification threads lower their priority (niceness added, capped at 19): enough
/// that the scheduler gives a woken normal thread the CPU first.
const VERIFIER_NICENESS_STEP: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Runs closures on the low-priority verification threads.
pub struct VerifierPool {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// One permit per thread.
    threads: Arc<Semaphore>,
    usernames: Arc<UsernameSlots>,
}

/// Per-username semaphores, present only while someone holds or waits for one, keyed by a
/// SipHash with a random key (a username may be 64 KiB long).
struct UsernameSlots {
    per_username: usize,
    hasher: RandomState,
    slots: Mutex<HashMap<u64, Arc<Semaphore>>>,
}

/// A place in the queue: one of the username's slots and one thread. Released on drop.
pub struct Admission {
    _thread: OwnedSemaphorePermit,
    _username: UsernameSlot,
}

struct UsernameSlot {
    permit: Option<OwnedSemaphorePermit>,
    key: u64,
    slots: Arc<UsernameSlots>,
}

impl Drop for UsernameSlot {
    fn drop(&mut self) {
        let mut slots = self.slots.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(self.permit.take());
        // Only the map holds it: nobody else holds or waits for this username.
        if slots.get(&self.key).is_some_and(|semaphore| Arc::strong_count(semaphore) == 1) {
            slots.remove(&self.key);
        }
    }
}

/// Tells a running job that its login was abandoned (the client left).
#[derive(Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Cancels when the waiting future is dropped.
struct CancelOnDrop(Cancellation);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::Release);
    }
}

impl VerifierPool {
    /// Starts `threads` (at least one) verification threads; they end when the pool is dropped.
    pub fn new(threads: usize) -> std::io::Result<VerifierPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new().name(format!("gate-verify-{index}")).spawn(move || {
                lower_own_priority();
                loop {
                    // The lock is held only while waiting for the next job, never while hashing.
                    let next = match queue.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    match next {
                        // A panicking job loses only its own answer, never the thread.
                        Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
                        Err(_) => return, // the pool was dropped
                    }
                }
            })?;
        }
        let threads = threads.max(1);
        let usernames = UsernameSlots {
            per_username: (threads / 2).max(1),
            hasher: RandomState::new(),
            slots: Mutex::new(HashMap::new()),
        };
        Ok(VerifierPool {
            jobs: Mutex::new(jobs),
            threads: Arc::new(Semaphore::new(threads)),
            usernames: Arc::new(usernames),
        })
    }

    /// Waits, at most `timeout`, for one of `username`'s slots and then a thread; `None` when
    /// the time ran out (the caller answers "server unavailable").
    pub async fn admit(&self, username: &str, timeout: Duration) -> Option<Admission> {
        let key = self.usernames.hasher.hash_one(username.as_bytes());
        let semaphore = {
            let mut slots = self.usernames.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let per_username = self.usernames.per_username;
            slots.entry(key).or_insert_with(|| Arc::new(Semaphore::new(per_username))).clone()
        };
        let queued = async {
            let busy = semaphore.available_permits() == 0;
            if busy {
                tracing::debug!("a login waits: its username already holds half the password verifiers");
            }
            let permit = semaphore.acquire_owned().await.ok()?;
            let username = UsernameSlot { permit: Some(permit), key, slots: Arc::clone(&self.usernames) };
            let thread = Arc::clone(&self.threads).acquire_owned().await.ok()?;
            Some(Admission { _thread: thread, _username: username })
        };
        tokio::time::timeout(timeout, queued).await.ok().flatten()
    }

    /// Runs `work` on a verification thread, holding `admission` until the thread is free again;
    /// `None` if the pool is gone or `work` panicked. Dropping the returned future cancels: a job
    /// not yet started is skipped, a running one sees [`Cancellation::is_cancelled`].
    pub async fn run<T, F>(&self, admission: Admission, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Cancellation) -> T + Send + 'static,
    {
        let cancellation = Cancellation::default();
        let _cancel_on_drop = CancelOnDrop(cancellation.clone());
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _admission = admission;
            if !cancellation.is_cancelled() {
                let _ = reply.send(work(&cancellation));
            }
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        answer.await.ok()
    }

    /// Runs `work` as soon as a thread is free, whoever asks (tests).
    pub async fn run_now<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let admission = self.admit("", Duration::from_secs(3600)).await?;
        self.run(admission, move |_| work()).await
    }
}

/// Lowers the calling thread's scheduling priority; failure (another OS, a sandbox) only costs
/// latency, so it is logged and ignored.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
        let lowered = (current + VERIFIER_NICENESS_STEP).min(19);
        if let Err(error) = rustix::process::setpriority_process(Some(thread), lowered) {
            tracing::debug!(%error, "could not lower the priority of a password-verification thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panicking_one() {
        let pool = VerifierPool::new(1).unwrap();
        assert_eq!(pool.run_now(|| 6 * 7).await, Some(42));
        let panicked: Option<()> = pool.run_now(|| panic!("a hash implementation bug")).await;
        assert_eq!(panicked, None);
        for i in 0..10 {
            assert_eq!(pool.run_now(move || i + 1).await, Some(i + 1));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn verification_threads_run_below_normal_priority() {
        let pool = VerifierPool::new(1).unwrap();
        let niceness = pool.run_now(|| rustix::process::getpriority_process(Some(rustix::thread::gettid()))).await;
        let base = rustix::process::getpriority_process(None).unwrap();
        let niceness = niceness.unwrap().unwrap();
        assert!(niceness > base || niceness == 19, "verification thread niceness {niceness}, process {base}");
    }

    #[tokio::test]
    async fn one_username_holds_at_most_half_the_threads() {
        let pool = VerifierPool::new(4).unwrap();
        let wait = Duration::from_millis(50);
        let first = pool.admit("victim", wait).await.expect("first");
        let second = pool.admit("victim", wait).await.expect("second");
        assert!(pool.admit("victim", wait).await.is_none(), "a third slot for the same username");
        let other = pool.admit("someone-else", wait).await.expect("other usernames still get threads");
        drop(first);
        assert!(pool.admit("victim", wait).await.is_some(), "a released slot is reusable");
        drop((second, other));
        assert!(pool.usernames.slots.lock().unwrap().is_empty(), "no slot is kept for idle usernames");
    }

    #[tokio::test]
    async fn the_queue_times_out_when_every_thread_is_taken() {
        let pool = VerifierPool::new(2).unwrap();
        let wait = Duration::from_millis(50);
        let _a = pool.admit("a", wait).await.expect("a");
        let _b = pool.admit("b", wait).await.expect("b");
        assert!(pool.admit("c", wait).await.is_none());
    }

    #[tokio::test]
    async fn an_abandoned_job_is_cancelled_and_frees_its_thread() {
        let pool = Arc::new(VerifierPool::new(1).unwrap());
        let (started_tx, started) = oneshot::channel();
        let admission = pool.admit("slow", Duration::from_secs(10)).await.unwrap();
        let running = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(admission, move |cancel| {
                    let _ = started_tx.send(());
                    while !cancel.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .await
            })
        };
        started.await.unwrap();
        running.abort();
        // The thread comes back only because the job saw the cancellation.
        assert_eq!(pool.run_now(|| 7).await, Some(7));
    }
}
