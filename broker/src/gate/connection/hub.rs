//! The connection's side of the hub (`routing::hub`): retained messages for every new
//! subscription, from the gate's retained index once the hub has passed the subscription's
//! fence (rumqttd holds none: docs/rumqttd.md defect 19); and with the fan-out
//! (`gate_fleet_hub true`) which of its subscriptions the hub serves, the deliveries it takes
//! from its hub queue (MQTT's rules from `gate::delivery`, the ACL on delivery, the gate's packet
//! ids and window from `gate::flow_control`), the client's acknowledgements of them — kept apart
//! from the router's (`routing::ack_sequencer`): a hub delivery is acknowledged to the gate only
//! — and its publishes through the publisher pool (`routing::publisher_pool`) while it has no
//! router link of its own.

use std::collections::HashSet;

use rumqttd::protocol::{Filter, Packet, RetainForwardRule};
use tokio::io::{AsyncRead, AsyncWrite};

use super::exit::Exit;
use super::{Connection, WRITE_HIGH_WATER};
use crate::gate::client_log;
use crate::gate::codec;
use crate::gate::delivery::{self, RouterCopy};
use crate::gate::flow_control::{HUB_PKID, Waiting};
use crate::gate::subscriptions;
use crate::routing::backpressure::TopicLanes;
use crate::routing::envelope;
use crate::routing::hub::{Fence, Membership};
use crate::routing::router_link::{Routed, RouterLink, RoutingEngine};
use crate::security::Access;

/// A connection's hub state (boxed in the connection: most connections of a broker without the
/// hub, and idle ones with it, have none).
#[derive(Debug)]
pub(super) struct HubState {
    membership: Membership,
    /// Client packet ids of hub deliveries written at QoS 1, or at QoS 2 before their PUBREC.
    in_flight: HashSet<u16>,
    /// Client packet ids of hub QoS 2 deliveries released (PUBREL sent), until their PUBCOMP.
    releasing: HashSet<u16>,
    /// Retained messages for hub subscriptions whose SUBACK still waits behind the router's.
    after_suback: Vec<Routed>,
    /// Hub subscriptions whose retained messages are taken once the hub has passed their fence
    /// (`routing::hub::Fence`).
    pending_replays: Vec<PendingReplay>,
}

#[derive(Debug)]
struct PendingReplay {
    filter: String,
    /// The subscription's QoS; `None`: Retain Handling says no retained messages.
    qos: Option<u8>,
    fence: Fence,
    /// For a subscription the router serves (not the hub): the topics of retained messages the
    /// router delivered live since the SUBSCRIBE. The client has their newest value already, so
    /// the replay leaves them out (`note_live_retained`).
    routed_live: Option<Vec<bytes::Bytes>>,
    /// Once the hub has passed the fence: how many queued deliveries (offered before it did)
    /// are still to be taken before the replay — matching retained ones among them are left to
    /// the replay (`deliver_hub`), so that a message arrives once, as retained.
    due_after: Option<usize>,
}

