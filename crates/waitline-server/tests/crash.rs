//! The durability crash test: the real `waitline serve` on a data directory, 16 concurrent
//! clients each logging what was acknowledged, `kill -9` at a random moment, a restart on
//! the same directory, then: every acknowledged change is there, queues keep the order of
//! acknowledgement within a band with dense positions, and retrying the command that was in
//! flight with its `command_id` has no second effect.
//!
//! `WAITLINE_CRASH_SEEDS` sets how many seeds run (default 10), `WAITLINE_CRASH_SEED` runs
//! one.
#![allow(clippy::unwrap_used, clippy::zombie_processes)] // servers are killed and waited for on drop

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "crash-test-key";
const CLIENTS: usize = 16;
const SHARED_QUEUES: usize = 3;

/// A small deterministic generator (xorshift64*), so that a seed replays the same scripts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a client knows of one of its calls from the answers it got.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Active,
    Queued { queue: String, band: u64, enqueue_sent: Instant, enqueue_acked: Instant },
    Bridged { with: String },
    Ended,
}

/// A command to send: method, path, body, the calls it touches, and what they are after it.
type Step = (&'static str, String, Option<Value>, Vec<String>, Vec<(String, Known)>);

/// `POST /calls/{id}/actions/{action}` with a command id, leaving the call `after`.
fn call_action(id: &str, action: &str, command_id: &str, after: Known) -> Step {
    let path = format!("/calls/{id}/actions/{action}");
    ("POST", path, Some(json!({"command_id": command_id})), vec![id.to_owned()], vec![(id.to_owned(), after)])
}

/// A command sent and not answered when the server died.
#[derive(Clone, Debug)]
struct InFlight {
    path: String,
    body: Value,
    /// Calls whose state it may or may not have changed.
    touches: Vec<String>,
    /// What the calls are once it is applied (for a retry with its command id).
    after: Vec<(String, Known)>,
}

#[derive(Debug, Default)]
struct Client {
    calls: BTreeMap<String, Known>,
    in_flight: Option<InFlight>,
}

struct Server {
    child: Child,
    base: String,
}

/// A failing check must not leave a server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    start_with(dir, &[])
}

fn start_with(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waitline"))
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY, "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("WAITLINE_IN_MEMORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server stopped before it listened");
        if let Some(addr) = line.trim().strip_prefix("Listening on ") {
            break Server { child, base: format!("{addr}/v2") };
        }
        assert!(Instant::now() < deadline, "the server did not start");
    }
}

