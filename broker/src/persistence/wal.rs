//! The write-ahead log beside the redb file (`<persistence_file>.wal`): durable mode appends
//! every group of changes to it and syncs it once per group (a plain `fdatasync`, a fraction of a
//! synced redb commit: docs/persistence.md, "Write-ahead log"); the writer folds the changes into
//! redb in the background and, after a synced redb commit that records the last folded sequence,
//! empties the log. This module owns the file: its record format, appending, syncing, emptying,
//! and reading it back at start.
//!
//! A record: the magic `DSW1`, the payload's length (u32 LE), its sequence number (u64 LE, one
//! more than the record before it), a CRC-32 of length, sequence and payload (u32 LE), then the
//! payload (a group of changes, postcard-encoded by the caller). Reading stops at the first
//! record that is cut short or does not check out *if nothing valid follows it*: that is a write
//! a crash interrupted (nothing in it was acknowledged, since acknowledgements wait for the sync
//! after the write). A bad record followed by a valid one is damage, and an error naming the
//! file (docs/persistence.md, "Bad files").

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::store::StoreError;

const MAGIC: &[u8; 4] = b"DSW1";
/// Magic, length, sequence, checksum.
const HEADER: usize = 4 + 4 + 8 + 4;
/// The largest payload a record may claim (a group is bounded by the writer far below this), so
/// that a damaged length is not believed.
const MAX_PAYLOAD: usize = 1 << 30;

