//! The fleet hub (`gate_fleet_hub true`, issue 22; broker/src/routing/hub/): clean sessions'
//! subscriptions served by the gate's fan-out from one router link, publishes through the
//! publisher pool. On the real binary with raw clients: delivery at QoS 0/1/2, the ACL on
//! delivery, No Local, retained messages on subscribe with Retain Handling, overlapping
//! subscriptions, the queue bound (drops counted in `$SYS`), back-pressure (a burst to a
//! subscriber that keeps up arrives whole; a stalled one holds the publisher for
//! `gate_backpressure_max_hold` at most), takeover, `$share` and persistent sessions beside the
//! hub, and the directive's errors.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::BrokerProcess;

const HUB: &str = "allow_anonymous true\ngate_fleet_hub true\n";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn broker(extra: &str) -> BrokerProcess {
    BrokerProcess::start(binary(), &format!("{HUB}{extra}"))
}

async fn v5(addr: SocketAddr, id: &str) -> RawClient {
    RawClient::connected(addr, &Connect::new(5, id)).await
}

async fn v311(addr: SocketAddr, id: &str) -> RawClient {
    RawClient::connected(addr, &Connect::new(4, id)).await
}

/// A v5 SUBSCRIBE of one filter with a Subscription Identifier; returns the SUBACK's codes.
async fn subscribe_with_id(client: &mut RawClient, pkid: u16, filter: &str, options: u8, id: u8) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(pkid);
    body.put_slice(&[2, 0x0B, id]);
    testkit::put_str(&mut body, filter.as_bytes());
    body.put_u8(options);
    client.send(&testkit::packet(0x82, &body)).await;
    let suback = client.expect(testkit::SUBACK).await;
    assert_eq!(suback.pkid(), pkid);
    suback.codes(true)
}

/// The Subscription Identifiers in raw v5 PUBLISH properties (one-byte ids only).
fn subscription_ids(mut properties: &[u8]) -> Vec<u8> {
    let mut ids = Vec::new();
    while properties.has_remaining() {
        match properties.get_u8() {
            0x0B => ids.push(properties.get_u8()),
            0x23 => {
                properties.get_u16();
            }
            0x02 => {
                properties.get_u32();
            }
            other => panic!("unexpected property {other:#x}"),
        }
    }
    ids
}

/// Publishes and waits until the broker has read it (a PINGREQ round trip).
async fn publish_read(client: &mut RawClient, topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) {
    client.publish(topic, payload, qos, retain, pkid).await;
    let before = client.ping().await;
    if qos == 2 {
        let pubrec = before.iter().find(|f| f.packet_type == testkit::PUBREC).expect("PUBREC");
        client.send(&testkit::ack(testkit::PUBREL, pubrec.pkid())).await;
        client.expect(testkit::PUBCOMP).await;
    }
}

#[tokio::test]
async fn hub_delivers_at_qos_0_1_and_2_with_the_gates_acknowledgements() {
    let broker = broker("");
    let mut sub = v5(broker.addr(), "sub").await;
    assert_eq!(sub.subscribe(1, &[("q/0", 0), ("q/1", 1), ("q/2", 2)]).await, [0, 1, 2]);
    let mut publisher = v5(broker.addr(), "pub").await;
    for (n, topic) in ["q/0", "q/1", "q/2"].iter().enumerate() {
        publish_read(&mut publisher, topic, b"m", 2, false, n as u16 + 1).await;
    }
    let zero = sub.expect_publish().await;
    assert_eq!((zero.topic.as_str(), zero.qos), ("q/0", 0));
    let one = sub.expect_publish().await;
    assert_eq!((one.topic.as_str(), one.qos), ("q/1", 1));
    sub.send(&testkit::ack(testkit::PUBACK, one.pkid)).await;
    let two = sub.expect_publish().await;
    assert_eq!((two.topic.as_str(), two.qos), ("q/2", 2));
    assert_ne!(two.pkid, 0);
    sub.send(&testkit::ack(testkit::PUBREC, two.pkid)).await;
    let pubrel = sub.expect(testkit::PUBREL).await;
    assert_eq!(pubrel.pkid(), two.pkid);
    sub.send(&testkit::ack(testkit::PUBCOMP, two.pkid)).await;
    // QoS 1 published to a QoS 2 subscription: delivered at 1.
    publish_read(&mut publisher, "q/2", b"n", 1, false, 9).await;
    let again = sub.expect_publish().await;
    assert_eq!(again.qos, 1);
    sub.send(&testkit::ack(testkit::PUBACK, again.pkid)).await;
    assert!(sub.ping().await.is_empty(), "nothing more");
    broker.assert_no_panic();
}

