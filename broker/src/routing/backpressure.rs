//! Back-pressure: holding publishers while a subscriber may be far behind, so that the router's
//! per-filter log does not roll over under it (rumqttd drops the oldest segment and silently
//! moves the subscriber's cursor, QoS 0 and 1 alike — docs/rumqttd.md §8). QoS 0 subscribers are
//! held for too: a burst that a subscriber keeps up with on average must not lose a third of its
//! messages because it arrived faster than one wake-up of the subscriber.
//!
//! The gate cannot see a subscriber's lag inside the router, so it bounds it from outside:
//! - [`Pressure`] counts every byte published into the router (as the router sizes messages),
//!   in total and per *lane*: a message to `site/dev7/cmd` is counted in the lanes of `site`,
//!   `site/dev7` and `site/dev7/cmd` (prefixes up to five levels; a lane is a hash slot, so
//!   unrelated prefixes may share one). A subscriber is bounded by the lane of the longest literal
//!   prefix all its filters share (`site/dev7/#` and `site/dev7/cmd`: `site/dev7`), or by the
//!   total when there is none (`#`, `+/dev7/cmd`). Without lanes, every subscriber of a fleet
//!   would be bounded by all the fleet's traffic and have to prove itself caught up every half
//!   window of it, and a stalled device would hold every publisher.
//! - A subscriber's lag is at most what was published into its lane since it was last *caught
//!   up*. That is shown by a probe through the subscriber's link: two PINGREQs. The router
//!   answers the first in the same pass in which it forwards what is pending for the link (right
//!   after the answer), and the second after that pass. If the router had room in its in-flight
//!   window at the first answer and the messages between the two answers did not fill that room,
//!   they were everything pending: the lag at the first probe was their size.
//! - Every connection with a routed subscription registers a *hold point* in its lane: the lane's
//!   count at which its lag could reach `gate_backpressure_window` (caught-up count + window).
//!   After routing a PUBLISH, a publisher compares the counts of the message's lanes with their
//!   lowest hold points and, once one is reached, stops reading until that lane may continue
//!   (its client then waits on TCP and on its unacknowledged QoS 1/2 messages). The subscriber whose hold point is reached is never held itself: it must keep
//!   reading its client's acknowledgements.
//! - Subscribers are asked to probe before their hold point is reached (half a window earlier),
//!   so an idle subscriber moves its hold point forward without ever holding anybody; only the
//!   subscribers of the lane concerned are asked.
//! - Overload policy: a subscriber at its hold point that makes no progress for
//!   `gate_backpressure_max_hold` — no acknowledgement from its client and no catch-up (a QoS 0
//!   subscriber has only catch-ups) — is dropped from the registry (a client that cannot keep up
//!   cannot stop the broker) until it catches up; it then loses messages as rumqttd does, and
//!   `router_drops` counts and logs them. A client that stops reading altogether is disconnected
//!   by `gate_write_timeout` first.
//!
//! A lane's registry is a mutex-guarded ordered set touched when a subscriber registers, catches
//! up or leaves — at most once per quarter window of its lane's traffic per subscriber, never per
//! message. Limits: a publisher finishes the packet it is handling when the hold begins (the
//! window defaults to half of a filter's log capacity to leave room for that), and only
//! non-shared subscriptions are tracked (a shared group's log is read one message per member in
//! turn, which a probe cannot tell from an empty one).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::routing::router_link::ROUTER_INFLIGHT;

/// Below this many messages in flight, a subscriber can be probed.
const PROBE_BELOW: usize = ROUTER_INFLIGHT / 2;

/// Number of topic lanes (a power of two; plus one lane for the total).
const LANES: usize = 8192;
/// A publish is counted in the lanes of its first `PREFIX_LEVELS` prefixes.
const PREFIX_LEVELS: usize = 5;

/// Which byte count bounds a subscriber's lag: a topic prefix's lane, or the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane(usize);

impl Lane {
    /// The count of everything published.
    pub const TOTAL: Lane = Lane(LANES);
    /// How many lanes there are, the total included ([`Lane::index`] is below it).
    pub const COUNT: usize = LANES + 1;

    /// This lane's place among [`Lane::COUNT`] (for a table with an entry per lane).
    pub fn index(self) -> usize {
        self.0
    }

    /// The lane of the topic prefix `prefix` (whole levels, no trailing `/`).
    fn of_prefix(prefix: &[u8]) -> Lane {
        Lane(lane_hash(prefix))
    }

