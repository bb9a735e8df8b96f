//! The three brokers under test, each a child process of the harness in its own temporary
//! directory, listening on 127.0.0.1 at ports picked just before start: `dynsec-broker` (the
//! release binary next to this one), bare rumqttd (`bench-rumqttd`, also next to this one) and
//! mosquitto 2.0 with its dynamic-security plugin (skipped when not installed). Processes are
//! killed by their own handle (PID), never by name.

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mqtt::Version;

/// How long a broker may take to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries when another process takes a picked port first.
const START_ATTEMPTS: usize = 4;
/// Router settings shared by our broker and the bare rumqttd (dynsec-broker's defaults);
/// `--ours-config gate_segment_size …` / `gate_segment_count …` change them for both.
pub const SEGMENT_SIZE: usize = 2 * 1024 * 1024;
pub const SEGMENT_COUNT: usize = 4;

const PLUGIN_CANDIDATES: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ours,
    Rumqttd,
    Mosquitto,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "dynsec-broker",
            Kind::Rumqttd => "rumqttd",
            Kind::Mosquitto => "mosquitto",
        }
    }

    /// Whether the broker runs the dynamic-security setup (rumqttd runs without auth).
    pub fn has_dynsec(self) -> bool {
        self != Kind::Rumqttd
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where the executables are.
#[derive(Debug, Clone)]
pub struct Executables {
    pub ours: PathBuf,
    pub rumqttd: PathBuf,
    /// mosquitto and its plugin, if installed.
    pub mosquitto: Option<(PathBuf, PathBuf)>,
    /// Extra configuration lines for `dynsec-broker` (`--ours-config`; empty: its defaults).
    pub ours_extra_config: Vec<String>,
    /// Extra configuration lines for mosquitto (P9: `persistence true`; empty: the bench's).
    pub mosquitto_extra_config: Vec<String>,
}

impl Executables {
    /// Our binaries next to the running harness; mosquitto from `PATH` or `/usr/sbin`.
    pub fn locate() -> Result<Executables, String> {
        let dir = std::env::current_exe()
            .map_err(|e| format!("cannot locate the harness binary: {e}"))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let ours = dir.join("dynsec-broker");
        let rumqttd = dir.join("bench-rumqttd");
        for binary in [&ours, &rumqttd] {
            if !binary.exists() {
                return Err(format!(
                    "{} not found: build with `cargo build --release -p dynsec-broker -p dynsec-bench`",
                    binary.display()
                ));
            }
        }
        let mosquitto = find_in_path("mosquitto")
            .or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.exists()))
            .and_then(|bin| {
                PLUGIN_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).map(|plugin| (bin, plugin))
            });
        Ok(Executables { ours, rumqttd, mosquitto, ours_extra_config: Vec::new(), mosquitto_extra_config: Vec::new() })
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A running broker; dropping it kills the process.
pub struct Broker {
    pub kind: Kind,
    child: Child,
    v4: SocketAddr,
    v5: SocketAddr,
    pub dir: PathBuf,
    log_path: PathBuf,
}

impl Executables {
    /// The router segments both rumqttd-based brokers use: the defaults, or the last
    /// `gate_segment_size` / `gate_segment_count` line of `--ours-config`.
    pub fn router_segments(&self) -> (usize, usize) {
        let mut segments = (SEGMENT_SIZE, SEGMENT_COUNT);
        for line in &self.ours_extra_config {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next().and_then(|v| v.parse().ok())) else {
                continue;
            };
            match key {
                "gate_segment_size" => segments.0 = value,
                "gate_segment_count" => segments.1 = value,
                _ => {}
            }
        }
        segments
    }
}

impl Broker {
    /// Starts `kind` in `dir` (created); `dynsec_file` is copied there for the dynsec brokers.
    pub fn start(kind: Kind, exes: &Executables, dir: &Path, dynsec_file: Option<&Path>) -> Result<Broker, String> {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let security_file = dir.join("dynamic-security.json");
        if let Some(source) = dynsec_file {
            fs::copy(source, &security_file).map_err(|e| format!("copy the dynsec file: {e}"))?;
        }
        Self::start_in(kind, exes, dir, &security_file)
    }

