//! The outbound ack sequencer: the QoS 1/2 state of messages the router delivers to one client,
//! between the router's packet ids and the client's.
//!
//! rumqttd expects a client's PUBACK/PUBREC (and then PUBCOMP) in exactly the order it sent the
//! messages, and disconnects the client otherwise (docs/rumqttd.md defect 5). The gate also drops
//! some deliveries (ACL on receive, the client's maximum packet size) and must still acknowledge
//! them to the router. So every QoS>0 delivery takes a slot in the router's order; a slot is
//! released to the router when the client (or the gate, for a dropped message) has acknowledged
//! it *and* every earlier slot has been released. Clients may therefore acknowledge in any order.
//!
//! A slot is taken when the router's copy arrives, also for a delivery that waits in the gate
//! for room in the client's Receive Maximum (`gate::flow_control`): the deliveries after it that
//! the client does not get, or gets at QoS 0 at once, are acknowledged to the router only after
//! it, so the router's order holds whatever order the client sees.
//!
//! The client sees the gate's packet ids, not the router's: the router numbers deliveries
//! 1..=100 in turn, whatever is still outstanding at the client (docs/known-differences.md).
//! Each slot carries both; the client's acknowledgements are matched by the client's id, and
//! what goes to the router carries the router's.
//!
//! A delivery may reach the client at a lower QoS than the router sent it with (MQTT delivers at
//! `min(publish QoS, granted QoS)`, the router at the granted one, see `gate::delivery`): the
//! slot keeps both, waits for the client's acknowledgement of its own QoS (none for QoS 0), and
//! completes the router's exchange itself.
//!
//! QoS 2 has a second phase. The router answers each PUBREC with a PUBREL, in order: for an
//! exchange the client takes part in it is passed on under the client's id; for one the gate
//! completed itself it is swallowed and answered with a PUBCOMP. PUBCOMPs reach the router in
//! the order of its PUBRELs.
//!
//! A persistent session keeps what is unfinished ([`Unfinished`]): when it resumes, the router
//! sends again the PUBRELs it has no PUBCOMP for, and the gate completes those itself, while it
//! sends the client the PUBRELs it still owes it, under the client's ids.

use std::collections::VecDeque;

use rumqttd::protocol::{Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason};

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The router's packet id.
    pkid: u16,
    /// The router's QoS for the delivery.
    qos: u8,
    /// The QoS the client receives it with.
    client_qos: u8,
    /// The client's packet id, once the delivery was written (`None` while it waits in the
    /// gate, and for a delivery the client does not get at QoS>0).
    client_pkid: Option<u16>,
    acked: bool,
    /// The client will never see the PUBREL of this QoS 2 message (dropped, received at a
    /// lower QoS, or refused by the client with a PUBREC error).
    silent_release: bool,
}

impl Slot {
    /// The client's packet id of a QoS 2 exchange the client takes part in up to PUBCOMP.
    fn client_release(&self) -> Option<u16> {
        self.client_pkid.filter(|_| self.qos == 2 && !self.silent_release)
    }
}

#[derive(Debug, Clone, Copy)]
struct Release {
    /// The router's packet id.
    pkid: u16,
    /// The client's packet id while the client owes its PUBCOMP.
    client_pkid: Option<u16>,
    completed: bool,
}

/// What a persistent session keeps of its unfinished QoS 2 deliveries while its client is
/// offline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// The router's packet ids whose PUBREL it will send again, in its order.
    router_pubrels: Vec<u16>,
    /// The client's packet ids whose PUBREL (then PUBCOMP) is still due.
    client_pubrels: Vec<u16>,
}

impl Unfinished {
    /// What a session restored from the persistence store has: the PUBRELs owed to the client
    /// (the router, started afresh, has no exchange of it).
    pub fn owed_to_client(client_pubrels: Vec<u16>) -> Self {
        Unfinished { router_pubrels: Vec::new(), client_pubrels }
    }

