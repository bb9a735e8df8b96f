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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

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
    /// Stored copies this client is done with.
    dequeued: Vec<Op>,
    /// The client's packet id → store sequence of deliveries in flight that are stored copies.
    in_flight: HashMap<u16, u64>,
    /// The client's packet ids whose PUBREL (then PUBCOMP) is due and recorded in the store.
    pubrels_due: HashSet<u16>,
}

impl ConnectionState {
    pub fn new(persistence: Arc<Persistence>) -> Box<Self> {
        Box::new(ConnectionState {
            persistence,
            ops: Vec::new(),
            saving: VecDeque::new(),
            dequeued: Vec::new(),
            in_flight: HashMap::new(),
            pubrels_due: HashSet::new(),
        })
    }

    /// A resumed session owes its client these PUBRELs (some of them recorded in the store).
    pub fn owe_pubrels(&mut self, pkids: &[u16]) {
        self.pubrels_due.extend(pkids);
    }

    /// The client's PUBREC (success) for the delivery with packet id `pkid`: a stored copy
    /// leaves the queue and its PUBREL is recorded as due, in one background change.
    pub fn pubrec(&mut self, client_id: &str, pkid: u16) {
        let Some(sequence) = self.in_flight.remove(&pkid) else { return };
        self.done(client_id, sequence);
        self.pubrels_due.insert(pkid);
        self.dequeued.push(Op::Qos2 {
            client_id: client_id.to_owned(),
            direction: Qos2Direction::PubrelDue,
            pkid,
            held: true,
        });
    }

    /// The client's QoS 2 PUBLISH with packet id `pkid` was accepted (`held`: it waits for its
    /// PUBREL) or released: saved with this read, before its PUBREC or PUBCOMP goes out.
    pub fn inbound_qos2(&mut self, client_id: &str, pkid: u16, held: bool) {
        self.ops.push(Op::Qos2 { client_id: client_id.to_owned(), direction: Qos2Direction::Inbound, pkid, held });
    }

    /// A delivery was written with the client's packet id `pkid` (0 at QoS 0).
    pub fn written(&mut self, client_id: &str, pkid: u16, queued: Option<u64>) {
        let Some(sequence) = queued else { return };
        if pkid == 0 {
            self.done(client_id, sequence);
        } else {
            self.in_flight.insert(pkid, sequence);
        }
    }

    /// A delivery the client will not get (ACL, expiry, size, another client's).
    pub fn dropped(&mut self, client_id: &str, queued: Option<u64>) {
        if let Some(sequence) = queued {
            self.done(client_id, sequence);
        }
    }

    /// The client finished the delivery with packet id `pkid` (PUBACK, PUBCOMP, PUBREC error).
    pub fn acknowledged(&mut self, client_id: &str, pkid: u16) {
        if let Some(sequence) = self.in_flight.remove(&pkid) {
            self.done(client_id, sequence);
        }
        if self.pubrels_due.remove(&pkid) {
            self.dequeued.push(Op::Qos2 {
                client_id: client_id.to_owned(),
                direction: Qos2Direction::PubrelDue,
                pkid,
                held: false,
            });
        }
    }

    fn done(&mut self, client_id: &str, sequence: u64) {
        self.persistence.sessions.delivered(&mut self.dequeued, client_id, sequence);
    }

    /// Hands the background removals to the writer.
    pub fn submit_dequeued(&mut self) {
        if !self.dequeued.is_empty() {
            self.persistence.submit(std::mem::take(&mut self.dequeued));
        }
    }

    /// Saves this read's changes; the answer says when they are durable (`None`: nothing to save).
    pub fn save(&mut self) -> Option<Saved> {
        self.submit_dequeued();
        if self.ops.is_empty() {
            return None;
        }
        Some(self.persistence.commit(std::mem::take(&mut self.ops)))
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
