//! The wire format, as a thin layer over `rumqttd::protocol::{v4, v5}`.
//!
//! - Framing: [`peek_frame`] finds a complete packet in the read buffer and enforces the maximum
//!   packet size before the body arrives.
//! - CONNECT is decoded here ([`decode_connect`]) because rumqttd's codecs know neither MQTT 3.1
//!   (`MQIsdp`, level 3) nor binary passwords, and one port serves 3.1, 3.1.1 and 5.
//! - Every other incoming packet is decoded by rumqttd's codec of the connection's version, one
//!   exactly-framed packet at a time (so a codec error can never desynchronise the stream).
//! - Outgoing PUBLISH uses rumqttd's encoders (properties stripped for 3.x: the v4 encoder panics
//!   on them); [`publish_meta`] reads QoS and packet id back from the encoded bytes, because
//!   rumqttd keeps those fields crate-private.
//! - The small fixed packets (CONNACK, acks, SUBACK, UNSUBACK, DISCONNECT, PINGRESP) are written
//!   here directly: no allocation, and rumqttd's v5 DISCONNECT encoder writes a stray property
//!   length byte after a non-zero reason code. Each counts as a packet sent in `metrics`.

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::{self, Packet, PublishProperties};

use crate::security::Protocol;

/// Largest remaining length MQTT can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const UNSUBSCRIBE: u8 = 10;
pub const AUTH: u8 = 15;

/// MQTT 5 reason codes the gate sends (in acknowledgements, SUBACK/UNSUBACK and DISCONNECT).
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
}

/// A complete packet found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub byte1: u8,
    /// Fixed header length (1 + remaining-length bytes).
    pub header_len: usize,
    pub remaining: usize,
}

impl FrameHeader {
    pub fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }

    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    TooLarge(usize),
    #[error("malformed remaining length")]
    MalformedLength,
    #[error("invalid fixed header flags {0:#04x}")]
    BadFlags(u8),
}

/// Looks for a complete packet at the start of `buf`. `Ok(None)`: more bytes needed. The size
/// limit (whole packet, as MQTT v5 defines it) is checked as soon as the length is known.
pub fn peek_frame(buf: &[u8], max_packet_size: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(&byte1) = buf.first() else { return Ok(None) };
    let mut remaining = 0usize;
    let mut shift = 0;
    let mut index = 1;
    loop {
        let Some(&byte) = buf.get(index) else { return Ok(None) };
        remaining |= ((byte & 0x7F) as usize) << shift;
        index += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(FrameError::MalformedLength);
        }
    }
    let header = FrameHeader { byte1, header_len: index, remaining };
    check_flags(byte1)?;
    if header.frame_len() > max_packet_size {
        return Err(FrameError::TooLarge(header.frame_len()));
    }
    if buf.len() < header.frame_len() { Ok(None) } else { Ok(Some(header)) }
}

/// MQTT's reserved fixed-header flags: 0b0010 for PUBREL/SUBSCRIBE/UNSUBSCRIBE, 0 for the rest
/// (PUBLISH carries DUP/QoS/RETAIN and is checked by the decoder).
fn check_flags(byte1: u8) -> Result<(), FrameError> {
    let flags = byte1 & 0x0F;
    let ok = match byte1 >> 4 {
        PUBLISH => true,
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => flags == 0b0010,
        _ => flags == 0,
    };
    if ok { Ok(()) } else { Err(FrameError::BadFlags(byte1)) }
}

/// Decodes one complete frame of a packet a client may send after CONNECT, with rumqttd's codec
/// for `protocol`. Other packet types are refused here: rumqttd's v5 decoder reaches
/// `unreachable!()` on CONNACK and UNSUBACK.
pub fn decode(protocol: Protocol, mut frame: BytesMut) -> Result<Packet, protocol::Error> {
    use protocol::Protocol as _;
    let packet_type = frame.first().map_or(0, |b| b >> 4);
    if !matches!(packet_type, 3..=8 | 10 | 12 | 14) {
        return Err(protocol::Error::InvalidPacketType(packet_type));
    }
    let limit = frame.len();
    match protocol {
        Protocol::V5 => protocol::v5::V5.read_mut(&mut frame, limit),
        Protocol::V31 | Protocol::V311 => protocol::v4::V4.read_mut(&mut frame, limit),
    }
}

