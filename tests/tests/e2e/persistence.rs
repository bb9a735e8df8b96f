//! Issue 18: persistence (`persistence true`, docs/persistence.md). Retained messages, persistent
//! sessions' subscriptions and the QoS 1 messages queued for an offline persistent subscriber
//! survive a clean restart and a SIGKILL (durable mode, and autosave mode whose log a SIGKILL
//! does not lose: every message acknowledged to its publisher is delivered after the restart); ACLs still apply to what is delivered after a
//! restart; a damaged or foreign persistence file stops the broker with an error naming it and is
//! left as it was; `retain_available false` refuses retained messages. The QoS 2 state of
//! unfinished exchanges (packet ids waiting for PUBREL, PUBRELs owed to a subscriber) and wills
//! waiting for their will delay survive too.

use std::collections::BTreeSet;
use std::path::Path;

use dynsec_broker::testkit::{self, Connect, Next, PUBACK, RawClient, WAIT};
use dynsec_tests::broker::BrokerProcess;

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

const CONFIG: &str = "listener 0 127.0.0.1\nallow_anonymous true\nlog_type all\npersistence true\n";

fn start(dir: &Path, extra: &str) -> BrokerProcess {
    BrokerProcess::start_in(ours(), dir, &format!("{CONFIG}{extra}"), &[])
}

async fn client(broker: &BrokerProcess, version: u8, id: &str, clean: bool) -> RawClient {
    let mut connect = Connect::new(version, id);
    connect.clean = clean;
    if version == 5 && !clean {
        connect.session_expiry = Some(3600);
    }
    RawClient::connected(broker.addr(), &connect).await
}

/// Publishes at QoS 1 and waits for the PUBACK (the message is then acknowledged).
async fn publish_acked(client: &mut RawClient, topic: &str, payload: &[u8], retain: bool, pkid: u16) {
    client.publish(topic, payload, 1, retain, pkid).await;
    let ack = client.expect(PUBACK).await;
    assert_eq!(ack.pkid(), pkid);
}

/// Receives PUBLISHes (acknowledging QoS 1 ones) until nothing more arrives, bounded.
async fn drain(client: &mut RawClient) -> Vec<testkit::Received> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        match client.next(std::time::Duration::from_millis(800)).await {
            Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
                let publish = frame.publish(client.v5);
                if publish.qos == 1 {
                    client.send(&testkit::ack(PUBACK, publish.pkid)).await;
                }
                got.push(publish);
            }
            Next::Frame(_) => {}
            Next::Closed | Next::Timeout => break,
        }
    }
    got
}

fn payloads(received: &[testkit::Received]) -> BTreeSet<String> {
    received.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect()
}

#[tokio::test]
async fn retained_messages_survive_a_clean_restart_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let mut publisher = client(&broker, 4, "retainer", true).await;
    publish_acked(&mut publisher, "state/a", b"a1", true, 1).await;
    publish_acked(&mut publisher, "state/b", b"b1", true, 2).await;
    publish_acked(&mut publisher, "state/c", b"c1", true, 3).await;
    publish_acked(&mut publisher, "state/c", b"", true, 4).await; // cleared
    publish_acked(&mut publisher, "state/a", b"a2", true, 5).await; // replaced
    drop(publisher);
    let (code, log) = broker.terminate();
    assert_eq!(code, Some(0), "{log}");

    let broker = start(dir.path(), "");
    let mut subscriber = client(&broker, 4, "reader", true).await;
    subscriber.subscribe(1, &[("state/#", 1)]).await;
    let got = drain(&mut subscriber).await;
    assert_eq!(payloads(&got), BTreeSet::from(["a2".to_owned(), "b1".to_owned()]), "after a clean restart");
    assert!(got.iter().all(|p| p.retain));

    // Acknowledged, then SIGKILL right away: durable mode kept it.
    let mut publisher = client(&broker, 5, "retainer", true).await;
    publish_acked(&mut publisher, "state/d", b"d1", true, 1).await;
    publish_acked(&mut publisher, "state/b", b"", true, 2).await;
    broker.kill();

    let broker = start(dir.path(), "");
    let mut subscriber = client(&broker, 5, "reader", true).await;
    subscriber.subscribe(1, &[("state/#", 1)]).await;
    let got = drain(&mut subscriber).await;
    assert_eq!(payloads(&got), BTreeSet::from(["a2".to_owned(), "d1".to_owned()]), "after SIGKILL");
    broker.assert_no_panic();
}

