//! Several server nodes sharing one PostgreSQL store (`--node-url`), served on loopback
//! ports in this process: each takes its share of the buckets and serves only those
//! tenants; when one node goes, another takes its buckets over and serves its tenants'
//! queued calls. Each test has a database of its own on the server of
//! `WAITLINE_TEST_POSTGRES_URL` (skipped without it, except in CI).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Receiver, Server, code};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use waitline_server::auth::KeySpec;
use waitline_server::cluster_secret::ClusterSecret;
use waitline_server::config::{ClusterNode, Config};
use waitline_server::webhook_destination::DestinationPolicy;
use waitline_store::test_support::{drop_connections, execute, fresh_database};

const SECRET: &str = "a-cluster-secret-of-test";
/// Enough tenants that every node is the preferred owner of some of their buckets: with 8,
/// one of three nodes owned none of them in about one run in ten (each tenant's bucket goes
/// to one node of three by rendezvous hashing of node ids that change each run), and the
/// tests that need a tenant on each node could not settle. With 24: about one in 5,000.
const TENANTS: usize = 24;
const BUCKETS: u32 = 256;

fn key_of(tenant: usize) -> String {
    format!("key-of-tenant-{tenant}")
}

fn tenant(i: usize) -> String {
    format!("t{i}")
}

/// A node of the cluster on a fresh loopback port, with one API key per tenant.
async fn node(url: &str, lease: Duration) -> Server {
    node_with(url, lease, |_| {}).await
}

/// [`node`] with `tweak` applied to its configuration.
async fn node_with(url: &str, lease: Duration, tweak: impl FnOnce(&mut Config)) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = Config {
        postgres_url: Some(url.to_owned()),
        data_dir: None,
        lease,
        cluster: Some(ClusterNode { url: node_url, secret: ClusterSecret::new(SECRET).unwrap() }),
        api_keys: (0..TENANTS).map(|i| KeySpec::plain(&key_of(i), &tenant(i))).collect(),
        ..Config::default()
    };
    tweak(&mut config);
    Server::start_on(listener, config).await
}

/// Waits until `done` holds, at most `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store handle that only reads who owns what (live nodes by the nodes' `lease`).
fn observer(url: &str, lease: Duration) -> waitline_store::Store {
    let config = waitline_store::PgConfig {
        node: "observer".into(),
        lease,
        ..waitline_store::PgConfig::new(url.to_owned())
    };
    waitline_store::Store::open_postgres(&config, waitline_store::Options::default()).unwrap()
}

fn bucket(tenant: &str) -> u32 {
    waitline_store::bucket::bucket_of(tenant, BUCKETS)
}

