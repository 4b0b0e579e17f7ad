//! Destinations that name addresses outside loopback (private, link-local, public...). These
//! tests run in a network namespace of their own, with only loopback up, so that no packet
//! leaves the machine: `destinations_in_a_network_of_their_own` runs this test binary again
//! under `unshare -n` with the `inside_own_network` tests, which are ignored otherwise and
//! refuse to run outside it. Where `unshare -n` is not permitted it says so and skips.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;
use waitline::{DialParams, Engine};
use waitline_server::config::Config;
use waitline_server::durable::Durability;
use waitline_server::webhook::{Signer, WebhookConfig, Webhooks};
use waitline_server::webhook_destination::DestinationPolicy;

/// Set in the namespace, for the inner tests.
const INSIDE: &str = "WAITLINE_TEST_IN_OWN_NETWORK";
/// How many inner tests there are (each must have run).
const INNER_TESTS: usize = 4;

#[test]
fn destinations_in_a_network_of_their_own() {
    let probe = Command::new("unshare").args(["-n", "sh", "-c", "ip link set lo up"]).output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        eprintln!(
            "SKIPPED: the webhook destination tests need a network namespace of their own (`unshare -n` \
             and `ip`, usually as root), not available here: {probe:?}"
        );
        return;
    }
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", r#"ip link set lo up && exec "$@""#, "sh"])
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--test-threads=1", "inside_own_network"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("test result: ok. {INNER_TESTS} passed")), "{text}");
}

fn inside() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "names addresses outside loopback: run by destinations_in_a_network_of_their_own only"
    );
}

async fn dial_to(s: &Server, url: &str) -> (u16, serde_json::Value) {
    s.post("/v2/calls", json!({"to": "+1", "from": "+2", "connection_id": "app", "webhook_url": url})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in its own network namespace by destinations_in_a_network_of_their_own"]
async fn inside_own_network_dial_refuses_every_class_and_takes_public_addresses() {
    inside();
    // The public destinations are unreachable here: their retries are not waited for.
    let s = Server::start(Config { shutdown_grace: Duration::from_millis(100), ..Config::default() }).await;
    for (host, says) in [
        ("127.0.0.1", "a loopback address"),
        ("[::1]", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a private address"),
        ("[fd00:ec2::254]", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("[fe80::1]", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("[ff02::1]", "a multicast address"),
        ("0.0.0.0", "the unspecified address"),
        ("[::]", "the unspecified address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("192.0.2.1", "a reserved address"),
        ("[2001:db8::1]", "a reserved address"),
        ("[::ffff:169.254.169.254]", "a link-local address"),
        ("[64:ff9b::a00:1]", "a private address"),
    ] {
        let url = format!("http://{host}:8080/hook");
        let (status, v) = dial_to(&s, &url).await;
        assert_eq!((status, code(&v)), (422, "95005"), "{url}: {v}");
        let detail = v["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{url}: {detail}");
    }
    for url in ["http://93.184.216.34/hook", "https://[2606:4700::1111]/hook", "http://hooks.example.com/"] {
        assert_eq!(dial_to(&s, url).await.0, 200, "{url}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in its own network namespace by destinations_in_a_network_of_their_own"]
async fn inside_own_network_the_allow_list_opens_networks_and_addresses() {
    inside();
    let second_host = Receiver::start_on("127.0.0.2", 0).await;
    let first_host = Receiver::start(0).await;
    let mut c = Config::default();
    c.webhooks.allow = DestinationPolicy::new(&["10.0.0.0/8", "fd00::/8", "127.0.0.2"]).unwrap();
    let s = Server::start(c).await;
    for url in ["http://10.1.2.3/", "http://[fd12::1]/"] {
        assert_eq!(dial_to(&s, url).await.0, 200, "{url}");
    }
    for url in ["http://192.168.1.1/", "http://[fc00::1]/", &first_host.url] {
        assert_eq!(dial_to(&s, url).await.0, 422, "{url}");
    }
    assert_eq!(dial_to(&s, &second_host.url).await.0, 200);
    assert_eq!(second_host.wait_for(2).await.len(), 2, "the allowed address gets its webhooks");
    assert!(first_host.got.lock().is_empty());
    s.stop().await;
}

/// A public address is tried like any other (here it is unreachable: every attempt fails,
/// then the failover gets the event, counting them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in its own network namespace by destinations_in_a_network_of_their_own"]
async fn inside_own_network_a_public_address_is_tried() {
    inside();
    let failover = Receiver::start(0).await;
    let mut c = Config::default();
    c.webhooks.failover_url = Some(failover.url.clone());
    c.webhooks.backoff = Duration::from_millis(10);
    c.webhooks.attempts = 2;
    let s = Server::start(c).await;
    assert_eq!(dial_to(&s, "http://93.184.216.34/hook").await.0, 200);
    let got = failover.wait_for(2).await;
    assert_eq!(got[0].body["meta"]["attempt"], 3, "two attempts at the public address");
    s.stop().await;
}

/// A call whose own URL is a literal address not allowed (dialed in the library, or before
/// the policy changed) is refused at delivery too: nothing is sent, the failure is counted.
#[tokio::test]
#[ignore = "run in its own network namespace by destinations_in_a_network_of_their_own"]
async fn inside_own_network_delivery_refuses_a_literal_address_too() {
    inside();
    let engine = Engine::builder().build();
    let webhooks =
        Webhooks::new(&engine, Durability::in_memory(), Signer::generate(), WebhookConfig::default());
    webhooks.ensure_started();
    let mut dial = DialParams::new("+1", "+2", "app");
    dial.webhook_url = Some("http://169.254.169.254/latest/meta-data".into());
    engine.tenant("a").dial(&dial).unwrap();
    for _ in 0..200 {
        if webhooks.stats.failed.load(Ordering::Relaxed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(webhooks.stats.refused.load(Ordering::Relaxed), 2);
    let failures = webhooks.failures.of("a");
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .all(|f| f.attempts == 0 && f.error.contains("169.254.169.254 is a link-local address"))
    );
    webhooks.shutdown(Duration::from_secs(1)).await;
}
