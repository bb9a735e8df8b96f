//! The console's sockets: a TCP listener whose connections are handed to axum, after a TLS
//! handshake on listeners with `certfile`/`keyfile` (with the connect timeout; handshakes run on
//! their own tasks, so one slow client cannot hold the accept loop). `max_connections` bounds the
//! open HTTP connections as it bounds MQTT ones.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::gate::tls::TlsListener;

/// A byte stream axum can serve, plain or TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One accepted connection; frees its `max_connections` slot when dropped.
pub(super) struct Connection {
    stream: Box<dyn Stream>,
    _slot: Slot,
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The peer of a console request (the login throttle keys on its address).
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, Incoming>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Incoming>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The accepted (and, on TLS listeners, handshaken) connections of one console listener.
pub(super) struct Incoming {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

impl Incoming {
    pub fn start(
        socket: TcpListener,
        tls: Option<Arc<TlsListener>>,
        handshake_timeout: Duration,
        max_connections: Option<usize>,
    ) -> std::io::Result<Incoming> {
        let local = socket.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let active = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                // Ends with the server (its receiving end dropped, e.g. at shutdown), closing the socket.
                let accepted = tokio::select! {
                    accepted = socket.accept() => accepted,
                    _ = tx.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "console: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if max_connections.is_some_and(|limit| active.load(Ordering::Acquire) >= limit) {
                    tracing::info!(%peer, "console: refusing connection: max_connections reached");
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let slot = Slot(active.clone());
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        if tx.send((Connection { stream: Box::new(stream), _slot: slot }, peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(tls) => {
                        let acceptor = tls.acceptor();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let _ = tx.send((Connection { stream: Box::new(stream), _slot: slot }, peer)).await;
                                }
                                Ok(Err(error)) => tracing::info!(%peer, %error, "console: TLS handshake failed"),
                                Err(_) => tracing::info!(%peer, "console: TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Incoming { ready, local })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when this listener is dropped: wait forever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
