//! No client data stops routing (issue 15, item 3): topics, filters, wills and retained messages
//! that used to panic rumqttd's router thread are routed, and after each case another pair of
//! clients still gets its messages through. If the router thread dies anyway, the broker exits
//! non-zero. Real `dynsec-broker` binary, raw MQTT clients on 127.0.0.1; the harness fails a test
//! whose broker logged a panic.

use std::path::Path;

use dynsec_broker::testkit::{self, Connect, RawClient};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};

const BINARY: &str = env!("CARGO_BIN_EXE_dynsec-broker-under-test");

fn anonymous() -> BrokerProcess {
    BrokerProcess::start(Path::new(BINARY), "allow_anonymous true\n")
}

/// A new subscriber and a new publisher exchange one QoS 1 message on a fresh topic.
async fn routing_still_works(broker: &BrokerProcess, tag: &str) {
    let topic = format!("still/{tag}");
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(4, &format!("still-sub-{tag}"))).await;
    assert_eq!(subscriber.subscribe(1, &[(&topic, 1)]).await, [1], "{tag}: routing stopped");
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, &format!("still-pub-{tag}"))).await;
    publisher.publish(&topic, b"routed", 1, false, 1).await;
    publisher.expect(testkit::PUBACK).await;
    let delivered = subscriber.expect_publish().await;
    assert_eq!((delivered.topic.as_str(), &delivered.payload[..]), (topic.as_str(), &b"routed"[..]), "{tag}");
    subscriber.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
}

/// `publisher` publishes `topic` at QoS 1; `subscriber` (already subscribed) receives it.
async fn exchange(publisher: &mut RawClient, subscriber: &mut RawClient, topic: &str, pkid: u16) {
    publisher.publish(topic, topic.as_bytes(), 1, false, pkid).await;
    publisher.expect(testkit::PUBACK).await;
    let delivered = subscriber.expect_publish().await;
    assert_eq!(delivered.topic, topic);
    assert_eq!(&delivered.payload[..], topic.as_bytes());
    subscriber.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
}

/// Topics whose first character is more than one byte long, published and subscribed to, by
/// exact filter and by wildcards, in v3.1.1 and v5.
#[tokio::test]
async fn topics_starting_with_a_multibyte_character_are_routed() {
    let broker = anonymous();
    for (i, (topic, filters)) in [
        ("é/x", &["é/x", "é/+", "+/x"][..]),
        ("€", &["€", "+", "#"][..]),
        ("日本/語", &["日本/語", "日本/#", "+/語"][..]),
        ("\u{1F600}/smile/deep", &["\u{1F600}/#", "+/smile/deep"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        for version in [4u8, 5] {
            let tag = format!("{i}-v{version}");
            let mut subscriber =
                RawClient::connected(broker.addr(), &Connect::new(version, &format!("sub-{tag}"))).await;
            let mut publisher =
                RawClient::connected(broker.addr(), &Connect::new(version, &format!("pub-{tag}"))).await;
            for (n, filter) in filters.iter().enumerate() {
                let pkid = n as u16 + 1;
                assert_eq!(subscriber.subscribe(pkid, &[(filter, 1)]).await, [1], "{filter}");
                exchange(&mut publisher, &mut subscriber, topic, pkid).await;
                subscriber.send(&testkit::unsubscribe(version == 5, pkid, &[filter])).await;
                subscriber.expect(testkit::UNSUBACK).await;
            }
            routing_still_works(&broker, &tag).await;
        }
    }
}

/// A topic starting with a multi-byte character must not match a filter whose first level merely
/// shares its first byte, nor one spelled differently.
#[tokio::test]
async fn multibyte_first_levels_match_exactly() {
    let broker = anonymous();
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(5, "exact-sub")).await;
    assert_eq!(subscriber.subscribe(1, &[("é", 1), ("e/x", 1), ("\u{e8}/x", 1)]).await, [1, 1, 1]);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, "exact-pub")).await;
    publisher.publish("é/x", b"x", 1, false, 1).await;
    publisher.expect(testkit::PUBACK).await;
    subscriber.expect_quiet().await;
    exchange(&mut publisher, &mut subscriber, "é", 2).await;
    routing_still_works(&broker, "exact").await;
}