    /// The lane bounding a subscriber with these filters: the one of the longest prefix of
    /// literal levels (up to five) that every filter starts with, or the total when there is
    /// none (a filter starting with a wildcard, or filters with different first levels). Every
    /// topic those filters match starts with that prefix, so it is counted in that lane.
    pub fn of_filters<'a>(filters: impl IntoIterator<Item = &'a str>) -> Lane {
        let mut common: Option<Vec<&str>> = None;
        for filter in filters {
            let literal = filter.split('/').take_while(|level| *level != "+" && *level != "#").take(PREFIX_LEVELS);
            common = Some(match common {
                None => literal.collect(),
                Some(known) => known.into_iter().zip(literal).take_while(|(a, b)| a == b).map(|(a, _)| a).collect(),
            });
        }
        match common {
            Some(levels) if !levels.is_empty() => Lane::of_prefix(levels.join("/").as_bytes()),
            _ => Lane::TOTAL,
        }
    }
}

/// The lanes a topic is counted in: those of its first one to five levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLanes {
    lanes: [Lane; PREFIX_LEVELS],
    len: usize,
}

impl TopicLanes {
    pub fn of(topic: &[u8]) -> TopicLanes {
        let mut lanes = [Lane::TOTAL; PREFIX_LEVELS];
        let mut len = 0;
        for (at, byte) in topic.iter().enumerate() {
            if *byte == b'/' {
                lanes[len] = Lane::of_prefix(&topic[..at]);
                len += 1;
                if len == PREFIX_LEVELS {
                    return TopicLanes { lanes, len };
                }
            }
        }
        lanes[len] = Lane::of_prefix(topic);
        TopicLanes { lanes, len: len + 1 }
    }

    /// The topic's lanes, then the total.
    pub fn with_total(&self) -> impl Iterator<Item = Lane> + '_ {
        self.lanes[..self.len].iter().copied().chain([Lane::TOTAL])
    }

    /// Whether a message to this topic is counted in `lane`.
    pub fn counted_in(&self, lane: Lane) -> bool {
        self.with_total().any(|counted| counted == lane)
    }
}

/// FNV-1a, reduced to a lane index (stable, no per-process seed: lanes need not resist attack,
/// a crafted collision only makes two prefixes share a lane).
fn lane_hash(prefix: &[u8]) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash as usize) & (LANES - 1)
}

/// One lane's count, hold points and probe requests.
#[derive(Debug)]
struct LaneState {
    published: AtomicU64,
    /// The lowest registered hold point (`u64::MAX`: none).
    hold_at: AtomicU64,
    /// The hold point for which subscribers were last asked to probe.
    probes_requested_for: AtomicU64,
    /// (hold point, connection id) of every subscriber tracked in this lane.
    registered: Mutex<BTreeSet<(u64, u64)>>,
    /// Bumped to ask this lane's subscribers to probe (made when the first one listens).
    probe_requests: OnceLock<watch::Sender<u64>>,
}

