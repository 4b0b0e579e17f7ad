//! Requests sent to the server's router in-process: never a panic, never a 5xx, every error
//! in the Telnyx shape, and nothing changed by a rejected request.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;
use tower::ServiceExt;
use waitline::{Clock, DialParams, EnqueueParams, PageRequest, Tenant};
use waitline_server::AppState;
use waitline_server::auth::KeySpec;
use waitline_server::config::Config;
use waitline_server::webhook::Signer;

const KEY: &str = "fuzz-key";
const METHODS: [&str; 6] = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"];
const WORDS: [&str; 16] = [
    "v2",
    "calls",
    "queues",
    "actions",
    "enqueue",
    "leave_queue",
    "bridge",
    "hangup",
    "transfer",
    "events",
    "healthz",
    "webhook_public_key",
    "c0",
    "c1",
    "q0",
    "q%201",
];

/// One piece of a path.
#[derive(Debug, Arbitrary)]
pub enum Segment {
    /// A word the router knows (or an id of the seeded state).
    Word(u8),
    /// Anything.
    Raw(String),
}

/// The `Authorization` header.
#[derive(Debug, Arbitrary)]
pub enum AuthHeader {
    /// None at all.
    Missing,
    /// The right key.
    Good,
    /// Anything.
    Raw(Vec<u8>),
}

/// A request: method, path, query, auth and body, all chosen by the fuzzer.
#[derive(Debug, Arbitrary)]
pub struct HttpRequest {
    /// Index into the methods, or any method when out of range.
    pub method: u8,
    /// Any method (used when `method` is out of range).
    pub raw_method: String,
    /// Path segments.
    pub path: Vec<Segment>,
    /// Query string.
    pub query: Option<String>,
    /// Auth header.
    pub auth: AuthHeader,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpRequest {
    fn method(&self) -> String {
        METHODS.get(self.method as usize).map_or_else(|| self.raw_method.clone(), |m| (*m).to_owned())
    }

    fn uri(&self) -> String {
        let mut uri = String::new();
        for s in &self.path {
            uri.push('/');
            match s {
                Segment::Word(w) => uri.push_str(WORDS[*w as usize % WORDS.len()]),
                Segment::Raw(r) => uri.push_str(r),
            }
        }
        if uri.is_empty() {
            uri.push('/');
        }
        if let Some(q) = &self.query {
            uri.push('?');
            uri.push_str(q);
        }
        uri
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

/// A fresh server state: calls `c0` (queued in `q0`) and `c1` (active), tenant `t`.
pub(crate) fn seeded_state() -> (AppState, Tenant) {
    let (clock, _) = Clock::manual(crate::model::START);
    let engine = waitline::Engine::builder()
        .clock(clock)
        .max_queues_per_tenant(8)
        .max_live_calls_per_tenant(8)
        .build();
    let config =
        Config { api_keys: vec![KeySpec::plain(KEY, "t")], max_body_bytes: 4096, ..Config::default() };
    let state = AppState::new(
        engine.clone(),
        &config,
        &Signer::from_base64_seed("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("seed"),
    );
    let tenant = engine.tenant("t");
    for id in ["c0", "c1"] {
        let mut p = DialParams::new("+1", "+2", "app");
        p.call_control_id = Some(id.into());
        tenant.dial(&p).expect("seed call");
    }
    tenant.enqueue("c0", &EnqueueParams::new("q0")).expect("seed enqueue");
    (state, tenant)
}

/// Everything a request could change, in a comparable form.
fn snapshot(t: &Tenant) -> String {
    let mut s = String::new();
    for q in t.queues(PageRequest::new(1, 250)).map(|p| p.data).unwrap_or_default() {
        s.push_str(&format!("{q:?}\n{:?}\n", t.queue_calls(&q.name, PageRequest::new(1, 250))));
    }
    for id in ["c0", "c1"] {
        s.push_str(&format!("{:?}\n", t.call(id)));
    }
    s.push_str(&format!("live={}\n", t.live_calls()));
    s
}

/// Sends requests one after the other to one seeded server and checks each answer.
///
/// # Errors
/// A 5xx, an error body not in the Telnyx shape, a refused request that changed state, or a
/// broken engine invariant.
pub fn check_requests(requests: &[HttpRequest]) -> Result<(), String> {
    let (state, tenant) = seeded_state();
    let router = waitline_server::router(state.clone());
    for r in requests.iter().take(8) {
        let Ok(method) = Method::from_bytes(r.method().as_bytes()) else { continue };
        let mut builder =
            Request::builder().method(method).uri(r.uri()).header("content-type", "application/json");
        match &r.auth {
            AuthHeader::Missing => {}
            AuthHeader::Good => builder = builder.header("authorization", format!("Bearer {KEY}")),
            AuthHeader::Raw(b) => builder = builder.header("authorization", b.as_slice()),
        }
        let Ok(request) = builder.body(Body::from(r.body.clone())) else { continue };
        send(&router, &tenant, request, &state)?;
    }
    Ok(())
}

/// Sends one request and checks the answer (shared with the JSON-body target).
pub(crate) fn send(
    router: &axum::Router,
    tenant: &Tenant,
    request: Request<Body>,
    state: &AppState,
) -> Result<(), String> {
    let what = format!("{} {}", request.method(), request.uri());
    // A HEAD answer has no body by definition (HTTP), so only its status can be checked.
    let head = request.method() == axum::http::Method::HEAD;
    let before = snapshot(tenant);
    let response = runtime().block_on(router.clone().oneshot(request)).map_err(|e| format!("{what}: {e}"))?;
    let status = response.status().as_u16();
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // The event stream never ends: its status and type are what can be checked.
        return if status == 200 {
            Ok(())
        } else {
            Err(format!("{what}: event stream with status {status}"))
        };
    }
    let bytes = runtime()
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .map_err(|e| format!("{what}: body {e}"))?;
    if status >= 500 {
        return Err(format!("{what}: status {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if status == 409 {
        return Err(format!("{what}: 409 for a client mistake"));
    }
    if status >= 400 && !head {
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{what}: error body is not JSON: {e}"))?;
        let e = &v["errors"][0];
        let code_ok =
            e["code"].as_str().is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
        if !code_ok || !e["title"].is_string() || !e["detail"].is_string() {
            return Err(format!("{what}: error body not in the Telnyx shape: {v}"));
        }
        // The only refusal that changes state: a bridge that found a dead head removes it.
        let dead_head = e["code"] == "90018" && e["meta"]["call"].is_object();
        if !dead_head && snapshot(tenant) != before {
            return Err(format!("{what}: refused with {status} but state changed"));
        }
    }
    state.engine().check_invariants().map_err(|e| format!("{what}: {e}"))
}