/// The node URL owning each tenant's bucket, once every tenant's bucket is owned by its
/// preferred node, one of `nodes`, and each node owns some of them; within `limit`.
async fn settled_owners(store: &waitline_store::Store, nodes: &[&Server], limit: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let live = store.live_nodes().unwrap();
        let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
        let owners: Vec<Option<String>> = (0..TENANTS)
            .map(|i| {
                let b = bucket(&tenant(i));
                let owner = store.owner(b).unwrap()?;
                (Some(owner.id.as_str()) == waitline_store::placement::preferred_owner(b, &ids))
                    .then_some(owner.url)
            })
            .collect();
        let all_owned = owners.iter().all(|o| o.as_ref().is_some_and(|u| nodes.iter().any(|n| &n.base == u)));
        let each_owns = nodes.iter().all(|n| owners.iter().any(|o| o.as_deref() == Some(n.base.as_str())));
        if all_owned && each_owns {
            return owners.into_iter().map(Option::unwrap).collect();
        }
        assert!(
            started.elapsed() < limit,
            "the shares did not settle within {limit:?}: {owners:?} {live:?} {:?}",
            (0..TENANTS).map(|i| store.owner(bucket(&tenant(i))).unwrap()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node holding every bucket, and an observer.
async fn one_node(url: &str, lease: Duration) -> (Server, waitline_store::Store) {
    let first = node(url, lease).await;
    let store = observer(url, lease);
    settled_owners(&store, &[&first], lease * 10).await;
    (first, store)
}

/// A second node joining `first`, once their shares settled, and each tenant's owner's URL.
async fn joining(
    url: &str,
    lease: Duration,
    first: &Server,
    store: &waitline_store::Store,
) -> (Server, Vec<String>) {
    let second = node(url, lease).await;
    let owners = settled_owners(store, &[first, &second], lease * 10).await;
    (second, owners)
}

/// A tenant whose bucket `server` owns, of `owners` (each tenant's owner's URL).
fn owned_by(owners: &[String], server: &Server) -> usize {
    owners.iter().position(|o| *o == server.base).unwrap()
}

/// Two nodes with their shares settled, an observer, and each tenant's owner's URL.
async fn two_nodes(url: &str, lease: Duration) -> (Server, Server, waitline_store::Store, Vec<String>) {
    let first = node(url, lease).await;
    let second = node(url, lease).await;
    let store = observer(url, lease);
    let owners = settled_owners(&store, &[&first, &second], lease * 10).await;
    (first, second, store, owners)
}

/// Sends until the answer is not a 503 (a bucket still loading), within two seconds.
async fn until_served(
    server: &Server,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let (s, v) = server.req(method, path, Some(key), body.clone()).await;
        if s != 503 || started.elapsed() > Duration::from_secs(2) {
            return (s, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call dialled for tenant `i` on `server` (once the tenant is served), by its id.
async fn dialled(server: &Server, i: usize) -> String {
    let (s, v) = until_served(server, "POST", "/v2/calls", &key_of(i), Some(dial())).await;
    assert_eq!(s, 200, "tenant {i}: {v}");
    v["data"]["call_control_id"].as_str().unwrap().to_owned()
}

fn dial() -> Value {
    json!({"to": "+1", "from": "+2", "connection_id": "app"})
}

/// Two nodes share the buckets, each owning some tenants: every command sent to the node
/// not owning the tenant (dial, enqueue, bridge, reads, an error) answers as its owner does.
/// One node stops and its leases are left as a `kill -9` leaves them: the other takes its
/// buckets within twice the lease and serves their tenants' queued calls.
#[tokio::test]
async fn two_nodes_share_the_buckets_and_one_takes_over_the_other() {
    let Some(url) = fresh_database("cluster_share") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, store, owners) = two_nodes(&url, lease).await;
    let by_url = |u: &str| if u == first.base { &first } else { &second };
    let other = |u: &str| if u == first.base { &second } else { &first };
    let mut queued = Vec::new();
    for (i, owner_url) in owners.iter().enumerate() {
        let (owner, wrong, key) = (by_url(owner_url), other(owner_url), key_of(i));
        // Every command sent to the node not owning the tenant is forwarded to its owner.
        let (s, v) = until_served(wrong, "POST", "/v2/calls", &key, Some(dial())).await;
        assert_eq!(s, 200, "tenant {i} through the other node: {v}");
        let caller = v["data"]["call_control_id"].as_str().unwrap().to_owned();
        let (s, v) = wrong.req("POST", "/v2/calls", Some(&key), Some(dial())).await;
        assert_eq!(s, 200, "{v}");
        let agent = v["data"]["call_control_id"].as_str().unwrap().to_owned();
        let (s, v) = wrong.req("POST", "/v2/calls", Some(&key), Some(dial())).await;
        assert_eq!(s, 200, "{v}");
        let waiting = v["data"]["call_control_id"].as_str().unwrap().to_owned();
        for call in [&caller, &waiting] {
            let path = format!("/v2/calls/{call}/actions/enqueue");
            let (s, v) = wrong.req("POST", &path, Some(&key), Some(json!({"queue_name": "support"}))).await;
            assert_eq!(s, 200, "{v}");
        }
        let bridge = json!({"queue": "support"});
        let (s, v) =
            wrong.req("POST", &format!("/v2/calls/{agent}/actions/bridge"), Some(&key), Some(bridge)).await;
        assert_eq!(s, 200, "{v}");
        // Reads and errors answer the same on both nodes.
        for path in [
            "/v2/queues/support".to_owned(),
            "/v2/queues/support/calls".to_owned(),
            format!("/v2/calls/{caller}"),
            "/v2/calls/no-such-call".to_owned(),
        ] {
            let (s_owner, v_owner) = owner.req("GET", &path, Some(&key), None).await;
            let (s_wrong, v_wrong) = wrong.req("GET", &path, Some(&key), None).await;
            assert_eq!((s_wrong, &v_wrong), (s_owner, &v_owner), "tenant {i}: {path}");
        }
        let (_, v) = owner.req("GET", &format!("/v2/calls/{caller}"), Some(&key), None).await;
        assert_eq!(v["data"]["state"], "bridged", "{v}");
        let (_, v) = owner.req("GET", "/v2/queues/support/calls", Some(&key), None).await;
        let ids: Vec<&str> =
            v["data"].as_array().unwrap().iter().map(|c| c["call_control_id"].as_str().unwrap()).collect();
        assert_eq!(ids, [waiting.as_str()], "{v}");
        queued.push(waiting);
    }
    crashed(&url, lease, second).await;
    let stopped = Instant::now();
    let owners = settled_owners(&store, &[&first], lease * 2 + Duration::from_millis(500)).await;
    assert!(owners.iter().all(|o| *o == first.base));
    for (i, call) in queued.iter().enumerate() {
        let (s, v) = until_served(&first, "GET", "/v2/queues/support/calls", &key_of(i), None).await;
        assert_eq!(s, 200, "tenant {i} after the takeover: {v}");
        let ids: Vec<&str> =
            v["data"].as_array().unwrap().iter().map(|c| c["call_control_id"].as_str().unwrap()).collect();
        assert_eq!(ids, [call.as_str()], "tenant {i}'s queued call, nothing acknowledged lost");
    }
    assert!(stopped.elapsed() < lease * 2 + Duration::from_secs(2), "{:?}", stopped.elapsed());
    first.stop().await;
}

/// A write whose bucket is given up between the check that the node serves its tenant and
/// its append (a share turn releasing it meanwhile) is refused by the store with no ticket
/// to fail: it is answered 503 `10007`, never 200, and the bucket taken again holds only
/// what was stored.
#[tokio::test]
async fn a_write_racing_its_buckets_release_is_never_acknowledged_unstored() {
    let Some(url) = fresh_database("cluster_release_race") else { return };
    let lease = Duration::from_millis(1500);
    let (first, _store) = one_node(&url, lease).await;
    let (key, name) = (key_of(0), tenant(0));
    let call = dialled(&first, 0).await;
    // The lease given up, the bucket still counted served: as between the check and the append.
    first.durability.release_bucket_of(&name);
    let enqueue = format!("/v2/calls/{call}/actions/enqueue");
    let (s, v) = first.req("POST", &enqueue, Some(&key), Some(json!({"queue_name": "support"}))).await;
    assert_eq!((s, code(&v)), (503, "10007"), "{v}");
    // Taken again at its next share turn, loaded from the store: no trace of the change.
    eventually(lease * 3, "the bucket taken again", || first.durability.held_epoch_of(&name).is_some()).await;
    let (s, v) = until_served(&first, "GET", &format!("/v2/calls/{call}"), &key, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = until_served(&first, "GET", "/v2/queues/support", &key, None).await;
    assert_eq!(s, 404, "the refused enqueue exists nowhere: {v}");
    let (s, v) = first.req("POST", &enqueue, Some(&key), Some(json!({"queue_name": "support"}))).await;
    assert_eq!(s, 200, "it goes on from the store's numbers: {v}");
    first.stop().await;
}

/// `/readyz` and `/healthz` are the node's own, whatever API key comes with them: never
/// forwarded to a tenant's owner (which would add the cluster secret to the client's request).
#[tokio::test]
async fn readiness_is_never_forwarded() {
    let Some(url) = fresh_database("cluster_readyz_local") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, _store, owners) = two_nodes(&url, lease).await;
    let i = owned_by(&owners, &first);
    let key = key_of(i);
    let (s, v) = second.req("GET", "/readyz", Some(&key), None).await;
    assert_eq!((s, code(&v)), (403, "10010"), "answered here, without the secret: {v}");
    let answer = second
        .http
        .get(format!("{}/readyz", second.base))
        .bearer_auth(&key)
        .header("waitline-cluster-secret", SECRET)
        .send()
        .await
        .unwrap();
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["data"]["node_url"], second.base.as_str(), "{v}");
    let (s, v) = second.req("GET", "/healthz", Some(&key), None).await;
    assert_eq!((s, v), (200, json!({"status": "ok", "ready": true})));
    // An unknown path is answered here too (404), a tenant's API route by its owner.
    let (s, _) = second.req("GET", "/v2/no-such-route", Some(&key), None).await;
    assert_eq!(s, 404);
    let (s, v) = second.req("GET", "/v2/queues/support", Some(&key), None).await;
    assert_eq!((s, code(&v)), (404, "10005"), "forwarded to the owner: {v}");
    first.stop().await;
    second.stop().await;
}

/// `GET /metrics` with a tenant's key on a node not serving the tenant is forwarded to its
/// owner: the tenant's view as the owner has it. The operator's view (`--metrics-listen`)
/// stays each node's own: the tenant's series only on its owner's.
#[tokio::test]
async fn a_tenants_metrics_view_is_forwarded_to_its_owner() {
    let Some(url) = fresh_database("cluster_metrics") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, _store, owners) = two_nodes(&url, lease).await;
    let i = owned_by(&owners, &first);
    let key = key_of(i);
    let call = dialled(&second, i).await;
    let path = format!("/v2/calls/{call}/actions/enqueue");
    let (s, v) = second.req("POST", &path, Some(&key), Some(json!({"queue_name": "support"}))).await;
    assert_eq!(s, 200, "{v}");
    let scrape = |base: String, key: Option<String>| async move {
        let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let answer = request.send().await.unwrap();
        let kind = answer.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        (answer.status().as_u16(), kind, answer.text().await.unwrap())
    };
    // The queue's gauge for the tenant, as a scrape shows it.
    let waiting = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("waitline_queue_calls_waiting{") && l.contains("queue=\"support\""))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    let (s, kind, text) = scrape(second.base.clone(), Some(key.clone())).await;
    assert_eq!(s, 200, "forwarded to the owner: {text}");
    assert!(kind.unwrap().starts_with("text/plain; version=0.0.4"));
    assert_eq!(waiting(&text).as_deref(), Some("1"), "{text}");
    assert!(text.contains(&format!("tenant=\"{}\"", tenant(i))), "{text}");
    assert!(!text.contains("waitline_http_"), "the tenant's view only: {text}");
    let (s, _, owners_text) = scrape(first.base.clone(), Some(key.clone())).await;
    assert_eq!((s, waiting(&owners_text)), (200, Some("1".to_owned())));
    // No key: answered by the node reached, as before.
    let (s, _, _) = scrape(second.base.clone(), None).await;
    assert_eq!(s, 401);
    // The operator's view is each node's own: the tenant's series on its owner's only.
    let (s, _, text) = scrape(second.metrics_base.clone().unwrap(), None).await;
    assert_eq!((s, waiting(&text)), (200, None), "{text}");
    let (s, _, text) = scrape(first.metrics_base.clone().unwrap(), None).await;
    assert_eq!((s, waiting(&text).as_deref()), (200, Some("1")), "{text}");
    first.stop().await;
    second.stop().await;
}

/// A request carrying the cluster header is answered by the node it reaches or refused:
/// a wrong secret is 403 `10010` and changes nothing; the right one on a node not owning the
/// tenant is not forwarded again (503 `10007`, `Retry-After: 1`).
#[tokio::test]
async fn the_cluster_header_needs_the_secret_and_makes_one_hop_at_most() {
    let Some(url) = fresh_database("cluster_secret") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, _store, owners) = two_nodes(&url, lease).await;
    let (i, owner_url) = owners.iter().enumerate().next().unwrap();
    let key = key_of(i);
    let (owner, wrong) = if *owner_url == first.base { (&first, &second) } else { (&second, &first) };
    let (s, v) = owner.req("POST", "/v2/calls", Some(&key), Some(dial())).await;
    assert_eq!(s, 200, "{v}");
    let call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    let send = |server: &Server, secret: &str| {
        server
            .http
            .post(format!("{}/v2/calls/{call}/actions/enqueue", server.base))
            .bearer_auth(&key)
            .header("waitline-cluster-secret", secret)
            .json(&json!({"queue_name": "support"}))
            .send()
    };
    for server in [owner, wrong] {
        let refused = send(server, "not-the-cluster-secret").await.unwrap();
        assert_eq!(refused.status().as_u16(), 403);
        let v: Value = refused.json().await.unwrap();
        assert_eq!(code(&v), "10010", "{v}");
    }
    let (s, v) = owner.req("GET", "/v2/queues/support", Some(&key), None).await;
    assert_eq!(s, 404, "nothing was enqueued: {v}");
    let once = send(wrong, SECRET).await.unwrap();
    assert_eq!(once.status().as_u16(), 503);
    assert_eq!(once.headers()["retry-after"], "1");
    assert_eq!(send(owner, SECRET).await.unwrap().status().as_u16(), 200, "the owner answers a node");
    let (_, v) = owner.req("GET", "/v2/queues/support", Some(&key), None).await;
    assert_eq!(v["data"]["current_size"], 1, "{v}");
    first.stop().await;
    second.stop().await;
}

/// A node that gave a bucket up (another node joined and preferred it) and takes it back
/// (that node went) serves what the store holds, the other node's changes included: what it
/// held before is forgotten, and its journal goes on from the store's numbers.
#[tokio::test]
async fn a_bucket_given_up_and_taken_back_is_served_from_the_store() {
    let Some(url) = fresh_database("cluster_back") else { return };
    let lease = Duration::from_millis(1500);
    let (first, store) = one_node(&url, lease).await;
    let mut calls = Vec::new();
    for i in 0..TENANTS {
        calls.push(dialled(&first, i).await);
    }
    let (second, owners) = joining(&url, lease, &first, &store).await;
    // Each call is enqueued by its tenant's owner now (through either node).
    for (i, call) in calls.iter().enumerate() {
        let path = format!("/v2/calls/{call}/actions/enqueue");
        let (s, v) =
            until_served(&first, "POST", &path, &key_of(i), Some(json!({"queue_name": "support"}))).await;
        assert_eq!(s, 200, "{v}");
    }
    let given_up = owners.iter().filter(|o| **o == second.base).count();
    assert!(given_up > 0);
    second.stop().await;
    let owners = settled_owners(&store, &[&first], lease * 3).await;
    assert!(owners.iter().all(|o| *o == first.base));
    for (i, call) in calls.iter().enumerate() {
        let (s, v) = until_served(&first, "GET", "/v2/queues/support/calls", &key_of(i), None).await;
        assert_eq!(s, 200, "tenant {i}: {v}");
        assert_eq!(v["data"][0]["call_control_id"], call.as_str(), "tenant {i}: {v}");
        // And it goes on: the next change follows the store's numbers.
        let (s, v) = first
            .req("POST", &format!("/v2/calls/{call}/actions/leave_queue"), Some(&key_of(i)), Some(json!({})))
            .await;
        assert_eq!(s, 200, "tenant {i}: {v}");
    }
    first.stop().await;
}

/// A node starting where a dead node left its leases (as `kill -9` leaves them) waits for
/// them to expire, as a single node does, and serves their tenants from its first answer.
#[tokio::test]
async fn a_node_starting_after_a_crash_waits_for_the_dead_nodes_leases() {
    let Some(url) = fresh_database("cluster_after_crash") else { return };
    let lease = Duration::from_millis(800); // as the leases the dead node left below
    let call = {
        let first = node(&url, lease).await;
        let call = dialled(&first, 0).await;
        first.stop().await;
        call
    };
    execute(
        &url,
        "UPDATE waitline.leases SET owner = 'dead', epoch = epoch + 1, expires_at = now() + interval '800 milliseconds'",
    );
    let started = Instant::now();
    let second = node(&url, lease).await;
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited: {:?}", started.elapsed());
    let (s, v) = second.req("GET", &format!("/v2/calls/{call}"), Some(&key_of(0)), None).await;
    assert_eq!(s, 200, "{v}");
    second.stop().await;
}

/// A bucket taken over while the new owner runs: the webhooks its former owner had not
/// delivered are sent by the new owner (the same event ids), those it had delivered and
/// marked are not sent again, and the tenant's new events are told by the new owner.
#[tokio::test]
async fn a_bucket_taken_over_while_running_sends_what_its_former_owner_had_not_delivered() {
    let Some(url) = fresh_database("cluster_webhooks") else { return };
    let lease = Duration::from_millis(1500);
    let delivered = Receiver::start(0).await;
    let late = Receiver::start(usize::MAX).await; // refuses until told otherwise
    let tweak = |c: &mut Config| {
        c.webhooks.allow = DestinationPolicy::new(&["127.0.0.0/8"]).unwrap();
        c.webhooks.attempts = 1000;
        c.webhooks.backoff = Duration::from_millis(100);
        c.shutdown_grace = Duration::from_millis(100);
    };
    let first = node_with(&url, lease, tweak).await;
    let second = node_with(&url, lease, tweak).await;
    let store = observer(&url, lease);
    let owners = settled_owners(&store, &[&first, &second], lease * 10).await;
    let i = owned_by(&owners, &first);
    let key = key_of(i);
    let dial_to = |hook: &str| json!({"to": "+1", "from": "+2", "connection_id": "app", "webhook_url": hook});
    // Sent through the second node: the first, the owner, makes and delivers the events.
    let (s, v) = until_served(&second, "POST", "/v2/calls", &key, Some(dial_to(&delivered.url))).await;
    assert_eq!(s, 200, "{v}");
    let kept = delivered.wait_for(2).await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let marked = || store.delivered().unwrap().get(&tenant(i)).copied().unwrap_or(0);
    eventually(Duration::from_secs(5), "the delivery mark is kept", || marked() >= 1).await;
    let (s, v) = second.req("POST", "/v2/calls", Some(&key), Some(dial_to(&late.url))).await;
    assert_eq!(s, 200, "{v}");
    let late_call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "the first node tried", || late.refused.lock().len() >= 2).await;
    first.stop().await;
    assert_eq!(marked(), 1, "the late call's events were not delivered");
    let attempted: Vec<String> =
        late.refused.lock().iter().map(|b| b["data"]["id"].as_str().unwrap().to_owned()).collect();
    // In this process the first node's outbox may still try (its tasks outlive it): only
    // what the second node signed counts.
    late.trust(&second.public_key_of(&tenant(i)));
    delivered.trust(&second.public_key_of(&tenant(i)));
    let by_second = |r: &Receiver| r.got.lock().iter().filter(|h| h.verified).cloned().collect::<Vec<_>>();
    late.fail_next(0);
    settled_owners(&store, &[&second], lease * 3).await;
    eventually(Duration::from_secs(10), "the new owner sent the backlog", || by_second(&late).len() >= 2)
        .await;
    let got = by_second(&late);
    assert_eq!(got.len(), 2, "the new owner sent what was not delivered: {got:?}");
    let ids: Vec<&str> = got.iter().map(|h| h.body["data"]["id"].as_str().unwrap()).collect();
    for hook in &got {
        assert_eq!(hook.body["data"]["payload"]["call_control_id"], late_call.as_str(), "{hook:?}");
    }
    // The first node tried the call's first event again and again (a call's events go one
    // at a time): the new owner sent it under the same id.
    assert!(
        attempted.iter().all(|a| a == ids[0]),
        "the same event id as the first node's: {ids:?} {attempted:?}"
    );
    assert_ne!(ids[0], ids[1]);
    // The tenant's new events are the new owner's to tell.
    let path = format!("/v2/calls/{late_call}/actions/enqueue");
    let (s, v) = until_served(&second, "POST", &path, &key, Some(json!({"queue_name": "support"}))).await;
    assert_eq!(s, 200, "{v}");
    eventually(Duration::from_secs(10), "the new event", || by_second(&late).len() >= 3).await;
    let got = by_second(&late);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].body["data"]["event_type"], "call.enqueued");
    // Nothing the first node had delivered and marked came again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered.got.lock().len(), 2, "{:?}", delivered.got.lock());
    assert!(by_second(&delivered).is_empty());
    second.stop().await;
}

