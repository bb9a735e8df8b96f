//! The persistence file: a redb database (pure Rust, copy-on-write B-trees, a crash leaves the
//! last committed state) with five tables: `meta` (the format key), `retained` (topic → message),
//! `sessions` (client id → session), `queued` ((client id, sequence) → message) and `qos2`
//! ((client id, direction, packet id): the unfinished QoS 2 exchanges of persistent sessions; a
//! table added after format 1 was fixed, which a file without it gets at its first open, and
//! which an older version ignores) and `wills` (client id → a will waiting for its delay, added
//! the same way). Opening
//! checks that the file is ours: a mosquitto `mosquitto.db`, another program's file, a damaged
//! or truncated file, or a newer format stops the broker with an error naming the file
//! (docs/persistence.md, "Bad files"); nothing in such a file is changed.

use std::io::Read;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::records::{self, StoredMessage, StoredSession, StoredWill};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queued");
const QOS2: TableDefinition<(&str, u8, u16), u8> = TableDefinition::new("qos2");
const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");

const FORMAT_KEY: &str = "format";
/// The sequence of the last write-ahead log record folded into this file (u64 LE; absent: 0).
/// Written in the same transaction as the changes it stands for, so the durable state of the file
/// always says which log records it holds (docs/persistence.md, "Write-ahead log").
const WAL_SEQUENCE_KEY: &str = "wal_sequence";
/// The format this version writes and reads. A file with another value is refused.
const FORMAT: &[u8] = b"dynsec-broker persistence 1";
/// How mosquitto's own persistence file begins (its `magic`), to name it in the error.
const MOSQUITTO_MAGIC: &[u8] = b"\x00\xb5\x00mosquitto db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{0}: this is a mosquitto persistence file (mosquitto.db), which this broker does not read; move it away or set persistence_file to another name (docs/persistence.md)"
    )]
    Mosquitto(PathBuf),
    #[error(
        "{path}: not a persistence file of this broker ({reason}); move it away or set persistence_file to another name"
    )]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: the persistence file is damaged ({reason}); restore a backup or move it away to start empty")]
    Damaged { path: PathBuf, reason: String },
    #[error("{path}: the persistence file is in use by another process")]
    InUse { path: PathBuf },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// A client id as the changes carry it: shared (the connection's own `Arc<str>`), so that the
/// changes of one session — a copy queued per message, its removal per acknowledgement — do not
/// each allocate a `String`. Written as a string, as before.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(std::sync::Arc<str>);

impl std::ops::Deref for ClientId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> Self {
        ClientId(id.into())
    }
}

impl From<String> for ClientId {
    fn from(id: String) -> Self {
        ClientId(id.into())
    }
}

impl From<std::sync::Arc<str>> for ClientId {
    fn from(id: std::sync::Arc<str>) -> Self {
        ClientId(id)
    }
}

impl From<&std::sync::Arc<str>> for ClientId {
    fn from(id: &std::sync::Arc<str>) -> Self {
        ClientId(id.clone())
    }
}

impl PartialEq<str> for ClientId {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for ClientId {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ClientId::from)
    }
}

/// One change to the store (also a write-ahead log record's content, `persistence/wal.rs`).
/// The byte fields are written as one slice each (`records::raw_bytes`: the same encoding as
/// before, cheaper to write).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Retain {
        topic: String,
        #[serde(with = "records::raw_bytes")]
        message: Vec<u8>,
    },
    Unretain {
        topic: String,
    },
    Session {
        client_id: ClientId,
        #[serde(with = "records::raw_bytes")]
        session: Vec<u8>,
    },
    /// Ends a session: its record and its queue.
    EndSession {
        client_id: ClientId,
    },
    Queue {
        client_id: ClientId,
        sequence: u64,
        /// A slice of a buffer shared by many messages (`sessions::Index::encoded`): one
        /// allocation per few hundred messages, not one each.
        #[serde(with = "records::raw_bytes")]
        message: bytes::Bytes,
    },
    Dequeue {
        client_id: ClientId,
        sequence: u64,
    },
    /// A persistent session's client left with a delayed will.
    Will {
        client_id: ClientId,
        #[serde(with = "records::raw_bytes")]
        will: Vec<u8>,
    },
    /// The will was published, or its client came back.
    Unwill {
        client_id: ClientId,
    },
    /// A QoS 2 exchange of a persistent session begins (`held`) or ends.
    Qos2 {
        client_id: ClientId,
        direction: Qos2Direction,
        pkid: u16,
        held: bool,
    },
}

