//! The only module that touches rumqttd's `Router` and `local` link API, behind our own small
//! traits ([`RoutingEngine`], [`RouterLink`]) so that another routing engine can replace it
//! without touching the gate.
//!
//! What lives here because of rumqttd's shape (see docs/rumqttd.md §2):
//! - the router's event channel has an unnameable type, so the engine keeps a "link factory"
//!   closure that captures it;
//! - `LinkBuilder::build` blocks, so attaching runs on the blocking pool;
//! - client ids are escaped (`%`, `+`, `$`, `#`, `/` → `%XX`): the router silently refuses ids
//!   containing `+ $ # /` (docs/rumqttd.md defect 10);
//! - a shared subscription's group is keyed by group name alone in the router, so `$share/g/a`
//!   and `$share/g/b` would share one cursor; the group is renamed per filter on the way in;
//! - topics and filters are spelled for the router (`topic_form`: `$` first levels, which it
//!   would not route, and first characters its matcher would panic on) on the way in and
//!   unspelled on delivery;
//! - a persistent link with shared subscriptions detaches while an "anchor" link is a member of
//!   its shared groups (`router_guard`, the `handle_disconnection` panic);
//! - an UNSUBSCRIBE is followed, in the same batch, by what repairs the router's shared
//!   subscriptions after it (`unsubscribe_repair`, defect 18), whose SUBACKs the gate never sees;
//! - the router thread is watched: when it is gone, [`Rumqttd::stopped`] resolves;
//! - the system link (wills) has its notifications drained forever by a thread;
//! - a freshly built link gets a PINGREQ pushed, because `build` consumes the wake-up that came
//!   with the CONNACK and anything queued behind it (PUBRELs of a resumed session) would wait.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, PingReq, Publish, PublishProperties, SubAck, Subscribe,
    Unsubscribe,
};
use rumqttd::{Notification, Router, RouterConfig, SegmentConfig};
use tracing::error;

use crate::config::GateSettings;
use crate::routing::topic_form;
use crate::routing::unsubscribe_repair::UnsubscribeRepair;

/// Outgoing QoS>0 messages the router keeps in flight per client (rumqttd's `MAX_INFLIGHT`); it
/// numbers them 1..=100 in send order.
pub const ROUTER_INFLIGHT: usize = 100;

/// Client id of the system link. No escaped client id can equal it (`%` followed by a non-hex).
const SYSTEM_CLIENT_ID: &str = "%system";
/// Client id prefix of the links that keep shared groups alive while a persistent member leaves
/// (`%s` cannot occur in an escaped id either).
const ANCHOR_CLIENT_ID: &str = "%share-anchor";
/// Client id prefix of the gate's own links (the fleet hub and the publisher pool).
const GATE_CLIENT_ID: &str = "%gate";

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("the router refused the link (router connection table full?)")]
    Refused,
    #[error("the router link is closed")]
    Closed,
    #[error("the router could not be started: {0}")]
    Start(String),
}

impl From<LinkError> for RouterError {
    fn from(error: LinkError) -> Self {
        match error {
            LinkError::Recv(_) | LinkError::NotConnectionAck | LinkError::ConnectionAck(_) => RouterError::Refused,
            _ => RouterError::Closed,
        }
    }
}

/// What a link receives from the router.
#[derive(Debug)]
pub enum FromRouter {
    /// A message to deliver.
    Publish(Routed),
    /// The router's SUBACK.
    SubAck(SubAck),
    /// The router's PUBREL (QoS 2 delivery, second phase).
    PubRel(u16),
    /// The answer to a PINGREQ pushed by the gate (a back-pressure probe).
    PingResp,
    /// The router paused this link because its buffer is full: call [`RouterLink::resume`] once
    /// what was received has been written.
    Paused,
    /// A wake-up that found nothing.
    Nothing,
}

