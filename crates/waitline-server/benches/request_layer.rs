//! The cost of the request metrics alone: the whole service (`router`, in memory) driven in
//! process, with no socket, metrics on against `--metrics off`, so the difference per request
//! is the counting layer's. Two routes: `GET /healthz` (next to nothing else to do, so the
//! layer's share shows most) and the enqueue of `scripts/bench.sh http`.
//!
//! `cargo bench -p waitline-server --bench request_layer`

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use waitline_server::auth::KeySpec;
use waitline_server::config::Config;
use waitline_server::webhook::Signer;
use waitline_server::{AppState, router};

const KEY: &str = "bench-key";
const CALLS: usize = 64;

fn service(metrics: bool) -> Router {
    let mut config = Config::default();
    config.metrics.enabled = metrics;
    config.api_keys = vec![KeySpec::parse(&format!("{KEY}:bench")).expect("a key")];
    let engine = waitline_server::engine(&config);
    router(AppState::new(engine, &config, &Signer::generate()))
}

fn request(method: &str, path: &str, body: &'static str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request")
}

/// Answers `request` and checks its status.
async fn answer(app: &Router, request: Request<Body>, status: StatusCode) {
    let response = tower::Service::call(&mut app.clone(), request).await.expect("infallible");
    assert_eq!(response.status(), status);
    black_box(response);
}

async fn dial(app: &Router) -> String {
    let body = r#"{"connection_id":"c","from":"+1","to":"+2"}"#;
    let response =
        tower::Service::call(&mut app.clone(), request("POST", "/v2/calls", body)).await.expect("infallible");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("a body");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    v["data"]["call_control_id"].as_str().expect("an id").to_owned()
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    for (metrics, label) in [(true, "metrics on"), (false, "metrics off")] {
        let app = service(metrics);
        let calls: Vec<String> = rt.block_on(async {
            let mut calls = Vec::new();
            for _ in 0..CALLS {
                calls.push(dial(&app).await);
            }
            calls
        });
        let paths: Vec<String> = calls.iter().map(|c| format!("/v2/calls/{c}/actions/enqueue")).collect();
        let mut g = c.benchmark_group("request_layer");
        g.bench_function(format!("GET /healthz, {label}"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        answer(&app, request("GET", "/healthz", ""), StatusCode::OK).await;
                    }
                    started.elapsed()
                })
            });
        });
        // Each call moves between two queues: every request is a real enqueue.
        let mut k = 0_usize;
        g.bench_function(format!("POST enqueue, {label}"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let mut took = Duration::ZERO;
                    for _ in 0..n {
                        k += 1;
                        let body = if (k / CALLS) % 2 == 0 {
                            r#"{"queue_name":"q0"}"#
                        } else {
                            r#"{"queue_name":"q1"}"#
                        };
                        let r = request("POST", &paths[k % CALLS], body);
                        let started = Instant::now();
                        answer(&app, r, StatusCode::OK).await;
                        took += started.elapsed();
                    }
                    took
                })
            });
        });
        g.finish();
    }
}

criterion_group!(benches, layer);
criterion_main!(benches);