/// A forwarded request finds its owner in the node's map, refreshed by the share turn,
/// without a query; when the owner it names says it does not serve the tenant (the bucket
/// moved), the node looks the owner up once and sends the request there.
#[tokio::test]
async fn a_forwarded_request_costs_no_owner_query_and_one_when_the_owner_moved() {
    let Some(url) = fresh_database("cluster_owner_cache") else { return };
    let lease = Duration::from_millis(1500);
    let first = node(&url, lease).await;
    let second = node(&url, lease).await;
    let third = node(&url, lease).await;
    let store = observer(&url, lease);
    let owners = settled_owners(&store, &[&first, &second, &third], lease * 10).await;
    let i = owned_by(&owners, &first);
    let key = key_of(i);
    let (s, v) = until_served(&second, "GET", "/v2/queues", &key, None).await;
    assert_eq!(s, 200, "{v}");
    let before = second.durability.owner_lookups();
    for _ in 0..20 {
        let (s, v) = second.req("GET", "/v2/queues", Some(&key), None).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(second.durability.owner_lookups(), before, "no query per forwarded request");
    // The map names a node that does not serve the tenant (the share turn may refresh it
    // first: then the request goes straight to the owner, and it is tried again).
    let mut looked = 0;
    for _ in 0..5 {
        second.durability.cache_owner(&tenant(i), &third.base);
        let before = second.durability.owner_lookups();
        let (s, v) = second.req("GET", "/v2/queues", Some(&key), None).await;
        assert_eq!(s, 200, "answered by the owner after one more look: {v}");
        looked = second.durability.owner_lookups() - before;
        if looked > 0 {
            break;
        }
    }
    assert_eq!(looked, 1);
    let before = second.durability.owner_lookups();
    let (s, _) = second.req("GET", "/v2/queues", Some(&key), None).await;
    assert_eq!((s, second.durability.owner_lookups()), (200, before), "the owner found is kept");
    // The store itself names a node that does not serve the tenant (a bucket being taken
    // over): after the one more look, 503 `10007` with `Retry-After: 1`.
    let third_id = store.live_nodes().unwrap().into_iter().find(|n| n.url == third.base).unwrap().id;
    execute(
        &url,
        &format!("UPDATE waitline.leases SET owner = '{third_id}' WHERE bucket = {}", bucket(&tenant(i))),
    );
    second.durability.cache_owner(&tenant(i), &third.base);
    let before = second.durability.owner_lookups();
    let answer =
        second.http.get(format!("{}/v2/queues", second.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    assert!(answer.headers().get("waitline-not-owner").is_none(), "an internal header");
    let v: Value = answer.json().await.unwrap();
    assert_eq!(code(&v), "10007", "{v}");
    assert_eq!(second.durability.owner_lookups(), before + 1, "one more look, no more");
    for server in [first, second, third] {
        server.stop().await;
    }
}

/// `/healthz` says a node is ready, without a key; `/readyz` needs the cluster secret and
/// lists the buckets each node serves with their epochs: together, every bucket once.
#[tokio::test]
async fn healthz_says_ready_and_readyz_lists_each_nodes_buckets() {
    let Some(url) = fresh_database("cluster_ready") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, store, _) = two_nodes(&url, lease).await;
    let mut all = Vec::new();
    for server in [&first, &second] {
        let (s, v) = server.req("GET", "/healthz", None, None).await;
        assert_eq!((s, v), (200, json!({"status": "ok", "ready": true})));
        let readyz = |secret: Option<&str>| {
            let request = server.http.get(format!("{}/readyz", server.base));
            match secret {
                Some(secret) => request.header("waitline-cluster-secret", secret),
                None => request,
            }
            .send()
        };
        for refused in [None, Some("not-the-cluster-secret")] {
            let answer = readyz(refused).await.unwrap();
            assert_eq!(answer.status().as_u16(), 403);
            let v: Value = answer.json().await.unwrap();
            assert_eq!(code(&v), "10010", "{v}");
        }
        let answer = readyz(Some(SECRET)).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let v: Value = answer.json().await.unwrap();
        assert_eq!(v["data"]["ready"], true, "{v}");
        assert_eq!(v["data"]["node_url"], server.base.as_str(), "{v}");
        let listed: Vec<(u64, u64)> = v["data"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["bucket"].as_u64().unwrap(), b["epoch"].as_u64().unwrap()))
            .collect();
        let mut owned: Vec<u64> = store
            .owners()
            .unwrap()
            .into_iter()
            .filter(|(_, n)| n.url == server.base)
            .map(|(b, _)| u64::from(b))
            .collect();
        owned.sort_unstable();
        assert_eq!(listed.iter().map(|b| b.0).collect::<Vec<_>>(), owned, "{v}");
        assert!(listed.iter().all(|b| b.1 >= 1), "{v}");
        all.extend(listed.into_iter().map(|b| b.0));
    }
    all.sort_unstable();
    assert_eq!(all, (0..u64::from(BUCKETS)).collect::<Vec<_>>());
    first.stop().await;
    second.stop().await;
}

/// Reads `stream` until its text holds `needle` (within 5 s); returns whether it did.
async fn read_until(stream: &mut reqwest::Response, needle: &str) -> bool {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return false,
        }
    }
    true
}

