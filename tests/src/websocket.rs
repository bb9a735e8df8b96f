//! Websocket test clients for `protocol websockets` listeners: an MQTT client over websockets
//! (tokio-tungstenite's client side, on TCP or on TLS by rustls trusting the test CA) that sends
//! exactly the websocket messages a test asks for — one packet, a packet split over several
//! messages, several packets in one message — and reads MQTT packets back from the binary
//! messages; and a raw HTTP exchange for what a listener answers to plain or broken requests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use dynsec_broker::testkit::{self, CONNACK, Connect, Frame, Next, PINGRESP, PUBLISH, QUIET, Received, SUBACK, WAIT};
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

/// An MQTT client over a websocket.
pub struct WsClient {
    websocket: WebSocketStream<Box<dyn Io>>,
    buf: BytesMut,
    pub v5: bool,
    /// The subprotocol the server chose.
    pub subprotocol: Option<String>,
    closed: bool,
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
        Ok(WsClient { websocket, buf: BytesMut::new(), v5: false, subprotocol, closed: false })
    }

    /// Opens the websocket (subprotocol `mqttv3.1` for MQTT 3.1, else `mqtt`), sends CONNECT in
    /// one message and returns the client and what came back.
    pub async fn connect(addr: SocketAddr, transport: Transport<'_>, connect: &Connect) -> (WsClient, Next) {
        let subprotocol = if connect.version == 3 { "mqttv3.1" } else { "mqtt" };
        let mut client = WsClient::open(addr, transport, &[subprotocol]).await.expect("websocket opens");
        client.v5 = connect.version == 5;
        client.send(&connect.encode()).await;
        let reply = client.next(WAIT).await;
        (client, reply)
    }

    /// Connects and asserts a successful CONNACK.
    pub async fn connected(addr: SocketAddr, transport: Transport<'_>, connect: &Connect) -> WsClient {
        let (client, reply) = WsClient::connect(addr, transport, connect).await;
        match reply {
            Next::Frame(frame) if frame.packet_type == CONNACK && frame.reason() == 0 => client,
            other => panic!("CONNACK expected for {} over a websocket, got {other:?}", connect.client_id),
        }
    }

    /// Sends `bytes` as one binary message.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.send_messages(&[bytes]).await;
    }

    /// Sends each slice as its own binary message.
    pub async fn send_messages(&mut self, messages: &[&[u8]]) {
        for message in messages {
            // The broker may already have closed the connection; tests look at what comes back.
            let _ = self.websocket.send(Message::Binary(Bytes::copy_from_slice(message))).await;
        }
    }

    /// Sends a websocket message of any kind (text, ping, close).
    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.websocket.send(message).await;
    }

    /// The next MQTT packet, `Closed` when the websocket or the socket ends, `Timeout` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                return Next::Frame(frame);
            }
            if self.closed {
                return Next::Closed;
            }
            match tokio::time::timeout_at(deadline, self.websocket.next()).await {
                Err(_) => return Next::Timeout,
                Ok(Some(Ok(Message::Binary(payload)))) => self.buf.extend_from_slice(&payload),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                Ok(Some(Ok(Message::Text(text)))) => panic!("the broker sent a text message: {text}"),
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => self.closed = true,
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let header = dynsec_broker::codec::peek_frame(&self.buf, usize::MAX).ok()??;
        let mut frame = self.buf.split_to(header.frame_len());
        frame.advance(header.header_len);
        Some(Frame { packet_type: header.byte1 >> 4, flags: header.byte1 & 0x0F, body: frame.freeze() })
    }

    /// The next packet, which must be of `packet_type`.
    pub async fn expect(&mut self, packet_type: u8) -> Frame {
        match self.next(WAIT).await {
            Next::Frame(frame) if frame.packet_type == packet_type => frame,
            other => panic!("expected packet type {packet_type} over the websocket, got {other:?}"),
        }
    }

    pub async fn expect_publish(&mut self) -> Received {
        let v5 = self.v5;
        self.expect(PUBLISH).await.publish(v5)
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn expect_quiet(&mut self) {
        match self.next(QUIET).await {
            Next::Timeout => {}
            other => panic!("expected nothing over the websocket, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection; returns what came before.
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next(WAIT).await {
                Next::Frame(frame) => frames.push(frame),
                Next::Closed => return frames,
                Next::Timeout => panic!("websocket still open; received {frames:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        let bytes = testkit::subscribe(self.v5, pkid, filters);
        self.send(&bytes).await;
        let suback = self.expect(SUBACK).await;
        assert_eq!(suback.pkid(), pkid);
        suback.codes(self.v5)
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) {
        let bytes = testkit::publish(self.v5, topic, payload, qos, retain, pkid);
        self.send(&bytes).await;
    }

    /// A PINGREQ/PINGRESP round trip; returns what arrived before the PINGRESP.
    pub async fn ping(&mut self) -> Vec<Frame> {
        self.send(&testkit::pingreq()).await;
        let mut before = Vec::new();
        loop {
            match self.next(WAIT).await {
                Next::Frame(frame) if frame.packet_type == PINGRESP => return before,
                Next::Frame(frame) => before.push(frame),
                other => panic!("expected PINGRESP over the websocket, got {other:?} after {before:?}"),
            }
        }
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
