//! Whether this node is ready, for load balancers and orchestrators (`GET /healthz`, no key:
//! probes rarely carry one), and what it owns, for operators and scripts (`GET /readyz`, a
//! node of several only, with the cluster secret in its header: it shows the cluster's
//! placement, which is no tenant's business).
//!
//! A node answers nothing before its start replay is done: it listens only after it. Once
//! it answers, it is ready while its store works, it is not stopping, a single node on
//! PostgreSQL has lost no bucket (it never takes one back: its supervisor restarts it) and,
//! for a node of several, its last share turn reached PostgreSQL within the lease. Both are
//! this node's own answers, never forwarded to a tenant's owner.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::cluster_secret::HEADER;
use crate::error::ApiError;

/// Whether this node is ready now, or why not.
fn ready(state: &AppState) -> Result<(), String> {
    if state.is_closing() {
        return Err("stopping".into());
    }
    state.durability().ready()
}

/// 200 `{"status": "ok", "ready": true}`, or 503 `{"status": "not_ready", "ready": false,
/// "reason": ...}`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match ready(&state) {
        Ok(()) => Json(json!({ "status": "ok", "ready": true })).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "ready": false, "reason": why })),
        )
            .into_response(),
    }
}

/// The buckets this node serves with their lease epochs, and whether it is ready (200, or
/// 503 when not); 403 `10010` without the cluster secret.
pub async fn readyz(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(forwarder) = state.forwarder() else { return Err(ApiError::RouteNotFound) };
    if !headers.get(HEADER).is_some_and(|s| forwarder.admits(s.as_bytes())) {
        return Err(ApiError::ClusterSecretRefused);
    }
    let durability = state.durability();
    let served = durability.serving().map(|s| s.buckets()).unwrap_or_default();
    let owned = durability.store_and_journal().map(|(store, _)| store.owned()).unwrap_or_default();
    let buckets: Vec<_> = owned
        .iter()
        .filter(|(bucket, _)| served.contains(bucket))
        .map(|(bucket, epoch)| json!({ "bucket": bucket, "epoch": epoch }))
        .collect();
    let ready = ready(&state);
    let status = if ready.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "data": {
        "record_type": "node_readiness",
        "node_url": forwarder.url(),
        "ready": ready.is_ok(),
        "reason": ready.err(),
        "buckets": buckets,
    }});
    Ok((status, Json(body)).into_response())
}
