//! `dynsec-broker [-c FILE] [-p PORT] [-v]`: everything happens in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    dynsec_broker::cli::main()
}
