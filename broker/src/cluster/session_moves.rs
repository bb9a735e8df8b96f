//! Sessions that move between nodes (docs/cluster.md, "Sessions on takeover"): a client id
//! claimed on one node while the client-id record named another (`client_ids`) brings its
//! persistent session along, with the messages queued for it there.
//!
//! The new node asks the previous owner on `<cluster>.session.<node>` (the client id as payload,
//! a reply subject of its own). That node takes over its live connection of the id if there is
//! one, takes the session out of its registry with the messages queued for it (its router's
//! queue, `gate::queued_messages`, and with persistence what its store holds that the router
//! does not), and answers in [`Part`]s on the reply subject — postcard-encoded, each within half
//! the NATS server's `max_payload`: the first holds the session (owner, subscriptions with their
//! options and identifiers, the packet ids of unfinished QoS 2 exchanges), every part some of
//! the messages, oldest first; the last says so. An empty answer: no session there.
//!
//! The new node restores the session before its CONNACK (session present) and hands the
//! messages to its router for the new connection after it (`gate::connection::handshake`). Once
//! it holds them as its own — stored in its persistence store and synced, or without persistence
//! handed to its router — it confirms with the answer's token ([`Receipt`], header
//! [`TAKEN`] on the same subject). Only then does the old node end the session in its own store;
//! without a confirmation within [`CONFIRM_TIMEOUT`] it keeps the session and its queue as they
//! were (`SessionSource::not_taken`). So a crash of either node in the middle loses nothing the
//! old node's store held; it may deliver some messages twice (QoS 1 allows it).
//!
//! An answer that does not come within [`FETCH_TIMEOUT`] (the node is down, or NATS is) leaves
//! the connect with a fresh session, or with this node's own saved one. A part that does not
//! decode, comes out of order or does not come within that wait ends the transfer with a
//! warning: what arrived is used, and the old node, unconfirmed, keeps its copy. Messages beyond
//! this node's `max_queued_messages` / `max_queued_bytes` are dropped with a warning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::config::ClusterConfig;
use crate::gate::queued_messages::Rules;
use crate::gate::saved_session::{MoveReceipt, MovedQueue, SavedSession};
use crate::persistence::records::{StoredMessage, StoredSession};

/// How long a connect waits for the previous owner's answer, and then for each further part.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the old node waits for the new node's confirmation before it keeps the session.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// The header of a confirmation (its value: the answer's token; the payload: the client id).
pub const TAKEN: &str = "Dynsec-Session-Taken";
/// Parts after which a transfer is cut off, whatever the bounds (a node sending for ever).
const MAX_PARTS: u32 = 100_000;

/// One message of an answer (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The same in every part of one answer; the confirmation names it.
    pub token: u64,
    /// 0, 1, 2, … in order.
    pub index: u32,
    pub last: bool,
    /// In the first part only.
    pub session: Option<MovedSession>,
    pub messages: Vec<StoredMessage>,
}

/// A session as it moves (the first part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedSession {
    pub session: StoredSession,
    /// The client's QoS 2 PUBLISHes acknowledged with PUBREC, whose PUBREL has not come.
    pub inbound_qos2: Vec<u16>,
    /// The deliveries the client acknowledged with PUBREC, whose PUBREL the broker owes.
    pub pubrels_due: Vec<u16>,
}

/// What a node hands over: the session, and its queued messages oldest first, each with its
/// sequence in this node's persistence store when it is queued there.
pub struct Handed {
    pub session: SavedSession,
    pub messages: Vec<(Option<u64>, StoredMessage)>,
}

