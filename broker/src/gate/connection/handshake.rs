//! The handshake: the first packet must be a CONNECT; its client id, keepalive and listener
//! rules are checked, the security chain decides the login, the session registry hands over the
//! client id, a resumed session's router state is reattached, and CONNACK is written (with the
//! PUBRELs a resumed session still owes the client).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{Filter, SubscribeProperties};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::exit::{Exit, session_outlives};
use super::{CLOSING_WRITE_TIMEOUT, Connection, PIPELINED_BEFORE_CONNACK, READ_CHUNK_MIN};
use crate::gate::client_log::{self, Departure, Login};
use crate::gate::codec::{self, ConnAckProps, ConnectError, FrameError, reason};
use crate::gate::delivery::RecentCopies;
use crate::gate::flow_control::OutboundWindow;
use crate::gate::session::{Release, SubscriptionKind};
use crate::gate::subscription_set::SubscriptionSet;
use crate::gate::subscriptions::PendingAcks;
use crate::logging::client_text;
use crate::metrics::{METRICS, Metrics};
use crate::routing::ack_sequencer::AckSequencer;
use crate::routing::backpressure::Lane;
use crate::routing::envelope::Publisher;
use crate::routing::lazy_link::LazyLink;
use crate::routing::router_link::{RouterLink, RoutingEngine};
use crate::routing::topic_budget::TopicBudget;
use crate::security::{ConnectDecision, ConnectRequest, Protocol, TlsIdentity};
use crate::shared::{Listener, Shared, Unauthenticated};

/// MQTT 3.x CONNACK return codes and their v5 reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    IdentifierRejected,
    ServerUnavailable,
    BadUsernameOrPassword,
    NotAuthorized,
    BadAuthenticationMethod,
}

