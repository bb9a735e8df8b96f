//! The gate's only view of authentication and authorization.
//!
//! The connection machinery (listeners, codec, sessions, router link) asks three questions and
//! acts on the answers; it never looks inside dynsec, password files or ACL files. The production
//! implementation is the mosquitto plugin chain in [`chain`] (split by job in the files of this
//! folder); tests may plug in their own. Everything here is called on connection tasks, so:
//! - `authenticate` may be slow (password hashing) and is a future the implementation runs off
//!   the connection task (the production chain uses its low-priority verifier threads);
//! - [`ClientAuthz::allows`] is the hot path (every PUBLISH and every delivered message) and must
//!   not block or take a global lock;
//! - `control` executes admin commands and resolves only once their effect is durable.

mod admin;
pub mod audit;
mod authentication;
mod authz;
pub mod chain;
mod control;
mod reload;
mod reloadable;
pub mod store_access;
pub mod throttle;
pub mod verifier;
mod watcher;

pub use crate::config::ListenerId;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// MQTT protocol level of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    V31,
    V311,
    V5,
}

/// Identity taken from a verified TLS client certificate (issue 5); `None` on plain listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// Subject common name, if the certificate has one.
    pub common_name: Option<String>,
    /// Full subject in RFC 2253 form, e.g. `CN=certuser,O=Test Org,C=GB`.
    pub subject: String,
}

/// What a CONNECT presents. Zero-length username or password are already mapped to `None`
/// (mosquitto treats them as absent).
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The listener that accepted the connection.
    pub listener: ListenerId,
    pub peer: SocketAddr,
    /// The client id after server assignment for empty ids.
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    pub password: Option<Vec<u8>>,
    pub tls: Option<TlsIdentity>,
    pub protocol: Protocol,
}

/// Outcome of authentication; the gate maps refusals to CONNACK codes per protocol.
pub enum ConnectDecision {
    /// Accepted. `username` is the effective username (e.g. a certificate CN replaces the MQTT one).
    Accept { username: Option<Arc<str>>, authz: Arc<dyn ClientAuthz> },
    /// CONNACK 5 (v3.x) / 0x87 Not authorized (v5).
    NotAuthorized,
    /// CONNACK 4 (v3.x) / 0x86 Bad user name or password (v5): TLS identity unavailable.
    BadUsernameOrPassword,
    /// CONNACK 3 (v3.x) / 0x88 Server unavailable (v5): no password verifier became free in time.
    ServerUnavailable,
}

/// The kinds of access checked on a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// PUBLISH from the client (and its will, when it fires).
    Publish,
    /// Delivery of a message to the client (live, retained and queued).
    Receive,
    /// SUBSCRIBE, with the full filter (including `$share/<group>/`).
    Subscribe,
    /// UNSUBSCRIBE, with the full filter.
    Unsubscribe,
}

/// Per-connection authorization, created at CONNECT. Decisions are live: a change made by an
/// admin applies to the next call.
pub trait ClientAuthz: Send + Sync {
    fn allows(&self, access: Access, topic: &str) -> bool;
}

/// Which connected clients a kick targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KickTarget {
    /// Every connection authenticated with this username.
    Username(Arc<str>),
    /// Every connection without a username.
    Anonymous,
    /// Every connection of a username whose credentials stopped authenticating on a reload
    /// (SIGHUP): mosquitto closes the socket without a DISCONNECT, even for MQTT 5.
    CredentialsRevoked(Arc<str>),
}

impl KickTarget {
    /// The targets of the kicks a dynsec change caused (a control command or an external edit).
    pub(crate) fn all_of(kicks: &dynsec::commands::Kicks) -> Vec<KickTarget> {
        let mut targets: Vec<KickTarget> =
            kicks.users.iter().map(|u| KickTarget::Username(u.as_str().into())).collect();
        if kicks.anonymous {
            targets.push(KickTarget::Anonymous);
        }
        targets
    }
}

/// A published reply produced by a control endpoint (broker-originated, QoS 0, no retain).
#[derive(Debug, Clone)]
pub struct ControlReply {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Result of a control request: replies to deliver to authorised subscribers, then kicks to apply
/// (in that order, after the requesting client's PUBACK/PUBREC has been written).
#[derive(Debug, Clone, Default)]
pub struct ControlOutcome {
    pub replies: Vec<ControlReply>,
    pub kicks: Vec<KickTarget>,
}

/// Who sent a control request (for the audit log), and on which listener.
#[derive(Debug, Clone)]
pub struct ControlSender {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    /// The listener the request arrived on.
    pub listener: ListenerId,
    /// MQTT, or the console's REST API or web UI (for the audit trail).
    pub origin: audit::ControlOrigin,
}

pub trait Security: Send + Sync + 'static {
    /// Decide a CONNECT. Must not run hashing on the calling task.
    fn authenticate(&self, request: ConnectRequest) -> BoxFuture<ConnectDecision>;

    /// Handle a PUBLISH to `topic` (which starts with `$CONTROL/`) after the sender's publish
    /// ACL allowed it. `None` means no endpoint is registered for that topic on the sender's
    /// listener (the message is discarded). The future resolves once the request's effects are
    /// durable.
    fn control(&self, sender: ControlSender, topic: &str, payload: Vec<u8>) -> Option<BoxFuture<ControlOutcome>>;

    /// Whether the control endpoint that `topic` (a request or a reply topic) belongs to is served
    /// on `listener`. Replies are delivered only to subscribers on such listeners, so that a
    /// listener without the endpoint sees nothing of what an administrator does on another one.
    fn serves_control(&self, listener: ListenerId, topic: &str) -> bool {
        let _ = (listener, topic);
        true
    }

    /// Kicks that originate outside any client request (a reloaded file, SIGHUP). The gate calls
    /// this once at start and applies every kick it receives.
    fn take_kick_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<KickTarget>>;

    /// The broker's live connections, handed over once at start (dynsec's getClient shows them).
    fn attach_connections(&self, directory: Arc<dyn dynsec::connections::ConnectionDirectory>) {
        let _ = directory;
    }

    /// The dynamic-security engine, when configured (the console's explain tool and store
    /// metrics read it; commands still go through [`Security::control`]).
    fn dynsec_engine(&self) -> Option<Arc<dynsec::Dynsec>> {
        None
    }

    /// The authorization of `username` on `listener` without a login: a will restored from the
    /// persistence store is checked with it when it is published. `None`: this security layer
    /// cannot say (the will is then not published).
    fn authz_for(
        &self,
        listener: ListenerId,
        username: Option<Arc<str>>,
        client_id: Arc<str>,
    ) -> Option<Arc<dyn ClientAuthz>> {
        let _ = (listener, username, client_id);
        None
    }

    /// The audit trail of control commands, when there is a dynsec store to keep it beside.
    fn audit_log(&self) -> Option<Arc<audit::AuditLog>> {
        None
    }

    /// Cluster mode (docs/cluster.md): share the security state through the cluster's log from
    /// now on. Called once at start, before any listener opens.
    fn join_cluster(&self, membership: &crate::cluster::Membership) -> BoxFuture<Result<(), String>> {
        let _ = membership;
        Box::pin(async { Ok(()) })
    }

    /// Re-read reloadable security files (SIGHUP). Kicks go through [`Security::take_kick_events`].
    fn reload(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }

    /// Called once during graceful shutdown, after every client has been disconnected: the place
    /// to flush what must be durable (the dynsec store). The broker exits when it resolves.
    fn shutdown(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}