/// A message the router delivers to a link, in the client's spelling.
#[derive(Debug, Clone)]
pub struct Routed {
    pub topic: Bytes,
    pub payload: Bytes,
    /// The QoS of the filter it came through (rumqttd delivers at the subscription's QoS).
    pub qos: u8,
    /// The router's packet id (1..=100) when `qos` > 0.
    pub pkid: u16,
    /// Set on a retained message the router sends because a filter was subscribed.
    pub retain: bool,
    /// Boxed, and only when there is one to write: a delivery moves several times on its way to
    /// the client's buffer, and the properties are most of its size (docs/benchmarks.md).
    pub properties: Option<Box<PublishProperties>>,
}

impl Routed {
    /// A retained message as a new subscription gets it from the router (topic in the client's
    /// spelling, sealed payload), made by the gate itself: for indexes the router cannot fill
    /// (`persistence::Persistence::restore`).
    pub fn retained(topic: Bytes, sealed: Bytes, properties: &Option<PublishProperties>) -> Self {
        let properties = properties.as_ref().filter(|p| carries_any(p)).map(|p| Box::new(p.clone()));
        Routed { topic, payload: sealed, qos: 0, pkid: 0, retain: true, properties }
    }

    /// Takes a router `Publish` apart. Its QoS and packet id are crate-private in rumqttd: they
    /// are read from its own serialization, made once topic and payload are moved out (five
    /// bytes then).
    fn from_router(mut publish: Publish, properties: Option<PublishProperties>) -> Self {
        let properties = properties.filter(carries_any).map(Box::new);
        let topic = topic_form::from_router(std::mem::take(&mut publish.topic));
        let payload = std::mem::take(&mut publish.payload);
        // `len()` counts 2 bytes more for a packet id: QoS 0 needs no serialization (the
        // delivery hot path of QoS 0 fan-out).
        if publish.len() == 2 {
            return Routed { topic, payload, qos: 0, pkid: 0, retain: publish.retain, properties };
        }
        let header = publish.serialize();
        let qos = (header[0] >> 1) & 0b11;
        let pkid = if qos > 0 { u16::from_be_bytes([header[1], header[2]]) } else { 0 };
        Routed { topic, payload, qos, pkid, retain: publish.retain, properties }
    }
}

/// Whether `properties` holds anything to write (field by field: comparing with a default value
/// builds and drops one per delivery).
pub fn carries_any(properties: &PublishProperties) -> bool {
    let PublishProperties {
        payload_format_indicator,
        message_expiry_interval,
        topic_alias,
        response_topic,
        correlation_data,
        user_properties,
        subscription_identifiers,
        content_type,
    } = properties;
    payload_format_indicator.is_some()
        || message_expiry_interval.is_some()
        || topic_alias.is_some()
        || response_topic.is_some()
        || correlation_data.is_some()
        || !user_properties.is_empty()
        || !subscription_identifiers.is_empty()
        || content_type.is_some()
}

/// A client's session in the routing engine.
pub struct Attached<L> {
    pub link: L,
    /// The engine restored a saved session for this client id.
    pub session_present: bool,
}

/// The routing engine: subscriptions, retained messages, QoS state, fan-out, sessions.
pub trait RoutingEngine: Send + Sync + 'static {
    type Link: RouterLink;

    /// Opens the link of `client_id`. `persistent`: the engine keeps the session when the link is
    /// closed and restores it on the next persistent attach; a non-persistent attach discards any
    /// saved session.
    fn attach(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> impl Future<Output = Result<Attached<Self::Link>, RouterError>> + Send;

    /// Forgets the saved session of `client_id` (nobody may be attached with it).
    fn purge(&self, client_id: &str) -> impl Future<Output = ()> + Send;

    /// Opens a link of the gate's own (`routing::hub`, `routing::publisher_pool`), under a
    /// router id no client id can take, without a session.
    fn attach_internal(&self, name: &str) -> impl Future<Output = Result<Self::Link, RouterError>> + Send;

    /// Routes a broker-originated QoS 0 message (a will, a stored message), with retain 0
    /// (`envelope::routable`: the gate keeps retained messages itself).
    fn inject(&self, message: crate::routing::envelope::Routable);
}

