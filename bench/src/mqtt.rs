//! A lean MQTT 3.1.1 / 5 wire layer for the load generator: encoders that append to a caller's
//! buffer (so a batch of packets costs one write) and a frame reader that hands out packet bodies
//! as slices of its read buffer, without decoding more than the caller asks for. Only what the
//! scenarios send and read is here.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// Protocol level of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }

    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }

    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

fn put_varint(buf: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_str(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

/// CONNECT parameters.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub version: Version,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub keep_alive: u16,
}

impl<'a> Connect<'a> {
    /// A CONNECT with optional (username, password) and the load generator's keepalive (600 s).
    pub fn with_credentials(version: Version, client_id: &'a str, credentials: Option<&'a (String, String)>) -> Self {
        Connect {
            version,
            client_id,
            username: credentials.map(|(u, _)| u.as_str()),
            password: credentials.map(|(_, p)| p.as_str()),
            keep_alive: 600,
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        self.encode_session(buf, None);
    }

    /// Encodes the CONNECT; `session_expiry` `Some(secs)` asks for a persistent session
    /// (MQTT 3.1.1: `clean_session 0`; v5: no Clean Start and that Session Expiry Interval).
    pub fn encode_session(&self, buf: &mut BytesMut, session_expiry: Option<u32>) {
        let mut body = BytesMut::with_capacity(64);
        put_str(&mut body, b"MQTT");
        body.put_u8(self.version.level());
        let mut flags = if session_expiry.is_some() { 0 } else { 0x02 }; // clean session / clean start
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        body.put_u8(flags);
        body.put_u16(self.keep_alive);
        if self.version.is_v5() {
            match session_expiry {
                Some(secs) => {
                    body.put_u8(5); // Session Expiry Interval
                    body.put_u8(0x11);
                    body.put_u32(secs);
                }
                None => body.put_u8(0), // no properties
            }
        }
        put_str(&mut body, self.client_id.as_bytes());
        if let Some(username) = self.username {
            put_str(&mut body, username.as_bytes());
        }
        if let Some(password) = self.password {
            put_str(&mut body, password.as_bytes());
        }
        buf.put_u8(0x10);
        put_varint(buf, body.len());
        buf.put_slice(&body);
    }
}

/// Appends a PUBLISH (no retain, no DUP, no properties).
pub fn publish(buf: &mut BytesMut, version: Version, topic: &[u8], payload: &[u8], qos: u8, pkid: u16) {
    publish_with(buf, version, topic, payload, qos, pkid, false);
}

/// Appends a PUBLISH with the retain flag as given (no DUP, no properties).
pub fn publish_with(
    buf: &mut BytesMut,
    version: Version,
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
) {
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + usize::from(version.is_v5()) + payload.len();
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(0x30 | (qos << 1) | u8::from(retain));
    put_varint(buf, remaining);
    put_str(buf, topic);
    if qos > 0 {
        buf.put_u16(pkid);
    }
    if version.is_v5() {
        buf.put_u8(0);
    }
    buf.put_slice(payload);
}

/// Appends a PUBACK (reason omitted: success, in both versions).
pub fn puback(buf: &mut BytesMut, pkid: u16) {
    buf.put_slice(&[0x40, 2]);
    buf.put_u16(pkid);
}

/// Appends a SUBSCRIBE for one filter.
pub fn subscribe(buf: &mut BytesMut, version: Version, pkid: u16, filter: &str, qos: u8) {
    let remaining = 2 + usize::from(version.is_v5()) + 2 + filter.len() + 1;
    buf.put_u8(0x82);
    put_varint(buf, remaining);
    buf.put_u16(pkid);
    if version.is_v5() {
        buf.put_u8(0);
    }
    put_str(buf, filter.as_bytes());
    buf.put_u8(qos);
}

pub fn disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0]);
}

/// One received packet: type, flags and body (a slice of the reader's buffer).
#[derive(Debug, Clone)]
pub struct Frame {
    pub packet_type: u8,
    pub flags: u8,
    pub body: Bytes,
}

impl Frame {
    /// Packet id of an ack / SUBACK.
    pub fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// CONNACK return / reason code.
    pub fn connack_code(&self) -> u8 {
        self.body.get(1).copied().unwrap_or(0xFF)
    }

    /// Reason code of a v5 PUBACK (0 when omitted).
    pub fn ack_reason(&self) -> u8 {
        self.body.get(2).copied().unwrap_or(0)
    }

