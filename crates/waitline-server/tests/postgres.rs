//! The service with its journal in PostgreSQL (`--postgres-url`), one node taking every
//! bucket: what was acknowledged is there after a restart; a second node cannot start
//! beside it; once a lease is taken from it, it acknowledges no change. Each test has a
//! database of its own on the server of `WAITLINE_TEST_POSTGRES_URL` (skipped without it,
//! except in CI).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Server, code};
use serde_json::json;
use waitline_server::config::Config;
use waitline_store::test_support::{execute, fresh_database};

fn over_postgres(url: &str) -> Config {
    Config { postgres_url: Some(url.to_owned()), data_dir: None, ..Config::default() }
}

#[tokio::test]
async fn queued_calls_are_replayed_from_postgres_after_a_restart() {
    let Some(url) = fresh_database("server_restart") else { return };
    let server = Server::start(over_postgres(&url)).await;
    let first = server.dial().await;
    let second = server.dial().await;
    for call in [&first, &second] {
        let (s, v) = server.action(call, "enqueue", json!({"queue_name": "support"})).await;
        assert_eq!(s, 200, "{v}");
    }
    server.stop().await;

    let server = Server::start(over_postgres(&url)).await;
    let (s, v) = server.get("/v2/queues/support/calls").await;
    assert_eq!(s, 200, "{v}");
    let order: Vec<(&str, u64)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["call_control_id"].as_str().unwrap(), c["queue_position"].as_u64().unwrap()))
        .collect();
    assert_eq!(order, [(first.as_str(), 1), (second.as_str(), 2)]);
    // And it goes on from there: the next change follows the replayed ones.
    let (s, v) = server.action(&first, "leave_queue", json!({})).await;
    assert_eq!(s, 200, "{v}");
    server.stop().await;
    let server = Server::start(over_postgres(&url)).await;
    let (_, v) = server.get("/v2/queues/support").await;
    assert_eq!(v["data"]["current_size"], 1, "{v}");
    server.stop().await;
}

#[tokio::test]
async fn a_second_node_cannot_take_the_buckets_of_a_running_one() {
    let Some(url) = fresh_database("server_second_node") else { return };
    let short = Config { lease: Duration::from_millis(300), ..over_postgres(&url) };
    let server = Server::start(short.clone()).await;
    // It waits two lease lengths for the leases to expire; the running node renews them.
    let started = std::time::Instant::now();
    let err = waitline_server::open_engine(&short).map(|_| ()).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    assert!(err.contains("is held by another node: a single node needs every bucket"), "{err}");
    server.stop().await;
    // Stopped, it gave its leases up: a new node starts at once.
    assert!(waitline_server::open_engine(&over_postgres(&url)).is_ok());
}

/// A node killed (here: its leases left behind, as `kill -9` leaves them) is restarted at
/// once: the new process takes the buckets when the dead one's leases expire.
#[tokio::test]
async fn a_restart_after_a_crash_waits_for_the_dead_nodes_leases() {
    let Some(url) = fresh_database("server_after_crash") else { return };
    let config = Config { lease: Duration::from_millis(800), ..over_postgres(&url) };
    let server = Server::start(config.clone()).await;
    let call = server.dial().await;
    server.stop().await;
    execute(
        &url,
        "UPDATE waitline.leases SET owner = 'dead', epoch = epoch + 1, expires_at = now() + interval '800 milliseconds'",
    );
    let started = std::time::Instant::now();
    let server = Server::start(config).await;
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited: {:?}", started.elapsed());
    let (s, v) = server.get(&format!("/v2/calls/{call}")).await;
    assert_eq!(s, 200, "{v}");
    server.stop().await;
}

