//! P9 persistence (issue 18): what `persistence true` costs, side by side in one run.
//!
//! - Throughput: P1's QoS 1 1→1 flow (the same generator, `flow::run_with`, MQTT 3.1.1 and 5)
//!   on dynsec-broker with persistence off, with `persistence true` (durable mode, the default)
//!   and with `persistence true` + `gate_persistence_mode autosave` (bounded loss like
//!   mosquitto's, reported as its own metric beside mosquitto's figure), on mosquitto 2.0 with
//!   `persistence true`, and on bare rumqttd; each with a clean
//!   subscriber (P1's shape: nothing is stored per message) and with a persistent subscriber
//!   (`clean_session 0` / a v5 Session Expiry Interval: every message is stored, and removed on
//!   its PUBACK). The brokers take turns within every round, the order rotating.
//! - Restart: a broker filled with retained messages (one topic each, 100-byte payloads, QoS 1)
//!   and persistent sessions (one subscription each), shut down with SIGTERM (mosquitto writes
//!   `mosquitto.db` then), and started again on the same files: the time from the start to the
//!   listener, and to the first retained message delivered to a new subscriber.
//!
//! The figures go into the report as rows of scenario P9 (see `report::verdict` for targets).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::brokers::{Broker, Executables, Kind};
use crate::flow::{self, FlowSpec};
use crate::mqtt::{self, Client, Connect, Version};
use crate::progress::ProgressBar;
use crate::report::{LOST, P9, P9_FILE, P9_FIRST_RETAINED, P9_LISTENING, P9_RATE_AUTOSAVE, P9_RATE_OFF, P9_RATE_ON};
use crate::results::Results;
use crate::security_setup::{self as setup, USER_100};

/// The v5 Session Expiry Interval of the persistent subscribers (long enough to outlive a run).
const SESSION_EXPIRY: u32 = 3600;
/// Longest wait for a reply while filling a broker or reading after a restart.
const WAIT: Duration = Duration::from_secs(30);
/// Longest a broker may take to shut down (mosquitto writes its whole database then).
const STOP_LIMIT: Duration = Duration::from_secs(120);
/// QoS 1 messages in flight while filling a broker with retained messages.
const FILL_WINDOW: usize = 100;
/// Persistent sessions made at once while filling.
const FILL_CONCURRENCY: usize = 16;

/// What a P9 run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rounds: usize,
    pub messages: u64,
    pub max_duration: Duration,
    pub retained: usize,
    pub sessions: usize,
    pub restarts: usize,
}

/// What the run needs from the harness.
pub struct Setup<'a> {
    pub exes: &'a Executables,
    /// The dynamic-security file (with `USER_100`, allowed `bench/#`).
    pub security_file: &'a Path,
    pub scratch: &'a Path,
    pub kinds: &'a [Kind],
}

/// One broker configuration of the throughput comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    OursOff,
    OursDurable,
    OursAutosave,
    Mosquitto,
    Rumqttd,
}

impl Variant {
    fn kind(self) -> Kind {
        match self {
            Variant::OursOff | Variant::OursDurable | Variant::OursAutosave => Kind::Ours,
            Variant::Mosquitto => Kind::Mosquitto,
            Variant::Rumqttd => Kind::Rumqttd,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::OursOff => "dynsec-broker, persistence off",
            Variant::OursDurable => "dynsec-broker, persistence true (durable)",
            Variant::OursAutosave => "dynsec-broker, persistence true (autosave)",
            Variant::Mosquitto => "mosquitto, persistence true",
            Variant::Rumqttd => "rumqttd",
        }
    }

    /// The metrics its rate is reported under: persistence off (ours off, bare rumqttd), on
    /// (durable), on in autosave mode; mosquitto's figure goes beside both of ours.
    fn metrics(self) -> &'static [&'static str] {
        match self {
            Variant::OursOff | Variant::Rumqttd => &[P9_RATE_OFF],
            Variant::OursDurable => &[P9_RATE_ON],
            Variant::OursAutosave => &[P9_RATE_AUTOSAVE],
            Variant::Mosquitto => &[P9_RATE_ON, P9_RATE_AUTOSAVE],
        }
    }
}