/// The log file's path for the store at `store`: the same name with `.wal` added.
pub fn path_for(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// See the module documentation.
pub struct Wal {
    file: File,
    path: PathBuf,
    /// The length of what has been written (where the next record goes).
    len: u64,
    /// Written since the last sync.
    unsynced: bool,
}

/// What reading the log at start gave.
#[derive(Debug)]
pub struct Recovered {
    /// The records with a sequence above the one asked for, in order: (sequence, payload).
    pub records: Vec<(u64, Vec<u8>)>,
    /// Where an interrupted write was cut off (bytes from the start), if there was one.
    pub torn_at: Option<u64>,
}

impl Wal {
    /// Opens (or creates) the log at `path` and reads the records with a sequence above `after`
    /// (those at or below it are already in the redb file). The caller applies them, makes them
    /// durable in redb, then calls [`Wal::reset`].
    pub fn open(path: &Path, after: u64) -> Result<(Wal, Recovered), StoreError> {
        let io = |e: std::io::Error| StoreError::Io { path: path.to_path_buf(), reason: e.to_string() };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let recovered = scan(&bytes, after).map_err(|scan| match scan {
            ScanError::Foreign => StoreError::Foreign {
                path: path.to_path_buf(),
                reason: "it does not begin with this broker's write-ahead log record".into(),
            },
            ScanError::Damaged(reason) => StoreError::Damaged { path: path.to_path_buf(), reason },
        })?;
        let len = bytes.len() as u64;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((Wal { file, path: path.to_path_buf(), len, unsynced: false }, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the log (what a checkpoint would empty).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Written since the last sync.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Appends one record holding `payload` (not synced).
    pub fn append(&mut self, sequence: u64, payload: &[u8]) -> std::io::Result<()> {
        let mut record = Vec::new();
        begin_record(&mut record);
        record.extend_from_slice(payload);
        self.append_record(sequence, &mut record)
    }

    /// Appends the record `record` holds (begun with [`begin_record`], its payload after the
    /// header room), not synced: the header is filled in place, so that the record is built
    /// without a copy. A failed write is cut off again, so that the next record follows the last
    /// good one (a half record in the middle would read as damage).
    pub fn append_record(&mut self, sequence: u64, record: &mut [u8]) -> std::io::Result<()> {
        fill_header(sequence, record);
        let start = self.len;
        match self.file.write_all(record) {
            Ok(()) => {
                self.len += record.len() as u64;
                self.unsynced = true;
                Ok(())
            }
            Err(e) => {
                self.file.set_len(start)?;
                self.file.seek(SeekFrom::Start(start))?;
                Err(e)
            }
        }
    }

    /// Makes everything appended durable (`fdatasync`).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Empties the log. Only after a synced redb commit that holds every record in it (the
    /// writer's checkpoint). Synced, so that records appended afterwards can never sit behind
    /// older ones after a crash.
    pub fn reset(&mut self) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_all()?;
        self.len = 0;
        self.unsynced = false;
        Ok(())
    }

    /// A handle on the same file for syncing it without holding the log (the writer thread
    /// syncs while connections append: `persistence/writer.rs`).
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Marks everything appended as synced (after a sync through [`Wal::sync_handle`] that began
    /// when nothing newer was appended).
    pub fn mark_synced(&mut self) {
        self.unsynced = false;
    }
}

/// Clears `buf` and leaves room for a record's header; the payload is written after it, then
/// the record appended with [`Wal::append_record`].
pub fn begin_record(buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(HEADER, 0);
}

/// Fills the header of a record begun with [`begin_record`].
fn fill_header(sequence: u64, record: &mut [u8]) {
    let len = (record.len() - HEADER) as u32;
    record[..4].copy_from_slice(MAGIC);
    record[4..8].copy_from_slice(&len.to_le_bytes());
    record[8..16].copy_from_slice(&sequence.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&record[4..16]);
    crc.update(&record[HEADER..]);
    record[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
}

#[cfg(test)]
fn encode_record(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    begin_record(&mut record);
    record.extend_from_slice(payload);
    fill_header(sequence, &mut record);
    record
}

/// The record at `at` if it is whole and checks out: (sequence, payload).
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    let sequence = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let expected = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let payload = bytes.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[4..16]);
    crc.update(payload);
    (crc.finalize() == expected).then_some((sequence, payload))
}

#[derive(Debug)]
enum ScanError {
    Foreign,
    Damaged(String),
}

/// Reads the records of a log's bytes (see the module documentation).
fn scan(bytes: &[u8], after: u64) -> Result<Recovered, ScanError> {
    // Another program's file is refused rather than emptied; a crash can only leave our magic,
    // a prefix of it, or zeros there.
    let head = &bytes[..bytes.len().min(4)];
    if !MAGIC.starts_with(head) && head.iter().any(|&b| b != 0) {
        return Err(ScanError::Foreign);
    }
    let mut records = Vec::new();
    let mut previous: Option<u64> = None;
    let mut at = 0usize;
    while at < bytes.len() {
        let Some((sequence, payload)) = record_at(bytes, at) else {
            // Valid records after this one: not an interrupted write but damage.
            let mut next = at + 1;
            while let Some(found) = find_magic(bytes, next) {
                if record_at(bytes, found).is_some() {
                    return Err(ScanError::Damaged(format!(
                        "the write-ahead log record at byte {at} does not check out, and valid records follow it"
                    )));
                }
                next = found + 1;
            }
            return Ok(Recovered { records, torn_at: Some(at as u64) });
        };
        if let Some(previous) = previous
            && sequence != previous + 1
        {
            return Err(ScanError::Damaged(format!(
                "the write-ahead log record at byte {at} has sequence {sequence} after {previous}"
            )));
        }
        if sequence > after {
            if records.is_empty() && sequence != after + 1 {
                return Err(ScanError::Damaged(format!(
                    "the write-ahead log begins at sequence {sequence}, but the store holds only up to {after}"
                )));
            }
            records.push((sequence, payload.to_vec()));
        }
        previous = Some(sequence);
        at += HEADER + payload.len();
    }
    Ok(Recovered { records, torn_at: None })
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    rest.windows(MAGIC.len()).position(|w| w == MAGIC).map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[(u64, &[u8])]) -> Vec<u8> {
        records.iter().flat_map(|(s, p)| encode_record(*s, p)).collect()
    }

    fn sequences(recovered: &Recovered) -> Vec<u64> {
        recovered.records.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn records_read_back_in_order_after_a_sequence() {
        let bytes = log(&[(5, b"a"), (6, b"bb"), (7, b""), (8, b"dddd")]);
        let all = scan(&bytes, 4).unwrap();
        assert_eq!(sequences(&all), [5, 6, 7, 8]);
        assert_eq!(all.records[1].1, b"bb");
        assert!(all.torn_at.is_none());
        // Those a checkpoint already holds are skipped (replay after a checkpoint that the log's
        // emptying did not follow before a crash).
        assert_eq!(sequences(&scan(&bytes, 6).unwrap()), [7, 8]);
        assert!(scan(&bytes, 8).unwrap().records.is_empty());
        assert!(scan(&[], 0).unwrap().records.is_empty());
    }

    #[test]
    fn a_torn_tail_ends_the_log_without_error() {
        let whole = log(&[(1, b"first"), (2, b"second"), (3, b"third record")]);
        let end_of_second = 2 * HEADER + 5 + 6;
        // Every cut inside the third record (a crash in the middle of its write).
        for cut in end_of_second..whole.len() {
            let recovered = scan(&whole[..cut], 0).unwrap();
            assert_eq!(sequences(&recovered), [1, 2], "cut at {cut}");
            assert_eq!(recovered.torn_at, (cut > end_of_second).then_some(end_of_second as u64));
        }
        // Zeros where the file was extended but the data never came.
        let mut zeros = log(&[(1, b"first")]);
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(sequences(&scan(&zeros, 0).unwrap()), [1]);
        // A torn first record.
        assert!(scan(&whole[..3], 0).unwrap().records.is_empty());
        assert!(scan(&whole[..HEADER + 2], 0).unwrap().records.is_empty());
    }

    #[test]
    fn a_damaged_record_followed_by_valid_ones_is_an_error() {
        let mut bytes = log(&[(1, b"first"), (2, b"second"), (3, b"third")]);
        bytes[HEADER + 5 + HEADER + 2] ^= 0xff; // a byte of the second payload
        match scan(&bytes, 0) {
            Err(ScanError::Damaged(reason)) => assert!(reason.contains("valid records follow"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // The same damage in the last record is indistinguishable from a torn write.
        let mut last = log(&[(1, b"first"), (2, b"second")]);
        let n = last.len();
        last[n - 1] ^= 0xff;
        assert_eq!(sequences(&scan(&last, 0).unwrap()), [1]);
    }

    #[test]
    fn gaps_and_foreign_files_are_refused() {
        let gap = log(&[(1, b"a"), (3, b"c")]);
        assert!(matches!(scan(&gap, 0), Err(ScanError::Damaged(_))));
        let late = log(&[(9, b"a")]);
        assert!(matches!(scan(&late, 3), Err(ScanError::Damaged(_))));
        assert!(matches!(scan(b"hello, world", 0), Err(ScanError::Foreign)));
    }

    #[test]
    fn append_sync_reset_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("b.redb"));
        assert!(path.ends_with("b.redb.wal"));
        let (mut wal, recovered) = Wal::open(&path, 0).unwrap();
        assert!(recovered.records.is_empty());
        wal.append(1, b"one").unwrap();
        wal.append(2, b"two").unwrap();
        assert!(wal.unsynced());
        wal.sync().unwrap();
        assert!(!wal.unsynced());
        drop(wal);
        let (mut wal, recovered) = Wal::open(&path, 0).unwrap();
        assert_eq!(sequences(&recovered), [1, 2]);
        // Appends after a reopen follow the records already there.
        wal.append(3, b"three").unwrap();
        drop(wal);
        let (mut wal, recovered) = Wal::open(&path, 1).unwrap();
        assert_eq!(sequences(&recovered), [2, 3]);
        // A checkpoint at 3 empties it; the next record is 4 (rotation: the file starts over).
        wal.reset().unwrap();
        assert!(wal.is_empty());
        wal.append(4, b"four").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered) = Wal::open(&path, 3).unwrap();
        assert_eq!(sequences(&recovered), [4]);
        assert_eq!(recovered.records[0].1, b"four");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (HEADER + 4) as u64);
    }

    #[test]
    fn a_foreign_file_is_refused_by_name_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb.wal");
        std::fs::write(&path, b"not a log at all").unwrap();
        let error = Wal::open(&path, 0).err().unwrap().to_string();
        assert!(error.contains("x.redb.wal") && error.contains("not a persistence file"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a log at all");
    }
}
