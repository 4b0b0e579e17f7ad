//! API keys: `Authorization: Bearer <key>`, each key belonging to one tenant. Keys are
//! compared in constant time, and every configured key is compared on every request, so
//! the time taken tells nothing about which key, or how much of one, matched.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;
use waitline::{Engine, Tenant};

use crate::AppState;
use crate::error::ApiError;

/// One `KEY[:TENANT]` from the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The secret.
    pub key: String,
    /// The tenant it belongs to.
    pub tenant: String,
}

impl std::fmt::Debug for KeySpec {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec").field("key", &"<redacted>").field("tenant", &self.tenant).finish()
    }
}

impl KeySpec {
    /// Parses `KEY[:TENANT]`; a key without a tenant belongs to `default`.
    ///
    /// # Errors
    /// An empty key or tenant.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (key, tenant) = match s.split_once(':') {
            Some((k, t)) => (k.trim(), t.trim()),
            None => (s.trim(), waitline::DEFAULT_TENANT),
        };
        if key.is_empty() || tenant.is_empty() {
            return Err("an API key must look like KEY or KEY:TENANT, neither part empty".into());
        }
        Ok(Self { key: key.to_owned(), tenant: tenant.to_owned() })
    }
}

/// A new random API key: 32 URL-safe characters from 192 random bits.
///
/// # Panics
/// If the operating system has no randomness to give.
#[must_use]
pub fn generate_key() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The configured keys, each with its tenant's handle.
pub struct ApiKeys {
    entries: Vec<(Vec<u8>, Tenant)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.entries.len()).finish()
    }
}

impl ApiKeys {
    /// Resolves every key's tenant in `engine`.
    #[must_use]
    pub fn new(engine: &Engine, specs: &[KeySpec]) -> Self {
        Self {
            entries: specs.iter().map(|s| (s.key.as_bytes().to_vec(), engine.tenant(&s.tenant))).collect(),
        }
    }

    /// The tenant of a presented key.
    #[must_use]
    pub fn tenant_of(&self, presented: &[u8]) -> Option<&Tenant> {
        let mut found = None;
        for (key, tenant) in &self.entries {
            // Compare with every key, no early exit.
            if bool::from(key.as_slice().ct_eq(presented)) {
                found = Some(tenant);
            }
        }
        found
    }
}

/// The tenant of an authenticated request.
#[derive(Debug, Clone)]
pub struct Auth(pub Tenant);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or(ApiError::Unauthorized)?;
        let value = header.as_bytes();
        let key = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or(ApiError::Unauthorized)?;
        state.keys().tenant_of(key.trim_ascii()).cloned().map(Auth).ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs() {
        assert_eq!(KeySpec::parse("abc").unwrap(), KeySpec { key: "abc".into(), tenant: "default".into() });
        assert_eq!(KeySpec::parse("abc:acme").unwrap().tenant, "acme");
        assert!(KeySpec::parse(":acme").is_err());
        assert!(!format!("{:?}", KeySpec::parse("secret").unwrap()).contains("secret"));
    }

    #[test]
    fn lookup() {
        let engine = Engine::default();
        let keys = ApiKeys::new(&engine, &[KeySpec::parse("k1:a").unwrap(), KeySpec::parse("k2:b").unwrap()]);
        assert_eq!(keys.tenant_of(b"k2").map(Tenant::name), Some("b"));
        assert!(keys.tenant_of(b"k").is_none());
        assert!(keys.tenant_of(b"k22").is_none());
    }
}
