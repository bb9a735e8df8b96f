//! The outbound ack sequencer: the QoS 1/2 state of messages the router delivers to one client.
//!
//! rumqttd expects a client's PUBACK/PUBREC (and then PUBCOMP) in exactly the order it sent the
//! messages, and disconnects the client otherwise (docs/rumqttd.md defect 5). The gate also drops
//! some deliveries (ACL on receive, the client's maximum packet size) and must still acknowledge
//! them to the router. So every QoS>0 delivery takes a slot in send order; a slot is released to
//! the router when the client (or the gate, for a dropped message) has acknowledged it *and*
//! every earlier slot has been released. Clients may therefore acknowledge in any order.
//!
//! A delivery may reach the client at a lower QoS than the router sent it with (MQTT delivers at
//! `min(publish QoS, granted QoS)`, the router at the granted one, see `gate::delivery`): the
//! slot keeps both, waits for the client's acknowledgement of its own QoS (none for QoS 0), and
//! completes the router's exchange itself.
//!
//! QoS 2 has a second queue for the PUBREL → PUBCOMP phase. The router answers each PUBREC with a
//! PUBREL; for a PUBREC the gate faked, that PUBREL is swallowed and answered with a fake PUBCOMP.

use std::collections::VecDeque;

use rumqttd::protocol::{Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason};

#[derive(Debug, Clone, Copy)]
struct Slot {
    pkid: u16,
    /// The router's QoS for the delivery.
    qos: u8,
    /// The QoS the client received it with.
    client_qos: u8,
    acked: bool,
    /// The client will never see the PUBREL of this QoS 2 message (dropped, or refused by the
    /// client with a PUBREC error).
    silent_release: bool,
}

#[derive(Debug, Clone, Copy)]
struct Release {
    pkid: u16,
    completed: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AckSequencer {
    inflight: VecDeque<Slot>,
    releasing: VecDeque<Release>,
    /// Packet ids whose PUBREL from the router must not reach the client.
    silent_pubrels: Vec<u16>,
}

impl AckSequencer {
    /// A QoS>0 delivery was written to the client at the router's QoS.
    pub fn sent(&mut self, pkid: u16, qos: u8) {
        self.inflight.push_back(Slot { pkid, qos, client_qos: qos, acked: false, silent_release: false });
    }

    /// A QoS>0 router delivery was written to the client at `client_qos` (lower than the
    /// router's `qos`; 0 completes it at once).
    pub fn sent_as(&mut self, pkid: u16, qos: u8, client_qos: u8, to_router: &mut impl FnMut(Packet)) {
        if client_qos == 0 {
            return self.dropped(pkid, qos, to_router);
        }
        // The client will not see the PUBREL of a QoS 2 exchange it received as QoS 1.
        let silent_release = client_qos < qos;
        self.inflight.push_back(Slot { pkid, qos, client_qos, acked: false, silent_release });
    }

    /// A QoS>0 delivery was dropped by the gate: it is acknowledged to the router in its turn.
    pub fn dropped(&mut self, pkid: u16, qos: u8, to_router: &mut impl FnMut(Packet)) {
        self.inflight.push_back(Slot { pkid, qos, client_qos: 0, acked: true, silent_release: true });
        self.release_inflight(to_router);
    }

    /// The client's PUBACK (QoS 1) or PUBREC (QoS 2). `refused`: a v5 PUBREC with an error
    /// reason, which ends the exchange on the client's side. Unknown packet ids are ignored.
    pub fn client_ack(&mut self, pkid: u16, qos: u8, refused: bool, to_router: &mut impl FnMut(Packet)) {
        if let Some(slot) = self.inflight.iter_mut().find(|s| s.pkid == pkid && s.client_qos == qos && !s.acked) {
            slot.acked = true;
            slot.silent_release |= refused;
            self.release_inflight(to_router);
        }
    }

    /// A PUBREL from the router. Returns true if it must be written to the client.
    pub fn router_pubrel(&mut self, pkid: u16, to_router: &mut impl FnMut(Packet)) -> bool {
        if let Some(index) = self.silent_pubrels.iter().position(|&p| p == pkid) {
            self.silent_pubrels.swap_remove(index);
            self.releasing.push_back(Release { pkid, completed: true });
            self.release_completions(to_router);
            false
        } else {
            self.releasing.push_back(Release { pkid, completed: false });
            true
        }
    }

    /// The client's PUBCOMP. Unknown packet ids are ignored.
    pub fn client_pubcomp(&mut self, pkid: u16, to_router: &mut impl FnMut(Packet)) {
        if let Some(release) = self.releasing.iter_mut().find(|r| r.pkid == pkid && !r.completed) {
            release.completed = true;
            self.release_completions(to_router);
        }
    }

