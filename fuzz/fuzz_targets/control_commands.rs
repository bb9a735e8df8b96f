//! libFuzzer target: see `dynsec_broker::fuzzing::control_commands`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::control_commands(data));
