//! The publisher pool (`gate_fleet_hub true`): a few gate-owned router links through which
//! connections without a router link of their own hand the router their PUBLISHes.
//!
//! A router link costs rumqttd ~43 KB whatever it carries (`lazy_link`), and in a fleet every
//! device publishes telemetry: with the hub serving its subscriptions (`routing::hub`), a
//! device's link would exist for its publishes alone. Each connection always uses the same pool
//! link (chosen by its connection id), and a link hands the router what was pushed in order, so
//! one publisher's messages keep their order. A connection that has a link of its own (a
//! persistent session, a `$share` subscription) publishes through it instead; what it sent
//! through the pool before reached the router's event queue first (each flush is one event, in
//! the order flushed), so the order holds across the switch too.
//!
//! What a QoS 1/2 publisher is acknowledged after is unchanged: the PUBACK/PUBREC is written
//! once the message is pushed and flushed towards the router, as with its own link. Pool links
//! publish at QoS 0 (the envelope carries the QoS) and subscribe to nothing, so the router
//! sends them nothing but the answer to the PINGREQ each link starts with.

use std::sync::Mutex;

use rumqttd::protocol::Packet;

use crate::routing::router_link::{RouterError, RouterLink, RoutingEngine};

/// See the module documentation.
pub struct PublisherPool<L> {
    links: Vec<Mutex<L>>,
}

impl<L: RouterLink> PublisherPool<L> {
    /// Attaches `size` gate links (at least one).
    pub async fn start<E: RoutingEngine<Link = L>>(engine: &E, size: usize) -> Result<Self, RouterError> {
        let mut links = Vec::with_capacity(size.max(1));
        for n in 0..size.max(1) {
            links.push(Mutex::new(engine.attach_internal(&format!("publisher-{n}")).await?));
        }
        Ok(PublisherPool { links })
    }

    /// Hands the router `batch` (emptied) through the pool link of connection `conn_id`.
    pub fn send(&self, conn_id: u64, batch: &mut Vec<Packet>) -> Result<(), RouterError> {
        if batch.is_empty() {
            return Ok(());
        }
        let link = &self.links[(conn_id % self.links.len() as u64) as usize];
        let mut link = link.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for packet in batch.drain(..) {
            link.push(packet);
        }
        link.flush()
    }
}