#[tokio::test]
async fn hub_deliveries_pass_the_acl_on_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read a/#\ntopic deny a/secret\ntopic write #\n").unwrap();
    let broker = broker(&format!("acl_file {}\n", acl.display()));
    let mut sub = v311(broker.addr(), "reader").await;
    assert_eq!(sub.subscribe(1, &[("a/#", 0)]).await, [0]);
    let mut publisher = v311(broker.addr(), "writer").await;
    publish_read(&mut publisher, "a/secret", b"no", 0, false, 0).await;
    publish_read(&mut publisher, "a/open", b"yes", 0, false, 0).await;
    let got = sub.expect_publish().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("a/open", &b"yes"[..]));
}

#[tokio::test]
async fn hub_keeps_no_local() {
    let broker = broker("");
    let mut me = v5(broker.addr(), "me").await;
    // Options: QoS 0, No Local.
    assert_eq!(me.subscribe(1, &[("nl/t", 0x04)]).await, [0]);
    publish_read(&mut me, "nl/t", b"own", 0, false, 0).await;
    let mut other = v5(broker.addr(), "other").await;
    publish_read(&mut other, "nl/t", b"theirs", 0, false, 0).await;
    let got = me.expect_publish().await;
    assert_eq!(&got.payload[..], b"theirs");
}

#[tokio::test]
async fn hub_sends_retained_messages_on_subscribe_as_retain_handling_says() {
    let broker = broker("");
    let mut publisher = v5(broker.addr(), "pub").await;
    publish_read(&mut publisher, "r/1", b"kept", 1, true, 1).await;
    publish_read(&mut publisher, "r/2", b"also", 0, true, 0).await;
    let mut sub = v5(broker.addr(), "sub").await;
    assert_eq!(sub.subscribe(1, &[("r/1", 1)]).await, [1]);
    let kept = sub.expect_publish().await;
    assert_eq!((kept.topic.as_str(), &kept.payload[..], kept.retain, kept.qos), ("r/1", &b"kept"[..], true, 1));
    sub.send(&testkit::ack(testkit::PUBACK, kept.pkid)).await;
    // Retain Handling 1 on the existing subscription: nothing.
    assert_eq!(sub.subscribe(2, &[("r/1", 0x11)]).await, [1]);
    // Retain Handling 2 on a new one: nothing either.
    assert_eq!(sub.subscribe(3, &[("r/+", 0x20)]).await, [0]);
    assert!(sub.ping().await.is_empty(), "no retained message for Retain Handling 1 and 2");
    // A wildcard with Retain Handling 0 gets both, with the retain flag.
    let mut wide = v5(broker.addr(), "wide").await;
    assert_eq!(wide.subscribe(1, &[("r/#", 0)]).await, [0]);
    let mut topics = [wide.expect_publish().await, wide.expect_publish().await];
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert!(topics.iter().all(|p| p.retain));
    assert_eq!((topics[0].topic.as_str(), topics[1].topic.as_str()), ("r/1", "r/2"));
    // A live message is not flagged retained (Retain As Published off); an empty retained
    // message clears the topic.
    publish_read(&mut publisher, "r/1", b"", 0, true, 0).await;
    let clear = wide.expect_publish().await;
    assert!(clear.payload.is_empty() && !clear.retain);
    let mut late = v5(broker.addr(), "late").await;
    assert_eq!(late.subscribe(1, &[("r/#", 0)]).await, [0]);
    let only = late.expect_publish().await;
    assert_eq!(only.topic, "r/2");
    assert!(late.ping().await.is_empty());
}

