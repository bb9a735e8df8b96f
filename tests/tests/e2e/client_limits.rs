//! Issue 15, item 5: per-client limits on what a client can make the router keep for good —
//! subscriptions (`gate_max_subscriptions_per_client`), new topics
//! (`gate_new_topics_per_second` / `gate_new_topics_burst`) and new router filters
//! (`gate_new_filters_per_second` / `gate_new_filters_burst`). Real `dynsec-broker` binary, raw
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

/// A client cycling through invented `$share` (or persistent-session) filters made the router keep
/// a commit log for each, for good, and match each against every topic it ever routed
/// (docs/rumqttd.md §10): without the budget all 20 below were granted.
#[tokio::test]
async fn filters_new_to_the_router_beyond_the_budget_are_refused_and_known_ones_still_go() {
    let broker = broker("gate_new_filters_per_second 1\ngate_new_filters_burst 3\n");
    let mut clean = RawClient::connected(broker.addr(), &Connect::new(5, "filters-clean")).await;
    // A clean session's plain filters are served by the hub: the router keeps nothing for them.
    let plain: Vec<String> = (0..20).map(|i| format!("plain/{i}")).collect();
    let plain: Vec<(&str, u8)> = plain.iter().map(|f| (f.as_str(), 0)).collect();
    assert_eq!(clean.subscribe(1, &plain).await, vec![0; 20]);
    // `$share` filters reach the router: the burst, then quota exceeded (one token may refill
    // if the broker is held up for a second in between).
    let shared: Vec<String> = (0..20).map(|i| format!("$share/g/invented/{i}")).collect();
    let shared: Vec<(&str, u8)> = shared.iter().map(|f| (f.as_str(), 1)).collect();
    let codes = clean.subscribe(2, &shared).await;
    let granted = codes.iter().filter(|&&code| code == 1).count();
    assert!((3..=4).contains(&granted), "granted {granted}: {codes:?}");
    assert!(codes.iter().all(|&code| code == 1 || code == 0x97), "{codes:?}");
    assert_eq!(&codes[..3], [1, 1, 1]);

    // A persistent session (MQTT 3.1.1) with its own budget: the filters the router already holds
    // (as the shared ones' plain filters) cost nothing; new ones are refused with 0x80 beyond it.
    let mut persistent = Connect::new(4, "filters-persistent");
    persistent.clean = false;
    let mut device = RawClient::connected(broker.addr(), &persistent).await;
    let known = device.subscribe(1, &[("invented/0", 1), ("invented/1", 1), ("invented/2", 1)]).await;
    assert_eq!(known, [1, 1, 1]);
    let fresh: Vec<String> = (0..10).map(|i| format!("device/{i}")).collect();
    let fresh: Vec<(&str, u8)> = fresh.iter().map(|f| (f.as_str(), 1)).collect();
    let codes = device.subscribe(2, &fresh).await;
    let granted = codes.iter().filter(|&&code| code == 1).count();
    assert!((3..=4).contains(&granted), "granted {granted}: {codes:?}");
    assert!(codes[granted..].iter().all(|&code| code == 0x80), "{codes:?}");

    // What was granted is served.
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "filters-pub")).await;
    publisher.publish("invented/1", b"to-both", 0, false, 0).await;
    assert_eq!(&device.expect_publish().await.payload[..], b"to-both");
    assert_eq!(&clean.expect_publish().await.payload[..], b"to-both");
    publisher.publish("device/0", b"to-device", 0, false, 0).await;
    assert_eq!(&device.expect_publish().await.payload[..], b"to-device");
}

#[tokio::test]
async fn the_filter_budget_can_be_switched_off() {
    let broker = broker("gate_new_filters_per_second 0\ngate_new_filters_burst 1\n");
    let mut client = RawClient::connected(broker.addr(), &Connect::new(5, "filters-unbounded")).await;
    let shared: Vec<String> = (0..50).map(|i| format!("$share/g/unbounded/{i}")).collect();
    let shared: Vec<(&str, u8)> = shared.iter().map(|f| (f.as_str(), 0)).collect();
    assert_eq!(client.subscribe(1, &shared).await, vec![0; 50]);
}

/// The default budget (burst 1,000, the subscription limit; then 10 a second): a client may take
/// its whole allotment of new router filters at once, but not cycle through more by
/// unsubscribing (without the budget, the second 100 were granted too).
#[tokio::test]
async fn cycling_through_invented_filters_is_bounded_by_default() {
    let broker = broker("");
    let mut client = RawClient::connected(broker.addr(), &Connect::new(5, "filters-cycling")).await;
    let first: Vec<String> = (0..1000).map(|i| format!("$share/g/cycle/{i}")).collect();
    for (chunk, pkid) in first.chunks(100).zip(1u16..) {
        let chunk: Vec<(&str, u8)> = chunk.iter().map(|f| (f.as_str(), 0)).collect();
        assert_eq!(client.subscribe(pkid, &chunk).await, vec![0; 100], "SUBSCRIBE {pkid}");
    }
    for (chunk, pkid) in first.chunks(100).zip(20u16..) {
        let chunk: Vec<&str> = chunk.iter().map(|f| f.as_str()).collect();
        client.send(&testkit::unsubscribe(true, pkid, &chunk)).await;
        assert_eq!(client.expect(testkit::UNSUBACK).await.codes(true), vec![0; 100]);
    }
    let second: Vec<String> = (1000..1100).map(|i| format!("$share/g/cycle/{i}")).collect();
    let second: Vec<(&str, u8)> = second.iter().map(|f| (f.as_str(), 0)).collect();
    let codes = client.subscribe(40, &second).await;
    let granted = codes.iter().filter(|&&code| code == 0).count();
    // What refilled since the burst was spent (10 a second): a few, not a hundred.
    assert!(granted < 50, "granted {granted} of 100 new filters after the burst");
    assert!(codes.iter().all(|&code| code == 0 || code == 0x97), "{codes:?}");
    // Filters the router already holds are still free: subscribing the first ones again.
    let again: Vec<(&str, u8)> = first[..100].iter().map(|f| (f.as_str(), 0)).collect();
    assert_eq!(client.subscribe(41, &again).await, vec![0; 100]);
}
