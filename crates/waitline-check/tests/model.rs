//! Model-based test: random command sequences (with clock advances) applied to the engine and
//! to the reference model of `waitline_check::model`; every result, event, queue figure,
//! listing and call state must agree after every step, and the engine's invariants must hold.
//! `PROPTEST_CASES` sets the number of cases (default 300).

use proptest::prelude::*;
use waitline_check::concurrent::{ThreadOp, check_threads};
use waitline_check::journal::{CutJournal, check_cut_journal};
use waitline_check::model::{CALLS, Op, QUEUES, TENANTS, run};
use waitline_check::snapshot::check_snapshot_replay;

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS.len();
    let c = 0..CALLS;
    let q = 0..QUEUES.len();
    let cmd = prop::option::weighted(0.3, 0u8..3);
    prop_oneof![
        3 => (t.clone(), c.clone(), cmd.clone()).prop_map(|(t, c, cmd)| Op::Dial { t, c, cmd }),
        6 => (t.clone(), c.clone(), q.clone(), prop::option::of(1i64..200), prop::option::weighted(0.3, 0i64..4), any::<bool>(), prop::option::weighted(0.4, -1i64..11), cmd.clone())
            .prop_map(|(t, c, q, wait, size, keep, prio, cmd)| Op::Enqueue { t, c, q, wait, size, keep, prio, cmd }),
        2 => (t.clone(), c.clone(), cmd.clone()).prop_map(|(t, c, cmd)| Op::Leave { t, c, cmd }),
        4 => (t.clone(), c.clone(), q.clone(), any::<bool>()).prop_map(|(t, c, q, park)| Op::BridgeQueue { t, c, q, park }),
        2 => (t.clone(), c.clone(), c.clone(), any::<bool>()).prop_map(|(t, c, other, park)| Op::BridgeCall { t, c, other, park }),
        3 => (t.clone(), c.clone(), cmd).prop_map(|(t, c, cmd)| Op::Hangup { t, c, cmd }),
        1 => (t.clone(), c.clone()).prop_map(|(t, c)| Op::Transfer { t, c }),
        1 => (t.clone(), q.clone(), prop::option::of(0i64..4)).prop_map(|(t, q, size)| Op::CreateQueue { t, q, size }),
        1 => (t.clone(), q.clone(), 0i64..4).prop_map(|(t, q, size)| Op::UpdateQueue { t, q, size }),
        1 => (t.clone(), q.clone()).prop_map(|(t, q)| Op::DeleteQueue { t, q }),
        1 => (t.clone(), q.clone(), c.clone(), prop::option::of(any::<bool>()), prop::option::of(-1i64..11))
            .prop_map(|(t, q, c, keep, prio)| Op::UpdateQueueCall { t, q, c, keep, prio }),
        1 => (t, q, c).prop_map(|(t, q, c)| Op::RemoveQueueCall { t, q, c }),
        4 => prop_oneof![0u64..3, 0u64..250, 250u64..1300].prop_map(|secs| Op::Advance { secs }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300)))]

    #[test]
    fn engine_agrees_with_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse::<u32>().ok()).map_or(64, |c| c.div_ceil(4))))]

    /// Four threads on two tenants, from random bytes decoded as in the `engine_concurrent`
    /// fuzz target: invariants, enqueue/dequeue accounting, per-tenant event order, and a
    /// replay of the journal the interleaving wrote (same events, same state).
    #[test]
    fn threads_on_two_tenants(bytes in prop::collection::vec(any::<u8>(), 64..4096)) {
        let mut input = arbitrary::Unstructured::new(&bytes);
        let threads: Vec<Vec<ThreadOp>> = (0..4).map(|_| input.arbitrary().unwrap_or_default()).collect();
        check_threads(&threads).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse::<u32>().ok()).map_or(24, |c| c.div_ceil(12))))]

    /// A scenario journaled into the store on disk, its write-ahead log cut at a random byte
    /// as a crash leaves it: what replays is the model's state after a prefix of the scenario.
    #[test]
    fn a_cut_journal_replays_into_a_prefix_of_the_scenario(ops in prop::collection::vec(op(), 1..40), cut in any::<u32>()) {
        check_cut_journal(&CutJournal { ops, cut }).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn cut_journals_match_prefixes_of_a_fixed_scenario() {
    let mut ops = Vec::new();
    for c in 0..CALLS {
        ops.push(Op::Dial { t: c % 2, c, cmd: None });
        ops.push(Op::Enqueue {
            t: c % 2,
            c,
            q: c % 3,
            wait: Some(30),
            size: None,
            keep: false,
            prio: None,
            cmd: None,
        });
    }
    ops.push(Op::Advance { secs: 40 }); // every deadline fires: timer records
    ops.push(Op::BridgeQueue { t: 0, c: 0, q: 0, park: true });
    let mut matched = 0;
    for cut in [0, u32::MAX, 5_000, 20_000, 40_000, 60_000, 80_000, 100_000] {
        matched += usize::from(check_cut_journal(&CutJournal { ops: ops.clone(), cut }).unwrap());
    }
    // The empty log (the model at the start) and the whole log (at the end) at least.
    assert!(matched >= 2, "only {matched} cuts fell on a step boundary");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse::<u32>().ok()).map_or(150, |c| c.div_ceil(2))))]

    /// Engine A snapshots every tenant at a random step; engine B restores the snapshots and
    /// replays A's later records: the same events, the model's state right after the restore
    /// and at the end, and byte-identical snapshots at the end.
    #[test]
    fn a_snapshot_and_the_journal_after_it_rebuild_the_engine(ops in prop::collection::vec(op(), 1..80), cut in any::<usize>()) {
        check_snapshot_replay(&ops, cut).map_err(TestCaseError::fail)?;
    }
}

