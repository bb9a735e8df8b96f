//! Crash harness for persistence (issue 18): a mixed load of retained QoS 1 publishes and QoS 1
//! messages for an offline persistent session, while the broker (`persistence true`, durable
//! mode, or autosave mode with `--autosave`) is killed with SIGKILL at random moments and restarted on the same files. After every
//! restart: every retained message whose PUBACK arrived is retained with its payload, and every
//! queued message whose PUBACK arrived is delivered to the persistent session when it comes back.
//!
//! Used by the short CI test (`tests/tests/e2e/persistence.rs`) and by the full run:
//!
//! ```text
//! cargo run --release -p dynsec-tests --bin persistence-crash-harness -- --iterations 50
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dynsec_broker::testkit::{self, Connect, Next, RawClient};

use crate::broker::BrokerProcess;
pub use crate::crash::Options;
use crate::crash::Rng;

const CONFIG: &str = "listener 0 127.0.0.1\nallow_anonymous true\nlog_type error\nlog_type warning\nlog_type notice\n\
                      persistence true\n\
                      max_queued_messages 0\n";
const SUBSCRIBER: &str = "crash-persistent-subscriber";

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: usize,
    pub retained_acknowledged: usize,
    /// Retained topics checked after the restarts (each held an acknowledged value).
    pub retained_checked: usize,
    pub queued_acknowledged: usize,
    pub queued_recovered: usize,
    /// Deliveries of a queued message beyond the first (QoS 1 allows them).
    pub queued_duplicates: usize,
    /// Messages sent but unacknowledged when the broker died, and of those how many arrived.
    pub in_flight_at_kill: usize,
    pub in_flight_delivered: usize,
    pub restart_times: Vec<Duration>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut times = self.restart_times.clone();
        times.sort();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        let max = times.last().copied().unwrap_or_default();
        format!(
            "{} SIGKILLs; retained: {} publishes acknowledged, {} topic checks after restarts, all holding an acknowledged value; queued for the offline session: {} acknowledged, \
             {} recovered ({} duplicates); unacknowledged at the kill: {} ({} delivered anyway); restart until \
             listening: median {:.0?}, max {:.0?}",
            self.iterations,
            self.retained_acknowledged,
            self.retained_checked,
            self.queued_acknowledged,
            self.queued_recovered,
            self.queued_duplicates,
            self.in_flight_at_kill,
            self.in_flight_delivered,
            median,
            max
        )
    }
}

fn subscriber_connect() -> Connect {
    let mut connect = Connect::new(4, SUBSCRIBER);
    connect.clean = false;
    connect
}

/// Receives PUBLISHes (acknowledging QoS 1) until the broker stays quiet, bounded.
async fn drain(client: &mut RawClient) -> Vec<testkit::Received> {
    let mut got = Vec::new();
    for _ in 0..100_000 {
        match client.next(Duration::from_millis(700)).await {
            Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
                let publish = frame.publish(client.v5);
                if publish.qos == 1 {
                    client.send(&testkit::ack(testkit::PUBACK, publish.pkid)).await;
                }
                got.push(publish);
            }
            Next::Frame(_) => {}
            Next::Closed | Next::Timeout => break,
        }
    }
    got
}

/// Publishes until the connection dies; returns (retained acknowledged: topic → payload,
/// queued acknowledged, sent but unacknowledged).
async fn publish_until_killed(
    addr: SocketAddr,
    rng: &mut Rng,
    iteration: usize,
) -> Result<(BTreeMap<String, String>, BTreeSet<String>, Vec<String>), String> {
    let mut client = RawClient::connected(addr, &Connect::new(4, "crash-publisher")).await;
    let mut retained = BTreeMap::new();
    let mut queued = BTreeSet::new();
    let mut pkid: u16 = 0;
    for n in 0..1_000_000usize {
        pkid = pkid % 60_000 + 1;
        let payload = format!("i{iteration}-n{n}");
        let retain = rng.below(2) == 0;
        let topic = if retain { format!("r/{}", rng.below(40)) } else { format!("q/{}", rng.below(8)) };
        client.publish(&topic, payload.as_bytes(), 1, retain, pkid).await;
        match client.next(testkit::WAIT).await {
            Next::Frame(frame) if frame.packet_type == testkit::PUBACK && frame.pkid() == pkid => {
                if retain {
                    retained.insert(topic, payload);
                } else {
                    queued.insert(payload);
                }
            }
            Next::Frame(other) => return Err(format!("unexpected {other:?} while the broker was alive")),
            Next::Closed | Next::Timeout => return Ok((retained, queued, vec![payload])),
        }
    }
    Err("the broker was never killed".into())
}

