//! Back-pressure: holding publishers while a QoS>0 subscriber may be far behind, so that the
//! router's per-filter log does not roll over under it (rumqttd drops the oldest segment and
//! silently moves the subscriber's cursor, QoS 1 included — adapter-notes §8).
//!
//! The gate cannot see a subscriber's lag inside the router, so it bounds it from outside:
//! - [`Pressure`] counts every byte published into the router (as the router sizes messages).
//!   A subscriber's lag is at most what was published since it was last *caught up*.
//! - *Caught up* is shown by a probe through the subscriber's link: two PINGREQs. The router
//!   answers the first in the same pass in which it forwards what is pending for the link (right
//!   after the answer), and the second after that pass. If the router had room in its in-flight
//!   window at the first answer and the messages between the two answers did not fill that room,
//!   they were everything pending: the lag at the first probe was their size.
//! - Every connection with a QoS>0 subscription registers a *hold point*: the published count at
//!   which its lag could reach `gate_backpressure_window` (caught-up count + window). Publishers
//!   compare the published count with the lowest hold point — two atomic loads per packet — and
//!   stop reading once it is reached, until that subscriber shows it caught up (their clients then
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
//! once per quarter window of traffic per subscriber, never per message. Limits: a publisher
//! finishes the packet it is handling when the hold begins (the window defaults to half of a
//! filter's log capacity to leave room for that), and only non-shared QoS>0 subscriptions are
//! tracked (QoS 0 may be dropped anyway; a shared group's log is read one message per member in
//! turn, which a probe cannot tell from an empty one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::router_link::ROUTER_INFLIGHT;

/// Below this many messages in flight, a subscriber can be probed.
const PROBE_BELOW: usize = ROUTER_INFLIGHT / 2;

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

/// A probe on its way through the router. A probe is two PINGREQs: the router answers the first
/// in the pass in which it forwards what is pending (right after the answer), and the second
/// after that pass has finished — so everything between the two answers is what was pending.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// First PINGREQ sent.
    First {
        /// Bytes published (broker-wide) when it was sent.
        published_at: u64,
        /// QoS>0 messages in flight (unacknowledged to the router) when it was sent.
        in_flight_at_send: usize,
        /// QoS>0 forwards received since (they left the router before the answer).
        forwards_before_answer: usize,
    },
    /// First answer received, second PINGREQ sent.
    Second {
        published_at: u64,
        /// Room the router had in its in-flight window when it answered the first.
        room: usize,
        /// QoS>0 forwards and bytes (all forwards) received since the first answer.
        forwards: usize,
        bytes: u64,
    },
}

/// What the caller must do after a probe answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStep {
    /// Push another PINGREQ to the link now.
    SendSecond,
    Done,
}

/// One connection's state as a subscriber.
#[derive(Debug)]
pub struct Backlog {
    conn_id: u64,
    /// Registered: the connection has a QoS>0 subscription.
    tracked: bool,
    /// Bytes published (broker-wide) when this subscriber's lag was last known to be zero.
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

    /// Records a probe's first PINGREQ pushed to the link.
    pub fn probe_sent(&mut self, pressure: &Pressure, in_flight: usize) {
        self.probe = Some(Probe::First {
            published_at: pressure.published(),
            in_flight_at_send: in_flight,
            forwards_before_answer: 0,
        });
    }

    /// Should a probe start now (`requested`: publishers near a hold point asked)? If so it is
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

    /// A message from the router: `qos > 0` counts against the router's in-flight window;
    /// `size` as the router counts it (4 + topic + payload).
    pub fn forwarded(&mut self, qos: u8, size: usize) {
        match self.probe.as_mut() {
            Some(Probe::First { forwards_before_answer, .. }) if qos > 0 => *forwards_before_answer += 1,
            Some(Probe::Second { forwards, bytes, .. }) => {
                *forwards += usize::from(qos > 0);
                *bytes += size as u64;
            }
            _ => {}
        }
    }

    /// The router paused the link (its buffer was full), so it may have stopped forwarding early:
    /// the probe in progress proves nothing.
    pub fn router_paused(&mut self) {
        if let Some(Probe::Second { room, forwards, .. }) = self.probe.as_mut() {
            *forwards = (*forwards).max(*room);
        }
    }

    /// The router answered a probe PINGREQ (PINGRESP).
    pub fn probe_answered(&mut self, pressure: &Pressure) -> ProbeStep {
        match self.probe.take() {
            Some(Probe::First { published_at, in_flight_at_send, forwards_before_answer }) => {
                let router_in_flight = in_flight_at_send + forwards_before_answer;
                if router_in_flight >= ROUTER_INFLIGHT {
                    // The router had no room to show what is pending: inconclusive.
                    return ProbeStep::Done;
                }
                let room = ROUTER_INFLIGHT - router_in_flight;
                self.probe = Some(Probe::Second { published_at, room, forwards: 0, bytes: 0 });
                ProbeStep::SendSecond
            }
            Some(Probe::Second { published_at, room, forwards, bytes }) => {
                if forwards < room {
                    // The router forwarded everything it had: that was the whole lag.
                    self.caught_up_at = published_at.saturating_sub(bytes).max(self.caught_up_at);
                    self.last_progress = Instant::now();
                    self.stuck = false;
                    if self.tracked {
                        pressure.set_hold_point(self.conn_id, Some(self.hold_point(pressure)));
                    }
                }
                ProbeStep::Done
            }
            None => ProbeStep::Done,
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

    /// Runs a probe whose first answer finds `in_flight` messages in flight and after which the
    /// router forwards `forwards` messages of `size` bytes before the second answer.
    fn probe(backlog: &mut Backlog, pressure: &Pressure, in_flight: usize, forwards: usize, size: usize) {
        backlog.probe_sent(pressure, in_flight);
        assert_eq!(backlog.probe_answered(pressure), ProbeStep::SendSecond);
        for _ in 0..forwards {
            backlog.forwarded(1, size);
        }
        assert_eq!(backlog.probe_answered(pressure), ProbeStep::Done);
    }

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

        // The router fills all the room it had: inconclusive.
        probe(&mut backlog, &pressure, 10, 90, 10);
        assert!(pressure.holding());
        // Nothing pending any more.
        probe(&mut backlog, &pressure, 0, 0, 10);
        assert!(!pressure.holding() && !backlog.exempt(&pressure));
        assert!(released.has_changed().unwrap());
    }

    #[test]
    fn a_small_remaining_lag_counts_against_the_next_window() {
        let pressure = Pressure::new(1000, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure, 1);
        backlog.track(&pressure, true);
        pressure.record_published(1200);
        assert!(pressure.holding());
        // 20 messages of 10 bytes were still pending: caught up at 1200 - 200.
        probe(&mut backlog, &pressure, 30, 20, 10);
        assert!(!pressure.holding());
        pressure.record_published(799);
        assert!(!pressure.holding());
        pressure.record_published(1);
        assert!(pressure.holding(), "hold point = 1000 + window");
    }

    #[test]
    fn a_first_answer_with_a_full_window_is_inconclusive() {
        let pressure = Pressure::new(10, Duration::from_secs(10));
        let mut backlog = Backlog::new(&pressure, 1);
        backlog.track(&pressure, true);
        pressure.record_published(100);
        assert!(backlog.wants_probe(&pressure, 40, false));
        for _ in 0..60 {
            backlog.forwarded(1, 10);
        }
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::Done);
        assert!(pressure.holding());
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
        assert!(!backlog.wants_probe(&pressure, 0, true), "one probe at a time");
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::SendSecond);
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::Done);
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
