//! One task per client connection: the CONNECT handshake, then a loop over the socket, the router
//! link, the connection's mailbox (control replies, kicks) and its keepalive deadline, and a
//! single exit path that tells the router, the session registry and the will what happened.
//!
//! Per wake-up the task handles everything that is ready, hands the router one batch and writes
//! the client one buffer. Every PUBLISH, SUBSCRIBE filter, UNSUBSCRIBE filter and delivered
//! message goes through [`ClientAuthz::allows`], live.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttd::protocol::{
    DisconnectReasonCode, Filter, Packet, PingReq, PubRecReason, Publish, PublishProperties, Subscribe,
    SubscribeProperties, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use crate::ack_sequencer::AckSequencer;
use crate::backpressure::{Backlog, Lane, ProbeStep, TopicLanes};
use crate::broker::Shared;
use crate::client_log::{self, Departure, Login, PublishLine};
use crate::codec::{self, ConnAckProps, ConnectError, FrameError, PublishMeta};
use crate::lazy_link::LazyLink;
use crate::listener::Unauthenticated;
use crate::logging::client_text;
use crate::metrics::{METRICS, Metrics};
use crate::router_guard::{self, ToRouter};
use crate::router_link::{FromRouter, RouterError, RouterLink, RoutingEngine};
use crate::security::{
    Access, ClientAuthz, ConnectDecision, ConnectRequest, ControlOutcome, ControlReply, ControlSender, Protocol,
    TlsIdentity,
};
use crate::session::{KickReason, Mail, PendingWill, Release, SavedSession, Subscription, SubscriptionKind};
use crate::subscriptions::{self, PendingAcks};
use crate::topic_budget::TopicBudget;

/// Read buffer growth: idle connections keep a small buffer, busy ones read up to the maximum at
/// once. (Routed messages are slices of this buffer: a small buffer pins less memory.)
const READ_CHUNK_MIN: usize = 1024;
const READ_CHUNK_MAX: usize = 64 * 1024;
/// Stop draining router notifications into the write buffer beyond this, and write first.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// A write buffer that grew beyond this is given back to the allocator after it is written.
const WRITE_BUFFER_KEEP: usize = 4 * 1024 * 1024;
/// How much a client may send after its CONNECT while its login is decided (more is left in
/// the socket until then).
const PIPELINED_BEFORE_CONNACK: usize = 64 * 1024;
/// Upper bound for the last writes (DISCONNECT) of a closing connection.
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// MQTT 3.x CONNACK return codes and their v5 reason codes.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    IdentifierRejected,
    ServerUnavailable,
    BadUsernameOrPassword,
    NotAuthorized,
    BadAuthenticationMethod,
}

impl Refusal {
    fn code(self, protocol: Protocol) -> u8 {
        let v5 = protocol == Protocol::V5;
        match self {
            // mosquitto answers v5 clients 0x80 when zero-length ids are not allowed (compat §6)
            Refusal::IdentifierRejected => {
                if v5 {
                    0x80
                } else {
                    2
                }
            }
            Refusal::ServerUnavailable => {
                if v5 {
                    0x88
                } else {
                    3
                }
            }
            Refusal::BadUsernameOrPassword => {
                if v5 {
                    0x86
                } else {
                    4
                }
            }
            Refusal::NotAuthorized => {
                if v5 {
                    0x87
                } else {
                    5
                }
            }
            Refusal::BadAuthenticationMethod => {
                if v5 {
                    0x8C
                } else {
                    5
                }
            }
        }
    }
}

/// A `$CONTROL/...` PUBLISH that passed the ACL, to be executed by `Security::control`.
struct ControlRequest {
    topic: String,
    payload: Bytes,
    qos: u8,
    pkid: u16,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// The client sent DISCONNECT (`will`: v5 reason 0x04, disconnect with will).
    Disconnected {
        will: bool,
    },
    Kicked(KickReason),
    /// The client closed the socket without DISCONNECT.
    Closed,
    /// Read or write error, or write timeout.
    Lost,
    KeepAliveTimeout,
    /// The client broke the protocol; v5 clients get a DISCONNECT with this reason first.
    Protocol(u8),
    /// The router dropped the link.
    RouterGone,
    /// The router refused to attach the link (its connection table is full).
    RouterRefused,
}

impl Exit {
    fn publishes_will(self) -> bool {
        match self {
            Exit::Disconnected { will } => will,
            Exit::Kicked(reason) => reason == KickReason::Takeover,
            Exit::Closed
            | Exit::Lost
            | Exit::KeepAliveTimeout
            | Exit::Protocol(_)
            | Exit::RouterGone
            | Exit::RouterRefused => true,
        }
    }

    fn v5_reason(self) -> Option<u8> {
        match self {
            Exit::Kicked(KickReason::Takeover) => Some(0x8E),
            Exit::Kicked(KickReason::Admin) => Some(0x98),
            Exit::Kicked(KickReason::Shutdown) => Some(0x8B),
            Exit::Kicked(KickReason::CredentialsRevoked) => None,
            Exit::KeepAliveTimeout => Some(0x8D),
            Exit::Protocol(reason) => Some(reason),
            Exit::RouterRefused => Some(SERVER_BUSY),
            Exit::Disconnected { .. } | Exit::Closed | Exit::Lost | Exit::RouterGone => None,
        }
    }

    /// How mosquitto's disconnect line describes this exit.
    fn departure(self) -> Departure {
        match self {
            Exit::Disconnected { .. } => Departure::Disconnected,
            Exit::Kicked(KickReason::Takeover) => Departure::TakenOver,
            Exit::Kicked(KickReason::Admin | KickReason::CredentialsRevoked) => Departure::Administrative,
            Exit::Kicked(KickReason::Shutdown) => Departure::Shutdown,
            Exit::Closed => Departure::ClosedByClient,
            Exit::Lost => Departure::SocketError,
            Exit::KeepAliveTimeout => Departure::KeepAliveTimeout,
            Exit::Protocol(MALFORMED) => Departure::MalformedPacket,
            Exit::Protocol(PACKET_TOO_LARGE) => Departure::OversizePacket,
            Exit::Protocol(_) => Departure::ProtocolError,
            Exit::RouterGone | Exit::RouterRefused => Departure::RouterGone,
        }
    }
}

/// Malformed packet / protocol error reason codes used when closing.
const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const TOPIC_NAME_INVALID: u8 = 0x90;
const PACKET_TOO_LARGE: u8 = 0x95;
const TOPIC_ALIAS_INVALID: u8 = 0x94;
const SERVER_BUSY: u8 = 0x89;
const QUOTA_EXCEEDED: u8 = 0x97;

