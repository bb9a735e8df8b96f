//! Routing across nodes: every QoS 0 message a client publishes on one node is published on core
//! NATS under its topic's subject ([`super::subject`]); every QoS 1/2 message in JetStream
//! ([`super::reliable`]) on a node with persistence, on core NATS as QoS 0 on one without (a
//! cluster may mix them: every node takes both); and every node injects what the others publish into its own router, where it is delivered as any message is — matched by MQTT's rules, checked
//! against each receiving client's ACL on the delivery path. Retained messages are kept by
//! every node that is running when they are published (in its gate's retained index,
//! `routing::retained_index`), and in a JetStream stream (the last value per topic,
//! `<cluster>_retained`) that a starting node loads into its index first.
//!
//! Headers carry what the envelope says (`routing::envelope`): QoS, retain flag, the seconds left
//! before the message expires, and the node it came from (a node skips its own messages); and
//! the MQTT 5 properties that travel ([`super::properties`]).
//!
//! `$share` groups: see [`super::shared_groups`]; the copies every node gets here reach no
//! shared subscription.
//!
//! Client ids: a connect claims its client id by compare-and-set ([`super::client_ids`]), then the
//! claim is announced on `<cluster>.claim`; a node with a live connection of that id that is not
//! the recorded owner takes it over, as it would for a second connection of its own. The new node asks
//! the previous owner for the session ([`super::session_moves`]).
//!
//! Core NATS delivers at most once: a message on it in flight when a node or NATS fails is lost
//! across nodes (docs/cluster.md); QoS 1/2 messages of a node with persistence wait in JetStream
//! for a node that is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{self, Stream};
use bytes::Bytes;
use futures_util::StreamExt;
use rumqttd::protocol::PublishProperties;
use tokio::sync::mpsc;

use super::admission::Admission;
use super::batch::{BATCH, Limits, Outbox, Packer};
use super::client_ids::ClientIds;
use super::config::ClusterConfig;
use super::reliable::{Confirm, Confirmation, ReliableSender};
use super::remote::{EXPIRY, NODE, QOS, REMOTE_ORIGIN, RETAIN, Remote, inject, remote_messages};
use super::subject::{subject_to_topic, topic_to_subject};
use crate::persistence::Persistence;
use crate::routing::backpressure::TopicLanes;
use crate::routing::envelope::{self, Publisher, Routable, Stamp};
use crate::routing::retained_index::RetainedIndex;
use crate::routing::router_link::{Routed, RoutingEngine};

/// Messages waiting for NATS before new ones are dropped (with a warning).
const OUTBOX: usize = 65_536;

/// One message on its way to the other nodes.
struct Outgoing {
    topic: Bytes,
    payload: Bytes,
    qos: u8,
    retain: bool,
    expiry_secs: Option<u32>,
    /// `properties::HEADER`'s value.
    properties: Option<String>,
    /// Sent on core NATS; a retained message that travels through [`super::reliable`] only
    /// updates the last-value stream here.
    core: bool,
}

/// This node's side of cross-node routing.
pub struct MessageBus {
    outbox: mpsc::Sender<Outgoing>,
    dropped: AtomicU64,
    client: async_nats::Client,
    claim_subject: String,
    node: String,
    client_ids: Arc<ClientIds>,
    take_over: TakeOver,
    claims: Arc<LocalClaims>,
    session_moves: super::session_moves::SessionMoves,
    /// QoS 1/2 messages of a node with persistence: to JetStream, under `reliable_prefix`.
    reliable: ReliableSender,
    reliable_prefix: String,
    /// This node has persistence (`persistence true`, either mode): its QoS 1/2 messages go
    /// through JetStream. Without, on core NATS, at most once (docs/cluster.md, "What is
    /// guaranteed").
    reliable_qos: bool,
}

/// This node's claims of client ids, by id: the connection, its claim's sequence in the client-id
/// stream (`None` while the claim is being recorded, or when it could not be), and the highest
/// sequence another node announced meanwhile.
#[derive(Default)]
struct LocalClaims(std::sync::Mutex<std::collections::HashMap<String, LocalClaim>>);

