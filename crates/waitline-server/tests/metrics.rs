//! `GET /metrics` after a scripted scenario: the exact values of the gauges and counters,
//! the tenant's view on the main listener, the operator's on its own listener, and the cap
//! on queue labels.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use std::time::Duration;

use common::{KEY_A, KEY_B, Receiver, Server};
use serde_json::json;
use waitline_server::config::Config;

/// Every sample of a scrape, by its name and labels as written (`name{a="x",b="y"}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(base: &str, key: Option<&str>) -> (u16, String, String) {
    let mut r = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, kind, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_scripted_scenario_scrapes_to_exact_values() {
    let mut config = Config::default();
    config.metrics.max_queues = 2;
    let s = Server::start(config).await;
    // Tenant a: queues a1, support, zz1 and zz2 (name order); the cap keeps a1 and support.
    let mut callers = Vec::new();
    for queue in ["support", "support", "support", "a1", "zz1", "zz2"] {
        let c = s.dial().await;
        assert_eq!(s.action(&c, "enqueue", json!({"queue_name": queue})).await.0, 200);
        callers.push(c);
    }
    let agent = s.dial().await;
    assert_eq!(
        s.action(&agent, "bridge", json!({"queue": "support", "call_control_id": agent})).await.0,
        200
    );
    assert_eq!(s.action(&callers[1], "hangup", json!({})).await.0, 200);
    // Tenant b: one caller waiting.
    let (status, v) = s
        .req("POST", "/v2/calls", Some(KEY_B), Some(json!({"to": "+1", "from": "+2", "connection_id": "c"})))
        .await;
    assert_eq!(status, 200);
    let b_call = v["data"]["call_control_id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .req(
            "POST",
            &format!("/v2/calls/{b_call}/actions/enqueue"),
            Some(KEY_B),
            Some(json!({"queue_name": "sales"})),
        )
        .await;
    assert_eq!(status, 200);
    // Refused and unknown requests are counted too, under their route and status.
    assert_eq!(s.req("GET", "/v2/queues", Some("wrong"), None).await.0, 401);
    assert_eq!(s.req("GET", "/v2/no/such/path/123", Some(KEY_A), None).await.0, 404);

    let operator = s.metrics_base.clone().unwrap();
    let (status, kind, text) = scrape(&operator, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    let m = samples(&text);
    let q = |name: &str, tenant: &str, queue: &str| {
        let key = format!("{name}{{tenant=\"{tenant}\",queue=\"{queue}\"}}");
        *m.get(&key).unwrap_or_else(|| panic!("{key} missing in\n{text}"))
    };
    let support = |name: &str| q(name, "a", "support");
    assert_eq!(support("waitline_queue_calls_waiting"), 1.0, "3 joined, one bridged, one hung up");
    assert_eq!(support("waitline_queue_enqueued_total"), 3.0);
    assert_eq!(support("waitline_queue_bridged_within_service_level_total"), 1.0);
    assert_eq!(support("waitline_queue_service_level_ratio"), 0.5, "1 in time of 2 answered or abandoned");
    assert_eq!(support("waitline_queue_longest_wait_seconds"), 0.0, "the scenario takes under a second");
    assert_eq!(support("waitline_queue_wait_seconds_count"), 2.0);
    let support_reason = |reason: &str| {
        m[&format!("waitline_queue_dequeued_total{{tenant=\"a\",queue=\"support\",reason=\"{reason}\"}}")]
    };
    assert_eq!(["bridged", "hangup", "leave", "timeout"].map(support_reason), [1.0, 1.0, 0.0, 0.0]);
    let bucket = |le: &str| {
        m[&format!("waitline_queue_wait_seconds_bucket{{tenant=\"a\",queue=\"support\",le=\"{le}\"}}")]
    };
    assert_eq!([bucket("5"), bucket("1800"), bucket("+Inf")], [2.0, 2.0, 2.0], "cumulative");
    assert_eq!(q("waitline_queue_calls_waiting", "a", "a1"), 1.0);
    // zz1 and zz2 are past the cap: summed.
    assert_eq!(q("waitline_queue_calls_waiting", "a", "_other"), 2.0);
    assert_eq!(q("waitline_queue_enqueued_total", "a", "_other"), 2.0);
    assert!(!text.contains("queue=\"zz1\""), "no label past the cap");
    assert!(q("waitline_queue_estimated_wait_seconds", "a", "support") >= 0.0);
    assert!(
        !m.contains_key("waitline_queue_service_level_ratio{tenant=\"a\",queue=\"a1\"}"),
        "none answered yet"
    );
    assert_eq!(q("waitline_queue_calls_waiting", "b", "sales"), 1.0);
    // Per tenant: the hung-up caller has ended.
    assert_eq!(m["waitline_tenant_live_calls{tenant=\"a\"}"], 6.0);
    assert_eq!(m["waitline_tenant_queues{tenant=\"a\"}"], 4.0);
    assert_eq!(m["waitline_tenant_live_calls{tenant=\"b\"}"], 1.0);
    // The service's own series.
    let requests = |method: &str, route: &str, status: u16| {
        let key = format!(
            "waitline_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        );
        m.get(&key).copied().unwrap_or(0.0)
    };
    assert_eq!(
        requests("POST", "/v2/calls/{call_control_id}/actions/enqueue", 200),
        7.0,
        "the route template with the action"
    );
    assert_eq!(requests("POST", "/v2/calls/{call_control_id}/actions/bridge", 200), 1.0);
    assert_eq!(requests("POST", "/v2/calls", 200), 8.0);
    assert_eq!(requests("GET", "/v2/queues", 401), 1.0);
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert!(!text.contains("no/such"), "never the raw path");
    assert_eq!(m["waitline_http_request_duration_seconds_count{method=\"POST\",route=\"/v2/calls\"}"], 8.0);
    assert_eq!(m["waitline_webhook_deliveries_total{outcome=\"delivered\"}"], 0.0, "no webhook URL");
    assert_eq!(m["waitline_webhook_pending"], 0.0);
    assert_eq!(m["waitline_service_level_threshold_seconds"], 20.0);
    assert!(m["waitline_journal_sync_seconds_count"] >= 1.0, "the test server is durable");
    assert_eq!(
        m["waitline_journal_sync_seconds_bucket{le=\"+Inf\"}"],
        m["waitline_journal_sync_seconds_count"]
    );

    // The main listener: a key sees its own tenant only, and nothing of the service's.
    assert_eq!(scrape(&s.base, None).await.0, 401);
    let (status, _, text) = scrape(&s.base, Some(KEY_A)).await;
    assert_eq!(status, 200);
    let own = samples(&text);
    assert_eq!(own["waitline_queue_calls_waiting{tenant=\"a\",queue=\"support\"}"], 1.0);
    assert!(!text.contains("tenant=\"b\""), "{text}");
    assert!(!text.contains("waitline_http_requests") && !text.contains("waitline_journal"), "{text}");
    let (_, _, text) = scrape(&s.base, Some(KEY_B)).await;
    assert!(text.contains("tenant=\"b\"") && !text.contains("tenant=\"a\""), "{text}");
    // The metrics listener serves nothing else.
    let other = reqwest::Client::new().get(format!("{operator}/v2/queues")).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 404);
    s.stop().await;
}

#[tokio::test]
async fn metrics_off_serves_and_counts_nothing() {
    let mut config = Config::default();
    config.metrics.enabled = false;
    let s = Server::start(config).await;
    assert!(s.metrics_base.is_none());
    assert_eq!(scrape(&s.base, Some(KEY_A)).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn queue_names_are_escaped_in_labels() {
    let s = Server::start(Config::default()).await;
    let c = s.dial().await;
    assert_eq!(s.action(&c, "enqueue", json!({"queue_name": "a \"b\" \\ c"})).await.0, 200);
    let (_, _, text) = scrape(&s.base, Some(KEY_A)).await;
    assert!(text.contains(r#"waitline_queue_calls_waiting{tenant="a",queue="a \"b\" \\ c"} 1"#), "{text}");
    s.stop().await;
}

/// The operator's scrape once `done` holds of it (at most 10 s).
async fn scrape_until(s: &Server, done: impl Fn(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let base = s.metrics_base.clone().unwrap();
    for _ in 0..200 {
        let m = samples(&scrape(&base, None).await.2);
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the metrics never got there: {}", scrape(&base, None).await.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outcomes_and_attempts_are_counted() {
    let rx = Receiver::start(1).await; // fails once, then accepts
    let mut config = Config::default();
    config.webhooks.url = Some(rx.url.clone());
    config.webhooks.backoff = Duration::from_millis(20);
    config.webhooks.attempts = 2;
    let s = Server::start(config).await;
    let delivered = "waitline_webhook_deliveries_total{outcome=\"delivered\"}";
    let failed = "waitline_webhook_deliveries_total{outcome=\"failed\"}";
    let attempts = "waitline_webhook_attempt_duration_seconds_count";
    // A dial makes call.initiated and call.answered: the first takes two attempts.
    s.dial().await;
    let m = scrape_until(&s, |m| m[delivered] == 2.0).await;
    assert_eq!((m[failed], m[attempts]), (0.0, 3.0));
    assert_eq!(m["waitline_webhook_attempt_duration_seconds_bucket{le=\"+Inf\"}"], 3.0);
    // Then every attempt fails: two events, two attempts each.
    rx.fail_next(usize::MAX);
    s.dial().await;
    let m = scrape_until(&s, |m| m[failed] == 2.0 && m["waitline_webhook_pending"] == 0.0).await;
    assert_eq!((m[delivered], m[attempts]), (2.0, 7.0));
    s.stop().await;
}
