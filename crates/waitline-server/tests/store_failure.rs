//! A store that cannot keep a change: the write is answered 503 `10007`, and from then on
//! no request shows what memory holds beyond the disk (the failed change stays applied in
//! memory until a restart replays the disk, and the tenant's metrics show it too), while
//! the health check still answers.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, code};
use serde_json::json;
use waitline_server::config::Config;

/// Makes every later journal write of the data directory `dir` fail, as a full or failing
/// disk would (`false`: lets them succeed again).
fn journal_writes_fail(dir: &std::path::Path, fail: bool) {
    let db = rusqlite::Connection::open(dir.join(waitline_store::DB_FILE)).unwrap();
    let statement = if fail {
        "CREATE TRIGGER failing_disk BEFORE INSERT ON journal BEGIN SELECT RAISE(FAIL, 'disk failure'); END;"
    } else {
        "DROP TRIGGER failing_disk;"
    };
    db.execute_batch(statement).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_write_reads_are_refused_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), Config::default()).await;
    let call = s.dial().await;
    journal_writes_fail(dir.path(), true);
    let (status, v) = s.action(&call, "enqueue", json!({"queue_name": "support"})).await;
    assert_eq!((status, code(&v)), (503, "10007"), "{v}");
    // The engine applied the enqueue before the store failed: no read may show it.
    for path in [
        "/v2/queues/support".to_owned(),
        format!("/v2/queues/support/calls/{call}"),
        format!("/v2/calls/{call}"),
    ] {
        let (status, v) = s.get(&path).await;
        assert_eq!((status, code(&v)), (503, "10007"), "{path}: {v}");
    }
    let (status, v) = s.req("GET", "/healthz", None, None).await;
    assert_eq!((status, &v["status"]), (503, &json!("not_ready")), "the health check itself answers: {v}");
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("stopped")), "{v}");
    // The tenant's metrics show its queues: refused as well.
    let metrics = s.http.get(format!("{}/metrics", s.base)).bearer_auth(common::KEY_A).send().await.unwrap();
    assert_eq!(metrics.status(), 503);
    s.stop().await;

    journal_writes_fail(dir.path(), false);
    let s = Server::start_in(dir.path(), Config::default()).await;
    let (status, _) = s.get("/v2/queues/support").await;
    assert_eq!(status, 404, "the enqueue answered 503 was not kept");
    let (status, v) = s.get(&format!("/v2/calls/{call}")).await;
    assert_eq!(status, 200, "{v}");
    s.stop().await;
}
