//! Crash safety in CI: a short run of the crash harness (SIGKILL at random moments while
//! provisioning through `$CONTROL`, restart, every acknowledged change present). The full 50-kill
//! run is `cargo run --release -p dynsec-tests --bin crash-harness`; its figures are in
//! docs/reliability.md.

use std::time::Duration;

use dynsec_tests::crash::{Options, run};

#[test]
fn acknowledged_changes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        binary: env!("CARGO_BIN_EXE_dynsec-broker-under-test").into(),
        iterations: 6,
        seed: 0x5eed,
        max_kill_delay: Duration::from_millis(300),
    };
    let report = run(&options, dir.path(), |_, _| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.iterations, 6);
    assert!(report.acknowledged_creates > 0, "{}", report.summary());
}
