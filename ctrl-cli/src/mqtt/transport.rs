//! Opening the byte stream to the broker: TCP (optionally from a bind address), a unix socket, and
//! TLS on top of TCP. Failures are classified the way mosquitto_ctrl reports them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::options::ConnectionOptions;

/// Any connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve (mosquitto: MOSQ_ERR_EAI).
    #[error("lookup of {0} failed")]
    Lookup(String),
    /// The operating system refused (mosquitto: MOSQ_ERR_ERRNO).
    #[error("{0}")]
    Os(io::Error),
    /// The TLS handshake failed.
    #[error("{0}")]
    Tls(String),
    /// Invalid connection settings, found before anything was sent.
    #[error("{0}")]
    Invalid(String),
}

/// strerror's text for an OS error: Rust's `Display` adds " (os error N)", mosquitto does not.
pub fn os_error_text(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

pub async fn open(
    options: &ConnectionOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Stream>, ConnectError> {
    if options.is_unix_socket() {
        return open_unix(options.host()).await;
    }
    let port = u16::try_from(options.effective_port())
        .map_err(|_| ConnectError::Invalid(format!("invalid port {}", options.effective_port())))?;
    let tcp = open_tcp(options.host(), port, options.bind_address.as_deref()).await?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let server_name = rustls_pki_types::ServerName::try_from(options.host().to_string())
                .map_err(|_| ConnectError::Tls(format!("'{}' is not a valid TLS server name", options.host())))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream =
                connector.connect(server_name, tcp).await.map_err(|e| ConnectError::Tls(tls_error_text(&e)))?;
            Ok(Box::new(stream))
        }
    }
}

fn tls_error_text(error: &io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => os_error_text(error),
    }
}

#[cfg(unix)]
async fn open_unix(path: &str) -> Result<Box<dyn Stream>, ConnectError> {
    tokio::net::UnixStream::connect(path).await.map(|s| Box::new(s) as Box<dyn Stream>).map_err(ConnectError::Os)
}

#[cfg(not(unix))]
async fn open_unix(_path: &str) -> Result<Box<dyn Stream>, ConnectError> {
    Err(ConnectError::Invalid("unix sockets are not available on this platform".into()))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() { Err(ConnectError::Lookup(host.to_string())) } else { Ok(addresses) }
        }
        Err(_) => Err(ConnectError::Lookup(host.to_string())),
    }
}

/// Tries every address of `host` in turn, like libmosquitto; the last error is reported.
async fn open_tcp(host: &str, port: u16, bind_address: Option<&str>) -> Result<TcpStream, ConnectError> {
    let addresses = resolve(host, port).await?;
    let bind_addresses = match bind_address {
        Some(bind) => Some(resolve(bind, 0).await?),
        None => None,
    };
    let mut last_error = io::Error::new(io::ErrorKind::AddrNotAvailable, "no usable address");
    for address in addresses {
        let socket = match if address.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() } {
            Ok(socket) => socket,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        if let Some(binds) = &bind_addresses {
            let Some(local) = binds.iter().find(|b| b.is_ipv4() == address.is_ipv4()) else {
                continue;
            };
            if let Err(e) = socket.bind(*local) {
                last_error = e;
                continue;
            }
        }
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(ConnectError::Os(last_error))
}
