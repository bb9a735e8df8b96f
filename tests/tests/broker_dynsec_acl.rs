//! Every row of mosquitto-compat §3.6 end to end: where dynsec ACLs are evaluated and what the
//! client sees — denied PUBLISH (3.1.1 silently accepted and dropped, 5 acked 0x87, never a
//! disconnect), SUBSCRIBE (0x80 / 0x87, no retained message), UNSUBSCRIBE (0x87, subscription
//! kept), delivery to subscribers (live, retained on subscribe, queued offline), wills, default
//! access — and changes made live through `$CONTROL` that apply to the very next packet without a
//! reconnect. Each scenario runs against `dynsec-broker` and against mosquitto 2.0 with the same
//! expectations.

use std::net::SocketAddr;
use std::path::Path;

use dynsec_broker::testkit::{self, Next, QUIET, RawClient};
use dynsec_tests::dynsec_target::{ADMIN, ADMIN_PASSWORD, Admin, DynsecBroker, Flavour, Setup, credentials, user};

fn start(flavour: Flavour) -> DynsecBroker {
    DynsecBroker::start(flavour, Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), &Setup::default())
}

/// Roles and clients shared by the scenarios. Roles are given with addClientRole (not at
/// createClient) so that both brokers link them the same way.
const PROVISIONING: &str = r##"
    {"command":"createRole","rolename":"writer","acls":[{"acltype":"publishClientSend","topic":"#","allow":true}]},
    {"command":"createClient","username":"writer","password":"writer-pw"},
    {"command":"addClientRole","username":"writer","rolename":"writer"},
    {"command":"createRole","rolename":"pubrole","acls":[{"acltype":"publishClientSend","topic":"pub/ok/#","allow":true}]},
    {"command":"createClient","username":"pubber","password":"pubber-pw"},
    {"command":"addClientRole","username":"pubber","rolename":"pubrole"},
    {"command":"createRole","rolename":"subrole","acls":[
        {"acltype":"subscribePattern","topic":"r/#","allow":true},
        {"acltype":"subscribePattern","topic":"keep/#","allow":true},
        {"acltype":"publishClientReceive","topic":"r/secret/#","allow":false,"priority":5},
        {"acltype":"subscribeLiteral","topic":"lit/a","allow":false,"priority":-10},
        {"acltype":"subscribePattern","topic":"lit/#","allow":true,"priority":10},
        {"acltype":"subscribeLiteral","topic":"exact/+","allow":true},
        {"acltype":"unsubscribePattern","topic":"keep/#","allow":false}]},
    {"command":"createClient","username":"subber","password":"subber-pw"},
    {"command":"addClientRole","username":"subber","rolename":"subrole"},
    {"command":"createRole","rolename":"willrole","acls":[{"acltype":"publishClientSend","topic":"will/ok/#","allow":true}]},
    {"command":"createClient","username":"willer","password":"willer-pw"},
    {"command":"addClientRole","username":"willer","rolename":"willrole"}"##;

async fn provisioned(flavour: Flavour) -> (DynsecBroker, Admin) {
    let broker = start(flavour);
    let mut admin = Admin::connect(broker.addr(), "acl-admin").await;
    admin.ok(PROVISIONING).await;
    (broker, admin)
}

/// An admin-credential connection that may read every non-`$` topic.
async fn observer(addr: SocketAddr, id: &str, filter: &str) -> RawClient {
    let mut client = user(addr, 5, id, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(client.subscribe(1, &[(filter, 0)]).await, [0]);
    client
}

/// Topics (and payloads) delivered to `client` up to and including a message on `marker`;
/// QoS 1 deliveries are acknowledged.
async fn received_until(client: &mut RawClient, marker: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let publish = client.expect_publish().await;
        if publish.qos == 1 {
            client.send(&testkit::ack(testkit::PUBACK, publish.pkid)).await;
        }
        let done = publish.topic == marker;
        seen.push((publish.topic, String::from_utf8_lossy(&publish.payload).into_owned()));
        if done {
            return seen;
        }
    }
}

/// The writer, which may publish anywhere (QoS 1 with acks awaited).
struct Writer(RawClient, u16);

impl Writer {
    async fn connect(addr: SocketAddr, id: &str) -> Writer {
        Writer(user(addr, 5, id, "writer", "writer-pw").await, 0)
    }

    async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
        self.1 += 1;
        self.0.publish(topic, payload.as_bytes(), 1, retain, self.1).await;
        let ack = self.0.expect(testkit::PUBACK).await;
        assert!(ack.reason() < 0x80, "writer publish to {topic} refused: {ack:?}");
    }
}

