//! libFuzzer target: see `dynsec_broker::fuzzing::router_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::router_session(data));
