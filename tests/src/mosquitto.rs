//! A real mosquitto broker (2.0.x, as installed) for tests: its own directory, an ephemeral port
//! on 127.0.0.1, optional dynamic-security plugin or password file, and a guard that kills it (by
//! its PID, through the `Child` handle) when dropped. Also the mosquitto 2.1 oracle
//! ([`mosquitto_21`]), an upstream build installed under a prefix.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when another process grabs the one we picked.
const START_ATTEMPTS: usize = 5;

/// Where Debian and other distributions install the plugin.
const PLUGIN_CANDIDATES: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
];

/// The dynamic-security plugin, or a panic that says what is missing.
pub fn dynsec_plugin() -> PathBuf {
    PLUGIN_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("mosquitto_dynamic_security.so not found (tried {PLUGIN_CANDIDATES:?}); install mosquitto (scripts/test.sh does)")
    })
}

/// A TCP port nothing listens on right now (bound and released).
pub fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("local address").port()
}

/// mosquitto refuses to run as root unless told which user to stay.
fn running_as_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Where tests look for mosquitto 2.1 (default [`DEFAULT_MOSQUITTO_21_PREFIX`]).
pub const MOSQUITTO_21_PREFIX_ENV: &str = "MOSQUITTO_21_PREFIX";
pub const DEFAULT_MOSQUITTO_21_PREFIX: &str = "/opt/mosquitto-2.1";
/// Set to `1` to let the 2.1 comparisons pass without running when 2.1 is not installed.
pub const SKIP_ORACLE_21_ENV: &str = "DYNSEC_SKIP_ORACLE_21";

/// An upstream mosquitto build under a prefix (`sbin/mosquitto`, `lib/` with the plugins and
/// `libmosquitto`, which the broker is run against).
#[derive(Debug, Clone)]
pub struct Installation {
    pub prefix: PathBuf,
}

impl Installation {
    pub fn broker(&self) -> PathBuf {
        self.prefix.join("sbin/mosquitto")
    }

    pub fn lib_dir(&self) -> PathBuf {
        self.prefix.join("lib")
    }

    pub fn dynsec_plugin(&self) -> PathBuf {
        self.lib_dir().join("mosquitto_dynamic_security.so")
    }
}

/// mosquitto 2.1 (from `$MOSQUITTO_21_PREFIX`, default `/opt/mosquitto-2.1`). When it is not
/// there the calling test fails — a comparison that silently does not run proves nothing — unless
/// `DYNSEC_SKIP_ORACLE_21=1`, in which case this says so on stderr and returns `None`.
pub fn mosquitto_21(test: &str) -> Option<Installation> {
    let prefix = std::env::var_os(MOSQUITTO_21_PREFIX_ENV)
        .map_or_else(|| PathBuf::from(DEFAULT_MOSQUITTO_21_PREFIX), PathBuf::from);
    let installation = Installation { prefix };
    if installation.broker().exists() && installation.dynsec_plugin().exists() {
        return Some(installation);
    }
    let missing = format!(
        "mosquitto 2.1 not found: {} or {} is missing (set {MOSQUITTO_21_PREFIX_ENV} to its install prefix)",
        installation.broker().display(),
        installation.dynsec_plugin().display()
    );
    if std::env::var(SKIP_ORACLE_21_ENV).is_ok_and(|v| v == "1") {
        eprintln!("{test}: NOT RUN against mosquitto 2.1 ({SKIP_ORACLE_21_ENV}=1): {missing}");
        return None;
    }
    panic!("{test}: {missing}; to run without this comparison set {SKIP_ORACLE_21_ENV}=1");
}

/// A running mosquitto. Dropping it kills the process.
pub struct Mosquitto {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto with `extra_config` lines after a `listener <port> 127.0.0.1` line. The
    /// configuration and log files are written in `dir`.
    pub fn start(dir: &Path, extra_config: &[String]) -> Mosquitto {
        Self::start_installed(None, dir, extra_config)
    }

