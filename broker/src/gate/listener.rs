//! Listening sockets: binding (port 0 picks a free port; the bound address is logged), the accept
//! loop, `max_connections` per listener, `gate_unauthenticated_connections` across listeners (a
//! socket counts from accept until its login is decided, TLS handshake included; beyond the cap a
//! new socket is closed at once, so unauthenticated clients cannot hold unbounded buffers),
//! `set_tcp_nodelay`, and the TLS handshake on TLS listeners (within the connect timeout; a failed
//! handshake closes the socket, as OpenSSL's does in mosquitto). Sockets of `protocol websockets`
//! listeners then go to `crate::gate::websocket`, the others straight to the connection code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::Error;
use crate::config::ListenerProtocol;
use crate::gate::tls::{self, TlsListener};
use crate::gate::{connection, websocket};
use crate::metrics;
use crate::routing::router_link::RoutingEngine;
use crate::security::TlsIdentity;
use crate::shared::{Listener, Shared, Unauthenticated};

/// A bound listener.
pub(crate) struct Bound {
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
}

pub(crate) async fn bind(listener: &Listener) -> Result<Bound, Error> {
    let host = listener.settings.bind_host();
    let port = listener.settings.port;
    let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let socket =
        TcpListener::bind(&address).await.map_err(|source| Error::Bind { address: address.clone(), source })?;
    let local_addr = socket.local_addr().map_err(|source| Error::Bind { address: address.clone(), source })?;
    // Tests and scripts look for this line to learn the port chosen for port 0.
    info!("Opening listen socket on {local_addr}.");
    Ok(Bound { listener: socket, local_addr })
}

/// Counts a listener's connections; the slot is given back when the connection task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn accept_loop<E: RoutingEngine>(shared: Arc<Shared<E>>, bound: Bound, listener: Arc<Listener>) {
    let limit = listener.settings.max_connections;
    let nodelay = shared.config.tcp_nodelay;
    let websockets = listener.settings.protocol == ListenerProtocol::Websockets;
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
        crate::gate::client_log::new_connection(peer, bound.local_addr.port());
        active.fetch_add(1, Ordering::AcqRel);
        metrics::Metrics::inc(&metrics::METRICS.sockets_accepted);
        let slot = Slot(active.clone());
        if nodelay {
            let _ = stream.set_nodelay(true);
        }
        let shared = shared.clone();
        let listener = listener.clone();
        // Each kind of session boxed on its own: a task is as large as its largest state, and a
        // TLS session's state (rustls buffers) would otherwise be paid by every plain TCP client.
        tokio::spawn(async move {
            match (listener.tls.clone(), websockets) {
                (None, false) => {
                    let stream = metrics::Counted::new(stream);
                    Box::pin(connection::serve(shared, stream, peer, listener, None, unauthenticated)).await
                }
                (None, true) => {
                    let stream = metrics::Counted::new(stream);
                    Box::pin(websocket::serve(shared, stream, peer, listener, None, unauthenticated)).await
                }
                (Some(tls), _) => Box::pin(serve_tls(shared, stream, peer, listener, &tls, unauthenticated)).await,
            }
            drop(slot);
        });
    }
}

async fn serve_tls<E: RoutingEngine>(
    shared: Arc<Shared<E>>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
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
                crate::gate::tls_errors::handshake_error_text(&error)
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
    match listener.settings.protocol {
        ListenerProtocol::Mqtt => connection::serve(shared, stream, peer, listener, identity, unauthenticated).await,
        ListenerProtocol::Websockets => {
            websocket::serve(shared, stream, peer, listener, identity, unauthenticated).await
        }
        // Served by `crate::console`, which has its own accept loop: never accepted here.
        ListenerProtocol::HttpApi => {}
    }
}
