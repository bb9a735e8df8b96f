//! The cluster figures of issue 20 (docs/cluster.md), scenarios C1–C3: the bench starts
//! nats-server with JetStream (an ephemeral port of 127.0.0.1, its store in the run's scratch
//! directory) and three `dynsec-broker` nodes A, B and C on one dynamic-security seed file, and
//! stops exactly those processes, by their handles, when done.
//!
//! - **C1 throughput**: P1's generator (`flow`), 1→1, 100-byte payloads, QoS 0 and 1: the
//!   publisher on node A and the subscriber on node B, against both on node A, in turn within
//!   every round (and a standalone broker without a cluster, for what joining a cluster costs);
//!   QoS 1 also on a second cluster whose nodes have persistence (durable), where it goes
//!   through JetStream.
//! - **C2 change → effect**: an admin on node C alternately removes and restores the probe role's
//!   publish ACL; a probe client on each node publishes QoS 1 about once a millisecond. The time
//!   from sending the command to its first effect on that node is one sample: after a removal, a
//!   refused publish or a kick; after a restore, a kick or an accepted publish (before the command
//!   the probe saw the opposite, so nothing older can pass for the effect).
//! - **C3 provisioning**: P3's `createClient` batches through node A of a fresh cluster and
//!   through a fresh standalone broker; JetStream's own cost is nats-server's CPU time and what
//!   its store wrote, and the log's lag is how long until node C knows the last client.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::brokers::{Broker, Executables, Kind};
use crate::flow::{self, FlowSpec};
use crate::machine;
use crate::mqtt::{self, Client, Connect, Version};
use crate::progress::ProgressBar;
use crate::provisioning;
use crate::report::{self, C1, C2, C3, END_START, LOST, RATE, TOTAL};
use crate::results::{Curve, Results};
use crate::security_setup::{self as setup, USER_100, VICTIM_ROLE, VICTIM_TOPIC, VICTIM_USER};

/// Where Debian's package puts nats-server; `PATH` is searched first.
const NATS_CANDIDATES: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];
const NATS_READY: &str = "Listening for client connections on ";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(30);
/// Longest wait for one change's effect on a node, and for a probe to settle after it.
const EFFECT_WAIT: Duration = Duration::from_secs(10);
/// Pause between a probe's publishes: the resolution of a refusal's time, light enough that
/// three probes' messages (which every node forwards to the others) do not load the machine.
const PROBE_PERIOD: Duration = Duration::from_millis(1);
use crate::report::{CROSS_NODE, SAME_NODE};
const STANDALONE: &str = "standalone broker, no cluster";
/// The prefix of C1's placements on the cluster whose nodes have persistence (durable mode).
const PERSISTENT: &str = "persistence on, ";
/// Linux's `USER_HZ`: the unit of `/proc/PID/stat`'s CPU times.
const TICKS_PER_SECOND: f64 = 100.0;

/// Sizes of the cluster scenarios.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub rounds: usize,
    pub messages: u64,
    pub flow_duration: Duration,
    /// C2: security changes sent (half removals, half restores).
    pub changes: usize,
    pub provisioning_total: usize,
    pub provisioning_batch: usize,
}

/// Which of C1–C3 to run.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub throughput: bool,
    pub change_to_effect: bool,
    pub provisioning: bool,
}

