//! Websocket test clients for `protocol websockets` listeners: an MQTT client over websockets
//! (tokio-tungstenite's client side, on TCP or on TLS by rustls trusting the test CA) that sends
//! exactly the websocket messages a test asks for — one packet, a packet split over several
//! messages, several packets in one message — and reads MQTT packets back from the binary
//! messages; and a raw HTTP exchange for what a listener answers to plain or broken requests.
//! The MQTT side is the testkit's `RawClient`, run on a websocket ([`WebSocket`]).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dynsec_broker::testkit::{Connect, Next, RawClient, WAIT, Wire};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A socket the client can run on (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to reach the listener.
#[derive(Debug, Clone, Copy)]
pub enum Transport<'a> {
    Plain,
    /// TLS, trusting this CA file; the server name checked is `localhost`.
    Tls {
        ca: &'a Path,
    },
}

/// Opens TCP, and TLS when asked.
pub async fn open_socket(addr: SocketAddr, transport: Transport<'_>) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    match transport {
        Transport::Plain => Ok(Box::new(tcp)),
        Transport::Tls { ca } => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| format!("read {ca:?}: {e}"))? {
                roots.add(cert.map_err(|e| format!("{ca:?}: {e}"))?).map_err(|e| format!("{ca:?}: {e}"))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(Box::new(tls))
        }
    }
}

/// A websocket as the [`Wire`] of a [`RawClient`]: each write is one binary message, and MQTT
/// packets are read from the binary messages that arrive (a packet may span messages).
pub struct WebSocket {
    websocket: WebSocketStream<Box<dyn Io>>,
    closed: bool,
}

impl Wire for WebSocket {
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.websocket.send(Message::Binary(Bytes::copy_from_slice(bytes))).await;
    }

    async fn receive(&mut self, buf: &mut BytesMut) -> bool {
        while !self.closed {
            match self.websocket.next().await {
                Some(Ok(Message::Binary(payload))) => {
                    buf.extend_from_slice(&payload);
                    return true;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(text))) => panic!("the broker sent a text message: {text}"),
                Some(Ok(Message::Close(_)) | Err(_)) | None => self.closed = true,
            }
        }
        false
    }
}

/// An MQTT client over a websocket: the testkit's [`RawClient`] (every packet helper and
/// expectation) on a [`WebSocket`], plus what only a websocket can send.
pub struct WsClient {
    client: RawClient<WebSocket>,
    /// The subprotocol the server chose.
    pub subprotocol: Option<String>,
}

impl Deref for WsClient {
    type Target = RawClient<WebSocket>;

    fn deref(&self) -> &RawClient<WebSocket> {
        &self.client
    }
}

impl DerefMut for WsClient {
    fn deref_mut(&mut self) -> &mut RawClient<WebSocket> {
        &mut self.client
    }
}

impl WsClient {
    /// Opens the websocket (path `/mqtt`, as MQTT.js uses), offering `subprotocols`.
    pub async fn open(addr: SocketAddr, transport: Transport<'_>, subprotocols: &[&str]) -> Result<WsClient, String> {
        let socket = open_socket(addr, transport).await?;
        let scheme = match transport {
            Transport::Plain => "ws",
            Transport::Tls { .. } => "wss",
        };
        let mut request =
            format!("{scheme}://localhost:{}/mqtt", addr.port()).into_client_request().map_err(|e| e.to_string())?;
        if !subprotocols.is_empty() {
            let offer = HeaderValue::from_str(&subprotocols.join(", ")).map_err(|e| e.to_string())?;
            request.headers_mut().insert("Sec-WebSocket-Protocol", offer);
        }
        let (websocket, response) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, socket))
            .await
            .map_err(|_| "websocket handshake timed out".to_owned())?
            .map_err(|e| format!("websocket handshake: {e}"))?;
        let subprotocol =
            response.headers().get("sec-websocket-protocol").and_then(|value| value.to_str().ok()).map(str::to_owned);
        Ok(WsClient { client: RawClient::on(WebSocket { websocket, closed: false }), subprotocol })
    }

    /// Opens the websocket with the subprotocol `connect` calls for: `mqttv3.1` for MQTT 3.1,
    /// else `mqtt`.
    async fn open_for(addr: SocketAddr, transport: Transport<'_>, connect: &Connect) -> WsClient {
        let subprotocol = if connect.version == 3 { "mqttv3.1" } else { "mqtt" };
        WsClient::open(addr, transport, &[subprotocol]).await.expect("websocket opens")
    }

    /// Opens the websocket, sends CONNECT in one message and returns the client and what came
    /// back.
    pub async fn connect(addr: SocketAddr, transport: Transport<'_>, connect: &Connect) -> (WsClient, Next) {
        let mut client = WsClient::open_for(addr, transport, connect).await;
        let reply = client.send_connect(connect).await;
        (client, reply)
    }

    /// Connects and asserts a successful CONNACK.
    pub async fn connected(addr: SocketAddr, transport: Transport<'_>, connect: &Connect) -> WsClient {
        let mut client = WsClient::open_for(addr, transport, connect).await;
        client.send_connect_ok(connect).await;
        client
    }

    /// Sends each slice as its own binary message.
    pub async fn send_messages(&mut self, messages: &[&[u8]]) {
        for message in messages {
            self.client.send(message).await;
        }
    }

    /// Sends a websocket message of any kind (text, ping, close).
    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.client.wire().websocket.send(message).await;
    }
}

/// Sends `request` as is on a new connection and returns everything the server sent until it
/// closed (or [`WAIT`] passed): for HTTP answers of a websockets listener.
pub async fn http_exchange(addr: SocketAddr, transport: Transport<'_>, request: &[u8]) -> String {
    let mut socket = open_socket(addr, transport).await.expect("open the socket");
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of an HTTP answer (0 if there is none).
pub fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// Waits (bounded) until the broker's log shows `count` bound listeners: a started
/// `BrokerProcess` only waited for the first one.
pub fn wait_for_listeners(log: impl Fn() -> String, count: usize) {
    for _ in 0..500 {
        if log().matches("Opening listen socket on ").count() >= count {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("fewer than {count} listeners bound: {}", log());
}