#[derive(Clone, Copy)]
struct LocalClaim {
    conn_id: u64,
    sequence: Option<u64>,
    announced_elsewhere: u64,
}

impl LocalClaims {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, LocalClaim>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets `client_id`'s claim if connection `conn_id` still holds it. A claim only decides
    /// which live connection another node's notice takes over, so an ended connection needs none;
    /// without this, every client id ever connected here stayed in the map.
    fn release(&self, client_id: &str, conn_id: u64) {
        let mut claims = self.lock();
        if claims.get(client_id).is_some_and(|claim| claim.conn_id == conn_id) {
            claims.remove(client_id);
        }
    }
}

/// The header of a QoS 0 message carrying its node's count of them (`interest::Recent`).
const SEQUENCE: &str = "Dynsec-Sequence";

/// The header of a claim notice carrying the claim's sequence.
const CLAIM_SEQUENCE: &str = "Dynsec-Claim-Sequence";

/// Takes over this node's live connection of a client id, unless it is the given connection.
pub type TakeOver = Arc<dyn Fn(&str, Option<u64>) + Send + Sync>;

impl MessageBus {
    /// Subscribes to the other nodes' messages (injected into `engine`), loads the retained
    /// stream into `retained` and starts the sender. `take_over` is called with each client id
    /// another node claims.
    #[allow(clippy::too_many_arguments)] // what a node's routing across the cluster is wired to
    pub async fn start<E: RoutingEngine>(
        client: &async_nats::Client,
        config: &ClusterConfig,
        engine: Arc<E>,
        take_over: TakeOver,
        sessions: Arc<dyn super::session_moves::SessionSource>,
        persistence: Option<Arc<Persistence>>,
        admission: Admission,
        retained_index: Arc<RetainedIndex>,
    ) -> Result<Arc<MessageBus>, String> {
        let prefix = format!("{}.msg", config.name);
        let reliable_prefix = format!("{}.qos", config.name);
        let node = config.node_name.clone();
        let claim_subject = format!("{}.claim", config.name);
        let claims = client
            .subscribe(claim_subject.clone())
            .await
            .map_err(|e| format!("subscribing to the other nodes' client ids: {e}"))?;
        let client_ids = Arc::new(ClientIds::open(client, config).await?);
        let session_moves = super::session_moves::SessionMoves::start(client, config, sessions).await?;
        let local_claims = Arc::new(LocalClaims::default());
        tokio::spawn(receive_claims(claims, node.clone(), Arc::clone(&local_claims), Arc::clone(&take_over)));
        // Every message under the prefix, or (`cluster_forward_by_interest`) those of this node's
        // filters, through `interest`'s subscriptions.
        let inbound: Inbound = if super::interest::Interest::enabled() {
            let (tx, rx) = mpsc::channel(OUTBOX);
            super::interest::Interest::start(client.clone(), prefix.clone(), tx);
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }))
        } else {
            let all = client
                .subscribe(format!("{prefix}.>"))
                .await
                .map_err(|e| format!("subscribing to the other nodes' messages: {e}"))?;
            Box::pin(all)
        };
        // Subscribed first, loaded next: a retained message published meanwhile is taken from
        // the subscription (by the router's `#` reader, into the index) only once the receiver
        // below runs, after the stream's older value.
        let retained = open_retained(client, config).await?;
        load_retained(&retained, &retained_index).await?;
        let router = Arc::clone(&engine);
        let counted = admission.clone();
        let inject_shared: super::shared_groups::Inject = Arc::new(move |topic, payload, stamp, properties| {
            counted.routed(&TopicLanes::of(&topic), &topic, payload.len());
            inject(&*router, topic, payload, stamp, properties)
        });
        super::shared_groups::SharedGroups::install(client.clone(), &config.name, inject_shared);
        let js = async_nats::jetstream::new(client.clone());
        let consumer = super::reliable::open(&js, config, &reliable_prefix).await?;
        tokio::spawn(super::reliable::receive(
            consumer,
            reliable_prefix.clone(),
            node.clone(),
            Arc::clone(&engine),
            persistence.clone(),
            admission.clone(),
        ));
        let reliable_qos = persistence.is_some();
        tokio::spawn(receive(inbound, prefix.clone(), node.clone(), engine, persistence, admission));
        let (outbox, queued) = mpsc::channel(OUTBOX);
        tokio::spawn(send(client.clone(), prefix, node.clone(), queued, retained));
        let dropped = AtomicU64::new(0);
        Ok(Arc::new(MessageBus {
            outbox,
            dropped,
            client: client.clone(),
            claim_subject,
            node,
            client_ids,
            take_over,
            claims: local_claims,
            session_moves,
            reliable: ReliableSender::start(js),
            reliable_prefix,
            reliable_qos,
        }))
    }

    /// Records connection `conn_id` here as the owner of `client_id` (compare-and-set). Without
    /// JetStream the connect goes on, unrecorded (logins never wait for NATS beyond a timeout).
    /// Returns the node that owned the id before, when it is another one (its session may move
    /// here: [`super::session_moves`]).
    pub async fn claim(&self, client_id: &str, conn_id: u64) -> Option<String> {
        self.claims.lock().insert(client_id.to_owned(), LocalClaim { conn_id, sequence: None, announced_elsewhere: 0 });
        if self.client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(
                client_id = %crate::logging::client_text(client_id),
                "cluster: NATS is not connected; client id claim not recorded"
            );
            return None;
        }
        match self.client_ids.claim(client_id, conn_id).await {
            Ok((sequence, previous)) => {
                if let Some(claim) = self.claims.lock().get_mut(client_id).filter(|c| c.conn_id == conn_id) {
                    claim.sequence = Some(sequence);
                }
                previous.map(|owner| owner.node).filter(|node| *node != self.node)
            }
            Err(e) => {
                tracing::warn!(
                    client_id = %crate::logging::client_text(client_id),
                    "cluster: client id claim not recorded: {e}"
                );
                None
            }
        }
    }

    /// Connection `conn_id` no longer holds `client_id` here (it ended or was taken over).
    pub fn released(&self, client_id: &str, conn_id: u64) {
        self.claims.release(client_id, conn_id);
    }

    /// Asks `node` for its session of `client_id` and the messages queued for it there, which it
    /// ends there once this node confirms (bounded wait; `None` when it has none or does not
    /// answer in time).
    pub async fn fetch_session(&self, node: &str, client_id: &str) -> Option<crate::gate::saved_session::SavedSession> {
        self.session_moves.fetch(node, client_id).await
    }

    /// After connection `conn_id` took `client_id` here: the other nodes hear of it, and it is
    /// taken over at once if a later claim on another node already owns the id (never blocks).
    pub fn claimed(&self, client_id: &str, conn_id: u64) {
        let mut headers = HeaderMap::new();
        headers.insert(NODE, self.node.as_str());
        let claim = {
            let mut claims = self.claims.lock();
            let claim = claims.get(client_id).copied().filter(|c| c.conn_id == conn_id);
            if claim.is_some_and(|c| c.sequence.is_none()) {
                // Not recorded (NATS unavailable): every later notice decides as the newest claim.
                claims.remove(client_id);
            }
            claim
        };
        if let Some(sequence) = claim.and_then(|c| c.sequence) {
            headers.insert(CLAIM_SEQUENCE, sequence.to_string().as_str());
        }
        // A later claim announced while this one was being installed: it owns the id.
        if let Some(claim) = claim
            && claim.announced_elsewhere > claim.sequence.unwrap_or(0)
        {
            self.claims.lock().remove(client_id);
            (self.take_over)(client_id, None);
        }
        let (client, subject) = (self.client.clone(), self.claim_subject.clone());
        let id = Bytes::copy_from_slice(client_id.as_bytes());
        tokio::spawn(async move {
            if let Err(e) = client.publish_with_headers(subject, headers, id).await {
                tracing::debug!("cluster: client id claim not announced: {e}");
            }
        });
    }

    /// Sends a message a local client published to the other nodes (never blocks). On a node
    /// with persistence a QoS 1/2 message goes to JetStream; the returned [`Confirmation`]
    /// resolves as `confirm` says (the publisher's acknowledgement waits for it). None is
    /// returned while NATS is not connected, and for what goes on core NATS (QoS 0, and QoS 1/2
    /// without persistence: at most once, as on a single node without persistence, where
    /// nothing survives a crash either).
    #[allow(clippy::too_many_arguments)] // the parts of one message
    pub fn forward(
        &self,
        topic: &Bytes,
        payload: &Bytes,
        qos: u8,
        retain: bool,
        expiry_secs: Option<u32>,
        properties: Option<&PublishProperties>,
        confirm: Confirm,
    ) -> Option<Confirmation> {
        let properties = properties.and_then(super::properties::encode);
        let mut confirmation = None;
        // (By interest, a message on core NATS goes to the nodes that subscribe to it; a retained
        // one is for every node, so it goes through JetStream.)
        let through_jetstream = (qos > 0 && self.reliable_qos) || (retain && super::interest::Interest::enabled());
        if through_jetstream {
            let Ok(text) = std::str::from_utf8(topic) else { return None };
            let headers = headers(&self.node, qos, retain, expiry_secs, properties.as_deref());
            let subject = topic_to_subject(&self.reliable_prefix, text);
            // While NATS is not connected nobody waits (local delivery goes on, as logins do):
            // the message waits in the client's buffer for the reconnection, unconfirmed.
            let connected = self.client.connection_state() == async_nats::connection::State::Connected;
            let confirm = if connected { confirm } else { Confirm::None };
            confirmation = self.reliable.send(subject, headers, payload.clone(), confirm);
            if !retain {
                return confirmation;
            }
            // A retained one also goes to the last-value stream, by the core sender.
        }
        let core = !through_jetstream;
        let message =
            Outgoing { topic: topic.clone(), payload: payload.clone(), qos, retain, expiry_secs, properties, core };
        if self.outbox.try_send(message).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(
                    dropped = dropped + 1,
                    "cluster: NATS is not keeping up; messages for other nodes dropped"
                );
            }
        }
        confirmation
    }
}

