//! Back-pressure: holding publishers while a QoS>0 subscriber is far behind, so that the router's
//! per-filter log does not roll over under it (rumqttd drops the oldest segment and silently
//! moves the subscriber's cursor, QoS 1 included — adapter-notes §8).
//!
//! The gate cannot see a subscriber's lag inside the router, so it bounds it from outside:
//! - [`Pressure`] counts every byte published into the router (as the router sizes messages).
//! - A subscriber is *caught up* when a PINGREQ probe sent through its link comes back while the
//!   router has fewer than [`ROUTER_INFLIGHT`] of its messages in flight (the router answers the
//!   probe in the same pass in which it would forward pending messages). Its lag is then at most
//!   what was published since the probe was sent.
//! - When a subscriber has the router's full window in flight and more than
//!   `gate_backpressure_window` bytes were published since it was last caught up, it is
//!   *behind*: publishers (connections not themselves behind) stop being read until no subscriber
//!   is behind. Their clients then wait on TCP and on their unacknowledged QoS 1/2 messages.
//! - A subscriber behind for longer than `gate_backpressure_max_hold` stops holding publishers
//!   (a client that never acknowledges cannot stop the broker) until it catches up again.
//!
//! Best effort: a probe answer can race with the router's forwards (both are pushed in one router
//! pass, separately), and publishers already mid-read finish their batch; the window defaults to
//! half of a filter's log capacity to leave room for that. QoS 0-only subscribers are not tracked.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::router_link::ROUTER_INFLIGHT;

/// Below this many messages in flight, a subscriber is probed to see whether it caught up.
const PROBE_BELOW: usize = ROUTER_INFLIGHT / 2;

/// Broker-wide back-pressure state. Lock-free on the publish path.
#[derive(Debug)]
pub struct Pressure {
    published: AtomicU64,
    behind: AtomicUsize,
    /// Bumped whenever the last behind subscriber catches up, to wake held publishers.
    released: watch::Sender<u64>,
    window: u64,
    max_hold: Duration,
}

impl Pressure {
    pub fn new(window: u64, max_hold: Duration) -> Self {
        Pressure {
            published: AtomicU64::new(0),
            behind: AtomicUsize::new(0),
            released: watch::Sender::new(0),
            window,
            max_hold,
        }
    }

    /// Counts a message routed into the router (`4 + topic + payload` bytes, the router's size).
    pub fn record_published(&self, bytes: u64) {
        if self.window > 0 {
            self.published.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Whether publishers must wait now.
    pub fn holding(&self) -> bool {
        self.behind.load(Ordering::Relaxed) > 0
    }

    /// A receiver that changes when publishers may continue.
    pub fn watch_release(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    fn enter(&self) {
        self.behind.fetch_add(1, Ordering::AcqRel);
    }

    fn leave(&self) {
        if self.behind.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.released.send_modify(|generation| *generation += 1);
        }
    }
}

/// One connection's view as a subscriber.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Bytes published (broker-wide) when this subscriber was last known caught up.
    caught_up_at: u64,
    probe_sent_at: Option<u64>,
    probe_answered: bool,
    behind_since: Option<Instant>,
    /// Behind for longer than the maximum hold: not holding publishers until caught up.
    stuck: bool,
}

impl Backlog {
    pub fn new(pressure: &Pressure) -> Self {
        Backlog { caught_up_at: pressure.published(), ..Default::default() }
    }

    pub fn is_behind(&self) -> bool {
        self.behind_since.is_some()
    }

    /// When the hold of this subscriber expires, if it is behind.
    pub fn hold_deadline(&self, pressure: &Pressure) -> Option<Instant> {
        self.behind_since.map(|since| since + pressure.max_hold)
    }

    /// Should a probe be sent now? (Call after the client's acks were handed to the router;
    /// the caller pushes a PINGREQ to the link when this returns true.)
    pub fn wants_probe(&mut self, pressure: &Pressure, outstanding: usize) -> bool {
        if pressure.window == 0 || self.probe_sent_at.is_some() || outstanding >= PROBE_BELOW {
            return false;
        }
        self.probe_sent_at = Some(pressure.published());
        true
    }

    /// A probe was already sent by someone else (the link sends one when it is built).
    pub fn probe_sent(&mut self, pressure: &Pressure) {
        self.probe_sent_at = Some(pressure.published());
    }

    /// The router answered the probe (PINGRESP); evaluated at the end of the batch.
    pub fn probe_answered(&mut self) {
        self.probe_answered = true;
    }

    /// Call after each batch of router notifications was handled.
    pub fn after_router_batch(&mut self, pressure: &Pressure, outstanding: usize) {
        if pressure.window == 0 {
            return;
        }
        if std::mem::take(&mut self.probe_answered)
            && let Some(sent_at) = self.probe_sent_at.take()
            && outstanding < ROUTER_INFLIGHT
        {
            self.caught_up_at = sent_at;
            self.stuck = false;
            if self.behind_since.take().is_some() {
                pressure.leave();
            }
        }
        let lag_bound = pressure.published().saturating_sub(self.caught_up_at);
        if self.behind_since.is_none() && !self.stuck && outstanding >= ROUTER_INFLIGHT && lag_bound >= pressure.window
        {
            self.behind_since = Some(Instant::now());
            pressure.enter();
        }
    }

    /// The hold deadline passed: stop holding publishers for this subscriber.
    pub fn hold_expired(&mut self, pressure: &Pressure) {
        if self.behind_since.take().is_some() {
            self.stuck = true;
            pressure.leave();
        }
    }

    /// The connection ends.
    pub fn close(&mut self, pressure: &Pressure) {
        if self.behind_since.take().is_some() {
            pressure.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturated_subscriber_holds_publishers_until_it_catches_up() {
        let pressure = Pressure::new(1000, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure);
        let mut released = pressure.watch_release();
        pressure.record_published(600);
        backlog.after_router_batch(&pressure, ROUTER_INFLIGHT);
        assert!(!pressure.holding(), "under the window");
        pressure.record_published(600);
        backlog.after_router_batch(&pressure, ROUTER_INFLIGHT);
        assert!(pressure.holding() && backlog.is_behind());

        // acks come in, the probe goes out, the router still has a backlog: still behind
        assert!(backlog.wants_probe(&pressure, 10));
        assert!(!backlog.wants_probe(&pressure, 10), "one probe at a time");
        backlog.probe_answered();
        backlog.after_router_batch(&pressure, ROUTER_INFLIGHT);
        assert!(pressure.holding());

        // the next probe finds the subscriber caught up
        assert!(backlog.wants_probe(&pressure, 0));
        backlog.probe_answered();
        backlog.after_router_batch(&pressure, 3);
        assert!(!pressure.holding() && !backlog.is_behind());
        assert!(released.has_changed().unwrap());
        released.mark_unchanged();
    }

    #[test]
    fn a_stuck_subscriber_stops_holding() {
        let pressure = Pressure::new(10, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure);
        pressure.record_published(100);
        backlog.after_router_batch(&pressure, ROUTER_INFLIGHT);
        assert!(pressure.holding());
        backlog.hold_expired(&pressure);
        assert!(!pressure.holding());
        backlog.after_router_batch(&pressure, ROUTER_INFLIGHT);
        assert!(!pressure.holding(), "stays released until caught up");
    }

    #[test]
    fn disabled_window_never_holds() {
        let pressure = Pressure::new(0, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure);
        pressure.record_published(1 << 40);
        backlog.after_router_batch(&pressure, ROUTER_INFLIGHT);
        assert!(!pressure.holding());
        assert!(!backlog.wants_probe(&pressure, 0));
    }
}
