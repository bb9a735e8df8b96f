//! Durability: a change is acknowledged only once it is on disk, and a crash at any moment leaves
//! files that load to exactly the acknowledged state.
//!
//! Two files sit side by side:
//! - `dynamic-security.json` — the snapshot, in mosquitto's own format (mosquitto can load it);
//! - `dynamic-security.json.journal` — records appended since that snapshot, one per control
//!   message, each framed with its length and CRC-32 and made durable with `fdatasync` before the
//!   reply is sent. A record holds the batch's [`Mutation`]s, which are idempotent, so replaying a
//!   journal over a snapshot that already contains it is harmless.
//!
//! A commit costs one append and one fsync whatever the number of clients (mosquitto rewrites the
//! whole file per command). The snapshot is rewritten ("compaction": write `.new`, fsync, rename,
//! fsync the directory, then empty the journal) when the journal outgrows it, when the engine has
//! been idle for a moment, at start-up after a replay, and on clean shutdown; so the JSON file is
//! current after a shutdown, after a compaction, and shortly after the last change.
//!
//! Failures: if an append or fsync fails, the journal is cut back to its previous length and the
//! caller rolls the batch back in memory. If the journal or snapshot path no longer refers to the
//! files we wrote (deleted, replaced by a directory, …) the store first rewrites the snapshot from
//! memory and starts a new journal, so acknowledged state is never left only in a lost file. A
//! torn record at the end of the journal (a crash mid-append, never acknowledged) is dropped at
//! load; a damaged record followed by more data is an error: nothing is silently discarded.
//!
//! Symbolic links: the journal is opened with `O_NOFOLLOW`, for appending and for reading, so a
//! link put in its place (pointing at a file the broker's user may write, such as another
//! program's configuration) is refused with [`StoreError::Symlink`] instead of written through.
//! The files written whole (the snapshot, a new journal's header) are written by
//! [`crate::atomic_file`]: a temporary file created with `O_EXCL`, which never follows a link, then
//! renamed, which replaces a link rather than its target.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::{self, WriteError};
use crate::file::{self, FileError, LoadWarning};
use crate::json::{self, Json};
use crate::model::{Group, Model, Mutation, Role};

const JOURNAL_HEADER: &[u8] = b"dynsec-journal v1\n";
/// The journal is compacted once it is larger than the snapshot, and at least this large.
const MIN_COMPACTION_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FileError },
    #[error(
        "{path}: damaged journal record at byte {offset} followed by more data; refusing to guess (move the journal aside to start from the snapshot)"
    )]
    DamagedJournal { path: PathBuf, offset: u64 },
    #[error("{path}: not a dynsec journal")]
    NotAJournal { path: PathBuf },
    #[error("{path}: is a symbolic link; the journal is never opened through one (remove the link)")]
    Symlink { path: PathBuf },
    /// mosquitto 2.0 and 2.1 start on an empty file with no clients at all, so that nobody, admin
    /// included, can log in; we refuse to start instead (docs/known-differences.md).
    #[error(
        "{path}: the file is empty (0 bytes), so it has no clients and nobody could log in; restore it from a backup, or remove it to have a new one created with an admin client"
    )]
    Empty { path: PathBuf },
}

impl From<WriteError> for StoreError {
    fn from(error: WriteError) -> StoreError {
        StoreError::Io { path: error.path, source: error.source }
    }
}

impl StoreError {
    /// The operating system's error behind this one, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Parses a snapshot's bytes; an empty file is an error (see [`StoreError::Empty`]) rather than
/// an empty configuration.
pub fn load_snapshot(path: &Path, bytes: &[u8]) -> Result<(Model, Vec<LoadWarning>), StoreError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StoreError::Empty { path: path.to_owned() });
    }
    file::load(bytes).map_err(|source| StoreError::Format { path: path.to_owned(), source })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Identity of a file we wrote, to notice when its path stops referring to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn path_id(path: &Path) -> Option<FileId> {
    let meta = fs::symlink_metadata(path).ok()?;
    meta.is_file().then(|| FileId { dev: meta.dev(), ino: meta.ino() })
}

