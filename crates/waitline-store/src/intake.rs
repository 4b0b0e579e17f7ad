//! The intake: with [`crate::Fsync::Periodic`], where a record lands before its transaction.
//!
//! `periodic` promises that an answered change survives a crash of the process (not a power
//! loss). Written to SQLite first, every answer waited for a hand-over to the writer's
//! thread and a small transaction (about 4 µs of CPU a request, BENCHMARKS.md). Instead,
//! [`Intake::put`] copies the record into a file mapped into memory, under the queue's lock:
//! a store into a shared mapping is in the operating system's page cache at once, so the
//! process can die after it without losing the record, and the answer needs no system
//! call. The writer then commits the records to SQLite in large batches and stores, in the
//! same transaction, how far into the intake it has committed (`meta.intake`); a start
//! commits what the intake holds past that point ([`read`]) before anything else.
//!
//! The file is a ring of [`DEFAULT_BYTES`], written once with zeros when made (so that its
//! blocks exist and a store into the mapping never needs a new one). A frame sits at an
//! absolute position (which only grows, across laps) and is:
//!
//! ```text
//! position u64 | body length u32 | check u32 (of position and length) | body
//! body: sequence number u64 | tenant's length u32 | tenant | the stored record (frame.rs)
//! ```
//!
//! The stored record carries its own CRC-32, of (tenant, sequence number, payload): with the
//! lengths that must agree, it covers every byte of the body, so the copy needs no second
//! checksum (computing one cost each append about 300 instructions).
//!
//! A frame that would cross the ring's end is put at the next lap's start instead, after a
//! [`WRAP`] marker where there is room for one. A frame counts only at the position it names,
//! so a previous lap's frames (or a previous run's) read as the end. Space is taken back
//! only once the writer has committed it ([`Intake::fits`]).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use memmap2::MmapMut;

use crate::backend::Conn as _;
use crate::sqlite::Sqlite;
use crate::writer::{self, Batch, Op, Write};
use crate::{Error, Fsync, Options, Result};

/// The intake's file in the data directory.
pub(crate) const INTAKE_FILE: &str = "intake";

/// The ring's size: at 150 bytes a record, about 220,000 records, or over 2 s of the
/// fastest HTTP load measured here while the writer commits every few milliseconds.
pub(crate) const DEFAULT_BYTES: u64 = 32 << 20;

/// Bytes before a frame's body.
pub(crate) const HEADER: u64 = 16;

/// Bytes of a body before its tenant's name.
const BODY_FIXED: u64 = 12;

/// The body length of a marker that says "go on at the next lap's start".
const WRAP: u32 = u32::MAX;

/// A frame over this share of the ring is not put there (its record waits for its commit).
const LARGEST_SHARE: u64 = 4;

/// The ring, mapped, and where its next frame goes.
pub(crate) struct Intake {
    map: MmapMut,
    size: u64,
    next: u64,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").field("size", &self.size).field("next", &self.next).finish_non_exhaustive()
    }
}

impl Intake {
    /// Maps the ring at `path`, making it (`bytes` long) if it is missing or of another
    /// size; its next frame goes at position `next`.
    pub(crate) fn open(path: &Path, bytes: u64, next: u64) -> std::io::Result<Self> {
        let file = File::options().read(true).write(true).create(true).truncate(false).open(path)?;
        if file.metadata()?.len() != bytes {
            fill_with_zeros(&file, bytes)?;
        }
        Ok(Self { map: map(&file, bytes)?, size: bytes, next })
    }

    /// The position after the last frame put.
    pub(crate) const fn next(&self) -> u64 {
        self.next
    }

    /// Whether a frame for a record of `tenant` stored in `stored_len` bytes can be put now,
    /// the writer having committed everything before position `committed`. `None`: it never
    /// can (too large for the ring).
    pub(crate) fn fits(&self, tenant: &str, stored_len: u64, committed: u64) -> Option<bool> {
        let len = frame_len(tenant, stored_len);
        if len > self.size / LARGEST_SHARE {
            return None;
        }
        Some(self.next + self.skip_before(len) + len - committed <= self.size)
    }

    /// Bytes left unused at the ring's end before a frame of `len` bytes (0 if it fits
    /// where the next frame goes).
    const fn skip_before(&self, len: u64) -> u64 {
        let room = self.size - self.next % self.size;
        if len <= room { 0 } else { room }
    }

