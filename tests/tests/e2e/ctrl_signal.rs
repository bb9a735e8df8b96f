//! `dynsec-ctrl signal` (mosquitto_signal's job) against the real `dynsec-broker`, found by its
//! pid file or its process id: `log-rotate` makes it reopen its log file, `config-reload` makes it
//! reload, `shutdown` stops it cleanly; bad arguments and mosquitto_signal's debug signals are
//! refused without touching the broker.

use std::path::Path;
use std::process::Command;

use dynsec_tests::broker::BrokerProcess;

fn signal(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test")).arg("signal").args(args).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Waits, bounded, until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("never happened: {what}");
}

#[test]
fn signals_reach_the_broker_by_pid_file_and_by_pid() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("broker.pid");
    let log_file = dir.path().join("main.log");
    let config = format!(
        "listener 0 127.0.0.1\nlog_type all\nallow_anonymous true\nlog_dest stderr\nlog_dest file {}\npid_file {}\n",
        log_file.display(),
        pid_file.display()
    );
    let broker =
        BrokerProcess::start_in(Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), dir.path(), &config, &[]);
    let pid = broker.pid().to_string();
    let pid_file_text = pid_file.display().to_string();

    // Refused before anything is sent: the broker keeps running, nothing is logged.
    for (args, error) in [
        (&["-p", "0", "shutdown"][..], "Error: Process ID must be >0.\n"),
        (&["-p", &pid], "Error: No signal given.\n"),
        (&["-p", &pid, "reboot"], "Error: Unknown signal 'reboot'.\n"),
        (&["-p", &pid, "tree-print"], "Error: Signal 'tree-print' is not supported by dynsec-broker.\n"),
        (&["shutdown"], "Error: One of -p or --pid-file must be used.\n"),
        (&["-a", "shutdown"], "Error: -a is not supported: use -p <pid> or --pid-file <file>.\n"),
    ] {
        assert_eq!(signal(args), (Some(1), error.to_owned()), "{args:?}");
    }
    let missing = dir.path().join("missing.pid");
    let (status, stderr) = signal(&["--pid-file", &missing.display().to_string(), "shutdown"]);
    assert_eq!(status, Some(1));
    assert!(stderr.starts_with(&format!("Error: {}: ", missing.display())), "{stderr}");
    assert!(!broker.log().contains("SIGHUP"), "{}", broker.log());

    // log-rotate: the log file moved away is replaced by a new one.
    std::fs::rename(&log_file, dir.path().join("main.log.1")).unwrap();
    assert_eq!(signal(&["--pid-file", &pid_file_text, "log-rotate"]), (Some(0), String::new()));
    eventually("a new log file with the reload", || {
        std::fs::read_to_string(&log_file).is_ok_and(|text| text.contains("SIGHUP reload complete"))
    });

    // config-reload by process id.
    assert_eq!(signal(&["-p", &pid, "config-reload"]), (Some(0), String::new()));
    eventually("a second reload", || broker.log().matches("SIGHUP reload complete").count() == 2);

    // shutdown: a clean exit, the pid file removed.
    assert_eq!(signal(&["--pid-file", &pid_file_text, "shutdown"]), (Some(0), String::new()));
    let (status, log) = broker.wait_for_exit();
    assert_eq!(status, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!pid_file.exists(), "the broker removes its pid file at a clean exit");
}
