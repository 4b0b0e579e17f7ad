//! Replays every seed-corpus file and every past crash input of the fuzz targets through the
//! same check functions, so the normal test run keeps them fixed without a fuzzing toolchain.
//! Inputs are decoded exactly as `libfuzzer-sys` decodes them (`arbitrary_take_rest`).

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use waitline_check::{concurrent, http, journal, json_bodies, model, webhook_destinations};

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
