//! The clients of the crash and failover tests and the checks made after a crash: each
//! client runs a seeded script of commands against the service, logging what each answer
//! acknowledged, until its answer does not come (the server died) or it is told to stop.
//! Then, on the server that has its state: every acknowledged change is there, queues keep
//! the order of acknowledgement within a band with dense positions, and the command that
//! was in flight, sent again with its `command_id`, has one effect at most.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The queues every client of a tenant shares.
pub const SHARED_QUEUES: usize = 3;

/// A small deterministic generator (xorshift64*), so that a seed replays the same scripts.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a client knows of one of its calls from the answers it got.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
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

/// A command sent and not answered (or answered 503 while its tenant switched nodes).
#[derive(Clone, Debug)]
pub struct InFlight {
    pub path: String,
    pub body: Value,
    /// Calls whose state it may or may not have changed.
    pub touches: Vec<String>,
    /// What the calls are once it is applied (for a retry with its command id).
    pub after: Vec<(String, Known)>,
}

#[derive(Debug, Default)]
pub struct Client {
    pub calls: BTreeMap<String, Known>,
    pub in_flight: Option<InFlight>,
    /// Commands acknowledged.
    pub acked: u64,
}

/// Where a client sends its commands, as whom, and when it stops.
#[derive(Clone)]
pub struct Target {
    /// The API's base, `http://ADDR/v2`.
    pub base: String,
    pub key: String,
    /// Whether a 503 is expected (the tenant's bucket may switch nodes): it ends the client
    /// as a lost answer does, its command in flight. Otherwise any answer but a 2xx fails.
    pub may_switch: bool,
    /// Set to stop the client after its current command.
    pub stop: Arc<AtomicBool>,
    /// Counts the commands acknowledged (shared by the clients of a tenant, say).
    pub acked: Arc<AtomicU64>,
}