/// The headers of a message between nodes (`remote` reads them back).
fn headers(node: &str, qos: u8, retain: bool, expiry_secs: Option<u32>, properties: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NODE, node);
    headers.insert(QOS, qos.to_string().as_str());
    if retain {
        headers.insert(RETAIN, "1");
    }
    if let Some(secs) = expiry_secs {
        headers.insert(EXPIRY, secs.to_string().as_str());
    }
    if let Some(properties) = properties {
        headers.insert(super::properties::HEADER, properties);
    }
    headers
}

/// Retained messages for nodes that start later: a stream keeping the last message of each
/// subject (`<cluster>.retained.<topic>`; its QoS byte, then the payload; an empty message clears).
struct RetainedStore {
    js: async_nats::jetstream::Context,
    stream: Stream,
    prefix: String,
}

async fn open_retained(client: &async_nats::Client, config: &ClusterConfig) -> Result<RetainedStore, String> {
    let js = async_nats::jetstream::new(client.clone());
    let prefix = format!("{}.retained", config.name);
    let name = format!("{}_retained", config.name);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the retained-message stream {name}: {e}"))?;
    Ok(RetainedStore { js, stream, prefix })
}

/// Takes every retained message of the stream into this node's retained index (before any
/// client connects: nothing is routed).
async fn load_retained(store: &RetainedStore, index: &RetainedIndex) -> Result<(), String> {
    let mut subjects = store
        .stream
        .info_with_subjects(format!("{}.>", store.prefix))
        .await
        .map_err(|e| format!("reading the retained messages: {e}"))?;
    let mut loaded = 0u64;
    while let Some(item) = subjects.next().await {
        let Ok((subject, _)) = item else { continue };
        let Some(topic) = subject_to_topic(&store.prefix, &subject) else { continue };
        let Ok(message) = store.stream.get_last_raw_message_by_subject(&subject).await else { continue };
        let Some((&qos, payload)) = message.payload.split_first() else { continue };
        loaded += 1;
        let stamp = Stamp {
            qos: qos.min(2),
            retain: true,
            publisher: Publisher::of("%cluster/retained"),
            origin: REMOTE_ORIGIN,
            sequence: u64::MAX - loaded,
            expires_at_ms: None,
            queued: None,
            addressee: None,
            share_group: None,
        };
        let Routable { topic, sealed, properties } = envelope::routable(Bytes::from(topic), payload, stamp, None);
        index.keep(Routed::retained(topic, sealed, &properties));
    }
    if loaded > 0 {
        tracing::info!(loaded, "cluster: retained messages loaded");
    }
    Ok(())
}

