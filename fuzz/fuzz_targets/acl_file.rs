//! libFuzzer target: see `dynsec_broker::fuzzing::acl_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::acl_file(data));