/// A decoded CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    /// Zero-length usernames are `None` (mosquitto treats them as absent).
    pub username: Option<String>,
    /// Zero-length passwords are `None`.
    pub password: Option<Vec<u8>>,
    pub will: Option<Will>,
    /// v5 session expiry interval (0 for 3.x).
    pub session_expiry: u32,
    /// v5 Maximum Packet Size the client accepts.
    pub max_packet_size: Option<u32>,
    /// v5 Receive Maximum (65535 when absent).
    pub receive_maximum: u16,
    /// v5 Authentication Method (enhanced authentication, unsupported).
    pub auth_method: Option<String>,
    /// v5 Topic Alias Maximum: how many topic aliases the client accepts from the broker.
    pub topic_alias_max: u16,
}

/// The will of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// v5 Will Delay Interval, seconds.
    pub delay: u32,
    pub properties: Option<PublishProperties>,
}

/// Why a CONNECT was not accepted as a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Protocol name `MQTT` with a level we do not speak: answer CONNACK 1 and close.
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    /// The will topic is under `$CONTROL/`: close without CONNACK (mosquitto 2.0.16+).
    #[error("will topic under $CONTROL/")]
    ControlWill,
    /// Anything else: close without CONNACK.
    #[error("malformed CONNECT: {0}")]
    Malformed(&'static str),
}

/// Cursor over a packet body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type ReadResult<T> = Result<T, ConnectError>;

impl<'a> Reader<'a> {
    fn u8(&mut self) -> ReadResult<u8> {
        let byte = *self.buf.get(self.pos).ok_or(ConnectError::Malformed("truncated"))?;
        self.pos += 1;
        Ok(byte)
    }