/// This node's sessions, as the other nodes ask for them (`gate::session_handover`).
pub trait SessionSource: Send + Sync + 'static {
    /// Takes over a live connection of `client_id`, takes its session out of the registry with
    /// its queue; `None` when there is none.
    fn hand_over(&self, client_id: String) -> BoxFuture<'static, Option<Handed>>;
    /// The other node confirmed: the session ends here for good (its store too).
    fn taken(&self, client_id: &str);
    /// No confirmation: the session stays here as it was, with its queue.
    fn not_taken(&self, client_id: &str, handed: Handed);
    /// This node's bounds for a session's queue (`max_queued_messages`, …).
    fn rules(&self) -> Rules;
}

/// The new node's confirmation that it holds a moved session's messages as its own.
#[derive(Debug, Clone)]
pub struct Receipt {
    client: async_nats::Client,
    subject: String,
    token: u64,
    client_id: String,
}

impl Receipt {
    /// Tells the old node (in the background; a lost confirmation leaves the session there too).
    pub fn confirm(self) {
        tokio::spawn(async move {
            let mut headers = HeaderMap::new();
            headers.insert(TAKEN, self.token.to_string().as_str());
            let payload = Bytes::from(self.client_id.into_bytes());
            if let Err(e) = self.client.publish_with_headers(self.subject, headers, payload).await {
                tracing::info!("cluster: a moved session's confirmation not sent: {e}");
            }
        });
    }
}

/// Confirmations awaited, by token.
type Awaited = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>>;

pub struct SessionMoves {
    client: async_nats::Client,
    prefix: String,
    rules: Rules,
}

impl SessionMoves {
    /// Answers the other nodes' requests for this node's sessions from `source`.
    pub(super) async fn start(
        client: &async_nats::Client,
        config: &ClusterConfig,
        source: Arc<dyn SessionSource>,
    ) -> Result<SessionMoves, String> {
        let prefix = format!("{}.session", config.name);
        let requests = client
            .subscribe(format!("{prefix}.{}", config.node_name))
            .await
            .map_err(|e| format!("subscribing to the other nodes' session requests: {e}"))?;
        let rules = source.rules();
        tokio::spawn(answer(client.clone(), requests, source));
        Ok(SessionMoves { client: client.clone(), prefix, rules })
    }

    /// `node`'s session of `client_id` with its queue (in [`SavedSession::moved`], with the
    /// receipt to confirm once it is held here); `None` when it has none or does not answer.
    pub(super) async fn fetch(&self, node: &str, client_id: &str) -> Option<SavedSession> {
        let subject = format!("{}.{node}", self.prefix);
        let inbox = self.client.new_inbox();
        let answers = match self.client.subscribe(inbox.clone()).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::info!(node, "cluster: the session could not be fetched: {e}");
                return None;
            }
        };
        let request = Bytes::copy_from_slice(client_id.as_bytes());
        if let Err(e) = self.client.publish_with_reply(subject.clone(), inbox, request).await {
            tracing::info!(client_id = %crate::logging::client_text(client_id), node, "cluster: the session could not be fetched: {e}");
            return None;
        }
        let received = receive(answers, node, client_id, self.rules).await?;
        let receipt = received.complete.then(|| {
            let receipt = Receipt {
                client: self.client.clone(),
                subject,
                token: received.token,
                client_id: client_id.to_owned(),
            };
            MoveReceipt::new(move || receipt.clone().confirm())
        });
        let mut session = received.session;
        session.moved = Some(Box::new(MovedQueue { messages: received.messages, receipt }));
        Some(session)
    }
}

/// What a transfer brought.
struct Received {
    session: SavedSession,
    messages: Vec<StoredMessage>,
    token: u64,
    /// Every part came, in order.
    complete: bool,
}

