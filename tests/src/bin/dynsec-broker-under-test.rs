//! The `dynsec-broker` binary's entry point, built inside this crate so that integration tests here
//! get its path from Cargo (`CARGO_BIN_EXE_dynsec-broker-under-test`), always up to date.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    dynsec_broker::cli::main()
}
