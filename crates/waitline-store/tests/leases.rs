//! Bucket leases over PostgreSQL: taken only when free or expired (by the database's
//! clock), each takeover at the next epoch; every batch is fenced in its own transaction, so
//! a node whose lease lapsed writes nothing more, while the new owner replays what the old
//! one had committed. Two store handles on one schema stand for two nodes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod common;

use common::{Postgres, record, replay_all};
use waitline_store::bucket::bucket_of;
use waitline_store::{Error, Options, PgConfig, Store};

/// A node on the schema of `pg`, named `node`, with leases of `lease`.
fn node(pg: &Postgres, node: &str, lease: Duration) -> Store {
    let config = PgConfig { node: node.into(), lease, ..pg.config.clone() };
    Store::open_postgres(&config, Options::default()).unwrap()
}

/// Ends a node's lease now, as a node stalled past its lease would see it.
fn lapse(pg: &Postgres, bucket: u32) {
    let bucket = i32::try_from(bucket).unwrap();
    let ended = pg
        .client()
        .execute("UPDATE leases SET expires_at = now() - interval '1 second' WHERE bucket = $1", &[&bucket])
        .unwrap();
    assert_eq!(ended, 1);
}

/// Two tenants in different buckets.
fn two_tenants(buckets: u32) -> (&'static str, &'static str) {
    assert_ne!(bucket_of("acme", buckets), bucket_of("zeta", buckets));
    ("acme", "zeta")
}

#[test]
fn a_bucket_is_taken_only_when_free_or_expired_each_time_at_the_next_epoch() {
    let Some(pg) = Postgres::new("leases_taken_when_free") else { return };
    let a = node(&pg, "a", Duration::from_secs(30));
    let b = node(&pg, "b", Duration::from_secs(30));
    assert_eq!(a.acquire(&[7]).unwrap(), [(7, 1)], "a free bucket, first epoch");
    assert!(b.acquire(&[7]).unwrap().is_empty(), "held by a, live");
    assert_eq!(a.acquire(&[7]).unwrap(), [(7, 1)], "taking one's own again renews it");
    assert!(a.renew().unwrap().is_empty());
    assert_eq!(a.owned(), [(7, 1)]);
    a.release(7).unwrap();
    assert!(a.owned().is_empty());
    assert_eq!(b.acquire(&[7]).unwrap(), [(7, 2)], "released: free at once, next epoch");
    assert!(a.acquire(&[7]).unwrap().is_empty());
    lapse(&pg, 7);
    assert_eq!(a.acquire(&[7]).unwrap(), [(7, 3)], "expired: taken over");
    assert_eq!(b.renew().unwrap(), [(7, 2)], "b finds it lost when renewing");
    assert_eq!((b.owned(), b.lost()), (vec![], vec![(7, 2)]));
    assert_eq!(bucket_of("x", pg.config.buckets), 7);
    assert!(matches!(b.append("x", 1, b"x"), Err(Error::NotOwner { bucket: 7 })));
}