    fn u16(&mut self) -> ReadResult<u16> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> ReadResult<u32> {
        Ok(u32::from_be_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }

    fn varint(&mut self) -> ReadResult<usize> {
        let mut value = 0usize;
        for shift in [0, 7, 14, 21] {
            let byte = self.u8()?;
            value |= ((byte & 0x7F) as usize) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ConnectError::Malformed("bad variable byte integer"))
    }

    fn binary(&mut self) -> ReadResult<&'a [u8]> {
        let len = self.u16()? as usize;
        let end = self.pos.checked_add(len).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(ConnectError::Malformed("length beyond packet"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn string(&mut self) -> ReadResult<String> {
        let bytes = self.binary()?;
        dynsec::topic::valid_mqtt_utf8(bytes).map(str::to_owned).ok_or(ConnectError::Malformed("invalid UTF-8 string"))
    }

    fn sub(&mut self, len: usize) -> ReadResult<Reader<'a>> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(ConnectError::Malformed("properties beyond packet"))?;
        let sub = Reader { buf: &self.buf[self.pos..end], pos: 0 };
        self.pos = end;
        Ok(sub)
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Decodes a complete CONNECT frame (fixed header included).
pub fn decode_connect(frame: &[u8]) -> Result<Connect, ConnectError> {
    let header = match peek_frame(frame, usize::MAX) {
        Ok(Some(header)) if header.packet_type() == CONNECT => header,
        _ => return Err(ConnectError::Malformed("not a CONNECT")),
    };
    let mut r = Reader { buf: &frame[header.header_len..header.frame_len()], pos: 0 };
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (name, level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        (b"MQTT", other) | (b"MQIsdp", other) => return Err(ConnectError::UnsupportedLevel(other)),
        _ => return Err(ConnectError::Malformed("unknown protocol name")),
    };
    let v5 = protocol == Protocol::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(ConnectError::Malformed("reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(ConnectError::Malformed("will flags without a will"));
    }
    if will_qos > 2 {
        return Err(ConnectError::Malformed("will QoS 3"));
    }
    if has_password && !has_username && !v5 {
        return Err(ConnectError::Malformed("password without username"));
    }
    let keep_alive = r.u16()?;

    let mut connect = Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id: String::new(),
        username: None,
        password: None,
        will: None,
        session_expiry: 0,
        max_packet_size: None,
        receive_maximum: u16::MAX,
        auth_method: None,
        topic_alias_max: 0,
    };
    if v5 {
        let len = r.varint()?;
        let mut props = r.sub(len)?;
        while !props.done() {
            match props.u8()? {
                17 => connect.session_expiry = props.u32()?,
                33 => {
                    connect.receive_maximum = props.u16()?;
                    if connect.receive_maximum == 0 {
                        return Err(ConnectError::Malformed("receive maximum 0"));
                    }
                }
                39 => {
                    let size = props.u32()?;
                    if size == 0 {
                        return Err(ConnectError::Malformed("maximum packet size 0"));
                    }
                    connect.max_packet_size = Some(size);
                }
                34 => connect.topic_alias_max = props.u16()?,
                23 | 25 => {
                    if props.u8()? > 1 {
                        return Err(ConnectError::Malformed("request information flag not 0 or 1"));
                    }
                }
                38 => {
                    props.string()?;
                    props.string()?;
                }
                21 => connect.auth_method = Some(props.string()?),
                22 => {
                    props.binary()?;
                }
                _ => return Err(ConnectError::Malformed("invalid CONNECT property")),
            }
        }
    }

    connect.client_id = r.string()?;
    if has_will {
        let mut delay = 0;
        let mut properties = None;
        if v5 {
            let len = r.varint()?;
            let mut props = r.sub(len)?;
            let mut p = PublishProperties::default();
            let mut any = false;
            while !props.done() {
                any = true;
                match props.u8()? {
                    24 => delay = props.u32()?,
                    1 => p.payload_format_indicator = Some(props.u8()?),
                    2 => p.message_expiry_interval = Some(props.u32()?),
                    3 => p.content_type = Some(props.string()?),
                    8 => p.response_topic = Some(props.string()?),
                    9 => p.correlation_data = Some(Bytes::copy_from_slice(props.binary()?)),
                    38 => p.user_properties.push((props.string()?, props.string()?)),
                    _ => return Err(ConnectError::Malformed("invalid will property")),
                }
            }
            if any && p != PublishProperties::default() {
                properties = Some(p);
            }
        }
        let topic = r.string()?;
        if !dynsec::topic::valid_topic(&topic) {
            return Err(ConnectError::Malformed("invalid will topic"));
        }
        if topic.starts_with("$CONTROL/") {
            return Err(ConnectError::ControlWill);
        }
        let payload = Bytes::copy_from_slice(r.binary()?);
        connect.will = Some(Will { topic, payload, qos: will_qos, retain: will_retain, delay, properties });
    }
    if has_username {
        let username = r.string()?;
        connect.username = (!username.is_empty()).then_some(username);
    }
    if has_password {
        let password = r.binary()?;
        connect.password = (!password.is_empty()).then(|| password.to_vec());
    }
    if !r.done() {
        return Err(ConnectError::Malformed("bytes after the payload"));
    }
    Ok(connect)
}

/// Appends MQTT's variable byte integer encoding of `len`.
pub fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// CONNACK properties the gate sends to v5 clients.
#[derive(Debug, Clone, Default)]
pub struct ConnAckProps<'a> {
    pub assigned_client_id: Option<&'a str>,
    pub topic_alias_max: u16,
    pub max_packet_size: Option<u32>,
    pub server_keep_alive: Option<u16>,
    /// The broker's Receive Maximum (omitted: 65535).
    pub receive_maximum: Option<u16>,
    /// `retain_available false`: Retain Available 0 (omitted: retained messages are available).
    pub retain_unavailable: bool,
}

/// CONNACK. `code` is the MQTT 3.x return code or the v5 reason code, per `protocol`.
pub fn connack(buf: &mut BytesMut, protocol: Protocol, session_present: bool, code: u8, props: &ConnAckProps) {
    crate::metrics::METRICS.packet_out();
    buf.put_u8(0x20);
    if protocol != Protocol::V5 {
        buf.put_slice(&[2, session_present as u8, code]);
        return;
    }
    let mut properties = BytesMut::with_capacity(32);
    if code == 0 {
        if let Some(id) = props.assigned_client_id {
            properties.put_u8(18);
            properties.put_u16(id.len() as u16);
            properties.put_slice(id.as_bytes());
        }
        if let Some(maximum) = props.receive_maximum {
            properties.put_u8(33);
            properties.put_u16(maximum);
        }
        if props.topic_alias_max > 0 {
            properties.put_u8(34);
            properties.put_u16(props.topic_alias_max);
        }
        if let Some(size) = props.max_packet_size {
            properties.put_u8(39);
            properties.put_u32(size);
        }
        if let Some(keep_alive) = props.server_keep_alive {
            properties.put_u8(19);
            properties.put_u16(keep_alive);
        }
        if props.retain_unavailable {
            properties.put_u8(37);
            properties.put_u8(0);
        }
    }
    let mut props_len = BytesMut::with_capacity(4);
    put_remaining_length(&mut props_len, properties.len());
    put_remaining_length(buf, 2 + props_len.len() + properties.len());
    buf.put_slice(&[session_present as u8, code]);
    buf.put_slice(&props_len);
    buf.put_slice(&properties);
}

/// PUBACK (type 4), PUBREC (5), PUBREL (6), PUBCOMP (7). A non-zero reason is only written for v5.
pub fn ack(buf: &mut BytesMut, protocol: Protocol, packet_type: u8, pkid: u16, reason: u8) {
    crate::metrics::METRICS.packet_out();
    let byte1 = (packet_type << 4) | if packet_type == PUBREL { 0b0010 } else { 0 };
    let [hi, lo] = pkid.to_be_bytes();
    if protocol == Protocol::V5 && reason != 0 {
        buf.put_slice(&[byte1, 3, hi, lo, reason]);
    } else {
        buf.put_slice(&[byte1, 2, hi, lo]);
    }
}

/// SUBACK with one return/reason code per filter.
pub fn suback(buf: &mut BytesMut, protocol: Protocol, pkid: u16, codes: &[u8]) {
    crate::metrics::METRICS.packet_out();
    let v5 = protocol == Protocol::V5;
    buf.put_u8(0x90);
    put_remaining_length(buf, 2 + v5 as usize + codes.len());
    buf.put_u16(pkid);
    if v5 {
        buf.put_u8(0);
    }
    buf.put_slice(codes);
}

/// UNSUBACK; `codes` are only written for v5.
pub fn unsuback(buf: &mut BytesMut, protocol: Protocol, pkid: u16, codes: &[u8]) {
    crate::metrics::METRICS.packet_out();
    buf.put_u8(0xB0);
    if protocol != Protocol::V5 {
        buf.put_u8(2);
        buf.put_u16(pkid);
        return;
    }
    put_remaining_length(buf, 3 + codes.len());
    buf.put_u16(pkid);
    buf.put_u8(0);
    buf.put_slice(codes);
}

pub fn pingresp(buf: &mut BytesMut) {
    crate::metrics::METRICS.packet_out();
    buf.put_slice(&[0xD0, 0]);
}

/// v5 DISCONNECT with a reason code (3.x connections are simply closed).
pub fn disconnect(buf: &mut BytesMut, reason: u8) {
    crate::metrics::METRICS.packet_out();
    buf.put_slice(&[0xE0, 1, reason]);
}

/// QoS, packet id, DUP and RETAIN of an encoded PUBLISH (rumqttd keeps them crate-private).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishMeta {
    pub qos: u8,
    pub pkid: u16,
    pub dup: bool,
    pub retain: bool,
}

/// Reads QoS, packet id and the DUP and RETAIN flags from an encoded PUBLISH. `None` if the bytes are not one.
pub fn publish_meta(encoded: &[u8]) -> Option<PublishMeta> {
    let header = peek_frame(encoded, usize::MAX).ok()??;
    if header.packet_type() != PUBLISH {
        return None;
    }
    let qos = (header.byte1 >> 1) & 0x03;
    let (dup, retain) = (header.byte1 & 0x08 != 0, header.byte1 & 0x01 != 0);
    if qos == 0 {
        return Some(PublishMeta { qos, pkid: 0, dup, retain });
    }
    let topic_at = header.header_len;
    let topic_len = u16::from_be_bytes([*encoded.get(topic_at)?, *encoded.get(topic_at + 1)?]) as usize;
    let pkid_at = topic_at + 2 + topic_len;
    let pkid = u16::from_be_bytes([*encoded.get(pkid_at)?, *encoded.get(pkid_at + 1)?]);
    Some(PublishMeta { qos, pkid, dup, retain })
}

/// A PUBLISH the gate writes to a client, with the QoS, packet id and retain flag the gate
/// decided (rumqttd's `Publish` keeps QoS and packet id crate-private).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a [u8],
    pub payload: &'a [u8],
    pub qos: u8,
    pub pkid: u16,
    pub retain: bool,
}

/// Appends `message` to `buf` (for 3.x the properties are dropped) and returns what it was
/// written with. (Not counted in `metrics` here: the caller may still take it back.)
pub fn encode_delivery(
    buf: &mut BytesMut,
    protocol: Protocol,
    message: Outgoing<'_>,
    properties: Option<&PublishProperties>,
) -> PublishMeta {
    let mut props = BytesMut::new();
    if protocol == Protocol::V5
        && let Some(p) = properties
    {
        put_publish_properties(&mut props, p);
    }
    // (On the stack: this runs for every delivery.)
    let mut props_len = [0u8; 4];
    let props_len = if protocol == Protocol::V5 { varint(props.len(), &mut props_len) } else { &[][..] };
    let pkid_len = if message.qos > 0 { 2 } else { 0 };
    let remaining = 2 + message.topic.len() + pkid_len + props_len.len() + props.len() + message.payload.len();
    buf.reserve(5 + remaining);
    buf.put_u8((PUBLISH << 4) | (message.qos << 1) | u8::from(message.retain));
    put_remaining_length(buf, remaining);
    buf.put_u16(message.topic.len() as u16);
    buf.put_slice(message.topic);
    if message.qos > 0 {
        buf.put_u16(message.pkid);
    }
    buf.put_slice(props_len);
    buf.put_slice(&props);
    buf.put_slice(message.payload);
    let pkid = if message.qos > 0 { message.pkid } else { 0 };
    PublishMeta { qos: message.qos, pkid, dup: false, retain: message.retain }
}

/// `value` as an MQTT variable byte integer, in `out`.
fn varint(mut value: usize, out: &mut [u8; 4]) -> &[u8] {
    let mut len = 0;
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out[len] = byte;
        len += 1;
        if value == 0 || len == out.len() {
            return &out[..len];
        }
    }
}