/// Which side of a QoS 2 exchange a stored packet id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Qos2Direction {
    /// The client's PUBLISH was acknowledged with PUBREC; its PUBREL has not come yet (a
    /// PUBLISH sent again with this id is not routed again).
    Inbound,
    /// The client's PUBREC came for a delivery; the broker owes it a PUBREL (then PUBCOMP).
    PubrelDue,
}

impl Qos2Direction {
    fn code(self) -> u8 {
        match self {
            Qos2Direction::Inbound => 0,
            Qos2Direction::PubrelDue => 1,
        }
    }

    fn of(code: u8) -> Option<Self> {
        match code {
            0 => Some(Qos2Direction::Inbound),
            1 => Some(Qos2Direction::PubrelDue),
            _ => None,
        }
    }
}

/// Everything the file held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub retained: Vec<StoredMessage>,
    pub sessions: Vec<(String, StoredSession)>,
    /// Per client id, in sequence order.
    pub queued: Vec<(String, u64, StoredMessage)>,
    /// Unfinished QoS 2 exchanges: (client id, direction, packet id).
    pub qos2: Vec<(String, Qos2Direction, u16)>,
    /// Wills waiting for their delay, by client id.
    pub wills: Vec<(String, StoredWill)>,
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the file at `path`, refusing files that are not ours.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let display = path.to_path_buf();
        let io = |e: std::io::Error| StoreError::Io { path: display.clone(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let existing = match std::fs::File::open(path) {
            Ok(mut file) => {
                let mut head = [0u8; 16];
                let read = file.read(&mut head).map_err(io)?;
                if head[..read].starts_with(MOSQUITTO_MAGIC) {
                    return Err(StoreError::Mosquitto(display));
                }
                read > 0
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(e)),
        };
        // redb asserts some of its header's promises instead of returning an error (a file
        // truncated below the length its header states panics in `Database::create`): a file
        // from outside must give an error, so that panic is caught and reported as damage.
        // (The panic hook is silenced meanwhile: the error below says it. This runs at start,
        // before any connection exists.)
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(path)));
        std::panic::set_hook(hook);
        let mut db = match opened {
            Ok(opened) => opened.map_err(|e| open_error(&display, existing, e))?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "redb refused its header".to_owned());
                return Err(StoreError::Damaged { path: display, reason: format!("truncated or damaged: {what}") });
            }
        };
        let store = {
            let write = db.begin_write().map_err(|e| damaged(&display, e))?;
            {
                let mut meta = write.open_table(META).map_err(|e| damaged(&display, e))?;
                let format = meta.get(FORMAT_KEY).map_err(|e| damaged(&display, e))?.map(|v| v.value().to_vec());
                match format {
                    Some(format) if format == FORMAT => {}
                    Some(other) => {
                        return Err(StoreError::Foreign {
                            path: display,
                            reason: format!(
                                "format {:?}, this version reads {:?}",
                                String::from_utf8_lossy(&other),
                                String::from_utf8_lossy(FORMAT)
                            ),
                        });
                    }
                    None => {
                        let holds_tables = write.list_tables().map_err(|e| damaged(&display, e))?.count() > 1;
                        if existing && holds_tables {
                            return Err(StoreError::Foreign {
                                path: display,
                                reason: "a redb database without this broker's format key".into(),
                            });
                        }
                        meta.insert(FORMAT_KEY, FORMAT).map_err(|e| damaged(&display, e))?;
                    }
                }
                // The other tables exist from the start, so that reading never meets a missing one.
                write.open_table(RETAINED).map_err(|e| damaged(&display, e))?;
                write.open_table(SESSIONS).map_err(|e| damaged(&display, e))?;
                write.open_table(QUEUED).map_err(|e| damaged(&display, e))?;
                write.open_table(QOS2).map_err(|e| damaged(&display, e))?;
                write.open_table(WILLS).map_err(|e| damaged(&display, e))?;
            }
            write.commit().map_err(|e| damaged(&display, e))?;
            // Space freed by earlier deletes is given back once per start (redb reuses freed pages
            // meanwhile, so the file does not grow with churn alone).
            let _ = db.compact();
            Store { db, path: display }
        };
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads everything. A record that does not decode is an error naming the table and key:
    /// the broker does not guess, and does not silently drop acknowledged state.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let damaged_at = |table: &str, key: &str, e: &dyn std::fmt::Display| StoreError::Damaged {
            path: self.path.clone(),
            reason: format!("record {key:?} of table {table}: {e}"),
        };
        let read = self.db.begin_read().map_err(|e| damaged(&self.path, e))?;
        let mut loaded = Loaded::default();
        let retained = read.open_table(RETAINED).map_err(|e| damaged(&self.path, e))?;
        for row in retained.iter().map_err(|e| damaged(&self.path, e))? {
            let (topic, value) = row.map_err(|e| damaged(&self.path, e))?;
            let message = records::decode(value.value()).map_err(|e| damaged_at("retained", topic.value(), &e))?;
            loaded.retained.push(message);
        }
        let sessions = read.open_table(SESSIONS).map_err(|e| damaged(&self.path, e))?;
        for row in sessions.iter().map_err(|e| damaged(&self.path, e))? {
            let (client_id, value) = row.map_err(|e| damaged(&self.path, e))?;
            let session = records::decode(value.value()).map_err(|e| damaged_at("sessions", client_id.value(), &e))?;
            loaded.sessions.push((client_id.value().to_owned(), session));
        }
        let queued = read.open_table(QUEUED).map_err(|e| damaged(&self.path, e))?;
        loaded.queued.reserve(queued.len().unwrap_or(0) as usize);
        for row in queued.iter().map_err(|e| damaged(&self.path, e))? {
            let (key, value) = row.map_err(|e| damaged(&self.path, e))?;
            let (client_id, sequence) = key.value();
            let message = records::decode(value.value())
                .map_err(|e| damaged_at("queued", &format!("{client_id}/{sequence}"), &e))?;
            loaded.queued.push((client_id.to_owned(), sequence, message));
        }
        let qos2 = read.open_table(QOS2).map_err(|e| damaged(&self.path, e))?;
        for row in qos2.iter().map_err(|e| damaged(&self.path, e))? {
            let (key, _) = row.map_err(|e| damaged(&self.path, e))?;
            let (client_id, direction, pkid) = key.value();
            let direction = Qos2Direction::of(direction)
                .ok_or_else(|| damaged_at("qos2", &format!("{client_id}/{direction}/{pkid}"), &"unknown direction"))?;
            loaded.qos2.push((client_id.to_owned(), direction, pkid));
        }
        let wills = read.open_table(WILLS).map_err(|e| damaged(&self.path, e))?;
        for row in wills.iter().map_err(|e| damaged(&self.path, e))? {
            let (client_id, value) = row.map_err(|e| damaged(&self.path, e))?;
            let will = records::decode(value.value()).map_err(|e| damaged_at("wills", client_id.value(), &e))?;
            loaded.wills.push((client_id.value().to_owned(), will));
        }
        Ok(loaded)
    }

    /// The sequence of the last write-ahead log record this file holds (0: none).
    pub fn wal_sequence(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read().map_err(|e| damaged(&self.path, e))?;
        let meta = read.open_table(META).map_err(|e| damaged(&self.path, e))?;
        let Some(value) = meta.get(WAL_SEQUENCE_KEY).map_err(|e| damaged(&self.path, e))? else { return Ok(0) };
        let bytes: [u8; 8] = value.value().try_into().map_err(|_| StoreError::Damaged {
            path: self.path.clone(),
            reason: format!("record {WAL_SEQUENCE_KEY:?} of table meta is not 8 bytes"),
        })?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Applies `ops` in one transaction; `durable`: synced before this returns.
    pub fn commit(&self, ops: &[Op], durable: bool) -> Result<(), String> {
        self.apply(ops, None, durable)
    }

    /// Applies `ops` (the write-ahead log's records up to `wal_sequence`) in one transaction
    /// that is not synced: the next [`Store::sync`] makes it durable (the writer's checkpoint).
    pub fn fold<'a>(&self, ops: impl Iterator<Item = &'a Op>, wal_sequence: u64) -> Result<(), String> {
        self.apply(ops, Some(wal_sequence), false)
    }

    fn apply<'a>(
        &self,
        ops: impl IntoIterator<Item = &'a Op>,
        wal_sequence: Option<u64>,
        durable: bool,
    ) -> Result<(), String> {
        let mut write = self.db.begin_write().map_err(|e| e.to_string())?;
        write.set_durability(if durable { Durability::Immediate } else { Durability::None });
        {
            if let Some(sequence) = wal_sequence {
                let mut meta = write.open_table(META).map_err(|e| e.to_string())?;
                meta.insert(WAL_SEQUENCE_KEY, sequence.to_le_bytes().as_slice()).map_err(|e| e.to_string())?;
            }
            let mut retained = write.open_table(RETAINED).map_err(|e| e.to_string())?;
            let mut sessions = write.open_table(SESSIONS).map_err(|e| e.to_string())?;
            let mut queued = write.open_table(QUEUED).map_err(|e| e.to_string())?;
            let mut qos2 = write.open_table(QOS2).map_err(|e| e.to_string())?;
            let mut wills = write.open_table(WILLS).map_err(|e| e.to_string())?;
            for op in ops {
                let done = match op {
                    Op::Retain { topic, message } => retained.insert(topic.as_str(), message.as_slice()).map(drop),
                    Op::Unretain { topic } => retained.remove(topic.as_str()).map(drop),
                    Op::Session { client_id, session } => sessions.insert(&**client_id, session.as_slice()).map(drop),
                    Op::EndSession { client_id } => {
                        let id = &**client_id;
                        sessions.remove(id).and_then(|_| {
                            let keys: Vec<u64> = queued
                                .range((id, 0)..=(id, u64::MAX))?
                                .map(|row| row.map(|(key, _)| key.value().1))
                                .collect::<Result<_, _>>()?;
                            for sequence in keys {
                                queued.remove((id, sequence))?;
                            }
                            let exchanges: Vec<(u8, u16)> = qos2
                                .range((id, 0, 0)..=(id, u8::MAX, u16::MAX))?
                                .map(|row| row.map(|(key, _)| (key.value().1, key.value().2)))
                                .collect::<Result<_, _>>()?;
                            for (direction, pkid) in exchanges {
                                qos2.remove((id, direction, pkid))?;
                            }
                            wills.remove(id)?;
                            Ok(())
                        })
                    }
                    Op::Will { client_id, will } => wills.insert(&**client_id, will.as_slice()).map(drop),
                    Op::Unwill { client_id } => wills.remove(&**client_id).map(drop),
                    Op::Qos2 { client_id, direction, pkid, held: true } => {
                        qos2.insert((&**client_id, direction.code(), *pkid), 0).map(drop)
                    }
                    Op::Qos2 { client_id, direction, pkid, held: false } => {
                        qos2.remove((&**client_id, direction.code(), *pkid)).map(drop)
                    }
                    Op::Queue { client_id, sequence, message } => {
                        queued.insert((&**client_id, *sequence), &message[..]).map(drop)
                    }
                    Op::Dequeue { client_id, sequence } => queued.remove((&**client_id, *sequence)).map(drop),
                };
                done.map_err(|e| e.to_string())?;
            }
        }
        write.commit().map_err(|e| e.to_string())
    }

    /// Makes everything committed so far durable (autosave mode's periodic save).
    pub fn sync(&self) -> Result<(), String> {
        let write = self.db.begin_write().map_err(|e| e.to_string())?;
        write.commit().map_err(|e| e.to_string())
    }
}

