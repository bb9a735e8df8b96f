//! Replays the fuzzers' committed inputs through the same entry points the libFuzzer targets call
//! (`dynsec_broker::fuzzing`): the seeds (`fuzz/seeds/<target>/`), the minimised corpus
//! (`fuzz/corpus/<target>/`) and every crash a fuzzer ever found (`fuzz/regressions/<target>/`,
//! each a regression test). Any panic fails the test; `gate_session` aborts on a panic in a broker
//! task. The fuzzers themselves run with `scripts/fuzz.sh`.

use std::path::{Path, PathBuf};

use dynsec_broker::fuzzing;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for kind in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                inputs.push((path, bytes));
            }
        }
    }
    inputs.sort();
    inputs
}

fn replay(target: &str, body: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no committed inputs for {target}");
    for (path, bytes) in &inputs {
        // Named on stderr first, so that an abort still says which input caused it.
        eprintln!("{target}: {}", path.display());
        body(bytes);
    }
}

#[test]
fn control_commands() {
    replay("control_commands", fuzzing::control_commands);
}

#[test]
fn config_text() {
    replay("config_text", fuzzing::config_text);
}

#[test]
fn password_file() {
    replay("password_file", fuzzing::password_file);
}

#[test]
fn acl_file() {
    replay("acl_file", fuzzing::acl_file);
}

#[test]
fn packet_codec() {
    replay("packet_codec", fuzzing::packet_codec);
}

#[test]
fn gate_session() {
    replay("gate_session", fuzzing::gate_session);
    // The in-process broker behind the target really answers: the admin's CONNECT (selector bits
    // 1 and 2: MQTT 5, admin credentials) is accepted and a PINGREQ answered, then EOF closes.
    let reply = fuzzing::gate_exchange(&[0b011, 0xC0, 0x00]);
    assert!(reply.starts_with(&[0x20]), "no CONNACK: {reply:?}");
    let connack_len = 2 + usize::from(reply[1]);
    assert_eq!(reply[3], 0, "admin refused: {reply:?}");
    assert_eq!(&reply[connack_len..], &[0xD0, 0x00], "no PINGRESP: {reply:?}");
}

#[test]
fn router_session() {
    replay("router_session", fuzzing::router_session);
}
