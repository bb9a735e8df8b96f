//! A client must not reach `$` topics — above all the dynamic-security admin API — through a
//! `%c`/`%u` placeholder at the start of an ACL (issue 15, item 1). A device whose role grants
//! `%c/#` for publishClientSend, publishClientReceive and subscribePattern connects with the client
//! id `$CONTROL` and sends `createClient` + `addClientRole … admin` to
//! `$CONTROL/dynamic-security/v1`: the request is refused (v5 PUBACK 0x87) and not obeyed, its
//! reply and the admin's replies never reach the device, and subscribing to `$CONTROL/#` is
//! refused. The same role still works on the device's own topics.
//!
//! Run against `dynsec-broker`, mosquitto 2.1 (which substitutes `%c` and refuses the same way)
//! and mosquitto 2.0 (no substitution: `%c` is literal text there, so it refuses trivially and the
//! role grants nothing at all). The 2.1 run fails when mosquitto 2.1 is not installed unless
//! `DYNSEC_SKIP_ORACLE_21=1` (see `dynsec_tests::mosquitto::mosquitto_21`).

use std::path::Path;

use dynsec_broker::testkit::{self, Next, QUIET, RawClient};
use dynsec_tests::dynsec_target::{
    ADMIN, Admin, DynsecBroker, Flavour, REQUEST_TOPIC, RESPONSE_TOPIC, Setup, error_of, user,
};
use dynsec_tests::mosquitto::mosquitto_21;

const NOT_AUTHORIZED: u8 = 0x87;

/// The device's role: everything under its own client id, plus (so that its delivery check is
/// exercised too) the right to subscribe to the admin API's response topic.
const PROVISIONING: &str = r##"
    {"command":"createRole","rolename":"own","acls":[
        {"acltype":"publishClientSend","topic":"%c/#","allow":true},
        {"acltype":"publishClientReceive","topic":"%c/#","allow":true},
        {"acltype":"subscribePattern","topic":"%c/#","allow":true},
        {"acltype":"subscribeLiteral","topic":"$CONTROL/dynamic-security/v1/response","allow":true}]},
    {"command":"createClient","username":"dev","password":"dev-pw"},
    {"command":"addClientRole","username":"dev","rolename":"own"}"##;

const ATTACK: &str = r#"{"commands":[
    {"command":"createClient","username":"intruder","password":"intruder-pw"},
    {"command":"addClientRole","username":"intruder","rolename":"admin"},
    {"command":"addClientRole","username":"dev","rolename":"admin"}]}"#;

/// Waits for the PUBACK of `pkid`; returns its reason code and the topics of the messages
/// delivered meanwhile (a broker may deliver a client's own message before acknowledging it).
async fn puback(client: &mut RawClient, pkid: u16) -> (u8, Vec<String>) {
    let mut delivered = Vec::new();
    loop {
        match client.next(testkit::WAIT).await {
            Next::Frame(f) if f.packet_type == testkit::PUBACK && f.pkid() == pkid => return (f.reason(), delivered),
            Next::Frame(f) if f.packet_type == testkit::PUBLISH => delivered.push(f.publish(true).topic),
            other => panic!("expected PUBACK {pkid}, got {other:?}"),
        }
    }
}

async fn control_endpoint_stays_out_of_reach(flavour: Flavour) {
    let broker =
        DynsecBroker::start(flavour, Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), &Setup::default());
    let mut admin = Admin::connect(broker.addr(), "placeholder-admin").await;
    admin.ok(PROVISIONING).await;

    let mut device = user(broker.addr(), 5, "$CONTROL", "dev", "dev-pw").await;
    assert_eq!(device.subscribe(1, &[(RESPONSE_TOPIC, 1)]).await, [1], "{flavour:?}: the literal grant");
    device.publish(REQUEST_TOPIC, ATTACK.as_bytes(), 1, false, 2).await;
    let (code, delivered) = puback(&mut device, 2).await;
    assert_eq!(code, NOT_AUTHORIZED, "{flavour:?}: the request must be refused");
    assert!(delivered.is_empty(), "{flavour:?}: the device received {delivered:?}");
    assert_eq!(device.subscribe(3, &[("$CONTROL/#", 0)]).await, [NOT_AUTHORIZED], "{flavour:?}: $CONTROL/#");

    // Nothing was obeyed; and the admin's own replies are not delivered to the device.
    let replies = admin
        .request(
            r#"{"command":"getClient","username":"intruder"},{"command":"getClient","username":"dev"},
               {"command":"listClients"}"#,
        )
        .await;
    assert_eq!(error_of(&replies[0]).as_deref(), Some("Client not found"), "{flavour:?}");
    let dev = String::from_utf8_lossy(&replies[1].to_compact()).into_owned();
    assert!(dev.contains(r#""roles":[{"rolename":"own"}]"#), "{flavour:?}: {dev}");
    let clients = String::from_utf8_lossy(&replies[2].to_compact()).into_owned();
    assert!(clients.contains(&format!(r#""clients":["{ADMIN}","dev"]"#)), "{flavour:?}: {clients}");
    device.expect_quiet().await;

    // The role itself works where `%c` is substituted (a control that the refusals above come
    // from the `$` rule and not from a role that grants nothing); 2.0 has no substitution.
    let mut own = user(broker.addr(), 5, "dev-1", "dev", "dev-pw").await;
    let substituted = flavour != Flavour::Mosquitto;
    let granted = if substituted { 0 } else { NOT_AUTHORIZED };
    assert_eq!(own.subscribe(1, &[("dev-1/#", 0)]).await, [granted], "{flavour:?}: own subscription");
    own.publish("dev-1/state", b"up", 0, false, 0).await;
    own.publish("dev-1/state", b"up", 1, false, 2).await;
    let (code, mut delivered) = puback(&mut own, 2).await;
    if substituted {
        assert!(code < 0x80, "{flavour:?}: own publish refused with {code:#x}");
        while delivered.len() < 2 {
            delivered.push(own.expect_publish().await.topic);
        }
        assert_eq!(delivered, ["dev-1/state", "dev-1/state"], "{flavour:?}");
    } else {
        assert_eq!(code, NOT_AUTHORIZED, "{flavour:?}: own publish");
        assert!(delivered.is_empty());
    }
    tokio::time::sleep(QUIET).await;
    device.expect_quiet().await;
}

#[tokio::test]
async fn ours_keeps_the_control_endpoint_out_of_reach() {
    control_endpoint_stays_out_of_reach(Flavour::Ours).await;
}

#[tokio::test]
async fn mosquitto_2_1_keeps_the_control_endpoint_out_of_reach() {
    if mosquitto_21("mosquitto_2_1_keeps_the_control_endpoint_out_of_reach").is_none() {
        return;
    }
    control_endpoint_stays_out_of_reach(Flavour::Mosquitto21).await;
}

#[tokio::test]
async fn mosquitto_2_0_keeps_the_control_endpoint_out_of_reach() {
    control_endpoint_stays_out_of_reach(Flavour::Mosquitto).await;
}
