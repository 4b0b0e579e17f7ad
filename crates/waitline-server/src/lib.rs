//! # waitline-server
//!
//! The waitline engine over HTTP with the wire format of the Telnyx Voice API v2: code
//! written for Telnyx (the official SDKs or curl) works against it by changing the base URL.
//! A thin layer: it parses, authenticates, maps errors and delivers events; every rule is
//! the core's.
//!
//! [`router`] builds the whole service for an [`AppState`], so tests can drive it without a
//! socket; [`run`] serves it on a listener until a shutdown signal, and [`HttpServer`] does the
//! same with a [`Reloader`] for keys and certificates (`SIGHUP`).

mod acknowledge;
pub mod auth;
pub mod cluster_secret;
pub mod config;
pub mod durable;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod node_share;
pub mod rate_limit;
pub mod readiness;
pub mod replay_backlog;
mod request_metrics;
pub mod routes;
mod serve;
pub mod simulate;
mod stream_slots;
pub mod tls;
pub mod wallboard;
pub mod webhook;
mod webhook_delivery;
pub mod webhook_destination;
mod webhook_lane;
mod webhook_signer;
pub mod wire;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use waitline::{Engine, EngineBuilder};

use crate::auth::{ApiKeys, KeyDigest, KeySpec};
use crate::config::Config;
use crate::durable::Durability;
use crate::rate_limit::RateLimiter;
use crate::request_metrics::RequestCounts;
use crate::routes::Routes;
use crate::stream_slots::{StreamSlot, StreamSlots};
use crate::tls::Tls;
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
    /// Swapped whole when keys are reloaded; a request reads it once, and an event stream
    /// is woken by the change to check its key.
    keys: tokio::sync::watch::Sender<Arc<ApiKeys>>,
    /// Per-tenant buckets, when rate limits are on.
    limiter: Option<RateLimiter>,
    /// The configured signing key (the operator's URLs', the tenant `default`'s), which every
    /// other tenant's derives from.
    signer: Signer,
    body_limit: usize,
    body_timeout: Duration,
    /// Set when shutdown begins: event streams end so their connections can close.
    closing: tokio::sync::watch::Sender<bool>,
    /// The event streams open, against the server's cap and each tenant's.
    stream_slots: StreamSlots,
    /// The request counts (`None`: metrics off), made when the router is built, which knows
    /// the routes.
    request_counts: Option<OnceLock<Arc<RequestCounts>>>,
    metrics_max_queues: usize,
    /// One node of several: its way to the other nodes.
    forwarder: Option<forward::Forwarder>,
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
        let limiter = config.rate_limit.clone().map(RateLimiter::new);
        let keys = ApiKeys::new(&engine, &config.api_keys, limiter.as_ref());
        Self {
            shared: Arc::new(Shared {
                webhooks: Webhooks::new(&engine, durability.clone(), signer.clone(), config.webhooks.clone()),
                durability,
                engine,
                keys: tokio::sync::watch::Sender::new(Arc::new(keys)),
                limiter,
                signer: signer.clone(),
                body_limit: config.max_body_bytes,
                body_timeout: config.connections.body_timeout,
                closing: tokio::sync::watch::Sender::new(false),
                stream_slots: StreamSlots::new(config.max_event_streams, config.max_event_streams_per_tenant),
                request_counts: config.metrics.enabled.then(OnceLock::new),
                metrics_max_queues: config.metrics.max_queues,
                forwarder: config.cluster.as_ref().map(forward::Forwarder::new),
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

    pub(crate) fn keys(&self) -> Arc<ApiKeys> {
        self.shared.keys.borrow().clone()
    }

    /// Replaces the API keys: requests from now on are checked against `keys`, and every
    /// open event stream whose key no longer names its tenant ends; requests in flight and
    /// open connections are not otherwise touched. A tenant's rate-limit bucket stays.
    pub fn reload_keys(&self, keys: &[KeySpec]) {
        let fresh = ApiKeys::new(&self.shared.engine, keys, self.shared.limiter.as_ref());
        self.shared.keys.send_replace(Arc::new(fresh));
    }

    /// Resolves once the key of digest `key` no longer names `tenant` (removed, or given to
    /// another tenant, by a reload), or the service is gone. Woken by each reload, never
    /// polled.
    pub(crate) fn key_revoked(
        &self,
        key: KeyDigest,
        tenant: &str,
    ) -> impl Future<Output = ()> + Send + use<> {
        let mut keys = self.shared.keys.subscribe();
        let tenant = tenant.to_owned();
        async move {
            let _ = keys.wait_for(|keys| !keys.names(&key, &tenant)).await;
        }
    }

    /// The public key that verifies the webhooks to `tenant`'s own URLs, base64 (see
    /// [`Signer::for_tenant`]; the tenant `default`'s is the configured one).
    pub(crate) fn public_key_of(&self, tenant: &str) -> String {
        self.shared.signer.for_tenant(tenant).public_key_base64()
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn closing(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.shared.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_closing(&self) -> bool {
        *self.shared.closing.borrow()
    }

    /// A slot for one event stream of `tenant`, held while it is open.
    pub(crate) fn stream_slot(&self, tenant: &str) -> Result<StreamSlot, crate::error::ApiError> {
        self.shared.stream_slots.take(tenant, self.keys().tenants())
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.shared.body_limit
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        self.shared.body_timeout
    }

    /// Metrics on: `GET /metrics` is served and requests are counted.
    pub(crate) fn metrics_enabled(&self) -> bool {
        self.shared.request_counts.is_some()
    }

    /// The request counts, once a router counts them.
    pub(crate) fn request_counts(&self) -> Option<Arc<RequestCounts>> {
        self.shared.request_counts.as_ref()?.get().cloned()
    }

    /// The request counts of a router with `templates` (made by the first router built; the
    /// service builds one, always of the same routes).
    fn count_requests_of(&self, templates: &[String]) -> Option<Arc<RequestCounts>> {
        let counts = self.shared.request_counts.as_ref()?;
        Some(
            counts.get_or_init(|| Arc::new(RequestCounts::new(templates.iter().map(String::as_str)))).clone(),
        )
    }

    pub(crate) fn forwarder(&self) -> Option<&forward::Forwarder> {
        self.shared.forwarder.as_ref()
    }

    pub(crate) fn metrics_max_queues(&self) -> usize {
        self.shared.metrics_max_queues
    }
}

/// The whole HTTP service (its requests are counted where they are answered: see
/// [`answering`]).
pub fn router(state: AppState) -> Router {
    routed(state).0
}

/// The whole HTTP service, and the counts of its requests (metrics on).
fn routed(state: AppState) -> (Router, Option<Arc<RequestCounts>>) {
    // No body-limit layer: a layer wraps every route's service (one more boxed clone per
    // request) and inserts an extension into every request; `JsonBody` applies the limit itself.
    let routes = Routes::new()
        .merge(routes::api("/v2"))
        .merge(routes::api(""))
        .route("/healthz", get(readiness::healthz))
        .merge(wallboard::routes());
    let routes = if state.metrics_enabled() {
        routes.route(metrics::TENANT_ROUTE, get(metrics::tenant_metrics))
    } else {
        routes
    };
    let routes =
        if state.forwarder().is_some() { routes.route("/readyz", get(readiness::readyz)) } else { routes };
    let counts = state.count_requests_of(routes.templates());
    let router = routes
        .into_router()
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    // A service in memory has nothing to wait for: no layer, no cost.
    let router = if state.durability().is_durable() {
        router.layer(acknowledge::AcknowledgeLayer::new(state.clone()))
    } else {
        router
    };
    // Outside the acknowledgement: a forwarded request is acknowledged by its owner.
    let router = if state.forwarder().is_some() {
        router.layer(axum::middleware::from_fn_with_state(state.clone(), forward::to_owner))
    } else {
        router
    };
    (router.with_state(state), counts)
}

/// The whole service as a listener answers a request: [`router`], each answer started within
/// `timeout` (else 503 `10007`) and, with metrics on, counted. For driving the service in
/// process exactly as it is served (the request-metrics benchmark).
pub fn answering<B>(
    state: AppState,
    timeout: Duration,
) -> impl hyper::service::Service<
    hyper::Request<B>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone
where
    B: hyper::body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (app, counts) = routed(state);
    serve::answer_within(app, counts, timeout)
}

/// The service of `--metrics-listen`: `GET /metrics` with every tenant's series, no key.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::operator_metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// The engine a configuration asks for, before its journal.
#[must_use]
pub fn engine_builder(config: &Config) -> EngineBuilder {
    Engine::builder()
        .queue_idle_ttl(config.queue_idle_ttl)
        .service_level_threshold(config.service_level_threshold)
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

/// The engine a configuration asks for, with its data directory (or PostgreSQL) opened
/// and replayed (in memory when it has neither).
///
/// # Errors
/// The data directory cannot be used or replayed (see [`Durability::open`]).
pub fn open_engine(config: &Config) -> Result<(Engine, Durability), String> {
    let tls = match &config.postgres_ca {
        Some(ca) => waitline_store::PgTls::ca_file(ca).map_err(|e| e.to_string())?,
        None => waitline_store::PgTls::default(),
    };
    let postgres = config.postgres_url.as_ref().map(|url| waitline_store::PgConfig {
        lease: config.lease,
        tls,
        ..waitline_store::PgConfig::new(url.clone())
    });
    let keep = match (&postgres, &config.data_dir) {
        (Some(pg), _) => match &config.cluster {
            Some(node) => durable::Keep::Node(pg, &node.url),
            None => durable::Keep::Postgres(pg),
        },
        (None, Some(dir)) => durable::Keep::Dir(dir),
        (None, None) => return Ok((engine(config), Durability::in_memory())),
    };
    let (engine, durability, replayed) = Durability::open(
        &keep,
        config.fsync,
        config.recover_truncate,
        config.snapshot_every,
        engine_builder(config),
    )?;
    tracing::info!(store = %keep, tenants = replayed.tenants, records = replayed.records, "journal replayed");
    Ok((engine, durability))
}

/// Serves until `shutdown` resolves, then drains the webhook outbox (up to the configured
/// grace period). Timers fire on time without traffic: a background task runs the engine's
/// maintenance. See [`HttpServer`] to reload keys or certificates while serving.
///
/// # Errors
/// When the TLS files cannot be used.
pub async fn run(
    config: Config,
    engine: Engine,
    durability: Durability,
    signer: Signer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics_listener = bind_metrics(&config).await?;
    let server = HttpServer::new(config, engine, durability, &signer).map_err(std::io::Error::other)?;
    server.serve(listener, metrics_listener, shutdown).await;
    Ok(())
}

/// The listener of `--metrics-listen`, if set and metrics are on.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind_metrics(config: &Config) -> std::io::Result<Option<TcpListener>> {
    match config.metrics.listen.filter(|_| config.metrics.enabled) {
        Some(addr) => TcpListener::bind(addr).await.map(Some),
        None => Ok(None),
    }
}

/// The service ready to serve: its state and, with `--tls-cert`, its certificate.
#[derive(Debug)]
pub struct HttpServer {
    config: Config,
    state: AppState,
    tls: Option<Arc<Tls>>,
}

/// Changes a serving [`HttpServer`] without a restart (what `SIGHUP` does). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reloader {
    state: AppState,
    tls: Option<Arc<Tls>>,
}

impl Reloader {
    /// See [`AppState::reload_keys`].
    pub fn reload_keys(&self, keys: &[KeySpec]) {
        self.state.reload_keys(keys);
    }

    /// Reads the certificate and key files again; new connections get the new certificate.
    /// `false`: no TLS, nothing to reload.
    ///
    /// # Errors
    /// The files cannot be used: the certificate in use stays.
    pub fn reload_tls(&self) -> Result<bool, String> {
        self.tls.as_ref().map_or(Ok(false), |tls| tls.reload().map(|()| true))
    }
}

impl HttpServer {
    /// The state for `engine`, and the certificate if the configuration names one.
    ///
    /// # Errors
    /// The TLS files cannot be used.
    pub fn new(
        config: Config,
        engine: Engine,
        durability: Durability,
        signer: &Signer,
    ) -> Result<Self, String> {
        let tls = config.tls.clone().map(Tls::load).transpose()?.map(Arc::new);
        let state = AppState::durable(engine, durability, &config, signer);
        Ok(Self { config, state, tls })
    }

    /// `https` with a certificate, else `http`.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The handle that reloads keys and certificates.
    #[must_use]
    pub fn reloader(&self) -> Reloader {
        Reloader { state: self.state.clone(), tls: self.tls.clone() }
    }

    /// Serves until `shutdown` resolves, then drains the webhook outbox (up to the
    /// configured grace period). With `metrics_listener`, serves the operator's metrics
    /// there too (see [`bind_metrics`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let Self { config, state, tls } = self;
        let metrics_task = metrics_listener.map(|l| {
            let (app, tls, limits) = (metrics_router(state.clone()), tls.clone(), config.connections);
            // The operator's scrapes are not counted.
            tokio::spawn(serve::serve(l, app, None, tls, limits, std::future::pending::<()>()))
        });
        // A node of several may take over calls with webhook URLs of their own at any time:
        // its outbox runs from the start. A restart may have replayed calls with URLs of
        // their own and no backlog: their next events are owed too.
        if state.webhooks().has_default_url()
            || state.durability().has_backlog()
            || state.durability().serving().is_some()
            || state.engine().tenants().iter().any(waitline::Tenant::has_live_call_with_webhook_url)
        {
            state.webhooks().ensure_started();
        }
        let maintenance = tokio::spawn(maintain(state.engine().clone(), state.clone()));
        let closing = state.clone();
        let shutdown = async move {
            shutdown.await;
            // End the event streams, or their connections would keep the server up.
            closing.shared.closing.send_replace(true);
        };
        let (app, counts) = routed(state.clone());
        serve::serve(listener, app, counts, tls, config.connections, shutdown).await;
        state.durability().stop_sharing();
        maintenance.abort();
        if let Some(task) = metrics_task {
            task.abort();
        }
        state.webhooks().shutdown(config.shutdown_grace).await;
    }
}

/// Fires due timers (max-wait expiry, idle queues) even when no request comes, while no
/// webhook outbox runs keeps the delivery marks up with the journal, takes the snapshots
/// that are due, and (a single node) drops the tenants of a bucket whose lease was lost. Sleeps until the next
/// timer, at most 100 ms at a time so that a timer set meanwhile is not missed.
async fn maintain(engine: Engine, state: AppState) {
    // A single node's buckets whose lease was lost, their tenants forgotten already.
    let mut forgotten = Vec::new();
    loop {
        if state.durability().lost_any() {
            state.durability().forget_lost(&engine, &mut forgotten);
        }
        match state.durability().serving() {
            Some(serving) => serving.run_timers(&engine),
            None => {
                engine.run_pending_tasks();
            }
        }
        if !state.webhooks().is_running() {
            // Nothing waits for delivery: a restart need not send these events again.
            state.durability().mark_all_delivered(|| !state.webhooks().is_running());
        }
        if state.durability().snapshots_due() {
            // A snapshot holds its tenant's lock while it is made: not on a runtime thread.
            let (durability, engine) = (state.durability().clone(), engine.clone());
            let _ = tokio::task::spawn_blocking(move || durability.take_due_snapshots(&engine)).await;
        }
        tokio::time::sleep(engine.sleep_until_next_wakeup(Duration::from_millis(100))).await;
    }
}