impl Refusal {
    fn code(self, protocol: Protocol) -> u8 {
        // (MQTT 3.x return code, MQTT 5 reason code)
        let (v3, v5) = match self {
            // mosquitto answers v5 clients 0x80 when zero-length ids are not allowed (docs/compatibility.md §6)
            Refusal::IdentifierRejected => (2, reason::UNSPECIFIED_ERROR),
            Refusal::ServerUnavailable => (3, reason::SERVER_UNAVAILABLE),
            Refusal::BadUsernameOrPassword => (4, reason::BAD_USERNAME_OR_PASSWORD),
            Refusal::NotAuthorized => (5, reason::NOT_AUTHORIZED),
            Refusal::BadAuthenticationMethod => (5, reason::BAD_AUTHENTICATION_METHOD),
        };
        if protocol == Protocol::V5 { v5 } else { v3 }
    }
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

/// A CONNECT the listener's rules refuse: how, why (for the log line), and the client id the
/// line names.
struct Refused {
    refusal: Refusal,
    why: &'static str,
    client_id: String,
}

/// The client id a CONNECT gets on `listener` (and, when the broker assigned it, that id again for
/// the CONNACK), or the refusal the listener's rules call for: no extended authentication,
/// `use_username_as_clientid`, zero-length ids (docs/compatibility.md §6), `clientid_prefixes`, and
/// a 3.x keepalive above `max_keepalive` (those clients cannot be told another one,
/// [`keepalive_above`]).
fn admitted_client_id(
    connect: &codec::Connect,
    listener: &Listener,
    max_keepalive: u16,
) -> Result<(Arc<str>, Option<String>), Refused> {
    let protocol = connect.protocol;
    let refused = |refusal, why, client_id: &str| Refused { refusal, why, client_id: client_id.to_owned() };
    if connect.auth_method.is_some() {
        let why = "enhanced authentication is not supported";
        return Err(refused(Refusal::BadAuthenticationMethod, why, &connect.client_id));
    }
    let mut client_id = connect.client_id.clone();
    if listener.settings.use_username_as_clientid {
        match &connect.username {
            Some(username) => client_id = username.clone(),
            None => {
                let why = "use_username_as_clientid needs a username";
                return Err(refused(Refusal::NotAuthorized, why, &client_id));
            }
        }
    }
    let mut assigned = None;
    if client_id.is_empty() {
        let not_allowed = match protocol {
            Protocol::V31 => true,
            Protocol::V311 => !connect.clean_start,
            Protocol::V5 => false,
        };
        if not_allowed || !listener.security.allow_zero_length_clientid {
            return Err(Refused {
                refusal: Refusal::IdentifierRejected,
                why: "empty client id",
                client_id: "<unknown>".into(),
            });
        }
        client_id = generated_client_id(&listener.security.auto_id_prefix);
        assigned = Some(client_id.clone());
    }
    if let Some(prefix) = &listener.settings.clientid_prefix
        && !client_id.starts_with(prefix.as_str())
    {
        let why = "the client id lacks the listener's clientid_prefix";
        return Err(refused(Refusal::NotAuthorized, why, &client_id));
    }
    if protocol != Protocol::V5 && keepalive_above(connect.keep_alive, max_keepalive) {
        // mosquitto: 3.x clients cannot be told another keepalive, so they are refused.
        return Err(refused(Refusal::IdentifierRejected, "keepalive above max_keepalive", &client_id));
    }
    Ok((client_id.into(), assigned))
}

/// Whether a client's keepalive exceeds `max_keepalive` (0: no limit). As in mosquitto 2.1, no
/// keepalive at all (0) exceeds any limit: such a client could stay silent forever.
fn keepalive_above(keep_alive: u16, max_keepalive: u16) -> bool {
    max_keepalive > 0 && (keep_alive == 0 || keep_alive > max_keepalive)
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
pub(super) async fn handshake<E, S>(
    shared: Arc<Shared<E>>,
    mut stream: S,
    peer: SocketAddr,
    listener: Arc<Listener>,
    tls: Option<TlsIdentity>,
    unauthenticated: Unauthenticated,
) -> Option<Box<Connection<E, S>>>
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
    let listener_config = &listener.settings;
    let (client_id, assigned) = match admitted_client_id(&connect, &listener, config.max_keepalive) {
        Ok(admitted) => admitted,
        Err(Refused { refusal, why, client_id }) => {
            refuse(&mut stream, &login_of(&connect, peer, &client_id), refusal, why).await;
            return None;
        }
    };

    let request = ConnectRequest {
        listener: listener.id,
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
        refused => {
            let (refusal, why) = match refused {
                ConnectDecision::BadUsernameOrPassword => (Refusal::BadUsernameOrPassword, "bad username or password"),
                ConnectDecision::ServerUnavailable => (Refusal::ServerUnavailable, "server unavailable"),
                _ => (Refusal::NotAuthorized, ""),
            };
            refuse(&mut stream, &login, refusal, why).await;
            return None;
        }
    };

    // The session: v3 clean flag; v5 clean start + session expiry (docs/rumqttd.md §3).
    let session_expiry = if protocol == Protocol::V5 { connect.session_expiry } else { 0 };
    let persistent_link = !connect.clean_start || session_outlives(protocol, connect.clean_start, session_expiry);

    let conn_id = shared.next_conn_id();
    let (mailbox_tx, mailbox) = crate::gate::mailbox::channel();
    let claim = match shared
        .sessions
        .claim(&client_id, conn_id, username.clone(), peer.ip(), mailbox_tx.clone(), connect.clean_start)
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
    let mut router_session_present = false;
    let link = if resumes_routed {
        match shared.engine.attach(&client_id, persistent_link).await {
            Ok(attached) => {
                if !attached.session_present {
                    debug!(client_id = %client_text(&client_id), "the router had no saved session");
                }
                router_session_present = attached.session_present;
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
    let mut saved = claim.saved.unwrap_or_default();
    // A queue that came with the session from another node (`cluster::session_moves`).
    let moved = saved.moved.take();
    // The client holds these packet ids until it has answered their PUBRELs (sent after CONNACK).
    let mut window = OutboundWindow::new(connect.receive_maximum, config.max_inflight_messages);
    let owed_pubrels = saved.outbound_qos2.client_pubrels().to_vec();
    for &pkid in &owed_pubrels {
        window.hold(pkid);
    }
    let acks = AckSequencer::resumed(std::mem::take(&mut saved.outbound_qos2), router_session_present);
    let inbound_qos2 = std::mem::take(&mut saved.inbound_qos2);
    // The broker's Receive Maximum, as mosquitto announces it: `max_inflight_messages`.
    let receive_maximum = (config.max_inflight_messages > 0).then_some(config.max_inflight_messages);

    let mut keep_alive_secs = connect.keep_alive;
    let mut server_keep_alive = None;
    if protocol == Protocol::V5 && keepalive_above(keep_alive_secs, config.max_keepalive) {
        keep_alive_secs = config.max_keepalive;
        server_keep_alive = Some(keep_alive_secs);
    }
    let keep_alive = (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500));
    let now = Instant::now();

    let mut connection = Box::new(Connection {
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
        listener: listener.clone(),
        client_id: client_id.clone(),
        username: username.clone(),
        authz,
        mailbox,
        mailbox_tx,
        keep_alive,
        keep_alive_timer: Box::pin(tokio::time::sleep_until(now + keep_alive.unwrap_or(Duration::from_secs(3600)))),
        last_read: now,
        client_max_packet: connect.max_packet_size.map_or(usize::MAX, |size| size as usize),
        max_topic_alias: listener_config.max_topic_alias,
        subscriptions: SubscriptionSet::default(),
        topic_budget: TopicBudget::new(config.gate.new_topics_per_second, config.gate.new_topics_burst),
        inbound_maximum: match receive_maximum {
            Some(maximum) if protocol == Protocol::V5 => usize::from(maximum),
            _ => usize::MAX,
        },
        window,
        publisher: Publisher::of(&client_id),
        sequence: 0,
        recent_copies: RecentCopies::default(),
        last_routing_answer: Default::default(),
        client_topic_alias_max: connect.topic_alias_max,
        pending_acks: PendingAcks::default(),
        extras: Default::default(),
        router_paused: false,
        client_acked: false,
        read_chunk: READ_CHUNK_MIN,
        reads_pending: false,
        reads_quiet: true,
        close_reads: 0,
        will: connect.will.clone().map(Box::new),
        clean_start: connect.clean_start,
        session_expiry,
        persistent_link,
        persist: shared.persistence.clone().map(crate::persistence::connection::ConnectionState::new),
        hub: None,
        pool_batch: Vec::new(),
        hub_release: shared.hub.as_ref().map(|hub| hub.watch_release()),
    });
    // A resumed session's unfinished QoS 2 exchanges (and an attached link, below) need the
    // occasional state; other connections start without it.
    if !inbound_qos2.is_empty() || !acks.is_empty() {
        let extras = connection.extras.make(conn_id);
        extras.acks = acks;
        extras.inbound_qos2 = inbound_qos2;
    }
    if connection.link.is_attached() {
        // the link's start-up PINGREQ
        connection.extras.make(conn_id).backlog.probe_sent(&shared.pressure, 0);
    }
    if let Some(persist) = connection.persist.as_deref_mut() {
        persist.owe_pubrels(&owed_pubrels);
    }
    if session_present {
        connection.restore_subscriptions(saved.subscriptions);
    }
    let props = ConnAckProps {
        assigned_client_id: assigned.as_deref(),
        topic_alias_max: listener_config.max_topic_alias,
        max_packet_size: Some(config.max_packet_size),
        server_keep_alive,
        receive_maximum,
        retain_unavailable: !config.persistence.retain_available,
    };
    codec::connack(&mut connection.write_buf, protocol, session_present, 0, &props);
    for pkid in owed_pubrels {
        codec::ack(&mut connection.write_buf, protocol, codec::PUBREL, pkid, 0);
        client_log::sending_ack("PUBREL", &client_id, pkid, None);
    }
    // The username the login settled on (a certificate's identity may stand in for it).
    client_log::connected(&Login { username: username.as_deref(), ..login });
    client_log::will(connect.will.as_ref().map(|w| (w.topic.as_str(), w.payload.len(), w.retain, w.qos)));
    client_log::sending_connack(&client_id, session_present, 0);
    // The session in the store: ended by a clean start, recorded as connected otherwise; the
    // messages it queued that the router does not hold follow the subscriptions just re-sent.
    let mut replay = connection.session_connected();
    // A moved queue joins the store's (with persistence; stored before the old node is told)
    // and follows it to the router, after the subscriptions.
    let (moved_unstored, receipt, stored) = match moved.map(|moved| *moved) {
        None => (Vec::new(), None, None),
        Some(moved) => match connection.adopt_moved(moved.messages) {
            Ok((adopted, stored)) => {
                replay.extend(adopted);
                (Vec::new(), moved.receipt, Some(stored))
            }
            Err(unstored) => (unstored, moved.receipt, None),
        },
    };
    if connection.link.flush().is_err() {
        connection.finish(Exit::RouterGone).await;
        return None;
    }
    if let Some(persistence) = &shared.persistence
        && !replay.is_empty()
    {
        persistence.replay(&*shared.engine, &client_id, replay);
    }
    if !moved_unstored.is_empty() {
        crate::persistence::replay_unstored(&*shared.engine, &client_id, moved_unstored);
    }
    if let Some(receipt) = receipt {
        tokio::spawn(async move {
            // (Not stored: the old node is not told, and keeps its copy.)
            if let Some(stored) = stored
                && stored.await.is_err()
            {
                return;
            }
            receipt.confirm();
        });
    }
    Some(connection)
}

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Re-registers the subscriptions of a resumed session: the router restores its data cursors
    /// but not its subscription map, so without this UNSUBSCRIBE would be ignored (docs/rumqttd.md
    /// defect 3);
    /// subscription identifiers are lost by the router too. Then those the client may no longer
    /// make are removed (CVE-2021-34434, see `drop_revoked_subscriptions`).
    pub(super) fn restore_subscriptions(&mut self, subscriptions: SubscriptionSet) {
        let mut by_id: HashMap<Option<usize>, Vec<Filter>> = HashMap::new();
        for subscription in subscriptions.values() {
            match subscription.kind {
                SubscriptionKind::Routed => {
                    // A resumed session gets no retained messages, also when the router no longer
                    // holds it (restored from the persistence store after a restart).
                    let mut filter = subscription.filter.clone();
                    filter.retain_forward_rule = rumqttd::protocol::RetainForwardRule::Never;
                    by_id.entry(subscription.id).or_default().push(filter)
                }
                SubscriptionKind::Control => self.shared.control.subscribe(
                    self.conn_id,
                    self.listener.id,
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
            for filter in &filters {
                self.shared.subscribed_filters.insert(&filter.path);
            }
            self.link.subscribe(0, filters, properties);
            self.pending_acks.silent();
        }
        self.subscriptions = subscriptions;
        let revoked = self.drop_revoked_subscriptions();
        if !revoked.is_empty() {
            self.extras.make(self.conn_id).revoked_on_resume = revoked;
        }
        self.track_backlog();
    }
}