/// Opens the journal at `path` with `O_NOFOLLOW`: for appending (created 0600 if missing) or for
/// reading. `Ok(None)` when reading a journal that does not exist. Anything but a regular file is
/// refused (`O_NONBLOCK` keeps a FIFO put there from blocking the open).
fn open_journal_file(path: &Path, append: bool) -> Result<Option<File>, StoreError> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NONBLOCK
        | if append { OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE } else { OFlags::RDONLY };
    match rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => {
            let file = File::from(fd);
            if !file.metadata().map_err(io_err(path))?.is_file() {
                return Err(not_a_regular_file(path));
            }
            Ok(Some(file))
        }
        Err(rustix::io::Errno::NOENT) if !append => Ok(None),
        // Name what is there rather than the errno O_NOFOLLOW (ELOOP) or a FIFO (ENXIO) gives.
        Err(e) => Err(match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => StoreError::Symlink { path: path.to_owned() },
            Ok(meta) if !meta.is_file() => not_a_regular_file(path),
            _ => StoreError::Io { path: path.to_owned(), source: e.into() },
        }),
    }
}

fn not_a_regular_file(path: &Path) -> StoreError {
    StoreError::Io { path: path.to_owned(), source: io::Error::other("not a regular file") }
}

/// The journal's bytes (empty if there is none), never through a symbolic link.
fn read_journal(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    if let Some(mut f) = open_journal_file(path, false)? {
        f.read_to_end(&mut bytes).map_err(io_err(path))?;
    }
    Ok(bytes)
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

// --- mutation records ------------------------------------------------------------------------

fn group_header_json(group: &Group) -> Json {
    let mut g = file::group_json(group);
    if let Json::Object(members) = &mut g {
        members.retain(|(k, _)| k != b"clients");
    }
    g
}

fn op(name: &str) -> Json {
    Json::object().with("op", Json::str(name))
}

fn put_role_json(role: &Role) -> Json {
    op("putRole").with("role", file::role_json(role))
}

/// The journal form of a mutation; `None` for the ACL edits, which have none of their own (see
/// [`record_entries`]).
pub fn mutation_json(m: &Mutation) -> Option<Json> {
    Some(match m {
        Mutation::PutClient(c) => op("putClient").with("client", file::client_json(c)),
        Mutation::DeleteClient(u) => op("deleteClient").with("username", Json::str(u)),
        Mutation::PutGroup(g) => op("putGroup").with("group", group_header_json(g)),
        Mutation::DeleteGroup(g) => op("deleteGroup").with("groupname", Json::str(g)),
        Mutation::PutRole(r) => put_role_json(r),
        Mutation::DeleteRole(r) => op("deleteRole").with("rolename", Json::str(r)),
        Mutation::SetMembership { group, username, priority } => {
            let o = op("setMembership").with("groupname", Json::str(group)).with("username", Json::str(username));
            match priority {
                Some(p) => o.with("priority", Json::int((*p).into())),
                None => o.with("remove", Json::Bool(true)),
            }
        }
        Mutation::SetDefaultAccess(a) => op("setDefaultAccess").with("defaultACLAccess", file::default_access_json(a)),
        Mutation::SetAnonymousGroup(g) => {
            op("setAnonymousGroup").with("groupname", g.as_deref().map_or(Json::Null, Json::str))
        }
        Mutation::SetChangeIndex(i) => op("setChangeIndex").with("changeIndex", Json::int(*i)),
        Mutation::AddAcl { .. } | Mutation::RemoveAcl { .. } => return None,
    })
}

pub fn mutation_from_json(v: &Json) -> Option<Mutation> {
    let s = |key: &str| v.get(key).and_then(Json::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned());
    Some(match v.get("op")?.as_bytes()? {
        b"putClient" => Mutation::PutClient(file::client_from_json(v.get("client")?, &mut Vec::new())?),
        b"deleteClient" => Mutation::DeleteClient(s("username")?),
        b"putGroup" => Mutation::PutGroup(file::group_from_json(v.get("group")?)?.0),
        b"deleteGroup" => Mutation::DeleteGroup(s("groupname")?),
        b"putRole" => Mutation::PutRole(file::role_from_json(v.get("role")?)?),
        b"deleteRole" => Mutation::DeleteRole(s("rolename")?),
        b"setMembership" => Mutation::SetMembership {
            group: s("groupname")?,
            username: s("username")?,
            priority: if v.get("remove").is_some() { None } else { Some(v.get("priority")?.as_int()?) },
        },
        b"setDefaultAccess" => {
            let wrapper = Json::object().with("defaultACLAccess", v.get("defaultACLAccess")?.clone());
            Mutation::SetDefaultAccess(file::default_access_from_json(&wrapper))
        }
        b"setAnonymousGroup" => Mutation::SetAnonymousGroup(s("groupname")),
        b"setChangeIndex" => Mutation::SetChangeIndex(file::change_index_from_json(v)),
        _ => return None,
    })
}

/// The journal entries of one batch, whose result is `model_after`.
///
/// A role's content is written once per batch, as its final state: everything that changes a
/// role's content (putRole, ACL edits) between its first edit and the end of the batch becomes one
/// putRole at the position of that first edit. This keeps a record linear in the size of the
/// batch (a putRole per ACL edit made it quadratic), and it is what makes ACL edits replay-safe:
/// an edit re-applied over a snapshot that already holds the batch could put an ACL in another
/// place among equal priorities, a role's final state cannot. It is equivalent to replaying every
/// edit because no other mutation depends on a role's content, only on whether it exists — which
/// is why a deleteRole ends the span (the role's content before the deletion no longer matters:
/// a putRole that opened the span is kept as it was, and ACL edits of a role that existed before
/// the batch are dropped).
fn record_entries(mutations: &[Mutation], model_after: &Model) -> Vec<Json> {
    enum Entry<'a> {
        Plain(&'a Mutation),
        /// Stands for every content edit of this role until its deletion or the end of the batch.
        RoleSpan {
            role: &'a str,
            opened_by: &'a Mutation,
            deleted: bool,
        },
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(mutations.len());
    // Roles with a span still open: the index of its entry.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for m in mutations {
        let edited_role = match m {
            Mutation::PutRole(r) => Some(r.name.as_str()),
            Mutation::AddAcl { role, .. } | Mutation::RemoveAcl { role, .. } => Some(role.as_str()),
            _ => None,
        };
        if let Some(role) = edited_role {
            if !open.contains_key(role) {
                open.insert(role, entries.len());
                entries.push(Entry::RoleSpan { role, opened_by: m, deleted: false });
            }
            continue;
        }
        if let Mutation::DeleteRole(role) = m
            && let Some(span) = open.remove(role.as_str())
            && let Some(Entry::RoleSpan { deleted, .. }) = entries.get_mut(span)
        {
            *deleted = true;
        }
        entries.push(Entry::Plain(m));
    }
    entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Plain(m) => mutation_json(m),
            Entry::RoleSpan { role, opened_by, deleted } => match (deleted, model_after.roles.get(*role)) {
                (false, Some(state)) => Some(put_role_json(state)),
                // Deleted later in the batch (or, defensively, missing): only a creation matters.
                _ => mutation_json(opened_by),
            },
        })
        .collect()
}

