//! The CONNACK matrix of docs/compatibility.md §3.2 and the reason codes of §6: one table of CONNECTs
//! (MQTT 3.1, 3.1.1 and 5; good and bad credentials, unknown and disabled clients, client-id
//! binding, anonymous access) run against `dynsec-broker` and against the real mosquitto 2.0 with
//! its dynamic-security plugin, on the same `dynamic-security.json` contents, with
//! `allow_anonymous` false and true. Both brokers must give the table's answer, row by row.

use std::path::Path;

use dynsec_broker::testkit::{Connect, RawClient};
use dynsec_tests::dynsec_target::{
    Admin, DynsecBroker, Flavour, Login, Setup, credentials, login, not_authorised, user,
};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

/// The clients every run provisions through `$CONTROL` before the table runs.
const PROVISIONING: &str = r#"
    {"command":"createClient","username":"alice","password":"alice-pw"},
    {"command":"createClient","username":"bound","password":"bound-pw","clientid":"bound-id"},
    {"command":"createClient","username":"off","password":"off-pw"},
    {"command":"disableClient","username":"off"},
    {"command":"createClient","username":"nopw"},
    {"command":"createGroup","groupname":"guests"},
    {"command":"setAnonymousGroup","groupname":"guests"}"#;

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    Refused,
    /// Accepted exactly when `allow_anonymous` is true.
    AcceptedIfAnonymousAllowed,
}

struct Row {
    name: &'static str,
    client_id: &'static str,
    username: Option<&'static str>,
    password: Option<&'static [u8]>,
    expect: Expect,
}

const fn row(
    name: &'static str,
    client_id: &'static str,
    username: Option<&'static str>,
    password: Option<&'static [u8]>,
    expect: Expect,
) -> Row {
    Row { name, client_id, username, password, expect }
}

/// §3.2's decision table, as CONNECTs. Client ids are unique per row (the version is appended).
const ROWS: &[Row] = &[
    row("good credentials", "m-alice", Some("alice"), Some(b"alice-pw"), Expect::Accepted),
    row("wrong password", "m-alice-bad", Some("alice"), Some(b"wrong"), Expect::Refused),
    row("password of another client", "m-alice-other", Some("alice"), Some(b"bound-pw"), Expect::Refused),
    row("unknown username", "m-ghost", Some("ghost"), Some(b"ghost-pw"), Expect::Refused),
    row("disabled client, right password", "m-off", Some("off"), Some(b"off-pw"), Expect::Refused),
    row("bound client id, right id", "bound-id", Some("bound"), Some(b"bound-pw"), Expect::Accepted),
    row("bound client id, other id", "not-bound-id", Some("bound"), Some(b"bound-pw"), Expect::Refused),
    row("bound client id, differs in case", "BOUND-ID", Some("bound"), Some(b"bound-pw"), Expect::Refused),
    row("bound client id, wrong password", "bound-id", Some("bound"), Some(b"nope"), Expect::Refused),
    row("username without password", "m-alice-nopw", Some("alice"), None, Expect::Refused),
    row("zero-length password", "m-alice-empty", Some("alice"), Some(b""), Expect::Refused),
    row("client without password in dynsec", "m-nopw", Some("nopw"), Some(b"anything"), Expect::Refused),
    row("no username", "m-anon", None, None, Expect::AcceptedIfAnonymousAllowed),
    row("zero-length username is anonymous", "m-empty-user", Some(""), None, Expect::AcceptedIfAnonymousAllowed),
];

/// One CONNECT per row and protocol version; the outcomes in table order.
async fn run_matrix(broker: &DynsecBroker) -> Vec<(String, Login)> {
    let mut outcomes = Vec::new();
    for version in [3u8, 4, 5] {
        for row in ROWS {
            // The bound id must stay byte-exact; every other id gets the version appended so
            // that no row takes over another row's connection.
            let client_id = if row.client_id.starts_with("bound") {
                row.client_id.to_owned()
            } else {
                format!("{}-{version}", row.client_id)
            };
            let (outcome, client) =
                login(broker.addr(), &credentials(version, &client_id, row.username, row.password)).await;
            drop(client);
            outcomes.push((format!("v{version} {}", row.name), outcome));
        }
    }
    outcomes
}