/// More retained messages than rumqttd replays to one new subscription (it stops at its outgoing
/// batch, 200) are all there after a restart, for a wildcard and for a single topic: the fleet
/// hub (on by default) fills its index from the store, not from the router's replay.
#[tokio::test]
async fn more_retained_messages_than_the_router_replays_at_once_all_survive_a_restart() {
    const COUNT: u16 = 500;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let mut publisher = client(&broker, 4, "retainer", true).await;
    for i in 1..=COUNT {
        publish_acked(&mut publisher, &format!("many/{i}"), format!("m{i}").as_bytes(), true, i).await;
    }
    drop(publisher);
    let (code, log) = broker.terminate();
    assert_eq!(code, Some(0), "{log}");

    let broker = start(dir.path(), "");
    let mut one = client(&broker, 4, "one-topic", true).await;
    one.subscribe(1, &[("many/377", 1)]).await;
    assert_eq!(payloads(&drain(&mut one).await), BTreeSet::from(["m377".to_owned()]));
    let mut all = client(&broker, 5, "wildcard", true).await;
    all.subscribe(1, &[("many/#", 1)]).await;
    let got = drain(&mut all).await;
    assert_eq!(payloads(&got), (1..=COUNT).map(|i| format!("m{i}")).collect::<BTreeSet<_>>());
    assert_eq!(got.len(), usize::from(COUNT), "each once");
    broker.assert_no_panic();
}

/// A client that sends its PUBLISHes and its DISCONNECT in one write: the read ends at the
/// DISCONNECT, before the point where a read's changes are saved, so they are saved on the way
/// out (and since this session, before the PUBACKs the client may still read: that order only
/// matters for an OS crash, which a test here cannot make). Killed right after the close, the
/// broker still has every message for the offline persistent subscriber.
#[tokio::test]
async fn publishes_sent_with_a_disconnect_in_one_write_are_saved_before_their_pubacks() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let mut subscriber = client(&broker, 4, "keeper", false).await;
    subscriber.subscribe(1, &[("last/#", 1)]).await;
    subscriber.send(&testkit::disconnect()).await;
    subscriber.expect_closed().await;

    let mut publisher = client(&broker, 4, "leaver", true).await;
    let mut write: Vec<u8> = (1..=20u16)
        .flat_map(|i| testkit::publish(false, "last/words", format!("w{i}").as_bytes(), 1, false, i))
        .collect();
    write.extend(testkit::disconnect());
    publisher.send(&write).await;
    let pubacks = publisher.expect_closed().await.iter().filter(|frame| frame.packet_type == PUBACK).count();
    assert_eq!(pubacks, 20, "every PUBACK before the close");
    broker.kill();

    let broker = start(dir.path(), "");
    let mut subscriber = client(&broker, 4, "keeper", false).await;
    let got = drain(&mut subscriber).await;
    assert_eq!(payloads(&got), (1..=20).map(|i| format!("w{i}")).collect::<BTreeSet<_>>());
    broker.assert_no_panic();
}

#[tokio::test]
async fn subscriptions_and_queued_qos1_messages_survive_a_sigkill() {
    queued_messages_survive_a_sigkill("").await;
}

/// Autosave mode with `autosave_interval 0` never syncs before shutdown, and acknowledges without
/// waiting for a sync; a SIGKILL of the process still loses nothing (the written log is in the
/// page cache for the restart's replay, docs/persistence.md "Modes").
#[tokio::test]
async fn autosave_mode_loses_nothing_acknowledged_in_a_sigkill() {
    queued_messages_survive_a_sigkill("gate_persistence_mode autosave\nautosave_interval 0\n").await;
}