impl LaneState {
    fn new() -> Self {
        LaneState {
            published: AtomicU64::new(0),
            hold_at: AtomicU64::new(u64::MAX),
            probes_requested_for: AtomicU64::new(u64::MAX),
            registered: Mutex::new(BTreeSet::new()),
            probe_requests: OnceLock::new(),
        }
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    fn holding(&self) -> bool {
        self.published() >= self.hold_at.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<(u64, u64)>> {
        self.registered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Broker-wide back-pressure state.
#[derive(Debug)]
pub struct Pressure {
    /// `LANES` topic lanes, then the total.
    lanes: Box<[LaneState]>,
    /// Bumped whenever a lane's lowest hold point moves up, to wake held publishers.
    released: watch::Sender<u64>,
    window: u64,
    max_hold: Duration,
    /// Messages published in total (counted with their bytes by `record_published`).
    messages: AtomicU64,
    /// The hold point in messages of the one reader that counts them (the fleet hub, see
    /// [`Pressure::reader_read_messages`]); `u64::MAX`: none.
    message_hold_at: AtomicU64,
}

impl Pressure {
    pub fn new(window: u64, max_hold: Duration) -> Self {
        Pressure {
            lanes: (0..=LANES).map(|_| LaneState::new()).collect(),
            released: watch::Sender::new(0),
            window,
            max_hold,
            messages: AtomicU64::new(0),
            message_hold_at: AtomicU64::new(u64::MAX),
        }
    }

    /// The back-pressure `gate_backpressure_window` and `gate_backpressure_max_hold` ask for.
    pub fn for_config(config: &crate::config::Config) -> Arc<Pressure> {
        Arc::new(Pressure::new(config.gate.backpressure_window, config.gate.backpressure_max_hold))
    }

    pub fn enabled(&self) -> bool {
        self.window > 0
    }

    fn lane(&self, lane: Lane) -> &LaneState {
        &self.lanes[lane.0]
    }

    /// Counts a message routed into the router (`4 + topic + payload` bytes, the router's size)
    /// in its topic's lanes and the total and, when a subscriber of one of them is half a window
    /// from its hold point, asks that lane's subscribers to probe. Returns whether one of those
    /// lanes is now at a hold point (what [`Pressure::holding`] would answer).
    pub fn record_published(&self, lanes: &TopicLanes, bytes: u64) -> bool {
        if !self.enabled() {
            return false;
        }
        let messages = self.messages.fetch_add(1, Ordering::Relaxed) + 1;
        let mut holding = messages >= self.message_hold_at.load(Ordering::Relaxed);
        for lane in lanes.with_total() {
            let state = self.lane(lane);
            let published = state.published.fetch_add(bytes, Ordering::Relaxed) + bytes;
            let hold_at = state.hold_at.load(Ordering::Relaxed);
            holding |= published >= hold_at;
            if hold_at != u64::MAX
                && published >= hold_at.saturating_sub(self.window / 2)
                && state.probes_requested_for.swap(hold_at, Ordering::AcqRel) != hold_at
                && let Some(requests) = state.probe_requests.get()
            {
                requests.send_modify(|generation| *generation += 1);
            }
        }
        holding
    }

    /// Whether a publisher must wait before routing more into these lanes.
    pub fn holding(&self, lanes: &TopicLanes) -> bool {
        self.enabled()
            && (self.messages.load(Ordering::Relaxed) >= self.message_hold_at.load(Ordering::Relaxed)
                || lanes.with_total().any(|lane| self.lane(lane).holding()))
    }

    /// Changes when publishers may continue.
    pub fn watch_release(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// Changes when the subscribers of `lane` should probe.
    pub fn watch_probe_requests(&self, lane: Lane) -> watch::Receiver<u64> {
        self.lane(lane).probe_requests.get_or_init(|| watch::Sender::new(0)).subscribe()
    }

    /// The window (`gate_backpressure_window`).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// For a reader that counts exactly what it has consumed of everything published (the fleet
    /// hub, `routing::hub`, which reads every routed message through one link): registers its
    /// hold point in the total, `consumed + window` (`None`: removes it; `window` is the reader's
    /// own). `reader` must differ from every connection id. Returns the point registered.
    pub fn reader_consumed(&self, reader: u64, before: Option<u64>, consumed: Option<u64>, window: u64) -> Option<u64> {
        let point = consumed.map(|consumed| consumed.saturating_add(window));
        self.move_hold_point(Lane::TOTAL, reader, before, point);
        point
    }

    /// Bytes published in total so far (as [`Pressure::record_published`] counts them).
    pub fn published_total(&self) -> u64 {
        self.lane(Lane::TOTAL).published()
    }

    /// Messages published in total (as [`Pressure::record_published`] counts them).
    pub fn published_messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// For the one reader that counts the messages it has read of everything published (the
    /// fleet hub, whose subscribers' queues are bounded in messages): every publisher is held
    /// once `hold_at` messages have been published (`None`: never).
    pub fn reader_read_messages(&self, hold_at: Option<u64>) {
        let hold_at = hold_at.unwrap_or(u64::MAX);
        let previous = self.message_hold_at.swap(hold_at, Ordering::AcqRel);
        // Only publishers that reached the previous point can be waiting for this.
        if hold_at > previous && self.messages.load(Ordering::Relaxed) >= previous {
            self.released.send_modify(|generation| *generation += 1);
        }
    }

    /// Moves a connection's hold point in a lane: `from` removed, `to` added.
    fn move_hold_point(&self, lane: Lane, conn_id: u64, from: Option<u64>, to: Option<u64>) {
        let state = self.lane(lane);
        let mut registered = state.lock();
        if let Some(point) = from {
            registered.remove(&(point, conn_id));
        }
        if let Some(point) = to {
            registered.insert((point, conn_id));
        }
        let lowest = registered.first().map_or(u64::MAX, |(point, _)| *point);
        let previous = state.hold_at.swap(lowest, Ordering::AcqRel);
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
        /// The lane counted, and its count when the probe was sent.
        lane: Lane,
        published_at: u64,
        /// QoS>0 messages in flight (unacknowledged to the router) when it was sent.
        in_flight_at_send: usize,
        /// QoS>0 forwards received since (they left the router before the answer).
        forwards_before_answer: usize,
    },
    /// First answer received, second PINGREQ sent.
    Second {
        lane: Lane,
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
    /// The lane whose count bounds this subscriber's lag; `None`: not tracked (no routed
    /// non-shared subscription).
    lane: Option<Lane>,
    /// The lane's count when this subscriber's lag was last known to be zero (below zero when it
    /// moved into a lane with less traffic than its lag).
    caught_up_at: i128,
    /// The hold point registered in the lane (`None` while stuck or untracked).
    registered: Option<u64>,
    probe: Option<Probe>,
    /// Last sign of life while tracked: an acknowledgement or a catch-up.
    last_progress: Instant,
    /// Dropped from the registry for not acknowledging: not holding anybody until caught up.
    stuck: bool,
}

impl Backlog {
    pub fn new(conn_id: u64) -> Self {
        Backlog {
            conn_id,
            lane: None,
            caught_up_at: 0,
            registered: None,
            probe: None,
            last_progress: Instant::now(),
            stuck: false,
        }
    }

    fn hold_point(&self, pressure: &Pressure) -> u64 {
        (self.caught_up_at + i128::from(pressure.window)).clamp(0, i128::from(u64::MAX)) as u64
    }

    fn published(&self, pressure: &Pressure) -> u64 {
        self.lane.map_or(0, |lane| pressure.lane(lane).published())
    }

    fn lag_bound(&self, pressure: &Pressure) -> u64 {
        (i128::from(self.published(pressure)) - self.caught_up_at).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Registers (or with `None` removes) this subscriber's hold point in its lane.
    fn register(&mut self, pressure: &Pressure, point: Option<u64>) {
        if let Some(lane) = self.lane {
            pressure.move_hold_point(lane, self.conn_id, self.registered, point);
            self.registered = point;
        }
    }

    pub fn tracked(&self) -> bool {
        self.lane.is_some()
    }

    /// The lane this subscriber is tracked in.
    pub fn lane(&self) -> Option<Lane> {
        self.lane
    }

    /// Starts, moves or (with `None`) stops tracking: the lane of the connection's routed
    /// subscriptions, if it has any.
    pub fn track(&mut self, pressure: &Pressure, lane: Option<Lane>) {
        if !pressure.enabled() || lane == self.lane {
            return;
        }
        // A subscriber moving lanes keeps the lag it may have.
        let lag = self.lane.map(|_| self.lag_bound(pressure));
        self.register(pressure, None);
        self.lane = lane;
        let Some(lane) = lane else { return };
        self.caught_up_at = i128::from(pressure.lane(lane).published()) - i128::from(lag.unwrap_or(0));
        self.last_progress = Instant::now();
        self.stuck = false;
        self.register(pressure, Some(self.hold_point(pressure)));
    }

    /// This connection is the reason publishers are held: it must not be held itself.
    pub fn exempt(&self, pressure: &Pressure) -> bool {
        self.tracked() && !self.stuck && self.published(pressure) >= self.hold_point(pressure)
    }

    /// The client acknowledged something.
    pub fn progress(&mut self) {
        if self.tracked() {
            self.last_progress = Instant::now();
        }
    }

    /// Records a probe's first PINGREQ pushed to the link.
    pub fn probe_sent(&mut self, pressure: &Pressure, in_flight: usize) {
        let lane = self.lane.unwrap_or(Lane::TOTAL);
        self.probe = Some(Probe::First {
            lane,
            published_at: pressure.lane(lane).published(),
            in_flight_at_send: in_flight,
            forwards_before_answer: 0,
        });
    }

    /// Should a probe start now (`requested`: publishers near a hold point asked)? If so it is
    /// recorded; the caller pushes a PINGREQ.
    pub fn wants_probe(&mut self, pressure: &Pressure, in_flight: usize, requested: bool) -> bool {
        if !self.tracked() || self.probe.is_some() || in_flight >= PROBE_BELOW {
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
            Some(Probe::First { lane, published_at, in_flight_at_send, forwards_before_answer }) => {
                let router_in_flight = in_flight_at_send + forwards_before_answer;
                if router_in_flight >= ROUTER_INFLIGHT {
                    // The router had no room to show what is pending: inconclusive.
                    return ProbeStep::Done;
                }
                let room = ROUTER_INFLIGHT - router_in_flight;
                self.probe = Some(Probe::Second { lane, published_at, room, forwards: 0, bytes: 0 });
                ProbeStep::SendSecond
            }
            Some(Probe::Second { lane, published_at, room, forwards, bytes }) => {
                // A probe counted in another lane than the current one proves nothing about it.
                if forwards < room && self.lane == Some(lane) {
                    // The router forwarded everything it had: that was the whole lag.
                    self.caught_up_at = (i128::from(published_at) - i128::from(bytes)).max(self.caught_up_at);
                    self.last_progress = Instant::now();
                    self.stuck = false;
                    self.register(pressure, Some(self.hold_point(pressure)));
                }
                ProbeStep::Done
            }
            None => ProbeStep::Done,
        }
    }

    /// When to check whether this subscriber holds publishers without making progress.
    pub fn hold_deadline(&self, pressure: &Pressure) -> Option<Instant> {
        (self.tracked() && !self.stuck).then(|| self.last_progress + pressure.max_hold)
    }

    /// No progress for the maximum hold: if this subscriber is holding publishers, let them go.
    pub fn hold_expired(&mut self, pressure: &Pressure) {
        if !self.exempt(pressure) {
            self.last_progress = Instant::now();
            return;
        }
        tracing::info!(conn_id = self.conn_id, "subscriber not acknowledging: no longer holding publishers");
        self.stuck = true;
        self.register(pressure, None);
    }

    /// The connection ends.
    pub fn close(&mut self, pressure: &Pressure) {
        self.register(pressure, None);
        self.lane = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane of a device subscribed to its own command topic.
    fn device(n: u32) -> Lane {
        Lane::of_filters([format!("fleet/dev{n}/cmd").as_str()])
    }

    /// A message to that device.
    fn to_device(n: u32) -> TopicLanes {
        TopicLanes::of(format!("fleet/dev{n}/cmd").as_bytes())
    }

    /// A pressure and a subscriber tracked in `lane`.
    fn tracked(window: u64, lane: Lane) -> (Pressure, Backlog) {
        let pressure = Pressure::new(window, Duration::from_secs(10));
        let mut backlog = Backlog::new(1);
        backlog.track(&pressure, Some(lane));
        (pressure, backlog)
    }

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

    fn counted_in(topic: &str, lane: Lane) -> bool {
        TopicLanes::of(topic.as_bytes()).counted_in(lane)
    }

    #[test]
    fn a_subscriber_is_bounded_by_the_longest_literal_prefix_of_its_filters() {
        let dev7 = Lane::of_filters(["site/dev7/#"]);
        assert_eq!(Lane::of_filters(["site/dev7/cmd", "site/dev7/config/+"]), dev7);
        assert_eq!(Lane::of_filters(["site/dev7/+/x"]), dev7);
        assert_eq!(Lane::of_filters(["site/dev7", "site/dev7/cmd"]), dev7);
        for topic in ["site/dev7", "site/dev7/cmd", "site/dev7/a/b/c/d/e/f"] {
            assert!(counted_in(topic, dev7), "{topic}");
        }
        assert!(!counted_in("site/dev8/cmd", dev7), "another device (these two do not collide)");
        let site = Lane::of_filters(["site/+/cmd"]);
        assert_eq!(Lane::of_filters(["site/dev7/cmd", "site/dev8/cmd"]), site);
        assert!(counted_in("site/dev8/cmd", site) && counted_in("site", site));
        // Deep topics: the first five levels.
        let deep = Lane::of_filters(["a/b/c/d/e/f/g"]);
        assert_eq!(deep, Lane::of_filters(["a/b/c/d/e/#"]));
        assert!(counted_in("a/b/c/d/e/x", deep));
        assert!(counted_in("/x/y", Lane::of_filters(["/x/+"])), "an empty first level is a level");
        for total in [vec!["#"], vec!["+/dev7/cmd"], vec!["a/b", "c/d"], vec![]] {
            assert_eq!(Lane::of_filters(total.iter().copied()), Lane::TOTAL, "{total:?}");
        }
        for topic in ["x", "x/y/z"] {
            assert!(counted_in(topic, Lane::TOTAL));
        }
    }

    #[test]
    fn publishers_are_held_at_the_window_until_the_subscriber_catches_up() {
        let (pressure, mut backlog) = tracked(1000, device(1));
        let released = pressure.watch_release();
        assert!(!pressure.record_published(&to_device(1), 600), "the publisher is told: not holding");
        assert!(!pressure.holding(&to_device(1)) && !backlog.exempt(&pressure), "under the window");
        assert!(pressure.record_published(&to_device(1), 600), "the publisher is told: holding");
        assert!(pressure.holding(&to_device(1)), "holds without the subscriber's task running");
        assert!(backlog.exempt(&pressure));

        // The router fills all the room it had: inconclusive.
        probe(&mut backlog, &pressure, 10, 90, 10);
        assert!(pressure.holding(&to_device(1)));
        // Nothing pending any more.
        probe(&mut backlog, &pressure, 0, 0, 10);
        assert!(!pressure.holding(&to_device(1)) && !backlog.exempt(&pressure));
        assert!(released.has_changed().unwrap());
    }

    #[test]
    fn traffic_in_other_lanes_neither_holds_nor_wakes_a_lane_subscriber() {
        let (pressure, mut backlog) = tracked(1000, device(1));
        let mut requests = pressure.watch_probe_requests(device(1));
        requests.mark_unchanged();
        pressure.record_published(&to_device(2), 1 << 30);
        assert!(!pressure.holding(&to_device(1)) && !pressure.holding(&to_device(2)));
        assert!(!requests.has_changed().unwrap(), "not asked to probe");
        assert!(!backlog.wants_probe(&pressure, 0, true), "no lag to prove");
    }

    #[test]
    fn a_fleet_wide_subscriber_holds_every_device_publisher() {
        let (pressure, mut backlog) = tracked(1000, Lane::of_filters(["fleet/+/cmd"]));
        pressure.record_published(&to_device(1), 600);
        pressure.record_published(&to_device(2), 600);
        assert!(pressure.holding(&to_device(3)));
        assert!(!pressure.holding(&TopicLanes::of(b"other/x")));
        probe(&mut backlog, &pressure, 0, 0, 10);
        assert!(!pressure.holding(&to_device(3)));
    }

    #[test]
    fn a_subscriber_of_the_total_holds_everybody() {
        let (pressure, _backlog) = tracked(1000, Lane::TOTAL);
        pressure.record_published(&to_device(1), 600);
        pressure.record_published(&TopicLanes::of(b"other"), 600);
        assert!(pressure.holding(&TopicLanes::of(b"a/b/c")));
    }

    #[test]
    fn moving_lanes_keeps_the_lag() {
        let (pressure, mut backlog) = tracked(1000, device(1));
        pressure.record_published(&to_device(1), 700);
        backlog.track(&pressure, Some(Lane::TOTAL));
        assert!(!pressure.holding(&to_device(1)));
        pressure.record_published(&to_device(5), 300);
        assert!(pressure.holding(&to_device(5)), "700 + 300 behind, whatever the lane");
        // A probe started in one lane proves nothing in another.
        backlog.track(&pressure, Some(device(1)));
        backlog.probe_sent(&pressure, 0);
        backlog.track(&pressure, Some(device(2)));
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::SendSecond);
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::Done);
        assert!(pressure.holding(&to_device(2)), "still 1000 behind");
    }

    #[test]
    fn a_small_remaining_lag_counts_against_the_next_window() {
        let (pressure, mut backlog) = tracked(1000, device(1));
        pressure.record_published(&to_device(1), 1200);
        assert!(pressure.holding(&to_device(1)));
        // 20 messages of 10 bytes were still pending: caught up at 1200 - 200.
        probe(&mut backlog, &pressure, 30, 20, 10);
        assert!(!pressure.holding(&to_device(1)));
        pressure.record_published(&to_device(1), 799);
        assert!(!pressure.holding(&to_device(1)));
        pressure.record_published(&to_device(1), 1);
        assert!(pressure.holding(&to_device(1)), "hold point = 1000 + window");
    }

    #[test]
    fn a_first_answer_with_a_full_window_is_inconclusive() {
        let (pressure, mut backlog) = tracked(10, device(1));
        pressure.record_published(&to_device(1), 100);
        assert!(backlog.wants_probe(&pressure, 40, false));
        for _ in 0..60 {
            backlog.forwarded(1, 10);
        }
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::Done);
        assert!(pressure.holding(&to_device(1)));
    }

    #[test]
    fn idle_subscribers_are_asked_to_probe_before_their_hold_point() {
        let (pressure, mut backlog) = tracked(1000, device(1));
        let mut requests = pressure.watch_probe_requests(device(1));
        pressure.record_published(&to_device(1), 400);
        assert!(!requests.has_changed().unwrap());
        pressure.record_published(&to_device(1), 200);
        assert!(requests.has_changed().unwrap());
        requests.mark_unchanged();
        pressure.record_published(&to_device(1), 1);
        assert!(!requests.has_changed().unwrap(), "once per hold point");
        assert!(backlog.wants_probe(&pressure, 0, true));
        assert!(!backlog.wants_probe(&pressure, 0, true), "one probe at a time");
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::SendSecond);
        assert_eq!(backlog.probe_answered(&pressure), ProbeStep::Done);
        pressure.record_published(&to_device(1), 900);
        assert!(!pressure.holding(&to_device(1)), "the hold point moved forward");
    }

    #[test]
    fn the_lowest_hold_point_wins() {
        let pressure = Pressure::new(100, Duration::from_secs(10));
        let mut early = Backlog::new(1);
        early.track(&pressure, Some(device(1)));
        pressure.record_published(&to_device(1), 50);
        let mut late = Backlog::new(2);
        late.track(&pressure, Some(device(1)));
        pressure.record_published(&to_device(1), 60);
        assert!(pressure.holding(&to_device(1)), "the early subscriber's window is used up");
        early.close(&pressure);
        assert!(!pressure.holding(&to_device(1)), "the late one has room left");
        late.track(&pressure, None);
        pressure.record_published(&to_device(1), 1000);
        assert!(!pressure.holding(&to_device(1)), "untracked");
    }

    #[test]
    fn a_subscriber_without_progress_stops_holding() {
        let (pressure, mut backlog) = tracked(10, device(1));
        pressure.record_published(&to_device(1), 100);
        assert!(pressure.holding(&to_device(1)));
        backlog.hold_expired(&pressure);
        assert!(!pressure.holding(&to_device(1)));
        assert!(backlog.hold_deadline(&pressure).is_none(), "stuck until caught up");
        probe(&mut backlog, &pressure, 0, 0, 10);
        assert!(backlog.hold_deadline(&pressure).is_some(), "tracked again once caught up");
        pressure.record_published(&to_device(1), 10);
        assert!(pressure.holding(&to_device(1)));
    }

    #[test]
    fn a_message_counting_reader_holds_every_publisher_at_its_point() {
        let pressure = Pressure::new(1 << 20, Duration::from_secs(10));
        let released = pressure.watch_release();
        pressure.reader_read_messages(Some(2));
        assert!(!pressure.record_published(&to_device(1), 10));
        assert!(pressure.record_published(&to_device(2), 10), "the second message reaches the point");
        assert!(pressure.holding(&to_device(3)) && pressure.holding(&TopicLanes::of(b"other")));
        assert_eq!(pressure.published_messages(), 2);
        pressure.reader_read_messages(Some(4));
        assert!(!pressure.holding(&to_device(3)) && released.has_changed().unwrap());
        pressure.reader_read_messages(None);
        pressure.record_published(&to_device(1), 10);
        pressure.record_published(&to_device(1), 10);
        assert!(!pressure.holding(&to_device(1)), "no reader");
        let disabled = Pressure::new(0, Duration::from_secs(10));
        disabled.reader_read_messages(Some(0));
        assert!(!disabled.record_published(&to_device(1), 10) && !disabled.holding(&to_device(1)));
    }

    #[test]
    fn disabled_window_never_holds() {
        let (pressure, mut backlog) = tracked(0, device(1));
        pressure.record_published(&to_device(1), 1 << 40);
        assert!(!pressure.holding(&to_device(1)));
        assert!(!backlog.tracked());
        assert!(!backlog.wants_probe(&pressure, 0, true));
    }
}
