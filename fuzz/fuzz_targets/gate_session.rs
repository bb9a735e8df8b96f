//! libFuzzer target: see `dynsec_broker::fuzzing::gate_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::gate_session(data));
