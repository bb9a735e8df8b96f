//! A version-neutral view of the few MQTT packets an admin client exchanges, encoded and decoded
//! with rumqttc's codecs (`rumqttc::mqttbytes::v4` for MQTT 3.1/3.1.1, `rumqttc::v5::mqttbytes::v5`
//! for MQTT 5). MQTT 3.1's CONNECT (protocol name `MQIsdp`, level 3) is the one packet rumqttc
//! cannot produce, so it is written here; every other 3.1 packet is identical to 3.1.1.

use bytes::{BufMut, Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::{self as v5bytes, v5};

use crate::options::ProtocolVersion;

/// The largest packet MQTT allows (remaining length 268,435,455 plus a 5-byte fixed header).
pub const MAX_PACKET_SIZE: usize = 268_435_460;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `code`: the v3 CONNACK return code or the v5 reason code.
    ConnAck {
        code: u8,
    },
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    Publish {
        topic: Vec<u8>,
        payload: Bytes,
        qos: u8,
        pkid: u16,
    },
    PubAck {
        pkid: u16,
        reason: u8,
    },
    PubRec {
        pkid: u16,
        reason: u8,
    },
    PubRel {
        pkid: u16,
    },
    PubComp {
        pkid: u16,
    },
    PingResp,
    /// v5 DISCONNECT from the server (v3 servers just close).
    Disconnect {
        reason: u8,
    },
    /// Anything a client should never receive (CONNECT, SUBSCRIBE, ...): ignored.
    Unexpected,
}

#[derive(Debug)]
pub enum DecodeError {
    /// More bytes are needed.
    Incomplete,
    Malformed(String),
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos_v5(level: u8) -> v5bytes::QoS {
    match level {
        0 => v5bytes::QoS::AtMostOnce,
        1 => v5bytes::QoS::AtLeastOnce,
        _ => v5bytes::QoS::ExactlyOnce,
    }
}

fn qos_level(qos: QoS) -> u8 {
    qos as u8
}

fn qos_level_v5(qos: v5bytes::QoS) -> u8 {
    qos as u8
}

/// Parameters of the CONNECT packet.
pub struct ConnectParams<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub keep_alive: u16,
}

pub fn encode_connect(version: ProtocolVersion, params: &ConnectParams<'_>, out: &mut BytesMut) -> Result<(), String> {
    match version {
        ProtocolVersion::V31 => {
            encode_connect_v31(params, out);
            Ok(())
        }
        ProtocolVersion::V311 => {
            let mut connect = v4::Connect::new(params.client_id);
            connect.keep_alive = params.keep_alive;
            connect.clean_session = true;
            if let Some(username) = params.username {
                connect.set_login(username, params.password.unwrap_or(""));
            }
            write_v4(&v4::Packet::Connect(connect), out)
        }
        ProtocolVersion::V5 => {
            let connect = v5::Connect {
                keep_alive: params.keep_alive,
                client_id: params.client_id.to_string(),
                clean_start: true,
                properties: None,
            };
            let login = params
                .username
                .map(|u| v5::Login { username: u.to_string(), password: params.password.unwrap_or("").to_string() });
            write_v5(&v5::Packet::Connect(connect, None, login), out)
        }
    }
}