fn kill_later(pid: u32, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // Only the broker this harness started, by its PID.
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    })
}

/// Runs the harness in `dir` (durable mode); `progress` is called after each iteration.
pub fn run(options: &Options, dir: &Path, progress: impl FnMut(usize, &Report)) -> Result<Report, String> {
    run_with(options, dir, "", progress)
}

/// [`run`] with `extra` configuration lines (e.g. `gate_persistence_mode autosave`).
pub fn run_with(
    options: &Options,
    dir: &Path,
    extra: &str,
    mut progress: impl FnMut(usize, &Report),
) -> Result<Report, String> {
    let config = format!("{CONFIG}{extra}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut rng = Rng::new(options.seed);
    let mut report = Report::default();
    // The retained state acknowledged so far (topic → last acknowledged payload, or a later one
    // that was in flight when the broker died).
    let mut retained: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut queued_pending: BTreeSet<String> = BTreeSet::new();
    let mut in_flight_pending: BTreeSet<String> = BTreeSet::new();

    let broker = BrokerProcess::start_in(&options.binary, dir, &config, &[]);
    runtime.block_on(async {
        let mut subscriber = RawClient::connected(broker.addr(), &subscriber_connect()).await;
        subscriber.subscribe(1, &[("q/#", 1)]).await;
        subscriber.send(&testkit::disconnect()).await;
        subscriber.expect_closed().await;
    });
    let mut broker = Some(broker);
    for iteration in 0..options.iterations {
        let running = broker.take().ok_or("no broker")?;
        let delay = Duration::from_millis(rng.below(options.max_kill_delay.as_millis() as u64 + 1));
        let killer = kill_later(running.pid(), delay);
        let (acked_retained, acked_queued, in_flight) =
            runtime.block_on(publish_until_killed(running.addr(), &mut rng, iteration))?;
        killer.join().map_err(|_| "killer thread")?;
        running.kill();
        for (topic, payload) in acked_retained {
            report.retained_acknowledged += 1;
            retained.insert(topic, BTreeSet::from([payload]));
        }
        report.queued_acknowledged += acked_queued.len();
        queued_pending.extend(acked_queued);
        report.in_flight_at_kill += in_flight.len();
        in_flight_pending.extend(in_flight.iter().cloned());
        // An unacknowledged publish may have been applied: its value is correct too.

        let started = Instant::now();
        let restarted = BrokerProcess::start_in(&options.binary, dir, &config, &[]);
        report.restart_times.push(started.elapsed());
        let (retained_now, delivered) = runtime.block_on(async {
            let mut reader = RawClient::connected(restarted.addr(), &Connect::new(4, "crash-reader")).await;
            reader.subscribe(1, &[("r/#", 1)]).await;
            let retained_now = drain(&mut reader).await;
            let mut subscriber = RawClient::connected(restarted.addr(), &subscriber_connect()).await;
            let delivered = drain(&mut subscriber).await;
            subscriber.send(&testkit::disconnect()).await;
            subscriber.expect_closed().await;
            (retained_now, delivered)
        });
        let now: BTreeMap<String, String> =
            retained_now.iter().map(|p| (p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned())).collect();
        for (topic, allowed) in &retained {
            match now.get(topic) {
                Some(payload) if allowed.contains(payload) || in_flight_pending.contains(payload) => {
                    report.retained_checked += 1;
                }
                other => {
                    return Err(format!(
                        "iteration {iteration}: retained {topic} is {other:?}, acknowledged {allowed:?}"
                    ));
                }
            }
        }
        // What the restart shows is the state the next restart must keep at least.
        for (topic, payload) in now {
            retained.insert(topic, BTreeSet::from([payload]));
        }
        let mut seen = BTreeSet::new();
        for publish in delivered {
            let payload = String::from_utf8_lossy(&publish.payload).into_owned();
            if !seen.insert(payload.clone()) {
                report.queued_duplicates += 1;
                continue;
            }
            if queued_pending.remove(&payload) {
                report.queued_recovered += 1;
            } else if in_flight_pending.remove(&payload) {
                report.in_flight_delivered += 1;
            } else {
                report.queued_duplicates += 1; // delivered before the kill, acknowledged, again
            }
        }
        if !queued_pending.is_empty() {
            return Err(format!(
                "iteration {iteration}: {} acknowledged queued messages missing after the restart: {:?}",
                queued_pending.len(),
                queued_pending.iter().take(10).collect::<Vec<_>>()
            ));
        }
        in_flight_pending.clear();
        report.iterations += 1;
        progress(iteration, &report);
        restarted.assert_no_panic();
        broker = Some(restarted);
    }
    Ok(report)
}