/// A batch as one compact JSON array of journal entries (the payload of a journal record), for
/// a replicated log (`crate::engine::replicated`).
pub fn batch_json(mutations: &[Mutation], model_after: &Model) -> Vec<u8> {
    Json::Array(record_entries(mutations, model_after)).to_compact()
}

/// The mutations of a [`batch_json`] array; `None` if it is not one.
pub fn batch_from_json(bytes: &[u8]) -> Option<Vec<Mutation>> {
    json::parse(bytes).ok()?.as_array()?.iter().map(mutation_from_json).collect()
}

fn encode_record(mutations: &[Mutation], model_after: &Model) -> Vec<u8> {
    let payload = Json::Array(record_entries(mutations, model_after)).to_compact();
    let mut record = format!("#{} {:08x}\n", payload.len(), crc32fast::hash(&payload)).into_bytes();
    record.extend_from_slice(&payload);
    record.push(b'\n');
    record
}

/// Splits a journal into its records. `Err(offset)` for a bad record followed by more data;
/// a bad record at the very end is a torn write and is reported as the valid length.
fn decode_journal(bytes: &[u8]) -> Result<(Vec<Vec<Mutation>>, usize), usize> {
    let mut records = Vec::new();
    let mut pos = JOURNAL_HEADER.len();
    while pos < bytes.len() {
        let parsed = (|| {
            let rest = &bytes[pos..];
            let newline = rest.iter().position(|&b| b == b'\n')?;
            let header = std::str::from_utf8(rest.get(1..newline)?).ok()?;
            if rest[0] != b'#' {
                return None;
            }
            let (len, crc) = header.split_once(' ')?;
            let len: usize = len.parse().ok()?;
            let crc = u32::from_str_radix(crc, 16).ok()?;
            let payload = rest.get(newline + 1..newline + 1 + len)?;
            if rest.get(newline + 1 + len) != Some(&b'\n') || crc32fast::hash(payload) != crc {
                return None;
            }
            let mutations =
                json::parse(payload).ok()?.as_array()?.iter().map(mutation_from_json).collect::<Option<_>>()?;
            Some((mutations, newline + len + 2))
        })();
        match parsed {
            Some((mutations, used)) => {
                records.push(mutations);
                pos += used;
            }
            None => {
                // Torn tail: the remainder contains no further complete record start.
                let rest = &bytes[pos..];
                let more = rest.windows(2).skip(1).any(|w| w[0] == b'\n' && w[1] == b'#');
                return if more { Err(pos) } else { Ok((records, pos)) };
            }
        }
    }
    Ok((records, pos))
}

