//! `$share` groups across nodes (docs/cluster.md): a shared subscription's messages go to one
//! member in the whole cluster, not one per node.
//!
//! Every node with a local member of `$share/<group>/<filter>` joins one NATS queue group for it
//! (subscribed to the filter's subjects under `<cluster>.msg` and `<cluster>.qos`, where every
//! message is published once by its node: QoS 0, and QoS 1/2 of a node without persistence, on
//! core NATS; QoS 1/2 of a node with persistence into JetStream, which NATS also delivers to
//! subscribers of the subject). NATS gives each message to one node of the queue group — the publisher's
//! own included — and that node hands it to its router stamped with the group
//! (`envelope::Stamp::share_group`); rumqttd then picks one local member of the group, and only a
//! member of that group takes it (`gate::delivery`). The copies every node gets, including the
//! publisher's local one, reach no shared subscription in a cluster.
//!
//! Membership is counted by [`ShareMembership`], held in each shared subscription
//! (`gate::session::Subscription`): the first member of a node subscribes, the last one to go
//! unsubscribes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use rumqttd::protocol::PublishProperties;
use tokio::task::JoinHandle;

use super::subject::{filter_to_subjects, topic_to_subject};
use crate::routing::envelope::{Publisher, Stamp};

/// Hands one message to the local router.
pub(super) type Inject = Arc<dyn Fn(Bytes, &[u8], Stamp, Option<PublishProperties>) + Send + Sync>;

/// This node's queue groups: one per shared subscription with a local member.
pub struct SharedGroups {
    client: async_nats::Client,
    /// `<cluster>.msg` and `<cluster>.qos`: where nodes publish QoS 0 and QoS 1/2 messages.
    message_prefixes: [String; 2],
    /// `<cluster>.share`: queue group names.
    queue_prefix: String,
    inject: Inject,
    /// By the shared subscription's full filter (`$share/<group>/<filter>`).
    members: Mutex<HashMap<String, Members>>,
}

struct Members {
    count: usize,
    receiver: JoinHandle<()>,
}

/// The node's groups, once it joined a cluster (none on a single node).
static GROUPS: OnceLock<Arc<SharedGroups>> = OnceLock::new();

impl SharedGroups {
    /// Makes shared subscriptions made from now on span the cluster.
    pub(super) fn install(client: async_nats::Client, cluster_name: &str, inject: Inject) {
        let groups = SharedGroups {
            client,
            message_prefixes: [format!("{cluster_name}.msg"), format!("{cluster_name}.qos")],
            queue_prefix: format!("{cluster_name}.share"),
            inject,
            members: Mutex::new(HashMap::new()),
        };
        let _ = GROUPS.set(Arc::new(groups));
    }

    fn join(self: &Arc<Self>, shared_filter: &str) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = members.get_mut(shared_filter) {
            entry.count += 1;
            return;
        }
        let receiver = tokio::spawn(Arc::clone(self).receive(shared_filter.to_owned()));
        members.insert(shared_filter.to_owned(), Members { count: 1, receiver });
    }

    fn leave(&self, shared_filter: &str) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = members.get_mut(shared_filter) {
            entry.count -= 1;
            if entry.count == 0 {
                // (Dropping its NATS subscriptions leaves the queue group.)
                entry.receiver.abort();
                members.remove(shared_filter);
            }
        }
    }

    /// Joins the queue group of `shared_filter` and hands what NATS gives this node to the router.
    async fn receive(self: Arc<Self>, shared_filter: String) {
        let Some(group) = crate::routing::shared_filter::share_group(&shared_filter) else { return };
        let filter = crate::routing::shared_filter::matching_path(&shared_filter);
        // The queue group's name: the whole `$share/<group>/<filter>` in the subject encoding
        // (no spaces, the same on every node).
        let queue = topic_to_subject(&self.queue_prefix, &shared_filter);
        let mut inbound = SelectAll::new();
        let subjects = self.message_prefixes.iter().flat_map(|prefix| filter_to_subjects(prefix, filter));
        for subject in subjects {
            match self.client.queue_subscribe(subject, queue.clone()).await {
                Ok(subscriber) => inbound.push(subscriber),
                Err(e) => {
                    tracing::warn!("cluster: {shared_filter} not shared with the other nodes: {e}");
                    return;
                }
            }
        }
        let share_group = Some(Publisher::of(group));
        while let Some(message) = inbound.next().await {
            let subject = message.subject.as_str();
            let Some(prefix) = self
                .message_prefixes
                .iter()
                .find(|p| subject.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('.')))
            else {
                continue;
            };
            for remote in super::remote::remote_messages(&message, prefix, share_group) {
                (self.inject)(remote.topic, &remote.payload, remote.stamp, remote.properties);
            }
        }
    }
}

/// A subscription's memberships in the cluster, for as long as it is kept: a shared one's
/// cluster-wide group, a plain one's count in the node's NATS interest (`interest`, when on).
#[derive(Debug)]
pub struct ShareMembership {
    filter: String,
    shared: bool,
}

impl ShareMembership {
    /// The membership of `filter` when it is a shared subscription on a node of a cluster, or a
    /// plain one on a node forwarding by interest.
    pub fn join(filter: &str) -> Option<ShareMembership> {
        if crate::routing::shared_filter::share_group(filter).is_some() {
            let groups = GROUPS.get()?;
            groups.join(filter);
            return Some(ShareMembership { filter: filter.to_owned(), shared: true });
        }
        super::interest::Interest::join(filter).then(|| ShareMembership { filter: filter.to_owned(), shared: false })
    }
}

impl Clone for ShareMembership {
    fn clone(&self) -> Self {
        if self.shared {
            if let Some(groups) = GROUPS.get() {
                groups.join(&self.filter);
            }
        } else {
            super::interest::Interest::join(&self.filter);
        }
        ShareMembership { filter: self.filter.clone(), shared: self.shared }
    }
}

impl Drop for ShareMembership {
    fn drop(&mut self) {
        if self.shared {
            if let Some(groups) = GROUPS.get() {
                groups.leave(&self.filter);
            }
        } else {
            super::interest::Interest::leave(&self.filter);
        }
    }
}
