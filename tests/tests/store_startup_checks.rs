//! Start-up checks of the dynamic-security store's files (issue 23, "Files"): a directory the
//! broker's user cannot write, a file it cannot read and an empty file each stop the broker at
//! start-up with an error that names the path, the account and what is missing, instead of a
//! broker that fails on the first change or that nobody can log in to. Tests run as root, which
//! may write anywhere: the broker is made to run as `nobody` with `user nobody`, as a packaged
//! mosquitto runs as `mosquitto`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::ctrl_harness::run_program;
use dynsec_tests::mosquitto::{dynsec_plugin, mosquitto_ctrl_init};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn require_root() {
    let uid = fs::metadata("/proc/self").expect("/proc/self").uid();
    assert_eq!(uid, 0, "these tests switch the broker to user nobody: run them as root (scripts/test.sh does)");
}

/// A broker configuration on `store`, running as `user` when given.
fn config(store: &Path, user: Option<&str>) -> String {
    let mut text = format!(
        "listener 0 127.0.0.1\nallow_anonymous false\nplugin {}\nplugin_opt_config_file {}\n",
        dynsec_plugin().display(),
        store.display()
    );
    if let Some(user) = user {
        text.push_str(&format!("user {user}\n"));
    }
    text
}

/// A directory for the store, owned by root with `mode`, holding a store made by mosquitto_ctrl
/// with `file_mode`.
fn store_dir(mode: u32, file_mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("dynamic-security.json");
    mosquitto_ctrl_init(&store, "admin", "admin-password");
    fs::set_permissions(&store, fs::Permissions::from_mode(file_mode)).expect("chmod file");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).expect("chmod dir");
    (dir, store)
}

#[test]
fn a_directory_the_broker_user_cannot_write_stops_start_up() {
    require_root();
    // nobody may read the file and enter the directory, but not create files in it.
    let (dir, store) = store_dir(0o755, 0o644);
    let run = tempfile::tempdir().expect("run dir");
    let (status, log) = BrokerProcess::start_failure_in(binary(), run.path(), &config(&store, Some("nobody")));
    assert_eq!(status, Some(1), "the broker must refuse to start:\n{log}");
    let dir_text = dir.path().display().to_string();
    for expected in ["user 'nobody'", "cannot create files in the directory", dir_text.as_str(), "journal"] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
    assert_eq!(log.matches("cannot create files in the directory").count(), 1, "printed once:\n{log}");

    // The same files with the directory given to nobody: the broker starts.
    std::os::unix::fs::chown(dir.path(), Some(65534), None).expect("chown dir");
    let broker = BrokerProcess::start_in(binary(), run.path(), &config(&store, Some("nobody")), &[]);
    assert!(broker.log().contains("Running as user 'nobody'."), "{}", broker.log());
}

#[test]
fn a_file_the_broker_user_cannot_read_stops_start_up() {
    require_root();
    let (_dir, store) = store_dir(0o777, 0o600);
    let run = tempfile::tempdir().expect("run dir");
    let (status, log) = BrokerProcess::start_failure_in(binary(), run.path(), &config(&store, Some("nobody")));
    assert_eq!(status, Some(1), "the broker must refuse to start:\n{log}");
    let file_text = store.display().to_string();
    for expected in ["user 'nobody'", "cannot read", file_text.as_str(), "Permission denied"] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
}

/// mosquitto 2.0.11 and 2.1.2 start on an empty file with no clients, so every login is refused
/// (docs/known-differences.md); we refuse to start and say why.
#[test]
fn an_empty_file_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("dynamic-security.json");
    fs::write(&store, "").expect("empty file");
    let (status, log) = BrokerProcess::start_failure_in(binary(), dir.path(), &config(&store, None));
    assert_eq!(status, Some(1), "the broker must refuse to start:\n{log}");
    assert_eq!(log.matches("the file is empty (0 bytes)").count(), 1, "the error is printed once:\n{log}");
    assert!(log.contains(&store.display().to_string()), "{log}");
    assert_eq!(fs::metadata(&store).unwrap().len(), 0, "the file is left as it was");
}

/// Shutdown says "configuration saved" only when it saved: with the directory made read-only
/// after a change (the change is in the journal, the snapshot cannot be rewritten), the log says
/// what failed instead.
#[test]
fn shutdown_reports_a_failed_save() {
    require_root();
    let (dir, store) = store_dir(0o755, 0o600);
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).expect("chown dir");
    std::os::unix::fs::chown(&store, Some(65534), Some(65534)).expect("chown file");
    let run = tempfile::tempdir().expect("run dir");
    // No idle compaction before the shutdown: the change stays in the journal until then.
    let config = config(&store, Some("nobody")) + "plugin_opt_snapshot_idle_ms 3600000\n";
    let broker = BrokerProcess::start_in(binary(), run.path(), &config, &[]);
    let port = broker.port().to_string();
    let args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "admin",
        "-P",
        "admin-password",
        "dynsec",
        "createClient",
        "later",
        "-p",
        "later-pw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ctrl = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let created = run_program(ctrl, &args, None, run.path());
    assert_eq!(created.status, Some(0), "{}", String::from_utf8_lossy(&created.stderr));
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).expect("chmod dir");
    let (status, log) = broker.terminate();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir back");
    assert_eq!(status, Some(0), "{log}");
    assert!(!log.contains("configuration saved"), "a failed save was reported as done:\n{log}");
    assert!(log.contains("not saved at shutdown") && log.contains("Permission denied"), "{log}");
}
