//! The full persistence crash run (issue 18):
//! `persistence-crash-harness [--iterations N] [--seed S] [--max-kill-delay-ms M]`.
//! Uses the broker shim built beside this binary (`cargo build -p dynsec-tests` builds both).

use std::process::ExitCode;
use std::time::Instant;

use dynsec_tests::persistence_crash::{Options, run};

fn main() -> ExitCode {
    let options = match Options::from_args("persistence-crash-harness", std::env::args().skip(1)) {
        Ok(options) => options,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::FAILURE;
        }
    };
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
