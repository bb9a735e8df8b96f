//! What one client connection keeps for persistence: the changes its current read made (saved
//! before the read's acknowledgements are written), the removals of stored copies its client
//! acknowledged (saved in the background: losing one only means a duplicate after a crash, which
//! QoS 1 allows), and which of its deliveries in flight are stored copies.
//!
//! Boxed behind an `Option` in the connection, so that a broker without persistence pays one
//! pointer per connection.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Op, Persistence};

pub struct ConnectionState {
    pub persistence: Arc<Persistence>,
    /// Changes to save before this read's acknowledgements go out.
    pub ops: Vec<Op>,
    /// Stored copies this client is done with.
    dequeued: Vec<Op>,
    /// The client's packet id → store sequence of deliveries in flight that are stored copies.
    in_flight: HashMap<u16, u64>,
}

impl ConnectionState {
    pub fn new(persistence: Arc<Persistence>) -> Box<Self> {
        Box::new(ConnectionState { persistence, ops: Vec::new(), dequeued: Vec::new(), in_flight: HashMap::new() })
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

    /// Saves this read's changes; resolves once they are durable (nothing to wait for: at once).
    pub fn save(&mut self) -> Option<impl Future<Output = Result<(), String>> + Send + use<>> {
        self.submit_dequeued();
        if self.ops.is_empty() {
            return None;
        }
        Some(self.persistence.commit(std::mem::take(&mut self.ops)))
    }
}
