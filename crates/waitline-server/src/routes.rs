//! The routes of docs/behaviour.md §5. Each handler translates: read the request, call the
//! engine, shape the answer. No rule is decided here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, RawPathParamsRejection};
use axum::extract::{FromRequest, Path, RawPathParams, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::json;
use waitline::PageRequest;

use crate::AppState;
use crate::auth::{Auth, KeyedAuth};
use crate::error::ApiError;
use crate::wire::{self, Body};

type ApiResult = Result<Response, ApiError>;

/// A request body read within the size limit and the body timeout; too large answers 413,
/// too slow 408, in the Telnyx shape.
#[derive(Debug)]
pub struct JsonBody(pub Body);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), state).await?;
        Ok(Self(Body::parse(&bytes)?))
    }
}

/// A request's whole body, within the service's body limit and body timeout (413, 408, or
/// 400 when broken off): a local request's and a forwarded one's alike.
pub(crate) async fn read_body(
    body: axum::body::Body,
    state: &AppState,
) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.body_limit();
    let timeout = state.body_timeout();
    tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::BodyTimeout { secs: timeout.as_secs() })?
        .map_err(|e| body_error(e, limit))
}

/// A body that could not be read: over the limit (413), or broken off (400, with the text of
/// axum's `Bytes` rejection).
fn body_error(e: axum::Error, limit: usize) -> ApiError {
    // The limit's error comes wrapped in one or two `axum::Error`s (the collecting and the
    // request body's own).
    let mut inner = e.into_inner();
    for _ in 0..2 {
        inner = match inner.downcast::<axum::Error>() {
            Ok(e) => e.into_inner(),
            Err(other) => other,
        };
    }
    if inner.is::<http_body_util::LengthLimitError>() {
        ApiError::BodyTooLarge { limit }
    } else {
        ApiError::MalformedJson(format!("Failed to buffer the request body: {inner}"))
    }
}

/// Path segments, percent-decoded; undecodable ones answer 404 like any unknown resource.
fn segments<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v).map_err(|_| ApiError::RouteNotFound)
}

/// Two path segments, percent-decoded, borrowed from the request (no allocation); undecodable
/// ones answer 404 like any unknown resource.
fn two_segments(p: &Result<RawPathParams, RawPathParamsRejection>) -> Result<(&str, &str), ApiError> {
    let mut it = p.as_ref().map_err(|_| ApiError::RouteNotFound)?.iter().map(|(_, v)| v);
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(ApiError::RouteNotFound),
    }
}

/// `page[number]` and `page[size]` from the query string (other parameters are ignored).
fn page_request(query: Option<&str>) -> Result<PageRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let mut page = PageRequest::default();
    for (k, v) in pairs {
        match k.as_str() {
            "page[number]" => page.number = Some(query_number(waitline::PAGE_NUMBER, &v)?),
            "page[size]" => page.size = Some(query_number(waitline::PAGE_SIZE, &v)?),
            _ => {}
        }
    }
    Ok(page)
}

/// A query parameter as the engine's number type: not an integer is a bad query, an integer
/// out of range the engine's error.
fn query_number<T: TryFrom<i64>>(bounds: waitline::Bounds, text: &str) -> Result<T, ApiError> {
    let value: i64 = text.trim().parse().map_err(|_| ApiError::BadQuery { parameter: bounds.parameter })?;
    Ok(bounds.convert(value)?)
}

/// A router and the path templates it routes: the request metrics' route labels, known
/// before the first request (see `request_metrics`).
#[derive(Debug)]
pub struct Routes<S = AppState> {
    router: Router<S>,
    templates: Vec<String>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self { router: Router::new(), templates: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No route yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `path` (a template, as for [`Router::route`]) served by `method_router`.
    #[must_use]
    pub fn route(mut self, path: &str, method_router: MethodRouter<S>) -> Self {
        self.router = self.router.route(path, method_router);
        self.templates.push(path.to_owned());
        self
    }

    /// These routes and `other`'s.
    #[must_use]
    pub fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.templates.extend(other.templates);
        self
    }

    /// Every path template, in the order routed.
    #[must_use]
    pub fn templates(&self) -> &[String] {
        &self.templates
    }