/// Where the configuration lives and what it has on disk.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    journal_path: PathBuf,
    journal: Option<File>,
    journal_len: u64,
    journal_id: Option<FileId>,
    snapshot_id: Option<FileId>,
    snapshot_len: u64,
    /// Set when the files on disk may not reflect the acknowledged state (a failed truncate, a
    /// journal or snapshot path that changed under us): the next write starts with a compaction.
    needs_rewrite: bool,
    /// The bytes of the last snapshot we wrote, to tell our own writes from external edits.
    last_snapshot_digest: u32,
}

/// What loading found.
pub struct Loaded {
    pub store: Store,
    pub model: Model,
    pub warnings: Vec<LoadWarning>,
    /// Journal records replayed over the snapshot.
    pub replayed: usize,
}

impl Store {
    pub fn journal_path_for(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".journal");
        PathBuf::from(p)
    }

    /// Whether the journal next to the snapshot `path` holds records not yet folded into it
    /// (a dynsec-broker is running on the file, or stopped before compacting).
    pub fn journal_has_records(path: &Path) -> Result<bool, StoreError> {
        Ok(read_journal(&Self::journal_path_for(path))?.len() > JOURNAL_HEADER.len())
    }

    /// Loads the snapshot and replays the journal. The snapshot must exist (see [`Store::create`]).
    pub fn open(path: &Path) -> Result<Loaded, StoreError> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let (mut model, warnings) = load_snapshot(path, &bytes)?;
        let journal_path = Self::journal_path_for(path);
        let mut replayed = 0;
        let mut torn = false;
        let journal = read_journal(&journal_path)?;
        if !journal.is_empty() {
            if !journal.starts_with(JOURNAL_HEADER) {
                return Err(StoreError::NotAJournal { path: journal_path });
            }
            let (records, valid) = decode_journal(&journal)
                .map_err(|offset| StoreError::DamagedJournal { path: journal_path.clone(), offset: offset as u64 })?;
            if valid < journal.len() {
                torn = true;
                tracing::warn!(
                    "{}: dropping {} bytes of an incomplete final record (a write interrupted by a crash, never acknowledged)",
                    journal_path.display(),
                    journal.len() - valid
                );
            }
            replayed = records.len();
            for record in records {
                for m in record {
                    model.apply(m);
                }
            }
        }
        let mut store = Store::on_snapshot(path, journal_path, &bytes);
        // Fold the journal into the snapshot so the JSON file is current from the start. If the
        // directory is read-only right now, the journal still holds everything: carry on.
        if (replayed > 0 || torn)
            && let Err(e) = store.compact(&model)
        {
            tracing::warn!("could not fold the journal into the snapshot yet: {e}");
            store.needs_rewrite = true;
        }
        Ok(Loaded { store, model, warnings, replayed })
    }

    /// Writes a new snapshot for `model` at `path` (which must not exist) and opens it.
    pub fn create(path: &Path, model: &Model) -> Result<Store, StoreError> {
        let bytes = file::save(model);
        atomic_file::create_new(path, &bytes)?;
        let journal_path = Self::journal_path_for(path);
        let _ = fs::remove_file(&journal_path);
        Ok(Store::on_snapshot(path, journal_path, &bytes))
    }

    /// A store whose snapshot at `path` holds `bytes`, with no journal open yet.
    fn on_snapshot(path: &Path, journal_path: PathBuf, bytes: &[u8]) -> Store {
        Store {
            path: path.to_owned(),
            journal_path,
            journal: None,
            journal_len: 0,
            journal_id: None,
            snapshot_id: path_id(path),
            snapshot_len: bytes.len() as u64,
            needs_rewrite: false,
            last_snapshot_digest: crc32fast::hash(bytes),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the journal holds records not yet folded into the snapshot.
    pub fn has_pending_journal(&self) -> bool {
        self.journal_len > JOURNAL_HEADER.len() as u64 || self.needs_rewrite
    }

    /// Whether `bytes` are exactly the last snapshot this store wrote.
    pub fn is_own_snapshot(&self, bytes: &[u8]) -> bool {
        crc32fast::hash(bytes) == self.last_snapshot_digest && bytes.len() as u64 == self.snapshot_len
    }

    /// Checks that our files are still where we left them.
    fn files_intact(&self) -> bool {
        path_id(&self.path) == self.snapshot_id
            && (self.journal.is_none() || path_id(&self.journal_path) == self.journal_id)
    }

    fn open_journal(&mut self) -> Result<(), StoreError> {
        let path = &self.journal_path;
        let Some(mut f) = open_journal_file(path, true)? else {
            return Err(StoreError::Io { path: path.clone(), source: io::Error::other("journal not created") });
        };
        let len = f.metadata().map_err(io_err(path))?.len();
        if len == 0 {
            f.write_all(JOURNAL_HEADER).and_then(|()| f.sync_data()).map_err(io_err(path))?;
            sync_dir(path)?;
        }
        let meta = f.metadata().map_err(io_err(path))?;
        self.journal_len = meta.len();
        self.journal_id = Some(FileId { dev: meta.dev(), ino: meta.ino() });
        self.journal = Some(f);
        Ok(())
    }

    /// Repairs the files before a batch is applied: if they changed under us (deleted, replaced,
    /// a failed cut), the snapshot is rewritten from `acknowledged` — the state *before* the batch
    /// — so that a failure later in the batch can never leave its changes on disk.
    pub fn prepare_for_write(&mut self, acknowledged: &Model) -> Result<(), StoreError> {
        if self.needs_rewrite || !self.files_intact() {
            self.needs_rewrite = true;
            self.compact(acknowledged)?;
        }
        Ok(())
    }

    /// Makes `mutations` durable by appending one journal record. `model_after` is the state
    /// including them (the record holds the resulting state of what they touch).
    /// On error nothing of this batch will be loaded at restart, and the caller must roll it back
    /// in memory. Call [`Store::prepare_for_write`] first.
    pub fn commit(&mut self, mutations: &[Mutation], model_after: &Model) -> Result<(), StoreError> {
        if mutations.is_empty() {
            return Ok(());
        }
        if self.needs_rewrite || !self.files_intact() {
            return Err(StoreError::Io {
                path: self.journal_path.clone(),
                source: io::Error::other("configuration files changed during the write"),
            });
        }
        if self.journal.is_none() {
            self.open_journal()?;
        }
        let record = encode_record(mutations, model_after);
        let before = self.journal_len;
        let path = self.journal_path.clone();
        let Some(journal) = self.journal.as_mut() else {
            return Err(StoreError::Io { path, source: io::Error::other("journal not open") });
        };
        let written = journal.write_all(&record).and_then(|()| journal.sync_data());
        if let Err(source) = written {
            // Cut the partial or unsynced record off, so a restart cannot resurrect it.
            let cut = journal.set_len(before).and_then(|()| journal.sync_data());
            if cut.is_err() {
                self.needs_rewrite = true;
                self.journal = None;
            }
            return Err(StoreError::Io { path, source });
        }
        self.journal_len += record.len() as u64;
        Ok(())
    }

    /// The journal has outgrown the snapshot: the caller should [`Store::compact_if_due`], with
    /// only a *read* lock on the model, so that logins and ACL checks go on while the snapshot
    /// (megabytes at 100,000 clients) is written; the store's own lock keeps writers out.
    pub fn compaction_due(&self) -> bool {
        self.journal_len > self.snapshot_len.max(MIN_COMPACTION_BYTES)
    }

    /// Folds the journal into a new snapshot if it has outgrown the old one. A failure only
    /// leaves the journal longer (it keeps every change).
    pub fn compact_if_due(&mut self, model: &Model) {
        if self.compaction_due()
            && let Err(e) = self.compact(model)
        {
            tracing::warn!("snapshot after commit failed (the journal keeps the change): {e}");
        }
    }

    /// Rewrites the snapshot from `model` and empties the journal.
    pub fn compact(&mut self, model: &Model) -> Result<(), StoreError> {
        let bytes = file::save(model);
        atomic_file::replace(&self.path, &bytes)?;
        self.snapshot_id = path_id(&self.path);
        self.snapshot_len = bytes.len() as u64;
        self.last_snapshot_digest = crc32fast::hash(&bytes);
        // The journal's content is now in the snapshot. Start a fresh one (replacing the file
        // rather than truncating keeps this step atomic too).
        self.journal = None;
        atomic_file::replace_like(&self.journal_path, JOURNAL_HEADER, Some(&self.path))?;
        self.needs_rewrite = false;
        self.open_journal()
    }

    /// The mutations appended since the last snapshot, read back from the journal (used to keep
    /// acknowledged changes when the snapshot is edited by another program).
    pub fn pending_mutations(&self) -> Result<Vec<Mutation>, StoreError> {
        let bytes = read_journal(&self.journal_path)?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        if !bytes.starts_with(JOURNAL_HEADER) {
            return Err(StoreError::NotAJournal { path: self.journal_path.clone() });
        }
        let (records, _) = decode_journal(&bytes)
            .map_err(|offset| StoreError::DamagedJournal { path: self.journal_path.clone(), offset: offset as u64 })?;
        Ok(records.into_iter().flatten().collect())
    }

    /// Reads the snapshot file as it is now (for external-edit detection).
    pub fn read_snapshot(&self) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        File::open(&self.path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err(&self.path))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Client, Role};

    #[test]
    fn records_round_trip_and_torn_tails_are_dropped() {
        let mutations = vec![
            Mutation::PutRole(Role::new("r")),
            Mutation::PutClient(Client::new("u")),
            Mutation::SetMembership { group: "g".into(), username: "u".into(), priority: None },
            Mutation::SetAnonymousGroup(None),
            Mutation::SetChangeIndex(12),
        ];
        let mut journal = JOURNAL_HEADER.to_vec();
        journal.extend(encode_record(&mutations, &Model::default()));
        let full = journal.len();
        journal.extend(encode_record(&mutations, &Model::default()));
        let (records, valid) = decode_journal(&journal).unwrap();
        assert_eq!(records, vec![mutations.clone(), mutations.clone()]);
        assert_eq!(valid, journal.len());
        for cut in full + 1..journal.len() {
            let (records, valid) = decode_journal(&journal[..cut]).unwrap();
            assert_eq!((records.len(), valid), (1, full), "cut at {cut}");
        }
        let mut damaged = journal.clone();
        damaged[JOURNAL_HEADER.len() + 20] ^= 0x55;
        assert!(decode_journal(&damaged).is_err());
    }

    // --- ACL edits in records ---------------------------------------------------------------

    use crate::model::{Acl, AclType, Membership, insert_membership};
    use proptest::prelude::*;

    const NAMES: [&str; 2] = ["x", "y"];
    const TOPICS: [&str; 3] = ["a", "b", "c"];

    /// Random numbers as a mutation of the kinds a role's life consists of (ACL edits, puts,
    /// deletions, references from clients), valid against `model` the way the processor makes them.
    fn role_mutation(model: &Model, op: u8, a: usize, b: usize, p: u8) -> Mutation {
        let role = NAMES[a % 2].to_owned();
        let acl = Acl { topic: TOPICS[b % 3].into(), priority: i32::from(p % 2), allow: p.is_multiple_of(3) };
        let acl_type = AclType::PublishClientSend;
        match op % 6 {
            0 | 1 => Mutation::AddAcl { role, acl_type, acl, at: None },
            2 => Mutation::RemoveAcl { role, acl_type, topic: acl.topic },
            3 => {
                let mut r = Role::new(&role);
                r.insert_acl(acl_type, acl);
                Mutation::PutRole(r)
            }
            4 => Mutation::DeleteRole(role),
            _ => {
                let mut client = Client::new(NAMES[b % 2]);
                if model.roles.contains_key(&role) {
                    insert_membership(&mut client.roles, Membership { name: role, priority: -1 });
                }
                Mutation::PutClient(client)
            }
        }
    }

    fn replay(model: &mut Model, records: &[Vec<u8>]) {
        let mut journal = JOURNAL_HEADER.to_vec();
        for record in records {
            journal.extend_from_slice(record);
        }
        let (decoded, valid) = decode_journal(&journal).expect("records decode");
        assert_eq!(valid, journal.len());
        for m in decoded.into_iter().flatten() {
            model.apply(m);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Batches of ACL edits, role puts and deletions, written as journal records: replayed
        /// over the state before them they give the state after them, and replayed again over
        /// that state (a crash between a snapshot and the journal reset) they change nothing —
        /// including the order of ACLs of equal priority.
        #[test]
        fn records_with_acl_edits_replay_exactly_and_idempotently(
            batches in prop::collection::vec(
                prop::collection::vec((any::<u8>(), 0usize..2, 0usize..3, any::<u8>()), 1..12), 1..5),
            seed in prop::collection::vec((any::<u8>(), 0usize..2, 0usize..3, any::<u8>()), 0..8),
        ) {
            let mut base = Model::default();
            for (op, a, b, p) in seed {
                let m = role_mutation(&base, op, a, b, p);
                base.apply(m);
            }
            let mut model = base.clone();
            let mut records = Vec::new();
            for batch in batches {
                let mut applied = Vec::new();
                for (op, a, b, p) in batch {
                    let m = role_mutation(&model, op, a, b, p);
                    // As the processor records them: no-ops are not part of the batch.
                    if !model.apply(m.clone()).0.is_empty() {
                        applied.push(m);
                    }
                }
                if !applied.is_empty() {
                    records.push(encode_record(&applied, &model));
                }
            }
            let mut replayed = base.clone();
            replay(&mut replayed, &records);
            prop_assert_eq!(&replayed, &model);
            replay(&mut replayed, &records);
            prop_assert_eq!(&replayed, &model);
            prop_assert!(model.check_invariants().is_ok());
        }
    }

    /// A batch of N ACL edits journals each edit once: the record grows in proportion to N
    /// (a putRole per edit made it grow with N²).
    #[test]
    fn a_record_of_acl_edits_grows_linearly() {
        let record_len = |edits: usize| {
            let mut model = Model::default();
            model.apply(Mutation::PutRole(Role::new("bulk")));
            let mut batch = Vec::new();
            for i in 0..edits {
                let m = Mutation::AddAcl {
                    role: "bulk".into(),
                    acl_type: AclType::PublishClientSend,
                    acl: Acl { topic: format!("devices/{i:06}/telemetry"), priority: 0, allow: true },
                    at: None,
                };
                model.apply(m.clone());
                batch.push(m);
            }
            encode_record(&batch, &model).len()
        };
        let (n, two_n) = (record_len(500), record_len(1000));
        // Exactly linear but for the record's fixed overhead (header, role name, length digits).
        let per_edit = (two_n - n) / 500;
        assert!(two_n < 2 * n + 64, "500 edits: {n} bytes, 1000 edits: {two_n} bytes");
        assert!(n.abs_diff(500 * per_edit) < 128, "{n} bytes for 500 edits of {per_edit} bytes");
    }
}
