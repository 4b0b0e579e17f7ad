//! The durability crash test: the real `waitline serve` on a data directory, 16 concurrent
//! clients each logging what was acknowledged, `kill -9` at a random moment, a restart on
//! the same directory, then: every acknowledged change is there, queues keep the order of
//! acknowledgement within a band with dense positions, and retrying the command that was in
//! flight with its `command_id` has no second effect. Odd seeds run the server with
//! `--fsync always`, even ones with `--fsync periodic` (an answer then waits only for the
//! write to the operating system, which a `kill -9` of the process does not lose).
//!
//! `WAITLINE_CRASH_SEEDS` sets how many seeds run (default 10), `WAITLINE_CRASH_SEED` runs
//! one.
#![allow(clippy::unwrap_used, clippy::zombie_processes)] // servers are killed and waited for on drop

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::crash_clients::{Client, Rng, Target, check_acknowledged, run_client, send};
use common::process::Process;
use serde_json::{Value, json};

const KEY: &str = "crash-test-key";
const CLIENTS: usize = 16;

fn start(dir: &std::path::Path) -> Process {
    start_with(dir, &[])
}

fn start_with(dir: &std::path::Path, extra: &[&str]) -> Process {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["--listen", "127.0.0.1:0", "--api-key", KEY, "--data-dir", dir];
    args.extend(extra);
    Process::start(&args)
}

async fn crash_and_check(seed: u64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let fsync = if seed % 2 == 0 { "periodic" } else { "always" };
    let mut server = start_with(dir.path(), &["--fsync", fsync]);
    let mut rng = Rng(seed | 1);
    let run_for = Duration::from_millis(150 + rng.below(600));
    let target = Target {
        base: server.base.clone(),
        key: KEY.to_owned(),
        may_switch: false,
        stop: Arc::new(AtomicBool::new(false)),
        acked: Arc::default(),
    };
    let clients: Vec<_> = (0..CLIENTS).map(|n| tokio::spawn(run_client(n, seed, target.clone()))).collect();
    tokio::time::sleep(run_for).await;
    server.kill_9();
    let mut clients: Vec<Client> =
        futures_util::future::join_all(clients).await.into_iter().map(Result::unwrap).collect();

    let server = start(dir.path());
    let http = reqwest::Client::new();
    let checked = check_acknowledged(&http, seed, &server.base, KEY, &mut clients).await;
    drop(server);
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let seeds: Vec<u64> = match std::env::var("WAITLINE_CRASH_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let n = std::env::var("WAITLINE_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
            (1..=n).collect()
        }
    };
    let mut total = 0;
    for seed in &seeds {
        total += crash_and_check(*seed).await;
    }
    assert!(total > 0, "no acknowledged call was checked");
    eprintln!("{} seeds, {total} acknowledged calls checked after kill -9", seeds.len());
}

/// A webhook receiver that refuses (500) until `accept` is set; it logs the event id of
/// every request and of every one it accepted.
#[derive(Clone, Default)]
struct Receiver {
    accept: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<parking_lot::Mutex<Vec<String>>>,
    accepted: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = v["data"]["id"].as_str().unwrap_or_default().to_owned();
                    me.seen.lock().push(id.clone());
                    if me.accept.load(std::sync::atomic::Ordering::SeqCst) {
                        me.accepted.lock().push(id);
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

fn start_with_hooks(dir: &std::path::Path, hook: &str) -> Process {
    start_with(dir, &["--webhook-url", hook, "--webhook-attempts", "1000", "--webhook-backoff-ms", "100"])
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_not_delivered_before_a_kill_9_are_delivered_after_it_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let http = reqwest::Client::new();
    let server = start_with_hooks(dir.path(), &hook);
    let body = json!({"connection_id": "crash", "from": "+1", "to": "+2"});
    let (status, call) = send(&http, &server.base, KEY, "POST", "/calls", Some(&body)).await.unwrap();
    assert_eq!(status, 200);
    let id = call["data"]["call_control_id"].as_str().unwrap().to_owned();
    let enqueue = json!({"queue_name": "support"});
    send(&http, &server.base, KEY, "POST", &format!("/calls/{id}/actions/enqueue"), Some(&enqueue))
        .await
        .unwrap();
    // The receiver refuses; the outbox keeps trying the first event (the call's later ones,
    // answered and enqueued, wait behind it: a call's webhooks keep their order) until the
    // server dies.
    until("the first event was tried twice", || receiver.seen.lock().len() >= 2).await;
    drop(server); // SIGKILL
    let tried: BTreeSet<String> = receiver.seen.lock().iter().cloned().collect();
    assert!(receiver.accepted.lock().is_empty());

    receiver.accept.store(true, std::sync::atomic::Ordering::SeqCst);
    let server = start_with_hooks(dir.path(), &hook);
    until("the three events were delivered after the restart", || {
        let accepted: BTreeSet<String> = receiver.accepted.lock().iter().cloned().collect();
        accepted.len() == 3 && tried.is_subset(&accepted)
    })
    .await;
    // Delivered: the mark is kept with the next commit (give the writer a moment), and a
    // third start sends nothing again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(server);
    let before = receiver.seen.lock().len();
    let server = start_with_hooks(dir.path(), &hook);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.seen.lock().len(), before, "delivered events were sent again");
    drop(server);
}
