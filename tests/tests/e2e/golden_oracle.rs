//! The golden control scripts replayed against the real mosquitto 2.0.11 with its dynsec plugin:
//! every expected reply is mosquitto's own, except where a script records the `<2.0.11` reply
//! next to ours because we deliberately follow a later mosquitto fix. This is what makes the
//! engine's golden test a compatibility test rather than a self-consistency test.

use dynsec::golden::{parse_script, scripts};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_ctrl_init};
use dynsec_tests::rr;

const ADMIN_PASSWORD: &str = "golden-admin-pw";

#[test]
fn golden_scripts_are_mosquitto_2_0_11_replies() {
    let mut failures = Vec::new();
    let mut sent = 0;
    for path in scripts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dynamic-security.json");
        mosquitto_ctrl_init(&file, "admin", ADMIN_PASSWORD);
        let broker = Mosquitto::with_dynsec(dir.path(), &file);
        for step in parse_script(&path).into_iter().filter(|s| !s.oracle_skip) {
            let expected = step.oracle_expected.as_ref().unwrap_or(&step.expected);
            match rr::request(broker.port(), "admin", ADMIN_PASSWORD, &step.request) {
                Ok(reply) if reply == *expected => {}
                Ok(reply) => failures.push(format!(
                    "{}:{}\n  expected {expected}\n  mosquitto {reply}",
                    path.display(),
                    step.line
                )),
                Err(e) => failures.push(format!("{}:{}: {e}\n{}", path.display(), step.line, broker.log())),
            }
            sent += 1;
        }
    }
    assert!(sent >= 60, "only {sent} requests replayed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
