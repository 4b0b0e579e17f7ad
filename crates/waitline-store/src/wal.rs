//! What SQLite's recovery of the write-ahead log will drop, found before it drops it.
//!
//! At open SQLite reads the log's frames in order and keeps those up to the last commit
//! frame before the first frame that is not valid (cut short, a checksum that does not
//! match, or the salts of an older log); everything after is dropped without a word. That
//! is right for a transaction a crash cut while it was being written (it was never
//! acknowledged), and wrong for damage followed by committed transactions (a flipped bit,
//! or pages lost by a power cut): those would be lost silently. So the store reads the log
//! first (format: sqlite.org/fileformat2.html, "The Write-Ahead Log") and tells the two
//! apart: frames of the current log (its salts) past the break that include a commit frame
//! mean committed transactions after the damage.
//!
//! The frames after the break still say much: SQLite's checksum covers a frame's page number,
//! commit mark and page but not its salts, and chains each frame to the one before, so a
//! frame after a damaged one still shows whether it is intact and of this log. A commit
//! frame written whole after a damaged frame is damage, not a crash's cut (a crash leaves
//! nothing whole after what it cut; a power cut that lost an earlier page of the last
//! transaction is taken for damage too, and `recover_truncate` passes it). Damage in the
//! very last frame is a torn tail. One damaged byte is told apart wherever it is; several
//! can hide each other.
//!
//! What recovery drops is cut from the file before SQLite opens it ([`cut`]).
//!
//! One state SQLite itself makes would read as damage: a transaction that spilled pages to
//! the log and rolled back leaves them there with the log's salts, and a crash in the middle
//! of a later, shorter commit then shows them after a torn frame. The store never goes on
//! writing after a failed transaction (its writer stops), and a start cuts what recovery
//! drops, so it does not arise here; a writer that did would need this reading to learn it.

use std::io::Read;
use std::path::Path;

/// The log's header: magic, format, page size, checkpoint number, two salts, checksum.
const HEADER: usize = 32;
/// A frame's header: page number, database size (commit frames only), two salts, checksum.
const FRAME_HEADER: usize = 24;
const MAGIC_LITTLE_ENDIAN: u32 = 0x377f_0682;
const MAGIC_BIG_ENDIAN: u32 = 0x377f_0683;
const FORMAT: u32 = 3_007_000;

/// What opening the log will do to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTail {
    /// Every frame of the current log up to its end is kept (older logs' frames after them
    /// are leftovers, not data).
    Clean,
    /// The log ends in a transaction that was not completely written (a crash cut it):
    /// SQLite drops it. It was never acknowledged.
    Torn {
        /// Where the dropped part starts.
        offset: u64,
        /// How many bytes the file has from there (all cut).
        bytes: u64,
    },
    /// Damaged, but the checkpointer had copied the whole log into the database file before
    /// (its progress, in SQLite's `-shm` file, says so): the log holds nothing the database
    /// lacks, and is dropped whole. Nothing is lost.
    Copied {
        /// Where the damage is.
        offset: u64,
        /// The log's size.
        bytes: u64,
    },
    /// Damage followed by committed transactions, which SQLite would drop with it.
    Damaged {
        /// Where the damage is.
        offset: u64,
        /// Where what SQLite keeps ends (its last commit frame before the damage).
        kept: u64,
        /// Where this log's frames end (an older log's leftovers after them not counted;
        /// the file's end when the log's header is damaged).
        log_end: u64,
        /// What is wrong there.
        detail: String,
    },
}

/// What a service logs, and `waitline inspect` prints, of a log found at open.
impl std::fmt::Display for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clean => f.write_str("the write-ahead log is whole"),
            Self::Torn { offset, bytes } => write!(
                f,
                "the write-ahead log ends in a transaction cut short at byte {offset} ({bytes} bytes, never acknowledged): dropped"
            ),
            Self::Copied { offset, bytes } => write!(
                f,
                "the write-ahead log is damaged at byte {offset}, but the database file already held all of it ({bytes} bytes): dropped, nothing lost"
            ),
            Self::Damaged { offset, detail, .. } => write!(
                f,
                "the write-ahead log is damaged at byte {offset} ({detail}): dropped from there, committed transactions included (recovery asked for)"
            ),
        }
    }
}

