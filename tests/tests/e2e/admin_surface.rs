//! The administration surface is closed to everyone else: a client without the dynsec ACLs cannot
//! send control requests (no effect; MQTT 5 PUBACK 0x87), cannot read the replies and never sees
//! `$CONTROL` traffic through `#` (checked on `dynsec-broker` and mosquitto 2.0 alike); no
//! password, hash or salt ever appears in the broker's log (at `log_type all`), in control replies
//! or, in plain text, in the store; the store and the generated admin password file are readable
//! by their owner only (mode 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use dynsec_broker::testkit::{self, WAIT};
use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::dynsec_target::{
    Admin, DynsecBroker, Flavour, Login, REQUEST_TOPIC, RESPONSE_TOPIC, Setup, credentials, error_of, login, user,
};

fn broker_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

const OPEN_EVERYTHING: &str = r##"
    {"command":"setDefaultACLAccess","acls":[
        {"acltype":"publishClientSend","allow":true},{"acltype":"publishClientReceive","allow":true},
        {"acltype":"subscribe","allow":true},{"acltype":"unsubscribe","allow":true}]},
    {"command":"createRole","rolename":"everything","acls":[
        {"acltype":"publishClientSend","topic":"#","allow":true},
        {"acltype":"publishClientReceive","topic":"#","allow":true},
        {"acltype":"subscribePattern","topic":"#","allow":true}]},
    {"command":"createClient","username":"snoop","password":"snoop-pw"},
    {"command":"addClientRole","username":"snoop","rolename":"everything"},
    {"command":"createClient","username":"plain","password":"plain-pw"}"##;

