//! Keeps a SUBSCRIBE ahead of the PUBLISHes read after it, across clients, while its
//! connection's router link is being attached.
//!
//! A connection attaches its link when it first needs the router (`lazy_link`); attaching is a
//! round trip to the router thread. A client that subscribes and a second client that publishes
//! a moment later would otherwise race: the publish, on a link already attached, reaches the
//! router before the subscription, and the subscriber misses a message mosquitto (which reads
//! every socket on one thread, in order) would deliver. So an attach that carries a SUBSCRIBE
//! holds a ticket until its packets are handed to the router, and a connection about to hand
//! the router publishes it read after such an attach began waits for that ticket first. Only
//! publishes that meet an attach in progress wait, and for at most [`MAX_WAIT`] (beyond that,
//! a router too slow to answer gets best-effort order rather than stalled publishers).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a publisher waits for attaches that began before its read.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// See the module documentation. One per broker.
#[derive(Debug, Default)]
pub struct AttachFence {
    next_ticket: AtomicU64,
    open: Mutex<BTreeSet<u64>>,
    /// `open.len()`, read without the lock on every publish batch.
    open_count: AtomicUsize,
    closed: Notify,
}

/// An attach in progress; dropping it lets the publishers that wait for it go.
#[derive(Debug)]
pub struct Ticket<'a> {
    fence: &'a AttachFence,
    number: u64,
}

impl AttachFence {
    /// An attach that carries a SUBSCRIBE begins.
    pub fn enter(&self) -> Ticket<'_> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let number = self.next_ticket.fetch_add(1, Ordering::SeqCst);
        open.insert(number);
        self.open_count.store(open.len(), Ordering::SeqCst);
        Ticket { fence: self, number }
    }

    /// Marks "now" for a publisher that has just read: attaches begun before it are waited for.
    pub fn horizon(&self) -> u64 {
        self.next_ticket.load(Ordering::SeqCst)
    }

    /// Whether a publisher that read at `horizon` must wait (cheap: one atomic load when no
    /// attach is open).
    pub fn waits_for(&self, horizon: u64) -> bool {
        if self.open_count.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.first().is_some_and(|&oldest| oldest < horizon)
    }

    /// Returns once every attach begun before `horizon` has handed its packets to the router
    /// (or after [`MAX_WAIT`]).
    pub async fn wait_for(&self, horizon: u64) {
        if !self.waits_for(horizon) {
            return;
        }
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if !self.waits_for(horizon) {
                return;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                tracing::debug!("publisher stopped waiting for a router attach");
                return;
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut open = self.fence.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.remove(&self.number);
        self.fence.open_count.store(open.len(), Ordering::SeqCst);
        drop(open);
        self.fence.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn publishers_wait_only_for_attaches_begun_before_their_read() {
        let fence = Arc::new(AttachFence::default());
        // Nothing in progress: no wait.
        fence.wait_for(fence.horizon()).await;

        let earlier = fence.enter();
        let horizon = fence.horizon();
        let later = fence.enter();
        let waiter = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.wait_for(horizon).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "an attach begun before the read is still open");
        drop(earlier);
        waiter.await.unwrap();
        // The later attach alone does not hold a publisher that read before it began.
        fence.wait_for(horizon).await;
        drop(later);
        assert!(!fence.waits_for(fence.horizon()));
    }
}
