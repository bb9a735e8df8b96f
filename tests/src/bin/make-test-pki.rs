//! Writes the test certificates of [`dynsec_tests::certs`] into a directory (for trying the TLS
//! example configuration by hand): `make-test-pki DIR`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: make-test-pki DIR");
        return std::process::ExitCode::FAILURE;
    };
    dynsec_tests::certs::generate(std::path::Path::new(&dir));
    std::process::ExitCode::SUCCESS
}
