//! Running as a system service, as mosquitto does: switching to the `user` account after the
//! configuration is read, the `pid_file`, and the service manager's readiness protocol
//! (sd_notify `READY=1` / `STOPPING=1` when `NOTIFY_SOCKET` is set, for `Type=notify` units such
//! as Debian's mosquitto.service and `config/dynsec-broker.service`).

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

/// Why the broker cannot start as the configuration asks.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("Unable to drop privileges to '{0}' because this user does not exist.")]
    NoSuchUser(String),
    #[error("Unable to look up user '{user}': {reason}")]
    Lookup { user: String, reason: String },
    #[error("Unable to drop privileges to '{user}' ({step}): {reason}")]
    Drop { user: String, step: &'static str, reason: String },
    #[error(
        "Unable to drop privileges to '{0}': the process already runs {1} threads; privileges must be dropped before any thread starts"
    )]
    Threaded(String, usize),
    #[error("Unable to write pid file {path}: {reason}")]
    PidFile { path: String, reason: String },
}

/// Switches the whole process to `user` (its uid, primary gid and supplementary groups) when it
/// runs as root, as mosquitto 2.0 does right after reading its configuration: every file the
/// broker opens afterwards (keys, logs, stores, pid file) must be accessible to that user.
/// Returns the account it switched to, if any. `root` or a non-root start changes nothing.
///
/// Must be called before any thread is started: the set*id calls below are process-wide through
/// the C library, but checking first makes a wrong call order an error instead of a half-dropped
/// process.
pub fn drop_privileges(user: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(name) = user else { return Ok(None) };
    if !Uid::effective().is_root() || name == "root" {
        return Ok(None);
    }
    let threads = thread_count();
    if threads > 1 {
        return Err(ServiceError::Threaded(name.to_owned(), threads));
    }
    let account = User::from_name(name)
        .map_err(|e| ServiceError::Lookup { user: name.to_owned(), reason: e.desc().to_owned() })?
        .ok_or_else(|| ServiceError::NoSuchUser(name.to_owned()))?;
    let failed = |step: &'static str| {
        move |e: nix::Error| ServiceError::Drop { user: name.to_owned(), step, reason: e.desc().to_owned() }
    };
    let c_name = CString::new(name).map_err(|_| ServiceError::NoSuchUser(name.to_owned()))?;
    // Groups first: once the uid is dropped, the process may no longer change them.
    nix::unistd::setgid(account.gid).map_err(failed("setgid"))?;
    nix::unistd::initgroups(&c_name, account.gid).map_err(failed("initgroups"))?;
    nix::unistd::setuid(account.uid).map_err(failed("setuid"))?;
    if Uid::effective().is_root() || Gid::effective() == Gid::from_raw(0) {
        return Err(ServiceError::Drop {
            user: name.to_owned(),
            step: "check",
            reason: "still root after setuid".into(),
        });
    }
    Ok(Some(account.name))
}

/// Threads of this process (Linux: the entries of /proc/self/task); 1 when it cannot be read.
fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").map(|entries| entries.count()).unwrap_or(1)
}

/// The `pid_file`: written at start (mosquitto writes it after dropping privileges), removed
/// when dropped, at a clean exit.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, ServiceError> {
        fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| ServiceError::PidFile { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(PidFile { path: path.to_owned() })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!("cannot remove pid file {}: {error}", self.path.display());
        }
    }
}

/// Tells the service manager the broker serves (all listeners bound). A no-op without
/// `NOTIFY_SOCKET`; a failure to notify is logged, not fatal (the manager's timeout decides).
pub fn notify_ready() {
    notify(sd_notify::NotifyState::Ready, "READY=1");
}

/// Tells the service manager the broker is shutting down.
pub fn notify_stopping() {
    notify(sd_notify::NotifyState::Stopping, "STOPPING=1");
}

fn notify(state: sd_notify::NotifyState, text: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!("cannot notify the service manager ({text}): {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_user_or_root_changes_nothing() {
        assert_eq!(drop_privileges(None).unwrap(), None);
        assert_eq!(drop_privileges(Some("root")).unwrap(), None);
    }

    #[test]
    fn pid_file_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.pid");
        let pid_file = PidFile::write(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        drop(pid_file);
        assert!(!path.exists());
        let missing_dir = dir.path().join("missing/broker.pid");
        let error = PidFile::write(&missing_dir).unwrap_err().to_string();
        assert!(error.contains("Unable to write pid file"), "{error}");
    }
}