macro_rules! against_both {
    ($scenario:ident, $ours:ident, $mosquitto:ident) => {
        #[tokio::test]
        async fn $ours() {
            $scenario(Flavour::Ours).await;
        }
        #[tokio::test]
        async fn $mosquitto() {
            $scenario(Flavour::Mosquitto).await;
        }
    };
}

/// §3.6 row "PUBLISH from client": 3.1.1 denied QoS 0 dropped, QoS 1 plain PUBACK, QoS 2 plain
/// PUBREC with the flow completed; 5: PUBACK/PUBREC 0x87; message discarded, never a disconnect.
/// Then default access and role ACLs changed live apply to the next PUBLISH (no kick for either).
async fn denied_publish(flavour: Flavour) {
    let (broker, mut admin) = provisioned(flavour).await;
    let mut watcher = observer(broker.addr(), "pub-watch", "pub/#").await;
    for version in [4u8, 5] {
        let v5 = version == 5;
        let mut pubber = user(broker.addr(), version, &format!("pubber-{version}"), "pubber", "pubber-pw").await;
        pubber.publish("pub/denied/0", b"q0", 0, false, 0).await;
        pubber.publish("pub/denied/1", b"q1", 1, false, 1).await;
        let puback = pubber.expect(testkit::PUBACK).await;
        assert_eq!((puback.pkid(), puback.reason()), (1, if v5 { 0x87 } else { 0 }), "v{version} PUBACK");
        assert_eq!(puback.body.len(), if v5 { 3 } else { 2 }, "v{version} PUBACK length");
        pubber.publish("pub/denied/2", b"q2", 2, false, 2).await;
        let pubrec = pubber.expect(testkit::PUBREC).await;
        assert_eq!((pubrec.pkid(), pubrec.reason()), (2, if v5 { 0x87 } else { 0 }), "v{version} PUBREC");
        if !v5 {
            // 3.1.1 cannot signal the refusal: the QoS 2 flow completes normally.
            pubber.send(&testkit::ack(testkit::PUBREL, 2)).await;
            assert_eq!(pubber.expect(testkit::PUBCOMP).await.pkid(), 2);
        }
        // Still connected, and allowed topics still work.
        assert!(pubber.ping().await.is_empty(), "v{version}: nothing but PINGRESP");
        pubber.publish("pub/ok/end", format!("v{version}").as_bytes(), 1, false, 3).await;
        assert_eq!(pubber.expect(testkit::PUBACK).await.reason(), 0);
        let seen = received_until(&mut watcher, "pub/ok/end").await;
        assert_eq!(seen, [("pub/ok/end".to_owned(), format!("v{version}"))], "v{version}: denied messages dropped");
    }

    // Live: default access for publishClientSend turned on, then off, between two packets of the
    // same connection.
    let mut pubber = user(broker.addr(), 5, "pubber-live", "pubber", "pubber-pw").await;
    admin.ok(r##"{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientSend","allow":true}]}"##).await;
    pubber.publish("pub/other", b"default allows", 1, false, 1).await;
    assert_eq!(pubber.expect(testkit::PUBACK).await.reason(), 0);
    assert_eq!(received_until(&mut watcher, "pub/other").await.len(), 1);
    admin.ok(r##"{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientSend","allow":false}]}"##).await;
    pubber.publish("pub/other", b"default denies", 1, false, 2).await;
    assert_eq!(pubber.expect(testkit::PUBACK).await.reason(), 0x87);

    // modifyRole replaces the role's ACLs; the holder's next PUBLISH is judged by the new list.
    // (We kick the holders for it, as mosquitto 2.1 does; 2.0 kicks nobody: reconnecting with the
    // same client id covers both.)
    admin
        .ok(r##"{"command":"modifyRole","rolename":"pubrole","acls":[{"acltype":"publishClientSend","topic":"pub/new/#","allow":true}]}"##)
        .await;
    let mut pubber = user(broker.addr(), 5, "pubber-live", "pubber", "pubber-pw").await;
    pubber.publish("pub/ok/x", b"no longer", 1, false, 3).await;
    assert_eq!(pubber.expect(testkit::PUBACK).await.reason(), 0x87);
    pubber.publish("pub/new/x", b"now allowed", 1, false, 4).await;
    assert_eq!(pubber.expect(testkit::PUBACK).await.reason(), 0);
    assert_eq!(received_until(&mut watcher, "pub/new/x").await, [("pub/new/x".into(), "now allowed".into())]);
    watcher.expect_quiet().await;
}
against_both!(denied_publish, denied_publish_ours, denied_publish_mosquitto);

/// §3.6 row "SUBSCRIBE": 5 → 0x87, 3.1.1 → 0x80, 3.1 → the requested QoS echoed although nothing
/// was subscribed; no retained message for a refused filter; literal ACLs decide before patterns
/// whatever the priorities; default access changed live applies to the next SUBSCRIBE.
async fn denied_subscribe(flavour: Flavour) {
    let (broker, mut admin) = provisioned(flavour).await;
    let mut writer = Writer::connect(broker.addr(), "sub-writer").await;
    writer.publish("denied/retained", "kept", true).await;
    writer.publish("r/open/retained", "kept", true).await;

    let mut codes = Vec::new();
    for version in [3u8, 4, 5] {
        let mut subber = user(broker.addr(), version, &format!("subber-{version}"), "subber", "subber-pw").await;
        let got = subber.subscribe(1, &[("denied/#", 1), ("r/open/#", 1), ("lit/a", 1), ("lit/b", 1)]).await;
        codes.push(got);
        // Only the allowed filter's retained message arrives.
        let retained = subber.expect_publish().await;
        assert_eq!(retained.topic, "r/open/retained", "v{version}");
        subber.send(&testkit::ack(testkit::PUBACK, retained.pkid)).await;
        if version == 3 {
            // 3.1 was told "granted": it must still receive nothing on the refused filter.
            writer.publish("denied/live", "not for 3.1", false).await;
        }
        subber.expect_quiet().await;
        // A literal ACL `exact/+` allows exactly that filter, not the topics it would match.
        codes.push(subber.subscribe(2, &[("exact/+", 0), ("exact/x", 0)]).await);
    }
    assert_eq!(codes[0], [1, 1, 1, 1], "3.1 echoes the requested QoS");
    assert_eq!(codes[1], [0, 0], "3.1 literal");
    assert_eq!(codes[2], [0x80, 1, 0x80, 1], "3.1.1");
    assert_eq!(codes[3], [0, 0x80], "3.1.1 literal");
    assert_eq!(codes[4], [0x87, 1, 0x87, 1], "5");
    assert_eq!(codes[5], [0, 0x87], "5 literal");

    let mut subber = user(broker.addr(), 5, "subber-live", "subber", "subber-pw").await;
    assert_eq!(subber.subscribe(1, &[("anything/x", 0)]).await, [0x87]);
    admin.ok(r##"{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true}]}"##).await;
    assert_eq!(subber.subscribe(2, &[("anything/x", 0)]).await, [0]);
    // `$CONTROL` is never granted by default access.
    assert_eq!(subber.subscribe(3, &[("$CONTROL/dynamic-security/v1/response", 0)]).await, [0x87]);
}
against_both!(denied_subscribe, denied_subscribe_ours, denied_subscribe_mosquitto);

/// §3.6 row "UNSUBSCRIBE": 5 → UNSUBACK 0x87, 3.1.1 → plain UNSUBACK; the subscription is kept.
async fn denied_unsubscribe(flavour: Flavour) {
    let (broker, _admin) = provisioned(flavour).await;
    let mut writer = Writer::connect(broker.addr(), "unsub-writer").await;
    for version in [4u8, 5] {
        let v5 = version == 5;
        let mut subber = user(broker.addr(), version, &format!("unsub-{version}"), "subber", "subber-pw").await;
        assert_eq!(subber.subscribe(1, &[("keep/x", 0), ("r/open/x", 0)]).await, [0, 0]);
        subber.send(&testkit::unsubscribe(v5, 2, &["keep/x", "r/open/x"])).await;
        let unsuback = subber.expect(testkit::UNSUBACK).await;
        assert_eq!(unsuback.pkid(), 2);
        if v5 {
            assert_eq!(unsuback.codes(true), [0x87, 0]);
        } else {
            assert_eq!(unsuback.body.len(), 2, "3.1.1 UNSUBACK has no codes");
        }
        writer.publish("r/open/x", "unsubscribed", false).await;
        writer.publish("keep/x", "still subscribed", false).await;
        assert_eq!(received_until(&mut subber, "keep/x").await, [("keep/x".into(), "still subscribed".into())]);
    }
}
against_both!(denied_unsubscribe, denied_unsubscribe_ours, denied_unsubscribe_mosquitto);

/// §3.6 row "Delivery to a subscriber": checked per recipient for live messages, retained
/// messages on subscribe and queued offline messages on reconnect; a role change made live
/// applies to the next delivery.
async fn denied_delivery(flavour: Flavour) {
    let (broker, mut admin) = provisioned(flavour).await;
    let mut writer = Writer::connect(broker.addr(), "deliver-writer").await;
    writer.publish("r/secret/retained", "secret", true).await;
    writer.publish("r/open/retained", "open", true).await;
    let mut all = observer(broker.addr(), "deliver-watch", "r/#").await;
    let mut seen_by_admin = received_until(&mut all, "r/open/retained").await;

    // Retained on subscribe: only the readable one.
    let mut subber = user(broker.addr(), 4, "deliver-live", "subber", "subber-pw").await;
    assert_eq!(subber.subscribe(1, &[("r/#", 1)]).await, [1]);
    assert_eq!(subber.expect_publish().await.topic, "r/open/retained");
    subber.expect_quiet().await;

    // Live.
    writer.publish("r/secret/live", "secret", false).await;
    writer.publish("r/open/live", "open", false).await;
    assert_eq!(received_until(&mut subber, "r/open/live").await, [("r/open/live".into(), "open".into())]);
    seen_by_admin.extend(received_until(&mut all, "r/open/live").await);
    assert!(seen_by_admin.iter().any(|(t, _)| t == "r/secret/live"), "another reader still gets it");

    // Queued for an offline persistent session.
    let mut offline = credentials(4, "deliver-queued", Some("subber"), Some(b"subber-pw"));
    offline.clean = false;
    let mut queued = RawClient::connected(broker.addr(), &offline).await;
    assert_eq!(queued.subscribe(1, &[("r/#", 1)]).await, [1]);
    let _ = received_until(&mut queued, "r/open/retained").await;
    queued.send(&testkit::disconnect()).await;
    queued.expect_closed().await;
    writer.publish("r/secret/queued", "secret", false).await;
    writer.publish("r/open/queued", "open", false).await;
    let (mut queued, connack) = RawClient::connect(broker.addr(), &offline).await;
    assert!(matches!(connack, Next::Frame(ref f) if f.session_present()), "{connack:?}");
    assert_eq!(received_until(&mut queued, "r/open/queued").await, [("r/open/queued".into(), "open".into())]);
    assert_eq!(received_until(&mut subber, "r/open/queued").await, [("r/open/queued".into(), "open".into())]);

    // Role change: the deny is gone for the next delivery. (modifyRole kicks the holders here, as
    // in mosquitto 2.1; 2.0 kicks nobody: reconnecting with the same client id covers both.)
    admin
        .ok(r##"{"command":"modifyRole","rolename":"subrole","acls":[{"acltype":"subscribePattern","topic":"r/#","allow":true}]}"##)
        .await;
    let mut subber = user(broker.addr(), 4, "deliver-live", "subber", "subber-pw").await;
    assert_eq!(subber.subscribe(1, &[("r/#", 1)]).await, [1]);
    writer.publish("r/secret/after", "now readable", false).await;
    let seen = received_until(&mut subber, "r/secret/after").await;
    assert!(seen.iter().any(|(t, _)| t == "r/secret/retained"), "the retained one is readable now: {seen:?}");
    assert_eq!(seen.last(), Some(&("r/secret/after".into(), "now readable".into())));
}
against_both!(denied_delivery, denied_delivery_ours, denied_delivery_mosquitto);

/// §3.6 row "Will message": checked (WRITE as the client) when the will is about to be sent, so a
/// right removed after CONNECT suppresses it; a will never allowed is silently not published.
async fn will_checks(flavour: Flavour) {
    let (broker, mut admin) = provisioned(flavour).await;
    let mut watcher = observer(broker.addr(), "will-watch", "will/#").await;
    let with_will = |id: &str, topic: &str| {
        let mut connect = credentials(4, id, Some("willer"), Some(b"willer-pw"));
        connect.will = Some((topic.to_owned(), id.as_bytes().to_vec(), 0, false));
        connect
    };
    // The revoked will is allowed by default access only, so that taking the right away kicks
    // nobody (a role change kicks the holders in mosquitto 2.1 and here; a kicked client's will
    // is not sent at all).
    admin
        .ok(r##"{"command":"addRoleACL","rolename":"willrole","acltype":"publishClientSend","topic":"will/no/#","allow":false},
               {"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientSend","allow":true}]}"##)
        .await;
    let denied = RawClient::connected(broker.addr(), &with_will("will-denied", "will/no/a")).await;
    let revoked = RawClient::connected(broker.addr(), &with_will("will-revoked", "will/revoked")).await;
    let allowed = RawClient::connected(broker.addr(), &with_will("will-allowed", "will/ok/allowed")).await;

    // Abrupt closes (no DISCONNECT): each will is judged now. The denied ones go first and get
    // time to be processed; the allowed one then marks the end.
    drop(denied);
    admin.ok(r##"{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientSend","allow":false}]}"##).await;
    drop(revoked);
    tokio::time::sleep(QUIET * 2).await;
    drop(allowed);
    assert_eq!(
        received_until(&mut watcher, "will/ok/allowed").await,
        [("will/ok/allowed".into(), "will-allowed".into())]
    );
    watcher.expect_quiet().await;
}
against_both!(will_checks, will_checks_ours, will_checks_mosquitto);
