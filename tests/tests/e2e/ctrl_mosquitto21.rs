//! mosquitto_ctrl 2.1.2 (the real one) against `dynsec-broker` and against mosquitto 2.1.2, on a
//! sequence using 2.1's additions — the `broker` module, getClient's `Connections`, roles with
//! `allowwildcardsubs` — must print the same bytes and exit the same way (listener ports aside);
//! `dynsec-ctrl`'s `broker` module must print what mosquitto_ctrl 2.1.2 prints; and
//! `dynsec-ctrl -f` edits a file that both mosquitto versions then load.
//!
//! Fails when mosquitto 2.1 is not installed, unless `DYNSEC_SKIP_ORACLE_21=1`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dynsec_tests::ctrl_harness::{Outcome, compare_everything, differences, parse_script, run_against, run_program};
use dynsec_tests::dynsec_target::{ADMIN, ADMIN_PASSWORD, DynsecBroker, Flavour, Setup};
use dynsec_tests::mosquitto::{Installation, Mosquitto, mosquitto_21, mosquitto_ctrl_init};
use dynsec_tests::rr;

/// The administrator may use the broker API; then 2.1's additions.
const SEQUENCE: &str = r#"
{conn} dynsec addRoleACL admin publishClientSend $CONTROL/broker/# allow
{conn} dynsec addRoleACL admin publishClientReceive $CONTROL/broker/# allow
{conn} dynsec addRoleACL admin subscribePattern $CONTROL/broker/# allow
{conn} broker listPlugins
{conn} broker listListeners
{conn} broker LISTPLUGINS
{conn} broker nope
{conn} broker help
{conn} dynsec createClient sensor -p sensor-pw
{conn} dynsec createRole strict
{conn} dynsec getClient admin
{conn} dynsec getClient sensor
{conn} dynsec listClients
{conn} dynsec getRole strict
{conn} dynsec listRoles
{conn} dynsec setClientPassword sensor other-pw
{conn} dynsec getClient nobody
"#;

