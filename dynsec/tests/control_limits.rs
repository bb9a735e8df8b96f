//! What one `$CONTROL` message may cost (docs/store.md, "Limits"): a message of N ACL edits
//! holds and journals an amount of data proportional to N, and the caps on commands per message
//! and ACLs per role answer with clear errors while losing nothing of what came before.
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use dynsec::commands::{Admin, Limits, Processor};
use dynsec::json::{self, Json};
use dynsec::model::{Model, Mutation, Role};
use dynsec::password::HashPolicy;
use dynsec::store::Store;
use dynsec::{Dynsec, Options};

fn add_acls(role: &str, from: usize, count: usize) -> Vec<Json> {
    (from..from + count)
        .map(|i| {
            let command = format!(
                r#"{{"command":"addRoleACL","rolename":"{role}","acltype":"publishClientSend","topic":"devices/{i:06}/telemetry","allow":true}}"#
            );
            json::parse(command.as_bytes()).unwrap()
        })
        .collect()
}

/// Runs `edits` addRoleACL commands for one role in one batch, as the engine does, and reports
/// the size of what the batch keeps in memory until it is durable (its changes and their undo,
/// measured by their `Debug` rendering, which shows every byte they hold) and the bytes its
/// journal record takes.
fn batch_footprint(edits: usize) -> (usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dynamic-security.json");
    let mut model = Model::default();
    model.apply(Mutation::PutRole(Role::new("bulk")));
    let mut store = Store::create(&file, &model).unwrap();
    let outcome = Processor::new(&mut model, HashPolicy::default(), Vec::new(), Admin::default())
        .run(&add_acls("bulk", 0, edits));
    assert!(!String::from_utf8_lossy(&outcome.response).contains("error"));
    assert_eq!(model.roles["bulk"].acl_count(), edits);
    let held = format!("{:?}{:?}", outcome.mutations, outcome.undo).len();
    store.prepare_for_write(&model).unwrap();
    store.commit(&outcome.mutations, &model).unwrap();
    let journalled = fs::metadata(Store::journal_path_for(&file)).unwrap().len();
    (held, journalled)
}

/// Doubling the number of ACL edits in a message doubles what it holds and journals (it used to
/// quadruple: every edit copied the whole role into the change, its undo and the journal).
#[test]
fn acl_edits_in_one_message_cost_linear_memory_and_journal() {
    // Small enough that the old quadratic record stayed under the compaction threshold, so the
    // journal file shows the whole record either way.
    let (held_n, journal_n) = batch_footprint(60);
    let (held_2n, journal_2n) = batch_footprint(120);
    let ratio = |a: usize, b: usize| b as f64 / a as f64;
    assert!(
        ratio(held_n, held_2n) < 2.2,
        "in-memory changes: {held_n} bytes for 60 edits, {held_2n} bytes for 120 edits"
    );
    assert!(
        ratio(journal_n as usize, journal_2n as usize) < 2.2,
        "journal: {journal_n} bytes for 60 edits, {journal_2n} bytes for 120 edits"
    );
}

fn engine_with(dir: &Path, limits: Limits) -> Arc<Dynsec> {
    let options = Options { limits, ..Options::default() };
    Dynsec::open_or_init(&dir.join("dynamic-security.json"), options, "admin", || "pw".into()).unwrap().0
}