/// MQTT 5 §3.3.2.3: the PUBLISH properties, in the order the specification lists them (user
/// properties in the order they came).
fn put_publish_properties(out: &mut BytesMut, p: &PublishProperties) {
    fn put_str(out: &mut BytesMut, id: u8, text: &[u8]) {
        out.put_u8(id);
        out.put_u16(text.len() as u16);
        out.put_slice(text);
    }
    if let Some(format) = p.payload_format_indicator {
        out.put_slice(&[1, format]);
    }
    if let Some(expiry) = p.message_expiry_interval {
        out.put_u8(2);
        out.put_u32(expiry);
    }
    if let Some(alias) = p.topic_alias {
        out.put_u8(35);
        out.put_u16(alias);
    }
    if let Some(topic) = &p.response_topic {
        put_str(out, 8, topic.as_bytes());
    }
    if let Some(data) = &p.correlation_data {
        put_str(out, 9, data);
    }
    for (key, value) in &p.user_properties {
        put_str(out, 38, key.as_bytes());
        out.put_u16(value.len() as u16);
        out.put_slice(value.as_bytes());
    }
    for &id in &p.subscription_identifiers {
        out.put_u8(11);
        put_remaining_length(out, id);
    }
    if let Some(content_type) = &p.content_type {
        put_str(out, 3, content_type.as_bytes());
    }
}

