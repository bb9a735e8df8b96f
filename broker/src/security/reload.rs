//! SIGHUP: `password_file` and `acl_file` are read again; an invalid file keeps the previous one,
//! and the usernames whose password entry changed or disappeared are kicked.
//!
//! A reloadable file is read on every ACL check of every connection, so readers do not take its
//! lock each time: each keeps its own copy and compares a version number (one atomic load),
//! taking the lock only after a reload.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dynsec::static_files::{AclFile, PasswordFile};
use parking_lot::{Mutex, RwLock};

use super::chain::AuthChain;
use crate::security::KickTarget;

/// A file reloaded on SIGHUP.
pub(super) struct Reloadable<T> {
    /// Bumped after every replacement.
    version: AtomicU64,
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Arc<Reloadable<T>> {
        Arc::new(Reloadable { version: AtomicU64::new(0), current: RwLock::new(Arc::new(value)) })
    }

    /// The current version of the file (takes the lock briefly: for occasional readers).
    pub fn current(&self) -> Arc<T> {
        self.current.read().clone()
    }

    /// Installs `value` and returns the version it replaced.
    fn replace(&self, value: T) -> Arc<T> {
        let old = std::mem::replace(&mut *self.current.write(), Arc::new(value));
        self.version.fetch_add(1, Ordering::Release);
        old
    }
}

/// One reader's copy of a [`Reloadable`], refreshed when the file was reloaded. The mutex is the
/// reader's own (one connection), so it is never contended.
pub(super) struct ReloadableCopy<T> {
    source: Arc<Reloadable<T>>,
    copy: Mutex<(u64, Arc<T>)>,
}

impl<T> ReloadableCopy<T> {
    pub fn new(source: Arc<Reloadable<T>>) -> ReloadableCopy<T> {
        let version = source.version.load(Ordering::Acquire);
        let copy = Mutex::new((version, source.current()));
        ReloadableCopy { source, copy }
    }

    /// The current version of the file: an atomic load, and the shared lock only after a reload.
    pub fn get(&self) -> Arc<T> {
        let version = self.source.version.load(Ordering::Acquire);
        let mut copy = self.copy.lock();
        if copy.0 != version {
            *copy = (version, self.source.current());
        }
        copy.1.clone()
    }
}

pub(super) fn load_password_file(path: &Path) -> Result<PasswordFile, String> {
    let (file, warnings) =
        PasswordFile::load(path).map_err(|e| format!("Error: Unable to open pwfile \"{}\": {e}", path.display()))?;
    for w in warnings {
        tracing::warn!("{}:{}: {}", path.display(), w.line, w.message);
    }
    Ok(file)
}

pub(super) fn load_acl_file(path: &Path) -> Result<AclFile, String> {
    let file = AclFile::load(path).map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
    for w in &file.warnings {
        tracing::warn!("{}:{}: {}", path.display(), w.line, w.message);
    }
    Ok(file)
}

impl AuthChain {
    /// Re-reads every password_file and acl_file (SIGHUP). An invalid file keeps the old one.
    /// Usernames whose password entry changed or disappeared are kicked.
    pub fn reload_files(&self) {
        let mut kicked = std::collections::BTreeSet::new();
        let mut seen_pw: Vec<&Path> = Vec::new();
        let mut seen_acl: Vec<&Path> = Vec::new();
        for scope in &self.scopes {
            if let Some((path, shared)) = &scope.password_file
                && !seen_pw.contains(&path.as_path())
            {
                seen_pw.push(path);
                match load_password_file(path) {
                    Ok(new) => {
                        let old = shared.replace(new);
                        let now = shared.current();
                        for user in changed_password_users(&old, &now) {
                            kicked.insert(user);
                        }
                        tracing::info!("reloaded password file {}", path.display());
                    }
                    Err(e) => tracing::error!("{e}; keeping the previous password file"),
                }
            }
            if let Some((path, shared)) = &scope.acl_file
                && !seen_acl.contains(&path.as_path())
            {
                seen_acl.push(path);
                match load_acl_file(path) {
                    Ok(new) => {
                        shared.replace(new);
                        tracing::info!("reloaded acl file {}", path.display());
                    }
                    Err(e) => tracing::error!("{e}; keeping the previous acl file"),
                }
            }
        }
        for user in kicked {
            let _ = self.kicks_tx.send(KickTarget::CredentialsRevoked(user.into()));
        }
    }
}

fn changed_password_users(old: &PasswordFile, new: &PasswordFile) -> Vec<String> {
    old.usernames().filter(|u| old.hash_of(u) != new.hash_of(u)).map(str::to_owned).collect()
}
