//! One regression test per rumqttd 0.20 defect the gate fixes (numbers from
//! docs/rumqttd.md §6), against the real `dynsec-broker` binary with raw packets.
//! Defects 13–16 cannot be fixed from outside the router: see docs/known-differences.md.

use std::path::Path;

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::BrokerProcess;

fn anonymous() -> BrokerProcess {
    BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), "allow_anonymous true\n")
}

/// A v5 User Property (key, value) as a property block.
fn user_property(key: &str, value: &str) -> Vec<u8> {
    let mut props = vec![38];
    for s in [key, value] {
        props.extend((s.len() as u16).to_be_bytes());
        props.extend(s.as_bytes());
    }
    props
}

/// Defect 1: forwarding a message with properties to a 3.x client panicked rumqttd's v4 encoder
/// and lost the message.
#[tokio::test]
async fn defect_01_v5_properties_reach_v3_subscribers() {
    let broker = anonymous();
    let mut v311 = RawClient::connected(broker.addr(), &Connect::new(4, "old")).await;
    let mut v31 = RawClient::connected(broker.addr(), &Connect::new(3, "older")).await;
    v311.subscribe(1, &[("props/#", 1)]).await;
    v31.subscribe(1, &[("props/#", 0)]).await;
    let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "new")).await;
    let props = user_property("origin", "v5");
    v5.send(&testkit::publish_with(true, "props/x", b"with properties", 1, false, false, 1, &props)).await;
    v5.expect(testkit::PUBACK).await;
    assert_eq!(&v311.expect_publish().await.payload[..], b"with properties");
    assert_eq!(&v31.expect_publish().await.payload[..], b"with properties");
}

/// Defect 3: after resuming a persistent session, UNSUBSCRIBE was ignored by the router.
#[tokio::test]
async fn defect_03_unsubscribe_after_resuming_a_session() {
    let broker = anonymous();
    let mut connect = Connect::new(4, "resumer");
    connect.clean = false;
    let mut client = RawClient::connected(broker.addr(), &connect).await;
    client.subscribe(1, &[("resume/#", 0)]).await;
    client.send(&testkit::disconnect()).await;
    client.expect_closed().await;
    let (mut client, connack) = RawClient::connect(broker.addr(), &connect).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK") };
    assert!(connack.session_present());
    client.send(&testkit::unsubscribe(false, 2, &["resume/#"])).await;
    assert_eq!(client.expect(testkit::UNSUBACK).await.pkid(), 2);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "resume-pub")).await;
    publisher.publish("resume/x", b"must not arrive", 0, false, 0).await;
    publisher.ping().await;
    client.expect_quiet().await;
}

/// Defect 4: no UNSUBACK for a filter never subscribed; one UNSUBACK per filter otherwise.
#[tokio::test]
async fn defect_04_one_unsuback_per_unsubscribe() {
    let broker = anonymous();
    let mut v4 = RawClient::connected(broker.addr(), &Connect::new(4, "unsub4")).await;
    v4.send(&testkit::unsubscribe(false, 5, &["never/subscribed"])).await;
    assert_eq!(v4.expect(testkit::UNSUBACK).await.pkid(), 5);
    v4.subscribe(1, &[("a", 0), ("b", 0)]).await;
    v4.send(&testkit::unsubscribe(false, 6, &["a", "b", "c"])).await;
    assert_eq!(v4.expect(testkit::UNSUBACK).await.pkid(), 6);
    assert!(v4.ping().await.is_empty(), "exactly one UNSUBACK");

    let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "unsub5")).await;
    v5.subscribe(1, &[("a", 0)]).await;
    v5.send(&testkit::unsubscribe(true, 7, &["a", "never"])).await;
    let unsuback = v5.expect(testkit::UNSUBACK).await;
    assert_eq!((unsuback.pkid(), unsuback.codes(true)), (7, vec![0x00, 0x11]));
}

/// Defect 5: acknowledgements out of order made the router disconnect the client.
#[tokio::test]
async fn defect_05_out_of_order_acks_keep_the_client() {
    let broker = anonymous();
    let mut sub = RawClient::connected(broker.addr(), &Connect::new(4, "ooo")).await;
    sub.subscribe(1, &[("ooo/#", 1)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "ooo-pub")).await;
    for round in 0..3u16 {
        for i in 0..3u16 {
            publisher.publish("ooo/t", format!("{round}-{i}").as_bytes(), 1, false, round * 3 + i + 1).await;
        }
        let received: Vec<_> =
            [sub.expect_publish().await, sub.expect_publish().await, sub.expect_publish().await].into();
        for index in [2, 0, 1] {
            sub.send(&testkit::ack(testkit::PUBACK, received[index].pkid)).await;
        }
        let payloads: Vec<_> = received.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect();
        assert_eq!(payloads, [format!("{round}-0"), format!("{round}-1"), format!("{round}-2")]);
    }
    sub.ping().await;
}

