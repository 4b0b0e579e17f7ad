//! Webhook delivery over loopback: where a call's own URL may point (names that resolve to
//! loopback, the allow list, operator URLs trusted), redirects not followed, one tenant's
//! dead endpoint costing only that tenant, and no event lost while a receiver is down or the
//! reader falls behind. Tests that name other addresses run in a network of their own
//! (`tests/webhook_destinations.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{StatusCode, header};
use common::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use waitline::{DialParams, Engine};
use waitline_server::config::Config;
use waitline_server::durable::Durability;
use waitline_server::webhook::{Signer, WebhookConfig, Webhooks};
use waitline_server::webhook_destination::DestinationPolicy;

fn config(url: Option<&str>, failover: Option<&str>, allow: &[&str]) -> Config {
    let mut c = Config::default();
    c.webhooks.url = url.map(str::to_owned);
    c.webhooks.failover_url = failover.map(str::to_owned);
    c.webhooks.allow = DestinationPolicy::new(allow).unwrap();
    c.webhooks.backoff = Duration::from_millis(20);
    c.webhooks.attempts = 2;
    c
}

/// Dials as the tenant of `key` with the call's own `webhook_url`.
async fn dial_as(s: &Server, key: &str, webhook_url: &str) -> (u16, Value) {
    let body = json!({"to": "+1", "from": "+2", "connection_id": "app", "webhook_url": webhook_url});
    s.req("POST", "/v2/calls", Some(key), Some(body)).await
}

fn event_types(got: &[Received]) -> Vec<&str> {
    got.iter().map(|r| r.body["data"]["event_type"].as_str().unwrap()).collect()
}

/// A host name is resolved at delivery, and a name that resolves only to loopback is not
/// sent to: the events go on to the operator's failover URL, the refused URL counting no
/// attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_not_sent_to() {
    let own = Receiver::start(0).await;
    let failover = Receiver::start(0).await;
    let s = Server::start(config(None, Some(&failover.url), &[])).await;
    let via_name = own.url.replace("127.0.0.1", "localhost");
    let (status, v) = dial_as(&s, KEY_A, &via_name).await;
    assert_eq!(status, 200, "a name is not resolved at dial: {v}");
    let got = failover.wait_for(2).await;
    assert_eq!(event_types(&got), ["call.initiated", "call.answered"]);
    assert_eq!(got[0].body["meta"]["attempt"], 1, "nothing was sent to the refused URL");
    assert!(own.got.lock().is_empty(), "the loopback receiver got nothing");
    s.stop().await;
}

/// A webhook that finally failed is listed for its tenant, and for no other, saying why
/// without naming the operator's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finally_failed_webhooks_are_listed_for_their_tenant() {
    let dead = Receiver::start(usize::MAX).await;
    let s = Server::start(config(None, Some(&dead.url), &[])).await;
    let (_, v) = dial_as(&s, KEY_A, "http://localhost:9/hook").await;
    let call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    let mut listed = Value::Null;
    for _ in 0..200 {
        listed = s.get("/v2/webhook_failures").await.1;
        if listed["data"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let failures = listed["data"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{listed}");
    assert_eq!(failures[0]["record_type"], "webhook_failure");
    assert_eq!(failures[0]["event_type"], "call.initiated");
    assert_eq!(failures[1]["event_type"], "call.answered");
    // The call's own URL was refused (no attempt), then both attempts at the failover failed.
    assert!(failures.iter().all(|f| f["call_control_id"] == call.as_str() && f["attempts"] == 2));
    assert_eq!(failures[0]["error"], "the configured webhook URL: answered 500 Internal Server Error");
    assert!(failures[0]["event_id"].is_string() && failures[0]["failed_at"].is_string(), "{listed}");
    let (status, other) = s.req("GET", "/v2/webhook_failures", Some(KEY_B), None).await;
    assert_eq!((status, other), (200, json!({"data": []})));
    assert_eq!(s.req("GET", "/v2/webhook_failures", None, None).await.0, 401);
    s.stop().await;
}

/// The allow list opens a name, or the network it resolves to; a literal loopback address
/// needs the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_opens_names_and_networks() {
    let own = Receiver::start(0).await;
    let via_name = own.url.replace("127.0.0.1", "localhost");
    for allow in ["localhost", "127.0.0.0/8"] {
        own.got.lock().clear();
        let s = Server::start(config(None, None, &[allow])).await;
        assert_eq!(dial_as(&s, KEY_A, &via_name).await.0, 200);
        assert_eq!(event_types(&own.wait_for(2).await), ["call.initiated", "call.answered"], "{allow}");
        let literal = dial_as(&s, KEY_A, &own.url).await;
        if allow == "localhost" {
            assert_eq!((literal.0, code(&literal.1)), (422, "95005"), "{}", literal.1);
        } else {
            assert_eq!(literal.0, 200);
            assert_eq!(own.wait_for(4).await.len(), 4);
        }
        s.stop().await;
    }
}

/// A literal address that is not allowed, and a URL that is not http(s), are refused at
/// dial with a clear error naming the field, and no call is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_refuses_a_literal_loopback_or_a_bad_url() {
    let s = Server::start(config(None, None, &[])).await;
    for (url, expected, says) in [
        ("http://127.0.0.1:9/hook", "95005", "127.0.0.1 is a loopback address"),
        ("http://[::1]:9/hook", "95005", "::1 is a loopback address"),
        ("http://2130706433/", "95005", "127.0.0.1 is a loopback address"),
        ("ftp://hooks.example.com/", "10033", "must be an http(s) URL"),
        ("http://[::1/", "10033", "not a valid URL"),
    ] {
        let body = json!({"to": "+1", "from": "+2", "connection_id": "app", "call_control_id": "adopted", "webhook_url": url});
        let (status, v) = s.post("/v2/calls", body).await;
        assert_eq!((status, code(&v)), (422, expected), "{url}: {v}");
        let error = &v["errors"][0];
        assert_eq!(error["source"]["pointer"], "/webhook_url");
        assert!(error["detail"].as_str().unwrap().contains(says), "{url}: {error}");
        let (status, v) = s.get("/v2/calls/adopted").await;
        assert_eq!((status, code(&v)), (422, "90015"), "no call was made for {url}");
    }
    s.stop().await;
}

