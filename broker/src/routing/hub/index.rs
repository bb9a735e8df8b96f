//! The hub's fan-out index: which connections' hub subscriptions match a routed topic. One
//! filter tree (`routing::filter_tree`) whose value per filter is the list of its subscribers,
//! each with the queue its deliveries go to.

use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};

use super::inbox::Inbox;
use crate::routing::filter_tree::FilterTree;

/// A subscriber in the fan-out index.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) conn_id: u64,
    pub(super) inbox: Arc<Inbox>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Index {
    tree: RwLock<FilterTree<Vec<Member>>>,
}

impl Index {
    /// Adds `inbox` (connection `conn_id`) as a subscriber of `filter` (client spelling,
    /// validated, not shared). Adding the same pair twice keeps one entry.
    pub(super) fn subscribe(&self, filter: &str, conn_id: u64, inbox: &Arc<Inbox>) {
        let mut tree = self.tree.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (members, _) = tree.slot(filter.as_bytes(), Vec::new);
        if !members.iter().any(|m| m.conn_id == conn_id) {
            if members.capacity() == 0 {
                // Most filters have one subscriber (a device's own topic): room for one, not the
                // four a first push reserves.
                members.reserve_exact(1);
            }
            members.push(Member { conn_id, inbox: inbox.clone() });
        }
    }

    /// Removes connection `conn_id` from `filter`.
    pub(super) fn unsubscribe(&self, filter: &str, conn_id: u64) {
        let mut tree = self.tree.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        tree.update(filter.as_bytes(), |members| {
            members.retain(|m| m.conn_id != conn_id);
            members.is_empty()
        });
    }

    /// The members with a subscription matching `topic` (client spelling), each connection once.
    pub(super) fn matching(&self, topic: &[u8], out: &mut Vec<Member>) {
        let tree = self.tree.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = tree.matching(topic, |members| {
            out.extend(members.iter().cloned());
            ControlFlow::Continue(())
        });
        if out.len() > 1 {
            out.sort_unstable_by_key(|m| m.conn_id);
            out.dedup_by_key(|m| m.conn_id);
        }
    }

    /// No subscription left (the tree is pruned as they go).
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.tree.read().unwrap_or_else(|poisoned| poisoned.into_inner()).is_empty()
    }
}
