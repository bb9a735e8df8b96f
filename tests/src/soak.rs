//! Soak program: holds many device connections on loopback for a long time with steady QoS 1
//! traffic and periodic dynsec changes, and reports the broker's resident memory over time,
//! errors and lost messages.
//!
//! Every device is a dynsec client (own username and PBKDF2 password, group `soak-devices`)
//! holding a persistent session subscribed to `soak/dev/<n>` at QoS 1, half on MQTT 3.1.1 and
//! half on MQTT 5, pinging at its keepalive. The first `publishers` devices each publish QoS 1 to
//! the subscription of a partner device at a steady rate; every acknowledged message must reach
//! the partner. Every `change_interval` the admin makes one change, in turn:
//! - a temporary client is created, connects, publishes, and is deleted (it must be kicked with
//!   0x98);
//! - an idle device's password is rotated (it is kicked and reconnects with the new password);
//! - an ACL is added to / removed from role `soak-extra`, held by 1 % of the idle devices through
//!   group `soak-extra` (those are kicked and reconnect).
//!
//! Errors are anything else: a refused or failed connection, an unexpected close, a missing ack
//! or PINGRESP, a failed command. Used by `tests/tests/e2e/reliability_soak.rs` (short) and the
//! `soak` binary (10,000 connections for 10 minutes; figures in docs/reliability.md).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dynsec_broker::testkit::{self, CONNACK, Connect, DISCONNECT, Next, PINGRESP, PUBACK, PUBLISH, RawClient};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, watch};

use crate::broker::BrokerProcess;
use crate::control_client::{self, WAIT, error_of, request};

const ADMIN_PASSWORD: &str = "soak-admin-password";
/// Control commands per request while provisioning.
const PROVISION_BATCH: usize = 500;
/// Error messages kept verbatim (all are counted).
const KEPT_ERRORS: usize = 50;
/// v5 DISCONNECT reason of a kick.
const ADMINISTRATIVE_ACTION: u8 = 0x98;

#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    /// Device connections held (publishers and their partners included).
    pub connections: usize,
    /// Devices publishing QoS 1, each to its own partner device.
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate_per_publisher: f64,
    /// How long traffic runs after every device is connected.
    pub duration: Duration,
    pub change_interval: Duration,
    pub sample_interval: Duration,
    /// Memory samples taken before this (from the start of traffic) are not judged for flatness.
    pub warmup: Duration,
    /// Device keepalive, seconds.
    pub keep_alive: u16,
    /// Connections being set up at once.
    pub connect_concurrency: usize,
    /// Lines appended to the broker's configuration (e.g. `gate_segment_size 65536`).
    pub extra_config: Vec<String>,
}

impl Options {
    /// The full run of issue 7: 10,000 connections, 10 minutes.
    pub fn full(binary: PathBuf) -> Options {
        Options {
            binary,
            connections: 10_000,
            publishers: 100,
            rate_per_publisher: 10.0,
            duration: Duration::from_secs(600),
            change_interval: Duration::from_secs(5),
            sample_interval: Duration::from_secs(10),
            warmup: Duration::from_secs(60),
            keep_alive: 60,
            connect_concurrency: 128,
            extra_config: Vec::new(),
        }
    }
}

/// Resident memory of the broker at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since traffic started.
    pub at: Duration,
    pub rss_kib: u64,
    pub connected: usize,
    pub received: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub connections: usize,
    /// Time to provision the devices over `$CONTROL`, and to connect them all.
    pub provision_time: Duration,
    pub connect_time: Duration,
    pub rss_before_connections_kib: u64,
    pub samples: Vec<Sample>,
    pub warmup: Duration,
    pub published_acknowledged: u64,
    pub received_unique: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub changes: u64,
    pub kicks_expected: u64,
    pub kicks_seen: u64,
    pub reconnects: u64,
    pub error_count: u64,
    pub errors: Vec<String>,
}