/// Serves one accepted socket until it closes.
/// `tls` is the identity of a verified client certificate (TLS listeners only).
pub(crate) async fn serve<E, S>(
    shared: Arc<Shared<E>>,
    stream: S,
    peer: SocketAddr,
    listener: usize,
    tls: Option<TlsIdentity>,
    unauthenticated: Unauthenticated,
) where
    E: RoutingEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The handshake (authentication, session claim) and the exit path are boxed while they run,
    // so that an idle connection's task holds only the event loop's state (see P6 in
    // docs/benchmarks.md: per idle connection, the task was 15 KB of the 19 KB).
    if let Some(connection) = Box::pin(handshake(shared, stream, peer, listener, tls, unauthenticated)).await {
        connection.run().await;
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
    /// Index of the listener (in config order) the client connected through.
    listener: usize,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    authz: Arc<dyn ClientAuthz>,
    mailbox: mpsc::UnboundedReceiver<Mail>,
    mailbox_tx: mpsc::UnboundedSender<Mail>,
    /// Dropped when the connection has fully left (takeover waits on it).
    _closed: watch::Sender<()>,
    release_watch: watch::Receiver<u64>,
    probe_requests: watch::Receiver<u64>,
    /// 1.5 × keepalive; `None` for keepalive 0.
    keep_alive: Option<Duration>,
    keep_alive_timer: std::pin::Pin<Box<Sleep>>,
    last_read: Instant,
    /// The client's v5 Maximum Packet Size.
    client_max_packet: usize,
    max_topic_alias: u16,
    topic_aliases: HashMap<u16, Bytes>,
    subscriptions: HashMap<String, Subscription>,
    /// New topics this client may still publish to (`topic_budget`).
    topic_budget: TopicBudget,
    inbound_qos2: HashSet<u16>,
    acks: AckSequencer,
    pending_acks: PendingAcks,
    backlog: Backlog,
    /// The lanes of the message this connection last published while one of them was at a hold
    /// point: reading waits until they may continue (see `backpressure`).
    held_lanes: Option<TopicLanes>,
    router_paused: bool,
    /// The client acknowledged a delivery in the packets being handled (see `Backlog::progress`).
    client_acked: bool,
    /// How much to reserve for the next read (grows with the connection's traffic).
    read_chunk: usize,
    /// Complete packets wait in `read_buf` (pipelined after CONNECT, or left when a hold began).
    reads_pending: bool,
    will: Option<codec::Will>,
    clean_start: bool,
    session_expiry: u32,
    /// The router keeps this client's session when the link closes.
    persistent_link: bool,
}

/// Reads the first packet, which must be a complete CONNECT of at most `max_size` bytes (checked
/// on its fixed header, before its body is buffered); otherwise says how the connection ended,
/// for mosquitto's `Client <unknown> ...` line. (The caller bounds it with the connect timeout.)
async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<BytesMut, Departure> {
    loop {
        match codec::peek_frame(buf, max_size) {
            Ok(Some(header)) if header.packet_type() == codec::CONNECT => {
                return Ok(buf.split_to(header.frame_len()));
            }
            Err(FrameError::TooLarge(size)) => {
                info!(size, "closing connection: CONNECT larger than gate_connect_max_size or max_packet_size");
                return Err(Departure::OversizePacket);
            }
            Ok(Some(_)) => return Err(Departure::ProtocolError),
            Err(_) => return Err(Departure::MalformedPacket),
            Ok(None) => {}
        }
        buf.reserve(READ_CHUNK_MIN);
        match stream.read_buf(buf).await {
            Ok(0) => return Err(Departure::ClosedByClient),
            Err(_) => return Err(Departure::SocketError),
            Ok(_) => {}
        }
    }
}

/// A client id for clients that sent none: mosquitto's `auto-` + UUID form.
fn generated_client_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // std's RandomState is seeded from the OS; hashing a counter gives unpredictable, unique ids.
    let random = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.finish()
    };
    let (a, b) = (random(), random());
    format!(
        "{prefix}{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

/// The login lines' view of a CONNECT (with the client id the broker settled on).
fn login_of<'a>(connect: &'a codec::Connect, peer: SocketAddr, client_id: &'a str) -> Login<'a> {
    Login {
        peer,
        client_id,
        protocol: connect.protocol,
        clean_start: connect.clean_start,
        keep_alive: connect.keep_alive,
        username: connect.username.as_deref(),
    }
}

/// Answers a refused CONNECT and logs it, saying why (`why`) and under which username.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, login: &Login<'_>, refusal: Refusal, why: &str) {
    let protocol = login.protocol;
    client_log::refused(login, refusal.code(protocol), why);
    let mut buf = BytesMut::with_capacity(8);
    codec::connack(&mut buf, protocol, false, refusal.code(protocol), &ConnAckProps::default());
    let _ = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, async {
        stream.write_all(&buf).await?;
        stream.shutdown().await
    })
    .await;
}