    /// QoS>0 deliveries the router counts as in flight (it stops at `ROUTER_INFLIGHT`).
    pub fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    fn release_inflight(&mut self, to_router: &mut impl FnMut(Packet)) {
        while let Some(slot) = self.inflight.front().filter(|s| s.acked).copied() {
            self.inflight.pop_front();
            if slot.qos == 1 {
                to_router(Packet::PubAck(PubAck { pkid: slot.pkid, reason: PubAckReason::Success }, None));
            } else {
                if slot.silent_release {
                    self.silent_pubrels.push(slot.pkid);
                }
                to_router(Packet::PubRec(PubRec { pkid: slot.pkid, reason: PubRecReason::Success }, None));
            }
        }
    }

    fn release_completions(&mut self, to_router: &mut impl FnMut(Packet)) {
        while let Some(release) = self.releasing.front().filter(|r| r.completed).copied() {
            self.releasing.pop_front();
            to_router(Packet::PubComp(PubComp { pkid: release.pkid, reason: PubCompReason::Success }, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packets: &[Packet]) -> Vec<String> {
        packets
            .iter()
            .map(|p| match p {
                Packet::PubAck(a, _) => format!("puback{}", a.pkid),
                Packet::PubRec(a, _) => format!("pubrec{}", a.pkid),
                Packet::PubComp(a, _) => format!("pubcomp{}", a.pkid),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn out_of_order_client_acks_reach_the_router_in_order() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        for pkid in 1..=3 {
            seq.sent(pkid, 1);
        }
        seq.client_ack(3, 1, false, &mut |p| out.push(p));
        seq.client_ack(1, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["puback1"]);
        seq.client_ack(2, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["puback1", "puback2", "puback3"]);
        assert_eq!(seq.outstanding(), 0);
    }

    #[test]
    fn dropped_messages_wait_for_earlier_ones() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent(1, 1);
        seq.dropped(2, 1, &mut |p| out.push(p));
        assert!(out.is_empty(), "the fake ack must wait for pkid 1");
        seq.client_ack(1, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["puback1", "puback2"]);
    }

    #[test]
    fn qos2_fake_pubrec_swallows_the_routers_pubrel() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.dropped(1, 2, &mut |p| out.push(p));
        seq.sent(2, 2);
        seq.client_ack(2, 2, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "pubrec2"]);
        assert!(!seq.router_pubrel(1, &mut |p| out.push(p)), "PUBREL of a dropped message stays here");
        assert!(seq.router_pubrel(2, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["pubrec1", "pubrec2", "pubcomp1"]);
        seq.client_pubcomp(2, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "pubrec2", "pubcomp1", "pubcomp2"]);
    }

    #[test]
    fn pubcomps_are_released_in_router_order() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent(1, 2);
        seq.sent(2, 2);
        seq.client_ack(1, 2, false, &mut |p| out.push(p));
        seq.client_ack(2, 2, false, &mut |p| out.push(p));
        seq.router_pubrel(1, &mut |p| out.push(p));
        seq.router_pubrel(2, &mut |p| out.push(p));
        seq.client_pubcomp(2, &mut |p| out.push(p));
        seq.client_pubcomp(7, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "pubrec2"]);
        seq.client_pubcomp(1, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "pubrec2", "pubcomp1", "pubcomp2"]);
    }

    #[test]
    fn a_qos2_delivery_received_as_qos1_completes_the_routers_exchange() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent_as(1, 2, 1, &mut |p| out.push(p));
        seq.sent_as(2, 1, 0, &mut |p| out.push(p));
        assert!(out.is_empty(), "pkid 2 waits for pkid 1");
        seq.client_ack(1, 2, false, &mut |p| out.push(p));
        assert!(out.is_empty(), "the client acknowledges QoS 1, not QoS 2");
        seq.client_ack(1, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "puback2"]);
        assert!(!seq.router_pubrel(1, &mut |p| out.push(p)), "the client never sees this PUBREL");
        assert_eq!(names(&out), ["pubrec1", "puback2", "pubcomp1"]);
    }

    #[test]
    fn unknown_and_duplicate_acks_are_ignored() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent(5, 1);
        seq.client_ack(9, 1, false, &mut |p| out.push(p));
        seq.client_ack(5, 2, false, &mut |p| out.push(p));
        assert!(out.is_empty());
        seq.client_ack(5, 1, false, &mut |p| out.push(p));
        seq.client_ack(5, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["puback5"]);
    }
}