/// Cuts the log at `path` to its first `len` bytes, synced: what SQLite's recovery would
/// drop, removed before it opens the log. Else the frames dropped stay past the log's end
/// with its salts until the log starts over, and a crash before then would show them after
/// the frames written since, as committed transactions after damage.
///
/// # Errors
/// The file cannot be cut or synced.
pub fn cut(path: &Path, len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// Reads the log at `path` (absent or empty: [`LogTail::Clean`]), a frame at a time; when
/// it is damaged, reads SQLite's index of it, `shm`, for how much of it the database file
/// already holds.
///
/// # Errors
/// A file exists and cannot be read.
pub fn inspect(path: &Path, shm: &Path) -> std::io::Result<LogTail> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogTail::Clean),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let tail = read_log(std::io::BufReader::with_capacity(1 << 16, file), len)?;
    // Damage in a frame (the header is whole): was all of this log copied already?
    let LogTail::Damaged { offset, log_end, .. } = tail else { return Ok(tail) };
    if offset == 0 {
        return Ok(tail);
    }
    let mut header = [0; HEADER];
    std::fs::File::open(path)?.read_exact(&mut header)?;
    let index = match std::fs::read(shm) {
        Ok(index) => index,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tail),
        Err(e) => return Err(e),
    };
    let frame = (FRAME_HEADER as u64) + u64::from(be(&header, 8));
    let frames = (log_end - HEADER as u64).div_ceil(frame);
    Ok(match copied_frames(&index, &header) {
        Some(copied) if copied >= frames => LogTail::Copied { offset, bytes: len },
        _ => tail,
    })
}

/// What SQLite's recovery does to the log `bytes`.
#[must_use]
pub fn classify(bytes: &[u8]) -> LogTail {
    // Reading a slice cannot fail.
    read_log(bytes, bytes.len() as u64).unwrap_or(LogTail::Clean)
}

