//! One node of several: a request whose tenant's bucket this node does not serve goes to the
//! bucket's owner (its `--node-url`), with the cluster secret in [`HEADER`]; the owner's
//! answer is passed back. A request carrying that header is answered here or refused, never
//! forwarded again (at most one hop). Each bucket's owner is known from a map the share
//! thread refreshes every third of the lease (see [`crate::node_share::Serving`]): a
//! forwarded request costs no query, unless the map has no owner or the owner answers that
//! it does not serve the tenant (then the owner is looked up again, once). Event streams
//! (`GET /v2/events`) are forwarded as they come.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
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

/// How long a forwarded event stream may go without a byte from the owner: twice the
/// 15 s between its keep-alive comments. Past it the owner is stuck or cut off, and the
/// stream ends (the client reconnects).
const STREAM_IDLE: Duration = Duration::from_secs(30);

/// How often a forwarded event stream checks that this node still takes the URL it
/// streams from as its bucket's owner (the map the share thread refreshes).
const OWNER_CHECK: Duration = Duration::from_secs(1);

/// The request headers a forwarded request carries (besides the cluster header).
const REQUEST_HEADERS: [HeaderName; 4] =
    [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT, HeaderName::from_static("last-event-id")];

/// The answer headers passed back.
const ANSWER_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::RETRY_AFTER, header::CACHE_CONTROL];

/// This node's way to its peers.
#[derive(Debug)]
pub struct Forwarder {
    secret: ClusterSecret,
    me: String,
    client: reqwest::Client,
    /// For event streams: no limit on the whole answer, which lasts as long as the stream,
    /// but one on each wait for a byte ([`STREAM_IDLE`]).
    streams: reqwest::Client,
}

impl Forwarder {
    /// For the node `node`.
    ///
    /// # Panics
    /// If the HTTP client cannot be made (no TLS backend: a build error).
    #[must_use]
    pub fn new(node: &ClusterNode) -> Self {
        let client = |builder: reqwest::ClientBuilder| {
            builder
                .connect_timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|e| panic!("the cluster's HTTP client: {e}"))
        };
        Self {
            secret: node.secret.clone(),
            me: node.url.clone(),
            client: client(reqwest::Client::builder().timeout(TIMEOUT)),
            streams: client(reqwest::Client::builder().read_timeout(STREAM_IDLE)),
        }
    }
}

impl Forwarder {
    /// Whether `presented` is the cluster secret.
    pub(crate) fn admits(&self, presented: &[u8]) -> bool {
        self.secret.matches(presented)
    }

    /// This node's URL (`--node-url`).
    pub(crate) fn url(&self) -> &str {
        &self.me
    }
}

