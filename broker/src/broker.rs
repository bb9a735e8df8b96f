//! A running broker: the routing engine, the shared state every connection uses, the listeners,
//! the kick-event pump, and graceful shutdown (stop accepting, disconnect clients, then let the
//! security implementation flush).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::Error;
use crate::config::{Config, ListenerProtocol};
use crate::gate::listener;
use crate::gate::session::Sessions;
use crate::gate::tls::CertificateReloader;
use crate::logging::client_text;
use crate::persistence::Persistence;
use crate::routing::router_link::Rumqttd;
use crate::security::{KickTarget, Security};
use crate::shared::{Listener, Shared};
use crate::sys_topics;

/// A started broker. Dropping it does not stop it; call [`Broker::shutdown`].
pub struct Broker {
    shared: Arc<Shared<Rumqttd>>,
    local_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    certificates: CertificateReloader,
}

impl Broker {
    /// Starts the router, binds every listener and begins accepting clients.
    pub async fn start(config: Config, security: Arc<dyn Security>) -> Result<Broker, Error> {
        // Certificates are loaded before anything starts, so a bad file stops the broker.
        let listeners = Listener::all(&config)?;
        // A bad persistence file stops the broker here too, before anything is routed.
        let persistence = Persistence::open(&config.persistence)?;
        if config.cluster.as_ref().is_some_and(|cluster| cluster.forward_by_interest) {
            // Before the persistent sessions are restored: their subscriptions count.
            crate::cluster::interest::Interest::enable();
        }
        let engine = Rumqttd::start(&config.gate).map_err(Error::Router)?;
        let pressure = crate::routing::backpressure::Pressure::for_config(&config);
        // Reading the router's `#` log before anything is routed: the retained index learns
        // every retained message from it (`routing::hub`).
        let (hub, hub_link) = start_hub(&config, &engine).await?;
        let mut hub_task =
            AbortUnlessKept(Some(tokio::spawn(crate::routing::hub::run(hub.clone(), hub_link, pressure.clone()))));
        let takeover_wait = config.gate.write_timeout + Duration::from_secs(1);
        let sessions = Sessions::new(engine.clone(), takeover_wait);
        if let Some(persistence) = &persistence {
            // Retained messages into the gate's index and saved sessions into the registry,
            // before any listener accepts a client.
            let (mut restored, retained) = persistence.restore();
            for routed in retained {
                hub.retained().keep(routed);
            }
            info!(sessions = restored.sessions.len(), "persistence: sessions restored");
            let wills = std::mem::take(&mut restored.wills);
            for session in restored.sessions {
                let (client_id, expires_in) = (session.client_id.clone(), session.expires_in);
                let saved = crate::persistence::sessions::saved_session(session);
                sessions.restore(&client_id, saved, expires_in);
            }
            let store = persistence.clone();
            sessions.on_will(Box::new(move |client_id, will| {
                // Published: no longer waiting in the store (a no-op for a will without delay).
                let mut ops = vec![crate::persistence::Op::Unwill { client_id: client_id.into() }];
                let expiry = will.properties.as_ref().and_then(|p| p.message_expiry_interval);
                let properties = will.properties.as_ref();
                if will.retain {
                    store.retained(&mut ops, &will.topic, &will.payload, will.qos, client_id, expiry, properties);
                }
                let queued =
                    store.sessions.offer(&mut ops, &will.topic, &will.payload, will.qos, client_id, expiry, properties);
                store.submit(ops);
                queued
            }));
            let store = persistence.clone();
            sessions.on_expiry(move |client_id| {
                let mut ops = Vec::new();
                store.sessions.ended(&mut ops, client_id);
                store.submit(ops);
            });
            // Wills waiting for their delay when the broker stopped: due when they were due (after
            // the hooks above, which a will published at once already meets).
            let now = crate::persistence::records::unix_ms();
            for (client_id, will) in wills {
                let listener = crate::config::ListenerId(will.listener);
                let username = will.username.as_deref().map(Arc::from);
                let Some(authz) = security.authz_for(listener, username, Arc::from(client_id.as_str())) else {
                    warn!(client_id = %client_text(&client_id), "persistence: a restored will cannot be authorized: not published");
                    continue;
                };
                let wait = Duration::from_millis(will.due_unix_ms.saturating_sub(now));
                let pending = crate::persistence::pending_will(&client_id, will, authz);
                sessions.restore_will(&client_id, pending, wait);
            }
        }
        let cluster = match &config.cluster {
            Some(cluster) => {
                let admission = crate::cluster::admission::Admission::new(Arc::clone(&pressure));
                Some(
                    join_cluster(
                        cluster,
                        &security,
                        &engine,
                        &sessions,
                        persistence.clone(),
                        &config.persistence,
                        admission,
                        hub.retained().clone(),
                    )
                    .await?,
                )
            }
            None => None,
        };
        if let Some(bus) = &cluster {
            sessions.join_cluster(Arc::clone(bus));
        }
        let mut shared = Shared::new(config, security, engine, sessions, pressure);
        shared.persistence = persistence;
        shared.cluster = cluster;
        if hub.fans_out() {
            shared.publishers = Some(start_publisher_pool(&shared).await?);
        }
        shared.hub = Some(hub);
        let shared = Arc::new(shared);
        let directory = crate::gate::connection_directory::LiveConnections(shared.sessions.clone());
        shared.security.attach_connections(Arc::new(directory));
        let mut local_addrs = Vec::new();
        let mut tasks = Vec::new();
        if shared.config.sys_interval > 0 {
            let interval = Duration::from_secs(shared.config.sys_interval.into());
            let sessions = shared.sessions.clone();
            let refresh = sys_topics::run(shared.sys.clone(), interval, move || sessions.client_counts());
            tasks.push(tokio::spawn(refresh));
        }
        tasks.push(tokio::spawn(crate::routing::router_drops::report_periodically()));
        let listeners_bound = Arc::new(AtomicBool::new(false));
        for listener in &listeners {
            let bound = listener::bind(listener).await?;
            local_addrs.push(bound.local_addr);
            // `protocol http_api`: the console (its own HTTP server) instead of MQTT.
            let task = match listener.settings.protocol {
                ListenerProtocol::HttpApi => tokio::spawn(crate::console::serve(
                    shared.clone(),
                    listener.clone(),
                    bound.listener,
                    listeners_bound.clone(),
                )),
                _ => tokio::spawn(listener::accept_loop(shared.clone(), bound, listener.clone())),
            };
            tasks.push(task);
        }
        shared.broker_api.set_bound_ports(local_addrs.iter().map(SocketAddr::port).collect());
        listeners_bound.store(true, Ordering::Release);
        if let Some(mut kicks) = shared.security.take_kick_events() {
            let pump = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(target) = kicks.recv().await {
                    let kicked = pump.sessions.kick(&target);
                    match &target {
                        KickTarget::Username(name) => info!(username = %client_text(name), kicked, "kick"),
                        KickTarget::CredentialsRevoked(name) => {
                            info!(username = %client_text(name), kicked, "kick: credentials revoked")
                        }
                        KickTarget::Anonymous => info!(kicked, "kick: anonymous clients"),
                    }
                }
            }));
        }
        let certificates =
            CertificateReloader { listeners: listeners.iter().filter_map(|listener| listener.tls.clone()).collect() };
        tasks.extend(hub_task.0.take());
        Ok(Broker { shared, local_addrs, tasks, certificates })
    }
}

