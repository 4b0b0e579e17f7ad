//! Three real `waitline serve` nodes sharing one PostgreSQL (`--node-url`), on loopback
//! ports, with several tenants so that every node owns buckets:
//!
//! - **failover**: the crash test's 16 clients, spread over the nodes and the tenants;
//!   `kill -9` of the node owning the busiest bucket at a seeded moment; the other nodes
//!   serve its tenants within twice the lease; then the crash test's checks (nothing
//!   acknowledged lost, dense positions, order within a band, a command in flight retried
//!   with its `command_id` applied once), and the clients of the other buckets went on;
//! - **fencing**: the owner of a bucket stopped (`SIGSTOP`) past its lease, another node
//!   takes the bucket over and acknowledges writes, the old owner resumed (`SIGCONT`): it
//!   answers that tenant's requests as the new owner does or 503 `10007`, never from what it
//!   held, and the journal holds no record of its old epoch written after it stopped.
//!
//! `WAITLINE_FAILOVER_SEEDS` sets how many seeds run (default 2), `WAITLINE_FAILOVER_SEED`
//! runs one. Each test has a database of its own on the server of
//! `WAITLINE_TEST_POSTGRES_URL` (skipped without it, except in CI).
#![allow(clippy::unwrap_used, clippy::zombie_processes)] // nodes are killed and waited for on drop

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::crash_clients::{Client, Rng, Target, check_acknowledged, run_client, send};
use common::process::{Process, free_ports};
use serde_json::{Value, json};
use waitline_store::test_support::fresh_database;

const SECRET: &str = "a-cluster-secret-of-test";
/// The tenants every node knows; those the clients use are chosen among them so that each
/// node owns some. Each tenant's bucket goes to one node of three by rendezvous hashing of
/// node ids that change each run: with 24, a node was once the preferred owner of only one
/// (the test needs two); with 72 a node owning fewer than two is a one in 10^10 event.
const OFFERED: usize = 72;
const PER_NODE: usize = 2;
const NODES: usize = 3;
const CLIENTS: usize = 16;
const BUCKETS: u32 = 256;

/// The tests run one at a time: each runs three nodes, and a machine busy with two clusters
/// delays lease renewals beyond what the timing checks allow.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The API key of `tenant` (long enough not to be warned about).
fn key_of(tenant: &str) -> String {
    format!("failover-test-key-of-tenant-{tenant}")
}

/// A client that gives up on an answer soon: polling through a node that forwards to an
/// owner just stopped must not wait for the forwarding's own timeout.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_millis(250)).build().unwrap()
}

fn bucket(tenant: &str) -> u32 {
    waitline_store::bucket::bucket_of(tenant, BUCKETS)
}

