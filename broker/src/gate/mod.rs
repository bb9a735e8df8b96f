//! The gate: everything between a client's socket and the router. A listener accepts a socket
//! (`listener`, `tls`), a connection task decodes its packets (`codec`), runs the handshake and
//! then the inbound and outbound paths (`connection`), keeps the session registry (`session`) and what a session keeps (`saved_session`),
//! what a session moving to another node takes along (`session_handover`, `queued_messages`),
//! the subscription bookkeeping (`subscriptions`) and a session's set of them (`subscription_set`), what a client receives of a routed message
//! (`delivery`), how many deliveries a client may have unacknowledged (`flow_control`) and the
//! `$CONTROL` reply subscribers (`control`).

pub mod broker_api;
pub mod client_log;
pub mod codec;
pub(crate) mod connection;
pub(crate) mod connection_directory;
pub mod control;
pub mod delivery;
pub mod flow_control;
pub(crate) mod listener;
pub mod mailbox;
pub mod queued_messages;
pub mod saved_session;
pub mod session;
pub mod session_handover;
pub mod subscription_set;
pub mod subscriptions;
pub mod tls;
pub mod tls_errors;
pub(crate) mod websocket;
