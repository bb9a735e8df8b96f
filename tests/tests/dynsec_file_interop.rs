//! `dynamic-security.json` and passwords, both ways between dynsec and the real mosquitto 2.0.11:
//! - a file written by `mosquitto_ctrl dynsec init` and one grown by the real broker load here
//!   without loss (every get/list reply is identical to the one mosquitto gave before it stopped),
//!   and passwords set through mosquitto verify here;
//! - a file written by our store is loaded by the real broker, which then answers the same
//!   get/list replies, and passwords hashed by us let clients log in to mosquitto.

use std::process::Command;

use dynsec::commands::Admin;
use dynsec::{AuthResult, Dynsec, Options};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_ctrl_init};
use dynsec_tests::rr;

const ADMIN_PASSWORD: &str = "interop-admin-pw";

/// Changes covering every kind of entity and field the file holds.
const SETUP: &str = r##"{"commands":[
 {"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true},{"acltype":"publishClientReceive","allow":false}]},
 {"command":"createRole","rolename":"sensors","textname":"Sensors","textdescription":"field devices","acls":[
   {"acltype":"publishClientSend","topic":"sensors/+/data","priority":3,"allow":true},
   {"acltype":"publishClientSend","topic":"sensors/secret/#","priority":9,"allow":false},
   {"acltype":"subscribeLiteral","topic":"cmd/all","allow":true},
   {"acltype":"subscribePattern","topic":"cmd/#","priority":-2,"allow":true},
   {"acltype":"unsubscribePattern","topic":"#","allow":true}]},
 {"command":"createRole","rolename":"viewer"},
 {"command":"addRoleACL","rolename":"viewer","acltype":"publishClientReceive","topic":"sensors/#","priority":1,"allow":true},
 {"command":"createGroup","groupname":"fleet","textname":"Fleet","roles":[{"rolename":"viewer","priority":4}]},
 {"command":"createGroup","groupname":"anon"},
 {"command":"createClient","username":"dev1","password":"dev1-pw","clientid":"dev1-id","textname":"Device 1",
   "roles":[{"rolename":"sensors","priority":2}],"groups":[{"groupname":"fleet","priority":7}]},
 {"command":"createClient","username":"dev2","password":"dev2-pw"},
 {"command":"addGroupClient","groupname":"fleet","username":"dev2"},
 {"command":"addClientRole","username":"dev2","rolename":"viewer"},
 {"command":"createClient","username":"off","password":"off-pw"},
 {"command":"disableClient","username":"off"},
 {"command":"createClient","username":"nopw","textdescription":"no password"},
 {"command":"setAnonymousGroup","groupname":"anon"},
 {"command":"setClientPassword","username":"dev2","password":"dev2-new"}]}"##;

/// Read-only requests whose replies show the whole configuration.
const QUERIES: [&str; 9] = [
    r#"{"commands":[{"command":"listClients","verbose":true}]}"#,
    r#"{"commands":[{"command":"listGroups","verbose":true}]}"#,
    r#"{"commands":[{"command":"listRoles","verbose":true}]}"#,
    r#"{"commands":[{"command":"getDefaultACLAccess"}]}"#,
    r#"{"commands":[{"command":"getAnonymousGroup"}]}"#,
    r#"{"commands":[{"command":"getClient","username":"dev1"}]}"#,
    r#"{"commands":[{"command":"getClient","username":"dev2"}]}"#,
    r#"{"commands":[{"command":"getGroup","groupname":"fleet"}]}"#,
    r#"{"commands":[{"command":"getRole","rolename":"sensors"}]}"#,
];