/// Defect 6: the router's inbound QoS 2 state ignored packet ids: a DUP re-send was delivered
/// twice and stranded the next message; a PUBREL after reconnecting got the client disconnected.
#[tokio::test]
async fn defect_06_inbound_qos2_duplicates_and_pubrel_after_reconnect() {
    let broker = anonymous();
    let mut sub = RawClient::connected(broker.addr(), &Connect::new(4, "q2-sub")).await;
    sub.subscribe(1, &[("q2/#", 0)]).await;
    let mut connect = Connect::new(4, "q2-pub");
    connect.clean = false;
    let mut publisher = RawClient::connected(broker.addr(), &connect).await;
    publisher.publish("q2/t", b"A", 2, false, 1).await;
    assert_eq!(publisher.expect(testkit::PUBREC).await.pkid(), 1);
    publisher.send(&testkit::publish_with(false, "q2/t", b"A", 2, false, true, 1, &[])).await; // DUP
    assert_eq!(publisher.expect(testkit::PUBREC).await.pkid(), 1);
    publisher.send(&testkit::ack(testkit::PUBREL, 1)).await;
    assert_eq!(publisher.expect(testkit::PUBCOMP).await.pkid(), 1);
    publisher.publish("q2/t", b"B", 2, false, 2).await;
    publisher.expect(testkit::PUBREC).await;
    assert_eq!(&sub.expect_publish().await.payload[..], b"A");
    assert_eq!(&sub.expect_publish().await.payload[..], b"B");

    // Disconnect before PUBREL, reconnect, re-send PUBREL: PUBCOMP, no duplicate, still connected.
    drop(publisher);
    let mut publisher = RawClient::connected(broker.addr(), &connect).await;
    publisher.send(&testkit::ack(testkit::PUBREL, 2)).await;
    assert_eq!(publisher.expect(testkit::PUBCOMP).await.pkid(), 2);
    publisher.publish("q2/t", b"C", 2, false, 3).await;
    publisher.expect(testkit::PUBREC).await;
    assert_eq!(&sub.expect_publish().await.payload[..], b"C");
    sub.expect_quiet().await;
}

/// Defect 7: a v5 PUBREL with properties got no PUBCOMP.
#[tokio::test]
async fn defect_07_v5_pubrel_with_properties() {
    let broker = anonymous();
    let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "pubrel-props")).await;
    v5.publish("rel/t", b"x", 2, false, 4).await;
    v5.expect(testkit::PUBREC).await;
    // PUBREL, reason 0, properties: Reason String "ok"
    v5.send(&testkit::packet(0x62, &[0, 4, 0, 5, 31, 0, 2, b'o', b'k'])).await;
    assert_eq!(v5.expect(testkit::PUBCOMP).await.pkid(), 4);
}

/// Defect 8: outgoing topic aliases keyed by filter sent the 2nd message of a wildcard
/// subscription with an empty topic under the 1st topic's alias.
#[tokio::test]
async fn defect_08_no_topic_aliases_on_wildcard_subscriptions() {
    let broker = anonymous();
    let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "alias-sub")).await;
    v5.subscribe(1, &[("alias/#", 0)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "alias-pub")).await;
    for topic in ["alias/one", "alias/two", "alias/one"] {
        publisher.publish(topic, b"x", 0, false, 0).await;
        let got = v5.expect_publish().await;
        assert_eq!(got.topic, topic);
        assert!(!got.properties.contains(&35), "no Topic Alias property: {:?}", got.properties);
    }
}

/// Defect 9: SUBSCRIBE to a `$` filter other than `$share` got the client disconnected.
#[tokio::test]
async fn defect_09_dollar_filters_do_not_disconnect() {
    let broker = anonymous();
    for version in [4, 5] {
        let mut client = RawClient::connected(broker.addr(), &Connect::new(version, &format!("dollar{version}"))).await;
        let codes = client.subscribe(1, &[("$SYS/#", 0), ("$SYS/broker/version", 1), ("$other/x", 0), ("ok", 2)]).await;
        assert_eq!(codes, [0, 1, 0, 2]);
        client.ping().await;
    }
}

/// Defect 10: client ids containing `+ $ # /` were refused without any CONNACK.
#[tokio::test]
async fn defect_10_client_ids_with_router_reserved_characters() {
    let broker = anonymous();
    for (version, id) in [(4, "a/b"), (5, "x+y"), (3, "$z"), (4, "#"), (5, "a/b/#/+/$")] {
        let mut client = RawClient::connected(broker.addr(), &Connect::new(version, id)).await;
        client.subscribe(1, &[("ids", 0)]).await;
        client.ping().await;
    }
}