async fn send(
    client: async_nats::Client,
    prefix: String,
    node: String,
    queued: mpsc::Receiver<Outgoing>,
    retained: RetainedStore,
) {
    let limits = Limits::for_server(client.server_info().max_payload);
    let mut sequence = 0u64;
    let mut outbox = Outbox::new(queued);
    while let Some(message) = outbox.next().await {
        let Ok(topic) = std::str::from_utf8(&message.topic) else { continue };
        if message.retain {
            // The last value per topic, for nodes that start later; an empty payload clears it.
            let mut value = Vec::with_capacity(1 + message.payload.len());
            if !message.payload.is_empty() {
                value.push(message.qos);
                value.extend_from_slice(&message.payload);
            }
            let subject = topic_to_subject(&retained.prefix, topic);
            let stored = match retained.js.publish(subject, Bytes::from(value)).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stored {
                tracing::warn!("cluster: retained message not stored for other nodes: {e}");
            }
        }
        if !message.core {
            continue;
        }
        // The messages already waiting behind it that can share its NATS message (`batch`).
        let mut batch = Packer::new(message.payload.clone());
        if !message.retain {
            outbox.join_waiting(|following| {
                if !following.joins(&message) || !batch.fits(&following.payload, limits) {
                    return Err(following);
                }
                batch.push(following.payload);
                Ok(())
            });
        }
        let mut headers =
            headers(&node, message.qos, message.retain, message.expiry_secs, message.properties.as_deref());
        sequence += 1;
        headers.insert(SEQUENCE, sequence.to_string().as_str());
        let (body, count) = batch.finish();
        if let Some(count) = count {
            headers.insert(BATCH, count.to_string().as_str());
        }
        if let Err(e) = client.publish_with_headers(topic_to_subject(&prefix, topic), headers, body).await {
            tracing::debug!("cluster: message not sent to NATS: {e}");
        }
    }
}

