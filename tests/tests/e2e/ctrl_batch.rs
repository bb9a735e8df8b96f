//! `dynsec-ctrl dynsec batch` provisions clients on a real mosquitto, several commands per
//! `$CONTROL` message, and reports failures by line with a non-zero exit status.

use std::path::Path;
use std::process::Command;

use dynsec_tests::ctrl_harness::{Outcome, run_program};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_ctrl_init};

const CLIENTS: usize = 200;

fn dynsec_ctrl(broker: &Mosquitto, args: &[&str], stdin: Option<&str>, dir: &Path) -> Outcome {
    let mut full: Vec<String> =
        ["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-u", "admin", "-P", "admin-pw", "dynsec"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    full.extend(args.iter().map(|s| s.to_string()));
    run_program(Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test")), &full, stdin, dir)
}

fn list_clients(broker: &Mosquitto) -> Vec<String> {
    let output = Command::new("mosquitto_ctrl")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-u", "admin", "-P", "admin-pw"])
        .args(["dynsec", "listClients"])
        .output()
        .expect("run mosquitto_ctrl");
    String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect()
}

fn can_connect(broker: &Mosquitto, username: &str, password: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-u", username, "-P", password])
        .args(["-t", "test/topic", "-m", "hello"])
        .output()
        .expect("run mosquitto_pub")
        .status
        .success()
}

fn start_broker(dir: &Path) -> Mosquitto {
    let config = dir.join("dynamic-security.json");
    mosquitto_ctrl_init(&config, "admin", "admin-pw");
    Mosquitto::with_dynsec(dir, &config)
}

#[test]
fn provisions_clients_and_reports_failed_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = start_broker(dir.path());

    let mut script = String::from("# provisioning test\ncreateRole device\n");
    script.push_str("addRoleACL device publishClientSend \"devices/+/telemetry\" allow 5\n");
    for i in 0..CLIENTS {
        if i % 2 == 0 {
            script.push_str(&format!("createClient device{i:03} -p secret{i:03}\n"));
        } else {
            script.push_str(&format!(
                "{{\"command\":\"createClient\",\"username\":\"device{i:03}\",\"password\":\"secret{i:03}\",\"roles\":[{{\"rolename\":\"device\"}}]}}\n"
            ));
        }
    }
    script.push_str("createClient device007 -p again\n"); // line 204: duplicate
    script.push_str("addClientRole device010 nosuchrole\n"); // line 205: unknown role
    script.push_str("dynsec addClientRole device010 device 3\n"); // line 206
    script.push_str("getClient device010\n"); // line 207: printed
    let file = dir.path().join("provision.txt");
    std::fs::write(&file, &script).unwrap();

    let outcome = dynsec_ctrl(&broker, &["batch", "--batch-size", "50", file.to_str().unwrap()], None, dir.path());
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert_eq!(outcome.status, Some(1), "{stderr}");
    assert!(stderr.contains("line 204: createClient: Error: Client already exists\n"), "{stderr}");
    assert!(stderr.contains("line 205: addClientRole: Error: Role not found\n"), "{stderr}");
    let total = CLIENTS + 6;
    assert!(stderr.ends_with(&format!("batch: {total} commands, {} succeeded, 2 failed.\n", total - 2)), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        "Username: device010\nClientid:\nRoles:    device (priority: 3)\n"
    );

    let clients = list_clients(&broker);
    assert_eq!(clients.len(), CLIENTS + 1, "{clients:?}");
    assert!(clients.iter().any(|c| c == "device199"));
    assert!(can_connect(&broker, "device000", "secret000"));
    assert!(can_connect(&broker, "device199", "secret199"));
    assert!(can_connect(&broker, "device007", "secret007"), "the duplicate line did not change the password");
    assert!(!can_connect(&broker, "device007", "again"));
}

#[test]
fn reads_standard_input_and_succeeds_when_every_command_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = start_broker(dir.path());
    let script = "createGroup g\ncreateClient solo -p pw\naddGroupClient g solo\nlistClients\n";
    let outcome = dynsec_ctrl(&broker, &["batch", "-"], Some(script), dir.path());
    assert_eq!(outcome.status, Some(0), "{}", String::from_utf8_lossy(&outcome.stderr));
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "admin\nsolo\n");
    assert!(String::from_utf8_lossy(&outcome.stderr).ends_with("batch: 4 commands, 4 succeeded, 0 failed.\n"));
}

#[test]
fn an_invalid_line_stops_the_batch_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = start_broker(dir.path());
    let script = "createClient first -p pw\naddRoleACL r bogusType t allow\nfrobnicate\n";
    let outcome = dynsec_ctrl(&broker, &["batch", "-"], Some(script), dir.path());
    assert_eq!(outcome.status, Some(1));
    assert_eq!(
        String::from_utf8_lossy(&outcome.stderr),
        "batch: line 2: Error: Invalid function arguments provided.\nbatch: line 3: Command 'frobnicate' not recognised.\nbatch: 2 invalid line(s); nothing was sent.\n"
    );
    assert_eq!(list_clients(&broker), vec!["admin".to_string()]);
}
