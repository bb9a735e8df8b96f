//! The hub's per-connection queues and their overload policy (`routing::hub`): each hub
//! subscriber's [`Inbox`] is bounded by `max_queued_messages` / `max_queued_bytes` (a message
//! past the bound is dropped for that subscriber alone); a queue more than half full is
//! *congested* and holds publishers; one congested for longer than `gate_backpressure_max_hold`
//! is *stuck* and holds nobody until drained. [`Queues`] keeps the bounds and the congested list.
//!
//! A congested queue holds only the publishers of topics it may receive, by the lanes of
//! `routing::backpressure` (as a routed subscriber holds only its lane): each of its
//! subscriber's filters has the lane of its literal prefix (`site/dev7/cmd`: that topic's lane;
//! `site/+/cmd`: `site`'s; a filter starting with a wildcard: the total), and a publish is held
//! while one of its topic's lanes is the lane of a congested queue's filter. Lanes are hash slots,
//! so an unrelated topic may share one and be held too; a topic a filter matches is always in its
//! lane. So a stalled device holds the publishers of its own command topic, not the fleet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::routing::backpressure::{Lane, TopicLanes};
use crate::routing::router_link::Routed;

/// The slots a queue gets for its first message (`VecDeque`'s smallest allocation for
/// deliveries of this size): a queue no larger than this has only ever held a few messages.
const DEVICE_QUEUE_SLOTS: usize = 4;

/// One connection's bounded queue of hub deliveries.
#[derive(Debug, Default)]
pub struct Inbox {
    queue: Mutex<Queue>,
    /// Woken when a message is queued (a permit is kept when the connection is busy).
    pub ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Routed>,
    bytes: u64,
    /// Deliveries the connection took from here that wait for room in its client's window
    /// (`gate::flow_control`): they count against the bound too.
    waiting: usize,
    /// More than half full: holding publishers (listed in `Queues::congested`).
    congested: bool,
    /// Congested for longer than the hold allows: holding nobody until drained.
    stuck: bool,
    /// The lanes of the subscriber's hub filters (see the module documentation).
    lanes: Vec<Lane>,
}

/// A congested queue: since when, and the lanes it holds (as they were when it congested).
#[derive(Debug)]
struct Congested {
    inbox: Arc<Inbox>,
    since: Instant,
    lanes: Vec<Lane>,
}

/// The bounds of every hub queue and the list of congested ones.
#[derive(Debug)]
pub struct Queues {
    max_messages: usize,
    max_bytes: u64,
    /// `None`: queues never hold publishers; else how long one may (`gate_backpressure_max_hold`).
    max_hold: Option<Duration>,
    /// The congested queues.
    congested: Mutex<Vec<Congested>>,
    /// `congested.len()`, read without the lock by every publisher.
    congested_count: AtomicUsize,
    /// Per lane (`Lane::index`), how many congested queues hold it.
    held_lanes: Box<[AtomicU32]>,
    /// Bumped when a congested queue is no longer congested: held publishers look again.
    released: watch::Sender<u64>,
}

impl Inbox {
    /// The next queued delivery (`queues`: the hub's, told when it is no longer congested).
    pub fn pop(self: &Arc<Self>, queues: &Queues) -> Option<Routed> {
        let mut queue = self.lock();
        let routed = queue.messages.pop_front()?;
        queue.bytes = queue.bytes.saturating_sub(routed.payload.len() as u64);
        if queue.messages.is_empty() {
            queue.stuck = false;
            // A burst's queue goes back to the allocator once drained, and so does a queue that
            // never held more than a few messages (a device's first four slots, 320 B): a
            // fleet's queues are empty almost always, and what they keep is kept per device
            // (docs/benchmarks.md, "P8: the hub's log"). A busy subscriber's queue in between
            // is kept: it fills again at once, and reallocating it per drain would cost P1.
            let capacity = queue.messages.capacity();
            if capacity > 64 || (capacity > 0 && capacity <= DEVICE_QUEUE_SLOTS) {
                queue.messages = VecDeque::new();
            }
        }
        if queue.congested && !queues.above_half(queue.messages.len() + queue.waiting, queue.bytes) {
            queue.congested = false;
            drop(queue);
            queues.decongested(self);
        }
        Some(routed)
    }

