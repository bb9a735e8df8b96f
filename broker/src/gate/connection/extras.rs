//! The part of a connection's state that most connections never use, in one box made on first
//! use: the router's side of deliveries (acknowledgement order, back-pressure bookkeeping), QoS 2
//! packet ids, v5 topic aliases, the filters a resumed session lost, held publishing lanes, a
//! cluster's confirmations and the budget of filters new to the router. A device of a fleet served by the hub (P8: connect, subscribe,
//! publish through the pool, take hub deliveries) never makes it; inline it was 576 of the
//! connection's 1,248 bytes (docs/benchmarks.md, "The connection's own state and task").

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::routing::ack_sequencer::AckSequencer;
use crate::routing::backpressure::{Backlog, TopicLanes};
use crate::routing::token_bucket::TokenBucket;

/// See the module documentation. Its defaults are what a connection without it has.
pub(super) struct Occasional {
    /// The router's deliveries in their order, for acknowledging them to it (only with a link).
    pub acks: AckSequencer,
    /// This connection as a subscriber the router serves (`routing::backpressure`): tracked
    /// once it has routed subscriptions, probing from its link's start.
    pub backlog: Backlog,
    /// The lanes of the message this connection last published while one of them was at a hold
    /// point: reading waits until they may continue (see `backpressure`).
    pub held_lanes: Option<TopicLanes>,
    /// The client's QoS 2 messages between PUBLISH and PUBREL.
    pub inbound_qos2: HashSet<u16>,
    /// v5 topic aliases the client set.
    pub topic_aliases: HashMap<u16, Bytes>,
    /// Outgoing topic aliases given so far.
    pub outgoing_aliases: HashMap<Bytes, u16>,
    /// Routed filters of the resumed session the client may no longer make (see
    /// `subscribe::wants_delivery`).
    pub revoked_on_resume: Vec<String>,
    /// In a cluster: JetStream's answers for this read's QoS 1/2 messages, which its
    /// acknowledgements wait for (`cluster::reliable`).
    pub forwarded: Vec<crate::cluster::reliable::Confirmation>,
    /// New filters this client may still make the router keep (`routing::filter_budget`); made
    /// at its first such filter.
    pub filter_budget: Option<TokenBucket>,
}

/// A connection's [`Occasional`] state, absent until first needed.
#[derive(Default)]
pub(super) struct Extras(Option<Box<Occasional>>);

impl Extras {
    /// What is there, if anything was needed yet.
    pub fn get(&self) -> Option<&Occasional> {
        self.0.as_deref()
    }

    /// What is there to change, if anything was needed yet (a change to an absent part would
    /// leave it as it is: nothing to acknowledge, track or remove).
    pub fn get_mut(&mut self) -> Option<&mut Occasional> {
        self.0.as_deref_mut()
    }

    /// The state, made now if it was absent (`conn_id`: the connection's, for its backlog).
    pub fn make(&mut self, conn_id: u64) -> &mut Occasional {
        self.0.get_or_insert_with(|| {
            Box::new(Occasional {
                acks: AckSequencer::default(),
                backlog: Backlog::new(conn_id),
                held_lanes: None,
                inbound_qos2: HashSet::new(),
                topic_aliases: HashMap::new(),
                outgoing_aliases: HashMap::new(),
                revoked_on_resume: Vec::new(),
                forwarded: Vec::new(),
                filter_budget: None,
            })
        })
    }

    /// The lanes a publish of this connection is held on, if any.
    pub fn held_lanes(&self) -> Option<TopicLanes> {
        self.get().and_then(|extras| extras.held_lanes)
    }

    /// Whether this connection is tracked as a subscriber the router serves.
    pub fn tracked(&self) -> bool {
        self.get().is_some_and(|extras| extras.backlog.tracked())
    }

    /// QoS>0 router deliveries not yet acknowledged to the router.
    pub fn outstanding(&self) -> usize {
        self.get().map_or(0, |extras| extras.acks.outstanding())
    }
}
