//! `dynsec-ctrl passwd` against the real `mosquitto_passwd` and broker: the same messages and
//! exit statuses for argument and file errors, files that mosquitto accepts, and files written by
//! mosquitto_passwd updated correctly (and vice versa).

use std::path::Path;
use std::process::Command;

use dynsec_tests::ctrl_harness::{Outcome, run_program};
use dynsec_tests::mosquitto::Mosquitto;

fn ours(args: &[&str], stdin: Option<&str>, dir: &Path) -> Outcome {
    let mut full = vec!["passwd".to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    run_program(Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test")), &full, stdin, dir)
}

fn theirs(args: &[&str], stdin: Option<&str>, dir: &Path) -> Outcome {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_program(Path::new("mosquitto_passwd"), &args, stdin, dir)
}

fn show(outcome: &Outcome) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        outcome.status,
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr)
    )
}

/// Can `username`/`password` connect to the broker? (mosquitto_pub exits 0 only after CONNACK 0.)
fn can_connect(broker: &Mosquitto, username: &str, password: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-u", username, "-P", password])
        .args(["-t", "test/topic", "-m", "hello"])
        .output()
        .expect("run mosquitto_pub (install mosquitto-clients; scripts/test.sh does)")
        .status
        .success()
}

#[test]
fn errors_and_exit_statuses_match_mosquitto_passwd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let existing = d.join("existing");
    std::fs::write(&existing, "someone:$7$101$AAAAAAAAAAAAAAAA$AAAA\n").unwrap();
    let existing = existing.to_str().unwrap();
    let missing = d.join("missing");
    let missing = missing.to_str().unwrap();
    let in_missing_dir = d.join("no/such/dir/file");
    let in_missing_dir = in_missing_dir.to_str().unwrap();

    // (arguments, stdin, compare stdout too)
    let cases: Vec<(Vec<&str>, Option<&str>, bool)> = vec![
        (vec!["-H"], None, true),
        (vec!["-H", "md5", "f", "u"], None, true),
        (vec!["-I"], None, true),
        (vec!["-I", "0", "f", "u"], None, true),
        (vec!["-I", "-5", "f", "u"], None, true),
        (vec!["-c", "-D", "f", "u"], None, true),
        (vec!["-c", "-U", "f"], None, true),
        (vec!["-D", "-U", "f"], None, true),
        (vec!["-b", "-D", "f", "u"], None, true),
        (vec!["-c", "f"], None, true),
        (vec!["-c", "-b", "f", "u"], None, true),
        (vec!["-D", "f"], None, true),
        (vec!["-U"], None, true),
        (vec!["-U", "f", "extra"], None, true),
        (vec!["-b", missing, "u:x", "pw"], None, true),
        (vec!["-b", missing, "u\u{1}x", "pw"], None, true),
        (vec!["-b", missing, "user", "pw"], None, true),
        (vec!["-D", missing, "user"], None, true),
        (vec![missing, "user"], None, true),
        (vec!["-U", missing], None, true),
        (vec!["-D", existing, "nobody"], None, true),
        (vec!["-c", "-b", in_missing_dir, "user", "pw"], None, true),
        (vec!["-c", in_missing_dir, "user"], Some("pw\npw\n"), true),
        (vec!["-c", missing, "user"], Some("one\ntwo\n"), true),
        (vec!["-c", missing, "user"], Some("\n"), true),
        (vec!["-c", missing, "user"], None, true),
        (vec![existing, "user"], Some("one\ntwo\n"), true),
        // Usage text is our own wording: only the exit status is compared.
        (vec![], None, false),
        (vec!["-b", "f", "u"], None, false),
        (vec!["f"], None, false),
        (vec!["a", "b", "c"], None, false),
    ];
    let mut problems = Vec::new();
    for (args, stdin, compare_stdout) in &cases {
        let want = theirs(args, *stdin, d);
        let got = ours(args, *stdin, d);
        let same =
            want.status == got.status && want.stderr == got.stderr && (!compare_stdout || want.stdout == got.stdout);
        if !same {
            problems.push(format!("{args:?}\n  mosquitto_passwd: {}\n  dynsec-ctrl:      {}", show(&want), show(&got)));
        }
    }
    assert!(!Path::new(missing).exists(), "no failed case may create the file");
    assert!(problems.is_empty(), "{} difference(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn files_written_by_dynsec_ctrl_are_accepted_by_mosquitto() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    let f = file.to_str().unwrap();
    let created = ours(&["-c", "-b", f, "alice", "alice-pw"], None, dir.path());
    assert_eq!(created.status, Some(0), "{}", show(&created));
    assert_eq!(ours(&["-b", "-H", "sha512", f, "bob", "bob-pw"], None, dir.path()).status, Some(0));
    assert_eq!(ours(&["-b", "-I", "5", f, "carol", "carol-pw"], None, dir.path()).status, Some(0));
    let prompted = ours(&[f, "dave"], Some("dave-pw\ndave-pw\n"), dir.path());
    assert_eq!(String::from_utf8_lossy(&prompted.stdout), "Password: \nReenter password: \n");
    assert_eq!(prompted.status, Some(0));

    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("alice:$7$1000$"));
    assert!(lines[1].starts_with("bob:$6$"));
    assert!(lines[2].starts_with("carol:$7$5$"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let broker = Mosquitto::with_password_file(dir.path(), &file);
    for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw"), ("dave", "dave-pw")] {
        assert!(can_connect(&broker, user, password), "{user} refused; broker log:\n{}", broker.log());
        assert!(!can_connect(&broker, user, "wrong"), "{user} accepted with a wrong password");
    }
}