/// MQTT 3.1 CONNECT: like 3.1.1 but protocol name `MQIsdp` and level 3.
fn encode_connect_v31(params: &ConnectParams<'_>, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    put_string(&mut body, b"MQIsdp");
    body.put_u8(3);
    let mut flags = 0x02; // clean session
    if params.username.is_some() {
        flags |= 0x80;
        if params.password.is_some() {
            flags |= 0x40;
        }
    }
    body.put_u8(flags);
    body.put_u16(params.keep_alive);
    put_string(&mut body, params.client_id.as_bytes());
    if let Some(username) = params.username {
        put_string(&mut body, username.as_bytes());
        if let Some(password) = params.password {
            put_string(&mut body, password.as_bytes());
        }
    }
    out.put_u8(0x10);
    put_remaining_length(out, body.len());
    out.extend_from_slice(&body);
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    // Lengths are bounded by the caller's checks (client ids, user names and passwords < 64 KiB).
    out.put_u16(s.len().min(u16::MAX as usize) as u16);
    out.extend_from_slice(&s[..s.len().min(u16::MAX as usize)]);
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

pub fn encode_subscribe(
    version: ProtocolVersion,
    pkid: u16,
    filter: &str,
    qos_level: u8,
    out: &mut BytesMut,
) -> Result<(), String> {
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            let mut subscribe = v4::Subscribe::new(filter, qos(qos_level));
            subscribe.pkid = pkid;
            write_v4(&v4::Packet::Subscribe(subscribe), out)
        }
        ProtocolVersion::V5 => {
            let mut subscribe = v5::Subscribe::new(v5::Filter::new(filter, qos_v5(qos_level)), None);
            subscribe.pkid = pkid;
            write_v5(&v5::Packet::Subscribe(subscribe), out)
        }
    }
}

pub fn encode_publish(
    version: ProtocolVersion,
    pkid: u16,
    topic: &str,
    payload: Bytes,
    qos_level: u8,
    out: &mut BytesMut,
) -> Result<(), String> {
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            let mut publish = v4::Publish::from_bytes(topic, qos(qos_level), payload);
            publish.pkid = if qos_level > 0 { pkid } else { 0 };
            write_v4(&v4::Packet::Publish(publish), out)
        }
        ProtocolVersion::V5 => {
            let mut publish = v5::Publish::new(topic, qos_v5(qos_level), payload, None);
            publish.pkid = if qos_level > 0 { pkid } else { 0 };
            write_v5(&v5::Packet::Publish(publish), out)
        }
    }
}

/// The acknowledgements a client sends: PUBACK / PUBREC for received messages, PUBREL after a
/// PUBREC, PUBCOMP after a PUBREL.
#[derive(Debug, Clone, Copy)]
pub enum Ack {
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
}

pub fn encode_ack(version: ProtocolVersion, ack: Ack, out: &mut BytesMut) -> Result<(), String> {
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => write_v4(
            &match ack {
                Ack::PubAck(id) => v4::Packet::PubAck(v4::PubAck::new(id)),
                Ack::PubRec(id) => v4::Packet::PubRec(v4::PubRec::new(id)),
                Ack::PubRel(id) => v4::Packet::PubRel(v4::PubRel::new(id)),
                Ack::PubComp(id) => v4::Packet::PubComp(v4::PubComp::new(id)),
            },
            out,
        ),
        ProtocolVersion::V5 => write_v5(
            &match ack {
                Ack::PubAck(id) => v5::Packet::PubAck(v5::PubAck::new(id, None)),
                Ack::PubRec(id) => v5::Packet::PubRec(v5::PubRec::new(id, None)),
                Ack::PubRel(id) => v5::Packet::PubRel(v5::PubRel::new(id, None)),
                Ack::PubComp(id) => v5::Packet::PubComp(v5::PubComp::new(id, None)),
            },
            out,
        ),
    }
}

pub fn encode_pingreq(version: ProtocolVersion, out: &mut BytesMut) -> Result<(), String> {
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => write_v4(&v4::Packet::PingReq, out),
        ProtocolVersion::V5 => write_v5(&v5::Packet::PingReq(v5::PingReq), out),
    }
}

pub fn encode_disconnect(version: ProtocolVersion, out: &mut BytesMut) -> Result<(), String> {
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => write_v4(&v4::Packet::Disconnect, out),
        ProtocolVersion::V5 => write_v5(
            &v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::NormalDisconnection,
                properties: None,
            }),
            out,
        ),
    }
}

fn write_v4(packet: &v4::Packet, out: &mut BytesMut) -> Result<(), String> {
    packet.write(out, MAX_PACKET_SIZE).map(|_| ()).map_err(|e| e.to_string())
}

