//! Hardening for shared hosting, over real sockets: per-tenant rate limits, keys reloaded
//! while connections stay open, HTTPS with certificate reload, and clients too slow or too
//! many to be let hold the server.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;
use waitline::{Clock, ManualClock, Timestamp};
use waitline_server::auth::{KeySpec, hashed_form};
use waitline_server::config::{Config, ConnectionLimits, TlsFiles};
use waitline_server::rate_limit::RateLimit;

fn rate_limited(per_second: u32, burst: u32) -> (Config, ManualClock) {
    let (clock, hand) = Clock::manual(Timestamp::from_secs(1_700_000_000));
    let config = Config { rate_limit: Some(RateLimit { per_second, burst, clock }), ..Config::default() };
    (config, hand)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_nothing_changes() {
    let (config, hand) = rate_limited(2, 3);
    let s = Server::start(config).await;
    for _ in 0..3 {
        assert_eq!(s.get("/v2/queues").await.0, 200);
    }
    let limited = s.http.get(format!("{}/v2/queues", s.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1", "whole seconds, rounded up from 0.5 s");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(code(&body), "10011");
    assert_eq!(body["errors"][0]["title"], "Too many requests");
    // A write refused for the rate changes nothing.
    let (status, _) = s.post("/v2/queues", json!({"queue_name": "q"})).await;
    assert_eq!(status, 429);
    // Another tenant is not limited by it; a wrong key is still refused as such, and does
    // not take from anyone's bucket.
    assert_eq!(s.req("GET", "/v2/queues", Some("nobody"), None).await.0, 401);
    for _ in 0..3 {
        assert_eq!(s.req("GET", "/v2/queues", Some(KEY_B), None).await.0, 200);
    }
    // Unauthenticated routes are not counted.
    assert_eq!(s.req("GET", "/healthz", None, None).await.0, 200);
    // Half a second later, one token.
    hand.advance(Duration::from_millis(500));
    assert_eq!(s.get("/v2/queues/q").await.0, 404, "the refused create made no queue");
    assert_eq!(s.get("/v2/queues").await.0, 429);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_hammering_its_limit_leaves_another_its_whole_share() {
    // No time passes: each tenant gets exactly its burst, whatever the other does.
    let (config, _hand) = rate_limited(1, 40);
    let s = std::sync::Arc::new(Server::start(config).await);
    let hammer = (0..8).map(|_| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut granted = 0;
            for _ in 0..40 {
                let (status, _) = s.get("/v2/queues").await;
                assert!(status == 200 || status == 429, "{status}");
                granted += usize::from(status == 200);
            }
            granted
        })
    });
    let hammer: Vec<_> = hammer.collect();
    let mut b_ok = 0;
    for _ in 0..40 {
        b_ok += usize::from(s.req("GET", "/v2/queues", Some(KEY_B), None).await.0 == 200);
    }
    let mut a_ok = 0;
    for h in hammer {
        a_ok += h.await.unwrap();
    }
    assert_eq!((a_ok, b_ok), (40, 40), "A got its burst of 40 out of 320; B all of its 40");
    assert_eq!(s.req("GET", "/v2/queues", Some(KEY_B), None).await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_keys_apply_to_open_connections_and_keep_the_buckets() {
    let (config, _hand) = rate_limited(1, 3);
    let s = Server::start(config).await;
    // reqwest keeps the connection alive between these requests.
    assert_eq!(s.get("/v2/queues").await.0, 200);
    s.reloader.reload_keys(&[
        KeySpec::parse(&format!("{}:a", hashed_form("rotated-a"))).unwrap(),
        KeySpec::parse(&format!("{KEY_B}:b")).unwrap(),
    ]);
    assert_eq!(s.get("/v2/queues").await.0, 401, "the old key of a is refused");
    assert_eq!(s.req("GET", "/v2/queues", Some("rotated-a"), None).await.0, 200);
    // a's bucket survived the reload: 2 of 3 tokens were taken before.
    assert_eq!(s.req("GET", "/v2/queues", Some("rotated-a"), None).await.0, 200);
    assert_eq!(s.req("GET", "/v2/queues", Some("rotated-a"), None).await.0, 429);
    assert_eq!(s.req("GET", "/v2/queues", Some(KEY_B), None).await.0, 200);
    assert!(!s.reloader.reload_tls().unwrap(), "plain HTTP: no certificate to reload");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_survives_a_key_reload_that_keeps_its_key() {
    let s = Server::start(Config::default()).await;
    let mut stream = s.http.get(format!("{}/v2/events", s.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    // (A reload that takes the stream's key away ends it: tests/tenant_isolation.rs.)
    s.reloader.reload_keys(&[
        KeySpec::parse(&format!("{KEY_A}:a")).unwrap(),
        KeySpec::parse("another-key:a").unwrap(),
    ]);
    // Made with the new key, told on the stream opened with the kept one.
    let (status, _) =
        s.req("POST", "/v2/queues", Some("another-key"), Some(json!({"queue_name": "q"}))).await;
    assert_eq!(status, 200);
    let mut seen = String::new();
    while !seen.contains("queue.created") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    drop(stream);
    s.stop().await;
}

fn limits(f: impl FnOnce(&mut ConnectionLimits)) -> Config {
    let mut config = Config::default();
    f(&mut config.connections);
    config
}

/// The address of a server's base URL.
fn addr(s: &Server) -> String {
    s.base.split("://").nth(1).unwrap().to_owned()
}

/// Whether the server closed `conn` (EOF or reset) within `within`.
fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_cannot_hold_the_server() {
    let s = Server::start(limits(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.max_connections = 4;
    }))
    .await;
    let at = addr(&s);
    // Take every connection slot with requests whose headers trickle in, a byte at a time,
    // for longer than the header timeout.
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let at = at.clone();
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(at).unwrap();
                conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").unwrap();
                let started = std::time::Instant::now();
                for b in b"X-Slow: ".iter().cycle().take(100) {
                    std::thread::sleep(Duration::from_millis(100));
                    if conn.write_all(&[*b]).is_err() {
                        break;
                    }
                }
                (started.elapsed(), closed_by_server(&mut conn, Duration::from_secs(1)))
            })
        })
        .collect();
    // A real client still gets its answer: the tricklers are cut at the header timeout.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let answer = client.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    for t in tricklers {
        let (held, closed) = tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
        assert!(closed, "a trickling connection was not closed");
        assert!(held < Duration::from_secs(9), "held for {held:?}, though it kept sending");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_a_slot_frees() {
    let s = Server::start(limits(|c| c.max_connections = 2)).await;
    let at = addr(&s);
    // Two idle keep-alive connections hold both slots.
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&at).unwrap()).collect();
    for conn in &mut held {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        assert!(conn.read(&mut buf).unwrap() > 0);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_millis(700)).build().unwrap();
    assert!(client.get(format!("{}/healthz", s.base)).send().await.is_err(), "a third connection was served");
    drop(held.pop());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    assert_eq!(client.get(format!("{}/healthz", s.base)).send().await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let s = Server::start(limits(|c| c.header_timeout = Duration::from_secs(1))).await;
    let mut idle = TcpStream::connect(addr(&s)).unwrap();
    assert!(closed_by_server(&mut idle, Duration::from_secs(8)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() {
    let s = Server::start(Config::default()).await;
    let huge = "x".repeat(100 * 1024);
    let answer = s.http.get(format!("{}/healthz", s.base)).header("x-padding", huge).send().await.unwrap();
    assert_eq!(answer.status(), 431);
    let fits = "x".repeat(30 * 1024);
    let answer = s.http.get(format!("{}/healthz", s.base)).header("x-padding", fits).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    s.stop().await;
}

/// Sends headers announcing a 100-byte body, and 10 bytes of it: the answer's text.
fn send_half_a_body(at: &str) -> String {
    let mut conn = TcpStream::connect(at).unwrap();
    let head = format!(
        "POST /v2/queues HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"queue_n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\"errors\"") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(answer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_408_and_changes_nothing() {
    let s = Server::start(limits(|c| c.body_timeout = Duration::from_secs(1))).await;
    let at = addr(&s);
    let answer = tokio::task::spawn_blocking(move || send_half_a_body(&at)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"10015\"") && answer.contains("within 1 s"), "{answer}");
    assert_eq!(s.get("/v2/queues").await.1["meta"]["total_results"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_answered_in_time_is_503() {
    let s = Server::start(limits(|c| c.request_timeout = Duration::from_secs(1))).await;
    let at = addr(&s);
    let answer = tokio::task::spawn_blocking(move || send_half_a_body(&at)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"10007\"") && answer.contains("within 1 s"), "{answer}");
    // Counted, under its route, though the router never answered it.
    let metrics = s.metrics_base.clone().unwrap();
    let text = s.http.get(format!("{metrics}/metrics")).send().await.unwrap().text().await.unwrap();
    let counted = r#"waitline_http_requests_total{method="POST",route="/v2/queues",status="503"} 1"#;
    assert!(text.lines().any(|l| l == counted), "{text}");
    s.stop().await;
}

/// A test CA and a certificate for 127.0.0.1 and localhost it signed, as PEM files in `dir`.
struct TestCa {
    ca_pem: String,
    files: TlsFiles,
}

fn issue(dir: &std::path::Path) -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    TestCa { ca_pem: ca.pem(), files }
}

fn trusting(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_with_the_configured_certificate_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let first = issue(dir.path());
    let s = Server::start(Config { tls: Some(first.files.clone()), ..Config::default() }).await;
    assert!(s.base.starts_with("https://"));
    let url = format!("{}/v2/queues", s.base);
    let by_first = trusting(&first);
    assert_eq!(by_first.get(&url).bearer_auth(KEY_A).send().await.unwrap().status(), 200);
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new().get(url.replace("https", "http")).send().await;
    assert!(plain.is_err());
    // A client that does not trust the CA refuses the server.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());

    // New files (another CA), reloaded: new connections get the new certificate.
    let second = issue(dir.path());
    assert!(s.reloader.reload_tls().unwrap());
    assert_eq!(trusting(&second).get(&url).bearer_auth(KEY_A).send().await.unwrap().status(), 200);
    assert!(trusting(&first).get(&url).send().await.is_err(), "the old certificate is still served");
    // The connection opened before the reload stays usable.
    assert_eq!(by_first.get(&url).bearer_auth(KEY_A).send().await.unwrap().status(), 200);

    // Files that do not load keep the certificate in use.
    std::fs::write(&second.files.key, "not a key").unwrap();
    let err = s.reloader.reload_tls().unwrap_err();
    assert!(err.contains("key.pem"), "{err}");
    assert_eq!(trusting(&second).get(&url).bearer_auth(KEY_A).send().await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_shakes_hands_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let ca = issue(dir.path());
    let config = Config { tls: Some(ca.files), ..limits(|c| c.header_timeout = Duration::from_secs(1)) };
    let s = Server::start(config).await;
    let mut silent = TcpStream::connect(addr(&s)).unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(8)));
    s.stop().await;
}

#[test]
fn unusable_tls_files_stop_the_start_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles { cert: dir.path().join("missing.pem"), key: dir.path().join("k.pem") };
    let config = Config { tls: Some(files), data_dir: None, ..Config::default() };
    let engine = waitline_server::engine(&config);
    let signer = waitline_server::webhook::Signer::generate();
    let err = waitline_server::HttpServer::new(
        config,
        engine,
        waitline_server::durable::Durability::in_memory(),
        &signer,
    )
    .unwrap_err();
    assert!(err.contains("missing.pem"), "{err}");
}