/// The nats-server binary, if installed.
fn nats_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .chain(NATS_CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// Bytes written by process `pid` so far (`write_bytes` of `/proc/PID/io`: what reached the
/// storage layer, page cache included).
fn written_bytes(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

/// A nats-server with JetStream, killed (by its handle) when dropped.
pub struct NatsServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl NatsServer {
    /// Starts nats-server in `dir` (created): its store in `dir/jetstream`, its log in
    /// `dir/nats.log`, an ephemeral port of 127.0.0.1.
    pub fn start(dir: &Path) -> Result<NatsServer, String> {
        let binary = nats_binary().ok_or("nats-server is not installed (apt-get install nats-server)")?;
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let log = dir.join("nats.log");
        let out = fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("spawn nats-server: {e}"))?;
        let mut server = NatsServer { child, port: 0, log };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("nats-server exited with {status}: {}", server.log_text()));
            }
            let text = server.log_text();
            let port = text
                .lines()
                .filter_map(|line| line.split(NATS_READY).nth(1))
                .filter_map(|rest| rest.trim().rsplit(':').next()?.parse::<u16>().ok())
                .next_back();
            if let Some(port) = port
                && text.contains("Server is ready")
            {
                server.port = port;
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("nats-server did not start in {START_TIMEOUT:?}: {}", server.log_text()))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server and the broker nodes A, B, C, …; the nodes are stopped first.
pub struct Cluster {
    pub nodes: Vec<Broker>,
    pub nats: NatsServer,
}

impl Cluster {
    /// Starts nats-server and `count` nodes, one after the other, all on the seed file `seed`.
    pub fn start(exes: &Executables, dir: &Path, seed: &Path, count: usize) -> Result<Cluster, String> {
        Self::start_with(exes, dir, seed, count, &[])
    }

    /// As [`Cluster::start`], every node with the configuration lines `extra` too.
    pub fn start_with(
        exes: &Executables,
        dir: &Path,
        seed: &Path,
        count: usize,
        extra: &[&str],
    ) -> Result<Cluster, String> {
        let nats = NatsServer::start(&dir.join("nats"))?;
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let name = ((b'a' + index as u8) as char).to_string();
            let mut node = exes.clone();
            node.ours_extra_config.push(format!("cluster_nats_url {}", nats.url()));
            node.ours_extra_config.push(format!("cluster_node_name {name}"));
            node.ours_extra_config.extend(extra.iter().map(|line| (*line).to_owned()));
            // `DYNSEC_BENCH_CLUSTER_INTEREST=1`: the nodes forward QoS 0 by interest
            // (docs/cluster.md, `cluster_forward_by_interest`).
            if std::env::var_os("DYNSEC_BENCH_CLUSTER_INTEREST").is_some_and(|v| v == "1") {
                node.ours_extra_config.push("cluster_forward_by_interest true".to_owned());
            }
            let node_dir = dir.join(format!("node-{name}"));
            fs::create_dir_all(&node_dir).map_err(|e| format!("create {}: {e}", node_dir.display()))?;
            nodes.push(Broker::start_in(Kind::Ours, &node, &node_dir, seed).map_err(|e| format!("node {name}: {e}"))?);
        }
        Ok(Cluster { nodes, nats })
    }

    fn addr(&self, index: usize) -> SocketAddr {
        self.nodes[index].addr(Version::V311)
    }

    /// Waits (bounded) until every node is idle: a node still forwarding the previous run's
    /// messages would share the cores with the next one.
    fn settle(&self) {
        for node in &self.nodes {
            node.settle(Duration::from_secs(3));
        }
    }

    /// Total CPU time of nats-server and of the nodes.
    fn cpu(&self) -> (f64, f64) {
        let nats = cpu_seconds(self.nats.pid()).unwrap_or(0.0);
        let nodes = self.nodes.iter().filter_map(|n| cpu_seconds(n.pid())).sum();
        (nats, nodes)
    }
}