    /// Puts record `seq` of `tenant` (its stored form). Call only after [`Intake::fits`]
    /// said yes.
    pub(crate) fn put(&mut self, tenant: &str, seq: u64, stored: &[u8]) {
        let len = frame_len(tenant, stored.len() as u64);
        let skip = self.skip_before(len);
        if skip >= HEADER {
            let at = self.next;
            self.write_header(at, WRAP);
        }
        self.next += skip;
        let at = self.next;
        let start = usize::try_from(at % self.size + HEADER).unwrap_or(usize::MAX);
        let body = &mut self.map[start..start + (len - HEADER) as usize];
        let tenant_len = tenant.len() as u32;
        body[..8].copy_from_slice(&seq.to_le_bytes());
        body[8..12].copy_from_slice(&tenant_len.to_le_bytes());
        body[12..12 + tenant.len()].copy_from_slice(tenant.as_bytes());
        body[12 + tenant.len()..].copy_from_slice(stored);
        let body_len = (len - HEADER) as u32;
        self.write_header(at, body_len);
        self.next += len;
    }

    /// Writes the header of the frame at position `at` (its body already in place, unless
    /// it is a [`WRAP`] marker).
    fn write_header(&mut self, at: u64, body_len: u32) {
        let start = (at % self.size) as usize;
        let header = &mut self.map[start..start + HEADER as usize];
        header[..8].copy_from_slice(&at.to_le_bytes());
        header[8..12].copy_from_slice(&body_len.to_le_bytes());
        header[12..16].copy_from_slice(&check(at, body_len).to_le_bytes());
    }
}

/// Bytes a frame for a record of `tenant` stored in `stored_len` bytes takes.
fn frame_len(tenant: &str, stored_len: u64) -> u64 {
    HEADER + BODY_FIXED + tenant.len() as u64 + stored_len
}

/// A header's check: its position and body length must agree with it (a length damaged in
/// a wrap marker, which has no body to check, is caught).
const fn check(position: u64, body_len: u32) -> u32 {
    (position as u32) ^ ((position >> 32) as u32) ^ body_len.rotate_left(16) ^ 0x5741_4954
}

/// Writes `bytes` zeros over `file` (so that the file system gives it its blocks now).
fn fill_with_zeros(file: &File, bytes: u64) -> std::io::Result<()> {
    file.set_len(0)?;
    let chunk = vec![0u8; 1 << 20];
    let mut writer = std::io::BufWriter::new(file);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        writer.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    writer.flush()?;
    drop(writer);
    file.sync_all()
}

/// Maps `file`, `bytes` long, for reading and writing.
#[allow(unsafe_code)]
fn map(file: &File, bytes: u64) -> std::io::Result<MmapMut> {
    let len =
        usize::try_from(bytes).map_err(|_| std::io::Error::other("the intake does not fit in memory"))?;
    // SAFETY: the mapping is undefined behaviour if another process changes or shortens the
    // file while it is mapped. The file lives in the data directory, which this process
    // holds locked (`dir::open_locked`) for as long as the store, and so the mapping, lives;
    // the store itself never resizes the file while it is mapped.
    unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
}

/// One record found in the intake.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) tenant: String,
    pub(crate) seq: u64,
    /// Its stored form (frame.rs).
    pub(crate) stored: Vec<u8>,
}

/// How the intake ended, past its last whole frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntakeTail {
    /// Nothing, or a frame begun and not finished (a crash while it was being copied: it
    /// was never answered).
    Clean {
        /// Records found past what the database held.
        records: usize,
    },
    /// A frame whose header names its place but which is not whole (its header's check or
    /// its record's checksum fails), with no whole frame after it: the copy a crash cut
    /// short, dropped.
    Torn {
        /// Records found before it.
        records: usize,
        /// Its position in the intake file.
        offset: u64,
    },
    /// A frame that is not whole, or names another place, with a whole frame of this run
    /// after it: records answered after the damage would be lost.
    Damaged {
        /// Records found before it.
        records: usize,
        /// Its position in the intake file.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

impl std::fmt::Display for IntakeTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clean { records } => write!(f, "{records} record(s) taken from the intake"),
            Self::Torn { records, offset } => write!(
                f,
                "{records} record(s) taken from the intake; a record a crash cut short at byte {offset} dropped (never acknowledged)"
            ),
            Self::Damaged { records, offset, detail } => {
                write!(f, "{records} record(s) taken from the intake; damaged at byte {offset}: {detail}")
            }
        }
    }
}

