//! API keys: `Authorization: Bearer <key>`, each key belonging to one tenant.
//!
//! Only the SHA-256 digest of each key is held (a key configured in plain text is hashed when
//! it is read), so a configuration can name a key by its digest alone
//! (`sha256:<hex>:TENANT`). Keys are long random strings, so one fast hash is enough: there is
//! no dictionary to try. A presented key is hashed, then its digest compared in constant time
//! with every configured digest, so a refused key costs what an accepted one does and the time
//! taken tells nothing about which key, or how much of one, matched.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use waitline::{Engine, Tenant};

use crate::AppState;
use crate::error::ApiError;
use crate::rate_limit::{Bucket, RateLimiter};

/// The prefix of a key given by its digest.
pub const DIGEST_PREFIX: &str = "sha256:";

/// The SHA-256 digest of a key.
pub type KeyDigest = [u8; 32];

/// The digest of `key`.
#[must_use]
pub fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// `sha256:<hex>`: how a key is written down without the key itself.
#[must_use]
pub fn hashed_form(key: &str) -> String {
    let hex: String = digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("{DIGEST_PREFIX}{hex}")
}

/// One `KEY[:TENANT]` or `sha256:<hex>[:TENANT]` from the configuration, held as the digest
/// of the key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// SHA-256 of the secret.
    pub digest: KeyDigest,
    /// The tenant it belongs to.
    pub tenant: String,
}

impl std::fmt::Debug for KeySpec {
    // Not even the digest: it would let a reader check a guess offline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec").field("digest", &"<redacted>").field("tenant", &self.tenant).finish()
    }
}

impl KeySpec {
    /// The key `key` in plain text, for `tenant`.
    #[must_use]
    pub fn plain(key: &str, tenant: &str) -> Self {
        Self { digest: digest(key.as_bytes()), tenant: tenant.to_owned() }
    }

    /// Parses `KEY[:TENANT]` or `sha256:<64 hex digits>[:TENANT]`; a key without a tenant
    /// belongs to `default`. A plain key cannot itself be `sha256`.
    ///
    /// # Errors
    /// An empty key or tenant, or a digest that is not 64 hex digits (the message never
    /// repeats the key).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (digest, rest) = match s.strip_prefix(DIGEST_PREFIX) {
            Some(hashed) => {
                let (hex, tenant) = hashed.split_once(':').map_or((hashed, None), |(h, t)| (h, Some(t)));
                let digest = parse_hex_digest(hex.trim())
                    .ok_or("a hashed API key must look like sha256:<64 hex digits>[:TENANT]")?;
                (Some(digest), tenant)
            }
            None => (None, None),
        };
        let (digest, tenant) = match digest {
            Some(d) => (d, rest.map(str::trim)),
            None => {
                let (key, tenant) = s.split_once(':').map_or((s, None), |(k, t)| (k.trim(), Some(t.trim())));
                if key.is_empty() {
                    return Err("an API key must look like KEY or KEY:TENANT, neither part empty".into());
                }
                (self::digest(key.as_bytes()), tenant)
            }
        };
        let tenant = tenant.unwrap_or(waitline::DEFAULT_TENANT);
        if tenant.is_empty() {
            return Err("an API key must look like KEY or KEY:TENANT, neither part empty".into());
        }
        Ok(Self { digest, tenant: tenant.to_owned() })
    }
}

/// Whether `spec` (as configured) names a plain key shorter than [`MIN_KEY_CHARS`]: one that
/// might be guessed (a hashed key's length is unknown).
#[must_use]
pub fn is_short_plain_key(spec: &str) -> bool {
    let spec = spec.trim();
    !spec.starts_with(DIGEST_PREFIX) && spec.split(':').next().is_some_and(|k| k.trim().len() < MIN_KEY_CHARS)
}

/// Plain keys shorter than this are warned about at start (a generated key has 32).
pub const MIN_KEY_CHARS: usize = 20;

fn parse_hex_digest(hex: &str) -> Option<KeyDigest> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
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

/// A configured key: its digest, its tenant's handle, and the tenant's rate-limit bucket.
#[derive(Debug)]
struct Entry {
    digest: KeyDigest,
    tenant: Tenant,
    bucket: Option<Arc<Bucket>>,
}

/// The configured keys, each with its tenant's handle.
pub struct ApiKeys {
    entries: Vec<Entry>,
    /// How many tenants have a key.
    tenants: usize,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("keys", &self.entries.len()).finish()
    }
}

impl ApiKeys {
    /// Resolves every key's tenant in `engine` (and its bucket in `limiter`, if limited).
    #[must_use]
    pub fn new(engine: &Engine, specs: &[KeySpec], limiter: Option<&RateLimiter>) -> Self {
        let entries = specs
            .iter()
            .map(|s| Entry {
                digest: s.digest,
                tenant: engine.tenant(&s.tenant),
                bucket: limiter.map(|l| l.bucket(&s.tenant)),
            })
            .collect();
        let tenants = specs.iter().map(|s| s.tenant.as_str()).collect::<std::collections::HashSet<_>>().len();
        Self { entries, tenants }
    }

    /// How many tenants have a key.
    #[must_use]
    pub fn tenants(&self) -> usize {
        self.tenants
    }

