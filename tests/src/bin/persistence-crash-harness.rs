//! The full persistence crash run (issue 18):
//! `persistence-crash-harness [--autosave] [--iterations N] [--seed S] [--max-kill-delay-ms M]`.
//! `--autosave`: `gate_persistence_mode autosave` with `autosave_interval 0` (the log synced only
//! at shutdown: a SIGKILL must still lose nothing acknowledged, docs/persistence.md).
//! Uses the broker shim built beside this binary (`cargo build -p dynsec-tests` builds both).

use std::process::ExitCode;
use std::time::Instant;

use dynsec_tests::persistence_crash::{Options, run_with};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let autosave = args.iter().any(|a| a == "--autosave");
    args.retain(|a| a != "--autosave");
    let extra = if autosave { "gate_persistence_mode autosave\nautosave_interval 0\n" } else { "" };
    let options = match Options::from_args("persistence-crash-harness [--autosave]", args) {
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
        "persistence crash harness ({} mode): {} iterations, seed {}, files in {}",
        if autosave { "autosave" } else { "durable" },
        options.iterations,
        options.seed,
        dir.display()
    );
    let started = Instant::now();
    match run_with(&options, &dir, extra, |i, _| eprint!("\r{}/{} kills", i + 1, options.iterations)) {
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