/// A node on loopback `port` (free), knowing the `OFFERED` tenants.
fn start_node(pg: &str, lease: Duration, port: u16) -> Process {
    let url = format!("http://127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--postgres-url",
        pg,
        "--node-url",
        &url,
        "--cluster-secret",
        SECRET,
        "--lease-ms",
        &lease.as_millis().to_string(),
        "--signing-key",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ]
    .map(str::to_owned)
    .to_vec();
    for i in 0..OFFERED {
        args.extend(["--api-key".to_owned(), format!("{}:t{i}", key_of(&format!("t{i}")))]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Process::start(&args);
    assert_eq!(node.url, url);
    node
}

/// Three nodes, started side by side (each waits for its share at start).
fn start_nodes(pg: &str, lease: Duration) -> Vec<Process> {
    let started: Vec<_> = free_ports(NODES)
        .into_iter()
        .map(|port| {
            let pg = pg.to_owned();
            std::thread::spawn(move || start_node(&pg, lease, port))
        })
        .collect();
    started.into_iter().map(|t| t.join().unwrap()).collect()
}

/// A store handle that only reads who owns what.
fn observer(pg: &str, lease: Duration) -> waitline_store::Store {
    let config = waitline_store::PgConfig {
        node: "observer".into(),
        lease,
        ..waitline_store::PgConfig::new(pg.to_owned())
    };
    waitline_store::Store::open_postgres(&config, waitline_store::Options::default()).unwrap()
}

/// The URL of the node owning `tenant`'s bucket now (blocking: a query).
fn owner_of(store: &waitline_store::Store, tenant: &str) -> Option<String> {
    store.owner(bucket(tenant)).unwrap().map(|n| n.url)
}

/// Once every offered tenant's bucket is owned by its preferred node among `nodes` (the
/// shares settled: nothing moves any more), each tenant's owner's URL; within `limit`.
async fn settled(
    store: &waitline_store::Store,
    nodes: &[&Process],
    limit: Duration,
) -> BTreeMap<String, String> {
    let started = Instant::now();
    loop {
        let live = store.live_nodes().unwrap();
        let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
        let mut owners = BTreeMap::new();
        for i in 0..OFFERED {
            let tenant = format!("t{i}");
            let b = bucket(&tenant);
            if let Some(owner) = store.owner(b).unwrap() {
                if Some(owner.id.as_str()) == waitline_store::placement::preferred_owner(b, &ids)
                    && nodes.iter().any(|n| n.url == owner.url)
                {
                    owners.insert(tenant, owner.url);
                }
            }
        }
        if owners.len() == OFFERED && live.len() == nodes.len() {
            return owners;
        }
        assert!(started.elapsed() < limit, "the shares did not settle within {limit:?}: {owners:?} {live:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `PER_NODE` tenants owned by each node, in node order.
fn chosen_tenants(owners: &BTreeMap<String, String>, nodes: &[Process]) -> Vec<String> {
    let mut chosen = Vec::new();
    for node in nodes {
        let own: Vec<&String> = owners.iter().filter(|(_, o)| **o == node.url).map(|(t, _)| t).collect();
        assert!(
            own.len() >= PER_NODE,
            "node {} owns {} of {OFFERED} tenants: {owners:?}",
            node.url,
            own.len()
        );
        chosen.extend(own.into_iter().take(PER_NODE).cloned());
    }
    chosen
}

/// Waits until `tenant` is served through `base` (an answer that is not a 503), within
/// `limit`; returns when.
async fn until_served(http: &reqwest::Client, base: &str, tenant: &str, limit: Duration) -> Instant {
    let started = Instant::now();
    loop {
        let answer = send(http, base, &key_of(tenant), "GET", "/queues", None).await;
        if let Some((status, body)) = answer {
            if status != 503 {
                assert_eq!(status, 200, "{tenant} through {base}: {body}");
                return Instant::now();
            }
        }
        assert!(started.elapsed() < limit, "{tenant} not served through {base} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("WAITLINE_FAILOVER_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let n = std::env::var("WAITLINE_FAILOVER_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
            (1..=n).collect()
        }
    }
}

/// How the busiest bucket's owner goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    /// `kill -9`.
    Killed,
    /// `SIGSTOP`, then `SIGCONT` once the others have taken its buckets over.
    Paused,
}

/// One seed of the failover test; returns how many acknowledged calls were checked.
async fn fail_over_and_check(pg: &str, seed: u64, failure: Failure) -> usize {
    let lease = Duration::from_millis(2000);
    let mut nodes = start_nodes(pg, lease);
    let store = observer(pg, lease);
    let owners = settled(&store, &nodes.iter().collect::<Vec<_>>(), lease * 4).await;
    let tenants = chosen_tenants(&owners, &nodes);
    let acked: Vec<Arc<AtomicU64>> = tenants.iter().map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Client n: tenant (n + seed) mod 6 (so some tenants are busier, which ones by the
    // seed), through node n mod 3 (not always the tenant's owner: forwarded then).
    let place = |n: usize| ((n + seed as usize) % tenants.len(), n % NODES);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (t, node) = place(n);
            let target = Target {
                base: nodes[node].base.clone(),
                key: key_of(&tenants[t]),
                may_switch: true,
                stop: stop.clone(),
                acked: acked[t].clone(),
            };
            tokio::spawn(run_client(n, seed, target))
        })
        .collect();
    let mut rng = Rng(seed | 1);
    tokio::time::sleep(Duration::from_millis(300 + rng.below(1000))).await;
    // The busiest bucket now: the most commands acknowledged.
    let mut by_bucket: BTreeMap<u32, u64> = BTreeMap::new();
    for (t, count) in tenants.iter().zip(&acked) {
        *by_bucket.entry(bucket(t)).or_default() += count.load(Ordering::SeqCst);
    }
    let (&busiest, _) = by_bucket.iter().max_by_key(|(_, n)| **n).unwrap();
    let victim_url = store.owner(busiest).unwrap().unwrap().url;
    let victim = nodes.iter().position(|n| n.url == victim_url).unwrap();
    match failure {
        Failure::Killed => nodes[victim].kill_9(),
        Failure::Paused => nodes[victim].signal("STOP"),
    }
    let killed = Instant::now();

    // The others serve the dead node's tenants within twice the lease (through a
    // surviving node: forwarded to the new owner once it holds the bucket).
    let http = reqwest::Client::new();
    let survivor = &nodes[(victim + 1) % NODES];
    let moved: Vec<&String> = tenants.iter().filter(|t| owners[*t] == victim_url).collect();
    assert!(!moved.is_empty());
    let mut slowest = Duration::ZERO;
    for tenant in &moved {
        let served = until_served(&impatient(), &survivor.base, tenant, lease * 4).await;
        slowest = slowest.max(served - killed);
    }
    assert!(
        slowest < lease * 2,
        "seed {seed}: taken over in {slowest:?}, more than twice the lease {lease:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let clients: Vec<Client> =
        futures_util::future::join_all(clients).await.into_iter().map(Result::unwrap).collect();

    // The clients of the other buckets, through surviving nodes, should go on undisturbed;
    // since the merge of the owner map and the share turns' deadline one of them sometimes
    // meets a 503 during the takeover (docs/cluster.md, "seen by the tests"): counted and
    // told, its command checked like any other in flight.
    let disturbed: Vec<usize> = (0..clients.len())
        .filter(|&n| {
            let (t, node) = place(n);
            node != victim && owners[&tenants[t]] != victim_url && clients[n].in_flight.is_some()
        })
        .collect();
    // A bucket a survivor took as abandoned may then move to its preferred survivor (one
    // more short switch): the checks wait until nothing moves any more.
    let survivors: Vec<&Process> =
        nodes.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, n)| n).collect();
    settled(&store, &survivors, lease * 4).await;
    for tenant in &tenants {
        until_served(&impatient(), &survivor.base, tenant, lease * 2).await;
    }
    let mut by_tenant: Vec<Vec<Client>> = tenants.iter().map(|_| Vec::new()).collect();
    for (n, c) in clients.into_iter().enumerate() {
        by_tenant[place(n).0].push(c);
    }
    let mut checked = 0;
    for (tenant, clients) in tenants.iter().zip(&mut by_tenant) {
        checked += check_acknowledged(&http, seed, &survivor.base, &key_of(tenant), clients).await;
    }
    eprintln!(
        "seed {seed}: node {victim} {failure:?} (bucket {busiest}, {} of the clients' tenants), taken over in {slowest:?}, {checked} acknowledged calls checked, clients of other buckets stopped by a 503: {disturbed:?}",
        moved.len()
    );
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_loses_nothing_acknowledged_and_the_others_take_over() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let seeds = seeds();
    let mut total = 0;
    for seed in &seeds {
        let Some(pg) = fresh_database(&format!("failover_{seed}")) else { return };
        total += fail_over_and_check(&pg, *seed, Failure::Killed).await;
    }
    assert!(total > 0, "no acknowledged call was checked");
    eprintln!("{} seeds, {total} acknowledged calls checked after kill -9 of a node", seeds.len());
}

/// The same with the owner paused (`SIGSTOP`) under the clients' load instead of killed:
/// a writer paused between its fencing check and its commit holds the lease rows' locks
/// until PostgreSQL ends its idle transaction (one lease), so the takeover still comes
/// within twice the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_while_writing_is_taken_over_within_twice_the_lease() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(pg) = fresh_database("failover_paused") else { return };
    assert!(fail_over_and_check(&pg, 1, Failure::Paused).await > 0);
}

/// The journal rows of `tenant`: (first number, last number, epoch), in order.
fn journal_rows(pg: &str, tenant: &str) -> Vec<(i64, i64, i64)> {
    let (pg, tenant) = (pg.to_owned(), tenant.to_owned());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&pg, postgres::NoTls).unwrap();
        client
            .query("SELECT seq, last, epoch FROM waitline.journal WHERE tenant = $1 ORDER BY seq", &[&tenant])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    })
    .join()
    .unwrap()
}

