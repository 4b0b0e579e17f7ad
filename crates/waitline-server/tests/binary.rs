//! The `waitline` binary as an operator starts it: what it writes where.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    assert_eq!(std::fs::read_to_string(data.path().join("api-key")).unwrap(), key);
    let public = |out: &str| out.lines().find_map(|l| l.split("Public key: ").nth(1)).map(str::to_owned);
    assert_eq!(public(&stdout), public(&again), "the same signing key after a restart");
    assert!(stderr.contains("journal replayed"), "{stderr:?}");
}