/// A dial's parameters are checked before its webhook's destination: a bad `client_state`
/// with a refused destination is named as the bad `client_state` (docs/behaviour.md §2.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_names_a_bad_parameter_before_a_refused_destination() {
    let s = Server::start(config(None, None, &[])).await;
    let body = json!({"to": "+1", "from": "+2", "connection_id": "app", "call_control_id": "adopted",
        "webhook_url": "http://127.0.0.1:9/hook", "client_state": "not base64!"});
    let (status, v) = s.post("/v2/calls", body).await;
    assert_eq!((status, code(&v)), (422, "10033"), "{v}");
    assert_eq!(v["errors"][0]["source"]["pointer"], "/client_state", "{v}");
    let (status, v) = s.get("/v2/calls/adopted").await;
    assert_eq!((status, code(&v)), (422, "90015"), "no call was made: {v}");
    s.stop().await;
}

/// The operator's URLs are trusted: loopback, by address or by name, with no allow list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_urls_are_trusted() {
    let rx = Receiver::start(0).await;
    for url in [rx.url.clone(), rx.url.replace("127.0.0.1", "localhost")] {
        rx.got.lock().clear();
        let s = Server::start(config(Some(&url), None, &[])).await;
        rx.trust(&s.signer_public); // the operator's URL: the configured key, whatever the tenant
        s.dial().await;
        let got = rx.wait_for(2).await;
        assert_eq!(event_types(&got), ["call.initiated", "call.answered"], "{url}");
        assert!(got.iter().all(|r| r.verified));
        s.stop().await;
    }
}

/// A receiver that redirects every request to `to` (a 307 keeps the method and body).
async fn redirecting(to: &str) -> String {
    let to = to.to_owned();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let to = to.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A 3xx is a failed attempt, for the operator's URLs and for a call's own: the target of
/// the redirect gets nothing, the failover gets the event after every attempt failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let target = Receiver::start(0).await;
    let failover = Receiver::start(0).await;
    let redirect = redirecting(&target.url).await;
    // The operator's URL.
    let s = Server::start(config(Some(&redirect), Some(&failover.url), &[])).await;
    s.dial().await;
    let got = failover.wait_for(2).await;
    assert_eq!(got[0].body["meta"]["attempt"], 3, "two attempts at the redirecting URL");
    s.stop().await;
    // A call's own URL, its network allowed.
    failover.got.lock().clear();
    let s = Server::start(config(None, Some(&failover.url), &["127.0.0.0/8"])).await;
    assert_eq!(dial_as(&s, KEY_A, &redirect).await.0, 200);
    let got = failover.wait_for(2).await;
    assert_eq!(got[0].body["meta"]["attempt"], 3);
    s.stop().await;
    assert!(target.got.lock().is_empty(), "no redirect was followed");
}

