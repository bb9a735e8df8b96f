//! QoS 1 and 2 across nodes through JetStream (docs/cluster.md, "QoS across nodes, precisely").
//!
//! On a node with persistence (`persistence true`, durable or autosave mode), a QoS 1 or 2
//! message a client publishes goes to the stream `<cluster>_messages` (subjects
//! `<cluster>.qos.<topic>`, interest retention, bounded by [`MAX_AGE`] and [`MAX_BYTES`]) instead
//! of core NATS; a node without persistence sends it on core NATS, at most once (`messages`):
//! nothing of it would survive a crash of that node either. In durable mode the publishing
//! connection holds its PUBACK/PUBREC until JetStream acknowledged the publish ([`Confirmation`],
//! [`Confirm::Stored`]); in autosave mode, until the message is handed to the NATS connection
//! ([`Confirm::Sent`]: as its local store, written but not synced when the acknowledgement goes). A publish not
//! confirmed within [`CONFIRM_TIMEOUT`] disconnects the client (v5 0x80) without its
//! acknowledgement, as a failed persistence write does, so that the client sends it again.
//!
//! Every node reads the stream through its own durable consumer, named after its node, and
//! acknowledges a message (cumulatively: up to it) once it took it: handed to its router and, with persistence, its
//! store has durably queued the copies for its persistent sessions (the same `offer` and commit
//! as a local publish, `persistence::sessions`). A node that crashes before that gets the
//! message again from its consumer when it comes back. A node skips (and acknowledges) its own
//! messages.
//!
//! `$share` groups: a publish to JetStream is also an ordinary NATS message on its subject, so
//! the groups' queue subscriptions (`shared_groups`) take QoS 1/2 messages on `<cluster>.qos.…`
//! as they take QoS 0 ones on `<cluster>.msg.…`: at most once, one node of the group.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy};
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use tokio::sync::{mpsc, oneshot};

use super::batch::{BATCH, Limits, Outbox, Packer};
use super::config::ClusterConfig;
use super::remote::{NODE, RETAIN, Remote, remote_messages};
use crate::persistence::Persistence;
use crate::routing::router_link::RoutingEngine;

/// How long a message stays in the stream for a node that has not taken it (a node down longer
/// loses what it missed).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The stream's size bound: beyond it the oldest messages go, taken by every node or not.
pub const MAX_BYTES: i64 = 1 << 30;
/// How long a publishing connection waits for JetStream before it disconnects its client.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long JetStream waits for a node's acknowledgement before it delivers again. Also how
/// long a restarted node waits for what JetStream had handed to its previous run (nats-server
/// 2.9 still sends to the pull requests of a connection that died, until they expire).
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// Messages a node may hold unacknowledged (taken, its store not yet synced).
const MAX_ACK_PENDING: i64 = 20_000;
/// Messages taken between two acknowledgements of this node's consumer, at most.
const ACK_EVERY: usize = 256;
/// Messages waiting for JetStream before new ones fail (their clients are disconnected).
const OUTBOX: usize = 65_536;

/// JetStream's answer to one forwarded QoS 1/2 message: `Ok` once it is stored.
pub struct Confirmation(oneshot::Receiver<Result<(), String>>);

impl Confirmation {
    fn failed(reason: &str) -> Confirmation {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(reason.to_owned()));
        Confirmation(rx)
    }

    /// Waits for every confirmation of `pending`, at most [`CONFIRM_TIMEOUT`] in all.
    pub async fn all(pending: Vec<Confirmation>) -> Result<(), String> {
        let wait = async {
            for confirmation in pending {
                confirmation.0.await.map_err(|_| "the cluster sender stopped".to_owned())??;
            }
            Ok(())
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, wait).await {
            Ok(result) => result,
            Err(_) => Err(format!("JetStream did not confirm within {CONFIRM_TIMEOUT:?}")),
        }
    }
}

/// What a publisher's acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Nothing (a will).
    None,
    /// The message was handed to the NATS connection: no round trip, but the publisher is held
    /// back while JetStream acknowledges more slowly than it publishes (the context's limit of
    /// acknowledgements in flight). Persistence in autosave mode on the publishing node.
    Sent,
    /// JetStream stored it. With durable persistence on the publishing node.
    Stored,
}

/// One message for the stream: its subject, headers and payload, and who waits for it.
pub(super) struct Reliable {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub confirm: Option<(oneshot::Sender<Result<(), String>>, Confirm)>,
}

/// The sending side: a queue to one task that publishes in order (one publisher's messages stay
/// in order in the stream), and a second task that waits for JetStream's acknowledgements.
pub(super) struct ReliableSender {
    outbox: mpsc::Sender<Reliable>,
}

impl ReliableSender {
    pub(super) fn start(js: jetstream::Context) -> ReliableSender {
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        tokio::spawn(publish(js, queued, acks_tx));
        tokio::spawn(confirm(acks_rx));
        ReliableSender { outbox }
    }