async fn queued_messages_survive_a_sigkill(extra: &str) {
    for version in [4u8, 5] {
        let dir = tempfile::tempdir().unwrap();
        let broker = start(dir.path(), extra);
        let id = format!("persistent-{version}");
        let mut subscriber = client(&broker, version, &id, false).await;
        subscriber.subscribe(1, &[("queue/#", 1), ("other/+", 1)]).await;
        subscriber.send(&testkit::disconnect()).await;
        subscriber.expect_closed().await;

        // Offline: 30 messages acknowledged to the publisher, then the broker is killed.
        let mut publisher = client(&broker, 4, &format!("feeder-{version}"), true).await;
        for i in 0..30u16 {
            publish_acked(&mut publisher, &format!("queue/{}", i % 3), format!("m{i}").as_bytes(), false, i + 1).await;
        }
        // Then 200 in one write, so that reads of many messages share one log record and one sync
        // (durable mode's group commit, docs/persistence.md), killed as soon as the last PUBACK is
        // in: the log, not yet folded or checkpointed into redb, is what the restart replays.
        let burst: Vec<u8> = (0..200u16)
            .flat_map(|i| {
                testkit::publish(false, &format!("queue/{}", i % 3), format!("b{i}").as_bytes(), 1, false, 100 + i)
            })
            .collect();
        publisher.send(&burst).await;
        // The connection reads on while a read's record is synced (pipelining): the PUBACKs
        // still come in the order of their PUBLISHes.
        for i in 0..200u16 {
            assert_eq!(publisher.expect(PUBACK).await.pkid(), 100 + i, "v{version}: PUBACKs in order");
        }
        broker.kill();

        let broker = start(dir.path(), extra);
        let mut connect = Connect::new(version, &id);
        connect.clean = false;
        if version == 5 {
            connect.session_expiry = Some(3600);
        }
        let (mut subscriber, connack) = RawClient::connect(broker.addr(), &connect).await;
        match connack {
            Next::Frame(frame) => assert!(frame.session_present(), "v{version}: the session was restored"),
            other => panic!("v{version}: no CONNACK: {other:?}"),
        }
        let got = drain(&mut subscriber).await;
        let expected: BTreeSet<String> =
            (0..30).map(|i| format!("m{i}")).chain((0..200).map(|i| format!("b{i}"))).collect();
        assert_eq!(payloads(&got), expected, "v{version}: every acknowledged message after the SIGKILL");
        assert!(got.len() <= 460, "v{version}: at most one duplicate each ({})", got.len());

        // The restored subscription routes what is published now.
        let mut publisher = client(&broker, 4, &format!("feeder-{version}"), true).await;
        publish_acked(&mut publisher, "other/x", b"live", false, 1).await;
        let got = drain(&mut subscriber).await;
        assert_eq!(payloads(&got), BTreeSet::from(["live".to_owned()]), "v{version}");

        // Delivered and acknowledged: not again after another restart.
        drop(subscriber);
        drop(publisher);
        let (code, log) = broker.terminate();
        assert_eq!(code, Some(0), "{log}");
        let broker = start(dir.path(), extra);
        let mut subscriber = RawClient::connected(broker.addr(), &connect).await;
        let got = drain(&mut subscriber).await;
        assert!(got.is_empty(), "v{version}: nothing twice after a clean restart: {:?}", payloads(&got));
        broker.assert_no_panic();
    }
}

#[tokio::test]
async fn acls_apply_to_what_is_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite open/#\ntopic write closed/#\nuser nobody\n").unwrap();
    let extra = format!("acl_file {}\n", acl.display());
    let broker = start(dir.path(), &extra);
    let mut publisher = client(&broker, 4, "p", true).await;
    publish_acked(&mut publisher, "open/1", b"visible", true, 1).await;
    publish_acked(&mut publisher, "closed/1", b"hidden", true, 2).await;
    broker.kill();

    let broker = start(dir.path(), &extra);
    let mut subscriber = client(&broker, 4, "s", true).await;
    subscriber.subscribe(1, &[("#", 1)]).await;
    let got = drain(&mut subscriber).await;
    assert_eq!(payloads(&got), BTreeSet::from(["visible".to_owned()]));
}