/// A line for the progress display and the report's notes.
fn note(results: &mut Results, progress: &mut ProgressBar, line: String) {
    progress.note(&line);
    results.notes.push(line);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Runs the wanted cluster scenarios and adds their figures to `results`.
pub fn run(
    plan: &ClusterPlan,
    wanted: Wanted,
    exes: &Executables,
    scratch: &Path,
    results: &mut Results,
    progress: &mut ProgressBar,
) {
    let seed = scratch.join("cluster-seed.json");
    let minimal = scratch.join("cluster-minimal.json");
    let written =
        setup::write(&setup::cluster_model(), &seed).and_then(|_| setup::write(&setup::minimal_model(), &minimal));
    if let Err(e) = written {
        results.notes.push(format!("cluster: cannot write the seed files: {e}"));
        return;
    }
    if wanted.throughput || wanted.change_to_effect {
        progress.start("cluster: starting nats-server and nodes A, B, C");
        let started = Cluster::start(exes, &scratch.join("cluster-flow"), &seed, 3);
        let standalone = Broker::start(Kind::Ours, exes, &scratch.join("cluster-standalone"), Some(&seed));
        match (started, standalone) {
            (Ok(cluster), Ok(standalone)) => {
                results.notes.push(format!(
                    "C1/C2: nats-server {} (pid {}), nodes A, B, C on {}",
                    cluster.nats.url(),
                    cluster.nats.pid(),
                    cluster.nodes.iter().map(|n| n.addr(Version::V311).to_string()).collect::<Vec<_>>().join(", ")
                ));
                if wanted.throughput {
                    // QoS 1/2 across nodes goes through JetStream only on nodes with persistence
                    // (docs/cluster.md): a second cluster of three with it, for those figures.
                    progress.start("cluster: starting a second nats-server and nodes A, B, C with persistence");
                    let persistent = Cluster::start_with(
                        exes,
                        &scratch.join("cluster-flow-persistent"),
                        &seed,
                        3,
                        &["persistence true"],
                    );
                    let persistent = persistent
                        .map_err(|e| note(results, progress, format!("{C1} with persistence skipped: {e}")))
                        .ok();
                    throughput(plan, &cluster, persistent.as_ref(), &standalone, results, progress);
                }
                drop(standalone);
                if wanted.change_to_effect {
                    progress.start(format!("{C2}: {} changes sent to node C", plan.changes));
                    if let Err(e) = change_to_effect(plan, &cluster, results, progress) {
                        note(results, progress, format!("{C2} failed: {e}"));
                    }
                    progress.finish_step();
                }
            }
            (Err(e), _) | (_, Err(e)) => note(results, progress, format!("cluster scenarios skipped: {e}")),
        }
    }
    if wanted.provisioning {
        provisioning_figures(plan, exes, scratch, &minimal, results, progress);
    }
}

/// C1: each case on each placement in turn, the order rotating from round to round.
fn throughput(
    plan: &ClusterPlan,
    cluster: &Cluster,
    persistent: Option<&Cluster>,
    standalone: &Broker,
    results: &mut Results,
    progress: &mut ProgressBar,
) {
    let mut placements = vec![
        (CROSS_NODE.to_owned(), cluster.addr(0), cluster.addr(1)),
        (SAME_NODE.to_owned(), cluster.addr(0), cluster.addr(0)),
        (STANDALONE.to_owned(), standalone.addr(Version::V311), standalone.addr(Version::V311)),
    ];
    if let Some(persistent) = persistent {
        placements.push((format!("{PERSISTENT}{CROSS_NODE}"), persistent.addr(0), persistent.addr(1)));
        placements.push((format!("{PERSISTENT}{SAME_NODE}"), persistent.addr(0), persistent.addr(0)));
    }
    let mut run_id = 0;
    for round in 0..plan.rounds {
        for qos in [0u8, 1] {
            for offset in 0..placements.len() {
                let (placement, publisher, subscriber) = &placements[(offset + round) % placements.len()];
                let (publisher, subscriber) = (*publisher, *subscriber);
                // (With persistence only QoS 1 takes another path: QoS 0 is the same.)
                if qos == 0 && placement.starts_with(PERSISTENT) {
                    continue;
                }
                let case = format!("1→1 QoS {qos} v3.1.1, {placement}");
                progress.start(format!("{C1}: {case} (round {})", round + 1));
                cluster.settle();
                if let Some(persistent) = persistent {
                    persistent.settle();
                }
                standalone.settle(Duration::from_secs(3));
                run_id += 1;
                let spec = FlowSpec {
                    addr: publisher,
                    version: Version::V311,
                    qos,
                    subscribers: 1,
                    messages: plan.messages,
                    max_duration: plan.flow_duration,
                    payload: 100,
                    topic: format!("bench/cluster/r{run_id}"),
                    credentials: setup::credentials(true, USER_100),
                    client_prefix: format!("c{run_id}"),
                    drain_limit: flow::DRAIN_LIMIT,
                };
                match flow::run_between(&spec, subscriber) {
                    Ok(r) => {
                        results.add(C1, &case, Kind::Ours, RATE, "deliveries/s", round, r.rate());
                        results.add(C1, &case, Kind::Ours, LOST, "messages", round, r.lost as f64);
                    }
                    Err(e) => note(results, progress, format!("{C1} {case} failed: {e}")),
                }
                progress.finish_step();
            }
        }
    }
    results.notes.push(format!("C1: load average after the throughput rounds: {}", machine::load_text()));
}

/// What a probe saw, with times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Accepted,
    Refused,
    Disconnected,
}

