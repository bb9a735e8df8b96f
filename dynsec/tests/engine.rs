//! The engine as a broker uses it: the dynsec basic-auth decision table (docs/compatibility.md §3.2), the
//! credential cache's invalidation, and ACL handles (and the views of each client through them)
//! that see every change on the next check.
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

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
    // Two clients of `u` through one shared handle, both remembering their answer.
    let u = Arc::new(u);
    let views = [u.view(Some("c1".into())), u.view(Some("c2".into()))];
    for view in &views {
        for _ in 0..2 {
            assert_eq!(view.check(AccessKind::Publish, "t/1"), Decision::Allow);
        }
        assert!(view.remembers());
    }

    run(&e, r##"{"command":"removeRoleACL","rolename":"r","acltype":"publishClientSend","topic":"t/#"}"##);
    assert_eq!(u.check(AccessKind::Publish, "t/1", Some("c")), Decision::Defer);
    for view in &views {
        assert_eq!(view.check(AccessKind::Publish, "t/1"), Decision::Defer, "{view:?}");
    }
    run(&e, r##"{"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"t/#","allow":false}"##);
    assert_eq!(u.check(AccessKind::Publish, "t/1", Some("c")), Decision::Deny);
    for view in &views {
        assert_eq!(view.check(AccessKind::Publish, "t/1"), Decision::Deny, "{view:?}");
    }

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

/// A view remembers its last answers once its client repeats a check; the memo must key on the
/// access kind and the topic, keep each client's `%c` apart, and survive more topics than it has
/// room for.
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
    let handle = Arc::new(e.acl_handle(Some("u")));
    let topics = ["dev/a/x", "dev/a/cmd", "dev/b/x", "dev/b/cmd", "dev/a/deny", "other", "dev/a/y"];
    let kinds = [AccessKind::Publish, AccessKind::Receive];
    let clients = [Some("a"), Some("b"), None];
    let views: Vec<_> = clients.iter().map(|client| handle.view(client.map(Arc::from))).collect();
    for round in 0..3 {
        for topic in topics {
            for kind in kinds {
                for (client, view) in clients.iter().zip(&views) {
                    // Twice in a row: the second check starts the memo, later rounds answer from it.
                    for _ in 0..2 {
                        let remembered = view.check(kind, topic);
                        // The handle's own check keeps nothing.
                        let expected = handle.check(kind, topic, *client);
                        assert_eq!(remembered, expected, "round {round}: {kind:?} {topic} {client:?}");
                    }
                }
            }
        }
    }
    assert!(views.iter().all(|view| view.remembers()));
    let [a, b, _] = &views[..] else { unreachable!() };
    assert_eq!(a.check(AccessKind::Publish, "dev/a/x"), Decision::Allow);
    assert_eq!(b.check(AccessKind::Publish, "dev/a/x"), Decision::Defer);
    // Receiving falls to the default access (allowed by `init`), not to the publish rule.
    assert_eq!(a.check(AccessKind::Receive, "dev/a/x"), Decision::Allow);
    assert_eq!(a.check(AccessKind::Publish, "dev/a/deny"), Decision::Deny);
    assert_eq!(handle.check(AccessKind::Publish, "dev/a/deny", Some("a")), Decision::Deny);
}

/// A client whose checks change topic every time (a quiet device: telemetry out, a command in)
/// keeps no memo, and its answers are the same.
#[test]
fn a_view_keeps_no_memo_for_checks_that_do_not_repeat() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"dev/%c/#","allow":true}]},
           {"command":"createClient","username":"u","roles":[{"rolename":"r"}]}"##,
    );
    let handle = Arc::new(e.acl_handle(Some("u")));
    let view = handle.view(Some("d1".into()));
    for _ in 0..10 {
        assert_eq!(view.check(AccessKind::Publish, "dev/d1/telemetry"), Decision::Allow);
        assert_eq!(view.check(AccessKind::Receive, "dev/d1/cmd"), Decision::Allow);
    }
    assert!(!view.remembers());
    assert_eq!(view.check(AccessKind::Publish, "dev/d2/telemetry"), Decision::Defer, "`%c` is the view's client");
}

