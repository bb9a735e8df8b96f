//! What one client connection keeps for persistence: the changes its current read made (saved
//! before the read's acknowledgements are written), the reads whose saves are still being synced
//! (durable mode: the connection reads on meanwhile, `gate/connection/inbound.rs`), the removals of stored copies its client
//! acknowledged (saved in the background: losing one only means a duplicate after a crash, which
//! QoS 1 allows), which of its deliveries in flight are stored copies, and the PUBRELs it owes
//! its client (a stored QoS 2 copy the client acknowledged with PUBREC leaves the queue and
//! becomes a PUBREL due, so that a restart sends the PUBREL again rather than the message).
//!
//! Boxed behind an `Option` in the connection, so that a broker without persistence pays one
//! pointer per connection.

use std::collections::VecDeque;
use std::sync::Arc;

use super::number_hash::{NumberMap, NumberSet};
use super::store::ClientId;
use super::{Op, Persistence, Qos2Direction, Saved};

/// How many reads of one connection may wait for their sync at once; the connection stops
/// reading beyond that. (A publisher's own window bounds it too: it sends no more than its
/// unacknowledged messages allow.)
pub const MAX_SAVES_IN_FLIGHT: usize = 8;

pub struct ConnectionState {
    pub persistence: Arc<Persistence>,
    /// Changes to save before this read's acknowledgements go out.
    pub ops: Vec<Op>,
    /// Reads whose changes are appended and not yet synced, oldest first: where the read's
    /// acknowledgements begin in the connection's write buffer (nothing from there on is written
    /// before the answer), and the answer.
    pub saving: VecDeque<(usize, Saved)>,
    /// The store sequences of stored copies this client is done with, not yet taken out of the
    /// session index (all at once, at the end of the read: `submit_dequeued`).
    done: Vec<u64>,
    /// Background changes: the removals of those copies, QoS 2 state of deliveries.
    dequeued: Vec<Op>,
    /// The client's packet id → store sequence of deliveries in flight that are stored copies.
    in_flight: NumberMap<u16, u64>,
    /// The client's packet ids whose PUBREL (then PUBCOMP) is due and recorded in the store.
    pubrels_due: NumberSet<u16>,
    /// The client id as the changes carry it (set at the first change).
    client_id: Option<ClientId>,
}

impl ConnectionState {
    pub fn new(persistence: Arc<Persistence>) -> Box<Self> {
        Box::new(ConnectionState {
            persistence,
            ops: Vec::new(),
            saving: VecDeque::new(),
            done: Vec::new(),
            dequeued: Vec::new(),
            in_flight: NumberMap::default(),
            pubrels_due: NumberSet::default(),
            client_id: None,
        })
    }

    /// The client id shared by this connection's changes.
    fn id(&mut self, client_id: &Arc<str>) -> ClientId {
        match &self.client_id {
            Some(id) if **id == **client_id => id.clone(),
            _ => self.client_id.insert(ClientId::from(client_id)).clone(),
        }
    }

    /// A resumed session owes its client these PUBRELs (some of them recorded in the store).
    pub fn owe_pubrels(&mut self, pkids: &[u16]) {
        self.pubrels_due.extend(pkids);
    }

    /// The client's PUBREC (success) for the delivery with packet id `pkid`: a stored copy
    /// leaves the queue and its PUBREL is recorded as due, in one background change.
    pub fn pubrec(&mut self, client_id: &Arc<str>, pkid: u16) {
        let Some(sequence) = self.in_flight.remove(&pkid) else { return };
        self.done.push(sequence);
        self.pubrels_due.insert(pkid);
        let client_id = self.id(client_id);
        self.dequeued.push(Op::Qos2 { client_id, direction: Qos2Direction::PubrelDue, pkid, held: true });
    }

    /// The client's QoS 2 PUBLISH with packet id `pkid` was accepted (`held`: it waits for its
    /// PUBREL) or released: saved with this read, before its PUBREC or PUBCOMP goes out.
    pub fn inbound_qos2(&mut self, client_id: &Arc<str>, pkid: u16, held: bool) {
        let client_id = self.id(client_id);
        self.ops.push(Op::Qos2 { client_id, direction: Qos2Direction::Inbound, pkid, held });
    }

    /// A delivery was written with the client's packet id `pkid` (0 at QoS 0).
    pub fn written(&mut self, pkid: u16, queued: Option<u64>) {
        let Some(sequence) = queued else { return };
        if pkid == 0 {
            self.done.push(sequence);
        } else {
            self.in_flight.insert(pkid, sequence);
        }
    }

    /// A delivery the client will not get (ACL, expiry, size, another client's).
    pub fn dropped(&mut self, queued: Option<u64>) {
        if let Some(sequence) = queued {
            self.done.push(sequence);
        }
    }

    /// The client finished the delivery with packet id `pkid` (PUBACK, PUBCOMP, PUBREC error).
    pub fn acknowledged(&mut self, client_id: &Arc<str>, pkid: u16) {
        if let Some(sequence) = self.in_flight.remove(&pkid) {
            self.done.push(sequence);
        }
        if self.pubrels_due.remove(&pkid) {
            let client_id = self.id(client_id);
            self.dequeued.push(Op::Qos2 { client_id, direction: Qos2Direction::PubrelDue, pkid, held: false });
        }
    }

    /// Takes the copies the client is done with out of its session's queue, and hands their
    /// removals (with the other background changes) to the writer.
    pub fn submit_dequeued(&mut self, client_id: &Arc<str>) {
        if !self.done.is_empty() {
            let id = self.id(client_id);
            self.persistence.sessions.delivered_all(&mut self.dequeued, &id, self.done.drain(..));
        }
        if !self.dequeued.is_empty() {
            self.persistence.submit_from(&mut self.dequeued);
        }
    }

    /// Saves this read's changes; the answer says when they are durable (`None`: nothing to save).
    pub fn save(&mut self, client_id: &Arc<str>) -> Option<Saved> {
        self.submit_dequeued(client_id);
        if self.ops.is_empty() {
            return None;
        }
        // The changes go to the log as they are; the next read's start with room for as many.
        let room = self.ops.len();
        let ops = std::mem::replace(&mut self.ops, Vec::with_capacity(room));
        Some(self.persistence.commit(ops))
    }

    /// Where the first acknowledgement still waiting for a sync begins in the write buffer.
    pub fn held_from(&self) -> Option<usize> {
        self.saving.front().map(|(from, _)| *from)
    }

    /// The write buffer's first `written` bytes went out: the places after them move up.
    pub fn written_out(&mut self, written: usize) {
        for (from, _) in &mut self.saving {
            *from -= written;
        }
    }
}