/// A listener that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// One tenant's endpoint black-holed, with many of its calls waiting on it: another tenant's
/// webhooks keep arriving at once (the bound is loose for a busy machine, and far below the
/// black hole's timeout, which each of its deliveries waits out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_costs_only_its_own_tenant() {
    let hole = black_hole().await;
    let healthy = Receiver::start(0).await;
    let mut c = config(None, None, &["127.0.0.0/8"]);
    c.webhooks.timeout = Duration::from_secs(10);
    c.shutdown_grace = Duration::from_millis(100); // the black hole's events are not waited for
    let s = Server::start(c).await;
    for _ in 0..50 {
        assert_eq!(dial_as(&s, KEY_A, &hole).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the lane of a is now stuck
    for round in 1..=3 {
        let sent = tokio::time::Instant::now();
        assert_eq!(dial_as(&s, KEY_B, &healthy.url).await.0, 200);
        let got = healthy.wait_for_within(2 * round, Duration::from_secs(8)).await;
        let took = sent.elapsed();
        assert_eq!(got.len(), 2 * round, "tenant b's webhooks arrive");
        eprintln!("round {round}: tenant b's webhooks arrived {took:?} after its dial was sent");
        assert!(took < Duration::from_secs(3), "round {round}: {took:?}");
    }
    s.stop().await;
}

/// A receiver down for a while, then back: every event of its tenant arrives, each accepted
/// exactly once and in order per call; meanwhile another tenant's commands and webhooks go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_comes_back_gets_every_event_once() {
    let down = Receiver::start(usize::MAX).await;
    let other = Receiver::start(0).await;
    let mut c = config(None, None, &["127.0.0.0/8"]);
    c.webhooks.attempts = 30;
    c.webhooks.backoff = Duration::from_millis(50);
    let s = Server::start(c).await;
    let mut calls = Vec::new();
    for _ in 0..40 {
        let (status, v) = dial_as(&s, KEY_A, &down.url).await;
        assert_eq!(status, 200);
        let id = v["data"]["call_control_id"].as_str().unwrap().to_owned();
        let q = json!({"queue_name": "q"});
        assert_eq!(
            s.req("POST", &format!("/v2/calls/{id}/actions/enqueue"), Some(KEY_A), Some(q)).await.0,
            200
        );
        calls.push(id);
    }
    for id in &calls[..20] {
        s.req("POST", &format!("/v2/calls/{id}/actions/hangup"), Some(KEY_A), Some(json!({}))).await;
    }
    // 40 × (initiated, answered, enqueued) + 20 × (dequeued, hangup).
    let expected = 40 * 3 + 20 * 2;
    for _ in 0..5 {
        assert_eq!(dial_as(&s, KEY_B, &other.url).await.0, 200);
    }
    assert_eq!(other.wait_for(10).await.len(), 10, "the other tenant is served while a's receiver is down");
    assert!(down.got.lock().is_empty());
    down.fail_next(0);
    let got = down.wait_for_within(expected, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // nothing more comes
    let got_now = down.got.lock().clone();
    assert_eq!((got.len(), got_now.len()), (expected, expected), "every event, none twice");
    let mut per_call: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for r in &got_now {
        let data = &r.body["data"];
        assert!(ids.insert(data["id"].as_str().unwrap()), "accepted once: {}", data["id"]);
        per_call
            .entry(data["payload"]["call_control_id"].as_str().unwrap())
            .or_default()
            .push(data["event_type"].as_str().unwrap());
    }
    for (i, id) in calls.iter().enumerate() {
        let mut order = vec!["call.initiated", "call.answered", "call.enqueued"];
        if i < 20 {
            order.extend(["call.dequeued", "call.hangup"]);
        }
        assert_eq!(per_call[id.as_str()], order, "call {i} in order");
    }
    s.stop().await;
}

/// A durable single node restarted with nothing left to send (no default URL, every event
/// delivered) still sends the later events of a call dialled before the restart with its
/// own URL: the outbox starts because the replay brought such a call back, not only when
/// another one is dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dialled_before_a_restart_still_gets_its_webhooks() {
    let own = Receiver::start(0).await;
    let data = tempfile::tempdir().unwrap();
    let durable = || config(None, None, &["127.0.0.0/8"]);
    let s = Server::start_in(data.path(), durable()).await;
    let (status, v) = dial_as(&s, KEY_A, &own.url).await;
    assert_eq!(status, 200, "{v}");
    let call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    assert_eq!(event_types(&own.wait_for(2).await), ["call.initiated", "call.answered"]);
    s.stop().await;

    let s = Server::start_in(data.path(), durable()).await;
    let enqueue = json!({"queue_name": "support"});
    let path = format!("/v2/calls/{call}/actions/enqueue");
    assert_eq!(s.req("POST", &path, Some(KEY_A), Some(enqueue)).await.0, 200);
    let got = own.wait_for_within(3, Duration::from_secs(10)).await;
    assert_eq!(
        event_types(&got),
        ["call.initiated", "call.answered", "call.enqueued"],
        "no backlog was sent again: only the new event came, through the outbox the call started"
    );
    s.stop().await;
}

