//! The full soak run (issue 7): `soak [--connections N] [--minutes M] [--publishers P] [--rate R]`.
//! `--config-line LINE` (repeatable) adds a line to the broker's configuration.
//! Defaults: 10,000 connections for 10 minutes. Uses the broker shim built beside this binary
//! (`cargo build --release -p dynsec-tests` builds both). Prints memory samples as it goes, then
//! the report; exits non-zero on any error or lost message.

use std::process::ExitCode;
use std::time::Duration;

use dynsec_tests::soak::{Options, run};

fn main() -> ExitCode {
    let binary = std::env::current_exe().map(|p| p.with_file_name("dynsec-broker-under-test")).unwrap_or_default();
    let mut options = Options::full(binary);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config-line" {
            match args.next() {
                Some(line) => options.extra_config.push(line),
                None => return usage(),
            }
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v > 0.0);
        match (arg.as_str(), value) {
            ("--connections", Some(v)) => options.connections = v as usize,
            ("--minutes", Some(v)) => options.duration = Duration::from_secs_f64(v * 60.0),
            ("--publishers", Some(v)) => options.publishers = v as usize,
            ("--rate", Some(v)) => options.rate_per_publisher = v,
            ("--warmup-seconds", Some(v)) => options.warmup = Duration::from_secs_f64(v),
            _ => return usage(),
        }
    }
    let dir = std::env::temp_dir().join(format!("dynsec-soak-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    println!(
        "soak: {} connections, {} publishers × {}/s QoS 1, {:?}, a dynsec change every {:?}",
        options.connections, options.publishers, options.rate_per_publisher, options.duration, options.change_interval
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&options, &dir, |s| {
        println!(
            "{:>5}s  broker RSS {:>7.1} MiB  connected {:>6}  received {:>8}",
            s.at.as_secs(),
            s.rss_kib as f64 / 1024.0,
            s.connected,
            s.received
        )
    }));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(report) => {
            println!("{}", report.summary());
            for error in &report.errors {
                println!("error: {error}");
            }
            if report.error_count == 0 && report.lost == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: soak [--connections N] [--minutes M] [--publishers P] [--rate MSG_PER_S] [--warmup-seconds S] \
         [--config-line LINE]..."
    );
    ExitCode::FAILURE
}
