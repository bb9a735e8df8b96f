//! The `cluster_*` directives of mosquitto.conf: where NATS is, who this node is, how it logs in
//! and which CA its TLS is checked against. Without `cluster_nats_url` the broker is a single node
//! and never talks to NATS (docs/cluster.md).

use std::path::PathBuf;

use crate::config::{ConfigError, Directive, Location};

/// A node's cluster settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster_nats_url`: one or more NATS URLs, comma-separated (`nats://` or `tls://`).
    pub nats_url: String,
    /// `cluster_node_name`: unique per node; names this node's copy of the dynamic-security file.
    pub node_name: String,
    /// `cluster_name` (default `dynsec`): the prefix of every subject and of the stream's name,
    /// so that several clusters can share one NATS.
    pub name: String,
    /// `cluster_nats_user` and `cluster_nats_password`.
    pub user_password: Option<(String, String)>,
    /// `cluster_nats_creds`: a NATS credentials file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
    /// `cluster_nats_cafile`: the CA that signs the NATS servers' certificates; TLS is then required.
    pub ca_file: Option<PathBuf>,
    /// `cluster_replicas` (default 1): JetStream replicas of the security log (3 in production).
    pub replicas: usize,
    /// `cluster_snapshot_every` (default 1000): log entries between two snapshots of the security
    /// state, which bound what a (re)starting node reads.
    pub snapshot_every: u64,
    /// `cluster_forward_by_interest` (default false): subscribe on NATS only to the node's
    /// filters for QoS 0 messages (`cluster::interest`).
    pub forward_by_interest: bool,
}

/// The directives as they are read, checked together at the end.
#[derive(Debug, Default)]
pub struct ClusterDirectives {
    nats_url: Option<String>,
    node_name: Option<String>,
    name: Option<String>,
    user: Option<String>,
    password: Option<String>,
    creds_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    replicas: Option<usize>,
    snapshot_every: Option<u64>,
    forward_by_interest: Option<bool>,
    first: Option<Location>,
}

fn error(at: &Location, message: impl Into<String>) -> ConfigError {
    ConfigError::At { file: at.file.clone(), line: at.line, message: message.into() }
}

