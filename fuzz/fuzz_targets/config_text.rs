//! libFuzzer target: see `dynsec_broker::fuzzing::config_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::config_text(data));