/// Reads an answer's parts (see the module documentation for what is done with bad ones).
async fn receive(mut answers: async_nats::Subscriber, node: &str, client_id: &str, rules: Rules) -> Option<Received> {
    let client_text = crate::logging::client_text(client_id);
    let first = match tokio::time::timeout(FETCH_TIMEOUT, answers.next()).await {
        Ok(Some(first)) => first,
        Ok(None) => return None,
        Err(_) => {
            tracing::info!(client_id = %client_text, node, "cluster: no answer for the session in {FETCH_TIMEOUT:?}");
            return None;
        }
    };
    if first.payload.is_empty() {
        return None;
    }
    let (token, moved, messages, mut last) = match crate::persistence::records::decode::<Part>(&first.payload) {
        Ok(Part { token, index: 0, last, session: Some(moved), messages }) => (token, moved, messages, last),
        Ok(_) => {
            tracing::warn!(
                node,
                "cluster: a session from another node could not be read: its first part holds no session"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(node, "cluster: a session from another node could not be read: {e}");
            return None;
        }
    };
    let mut queue = Bounded::new(rules);
    queue.add(messages);
    let mut index = 0u32;
    let mut complete = true;
    while !last {
        let problem = match tokio::time::timeout(FETCH_TIMEOUT, answers.next()).await {
            Ok(Some(message)) => match crate::persistence::records::decode::<Part>(&message.payload) {
                Ok(part) if part.token == token && part.index == index + 1 && part.session.is_none() => {
                    index += 1;
                    last = part.last;
                    queue.add(part.messages);
                    (index >= MAX_PARTS && !last).then(|| format!("more than {MAX_PARTS} parts"))
                }
                Ok(part) => Some(format!("part {} came where part {} was due", part.index, index + 1)),
                Err(e) => Some(format!("part {} could not be read: {e}", index + 1)),
            },
            Ok(None) => Some("the answer ended".to_owned()),
            Err(_) => Some(format!("part {} did not come in {FETCH_TIMEOUT:?}", index + 1)),
        };
        if let Some(problem) = problem {
            tracing::warn!(
                client_id = %client_text, node,
                "cluster: the queue of a moving session came incomplete ({problem}): what came is delivered, and that node keeps its copy"
            );
            complete = false;
            break;
        }
    }
    if queue.dropped > 0 {
        tracing::warn!(
            client_id = %client_text, node,
            "cluster: a moving session's queue exceeds max_queued_messages / max_queued_bytes here: {} messages dropped",
            queue.dropped
        );
    }
    Some(Received { session: saved(moved), messages: queue.messages, token, complete })
}

/// A queue filled within this node's bounds (the oldest kept, as a full queue here would).
struct Bounded {
    rules: Rules,
    messages: Vec<StoredMessage>,
    bytes: u64,
    dropped: usize,
}

impl Bounded {
    fn new(rules: Rules) -> Self {
        Bounded { rules, messages: Vec::new(), bytes: 0, dropped: 0 }
    }

    fn add(&mut self, messages: Vec<StoredMessage>) {
        for message in messages {
            let size = message.payload.len() as u64;
            let full = (self.rules.max_messages > 0 && self.messages.len() >= self.rules.max_messages)
                || (self.rules.max_bytes > 0 && self.bytes + size > self.rules.max_bytes);
            if full {
                self.dropped += 1;
            } else {
                self.bytes += size;
                self.messages.push(message);
            }
        }
    }
}

async fn answer(client: async_nats::Client, mut requests: async_nats::Subscriber, source: Arc<dyn SessionSource>) {
    let awaited: Awaited = Arc::default();
    let tokens = AtomicU64::new(1);
    while let Some(request) = requests.next().await {
        if let Some(token) = request.headers.as_ref().and_then(|h| h.get(TAKEN)) {
            let sender = token.as_str().parse::<u64>().ok().and_then(|token| lock(&awaited).remove(&token));
            if let Some(sender) = sender {
                let _ = sender.send(());
            }
            continue;
        }
        let Some(reply) = request.reply.clone() else { continue };
        let Ok(client_id) = std::str::from_utf8(&request.payload) else { continue };
        let handing = source.hand_over(client_id.to_owned());
        let (client, source, awaited) = (client.clone(), Arc::clone(&source), Arc::clone(&awaited));
        let token = tokens.fetch_add(1, Ordering::Relaxed);
        let client_id = client_id.to_owned();
        // (Each in its own task: a takeover waits for its connection to leave.)
        tokio::spawn(async move {
            let Some(handed) = handing.await else {
                if let Err(e) = client.publish(reply, Bytes::new()).await {
                    tracing::debug!("cluster: a session request not answered: {e}");
                }
                return;
            };
            let (confirmed, wait) = tokio::sync::oneshot::channel();
            lock(&awaited).insert(token, confirmed);
            let budget = part_budget(client.server_info().max_payload);
            let sent = match parts(token, &handed, budget) {
                Ok((parts, too_large)) => {
                    if too_large > 0 {
                        tracing::warn!(
                            client_id = %crate::logging::client_text(&client_id),
                            "cluster: {too_large} queued messages of a moving session are larger than NATS carries in one message ({budget} bytes): not moved"
                        );
                    }
                    send(&client, reply, parts).await
                }
                Err(e) => Err(e),
            };
            let outcome = match sent {
                Ok(()) => tokio::time::timeout(CONFIRM_TIMEOUT, wait).await.ok().and_then(Result::ok),
                Err(e) => {
                    tracing::warn!(client_id = %crate::logging::client_text(&client_id), "cluster: a session could not be handed over: {e}");
                    None
                }
            };
            lock(&awaited).remove(&token);
            match outcome {
                Some(()) => source.taken(&client_id),
                None => {
                    tracing::warn!(
                        client_id = %crate::logging::client_text(&client_id),
                        "cluster: the node that asked for the session did not confirm it within {CONFIRM_TIMEOUT:?}: the session stays here"
                    );
                    source.not_taken(&client_id, handed);
                }
            }
        });
    }
}

fn lock(awaited: &Awaited) -> std::sync::MutexGuard<'_, HashMap<u64, tokio::sync::oneshot::Sender<()>>> {
    awaited.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn send(client: &async_nats::Client, reply: async_nats::Subject, parts: Vec<Vec<u8>>) -> Result<(), String> {
    for part in parts {
        client.publish(reply.clone(), Bytes::from(part)).await.map_err(|e| e.to_string())?;
    }
    client.flush().await.map_err(|e| e.to_string())
}

/// The most one part may hold: half the server's `max_payload` (room for the protocol's own).
fn part_budget(max_payload: usize) -> usize {
    let max_payload = if max_payload == 0 { 1 << 20 } else { max_payload };
    max_payload / 2
}

/// `handed` in parts of at most `budget` bytes, and how many messages were too large for any
/// part (not sent). An error when the session record alone is too large.
fn parts(token: u64, handed: &Handed, budget: usize) -> Result<(Vec<Vec<u8>>, usize), String> {
    let first = Part { token, index: 0, last: false, session: Some(moved(&handed.session)), messages: Vec::new() };
    let mut size = crate::persistence::records::encode(&first).len();
    if size > budget {
        return Err(format!("its record is {size} bytes, more than NATS carries in one message ({budget})"));
    }
    let mut parts = Vec::new();
    let mut current = first;
    let mut too_large = 0;
    for (_, message) in &handed.messages {
        // (Postcard: a message in a list encodes as it does alone; the list's length grows by
        // at most a few bytes.)
        let message_size = crate::persistence::records::encode(message).len() + 8;
        let header = crate::persistence::records::encode(&Part {
            token,
            index: u32::MAX,
            last: true,
            session: None,
            messages: Vec::new(),
        })
        .len();
        if header + message_size > budget {
            too_large += 1;
            continue;
        }
        if size + message_size > budget {
            let index = current.index + 1;
            parts.push(crate::persistence::records::encode(&current));
            current = Part { token, index, last: false, session: None, messages: Vec::new() };
            size = header;
        }
        size += message_size;
        current.messages.push(message.clone());
    }
    current.last = true;
    parts.push(crate::persistence::records::encode(&current));
    Ok((parts, too_large))
}

/// A saved session in its moving form.
fn moved(session: &SavedSession) -> MovedSession {
    let mut inbound_qos2: Vec<u16> = session.inbound_qos2.iter().copied().collect();
    inbound_qos2.sort_unstable();
    MovedSession {
        session: StoredSession {
            owner: session.owner.as_deref().map(str::to_owned),
            subscriptions: crate::persistence::sessions::stored_subscriptions(session.subscriptions.values()),
            expiry: None,
            offline_since_unix_ms: None,
        },
        inbound_qos2,
        pubrels_due: session.outbound_qos2.client_pubrels().to_vec(),
    }
}

/// A session from another node, as this node's registry keeps it (the router does not hold it).
fn saved(moved: MovedSession) -> SavedSession {
    let stored = moved.session;
    SavedSession {
        owner: stored.owner.as_deref().map(Arc::from),
        subscriptions: stored.subscriptions.iter().map(crate::persistence::sessions::subscription).collect(),
        inbound_qos2: moved.inbound_qos2.into_iter().collect(),
        outbound_qos2: crate::routing::ack_sequencer::Unfinished::owed_to_client(moved.pubrels_due),
        routed: false,
        moved: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::records::{StoredSubscription, decode};

    fn session() -> MovedSession {
        MovedSession {
            session: StoredSession {
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
            },
            inbound_qos2: vec![3],
            pubrels_due: vec![9],
        }
    }

    fn message(n: usize, size: usize) -> StoredMessage {
        crate::persistence::stored_message(&format!("fleet/{n}/cmd"), &vec![b'x'; size], 1, "p", None, None)
    }

    #[test]
    fn a_session_crosses_in_its_moving_form_and_garbage_does_not_decode() {
        assert_eq!(moved(&saved(session())), session());
        assert!(decode::<Part>(&[0xFF; 3]).is_err());
    }

    #[test]
    fn a_queue_travels_in_parts_within_the_budget_in_order() {
        let messages: Vec<_> = (0..50).map(|n| (Some(n as u64), message(n, 100))).collect();
        let handed = Handed { session: saved(session()), messages: messages.clone() };
        let (parts, too_large) = parts(5, &handed, 1_000).expect("parts");
        assert_eq!(too_large, 0);
        assert!(parts.len() > 5, "{} parts", parts.len());
        let mut got = Vec::new();
        for (index, bytes) in parts.iter().enumerate() {
            assert!(bytes.len() <= 1_000, "part {index}: {} bytes", bytes.len());
            let part: Part = decode(bytes).expect("a part");
            assert_eq!((part.token, part.index as usize, part.last), (5, index, index == parts.len() - 1));
            assert_eq!(part.session.is_some(), index == 0);
            got.extend(part.messages);
        }
        assert_eq!(got, messages.into_iter().map(|(_, m)| m).collect::<Vec<_>>());
    }

    #[test]
    fn a_message_larger_than_any_part_stays_behind_and_the_rest_go() {
        let messages = vec![(None, message(1, 10)), (None, message(2, 5_000)), (None, message(3, 10))];
        let handed = Handed { session: saved(session()), messages };
        let (parts, too_large) = parts(1, &handed, 1_000).expect("parts");
        assert_eq!((parts.len(), too_large), (1, 1));
        let part: Part = decode(&parts[0]).expect("a part");
        assert_eq!(part.messages.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(), ["fleet/1/cmd", "fleet/3/cmd"]);
    }

    #[test]
    fn a_queue_beyond_the_bounds_keeps_the_oldest() {
        let mut queue = Bounded::new(Rules { max_messages: 2, max_bytes: 0, queue_qos0: false });
        queue.add((0..5).map(|n| message(n, 1)).collect());
        assert_eq!((queue.messages.len(), queue.dropped), (2, 3));
        assert_eq!(queue.messages[1].topic, "fleet/1/cmd");
    }
}