/// A name usable as one NATS subject token and in a file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterDirectives {
    /// Takes a `cluster_*` directive; `Ok(false)` for any other.
    pub fn apply(&mut self, d: &Directive) -> Result<bool, ConfigError> {
        let Some(key) = d.key.strip_prefix("cluster_") else { return Ok(false) };
        let value = d.rest.trim();
        if value.is_empty() {
            return Err(error(&d.at, format!("missing value for {}", d.key)));
        }
        let number =
            |what: &str| -> Result<u64, ConfigError> {
                value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    error(&d.at, format!("invalid {} value ({value}): expected a positive {what}", d.key))
                })
            };
        match key {
            "nats_url" => self.nats_url = Some(value.to_owned()),
            "node_name" | "name" => {
                if !valid_name(value) {
                    return Err(error(
                        &d.at,
                        format!("invalid {} ({value}): use 1 to 64 letters, digits, '-' or '_'", d.key),
                    ));
                }
                if key == "name" {
                    self.name = Some(value.to_owned());
                } else {
                    self.node_name = Some(value.to_owned());
                }
            }
            "nats_user" => self.user = Some(value.to_owned()),
            "nats_password" => self.password = Some(value.to_owned()),
            "nats_creds" => self.creds_file = Some(PathBuf::from(value)),
            "nats_cafile" => self.ca_file = Some(PathBuf::from(value)),
            "replicas" => {
                let n = number("integer")?;
                if n > 5 {
                    return Err(error(&d.at, format!("invalid cluster_replicas ({n}): JetStream allows 1 to 5")));
                }
                self.replicas = Some(n as usize);
            }
            "snapshot_every" => self.snapshot_every = Some(number("number of entries")?),
            "forward_by_interest" => {
                self.forward_by_interest = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(error(&d.at, format!("invalid {} value ({value}): expected true or false", d.key)));
                    }
                })
            }
            _ => return Err(error(&d.at, format!("unknown directive {}", d.key))),
        }
        self.first.get_or_insert_with(|| d.at.clone());
        Ok(true)
    }

    /// The cluster settings, `None` without any `cluster_*` line.
    pub fn finish(self) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(at) = self.first else { return Ok(None) };
        let nats_url =
            self.nats_url.ok_or_else(|| error(&at, "cluster_* given without cluster_nats_url (where NATS is)"))?;
        let node_name = self
            .node_name
            .ok_or_else(|| error(&at, "cluster_nats_url needs cluster_node_name (unique for each node)"))?;
        let user_password = match (self.user, self.password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => return Err(error(&at, "cluster_nats_user and cluster_nats_password go together")),
        };
        if user_password.is_some() && self.creds_file.is_some() {
            return Err(error(&at, "use either cluster_nats_user/cluster_nats_password or cluster_nats_creds"));
        }
        Ok(Some(ClusterConfig {
            nats_url,
            node_name,
            name: self.name.unwrap_or_else(|| "dynsec".to_owned()),
            user_password,
            creds_file: self.creds_file,
            ca_file: self.ca_file,
            replicas: self.replicas.unwrap_or(1),
            snapshot_every: self.snapshot_every.unwrap_or(1000),
            forward_by_interest: self.forward_by_interest.unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Option<ClusterConfig>, ConfigError> {
        let mut directives = ClusterDirectives::default();
        for d in crate::config::parse_text("test.conf", text)? {
            assert!(directives.apply(&d)?, "{} not taken", d.key);
        }
        directives.finish()
    }

    #[test]
    fn nothing_configured_is_a_single_node() {
        assert_eq!(read("").unwrap(), None);
    }

    #[test]
    fn a_node_with_credentials_and_tls() {
        let config = read(
            "cluster_nats_url tls://127.0.0.1:4222\ncluster_node_name a-1\ncluster_nats_user u\n\
             cluster_nats_password p w\ncluster_nats_cafile /etc/ca.pem\ncluster_replicas 3\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(config.nats_url, "tls://127.0.0.1:4222");
        assert_eq!(config.node_name, "a-1");
        assert_eq!(config.name, "dynsec");
        assert_eq!(config.user_password, Some(("u".into(), "p w".into())));
        assert_eq!(config.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!((config.replicas, config.snapshot_every), (3, 1000));
    }

    #[test]
    fn incomplete_or_invalid_settings_name_the_line() {
        let missing_node = read("cluster_nats_url nats://127.0.0.1:4222\n").unwrap_err().to_string();
        assert!(missing_node.contains("test.conf:1") && missing_node.contains("cluster_node_name"), "{missing_node}");
        assert!(read("cluster_node_name a\n").unwrap_err().to_string().contains("cluster_nats_url"));
        assert!(read("cluster_nats_url n\ncluster_node_name a.b\n").unwrap_err().to_string().contains("test.conf:2"));
        assert!(read("cluster_nats_url n\ncluster_node_name a\ncluster_nats_user u\n").is_err());
        assert!(read("cluster_nats_url n\ncluster_node_name a\ncluster_replicas 7\n").is_err());
        assert!(read("cluster_nats_url n\ncluster_node_name a\ncluster_bogus 1\n").is_err());
        assert!(read("cluster_nats_url n\ncluster_node_name a\ncluster_forward_by_interest yes\n").is_err());
        let interest = read("cluster_nats_url n\ncluster_node_name a\ncluster_forward_by_interest true\n");
        assert!(interest.unwrap().unwrap().forward_by_interest);
        let both = "cluster_nats_url n\ncluster_node_name a\ncluster_nats_user u\ncluster_nats_password p\ncluster_nats_creds c\n";
        assert!(read(both).is_err());
    }
}
