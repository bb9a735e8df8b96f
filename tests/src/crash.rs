//! Crash-safety harness: provisions clients through `$CONTROL/dynamic-security/v1` while the
//! broker is killed with SIGKILL at random moments, restarting it each time, and checks after
//! every restart that each change whose reply had been received is present (and each
//! acknowledged deletion absent), and that the store loads.
//!
//! Used by the short CI test (`tests/tests/e2e/reliability_crash.rs`) and by the full run:
//!
//! ```text
//! cargo run --release -p dynsec-tests --bin crash-harness -- --iterations 50
//! ```
//!
//! Kills land anywhere: between messages, during a batch's fsync, during snapshot compaction
//! (the harness sets a short `plugin_opt_snapshot_idle_ms`), or while the broker replays its
//! journal after the previous kill.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dynsec::json::Json;
use dynsec_broker::testkit::RawClient;

use crate::broker::BrokerProcess;
use crate::control_client::{self, request};

const ADMIN_PASSWORD: &str = "crash-harness-admin";

/// Small deterministic generator (xorshift64*), so a failing run can be repeated by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// How a crash run goes (this harness's and `persistence_crash`'s).
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker binary (dynsec-broker or the tests' shim of it).
    pub binary: PathBuf,
    pub iterations: usize,
    pub seed: u64,
    /// Kills happen between 0 and this long after the load starts.
    pub max_kill_delay: Duration,
}

impl Options {
    /// The options of a full run's binary: `[--iterations N] [--seed S] [--max-kill-delay-ms M]`
    /// (50 kills, a seed from the clock, kills within 400 ms), with the broker shim built beside
    /// it. `Err` is the usage line.
    pub fn from_args(program: &str, args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            binary: std::env::current_exe().map(|p| p.with_file_name("dynsec-broker-under-test")).unwrap_or_default(),
            iterations: 50,
            seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
            max_kill_delay: Duration::from_millis(400),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let value = args.next().and_then(|v| v.parse::<u64>().ok());
            match (arg.as_str(), value) {
                ("--iterations", Some(v)) => options.iterations = v as usize,
                ("--seed", Some(v)) => options.seed = v,
                ("--max-kill-delay-ms", Some(v)) => options.max_kill_delay = Duration::from_millis(v),
                _ => return Err(format!("usage: {program} [--iterations N] [--seed S] [--max-kill-delay-ms M]")),
            }
        }
        Ok(options)
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: usize,
    pub acknowledged_creates: usize,
    pub acknowledged_deletes: usize,
    /// Operations sent but unanswered when the broker died (their outcome may go either way).
    pub in_flight_at_kill: usize,
    /// Of those, how many turned out applied after the restart.
    pub in_flight_applied: usize,
    pub clients_at_end: usize,
    /// Time from restart to the first verified reply, per iteration.
    pub restart_times: Vec<Duration>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut times = self.restart_times.clone();
        times.sort();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let max = times.last().copied().unwrap_or_default();
        format!(
            "{} SIGKILLs; acknowledged: {} creates, {} deletes, all present after every restart; \
             in flight at the kill: {} ({} applied, {} not); clients at the end: {}; restart to first reply: median {:.0?}, max {:.0?}",
            self.iterations,
            self.acknowledged_creates,
            self.acknowledged_deletes,
            self.in_flight_at_kill,
            self.in_flight_applied,
            self.in_flight_at_kill - self.in_flight_applied,
            self.clients_at_end,
            median,
            max
        )
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(String),
    Delete(String),
}

impl Op {
    fn name(&self) -> &str {
        match self {
            Op::Create(n) | Op::Delete(n) => n,
        }
    }

