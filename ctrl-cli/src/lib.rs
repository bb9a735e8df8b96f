//! `dynsec-ctrl`: a drop-in replacement for `mosquitto_ctrl` (2.0) — same options, module words,
//! output bytes and exit statuses — plus offline `dynsec init`, `dynsec batch` for provisioning,
//! and a `passwd` module compatible with `mosquitto_passwd`.
//!
//! The binary's `main` calls [`main`]; everything else is reachable for tests.
#![forbid(unsafe_code)]

pub mod broker;
pub mod control;
pub mod dynsec;
pub mod exit_code;
pub mod mqtt;
pub mod options;
pub mod passwd;
pub mod progress;
pub mod prompt;
pub mod signal;
pub mod text;

use std::io::Write;
use std::process::ExitCode;

use options::{Environment, OptionStop};
use text::{eq_ignore_case, lossy};

/// Entry point of the `dynsec-ctrl` binary.
pub fn main() -> ExitCode {
    let args: Vec<Vec<u8>> = std::env::args_os().skip(1).map(os_bytes).collect();
    let code = run(&args, &Environment::from_process());
    let _ = std::io::stdout().flush();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(unix)]
fn os_bytes(arg: std::ffi::OsString) -> Vec<u8> {
    std::os::unix::ffi::OsStringExt::into_vec(arg)
}

#[cfg(not(unix))]
fn os_bytes(arg: std::ffi::OsString) -> Vec<u8> {
    arg.to_string_lossy().into_owned().into_bytes()
}

const USAGE: &str = "\
dynsec-ctrl administers Mosquitto-compatible brokers; it accepts mosquitto_ctrl's options and commands.

Usage: dynsec-ctrl [connection options] <module> <module-command> [command options]
       dynsec-ctrl dynsec help
       dynsec-ctrl broker listPlugins|listListeners|help
       dynsec-ctrl signal {-p <pid> | --pid-file <file>} config-reload|log-rotate|shutdown
       dynsec-ctrl dynsec init <file> <admin-username> [admin-password]
       dynsec-ctrl passwd [-H sha512|sha512-pbkdf2|argon2id] [-I iterations] [-c | -D] <file> <username>

Modules: broker, dynsec, passwd, signal. Module help: dynsec-ctrl dynsec help, dynsec-ctrl passwd.

Connection options: -h host, -p port, -u username, -P password, -i client-id, -q qos,
  -V mqttv5|mqttv311|mqttv31, -L mqtt(s)://[user[:password]@]host[:port]/topic, --unix path,
  -A bind-address, --cafile file, --capath dir, --cert file --key file, --insecure,
  --tls-version tlsv1.3|tlsv1.2, --ciphers list, --tls-alpn protocol, -o options-file,
  --timeout seconds (default 10), --json, -d, -v, --quiet, --help, --version.

";

fn print_usage() {
    let _ = std::io::stdout().write_all(USAGE.as_bytes());
    print_version();
}

fn print_version() {
    let _ = writeln!(
        std::io::stdout(),
        "dynsec-ctrl version {} (mosquitto_ctrl 2.0 compatible).",
        env!("CARGO_PKG_VERSION")
    );
}

/// Runs the command line (without the program name) and returns the exit status.
pub fn run(args: &[Vec<u8>], env: &Environment) -> i32 {
    if args.is_empty() {
        print_usage();
        return exit_code::USAGE;
    }
    // `passwd` takes mosquitto_passwd's options, not connection options.
    if eq_ignore_case(&args[0], "passwd") {
        return passwd::run(&args[1..]);
    }
    // `signal` takes mosquitto_signal's options, not connection options.
    if eq_ignore_case(&args[0], "signal") {
        return signal::run(&args[1..]);
    }
    let parsed = match options::parse_command_line(args, env) {
        Ok(parsed) => parsed,
        Err(failure) => {
            match failure.stop {
                OptionStop::Help => {
                    print_usage();
                    return exit_code::USAGE;
                }
                OptionStop::Version => {
                    print_version();
                    return exit_code::OK;
                }
                OptionStop::Error(message) => {
                    let _ = std::io::stderr().write_all(message.as_bytes());
                }
            }
            // mosquitto_ctrl then treats its leftover words as "module + command": with fewer
            // than two it shows the usage, otherwise it names the first word as the module.
            if failure.words_left < 2 {
                print_usage();
                return exit_code::USAGE;
            }
            return module_not_supported(&args[0]);
        }
    };
    if parsed.rest.len() < 2 {
        print_usage();
        return exit_code::USAGE;
    }
    let module = &parsed.rest[0];
    if eq_ignore_case(module, "dynsec") {
        dynsec::run(&parsed.rest[1..], &parsed.options)
    } else if eq_ignore_case(module, "broker") {
        broker::run(&parsed.rest[1..], &parsed.options)
    } else if eq_ignore_case(module, "passwd") {
        passwd::run(&parsed.rest[1..])
    } else {
        module_not_supported(module)
    }
}

fn module_not_supported(module: &[u8]) -> i32 {
    let _ = writeln!(std::io::stderr(), "Error: Module '{}' not supported.", lossy(module));
    exit_code::NOT_SUPPORTED
}
