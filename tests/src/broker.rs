//! The real `dynsec-broker` binary for tests: its own scratch directory, a listener on an
//! ephemeral port of 127.0.0.1 (port 0; the port is read from the broker's log), and a guard that
//! kills it by its PID when dropped — also when the test panics — and checks that the broker never
//! panicked.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the broker to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The line the broker logs for each bound listener.
const LISTENING: &str = "Opening listen socket on ";
/// Logged once every listener is open.
const RUNNING: &str = "dynsec-broker running";

/// A scratch directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dynsec-broker-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running broker process. Dropping it kills the process (by PID, through its `Child`).
pub struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    /// The working directory; removed on drop unless it was given by the caller.
    workdir: PathBuf,
    _scratch: Option<ScratchDir>,
    /// A test made the broker panic on purpose (see [`BrokerProcess::wait_for_exit`]).
    panic_expected: bool,
}

impl BrokerProcess {
    /// Starts `binary` with a configuration of `listener 0 127.0.0.1`, `log_type all` and
    /// `config` (mosquitto.conf lines).
    pub fn start(binary: &Path, config: &str) -> BrokerProcess {
        Self::start_with_text(binary, &format!("listener 0 127.0.0.1\nlog_type all\n{config}"))
    }

    /// Starts `binary` with exactly this configuration text (which must open a listener).
    pub fn start_with_text(binary: &Path, config: &str) -> BrokerProcess {
        match Self::try_start(binary, config) {
            Ok(broker) => broker,
            Err(message) => panic!("dynsec-broker did not start: {message}"),
        }
    }

    /// Starts the broker and returns its exit status and log if it stops by itself within the
    /// start timeout (for configurations that must be refused).
    pub fn expect_start_failure(binary: &Path, config: &str) -> (i32, String) {
        let dir = ScratchDir::new("refused");
        let config_path = dir.path().join("broker.conf");
        fs::write(&config_path, config).expect("write config");
        let output = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run dynsec-broker");
        let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
        (output.status.code().unwrap_or(-1), text)
    }

    /// Starts the broker with `config` in `dir` and waits, at most the start timeout, for it to
    /// stop by itself (a configuration or files it must refuse). Returns its exit code (`None`
    /// when it was still running and was killed: it started instead of refusing) and its output.
    pub fn start_failure_in(binary: &Path, dir: &Path, config: &str) -> (Option<i32>, String) {
        let config_path = dir.join("broker.conf");
        let log_path = dir.join("broker.log");
        fs::write(&config_path, config).expect("write config");
        let log = fs::File::create(&log_path).expect("create log");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run dynsec-broker");
        let deadline = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, fs::read_to_string(&log_path).unwrap_or_default())
    }

    fn try_start(binary: &Path, config: &str) -> Result<BrokerProcess, String> {
        let dir = ScratchDir::new("run");
        Self::spawn_in(binary, dir.path().to_owned(), Some(dir), config, &[])
    }

    /// Starts `binary` in `dir` (kept after the broker stops, for restarts on the same files) with
    /// exactly this configuration text and these extra environment variables.
    pub fn start_in(binary: &Path, dir: &Path, config: &str, env: &[(&str, &str)]) -> BrokerProcess {
        match Self::spawn_in(binary, dir.to_owned(), None, config, env) {
            Ok(broker) => broker,
            Err(message) => panic!("dynsec-broker did not start: {message}"),
        }
    }

    fn spawn_in(
        binary: &Path,
        workdir: PathBuf,
        scratch: Option<ScratchDir>,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<BrokerProcess, String> {
        let config_path = workdir.join("broker.conf");
        let log_path = workdir.join("broker.log");
        fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .current_dir(&workdir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let mut broker = BrokerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            workdir,
            _scratch: scratch,
            panic_expected: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}: {}", broker.log()));
            }
            let log = broker.log();
            // Ready once every listener is open: the broker says it is running after binding
            // them all (the first "Opening listen socket" line alone left tests with several
            // listeners looking for the second one too early).
            if let Some(addr) = log
                .lines()
                .find_map(|line| line.split(LISTENING).nth(1))
                .and_then(|rest| rest.trim_end_matches('.').parse().ok())
                .filter(|_| log.contains(RUNNING))
            {
                broker.addr = addr;
                return Ok(broker);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no listener after {START_TIMEOUT:?}: {}", broker.log()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn dir(&self) -> &Path {
        &self.workdir
    }

    /// Kills this broker with SIGKILL (no chance to flush anything) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Sends SIGTERM to this broker (and only it) and waits for it to exit; returns its status
    /// code and log.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dynsec-broker did not stop after SIGTERM: {}", self.log());
    }

    /// Waits (at most `STOP_TIMEOUT`) for the broker to exit by itself — a test made it fail on
    /// purpose, so a panic in its log is expected — and returns its status code and log; `None`
    /// as status when it did not exit.
    pub fn wait_for_exit(mut self) -> (Option<i32>, String) {
        self.panic_expected = true;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (None, self.log())
    }

    /// Panics if the broker's log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "the broker panicked:\n{log}");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: show what the broker saw (the tail of its log).
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- dynsec-broker log (last lines) ---\n{}", tail.join("\n"));
        } else if !self.panic_expected {
            self.assert_no_panic();
        }
    }
}