/// Reads `stream` to its end, within `limit`: `Ok(true)` when it ended cleanly, `Ok(false)`
/// when it broke off, `Err` when it was still open.
async fn ending(
    stream: &mut reqwest::Response,
    limit: Duration,
) -> Result<bool, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => {}
                other => return other.is_ok(),
            }
        }
    })
    .await
}

/// Opens the event stream of tenant `i` on `server` (once the tenant is served).
async fn open_stream(server: &Server, i: usize) -> reqwest::Response {
    let started = Instant::now();
    loop {
        let answer = server
            .http
            .get(format!("{}/v2/events", server.base))
            .bearer_auth(key_of(i))
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            assert_eq!(answer.headers()["content-type"], "text/event-stream");
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{}", answer.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v2/events` on a node not owning the tenant streams the owner's events as they
/// come; a client that goes frees the stream on both nodes; when the owner stops, the
/// stream ends cleanly, and the client reconnecting gets the new owner's events.
#[tokio::test]
async fn an_event_stream_on_any_node_streams_the_owners_events_and_follows_a_takeover() {
    let Some(url) = fresh_database("cluster_events") else { return };
    let lease = Duration::from_millis(1500);
    // One stream at a time on each node: a stream not freed when its client goes shows.
    let first = node_with(&url, lease, |c| c.max_event_streams = 1).await;
    let second = node_with(&url, lease, |c| c.max_event_streams = 1).await;
    let store = observer(&url, lease);
    let owners = settled_owners(&store, &[&first, &second], lease * 10).await;
    let i = owned_by(&owners, &first);
    let mut stream = open_stream(&second, i).await;
    let call = dialled(&second, i).await;
    assert!(read_until(&mut stream, &call).await, "the owner's event came through the other node");
    drop(stream);
    let mut stream = open_stream(&second, i).await;
    let call = dialled(&second, i).await;
    assert!(read_until(&mut stream, &call).await);
    first.stop().await;
    let ended = ending(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(ended, Ok(true), "the stream ends cleanly when the owner stops");
    settled_owners(&store, &[&second], lease * 3).await;
    let mut stream = open_stream(&second, i).await;
    let call = dialled(&second, i).await;
    assert!(read_until(&mut stream, &call).await, "the new owner's events");
    drop(stream);
    second.stop().await;
}

/// An owner that gives a bucket up (a node joins and prefers it) ends its tenants' event
/// streams at once, so that their clients reconnect to the new owner; the other streams
/// stay open.
#[tokio::test]
async fn a_bucket_given_up_ends_its_tenants_event_streams_only() {
    let Some(url) = fresh_database("cluster_events_move") else { return };
    let lease = Duration::from_millis(1500);
    let (first, store) = one_node(&url, lease).await;
    let mut streams = Vec::new();
    for i in 0..TENANTS {
        streams.push(open_stream(&first, i).await);
    }
    let (second, owners) = joining(&url, lease, &first, &store).await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let moved = owners[i] == second.base;
        let limit = if moved { Duration::from_secs(3) } else { Duration::from_millis(300) };
        let ended = ending(stream, limit).await;
        if moved {
            assert_eq!(ended, Ok(true), "tenant {i}'s stream ended cleanly");
        } else {
            assert!(ended.is_err(), "tenant {i}'s stream stays open");
        }
    }
    drop(streams);
    first.stop().await;
    second.stop().await;
}

/// A node that stops cleanly says it is gone: the other nodes stop counting it at once
/// (not a lease after its last heartbeat) and take its buckets at their next turns.
#[tokio::test]
async fn a_node_that_stops_leaves_at_once_and_its_buckets_move() {
    let Some(url) = fresh_database("cluster_leave") else { return };
    // Long enough that a node still counted live (two thirds of a lease at least after its
    // last heartbeat) cannot pass for one that left (within a third of a lease).
    let lease = Duration::from_millis(3000);
    let (first, second, store, _) = two_nodes(&url, lease).await;
    let gone = second.base.clone();
    second.stop().await;
    let stopped = Instant::now();
    let live = || store.live_nodes().unwrap().iter().any(|n| n.url == gone);
    eventually(lease / 2, "the stopped node is no longer counted live", || !live()).await;
    let owners = settled_owners(&store, &[&first], lease * 2).await;
    assert!(owners.iter().all(|o| *o == first.base));
    assert!(stopped.elapsed() < lease * 2, "{:?}", stopped.elapsed());
    first.stop().await;
}

/// No timer fires in a tenant while a node taking its bucket over replays it: a call whose
/// deadline passed (its timeout is in the journal already) is not timed out a second time
/// mid-replay, which would take a number the journal already has and stop the store.
/// (Without the guard this failed about one run in two: the replay must span one of the
/// maintenance task's ticks, every 100 ms at most.)
#[tokio::test]
async fn no_timer_fires_in_a_bucket_being_loaded() {
    let Some(url) = fresh_database("cluster_quiet_load") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, store, owners) = two_nodes(&url, lease).await;
    let i = owned_by(&owners, &first);
    let key = key_of(i);
    let call = dialled(&first, i).await;
    let path = format!("/v2/calls/{call}/actions/enqueue");
    let enqueue = json!({"queue_name": "support", "max_wait_time_secs": 3});
    let (s, v) = first.req("POST", &path, Some(&key), Some(enqueue)).await;
    assert_eq!(s, 200, "{v}");
    // A journal long enough that its replay spans many of the maintenance task's ticks.
    let first = std::sync::Arc::new(first);
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (first, key) = (first.clone(), key.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..500 {
                let (s, v) = first.req("POST", "/v2/calls", Some(&key), Some(dial())).await;
                assert_eq!(s, 200, "{v}");
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let (_, v) = first.req("GET", &format!("/v2/calls/{call}"), Some(&key), None).await;
    assert_ne!(v["data"]["state"], "queued", "timed out by its owner: {v}");
    std::sync::Arc::into_inner(first).unwrap().stop().await;
    settled_owners(&store, &[&second], lease * 3).await;
    let (s, v) = until_served(&second, "POST", "/v2/calls", &key, Some(dial())).await;
    assert_eq!(s, 200, "the new owner serves and writes: {v}");
    assert!(!second.durability.is_stopped());
    let (s, v) = second.req("GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "{v}");
    second.stop().await;
}

/// The second node goes as a crash leaves it: its leases held (at a new epoch) until they
/// expire, its heartbeat cleared. The first node then takes its buckets over at a turn.
async fn crashed(url: &str, lease: Duration, second: Server) {
    let gone = second.base.clone();
    second.stop().await;
    execute(
        url,
        &format!(
            "UPDATE waitline.leases SET epoch = epoch + 1, expires_at = now() + interval '{} milliseconds' \
             WHERE owner = (SELECT node_id FROM waitline.nodes WHERE url = '{gone}')",
            lease.as_millis()
        ),
    );
}

/// A load of buckets taken over that lasts three leases: the node renews its leases
/// meanwhile, so no other node can take the buckets it loads (nor those it serves), and it
/// serves its other tenants throughout. A bucket whose lease is taken from it during the
/// load anyway (forced here in the table) is dropped once loaded, never served.
#[tokio::test]
async fn a_load_longer_than_the_lease_keeps_its_leases_and_serves_only_what_it_still_holds() {
    let Some(url) = fresh_database("cluster_long_load") else { return };
    let lease = Duration::from_millis(1000);
    let (first, second, store, owners) = two_nodes(&url, lease).await;
    let mine = owned_by(&owners, &first);
    // Two tenants of the second node in two buckets: one kept, one taken away mid-load.
    let theirs: Vec<usize> = (0..TENANTS).filter(|&i| owners[i] == second.base).collect();
    let kept = theirs[0];
    let taken = *theirs.iter().find(|&&i| bucket(&tenant(i)) != bucket(&tenant(kept))).unwrap();
    let kept_call = dialled(&second, kept).await;
    let taken_call = dialled(&second, taken).await;
    let pause = lease * 3;
    first.durability.pause_loads(pause);
    crashed(&url, lease, second).await;
    let (kept_bucket, taken_bucket) = (bucket(&tenant(kept)), bucket(&tenant(taken)));
    eventually(lease * 3, "the first node takes the buckets over", || {
        [kept_bucket, taken_bucket]
            .iter()
            .all(|b| store.owner(*b).unwrap().is_some_and(|o| o.url == first.base))
    })
    .await;
    let loading = Instant::now();
    execute(
        &url,
        &format!(
            "UPDATE waitline.leases SET owner = 'observer', epoch = epoch + 1, \
             expires_at = now() + interval '1 hour' WHERE bucket = {taken_bucket}"
        ),
    );
    let mine_path = format!("/v2/calls/{}", dialled(&first, mine).await);
    while loading.elapsed() < pause - lease / 2 {
        // No lease of the loading node lapses: another node cannot take its buckets.
        let first_bucket = bucket(&tenant(mine));
        assert_eq!(
            store.acquire(&[kept_bucket, first_bucket]).unwrap(),
            [],
            "a lease lapsed during the load"
        );
        let (s, v) = first.req("GET", &mine_path, Some(&key_of(mine)), None).await;
        assert_eq!(s, 200, "its own tenant is served during the load, {:?} in: {v}", loading.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once loaded: the bucket still held is served with its call; the one taken away is
    // never served from what was loaded (its owner has no URL: 503).
    let kept_path = format!("/v2/calls/{kept_call}");
    let (s, v) = until_served(&first, "GET", &kept_path, &key_of(kept), None).await;
    assert_eq!(s, 200, "{v}");
    let taken_path = format!("/v2/calls/{taken_call}");
    let watching = Instant::now();
    while watching.elapsed() < lease {
        let (s, v) = first.req("GET", &taken_path, Some(&key_of(taken)), None).await;
        assert_eq!((s, code(&v)), (503, "10007"), "a bucket lost during its load is not served: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!first.durability.is_stopped());
    first.stop().await;
}

/// A load that hangs (paused here past the limit) renews its node's leases for
/// `LOAD_RENEWED_FOR_LEASES` leases, not for ever: then its leases lapse (another node may
/// take its buckets, the one it loads and those it served) and it is no longer ready. The
/// lapse is watched for only while the load still runs (a lapse after it would prove nothing).
#[tokio::test]
async fn a_hung_load_stops_renewing_its_leases_after_the_limit() {
    let Some(url) = fresh_database("cluster_hung_load") else { return };
    let lease = Duration::from_millis(400);
    let limit = lease * waitline_server::node_share::LOAD_RENEWED_FOR_LEASES;
    let (first, second, store, owners) = two_nodes(&url, lease).await;
    let mine = bucket(&tenant(owned_by(&owners, &first)));
    let theirs = bucket(&tenant(owned_by(&owners, &second)));
    first.durability.pause_loads(limit + lease * 10);
    crashed(&url, lease, second).await;
    eventually(lease * 4, "the first node takes the second's buckets over", || {
        store.owner(theirs).unwrap().is_some_and(|o| o.url == first.base)
    })
    .await;
    tokio::time::sleep(limit / 2).await;
    assert_eq!(store.acquire(&[mine, theirs]).unwrap(), [], "renewed while the load is within the limit");
    let (s, _) = first.req("GET", "/healthz", None, None).await;
    assert_eq!(s, 200);
    eventually(limit / 2 + lease * 4, "the hung load's leases lapse", || {
        match store.acquire(&[mine, theirs]) {
            Ok(taken) => taken.len() == 2,
            Err(e) => {
                eprintln!("acquiring failed (tried again): {e}");
                false
            }
        }
    })
    .await;
    let (s, v) = first.req("GET", "/healthz", None, None).await;
    assert_eq!(s, 503, "no longer ready: {v}");
    first.stop().await;
}

/// Each tenant's calls, dialled through `server`.
async fn calls_of_every_tenant(server: &Server, per_tenant: usize) -> Vec<Vec<String>> {
    let dialling = (0..TENANTS).map(|i| async move {
        let mut calls = Vec::new();
        for _ in 0..per_tenant {
            calls.push(dialled(server, i).await);
        }
        calls
    });
    futures_util::future::join_all(dialling).await
}

/// Per tenant, a client enqueueing its calls one after another through `base`, each once
/// (a 503 is not retried: what it did is checked); each call with the status answered.
fn enqueueing(base: &str, calls: Vec<Vec<String>>) -> Vec<tokio::task::JoinHandle<Vec<(String, u16)>>> {
    calls
        .into_iter()
        .enumerate()
        .map(|(i, calls)| {
            let (base, key, http) = (base.to_owned(), key_of(i), reqwest::Client::new());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for call in calls {
                    let answer = http
                        .post(format!("{base}/v2/calls/{call}/actions/enqueue"))
                        .bearer_auth(&key)
                        .json(&json!({"queue_name": "q", "max_size": 1000}))
                        .send()
                        .await
                        .unwrap();
                    let status = answer.status().as_u16();
                    answered.push((call, status));
                }
                answered
            })
        })
        .collect()
}

/// Checks each enqueue through `server` once everything settled: a call answered 200 is in
/// its queue, one answered 503 is not (the write was refused before it ran). Returns how
/// many were answered 503.
async fn check_enqueued(server: &Server, answered: Vec<Vec<(String, u16)>>) -> usize {
    let mut refused = 0;
    for (i, answered) in answered.into_iter().enumerate() {
        let path = "/v2/queues/q/calls?page[size]=250";
        let (s, v) = until_served(server, "GET", path, &key_of(i), None).await;
        let queued: Vec<&str> = match s {
            200 => {
                v["data"].as_array().unwrap().iter().map(|c| c["call_control_id"].as_str().unwrap()).collect()
            }
            _ => Vec::new(), // no call was ever queued (404)
        };
        for (call, status) in &answered {
            match status {
                200 => assert!(queued.contains(&call.as_str()), "tenant {i}: {call} acknowledged, not kept"),
                503 => {
                    refused += 1;
                    assert!(!queued.contains(&call.as_str()), "tenant {i}: {call} answered 503 but enqueued");
                }
                other => panic!("tenant {i}: {call} answered {other}"),
            }
        }
    }
    refused
}

/// A node that gives buckets up (another node joins and prefers them) while clients write
/// through it: it stops taking commands for them first, and the writes already taken are
/// finished and answered as usual. So a write answered 503 was refused before it ran (it
/// changed nothing), and every write answered 200 is kept by the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bucket_given_up_answers_its_writes_in_flight_before_it_goes() {
    let Some(url) = fresh_database("cluster_give_up_in_flight") else { return };
    // Long enough that a turn slowed down by the clients' load on a busy machine keeps the
    // node in touch (its writes would then answer 503 for that reason).
    let lease = Duration::from_millis(3000);
    let (first, store) = one_node(&url, lease).await;
    let calls = calls_of_every_tenant(&first, 150).await;
    let clients = enqueueing(&first.base, calls);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (second, _) = joining(&url, lease, &first, &store).await;
    let answered: Vec<_> =
        futures_util::future::join_all(clients).await.into_iter().map(Result::unwrap).collect();
    let refused = check_enqueued(&second, answered).await;
    eprintln!("writes refused (503, no effect) while buckets moved: {refused}");
    second.stop().await;
    first.stop().await;
}

/// A node stopped gracefully while clients write through another node (forwarded to it):
/// the writes it had taken are finished and answered 200 (the store outlives the HTTP
/// server's drain); those that reach it once it stopped listening, or its buckets before the
/// other node loaded them, answer 503 `10007` and changed nothing; the other node then
/// serves every write answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_under_writes_answers_what_it_took_and_loses_nothing() {
    let Some(url) = fresh_database("cluster_graceful_stop") else { return };
    let lease = Duration::from_millis(3000);
    let (first, second, store, _) = two_nodes(&url, lease).await;
    let calls = calls_of_every_tenant(&first, 150).await;
    let clients = enqueueing(&first.base, calls);
    tokio::time::sleep(Duration::from_millis(200)).await;
    second.stop().await;
    settled_owners(&store, &[&first], lease * 3).await;
    let answered: Vec<_> =
        futures_util::future::join_all(clients).await.into_iter().map(Result::unwrap).collect();
    let refused = check_enqueued(&first, answered).await;
    eprintln!("writes refused (503, no effect) across the stop: {refused}");
    first.stop().await;
}

/// What a client saw: a 503 `10007` with `Retry-After: 1` counted, anything else returned.
#[derive(Default)]
struct Retries {
    unavailable: std::sync::atomic::AtomicUsize,
}

impl Retries {
    /// Sends until the answer is not a 503 `10007` carrying `Retry-After: 1`, within 20 s.
    async fn send(&self, base: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let answer = http.post(format!("{base}{path}")).bearer_auth(key).json(body).send().await.unwrap();
            let status = answer.status().as_u16();
            let retry_after = answer.headers().get("retry-after").map(|h| h.to_str().unwrap().to_owned());
            let v: Value = answer.json().await.unwrap();
            if status != 503 {
                return (status, v);
            }
            assert_eq!((code(&v), retry_after.as_deref()), ("10007", Some("1")), "{v}");
            self.unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(started.elapsed() < Duration::from_secs(20), "still 503 after 20 s: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// PostgreSQL drops every node's connections twice (as a failover or a restart does) while
/// clients write: writes in the gap answer 503 `10007` with `Retry-After: 1` and `/healthz`
/// says why the node is not ready; each node reconnects on its own, takes its share again
/// and reloads it from the store, ready within two leases. Every acknowledged dial is
/// there and its `call.initiated` webhook delivered (events of the gap come from the
/// reloaded backlog), and every enqueue, retried with its `command_id` until acknowledged,
/// applied once (a second application would be refused: the call is queued already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_through_postgres_dropping_their_connections() {
    let Some(url) = fresh_database("cluster_pg_gone") else { return };
    let lease = Duration::from_millis(3000);
    let hooks = Receiver::start(0).await;
    let allow = |c: &mut Config| c.webhooks.allow = DestinationPolicy::new(&["127.0.0.0/8"]).unwrap();
    let (first, second) = (node_with(&url, lease, allow).await, node_with(&url, lease, allow).await);
    let owners = settled_owners(&observer(&url, lease), &[&first, &second], lease * 10).await;
    let (i, j) = (owned_by(&owners, &first), owned_by(&owners, &second));
    let mut calls = Vec::new();
    for _ in 0..30 {
        calls.push(dialled(&first, i).await);
    }
    let retries = std::sync::Arc::new(Retries::default());
    let enqueued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let enqueuer = {
        let (base, calls, retries, enqueued) =
            (first.base.clone(), calls.clone(), retries.clone(), enqueued.clone());
        tokio::spawn(async move {
            for (k, call) in calls.iter().enumerate() {
                let body = json!({"queue_name": "q", "command_id": format!("enqueue-{k}")});
                let path = format!("/v2/calls/{call}/actions/enqueue");
                let (s, v) = retries.send(&base, &path, &key_of(i), &body).await;
                assert_eq!(s, 200, "enqueue {k}, retried with its command_id, applied once: {v}");
                enqueued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    // Dials on both nodes, each tenant through the node not owning it too.
    let dialler = |base: String, tenant: usize| {
        let retries = retries.clone();
        let body = json!({"to": "+1", "from": "+2", "connection_id": "app", "webhook_url": hooks.url});
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for _ in 0..40 {
                let (s, v) = retries.send(&base, "/v2/calls", &key_of(tenant), &body).await;
                assert_eq!(s, 200, "{v}");
                acknowledged.push(v["data"]["call_control_id"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            acknowledged
        })
    };
    let dialling = [
        (i, dialler(first.base.clone(), i)),
        (j, dialler(second.base.clone(), j)),
        (j, dialler(first.base.clone(), j)),
    ];
    for (round, after) in [(1, 8), (2, 20)] {
        eventually(Duration::from_secs(30), "enqueues go on", || {
            enqueued.load(std::sync::atomic::Ordering::Relaxed) >= after
        })
        .await;
        let seen = retries.unavailable.load(std::sync::atomic::Ordering::Relaxed);
        drop_connections(&url);
        let dropped = Instant::now();
        // The next write finds the writer's connection gone.
        let (s, v) = first.req("POST", "/v2/calls", Some(&key_of(i)), Some(dial())).await;
        if s == 503 {
            let (s, v) = first.req("GET", "/healthz", None, None).await;
            assert!(
                s == 200 || v["reason"].as_str().is_some_and(|r| r.contains("reconnecting")),
                "round {round}: {v}"
            );
        } else {
            assert_eq!(s, 200, "round {round}: {v}");
        }
        for server in [&first, &second] {
            loop {
                let (s, v) = server.req("GET", "/healthz", None, None).await;
                if s == 200 {
                    break;
                }
                assert_eq!(v["ready"], false, "{v}");
                assert!(dropped.elapsed() < lease * 2, "round {round}: {} not ready again: {v}", server.base);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        eventually(Duration::from_secs(20), "a client saw the gap", || {
            retries.unavailable.load(std::sync::atomic::Ordering::Relaxed) > seen
        })
        .await;
    }
    enqueuer.await.unwrap();
    let mut acknowledged = Vec::new();
    for (tenant, task) in dialling {
        acknowledged.extend(task.await.unwrap().into_iter().map(|call| (tenant, call)));
    }
    for server in [&first, &second] {
        assert!(!server.durability.is_stopped(), "{} reconnected", server.base);
    }
    for (tenant, call) in &acknowledged {
        let (s, v) = until_served(&second, "GET", &format!("/v2/calls/{call}"), &key_of(*tenant), None).await;
        assert_eq!(s, 200, "an acknowledged dial is kept: {v}");
    }
    for call in &calls {
        let (s, v) = until_served(&second, "GET", &format!("/v2/calls/{call}"), &key_of(i), None).await;
        assert_eq!((s, v["data"]["state"].as_str()), (200, Some("queued")), "{v}");
    }
    let (s, v) = until_served(&first, "GET", "/v2/queues/q", &key_of(i), None).await;
    assert_eq!((s, v["data"]["current_size"].as_u64()), (200, Some(30)), "each enqueue once: {v}");
    let initiated = |call: &str| {
        hooks.got.lock().iter().any(|r| {
            r.body["data"]["event_type"] == "call.initiated"
                && r.body["data"]["payload"]["call_control_id"] == call
        })
    };
    for (_, call) in &acknowledged {
        eventually(Duration::from_secs(10), "each acknowledged dial's webhook", || initiated(call)).await;
    }
    first.stop().await;
    second.stop().await;
}

/// A node with nothing to write when PostgreSQL drops its connections: its next share turn
/// fails and replaces the lease connection, so two leases later it is still ready (a node
/// whose turns all failed is not, after one lease); its first write then finds the writer's
/// connection gone: it answers 503 `10007` with `Retry-After: 1` (never a 503 "until a
/// restart"), and a retry is served within a lease and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_reconnects_at_its_next_turn_and_at_its_next_write() {
    let Some(url) = fresh_database("cluster_pg_idle") else { return };
    let lease = Duration::from_millis(1500);
    let (only, _store) = one_node(&url, lease).await;
    drop_connections(&url);
    tokio::time::sleep(lease * 2).await;
    let (s, v) = only.req("GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "the lease connection was replaced: {v}");
    let retries = Retries::default();
    let writing = Instant::now();
    let (s, v) = retries.send(&only.base, "/v2/calls", &key_of(0), &dial()).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        retries.unavailable.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the writer's connection was gone"
    );
    assert!(writing.elapsed() < lease, "served again by the next turns: {:?}", writing.elapsed());
    let call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    let (s, v) = until_served(&only, "GET", &format!("/v2/calls/{call}"), &key_of(0), None).await;
    assert_eq!(s, 200, "{v}");
    only.stop().await;
}

/// An owner as a stuck node is: it takes a request and, when `head` is set, answers an
/// event stream's head and one comment, then sends nothing more (never ends). Returns its
/// URL and how many requests it took.
async fn stuck_owner(head: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = taken.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if head {
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n7\r\n: hi\n\n\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
            }
            held.push(socket);
        }
    });
    (url, taken)
}

/// A forwarded event stream never hangs on its owner: one that does not answer is given up
/// within the forwarding timeout (503 `10007`), and a stream open on a node this node's
/// owner map no longer names ends (within a second of the map's refresh).
#[tokio::test]
async fn a_forwarded_event_stream_never_hangs_on_a_stuck_owner() {
    let Some(url) = fresh_database("cluster_stuck_owner") else { return };
    let lease = Duration::from_millis(1500);
    let (first, second, _store, owners) = two_nodes(&url, lease).await;
    let i = owned_by(&owners, &first);
    let (key, name) = (key_of(i), tenant(i));
    // Until the request reached the stuck owner (a refresh of the map may come between).
    let through = |head: bool| {
        let (second, key, name) = (&second, &key, &name);
        async move {
            let (fake, taken) = stuck_owner(head).await;
            loop {
                second.durability.cache_owner(name, &fake);
                let answer = tokio::time::timeout(
                    Duration::from_secs(15),
                    second.http.get(format!("{}/v2/events", second.base)).bearer_auth(key).send(),
                )
                .await
                .expect("the forwarded stream's head did not come within 15 s")
                .unwrap();
                if taken.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    return answer;
                }
            }
        }
    };
    let started = Instant::now();
    let answer = through(false).await;
    assert_eq!(answer.status().as_u16(), 503);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(code(&v), "10007", "{v}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let mut stream = through(true).await;
    assert_eq!(stream.status().as_u16(), 200);
    assert!(read_until(&mut stream, ": hi").await);
    // The share thread's refresh names the real owner again: the stream ends.
    assert!(
        ending(&mut stream, Duration::from_secs(4)).await.is_ok(),
        "the stream to a stale owner stayed open"
    );
    first.stop().await;
    second.stop().await;
}

/// A queue named "events" is not the event stream (no stream slot, answered whole), and a
/// forwarded request's body is read as a local one is: within the body timeout (408).
#[tokio::test]
async fn forwarding_matches_routes_exactly_and_reads_bodies_as_a_local_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(url) = fresh_database("cluster_forward_body") else { return };
    let lease = Duration::from_millis(1500);
    let first = node(&url, lease).await;
    let second = node_with(&url, lease, |c| {
        c.max_event_streams = 0;
        c.connections.body_timeout = Duration::from_secs(1);
    })
    .await;
    let store = observer(&url, lease);
    let owners = settled_owners(&store, &[&first, &second], lease * 10).await;
    let i = owned_by(&owners, &first);
    let key = key_of(i);
    let (s, v) = until_served(&second, "GET", "/v2/queues/events", &key, None).await;
    assert_eq!((s, code(&v)), (404, "10005"), "the owner's answer, no stream slot taken: {v}");
    // A body that never comes: 408 `10015` after the body timeout, as on the owner itself.
    let mut socket = tokio::net::TcpStream::connect(second.base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /v2/calls HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"to\""
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("no answer within 5 s to a body that never came")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    first.stop().await;
    second.stop().await;
}

/// The events a takeover's replay publishes are dropped by the outbox without waiting for
/// the store: with a commit held back (the writer paused, a delivery mark queued), the
/// backlog of the bucket taken over is still sent at once, not after that commit.
#[tokio::test]
async fn a_takeovers_replayed_events_wait_for_no_commit() {
    let Some(url) = fresh_database("cluster_replay_no_wait") else { return };
    let lease = Duration::from_millis(1500);
    let hooks = Receiver::start(usize::MAX).await; // refuses the first node's attempts
    let tweak = |c: &mut Config| {
        c.webhooks.allow = DestinationPolicy::new(&["127.0.0.0/8"]).unwrap();
        c.webhooks.attempts = 1000;
        c.webhooks.backoff = Duration::from_millis(100);
        c.shutdown_grace = Duration::from_millis(100);
    };
    let first = node_with(&url, lease, tweak).await;
    let second = node_with(&url, lease, tweak).await;
    let store = observer(&url, lease);
    let owners = settled_owners(&store, &[&first, &second], lease * 10).await;
    let (i, j) = (owned_by(&owners, &first), owned_by(&owners, &second));
    let dial_to = json!({"to": "+1", "from": "+2", "connection_id": "app", "webhook_url": hooks.url});
    // Made on the first node and never delivered by it: the backlog of the takeover.
    let (s, v) = until_served(&first, "POST", "/v2/calls", &key_of(i), Some(dial_to)).await;
    assert_eq!(s, 200, "{v}");
    eventually(Duration::from_secs(5), "the first node tried", || !hooks.refused.lock().is_empty()).await;
    hooks.trust(&second.public_key_of(&tenant(i)));
    second.durability.pause_writer();
    second.durability.mark_delivered(&tenant(j), 1); // queued, not committed
    first.stop().await;
    hooks.fail_next(0);
    let by_second = || hooks.got.lock().iter().filter(|h| h.verified).count();
    settled_owners(&store, &[&second], lease * 3).await;
    let sent = Instant::now();
    while by_second() < 2 && sent.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.durability.resume_writer();
    assert!(by_second() >= 2, "the backlog waited for a commit: {:?}", hooks.got.lock());
    second.stop().await;
}