impl Outgoing {
    /// Whether this message can travel in the batch that `first` opened: the same subject and
    /// headers, on core NATS, not retained (a retained one also updates the last-value stream).
    fn joins(&self, first: &Outgoing) -> bool {
        self.core
            && !self.retain
            && self.topic == first.topic
            && self.qos == first.qos
            && self.expiry_secs == first.expiry_secs
            && self.properties == first.properties
    }
}

/// Another node claimed a client id: this node's connection of it is taken over unless its own
/// claim came later in the client-id stream (a higher sequence). A notice without a sequence (its
/// claim could not be recorded) or a connection without one decides as the newest claim.
async fn receive_claims(
    mut notices: async_nats::Subscriber,
    node: String,
    claims: Arc<LocalClaims>,
    take_over: TakeOver,
) {
    while let Some(message) = notices.next().await {
        let headers = message.headers.as_ref();
        let from = headers.and_then(|h| h.get(NODE)).map(|v| v.as_str().to_owned());
        if from.as_deref() == Some(node.as_str()) {
            continue;
        }
        let Ok(client_id) = std::str::from_utf8(&message.payload) else { continue };
        let theirs = headers.and_then(|h| h.get(CLAIM_SEQUENCE)).and_then(|v| v.as_str().parse::<u64>().ok());
        let keep = {
            let mut claims = claims.lock();
            match (claims.get_mut(client_id), theirs) {
                (Some(ours), Some(theirs)) => match ours.sequence {
                    Some(sequence) if sequence > theirs => Some(ours.conn_id),
                    // Still being recorded: `claimed` compares once it is.
                    None => {
                        ours.announced_elsewhere = ours.announced_elsewhere.max(theirs);
                        Some(ours.conn_id)
                    }
                    Some(_) => {
                        claims.remove(client_id);
                        None
                    }
                },
                _ => {
                    claims.remove(client_id);
                    None
                }
            }
        };
        take_over(client_id, keep);
    }
}

