//! libFuzzer target: see `dynsec_broker::fuzzing::packet_codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynsec_broker::fuzzing::packet_codec(data));
