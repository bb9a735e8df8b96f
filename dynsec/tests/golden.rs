//! Golden control scripts (`dynsec/tests/golden/*.txt`): every request runs through the real engine
//! (processor + durable store) and must produce the recorded reply byte for byte and the recorded
//! kicks. The same scripts are replayed against mosquitto 2.0.11 by
//! `tests/tests/e2e/golden_oracle.rs`, which is how the expected replies are known to be
//! mosquitto's. Format: see `scripts/golden-oracle.py`.
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use dynsec::commands::Admin;
use dynsec::{Dynsec, Options};

use dynsec::golden::{parse_script, scripts};

#[test]
fn golden_scripts_match_byte_for_byte() {
    let paths = scripts();
    assert!(paths.len() >= 6, "golden scripts missing");
    let mut failures = Vec::new();
    for path in &paths {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dynamic-security.json");
        let (engine, _) = Dynsec::open_or_init(&file, Options::default(), "admin", || "pw".into()).unwrap();
        for step in parse_script(path) {
            assert!(!step.expected.is_empty(), "{}:{}: no expected reply", path.display(), step.line);
            let admin = Admin { client_id: "golden".into(), username: Some("admin".into()) };
            let result = engine.handle_control(step.request.as_bytes(), admin);
            let got = String::from_utf8_lossy(&result.response);
            if got != step.expected {
                failures.push(format!(
                    "{}:{}\n  expected {}\n  got      {}",
                    path.display(),
                    step.line,
                    step.expected,
                    got
                ));
            }
            if result.kicks != step.kicks {
                failures.push(format!(
                    "{}:{} kicks: expected {:?}, got {:?}",
                    path.display(),
                    step.line,
                    step.kicks,
                    result.kicks
                ));
            }
        }
        // Everything acknowledged is on disk: reopening yields the same model.
        let live = engine.with_model(Clone::clone);
        drop(engine);
        let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
        assert_eq!(reopened.with_model(Clone::clone), live, "{}: state after reopen", path.display());
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Every error string of docs/compatibility.md §1.2 and §1.4 appears in at least one expected reply, and every
/// one of the 31 commands is exercised.
#[test]
fn golden_scripts_cover_every_command_and_error() {
    let all: String = scripts().iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    let errors = [
        "Payload not valid JSON",
        "Invalid/missing commands",
        "Command not an object",
        "Missing command",
        "Invalid correlationData data type.",
        "Unknown command",
        "Missing/invalid actions array",
        "Invalid/missing username",
        "Username not valid UTF-8",
        "Invalid/missing password",
        "Invalid/missing client id",
        "Client ID not valid UTF-8",
        "Invalid/missing textname",
        "Invalid/missing textdescription",
        "Client already exists",
        "Role not found",
        "'roles' not an array or missing/invalid rolename",
        "Group not found",
        "Client not found",
        "Empty password is not allowed",
        "Invalid/missing client ID",
        "'groups' contains an object with a 'groupname' that does not exist",
        "'groups' contains an object with an invalid 'groupname'",
        "Invalid/missing rolename",
        "Role name not valid UTF-8",
        "Internal error",
        "Invalid/missing groupname",
        "Group name not valid UTF-8",
        "Group already exists",
        "Deleting the anonymous group is forbidden",
        "'clients' contains an object with a 'username' that does not exist",
        "'clients' contains an object with an invalid 'username'",
        "Client is already in this group",
        "Group is already in this role",
        "Role already exists",
        "Role does not exist",
        "Invalid/missing acltype",
        "Unknown acltype",
        "Invalid/missing topic",
        "Topic not valid UTF-8",
        "Invalid ACL topic",
        "ACL with this topic already exists",
        "ACL not found",
    ];
    let expected_lines: String = all.lines().filter(|l| l.starts_with("< ")).collect::<Vec<_>>().join("\n");
    let missing: Vec<_> = errors.iter().filter(|e| !expected_lines.contains(&format!("\"error\":\"{e}\""))).collect();
    assert!(missing.is_empty(), "error strings without a golden case: {missing:?}");
    let commands: BTreeSet<&str> = [
        "setDefaultACLAccess",
        "getDefaultACLAccess",
        "createClient",
        "deleteClient",
        "setClientPassword",
        "setClientId",
        "modifyClient",
        "enableClient",
        "disableClient",
        "getClient",
        "listClients",
        "addClientRole",
        "removeClientRole",
        "createGroup",
        "deleteGroup",
        "modifyGroup",
        "getGroup",
        "listGroups",
        "addGroupClient",
        "removeGroupClient",
        "addGroupRole",
        "removeGroupRole",
        "setAnonymousGroup",
        "getAnonymousGroup",
        "createRole",
        "deleteRole",
        "modifyRole",
        "getRole",
        "listRoles",
        "addRoleACL",
        "removeRoleACL",
    ]
    .into();
    assert_eq!(commands.len(), 31);
    let uncovered: Vec<_> = commands
        .iter()
        .filter(|c| {
            !expected_lines.contains(&format!("{{\"command\":\"{c}\"}}"))
                && !expected_lines.contains(&format!("{{\"command\":\"{c}\",\"data\""))
        })
        .collect();
    assert!(uncovered.is_empty(), "commands without a successful golden case: {uncovered:?}");
}
