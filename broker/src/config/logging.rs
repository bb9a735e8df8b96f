//! The logging directives: `log_type` (mapped onto `tracing` levels; the most verbose wins) and
//! `log_dest` (stderr, stdout, files). The logger itself is `crate::logging`.

use std::path::PathBuf;

use super::ConfigError;
use super::lexer::Directive;

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// Logging, mapped onto `tracing` levels (`log_type`, `log_dest`, `-v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The most verbose level any `log_type` asked for; `None` = logging off (`log_type none`).
    pub level: Option<tracing::Level>,
    pub dests: Vec<LogDest>,
    /// `log_timestamp`: lines start with the Unix time.
    pub timestamp: bool,
    /// `connection_messages`: connects and disconnects are logged.
    pub connection_messages: bool,
}

impl Default for LogConfig {
    /// mosquitto's default: error, warning, notice and information, on stderr, with timestamps
    /// and connection messages.
    fn default() -> Self {
        LogConfig {
            level: Some(tracing::Level::INFO),
            dests: vec![LogDest::Stderr],
            timestamp: true,
            connection_messages: true,
        }
    }
}

/// `log_type`, `log_dest`, `log_timestamp` and `connection_messages` lines seen so far.
pub(super) struct LogDirectives {
    /// `None`: no `log_type` line; `Some(None)`: logging off.
    level: Option<Option<tracing::Level>>,
    /// `None`: no `log_dest` line (stderr, mosquitto's default).
    dests: Option<Vec<LogDest>>,
    timestamp: bool,
    connection_messages: bool,
}

impl Default for LogDirectives {
    fn default() -> Self {
        LogDirectives { level: None, dests: None, timestamp: true, connection_messages: true }
    }
}

impl LogDirectives {
    /// Applies `d` when it is a logging directive; `Ok(false)` when it is not one.
    pub fn apply(&mut self, d: &Directive, warnings: &mut Vec<String>) -> Result<bool, ConfigError> {
        match d.key.as_str() {
            "log_type" => {
                let level = match d.one_word()? {
                    "none" => None,
                    "error" => Some(tracing::Level::ERROR),
                    "warning" => Some(tracing::Level::WARN),
                    "notice" | "information" | "subscribe" | "unsubscribe" => Some(tracing::Level::INFO),
                    "debug" | "websockets" | "all" => Some(tracing::Level::DEBUG),
                    other => return Err(d.at.error(format!("invalid log_type ({other})"))),
                };
                // The most verbose type wins; `none` only counts when nothing else is asked for.
                let merged = match (self.level.flatten(), level) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                self.level = Some(merged);
            }
            "log_dest" => {
                let words = d.words();
                let dests = self.dests.get_or_insert_with(Vec::new);
                match words.first().copied() {
                    Some("stderr") => dests.push(LogDest::Stderr),
                    Some("stdout") => dests.push(LogDest::Stdout),
                    Some("file") => {
                        let path = d.rest.trim_start_matches("file").trim();
                        if path.is_empty() {
                            return Err(d.at.error("log_dest file needs a path"));
                        }
                        dests.push(LogDest::File(PathBuf::from(path)));
                    }
                    Some("none") => dests.clear(),
                    Some(other @ ("syslog" | "topic" | "dlt")) => {
                        dests.push(LogDest::Stderr);
                        warnings.push(format!("{}: log_dest {other} is not supported; logging to stderr", d.at));
                    }
                    _ => return Err(d.at.error(format!("invalid log_dest ({})", d.rest))),
                }
            }
            "log_timestamp" => self.timestamp = d.boolean()?,
            "connection_messages" => self.connection_messages = d.boolean()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn finish(self) -> LogConfig {
        LogConfig {
            level: self.level.unwrap_or(LogConfig::default().level),
            dests: self.dests.unwrap_or_else(|| vec![LogDest::Stderr]),
            timestamp: self.timestamp,
            connection_messages: self.connection_messages,
        }
    }
}