    /// Starts `kind` in `dir` on the files already there (a few attempts: a port may be taken);
    /// `security_file` is used where it is (the cluster nodes share one seed file).
    pub fn start_in(kind: Kind, exes: &Executables, dir: &Path, security_file: &Path) -> Result<Broker, String> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(kind, exes, dir, security_file) {
                Ok(broker) => return Ok(broker),
                Err(e) => last = e,
            }
        }
        Err(format!("{kind} did not start: {last}"))
    }

    fn try_start(kind: Kind, exes: &Executables, dir: &Path, security_file: &Path) -> Result<Broker, String> {
        let port = unused_port();
        let log_path = dir.join(format!("{}.log", kind.label()));
        let mut v5_port = port;
        let (segment_size, segment_count) = exes.router_segments();
        let mut command = match kind {
            Kind::Ours => {
                let mut config = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous false\nlog_type error\nlog_type warning\n\
                     plugin mosquitto_dynamic_security.so\nplugin_opt_config_file {}\n\
                     gate_segment_size {segment_size}\ngate_segment_count {segment_count}\n\
                     max_inflight_messages 100\n",
                    security_file.display()
                );
                for line in &exes.ours_extra_config {
                    config.push_str(line);
                    config.push('\n');
                }
                let path = dir.join("dynsec-broker.conf");
                fs::write(&path, config).map_err(|e| e.to_string())?;
                let mut c = Command::new(&exes.ours);
                c.arg("-c").arg(path);
                c
            }
            Kind::Rumqttd => {
                v5_port = unused_port();
                let mut c = Command::new(&exes.rumqttd);
                c.args([port.to_string(), v5_port.to_string(), segment_size.to_string(), segment_count.to_string()]);
                c
            }
            Kind::Mosquitto => {
                let (binary, plugin) = exes.mosquitto.as_ref().ok_or("mosquitto is not installed")?;
                let mut config = format!(
                    "listener {port} 127.0.0.1\npersistence false\nallow_anonymous false\n\
                     log_type error\nlog_type warning\nconnection_messages false\n\
                     max_inflight_messages 100\nmax_queued_messages 1000000\n\
                     plugin {}\nplugin_opt_config_file {}\n",
                    plugin.display(),
                    security_file.display()
                );
                for line in &exes.mosquitto_extra_config {
                    config.push_str(line);
                    config.push('\n');
                }
                if running_as_root() {
                    config.push_str("user root\n");
                }
                let path = dir.join("mosquitto.conf");
                fs::write(&path, config).map_err(|e| e.to_string())?;
                let mut c = Command::new(binary);
                c.arg("-c").arg(path);
                c
            }
        };
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn {kind}: {e}"))?;
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        let v5 = SocketAddr::from(([127, 0, 0, 1], v5_port));
        let mut broker = Broker { kind, child, v4, v5, dir: dir.to_path_buf(), log_path };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}: {}", broker.log_tail()));
            }
            if TcpStream::connect(v4).is_ok() && TcpStream::connect(v5).is_ok() {
                return Ok(broker);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no listener after {START_TIMEOUT:?}: {}", broker.log_tail()))
    }

    /// The address serving `version` (rumqttd has one listener per version).
    pub fn addr(&self, version: Version) -> SocketAddr {
        match version {
            Version::V311 => self.v4,
            Version::V5 => self.v5,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in bytes (`VmRSS`).
    pub fn rss(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// CPU time used so far, in clock ticks (`utime + stime` of `/proc/PID/stat`).
    fn cpu_ticks(&self) -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }

    /// CPU time used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let per_second = rustix::param::clock_ticks_per_second();
        Some(self.cpu_ticks()? as f64 / per_second.max(1) as f64)
    }

    /// Waits (at most `limit`) until the broker uses under ~10 % of a core: a broker still
    /// working through the previous run's backlog would disturb the next measurement. `false`
    /// if it was still busy at the limit.
    pub fn settle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let Some(before) = self.cpu_ticks() else { return true };
            std::thread::sleep(Duration::from_millis(100));
            let Some(after) = self.cpu_ticks() else { return true };
            if after.saturating_sub(before) <= 1 {
                return true;
            }
        }
        false
    }

    /// Stops the broker and starts it again in the same directory, on the same files (new
    /// ports): how a backlog that would take minutes to work off is dropped.
    pub fn restart(&mut self, exes: &Executables) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let security_file = self.dir.join("dynamic-security.json");
        // The old value's Drop kills a process that has already exited.
        *self = Self::start_in(self.kind, exes, &self.dir, &security_file)?;
        Ok(())
    }

    /// Asks the broker to shut down (SIGTERM, by its PID: mosquitto saves `mosquitto.db` then)
    /// and waits up to `limit`; a broker still running then is killed. `true` if it exited on
    /// its own.
    pub fn stop(&mut self, limit: Duration) -> bool {
        use rustix::process::{Pid, Signal, kill_process};
        if kill_process(Pid::from_child(&self.child), Signal::TERM).is_err() {
            return !self.alive();
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Starts `kind` again in `dir` after [`Broker::stop`], on the files left there.
    pub fn start_again(kind: Kind, exes: &Executables, dir: &Path) -> Result<Broker, String> {
        Self::start_in(kind, exes, dir, &dir.join("dynamic-security.json"))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
