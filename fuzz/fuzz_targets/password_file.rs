//! libFuzzer target: see `dynsec_broker::fuzzing::password_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::password_file(data));