    /// The router.
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

/// Every API route under `prefix` (`/v2`, or `` for the root). Routes are registered with
/// their full paths rather than nested: a nested router rewrites every request's URI, which
/// costs an allocation per request.
pub fn api(prefix: &str) -> Routes {
    let at = |path: &str| format!("{prefix}{path}");
    Routes::new()
        .route(&at("/calls"), post(dial))
        .route(&at("/calls/{call_control_id}"), get(call))
        .route(&at("/calls/{call_control_id}/actions/{action}"), post(action))
        .route(&at("/queues"), get(list_queues).post(create_queue))
        .route(&at("/queues/{queue_name}"), get(queue).post(update_queue).delete(delete_queue))
        .route(&at("/queues/{queue_name}/calls"), get(queue_calls))
        .route(
            &at("/queues/{queue_name}/calls/{call_control_id}"),
            get(queue_call).patch(update_queue_call).delete(remove_queue_call),
        )
        .route(&at("/events"), get(events))
        .route(&at("/webhook_public_key"), get(public_key))
        .route(&at("/webhook_failures"), get(webhook_failures))
}

async fn dial(State(state): State<AppState>, Auth(t): Auth, JsonBody(b): JsonBody) -> ApiResult {
    let params = b.dial()?;
    // The parameters' errors before the destination's, and no outbox for a refused dial.
    params.check()?;
    if let Some(url) = &params.webhook_url {
        state.webhooks().check_destination(url).map_err(ApiError::WebhookDestination)?;
        // Before the call exists, so its first event is delivered too.
        state.webhooks().ensure_started();
    }
    Ok(wire::data(&t.dial(&params)?))
}

async fn call(Auth(t): Auth, id: Result<Path<String>, PathRejection>) -> ApiResult {
    Ok(wire::data(&t.call(&segments(id)?)?))
}

/// The commands of `POST /v2/calls/{call_control_id}/actions/{action}` (each its own series
/// in the request metrics).
pub const CALL_ACTIONS: [&str; 5] = ["enqueue", "leave_queue", "bridge", "hangup", "transfer"];

async fn action(
    Auth(t): Auth,
    p: Result<RawPathParams, RawPathParamsRejection>,
    JsonBody(b): JsonBody,
) -> ApiResult {
    let (id, action) = two_segments(&p)?;
    match action {
        "enqueue" => t.enqueue(id, &b.enqueue()?)?,
        "leave_queue" => t.leave_queue(id, &b.command_options()?)?,
        "bridge" => t.bridge(id, &b.bridge()?)?,
        "hangup" => t.hangup(id, &b.command_options()?)?,
        "transfer" => {
            t.transfer(id, &b.transfer()?)?;
        }
        _ => return Err(ApiError::RouteNotFound),
    }
    Ok(wire::ok_result())
}

async fn list_queues(Auth(t): Auth, RawQuery(q): RawQuery) -> ApiResult {
    Ok(wire::page(&t.queues(page_request(q.as_deref())?)?))
}

async fn create_queue(Auth(t): Auth, JsonBody(b): JsonBody) -> ApiResult {
    let name = b.required_string("queue_name")?;
    Ok(wire::data(&t.create_queue(&name, b.bounded(waitline::QUEUE_MAX_SIZE)?)?))
}

async fn queue(Auth(t): Auth, name: Result<Path<String>, PathRejection>) -> ApiResult {
    Ok(wire::data(&t.queue(&segments(name)?)?))
}

async fn update_queue(
    Auth(t): Auth,
    name: Result<Path<String>, PathRejection>,
    JsonBody(b): JsonBody,
) -> ApiResult {
    let max_size =
        b.bounded(waitline::QUEUE_MAX_SIZE)?.ok_or_else(|| waitline::Error::missing("max_size"))?;
    Ok(wire::data(&t.update_queue(&segments(name)?, max_size)?))
}

async fn delete_queue(Auth(t): Auth, name: Result<Path<String>, PathRejection>) -> ApiResult {
    t.delete_queue(&segments(name)?)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn queue_calls(
    Auth(t): Auth,
    name: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    Ok(wire::page(&t.queue_calls(&segments(name)?, page_request(q.as_deref())?)?))
}

async fn queue_call(Auth(t): Auth, p: Result<RawPathParams, RawPathParamsRejection>) -> ApiResult {
    let (name, id) = two_segments(&p)?;
    Ok(wire::data(&t.queue_call(name, id)?))
}

async fn update_queue_call(
    Auth(t): Auth,
    p: Result<RawPathParams, RawPathParamsRejection>,
    JsonBody(b): JsonBody,
) -> ApiResult {
    let (name, id) = two_segments(&p)?;
    t.update_queue_call(name, id, &b.queue_call_update()?)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_queue_call(Auth(t): Auth, p: Result<RawPathParams, RawPathParamsRejection>) -> ApiResult {
    let (name, id) = two_segments(&p)?;
    t.remove_queue_call(name, id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// [ext] The tenant's events as Server-Sent Events, in the webhook envelope.
async fn events(
    State(state): State<AppState>,
    KeyedAuth { tenant: t, key }: KeyedAuth,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Each stream holds a bounded buffer in the engine: their number is capped.
    let slot = state.stream_slot(t.name())?;
    let mut sub = state.engine().subscribe_tenant_bounded(t.name(), STREAM_BUFFER);
    let durability = state.durability().clone();
    let tenant: Arc<str> = t.name().into();
    // An event taken from the subscription (read in place, made into its SSE event at once:
    // no owned event between), its sequence number, and the store's mark that covers its
    // change: it is sent once that mark is on disk.
    let mut held: Option<(SseEvent, u64, Option<waitline_store::Ticket>)> = None;
    // The subscription is awaited where the response body is polled: no thread, no polling.
    // When the client goes away the body is dropped, and with it the subscription and the slot.
    // Each event spends the task's budget, so a stream that is never empty still lets the
    // runtime's other tasks run.
    let stream = futures_util::stream::poll_fn(move |cx| {
        let _slot = &slot;
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        if held.is_none() {
            if !ready!(sub.poll_ready(cx)) {
                return Poll::Ready(None);
            }
            let Some(ev) = sub.try_next() else { return Poll::Ready(None) };
            held = Some((sse_event(ev), ev.seq(), durability.mark()));
        }
        let Some((_, seq, mark)) = &held else { return Poll::Ready(None) };
        let seq = *seq;
        let settled = ready!(durability.poll_durable(*mark, cx));
        coop.made_progress();
        // The stream's events are all of its tenant.
        let told = durability.may_tell(settled, &tenant, seq);
        match told {
            Ok(true) => Poll::Ready(held.take().map(|(ev, _, _)| Ok(ev))),
            // The stream's tenant moved to another node, or the store stopped: nothing more
            // is told here (the client reconnects, through the owner).
            Ok(false) | Err(_) => Poll::Ready(None),
        }
    });
    // Ends when the service stops, or when the tenant moves to another node (a takeover):
    // the client reconnects and reaches the new owner. Ends too when a reload takes its key
    // away (or gives it to another tenant): what it was allowed to read, it no longer is.
    let (closing, moved) = (state.closing(), state.durability().moved(t.name()));
    let revoked = state.key_revoked(key, t.name());
    let stopped = async move {
        tokio::select! {
            () = closing => {}
            () = moved => {}
            () = revoked => {}
        }
    };
    let stream = futures_util::StreamExt::take_until(stream, stopped);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One event as an SSE event, its data the webhook envelope.
fn sse_event(ev: waitline::EventRef<'_>) -> SseEvent {
    let data = crate::webhook::envelope(&ev, 1, "/v2/events").to_string();
    SseEvent::default().event(ev.event_type()).id(ev.id().to_string()).data(data)
}

/// Command batches an event stream may fall behind by before it loses events.
const STREAM_BUFFER: usize = 4096;

/// [ext] The Ed25519 public key that verifies the webhook signatures of the key's tenant,
/// or of the tenant `default` when no key is given.
async fn public_key(State(state): State<AppState>, auth: Option<Auth>) -> Response {
    let tenant = auth.as_ref().map_or(waitline::DEFAULT_TENANT, |Auth(t)| t.name());
    Json(json!({ "data": { "public_key": state.public_key_of(tenant) } })).into_response()
}

/// [ext] The tenant's latest webhooks that finally failed, oldest first.
async fn webhook_failures(State(state): State<AppState>, Auth(t): Auth) -> Response {
    wire::data(&state.webhooks().failures.of(t.name()))
}

/// Unknown route.
pub async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// Known route, other method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_from_queries() {
        assert_eq!(page_request(None).unwrap(), PageRequest::default());
        assert_eq!(
            page_request(Some("page%5Bnumber%5D=2&page[size]=5&x=y")).unwrap(),
            PageRequest::new(2, 5)
        );
        assert!(matches!(
            page_request(Some("page[size]=abc")),
            Err(ApiError::BadQuery { parameter: "page[size]" })
        ));
    }
}
