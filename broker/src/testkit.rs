//! Test support (feature `testkit`): a raw MQTT client that writes exact bytes and reads frames
//! back without interpreting them, so tests can check reason codes, packet order and what a
//! misbehaving client gets; and (`sessions`) a session registry full of clients without sockets.
//! Not used by the broker itself.
//!
//! The client runs on a [`Wire`]: TCP here, websocket messages in the end-to-end tests' websocket
//! client, so that reading, cutting and expecting packets is written once for both.

pub mod sessions;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for waiting on something the test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to conclude that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(300);

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const UNSUBACK: u8 = 11;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// One packet as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub packet_type: u8,
    pub flags: u8,
    pub body: Bytes,
}

impl Frame {
    /// Packet id of an ack / SUBACK / UNSUBACK.
    pub fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// Reason code of a v5 PUBACK/PUBREC/PUBREL/PUBCOMP (0 when omitted), or of a DISCONNECT.
    pub fn reason(&self) -> u8 {
        match self.packet_type {
            DISCONNECT => self.body.first().copied().unwrap_or(0),
            CONNACK => self.body[1],
            _ => self.body.get(2).copied().unwrap_or(0),
        }
    }

    /// Return codes of a SUBACK / v5 UNSUBACK (after the properties for v5).
    pub fn codes(&self, v5: bool) -> Vec<u8> {
        let mut body = self.body.slice(2..);
        if v5 {
            let len = read_varint(&mut body);
            body.advance(len);
        }
        body.to_vec()
    }

    /// CONNACK session-present flag.
    pub fn session_present(&self) -> bool {
        self.body[0] & 1 == 1
    }

    /// Decodes a PUBLISH.
    pub fn publish(&self, v5: bool) -> Received {
        let qos = (self.flags >> 1) & 3;
        let mut body = self.body.clone();
        let topic_len = body.get_u16() as usize;
        let topic = String::from_utf8_lossy(&body.split_to(topic_len)).into_owned();
        let pkid = if qos > 0 { body.get_u16() } else { 0 };
        let mut properties = Bytes::new();
        if v5 {
            let len = read_varint(&mut body);
            properties = body.split_to(len);
        }
        Received { topic, qos, pkid, retain: self.flags & 1 == 1, dup: self.flags & 8 == 8, payload: body, properties }
    }
}

fn read_varint(body: &mut Bytes) -> usize {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let byte = body.get_u8();
        value |= ((byte & 0x7F) as usize) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub qos: u8,
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
    pub payload: Bytes,
    /// Raw v5 properties.
    pub properties: Bytes,
}

/// What a read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Frame(Frame),
    Closed,
    Timeout,
}

/// CONNECT parameters.
#[derive(Debug, Clone)]
pub struct Connect {
    /// 3 (MQTT 3.1), 4 (3.1.1) or 5.
    pub version: u8,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// (topic, payload, qos, retain)
    pub will: Option<(String, Vec<u8>, u8, bool)>,
    pub will_delay: Option<u32>,
    pub session_expiry: Option<u32>,
    pub max_packet_size: Option<u32>,
    /// v5 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// v5 Topic Alias Maximum (aliases the broker may use towards this client).
    pub topic_alias_max: Option<u16>,
}

