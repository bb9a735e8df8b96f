//! The state every connection of one broker shares. It sits in a file of its own, below the
//! broker, the listeners and the connections, so that each of them depends on it and none of them
//! depends on another through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::Config;
use crate::gate::control::ControlSubscriptions;
use crate::gate::session::Sessions;
use crate::routing::backpressure::Pressure;
use crate::routing::router_link::RoutingEngine;
use crate::routing::topic_budget::RoutedTopics;
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
    pub pressure: Pressure,
    /// Topics handed to the router so far (`gate_new_topics_*`).
    pub routed_topics: RoutedTopics,
    /// Sockets whose login is not decided yet (`gate_unauthenticated_connections`).
    pub unauthenticated: Arc<AtomicUsize>,
    next_conn_id: AtomicU64,
}

impl<E: RoutingEngine> Shared<E> {
    pub fn new(config: Config, security: Arc<dyn Security>, engine: Arc<E>, sessions: Arc<Sessions<E>>) -> Shared<E> {
        Shared {
            sessions,
            engine,
            control: ControlSubscriptions::default(),
            sys: Arc::new(SysTree::default()),
            pressure: Pressure::new(config.gate.backpressure_window, config.gate.backpressure_max_hold),
            security,
            config,
            unauthenticated: Arc::new(AtomicUsize::new(0)),
            next_conn_id: AtomicU64::new(1),
            routed_topics: RoutedTopics::default(),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}
