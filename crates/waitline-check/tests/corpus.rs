//! Replays every seed-corpus file and every past crash input of the fuzz targets through the
//! same check functions, so the normal test run keeps them fixed without a fuzzing toolchain.
//! Inputs are decoded exactly as `libfuzzer-sys` decodes them (`arbitrary_take_rest`).

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use waitline_check::{concurrent, http, journal, json_bodies, model, snapshot, wal, webhook_destinations};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

fn replay<T: for<'a> Arbitrary<'a>>(target: &str, check: impl Fn(&T) -> Result<(), String>) -> usize {
    let files = inputs(target);
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        let Ok(input) = T::arbitrary_take_rest(Unstructured::new(&bytes)) else { continue };
        if let Err(e) = check(&input) {
            panic!("{target}: {} fails: {e}", path.display());
        }
    }
    files.len()
}

#[test]
fn engine_model_corpus() {
    assert!(replay::<Vec<model::Op>>("engine_model", |i| model::run(i)) > 0, "a seed corpus is committed");
}

#[test]
fn engine_concurrent_corpus() {
    assert!(
        replay::<Vec<Vec<concurrent::ThreadOp>>>("engine_concurrent", |i| concurrent::check_threads(i)) > 0
    );
}

#[test]
fn http_request_corpus() {
    assert!(replay::<Vec<http::HttpRequest>>("http_request", |i| http::check_requests(i)) > 0);
}

#[test]
fn json_bodies_corpus() {
    assert!(replay::<Vec<json_bodies::JsonCommand>>("json_bodies", |i| json_bodies::check_commands(i)) > 0);
}

#[test]
fn journal_records_corpus() {
    assert!(replay::<journal::DamagedJournal>("journal_records", journal::check_damaged_journal) > 0);
}

#[test]
fn webhook_destination_corpus() {
    assert!(
        replay::<webhook_destinations::DestinationCase>(
            "webhook_destination",
            webhook_destinations::check_destination
        ) > 0
    );
}

#[test]
fn write_ahead_log_corpus() {
    assert!(replay::<wal::LogBytes>("write_ahead_log", wal::check_log_bytes) > 0);
}

#[test]
fn snapshot_decode_corpus() {
    assert!(replay::<snapshot::SnapshotBytes>("snapshot_decode", snapshot::check_snapshot_decode) > 0);
    // The seeds are real snapshots, which restore.
    let restoring = inputs("snapshot_decode")
        .iter()
        .filter_map(|p| {
            let bytes = std::fs::read(p).ok()?;
            snapshot::SnapshotBytes::arbitrary_take_rest(Unstructured::new(&bytes)).ok()
        })
        .filter(|i| matches!(i, snapshot::SnapshotBytes::Raw(snapshot::RawBytes(b)) if waitline::Engine::default().tenant("t").restore(b).is_ok()))
        .count();
    assert!(restoring >= 6, "{restoring} seeds restore");
    // Those named `format1-` were written by the code before format 2 (dials' command ids):
    // a data directory of that time must still start.
    let restore = |p: &PathBuf| {
        let bytes = std::fs::read(p).unwrap();
        let snapshot = &bytes[4..];
        assert_eq!(snapshot[waitline::snapshot::MAGIC.len()], 1, "{} is of format 1", p.display());
        waitline::Engine::default().tenant("t").restore(snapshot).map_err(|e| format!("{}: {e}", p.display()))
    };
    let format1: Vec<PathBuf> = inputs("snapshot_decode")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("format1-")))
        .collect();
    assert_eq!(format1.len(), 4);
    for p in &format1 {
        restore(p).unwrap();
    }
}

/// Writes the seed corpus of `snapshot_decode`: real snapshots of the first tenant after
/// fixed scenarios, encoded as the target's `Raw` input. Run by hand
/// (`cargo test -p waitline-check --test corpus -- --ignored`) when the format changes (keep
/// the older format's seeds under another name, as `format1-seed-N`, to show they still
/// restore).
#[test]
#[ignore = "writes the seed corpus"]
fn write_snapshot_decode_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/snapshot_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let enqueue = |c, q, wait, prio, cmd| model::Op::Enqueue {
        t: 0,
        c,
        q,
        wait,
        size: None,
        keep: c % 2 == 0,
        prio,
        cmd,
    };
    let mut scenarios = vec![vec![], vec![model::Op::Dial { t: 0, c: 0, cmd: None }]];
    let mut busy: Vec<model::Op> =
        (0..6).map(|c| model::Op::Dial { t: 0, c, cmd: (c % 2 == 0).then_some(c as u8) }).collect();
    busy.extend((0..6).map(|c| enqueue(c, c % 3, Some(30 + c as i64), Some(c as i64 % 4), Some(c as u8))));
    busy.extend([
        model::Op::Hangup { t: 0, c: 0, cmd: Some(1) },
        model::Op::BridgeQueue { t: 0, c: 5, q: 1, park: true },
        model::Op::DeleteQueue { t: 0, q: 2 },
        model::Op::Advance { secs: 20 },
    ]);
    scenarios.push(busy.clone());
    busy.push(model::Op::Advance { secs: 700 }); // deadlines, idle queues, forgotten calls
    scenarios.push(busy);
    for (n, ops) in scenarios.iter().enumerate() {
        // `Raw` is the second variant: a discriminant of u32::MAX picks it, and the rest of
        // the bytes are its vector.
        let mut bytes = vec![0xff; 4];
        bytes.extend(snapshot::scenario_snapshot(ops));
        let decoded = snapshot::SnapshotBytes::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
        assert!(
            matches!(&decoded, snapshot::SnapshotBytes::Raw(snapshot::RawBytes(b)) if b[..] == bytes[4..])
        );
        std::fs::write(dir.join(format!("seed-{n}")), bytes).unwrap();
    }
}