    fn json(&self, correlation: usize) -> String {
        let (command, name) = match self {
            Op::Create(n) => ("createClient", n),
            Op::Delete(n) => ("deleteClient", n),
        };
        format!(r#"{{"command":"{command}","username":"{name}","correlationData":"{correlation}"}}"#)
    }
}

fn config(snapshot_idle_ms: u64) -> String {
    format!(
        "listener 0 127.0.0.1\nallow_anonymous false\nlog_type error\nlog_type warning\nlog_type notice\n\
         plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
         plugin_opt_config_file dynamic-security.json\nplugin_opt_snapshot_idle_ms {snapshot_idle_ms}\n"
    )
}

async fn admin(addr: SocketAddr) -> Result<RawClient, String> {
    control_client::admin(addr, "crash-harness-admin", "admin", ADMIN_PASSWORD).await
}

async fn list_clients(addr: SocketAddr) -> Result<BTreeSet<String>, String> {
    let mut client = admin(addr).await?;
    let replies =
        request(&mut client, r#"{"commands":[{"command":"listClients"}]}"#, 1).await.ok_or("no listClients reply")?;
    let clients = replies
        .first()
        .and_then(|r| r.get("data"))
        .and_then(|d| d.get("clients"))
        .and_then(Json::as_array)
        .ok_or_else(|| format!("unexpected listClients reply {replies:?}"))?;
    Ok(clients.iter().filter_map(Json::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned()).collect())
}

/// Sends batches of creates and deletes until the connection dies; returns the acknowledged
/// operations and those in flight when it died.
async fn provision(
    addr: SocketAddr,
    rng: &mut Rng,
    iteration: usize,
    existing: &[String],
) -> Result<(Vec<Op>, Vec<Op>), String> {
    let mut client = match admin(addr).await {
        Ok(client) => client,
        // The kill comes at a random moment from the start, so on a loaded machine it may come
        // before the login is answered: nothing was sent, nothing to check (a refused login
        // is a CONNACK with a reason code, still an error).
        Err(error) if error.starts_with("admin cannot connect") || error.ends_with(": Closed") => {
            return Ok((Vec::new(), Vec::new()));
        }
        Err(error) => return Err(error),
    };
    let mut acknowledged = Vec::new();
    let mut deletable: Vec<String> = existing.to_vec();
    let mut counter = 0usize;
    let mut pkid: u16 = 1;
    loop {
        let batch: Vec<Op> = (0..1 + rng.below(20))
            .map(|_| {
                counter += 1;
                if !deletable.is_empty() && rng.below(5) == 0 {
                    Op::Delete(deletable.swap_remove(rng.below(deletable.len() as u64) as usize))
                } else {
                    Op::Create(format!("i{iteration}-c{counter}"))
                }
            })
            .collect();
        let commands: Vec<String> = batch.iter().enumerate().map(|(i, op)| op.json(i)).collect();
        let payload = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
        pkid = pkid % 60000 + 1;
        match request(&mut client, &payload, pkid).await {
            Some(replies) => {
                for (i, op) in batch.into_iter().enumerate() {
                    let correlation = i.to_string();
                    let ok = replies.iter().any(|r| {
                        r.get("error").is_none()
                            && r.get("correlationData").and_then(Json::as_bytes) == Some(correlation.as_bytes())
                    });
                    if !ok {
                        return Err(format!("command failed while the broker was alive: {op:?}"));
                    }
                    if let Op::Create(name) = &op {
                        deletable.push(name.clone());
                    }
                    acknowledged.push(op);
                }
            }
            None => return Ok((acknowledged, batch)),
        }
    }
}

fn kill_later(pid: u32, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // Only the broker this harness started, by its PID.
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    })
}

/// Runs the harness in `dir` (its files stay there for inspection if something fails).
pub fn run(options: &Options, dir: &Path, mut progress: impl FnMut(usize, &Report)) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut rng = Rng::new(options.seed);
    let env = [("DYNSEC_ADMIN_PASSWORD", ADMIN_PASSWORD)];
    let start = |rng: &mut Rng| BrokerProcess::start_in(&options.binary, dir, &config(5 + rng.below(100)), &env);
    let mut broker = start(&mut rng);
    let mut present: BTreeSet<String> = BTreeSet::new();
    let mut absent: BTreeSet<String> = BTreeSet::new();
    let mut report = Report::default();
    for iteration in 0..options.iterations {
        let delay = Duration::from_micros(rng.below(options.max_kill_delay.as_micros() as u64));
        let killer = kill_later(broker.pid(), delay);
        let existing: Vec<String> = present.iter().cloned().collect();
        let outcome = runtime.block_on(provision(broker.addr(), &mut rng, iteration, &existing));
        let _ = killer.join();
        broker.kill();
        let (acknowledged, in_flight) = outcome?;
        for op in acknowledged {
            match op {
                Op::Create(name) => {
                    report.acknowledged_creates += 1;
                    present.insert(name);
                }
                Op::Delete(name) => {
                    report.acknowledged_deletes += 1;
                    present.remove(&name);
                    absent.insert(name);
                }
            }
        }
        // Whatever was in flight may or may not have been applied: it leaves both sets.
        for op in &in_flight {
            present.remove(op.name());
            absent.remove(op.name());
        }
        let restarted = Instant::now();
        broker = start(&mut rng);
        let clients = runtime.block_on(list_clients(broker.addr()))?;
        report.restart_times.push(restarted.elapsed());
        if let Some(missing) = present.iter().find(|n| !clients.contains(*n)) {
            return Err(format!("iteration {iteration}: acknowledged client {missing} missing after restart"));
        }
        if let Some(back) = absent.iter().find(|n| clients.contains(*n)) {
            return Err(format!("iteration {iteration}: acknowledged deletion of {back} undone after restart"));
        }
        report.in_flight_at_kill += in_flight.len();
        report.in_flight_applied += in_flight
            .iter()
            .filter(|op| match op {
                Op::Create(n) => clients.contains(n),
                Op::Delete(n) => !clients.contains(n),
            })
            .count();
        // From now on the in-flight names are known again.
        for op in in_flight {
            if clients.contains(op.name()) {
                present.insert(op.name().to_owned());
            } else {
                absent.insert(op.name().to_owned());
            }
        }
        report.iterations = iteration + 1;
        report.clients_at_end = clients.len();
        progress(iteration, &report);
    }
    let (code, log) = broker.terminate();
    if code != Some(0) {
        return Err(format!("broker did not stop cleanly: {code:?}\n{log}"));
    }
    // After a clean stop the JSON file alone holds everything, in mosquitto's format.
    let file = std::fs::read(dir.join("dynamic-security.json")).map_err(|e| e.to_string())?;
    let (model, _) = dynsec::file::load(&file).map_err(|e| e.to_string())?;
    if let Some(missing) = present.iter().find(|n| !model.clients.contains_key(*n)) {
        return Err(format!("{missing} missing from the final snapshot"));
    }
    Ok(report)
}
