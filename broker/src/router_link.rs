//! The only module that touches rumqttd's `Router` and `local` link API, behind our own small
//! traits ([`RoutingEngine`], [`RouterLink`]) so that another routing engine can replace it
//! without touching the gate.
//!
//! What lives here because of rumqttd's shape (see rumqttd-adapter-notes.md §2):
//! - the router's event channel has an unnameable type, so the engine keeps a "link factory"
//!   closure that captures it;
//! - `LinkBuilder::build` blocks, so attaching runs on the blocking pool;
//! - client ids are escaped (`%`, `+`, `$`, `#`, `/` → `%XX`): the router silently refuses ids
//!   containing `+ $ # /` (adapter-notes defect 10);
//! - a shared subscription's group is keyed by group name alone in the router, so `$share/g/a`
//!   and `$share/g/b` would share one cursor; the group is renamed per filter on the way in;
//! - the system link (wills) has its notifications drained forever by a thread;
//! - a freshly built link gets a PINGREQ pushed, because `build` consumes the wake-up that came
//!   with the CONNACK and anything queued behind it (PUBRELs of a resumed session) would wait.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttd::local::{LinkBuilder, LinkError, LinkRx, LinkTx};
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, Filter, Packet, PingReq, Publish, PublishProperties, SubAck, Subscribe,
    Unsubscribe,
};
use rumqttd::{Notification, Router, RouterConfig};

use crate::config::GateSettings;

/// Outgoing QoS>0 messages the router keeps in flight per client (rumqttd's `MAX_INFLIGHT`); it
/// numbers them 1..=100 in send order.
pub const ROUTER_INFLIGHT: usize = 100;

/// Client id of the system link. No escaped client id can equal it (`%` followed by a non-hex).
const SYSTEM_CLIENT_ID: &str = "%system";

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("the router refused the link (router connection table full?)")]
    Refused,
    #[error("the router link is closed")]
    Closed,
    #[error("the router could not be started: {0}")]
    Start(String),
}

impl From<LinkError> for RouterError {
    fn from(error: LinkError) -> Self {
        match error {
            LinkError::Recv(_) | LinkError::NotConnectionAck | LinkError::ConnectionAck(_) => RouterError::Refused,
            _ => RouterError::Closed,
        }
    }
}

/// What a link receives from the router.
#[derive(Debug)]
pub enum FromRouter {
    /// A message to deliver (QoS and packet id are set inside, see `codec::publish_meta`).
    Publish(Publish, Option<PublishProperties>),
    /// The router's SUBACK.
    SubAck(SubAck),
    /// The router's PUBREL (QoS 2 delivery, second phase).
    PubRel(u16),
    /// The answer to a PINGREQ pushed by the gate (a back-pressure probe).
    PingResp,
    /// The router paused this link because its buffer is full: call [`RouterLink::resume`] once
    /// what was received has been written.
    Paused,
    /// A wake-up that found nothing.
    Nothing,
}

/// A client's session in the routing engine.
pub struct Attached<L> {
    pub link: L,
    /// The engine restored a saved session for this client id.
    pub session_present: bool,
}

/// The routing engine: subscriptions, retained messages, QoS state, fan-out, sessions.
pub trait RoutingEngine: Send + Sync + 'static {
    type Link: RouterLink;

    /// Opens the link of `client_id`. `persistent`: the engine keeps the session when the link is
    /// closed and restores it on the next persistent attach; a non-persistent attach discards any
    /// saved session.
    fn attach(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> impl Future<Output = Result<Attached<Self::Link>, RouterError>> + Send;

    /// Forgets the saved session of `client_id` (nobody may be attached with it).
    fn purge(&self, client_id: &str) -> impl Future<Output = ()> + Send;

    /// Routes a broker-originated QoS 0 message (a will).
    fn inject(&self, topic: Bytes, payload: Bytes, retain: bool, properties: Option<PublishProperties>);
}

/// One client's link. Pushes are batched: nothing reaches the router until [`RouterLink::flush`].
pub trait RouterLink: Send + 'static {
    fn push(&mut self, packet: Packet);
    /// Hands everything pushed since the last flush to the router, with one wake-up.
    fn flush(&mut self) -> Result<(), RouterError>;
    /// Waits for the next notification (cancel-safe).
    fn recv(&mut self) -> impl Future<Output = Result<FromRouter, RouterError>> + Send;
    /// The next notification if one is ready.
    fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>>;
    /// Lets the router continue after [`FromRouter::Paused`].
    fn resume(&mut self) -> impl Future<Output = Result<(), RouterError>> + Send;
    /// Subscribes with the engine's spelling of each filter (see [`router_filter`]).
    fn subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<Filter>,
        properties: Option<rumqttd::protocol::SubscribeProperties>,
    ) {
        let filters = filters.into_iter().map(|mut f| {
            if let Cow::Owned(path) = router_filter(&f.path) {
                f.path = path;
            }
            f
        });
        self.push(Packet::Subscribe(Subscribe { pkid, filters: filters.collect() }, properties));
    }
    fn unsubscribe(&mut self, pkid: u16, filters: &[String]) {
        let filters = filters.iter().map(|f| router_filter(f).into_owned()).collect();
        self.push(Packet::Unsubscribe(Unsubscribe { pkid, filters }, None));
    }
    /// Tells the router this client is gone (session saved if persistent). Implementations also
    /// do this when dropped, so that no exit path — a panic included — leaks the router's state
    /// for the client (a leaked member of a shared subscription keeps receiving its share).
    fn detach(&mut self);
}

