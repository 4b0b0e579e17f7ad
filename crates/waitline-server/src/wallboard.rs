//! The wallboard: one static page and its script, compiled into the binary (no build step,
//! nothing fetched from elsewhere). They hold no data: the page asks for an API key and reads
//! the key's tenant through the API like any client, so it shows nothing a key could not read.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::routes::Routes;

const PAGE: &str = include_str!("wallboard.html");
const SCRIPT: &str = include_str!("wallboard.js");

/// Scripts only from this origin (the page's own file), no inline script, nothing framed,
/// connections only back to this service: a caller number or queue name that carried markup
/// could not run (the script also writes every name as text).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body)
}

/// `GET /wallboard` and `GET /wallboard/app.js`, without authentication (they are the same
/// for everyone; the data behind them needs a key).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Routes<S> {
    Routes::new()
        .route("/wallboard", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/wallboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
}