/// The members of `queue` as (call, position), or the status when it is not a 200.
async fn queue_members(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    queue: &str,
) -> Result<Vec<(String, u64)>, (u16, Value)> {
    let path = format!("/queues/{queue}/calls");
    match send(http, base, &key_of(tenant), "GET", &path, None).await.unwrap() {
        (200, page) => Ok(page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (m["call_control_id"].as_str().unwrap().to_owned(), m["queue_position"].as_u64().unwrap())
            })
            .collect()),
        other => Err(other),
    }
}

async fn dial(http: &reqwest::Client, base: &str, tenant: &str) -> String {
    let body = json!({"connection_id": "fencing", "from": "+15550001", "to": "+15550002"});
    let (status, v) = send(http, base, &key_of(tenant), "POST", "/calls", Some(&body)).await.unwrap();
    assert_eq!(status, 200, "{v}");
    v["data"]["call_control_id"].as_str().unwrap().to_owned()
}

async fn act(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    call: &str,
    action: &str,
    body: Value,
) -> (u16, Value) {
    let path = format!("/calls/{call}/actions/{action}");
    send(http, base, &key_of(tenant), "POST", &path, Some(&body)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_its_lease_writes_nothing_and_steps_down() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(pg) = fresh_database("failover_fencing") else { return };
    let lease = Duration::from_millis(1500);
    let nodes = start_nodes(&pg, lease);
    let store = observer(&pg, lease);
    let owners = settled(&store, &nodes.iter().collect::<Vec<_>>(), lease * 4).await;
    let tenant = chosen_tenants(&owners, &nodes)[0].clone();
    let (old, other) = (&nodes[0], &nodes[1]);
    assert_eq!(owners[&tenant], old.url);
    let http = reqwest::Client::new();
    // Through its owner: two calls queued.
    let (first, second) = (dial(&http, &old.base, &tenant).await, dial(&http, &old.base, &tenant).await);
    for call in [&first, &second] {
        let (s, v) = act(&http, &old.base, &tenant, call, "enqueue", json!({"queue_name": "support"})).await;
        assert_eq!(s, 200, "{v}");
    }
    let before = journal_rows(&pg, &tenant);
    let &(_, head, old_epoch) = before.last().unwrap();

    old.signal("STOP");
    let stopped = Instant::now();
    let served = until_served(&impatient(), &other.base, &tenant, lease * 4).await;
    let switch = served - stopped;
    assert!(switch < lease * 2, "taken over {switch:?} after the stop, more than twice the lease {lease:?}");
    // The new owner acknowledges writes: the first call hung up, a third one queued.
    let third = dial(&http, &other.base, &tenant).await;
    let (s, v) = act(&http, &other.base, &tenant, &third, "enqueue", json!({"queue_name": "support"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = act(&http, &other.base, &tenant, &first, "hangup", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(owner_of(&store, &tenant).unwrap(), old.url);
    let expected = vec![(second.clone(), 1), (third.clone(), 2)];
    assert_eq!(queue_members(&http, &other.base, &tenant, "support").await.unwrap(), expected);

    // Requests sent to the stopped node wait in its socket; they are the first it handles
    // when it resumes, before it has renewed anything.
    let waiting: Vec<_> = (0..12)
        .map(|i| {
            let (http, base, tenant) = (http.clone(), old.base.clone(), tenant.clone());
            let second = second.clone();
            tokio::spawn(async move {
                match i {
                    0 => {
                        let body = json!({"queue_name": "support", "command_id": "late-leave"});
                        let path = format!("/calls/{second}/actions/leave_queue");
                        let (s, v) =
                            send(&http, &base, &key_of(&tenant), "POST", &path, Some(&body)).await.unwrap();
                        (s, v, true)
                    }
                    _ => {
                        let (s, v) =
                            send(&http, &base, &key_of(&tenant), "GET", "/queues/support/calls", None)
                                .await
                                .unwrap();
                        (s, v, false)
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    old.signal("CONT");
    let mut left = false;
    for answer in futures_util::future::join_all(waiting).await {
        let (status, body, is_write) = answer.unwrap();
        if status == 503 {
            assert_eq!(body["errors"][0]["code"], "10007", "{body}");
            continue;
        }
        assert_eq!(status, 200, "{body}");
        if is_write {
            left = true; // forwarded to the new owner, which applied it
            continue;
        }
        // Forwarded: the new owner's queue (the late leave may have come first).
        let members: Vec<&str> =
            body["data"].as_array().unwrap().iter().map(|m| m["call_control_id"].as_str().unwrap()).collect();
        assert!(
            members == [second.as_str(), third.as_str()] || members == [third.as_str()],
            "the resumed node answered from what it held: {body}"
        );
    }
    // It stepped down and answers as the owner does; then, alive again, it is the preferred
    // owner of the bucket once more: the new owner releases it, and it takes it back at a
    // newer epoch, loading what the store holds.
    settled(&store, &nodes.iter().collect::<Vec<_>>(), lease * 4).await;
    until_served(&impatient(), &old.base, &tenant, lease * 2).await;
    // The late write, retried with its command id through another node (once the bucket
    // is back and loaded): applied once.
    let body = json!({"queue_name": "support", "command_id": "late-leave"});
    let path = format!("/calls/{second}/actions/leave_queue");
    let (s, v) = send(&http, &other.base, &key_of(&tenant), "POST", &path, Some(&body)).await.unwrap();
    assert_eq!(s, 200, "{v} (applied before: {left})");
    let expected = vec![(third.clone(), 1)];
    assert_eq!(queue_members(&http, &other.base, &tenant, "support").await.unwrap(), expected);

    for path in ["/queues/support/calls".to_owned(), format!("/calls/{first}"), format!("/calls/{second}")] {
        let through_old =
            timeless(send(&http, &old.base, &key_of(&tenant), "GET", &path, None).await.unwrap());
        let through_other =
            timeless(send(&http, &other.base, &key_of(&tenant), "GET", &path, None).await.unwrap());
        assert_eq!(through_old, through_other, "{path}");
        assert_eq!(through_old.0, 200, "{path}: {}", through_old.1);
    }
    let (s, v) = act(&http, &old.base, &tenant, &third, "hangup", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(queue_members(&http, &other.base, &tenant, "support").await.unwrap().is_empty());

    // The journal: the old owner's history up to the stop, then only the new owner's (a
    // newer epoch), numbers dense.
    let after = journal_rows(&pg, &tenant);
    assert_eq!(after[..before.len()], before[..], "the history before the stop is kept as it was");
    let mut next = 1;
    for &(seq, last, epoch) in &after {
        assert_eq!(seq, next, "{after:?}");
        next = last + 1;
        if seq > head {
            assert!(epoch > old_epoch, "a record of the old epoch {old_epoch} after the stop: {after:?}");
        }
    }
    assert!(after.len() > before.len(), "the new owner's writes are in the journal");
    eprintln!("fencing: taken over {switch:?} after SIGSTOP (lease {lease:?}), stale answers: none");
}

/// A read with what moves as time passes taken out: a member's whole seconds waited, which
/// two reads a moment apart can see on either side of a second.
fn timeless((status, mut body): (u16, Value)) -> (u16, Value) {
    if let Some(members) = body["data"].as_array_mut() {
        for member in members.iter_mut().filter_map(Value::as_object_mut) {
            member.remove("wait_time_secs");
        }
    }
    (status, body)
}