/// The frames of the ring `ring` from position `from` on, to the first one that is not
/// there (see [`IntakeTail`]); and the position where reading stopped (a restart goes two
/// laps on from it).
pub(crate) fn read(ring: &[u8], from: u64) -> (Vec<Found>, u64, IntakeTail) {
    let size = ring.len() as u64;
    let mut found = Vec::new();
    let mut at = from;
    if size < HEADER {
        return (found, at, IntakeTail::Clean { records: 0 });
    }
    // At most one lap: a ring full of this run's frames ends where it began.
    while at < from + size {
        let offset = at % size;
        let room = size - offset;
        if room < HEADER {
            at += room;
            continue;
        }
        match Frame::at(ring, offset).filter(|f| f.position == at).and_then(|f| f.whole()) {
            Some(Whole::Wrap) => at += room,
            Some(Whole::Record { seq, tenant, stored }) => {
                found.push(Found { tenant: tenant.to_owned(), seq, stored: stored.to_vec() });
                at += frame_len(tenant, stored.len() as u64);
            }
            None => {
                let records = found.len();
                let tail = stop(ring, at, records);
                return (found, at, tail);
            }
        }
    }
    let records = found.len();
    (found, at, IntakeTail::Clean { records })
}

/// Why reading stopped at position `at`, where no whole frame names it.
fn stop(ring: &[u8], at: u64, records: usize) -> IntakeTail {
    let offset = at % ring.len() as u64;
    let named_here = names(ring, offset) == Some(at);
    if let Some(later) = later_frame(ring, at) {
        let what = if named_here {
            "it is not whole (its check or its record's checksum fails)"
        } else {
            "it does not name this place"
        };
        let detail = format!("{what}, and a whole record written after it is at byte {later}");
        return IntakeTail::Damaged { records, offset, detail };
    }
    if named_here { IntakeTail::Torn { records, offset } } else { IntakeTail::Clean { records } }
}

/// The position the frame header at `offset` names.
fn names(ring: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    Some(u64::from_le_bytes(ring.get(start..start + 8)?.try_into().ok()?))
}

/// The offset of a whole frame past position `at` (within the next lap) that names its own
/// place: one written after a frame that is not whole.
fn later_frame(ring: &[u8], at: u64) -> Option<u64> {
    let size = ring.len() as u64;
    (1..size).find_map(|ahead| {
        let position = at + ahead;
        let offset = position % size;
        if names(ring, offset)? != position {
            return None;
        }
        Frame::at(ring, offset).and_then(|f| f.whole()).map(|_| offset)
    })
}

/// A frame's header and body, as read.
struct Frame<'a> {
    position: u64,
    body_len: u32,
    check: u32,
    body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The frame at `offset` (`None` if its body would cross the ring's end).
    fn at(ring: &'a [u8], offset: u64) -> Option<Self> {
        let start = usize::try_from(offset).ok()?;
        let header = ring.get(start..start + HEADER as usize)?;
        let position = u64::from_le_bytes(header[..8].try_into().ok()?);
        let body_len = u32::from_le_bytes(header[8..12].try_into().ok()?);
        let check = u32::from_le_bytes(header[12..16].try_into().ok()?);
        let body_start = start + HEADER as usize;
        let body =
            if body_len == WRAP { &[][..] } else { ring.get(body_start..body_start + body_len as usize)? };
        Some(Self { position, body_len, check, body })
    }

    /// What the frame is, if it is whole: its header agrees with its check, and its body
    /// (unless it is a wrap marker) is exactly one record whose own checksum matches.
    fn whole(&self) -> Option<Whole<'a>> {
        if self.check != check(self.position, self.body_len) {
            return None;
        }
        if self.body_len == WRAP {
            return Some(Whole::Wrap);
        }
        let seq = u64::from_le_bytes(self.body.get(..8)?.try_into().ok()?);
        let tenant_len = u32::from_le_bytes(self.body.get(8..12)?.try_into().ok()?) as usize;
        let tenant = std::str::from_utf8(self.body.get(12..12usize.checked_add(tenant_len)?)?).ok()?;
        let stored = self.body.get(12 + tenant_len..)?;
        match crate::frame::decode_one(tenant, seq, stored) {
            Ok((_, [])) => Some(Whole::Record { seq, tenant, stored }),
            _ => None,
        }
    }
}