/// Events with nowhere to go (no default URL, none of their call's) are handled as they come,
/// but their delivery marks are not written one per event: with the outbox running (another
/// tenant's call has a URL of its own), a hundred commands of such calls cost a mark a
/// second at most, and the mark still catches up with the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_no_destination_are_not_marked_one_by_one() {
    let own = Receiver::start(0).await;
    let s = Server::start(config(None, None, &["127.0.0.0/8"])).await;
    let (status, v) = dial_as(&s, KEY_A, &own.url).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(own.wait_for(2).await.len(), 2);
    let (before, started) = (s.durability.marks_written(), std::time::Instant::now());
    let calls = 50;
    for _ in 0..calls {
        let body = json!({"to": "+1", "from": "+2", "connection_id": "app"});
        let (status, v) = s.req("POST", "/v2/calls", Some(KEY_B), Some(body)).await;
        assert_eq!(status, 200, "{v}");
        let path = format!("/v2/calls/{}/actions/enqueue", v["data"]["call_control_id"].as_str().unwrap());
        let (status, v) = s.req("POST", &path, Some(KEY_B), Some(json!({"queue_name": "q"}))).await;
        assert_eq!(status, 200, "{v}");
    }
    let written = s.durability.marks_written() - before;
    // One a second for tenant b, and one for a's lane finishing its delivery.
    let most = started.elapsed().as_secs() + 2;
    assert!(written <= most, "{written} marks written for {} commands in {:?}", 2 * calls, started.elapsed());
    let records = 2 * calls as u64;
    let caught_up = std::time::Instant::now();
    while s.durability.stored_mark("b") != Some(records) {
        assert!(caught_up.elapsed() < Duration::from_secs(5), "mark {:?}", s.durability.stored_mark("b"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// The outbox of `engine` alone, in memory, started.
fn outbox(engine: &Engine, config: WebhookConfig) -> Webhooks {
    let webhooks = Webhooks::new(engine, Durability::in_memory(), Signer::generate(), config);
    webhooks.ensure_started();
    webhooks
}

/// The reader's subscription never overflows: a burst of commands while the reader cannot
/// run (one thread, no await in between) loses no event, with an engine whose other
/// subscribers would hold only two commands' events.
#[tokio::test]
async fn a_burst_while_the_reader_waits_loses_nothing() {
    let rx = Receiver::start(0).await;
    let engine = Engine::builder().event_capacity(2).build();
    let webhooks = outbox(&engine, WebhookConfig { url: Some(rx.url.clone()), ..WebhookConfig::default() });
    let tenant = engine.tenant("a");
    for _ in 0..100 {
        tenant.dial(&DialParams::new("+1", "+2", "app")).unwrap();
    }
    assert_eq!(rx.wait_for(200).await.len(), 200);
    let stats = &webhooks.stats;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((count(&stats.delivered), count(&stats.failed), count(&stats.pending)), (200, 0, 0));
    webhooks.shutdown(Duration::from_secs(1)).await;
}

/// A delivery given up on is counted and kept in the tenant's list of failures, with why.
#[tokio::test]
async fn a_refused_destination_is_a_counted_kept_failure() {
    let engine = Engine::builder().build();
    let webhooks = outbox(&engine, WebhookConfig::default());
    let mut dial = DialParams::new("+1", "+2", "app");
    dial.webhook_url = Some("http://localhost:9/hook".into());
    let call = engine.tenant("a").dial(&dial).unwrap().call_control_id;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..200 {
        if count(&webhooks.stats.failed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stats = &webhooks.stats;
    assert_eq!((count(&stats.refused), count(&stats.failed), count(&stats.pending)), (2, 2, 0));
    let failures = webhooks.failures.of("a");
    assert_eq!(
        failures.iter().map(|f| f.event_type).collect::<Vec<_>>(),
        ["call.initiated", "call.answered"]
    );
    assert!(failures.iter().all(|f| f.call_control_id == *call && f.attempts == 0), "{failures:?}");
    assert!(failures[0].error.contains("localhost resolves to no public or allowed address"), "{failures:?}");
    assert!(webhooks.failures.of("b").is_empty());
    webhooks.shutdown(Duration::from_secs(1)).await;
}
