//! The audit trail of `$CONTROL/dynamic-security/v1` commands, whichever way they came (MQTT, the
//! console's REST API, its web UI): one JSON line per request with who, when, from where, and per
//! command its name, the names it acted on and its result. Passwords and other values are never
//! written. The file lives beside the dynsec configuration (`<config_file>.audit.jsonl`, mode 0600) and is
//! bounded: past [`MAX_BYTES`] it is renamed to `.1` (replacing the older one) and a new one starts.
//! The same lines feed the `control_commands` counters of `/metrics`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dynsec::json::{self, Json};
use parking_lot::Mutex;

use crate::metrics::{CommandLabels, SECURITY};

/// The largest size of the current audit file before it is rotated.
pub const MAX_BYTES: u64 = 2 * 1024 * 1024;
/// Request fields that name what a command acted on (never a password or a value).
const NAME_FIELDS: [&str; 7] = ["username", "clientid", "groupname", "rolename", "acltype", "topic", "name"];

/// Which way a control request came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlOrigin {
    #[default]
    Mqtt,
    Rest,
    Ui,
}

impl ControlOrigin {
    pub fn name(self) -> &'static str {
        match self {
            ControlOrigin::Mqtt => "mqtt",
            ControlOrigin::Rest => "rest",
            ControlOrigin::Ui => "ui",
        }
    }
}

/// One audit file; writes are serialised.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    /// The audit trail of the dynsec configuration at `config_file`.
    pub fn beside(config_file: &Path) -> AuditLog {
        let mut name = config_file.as_os_str().to_owned();
        name.push(".audit.jsonl");
        AuditLog { path: PathBuf::from(name), lock: Mutex::new(()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one request and its response; counts its commands. Failures to write are logged,
    /// never fatal: the command already took effect.
    pub fn record(
        &self,
        origin: ControlOrigin,
        client_id: &str,
        username: Option<&str>,
        request: &[u8],
        response: &[u8],
    ) {
        let commands = summarise(request, response);
        for command in &commands {
            let name = command.get("command").and_then(Json::as_bytes).unwrap_or(b"?");
            let result = if command.get("error").is_some() { "error" } else { "success" };
            let labels =
                CommandLabels { command: String::from_utf8_lossy(name).into_owned(), result: result.to_owned() };
            SECURITY.control_commands.get_or_create(&labels).inc();
        }
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut line = Json::object()
            .with("time", Json::int(millis))
            .with("via", Json::str(origin.name()))
            .with("clientid", Json::str(client_id));
        if let Some(username) = username {
            line.push("username", Json::str(username));
        }
        let mut line = line.with("commands", Json::Array(commands)).to_compact();
        line.push(b'\n');
        let _guard = self.lock.lock();
        if let Err(e) = self.append(&line) {
            tracing::warn!("audit trail {}: {e}", self.path.display());
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size + line.len() as u64 > MAX_BYTES && size > 0 {
            std::fs::rename(&self.path, self.rotated())?;
        }
        // Owner-only, as every file beside the dynsec store (it names clients and roles).
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(dynsec::atomic_file::NEW_FILE_MODE)
            .open(&self.path)?;
        file.write_all(line)
    }

    fn rotated(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// The newest `limit` entries, newest first (the rotated file is read when needed).
    pub fn recent(&self, limit: usize) -> Vec<Json> {
        let _guard = self.lock.lock();
        let mut entries = Vec::new();
        for path in [self.path.clone(), self.rotated()] {
            let Ok(text) = std::fs::read(&path) else { continue };
            for line in text.split(|b| *b == b'\n').rev() {
                if entries.len() >= limit {
                    return entries;
                }
                if let Ok(entry) = json::parse(line) {
                    entries.push(entry);
                }
            }
        }
        entries
    }
}

/// Per command of `request`: its name, the names it acted on, and the response's error if any.
fn summarise(request: &[u8], response: &[u8]) -> Vec<Json> {
    let responses = json::parse(response).ok();
    let responses = responses.as_ref().and_then(|r| r.get("responses")).and_then(Json::as_array).unwrap_or(&[]);
    let Ok(request) = json::parse(request) else {
        return vec![Json::object().with("command", Json::str("?")).with("error", Json::str("Payload not valid JSON"))];
    };
    let commands = request.get("commands").and_then(Json::as_array).unwrap_or(&[]);
    let mut summary: Vec<Json> = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        let name = command.get("command").and_then(Json::as_bytes).unwrap_or(b"?");
        let mut entry = Json::object().with("command", Json::String(name.to_vec()));
        for field in NAME_FIELDS {
            if let Some(value @ Json::String(_)) = command.get(field) {
                entry.push(field, value.clone());
            }
        }
        match responses.get(index).and_then(|r| r.get("error")) {
            Some(error) => entry.push("error", error.clone()),
            None => entry.push("result", Json::str("success")),
        }
        summary.push(entry);
    }
    if summary.is_empty()
        && let Some(error) = responses.first().and_then(|r| r.get("error"))
    {
        summary.push(Json::object().with("command", Json::str("?")).with("error", error.clone()));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_targets_never_passwords_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::beside(&dir.path().join("dynsec.json"));
        let request = br#"{"commands":[{"command":"createClient","username":"u","password":"secret"},{"command":"deleteRole","rolename":"r"}]}"#;
        let response =
            br#"{"responses":[{"command":"createClient"},{"command":"deleteRole","error":"Role not found"}]}"#;
        log.record(ControlOrigin::Rest, "console", Some("admin"), request, response);
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let recent = log.recent(10);
        assert_eq!(recent.len(), 1);
        let line = String::from_utf8(recent[0].to_compact()).unwrap();
        assert!(line.contains(r#""via":"rest""#) && line.contains(r#""error":"Role not found""#), "{line}");
        let big = vec![b'x'; 64 * 1024];
        let request =
            format!(r#"{{"commands":[{{"command":"getRole","rolename":"{}"}}]}}"#, String::from_utf8(big).unwrap());
        for _ in 0..40 {
            log.record(ControlOrigin::Mqtt, "c", None, request.as_bytes(), b"{}");
        }
        assert!(std::fs::metadata(log.path()).unwrap().len() <= MAX_BYTES);
        assert!(std::fs::metadata(log.rotated()).is_ok());
    }
}
