//! One P1 case, repeated, on one broker — for profiling a gap the full benchmark shows.
//!
//!     bench-flow ours|rumqttd|mosquitto SUBSCRIBERS QOS 3|5|35 ROUNDS [--messages N] [--ours-config LINE]... [--session-expiry SECS]
//!
//! Starts the broker with the benchmark's security setup (the 100-ACL user), prints its PID,
//! waits for Enter (so `perf record -p PID` can be started), then runs the flow ROUNDS times
//! and prints each rate; the broker stops at the next Enter (or end of input). With
//! `--session-expiry` the subscribers ask for persistent sessions (P9's persistent-subscriber case:
//! add `--ours-config "persistence true"`).

use std::io::BufRead;
use std::time::Duration;

use dynsec_bench::brokers::{Broker, Executables, Kind};
use dynsec_bench::flow::{self, FlowSpec};
use dynsec_bench::mqtt::Version;
use dynsec_bench::security_setup::{self as setup, USER_100};

fn usage() -> ! {
    eprintln!(
        "usage: bench-flow ours|rumqttd|mosquitto SUBSCRIBERS QOS 3|5|35 ROUNDS [--messages N] [--ours-config LINE]... [--session-expiry SECS]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        usage();
    }
    let kind = match args[0].as_str() {
        "ours" => Kind::Ours,
        "rumqttd" => Kind::Rumqttd,
        "mosquitto" => Kind::Mosquitto,
        _ => usage(),
    };
    let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
    let (subscribers, qos, rounds) = (number(&args[1]) as usize, number(&args[2]) as u8, number(&args[4]));
    // "35" alternates the versions round by round, as the full benchmark does.
    let versions: Vec<Version> = args[3]
        .chars()
        .map(|c| match c {
            '3' => Version::V311,
            '5' => Version::V5,
            _ => usage(),
        })
        .collect();
    if versions.is_empty() {
        usage();
    }
    let mut exes = Executables::locate().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut messages = if subscribers == 1 { 400_000 } else { 10_000 };
    let mut session_expiry = None;
    let mut rest = args[5..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--ours-config", Some(line)) => exes.ours_extra_config.push(line.clone()),
            ("--messages", Some(n)) => messages = number(n),
            ("--session-expiry", Some(n)) => session_expiry = Some(number(n) as u32),
            _ => usage(),
        }
    }
    let scratch = tempfile::tempdir().expect("temporary directory");
    let file = scratch.path().join("dynamic-security.json");
    setup::write(&setup::full_model(0, 0), &file).expect("write the dynsec file");
    let broker =
        Broker::start(kind, &exes, &scratch.path().join("broker"), kind.has_dynsec().then_some(file.as_path()))
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            });
    println!("{} pid {} — press Enter to start", kind, broker.pid());
    let mut input = std::io::stdin().lock().lines();
    let _ = input.next();
    for round in 0..rounds {
        let version = versions[round as usize % versions.len()];
        let spec = FlowSpec {
            addr: broker.addr(version),
            version,
            qos,
            subscribers,
            messages,
            max_duration: Duration::from_secs(10),
            payload: 100,
            topic: format!("bench/load/r{round}"),
            credentials: setup::credentials(kind.has_dynsec(), USER_100),
            client_prefix: format!("f{round}"),
            drain_limit: flow::DRAIN_LIMIT,
        };
        match flow::run_with(&spec, session_expiry) {
            Ok(r) => {
                println!("round {round}: {:.0} deliveries/s, {} lost (v{})", r.rate(), r.lost, version.label());
                if r.lost > 0 {
                    println!("broker log:\n{}", broker.log_tail());
                }
            }
            Err(e) => println!("round {round}: {e}"),
        }
    }
    println!("done — press Enter to stop the broker");
    let _ = input.next();
}