/// Sends a request; `None` when no answer came (the server is gone).
pub async fn send(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut r = http.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// Client `n`'s script (seeded by `seed`), until its server dies, `target.stop` is set, or
/// 30 s pass.
pub async fn run_client(n: usize, seed: u64, target: Target) -> Client {
    // A server that is paused (`SIGSTOP`) accepts connections and never answers: no answer
    // within the timeout is a lost answer, like a dead server's.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(n as u64 + 1) | 1);
    let mut me = Client::default();
    let own_queue = format!("own-{n}");
    let mut serial = 0u64;
    while Instant::now() < deadline && !target.stop.load(Ordering::SeqCst) {
        serial += 1;
        let command_id = format!("c{n}-{serial}");
        let alive: Vec<String> =
            me.calls.iter().filter(|(_, k)| **k != Known::Ended).map(|(id, _)| id.clone()).collect();
        let active: Vec<String> =
            me.calls.iter().filter(|(_, k)| **k == Known::Active).map(|(id, _)| id.clone()).collect();
        // Choose a command from what the client knows.
        let (method, path, body, touches, after): Step = if alive.len() < 3 || rng.below(8) == 0 {
            let from = format!("+1555{n:04}");
            let body =
                json!({"connection_id": "crash", "from": from, "to": "+15550000", "command_id": command_id});
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
        let answered = match send(&http, &target.base, &target.key, method, &path, body.as_ref()).await {
            Some((503, _)) if target.may_switch => None,
            answered => answered,
        };
        let Some((status, answer)) = answered else {
            me.in_flight = Some(InFlight { path, body: body.unwrap_or(Value::Null), touches, after });
            return me;
        };
        assert!(
            (200..300).contains(&status),
            "client {n}: {method} {path} {body:?} answered {status} {answer}"
        );
        let acked = Instant::now();
        me.acked += 1;
        target.acked.fetch_add(1, Ordering::SeqCst);
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

/// The call as the server with the state reports it.
async fn call(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let (status, body) = send(http, base, key, "GET", &format!("/calls/{id}"), None).await.unwrap();
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

/// The positions of a shared queue's members (`None`: never made).
async fn members(http: &reqwest::Client, base: &str, key: &str, queue: &str) -> Option<Vec<(String, u64)>> {
    let Some((200, page)) =
        send(http, base, key, "GET", &format!("/queues/{queue}/calls?page[size]=250"), None).await
    else {
        return None;
    };
    let members = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["call_control_id"].as_str().unwrap().to_owned(), m["queue_position"].as_u64().unwrap()))
        .collect();
    Some(members)
}

/// The checks after a crash, on the server at `base` that has the state of the tenant of
/// `key`, whose clients are `clients` (their commands in flight are taken and retried);
/// returns how many acknowledged calls were checked.
pub async fn check_acknowledged(
    http: &reqwest::Client,
    seed: u64,
    base: &str,
    key: &str,
    clients: &mut [Client],
) -> usize {
    let mut checked = 0;
    // Every acknowledged state is there, except for calls the command in flight touched.
    for (n, c) in clients.iter().enumerate() {
        let unsure: BTreeSet<&String> = c.in_flight.iter().flat_map(|f| &f.touches).collect();
        for (id, known) in &c.calls {
            let seen = call(http, base, key, id).await;
            if unsure.contains(id) {
                continue;
            }
            assert!(
                matches(known, &seen),
                "seed {seed}, {key}, client {n}: {id} acknowledged {known:?}, found {seen}"
            );
            checked += 1;
        }
    }
    // Shared queues: dense positions, every acknowledged member there, in acknowledgement
    // order within a band.
    for q in 0..SHARED_QUEUES {
        let queue = format!("shared-{q}");
        let Some(members) = members(http, base, key, &queue).await else { continue };
        let positions: Vec<u64> = members.iter().map(|m| m.1).collect();
        assert_eq!(
            positions,
            (1..=members.len() as u64).collect::<Vec<_>>(),
            "seed {seed}, {key}: {queue} positions"
        );
        let position: BTreeMap<&str, u64> = members.iter().map(|(id, p)| (id.as_str(), *p)).collect();
        let mut acked = Vec::new();
        for c in clients.iter() {
            let unsure: BTreeSet<&String> = c.in_flight.iter().flat_map(|f| &f.touches).collect();
            for (id, known) in &c.calls {
                if let Known::Queued { queue: kq, band, enqueue_sent, enqueue_acked } = known {
                    if *kq == queue && !unsure.contains(id) {
                        let p = position.get(id.as_str()).copied();
                        assert!(p.is_some(), "seed {seed}, {key}: {id} acknowledged in {queue}, not there");
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
                        "seed {seed}, {key}: {} acknowledged before {} was sent, behind it in {queue}",
                        a.0,
                        b.0
                    );
                }
            }
        }
    }
    // The command in flight, sent again with its command id: at most one effect.
    for c in clients.iter_mut() {
        let Some(f) = c.in_flight.take() else { continue };
        if f.body.get("command_id").is_none() {
            continue;
        }
        let (status, answer) = send(http, base, key, "POST", &f.path, Some(&f.body)).await.unwrap();
        assert!((200..300).contains(&status), "seed {seed}: retry of {} answered {status} {answer}", f.path);
        if f.path == "/calls" {
            // A dial: made before the crash or by this retry, and made once.
            let dialled = &answer["data"]["call_control_id"];
            assert_eq!(answer["data"]["state"], "active", "seed {seed}: {answer}");
            let (status, again) = send(http, base, key, "POST", &f.path, Some(&f.body)).await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(
                &again["data"]["call_control_id"], dialled,
                "seed {seed}: a dial retried made two calls"
            );
            continue;
        }
        for (id, known) in &f.after {
            let seen = call(http, base, key, id).await;
            assert!(
                matches(known, &seen),
                "seed {seed}, {key}: after the retry of {}, {id} is {seen}, not {known:?}",
                f.path
            );
        }
        // And once more: still no second effect.
        let (status, _) = send(http, base, key, "POST", &f.path, Some(&f.body)).await.unwrap();
        assert!((200..300).contains(&status));
    }
    for q in 0..SHARED_QUEUES {
        if let Some(members) = members(http, base, key, &format!("shared-{q}")).await {
            let positions: Vec<u64> = members.iter().map(|m| m.1).collect();
            assert_eq!(
                positions,
                (1..=positions.len() as u64).collect::<Vec<_>>(),
                "seed {seed}, {key}: dense after retries"
            );
        }
    }
    checked
}