impl Report {
    /// (mean, largest relative deviation from it) of the samples after warm-up.
    pub fn memory_after_warmup(&self) -> Option<(f64, f64)> {
        let judged: Vec<f64> = self.samples.iter().filter(|s| s.at >= self.warmup).map(|s| s.rss_kib as f64).collect();
        if judged.is_empty() {
            return None;
        }
        let mean = judged.iter().sum::<f64>() / judged.len() as f64;
        let deviation = judged.iter().map(|x| (x - mean).abs() / mean).fold(0.0, f64::max);
        Some((mean, deviation))
    }

    pub fn summary(&self) -> String {
        let memory = match self.memory_after_warmup() {
            Some((mean, deviation)) => {
                format!(
                    "RSS after warm-up: mean {:.1} MiB, largest deviation {:.1} %",
                    mean / 1024.0,
                    deviation * 100.0
                )
            }
            None => "RSS after warm-up: no samples".into(),
        };
        let per_connection = self
            .samples
            .first()
            .map(|s| {
                (s.rss_kib.saturating_sub(self.rss_before_connections_kib)) as f64 / self.connections.max(1) as f64
            })
            .unwrap_or(0.0);
        format!(
            "{} connections (provisioned in {:.1?}, connected in {:.1?}, ~{:.1} KiB each); {memory}; \
             QoS 1: {} acknowledged, {} received, {} lost, {} duplicates; {} dynsec changes, {} kicks expected, \
             {} seen, {} reconnects; {} errors",
            self.connections,
            self.provision_time,
            self.connect_time,
            per_connection,
            self.published_acknowledged,
            self.received_unique,
            self.lost,
            self.duplicates,
            self.changes,
            self.kicks_expected,
            self.kicks_seen,
            self.reconnects,
            self.error_count
        )
    }

    /// One line per memory sample, for the report in docs/reliability.md.
    pub fn samples_table(&self) -> String {
        let mut out = String::from("seconds  rss_mib  connected  received\n");
        for s in &self.samples {
            out.push_str(&format!(
                "{:>7}  {:>7.1}  {:>9}  {:>8}\n",
                s.at.as_secs(),
                s.rss_kib as f64 / 1024.0,
                s.connected,
                s.received
            ));
        }
        out
    }
}

/// State the device, publisher and admin tasks share.
struct Shared {
    addr: SocketAddr,
    keep_alive: u16,
    passwords: Vec<Mutex<String>>,
    /// Set by the admin before a change that kicks the device; consumed by the device's close.
    expect_kick: Vec<AtomicBool>,
    connected: AtomicUsize,
    received: AtomicU64,
    kicks_seen: AtomicU64,
    reconnects: AtomicU64,
    error_count: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock();
        if errors.len() < KEPT_ERRORS {
            errors.push(message);
        }
    }
}

fn device_name(n: usize) -> String {
    format!("dev{n}")
}

