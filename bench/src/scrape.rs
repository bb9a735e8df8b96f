//! Scenario "P1M": P1's flows on `dynsec-broker` with its `/metrics` endpoint scraped
//! (issue 19). The broker gets a second listener (`listener <port>` + `protocol http_api`); every
//! P1 case runs twice per round, once while a scraper thread GETs `/metrics` every
//! [`SCRAPE_INTERVAL`] and once without, in alternating order from round to round, and the report
//! compares the medians. Around every flow the counters are read (once the broker is idle) and
//! their increase is checked against what the bench itself sent and received: PUBLISH packets
//! in and out, payload bytes, all bytes read from the clients, sockets, logins.
//!
//! The interval: Prometheus users scrape every 15–60 s, 1 s at the most aggressive. A P1 round
//! lasts about a second, so one scrape per second could fall outside it; every 100 ms puts
//! several scrapes into each round, 150× the load of a 15 s interval. The broker's CPU time per
//! scrape is measured too (200 scrapes on the idle broker), which gives the cost at any interval.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::BytesMut;

use crate::brokers::{Broker, Executables, Kind};
use crate::flow::{FlowResult, FlowSpec};
use crate::mqtt::{self, Connect, Version};
use crate::progress::ProgressBar;
use crate::report::{
    MISMATCHES, P1M, RATE_SCRAPED, RATE_UNSCRAPED, SCRAPE_CPU, SCRAPE_CPU_SHARE, SCRAPED_RATIO, SCRAPES,
};
use crate::results::Results;

/// How often the scraper asks for `/metrics` during a flow (see the module doc).
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(100);
/// Scrapes of the idle broker whose CPU time gives the cost of one scrape.
pub const CPU_SAMPLE_SCRAPES: usize = 200;
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape: each sample's value by its series (`name{labels}` as the broker wrote it).
pub type Snapshot = BTreeMap<String, f64>;

/// GETs `/metrics` with HTTP Basic, as Prometheus' `basic_auth` does (one connection per
/// scrape, `Connection: close`), and parses the text format.
pub fn scrape(addr: SocketAddr, username: &str, password: &str) -> Result<Snapshot, String> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(|e| e.to_string())?;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {credentials}\r\n\
         Accept: application/openmetrics-text\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of the HTTP header")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("/metrics answered {status}"));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err("a chunked answer: not expected from the broker".into());
    }
    Ok(parse(body))
}

/// The samples of a Prometheus / OpenMetrics text body (comments skipped).
pub fn parse(body: &str) -> Snapshot {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A thread scraping every [`SCRAPE_INTERVAL`] until stopped.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What a [`Scraper`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrapeCount {
    pub scrapes: u64,
    pub failures: u64,
}

impl Scraper {
    pub fn start(addr: SocketAddr, username: String, password: String) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let (scrapes, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, scrapes, failures) = (stop.clone(), scrapes.clone(), failures.clone());
            std::thread::Builder::new()
                .name("bench-scraper".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        let counter = if scrape(addr, &username, &password).is_ok() { &scrapes } else { &failures };
                        counter.fetch_add(1, Ordering::Release);
                        next += SCRAPE_INTERVAL;
                        // Short sleeps: a stop is seen within 10 ms.
                        while !stop.load(Ordering::Acquire) && Instant::now() < next {
                            std::thread::sleep(Duration::from_millis(10).min(next - Instant::now()));
                        }
                    }
                })
                .ok()
        };
        Scraper { stop, scrapes, failures, thread }
    }

    pub fn stop(mut self) -> ScrapeCount {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        ScrapeCount { scrapes: self.scrapes.load(Ordering::Acquire), failures: self.failures.load(Ordering::Acquire) }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What the broker's counters must have grown by over one flow, computed from the bench's own
/// packets (the encodings of [`crate::mqtt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub messages_in: u64,
    pub messages_out: u64,
    pub payload_bytes_in: u64,
    pub payload_bytes_out: u64,
    /// Every byte the bench's MQTT clients wrote: CONNECT, SUBSCRIBE, PUBLISH, PUBACK, DISCONNECT.
    pub bytes_in: u64,
    pub sockets: u64,
    /// MQTT logins plus HTTP Basic logins (each scrape logs in).
    pub logins: u64,
}

