//! Crash-safe creation of a file that must not exist yet (`dynsec init`): the content goes to a
//! temporary file in the same directory, is flushed to disk, and only then takes the target's
//! name, so a reader sees no file or the whole one. Files that are replaced use the store's
//! writer, `dynsec::store::write_atomically`, which keeps their owner, group and mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode of files we create: they hold password hashes.
pub const NEW_FILE_MODE: u32 = 0o600;

fn temporary_path(target: &Path, attempt: u32) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    target.with_file_name(format!(".{name}.tmp-{}-{nanos:x}-{attempt}", std::process::id()))
}

/// Creates a fresh temporary file next to `target` with `mode`, writes and fsyncs `contents`.
fn write_temporary(target: &Path, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
    let mut attempt = 0;
    loop {
        let path = temporary_path(target, attempt);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        match options.open(&path) {
            Ok(mut file) => {
                let written = file.write_all(contents).and_then(|()| file.sync_all());
                if let Err(e) = written {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

fn sync_directory_of(target: &Path) {
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Writes `target` only if it does not exist yet (`AlreadyExists` otherwise), mode 0600.
pub fn create_new(target: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = write_temporary(target, contents, NEW_FILE_MODE)?;
    // A hard link never replaces an existing name: this is the atomic "create if absent".
    let linked = fs::hard_link(&temporary, target);
    let _ = fs::remove_file(&temporary);
    linked?;
    sync_directory_of(target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_new_refuses_existing_and_uses_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        create_new(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(create_new(&path, b"two").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        #[cfg(unix)]
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }
}
