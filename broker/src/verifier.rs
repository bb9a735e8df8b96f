//! The password-verification pool: a fixed set of threads, below normal scheduling priority, that
//! run the deliberately slow password hashes of logins.
//!
//! Why not tokio's blocking pool: a login storm keeps every verification thread busy for
//! milliseconds per hash, and at normal priority those threads take the CPU from the router and
//! the connection workers, so connected clients see their messages wait behind hashes (bench P4).
//! These threads lower their own priority (nice +10 on Linux, where nice is per thread), so the
//! scheduler runs a woken router or worker first; when nothing else wants the CPU, hashing still
//! gets all of it. The pool's size is `gate_login_verifications`.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// How much the verification threads lower their priority (niceness added, capped at 19): enough
/// that the scheduler gives a woken normal thread the CPU first.
const VERIFIER_NICENESS_STEP: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Runs closures on the low-priority verification threads.
pub struct VerifierPool {
    jobs: Mutex<mpsc::Sender<Job>>,
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
        Ok(VerifierPool { jobs: Mutex::new(jobs) })
    }

    /// Runs `work` on a verification thread; `None` if the pool is gone or `work` panicked.
    pub async fn run<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        answer.await.ok()
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
        assert_eq!(pool.run(|| 6 * 7).await, Some(42));
        let panicked: Option<()> = pool.run(|| panic!("a hash implementation bug")).await;
        assert_eq!(panicked, None);
        for i in 0..10 {
            assert_eq!(pool.run(move || i + 1).await, Some(i + 1));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn verification_threads_run_below_normal_priority() {
        let pool = VerifierPool::new(1).unwrap();
        let niceness = pool.run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid()))).await;
        let base = rustix::process::getpriority_process(None).unwrap();
        let niceness = niceness.unwrap().unwrap();
        assert!(niceness > base || niceness == 19, "verification thread niceness {niceness}, process {base}");
    }
}