#[tokio::test]
async fn overlapping_hub_subscriptions_get_one_copy_at_the_highest_qos_with_every_id() {
    let broker = broker("");
    let mut sub = v5(broker.addr(), "sub").await;
    assert_eq!(subscribe_with_id(&mut sub, 1, "o/#", 1, 3).await, [1]);
    assert_eq!(subscribe_with_id(&mut sub, 2, "o/x", 2, 1).await, [2]);
    let mut publisher = v5(broker.addr(), "pub").await;
    publish_read(&mut publisher, "o/x", b"m", 2, false, 1).await;
    let got = sub.expect_publish().await;
    assert_eq!(got.qos, 2);
    assert_eq!(subscription_ids(&got.properties), [1, 3]);
    sub.send(&testkit::ack(testkit::PUBREC, got.pkid)).await;
    sub.expect(testkit::PUBREL).await;
    sub.send(&testkit::ack(testkit::PUBCOMP, got.pkid)).await;
    assert!(sub.ping().await.is_empty(), "one copy");
}

/// Reads `$SYS/broker/publish/messages/dropped` until it reaches `at_least` (bounded).
async fn dropped_reaches(addr: SocketAddr, at_least: u64) -> u64 {
    let mut monitor = v311(addr, "monitor").await;
    monitor.subscribe(1, &[("$SYS/broker/publish/messages/dropped", 0)]).await;
    let mut dropped = 0;
    for _ in 0..30 {
        let value = monitor.expect_publish().await;
        dropped = std::str::from_utf8(&value.payload).unwrap().parse().unwrap();
        if dropped >= at_least {
            break;
        }
    }
    dropped
}

#[tokio::test]
async fn a_full_hub_queue_drops_counts_in_sys_and_holds_the_publisher_only_for_the_maximum_hold() {
    // (A queue over half full holds publishers for at most a second here.)
    let broker = broker("max_queued_messages 10\nsys_interval 1\ngate_backpressure_max_hold 1\n");
    let mut connect = Connect::new(5, "slow");
    connect.receive_maximum = Some(1);
    let mut slow = RawClient::connected(broker.addr(), &connect).await;
    assert_eq!(slow.subscribe(1, &[("bound/t", 1)]).await, [1]);
    let mut publisher = v5(broker.addr(), "pub").await;
    for n in 1..=50u16 {
        publisher.publish("bound/t", format!("{n}").as_bytes(), 1, false, n).await;
    }
    let acks: Vec<_> = publisher.ping().await;
    assert_eq!(acks.iter().filter(|f| f.packet_type == testkit::PUBACK).count(), 50, "every publish acknowledged");
    // One in flight (Receive Maximum 1), ten queued, the other 39 dropped and counted.
    let dropped = dropped_reaches(broker.addr(), 39).await;
    let mut received = Vec::new();
    loop {
        match slow.next(Duration::from_secs(1)).await {
            Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
                let got = frame.publish(true);
                slow.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
                received.push(String::from_utf8(got.payload.to_vec()).unwrap());
            }
            Next::Frame(other) => panic!("unexpected {other:?}"),
            _ => break,
        }
    }
    // Each message either reached the client or was counted as dropped; what arrived came in
    // order, and at least the queue's ten.
    let numbers: Vec<u64> = received.iter().map(|n| n.parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order: {numbers:?}");
    assert!(numbers.len() >= 10, "{numbers:?}");
    assert_eq!(numbers.len() as u64 + dropped, 50, "received {numbers:?}, dropped {dropped}");
}