/// Sends a request; `None` when no answer came (the server is gone).
async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut r = http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(KEY);
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// One client's script, until the server dies (or `stop` passes).
async fn run_client(n: usize, seed: u64, base: String, stop: Instant) -> Client {
    let http = reqwest::Client::new();
    let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(n as u64 + 1) | 1);
    let mut me = Client::default();
    let own_queue = format!("own-{n}");
    let mut serial = 0u64;
    while Instant::now() < stop {
        serial += 1;
        let command_id = format!("c{n}-{serial}");
        let alive: Vec<String> =
            me.calls.iter().filter(|(_, k)| **k != Known::Ended).map(|(id, _)| id.clone()).collect();
        let active: Vec<String> =
            me.calls.iter().filter(|(_, k)| **k == Known::Active).map(|(id, _)| id.clone()).collect();
        // Choose a command from what the client knows.
        let (method, path, body, touches, after): Step = if alive.len() < 3 || rng.below(8) == 0 {
            let body = json!({"connection_id": "crash", "from": format!("+1555{n:04}"), "to": "+15550000"});
            ("POST", "/calls".into(), Some(body), vec![], vec![])
        } else {
            let id = alive[rng.below(alive.len() as u64) as usize].clone();
            match me.calls[&id].clone() {
                Known::Active if rng.below(5) == 0 => call_action(&id, "hangup", &command_id, Known::Ended),
                Known::Active if rng.below(3) == 0 && active.len() >= 2 => {
                    // Into the client's own queue: the next bridge takes it from there.
                    let path = format!("/calls/{id}/actions/enqueue");
                    let body = json!({"queue_name": own_queue, "command_id": command_id});
                    let now = Instant::now();
                    let after = Known::Queued {
                        queue: own_queue.clone(),
                        band: 0,
                        enqueue_sent: now,
                        enqueue_acked: now,
                    };
                    ("POST", path, Some(body), vec![id.clone()], vec![(id, after)])
                }
                Known::Active => {
                    let queue = format!("shared-{}", rng.below(SHARED_QUEUES as u64));
                    let band = rng.below(3);
                    let path = format!("/calls/{id}/actions/enqueue");
                    let body = json!({"queue_name": queue, "priority": band, "command_id": command_id});
                    let now = Instant::now();
                    let after = Known::Queued { queue, band, enqueue_sent: now, enqueue_acked: now };
                    ("POST", path, Some(body), vec![id.clone()], vec![(id, after)])
                }
                Known::Queued { queue, .. } if queue == own_queue => {
                    // A bridge takes the head of the queue: the one enqueued first.
                    let head = me
                        .calls
                        .iter()
                        .filter_map(|(cid, k)| match k {
                            Known::Queued { queue, enqueue_acked, .. } if *queue == own_queue => {
                                Some((*enqueue_acked, cid.clone()))
                            }
                            _ => None,
                        })
                        .min()
                        .map(|(_, cid)| cid);
                    let id = head.unwrap_or(id);
                    match active.iter().find(|a| **a != id) {
                        Some(agent) => {
                            let path = format!("/calls/{agent}/actions/bridge");
                            let after = vec![
                                (agent.clone(), Known::Bridged { with: id.clone() }),
                                (id.clone(), Known::Bridged { with: agent.clone() }),
                            ];
                            ("POST", path, Some(json!({"queue": own_queue})), vec![agent.clone(), id], after)
                        }
                        None => call_action(&id, "leave_queue", &command_id, Known::Active),
                    }
                }
                Known::Queued { queue, band, enqueue_sent, enqueue_acked } => match rng.below(3) {
                    0 => call_action(&id, "leave_queue", &command_id, Known::Active),
                    1 => {
                        let new_band = (band + 1 + rng.below(2)) % 3;
                        let path = format!("/queues/{queue}/calls/{id}");
                        let after = Known::Queued { queue, band: new_band, enqueue_sent, enqueue_acked };
                        (
                            "PATCH",
                            path,
                            Some(json!({"priority": new_band})),
                            vec![id.clone()],
                            vec![(id, after)],
                        )
                    }
                    _ => call_action(&id, "hangup", &command_id, Known::Ended),
                },
                Known::Bridged { with } => {
                    let path = format!("/calls/{id}/actions/hangup");
                    let after = vec![(id.clone(), Known::Ended), (with.clone(), Known::Ended)];
                    ("POST", path, Some(json!({"command_id": command_id})), vec![id, with], after)
                }
                Known::Ended => continue,
            }
        };
        let sent = Instant::now();
        let Some((status, answer)) = send(&http, &base, method, &path, body.as_ref()).await else {
            me.in_flight = Some(InFlight { path, body: body.unwrap_or(Value::Null), touches, after });
            return me;
        };
        assert!(
            (200..300).contains(&status),
            "client {n}: {method} {path} {body:?} answered {status} {answer}"
        );
        let acked = Instant::now();
        if path == "/calls" {
            let id = answer["data"]["call_control_id"].as_str().unwrap().to_owned();
            me.calls.insert(id, Known::Active);
            continue;
        }
        for (id, mut state) in after {
            if let Known::Queued { enqueue_sent, enqueue_acked, .. } = &mut state {
                if path.ends_with("/enqueue") {
                    (*enqueue_sent, *enqueue_acked) = (sent, acked);
                }
            }
            me.calls.insert(id, state);
        }
    }
    me
}

/// The call as the restarted server reports it.
async fn call(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let (status, body) = send(http, base, "GET", &format!("/calls/{id}"), None).await.unwrap();
    assert_eq!(status, 200, "{id} lost: {body}");
    body["data"].clone()
}

fn matches(known: &Known, seen: &Value) -> bool {
    match known {
        Known::Active => seen["state"] == "active",
        Known::Queued { queue, .. } => seen["state"] == "queued" && seen["queue"] == queue.as_str(),
        Known::Bridged { with } => seen["state"] == "bridged" && seen["bridged_with"] == with.as_str(),
        Known::Ended => seen["state"] == "ended",
    }
}

