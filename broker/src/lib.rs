//! `dynsec-broker`: an MQTT broker whose routing is rumqttd's `Router` and whose every decision
//! about who may connect, publish, subscribe and receive is made by our own gate.
//!
//! Embedding it (what `main` does):
//!
//! ```no_run
//! # async fn run() -> Result<(), dynsec_broker::Error> {
//! use dynsec_broker::{broker::Broker, config::Config, security::chain::AuthChain};
//! let config = Config::load(None, None)?; // None: 127.0.0.1:1883, dynsec on ./dynamic-security.json
//! let security = AuthChain::from_config(&config)?;
//! let broker = Broker::start(config, security).await?;
//! broker.run_until(dynsec_broker::cli::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

// The folders follow the data flow (docs/architecture.md): `gate` reads and writes clients,
// `security` decides, `routing` hands messages to rumqttd and back, `config` reads the file that
// sets all of it up; `broker` wires them together around `shared::Shared`.

pub mod broker;
pub mod cli;
pub mod cluster;
pub mod config;
mod console;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gate;
pub mod logging;
pub mod metrics;
pub mod persistence;
pub mod routing;
pub mod security;
pub mod service;
mod shared;
pub mod sys_topics;
#[cfg(feature = "testkit")]
pub mod testkit;

/// Errors that stop the broker from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Router(#[from] routing::router_link::RouterError),
    #[error("{0}")]
    Unsupported(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("security: {0}")]
    Security(String),
    /// Joining the cluster failed (NATS unreachable, JetStream refused the log, …).
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("logging: {0}")]
    Logging(String),
    #[error("persistence: {0}")]
    Persistence(#[from] persistence::StoreError),
    /// The routing engine died while the broker ran (its log line says why): exit non-zero, so
    /// that a service manager restarts the broker rather than leave it serving without routing.
    #[error("routing stopped; the broker exits so that it can be restarted")]
    RoutingStopped,
}
