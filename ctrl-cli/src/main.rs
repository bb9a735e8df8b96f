//! `dynsec-ctrl`: everything lives in the library; see `dynsec_ctrl::main`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    dynsec_ctrl::main()
}
