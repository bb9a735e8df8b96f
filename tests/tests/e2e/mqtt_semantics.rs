//! MQTT delivery semantics the gate owns on top of rumqttd's router (issue 21), each checked on
//! the real binary with raw clients and, where mosquitto follows the specification, on mosquitto
//! 2.1.2 with the same steps: delivery QoS `min(publish, granted)`, the retain flag (live, on
//! subscribe, Retain As Published), Retain Handling, repeated SUBSCRIBE, empty messages and
//! retained messages, No Local, overlapping subscriptions, subscription identifiers, v5
//! properties, message expiry and outgoing topic aliases.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use dynsec_broker::testkit::{self, Connect, RawClient, Received};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};
use dynsec_tests::mosquitto::{self, Mosquitto};
use rumqttd::protocol::{Packet, Protocol as _, PublishProperties};

fn ours() -> BrokerProcess {
    BrokerProcess::start(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), "allow_anonymous true\n")
}

/// mosquitto 2.1.2 with anonymous clients allowed everything, if it is installed.
fn mosquitto_21(test: &str, dir: &ScratchDir) -> Option<Mosquitto> {
    let installation = mosquitto::mosquitto_21(test)?;
    let config = ["allow_anonymous true".to_owned()];
    Some(Mosquitto::start_installed(Some(&installation), dir.path(), &config))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn client(port: u16, version: u8, id: &str) -> RawClient {
    RawClient::connected(addr(port), &Connect::new(version, id)).await
}

/// Options byte of a v5 subscription.
fn options(qos: u8, no_local: bool, retain_as_published: bool, retain_handling: u8) -> u8 {
    qos | u8::from(no_local) << 2 | u8::from(retain_as_published) << 3 | retain_handling << 4
}

/// The v5 properties of a received PUBLISH, decoded by rumqttd's codec (an implementation
/// independent of the gate's encoder).
fn properties(received: &Received) -> PublishProperties {
    let mut body = BytesMut::new();
    body.put_u16(received.topic.len() as u16);
    body.put_slice(received.topic.as_bytes());
    if received.qos > 0 {
        body.put_u16(received.pkid);
    }
    testkit::put_varint(&mut body, received.properties.len());
    body.put_slice(&received.properties);
    body.put_slice(&received.payload);
    let mut frame = BytesMut::from(&testkit::packet(0x30 | received.qos << 1, &body)[..]);
    let len = frame.len();
    match rumqttd::protocol::v5::V5.read_mut(&mut frame, len) {
        Ok(Packet::Publish(_, properties)) => properties.unwrap_or_default(),
        other => panic!("not a PUBLISH: {other:?}"),
    }
}

/// Acknowledges a QoS 1/2 delivery the way a client does.
async fn acknowledge(client: &mut RawClient, received: &Received) {
    match received.qos {
        1 => client.send(&testkit::ack(4, received.pkid)).await,
        2 => {
            client.send(&testkit::ack(5, received.pkid)).await;
            let pubrel = client.expect(6).await;
            client.send(&testkit::ack(7, pubrel.pkid())).await;
        }
        _ => {}
    }
}

/// Publishes and waits until the broker has it (QoS 1), so that what follows sees it.
async fn publish_acked(client: &mut RawClient, topic: &str, payload: &[u8], retain: bool, pkid: u16) {
    client.publish(topic, payload, 1, retain, pkid).await;
    assert_eq!(client.expect(4).await.pkid(), pkid);
}

/// QoS of each message published at QoS 0, 1 and 2, as received through a QoS 2 subscription.
async fn delivery_qos(port: u16, version: u8) -> Vec<u8> {
    let tag = format!("qos-{version}");
    let mut subscriber = client(port, version, &format!("{tag}-sub")).await;
    assert_eq!(subscriber.subscribe(1, &[("sem/qos", 2)]).await, [2]);
    let mut publisher = client(port, version, &format!("{tag}-pub")).await;
    let mut got = Vec::new();
    for qos in 0..=2u8 {
        let pkid = 10 + u16::from(qos);
        publisher.publish("sem/qos", b"m", qos, false, pkid).await;
        match qos {
            1 => assert_eq!(publisher.expect(4).await.pkid(), pkid),
            // mosquitto routes a QoS 2 message when its PUBREL arrives.
            2 => {
                assert_eq!(publisher.expect(5).await.pkid(), pkid);
                publisher.send(&testkit::ack(6, pkid)).await;
                assert_eq!(publisher.expect(7).await.pkid(), pkid);
            }
            _ => {}
        }
        let received = subscriber.expect_publish().await;
        acknowledge(&mut subscriber, &received).await;
        got.push(received.qos);
    }
    got
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_granted_qos() {
    let broker = ours();
    for version in [4, 5] {
        assert_eq!(delivery_qos(broker.port(), version).await, [0, 1, 2], "MQTT version {version}");
    }
    let dir = ScratchDir::new("sem-qos-21");
    if let Some(oracle) = mosquitto_21("delivery_qos", &dir) {
        assert_eq!(delivery_qos(oracle.port(), 5).await, [0, 1, 2], "mosquitto 2.1.2");
    }
}

/// A retained message: its retain flag for a live subscriber (3.1.1, v5 with and without Retain
/// As Published) and for a later subscriber.
async fn retain_flags(port: u16) -> [bool; 4] {
    let mut v311 = client(port, 4, "rf-311").await;
    v311.subscribe(1, &[("sem/rf", 0)]).await;
    let mut plain = client(port, 5, "rf-plain").await;
    plain.subscribe(1, &[("sem/rf", options(0, false, false, 0))]).await;
    let mut rap = client(port, 5, "rf-rap").await;
    rap.subscribe(1, &[("sem/rf", options(0, false, true, 0))]).await;
    let mut publisher = client(port, 4, "rf-pub").await;
    publish_acked(&mut publisher, "sem/rf", b"kept", true, 1).await;
    let live =
        [v311.expect_publish().await.retain, plain.expect_publish().await.retain, rap.expect_publish().await.retain];
    let mut late = client(port, 4, "rf-late").await;
    late.subscribe(1, &[("sem/rf", 0)]).await;
    let on_subscribe = late.expect_publish().await.retain;
    publish_acked(&mut publisher, "sem/rf", b"", true, 2).await;
    [live[0], live[1], live[2], on_subscribe]
}

#[tokio::test]
async fn the_retain_flag_is_kept_only_on_subscribe_or_as_published() {
    let broker = ours();
    assert_eq!(retain_flags(broker.port()).await, [false, false, true, true]);
    let dir = ScratchDir::new("sem-rf-21");
    if let Some(oracle) = mosquitto_21("retain_flags", &dir) {
        assert_eq!(retain_flags(oracle.port()).await, [false, false, true, true], "mosquitto 2.1.2");
    }
}

#[tokio::test]
async fn an_empty_message_without_retain_is_delivered_and_keeps_the_retained_one() {
    let broker = ours();
    let port = broker.port();
    let mut publisher = client(port, 4, "empty-pub").await;
    publish_acked(&mut publisher, "sem/empty", b"kept", true, 1).await;
    let mut live = client(port, 4, "empty-live").await;
    live.subscribe(1, &[("sem/empty", 1)]).await;
    assert_eq!(&live.expect_publish().await.payload[..], b"kept");
    publish_acked(&mut publisher, "sem/empty", b"", false, 2).await;
    let empty = live.expect_publish().await;
    assert_eq!((&empty.payload[..], empty.retain, empty.qos), (&b""[..], false, 1));
    let mut late = client(port, 4, "empty-late").await;
    late.subscribe(1, &[("sem/empty", 0)]).await;
    let retained = late.expect_publish().await;
    assert_eq!((&retained.payload[..], retained.retain), (&b"kept"[..], true));

    // An empty retained message clears it, and live subscribers receive it as a message.
    publish_acked(&mut publisher, "sem/empty", b"", true, 3).await;
    let cleared = live.expect_publish().await;
    assert_eq!((&cleared.payload[..], cleared.retain), (&b""[..], false));
    late.expect_publish().await;
    let mut later = client(port, 4, "empty-later").await;
    later.subscribe(1, &[("sem/empty", 0)]).await;
    later.expect_quiet().await;
}

/// How many retained messages each SUBSCRIBE brought: a first and a repeated one, per Retain
/// Handling (3.1.1 has none: always sent).
async fn retained_per_subscribe(port: u16, version: u8, retain_handling: u8) -> [usize; 2] {
    let id = format!("rh-{version}-{retain_handling}");
    let mut publisher = client(port, 4, &format!("{id}-pub")).await;
    let topic = format!("sem/{id}/t");
    publish_acked(&mut publisher, &topic, b"r", true, 1).await;
    let mut subscriber = client(port, version, &id).await;
    let filter = format!("sem/{id}/#");
    let mut counts = [0; 2];
    for (pkid, count) in (1..).zip(counts.iter_mut()) {
        subscriber.subscribe(pkid, &[(&filter, options(1, false, false, retain_handling))]).await;
        while let Some(received) = next_publish(&mut subscriber, version == 5).await {
            assert!(received.retain);
            acknowledge(&mut subscriber, &received).await;
            *count += 1;
        }
    }
    publish_acked(&mut publisher, &topic, b"", true, 2).await;
    counts
}

async fn next_publish(client: &mut RawClient, v5: bool) -> Option<Received> {
    match client.next(Duration::from_millis(500)).await {
        testkit::Next::Frame(frame) if frame.packet_type == 3 => Some(frame.publish(v5)),
        testkit::Next::Timeout => None,
        other => panic!("expected a PUBLISH or nothing, got {other:?}"),
    }
}

#[tokio::test]
async fn retained_messages_follow_retain_handling_and_repeated_subscribes() {
    let broker = ours();
    let port = broker.port();
    assert_eq!(retained_per_subscribe(port, 4, 0).await, [1, 1], "3.1.1: on every SUBSCRIBE");
    assert_eq!(retained_per_subscribe(port, 5, 0).await, [1, 1], "v5 Retain Handling 0");
    assert_eq!(retained_per_subscribe(port, 5, 1).await, [1, 0], "v5 Retain Handling 1");
    assert_eq!(retained_per_subscribe(port, 5, 2).await, [0, 0], "v5 Retain Handling 2");
    let dir = ScratchDir::new("sem-rh-21");
    if let Some(oracle) = mosquitto_21("retain_handling", &dir) {
        for (rh, expected) in [(0, [1, 1]), (1, [1, 0]), (2, [0, 0])] {
            assert_eq!(retained_per_subscribe(oracle.port(), 5, rh).await, expected, "mosquitto 2.1.2, RH {rh}");
        }
    }
}

/// Retained messages a persistent session's wildcard brings, per SUBSCRIBE (a first and a
/// repeated one), with `count` retained topics: rumqttd alone replays at most 100 to a QoS 1
/// subscription (docs/rumqttd.md defect 19); mosquitto sends all of them.
async fn persistent_retained_per_subscribe(port: u16, version: u8, retain_handling: u8, count: u16) -> [usize; 2] {
    retained_per_subscribe_in(port, version, false, retain_handling, count).await
}

/// [`persistent_retained_per_subscribe`] in a clean (`clean`) or persistent session.
async fn retained_per_subscribe_in(port: u16, version: u8, clean: bool, retain_handling: u8, count: u16) -> [usize; 2] {
    let id = format!("prs-{version}-{retain_handling}-{}", if clean { "clean" } else { "kept" });
    let mut publisher = client(port, 4, &format!("{id}-pub")).await;
    for i in 1..=count {
        publish_acked(&mut publisher, &format!("sem/{id}/{i}"), format!("r{i}").as_bytes(), true, i).await;
    }
    let mut connect = Connect::new(version, &id);
    connect.clean = clean;
    if version == 5 && !clean {
        connect.session_expiry = Some(600);
    }
    let mut subscriber = RawClient::connected(addr(port), &connect).await;
    let filter = format!("sem/{id}/#");
    let mut counts = [0; 2];
    for (pkid, count) in (1..).zip(counts.iter_mut()) {
        subscriber.subscribe(pkid, &[(&filter, options(1, false, false, retain_handling))]).await;
        let mut topics = std::collections::BTreeSet::new();
        while let Some(received) = next_publish(&mut subscriber, version == 5).await {
            assert!(received.retain);
            assert!(topics.insert(received.topic.clone()), "{} twice", received.topic);
            acknowledge(&mut subscriber, &received).await;
        }
        *count = topics.len();
    }
    counts
}

#[tokio::test]
async fn a_persistent_session_gets_every_retained_message_its_wildcard_matches() {
    let broker = ours();
    let port = broker.port();
    assert_eq!(persistent_retained_per_subscribe(port, 4, 0, 300).await, [300, 300], "3.1.1, clean_session 0");
    assert_eq!(persistent_retained_per_subscribe(port, 5, 0, 300).await, [300, 300], "v5, session expiry, RH 0");
    assert_eq!(persistent_retained_per_subscribe(port, 5, 1, 300).await, [300, 0], "v5, session expiry, RH 1");
    assert_eq!(persistent_retained_per_subscribe(port, 5, 2, 300).await, [0, 0], "v5, session expiry, RH 2");
    let dir = ScratchDir::new("sem-prs-21");
    if let Some(oracle) = mosquitto_21("persistent_retained", &dir) {
        assert_eq!(persistent_retained_per_subscribe(oracle.port(), 5, 0, 300).await, [300, 300], "mosquitto 2.1.2");
    }
}

/// Without the hub's fan-out every subscription is the router's; its retained messages still
/// come from the gate's index, all of them (rumqttd would replay at most one batch of 100:
/// docs/rumqttd.md defect 19).
#[tokio::test]
async fn without_the_fleet_hub_a_new_subscription_gets_every_retained_message_its_wildcard_matches() {
    let binary = Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"));
    let broker = BrokerProcess::start(binary, "allow_anonymous true\ngate_fleet_hub false\n");
    let port = broker.port();
    for clean in [true, false] {
        let kind = if clean { "clean" } else { "persistent" };
        assert_eq!(retained_per_subscribe_in(port, 4, clean, 0, 300).await, [300, 300], "3.1.1, {kind}");
        assert_eq!(retained_per_subscribe_in(port, 5, clean, 0, 300).await, [300, 300], "v5 RH 0, {kind}");
        assert_eq!(retained_per_subscribe_in(port, 5, clean, 1, 300).await, [300, 0], "v5 RH 1, {kind}");
        assert_eq!(retained_per_subscribe_in(port, 5, clean, 2, 300).await, [0, 0], "v5 RH 2, {kind}");
    }
    let dir = ScratchDir::new("sem-nohub-21");
    if let Some(oracle) = mosquitto_21("no_hub_retained", &dir) {
        for clean in [true, false] {
            assert_eq!(retained_per_subscribe_in(oracle.port(), 5, clean, 0, 300).await, [300, 300], "mosquitto 2.1.2");
        }
    }
}

#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let broker = ours();
    let port = broker.port();
    let mut a = client(port, 5, "nl-a").await;
    let mut b = client(port, 5, "nl-b").await;
    for c in [&mut a, &mut b] {
        c.subscribe(1, &[("sem/nl", options(1, true, false, 0))]).await;
    }
    publish_acked(&mut a, "sem/nl", b"from a", false, 5).await;
    let received = b.expect_publish().await;
    assert_eq!(&received.payload[..], b"from a");
    a.expect_quiet().await;
    // Without No Local the publisher receives its own message.
    let mut c = client(port, 5, "nl-c").await;
    c.subscribe(1, &[("sem/nl", options(0, false, false, 0))]).await;
    c.publish("sem/nl", b"from c", 0, false, 0).await;
    assert_eq!(&c.expect_publish().await.payload[..], b"from c");
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_with_every_identifier() {
    let broker = ours();
    let port = broker.port();
    let mut v311 = client(port, 4, "ov-311").await;
    v311.subscribe(1, &[("sem/ov/#", 1), ("sem/ov/x", 2), ("sem/+/x", 0)]).await;
    let mut v5 = client(port, 5, "ov-5").await;
    for (pkid, filter, id) in [(1u16, "sem/ov/#", 7usize), (2, "sem/ov/x", 300)] {
        let mut body = BytesMut::new();
        body.put_u16(pkid);
        let mut props = BytesMut::new();
        props.put_u8(11);
        testkit::put_varint(&mut props, id);
        testkit::put_varint(&mut body, props.len());
        body.put_slice(&props);
        testkit::put_str(&mut body, filter.as_bytes());
        body.put_u8(1);
        v5.send(&testkit::packet(0x82, &body)).await;
        v5.expect(9).await;
    }
    let mut publisher = client(port, 4, "ov-pub").await;
    publish_acked(&mut publisher, "sem/ov/x", b"once", false, 1).await;
    let first = v311.expect_publish().await;
    assert_eq!(first.qos, 1, "the highest granted QoS at or below the publish QoS");
    acknowledge(&mut v311, &first).await;
    v311.expect_quiet().await;
    let got = v5.expect_publish().await;
    assert_eq!(properties(&got).subscription_identifiers, [7, 300]);
    acknowledge(&mut v5, &got).await;
    v5.expect_quiet().await;
}

#[tokio::test]
async fn v5_properties_reach_subscribers_and_expiry_is_aged() {
    let broker = ours();
    let port = broker.port();
    let mut subscriber = client(port, 5, "props-sub").await;
    subscriber.subscribe(1, &[("sem/props", 0)]).await;
    let mut props = BytesMut::new();
    props.put_slice(&[1, 1]); // payload format: UTF-8
    props.put_u8(2);
    props.put_u32(3600); // message expiry
    props.put_u8(8);
    testkit::put_str(&mut props, b"sem/reply");
    props.put_u8(9);
    testkit::put_str(&mut props, b"corr");
    for (k, v) in [("z", "1"), ("a", "2"), ("z", "3")] {
        props.put_u8(38);
        testkit::put_str(&mut props, k.as_bytes());
        testkit::put_str(&mut props, v.as_bytes());
    }
    props.put_u8(3);
    testkit::put_str(&mut props, b"text/plain");
    let mut publisher = client(port, 5, "props-pub").await;
    publisher.send(&testkit::publish_with(true, "sem/props", b"p", 0, true, false, 0, &props)).await;
    let got = properties(&subscriber.expect_publish().await);
    assert_eq!(got.payload_format_indicator, Some(1));
    assert!(got.message_expiry_interval.is_some_and(|left| left <= 3600 && left > 0), "{got:?}");
    assert_eq!(got.response_topic.as_deref(), Some("sem/reply"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr"[..]));
    let users: Vec<_> = got.user_properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(users, ["z=1", "a=2", "z=3"], "user properties in the order they were sent");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));

    // A retained message whose expiry has passed is not sent to a new subscriber.
    let mut short = BytesMut::new();
    short.put_u8(2);
    short.put_u32(1);
    publisher.send(&testkit::publish_with(true, "sem/props/short", b"s", 1, true, false, 2, &short)).await;
    publisher.expect(4).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = client(port, 5, "props-late").await;
    late.subscribe(1, &[("sem/props/short", 0)]).await;
    late.expect_quiet().await;
}

#[tokio::test]
async fn outgoing_topic_aliases_are_per_topic_and_within_the_clients_maximum() {
    let broker = ours();
    let connect = Connect { topic_alias_max: Some(1), ..Connect::new(5, "alias-sub") };
    let mut subscriber = RawClient::connected(broker.addr(), &connect).await;
    subscriber.subscribe(1, &[("sem/alias/+", 0)]).await;
    let mut publisher = client(broker.port(), 5, "alias-pub").await;
    for topic in ["sem/alias/a", "sem/alias/a", "sem/alias/b", "sem/alias/a"] {
        publisher.publish(topic, b"x", 0, false, 0).await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = subscriber.expect_publish().await;
        seen.push((got.topic.clone(), properties(&got).topic_alias));
    }
    let expected = [
        ("sem/alias/a".to_owned(), Some(1)),
        (String::new(), Some(1)),
        ("sem/alias/b".to_owned(), None),
        (String::new(), Some(1)),
    ];
    assert_eq!(seen, expected);
    // Without a Topic Alias Maximum the broker sends none.
    let mut plain = client(broker.port(), 5, "alias-none").await;
    plain.subscribe(1, &[("sem/alias/+", 0)]).await;
    publisher.publish("sem/alias/a", b"x", 0, false, 0).await;
    let got = plain.expect_publish().await;
    assert_eq!((got.topic.as_str(), properties(&got).topic_alias), ("sem/alias/a", None));
}

/// A PUBLISH no filter matches is not handed to the router (`routing::subscribed_filters`, a
/// fleet's telemetry): the first filter that matches the topic, on another connection, counts
/// from its SUBSCRIBE on, for a publisher that had published there already; retained messages
/// are kept whatever matches.
#[tokio::test]
async fn topics_no_filter_matches_are_routed_from_the_first_subscribe_that_matches() {
    let broker = ours();
    let port = broker.port();
    let mut publisher = client(port, 4, "unmatched-pub").await;
    publish_acked(&mut publisher, "fleet/1/telemetry", b"before", false, 1).await;
    publish_acked(&mut publisher, "fleet/1/state", b"retained before", true, 2).await;
    let mut subscriber = client(port, 4, "unmatched-sub").await;
    assert_eq!(subscriber.subscribe(1, &[("fleet/+/telemetry", 1), ("fleet/1/state", 0)]).await, [1, 0]);
    let retained = subscriber.expect_publish().await;
    assert_eq!((&retained.payload[..], retained.retain), (&b"retained before"[..], true));
    publish_acked(&mut publisher, "fleet/1/telemetry", b"after", false, 3).await;
    let received = subscriber.expect_publish().await;
    assert_eq!(&received.payload[..], b"after", "only what was published after the SUBSCRIBE");
    acknowledge(&mut subscriber, &received).await;
    // Another topic still matches nothing, a `$` topic no wildcard-first filter takes either.
    publish_acked(&mut publisher, "fleet/1/other", b"unmatched", false, 4).await;
    let mut everything = client(port, 4, "unmatched-all").await;
    assert_eq!(everything.subscribe(1, &[("#", 0)]).await, [0]);
    assert_eq!(&everything.expect_publish().await.payload[..], b"retained before");
    publish_acked(&mut publisher, "$fleet/1", b"dollar", false, 5).await;
    publish_acked(&mut publisher, "fleet/2/other", b"now matched", false, 6).await;
    assert_eq!(&everything.expect_publish().await.payload[..], b"now matched");
    subscriber.expect_quiet().await;
}
