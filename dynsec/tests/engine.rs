//! The engine as a broker uses it: the dynsec basic-auth decision table (compat §3.2), the
//! credential cache's invalidation, and ACL handles that see every change on the next check.

use std::sync::Arc;

use dynsec::acl::{AccessKind, Decision};
use dynsec::commands::Admin;
use dynsec::{AuthResult, Dynsec, Options};

fn engine() -> (tempfile::TempDir, Arc<Dynsec>) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) =
        Dynsec::open_or_init(&dir.path().join("ds.json"), Options::default(), "admin", || "adminpw".into()).unwrap();
    (dir, engine)
}

fn run(engine: &Dynsec, commands: &str) -> String {
    let payload = format!(r##"{{"commands":[{commands}]}}"##);
    let out = engine.handle_control(payload.as_bytes(), Admin::default());
    String::from_utf8(out.response).unwrap()
}

#[test]
fn basic_auth_decision_table() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createClient","username":"plain","password":"pw"},
           {"command":"createClient","username":"bound","password":"pw","clientid":"dev-1"},
           {"command":"createClient","username":"off","password":"pw"},{"command":"disableClient","username":"off"},
           {"command":"createClient","username":"nopass"}"##,
    );
    let cases: [(&str, Option<&[u8]>, &str, AuthResult); 10] = [
        ("plain", Some(b"pw"), "any", AuthResult::Allow),
        ("plain", Some(b"wrong"), "any", AuthResult::Deny),
        ("plain", None, "any", AuthResult::Defer),
        ("plain", Some(b""), "any", AuthResult::Defer),
        ("stranger", Some(b"pw"), "any", AuthResult::Defer),
        ("off", Some(b"pw"), "any", AuthResult::Deny),
        ("bound", Some(b"pw"), "dev-1", AuthResult::Allow),
        ("bound", Some(b"pw"), "dev-2", AuthResult::Deny),
        ("nopass", Some(b"pw"), "any", AuthResult::Defer),
        ("admin", Some(b"adminpw"), "x", AuthResult::Allow),
    ];
    for (user, password, client_id, expected) in cases {
        assert_eq!(e.authenticate(user, password, client_id), expected, "{user} {password:?} {client_id}");
    }
}

