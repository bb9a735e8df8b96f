//! The envelope: what MQTT says about a message that rumqttd's router does not keep, carried
//! through the router in front of the payload and taken off on delivery.
//!
//! The router delivers every message at the subscription's QoS, with retain 0 on live
//! deliveries, to every subscriber including the publisher, and ages message expiry wrongly
//! (docs/rumqttd.md defects 13 and 14, docs/known-differences.md). The gate writes every PUBLISH
//! the router sees and reads every delivery it makes, so it stamps each message with what
//! delivery needs: the QoS and retain flag it was published with, who published it (No Local),
//! a per-publisher sequence (one copy per client when several of its subscriptions match), and
//! when it expires.
//!
//! Retained messages are the gate's (`routing::retained_index`): every message goes to the
//! router with retain 0 ([`router_packet`]), its retain flag in the stamp, so that rumqttd never
//! holds a retained message (docs/rumqttd.md defect 19).
//!
//! With persistence (`crate::persistence`), a message queued in the store for offline persistent
//! sessions carries its store sequence number, so that a session's acknowledgement removes the
//! stored copy; a stored message handed back to the router for one returning client is
//! addressed to it, and every other client drops it.
//!
//! Layout (big-endian): `MAGIC`, flags (bits 0-1 QoS, bit 2 retain, bit 3 expiry present, bit 4
//! queued, bit 5 addressed, bit 6 share group), publisher (8), origin connection (8), sequence
//! (8), [expires at, ms on the gate's clock (8)], [store sequence (8)], [addressee (8)], [share
//! group (8)], then the payload. The router's size accounting sees [`HEADER_MAX`] bytes more per
//! message at most.

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttd::protocol::{Packet, Publish, PublishProperties};

const MAGIC: u8 = 0xD5;
const QOS_MASK: u8 = 0b0000_0011;
const RETAIN: u8 = 0b0000_0100;
const EXPIRES: u8 = 0b0000_1000;
const QUEUED: u8 = 0b0001_0000;
const ADDRESSED: u8 = 0b0010_0000;
const SHARE_GROUP: u8 = 0b0100_0000;
const HEADER_MIN: usize = 2 + 3 * 8;
/// The most an envelope adds to a payload.
pub const HEADER_MAX: usize = HEADER_MIN + 4 * 8;

/// Who published a message, as No Local compares it: a keyed hash of the client id (the key is
/// random per process, so no client can choose an id that collides with another's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Publisher(u64);

impl Publisher {
    pub fn of(client_id: &str) -> Self {
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        Publisher(KEY.get_or_init(Default::default).hash_one(client_id))
    }
}

/// Milliseconds on the gate's clock (monotonic, from the first use in this process).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What the envelope says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The QoS it was published with.
    pub qos: u8,
    /// Its retain flag as published.
    pub retain: bool,
    pub publisher: Publisher,
    /// The connection that published it and its sequence there: together, the message's
    /// identity (all router copies of one message carry the same pair).
    pub origin: u64,
    pub sequence: u64,
    /// When it expires on [`now_ms`]'s clock (v5 Message Expiry Interval).
    pub expires_at_ms: Option<u64>,
    /// Its sequence number in the persistence store, when it is queued there for offline
    /// persistent sessions.
    pub queued: Option<u64>,
    /// The one client that may receive it (a stored message handed back to the router).
    pub addressee: Option<Publisher>,
    /// In a cluster, the `$share` group (its name's [`Publisher::of`]) that NATS gave this copy
    /// to (`cluster::shared_groups`): only that group's members take it, and only such copies
    /// reach shared subscriptions there.
    pub share_group: Option<Publisher>,
}

impl Stamp {
    /// Seconds left before it expires, rounded up; `Some(0)` once it has expired.
    pub fn expiry_left(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms.map(|at| at.saturating_sub(now_ms).div_ceil(1000).min(u64::from(u32::MAX)) as u32)
    }

    /// The identity shared by all router copies of this message.
    pub fn message_id(&self) -> (u64, u64) {
        (self.origin, self.sequence)
    }

    /// Unit tests' stamp: a live message from connection 1, sequence 1, without expiry.
    #[cfg(test)]
    pub fn for_test(qos: u8, retain: bool, from: &str) -> Stamp {
        Stamp {
            qos,
            retain,
            publisher: Publisher::of(from),
            origin: 1,
            sequence: 1,
            expires_at_ms: None,
            queued: None,
            addressee: None,
            share_group: None,
        }
    }
}

/// The payload to hand the router: `stamp` in front of `payload`.
pub fn seal(stamp: &Stamp, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_MAX + payload.len());
    let mut flags = stamp.qos & QOS_MASK;
    if stamp.retain {
        flags |= RETAIN;
    }
    if stamp.expires_at_ms.is_some() {
        flags |= EXPIRES;
    }
    if stamp.queued.is_some() {
        flags |= QUEUED;
    }
    if stamp.addressee.is_some() {
        flags |= ADDRESSED;
    }
    if stamp.share_group.is_some() {
        flags |= SHARE_GROUP;
    }
    out.put_u8(MAGIC);
    out.put_u8(flags);
    out.put_u64(stamp.publisher.0);
    out.put_u64(stamp.origin);
    out.put_u64(stamp.sequence);
    let words = [stamp.expires_at_ms, stamp.queued, stamp.addressee.map(|p| p.0), stamp.share_group.map(|p| p.0)];
    for word in words.into_iter().flatten() {
        out.put_u64(word);
    }
    out.put_slice(payload);
    out.freeze()
}

