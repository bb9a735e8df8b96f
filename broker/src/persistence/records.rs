//! What the store keeps, record by record: a retained message, a persistent session (owner,
//! subscriptions with their options, expiry), a message queued for an offline session. Encoded
//! with postcard; the store's format key says which version of these types a file holds.

use rumqttd::protocol::PublishProperties;
use serde::{Deserialize, Serialize};

/// The v5 properties of a message that travel with it (Message Expiry is kept as an instant,
/// topic aliases and subscription identifiers belong to one connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProperties {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

impl StoredProperties {
    pub fn of(properties: Option<&PublishProperties>) -> Self {
        let Some(p) = properties else { return StoredProperties::default() };
        StoredProperties {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.as_ref().map(|data| data.to_vec()),
            user_properties: p.user_properties.clone(),
        }
    }

    /// The properties to route with (`None` when there are none).
    pub fn to_properties(&self) -> Option<PublishProperties> {
        if *self == StoredProperties::default() {
            return None;
        }
        Some(PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            content_type: self.content_type.clone(),
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone().map(Into::into),
            user_properties: self.user_properties.clone(),
            ..PublishProperties::default()
        })
    }
}

/// A message as stored: a topic's retained message, or one queued for an offline session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub topic: String,
    pub qos: u8,
    #[serde(with = "raw_bytes")]
    pub payload: Vec<u8>,
    /// The publisher's client id (No Local).
    pub publisher: String,
    /// When it expires, in milliseconds since the Unix epoch (v5 Message Expiry Interval).
    pub expires_at_unix_ms: Option<u64>,
    pub properties: StoredProperties,
}

/// A [`StoredMessage`] to encode straight from the parts the gate holds, without copying them
/// into one first. The same encoding (postcard writes a `&str` as it writes a `String`, a slice
/// as a `Vec`): what it encodes decodes as a `StoredMessage`.
#[derive(Debug, Serialize)]
pub struct MessageParts<'a> {
    pub topic: &'a str,
    pub qos: u8,
    #[serde(serialize_with = "raw_bytes::serialize")]
    pub payload: &'a [u8],
    pub publisher: &'a str,
    pub expires_at_unix_ms: Option<u64>,
    pub properties: PropertiesParts<'a>,
}

/// [`StoredProperties`] borrowed (see [`MessageParts`]).
#[derive(Debug, Default, Serialize)]
pub struct PropertiesParts<'a> {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<&'a str>,
    pub response_topic: Option<&'a str>,
    pub correlation_data: Option<&'a [u8]>,
    pub user_properties: &'a [(String, String)],
}

impl<'a> MessageParts<'a> {
    pub fn of(
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        publisher: &'a str,
        expires_at_unix_ms: Option<u64>,
        properties: Option<&'a PublishProperties>,
    ) -> Self {
        let properties = properties.map_or_else(PropertiesParts::default, |p| PropertiesParts {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.as_deref(),
            response_topic: p.response_topic.as_deref(),
            correlation_data: p.correlation_data.as_deref(),
            user_properties: &p.user_properties,
        });
        MessageParts { topic, qos, payload, publisher, expires_at_unix_ms, properties }
    }

    /// Its encoding into `out` (emptied first; its capacity kept between messages).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        *out = postcard::to_extend(self, std::mem::take(out)).unwrap_or_default();
    }

    /// Its encoding (a [`StoredMessage`]'s), into a buffer sized for it at once.
    pub fn encode(&self) -> Vec<u8> {
        let p = &self.properties;
        let properties = p.content_type.map_or(0, str::len)
            + p.response_topic.map_or(0, str::len)
            + p.correlation_data.map_or(0, <[u8]>::len)
            + p.user_properties.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>();
        // Lengths and small fields are varints of at most 10 bytes each.
        let size = self.topic.len() + self.payload.len() + self.publisher.len() + properties + 48;
        postcard::to_extend(self, Vec::with_capacity(size)).unwrap_or_default()
    }

    /// The owned message (kept in memory for a session whose queue the router does not hold).
    pub fn to_stored(&self) -> StoredMessage {
        let p = &self.properties;
        StoredMessage {
            topic: self.topic.to_owned(),
            qos: self.qos,
            payload: self.payload.to_vec(),
            publisher: self.publisher.to_owned(),
            expires_at_unix_ms: self.expires_at_unix_ms,
            properties: StoredProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.map(str::to_owned),
                response_topic: p.response_topic.map(str::to_owned),
                correlation_data: p.correlation_data.map(<[u8]>::to_vec),
                user_properties: p.user_properties.to_vec(),
            },
        }
    }
}

/// A will waiting for its will delay when its persistent session's client went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWill {
    /// Topic, payload, QoS, the client id as publisher, v5 properties (no expiry instant: a
    /// will's Message Expiry Interval counts from when it is published, `expiry_secs`).
    pub message: StoredMessage,
    pub retain: bool,
    pub expiry_secs: Option<u32>,
    /// When it is due (Unix ms): the will delay, or the session's end if that comes first.
    pub due_unix_ms: u64,
    /// The listener and username it was set under (its ACL is checked when it is published).
    pub listener: usize,
    pub username: Option<String>,
}