/// A client publishing QoS 1 on the victim's topic on one node, reconnecting when kicked.
struct Probe {
    events: Arc<Mutex<Vec<(Instant, Seen)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(addr: SocketAddr, client_id: String) -> Probe {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (events, stop) = (events.clone(), stop.clone());
            std::thread::spawn(move || runtime().block_on(probe_loop(addr, client_id, events, stop)))
        };
        Probe { events, stop, thread: Some(thread) }
    }

    /// The first event after `since` that is one of `kinds`.
    fn first_after(&self, since: Instant, kinds: &[Seen]) -> Option<Instant> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().find(|(t, seen)| *t > since && kinds.contains(seen)).map(|(t, _)| *t)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn probe_loop(
    addr: SocketAddr,
    client_id: String,
    events: Arc<Mutex<Vec<(Instant, Seen)>>>,
    stop: Arc<AtomicBool>,
) {
    let password = setup::password_of(VICTIM_USER);
    let record = |seen: Seen| events.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), seen));
    let payload = [0u8; 16];
    let mut buf = BytesMut::with_capacity(128);
    while !stop.load(Ordering::Acquire) {
        let connect = Connect {
            version: Version::V5,
            client_id: &client_id,
            username: Some(VICTIM_USER),
            password: Some(&password),
            keep_alive: 600,
        };
        let Ok(mut client) = Client::connect(addr, &connect, WAIT).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let mut pkid = 0u16;
        'connected: while !stop.load(Ordering::Acquire) {
            pkid = pkid % 1000 + 1;
            buf.clear();
            mqtt::publish(&mut buf, Version::V5, VICTIM_TOPIC.as_bytes(), &payload, 1, pkid);
            if client.send(&buf).await.is_err() {
                break;
            }
            loop {
                match client.next(Duration::from_secs(2)).await {
                    Ok(frame) if frame.packet_type == mqtt::PUBACK => {
                        record(if frame.ack_reason() >= 0x80 { Seen::Refused } else { Seen::Accepted });
                        break;
                    }
                    Ok(frame) if frame.packet_type == mqtt::DISCONNECT => break 'connected,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                    Err(_) => break 'connected,
                }
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
        record(Seen::Disconnected);
    }
}

fn acl_command(command: &str) -> Vec<u8> {
    format!(
        r#"{{"commands":[{{"command":"{command}","rolename":"{VICTIM_ROLE}","acltype":"publishClientSend","topic":"{VICTIM_TOPIC}","allow":true}}]}}"#
    )
    .into_bytes()
}

/// Percentile `p` (0–1) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// C2: `plan.changes` changes sent to node C, each measured on A, B and C.
fn change_to_effect(
    plan: &ClusterPlan,
    cluster: &Cluster,
    results: &mut Results,
    progress: &mut ProgressBar,
) -> Result<(), String> {
    const NAMES: [&str; 3] = ["A", "B", "C"];
    let probes: Vec<Probe> =
        (0..3).map(|i| Probe::start(cluster.addr(i), format!("probe-{}", NAMES[i].to_lowercase()))).collect();
    let mut effects: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut replies = Vec::new();
    let runtime = runtime();
    runtime.block_on(async {
        let mut admin = provisioning::admin(cluster.addr(2), Version::V311, "bench-cluster-admin").await?;
        // Start from the allowed state on every node.
        let start = Instant::now();
        wait_all(&probes, start, &[Seen::Accepted]).await.map_err(|e| format!("probes never accepted: {e}"))?;
        for change in 0..plan.changes {
            let removal = change % 2 == 0;
            let (name, effect, settled) = if removal {
                ("removeRoleACL", [Seen::Refused, Seen::Disconnected], Seen::Refused)
            } else {
                ("addRoleACL", [Seen::Accepted, Seen::Disconnected], Seen::Accepted)
            };
            if change % 10 == 0 {
                progress.detail(&format!("change {}/{}", change + 1, plan.changes));
            }
            let sent = Instant::now();
            let reply = provisioning::command(&mut admin, &acl_command(name), WAIT).await?;
            replies.push(sent.elapsed().as_secs_f64() * 1e3);
            if reply.windows(8).any(|w| w == b"\"error\":") {
                return Err(format!("{name} answered: {}", String::from_utf8_lossy(&reply)));
            }
            for (index, probe) in probes.iter().enumerate() {
                let deadline = Instant::now() + EFFECT_WAIT;
                let seen = loop {
                    if let Some(t) = probe.first_after(sent, &effect) {
                        break t;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("{name}: no effect on node {} within {EFFECT_WAIT:?}", NAMES[index]));
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                };
                effects[index].push(seen.saturating_duration_since(sent).as_secs_f64() * 1e3);
            }
            // The next change starts from the state this one made, on every node.
            wait_all(&probes, sent, &[settled]).await?;
        }
        Ok::<(), String>(())
    })?;
    drop(probes);
    let case = |node: &str| format!("removeRoleACL/addRoleACL sent to C, seen on {node}");
    for (index, samples) in effects.iter_mut().enumerate() {
        samples.sort_by(|a, b| a.total_cmp(b));
        let case = case(NAMES[index]);
        results.add(C2, &case, Kind::Ours, "change → effect p50", "ms", 0, percentile(samples, 0.5));
        results.add(C2, &case, Kind::Ours, report::EFFECT_P99, "ms", 0, percentile(samples, 0.99));
        results.add(C2, &case, Kind::Ours, "change → effect max", "ms", 0, percentile(samples, 1.0));
        results.add(C2, &case, Kind::Ours, "samples", "changes", 0, samples.len() as f64);
    }
    replies.sort_by(|a, b| a.total_cmp(b));
    let case = "removeRoleACL/addRoleACL sent to C, the admin's reply".to_owned();
    results.add(C2, &case, Kind::Ours, "sent → reply p50", "ms", 0, percentile(&replies, 0.5));
    results.add(C2, &case, Kind::Ours, "sent → reply p99", "ms", 0, percentile(&replies, 0.99));
    results.notes.push(format!("C2: {} changes; load average after: {}", plan.changes, machine::load_text()));
    Ok(())
}

