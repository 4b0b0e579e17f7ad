//! HTTP load benchmark, loopback only, bounded in time: waitline's real server against an
//! axum hello-world (same connections, same load generator), and against Redis used as the
//! queue store (sorted set: ZADD, ZPOPMIN, ZRANK, ZREM) at the same concurrency.
//!
//! `scripts/bench.sh http` builds what it needs and runs this; by hand:
//! `http_load TARGET_DIR [SECONDS] [CONNECTIONS]` with `waitline` and `hello_server` built in
//! release in TARGET_DIR. Redis is used when `redis-server` is on the PATH.
//! `http_load TARGET_DIR SECONDS CONNECTIONS metrics ROUNDS` runs only the metrics on/off
//! comparison, in ROUNDS rounds (each run printed).
//! `http_load TARGET_DIR SECONDS CONNECTIONS durable ROUNDS` runs only the durable cases: in
//! memory, `--fsync always` and `--fsync periodic` alternated ROUNDS times, every run
//! printed with the server's CPU time per request, so that a machine shared with other
//! work shows in the spread.
//! `http_load TARGET_DIR SECONDS CONNECTIONS postgres ROUNDS POSTGRES_URL` runs only the
//! store comparison: one node over PostgreSQL (a database made on that server for the run,
//! dropped after it) and one over SQLite, both `--fsync always`, alternated ROUNDS times,
//! each run with the CPU per request of the server and of PostgreSQL's backends serving it.
//! `http_load TARGET_DIR SECONDS CONNECTIONS cluster ROUNDS POSTGRES_URL` runs only three
//! nodes (`--node-url`, requests spread round-robin) against one node, over many tenants,
//! each on a database of its own made for the run on that server.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KEY: &str = "bench-key";

/// A child process killed when dropped.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &str, args: &[&str]) -> Server {
    Server(
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server"),
    )
}

async fn wait_port(addr: &str) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} did not come up");
}

/// A keep-alive HTTP/1.1 connection (just enough of the protocol for the benchmark).
struct Http {
    s: TcpStream,
    buf: Vec<u8>,
    host: String,
    key: String,
}

impl Http {
    async fn connect(addr: &str) -> Self {
        Self::connect_as(addr, KEY).await
    }

    /// A connection whose requests carry API key `key` (its tenant's).
    async fn connect_as(addr: &str, key: &str) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).ok();
        Self { s, buf: Vec::with_capacity(4096), host: addr.to_owned(), key: key.to_owned() }
    }

    /// Sends one request, returns the status and body.
    async fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.key,
            body.len()
        );
        self.s.write_all(req.as_bytes()).await.expect("write");
        // Read whole chunks; a response is complete once its head and body are in.
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                    self.buf.drain(..end + 4 + len);
                    return (status, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A Redis connection speaking RESP.
struct Redis {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Redis {
    async fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect redis");
        s.set_nodelay(true).ok();
        let (r, w) = s.into_split();
        Self { r: BufReader::new(r), w }
    }

    async fn cmd(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes()).await.expect("write");
        self.read_reply().await;
    }

    async fn line(&mut self) -> String {
        let mut l = Vec::new();
        while !l.ends_with(b"\r\n") {
            l.push(self.r.read_u8().await.expect("read"));
        }
        String::from_utf8_lossy(&l[..l.len() - 2]).into_owned()
    }

    fn read_reply(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let l = self.line().await;
            match l.as_bytes().first() {
                Some(b'$') => {
                    let n: i64 = l[1..].parse().unwrap_or(-1);
                    if n >= 0 {
                        let mut b = vec![0; n as usize + 2];
                        self.r.read_exact(&mut b).await.expect("bulk");
                    }
                }
                Some(b'*') => {
                    let n: i64 = l[1..].parse().unwrap_or(0);
                    for _ in 0..n.max(0) {
                        self.read_reply().await;
                    }
                }
                _ => {}
            }
        })
    }
}

#[derive(Default)]
struct Tally {
    ops: u64,
    lat: Vec<u32>, // microseconds
}

