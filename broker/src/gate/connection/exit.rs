//! How a connection ends, and the one exit path: last writes, router link, registries, the saved
//! session and the will, then the socket (drained first after a v5 protocol error, so that the
//! client reads the DISCONNECT).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::warn;

use super::{CLOSING_WRITE_TIMEOUT, Connection};
use crate::gate::client_log::{self, Departure};
use crate::gate::codec::{self, reason};
use crate::gate::session::{KickReason, PendingWill, Release, SavedSession};
use crate::logging::client_text;
use crate::routing::router_link::{RouterLink, RoutingEngine};
use crate::security::Protocol;

/// Whether a session outlives its connection: MQTT 5 by its session expiry, 3.x by the clean flag
/// (docs/rumqttd.md §3).
pub(super) fn session_outlives(protocol: Protocol, clean_start: bool, session_expiry: u32) -> bool {
    match protocol {
        Protocol::V5 => session_expiry > 0,
        Protocol::V31 | Protocol::V311 => !clean_start,
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
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
    /// What the client sent could not be saved (persistence), or JetStream did not confirm it (a
    /// QoS 1/2 message for other nodes of a cluster): it was not acknowledged.
    NotSaved,
}

impl Exit {
    pub(super) fn publishes_will(self) -> bool {
        match self {
            Exit::Disconnected { will } => will,
            Exit::Kicked(reason) => reason == KickReason::Takeover,
            Exit::Closed
            | Exit::Lost
            | Exit::KeepAliveTimeout
            | Exit::Protocol(_)
            | Exit::RouterGone
            | Exit::RouterRefused
            | Exit::NotSaved => true,
        }
    }

    pub(super) fn v5_reason(self) -> Option<u8> {
        match self {
            Exit::Kicked(KickReason::Takeover) => Some(reason::SESSION_TAKEN_OVER),
            Exit::Kicked(KickReason::Admin) => Some(reason::ADMINISTRATIVE_ACTION),
            Exit::Kicked(KickReason::Shutdown) => Some(reason::SERVER_SHUTTING_DOWN),
            Exit::Kicked(KickReason::CredentialsRevoked) => None,
            Exit::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            Exit::Protocol(code) => Some(code),
            Exit::RouterRefused => Some(reason::SERVER_BUSY),
            Exit::NotSaved => Some(reason::UNSPECIFIED_ERROR),
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
            Exit::Protocol(reason::MALFORMED_PACKET) => Departure::MalformedPacket,
            Exit::Protocol(reason::PACKET_TOO_LARGE) => Departure::OversizePacket,
            Exit::Protocol(_) => Departure::ProtocolError,
            Exit::RouterGone | Exit::RouterRefused => Departure::RouterGone,
            Exit::NotSaved => Departure::SocketError,
        }
    }
}

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// The one exit path: last writes, router, registries, session and will.
    pub(super) async fn finish(mut self: Box<Self>, exit: Exit) {
        // Router and registry first, socket last: a client that sees the close can reconnect at
        // once and find its session saved. The router also goes before the last writes, which
        // may take CLOSING_WRITE_TIMEOUT: a takeover waits for this connection only so long, and
        // its new link must not find this one still in the router.
        let outlives = session_outlives(self.protocol, self.clean_start, self.session_expiry);
        if outlives && matches!(exit, Exit::Kicked(KickReason::Admin | KickReason::CredentialsRevoked)) {
            // mosquitto 2.0.12+ (CVE-2021-34434): a kicked persistent session keeps only the
            // subscriptions its client may still make. (Before anything queues for the others.)
            let _ = self.drop_revoked_subscriptions();
        }
        // What the client sent before it left (a publish followed by DISCONNECT in one read)
        // still reaches the router: attach for it, and detaching flushes it.
        if self.attach_if_wanted().await.is_err() {
            warn!(client_id = %client_text(&self.client_id), "messages sent before leaving were dropped: router refused the link");
        }
        let _ = self.flush_pool(); // (publishes through the pool: handed over, not waiting for a link)
        self.link.detach(); // (a no-op when the router already dropped the link)
        self.hub = None; // out of the hub's index before a takeover's connection subscribes
        // A read cut short (PUBLISHes and a DISCONNECT in one read, or an error after them) left
        // its changes unsaved, while what it published went to the router just above: save them
        // now, and hold what the write buffer has not sent yet until they are (from its start:
        // where that read's acknowledgements begin is not kept, and withholding earlier ones too
        // only makes the client send them again).
        if let Some(persist) = self.persist.as_deref_mut()
            && let Some(saved) = persist.save(&self.client_id)
        {
            persist.saving.push_back((0, saved));
        }
        if !matches!(exit, Exit::Lost | Exit::Closed) {
            // Acknowledgements still waiting for their sync go out only if it succeeds.
            self.settle_saves().await;
        }
        if self.protocol == Protocol::V5
            && let Some(code) = exit.v5_reason()
        {
            codec::disconnect(&mut self.write_buf, code);
            tracing::debug!("Sending DISCONNECT to {} (rc{code})", client_text(&self.client_id));
        }
        if !matches!(exit, Exit::Lost | Exit::Closed) && !self.write_buf.is_empty() {
            let _ = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, self.stream.write_all(&self.write_buf)).await;
        }
        self.shared.control.remove_connection(self.conn_id);
        self.shared.sys.remove_connection(self.conn_id);
        if let Some(extras) = self.extras.get_mut() {
            extras.backlog.close(&self.shared.pressure);
        }

        let expiry = match self.protocol {
            Protocol::V5 if self.session_expiry != u32::MAX => Some(self.session_expiry),
            // `persistent_client_expiration` bounds the sessions that would live forever.
            _ => self
                .shared
                .config
                .persistence
                .persistent_client_expiration
                .map(|d| d.as_secs().min(u32::MAX as u64 - 1) as u32),
        };
        let will = self.will.take().filter(|_| exit.publishes_will()).map(|will| {
            let delay = will.delay;
            let pending = PendingWill {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                publisher: self.publisher,
                origin: self.conn_id,
                properties: will.properties,
                authz: self.authz.clone(),
            };
            (pending, delay)
        });
        if outlives
            && let Some((pending, delay)) = &will
            && *delay > 0
        {
            self.will_waiting(pending, *delay, expiry);
        }
        self.session_left(outlives.then_some(expiry));
        let saved = outlives.then(|| SavedSession {
            owner: self.username.clone(),
            subscriptions: std::mem::take(&mut self.subscriptions),
            inbound_qos2: self
                .extras
                .get_mut()
                .map(|extras| std::mem::take(&mut extras.inbound_qos2))
                .unwrap_or_default(),
            outbound_qos2: self.extras.get().map(|extras| extras.acks.unfinished()).unwrap_or_default(),
            routed: self.link.is_attached(),
            // (A moved queue was handed to the router, or the store, at connect.)
            moved: None,
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
        if matches!(exit, Exit::Protocol(_)) && self.protocol == Protocol::V5 {
            self.drain_until_closed().await;
        }
    }

    /// Reads and discards what a client that broke the protocol still sends, until it closes
    /// (bounded by CLOSING_WRITE_TIMEOUT). Data arriving at a closed socket resets the
    /// connection, and a client still answering what came before the DISCONNECT (a client
    /// publishing past the Receive Maximum answers its PUBRECs) then fails to send and gives up
    /// before it reads the DISCONNECT and its reason code.
    async fn drain_until_closed(&mut self) {
        let mut scratch = [0u8; 4096];
        let drained = async {
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, drained).await;
    }
}
