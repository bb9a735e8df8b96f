//! Durability rules of the store (issue: "a command is answered only after its effect is durable";
//! "if persistence fails the command gets an error and the in-memory state is unchanged").
//! Tests run as root, so permissions cannot make writes fail: a directory is put where a file
//! must be written instead.
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use dynsec::commands::Admin;
use dynsec::model::{Acl, AclType, Client, Group, Membership, Model, Mutation, Role, insert_membership};
use dynsec::store::Store;
use dynsec::{Dynsec, Options};
use proptest::prelude::*;

fn admin() -> Admin {
    Admin { client_id: "test".into(), username: Some("admin".into()) }
}

fn send(engine: &Dynsec, json: &str) -> String {
    String::from_utf8(engine.handle_control(json.as_bytes(), admin()).response).unwrap()
}

fn create(engine: &Dynsec, user: &str) -> String {
    send(engine, &format!(r#"{{"commands":[{{"command":"createClient","username":"{user}","password":"pw"}}]}}"#))
}

fn get(engine: &Dynsec, user: &str) -> String {
    send(engine, &format!(r#"{{"commands":[{{"command":"getClient","username":"{user}"}}]}}"#))
}

fn fresh() -> (tempfile::TempDir, PathBuf, std::sync::Arc<Dynsec>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dynamic-security.json");
    let (engine, report) = Dynsec::open_or_init(&file, Options::default(), "admin", || "pw".into()).unwrap();
    assert_eq!(report.created_admin.as_deref(), Some("admin"));
    (dir, file, engine)
}

fn journal(file: &Path) -> PathBuf {
    Store::journal_path_for(file)
}

#[test]
fn failed_persistence_refuses_the_change_and_recovers() {
    let (_dir, file, engine) = fresh();
    fs::create_dir(journal(&file)).unwrap();

    let reply = create(&engine, "alice");
    assert!(
        reply.contains(r#""command":"createClient","error":"Internal error: configuration could not be saved"#),
        "{reply}"
    );
    assert_eq!(get(&engine, "alice"), r#"{"responses":[{"command":"getClient","error":"Client not found"}]}"#);
    // Reads in the same batch still answer, and see the unchanged state.
    let reply = send(
        &engine,
        r#"{"commands":[{"command":"createClient","username":"bob"},{"command":"listClients"},{"command":"createClient","username":"admin"}]}"#,
    );
    assert!(reply.contains(r#"{"command":"listClients","data":{"totalCount":1,"clients":["admin"]}}"#), "{reply}");
    assert!(reply.contains(r#"{"command":"createClient","error":"Client already exists"}"#), "{reply}");

    fs::remove_dir(journal(&file)).unwrap();
    assert_eq!(create(&engine, "alice"), r#"{"responses":[{"command":"createClient"}]}"#);
    drop(engine);
    let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
    assert!(get(&reopened, "alice").contains(r#""username":"alice""#));
    assert_eq!(get(&reopened, "bob"), r#"{"responses":[{"command":"getClient","error":"Client not found"}]}"#);
}

#[test]
fn journal_replaced_under_a_running_engine_keeps_acknowledged_state() {
    let (_dir, file, engine) = fresh();
    assert_eq!(create(&engine, "a"), r#"{"responses":[{"command":"createClient"}]}"#);
    // Someone deletes the journal (holding "a") and puts a directory there.
    fs::remove_file(journal(&file)).unwrap();
    fs::create_dir(journal(&file)).unwrap();
    assert!(create(&engine, "b").contains("Internal error: configuration could not be saved"));
    // "a" was acknowledged: it was written into the snapshot before anything else happened.
    let snapshot = fs::read_to_string(&file).unwrap();
    assert!(snapshot.contains(r#""username":	"a""#), "{snapshot}");
    assert!(!snapshot.contains(r#""username":	"b""#));
    fs::remove_dir(journal(&file)).unwrap();
    assert_eq!(create(&engine, "c"), r#"{"responses":[{"command":"createClient"}]}"#);
    drop(engine);
    let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
    let users: Vec<String> = reopened.with_model(|m| m.clients.keys().cloned().collect());
    assert_eq!(users, ["a", "admin", "c"]);
}

#[test]
fn deleted_snapshot_is_rewritten_before_the_next_change() {
    let (_dir, file, engine) = fresh();
    create(&engine, "a");
    fs::remove_file(&file).unwrap();
    create(&engine, "b");
    drop(engine);
    let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
    let users: Vec<String> = reopened.with_model(|m| m.clients.keys().cloned().collect());
    assert_eq!(users, ["a", "admin", "b"]);
}

/// A crash in the middle of an append leaves a torn record at the end of the journal; whatever
/// the cut, loading yields exactly the acknowledged state.
#[test]
fn torn_journal_tails_load_to_the_acknowledged_state() {
    let (_dir, file, engine) = fresh();
    create(&engine, "a");
    let acknowledged = engine.with_model(Clone::clone);
    let before = fs::read(journal(&file)).unwrap();
    create(&engine, "b");
    let after = fs::read(journal(&file)).unwrap();
    let with_b = engine.with_model(Clone::clone);
    drop(engine);
    let snapshot = fs::read(&file).unwrap();
    assert!(after.len() > before.len());
    for cut in before.len()..=after.len() {
        fs::write(&file, &snapshot).unwrap();
        fs::write(journal(&file), &after[..cut]).unwrap();
        let loaded = Store::open(&file).unwrap();
        let expected = if cut == after.len() { &with_b } else { &acknowledged };
        assert_eq!(&loaded.model, expected, "journal cut at {cut}");
    }
}

#[test]
fn damaged_record_followed_by_more_records_is_an_error_not_a_silent_loss() {
    let (_dir, file, engine) = fresh();
    create(&engine, "a");
    create(&engine, "b");
    drop(engine);
    let mut bytes = fs::read(journal(&file)).unwrap();
    let first_record = bytes.iter().position(|&b| b == b'#').unwrap();
    bytes[first_record + 40] ^= 0x20;
    fs::write(journal(&file), bytes).unwrap();
    let err = Store::open(&file).err().expect("damaged journal must not load");
    assert!(err.to_string().contains("damaged journal record"), "{err}");
}

#[test]
fn flush_folds_the_journal_into_a_current_snapshot() {
    let (_dir, file, engine) = fresh();
    create(&engine, "a");
    assert!(!fs::read_to_string(&file).unwrap().contains("\"a\""));
    engine.flush().unwrap();
    let (model, _) = dynsec::file::load(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(model, engine.with_model(Clone::clone));
    assert_eq!(fs::read(journal(&file)).unwrap(), b"dynsec-journal v1\n");
}

/// A journal that outgrows the snapshot is folded into a new snapshot by the commit that made it
/// outgrow it (with only a read lock on the model while the snapshot is written): the journal
/// starts over, the snapshot holds every acknowledged client, and a restart loads them all.
#[test]
fn a_journal_that_outgrows_the_snapshot_is_folded_by_the_running_engine() {
    let (_dir, file, engine) = fresh();
    let mut created = 0;
    let mut folded = false;
    // Each batch appends ~200 KB; the first fold is due past 1 MiB.
    for _ in 0..30 {
        let batch: Vec<String> = (created..created + 2000)
            .map(|i| format!(r#"{{"command":"createClient","username":"device-{i:06}"}}"#))
            .collect();
        created += 2000;
        let reply = send(&engine, &format!(r#"{{"commands":[{}]}}"#, batch.join(",")));
        assert!(!reply.contains("error"), "{reply}");
        if fs::read(journal(&file)).unwrap() == b"dynsec-journal v1\n" {
            folded = true;
            break;
        }
    }
    assert!(folded, "the journal was never folded into the snapshot");
    let (snapshot, _) = dynsec::file::load(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(snapshot, engine.with_model(Clone::clone));
    assert!(snapshot.clients.contains_key(&format!("device-{:06}", created - 1)));
    drop(engine);
    let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
    assert_eq!(reopened.with_model(|m| m.clients.len()), created + 1);
}

#[test]
fn store_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, file, engine) = fresh();
    create(&engine, "a");
    engine.flush().unwrap();
    for path in [file.clone(), journal(&file)] {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

/// A symbolic link in the journal's place is never written or read through (issue 15, item 12):
/// the change is refused with an error naming the link and nothing is lost; the file it points
/// at is untouched; a start-up on such a journal fails with the same error.
#[test]
fn a_symlinked_journal_is_refused_not_followed() {
    use std::os::unix::fs::symlink;
    let (dir, file, engine) = fresh();
    let victim = dir.path().join("victim.conf");
    fs::write(&victim, "precious\n").unwrap();
    let _ = fs::remove_file(journal(&file));
    symlink(&victim, journal(&file)).unwrap();

    let reply = create(&engine, "alice");
    assert!(reply.contains("Internal error: configuration could not be saved ("), "{reply}");
    assert!(reply.contains("is a symbolic link; the journal is never opened through one"), "{reply}");
    assert_eq!(get(&engine, "alice"), r#"{"responses":[{"command":"getClient","error":"Client not found"}]}"#);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");

    // Once the link is gone, changes are saved again.
    fs::remove_file(journal(&file)).unwrap();
    assert_eq!(create(&engine, "bob"), r#"{"responses":[{"command":"createClient"}]}"#);
    drop(engine);

    // A link put there while the broker was down stops the next start instead of being read.
    let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
    assert!(get(&reopened, "bob").contains(r#""username":"bob""#));
    drop(reopened);
    fs::remove_file(journal(&file)).unwrap();
    symlink(&victim, journal(&file)).unwrap();
    let err = Dynsec::open(&file, Options::default()).err().expect("a symlinked journal must not load");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a symbolic link; the journal is never opened through one (remove the link)",
            journal(&file).display()
        )
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// A FIFO (or anything else that is not a regular file) in the journal's place is refused at
/// once, at the next change and at start-up, instead of blocking the open.
#[test]
fn a_journal_that_is_not_a_regular_file_is_refused() {
    let (_dir, file, engine) = fresh();
    let _ = fs::remove_file(journal(&file));
    let made = std::process::Command::new("mkfifo").arg(journal(&file)).status().unwrap();
    assert!(made.success());
    let reply = create(&engine, "alice");
    assert!(reply.contains("could not be saved") && reply.contains("not a regular file"), "{reply}");
    drop(engine);
    let err = Dynsec::open(&file, Options::default()).err().expect("a FIFO journal must not load");
    assert!(err.to_string().ends_with("journal: not a regular file"), "{err}");
}

/// A link swapped in for a journal the store already has open is replaced, not followed: the
/// store notices that the path no longer names its file and rewrites both files in place.
#[test]
fn a_journal_swapped_for_a_symlink_while_open_is_replaced_not_followed() {
    use std::os::unix::fs::symlink;
    let (dir, file, engine) = fresh();
    assert_eq!(create(&engine, "a"), r#"{"responses":[{"command":"createClient"}]}"#);
    let victim = dir.path().join("victim.conf");
    fs::write(&victim, "precious\n").unwrap();
    fs::remove_file(journal(&file)).unwrap();
    symlink(&victim, journal(&file)).unwrap();
    assert_eq!(create(&engine, "b"), r#"{"responses":[{"command":"createClient"}]}"#);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!fs::symlink_metadata(journal(&file)).unwrap().file_type().is_symlink());
    drop(engine);
    let (reopened, _) = Dynsec::open(&file, Options::default()).unwrap();
    let users: Vec<String> = reopened.with_model(|m| m.clients.keys().cloned().collect());
    assert_eq!(users, ["a", "admin", "b"]);
}

#[test]
fn external_edit_is_merged_with_acknowledged_changes() {
    let (_dir, file, engine) = fresh();
    create(&engine, "journal-only");
    // Another program edits the (stale) snapshot: adds a client and disables the admin.
    let text = fs::read_to_string(&file).unwrap();
    let text = text.replacen("\"clients\":\t[{", "\"clients\":\t[{\"username\": \"edited\"}, {\"disabled\": true, ", 1);
    fs::write(&file, text).unwrap();
    let kicks = engine.reload_external().unwrap().expect("an external change");
    assert!(kicks.users.contains("admin") && kicks.users.contains("edited"), "{kicks:?}");
    let users: Vec<String> = engine.with_model(|m| m.clients.keys().cloned().collect());
    assert_eq!(users, ["admin", "edited", "journal-only"]);
    assert!(engine.with_model(|m| m.clients["admin"].disabled));
    // Our own rewrite is recognised and not reloaded again.
    assert!(engine.reload_external().unwrap().is_none());
    // An invalid edit changes nothing.
    fs::write(&file, "{ not json").unwrap();
    assert!(engine.reload_external().is_err());
    assert_eq!(engine.with_model(|m| m.clients.len()), 3);
}

// --- replay idempotency --------------------------------------------------------------------------

const NAMES: [&str; 3] = ["x", "y", "z"];

/// Interprets random numbers as a mutation that is valid against `model` — the only kind the
/// command processor produces (references name existing entities).
fn valid_mutation(model: &Model, op: u8, a: usize, b: usize, p: i8) -> Mutation {
    let existing_roles: Vec<&String> = model.roles.keys().collect();
    let mut refs = Vec::new();
    if let Some(r) = existing_roles.get(b % existing_roles.len().max(1)) {
        insert_membership(&mut refs, Membership { name: (*r).clone(), priority: p.into() });
    }
    let (a, b) = (NAMES[a % 3].to_owned(), NAMES[b % 3].to_owned());
    match op % 9 {
        0 => Mutation::PutClient(Client { roles: refs, disabled: p > 0, ..Client::new(&a) }),
        1 => Mutation::DeleteClient(a),
        2 => Mutation::PutGroup(Group { roles: refs, ..Group::new(&a) }),
        3 => Mutation::DeleteGroup(a),
        4 => {
            let mut role = Role::new(&a);
            role.insert_acl(AclType::PublishClientSend, Acl { topic: b, priority: p.into(), allow: p > 0 });
            Mutation::PutRole(role)
        }
        5 => Mutation::DeleteRole(a),
        6 if model.groups.contains_key(&a) && model.clients.contains_key(&b) => {
            Mutation::SetMembership { group: a, username: b, priority: (p >= 0).then_some(p.into()) }
        }
        7 if model.groups.contains_key(&a) => Mutation::SetAnonymousGroup(Some(a)),
        _ => Mutation::SetAnonymousGroup(None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Replaying a journal over a snapshot that already contains it (a crash between the snapshot
    /// rename and the journal reset) yields the same state.
    #[test]
    fn journal_replay_is_idempotent(ops in prop::collection::vec((any::<u8>(), 0usize..3, 0usize..3, -2i8..3), 1..40),
                                     split in 0usize..40) {
        let mut model = Model::default();
        let mut journal = Vec::new();
        for (i, (op, a, b, p)) in ops.iter().enumerate() {
            let m = valid_mutation(&model, *op, *a, *b, *p);
            model.apply(m.clone());
            if i >= split.min(ops.len()) {
                journal.push(m);
            }
        }
        let mut replayed = model.clone();
        for m in journal {
            replayed.apply(m);
        }
        prop_assert_eq!(&replayed, &model);
        prop_assert!(model.check_invariants().is_ok());
    }
}
