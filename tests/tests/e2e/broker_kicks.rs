//! Kicks (docs/compatibility.md §3.7): for each command of the table, the affected clients — by
//! username, or every anonymous client — are disconnected (MQTT 5: DISCONNECT 0x98, 3.1.1: the
//! socket closed), their wills are not published and their persistent sessions survive; clients
//! not concerned and commands that kick nobody leave connections alone. The table runs against
//! `dynsec-broker` and mosquitto 2.0. Then our documented fixes: an admin kicked by its own
//! command gets its PUBACK and reply first (mosquitto #2474), and live external edits of
//! `dynamic-security.json` kick whoever they changed (an invalid file keeps the old state).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dynsec_broker::testkit::{self, Connect, Next, RawClient, WAIT};
use dynsec_tests::dynsec_target::{
    ADMIN, ADMIN_PASSWORD, Admin, DynsecBroker, Flavour, Login, REQUEST_TOPIC, RESPONSE_TOPIC, Setup, credentials,
    kicked, login, responses, user,
};

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

/// Who a command concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// The clients logged in as `kv<n>`.
    User,
    /// Every client without a username.
    Anonymous,
}

struct KickRow {
    /// Commands run before the victims connect (`{n}` is the row number).
    setup: &'static str,
    /// The command under test.
    command: &'static str,
    victim: Victim,
    kicked: bool,
    /// Whether the victim can log in again with the same credentials and client ids afterwards.
    can_return: bool,
}

const fn kicks(setup: &'static str, command: &'static str, victim: Victim, can_return: bool) -> KickRow {
    KickRow { setup, command, victim, kicked: true, can_return }
}

const fn spares(setup: &'static str, command: &'static str) -> KickRow {
    KickRow { setup, command, victim: Victim::User, kicked: false, can_return: true }
}

const ROLE: &str = r#"{"command":"addClientRole","username":"kv{n}","rolename":"kr{n}"}"#;