/// The executables with the configuration lines that turn persistence on.
fn persistent(exes: &Executables) -> Executables {
    let mut exes = exes.clone();
    // The bench brokers run in their own directory, the default persistence_location. The
    // queue bound as mosquitto's in the bench (its default of 1000 would stop storing a
    // backlog, not measure it).
    exes.ours_extra_config.extend(["persistence true".to_owned(), "max_queued_messages 1000000".to_owned()]);
    exes.mosquitto_extra_config.extend(["persistence true".to_owned(), "autosave_interval 1800".to_owned()]);
    exes
}

fn start(setup: &Setup, variant: Variant, tag: &str) -> Result<Broker, String> {
    let exes = match variant {
        Variant::OursDurable | Variant::Mosquitto => persistent(setup.exes),
        Variant::OursAutosave => {
            // mosquitto's autosave_interval in the bench (`persistent`), the same meaning here.
            let mut exes = persistent(setup.exes);
            exes.ours_extra_config
                .extend(["gate_persistence_mode autosave".to_owned(), "autosave_interval 1800".to_owned()]);
            exes
        }
        Variant::OursOff | Variant::Rumqttd => setup.exes.clone(),
    };
    let kind = variant.kind();
    let dir = setup.scratch.join(format!("p9-{tag}-{variant:?}"));
    Broker::start(kind, &exes, &dir, kind.has_dynsec().then_some(setup.security_file))
}

/// The case label of a throughput row.
fn case(version: Version, persistent_subscriber: bool) -> String {
    let subscriber = if persistent_subscriber { "persistent subscriber" } else { "clean subscriber" };
    format!("1→1 QoS 1 v{}, {subscriber}", version.label())
}

/// Runs P9: throughput rounds, then the restart measurement.
pub fn run(setup: &Setup, plan: &Plan, results: &mut Results, progress: &mut ProgressBar) {
    throughput(setup, plan, results, progress);
    for kind in [Kind::Ours, Kind::Mosquitto] {
        if setup.kinds.contains(&kind) {
            restart(setup, plan, kind, results, progress);
        }
    }
}

/// Steps [`run`] takes (for the progress bar).
pub fn steps(plan: &Plan, kinds: &[Kind]) -> usize {
    let variants = variants(kinds).len();
    plan.rounds * 4 * variants + [Kind::Ours, Kind::Mosquitto].iter().filter(|k| kinds.contains(k)).count()
}

fn variants(kinds: &[Kind]) -> Vec<Variant> {
    [Variant::OursOff, Variant::OursDurable, Variant::OursAutosave, Variant::Mosquitto, Variant::Rumqttd]
        .into_iter()
        .filter(|v| kinds.contains(&v.kind()))
        .collect()
}

