//! A real `waitline serve` process on a loopback port: its address read from the line it
//! prints once it listens; killed (`SIGKILL`) and waited for when dropped, so that a failing
//! check leaves no server running.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Process {
    pub child: Child,
    /// Where it answers, `http://ADDR`.
    pub url: String,
    /// Its API's base, `http://ADDR/v2`.
    pub base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// `waitline serve` with `args`, once it listens (its log is dropped unless
    /// `WAITLINE_TEST_SERVER_LOG` is set, for looking into a failure).
    pub fn start(args: &[&str]) -> Self {
        let log = if std::env::var_os("WAITLINE_TEST_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_waitline"))
            .arg("serve")
            .args(args)
            .env_remove("WAITLINE_IN_MEMORY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        // Owned from here: a start that fails below kills it.
        let mut process = Self { child, url: String::new(), base: String::new() };
        let mut out = BufReader::new(process.child.stdout.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the server stopped before it listened");
            if let Some(url) = line.trim().strip_prefix("Listening on ") {
                process.url = url.to_owned();
                process.base = format!("{url}/v2");
                // Its later lines are not read: a closed pipe must not stop it.
                std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                break process;
            }
            assert!(Instant::now() < deadline, "the server did not start");
        }
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// `kill -9`, waited for.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// `n` distinct free ports on 127.0.0.1, for nodes that must be told their own URLs before
/// they listen. Held all at once while they are picked: one at a time, a port let go could
/// be handed out again to the next (two nodes of one test then met on one port).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}
