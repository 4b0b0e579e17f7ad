//! The accept loop: each connection served by hyper's HTTP/1.1, in plain text or TLS, within
//! the connection limits (docs/behaviour.md §5, "Slow and greedy clients"):
//!
//! - at most `max_connections` open at once: past it the loop stops accepting, and new
//!   connections wait in the kernel's backlog;
//! - the TLS handshake and every request's headers must arrive within `header_timeout`,
//!   counted from the connection or the end of the previous answer, so an idle or trickling
//!   connection is closed and its slot freed;
//! - the answer must start within `request_timeout` (the body's own timeout is
//!   `JsonBody`'s);
//! - a request's head is at most [`MAX_HEAD_BYTES`] (the body's limit is `JsonBody`'s).
//!
//! Shutdown stops accepting, lets each connection finish its request in flight, then waits
//! for every connection to close.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::ConnectionLimits;
use crate::error::ApiError;
use crate::request_metrics::RequestCounts;
use crate::tls::Tls;

/// The largest request head (request line and headers) read.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then until every connection closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    counts: Option<Arc<RequestCounts>>,
    tls: Option<Arc<Tls>>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Bounds a request's head: hyper answers 431 past it (with no limit of its own it
        // reads up to its buffer's 400 KiB).
        .max_header_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((tcp, slot)) = accepted else { continue };
        let service = answer_within(app.clone(), counts.clone(), limits.request_timeout);
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Held until the connection closes.
            let _slot = slot;
            let served = match tls {
                None => watcher.watch(http.serve_connection(TokioIo::new(tcp), service)).await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                        }
                        Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection, once a slot is free; `None` after a failed accept (retried).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    // The semaphore is never closed.
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((tcp, _peer)) => {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY not set: {e}");
            }
            Some((tcp, slot))
        }
        Err(e) => {
            // Out of file descriptors and the like: wait rather than spin.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// `app` as a hyper service whose answers must start within `timeout`, each answer counted
/// in `counts` (metrics on) under its route, method and status (a request timed out too).
pub(crate) fn answer_within<B>(
    app: Router,
    counts: Option<Arc<RequestCounts>>,
    timeout: Duration,
) -> impl hyper::service::Service<
    hyper::Request<B>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone
where
    B: hyper::body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    hyper::service::service_fn(move |request: hyper::Request<B>| {
        let mut app = app.clone();
        let counts = counts.clone();
        async move {
            // The one reading both the timeout and the request's duration count from.
            let started = tokio::time::Instant::now();
            let series = counts.as_ref().map(|c| c.series_of(request.method(), request.uri().path()));
            // A router is always ready: no `poll_ready` needed.
            let answer =
                match tokio::time::timeout_at(started + timeout, tower::Service::call(&mut app, request))
                    .await
                {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(never)) => match never {},
                    Err(_) => ApiError::RequestTimeout { secs: timeout.as_secs() }.into_response(),
                };
            if let (Some(counts), Some(series)) = (counts, series) {
                counts.record(series, answer.status().as_u16(), started.elapsed());
            }
            Ok(answer)
        }
    })
}