/// Appends an outgoing PUBLISH (from the router) to `buf`; for 3.x the properties are dropped.
/// (Not counted in `metrics` here: the caller may still take it back.) Returns the QoS and packet id it was encoded with, or `None` (buffer untouched) if it could not
/// be encoded.
pub fn encode_publish(
    buf: &mut BytesMut,
    protocol: Protocol,
    publish: protocol::Publish,
    properties: Option<PublishProperties>,
) -> Option<PublishMeta> {
    use protocol::Protocol as _;
    let start = buf.len();
    let written = match protocol {
        Protocol::V5 => protocol::v5::V5.write(Packet::Publish(publish, properties), buf),
        Protocol::V31 | Protocol::V311 => protocol::v4::V4.write(Packet::Publish(publish, None), buf),
    };
    match written.ok().and_then(|_| publish_meta(&buf[start..])) {
        Some(meta) => Some(meta),
        None => {
            buf.truncate(start);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remaining(len: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_remaining_length(&mut b, len);
        b.to_vec()
    }

    fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![byte1];
        out.extend(remaining(body.len()));
        out.extend_from_slice(body);
        out
    }

    fn s(text: &[u8]) -> Vec<u8> {
        let mut out = (text.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(text);
        out
    }

    fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = s(name);
        body.push(level);
        body.push(flags);
        body.extend_from_slice(&60u16.to_be_bytes());
        body.extend_from_slice(rest);
        body
    }

    #[test]
    fn deliveries_decode_as_written() {
        use rumqttd::protocol::Protocol as _;
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            topic_alias: Some(2),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: vec![("k2".into(), "v2".into()), ("k1".into(), "v1".into())],
            subscription_identifiers: vec![1, 300],
            content_type: Some("text/plain".into()),
        };
        for (protocol, qos) in [(Protocol::V5, 2), (Protocol::V5, 0), (Protocol::V311, 1), (Protocol::V311, 0)] {
            let mut buf = BytesMut::new();
            let message = Outgoing { topic: b"a/b", payload: b"hello", qos, pkid: 7, retain: true };
            let meta = encode_delivery(&mut buf, protocol, message, Some(&props));
            assert_eq!(publish_meta(&buf), Some(meta));
            let len = buf.len();
            let packet = match protocol {
                Protocol::V5 => protocol::v5::V5.read_mut(&mut buf, len),
                _ => protocol::v4::V4.read_mut(&mut buf, len),
            };
            let Ok(Packet::Publish(publish, decoded)) = packet else { panic!("{packet:?}") };
            assert_eq!((&publish.topic[..], &publish.payload[..], publish.retain), (&b"a/b"[..], &b"hello"[..], true));
            assert_eq!(decoded.as_ref(), (protocol == Protocol::V5).then_some(&props));
        }
    }

    #[test]
    fn frames_are_found_and_limited() {
        assert_eq!(peek_frame(&[], 100), Ok(None));
        assert_eq!(peek_frame(&[0x30], 100), Ok(None));
        assert_eq!(peek_frame(&[0x30, 0x80], 100), Ok(None));
        assert_eq!(peek_frame(&[0x30, 3, 0, 1], 100), Ok(None));
        let header = peek_frame(&[0x30, 3, 0, 1, b'a', 0xFF], 100).unwrap().unwrap();
        assert_eq!((header.header_len, header.remaining, header.frame_len()), (2, 3, 5));
        assert_eq!(peek_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 1], 100), Err(FrameError::MalformedLength));
        assert_eq!(peek_frame(&[0x30, 0xFF, 0x7F], 100), Err(FrameError::TooLarge(16386)));
        assert_eq!(peek_frame(&[0x80, 0], 100), Err(FrameError::BadFlags(0x80)));
        assert_eq!(peek_frame(&[0x62, 2, 0, 1], 100).unwrap().unwrap().remaining, 2);
    }

    #[test]
    fn connect_versions() {
        let body = connect_body(b"MQIsdp", 3, 0x02, &s(b"c1"));
        let c = decode_connect(&packet(0x10, &body)).unwrap();
        assert_eq!((c.protocol, c.client_id.as_str(), c.clean_start), (Protocol::V31, "c1", true));

        let mut rest = s(b"c2");
        rest.extend(s(b"user"));
        rest.extend(s(&[0xFF, 0x00, 0x80])); // binary password
        let c = decode_connect(&packet(0x10, &connect_body(b"MQTT", 4, 0xC0, &rest))).unwrap();
        assert_eq!(c.protocol, Protocol::V311);
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some(&[0xFF, 0x00, 0x80][..]));

        // v5 with session expiry, max packet size, will with delay
        let mut rest = vec![10, 17, 0, 0, 0, 30, 39, 0, 0, 1, 0];
        rest.extend(s(b"c3"));
        rest.extend([5, 24, 0, 0, 0, 2]);
        rest.extend(s(b"will/t"));
        rest.extend(s(b"bye"));
        let c = decode_connect(&packet(0x10, &connect_body(b"MQTT", 5, 0x04 | 0x08 | 0x20, &rest))).unwrap();
        assert_eq!(c.session_expiry, 30);
        assert_eq!(c.max_packet_size, Some(256));
        let will = c.will.unwrap();
        assert_eq!((will.topic.as_str(), will.qos, will.retain, will.delay), ("will/t", 1, true, 2));
    }

    #[test]
    fn bad_connects_are_refused() {
        let level6 = packet(0x10, &connect_body(b"MQTT", 6, 0x02, &s(b"c")));
        assert_eq!(decode_connect(&level6), Err(ConnectError::UnsupportedLevel(6)));
        let name = packet(0x10, &connect_body(b"MQXX", 4, 0x02, &s(b"c")));
        assert!(matches!(decode_connect(&name), Err(ConnectError::Malformed(_))));
        let reserved = packet(0x10, &connect_body(b"MQTT", 4, 0x03, &s(b"c")));
        assert!(matches!(decode_connect(&reserved), Err(ConnectError::Malformed(_))));
        let mut rest = s(b"c");
        rest.extend(s(b"$CONTROL/x"));
        rest.extend(s(b"m"));
        let control_will = packet(0x10, &connect_body(b"MQTT", 4, 0x06, &rest));
        assert_eq!(decode_connect(&control_will), Err(ConnectError::ControlWill));
        let mut rest = s(b"c");
        rest.extend(s(b"a/#"));
        rest.extend(s(b"m"));
        let wildcard_will = packet(0x10, &connect_body(b"MQTT", 4, 0x06, &rest));
        assert!(matches!(decode_connect(&wildcard_will), Err(ConnectError::Malformed(_))));
        let bad_utf8 = packet(0x10, &connect_body(b"MQTT", 4, 0x02, &s(&[0xC0, 0x80])));
        assert!(matches!(decode_connect(&bad_utf8), Err(ConnectError::Malformed(_))));
        let trailing = packet(0x10, &connect_body(b"MQTT", 4, 0x02, &[0, 1, b'c', 9]));
        assert!(matches!(decode_connect(&trailing), Err(ConnectError::Malformed(_))));
        let truncated = packet(0x10, &connect_body(b"MQTT", 4, 0x02, &[0, 5, b'c']));
        assert!(matches!(decode_connect(&truncated), Err(ConnectError::Malformed(_))));
    }

    #[test]
    fn encoders_write_mqtt() {
        let mut b = BytesMut::new();
        ack(&mut b, Protocol::V5, 4, 7, 0x87);
        ack(&mut b, Protocol::V311, 4, 7, 0x87);
        ack(&mut b, Protocol::V311, PUBREL, 9, 0);
        assert_eq!(&b[..], &[0x40, 3, 0, 7, 0x87, 0x40, 2, 0, 7, 0x62, 2, 0, 9]);
        let mut b = BytesMut::new();
        suback(&mut b, Protocol::V5, 1, &[0x87, 1]);
        suback(&mut b, Protocol::V311, 1, &[0x80]);
        assert_eq!(&b[..], &[0x90, 5, 0, 1, 0, 0x87, 1, 0x90, 3, 0, 1, 0x80]);
        let mut b = BytesMut::new();
        connack(&mut b, Protocol::V5, false, 0, &ConnAckProps { topic_alias_max: 10, ..Default::default() });
        assert_eq!(&b[..], &[0x20, 6, 0, 0, 3, 34, 0, 10]);
        let mut b = BytesMut::new();
        connack(&mut b, Protocol::V5, false, 0, &ConnAckProps { receive_maximum: Some(20), ..Default::default() });
        assert_eq!(&b[..], &[0x20, 6, 0, 0, 3, 33, 0, 20]);
        let mut b = BytesMut::new();
        connack(&mut b, Protocol::V311, true, 5, &ConnAckProps::default());
        unsuback(&mut b, Protocol::V5, 3, &[0x11]);
        disconnect(&mut b, 0x98);
        assert_eq!(&b[..], &[0x20, 2, 1, 5, 0xB0, 4, 0, 3, 0, 0x11, 0xE0, 1, 0x98]);
    }

    #[test]
    fn publish_round_trip_reads_meta() {
        let mut b = BytesMut::new();
        let frame = packet(0x34, &[0, 3, b'a', b'/', b'b', 0, 42, b'x']);
        let Packet::Publish(publish, props) = decode(Protocol::V311, BytesMut::from(&frame[..])).unwrap() else {
            panic!("not a publish")
        };
        let meta = encode_publish(&mut b, Protocol::V311, publish, props).unwrap();
        assert_eq!(meta, PublishMeta { qos: 2, pkid: 42, dup: false, retain: false });
        assert_eq!(&b[..], &frame[..]);
    }

    /// Random bytes must never panic the framing, CONNECT decoder or rumqttd's decoders.
    #[test]
    fn decoders_survive_random_input() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let packet_type = (round % 15 + 1) as u8;
            let flags = if matches!(packet_type, PUBREL | SUBSCRIBE | UNSUBSCRIBE) { 2 } else { 0 };
            if round % 3 == 0 && packet_type == PUBLISH {
                body.insert(0, 0);
            }
            let frame =
                packet((packet_type << 4) | flags | (next() as u8 & if packet_type == 3 { 0x0F } else { 0 }), &body);
            let _ = decode_connect(&frame);
            if let Ok(Some(header)) = peek_frame(&frame, 1 << 20)
                && header.packet_type() != CONNECT
            {
                for protocol in [Protocol::V311, Protocol::V5] {
                    let _ = decode(protocol, BytesMut::from(&frame[..header.frame_len()]));
                }
            }
        }
    }
}