/// A subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// Retain Handling (0, 1, 2).
    pub retain_handling: u8,
    /// v5 subscription identifier.
    pub id: Option<usize>,
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The username it belongs to (a client id claimed by another username starts clean).
    pub owner: Option<String>,
    pub subscriptions: Vec<StoredSubscription>,
    /// Seconds it outlives its connection (`None`: until `persistent_client_expiration`).
    pub expiry: Option<u32>,
    /// When its client went offline (Unix ms); `None` while connected (after a crash: the
    /// moment the broker started again).
    pub offline_since_unix_ms: Option<u64>,
}

/// Byte strings written as one slice (postcard: a varint length, then the bytes) rather than
/// byte by byte as serde writes a `Vec<u8>` by default. The encoding is the same — postcard
/// writes a `u8` as one raw byte — so files written before read the same (the test
/// `byte_fields_encode_as_before`); what changes is the cost: one copy instead of a call and a
/// capacity check per byte (docs/persistence.md, "Where the gate's CPU goes").
pub mod raw_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, B: AsRef<[u8]> + ?Sized>(bytes: &B, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes.as_ref())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, B: From<Vec<u8>>>(deserializer: D) -> Result<B, D::Error> {
        read(deserializer).map(B::from)
    }

    fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }

            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain types into a vector cannot fail.
    postcard::to_stdvec(record).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Milliseconds since the Unix epoch (stored instants survive a restart; the gate's own clock,
/// `envelope::now_ms`, starts again at every start).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let message = StoredMessage {
            topic: "a/b".into(),
            qos: 1,
            payload: vec![0, 1, 2],
            publisher: "dev".into(),
            expires_at_unix_ms: Some(5),
            properties: StoredProperties { user_properties: vec![("k".into(), "v".into())], ..Default::default() },
        };
        assert_eq!(decode::<StoredMessage>(&encode(&message)).unwrap(), message);
        let session = StoredSession {
            owner: Some("u".into()),
            subscriptions: vec![StoredSubscription {
                filter: "a/#".into(),
                qos: 2,
                no_local: true,
                retain_as_published: false,
                retain_handling: 1,
                id: Some(7),
            }],
            expiry: None,
            offline_since_unix_ms: Some(9),
        };
        assert_eq!(decode::<StoredSession>(&encode(&session)).unwrap(), session);
        assert!(decode::<StoredSession>(&[0xff; 3]).is_err());
    }

    /// The byte fields as the previous version declared them (serde's default: a sequence of
    /// `u8`), to check that files written by it read the same, and that it could read ours.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct PreviousMessage {
        topic: String,
        qos: u8,
        payload: Vec<u8>,
        publisher: String,
        expires_at_unix_ms: Option<u64>,
        properties: StoredProperties,
    }

    #[test]
    fn byte_fields_encode_as_before() {
        for payload in [Vec::new(), vec![0, 1, 255], vec![7; 300], vec![9; 70_000]] {
            let previous = PreviousMessage {
                topic: "a/b".into(),
                qos: 1,
                payload: payload.clone(),
                publisher: "dev".into(),
                expires_at_unix_ms: Some(5),
                properties: StoredProperties::default(),
            };
            let message = StoredMessage {
                topic: "a/b".into(),
                qos: 1,
                payload: payload.clone(),
                publisher: "dev".into(),
                expires_at_unix_ms: Some(5),
                properties: StoredProperties::default(),
            };
            let old = encode(&previous);
            assert_eq!(encode(&message), old);
            assert_eq!(MessageParts::of("a/b", &payload, 1, "dev", Some(5), None).encode(), old);
            assert_eq!(decode::<StoredMessage>(&old).unwrap(), message, "the previous version's bytes read");
            assert_eq!(decode::<PreviousMessage>(&encode(&message)).unwrap(), previous);
        }
    }

    #[test]
    fn message_parts_encode_as_the_stored_message() {
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/1".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"id")),
            user_properties: vec![("k".into(), "v".into()), ("a".into(), "b".into())],
            message_expiry_interval: Some(9),
            ..PublishProperties::default()
        };
        for (expiry, properties) in [(None, None), (Some(1234), Some(&properties))] {
            let parts = MessageParts::of("a/b", b"payload", 2, "dev", expiry, properties);
            let stored = StoredMessage {
                topic: "a/b".into(),
                qos: 2,
                payload: b"payload".to_vec(),
                publisher: "dev".into(),
                expires_at_unix_ms: expiry,
                properties: StoredProperties::of(properties),
            };
            assert_eq!(encode(&parts), encode(&stored));
            assert_eq!(parts.encode(), encode(&stored));
            assert_eq!(decode::<StoredMessage>(&encode(&parts)).unwrap(), stored);
            assert_eq!(parts.to_stored(), stored);
        }
    }
}