#[tokio::test]
async fn a_stalled_qos0_hub_subscriber_does_not_hold_the_publisher() {
    const BURST: u32 = 50_000;
    let broker = broker("gate_write_timeout 60\nsys_interval 1\ngate_backpressure_max_hold 1\n");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stalled = RawClient::on(socket.connect(broker.addr()).await.unwrap());
    stalled.send_connect_ok(&Connect::new(4, "stalled")).await;
    stalled.subscribe(1, &[("burst/t", 0)]).await;
    let mut reader = v311(broker.addr(), "reader").await;
    reader.subscribe(1, &[("burst/t", 0)]).await;
    let addr = broker.addr();
    // 100-byte messages: the burst (5.5 MB) is more than the kernel buffers of the stalled socket.
    let publisher = tokio::spawn(publish_burst(addr, BURST, 16 * 1024));
    // The reader keeps up; the publisher is read to its end meanwhile.
    let mut last = None;
    let mut count = 0u32;
    while let Next::Frame(frame) = reader.next(Duration::from_secs(3)).await {
        let index: u32 = std::str::from_utf8(&frame.publish(false).payload[..8]).unwrap().parse().unwrap();
        assert!(last.is_none_or(|l| index > l), "in order");
        last = Some(index);
        count += 1;
        if index == BURST - 1 {
            break;
        }
    }
    publisher.await.unwrap();
    assert!(count > 0);
    assert!(dropped_reaches(addr, 1).await > 0, "the stalled subscriber's drops are counted");
    drop(stalled);
    broker.assert_no_panic();
}