fn write_v5(packet: &v5::Packet, out: &mut BytesMut) -> Result<(), String> {
    packet.write(out, None).map(|_| ()).map_err(|e| e.to_string())
}

/// Takes one complete packet off the front of `buffer`.
pub fn decode(version: ProtocolVersion, buffer: &mut BytesMut) -> Result<Incoming, DecodeError> {
    match version {
        ProtocolVersion::V31 | ProtocolVersion::V311 => match v4::Packet::read(buffer, MAX_PACKET_SIZE) {
            Ok(packet) => Ok(from_v4(packet)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Err(DecodeError::Incomplete),
            Err(e) => Err(DecodeError::Malformed(e.to_string())),
        },
        ProtocolVersion::V5 => match v5::Packet::read(buffer, Some(MAX_PACKET_SIZE as u32)) {
            Ok(packet) => Ok(from_v5(packet)),
            Err(v5bytes::Error::InsufficientBytes(_)) => Err(DecodeError::Incomplete),
            Err(e) => Err(DecodeError::Malformed(e.to_string())),
        },
    }
}

fn from_v4(packet: v4::Packet) -> Incoming {
    match packet {
        v4::Packet::ConnAck(ack) => Incoming::ConnAck { code: ack.code as u8 },
        v4::Packet::SubAck(ack) => Incoming::SubAck {
            pkid: ack.pkid,
            codes: ack
                .return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => qos_level(*q),
                    v4::SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
        },
        v4::Packet::Publish(p) => {
            Incoming::Publish { topic: p.topic.into_bytes(), payload: p.payload, qos: qos_level(p.qos), pkid: p.pkid }
        }
        v4::Packet::PubAck(a) => Incoming::PubAck { pkid: a.pkid, reason: 0 },
        v4::Packet::PubRec(a) => Incoming::PubRec { pkid: a.pkid, reason: 0 },
        v4::Packet::PubRel(a) => Incoming::PubRel { pkid: a.pkid },
        v4::Packet::PubComp(a) => Incoming::PubComp { pkid: a.pkid },
        v4::Packet::PingResp => Incoming::PingResp,
        _ => Incoming::Unexpected,
    }
}

fn from_v5(packet: v5::Packet) -> Incoming {
    match packet {
        v5::Packet::ConnAck(ack) => Incoming::ConnAck { code: connack_code_v5(ack.code) },
        v5::Packet::SubAck(ack) => {
            Incoming::SubAck { pkid: ack.pkid, codes: ack.return_codes.iter().map(|c| suback_code_v5(*c)).collect() }
        }
        v5::Packet::Publish(p) => {
            Incoming::Publish { topic: p.topic.to_vec(), payload: p.payload, qos: qos_level_v5(p.qos), pkid: p.pkid }
        }
        v5::Packet::PubAck(a) => Incoming::PubAck { pkid: a.pkid, reason: puback_code_v5(a.reason) },
        v5::Packet::PubRec(a) => Incoming::PubRec { pkid: a.pkid, reason: pubrec_code_v5(a.reason) },
        v5::Packet::PubRel(a) => Incoming::PubRel { pkid: a.pkid },
        v5::Packet::PubComp(a) => Incoming::PubComp { pkid: a.pkid },
        v5::Packet::PingResp(_) => Incoming::PingResp,
        v5::Packet::Disconnect(d) => Incoming::Disconnect { reason: d.reason_code as u8 },
        _ => Incoming::Unexpected,
    }
}

fn connack_code_v5(code: v5::ConnectReturnCode) -> u8 {
    use v5::ConnectReturnCode as C;
    match code {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x01,
        C::BadClientId => 0x02,
        C::ServiceUnavailable => 0x03,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

fn suback_code_v5(code: v5::SubscribeReasonCode) -> u8 {
    use v5::SubscribeReasonCode as S;
    match code {
        S::Success(q) => qos_level_v5(q),
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn puback_code_v5(reason: v5::PubAckReason) -> u8 {
    use v5::PubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn pubrec_code_v5(reason: v5::PubRecReason) -> u8 {
    use v5::PubRecReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

/// mosquitto_connack_string: the text for an MQTT 3.x CONNACK return code.
pub fn connack_string(code: u8) -> &'static str {
    match code {
        0 => "Connection Accepted.",
        1 => "Connection Refused: unacceptable protocol version.",
        2 => "Connection Refused: identifier rejected.",
        3 => "Connection Refused: broker unavailable.",
        4 => "Connection Refused: bad user name or password.",
        5 => "Connection Refused: not authorised.",
        _ => "Connection Refused: unknown reason.",
    }
}

/// mosquitto_reason_string: the text for an MQTT 5 reason code.
pub fn reason_string(code: u8) -> &'static str {
    match code {
        0x00 => "Success",
        0x01 => "Granted QoS 1",
        0x02 => "Granted QoS 2",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x11 => "No subscription existed",
        0x18 => "Continue authentication",
        0x19 => "Re-authenticate",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8A => "Banned",
        0x8B => "Server shutting down",
        0x8C => "Bad authentication method",
        0x8D => "Keep Alive timeout",
        0x8E => "Session taken over",
        0x8F => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x92 => "Packet Identifier not found",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9E => "Shared Subscriptions not supported",
        0x9F => "Connection rate exceeded",
        0xA0 => "Maximum connect time",
        0xA1 => "Subscription identifiers not supported",
        0xA2 => "Wildcard Subscriptions not supported",
        _ => "Unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v31_connect_layout() {
        let mut out = BytesMut::new();
        let params = ConnectParams { client_id: "id", username: Some("u"), password: Some("p"), keep_alive: 60 };
        encode_connect(ProtocolVersion::V31, &params, &mut out).unwrap();
        let expected: &[u8] = b"\x10\x16\x00\x06MQIsdp\x03\xc2\x00\x3c\x00\x02id\x00\x01u\x00\x01p";
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn round_trip_of_each_version_publish() {
        for version in [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut out = BytesMut::new();
            encode_publish(version, 7, "a/b", Bytes::from_static(b"{}"), 1, &mut out).unwrap();
            let decoded = decode(version, &mut out).unwrap();
            assert_eq!(
                decoded,
                Incoming::Publish { topic: b"a/b".to_vec(), payload: Bytes::from_static(b"{}"), qos: 1, pkid: 7 }
            );
        }
    }

    #[test]
    fn partial_input_is_incomplete_and_garbage_is_malformed() {
        let mut partial = BytesMut::from(&b"\x30\x10\x00"[..]);
        assert!(matches!(decode(ProtocolVersion::V5, &mut partial), Err(DecodeError::Incomplete)));
        let mut garbage = BytesMut::from(&b"\x00\x00"[..]);
        assert!(matches!(decode(ProtocolVersion::V311, &mut garbage), Err(DecodeError::Malformed(_))));
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    /// xorshift: deterministic pseudo-random bytes, no dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn arbitrary_broker_bytes_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for round in 0..50_000u32 {
            let len = (next(&mut state) % 40) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            // Half of the inputs get a plausible fixed header so the packet bodies are exercised.
            if round % 2 == 0 && len >= 2 {
                let types = [0x20u8, 0x30, 0x32, 0x34, 0x40, 0x50, 0x62, 0x70, 0x90, 0xB0, 0xD0, 0xE0, 0xF0];
                bytes[0] = types[(next(&mut state) % types.len() as u64) as usize];
                bytes[1] = (len - 2) as u8;
            }
            for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
                let mut buffer = BytesMut::from(&bytes[..]);
                // Drain: decoding must either make progress, ask for more, or report malformed.
                for _ in 0..8 {
                    match decode(version, &mut buffer) {
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            }
        }
    }
}