/// Waits until every probe saw one of `kinds` after `since`.
async fn wait_all(probes: &[Probe], since: Instant, kinds: &[Seen]) -> Result<(), String> {
    let deadline = Instant::now() + EFFECT_WAIT;
    while probes.iter().any(|p| p.first_after(since, kinds).is_none()) {
        if Instant::now() > deadline {
            return Err(format!("a probe saw no {kinds:?} within {EFFECT_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// C3: the same provisioning through a fresh cluster's node A and through a fresh standalone
/// broker.
fn provisioning_figures(
    plan: &ClusterPlan,
    exes: &Executables,
    scratch: &Path,
    minimal: &Path,
    results: &mut Results,
    progress: &mut ProgressBar,
) {
    let batches = format!("{} clients in batches of {}", plan.provisioning_total, plan.provisioning_batch);
    for on_cluster in [true, false] {
        let case =
            format!("without passwords, {batches}, {}", if on_cluster { "through node A of 3" } else { STANDALONE });
        progress.start(format!("{C3}: {case}"));
        let outcome = if on_cluster {
            provision_cluster(plan, exes, scratch, minimal, &case, results, progress)
        } else {
            provision_standalone(plan, exes, scratch, minimal, &case, results, progress)
        };
        if let Err(e) = outcome {
            note(results, progress, format!("{C3} {case} failed: {e}"));
        }
        progress.finish_step();
    }
}

fn record_provisioning(results: &mut Results, case: &str, run: &provisioning::ProvisioningRun) {
    let (start, end) = run.start_end();
    results.add(C3, case, Kind::Ours, TOTAL, "s", 0, run.total.as_secs_f64());
    results.add(C3, case, Kind::Ours, "clients created", "clients", 0, run.clients() as f64);
    results.add(
        C3,
        case,
        Kind::Ours,
        "createClient/s",
        "clients/s",
        0,
        run.clients() as f64 / run.total.as_secs_f64().max(1e-9),
    );
    results.add(C3, case, Kind::Ours, "first batch (mean of first 10 %)", "ms", 0, start.as_secs_f64() * 1e3);
    results.add(C3, case, Kind::Ours, "last batch (mean of last 10 %)", "ms", 0, end.as_secs_f64() * 1e3);
    results.add(C3, case, Kind::Ours, END_START, "×", 0, end.as_secs_f64() / start.as_secs_f64().max(1e-9));
    if run.errors > 0 {
        results.notes.push(format!("{C3} {case}: {} commands answered with an error", run.errors));
    }
    // The batch times, for the CSV (and `benchmarks-provisioning.svg` when C3 runs with P3).
    let mut clients = 0.0;
    let points = run
        .batch_times
        .iter()
        .map(|t| {
            clients += run.batch_size as f64;
            (clients, t.as_secs_f64() * 1e3)
        })
        .collect();
    results.curves.push(Curve { name: format!("C3 {case}"), points });
}

fn provision(
    plan: &ClusterPlan,
    addr: SocketAddr,
    progress: &mut ProgressBar,
) -> Result<provisioning::ProvisioningRun, String> {
    let mut on_batch = |done: usize, of: usize| progress.detail(&format!("batch {done}/{of}"));
    runtime().block_on(provisioning::provision(
        addr,
        plan.provisioning_total,
        plan.provisioning_batch,
        false,
        Duration::from_secs(600),
        &mut on_batch,
    ))
}

fn provision_standalone(
    plan: &ClusterPlan,
    exes: &Executables,
    scratch: &Path,
    minimal: &Path,
    case: &str,
    results: &mut Results,
    progress: &mut ProgressBar,
) -> Result<(), String> {
    let broker = Broker::start(Kind::Ours, exes, &scratch.join("cluster-provisioning-standalone"), Some(minimal))?;
    let cpu_before = cpu_seconds(broker.pid()).unwrap_or(0.0);
    let run = provision(plan, broker.addr(Version::V311), progress)?;
    let cpu = cpu_seconds(broker.pid()).unwrap_or(0.0) - cpu_before;
    record_provisioning(results, case, &run);
    results.add(C3, case, Kind::Ours, "broker CPU", "s", 0, cpu);
    Ok(())
}

fn provision_cluster(
    plan: &ClusterPlan,
    exes: &Executables,
    scratch: &Path,
    minimal: &Path,
    case: &str,
    results: &mut Results,
    progress: &mut ProgressBar,
) -> Result<(), String> {
    let cluster = Cluster::start(exes, &scratch.join("cluster-provisioning"), minimal, 3)?;
    let (nats_before, nodes_before) = cluster.cpu();
    let written_before = written_bytes(cluster.nats.pid()).unwrap_or(0);
    let run = provision(plan, cluster.addr(0), progress)?;
    let (nats_after, nodes_after) = cluster.cpu();
    let written = written_bytes(cluster.nats.pid()).unwrap_or(0).saturating_sub(written_before);
    record_provisioning(results, case, &run);
    // The log's lag: from the last reply on A until node C knows the last client.
    let last = format!("dev-{:06}", plan.provisioning_total.saturating_sub(1));
    let lag = runtime().block_on(visible_on(cluster.addr(2), &last))?;
    results.add(C3, case, Kind::Ours, "last client known on C after A's reply", "ms", 0, lag.as_secs_f64() * 1e3);
    results.add(C3, case, Kind::Ours, "nats-server CPU (JetStream)", "s", 0, nats_after - nats_before);
    results.add(C3, case, Kind::Ours, "CPU of the 3 nodes", "s", 0, nodes_after - nodes_before);
    results.add(C3, case, Kind::Ours, "nats-server bytes written", "MB", 0, written as f64 / 1048576.0);
    Ok(())
}

/// How long until `username` exists on the node at `addr`, polled with `getClient`.
async fn visible_on(addr: SocketAddr, username: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut admin = provisioning::admin(addr, Version::V311, "bench-cluster-checker").await?;
    let payload = format!(r#"{{"commands":[{{"command":"getClient","username":"{username}"}}]}}"#).into_bytes();
    while started.elapsed() < WAIT {
        let reply = provisioning::command(&mut admin, &payload, WAIT).await?;
        if !reply.windows(8).any(|w| w == b"\"error\":") {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(format!("{username} not known on node C after {WAIT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cross_node_case_names_its_single_node_partner() {
        let case = format!("1→1 QoS 1 v3.1.1, {CROSS_NODE}");
        assert_eq!(crate::report::same_node_case(&case), Some(format!("1→1 QoS 1 v3.1.1, {SAME_NODE}")));
        assert_eq!(crate::report::same_node_case(&format!("1→1 QoS 1 v3.1.1, {STANDALONE}")), None);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 100.0);
        assert_eq!(percentile(&values, 0.99), 198.0);
        assert_eq!(percentile(&values, 1.0), 200.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
