//! One task per client connection: the CONNECT handshake, then a loop over the socket, the router
//! link, the connection's mailbox (control replies, kicks) and its keepalive deadline, and a
//! single exit path that tells the router, the session registry and the will what happened.
//!
//! Per wake-up the task handles everything that is ready, hands the router one batch and writes
//! the client one buffer. Every PUBLISH, SUBSCRIBE filter, UNSUBSCRIBE filter and delivered
//! message goes through [`ClientAuthz::allows`], live.
//!
//! This file owns the connection's state and its event loop; the steps live beside it, in the
//! order a packet meets them: `handshake` (CONNECT to CONNACK), `inbound` (frames from the
//! client), `publish` and `subscribe` (what those packets ask), `outbound` (what goes to the
//! client: deliveries, replies, `$SYS`, writes) and `exit` (the one way out).

mod exit;
mod extras;
mod handshake;
mod hub;
mod inbound;
mod outbound;
mod persisted;
mod publish;
mod saving;
mod subscribe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{Packet, PingReq};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::gate::codec;
use crate::gate::delivery::RecentCopies;
use crate::gate::flow_control::OutboundWindow;
use crate::gate::mailbox::{Mail, MailReceiver, MailSender};
use crate::gate::subscription_set::SubscriptionSet;
use crate::gate::subscriptions::PendingAcks;
use crate::routing::envelope::Publisher;
use crate::routing::lazy_link::LazyLink;
use crate::routing::router_link::{FromRouter, RouterError, RouterLink, RoutingEngine};
use crate::routing::subscribed_filters::LastAnswer;
use crate::routing::topic_budget::TopicBudget;
use crate::security::{ClientAuthz, Protocol, TlsIdentity};
use crate::shared::{Listener, Shared, Unauthenticated};
use exit::Exit;

/// Read buffer growth: idle connections keep a small buffer, busy ones read up to the maximum at
/// once. (Routed messages are slices of this buffer: a small buffer pins less memory.)
const READ_CHUNK_MIN: usize = 1024;
const READ_CHUNK_MAX: usize = 64 * 1024;
/// Stop draining router notifications into the write buffer beyond this, and write first.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// A write buffer that grew beyond this is given back to the allocator after it is written.
const WRITE_BUFFER_KEEP: usize = 4 * 1024 * 1024;
/// A connection holds no read buffer while it waits unless its last reads (two or more in a row)
/// came closer together than this.
const QUIET_READS: Duration = Duration::from_secs(1);
/// How much a client may send after its CONNECT while its login is decided (more is left in
/// the socket until then).
const PIPELINED_BEFORE_CONNACK: usize = 64 * 1024;
/// Upper bound for the last writes (DISCONNECT) of a closing connection.
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one accepted socket until it closes.
/// `tls` is the identity of a verified client certificate (TLS listeners only).
pub(crate) fn serve<E, S>(
    shared: Arc<Shared<E>>,
    stream: S,
    peer: SocketAddr,
    listener: Arc<Listener>,
    tls: Option<TlsIdentity>,
    unauthenticated: Unauthenticated,
) -> impl Future<Output = ()> + Send
where
    E: RoutingEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The handshake (authentication, session claim) and the exit path are boxed while they run,
    // and the connection's state lives in a box of its own, so that an idle connection's task
    // holds only the event loop's state: not the arguments (built into the handshake's box here,
    // not kept by an async fn), nor the connection twice (as the handshake's result and as
    // `run`'s `self`). See docs/benchmarks.md, "The gate's memory per connection".
    let handshake = Box::pin(handshake::handshake(shared, stream, peer, listener, tls, unauthenticated));
    async move {
        if let Some(connection) = handshake.await {
            connection.run().await;
        }
    }
}

