//! `dynsec-bench [--quick] [--out DIR]`: runs every scenario of issue 6 on `dynsec-broker`, bare
//! rumqttd and mosquitto 2.0 + dynsec, prints the table of medians and ratios, and writes
//! `benchmarks.csv`, `benchmarks-table.md`, `benchmarks.svg` (throughput) and
//! `benchmarks-provisioning.svg` into DIR
//! (default `bench-results`; `--out docs` refreshes the files `docs/benchmarks.md` shows).
//! `--only P1M` (never part of a full run): P1 with dynsec-broker's `/metrics` scraped (issue 19).
//!
//! Order of a run (each broker in turn inside every step, repeated for several rounds, the
//! brokers' order rotating from round to round):
//! P1 and P2 (throughput) and P4 (connect storm) on one long-lived set of brokers; then fresh
//! brokers for P3 (provisioning), for P5 + P6's idle connections, and for P6's 4 M messages, so
//! that no scenario inherits another's state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dynsec_bench::brokers::{Broker, Executables, Kind};
use dynsec_bench::flow::{self, FlowSpec};
use dynsec_bench::mqtt::Version;
use dynsec_bench::progress::ProgressBar;
use dynsec_bench::report::{self, *};
use dynsec_bench::results::{Curve, Results};
use dynsec_bench::security_setup::{self as setup, USER_10K, USER_100};
use dynsec_bench::{chart, cluster, fleet, machine, persistence, provisioning, revocation, scrape, storm};

