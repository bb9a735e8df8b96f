//! Malformed and out-of-place packets against the real `dynsec-broker` binary: each offending
//! connection is closed, a bystander keeps being served, and the broker never panics (the
//! harness checks its log when the broker is dropped).

use std::path::Path;

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::BrokerProcess;

fn broker() -> BrokerProcess {
    BrokerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")),
        "allow_anonymous true\nmax_packet_size 4096\ngate_connect_timeout 2\n",
    )
}

/// Opens a connection, sends `bytes` (after a CONNECT of `version`, if any) and expects the
/// broker to close it.
async fn expect_closed_after(broker: &BrokerProcess, version: Option<u8>, bytes: &[u8], case: &str) {
    let mut client = match version {
        Some(version) => RawClient::connected(broker.addr(), &Connect::new(version, &format!("bad-{case}"))).await,
        None => RawClient::open(broker.addr()).await,
    };
    client.send(bytes).await;
    let frames = client.expect_closed().await;
    assert!(
        frames.iter().all(|f| f.packet_type == testkit::DISCONNECT),
        "{case}: only a DISCONNECT may come back, got {frames:?}"
    );
}

#[tokio::test]
async fn malformed_input_closes_only_the_offending_connection() {
    let broker = broker();
    let mut bystander = RawClient::connected(broker.addr(), &Connect::new(5, "bystander")).await;
    bystander.subscribe(1, &[("ok/#", 1)]).await;

    // Random bytes instead of a CONNECT.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..20 {
        let bytes: Vec<u8> = (0..64 + round * 7)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut client = RawClient::open(broker.addr()).await;
        client.send(&bytes).await;
        match client.next(testkit::WAIT).await {
            Next::Closed => {}
            Next::Frame(frame) => assert_eq!(
                frame,
                testkit::Frame { packet_type: 2, flags: 0, body: vec![0, 1].into() },
                "only 'unsupported protocol'"
            ),
            Next::Timeout => panic!("random bytes left the connection open"),
        }
    }

    let connect = Connect::new(4, "truncated").encode();
    let cases: Vec<(&str, Option<u8>, Vec<u8>)> = vec![
        ("publish before connect", None, testkit::publish(false, "ok/x", b"x", 0, false, 0)),
        ("subscribe before connect", None, testkit::subscribe(false, 1, &[("ok/#", 0)])),
        ("truncated connect", None, connect[..connect.len() - 3].to_vec()),
        ("remaining length of 5 bytes", Some(4), vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        ("remaining length beyond max_packet_size", Some(5), vec![0x30, 0xFF, 0xFF, 0x7F]),
        ("second connect v4", Some(4), Connect::new(4, "again").encode()),
        ("second connect v5", Some(5), Connect::new(5, "again").encode()),
        ("invalid UTF-8 topic", Some(4), testkit::packet(0x30, &[0, 2, 0xC3, 0x28, b'x'])),
        ("invalid UTF-8 topic v5", Some(5), testkit::packet(0x30, &[0, 2, 0xC3, 0x28, 0, b'x'])),
        ("NUL in topic", Some(4), testkit::packet(0x30, &[0, 2, b'a', 0, b'x'])),
        ("wildcard topic", Some(4), testkit::publish(false, "ok/+", b"x", 0, false, 0)),
        ("wildcard topic v5", Some(5), testkit::publish(true, "ok/#", b"x", 0, false, 0)),
        ("empty topic without alias", Some(5), testkit::publish(true, "", b"x", 0, false, 0)),
        ("topic alias 0", Some(5), testkit::publish_with(true, "ok/x", b"x", 0, false, false, 0, &[35, 0, 0])),
        (
            "topic alias too large",
            Some(5),
            testkit::publish_with(true, "ok/x", b"x", 0, false, false, 0, &[35, 0, 200]),
        ),
        ("unknown alias", Some(5), testkit::publish_with(true, "", b"x", 0, false, false, 0, &[35, 0, 3])),
        (
            "subscription id in publish",
            Some(5),
            testkit::publish_with(true, "ok/x", b"x", 0, false, false, 0, &[11, 1]),
        ),
        ("QoS 3", Some(4), testkit::packet(0x36, &[0, 1, b'a', 0, 1])),
        ("QoS 1 without packet id", Some(4), testkit::packet(0x32, &[0, 1, b'a'])),
        ("packet id 0", Some(4), testkit::packet(0x32, &[0, 1, b'a', 0, 0, b'x'])),
        ("subscribe with flags 0", Some(4), testkit::packet(0x80, &[0, 1, 0, 1, b'a', 0])),
        ("subscribe without filters", Some(4), testkit::packet(0x82, &[0, 1])),
        ("subscribe QoS 3", Some(4), testkit::subscribe(false, 1, &[("ok", 3)])),
        ("CONNACK from a client", Some(5), vec![0x20, 3, 0, 0, 0]),
        ("UNSUBACK from a client", Some(5), vec![0xB0, 4, 0, 1, 0, 0]),
        ("SUBACK from a client", Some(4), vec![0x90, 3, 0, 1, 0]),
        ("PINGRESP from a client", Some(4), vec![0xD0, 0]),
        ("AUTH packet", Some(5), vec![0xF0, 0]),
        ("reserved type 0", Some(4), vec![0x00, 0]),
        ("truncated field in publish", Some(4), testkit::packet(0x30, &[0, 9, b'a'])),
        ("v5 property length beyond packet", Some(5), testkit::packet(0x30, &[0, 1, b'a', 9, 1])),
        ("v5 unknown property", Some(5), testkit::packet(0x30, &[0, 1, b'a', 2, 0x7F, 0, b'x'])),
    ];
    for (case, version, bytes) in cases {
        expect_closed_after(&broker, version, &bytes, case).await;
        bystander.ping().await;
    }

    // A truncated packet that never completes: the keepalive closes the connection.
    let mut connect = Connect::new(4, "stalled");
    connect.keep_alive = 1;
    let mut stalled = RawClient::connected(broker.addr(), &connect).await;
    stalled.send(&[0x30, 50, 0, 1, b'a']).await;
    assert!(stalled.expect_closed().await.is_empty());

    // A connection that never sends its CONNECT: the connect timeout closes it.
    let mut silent = RawClient::open(broker.addr()).await;
    assert_eq!(silent.next(testkit::WAIT).await, Next::Closed);

    // The bystander still publishes and receives.
    bystander.publish("ok/done", b"fine", 1, false, 9).await;
    let mut ack_seen = false;
    let mut message_seen = false;
    while !(ack_seen && message_seen) {
        let frame = match bystander.next(testkit::WAIT).await {
            Next::Frame(frame) => frame,
            other => panic!("bystander lost: {other:?}"),
        };
        match frame.packet_type {
            testkit::PUBACK => ack_seen = true,
            testkit::PUBLISH => {
                message_seen = true;
                let got = frame.publish(true);
                assert_eq!(&got.payload[..], b"fine");
                bystander.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
            }
            other => panic!("unexpected packet type {other}"),
        }
    }
    broker.assert_no_panic();
}
