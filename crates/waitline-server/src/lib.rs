//! # waitline-server
//!
//! The waitline engine over HTTP with the wire format of the Telnyx Voice API v2: code
//! written for Telnyx (the official SDKs or curl) works against it by changing the base URL.
//! A thin layer: it parses, authenticates, maps errors and delivers events; every rule is
//! the core's.
//!
//! [`router`] builds the whole service for an [`AppState`], so tests can drive it without a
//! socket; [`run`] serves it on a listener until a shutdown signal.

pub mod auth;
pub mod config;
pub mod durable;
pub mod error;
pub mod routes;
pub mod webhook;
mod webhook_delivery;
pub mod webhook_destination;
mod webhook_lane;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use waitline::{Engine, EngineBuilder};

use crate::auth::ApiKeys;
use crate::config::Config;
use crate::durable::Durability;
use crate::error::ApiError;
use crate::webhook::{Signer, Webhooks};

/// What every handler shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    engine: Engine,
    durability: Durability,
    webhooks: Webhooks,
    keys: ApiKeys,
    public_key: String,
    body_limit: usize,
    /// Set when shutdown begins: event streams end so their connections can close.
    closing: tokio::sync::watch::Sender<bool>,
    /// Free event-stream slots.
    stream_slots: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
}

impl AppState {
    /// State for `engine` (in memory) with the configured keys.
    #[must_use]
    pub fn new(engine: Engine, config: &Config, signer: &Signer) -> Self {
        Self::durable(engine, Durability::in_memory(), config, signer)
    }

    /// State for `engine`, whose changes `durability` keeps.
    #[must_use]
    pub fn durable(engine: Engine, durability: Durability, config: &Config, signer: &Signer) -> Self {
        let keys = ApiKeys::new(&engine, &config.api_keys);
        Self {
            shared: Arc::new(Shared {
                webhooks: Webhooks::new(&engine, durability.clone(), signer.clone(), config.webhooks.clone()),
                durability,
                engine,
                keys,
                public_key: signer.public_key_base64(),
                body_limit: config.max_body_bytes,
                closing: tokio::sync::watch::Sender::new(false),
                stream_slots: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
                max_streams: config.max_event_streams,
            }),
        }
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Where changes are kept.
    #[must_use]
    pub fn durability(&self) -> &Durability {
        &self.shared.durability
    }

    /// The webhook outbox.
    #[must_use]
    pub fn webhooks(&self) -> &Webhooks {
        &self.shared.webhooks
    }

    pub(crate) fn keys(&self) -> &ApiKeys {
        &self.shared.keys
    }

    pub(crate) fn public_key(&self) -> &str {
        &self.shared.public_key
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.shared.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// A slot for one event stream, held while it is open.
    pub(crate) fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, crate::error::ApiError> {
        self.shared
            .stream_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| crate::error::ApiError::TooManyStreams { limit: self.shared.max_streams })
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.shared.body_limit
    }
}

/// The whole HTTP service.
pub fn router(state: AppState) -> Router {
    // No body-limit layer: a layer wraps every route's service (one more boxed clone per
    // request) and inserts an extension into every request; `JsonBody` applies the limit itself.
    let router = Router::new()
        .merge(routes::api("/v2"))
        .merge(routes::api(""))
        .route("/healthz", get(routes::healthz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    // A service in memory has nothing to wait for: no layer, no cost.
    let router = if state.durability().is_durable() {
        router.layer(axum::middleware::from_fn_with_state(state.clone(), acknowledge_when_durable))
    } else {
        router
    };
    router.with_state(state)
}

/// A write is answered only once its change is on disk; once the store has stopped, no
/// write is taken at all (503, and nothing changes). Reads are served from memory.
async fn acknowledge_when_durable(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let durability = state.durability();
    if write && durability.is_stopped() {
        return ApiError::NotDurable.into_response();
    }
    let response = next.run(request).await;
    if write {
        if let Err(why) = durability.settled().await {
            tracing::error!(why = %why, "a change could not be stored: no change is acknowledged until a restart");
            return ApiError::NotDurable.into_response();
        }
    }
    response
}

/// The engine a configuration asks for, before its journal.
#[must_use]
pub fn engine_builder(config: &Config) -> EngineBuilder {
    Engine::builder()
        .queue_idle_ttl(config.queue_idle_ttl)
        .max_live_calls_per_tenant(config.max_calls_per_tenant)
        // Ended calls are bounded like live ones, or dial-and-hang-up loops would grow
        // memory for the whole retention time.
        .max_ended_calls_per_tenant(config.max_calls_per_tenant)
        .max_queues_per_tenant(config.max_queues_per_tenant)
}

/// The engine a configuration asks for, in memory.
#[must_use]
pub fn engine(config: &Config) -> Engine {
    engine_builder(config).build()
}

/// The engine a configuration asks for, with its data directory opened and replayed (in
/// memory when it has none).
///
/// # Errors
/// The data directory cannot be used or replayed (see [`Durability::open`]).
pub fn open_engine(config: &Config) -> Result<(Engine, Durability), String> {
    let Some(dir) = &config.data_dir else { return Ok((engine(config), Durability::in_memory())) };
    let (engine, durability, replayed) =
        Durability::open(dir, config.fsync, config.recover_truncate, engine_builder(config))?;
    tracing::info!(
        data_dir = %dir.display(),
        tenants = replayed.tenants,
        records = replayed.records,
        "journal replayed"
    );
    Ok((engine, durability))
}

/// Serves until `shutdown` resolves, then drains the webhook outbox (up to the configured
/// grace period). Timers fire on time without traffic: a background task runs the engine's
/// maintenance.
///
/// # Errors
/// When the listener fails.
pub async fn run(
    config: Config,
    engine: Engine,
    durability: Durability,
    signer: Signer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::durable(engine.clone(), durability, &config, &signer);
    if state.webhooks().has_default_url() || state.durability().has_backlog() {
        state.webhooks().ensure_started();
    }
    let maintenance = tokio::spawn(maintain(engine, state.clone()));
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
    });
    let closing = state.clone();
    let shutdown = async move {
        shutdown.await;
        // End the event streams, or their connections would keep the server up.
        closing.shared.closing.send_replace(true);
    };
    let served = axum::serve(listener, router(state.clone())).with_graceful_shutdown(shutdown).await;
    maintenance.abort();
    state.webhooks().shutdown(config.shutdown_grace).await;
    served
}

/// Fires due timers (max-wait expiry, idle queues) even when no request comes, and, while no
/// webhook outbox runs, keeps the delivery marks up with the journal. Sleeps until the next
/// timer, at most 100 ms at a time so that a timer set meanwhile is not missed.
async fn maintain(engine: Engine, state: AppState) {
    loop {
        engine.run_pending_tasks();
        if !state.webhooks().is_running() {
            // Nothing waits for delivery: a restart need not send these events again.
            state.durability().mark_all_delivered(|| !state.webhooks().is_running());
        }
        tokio::time::sleep(engine.sleep_until_next_wakeup(Duration::from_millis(100))).await;
    }
}
