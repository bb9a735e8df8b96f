//! QoS 0 without loss under bursts (issue 22), on the real binary with raw clients: a burst to a
//! QoS 0 subscriber that keeps up on average arrives complete (the gate holds the publisher
//! instead of letting rumqttd's per-filter log roll over under the subscriber); a stalled QoS 0
//! subscriber holds neither the publisher nor the other subscribers of the topic for good; what
//! the router drops for a subscriber that cannot keep up is counted in
//! `$SYS/broker/publish/messages/dropped`.
//!
//! Subscribers that must fall behind use a 16 KiB receive buffer: the kernel would otherwise
//! buffer tens of megabytes on loopback, and no burst would ever reach the router's log.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::BrokerProcess;

/// A small router log (4 × 64 KiB per filter) and a 32 KiB back-pressure window.
const SMALL_ROUTER_LOG: &str = "allow_anonymous true\n\
    gate_segment_size 65536\n\
    gate_segment_count 4\n\
    gate_backpressure_window 32768\n";

/// Messages of a burst: about 5.5 MB on the wire, more than the broker's socket send buffer
/// (4 MiB at most here) and the router's log together.
const BURST: u32 = 50_000;

fn broker(config: &str) -> BrokerProcess {
    BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), config)
}

/// A connected 3.1.1 client with a small receive buffer (so that it can fall behind).
async fn narrow_client(addr: SocketAddr, id: &str) -> RawClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut client = RawClient::on(stream);
    client.send_connect_ok(&Connect::new(4, id)).await;
    client
}

fn payload(index: u32) -> Vec<u8> {
    format!("{index:08}{}", "p".repeat(92)).into_bytes()
}

fn index_of(payload: &[u8]) -> u32 {
    std::str::from_utf8(&payload[..8]).unwrap().parse().unwrap()
}

/// Publishes `total` QoS 0 messages to `topic` as fast as the broker reads them, from a task,
/// then a PINGREQ; the task ends with the PINGRESP (the broker has read the whole burst).
fn burst(addr: SocketAddr, topic: &'static str, total: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut publisher = RawClient::connected(addr, &Connect::new(4, "burst")).await;
        let mut batch = Vec::new();
        for index in 0..total {
            batch.extend(testkit::publish(false, topic, &payload(index), 0, false, 0));
            if batch.len() > 16 * 1024 {
                publisher.send(&batch).await;
                batch.clear();
            }
        }
        publisher.send(&batch).await;
        assert!(publisher.ping().await.is_empty());
    })
}

/// Reads `total` messages in order, exactly once, pausing now and then (a consumer slower than
/// the publisher, which keeps up on average).
async fn read_all_in_order(subscriber: &mut RawClient, total: u32, pause_every: u32) {
    for expected in 0..total {
        let got = subscriber.expect_publish().await;
        assert_eq!(index_of(&got.payload), expected, "lost or duplicated message");
        if pause_every > 0 && (expected + 1).is_multiple_of(pause_every) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A QoS 0 burst to a subscriber slower than the publisher arrives complete and in order.
/// Without back-pressure for QoS 0 the router's log (256 KiB here) rolls over under it and it
/// loses most of the burst.
#[tokio::test]
async fn a_qos0_burst_to_a_subscriber_that_keeps_up_on_average_arrives_complete() {
    let broker = broker(SMALL_ROUTER_LOG);
    let mut subscriber = narrow_client(broker.addr(), "reader").await;
    subscriber.subscribe(1, &[("burst/t", 0)]).await;
    let publisher = burst(broker.addr(), "burst/t", BURST);
    read_all_in_order(&mut subscriber, BURST, 100).await;
    publisher.await.unwrap();
    subscriber.expect_quiet().await;
}

/// A QoS 0 subscriber that stops reading holds the publisher only until it is disconnected
/// (`gate_write_timeout`, its socket buffers being full): the publisher's whole burst is read and
/// another subscriber of the same topic gets all of it. (The hold limit is long here: a reading
/// subscriber on a loaded machine must not be taken for one that cannot keep up.)
#[tokio::test]
async fn a_stalled_qos0_subscriber_stops_neither_the_publisher_nor_another_subscriber() {
    let broker = broker(&format!("{SMALL_ROUTER_LOG}gate_write_timeout 1\ngate_backpressure_max_hold 60\n"));
    let mut stalled = narrow_client(broker.addr(), "stalled").await;
    stalled.subscribe(1, &[("burst/t", 0)]).await;
    let mut reader = RawClient::connected(broker.addr(), &Connect::new(4, "reader")).await;
    reader.subscribe(1, &[("burst/t", 0)]).await;
    let publisher = burst(broker.addr(), "burst/t", BURST);
    read_all_in_order(&mut reader, BURST, 0).await;
    publisher.await.unwrap();
    // The stalled subscriber got at most the beginning of the burst.
    drop(stalled);
}

/// What the router skips for a subscriber that cannot keep up (here with back-pressure off, as
/// rumqttd alone behaves) is counted in mosquitto's `$SYS/broker/publish/messages/dropped`.
#[tokio::test]
async fn messages_the_router_drops_are_counted_in_sys() {
    let broker =
        broker(&format!("{SMALL_ROUTER_LOG}gate_backpressure_window 0\ngate_write_timeout 60\nsys_interval 1\n"));
    let mut late = narrow_client(broker.addr(), "late").await;
    late.subscribe(1, &[("burst/t", 0)]).await;
    burst(broker.addr(), "burst/t", BURST).await.unwrap();
    // Reading now: the router's log rolled over long ago, so the router skips ahead.
    let mut received = 0u32;
    while let Next::Frame(frame) = late.next(Duration::from_secs(2)).await {
        if frame.packet_type == testkit::PUBLISH {
            received += 1;
        }
    }
    assert!(received < BURST, "the burst fitted in the buffers: nothing to drop");
    let mut monitor = RawClient::connected(broker.addr(), &Connect::new(4, "monitor")).await;
    monitor.subscribe(1, &[("$SYS/broker/publish/messages/dropped", 0)]).await;
    let mut dropped = 0u64;
    for _ in 0..30 {
        let value = monitor.expect_publish().await;
        dropped = std::str::from_utf8(&value.payload).unwrap().parse().unwrap();
        if dropped > 0 {
            break;
        }
    }
    assert!(dropped > 0, "no drop counted although {} of {BURST} messages were skipped", BURST - received);
    assert!(dropped <= u64::from(BURST - received), "{dropped} counted, {} skipped", BURST - received);
}
