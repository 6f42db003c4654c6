//! The ledger journal of a file-backed [`SqliteRecords`](super::SqliteRecords).
//!
//! An append is made durable by writing its records at the end of a journal segment and
//! syncing that file: one `write` and one `fdatasync` for a whole group commit, however
//! many index pages the records would dirty in SQLite. Records then wait, in the segment
//! and in memory (where duplicate checks find them), until the indexer moves a sealed
//! segment into ledger blocks in one large transaction and deletes the file. A read
//! indexes what waits first, the active segment's records included, without sealing it:
//! their frames stay in the file until it is sealed, and a replay inserts them again
//! harmlessly.
//!
//! A segment file, `<database file>-ledger-<number>`, is a run of frames: the payload's
//! length (u32, little-endian), its CRC-32 (u32, little-endian), and the payload, one
//! [`LedgerRecord`] (see [`record_codec`](super::record_codec)). A frame cut short or
//! failing its checksum with nothing valid after it is the end of a write that was never
//! acknowledged, and ignored. One followed by frames that verify is damage to the medium:
//! replay keeps every frame that verifies, moves the segment aside as
//! `<database file>-ledger-damaged-<number>` (never deleting it), logs an error, and the
//! store reports the damage until an operator acknowledges it (which renames the file
//! with `-acknowledged` appended).
//!
//! Segments are made ahead of time, filled with zeros and synced (a zero length ends
//! replay), so an append overwrites blocks the file already has and its `fdatasync` has
//! no new size or extent to record: about half the latency of syncing a growing file.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

use super::{blocks, record_codec};
use crate::error::Error;
use crate::event::EventId;
use crate::ledger::{Appended, LedgerRecord};
use crate::tenant::TenantId;

/// What the name of a damaged segment moved aside has between the journal's prefix and
/// its number; an operator's acknowledgement appends [`ACKNOWLEDGED`].
pub(super) const DAMAGED: &str = "damaged-";

/// The suffix of an acknowledged damaged segment.
const ACKNOWLEDGED: &str = "-acknowledged";

/// The largest frame payload replay accepts; a record is far smaller.
const MAX_FRAME: usize = 1 << 20;

/// Bytes before a frame's payload: its length and its checksum.
const FRAME_HEADER: usize = 8;

/// Records in a segment before it is sealed and handed to the indexer.
pub(super) const SEGMENT_RECORDS: usize = 2_048;

/// Bytes made ahead of time for a segment, and after which it is sealed whatever its
/// record count (a larger last append grows the file, more slowly).
const SEGMENT_BYTES: usize = 2 << 20;

pub(super) type Key = (TenantId, EventId);

/// Takes the journal of the database at `db_path` for this store: `None` when another
/// store (in this or another process) holds it, which then replays and indexes it.
pub(super) fn take_ownership(db_path: &Path) -> Result<Option<File>, Error> {
    let (dir, prefix) = location(db_path)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{prefix}lock")))
        .map_err(|e| io("open the ledger journal lock", &e))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io("lock the ledger journal", &e)),
    }
}

/// Records written to the journal and not yet indexed in SQLite.
pub(super) struct Journal {
    /// The held lock that makes this store the journal's only writer.
    _owner: File,
    dir: PathBuf,
    prefix: String,
    next_no: u64,
    active: Option<Active>,
    /// The next segment, made ahead of time.
    spare: Option<Spare>,
    /// Whether a spare is being made (its number taken).
    spare_coming: bool,
    /// Segments closed to appends, oldest first, waiting for the indexer.
    sealed: VecDeque<Arc<Segment>>,
    /// Each waiting record's segment number and position in it.
    keys: HashMap<Key, (u64, usize), RandomState>,
    /// Set when a failed write could not be undone: the segment's tail is unknown, so
    /// appends are refused until the store is opened again (and replays what is valid).
    broken: bool,
    /// A read connection for duplicate checks against the indexed ledger.
    lookup: Connection,
}

