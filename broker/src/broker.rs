//! A running broker: the routing engine, the shared state every connection uses, the listeners,
//! the kick-event pump, and graceful shutdown (stop accepting, disconnect clients, then let the
//! security implementation flush).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::Error;
use crate::backpressure::Pressure;
use crate::config::Config;
use crate::control::ControlSubscriptions;
use crate::listener;
use crate::logging::client_text;
use crate::router_link::{RoutingEngine, Rumqttd};
use crate::security::{KickTarget, Security};
use crate::session::Sessions;
use crate::sys_topics::{self, SysTree};
use crate::tls::{CertificateReloader, TlsListener};

/// State shared by every connection of one broker.
pub(crate) struct Shared<E: RoutingEngine> {
    pub config: Config,
    pub security: Arc<dyn Security>,
    pub engine: Arc<E>,
    pub sessions: Arc<Sessions<E>>,
    pub control: ControlSubscriptions,
    /// The `$SYS` values and their subscribers.
    pub sys: Arc<SysTree>,
    /// `$CONTROL/broker/v1` and the reply for endpoints nobody serves.
    pub broker_api: crate::broker_api::BrokerApi,
    pub pressure: Pressure,
    /// Topics handed to the router so far (`gate_new_topics_*`).
    pub routed_topics: crate::topic_budget::RoutedTopics,
    /// Sockets whose login is not decided yet (`gate_unauthenticated_connections`).
    pub unauthenticated: Arc<AtomicUsize>,
    next_conn_id: AtomicU64,
}

impl<E: RoutingEngine> Shared<E> {
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

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
        let mut tls_listeners = Vec::new();
        for listener in &config.listeners {
            tls_listeners.push(match listener.tls.is_configured() {
                true => Some(Arc::new(TlsListener::new(&listener.tls, listener.port).map_err(Error::Tls)?)),
                false => None,
            });
        }
        let engine = Rumqttd::start(&config.gate).map_err(Error::Router)?;
        let takeover_wait = config.gate.write_timeout + Duration::from_secs(1);
        let shared = Arc::new(Shared {
            sessions: Sessions::new(engine.clone(), takeover_wait),
            engine,
            control: ControlSubscriptions::default(),
            sys: Arc::new(SysTree::default()),
            broker_api: crate::broker_api::BrokerApi::new(&config),
            pressure: Pressure::new(config.gate.backpressure_window, config.gate.backpressure_max_hold),
            security,
            config,
            unauthenticated: Arc::new(AtomicUsize::new(0)),
            next_conn_id: AtomicU64::new(1),
            routed_topics: Default::default(),
        });
        let directory = crate::connection_directory::LiveConnections(shared.sessions.clone());
        shared.security.attach_connections(Arc::new(directory));
        let mut local_addrs = Vec::new();
        let mut tasks = Vec::new();
        if shared.config.sys_interval > 0 {
            let interval = Duration::from_secs(shared.config.sys_interval.into());
            let sessions = shared.sessions.clone();
            let refresh = sys_topics::run(shared.sys.clone(), interval, move || sessions.client_counts());
            tasks.push(tokio::spawn(refresh));
        }
        for (index, tls) in tls_listeners.iter().enumerate() {
            let bound = listener::bind(&shared.config, index).await?;
            local_addrs.push(bound.local_addr);
            let tls = tls.clone();
            tasks.push(tokio::spawn(listener::accept_loop(shared.clone(), bound, index, tls)));
        }
        shared.broker_api.set_bound_ports(local_addrs.iter().map(SocketAddr::port).collect());
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
        let certificates = CertificateReloader { listeners: tls_listeners.into_iter().flatten().collect() };
        Ok(Broker { shared, local_addrs, tasks, certificates })
    }

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
        info!("shutdown complete");
    }
}