/// §3.7's table. Roles are linked with addClientRole/addGroupRole, not at creation, so that
/// mosquitto 2.0.11's one-way link bug (§1.4) does not enter the comparison.
const TABLE: &[KickRow] = &[
    kicks("", r#"{"command":"deleteClient","username":"kv{n}"}"#, Victim::User, false),
    kicks("", r#"{"command":"disableClient","username":"kv{n}"}"#, Victim::User, false),
    kicks("", r#"{"command":"setClientId","username":"kv{n}","clientid":"elsewhere"}"#, Victim::User, false),
    kicks("", r#"{"command":"setClientPassword","username":"kv{n}","password":"changed"}"#, Victim::User, false),
    kicks("", r#"{"command":"modifyClient","username":"kv{n}","textname":"renamed"}"#, Victim::User, true),
    kicks("", r#"{"command":"addClientRole","username":"kv{n}","rolename":"kr{n}"}"#, Victim::User, true),
    kicks(ROLE, r#"{"command":"removeClientRole","username":"kv{n}","rolename":"kr{n}"}"#, Victim::User, true),
    kicks("", r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"}"#, Victim::User, true),
    kicks(
        r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"}"#,
        r#"{"command":"removeGroupClient","groupname":"kg{n}","username":"kv{n}"}"#,
        Victim::User,
        true,
    ),
    kicks(
        r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"}"#,
        r#"{"command":"addGroupRole","groupname":"kg{n}","rolename":"kr{n}"}"#,
        Victim::User,
        true,
    ),
    kicks(
        r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"},
           {"command":"addGroupRole","groupname":"kg{n}","rolename":"kr{n}"}"#,
        r#"{"command":"removeGroupRole","groupname":"kg{n}","rolename":"kr{n}"}"#,
        Victim::User,
        true,
    ),
    kicks(
        r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"}"#,
        r#"{"command":"modifyGroup","groupname":"kg{n}","textname":"renamed"}"#,
        Victim::User,
        true,
    ),
    kicks(
        r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"}"#,
        r#"{"command":"deleteGroup","groupname":"kg{n}"}"#,
        Victim::User,
        true,
    ),
    kicks(
        ROLE,
        r#"{"command":"addRoleACL","rolename":"kr{n}","acltype":"publishClientSend","topic":"x/{n}","allow":true}"#,
        Victim::User,
        true,
    ),
    kicks(
        r#"{"command":"addClientRole","username":"kv{n}","rolename":"kr{n}"},
           {"command":"addRoleACL","rolename":"kr{n}","acltype":"publishClientSend","topic":"x/{n}","allow":true}"#,
        r#"{"command":"removeRoleACL","rolename":"kr{n}","acltype":"publishClientSend","topic":"x/{n}"}"#,
        Victim::User,
        true,
    ),
    kicks(ROLE, r#"{"command":"deleteRole","rolename":"kr{n}"}"#, Victim::User, true),
    // A role reached through a group.
    kicks(
        r#"{"command":"addGroupClient","groupname":"kg{n}","username":"kv{n}"},
           {"command":"addGroupRole","groupname":"kg{n}","rolename":"kr{n}"}"#,
        r#"{"command":"addRoleACL","rolename":"kr{n}","acltype":"subscribePattern","topic":"x/{n}","allow":true}"#,
        Victim::User,
        true,
    ),
    kicks("", r#"{"command":"setAnonymousGroup","groupname":"kg{n}"}"#, Victim::Anonymous, true),
    kicks(
        r#"{"command":"setAnonymousGroup","groupname":"kg{n}"}"#,
        r#"{"command":"addGroupRole","groupname":"kg{n}","rolename":"kr{n}"}"#,
        Victim::Anonymous,
        true,
    ),
    spares("", r#"{"command":"enableClient","username":"kv{n}"}"#),
    spares("", r#"{"command":"createClient","username":"new{n}","password":"pw"}"#),
    spares("", r#"{"command":"createGroup","groupname":"new{n}"}"#),
    spares("", r#"{"command":"createRole","rolename":"new{n}"}"#),
    spares("", r#"{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":false}]}"#),
    spares("", r#"{"command":"getClient","username":"kv{n}"},{"command":"listClients","verbose":true}"#),
    // mosquitto 2.0 kicks nobody for modifyRole; every ACL decision is live anyway.
    spares(ROLE, r#"{"command":"modifyRole","rolename":"kr{n}","textname":"renamed"}"#),
];

/// The two connections of a victim: MQTT 5 with a session expiry, 3.1.1 with a persistent
/// session; both carry a will that would be published if they were simply dropped.
fn victim_connects(row: usize, victim: Victim) -> [Connect; 2] {
    let (username, password) = match victim {
        Victim::User => (Some(format!("kv{row}")), Some(b"kv-pw".to_vec())),
        Victim::Anonymous => (None, None),
    };
    [5u8, 4].map(|version| {
        let mut connect = Connect::new(version, &format!("k{row}-{version}"));
        connect.username = username.clone();
        connect.password = password.clone();
        connect.will = Some((format!("kwill/{row}/{version}"), b"will".to_vec(), 0, false));
        connect.clean = false;
        if version == 5 {
            connect.session_expiry = Some(600);
        }
        connect
    })
}

/// What happened to each connection: DISCONNECT reason (`Some`), plain close (`None`), or still
/// connected (`Err`).
type Fate = Result<Option<u8>, ()>;

async fn fate(client: &mut RawClient, kicked_expected: bool) -> Fate {
    if kicked_expected {
        Ok(kicked(client).await)
    } else {
        // Nothing but the PINGRESP: still connected.
        assert!(client.ping().await.is_empty());
        Err(())
    }
}

async fn run_table(flavour: Flavour) -> Vec<String> {
    let broker = DynsecBroker::start(flavour, ours(), &Setup { allow_anonymous: true, ..Setup::default() });
    let addr = broker.addr();
    let mut admin = Admin::connect(addr, "kick-admin").await;
    // Wills are allowed, so a will that does not arrive was suppressed by the kick.
    admin
        .ok(r#"{"command":"setDefaultACLAccess","acls":[{"acltype":"publishClientSend","allow":true}]},
               {"command":"createClient","username":"bystander","password":"by-pw"}"#)
        .await;
    let mut watcher = user(addr, 5, "kick-watch", ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(watcher.subscribe(1, &[("kwill/#", 0)]).await, [0]);
    let mut bystander = user(addr, 4, "bystander-4", "bystander", "by-pw").await;

    let mut problems = Vec::new();
    for (n, row) in TABLE.iter().enumerate() {
        let fill = |text: &str| text.replace("{n}", &n.to_string());
        admin
            .ok(&fill(
                r#"{"command":"createClient","username":"kv{n}","password":"kv-pw"},
                   {"command":"createRole","rolename":"kr{n}"},{"command":"createGroup","groupname":"kg{n}"}"#,
            ))
            .await;
        if !row.setup.is_empty() {
            admin.ok(&fill(row.setup)).await;
        }
        let connects = victim_connects(n, row.victim);
        let mut v5 = RawClient::connected(addr, &connects[0]).await;
        let mut v4 = RawClient::connected(addr, &connects[1]).await;
        admin.ok(&fill(row.command)).await;
        let want: [Fate; 2] = if row.kicked { [Ok(Some(0x98)), Ok(None)] } else { [Err(()), Err(())] };
        let got = [fate(&mut v5, row.kicked).await, fate(&mut v4, row.kicked).await];
        if got != want {
            problems.push(format!("{}: got {got:?}, want {want:?}", fill(row.command)));
        }
        if row.kicked && row.can_return {
            for connect in &connects {
                let mut again = connect.clone();
                again.will = None;
                let (mut client, connack) = RawClient::connect(addr, &again).await;
                match connack {
                    Next::Frame(f) if f.packet_type == testkit::CONNACK && f.reason() == 0 && f.session_present() => {}
                    other => problems.push(format!(
                        "{}: v{} session not kept after the kick: {other:?}",
                        fill(row.command),
                        connect.version
                    )),
                }
                client.send(&testkit::disconnect()).await;
                client.expect_closed().await;
            }
        } else if !row.kicked {
            for client in [&mut v5, &mut v4] {
                client.send(&testkit::disconnect()).await;
                client.expect_closed().await;
            }
        }
    }
    assert!(bystander.ping().await.is_empty(), "the bystander was never concerned");

    // Wills work: a dropped connection's will arrives — and it is the first thing the watcher
    // has seen, so no kicked client's will was published.
    let mut marker = Connect::new(4, "kick-marker");
    marker.will = Some(("kwill/marker".into(), b"dropped".to_vec(), 0, false));
    drop(RawClient::connected(addr, &marker).await);
    let first = watcher.expect_publish().await;
    if first.topic != "kwill/marker" {
        problems.push(format!("a will was published for a kicked client: {}", first.topic));
    }
    problems
}

#[tokio::test]
async fn kick_table_ours() {
    let problems = run_table(Flavour::Ours).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn kick_table_mosquitto() {
    let problems = run_table(Flavour::Mosquitto).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Frames an admin receives for a request that kicks itself, up to the close.
async fn self_kick(flavour: Flavour) -> Vec<(u8, u8, u16)> {
    let broker = DynsecBroker::start(flavour, ours(), &Setup::default());
    let mut admin = Admin::connect(broker.addr(), "self-admin").await;
    admin
        .ok(r#"{"command":"createClient","username":"admin2","password":"a2-pw"},
               {"command":"addClientRole","username":"admin2","rolename":"admin"}"#)
        .await;
    let mut second = Admin::connect_as(broker.addr(), "self-admin2", "admin2", "a2-pw").await;
    let request = r#"{"commands":[{"command":"setClientPassword","username":"admin2","password":"a2-new","correlationData":"mine"}]}"#;
    second.client.publish(REQUEST_TOPIC, request.as_bytes(), 1, false, 7).await;
    let frames = second.client.expect_closed().await;
    frames
        .iter()
        .map(|f| match f.packet_type {
            testkit::PUBACK => (f.packet_type, f.reason(), f.pkid()),
            testkit::PUBLISH => {
                assert_eq!(f.publish(true).topic, RESPONSE_TOPIC);
                let reply = &responses(f)[0];
                assert_eq!(reply.get("command").and_then(|c| c.as_bytes()), Some(&b"setClientPassword"[..]));
                assert!(reply.get("error").is_none(), "the change succeeded");
                (f.packet_type, 0, 0)
            }
            _ => (f.packet_type, f.reason(), 0),
        })
        .collect()
}

/// mosquitto #2474 fixed: PUBACK, then the reply, then DISCONNECT 0x98. mosquitto 2.0.11 sends
/// only the DISCONNECT (docs/compatibility.md §1.1); that oracle run documents the difference.
#[tokio::test]
async fn an_admin_kicked_by_its_own_command_gets_puback_and_reply_first() {
    let (ours, oracle) = tokio::join!(self_kick(Flavour::Ours), self_kick(Flavour::Mosquitto));
    assert_eq!(ours, [(testkit::PUBACK, 0, 7), (testkit::PUBLISH, 0, 0), (testkit::DISCONNECT, 0x98, 0)]);
    assert_eq!(oracle, [(testkit::DISCONNECT, 0x98, 0)], "mosquitto 2.0.11 still has bug #2474");
}

/// Polls `condition` (bounded by WAIT).
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces `path` the way editors and provisioning scripts do: a new file renamed over it.
fn rewrite(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("edit");
    std::fs::write(&tmp, bytes).expect("write the edited copy");
    std::fs::rename(&tmp, path).expect("rename the edited copy over the file");
}

async fn can_log_in(addr: SocketAddr, id: &str, username: &str, password: &str) -> bool {
    login(addr, &credentials(5, id, Some(username), Some(password.as_bytes()))).await.0 == Login::Connack(0)
}

/// dynsec-broker only (mosquitto 2.0 reads the file at start-up only): another program rewrites
/// `dynamic-security.json`; the broker reloads it and kicks exactly the clients whose rights
/// changed. A broken rewrite is logged and changes nothing.
#[tokio::test]
async fn external_edits_of_the_file_kick_changed_clients_and_invalid_files_are_ignored() {
    let setup = Setup { ours_only: vec!["plugin_opt_snapshot_idle_ms 50".into()], ..Setup::default() };
    let broker = DynsecBroker::start(Flavour::Ours, ours(), &setup);
    let addr = broker.addr();
    let mut admin = Admin::connect(addr, "edit-admin").await;
    admin
        .ok(r#"{"command":"createClient","username":"edited","password":"ed-pw"},
               {"command":"createClient","username":"untouched","password":"un-pw"}"#)
        .await;
    // The broker writes its snapshot once idle; edit that version.
    let file = broker.file().to_owned();
    eventually("the snapshot holds the new clients", || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.contains("\"untouched\""))
    })
    .await;
    let mut edited5 = user(addr, 5, "edited-5", "edited", "ed-pw").await;
    let mut edited4 = user(addr, 4, "edited-4", "edited", "ed-pw").await;
    let mut untouched = user(addr, 5, "untouched-5", "untouched", "un-pw").await;

    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let clients = doc["clients"].as_array_mut().expect("clients array");
    let entry = clients.iter_mut().find(|c| c["username"] == "edited").expect("edited client in the file");
    entry["disabled"] = serde_json::Value::Bool(true);
    rewrite(&file, serde_json::to_vec_pretty(&doc).unwrap().as_slice());

    assert_eq!(kicked(&mut edited5).await, Some(0x98), "v5 kicked with 0x98");
    assert_eq!(kicked(&mut edited4).await, None, "3.1.1 connection closed");
    assert!(untouched.ping().await.is_empty(), "a client the edit did not change stays connected");
    assert!(!can_log_in(addr, "edited-again", "edited", "ed-pw").await, "disabled by the edit");
    eventually("the reload is logged", || broker.log().contains("changed on disk: reloaded")).await;

    // An invalid file: logged, old state kept.
    rewrite(&file, b"{\"clients\": [ this is not JSON");
    eventually("the refused edit is logged", || broker.log().contains("changed on disk but was not loaded")).await;
    assert!(untouched.ping().await.is_empty(), "nobody kicked by an invalid file");
    assert!(can_log_in(addr, "untouched-again", "untouched", "un-pw").await);
    assert!(!can_log_in(addr, "edited-again-2", "edited", "ed-pw").await, "still disabled");
    let listed = admin.ok(r#"{"command":"listClients"}"#).await;
    let text = String::from_utf8_lossy(&listed[0].to_compact()).into_owned();
    assert!(text.contains("\"edited\"") && text.contains("\"untouched\""), "{text}");
}