/// The segment appends go to.
struct Active {
    no: u64,
    file: File,
    len: u64,
    records: Vec<LedgerRecord>,
    /// How many of `records`, from the start, a read already had indexed.
    indexed: usize,
}

/// A segment file made ahead of time.
pub(super) struct Spare {
    no: u64,
    file: File,
}

/// A segment closed to appends.
pub(super) struct Segment {
    no: u64,
    path: PathBuf,
    records: Vec<LedgerRecord>,
    /// How many of `records`, from the start, were indexed while the segment was active.
    from: usize,
}

impl Segment {
    /// The records still to index.
    pub(super) fn unindexed(&self) -> &[LedgerRecord] {
        &self.records[self.from..]
    }
}

/// What an earlier process left in the journal.
pub(super) struct Leftovers {
    /// Every record of every segment, oldest first.
    pub(super) records: Vec<LedgerRecord>,
    /// The segment files, to delete once their records are indexed.
    pub(super) files: Vec<PathBuf>,
    next_no: u64,
}

impl Journal {
    /// Reads the segments left next to the database at `db_path`.
    pub(super) fn leftovers(db_path: &Path) -> Result<Leftovers, Error> {
        let (dir, prefix) = location(db_path)?;
        let mut numbered = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io("list the ledger journal", &e))? {
            let entry = entry.map_err(|e| io("list the ledger journal", &e))?;
            let name = entry.file_name();
            let number = name.to_str().and_then(|n| n.strip_prefix(&prefix));
            let Some(no) = number.filter(|n| n.bytes().all(|b| b.is_ascii_digit())).and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            numbered.push((no, entry.path()));
        }
        numbered.sort();
        let mut records = Vec::new();
        let mut files = Vec::new();
        for (no, path) in &numbered {
            let bytes = std::fs::read(path).map_err(|e| io("read the ledger journal", &e))?;
            let frames = decode_frames(&bytes)?;
            if frames.damaged > 0 {
                let aside = dir.join(format!("{prefix}{DAMAGED}{no:012}"));
                std::fs::rename(path, &aside).map_err(|e| io("move a damaged ledger journal segment aside", &e))?;
                tracing::error!(
                    segment = %aside.display(),
                    damaged_bytes = frames.damaged,
                    kept_records = frames.records.len(),
                    "ledger journal: a segment is damaged; every record that verifies is kept, and the segment \
                     is moved aside for inspection until an operator acknowledges it"
                );
            } else {
                if bytes[frames.end..].iter().any(|&b| b != 0) {
                    tracing::warn!(
                        segment = %path.display(),
                        ignored_bytes = bytes.len() - frames.end,
                        "ledger journal: an unacknowledged write was cut short; ignoring its tail"
                    );
                }
                files.push(path.clone());
            }
            records.extend(frames.records);
        }
        let next_no = numbered.last().map_or(0, |(no, _)| no + 1);
        Ok(Leftovers { records, files, next_no })
    }

    /// An empty journal next to the database at `db_path`, numbering segments after the
    /// leftovers (whose records must be indexed, and files deleted, before appending).
    pub(super) fn new(db_path: &Path, owner: File, after: &Leftovers, lookup: Connection) -> Result<Self, Error> {
        let (dir, prefix) = location(db_path)?;
        Ok(Journal {
            _owner: owner,
            dir,
            prefix,
            next_no: after.next_no,
            active: None,
            spare: None,
            spare_coming: false,
            sealed: VecDeque::new(),
            keys: HashMap::default(),
            broken: false,
            lookup,
        })
    }

    /// Records written and not yet indexed.
    pub(super) fn waiting(&self) -> usize {
        self.keys.len()
    }

    /// Whether a failed write left the journal refusing appends.
    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the segment appends go to is full and should be sealed.
    pub(super) fn active_full(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.records.len() >= SEGMENT_RECORDS || a.len >= SEGMENT_BYTES as u64)
    }

    /// The number and path of a spare segment to make, when none is ready or coming.
    /// Make it with [`make_segment`] without holding the journal, then [`install_spare`](Self::install_spare).
    pub(super) fn spare_wanted(&mut self) -> Option<(u64, PathBuf)> {
        if self.spare.is_some() || self.spare_coming {
            return None;
        }
        self.spare_coming = true;
        let no = self.next_no;
        self.next_no += 1;
        Some((no, self.segment_path(no)))
    }

    /// Keeps a spare segment made for [`spare_wanted`](Self::spare_wanted)'s number.
    pub(super) fn install_spare(&mut self, spare: Result<Spare, Error>) {
        self.spare_coming = false;
        match spare {
            Ok(spare) => self.spare = Some(spare),
            Err(e) => {
                tracing::warn!(error = %e, "ledger journal: no spare segment; the next one grows as it is written")
            }
        }
    }

    /// Writes `records`, in order, and says for each whether it is new or which record
    /// already holds its `(tenant, event_id)`. With `sync` they are durable when it
    /// returns; without, they are in the operating system's cache (they survive the
    /// process, and the next synced append makes them durable too).
    pub(super) fn append(&mut self, records: Vec<LedgerRecord>, sync: bool) -> Result<Vec<Appended>, Error> {
        if self.broken {
            return Err(Error::Unavailable("the ledger journal failed a write; restart to recover".into()));
        }
        let mut outcomes = Vec::with_capacity(records.len());
        let mut fresh: Vec<LedgerRecord> = Vec::with_capacity(records.len());
        let mut in_batch: HashMap<Key, usize, RandomState> =
            HashMap::with_capacity_and_hasher(records.len(), RandomState::default());
        for record in records {
            let key = (record.event.tenant_id.clone(), record.event.event_id.clone());
            let earlier = match in_batch.get(&key) {
                Some(&i) => Some(fresh[i].clone()),
                None => self.find(&key)?,
            };
            match earlier {
                Some(stored) => outcomes.push(Appended::Duplicate(Box::new(stored))),
                None => {
                    outcomes.push(Appended::Inserted);
                    in_batch.insert(key, fresh.len());
                    fresh.push(record);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(outcomes);
        }
        let mut frames = Vec::with_capacity(fresh.len() * 256);
        for record in &fresh {
            encode_frame(record, &mut frames)?;
        }
        let active = self.active()?;
        if let Err(e) = write_frames(&active.file, active.len, &frames, sync) {
            // Zero what may have been written, so neither a torn frame hides later appends
            // from replay nor a whole one of this failed append comes back.
            let zeros = vec![0; frames.len()];
            if write_frames(&active.file, active.len, &zeros, true).is_err() {
                self.broken = true;
            }
            return Err(io("write the ledger journal", &e));
        }
        active.len += frames.len() as u64;
        let (no, base) = (active.no, active.records.len());
        self.keys.extend(in_batch.into_iter().map(|(key, i)| (key, (no, base + i))));
        if let Some(active) = self.active.as_mut() {
            active.records.extend(fresh);
        }
        Ok(outcomes)
    }

    /// Closes the active segment to appends; the next append starts a new one.
    pub(super) fn seal(&mut self) {
        if let Some(active) = self.active.take() {
            let path = self.segment_path(active.no);
            let segment = Segment { no: active.no, path, records: active.records, from: active.indexed };
            self.sealed.push_back(Arc::new(segment));
        }
    }

    /// The active segment's number, how many records it holds, and copies of those not
    /// indexed yet: what a read indexes without sealing the segment (which would leave
    /// the next append to make a new file).
    pub(super) fn active_unindexed(&self) -> Option<(u64, usize, Vec<LedgerRecord>)> {
        let active = self.active.as_ref().filter(|a| a.indexed < a.records.len())?;
        Some((active.no, active.records.len(), active.records[active.indexed..].to_vec()))
    }

    /// Notes that the active segment `no`'s records up to `upto` are indexed. Their frames
    /// stay in the file until the segment is sealed and indexed; a replay inserts them
    /// again harmlessly. If the segment was sealed meanwhile, its indexing repeats them.
    pub(super) fn active_indexed(&mut self, no: u64, upto: usize) {
        self.keys.retain(|_, &mut (segment, position)| segment != no || position >= upto);
        if let Some(active) = self.active.as_mut().filter(|a| a.no == no) {
            active.indexed = active.indexed.max(upto);
        }
    }

    /// How many segments are sealed and not yet indexed.
    pub(super) fn sealed_count(&self) -> usize {
        self.sealed.len()
    }

    /// The sealed segments, oldest first.
    pub(super) fn sealed(&self) -> Vec<Arc<Segment>> {
        self.sealed.iter().cloned().collect()
    }

    /// Forgets the oldest `count` sealed segments, whose records are now durable in
    /// SQLite, and deletes their files.
    pub(super) fn indexed(&mut self, count: usize) {
        let done: Vec<Arc<Segment>> = self.sealed.drain(..count.min(self.sealed.len())).collect();
        if done.is_empty() {
            return;
        }
        // One pass over the (bounded) key map, not a key built per record.
        self.keys.retain(|_, (no, _)| done.iter().all(|s| s.no != *no));
        for segment in done {
            remove_segment(&segment.path);
        }
    }

    /// The waiting or indexed record with this key (a fresh key cannot be indexed yet).
    fn find(&self, key: &Key) -> Result<Option<LedgerRecord>, Error> {
        if let Some(r) = self.waiting_record(key) {
            return Ok(Some(r));
        }
        if key.1.is_fresh() {
            return Ok(None);
        }
        blocks::Lookup::new(&self.lookup).find(&key.0, &key.1)
    }

    /// The record with this key among those written and not yet indexed. Indexing commits
    /// a record to the ledger blocks before it leaves this set, so a reader that looks
    /// here first and in the blocks next finds every acknowledged record.
    pub(super) fn waiting_record(&self, key: &Key) -> Option<LedgerRecord> {
        let &(no, i) = self.keys.get(key)?;
        let waiting = match &self.active {
            Some(a) if a.no == no => a.records.get(i),
            _ => self.sealed.iter().find(|s| s.no == no).and_then(|s| s.records.get(i)),
        };
        waiting.cloned()
    }

    /// The active segment: the spare, or a new empty file when no spare is ready.
    fn active(&mut self) -> Result<&mut Active, Error> {
        if self.active.is_none() {
            let spare = match self.spare.take() {
                Some(spare) => spare,
                None => {
                    let no = self.next_no;
                    let file = create_segment(&self.segment_path(no), &self.dir)?;
                    self.next_no += 1;
                    Spare { no, file }
                }
            };
            let records = Vec::with_capacity(SEGMENT_RECORDS);
            self.active = Some(Active { no: spare.no, file: spare.file, len: 0, records, indexed: 0 });
        }
        Ok(self.active.as_mut().expect("made above"))
    }

    /// Makes every write to the active segment fail from now on, as a failing disk would:
    /// its file is swapped for a read-only handle on the same file.
    #[cfg(test)]
    pub(super) fn fail_writes(&mut self) {
        let no = self.active().expect("an active segment").no;
        let read_only = File::open(self.segment_path(no)).expect("the active segment opens");
        self.active.as_mut().expect("made above").file = read_only;
    }

    fn segment_path(&self, no: u64) -> PathBuf {
        self.dir.join(format!("{}{no:012}", self.prefix))
    }

    /// The directory the segments live in.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The damaged segments next to the database at `db_path` that no operator has
/// acknowledged yet, by name.
pub(super) fn unacknowledged_damage(db_path: &Path) -> Result<Vec<PathBuf>, Error> {
    let (dir, prefix) = location(db_path)?;
    let marker = format!("{prefix}{DAMAGED}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| io("list the ledger journal", &e))? {
        let path = entry.map_err(|e| io("list the ledger journal", &e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(&marker) && !name.ends_with(ACKNOWLEDGED) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Marks a damaged segment acknowledged by renaming it (it is kept).
pub(super) fn acknowledge(segment: &Path) -> Result<(), Error> {
    let mut renamed = segment.as_os_str().to_owned();
    renamed.push(ACKNOWLEDGED);
    std::fs::rename(segment, &renamed).map_err(|e| io("acknowledge a damaged ledger journal segment", &e))
}

/// Makes a spare segment at `path`: zeros written and synced, as is its directory entry.
pub(super) fn make_segment(no: u64, path: &Path, dir: &Path) -> Result<Spare, Error> {
    let file = create_segment(path, dir)?;
    let zeros = vec![0; 64 << 10];
    let mut at = 0;
    while at < SEGMENT_BYTES {
        file.write_all_at(&zeros, at as u64).map_err(|e| io("fill a ledger journal segment", &e))?;
        at += zeros.len();
    }
    file.sync_all().map_err(|e| io("sync a ledger journal segment", &e))?;
    Ok(Spare { no, file })
}

/// Creates an empty segment file and syncs its directory entry.
fn create_segment(path: &Path, dir: &Path) -> Result<File, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io("create a ledger journal segment", &e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync the database directory", &e))?;
    Ok(file)
}

/// Deletes an indexed segment file; one left behind is replayed harmlessly (its records
/// are already in the ledger) at the next start.
pub(super) fn remove_segment(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(segment = %path.display(), error = %e, "ledger journal: an indexed segment was not deleted");
    }
}

/// The directory and the file-name prefix of the segments of the database at `db_path`.
fn location(db_path: &Path) -> Result<(PathBuf, String), Error> {
    let name = db_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Unavailable("the database path has no usable file name".into()))?;
    let dir = match db_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, format!("{name}-ledger-")))
}

fn write_frames(file: &File, at: u64, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    file.write_all_at(bytes, at)?;
    if sync { file.sync_data() } else { Ok(()) }
}

fn io(what: &str, e: &std::io::Error) -> Error {
    tracing::warn!(error = %e, "ledger journal: cannot {what}");
    Error::Unavailable(format!("cannot {what}: {e}"))
}

/// Appends one record's frame to `out`.
fn encode_frame(record: &LedgerRecord, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    record_codec::encode(record, out)?;
    let payload = &out[start + FRAME_HEADER..];
    let len = u32::try_from(payload.len()).map_err(|_| Error::Corrupt("a ledger record is too large".into()))?;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What a segment's bytes hold.
#[derive(Debug, PartialEq)]
struct Frames {
    /// The records of every frame that verifies, in order.
    records: Vec<LedgerRecord>,
    /// Bytes up to the end of the last frame that verifies.
    end: usize,
    /// Bytes of frames that failed their check and were followed by frames that pass:
    /// damage to acknowledged records, not a write cut short.
    damaged: usize,
}

/// The frame at `at`, if one starts there and verifies: its payload.
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// The records of a segment's bytes. Frames follow one another until the zeros a segment
/// is made with. Where a frame fails its check (cut short, or its checksum does not
/// hold), the bytes after it are searched for a frame that verifies: none means the
/// last write was cut short, and its tail is ignored; one means the bytes in between
/// are damaged, and reading goes on from it. A frame whose checksum holds but whose
/// payload is not a record is corruption, and an error.
fn decode_frames(bytes: &[u8]) -> Result<Frames, Error> {
    let mut frames = Frames { records: Vec::new(), end: 0, damaged: 0 };
    let mut at = 0;
    while at + FRAME_HEADER <= bytes.len() {
        if let Some(payload) = frame_at(bytes, at) {
            frames.records.push(record_codec::decode(payload)?);
            at += FRAME_HEADER + payload.len();
            frames.end = at;
            continue;
        }
        if bytes[at..].iter().all(|&b| b == 0) {
            break;
        }
        match (at + 1..bytes.len()).find(|&next| frame_at(bytes, next).is_some()) {
            Some(next) => {
                frames.damaged += next - at;
                at = next;
            }
            None => break,
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::sample_record;

    fn record(id: &str) -> LedgerRecord {
        sample_record("acme", id, 1)
    }

    fn frames(records: &[LedgerRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode_frame(r, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn frames_read_back_as_the_records_written() {
        let written = vec![record("a"), record("b"), record("c")];
        let bytes = frames(&written);
        assert_eq!(decode_frames(&bytes).unwrap(), Frames { records: written, end: bytes.len(), damaged: 0 });
    }

    #[test]
    fn a_segment_begun_in_json_by_an_earlier_version_replays_whole() {
        let old = record("old");
        let payload = serde_json::to_vec(&old).unwrap();
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&frames(&[record("new")]));
        let read = decode_frames(&bytes).unwrap();
        assert_eq!(read, Frames { records: vec![old, record("new")], end: bytes.len(), damaged: 0 });
    }

    #[test]
    fn a_torn_last_frame_is_ignored_and_the_frames_before_it_kept() {
        let whole = frames(&[record("a"), record("b")]);
        let first_len = frames(&[record("a")]).len();
        for cut in [first_len + 1, first_len + FRAME_HEADER, whole.len() - 1] {
            let mut torn = whole[..cut].to_vec();
            // The rest of the segment, as it was made: zeros.
            torn.resize(whole.len() + 4096, 0);
            let read = decode_frames(&torn).unwrap();
            assert_eq!(read, Frames { records: vec![record("a")], end: first_len, damaged: 0 }, "cut at {cut}");
        }
    }

    #[test]
    fn the_zeros_of_a_segment_made_ahead_end_its_records() {
        let mut bytes = frames(&[record("a")]);
        let written = bytes.len();
        bytes.resize(written + 4096, 0);
        assert_eq!(decode_frames(&bytes).unwrap(), Frames { records: vec![record("a")], end: written, damaged: 0 });
    }

    #[test]
    fn a_damaged_frame_followed_by_valid_ones_is_damage_and_every_valid_frame_is_kept() {
        let one = frames(&[record("a")]).len();
        // A byte of the second frame's payload, then of its length.
        for flipped in [one + FRAME_HEADER + 3, one + 1] {
            let mut bytes = frames(&[record("a"), record("b"), record("c"), record("d")]);
            let written = bytes.len();
            bytes.resize(written + 4096, 0);
            bytes[flipped] ^= 0x20;
            let read = decode_frames(&bytes).unwrap();
            assert_eq!(read.records, vec![record("a"), record("c"), record("d")], "flipped at {flipped}");
            assert_eq!((read.end, read.damaged), (written, one), "flipped at {flipped}");
        }
    }

    #[test]
    fn a_damaged_last_frame_is_a_write_cut_short() {
        let mut bytes = frames(&[record("a"), record("b")]);
        let one = frames(&[record("a")]).len();
        bytes[one + FRAME_HEADER + 3] ^= 0x20;
        bytes.resize(bytes.len() + 4096, 0);
        assert_eq!(decode_frames(&bytes).unwrap(), Frames { records: vec![record("a")], end: one, damaged: 0 });
    }

    #[test]
    fn a_checksummed_frame_that_is_not_a_record_is_corruption() {
        let payload = b"{\"not\":\"a record\"}";
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        assert!(matches!(decode_frames(&bytes), Err(Error::Corrupt(_))));
    }

    #[test]
    fn segments_are_named_after_the_database_file() {
        let (dir, prefix) = location(Path::new("/var/lib/metering/metering.db")).unwrap();
        assert_eq!((dir, prefix.as_str()), (PathBuf::from("/var/lib/metering"), "metering.db-ledger-"));
        assert_eq!(location(Path::new("m.db")).unwrap().0, PathBuf::from("."));
    }
}