    /// [`Mosquitto::start`] with the broker of `installation` (the installed 2.0 for `None`).
    pub fn start_installed(installation: Option<&Installation>, dir: &Path, extra_config: &[String]) -> Mosquitto {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(installation, dir, extra_config) {
                Ok(broker) => return broker,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("mosquitto did not start: {last_failure}");
    }

    /// A broker with the dynamic-security plugin reading and writing `config_file`.
    pub fn with_dynsec(dir: &Path, config_file: &Path) -> Mosquitto {
        Self::start(
            dir,
            &[
                "allow_anonymous false".into(),
                format!("plugin {}", dynsec_plugin().display()),
                format!("plugin_opt_config_file {}", config_file.display()),
            ],
        )
    }

    /// A broker authenticating with a mosquitto password file.
    pub fn with_password_file(dir: &Path, password_file: &Path) -> Mosquitto {
        Self::start(dir, &["allow_anonymous false".into(), format!("password_file {}", password_file.display())])
    }

    fn try_start(
        installation: Option<&Installation>,
        dir: &Path,
        extra_config: &[String],
    ) -> Result<Mosquitto, String> {
        let port = unused_port();
        let config_path = dir.join(format!("mosquitto-{port}.conf"));
        let log_path = dir.join(format!("mosquitto-{port}.log"));
        let mut config = format!("listener {port} 127.0.0.1\npersistence false\nlog_type all\n");
        if running_as_root() {
            config.push_str("user root\n");
        }
        for line in extra_config {
            config.push_str(line);
            config.push('\n');
        }
        fs::write(&config_path, config).map_err(|e| format!("write {}: {e}", config_path.display()))?;
        Self::spawn_and_wait(installation, &config_path, log_path, port)
    }

    /// Starts mosquitto with exactly `config` (plus `user root` when needed); `port` is one of
    /// its listeners, used to wait for the start.
    pub fn start_with_text(dir: &Path, config: &str, port: u16) -> Mosquitto {
        Self::start_with_text_installed(None, dir, config, port)
    }

    /// [`Mosquitto::start_with_text`] with the broker of `installation` (the installed 2.0 for
    /// `None`).
    pub fn start_with_text_installed(
        installation: Option<&Installation>,
        dir: &Path,
        config: &str,
        port: u16,
    ) -> Mosquitto {
        let config_path = dir.join(format!("mosquitto-{port}.conf"));
        let log_path = dir.join(format!("mosquitto-{port}.log"));
        let mut text = config.to_owned();
        if running_as_root() {
            text.push_str("\nuser root\n");
        }
        fs::write(&config_path, text).expect("write the mosquitto configuration");
        Self::spawn_and_wait(installation, &config_path, log_path, port)
            .unwrap_or_else(|failure| panic!("mosquitto: {failure}"))
    }

    /// Runs mosquitto on `config_path`, logging to `log_path`, and waits until `port` accepts.
    fn spawn_and_wait(
        installation: Option<&Installation>,
        config_path: &Path,
        log_path: PathBuf,
        port: u16,
    ) -> Result<Mosquitto, String> {
        let log = fs::File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = match installation {
            Some(installed) => {
                let mut command = Command::new(installed.broker());
                command.env("LD_LIBRARY_PATH", installed.lib_dir());
                command
            }
            None => Command::new("mosquitto"),
        };
        let child = command
            .arg("-c")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn mosquitto (is it installed? scripts/test.sh installs it): {e}"))?;
        let mut broker = Mosquitto { child, port, log_path };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}: {}", broker.log()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(broker);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not listening on {port} after {START_TIMEOUT:?}: {}", broker.log()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the installed `mosquitto_ctrl dynsec init` to make a starting configuration.
pub fn mosquitto_ctrl_init(file: &Path, admin: &str, password: &str) {
    let output = Command::new("mosquitto_ctrl")
        .args(["dynsec", "init"])
        .arg(file)
        .args([admin, password])
        .stdin(Stdio::null())
        .output()
        .expect("run mosquitto_ctrl (install mosquitto-clients; scripts/test.sh does)");
    assert!(file.exists(), "mosquitto_ctrl dynsec init failed: {}", String::from_utf8_lossy(&output.stderr));
}