#[test]
fn files_written_by_mosquitto_passwd_are_updated_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    let f = file.to_str().unwrap();
    for (args, user) in [(vec!["-c", "-b"], "alice"), (vec!["-b"], "bob"), (vec!["-b", "-H", "sha512"], "carol")] {
        let mut full = args.clone();
        full.extend([f, user, "first-pw"]);
        assert_eq!(theirs(&full, None, dir.path()).status, Some(0));
    }
    let original: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();

    assert_eq!(ours(&["-b", f, "bob", "second-pw"], None, dir.path()).status, Some(0));
    assert_eq!(ours(&["-b", f, "dave", "dave-pw"], None, dir.path()).status, Some(0));
    assert_eq!(ours(&["-D", f, "carol"], None, dir.path()).status, Some(0));
    let updated: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    assert_eq!(updated.len(), 3, "{updated:?}");
    assert_eq!(updated[0], original[0], "alice untouched");
    assert!(updated[1].starts_with("bob:$7$") && updated[1] != original[1], "bob changed in place");
    assert!(updated[2].starts_with("dave:$7$"), "dave appended");

    // And the real tool can go on editing our output.
    assert_eq!(theirs(&["-b", f, "erin", "erin-pw"], None, dir.path()).status, Some(0));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 4);

    let broker = Mosquitto::with_password_file(dir.path(), &file);
    assert!(can_connect(&broker, "alice", "first-pw"));
    assert!(can_connect(&broker, "bob", "second-pw"));
    assert!(!can_connect(&broker, "bob", "first-pw"));
    assert!(!can_connect(&broker, "carol", "first-pw"), "carol was deleted");
    assert!(can_connect(&broker, "dave", "dave-pw"));
    assert!(can_connect(&broker, "erin", "erin-pw"));
}

#[test]
fn plain_text_files_are_hashed_once_and_comments_survive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    let f = file.to_str().unwrap();
    std::fs::write(&file, "# managed by hand\nuser1:plain-one\n\nuser2:plain-two\n").unwrap();
    assert_eq!(ours(&["-U", f], None, dir.path()).status, Some(0));
    let once = std::fs::read_to_string(&file).unwrap();
    assert!(once.starts_with("# managed by hand\nuser1:$7$"), "{once}");
    // A second -U changes nothing: hashes are not hashed again (mosquitto_passwd would).
    assert_eq!(ours(&["-U", f], None, dir.path()).status, Some(0));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), once);

    let broker = Mosquitto::with_password_file(dir.path(), &file);
    assert!(can_connect(&broker, "user1", "plain-one"), "{}", broker.log());
    assert!(can_connect(&broker, "user2", "plain-two"));
}

#[test]
fn a_corrupt_line_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    let f = file.to_str().unwrap();
    let content = "alice:$7$101$AAAAAAAAAAAAAAAA$AAAA\ngarbage without colon\nbob:$7$101$AAAAAAAAAAAAAAAA$AAAA\n";
    std::fs::write(&file, content).unwrap();
    let outcome = ours(&["-b", f, "carol", "pw"], None, dir.path());
    assert_eq!(String::from_utf8_lossy(&outcome.stderr), "Error: Corrupt password file at line 2.\n");
    assert_eq!(outcome.status, Some(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
}

/// The broker's hash cost limits (docs/store.md, "Limits"): `-I` beyond them is refused with a
/// clear message instead of writing a hash the broker would not load, and `-U` recognises a hash
/// beyond them as a hash (it is not re-hashed as if it were a password).
#[test]
fn iterations_beyond_the_broker_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    let f = file.to_str().unwrap();
    let refused = ours(&["-c", "-b", "-I", "2000001", f, "u", "pw"], None, dir.path());
    assert_eq!(refused.status, Some(1), "{}", show(&refused));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "Error: Number of iterations must be at most 2000000 (the most dynsec-broker loads).\n"
    );
    assert!(!file.exists());

    let costly = "slow:$7$4294967295$AAAAAAAAAAAAAAAA$AAAA\nplain:secret\n";
    std::fs::write(&file, costly).unwrap();
    assert_eq!(ours(&["-U", f], None, dir.path()).status, Some(0));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("slow:$7$4294967295$AAAAAAAAAAAAAAAA$AAAA\nplain:$7$1000$"), "{text}");
}

/// Issue 23: a password file prepared for the broker's account (another owner and group, mode
/// 0640) keeps owner, group and mode when `passwd` rewrites it (-b, -D and -U), and no temporary
/// file is left beside it. Run as root, so that the file can be given to ids nobody uses.
#[test]
fn rewrites_keep_owner_group_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const OWNER: u32 = 4242;
    const GROUP: u32 = 4343;
    assert_eq!(
        std::fs::metadata("/proc/self").expect("/proc/self").uid(),
        0,
        "this test chowns a file to another uid: run it as root (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwords");
    let f = file.to_str().unwrap();
    assert_eq!(theirs(&["-c", "-b", f, "alice", "alice-pw"], None, dir.path()).status, Some(0));
    std::fs::write(dir.path().join("plain"), "carol:carol-pw\n").unwrap();
    let plain = dir.path().join("plain");
    for path in [&file, &plain] {
        std::os::unix::fs::chown(path, Some(OWNER), Some(GROUP)).expect("chown");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let steps: [&[&str]; 3] = [&["-b", f, "bob", "bob-pw"], &["-D", f, "alice"], &["-U", plain.to_str().unwrap()]];
    for args in steps {
        let outcome = ours(args, None, dir.path());
        assert_eq!(outcome.status, Some(0), "{args:?}: {}", show(&outcome));
    }
    for path in [&file, &plain] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (OWNER, GROUP, 0o640),
            "{} lost its owner, group or mode",
            path.display()
        );
    }
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "a temporary file was left behind: {names:?}");
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("bob:$7$"));
}