#[test]
fn cached_verification_is_dropped_when_the_client_changes() {
    let (_dir, e) = engine();
    run(&e, r##"{"command":"createClient","username":"u","password":"old"}"##);
    assert_eq!(e.authenticate("u", Some(b"old"), "c"), AuthResult::Allow);
    assert_eq!(e.authenticate("u", Some(b"old"), "c"), AuthResult::Allow); // from the cache
    run(&e, r##"{"command":"setClientPassword","username":"u","password":"new"}"##);
    assert_eq!(e.authenticate("u", Some(b"old"), "c"), AuthResult::Deny);
    assert_eq!(e.authenticate("u", Some(b"new"), "c"), AuthResult::Allow);
    run(&e, r##"{"command":"disableClient","username":"u"}"##);
    assert_eq!(e.authenticate("u", Some(b"new"), "c"), AuthResult::Deny);
    run(
        &e,
        r##"{"command":"enableClient","username":"u"},{"command":"setClientId","username":"u","clientid":"only"}"##,
    );
    assert_eq!(e.authenticate("u", Some(b"new"), "c"), AuthResult::Deny);
    run(&e, r##"{"command":"deleteClient","username":"u"}"##);
    assert_eq!(e.authenticate("u", Some(b"new"), "only"), AuthResult::Defer);
}

#[test]
fn acl_handles_see_changes_on_the_next_check() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"t/#","allow":true}]},
           {"command":"createClient","username":"u","roles":[{"rolename":"r"}]},
           {"command":"createClient","username":"other"},
           {"command":"createGroup","groupname":"g"}"##,
    );
    let u = e.acl_handle(Some("u"));
    let other = e.acl_handle(Some("other"));
    let stranger = e.acl_handle(Some("stranger"));
    let anon = e.acl_handle(None);
    assert_eq!(u.check(AccessKind::Publish, "t/1", Some("c")), Decision::Allow);
    assert_eq!(other.check(AccessKind::Publish, "t/1", Some("c")), Decision::Defer);

    run(&e, r##"{"command":"removeRoleACL","rolename":"r","acltype":"publishClientSend","topic":"t/#"}"##);
    assert_eq!(u.check(AccessKind::Publish, "t/1", Some("c")), Decision::Defer);
    run(&e, r##"{"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"t/#","allow":false}"##);
    assert_eq!(u.check(AccessKind::Publish, "t/1", Some("c")), Decision::Deny);

    // Through a group, then through the anonymous group.
    run(
        &e,
        r##"{"command":"addGroupRole","groupname":"g","rolename":"r"},{"command":"addGroupClient","groupname":"g","username":"other"}"##,
    );
    assert_eq!(other.check(AccessKind::Publish, "t/1", Some("c")), Decision::Deny);
    assert_eq!(anon.check(AccessKind::Publish, "t/1", None), Decision::Defer);
    run(&e, r##"{"command":"setAnonymousGroup","groupname":"g"}"##);
    assert_eq!(anon.check(AccessKind::Publish, "t/1", None), Decision::Deny);

    // Defaults apply to known users only; a client created later stops being a stranger.
    run(&e, r##"{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true}]}"##);
    assert_eq!(u.check(AccessKind::Subscribe, "x", Some("c")), Decision::Allow);
    assert_eq!(stranger.check(AccessKind::Subscribe, "x", Some("c")), Decision::Defer);
    run(&e, r##"{"command":"createClient","username":"stranger"}"##);
    assert_eq!(stranger.check(AccessKind::Subscribe, "x", Some("c")), Decision::Allow);
    run(&e, r##"{"command":"deleteRole","rolename":"r"}"##);
    assert_eq!(u.check(AccessKind::Publish, "t/1", Some("c")), Decision::Defer);
    assert_eq!(anon.check(AccessKind::Publish, "t/1", None), Decision::Defer);
}

/// A handle remembers its last answers; the memo must key on the access kind, the topic and the
/// client id, and survive more topics than it has room for.
#[test]
fn remembered_answers_match_fresh_evaluation() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"r","acls":[
              {"acltype":"publishClientSend","topic":"dev/%c/#","allow":true},
              {"acltype":"publishClientReceive","topic":"dev/+/cmd","allow":true},
              {"acltype":"publishClientSend","topic":"dev/a/deny","allow":false,"priority":5}]},
           {"command":"createClient","username":"u","roles":[{"rolename":"r"}]}"##,
    );
    let handle = e.acl_handle(Some("u"));
    let fresh = e.acl_handle(Some("u"));
    let topics = ["dev/a/x", "dev/a/cmd", "dev/b/x", "dev/b/cmd", "dev/a/deny", "other", "dev/a/y"];
    let kinds = [AccessKind::Publish, AccessKind::Receive];
    for round in 0..3 {
        for topic in topics {
            for kind in kinds {
                for client in [Some("a"), Some("b"), None] {
                    let remembered = handle.check(kind, topic, client);
                    // A new handle per comparison has an empty memo.
                    let expected = e.acl_handle(Some("u")).check(kind, topic, client);
                    assert_eq!(remembered, expected, "round {round}: {kind:?} {topic} {client:?}");
                }
            }
        }
    }
    assert_eq!(handle.check(AccessKind::Publish, "dev/a/x", Some("a")), Decision::Allow);
    assert_eq!(handle.check(AccessKind::Publish, "dev/a/x", Some("b")), Decision::Defer);
    // Receiving falls to the default access (allowed by `init`), not to the publish rule.
    assert_eq!(handle.check(AccessKind::Receive, "dev/a/x", Some("a")), Decision::Allow);
    assert_eq!(handle.check(AccessKind::Publish, "dev/a/deny", Some("a")), Decision::Deny);
    assert_eq!(fresh.check(AccessKind::Publish, "dev/a/deny", Some("a")), Decision::Deny);
}

/// Checks from many threads while an admin changes the role: every answer is one of the two
/// valid states, and after the change returns, every thread sees the new one.
#[test]
fn concurrent_checks_during_changes_stay_consistent() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientReceive","topic":"#","allow":true}]},
           {"command":"createClient","username":"u","roles":[{"rolename":"r"}]}"##,
    );
    let handles: Vec<_> = (0..4).map(|_| e.acl_handle(Some("u"))).collect();
    std::thread::scope(|s| {
        for h in &handles {
            s.spawn(move || {
                for _ in 0..20_000 {
                    let d = h.check(AccessKind::Receive, "a/b", None);
                    assert!(matches!(d, Decision::Allow | Decision::Deny));
                }
            });
        }
        for i in 0..50 {
            let allow = i % 2 == 0;
            run(
                &e,
                &format!(
                    r##"{{"command":"modifyRole","rolename":"r","acls":[{{"acltype":"publishClientReceive","topic":"#","allow":{allow}}}]}}"##
                ),
            );
            for h in &handles {
                let expected = if allow { Decision::Allow } else { Decision::Deny };
                assert_eq!(h.check(AccessKind::Receive, "a/b", None), expected);
            }
        }
    });
}

/// An engine never makes hashes it could not load again: a policy beyond the cost limits
/// (docs/store.md, "Limits") is refused when the configuration is opened, naming the limit.
#[test]
fn hash_policies_beyond_the_limits_are_refused_at_open() {
    use dynsec::password::HashPolicy;
    let dir = tempfile::tempdir().unwrap();
    let options = Options { hash_policy: HashPolicy::Pbkdf2Sha512 { iterations: 3_000_000 }, ..Options::default() };
    let err = Dynsec::open_or_init(&dir.path().join("ds.json"), options, "admin", || "pw".into()).err().unwrap();
    assert_eq!(err.to_string(), "password hashing settings: PBKDF2 iterations 3000000 above the limit of 2000000");
    assert!(!dir.path().join("ds.json").exists(), "nothing was created");
}
