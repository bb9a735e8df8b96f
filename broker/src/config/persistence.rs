//! The persistence directives, with mosquitto's meanings (`persistence`, `persistence_location`,
//! `persistence_file`, `autosave_interval`, `autosave_on_changes`, `persistent_client_expiration`,
//! `max_queued_messages`, `max_queued_bytes`, `queue_qos0_messages`, `retain_available`) and the
//! one of our own, `gate_persistence_mode`. What they do is in docs/persistence.md.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Directive};

/// The persistence file's name when `persistence_file` is not given. Not mosquitto's
/// `mosquitto.db`: that file is mosquitto's own format, which this broker does not read.
pub const DEFAULT_PERSISTENCE_FILE: &str = "dynsec-broker.redb";

/// When a change is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistenceMode {
    /// Every change is durable before it is acknowledged (PUBACK/PUBREC/SUBACK): the writes of
    /// all connections are committed together, one sync per group (docs/persistence.md).
    Durable,
    /// Changes are written as they happen but synced only every `autosave_interval` seconds (or
    /// changes, with `autosave_on_changes`) and at shutdown: a crash loses at most that much, as
    /// with mosquitto.
    Autosave,
}

/// The persistence settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceSettings {
    /// `persistence` (default false).
    pub enabled: bool,
    /// `persistence_location` (a directory; default: the working directory).
    pub location: Option<PathBuf>,
    /// `persistence_file` (default [`DEFAULT_PERSISTENCE_FILE`]).
    pub file: String,
    /// `gate_persistence_mode durable|autosave` (default durable).
    pub mode: PersistenceMode,
    /// `autosave_interval` (default 1800; 0: only at shutdown), seconds or, with
    /// `autosave_on_changes`, changes. Autosave mode only.
    pub autosave_interval: u64,
    /// `autosave_on_changes` (default false).
    pub autosave_on_changes: bool,
    /// `persistent_client_expiration` (default: never): how long a persistent session without
    /// its own expiry (MQTT 3.x, v5 0xFFFFFFFF) is kept while its client is offline.
    pub persistent_client_expiration: Option<Duration>,
    /// `max_queued_messages` (default 1000; 0: no limit): messages kept per offline persistent
    /// session in the store.
    pub max_queued_messages: usize,
    /// `max_queued_bytes` (default 0: no limit): payload bytes kept per offline session.
    pub max_queued_bytes: u64,
    /// `queue_qos0_messages` (default false): QoS 0 messages are queued for offline sessions too.
    pub queue_qos0_messages: bool,
    /// `retain_available` (default true): false refuses retained PUBLISHes (v5: DISCONNECT 0x9A)
    /// and tells v5 clients in CONNACK.
    pub retain_available: bool,
}

impl Default for PersistenceSettings {
    fn default() -> Self {
        PersistenceSettings {
            enabled: false,
            location: None,
            file: DEFAULT_PERSISTENCE_FILE.to_owned(),
            mode: PersistenceMode::Durable,
            autosave_interval: 1800,
            autosave_on_changes: false,
            persistent_client_expiration: None,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            retain_available: true,
        }
    }
}

impl PersistenceSettings {
    /// The store's path: `persistence_location` joined with `persistence_file`.
    pub fn path(&self) -> PathBuf {
        match &self.location {
            Some(dir) => dir.join(&self.file),
            None => PathBuf::from(&self.file),
        }
    }

