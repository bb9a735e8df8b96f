//! Back-pressure for what other nodes send (docs/cluster.md, "Batches"): a message from another
//! node enters this node's router like a local client's, so it is counted in the same
//! back-pressure lanes (`routing::backpressure`), and the task reading it from NATS waits while a
//! lane it goes into is held, as a local publisher stops reading its socket.
//!
//! Why: a subscriber's lag inside rumqttd is bounded only by holding whoever feeds the router;
//! a node injecting another node's burst unchecked rolled the subscriber's log over (C1 lost a
//! sixth of its messages across nodes once batches made the NATS path fast). While the reader
//! waits, what follows stays in NATS: the node's subscription buffer for core NATS (at most
//! once: beyond that buffer nats-server drops for a slow consumer, as it would before), and the
//! node's JetStream consumer for QoS 1/2 of nodes with persistence (nothing is lost; the stream
//! holds it).

use std::sync::Arc;
use std::time::Duration;

use crate::routing::backpressure::{Pressure, TopicLanes};

/// How often a held reader looks again without a release signal (a missed one cannot stall it).
const RECHECK: Duration = Duration::from_millis(100);

/// The gate's back-pressure, as the readers of other nodes' messages see it.
#[derive(Clone)]
pub struct Admission {
    pressure: Arc<Pressure>,
}

impl Admission {
    pub fn new(pressure: Arc<Pressure>) -> Admission {
        Admission { pressure }
    }

    /// Waits while back-pressure holds a lane of `topic` — until its slow subscriber caught up,
    /// or was given up after `gate_backpressure_max_hold` (`routing::backpressure`) — and returns
    /// the topic's lanes, for [`Admission::routed`].
    pub async fn admit(&self, topic: &[u8]) -> TopicLanes {
        let lanes = TopicLanes::of(topic);
        if !self.pressure.holding(&lanes) {
            return lanes;
        }
        let mut released = self.pressure.watch_release();
        while self.pressure.holding(&lanes) {
            if tokio::time::timeout(RECHECK, released.changed()).await.is_ok_and(|r| r.is_err()) {
                // (The sender lives as long as the process; never spin if it did not.)
                tokio::time::sleep(RECHECK).await;
            }
        }
        lanes
    }

    /// Counts one message to `topic` (its `lanes`) handed to the router, as
    /// `gate::connection::publish` counts a local one.
    pub fn routed(&self, lanes: &TopicLanes, topic: &[u8], payload: usize) {
        let size = 4 + topic.len() + payload;
        self.pressure.record_published(lanes, size as u64);
    }
}
