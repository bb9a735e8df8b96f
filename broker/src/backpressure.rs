//! Back-pressure: holding publishers while a QoS>0 subscriber may be far behind, so that the
//! router's per-filter log does not roll over under it (rumqttd drops the oldest segment and
//! silently moves the subscriber's cursor, QoS 1 included — adapter-notes §8).
//!
//! The gate cannot see a subscriber's lag inside the router, so it bounds it from outside:
//! - [`Pressure`] counts every byte published into the router (as the router sizes messages).
//!   A subscriber's lag is at most what was published since it was last *caught up*.
//! - *Caught up* is shown by a probe: a PINGREQ sent through the subscriber's link. The router
//!   answers it (PINGRESP) in the same pass in which it forwards what is pending for the link,
//!   right after the answer. If the router had room in its in-flight window when it answered and
//!   no message follows the answer within a short grace period, nothing was pending.
//! - Every connection with a QoS>0 subscription registers a *hold point*: the published count at
//!   which its lag could reach `gate_backpressure_window` (caught-up count + window). Publishers
//!   compare the published count with the lowest hold point — two atomic loads per packet — and
//!   stop reading once it is reached, until that subscriber shows it caught up (its clients then
//!   wait on TCP and on their unacknowledged QoS 1/2 messages). The subscriber whose hold point
//!   is reached is never held itself: it must keep reading its client's acknowledgements.
//! - Subscribers are asked to probe before their hold point is reached (half a window earlier),
//!   so an idle subscriber moves its hold point forward without ever holding anybody.
//! - A subscriber at its hold point whose client acknowledges nothing for
//!   `gate_backpressure_max_hold` is dropped from the registry (a client that never
//!   acknowledges cannot stop the broker) until it catches up; it may then lose messages as
//!   rumqttd does.
//!
//! The registry is a mutex touched when a subscriber registers, catches up or leaves — at most
//! once per quarter window of traffic per subscriber, never per message. Best effort: a router
//! thread paused longer than the grace period between answering a probe and forwarding could make
//! a lagging subscriber look caught up, and a publisher finishes the packet it is handling; the
//! window defaults to half of a filter's log capacity to leave room for that. Subscribers with
//! only QoS 0 subscriptions are not tracked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::router_link::ROUTER_INFLIGHT;

/// Below this many messages in flight, a subscriber can be probed.
const PROBE_BELOW: usize = ROUTER_INFLIGHT / 2;
/// How long after a probe's answer a forward still counts as "the router had more".
const GRACE: Duration = Duration::from_millis(20);

/// Broker-wide back-pressure state.
#[derive(Debug)]
pub struct Pressure {
    published: AtomicU64,
    /// The lowest registered hold point (`u64::MAX`: none).
    hold_at: AtomicU64,
    /// The hold point for which subscribers were last asked to probe.
    probes_requested_for: AtomicU64,
    /// (connection id, hold point) of every tracked subscriber.
    registered: Mutex<Vec<(u64, u64)>>,
    /// Bumped whenever the lowest hold point moves up, to wake held publishers.
    released: watch::Sender<u64>,
    /// Bumped to ask tracked subscribers to probe.
    probe_requests: watch::Sender<u64>,
    window: u64,
    max_hold: Duration,
}

impl Pressure {
    pub fn new(window: u64, max_hold: Duration) -> Self {
        Pressure {
            published: AtomicU64::new(0),
            hold_at: AtomicU64::new(u64::MAX),
            probes_requested_for: AtomicU64::new(u64::MAX),
            registered: Mutex::new(Vec::new()),
            released: watch::Sender::new(0),
            probe_requests: watch::Sender::new(0),
            window,
            max_hold,
        }
    }

    pub fn enabled(&self) -> bool {
        self.window > 0
    }