/// Defect 11: an authentication failure closed the socket without CONNACK, and keepalive 0 was
/// refused.
#[tokio::test]
async fn defect_11_auth_failure_connack_and_keepalive_zero() {
    let broker =
        BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), "allow_anonymous false\n");
    for (version, code) in [(3, 5), (4, 5), (5, 0x87)] {
        let (_client, reply) = RawClient::connect(broker.addr(), &Connect::new(version, "nobody")).await;
        let Next::Frame(connack) = reply else { panic!("no CONNACK for v{version}") };
        assert_eq!((connack.packet_type, connack.reason()), (testkit::CONNACK, code));
    }
    let broker = anonymous();
    let mut connect = Connect::new(4, "ka-zero");
    connect.keep_alive = 0;
    let mut client = RawClient::connected(broker.addr(), &connect).await;
    client.ping().await;
}

/// Defect 12: a v5 client's Maximum Packet Size was ignored.
#[tokio::test]
async fn defect_12_client_maximum_packet_size() {
    let broker = anonymous();
    let mut connect = Connect::new(5, "tiny");
    connect.max_packet_size = Some(60);
    let mut sub = RawClient::connected(broker.addr(), &connect).await;
    sub.subscribe(1, &[("mps/#", 1)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "mps-pub")).await;
    publisher.publish("mps/t", &[b'x'; 100], 1, false, 1).await;
    publisher.publish("mps/t", b"fits", 1, false, 2).await;
    let got = sub.expect_publish().await;
    assert_eq!(&got.payload[..], b"fits");
}

/// Defect 17: no filter or topic validation in the router.
#[tokio::test]
async fn defect_17_invalid_filters_and_topics_close_the_connection() {
    let broker = anonymous();
    let mut survivor = RawClient::connected(broker.addr(), &Connect::new(4, "survivor")).await;
    for filter in ["a/#/b", "a+", "", "$share/g", "$share//x"] {
        let mut v5 = RawClient::connected(broker.addr(), &Connect::new(5, "bad-filter5")).await;
        v5.send(&testkit::subscribe(true, 1, &[(filter, 0)])).await;
        let frames = v5.expect_closed().await;
        assert_eq!(frames.len(), 1, "{filter:?}: {frames:?}");
        assert_eq!((frames[0].packet_type, frames[0].reason()), (testkit::DISCONNECT, 0x81), "{filter:?}");
        let mut v4 = RawClient::connected(broker.addr(), &Connect::new(4, "bad-filter4")).await;
        v4.send(&testkit::subscribe(false, 1, &[(filter, 0)])).await;
        assert!(v4.expect_closed().await.is_empty(), "{filter:?}");
    }
    for topic in ["a/+", "a/#", "#"] {
        let mut v4 = RawClient::connected(broker.addr(), &Connect::new(4, "bad-topic")).await;
        v4.publish(topic, b"x", 0, false, 0).await;
        assert!(v4.expect_closed().await.is_empty(), "{topic}");
    }
    survivor.ping().await;
}

/// rumqttd keys a shared subscription's cursor by group name alone: `$share/g/a` and
/// `$share/g/b` would share one. The gate names groups per filter.
#[tokio::test]
async fn shared_groups_with_the_same_name_on_different_filters() {
    let broker = anonymous();
    let mut on_a = RawClient::connected(broker.addr(), &Connect::new(4, "share-a")).await;
    let mut on_b = RawClient::connected(broker.addr(), &Connect::new(4, "share-b")).await;
    on_a.subscribe(1, &[("$share/g/shared/a", 0)]).await;
    on_b.subscribe(1, &[("$share/g/shared/b", 0)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "share-pub")).await;
    for i in 0..5 {
        publisher.publish("shared/a", format!("a{i}").as_bytes(), 0, false, 0).await;
        publisher.publish("shared/b", format!("b{i}").as_bytes(), 0, false, 0).await;
    }
    for i in 0..5 {
        assert_eq!(on_a.expect_publish().await.payload, format!("a{i}").into_bytes());
        assert_eq!(on_b.expect_publish().await.payload, format!("b{i}").into_bytes());
    }

    // And a group with two members shares the messages (each delivered once).
    let mut member_1 = RawClient::connected(broker.addr(), &Connect::new(4, "member-1")).await;
    let mut member_2 = RawClient::connected(broker.addr(), &Connect::new(5, "member-2")).await;
    member_1.subscribe(1, &[("$share/grp/work", 0)]).await;
    member_2.subscribe(1, &[("$share/grp/work", 0)]).await;
    for i in 0..6 {
        publisher.publish("work", format!("w{i}").as_bytes(), 0, false, 0).await;
    }
    publisher.ping().await;
    let mut seen = Vec::new();
    for member in [&mut member_1, &mut member_2] {
        while let Next::Frame(frame) = member.next(testkit::QUIET).await {
            seen.push(String::from_utf8_lossy(&frame.publish(member.v5).payload).into_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["w0", "w1", "w2", "w3", "w4", "w5"]);
}