/// The increase expected over a flow `spec` that gave `result`, with `scrapes` scrapes logging
/// in between the two snapshots (the later snapshot's own login included).
pub fn expected(spec: &FlowSpec, result: &FlowResult, scrapes: u64) -> Expected {
    let clients = 1 + spec.subscribers as u64;
    let deliveries = result.received + result.duplicates;
    let connect =
        |id: &str| encoded_len(|b| Connect::with_credentials(spec.version, id, spec.credentials.as_ref()).encode(b));
    let mut bytes_in = connect(&format!("{}-pub", spec.client_prefix));
    for i in 0..spec.subscribers {
        bytes_in += connect(&format!("{}-sub-{i}", spec.client_prefix));
        bytes_in += encoded_len(|b| mqtt::subscribe(b, spec.version, 1, &spec.topic, spec.qos));
    }
    let payload = vec![0u8; spec.payload.max(16)];
    let publish = encoded_len(|b| mqtt::publish(b, spec.version, spec.topic.as_bytes(), &payload, spec.qos, 1));
    bytes_in += result.sent * publish;
    if spec.qos > 0 {
        bytes_in += deliveries * encoded_len(|b| mqtt::puback(b, 1));
    }
    bytes_in += clients * encoded_len(mqtt::disconnect);
    Expected {
        messages_in: result.sent,
        messages_out: deliveries,
        payload_bytes_in: result.sent * payload.len() as u64,
        payload_bytes_out: deliveries * payload.len() as u64,
        bytes_in,
        sockets: clients,
        logins: clients + scrapes,
    }
}

/// Bytes of one packet as the bench's encoder writes it.
fn encoded_len(encode: impl FnOnce(&mut BytesMut)) -> u64 {
    let mut buf = BytesMut::new();
    encode(&mut buf);
    buf.len() as u64
}

/// The increase of one counter between two snapshots.
pub fn delta(before: &Snapshot, after: &Snapshot, series: &str) -> Option<f64> {
    Some(after.get(series)? - before.get(series).copied().unwrap_or(0.0))
}

/// Every counter whose increase differs from `expected`, as "name: broker N, bench M". Sent
/// deliveries may exceed received ones when the bench stopped reading with messages lost.
pub fn mismatches(before: &Snapshot, after: &Snapshot, expected: &Expected, lost: u64) -> Vec<String> {
    let checks = [
        ("broker_messages_received_total", expected.messages_in),
        ("broker_messages_sent_total", expected.messages_out),
        ("broker_publish_bytes_received_total", expected.payload_bytes_in),
        ("broker_publish_bytes_sent_total", expected.payload_bytes_out),
        ("broker_bytes_received_total", expected.bytes_in),
        ("broker_sockets_accepted_total", expected.sockets),
        ("broker_client_auth_success_total", expected.logins),
    ];
    let mut out = Vec::new();
    for (series, want) in checks {
        let outbound = series.contains("_sent_");
        match delta(before, after, series) {
            None => out.push(format!("{series}: missing from /metrics")),
            Some(got) if got as u64 == want => {}
            Some(got) if outbound && lost > 0 && got as u64 >= want => {}
            Some(got) => out.push(format!("{series}: broker +{got}, bench {want}")),
        }
    }
    out
}