/// Longest wait for a broker to finish an earlier run's backlog before the next run; a broker
/// still busy then is restarted (mosquitto with 10,000 ACLs needs a minute for the messages of
/// one QoS 0 run, and would otherwise share the cores with the next measurements).
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// Sizes and budgets of a run.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    /// Rounds of P1 and P2.
    throughput_rounds: usize,
    /// Rounds of P4.
    rounds: usize,
    flow_duration: Duration,
    messages_single: u64,
    messages_fanout: u64,
    fanout: usize,
    provisioning_total: usize,
    provisioning_batch: usize,
    mosquitto_provisioning_budget: Duration,
    storm_clients: usize,
    idle_clients: usize,
    revocation_reps: usize,
    memory_messages: u64,
    memory_budget: Duration,
    /// mosquitto's share: it passes ~30,000 QoS 1 msg/s, so 4 M messages would take minutes.
    mosquitto_memory_budget: Duration,
    /// Rounds of P7, and its bursts 1 → 1 and 1 → `fanout`.
    burst_rounds: usize,
    burst_single: u64,
    burst_fanout: u64,
    /// P8: devices, how long commands are sent, and their period.
    fleet_devices: usize,
    fleet_duration: Duration,
    fleet_period: Duration,
    /// P8: the QoS variants run (0 and 1 unless `--fleet-qos` names one).
    fleet_qos: Vec<u8>,
    /// C1–C3 (issue 20): run only when named with `--only`.
    cluster: cluster::ClusterPlan,
    /// P9 (persistence).
    persistence: persistence::Plan,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            // Single P1/P2 rounds move by ±20–40 % on this 2-core machine: six rounds give
            // medians that move by less between runs (seven took the run past 10 minutes);
            // P4's spread is smaller.
            throughput_rounds: 6,
            rounds: 5,
            flow_duration: Duration::from_millis(800),
            // Sized so that dynsec-broker and rumqttd deliver everything within the drain
            // limit (what is still queued then counts as not delivered).
            messages_single: 150_000,
            messages_fanout: 3_000,
            fanout: 100,
            provisioning_total: 100_000,
            provisioning_batch: 1000,
            mosquitto_provisioning_budget: Duration::from_secs(10),
            storm_clients: 2000,
            idle_clients: 10_000,
            revocation_reps: 5,
            memory_messages: 4_000_000,
            memory_budget: Duration::from_secs(90),
            mosquitto_memory_budget: Duration::from_secs(10),
            burst_rounds: 3,
            burst_single: 100_000,
            burst_fanout: 10_000,
            fleet_devices: 50_000,
            fleet_duration: Duration::from_secs(60),
            fleet_period: Duration::from_secs(10),
            fleet_qos: vec![0, 1],
            cluster: cluster::ClusterPlan {
                rounds: 6,
                messages: 150_000,
                flow_duration: Duration::from_millis(800),
                changes: 200,
                provisioning_total: 100_000,
                provisioning_batch: 1000,
            },
            persistence: persistence::Plan {
                rounds: 5,
                messages: 150_000,
                max_duration: Duration::from_millis(800),
                retained: 100_000,
                sessions: 10_000,
                restarts: 3,
            },
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            throughput_rounds: 1,
            rounds: 1,
            flow_duration: Duration::from_millis(300),
            messages_single: 100_000,
            messages_fanout: 3_000,
            fanout: 100,
            provisioning_total: 10_000,
            provisioning_batch: 1000,
            mosquitto_provisioning_budget: Duration::from_secs(4),
            storm_clients: 200,
            idle_clients: 1000,
            revocation_reps: 2,
            memory_messages: 200_000,
            memory_budget: Duration::from_secs(5),
            mosquitto_memory_budget: Duration::from_secs(3),
            burst_rounds: 1,
            burst_single: 100_000,
            burst_fanout: 2_000,
            fleet_devices: 2_000,
            fleet_duration: Duration::from_secs(20),
            fleet_period: Duration::from_secs(10),
            fleet_qos: vec![0, 1],
            cluster: cluster::ClusterPlan {
                rounds: 1,
                messages: 100_000,
                flow_duration: Duration::from_millis(300),
                changes: 40,
                provisioning_total: 10_000,
                provisioning_batch: 1000,
            },
            persistence: persistence::Plan {
                rounds: 1,
                messages: 100_000,
                max_duration: Duration::from_millis(300),
                retained: 10_000,
                sessions: 1_000,
                restarts: 1,
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FlowCase {
    subscribers: usize,
    qos: u8,
    version: Version,
}

impl FlowCase {
    fn label(&self) -> String {
        format!("1→{} QoS {} v{}", self.subscribers, self.qos, self.version.label())
    }
}

fn flow_cases(plan: &Plan) -> Vec<FlowCase> {
    let mut cases = Vec::new();
    for subscribers in [1, plan.fanout] {
        for qos in [0, 1] {
            for version in [Version::V311, Version::V5] {
                cases.push(FlowCase { subscribers, qos, version });
            }
        }
    }
    cases
}

struct Run {
    plan: Plan,
    exes: Executables,
    kinds: Vec<Kind>,
    scratch: tempfile::TempDir,
    full_file: PathBuf,
    minimal_file: PathBuf,
    results: Results,
    progress: ProgressBar,
    run_id: usize,
    /// Brokers restarted because they were still busy after `SETTLE_LIMIT`.
    restarts: BTreeMap<Kind, usize>,
}

impl Run {
    fn dir(&mut self, tag: &str) -> PathBuf {
        self.run_id += 1;
        self.scratch.path().join(format!("{tag}-{}", self.run_id))
    }

    fn start(&mut self, kind: Kind, tag: &str, minimal: bool) -> Result<Broker, String> {
        let dir = self.dir(&format!("{}-{tag}", kind.label()));
        let file = if minimal { &self.minimal_file } else { &self.full_file };
        Broker::start(kind, &self.exes, &dir, kind.has_dynsec().then_some(file.as_path()))
    }

    /// Waits until every broker is idle, not only the next one measured: they share the cores,
    /// and mosquitto can still be working through the backlog of its previous run. A broker
    /// still busy after `SETTLE_LIMIT` is restarted.
    fn settle_all(&mut self, brokers: &mut [Broker]) {
        for broker in brokers.iter_mut() {
            if broker.settle(SETTLE_LIMIT) {
                continue;
            }
            *self.restarts.entry(broker.kind).or_default() += 1;
            if let Err(e) = broker.restart(&self.exes) {
                self.note(format!("{}: {e}", broker.kind));
            }
        }
    }

    fn note(&mut self, line: String) {
        self.progress.note(&line);
        self.results.notes.push(line);
    }

    /// P1 and P2: every case on every broker in turn, for each round. P2 runs next to P1 for the
    /// same case, so that its ratio to P1 compares neighbouring measurements, not two halves of
    /// the run (the machine's speed drifts more than ACLs cost).
    fn throughput(&mut self, brokers: &mut [Broker]) {
        let cases = flow_cases(&self.plan);
        for round in 0..self.plan.throughput_rounds {
            for case in &cases {
                // The order rotates every round (brokers) and alternates (P1/P2), so that no
                // broker or scenario always runs first after a settle or right after a given one.
                let scenarios = [(P1, USER_100), (P2, USER_10K)];
                let scenarios = if round % 2 == 0 { scenarios } else { [scenarios[1], scenarios[0]] };
                for (scenario, user) in scenarios {
                    for offset in 0..brokers.len() {
                        let index = (offset + round) % brokers.len();
                        // rumqttd has no ACLs: P2 would repeat P1 for it.
                        if scenario == P2 && brokers[index].kind == Kind::Rumqttd {
                            continue;
                        }
                        self.settle_all(brokers);
                        let broker = &mut brokers[index];
                        let label = case.label();
                        self.progress.start(format!("{scenario}: {label} on {} (round {})", broker.kind, round + 1));
                        self.run_id += 1;
                        let spec = FlowSpec {
                            addr: broker.addr(case.version),
                            version: case.version,
                            qos: case.qos,
                            subscribers: case.subscribers,
                            messages: if case.subscribers == 1 {
                                self.plan.messages_single
                            } else {
                                self.plan.messages_fanout
                            },
                            max_duration: self.plan.flow_duration,
                            payload: 100,
                            // A topic per run: a broker still holding an earlier run's
                            // backlog must not deliver it to this run's subscribers.
                            topic: format!("bench/load/r{}", self.run_id),
                            credentials: setup::credentials(broker.kind.has_dynsec(), user),
                            client_prefix: format!("r{}", self.run_id),
                            drain_limit: flow::DRAIN_LIMIT,
                        };
                        match flow::run(&spec) {
                            Ok(r) => {
                                self.results.add(scenario, &label, broker.kind, RATE, "deliveries/s", round, r.rate());
                                self.results.add(scenario, &label, broker.kind, LOST, "messages", round, r.lost as f64);
                                if r.duplicates > 0 {
                                    self.note(format!(
                                        "{scenario} {label} {}: {} duplicate deliveries",
                                        broker.kind, r.duplicates
                                    ));
                                }
                            }
                            Err(e) => self.note(format!("{scenario} {label} on {} failed: {e}", broker.kind)),
                        }
                        if !broker.alive() {
                            self.note(format!("{} died: {}", broker.kind, broker.log_tail()));
                        }
                        self.progress.finish_step();
                    }
                }
            }
        }
    }

    /// P1M: P1's cases on a fresh dynsec-broker whose `/metrics` is scraped (see `scrape.rs`).
    fn metrics_scrape(&mut self) {
        let cases = flow_cases(&self.plan)
            .into_iter()
            .map(|c| {
                let messages = if c.subscribers == 1 { self.plan.messages_single } else { self.plan.messages_fanout };
                (c.label(), c.version, c.qos, c.subscribers, messages)
            })
            .collect();
        let plan = scrape::Plan {
            rounds: self.plan.throughput_rounds,
            cases,
            flow_duration: self.plan.flow_duration,
            credentials: (USER_100.to_owned(), setup::password_of(USER_100)),
            scraper: (setup::ADMIN_USER.to_owned(), setup::ADMIN_PASSWORD.to_owned()),
        };
        let dir = self.dir("dynsec-broker-metrics");
        if let Err(e) = scrape::run(&plan, &self.exes, &dir, &self.full_file, &mut self.results, &mut self.progress) {
            self.note(format!("{P1M}: {e}"));
        }
    }

    /// P4: connect storms, each broker in turn, distinct users per round.
    fn connect_storm(&mut self, brokers: &mut [Broker]) {
        for round in 0..self.plan.rounds {
            for offset in 0..brokers.len() {
                let index = (offset + round) % brokers.len();
                let kind = brokers[index].kind;
                self.progress.start(format!(
                    "{P4}: {} clients on {kind} (round {})",
                    self.plan.storm_clients,
                    round + 1
                ));
                let case = format!("{} clients, PBKDF2-SHA512 ×{}", self.plan.storm_clients, setup::ITERATIONS);
                self.settle_all(brokers);
                let broker = &brokers[index];
                match storm::run(
                    broker.addr(Version::V311),
                    Version::V311,
                    round,
                    self.plan.storm_clients,
                    kind.has_dynsec(),
                ) {
                    Ok(r) => {
                        self.results.add(P4, &case, kind, CONNECTS, "connects/s", round, r.connects_per_sec());
                        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                        self.results.add(P4, &case, kind, "steady p50 latency", "ms", round, ms(r.percentile(0.5)));
                        self.results.add(P4, &case, kind, P99, "ms", round, ms(r.percentile(0.99)));
                        self.results.add(
                            P4,
                            &case,
                            kind,
                            "steady messages lost",
                            "messages",
                            round,
                            r.steady_lost as f64,
                        );
                        if r.refused > 0 {
                            self.note(format!("{P4} {kind}: {} of the storm's connections failed", r.refused));
                        }
                    }
                    Err(e) => self.note(format!("{P4} on {kind} failed: {e}")),
                }
                self.progress.finish_step();
            }
        }
    }

    /// P3: provisioning on fresh brokers with only the admin client.
    fn provisioning(&mut self) {
        let plan = self.plan.clone();
        let mut runs = vec![(Kind::Ours, false), (Kind::Ours, true)];
        if self.kinds.contains(&Kind::Mosquitto) {
            runs.push((Kind::Mosquitto, false));
        }
        for (kind, with_passwords) in runs {
            let case = if with_passwords { "with passwords" } else { "without passwords" };
            let case = format!("{case}, {} clients in batches of {}", plan.provisioning_total, plan.provisioning_batch);
            self.progress.start(format!("{P3}: {case} on {kind}"));
            // The floor is measured right before the run it is compared with (same load).
            let floor = with_passwords.then(|| {
                self.progress.detail("measuring the hash-cost floor");
                let per_hash = provisioning::hash_cost_on_all_cores();
                let floor = per_hash * plan.provisioning_total as u32;
                self.results.notes.push(format!(
                    "P3: PBKDF2-SHA512 ({} iterations) on all {} cores at once: {:.3} ms per hash, so the floor \
                     for {} passwords is {:.2} s (load average then: {})",
                    setup::ITERATIONS,
                    machine::cores(),
                    per_hash.as_secs_f64() * 1000.0,
                    plan.provisioning_total,
                    floor.as_secs_f64(),
                    machine::load_text()
                ));
                floor
            });
            let budget =
                if kind == Kind::Mosquitto { plan.mosquitto_provisioning_budget } else { Duration::from_secs(600) };
            let outcome = self.start(kind, "provisioning", true).and_then(|broker| {
                let progress = &mut self.progress;
                let mut on_batch = |done: usize, of: usize| progress.detail(&format!("batch {done}/{of}"));
                let addr = broker.addr(Version::V311);
                let run = runtime().block_on(provisioning::provision(
                    addr,
                    plan.provisioning_total,
                    plan.provisioning_batch,
                    with_passwords,
                    budget,
                    &mut on_batch,
                ));
                drop(broker);
                run
            });
            match outcome {
                Ok(run) => {
                    let (start, end) = run.start_end();
                    self.results.add(P3, &case, kind, TOTAL, "s", 0, run.total.as_secs_f64());
                    self.results.add(P3, &case, kind, "clients created", "clients", 0, run.clients() as f64);
                    self.results.add(
                        P3,
                        &case,
                        kind,
                        "first batch (mean of first 10 %)",
                        "ms",
                        0,
                        start.as_secs_f64() * 1e3,
                    );
                    self.results.add(
                        P3,
                        &case,
                        kind,
                        "last batch (mean of last 10 %)",
                        "ms",
                        0,
                        end.as_secs_f64() * 1e3,
                    );
                    self.results.add(
                        P3,
                        &case,
                        kind,
                        END_START,
                        "×",
                        0,
                        end.as_secs_f64() / start.as_secs_f64().max(1e-9),
                    );
                    if with_passwords {
                        self.results.add(
                            P3,
                            &case,
                            kind,
                            FLOOR_RATIO,
                            "×",
                            0,
                            run.total.as_secs_f64() / floor.unwrap_or(Duration::from_secs(1)).as_secs_f64(),
                        );
                    }
                    if run.errors > 0 {
                        self.note(format!("{P3} {case} on {kind}: {} commands answered with an error", run.errors));
                    }
                    if run.stopped_by_budget {
                        self.note(format!(
                            "{P3} {case} on {kind}: stopped by the {:?} time budget after {} clients",
                            budget,
                            run.clients()
                        ));
                    }
                    let mut clients = 0.0;
                    let points = run
                        .batch_times
                        .iter()
                        .map(|t| {
                            clients += run.batch_size as f64;
                            (clients, t.as_secs_f64() * 1e3)
                        })
                        .collect();
                    let name =
                        format!("{kind} {}", if with_passwords { "with passwords" } else { "without passwords" });
                    self.results.curves.push(Curve { name, points });
                }
                Err(e) => self.note(format!("{P3} {case} on {kind} failed: {e}")),
            }
            self.progress.finish_step();
        }
    }

    /// P6 (idle connections) and P5 (revocation) on fresh brokers.
    fn idle_and_revocation(&mut self) {
        let plan = self.plan.clone();
        for kind in self.kinds.clone() {
            self.progress.start(format!("{P6}/{P5}: {} idle connections on {kind}", plan.idle_clients));
            let broker = match self.start(kind, "idle", false) {
                Ok(b) => b,
                Err(e) => {
                    self.note(format!("{P6} {kind}: {e}"));
                    self.progress.finish_step();
                    continue;
                }
            };
            // Warm up: one connection and back, so that the baseline includes lazily built state.
            let _ = revocation::connect_idle(broker.addr(Version::V311), Version::V311, 1, kind.has_dynsec());
            std::thread::sleep(Duration::from_millis(500));
            let before = broker.rss().unwrap_or(0);
            match revocation::connect_idle(
                broker.addr(Version::V311),
                Version::V311,
                plan.idle_clients,
                kind.has_dynsec(),
            ) {
                Ok(idle) => {
                    std::thread::sleep(Duration::from_secs(1));
                    let after = broker.rss().unwrap_or(0);
                    let connected = idle.sockets.len();
                    let case = format!("{} idle connections", plan.idle_clients);
                    let per = after.saturating_sub(before) as f64 / connected.max(1) as f64 / 1024.0;
                    self.results.add(P6, &case, kind, PER_CONNECTION, "KB", 0, per);
                    self.results.add(P6, &case, kind, "RSS with idle connections", "MB", 0, after as f64 / 1048576.0);
                    if idle.refused > 0 {
                        self.note(format!("{P6} {kind}: {} idle connections failed", idle.refused));
                    }
                    if kind.has_dynsec() {
                        self.progress.detail("revocation");
                        let case = format!("with {} idle clients connected", plan.idle_clients);
                        match revocation::run(broker.addr(Version::V5), plan.revocation_reps) {
                            Ok(r) => {
                                for (round, d) in r.acl_removal.iter().enumerate() {
                                    self.results.add(
                                        P5,
                                        &format!("removeRoleACL, {case}"),
                                        kind,
                                        REFUSED,
                                        "ms",
                                        round,
                                        d.as_secs_f64() * 1e3,
                                    );
                                }
                                for (round, d) in r.disable.iter().enumerate() {
                                    self.results.add(
                                        P5,
                                        &format!("disableClient, {case}"),
                                        kind,
                                        DISCONNECTED,
                                        "ms",
                                        round,
                                        d.as_secs_f64() * 1e3,
                                    );
                                }
                            }
                            Err(e) => self.note(format!("{P5} on {kind} failed: {e}")),
                        }
                    }
                    drop(idle);
                }
                Err(e) => self.note(format!("{P6} idle connections on {kind} failed: {e}")),
            }
            drop(broker);
            self.progress.finish_step();
        }
    }

    /// P6: resident memory after `memory_messages` QoS 1 messages 1 → 1, on fresh brokers.
    fn memory_after_messages(&mut self) {
        let plan = self.plan.clone();
        for kind in self.kinds.clone() {
            self.progress.start(format!("{P6}: {} QoS 1 messages through {kind}", plan.memory_messages));
            let broker = match self.start(kind, "memory", false) {
                Ok(b) => b,
                Err(e) => {
                    self.note(format!("{P6} {kind}: {e}"));
                    self.progress.finish_step();
                    continue;
                }
            };
            self.run_id += 1;
            let spec = FlowSpec {
                addr: broker.addr(Version::V311),
                version: Version::V311,
                qos: 1,
                subscribers: 1,
                messages: plan.memory_messages,
                max_duration: if kind == Kind::Mosquitto { plan.mosquitto_memory_budget } else { plan.memory_budget },
                payload: 100,
                topic: "bench/memory".into(),
                credentials: setup::credentials(kind.has_dynsec(), USER_100),
                client_prefix: format!("m{}", self.run_id),
                drain_limit: flow::DRAIN_LIMIT,
            };
            let case = format!("{} messages 1→1 QoS 1", number(plan.memory_messages as f64));
            match flow::run(&spec) {
                Ok(r) => {
                    std::thread::sleep(Duration::from_secs(1));
                    let rss = broker.rss().unwrap_or(0) as f64 / 1048576.0;
                    self.results.add(P6, &case, kind, RSS_AFTER, "MB", 0, rss);
                    self.results.add(P6, &case, kind, "messages passed", "messages", 0, r.received as f64);
                    self.results.add(P6, &case, kind, LOST, "messages", 0, r.lost as f64);
                    if r.sent < plan.memory_messages {
                        self.note(format!(
                            "{P6} {kind}: the {:?} budget ran out after {} messages (of {})",
                            spec.max_duration,
                            number(r.sent as f64),
                            number(plan.memory_messages as f64)
                        ));
                    }
                }
                Err(e) => self.note(format!("{P6} memory flow on {kind} failed: {e}")),
            }
            drop(broker);
            self.progress.finish_step();
        }
    }

    /// P7: QoS 0 bursts (1 → 1 and 1 → fan-out), everything the publisher can write at once;
    /// lost messages and the delivered rate, each broker in turn per round.
    fn qos0_bursts(&mut self, brokers: &mut [Broker]) {
        let plan = self.plan.clone();
        for round in 0..plan.burst_rounds {
            for (subscribers, messages) in [(1, plan.burst_single), (plan.fanout, plan.burst_fanout)] {
                let case = format!("QoS 0 burst 1→{subscribers}, {} × 100 B", number(messages as f64));
                for offset in 0..brokers.len() {
                    let index = (offset + round) % brokers.len();
                    self.settle_all(brokers);
                    let broker = &mut brokers[index];
                    let kind = broker.kind;
                    self.progress.start(format!("{P7}: {case} on {kind} (round {})", round + 1));
                    self.run_id += 1;
                    let spec = FlowSpec {
                        addr: broker.addr(Version::V311),
                        version: Version::V311,
                        qos: 0,
                        subscribers,
                        messages,
                        max_duration: Duration::from_secs(60),
                        payload: 100,
                        topic: format!("bench/burst/r{}", self.run_id),
                        credentials: setup::credentials(kind.has_dynsec(), USER_100),
                        client_prefix: format!("b{}", self.run_id),
                        // A broker that queued the burst gets the time to deliver it.
                        drain_limit: Duration::from_secs(30),
                    };
                    match flow::run(&spec) {
                        Ok(r) => {
                            let wanted = (r.sent * subscribers as u64).max(1) as f64;
                            self.results.add(P7, &case, kind, RATE, "deliveries/s", round, r.rate());
                            self.results.add(P7, &case, kind, LOST_PERCENT, "%", round, r.lost as f64 / wanted * 100.0);
                        }
                        Err(e) => self.note(format!("{P7} {case} on {kind} failed: {e}")),
                    }
                    if !broker.alive() {
                        self.note(format!("{kind} died: {}", broker.log_tail()));
                    }
                    self.progress.finish_step();
                }
            }
        }
    }

    /// P8: a device fleet on a fresh broker per variant (QoS 0, QoS 1): resident memory and
    /// commands delivered within their period.
    fn fleet(&mut self) {
        let plan = self.plan.clone();
        for qos in plan.fleet_qos.clone() {
            for kind in self.kinds.clone() {
                let case = format!(
                    "{} devices, QoS {qos}, a command and a telemetry message per device every {} s, {} s",
                    number(plan.fleet_devices as f64),
                    plan.fleet_period.as_secs(),
                    plan.fleet_duration.as_secs()
                );
                self.progress.start(format!("{P8}: {case} on {kind}"));
                let broker = match self.start(kind, "fleet", false) {
                    Ok(b) => b,
                    Err(e) => {
                        self.note(format!("{P8} {kind}: {e}"));
                        self.progress.finish_step();
                        continue;
                    }
                };
                self.run_id += 1;
                let spec = fleet::FleetSpec {
                    addr: broker.addr(Version::V311),
                    devices: plan.fleet_devices,
                    qos,
                    period: plan.fleet_period,
                    duration: plan.fleet_duration,
                    credentials: setup::credentials(kind.has_dynsec(), USER_100),
                    prefix: format!("f{}", self.run_id),
                };
                let baseline = broker.rss().unwrap_or(0);
                let progress = &mut self.progress;
                let mut on_progress = |line: &str| progress.detail(line);
                let r = fleet::run(&spec, || broker.rss(), &mut on_progress);
                let mb = |bytes: u64| bytes as f64 / 1048576.0;
                let devices = r.connected.max(1) as f64;
                self.results.add(P8, &case, kind, RSS_END, "MB", 0, mb(r.rss_end()));
                self.results.add(
                    P8,
                    &case,
                    kind,
                    "RSS per device at the end",
                    "KB",
                    0,
                    r.rss_end().saturating_sub(baseline) as f64 / devices / 1024.0,
                );
                self.results.add(P8, &case, kind, "RSS connected, before traffic", "MB", 0, mb(r.rss_connected));
                if let Some(growth) = r.growth_percent(plan.fleet_period) {
                    self.results.add(P8, &case, kind, RSS_GROWTH, "%", 0, growth);
                }
                let sent = r.commands_sent.max(1) as f64;
                self.results.add(P8, &case, kind, ON_TIME, "%", 0, r.on_time as f64 / sent * 100.0);
                self.results.add(P8, &case, kind, "commands late", "commands", 0, r.late as f64);
                self.results.add(P8, &case, kind, "commands sent", "commands", 0, r.commands_sent as f64);
                self.results.add(P8, &case, kind, "connect + subscribe", "s", 0, r.connect_time.as_secs_f64());
                if r.refused > 0 {
                    self.note(format!("{P8} {case} on {kind}: {} devices could not connect", r.refused));
                }
                let samples: Vec<String> =
                    r.rss_samples.iter().map(|(t, bytes)| format!("{t:.0} s {:.1}", mb(*bytes))).collect();
                self.results.notes.push(format!("{P8} {case} on {kind}: RSS (MB) {}", samples.join(", ")));
                drop(broker);
                self.progress.finish_step();
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn usage() -> ! {
    eprintln!(
        "usage: dynsec-bench [--quick] [--out DIR] [--only P1..P9|P1M|C1..C3]... [--ours-config LINE]... [--devices N] [--duration SECONDS] [--fleet-qos 0|1] [--brokers ours,rumqttd,mosquitto]"
    );
    std::process::exit(2);
}

/// `--brokers`' list: `ours`, `rumqttd`, `mosquitto`, separated by commas.
fn parse_kinds(list: &str) -> Option<Vec<Kind>> {
    list.split(',')
        .map(|name| match name.trim() {
            "ours" | "dynsec-broker" => Some(Kind::Ours),
            "rumqttd" => Some(Kind::Rumqttd),
            "mosquitto" => Some(Kind::Mosquitto),
            _ => None,
        })
        .collect()
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

fn main() {
    let mut plan = Plan::full();
    let mut out = PathBuf::from("bench-results");
    let mut only: Vec<String> = Vec::new();
    let mut ours_extra_config = Vec::new();
    let (mut devices, mut duration) = (None::<usize>, None::<u64>);
    let mut fleet_qos = None::<u8>;
    let mut brokers_named = None::<Vec<Kind>>;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--out" => out = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--only" => only.push(args.next().unwrap_or_else(|| usage())),
            "--ours-config" => ours_extra_config.push(args.next().unwrap_or_else(|| usage())),
            "--devices" => devices = Some(args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage())),
            "--duration" => duration = Some(args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage())),
            "--fleet-qos" => {
                fleet_qos =
                    Some(args.next().and_then(|n| n.parse().ok()).filter(|q| *q <= 1).unwrap_or_else(|| usage()))
            }
            "--brokers" => {
                brokers_named = Some(args.next().and_then(|list| parse_kinds(&list)).unwrap_or_else(|| usage()))
            }
            _ => usage(),
        }
    }
    plan.fleet_devices = devices.unwrap_or(plan.fleet_devices);
    plan.fleet_duration = duration.map_or(plan.fleet_duration, Duration::from_secs);
    if let Some(qos) = fleet_qos {
        plan.fleet_qos = vec![qos];
    }
    let wanted = |scenario: &str| only.is_empty() || only.iter().any(|o| o == scenario);
    // The cluster scenarios need nats-server: they run only when named.
    let named = |scenario: &str| only.iter().any(|o| o == scenario);
    let cluster_wanted =
        cluster::Wanted { throughput: named("C1"), change_to_effect: named("C2"), provisioning: named("C3") };
    let exes = match Executables::locate() {
        Ok(exes) => Executables { ours_extra_config, ..exes },
        Err(e) => {
            eprintln!("dynsec-bench: {e}");
            std::process::exit(1);
        }
    };
    let connections = if wanted("P8") { plan.idle_clients.max(plan.fleet_devices) } else { plan.idle_clients };
    let open_files = machine::raise_open_files(connections as u64 + 1000) as usize;
    if open_files < plan.idle_clients + 1000 {
        eprintln!("dynsec-bench: the open-file limit ({open_files}) is too low for {} connections", plan.idle_clients);
        std::process::exit(1);
    }
    // The fleet as large as the limit allows (the bench and each broker need a descriptor per
    // device); said in the report.
    let mut fleet_note = None;
    if wanted("P8") && open_files < plan.fleet_devices + 1000 {
        let devices = open_files - 1000;
        fleet_note = Some(format!(
            "P8: {} devices asked, {devices} run: the open-file limit is {open_files} and cannot be raised here",
            plan.fleet_devices
        ));
        plan.fleet_devices = devices;
    }
    let started = Instant::now();
    let load_at_start = machine::load_text();
    eprintln!("dynsec-bench ({}) on {}", if plan.quick { "quick" } else { "full" }, machine::description());
    eprintln!("load average at start: {load_at_start}");

    let mut kinds = vec![Kind::Ours, Kind::Rumqttd];
    let mut notes: Vec<String> = fleet_note.into_iter().collect();
    if exes.mosquitto.is_some() {
        kinds.push(Kind::Mosquitto);
    } else {
        notes.push("mosquitto or its dynamic-security plugin is not installed: mosquitto skipped".to_owned());
    }
    // `--brokers`: only those named (a 50,000-device fleet on bare rumqttd takes many minutes to
    // subscribe, and a 30-minute run needs only ours beside mosquitto).
    if let Some(named) = &brokers_named {
        kinds.retain(|kind| named.contains(kind));
    }
    let scratch = tempfile::Builder::new().prefix("dynsec-bench-").tempdir().expect("temporary directory");
    eprintln!("writing the dynamic-security configuration (hashing passwords)…");
    let full_file = scratch.path().join("full.json");
    let minimal_file = scratch.path().join("minimal.json");
    setup::write(&setup::full_model(plan.storm_clients, plan.rounds), &full_file).expect("write the dynsec file");
    setup::write(&setup::minimal_model(), &minimal_file).expect("write the dynsec file");

    let cases = flow_cases(&plan).len();
    let dynsec_kinds = kinds.iter().filter(|k| k.has_dynsec()).count();
    let steps = plan.throughput_rounds * cases * (kinds.len() + dynsec_kinds)
        + plan.rounds * kinds.len()
        + 2
        + usize::from(kinds.contains(&Kind::Mosquitto))
        + 2 * kinds.len()
        + plan.burst_rounds * 2 * kinds.len()
        + 2 * kinds.len()
        + usize::from(cluster_wanted.throughput) * plan.cluster.rounds * 6
        + usize::from(cluster_wanted.change_to_effect)
        + 2 * usize::from(cluster_wanted.provisioning)
        + persistence::steps(&plan.persistence, &kinds)
        + if only.iter().any(|o| o == "P1M") { 2 * plan.throughput_rounds * cases } else { 0 };
    let mut run = Run {
        plan: plan.clone(),
        exes,
        kinds: kinds.clone(),
        scratch,
        full_file,
        minimal_file,
        results: Results { notes, ..Default::default() },
        progress: ProgressBar::new(steps),
        run_id: 0,
        restarts: BTreeMap::new(),
    };

    let mut brokers = Vec::new();
    for kind in &kinds {
        match run.start(*kind, "main", false) {
            Ok(b) => brokers.push(b),
            Err(e) => run.note(format!("{kind}: {e}")),
        }
    }
    if wanted("P1") || wanted("P2") {
        run.throughput(&mut brokers);
    }
    if only.iter().any(|o| o == "P1M") {
        run.metrics_scrape();
    }
    if wanted("P4") {
        run.connect_storm(&mut brokers);
    }
    if wanted("P7") {
        run.qos0_bursts(&mut brokers);
    }
    drop(brokers);
    if wanted("P3") {
        run.provisioning();
    }
    if wanted("P5") || wanted("P6") {
        run.idle_and_revocation();
    }
    if wanted("P6") {
        run.memory_after_messages();
    }
    if wanted("P8") {
        run.fleet();
    }
    if cluster_wanted.throughput || cluster_wanted.change_to_effect || cluster_wanted.provisioning {
        let scratch = run.scratch.path().to_owned();
        cluster::run(&plan.cluster, cluster_wanted, &run.exes, &scratch, &mut run.results, &mut run.progress);
    }
    if wanted("P9") {
        let setup = persistence::Setup {
            exes: &run.exes,
            security_file: &run.full_file,
            scratch: run.scratch.path(),
            kinds: &run.kinds,
        };
        persistence::run(&setup, &run.plan.persistence, &mut run.results, &mut run.progress);
    }
    let restarts: Vec<String> = run.restarts.iter().map(|(kind, n)| format!("{kind} {n} time(s)")).collect();
    if !restarts.is_empty() {
        run.note(format!(
            "restarted after a run because still busy {}s later (its backlog dropped): {}",
            SETTLE_LIMIT.as_secs(),
            restarts.join(", ")
        ));
    }
    run.progress.clear();

    let load_at_end = machine::load_text();
    let elapsed = started.elapsed();
    let rows = report::rows(&run.results);
    let header = format!(
        "dynsec-bench {} run on {}, {} round(s) of P1/P2, {} of P4; {}; load average at start {load_at_start}, at end {load_at_end}; took {}:{:02}",
        if plan.quick { "quick" } else { "full" },
        machine::today(),
        plan.throughput_rounds,
        plan.rounds,
        machine::description(),
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60
    );
    let header = if run.exes.ours_extra_config.is_empty() {
        header
    } else {
        format!("{header}; dynsec-broker configured with: {}", run.exes.ours_extra_config.join("; "))
    };
    println!("{header}\n");
    println!("{}", report::text_table(&rows));
    for note in &run.results.notes {
        println!("note: {note}");
    }

    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return;
    }
    write(&out.join("benchmarks.csv"), &run.results.csv());
    let mut markdown = format!("{header}\n\n{}\n", report::markdown_table(&rows));
    for note in &run.results.notes {
        markdown.push_str(&format!("- {note}\n"));
    }
    write(&out.join("benchmarks-table.md"), &markdown);

    let mut categories = Vec::new();
    let mut series: Vec<(String, Vec<Option<f64>>)> =
        kinds.iter().map(|k| (k.label().to_owned(), Vec::new())).collect();
    for scenario in [P1, P2] {
        for case in flow_cases(&plan) {
            let label = case.label();
            categories.push(format!("{} {label}", if scenario == P1 { "100 ACLs" } else { "10k ACLs" }));
            for (kind, (_, values)) in kinds.iter().zip(series.iter_mut()) {
                values.push(run.results.median(scenario, &label, *kind, RATE));
            }
        }
    }
    write(
        &out.join("benchmarks.svg"),
        &chart::grouped_bars(
            "Throughput (median deliveries/s), 100-byte payloads",
            "deliveries/s",
            &categories,
            &series,
        ),
    );
    let curves: Vec<(String, Vec<(f64, f64)>)> =
        run.results.curves.iter().map(|c| (c.name.clone(), c.points.clone())).collect();
    write(
        &out.join("benchmarks-provisioning.svg"),
        &chart::lines("Provisioning: time per batch of createClient", "clients created", "ms per batch", &curves),
    );
    eprintln!("wrote {}", out.display());
}