/// One client's link. Pushes are batched: nothing reaches the router until [`RouterLink::flush`].
pub trait RouterLink: Send + 'static {
    fn push(&mut self, packet: Packet);
    /// Hands everything pushed since the last flush to the router, with one wake-up.
    fn flush(&mut self) -> Result<(), RouterError>;
    /// Waits for the next notification (cancel-safe).
    fn recv(&mut self) -> impl Future<Output = Result<FromRouter, RouterError>> + Send;
    /// The next notification if one is ready.
    fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>>;
    /// Lets the router continue after [`FromRouter::Paused`].
    fn resume(&mut self) -> impl Future<Output = Result<(), RouterError>> + Send;
    /// Subscribes (client spelling: the engine respells what it must when the packet is pushed).
    fn subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<Filter>,
        properties: Option<rumqttd::protocol::SubscribeProperties>,
    ) {
        self.push(Packet::Subscribe(Subscribe { pkid, filters }, properties));
    }
    fn unsubscribe(&mut self, pkid: u16, filters: &[String]) {
        self.push(Packet::Unsubscribe(Unsubscribe { pkid, filters: filters.to_vec() }, None));
    }
    /// Tells the router this client is gone (session saved if persistent). Implementations also
    /// do this when dropped, so that no exit path — a panic included — leaks the router's state
    /// for the client (a leaked member of a shared subscription keeps receiving its share).
    fn detach(&mut self);
}

/// Escapes a client id for the router, which refuses ids containing `+ $ # /`.
pub fn router_client_id(client_id: &str) -> Cow<'_, str> {
    if !client_id.contains(['%', '+', '$', '#', '/']) {
        return Cow::Borrowed(client_id);
    }
    let mut escaped = String::with_capacity(client_id.len() + 8);
    for c in client_id.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '+' => escaped.push_str("%2B"),
            '$' => escaped.push_str("%24"),
            '#' => escaped.push_str("%23"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The router's spelling of a subscription filter: its path spelled by `topic_form`, and
/// `$share/<group>/<filter>` gets a group name unique per filter, because the router keeps one
/// cursor per group *name*.
pub fn router_filter(filter: &str) -> Cow<'_, str> {
    let spelled = topic_form::filter_to_router(filter);
    match share_renamed(&spelled) {
        Some(renamed) => Cow::Owned(renamed),
        None => spelled,
    }
}

fn share_renamed(filter: &str) -> Option<String> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, path) = rest.split_once('/')?;
    let mut renamed = String::with_capacity(filter.len() * 2 + 8);
    renamed.push_str("$share/");
    renamed.push_str(group);
    renamed.push('%');
    for c in path.chars() {
        match c {
            '/' => renamed.push_str("%2F"),
            '%' => renamed.push_str("%25"),
            c => renamed.push(c),
        }
    }
    renamed.push('/');
    renamed.push_str(path);
    Some(renamed)
}

/// A packet in the router's spelling (topics, filters; see [`router_filter`]).
fn spelled(packet: Packet) -> Packet {
    match packet {
        Packet::Publish(mut publish, properties) => {
            publish.topic = topic_form::to_router(publish.topic);
            Packet::Publish(publish, properties)
        }
        Packet::Subscribe(mut subscribe, properties) => {
            for filter in &mut subscribe.filters {
                if let Cow::Owned(path) = router_filter(&filter.path) {
                    filter.path = path;
                }
            }
            Packet::Subscribe(subscribe, properties)
        }
        Packet::Unsubscribe(mut unsubscribe, properties) => {
            for filter in &mut unsubscribe.filters {
                if let Cow::Owned(path) = router_filter(filter) {
                    *filter = path;
                }
            }
            Packet::Unsubscribe(unsubscribe, properties)
        }
        other => other,
    }
}

/// How long a leaving persistent link waits for its anchor's SUBACK (a router round trip).
const ANCHOR_SUBACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

type LinkFactory = dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), RouterError> + Send + Sync;

/// rumqttd 0.20's `Router` on its own thread.
pub struct Rumqttd {
    build: Arc<LinkFactory>,
    system: Mutex<LinkTx>,
    /// Becomes `true` when routing has stopped (see [`Rumqttd::stopped`]).
    stopped: tokio::sync::watch::Receiver<bool>,
    shared_groups: Arc<SharedGroups>,
}