/// A task started before the broker is: aborted if the start fails first (a cluster node that
/// cannot reach NATS, a listener that cannot bind), kept by taking it out.
struct AbortUnlessKept(Option<JoinHandle<()>>);

impl Drop for AbortUnlessKept {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The hub (`routing::hub`) and its router link, subscribed to `#` before any message is routed:
/// with the fan-out (`gate_fleet_hub true`), or index-only — for the retained index and its
/// fences alone — with `gate_fleet_hub false` and in a cluster (the nodes' routing has not been
/// checked with the fan-out).
async fn start_hub(
    config: &Config,
    engine: &Rumqttd,
) -> Result<(Arc<crate::routing::hub::Hub>, crate::routing::router_link::RumqttdLink), Error> {
    use crate::routing::hub::Hub;
    use crate::routing::router_link::RoutingEngine;
    let hub = if config.gate.fleet_hub && config.cluster.is_none() {
        let persistence = &config.persistence;
        let max_hold = (config.gate.backpressure_window > 0).then_some(config.gate.backpressure_max_hold);
        Hub::new(persistence.max_queued_messages, persistence.max_queued_bytes, max_hold)
    } else {
        if config.gate.fleet_hub {
            // (Info, not a warning: the hub is on by default, so every cluster node would warn.)
            info!("gate_fleet_hub is not used in a cluster: every client keeps its own router link");
        }
        Hub::index_only()
    };
    let mut link = engine.attach_internal("hub").await.map_err(Error::Router)?;
    crate::routing::hub::subscribe_link(&mut link).map_err(Error::Router)?;
    Ok((Arc::new(hub), link))
}

/// `gate_fleet_hub true`: the publisher pool (docs/architecture.md), through which connections
/// without a router link of their own publish.
async fn start_publisher_pool(
    shared: &Shared<Rumqttd>,
) -> Result<crate::routing::publisher_pool::PublisherPool<crate::routing::router_link::RumqttdLink>, Error> {
    let size = shared.config.gate.worker_threads.max(1) * 2;
    let pool =
        crate::routing::publisher_pool::PublisherPool::start(&*shared.engine, size).await.map_err(Error::Router)?;
    info!(publisher_links = size, "fleet hub on");
    Ok(pool)
}

/// Connects to NATS, brings the security state to the end of the shared log and starts
/// cross-node routing (docs/cluster.md).
#[allow(clippy::too_many_arguments)] // what a node's routing across the cluster is wired to
async fn join_cluster(
    config: &crate::cluster::ClusterConfig,
    security: &Arc<dyn Security>,
    engine: &Arc<Rumqttd>,
    sessions: &Arc<Sessions<Rumqttd>>,
    persistence: Option<Arc<Persistence>>,
    queue_bounds: &crate::config::PersistenceSettings,
    admission: crate::cluster::admission::Admission,
    retained_index: Arc<crate::routing::retained_index::RetainedIndex>,
) -> Result<Arc<crate::cluster::messages::MessageBus>, Error> {
    let client = crate::cluster::connect(config).await.map_err(Error::Cluster)?;
    let membership = crate::cluster::Membership { client: client.clone(), config: config.clone() };
    security.join_cluster(&membership).await.map_err(Error::Cluster)?;
    let registry = Arc::downgrade(sessions);
    let take_over: crate::cluster::messages::TakeOver = Arc::new(move |client_id: &str, keep: Option<u64>| {
        if let Some(sessions) = registry.upgrade()
            && sessions.taken_over_elsewhere(client_id, keep)
        {
            info!(client_id = %client_text(client_id), "client id claimed on another node: taken over");
        }
    });
    let rules = crate::gate::queued_messages::Rules {
        max_messages: queue_bounds.max_queued_messages,
        max_bytes: queue_bounds.max_queued_bytes,
        queue_qos0: queue_bounds.queue_qos0_messages,
    };
    let hand_over =
        crate::gate::session_handover::SessionHandOver::new(Arc::downgrade(sessions), persistence.clone(), rules);
    let bus = crate::cluster::messages::MessageBus::start(
        &client,
        config,
        Arc::clone(engine),
        take_over,
        Arc::new(hand_over),
        persistence,
        admission,
        retained_index,
    )
    .await
    .map_err(Error::Cluster)?;
    info!(node = %config.node_name, nats = %crate::cluster::redacted(&config.nats_url), "joined the cluster");
    Ok(bus)
}

impl Broker {
    /// Reloads the certificates of the TLS listeners (SIGHUP); usable after `run_until` took the
    /// broker.
    pub fn certificate_reloader(&self) -> CertificateReloader {
        self.certificates.clone()
    }