fn throughput(setup: &Setup, plan: &Plan, results: &mut Results, progress: &mut ProgressBar) {
    let variants = variants(setup.kinds);
    let mut brokers: Vec<(Variant, Broker)> = Vec::new();
    for variant in &variants {
        match start(setup, *variant, "flow") {
            Ok(broker) => brokers.push((*variant, broker)),
            Err(e) => note(results, progress, format!("{P9}: {}: {e}", variant.label())),
        }
    }
    let mut run_id = 0usize;
    for round in 0..plan.rounds {
        for persistent_subscriber in [false, true] {
            for version in [Version::V311, Version::V5] {
                let case = case(version, persistent_subscriber);
                for offset in 0..brokers.len() {
                    let index = (offset + round) % brokers.len();
                    for (_, broker) in brokers.iter() {
                        broker.settle(Duration::from_secs(3));
                    }
                    let (variant, broker) = &mut brokers[index];
                    progress.start(format!("{P9}: {case} on {} (round {})", variant.label(), round + 1));
                    run_id += 1;
                    let spec = FlowSpec {
                        addr: broker.addr(version),
                        version,
                        qos: 1,
                        subscribers: 1,
                        messages: plan.messages,
                        max_duration: plan.max_duration,
                        payload: 100,
                        topic: format!("bench/p9/r{run_id}"),
                        credentials: setup::credentials(broker.kind.has_dynsec(), USER_100),
                        client_prefix: format!("p9-{run_id}"),
                        drain_limit: flow::DRAIN_LIMIT,
                    };
                    let session = persistent_subscriber.then_some(SESSION_EXPIRY);
                    match flow::run_with(&spec, session) {
                        Ok(r) => {
                            for metric in variant.metrics() {
                                results.add(P9, &case, broker.kind, metric, "deliveries/s", round, r.rate());
                            }
                            if r.lost > 0 || r.duplicates > 0 {
                                results.notes.push(format!(
                                    "{P9} {case} on {}, round {}: {} not delivered within 1.5 s, {} duplicates",
                                    variant.label(),
                                    round + 1,
                                    r.lost,
                                    r.duplicates
                                ));
                            }
                            if *variant == Variant::OursDurable {
                                results.add(P9, &case, Kind::Ours, LOST, "messages", round, r.lost as f64);
                            }
                        }
                        Err(e) => {
                            let line = format!("{P9} {case} on {} failed: {e}", variant.label());
                            note(results, progress, line);
                        }
                    }
                    if !broker.alive() {
                        let line = format!("{P9}: {} died: {}", variant.label(), broker.log_tail());
                        note(results, progress, line);
                    }
                    progress.finish_step();
                }
            }
        }
    }
}