    /// First return code of a SUBACK.
    pub fn suback_code(&self, version: Version) -> u8 {
        let mut body = self.body.slice(2..);
        if version.is_v5() {
            let len = read_varint(&mut body).unwrap_or(0);
            body.advance(len.min(body.len()));
        }
        body.first().copied().unwrap_or(0x80)
    }

    /// QoS, packet id and payload of a PUBLISH.
    pub fn publish(&self, version: Version) -> Option<(u8, u16, Bytes)> {
        let qos = (self.flags >> 1) & 3;
        let mut body = self.body.clone();
        if body.len() < 2 {
            return None;
        }
        let topic_len = body.get_u16() as usize;
        if body.len() < topic_len {
            return None;
        }
        body.advance(topic_len);
        let pkid = if qos > 0 {
            if body.len() < 2 {
                return None;
            }
            body.get_u16()
        } else {
            0
        };
        if version.is_v5() {
            let len = read_varint(&mut body)?;
            if body.len() < len {
                return None;
            }
            body.advance(len);
        }
        Some((qos, pkid, body))
    }

    /// The topic of a PUBLISH.
    pub fn publish_topic(&self) -> &[u8] {
        let len = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        &self.body[2..2 + len]
    }
}

fn read_varint(body: &mut Bytes) -> Option<usize> {
    let mut value = 0usize;
    for shift in [0, 7, 14, 21] {
        if body.is_empty() {
            return None;
        }
        let byte = body.get_u8();
        value |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Splits complete packets off a read buffer.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// The next complete frame already in the buffer.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut length = 0usize;
        let mut header_len = 1;
        loop {
            let Some(&byte) = self.buf.get(header_len) else { return Ok(None) };
            length |= usize::from(byte & 0x7F) << (7 * (header_len - 1));
            header_len += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if header_len > 4 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad remaining length"));
            }
        }
        if self.buf.len() < header_len + length {
            return Ok(None);
        }
        let first = self.buf[0];
        let mut frame = self.buf.split_to(header_len + length);
        frame.advance(header_len);
        Ok(Some(Frame { packet_type: first >> 4, flags: first & 0x0F, body: frame.freeze() }))
    }

    /// The read buffer, for a caller that reads into it itself (a split socket).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        self.make_room();
        &mut self.buf
    }

    /// Idle connections keep a small buffer (there may be 10,000 of them); busy ones grow to 64 KiB.
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < 1024 {
            let grow = (self.buf.capacity() * 2).clamp(2048, 64 * 1024);
            self.buf.reserve(grow);
        }
    }

    /// Reads more bytes from the socket; `Ok(false)` when the peer closed it.
    pub async fn fill(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        self.make_room();
        Ok(stream.read_buf(&mut self.buf).await? > 0)
    }

    /// Waits for the next frame (with a deadline).
    pub async fn read_frame(&mut self, stream: &mut TcpStream, wait: Duration) -> io::Result<Frame> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(frame) = self.next_frame()? {
                    return Ok(frame);
                }
                if !self.fill(stream).await? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no packet in time"))?
    }
}

/// Distinct loopback source addresses for mass connections (127.0.0.2 – 127.0.0.251, rotating).
/// Real connect storms come from many hosts, and a broker may treat one address's burst of
/// logins differently (dynsec-broker caps pending verifications per address with failed logins).
pub fn source_address(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % 250) as u8))
}

/// Who the `index`-th client of a mass connection is: client id and optional username/password.
pub type Identity = (String, Option<(String, String)>);

/// Connects `count` clients, at most `concurrency` handshakes in flight, each from
/// [`source_address`]`(index)`. Returns the connected sockets (as std sockets, so they can
/// outlive the caller's runtime; nobody reads them) and how many connections failed.
pub async fn connect_many(
    addr: SocketAddr,
    version: Version,
    count: usize,
    concurrency: usize,
    wait: Duration,
    identity: impl Fn(usize) -> Identity,
) -> (Vec<std::net::TcpStream>, usize) {
    use futures_util::StreamExt;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut connected = Vec::with_capacity(count);
    let (mut next, mut failed) = (0, 0);
    while next < count || !in_flight.is_empty() {
        while next < count && in_flight.len() < concurrency {
            let (client_id, credentials) = identity(next);
            let source = source_address(next);
            in_flight.push(async move {
                let connect = Connect::with_credentials(version, &client_id, credentials.as_ref());
                let client = Client::connect_from(addr, Some(source), &connect, wait).await.ok()?;
                client.stream.into_std().ok()
            });
            next += 1;
        }
        match in_flight.next().await {
            Some(Some(socket)) => connected.push(socket),
            Some(None) => failed += 1,
            None => {}
        }
    }
    (connected, failed)
}

