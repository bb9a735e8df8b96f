//! Writing a whole file so that a reader, or a crash, finds the old content or the new one, never
//! a mix: the bytes go to a temporary file beside the target and are flushed to disk, and only
//! then does that file take the target's name; the directory is flushed after it. Every whole
//! file of the workspace is written here: the store's snapshot and journal header, the CLI's
//! password files and `dynsec init`, the broker's generated admin password.
//!
//! - [`replace`]: the file replaced keeps its owner, group and mode, so that a file prepared for
//!   another account (mosquitto running as `mosquitto`, the file 0640 for its group) stays
//!   readable by it after a change; a new file is 0600 (it holds password hashes).
//! - [`create_new`]: a file that must not exist yet; a hard link never replaces an existing
//!   name, so this is the atomic "create if absent".
//!
//! The temporary file has a name of its own per writer (two writers never share one), is created
//! with `O_EXCL`, which never follows a symbolic link, and is removed when a step fails. The
//! rename replaces a link put at the target's name rather than the file it points to.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files created here: they hold password hashes.
pub const NEW_FILE_MODE: u32 = 0o600;
/// Names tried for the temporary file before giving up (a name is taken only by a leftover of a
/// writer that crashed with the same process id in the same nanosecond).
const TEMPORARY_ATTEMPTS: u32 = 16;

/// A step that failed, and the file it failed on (the temporary file, the target, or its
/// directory).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError { path: path.to_owned(), source }
}

/// Writes `bytes` to `path` atomically and durably, keeping the owner, group and mode of the file
/// it replaces (a new file is 0600).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    replace_like(path, bytes, None)
}

/// [`replace`]; a new file takes the owner, group and mode of `sibling` when that exists (the
/// store's journal takes its snapshot's).
pub fn replace_like(path: &Path, bytes: &[u8], sibling: Option<&Path>) -> Result<(), WriteError> {
    replace_with(path, sibling, |file| file.write_all(bytes))
}

fn replace_with(
    path: &Path,
    sibling: Option<&Path>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), WriteError> {
    // The target itself only when it is a regular file: a link put there gives nothing away.
    let model = fs::symlink_metadata(path)
        .ok()
        .filter(|meta| meta.is_file())
        .or_else(|| sibling.and_then(|s| fs::metadata(s).ok()).filter(|meta| meta.is_file()));
    let mut temporary = Temporary::write(path, model.as_ref(), fill)?;
    fs::rename(&temporary.path, path).map_err(at(path))?;
    temporary.renamed = true;
    sync_directory_of(path)
}

/// Writes `path` only if it does not exist yet (`AlreadyExists` otherwise), mode 0600.
pub fn create_new(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let temporary = Temporary::write(path, None, |file| file.write_all(bytes))?;
    fs::hard_link(&temporary.path, path).map_err(at(path))?;
    drop(temporary);
    sync_directory_of(path)
}

/// A temporary file beside the target, removed when dropped unless it was renamed.
struct Temporary {
    path: PathBuf,
    renamed: bool,
}

impl Temporary {
    /// Creates it (mode 0600, or the attributes of `model`), lets `fill` write it, and flushes it.
    fn write(
        target: &Path,
        model: Option<&fs::Metadata>,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<Temporary, WriteError> {
        let mut attempt = 0;
        let (mut file, temporary) = loop {
            let path = temporary_path(target, attempt);
            match OpenOptions::new().write(true).create_new(true).mode(NEW_FILE_MODE).open(&path) {
                Ok(file) => break (file, Temporary { path, renamed: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMPORARY_ATTEMPTS => {
                    attempt += 1;
                }
                Err(source) => return Err(WriteError { path, source }),
            }
        };
        if let Some(model) = model {
            copy_attributes(&file, model).map_err(at(&temporary.path))?;
        }
        fill(&mut file).and_then(|()| file.sync_all()).map_err(at(&temporary.path))?;
        Ok(temporary)
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `NAME.new-PID-NANOS-ATTEMPT` beside `target`.
fn temporary_path(target: &Path, attempt: u32) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    target.with_file_name(format!("{name}.new-{}-{nanos:x}-{attempt}", std::process::id()))
}

/// Gives `file` the owner, group and permission bits of `model`. Only root may give a file away;
/// anyone else keeps its own uid (the file it replaces was then its own or not writable anyway).
fn copy_attributes(file: &File, model: &fs::Metadata) -> io::Result<()> {
    use rustix::fs::{Gid, Mode, Uid};
    let own = file.metadata()?;
    if own.uid() != model.uid() || own.gid() != model.gid() {
        let owner = Some(Uid::from_raw(model.uid()));
        let group = Some(Gid::from_raw(model.gid()));
        match rustix::fs::fchown(file, owner, group) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fchmod(file, Mode::from_raw_mode(model.mode() & 0o7777))?;
    Ok(())
}

fn sync_directory_of(path: &Path) -> Result<(), WriteError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        // Giving the file away needs root; elsewhere the owner is the writer's own either way.
        let given_away = std::os::unix::fs::chown(&path, Some(4242), Some(4343)).is_ok();
        replace(&path, b"new\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        if given_away {
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        }
        assert_eq!(names_in(dir.path()), ["passwd"], "no temporary file left behind");
    }

    #[test]
    fn a_new_file_is_0600_or_like_its_sibling() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        replace(&fresh, b"x").unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777, 0o600);
        let snapshot = dir.path().join("snapshot");
        fs::write(&snapshot, "{}").unwrap();
        fs::set_permissions(&snapshot, fs::Permissions::from_mode(0o640)).unwrap();
        let journal = dir.path().join("journal");
        replace_like(&journal, b"j", Some(&snapshot)).unwrap();
        assert_eq!(fs::metadata(&journal).unwrap().permissions().mode() & 0o7777, 0o640);
    }

    #[test]
    fn the_old_file_is_intact_when_a_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        fs::write(&path, "old").unwrap();
        // The disk fills up half-way through.
        let error = replace_with(&path, None, |file| {
            file.write_all(b"ne")?;
            Err(io::Error::from_raw_os_error(28))
        })
        .unwrap_err();
        assert_eq!(error.source.raw_os_error(), Some(28));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["store.json"], "the temporary file is removed");

        // The rename fails (a directory took the name): nothing is left beside it either.
        let taken = dir.path().join("taken");
        fs::create_dir(&taken).unwrap();
        fs::write(taken.join("inside"), "keep").unwrap();
        assert!(replace(&taken, b"new").is_err());
        assert_eq!(fs::read(taken.join("inside")).unwrap(), b"keep");
        assert_eq!(names_in(dir.path()), ["store.json", "taken"], "the temporary file is removed");
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        create_new(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(create_new(&path, b"two").unwrap_err().source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(names_in(dir.path()), ["f"], "no temporary file left behind");
    }
}
