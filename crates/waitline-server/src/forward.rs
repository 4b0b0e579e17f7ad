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
use axum::extract::{Request, State};
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
    /// For event streams: no limit on the whole answer, which lasts as long as the stream.
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
            streams: client(reqwest::Client::builder()),
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
    let stream = request.uri().path().ends_with("/events");
    let limit = state.body_limit();
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return ApiError::BodyTooLarge { limit }.into_response();
    };
    let mut owner = match serving.cached_owner(bucket) {
        Some(url) => Some(url),
        None => look_up(&state, bucket).await,
    };
    // At most one retry, after looking the owner up again: a bucket moved since the cache
    // was refreshed.
    for looked_again in [false, true] {
        let Some(url) = owner.filter(|url| *url != forwarder.me) else { break };
        let answer = if stream {
            forward_stream(&state, forwarder, &url, &parts, body.clone()).await
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

/// Opens an event stream on the node at `url` and passes it on as it comes (never
/// buffered whole): it ends when the owner ends it (its tenant moved, or it stops), when
/// this node stops, or when the client goes (then the owner's connection is closed too).
/// It holds one of this node's event-stream slots while open.
async fn forward_stream(
    state: &AppState,
    forwarder: &Forwarder,
    url: &str,
    parts: &Parts,
    body: Bytes,
) -> Answer {
    let slot = match state.stream_slot() {
        Ok(slot) => slot,
        Err(e) => return Answer::Passed(e.into_response()),
    };
    let (answer, status, passed) = match send(&forwarder.streams, forwarder, url, parts, body).await {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    let chunks = futures_util::StreamExt::map(answer.bytes_stream(), move |chunk| {
        let _slot = &slot;
        chunk
    });
    let chunks = futures_util::StreamExt::take_until(chunks, state.closing());
    Answer::Passed((status, passed, Body::from_stream(chunks)).into_response())
}
