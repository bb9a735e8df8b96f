//! `dynsec-ctrl` against `mosquitto_ctrl`: the same script of invocations (data file
//! `tests/data/ctrl_sequence.txt`), each tool against its own fresh real mosquitto 2.0 with the
//! dynamic-security plugin; stdout, stderr and exit statuses must be identical except where the
//! script marks a documented difference.

use std::path::Path;

use dynsec_tests::ctrl_harness::{Endpoint, Outcome, Run, Step, data_file, differences, parse_script};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_ctrl_init, unused_port};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

fn candidate_program() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"))
}

/// Runs the script with `program` against a new mosquitto whose configuration `dynsec init` made.
fn run_against_fresh_mosquitto(program: &Path, steps: &[Step]) -> Vec<Outcome> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("dynamic-security.json");
    mosquitto_ctrl_init(&config, ADMIN, ADMIN_PASSWORD);
    let broker = Mosquitto::with_dynsec(dir.path(), &config);
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        admin_user: ADMIN.into(),
        admin_password: ADMIN_PASSWORD.into(),
    };
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(&workdir).expect("work dir");
    let run = Run { program, endpoint: &endpoint, workdir: &workdir, closed_port: unused_port() };
    run.run(steps)
}

#[test]
fn dynsec_ctrl_matches_mosquitto_ctrl_on_the_recorded_sequence() {
    let script = std::fs::read_to_string(data_file("ctrl_sequence.txt")).expect("read the sequence");
    let steps = parse_script(&script);
    assert!(steps.len() >= 40, "the sequence must hold at least 40 invocations, has {}", steps.len());

    let (reference, candidate) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| run_against_fresh_mosquitto(Path::new("mosquitto_ctrl"), &steps));
        let candidate = scope.spawn(|| run_against_fresh_mosquitto(candidate_program(), &steps));
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
