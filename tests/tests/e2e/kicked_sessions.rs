//! Issue 21, item 3: the subscriptions of a persistent session are re-checked against the
//! client's current rights (mosquitto's fix for CVE-2021-34434, 2.0.12). A role change that takes
//! a subscribePattern away kicks the client; the subscription it may no longer make is removed,
//! so nothing published on it reaches the client — neither while it is away nor after it resumed
//! its session — and its other subscriptions stay. The same scenario runs against `dynsec-broker`
//! and mosquitto 2.1.2. Our broker also re-checks a session resumed after a change made while
//! its client was offline (mosquitto 2.1.2 only re-checks clients it kicks).

use std::path::Path;

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::dynsec_target::{Admin, DynsecBroker, Flavour, Setup, credentials, kicked};
use dynsec_tests::mosquitto::mosquitto_21;

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

/// A subscriber `kc<v>` whose role `kr<v>` lets it subscribe to `kick<v>/#` and `keep<v>/#`, and a
/// publisher `kp<v>` that may publish anywhere.
async fn provision(admin: &mut Admin, version: u8) {
    let commands = format!(
        r##"{{"command":"createRole","rolename":"kr{version}","acls":[
              {{"acltype":"subscribePattern","topic":"kick{version}/#","allow":true}},
              {{"acltype":"subscribePattern","topic":"keep{version}/#","allow":true}}]}},
           {{"command":"createClient","username":"kc{version}","password":"kc-pw"}},
           {{"command":"addClientRole","username":"kc{version}","rolename":"kr{version}"}},
           {{"command":"createRole","rolename":"kpr{version}","acls":[
              {{"acltype":"publishClientSend","topic":"#","allow":true}}]}},
           {{"command":"createClient","username":"kp{version}","password":"kp-pw"}},
           {{"command":"addClientRole","username":"kp{version}","rolename":"kpr{version}"}}"##
    );
    admin.ok(&commands).await;
}

fn subscriber(version: u8) -> Connect {
    let username = format!("kc{version}");
    let mut connect = credentials(version, &format!("kc-client-{version}"), Some(username.as_str()), Some(b"kc-pw"));
    connect.clean = false;
    connect.session_expiry = (version == 5).then_some(600);
    connect
}

/// `"<topic> <payload>"` of the next PUBLISH (acknowledged), or what came instead.
async fn next_message(client: &mut RawClient) -> String {
    match client.next(testkit::WAIT).await {
        Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
            let delivered = frame.publish(client.v5);
            client.send(&testkit::ack(testkit::PUBACK, delivered.pkid)).await;
            format!("{} {}", delivered.topic, String::from_utf8_lossy(&delivered.payload))
        }
        other => format!("{other:?}"),
    }
}

/// The UNSUBACK codes for `filter` (v5; 3.1.1 UNSUBACKs carry none).
async fn unsubscribe(client: &mut RawClient, pkid: u16, filter: &str) -> Vec<u8> {
    client.send(&testkit::unsubscribe(client.v5, pkid, &[filter])).await;
    let unsuback = client.expect(testkit::UNSUBACK).await;
    assert_eq!(unsuback.pkid(), pkid);
    if client.v5 { unsuback.codes(true) } else { Vec::new() }
}

