//! Admin provisioning: the dynamic-security engine is opened from its `plugin_opt_*` options, and
//! a configuration file that does not exist yet is created with an `admin` client whose password
//! comes from the environment, from `plugin_opt_password_init_file`, or is generated (printed
//! once and saved beside the configuration, readable by its owner only).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dynsec::password::HashPolicy;
use dynsec::{Dynsec, Options};

use crate::Error;
use crate::config::PluginConfig;

/// Environment variables that give the admin password of a newly created configuration.
pub const ADMIN_PASSWORD_ENV: [&str; 2] = ["DYNSEC_ADMIN_PASSWORD", "MOSQUITTO_DYNSEC_PASSWORD"];

/// Engine options from `plugin_opt_*` lines (documented in the README).
fn dynsec_options(plugin: &PluginConfig) -> Result<Options, Error> {
    let mut options = Options::default();
    let at = &plugin.at;
    let parse_u32 = |key: &str, value: &str| {
        value.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
            Error::Security(format!("{at}: plugin_opt_{key}: expected a positive integer, got '{value}'"))
        })
    };
    let mut iterations = None;
    let mut algorithm = "pbkdf2";
    for (key, value) in &plugin.options {
        match key.as_str() {
            "config_file" | "password_init_file" => {}
            "password_hash" => match value.as_str() {
                "pbkdf2" | "sha512-pbkdf2" => algorithm = "pbkdf2",
                "argon2id" => algorithm = "argon2id",
                other => {
                    return Err(Error::Security(format!(
                        "{at}: plugin_opt_password_hash: unknown '{other}' (pbkdf2 or argon2id)"
                    )));
                }
            },
            "password_iterations" => iterations = Some(parse_u32(key, value)?),
            "snapshot_idle_ms" => options.snapshot_idle = Duration::from_millis(parse_u32(key, value)?.into()),
            "auth_cache_ms" => {
                options.auth_cache_ttl = Duration::from_millis(value.parse().map_err(|_| {
                    Error::Security(format!("{at}: plugin_opt_auth_cache_ms: expected milliseconds, got '{value}'"))
                })?)
            }
            other => tracing::warn!("{at}: unknown dynamic security option plugin_opt_{other} ignored"),
        }
    }
    options.hash_policy = match (algorithm, iterations) {
        ("argon2id", _) => HashPolicy::ARGON2ID_DEFAULT,
        (_, Some(iterations)) => HashPolicy::Pbkdf2Sha512 { iterations },
        _ => HashPolicy::default(),
    };
    Ok(options)
}

/// The admin password for a configuration created at start-up, and whether it was generated.
fn initial_admin_password(plugin: &PluginConfig) -> Result<(String, bool), Error> {
    for var in ADMIN_PASSWORD_ENV {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            return Ok((value, false));
        }
    }
    if let Some(file) = plugin.option("password_init_file") {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::Security(format!("plugin_opt_password_init_file {file}: {e}")))?;
        let first = text.lines().next().unwrap_or("").trim_end();
        if first.is_empty() {
            return Err(Error::Security(format!("plugin_opt_password_init_file {file}: the first line is empty")));
        }
        return Ok((first.to_owned(), false));
    }
    // 20 characters from a 62-symbol alphabet: about 119 bits.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| Error::Security(format!("no random bytes for the admin password: {e}")))?;
    // 256 % 62 leaves a bias of under 2 %, irrelevant for a 119-bit password.
    Ok((bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect(), true))
}

/// Saves a generated admin password beside the configuration, readable by its owner only.
fn save_generated_password(config_file: &Path, password: &str) -> Result<PathBuf, Error> {
    let mut path = config_file.as_os_str().to_owned();
    path.push(".pw");
    let path = PathBuf::from(path);
    dynsec::atomic_file::replace(&path, format!("admin {password}\n").as_bytes())
        .map_err(|e| Error::Security(format!("cannot save the generated admin password: {e}")))?;
    Ok(path)
}

/// The engine of the plugin line `plugin`, or `None` when it names no configuration file.
/// In a cluster (`cluster`), the node opens its own copy of the file (`crate::cluster::node_copy`).
pub(super) fn open_dynsec(
    plugin: &PluginConfig,
    cluster: Option<&crate::cluster::ClusterConfig>,
) -> Result<Option<Arc<Dynsec>>, Error> {
    let Some(file) = plugin.option("config_file") else {
        tracing::warn!("{}: dynamic security plugin has no plugin_opt_config_file; it stays inactive", plugin.at);
        return Ok(None);
    };
    let path = PathBuf::from(file);
    let path = match cluster {
        Some(cluster) => crate::cluster::node_copy(&path, &cluster.node_name).map_err(Error::Security)?,
        None => path,
    };
    let options = dynsec_options(plugin)?;
    crate::security::store_access::check(&path).map_err(|e| Error::Security(e.to_string()))?;
    let mut generated = None;
    let (engine, report) = Dynsec::open_or_init(&path, options, "admin", || match initial_admin_password(plugin) {
        Ok((password, was_generated)) => {
            if was_generated {
                generated = Some(password.clone());
            }
            password
        }
        Err(e) => {
            // Without a usable password source the admin gets an unguessable one nobody knows;
            // the error is reported and the admin can be reset offline.
            tracing::error!("{e}");
            generated = None;
            format!("{:x}", rand_u128())
        }
    })
    .map_err(|e| Error::Security(format!("dynamic security configuration {}: {e}", path.display())))?;
    if report.created_admin.is_some() {
        tracing::info!("created {} with an admin client 'admin'", path.display());
        if let Some(password) = generated {
            let saved = save_generated_password(&path, &password)?;
            // Printed once, on purpose: this is the only time the broker shows it.
            println!(
                "Generated password for dynamic security client 'admin': {password} (saved in {})",
                saved.display()
            );
        }
    }
    for warning in &report.warnings {
        tracing::warn!("{}: {}", path.display(), warning.0);
    }
    if report.replayed > 0 {
        tracing::info!("{}: {} journal records replayed", path.display(), report.replayed);
    }
    engine
        .spawn_maintenance()
        .map_err(|e| Error::Security(format!("cannot start the dynsec maintenance thread: {e}")))?;
    Ok(Some(engine))
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    u128::from_le_bytes(bytes)
}
