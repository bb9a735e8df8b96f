//! Issue 15, item 11 and issue 21, item 4: a SUBSCRIBE or UNSUBSCRIBE filter that is not valid
//! MQTT UTF-8 (U+0000, C0 and C1 control characters, DEL, non-characters, ill-formed UTF-8:
//! invalid bytes, surrogates, overlong forms) and an UNSUBSCRIBE without filters close the
//! connection, v5 clients getting DISCONNECT 0x81 (malformed packet) first — what MQTT requires
//! and what mosquitto 2.0.11 and 2.1.2 do. The same raw packets go to the real `dynsec-broker`
//! binary and to both mosquitto versions.

use std::net::SocketAddr;
use std::path::Path;

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_21};

/// SUBSCRIBE or UNSUBSCRIBE with raw filter bytes (they may not be valid strings).
fn raw(packet_type: u8, v5: bool, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![0, 1]; // packet id 1
    if v5 {
        body.push(0); // no properties
    }
    for filter in filters {
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter);
        if packet_type == 0x82 {
            body.push(1); // QoS 1
        }
    }
    testkit::packet(packet_type, &body)
}

/// Filters MQTT forbids, by what is wrong with them (each sent after a valid filter: the packet as
/// a whole is refused).
const FORBIDDEN: [(&str, &[u8]); 11] = [
    ("U+0000", b"a\0b"),
    ("U+0001", b"a\x01b"),
    ("U+001F", b"a\x1f"),
    ("U+007F", b"a\x7f"),
    ("U+0085 (C1)", b"a\xc2\x85"),
    ("U+FFFF", b"a\xef\xbf\xbf"),
    ("U+FDD0", b"a\xef\xb7\x90"),
    ("U+1FFFE", b"a\xf0\x9f\xbf\xbe"),
    ("byte 0xFF", b"a\xff"),
    ("a surrogate", b"a\xed\xa0\x80"),
    ("an overlong '/'", b"a\xc0\xaf"),
];

fn cases(v5: bool) -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    for (what, filter) in FORBIDDEN {
        cases.push((format!("SUBSCRIBE a filter with {what}"), raw(0x82, v5, &[b"ok", filter])));
        cases.push((format!("UNSUBSCRIBE a filter with {what}"), raw(0xA2, v5, &[b"ok", filter])));
    }
    cases.push(("UNSUBSCRIBE without filters".to_owned(), raw(0xA2, v5, &[])));
    cases
}

/// Sends each case on its own connection; returns what each got before the close (`None`: the
/// connection stayed open).
async fn outcomes(addr: SocketAddr) -> Outcomes {
    let mut seen = Vec::new();
    for version in [4u8, 5] {
        for (case, bytes) in cases(version == 5) {
            let mut client = RawClient::connected(addr, &Connect::new(version, "malformed-filter")).await;
            client.send(&bytes).await;
            let mut frames = Vec::new();
            let closed = loop {
                match client.next(testkit::WAIT).await {
                    Next::Frame(frame) => frames.push((frame.packet_type, frame.body.to_vec())),
                    Next::Closed => break true,
                    Next::Timeout => break false,
                }
            };
            seen.push((format!("v{version}: {case}"), closed.then_some(frames)));
        }
    }
    seen
}

/// Per case: its name, and the frames (type, body) the broker sent before closing, or `None` if
/// it did not close.
type Outcomes = Vec<(String, Option<Vec<(u8, Vec<u8>)>>)>;

fn expected() -> Outcomes {
    let mut expected = Vec::new();
    for version in [4u8, 5] {
        for (case, _) in cases(version == 5) {
            let before_close = if version == 5 { vec![(testkit::DISCONNECT, vec![0x81])] } else { vec![] };
            expected.push((format!("v{version}: {case}"), Some(before_close)));
        }
    }
    expected
}

#[tokio::test]
async fn malformed_filters_and_empty_unsubscribe_close_the_connection() {
    let broker =
        BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), "allow_anonymous true\n");
    assert_eq!(outcomes(broker.addr()).await, expected());

    // Nothing else was affected: a subscriber still gets its messages.
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(4, "after")).await;
    assert_eq!(subscriber.subscribe(1, &[("after/x", 0)]).await, [0]);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, "after-pub")).await;
    publisher.publish("after/x", b"ok", 0, false, 0).await;
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"ok");
}

/// MQTT 3.1 did not require a filter in UNSUBSCRIBE: mosquitto answers an empty one, and so do we.
#[tokio::test]
async fn an_empty_unsubscribe_is_answered_in_mqtt_3_1() {
    let broker =
        BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), "allow_anonymous true\n");
    let mut client = RawClient::connected(broker.addr(), &Connect::new(3, "empty-unsub-31")).await;
    client.send(&raw(0xA2, false, &[])).await;
    assert_eq!(client.expect(testkit::UNSUBACK).await.pkid(), 1);
}

#[tokio::test]
async fn mosquitto_2_1_does_the_same() {
    let Some(installed) = mosquitto_21("unsubscribe_and_filter_encoding::mosquitto_2_1_does_the_same") else { return };
    let dir = ScratchDir::new("mosquitto-21-malformed-filter");
    let mosquitto = Mosquitto::start_installed(Some(&installed), dir.path(), &["allow_anonymous true".to_owned()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], mosquitto.port()));
    assert_eq!(outcomes(addr).await, expected());
    let mut client = RawClient::connected(addr, &Connect::new(3, "empty-unsub-31")).await;
    client.send(&raw(0xA2, false, &[])).await;
    assert_eq!(client.expect(testkit::UNSUBACK).await.pkid(), 1);
}

#[tokio::test]
async fn mosquitto_2_0_does_the_same() {
    let dir = ScratchDir::new("mosquitto-malformed-filter");
    let mosquitto = Mosquitto::start(dir.path(), &["allow_anonymous true".to_owned()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], mosquitto.port()));
    assert_eq!(outcomes(addr).await, expected());
    let mut client = RawClient::connected(addr, &Connect::new(3, "empty-unsub-31")).await;
    client.send(&raw(0xA2, false, &[])).await;
    assert_eq!(client.expect(testkit::UNSUBACK).await.pkid(), 1);
}
