//! What one tenant cannot do to another: obtain a webhook signature the other's receiver
//! accepts, hold every event-stream slot, or keep reading events with a key taken away.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use waitline_server::auth::KeySpec;
use waitline_server::config::Config;

/// The public key `GET /v2/webhook_public_key` gives with `key` (`None`: no key).
async fn published_key(s: &Server, key: Option<&str>) -> String {
    let (status, v) = s.req("GET", "/v2/webhook_public_key", key, None).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["public_key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_given_its_own_public_key() {
    let s = Server::start(Config::default()).await;
    let (a, b) = (published_key(&s, Some(KEY_A)).await, published_key(&s, Some(KEY_B)).await);
    assert_ne!(a, b);
    assert_eq!((a, b), (s.public_key_of("a"), s.public_key_of("b")));
    // Without a key: the tenant `default`'s, the configured key itself.
    assert_eq!(published_key(&s, None).await, s.signer_public);
    assert_ne!(s.signer_public, s.public_key_of("a"));
    // A key that is refused is refused, not answered with another tenant's public key.
    let (status, v) = s.req("GET", "/v2/webhook_public_key", Some("not-a-key"), None).await;
    assert_eq!((status, code(&v)), (401, "10009"), "{v}");
    s.stop().await;
}

/// Tenant a dials a call with one of tenant b's ids (ids are per tenant) and b's receiver as
/// its URL, then hangs it up: b's receiver gets a `call.hangup` naming its live call, but
/// signed with a's key, which b's receiver does not trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_sign_events_that_another_tenants_receiver_accepts() {
    let b_rx = Receiver::start(0).await;
    let s = Server::start(allow_loopback(Config::default())).await;
    b_rx.trust(&published_key(&s, Some(KEY_B)).await);
    let dial = json!({"to": "1", "from": "2", "connection_id": "b-app", "webhook_url": b_rx.url});
    let (status, v) = s.req("POST", "/v2/calls", Some(KEY_B), Some(dial)).await;
    assert_eq!(status, 200, "{v}");
    let b_call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    let own = b_rx.wait_for(2).await;
    assert!(own.len() == 2 && own.iter().all(|r| r.verified), "b's own events verify: {own:?}");
    let a_call = s
        .dial_with(json!({"call_control_id": b_call, "connection_id": "b-app", "webhook_url": b_rx.url, "client_state": "ZXZpbA=="}))
        .await;
    assert_eq!(a_call, b_call);
    assert_eq!(s.action(&a_call, "hangup", json!({})).await.0, 200);
    let got = b_rx.wait_for(5).await;
    let hangup =
        got.iter().find(|r| r.body["data"]["event_type"] == "call.hangup").expect("a's hangup arrives");
    assert!(!hangup.verified, "b's receiver verified a call.hangup of its live call made by tenant a");
    assert!(got.iter().filter(|r| r.verified).count() == 2, "only b's own events verify: {got:?}");
    drop(s);
}

/// What tenant a's own receiver gets verifies with a's key, never with b's (or the
/// `default` tenant's): handing it on to b's receiver proves nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_webhooks_verify_with_its_key_alone() {
    let a_rx = Receiver::start(0).await;
    let s = Server::start(allow_loopback(Config::default())).await;
    let (a_key, b_key) = (published_key(&s, Some(KEY_A)).await, published_key(&s, Some(KEY_B)).await);
    let a = s.dial_with(json!({"webhook_url": a_rx.url})).await;
    assert_eq!(s.action(&a, "hangup", json!({})).await.0, 200);
    let got = a_rx.wait_for(3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    // The receiver keeps no headers: verify again as each key's holder would.
    for (key, verifies) in [(&a_key, true), (&b_key, false), (&s.signer_public, false)] {
        a_rx.got.lock().clear();
        a_rx.trust(key);
        let again = s.dial_with(json!({"webhook_url": a_rx.url})).await;
        let got = a_rx.wait_for(2).await;
        assert!(got.len() == 2 && got.iter().all(|r| r.verified == verifies), "{again}: {got:?}");
    }
    drop(s);
}

