//! The fleet hub (`gate_fleet_hub true`): one gate-owned router link subscribed to `#` receives
//! every routed message once, and the gate's own fan-out index hands it to the connections whose
//! subscriptions match, each through a bounded queue (its [`Inbox`]).
//!
//! Why (docs/benchmarks.md, "Issue 22: the fleet measured again"): a router link and a filter per
//! device cost rumqttd ~50 KB each, its per-link rings grow to ~140–200 KB as they are written
//! forward, each filter's log keeps delivered messages, and the first message on every new topic
//! is compared with every filter the router holds (N² for a fleet with a command topic per
//! device). With the hub the router holds one filter and one link for all hub subscribers,
//! whatever their number; per device the gate keeps a trie leaf and an empty queue.
//!
//! Which subscriptions use it: non-shared filters of non-persistent sessions (the connection
//! decides, `gate::connection::subscribe`). Persistent sessions keep their own router link (the
//! router queues for them while they are offline), and so do `$share` filters (the router picks
//! the member).
//!
//! What the hub does per message: nothing but match and queue. The connection task opens the
//! envelope and applies MQTT's delivery rules (`gate::delivery`), the ACL on delivery, and its
//! own packet ids and window (`gate::flow_control`); hub deliveries are acknowledged to the gate,
//! never to the router (the hub subscribes at QoS 0: the envelope carries the publish QoS).
//!
//! Overload policy (issue 22): a queue holds at most `max_queued_messages` messages and
//! `max_queued_bytes` payload bytes (mosquitto's limits for a client's queue; 0: none). Beyond
//! that a message is dropped for that subscriber alone, whatever its QoS (as mosquitto drops for a
//! full queue), counted in `$SYS/broker/publish/messages/dropped` and logged at most once per
//! `router_drops::REPORT_EVERY`. Before that, back-pressure: while a queue is more than half full
//! it is *congested*, and connections that are not hub subscribers stop reading their clients'
//! publishes (`gate::connection::held`) until no queue is congested, so that a burst a subscriber
//! keeps up with on average is not dropped for it (P7). A queue congested for longer than
//! `gate_backpressure_max_hold` is *stuck*: it holds nobody until it has drained, and drops what
//! passes its bound. Hub subscribers themselves are never held (they must keep reading their
//! clients' acknowledgements); `gate_backpressure_window 0` turns holding off here too. The hub
//! itself is a reader that can fall behind the router's `#` log (which would then roll over
//! under it, for every hub subscriber at once): it registers what it has read as a hold point in
//! `backpressure`'s total, so publishers are held when it is a window behind (`Progress`).
//!
//! Retained messages: the gate owns them (`routing::retained_index`, docs/rumqttd.md defect 19);
//! rumqttd never holds one. The hub's reader of the `#` log keeps the index in routing order,
//! and [`Fence`]s tell a new subscription when the index has everything published before it —
//! for every subscription, whoever serves it (`gate::connection::hub`).
//!
//! Index-only mode ([`Hub::index_only`]): where the fan-out is off (`gate_fleet_hub false`, a
//! cluster node), the hub still reads the `#` log, for the retained index and the fences, and
//! serves no subscriber; its lag is held to the same small window as with the fan-out, because
//! the router's `#` log is sized for that window (`routing::router_link`, `HUB_SEGMENT_SIZE`): a
//! reader further behind would have the log roll over under it and the index miss retained
//! messages.
//!
//! Where each part lives: `index` (the fan-out index), `inbox` (the queues, their bounds and
//! congestion); here, the hub's task reading its router link,
//! what it has read as a hold point (`Progress`), and a connection's [`Membership`].

mod inbox;
mod index;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttd::protocol::{Filter, QoS, RetainForwardRule};
use tracing::error;

pub use self::inbox::{Inbox, Queues};
use self::index::{Index, Member};
use crate::routing::backpressure::Pressure;
use crate::routing::envelope;
use crate::routing::retained_index::RetainedIndex;
use crate::routing::router_link::{self, FromRouter, Routed, RouterError, RouterLink};
use crate::routing::topic_form::HUB_ALL_TOPICS;

/// Notifications handled per wake-up of the hub before it lets the router continue.
const BATCH: usize = 1024;