/// Across the snapshot: members waiting with deadlines, an ended call waiting to be
/// forgotten, an auto queue waiting for its idle check, and command ids inside their 60 s
/// window, repeated after it (the repeat must still be recognised).
#[test]
fn timers_and_command_ids_pending_across_a_snapshot() {
    let enqueue =
        |c, q, wait, cmd| Op::Enqueue { t: 0, c, q, wait, size: None, keep: false, prio: None, cmd };
    let ops = vec![
        Op::Dial { t: 0, c: 0, cmd: Some(1) },
        Op::Dial { t: 0, c: 1, cmd: None },
        Op::Dial { t: 0, c: 2, cmd: Some(2) },
        Op::Dial { t: 0, c: 3, cmd: None },
        enqueue(0, 0, Some(90), Some(1)),
        enqueue(1, 0, Some(30), None),
        enqueue(3, 1, None, None),
        Op::Leave { t: 0, c: 3, cmd: Some(2) }, // q1 empty: its idle check pending
        Op::Hangup { t: 0, c: 2, cmd: None },   // ended: its retention pending
        Op::Advance { secs: 10 },
        // The snapshot is taken here (step 10).
        Op::Leave { t: 0, c: 3, cmd: Some(2) }, // the same command id, 10 s later: a repeat
        enqueue(0, 0, Some(90), Some(1)),       // a repeat too
        Op::Dial { t: 0, c: 4, cmd: Some(1) },  // a dial's repeat: answers c0
        Op::Dial { t: 0, c: 5, cmd: Some(2) },  // c2's, though c2 has ended
        Op::Advance { secs: 25 },               // c1's deadline
        Op::Advance { secs: 60 },               // c0's deadline
        Op::Advance { secs: 300 },              // q1 idle, c2 forgotten
        Op::Hangup { t: 0, c: 3, cmd: Some(2) }, // the window is over: a new command
    ];
    let run = check_snapshot_replay(&ops, 10).unwrap();
    assert!(run.timers_pending, "timers were pending at the snapshot");
    assert!(run.records_after >= 5, "{run:?}");
}