impl Connect {
    pub fn new(version: u8, client_id: &str) -> Self {
        Connect {
            version,
            client_id: client_id.to_owned(),
            clean: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            will_delay: None,
            session_expiry: None,
            max_packet_size: None,
            receive_maximum: None,
            topic_alias_max: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let v5 = self.version == 5;
        let mut body = BytesMut::new();
        put_str(&mut body, if self.version == 3 { b"MQIsdp" } else { b"MQTT" });
        body.put_u8(self.version);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some((_, _, qos, retain)) = &self.will {
            flags |= 0x04 | (qos << 3) | if *retain { 0x20 } else { 0 };
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        body.put_u8(flags);
        body.put_u16(self.keep_alive);
        if v5 {
            let mut props = BytesMut::new();
            if let Some(expiry) = self.session_expiry {
                props.put_u8(17);
                props.put_u32(expiry);
            }
            if let Some(size) = self.max_packet_size {
                props.put_u8(39);
                props.put_u32(size);
            }
            if let Some(maximum) = self.receive_maximum {
                props.put_u8(33);
                props.put_u16(maximum);
            }
            if let Some(maximum) = self.topic_alias_max {
                props.put_u8(34);
                props.put_u16(maximum);
            }
            put_varint(&mut body, props.len());
            body.put_slice(&props);
        }
        put_str(&mut body, self.client_id.as_bytes());
        if let Some((topic, payload, _, _)) = &self.will {
            if v5 {
                let mut props = BytesMut::new();
                if let Some(delay) = self.will_delay {
                    props.put_u8(24);
                    props.put_u32(delay);
                }
                put_varint(&mut body, props.len());
                body.put_slice(&props);
            }
            put_str(&mut body, topic.as_bytes());
            put_str(&mut body, payload);
        }
        if let Some(username) = &self.username {
            put_str(&mut body, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_str(&mut body, password);
        }
        packet(0x10, &body)
    }
}

pub fn put_str(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

pub fn put_varint(buf: &mut BytesMut, value: usize) {
    crate::gate::codec::put_remaining_length(buf, value);
}

/// A packet from its first byte and body.
pub fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(byte1);
    put_varint(&mut out, body.len());
    out.put_slice(body);
    out.to_vec()
}

/// A PUBLISH (v5: with an empty property block, or `properties` when given).
pub fn publish(v5: bool, topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) -> Vec<u8> {
    publish_with(v5, topic, payload, qos, retain, false, pkid, &[])
}

/// A PUBLISH with every knob.
#[allow(clippy::too_many_arguments)]
pub fn publish_with(
    v5: bool,
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
    properties: &[u8],
) -> Vec<u8> {
    let mut body = BytesMut::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.put_u16(pkid);
    }
    if v5 {
        put_varint(&mut body, properties.len());
        body.put_slice(properties);
    }
    body.put_slice(payload);
    let byte1 = 0x30 | (qos << 1) | u8::from(retain) | if dup { 8 } else { 0 };
    packet(byte1, &body)
}

/// SUBSCRIBE with (filter, options byte) pairs.
pub fn subscribe(v5: bool, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    if v5 {
        body.put_u8(0);
    }
    for (filter, options) in filters {
        put_str(&mut body, filter.as_bytes());
        body.put_u8(*options);
    }
    packet(0x82, &body)
}

pub fn unsubscribe(v5: bool, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    if v5 {
        body.put_u8(0);
    }
    for filter in filters {
        put_str(&mut body, filter.as_bytes());
    }
    packet(0xA2, &body)
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP.
pub fn ack(packet_type: u8, pkid: u16) -> Vec<u8> {
    let byte1 = (packet_type << 4) | if packet_type == PUBREL { 2 } else { 0 };
    let [hi, lo] = pkid.to_be_bytes();
    vec![byte1, 2, hi, lo]
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}

pub fn disconnect() -> Vec<u8> {
    vec![0xE0, 0]
}

/// What a [`RawClient`] talks over: it writes bytes and reads what arrives next.
pub trait Wire: Send {
    /// Writes `bytes`. A failure is ignored: the broker may already have closed the connection,
    /// and tests look at what comes back.
    fn send(&mut self, bytes: &[u8]) -> impl Future<Output = ()> + Send;
    /// Appends what arrives next to `buf`; `false` once the connection has ended.
    fn receive(&mut self, buf: &mut BytesMut) -> impl Future<Output = bool> + Send;
}

impl Wire for TcpStream {
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.write_all(bytes).await;
    }

    async fn receive(&mut self, buf: &mut BytesMut) -> bool {
        buf.reserve(8192);
        matches!(self.read_buf(buf).await, Ok(read) if read > 0)
    }
}

/// A raw connection to a broker.
pub struct RawClient<W: Wire = TcpStream> {
    wire: W,
    buf: BytesMut,
    pub v5: bool,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr) -> RawClient {
        RawClient::try_open(addr).await.expect("connect to the broker")
    }

    /// Opens a TCP connection, reporting failure (for load programs that count errors).
    pub async fn try_open(addr: SocketAddr) -> std::io::Result<RawClient> {
        Ok(RawClient::on(TcpStream::connect(addr).await?))
    }

    /// Connects and returns the client and the CONNACK (or what came instead).
    pub async fn connect(addr: SocketAddr, connect: &Connect) -> (RawClient, Next) {
        let mut client = RawClient::open(addr).await;
        let reply = client.send_connect(connect).await;
        (client, reply)
    }

    /// Connects and asserts a successful CONNACK.
    pub async fn connected(addr: SocketAddr, connect: &Connect) -> RawClient {
        let mut client = RawClient::open(addr).await;
        client.send_connect_ok(connect).await;
        client
    }
}

impl<W: Wire> RawClient<W> {
    /// A client on an open connection, nothing sent yet.
    pub fn on(wire: W) -> RawClient<W> {
        RawClient { wire, buf: BytesMut::new(), v5: false }
    }