/// Escapes a client id for the router, which refuses ids containing `+ $ # /`.
pub fn router_client_id(client_id: &str) -> Cow<'_, str> {
    if !client_id.contains(['%', '+', '$', '#', '/']) {
        return Cow::Borrowed(client_id);
    }
    let mut escaped = String::with_capacity(client_id.len() + 8);
    for c in client_id.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '+' => escaped.push_str("%2B"),
            '$' => escaped.push_str("%24"),
            '#' => escaped.push_str("%23"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The router's spelling of a subscription filter: `$share/<group>/<filter>` gets a group name
/// unique per filter, because the router keeps one cursor per group *name*.
pub fn router_filter(filter: &str) -> Cow<'_, str> {
    let Some(rest) = filter.strip_prefix("$share/") else { return Cow::Borrowed(filter) };
    let Some((group, path)) = rest.split_once('/') else { return Cow::Borrowed(filter) };
    let mut renamed = String::with_capacity(filter.len() * 2 + 8);
    renamed.push_str("$share/");
    renamed.push_str(group);
    renamed.push('%');
    for c in path.chars() {
        match c {
            '/' => renamed.push_str("%2F"),
            '%' => renamed.push_str("%25"),
            c => renamed.push(c),
        }
    }
    renamed.push('/');
    renamed.push_str(path);
    Cow::Owned(renamed)
}

type LinkFactory = dyn Fn(&str, bool) -> Result<(LinkTx, LinkRx, Notification), RouterError> + Send + Sync;

/// rumqttd 0.20's `Router` on its own thread.
pub struct Rumqttd {
    build: Arc<LinkFactory>,
    system: Mutex<LinkTx>,
}

