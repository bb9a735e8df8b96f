//! The MQTT 5 properties a message keeps across nodes (payload format, response topic,
//! correlation data, user properties, content type), in one NATS header. Header values may not
//! hold line breaks and these properties may hold anything, so the header is the hex of a
//! tag-length-value list. The message expiry travels in a header of its own, as seconds left;
//! topic aliases and subscription identifiers belong to one connection and never travel.

use bytes::Bytes;
use rumqttd::protocol::PublishProperties;

pub const HEADER: &str = "Dynsec-Props";

const FORMAT: u8 = 1;
const RESPONSE_TOPIC: u8 = 2;
const CORRELATION: u8 = 3;
const USER_KEY: u8 = 4;
const USER_VALUE: u8 = 5;
const CONTENT_TYPE: u8 = 6;

/// The header value for `properties`; `None` when none of them travels.
pub fn encode(properties: &PublishProperties) -> Option<String> {
    let mut out = Vec::new();
    let mut put = |tag: u8, bytes: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    if let Some(format) = properties.payload_format_indicator {
        put(FORMAT, &[format]);
    }
    if let Some(topic) = &properties.response_topic {
        put(RESPONSE_TOPIC, topic.as_bytes());
    }
    if let Some(data) = &properties.correlation_data {
        put(CORRELATION, data);
    }
    for (key, value) in &properties.user_properties {
        put(USER_KEY, key.as_bytes());
        put(USER_VALUE, value.as_bytes());
    }
    if let Some(content_type) = &properties.content_type {
        put(CONTENT_TYPE, content_type.as_bytes());
    }
    if out.is_empty() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Some(out.iter().flat_map(|b| [HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char]).collect())
}

/// The properties of a header value [`encode`] wrote; `None` for anything else.
pub fn decode(header: &str) -> Option<PublishProperties> {
    let hex = header.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes: Vec<u8> =
        hex.chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect::<Option<_>>()?;
    let mut properties = PublishProperties::default();
    let mut rest = &bytes[..];
    let mut pending_key = None;
    let text = |value: &[u8]| String::from_utf8(value.to_vec()).ok();
    while let Some((&tag, tail)) = rest.split_first() {
        let length = u32::from_be_bytes(tail.get(..4)?.try_into().ok()?) as usize;
        let value = tail.get(4..4 + length)?;
        rest = &tail[4 + length..];
        match tag {
            FORMAT => properties.payload_format_indicator = Some(*value.first()?),
            RESPONSE_TOPIC => properties.response_topic = Some(text(value)?),
            CORRELATION => properties.correlation_data = Some(Bytes::copy_from_slice(value)),
            USER_KEY => pending_key = Some(text(value)?),
            USER_VALUE => properties.user_properties.push((pending_key.take()?, text(value)?)),
            CONTENT_TYPE => properties.content_type = Some(text(value)?),
            _ => return None,
        }
    }
    Some(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_one_header() {
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            response_topic: Some("reply/\r\nto".into()),
            correlation_data: Some(Bytes::from_static(&[0, 255, 10])),
            user_properties: vec![("k".into(), "v1".into()), ("k".into(), "é\n".into())],
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let header = encode(&properties).unwrap();
        assert!(header.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode(&header), Some(properties));
        assert_eq!(encode(&PublishProperties { message_expiry_interval: Some(5), ..Default::default() }), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("0500000001"), None, "a value without its key");
    }
}
