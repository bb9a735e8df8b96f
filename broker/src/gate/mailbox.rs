//! What can be sent to a connection task: control replies, `$SYS` messages, kicks, and the
//! console's request for the connection's details — and the mailbox that carries them. Its own file
//! so that the registries that send (sessions, `$CONTROL` and `$SYS` subscribers) depend on it and
//! not on each other.
//!
//! The mailbox is a small channel of its own rather than tokio's unbounded mpsc: every connection
//! has one and almost none is ever written to, and tokio's allocates its cache-padded state and a
//! first block of 32 slots up front (1,056 bytes per connection, docs/benchmarks.md); this one is a
//! queue under a lock that allocates when mail arrives. Its receiver lives as long as the
//! connection, so senders also use it to wait until a connection has fully left ([`MailSender::closed`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::security::ControlReply;

/// A `$SYS` message for one connection to write.
#[derive(Debug)]
pub struct SysMessage {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// Set when the message is sent because of a new subscription (a retained message).
    pub retain: bool,
}

/// Why a connection is asked to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// Another connection claimed the client id: v5 DISCONNECT 0x8E, the will is published.
    Takeover,
    /// An administrative change (dynsec kick): v5 DISCONNECT 0x98, no will, session kept.
    Admin,
    /// The broker is stopping: v5 DISCONNECT 0x8B, no will.
    Shutdown,
    /// The client's credentials were revoked by a reload: socket closed without DISCONNECT, no will.
    CredentialsRevoked,
}

/// Messages to a connection task, delivered in order.
#[derive(Debug)]
pub enum Mail {
    /// A `$CONTROL/...` reply to write (QoS 0).
    Control(Arc<ControlReply>),
    /// A `$SYS/...` message to write (QoS 0).
    Sys(Arc<SysMessage>),
    Kick(KickReason),
    /// The console asks what the connection holds (its connected-clients view).
    Describe(tokio::sync::oneshot::Sender<ConnectionDetails>),
}

/// A live connection's state as the console shows it.
#[derive(Debug, Clone)]
pub struct ConnectionDetails {
    /// `3.1`, `3.1.1` or `5`.
    pub protocol: &'static str,
    /// The filters it is subscribed to.
    pub subscriptions: Vec<String>,
    /// QoS>0 deliveries the client has not acknowledged yet.
    pub in_flight: usize,
    /// Deliveries waiting for room in the client's window.
    pub queued: usize,
}

/// Creates a connection's mailbox.
pub fn channel() -> (MailSender, MailReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        open: AtomicBool::new(true),
        arrived: Notify::new(),
        closed: Notify::new(),
    });
    (MailSender(shared.clone()), MailReceiver(shared))
}

struct Shared {
    queue: Mutex<VecDeque<Mail>>,
    /// False once the receiver is gone.
    open: AtomicBool,
    /// Woken when mail arrives (a permit is kept when the receiver is busy).
    arrived: Notify,
    /// Woken when the receiver is dropped.
    closed: Notify,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Mail>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sends to one connection (cloned by every registry that may).
#[derive(Clone)]
pub struct MailSender(Arc<Shared>);

impl std::fmt::Debug for MailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSender").field("open", &self.0.open.load(Ordering::Acquire)).finish()
    }
}

impl MailSender {
    /// Queues `mail`; gives it back when the connection is gone.
    pub fn send(&self, mail: Mail) -> Result<(), Mail> {
        {
            let mut queue = self.0.queue();
            if !self.0.open.load(Ordering::Acquire) {
                return Err(mail);
            }
            queue.push_back(mail);
        }
        self.0.arrived.notify_one();
        Ok(())
    }

    /// Resolves once the connection has dropped its receiver (it has fully left).
    pub async fn closed(&self) {
        loop {
            let notified = self.0.closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a receiver dropped in between still wakes it.
            notified.as_mut().enable();
            if !self.0.open.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

/// The connection's end. (Its own sender lives in the connection too, so it never sees the
/// senders all gone.)
pub struct MailReceiver(Arc<Shared>);

impl MailReceiver {
    /// The next mail, waiting for it.
    pub async fn recv(&mut self) -> Mail {
        loop {
            if let Ok(mail) = self.try_recv() {
                return mail;
            }
            self.0.arrived.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Result<Mail, Empty> {
        let mut queue = self.0.queue();
        let mail = queue.pop_front().ok_or(Empty)?;
        if queue.is_empty() && queue.capacity() > 0 {
            // Mail is rare: an idle connection keeps no queue.
            *queue = VecDeque::new();
        }
        Ok(mail)
    }
}

impl Drop for MailReceiver {
    fn drop(&mut self) {
        let unread = {
            let mut queue = self.0.queue();
            self.0.open.store(false, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        drop(unread); // (outside the lock: a `Describe`'s asker learns it will get no answer)
        self.0.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mail_arrives_in_order_and_senders_learn_when_the_receiver_is_gone() {
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv().err(), Some(Empty));
        tx.send(Mail::Kick(KickReason::Admin)).unwrap();
        tx.clone().send(Mail::Kick(KickReason::Shutdown)).unwrap();
        assert!(matches!(rx.recv().await, Mail::Kick(KickReason::Admin)));
        assert!(matches!(rx.recv().await, Mail::Kick(KickReason::Shutdown)));
        let waiter = tokio::spawn({
            let tx = tx.clone();
            async move { tx.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let (answer, asked) = tokio::sync::oneshot::channel();
        tx.send(Mail::Describe(answer)).unwrap();
        drop(rx);
        waiter.await.unwrap();
        tx.closed().await; // (already closed: at once)
        assert!(asked.await.is_err(), "unread mail is dropped with the receiver");
        assert!(matches!(tx.send(Mail::Kick(KickReason::Admin)), Err(Mail::Kick(KickReason::Admin))));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_mail() {
        let (tx, mut rx) = channel();
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(Mail::Kick(KickReason::Takeover)).unwrap();
        assert!(matches!(reader.await.unwrap(), Mail::Kick(KickReason::Takeover)));
    }
}