/// CONNECT → authentication → session claim → router link → CONNACK.
async fn handshake<E, S>(
    shared: Arc<Shared<E>>,
    mut stream: S,
    peer: SocketAddr,
    listener: usize,
    tls: Option<TlsIdentity>,
    unauthenticated: Unauthenticated,
) -> Option<Connection<E, S>>
where
    E: RoutingEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    // Before authentication a client may make the broker hold only a small CONNECT.
    let max_connect = (config.max_packet_size as usize).min(config.gate.connect_max_size);
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK_MIN);
    let frame =
        match tokio::time::timeout(config.gate.connect_timeout, read_connect(&mut stream, &mut read_buf, max_connect))
            .await
        {
            Ok(Ok(frame)) => frame,
            Ok(Err(departure)) => {
                // mosquitto's words for a client that never identified itself
                client_log::disconnected("<unknown>", departure);
                return None;
            }
            Err(_) => {
                debug!(%peer, "no CONNECT within gate_connect_timeout: closing");
                return None;
            }
        };
    METRICS.packet_in();
    Metrics::inc(&METRICS.connects_received);
    let connect = match codec::decode_connect(&frame) {
        Ok(connect) => connect,
        Err(ConnectError::UnsupportedLevel(level)) => {
            info!(%peer, level, "refused: unsupported protocol version");
            // CONNACK 1 "unacceptable protocol version", in the 3.x form (as mosquitto does).
            let _ = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, async {
                stream.write_all(&[0x20, 2, 0, 1]).await?;
                stream.flush().await
            })
            .await;
            return None;
        }
        Err(error) => {
            info!(%peer, %error, "closing connection: bad CONNECT");
            return None;
        }
    };
    let protocol = connect.protocol;
    let listener_config = config.listeners.get(listener)?;
    let security_options = config.security_for(listener);

    if connect.auth_method.is_some() {
        let login = login_of(&connect, peer, &connect.client_id);
        refuse(&mut stream, &login, Refusal::BadAuthenticationMethod, "enhanced authentication is not supported").await;
        return None;
    }
    let mut client_id = connect.client_id.clone();
    if listener_config.use_username_as_clientid {
        match &connect.username {
            Some(username) => client_id = username.clone(),
            None => {
                let login = login_of(&connect, peer, &client_id);
                refuse(&mut stream, &login, Refusal::NotAuthorized, "use_username_as_clientid needs a username").await;
                return None;
            }
        }
    }
    let mut assigned = None;
    if client_id.is_empty() {
        let refused = match protocol {
            Protocol::V31 => true,
            Protocol::V311 => !connect.clean_start,
            Protocol::V5 => false,
        };
        if refused || !security_options.allow_zero_length_clientid {
            let login = login_of(&connect, peer, "<unknown>");
            refuse(&mut stream, &login, Refusal::IdentifierRejected, "empty client id").await;
            return None;
        }
        client_id = generated_client_id(&security_options.auto_id_prefix);
        assigned = Some(client_id.clone());
    }
    if let Some(prefix) = &listener_config.clientid_prefix
        && !client_id.starts_with(prefix.as_str())
    {
        let login = login_of(&connect, peer, &client_id);
        refuse(&mut stream, &login, Refusal::NotAuthorized, "the client id lacks the listener's clientid_prefix").await;
        return None;
    }
    if protocol != Protocol::V5 && connect.keep_alive > config.max_keepalive {
        // mosquitto: 3.x clients cannot be told another keepalive, so they are refused.
        let login = login_of(&connect, peer, &client_id);
        refuse(&mut stream, &login, Refusal::IdentifierRejected, "keepalive above max_keepalive").await;
        return None;
    }
    let client_id: Arc<str> = client_id.into();

    let request = ConnectRequest {
        listener,
        peer,
        client_id: client_id.clone(),
        username: connect.username.as_deref().map(Arc::from),
        password: connect.password.clone(),
        tls,
        protocol,
    };
    // A client that leaves while its login is decided cancels it (a queued password verification
    // gives its place up). What it pipelined after CONNECT is kept, up to a bound.
    let mut authentication = shared.security.authenticate(request);
    let decision = loop {
        tokio::select! {
            decision = &mut authentication => break decision,
            read = stream.read_buf(&mut read_buf), if read_buf.len() < PIPELINED_BEFORE_CONNACK => match read {
                Ok(0) | Err(_) => {
                    debug!(%peer, "left before its login was decided");
                    return None;
                }
                Ok(_) => {}
            },
        }
    };
    drop(authentication);
    drop(unauthenticated);
    let login = login_of(&connect, peer, &client_id);
    let (username, authz) = match decision {
        ConnectDecision::Accept { username, authz } => (username, authz),
        ConnectDecision::NotAuthorized => {
            refuse(&mut stream, &login, Refusal::NotAuthorized, "").await;
            return None;
        }
        ConnectDecision::BadUsernameOrPassword => {
            refuse(&mut stream, &login, Refusal::BadUsernameOrPassword, "bad username or password").await;
            return None;
        }
        ConnectDecision::ServerUnavailable => {
            refuse(&mut stream, &login, Refusal::ServerUnavailable, "server unavailable").await;
            return None;
        }
    };

    // The session: v3 clean flag; v5 clean start + session expiry (adapter-notes §3).
    let session_expiry = if protocol == Protocol::V5 { connect.session_expiry } else { 0 };
    let outlives = match protocol {
        Protocol::V5 => session_expiry > 0,
        Protocol::V31 | Protocol::V311 => !connect.clean_start,
    };
    let persistent_link = !connect.clean_start || outlives;

    let conn_id = shared.next_conn_id();
    let (mailbox_tx, mailbox) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = watch::channel(());
    let claim = match shared
        .sessions
        .claim(&client_id, conn_id, username.clone(), peer.ip(), mailbox_tx.clone(), closed_rx, connect.clean_start)
        .await
    {
        Ok(claim) => claim,
        Err(superseded) => {
            info!(client_id = %client_text(&client_id), "{superseded}");
            return None;
        }
    };
    // A clean start forgets what the router kept for the discarded session. (The gate's registry
    // is the truth about sessions.)
    if claim.discarded_routed {
        shared.engine.purge(&client_id).await;
    }
    // Only a resumed session with state in the router attaches now (its queued messages are due);
    // every other connection attaches when it first needs the router.
    let resumes_routed = claim
        .saved
        .as_ref()
        .is_some_and(|saved| saved.routed || saved.subscriptions.values().any(|s| s.kind == SubscriptionKind::Routed));
    let session_present = claim.saved.is_some();
    let link = if resumes_routed {
        match shared.engine.attach(&client_id, persistent_link).await {
            Ok(attached) => {
                if !attached.session_present {
                    debug!(client_id = %client_text(&client_id), "the router had no saved session");
                }
                LazyLink::attached(attached.link)
            }
            Err(error) => {
                warn!(client_id = %client_text(&client_id), %error, "router refused the client");
                refuse(&mut stream, &login, Refusal::ServerUnavailable, "the routing engine refused the client").await;
                let release = Release { saved: claim.saved, expiry: None, will: None };
                shared.sessions.release(&client_id, conn_id, release);
                return None;
            }
        }
    } else {
        LazyLink::unattached()
    };
    let saved = claim.saved.unwrap_or_default();

    let mut keep_alive_secs = connect.keep_alive;
    let mut server_keep_alive = None;
    if protocol == Protocol::V5 && keep_alive_secs > config.max_keepalive {
        keep_alive_secs = config.max_keepalive;
        server_keep_alive = Some(keep_alive_secs);
    }
    let keep_alive = (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500));
    let now = Instant::now();

    let mut connection = Connection {
        backlog: Backlog::new(conn_id),
        held_lanes: None,
        release_watch: shared.pressure.watch_release(),
        probe_requests: shared.pressure.watch_probe_requests(Lane::TOTAL),
        shared: shared.clone(),
        stream,
        read_buf,
        // Grown on demand: an idle connection should not hold a write buffer.
        write_buf: BytesMut::new(),
        link,
        protocol,
        conn_id,
        listener,
        client_id: client_id.clone(),
        username: username.clone(),
        authz,
        mailbox,
        mailbox_tx,
        _closed: closed_tx,
        keep_alive,
        keep_alive_timer: Box::pin(tokio::time::sleep_until(now + keep_alive.unwrap_or(Duration::from_secs(3600)))),
        last_read: now,
        client_max_packet: connect.max_packet_size.map_or(usize::MAX, |size| size as usize),
        max_topic_alias: listener_config.max_topic_alias,
        topic_aliases: HashMap::new(),
        subscriptions: HashMap::new(),
        topic_budget: TopicBudget::new(config.gate.new_topics_per_second, config.gate.new_topics_burst),
        inbound_qos2: saved.inbound_qos2,
        acks: AckSequencer::default(),
        pending_acks: PendingAcks::default(),
        router_paused: false,
        client_acked: false,
        read_chunk: READ_CHUNK_MIN,
        reads_pending: false,
        will: connect.will.clone(),
        clean_start: connect.clean_start,
        session_expiry,
        persistent_link,
    };
    if connection.link.is_attached() {
        connection.backlog.probe_sent(&shared.pressure, 0); // the link's start-up PINGREQ
    }
    if session_present {
        connection.restore_subscriptions(saved.subscriptions);
    }
    let props = ConnAckProps {
        assigned_client_id: assigned.as_deref(),
        topic_alias_max: listener_config.max_topic_alias,
        max_packet_size: Some(config.max_packet_size),
        server_keep_alive,
    };
    codec::connack(&mut connection.write_buf, protocol, session_present, 0, &props);
    // The username the login settled on (a certificate's identity may stand in for it).
    client_log::connected(&Login { username: username.as_deref(), ..login });
    client_log::will(connect.will.as_ref().map(|w| (w.topic.as_str(), w.payload.len(), w.retain, w.qos)));
    client_log::sending_connack(&client_id, session_present, 0);
    if connection.link.flush().is_err() {
        connection.finish(Exit::RouterGone).await;
        return None;
    }
    Some(connection)
}