async fn crash_and_check(seed: u64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let mut rng = Rng(seed | 1);
    let run_for = Duration::from_millis(150 + rng.below(600));
    let stop = Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> =
        (0..CLIENTS).map(|n| tokio::spawn(run_client(n, seed, server.base.clone(), stop))).collect();
    tokio::time::sleep(run_for).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let mut clients: Vec<Client> =
        futures_util::future::join_all(clients).await.into_iter().map(Result::unwrap).collect();

    let server = start(dir.path());
    let http = reqwest::Client::new();
    let base = &server.base;
    let mut checked = 0;
    // Every acknowledged state is there, except for calls the command in flight touched.
    for (n, c) in clients.iter().enumerate() {
        let unsure: BTreeSet<&String> = c.in_flight.iter().flat_map(|f| &f.touches).collect();
        for (id, known) in &c.calls {
            let seen = call(&http, base, id).await;
            if unsure.contains(id) {
                continue;
            }
            assert!(
                matches(known, &seen),
                "seed {seed}, client {n}: {id} acknowledged {known:?}, found {seen}"
            );
            checked += 1;
        }
    }
    // Shared queues: dense positions, every acknowledged member there, in acknowledgement
    // order within a band.
    for q in 0..SHARED_QUEUES {
        let queue = format!("shared-{q}");
        let Some((200, page)) =
            send(&http, base, "GET", &format!("/queues/{queue}/calls?page[size]=250"), None).await
        else {
            continue; // never made
        };
        let members: Vec<(String, u64)> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (m["call_control_id"].as_str().unwrap().to_owned(), m["queue_position"].as_u64().unwrap())
            })
            .collect();
        let positions: Vec<u64> = members.iter().map(|m| m.1).collect();
        assert_eq!(
            positions,
            (1..=members.len() as u64).collect::<Vec<_>>(),
            "seed {seed}: {queue} positions"
        );
        let position: BTreeMap<&str, u64> = members.iter().map(|(id, p)| (id.as_str(), *p)).collect();
        let mut acked = Vec::new();
        for c in &clients {
            let unsure: BTreeSet<&String> = c.in_flight.iter().flat_map(|f| &f.touches).collect();
            for (id, known) in &c.calls {
                if let Known::Queued { queue: kq, band, enqueue_sent, enqueue_acked } = known {
                    if *kq == queue && !unsure.contains(id) {
                        let p = position.get(id.as_str()).copied();
                        assert!(p.is_some(), "seed {seed}: {id} acknowledged in {queue}, not there");
                        acked.push((id, *band, *enqueue_sent, *enqueue_acked, p.unwrap_or(0)));
                    }
                }
            }
        }
        for a in &acked {
            for b in &acked {
                if a.1 == b.1 && a.3 < b.2 {
                    assert!(
                        a.4 < b.4,
                        "seed {seed}: {} acknowledged before {} was sent, behind it in {queue}",
                        a.0,
                        b.0
                    );
                }
            }
        }
    }
    // The command in flight, sent again with its command id: at most one effect.
    for c in &mut clients {
        let Some(f) = c.in_flight.take() else { continue };
        if f.body.get("command_id").is_none() {
            continue;
        }
        let (status, answer) = send(&http, base, "POST", &f.path, Some(&f.body)).await.unwrap();
        assert!((200..300).contains(&status), "seed {seed}: retry of {} answered {status} {answer}", f.path);
        for (id, known) in &f.after {
            let seen = call(&http, base, id).await;
            assert!(
                matches(known, &seen),
                "seed {seed}: after the retry of {}, {id} is {seen}, not {known:?}",
                f.path
            );
        }
        // And once more: still no second effect.
        let (status, _) = send(&http, base, "POST", &f.path, Some(&f.body)).await.unwrap();
        assert!((200..300).contains(&status));
    }
    for q in 0..SHARED_QUEUES {
        if let Some((200, page)) =
            send(&http, base, "GET", &format!("/queues/shared-{q}/calls?page[size]=250"), None).await
        {
            let positions: Vec<u64> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["queue_position"].as_u64().unwrap())
                .collect();
            assert_eq!(
                positions,
                (1..=positions.len() as u64).collect::<Vec<_>>(),
                "seed {seed}: dense after retries"
            );
        }
    }
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

fn start_with_hooks(dir: &std::path::Path, hook: &str) -> Server {
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
    let (status, call) = send(&http, &server.base, "POST", "/calls", Some(&body)).await.unwrap();
    assert_eq!(status, 200);
    let id = call["data"]["call_control_id"].as_str().unwrap().to_owned();
    let enqueue = json!({"queue_name": "support"});
    send(&http, &server.base, "POST", &format!("/calls/{id}/actions/enqueue"), Some(&enqueue)).await.unwrap();
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
