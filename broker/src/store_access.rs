//! The start-up check that the account the broker runs as (after `user` dropped privileges, see
//! `service`) can work on the dynamic-security store: read the file, write its directory (the
//! journal is created there and every rewrite renames a new file over the old one, docs/store.md)
//! and append to an existing journal. Without it the broker would start, accept logins and fail
//! on the first change an admin makes.

use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD};

/// What the broker's account may not do with the store's files, said in full.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreAccessError(String);

/// Checks what the store at `file` needs, as the process's effective user.
pub fn check(file: &Path) -> Result<(), StoreAccessError> {
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let fail = |what: &str, path: &Path, reason: rustix::io::Errno, why: &str| {
        let account = current_account();
        StoreAccessError(format!(
            "Unable to use the dynamic security configuration {}: the broker runs as {account}, which cannot {what} {} ({}). {why} Give {account} that permission (for example with chown or chmod), or move the configuration to a directory it owns.",
            file.display(),
            path.display(),
            std::io::Error::from(reason),
        ))
    };
    if file.exists() {
        allowed(file, Access::READ_OK).map_err(|e| fail("read", file, e, "The broker loads it at start-up."))?;
    }
    allowed(&dir, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
        fail(
            "create files in the directory",
            &dir,
            e,
            "The broker keeps its journal there and saves the file by renaming a new one over it.",
        )
    })?;
    let journal = dynsec::store::Store::journal_path_for(file);
    if journal.exists() {
        allowed(&journal, Access::WRITE_OK)
            .map_err(|e| fail("write", &journal, e, "Every change is appended to this journal."))?;
    }
    Ok(())
}

/// `faccessat` with the effective ids: what this process may really do (a read-only file
/// system fails for root too).
fn allowed(path: &Path, access: Access) -> Result<(), rustix::io::Errno> {
    rustix::fs::accessat(CWD, path, access, AtFlags::EACCESS)
}

/// "user 'name' (uid N)" for the effective uid.
fn current_account() -> String {
    let uid = nix::unistd::Uid::effective();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("user '{}' (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_passes_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dynamic-security.json");
        check(&file).unwrap();
        let missing = dir.path().join("missing/dynamic-security.json");
        let error = check(&missing).unwrap_err().to_string();
        assert!(error.contains("cannot create files in the directory"), "{error}");
        assert!(error.contains(&dir.path().join("missing").display().to_string()), "{error}");
        assert!(error.contains("runs as "), "{error}");
    }
}