/// Returns (v5 PUBACK reason, 3.1.1 PUBACK length, SUBACK codes of `plain`, whether the
/// intruders' requests had any effect).
async fn control_surface(flavour: Flavour) -> (u8, usize, Vec<u8>, bool) {
    let broker = DynsecBroker::start(flavour, broker_binary(), &Setup::default());
    let addr = broker.addr();
    let mut admin = Admin::connect(addr, "surface-admin").await;
    admin.ok(OPEN_EVERYTHING).await;

    // `snoop` may publish, receive and subscribe to anything the ACL `#` covers; `plain` has
    // only the (all true) default access.
    let mut snoop5 = user(addr, 5, "snoop-5", "snoop", "snoop-pw").await;
    let mut snoop4 = user(addr, 4, "snoop-4", "snoop", "snoop-pw").await;
    let mut plain = user(addr, 5, "plain-5", "plain", "plain-pw").await;

    // 2.0 pattern matching lets `#` subscribe to `$CONTROL/#`, but deliveries are checked against
    // publishClientReceive `#`, which never matches a `$` topic.
    assert_eq!(snoop5.subscribe(1, &[("#", 0), ("$CONTROL/#", 0), (RESPONSE_TOPIC, 0)]).await, [0, 0, 0]);
    let plain_codes = plain.subscribe(1, &[(RESPONSE_TOPIC, 0), ("$CONTROL/#", 0), ("#", 0)]).await;

    let intrude =
        |user: &str| format!(r#"{{"commands":[{{"command":"createClient","username":"{user}","password":"x"}}]}}"#);
    snoop5.publish(REQUEST_TOPIC, intrude("intruder5").as_bytes(), 1, false, 9).await;
    let v5_ack = snoop5.expect(testkit::PUBACK).await;
    snoop4.publish(REQUEST_TOPIC, intrude("intruder4").as_bytes(), 1, false, 9).await;
    let v4_ack = snoop4.expect(testkit::PUBACK).await;
    plain.publish(REQUEST_TOPIC, intrude("intruder-plain").as_bytes(), 1, false, 9).await;
    assert_eq!(plain.expect(testkit::PUBACK).await.reason(), 0x87, "default access never opens $CONTROL");

    // The admin's own traffic, then an ordinary message as an end marker for the snoopers.
    let replies = admin
        .request(
            r#"{"command":"getClient","username":"intruder5"},{"command":"getClient","username":"intruder4"},
               {"command":"getClient","username":"intruder-plain"},{"command":"listClients"}"#,
        )
        .await;
    let effect = replies[..3].iter().any(|r| error_of(r).is_none());
    let listed = String::from_utf8_lossy(&replies[3].to_compact()).into_owned();
    assert!(!listed.contains("intruder"), "{listed}");
    snoop4.publish("normal/end", b"marker", 0, false, 0).await;
    for (name, client) in [("snoop", &mut snoop5), ("plain", &mut plain)] {
        let first = client.expect_publish().await;
        assert_eq!(first.topic, "normal/end", "{name} saw {first:?} before the marker");
    }
    (v5_ack.reason(), v4_ack.body.len(), plain_codes, effect)
}

#[tokio::test]
async fn clients_without_the_acl_cannot_use_or_see_the_control_api_like_mosquitto() {
    let (ours, oracle) = tokio::join!(control_surface(Flavour::Ours), control_surface(Flavour::Mosquitto));
    assert_eq!(oracle, (0x87, 2, vec![0x87, 0x87, 0], false), "mosquitto");
    assert_eq!(ours, oracle, "dynsec-broker");
}

/// Every string value stored under `key` for the clients of a dynamic-security.json.
fn client_values(file: &[u8], key: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_slice(file).expect("the store is JSON");
    doc["clients"].as_array().expect("clients").iter().filter_map(|c| c[key].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn no_password_hash_or_salt_in_the_log_replies_or_plain_in_the_store() {
    let setup = Setup { ours_only: vec!["plugin_opt_snapshot_idle_ms 50".into()], ..Setup::default() };
    let broker = DynsecBroker::start(Flavour::Ours, broker_binary(), &setup);
    let addr = broker.addr();
    let mut admin = Admin::connect(addr, "secret-admin").await;
    let passwords = ["Create-Pw-7f3a", "Reset-Pw-91bd", "Modify-Pw-c2e8", "Wrong-Guess-55aa"];
    admin
        .ok(r#"{"command":"createClient","username":"s1","password":"Create-Pw-7f3a"},
               {"command":"createClient","username":"s2","password":"placeholder-0000"},
               {"command":"setClientPassword","username":"s2","password":"Reset-Pw-91bd"},
               {"command":"createClient","username":"s3"},
               {"command":"modifyClient","username":"s3","password":"Modify-Pw-c2e8"}"#)
        .await;
    // Good and bad logins, so the authentication path logs what it logs.
    for (user_name, password, ok) in
        [("s1", "Create-Pw-7f3a", true), ("s2", "Reset-Pw-91bd", true), ("s3", "Wrong-Guess-55aa", false)]
    {
        let (outcome, _) =
            login(addr, &credentials(5, &format!("{user_name}-login"), Some(user_name), Some(password.as_bytes())))
                .await;
        assert_eq!(outcome == Login::Connack(0), ok, "{user_name}");
    }

    // Replies: getClient for each and listClients verbose carry no credential fields.
    let replies = admin
        .ok(r#"{"command":"getClient","username":"s1"},{"command":"getClient","username":"s2"},
               {"command":"getClient","username":"s3"},{"command":"getClient","username":"admin"},
               {"command":"listClients","verbose":true}"#)
        .await;
    let reply_text: String = replies.iter().map(|r| String::from_utf8_lossy(&r.to_compact()).into_owned()).collect();
    assert!(reply_text.contains("\"s3\""), "the replies describe the clients: {reply_text}");

    // The snapshot written once idle holds the hashes and salts to look for.
    let file = broker.file().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    let stored = loop {
        let bytes = std::fs::read(&file).unwrap_or_default();
        if String::from_utf8_lossy(&bytes).contains("\"s3\"") {
            break bytes;
        }
        assert!(tokio::time::Instant::now() < deadline, "the snapshot never showed the new clients");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let hashes = client_values(&stored, "password");
    let salts = client_values(&stored, "salt");
    assert_eq!((hashes.len(), salts.len()), (4, 4), "admin, s1, s2, s3 each have a hash and a salt");

    let log = broker.log();
    assert!(log.contains("s3"), "the log is verbose enough to mention the clients");
    let journal = std::fs::read(file.with_extension("json.journal")).unwrap_or_default();
    let store_text = String::from_utf8_lossy(&stored).into_owned() + &String::from_utf8_lossy(&journal);
    for secret in passwords.iter().map(|p| p.to_string()).chain([dynsec_tests::dynsec_target::ADMIN_PASSWORD.into()]) {
        assert!(!log.contains(&secret), "password {secret} in the log");
        assert!(!reply_text.contains(&secret), "password {secret} in a reply");
        assert!(!store_text.contains(&secret), "password {secret} in plain text in the store");
    }
    for secret in hashes.iter().chain(&salts) {
        assert!(!log.contains(secret.as_str()), "hash/salt {secret} in the log");
        assert!(!reply_text.contains(secret.as_str()), "hash/salt {secret} in a reply");
    }
    for key in ["\"password\"", "\"salt\"", "\"iterations\"", "encoded_password"] {
        assert!(!reply_text.contains(key), "{key} in a reply: {reply_text}");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// First start on a missing dynamic-security.json with no admin password given: the broker
/// creates the store and `<file>.pw` with the generated password, both mode 0600, and the
/// password works. Files the store writes later keep that mode.
#[tokio::test]
async fn store_and_generated_admin_password_file_are_owner_only() {
    for var in dynsec_broker::security::chain::ADMIN_PASSWORD_ENV {
        assert!(std::env::var_os(var).is_none(), "unset {var} to run this test: it must see a generated password");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = "listener 0 127.0.0.1\nlog_type all\nallow_anonymous false\n\
                  plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
                  plugin_opt_config_file dynamic-security.json\nplugin_opt_snapshot_idle_ms 50\n";
    let broker = BrokerProcess::start_in(broker_binary(), dir.path(), config, &[]);
    let store = dir.path().join("dynamic-security.json");
    let password_file = dir.path().join("dynamic-security.json.pw");
    assert_eq!(mode(&store), 0o600, "store");
    assert_eq!(mode(&password_file), 0o600, "generated password file");
    let saved = std::fs::read_to_string(&password_file).unwrap();
    let password = saved.strip_prefix("admin ").and_then(|p| p.strip_suffix('\n')).expect("`admin <password>` line");
    assert!(password.len() >= 16, "a long generated password");

    // It works, and the change it makes is written with the same mode.
    let mut admin = Admin::connect_as(broker.addr(), "first-admin", "admin", password).await;
    admin.ok(r#"{"command":"createClient","username":"later","password":"later-pw"}"#).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&store).unwrap_or_default().contains("\"later\"") {
        assert!(tokio::time::Instant::now() < deadline, "the snapshot never showed the new client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("dynamic-security.json") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    // The generated password is shown once, on stdout (the log captures it), and nowhere else.
    assert_eq!(broker.log().matches(password).count(), 1, "printed exactly once at creation");
}