impl Tally {
    fn merge(mut self, o: Self) -> Self {
        self.ops += o.ops;
        self.lat.extend(o.lat);
        self
    }
    /// The latency at quantile `q` (0 to 1), in milliseconds, of latencies sorted.
    fn quantile_ms(&self, q: f64) -> f64 {
        self.lat.get((self.lat.len() as f64 * q) as usize).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// What a case measured.
#[derive(Clone, Copy)]
struct Run {
    /// Requests per second.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `conns` connections for `secs`, each calling `op(conn_index, iteration)`.
async fn load<C, F, Fut>(
    conns: usize,
    secs: f64,
    connect: impl Fn(usize) -> Fut + Clone + Send + 'static,
    op: F,
) -> Run
where
    C: Send + 'static,
    Fut: std::future::Future<Output = C> + Send,
    F: Fn(&mut C, usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>
        + Send
        + Sync
        + 'static,
{
    let op = Arc::new(op);
    let mut clients = Vec::new();
    for i in 0..conns {
        clients.push(connect.clone()(i).await);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut k = 0u64;
                while Instant::now() < deadline {
                    let s = Instant::now();
                    op(&mut c, i, k).await;
                    t.lat.push(s.elapsed().as_micros() as u32);
                    t.ops += 1;
                    k += 1;
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        total = total.merge(t.await.expect("task"));
    }
    let rate = total.ops as f64 / start.elapsed().as_secs_f64();
    total.lat.sort_unstable();
    Run { rate, p50_ms: total.quantile_ms(0.5), p99_ms: total.quantile_ms(0.99) }
}

/// One HTTP request of a case: method, path, body.
type HttpCall = (&'static str, String, String);

/// `conns` keep-alive connections to `addr` for `secs`, each sending `request(conn, k)`. Every
/// answer must be a success: a benchmark of refusals would measure nothing.
async fn http_case(
    addr: &'static str,
    conns: usize,
    secs: f64,
    request: impl Fn(usize, u64) -> HttpCall + Send + Sync + 'static,
) -> Run {
    http_case_on(Arc::new(vec![(addr.to_owned(), KEY.to_owned())]), conns, secs, request).await
}

/// [`http_case`] with connection `i` to the address of `targets[i % targets.len()]`, with
/// its API key.
async fn http_case_on(
    targets: Arc<Vec<(String, String)>>,
    conns: usize,
    secs: f64,
    request: impl Fn(usize, u64) -> HttpCall + Send + Sync + 'static,
) -> Run {
    let request = Arc::new(request);
    load(
        conns,
        secs,
        move |i| {
            let targets = targets.clone();
            async move {
                let (addr, key) = &targets[i % targets.len()];
                Http::connect_as(addr, key).await
            }
        },
        move |c: &mut Http, i, k| {
            let (method, path, body) = request(i, k);
            Box::pin(async move {
                let (status, answer) = c.call(method, &path, &body).await;
                assert!(status < 400, "{method} {path}: {status} {answer}");
            })
        },
    )
    .await
}

/// `conns` Redis connections for `secs`, each sending the command `command(conn, k)`.
async fn redis_case(
    addr: &str,
    conns: usize,
    secs: f64,
    command: impl Fn(usize, u64) -> Vec<String> + Send + Sync + 'static,
) -> Run {
    let (addr, command) = (addr.to_owned(), Arc::new(command));
    let connect = move |_| {
        let a = addr.clone();
        async move { Redis::connect(&a).await }
    };
    load(conns, secs, connect, move |c: &mut Redis, i, k| {
        let args = command(i, k);
        Box::pin(async move {
            c.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        })
    })
    .await
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn row(name: &str, ours: Run, base: Run, target: f64) {
    let ratio = ours.rate / base.rate;
    println!(
        "| {name} | {:.0} /s (p99 {:.2} ms) | {:.0} /s (p99 {:.2} ms) | {ratio:.2}x | >= {target}x | {} |",
        ours.rate,
        ours.p99_ms,
        base.rate,
        base.p99_ms,
        if ratio >= target { "yes" } else { "**no**" }
    );
}

async fn dial(c: &mut Http) -> String {
    let (_, body) = c.call("POST", "/v2/calls", r#"{"connection_id":"b","from":"+1","to":"+2"}"#).await;
    let start = body.find("\"call_control_id\":\"").map(|i| i + 19).expect("dial");
    body[start..start + body[start..].find('"').expect("id end")].to_owned()
}

/// `n` calls dialed on `addr`, one after another.
async fn dial_many(addr: &str, n: usize) -> Arc<Vec<String>> {
    let mut c = Http::connect(addr).await;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(dial(&mut c).await);
    }
    Arc::new(v)
}

/// Enqueue: each connection moves its own call between two queues named after `prefix`, so
/// every request is a real, successful enqueue.
fn moves(prefix: &str, ids: Arc<Vec<String>>) -> impl Fn(usize, u64) -> HttpCall + Send + Sync + 'static {
    let prefix = prefix.to_owned();
    move |i: usize, k: u64| -> HttpCall {
        let body = format!(r#"{{"queue_name":"{prefix}-{}"}}"#, k % 2);
        ("POST", format!("/v2/calls/{}/actions/enqueue", ids[i]), body)
    }
}

/// `metrics ROUNDS` after the first three arguments: only the metrics comparison, in that
/// many rounds.
fn metrics_only(args: &[String]) -> Option<usize> {
    match args.get(4..6)? {
        [what, rounds] if what == "metrics" => rounds.parse().ok(),
        _ => None,
    }
}

/// Metrics: the same enqueues on two fresh servers of one binary, one with the request
/// metrics (the default) and one with `--metrics off`, in `rounds` rounds whose order
/// alternates (on then off, off then on, ...) so that a drift of the machine's load falls on
/// both alike. Prints every run and the mean of each side.
async fn metrics_on_off(start: &impl Fn(&str, &[&str]) -> Server, conns: usize, secs: f64, rounds: usize) {
    println!(
        "\n### Metrics on vs off ({conns} connections, the enqueue workload above, {rounds} rounds in alternating order)\n"
    );
    let (on_addr, off_addr) = ("127.0.0.1:18187", "127.0.0.1:18186");
    let (_on, _off) = (start(on_addr, &[]), start(off_addr, &["--metrics", "off"]));
    wait_port(on_addr).await;
    wait_port(off_addr).await;
    let (on_ids, off_ids) = (dial_many(on_addr, conns).await, dial_many(off_addr, conns).await);
    println!("| round | metrics on | metrics off | ratio |\n|---|---|---|---|");
    let (mut on_runs, mut off_runs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Fresh queues each run: a run starts its moves from the first queue again.
        let prefix = format!("metrics-{round}");
        let on_case = || http_case(on_addr, conns, secs, moves(&prefix, on_ids.clone()));
        let off_case = || http_case(off_addr, conns, secs, moves(&prefix, off_ids.clone()));
        let (on, off) = if round % 2 == 0 {
            let on = on_case().await;
            (on, off_case().await)
        } else {
            let off = off_case().await;
            (on_case().await, off)
        };
        let order = if round % 2 == 0 { "on, off" } else { "off, on" };
        println!(
            "| {} ({order}) | {:.0} /s (p99 {:.2} ms) | {:.0} /s (p99 {:.2} ms) | {:.4}x |",
            round + 1,
            on.rate,
            on.p99_ms,
            off.rate,
            off.p99_ms,
            on.rate / off.rate
        );
        on_runs.push(on);
        off_runs.push(off);
    }
    let mean = |runs: &[Run]| {
        let n = runs.len() as f64;
        let mean_of = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / n;
        Run { rate: mean_of(|r| r.rate), p50_ms: mean_of(|r| r.p50_ms), p99_ms: mean_of(|r| r.p99_ms) }
    };
    println!("\n| case | metrics on | metrics off | ratio | target | met |\n|---|---|---|---|---|---|");
    row("enqueue, metrics on vs `--metrics off` (means)", mean(&on_runs), mean(&off_runs), 0.97);
}

/// `waitline serve` keeping its changes in `data_dir` with `--fsync policy`.
/// With `metrics`, the operator's metrics on that address (the journal's commits).
fn durable_server(
    dir: &str,
    addr: &str,
    data_dir: &std::path::Path,
    policy: &str,
    metrics: Option<&str>,
) -> Server {
    let dir_arg = data_dir.to_str().expect("a UTF-8 path");
    let mut args =
        vec!["serve", "--listen", addr, "--api-key", KEY, "--data-dir", dir_arg, "--fsync", policy];
    if let Some(metrics) = metrics {
        args.extend(["--metrics-listen", metrics]);
    }
    spawn(&format!("{dir}/waitline"), &args)
}

/// The journal's commits so far and their total time in seconds, from the operator's
/// metrics at `addr`.
async fn journal_commits(addr: &str) -> Option<(f64, f64)> {
    let (_, text) = Http::connect(addr).await.call("GET", "/metrics", "").await;
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    Some((value("waitline_journal_sync_seconds_count")?, value("waitline_journal_sync_seconds_sum")?))
}

/// Records per commit and the mean commit time (written, and synced with `always`) over a
/// run of `requests` requests, from the commits before and after it.
fn commit_figures(before: Option<(f64, f64)>, after: Option<(f64, f64)>, requests: f64) -> String {
    match before.zip(after) {
        Some(((c0, s0), (c1, s1))) if c1 > c0 => format!(
            ", {:.1} records a commit, commit {:.2} ms",
            requests / (c1 - c0),
            (s1 - s0) / (c1 - c0) * 1e3
        ),
        _ => String::new(),
    }
}

/// A run's figures: requests/s, p50 and p99, and the server's CPU time per request.
fn figures(run: Run, cpu_micros: Option<f64>) -> String {
    let cpu = cpu_micros.map_or_else(String::new, |c| format!(", {c:.1} µs CPU"));
    format!("{:.0} /s (p50 {:.2} ms, p99 {:.2} ms{cpu})", run.rate, run.p50_ms, run.p99_ms)
}

/// Nanoseconds process `pid` has spent on a CPU, all its threads (Linux's schedstat);
/// `None` elsewhere. On a machine shared with other work a process's CPU time per request
/// is steadier than its throughput.
fn cpu_nanos(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// CPU nanoseconds of all of `servers` so far.
fn servers_cpu_nanos(servers: &[&Server]) -> Option<u64> {
    servers.iter().map(|s| cpu_nanos(s.0.id())).sum()
}

/// `durable ROUNDS` after the first three arguments: only the durable cases, in that many
/// rounds.
fn durable_only(args: &[String]) -> Option<usize> {
    match args.get(4..6)? {
        [what, rounds] if what == "durable" => rounds.parse().ok(),
        _ => None,
    }
}

/// One side of a comparison run in alternated rounds: a server, or the nodes of a cluster.
struct Contender<'a> {
    /// The processes serving it: their CPU time is its.
    servers: Vec<&'a Server>,
    /// Where connection `i` goes, with which API key: `targets[i % targets.len()]`.
    targets: Arc<Vec<(String, String)>>,
    /// Its operator metrics' address, if it journals: the journal's commits.
    metrics: Option<&'static str>,
    /// CPU time spent for it outside its process so far, in nanoseconds (PostgreSQL's
    /// backends serving it).
    helpers: Option<Box<dyn Fn() -> Option<u64>>>,
}

impl<'a> Contender<'a> {
    /// One server at `addr`, for the default API key.
    fn single(server: &'a Server, addr: &str, metrics: Option<&'static str>) -> Self {
        let targets = Arc::new(vec![(addr.to_owned(), KEY.to_owned())]);
        Self { servers: vec![server], targets, metrics, helpers: None }
    }
}

/// The enqueue workload on each of `contenders` in turn, `rounds` times, odd rounds in the
/// reverse order so that a drift of the machine's load falls on all alike. Returns per
/// round each contender's run (in the contenders' order) and its figures: requests/s, p50,
/// p99, CPU per request (its process, and its helpers'), records per journal commit.
async fn alternated(
    contenders: &[Contender<'_>],
    secs: f64,
    conns: usize,
    rounds: usize,
) -> Vec<Vec<(Run, String)>> {
    let mut ids = Vec::new();
    for c in contenders {
        // One call per connection, dialed where that connection goes, as its tenant.
        let mut calls = Vec::new();
        for i in 0..conns {
            let (addr, key) = &c.targets[i % c.targets.len()];
            wait_port(addr).await;
            calls.push(dial(&mut Http::connect_as(addr, key).await).await);
        }
        ids.push(Arc::new(calls));
    }
    let mut results = Vec::new();
    for round in 0..rounds {
        // Fresh queues each round: a run starts its moves from the first queue again.
        let prefix = format!("round-{round}");
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut runs = Vec::new();
        for i in order {
            let c = &contenders[i];
            let commits = match c.metrics {
                Some(m) => journal_commits(m).await,
                None => None,
            };
            let helpers = c.helpers.as_ref().and_then(|h| h());
            let cpu_before = servers_cpu_nanos(&c.servers);
            let run = http_case_on(c.targets.clone(), conns, secs, moves(&prefix, ids[i].clone())).await;
            let requests = run.rate * secs;
            let cpu = cpu_before
                .zip(servers_cpu_nanos(&c.servers))
                .map(|(b, a)| (a - b) as f64 / 1000.0 / requests);
            let mut text = figures(run, cpu);
            if let Some(after) = c.helpers.as_ref().and_then(|h| h())
                && let Some(before) = helpers
            {
                text += &format!(" + {:.1} µs in PostgreSQL", (after - before) as f64 / 1000.0 / requests);
            }
            if let Some(m) = c.metrics {
                text += &commit_figures(commits, journal_commits(m).await, requests);
            }
            runs.push((i, (run, text)));
        }
        runs.sort_by_key(|r| r.0);
        results.push(runs.into_iter().map(|r| r.1).collect());
    }
    results
}

/// Mean, min and max of ratios.
fn ratio_range(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!("mean {mean:.2}x (min {min:.2}x, max {max:.2}x)")
}

/// The durable cases alone: in memory, `always` and `periodic` alternated `rounds` times on
/// three servers started together (data directories in `TMPDIR`), each run printed with
/// its ratio to the in-memory run of its round and each server's CPU time per request.
async fn durable_rounds(dir: &str, secs: f64, conns: usize, rounds: usize) {
    let data = tempfile::tempdir().expect("temporary directory");
    let memory_addr = "127.0.0.1:18188";
    let memory = spawn(
        &format!("{dir}/waitline"),
        &["serve", "--in-memory", "--listen", memory_addr, "--api-key", KEY],
    );
    let (always_addr, periodic_addr) = ("127.0.0.1:18184", "127.0.0.1:18185");
    let (always_metrics, periodic_metrics) = ("127.0.0.1:18194", "127.0.0.1:18195");
    let always =
        durable_server(dir, always_addr, &data.path().join("always"), "always", Some(always_metrics));
    let periodic =
        durable_server(dir, periodic_addr, &data.path().join("periodic"), "periodic", Some(periodic_metrics));
    let contenders = [
        Contender::single(&memory, memory_addr, None),
        Contender::single(&always, always_addr, Some(always_metrics)),
        Contender::single(&periodic, periodic_addr, Some(periodic_metrics)),
    ];
    println!("## Durable vs in memory ({conns} connections, {secs} s per run, the enqueue workload)\n");
    println!(
        "| round | in memory | `--fsync always` | ratio | `--fsync periodic` | ratio |\n|---|---|---|---|---|---|"
    );
    let mut ratios = (Vec::new(), Vec::new());
    for (round, runs) in alternated(&contenders, secs, conns, rounds).await.into_iter().enumerate() {
        let [(memory, m), (always, a), (periodic, p)] = &runs[..] else { unreachable!("three runs") };
        let (ra, rp) = (always.rate / memory.rate, periodic.rate / memory.rate);
        println!("| {} | {m} | {a} | {ra:.2}x | {p} | {rp:.2}x |", round + 1);
        ratios.0.push(ra);
        ratios.1.push(rp);
    }
    println!("\nalways / in memory: {}; target >= 0.8x", ratio_range(&ratios.0));
    println!("periodic / in memory: {}; target >= 0.95x", ratio_range(&ratios.1));
}

/// `MODE ROUNDS URL` after the first three arguments: only that comparison (`postgres` or
/// `cluster`), in that many rounds, on the PostgreSQL server of `URL`.
fn with_postgres(args: &[String], mode: &str) -> Option<(usize, String)> {
    match args.get(4..7)? {
        [what, rounds, url] if what == mode => Some((rounds.parse().ok()?, url.clone())),
        _ => None,
    }
}

/// Nanoseconds spent on a CPU by PostgreSQL's backends connected to `database` (their
/// process titles name it; Linux only). The server's shared processes (WAL writer,
/// checkpointer) are not counted: they are not the database's alone.
fn backends_cpu_nanos(database: &str) -> Option<u64> {
    let marker = format!(" {database} ");
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(title) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let title = String::from_utf8_lossy(&title);
        if title.starts_with("postgres: ") && title.contains(&marker) {
            let pid = entry.file_name().to_str().and_then(|p| p.parse().ok());
            total += pid.and_then(cpu_nanos).unwrap_or(0);
        }
    }
    Some(total)
}

/// Any fixed webhook signing key: a store in PostgreSQL keeps no generated one, and every
/// node of a cluster needs the same.
const SIGNING_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A database made for the run on the PostgreSQL server of a URL, dropped (whoever is still
/// connected) when this is.
struct Database {
    /// The URL given (its database is where `CREATE` and `DROP` run).
    admin: String,
    name: String,
    /// The URL of the database made.
    url: String,
}

impl Database {
    fn new(url: &str, what: &str) -> Self {
        let name = format!("http_load_{what}_{}", std::process::id());
        let (server, _) = url.rsplit_once('/').expect("a URL ending in /DATABASE");
        waitline_store::test_support::execute(url, &format!("CREATE DATABASE {name}"));
        Self { admin: url.to_owned(), url: format!("{server}/{name}"), name }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        waitline_store::test_support::execute(
            &self.admin,
            &format!("DROP DATABASE {} WITH (FORCE)", self.name),
        );
    }
}

/// `waitline serve` on `addr` over the PostgreSQL database of `db`, `--fsync always`,
/// knowing API keys `keys`, with `extra` arguments.
fn postgres_node(dir: &str, addr: &str, db: &Database, keys: &[String], extra: &[&str]) -> Server {
    let mut args = vec![
        "serve",
        "--listen",
        addr,
        "--signing-key",
        SIGNING_KEY,
        "--postgres-url",
        &db.url,
        "--fsync",
        "always",
    ];
    for key in keys {
        args.extend(["--api-key", key]);
    }
    args.extend_from_slice(extra);
    spawn(&format!("{dir}/waitline"), &args)
}

/// The HTTP service over PostgreSQL against the same over SQLite, both `--fsync always`,
/// alternated `rounds` times: one node holding every bucket (`--postgres-url`, a database
/// made for the run on the server of `url` and dropped after it) and one with a data
/// directory in `TMPDIR`. Each run with its CPU per request: the server's, and for
/// PostgreSQL its backends' too.
async fn postgres_rounds(dir: &str, secs: f64, conns: usize, rounds: usize, url: &str) {
    let db = Database::new(url, "store");
    let data = tempfile::tempdir().expect("temporary directory");
    let (sqlite_addr, sqlite_metrics) = ("127.0.0.1:18184", "127.0.0.1:18194");
    let sqlite =
        durable_server(dir, sqlite_addr, &data.path().join("sqlite"), "always", Some(sqlite_metrics));
    let (pg_addr, pg_metrics) = ("127.0.0.1:18189", "127.0.0.1:18199");
    let pg = postgres_node(dir, pg_addr, &db, &[KEY.to_owned()], &["--metrics-listen", pg_metrics]);
    let backends = db.name.clone();
    let contenders = [
        Contender::single(&sqlite, sqlite_addr, Some(sqlite_metrics)),
        Contender {
            helpers: Some(Box::new(move || backends_cpu_nanos(&backends))),
            ..Contender::single(&pg, pg_addr, Some(pg_metrics))
        },
    ];
    println!(
        "## One node, PostgreSQL store vs SQLite store ({conns} connections, {secs} s per run, the enqueue workload, `--fsync always`)\n"
    );
    let names = ["SQLite (`--data-dir`)", "PostgreSQL (`--postgres-url`)"];
    head_to_head(&contenders, names, "PostgreSQL / SQLite", secs, conns, rounds).await;
}

/// Two contenders alternated `rounds` times: a table of their runs, each round's ratio of
/// the second's rate to the first's (`ratio_name`), and the range of those ratios.
async fn head_to_head(
    contenders: &[Contender<'_>; 2],
    names: [&str; 2],
    ratio_name: &str,
    secs: f64,
    conns: usize,
    rounds: usize,
) {
    println!("| round | {} | {} | ratio |\n|---|---|---|---|", names[0], names[1]);
    let mut ratios = Vec::new();
    for (round, runs) in alternated(contenders, secs, conns, rounds).await.into_iter().enumerate() {
        let [(first, f), (second, s)] = &runs[..] else { unreachable!("two runs") };
        let ratio = second.rate / first.rate;
        println!("| {} | {f} | {s} | {ratio:.2}x |", round + 1);
        ratios.push(ratio);
    }
    println!("\n{ratio_name}: {}", ratio_range(&ratios));
}

/// Tenants of the cluster comparison: enough that each of three nodes owns several.
const TENANTS: usize = 24;

/// Until every one of `targets` (address, API key) answers a tenant's request (each node
/// has taken and loaded its share and knows the others' owners), then a few leases more
/// (shares settle: a bucket taken by a node that is not its preferred owner is given up),
/// and again.
async fn settled(targets: &[(String, String)], lease: Duration) {
    let deadline = Instant::now() + 60 * lease;
    for _ in 0..2 {
        'wait: loop {
            assert!(Instant::now() < deadline, "the nodes did not settle");
            for (addr, key) in targets {
                wait_port(addr).await;
                let (status, _) = Http::connect_as(addr, key).await.call("GET", "/v2/queues", "").await;
                if status != 200 {
                    tokio::time::sleep(lease / 4).await;
                    continue 'wait;
                }
            }
            break;
        }
        tokio::time::sleep(3 * lease).await;
    }
}

/// Three nodes sharing one PostgreSQL database (`--node-url`, a round-robin balancer's
/// spread: connection `i` goes to node `i % 3`, as tenant `i % TENANTS`, so that two
/// requests in three are forwarded to their tenant's owner) against one node holding every
/// bucket of another database, alternated `rounds` times, all `--fsync always`. CPU per
/// request: all the nodes', and PostgreSQL's backends'.
async fn cluster_rounds(dir: &str, secs: f64, conns: usize, rounds: usize, url: &str) {
    let lease = Duration::from_secs(1);
    let lease_ms = lease.as_millis().to_string();
    let secret = "bench-cluster-secret";
    let keys: Vec<String> = (0..TENANTS).map(|t| format!("{KEY}-{t}:t{t}")).collect();
    let bearer = |t: usize| format!("{KEY}-{t}");
    let (one_db, three_db) = (Database::new(url, "one"), Database::new(url, "three"));
    let one_addr = "127.0.0.1:18201";
    let one = postgres_node(dir, one_addr, &one_db, &keys, &[]);
    let addrs = ["127.0.0.1:18202", "127.0.0.1:18203", "127.0.0.1:18204"];
    let three: Vec<Server> = addrs
        .iter()
        .map(|addr| {
            let node_url = format!("http://{addr}");
            let extra = ["--node-url", &node_url, "--cluster-secret", secret, "--lease-ms", &lease_ms];
            postgres_node(dir, addr, &three_db, &keys, &extra)
        })
        .collect();
    let one_targets: Vec<(String, String)> = (0..TENANTS).map(|t| (one_addr.to_owned(), bearer(t))).collect();
    let three_targets: Vec<(String, String)> =
        (0..conns.max(1)).map(|i| (addrs[i % addrs.len()].to_owned(), bearer(i % TENANTS))).collect();
    let every: Vec<(String, String)> =
        addrs.iter().flat_map(|a| (0..TENANTS).map(move |t| ((*a).to_owned(), bearer(t)))).collect();
    settled(&one_targets, lease).await;
    settled(&every, lease).await;
    let (one_backends, three_backends) = (one_db.name.clone(), three_db.name.clone());
    let contenders = [
        Contender {
            servers: vec![&one],
            targets: Arc::new(one_targets),
            metrics: None,
            helpers: Some(Box::new(move || backends_cpu_nanos(&one_backends))),
        },
        Contender {
            servers: three.iter().collect(),
            targets: Arc::new(three_targets),
            metrics: None,
            helpers: Some(Box::new(move || backends_cpu_nanos(&three_backends))),
        },
    ];
    println!(
        "## Three nodes vs one over PostgreSQL ({TENANTS} tenants, {conns} connections, {secs} s per run, the enqueue workload, `--fsync always`; every process on the same cores)\n"
    );
    let names = ["one node", "three nodes (round-robin)"];
    head_to_head(&contenders, names, "three nodes / one", secs, conns, rounds).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| "target/release".into());
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let conns: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let (w_addr, h_addr, r_port) = ("127.0.0.1:18181", "127.0.0.1:18182", "18183");
    let in_memory = |addr: &str, extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--in-memory",
            "--listen",
            addr,
            "--api-key",
            KEY,
            "--max-calls-per-tenant",
            "10000000",
            "--max-queues-per-tenant",
            "100000",
        ];
        args.extend_from_slice(extra);
        spawn(&format!("{dir}/waitline"), &args)
    };
    if let Some((rounds, url)) = with_postgres(&args, "cluster") {
        cluster_rounds(&dir, secs, conns, rounds, &url).await;
        return;
    }
    if let Some((rounds, url)) = with_postgres(&args, "postgres") {
        postgres_rounds(&dir, secs, conns, rounds, &url).await;
        return;
    }
    if let Some(rounds) = durable_only(&args) {
        durable_rounds(&dir, secs, conns, rounds).await;
        return;
    }
    if let Some(rounds) = metrics_only(&args) {
        metrics_on_off(&in_memory, conns, secs, rounds).await;
        return;
    }
    let _w = in_memory(w_addr, &[]);
    let _h = spawn(&format!("{dir}/hello_server"), &[h_addr]);
    wait_port(w_addr).await;
    wait_port(h_addr).await;

    println!(
        "## HTTP (loopback, {conns} keep-alive connections, {secs} s per case, load generator on the same 2 cores)\n"
    );
    println!("| case | waitline | baseline | ratio | target | met |\n|---|---|---|---|---|---|");
    // Callers and agents, one of each per connection.
    let ids = dial_many(w_addr, conns * 2).await;
    let ours = http_case(w_addr, conns, secs, moves("bench", ids.clone())).await;
    let hello = http_case(h_addr, conns, secs, |i, _| {
        ("POST", format!("/v2/calls/{i}/actions/enqueue"), r#"{"queue_name":"bench-0"}"#.to_owned())
    })
    .await;
    row("enqueue vs axum hello-world", ours, hello, 0.9);

    metrics_on_off(&in_memory, conns, secs, 3).await;

    // Durability: the same enqueues on servers that keep every change before answering.
    println!("\n### Durable service vs in memory ({conns} connections, the enqueue workload above)\n");
    println!("| case | durable | in memory | ratio | target | met |\n|---|---|---|---|---|---|");
    let data = tempfile::tempdir().expect("temporary directory");
    for (policy, addr, target) in [("always", "127.0.0.1:18184", 0.8), ("periodic", "127.0.0.1:18185", 0.95)]
    {
        let data_dir = data.path().join(policy);
        let dir_arg = data_dir.to_str().expect("a UTF-8 path");
        let server = durable_server(&dir, addr, &data_dir, policy, None);
        wait_port(addr).await;
        let ids = dial_many(addr, conns).await;
        let durable = http_case(addr, conns, secs, moves("bench", ids)).await;
        row(&format!("enqueue, `--fsync {policy}` vs `--in-memory`"), durable, ours, target);
        drop(server);
        if let Ok(out) =
            Command::new(format!("{dir}/waitline")).args(["inspect", "--data-dir", dir_arg]).output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            // "... journal R rows of N records (B bytes) ..."
            let figures = text.split(" rows of ").nth(1).and_then(|rest| {
                let n: f64 = rest.split_whitespace().next()?.parse().ok()?;
                let b: f64 = rest.split('(').nth(1)?.split_whitespace().next()?.parse().ok()?;
                Some((n, b))
            });
            if let Some((n, b)) = figures.filter(|(n, _)| *n > 0.0) {
                println!(
                    "| journal bytes per command (`--fsync {policy}`, {n:.0} records) | {:.1} B | | | | |",
                    b / n
                );
            }
        }
    }

    let redis_ok = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
    if !redis_ok {
        println!("\n(redis-server not found: the Redis comparison was skipped)");
        return;
    }
    let _r =
        spawn("redis-server", &["--port", r_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    let r_addr = format!("127.0.0.1:{r_port}");
    wait_port(&r_addr).await;
    let rc = conns.min(50);
    println!("\n### Against Redis as the queue store ({rc} connections, unpipelined)\n");
    println!(
        "| operation | waitline (HTTP) | Redis sorted set | ratio | target | met |\n|---|---|---|---|---|---|"
    );

    let ours = http_case(w_addr, rc, secs, moves("redis-cmp", ids.clone())).await;
    let theirs =
        redis_case(&r_addr, rc, secs, |i, k| strings(&["ZADD", "q", &k.to_string(), &format!("c{i}-{k}")]))
            .await;
    row("enqueue (ZADD)", ours, theirs, 1.0);

    // Each connection enqueues its caller, then its agent takes the head of that queue.
    let pair_ids = ids.clone();
    let ours = http_case(w_addr, rc, secs, move |i, k| {
        if k % 2 == 0 {
            (
                "POST",
                format!("/v2/calls/{}/actions/enqueue", pair_ids[i]),
                format!(r#"{{"queue_name":"pair-{i}"}}"#),
            )
        } else {
            let body = format!(r#"{{"queue":"pair-{i}","park_after_unbridge":"self"}}"#);
            ("POST", format!("/v2/calls/{}/actions/bridge", pair_ids[conns + i]), body)
        }
    })
    .await;
    let theirs = redis_case(&r_addr, rc, secs, |i, k| {
        let key = format!("pair-{i}");
        if k % 2 == 0 {
            strings(&["ZADD", &key, &k.to_string(), "caller"])
        } else {
            strings(&["ZPOPMIN", &key])
        }
    })
    .await;
    row("enqueue / bridge-from-queue alternating (ZADD / ZPOPMIN)", ours, theirs, 1.0);

    // Position and removal in a queue of 10,000.
    let members: Arc<Vec<String>> = {
        let mut c = Http::connect(w_addr).await;
        let mut r = Redis::connect(&r_addr).await;
        let mut v = Vec::new();
        for n in 0..10_000 {
            let id = dial(&mut c).await;
            c.call(
                "POST",
                &format!("/v2/calls/{id}/actions/enqueue"),
                r#"{"queue_name":"big","max_size":1000000}"#,
            )
            .await;
            r.cmd(&["ZADD", "big", &n.to_string(), &id]).await;
            v.push(id);
        }
        Arc::new(v)
    };
    let pick = |m: &[String], i: usize, k: u64| m[(i * 7919 + k as usize * 104_729) % m.len()].clone();
    let m = members.clone();
    let ours = http_case(w_addr, rc, secs, move |i, k| {
        ("GET", format!("/v2/queues/big/calls/{}", pick(&m, i, k)), String::new())
    })
    .await;
    let m = members.clone();
    let theirs = redis_case(&r_addr, rc, secs, move |i, k| strings(&["ZRANK", "big", &pick(&m, i, k)])).await;
    row("position in a queue of 10,000 (ZRANK)", ours, theirs, 1.0);

    // Each connection removes its own member and puts it back, alternately.
    let m = members.clone();
    let ours = http_case(w_addr, rc, secs, move |i, k| {
        let id = &m[i * 97];
        if k % 2 == 0 {
            ("DELETE", format!("/v2/queues/big/calls/{id}"), String::new())
        } else {
            ("POST", format!("/v2/calls/{id}/actions/enqueue"), r#"{"queue_name":"big"}"#.to_owned())
        }
    })
    .await;
    let m = members;
    let theirs = redis_case(&r_addr, rc, secs, move |i, k| {
        let id = &m[i * 97];
        if k % 2 == 0 { strings(&["ZREM", "big", id]) } else { strings(&["ZADD", "big", &k.to_string(), id]) }
    })
    .await;
    row("remove / re-add alternating (ZREM / ZADD)", ours, theirs, 1.0);
}
