//! nats-server for the cluster tests (docs/cluster.md): each test starts its own, with JetStream
//! and its own store directory, on an ephemeral port of 127.0.0.1, killed by its PID when dropped.
//! When nats-server is not installed the test fails saying how to install it (scripts/test.sh
//! does): a cluster test that silently does not run proves nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::broker::{BrokerProcess, ScratchDir};
use crate::mosquitto::{dynsec_plugin, mosquitto_ctrl_init};

/// Where Debian's package puts it; `PATH` is searched too.
const CANDIDATES: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];
const START_TIMEOUT: Duration = Duration::from_secs(20);
const READY: &str = "Listening for client connections on ";

/// The nats-server binary, or a failed test saying how to get one.
pub fn nats_server_binary() -> PathBuf {
    if let Some(found) = CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()) {
        return found;
    }
    if let Ok(output) = Command::new("sh").args(["-c", "command -v nats-server"]).output()
        && output.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    }
    panic!(
        "nats-server is not installed: the cluster tests need it (apt-get install nats-server; scripts/test.sh does)"
    );
}

/// A running nats-server with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    log: PathBuf,
    _dir: ScratchDir,
}

impl NatsServer {
    /// Starts a new server on an ephemeral port with an empty JetStream store.
    pub fn start() -> NatsServer {
        let dir = ScratchDir::new("nats");
        let mut server = NatsServer {
            child: None,
            port: 0,
            store: dir.path().join("jetstream"),
            log: dir.path().join("nats.log"),
            _dir: dir,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let port = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        let log = fs::File::create(&self.log).expect("create the nats-server log");
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .filter_map(|line| line.split(READY).nth(1))
                .filter_map(|rest| rest.trim().rsplit(':').next()?.parse::<u16>().ok())
                .next_back()
                && text.contains("Server is ready")
            {
                self.port = port;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nats-server did not start: {}", fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// Kills the server (SIGKILL) and waits for it; its store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node's configuration: a listener on an ephemeral port, the dynamic-security seed file
/// `seed` shared by every node, and the cluster settings.
pub fn node_config(seed: &Path, nats_url: &str, node: &str, extra: &str) -> String {
    format!(
        "listener 0 127.0.0.1\nlog_type all\nallow_anonymous false\ngate_login_throttle false\n\
         plugin {}\nplugin_opt_config_file {}\ncluster_nats_url {nats_url}\ncluster_node_name {node}\n{extra}",
        dynsec_plugin().display(),
        seed.display()
    )
}

/// A nats-server and broker nodes sharing one dynamic-security seed file (made by
/// `mosquitto_ctrl dynsec init` with `admin`/`password`).
pub struct TestCluster {
    pub nats: NatsServer,
    pub nodes: Vec<BrokerProcess>,
    pub dir: ScratchDir,
    pub seed: PathBuf,
    binary: PathBuf,
    /// Each node's extra configuration lines, by index (the last one for any further node).
    extras: Vec<String>,
    /// One cluster at a time in a test binary: each is four processes, and a dozen of them at
    /// once, each binding ephemeral ports, crowd out the tests that pick their ports beforehand.
    /// Last, so that it is released after the processes are gone.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl TestCluster {
    /// Starts nats-server and `count` nodes named `a`, `b`, `c`, … one after the other.
    pub fn start(binary: &Path, count: usize, admin: &str, password: &str, extra: &str) -> TestCluster {
        Self::start_each(binary, &vec![extra; count], admin, password)
    }

    /// Starts nats-server and one node per entry of `extras`, each with those configuration lines.
    pub fn start_each(binary: &Path, extras: &[&str], admin: &str, password: &str) -> TestCluster {
        let count = extras.len();
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        // A test that failed while holding it does not stop the others.
        let one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let nats = NatsServer::start();
        let dir = ScratchDir::new("cluster");
        let seed = dir.path().join("dynamic-security.json");
        mosquitto_ctrl_init(&seed, admin, password);
        let mut cluster = TestCluster {
            nats,
            nodes: Vec::new(),
            dir,
            seed,
            binary: binary.to_owned(),
            extras: extras.iter().map(|e| (*e).to_owned()).collect(),
            _one_at_a_time: one_at_a_time,
        };
        for index in 0..count {
            let node = cluster.start_node(index);
            cluster.nodes.push(node);
        }
        cluster
    }

    pub fn node_name(index: usize) -> String {
        ((b'a' + index as u8) as char).to_string()
    }

    /// Starts node `index` in its own directory (kept across restarts).
    pub fn start_node(&self, index: usize) -> BrokerProcess {
        let name = Self::node_name(index);
        let dir = self.dir.path().join(format!("node-{name}"));
        fs::create_dir_all(&dir).expect("node directory");
        let extra = self.extras.get(index).or(self.extras.last()).map_or("", String::as_str);
        let config = node_config(&self.seed, &self.nats.url(), &name, extra);
        BrokerProcess::start_in(&self.binary, &dir, &config, &[])
    }

    /// Kills node `index` with SIGKILL (nothing flushed) and starts it again on its files.
    pub fn restart_node(&mut self, index: usize) {
        self.nodes.remove(index).kill();
        let node = self.start_node(index);
        self.nodes.insert(index, node);
    }
}