/// Subscribes, loses `kick<v>/#` to `change` (run while connected when `kick` is true, while
/// offline otherwise), and reports what the resumed session receives and holds.
async fn revoked(broker: &DynsecBroker, version: u8, kick: bool) -> Vec<String> {
    let mut seen = Vec::new();
    let mut admin = Admin::connect(broker.addr(), &format!("kick-admin-{version}-{kick}")).await;
    provision(&mut admin, version).await;
    let (kick_topic, keep_topic) = (format!("kick{version}/t"), format!("keep{version}/t"));
    let mut client = RawClient::connected(broker.addr(), &subscriber(version)).await;
    assert_eq!(client.subscribe(1, &[(&kick_topic, 1), (&keep_topic, 1)]).await, [1, 1]);
    if !kick {
        client.send(&testkit::disconnect()).await;
        client.expect_closed().await;
    }
    let change = format!(
        r#"{{"command":"removeRoleACL","rolename":"kr{version}","acltype":"subscribePattern","topic":"kick{version}/#"}}"#
    );
    admin.ok(&change).await;
    if kick {
        seen.push(format!("kicked: {:?}", kicked(&mut client).await));
    }
    let publisher_name = format!("kp{version}");
    let publisher_login =
        credentials(4, &format!("kp-client-{version}"), Some(publisher_name.as_str()), Some(b"kp-pw"));
    let mut publisher = RawClient::connected(broker.addr(), &publisher_login).await;
    let mut pkid = 0;
    for (topic, payload) in [(&kick_topic, "while away"), (&keep_topic, "kept while away")] {
        pkid += 1;
        publisher.publish(topic, payload.as_bytes(), 1, false, pkid).await;
        publisher.expect(testkit::PUBACK).await;
    }

    let (mut client, connack) = RawClient::connect(broker.addr(), &subscriber(version)).await;
    match connack {
        Next::Frame(frame) if frame.packet_type == testkit::CONNACK => {
            seen.push(format!("session present: {}", frame.session_present()));
        }
        other => panic!("no CONNACK: {other:?}"),
    }
    seen.push(next_message(&mut client).await);
    for (topic, payload) in [(&kick_topic, "after"), (&keep_topic, "marker")] {
        pkid += 1;
        publisher.publish(topic, payload.as_bytes(), 1, false, pkid).await;
        publisher.expect(testkit::PUBACK).await;
    }
    seen.push(next_message(&mut client).await);
    client.expect_quiet().await;
    seen.push(format!("unsubscribe {kick_topic}: {:?}", unsubscribe(&mut client, 2, &kick_topic).await));
    seen.push(format!("unsubscribe {keep_topic}: {:?}", unsubscribe(&mut client, 3, &keep_topic).await));
    client.send(&testkit::disconnect()).await;
    seen
}

fn expected(version: u8, kick: bool) -> Vec<String> {
    let v5 = version == 5;
    let mut lines = Vec::new();
    if kick {
        lines.push(format!("kicked: {:?}", v5.then_some(0x98u8)));
    }
    lines.extend([
        "session present: true".to_owned(),
        format!("keep{version}/t kept while away"),
        format!("keep{version}/t marker"),
        format!("unsubscribe kick{version}/t: {:?}", if v5 { vec![0x11u8] } else { vec![] }),
        format!("unsubscribe keep{version}/t: {:?}", if v5 { vec![0u8] } else { vec![] }),
    ]);
    lines
}

#[tokio::test]
async fn a_kicked_session_loses_the_subscriptions_it_may_no_longer_make() {
    let broker = DynsecBroker::start(Flavour::Ours, ours(), &Setup::default());
    for version in [4, 5] {
        assert_eq!(revoked(&broker, version, true).await, expected(version, true), "v{version}");
    }
}

#[tokio::test]
async fn a_session_resumed_after_losing_a_right_offline_loses_that_subscription() {
    let broker = DynsecBroker::start(Flavour::Ours, ours(), &Setup::default());
    for version in [4, 5] {
        assert_eq!(revoked(&broker, version, false).await, expected(version, false), "v{version}");
    }
}

#[tokio::test]
async fn mosquitto_2_1_removes_them_when_it_kicks() {
    if mosquitto_21("kicked_sessions::mosquitto_2_1_removes_them_when_it_kicks").is_none() {
        return;
    }
    let broker = DynsecBroker::start(Flavour::Mosquitto21, ours(), &Setup::default());
    for version in [4, 5] {
        assert_eq!(revoked(&broker, version, true).await, expected(version, true), "v{version}");
    }
}