/// The shared subscriptions (router spelling) each persistent session has had in the router,
/// by escaped client id: what a leaving link must anchor (see `RumqttdLink::anchor_shared_groups`).
/// Kept like the router keeps them: across reconnections of the session, and also after an
/// UNSUBSCRIBE (a parked request of the filter survives it in the router); forgotten when the
/// session ends (clean attach, purge).
type SharedGroups = Mutex<std::collections::HashMap<String, Vec<String>>>;

/// What a persistent link needs to anchor its shared groups when it leaves.
struct Anchoring {
    factory: Arc<LinkFactory>,
    groups: Arc<SharedGroups>,
    client_id: String,
}

/// The key of rumqttd's per-filter segment override (`router/logs.rs`, `Data::new`: a filter
/// gets the override when `matches(filter, key)`) that every filter the gate hands the router
/// matches except `#`: `matches` treats the filter as a topic, and a `#` level meeting `+` does not
/// match (`protocol/mod.rs:676`), while every other first level does. Router filters never start
/// with `$` (`topic_form`; a shared subscription's log is that of its path).
const EVERY_FILTER_BUT_THE_HUBS: &str = "+/#";

/// The router's log of the fleet hub's `#` (`routing::hub`): the hub holds publishers once it
/// is `hub::HUB_WINDOW` behind (`hub` checks these against it), so it needs a log a few windows
/// long, not the 8 MiB a persistent subscriber's log holds by default. A log keeps what was consumed until its
/// oldest segment is dropped, so the default sizing held ~20 MB of a fleet's consumed messages
/// (docs/benchmarks.md, "P8: the hub's log"); this holds ~1 MiB, and the hub may fall 768 KiB
/// (12 windows) behind before it would lose anything.
pub(crate) const HUB_SEGMENT_SIZE: usize = 256 * 1024;
pub(crate) const HUB_SEGMENT_COUNT: usize = 4;

/// The hub log's segments: [`HUB_SEGMENT_SIZE`] × [`HUB_SEGMENT_COUNT`], or the configured
/// sizing when it is smaller, or when back-pressure is off (`gate_backpressure_window 0`:
/// nothing holds publishers for the hub, so its log is as long as the user asked for).
fn hub_log_segments(gate: &GateSettings) -> (usize, usize) {
    let configured = gate.segment_size.saturating_mul(gate.segment_count);
    if gate.backpressure_window == 0 || configured <= HUB_SEGMENT_SIZE * HUB_SEGMENT_COUNT {
        (gate.segment_size, gate.segment_count)
    } else {
        (HUB_SEGMENT_SIZE, HUB_SEGMENT_COUNT)
    }
}

