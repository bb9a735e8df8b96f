//! Router memory measurement (issue 15, item 5): `router-memory [--filters N] [--topics M]`.
//! Starts the broker shim built beside this binary (`cargo build --release -p dynsec-tests`
//! builds both) with the per-client limits off, then prints its resident memory (VmRSS):
//! at start; after one client subscribed to N unique filters; after it disconnected (clean);
//! after a second client did the same with N other filters; after M unique topics were published
//! to a `#` subscriber. The figures go to docs/security.md ("Router safety and resource limits").

use std::path::Path;
use std::process::ExitCode;

use dynsec_broker::testkit::{self, Connect, RawClient};
use dynsec_tests::broker::BrokerProcess;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn subscribe_unique(broker: &BrokerProcess, client_id: &str, prefix: &str, count: usize) {
    let mut client = RawClient::connected(broker.addr(), &Connect::new(4, client_id)).await;
    let filters: Vec<String> = (0..count).map(|i| format!("{prefix}/{i}")).collect();
    for (chunk, pkid) in filters.chunks(200).zip((1..u16::MAX).cycle()) {
        let chunk: Vec<(&str, u8)> = chunk.iter().map(|f| (f.as_str(), 0)).collect();
        client.subscribe(pkid, &chunk).await;
    }
    client.send(&testkit::disconnect()).await;
    client.expect_closed().await;
}

async fn publish_unique(broker: &BrokerProcess, count: usize) {
    let mut subscriber = RawClient::connected(broker.addr(), &Connect::new(4, "memory-all")).await;
    subscriber.subscribe(1, &[("#", 0)]).await;
    let mut publisher = RawClient::connected(broker.addr(), &Connect::new(4, "memory-topics")).await;
    for i in 0..count {
        publisher.publish(&format!("topics/{i}"), b"x", 0, false, 0).await;
        if i % 1000 == 999 {
            publisher.ping().await;
            while let testkit::Next::Frame(_) = subscriber.next(std::time::Duration::from_millis(1)).await {}
        }
    }
    publisher.ping().await;
}

fn main() -> ExitCode {
    let mut filters = 200_000usize;
    let mut topics = 1_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--filters", Some(v)) => filters = v,
            ("--topics", Some(v)) => topics = v,
            _ => {
                eprintln!("usage: router-memory [--filters N] [--topics M]");
                return ExitCode::FAILURE;
            }
        }
    }
    let binary = std::env::current_exe().map(|p| p.with_file_name("dynsec-broker-under-test")).unwrap_or_default();
    let broker = BrokerProcess::start(
        Path::new(&binary),
        "allow_anonymous true\ngate_max_subscriptions_per_client 0\ngate_new_topics_per_second 0\ngate_new_filters_per_second 0\n",
    );
    let pid = broker.pid();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let report = |what: &str| println!("{:>10} KiB  {what}", rss_kib(pid));
    report("started");
    runtime.block_on(subscribe_unique(&broker, "memory-a", "a", filters));
    report(&format!("one client subscribed to {filters} unique filters and disconnected (clean)"));
    runtime.block_on(subscribe_unique(&broker, "memory-b", "b", filters));
    report(&format!("a second client did the same with {filters} other filters"));
    runtime.block_on(subscribe_unique(&broker, "memory-a2", "a", filters));
    report(&format!("a third client subscribed to the first {filters} filters again"));
    runtime.block_on(publish_unique(&broker, topics));
    report(&format!("{topics} unique topics published to a # subscriber"));
    ExitCode::SUCCESS
}
