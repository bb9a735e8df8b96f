//! The `dynsec` module: `help`, offline `init`, `batch`, and every command of the dynamic
//! security plugin, sent one per invocation as mosquitto_ctrl does.

pub mod batch;
pub mod commands;
pub mod help;
pub mod init;
pub mod migrate;
pub mod offline;
pub mod print;

use std::io::Write;

use dynsec::json::Json;

use crate::control::{self, ControlClient, Credentials};
use crate::exit_code;
use crate::options::ConnectionOptions;
use crate::prompt::get_password;
use crate::text::{eq_ignore_case, lossy};
use commands::{BuildError, Terminal};

/// Runs `dynsec <args...>`; returns the exit status.
pub fn run(args: &[Vec<u8>], options: &ConnectionOptions) -> i32 {
    let Some(subcommand) = args.first() else {
        return exit_code::USAGE;
    };
    if eq_ignore_case(subcommand, "help") {
        help::print();
        return exit_code::OK;
    }
    if eq_ignore_case(subcommand, "init") {
        return init::run(&args[1..]);
    }
    if eq_ignore_case(subcommand, "migrate") {
        return migrate::run(&args[1..]);
    }
    if eq_ignore_case(subcommand, "batch") {
        return batch::run(&args[1..], options);
    }
    // `-f FILE setClientPassword <username> <password> -i <iterations>` (mosquitto_ctrl 2.1).
    let (args, policy) = match &options.data_file {
        Some(_) => match offline::hash_policy(args) {
            Ok(split) => split,
            Err(status) => return status,
        },
        None => (args, dynsec::password::HashPolicy::default()),
    };
    match commands::build(args, &mut Terminal) {
        Ok(command) => {
            let verbose_list = command.get("verbose").and_then(Json::as_bool).unwrap_or(false);
            let style = print::Style { raw_json: options.json_output, verbose_list };
            match &options.data_file {
                Some(file) => offline::run(file, command, style, policy),
                None => send_one(options, command, style),
            }
        }
        Err(BuildError::Unknown(word)) => {
            eprint(&format!("Command '{}' not recognised.\n", lossy(&word)));
            exit_code::UNKNOWN_COMMAND
        }
        Err(BuildError::InvalidArguments) => {
            eprint(&format!("Error: {}\n", exit_code::strerror(exit_code::INVALID_ARGUMENTS)));
            exit_code::INVALID_ARGUMENTS
        }
        Err(BuildError::Aborted) => exit_code::OK,
    }
}

pub(crate) fn eprint(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The steps mosquitto_ctrl takes before connecting: the plain-text warning, then the password
/// prompt for `-u` without `-P`, then the TLS settings. `Err` carries the exit status.
pub(crate) fn prepare_connection(
    options: &ConnectionOptions,
) -> Result<(Credentials, Option<std::sync::Arc<rustls::ClientConfig>>), i32> {
    if !options.tls.enabled() {
        eprint(
            "Warning: You are running mosquitto_ctrl without encryption.\nThis means all of the configuration changes you are making are visible on the network, including passwords.\n\n",
        );
    }
    if options.proxy.is_some() {
        eprint("Error: --proxy (SOCKS5) is not supported by dynsec-ctrl.\n");
        return Err(exit_code::USAGE);
    }
    let mut password = options.password.clone();
    if let (Some(username), None) = (&options.username, &password) {
        match get_password(&format!("Password for {}: ", lossy(username)), None, false) {
            Ok(answer) => password = Some(answer),
            Err(_) => {
                eprint("Error getting password.\n");
                return Err(exit_code::USAGE);
            }
        }
    }
    if options.username.is_none() && password.is_some() {
        eprint("Error: Problem setting username and/or password.\n");
        return Err(exit_code::USAGE);
    }
    let tls = control::tls_config(options).map_err(|message| {
        eprint(&format!("{message}\n"));
        exit_code::USAGE
    })?;
    let credentials =
        Credentials { username: options.username.as_deref().map(lossy), password: password.as_deref().map(lossy) };
    Ok((credentials, tls))
}

/// A single-threaded runtime: the CLI does one thing at a time.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprint(&format!("Error: unable to start the network runtime: {e}\n"));
            None
        }
    }
}

fn send_one(options: &ConnectionOptions, command: Json, style: print::Style) -> i32 {
    let (credentials, tls) = match prepare_connection(options) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return exit_code::USAGE;
    };
    let result = runtime.block_on(async {
        let mut client = ControlClient::open(options, &credentials, tls).await?;
        let reply = client.send(vec![command]).await;
        client.close().await;
        reply
    });
    match result {
        Ok(reply) => {
            let output = print::print_reply(&strip_correlation(&reply.tree, options.json_output), style);
            let _ = std::io::stdout().write_all(&output.stdout);
            let _ = std::io::stderr().write_all(&output.stderr);
            exit_code::OK
        }
        Err(error) => {
            eprint(&format!("{}\n", error.message()));
            error.exit_code()
        }
    }
}

/// For `--json`, the reply is shown without the correlationData dynsec-ctrl added itself.
fn strip_correlation(tree: &Json, raw_json: bool) -> Vec<u8> {
    if !raw_json {
        return tree.to_compact();
    }
    let responses = tree.get("responses").and_then(Json::as_array).map(|responses| {
        responses
            .iter()
            .map(|r| match r {
                Json::Object(members) => Json::Object(
                    members.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(b"correlationData")).cloned().collect(),
                ),
                other => other.clone(),
            })
            .collect::<Vec<_>>()
    });
    match responses {
        Some(responses) => Json::object().with("responses", Json::Array(responses)).to_compact(),
        None => tree.to_compact(),
    }
}