impl HubState {
    /// Resolves when the hub queued a delivery.
    pub(super) async fn ready(&self) {
        self.membership.inbox.ready.notified().await
    }
}

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Whether the hub serves `filter` for this connection: a non-shared filter of a
    /// non-persistent session, with the hub's fan-out on.
    pub(super) fn uses_hub(&self, filter: &str) -> bool {
        self.shared.hub.as_ref().is_some_and(|hub| hub.fans_out())
            && !self.persistent_link
            && !subscriptions::is_shared(filter)
    }

    /// Whether `filter` is one of this connection's hub subscriptions.
    pub(super) fn is_hub_filter(&self, filter: &str) -> bool {
        self.hub.as_ref().is_some_and(|hub| hub.membership.has(filter))
    }

    /// Subscribes `filters` through the hub (before the SUBACK, so that a PUBLISH read after it
    /// reaches this client), and queues the retained messages due to them.
    pub(super) fn hub_subscribe(&mut self, filters: Vec<Filter>) {
        let shared = self.shared.clone();
        let Some(state) = self.hub_state() else { return };
        for filter in filters {
            shared.subscribed_filters.insert(&filter.path);
            state.membership.add(&filter.path);
            // What was published before this SUBSCRIBE may not have reached the hub yet: its
            // retained messages come as the replay (or, Retain Handling 2, not at all), not live.
            Self::await_replay(state, &shared.pressure, filter, false);
        }
        // Those the hub has passed, with nothing queued before, are taken at once.
        self.hub_pending_replays();
    }

    /// The retained messages of new subscriptions the router serves (persistent sessions; every
    /// session where the fan-out is off): the router holds none (docs/rumqttd.md defect 19), so
    /// they come from the gate's retained index, after the SUBACK, as for hub subscriptions.
    pub(super) fn replay_retained_for_routed(&mut self, filters: &[Filter]) {
        // (A shared subscription gets no retained messages, as in mosquitto; nor does rumqttd send any.)
        let wanted: Vec<&Filter> = filters
            .iter()
            .filter(|f| f.retain_forward_rule != RetainForwardRule::Never && !subscriptions::is_shared(&f.path))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let Some(state) = self.hub_state() else { return };
        for filter in wanted {
            Self::await_replay(state, &shared.pressure, filter.clone(), true);
        }
        self.hub_pending_replays();
    }

    /// Retained messages come from the gate's index, never from a router replay (there should
    /// be none: see `replay_retained_for_routed`).
    pub(super) fn router_replays_dropped(&self) -> bool {
        self.shared.hub.is_some()
    }

    /// A retained message the router delivered live: a pending replay of a routed subscription
    /// matching its topic leaves the topic out (the client has its newest value).
    pub(super) fn note_live_retained(&mut self, topic: &bytes::Bytes) {
        let Some(state) = self.hub.as_deref_mut() else { return };
        for pending in &mut state.pending_replays {
            if let Some(live) = pending.routed_live.as_mut()
                && subscriptions::matches_mqtt(&pending.filter, topic)
                && !live.contains(topic)
            {
                live.push(topic.clone());
            }
        }
    }

    /// This connection's hub state, made on first use (`None`: the hub is off).
    fn hub_state(&mut self) -> Option<&mut HubState> {
        let hub = self.shared.hub.clone()?;
        let conn_id = self.conn_id;
        Some(self.hub.get_or_insert_with(|| {
            Box::new(HubState {
                membership: Membership::new(hub, conn_id),
                in_flight: HashSet::new(),
                releasing: HashSet::new(),
                after_suback: Vec::new(),
                pending_replays: Vec::new(),
            })
        }))
    }

    /// Queues `filter`'s replay until the hub has read everything published before now.
    fn await_replay(
        state: &mut HubState,
        pressure: &crate::routing::backpressure::Pressure,
        filter: Filter,
        routed: bool,
    ) {
        let hub = state.membership.hub();
        let fence = hub.fence(pressure);
        if !hub.passed(&fence) {
            hub.wake_at(fence, &state.membership.inbox);
        }
        let qos = (filter.retain_forward_rule != RetainForwardRule::Never).then_some(filter.qos as u8);
        let routed_live = routed.then(Vec::new);
        state.pending_replays.push(PendingReplay { filter: filter.path, qos, fence, routed_live, due_after: None });
    }

    /// Takes the retained messages of hub subscriptions whose fence the hub has passed, once
    /// what it queued before that has been taken.
    fn hub_pending_replays(&mut self) {
        let Some(state) = self.hub.as_deref_mut() else { return };
        if state.pending_replays.is_empty() {
            return;
        }
        let HubState { membership, after_suback, pending_replays, .. } = state;
        let hub = membership.hub();
        let queued = membership.inbox.len();
        pending_replays.retain_mut(|pending| {
            if pending.due_after.is_none() && hub.passed(&pending.fence) {
                // (Everything the hub offered before it counted the fence passed is queued.)
                pending.due_after = Some(queued);
            }
            if pending.due_after != Some(0) {
                return true;
            }
            if let Some(qos) = pending.qos {
                let replay = hub.retained_matching(&pending.filter, qos);
                match &pending.routed_live {
                    Some(live) => after_suback.extend(replay.into_iter().filter(|r| !live.contains(&r.topic))),
                    None => after_suback.extend(replay),
                }
            }
            false
        });
        if pending_replays.is_empty() {
            // Its slots back to the allocator: a device subscribes once, and four slots kept
            // for good were ~380 B of every device (docs/benchmarks.md, "The gate's memory per
            // connection").
            *pending_replays = Vec::new();
        }
    }

    /// One delivery taken from the hub queue; true if a pending replay is now due.
    fn hub_taken(&mut self) -> bool {
        let Some(state) = self.hub.as_deref_mut() else { return false };
        let mut due = false;
        for pending in &mut state.pending_replays {
            if let Some(left) = pending.due_after.as_mut()
                && *left > 0
            {
                *left -= 1;
                due |= *left == 0;
            }
        }
        due
    }

    /// Removes `filter` from the hub; false if the hub did not serve it.
    pub(super) fn hub_unsubscribe(&mut self, filter: &str) -> bool {
        self.hub.as_mut().is_some_and(|hub| hub.membership.remove(filter))
    }

    /// Writes the retained messages of new hub subscriptions once no SUBACK waits (MQTT clients
    /// expect the SUBACK first).
    pub(super) fn hub_retained_after_suback(&mut self) {
        self.hub_pending_replays();
        if !self.pending_acks.is_empty() {
            return;
        }
        let Some(hub) = self.hub.as_mut() else { return };
        if hub.after_suback.is_empty() {
            return;
        }
        for routed in std::mem::take(&mut hub.after_suback) {
            self.deliver_hub(routed);
        }
    }

    /// Takes deliveries from the hub queue while the write buffer is not full: QoS 0 ones are
    /// written at once, QoS>0 ones while the client's window has room, else they wait in it in
    /// order (as mosquitto lets QoS 0 messages pass QoS 1/2 ones that wait for the client's
    /// Receive Maximum). Those waiting count against the queue's bound (`routing::hub`).
    pub(super) fn drain_hub(&mut self) {
        let Some(inbox) = self.hub.as_ref().map(|hub| hub.membership.inbox.clone()) else { return };
        // Retained messages whose fence the hub passed go before what it queued since.
        self.hub_retained_after_suback();
        loop {
            if self.write_buf.len() >= WRITE_HIGH_WATER {
                // Written first; the next loop turn comes back for the rest.
                if !inbox.is_empty() {
                    inbox.ready.notify_one();
                }
                break;
            }
            let Some(routed) = self.hub.as_ref().and_then(|hub| hub.membership.pop()) else { break };
            let replay_due = self.hub_taken();
            self.deliver_hub(routed);
            if replay_due {
                self.hub_retained_after_suback();
            }
        }
        let waiting = self.window.queued();
        if let Some(hub) = self.hub.as_ref() {
            hub.membership.set_waiting(waiting);
        }
    }

    /// One hub delivery: taken out of its envelope, decided by MQTT's rules, checked against
    /// the client's ACL, written at once (QoS 0, or while the window has room) or kept until
    /// there is room. A live hub copy carries no QoS of its own (`router_qos` 2: the publish and
    /// granted QoS decide); a retained replay carries its subscription's.
    fn deliver_hub(&mut self, routed: Routed) {
        let Routed { topic, payload, qos: replay_qos, retain: replay, properties, .. } = routed;
        let Some((stamp, payload)) = envelope::open(payload) else { return };
        if stamp.addressee.is_some_and(|to| to != self.publisher) {
            return;
        }
        let Some(topic_str) = std::str::from_utf8(&topic).ok().filter(|t| self.wants_delivery(t)) else { return };
        if !self.authz.allows(Access::Receive, topic_str) {
            return;
        }
        if !replay
            && stamp.retain
            && self.hub.as_ref().is_some_and(|hub| {
                hub.pending_replays.iter().any(|pending| subscriptions::matches_mqtt(&pending.filter, &topic))
            })
        {
            // A retained message published before a new subscription (or the replay has a newer
            // value for the topic): the replay carries it, if Retain Handling wants it.
            return;
        }
        let router_qos = if replay { replay_qos } else { 2 };
        let copy =
            RouterCopy { topic: topic_str, stamp: &stamp, router_qos, retained_replay: replay, clustered: false };
        let decided =
            delivery::decide(copy, &self.subscriptions, self.publisher, &mut self.recent_copies, envelope::now_ms);
        let Ok(decision) = decided else { return };
        let mut properties = properties;
        if !decision.subscription_ids.is_empty() {
            properties.get_or_insert_default().subscription_identifiers = decision.subscription_ids;
        } else if let Some(carried) = properties.as_mut() {
            carried.subscription_identifiers.clear();
        }
        let qos = decision.qos;
        let delivery =
            Waiting { topic, payload, properties, stamp, qos, retain: decision.retain, router_pkid: HUB_PKID };
        if qos == 0 {
            self.write_delivery(delivery, 0);
        } else if self.window.must_wait() {
            self.window.wait(delivery);
        } else {
            let client_pkid = self.window.take_pkid();
            self.write_hub_delivery(delivery, client_pkid);
        }
    }

    /// Writes a QoS>0 hub delivery with the client's packet id `client_pkid` (taken).
    pub(super) fn write_hub_delivery(&mut self, delivery: Waiting, client_pkid: u16) {
        if self.write_delivery(delivery, client_pkid) {
            if let Some(hub) = self.hub.as_mut() {
                hub.in_flight.insert(client_pkid);
            }
        } else {
            self.window.release(client_pkid);
        }
    }

    /// The client's PUBACK: true if it was for a hub delivery (then handled).
    pub(super) fn hub_puback(&mut self, pkid: u16) -> bool {
        if !self.hub.as_mut().is_some_and(|hub| hub.in_flight.remove(&pkid)) {
            return false;
        }
        self.hub_finished(pkid);
        true
    }

    /// The client's PUBREC: true if it was for a hub delivery. A refusal (MQTT 5 error reason)
    /// ends the exchange; otherwise the gate releases it at once (the message is the gate's).
    pub(super) fn hub_pubrec(&mut self, pkid: u16, refused: bool) -> bool {
        let Some(hub) = self.hub.as_mut() else { return false };
        if !hub.in_flight.remove(&pkid) {
            // A repeated PUBREC of a released exchange: release again.
            if hub.releasing.contains(&pkid) {
                codec::ack(&mut self.write_buf, self.protocol, codec::PUBREL, pkid, 0);
                return true;
            }
            return false;
        }
        if refused {
            self.hub_finished(pkid);
        } else {
            hub.releasing.insert(pkid);
            codec::ack(&mut self.write_buf, self.protocol, codec::PUBREL, pkid, 0);
            client_log::sending_ack("PUBREL", &self.client_id, pkid, None);
        }
        true
    }

    /// The client's PUBCOMP: true if it was for a hub delivery.
    pub(super) fn hub_pubcomp(&mut self, pkid: u16) -> bool {
        if !self.hub.as_mut().is_some_and(|hub| hub.releasing.remove(&pkid)) {
            return false;
        }
        self.hub_finished(pkid);
        true
    }

    fn hub_finished(&mut self, pkid: u16) {
        self.window.release(pkid);
        self.write_waiting();
    }

    /// Whether a congested hub queue holds this connection's publishing (`routing::hub::inbox`):
    /// its last publish was in the lanes of a congested queue (`held_lanes`, set by
    /// `push_publish`). A connection whose own queue is congested is not held: it must keep
    /// reading its client's acknowledgements (as a routed subscriber at its hold point is exempt,
    /// `routing::backpressure`).
    pub(super) fn held_by_hub(&self) -> bool {
        let Some(hub) = self.shared.hub.as_ref() else { return false };
        hub.holding()
            && self.extras.held_lanes().is_some_and(|lanes| hub.queues.holds(&lanes))
            && !self.hub.as_ref().is_some_and(|own| own.membership.inbox.is_congested())
    }

    /// Whether this connection's PUBLISHes go through the publisher pool: the hub is on, the
    /// session is not persistent and it has no router link (attached or waiting to be).
    pub(super) fn publishes_through_pool(&self) -> bool {
        self.shared.publishers.is_some()
            && !self.persistent_link
            && !self.link.is_attached()
            && !self.link.wants_attach()
    }

    /// Hands the router what this connection published through the pool.
    pub(super) fn flush_pool(&mut self) -> Result<(), Exit> {
        if self.pool_batch.is_empty() {
            return Ok(());
        }
        let Some(pool) = &self.shared.publishers else { return Ok(()) };
        pool.send(self.conn_id, &mut self.pool_batch).map_err(|_| Exit::RouterGone)?;
        if self.pool_batch.capacity() > 64 {
            self.pool_batch = Vec::new();
        }
        Ok(())
    }

    /// Pushes one packet for the router: through the pool or the connection's own link. A
    /// publish into the lanes of a congested hub queue holds what this connection reads next
    /// (`held_by_hub`).
    pub(super) fn push_publish(&mut self, packet: Packet) {
        if let (Some(hub), Packet::Publish(publish, _)) = (self.shared.hub.as_ref(), &packet)
            && hub.holding()
        {
            let lanes = TopicLanes::of(&publish.topic);
            if hub.queues.holds(&lanes) {
                self.extras.make(self.conn_id).held_lanes = Some(lanes);
            }
        }
        if self.publishes_through_pool() { self.pool_batch.push(packet) } else { self.link.push(packet) }
    }
}