/// Takes the envelope off a payload the router delivers. `None` for a payload the gate did not
/// seal.
pub fn open(mut sealed: Bytes) -> Option<(Stamp, Bytes)> {
    if sealed.len() < HEADER_MIN || sealed[0] != MAGIC {
        return None;
    }
    let flags = sealed[1];
    let words = [EXPIRES, QUEUED, ADDRESSED, SHARE_GROUP].iter().filter(|&&bit| flags & bit != 0).count();
    if sealed.len() < HEADER_MIN + 8 * words {
        return None;
    }
    sealed.advance(2);
    let publisher = Publisher(sealed.get_u64());
    let origin = sealed.get_u64();
    let sequence = sealed.get_u64();
    let expires_at_ms = (flags & EXPIRES != 0).then(|| sealed.get_u64());
    let queued = (flags & QUEUED != 0).then(|| sealed.get_u64());
    let addressee = (flags & ADDRESSED != 0).then(|| Publisher(sealed.get_u64()));
    let share_group = (flags & SHARE_GROUP != 0).then(|| Publisher(sealed.get_u64()));
    let stamp = Stamp {
        qos: flags & QOS_MASK,
        retain: flags & RETAIN != 0,
        publisher,
        origin,
        sequence,
        expires_at_ms,
        queued,
        addressee,
        share_group,
    };
    Some((stamp, sealed))
}

/// The packet that routes one message: sealed, with retain 0 whatever the stamp says (the
/// router must not keep it: see the module documentation). The topic gets memory of its own, not
/// a slice of the read buffer the message arrived in: the router's log keeps a message until its
/// segment rolls over and the retained index keeps a retained one for as long as it stays
/// retained, and a slice would keep the publisher's whole read chunk alive with it
/// (docs/benchmarks.md, "The gate's memory per connection": ~1 KB per device of a fleet).
pub fn router_packet(topic: Bytes, payload: &[u8], stamp: Stamp, properties: Option<PublishProperties>) -> Packet {
    let Routable { topic, sealed, properties } = routable(topic, payload, stamp, properties);
    Packet::Publish(Publish::new(topic, sealed, false), properties)
}

/// A message as the router's system link takes it (`RoutingEngine::inject`, always retain 0).
pub struct Routable {
    pub topic: Bytes,
    pub sealed: Bytes,
    pub properties: Option<PublishProperties>,
}

/// [`router_packet`]'s parts.
pub fn routable(topic: Bytes, payload: &[u8], stamp: Stamp, properties: Option<PublishProperties>) -> Routable {
    let properties = properties.filter(|p| *p != PublishProperties::default());
    let topic = Bytes::copy_from_slice(&topic);
    Routable { topic, sealed: seal(&stamp, payload), properties }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(expires_at_ms: Option<u64>) -> Stamp {
        Stamp {
            qos: 2,
            retain: true,
            publisher: Publisher::of("dev1"),
            origin: 7,
            sequence: 9,
            expires_at_ms,
            queued: None,
            addressee: None,
            share_group: None,
        }
    }

    #[test]
    fn a_sealed_payload_opens_to_the_same_stamp_and_payload() {
        for expiry in [None, Some(123_456)] {
            for queued in [None, Some(77)] {
                for (addressee, share_group) in [(None, None), (Some(Publisher::of("sub")), Some(Publisher::of("g")))] {
                    for payload in [&b""[..], b"x", &[MAGIC; 300]] {
                        let stamp = Stamp { queued, addressee, share_group, ..stamp(expiry) };
                        let (got, body) = open(seal(&stamp, payload)).unwrap();
                        assert_eq!(got, stamp);
                        assert_eq!(&body[..], payload);
                    }
                }
            }
        }
    }

    #[test]
    fn unsealed_and_truncated_payloads_do_not_open() {
        assert!(open(Bytes::new()).is_none());
        assert!(open(Bytes::from_static(b"plain text from nowhere, long enough")).is_none());
        let sealed = seal(&stamp(Some(5)), b"");
        assert!(open(sealed.slice(..sealed.len() - 1)).is_none());
        let stamp = Stamp {
            queued: Some(1),
            addressee: Some(Publisher::of("a")),
            share_group: Some(Publisher::of("g")),
            ..stamp(None)
        };
        let sealed = seal(&stamp, b"");
        assert!(open(sealed.slice(..sealed.len() - 1)).is_none());
    }

    #[test]
    fn expiry_left_rounds_up_and_stops_at_zero() {
        let s = stamp(Some(10_000));
        assert_eq!(s.expiry_left(0), Some(10));
        assert_eq!(s.expiry_left(9_001), Some(1));
        assert_eq!(s.expiry_left(10_000), Some(0));
        assert_eq!(s.expiry_left(20_000), Some(0));
        assert_eq!(stamp(None).expiry_left(5), None);
    }

    #[test]
    fn the_router_never_gets_a_retained_message() {
        for (retain, payload) in [(true, &b"kept"[..]), (true, b""), (false, b"live")] {
            let stamp = Stamp { retain, ..stamp(None) };
            let Packet::Publish(publish, _) = router_packet(Bytes::from_static(b"t"), payload, stamp, None) else {
                panic!("not a publish")
            };
            assert!(!publish.retain, "retain {retain}, {} bytes", payload.len());
            let (got, body) = open(publish.payload).unwrap();
            assert_eq!((got.retain, &body[..]), (retain, payload), "the stamp carries it");
        }
    }

    #[test]
    fn publishers_are_told_apart_by_client_id() {
        assert_eq!(Publisher::of("a"), Publisher::of("a"));
        assert_ne!(Publisher::of("a"), Publisher::of("b"));
    }
}