    /// The address of each listener, in configuration order (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Live client connections.
    pub fn connected_clients(&self) -> usize {
        self.shared.sessions.live_count()
    }

    /// Runs until `signal` resolves, then shuts down gracefully. If routing stops first (the
    /// router thread died), shuts down too and returns [`Error::RoutingStopped`].
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let stopped = self.shared.engine.stopped();
        let routing_stopped = tokio::select! {
            _ = signal => false,
            _ = stopped => true,
        };
        if routing_stopped {
            error!("routing has stopped: shutting down");
        }
        self.shutdown().await;
        if routing_stopped { Err(Error::RoutingStopped) } else { Ok(()) }
    }

    /// Stops accepting, disconnects every client (v5: DISCONNECT 0x8B; no wills), then calls the
    /// security implementation's `shutdown` hook so it can flush its store.
    pub async fn shutdown(self) {
        info!("shutting down");
        for task in &self.tasks {
            task.abort();
        }
        let wait = self.shared.config.gate.write_timeout + Duration::from_secs(1);
        self.shared.sessions.disconnect_all(wait).await;
        let remaining = self.shared.sessions.live_count();
        if remaining > 0 {
            warn!(remaining, "clients still connected after the shutdown wait");
        }
        self.shared.security.shutdown().await;
        if let Some(persistence) = self.shared.persistence.clone() {
            // Joins the writer thread after its last sync.
            let _ = tokio::task::spawn_blocking(move || persistence.close()).await;
        }
        info!("shutdown complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::router_link::{FromRouter, RouterLink, RoutingEngine};
    use crate::testkit::{Connect, PUBACK, RawClient, WAIT};
    use rumqttd::protocol::{Filter, QoS, RetainForwardRule};

    /// The gate hands rumqttd no retained message (docs/rumqttd.md defect 19): a fresh router
    /// link subscribing `#` gets no retained replay from the router, while a client subscribing
    /// `#` gets every retained message from the gate — with the hub's fan-out and without.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_router_holds_no_retained_message() {
        for extra in ["", "gate_fleet_hub false\n"] {
            let text = format!("listener 0 127.0.0.1\nallow_anonymous true\n{extra}");
            let config = Config::from_text("test.conf", &text).unwrap();
            let security = crate::security::chain::AuthChain::from_config(&config).unwrap();
            let broker = Broker::start(config, security).await.unwrap();
            let addr = broker.local_addrs()[0];
            let mut publisher = RawClient::connected(addr, &Connect::new(4, "retainer")).await;
            for n in 1..=3u16 {
                publisher.publish(&format!("kept/{n}"), b"value", 1, true, n).await;
                assert_eq!(publisher.expect(PUBACK).await.pkid(), n);
            }
            let mut subscriber = RawClient::connected(addr, &Connect::new(4, "reader")).await;
            subscriber.subscribe(1, &[("#", 0)]).await;
            for _ in 0..3 {
                assert!(subscriber.expect_publish().await.retain, "{extra:?}: from the gate's index");
            }

            let mut probe = broker.shared.engine.attach_internal("probe").await.unwrap();
            let filter = Filter {
                path: "#".to_owned(),
                qos: QoS::AtMostOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            };
            probe.subscribe(1, vec![filter], None);
            probe.flush().unwrap();
            let mut subscribed = false;
            let mut routed = Vec::new();
            while routed.is_empty() || routed.iter().all(|(topic, _)| topic != "live") {
                let note = tokio::time::timeout(WAIT, probe.recv()).await.expect("the router answers").unwrap();
                match note {
                    FromRouter::SubAck(_) if !subscribed => {
                        subscribed = true;
                        // Anything the router would replay comes with the SUBACK; then a live one.
                        publisher.publish("live", b"now", 1, false, 9).await;
                        assert_eq!(publisher.expect(PUBACK).await.pkid(), 9);
                    }
                    FromRouter::Publish(copy) => {
                        routed.push((String::from_utf8_lossy(&copy.topic).into_owned(), copy.retain))
                    }
                    FromRouter::Paused => probe.resume().await.unwrap(),
                    _ => {}
                }
            }
            assert_eq!(routed, [("live".to_owned(), false)], "{extra:?}: no retained replay from the router");
            broker.shutdown().await;
        }
    }
}
