//! mosquitto 2.1.2's broker control API and its answer for `$CONTROL` endpoints nobody serves,
//! compared with the real 2.1.2: the same requests go to `dynsec-broker` and to 2.1.2 (both with
//! dynamic security and `enable_control_api true`, or without the API) and what comes back to the
//! requester — topic and payload bytes of every reply, listener ports aside — must be identical.
//!
//! Fails when mosquitto 2.1 is not installed, unless `DYNSEC_SKIP_ORACLE_21=1`.

use std::path::Path;

use dynsec_broker::testkit::{self, Next, QUIET};
use dynsec_tests::dynsec_target::{Admin, DynsecBroker, Flavour, Setup};
use dynsec_tests::mosquitto::mosquitto_21;

/// `$CONTROL` requests (topic, payload): the API's two commands in every spelling and envelope
/// error 2.1.2 has, then endpoints that do not exist (including a reply topic and the API's own
/// reply topic).
const REQUESTS: &[(&str, &str)] = &[
    (
        "$CONTROL/broker/v1",
        r#"{"commands":[{"command":"listPlugins"},{"command":"listListeners","correlationData":"c-1"}]}"#,
    ),
    (
        "$CONTROL/broker/v1",
        r#"{"commands":[{"command":"LISTlisteners"},{"command":"nope","correlationData":"c-2"},{"command":"listPlugins"}]}"#,
    ),
    ("$CONTROL/broker/v1", r#"{"commands":[{"command":"listPlugins","correlationData":5},{"command":"listPlugins"}]}"#),
    ("$CONTROL/broker/v1", r#"{"commands":[{"correlationData":"x"},{"command":"listPlugins"}]}"#),
    ("$CONTROL/broker/v1", r#"{"commands":["listPlugins",{"command":"listPlugins"}]}"#),
    ("$CONTROL/broker/v1", r#"{"commands":{}}"#),
    ("$CONTROL/broker/v1", "not json"),
    ("$CONTROL/broker/v1", ""),
    ("$CONTROL/nothing/v1", r#"{"commands":[{"command":"listPlugins"}]}"#),
    ("$CONTROL/x", "anything"),
    ("$CONTROL/dynamic-security/v1/response", "{}"),
    ("$CONTROL/broker/v1/response", "{}"),
    ("$CONTROL/dynamic-security/v2", r#"{"commands":[{"command":"getDetails"}]}"#),
];

/// The administrator may use every `$CONTROL` topic (`mosquitto_ctrl dynsec init` grants only
/// the dynamic-security ones).
const ADMIN_EVERYWHERE: &str = r#"{"command":"addRoleACL","rolename":"admin","acltype":"publishClientSend","topic":"$CONTROL/#","allow":true},
    {"command":"addRoleACL","rolename":"admin","acltype":"publishClientReceive","topic":"$CONTROL/#","allow":true},
    {"command":"addRoleACL","rolename":"admin","acltype":"subscribePattern","topic":"$CONTROL/#","allow":true}"#;

fn start(flavour: Flavour, api: bool) -> DynsecBroker {
    let setup = Setup { common: vec![format!("enable_control_api {api}")], ..Setup::default() };
    DynsecBroker::start(flavour, Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), &setup)
}

/// Sends every request at QoS 1 from an administrator subscribed to the API's reply topic only,
/// and returns, per request, the PUBLISHes that came back (topic and payload) with the broker's
/// port written `PORT`.
async fn exchange(broker: &DynsecBroker) -> Vec<Vec<(String, String)>> {
    // Changing the admin role's ACLs disconnects its holders: the admin comes back afterwards.
    Admin::connect(broker.addr(), "admin-setup").await.ok(ADMIN_EVERYWHERE).await;
    let mut admin = Admin::connect(broker.addr(), "admin-api").await;
    let client = &mut admin.client;
    assert_eq!(client.subscribe(7, &[("$CONTROL/broker/v1/response", 0)]).await, [0]);
    let port = format!(r#""port":{}"#, broker.port());
    let mut seen = Vec::new();
    for (i, (topic, payload)) in REQUESTS.iter().enumerate() {
        let pkid = 100 + i as u16;
        client.publish(topic, payload.as_bytes(), 1, false, pkid).await;
        let (mut acked, mut replies) = (false, Vec::new());
        // Until the PUBACK and then a quiet moment: a reply may follow the PUBACK.
        loop {
            match client.next(QUIET).await {
                Next::Frame(f) if f.packet_type == testkit::PUBACK && f.pkid() == pkid => acked = true,
                Next::Frame(f) if f.packet_type == testkit::PUBLISH => {
                    let publish = f.publish(true);
                    let text = String::from_utf8_lossy(&publish.payload).replace(&port, r#""port":PORT"#);
                    replies.push((publish.topic, text));
                }
                Next::Timeout if acked => break,
                other => panic!("{:?}: {topic}: unexpected {other:?}", broker.flavour),
            }
        }
        seen.push(replies);
    }
    seen
}

fn assert_same(ours: &[Vec<(String, String)>], theirs: &[Vec<(String, String)>]) {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a, b, "request {i} {:?} (left: dynsec-broker, right: mosquitto 2.1.2)", REQUESTS[i]);
    }
    assert_eq!(ours.len(), theirs.len());
}

#[tokio::test]
async fn broker_api_and_unserved_endpoints_match_mosquitto_2_1() {
    if mosquitto_21("broker_api_and_unserved_endpoints_match_mosquitto_2_1").is_none() {
        return;
    }
    let theirs = exchange(&start(Flavour::Mosquitto21, true)).await;
    let ours = exchange(&start(Flavour::Ours, true)).await;
    assert_same(&ours, &theirs);
    // Not vacuous: 2.1.2 listed its plugin and listener, and refused the unknown endpoints.
    assert!(theirs[0][0].1.contains(r#""name":"dynamic-security""#), "{:?}", theirs[0]);
    assert!(theirs[0][0].1.contains(r#""bind-address":"127.0.0.1""#), "{:?}", theirs[0]);
    assert_eq!(
        theirs[8],
        [("$CONTROL/nothing/v1/response".to_owned(), r#"{"error": "endpoint not available"}"#.to_owned())]
    );
}

#[tokio::test]
async fn without_enable_control_api_the_broker_endpoint_is_not_available() {
    if mosquitto_21("without_enable_control_api_the_broker_endpoint_is_not_available").is_none() {
        return;
    }
    let theirs = exchange(&start(Flavour::Mosquitto21, false)).await;
    let ours = exchange(&start(Flavour::Ours, false)).await;
    assert_same(&ours, &theirs);
    assert_eq!(theirs[0][0].1, r#"{"error": "endpoint not available"}"#);
}
