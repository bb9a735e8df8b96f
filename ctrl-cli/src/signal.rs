//! `dynsec-ctrl signal`: mosquitto_signal's job for a broker on this machine, found by process
//! id or by the pid file it writes (`pid_file`). `config-reload` and `log-rotate` send SIGHUP
//! (dynsec-broker, like mosquitto, reopens its log files and re-reads the files it can reload),
//! `shutdown` sends SIGINT (a graceful stop). mosquitto_signal's debug signals `tree-print` and
//! `xtreport` are refused: dynsec-broker does not handle them, and an unhandled signal would end
//! it. `-a` (every process of a given name) is not offered: name the broker you mean.

use std::io::Write;
use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

use crate::exit_code;
use crate::text::lossy;

const USAGE: &str = "\
dynsec-ctrl signal sends control signals to a running dynsec-broker or mosquitto.

Usage: dynsec-ctrl signal {-p <pid> | --pid-file <file>} <signal>
       dynsec-ctrl signal --help

<signal> may be one of:
 config-reload - reload the files the broker can reload (password_file, acl_file, certificates).
 log-rotate    - close and reopen the log files (`log_dest file`).
 shutdown      - stop the broker gracefully.
";

fn fail(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "Error: {message}");
    exit_code::USAGE
}

/// Runs `signal <args...>`; returns the exit status.
pub fn run(args: &[Vec<u8>]) -> i32 {
    if args.is_empty() || args.iter().any(|a| a == b"--help") {
        let _ = std::io::stdout().write_all(USAGE.as_bytes());
        return exit_code::USAGE;
    }
    let (pid, rest) = match args {
        [flag, value, rest @ ..] if flag == b"-p" => match lossy(value).trim().parse::<i32>() {
            Ok(pid) if pid > 0 => (pid, rest),
            _ => return fail("Process ID must be >0."),
        },
        [flag, file, rest @ ..] if flag == b"--pid-file" => match pid_from_file(Path::new(&lossy(file))) {
            Ok(pid) => (pid, rest),
            Err(message) => return fail(&message),
        },
        [flag] if flag == b"-p" => return fail("-p argument given but process ID missing."),
        [flag] if flag == b"--pid-file" => return fail("--pid-file argument given but no file specified."),
        [flag, ..] if flag == b"-a" => return fail("-a is not supported: use -p <pid> or --pid-file <file>."),
        _ => return fail("One of -p or --pid-file must be used."),
    };
    let signal = match rest {
        [] => return fail("No signal given."),
        [name] if name == b"config-reload" || name == b"log-rotate" => Signal::HUP,
        [name] if name == b"shutdown" => Signal::INT,
        [name] if name == b"tree-print" || name == b"xtreport" => {
            return fail(&format!("Signal '{}' is not supported by dynsec-broker.", lossy(name)));
        }
        [name] => return fail(&format!("Unknown signal '{}'.", lossy(name))),
        [_, extra, ..] => return fail(&format!("Unexpected argument '{}'.", lossy(extra))),
    };
    let Some(target) = Pid::from_raw(pid) else {
        return fail("Process ID must be >0.");
    };
    match kill_process(target, signal) {
        Ok(()) => exit_code::OK,
        Err(e) => fail(&format!("Error sending signal to process {pid}: {}", std::io::Error::from(e))),
    }
}

/// The process id a broker wrote to its `pid_file`: one decimal number, optionally followed by a
/// newline.
fn pid_from_file(file: &Path) -> Result<i32, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(format!("{}: does not hold a process ID", file.display())),
    }
}
