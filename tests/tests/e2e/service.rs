//! Running dynsec-broker as a service, as mosquitto runs under Debian's mosquitto.service:
//! `--version`, `pid_file`, `user`, the sd_notify readiness protocol (`Type=notify`) and SIGHUP
//! reopening `log_dest file` for logrotate. The `user` refusal is compared with mosquitto 2.0.11.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dynsec_tests::broker::{BrokerProcess, ScratchDir};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

const ANONYMOUS: &str = "listener 0 127.0.0.1\nallow_anonymous true\nlog_type all\n";

/// Waits (bounded) until `check` holds, polling every 20 ms for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never happened: {what}");
}

#[test]
fn version_and_help_name_the_version() {
    let output = Command::new(binary()).arg("--version").output().expect("run --version");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.trim(), format!("dynsec-broker version {}", env!("CARGO_PKG_VERSION")));
    let help = Command::new(binary()).arg("-h").output().expect("run -h");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.starts_with("dynsec-broker version"), "{help}");
    assert!(help.contains("--version"), "{help}");
}

#[test]
fn pid_file_holds_the_pid_until_exit() {
    let dir = ScratchDir::new("pid-file");
    let pid_path = dir.path().join("run/broker.pid");
    fs::create_dir_all(pid_path.parent().unwrap()).unwrap();
    let config = format!("{ANONYMOUS}pid_file {}\n", pid_path.display());
    let broker = BrokerProcess::start_in(binary(), dir.path(), &config, &[]);
    let written = fs::read_to_string(&pid_path).expect("the pid file is written at start");
    assert_eq!(written.trim(), broker.pid().to_string());
    let (status, log) = broker.terminate();
    assert_eq!(status, Some(0), "{log}");
    assert!(!pid_path.exists(), "the pid file is removed at exit");
}

#[test]
fn unwritable_pid_file_stops_start_up() {
    let (code, log) =
        BrokerProcess::expect_start_failure(binary(), &format!("{ANONYMOUS}pid_file /nonexistent-dir/broker.pid\n"));
    assert_ne!(code, 0);
    assert!(log.contains("Unable to write pid file /nonexistent-dir/broker.pid"), "{log}");
}