    /// The connection under the client (for what only it can send).
    pub fn wire(&mut self) -> &mut W {
        &mut self.wire
    }

    /// Sends CONNECT and returns what came back (the CONNACK or what came instead).
    pub async fn send_connect(&mut self, connect: &Connect) -> Next {
        self.v5 = connect.version == 5;
        self.send(&connect.encode()).await;
        self.next(WAIT).await
    }

    /// Sends CONNECT and asserts a successful CONNACK.
    pub async fn send_connect_ok(&mut self, connect: &Connect) {
        match self.send_connect(connect).await {
            Next::Frame(frame) if frame.packet_type == CONNACK && frame.reason() == 0 => {}
            other => panic!("CONNACK expected for {}, got {other:?}", connect.client_id),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.wire.send(bytes).await;
    }

    /// The next packet, `Closed` at end of stream, `Timeout` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                return Next::Frame(frame);
            }
            match tokio::time::timeout_at(deadline, self.wire.receive(&mut self.buf)).await {
                Err(_) => return Next::Timeout,
                Ok(false) => return Next::Closed,
                Ok(true) => {}
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let header = crate::gate::codec::peek_frame(&self.buf, usize::MAX).ok()??;
        let mut frame = self.buf.split_to(header.frame_len());
        frame.advance(header.header_len);
        Some(Frame { packet_type: header.byte1 >> 4, flags: header.byte1 & 0x0F, body: frame.freeze() })
    }

    /// The next packet, which must be of `packet_type`.
    pub async fn expect(&mut self, packet_type: u8) -> Frame {
        match self.next(WAIT).await {
            Next::Frame(frame) if frame.packet_type == packet_type => frame,
            other => panic!("expected packet type {packet_type}, got {other:?}"),
        }
    }

    /// The next PUBLISH, decoded.
    pub async fn expect_publish(&mut self) -> Received {
        let v5 = self.v5;
        self.expect(PUBLISH).await.publish(v5)
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn expect_quiet(&mut self) {
        match self.next(QUIET).await {
            Next::Timeout => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection; returns what came before.
    pub async fn expect_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next(WAIT).await {
                Next::Frame(frame) => frames.push(frame),
                Next::Closed => return frames,
                Next::Timeout => panic!("connection still open; received {frames:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        let bytes = subscribe(self.v5, pkid, filters);
        self.send(&bytes).await;
        let suback = self.expect(SUBACK).await;
        assert_eq!(suback.pkid(), pkid);
        suback.codes(self.v5)
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) {
        let bytes = publish(self.v5, topic, payload, qos, retain, pkid);
        self.send(&bytes).await;
    }

    /// A PINGREQ/PINGRESP round trip; returns what arrived before the PINGRESP.
    pub async fn ping(&mut self) -> Vec<Frame> {
        self.send(&pingreq()).await;
        let mut before = Vec::new();
        loop {
            match self.next(WAIT).await {
                Next::Frame(frame) if frame.packet_type == PINGRESP => return before,
                Next::Frame(frame) => before.push(frame),
                other => panic!("expected PINGRESP, got {other:?} after {before:?}"),
            }
        }
    }
}