fn send(engine: &Dynsec, commands: &str) -> String {
    let payload = format!(r#"{{"commands":[{commands}]}}"#);
    String::from_utf8(engine.handle_control(payload.as_bytes(), Admin::default()).response).unwrap()
}

fn topics(engine: &Dynsec, role: &str) -> Vec<String> {
    engine
        .with_model(|m| m.roles.get(role).map(|r| r.acls.iter().flatten().map(|a| a.topic.clone()).collect()))
        .unwrap_or_default()
}

fn add_acl(role: &str, topic: &str) -> String {
    format!(
        r#"{{"command":"addRoleACL","rolename":"{role}","acltype":"subscribePattern","topic":"{topic}","allow":true}}"#
    )
}

#[test]
fn too_many_acls_in_a_role_is_refused_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_acls_per_role: 3, ..Limits::default() };
    let engine = engine_with(dir.path(), limits);
    send(&engine, &format!(r#"{{"command":"createRole","rolename":"r"}},{}"#, add_acl("r", "a")));

    let reply = send(
        &engine,
        &[add_acl("r", "b"), add_acl("r", "c"), add_acl("r", "d"), add_acl("r", "c"), add_acl("other", "x")].join(","),
    );
    assert_eq!(
        reply,
        r#"{"responses":[{"command":"addRoleACL"},{"command":"addRoleACL"},{"command":"addRoleACL","error":"Too many ACLs in role (at most 3)"},{"command":"addRoleACL","error":"ACL with this topic already exists"},{"command":"addRoleACL","error":"Role not found"}]}"#
    );
    assert_eq!(topics(&engine, "r"), ["a", "b", "c"]);
    // Removing one makes room again.
    let reply = send(
        &engine,
        &format!(
            r#"{{"command":"removeRoleACL","rolename":"r","acltype":"subscribePattern","topic":"a"}},{}"#,
            add_acl("r", "d")
        ),
    );
    assert_eq!(reply, r#"{"responses":[{"command":"removeRoleACL"},{"command":"addRoleACL"}]}"#);

    // createRole and modifyRole with too many ACLs change nothing.
    let four = r#"[{"acltype":"publishClientSend","topic":"1"},{"acltype":"publishClientSend","topic":"2"},
                   {"acltype":"publishClientReceive","topic":"3"},{"acltype":"subscribeLiteral","topic":"4"}]"#;
    let reply = send(
        &engine,
        &format!(
            r#"{{"command":"createRole","rolename":"big","acls":{four},"correlationData":"c1"}},
               {{"command":"modifyRole","rolename":"r","textname":"renamed","acls":{four}}}"#
        ),
    );
    assert_eq!(
        reply,
        r#"{"responses":[{"command":"createRole","error":"Too many ACLs in role (at most 3)","correlationData":"c1"},{"command":"modifyRole","error":"Too many ACLs in role (at most 3)"}]}"#
    );
    assert!(engine.with_model(|m| !m.roles.contains_key("big") && m.roles["r"].textname.is_none()));
    assert_eq!(topics(&engine, "r"), ["b", "c", "d"]);

    // Everything acknowledged is durable.
    drop(engine);
    let reopened = engine_with(dir.path(), limits);
    assert_eq!(topics(&reopened, "r"), ["b", "c", "d"]);
}

#[test]
fn too_many_commands_in_a_message_run_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(dir.path(), Limits { max_commands_per_message: 3, ..Limits::default() });
    let create = |name: &str| format!(r#"{{"command":"createRole","rolename":"{name}"}}"#);
    assert_eq!(
        send(&engine, &[create("a"), create("b"), create("c"), create("d")].join(",")),
        r#"{"responses":[{"command":"Unknown command","error":"Too many commands (at most 3 per message)"}]}"#
    );
    assert_eq!(engine.with_model(|m| m.roles.len()), 1, "only the admin role of init");
    assert_eq!(
        send(&engine, &[create("a"), create("b"), create("c")].join(",")),
        r#"{"responses":[{"command":"createRole"},{"command":"createRole"},{"command":"createRole"}]}"#
    );
}

/// The defaults, as documented: 10,000 commands per message, 10,000 ACLs per role.
#[test]
fn default_limits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(dir.path(), Limits::default());
    let too_many = vec![r#"{"command":"getAnonymousGroup"}"#; 10_001].join(",");
    assert_eq!(
        send(&engine, &too_many),
        r#"{"responses":[{"command":"Unknown command","error":"Too many commands (at most 10000 per message)"}]}"#
    );
    send(&engine, r#"{"command":"createRole","rolename":"bulk"}"#);
    let fill: Vec<String> =
        add_acls("bulk", 0, 10_000).iter().map(|c| String::from_utf8(c.to_compact()).unwrap()).collect();
    let reply = send(&engine, &fill.join(","));
    assert!(!reply.contains("error"), "10,000 commands and 10,000 ACLs are within the limits");
    let reply = send(&engine, &String::from_utf8(add_acls("bulk", 10_000, 1)[0].to_compact()).unwrap());
    assert_eq!(reply, r#"{"responses":[{"command":"addRoleACL","error":"Too many ACLs in role (at most 10000)"}]}"#);
}

/// Each ACL edit kicks whoever holds the role at that moment, also when the holders change
/// between two edits of the same message (holders found once are reused only while nothing that
/// can change them has happened).
#[test]
fn acl_edits_kick_the_holders_of_the_moment() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(dir.path(), Limits::default());
    send(
        &engine,
        r#"{"command":"createRole","rolename":"r"},{"command":"createClient","username":"early","roles":[{"rolename":"r"}]}"#,
    );
    let payload = format!(
        r#"{{"commands":[{},{},{{"command":"createClient","username":"late","roles":[{{"rolename":"r"}}]}},{}]}}"#,
        add_acl("r", "a"),
        add_acl("r", "b"),
        add_acl("r", "c")
    );
    let result = engine.handle_control(payload.as_bytes(), Admin::default());
    assert!(!String::from_utf8_lossy(&result.response).contains("error"));
    let kicked: Vec<&str> = result.kicks.users.iter().map(String::as_str).collect();
    assert_eq!(kicked, ["early", "late"]);
}
