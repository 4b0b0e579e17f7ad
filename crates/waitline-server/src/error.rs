//! The service's one error type: every way a request can fail, mapped to the Telnyx error
//! body (`{"errors":[{code,title,detail,source:{pointer}}]}`) in one exhaustive match.
//!
//! No client mistake maps to a 5xx or a 409: the official SDKs retry those. The 5xx are a
//! change the store could not keep, and a request the service did not answer in time.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// The engine refused the command (its code, title and status come from the core).
    Engine(waitline::Error),
    /// The body is not JSON (or not a JSON object).
    MalformedJson(String),
    /// A field has the wrong JSON type.
    WrongType {
        /// The field's name.
        parameter: &'static str,
        /// What was expected, e.g. `"a string"`.
        expected: &'static str,
    },
    /// A string field of the wire that the engine does not take outside a fixed set (e.g.
    /// `webhook_url_method`).
    InvalidEnum {
        /// The field's name.
        parameter: &'static str,
        /// The values allowed.
        allowed: &'static [&'static str],
    },
    /// A query parameter is not a number.
    BadQuery {
        /// The parameter (`page[number]`).
        parameter: &'static str,
    },
    /// Missing or unknown API key.
    Unauthorized,
    /// No such route.
    RouteNotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// A `webhook_url` the destination policy refuses: not an http(s) URL with a host
    /// (`10033`), or an address that is not public and not allowed (`95005`).
    WebhookDestination(crate::webhook_destination::Refusal),
    /// Every event-stream slot is taken.
    TooManyStreams {
        /// The configured cap.
        limit: usize,
    },
    /// Every event-stream slot of the key's tenant is taken.
    TooManyTenantStreams {
        /// The configured cap per tenant.
        limit: usize,
    },
    /// The tenant's rate limit is reached.
    RateLimited {
        /// Whole seconds until a request is allowed again.
        retry_after_secs: u64,
    },
    /// The body did not arrive within the body timeout.
    BodyTimeout {
        /// The timeout in seconds.
        secs: u64,
    },
    /// No answer was ready within the request timeout.
    RequestTimeout {
        /// The timeout in seconds.
        secs: u64,
    },
    /// The body is larger than the configured limit.
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The store could not keep a change: it is not acknowledged, and no change is taken
    /// until a restart.
    NotDurable,
    /// The metrics could not be read (a bug, never the client's doing).
    MetricsUnavailable,
    /// This node lost the lease of the tenant's bucket: another node serves the tenant now
    /// (retryable, `Retry-After: 1`).
    TenantMoved,
    /// PostgreSQL dropped this node's store connection: the change may or may not be stored
    /// (retryable, `Retry-After: 1`; the node reconnects and loads its buckets again).
    StoreReconnecting,
    /// A request carrying the cluster header with a secret that is not this cluster's.
    ClusterSecretRefused,
}

impl From<waitline::Error> for ApiError {
    fn from(e: waitline::Error) -> Self {
        Self::Engine(e)
    }
}

