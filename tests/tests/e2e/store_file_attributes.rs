//! The store's files keep the owner, group and mode they were given (issue 23: after a change,
//! dynamic-security.json became root:root 0600, and mosquitto running as `mosquitto` then started
//! with nobody able to log in). Run as root, the test hands the file to another uid/gid with mode
//! 0640, makes a change through dynsec-ctrl, checks the rewritten file, and has mosquitto 2.0.11
//! load it and accept the new client.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::ctrl_harness::run_program;
use dynsec_tests::mosquitto::Mosquitto;
use dynsec_tests::twin::{Client, Connect};

const ADMIN_PASSWORD: &str = "attributes-admin";
/// Ids nobody on a test machine uses, so that only a real chown can produce them.
const OWNER: u32 = 4242;
const GROUP: u32 = 4343;

fn running_as_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).expect("/proc/self")
}

/// Waits (bounded) until the snapshot holds `text`: the broker has folded the change into it.
fn wait_for_snapshot(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if fs::read_to_string(path).is_ok_and(|content| content.contains(text)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never received {text}", path.display());
}

#[test]
fn owner_group_and_mode_survive_a_change_and_mosquitto_still_loads_the_file() {
    assert!(running_as_root(), "this test chowns files to another uid: run it as root (scripts/test.sh does)");
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    let config = "listener 0 127.0.0.1\nallow_anonymous false\n\
                  plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
                  plugin_opt_config_file dynamic-security.json\nplugin_opt_snapshot_idle_ms 50\n";
    let broker = BrokerProcess::start_in(
        Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")),
        dir,
        config,
        &[("DYNSEC_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    let file = dir.join("dynamic-security.json");
    std::os::unix::fs::chown(&file, Some(OWNER), Some(GROUP)).expect("chown");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");

    let args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &broker.addr().port().to_string(),
        "-u",
        "admin",
        "-P",
        ADMIN_PASSWORD,
        "dynsec",
        "createClient",
        "kept-attributes",
        "-p",
        "kept-pw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let created = run_program(Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test")), &args, None, dir);
    assert_eq!(created.status, Some(0), "{}", String::from_utf8_lossy(&created.stderr));
    wait_for_snapshot(&file, "kept-attributes");
    let (status, log) = broker.terminate();
    assert_eq!(status, Some(0), "{log}");

    let meta = fs::metadata(&file).expect("the snapshot");
    assert_eq!((meta.uid(), meta.gid()), (OWNER, GROUP), "owner and group of the rewritten file\n{log}");
    assert_eq!(meta.mode() & 0o7777, 0o640, "mode of the rewritten file");

    // mosquitto 2.0.11 (`user root`, added by the helper) loads the rewritten file.
    let mosquitto = Mosquitto::with_dynsec(dir, &file);
    let mut client = Client::new(mosquitto.port());
    client.username = Some("kept-attributes".into());
    client.password = Some("kept-pw".into());
    assert_eq!(client.publish("attributes/x", "hello"), Connect::Connack(0), "{}", mosquitto.log());
}