struct Connection<E: RoutingEngine, S> {
    shared: Arc<Shared<E>>,
    stream: S,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Attached on first use (see `lazy_link`), or at once for a session the router holds.
    link: LazyLink<E::Link>,
    protocol: Protocol,
    conn_id: u64,
    /// The listener the client connected through.
    listener: Arc<Listener>,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    authz: Arc<dyn ClientAuthz>,
    /// Dropped when the connection has fully left (a takeover waits for that: `session`).
    mailbox: MailReceiver,
    mailbox_tx: MailSender,
    release_watch: watch::Receiver<u64>,
    probe_requests: watch::Receiver<u64>,
    /// 1.5 × keepalive; `None` for keepalive 0.
    keep_alive: Option<Duration>,
    keep_alive_timer: std::pin::Pin<Box<Sleep>>,
    last_read: Instant,
    /// The client's v5 Maximum Packet Size.
    client_max_packet: usize,
    max_topic_alias: u16,
    subscriptions: SubscriptionSet,
    /// New topics this client may still publish to (`topic_budget`).
    topic_budget: TopicBudget,
    /// The broker's Receive Maximum for this client's QoS 2 messages (v5; `usize::MAX`: none).
    inbound_maximum: usize,
    /// What the client may have unacknowledged, and what waits for room (`flow_control`).
    window: OutboundWindow,
    /// No Local compares message publishers with this.
    publisher: Publisher,
    /// The sequence of this connection's last routed message (see `routing::envelope`).
    sequence: u64,
    /// Messages that matched several subscriptions, to deliver once (see `gate::delivery`).
    recent_copies: RecentCopies,
    /// Whether any filter matched this client's last PUBLISH topic (`subscribed_filters`).
    last_routing_answer: LastAnswer,
    /// The client's v5 Topic Alias Maximum (aliases the broker may use towards it).
    client_topic_alias_max: u16,
    pending_acks: PendingAcks,
    /// What most connections never use: router acknowledgements and back-pressure, QoS 2,
    /// topic aliases, held lanes (`extras`).
    extras: extras::Extras,
    router_paused: bool,
    /// The client acknowledged a delivery in the packets being handled (see `Backlog::progress`).
    client_acked: bool,
    /// How much to reserve for the next read (grows with the connection's traffic).
    read_chunk: usize,
    /// Complete packets wait in `read_buf` (pipelined after CONNECT, or left when a hold began).
    reads_pending: bool,
    /// Fewer than two reads in a row came within `QUIET_READS` of the one before (see there).
    reads_quiet: bool,
    /// Reads in a row that came within `QUIET_READS` of the one before.
    close_reads: u8,
    /// Boxed: a will is rare, and inline it would be 200 bytes of every connection.
    will: Option<Box<codec::Will>>,
    clean_start: bool,
    session_expiry: u32,
    /// The router keeps this client's session when the link closes.
    persistent_link: bool,
    /// With persistence: this connection's changes and stored copies in flight.
    persist: Option<Box<crate::persistence::connection::ConnectionState>>,
    /// Its retained replays due from the gate's index, and with `gate_fleet_hub true` its hub
    /// subscriptions, queue and deliveries (`hub`).
    hub: Option<Box<hub::HubState>>,
    /// PUBLISHes for the publisher pool, handed over with the router batch (`hub`).
    pool_batch: Vec<Packet>,
    /// With the hub: changes when congested hub queues let held publishers continue.
    hub_release: Option<watch::Receiver<u64>>,
}