    /// Applies one directive if it is a persistence directive; `Ok(false)` otherwise.
    pub(super) fn apply(&mut self, d: &Directive) -> Result<bool, ConfigError> {
        match d.key.as_str() {
            "persistence" => self.enabled = d.boolean()?,
            "persistence_location" => self.location = Some(PathBuf::from(d.text()?)),
            "persistence_file" => {
                let name = d.text()?;
                if name.contains('/') {
                    return Err(d
                        .at
                        .error("persistence_file is a file name: put its directory in persistence_location"));
                }
                self.file = name.to_owned();
            }
            "gate_persistence_mode" => {
                self.mode = match d.one_word()? {
                    "durable" => PersistenceMode::Durable,
                    "autosave" => PersistenceMode::Autosave,
                    other => {
                        return Err(d
                            .at
                            .error(format!("invalid gate_persistence_mode ({other}): expected durable or autosave")));
                    }
                }
            }
            "autosave_interval" => {
                let value: i64 = d.number()?;
                if value < 0 {
                    return Err(d.at.error("autosave_interval must be 0 or more"));
                }
                self.autosave_interval = value as u64;
            }
            "autosave_on_changes" => self.autosave_on_changes = d.boolean()?,
            "persistent_client_expiration" => {
                self.persistent_client_expiration = Some(expiration(d.one_word()?).ok_or_else(|| {
                    d.at.error(format!(
                        "invalid persistent_client_expiration ({}): expected a number followed by h, d, w, m or y",
                        d.rest
                    ))
                })?);
            }
            "max_queued_messages" => {
                // As mosquitto reads it: negative means no limit.
                let value: i64 = d.number()?;
                self.max_queued_messages = if value <= 0 { 0 } else { value as usize };
            }
            "max_queued_bytes" => {
                let value: i64 = d.number()?;
                self.max_queued_bytes = if value <= 0 { 0 } else { value as u64 };
            }
            "queue_qos0_messages" => self.queue_qos0_messages = d.boolean()?,
            "retain_available" => self.retain_available = d.boolean()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// mosquitto's `persistent_client_expiration` value: a positive number and a unit, h(ours),
/// d(ays), w(eeks), m(onths, 30 days) or y(ears, 365 days).
fn expiration(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let hours: u64 = match unit {
        'h' => 1,
        'd' => 24,
        'w' => 24 * 7,
        'm' => 24 * 30,
        'y' => 24 * 365,
        _ => return None,
    };
    let count: u64 = text[..text.len() - 1].parse().ok().filter(|&n| n > 0)?;
    Some(Duration::from_secs(count.checked_mul(hours)?.checked_mul(3600)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_text;

    fn settings(text: &str) -> Result<PersistenceSettings, ConfigError> {
        let mut settings = PersistenceSettings::default();
        for directive in parse_text("test.conf", text)? {
            assert!(settings.apply(&directive)?, "{} is a persistence directive", directive.key);
        }
        Ok(settings)
    }

    #[test]
    fn mosquitto_directives_set_their_values() {
        let s = settings(
            "persistence true\npersistence_location /var/lib/b\npersistence_file state.db\nautosave_interval 60\n\
             autosave_on_changes true\npersistent_client_expiration 2d\nmax_queued_messages 5\nmax_queued_bytes -1\n\
             queue_qos0_messages true\nretain_available false\ngate_persistence_mode autosave\n",
        )
        .unwrap();
        assert!(s.enabled && s.autosave_on_changes && s.queue_qos0_messages && !s.retain_available);
        assert_eq!(s.path(), PathBuf::from("/var/lib/b/state.db"));
        assert_eq!((s.autosave_interval, s.max_queued_messages, s.max_queued_bytes), (60, 5, 0));
        assert_eq!(s.persistent_client_expiration, Some(Duration::from_secs(2 * 24 * 3600)));
        assert_eq!(s.mode, PersistenceMode::Autosave);
    }

    #[test]
    fn bad_values_are_errors_naming_the_line() {
        for (text, expected) in [
            ("persistence maybe\n", "test.conf:1: invalid persistence value (maybe)"),
            ("persistent_client_expiration 3x\n", "invalid persistent_client_expiration (3x)"),
            ("persistent_client_expiration 0d\n", "invalid persistent_client_expiration (0d)"),
            ("autosave_interval -5\n", "autosave_interval must be 0 or more"),
            ("gate_persistence_mode sometimes\n", "invalid gate_persistence_mode (sometimes)"),
            ("persistence_file a/b.db\n", "persistence_file is a file name"),
        ] {
            let error = settings(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn expirations_follow_mosquittos_units() {
        assert_eq!(expiration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(expiration("1w"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(expiration("1m"), Some(Duration::from_secs(30 * 86400)));
        assert_eq!(expiration("1y"), Some(Duration::from_secs(365 * 86400)));
        assert_eq!(expiration("h"), None);
        assert_eq!(expiration("99999999999999999999y"), None);
    }
}
