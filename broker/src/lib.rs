//! `dynsec-broker`: an MQTT broker whose routing is rumqttd's `Router` and whose every decision
//! about who may connect, publish, subscribe and receive is made by our own gate.
//!
//! Embedding it (what `main` does):
//!
//! ```no_run
//! # async fn run() -> Result<(), dynsec_broker::Error> {
//! use dynsec_broker::{auth_chain::AuthChain, broker::Broker, config::Config};
//! let config = Config::load(None, None)?; // None: 127.0.0.1:1883, dynsec on ./dynamic-security.json
//! let security = AuthChain::from_config(&config)?;
//! let broker = Broker::start(config, security).await?;
//! broker.run_until(dynsec_broker::cli::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod ack_sequencer;
pub mod auth_chain;
pub mod backpressure;
pub mod broker;
pub mod broker_api;
pub mod cli;
pub mod client_log;
pub mod codec;
pub mod config;
mod connection;
mod connection_directory;
pub mod control;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lazy_link;
mod listener;
pub mod logging;
pub mod metrics;
pub mod router_guard;
pub mod router_link;
pub mod security;
pub mod service;
pub mod session;
pub mod store_access;
pub mod subscriptions;
pub mod sys_topics;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod throttle;
pub mod tls;
pub mod tls_errors;
pub mod topic_budget;
pub mod verifier;
mod websocket;

/// Errors that stop the broker from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Router(#[from] router_link::RouterError),
    #[error("{0}")]
    Unsupported(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("security: {0}")]
    Security(String),
    #[error("logging: {0}")]
    Logging(String),
    /// The routing engine died while the broker ran (its log line says why): exit non-zero, so
    /// that a service manager restarts the broker rather than leave it serving without routing.
    #[error("routing stopped; the broker exits so that it can be restarted")]
    RoutingStopped,
}