/// Retained messages on such topics are stored, delivered to later subscribers with their own
/// topic, and cleared.
#[tokio::test]
async fn retained_messages_on_multibyte_topics() {
    let broker = anonymous();
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "retain-pub")).await;
    for (pkid, topic) in [(1, "é/r"), (2, "€"), (3, "日本/語")] {
        publisher.publish(topic, b"kept", 1, true, pkid).await;
        publisher.expect(testkit::PUBACK).await;
    }
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(5, "retain-sub")).await;
    assert_eq!(subscriber.subscribe(1, &[("#", 0)]).await, [0]);
    let mut topics = Vec::new();
    for _ in 0..3 {
        let retained = subscriber.expect_publish().await;
        assert!(retained.retain, "{retained:?}");
        assert_eq!(&retained.payload[..], b"kept");
        topics.push(retained.topic);
    }
    topics.sort();
    assert_eq!(topics, ["é/r", "€", "日本/語"]);
    // Cleared with an empty retained message: a new subscriber gets nothing.
    publisher.publish("é/r", b"", 1, true, 4).await;
    publisher.expect(testkit::PUBACK).await;
    let mut late = RawClient::connected(broker.addr(), &Connect::new(4, "retain-late")).await;
    assert_eq!(late.subscribe(1, &[("é/#", 0)]).await, [0]);
    late.expect_quiet().await;
    routing_still_works(&broker, "retained").await;
}

/// Wills on such topics are published when their client is lost.
#[tokio::test]
async fn wills_on_multibyte_topics() {
    let broker = anonymous();
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(5, "will-sub")).await;
    assert_eq!(subscriber.subscribe(1, &[("+/will", 0), ("€", 0)]).await, [0, 0]);
    for (i, topic) in ["é/will", "€", "日本/will"].into_iter().enumerate() {
        let mut connect = Connect::new(if i % 2 == 0 { 4 } else { 5 }, &format!("will-{i}"));
        connect.will = Some((topic.to_owned(), b"gone".to_vec(), 0, false));
        let client = RawClient::connected(broker.addr(), &connect).await;
        drop(client); // the socket closes without DISCONNECT: the will is due
        let will = subscriber.expect_publish().await;
        assert_eq!((will.topic.as_str(), &will.payload[..]), (topic, &b"gone"[..]));
    }
    // A retained will too.
    let mut connect = Connect::new(4, "will-retained");
    connect.will = Some(("é/will".to_owned(), b"last".to_vec(), 1, true));
    drop(RawClient::connected(broker.addr(), &connect).await);
    assert_eq!(subscriber.expect_publish().await.topic, "é/will");
    let mut late = RawClient::connected(broker.addr(), &Connect::new(4, "will-late")).await;
    assert_eq!(late.subscribe(1, &[("é/will", 1)]).await, [1]);
    let retained = late.expect_publish().await;
    assert!(retained.retain && &retained.payload[..] == b"last", "{retained:?}");
    routing_still_works(&broker, "wills").await;
}

/// Shared subscriptions whose path starts with a multi-byte character.
#[tokio::test]
async fn shared_subscriptions_on_multibyte_paths() {
    let broker = anonymous();
    let mut member = RawClient::connected(broker.addr(), &Connect::new(5, "share-member")).await;
    assert_eq!(member.subscribe(1, &[("$share/g/日本/#", 1), ("$share/€/€", 1)]).await, [1, 1]);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, "share-pub")).await;
    exchange(&mut publisher, &mut member, "日本/語", 1).await;
    exchange(&mut publisher, &mut member, "€", 2).await;
    member.send(&testkit::unsubscribe(true, 3, &["$share/g/日本/#"])).await;
    assert_eq!(member.expect(testkit::UNSUBACK).await.codes(true), [0]);
    routing_still_works(&broker, "shared").await;
}

/// A persistent session that is the only member of a shared group and leaves with a delivery
/// unacknowledged used to panic the router (`handle_disconnection`, "group must exists"). Its
/// shared subscription still works when it comes back.
#[tokio::test]
async fn a_persistent_shared_subscriber_leaving_with_an_unacknowledged_message() {
    let broker = anonymous();
    for version in [4u8, 5] {
        let id = format!("persistent-share-v{version}");
        let mut connect = Connect::new(version, &id);
        connect.clean = false;
        connect.session_expiry = (version == 5).then_some(600);
        let mut member = RawClient::connected(broker.addr(), &connect).await;
        assert_eq!(member.subscribe(1, &[("$share/g/unacked/t", 1)]).await, [1]);
        let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, &format!("{id}-pub"))).await;
        publisher.publish("unacked/t", b"one", 1, false, 1).await;
        publisher.expect(testkit::PUBACK).await;
        assert_eq!(&member.expect_publish().await.payload[..], b"one"); // and not acknowledged
        member.send(&testkit::disconnect()).await;
        member.expect_closed().await;
        routing_still_works(&broker, &format!("persistent-share-v{version}")).await;

        let (mut member, connack) = RawClient::connect(broker.addr(), &connect).await;
        assert!(matches!(connack, testkit::Next::Frame(ref f) if f.session_present()), "{connack:?}");
        // The message left unacknowledged may come again first.
        publisher.publish("unacked/t", b"two", 1, false, 2).await;
        publisher.expect(testkit::PUBACK).await;
        loop {
            let delivered = member.expect_publish().await;
            member.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
            if &delivered.payload[..] == b"two" {
                break;
            }
            assert_eq!(&delivered.payload[..], b"one");
        }
        member.send(&testkit::disconnect()).await;
    }
}

