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
            assert_eq!(decode::<StoredMessage>(&encode(&parts)).unwrap(), stored);
            assert_eq!(parts.to_stored(), stored);
        }
    }
}