#[test]
fn damaged_and_foreign_persistence_files_stop_the_broker_by_name() {
    let cases: [(&str, &str, Vec<u8>, &str); 3] = [
        ("dynsec-broker.redb", "", b"not a database, just some text".repeat(40), "dynsec-broker.redb"),
        (
            "mosquitto.db",
            "persistence_file mosquitto.db\n",
            b"\x00\xb5\x00mosquitto db\x00\x00\x00\x06rest of a mosquitto file".to_vec(),
            "mosquitto persistence file",
        ),
        ("dynsec-broker.redb", "", Vec::new(), ""),
    ];
    for (file, extra, contents, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        if contents.is_empty() {
            // A truncated store: a good one cut to a third.
            let broker = start(dir.path(), "");
            let publisher = async {
                let mut publisher = client(&broker, 4, "p", true).await;
                for i in 0..40u16 {
                    publish_acked(&mut publisher, &format!("t/{i}"), &[7u8; 4000], true, i + 1).await;
                }
            };
            tokio::runtime::Runtime::new().unwrap().block_on(publisher);
            let (code, _) = broker.terminate();
            assert_eq!(code, Some(0));
            let whole = std::fs::read(&path).unwrap();
            std::fs::write(&path, &whole[..whole.len() / 3]).unwrap();
        } else {
            std::fs::write(&path, &contents).unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let (code, log) = BrokerProcess::start_failure_in(ours(), dir.path(), &format!("{CONFIG}{extra}"));
        assert!(matches!(code, Some(c) if c != 0), "{file}: refused, not started: {code:?} {log}");
        assert!(log.contains(&*path.to_string_lossy()) || log.contains(file), "{file}: named: {log}");
        assert!(log.contains(expected), "{file}: {expected:?} in {log}");
        assert!(!log.contains("panicked at") || log.contains("persistence file is damaged"), "{log}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{file}: left as it was");
    }
}

#[tokio::test]
async fn retain_available_false_refuses_retained_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "retain_available false\n");
    let mut v5 = client(&broker, 5, "r5", true).await;
    v5.publish("t", b"x", 1, true, 1).await;
    let frames = v5.expect_closed().await;
    let disconnect = frames.iter().find(|f| f.packet_type == testkit::DISCONNECT).expect("a DISCONNECT");
    assert_eq!(disconnect.body[0], 0x9A, "Retain not supported");
    let mut v4 = client(&broker, 4, "r4", true).await;
    v4.publish("t", b"x", 1, true, 1).await;
    assert!(v4.expect_closed().await.iter().all(|f| f.packet_type != PUBACK));
    let _ = WAIT;
}

#[tokio::test]
async fn a_retained_will_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let mut watcher = client(&broker, 4, "watcher", true).await;
    watcher.subscribe(1, &[("status/#", 1)]).await;
    let mut connect = Connect::new(4, "device");
    connect.will = Some(("status/device".into(), b"offline".to_vec(), 1, true));
    let device = RawClient::connected(broker.addr(), &connect).await;
    drop(device); // closed without DISCONNECT: the will goes out
    let will = watcher.expect_publish().await;
    assert_eq!(&will.payload[..], b"offline");
    drop(watcher);
    let (code, log) = broker.terminate();
    assert_eq!(code, Some(0), "{log}");

    let broker = start(dir.path(), "");
    let mut reader = client(&broker, 4, "reader", true).await;
    reader.subscribe(1, &[("status/#", 1)]).await;
    let got = drain(&mut reader).await;
    assert_eq!(payloads(&got), BTreeSet::from(["offline".to_owned()]));
    assert!(got[0].retain);
}