    /// How many deliveries taken from here wait for room in the client's window.
    pub fn set_waiting(self: &Arc<Self>, queues: &Queues, waiting: usize) {
        let mut queue = self.lock();
        queue.waiting = waiting;
        if queue.congested && !queues.above_half(queue.messages.len() + queue.waiting, queue.bytes) {
            queue.congested = false;
            drop(queue);
            queues.decongested(self);
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this queue is congested (holding publishers).
    pub fn is_congested(&self) -> bool {
        self.lock().congested
    }

    /// The subscriber's hub filters changed: the lanes it holds when it congests next.
    pub(super) fn set_filters<'a>(&self, filters: impl IntoIterator<Item = &'a str>) {
        let mut lanes: Vec<Lane> = filters.into_iter().map(|filter| Lane::of_filters([filter])).collect();
        lanes.sort_unstable_by_key(|lane| lane.index());
        lanes.dedup();
        self.lock().lanes = lanes;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `routed` unless that would pass the bounds; false when it was dropped.
    pub(super) fn offer(self: &Arc<Self>, routed: Routed, queues: &Queues) -> bool {
        let size = routed.payload.len() as u64;
        let congests = {
            let mut queue = self.lock();
            let full = (queues.max_messages > 0 && queue.messages.len() + queue.waiting >= queues.max_messages)
                || (queues.max_bytes > 0 && queue.bytes + size > queues.max_bytes && !queue.messages.is_empty());
            if full {
                return false;
            }
            queue.messages.push_back(routed);
            queue.bytes += size;
            let congests = queues.max_hold.is_some()
                && !queue.congested
                && !queue.stuck
                && queues.above_half(queue.messages.len() + queue.waiting, queue.bytes);
            queue.congested |= congests;
            congests.then(|| queue.lanes.clone())
        };
        if let Some(lanes) = congests {
            queues.congested_by(self, lanes);
        }
        self.ready.notify_one();
        true
    }

    /// Leaves the congested list for good (the connection is gone).
    pub(super) fn leave(self: &Arc<Self>, queues: &Queues) {
        let was = std::mem::replace(&mut self.lock().congested, false);
        if was {
            queues.decongested(self);
        }
    }
}

impl Queues {
    /// Queues of at most `max_messages` messages and `max_bytes` payload bytes (0: no bound).
    /// `max_hold`: how long a congested queue may hold publishers (`None`: never).
    pub fn new(max_messages: usize, max_bytes: u64, max_hold: Option<Duration>) -> Self {
        Queues {
            max_messages,
            max_bytes,
            max_hold,
            congested: Mutex::default(),
            congested_count: AtomicUsize::new(0),
            held_lanes: (0..Lane::COUNT).map(|_| AtomicU32::new(0)).collect(),
            released: watch::Sender::new(0),
        }
    }

    /// More than half of a bound is used (never without bounds).
    fn above_half(&self, messages: usize, bytes: u64) -> bool {
        (self.max_messages > 0 && messages > self.max_messages / 2)
            || (self.max_bytes > 0 && bytes > self.max_bytes / 2)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Congested>> {
        self.congested.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The message and byte bounds of every queue (0: none).
    pub fn bounds(&self) -> (usize, u64) {
        (self.max_messages, self.max_bytes)
    }

    fn congested_by(&self, inbox: &Arc<Inbox>, lanes: Vec<Lane>) {
        let mut congested = self.lock();
        for lane in &lanes {
            self.held_lanes[lane.index()].fetch_add(1, Ordering::AcqRel);
        }
        congested.push(Congested { inbox: inbox.clone(), since: Instant::now(), lanes });
        self.congested_count.store(congested.len(), Ordering::Release);
    }

    /// Takes a congested queue off the list: its lanes no longer held by it.
    fn release(&self, entry: &Congested) {
        for lane in &entry.lanes {
            self.held_lanes[lane.index()].fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn decongested(&self, inbox: &Arc<Inbox>) {
        let mut congested = self.lock();
        congested.retain(|entry| {
            let keep = !Arc::ptr_eq(&entry.inbox, inbox);
            if !keep {
                self.release(entry);
            }
            keep
        });
        self.congested_count.store(congested.len(), Ordering::Release);
        drop(congested);
        // Publishers held in this queue's lanes continue (others look again and wait on).
        self.released.send_modify(|generation| *generation += 1);
    }

    /// Whether some queue is congested (cheap: one atomic load).
    pub fn holding(&self) -> bool {
        self.congested_count.load(Ordering::Acquire) > 0
    }

    /// Whether a congested queue holds publishes to a topic with these lanes.
    pub fn holds(&self, lanes: &TopicLanes) -> bool {
        self.holding() && lanes.with_total().any(|lane| self.held_lanes[lane.index()].load(Ordering::Acquire) > 0)
    }

    /// Changes when held publishers may continue.
    pub fn watch_release(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }

    /// When the oldest congested queue becomes stuck (`None`: none is congested).
    pub fn hold_deadline(&self) -> Option<Instant> {
        let max_hold = self.max_hold?;
        self.lock().iter().map(|entry| entry.since + max_hold).min()
    }

    /// Marks the queues congested for longer than the hold allows as stuck: they hold nobody
    /// until drained (they drop what passes their bound meanwhile).
    pub fn expire_holds(&self) {
        let Some(max_hold) = self.max_hold else { return };
        let now = Instant::now();
        let mut congested = self.lock();
        let before = congested.len();
        congested.retain(|entry| {
            if now < entry.since + max_hold {
                return true;
            }
            let mut queue = entry.inbox.lock();
            queue.congested = false;
            queue.stuck = true;
            self.release(entry);
            false
        });
        self.congested_count.store(congested.len(), Ordering::Release);
        if congested.len() < before {
            drop(congested);
            self.released.send_modify(|generation| *generation += 1);
        }
    }
}
