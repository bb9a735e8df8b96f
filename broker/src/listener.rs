//! Listening sockets: binding (port 0 picks a free port; the bound address is logged), the accept
//! loop, `max_connections` per listener, `gate_unauthenticated_connections` across listeners (a
//! socket counts from accept until its login is decided, TLS handshake included; beyond the cap a
//! new socket is closed at once, so unauthenticated clients cannot hold unbounded buffers),
//! `set_tcp_nodelay`, and the TLS handshake on TLS listeners (within the connect timeout; a failed
//! handshake closes the socket, as OpenSSL's does in mosquitto). Sockets of `protocol websockets`
//! listeners then go to `crate::websocket`, the others straight to the connection code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::Error;
use crate::broker::Shared;
use crate::config::{Config, ListenerProtocol};
use crate::connection;
use crate::metrics;
use crate::router_link::RoutingEngine;
use crate::security::TlsIdentity;
use crate::tls::{self, TlsListener};
use crate::websocket;

/// A bound listener.
pub(crate) struct Bound {
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
}

pub(crate) async fn bind(config: &Config, index: usize) -> Result<Bound, Error> {
    let listener_config = &config.listeners[index];
    let host = listener_config.bind_host();
    let address = format!("{host}:{}", listener_config.port);
    let address = if host.contains(':') { format!("[{host}]:{}", listener_config.port) } else { address };
    let listener =
        TcpListener::bind(&address).await.map_err(|source| Error::Bind { address: address.clone(), source })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Bind { address: address.clone(), source })?;
    // Tests and scripts look for this line to learn the port chosen for port 0.
    info!("Opening listen socket on {local_addr}.");
    Ok(Bound { listener, local_addr })
}

/// Counts a listener's connections; the slot is given back when the connection task ends.
struct Slot(Arc<AtomicUsize>);

/// A socket whose login is not decided yet (see the module documentation); counted until dropped.
pub(crate) struct Unauthenticated(Arc<AtomicUsize>);

impl Unauthenticated {
    /// Counts one more unauthenticated socket, unless `limit` are already counted.
    fn try_new(count: &Arc<AtomicUsize>, limit: usize) -> Option<Unauthenticated> {
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

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn accept_loop<E: RoutingEngine>(
    shared: Arc<Shared<E>>,
    bound: Bound,
    index: usize,
    tls: Option<Arc<TlsListener>>,
) {
    let limit = shared.config.listeners[index].max_connections;
    let nodelay = shared.config.tcp_nodelay;
    let websockets = shared.config.listeners[index].protocol == ListenerProtocol::Websockets;
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match bound.listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if limit.is_some_and(|limit| active.load(Ordering::Acquire) >= limit) {
            info!(%peer, "refusing connection: max_connections reached");
            drop(stream);
            continue;
        }
        let limit = shared.config.gate.unauthenticated_connections;
        let Some(unauthenticated) = Unauthenticated::try_new(&shared.unauthenticated, limit) else {
            debug!(%peer, "refusing connection: gate_unauthenticated_connections reached");
            drop(stream);
            continue;
        };
        crate::client_log::new_connection(peer, bound.local_addr.port());
        active.fetch_add(1, Ordering::AcqRel);
        metrics::Metrics::inc(&metrics::METRICS.sockets_accepted);
        let slot = Slot(active.clone());
        if nodelay {
            let _ = stream.set_nodelay(true);
        }
        let shared = shared.clone();
        let tls = tls.clone();
        // Each kind of session boxed on its own: a task is as large as its largest state, and a
        // TLS session's state (rustls buffers) would otherwise be paid by every plain TCP client.
        tokio::spawn(async move {
            match (tls, websockets) {
                (None, false) => {
                    let stream = metrics::Counted::new(stream);
                    Box::pin(connection::serve(shared, stream, peer, index, None, unauthenticated)).await
                }
                (None, true) => {
                    let stream = metrics::Counted::new(stream);
                    Box::pin(websocket::serve(shared, stream, peer, index, None, unauthenticated)).await
                }
                (Some(tls), _) => Box::pin(serve_tls(shared, stream, peer, index, &tls, unauthenticated)).await,
            }
            drop(slot);
        });
    }
}

async fn serve_tls<E: RoutingEngine>(
    shared: Arc<Shared<E>>,
    stream: TcpStream,
    peer: SocketAddr,
    index: usize,
    tls: &TlsListener,
    unauthenticated: Unauthenticated,
) {
    let acceptor = tls.acceptor();
    let stream = match tokio::time::timeout(shared.config.gate.connect_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            info!(
                "Client connection from {}:{} failed: TLS handshake failed: {}.",
                peer.ip(),
                peer.port(),
                crate::tls_errors::handshake_error_text(&error)
            );
            return;
        }
        Err(_) => {
            info!("Client connection from {}:{} failed: TLS handshake timed out.", peer.ip(), peer.port());
            return;
        }
    };
    let identity: Option<TlsIdentity> = tls::identity(stream.get_ref().1.peer_certificates());
    let stream = metrics::Counted::new(stream);
    match shared.config.listeners[index].protocol {
        ListenerProtocol::Mqtt => connection::serve(shared, stream, peer, index, identity, unauthenticated).await,
        ListenerProtocol::Websockets => websocket::serve(shared, stream, peer, index, identity, unauthenticated).await,
    }
}