    /// Queues `message`; the returned confirmation resolves as `confirm` says.
    pub(super) fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        confirm: Confirm,
    ) -> Option<Confirmation> {
        let (tx, rx) = if confirm == Confirm::None {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some((tx, confirm)), Some(rx))
        };
        if self.outbox.try_send(Reliable { subject, headers, payload, confirm: tx }).is_err() {
            tracing::warn!("cluster: JetStream is not keeping up; a QoS 1/2 message for other nodes was refused");
            return rx.map(|_| Confirmation::failed("the queue for JetStream is full"));
        }
        rx.map(Confirmation)
    }
}

/// A JetStream publish and who waits for its acknowledgement (every message of its batch).
type Waiting = (PublishAckFuture, Vec<oneshot::Sender<Result<(), String>>>);

async fn publish(js: jetstream::Context, queued: mpsc::Receiver<Reliable>, acks: mpsc::UnboundedSender<Waiting>) {
    let limits = Limits::for_server(js.client().server_info().max_payload);
    let mut outbox = Outbox::new(queued);
    while let Some(first) = outbox.next().await {
        // The messages already waiting behind it with its subject and headers share its
        // JetStream message (`batch`): stored, delivered and acknowledged together. (Not a
        // retained one: each is the last value of its topic on the nodes.)
        let mut batch = Packer::new(first.payload.clone());
        let mut waiting = vec![first.confirm];
        if first.headers.get(RETAIN).is_none() {
            outbox.join_waiting(|following| {
                let joins = following.subject == first.subject && following.headers == first.headers;
                if !joins || !batch.fits(&following.payload, limits) {
                    return Err(following);
                }
                batch.push(following.payload);
                waiting.push(following.confirm);
                Ok(())
            });
        }
        let (body, count) = batch.finish();
        let mut headers = first.headers;
        if let Some(count) = count {
            headers.insert(BATCH, count.to_string().as_str());
        }
        match js.publish_with_headers(first.subject, headers, body).await {
            Ok(ack) => {
                let mut stored = Vec::new();
                for (confirm, kind) in waiting.into_iter().flatten() {
                    match kind {
                        Confirm::Sent => {
                            let _ = confirm.send(Ok(()));
                        }
                        _ => stored.push(confirm),
                    }
                }
                let _ = acks.send((ack, stored));
            }
            Err(e) => {
                tracing::debug!("cluster: QoS 1/2 messages not sent to JetStream: {e}");
                for (confirm, _) in waiting.into_iter().flatten() {
                    let _ = confirm.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Waits for the acknowledgements in parallel (bounded by the context's in-flight limit).
async fn confirm(mut acks: mpsc::UnboundedReceiver<Waiting>) {
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = acks.recv() => match next {
                Some((ack, confirms)) => waiting.push(async move {
                    let result = ack.await.map(|_| ()).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::debug!("cluster: JetStream did not store QoS 1/2 messages: {e}");
                    }
                    for confirm in confirms {
                        let _ = confirm.send(result.clone());
                    }
                }),
                None => break,
            },
            Some(()) = waiting.next(), if !waiting.is_empty() => {}
        }
    }
    while waiting.next().await.is_some() {}
}

/// Creates (or finds) the stream and this node's durable consumer.
pub(super) async fn open(
    js: &jetstream::Context,
    config: &ClusterConfig,
    prefix: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
    let name = format!("{}_messages", config.name);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            retention: RetentionPolicy::Interest,
            discard: DiscardPolicy::Old,
            max_age: MAX_AGE,
            max_bytes: MAX_BYTES,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the message stream {name}: {e}"))?;
    stream
        .get_or_create_consumer(
            &config.node_name,
            pull::Config {
                durable_name: Some(config.node_name.clone()),
                // A new node takes what is published from now on; a known one resumes where it
                // acknowledged last.
                deliver_policy: DeliverPolicy::New,
                // (Cumulative: one acknowledgement for many messages, which are taken in order.)
                ack_policy: AckPolicy::All,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("this node's consumer of {name}: {e}"))
}

/// Reads this node's consumer for ever: each message of another node is handed to the router
/// (with persistence, queued durably for the persistent sessions it matches first) and then
/// acknowledged.
pub(super) async fn receive<E: RoutingEngine>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    prefix: String,
    node: String,
    engine: Arc<E>,
    persistence: Option<Arc<Persistence>>,
    admission: super::admission::Admission,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let messages = consumer.stream().max_messages_per_batch(1_000).heartbeat(Duration::from_secs(5)).messages();
        match messages.await {
            Ok(messages) => {
                backoff = Duration::from_millis(100);
                take_all(messages, &prefix, &node, &*engine, persistence.as_deref(), &admission).await;
            }
            Err(e) => tracing::warn!("cluster: reading this node's QoS 1/2 messages: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

type Saving = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

async fn take_all<E: RoutingEngine>(
    mut messages: pull::Stream,
    prefix: &str,
    node: &str,
    engine: &E,
    persistence: Option<&Persistence>,
    admission: &super::admission::Admission,
) {
    // Acknowledged in order once their store changes are durable.
    let mut saving = FuturesOrdered::new();
    let mut taken = 0usize;
    let mut errors = 0u32;
    loop {
        tokio::select! {
            next = messages.next() => {
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::debug!("cluster: QoS 1/2 message stream: {e}");
                        errors += 1;
                        if errors >= 10 {
                            // (Started anew by `receive`, after a pause.)
                            tracing::warn!("cluster: QoS 1/2 message stream: {e}; reading again");
                            return;
                        }
                        continue;
                    }
                    None => break,
                };
                errors = 0;
                // How long it waited in the stream (a node down, or a delivery again after a
                // crash): its expiry counts from when its node sent it, not from now.
                let waited_ms = message.info().ok().map_or(0, |info| {
                    let published_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                    crate::persistence::records::unix_ms().saturating_sub(published_ms)
                });
                let (message, acker) = message.split();
                let from = message.headers.as_ref().and_then(|h| h.get(NODE)).map(|v| v.as_str()).unwrap_or_default();
                let mut save: Option<Saving> = None;
                let mut remotes = if from != node { remote_messages(&message, prefix, None) } else { Vec::new() };
                // (Held here, the rest waits in this node's consumer.)
                let lanes = match remotes.first() {
                    Some(first) => Some(admission.admit(&first.topic).await),
                    None => None,
                };
                let mut ops = Vec::new();
                for Remote { topic, payload, stamp, properties } in remotes.iter_mut() {
                    stamp.expires_at_ms = stamp.expires_at_ms.map(|at| at.saturating_sub(waited_ms));
                    if let Some(persistence) = persistence {
                        ops.extend(offer(persistence, from, topic, payload, stamp, properties.as_ref()));
                    }
                }
                // One commit for a batch: its messages are acknowledged together.
                if let Some(persistence) = persistence.filter(|_| !ops.is_empty()) {
                    save = Some(Box::pin(persistence.commit(ops)));
                }
                for Remote { topic, payload, stamp, properties } in remotes {
                    if let Some(lanes) = &lanes {
                        admission.routed(lanes, &topic, payload.len());
                    }
                    super::remote::inject(engine, topic, &payload, stamp, properties);
                }
                saving.push_back(async move {
                    let saved = match save {
                        Some(save) => save.await,
                        None => Ok(()),
                    };
                    (saved, acker)
                });
            }
            Some((saved, acker)) = saving.next(), if !saving.is_empty() => {
                if let Err(e) = saved {
                    // Neither this one nor any later one is acknowledged: JetStream delivers
                    // them again after `ACK_WAIT`, to the pull this node starts anew.
                    crate::persistence::log_failure("%cluster", &e);
                    return;
                }
                taken += 1;
                // One acknowledgement covers every message before it (`AckPolicy::All`): sent
                // when nothing else waits, or every `ACK_EVERY` messages.
                if saving.is_empty() || taken >= ACK_EVERY {
                    taken = 0;
                    if let Err(e) = acker.ack().await {
                        tracing::debug!("cluster: QoS 1/2 messages not acknowledged: {e}");
                    }
                }
            }
        }
    }
}

/// With persistence on this node: another node's message offered to this node's store for the
/// persistent sessions it matches (the same `offer` as a local publish), `stamp.queued` set;
/// returns the changes to commit (none when no session takes it).
pub(super) fn offer(
    persistence: &Persistence,
    from: &str,
    topic: &[u8],
    payload: &[u8],
    stamp: &mut crate::routing::envelope::Stamp,
    properties: Option<&rumqttd::protocol::PublishProperties>,
) -> Vec<crate::persistence::Op> {
    let mut ops = Vec::new();
    let Ok(text) = std::str::from_utf8(topic) else { return ops };
    let expiry = stamp.expiry_left(crate::routing::envelope::now_ms());
    let publisher = format!("%cluster/{from}");
    stamp.queued = persistence.sessions.offer(&mut ops, text, payload, stamp.qos, &publisher, expiry, properties);
    ops
}

#[cfg(test)]
mod tests {
    use super::Confirmation;

    #[tokio::test]
    async fn a_read_waits_for_every_confirmation_and_one_failure_fails_it() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(Ok(())).expect("receiver alive");
        assert_eq!(Confirmation::all(vec![Confirmation(rx)]).await, Ok(()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(Ok(())).expect("receiver alive");
        let failed = Confirmation::all(vec![Confirmation(rx), Confirmation::failed("full")]).await;
        assert_eq!(failed, Err("full".to_owned()));
        // A sender that went away without answering fails the read too.
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        drop(tx);
        assert!(Confirmation::all(vec![Confirmation(rx)]).await.is_err());
    }
}
