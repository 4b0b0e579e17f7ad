//! The real server on a loopback port, driven over HTTP: every route, every error code,
//! auth and tenant isolation, webhooks (signatures, order, retry and failover), expiry
//! without traffic, the event stream, and shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use waitline_server::config::Config;

fn fast_webhooks(url: &str, failover: Option<&str>) -> Config {
    let mut c = Config::default();
    c.webhooks.url = Some(url.to_owned());
    c.webhooks.failover_url = failover.map(str::to_owned);
    c.webhooks.backoff = Duration::from_millis(20);
    c.webhooks.attempts = 2;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_with_telnyx_shapes() {
    let s = Server::start(Config::default()).await;
    let (status, v) =
        s.post("/v2/calls", json!({"to": "+1555", "from": "+1666", "connection_id": "app"})).await;
    assert_eq!(status, 200);
    let call = &v["data"];
    assert_eq!(call["record_type"], "call");
    assert_eq!(call["is_alive"], true);
    for k in ["call_control_id", "call_leg_id", "call_session_id"] {
        assert!(call[k].is_string(), "{k}");
    }
    let caller = call["call_control_id"].as_str().unwrap().to_owned();
    let agent = s.dial().await;

    let (status, v) =
        s.action(&caller, "enqueue", json!({"queue_name": "support", "max_wait_time_secs": 600})).await;
    assert_eq!((status, &v), (200, &json!({"data": {"result": "ok"}})));
    let (status, q) = s.get("/v2/queues/support").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            q["data"]["record_type"].as_str(),
            q["data"]["current_size"].as_u64(),
            q["data"]["max_size"].as_u64()
        ),
        (Some("queue"), Some(1), Some(100))
    );
    let (_, calls) = s.get("/v2/queues/support/calls").await;
    assert_eq!(calls["data"][0]["record_type"], "queue_call");
    assert_eq!(calls["data"][0]["queue_position"], 1);
    assert_eq!(
        calls["meta"],
        json!({"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 1})
    );
    let (status, qc) = s.get(&format!("/v2/queues/support/calls/{caller}")).await;
    assert_eq!((status, qc["data"]["call_control_id"].as_str()), (200, Some(caller.as_str())));

    // The SDK sends call_control_id with queue: it is ignored.
    let (status, _) = s.action(&agent, "bridge", json!({"queue": "support", "call_control_id": agent})).await;
    assert_eq!(status, 200);
    let (_, c) = s.get(&format!("/v2/calls/{caller}")).await;
    assert_eq!(c["data"]["state"], "bridged");

    let (status, _) = s.action(&caller, "enqueue", json!({"queue_name": "support"})).await;
    assert_eq!(status, 200);
    let (status, _) = s.action(&caller, "leave_queue", json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = s.action(&caller, "hangup", json!({})).await;
    assert_eq!(status, 200);
    let (_, c) = s.get(&format!("/v2/calls/{caller}")).await;
    assert_eq!((c["data"]["is_alive"].as_bool(), c["data"]["end_time"].is_string()), (Some(false), true));
    s.stop().await;
}

/// Telnyx's dial takes a `command_id` "to avoid duplicate commands": a dial retried with it
/// (an SDK retrying after a lost answer) answers the first call, across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_retried_with_its_command_id_makes_one_call_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body = json!({"to": "+1555", "from": "+1666", "connection_id": "app", "command_id": "dial-1"});
    let s = Server::start_in(dir.path(), Config::default()).await;
    let (status, first) = s.post("/v2/calls", body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let id = first["data"]["call_control_id"].as_str().unwrap().to_owned();
    let (status, again) = s.post("/v2/calls", body.clone()).await;
    assert_eq!((status, &again["data"]["call_control_id"]), (200, &first["data"]["call_control_id"]));
    let (status, v) =
        s.post("/v2/calls", json!({"to": "+1", "from": "+2", "connection_id": "a", "command_id": 5})).await;
    assert_eq!(
        (status, code(&v), &v["errors"][0]["source"]["pointer"]),
        (422, "10033", &json!("/command_id"))
    );
    let (status, v) =
        s.post("/v2/calls", json!({"to": "+1", "from": "+2", "connection_id": "a", "command_id": ""})).await;
    assert_eq!((status, code(&v)), (422, "10033"));
    s.action(&id, "enqueue", json!({"queue_name": "support"})).await;
    s.stop().await;

    let s = Server::start_in(dir.path(), Config::default()).await;
    let (status, after) = s.post("/v2/calls", body.clone()).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["data"]["call_control_id"], id.as_str());
    assert_eq!(after["data"]["state"], "queued", "the first call as it is now");
    let mut second = body.clone();
    second["command_id"] = json!("dial-2");
    let (status, other) = s.post("/v2/calls", second).await;
    assert_eq!(status, 200);
    assert_ne!(other["data"]["call_control_id"], id.as_str(), "another command id, another call");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_without_the_v2_prefix_and_decode_names() {
    let s = Server::start(Config::default()).await;
    let (status, _) = s.post("/queues", json!({"queue_name": "my queue/x", "max_size": 5})).await;
    assert_eq!(status, 200);
    let (status, v) = s.get("/v2/queues/my%20queue%2Fx").await;
    assert_eq!((status, v["data"]["name"].as_str()), (200, Some("my queue/x")));
    let (status, v) = s.post("/v2/queues/my%20queue%2Fx", json!({"max_size": 9})).await;
    assert_eq!((status, v["data"]["max_size"].as_u64()), (200, Some(9)));
    let (_, list) = s.get("/queues?page[number]=1&page[size]=1").await;
    assert_eq!(list["meta"]["total_results"], 1);
    let (status, v) = s.req("DELETE", "/queues/my%20queue%2Fx", Some(KEY_A), None).await;
    assert_eq!((status, v), (204, Value::Null));
    let (status, _) = s.req("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, v) = s.req("GET", "/v2/webhook_public_key", None, None).await;
    assert_eq!((status, v["data"]["public_key"].as_str()), (200, Some(s.signer_public.as_str())));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_with_the_telnyx_body() {
    let s =
        Server::start(Config { max_queues_per_tenant: 3, max_body_bytes: 1024, ..Config::default() }).await;
    let a = s.dial().await;
    let ended = s.dial().await;
    s.action(&ended, "hangup", json!({})).await;

    let expect = |(status, v): (u16, Value), want_status: u16, want_code: &str| {
        assert_eq!((status, code(&v)), (want_status, want_code), "{v}");
        let e = &v["errors"][0];
        assert!(e["title"].is_string() && e["detail"].is_string(), "{v}");
        v
    };
    expect(s.req("GET", "/v2/queues", None, None).await, 401, "10009");
    expect(s.req("GET", "/v2/queues", Some("wrong"), None).await, 401, "10009");
    let r = s
        .http
        .post(format!("{}/v2/calls", s.base))
        .bearer_auth(KEY_A)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "10015");
    let v = expect(s.action(&a, "enqueue", json!({"queue_name": 7})).await, 422, "10033");
    assert_eq!(v["errors"][0]["source"]["pointer"], "/queue_name");
    let v = expect(s.action(&a, "enqueue", json!({})).await, 422, "10004");
    assert_eq!(v["errors"][0]["source"]["pointer"], "/queue_name");
    let v = expect(
        s.action(&a, "enqueue", json!({"queue_name": "q", "max_wait_time_secs": 0})).await,
        422,
        "10033",
    );
    assert_eq!(v["errors"][0]["source"]["pointer"], "/max_wait_time_secs");
    expect(s.action(&a, "enqueue", json!({"queue_name": "q", "max_size": 1.5})).await, 422, "10033");
    expect(
        s.action(&a, "enqueue", json!({"queue_name": "q", "max_size": 99999999999999999999u128 as f64}))
            .await,
        422,
        "10033",
    );
    expect(s.action(&a, "enqueue", json!({"queue_name": "x".repeat(256)})).await, 422, "10033");
    expect(s.action(&a, "bridge", json!({"queue": "q", "park_after_unbridge": "other"})).await, 422, "10032");
    expect(s.action(&a, "bridge", json!({})).await, 422, "10004");
    expect(s.action(&a, "bridge", json!({"call_control_id": a})).await, 422, "10033");
    expect(s.action("v3:unknown", "hangup", json!({})).await, 422, "90015");
    expect(s.action(&ended, "hangup", json!({})).await, 422, "90018");
    expect(s.action(&a, "leave_queue", json!({})).await, 422, "95002");
    expect(s.action(&a, "bridge", json!({"queue": "nobody-here"})).await, 422, "95001");
    // A dead head: the callback details, with no client state left out rather than null.
    let dead = s.dial().await;
    s.action(&dead, "enqueue", json!({"queue_name": "dead", "keep_after_hangup": true})).await;
    s.action(&dead, "hangup", json!({})).await;
    let v = expect(s.action(&a, "bridge", json!({"queue": "dead"})).await, 422, "90018");
    let callback = v["errors"][0]["meta"]["call"].as_object().unwrap();
    assert_eq!(callback["call_control_id"], dead.as_str());
    assert!(!callback.contains_key("client_state"), "absent, not null: {callback:?}");
    s.action(&a, "enqueue", json!({"queue_name": "one", "max_size": 1})).await;
    expect(s.action(&a, "enqueue", json!({"queue_name": "one"})).await, 422, "90038");
    let b = s.dial().await;
    expect(s.action(&b, "enqueue", json!({"queue_name": "one"})).await, 422, "90036");
    expect(s.req("DELETE", "/v2/queues/one", Some(KEY_A), None).await, 400, "90050");
    expect(s.req("DELETE", "/v2/queues/none", Some(KEY_A), None).await, 404, "10005");
    expect(s.get("/v2/queues/none").await, 404, "10005");
    expect(s.get(&format!("/v2/queues/one/calls/{b}")).await, 404, "10005");
    expect(s.post("/v2/queues", json!({"queue_name": "one"})).await, 422, "95003");
    s.post("/v2/queues", json!({"queue_name": "two"})).await;
    s.post("/v2/queues", json!({"queue_name": "three"})).await;
    expect(s.post("/v2/queues", json!({"queue_name": "four"})).await, 422, "95004");
    expect(s.get("/v2/queues?page[size]=0").await, 422, "10033");
    expect(s.get("/v2/queues?page[number]=abc").await, 422, "10033");
    expect(s.get("/v2/nothing/here").await, 404, "10005");
    expect(s.action(&a, "dance", json!({})).await, 404, "10005");
    expect(s.req("PUT", "/v2/queues", Some(KEY_A), None).await, 405, "10005");
    expect(s.post("/v2/calls", json!({"to": "x".repeat(5000)})).await, 413, "10015");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_changes_nothing() {
    let s = Server::start(Config::default()).await;
    let a = s.dial().await;
    s.action(&a, "enqueue", json!({"queue_name": "other"})).await;
    s.action(&s.dial().await, "enqueue", json!({"queue_name": "full", "max_size": 1})).await;
    let before = (s.get("/v2/queues").await, s.get(&format!("/v2/calls/{a}")).await);
    for body in [
        json!({"queue_name": "full"}),
        json!({"queue_name": "new", "priority": 10}),
        json!({"queue_name": "new", "keep_after_hangup": "yes"}),
    ] {
        let (status, _) = s.action(&a, "enqueue", body).await;
        assert_eq!(status, 422);
    }
    let mut after = (s.get("/v2/queues").await, s.get(&format!("/v2/calls/{a}")).await);
    // call_duration moves with the clock; everything else must be equal.
    after.1.1["data"]["call_duration"] = before.1.1["data"]["call_duration"].clone();
    let strip = |mut v: Value| {
        for q in v["data"].as_array_mut().unwrap() {
            q["average_wait_time_secs"] = Value::Null;
            q["longest_wait_time_secs"] = Value::Null;
        }
        v
    };
    assert_eq!(strip(after.0.1), strip(before.0.1));
    assert_eq!(after.1, before.1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let s = Server::start(Config::default()).await;
    let a = s.dial().await;
    s.action(&a, "enqueue", json!({"queue_name": "support"})).await;
    let as_b = |m: &'static str, p: String, b: Option<Value>| {
        let s = &s;
        async move { s.req(m, &p, Some(KEY_B), b).await }
    };
    let (status, v) = as_b("GET", format!("/v2/calls/{a}"), None).await;
    assert_eq!((status, code(&v)), (422, "90015"));
    let (status, v) = as_b("POST", format!("/v2/calls/{a}/actions/hangup"), Some(json!({}))).await;
    assert_eq!((status, code(&v)), (422, "90015"));
    let (status, v) = as_b("GET", "/v2/queues/support".into(), None).await;
    assert_eq!((status, code(&v)), (404, "10005"));
    let (_, v) = as_b("GET", "/v2/queues".into(), None).await;
    assert_eq!(v["meta"]["total_results"], 0);
    let (_, v) = s.get("/v2/queues/support").await;
    assert_eq!(v["data"]["current_size"], 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_ordered_and_per_call_urls_win() {
    let rx = Receiver::start(0).await;
    let own = Receiver::start(0).await;
    let s = Server::start(allow_loopback(fast_webhooks(&rx.url, None))).await;
    // The operator's URL gets every tenant's events under the configured key; a URL the
    // tenant chose, under the tenant's own.
    rx.trust(&s.signer_public);
    own.trust(&s.public_key_of("a"));
    let a = s.dial_with(json!({"client_state": "aGk="})).await;
    let agent = s.dial_with(json!({"webhook_url": own.url})).await;
    s.action(&a, "enqueue", json!({"queue_name": "q"})).await;
    s.action(&agent, "bridge", json!({"queue": "q"})).await;
    s.action(&a, "hangup", json!({})).await;
    // a: initiated, answered, enqueued, dequeued, bridged, hangup.
    let got = rx.wait_for(6).await;
    let types: Vec<&str> = got.iter().map(|r| r.body["data"]["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["call.initiated", "call.answered", "call.enqueued", "call.dequeued", "call.bridged", "call.hangup"]
    );
    assert!(got.iter().all(|r| r.verified), "every signature verifies");
    let first = &got[0].body;
    assert_eq!(first["data"]["record_type"], "event");
    assert_eq!(first["data"]["payload"]["client_state"], "aGk=");
    assert_eq!(first["meta"], json!({"attempt": 1, "delivered_to": rx.url}));
    // The agent's events went to its own URL: initiated, answered, bridged, hangup.
    let agent_got = own.wait_for(4).await;
    assert_eq!(agent_got.len(), 4);
    assert!(agent_got.iter().all(|r| r.verified), "the call's own URL: the tenant's key");
    assert!(agent_got.iter().all(|r| r.body["data"]["payload"]["call_control_id"] == agent.as_str()));
    // The agent has no client state: the field is left out, never null.
    assert!(agent_got.iter().all(|r| r.body["data"]["payload"].get("client_state").is_none()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_then_fail_over() {
    let flaky = Receiver::start(1).await; // fails once, then accepts
    let dead = Receiver::start(usize::MAX).await;
    let failover = Receiver::start(0).await;
    let s = Server::start(fast_webhooks(&flaky.url, None)).await;
    flaky.trust(&s.signer_public);
    s.dial().await;
    let got = flaky.wait_for(2).await;
    assert_eq!(got[0].body["meta"]["attempt"], 2, "the first attempt failed, the retry counts 2");
    s.stop().await;

    let s = Server::start(fast_webhooks(&dead.url, Some(&failover.url))).await;
    failover.trust(&s.signer_public);
    s.dial().await;
    let got = failover.wait_for(2).await;
    assert_eq!(got[0].body["meta"]["attempt"], 3, "two attempts at the primary, then the failover");
    assert_eq!(got[0].body["meta"]["delivered_to"], failover.url.as_str());
    assert!(got[0].verified);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_expires_without_traffic() {
    let rx = Receiver::start(0).await;
    let s = Server::start(fast_webhooks(&rx.url, None)).await;
    let a = s.dial().await;
    s.action(&a, "enqueue", json!({"queue_name": "q", "max_wait_time_secs": 1})).await;
    // No request until the webhook says it happened.
    let got = rx.wait_for(4).await;
    let last = &got.last().unwrap().body["data"];
    assert_eq!(
        (last["event_type"].as_str(), last["payload"]["reason"].as_str()),
        (Some("call.dequeued"), Some("timeout"))
    );
    let (_, c) = s.get(&format!("/v2/calls/{a}")).await;
    assert_eq!(c["data"]["state"], "active");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_sends_the_tenants_events() {
    use futures_util::StreamExt;
    let s = Server::start(Config::default()).await;
    let resp = s.http.get(format!("{}/v2/events", s.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.req("POST", "/v2/calls", Some(KEY_B), Some(json!({"to": "1", "from": "2", "connection_id": "c"})))
        .await;
    let a = s.dial().await;
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains("call.answered") && tokio::time::Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(text.contains("event: call.initiated"), "{text}");
    assert!(text.contains(&a), "the tenant's own call");
    assert_eq!(text.matches("event: call.initiated").count(), 1, "not the other tenant's: {text}");
    drop(stream);
    s.stop().await;
}

/// An open stream awaits its subscription: an event reaches it as soon as it is committed,
/// after an idle spell as much as in a burst (the bound is loose: the machine may be busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reaches_an_open_stream_without_delay() {
    use futures_util::StreamExt;
    let s = Server::start(Config::default()).await;
    let resp = s.http.get(format!("{}/v2/events", s.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200); // subscribed before the answer
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await; // idle: nothing to wake for
        let sent = tokio::time::Instant::now();
        let a = s.dial().await;
        while !text.contains(&a) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("the event arrives")
                .expect("the stream stays open")
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let took = sent.elapsed();
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
    }
    drop(stream);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_webhook_url_works_without_a_default_url() {
    let rx = Receiver::start(0).await;
    let s = Server::start(allow_loopback(Config::default())).await;
    rx.trust(&s.public_key_of("a"));
    s.dial().await; // no URL anywhere: nothing to deliver
    let a = s.dial_with(json!({"webhook_url": rx.url})).await;
    s.action(&a, "hangup", json!({})).await;
    let got = rx.wait_for(3).await;
    let types: Vec<&str> = got.iter().map(|r| r.body["data"]["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["call.initiated", "call.answered", "call.hangup"]);
    assert!(got.iter().all(|r| r.verified && r.body["data"]["payload"]["call_control_id"] == a.as_str()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped() {
    let s = Server::start(Config { max_event_streams: 1, ..Config::default() }).await;
    let open = || s.http.get(format!("{}/v2/events", s.base)).bearer_auth(KEY_A).send();
    let first = open().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let second = open().await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    let v: Value = second.json().await.unwrap();
    assert_eq!(code(&v), "10011");
    drop(first);
    // The slot comes back once the server notices the client left.
    let mut reopened = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.dial().await; // an event makes the server write, and notice the closed stream
        let r = open().await.unwrap();
        if r.status().as_u16() == 200 {
            reopened = 200;
            break;
        }
    }
    assert_eq!(reopened, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams() {
    let s = Server::start(Config::default()).await;
    let stream = s.http.get(format!("{}/v2/events", s.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("shutdown does not wait for the stream");
    drop(stream);
}

/// Ended calls kept readable are bounded by the per-tenant call cap: a dial-and-hang-up loop
/// cannot grow the server's memory for the whole retention time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_calls_kept_are_capped_like_live_ones() {
    let s = Server::start(Config { max_calls_per_tenant: 2, ..Config::default() }).await;
    let mut ended = Vec::new();
    for _ in 0..4 {
        let c = s.dial().await;
        assert_eq!(s.action(&c, "hangup", json!({})).await.0, 200);
        ended.push(c);
    }
    for (i, c) in ended.iter().enumerate() {
        let (status, v) = s.get(&format!("/v2/calls/{c}")).await;
        if i < 2 {
            assert_eq!((status, code(&v)), (422, "90015"), "{v}");
        } else {
            assert_eq!((status, v["data"]["state"].as_str()), (200, Some("ended")), "{v}");
        }
    }
    s.stop().await;
}
