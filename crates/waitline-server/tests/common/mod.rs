//! A real server on a free loopback port, a client for it, and a webhook receiver that
//! verifies every signature.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

pub mod crash_clients;
pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use waitline_server::auth::KeySpec;
use waitline_server::config::Config;
use waitline_server::webhook::Signer;
use waitline_server::webhook_destination::DestinationPolicy;

pub const KEY_A: &str = "key-tenant-a";
pub const KEY_B: &str = "key-tenant-b";

pub struct Server {
    pub base: String,
    /// The operator's metrics listener (`--metrics-listen`), when metrics are on.
    pub metrics_base: Option<String>,
    pub http: reqwest::Client,
    /// The public key of the configured signing key: the tenant `default`'s.
    pub signer_public: String,
    /// The configured signing key, which every tenant's derives from.
    pub signer: Signer,
    /// Reloads keys and certificates, as SIGHUP does.
    pub reloader: waitline_server::Reloader,
    /// The engine served, and its store (to look inside).
    pub engine: waitline::Engine,
    pub durability: waitline_server::durable::Durability,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The data directory: every test server is durable (removed when the server is dropped),
    /// unless it keeps its journal in PostgreSQL.
    _data: tempfile::TempDir,
}

impl Server {
    pub async fn start(config: Config) -> Self {
        Self::launch(TcpListener::bind("127.0.0.1:0").await.unwrap(), with_test_keys(config), None).await
    }

    /// A server keeping its journal in `dir` (which outlives it: a restart finds it there).
    pub async fn start_in(dir: &std::path::Path, config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::launch(listener, with_test_keys(config), Some(dir)).await
    }

    /// A server on `listener` with `config`'s own API keys (a node of several must know
    /// its address before it starts).
    pub async fn start_on(listener: TcpListener, config: Config) -> Self {
        Self::launch(listener, config, None).await
    }

    async fn launch(listener: TcpListener, mut config: Config, dir: Option<&std::path::Path>) -> Self {
        let signer = Signer::generate();
        let signer_public = signer.public_key_base64();
        let data = tempfile::tempdir().unwrap();
        if config.postgres_url.is_none() {
            config.data_dir = Some(dir.unwrap_or(data.path()).to_path_buf());
        }
        let (engine, durability) = waitline_server::open_engine(&config).unwrap();
        let metrics = config.metrics.enabled;
        let (served, kept) = (engine.clone(), durability.clone());
        let server = waitline_server::HttpServer::new(config, engine, durability, &signer).unwrap();
        let base = format!("{}://{}", server.scheme(), listener.local_addr().unwrap());
        let metrics_listener = match metrics {
            true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let metrics_base =
            metrics_listener.as_ref().map(|l| format!("{}://{}", server.scheme(), l.local_addr().unwrap()));
        let reloader = server.reloader();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, metrics_listener, async {
            let _ = rx.await;
        }));
        Self {
            base,
            metrics_base,
            http: reqwest::Client::new(),
            signer_public,
            signer,
            reloader,
            engine: served,
            durability: kept,
            stop: Some(tx),
            task: Some(task),
            _data: data,
        }
    }

    /// The public key that verifies `tenant`'s webhooks.
    pub fn public_key_of(&self, tenant: &str) -> String {
        self.signer.for_tenant(tenant).public_key_base64()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req("GET", path, Some(KEY_A), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req("POST", path, Some(KEY_A), Some(body)).await
    }

    pub async fn dial(&self) -> String {
        self.dial_with(json!({})).await
    }

    pub async fn dial_with(&self, extra: Value) -> String {
        let mut body = json!({"to": "+15550001", "from": "+15550002", "connection_id": "app"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = self.post("/v2/calls", body).await;
        assert_eq!(s, 200, "{v}");
        v["data"]["call_control_id"].as_str().unwrap().to_owned()
    }

    pub async fn action(&self, id: &str, action: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/v2/calls/{id}/actions/{action}"), body).await
    }
}

/// `config` with the API keys of tenants `a` and `b`.
fn with_test_keys(mut config: Config) -> Config {
    config.api_keys =
        vec![KeySpec::parse(&format!("{KEY_A}:a")).unwrap(), KeySpec::parse(&format!("{KEY_B}:b")).unwrap()];
    config
}

/// `config` with the loopback network allowed as a destination of calls' own webhook URLs
/// (the receivers of the tests listen there).
pub fn allow_loopback(mut config: Config) -> Config {
    config.webhooks.allow = DestinationPolicy::new(&["127.0.0.0/8"]).unwrap();
    config
}

/// The error code of an error answer.
pub fn code(v: &Value) -> &str {
    v["errors"][0]["code"].as_str().unwrap_or("")
}

/// One webhook as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    pub verified: bool,
}

/// A webhook receiver; answers 500 to the first `fail_first` requests.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// The bodies of the requests answered 500.
    pub refused: Arc<Mutex<Vec<Value>>>,
    pub public_key: Arc<Mutex<Option<String>>>,
    fail_first: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Rx {
    got: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<Vec<Value>>>,
    public_key: Arc<Mutex<Option<String>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn receive(State(rx): State<Rx>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if rx.fail_first.load(Ordering::SeqCst) > 0 {
        rx.fail_first.fetch_sub(1, Ordering::SeqCst);
        rx.refused.lock().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let verified = rx.public_key.lock().as_deref().is_some_and(|k| verify(k, &headers, &body));
    let body = serde_json::from_slice(&body).unwrap();
    rx.got.lock().push(Received { body, verified });
    StatusCode::OK
}

pub fn verify(public_key: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(ts), Some(sig)) = (headers.get("telnyx-timestamp"), headers.get("telnyx-signature-ed25519"))
    else {
        return false;
    };
    let key: [u8; 32] = b64.decode(public_key).unwrap().try_into().unwrap();
    let Ok(sig) = b64.decode(sig.as_bytes()) else { return false };
    let Ok(sig): Result<[u8; 64], _> = sig.try_into() else { return false };
    let mut msg = ts.as_bytes().to_vec();
    msg.push(b'|');
    msg.extend_from_slice(body);
    VerifyingKey::from_bytes(&key).unwrap().verify(&msg, &Signature::from_bytes(&sig)).is_ok()
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        Self::start_on("127.0.0.1", fail_first).await
    }

    /// A receiver listening on `ip` (a loopback address).
    pub async fn start_on(ip: &str, fail_first: usize) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let rx = Rx {
            got: Arc::default(),
            refused: Arc::default(),
            public_key: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let app = Router::new().route("/hook", post(receive)).with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/hook"),
            got: rx.got,
            refused: rx.refused,
            public_key: rx.public_key,
            fail_first: rx.fail_first,
        }
    }

    /// Answers 500 to the next `n` requests (`usize::MAX`: until told otherwise, 0: no more).
    pub fn fail_next(&self, n: usize) {
        self.fail_first.store(n, Ordering::SeqCst);
    }

    pub fn trust(&self, public_key: &str) {
        *self.public_key.lock() = Some(public_key.to_owned());
    }

    /// Waits until `n` webhooks arrived (at most 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_for_within(n, Duration::from_secs(10)).await
    }

    /// Waits until `n` webhooks arrived, at most `limit`.
    pub async fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.got.lock().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.got.lock().clone()
    }
}