#[tokio::test]
async fn a_session_that_expired_while_the_broker_was_down_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    for (id, expiry) in [("short", 1u32), ("long", 3600)] {
        let mut connect = Connect::new(5, id);
        connect.clean = false;
        connect.session_expiry = Some(expiry);
        let mut client = RawClient::connected(broker.addr(), &connect).await;
        client.subscribe(1, &[("x/#", 1)]).await;
        client.send(&testkit::disconnect()).await;
        client.expect_closed().await;
    }
    broker.kill();
    // Longer than the short session's expiry (whole seconds, as MQTT counts them).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let broker = start(dir.path(), "");
    for (id, present) in [("short", false), ("long", true)] {
        let mut connect = Connect::new(5, id);
        connect.clean = false;
        connect.session_expiry = Some(3600);
        match RawClient::connect(broker.addr(), &connect).await.1 {
            Next::Frame(frame) => assert_eq!(frame.session_present(), present, "{id}"),
            other => panic!("{id}: {other:?}"),
        }
    }
}

/// A short run of the persistence crash harness (the full 50-kill run is
/// `cargo run --release -p dynsec-tests --bin persistence-crash-harness`; figures in
/// docs/persistence.md).
#[test]
fn acknowledged_retained_and_queued_messages_survive_repeated_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let options = dynsec_tests::persistence_crash::Options {
        binary: ours().into(),
        iterations: 5,
        seed: 0x18,
        max_kill_delay: std::time::Duration::from_millis(300),
    };
    let report =
        dynsec_tests::persistence_crash::run(&options, dir.path(), |_, _| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.iterations, 5);
    assert!(report.queued_acknowledged > 0 && report.retained_acknowledged > 0, "{}", report.summary());
}

#[tokio::test]
async fn max_queued_messages_bounds_what_is_kept_for_an_offline_session() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "max_queued_messages 5\n";
    let broker = start(dir.path(), extra);
    let mut subscriber = client(&broker, 4, "bounded", false).await;
    subscriber.subscribe(1, &[("b/#", 1)]).await;
    subscriber.send(&testkit::disconnect()).await;
    subscriber.expect_closed().await;
    let mut publisher = client(&broker, 4, "p", true).await;
    for i in 0..10u16 {
        publish_acked(&mut publisher, "b/x", format!("m{i}").as_bytes(), false, i + 1).await;
    }
    broker.kill();

    let broker = start(dir.path(), extra);
    let mut subscriber = client(&broker, 4, "bounded", false).await;
    let got = drain(&mut subscriber).await;
    let expected: BTreeSet<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads(&got), expected, "the first 5 are kept, the rest dropped as mosquitto does");
}

/// Sends a v3.1.1/v5 PUBREL, PUBCOMP or PUBREC for `pkid` (a v3 encoding: no reason code).
fn qos2_ack(packet_type: u8, pkid: u16) -> Vec<u8> {
    let byte1 = (packet_type << 4) | if packet_type == testkit::PUBREL { 0x02 } else { 0 };
    testkit::packet(byte1, &pkid.to_be_bytes())
}