/// The middleware: checks the cluster header, else forwards a request whose tenant this
/// node does not serve to its owner.
pub async fn to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(forwarder) = state.forwarder() else { return next.run(request).await };
    // Only a tenant's routes go to its owner (its API, and its view of `/metrics`):
    // `/healthz`, `/readyz`, the wallboard and unknown paths are this node's own answers.
    let Some(route) = request.extensions().get::<MatchedPath>().and_then(|m| tenant_route(m.as_str())) else {
        return next.run(request).await;
    };
    let tenant = presented_key(request.headers())
        .and_then(|key| state.keys().tenant_of(key).map(|t| t.name().to_owned()))
        .filter(|t| !state.durability().serves(t));
    if let Some(presented) = request.headers().get(HEADER) {
        if !forwarder.secret.matches(presented.as_bytes()) {
            return ApiError::ClusterSecretRefused.into_response();
        }
        // From a node: answered here, whatever it is; one that thought this node the owner
        // is told it is not, so that it looks again.
        if tenant.is_some() {
            let mut answer = ApiError::TenantMoved.into_response();
            answer.headers_mut().insert(NOT_OWNER, HeaderValue::from_static("1"));
            return answer;
        }
        return next.run(request).await;
    }
    let Some(tenant) = tenant else { return next.run(request).await };
    let (Some(serving), Some((store, _))) =
        (state.durability().serving(), state.durability().store_and_journal())
    else {
        return ApiError::TenantMoved.into_response();
    };
    let bucket = store.bucket_of(&tenant);
    let (parts, body) = request.into_parts();
    let body = match crate::routes::read_body(body, &state).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let mut owner = match serving.cached_owner(bucket) {
        Some(url) => Some(url),
        None => look_up(&state, bucket).await,
    };
    // At most one retry, after looking the owner up again: a bucket moved since the cache
    // was refreshed.
    for looked_again in [false, true] {
        let Some(url) = owner.filter(|url| *url != forwarder.me) else { break };
        let answer = if route == Route::Events {
            forward_stream(&state, forwarder, (&url, bucket), &tenant, &parts, body.clone()).await
        } else {
            forward(forwarder, &url, &parts, body.clone()).await
        };
        match answer {
            Answer::Passed(response) => return response,
            Answer::NotOwner if !looked_again => {
                let fresh = look_up(&state, bucket).await;
                if fresh.as_ref() == Some(&url) {
                    break; // the store still names it: the bucket is moving
                }
                owner = fresh;
            }
            Answer::NotOwner | Answer::Unreachable => break,
        }
    }
    ApiError::TenantMoved.into_response()
}

/// A tenant's API route, as forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// The event stream (`GET /v2/events`), passed on as it comes.
    Events,
    /// Any other, answered whole.
    Other,
}

/// The tenant's routes by their templates: the API (under `/v2` and at the root), and
/// `/metrics` on the main listener (the key's tenant's view; the operator's, on
/// `--metrics-listen`, is a router of its own and never comes here).
static TENANT_ROUTES: std::sync::LazyLock<std::collections::HashSet<String>> =
    std::sync::LazyLock::new(|| {
        let (v2, root) = (crate::routes::api("/v2"), crate::routes::api(""));
        let api = v2.templates().iter().chain(root.templates()).cloned();
        api.chain([crate::metrics::TENANT_ROUTE.to_owned()]).collect()
    });

/// Which tenant API route the template `matched` is, if it is one.
fn tenant_route(matched: &str) -> Option<Route> {
    if !TENANT_ROUTES.contains(matched) {
        return None;
    }
    Some(if matched == "/v2/events" || matched == "/events" { Route::Events } else { Route::Other })
}

/// The header an owner adds to the 503 of a forwarded request for a tenant it does not
/// serve (never passed back to a client).
const NOT_OWNER: HeaderName = HeaderName::from_static("waitline-not-owner");

/// What a forwarded request came to.
enum Answer {
    /// The owner's answer, to pass back.
    Passed(Response),
    /// The node does not serve the tenant: the owner known here is out of date.
    NotOwner,
    /// The node could not be reached, or broke off.
    Unreachable,
}

/// `bucket`'s owner as the store has it now (one query, off the runtime's threads).
async fn look_up(state: &AppState, bucket: u32) -> Option<String> {
    let durability = state.durability().clone();
    tokio::task::spawn_blocking(move || {
        let (Some(serving), Some((store, _))) = (durability.serving(), durability.store_and_journal()) else {
            return None;
        };
        serving.look_up_owner(store, bucket)
    })
    .await
    .ok()
    .flatten()
}

/// The request to send to the node at `url`: `parts` with the client's headers we pass and
/// the cluster secret.
fn request_to(
    client: &reqwest::Client,
    forwarder: &Forwarder,
    url: &str,
    parts: &Parts,
    body: Bytes,
) -> reqwest::RequestBuilder {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for name in REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Ok(secret) = forwarder.secret.expose().parse() {
        headers.insert(HEADER, secret);
    }
    client.request(parts.method.clone(), format!("{url}{path}")).headers(headers).body(body)
}