/// What woke the connection up. (Not boxed: it lives for one iteration, and boxing the router
/// variant would allocate per notification.)
#[allow(clippy::large_enum_variant)]
enum Event {
    Read(std::io::Result<usize>),
    Router(Result<FromRouter, RouterError>),
    Mail(Option<Mail>),
    KeepAlive,
    Released,
    HoldExpired,
    ProbeRequested,
}

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Re-registers the subscriptions of a resumed session: the router restores its data cursors
    /// but not its subscription map, so without this UNSUBSCRIBE would be ignored (defect 3);
    /// subscription identifiers are lost by the router too.
    fn restore_subscriptions(&mut self, subscriptions: HashMap<String, Subscription>) {
        let mut by_id: HashMap<Option<usize>, Vec<Filter>> = HashMap::new();
        for subscription in subscriptions.values() {
            match subscription.kind {
                SubscriptionKind::Routed => by_id.entry(subscription.id).or_default().push(subscription.filter.clone()),
                SubscriptionKind::Control => self.shared.control.subscribe(
                    self.conn_id,
                    self.listener,
                    &subscription.filter.path,
                    &self.mailbox_tx,
                    &self.authz,
                ),
                SubscriptionKind::Local => {
                    let _no_retained = self.shared.sys.subscribe(
                        self.conn_id,
                        &subscription.filter.path,
                        &self.mailbox_tx,
                        &self.authz,
                        false,
                    );
                }
            }
        }
        for (id, filters) in by_id {
            let properties = id.map(|id| SubscribeProperties { id: Some(id), user_properties: Vec::new() });
            self.link.subscribe(0, filters, properties);
            self.pending_acks.silent();
        }
        self.subscriptions = subscriptions;
        self.track_backlog();
    }

    async fn run(mut self) {
        let exit = self.event_loop().await;
        Box::pin(self.finish(exit)).await;
    }

    async fn event_loop(&mut self) -> Exit {
        self.reads_pending = !self.read_buf.is_empty();
        loop {
            if self.reads_pending
                && !self.held()
                && let Err(exit) = self.handle_reads().await
            {
                return exit;
            }
            if let Err(exit) = self.write_out().await {
                return exit;
            }
            let held = self.held();
            let hold_deadline = self.backlog.hold_deadline(&self.shared.pressure);
            if self.read_buf.capacity() - self.read_buf.len() < self.read_chunk / 4 {
                self.read_buf.reserve(self.read_chunk);
            }
            let event = tokio::select! {
                mail = self.mailbox.recv() => Event::Mail(mail),
                note = self.link.recv() => Event::Router(note),
                read = self.stream.read_buf(&mut self.read_buf), if !held => Event::Read(read),
                _ = &mut self.keep_alive_timer, if self.keep_alive.is_some() => Event::KeepAlive,
                _ = self.release_watch.changed(), if held => Event::Released,
                _ = tokio::time::sleep_until(hold_deadline.map_or_else(Instant::now, Instant::from_std)), if hold_deadline.is_some() => Event::HoldExpired,
                _ = self.probe_requests.changed(), if self.backlog.tracked() => Event::ProbeRequested,
            };
            let result = match event {
                Event::Read(Ok(0)) => Err(Exit::Closed),
                Event::Read(Err(_)) => Err(Exit::Lost),
                Event::Read(Ok(read)) => {
                    self.last_read = Instant::now();
                    if read >= self.read_chunk / 2 {
                        self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK_MAX);
                    }
                    let result = self.handle_reads().await;
                    // A busy socket is always readable, so without this a publisher would loop
                    // through its whole cooperative budget (~128 reads) before subscribers run
                    // and can notice a backlog.
                    tokio::task::yield_now().await;
                    result
                }
                Event::Router(note) => self.handle_router(note),
                Event::Mail(Some(mail)) => self.handle_mail(mail),
                Event::Mail(None) => Err(Exit::Lost),
                Event::KeepAlive => self.check_keep_alive(held),
                // Frames left in the buffer when the hold began are handled at the loop's top.
                Event::Released => Ok(()),
                Event::HoldExpired => {
                    self.backlog.hold_expired(&self.shared.pressure);
                    Ok(())
                }
                Event::ProbeRequested => {
                    if self.link.is_attached()
                        && self.backlog.wants_probe(&self.shared.pressure, self.acks.outstanding(), true)
                    {
                        self.link.push(Packet::PingReq(PingReq));
                    }
                    self.flush_router()
                }
            };
            if let Err(exit) = result {
                return exit;
            }
        }
    }

    /// Back-pressure holds this connection's publishing (see `backpressure`).
    fn held(&self) -> bool {
        self.held_lanes.is_some_and(|lanes| self.shared.pressure.holding(&lanes))
            && !self.backlog.exempt(&self.shared.pressure)
    }

    /// Writes what the wake-up produced (one write), then lets a paused router continue.
    async fn write_out(&mut self) -> Result<(), Exit> {
        if !self.write_buf.is_empty() {
            let timeout = self.shared.config.gate.write_timeout;
            // Flushed too: a websocket (see `websocket`) sends a message only when flushed; for TCP
            // and TLS this costs nothing.
            let written = async {
                self.stream.write_all(&self.write_buf).await?;
                self.stream.flush().await
            };
            match tokio::time::timeout(timeout, written).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Exit::Lost),
                Err(_) => {
                    info!(client_id = %client_text(&self.client_id), "client not reading: write timed out");
                    return Err(Exit::Lost);
                }
            }
            if self.write_buf.capacity() > WRITE_BUFFER_KEEP {
                self.write_buf = BytesMut::new();
            } else {
                self.write_buf.clear();
            }
        }
        if std::mem::take(&mut self.router_paused) {
            self.link.resume().await.map_err(|_| Exit::RouterGone)?;
        }
        Ok(())
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

    /// Handles every complete packet in the read buffer, then hands the router one batch.
    async fn handle_reads(&mut self) -> Result<(), Exit> {
        let max_packet = self.shared.config.max_packet_size as usize;
        self.reads_pending = false;
        loop {
            if self.held_lanes.is_some() {
                if self.held() {
                    // Back-pressure: leave the rest for when these lanes may continue.
                    self.reads_pending = true;
                    break;
                }
                self.held_lanes = None;
            }
            let header = match codec::peek_frame(&self.read_buf, max_packet) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(FrameError::TooLarge(size)) => {
                    info!(client_id = %client_text(&self.client_id), size, "packet larger than max_packet_size");
                    return Err(Exit::Protocol(PACKET_TOO_LARGE));
                }
                Err(error) => {
                    info!(client_id = %client_text(&self.client_id), %error, "malformed packet");
                    return Err(Exit::Protocol(MALFORMED));
                }
            };
            if header.packet_type() == codec::PUBACK && header.remaining == 2 {
                // The common acknowledgement (a QoS 1 subscriber's, one per message), read in
                // place: no frame split, no decoded `Packet` to move around.
                let at = header.header_len;
                let pkid = u16::from_be_bytes([self.read_buf[at], self.read_buf[at + 1]]);
                self.read_buf.advance(header.frame_len());
                client_log::received_ack("PUBACK", &self.client_id, pkid, Some(0));
                METRICS.packet_in();
                self.on_client_puback(pkid);
                continue;
            }
            let frame = self.read_buf.split_to(header.frame_len());
            METRICS.packet_in();
            // Synchronous on purpose: only a `$CONTROL` request has something to await, and a
            // future per packet would be moved around for nothing.
            if let Some(request) = self.handle_frame(frame)? {
                self.attach_if_wanted().await?;
                self.flush_router()?; // what came before the request is not kept waiting
                Box::pin(self.control_request(request)).await;
            }
        }
        if std::mem::take(&mut self.client_acked) {
            self.backlog.progress(); // once per read, not per acknowledgement: it reads the clock
        }
        self.attach_if_wanted().await?;
        if self.link.is_attached() && self.backlog.wants_probe(&self.shared.pressure, self.acks.outstanding(), false) {
            self.link.push(Packet::PingReq(PingReq));
        }
        self.flush_router()
    }

    /// Attaches the router link once something was pushed for it (see `lazy_link`).
    async fn attach_if_wanted(&mut self) -> Result<(), Exit> {
        if !self.link.wants_attach() {
            return Ok(());
        }
        Box::pin(self.attach()).await
    }

    async fn attach(&mut self) -> Result<(), Exit> {
        if self.persistent_link {
            // Nothing the router may still keep for this id belongs to this session.
            self.shared.engine.purge(&self.client_id).await;
        }
        match self.shared.engine.attach(&self.client_id, self.persistent_link).await {
            Ok(attached) => {
                self.link.install(attached.link);
                self.backlog.probe_sent(&self.shared.pressure, 0); // the link's start-up PINGREQ
                Ok(())
            }
            Err(error) => {
                warn!(client_id = %client_text(&self.client_id), %error, "router refused the client");
                Err(Exit::RouterRefused)
            }
        }
    }

    fn flush_router(&mut self) -> Result<(), Exit> {
        self.link.flush().map_err(|_| Exit::RouterGone)
    }

    fn on_client_puback(&mut self, pkid: u16) {
        self.client_acked = true;
        let link = &mut self.link;
        self.acks.client_ack(pkid, 1, false, &mut |p| link.push(p));
    }

    fn handle_frame(&mut self, frame: BytesMut) -> Result<Option<ControlRequest>, Exit> {
        let packet_type = frame[0] >> 4;
        if packet_type == codec::CONNECT {
            info!(client_id = %client_text(&self.client_id), "second CONNECT: closing");
            return Err(Exit::Protocol(PROTOCOL_ERROR));
        }
        let meta = if packet_type == codec::PUBLISH { codec::publish_meta(&frame) } else { None };
        let packet = match codec::decode(self.protocol, frame) {
            Ok(packet) => packet,
            Err(error) => {
                info!(client_id = %client_text(&self.client_id), %error, "malformed packet");
                return Err(Exit::Protocol(MALFORMED));
            }
        };
        match packet {
            Packet::Publish(publish, properties) => {
                let meta = meta.ok_or(Exit::Protocol(MALFORMED))?;
                METRICS.publish_in(publish.payload.len());
                self.on_publish(meta, publish, properties)
            }
            Packet::PubAck(ack, _) => {
                client_log::received_ack("PUBACK", &self.client_id, ack.pkid, Some(puback_code(&ack.reason)));
                self.on_client_puback(ack.pkid);
                Ok(None)
            }
            Packet::PubRec(rec, _) => {
                client_log::received_ack("PUBREC", &self.client_id, rec.pkid, None);
                self.client_acked = true;
                let refused = !matches!(rec.reason, PubRecReason::Success | PubRecReason::NoMatchingSubscribers);
                let link = &mut self.link;
                self.acks.client_ack(rec.pkid, 2, refused, &mut |p| link.push(p));
                Ok(None)
            }
            Packet::PubComp(comp, _) => {
                let code = match comp.reason {
                    rumqttd::protocol::PubCompReason::Success => 0,
                    rumqttd::protocol::PubCompReason::PacketIdentifierNotFound => 0x92,
                };
                client_log::received_ack("PUBCOMP", &self.client_id, comp.pkid, Some(code));
                self.client_acked = true;
                let link = &mut self.link;
                self.acks.client_pubcomp(comp.pkid, &mut |p| link.push(p));
                Ok(None)
            }
            Packet::PubRel(rel, _) => {
                client_log::received_ack("PUBREL", &self.client_id, rel.pkid, None);
                self.inbound_qos2.remove(&rel.pkid);
                codec::ack(&mut self.write_buf, self.protocol, 7, rel.pkid, 0);
                client_log::sending_ack("PUBCOMP", &self.client_id, rel.pkid, None);
                Ok(None)
            }
            Packet::Subscribe(subscribe, properties) => {
                client_log::received("SUBSCRIBE", &self.client_id);
                self.on_subscribe(subscribe, properties).map(|()| None)
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                client_log::received("UNSUBSCRIBE", &self.client_id);
                self.on_unsubscribe(unsubscribe).map(|()| None)
            }
            Packet::PingReq(_) => {
                client_log::received("PINGREQ", &self.client_id);
                codec::pingresp(&mut self.write_buf);
                client_log::sending("PINGRESP", &self.client_id);
                Ok(None)
            }
            Packet::Disconnect(disconnect, properties) => {
                client_log::received("DISCONNECT", &self.client_id);
                if let Some(expiry) = properties.and_then(|p| p.session_expiry_interval) {
                    self.session_expiry = expiry;
                }
                let will = disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
                Err(Exit::Disconnected { will })
            }
            _ => Err(Exit::Protocol(PROTOCOL_ERROR)),
        }
    }

    fn write_ack(&mut self, qos: u8, pkid: u16, reason: u8) {
        match qos {
            1 => {
                codec::ack(&mut self.write_buf, self.protocol, 4, pkid, reason);
                client_log::sending_ack("PUBACK", &self.client_id, pkid, Some(reason));
            }
            2 => {
                codec::ack(&mut self.write_buf, self.protocol, 5, pkid, reason);
                client_log::sending_ack("PUBREC", &self.client_id, pkid, Some(reason));
            }
            _ => {}
        }
    }

    /// A PUBLISH from the client; a `$CONTROL/...` request is returned to be executed.
    fn on_publish(
        &mut self,
        meta: PublishMeta,
        mut publish: Publish,
        mut properties: Option<PublishProperties>,
    ) -> Result<Option<ControlRequest>, Exit> {
        let PublishMeta { qos, pkid, dup, retain } = meta;
        if let Some(alias) = properties.as_mut().and_then(|p| p.topic_alias.take()) {
            if alias == 0 || alias > self.max_topic_alias {
                return Err(Exit::Protocol(TOPIC_ALIAS_INVALID));
            }
            if publish.topic.is_empty() {
                publish.topic = self.topic_aliases.get(&alias).cloned().ok_or(Exit::Protocol(PROTOCOL_ERROR))?;
            } else {
                self.topic_aliases.insert(alias, publish.topic.clone());
            }
        }
        if let Some(props) = &properties {
            if !props.subscription_identifiers.is_empty() {
                return Err(Exit::Protocol(PROTOCOL_ERROR));
            }
            if *props == PublishProperties::default() {
                properties = None;
            }
        }
        let topic_bytes = publish.topic.clone();
        let Some(topic) = dynsec::topic::valid_mqtt_utf8(&topic_bytes) else {
            info!(client_id = %client_text(&self.client_id), "PUBLISH topic is not valid UTF-8");
            return Err(Exit::Protocol(MALFORMED));
        };
        if !dynsec::topic::valid_topic(topic) {
            info!(client_id = %client_text(&self.client_id), topic = %client_text(topic), "invalid PUBLISH topic");
            return Err(Exit::Protocol(if topic.is_empty() { PROTOCOL_ERROR } else { TOPIC_NAME_INVALID }));
        }
        // compat §3.5: `$SYS` and `$share` are never publishable; then the client's ACL.
        let allowed =
            !topic.starts_with("$SYS") && !topic.starts_with("$share") && self.authz.allows(Access::Publish, topic);
        let line = PublishLine { dup, qos, retain, pkid, topic: topic.as_bytes(), payload_len: publish.payload.len() };
        if !allowed {
            client_log::denied_publish(&self.client_id, &line);
            // v3: the normal flow, message dropped; v5: reason 0x87 (compat §3.6).
            let reason = if self.protocol == Protocol::V5 { 0x87 } else { 0 };
            if qos == 2 && reason == 0 {
                self.inbound_qos2.insert(pkid);
            }
            self.write_ack(qos, pkid, reason);
            return Ok(None);
        }
        client_log::received_publish(&self.client_id, &line);
        if qos == 2 && !self.inbound_qos2.insert(pkid) {
            // A re-sent QoS 2 message whose PUBREL is still due: acknowledge, do not route again.
            self.write_ack(2, pkid, 0);
            return Ok(None);
        }
        if topic.starts_with("$CONTROL/") {
            return Ok(Some(ControlRequest { topic: topic.to_owned(), payload: publish.payload, qos, pkid }));
        }
        if !topic.starts_with('$') {
            if let Err(hazard) = router_guard::admit(ToRouter::Publish { topic, properties: properties.as_ref() }) {
                info!(client_id = %client_text(&self.client_id), topic = %client_text(topic), %hazard, "PUBLISH the router cannot take");
                return Err(Exit::Protocol(hazard.reason_code()));
            }
            if !self.topic_budget.allows(&self.shared.routed_topics, &publish.topic) {
                debug!(client_id = %self.client_id, topic, "PUBLISH over the new-topic budget: dropped");
                let reason = if self.protocol == Protocol::V5 { QUOTA_EXCEEDED } else { 0 };
                if qos == 2 && reason == 0 {
                    self.inbound_qos2.insert(pkid);
                }
                self.write_ack(qos, pkid, reason);
                return Ok(None);
            }
            let size = 4 + publish.topic.len() + publish.payload.len();
            let lanes = TopicLanes::of(&publish.topic);
            if self.shared.pressure.record_published(&lanes, size as u64) {
                // This message still goes (the window leaves room for it); the next waits.
                self.held_lanes = Some(lanes);
            }
            let routed = if publish.retain {
                // A retained message may live forever: give it its own memory instead of keeping
                // the whole read buffer it arrived in alive.
                let topic = Bytes::copy_from_slice(&publish.topic);
                Publish::new(topic, Bytes::copy_from_slice(&publish.payload), true)
            } else {
                Publish::new(publish.topic, publish.payload, false)
            };
            METRICS.routed(&routed.topic, routed.payload.len(), routed.retain);
            self.link.push(Packet::Publish(routed, properties));
        }
        self.write_ack(qos, pkid, 0);
        Ok(None)
    }

    /// A `$CONTROL/...` request: executed, acknowledged, then its replies and kicks go out (in
    /// that order, through the mailboxes, so a kicked admin still gets its PUBACK and reply).
    async fn control_request(&mut self, request: ControlRequest) {
        let ControlRequest { topic, payload, qos, pkid } = request;
        let sender = ControlSender {
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            listener: self.listener,
        };
        let who = (&*self.client_id, self.username.as_deref());
        let outcome = match self.shared.broker_api.handle(&topic, &payload, who) {
            Some(reply) => Some(ControlOutcome { replies: vec![reply], kicks: Vec::new() }),
            None => match self.shared.security.control(sender, &topic, payload.to_vec()) {
                Some(pending) => Some(pending.await),
                None => None,
            },
        };
        self.write_ack(qos, pkid, 0);
        if outcome.is_none() {
            // mosquitto 2.1.2 answers the requester alone, subscribed or not.
            debug!(client_id = %client_text(&self.client_id), topic = %client_text(&topic), "no control endpoint");
            self.write_control_reply(&crate::broker_api::endpoint_not_available(&topic));
        }
        if let Some(outcome) = outcome {
            let security = &self.shared.security;
            for reply in outcome.replies {
                let topic = reply.topic.clone();
                let everywhere = topic == crate::broker_api::RESPONSE_TOPIC;
                self.shared.control.deliver(reply, |listener| everywhere || security.serves_control(listener, &topic));
            }
            for target in &outcome.kicks {
                self.shared.sessions.kick(target);
            }
        }
    }

    fn on_subscribe(&mut self, subscribe: Subscribe, properties: Option<SubscribeProperties>) -> Result<(), Exit> {
        let id = properties.as_ref().and_then(|p| p.id);
        if id == Some(0) {
            return Err(Exit::Protocol(PROTOCOL_ERROR));
        }
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut routed = Vec::new();
        let mut retained = Vec::new();
        for filter in subscribe.filters {
            // mosquitto_validate_utf8 (no U+0000, no control characters): a malformed packet.
            if dynsec::topic::valid_mqtt_utf8(filter.path.as_bytes()).is_none() {
                info!(client_id = %client_text(&self.client_id), "subscription filter is not valid MQTT UTF-8");
                return Err(Exit::Protocol(MALFORMED));
            }
            if !subscriptions::valid_filter(&filter.path) {
                info!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), "invalid subscription filter");
                return Err(Exit::Protocol(MALFORMED));
            }
            if filter.nolocal && subscriptions::is_shared(&filter.path) {
                return Err(Exit::Protocol(PROTOCOL_ERROR));
            }
            let qos = filter.qos as u8;
            client_log::subscribe_filter(&self.client_id, &filter.path, qos);
            let limit = self.shared.config.gate.max_subscriptions_per_client;
            if limit > 0 && self.subscriptions.len() >= limit && !self.subscriptions.contains_key(&filter.path) {
                debug!(client_id = %self.client_id, filter = %filter.path, "subscription over the per-client limit");
                codes.push(if self.protocol == Protocol::V5 { QUOTA_EXCEEDED } else { 0x80 });
                continue;
            }
            if !self.authz.allows(Access::Subscribe, &filter.path) {
                debug!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), "SUBSCRIBE denied");
                codes.push(subscriptions::denied_code(self.protocol, qos));
                continue;
            }
            let kind = subscriptions::kind_of(&filter.path);
            match kind {
                SubscriptionKind::Routed => {
                    if let Err(hazard) =
                        router_guard::admit(ToRouter::Subscribe { filter: &filter.path, subscription_id: id })
                    {
                        info!(client_id = %client_text(&self.client_id), filter = %client_text(&filter.path), %hazard, "filter the router cannot take");
                        codes.push(subscriptions::refused_code(self.protocol, hazard));
                        continue;
                    }
                    codes.push(PendingAcks::ROUTED);
                    routed.push(filter.clone());
                }
                SubscriptionKind::Control => {
                    self.shared.control.subscribe(
                        self.conn_id,
                        self.listener,
                        &filter.path,
                        &self.mailbox_tx,
                        &self.authz,
                    );
                    codes.push(qos);
                }
                SubscriptionKind::Local => {
                    retained.extend(self.shared.sys.subscribe(
                        self.conn_id,
                        &filter.path,
                        &self.mailbox_tx,
                        &self.authz,
                        true,
                    ));
                    codes.push(qos)
                }
            }
            let count = crate::metrics::SubscriptionCount::new(subscriptions::is_shared(&filter.path));
            self.subscriptions.insert(filter.path.clone(), Subscription { filter, kind, id, count });
        }
        if !routed.is_empty() {
            self.link.subscribe(subscribe.pkid, routed, properties);
        }
        self.pending_acks.subscribe(subscribe.pkid, codes, retained);
        self.write_ready_acks();
        self.track_backlog();
        Ok(())
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Exit> {
        // MQTT 3.1.1 [MQTT-3.10.3-2] and 5.0 [MQTT-3.10.3-2]: at least one filter. (mosquitto
        // 2.0 answers an empty 3.1 UNSUBSCRIBE, which that version did not forbid.)
        if unsubscribe.filters.is_empty() && self.protocol != Protocol::V31 {
            info!(client_id = %client_text(&self.client_id), "UNSUBSCRIBE without filters");
            return Err(Exit::Protocol(MALFORMED));
        }
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut routed = Vec::new();
        for filter in unsubscribe.filters {
            if dynsec::topic::valid_mqtt_utf8(filter.as_bytes()).is_none() {
                info!(client_id = %client_text(&self.client_id), "unsubscription filter is not valid MQTT UTF-8");
                return Err(Exit::Protocol(MALFORMED));
            }
            if !subscriptions::valid_filter(&filter) {
                return Err(Exit::Protocol(MALFORMED));
            }
            client_log::unsubscribe_filter(&self.client_id, &filter);
            if !self.authz.allows(Access::Unsubscribe, &filter) {
                codes.push(0x87); // the subscription is kept
                continue;
            }
            match self.subscriptions.remove(&filter) {
                None => codes.push(0x11),
                Some(subscription) => {
                    codes.push(0);
                    match subscription.kind {
                        // (It was admitted when subscribed.)
                        SubscriptionKind::Routed => routed.push(filter),
                        SubscriptionKind::Control => self.shared.control.unsubscribe(self.conn_id, &filter),
                        SubscriptionKind::Local => self.shared.sys.unsubscribe(self.conn_id, &filter),
                    }
                }
            }
        }
        if !routed.is_empty() {
            self.link.unsubscribe(unsubscribe.pkid, &routed);
        }
        self.pending_acks.unsubscribe(unsubscribe.pkid, codes);
        self.write_ready_acks();
        self.track_backlog();
        Ok(())
    }

    /// Back-pressure tracks connections with non-shared QoS>0 routed subscriptions, in the lane
    /// of their filters.
    fn track_backlog(&mut self) {
        let mut tracked = self
            .subscriptions
            .values()
            .filter(|s| {
                s.kind == SubscriptionKind::Routed
                    && s.filter.qos != rumqttd::protocol::QoS::AtMostOnce
                    && !subscriptions::is_shared(&s.filter.path)
            })
            .map(|s| s.filter.path.as_str())
            .peekable();
        let lane = tracked.peek().is_some().then(|| Lane::of_filters(tracked));
        let before = self.backlog.lane();
        self.backlog.track(&self.shared.pressure, lane);
        if let Some(lane) = self.backlog.lane()
            && self.backlog.lane() != before
        {
            self.probe_requests = self.shared.pressure.watch_probe_requests(lane);
        }
    }

    /// Handles one router notification and everything else already waiting.
    fn handle_router(&mut self, first: Result<FromRouter, RouterError>) -> Result<(), Exit> {
        self.on_router(first)?;
        while self.write_buf.len() < WRITE_HIGH_WATER {
            let Some(note) = self.link.try_recv() else { break };
            self.on_router(note)?;
        }
        self.flush_router()
    }

    fn on_router(&mut self, note: Result<FromRouter, RouterError>) -> Result<(), Exit> {
        match note.map_err(|_| Exit::RouterGone)? {
            FromRouter::Publish(publish, properties) => self.deliver(publish, properties),
            FromRouter::SubAck(suback) => {
                self.pending_acks.router_suback(suback.return_codes.into_iter().map(subscriptions::router_code));
                self.write_ready_acks();
            }
            FromRouter::PubRel(pkid) => {
                let link = &mut self.link;
                if self.acks.router_pubrel(pkid, &mut |p| link.push(p)) {
                    codec::ack(&mut self.write_buf, self.protocol, codec::PUBREL, pkid, 0);
                    client_log::sending_ack("PUBREL", &self.client_id, pkid, None);
                }
            }
            FromRouter::PingResp => self.on_probe_answer(),
            FromRouter::Paused => {
                self.router_paused = true;
                self.backlog.router_paused();
            }
            FromRouter::Nothing => {}
        }
        Ok(())
    }

    /// A message from the router for this client: checked against the client's ACL and maximum
    /// packet size; a dropped QoS>0 message is still acknowledged to the router, in order.
    fn deliver(&mut self, mut publish: Publish, properties: Option<PublishProperties>) {
        let size = 4 + publish.topic.len() + publish.payload.len();
        let payload_len = publish.payload.len();
        let allowed = std::str::from_utf8(&publish.topic).is_ok_and(|topic| self.authz.allows(Access::Receive, topic));
        if !allowed {
            // Encode without the payload just to learn QoS and packet id.
            publish.payload = Bytes::new();
        }
        let start = self.write_buf.len();
        // (what the `-v` line needs, kept only when it is shown: this is the delivery hot path)
        let shown = tracing::enabled!(tracing::Level::DEBUG).then(|| (publish.topic.clone(), publish.payload.len()));
        let Some(meta) = codec::encode_publish(&mut self.write_buf, self.protocol, publish, properties) else {
            warn!(client_id = %client_text(&self.client_id), "could not encode a delivery");
            return;
        };
        self.backlog.forwarded(meta.qos, size);
        let too_large = self.write_buf.len() - start > self.client_max_packet;
        if allowed && !too_large {
            METRICS.publish_out(payload_len);
            if meta.qos > 0 {
                self.acks.sent(meta.pkid, meta.qos);
            }
            if let Some((topic, payload_len)) = shown {
                let PublishMeta { qos, pkid, dup, retain } = meta;
                let line = PublishLine { dup, qos, retain, pkid, topic: &topic, payload_len };
                client_log::sending_publish(&self.client_id, &line);
            }
            return;
        }
        if allowed {
            Metrics::inc(&METRICS.publish_dropped);
        }
        self.write_buf.truncate(start);
        if meta.qos > 0 {
            let link = &mut self.link;
            self.acks.dropped(meta.pkid, meta.qos, &mut |p| link.push(p));
        }
    }

    /// The router answered a back-pressure probe (we answer the client's PINGREQs ourselves).
    fn on_probe_answer(&mut self) {
        let again = match self.backlog.probe_answered(&self.shared.pressure) {
            ProbeStep::SendSecond => true,
            // A probe that proved nothing, or a lag that grew meanwhile: probe again now rather
            // than wait for a request that was already made (one probe at a time, so the router's
            // answers pace this).
            ProbeStep::Done => self.backlog.wants_probe(&self.shared.pressure, self.acks.outstanding(), true),
        };
        if again {
            self.link.push(Packet::PingReq(PingReq));
        }
    }

    fn handle_mail(&mut self, first: Mail) -> Result<(), Exit> {
        let mut next = Some(first);
        while let Some(mail) = next.take() {
            match mail {
                Mail::Kick(reason) => return Err(Exit::Kicked(reason)),
                Mail::Control(reply) => self.write_control_reply(&reply),
                Mail::Sys(message) => self.write_sys(&message),
            }
            next = self.mailbox.try_recv().ok();
        }
        Ok(())
    }

    fn write_control_reply(&mut self, reply: &ControlReply) {
        let publish =
            Publish::new(Bytes::copy_from_slice(reply.topic.as_bytes()), Bytes::copy_from_slice(&reply.payload), false);
        self.write_local(publish);
    }

    /// SUBACKs and UNSUBACKs that are complete, then the retained `$SYS` values they bring.
    fn write_ready_acks(&mut self) {
        for message in self.pending_acks.write_ready(&mut self.write_buf, self.protocol, &self.client_id) {
            self.write_sys(&message);
        }
    }

    fn write_sys(&mut self, message: &crate::sys_topics::SysMessage) {
        let topic = Bytes::copy_from_slice(message.topic.as_bytes());
        self.write_local(Publish::new(topic, message.payload.clone(), message.retain));
    }

    /// Writes a QoS 0 message the gate itself publishes, unless it exceeds the client's maximum
    /// packet size.
    fn write_local(&mut self, publish: Publish) {
        let payload_len = publish.payload.len();
        let topic = publish.topic.clone(); // (refcounted) for the `-v` line
        let start = self.write_buf.len();
        if let Some(meta) = codec::encode_publish(&mut self.write_buf, self.protocol, publish, None) {
            if self.write_buf.len() - start > self.client_max_packet {
                self.write_buf.truncate(start);
                Metrics::inc(&METRICS.publish_dropped);
            } else {
                METRICS.publish_out(payload_len);
                let line = PublishLine {
                    dup: meta.dup,
                    qos: meta.qos,
                    retain: meta.retain,
                    pkid: meta.pkid,
                    topic: &topic,
                    payload_len,
                };
                client_log::sending_publish(&self.client_id, &line);
            }
        }
    }

    /// The one exit path: last writes, router, registries, session and will.
    async fn finish(mut self, exit: Exit) {
        // Router and registry first, socket last: a client that sees the close can reconnect at
        // once and find its session saved. The router also goes before the last writes, which
        // may take CLOSING_WRITE_TIMEOUT: a takeover waits for this connection only so long, and
        // its new link must not find this one still in the router.
        // What the client sent before it left (a publish followed by DISCONNECT in one read)
        // still reaches the router: attach for it, and detaching flushes it.
        if self.attach_if_wanted().await.is_err() {
            warn!(client_id = %client_text(&self.client_id), "messages sent before leaving were dropped: router refused the link");
        }
        self.link.detach(); // (a no-op when the router already dropped the link)
        if self.protocol == Protocol::V5
            && let Some(reason) = exit.v5_reason()
        {
            codec::disconnect(&mut self.write_buf, reason);
            tracing::debug!("Sending DISCONNECT to {} (rc{reason})", client_text(&self.client_id));
        }
        if !matches!(exit, Exit::Lost | Exit::Closed) && !self.write_buf.is_empty() {
            let _ = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, self.stream.write_all(&self.write_buf)).await;
        }
        self.shared.control.remove_connection(self.conn_id);
        self.shared.sys.remove_connection(self.conn_id);
        self.backlog.close(&self.shared.pressure);

        let outlives = match self.protocol {
            Protocol::V5 => self.session_expiry > 0,
            Protocol::V31 | Protocol::V311 => !self.clean_start,
        };
        let expiry = match self.protocol {
            Protocol::V5 if self.session_expiry != u32::MAX => Some(self.session_expiry),
            _ => None,
        };
        let will = self.will.take().filter(|_| exit.publishes_will()).map(|will| {
            let delay = will.delay;
            let pending = PendingWill {
                topic: will.topic,
                payload: will.payload,
                retain: will.retain,
                properties: will.properties,
                authz: self.authz.clone(),
            };
            (pending, delay)
        });
        let saved = outlives.then(|| SavedSession {
            owner: self.username.clone(),
            subscriptions: std::mem::take(&mut self.subscriptions),
            inbound_qos2: std::mem::take(&mut self.inbound_qos2),
            routed: self.link.is_attached(),
        });
        if self.persistent_link && !outlives && self.link.is_attached() {
            // Resumed with clean start 0 but session expiry 0: the session ends now. Purged while
            // this connection still owns the id, so that no new link races with the purge.
            self.shared.engine.purge(&self.client_id).await;
        }
        let release = Release { saved, expiry, will };
        self.shared.sessions.release(&self.client_id, self.conn_id, release);
        let _ = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, self.stream.shutdown()).await;
        client_log::disconnected(&self.client_id, exit.departure());
    }
}

/// The reason code of a v5 PUBACK (0 for 3.x, which has none).
fn puback_code(reason: &rumqttd::protocol::PubAckReason) -> u8 {
    use rumqttd::protocol::PubAckReason;
    match reason {
        PubAckReason::Success => 0,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}