/// The broker's CPU seconds spent per scrape: `count` scrapes back to back on the idle broker,
/// measured with `cpu_seconds` (the broker process's user + system time).
pub fn cpu_per_scrape(
    addr: SocketAddr,
    username: &str,
    password: &str,
    count: usize,
    cpu_seconds: impl Fn() -> Option<f64>,
) -> Result<f64, String> {
    let before = cpu_seconds().ok_or("cannot read the broker's CPU time")?;
    for _ in 0..count {
        scrape(addr, username, password)?;
    }
    let after = cpu_seconds().ok_or("cannot read the broker's CPU time")?;
    Ok((after - before).max(0.0) / count.max(1) as f64)
}

/// The row of every (case, round) pair's ratio, whose median the report shows.
const ALL_PAIRS: &str = "all cases, each scraped run ÷ its unscraped neighbour";

/// Sizes of a P1M run (the P1 cases and sizes of the plan it is part of).
#[derive(Debug, Clone)]
pub struct Plan {
    pub rounds: usize,
    /// (label, version, QoS, subscribers, messages) per P1 case.
    pub cases: Vec<(String, Version, u8, usize, u64)>,
    pub flow_duration: Duration,
    /// Credentials of the flow clients (a `bench-100` user: P1's 100 ACLs).
    pub credentials: (String, String),
    /// The scraper's login (`publishClientReceive` on `/metrics`).
    pub scraper: (String, String),
}