/// The other nodes' messages on core NATS (QoS 0, and QoS 1/2 of nodes without persistence), as
/// NATS gives them to this node.
type Inbound = std::pin::Pin<Box<dyn futures_util::Stream<Item = async_nats::Message> + Send>>;

async fn receive<E: RoutingEngine>(
    mut inbound: Inbound,
    prefix: String,
    node: String,
    engine: Arc<E>,
    persistence: Option<Arc<Persistence>>,
    admission: Admission,
) {
    // (By interest, a message may come twice while the subscriptions change: `interest`.)
    let mut recent = super::interest::Interest::enabled().then(super::interest::Recent::default);
    while let Some(message) = inbound.next().await {
        let headers = message.headers.as_ref();
        let from = headers.and_then(|h| h.get(NODE)).map(|v| v.as_str()).unwrap_or_default();
        if from == node {
            continue;
        }
        let sequence = headers.and_then(|h| h.get(SEQUENCE)).and_then(|v| v.as_str().parse::<u64>().ok());
        if let (Some(recent), Some(sequence)) = (recent.as_mut(), sequence)
            && !recent.first(from, sequence)
        {
            continue;
        }
        let mut remotes = remote_messages(&message, &prefix, None);
        // (One topic for all of a batch.)
        let Some(topic) = remotes.first().map(|r| r.topic.clone()) else { continue };
        let lanes = admission.admit(&topic).await;
        // A QoS 1/2 message of a node without persistence, on a node with: queued in this node's
        // store for its persistent sessions, as one of its own clients' would be (without
        // waiting: it came at most once, nothing waits for its acknowledgement), before the
        // router has it (a delivery's acknowledgement then finds it stored).
        if let Some(persistence) = persistence.as_deref() {
            let mut ops = Vec::new();
            for Remote { topic, payload, stamp, properties } in remotes.iter_mut().filter(|r| r.stamp.qos > 0) {
                ops.extend(super::reliable::offer(persistence, from, topic, payload, stamp, properties.as_ref()));
            }
            if !ops.is_empty() {
                persistence.submit(ops);
            }
        }
        for Remote { topic, payload, stamp, properties } in remotes {
            admission.routed(&lanes, &topic, payload.len());
            inject(&*engine, topic, &payload, stamp, properties);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(conn_id: u64) -> LocalClaim {
        LocalClaim { conn_id, sequence: Some(conn_id), announced_elsewhere: 0 }
    }

    #[test]
    fn an_ended_connection_leaves_no_claim_behind_but_its_successor_keeps_its_own() {
        let claims = LocalClaims::default();
        for n in 0..1000u64 {
            claims.lock().insert(format!("device-{n}"), claim(n));
            claims.release(&format!("device-{n}"), n);
        }
        assert!(claims.lock().is_empty(), "claims of ended connections stay: {}", claims.lock().len());

        // A takeover here: the new connection (2) claimed before the old one (1) ended.
        claims.lock().insert("sensor".into(), claim(2));
        claims.release("sensor", 1);
        assert_eq!(claims.lock().get("sensor").map(|c| c.conn_id), Some(2));
        claims.release("sensor", 2);
        assert!(claims.lock().get("sensor").is_none());
    }
}