/// Shared subscriptions on `$SYS` and `$share` paths can never receive anything (`$SYS` is served
/// by the gate, `$share` topics cannot be published); subscribing to them and unsubscribing from
/// them must leave the client served.
#[tokio::test]
async fn shared_subscriptions_to_dollar_paths() {
    let broker = anonymous();
    let mut client = RawClient::connected(broker.addr(), &Connect::new(5, "dollar-share")).await;
    let filters = [("$share/g/$SYS/x", 1), ("$share/h/$share/y", 1), ("plain/+", 1)];
    assert_eq!(client.subscribe(1, &filters).await, [1, 1, 1]);
    client.send(&testkit::unsubscribe(true, 2, &["$share/g/$SYS/x", "$share/h/$share/y"])).await;
    assert_eq!(client.expect(testkit::UNSUBACK).await.codes(true), [0, 0]);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "dollar-share-pub")).await;
    publisher.publish("plain/x", b"still served", 1, false, 1).await;
    publisher.expect(testkit::PUBACK).await;
    let delivered = client.expect_publish().await;
    assert_eq!(&delivered.payload[..], b"still served");
    client.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
    routing_still_works(&broker, "dollar-share").await;
}

/// Empty levels, separators only, the deepest and the longest topics mosquitto accepts.
#[tokio::test]
async fn odd_but_valid_topics_and_filters() {
    let broker = anonymous();
    let deep = "d/".repeat(200) + "end"; // 200 separators: mosquitto's TOPIC_HIERARCHY_LIMIT
    let long = "é".repeat(30_000);
    let cases: Vec<(&str, &str)> = vec![
        ("/", "/"),
        ("/", "+/+"),
        ("//x", "//x"),
        ("x//", "x/+/+"),
        ("a//b", "a/+/b"),
        ("/é", "/é"),
        (&deep, "d/#"),
        (&long, &long),
        (&long, "#"),
    ];
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(5, "odd-sub")).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(5, "odd-pub")).await;
    for (n, (topic, filter)) in cases.into_iter().enumerate() {
        let pkid = n as u16 + 1;
        assert_eq!(subscriber.subscribe(pkid, &[(filter, 1)]).await, [1], "{filter}");
        exchange(&mut publisher, &mut subscriber, topic, pkid).await;
        subscriber.send(&testkit::unsubscribe(true, pkid, &[filter])).await;
        subscriber.expect(testkit::UNSUBACK).await;
    }
    routing_still_works(&broker, "odd").await;
}

/// If the router thread dies anyway, the broker logs why and exits non-zero instead of serving
/// clients without routing. The testkit hook switches the guard's spelling off, so the real
/// router dies the way it did before the guard.
#[tokio::test]
async fn the_broker_exits_when_the_router_thread_dies() {
    let dir = ScratchDir::new("router-dies");
    let config = "listener 0 127.0.0.1\nlog_type all\nallow_anonymous true\n";
    let broker =
        BrokerProcess::start_in(Path::new(BINARY), dir.path(), config, &[("DYNSEC_TESTKIT_UNGUARDED_ROUTER", "1")]);
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(4, "doomed-sub")).await;
    assert_eq!(subscriber.subscribe(1, &[("#", 0)]).await, [0]);
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "doomed-pub")).await;
    publisher.publish("é/x", b"boom", 0, false, 0).await;
    let (status, log) = broker.wait_for_exit();
    assert!(status.is_some_and(|code| code != 0), "the broker must exit non-zero, got {status:?}:\n{log}");
    assert!(log.contains("routing stopped: the rumqttd router thread has died"), "{log}");
}