/// mosquitto_ctrl 2.1.2, run through a script that gives it its own libmosquitto.
fn mosquitto_ctrl_21(installed: &Installation, dir: &Path) -> PathBuf {
    let wrapper = dir.join("mosquitto_ctrl-2.1");
    let ctrl = installed.broker().parent().and_then(Path::parent).unwrap().join("bin/mosquitto_ctrl");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nLD_LIBRARY_PATH={} exec {} \"$@\"\n", installed.lib_dir().display(), ctrl.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

fn start(flavour: Flavour) -> DynsecBroker {
    let setup = Setup { common: vec!["enable_control_api true".into()], ..Setup::default() };
    DynsecBroker::start(flavour, Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")), &setup)
}

/// Each outcome with the broker's own port written `PORT` (listListeners shows it).
fn without_port(outcomes: Vec<Outcome>, port: u16) -> Vec<Outcome> {
    let line = format!("Port:              {port}\n");
    outcomes
        .into_iter()
        .map(|o| Outcome {
            stdout: String::from_utf8_lossy(&o.stdout).replace(&line, "Port: PORT\n").into_bytes(),
            ..o
        })
        .collect()
}

#[test]
fn mosquitto_ctrl_2_1_prints_the_same_against_both_brokers() {
    let Some(installed) = mosquitto_21("mosquitto_ctrl_2_1_prints_the_same_against_both_brokers") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let ctrl = mosquitto_ctrl_21(&installed, scratch.path());
    let steps = compare_everything(&parse_script(SEQUENCE));
    let theirs_broker = start(Flavour::Mosquitto21);
    let theirs = without_port(run_against(&ctrl, &theirs_broker, &steps), theirs_broker.port());
    let ours_broker = start(Flavour::Ours);
    let ours = without_port(run_against(&ctrl, &ours_broker, &steps), ours_broker.port());
    let problems = differences(&steps, &theirs, &ours);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Not vacuous: 2.1.2 answered the broker module and showed the connections.
    let text = |o: &Outcome| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text(&theirs[3]).contains("Plugin:            dynamic-security"), "{:?}", theirs[3]);
    assert!(text(&theirs[4]).contains("Listener 1:"), "{:?}", theirs[4]);
    assert!(text(&theirs[10]).contains("127.0.0.1"), "{:?}", theirs[10]);

    // dynsec-ctrl's broker module prints what mosquitto_ctrl 2.1.2 prints (against 2.1.2).
    let ours_ctrl = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let broker_steps: Vec<_> =
        steps.iter().filter(|s| s.words.get(1).is_some_and(|w| w == "broker")).cloned().collect();
    let fresh = start(Flavour::Mosquitto21);
    run_against(&ctrl, &fresh, &steps[..3]);
    let reference = run_against(&ctrl, &fresh, &broker_steps);
    let candidate = run_against(ours_ctrl, &fresh, &broker_steps);
    // `broker help` is mosquitto_ctrl's exact text too.
    let problems = differences(&broker_steps, &reference, &candidate);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `-f FILE dynsec setClientPassword` (the one offline command of mosquitto_ctrl 2.1.2) prints
/// the same as mosquitto_ctrl 2.1.2 and leaves a file mosquitto 2.1.2 and 2.0.11 load with the
/// new password; dynsec-ctrl's other offline commands work there as well.
#[test]
fn offline_edits_load_in_mosquitto_2_1_and_2_0() {
    let Some(installed) = mosquitto_21("offline_edits_load_in_mosquitto_2_1_and_2_0") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let ctrl_21 = mosquitto_ctrl_21(&installed, scratch.path());
    let ours = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |program: &Path, file: &Path, words: &[&str]| {
        let mut args = vec!["-f".to_owned(), file.display().to_string(), "dynsec".to_owned()];
        args.extend(words.iter().map(|w| (*w).to_owned()));
        run_program(program, &args, None, &home)
    };
    let theirs_file = scratch.path().join("theirs.json");
    let ours_file = scratch.path().join("ours.json");
    mosquitto_ctrl_init(&theirs_file, ADMIN, ADMIN_PASSWORD);
    std::fs::copy(&theirs_file, &ours_file).unwrap();
    std::fs::set_permissions(&ours_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let theirs = run(&ctrl_21, &theirs_file, &["setClientPassword", ADMIN, "changed-pw"]);
    let ours_outcome = run(ours, &ours_file, &["setClientPassword", ADMIN, "changed-pw"]);
    assert_eq!(ours_outcome, theirs, "dynsec-ctrl -f against mosquitto_ctrl 2.1.2 -f");
    assert_eq!(theirs.status, Some(0), "{theirs:?}");
    // 2.1.2's `-i <iterations>`, and the words it refuses after the password.
    for words in [
        &["setClientPassword", ADMIN, "changed-pw", "-i", "5000"][..],
        &["setClientPassword", ADMIN, "changed-pw", "-i"],
        &["setClientPassword", ADMIN, "changed-pw", "-x", "5"],
        &["setClientPassword", ADMIN, "changed-pw", "-i", "5000", "extra"],
    ] {
        let theirs = run(&ctrl_21, &theirs_file, words);
        assert_eq!(run(ours, &ours_file, words), theirs, "{words:?}");
    }
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&ours_file).unwrap()).unwrap();
    let admin = saved["clients"].as_array().unwrap().iter().find(|c| c["username"] == ADMIN).unwrap();
    assert_eq!(admin["iterations"], 5000, "-i sets the PBKDF2 iterations: {admin}");
    for words in
        [&["createClient", "offline", "-p", "offline-pw"][..], &["createRole", "r"], &["addClientRole", "offline", "r"]]
    {
        let outcome = run(ours, &ours_file, words);
        assert_eq!((outcome.status, outcome.stderr.is_empty()), (Some(0), true), "{words:?}: {outcome:?}");
    }
    assert_eq!(std::fs::metadata(&ours_file).unwrap().permissions().mode() & 0o777, 0o640, "mode kept");

    for installation in [Some(&installed), None] {
        let run_dir = tempfile::tempdir().unwrap();
        let copy = run_dir.path().join("dynamic-security.json");
        std::fs::copy(&ours_file, &copy).unwrap();
        let plugin = installation.map_or_else(dynsec_tests::mosquitto::dynsec_plugin, |i| i.dynsec_plugin());
        let broker = Mosquitto::start_installed(
            installation,
            run_dir.path(),
            &[
                "allow_anonymous false".into(),
                format!("plugin {}", plugin.display()),
                format!("plugin_opt_config_file {}", copy.display()),
            ],
        );
        let get = r#"{"commands":[{"command":"getClient","username":"offline"}]}"#;
        let reply = rr::request(broker.port(), ADMIN, "changed-pw", get).unwrap();
        assert!(reply.contains(r#""rolename":"r""#), "{reply}");
        assert!(rr::request(broker.port(), ADMIN, ADMIN_PASSWORD, get).is_err(), "the old password is gone");
    }
}

/// dynsec-ctrl's getDetails and mosquitto_ctrl 2.1's shell forms of the modify commands
/// (`allowWildcardSubs`, `textName`, `textDescription`) print the same against `dynsec-broker`
/// and against mosquitto 2.1.2, and 2.1.2 took them as meant.
#[test]
fn dynsec_ctrl_2_1_forms_print_the_same_against_both_brokers() {
    if mosquitto_21("dynsec_ctrl_2_1_forms_print_the_same_against_both_brokers").is_none() {
        return;
    }
    let script = r#"
{conn} dynsec getDetails
{conn} dynsec createRole r
{conn} dynsec modifyRole r allowWildcardSubs false
{conn} dynsec modifyRole r textName Renamed textDescription Described
{conn} dynsec modifyRole r --allow-wildcard-subs TRUE
{conn} dynsec modifyRole r allowWildcardSubs maybe
{conn} dynsec createGroup g
{conn} dynsec modifyGroup g textName G
{conn} dynsec modifyClient admin textDescription Admin
{conn} --json dynsec getRole r
{conn} --json dynsec getGroup g
{conn} dynsec getDetails
{conn} dynsec createClient ivan -i ivan-id -p ivan-pw
{conn} dynsec getClient ivan
"#;
    let steps = compare_everything(&parse_script(script));
    let ours_ctrl = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let theirs = run_against(ours_ctrl, &start(Flavour::Mosquitto21), &steps);
    let ours = run_against(ours_ctrl, &start(Flavour::Ours), &steps);
    let problems = differences(&steps, &theirs, &ours);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let text = |o: &Outcome| String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(text(&theirs[0]), "Client count:   1\nGroup count:    0\nRole count:     1\nChange index:   0\n");
    assert!(
        text(&theirs[9]).contains(r#""textname":"Renamed","textdescription":"Described","allowwildcardsubs":true"#),
        "{:?}",
        theirs[9]
    );
    assert_eq!(theirs[5].status, Some(3), "{:?}", theirs[5]);
    assert!(text(&theirs[11]).contains("Change index:   7"), "{:?}", theirs[11]);
    assert!(text(&theirs[13]).contains("ivan-id"), "2.1's createClient -i sets the client id: {:?}", theirs[13]);
}