fn damaged(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged { path: path.to_path_buf(), reason: error.to_string() }
}

fn open_error(path: &Path, existing: bool, error: redb::DatabaseError) -> StoreError {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.to_path_buf() },
        redb::DatabaseError::Storage(redb::StorageError::Io(e)) if !existing => {
            StoreError::Io { path: path.to_path_buf(), reason: e.to_string() }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) if reason.contains("magic") => {
            StoreError::Foreign { path: path.to_path_buf(), reason }
        }
        other => damaged(path, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_err(path: &Path) -> String {
        match Store::open(path) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_new_file_round_trips_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("b.redb");
        let store = Store::open(&path).unwrap();
        let message = records::encode(&crate::persistence::stored_message("a/b", b"v", 1, "p", None, None));
        let ops = [
            Op::Retain { topic: "a/b".into(), message: message.clone() },
            Op::Retain { topic: "a/c".into(), message: message.clone() },
            Op::Unretain { topic: "a/c".into() },
            Op::Queue { client_id: "c".into(), sequence: 1, message: message.clone().into() },
            Op::Queue { client_id: "c".into(), sequence: 2, message: message.clone().into() },
            Op::Queue { client_id: "d".into(), sequence: 2, message: message.into() },
            Op::Dequeue { client_id: "c".into(), sequence: 1 },
            Op::EndSession { client_id: "d".into() },
        ];
        store.commit(&ops, true).unwrap();
        drop(store);
        let loaded = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded.retained.len(), 1);
        assert_eq!(loaded.retained[0].topic, "a/b");
        let queued: Vec<_> = loaded.queued.iter().map(|(c, s, _)| (c.as_str(), *s)).collect();
        assert_eq!(queued, [("c", 2)]);
    }

    #[test]
    fn foreign_damaged_and_mosquitto_files_are_refused_by_name_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mosquitto = dir.path().join("mosquitto.db");
        let mut bytes = MOSQUITTO_MAGIC.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 6, 0, 0, 0, 0]);
        std::fs::write(&mosquitto, &bytes).unwrap();
        let error = open_err(&mosquitto);
        assert!(error.contains("mosquitto.db") && error.contains("mosquitto persistence file"), "{error}");
        assert_eq!(std::fs::read(&mosquitto).unwrap(), bytes, "left as it was");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, this is not a database at all, just some text".repeat(20)).unwrap();
        let error = open_err(&text);
        assert!(error.contains("notes.txt"), "{error}");

        let good = dir.path().join("good.redb");
        let store = Store::open(&good).unwrap();
        let message = records::encode(&crate::persistence::stored_message("t", &[7; 5000], 1, "p", None, None));
        let ops: Vec<Op> = (0..50).map(|i| Op::Retain { topic: format!("t/{i}"), message: message.clone() }).collect();
        store.commit(&ops, true).unwrap();
        drop(store);
        let whole = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.redb");
        std::fs::write(&truncated, &whole[..whole.len() / 3]).unwrap();
        let error = open_err(&truncated);
        assert!(error.contains("truncated.redb") && error.contains("damaged"), "{error}");

        let other = dir.path().join("other.redb");
        {
            let db = Database::create(&other).unwrap();
            let write = db.begin_write().unwrap();
            write.open_table(TableDefinition::<&str, &str>::new("cars")).unwrap().insert("a", "b").unwrap();
            write.commit().unwrap();
        }
        let error = open_err(&other);
        assert!(error.contains("other.redb") && error.contains("not a persistence file"), "{error}");
    }

    #[test]
    fn a_record_that_does_not_decode_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let store = Store::open(&path).unwrap();
        store.commit(&[Op::Session { client_id: "dev-7".into(), session: vec![0xff, 0xff, 0xff] }], true).unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("b.redb") && error.contains("dev-7") && error.contains("sessions"), "{error}");
    }
}
