//! Several broker nodes as one (docs/cluster.md), on NATS with JetStream: the dynamic-security
//! configuration is shared through a replicated log ([`security_log`]), and messages published on
//! one node reach subscribers on every node ([`messages`]; QoS 1/2 through JetStream, [`reliable`]), `$share` groups spanning the nodes
//! ([`shared_groups`]). Within a node, rumqttd still routes.
//! Without `cluster_nats_url` none of this runs and NATS is not needed.

pub mod admission;
mod batch;
pub mod client_ids;
pub mod config;
pub mod interest;
pub mod messages;
pub mod properties;
pub mod reliable;
mod remote;
pub mod security_log;
pub mod session_moves;
pub mod shared_groups;
pub mod subject;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::{ClusterConfig, ClusterDirectives};

/// How long the first connection to NATS may take before the broker gives up starting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a part of the broker needs to join the cluster.
pub struct Membership {
    pub client: async_nats::Client,
    pub config: ClusterConfig,
}

/// Connects to NATS with the configured credentials and TLS; reconnects for ever afterwards.
pub async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("dynsec-broker {}", config.node_name))
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None);
    if let Some((user, password)) = &config.user_password {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(creds) = &config.creds_file {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| format!("cluster_nats_creds {}: {e}", creds.display()))?;
    }
    if let Some(ca) = &config.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let mut addresses = Vec::new();
    let mut url_credentials = None;
    for url in config.nats_url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        // Credentials written into a URL are taken out of it, so that the client library never
        // holds (or prints) them as part of an address.
        let (url, credentials) = split_credentials(url);
        url_credentials = url_credentials.or(credentials);
        let address = url.parse::<async_nats::ServerAddr>();
        addresses.push(address.map_err(|e| format!("cluster_nats_url {}: {e}", redacted(&url)))?);
    }
    if config.user_password.is_none()
        && let Some((user, password)) = url_credentials
    {
        options = options.user_and_password(user, password);
    }
    let connecting = options.connect(addresses);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect to NATS at {}: {e}", redacted(&config.nats_url))),
        Err(_) => {
            Err(format!("cannot connect to NATS at {}: no answer in {CONNECT_TIMEOUT:?}", redacted(&config.nats_url)))
        }
    }
}

/// `scheme://user:password@host` → (`scheme://host`, the user and password).
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let (user, password) = url[scheme + 3..at].split_once(':').unwrap_or((&url[scheme + 3..at], ""));
            (format!("{}{}", &url[..scheme + 3], &url[at + 1..]), Some((user.to_owned(), password.to_owned())))
        }
        _ => (url.to_owned(), None),
    }
}

/// `urls` for a log line: a password written into a URL (`nats://user:secret@host`) is hidden.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// This node's own copy of the dynamic-security file `seed` (`dynamic-security.json` →
/// `dynamic-security.node-<name>.json`), created from `seed` when missing. Several nodes may share
/// one seed file; each writes only its copy.
pub fn node_copy(seed: &Path, node_name: &str) -> Result<PathBuf, String> {
    let stem = seed.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let extension = seed.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let copy = seed.with_file_name(format!("{stem}.node-{node_name}{extension}"));
    if !copy.exists()
        && let Ok(bytes) = std::fs::read(seed)
    {
        dynsec::atomic_file::create_new(&copy, &bytes).map_err(|e| format!("{}: {e}", copy.display()))?;
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_urls_are_not_logged() {
        assert_eq!(super::redacted("nats://u:pw@h:4222,tls://h2:4222"), "nats://***@h:4222,tls://h2:4222");
        assert_eq!(super::redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        let (url, credentials) = super::split_credentials("nats://u:p:w@h:4222");
        assert_eq!((url.as_str(), credentials), ("nats://h:4222", Some(("u".into(), "p:w".into()))));
    }
}