/// Our answer as mosquitto 2.0.11 gives it: without mosquitto 2.1's `allowwildcardsubs` key on
/// roles, which 2.0.11 does not know (docs/known-differences.md, "mosquitto 2.0.11 vs 2.1.2").
fn ours(engine: &Dynsec, payload: &str) -> String {
    let answer = String::from_utf8(engine.handle_control(payload.as_bytes(), Admin::default()).response).unwrap();
    answer.replace(r#""allowwildcardsubs":true,"#, "")
}

/// Connects to mosquitto as `user` with `password` and publishes once; true if it was let in.
fn mosquitto_accepts(port: u16, user: &str, password: &str, client_id: &str) -> bool {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", user, "-P", password, "-i", client_id])
        .args(["-t", "interop/test", "-m", "x"])
        .status()
        .expect("run mosquitto_pub");
    status.success()
}

#[test]
fn mosquitto_ctrl_init_file_loads_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ds.json");
    mosquitto_ctrl_init(&file, "admin", ADMIN_PASSWORD);
    let (engine, report) = Dynsec::open(&file, Options::default()).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(engine.authenticate("admin", Some(ADMIN_PASSWORD.as_bytes()), "any"), AuthResult::Allow);
    assert_eq!(engine.authenticate("admin", Some(b"wrong"), "any"), AuthResult::Deny);
    assert_eq!(
        ours(&engine, r#"{"commands":[{"command":"getClient","username":"admin"}]}"#),
        r#"{"responses":[{"command":"getClient","data":{"client":{"username":"admin","textname":"Dynsec admin user","roles":[{"rolename":"admin"}],"groups":[]}}}]}"#
    );
    assert_eq!(engine.with_model(|m| m.roles["admin"].acl_count()), 8);
    // Opening did not rewrite the user's file.
    assert!(std::fs::read_to_string(&file).unwrap().contains("textName"));
}

#[test]
fn file_grown_by_mosquitto_loads_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ds.json");
    mosquitto_ctrl_init(&file, "admin", ADMIN_PASSWORD);
    let theirs: Vec<String> = {
        let broker = Mosquitto::with_dynsec(dir.path(), &file);
        let setup = rr::request(broker.port(), "admin", ADMIN_PASSWORD, SETUP).unwrap();
        assert!(!setup.contains("error"), "{setup}");
        QUERIES.iter().map(|q| rr::request(broker.port(), "admin", ADMIN_PASSWORD, q).unwrap()).collect()
    };
    let (engine, report) = Dynsec::open(&file, Options::default()).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    for (query, expected) in QUERIES.iter().zip(&theirs) {
        assert_eq!(&ours(&engine, query), expected, "{query}");
    }
    // Passwords set through mosquitto (createClient and setClientPassword) verify here.
    assert_eq!(engine.authenticate("dev1", Some(b"dev1-pw"), "dev1-id"), AuthResult::Allow);
    assert_eq!(engine.authenticate("dev2", Some(b"dev2-new"), "x"), AuthResult::Allow);
    assert_eq!(engine.authenticate("dev2", Some(b"dev2-pw"), "x"), AuthResult::Deny);
    assert_eq!(engine.authenticate("off", Some(b"off-pw"), "x"), AuthResult::Deny);
    assert_eq!(engine.authenticate("nopw", Some(b"x"), "x"), AuthResult::Defer);
}

#[test]
fn our_file_is_loaded_by_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ds.json");
    let expected: Vec<String> = {
        let (engine, _) = Dynsec::open_or_init(&file, Options::default(), "admin", || ADMIN_PASSWORD.into()).unwrap();
        let setup = ours(&engine, SETUP);
        assert!(!setup.contains("error"), "{setup}");
        engine.flush().unwrap();
        QUERIES.iter().map(|q| ours(&engine, q)).collect()
    };
    let broker = Mosquitto::with_dynsec(dir.path(), &file);
    for (query, expected) in QUERIES.iter().zip(&expected) {
        assert_eq!(&rr::request(broker.port(), "admin", ADMIN_PASSWORD, query).unwrap(), expected, "{query}");
    }
    // Passwords hashed here (PBKDF2-SHA512, our default iteration count) log in to mosquitto.
    assert!(mosquitto_accepts(broker.port(), "dev1", "dev1-pw", "dev1-id"));
    assert!(mosquitto_accepts(broker.port(), "dev2", "dev2-new", "any"));
    assert!(!mosquitto_accepts(broker.port(), "dev2", "dev2-pw", "any"));
    assert!(!mosquitto_accepts(broker.port(), "dev1", "dev1-pw", "other-id"));
    assert!(!mosquitto_accepts(broker.port(), "off", "off-pw", "any"));
}