/// What of the owner's answer is passed back, bar the body; `None` when it says it is not
/// the owner.
fn answer_head(answer: &reqwest::Response) -> Option<(StatusCode, HeaderMap)> {
    if answer.headers().contains_key(NOT_OWNER) {
        return None;
    }
    let mut passed = HeaderMap::new();
    for name in ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(&name) {
            passed.insert(name, value.clone());
        }
    }
    Some((answer.status(), passed))
}

/// Sends a request to the node at `url` with `client`: its answer and what of its head is
/// passed back, or what it came to (unreachable, or not the owner).
async fn send(
    client: &reqwest::Client,
    forwarder: &Forwarder,
    url: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<(reqwest::Response, StatusCode, HeaderMap), Answer> {
    let answer = request_to(client, forwarder, url, parts, body).send().await.map_err(|e| {
        tracing::warn!(owner = %url, "forwarding to the owner failed: {e}");
        Answer::Unreachable
    })?;
    let (status, passed) = answer_head(&answer).ok_or(Answer::NotOwner)?;
    Ok((answer, status, passed))
}

/// Sends a request to the node at `url` and reads its whole answer.
async fn forward(forwarder: &Forwarder, url: &str, parts: &Parts, body: Bytes) -> Answer {
    let (answer, status, passed) = match send(&forwarder.client, forwarder, url, parts, body).await {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    match answer.bytes().await {
        Ok(bytes) => Answer::Passed((status, passed, Body::from(bytes)).into_response()),
        Err(e) => {
            tracing::warn!(owner = %url, "reading the owner's answer failed: {e}");
            Answer::Unreachable
        }
    }
}

/// Opens an event stream on the node at `url` (its head within [`TIMEOUT`]) and passes it
/// on as it comes (never buffered whole): it ends when the owner ends it (its tenant moved,
/// or it stops), when the owner sends nothing for [`STREAM_IDLE`], when this node's owner
/// map says `bucket` moved off `url`, when this node stops, when a reload here takes the key
/// away from `tenant`, or when the client goes (then the owner's connection is closed too).
/// It holds one of this node's event-stream slots (and of `tenant`'s) while open.
async fn forward_stream(
    state: &AppState,
    forwarder: &Forwarder,
    (url, bucket): (&str, u32),
    tenant: &str,
    parts: &Parts,
    body: Bytes,
) -> Answer {
    let slot = match state.stream_slot(tenant) {
        Ok(slot) => slot,
        Err(e) => return Answer::Passed(e.into_response()),
    };
    let sent = tokio::time::timeout(TIMEOUT, send(&forwarder.streams, forwarder, url, parts, body)).await;
    let (answer, status, passed) = match sent {
        Ok(Ok(sent)) => sent,
        Ok(Err(answer)) => return answer,
        Err(_) => {
            tracing::warn!(owner = %url, "the owner did not answer an event stream within {TIMEOUT:?}");
            return Answer::Unreachable;
        }
    };
    let chunks = futures_util::StreamExt::map(answer.bytes_stream(), move |chunk| {
        let _slot = &slot;
        chunk
    });
    let chunks = futures_util::StreamExt::take_until(chunks, state.closing());
    let key = crate::auth::digest(presented_key(&parts.headers).unwrap_or_default());
    let chunks = futures_util::StreamExt::take_until(chunks, state.key_revoked(key, tenant));
    let chunks =
        futures_util::StreamExt::take_until(chunks, owner_moved(state.clone(), bucket, url.to_owned()));
    Answer::Passed((status, passed, Body::from_stream(chunks)).into_response())
}

/// Resolves once this node's owner map no longer names `url` as `bucket`'s owner (checked
/// every [`OWNER_CHECK`]).
async fn owner_moved(state: AppState, bucket: u32, url: String) {
    let Some(serving) = state.durability().serving().cloned() else { return std::future::pending().await };
    loop {
        tokio::time::sleep(OWNER_CHECK).await;
        if serving.cached_owner(bucket).as_deref() != Some(url.as_str()) {
            return;
        }
    }
}