    /// The packet ids to send the client a PUBREL with when the session resumes.
    pub fn client_pubrels(&self) -> &[u16] {
        &self.client_pubrels
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AckSequencer {
    inflight: VecDeque<Slot>,
    /// PUBRECs given to the router whose PUBREL has not come yet, in order: the router's packet
    /// id, and the client's when the client gets that PUBREL.
    awaiting_pubrel: VecDeque<(u16, Option<u16>)>,
    releasing: VecDeque<Release>,
    /// The client's packet ids of PUBRELs the gate sent again itself after a resumed session
    /// (no router exchange behind them any more).
    resent_pubrels: Vec<u16>,
}

impl AckSequencer {
    /// The sequencer of a resumed session. `router_kept`: the router still holds the session,
    /// so it sends the PUBRELs of `unfinished` again.
    pub fn resumed(unfinished: Unfinished, router_kept: bool) -> Self {
        let awaiting_pubrel = if router_kept {
            unfinished.router_pubrels.into_iter().map(|pkid| (pkid, None)).collect()
        } else {
            VecDeque::new()
        };
        AckSequencer { awaiting_pubrel, resent_pubrels: unfinished.client_pubrels, ..Default::default() }
    }

    /// A QoS>0 router delivery (router packet id `pkid`, QoS `qos`) the client receives at
    /// `client_qos`: 0 completes it at once; otherwise it was written with the client's packet id
    /// `client_pkid`, or waits in the gate (`None`, then [`written`](Self::written) or
    /// [`abandoned`](Self::abandoned)).
    pub fn sent_as(
        &mut self,
        pkid: u16,
        qos: u8,
        client_qos: u8,
        client_pkid: Option<u16>,
        to_router: &mut impl FnMut(Packet),
    ) {
        if client_qos == 0 {
            return self.dropped(pkid, qos, to_router);
        }
        // The client will not see the PUBREL of a QoS 2 exchange it received as QoS 1.
        let silent_release = client_qos < qos;
        self.inflight.push_back(Slot { pkid, qos, client_qos, client_pkid, acked: false, silent_release });
    }

    /// The oldest delivery waiting in the gate, router packet id `pkid`, was written with the
    /// client's packet id `client_pkid`.
    pub fn written(&mut self, pkid: u16, client_pkid: u16) {
        if let Some(slot) = self.waiting_slot(pkid) {
            slot.client_pkid = Some(client_pkid);
        }
    }

    /// A delivery that waited in the gate is not written after all (it expired meanwhile, or is
    /// too large for the client): acknowledged to the router in its turn.
    pub fn abandoned(&mut self, pkid: u16, to_router: &mut impl FnMut(Packet)) {
        if let Some(slot) = self.waiting_slot(pkid) {
            slot.acked = true;
            slot.silent_release = true;
            self.release_inflight(to_router);
        }
    }

    fn waiting_slot(&mut self, pkid: u16) -> Option<&mut Slot> {
        // Waiting deliveries leave in order: the first waiting slot is the one.
        self.inflight.iter_mut().find(|s| s.client_pkid.is_none() && !s.acked && s.pkid == pkid)
    }

    /// A QoS>0 delivery was dropped by the gate: it is acknowledged to the router in its turn.
    pub fn dropped(&mut self, pkid: u16, qos: u8, to_router: &mut impl FnMut(Packet)) {
        let slot = Slot { pkid, qos, client_qos: 0, client_pkid: None, acked: true, silent_release: true };
        self.inflight.push_back(slot);
        self.release_inflight(to_router);
    }

    /// The client's PUBACK (QoS 1) or PUBREC (QoS 2) for its packet id `client_pkid`. `refused`:
    /// a v5 PUBREC with an error reason, which ends the exchange on the client's side. Returns
    /// whether it acknowledged a delivery (unknown and repeated ones are ignored).
    pub fn client_ack(&mut self, client_pkid: u16, qos: u8, refused: bool, to_router: &mut impl FnMut(Packet)) -> bool {
        let Some(slot) =
            self.inflight.iter_mut().find(|s| s.client_pkid == Some(client_pkid) && s.client_qos == qos && !s.acked)
        else {
            return false;
        };
        slot.acked = true;
        slot.silent_release |= refused;
        self.release_inflight(to_router);
        true
    }

    /// A PUBREL from the router: the client's packet id to pass it on with, or `None` when the
    /// gate completes the exchange itself.
    pub fn router_pubrel(&mut self, pkid: u16, to_router: &mut impl FnMut(Packet)) -> Option<u16> {
        // The router sends its PUBRELs in the order of the PUBRECs: the first with this id.
        let client_pkid = match self.awaiting_pubrel.iter().position(|&(p, _)| p == pkid) {
            Some(index) => self.awaiting_pubrel.remove(index).and_then(|(_, client)| client),
            // Not one this session's gate acknowledged: no exchange of the client's is behind it.
            None => None,
        };
        self.releasing.push_back(Release { pkid, client_pkid, completed: client_pkid.is_none() });
        self.release_completions(to_router);
        client_pkid
    }

    /// The client's PUBCOMP for its packet id `client_pkid`. Returns whether it completed an
    /// exchange (unknown ones are ignored).
    pub fn client_pubcomp(&mut self, client_pkid: u16, to_router: &mut impl FnMut(Packet)) -> bool {
        if let Some(index) = self.resent_pubrels.iter().position(|&p| p == client_pkid) {
            self.resent_pubrels.swap_remove(index);
            return true;
        }
        let Some(release) = self.releasing.iter_mut().find(|r| r.client_pkid == Some(client_pkid) && !r.completed)
        else {
            return false;
        };
        release.completed = true;
        self.release_completions(to_router);
        true
    }

    /// Nothing in flight, awaited or owed: what a new sequencer has.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
            && self.awaiting_pubrel.is_empty()
            && self.releasing.is_empty()
            && self.resent_pubrels.is_empty()
    }

    /// QoS>0 deliveries the router counts as in flight (it stops at `ROUTER_INFLIGHT`).
    pub fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// What a session that outlives its connection keeps: the router's PUBRELs that will come
    /// again (it has not had their PUBCOMP), and the client's exchanges still owed a PUBREL —
    /// also those the client acknowledged with a PUBREC that did not reach the router yet (the
    /// router sends that message again; the client's exchange is finished with a PUBREL).
    pub fn unfinished(&self) -> Unfinished {
        let router_pubrels = self.releasing.iter().map(|r| r.pkid).chain(self.awaiting_pubrel.iter().map(|a| a.0));
        let acked_here = self.inflight.iter().filter(|s| s.acked).filter_map(Slot::client_release);
        let client_pubrels = self
            .resent_pubrels
            .iter()
            .copied()
            .chain(self.releasing.iter().filter(|r| !r.completed).filter_map(|r| r.client_pkid))
            .chain(self.awaiting_pubrel.iter().filter_map(|a| a.1))
            .chain(acked_here);
        Unfinished { router_pubrels: router_pubrels.collect(), client_pubrels: client_pubrels.collect() }
    }

    fn release_inflight(&mut self, to_router: &mut impl FnMut(Packet)) {
        while let Some(slot) = self.inflight.front().filter(|s| s.acked).copied() {
            self.inflight.pop_front();
            if slot.qos == 1 {
                to_router(Packet::PubAck(PubAck { pkid: slot.pkid, reason: PubAckReason::Success }, None));
            } else {
                self.awaiting_pubrel.push_back((slot.pkid, slot.client_release()));
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

    /// A delivery written at once, with the client's packet id equal to the router's.
    fn sent(seq: &mut AckSequencer, pkid: u16, qos: u8) {
        seq.sent_as(pkid, qos, qos, Some(pkid), &mut |_| panic!("nothing is released when sent"));
    }

    #[test]
    fn out_of_order_client_acks_reach_the_router_in_order() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        for pkid in 1..=3 {
            sent(&mut seq, pkid, 1);
        }
        assert!(seq.client_ack(3, 1, false, &mut |p| out.push(p)));
        assert!(seq.client_ack(1, 1, false, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["puback1"]);
        assert!(seq.client_ack(2, 1, false, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["puback1", "puback2", "puback3"]);
        assert_eq!(seq.outstanding(), 0);
    }

    #[test]
    fn dropped_messages_wait_for_earlier_ones() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        sent(&mut seq, 1, 1);
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
        sent(&mut seq, 2, 2);
        seq.client_ack(2, 2, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "pubrec2"]);
        assert_eq!(seq.router_pubrel(1, &mut |p| out.push(p)), None, "PUBREL of a dropped message stays here");
        assert_eq!(seq.router_pubrel(2, &mut |p| out.push(p)), Some(2));
        assert_eq!(names(&out), ["pubrec1", "pubrec2", "pubcomp1"]);
        assert!(seq.client_pubcomp(2, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["pubrec1", "pubrec2", "pubcomp1", "pubcomp2"]);
    }

    #[test]
    fn pubcomps_are_released_in_router_order() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        sent(&mut seq, 1, 2);
        sent(&mut seq, 2, 2);
        seq.client_ack(1, 2, false, &mut |p| out.push(p));
        seq.client_ack(2, 2, false, &mut |p| out.push(p));
        seq.router_pubrel(1, &mut |p| out.push(p));
        seq.router_pubrel(2, &mut |p| out.push(p));
        assert!(seq.client_pubcomp(2, &mut |p| out.push(p)));
        assert!(!seq.client_pubcomp(7, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["pubrec1", "pubrec2"]);
        seq.client_pubcomp(1, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "pubrec2", "pubcomp1", "pubcomp2"]);
    }

    #[test]
    fn a_qos2_delivery_received_as_qos1_completes_the_routers_exchange() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent_as(1, 2, 1, Some(1), &mut |p| out.push(p));
        seq.sent_as(2, 1, 0, None, &mut |p| out.push(p));
        assert!(out.is_empty(), "pkid 2 waits for pkid 1");
        assert!(!seq.client_ack(1, 2, false, &mut |p| out.push(p)), "the client acknowledges QoS 1, not QoS 2");
        assert!(out.is_empty());
        seq.client_ack(1, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["pubrec1", "puback2"]);
        assert_eq!(seq.router_pubrel(1, &mut |p| out.push(p)), None, "the client never sees this PUBREL");
        assert_eq!(names(&out), ["pubrec1", "puback2", "pubcomp1"]);
    }

    #[test]
    fn unknown_and_duplicate_acks_are_ignored() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        sent(&mut seq, 5, 1);
        assert!(!seq.client_ack(9, 1, false, &mut |p| out.push(p)));
        assert!(!seq.client_ack(5, 2, false, &mut |p| out.push(p)));
        assert!(out.is_empty());
        assert!(seq.client_ack(5, 1, false, &mut |p| out.push(p)));
        assert!(!seq.client_ack(5, 1, false, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["puback5"]);
    }

    #[test]
    fn a_waiting_delivery_keeps_its_place_in_the_routers_order() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        // Router 1 written as client 40; router 2 waits for room; router 3 reaches the client at
        // QoS 0 at once (passing the waiting one, as mosquitto does); router 4 is dropped.
        seq.sent_as(1, 1, 1, Some(40), &mut |p| out.push(p));
        seq.sent_as(2, 2, 2, None, &mut |p| out.push(p));
        seq.sent_as(3, 1, 0, None, &mut |p| out.push(p));
        seq.dropped(4, 2, &mut |p| out.push(p));
        assert!(out.is_empty());
        assert!(!seq.client_ack(2, 2, false, &mut |p| out.push(p)), "router ids mean nothing to the client");
        assert!(seq.client_ack(40, 1, false, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["puback1"], "the rest waits behind the waiting delivery");
        seq.written(2, 41);
        assert!(seq.client_ack(41, 2, false, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["puback1", "pubrec2", "puback3", "pubrec4"]);
        assert_eq!(seq.router_pubrel(2, &mut |p| out.push(p)), Some(41));
        assert_eq!(seq.router_pubrel(4, &mut |p| out.push(p)), None);
        assert!(seq.client_pubcomp(41, &mut |p| out.push(p)));
        assert_eq!(names(&out)[4..], ["pubcomp2", "pubcomp4"]);
        assert_eq!(seq.outstanding(), 0);
    }

    #[test]
    fn an_abandoned_waiting_delivery_is_acknowledged_in_its_turn() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent_as(1, 1, 1, Some(1), &mut |p| out.push(p));
        seq.sent_as(2, 2, 2, None, &mut |p| out.push(p));
        seq.abandoned(2, &mut |p| out.push(p));
        assert!(out.is_empty());
        seq.client_ack(1, 1, false, &mut |p| out.push(p));
        assert_eq!(names(&out), ["puback1", "pubrec2"]);
        assert_eq!(seq.router_pubrel(2, &mut |p| out.push(p)), None);
        assert_eq!(names(&out), ["puback1", "pubrec2", "pubcomp2"]);
    }

    #[test]
    fn a_router_id_used_again_while_the_clients_pubrel_is_outstanding_stays_apart() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        seq.sent_as(7, 2, 2, Some(1), &mut |p| out.push(p));
        seq.client_ack(1, 2, false, &mut |p| out.push(p));
        assert_eq!(seq.router_pubrel(7, &mut |p| out.push(p)), Some(1));
        // The router numbers on and comes back to 7 while the client still owes PUBCOMP 1.
        seq.sent_as(7, 2, 2, Some(2), &mut |p| out.push(p));
        seq.client_ack(2, 2, false, &mut |p| out.push(p));
        assert_eq!(seq.router_pubrel(7, &mut |p| out.push(p)), Some(2));
        assert!(seq.client_pubcomp(2, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["pubrec7", "pubrec7"], "PUBCOMPs keep the router's order");
        assert!(seq.client_pubcomp(1, &mut |p| out.push(p)));
        assert_eq!(names(&out), ["pubrec7", "pubrec7", "pubcomp7", "pubcomp7"]);
    }

    #[test]
    fn a_resumed_session_completes_the_routers_pubrels_and_owes_the_clients() {
        let mut seq = AckSequencer::default();
        let mut out = Vec::new();
        // 1: PUBREL passed on, PUBCOMP outstanding. 2: dropped, router PUBREL not yet in.
        // 3: client PUBREC given to the router, router PUBREL not yet in. 4: unacknowledged.
        // 5: acknowledged by the client, waiting behind 4.
        for pkid in [1, 3, 4, 5] {
            seq.sent_as(pkid, 2, 2, Some(pkid + 100), &mut |p| out.push(p));
        }
        seq.dropped(2, 2, &mut |p| out.push(p)); // (after 5 in the router's order)
        seq.client_ack(101, 2, false, &mut |p| out.push(p));
        seq.client_ack(103, 2, false, &mut |p| out.push(p));
        seq.client_ack(105, 2, false, &mut |p| out.push(p));
        assert_eq!(seq.router_pubrel(1, &mut |p| out.push(p)), Some(101));
        assert_eq!(names(&out), ["pubrec1", "pubrec3"]);
        let unfinished = seq.unfinished();
        assert_eq!(unfinished.router_pubrels, [1, 3]);
        assert_eq!(unfinished.client_pubrels(), [101, 103, 105]);

        let mut seq = AckSequencer::resumed(unfinished.clone(), true);
        let mut out = Vec::new();
        assert_eq!(seq.router_pubrel(1, &mut |p| out.push(p)), None);
        assert_eq!(seq.router_pubrel(3, &mut |p| out.push(p)), None);
        assert_eq!(names(&out), ["pubcomp1", "pubcomp3"]);
        for client_pkid in [105, 101, 103] {
            assert!(seq.client_pubcomp(client_pkid, &mut |p| out.push(p)));
        }
        assert!(!seq.client_pubcomp(101, &mut |p| out.push(p)));
        assert_eq!(seq.unfinished(), Unfinished::default());

        let seq = AckSequencer::resumed(unfinished, false);
        assert_eq!(seq.unfinished().router_pubrels, [0u16; 0], "a router without the session sends nothing again");
    }
}