#[test]
fn an_append_outside_the_buckets_held_is_refused_before_it_is_queued() {
    let Some(pg) = Postgres::new("leases_not_owner") else { return };
    let a = node(&pg, "a", Duration::from_secs(30));
    let bucket = bucket_of("acme", pg.config.buckets);
    match a.append("acme", 1, b"x") {
        Err(e @ Error::NotOwner { .. }) => {
            assert_eq!(
                e.to_string(),
                format!("this node does not own bucket {bucket} (no lease held on it)")
            );
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    a.acquire(&[bucket]).unwrap();
    a.wait(a.append("acme", 1, b"x").unwrap()).unwrap();
}

#[test]
fn leases_expire_by_the_database_clock() {
    let Some(pg) = Postgres::new("leases_expire") else { return };
    let a = node(&pg, "a", Duration::from_millis(300));
    let b = node(&pg, "b", Duration::from_secs(30));
    assert_eq!(a.acquire(&[1]).unwrap(), [(1, 1)]);
    assert!(b.acquire(&[1]).unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(b.acquire(&[1]).unwrap(), [(1, 2)], "a did not renew in time");
    assert_eq!(a.renew().unwrap(), [(1, 1)]);
}

/// The brief's case: A owns, A's lease lapses, B takes over at epoch + 1; A's append is
/// refused and nothing of it lands; B replays what A had committed. A batch of A's that
/// mixes a lost bucket and a held one keeps the held one's records.
#[test]
fn a_former_owner_writes_nothing_after_a_takeover() {
    let Some(pg) = Postgres::new("leases_fencing") else { return };
    let (lost, kept) = two_tenants(pg.config.buckets);
    let (lost_bucket, kept_bucket) = (bucket_of(lost, pg.config.buckets), bucket_of(kept, pg.config.buckets));
    let a = node(&pg, "a", Duration::from_secs(30));
    let b = node(&pg, "b", Duration::from_secs(30));
    assert_eq!(a.acquire(&[lost_bucket, kept_bucket]).unwrap().len(), 2);
    for seq in 1..=3 {
        a.wait(a.append(lost, seq, &record(seq)).unwrap()).unwrap();
    }
    // A's next batch is on its way (queued) when its lease of one bucket lapses and B
    // takes that bucket over.
    a.pause_writer();
    let refused = a.append(lost, 4, b"a's record 4").unwrap();
    let still_ours = a.append(kept, 1, &record(1)).unwrap();
    lapse(&pg, lost_bucket);
    assert_eq!(b.acquire(&[lost_bucket]).unwrap(), [(lost_bucket, 2)]);
    a.resume_writer();
    match a.wait(refused) {
        Err(e @ Error::LeaseLost { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "the lease of bucket {lost_bucket} at epoch 1 was lost before this was committed: nothing of it was kept"
            )
        ),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    a.wait(still_ours).unwrap();
    assert_eq!(a.lost(), [(lost_bucket, 1)], "A reports the bucket lost");
    assert_eq!(a.owned(), [(kept_bucket, 1)]);
    assert!(matches!(a.append(lost, 4, b"again"), Err(Error::NotOwner { bucket }) if bucket == lost_bucket));
    assert!(!a.is_stopped(), "the other buckets go on");
    // Nothing of A's record 4 is stored; B replays 1..=3 and goes on from there.
    let mut seen = Vec::new();
    b.replay_buckets(&[lost_bucket], |e| {
        if let waitline_store::Entry::Record { tenant, seq, data } = e {
            seen.push((tenant.to_owned(), seq, data.to_vec()));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (1..=3).map(|s| (lost.to_owned(), s, record(s))).collect::<Vec<_>>());
    b.wait(b.append(lost, 4, b"b's record 4").unwrap()).unwrap();
    drop((a, b));
    let epochs: Vec<(String, i64, i64)> = pg
        .client()
        .query("SELECT tenant, seq, epoch FROM journal ORDER BY tenant, seq", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(String, i64, i64)> = (1..=3)
        .map(|s| (lost.to_owned(), s, 1))
        .chain([(lost.to_owned(), 4, 2), (kept.to_owned(), 1, 1)])
        .collect();
    assert_eq!(epochs, want, "A's rows at epoch 1, B's at epoch 2");
    let c = Postgres { config: PgConfig { node: "c".into(), ..pg.config } };
    let store = common::Backend::open(&c, Options::default());
    let (all, _) = replay_all(&store);
    let four: Vec<_> = all.iter().filter(|e| e.0 == lost && e.2 == 4).map(|e| e.3.clone()).collect();
    assert_eq!(four, [b"b's record 4".to_vec()]);
}

#[test]
fn a_sqlite_store_keeps_no_leases() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(store.acquire(&[0]), Err(Error::NoLeases)));
    assert!(matches!(store.renew(), Err(Error::NoLeases)));
    assert!(store.owned().is_empty() && store.lost().is_empty());
    assert_eq!(store.buckets(), 1);
    store.wait(store.append("acme", 1, b"x").unwrap()).unwrap();
}

#[test]
fn leases_renewed_in_the_background_outlast_their_length_and_end_with_the_store() {
    let Some(pg) = Postgres::new("leases_background") else { return };
    // Long enough that a renewal (every third of it) delayed by a busy machine still lands.
    let lease = Duration::from_millis(1500);
    let a = node(&pg, "a", lease);
    let b = node(&pg, "b", Duration::from_secs(30));
    assert_eq!(a.acquire(&[2]).unwrap(), [(2, 1)]);
    a.renew_in_background().unwrap();
    std::thread::sleep(lease * 3);
    assert!(b.acquire(&[2]).unwrap().is_empty(), "three lease lengths later, still a's");
    assert!(a.lost().is_empty());
    drop(a);
    assert_eq!(b.acquire(&[2]).unwrap(), [(2, 2)], "given up when the store closed");
}

/// A node that gets a bucket back after another node wrote to it reads the tenant's last
/// number again (its own memory of it is from the epoch before).
#[test]
fn a_bucket_taken_back_goes_on_from_what_the_other_node_wrote() {
    let Some(pg) = Postgres::new("leases_taken_back") else { return };
    let bucket = bucket_of("acme", pg.config.buckets);
    let a = node(&pg, "a", Duration::from_secs(30));
    let b = node(&pg, "b", Duration::from_secs(30));
    a.acquire(&[bucket]).unwrap();
    for seq in 1..=2 {
        a.wait(a.append("acme", seq, &record(seq)).unwrap()).unwrap();
    }
    lapse(&pg, bucket);
    assert_eq!(b.acquire(&[bucket]).unwrap(), [(bucket, 2)]);
    b.wait(b.append("acme", 3, &record(3)).unwrap()).unwrap();
    b.release(bucket).unwrap();
    assert_eq!(a.acquire(&[bucket]).unwrap(), [(bucket, 3)]);
    a.wait(a.append("acme", 4, &record(4)).unwrap()).unwrap();
    assert!(!a.is_stopped());
    let (seen, _) = replay_all(&a);
    assert_eq!(seen.iter().map(|e| e.2).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

/// Every statement that locks several lease rows locks them in bucket order, so none waits
/// on another in a cycle (PostgreSQL would abort one as a deadlock): here one node writes
/// to many buckets (each batch's fence locks their rows) and renews them, while another
/// asks for the same buckets in every order, and releases and takes back buckets of its
/// own.
#[test]
fn nodes_taking_renewing_and_fencing_many_buckets_at_once_never_deadlock() {
    let Some(pg) = Postgres::new("leases_lock_order") else { return };
    let buckets = pg.config.buckets;
    let a = node(&pg, "a", Duration::from_secs(30));
    let b = node(&pg, "b", Duration::from_secs(30));
    let written: Vec<u32> = (0..24).collect();
    let theirs: Vec<u32> = (24..32).collect();
    assert_eq!(a.acquire(&written).unwrap().len(), written.len());
    assert_eq!(b.acquire(&theirs).unwrap().len(), theirs.len());
    // A tenant in each bucket A writes to.
    let tenants: Vec<String> = written
        .iter()
        .map(|&bucket| (0..).map(|i| format!("t{i}")).find(|t| bucket_of(t, buckets) == bucket).unwrap())
        .collect();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seq = 0;
            while std::time::Instant::now() < until {
                seq += 1;
                let tickets: Vec<_> =
                    tenants.iter().map(|t| a.append(t, seq, &record(seq)).unwrap()).collect();
                for ticket in tickets {
                    a.wait(ticket).unwrap();
                }
            }
        });
        s.spawn(|| {
            while std::time::Instant::now() < until {
                assert!(a.renew().unwrap().is_empty(), "A keeps every lease");
            }
        });
        s.spawn(|| {
            let mut round = 0_usize;
            while std::time::Instant::now() < until {
                round += 1;
                // A's buckets in a different order each round, with B's own among them.
                let mut asked: Vec<u32> = written.iter().chain(&theirs).copied().collect();
                let turn = round % asked.len();
                asked.rotate_left(turn);
                if round.is_multiple_of(2) {
                    asked.reverse();
                }
                let got = b.acquire(&asked).unwrap();
                assert!(got.iter().all(|(bucket, _)| theirs.contains(bucket)), "B took one of A's: {got:?}");
                b.release_buckets(&theirs[round % theirs.len()..]).unwrap();
            }
        });
    });
    assert!(!a.is_stopped() && !b.is_stopped());
}

/// A batch that PostgreSQL rolls back to break a lock cycle with another session (here an
/// operator's transaction locking two lease rows against bucket order) kept nothing, so
/// the writer writes it again: the store goes on and every record is stored once.
#[test]
fn a_batch_rolled_back_to_break_a_deadlock_is_written_again() {
    let Some(pg) = Postgres::new("leases_deadlock_retry") else { return };
    let (one, other) = two_tenants(pg.config.buckets);
    let (mut low, mut high) =
        ((one, bucket_of(one, pg.config.buckets)), (other, bucket_of(other, pg.config.buckets)));
    if low.1 > high.1 {
        std::mem::swap(&mut low, &mut high);
    }
    let a = node(&pg, "a", Duration::from_secs(30));
    assert_eq!(a.acquire(&[low.1, high.1]).unwrap().len(), 2);
    a.pause_writer();
    let tickets = [a.append(low.0, 1, &record(1)).unwrap(), a.append(high.0, 1, &record(1)).unwrap()];
    let mut operator = pg.client();
    let (low_bucket, high_bucket) = (i32::try_from(low.1).unwrap(), i32::try_from(high.1).unwrap());
    // The operator's own deadlock check comes later than the writer's (1 s): the writer's
    // transaction is the one rolled back.
    operator.batch_execute("SET deadlock_timeout = '30s'; BEGIN").unwrap();
    let operator_pid: i32 = operator.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    operator.execute("SELECT 1 FROM leases WHERE bucket = $1 FOR UPDATE", &[&high_bucket]).unwrap();
    a.resume_writer();
    // The batch's fence holds the low bucket's row and waits for the high one's.
    let mut observer = pg.client();
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))";
    let since = std::time::Instant::now();
    while observer.query_one(waiting, &[&operator_pid]).unwrap().get::<_, i64>(0) == 0 {
        assert!(since.elapsed() < Duration::from_secs(20), "the writer never waited for the lease row");
        std::thread::sleep(Duration::from_millis(20));
    }
    operator.execute("SELECT 1 FROM leases WHERE bucket = $1 FOR UPDATE", &[&low_bucket]).unwrap();
    operator.batch_execute("COMMIT").unwrap();
    for ticket in tickets {
        a.wait(ticket).unwrap();
    }
    assert!(!a.is_stopped());
    let mut seen = Vec::new();
    a.replay_buckets(&[low.1, high.1], |e| {
        if let waitline_store::Entry::Record { tenant, seq, .. } = e {
            seen.push((tenant.to_owned(), seq));
        }
        Ok(())
    })
    .unwrap();
    seen.sort();
    let mut expected = vec![(low.0.to_owned(), 1), (high.0.to_owned(), 1)];
    expected.sort();
    assert_eq!(seen, expected);
}

/// How many times the writer tried a batch that PostgreSQL failed with `code` each time (a
/// trigger on the journal raises it, counting in a sequence, which no rollback undoes),
/// and what the append's wait got.
fn attempts_of_a_batch_failing_with(pg: &Postgres, code: &str) -> (i64, Error) {
    let a = node(pg, "a", Duration::from_secs(30));
    let tenant = "acme";
    a.acquire(&[bucket_of(tenant, pg.config.buckets)]).unwrap();
    pg.client()
        .batch_execute(&format!(
            "CREATE SEQUENCE attempts; \
             CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 PERFORM nextval('attempts'); RAISE EXCEPTION 'refused' USING ERRCODE = '{code}'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION refuse()"
        ))
        .unwrap();
    let failed = a.wait(a.append(tenant, 1, &record(1)).unwrap()).unwrap_err();
    assert!(a.is_stopped());
    (pg.client().query_one("SELECT last_value FROM attempts", &[]).unwrap().get(0), failed)
}

/// A conflict that comes back every time is not a passing one: the batch is tried again
/// three times, then the store stops. Any other failure stops it at the first.
#[test]
fn a_batch_is_tried_again_three_times_for_a_conflict_and_never_for_another_failure() {
    let Some(pg) = Postgres::new("leases_conflict_retries") else { return };
    let (attempts, failed) = attempts_of_a_batch_failing_with(&pg, "40P01");
    assert_eq!(attempts, 4, "{failed}");
    assert!(failed.to_string().contains("40P01"), "{failed}");
    let Some(pg) = Postgres::new("leases_other_failure") else { return };
    let (attempts, failed) = attempts_of_a_batch_failing_with(&pg, "P0001");
    assert_eq!(attempts, 1, "{failed}");
}
