//! The full persistence crash run (issue 18):
//! `persistence-crash-harness [--iterations N] [--seed S] [--max-kill-delay-ms M]`.
//! Uses the broker shim built beside this binary (`cargo build -p dynsec-tests` builds both).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dynsec_tests::persistence_crash::{Options, run};

fn main() -> ExitCode {
    let mut options = Options {
        binary: std::env::current_exe().map(|p| p.with_file_name("dynsec-broker-under-test")).unwrap_or_default(),
        iterations: 50,
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        max_kill_delay: Duration::from_millis(400),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--iterations", Some(v)) => options.iterations = v as usize,
            ("--seed", Some(v)) => options.seed = v,
            ("--max-kill-delay-ms", Some(v)) => options.max_kill_delay = Duration::from_millis(v),
            _ => {
                eprintln!("usage: persistence-crash-harness [--iterations N] [--seed S] [--max-kill-delay-ms M]");
                return ExitCode::FAILURE;
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("dynsec-persistence-crash-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    println!(
        "persistence crash harness: {} iterations, seed {}, files in {}",
        options.iterations,
        options.seed,
        dir.display()
    );
    let started = Instant::now();
    match run(&options, &dir, |i, _| eprint!("\r{}/{} kills", i + 1, options.iterations)) {
        Ok(report) => {
            eprintln!();
            println!("PASS in {:.1?}: {}", started.elapsed(), report.summary());
            let _ = std::fs::remove_dir_all(&dir);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!();
            println!("FAIL (seed {}): {e}\nfiles kept in {}", options.seed, dir.display());
            ExitCode::FAILURE
        }
    }
}