impl Rumqttd {
    /// Starts the router thread (with the bounded settings of `gate`) and the system link.
    pub fn start(gate: &GateSettings) -> Result<Arc<Rumqttd>, RouterError> {
        let config = RouterConfig {
            max_connections: gate.router_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: gate.segment_size,
            max_segment_count: gate.segment_count,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        let router_tx = Router::new(0, config).spawn();
        let build: Arc<LinkFactory> = Arc::new(move |client_id, clean| {
            LinkBuilder::new(client_id, router_tx.clone())
                .clean_session(clean)
                .topic_alias_max(0)
                .build()
                .map_err(RouterError::from)
        });
        let (system_tx, mut system_rx, _) =
            build(SYSTEM_CLIENT_ID, true).map_err(|e| RouterError::Start(e.to_string()))?;
        std::thread::Builder::new()
            .name("router-system-link".into())
            .spawn(move || while system_rx.recv().is_ok() {})
            .map_err(|e| RouterError::Start(e.to_string()))?;
        Ok(Arc::new(Rumqttd { build, system: Mutex::new(system_tx) }))
    }

    fn build(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> impl Future<Output = Result<(LinkTx, LinkRx, Notification), RouterError>> + use<> {
        let build = self.build.clone();
        let id = router_client_id(client_id).into_owned();
        async move { tokio::task::spawn_blocking(move || build(&id, !persistent)).await.map_err(|_| RouterError::Closed)? }
    }
}

impl RoutingEngine for Rumqttd {
    type Link = RumqttdLink;

    fn attach(
        &self,
        client_id: &str,
        persistent: bool,
    ) -> impl Future<Output = Result<Attached<RumqttdLink>, RouterError>> + Send {
        let built = self.build(client_id, persistent);
        async move {
            let (tx, rx, connack) = built.await?;
            let session_present = matches!(
                Option::<Packet>::from(connack),
                Some(Packet::ConnAck(ack, _)) if ack.session_present
            );
            let mut link = RumqttdLink::new(tx, rx);
            link.push(Packet::PingReq(PingReq));
            link.flush()?;
            Ok(Attached { link, session_present })
        }
    }

    fn purge(&self, client_id: &str) -> impl Future<Output = ()> + Send {
        let built = self.build(client_id, false);
        async move {
            if let Ok((tx, rx, _)) = built.await {
                RumqttdLink::new(tx, rx).detach();
            }
        }
    }

    fn inject(&self, topic: Bytes, payload: Bytes, retain: bool, properties: Option<PublishProperties>) {
        let publish = Publish::new(topic, payload, retain);
        let mut system = self.system.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // `send` is async in name only: it pushes and notifies synchronously.
        let _ = system.send(Packet::Publish(publish, properties)).now_or_never();
    }
}

/// A client link to rumqttd.
pub struct RumqttdLink {
    tx: LinkTx,
    rx: LinkRx,
    pending: VecDeque<Packet>,
    /// Disconnect sent, or the router already dropped the link.
    detached: bool,
    /// A deadline that has always passed, for polling the router without waiting.
    past: Instant,
}

impl RumqttdLink {
    fn new(tx: LinkTx, rx: LinkRx) -> Self {
        RumqttdLink { tx, rx, pending: VecDeque::with_capacity(64), detached: false, past: Instant::now() }
    }
}

impl Drop for RumqttdLink {
    fn drop(&mut self) {
        self.detach();
    }
}

fn convert(notification: Notification) -> FromRouter {
    match notification {
        Notification::Forward(forward) => FromRouter::Publish(forward.publish, forward.properties),
        Notification::Unschedule => FromRouter::Paused,
        // UNSUBACKs are answered by the gate and PUBACK, PUBREC and PUBCOMP never come to a
        // client link; the router's DISCONNECT is followed by the link closing.
        other => match Option::<Packet>::from(other) {
            Some(Packet::SubAck(suback, _)) => FromRouter::SubAck(suback),
            Some(Packet::PubRel(rel, _)) => FromRouter::PubRel(rel.pkid),
            Some(Packet::PingResp(_)) => FromRouter::PingResp,
            _ => FromRouter::Nothing,
        },
    }
}

impl RouterLink for RumqttdLink {
    fn push(&mut self, packet: Packet) {
        self.pending.push_back(packet);
    }

    fn flush(&mut self) -> Result<(), RouterError> {
        let Some(last) = self.pending.pop_back() else { return Ok(()) };
        if !self.pending.is_empty() {
            // Packets are ~400 bytes: hand the whole queue over when the router has taken
            // everything before (the usual case) instead of copying each one.
            let mut buffer = self.tx.buffer();
            if buffer.is_empty() {
                std::mem::swap(&mut *buffer, &mut self.pending);
            } else {
                buffer.extend(self.pending.drain(..));
            }
        }
        // `LinkTx::send` completes on its first poll (a synchronous flume send).
        match self.tx.send(last).now_or_never() {
            Some(Err(_)) => Err(RouterError::Closed),
            _ => Ok(()),
        }
    }

    async fn recv(&mut self) -> Result<FromRouter, RouterError> {
        match self.rx.next().await {
            Ok(Some(notification)) => Ok(convert(notification)),
            Ok(None) => Ok(FromRouter::Nothing),
            Err(_) => {
                self.detached = true; // the router dropped us; its connection id may be reused
                Err(RouterError::Closed)
            }
        }
    }

    fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>> {
        // The blocking call with a deadline that has passed, not `next().now_or_never()`: the
        // future would be built and its 816-byte result copied around for every message
        // (a third of the gate's time in a QoS 1 fan-out, docs/benchmarks.md). A closed link
        // also times out here; the next `recv` reports it.
        match self.rx.recv_deadline(self.past) {
            Ok(Some(notification)) => Some(Ok(convert(notification))),
            Ok(None) | Err(LinkError::RecvTimeout(_)) => None,
            Err(_) => {
                self.detached = true;
                Some(Err(RouterError::Closed))
            }
        }
    }

    fn detach(&mut self) {
        if std::mem::replace(&mut self.detached, true) {
            return;
        }
        let disconnect = Disconnect { reason_code: DisconnectReasonCode::NormalDisconnection };
        self.push(Packet::Disconnect(disconnect, None));
        let _ = self.flush();
    }

    async fn resume(&mut self) -> Result<(), RouterError> {
        self.rx.wake().await.map_err(|_| RouterError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_escaped_injectively() {
        assert_eq!(router_client_id("plain-id_1"), "plain-id_1");
        assert_eq!(router_client_id("site/dev+1#$"), "site%2Fdev%2B1%23%24");
        assert_eq!(router_client_id("%2F"), "%252F");
        assert_ne!(router_client_id("a/b"), router_client_id("a%2Fb"));
        assert!(!router_client_id(SYSTEM_CLIENT_ID).starts_with(SYSTEM_CLIENT_ID) || SYSTEM_CLIENT_ID.contains('%'));
        assert_eq!(router_client_id("%system"), "%25system");
    }

    #[test]
    fn shared_groups_are_renamed_per_filter() {
        assert_eq!(router_filter("a/b"), "a/b");
        assert_eq!(router_filter("$share/g/a/b"), "$share/g%a%2Fb/a/b");
        assert_ne!(router_filter("$share/g/a"), router_filter("$share/g/b"));
    }
}