/// Issue 18: the QoS 2 state of a persistent session's unfinished inbound exchange survives a
/// SIGKILL: a PUBLISH sent again after the restart (its PUBREC came, its PUBREL not yet) is
/// acknowledged but not routed a second time; its PUBREL then frees the packet id.
#[tokio::test]
async fn a_qos2_publish_sent_again_after_a_sigkill_is_not_delivered_twice() {
    for version in [4u8, 5] {
        let dir = tempfile::tempdir().unwrap();
        let broker = start(dir.path(), "");
        let mut watcher = client(&broker, version, "watcher", true).await;
        watcher.subscribe(1, &[("exactly/#", 2)]).await;
        let sender_id = format!("sender-{version}");
        let mut sender = client(&broker, version, &sender_id, false).await;
        sender.publish("exactly/once", b"first", 2, false, 7).await;
        assert_eq!(sender.expect(testkit::PUBREC).await.pkid(), 7);
        let got = watcher.expect_publish().await;
        assert_eq!(&got.payload[..], b"first");
        broker.kill(); // the PUBREL is not sent

        let broker = start(dir.path(), "");
        let mut watcher = client(&broker, version, "watcher", true).await;
        watcher.subscribe(1, &[("exactly/#", 2)]).await;
        let mut sender = client(&broker, version, &sender_id, false).await;
        // The client sends the unfinished PUBLISH again (MQTT: with DUP; the broker goes by the id).
        sender.send(&testkit::publish_with(version == 5, "exactly/once", b"first", 2, false, true, 7, &[])).await;
        assert_eq!(sender.expect(testkit::PUBREC).await.pkid(), 7);
        sender.send(&qos2_ack(testkit::PUBREL, 7)).await;
        assert_eq!(sender.expect(testkit::PUBCOMP).await.pkid(), 7);
        // The id is free again: a new message with it is routed.
        sender.publish("exactly/once", b"second", 2, false, 7).await;
        assert_eq!(sender.expect(testkit::PUBREC).await.pkid(), 7);
        sender.send(&qos2_ack(testkit::PUBREL, 7)).await;
        sender.expect(testkit::PUBCOMP).await;
        let mut seen = Vec::new();
        for _ in 0..10 {
            match watcher.next(std::time::Duration::from_millis(800)).await {
                Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
                    let publish = frame.publish(version == 5);
                    watcher.send(&qos2_ack(testkit::PUBREC, publish.pkid)).await;
                    seen.push(String::from_utf8_lossy(&publish.payload).into_owned());
                }
                Next::Frame(frame) if frame.packet_type == testkit::PUBREL => {
                    watcher.send(&qos2_ack(testkit::PUBCOMP, frame.pkid())).await;
                }
                Next::Frame(_) => {}
                Next::Closed | Next::Timeout => break,
            }
        }
        assert_eq!(seen, ["second"], "v{version}: the resent PUBLISH was not routed again");
        broker.assert_no_panic();
    }
}

/// Issue 18: a persistent subscriber that acknowledged a stored QoS 2 message with PUBREC but
/// had not completed it when the broker stopped gets the PUBREL again after the restart, not
/// the message a second time.
#[tokio::test]
async fn a_pubrel_owed_to_a_persistent_subscriber_is_sent_after_a_restart_instead_of_the_message() {
    for version in [4u8, 5] {
        let dir = tempfile::tempdir().unwrap();
        let broker = start(dir.path(), "");
        let id = format!("exact-{version}");
        let mut subscriber = client(&broker, version, &id, false).await;
        subscriber.subscribe(1, &[("orders/#", 2)]).await;
        let mut publisher = client(&broker, 4, "shop", true).await;
        publisher.publish("orders/1", b"one", 2, false, 1).await;
        publisher.expect(testkit::PUBREC).await;
        publisher.send(&qos2_ack(testkit::PUBREL, 1)).await;
        publisher.expect(testkit::PUBCOMP).await;
        let delivery = subscriber.expect_publish().await;
        assert_eq!((&delivery.payload[..], delivery.qos), (&b"one"[..], 2));
        subscriber.send(&qos2_ack(testkit::PUBREC, delivery.pkid)).await;
        assert_eq!(subscriber.expect(testkit::PUBREL).await.pkid(), delivery.pkid);
        // No PUBCOMP: the exchange is unfinished when the broker stops.
        drop(subscriber);
        drop(publisher);
        let (code, log) = broker.terminate();
        assert_eq!(code, Some(0), "{log}");

        let broker = start(dir.path(), "");
        let mut subscriber = client(&broker, version, &id, false).await;
        let mut pubrels = Vec::new();
        let mut publishes = Vec::new();
        for _ in 0..10 {
            match subscriber.next(std::time::Duration::from_millis(800)).await {
                Next::Frame(frame) if frame.packet_type == testkit::PUBREL => {
                    pubrels.push(frame.pkid());
                    subscriber.send(&qos2_ack(testkit::PUBCOMP, frame.pkid())).await;
                }
                Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
                    publishes.push(String::from_utf8_lossy(&frame.publish(version == 5).payload).into_owned());
                }
                Next::Frame(_) => {}
                Next::Closed | Next::Timeout => break,
            }
        }
        assert_eq!(pubrels, [delivery.pkid], "v{version}: the PUBREL owed");
        assert!(publishes.is_empty(), "v{version}: not delivered again: {publishes:?}");
        drop(subscriber);
        let (code, log) = broker.terminate();
        assert_eq!(code, Some(0), "{log}");

        // Completed: nothing is owed after another restart.
        let broker = start(dir.path(), "");
        let mut subscriber = client(&broker, version, &id, false).await;
        let frames = subscriber.ping().await;
        assert!(frames.iter().all(|f| f.packet_type == testkit::PINGRESP), "v{version}: {frames:?}");
        broker.assert_no_panic();
    }
}

