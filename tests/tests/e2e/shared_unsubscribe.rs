//! Issue 21, item 2: UNSUBSCRIBE of a shared subscription (`$share/<group>/<filter>`) removes it.
//! In rumqttd 0.20 it did not: the router's request of a shared filter waits for new messages
//! under the plain filter's name, where UNSUBSCRIBE (which looks it up under the `$share/…` name)
//! never finds it, so it kept delivering; and the router took the client out of every shared
//! group it was in, so its other shared subscriptions stopped receiving their share
//! (docs/rumqttd.md, defect 18). Real `dynsec-broker` binary, compared with mosquitto 2.1.2.

use std::net::SocketAddr;
use std::path::Path;

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_21};

const BINARY: &str = env!("CARGO_BIN_EXE_dynsec-broker-under-test");

async fn publish(publisher: &mut RawClient, topic: &str, payload: &str, pkid: u16) {
    publisher.publish(topic, payload.as_bytes(), 1, false, pkid).await;
    assert_eq!(publisher.expect(testkit::PUBACK).await.pkid(), pkid);
}

/// The next PUBLISH, acknowledged, as `"<topic> <payload>"`.
async fn received(client: &mut RawClient) -> String {
    let delivered = client.expect_publish().await;
    client.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
    format!("{} {}", delivered.topic, String::from_utf8_lossy(&delivered.payload))
}

/// A member of `$share/g/sN/t` receives a message, unsubscribes, and receives nothing of that
/// filter afterwards (its plain subscription `sN/marker` shows that it is still served).
async fn unsubscribed_member(addr: SocketAddr, version: u8) -> Vec<String> {
    let v5 = version == 5;
    let id = format!("share-leaver-v{version}");
    let (topic, marker) = (format!("s{version}/t"), format!("s{version}/marker"));
    let shared = format!("$share/g/{topic}");
    let mut member = RawClient::connected(addr, &Connect::new(version, &id)).await;
    assert_eq!(member.subscribe(1, &[(&shared, 1), (&marker, 1)]).await, [1, 1]);
    let mut publisher = RawClient::connected(addr, &Connect::new(4, &format!("{id}-pub"))).await;
    publish(&mut publisher, &topic, "before", 1).await;
    let mut seen = vec![received(&mut member).await];
    member.send(&testkit::unsubscribe(v5, 2, &[&shared])).await;
    let unsuback = member.expect(testkit::UNSUBACK).await;
    assert_eq!(unsuback.pkid(), 2);
    if v5 {
        assert_eq!(unsuback.codes(true), [0]);
    }
    publish(&mut publisher, &topic, "after", 2).await;
    publish(&mut publisher, &marker, "marker", 3).await;
    seen.push(received(&mut member).await);
    member.expect_quiet().await;
    seen
}

/// Client `a` is in groups `g` (on `a/t`) and `h` (on `b/tN`), client `b` in `h` only. After `a`
/// leaves `g`, the messages on `b/tN` are still shared between `a` and `b`, each delivered once.
/// Returns how many each received.
async fn remaining_group(addr: SocketAddr, version: u8) -> (usize, usize) {
    let v5 = version == 5;
    let mut a = RawClient::connected(addr, &Connect::new(version, &format!("share-a-v{version}"))).await;
    // (Names per version: the clients of one round are still connected during the next.)
    let topic = format!("b/t{version}");
    let (g, h) = (format!("$share/g{version}/a/t"), format!("$share/h{version}/{topic}"));
    assert_eq!(a.subscribe(1, &[(&g, 1), (&h, 1)]).await, [1, 1]);
    let mut b = RawClient::connected(addr, &Connect::new(version, &format!("share-b-v{version}"))).await;
    assert_eq!(b.subscribe(1, &[(&h, 1)]).await, [1]);
    a.send(&testkit::unsubscribe(v5, 2, &[&g])).await;
    assert_eq!(a.expect(testkit::UNSUBACK).await.pkid(), 2);
    let mut publisher = RawClient::connected(addr, &Connect::new(4, &format!("share-pub-v{version}"))).await;
    const MESSAGES: u16 = 6;
    for n in 1..=MESSAGES {
        publish(&mut publisher, &topic, &format!("m{n}"), n).await;
    }
    // Every message reaches exactly one of the two: read both (bounded) until all arrived, then
    // make sure nothing more comes.
    let mut counts = [0usize; 2];
    for _ in 0..100 {
        if counts.iter().sum::<usize>() == usize::from(MESSAGES) {
            break;
        }
        for (client, count) in [&mut a, &mut b].into_iter().zip(counts.iter_mut()) {
            if let Next::Frame(frame) = client.next(testkit::QUIET).await {
                let delivered = frame.publish(v5);
                assert_eq!(delivered.topic, topic);
                client.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
                *count += 1;
            }
        }
    }
    let [to_a, to_b] = counts;
    assert_eq!(to_a + to_b, usize::from(MESSAGES), "a got {to_a}, b got {to_b}");
    a.expect_quiet().await;
    b.expect_quiet().await;
    (to_a, to_b)
}

fn expected_leaver(version: u8) -> Vec<String> {
    vec![format!("s{version}/t before"), format!("s{version}/marker marker")]
}

#[tokio::test]
async fn an_unsubscribed_shared_subscription_delivers_nothing_more() {
    let broker = BrokerProcess::start(Path::new(BINARY), "allow_anonymous true\n");
    for version in [4, 5] {
        assert_eq!(unsubscribed_member(broker.addr(), version).await, expected_leaver(version), "v{version}");
    }
}

#[tokio::test]
async fn leaving_one_shared_group_keeps_the_others() {
    let broker = BrokerProcess::start(Path::new(BINARY), "allow_anonymous true\n");
    for version in [4, 5] {
        let (to_a, to_b) = remaining_group(broker.addr(), version).await;
        assert!(to_a > 0 && to_b > 0, "v{version}: a got {to_a}, b got {to_b}");
    }
}

#[tokio::test]
async fn mosquitto_2_1_does_the_same() {
    let Some(installed) = mosquitto_21("shared_unsubscribe::mosquitto_2_1_does_the_same") else { return };
    let dir = ScratchDir::new("mosquitto-21-shared-unsubscribe");
    let mosquitto = Mosquitto::start_installed(Some(&installed), dir.path(), &["allow_anonymous true".to_owned()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], mosquitto.port()));
    for version in [4, 5] {
        assert_eq!(unsubscribed_member(addr, version).await, expected_leaver(version), "v{version}");
        let (to_a, to_b) = remaining_group(addr, version).await;
        assert!(to_a > 0 && to_b > 0, "v{version}: a got {to_a}, b got {to_b}");
    }
}
