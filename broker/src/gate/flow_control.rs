//! Flow control towards one client: how many QoS 1/2 deliveries it may have unacknowledged, the
//! packet ids they go out with, and the deliveries that wait in the gate for room, in order.
//!
//! The room is the client's v5 Receive Maximum, capped by `max_inflight_messages` (for every
//! client, 3.x included; 0 = no cap). A delivery takes room from the moment it is written until
//! the client's PUBACK, its PUBCOMP, or a PUBREC with an error reason (MQTT 5 §4.9). The router
//! stops at 100 deliveries in flight per client anyway, so at most that many wait here.
//!
//! Packet ids are the gate's: the router numbers deliveries 1..=100 in turn, and again from 1
//! after a resumed session, whatever the client still holds (a QoS 2 exchange keeps its id until
//! its PUBCOMP). The gate gives each delivery the next id the client does not hold, cycling
//! through 1..=65535 as mosquitto does; `routing::ack_sequencer` maps the client's ids back to
//! the router's.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use rumqttd::protocol::PublishProperties;

use crate::routing::envelope::Stamp;

/// A delivery decided for the client: written at once, or (QoS 1/2) kept here until there is room.
#[derive(Debug)]
pub struct Waiting {
    pub topic: Bytes,
    pub payload: Bytes,
    /// Its properties, but for Message Expiry Interval (taken from `stamp` when written); boxed
    /// and only when there are some (see `routing::router_link::Routed`).
    pub properties: Option<Box<PublishProperties>>,
    pub stamp: Stamp,
    pub qos: u8,
    pub retain: bool,
    /// The router's packet id; [`HUB_PKID`] for a delivery of the fleet hub, which the router
    /// does not track (`routing::hub`).
    pub router_pkid: u16,
}

/// The `router_pkid` of a hub delivery (the router numbers its deliveries from 1).
pub const HUB_PKID: u16 = 0;

/// The packet ids a client holds. They are the gate's own choice, never a client's, so they need
/// no flood-resistant hash: SipHash cost more than the rest of a QoS 1 delivery's bookkeeping.
type PacketIds = HashSet<u16, BuildHasherDefault<PacketIdHasher>>;

/// Spreads a packet id over the hash's high bits (which the table's control bytes use) with one
/// multiplication.
#[derive(Debug, Default)]
struct PacketIdHasher(u64);

impl Hasher for PacketIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u16(u16::from(byte) ^ (self.0 as u16));
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = (self.0 ^ u64::from(id)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct OutboundWindow {
    limit: usize,
    /// The packet ids the client holds.
    in_use: PacketIds,
    last_pkid: u16,
    waiting: VecDeque<Waiting>,
}

impl OutboundWindow {
    /// The client's Receive Maximum (`u16::MAX` when it sent none, and for MQTT 3.x) capped by
    /// `max_inflight_messages` (0: no cap).
    pub fn new(receive_maximum: u16, max_inflight_messages: u16) -> Self {
        let limit = match max_inflight_messages {
            0 => receive_maximum,
            cap => receive_maximum.min(cap),
        };
        // (A CONNECT with Receive Maximum 0 is refused by the decoder.)
        OutboundWindow {
            limit: usize::from(limit.max(1)),
            in_use: PacketIds::default(),
            last_pkid: 0,
            waiting: VecDeque::new(),
        }
    }

    /// A new delivery must wait: the window is full, or others wait before it.
    pub fn must_wait(&self) -> bool {
        !self.waiting.is_empty() || !self.has_room()
    }

    fn has_room(&self) -> bool {
        self.in_use.len() < self.limit
    }

    pub fn wait(&mut self, delivery: Waiting) {
        self.waiting.push_back(delivery);
    }

    /// The next waiting delivery, if there is room for it now.
    pub fn next_ready(&mut self) -> Option<Waiting> {
        if self.has_room() { self.waiting.pop_front() } else { None }
    }

    /// Takes the next packet id the client does not hold. Only called with room in the window,
    /// so a free id exists (the window holds at most 65535).
    pub fn take_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid % u16::MAX + 1;
            if self.in_use.insert(self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// The client holds `pkid` (a resumed session's outstanding PUBREL).
    pub fn hold(&mut self, pkid: u16) {
        self.in_use.insert(pkid);
    }

    /// Packet ids the client holds (deliveries in flight).
    pub fn in_flight(&self) -> usize {
        self.in_use.len()
    }

    /// Deliveries waiting for room.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// The client finished with `pkid`.
    pub fn release(&mut self, pkid: u16) {
        self.in_use.remove(&pkid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(router_pkid: u16) -> Waiting {
        let stamp = Stamp::for_test(1, false, "p");
        Waiting {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
            properties: None,
            stamp,
            qos: 1,
            retain: false,
            router_pkid,
        }
    }

    #[test]
    fn the_window_is_the_lower_of_receive_maximum_and_max_inflight_messages() {
        for (receive_maximum, cap, room) in [(2, 20, 2), (u16::MAX, 20, 20), (30, 0, 30), (u16::MAX, 0, 65535)] {
            let mut window = OutboundWindow::new(receive_maximum, cap);
            let mut taken = 0;
            while !window.must_wait() && taken < 70_000 {
                window.take_pkid();
                taken += 1;
            }
            assert_eq!(taken, room, "Receive Maximum {receive_maximum}, max_inflight_messages {cap}");
        }
    }

    #[test]
    fn deliveries_wait_in_order_until_there_is_room() {
        let mut window = OutboundWindow::new(1, 20);
        let first = window.take_pkid();
        assert!(window.must_wait());
        window.wait(waiting(2));
        window.wait(waiting(3));
        assert!(window.next_ready().is_none(), "no room yet");
        window.release(first);
        assert!(window.must_wait(), "others wait before a new delivery");
        assert_eq!(window.next_ready().map(|w| w.router_pkid), Some(2));
        window.take_pkid();
        assert!(window.next_ready().is_none());
    }

    #[test]
    fn packet_ids_held_by_the_client_are_skipped() {
        let mut window = OutboundWindow::new(u16::MAX, 0);
        window.hold(1);
        window.hold(3);
        assert_eq!([window.take_pkid(), window.take_pkid()], [2, 4]);
        window.release(2);
        window.last_pkid = u16::MAX - 1;
        assert_eq!(
            [window.take_pkid(), window.take_pkid(), window.take_pkid()],
            [u16::MAX, 2, 5],
            "wraps, skips 1, 3, 4"
        );
    }
}