/// Issue 18: a will waiting for its will delay when the broker stops is published after the
/// restart when it is due; a client that came back meanwhile cancels it, in the store too.
#[tokio::test]
async fn a_delayed_will_is_published_after_a_restart_unless_its_client_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    for (id, delay) in [("leaving", 5u32), ("returning", 3600)] {
        let mut connect = Connect::new(5, id);
        connect.clean = false;
        connect.session_expiry = Some(3600);
        connect.will = Some((format!("wills/{id}"), b"gone".to_vec(), 1, false));
        connect.will_delay = Some(delay);
        let mut client = RawClient::connected(broker.addr(), &connect).await;
        // DISCONNECT with reason 0x04: with will message.
        client.send(&testkit::packet(0xE0, &[0x04, 0])).await;
        client.expect_closed().await;
    }
    let (code, log) = broker.terminate();
    assert_eq!(code, Some(0), "{log}");

    let broker = start(dir.path(), "");
    let mut watcher = client(&broker, 5, "watcher", true).await;
    watcher.subscribe(1, &[("wills/#", 1)]).await;
    let mut connect = Connect::new(5, "returning");
    connect.clean = false;
    connect.session_expiry = Some(3600);
    let mut returning = RawClient::connected(broker.addr(), &connect).await;
    let will = watcher.expect_publish().await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("wills/leaving", &b"gone"[..]));
    returning.send(&testkit::disconnect()).await;
    returning.expect_closed().await;
    drop(watcher);
    let (code, log) = broker.terminate();
    assert_eq!(code, Some(0), "{log}");
    // Neither will waits in the store any more: one was published, the other cancelled.
    let store = dynsec_broker::persistence::store::Store::open(&dir.path().join("dynsec-broker.redb")).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.wills.is_empty(), "{:?}", loaded.wills);
}

/// The write-ahead log beside the store (`<persistence_file>.wal`, docs/persistence.md): a
/// record that does not check out followed by valid ones is damage, and another program's file
/// is not ours; both stop the broker with an error naming the log, which is left as it was. (A
/// record cut short at the end is a crash's interrupted write: `persistence::wal` unit tests.)
#[test]
fn a_damaged_or_foreign_write_ahead_log_stops_the_broker_by_name() {
    use dynsec_broker::persistence::wal::{self, Wal};
    for (case, expected) in [("damaged", "does not check out"), ("foreign", "not a persistence file")] {
        let dir = tempfile::tempdir().unwrap();
        let path = wal::path_for(&dir.path().join(dynsec_broker::config::DEFAULT_PERSISTENCE_FILE));
        if case == "damaged" {
            let (mut log, _) = Wal::open(&path, 0).unwrap();
            for sequence in 1..=3 {
                log.append(sequence, b"some changes").unwrap();
            }
            drop(log);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[25] ^= 0xff; // in the first record's payload
            std::fs::write(&path, &bytes).unwrap();
        } else {
            std::fs::write(&path, b"this is a text file, not a log").unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let (code, log) = BrokerProcess::start_failure_in(ours(), dir.path(), CONFIG);
        assert!(matches!(code, Some(c) if c != 0), "{case}: refused, not started: {code:?} {log}");
        assert!(log.contains(".redb.wal") && log.contains(expected), "{case}: {log}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{case}: left as it was");
    }
}