/// With the default cap (a quarter of the server's, at least 1) tenant a's second stream is
/// refused while tenant b still gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_take_every_event_stream_slot() {
    let s = Server::start(Config { max_event_streams: 4, ..Config::default() }).await;
    let open = |k: &'static str| s.http.get(format!("{}/v2/events", s.base)).bearer_auth(k).send();
    let a1 = open(KEY_A).await.unwrap();
    assert_eq!(a1.status().as_u16(), 200);
    let a2 = open(KEY_A).await.unwrap();
    assert_eq!(a2.status().as_u16(), 429);
    let v: Value = a2.json().await.unwrap();
    assert_eq!(code(&v), "10011");
    assert!(v["errors"][0]["detail"].as_str().unwrap().contains("per-tenant cap"), "{v}");
    let b = open(KEY_B).await.unwrap();
    assert_eq!(b.status().as_u16(), 200, "tenant b is not locked out by tenant a");
    drop((a1, b));
    s.stop().await;
}

/// A tenant cap as configured; the server's cap still holds over all tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_cap_holds_over_the_tenant_caps() {
    let config = Config { max_event_streams: 2, max_event_streams_per_tenant: Some(2), ..Config::default() };
    let s = Server::start(config).await;
    let open = |k: &'static str| s.http.get(format!("{}/v2/events", s.base)).bearer_auth(k).send();
    let a = [open(KEY_A).await.unwrap(), open(KEY_A).await.unwrap()];
    assert_eq!(a.iter().map(|r| r.status().as_u16()).collect::<Vec<_>>(), [200, 200]);
    let b = open(KEY_B).await.unwrap();
    assert_eq!(b.status().as_u16(), 429);
    let v: Value = b.json().await.unwrap();
    assert_eq!(code(&v), "10011");
    assert!(!v["errors"][0]["detail"].as_str().unwrap().contains("per-tenant"), "{v}");
    drop(a);
    s.stop().await;
}

/// Reads `stream` until it ends (`true`) or `limit` passes (`false`), keeping the text.
async fn ends_within(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin),
    text: &mut String,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

/// A reload that takes a key away (or gives it to another tenant) ends the streams it
/// opened; a stream whose key stays goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_the_event_streams_of_keys_it_takes_away() {
    let s = Server::start(Config::default()).await;
    let spec = |k: &str, t: &str| KeySpec::parse(&format!("{k}:{t}")).unwrap();
    let (old, moved) = ("old-key-of-tenant-a-xyz", "moved-key-of-tenant-a-xyz");
    s.reloader.reload_keys(&[spec(KEY_A, "a"), spec(KEY_B, "b"), spec(old, "a"), spec(moved, "a")]);
    let open = |k: &'static str| s.http.get(format!("{}/v2/events", s.base)).bearer_auth(k).send();
    let (kept, revoked, reassigned) =
        (open(KEY_A).await.unwrap(), open(old).await.unwrap(), open(moved).await.unwrap());
    assert_eq!([kept.status(), revoked.status(), reassigned.status()].map(|s| s.as_u16()), [200; 3]);
    s.reloader.reload_keys(&[spec(KEY_A, "a"), spec(KEY_B, "b"), spec(moved, "b")]);
    let (status, _) = s.req("GET", "/v2/queues", Some(old), None).await;
    assert_eq!(status, 401, "the key is refused to new requests");
    let a = s.dial().await;
    for (name, response) in [("revoked", revoked), ("reassigned", reassigned)] {
        let (mut stream, mut text) = (response.bytes_stream(), String::new());
        assert!(
            ends_within(&mut stream, &mut text, Duration::from_secs(3)).await,
            "the {name} key's stream ends"
        );
        assert!(!text.contains(&a), "the {name} key read an event after the reload: {text}");
    }
    // The kept key's stream goes on, and tells the call made after the reload.
    let (mut stream, mut text) = (kept.bytes_stream(), String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !text.contains(&a) && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(text.contains(&a), "the kept key's stream goes on: {text}");
    s.stop().await;
}
