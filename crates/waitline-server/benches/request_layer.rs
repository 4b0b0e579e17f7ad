//! The cost of the request metrics alone: the whole service (in memory) driven in process
//! as a listener answers a request (`answering`: the router, the request timeout and the
//! counting), with no socket, metrics on against `--metrics off`, so the difference per
//! request is the counting's. Two routes: `GET /healthz` (next to nothing else to do, so the
//! layer's share shows most) and the enqueue of `scripts/bench.sh http`.
//!
//! `cargo bench -p waitline-server --bench request_layer`; for instructions per request
//! (steady under load, unlike times): `valgrind --tool=callgrind request_layer-* probe on N`
//! for two values of N, and the same with `off` (see `probe`).

use std::hint::black_box;
use std::time::Instant;

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use criterion::{Criterion, criterion_group};
use waitline_server::auth::KeySpec;
use waitline_server::config::Config;
use waitline_server::webhook::Signer;
use waitline_server::{AppState, answering};

const KEY: &str = "bench-key";
const CALLS: usize = 64;

/// The service as served.
trait Service: hyper::service::Service<Request<Body>, Response = Response, Error = Infallible> {}
impl<S: hyper::service::Service<Request<Body>, Response = Response, Error = Infallible>> Service for S {}

fn service(metrics: bool) -> impl Service {
    let mut config = Config::default();
    config.metrics.enabled = metrics;
    config.api_keys = vec![KeySpec::parse(&format!("{KEY}:bench")).expect("a key")];
    let engine = waitline_server::engine(&config);
    answering(AppState::new(engine, &config, &Signer::generate()), config.connections.request_timeout)
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
async fn answer(app: &impl Service, request: Request<Body>, status: StatusCode) {
    let Ok(response) = app.call(request).await;
    assert_eq!(response.status(), status);
    black_box(response);
}

async fn dial(app: &impl Service) -> String {
    let body = r#"{"connection_id":"c","from":"+1","to":"+2"}"#;
    let Ok(response) = app.call(request("POST", "/v2/calls", body)).await;
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("a body");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    v["data"]["call_control_id"].as_str().expect("an id").to_owned()
}

/// The service and the enqueue path of each of its calls.
fn fixture(rt: &tokio::runtime::Runtime, metrics: bool) -> (impl Service, Vec<String>) {
    let app = service(metrics);
    let paths = rt.block_on(async {
        let mut paths = Vec::new();
        for _ in 0..CALLS {
            paths.push(format!("/v2/calls/{}/actions/enqueue", dial(&app).await));
        }
        paths
    });
    (app, paths)
}

async fn healthz(app: &impl Service) {
    answer(app, request("GET", "/healthz", ""), StatusCode::OK).await;
}

/// The `k`th enqueue: each call moves between two queues, so every request is a real enqueue.
async fn enqueue(app: &impl Service, paths: &[String], k: usize) {
    let body = if (k / CALLS) % 2 == 0 { r#"{"queue_name":"q0"}"# } else { r#"{"queue_name":"q1"}"# };
    answer(app, request("POST", &paths[k % CALLS], body), StatusCode::OK).await;
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    for (metrics, label) in [(true, "metrics on"), (false, "metrics off")] {
        let (app, paths) = fixture(&rt, metrics);
        let mut g = c.benchmark_group("request_layer");
        g.bench_function(format!("GET /healthz, {label}"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        healthz(&app).await;
                    }
                    started.elapsed()
                })
            });
        });
        let mut k = 0_usize;
        g.bench_function(format!("POST enqueue, {label}"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        k += 1;
                        enqueue(&app, &paths, k).await;
                    }
                    started.elapsed()
                })
            });
        });
        g.finish();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// `request_layer probe on|off N`: N requests of each route, nothing else, for an instruction
/// count under callgrind that the machine's load does not move (two values of N: the
/// difference over the difference of N is the cost of one request of each route).
fn probe(metrics: &str, n: usize) {
    let rt = runtime();
    let (app, paths) = fixture(&rt, metrics == "on");
    rt.block_on(async {
        for k in 0..n {
            healthz(&app).await;
            enqueue(&app, &paths, k).await;
        }
    });
}

criterion_group!(benches, layer);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc; // as the server

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, probe_arg, metrics, n] = &args[..] {
        if probe_arg == "probe" {
            return probe(metrics, n.parse().expect("a number of requests"));
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
