//! What a session keeps, as plain data: its subscriptions (with how each is served), what a
//! persistent session remembers while its client is offline, a will waiting to be published, and
//! what a leaving connection hands back. Its own file so that the parts that store or move
//! sessions (`persistence`, `cluster::session_moves`) depend on these types and not on the
//! session registry, which itself depends on the cluster (claims, wills across nodes).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use rumqttd::protocol::PublishProperties;

use crate::security::ClientAuthz;

pub use super::subscription_set::{Subscription, SubscriptionKind};

/// What a persistent session keeps while its client is offline.
#[derive(Debug, Clone, Default)]
pub struct SavedSession {
    /// The username the session was saved under: a client id claimed with another username
    /// starts clean instead of inheriting the subscriptions (issue 15, item 6).
    pub owner: Option<Arc<str>>,
    pub subscriptions: super::subscription_set::SubscriptionSet,
    /// Packet ids of inbound QoS 2 messages whose PUBREL has not arrived yet.
    pub inbound_qos2: HashSet<u16>,
    /// Outbound QoS 2 exchanges still unfinished (PUBRELs due both ways).
    pub outbound_qos2: crate::routing::ack_sequencer::Unfinished,
    /// The router holds state for this session (its connections attached a router link).
    pub routed: bool,
    /// Messages queued for the session that neither the router nor this node's persistence
    /// store holds: moved here with it from another node (`cluster::session_moves`), or kept
    /// when a move was not confirmed. Handed to the router for the client when it connects.
    pub moved: Option<Box<MovedQueue>>,
}

/// The queue a session brought from another node (see [`SavedSession::moved`]).
#[derive(Debug, Clone, Default)]
pub struct MovedQueue {
    /// Oldest first.
    pub messages: Vec<crate::persistence::records::StoredMessage>,
    /// Told once this node holds them as its own (in its store, with persistence): the node
    /// they came from may then forget them.
    pub receipt: Option<MoveReceipt>,
}

/// How a node that received a moved queue tells the node it came from that it holds it (made by
/// `cluster::session_moves`, which knows how; kept here as a callback so that the session types
/// do not depend on the cluster).
#[derive(Clone)]
pub struct MoveReceipt(Arc<dyn Fn() + Send + Sync>);

impl MoveReceipt {
    pub fn new(confirm: impl Fn() + Send + Sync + 'static) -> Self {
        MoveReceipt(Arc::new(confirm))
    }

    /// Tells the other node (once: the receipt is used up).
    pub fn confirm(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for MoveReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MoveReceipt")
    }
}

/// A will waiting to be published, with the authorization of the connection that set it.
pub struct PendingWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// Who published it, for the envelope (No Local; see `routing::envelope`).
    pub publisher: crate::routing::envelope::Publisher,
    /// The connection that set it.
    pub origin: u64,
    pub properties: Option<PublishProperties>,
    pub authz: Arc<dyn ClientAuthz>,
}

/// What a leaving connection hands back. (If the router still holds a session that ends now,
/// the connection purges it before releasing, while it still owns the client id.)
pub struct Release {
    /// `Some` if the session outlives the connection.
    pub saved: Option<SavedSession>,
    /// Seconds the session outlives the connection (`None` = forever, MQTT 3.x persistent).
    pub expiry: Option<u32>,
    /// The will to publish now (delay 0) or after a delay.
    pub will: Option<(PendingWill, u32)>,
}