impl Rumqttd {
    /// Starts the router thread (with the bounded settings of `gate`) and the system link.
    pub fn start(gate: &GateSettings) -> Result<Arc<Rumqttd>, RouterError> {
        let (hub_segment_size, hub_segment_count) = hub_log_segments(gate);
        let config = RouterConfig {
            max_connections: gate.router_connections,
            max_outgoing_packet_count: 200,
            // The router's default applies to the one filter the override below does not
            // match, `#`, which only the fleet hub has (`topic_form::HUB_ALL_TOPICS`).
            max_segment_size: hub_segment_size,
            max_segment_count: hub_segment_count,
            custom_segment: Some(
                [(
                    EVERY_FILTER_BUT_THE_HUBS.to_owned(),
                    SegmentConfig { max_segment_size: gate.segment_size, max_segment_count: gate.segment_count },
                )]
                .into(),
            ),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        let router_tx = Router::new(0, config).spawn();
        // Every receiver of this channel is gone exactly when the router thread has ended.
        let router_alive = router_tx.clone();
        let build: Arc<LinkFactory> = Arc::new(move |client_id, clean| {
            LinkBuilder::new(client_id, router_tx.clone())
                .clean_session(clean)
                .topic_alias_max(0)
                .build()
                .map_err(RouterError::from)
        });
        let (system_tx, mut system_rx, _) =
            build(SYSTEM_CLIENT_ID, true).map_err(|e| RouterError::Start(e.to_string()))?;
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        // The system link's notifications are drained forever; its channel fails only when the
        // router drops the link, which happens when the router thread dies (its state is dropped
        // while it unwinds) — the router itself never disconnects the system link: every will
        // passes `router_guard::admit` first.
        std::thread::Builder::new()
            .name("router-watch".into())
            .spawn(move || {
                while system_rx.recv().is_ok() {}
                // The router's state is dropped field by field while its thread unwinds: its
                // event channel may close a moment after the system link's.
                for _ in 0..100 {
                    if router_alive.is_disconnected() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                if router_alive.is_disconnected() {
                    error!("routing stopped: the rumqttd router thread has died");
                } else {
                    error!("routing stopped: the router dropped the system link (wills can no longer be published)");
                }
                stopped_tx.send_replace(true);
            })
            .map_err(|e| RouterError::Start(e.to_string()))?;
        Ok(Arc::new(Rumqttd { build, system: Mutex::new(system_tx), stopped, shared_groups: Default::default() }))
    }

    fn forget_shared_groups(&self, router_id: &str) {
        self.shared_groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(router_id);
    }

    /// Whether the router thread still runs (the console's `/readyz`).
    pub fn is_running(&self) -> bool {
        !*self.stopped.borrow()
    }

    /// Resolves when routing has stopped for good (the router thread died): the broker cannot
    /// serve clients any more and should exit, so that a service manager restarts it.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut stopped = self.stopped.clone();
        async move {
            // An error means the watching thread is gone too: treated as stopped.
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    }

    fn build(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> impl Future<Output = Result<(LinkTx, LinkRx, Notification), RouterError>> + use<> {
        let build = self.build.clone();
        let id = router_client_id(client_id).into_owned();
        async move { tokio::task::spawn_blocking(move || build(&id, !persistent)).await.map_err(|_| RouterError::Closed)? }
    }
}

impl RoutingEngine for Rumqttd {
    type Link = RumqttdLink;

    fn attach(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> impl Future<Output = Result<Attached<RumqttdLink>, RouterError>> + Send {
        let built = self.build(client_id, persistent);
        let router_id = router_client_id(client_id).into_owned();
        if !persistent {
            self.forget_shared_groups(&router_id);
        }
        let anchoring = persistent.then(|| Anchoring {
            factory: self.build.clone(),
            groups: self.shared_groups.clone(),
            client_id: router_id,
        });
        async move {
            let (tx, rx, connack) = built.await?;
            let session_present = matches!(
                Option::<Packet>::from(connack),
                Some(Packet::ConnAck(ack, _)) if ack.session_present
            );
            let mut link = RumqttdLink::new(tx, rx, anchoring);
            link.push(Packet::PingReq(PingReq));
            link.flush()?;
            Ok(Attached { link, session_present })
        }
    }

    fn purge(&self, client_id: &str) -> impl Future<Output = ()> + Send {
        self.forget_shared_groups(&router_client_id(client_id));
        let built = self.build(client_id, false);
        async move {
            if let Ok((tx, rx, _)) = built.await {
                RumqttdLink::new(tx, rx, None).detach();
            }
        }
    }

    fn attach_internal(&self, name: &str) -> impl Future<Output = Result<RumqttdLink, RouterError>> + Send {
        let build = self.build.clone();
        // `%g` cannot occur in an escaped client id (see `router_client_id`).
        let id = format!("{GATE_CLIENT_ID}-{name}");
        async move {
            let (tx, rx, _) =
                tokio::task::spawn_blocking(move || build(&id, true)).await.map_err(|_| RouterError::Closed)??;
            let mut link = RumqttdLink::new(tx, rx, None);
            link.push(Packet::PingReq(PingReq));
            link.flush()?;
            Ok(link)
        }
    }

    fn inject(&self, message: crate::routing::envelope::Routable) {
        let crate::routing::envelope::Routable { topic, sealed, properties } = message;
        let publish = Publish::new(topic_form::to_router(topic), sealed, false);
        let mut system = self.system.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // `send` is async in name only: it pushes and notifies synchronously.
        let _ = system.send(Packet::Publish(publish, properties)).now_or_never();
    }
}

/// A client link to rumqttd.
pub struct RumqttdLink {
    tx: LinkTx,
    rx: LinkRx,
    pending: VecDeque<Packet>,
    /// Disconnect sent, or the router already dropped the link.
    detached: bool,
    /// A deadline that has always passed, for polling the router without waiting.
    past: Instant,
    /// For a persistent link (the router keeps its session when it detaches).
    anchoring: Option<Anchoring>,
    repair: UnsubscribeRepair,
}

/// An UNSUBSCRIBE without filters: the router does nothing with it (no UNSUBACK either). Pushed
/// after every UNSUBSCRIBE, so that neither it nor its repair is the last packet of a batch,
/// which `flush` hands over separately from the rest: the router takes the others all at once.
/// (The gate relies on it: `unsubscribe_repair`, and a resumed session's re-sent subscriptions
/// followed by the UNSUBSCRIBE of those revoked, answered before any later delivery.)
fn nothing() -> Packet {
    Packet::Unsubscribe(Unsubscribe { pkid: 0, filters: Vec::new() }, None)
}

impl RumqttdLink {
    fn new(tx: LinkTx, rx: LinkRx, anchoring: Option<Anchoring>) -> Self {
        RumqttdLink {
            tx,
            rx,
            pending: VecDeque::with_capacity(64),
            detached: false,
            past: Instant::now(),
            anchoring,
            repair: UnsubscribeRepair::default(),
        }
    }

    /// A notification for the gate (the repair's SUBACKs are not).
    fn converted(&mut self, notification: Notification) -> FromRouter {
        match convert(notification) {
            FromRouter::SubAck(_) if !self.repair.suback_is_clients() => FromRouter::Nothing,
            other => other,
        }
    }

    /// `router_guard`: `handle_disconnection` (routing.rs:512) panics when a persistent link
    /// leaves a shared group it was the last member of while a delivery of that filter is
    /// unacknowledged — the group is dropped just before it is looked up. (UNSUBSCRIBE first does
    /// not help: a parked shared request survives it, logs.rs `remove_waiters_for_id` looks the
    /// `$share/...` name up among plain filters.) So the link leaves while a clean anchor link is
    /// a member of each of its groups; the anchor leaves right after, the router processing the
    /// three events in the order they were sent (the anchor's membership acknowledged before the
    /// link's DISCONNECT is queued). A message arriving in between may go to the
    /// anchor (QoS 0, dropped) if the group has no other member.
    fn anchor_shared_groups(&mut self) -> Option<(LinkTx, LinkRx)> {
        let anchoring = self.anchoring.as_ref()?;
        let shared = {
            let groups = anchoring.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            groups.get(&anchoring.client_id).filter(|filters| !filters.is_empty())?.clone()
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = format!("{ANCHOR_CLIENT_ID}-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        // A short blocking round trip to the router (as every link build is).
        let (mut tx, rx, _) = match (anchoring.factory)(&id, true) {
            Ok(built) => built,
            Err(error) => {
                error!(%error, "no anchor for the shared groups of a leaving persistent session");
                return None;
            }
        };
        let filters = shared
            .into_iter()
            .map(|path| Filter {
                path,
                qos: rumqttd::protocol::QoS::AtMostOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: rumqttd::protocol::RetainForwardRule::Never,
            })
            .collect();
        let subscribe = Packet::Subscribe(Subscribe { pkid: 1, filters }, None);
        let _ = tx.send(subscribe).now_or_never();
        // The anchor must be a member before the leaving link's DISCONNECT is even queued: the
        // router takes all of a link's queued packets at once, so an anchor whose SUBSCRIBE and
        // DISCONNECT were both queued by then would leave the group first (fuzz crash 29e5e8cc).
        // Another short blocking round trip, bounded.
        let mut rx = rx;
        let deadline = std::time::Instant::now() + ANCHOR_SUBACK_WAIT;
        loop {
            match rx.recv_deadline(deadline) {
                Ok(Some(notification)) => {
                    if matches!(Option::<Packet>::from(notification), Some(Packet::SubAck(..))) {
                        break;
                    }
                }
                Ok(None) => continue,
                Err(error) => {
                    error!(%error, "the anchor of a leaving persistent session's shared groups was not acknowledged");
                    break;
                }
            }
        }
        Some((tx, rx))
    }

    fn track_shared(&mut self, packet: &Packet) {
        let (Some(anchoring), Packet::Subscribe(subscribe, _)) = (&self.anchoring, packet) else { return };
        let mut shared = subscribe.filters.iter().filter(|f| f.path.starts_with("$share/")).peekable();
        if shared.peek().is_none() {
            return;
        }
        let mut groups = anchoring.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = groups.entry(anchoring.client_id.clone()).or_default();
        for filter in shared {
            if !known.contains(&filter.path) {
                known.push(filter.path.clone());
            }
        }
    }
}

impl Drop for RumqttdLink {
    fn drop(&mut self) {
        self.detach();
    }
}

fn convert(notification: Notification) -> FromRouter {
    match notification {
        Notification::Forward(forward) => FromRouter::Publish(Routed::from_router(forward.publish, forward.properties)),
        Notification::Unschedule => FromRouter::Paused,
        // UNSUBACKs are answered by the gate and PUBACK, PUBREC and PUBCOMP never come to a
        // client link; the router's DISCONNECT is followed by the link closing.
        other => match Option::<Packet>::from(other) {
            Some(Packet::SubAck(suback, _)) => FromRouter::SubAck(suback),
            Some(Packet::PubRel(rel, _)) => FromRouter::PubRel(rel.pkid),
            Some(Packet::PingResp(_)) => FromRouter::PingResp,
            _ => FromRouter::Nothing,
        },
    }
}

impl RouterLink for RumqttdLink {
    fn push(&mut self, packet: Packet) {
        let packet = spelled(packet);
        match &packet {
            Packet::Subscribe(subscribe, _) => {
                self.track_shared(&packet);
                self.repair.subscribing(subscribe);
                self.pending.push_back(packet);
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                let repair = self.repair.unsubscribing(unsubscribe);
                self.pending.push_back(packet);
                self.pending.extend(repair);
                // The router takes the UNSUBSCRIBE, its repair and what came before it in the
                // batch at once, with no delivery in between (`flush`, `nothing`).
                self.pending.push_back(nothing());
            }
            _ => self.pending.push_back(packet),
        }
    }

    fn flush(&mut self) -> Result<(), RouterError> {
        let Some(last) = self.pending.pop_back() else { return Ok(()) };
        if !self.pending.is_empty() {
            // Packets are ~400 bytes: hand the whole queue over when the router has taken
            // everything before (the usual case) instead of copying each one.
            let mut buffer = self.tx.buffer();
            if buffer.is_empty() {
                std::mem::swap(&mut *buffer, &mut self.pending);
            } else {
                buffer.extend(self.pending.drain(..));
            }
        }
        // `LinkTx::send` completes on its first poll (a synchronous flume send).
        match self.tx.send(last).now_or_never() {
            Some(Err(_)) => Err(RouterError::Closed),
            _ => Ok(()),
        }
    }

    async fn recv(&mut self) -> Result<FromRouter, RouterError> {
        match self.rx.next().await {
            Ok(Some(notification)) => Ok(self.converted(notification)),
            Ok(None) => Ok(FromRouter::Nothing),
            Err(_) => {
                self.detached = true; // the router dropped us; its connection id may be reused
                Err(RouterError::Closed)
            }
        }
    }

    fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>> {
        // The blocking call with a deadline that has passed, not `next().now_or_never()`: the
        // future would be built and its 816-byte result copied around for every message
        // (a third of the gate's time in a QoS 1 fan-out, docs/benchmarks.md). A closed link
        // also times out here; the next `recv` reports it.
        match self.rx.recv_deadline(self.past) {
            // Taken apart here, not passed on whole: a notification is 816 bytes to copy.
            Ok(Some(Notification::Forward(forward))) => {
                Some(Ok(FromRouter::Publish(Routed::from_router(forward.publish, forward.properties))))
            }
            Ok(Some(notification)) => Some(Ok(self.converted(notification))),
            Ok(None) | Err(LinkError::RecvTimeout(_)) => None,
            Err(_) => {
                self.detached = true;
                Some(Err(RouterError::Closed))
            }
        }
    }

    fn detach(&mut self) {
        if std::mem::replace(&mut self.detached, true) {
            return;
        }
        let anchor = self.anchor_shared_groups();
        let disconnect = Disconnect { reason_code: DisconnectReasonCode::NormalDisconnection };
        self.pending.push_back(Packet::Disconnect(disconnect.clone(), None));
        let _ = self.flush();
        if let Some((mut tx, _rx)) = anchor {
            let _ = tx.send(Packet::Disconnect(disconnect, None)).now_or_never();
        }
    }

    async fn resume(&mut self) -> Result<(), RouterError> {
        self.rx.wake().await.map_err(|_| RouterError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn only_the_hubs_filter_escapes_the_configured_segment_sizing() {
        for filter in ["+/#", "a", "a/b", "a/#", "+", "+/+/x", "/#", "\u{1}$x/#", "\u{1}é"] {
            assert!(rumqttd::protocol::matches(filter, EVERY_FILTER_BUT_THE_HUBS), "{filter}");
        }
        // What the gate hands the router for a client's `#` and for the hub's.
        assert!(rumqttd::protocol::matches(&router_filter("#"), EVERY_FILTER_BUT_THE_HUBS));
        assert!(!rumqttd::protocol::matches(&router_filter(topic_form::HUB_ALL_TOPICS), EVERY_FILTER_BUT_THE_HUBS));
    }

    #[test]
    fn the_hubs_log_is_short_unless_configured_shorter_or_nothing_holds_publishers_for_the_hub() {
        let default = GateSettings::default();
        assert_eq!(hub_log_segments(&default), (HUB_SEGMENT_SIZE, HUB_SEGMENT_COUNT));
        let small = GateSettings { segment_size: 4096, segment_count: 2, ..GateSettings::default() };
        assert_eq!(hub_log_segments(&small), (4096, 2));
        let unheld = GateSettings { backpressure_window: 0, ..GateSettings::default() };
        assert_eq!(hub_log_segments(&unheld), (default.segment_size, default.segment_count));
    }

    #[test]
    fn routed_messages_keep_the_routers_qos_and_packet_id() {
        // rumqttd's own serialization layout is the only way to build a `Publish` with a QoS.
        let mut raw = BytesMut::new();
        raw.put_u8(0b0011_0101); // PUBLISH, QoS 2, retain
        raw.put_u16(77);
        raw.put_u16(3);
        raw.put_slice(b"a/b");
        raw.put_slice(b"data");
        let routed = Routed::from_router(Publish::deserialize(raw.freeze()), None);
        assert_eq!((routed.qos, routed.pkid, routed.retain), (2, 77, true));
        let routed = Routed::from_router(Publish::new("a/b", "data", false), None);
        assert_eq!((routed.qos, routed.pkid, routed.retain, &routed.payload[..]), (0, 0, false, &b"data"[..]));
        assert_eq!((&routed.topic[..], &routed.payload[..]), (&b"a/b"[..], &b"data"[..]));
    }

    #[test]
    fn client_ids_are_escaped_injectively() {
        assert_eq!(router_client_id("plain-id_1"), "plain-id_1");
        assert_eq!(router_client_id("site/dev+1#$"), "site%2Fdev%2B1%23%24");
        assert_eq!(router_client_id("%2F"), "%252F");
        assert_ne!(router_client_id("a/b"), router_client_id("a%2Fb"));
        assert!(!router_client_id(SYSTEM_CLIENT_ID).starts_with(SYSTEM_CLIENT_ID) || SYSTEM_CLIENT_ID.contains('%'));
        assert_eq!(router_client_id("%system"), "%25system");
    }

    #[test]
    fn shared_groups_are_renamed_per_filter() {
        assert_eq!(router_filter("a/b"), "a/b");
        assert_eq!(router_filter("$share/g/a/b"), "$share/g%a%2Fb/a/b");
        assert_ne!(router_filter("$share/g/a"), router_filter("$share/g/b"));
    }
}