/// Runs P1M on a fresh `dynsec-broker` (configured as P1's, plus an `http_api` listener) in
/// `dir` with `dynsec_file`, adding its figures to `results`.
pub fn run(
    plan: &Plan,
    exes: &Executables,
    dir: &Path,
    dynsec_file: &Path,
    results: &mut Results,
    progress: &mut ProgressBar,
) -> Result<(), String> {
    let http_port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let mut exes = exes.clone();
    exes.ours_extra_config.extend([format!("listener {http_port} 127.0.0.1"), "protocol http_api".to_owned()]);
    let broker = Broker::start(Kind::Ours, &exes, dir, Some(dynsec_file))?;
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let (user, password) = (&plan.scraper.0, &plan.scraper.1);
    let deadline = Instant::now() + HTTP_TIMEOUT * 6;
    let mut first = scrape(http, user, password);
    while first.is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        first = scrape(http, user, password);
    }
    first.map_err(|e| format!("the http_api listener: {e}"))?;

    // The broker's own CPU time per scrape (the first scrape above warmed the login cache).
    broker.settle(Duration::from_secs(3));
    let per_scrape = cpu_per_scrape(http, user, password, CPU_SAMPLE_SCRAPES, || broker.cpu_seconds())?;
    let case = format!("{CPU_SAMPLE_SCRAPES} scrapes of the idle broker");
    results.add(P1M, &case, Kind::Ours, SCRAPE_CPU, "ms", 0, per_scrape * 1000.0);
    results.add(
        P1M,
        &case,
        Kind::Ours,
        SCRAPE_CPU_SHARE,
        "% of a core",
        0,
        per_scrape / SCRAPE_INTERVAL.as_secs_f64() * 100.0,
    );

    let mut run_id = 0;
    for round in 0..plan.rounds {
        for (label, version, qos, subscribers, messages) in &plan.cases {
            // Alternating: scraped first in even rounds, second in odd ones.
            let mut pair = [None::<f64>; 2];
            for scraped in [round % 2 == 0, round % 2 == 1] {
                run_id += 1;
                progress.start(format!(
                    "{P1M}: {label} {} (round {})",
                    if scraped { "scraped" } else { "not scraped" },
                    round + 1
                ));
                let spec = FlowSpec {
                    addr: broker.addr(*version),
                    version: *version,
                    qos: *qos,
                    subscribers: *subscribers,
                    messages: *messages,
                    max_duration: plan.flow_duration,
                    payload: 100,
                    topic: format!("bench/scrape/r{run_id}"),
                    credentials: Some(plan.credentials.clone()),
                    client_prefix: format!("m{run_id}"),
                    drain_limit: crate::flow::DRAIN_LIMIT,
                };
                broker.settle(Duration::from_secs(3));
                let before = scrape(http, user, password)?;
                let scraper = scraped.then(|| Scraper::start(http, user.clone(), password.clone()));
                let outcome = crate::flow::run(&spec);
                let count = scraper.map(Scraper::stop).unwrap_or_default();
                broker.settle(Duration::from_secs(3));
                let after = scrape(http, user, password)?;
                let flow = match outcome {
                    Ok(flow) => flow,
                    Err(e) => {
                        results.notes.push(format!("{P1M} {label} failed: {e}"));
                        progress.finish_step();
                        continue;
                    }
                };
                let metric = if scraped { RATE_SCRAPED } else { RATE_UNSCRAPED };
                results.add(P1M, label, Kind::Ours, metric, "deliveries/s", round, flow.rate());
                pair[usize::from(scraped)] = Some(flow.rate());
                if scraped {
                    results.add(P1M, label, Kind::Ours, SCRAPES, "scrapes", round, count.scrapes as f64);
                }
                if count.failures > 0 {
                    results.notes.push(format!("{P1M} {label}: {} scrapes failed", count.failures));
                }
                let want = expected(&spec, &flow, count.scrapes + count.failures + 1);
                let wrong = mismatches(&before, &after, &want, flow.lost);
                results.add(P1M, label, Kind::Ours, MISMATCHES, "counters", round, wrong.len() as f64);
                for line in wrong {
                    results.notes.push(format!("{P1M} {label} round {}: {line}", round + 1));
                }
                progress.finish_step();
            }
            // Neighbouring runs compared: the machine's drift cancels better than across rounds.
            if let [Some(unscraped), Some(scraped)] = pair {
                results.add(P1M, ALL_PAIRS, Kind::Ours, SCRAPED_RATIO, "×", round, scraped / unscraped.max(1e-9));
            }
        }
    }
    for (label, ..) in &plan.cases {
        let scraped = results.median(P1M, label, Kind::Ours, RATE_SCRAPED);
        let unscraped = results.median(P1M, label, Kind::Ours, RATE_UNSCRAPED);
        if let (Some(s), Some(u)) = (scraped, unscraped) {
            results.add(P1M, label, Kind::Ours, SCRAPED_RATIO, "×", 0, s / u.max(1e-9));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_is_read_by_series() {
        let body = "# HELP broker_sent x\n# TYPE broker_sent counter\nbroker_sent_total 42\n\
                    broker_authorization_total{acl_type=\"subscribe\",result=\"allow\"} 3\n# EOF\n";
        let snapshot = parse(body);
        assert_eq!(snapshot.get("broker_sent_total"), Some(&42.0));
        assert_eq!(snapshot.get("broker_authorization_total{acl_type=\"subscribe\",result=\"allow\"}"), Some(&3.0));
        assert_eq!(snapshot.len(), 2);
    }

    #[test]
    fn expected_bytes_follow_the_encodings() {
        let spec = FlowSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            version: Version::V311,
            qos: 1,
            subscribers: 1,
            messages: 10,
            max_duration: Duration::from_secs(1),
            payload: 100,
            topic: "a/b".into(),
            credentials: None,
            client_prefix: "r1".into(),
            drain_limit: Duration::from_secs(1),
        };
        let result = FlowResult { sent: 10, received: 10, duplicates: 0, lost: 0, elapsed: Duration::from_secs(1) };
        let e = expected(&spec, &result, 3);
        // CONNECT: 2 + 10 (MQTT, level, flags, keepalive) + 2 + len(id); PUBLISH: 2 + 2 + 3 + 2 + 100.
        let connects = (2 + 10 + 2 + 6) + (2 + 10 + 2 + 8);
        let subscribe = 2 + 2 + 2 + 3 + 1;
        assert_eq!(e.bytes_in, connects + subscribe + 10 * 109 + 10 * 4 + 2 * 2);
        assert_eq!((e.messages_in, e.messages_out, e.sockets, e.logins), (10, 10, 2, 5));
    }
}
