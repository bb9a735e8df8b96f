//! What can be sent to a connection task: control replies, `$SYS` messages, kicks, and the
//! console's request for the connection's details. Its own file
//! so that the registries that send (sessions, `$CONTROL` and `$SYS` subscribers) depend on it and
//! not on each other.

use std::sync::Arc;

use bytes::Bytes;

use crate::security::ControlReply;

/// A `$SYS` message for one connection to write.
#[derive(Debug)]
pub struct SysMessage {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// Set when the message is sent because of a new subscription (a retained message).
    pub retain: bool,
}

/// Why a connection is asked to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// Another connection claimed the client id: v5 DISCONNECT 0x8E, the will is published.
    Takeover,
    /// An administrative change (dynsec kick): v5 DISCONNECT 0x98, no will, session kept.
    Admin,
    /// The broker is stopping: v5 DISCONNECT 0x8B, no will.
    Shutdown,
    /// The client's credentials were revoked by a reload: socket closed without DISCONNECT, no will.
    CredentialsRevoked,
}

/// Messages to a connection task, delivered in order.
#[derive(Debug)]
pub enum Mail {
    /// A `$CONTROL/...` reply to write (QoS 0).
    Control(Arc<ControlReply>),
    /// A `$SYS/...` message to write (QoS 0).
    Sys(Arc<SysMessage>),
    Kick(KickReason),
    /// The console asks what the connection holds (its connected-clients view).
    Describe(tokio::sync::oneshot::Sender<ConnectionDetails>),
}

/// A live connection's state as the console shows it.
#[derive(Debug, Clone)]
pub struct ConnectionDetails {
    /// `3.1`, `3.1.1` or `5`.
    pub protocol: &'static str,
    /// The filters it is subscribed to.
    pub subscriptions: Vec<String>,
    /// QoS>0 deliveries the client has not acknowledged yet.
    pub in_flight: usize,
    /// Deliveries waiting for room in the client's window.
    pub queued: usize,
}