fn config(extra: &[String]) -> String {
    let mut config = String::from(
        "listener 0 127.0.0.1\nallow_anonymous false\nlog_type error\nlog_type warning\nlog_type notice\n\
     plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
     plugin_opt_config_file dynamic-security.json\n",
    );
    for line in extra {
        config.push_str(line);
        config.push('\n');
    }
    config
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the soak against a broker started in `dir`; `progress` is called with each sample.
pub async fn run(options: &Options, dir: &Path, progress: impl Fn(&Sample)) -> Result<Report, String> {
    if options.publishers * 2 > options.connections {
        return Err("need at least two connections per publisher".into());
    }
    // Raised to the hard limit (the broker started below inherits it), by the bench's safe wrapper.
    let fd_limit = dynsec_bench::machine::raise_open_files(0);
    if (fd_limit as usize) < options.connections + 1000 {
        return Err(format!("open-file limit {fd_limit} too low for {} connections", options.connections));
    }
    let broker = BrokerProcess::start_in(
        &options.binary,
        dir,
        &config(&options.extra_config),
        &[("DYNSEC_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    let result = drive(options, &broker, progress).await;
    let (_, log) = broker.terminate();
    let mut report = result?;
    // Error lines start with `Error: `, after the Unix time (the broker's mosquitto layout).
    let is_error = |line: &str| {
        line.starts_with("Error: ") || line.split_once(": ").is_some_and(|(_, rest)| rest.starts_with("Error: "))
    };
    for line in log.lines().filter(|l| l.contains("panicked") || l.contains("ERROR") || is_error(l)) {
        report.error_count += 1;
        if report.errors.len() < KEPT_ERRORS {
            report.errors.push(format!("broker log: {line}"));
        }
    }
    Ok(report)
}

async fn drive(options: &Options, broker: &BrokerProcess, progress: impl Fn(&Sample)) -> Result<Report, String> {
    let addr = broker.addr();
    let mut report = Report { connections: options.connections, warmup: options.warmup, ..Default::default() };
    let extra_holders: Vec<usize> = (options.publishers * 2..options.connections).step_by(100).collect();

    let started = Instant::now();
    let mut admin = control_client::admin(addr, "soak-admin", "admin", ADMIN_PASSWORD).await?;
    let mut pkid = 1u16;
    let mut command = async |admin: &mut RawClient, payload: String| -> Result<(), String> {
        pkid = pkid % 60_000 + 1;
        let replies = request(admin, &payload, pkid).await.ok_or("no reply to a control request")?;
        match replies.iter().find_map(error_of) {
            Some(error) => Err(format!("control command failed: {error}")),
            None => Ok(()),
        }
    };
    command(
        &mut admin,
        r#"{"commands":[
            {"command":"createRole","rolename":"soak-device","acls":[
                {"acltype":"publishClientSend","topic":"soak/#","allow":true},
                {"acltype":"publishClientReceive","topic":"soak/#","allow":true},
                {"acltype":"subscribePattern","topic":"soak/#","allow":true}]},
            {"command":"createRole","rolename":"soak-extra"},
            {"command":"createGroup","groupname":"soak-devices","roles":[{"rolename":"soak-device"}]},
            {"command":"createGroup","groupname":"soak-extra","roles":[{"rolename":"soak-extra"}]}]}"#
            .into(),
    )
    .await?;
    for chunk in (0..options.connections).collect::<Vec<_>>().chunks(PROVISION_BATCH) {
        let commands: Vec<String> = chunk
            .iter()
            .map(|&n| {
                let extra = if extra_holders.contains(&n) { r#",{"groupname":"soak-extra"}"# } else { "" };
                format!(
                    r#"{{"command":"createClient","username":"{}","password":"pw-{n}","groups":[{{"groupname":"soak-devices"}}{extra}]}}"#,
                    device_name(n)
                )
            })
            .collect();
        command(&mut admin, format!(r#"{{"commands":[{}]}}"#, commands.join(","))).await?;
    }
    report.provision_time = started.elapsed();
    report.rss_before_connections_kib = rss_kib(broker.pid());

    let shared = Arc::new(Shared {
        addr,
        keep_alive: options.keep_alive,
        passwords: (0..options.connections).map(|n| Mutex::new(format!("pw-{n}"))).collect(),
        expect_kick: (0..options.connections).map(|_| AtomicBool::new(false)).collect(),
        connected: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        kicks_seen: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        error_count: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });

    // Devices (publishers' partners among them) connect and subscribe, a bounded number at once.
    let connecting = Instant::now();
    let (stop_devices, devices_stopped) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(options.connect_concurrency));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(options.connections);
    let mut devices = Vec::with_capacity(options.connections);
    for n in options.publishers..options.connections {
        let (shared, stop, gate, ready) = (shared.clone(), devices_stopped.clone(), gate.clone(), ready_tx.clone());
        devices.push(tokio::spawn(device(shared, n, stop, gate, ready)));
    }
    drop(ready_tx);
    let subscribers = options.connections - options.publishers;
    for _ in 0..subscribers {
        if tokio::time::timeout(Duration::from_secs(300), ready_rx.recv()).await.ok().flatten().is_none() {
            return Err(format!("devices did not all connect: {}", shared.errors.lock().join("; ")));
        }
    }

    let (stop_publishers, publishers_stopped) = watch::channel(false);
    let interval = Duration::from_secs_f64(1.0 / options.rate_per_publisher.max(0.001));
    let publishers: Vec<_> = (0..options.publishers)
        .map(|n| {
            tokio::spawn(publisher(shared.clone(), n, options.publishers + n, interval, publishers_stopped.clone()))
        })
        .collect();
    report.connect_time = connecting.elapsed();

    // Traffic runs; the admin changes something every `change_interval`; memory is sampled.
    let traffic = Instant::now();
    let mut next_sample = Duration::ZERO;
    let mut next_change = options.change_interval;
    let mut change = 0u64;
    let idle: Vec<usize> =
        (options.publishers * 2..options.connections).filter(|n| !extra_holders.contains(n)).collect();
    while traffic.elapsed() < options.duration {
        let now = traffic.elapsed();
        if now >= next_sample {
            let sample = Sample {
                at: now,
                rss_kib: rss_kib(broker.pid()),
                connected: shared.connected.load(Ordering::Relaxed),
                received: shared.received.load(Ordering::Relaxed),
            };
            progress(&sample);
            report.samples.push(sample);
            next_sample += options.sample_interval;
        }
        if now >= next_change {
            // Password rotation needs an idle device, the ACL change holders (1 % of them).
            let kind = match change % 3 {
                1 if idle.is_empty() => 0,
                2 if extra_holders.is_empty() => 0,
                kind => kind,
            };
            let result = match kind {
                0 => temporary_client(&shared, &mut admin, &mut command, change).await,
                1 => {
                    let n = idle[(change as usize / 3) % idle.len()];
                    let password = format!("pw-{n}-rotated-{change}");
                    *shared.passwords[n].lock() = password.clone();
                    shared.expect_kick[n].store(true, Ordering::SeqCst);
                    report.kicks_expected += 1;
                    let payload = format!(
                        r#"{{"commands":[{{"command":"setClientPassword","username":"{}","password":"{password}"}}]}}"#,
                        device_name(n)
                    );
                    command(&mut admin, payload).await
                }
                _ => {
                    for &n in &extra_holders {
                        shared.expect_kick[n].store(true, Ordering::SeqCst);
                    }
                    report.kicks_expected += extra_holders.len() as u64;
                    let verb = if (change / 3).is_multiple_of(2) { "addRoleACL" } else { "removeRoleACL" };
                    let priority = if verb == "addRoleACL" { r#","priority":1,"allow":true"# } else { "" };
                    let payload = format!(
                        r#"{{"commands":[{{"command":"{verb}","rolename":"soak-extra","acltype":"publishClientSend","topic":"soak/extra"{priority}}}]}}"#
                    );
                    command(&mut admin, payload).await
                }
            };
            if let Err(e) = result {
                shared.error(format!("change {change}: {e}"));
            }
            change += 1;
            next_change += options.change_interval;
        }
        let wake = next_sample.min(next_change).saturating_sub(traffic.elapsed()).min(Duration::from_secs(1));
        tokio::time::sleep(wake).await;
    }
    report.changes = change;

    // Publishers stop; subscribers get a bounded time to receive what was acknowledged.
    let _ = stop_publishers.send(true);
    let mut sent: Vec<u64> = Vec::new();
    for task in publishers {
        sent.push(task.await.unwrap_or(0));
    }
    report.published_acknowledged = sent.iter().sum();
    let drain_until = Instant::now() + Duration::from_secs(30);
    while shared.received.load(Ordering::Relaxed) < report.published_acknowledged && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.samples.push(Sample {
        at: traffic.elapsed(),
        rss_kib: rss_kib(broker.pid()),
        connected: shared.connected.load(Ordering::Relaxed),
        received: shared.received.load(Ordering::Relaxed),
    });
    let _ = stop_devices.send(true);
    for (index, task) in devices.into_iter().enumerate() {
        let n = options.publishers + index;
        let seen = task.await.unwrap_or_default();
        if n < options.publishers * 2 {
            let acknowledged = sent[n - options.publishers];
            report.received_unique += seen.unique;
            report.duplicates += seen.duplicates;
            report.lost += (0..acknowledged).filter(|seq| !seen.sequences.contains(seq)).count() as u64;
        }
    }
    report.kicks_seen = shared.kicks_seen.load(Ordering::Relaxed);
    report.reconnects = shared.reconnects.load(Ordering::Relaxed);
    report.error_count = shared.error_count.load(Ordering::Relaxed);
    report.errors = shared.errors.lock().clone();
    Ok(report)
}

/// Creates a client, connects and publishes with it, deletes it and checks that it is kicked.
async fn temporary_client(
    shared: &Shared,
    admin: &mut RawClient,
    command: &mut impl AsyncFnMut(&mut RawClient, String) -> Result<(), String>,
    change: u64,
) -> Result<(), String> {
    let name = format!("soak-temp-{change}");
    command(
        admin,
        format!(
            r#"{{"commands":[{{"command":"createClient","username":"{name}","password":"{name}","groups":[{{"groupname":"soak-devices"}}]}}]}}"#
        ),
    )
    .await?;
    let mut connect = Connect::new(5, &name);
    connect.username = Some(name.clone());
    connect.password = Some(name.clone().into_bytes());
    let mut client = open(shared.addr, &connect).await?;
    client.publish("soak/temp", b"hello", 1, false, 1).await;
    match client.next(WAIT).await {
        Next::Frame(f) if f.packet_type == PUBACK && f.reason() == 0 => {}
        other => return Err(format!("{name}: PUBACK expected, got {other:?}")),
    }
    command(admin, format!(r#"{{"commands":[{{"command":"deleteClient","username":"{name}"}}]}}"#)).await?;
    match client.next(WAIT).await {
        Next::Frame(f) if f.packet_type == DISCONNECT && f.reason() == ADMINISTRATIVE_ACTION => Ok(()),
        other => Err(format!("{name}: kick (DISCONNECT 0x98) expected after deleteClient, got {other:?}")),
    }
}

/// Opens a connection and checks its CONNACK.
async fn open(addr: SocketAddr, connect: &Connect) -> Result<RawClient, String> {
    let mut client = RawClient::try_open(addr).await.map_err(|e| format!("{}: connect: {e}", connect.client_id))?;
    client.v5 = connect.version == 5;
    client.send(&connect.encode()).await;
    match client.next(WAIT).await {
        Next::Frame(f) if f.packet_type == CONNACK && f.reason() == 0 => Ok(client),
        other => Err(format!("{}: CONNACK expected, got {other:?}", connect.client_id)),
    }
}

fn device_connect(shared: &Shared, n: usize) -> Connect {
    let name = device_name(n);
    let mut connect = Connect::new(if n.is_multiple_of(2) { 4 } else { 5 }, &name);
    connect.clean = false;
    connect.keep_alive = shared.keep_alive;
    if connect.version == 5 {
        connect.session_expiry = Some(3600);
    }
    connect.username = Some(name);
    connect.password = Some(shared.passwords[n].lock().clone().into_bytes());
    connect
}

/// What a device received over the run.
#[derive(Debug, Default)]
struct Seen {
    sequences: HashSet<u64>,
    unique: u64,
    duplicates: u64,
}

/// A device: connects, subscribes to `soak/dev/<n>`, acks what arrives, pings, reconnects after
/// an expected kick; runs until `stop`.
async fn device(
    shared: Arc<Shared>,
    n: usize,
    mut stop: watch::Receiver<bool>,
    gate: Arc<Semaphore>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Seen {
    let mut seen = Seen::default();
    let mut ready = Some(ready);
    let ping_every = Duration::from_secs(u64::from(shared.keep_alive.max(2)) / 2);
    'session: for attempt in 0u32.. {
        if *stop.borrow() || attempt > 1000 {
            break;
        }
        let connect = device_connect(&shared, n);
        let permit = gate.acquire().await;
        let mut client = match open(shared.addr, &connect).await {
            Ok(client) => client,
            Err(e) => {
                shared.error(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let topic = format!("soak/dev/{n}");
        client.send(&testkit::subscribe(client.v5, 1, &[(&topic, 1)])).await;
        drop(permit);
        if attempt > 0 {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        shared.connected.fetch_add(1, Ordering::Relaxed);
        let mut ping_outstanding = false;
        loop {
            let next = tokio::select! {
                next = client.next(ping_every) => next,
                _ = stop.changed() => {
                    client.send(&testkit::disconnect()).await;
                    shared.connected.fetch_sub(1, Ordering::Relaxed);
                    break 'session;
                }
            };
            match next {
                Next::Frame(f) if f.packet_type == PUBLISH => {
                    let publish = f.publish(client.v5);
                    if publish.qos == 1 {
                        client.send(&testkit::ack(PUBACK, publish.pkid)).await;
                    }
                    let sequence = std::str::from_utf8(&publish.payload).ok().and_then(|s| s.parse::<u64>().ok());
                    match sequence {
                        Some(seq) if seen.sequences.insert(seq) => {
                            seen.unique += 1;
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => seen.duplicates += 1,
                        None => shared.error(format!("dev{n}: unexpected payload on {}", publish.topic)),
                    }
                }
                Next::Frame(f) if f.packet_type == testkit::SUBACK => {
                    if f.codes(client.v5) != [1] {
                        shared.error(format!("dev{n}: SUBACK {:?}", f.codes(client.v5)));
                    }
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                }
                Next::Frame(f) if f.packet_type == PINGRESP => ping_outstanding = false,
                Next::Frame(f) if f.packet_type == DISCONNECT => {
                    if f.reason() != ADMINISTRATIVE_ACTION || !shared.expect_kick[n].load(Ordering::SeqCst) {
                        shared.error(format!("dev{n}: unexpected DISCONNECT {:#x}", f.reason()));
                    }
                }
                Next::Frame(f) => shared.error(format!("dev{n}: unexpected packet type {}", f.packet_type)),
                Next::Timeout => {
                    if ping_outstanding {
                        shared.error(format!("dev{n}: no PINGRESP within {ping_every:?}"));
                    }
                    client.send(&testkit::pingreq()).await;
                    ping_outstanding = true;
                }
                Next::Closed => {
                    shared.connected.fetch_sub(1, Ordering::Relaxed);
                    if shared.expect_kick[n].swap(false, Ordering::SeqCst) {
                        shared.kicks_seen.fetch_add(1, Ordering::Relaxed);
                    } else if !*stop.borrow() {
                        shared.error(format!("dev{n}: connection closed unexpectedly"));
                    }
                    continue 'session;
                }
            }
        }
    }
    seen
}

/// A publisher: QoS 1 to its partner's topic at a steady rate, one message in flight; returns how
/// many were acknowledged (sequences `0..n`).
async fn publisher(
    shared: Arc<Shared>,
    n: usize,
    partner: usize,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let connect = device_connect(&shared, n);
    let mut client = match open(shared.addr, &connect).await {
        Ok(client) => client,
        Err(e) => {
            shared.error(e);
            return 0;
        }
    };
    let topic = format!("soak/dev/{partner}");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acknowledged = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let pkid = (acknowledged % 65_535) as u16 + 1;
        client.publish(&topic, acknowledged.to_string().as_bytes(), 1, false, pkid).await;
        match client.next(WAIT).await {
            Next::Frame(f) if f.packet_type == PUBACK && f.pkid() == pkid && f.reason() == 0 => acknowledged += 1,
            other => {
                shared.error(format!("dev{n}: PUBACK {pkid} expected, got {other:?}"));
                break;
            }
        }
    }
    client.send(&testkit::disconnect()).await;
    acknowledged
}