fn be(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// SQLite's log checksum over `data` (a multiple of 8 bytes), continuing from `sum`.
fn checksum(sum: (u32, u32), data: &[u8], big_endian: bool) -> (u32, u32) {
    let (mut s0, mut s1) = sum;
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// What SQLite's recovery does to the log of `len` bytes that `log` reads.
fn read_log(mut log: impl Read, len: u64) -> std::io::Result<LogTail> {
    let damaged = |offset: u64, kept: u64, log_end: u64, detail: &str| LogTail::Damaged {
        offset,
        kept,
        log_end,
        detail: detail.to_owned(),
    };
    if len < HEADER as u64 {
        // A log is made with its header in one write: a shorter one never held a frame.
        return Ok(if len == 0 { LogTail::Clean } else { LogTail::Torn { offset: 0, bytes: len } });
    }
    let mut header = [0; HEADER];
    log.read_exact(&mut header)?;
    let magic = be(&header, 0);
    let big_endian = magic == MAGIC_BIG_ENDIAN;
    let page = be(&header, 8) as usize;
    let header_sum = checksum((0, 0), &header[..24], big_endian);
    let header_ok = (magic == MAGIC_LITTLE_ENDIAN || big_endian)
        && be(&header, 4) == FORMAT
        && page.is_power_of_two()
        && (512..=65_536).contains(&page)
        && header_sum == (be(&header, 24), be(&header, 28));
    if !header_ok {
        // SQLite then ignores the whole log; frames after a bad header cannot be told from
        // leftovers, so any is taken for data.
        return Ok(if len > HEADER as u64 {
            damaged(0, 0, len, "the log's header is damaged")
        } else {
            LogTail::Clean
        });
    }
    let salts = (be(&header, 16), be(&header, 20));
    let frame = FRAME_HEADER + page;
    let mut f = vec![0; frame];
    // The valid frames, as SQLite's recovery reads them: the chain's sum, where it ends
    // (`at`: the break), and where its last commit frame ends (`kept`).
    let (mut sum, mut at, mut kept) = (header_sum, HEADER as u64, HEADER as u64);
    // Past the break. A frame of this log still intact (its checksum follows from the frame
    // before it, the break's from the chain so far) that commits is a committed transaction
    // the damage would take with it. A frame is this log's if it has its salts, or if it
    // follows one of this log's frames: the salts are not in the checksum, so a frame whose
    // salts alone are damaged is still told from an older log's leftovers (those follow only
    // each other). Then, by salts alone: one commit frame, with nothing of this log after it,
    // ends the last transaction, which the damage is in (a crash cut it, or a power cut lost
    // one of its pages): a torn tail. More than that is committed transactions after the
    // damage. (Older logs' frames come after all of this log's: a log starts over from the
    // top of the file.)
    let (mut broken, mut intact_commit_after) = (false, false);
    let (mut commits, mut after_last_commit, mut end, mut log_end) = (0, false, at, at);
    // A frame follows from the frame before it: from its stored checksum, or, when that is
    // what is damaged, from the checksum its bytes give (`recomputed`).
    let (mut seed, mut recomputed, mut ours_before) = (sum, sum, true);
    let mut pos = at;
    while pos < len {
        let n = usize::try_from(len - pos).map_or(frame, |left| left.min(frame));
        if n < FRAME_HEADER {
            // A piece of a frame header at the end, right after this log's frames: a write
            // cut short.
            if !broken || end == pos {
                end = len;
            }
            break;
        }
        log.read_exact(&mut f[..n])?;
        let whole = n == frame;
        let current = (be(&f, 8), be(&f, 12)) == salts;
        let next = checksum(
            checksum(if broken { seed } else { sum }, &f[..8], big_endian),
            &f[FRAME_HEADER..n],
            big_endian,
        );
        let stored = (be(&f, 16), be(&f, 20));
        if !broken {
            if whole && be(&f, 0) != 0 && current && next == stored {
                sum = next;
                pos += frame as u64;
                at = pos;
                if be(&f, 4) != 0 {
                    kept = pos;
                }
                continue;
            }
            (broken, end, seed) = (true, at, sum);
        }
        if whole {
            let from_recomputed = || {
                checksum(checksum(recomputed, &f[..8], big_endian), &f[FRAME_HEADER..], big_endian) == stored
            };
            let follows = next == stored || from_recomputed();
            let ours = current || (follows && ours_before);
            intact_commit_after |= ours && follows && be(&f, 4) != 0;
            if ours {
                log_end = pos + frame as u64;
            }
            (seed, recomputed, ours_before) = (stored, next, ours);
        }
        if current {
            end = (pos + frame as u64).min(len);
            let whole_commit = whole && be(&f, 4) != 0;
            commits += usize::from(whole_commit);
            after_last_commit = commits > 0 && !whole_commit;
        } else if !whole && end == pos {
            // A frame cut short right after this log's frames, whatever its salts say (SQLite
            // writes a spilled page's frame with none): a write cut short.
            end = len;
        }
        pos += n as u64;
    }
    if !broken {
        end = end.max(at);
    }
    let log_end = log_end.max(end);
    if intact_commit_after {
        let why = "a frame of the log is damaged, and a committed transaction after it is intact";
        return Ok(damaged(at, kept, log_end, why));
    }
    if commits > 1 || after_last_commit {
        let why = "a frame of the log is damaged, and committed transactions follow it";
        return Ok(damaged(at, kept, log_end, why));
    }
    // Torn: everything past the last commit kept goes (frames SQLite wrote with zeroed salts
    // while a transaction spilled, older logs' leftovers), so that is what is counted.
    Ok(if end > kept { LogTail::Torn { offset: kept, bytes: len - kept } } else { LogTail::Clean })
}

/// How many frames of the log whose header is `header` the checkpointer had copied into
/// the database file, as SQLite's index of the log (`-shm`, 136 bytes of header: two copies
/// of the index header, then the checkpoint's progress, in the machine's byte order) says:
/// `None` unless the index is whole (its two copies alike, its checksum right) and of this
/// log (same salts, same page size). SQLite counts a frame copied only once the database
/// file is synced.
fn copied_frames(shm: &[u8], header: &[u8; HEADER]) -> Option<u64> {
    const INDEX_HEADER: usize = 48;
    const NBACKFILL: usize = 96;
    let index = shm.get(..NBACKFILL + 4)?;
    let ne = |at: usize| u32::from_ne_bytes([index[at], index[at + 1], index[at + 2], index[at + 3]]);
    let (first, second) = (&index[..INDEX_HEADER], &index[INDEX_HEADER..2 * INDEX_HEADER]);
    // The index header's checksum is over its first 40 bytes, in the machine's byte order.
    let sum = checksum((0, 0), &first[..40], cfg!(target_endian = "big"));
    let page = u32::from(u16::from_ne_bytes([first[14], first[15]]));
    let page = if page == 1 { 65_536 } else { page };
    let whole = first == second && ne(0) == FORMAT && first[12] == 1 && sum == (ne(40), ne(44));
    let this_log = first[32..40] == header[16..24] && page == be(header, 8);
    let (copied, last) = (ne(NBACKFILL), ne(16));
    (whole && this_log && copied <= last).then_some(u64::from(copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 512;

    /// One frame to write: whether it commits, whether it is of the current log (else of an
    /// older one, with other salts), and whether a bit of its page is flipped after.
    #[derive(Clone, Copy)]
    struct F {
        commit: bool,
        current: bool,
        flipped: bool,
    }

    const fn frame(commit: bool) -> F {
        F { commit, current: true, flipped: false }
    }

    /// A log as SQLite writes it (little-endian checksums), frames in order.
    fn log(frames: &[F]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [MAGIC_LITTLE_ENDIAN, FORMAT, PAGE as u32, 7, 0xAAAA_0001, 0x1234_5678] {
            out.extend(v.to_be_bytes());
        }
        let mut sum = checksum((0, 0), &out, false);
        out.extend(sum.0.to_be_bytes());
        out.extend(sum.1.to_be_bytes());
        // The older log's frames chain among themselves, from their own header (gone).
        let mut old_sum = (1, 2);
        for (i, f) in frames.iter().enumerate() {
            let salts: (u32, u32) =
                if f.current { (0xAAAA_0001, 0x1234_5678) } else { (0xAAAA_0000, 0x9999) };
            let mut head = Vec::new();
            head.extend((i as u32 + 2).to_be_bytes());
            head.extend(u32::from(f.commit).to_be_bytes());
            let page: Vec<u8> = (0..PAGE).map(|b| (b * 7 + i) as u8).collect();
            let chain = if f.current { &mut sum } else { &mut old_sum };
            let next = checksum(checksum(*chain, &head, false), &page, false);
            *chain = next;
            head.extend(salts.0.to_be_bytes());
            head.extend(salts.1.to_be_bytes());
            head.extend(next.0.to_be_bytes());
            head.extend(next.1.to_be_bytes());
            out.extend(head);
            let at = out.len();
            out.extend(page);
            if f.flipped {
                out[at + 100] ^= 0x10;
            }
        }
        out
    }

    const FRAME: u64 = (FRAME_HEADER + PAGE) as u64;
    const fn at(frame: u64) -> u64 {
        HEADER as u64 + frame * FRAME
    }

    #[test]
    fn a_whole_log_and_an_empty_one_are_clean() {
        assert_eq!(classify(&[]), LogTail::Clean);
        assert_eq!(classify(&log(&[])), LogTail::Clean);
        assert_eq!(classify(&log(&[frame(false), frame(true), frame(true)])), LogTail::Clean);
        // An older log's frames after this one's are leftovers.
        let old = F { commit: true, current: false, flipped: false };
        assert_eq!(classify(&log(&[frame(true), old, old])), LogTail::Clean);
    }

    #[test]
    fn a_transaction_cut_short_is_torn() {
        let whole = log(&[frame(true), frame(false), frame(true)]);
        // Cut anywhere in the last transaction (its two frames): torn from its start.
        for cut in at(1) + 1..whole.len() as u64 {
            let got = classify(&whole[..cut as usize]);
            assert_eq!(got, LogTail::Torn { offset: at(1), bytes: cut - at(1) }, "cut at {cut}");
        }
        assert_eq!(classify(&whole[..at(1) as usize]), LogTail::Clean, "cut between transactions");
        // Frames written without their commit frame.
        assert_eq!(
            classify(&log(&[frame(true), frame(false)])),
            LogTail::Torn { offset: at(1), bytes: FRAME }
        );
        // A cut inside an older log's leftovers drops nothing.
        let old = F { commit: true, current: false, flipped: false };
        let with_old = log(&[frame(true), old, old]);
        assert_eq!(classify(&with_old[..with_old.len() - 10]), LogTail::Clean);
        // A log shorter than its header never held a frame.
        assert_eq!(classify(&whole[..20]), LogTail::Torn { offset: 0, bytes: 20 });
    }

    #[test]
    fn damage_in_the_last_frame_is_a_torn_tail() {
        let flipped = |commit| F { commit, current: true, flipped: true };
        for last in
            [vec![frame(false), flipped(true)], vec![flipped(true)], vec![frame(false), flipped(false)]]
        {
            let mut frames = vec![frame(true)];
            frames.extend(last.iter().copied());
            let got = classify(&log(&frames));
            assert_eq!(got, LogTail::Torn { offset: at(1), bytes: FRAME * last.len() as u64 });
        }
    }

    /// A commit frame written whole after a damaged frame: no crash writes a later frame
    /// before an earlier one is whole (a power cut may, and the start then stops on what was
    /// the last transaction: `recover_truncate` passes it).
    #[test]
    fn damage_before_an_intact_commit_frame_is_named() {
        let flipped = F { commit: false, current: true, flipped: true };
        let got = classify(&log(&[frame(true), flipped, frame(true)]));
        assert!(matches!(got, LogTail::Damaged { offset, .. } if offset == at(1)), "{got:?}");
    }

    /// Frames of a transaction that never committed, the first damaged: torn, whatever
    /// follows it of the same transaction; a piece of a frame only counts right after this
    /// log's frames.
    #[test]
    fn an_uncommitted_transaction_with_damage_is_torn_and_pieces_count_where_they_join() {
        let flipped = F { commit: false, current: true, flipped: true };
        let bytes = log(&[frame(true), flipped, frame(false), frame(false)]);
        assert_eq!(classify(&bytes), LogTail::Torn { offset: at(1), bytes: 3 * FRAME });
        let old = F { commit: true, current: false, flipped: false };
        for piece in [10, 24, 30] {
            let mut bytes = log(&[frame(true), old]);
            bytes.extend(vec![0x5a; piece]);
            assert_eq!(
                classify(&bytes),
                LogTail::Clean,
                "a piece of {piece} bytes after an older log's frame"
            );
            let mut bytes = log(&[frame(true)]);
            bytes.extend(vec![0x5a; piece]);
            let len = bytes.len() as u64;
            assert_eq!(
                classify(&bytes),
                LogTail::Torn { offset: at(1), bytes: len - at(1) },
                "{piece} bytes"
            );
        }
    }

    /// Nothing after the break follows (every frame after it damaged): the salts alone tell
    /// a commit frame followed by more of this log.
    #[test]
    fn with_nothing_intact_after_the_break_the_salts_tell_committed_transactions() {
        let flipped = |commit| F { commit, current: true, flipped: true };
        for frames in [
            vec![frame(true), flipped(true), flipped(true)],
            vec![frame(true), flipped(true), flipped(false)],
        ] {
            let got = classify(&log(&frames));
            assert!(matches!(got, LogTail::Damaged { offset, .. } if offset == at(1)), "{got:?}");
        }
        let got = classify(&log(&[frame(true), flipped(false), flipped(true)]));
        assert_eq!(got, LogTail::Torn { offset: at(1), bytes: 2 * FRAME }, "one commit frame, the last");
    }

    /// A damaged stored checksum: the next frame follows from the checksum the damaged
    /// frame's bytes give, so the last transaction's whole commit frame after it is seen.
    #[test]
    fn a_damaged_stored_checksum_does_not_hide_the_commit_after_it() {
        for frames in
            [vec![frame(true), frame(false), frame(true)], vec![frame(true), frame(true), frame(true)]]
        {
            for byte in 16..24 {
                let mut bytes = log(&frames);
                bytes[at(1) as usize + byte] ^= 0x08;
                let got = classify(&bytes);
                assert!(
                    matches!(got, LogTail::Damaged { offset, .. } if offset == at(1)),
                    "byte {byte}: {got:?}"
                );
            }
        }
        // In the last frame, the same damage is a torn tail.
        let mut bytes = log(&[frame(true), frame(true)]);
        bytes[at(1) as usize + 20] ^= 0x08;
        assert_eq!(classify(&bytes), LogTail::Torn { offset: at(1), bytes: FRAME });
    }

    /// The salts are not in the checksum: a frame whose salts alone are damaged still
    /// follows the chain, and is this log's.
    #[test]
    fn damaged_salts_are_told_from_an_older_log() {
        for frames in [vec![frame(true), frame(true)], vec![frame(true), frame(true), frame(true)]] {
            let mut bytes = log(&frames);
            let second = at(1) as usize;
            bytes[second + 9] ^= 0x40; // salt-1 of the second frame
            let got = classify(&bytes);
            assert!(matches!(got, LogTail::Damaged { offset, .. } if offset == at(1)), "{got:?}");
        }
        // A commit mark flipped: the frame no longer follows, the next commit frame does.
        let mut bytes = log(&[frame(true), frame(true), frame(true)]);
        bytes[at(1) as usize + 7] ^= 1;
        assert!(matches!(classify(&bytes), LogTail::Damaged { .. }));
    }

    #[test]
    fn damage_before_a_committed_transaction_is_named() {
        let flipped = |commit| F { commit, current: true, flipped: true };
        let cases = [
            (vec![frame(true), flipped(false), frame(true), frame(true)], 1),
            (vec![frame(true), flipped(true), frame(true)], 1),
            (vec![flipped(true), frame(false), frame(true)], 0),
            // A commit then a frame of a later transaction, cut: still committed data after.
            (vec![frame(true), flipped(false), frame(true), frame(false)], 1),
        ];
        for (frames, broken) in cases {
            let got = classify(&log(&frames));
            assert!(
                matches!(&got, LogTail::Damaged { offset, .. } if *offset == at(broken)),
                "{got:?} for a break at frame {broken}"
            );
        }
        // A bad header: SQLite would ignore every frame.
        let mut bad = log(&[frame(true)]);
        bad[13] ^= 1;
        assert!(matches!(classify(&bad), LogTail::Damaged { offset: 0, .. }));
        assert_eq!(classify(&bad[..HEADER]), LogTail::Clean, "a header alone holds nothing");
    }

    #[test]
    fn a_log_that_cannot_be_read_is_an_error_and_an_absent_one_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("shm");
        assert_eq!(inspect(&dir.path().join("absent"), &shm).unwrap(), LogTail::Clean);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(inspect(&file.join("wal"), &shm).is_err(), "a path through a file");
        assert!(inspect(dir.path(), &shm).is_err(), "a directory");
        std::fs::write(&file, log(&[frame(true)])).unwrap();
        assert_eq!(inspect(&file, &shm).unwrap(), LogTail::Clean);
    }

    /// SQLite's index of the log `frames` long (as `log` writes them), with `copied` of
    /// them copied into the database file.
    fn index(frames: u32, copied: u32) -> Vec<u8> {
        index_of(frames, copied, &log(&[])[16..24], PAGE as u16)
    }

    /// An index as `index` makes it, of a log with other salts or another page size.
    fn index_of(frames: u32, copied: u32, salts: &[u8], page: u16) -> Vec<u8> {
        let mut first = Vec::new();
        for v in [FORMAT, 0, 9] {
            first.extend(v.to_ne_bytes());
        }
        first.extend([1, 0]); // initialised, little-endian checksums
        first.extend(page.to_ne_bytes());
        for v in [frames, 40, 0, 0] {
            first.extend(v.to_ne_bytes());
        }
        first.extend(salts); // the log's salts, as they are in its header
        let sum = checksum((0, 0), &first, cfg!(target_endian = "big"));
        first.extend(sum.0.to_ne_bytes());
        first.extend(sum.1.to_ne_bytes());
        let mut out = [first.clone(), first].concat();
        out.extend(copied.to_ne_bytes());
        out.resize(136, 0);
        out
    }

    #[test]
    fn a_damaged_log_the_database_holds_whole_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, shm) = (dir.path().join("wal"), dir.path().join("shm"));
        let flipped = F { commit: false, current: true, flipped: true };
        let bytes = log(&[frame(true), flipped, frame(true), frame(true)]);
        std::fs::write(&path, &bytes).unwrap();
        let damaged = inspect(&path, &shm).unwrap();
        assert!(
            matches!(damaged, LogTail::Damaged { offset, log_end, .. } if offset == at(1) && log_end == at(4))
        );
        std::fs::write(&shm, index(4, 4)).unwrap();
        assert_eq!(inspect(&path, &shm).unwrap(), LogTail::Copied { offset: at(1), bytes: at(4) });
        assert!(inspect(&path, &shm.join("x")).is_err(), "an index that cannot be read");
        // A whole index of another log (an older one's salts, another page size).
        let salts = &log(&[])[16..24];
        for other in [index_of(4, 4, &[0; 8], PAGE as u16), index_of(4, 4, salts, 1024)] {
            std::fs::write(&shm, other).unwrap();
            assert!(matches!(inspect(&path, &shm).unwrap(), LogTail::Damaged { .. }));
        }
        // Not all of it copied, or an index not whole or of another log: still damaged.
        std::fs::write(&shm, index(4, 3)).unwrap();
        assert_eq!(inspect(&path, &shm).unwrap(), damaged);
        for at in [0, 12, 14, 20, 33, 41, 60] {
            let mut bad = index(4, 4);
            bad[at] ^= 1;
            std::fs::write(&shm, &bad).unwrap();
            assert_eq!(inspect(&path, &shm).unwrap(), damaged, "index byte {at}");
        }
        std::fs::write(&shm, &index(4, 4)[..90]).unwrap();
        assert_eq!(inspect(&path, &shm).unwrap(), damaged, "an index cut short");
        std::fs::write(&shm, index(4, 5)).unwrap();
        assert_eq!(inspect(&path, &shm).unwrap(), damaged, "more copied than the index holds");
        // An older log's leftovers after this one's are not this log's frames.
        let old = F { commit: true, current: false, flipped: false };
        let with_old = log(&[frame(true), flipped, frame(true), frame(true), old, old]);
        std::fs::write(&path, &with_old).unwrap();
        std::fs::write(&shm, index(4, 4)).unwrap();
        let len = with_old.len() as u64;
        assert_eq!(inspect(&path, &shm).unwrap(), LogTail::Copied { offset: at(1), bytes: len });
    }

    #[test]
    fn a_big_endian_log_is_read_too() {
        let mut bytes = log(&[frame(true)]);
        // The same log with big-endian checksums: rewrite the header and the frame's sums.
        bytes[..4].copy_from_slice(&MAGIC_BIG_ENDIAN.to_be_bytes());
        let sum = checksum((0, 0), &bytes[..24], true);
        bytes[24..28].copy_from_slice(&sum.0.to_be_bytes());
        bytes[28..32].copy_from_slice(&sum.1.to_be_bytes());
        let f = HEADER;
        let next = checksum(checksum(sum, &bytes[f..f + 8], true), &bytes[f + FRAME_HEADER..], true);
        bytes[f + 16..f + 20].copy_from_slice(&next.0.to_be_bytes());
        bytes[f + 20..f + 24].copy_from_slice(&next.1.to_be_bytes());
        assert_eq!(classify(&bytes), LogTail::Clean);
        bytes.truncate(bytes.len() - 1);
        assert_eq!(classify(&bytes), LogTail::Torn { offset: at(0), bytes: FRAME - 1 });
    }
}
