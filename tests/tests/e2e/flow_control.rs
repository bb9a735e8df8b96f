//! Flow control (issue 21), on the real binary with raw clients and, where mosquitto follows the
//! specification, on mosquitto 2.1.2 with the same steps: the client's v5 Receive Maximum and
//! `max_inflight_messages` bound the QoS 1/2 deliveries a client has unacknowledged (the rest
//! wait in order, QoS 0 passes them), the broker's Receive Maximum is announced and enforced, and
//! packet ids a client still holds (a PUBREL outstanding, also after a resumed session) are not
//! given to new deliveries.

use std::net::SocketAddr;
use std::path::Path;

use bytes::{Buf, Bytes};
use dynsec_broker::testkit::{self, Connect, Frame, Next, RawClient, Received};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};
use dynsec_tests::mosquitto::{self, Mosquitto};

const PUBACK: u8 = testkit::PUBACK;
const PUBREC: u8 = testkit::PUBREC;
const PUBREL: u8 = testkit::PUBREL;
const PUBCOMP: u8 = testkit::PUBCOMP;

fn ours(config: &str) -> BrokerProcess {
    let binary = Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"));
    BrokerProcess::start(binary, &format!("allow_anonymous true\n{config}"))
}

/// mosquitto 2.1.2 with anonymous clients allowed everything and `config` lines, if installed.
fn mosquitto_21(test: &str, dir: &ScratchDir, config: &[&str]) -> Option<Mosquitto> {
    let installation = mosquitto::mosquitto_21(test)?;
    let mut lines = vec!["allow_anonymous true".to_owned()];
    lines.extend(config.iter().map(|line| (*line).to_owned()));
    Some(Mosquitto::start_installed(Some(&installation), dir.path(), &lines))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn client(port: u16, version: u8, id: &str) -> RawClient {
    RawClient::connected(addr(port), &Connect::new(version, id)).await
}

/// Publishes and waits until the broker has the message (for QoS 2, through PUBCOMP).
async fn publish_confirmed(publisher: &mut RawClient, topic: &str, payload: &str, qos: u8, pkid: u16) {
    publisher.publish(topic, payload.as_bytes(), qos, false, pkid).await;
    match qos {
        1 => assert_eq!(publisher.expect(PUBACK).await.pkid(), pkid),
        2 => {
            assert_eq!(publisher.expect(PUBREC).await.pkid(), pkid);
            publisher.send(&testkit::ack(PUBREL, pkid)).await;
            assert_eq!(publisher.expect(PUBCOMP).await.pkid(), pkid);
        }
        _ => assert!(publisher.ping().await.is_empty()),
    }
}

/// The payload of a delivery, as text, with its QoS: `m1@1`.
fn seen(received: &Received) -> String {
    format!("{}@{}", String::from_utf8_lossy(&received.payload), received.qos)
}

/// Finishes a delivery the way a client does (QoS 2: PUBREC, PUBREL, PUBCOMP).
async fn acknowledge(client: &mut RawClient, received: &Received) {
    match received.qos {
        1 => client.send(&testkit::ack(PUBACK, received.pkid)).await,
        2 => {
            client.send(&testkit::ack(PUBREC, received.pkid)).await;
            assert_eq!(client.expect(PUBREL).await.pkid(), received.pkid);
            client.send(&testkit::ack(PUBCOMP, received.pkid)).await;
        }
        _ => {}
    }
}

trait ExpectAny {
    /// The next packet, whatever it is.
    async fn expect_any(&mut self) -> Frame;
}

impl ExpectAny for RawClient {
    async fn expect_any(&mut self) -> Frame {
        match self.next(testkit::WAIT).await {
            Next::Frame(frame) => frame,
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

/// The next packet if one comes within the quiet period (`None` otherwise).
async fn next_or_quiet(client: &mut RawClient) -> Option<Frame> {
    match client.next(testkit::QUIET).await {
        Next::Frame(frame) => Some(frame),
        Next::Timeout => None,
        Next::Closed => panic!("the broker closed the connection"),
    }
}

/// A v5 subscriber with Receive Maximum 2 and four messages at `qos`: what arrives, step by
/// step (`|` marks "nothing more arrives now").
async fn receive_maximum_transcript(port: u16, qos: u8) -> Vec<String> {
    let tag = format!("fc-rm{qos}");
    let connect = Connect { receive_maximum: Some(2), ..Connect::new(5, &format!("{tag}-sub")) };
    let mut subscriber = RawClient::connected(addr(port), &connect).await;
    assert_eq!(subscriber.subscribe(1, &[("fc/rm", qos)]).await, [qos]);
    let mut publisher = client(port, 5, &format!("{tag}-pub")).await;
    for i in 1..=4u16 {
        publish_confirmed(&mut publisher, "fc/rm", &format!("m{i}"), qos, i).await;
    }
    let mut log = Vec::new();
    let first = subscriber.expect_publish().await;
    let second = subscriber.expect_publish().await;
    log.extend([seen(&first), seen(&second)]);
    assert!(next_or_quiet(&mut subscriber).await.is_none(), "a third delivery beyond Receive Maximum 2");
    log.push("|".into());
    if qos == 2 {
        // The exchange keeps its place until PUBCOMP.
        subscriber.send(&testkit::ack(PUBREC, first.pkid)).await;
        assert_eq!(subscriber.expect(PUBREL).await.pkid(), first.pkid);
        assert!(next_or_quiet(&mut subscriber).await.is_none(), "a delivery before the PUBCOMP");
        log.push("pubrec|".into());
        subscriber.send(&testkit::ack(PUBCOMP, first.pkid)).await;
    } else {
        acknowledge(&mut subscriber, &first).await;
    }
    let third = subscriber.expect_publish().await;
    log.push(seen(&third));
    assert!(next_or_quiet(&mut subscriber).await.is_none());
    log.push("|".into());
    acknowledge(&mut subscriber, &second).await;
    let fourth = subscriber.expect_publish().await;
    log.push(seen(&fourth));
    for received in [&third, &fourth] {
        acknowledge(&mut subscriber, received).await;
    }
    assert!(next_or_quiet(&mut subscriber).await.is_none());
    log
}

#[tokio::test]
async fn the_clients_receive_maximum_bounds_unacknowledged_deliveries() {
    let broker = ours("");
    let expected = |q: u8| -> Vec<String> {
        let mut log = vec![format!("m1@{q}"), format!("m2@{q}"), "|".into()];
        if q == 2 {
            log.push("pubrec|".into());
        }
        log.extend([format!("m3@{q}"), "|".into(), format!("m4@{q}")]);
        log
    };
    for qos in [1, 2] {
        assert_eq!(receive_maximum_transcript(broker.port(), qos).await, expected(qos), "QoS {qos}");
    }
    let dir = ScratchDir::new("fc-rm-21");
    if let Some(oracle) = mosquitto_21("receive_maximum", &dir, &[]) {
        for qos in [1, 2] {
            assert_eq!(receive_maximum_transcript(oracle.port(), qos).await, expected(qos), "mosquitto, QoS {qos}");
        }
    }
}

/// A full window (Receive Maximum 1): a QoS 1 delivery waits, a QoS 0 one passes it; the
/// router's acknowledgements stay in its order (rumqttd drops a link that acknowledges out of
/// order), so the connection keeps working. What arrives, in order.
async fn qos0_passes_transcript(port: u16) -> Vec<String> {
    let connect = Connect { receive_maximum: Some(1), ..Connect::new(5, "fc-pass-sub") };
    let mut subscriber = RawClient::connected(addr(port), &connect).await;
    subscriber.subscribe(1, &[("fc/pass", 1)]).await;
    let mut publisher = client(port, 5, "fc-pass-pub").await;
    publish_confirmed(&mut publisher, "fc/pass", "a", 1, 1).await;
    publish_confirmed(&mut publisher, "fc/pass", "b", 1, 2).await;
    publish_confirmed(&mut publisher, "fc/pass", "c", 0, 0).await;
    let mut log = Vec::new();
    let a = subscriber.expect_publish().await;
    let c = subscriber.expect_publish().await;
    log.extend([seen(&a), seen(&c)]);
    assert!(next_or_quiet(&mut subscriber).await.is_none());
    acknowledge(&mut subscriber, &a).await;
    let b = subscriber.expect_publish().await;
    log.push(seen(&b));
    acknowledge(&mut subscriber, &b).await;
    publish_confirmed(&mut publisher, "fc/pass", "d", 1, 3).await;
    let d = subscriber.expect_publish().await;
    log.push(seen(&d));
    acknowledge(&mut subscriber, &d).await;
    assert!(subscriber.ping().await.is_empty());
    log
}

#[tokio::test]
async fn qos0_deliveries_pass_waiting_ones_and_router_acks_stay_in_order() {
    let broker = ours("");
    assert_eq!(qos0_passes_transcript(broker.port()).await, ["a@1", "c@0", "b@1", "d@1"]);
    let dir = ScratchDir::new("fc-pass-21");
    if let Some(oracle) = mosquitto_21("qos0_passes", &dir, &[]) {
        assert_eq!(qos0_passes_transcript(oracle.port()).await, ["a@1", "c@0", "b@1", "d@1"], "mosquitto");
    }
}

/// How many QoS 1 deliveries of five a subscriber gets before it acknowledges any.
async fn deliveries_before_ack(port: u16, connect: &Connect, topic: &str) -> usize {
    let mut subscriber = RawClient::connected(addr(port), connect).await;
    subscriber.subscribe(1, &[(topic, 1)]).await;
    let mut publisher = client(port, 4, &format!("{}-pub", connect.client_id)).await;
    for i in 1..=5u16 {
        publish_confirmed(&mut publisher, topic, &format!("m{i}"), 1, i).await;
    }
    let mut received = Vec::new();
    while let Some(frame) = next_or_quiet(&mut subscriber).await {
        received.push(frame.publish(subscriber.v5));
    }
    let count = received.len();
    // The rest follow once these are acknowledged.
    for message in &received {
        acknowledge(&mut subscriber, message).await;
    }
    while received.len() < 5 {
        let message = subscriber.expect_publish().await;
        acknowledge(&mut subscriber, &message).await;
        received.push(message);
    }
    let payloads: Vec<_> = received.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
    assert_eq!(payloads, ["m1", "m2", "m3", "m4", "m5"], "in order");
    count
}

#[tokio::test]
async fn max_inflight_messages_caps_every_client() {
    let broker = ours("max_inflight_messages 3\n");
    let v311 = Connect::new(4, "fc-cap4");
    assert_eq!(deliveries_before_ack(broker.port(), &v311, "fc/cap4").await, 3, "MQTT 3.1.1");
    let v5 = Connect { receive_maximum: Some(10), ..Connect::new(5, "fc-cap5") };
    assert_eq!(deliveries_before_ack(broker.port(), &v5, "fc/cap5").await, 3, "v5, Receive Maximum 10");
    let v5_lower = Connect { receive_maximum: Some(2), ..Connect::new(5, "fc-cap5-2") };
    assert_eq!(deliveries_before_ack(broker.port(), &v5_lower, "fc/cap5-2").await, 2, "v5, Receive Maximum 2");
    let unlimited = ours("max_inflight_messages 0\n");
    assert_eq!(deliveries_before_ack(unlimited.port(), &v311, "fc/cap0").await, 5, "max_inflight_messages 0");

    let dir = ScratchDir::new("fc-cap-21");
    if let Some(oracle) = mosquitto_21("max_inflight_messages", &dir, &["max_inflight_messages 3"]) {
        assert_eq!(deliveries_before_ack(oracle.port(), &v311, "fc/cap4").await, 3, "mosquitto, MQTT 3.1.1");
        // (mosquitto lets a v5 client's Receive Maximum replace max_inflight_messages: not compared.)
        assert_eq!(deliveries_before_ack(oracle.port(), &v5_lower, "fc/cap5-2").await, 2, "mosquitto, v5");
    }
}

/// The Receive Maximum property of a v5 CONNACK (`None`: absent, meaning 65535).
fn connack_receive_maximum(connack: &Frame) -> Option<u16> {
    let mut body: Bytes = connack.body.slice(2..);
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let byte = body.get_u8();
        len |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut props = body.split_to(len);
    let mut found = None;
    while props.has_remaining() {
        match props.get_u8() {
            33 => found = Some(props.get_u16()),
            19 | 34 => drop(props.get_u16()),
            39 => drop(props.get_u32()),
            18 => {
                let n = usize::from(props.get_u16());
                props.advance(n);
            }
            other => panic!("unexpected CONNACK property {other}"),
        }
    }
    found
}

async fn announced(port: u16) -> Option<u16> {
    let (_client, reply) = RawClient::connect(addr(port), &Connect::new(5, "fc-announce")).await;
    let Next::Frame(connack) = reply else { panic!("no CONNACK: {reply:?}") };
    assert_eq!((connack.packet_type, connack.reason()), (testkit::CONNACK, 0));
    connack_receive_maximum(&connack)
}

#[tokio::test]
async fn the_brokers_receive_maximum_is_announced_as_mosquitto_does() {
    assert_eq!(announced(ours("").port()).await, Some(20), "default max_inflight_messages");
    assert_eq!(announced(ours("max_inflight_messages 7\n").port()).await, Some(7));
    assert_eq!(announced(ours("max_inflight_messages 0\n").port()).await, None, "no limit: not announced");
    let dir = ScratchDir::new("fc-announce-21");
    if let Some(oracle) = mosquitto_21("announce", &dir, &[]) {
        assert_eq!(announced(oracle.port()).await, Some(20), "mosquitto");
    }
    let dir = ScratchDir::new("fc-announce7-21");
    if let Some(oracle) = mosquitto_21("announce", &dir, &["max_inflight_messages 7"]) {
        assert_eq!(announced(oracle.port()).await, Some(7), "mosquitto");
    }
}

/// MQTT 5 §4.9: a v5 client with more unfinished QoS 2 messages than the broker's Receive
/// Maximum is disconnected with 0x93. (mosquitto 2.1.2 answers PUBREC 0x97 and drops the message
/// instead: docs/known-differences.md.)
#[tokio::test]
async fn exceeding_the_brokers_receive_maximum_disconnects_a_v5_client() {
    let broker = ours("max_inflight_messages 3\n");
    let mut subscriber = client(broker.port(), 5, "fc-in-sub").await;
    subscriber.subscribe(1, &[("fc/in", 2)]).await;

    // Within the maximum, releasing as it goes: fine.
    let mut polite = client(broker.port(), 5, "fc-in-polite").await;
    for pkid in 1..=3 {
        polite.publish("fc/in", b"p", 2, false, pkid).await;
        assert_eq!(polite.expect(PUBREC).await.pkid(), pkid);
    }
    polite.send(&testkit::ack(PUBREL, 2)).await;
    assert_eq!(polite.expect(PUBCOMP).await.pkid(), 2);
    polite.publish("fc/in", b"p", 2, false, 4).await;
    assert_eq!(polite.expect(PUBREC).await.pkid(), 4);
    // A duplicate of an unfinished one is not a new message.
    polite.send(&testkit::publish_with(true, "fc/in", b"p", 2, false, true, 4, &[])).await;
    assert_eq!(polite.expect(PUBREC).await.pkid(), 4);
    assert!(polite.ping().await.is_empty());

    // One more than the maximum.
    let mut greedy = client(broker.port(), 5, "fc-in-greedy").await;
    for pkid in 1..=4 {
        greedy.publish("fc/in", b"g", 2, false, pkid).await;
    }
    let frames = greedy.expect_closed().await;
    let kinds: Vec<_> = frames.iter().map(|f| (f.packet_type, f.pkid_or_reason())).collect();
    assert_eq!(kinds, [(PUBREC, 1), (PUBREC, 2), (PUBREC, 3), (testkit::DISCONNECT, 0x93)]);

    // MQTT 3.1.1 has no Receive Maximum: such a client is not held to it.
    let mut v311 = client(broker.port(), 4, "fc-in-311").await;
    for pkid in 1..=4 {
        v311.publish("fc/in", b"v", 2, false, pkid).await;
        assert_eq!(v311.expect(PUBREC).await.pkid(), pkid);
    }
    assert!(v311.ping().await.is_empty());
    // The subscriber got every accepted message (three at a time: max_inflight_messages).
    let mut payloads = Vec::new();
    while payloads.len() < 4 + 3 + 4 {
        let frame = subscriber.expect_any().await;
        match frame.packet_type {
            testkit::PUBLISH => {
                let message = frame.publish(true);
                subscriber.send(&testkit::ack(PUBREC, message.pkid)).await;
                payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
            }
            PUBREL => subscriber.send(&testkit::ack(PUBCOMP, frame.pkid())).await,
            other => panic!("unexpected packet type {other}"),
        }
    }
    payloads.sort();
    assert_eq!(payloads.concat(), "gggppppvvvv", "3 of the greedy client's, 4 of each other's");
}

/// A client that keeps answering while it is disconnected for exceeding the Receive Maximum
/// (as Paho's test_flow_control2 does: a PUBREL for each PUBREC) still reads every PUBREC and the
/// DISCONNECT: the broker reads until the client closes instead of resetting the connection
/// (after a reset the client's next send fails before it has read the DISCONNECT).
#[tokio::test]
async fn a_disconnected_client_still_reads_the_disconnect_while_it_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = ours("max_inflight_messages 2\n");
    let mut stream = tokio::net::TcpStream::connect(broker.addr()).await.unwrap();
    stream.write_all(&Connect::new(5, "fc-linger").encode()).await.unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], 0x20, "CONNACK");
    let mut connack = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut connack).await.unwrap();
    for pkid in 1..=3 {
        stream.write_all(&testkit::publish(true, "fc/linger", b"x", 2, false, pkid)).await.unwrap();
    }
    // One packet at a time, each PUBREC answered, giving the broker time to have closed first.
    for pkid in 1..=2u8 {
        let mut pubrec = [0u8; 4];
        stream.read_exact(&mut pubrec).await.unwrap();
        assert_eq!(pubrec, [0x50, 2, 0, pkid]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let answered = stream.write_all(&testkit::ack(PUBREL, u16::from(pkid))).await;
        assert!(answered.is_ok(), "PUBREL {pkid}: the connection was reset: {answered:?}");
    }
    let mut rest = Vec::new();
    let end = tokio::time::timeout(testkit::WAIT, stream.read_to_end(&mut rest)).await.expect("the broker closes");
    assert!(end.is_ok(), "the connection was reset: {end:?}, after {rest:?}");
    assert_eq!(rest, [0xE0, 1, 0x93], "DISCONNECT 0x93");
}

trait PkidOrReason {
    fn pkid_or_reason(&self) -> u16;
}

impl PkidOrReason for Frame {
    fn pkid_or_reason(&self) -> u16 {
        if self.packet_type == testkit::DISCONNECT { u16::from(self.reason()) } else { self.pkid() }
    }
}

/// A QoS 2 subscriber that answers a PUBREL with nothing keeps that packet id: 120 more QoS 2
/// deliveries (the router numbers 1..=100 and starts again) never reuse it. Returns the packet
/// ids the later deliveries came with.
async fn ids_while_pubrel_outstanding(port: u16) -> Vec<u16> {
    let mut subscriber = client(port, 4, "fc-ids-sub").await;
    subscriber.subscribe(1, &[("fc/ids", 2)]).await;
    let mut publisher = client(port, 4, "fc-ids-pub").await;
    publish_confirmed(&mut publisher, "fc/ids", "held", 2, 1).await;
    let held = subscriber.expect_publish().await;
    subscriber.send(&testkit::ack(PUBREC, held.pkid)).await;
    assert_eq!(subscriber.expect(PUBREL).await.pkid(), held.pkid);
    let mut ids = Vec::new();
    for i in 0..120u16 {
        publish_confirmed(&mut publisher, "fc/ids", "next", 2, 2 + i).await;
        let message = subscriber.expect_publish().await;
        assert_ne!(message.pkid, held.pkid, "packet id {} reused while its PUBREL is outstanding", held.pkid);
        acknowledge(&mut subscriber, &message).await;
        ids.push(message.pkid);
    }
    subscriber.send(&testkit::ack(PUBCOMP, held.pkid)).await;
    assert!(subscriber.ping().await.is_empty());
    ids
}

#[tokio::test]
async fn packet_ids_are_not_reused_while_a_pubrel_is_outstanding() {
    let broker = ours("");
    ids_while_pubrel_outstanding(broker.port()).await;
    let dir = ScratchDir::new("fc-ids-21");
    if let Some(oracle) = mosquitto_21("pubrel_outstanding", &dir, &[]) {
        ids_while_pubrel_outstanding(oracle.port()).await;
    }
}

/// A persistent session left with a PUBREL outstanding: on resume the PUBREL comes again with
/// its packet id, and new deliveries use other ids until it is answered. Returns (the re-sent
/// PUBREL's id, the held id, the ids of the next deliveries).
async fn resumed_session_ids(port: u16, version: u8) -> (u16, u16, Vec<u16>) {
    let id = format!("fc-resume-{version}");
    let persistent =
        |clean| Connect { clean, session_expiry: (version == 5).then_some(600), ..Connect::new(version, &id) };
    // Start clean, then keep the session.
    drop(RawClient::connected(addr(port), &persistent(true)).await);
    let mut subscriber = RawClient::connected(addr(port), &persistent(false)).await;
    subscriber.subscribe(1, &[("fc/resume", 2)]).await;
    let mut publisher = client(port, version, &format!("{id}-pub")).await;
    publish_confirmed(&mut publisher, "fc/resume", "held", 2, 1).await;
    let held = subscriber.expect_publish().await;
    subscriber.send(&testkit::ack(PUBREC, held.pkid)).await;
    assert_eq!(subscriber.expect(PUBREL).await.pkid(), held.pkid);
    subscriber.send(&testkit::disconnect()).await;
    drop(subscriber);

    let (mut subscriber, connack) = RawClient::connect(addr(port), &persistent(false)).await;
    let Next::Frame(connack) = connack else { panic!("no CONNACK: {connack:?}") };
    assert!(connack.session_present(), "the session was kept");
    let resent = subscriber.expect(PUBREL).await.pkid();
    let mut ids = Vec::new();
    for i in 0..3u16 {
        publish_confirmed(&mut publisher, "fc/resume", "next", 2, 2 + i).await;
        let message = subscriber.expect_publish().await;
        acknowledge(&mut subscriber, &message).await;
        ids.push(message.pkid);
    }
    subscriber.send(&testkit::ack(PUBCOMP, resent)).await;
    assert!(subscriber.ping().await.is_empty(), "nothing more is owed");
    (resent, held.pkid, ids)
}

#[tokio::test]
async fn packet_ids_are_not_reused_while_a_pubrel_is_outstanding_after_a_resumed_session() {
    let broker = ours("");
    let dir = ScratchDir::new("fc-resume-21");
    let oracle = mosquitto_21("resumed_session", &dir, &[]);
    for version in [4, 5] {
        let mut ports = vec![("ours", broker.port())];
        ports.extend(oracle.as_ref().map(|o| ("mosquitto", o.port())));
        for (name, port) in ports {
            let (resent, held, ids) = resumed_session_ids(port, version).await;
            assert_eq!(resent, held, "{name}, MQTT version {version}: the PUBREL comes again with its id");
            assert!(!ids.contains(&held), "{name}, MQTT version {version}: id {held} reused: {ids:?}");
        }
    }
}

/// A delivery whose Message Expiry Interval runs out while it waits for room is not delivered.
async fn expired_while_waiting(port: u16) -> Vec<String> {
    let connect = Connect { receive_maximum: Some(1), ..Connect::new(5, "fc-expiry-sub") };
    let mut subscriber = RawClient::connected(addr(port), &connect).await;
    subscriber.subscribe(1, &[("fc/expiry", 1)]).await;
    let mut publisher = client(port, 5, "fc-expiry-pub").await;
    publish_confirmed(&mut publisher, "fc/expiry", "first", 1, 1).await;
    let expiry = [2, 0, 0, 0, 1]; // Message Expiry Interval 1 s
    publisher.send(&testkit::publish_with(true, "fc/expiry", b"short", 1, false, false, 2, &expiry)).await;
    assert_eq!(publisher.expect(PUBACK).await.pkid(), 2);
    publish_confirmed(&mut publisher, "fc/expiry", "last", 1, 3).await;
    let first = subscriber.expect_publish().await;
    assert!(next_or_quiet(&mut subscriber).await.is_none());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    acknowledge(&mut subscriber, &first).await;
    let mut log = vec![seen(&first)];
    let next = subscriber.expect_publish().await;
    acknowledge(&mut subscriber, &next).await;
    log.push(seen(&next));
    assert!(next_or_quiet(&mut subscriber).await.is_none());
    log
}

#[tokio::test]
async fn a_delivery_that_expires_while_waiting_is_dropped() {
    let broker = ours("");
    assert_eq!(expired_while_waiting(broker.port()).await, ["first@1", "last@1"]);
    let dir = ScratchDir::new("fc-expiry-21");
    if let Some(oracle) = mosquitto_21("expired_while_waiting", &dir, &[]) {
        assert_eq!(expired_while_waiting(oracle.port()).await, ["first@1", "last@1"], "mosquitto");
    }
}
