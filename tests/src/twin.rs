//! One mosquitto.conf text run by both brokers — dynsec-broker and the real mosquitto 2.0.11 —
//! on ports of their own, and the real mosquitto clients (`mosquitto_pub`/`mosquitto_sub`) run
//! against either, with their outcome reduced to what the client saw (CONNACK code, TLS failure,
//! delivered messages). The configuration is a template: `{PORT0}`, `{PORT1}`… become free ports.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::broker::BrokerProcess;
use crate::mosquitto::{Mosquitto, unused_port};

/// Upper bound for a client run or for something the test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Mosquitto,
    /// mosquitto 2.1 ([`crate::mosquitto::mosquitto_21`]); its clients are still the installed ones.
    Mosquitto21,
}

pub const BOTH: [Kind; 2] = [Kind::Ours, Kind::Mosquitto];

enum Process {
    Ours(BrokerProcess),
    Mosquitto(Mosquitto),
}

/// A running broker with the ports its template asked for.
pub struct Twin {
    pub kind: Kind,
    pub ports: Vec<u16>,
    process: Process,
}

fn fill(template: &str, ports: &[u16]) -> String {
    let mut text = template.to_owned();
    for (index, port) in ports.iter().enumerate() {
        text = text.replace(&format!("{{PORT{index}}}"), &port.to_string());
    }
    text
}

fn wait_listening(ports: &[u16]) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if ports.iter().all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Twin {
    /// Starts `kind` with `template` (`listener {PORT0} 127.0.0.1` … lines included) and waits
    /// until every listener accepts connections. `dir` receives mosquitto's files.
    pub fn start(kind: Kind, binary: &Path, dir: &Path, template: &str, listeners: usize) -> Twin {
        let ports: Vec<u16> = (0..listeners).map(|_| unused_port()).collect();
        let text = fill(template, &ports);
        let process = match kind {
            Kind::Ours => Process::Ours(BrokerProcess::start_with_text(binary, &format!("log_type all\n{text}"))),
            Kind::Mosquitto => Process::Mosquitto(Mosquitto::start_with_text(dir, &text, ports[0])),
            Kind::Mosquitto21 => {
                let installation = crate::mosquitto::mosquitto_21("Twin::start")
                    .expect("mosquitto 2.1 is not installed; callers check mosquitto_21() first");
                Process::Mosquitto(Mosquitto::start_with_text_installed(Some(&installation), dir, &text, ports[0]))
            }
        };
        let twin = Twin { kind, ports, process };
        assert!(wait_listening(&twin.ports), "{kind:?} is not listening on {:?}: {}", twin.ports, twin.log());
        twin
    }

    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    pub fn log(&self) -> String {
        match &self.process {
            Process::Ours(broker) => broker.log(),
            Process::Mosquitto(broker) => broker.log(),
        }
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Ours(broker) => broker.pid(),
            Process::Mosquitto(broker) => broker.pid(),
        }
    }

    /// Sends SIGHUP to this broker (only it, by PID) and waits until its log shows the reload.
    pub fn hangup(&self) {
        let before = self.log().len();
        let status = Command::new("kill").arg("-HUP").arg(self.pid().to_string()).status().expect("run kill");
        assert!(status.success(), "kill -HUP failed");
        // Ours logs when the reload is over. mosquitto reloads in its main loop right after
        // logging, before it serves the sockets again; the pause only covers the log write.
        let (marker, settle) = match self.kind {
            Kind::Ours => ("SIGHUP reload complete", Duration::ZERO),
            Kind::Mosquitto | Kind::Mosquitto21 => ("Reloading config", Duration::from_millis(100)),
        };
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.log().get(before..).is_some_and(|new| new.contains(marker)) {
                std::thread::sleep(settle);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{:?} did not log a reload after SIGHUP: {}", self.kind, self.log());
    }
}

/// What a client saw when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// CONNACK with this return/reason code (0 = accepted).
    Connack(u8),
    /// No CONNACK: the TLS handshake (or the connection) failed.
    NoConnack,
}