    /// The entry of the key of digest `presented`.
    fn entry_of(&self, presented: &KeyDigest) -> Option<&Entry> {
        let mut found = None;
        for entry in &self.entries {
            // Compare with every key, no early exit.
            if bool::from(entry.digest.ct_eq(presented)) {
                found = Some(entry);
            }
        }
        found
    }

    /// The tenant of a presented key.
    #[must_use]
    pub fn tenant_of(&self, presented: &[u8]) -> Option<&Tenant> {
        self.entry_of(&digest(presented)).map(|e| &e.tenant)
    }

    /// Whether the key of digest `key` is one of these and belongs to `tenant`.
    #[must_use]
    pub fn names(&self, key: &KeyDigest, tenant: &str) -> bool {
        self.entry_of(key).is_some_and(|e| e.tenant.name() == tenant)
    }
}

/// The API key a request presents (`Authorization: Bearer KEY`), if any.
#[must_use]
pub fn presented_key(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let key = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer "))?;
    Some(key.trim_ascii())
}

/// The tenant of an authenticated request.
#[derive(Debug, Clone)]
pub struct Auth(pub Tenant);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers).ok_or(ApiError::Unauthorized)?;
        authenticate(&digest(key), state).map(Auth)
    }
}

/// A route open to anyone that answers a key's tenant its own (`Option<Auth>`): no
/// `Authorization` header is `None`; a header with a key that is refused is refused.
impl OptionalFromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(None);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
    }
}

/// The tenant of an authenticated request and the digest of the key it presented: for what
/// outlives the request (an event stream), which ends once a reload takes the key away.
#[derive(Debug, Clone)]
pub struct KeyedAuth {
    /// The key's tenant.
    pub tenant: Tenant,
    /// The key's digest.
    pub key: KeyDigest,
}

impl FromRequestParts<AppState> for KeyedAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = digest(presented_key(&parts.headers).ok_or(ApiError::Unauthorized)?);
        Ok(Self { tenant: authenticate(&key, state)?, key })
    }
}

/// The tenant of the key of digest `key`, if it is served here and within its rate limit.
fn authenticate(key: &KeyDigest, state: &AppState) -> Result<Tenant, ApiError> {
    let keys = state.keys();
    let entry = keys.entry_of(key).ok_or(ApiError::Unauthorized)?;
    // The tenant's bucket was taken over, or is not (yet) this node's: its state here
    // is not the truth.
    if !state.durability().serves(entry.tenant.name()) {
        return Err(ApiError::TenantMoved);
    }
    // Every authenticated request counts, reads and writes alike: a read costs the
    // service as much as a write's answer, and one rule is easier to plan for.
    if let Some(bucket) = &entry.bucket {
        bucket.take().map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
    }
    Ok(entry.tenant.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs() {
        assert_eq!(KeySpec::parse("abc").unwrap(), KeySpec::plain("abc", "default"));
        assert_eq!(KeySpec::parse("abc:acme").unwrap(), KeySpec::plain("abc", "acme"));
        assert!(KeySpec::parse(":acme").is_err());
        assert!(KeySpec::parse("abc:").is_err());
        assert!(!format!("{:?}", KeySpec::parse("secret").unwrap()).contains("secret"));
        assert!(is_short_plain_key("secret:acme") && is_short_plain_key("secret"));
        assert!(!is_short_plain_key(&generate_key()) && !is_short_plain_key(&hashed_form("x")));
    }

    #[test]
    fn hashed_specs_name_the_same_key() {
        let hashed = hashed_form("abc");
        // SHA-256("abc"), the test vector of FIPS 180-2.
        assert_eq!(hashed, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(KeySpec::parse(&format!("{hashed}:acme")).unwrap(), KeySpec::plain("abc", "acme"));
        assert_eq!(KeySpec::parse(&hashed).unwrap(), KeySpec::plain("abc", "default"));
        assert_eq!(
            KeySpec::parse(&hashed.to_uppercase().replace("SHA256", "sha256")).unwrap().digest,
            digest(b"abc")
        );
        for bad in ["sha256:", "sha256:abcd:acme", &format!("{hashed}0"), &format!("{}:t", &hashed[..70])] {
            assert!(KeySpec::parse(bad).unwrap_err().contains("64 hex digits"), "{bad}");
        }
        let not_hex = format!("sha256:{}", "zz".repeat(32));
        assert!(KeySpec::parse(&not_hex).is_err());
        assert!(KeySpec::parse(&format!("{hashed}:")).is_err(), "empty tenant");
    }

    #[test]
    fn lookup() {
        let engine = Engine::default();
        let specs =
            [KeySpec::parse("k1:a").unwrap(), KeySpec::parse(&format!("{}:b", hashed_form("k2"))).unwrap()];
        let keys = ApiKeys::new(&engine, &specs, None);
        assert_eq!(keys.tenant_of(b"k1").map(Tenant::name), Some("a"));
        assert_eq!(keys.tenant_of(b"k2").map(Tenant::name), Some("b"));
        assert!(keys.tenant_of(hashed_form("k2").as_bytes()).is_none(), "the digest is not the key");
        assert!(keys.tenant_of(b"k").is_none());
        assert!(keys.tenant_of(b"k22").is_none());
        assert!(keys.names(&digest(b"k1"), "a") && !keys.names(&digest(b"k1"), "b"));
        assert!(!keys.names(&digest(b"k3"), "a"));
    }
}
