//! The HTTP baseline: an axum hello-world that answers every POST with the same small JSON
//! waitline answers an enqueue with, on the same runtime settings (TCP_NODELAY, multi-thread,
//! the same allocator), so that the ratio measures what waitline adds to the framework.
//!
//! `hello_server ADDR`

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use axum::serve::ListenerExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let app = Router::new().route(
        "/{*path}",
        post(|| async { ([(CONTENT_TYPE, "application/json")], r#"{"data":{"result":"ok"}}"#) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind").tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}
