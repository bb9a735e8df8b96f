//! The state connections share: the broker's [`Shared`], each listener's [`Listener`], and the
//! count of sockets whose login is not decided yet. It sits in a file of its own, below the
//! broker, the accept loops and the connections, so that each of them depends on it and none of
//! them on another through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::Error;
use crate::config::{Config, ListenerConfig, ListenerId, SecurityOptions};
use crate::gate::broker_api::BrokerApi;
use crate::gate::control::ControlSubscriptions;
use crate::gate::session::Sessions;
use crate::gate::tls::TlsListener;
use crate::routing::attach_fence::AttachFence;
use crate::routing::backpressure::Pressure;
use crate::routing::filter_budget::RouterFilters;
use crate::routing::router_link::RoutingEngine;
use crate::routing::subscribed_filters::SubscribedFilters;
use crate::routing::topic_budget::RouterIndex;
use crate::security::Security;
use crate::sys_topics::SysTree;

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
    pub broker_api: BrokerApi,
    /// (Shared with the fleet hub's task, which registers its own progress: `routing::hub`.)
    pub pressure: Arc<Pressure>,
    /// Topics handed to the router so far (`gate_new_topics_*`).
    pub routed_topics: RouterIndex,
    /// Filters handed to the router so far: a PUBLISH none matches is not routed.
    pub subscribed_filters: SubscribedFilters,
    /// Filters clients made the router keep so far (`gate_new_filters_*`).
    pub router_filters: RouterFilters,
    /// Keeps subscriptions ahead of later publishes while their links attach.
    pub attach_fence: AttachFence,
    /// Sockets whose login is not decided yet (`gate_unauthenticated_connections`).
    pub unauthenticated: Arc<AtomicUsize>,
    /// The persistence store (`persistence true`).
    pub persistence: Option<Arc<crate::persistence::Persistence>>,
    /// Cluster mode: where messages for the other nodes go (docs/cluster.md).
    pub cluster: Option<Arc<crate::cluster::messages::MessageBus>>,
    /// `gate_fleet_hub true`: the fan-out of clean sessions' subscriptions (`routing::hub`).
    pub hub: Option<Arc<crate::routing::hub::Hub>>,
    /// `gate_fleet_hub true`: the links connections without their own publish through.
    pub publishers: Option<crate::routing::publisher_pool::PublisherPool<E::Link>>,
    next_conn_id: AtomicU64,
}

impl<E: RoutingEngine> Shared<E> {
    /// `pressure`: the back-pressure made for `config` ([`Pressure::for_config`]), which a
    /// cluster's readers of other nodes' messages use too (`cluster::admission`).
    pub fn new(
        config: Config,
        security: Arc<dyn Security>,
        engine: Arc<E>,
        sessions: Arc<Sessions<E>>,
        pressure: Arc<Pressure>,
    ) -> Shared<E> {
        Shared {
            sessions,
            engine,
            control: ControlSubscriptions::default(),
            sys: Arc::new(SysTree::default()),
            broker_api: BrokerApi::new(&config),
            pressure,
            security,
            config,
            unauthenticated: Arc::new(AtomicUsize::new(0)),
            persistence: None,
            cluster: None,
            hub: None,
            publishers: None,
            next_conn_id: AtomicU64::new(1),
            routed_topics: RouterIndex::default(),
            subscribed_filters: SubscribedFilters::default(),
            router_filters: RouterFilters::default(),
            attach_fence: AttachFence::default(),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// One configured listener as the running broker holds it: its identity for the security chain,
/// its settings, the security options that apply on it and its TLS acceptor, resolved once at
/// start. Connections keep an `Arc` of it rather than an index into the configuration.
pub(crate) struct Listener {
    pub id: ListenerId,
    pub settings: ListenerConfig,
    pub security: SecurityOptions,
    pub tls: Option<Arc<TlsListener>>,
}

impl Listener {
    /// Every listener of `config`, in configuration order; TLS certificates are loaded here, so
    /// that a bad file stops the broker before anything starts.
    pub fn all(config: &Config) -> Result<Vec<Arc<Listener>>, Error> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (index, settings) in config.listeners.iter().enumerate() {
            let tls = match settings.tls.is_configured() {
                true => Some(Arc::new(TlsListener::new(&settings.tls, settings.port).map_err(Error::Tls)?)),
                false => None,
            };
            let id = ListenerId(index);
            let security = config.security_for(id).clone();
            listeners.push(Arc::new(Listener { id, settings: settings.clone(), security, tls }));
        }
        Ok(listeners)
    }
}

/// A socket whose login is not decided yet (see the module documentation); counted until dropped.
pub(crate) struct Unauthenticated(Arc<AtomicUsize>);

impl Unauthenticated {
    /// Counts one more unauthenticated socket, unless `limit` are already counted.
    pub fn try_new(count: &Arc<AtomicUsize>, limit: usize) -> Option<Unauthenticated> {
        let previous = count.fetch_add(1, Ordering::AcqRel);
        let counted = Unauthenticated(Arc::clone(count));
        (previous < limit).then_some(counted)
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
