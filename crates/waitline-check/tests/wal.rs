//! The store's reading of SQLite's write-ahead log against SQLite's own recovery
//! (`waitline_check::wal`): changes and cuts near the end of a real log, where a crash or a
//! bad sector lands, and anywhere. `PROPTEST_CASES` sets the number of cases (default 64).

use proptest::prelude::*;
use waitline_check::wal::{LogBytes, check_log_bytes};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse::<u32>().ok()).map_or(64, |c| c.div_ceil(4))))]

    #[test]
    fn the_reading_agrees_with_sqlite(
        changes in prop::collection::vec((any::<u32>(), any::<u8>()), 0..3),
        cut in prop::option::weighted(0.5, any::<u32>()),
        near_the_end in any::<bool>(),
    ) {
        // Offsets counted from the end (wrapped by the check modulo the log's size) land in
        // the last frames.
        let changes = changes
            .into_iter()
            .map(|(at, mask)| (if near_the_end { u32::MAX - at % 12_000 } else { at }, mask))
            .collect();
        check_log_bytes(&LogBytes::Changed { changes, cut }).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn any_bytes_are_read_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..9_000)) {
        check_log_bytes(&LogBytes::Raw(bytes)).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_whole_log_is_clean_and_its_last_byte_cut_is_torn() {
    check_log_bytes(&LogBytes::Changed { changes: vec![], cut: None }).unwrap();
    for cut in 1..40 {
        check_log_bytes(&LogBytes::Changed { changes: vec![], cut: Some(cut) }).unwrap();
    }
}