/// A QoS 0 burst to a hub subscriber slower than the publisher, which keeps up on average,
/// arrives complete and in order: the publisher is held while the subscriber's queue is over
/// half full (P7's case, issue 22).
#[tokio::test]
async fn a_qos0_burst_to_a_hub_subscriber_that_keeps_up_arrives_complete() {
    const BURST: u32 = 50_000;
    let broker = broker("gate_backpressure_max_hold 60\n");
    let mut reader = v311(broker.addr(), "reader").await;
    reader.subscribe(1, &[("burst/t", 0)]).await;
    let addr = broker.addr();
    let publisher = tokio::spawn(publish_burst(addr, BURST, 64 * 1024));
    for expected in 0..BURST {
        let got = reader.expect_publish().await;
        let index: u32 = std::str::from_utf8(&got.payload[..8]).unwrap().parse().unwrap();
        assert_eq!(index, expected, "lost or duplicated message");
        if (expected + 1).is_multiple_of(1000) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn a_takeover_leaves_one_hub_subscriber() {
    let broker = broker("");
    let mut first = v311(broker.addr(), "device").await;
    first.subscribe(1, &[("cmd/device", 1)]).await;
    let mut second = v311(broker.addr(), "device").await;
    assert!(first.expect_closed().await.iter().all(|f| f.packet_type != testkit::PUBLISH));
    second.subscribe(1, &[("cmd/device", 1)]).await;
    let mut backend = v311(broker.addr(), "backend").await;
    publish_read(&mut backend, "cmd/device", b"go", 1, false, 1).await;
    let got = second.expect_publish().await;
    assert_eq!(&got.payload[..], b"go");
    second.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    assert!(second.ping().await.is_empty(), "one copy");
}

#[tokio::test]
async fn shared_and_persistent_subscriptions_keep_their_router_links_beside_the_hub() {
    let broker = broker("");
    let mut member = v5(broker.addr(), "member").await;
    assert_eq!(member.subscribe(1, &[("$share/g/s/t", 1), ("s/t", 0)]).await, [1, 0]);
    let mut connect = Connect::new(5, "persistent");
    connect.clean = false;
    connect.session_expiry = Some(600);
    let mut persistent = RawClient::connected(broker.addr(), &connect).await;
    assert_eq!(persistent.subscribe(1, &[("s/t", 1)]).await, [1]);
    let mut publisher = v5(broker.addr(), "pub").await;
    publish_read(&mut publisher, "s/t", b"x", 1, false, 1).await;
    // The member gets one copy (shared and plain overlap), the persistent session its own.
    let got = member.expect_publish().await;
    assert_eq!(&got.payload[..], b"x");
    if got.qos > 0 {
        member.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
    assert!(member.ping().await.is_empty());
    let got = persistent.expect_publish().await;
    assert_eq!((&got.payload[..], got.qos), (&b"x"[..], 1));
    persistent.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    // The member publishes through its own link now: its messages still arrive, in order.
    for n in 0..3u8 {
        member.publish("s/order", &[n], 0, false, 0).await;
    }
    persistent.subscribe(2, &[("s/order", 0)]).await;
    for n in 3..6u8 {
        publish_read(&mut member, "s/order", &[n], 0, false, 0).await;
    }
    for n in 3..6u8 {
        assert_eq!(&persistent.expect_publish().await.payload[..], &[n]);
    }
}

/// The router's log of `#` is the hub's, sized for a reader that is never far behind (~1 MiB,
/// broker/src/routing/router_link.rs); a client's `#` is spelled `+/#` there and keeps the
/// configured sizing (8 MiB by default), so a persistent `#` subscriber offline while 1.8 MiB is
/// published gets all of it (with the hub's log it would lose what rolled over).
#[tokio::test]
async fn a_persistent_hash_subscriber_further_behind_than_the_hubs_log_loses_nothing() {
    const MESSAGES: u16 = 900;
    let broker = broker("");
    let mut connect = Connect::new(5, "logger");
    connect.clean = false;
    connect.session_expiry = Some(600);
    let mut logger = RawClient::connected(broker.addr(), &connect).await;
    assert_eq!(logger.subscribe(1, &[("#", 1)]).await, [1]);
    logger.send(&testkit::disconnect()).await;
    logger.expect_closed().await;
    let mut device = v311(broker.addr(), "device").await;
    device.subscribe(1, &[("log/+", 1)]).await;
    let mut publisher = v311(broker.addr(), "publisher").await;
    for n in 1..=MESSAGES {
        let mut payload = format!("{n:08}").into_bytes();
        payload.resize(2048, b'.');
        publisher.publish(&format!("log/{}", n % 7), &payload, 1, false, n).await;
        let got = device.expect_publish().await;
        device.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
    for _ in 1..=MESSAGES {
        publisher.expect(testkit::PUBACK).await;
    }
    let mut logger = RawClient::connected(broker.addr(), &connect).await;
    for n in 1..=MESSAGES {
        let got = logger.expect_publish().await;
        let index: u16 = std::str::from_utf8(&got.payload[..8]).unwrap().parse().unwrap();
        assert_eq!(index, n, "lost or reordered while offline");
        logger.send(&testkit::ack(testkit::PUBACK, got.pkid)).await;
    }
    assert!(logger.ping().await.is_empty());
}

#[test]
fn gate_fleet_hub_takes_true_or_false_only() {
    let (code, text) = BrokerProcess::expect_start_failure(
        binary(),
        "listener 0 127.0.0.1\nallow_anonymous true\ngate_fleet_hub maybe\n",
    );
    assert_ne!(code, 0);
    assert!(text.contains("gate_fleet_hub") && text.contains("expected true or false"), "{text}");
}

/// Publishes `count` QoS 0 messages of 100 bytes (their index first) on `burst/t`, written in
/// batches of about `batch_bytes`, then waits for the broker's PINGRESP.
async fn publish_burst(addr: SocketAddr, count: u32, batch_bytes: usize) {
    let mut publisher = v311(addr, "burst").await;
    let mut batch = Vec::new();
    for index in 0..count {
        let payload = format!("{index:08}{}", "p".repeat(92));
        batch.extend(testkit::publish(false, "burst/t", payload.as_bytes(), 0, false, 0));
        if batch.len() > batch_bytes {
            publisher.send(&batch).await;
            batch.clear();
        }
    }
    publisher.send(&batch).await;
    assert!(publisher.ping().await.is_empty());
}
