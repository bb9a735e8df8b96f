//! `dynsec-ctrl` against `mosquitto_ctrl`: the same script of invocations (data file
//! `tests/data/ctrl_sequence.txt`), each tool against its own fresh real mosquitto 2.0 with the
//! dynamic-security plugin; stdout, stderr and exit statuses must be identical except where the
//! script marks a documented difference.

use std::path::Path;

use dynsec_tests::ctrl_harness::{data_file, differences, parse_script, run_with_fresh_mosquitto};

fn candidate_program() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"))
}

#[test]
fn dynsec_ctrl_matches_mosquitto_ctrl_on_the_recorded_sequence() {
    let script = std::fs::read_to_string(data_file("ctrl_sequence.txt")).expect("read the sequence");
    let steps = parse_script(&script);
    assert!(steps.len() >= 40, "the sequence must hold at least 40 invocations, has {}", steps.len());

    let (reference, candidate) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| run_with_fresh_mosquitto(Path::new("mosquitto_ctrl"), &steps));
        let candidate = scope.spawn(|| run_with_fresh_mosquitto(candidate_program(), &steps));
        (reference.join().expect("reference run"), candidate.join().expect("candidate run"))
    });

    // Guard against a vacuous pass (both tools failing the same way): the reference run must
    // have reached the broker and printed real data.
    let printed = reference.iter().filter(|o| !o.stdout.is_empty()).count();
    assert!(printed >= 20, "only {printed} reference invocations printed anything");
    let alice = steps.iter().position(|s| s.text == "{conn} dynsec getClient alice").expect("getClient alice step");
    assert!(String::from_utf8_lossy(&reference[alice].stdout).starts_with("Username: alice\n"));

    let problems = differences(&steps, &reference, &candidate);
    assert!(problems.is_empty(), "{} difference(s):\n{}", problems.len(), problems.join("\n"));
}