/// Options of a mosquitto client run.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub port: u16,
    pub v5: bool,
    pub id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `--cafile` (enables TLS).
    pub cafile: Option<String>,
    pub cert: Option<(String, String)>,
    /// `-h` value (default 127.0.0.1, which libmosquitto also sends as SNI).
    pub host: Option<String>,
    /// Further arguments (e.g. `--tls-version tlsv1.2`).
    pub extra: Vec<String>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, ..Client::default() }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["-h".into(), self.host.clone().unwrap_or("127.0.0.1".into())];
        args.extend(["-p".into(), self.port.to_string(), "-d".into()]);
        args.extend(["-V".into(), if self.v5 { "mqttv5" } else { "mqttv311" }.into()]);
        if let Some(id) = &self.id {
            args.extend(["-i".into(), id.clone()]);
        }
        if let Some(username) = &self.username {
            args.extend(["-u".into(), username.clone()]);
        }
        if let Some(password) = &self.password {
            args.extend(["-P".into(), password.clone()]);
        }
        if let Some(cafile) = &self.cafile {
            args.extend(["--cafile".into(), cafile.clone()]);
        }
        if let Some((cert, key)) = &self.cert {
            args.extend(["--cert".into(), cert.clone(), "--key".into(), key.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Connects with `mosquitto_pub`, publishes `payload` to `topic` (QoS 1) and reports the CONNACK.
    pub fn publish(&self, topic: &str, payload: &str) -> Connect {
        let mut command = Command::new("mosquitto_pub");
        command.args(self.args()).args(["-t", topic, "-m", payload, "-q", "1"]);
        let output = run_bounded(command);
        connack_of(&output)
    }

    /// Starts `mosquitto_sub` on `filters`; it prints each payload on a line.
    pub fn subscribe(&self, filters: &[&str]) -> Subscriber {
        // stdbuf: mosquitto_sub's debug lines are block-buffered on a pipe otherwise.
        let mut command = Command::new("stdbuf");
        command.args(["-oL", "mosquitto_sub"]).args(self.args()).args(["-q", "1"]);
        for filter in filters {
            command.args(["-t", filter]);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = command.spawn().expect("run mosquitto_sub (scripts/test.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let subscriber = Subscriber { child, lines: rx, history: Default::default() };
        subscriber.wait_for(|line| line.contains("received SUBACK"));
        subscriber
    }
}

/// Runs a client to its end, killing it (by its own PID) if it outlives [`WAIT`].
fn run_bounded(mut command: Command) -> String {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("run a mosquitto client (scripts/test.sh installs them)");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(output)) => {
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
        }
        Ok(Err(error)) => panic!("client failed: {error}"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("a mosquitto client did not finish within {WAIT:?}");
        }
    }
}

/// The CONNACK code in a `-d` transcript (`received CONNACK (5)`).
fn connack_of(output: &str) -> Connect {
    output
        .lines()
        .find_map(|line| line.split("received CONNACK (").nth(1))
        .and_then(|rest| rest.split(')').next())
        .and_then(|code| code.parse().ok())
        .map_or(Connect::NoConnack, Connect::Connack)
}

/// A running `mosquitto_sub -d`; every line it printed is kept.
pub struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
    history: std::cell::RefCell<Vec<String>>,
}

impl Subscriber {
    fn next_line(&self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = self.lines.recv_timeout(left).ok()?;
        self.history.borrow_mut().push(line.clone());
        Some(line)
    }

    /// Waits (bounded) for a line satisfying `wanted`; panics with what was seen otherwise.
    pub fn wait_for(&self, wanted: impl Fn(&str) -> bool) -> String {
        self.next_matching(WAIT, wanted)
            .unwrap_or_else(|| panic!("mosquitto_sub never printed the expected line: {:?}", self.history.borrow()))
    }

    /// The next line satisfying `wanted` printed within `within`.
    pub fn next_matching(&self, within: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some(line) = self.next_line(deadline) {
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    }

    /// The next message payload (lines of `-d` output skipped).
    pub fn next_payload(&self) -> String {
        self.wait_for(|line| !line.starts_with("Client ") && !line.starts_with("Subscribed (mid"))
    }

    /// How many times the client has sent CONNECT so far (more than one: it was disconnected and
    /// reconnected).
    pub fn connects(&self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.history.borrow_mut().push(line);
        }
        self.history.borrow().iter().filter(|line| line.contains("sending CONNECT")).count()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `dir/name` and returns the path as a string (for configuration templates).
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).expect("write a test file");
    path.display().to_string()
}