    /// Counts a message routed into the router (`4 + topic + payload` bytes, the router's size).
    pub fn record_published(&self, bytes: u64) {
        if self.enabled() {
            self.published.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Whether publishers must wait now.
    pub fn holding(&self) -> bool {
        self.published() >= self.hold_at.load(Ordering::Relaxed)
    }

    /// Called by publishers after a batch: asks subscribers to probe when the lowest hold point
    /// is half a window away.
    pub fn request_probes_if_near(&self) {
        let hold_at = self.hold_at.load(Ordering::Relaxed);
        if hold_at == u64::MAX || self.published() < hold_at.saturating_sub(self.window / 2) {
            return;
        }
        if self.probes_requested_for.swap(hold_at, Ordering::AcqRel) != hold_at {
            self.probe_requests.send_modify(|generation| *generation += 1);
        }
    }

    /// Changes when publishers may continue.
    pub fn watch_release(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// Changes when tracked subscribers should probe.
    pub fn watch_probe_requests(&self) -> watch::Receiver<u64> {
        self.probe_requests.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(u64, u64)>> {
        self.registered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers, moves or (with `None`) removes a connection's hold point.
    fn set_hold_point(&self, conn_id: u64, hold_point: Option<u64>) {
        let mut registered = self.lock();
        registered.retain(|(id, _)| *id != conn_id);
        if let Some(point) = hold_point {
            registered.push((conn_id, point));
        }
        let lowest = registered.iter().map(|(_, point)| *point).min().unwrap_or(u64::MAX);
        let previous = self.hold_at.swap(lowest, Ordering::AcqRel);
        drop(registered);
        if lowest > previous {
            self.released.send_modify(|generation| *generation += 1);
        }
    }
}

/// A probe on its way through the router.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// Bytes published (broker-wide) when it was sent.
    published_at: u64,
    /// QoS>0 messages in flight (unacknowledged to the router) when it was sent.
    in_flight_at_send: usize,
    /// QoS>0 forwards received since it was sent (they left the router before the answer).
    forwards_before_answer: usize,
    /// When the answer came, if the router had room to forward more then.
    answered: Option<Instant>,
    /// Forwards received after the answer.
    forwards_after_answer: usize,
}

/// One connection's state as a subscriber.
#[derive(Debug)]
pub struct Backlog {
    conn_id: u64,
    /// Registered: the connection has a QoS>0 subscription.
    tracked: bool,
    /// Bytes published (broker-wide) when this subscriber was last known caught up.
    caught_up_at: u64,
    probe: Option<Probe>,
    /// Last sign of life while tracked: an acknowledgement or a catch-up.
    last_progress: Instant,
    /// Dropped from the registry for not acknowledging: not holding anybody until caught up.
    stuck: bool,
}

impl Backlog {
    pub fn new(pressure: &Pressure, conn_id: u64) -> Self {
        Backlog {
            conn_id,
            tracked: false,
            caught_up_at: pressure.published(),
            probe: None,
            last_progress: Instant::now(),
            stuck: false,
        }
    }

    fn hold_point(&self, pressure: &Pressure) -> u64 {
        self.caught_up_at.saturating_add(pressure.window)
    }

    fn lag_bound(&self, pressure: &Pressure) -> u64 {
        pressure.published().saturating_sub(self.caught_up_at)
    }

    pub fn tracked(&self) -> bool {
        self.tracked
    }

    /// Starts or stops tracking (the connection has QoS>0 subscriptions or not).
    pub fn track(&mut self, pressure: &Pressure, has_qos_subscriptions: bool) {
        if !pressure.enabled() || has_qos_subscriptions == self.tracked {
            return;
        }
        self.tracked = has_qos_subscriptions;
        if has_qos_subscriptions {
            self.caught_up_at = pressure.published();
            self.last_progress = Instant::now();
            self.stuck = false;
            pressure.set_hold_point(self.conn_id, Some(self.hold_point(pressure)));
        } else {
            pressure.set_hold_point(self.conn_id, None);
        }
    }

    /// This connection is the reason publishers are held: it must not be held itself.
    pub fn exempt(&self, pressure: &Pressure) -> bool {
        self.tracked && !self.stuck && pressure.published() >= self.hold_point(pressure)
    }

    /// The client acknowledged something.
    pub fn progress(&mut self) {
        if self.tracked {
            self.last_progress = Instant::now();
        }
    }

    /// Records a probe sent through the link (a PINGREQ pushed after the client's acks).
    pub fn probe_sent(&mut self, pressure: &Pressure, in_flight: usize) {
        self.probe = Some(Probe {
            published_at: pressure.published(),
            in_flight_at_send: in_flight,
            forwards_before_answer: 0,
            answered: None,
            forwards_after_answer: 0,
        });
    }

    /// Should a probe be sent now (`requested`: publishers near a hold point asked)? If so it is
    /// recorded; the caller pushes a PINGREQ.
    pub fn wants_probe(&mut self, pressure: &Pressure, in_flight: usize, requested: bool) -> bool {
        if !self.tracked || self.probe.is_some() || in_flight >= PROBE_BELOW {
            return false;
        }
        let lag = self.lag_bound(pressure);
        let worth_it = if requested { lag >= pressure.window / 2 } else { lag >= pressure.window / 4 };
        if !worth_it {
            return false;
        }
        self.probe_sent(pressure, in_flight);
        true
    }

    /// A message from the router (`qos > 0`: it counts against the router's in-flight window).
    pub fn forwarded(&mut self, qos: u8) {
        if let Some(probe) = self.probe.as_mut() {
            match probe.answered {
                None if qos > 0 => probe.forwards_before_answer += 1,
                None => {}
                Some(_) => probe.forwards_after_answer += 1,
            }
        }
    }

    /// The router answered the probe (PINGRESP).
    pub fn probe_answered(&mut self) {
        let Some(probe) = self.probe.as_mut() else { return };
        let router_in_flight = probe.in_flight_at_send + probe.forwards_before_answer;
        if router_in_flight >= ROUTER_INFLIGHT || probe.answered.is_some() {
            // The router had no room to show a backlog: inconclusive, probe again later.
            self.probe = None;
        } else {
            probe.answered = Some(Instant::now());
        }
    }

    /// When the answered probe can be judged.
    pub fn probe_deadline(&self) -> Option<Instant> {
        self.probe.and_then(|p| p.answered).map(|answered| answered + GRACE)
    }

    /// Judges the answered probe once its grace period is over.
    pub fn judge_probe(&mut self, pressure: &Pressure) {
        let Some(probe) = self.probe.take() else { return };
        if probe.answered.is_none() || probe.forwards_after_answer > 0 {
            return;
        }
        self.caught_up_at = probe.published_at;
        self.last_progress = Instant::now();
        self.stuck = false;
        if self.tracked {
            pressure.set_hold_point(self.conn_id, Some(self.hold_point(pressure)));
        }
    }

    /// When to check whether this subscriber holds publishers without making progress.
    pub fn hold_deadline(&self, pressure: &Pressure) -> Option<Instant> {
        (self.tracked && !self.stuck).then(|| self.last_progress + pressure.max_hold)
    }

    /// No progress for the maximum hold: if this subscriber is holding publishers, let them go.
    pub fn hold_expired(&mut self, pressure: &Pressure) {
        if !self.exempt(pressure) {
            self.last_progress = Instant::now();
            return;
        }
        tracing::info!(conn_id = self.conn_id, "subscriber not acknowledging: no longer holding publishers");
        self.stuck = true;
        pressure.set_hold_point(self.conn_id, None);
    }

    /// The connection ends.
    pub fn close(&mut self, pressure: &Pressure) {
        if std::mem::take(&mut self.tracked) {
            pressure.set_hold_point(self.conn_id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_are_held_at_the_window_until_the_subscriber_catches_up() {
        let pressure = Pressure::new(1000, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure, 1);
        let released = pressure.watch_release();
        backlog.track(&pressure, true);
        pressure.record_published(600);
        assert!(!pressure.holding() && !backlog.exempt(&pressure), "under the window");
        pressure.record_published(600);
        assert!(pressure.holding(), "holds without the subscriber's task running");
        assert!(backlog.exempt(&pressure));

        // The client acknowledged most; a probe goes out; the router answers and keeps forwarding.
        assert!(backlog.wants_probe(&pressure, 10, false));
        assert!(!backlog.wants_probe(&pressure, 10, false), "one probe at a time");
        backlog.forwarded(1);
        backlog.probe_answered();
        backlog.forwarded(1);
        backlog.judge_probe(&pressure);
        assert!(pressure.holding(), "forwards after the answer: still a backlog");

        // Next probe: the router answers and nothing follows.
        assert!(backlog.wants_probe(&pressure, 0, false));
        backlog.probe_answered();
        assert!(backlog.probe_deadline().is_some());
        backlog.judge_probe(&pressure);
        assert!(!pressure.holding() && !backlog.exempt(&pressure));
        assert!(released.has_changed().unwrap());
    }

    #[test]
    fn idle_subscribers_are_asked_to_probe_before_their_hold_point() {
        let pressure = Pressure::new(1000, Duration::from_secs(10));
        let mut requests = pressure.watch_probe_requests();
        let mut backlog = Backlog::new(&pressure, 1);
        backlog.track(&pressure, true);
        pressure.record_published(400);
        pressure.request_probes_if_near();
        assert!(!requests.has_changed().unwrap());
        pressure.record_published(200);
        pressure.request_probes_if_near();
        assert!(requests.has_changed().unwrap());
        requests.mark_unchanged();
        pressure.request_probes_if_near();
        assert!(!requests.has_changed().unwrap(), "once per hold point");
        assert!(backlog.wants_probe(&pressure, 0, true));
        backlog.probe_answered();
        backlog.judge_probe(&pressure);
        pressure.record_published(900);
        assert!(!pressure.holding(), "the hold point moved forward");
    }

    #[test]
    fn the_lowest_hold_point_wins() {
        let pressure = Pressure::new(100, Duration::from_secs(10));
        let mut early = Backlog::new(&pressure, 1);
        early.track(&pressure, true);
        pressure.record_published(50);
        let mut late = Backlog::new(&pressure, 2);
        late.track(&pressure, true);
        pressure.record_published(60);
        assert!(pressure.holding(), "the early subscriber's window is used up");
        early.close(&pressure);
        assert!(!pressure.holding(), "the late one has room left");
        late.track(&pressure, false);
        pressure.record_published(1000);
        assert!(!pressure.holding(), "untracked");
    }

    #[test]
    fn a_probe_answered_with_a_full_window_is_inconclusive() {
        let pressure = Pressure::new(10, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure, 1);
        backlog.track(&pressure, true);
        pressure.record_published(100);
        assert!(backlog.wants_probe(&pressure, 40, false));
        for _ in 0..60 {
            backlog.forwarded(1);
        }
        backlog.probe_answered();
        assert!(backlog.probe_deadline().is_none());
        backlog.judge_probe(&pressure);
        assert!(pressure.holding());
    }

    #[test]
    fn a_subscriber_without_progress_stops_holding() {
        let pressure = Pressure::new(10, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure, 1);
        backlog.track(&pressure, true);
        pressure.record_published(100);
        assert!(pressure.holding());
        backlog.hold_expired(&pressure);
        assert!(!pressure.holding());
        assert!(backlog.hold_deadline(&pressure).is_none(), "stuck until caught up");
    }

    #[test]
    fn disabled_window_never_holds() {
        let pressure = Pressure::new(0, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure, 1);
        backlog.track(&pressure, true);
        pressure.record_published(1 << 40);
        assert!(!pressure.holding());
        assert!(!backlog.wants_probe(&pressure, 0, true));
    }
}
