//! Persistence figures for docs/persistence.md (issue 18): QoS 1 throughput, one publisher to one
//! subscriber (P1's 1→1 shape: 100-byte payloads, the publisher keeping 100 messages in flight),
//! with persistence off, durable and autosave, for a clean and for a persistent subscriber, and
//! mosquitto 2.0.11 with `persistence true`; then the restart time with many retained messages
//! and persistent sessions.
//!
//! `persistence-bench [--messages N] [--retained N] [--sessions N] [--rounds N]`; build with
//! `cargo build --release -p dynsec-tests --bins` (it runs the broker shim built beside it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::mosquitto::{Mosquitto, unused_port};

const WINDOW: usize = 100;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Messages per second from the first publish to the last delivery.
async fn throughput(addr: SocketAddr, messages: usize, persistent_subscriber: bool, tag: &str) -> f64 {
    let mut connect = Connect::new(4, &format!("sub-{tag}"));
    connect.clean = !persistent_subscriber;
    let mut subscriber = RawClient::connected(addr, &connect).await;
    subscriber.subscribe(1, &[("bench/p1", 1)]).await;
    let mut publisher = RawClient::connected(addr, &Connect::new(4, &format!("pub-{tag}"))).await;
    let payload = [b'x'; 100];
    let started = Instant::now();
    let receiving = tokio::spawn(async move {
        let mut received = 0;
        while received < messages {
            match subscriber.next(testkit::WAIT).await {
                Next::Frame(frame) if frame.packet_type == testkit::PUBLISH => {
                    let publish = frame.publish(false);
                    subscriber.send(&testkit::ack(testkit::PUBACK, publish.pkid)).await;
                    received += 1;
                }
                Next::Frame(_) => {}
                other => panic!("subscriber: {other:?} after {received}"),
            }
        }
        subscriber.send(&testkit::disconnect()).await;
        Instant::now()
    });
    let mut sent = 0;
    let mut acked = 0;
    while acked < messages {
        while sent < messages && sent - acked < WINDOW {
            publisher.publish("bench/p1", &payload, 1, false, (sent % 60_000 + 1) as u16).await;
            sent += 1;
        }
        match publisher.next(testkit::WAIT).await {
            Next::Frame(frame) if frame.packet_type == testkit::PUBACK => acked += 1,
            Next::Frame(_) => {}
            other => panic!("publisher: {other:?} after {acked}"),
        }
    }
    let done = receiving.await.expect("subscriber task");
    messages as f64 / done.duration_since(started).as_secs_f64()
}

fn broker_shim() -> PathBuf {
    std::env::current_exe().map(|p| p.with_file_name("dynsec-broker-under-test")).unwrap_or_default()
}

const BASE: &str = "listener 0 127.0.0.1\nallow_anonymous true\nlog_type error\nlog_type warning\nlog_type notice\n\
                    max_queued_messages 0\ngate_new_topics_per_second 0\n";

fn ours(dir: &Path, persistence: &str) -> BrokerProcess {
    BrokerProcess::start_in(&broker_shim(), dir, &format!("{BASE}{persistence}"), &[])
}

fn main() {
    let messages = arg("--messages", 20_000);
    let retained = arg("--retained", 100_000);
    let sessions = arg("--sessions", 10_000);
    let rounds = arg("--rounds", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let cases: [(&str, &str); 3] = [
        ("off", ""),
        ("durable", "persistence true\n"),
        ("autosave", "persistence true\ngate_persistence_mode autosave\n"),
    ];
    println!(
        "QoS 1, 1 publisher → 1 subscriber, {messages} messages of 100 bytes, window {WINDOW}; median of {rounds}"
    );
    for persistent in [false, true] {
        for (name, lines) in cases {
            let mut rates = Vec::new();
            for round in 0..rounds {
                let dir = tempfile::tempdir().unwrap();
                let broker = ours(dir.path(), lines);
                let tag = format!("{name}-{round}");
                rates.push(runtime.block_on(throughput(broker.addr(), messages, persistent, &tag)));
                let _ = broker.terminate();
            }
            rates.sort_by(f64::total_cmp);
            let subscriber = if persistent { "persistent subscriber" } else { "clean subscriber" };
            println!(
                "  dynsec-broker, persistence {name:8} {subscriber:22}: {:>9.0} msg/s  (rounds: {rates:.0?})",
                rates[rates.len() / 2]
            );
        }
        let mut rates = Vec::new();
        for round in 0..rounds {
            let dir = tempfile::tempdir().unwrap();
            let port = unused_port();
            let config = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 max_inflight_messages 100\nmax_queued_messages 1000000\n",
                dir.path().display()
            );
            let mosquitto = Mosquitto::start_with_text(dir.path(), &config, port);
            let addr = SocketAddr::from(([127, 0, 0, 1], mosquitto.port()));
            rates.push(runtime.block_on(throughput(addr, messages, persistent, &format!("m-{round}"))));
            drop(mosquitto);
        }
        rates.sort_by(f64::total_cmp);
        let subscriber = if persistent { "persistent subscriber" } else { "clean subscriber" };
        println!(
            "  mosquitto 2.0.11, persistence true  {subscriber:22}: {:>9.0} msg/s  (rounds: {rates:.0?})",
            rates[rates.len() / 2]
        );
    }

    println!("restart with {retained} retained messages and {sessions} persistent sessions (durable mode)");
    let dir = tempfile::tempdir().unwrap();
    let broker = ours(dir.path(), "persistence true\n");
    let addr = broker.addr();
    runtime.block_on(async move {
        let mut publisher = RawClient::connected(addr, &Connect::new(4, "filler")).await;
        let (mut sent, mut acked) = (0, 0);
        while acked < retained {
            while sent < retained && sent - acked < WINDOW {
                publisher
                    .publish(&format!("fleet/{sent}/state"), &[b'r'; 100], 1, true, (sent % 60_000 + 1) as u16)
                    .await;
                sent += 1;
            }
            match publisher.next(testkit::WAIT).await {
                Next::Frame(frame) if frame.packet_type == testkit::PUBACK => acked += 1,
                Next::Frame(_) => {}
                other => panic!("filler: {other:?}"),
            }
        }
        for i in 0..sessions {
            let mut connect = Connect::new(4, &format!("device-{i}"));
            connect.clean = false;
            let mut device = RawClient::connected(addr, &connect).await;
            device.subscribe(1, &[(&format!("fleet/{i}/cmd"), 1)]).await;
            device.send(&testkit::disconnect()).await;
        }
    });
    let (_, _) = broker.terminate();
    let size = std::fs::metadata(dir.path().join("dynsec-broker.redb")).map(|m| m.len()).unwrap_or(0);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let broker = ours(dir.path(), "persistence true\n");
        let listening = started.elapsed();
        // Until a new subscriber has every retained message of one device back.
        let addr = broker.addr();
        let first = runtime.block_on(async move {
            let mut reader = RawClient::connected(addr, &Connect::new(4, "reader")).await;
            reader.subscribe(1, &[("fleet/99/state", 1)]).await;
            reader.expect_publish().await;
            Instant::now()
        });
        times.push((listening, first.duration_since(started)));
        let _ = broker.terminate();
    }
    println!(
        "  file {:.1} MB; start to listening / to the first retained message delivered: {times:.2?}",
        size as f64 / 1e6
    );
    let _ = Duration::ZERO;
}
