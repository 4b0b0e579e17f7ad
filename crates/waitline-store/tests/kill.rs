//! `kill -9` of a process appending: nothing it had acknowledged is lost, under either policy
//! (with `Fsync::Periodic` a record is acknowledged once written to the operating system,
//! which keeps it when the process dies). In a test binary of
//! its own: spawning the child copies this process's open files into it until it executes,
//! so a store another test of the same binary had just closed could still look locked.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{record, replay_all};
use waitline_store::{Fsync, Options, Store};

/// Run as a child process by `kill_9_loses_nothing_acknowledged`: appends and prints each
/// sequence number once it is durable, until killed.
#[test]
#[ignore = "the child half of kill_9_loses_nothing_acknowledged"]
fn child_appending_until_killed() {
    use std::io::Write;
    let Ok(dir) = std::env::var("WAITLINE_STORE_CHILD_DIR") else { return };
    let fsync = match std::env::var("WAITLINE_STORE_CHILD_FSYNC").as_deref() {
        Ok("periodic") => Fsync::Periodic,
        _ => Fsync::Always,
    };
    let store = Store::open(dir.as_ref(), Options { fsync, ..Options::default() }).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            s.spawn(move || {
                let tenant = format!("t{t}");
                for seq in 1.. {
                    store.wait(store.append(&tenant, seq, &record(seq)).unwrap()).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {tenant} {seq}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let rounds = [(0u64, "always"), (1, "periodic"), (2, "always"), (3, "periodic"), (4, "always")];
    // Records the start took from the intake (`periodic`), not yet committed at the kill.
    let mut from_intake = 0;
    for (round, fsync) in rounds {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_appending_until_killed", "--ignored", "--nocapture", "--test-threads=1"])
            .env("WAITLINE_STORE_CHILD_DIR", dir.path())
            .env("WAITLINE_STORE_CHILD_FSYNC", fsync)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a different moment each round: after 50, 250, 450... acknowledgements.
        let kill_after = 50 + 200 * round;
        let mut n = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ack ") {
                let (tenant, seq) = rest.split_once(' ').unwrap();
                acked.insert(tenant.into(), seq.parse().unwrap());
                n += 1;
                if n == kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Acknowledgements printed before the kill landed count too.
        for line in lines.map_while(Result::ok) {
            if let Some((tenant, seq)) = line.strip_prefix("ack ").and_then(|r| r.split_once(' ')) {
                acked.insert(tenant.into(), seq.parse().unwrap());
            }
        }
        child.wait().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        if let Some(
            waitline_store::IntakeTail::Clean { records } | waitline_store::IntakeTail::Torn { records, .. },
        ) = store.intake_tail()
        {
            from_intake += records;
        }
        let (seen, _) = replay_all(&store);
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for (tenant, _, seq, data) in seen {
            assert_eq!(data, record(seq));
            let prev = last.insert(tenant, seq).unwrap_or(0);
            assert_eq!(seq, prev + 1, "dense");
        }
        for (tenant, seq) in &acked {
            assert!(
                last.get(tenant).copied().unwrap_or(0) >= *seq,
                "round {round} ({fsync}): {tenant} acknowledged {seq}, stored {last:?}"
            );
        }
    }
    assert!(from_intake > 0, "the kills under periodic left records in the intake only");
}
