//! The layer that answers a write only once its change is on disk (with `--fsync periodic`,
//! once written to the operating system); once the store has stopped, no write is taken at
//! all (503, and nothing changes; retryable, `Retry-After: 1`, on a node of several whose
//! PostgreSQL connection dropped: it reconnects by itself). A write of a tenant whose bucket was not held throughout
//! (its lease lost, or given up to another node, between the command and its commit: the
//! append may have been refused) is answered 503 (`ApiError::TenantMoved`), never 200.
//! Reads are served from memory.
//!
//! A tower layer rather than `axum::middleware::from_fn`, which clones the router's inner
//! service and boxes a future of its own for every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use waitline_store::Ticket;

use crate::AppState;
use crate::auth;
use crate::error::ApiError;

/// Wraps a service so that its writes are answered once durable.
#[derive(Clone, Debug)]
pub(crate) struct AcknowledgeLayer {
    state: AppState,
}

impl AcknowledgeLayer {
    pub(crate) const fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for AcknowledgeLayer {
    type Service = Acknowledge<S>;

    fn layer(&self, inner: S) -> Acknowledge<S> {
        Acknowledge { inner, state: self.state.clone() }
    }
}

/// The service of [`AcknowledgeLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Acknowledge<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Acknowledge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Acknowledged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let durability = self.state.durability();
        if !write {
            // Memory may hold the change whose write was answered 503 when the store
            // stopped: no read shows it (the health checks still answer).
            if durability.is_stopped() && !answers_while_stopped(request.uri().path()) {
                return Acknowledged { inner: None, write: None, refused: Some(stopped_answer(durability)) };
            }
            return Acknowledged {
                inner: Some(Box::pin(self.inner.call(request))),
                write: None,
                refused: None,
            };
        }
        if durability.is_stopped() {
            let refused = Write { state: self.state.clone(), held: None, waiting: None, _in_flight: None };
            return Acknowledged { inner: None, write: Some(refused), refused: None };
        }
        // Read before the handler runs (the request moves into it); only where leases can be
        // lost or given up.
        let held = durability
            .has_leases()
            .then(|| auth::presented_key(request.headers()))
            .flatten()
            .and_then(|key| self.state.keys().tenant_of(key).map(|t| t.name().to_owned()))
            .map(|tenant| {
                let epoch = durability.held_epoch_of(&tenant);
                (tenant, epoch)
            });
        // Counted before the handler checks that the tenant is served: a bucket given up
        // (which stops taking commands first) then waits for this write's answer.
        let in_flight = held.as_ref().and_then(|(tenant, _)| durability.write_begins(tenant));
        let write = Write { state: self.state.clone(), held, waiting: None, _in_flight: in_flight };
        Acknowledged { inner: Some(Box::pin(self.inner.call(request))), write: Some(write), refused: None }
    }
}

/// What a write's answer waits with.
#[derive(Debug)]
struct Write {
    state: AppState,
    /// The tenant of the API key presented and the epoch its bucket was held under before
    /// the command ran, where leases can be lost.
    held: Option<(String, Option<u64>)>,
    /// Once the handler has answered: the answer (moved out when given, with no placeholder
    /// response built in its place), and the mark it waits for (taken when the handler
    /// returned, so it covers the change's record, appended before).
    waiting: Option<(Option<Response>, Option<Ticket>)>,
    /// Counts this write in its bucket until it is answered.
    _in_flight: Option<crate::node_share::InFlight>,
}

/// The answer of [`Acknowledge`].
pub(crate) struct Acknowledged<F> {
    /// `None`: a write refused, the store has stopped (or the handler has answered).
    inner: Option<Pin<Box<F>>>,
    /// `Some` for a write.
    write: Option<Write>,
    /// A read refused because the store has stopped.
    refused: Option<ApiError>,
}

impl<F> std::fmt::Debug for Acknowledged<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acknowledged").field("write", &self.write).finish_non_exhaustive()
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Acknowledged<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(write) = this.write.as_mut() else {
            return match (this.inner.as_mut(), this.refused.take()) {
                (Some(inner), _) => inner.as_mut().poll(cx),
                (None, refused) => Poll::Ready(Ok(refused.unwrap_or(ApiError::NotDurable).into_response())),
            };
        };
        let (answer, mark) = match &mut write.waiting {
            Some(waiting) => waiting,
            None => {
                let Some(inner) = this.inner.as_mut() else {
                    return Poll::Ready(Ok(stopped_answer(write.state.durability()).into_response()));
                };
                let Ok(answer) = ready!(inner.as_mut().poll(cx));
                this.inner = None;
                write.waiting.insert((Some(answer), write.state.durability().mark()))
            }
        };
        let durability = write.state.durability();
        let settled = ready!(durability.poll_durable(*mark, cx));
        let answer = answer.take();
        // A lease lost meanwhile: this change, or one sharing its commit, may have been
        // refused by fencing. The tenant's bucket given up, lost or taken again meanwhile
        // (not held, or under another epoch): its append may have been refused with no
        // ticket of its own to fail, so success says nothing of it. Retryable either way:
        // the other buckets go on.
        let moved = !durability.is_stopped()
            && ((durability.lost_any() && settled.is_err())
                || write.held.as_ref().is_some_and(|(tenant, before)| {
                    before.is_none()
                        || durability.held_epoch_of(tenant) != *before
                        || !durability.finishes(tenant)
                }));
        if moved {
            return Poll::Ready(Ok(ApiError::TenantMoved.into_response()));
        }
        if let Err(why) = settled {
            if !durability.reconnects() {
                tracing::error!(why = %why, "a change could not be stored: no change is acknowledged until a restart");
            }
            return Poll::Ready(Ok(stopped_answer(durability).into_response()));
        }
        // Polled again after `Ready` (a contract breach by the caller): an error, not a panic.
        Poll::Ready(Ok(answer.unwrap_or_else(|| ApiError::NotDurable.into_response())))
    }
}

/// Whether a read of `path` is answered while the store has stopped: the health checks,
/// which show no change. (The tenant's `/metrics` shows its queues: refused; the operator's
/// metrics listener is another router.)
fn answers_while_stopped(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The answer to a write the store cannot keep now: retryable when the node reconnects by
/// itself (a node of several over PostgreSQL), else until a restart.
fn stopped_answer(durability: &crate::durable::Durability) -> ApiError {
    if durability.reconnects() { ApiError::StoreReconnecting } else { ApiError::NotDurable }
}
