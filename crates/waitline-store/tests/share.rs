//! Several nodes sharing the buckets of one PostgreSQL store: each takes those it is the
//! preferred owner of (rendezvous hashing over the live nodes), gives up those another live
//! node prefers, and takes over the buckets of a node that stopped within twice the lease,
//! with everything it had written. Store handles on one schema stand for the nodes.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

mod common;

use common::{Postgres, record};
use waitline_store::placement::preferred_buckets;
use waitline_store::{Entry, Error, Options, PgConfig, Store};

fn node(pg: &Postgres, node: &str, lease: Duration) -> Store {
    let config = PgConfig { node: node.into(), lease, ..pg.config.clone() };
    Store::open_postgres(&config, Options::default()).unwrap()
}

fn url(node: &str) -> String {
    format!("http://127.0.0.1:1/{node}")
}

/// One turn of each node, releasing what another node prefers.
fn turn(nodes: &[(&str, &Store)]) {
    for (name, store) in nodes {
        let share = store.take_share(&url(name)).unwrap();
        for bucket in share.surplus {
            store.release(bucket).unwrap();
        }
    }
}

fn buckets(store: &Store) -> Vec<u32> {
    store.owned().iter().map(|o| o.0).collect()
}

#[test]
fn three_nodes_end_up_with_their_preferred_buckets_and_know_each_other() {
    let Some(pg) = Postgres::new("share_three_nodes") else { return };
    let lease = Duration::from_secs(30);
    let (a, b, c) = (node(&pg, "a", lease), node(&pg, "b", lease), node(&pg, "c", lease));
    // Alone, a takes every bucket; b and c find them all held.
    assert_eq!(a.take_share(&url("a")).unwrap().gained.len(), 256);
    assert!(b.take_share(&url("b")).unwrap().gained.is_empty());
    assert!(c.take_share(&url("c")).unwrap().gained.is_empty());
    // a now sees b and c live: what they prefer is its surplus, released, then taken.
    let share = a.take_share(&url("a")).unwrap();
    let live = ["a", "b", "c"];
    let mut others = preferred_buckets(256, "b", &live);
    others.extend(preferred_buckets(256, "c", &live));
    others.sort_unstable();
    assert_eq!(share.surplus, others);
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    turn(&nodes);
    for (name, store) in nodes {
        assert_eq!(buckets(store), preferred_buckets(256, name, &live), "{name}");
    }
    let ids: Vec<String> = a.live_nodes().unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, live);
    let of_b = preferred_buckets(256, "b", &live)[0];
    let owner = c.owner(of_b).unwrap().unwrap();
    assert_eq!((owner.id.as_str(), owner.url), ("b", url("b")));
    // Every bucket's owner in one query, as each node holds it.
    let owners = c.owners().unwrap();
    assert_eq!(owners.len(), 256);
    for (name, store) in nodes {
        let held: Vec<u32> =
            owners.iter().filter(|(_, n)| n.id == name && n.url == url(name)).map(|o| o.0).collect();
        let mut held = held;
        held.sort_unstable();
        assert_eq!(held, buckets(store), "{name}");
    }
    // Settled: a further turn moves nothing.
    for (name, store) in nodes {
        let share = store.take_share(&url(name)).unwrap();
        assert!(share.gained.is_empty() && share.surplus.is_empty() && share.lost.is_empty(), "{share:?}");
    }
    // A node that leaves is no longer counted live, at once.
    c.leave().unwrap();
    let ids: Vec<String> = a.live_nodes().unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn the_buckets_of_a_stopped_node_are_taken_within_twice_the_lease_with_what_it_wrote() {
    let Some(pg) = Postgres::new("share_node_stops") else { return };
    // Long enough that a turn of three nodes on a busy machine stays well within it.
    let lease = Duration::from_millis(1500);
    let (a, b, c) = (node(&pg, "a", lease), node(&pg, "b", lease), node(&pg, "c", lease));
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    let live = ["a", "b", "c"];
    for _ in 0..10 {
        turn(&nodes);
        if buckets(&c) == preferred_buckets(256, "c", &live) {
            break;
        }
    }
    let of_c = buckets(&c);
    assert_eq!(of_c, preferred_buckets(256, "c", &live));
    // A tenant of c's, written and acknowledged by c.
    let tenant = (0..).map(|i| format!("t{i}")).find(|t| of_c.contains(&c.bucket_of(t))).unwrap();
    for n in 1..=3 {
        c.wait(c.append(&tenant, n, &record(n)).unwrap()).unwrap();
    }
    // c stops renewing (as a dead node would); a and b go on taking turns.
    let stopped = Instant::now();
    let mut taken = Vec::new();
    while taken.len() < of_c.len() {
        assert!(
            stopped.elapsed() < lease * 2,
            "taken {} of {} buckets in twice the lease",
            taken.len(),
            of_c.len()
        );
        std::thread::sleep(lease / 6);
        for (name, store) in &nodes[..2] {
            let share = store.take_share(&url(name)).unwrap();
            taken.extend(share.gained.iter().map(|g| g.0).filter(|g| of_c.contains(g)));
        }
    }
    // The new owner replays what c acknowledged.
    let owner = [&a, &b].into_iter().find(|s| buckets(s).contains(&c.bucket_of(&tenant))).unwrap();
    let mut seqs = Vec::new();
    owner
        .replay_buckets(&[c.bucket_of(&tenant)], |e| {
            if let Entry::Record { tenant: t, seq, .. } = e {
                assert_eq!(t, tenant);
                seqs.push(seq);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(seqs, [1, 2, 3]);
    // c, waking, writes nothing more: fencing refuses it, and its next turn finds the loss.
    let refused = c.wait(c.append(&tenant, 4, &record(4)).unwrap());
    assert!(matches!(refused, Err(Error::LeaseLost { .. })), "{refused:?}");
    let share = c.take_share(&url("c")).unwrap();
    assert!(share.gained.is_empty(), "every bucket is held by a or b: {share:?}");
    assert!(c.owned().is_empty());
}