#[tokio::test]
async fn a_node_whose_lease_was_taken_acknowledges_no_change() {
    let Some(url) = fresh_database("server_fenced") else { return };
    let server = Server::start(over_postgres(&url)).await;
    let call = server.dial().await;
    // Another node takes every bucket over, as it would from a node stalled past its lease.
    execute(&url, "UPDATE waitline.leases SET expires_at = now() - interval '1 second'");
    let other = waitline_store::Store::open_postgres(
        &waitline_store::PgConfig { node: "other".into(), ..waitline_store::PgConfig::new(url.clone()) },
        waitline_store::Options::default(),
    )
    .unwrap();
    assert_eq!(other.acquire_all().unwrap().len(), 256);
    let (s, v) = server.action(&call, "enqueue", json!({"queue_name": "support"})).await;
    assert_eq!((s, code(&v)), (503, "10007"), "{v}");
    // Nothing of it was stored: the other node replays the dial only.
    let mut records = 0;
    other
        .replay(|_| {
            records += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(records, 1);
    // Every later change is refused too, until a restart.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (s, _) = server.post("/v2/calls", json!({"to": "+1", "from": "+2", "connection_id": "app"})).await;
    assert_eq!(s, 503);
    server.stop().await;
}

/// A lost lease stops that bucket's tenants only: their requests answer a retryable 503
/// (`Retry-After: 1`), reads too (the new owner has their state), while the tenants of the
/// other buckets go on.
#[tokio::test]
async fn a_lost_bucket_stops_its_tenants_only() {
    let Some(url) = fresh_database("server_one_bucket_lost") else { return };
    let hooks = common::Receiver::start(0).await;
    let mut config = common::allow_loopback(over_postgres(&url));
    config.webhooks.url = Some(hooks.url.clone());
    let server = Server::start(config).await;
    let call = server.dial().await; // tenant "a"
    let (a, b) = (waitline_store::bucket::bucket_of("a", 256), waitline_store::bucket::bucket_of("b", 256));
    assert_ne!(a, b);
    execute(
        &url,
        &format!("UPDATE waitline.leases SET expires_at = now() - interval '1 second' WHERE bucket = {a}"),
    );
    let other = waitline_store::Store::open_postgres(
        &waitline_store::PgConfig { node: "other".into(), ..waitline_store::PgConfig::new(url.clone()) },
        waitline_store::Options::default(),
    )
    .unwrap();
    assert_eq!(other.acquire(&[a]).unwrap().len(), 1);
    // The write that meets the takeover is refused by fencing.
    let (s, v) = server.action(&call, "enqueue", json!({"queue_name": "support"})).await;
    assert_eq!((s, code(&v)), (503, "10007"), "{v}");
    let moved = server
        .http
        .get(format!("{}/v2/calls/{call}", server.base))
        .bearer_auth(common::KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status().as_u16(), 503);
    assert_eq!(moved.headers()["retry-after"], "1");
    // A single node never takes a lost bucket back: it says it is not ready, so that its
    // supervisor restarts it.
    let (s, v) = server.req("GET", "/healthz", None, None).await;
    assert_eq!((s, &v["ready"]), (503, &json!(false)), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("1 buckets lost"), "{v}");
    // Tenant b, in another bucket, goes on: its writes are acknowledged and kept.
    let dial = json!({"to": "+1", "from": "+2", "connection_id": "app"});
    let (s, v) = server.req("POST", "/v2/calls", Some(common::KEY_B), Some(dial)).await;
    assert_eq!(s, 200, "{v}");
    let b_call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    // Webhooks go on for b; a's refused change is not told (the new owner tells what it has).
    let told = |hooks: &[common::Received], id: &str, kind: &str| {
        hooks.iter().any(|h| {
            h.body["data"]["payload"]["call_control_id"] == id && h.body["data"]["event_type"] == kind
        })
    };
    hooks.wait_for(4).await;
    // A fifth (a's call.enqueued) would come within this.
    let got = hooks.wait_for_within(5, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(told(&got, &call, "call.initiated") && told(&got, &b_call, "call.initiated"), "{got:?}");
    assert!(!told(&got, &call, "call.enqueued"), "{got:?}");
    // The lost tenant is dropped from memory (the new owner has it); b stays.
    let started = std::time::Instant::now();
    while server.engine.tenant("a").last_seq() != 0 {
        assert!(started.elapsed() < Duration::from_secs(2), "tenant a was not forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.engine.tenant("b").last_seq(), 1);
    server.stop().await;
    let mut tenants = std::collections::BTreeMap::<String, u64>::new();
    other
        .replay(|e| {
            if let waitline_store::Entry::Record { tenant, .. } = e {
                *tenants.entry(tenant.to_owned()).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(tenants.into_iter().collect::<Vec<_>>(), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
}
