//! The soak in CI: a short run of `dynsec_tests::soak` (hundreds of connections, QoS 1 traffic,
//! a dynsec change every second) must end with no error and no lost message. The full run
//! (10,000 connections, 10 minutes) is `cargo run --release -p dynsec-tests --bin soak`; its
//! figures are in docs/reliability.md.

use std::time::Duration;

use dynsec_tests::soak::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_traffic_and_changes_without_errors_or_loss() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        binary: env!("CARGO_BIN_EXE_dynsec-broker-under-test").into(),
        connections: 300,
        publishers: 10,
        rate_per_publisher: 20.0,
        duration: Duration::from_secs(15),
        change_interval: Duration::from_secs(1),
        sample_interval: Duration::from_secs(3),
        warmup: Duration::from_secs(3),
        keep_alive: 4,
        connect_concurrency: 32,
        extra_config: Vec::new(),
    };
    let report = run(&options, dir.path(), |_| {}).await.unwrap_or_else(|e| panic!("{e}"));
    let summary = report.summary();
    eprintln!("{summary}\n{}", report.samples_table());
    assert_eq!(report.error_count, 0, "{summary}\n{:#?}", report.errors);
    assert_eq!(report.lost, 0, "{summary}");
    assert!(report.published_acknowledged > 0, "{summary}");
    assert_eq!(report.received_unique, report.published_acknowledged, "{summary}");
    assert!(report.changes >= 3 && report.kicks_seen > 0, "{summary}");
}