/// What woke the connection up. (Not boxed: it lives for one iteration, and boxing the router
/// variant would allocate per notification.)
#[allow(clippy::large_enum_variant)]
enum Event {
    Read(std::io::Result<usize>),
    Router(Result<FromRouter, RouterError>),
    Hub,
    /// The oldest read waiting for its changes' sync has its answer (`saving`).
    Saved(Result<(), String>),
    Mail(Mail),
    KeepAlive,
    Released,
    HoldExpired,
    HubHoldExpired,
    ProbeRequested,
}

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    async fn run(mut self: Box<Self>) {
        let exit = self.event_loop().await;
        Box::pin(self.finish(exit)).await;
    }

    async fn event_loop(&mut self) -> Exit {
        self.reads_pending = !self.read_buf.is_empty();
        loop {
            if self.reads_pending
                && !self.held()
                && !self.saves_full()
                && let Err(exit) = self.handle_reads().await
            {
                return exit;
            }
            if let Err(exit) = self.write_out().await {
                return exit;
            }
            let held = self.held();
            let hold_deadline =
                self.extras.get().and_then(|extras| extras.backlog.hold_deadline(&self.shared.pressure));
            let hub_hold_deadline = if held && self.held_by_hub() {
                self.shared.hub.as_ref().and_then(|hub| hub.hold_deadline())
            } else {
                None
            };
            if self.read_buf.is_empty() && self.read_chunk == READ_CHUNK_MIN && self.reads_quiet {
                // A quiet connection holds no read buffer while it waits: reading reserves 64
                // bytes when polled, and a read that leaves part of a packet reserves the chunk
                // below (docs/benchmarks.md, "The gate's memory per connection"). Not while reads
                // come close together (a QoS 1 subscriber's acknowledgements): there the small
                // reads would cost a wake-up each.
                if self.read_buf.capacity() > 0 {
                    self.read_buf = BytesMut::new();
                }
            } else if self.read_buf.capacity() - self.read_buf.len() < self.read_chunk / 4 {
                self.read_buf.reserve(self.read_chunk);
            }
            let saves_full = self.saves_full();
            let tracked = self.extras.tracked();
            let rare = rare_waits(RareWaits {
                release: held.then_some(&mut self.release_watch),
                hub_release: self.hub_release.as_mut().filter(|_| held),
                hold_deadline,
                hub_hold_deadline,
                probe_requests: tracked.then_some(&mut self.probe_requests),
            });
            // (`event` ends with this block: held across the awaits below, its 80 bytes would be
            // part of every connection's task.)
            let read_now = {
                let event = tokio::select! {
                    saved = saving::oldest_saved(self.persist.as_deref_mut()) => Event::Saved(saved),
                    mail = self.mailbox.recv() => Event::Mail(mail),
                    () = hub_ready(self.hub.as_deref()) => Event::Hub,
                    note = router_note(&mut self.link) => Event::Router(note),
                    read = self.stream.read_buf(&mut self.read_buf), if !held && !saves_full => Event::Read(read),
                    _ = &mut self.keep_alive_timer, if self.keep_alive.is_some() => Event::KeepAlive,
                    event = async { rare.unwrap_or_else(|| unreachable!()).await }, if rare.is_some() => event,
                };
                self.on_event(event, held || saves_full)
            };
            let result = match read_now {
                Ok(true) => {
                    let result = self.handle_reads().await;
                    // A busy socket is always readable, so without this a publisher would loop
                    // through its whole cooperative budget (~128 reads) before subscribers run
                    // and can notice a backlog.
                    tokio::task::yield_now().await;
                    result
                }
                Ok(false) => Ok(()),
                Err(exit) => Err(exit),
            };
            if let Err(exit) = result {
                return exit;
            }
        }
    }

    /// Handles what woke the connection up; `Ok(true)`: the socket was read, handle the reads.
    /// `not_reading`: the connection reads no more (held, or its saves wait), which is not the
    /// client's silence.
    fn on_event(&mut self, event: Event, not_reading: bool) -> Result<bool, Exit> {
        match event {
            Event::Read(Ok(0)) => Err(Exit::Closed),
            Event::Read(Err(_)) => Err(Exit::Lost),
            Event::Read(Ok(read)) => {
                let now = Instant::now();
                // Two reads close together are not yet busy: a device subscribes right after
                // its CONNECT, and acknowledges a command and publishes its telemetry
                // together, then waits (P8: with one close pair counted as busy, every device
                // kept a 1 KB read buffer; docs/benchmarks.md, "The gate's memory per
                // connection").
                self.close_reads =
                    if now - self.last_read >= QUIET_READS { 0 } else { self.close_reads.saturating_add(1) };
                self.reads_quiet = self.close_reads < 2;
                self.last_read = now;
                if read >= self.read_chunk / 2 {
                    self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK_MAX);
                } else if read < self.read_chunk / 8 {
                    // Quieter again: back towards holding no buffer while idle.
                    self.read_chunk = (self.read_chunk / 2).max(READ_CHUNK_MIN);
                }
                Ok(true)
            }
            Event::Router(note) => self.handle_router(note).map(|()| false),
            Event::Hub => {
                self.drain_hub();
                Ok(false)
            }
            Event::Saved(answer) => self.on_saved(answer).map(|()| false),
            Event::Mail(mail) => self.handle_mail(mail).map(|()| false),
            Event::KeepAlive => self.check_keep_alive(not_reading).map(|()| false),
            // Frames left in the buffer when the hold began are handled at the loop's top.
            Event::Released => Ok(false),
            Event::HubHoldExpired => {
                if let Some(hub) = &self.shared.hub {
                    hub.expire_holds();
                }
                Ok(false)
            }
            Event::HoldExpired => {
                if let Some(extras) = self.extras.get_mut() {
                    extras.backlog.hold_expired(&self.shared.pressure);
                }
                Ok(false)
            }
            Event::ProbeRequested => {
                let outstanding = self.extras.outstanding();
                if self.link.is_attached()
                    && self
                        .extras
                        .get_mut()
                        .is_some_and(|extras| extras.backlog.wants_probe(&self.shared.pressure, outstanding, true))
                {
                    self.link.push(Packet::PingReq(PingReq));
                }
                self.flush_router().map(|()| false)
            }
        }
    }

    /// Back-pressure holds this connection's publishing (see `backpressure`).
    fn held(&self) -> bool {
        (self.extras.get().is_some_and(|extras| {
            extras.held_lanes.is_some_and(|lanes| self.shared.pressure.holding(&lanes))
                && !extras.backlog.exempt(&self.shared.pressure)
        })) || self.held_by_hub()
    }

    fn check_keep_alive(&mut self, held: bool) -> Result<(), Exit> {
        let Some(keep_alive) = self.keep_alive else { return Ok(()) };
        let now = Instant::now();
        if held {
            // A held publisher is not being read: its silence is ours.
            self.last_read = now;
        }
        let deadline = self.last_read + keep_alive;
        if deadline > now {
            self.keep_alive_timer.as_mut().reset(deadline);
            Ok(())
        } else {
            Err(Exit::KeepAliveTimeout)
        }
    }
}