fn expected(allow_anonymous: bool) -> Vec<(String, Login)> {
    let mut rows = Vec::new();
    for version in [3u8, 4, 5] {
        for row in ROWS {
            let accepted = match row.expect {
                Expect::Accepted => true,
                Expect::Refused => false,
                Expect::AcceptedIfAnonymousAllowed => allow_anonymous,
            };
            let outcome = if accepted { Login::Connack(0) } else { not_authorised(version) };
            rows.push((format!("v{version} {}", row.name), outcome));
        }
    }
    rows
}

async fn matrix_for(flavour: Flavour, allow_anonymous: bool) -> Vec<(String, Login)> {
    let broker = DynsecBroker::start(flavour, ours(), &Setup { allow_anonymous, ..Setup::default() });
    let mut admin = Admin::connect(broker.addr(), "matrix-admin").await;
    admin.ok(PROVISIONING).await;
    run_matrix(&broker).await
}

fn mismatches(name: &str, got: &[(String, Login)], want: &[(String, Login)]) -> Vec<String> {
    got.iter()
        .zip(want)
        .filter(|(g, w)| g != w)
        .map(|(g, w)| format!("{name}: {}: got {:?}, want {:?}", g.0, g.1, w.1))
        .collect()
}

async fn compare_with_mosquitto(allow_anonymous: bool) {
    let (ours, oracle) =
        tokio::join!(matrix_for(Flavour::Ours, allow_anonymous), matrix_for(Flavour::Mosquitto, allow_anonymous));
    let want = expected(allow_anonymous);
    let mut problems = mismatches("mosquitto", &oracle, &want);
    problems.extend(mismatches("dynsec-broker", &ours, &want));
    assert!(problems.is_empty(), "allow_anonymous {allow_anonymous}:\n{}", problems.join("\n"));
    assert_eq!(ours, oracle, "same outcome row by row");
}

#[tokio::test]
async fn connack_matrix_without_anonymous_matches_mosquitto() {
    compare_with_mosquitto(false).await;
}

#[tokio::test]
async fn connack_matrix_with_anonymous_matches_mosquitto() {
    compare_with_mosquitto(true).await;
}

