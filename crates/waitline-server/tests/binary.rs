//! The `waitline` binary as an operator starts it: what it writes where, its keys (hashed,
//! generated, reloaded on SIGHUP).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use waitline_server::auth::hashed_form;

/// Starts `waitline serve` with both outputs piped (as `2> log` would), reads until the
/// server says it serves, then stops it. Returns (stdout, stderr) as read so far.
fn serve_piped(extra_env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waitline"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("WAITLINE_API_KEYS")
        .env_remove("WAITLINE_SIGNING_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || err.lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
    let mut stderr = String::new();
    // Bounded: a server that logs elsewhere must fail the test, not hang it.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("waitline serving") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    (stdout, stderr)
}

/// A `waitline serve` started with `args`, its log read line by line.
struct Running {
    child: Child,
    addr: String,
    log: Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waitline"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("WAITLINE_API_KEYS")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || err.lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
        let mut running = Self { child, addr: String::new(), log };
        let line = running.wait_for_log("waitline serving");
        running.addr = line.split("listen=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
        running
    }

    /// The first log line from now on that contains `text` (at most 20 s).
    fn wait_for_log(&self, text: &str) -> String {
        loop {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {text:?} in the log"));
            if line.contains(text) {
                return line;
            }
        }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).unwrap()
    }

    fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /v2/queues` with `key` on an open keep-alive connection: the status.
fn list_queues(conn: &mut TcpStream, key: &str) -> u16 {
    write!(conn, "GET /v2/queues HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    conn.read_exact(&mut vec![0; length]).unwrap();
    head[9..12].parse().unwrap()
}

/// A new connection, one request.
fn status_with(server: &Running, key: &str) -> u16 {
    list_queues(&mut server.connect(), key)
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes_and_no_secrets() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let (stdout, stderr) = serve_piped(&[("WAITLINE_DATA_DIR", dir)]);
    assert!(stderr.contains("waitline serving"), "the log goes to standard error: {stderr:?}");
    assert!(!stderr.contains('\u{1b}'), "escape sequences in a piped log: {stderr:?}");
    // The generated key is shown once on standard output, never in the log.
    let key = stdout
        .lines()
        .find_map(|l| l.split("tenant 'default': ").nth(1))
        .expect("a generated key on standard output");
    assert!(!key.is_empty());
    assert!(!stderr.contains(key), "the API key leaked into the log");
    assert!(!stdout.contains('\u{1b}'));
    // A restart on the same data directory keeps the key (and says where it is, not what).
    let (again, stderr) = serve_piped(&[("WAITLINE_DATA_DIR", dir)]);
    assert!(again.contains("using the one for tenant 'default'"), "{again:?}");
    assert!(!again.contains(key) && !stderr.contains(key));
    // The directory holds the key's hash, not the key.
    assert_eq!(std::fs::read_to_string(data.path().join("api-key")).unwrap(), hashed_form(key));
    let public = |out: &str| {
        out.lines().find_map(|l| l.split("Public key of tenant 'default': ").nth(1)).map(str::to_owned)
    };
    assert_eq!(public(&stdout), public(&again), "the same signing key after a restart");
    assert!(stderr.contains("journal replayed"), "{stderr:?}");
    // And the key works after the restart.
    let server = Running::start(&["--data-dir", dir]);
    assert_eq!((status_with(&server, key), status_with(&server, &hashed_form(key))), (200, 401));
}

/// Each tenant with a key (other than `default`, whose key is the configured one) has its
/// webhook public key printed at start: what its calls' own webhook receivers verify with.
#[test]
fn the_public_key_of_each_named_tenant_is_printed_at_start() {
    let data = tempfile::tempdir().unwrap();
    let seed = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let env = [
        ("WAITLINE_DATA_DIR", data.path().to_str().unwrap()),
        (
            "WAITLINE_API_KEYS",
            "key-of-acme-0123456789:acme,key-of-zeta-0123456789:zeta,k2-of-acme-0123456789:acme",
        ),
        ("WAITLINE_SIGNING_KEY", seed),
    ];
    let (stdout, _) = serve_piped(&env);
    let signer = waitline_server::webhook::Signer::from_base64_seed(seed).unwrap();
    for tenant in ["acme", "zeta"] {
        let line = format!(
            "Webhook public key of tenant '{tenant}' (its calls' own webhook URLs): {}",
            signer.for_tenant(tenant).public_key_base64()
        );
        assert_eq!(stdout.matches(&line).count(), 1, "{tenant}: {stdout:?}");
    }
    assert!(!stdout.contains("tenant 'default'"), "no default tenant here: {stdout:?}");
}

#[test]
fn a_generated_key_kept_in_plain_text_by_an_earlier_version_stays_usable() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("api-key"), "an-older-generated-key\n").unwrap();
    let server = Running::start(&["--data-dir", data.path().to_str().unwrap()]);
    assert_eq!(status_with(&server, "an-older-generated-key"), 200);
    assert_eq!(status_with(&server, "an-older-generated-ke"), 401);
}

#[test]
fn keygen_prints_a_key_and_the_hash_a_server_accepts_it_by() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_waitline")).args(["keygen", "--tenant", "acme"]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let [key, hashed] = stdout.lines().collect::<Vec<_>>()[..] else { panic!("two lines: {stdout:?}") };
    assert_eq!(key.len(), 32);
    assert_eq!(hashed, format!("{}:acme", hashed_form(key)));
    let data = tempfile::tempdir().unwrap();
    let server = Running::start(&["--data-dir", data.path().to_str().unwrap(), "--api-key", hashed]);
    assert_eq!(status_with(&server, key), 200);
    // The hash is not a key, and with a key configured none is generated.
    assert_eq!(status_with(&server, hashed), 401);
    assert_eq!(status_with(&server, hashed.split(':').nth(1).unwrap()), 401);
    assert!(!data.path().join("api-key").exists());
    // Two runs, two keys.
    let again = Command::new(env!("CARGO_BIN_EXE_waitline")).arg("keygen").output().unwrap();
    let again = String::from_utf8(again.stdout).unwrap();
    assert_ne!(again.lines().next(), Some(key));
    assert!(again.lines().nth(1).unwrap().ends_with(":default"));
}

#[test]
fn sighup_reloads_keys_from_the_file_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("waitline.toml");
    let write_keys =
        |keys: &str| std::fs::write(&file, format!("in_memory = true\napi_keys = [{keys}]\n")).unwrap();
    write_keys(&format!("\"old-key:a\", \"{}:b\"", hashed_form("kept-key")));
    let server = Running::start(&["--config", file.to_str().unwrap()]);
    let mut open = server.connect();
    assert_eq!((list_queues(&mut open, "old-key"), list_queues(&mut open, "kept-key")), (200, 200));

    write_keys(&format!("\"{}:a\", \"kept-key:b\"", hashed_form("new-key")));
    server.hangup();
    server.wait_for_log("API keys reloaded");
    // The connection opened before the reload is still served, under the new keys.
    assert_eq!(list_queues(&mut open, "old-key"), 401);
    assert_eq!(list_queues(&mut open, "new-key"), 200);
    assert_eq!(list_queues(&mut open, "kept-key"), 200);
    assert_eq!((status_with(&server, "old-key"), status_with(&server, "new-key")), (401, 200));

    // A file that does not parse changes nothing, and the log does not quote it.
    std::fs::write(&file, "api_keys = [\"secret-in-a-broken-line\"\n").unwrap();
    server.hangup();
    let line = server.wait_for_log("API keys not reloaded");
    assert!(!line.contains("secret-in-a-broken-line"), "{line}");
    assert_eq!(list_queues(&mut open, "new-key"), 200);
    assert_eq!(list_queues(&mut open, "secret-in-a-broken-line"), 401);

    // A file that names no key does not lock everyone out.
    write_keys("");
    server.hangup();
    server.wait_for_log("the file names none");
    assert_eq!(list_queues(&mut open, "new-key"), 200);
}

#[test]
fn metrics_listen_serves_every_tenant_without_a_key() {
    let server = Running::start(&["--in-memory", "--api-key", "k1:acme", "--metrics-listen", "127.0.0.1:0"]);
    let line = server.wait_for_log("metrics served");
    let addr = line.split("listen=").nth(1).unwrap().split_whitespace().next().unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("waitline_tenant_live_calls{tenant=\"acme\"} 0"), "{answer}");
    assert!(answer.contains("waitline_service_level_threshold_seconds 20"), "the operator's view: {answer}");
    // On the main listener the same path needs a key.
    let mut conn = server.connect();
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