/// A whole frame.
enum Whole<'a> {
    /// Go on at the next lap's start.
    Wrap,
    /// Record `seq` of `tenant`, in its stored form.
    Record { seq: u64, tenant: &'a str, stored: &'a [u8] },
}

/// What a start found of the intake, and what the store's queue needs to go on with it.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// How the intake ended past what the database held.
    pub(crate) tail: IntakeTail,
    /// Where the next frame goes.
    pub(crate) next: u64,
    /// Each tenant's last number stored (a record must follow it before it goes into the
    /// intake); `None` when the store keeps no intake.
    pub(crate) heads: Option<Vec<(String, u64)>>,
}

/// At a start, before the writer's: commits (synced) the records the intake in `dir` holds
/// past what the database `db` holds. With [`Fsync::Periodic`] it also marks the store as
/// using an intake and reads each tenant's last number.
pub(crate) fn recover(dir: &Path, db: &Path, options: Options) -> Result<Recovered> {
    let path = dir.join(INTAKE_FILE);
    let periodic = options.fsync == Fsync::Periodic;
    let ring = match std::fs::read(&path) {
        Ok(ring) => Some(ring),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    // A file too short to hold a frame (made again at another size, and cut by a crash)
    // holds nothing.
    let ring = ring.filter(|r| r.len() as u64 >= HEADER);
    if ring.is_none() && !periodic {
        return Ok(Recovered { tail: IntakeTail::Clean { records: 0 }, next: 0, heads: None });
    }
    let mut conn = Sqlite::open_writer(db, Fsync::Always)?;
    let from = conn.intake_position()?;
    let (found, next, tail) = match &ring {
        Some(ring) => {
            let (found, end, tail) = read(ring, from);
            (found, restart_at(end, ring.len() as u64), tail)
        }
        // No ring: nothing to take, and the new one (all zeros) starts at the position the
        // database names.
        None => (Vec::new(), from, IntakeTail::Clean { records: 0 }),
    };
    if let IntakeTail::Damaged { offset, detail, .. } = &tail
        && !options.recover_truncate
    {
        return Err(Error::IntakeDamaged { path, offset: *offset, detail: detail.clone() });
    }
    let mut records = Vec::new();
    let ops = found
        .into_iter()
        .map(|found| {
            let start = records.len();
            records.extend_from_slice(&found.stored);
            Op {
                tenant: found.tenant.into(),
                claim: None,
                write: Write::Record { seq: found.seq, stored: start..records.len() },
            }
        })
        .collect();
    if periodic {
        conn.mark_intake_in_use()?;
    }
    let batch = Batch { ops, records: &records, intake_end: Some(next) };
    writer::write_alone(&mut conn, &batch, options.replay_from_delivered)?;
    let heads = if periodic {
        let mut heads = Vec::new();
        for tenant in conn.tenants()? {
            let head = conn.head(&tenant)?;
            heads.push((tenant, head));
        }
        Some(heads)
    } else {
        None
    };
    Ok(Recovered { tail, next, heads })
}

/// Where a start puts the next frame after reading up to `end`: two laps on, past every
/// position a frame left in the file (of this run or an earlier one) can name, so that no
/// leftover is ever read as new.
pub(crate) const fn restart_at(end: u64, size: u64) -> u64 {
    (end / size + 2) * size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(bytes: u64) -> (tempfile::TempDir, Intake) {
        let dir = tempfile::tempdir().unwrap();
        let intake = Intake::open(&dir.path().join(INTAKE_FILE), bytes, 0).unwrap();
        (dir, intake)
    }

    fn put(intake: &mut Intake, tenant: &str, seq: u64, committed: u64) {
        let stored = crate::frame::encode(tenant, seq, format!("record {seq}").as_bytes());
        assert_eq!(intake.fits(tenant, stored.len() as u64, committed), Some(true), "record {seq}");
        intake.put(tenant, seq, &stored);
    }

    fn read_file(path: &Path, from: u64) -> std::io::Result<Option<(Vec<Found>, u64, IntakeTail)>> {
        match std::fs::read(path) {
            Ok(ring) => Ok(Some(read(&ring, from))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn seqs(found: &[Found]) -> Vec<u64> {
        found.iter().map(|f| f.seq).collect()
    }

    #[test]
    fn records_come_back_in_order_across_laps() {
        let (_dir, mut intake) = ring(1024);
        let mut committed = 0;
        for seq in 1..=100 {
            // The writer commits everything but the last ten records.
            if seq > 10 {
                committed = committed.max(intake.next().saturating_sub(300));
            }
            put(&mut intake, if seq % 2 == 0 { "a" } else { "tenant-b" }, seq, committed);
        }
        let end = intake.next();
        assert!(end > 3 * 1024, "wrapped several times: {end}");
        let from = end - 300;
        // Read from a frame's start: find the first one at or after `from`.
        let (found, at, tail) = (0..300)
            .map(|back| read(&intake.map, from + back))
            .find(|(found, _, _)| !found.is_empty())
            .unwrap();
        assert_eq!(at, end);
        assert_eq!(tail, IntakeTail::Clean { records: found.len() });
        assert_eq!(seqs(&found), ((101 - found.len() as u64)..=100).collect::<Vec<_>>());
        let last = found.last().unwrap();
        assert_eq!(last.tenant, "a");
        assert_eq!(last.stored, crate::frame::encode("a", 100, b"record 100"));
    }

    #[test]
    fn a_full_ring_refuses_until_committed_and_a_huge_record_never_fits() {
        let (_dir, mut intake) = ring(1024);
        let stored_len = hundred(1).len() as u64;
        let mut seq = 0;
        while intake.fits("t", stored_len, 0) == Some(true) {
            seq += 1;
            intake.put("t", seq, &hundred(seq));
        }
        assert_eq!(seq, 7, "seven frames of 137 bytes in 1,024");
        assert_eq!(intake.fits("t", stored_len, intake.next()), Some(true));
        assert_eq!(intake.fits("t", 300, 0), None);
        let (found, _, _) = read(&intake.map, 0);
        assert_eq!(found.len(), 7);
    }

    /// Frames of 137 bytes: a record of 100 bytes, of tenant `t`.
    const FRAME: u64 = 137;

    /// The stored form of record `seq` of tenant `t`, 100 bytes (a frame of [`FRAME`]).
    fn hundred(seq: u64) -> Vec<u8> {
        crate::frame::encode("t", seq, &[7; 100])
    }

    #[test]
    fn a_frame_of_a_quarter_of_the_ring_fits_and_one_byte_more_never_does() {
        let (_dir, intake) = ring(1024);
        // A frame of tenant `t`: 29 bytes before the stored record.
        assert_eq!(intake.fits("t", 256 - 29, 0), Some(true));
        assert_eq!(intake.fits("t", 256 - 28, 0), None);
    }

    #[test]
    fn a_frame_that_would_cross_the_end_goes_to_the_next_lap() {
        // The eighth would cross the end, 127 bytes after the seventh.
        let size = 8 * FRAME - 10;
        let (_dir, mut intake) = ring(size);
        for seq in 1..=7 {
            intake.put("t", seq, &hundred(seq));
        }
        assert_eq!(intake.next(), 7 * FRAME);
        intake.put("t", 8, &hundred(8));
        assert_eq!(intake.next(), size + FRAME, "skipped the end, after a wrap marker");
        assert_eq!(names(&intake.map, 7 * FRAME), Some(7 * FRAME), "the marker");
        // The eighth took the first's place.
        let (found, at, _) = read(&intake.map, FRAME);
        assert_eq!(seqs(&found), (2..=8).collect::<Vec<_>>());
        assert_eq!(at, size + FRAME);
    }

    #[test]
    fn an_end_too_short_for_a_marker_is_skipped() {
        // Eight bytes are left after seven frames.
        let size = 7 * FRAME + 8;
        let (_dir, mut intake) = ring(size);
        for seq in 1..=8 {
            intake.put("t", seq, &hundred(seq));
        }
        assert_eq!(intake.next(), size + FRAME);
        let (found, _, tail) = read(&intake.map, FRAME);
        assert_eq!(seqs(&found), (2..=8).collect::<Vec<_>>());
        assert_eq!(tail, IntakeTail::Clean { records: 7 });
    }

    #[test]
    fn a_cut_at_every_byte_of_the_last_frame_is_clean_or_torn_and_loses_only_it() {
        let (_dir, mut intake) = ring(4096);
        for seq in 1..=5 {
            put(&mut intake, "t", seq, 0);
        }
        let last_start = intake.next();
        put(&mut intake, "t", 6, 0);
        let end = intake.next();
        let whole = intake.map.to_vec();
        for cut in last_start..end {
            let mut ring = whole.clone();
            ring[cut as usize..end as usize].fill(0);
            let (found, at, tail) = read(&ring, 0);
            assert_eq!(seqs(&found), vec![1, 2, 3, 4, 5], "cut at {cut}");
            assert_eq!(at, last_start);
            // Its position's high bytes are zeros anyway.
            if names(&ring, last_start) == Some(last_start) {
                assert_eq!(tail, IntakeTail::Torn { records: 5, offset: last_start }, "cut at {cut}");
            } else {
                assert_eq!(tail, IntakeTail::Clean { records: 5 }, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_flipped_bit_before_the_last_frame_is_damage_and_in_it_is_a_torn_tail() {
        let (_dir, mut intake) = ring(4096);
        let mut starts = Vec::new();
        for seq in 1..=4 {
            starts.push(intake.next());
            put(&mut intake, "t", seq, 0);
        }
        let end = intake.next();
        let whole = intake.map.to_vec();
        for byte in 0..end {
            for bit in [0, 7] {
                let mut ring = whole.clone();
                ring[byte as usize] ^= 1 << bit;
                let hit = starts.iter().rposition(|s| *s <= byte).unwrap();
                let (found, at, tail) = read(&ring, 0);
                assert_eq!(found.len(), hit, "byte {byte} bit {bit}");
                assert_eq!(at, starts[hit]);
                match tail {
                    IntakeTail::Damaged { offset, .. } => {
                        assert!(hit < 3, "byte {byte}: the last frame's damage has nothing after it");
                        assert_eq!(offset, starts[hit]);
                    }
                    IntakeTail::Torn { offset, .. } => {
                        assert_eq!(hit, 3, "byte {byte}: damage before the last frame is not a torn tail");
                        assert_eq!(offset, starts[hit]);
                    }
                    IntakeTail::Clean { .. } => {
                        assert!(
                            hit == 3 && byte < starts[3] + 8,
                            "byte {byte}: clean only if the position is hit"
                        );
                    }
                }
                if hit == 3 && byte >= starts[3] + 8 {
                    assert!(
                        matches!(tail, IntakeTail::Torn { .. }),
                        "byte {byte}: the last frame named its place"
                    );
                }
            }
        }
    }

    #[test]
    fn leftovers_of_an_earlier_lap_or_run_read_as_the_end() {
        let (_dir, mut intake) = ring(1024);
        for seq in 1..=6 {
            put(&mut intake, "t", seq, 0);
        }
        // A new run starts two laps on, and puts two records over the old ones.
        let restart = restart_at(intake.next(), 1024);
        assert_eq!(restart, 2048);
        intake.next = restart;
        put(&mut intake, "u", 1, restart);
        put(&mut intake, "u", 2, restart);
        let (found, at, tail) = read(&intake.map, restart);
        assert_eq!(seqs(&found), vec![1, 2]);
        assert_eq!(at, intake.next());
        assert_eq!(tail, IntakeTail::Clean { records: 2 });
        // Read from the old run's start: the new frames name later places, and the old
        // ones after them are whole (what a database that lost its last commits would
        // meet): damage, not a silent end.
        let (found, _, tail) = read(&intake.map, 0);
        assert!(found.is_empty());
        assert!(matches!(tail, IntakeTail::Damaged { offset: 0, .. }), "{tail:?}");
    }

    /// A small generator (xorshift), so that the cases are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random runs against a model: records of random tenants and sizes put into rings of
    /// random sizes, committed at random points (the ring refusing a record until then);
    /// then read back from the committed point whole, with the last frame cut at a random
    /// byte, or with a random bit of a random frame flipped.
    #[test]
    fn random_runs_read_back_what_the_model_holds() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..1000 {
            let size = 400 + rng.below(3000);
            let (_dir, mut intake) = ring(size);
            intake.next = rng.below(3) * size + rng.below(size);
            let mut committed = intake.next;
            // Frames past the committed point: (position, length, record).
            let mut model: Vec<(u64, u64, Found)> = Vec::new();
            for seq in 1..=1 + rng.below(80) {
                let tenant = ["a", "bb", "tenant-c"][rng.below(3) as usize];
                let payload = vec![seq as u8; rng.below(180) as usize];
                let stored = crate::frame::encode(tenant, seq, &payload);
                if rng.below(6) == 0 {
                    committed = intake.next();
                    model.clear();
                }
                match intake.fits(tenant, stored.len() as u64, committed) {
                    None => continue,
                    Some(true) => {}
                    Some(false) => {
                        committed = intake.next();
                        model.clear();
                        assert_eq!(
                            intake.fits(tenant, stored.len() as u64, committed),
                            Some(true),
                            "case {case}"
                        );
                    }
                }
                intake.put(tenant, seq, &stored);
                let len = frame_len(tenant, stored.len() as u64);
                model.push((intake.next() - len, len, Found { tenant: tenant.into(), seq, stored }));
            }
            let expected: Vec<&Found> = model.iter().map(|m| &m.2).collect();
            let (found, at, tail) = read(&intake.map, committed);
            assert_eq!(found.iter().collect::<Vec<_>>(), expected, "case {case}: whole");
            // Where reading stopped: the next frame's place (past an end too short for a
            // marker, if there is one).
            assert!((intake.next()..intake.next() + HEADER).contains(&at), "case {case}: {at}");
            assert_eq!(tail, IntakeTail::Clean { records: model.len() }, "case {case}");
            let Some((last_at, last_len, _)) = model.last() else { continue };

            // A crash while the last frame was being copied.
            let mut cut = intake.map.to_vec();
            let from = last_at % size + rng.below(*last_len);
            cut[from as usize..(last_at % size + last_len) as usize].fill(0);
            let (found, at, tail) = read(&cut, committed);
            assert_eq!(found.len(), model.len() - 1, "case {case}: cut at {from}");
            assert_eq!(at, *last_at, "case {case}");
            assert!(
                matches!(tail, IntakeTail::Clean { .. } | IntakeTail::Torn { .. }),
                "case {case}: {tail:?}"
            );

            // A flipped bit in one frame: damage if a whole frame follows, else its end.
            let hit = rng.below(model.len() as u64) as usize;
            let (hit_at, hit_len, _) = &model[hit];
            let byte = (hit_at % size + rng.below(*hit_len)) as usize;
            let mut flipped = intake.map.to_vec();
            flipped[byte] ^= 1 << rng.below(8);
            let (found, at, tail) = read(&flipped, committed);
            assert_eq!(found.len(), hit, "case {case}: flip at {byte}");
            assert_eq!(at, *hit_at, "case {case}");
            if hit + 1 < model.len() {
                assert!(
                    matches!(tail, IntakeTail::Damaged { offset, .. } if offset == hit_at % size),
                    "case {case}: {tail:?}"
                );
            } else {
                assert!(
                    matches!(tail, IntakeTail::Clean { .. } | IntakeTail::Torn { .. }),
                    "case {case}: {tail:?}"
                );
            }
        }
    }

    #[test]
    fn each_ending_says_what_was_taken_and_where() {
        assert_eq!(IntakeTail::Clean { records: 3 }.to_string(), "3 record(s) taken from the intake");
        let torn = IntakeTail::Torn { records: 2, offset: 90 }.to_string();
        assert!(
            torn.starts_with("2 record(s) taken from the intake; ") && torn.contains("at byte 90"),
            "{torn}"
        );
        let damaged = IntakeTail::Damaged { records: 0, offset: 7, detail: "why".into() }.to_string();
        assert!(damaged.ends_with("damaged at byte 7: why"), "{damaged}");
    }

    #[test]
    fn a_reopened_ring_keeps_its_frames_and_another_size_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INTAKE_FILE);
        let mut intake = Intake::open(&path, 2048, 0).unwrap();
        put(&mut intake, "t", 1, 0);
        drop(intake);
        let (found, _, _) = read_file(&path, 0).unwrap().unwrap();
        assert_eq!(seqs(&found), vec![1]);
        let intake = Intake::open(&path, 2048, 4096).unwrap();
        assert_eq!(intake.next(), 4096);
        drop(intake);
        assert_eq!(read_file(&path, 0).unwrap().unwrap().0.len(), 1);
        drop(Intake::open(&path, 1024, 0).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
        assert!(read_file(&path, 0).unwrap().unwrap().0.is_empty());
        assert!(read_file(&dir.path().join("none"), 0).unwrap().is_none());
    }
}