#[test]
fn notify_socket_gets_ready_then_stopping() {
    let dir = ScratchDir::new("sd-notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let broker =
        BrokerProcess::start_in(binary(), dir.path(), ANONYMOUS, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buffer = [0u8; 256];
    let n = socket.recv(&mut buffer).expect("READY=1 arrives");
    assert_eq!(String::from_utf8_lossy(&buffer[..n]).trim(), "READY=1");
    // READY comes only once the listener serves: a client connects right away.
    std::net::TcpStream::connect(broker.addr()).expect("the broker serves once ready");
    let (status, log) = broker.terminate();
    assert_eq!(status, Some(0), "{log}");
    let n = socket.recv(&mut buffer).expect("STOPPING=1 arrives");
    assert_eq!(String::from_utf8_lossy(&buffer[..n]).trim(), "STOPPING=1");
}

#[test]
fn user_directive_drops_root() {
    let dir = ScratchDir::new("user");
    let broker = BrokerProcess::start_in(binary(), dir.path(), &format!("{ANONYMOUS}user nobody\n"), &[]);
    let status = fs::read_to_string(format!("/proc/{}/status", broker.pid())).expect("read the broker's status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line").to_owned();
    let started_as_root = started_as_root();
    if started_as_root {
        let nobody = id_of("nobody");
        // Real, effective, saved and filesystem uid are all nobody's.
        let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
        assert_eq!(uids, [nobody.as_str(); 4], "{uid_line}");
        assert!(broker.log().contains("Running as user 'nobody'."), "{}", broker.log());
    } else {
        // As mosquitto: a non-root start keeps its account.
        assert!(!broker.log().contains("Running as user"), "{}", broker.log());
    }
    let (status, log) = broker.terminate();
    assert_eq!(status, Some(0), "{log}");
}

#[test]
fn unknown_user_is_refused_as_mosquitto_refuses_it() {
    if !started_as_root() {
        return; // Both brokers ignore `user` unless started as root.
    }
    let config = format!("{ANONYMOUS}user no-such-user-dynsec\n");
    let (code, log) = BrokerProcess::expect_start_failure(binary(), &config);
    let message = "Unable to drop privileges to 'no-such-user-dynsec' because this user does not exist.";
    assert_ne!(code, 0);
    assert!(log.contains(message), "{log}");
    let dir = ScratchDir::new("user-oracle");
    let config_path = dir.path().join("mosquitto.conf");
    fs::write(&config_path, "listener 0 127.0.0.1\nuser no-such-user-dynsec\n").unwrap();
    let oracle = Command::new("mosquitto").arg("-c").arg(&config_path).output().expect("run mosquitto 2.0.11");
    assert!(!oracle.status.success());
    let oracle_log = String::from_utf8_lossy(&oracle.stdout).into_owned() + &String::from_utf8_lossy(&oracle.stderr);
    assert!(oracle_log.contains(message), "mosquitto said: {oracle_log}");
}

#[test]
fn sighup_reopens_a_rotated_log_file() {
    let dir = ScratchDir::new("log-rotate");
    let log_file = dir.path().join("mosquitto.log");
    let config = format!("{ANONYMOUS}log_dest stderr\nlog_dest file {}\n", log_file.display());
    let broker = BrokerProcess::start_in(binary(), dir.path(), &config, &[]);
    eventually("the log file has the start-up lines", || {
        fs::read_to_string(&log_file).is_ok_and(|text| text.contains("dynsec-broker running"))
    });
    // What logrotate does: move the file away, then signal.
    let rotated = dir.path().join("mosquitto.log.1");
    fs::rename(&log_file, &rotated).unwrap();
    let hup = Command::new("kill").arg("-HUP").arg(broker.pid().to_string()).status().unwrap();
    assert!(hup.success());
    eventually("a new log file gets the lines after SIGHUP", || {
        fs::read_to_string(&log_file).is_ok_and(|text| text.contains("SIGHUP reload complete"))
    });
    let old = fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("SIGHUP reload complete"), "the rotated file kept growing:\n{old}");
    let (status, log) = broker.terminate();
    assert_eq!(status, Some(0), "{log}");
}

fn id_of(user: &str) -> String {
    let output = Command::new("id").arg("-u").arg(user).output().expect("run id");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// This test process's effective uid is 0 (`id -u`).
fn started_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Kills the child by its PID when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's own /etc/mosquitto/mosquitto.conf (pid file, persistence, log file, include_dir),
/// only its directories moved into a scratch directory, runs unchanged: the pid file is written
/// and removed, the log goes to the file, conf.d's listener serves.
#[test]
fn debian_default_configuration_runs_as_a_service() {
    let dir = ScratchDir::new("debian-conf");
    let root = dir.path();
    for sub in ["run/mosquitto", "var/lib/mosquitto", "var/log/mosquitto", "etc/mosquitto/conf.d"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let debian = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/debian-mosquitto.conf")).unwrap();
    let text = debian
        .replace("/run/", &format!("{}/run/", root.display()))
        .replace("/var/", &format!("{}/var/", root.display()))
        .replace("/etc/mosquitto/conf.d", &format!("{}/etc/mosquitto/conf.d", root.display()));
    fs::write(root.join("etc/mosquitto/mosquitto.conf"), text).unwrap();
    fs::write(root.join("etc/mosquitto/conf.d/local.conf"), "listener 0 127.0.0.1\nallow_anonymous true\n").unwrap();
    let child = Command::new(binary())
        .arg("-c")
        .arg(root.join("etc/mosquitto/mosquitto.conf"))
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start dynsec-broker");
    let mut broker = KillOnDrop(child);
    let log_path = root.join("var/log/mosquitto/mosquitto.log");
    let mut port = None;
    eventually("the log file names the listener", || {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        port = log.lines().find_map(|l| l.split("Opening listen socket on ").nth(1)).map(str::to_owned);
        port.is_some()
    });
    let addr: std::net::SocketAddr = port.unwrap().trim_end_matches('.').parse().unwrap();
    std::net::TcpStream::connect(addr).expect("conf.d's listener serves");
    let pid_path = root.join("run/mosquitto/mosquitto.pid");
    assert_eq!(fs::read_to_string(&pid_path).unwrap().trim(), broker.0.id().to_string());
    let term = Command::new("kill").arg("-TERM").arg(broker.0.id().to_string()).status().unwrap();
    assert!(term.success());
    let mut status = None;
    eventually("the broker exits after SIGTERM", || {
        status = broker.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{}", fs::read_to_string(&log_path).unwrap_or_default());
    assert!(!pid_path.exists(), "the pid file is removed at exit");
}