/// Credentials changed through `$CONTROL` apply to the next CONNECT: enable/disable, new
/// password, new client id binding, deleted client. Run on both brokers with the same steps.
async fn live_changes(flavour: Flavour) -> Vec<(String, Login)> {
    let broker = DynsecBroker::start(flavour, ours(), &Setup::default());
    let mut admin = Admin::connect(broker.addr(), "live-admin").await;
    admin.ok(PROVISIONING).await;
    let addr = broker.addr();
    let mut outcomes = Vec::new();
    let mut attempt = async |label: &str, version: u8, id: &str, user: &str, password: &[u8]| {
        let (outcome, _) = login(addr, &credentials(version, id, Some(user), Some(password))).await;
        outcomes.push((label.to_owned(), outcome));
    };
    admin.ok(r#"{"command":"enableClient","username":"off"}"#).await;
    attempt("enabled again", 5, "l-off", "off", b"off-pw").await;
    admin.ok(r#"{"command":"setClientPassword","username":"alice","password":"new-pw"}"#).await;
    attempt("old password after setClientPassword", 4, "l-alice", "alice", b"alice-pw").await;
    attempt("new password after setClientPassword", 5, "l-alice", "alice", b"new-pw").await;
    admin.ok(r#"{"command":"setClientId","username":"alice","clientid":"alice-only"}"#).await;
    attempt("other id after setClientId", 4, "l-alice", "alice", b"new-pw").await;
    attempt("bound id after setClientId", 4, "alice-only", "alice", b"new-pw").await;
    admin.ok(r#"{"command":"setClientId","username":"alice"}"#).await;
    attempt("any id after clearing the binding", 5, "l-alice-2", "alice", b"new-pw").await;
    admin.ok(r#"{"command":"modifyClient","username":"nopw","password":"now-set"}"#).await;
    attempt("password given by modifyClient", 4, "l-nopw", "nopw", b"now-set").await;
    admin.ok(r#"{"command":"deleteClient","username":"alice"}"#).await;
    attempt("deleted client", 5, "l-alice-3", "alice", b"new-pw").await;
    outcomes
}

#[tokio::test]
async fn credential_changes_apply_to_the_next_connect_like_mosquitto() {
    let (ours, oracle) = tokio::join!(live_changes(Flavour::Ours), live_changes(Flavour::Mosquitto));
    let want: Vec<(String, Login)> = [
        ("enabled again", Login::Connack(0)),
        ("old password after setClientPassword", Login::Connack(5)),
        ("new password after setClientPassword", Login::Connack(0)),
        ("other id after setClientId", Login::Connack(5)),
        ("bound id after setClientId", Login::Connack(0)),
        ("any id after clearing the binding", Login::Connack(0)),
        ("password given by modifyClient", Login::Connack(0)),
        ("deleted client", Login::Connack(0x87)),
    ]
    .into_iter()
    .map(|(label, login)| (label.to_owned(), login))
    .collect();
    assert_eq!(oracle, want, "mosquitto");
    assert_eq!(ours, want, "dynsec-broker");
}

/// An auto-assigned client id (empty id, clean session) never matches a bound client id, and the
/// anonymous group's roles give anonymous clients their rights (here: one subscription).
async fn anonymous_group_and_assigned_ids(flavour: Flavour) -> (Login, Vec<u8>, Vec<u8>) {
    let broker = DynsecBroker::start(flavour, ours(), &Setup { allow_anonymous: true, ..Setup::default() });
    let mut admin = Admin::connect(broker.addr(), "anon-admin").await;
    admin.ok(PROVISIONING).await;
    admin
        .ok(r#"{"command":"createRole","rolename":"guest","acls":[{"acltype":"subscribeLiteral","topic":"lobby/news","allow":true}]},
               {"command":"addGroupRole","groupname":"guests","rolename":"guest"}"#)
        .await;
    let (assigned, _) = login(broker.addr(), &credentials(5, "", Some("bound"), Some(b"bound-pw"))).await;
    let mut guest = RawClient::connected(broker.addr(), &Connect::new(5, "a-guest")).await;
    let granted = guest.subscribe(1, &[("lobby/news", 0)]).await;
    let denied = guest.subscribe(2, &[("lobby/other", 0)]).await;
    (assigned, granted, denied)
}

#[tokio::test]
async fn anonymous_group_and_assigned_client_ids_like_mosquitto() {
    let (ours, oracle) = tokio::join!(
        anonymous_group_and_assigned_ids(Flavour::Ours),
        anonymous_group_and_assigned_ids(Flavour::Mosquitto)
    );
    assert_eq!(oracle, (Login::Connack(0x87), vec![0], vec![0x87]), "mosquitto");
    assert_eq!(ours, oracle, "dynsec-broker");
}

/// The same answers through rumqttc, the client library most Rust users have: 3.1.1 and 5.
#[tokio::test]
async fn rumqttc_v4_and_v5_see_accept_and_refusal() {
    let broker = DynsecBroker::start(Flavour::Ours, ours(), &Setup::default());
    let mut admin = Admin::connect(broker.addr(), "rumqttc-admin").await;
    admin.ok(PROVISIONING).await;

    for (password, want) in [("alice-pw", ConnectReturnCode::Success), ("wrong", ConnectReturnCode::NotAuthorized)] {
        let mut options = MqttOptions::new(format!("rq4-{password}"), "127.0.0.1", broker.port());
        options.set_credentials("alice", password);
        let (_client, mut eventloop) = AsyncClient::new(options, 10);
        let code = loop {
            match tokio::time::timeout(dynsec_broker::testkit::WAIT, eventloop.poll()).await.expect("rumqttc v4 answer")
            {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => break connack.code,
                Ok(_) => continue,
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => break code,
                Err(other) => panic!("rumqttc v4: {other:?}"),
            }
        };
        assert_eq!(code, want, "v4 with {password}");
    }

    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Code5, Packet as Packet5};
    use rumqttc::v5::{AsyncClient as Client5, ConnectionError as Error5, Event as Event5, MqttOptions as Options5};
    for (password, want) in [("alice-pw", Code5::Success), ("wrong", Code5::NotAuthorized)] {
        let mut options = Options5::new(format!("rq5-{password}"), "127.0.0.1", broker.port());
        options.set_credentials("alice", password);
        let (_client, mut eventloop) = Client5::new(options, 10);
        let code = loop {
            match tokio::time::timeout(dynsec_broker::testkit::WAIT, eventloop.poll()).await.expect("rumqttc v5 answer")
            {
                Ok(Event5::Incoming(Packet5::ConnAck(connack))) => break connack.code,
                Ok(_) => continue,
                Err(Error5::ConnectionRefused(code)) => break code,
                Err(other) => panic!("rumqttc v5: {other:?}"),
            }
        };
        assert_eq!(code, want, "v5 with {password}");
    }
    // The plain connections above must not count as anything but logins.
    let mut alice = user(broker.addr(), 4, "alive-check", "alice", "alice-pw").await;
    alice.ping().await;
}
