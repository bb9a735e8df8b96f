//! Issue 15, item 5: per-client limits on what a client can make the router keep for good —
//! subscriptions (`gate_max_subscriptions_per_client`) and new topics
//! (`gate_new_topics_per_second` / `gate_new_topics_burst`). Real `dynsec-broker` binary, raw
//! MQTT clients on 127.0.0.1.

use std::path::Path;

use dynsec_broker::testkit::{self, Connect, RawClient};
use dynsec_tests::broker::BrokerProcess;

fn broker(config: &str) -> BrokerProcess {
    BrokerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")),
        &format!("allow_anonymous true\n{config}"),
    )
}

#[tokio::test]
async fn subscriptions_beyond_the_per_client_limit_are_refused() {
    let broker = broker("gate_max_subscriptions_per_client 3\n");
    let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "many-subs-v5")).await;
    assert_eq!(v5.subscribe(1, &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]).await, [1, 1, 1, 0x97]);
    // Subscribing again to a filter it holds is not a new subscription.
    assert_eq!(v5.subscribe(2, &[("a", 0)]).await, [0]);
    v5.send(&testkit::unsubscribe(true, 3, &["b"])).await;
    assert_eq!(v5.expect(testkit::UNSUBACK).await.codes(true), [0]);
    assert_eq!(v5.subscribe(4, &[("d", 1)]).await, [1]);
    let mut v4 = RawClient::connected(broker.addr(), &Connect::new(4, "many-subs-v4")).await;
    assert_eq!(v4.subscribe(1, &[("a", 0), ("b", 0), ("c", 0), ("d", 0)]).await, [0, 0, 0, 0x80]);
    // The limit is per client; what was granted works.
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "many-subs-pub")).await;
    publisher.publish("d", b"x", 0, false, 0).await;
    assert_eq!(v5.expect_publish().await.topic, "d");
}

#[tokio::test]
async fn the_default_limit_is_a_thousand_subscriptions() {
    let broker = broker("");
    let mut client = RawClient::connected(broker.addr(), &Connect::new(5, "default-limit")).await;
    let filters: Vec<String> = (0..1001).map(|i| format!("unique/{i}")).collect();
    for (chunk, pkid) in filters.chunks(100).zip(1u16..) {
        let chunk: Vec<(&str, u8)> = chunk.iter().map(|f| (f.as_str(), 0)).collect();
        let codes = client.subscribe(pkid, &chunk).await;
        let expected: Vec<u8> = (0..chunk.len()).map(|i| if pkid == 11 && i == 0 { 0x97 } else { 0 }).collect();
        assert_eq!(codes, expected, "SUBSCRIBE {pkid}");
    }
}

#[tokio::test]
async fn new_topics_beyond_the_budget_are_dropped_and_known_ones_still_go() {
    let broker = broker("gate_new_topics_per_second 1\ngate_new_topics_burst 5\n");
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(4, "budget-sub")).await;
    assert_eq!(subscriber.subscribe(1, &[("t/#", 0)]).await, [0]);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, "budget-pub")).await;
    // 20 new topics: at most the burst plus what refills meanwhile gets through.
    let mut refused = 0;
    for i in 0..20u16 {
        publisher.publish(&format!("t/{i}"), b"x", 1, false, i + 1).await;
        let ack = publisher.expect(testkit::PUBACK).await;
        match ack.reason() {
            0 => {}
            0x97 => refused += 1,
            other => panic!("PUBACK reason {other:#x}"),
        }
    }
    assert!(refused > 0, "no new topic was over the budget");
    let mut delivered = 0;
    while let testkit::Next::Frame(frame) = subscriber.next(testkit::QUIET).await {
        assert_eq!(frame.packet_type, testkit::PUBLISH);
        delivered += 1;
    }
    assert_eq!(delivered, 20 - refused);
    // A topic it published before costs nothing.
    publisher.publish("t/0", b"again", 1, false, 100).await;
    assert_eq!(publisher.expect(testkit::PUBACK).await.reason(), 0);
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"again");
}