impl ApiError {
    /// HTTP status, Telnyx code, title, detail, the parameter to blame and extra `meta`.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String, Option<&'static str>, Option<Value>) {
        match self {
            Self::Engine(e) => {
                let status =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                let meta = match e {
                    waitline::Error::CallEnded { callback: Some(cb) } => Some(json!({ "call": cb })),
                    _ => None,
                };
                (status, e.code(), e.title(), e.to_string(), e.parameter(), meta)
            }
            Self::MalformedJson(why) => (
                StatusCode::BAD_REQUEST,
                "10015",
                "Bad Request",
                format!("The request body is not a valid JSON object: {why}"),
                None,
                None,
            ),
            Self::WrongType { parameter, expected } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "10033",
                "Value outside of range",
                format!("The '{parameter}' parameter must be {expected}."),
                Some(parameter),
                None,
            ),
            Self::InvalidEnum { parameter, allowed } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "10032",
                "Invalid enumerated value",
                format!("The '{parameter}' parameter must be one of: {}.", allowed.join(", ")),
                Some(parameter),
                None,
            ),
            Self::BadQuery { parameter } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "10033",
                "Value outside of range",
                format!("The '{parameter}' query parameter must be an integer."),
                Some(parameter),
                None,
            ),
            Self::WebhookDestination(refusal) => {
                use crate::webhook_destination::Refusal;
                let (code, title) = match refusal {
                    Refusal::NotAUrl(_) | Refusal::Scheme(_) | Refusal::NoHost => ("10033", "Value outside of range"),
                    Refusal::Address(..) | Refusal::Resolved(_) => ("95005", "Webhook destination not allowed"),
                };
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    title,
                    format!(
                        "The 'webhook_url' parameter cannot be used: {refusal}. Webhooks go to public addresses over http or https, or to destinations the operator allows."
                    ),
                    Some("webhook_url"),
                    None,
                )
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "10009",
                "Authentication failed",
                "The API key is missing or not valid. Send it as 'Authorization: Bearer <key>'.".to_owned(),
                None,
                None,
            ),
            Self::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "10005",
                "Resource not found",
                "The requested route does not exist.".to_owned(),
                None,
                None,
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "10005",
                "Method not allowed",
                "The route does not accept this method.".to_owned(),
                None,
                None,
            ),
            Self::TooManyStreams { limit } => (
                StatusCode::TOO_MANY_REQUESTS,
                "10011",
                "Too many requests",
                format!("At most {limit} event streams may be open at once; close one first."),
                None,
                None,
            ),
            Self::TooManyTenantStreams { limit } => (
                StatusCode::TOO_MANY_REQUESTS,
                "10011",
                "Too many requests",
                format!(
                    "At most {limit} event streams of one tenant may be open at once (the per-tenant cap); close one first."
                ),
                None,
                None,
            ),
            Self::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "10011",
                "Too many requests",
                format!("The rate limit of this API key's tenant is reached; retry in {retry_after_secs} s."),
                None,
                None,
            ),
            Self::BodyTimeout { secs } => (
                StatusCode::REQUEST_TIMEOUT,
                "10015",
                "Request timeout",
                format!("The request body did not arrive within {secs} s."),
                None,
                None,
            ),
            // Not a client mistake: the service was too slow (a write may still have been
            // applied; a retry with the same `command_id` is safe).
            Self::RequestTimeout { secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "10007",
                "Service unavailable",
                format!("The request was not answered within {secs} s; it may or may not have taken effect."),
                None,
                None,
            ),
            Self::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "10015",
                "Request body too large",
                format!("The request body exceeds {limit} bytes."),
                None,
                None,
            ),
            // A 5xx: the change is not known to be on disk, so it is not acknowledged
            // (the SDKs retry; a `command_id` makes the retry safe).
            Self::NotDurable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "10007",
                "Service unavailable",
                "The change could not be stored durably and was not acknowledged; the service takes no changes until it is restarted.".to_owned(),
                None,
                None,
            ),
            // A 5xx with Retry-After: the SDKs retry, and a `command_id` makes it safe (a
            // write refused here may have been stored just before the lease was lost).
            Self::TenantMoved => (
                StatusCode::SERVICE_UNAVAILABLE,
                "10007",
                "Service unavailable",
                "Tenants of this request moved to another node while it was served; a change may or may not have taken effect. Retry.".to_owned(),
                None,
                None,
            ),
            Self::StoreReconnecting => (
                StatusCode::SERVICE_UNAVAILABLE,
                "10007",
                "Service unavailable",
                "This node lost its connection to PostgreSQL and is reconnecting; a change may or may not have taken effect. Retry (with the same command_id).".to_owned(),
                None,
                None,
            ),
            Self::ClusterSecretRefused => (
                StatusCode::FORBIDDEN,
                "10010",
                "Authorization failed",
                "The 'waitline-cluster-secret' header does not hold this cluster's secret.".to_owned(),
                None,
                None,
            ),
            Self::MetricsUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "10007",
                "Service unavailable",
                "The metrics could not be read; see the service's log.".to_owned(),
                None,
                None,
            ),
        }
    }

    /// The error body, as JSON.
    #[must_use]
    pub fn body(&self) -> Value {
        let (_, code, title, detail, parameter, meta) = self.parts();
        let mut error = json!({ "code": code, "title": title, "detail": detail });
        if let Some(p) = parameter {
            error["source"] = json!({ "pointer": format!("/{p}") });
        }
        if let Some(m) = meta {
            error["meta"] = m;
        }
        json!({ "errors": [error] })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.parts().0;
        let mut response = (status, axum::Json(self.body())).into_response();
        let retry_after_secs = match self {
            Self::RateLimited { retry_after_secs } => Some(retry_after_secs),
            Self::TenantMoved | Self::StoreReconnecting => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