/// A connected client: socket plus frame reader.
pub struct Client {
    pub stream: TcpStream,
    pub reader: FrameReader,
    pub version: Version,
}

/// Refusal or failure while connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("CONNACK refused with code {0}")]
    Refused(u8),
    #[error("expected CONNACK, got packet type {0}")]
    Unexpected(u8),
}

impl Client {
    /// Opens a TCP connection and completes the MQTT handshake.
    pub async fn connect(addr: SocketAddr, connect: &Connect<'_>, wait: Duration) -> Result<Client, ConnectError> {
        Self::connect_from(addr, None, connect, wait).await
    }

    /// Like [`Client::connect`], asking for a persistent session (see [`Connect::encode_session`]).
    pub async fn connect_persistent(
        addr: SocketAddr,
        connect: &Connect<'_>,
        session_expiry: u32,
        wait: Duration,
    ) -> Result<Client, ConnectError> {
        Self::handshake(addr, None, connect, Some(session_expiry), wait).await
    }

    /// Like [`Client::connect`], from the local address `source` when given (see [`source_address`]).
    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        connect: &Connect<'_>,
        wait: Duration,
    ) -> Result<Client, ConnectError> {
        Self::handshake(addr, source, connect, None, wait).await
    }

    async fn handshake(
        addr: SocketAddr,
        source: Option<IpAddr>,
        connect: &Connect<'_>,
        session_expiry: Option<u32>,
        wait: Duration,
    ) -> Result<Client, ConnectError> {
        let open = async {
            match source {
                Some(ip) if addr.is_ipv4() && ip.is_ipv4() => {
                    let socket = TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await
                }
                _ => TcpStream::connect(addr).await,
            }
        };
        let mut stream = tokio::time::timeout(wait, open)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        stream.set_nodelay(true)?;
        let mut buf = BytesMut::with_capacity(128);
        connect.encode_session(&mut buf, session_expiry);
        stream.write_all(&buf).await?;
        let mut reader = FrameReader::default();
        let frame = reader.read_frame(&mut stream, wait).await?;
        if frame.packet_type != CONNACK {
            return Err(ConnectError::Unexpected(frame.packet_type));
        }
        if frame.connack_code() != 0 {
            return Err(ConnectError::Refused(frame.connack_code()));
        }
        Ok(Client { stream, reader, version: connect.version })
    }

    /// Subscribes to one filter and waits for the SUBACK; returns its code.
    pub async fn subscribe(&mut self, filter: &str, qos: u8, wait: Duration) -> io::Result<u8> {
        let mut buf = BytesMut::with_capacity(64);
        subscribe(&mut buf, self.version, 1, filter, qos);
        self.stream.write_all(&buf).await?;
        loop {
            let frame = self.reader.read_frame(&mut self.stream, wait).await?;
            if frame.packet_type == SUBACK {
                return Ok(frame.suback_code(self.version));
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn next(&mut self, wait: Duration) -> io::Result<Frame> {
        self.reader.read_frame(&mut self.stream, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_frame_reader() {
        for version in [Version::V311, Version::V5] {
            let mut reader = FrameReader::default();
            publish(&mut reader.buf, version, b"bench/t", &[7u8; 300], 1, 42);
            puback(&mut reader.buf, 9);
            let frame = reader.next_frame().unwrap().unwrap();
            assert_eq!(frame.packet_type, PUBLISH);
            assert_eq!(frame.publish_topic(), b"bench/t");
            let (qos, pkid, payload) = frame.publish(version).unwrap();
            assert_eq!((qos, pkid, payload.len()), (1, 42, 300));
            let ack = reader.next_frame().unwrap().unwrap();
            assert_eq!((ack.packet_type, ack.pkid(), ack.ack_reason()), (PUBACK, 9, 0));
            assert!(reader.next_frame().unwrap().is_none());
        }
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() {
        let mut whole = BytesMut::new();
        publish(&mut whole, Version::V311, b"a", &[1u8; 200], 0, 0);
        let mut reader = FrameReader::default();
        reader.buf.put_slice(&whole[..2]);
        assert!(reader.next_frame().unwrap().is_none());
        reader.buf.put_slice(&whole[2..]);
        assert!(reader.next_frame().unwrap().is_some());
    }
}
