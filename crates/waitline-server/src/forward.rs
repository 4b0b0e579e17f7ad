//! One node of several: a request whose tenant's bucket this node does not serve goes to the
//! bucket's owner (its `--node-url`), with the cluster secret in [`HEADER`]; the owner's
//! answer is passed back. A request carrying that header is answered here or refused, never
//! forwarded again (at most one hop). Events streams (`GET /v2/events`) are not forwarded.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::presented_key;
use crate::cluster_secret::{ClusterSecret, HEADER};
use crate::config::ClusterNode;
use crate::error::ApiError;

/// How long a forwarded request may take, its answer included: a node's own commands are
/// answered in milliseconds, so a stuck owner is given up quickly (the client retries).
const TIMEOUT: Duration = Duration::from_secs(5);

/// The request headers a forwarded request carries (besides the cluster header).
const REQUEST_HEADERS: [HeaderName; 3] = [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT];

/// The answer headers passed back.
const ANSWER_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::RETRY_AFTER];

/// This node's way to its peers.
#[derive(Debug)]
pub struct Forwarder {
    secret: ClusterSecret,
    me: String,
    client: reqwest::Client,
}

impl Forwarder {
    /// For the node `node`.
    ///
    /// # Panics
    /// If the HTTP client cannot be made (no TLS backend: a build error).
    #[must_use]
    pub fn new(node: &ClusterNode) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| panic!("the cluster's HTTP client: {e}"));
        Self { secret: node.secret.clone(), me: node.url.clone(), client }
    }
}

/// The middleware: checks the cluster header, else forwards a request whose tenant this
/// node does not serve to its owner.
pub async fn to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(forwarder) = state.forwarder() else { return next.run(request).await };
    if let Some(presented) = request.headers().get(HEADER) {
        if !forwarder.secret.matches(presented.as_bytes()) {
            return ApiError::ClusterSecretRefused.into_response();
        }
        return next.run(request).await; // from a node: answered here, whatever it is
    }
    let tenant = presented_key(request.headers())
        .and_then(|key| state.keys().tenant_of(key).map(|t| t.name().to_owned()));
    let Some(tenant) = tenant.filter(|t| !state.durability().serves(t)) else {
        return next.run(request).await;
    };
    if request.uri().path().ends_with("/events") {
        return ApiError::TenantMoved.into_response();
    }
    let durability = state.durability().clone();
    let owner = tokio::task::spawn_blocking(move || durability.owner_url(&tenant)).await.ok().flatten();
    match owner.filter(|url| !url.is_empty() && *url != forwarder.me) {
        Some(url) => forward(forwarder, &url, request, state.body_limit()).await,
        None => ApiError::TenantMoved.into_response(),
    }
}

/// Sends `request` to the node at `url` and passes its answer back; 503 `10007` with
/// `Retry-After: 1` when it cannot be reached.
async fn forward(forwarder: &Forwarder, url: &str, request: Request, limit: usize) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return ApiError::BodyTooLarge { limit }.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for name in REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    let Ok(secret) = forwarder.secret.expose().parse() else { return ApiError::TenantMoved.into_response() };
    headers.insert(HEADER, secret);
    let sent =
        forwarder.client.request(parts.method, format!("{url}{path}")).headers(headers).body(body).send();
    let answer = match sent.await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(owner = %url, "forwarding to the owner failed: {e}");
            return ApiError::TenantMoved.into_response();
        }
    };
    let status = answer.status();
    let mut passed = HeaderMap::new();
    for name in ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(&name) {
            passed.insert(name, value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, passed, Body::from(bytes)).into_response(),
        Err(e) => {
            tracing::warn!(owner = %url, "reading the owner's answer failed: {e}");
            ApiError::TenantMoved.into_response()
        }
    }
}
