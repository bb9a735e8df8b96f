//! The admin tools against our broker: the real `mosquitto_ctrl` 2.0 gives the same stdout, stderr
//! and exit status against `dynsec-broker` as against mosquitto (a short provisioning script and
//! the whole recorded sequence `tests/data/ctrl_sequence.txt`); `dynsec-ctrl` against
//! `dynsec-broker` matches `mosquitto_ctrl` against mosquitto on that sequence; and
//! `dynsec-ctrl dynsec batch` provisions hundreds of clients on `dynsec-broker`.

use std::path::Path;

use dynsec_tests::ctrl_harness::{
    Outcome, Step, compare_everything, data_file, differences, parse_script, run_against, run_program,
};
use dynsec_tests::dynsec_target::{ADMIN, ADMIN_PASSWORD, DynsecBroker, Flavour, Login, Setup, credentials, login};

fn broker_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn dynsec_ctrl() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"))
}

fn start(flavour: Flavour) -> DynsecBroker {
    DynsecBroker::start(flavour, broker_binary(), &Setup::default())
}

/// Runs `steps` with `program` against a fresh broker of `flavour`.
fn run_on(flavour: Flavour, program: &Path, steps: &[Step]) -> Vec<Outcome> {
    let broker = start(flavour);
    run_against(program, &broker, steps)
}

/// Reference = mosquitto_ctrl on mosquitto; candidate = `program` on dynsec-broker.
fn compare(program: &Path, steps: &[Step]) -> (Vec<Outcome>, Vec<String>) {
    let (reference, candidate) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| run_on(Flavour::Mosquitto, Path::new("mosquitto_ctrl"), steps));
        let candidate = scope.spawn(|| run_on(Flavour::Ours, program, steps));
        (reference.join().expect("reference run"), candidate.join().expect("candidate run"))
    });
    let problems = differences(steps, &reference, &candidate);
    (reference, problems)
}

const PROVISIONING: &str = r#"
{conn} dynsec createClient sensor-1 -p sensor-pw
{conn} dynsec createClient sensor-1 -p again
{conn} dynsec createRole sensors
{conn} dynsec addRoleACL sensors publishClientSend "sensors/#" allow 5
{conn} dynsec addRoleACL sensors subscribeLiteral "sensors/cmd" deny
{conn} dynsec addRoleACL nosuchrole publishClientSend "x" allow
{conn} dynsec addClientRole sensor-1 sensors 3
{conn} dynsec addClientRole ghost sensors
{conn} dynsec getClient sensor-1
{conn} dynsec getRole sensors
{conn} dynsec listClients
{conn} dynsec listRoles
{conn} dynsec getClient ghost
"#;

#[test]
fn mosquitto_ctrl_sees_the_same_answers_from_both_brokers() {
    let steps = parse_script(PROVISIONING);
    let (reference, problems) = compare(Path::new("mosquitto_ctrl"), &steps);
    assert!(problems.is_empty(), "{} difference(s):\n{}", problems.len(), problems.join("\n"));
    // Not vacuous: the reference run printed the client with its role, and the errors.
    let get = String::from_utf8_lossy(&reference[8].stdout).into_owned();
    assert!(get.starts_with("Username: sensor-1\n") && get.contains("sensors (priority: 3)"), "{get}");
    assert_eq!(String::from_utf8_lossy(&reference[10].stdout), "admin\nsensor-1\n");
    assert!(String::from_utf8_lossy(&reference[1].stderr).ends_with("\ncreateClient: Error: Client already exists\n"));
}

#[test]
fn mosquitto_ctrl_whole_recorded_sequence_against_both_brokers() {
    let script = std::fs::read_to_string(data_file("ctrl_sequence.txt")).expect("read the sequence");
    // One program against two brokers: every line compared byte for byte.
    let steps = compare_everything(&parse_script(&script));
    let (reference, problems) = compare(Path::new("mosquitto_ctrl"), &steps);
    let printed = reference.iter().filter(|o| !o.stdout.is_empty()).count();
    assert!(printed >= 20, "only {printed} reference invocations printed anything");
    assert!(problems.is_empty(), "{} difference(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn dynsec_ctrl_on_our_broker_matches_mosquitto_ctrl_on_mosquitto() {
    let script = std::fs::read_to_string(data_file("ctrl_sequence.txt")).expect("read the sequence");
    let steps = parse_script(&script);
    let (reference, problems) = compare(dynsec_ctrl(), &steps);
    let printed = reference.iter().filter(|o| !o.stdout.is_empty()).count();
    assert!(printed >= 20, "only {printed} reference invocations printed anything");
    assert!(problems.is_empty(), "{} difference(s):\n{}", problems.len(), problems.join("\n"));
}

const BATCH_CLIENTS: usize = 500;

#[tokio::test]
async fn dynsec_ctrl_batch_provisions_500_clients_on_our_broker() {
    let broker = start(Flavour::Ours);
    let mut script = String::from("createRole device\naddRoleACL device publishClientSend \"devices/#\" allow\n");
    for i in 0..BATCH_CLIENTS {
        script.push_str(&format!("createClient dev{i:04} -p pw{i:04}\naddClientRole dev{i:04} device\n"));
    }
    script.push_str("listClients\n");
    let args: Vec<String> = ["-h", "127.0.0.1", "-p", &broker.port().to_string(), "-u", ADMIN, "-P", ADMIN_PASSWORD]
        .into_iter()
        .chain(["dynsec", "batch", "--batch-size", "100", "-"])
        .map(String::from)
        .collect();
    let config_home = broker.dir().join("ctrl-home");
    std::fs::create_dir_all(&config_home).unwrap();
    let outcome = tokio::task::spawn_blocking(move || run_program(dynsec_ctrl(), &args, Some(&script), &config_home))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert_eq!(outcome.status, Some(0), "{stderr}");
    let total = 2 + 2 * BATCH_CLIENTS + 1;
    assert!(stderr.ends_with(&format!("batch: {total} commands, {total} succeeded, 0 failed.\n")), "{stderr}");
    let listed: Vec<String> = String::from_utf8_lossy(&outcome.stdout).lines().map(String::from).collect();
    assert_eq!(listed.len(), BATCH_CLIENTS + 1, "listClients: admin + every device");
    assert!(listed.iter().any(|c| c == "dev0499"));
    for i in [0, 250, 499] {
        let id = format!("batch-check-{i}");
        let user = format!("dev{i:04}");
        let password = format!("pw{i:04}");
        let (outcome, _) = login(broker.addr(), &credentials(5, &id, Some(&user), Some(password.as_bytes()))).await;
        assert_eq!(outcome, Login::Connack(0), "{user} logs in");
    }
}