fn note(results: &mut Results, progress: &mut ProgressBar, line: String) {
    progress.note(&line);
    results.notes.push(line);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Fills a fresh `kind` (with persistence on) with `plan.retained` retained messages and
/// `plan.sessions` persistent sessions, stops it, and starts it again `plan.restarts` times.
fn restart(setup: &Setup, plan: &Plan, kind: Kind, results: &mut Results, progress: &mut ProgressBar) {
    let case = format!(
        "restart with {} retained messages and {} persistent sessions",
        crate::report::number(plan.retained as f64),
        crate::report::number(plan.sessions as f64)
    );
    progress.start(format!("{P9}: {case} on {kind}"));
    let mut exes = persistent(setup.exes);
    // Filling 100,000 new topics at once is what the new-topic budget (a fleet's protection)
    // refuses: it would drop most retained messages before they are stored.
    exes.ours_extra_config.push("gate_new_topics_per_second 0".to_owned());
    let outcome = (|| -> Result<(), String> {
        let dir = setup.scratch.join(format!("p9-restart-{}", kind.label()));
        let mut broker = Broker::start(kind, &exes, &dir, Some(setup.security_file))?;
        let dir = broker.dir.clone();
        let credentials = setup::credentials(true, USER_100);
        let filled = Instant::now();
        runtime().block_on(fill(broker.addr(Version::V311), plan, credentials.as_ref(), progress))?;
        let fill_time = filled.elapsed();
        if !broker.stop(STOP_LIMIT) {
            return Err(format!("did not stop within {STOP_LIMIT:?}: {}", broker.log_tail()));
        }
        drop(broker);
        let size = persistence_file(kind, &dir).and_then(|f| std::fs::metadata(f).ok()).map_or(0, |m| m.len());
        results.add(P9, &case, kind, P9_FILE, "MB", 0, size as f64 / 1e6);
        results.notes.push(format!(
            "{P9} {case} on {kind}: filled in {:.1} s through MQTT, then stopped with SIGTERM",
            fill_time.as_secs_f64()
        ));
        for round in 0..plan.restarts {
            progress.detail(&format!("restart {}/{}", round + 1, plan.restarts));
            let started = Instant::now();
            let mut broker = Broker::start_again(kind, &exes, &dir)?;
            let listening = started.elapsed();
            let topic = format!("bench/p9/retained/{}", plan.retained / 2);
            let first = runtime().block_on(first_retained(broker.addr(Version::V311), &topic, credentials.as_ref()));
            let first = first.map(|at| at.duration_since(started));
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            results.add(P9, &case, kind, P9_LISTENING, "ms", round, ms(listening));
            match first {
                Ok(first) => results.add(P9, &case, kind, P9_FIRST_RETAINED, "ms", round, ms(first)),
                Err(e) => results.notes.push(format!("{P9} {case} on {kind}: no retained message: {e}")),
            }
            broker.stop(STOP_LIMIT);
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        note(results, progress, format!("{P9} {case} on {kind} failed: {e}"));
    }
    progress.finish_step();
}

fn persistence_file(kind: Kind, dir: &Path) -> Option<PathBuf> {
    match kind {
        Kind::Ours => Some(dir.join("dynsec-broker.redb")),
        Kind::Mosquitto => Some(dir.join("mosquitto.db")),
        Kind::Rumqttd => None,
    }
}

/// Publishes the retained messages (QoS 1, a window of `FILL_WINDOW`), then makes the
/// persistent sessions (connect with `clean_session 0`, subscribe, disconnect).
async fn fill(
    addr: SocketAddr,
    plan: &Plan,
    credentials: Option<&(String, String)>,
    progress: &mut ProgressBar,
) -> Result<(), String> {
    let connect = Connect::with_credentials(Version::V311, "p9-filler", credentials);
    let mut client = Client::connect(addr, &connect, WAIT).await.map_err(|e| format!("filler: {e}"))?;
    let payload = [b'r'; 100];
    let (mut sent, mut acked) = (0usize, 0usize);
    let mut buf = BytesMut::new();
    while acked < plan.retained {
        buf.clear();
        while sent < plan.retained && sent - acked < FILL_WINDOW {
            let topic = format!("bench/p9/retained/{sent}");
            let pkid = (sent % 60_000 + 1) as u16;
            mqtt::publish_with(&mut buf, Version::V311, topic.as_bytes(), &payload, 1, pkid, true);
            sent += 1;
        }
        if !buf.is_empty() {
            client.send(&buf).await.map_err(|e| format!("filler: {e}"))?;
        }
        let frame = client.next(WAIT).await.map_err(|e| format!("filler after {acked} PUBACKs: {e}"))?;
        if frame.packet_type == mqtt::PUBACK {
            acked += 1;
            if acked % 10_000 == 0 {
                progress.detail(&format!("{acked} retained messages"));
            }
        }
    }
    buf.clear();
    mqtt::disconnect(&mut buf);
    let _ = client.stream.write_all(&buf).await;
    progress.detail("persistent sessions");
    let made = futures_util::stream::iter(0..plan.sessions)
        .map(|i| async move {
            let id = format!("p9-device-{i}");
            let connect = Connect::with_credentials(Version::V311, &id, credentials);
            let mut device = Client::connect_persistent(addr, &connect, SESSION_EXPIRY, WAIT)
                .await
                .map_err(|e| format!("session {i}: {e}"))?;
            let code = device.subscribe(&format!("bench/p9/device/{i}/cmd"), 1, WAIT).await;
            match code {
                Ok(code) if code <= 2 => {}
                Ok(code) => return Err(format!("session {i}: SUBACK {code:#x}")),
                Err(e) => return Err(format!("session {i}: {e}")),
            }
            let mut bye = BytesMut::new();
            mqtt::disconnect(&mut bye);
            let _ = device.stream.write_all(&bye).await;
            Ok(())
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect::<Vec<Result<(), String>>>()
        .await;
    made.into_iter().collect()
}

/// Subscribes to `topic` and waits for its retained message; returns when it arrived.
async fn first_retained(
    addr: SocketAddr,
    topic: &str,
    credentials: Option<&(String, String)>,
) -> Result<Instant, String> {
    let connect = Connect::with_credentials(Version::V311, "p9-reader", credentials);
    let mut client = Client::connect(addr, &connect, WAIT).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    mqtt::subscribe(&mut buf, Version::V311, 1, topic, 1);
    client.send(&buf).await.map_err(|e| e.to_string())?;
    loop {
        let frame = client.next(WAIT).await.map_err(|e| e.to_string())?;
        if frame.packet_type == mqtt::PUBLISH {
            return Ok(Instant::now());
        }
    }
}
