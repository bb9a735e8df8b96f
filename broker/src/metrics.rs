//! The broker's counters, counted where the events happen and read by `$SYS` (see
//! [`crate::sys_topics`]) and by the console's `/metrics` (`crate::console::prometheus`).
//! [`SECURITY`] holds the security counters only `/metrics` shows (logins, ACL decisions, kicks,
//! control commands, password-verification time).
//!
//! Every counter is a relaxed atomic in one process-wide [`METRICS`], as mosquitto keeps its
//! `$SYS` counters in globals: the hot path pays one uncontended `fetch_add` and takes no lock.
//! The one exception is the retained-message index, locked only by publishes that set or clear a
//! retained message (a count and sizes only; the messages are in `routing::retained_index`).
//! Several brokers started in one process (unit tests) share the counters.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The process-wide counters.
pub static METRICS: Metrics = Metrics::new();

/// Counters and gauges (see the field names; "packets" are MQTT control packets of any type).
#[derive(Debug)]
pub struct Metrics {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    /// Payload bytes of PUBLISH packets.
    pub publish_bytes_received: AtomicU64,
    pub publish_bytes_sent: AtomicU64,
    /// Deliveries dropped although the receiver was authorised: larger than the receiver's
    /// maximum packet size, or skipped by the router for a subscriber that could not keep up
    /// (`routing::router_drops`).
    pub publish_dropped: AtomicU64,
    /// Accepted sockets.
    pub sockets_accepted: AtomicU64,
    /// CONNECT packets received.
    pub connects_received: AtomicU64,
    /// Persistent sessions ended by their expiry interval.
    pub clients_expired: AtomicU64,
    subscriptions: AtomicI64,
    shared_subscriptions: AtomicI64,
    retained: Mutex<RetainedIndex>,
}