/// The router's next notification (never without a link). Boxed while it waits: rumqttd's
/// receive future is ~1 KB, which inline would be part of every connection's task, linked or
/// not (docs/benchmarks.md, "The gate's memory per connection").
async fn router_note<L: RouterLink>(link: &mut LazyLink<L>) -> Result<FromRouter, RouterError> {
    if !link.is_attached() {
        return std::future::pending().await;
    }
    Box::pin(link.recv()).await
}

/// What only a held publisher or a subscriber tracked by back-pressure waits for (`None`: not
/// waited for).
struct RareWaits<'a> {
    /// Back-pressure let held publishers continue.
    release: Option<&'a mut watch::Receiver<u64>>,
    /// Congested hub queues let held publishers continue.
    hub_release: Option<&'a mut watch::Receiver<u64>>,
    hold_deadline: Option<std::time::Instant>,
    hub_hold_deadline: Option<std::time::Instant>,
    /// Publishers near a hold point ask tracked subscribers for a probe.
    probe_requests: Option<&'a mut watch::Receiver<u64>>,
}

/// The first of `waits`, boxed; `None` without any. Those waits are rare, and their futures
/// inline (two timers and three watch notifications, with their arguments) were ~450 bytes of
/// every connection's task (docs/benchmarks.md, "The connection's own state and task").
fn rare_waits(waits: RareWaits<'_>) -> Option<std::pin::Pin<Box<impl Future<Output = Event> + Send + '_>>> {
    let RareWaits { release, hub_release, hold_deadline, hub_hold_deadline, probe_requests } = waits;
    if release.is_none()
        && hub_release.is_none()
        && hold_deadline.is_none()
        && hub_hold_deadline.is_none()
        && probe_requests.is_none()
    {
        return None;
    }
    Some(Box::pin(async move {
        tokio::select! {
            () = any_change(release) => Event::Released,
            () = changed(hub_release) => Event::Released,
            () = expiry(hub_hold_deadline) => Event::HubHoldExpired,
            () = expiry(hold_deadline) => Event::HoldExpired,
            () = any_change(probe_requests) => Event::ProbeRequested,
        }
    }))
}

/// Resolves at `deadline` (never without one).
async fn expiry(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when `watch` changes or its sender is gone (never without one).
async fn any_change(watch: Option<&mut watch::Receiver<u64>>) {
    match watch {
        Some(watch) => {
            let _ = watch.changed().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the hub queued something for the connection (never without hub subscriptions).
async fn hub_ready(hub: Option<&hub::HubState>) {
    match hub {
        Some(hub) => hub.ready().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `release` changes (never without one, or once its sender is gone).
async fn changed(release: Option<&mut watch::Receiver<u64>>) {
    if let Some(release) = release
        && release.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counted;
    use crate::routing::router_link::Rumqttd;
    use tokio::net::TcpStream;

    type Plain = Counted<TcpStream>;

    /// The size of what `f` returns (here: a future, without building it).
    fn output_size<F, A, B, C, D, G, H, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, G, H) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every connected client costs its task's future and its boxed state (docs/benchmarks.md,
    /// "The gate's memory per connection": 5,168 bytes of future before, when the state was
    /// held twice and rumqttd's receive future inline; then 872, with the waits of held
    /// publishers and tracked subscribers inline; 384 now. "The connection's own state and
    /// task": the state was 1,248 bytes with its occasional parts inline, 680 now). The bounds
    /// leave room for ordinary changes; a large inline future, a second copy of the state or
    /// the occasional parts back inline cross them.
    #[test]
    fn an_idle_connection_keeps_a_small_task() {
        let task = output_size(serve::<Rumqttd, Plain>);
        let state = std::mem::size_of::<Connection<Rumqttd, Plain>>();
        assert!(task <= 512, "serve's future is {task} bytes");
        assert!(state <= 768, "the connection's state is {state} bytes");
    }
}
