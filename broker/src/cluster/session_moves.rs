//! Sessions that move between nodes (docs/cluster.md, "Sessions on takeover"): a client id
//! claimed on one node while the client-id record named another (`client_ids`) brings its
//! persistent session along. The new node asks the previous owner on `<cluster>.session.<node>`
//! (NATS request, the client id as payload); that node takes over its live connection of the id
//! if there is one, ends the session there (its router, its persistence store) and answers with
//! it: the owner, every subscription with its options and identifier (the persistence store's
//! form, `persistence::records::StoredSession`, postcard-encoded), or an empty answer for none.
//! The new node restores it before its CONNACK (session present). An answer that does not come
//! within [`FETCH_TIMEOUT`] (the node is down, or NATS is) leaves the connect with a fresh
//! session, or with this node's own saved one.
//!
//! Not moved: the messages queued for the session on the old node (in its router, and with
//! persistence in its store), and unfinished QoS 2 exchanges; they end with the session there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::config::ClusterConfig;
use crate::gate::saved_session::SavedSession;
use crate::persistence::records::StoredSession;

/// How long a connect waits for the previous owner's answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Ends this node's session of a client id and gives it (taking over its live connection first).
pub type HandOver = Arc<dyn Fn(String) -> BoxFuture<'static, Option<SavedSession>> + Send + Sync>;

pub struct SessionMoves {
    client: async_nats::Client,
    prefix: String,
}

impl SessionMoves {
    /// Answers the other nodes' requests for this node's sessions with `hand_over`.
    pub(super) async fn start(
        client: &async_nats::Client,
        config: &ClusterConfig,
        hand_over: HandOver,
    ) -> Result<SessionMoves, String> {
        let prefix = format!("{}.session", config.name);
        let requests = client
            .subscribe(format!("{prefix}.{}", config.node_name))
            .await
            .map_err(|e| format!("subscribing to the other nodes' session requests: {e}"))?;
        tokio::spawn(answer(client.clone(), requests, hand_over));
        Ok(SessionMoves { client: client.clone(), prefix })
    }

    /// `node`'s session of `client_id`, ended there; `None` when it has none or does not answer.
    pub(super) async fn fetch(&self, node: &str, client_id: &str) -> Option<SavedSession> {
        let subject = format!("{}.{node}", self.prefix);
        let request = self.client.request(subject, Bytes::copy_from_slice(client_id.as_bytes()));
        let answer = match tokio::time::timeout(FETCH_TIMEOUT, request).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::info!(client_id = %crate::logging::client_text(client_id), node, "cluster: the session could not be fetched: {e}");
                return None;
            }
            Err(_) => {
                tracing::info!(client_id = %crate::logging::client_text(client_id), node, "cluster: no answer for the session in {FETCH_TIMEOUT:?}");
                return None;
            }
        };
        if answer.payload.is_empty() {
            return None;
        }
        match crate::persistence::records::decode::<StoredSession>(&answer.payload) {
            Ok(stored) => Some(saved(&stored)),
            Err(e) => {
                tracing::warn!(node, "cluster: a session from another node could not be read: {e}");
                None
            }
        }
    }
}

async fn answer(client: async_nats::Client, mut requests: async_nats::Subscriber, hand_over: HandOver) {
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply.clone() else { continue };
        let Ok(client_id) = std::str::from_utf8(&request.payload) else { continue };
        let handing = hand_over(client_id.to_owned());
        let client = client.clone();
        // (Each in its own task: a takeover waits for its connection to leave.)
        tokio::spawn(async move {
            let payload = match handing.await {
                Some(session) => Bytes::from(crate::persistence::records::encode(&stored(&session))),
                None => Bytes::new(),
            };
            if let Err(e) = client.publish(reply, payload).await {
                tracing::debug!("cluster: a session request not answered: {e}");
            }
        });
    }
}

/// A saved session in its wire form.
fn stored(session: &SavedSession) -> StoredSession {
    StoredSession {
        owner: session.owner.as_deref().map(str::to_owned),
        subscriptions: crate::persistence::sessions::stored_subscriptions(session.subscriptions.values()),
        expiry: None,
        offline_since_unix_ms: None,
    }
}

/// A session from another node, as this node's registry keeps it (the router does not hold it).
fn saved(stored: &StoredSession) -> SavedSession {
    SavedSession {
        owner: stored.owner.as_deref().map(Arc::from),
        subscriptions: stored
            .subscriptions
            .iter()
            .map(|s| (s.filter.clone(), crate::persistence::sessions::subscription(s)))
            .collect(),
        routed: false,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::persistence::records::{StoredSession, StoredSubscription};

    #[test]
    fn a_session_crosses_in_its_stored_form_and_garbage_does_not_decode() {
        let stored = StoredSession {
            owner: Some("dev".into()),
            subscriptions: vec![StoredSubscription {
                filter: "fleet/+/cmd".into(),
                qos: 1,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
                id: Some(7),
            }],
            expiry: None,
            offline_since_unix_ms: None,
        };
        let saved = super::saved(&stored);
        assert_eq!(super::stored(&saved), stored);
        assert!(crate::persistence::records::decode::<StoredSession>(&[0xFF; 3]).is_err());
    }
}
