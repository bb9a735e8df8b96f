//! Websockets listeners (`protocol websockets`, plain or on the listener's TLS): MQTT carried in
//! binary websocket frames, as browsers and MQTT.js need.
//!
//! A socket goes through three steps, all while it still counts as unauthenticated (so
//! `gate_unauthenticated_connections` covers it) and within `gate_connect_timeout`:
//! 1. [`upgrade`] reads the HTTP request head (at most `websockets_headers_size` bytes) and either
//!    accepts the upgrade (subprotocol `mqtt`, or `mqttv3.1` for old clients), serves a file of
//!    `http_dir` ([`static_files`]), or answers with an HTTP error and closes ([`answer`]).
//! 2. The websocket framing is tokio-tungstenite's (the tokio binding of tungstenite, a well-kept
//!    websocket implementation); [`byte_stream`] turns the message stream into the byte stream
//!    MQTT expects, so a packet may span frames and a frame may hold several packets.
//! 3. `connection::serve` runs the client exactly as on a TCP listener: the same gate, ACLs,
//!    kicks, limits and timeouts.

mod answer;
mod byte_stream;
mod static_files;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::debug;

use crate::gate::connection;
use crate::routing::router_link::RoutingEngine;
use crate::security::TlsIdentity;
use crate::shared::{Listener, Shared, Unauthenticated};

use byte_stream::{ByteStream, PreLoginBudget};
use upgrade::Outcome;

/// Slack on top of `max_packet_size` for one websocket message: a client may put a few small
/// packets in the same message as a large one.
const MESSAGE_SLACK: usize = 64 * 1024;
/// tungstenite allocates its read buffer up front: keep it small for the many idle clients.
const READ_BUFFER: usize = 4 * 1024;

/// Serves one accepted socket of a websockets listener (after its TLS handshake, if any).
pub(crate) async fn serve<E, S>(
    shared: Arc<Shared<E>>,
    mut stream: S,
    peer: SocketAddr,
    listener: Arc<Listener>,
    tls: Option<TlsIdentity>,
    unauthenticated: Unauthenticated,
) where
    E: RoutingEngine,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let listener_config = &listener.settings;
    let limits = upgrade::Limits { head_size: config.websockets_headers_size, timeout: config.gate.connect_timeout };
    let (subprotocol, early_frames) = match upgrade::handshake(&mut stream, peer, listener_config, limits).await {
        Outcome::Upgraded { subprotocol, early_frames } => (subprotocol, early_frames),
        Outcome::Done => return,
    };
    debug!(%peer, subprotocol, "websocket connection opened");
    let max_message = (config.max_packet_size as usize).saturating_add(MESSAGE_SLACK);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    // Before its CONNECT is answered a TCP client may send gate_connect_max_size plus a little;
    // websocket framing adds at most a few bytes per frame, hence the factor.
    let budget = PreLoginBudget::new(stream, 2 * config.gate.connect_max_size + MESSAGE_SLACK);
    let websocket = WebSocketStream::from_partially_read(budget, early_frames, Role::Server, Some(ws_config)).await;
    connection::serve(shared, ByteStream::new(websocket), peer, listener, tls, unauthenticated).await;
}
