//! The `dynsec-broker` command line, mosquitto's: `dynsec-broker [-c FILE] [-p PORT] [-v]`, plus
//! `--version`; and the order of start-up: configuration, privileges, pid file, logging, runtime,
//! broker, readiness. `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::broker::Broker;
use crate::config::{Config, LogDest};
use crate::gate::tls::CertificateReloader;
use crate::security::Security;
use crate::security::chain::AuthChain;
use crate::service;

const USAGE: &str = "\
dynsec-broker: an MQTT broker compatible with mosquitto and its dynamic security plugin

Usage: dynsec-broker [-c config_file] [-p port] [-v]
       dynsec-broker --version

 -c : specify the broker config file (mosquitto.conf syntax).
      Without it: 127.0.0.1:1883, dynamic security on ./dynamic-security.json.
 -p : port of the default listener when the config file defines no listener.
 -v : verbose mode - enable all logging types. This overrides any logging options given in the config file.
 -h : show this help.
 --version : print the version and exit.
";

/// Parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub config_file: Option<PathBuf>,
    pub port: Option<u16>,
    pub verbose: bool,
    pub help: bool,
    pub version: bool,
}

/// Parses arguments (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config-file" => {
                let file = args.next().ok_or("Error: -c argument given, but no config file specified.")?;
                parsed.config_file = Some(PathBuf::from(file));
            }
            "-p" | "--port" => {
                let port = args.next().ok_or("Error: -p argument given, but no port specified.")?;
                let port = port.parse().ok().filter(|&p: &u16| p > 0);
                parsed.port = Some(port.ok_or("Error: Invalid port specified.")?);
            }
            "-v" | "--verbose" => parsed.verbose = true,
            "-h" | "--help" => parsed.help = true,
            "--version" => parsed.version = true,
            "-d" | "--daemon" => return Err("Error: -d (daemon) is not supported; use a service manager.".into()),
            other => return Err(format!("Error: Unknown option '{other}'.")),
        }
    }
    Ok(parsed)
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Catches SIGHUP from now on (so that one arriving while the broker starts is not fatal); once
/// the broker runs, [`reload_on_hangup`] serves the signals.
#[cfg(unix)]
fn catch_hangup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangup = signal(SignalKind::hangup());
    if hangup.is_err() {
        tracing::warn!("cannot listen for SIGHUP; reloading files needs a restart");
    }
    hangup.ok()
}

/// SIGHUP reopens the log files (for logrotate), reloads the TLS listeners' certificates, then
/// re-reads the reloadable security files (password_file, acl_file), as mosquitto does.
#[cfg(unix)]
fn reload_on_hangup(
    hangup: Option<tokio::signal::unix::Signal>,
    security: Arc<dyn Security>,
    certificates: CertificateReloader,
) {
    let Some(mut hangup) = hangup else { return };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            crate::logging::reopen_files();
            tracing::info!("SIGHUP received: reopened log files; reloading certificates and security files");
            certificates.reload();
            security.reload().await;
            tracing::info!("SIGHUP reload complete");
        }
    });
}

/// The whole program: arguments, configuration, logging, runtime, broker, shutdown.
pub fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    if args.help {
        print!("dynsec-broker version {}\n\n{USAGE}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("dynsec-broker version {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut config = match Config::load(args.config_file.as_deref(), args.port) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.verbose {
        config.log.level = Some(tracing::Level::DEBUG);
    }
    // mosquitto 2.0's order: drop privileges right after reading the configuration (while the
    // process has a single thread), then write the pid file and open the logs as that user.
    let dropped_to = match service::drop_privileges(config.service.user.as_deref()) {
        Ok(account) => account,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _pid_file = match config.service.pid_file.as_deref().map(service::PidFile::write).transpose() {
        Ok(pid_file) => pid_file,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = crate::logging::init(&config.log, crate::routing::router_drops::layer()) {
        eprintln!("Error: {error}");
        return ExitCode::FAILURE;
    }
    tracing::info!("dynsec-broker version {} starting", env!("CARGO_PKG_VERSION"));
    if let Some(account) = dropped_to {
        tracing::info!("Running as user '{account}'.");
    } else if rustix::process::geteuid().is_root() {
        tracing::warn!("Warning: dynsec-broker should not be run as root/administrator.");
    }
    match &config.source {
        Some(path) => tracing::info!("Config loaded from {}.", path.display()),
        None => tracing::info!("Using default config."),
    }
    if config.local_only {
        tracing::info!(
            "Starting in local only mode. Connections will only be possible from clients running on this machine."
        );
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // A fatal error is printed once: through the log when it goes to stderr, else on stderr too.
    let log_on_stderr = config.log.level.is_some() && config.log.dests.contains(&LogDest::Stderr);
    // One gate thread: tokio's current-thread scheduler. It runs woken tasks in the order their
    // sockets became ready, as mosquitto's one loop reads them; the multi-thread scheduler runs
    // the last woken task first (its LIFO slot), so a PUBLISH read just after another client's
    // SUBSCRIBE would overtake it (see routing/attach_fence.rs for the rest of that story).
    let mut builder = match config.gate.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads).thread_name("gate");
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let security = AuthChain::from_config(&config)?;
        #[cfg(unix)]
        let hangup = catch_hangup();
        let broker = Broker::start(config, Arc::clone(&security)).await?;
        #[cfg(unix)]
        reload_on_hangup(hangup, security, broker.certificate_reloader());
        tracing::info!("dynsec-broker running");
        service::notify_ready();
        broker
            .run_until(async {
                shutdown_signal().await;
                service::notify_stopping();
            })
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            if !log_on_stderr {
                eprintln!("Error: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn mosquitto_options() {
        let parsed = args(&["-c", "/etc/m.conf", "-p", "1884", "-v"]).unwrap();
        assert_eq!(parsed.config_file, Some(PathBuf::from("/etc/m.conf")));
        assert_eq!(parsed.port, Some(1884));
        assert!(parsed.verbose);
        assert!(args(&["-c"]).is_err());
        assert!(args(&["-p", "0"]).is_err());
        assert!(args(&["-p", "x"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["-d"]).is_err());
        assert!(args(&["--version"]).unwrap().version);
    }
}