/// The hub's shared state: the fan-out index (`index`), the retained index and the queues'
/// bounds and congestion (`inbox`).
#[derive(Debug)]
pub struct Hub {
    /// False in index-only mode: no subscription is served through the hub.
    fans_out: bool,
    index: Index,
    retained: Arc<RetainedIndex>,
    pub queues: Queues,
    /// Messages dropped because a subscriber's queue was full (also in `$SYS`).
    pub dropped: AtomicU64,
    /// Messages the hub has read, as `backpressure` counts them published (see [`Fence`]).
    read: AtomicU64,
    /// Queues whose connection waits for the hub to pass a fence, woken through their inbox.
    fences: std::sync::Mutex<Vec<(Fence, Arc<Inbox>)>>,
    fences_waiting: std::sync::atomic::AtomicBool,
}

/// What had been published when a hub subscription was made: its retained messages are taken
/// from the retained index only once the hub has read that far, so that a retained message
/// (or its clear) acknowledged to its publisher before the SUBSCRIBE is in the index (the hub
/// reads the router's `#` log on its own task, behind the publishers). Passed after
/// [`RESYNC_AFTER`] in any case: what was counted but never reaches the hub is not waited for.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    messages: u64,
    since: Instant,
}

impl Hub {
    /// A hub whose queues hold at most `max_messages` messages and `max_bytes` payload bytes
    /// (0: no bound).
    /// `max_hold`: how long a congested queue may hold publishers (`None`: never).
    pub fn new(max_messages: usize, max_bytes: u64, max_hold: Option<Duration>) -> Self {
        Hub {
            fans_out: true,
            index: Index::default(),
            retained: Arc::default(),
            queues: Queues::new(max_messages, max_bytes, max_hold),
            dropped: AtomicU64::new(0),
            read: AtomicU64::new(0),
            fences: std::sync::Mutex::default(),
            fences_waiting: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A hub that keeps the retained index and its fences and serves no subscriber (see the
    /// module documentation).
    pub fn index_only() -> Self {
        Hub { fans_out: false, ..Hub::new(0, 0, None) }
    }

    /// Whether subscriptions are served through the hub (not index-only).
    pub fn fans_out(&self) -> bool {
        self.fans_out
    }

    /// The retained index the hub keeps.
    pub fn retained(&self) -> &Arc<RetainedIndex> {
        &self.retained
    }

    /// A fence at what has been published so far.
    pub fn fence(&self, pressure: &Pressure) -> Fence {
        Fence { messages: pressure.published_messages(), since: Instant::now() }
    }

    /// Whether the hub has read up to `fence` (or waited long enough for it).
    pub fn passed(&self, fence: &Fence) -> bool {
        self.read.load(Ordering::Acquire) >= fence.messages || fence.since.elapsed() >= RESYNC_AFTER
    }

    /// Wakes `inbox`'s connection (`Inbox::ready`) once the hub has passed `fence`.
    pub fn wake_at(&self, fence: Fence, inbox: &Arc<Inbox>) {
        let mut fences = self.fences.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        fences.push((fence, inbox.clone()));
        self.fences_waiting.store(true, Ordering::Release);
    }

    /// The hub has read `read` messages: wakes the connections whose fence it passed.
    fn advance(&self, read: u64) {
        self.read.store(read, Ordering::Release);
        if !self.fences_waiting.load(Ordering::Acquire) {
            return;
        }
        let mut fences = self.fences.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        fences.retain(|(fence, inbox)| {
            let waiting = !self.passed(fence);
            if !waiting {
                inbox.ready.notify_one();
            }
            waiting
        });
        self.fences_waiting.store(!fences.is_empty(), Ordering::Release);
    }

    /// Whether publishers that are not hub subscribers must wait (a queue is congested).
    pub fn holding(&self) -> bool {
        self.queues.holding()
    }

    /// Changes when held publishers may continue.
    pub fn watch_release(&self) -> tokio::sync::watch::Receiver<u64> {
        self.queues.watch_release()
    }

    /// When the oldest congested queue becomes stuck (`None`: none is congested).
    pub fn hold_deadline(&self) -> Option<Instant> {
        self.queues.hold_deadline()
    }

    /// Marks the queues congested for longer than the hold allows as stuck (`inbox`).
    pub fn expire_holds(&self) {
        self.queues.expire_holds();
    }

    /// Adds `inbox` (connection `conn_id`) as a subscriber of `filter` (client spelling,
    /// validated, not shared). Adding the same pair twice keeps one entry.
    pub fn subscribe(&self, filter: &str, conn_id: u64, inbox: &Arc<Inbox>) {
        self.index.subscribe(filter, conn_id, inbox);
    }

    /// Removes connection `conn_id` from `filter`.
    pub fn unsubscribe(&self, filter: &str, conn_id: u64) {
        self.index.unsubscribe(filter, conn_id);
    }

    /// The inboxes of the connections with a subscription matching `topic` (client spelling),
    /// each once.
    fn matching(&self, topic: &[u8], out: &mut Vec<Member>) {
        self.index.matching(topic, out);
    }

    /// Hands one routed message to every matching subscriber's queue; returns how many queues
    /// were full.
    fn fan_out(&self, routed: Routed, members: &mut Vec<Member>) -> u64 {
        members.clear();
        self.matching(&routed.topic, members);
        let mut dropped = 0;
        if let Some((last, rest)) = members.split_last() {
            for member in rest {
                dropped += u64::from(!member.inbox.offer(routed.clone(), &self.queues));
            }
            dropped += u64::from(!last.inbox.offer(routed, &self.queues));
        }
        members.clear();
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            crate::routing::router_drops::record_queue_drops(dropped);
        }
        dropped
    }

    /// One notification of the hub's router link; returns the size of the message read, as
    /// `backpressure` counted it when it was published (0 for anything else).
    fn on_router(&self, note: FromRouter, members: &mut Vec<Member>, paused: &mut bool) -> u64 {
        match note {
            FromRouter::Publish(routed) => {
                if routed.retain {
                    // A replay of the router's retained store, which the gate keeps empty
                    // (`envelope::router_packet`): nothing to take.
                    return 0;
                }
                let Some((stamp, body)) = envelope::open(routed.payload.clone()) else { return 0 };
                if stamp.addressee.is_some() {
                    return 0; // a stored message handed back to a persistent session: not a hub's
                }
                let size = (4 + routed.topic.len() + body.len()) as u64;
                if stamp.retain {
                    if body.is_empty() {
                        self.retained.forget(&routed.topic);
                    } else {
                        self.retained.keep(Routed { retain: true, ..routed.clone() });
                    }
                }
                if self.fans_out {
                    self.fan_out(routed, members);
                }
                size
            }
            FromRouter::Paused => {
                *paused = true;
                0
            }
            FromRouter::SubAck(_) | FromRouter::PubRel(_) | FromRouter::PingResp | FromRouter::Nothing => 0,
        }
    }

    /// The retained messages `filter` matches, as replays (`retained`).
    pub fn retained_matching(&self, filter: &str, qos: u8) -> Vec<Routed> {
        self.retained.matching(filter, qos)
    }

    /// Retained messages in the index.
    pub fn retained_count(&self) -> usize {
        self.retained.count()
    }
}

/// The hub's filter: `#` reaches every routed topic in the router's spelling, `$` topics
/// included (they are spelled with a first byte the router's `#` matches: `topic_form`). Named
/// [`HUB_ALL_TOPICS`] here so that no client's filter shares its log in the router.
fn hub_filter() -> Filter {
    Filter {
        path: HUB_ALL_TOPICS.to_owned(),
        qos: QoS::AtMostOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    }
}

/// Subscribes the hub's link (a gate link, see `RoutingEngine::attach_internal`) to `#`; done
/// before any client connects, so that the router has the subscription before any PUBLISH.
pub fn subscribe_link<L: RouterLink>(link: &mut L) -> Result<(), RouterError> {
    link.subscribe(1, vec![hub_filter()], None);
    link.flush()
}

/// The hub's id among the readers `backpressure` registers (connection ids count up from 1).
const HUB_READER: u64 = u64::MAX;
/// How far the hub may fall behind what is published before publishers are held: small, because
/// what it catches up with lands in subscribers' queues at once, and they hold `max_queued_messages`
/// (P1 with a 4 MiB window: QoS 1 messages dropped from full queues).
pub(crate) const HUB_WINDOW: u64 = 64 * 1024;
// The router's `#` log (`router_link`) must hold several windows, or it could roll over under
// the hub before publishers are held.
const _: () =
    assert!(router_link::HUB_SEGMENT_SIZE as u64 * (router_link::HUB_SEGMENT_COUNT as u64 - 1) >= 8 * HUB_WINDOW);
/// With no notification for this long, what the hub has read is taken to be everything
/// published (see [`Progress::resync`]).
const RESYNC_AFTER: Duration = Duration::from_millis(200);

/// What the hub has read, as `backpressure` counts what is published, registered as the hub's
/// hold points: publishers are held when the hub itself falls behind.
///
/// - In bytes (`4 + topic + payload`, without the envelope), in the total: a window behind, the
///   router's `#` log would roll over under the hub, and every hub subscriber would lose what it
///   skipped.
/// - In messages, when queues are bounded: what the hub has not read yet is on its way to
///   subscribers' queues, and a queue congests (holds publishers) only when the hub hands it its
///   half-bound-th message — everything still in transit then lands on top. So the hub may be at
///   most a quarter of the bounds behind (`in_transit`): a congested queue then still has room for
///   all of it (P2's 1→100 QoS 1 with slow ACL checks overflowed queues without this). The byte
///   window is capped the same way by `max_queued_bytes`.
struct Progress {
    pressure: Arc<Pressure>,
    window: u64,
    consumed: u64,
    registered_at: u64,
    point: Option<u64>,
    /// Messages read; the messages the hub may be behind (`None`: no message bound).
    messages: u64,
    in_transit: Option<u64>,
    messages_registered_at: u64,
}

impl Progress {
    /// The window is [`HUB_WINDOW`] at most in both modes: the router's `#` log holds a few
    /// windows only (`router_link::HUB_SEGMENT_SIZE`), and an index-only reader that fell further
    /// behind would lose retained messages from the index.
    fn new(pressure: Arc<Pressure>, queues: &Queues) -> Self {
        let consumed = pressure.published_total();
        let (max_messages, max_bytes) = queues.bounds();
        let mut window = pressure.window().min(HUB_WINDOW);
        if max_bytes > 0 {
            window = window.min((max_bytes / 4).max(1));
        }
        let point =
            pressure.enabled().then(|| pressure.reader_consumed(HUB_READER, None, Some(consumed), window)).flatten();
        let in_transit = (pressure.enabled() && max_messages > 0).then_some((max_messages as u64 / 4).max(1));
        let messages = pressure.published_messages();
        if let Some(in_transit) = in_transit {
            pressure.reader_read_messages(Some(messages + in_transit));
        }
        Progress {
            pressure,
            window,
            consumed,
            registered_at: consumed,
            point,
            messages,
            in_transit,
            messages_registered_at: messages,
        }
    }

    /// One notification read: `size` as `Hub::on_router` returns it (0: not a counted message).
    fn read(&mut self, size: u64) {
        if size == 0 {
            return;
        }
        self.consumed += size;
        self.messages += 1;
        if let Some(in_transit) = self.in_transit
            && self.messages - self.messages_registered_at >= in_transit / 4
        {
            // Within a batch too: with a small bound, a batch is many windows.
            self.register_messages(in_transit);
        }
    }

    fn register_messages(&mut self, in_transit: u64) {
        // (Wills and stored messages the hub also reads are not counted as published: never
        // ahead of the publishers' count.)
        self.messages = self.messages.min(self.pressure.published_messages());
        self.pressure.reader_read_messages(Some(self.messages + in_transit));
        self.messages_registered_at = self.messages;
    }

    /// Moves the hold points forward once per quarter window of progress, and when caught up.
    fn register(&mut self) {
        if let Some(in_transit) = self.in_transit
            && self.messages != self.messages_registered_at
        {
            self.register_messages(in_transit);
        }
        if self.point.is_none() {
            return;
        }
        self.consumed = self.consumed.min(self.pressure.published_total());
        let caught_up = self.consumed == self.pressure.published_total();
        if caught_up || self.consumed - self.registered_at >= self.window / 4 {
            self.point = self.pressure.reader_consumed(HUB_READER, self.point, Some(self.consumed), self.window);
            self.registered_at = self.consumed;
        }
    }

    /// The hub has had nothing to read for [`RESYNC_AFTER`]: whatever was counted as published
    /// and has not reached it never will (a publisher gone before it flushed its batch, a
    /// message the router did not route), so it stops counting as behind — otherwise such
    /// losses would add up into holding every publisher for good.
    fn resync(&mut self) {
        let (bytes, messages) = (self.pressure.published_total(), self.pressure.published_messages());
        if self.consumed >= bytes && self.messages >= messages {
            return;
        }
        tracing::debug!(
            bytes = bytes - self.consumed.min(bytes),
            messages = messages - self.messages.min(messages),
            "fleet hub: counted but never read"
        );
        self.consumed = bytes;
        self.messages = messages;
        self.register();
    }
}

/// Runs the hub on its subscribed `link` until the router is gone: fans out everything it
/// receives.
pub async fn run<L: RouterLink>(hub: Arc<Hub>, mut link: L, pressure: Arc<Pressure>) {
    let mut progress = Progress::new(pressure, &hub.queues);
    let mut members = Vec::new();
    loop {
        let first = match tokio::time::timeout(RESYNC_AFTER, link.recv()).await {
            Ok(Ok(note)) => note,
            Ok(Err(_)) => {
                error!("fleet hub: the router closed its link; hub subscribers receive nothing more");
                return;
            }
            Err(_) => {
                progress.resync();
                hub.advance(progress.messages);
                continue;
            }
        };
        let mut paused = false;
        progress.read(hub.on_router(first, &mut members, &mut paused));
        for _ in 0..BATCH {
            match link.try_recv() {
                Some(Ok(note)) => progress.read(hub.on_router(note, &mut members, &mut paused)),
                Some(Err(_)) | None => break,
            }
        }
        progress.register();
        hub.advance(progress.messages);
        if paused && link.resume().await.is_err() {
            error!("fleet hub: the router closed its link; hub subscribers receive nothing more");
            return;
        }
        // The hub is one task among the connections it feeds: let them run.
        tokio::task::yield_now().await;
    }
}

/// A connection's membership of the hub: its inbox and its hub filters. Dropping it removes the
/// connection from the index, on every exit path (a panic included).
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    conn_id: u64,
    pub inbox: Arc<Inbox>,
    filters: Vec<String>,
}

impl Membership {
    pub fn new(hub: Arc<Hub>, conn_id: u64) -> Self {
        Membership { hub, conn_id, inbox: Arc::default(), filters: Vec::new() }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The next delivery in this connection's queue.
    pub fn pop(&self) -> Option<Routed> {
        self.inbox.pop(&self.hub.queues)
    }

    /// Deliveries taken from the queue that wait for room in the client's window.
    pub fn set_waiting(&self, waiting: usize) {
        self.inbox.set_waiting(&self.hub.queues, waiting);
    }

    /// Whether `filter` is one of this connection's hub subscriptions.
    pub fn has(&self, filter: &str) -> bool {
        self.filters.iter().any(|f| f == filter)
    }

    /// Subscribes `filter` through the hub (again: kept once).
    pub fn add(&mut self, filter: &str) {
        if !self.has(filter) {
            if self.filters.capacity() == 0 {
                // A device has one hub filter: room for one, not the four a first push reserves.
                self.filters.reserve_exact(1);
            }
            self.filters.push(filter.to_owned());
            self.inbox.set_filters(self.filters.iter().map(String::as_str));
        }
        self.hub.subscribe(filter, self.conn_id, &self.inbox);
    }

    /// Removes `filter`; false if it was not a hub subscription.
    pub fn remove(&mut self, filter: &str) -> bool {
        let Some(at) = self.filters.iter().position(|f| f == filter) else { return false };
        self.filters.swap_remove(at);
        self.inbox.set_filters(self.filters.iter().map(String::as_str));
        self.hub.unsubscribe(filter, self.conn_id);
        true
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.inbox.leave(&self.hub.queues);
        for filter in std::mem::take(&mut self.filters) {
            self.hub.unsubscribe(&filter, self.conn_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::envelope::Stamp;
    use bytes::Bytes;

    fn routed(topic: &str, retain: bool, body: &[u8]) -> Routed {
        let stamp = Stamp::for_test(1, retain, "p");
        Routed {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: envelope::seal(&stamp, body),
            qos: 0,
            pkid: 0,
            retain: false,
            properties: None,
        }
    }

    fn receivers(hub: &Hub, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        hub.matching(topic.as_bytes(), &mut out);
        out.iter().map(|m| m.conn_id).collect()
    }

    #[test]
    fn the_index_matches_as_mqtt_does_and_gives_each_connection_once() {
        const FILTERS: [&str; 14] =
            ["#", "+", "a", "a/#", "a/+", "+/b", "a/+/c", "+/+", "/#", "a/b/#", "$x/+", "a//b", "+/#", "$x/#"];
        const TOPICS: [&str; 13] =
            ["a", "a/b", "a/b/c", "/a", "a/", "/", "b", "$x/y", "a//b", "a/b/c/d", "ab", "$x", "x/y/z"];
        for filter in FILTERS {
            let hub = Hub::new(0, 0, None);
            let inbox = Arc::new(Inbox::default());
            hub.subscribe(filter, 7, &inbox);
            for topic in TOPICS {
                let expected = crate::gate::subscriptions::matches_mqtt(filter, topic.as_bytes());
                assert_eq!(receivers(&hub, topic) == [7], expected, "{filter} ~ {topic}");
            }
            hub.unsubscribe(filter, 7);
            assert!(hub.index.is_empty(), "{filter}: pruned");
        }
        let hub = Hub::new(0, 0, None);
        let inbox = Arc::new(Inbox::default());
        for filter in ["a/#", "a/b", "+/b"] {
            hub.subscribe(filter, 1, &inbox);
        }
        hub.subscribe("a/b", 2, &inbox);
        assert_eq!(receivers(&hub, "a/b"), [1, 2], "one entry per connection");
    }

    #[test]
    fn full_queues_drop_and_count_and_others_still_receive() {
        let hub = Hub::new(2, 0, None);
        let slow = Arc::new(Inbox::default());
        let fast = Arc::new(Inbox::default());
        hub.subscribe("cmd/+", 1, &slow);
        hub.subscribe("cmd/#", 2, &fast);
        let mut members = Vec::new();
        let mut dropped = 0;
        for _ in 0..5 {
            dropped += hub.fan_out(routed("cmd/9", false, b"x"), &mut members);
            fast.pop(&hub.queues);
        }
        assert_eq!((dropped, slow.len(), fast.len()), (3, 2, 0));
        assert!(slow.pop(&hub.queues).is_some() && slow.pop(&hub.queues).is_some() && slow.pop(&hub.queues).is_none());
        let bytes = Hub::new(0, 10, None);
        bytes.subscribe("t", 1, &slow);
        let big = routed("t", false, b"0123456789");
        assert_eq!(bytes.fan_out(big.clone(), &mut members), 0, "one message always fits");
        assert_eq!(bytes.fan_out(big, &mut members), 1);
    }

    #[test]
    fn a_queue_over_half_full_holds_publishers_until_it_drains_or_its_hold_expires() {
        let hub = Hub::new(4, 0, Some(Duration::from_secs(3600)));
        let inbox = Arc::new(Inbox::default());
        hub.subscribe("t", 1, &inbox);
        let release = hub.watch_release();
        let mut members = Vec::new();
        for _ in 0..3 {
            hub.fan_out(routed("t", false, b"x"), &mut members);
        }
        assert!(hub.holding() && hub.hold_deadline().is_some(), "3 of 4: congested");
        assert!(!release.has_changed().unwrap());
        inbox.pop(&hub.queues);
        assert!(!hub.holding() && release.has_changed().unwrap(), "2 of 4 is not over half: released");

        let quick = Hub::new(4, 0, Some(Duration::ZERO));
        let stuck = Arc::new(Inbox::default());
        quick.subscribe("t", 1, &stuck);
        for _ in 0..3 {
            quick.fan_out(routed("t", false, b"x"), &mut members);
        }
        assert!(quick.holding());
        quick.expire_holds();
        assert!(!quick.holding(), "a stuck queue holds nobody");
        quick.fan_out(routed("t", false, b"x"), &mut members);
        assert_eq!(quick.fan_out(routed("t", false, b"x"), &mut members), 1, "and drops past its bound");
        assert!(!quick.holding(), "until drained");
        while stuck.pop(&quick.queues).is_some() {}
        for _ in 0..3 {
            quick.fan_out(routed("t", false, b"x"), &mut members);
        }
        assert!(quick.holding(), "drained, it may hold again");
        let membership =
            Membership { hub: Arc::new(Hub::new(4, 0, None)), conn_id: 9, inbox: stuck, filters: Vec::new() };
        drop(membership);
        let unbounded = Hub::new(0, 0, Some(Duration::ZERO));
        let inbox = Arc::new(Inbox::default());
        unbounded.subscribe("t", 1, &inbox);
        for _ in 0..100 {
            unbounded.fan_out(routed("t", false, b"x"), &mut members);
        }
        assert!(!unbounded.holding(), "no bound, no congestion");
    }

    #[test]
    fn a_congested_queue_holds_only_the_lanes_of_its_filters() {
        use crate::routing::backpressure::TopicLanes;
        let holds = |hub: &Hub, topic: &str| hub.queues.holds(&TopicLanes::of(topic.as_bytes()));
        let hub = Arc::new(Hub::new(4, 0, Some(Duration::from_secs(3600))));
        let mut members = Vec::new();
        let mut device = Membership::new(hub.clone(), 1);
        device.add("fleet/dev1/cmd");
        for _ in 0..3 {
            hub.fan_out(routed("fleet/dev1/cmd", false, b"x"), &mut members);
        }
        assert!(holds(&hub, "fleet/dev1/cmd"), "its own topic");
        assert!(!holds(&hub, "fleet/dev2/cmd") && !holds(&hub, "fleet") && !holds(&hub, "other"), "not the fleet");
        device.pop();
        assert!(!hub.holding() && !holds(&hub, "fleet/dev1/cmd"), "drained: released");

        // A wildcard: the lane of its literal prefix.
        let mut backend = Membership::new(hub.clone(), 2);
        backend.add("fleet/+/telemetry");
        for _ in 0..3 {
            hub.fan_out(routed("fleet/dev7/telemetry", false, b"x"), &mut members);
        }
        assert!(holds(&hub, "fleet/dev8/telemetry") && holds(&hub, "fleet/dev8/cmd"), "everything under fleet");
        assert!(!holds(&hub, "other/dev8/telemetry"));
        backend.pop();
        // A filter starting with a wildcard: every topic (as a routed `#` subscriber holds all).
        backend.add("+/status");
        for _ in 0..3 {
            hub.fan_out(routed("x/status", false, b"x"), &mut members);
        }
        assert!(holds(&hub, "other") && holds(&hub, "fleet/dev1/cmd"));
        assert!(backend.inbox.is_congested() && !device.inbox.is_congested());
        drop(backend);
        assert!(!hub.holding() && !holds(&hub, "other"), "a departing member releases its lanes");
    }

    #[test]
    fn the_hub_holds_publishers_a_quarter_of_the_bound_behind_until_it_reads_or_resyncs() {
        use crate::routing::backpressure::TopicLanes;
        let pressure = Arc::new(Pressure::new(1 << 20, Duration::from_secs(10)));
        let lanes = TopicLanes::of(b"t");
        let mut progress = Progress::new(pressure.clone(), &Queues::new(8, 0, Some(Duration::from_secs(10))));
        assert!(!pressure.record_published(&lanes, 10));
        assert!(pressure.record_published(&lanes, 10), "two messages behind: held");
        progress.read(10);
        assert!(!pressure.holding(&lanes), "one read: one behind");
        pressure.record_published(&lanes, 10);
        pressure.record_published(&lanes, 10);
        assert!(pressure.holding(&lanes));
        progress.read(0);
        assert!(pressure.holding(&lanes), "what is not a counted message moves nothing");
        // Counted but never coming (the hub idle): no longer behind.
        progress.resync();
        assert!(!pressure.holding(&lanes));
        // No message bound: held by bytes only.
        let unbounded = Arc::new(Pressure::new(1 << 20, Duration::from_secs(10)));
        let _progress = Progress::new(unbounded.clone(), &Queues::new(0, 0, Some(Duration::from_secs(10))));
        for _ in 0..100 {
            assert!(!unbounded.record_published(&lanes, 10));
        }
    }

    #[test]
    fn an_index_only_hub_holds_publishers_before_the_routers_hash_log_could_roll_over_under_it() {
        use crate::routing::backpressure::TopicLanes;
        // The default window (half of 2 MiB × 4) is far more than the hub's `#` log keeps.
        let pressure = Arc::new(Pressure::new(4 << 20, Duration::from_secs(10)));
        let lanes = TopicLanes::of(b"t");
        let index_only = Hub::index_only();
        let _progress = Progress::new(pressure.clone(), &index_only.queues);
        let mut published = 0u64;
        loop {
            published += 1000;
            if pressure.record_published(&lanes, 1000) {
                break;
            }
            assert!(published <= 4 << 20, "never held within the ordinary window");
        }
        assert!(published <= HUB_WINDOW + 1000, "held only {published} bytes behind");
    }

    #[test]
    fn a_fence_is_passed_once_the_hub_has_read_that_far_or_waited_long_enough() {
        use crate::routing::backpressure::TopicLanes;
        let pressure = Pressure::new(1 << 20, Duration::from_secs(10));
        let hub = Hub::new(0, 0, None);
        pressure.record_published(&TopicLanes::of(b"t"), 10);
        pressure.record_published(&TopicLanes::of(b"t"), 10);
        let fence = hub.fence(&pressure);
        assert!(!hub.passed(&fence));
        let inbox = Arc::new(Inbox::default());
        hub.wake_at(fence, &inbox);
        hub.advance(1);
        assert!(!hub.passed(&fence) && !hub.fences.lock().unwrap().is_empty());
        hub.advance(2);
        assert!(hub.passed(&fence) && hub.fences.lock().unwrap().is_empty(), "passed: its waiter woken");
        if let Some(since) = Instant::now().checked_sub(RESYNC_AFTER) {
            assert!(hub.passed(&Fence { messages: 1000, since }), "not waited for beyond RESYNC_AFTER");
        }
    }

    #[test]
    fn a_departing_member_releases_its_congestion() {
        let hub = Arc::new(Hub::new(2, 0, Some(Duration::from_secs(3600))));
        let mut membership = Membership::new(hub.clone(), 5);
        membership.add("t");
        let mut members = Vec::new();
        for _ in 0..2 {
            hub.fan_out(routed("t", false, b"x"), &mut members);
        }
        assert!(hub.holding());
        drop(membership);
        assert!(!hub.holding());
    }

    #[test]
    fn retained_messages_are_kept_per_topic_and_cleared() {
        let hub = Hub::new(0, 0, None);
        let mut members = Vec::new();
        let mut paused = false;
        hub.on_router(FromRouter::Publish(routed("r/1", true, b"one")), &mut members, &mut paused);
        hub.on_router(FromRouter::Publish(routed("r/2", true, b"two")), &mut members, &mut paused);
        hub.on_router(FromRouter::Publish(routed("r/3", false, b"live")), &mut members, &mut paused);
        assert_eq!(hub.retained_count(), 2);
        assert_eq!(hub.retained_matching("r/+", 1).len(), 2);
        let one = hub.retained_matching("r/1", 2);
        assert_eq!(one.len(), 1);
        assert!(one[0].retain && one[0].qos == 2);
        hub.on_router(FromRouter::Publish(routed("r/1", true, b"")), &mut members, &mut paused);
        assert!(hub.retained_matching("r/1", 0).is_empty());
        // A replay of the router's store (retain set on the routed copy; the gate keeps that store
        // empty) is neither indexed nor fanned out.
        let inbox = Arc::new(Inbox::default());
        hub.subscribe("#", 1, &inbox);
        let mut replay = routed("s", true, b"kept");
        replay.retain = true;
        hub.on_router(FromRouter::Publish(replay), &mut members, &mut paused);
        assert!(inbox.is_empty());
        assert_eq!(hub.retained_matching("#", 0).len(), 1);
        // Index-only: indexed, never fanned out.
        let index_only = Hub::index_only();
        index_only.subscribe("#", 1, &inbox);
        index_only.on_router(FromRouter::Publish(routed("r/9", true, b"nine")), &mut members, &mut paused);
        assert!(inbox.is_empty());
        assert_eq!(index_only.retained_matching("r/9", 1).len(), 1);
    }

    #[test]
    fn a_dropped_membership_leaves_the_index() {
        let hub = Arc::new(Hub::new(0, 0, None));
        let mut membership = Membership::new(hub.clone(), 3);
        membership.add("a/+");
        membership.add("b");
        membership.add("b");
        assert_eq!(receivers(&hub, "b"), [3]);
        assert!(membership.remove("b") && !membership.remove("b"));
        assert_eq!(receivers(&hub, "a/x"), [3]);
        drop(membership);
        assert!(hub.index.is_empty());
    }
}