/// Principals with the same role walk share one compiled copy of its rules, each with its own
/// `%u` and `%c`; a change to the role reaches all of them, and they share again afterwards.
#[test]
fn principals_with_the_same_roles_share_compiled_rules() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"device","acls":[
              {"acltype":"publishClientSend","topic":"users/%u/#","allow":true},
              {"acltype":"publishClientSend","topic":"fleet/#","allow":true}]},
           {"command":"createRole","rolename":"extra"},
           {"command":"createClient","username":"d1","roles":[{"rolename":"device"}]},
           {"command":"createClient","username":"d2","roles":[{"rolename":"device"}]},
           {"command":"createClient","username":"d3","roles":[{"rolename":"device"},{"rolename":"extra"}]}"##,
    );
    let [d1, d2, d3] = ["d1", "d2", "d3"].map(|u| e.acl_handle(Some(u)));
    assert!(Arc::ptr_eq(&d1.rules(), &d2.rules()), "one role walk, one copy");
    assert!(!Arc::ptr_eq(&d1.rules(), &d3.rules()), "another walk, its own");
    assert_eq!(d1.check(AccessKind::Publish, "users/d1/t", Some("c")), Decision::Allow);
    assert_eq!(d1.check(AccessKind::Publish, "users/d2/t", Some("c")), Decision::Defer, "`%u` is each user's own");
    assert_eq!(d2.check(AccessKind::Publish, "users/d2/t", Some("c")), Decision::Allow);

    let before = d1.rules();
    run(
        &e,
        r##"{"command":"removeRoleACL","rolename":"device","acltype":"publishClientSend","topic":"fleet/#"},
           {"command":"addRoleACL","rolename":"device","acltype":"publishClientSend","topic":"fleet/#","allow":false}"##,
    );
    for handle in [&d1, &d2, &d3] {
        assert_eq!(handle.check(AccessKind::Publish, "fleet/x", Some("c")), Decision::Deny);
    }
    assert!(!Arc::ptr_eq(&before, &d1.rules()), "compiled again after the change");
    assert!(Arc::ptr_eq(&d1.rules(), &d2.rules()), "and shared again");

    // d3's second role changes, then d1 is given it too: d1 walks d3's roles and sees the change.
    run(
        &e,
        r##"{"command":"addRoleACL","rolename":"extra","acltype":"publishClientSend","topic":"x/#","allow":true}"##,
    );
    run(&e, r##"{"command":"addClientRole","username":"d1","rolename":"extra"}"##);
    assert_eq!(d1.check(AccessKind::Publish, "x/1", Some("c")), Decision::Allow);
    assert!(Arc::ptr_eq(&d1.rules(), &d3.rules()), "d1 now walks d3's roles");
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
    // One handle shared by four clients, as the broker shares it per user.
    let handle = Arc::new(e.acl_handle(Some("u")));
    let handles: Vec<_> = (0..4).map(|i| handle.view(Some(format!("c{i}").into()))).collect();
    std::thread::scope(|s| {
        for h in &handles {
            s.spawn(move || {
                for _ in 0..20_000 {
                    let d = h.check(AccessKind::Receive, "a/b");
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
                assert_eq!(h.check(AccessKind::Receive, "a/b"), expected);
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

/// mosquitto 2.1.2's `getDetails` and `changeIndex`: +1 for every changing command that succeeds
/// (a no-op such as enabling an enabled client counts; reads and errors do not), visible at once
/// inside the batch, kept across a reopen, and nothing when a batch only reads.
#[test]
fn change_index_counts_successful_changing_commands() {
    let (dir, e) = engine();
    let details = r#"{"command":"getDetails"}"#;
    assert_eq!(
        run(&e, details),
        r#"{"responses":[{"command":"getDetails","data":{"clientCount":1,"groupCount":0,"roleCount":1,"changeIndex":0}}]}"#
    );
    let out = run(
        &e,
        r#"{"command":"createRole","rolename":"a"},{"command":"createRole","rolename":"a"},
           {"command":"enableClient","username":"admin"},{"command":"getRole","rolename":"a"},{"command":"getDetails"}"#,
    );
    assert!(
        out.ends_with(
            r#"{"command":"getDetails","data":{"clientCount":1,"groupCount":0,"roleCount":2,"changeIndex":2}}]}"#
        ),
        "{out}"
    );
    run(&e, r#"{"command":"listRoles"},{"command":"getDefaultACLAccess"}"#);
    assert!(run(&e, details).contains(r#""changeIndex":2"#));
    drop(e);
    let (reopened, _) = Dynsec::open(&dir.path().join("ds.json"), Options::default()).unwrap();
    assert!(run(&reopened, details).contains(r#""changeIndex":2"#));
    reopened.flush().unwrap();
    let file = std::fs::read_to_string(dir.path().join("ds.json")).unwrap();
    assert!(file.starts_with("{\n\t\"changeIndex\":\t2,\n"), "{file}");
}

/// 2.1's refusals: empty names at creation, a non-boolean `allowwildcardsubs` at createRole
/// (modifyRole ignores it), an empty ACL topic.
#[test]
fn mosquitto_2_1_refusals() {
    let (_dir, e) = engine();
    let out = run(
        &e,
        r#"{"command":"createClient","username":""},{"command":"createGroup","groupname":""},
           {"command":"createRole","rolename":""},{"command":"createRole","rolename":"w","allowwildcardsubs":1},
           {"command":"createRole","rolename":"ok"},{"command":"modifyRole","rolename":"ok","allowwildcardsubs":"no"},
           {"command":"addRoleACL","rolename":"ok","acltype":"subscribePattern","topic":""},{"command":"getRole","rolename":"ok"}"#,
    );
    assert_eq!(
        out,
        r#"{"responses":[{"command":"createClient","error":"Empty username"},{"command":"createGroup","error":"Empty groupname"},{"command":"createRole","error":"Empty rolename"},{"command":"createRole","error":"Invalid allowwildcardsubs"},{"command":"createRole"},{"command":"modifyRole"},{"command":"addRoleACL","error":"Invalid ACL topic"},{"command":"getRole","data":{"role":{"rolename":"ok","allowwildcardsubs":true,"acls":[]}}}]}"#
    );
}

/// Priorities are capped at 100000: on both sides for ACLs, addGroupRole, addGroupClient and
/// modifyGroup's clients; only above for addClientRole and the `roles`/`groups` lists of the
/// create/modify commands (as mosquitto 2.1.2 does).
#[test]
fn priorities_are_capped_as_mosquitto_2_1_caps_them() {
    let (_dir, e) = engine();
    run(
        &e,
        r#"{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"a","priority":-900000}]},
           {"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"b","priority":900000},
           {"command":"createGroup","groupname":"g"},{"command":"createGroup","groupname":"h","roles":[{"rolename":"r","priority":-900000}]},
           {"command":"addGroupRole","groupname":"g","rolename":"r","priority":-900000},
           {"command":"createClient","username":"u","roles":[{"rolename":"r","priority":900000}],"groups":[{"groupname":"h","priority":-900000}]},
           {"command":"addGroupClient","groupname":"g","username":"u","priority":-900000},
           {"command":"createClient","username":"v"},{"command":"addClientRole","username":"v","rolename":"r","priority":-900000}"#,
    );
    let out = run(
        &e,
        r#"{"command":"getRole","rolename":"r"},{"command":"getGroup","groupname":"g"},{"command":"getGroup","groupname":"h"},
           {"command":"getClient","username":"u"},{"command":"getClient","username":"v"}"#,
    );
    for expected in [
        r#"{"acltype":"publishClientSend","topic":"b","priority":100000,"allow":false},{"acltype":"publishClientSend","topic":"a","priority":-100000,"allow":false}"#,
        r#""groupname":"g","clients":[{"username":"u"}],"roles":[{"rolename":"r","priority":-100000}]"#,
        r#""groupname":"h","clients":[{"username":"u"}],"roles":[{"rolename":"r","priority":-900000}]"#,
        r#""roles":[{"rolename":"r","priority":100000}],"groups":[{"groupname":"g","priority":-100000},{"groupname":"h","priority":-900000}]"#,
        r#""username":"v","roles":[{"rolename":"r","priority":-900000}]"#,
    ] {
        assert!(out.contains(expected), "{expected}\nnot in {out}");
    }
}

/// A role with `allowwildcardsubs` false: its holders' wildcard subscriptions are denied from the
/// next check on; modifyRole kicks the holders when it changes the flag or sets `acls` (2.1), not
/// for a text change or the same flag.
#[test]
fn allow_wildcard_subs_is_enforced_and_modify_role_kicks() {
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"r","acls":[{"acltype":"subscribePattern","topic":"#","allow":true}]},
           {"command":"createClient","username":"u","roles":[{"rolename":"r"}]},
           {"command":"createGroup","groupname":"g","roles":[{"rolename":"r"}]},
           {"command":"createClient","username":"m"},{"command":"addGroupClient","groupname":"g","username":"m"}"##,
    );
    let handle = e.acl_handle(Some("u"));
    assert_eq!(handle.check(AccessKind::Subscribe, "a/#", Some("c")), Decision::Allow);
    let modify = |body: &str| {
        let payload = format!(r#"{{"commands":[{{"command":"modifyRole","rolename":"r"{body}}}]}}"#);
        e.handle_control(payload.as_bytes(), Admin::default()).kicks
    };
    let kicked = modify(r#","allowwildcardsubs":false"#);
    assert_eq!(kicked.users.iter().map(String::as_str).collect::<Vec<_>>(), ["m", "u"]);
    assert_eq!(handle.check(AccessKind::Subscribe, "a/#", Some("c")), Decision::Deny);
    assert_eq!(handle.check(AccessKind::Subscribe, "a/+/b", Some("c")), Decision::Deny);
    assert_eq!(handle.check(AccessKind::Subscribe, "a/b", Some("c")), Decision::Allow);
    assert!(modify(r#","allowwildcardsubs":false"#).is_empty());
    assert!(modify(r#","textname":"t""#).is_empty());
    assert_eq!(modify(r##","acls":[{"acltype":"subscribePattern","topic":"#","allow":true}]"##).users.len(), 2);
    assert_eq!(modify(r#","allowwildcardsubs":true"#).users.len(), 2);
    assert_eq!(handle.check(AccessKind::Subscribe, "a/#", Some("c")), Decision::Allow);
}

#[test]
fn explain_agrees_with_the_acl_handles_and_follows_changes() {
    use dynsec::acl::DecidedBy;
    let (_dir, e) = engine();
    run(
        &e,
        r##"{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"dev/%c/#","allow":true},
              {"acltype":"publishClientSend","topic":"dev/+/deny","allow":false,"priority":5},
              {"acltype":"subscribeLiteral","topic":"dev/+/cmd","allow":true}]},
           {"command":"createClient","username":"u","roles":[{"rolename":"r"}]}"##,
    );
    let handle = e.acl_handle(Some("u"));
    let kinds = [AccessKind::Publish, AccessKind::Receive, AccessKind::Subscribe, AccessKind::Unsubscribe];
    let compare = |round: &str| {
        for topic in ["dev/a/x", "dev/a/deny", "dev/+/cmd", "dev/b/x", "other", "$CONTROL/x"] {
            for kind in kinds {
                for client in [Some("a"), Some("a/b"), None] {
                    let explained = e.explain(Some("u"), kind, topic, client);
                    assert_eq!(
                        explained.decision,
                        handle.check(kind, topic, client),
                        "{round}: {kind:?} {topic} {client:?}"
                    );
                }
            }
        }
    };
    compare("first");
    let denied = e.explain(Some("u"), AccessKind::Publish, "dev/a/deny", Some("a"));
    assert_eq!(denied.decision, Decision::Deny);
    assert_eq!(denied.roles, ["r"]);
    let DecidedBy::Acl { role, topic, priority, allow, fail_closed, .. } = denied.decided_by else {
        panic!("decided by an ACL: {denied:?}")
    };
    assert_eq!((role.as_str(), topic.as_str(), priority, allow, fail_closed), ("r", "dev/+/deny", 5, false, false));

    run(&e, r##"{"command":"removeRoleACL","rolename":"r","acltype":"publishClientSend","topic":"dev/+/deny"}"##);
    compare("after a change");
    let allowed = e.explain(Some("u"), AccessKind::Publish, "dev/a/deny", Some("a"));
    assert_eq!(allowed.decision, Decision::Allow);
    assert!(matches!(allowed.decided_by, DecidedBy::Acl { ref topic, .. } if topic == "dev/%c/#"));
    let stranger = e.explain(Some("stranger"), AccessKind::Publish, "dev/a/x", None);
    assert_eq!((stranger.decision, stranger.decided_by), (Decision::Defer, DecidedBy::NotAClient));
}
