//! `password_file` and `acl_file`: each file is read once at start, however many listeners name
//! it, and read again on SIGHUP. An invalid file keeps the previous one; the usernames whose
//! password entry changed or disappeared are handed back to be kicked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dynsec::static_files::{AclFile, PasswordFile};

use super::reloadable::Reloadable;

/// Every `password_file` and `acl_file` of the configuration, each once.
#[derive(Default)]
pub(super) struct StaticFiles {
    password_files: Vec<(PathBuf, Arc<Reloadable<PasswordFile>>)>,
    acl_files: Vec<(PathBuf, Arc<Reloadable<AclFile>>)>,
}

impl StaticFiles {
    /// The password file at `path`: read now, or shared with the listener that named it first.
    pub fn password_file(&mut self, path: &Path) -> Result<Arc<Reloadable<PasswordFile>>, String> {
        read_once(&mut self.password_files, path, load_password_file)
    }

    /// The ACL file at `path`: read now, or shared with the listener that named it first.
    pub fn acl_file(&mut self, path: &Path) -> Result<Arc<Reloadable<AclFile>>, String> {
        read_once(&mut self.acl_files, path, load_acl_file)
    }

    /// Re-reads every file (SIGHUP). An invalid file keeps the old one. Returns the usernames
    /// whose password entry changed or disappeared.
    pub fn reload(&self) -> BTreeSet<String> {
        let mut revoked = BTreeSet::new();
        for (path, shared) in &self.password_files {
            match load_password_file(path) {
                Ok(new) => {
                    let old = shared.replace(new);
                    revoked.extend(changed_password_users(&old, &shared.current()));
                    tracing::info!("reloaded password file {}", path.display());
                }
                Err(e) => tracing::error!("{e}; keeping the previous password file"),
            }
        }
        for (path, shared) in &self.acl_files {
            match load_acl_file(path) {
                Ok(new) => {
                    shared.replace(new);
                    tracing::info!("reloaded acl file {}", path.display());
                }
                Err(e) => tracing::error!("{e}; keeping the previous acl file"),
            }
        }
        revoked
    }
}

fn read_once<T>(
    files: &mut Vec<(PathBuf, Arc<Reloadable<T>>)>,
    path: &Path,
    load: fn(&Path) -> Result<T, String>,
) -> Result<Arc<Reloadable<T>>, String> {
    if let Some((_, shared)) = files.iter().find(|(p, _)| p == path) {
        return Ok(Arc::clone(shared));
    }
    let shared = Reloadable::new(load(path)?);
    files.push((path.to_owned(), Arc::clone(&shared)));
    Ok(shared)
}

fn load_password_file(path: &Path) -> Result<PasswordFile, String> {
    let (file, warnings) =
        PasswordFile::load(path).map_err(|e| format!("Error: Unable to open pwfile \"{}\": {e}", path.display()))?;
    for w in warnings {
        tracing::warn!("{}:{}: {}", path.display(), w.line, w.message);
    }
    Ok(file)
}

fn load_acl_file(path: &Path) -> Result<AclFile, String> {
    let file = AclFile::load(path).map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
    for w in &file.warnings {
        tracing::warn!("{}:{}: {}", path.display(), w.line, w.message);
    }
    Ok(file)
}

fn changed_password_users(old: &PasswordFile, new: &PasswordFile) -> Vec<String> {
    old.usernames().filter(|u| old.hash_of(u) != new.hash_of(u)).map(str::to_owned).collect()
}