/// The topics the gate holds a retained message for, and their payload sizes.
#[derive(Debug)]
struct RetainedIndex {
    topics: BTreeMap<Box<[u8]>, usize>,
    bytes: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            publish_received: AtomicU64::new(0),
            publish_sent: AtomicU64::new(0),
            publish_bytes_received: AtomicU64::new(0),
            publish_bytes_sent: AtomicU64::new(0),
            publish_dropped: AtomicU64::new(0),
            sockets_accepted: AtomicU64::new(0),
            connects_received: AtomicU64::new(0),
            clients_expired: AtomicU64::new(0),
            subscriptions: AtomicI64::new(0),
            shared_subscriptions: AtomicI64::new(0),
            retained: Mutex::new(RetainedIndex { topics: BTreeMap::new(), bytes: 0 }),
        }
    }

    /// A PUBLISH packet received from a client with `payload` bytes of payload.
    pub fn publish_in(&self, payload: usize) {
        self.publish_received.fetch_add(1, Ordering::Relaxed);
        self.publish_bytes_received.fetch_add(payload as u64, Ordering::Relaxed);
    }

    /// A PUBLISH packet written to a client (counted as a packet sent too).
    pub fn publish_out(&self, payload: usize) {
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
        self.publish_sent.fetch_add(1, Ordering::Relaxed);
        self.publish_bytes_sent.fetch_add(payload as u64, Ordering::Relaxed);
    }

    pub fn packet_in(&self) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn packet_out(&self) {
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    /// A message handed to the router: mirrors the retained index's rule (a retained message
    /// replaces the topic's, an empty one clears it; a message without the retain flag leaves it
    /// alone, empty or not: `routing::envelope`).
    pub fn routed(&self, topic: &[u8], payload: usize, retain: bool) {
        if !retain {
            return;
        }
        let mut index = self.retained.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous =
            if payload == 0 { index.topics.remove(topic) } else { index.topics.insert(topic.into(), payload) };
        index.bytes = index.bytes - previous.unwrap_or(0) as u64 + payload as u64;
    }

    /// Retained messages held by the gate, and their payload bytes.
    pub fn retained(&self) -> (u64, u64) {
        let index = self.retained.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (index.topics.len() as u64, index.bytes)
    }

    /// Subscriptions held by sessions (live or saved), and how many of them are shared.
    pub fn subscriptions(&self) -> (u64, u64) {
        let all = self.subscriptions.load(Ordering::Relaxed).max(0) as u64;
        let shared = self.shared_subscriptions.load(Ordering::Relaxed).max(0) as u64;
        (all, shared)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts one subscription for as long as it exists: created with the subscription a session
/// keeps, dropped with it, whichever path drops it (unsubscribe, clean start, expiry, exit).
#[derive(Debug)]
pub struct SubscriptionCount {
    shared: bool,
}

impl SubscriptionCount {
    pub fn new(shared: bool) -> SubscriptionCount {
        METRICS.subscriptions.fetch_add(1, Ordering::Relaxed);
        if shared {
            METRICS.shared_subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        SubscriptionCount { shared }
    }
}

impl Clone for SubscriptionCount {
    fn clone(&self) -> Self {
        SubscriptionCount::new(self.shared)
    }
}

impl Drop for SubscriptionCount {
    fn drop(&mut self) {
        METRICS.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if self.shared {
            METRICS.shared_subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The security counters (docs/console.md, "Metrics").
pub static SECURITY: LazyLock<SecurityCounters> = LazyLock::new(SecurityCounters::default);

/// Labels of a control command counter: the command's name and `success` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
    pub result: String,
}

/// Logins, ACL decisions, kicks, control commands and password-verification time.
#[derive(Debug)]
pub struct SecurityCounters {
    pub auth_success: AtomicU64,
    pub auth_failure: AtomicU64,
    /// By [`ACL_TYPES`] (publish, receive, subscribe, unsubscribe), then deny/allow:
    /// plain atomics, as this is counted on every check of the hot path.
    acl: [[AtomicU64; 2]; 4],
    /// By [`KICK_REASONS`].
    kicks: [AtomicU64; 3],
    /// `$CONTROL/dynamic-security/v1` commands (MQTT and console alike) by name and result.
    pub control_commands: Family<CommandLabels, Counter>,
    /// Seconds one password verification took on a verifier thread.
    pub password_verification: Histogram,
}

/// Why clients were kicked: a dynsec change, a revoked `password_file` entry, a console kick.
pub const KICK_REASONS: [&str; 3] = ["admin", "credentials_revoked", "console"];
/// The dynsec ACL types counted, as `/metrics` labels them.
pub const ACL_TYPES: [&str; 4] = ["publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"];

impl Default for SecurityCounters {
    fn default() -> Self {
        SecurityCounters {
            auth_success: AtomicU64::new(0),
            auth_failure: AtomicU64::new(0),
            acl: Default::default(),
            kicks: Default::default(),
            control_commands: Family::default(),
            // 1 ms .. ~4 s: a cached verification is microseconds, a PBKDF2/argon2 hash tens of ms.
            password_verification: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
        }
    }
}

impl SecurityCounters {
    /// One ACL check of the type at `acl_type` in [`ACL_TYPES`] (the security chain maps its
    /// accesses onto them: metrics sit below it and know none of its types).
    pub fn acl_decision(&self, acl_type: usize, allowed: bool) {
        if let Some(counters) = self.acl.get(acl_type) {
            counters[usize::from(allowed)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (deny, allow) per entry of [`ACL_TYPES`].
    pub fn acl_decisions(&self) -> [(u64, u64); 4] {
        let read = |pair: &[AtomicU64; 2]| (pair[0].load(Ordering::Relaxed), pair[1].load(Ordering::Relaxed));
        [read(&self.acl[0]), read(&self.acl[1]), read(&self.acl[2]), read(&self.acl[3])]
    }

    /// `count` clients kicked for the reason of [`KICK_REASONS`] at `reason`.
    pub fn kicked(&self, reason: usize, count: usize) {
        if let Some(counter) = self.kicks.get(reason) {
            counter.fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    pub fn kicks(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.kicks[i].load(Ordering::Relaxed))
    }

    pub fn login(&self, accepted: bool) {
        let counter = if accepted { &self.auth_success } else { &self.auth_failure };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client's byte stream (after TLS) whose reads and writes are counted.
pub struct Counted<S> {
    inner: S,
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> Counted<S> {
        Counted { inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            METRICS.bytes_received.fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &result {
            METRICS.bytes_sent.fetch_add(*written as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &result {
            METRICS.bytes_sent.fetch_add(*written as u64, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retained_count_follows_the_retained_index() {
        let metrics = Metrics::new();
        metrics.routed(b"a", 5, true);
        metrics.routed(b"b", 3, true);
        metrics.routed(b"a", 2, true);
        metrics.routed(b"c", 9, false);
        assert_eq!(metrics.retained(), (2, 5));
        metrics.routed(b"b", 0, false); // an empty message without the retain flag leaves it
        assert_eq!(metrics.retained(), (2, 5));
        metrics.routed(b"b", 0, true);
        assert_eq!(metrics.retained(), (1, 2));
        metrics.routed(b"zzz", 0, true);
        assert_eq!(metrics.retained(), (1, 2));
    }
}
