//! The keys that sign webhooks: one Ed25519 key per tenant for the URLs tenants choose, as
//! Telnyx gives every account its own, so that no tenant can obtain a signature its
//! neighbours' receivers would accept; the configured key for the operator's URLs.
//!
//! Only one secret is configured (or generated and kept): the seed of `--signing-key`. The
//! tenant `default` (what a single `--api-key` gives) has that key itself, so a
//! single-tenant deployment and its receivers see no change. Every other tenant's seed is
//! HMAC-SHA-256 of its name under the configured seed, after a fixed label: every node of a
//! cluster derives the same keys, nothing more is stored, and one tenant's key tells nothing
//! about another's or about the configured seed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256};

/// Put before a tenant's name in the derivation: these derived seeds are webhook signing keys
/// of this scheme, and nothing else derived from the seed can collide with them.
const TENANT_KEY_LABEL: &[u8] = b"waitline webhook signing key v1\0";

/// Signs webhook bodies.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("public_key", &self.public_key_base64()).finish()
    }
}

impl Signer {
    /// From the base64 of a 32-byte Ed25519 seed.
    ///
    /// # Errors
    /// Not base64, or not 32 bytes.
    pub fn from_base64_seed(seed: &str) -> Result<Self, String> {
        let bytes = BASE64.decode(seed.trim()).map_err(|e| format!("signing key is not base64: {e}"))?;
        let seed: [u8; 32] =
            bytes.try_into().map_err(|_| "signing key must be the base64 of 32 bytes".to_owned())?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    /// A fresh random key.
    ///
    /// # Panics
    /// If the operating system has no randomness to give.
    #[must_use]
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random source");
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// The signer of `tenant`'s webhooks, for this signer as the configured one: itself for
    /// the tenant `default`, else the key derived from its seed and the tenant's name.
    #[must_use]
    pub fn for_tenant(&self, tenant: &str) -> Self {
        if tenant == waitline::DEFAULT_TENANT {
            return self.clone();
        }
        let seed = hmac_sha256(&self.key.to_bytes(), &[TENANT_KEY_LABEL, tenant.as_bytes()]);
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// The secret seed, base64 (what `from_base64_seed` reads): for keeping it in the data
    /// directory, never for a log.
    #[must_use]
    pub fn seed_base64(&self) -> String {
        BASE64.encode(self.key.to_bytes())
    }

    /// The public key, base64 (what receivers verify with).
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.key.verifying_key().as_bytes())
    }

    /// The two signature headers for `body` sent at Unix time `timestamp`.
    #[must_use]
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> (String, String) {
        let mut message = format!("{timestamp}|").into_bytes();
        message.extend_from_slice(body);
        (timestamp.to_string(), BASE64.encode(self.key.sign(&message).to_bytes()))
    }
}

/// HMAC-SHA-256 (RFC 2104) of the concatenated `message` parts under a `key` of at most one
/// block (the workspace's `sha2`; the `hmac` crate in the lock file is of another `digest`).
fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    assert!(key.len() <= BLOCK, "a longer key would be hashed first");
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let xored = |pad: u8| padded.map(|b| b ^ pad);
    let mut inner = Sha256::new_with_prefix(xored(0x36));
    for part in message {
        inner.update(part);
    }
    Sha256::new_with_prefix(xored(0x5c)).chain_update(inner.finalize()).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    /// What a log or a panic message may show of a signer: its public key, never its seed.
    #[test]
    fn debug_shows_the_public_key_not_the_seed() {
        let seed = BASE64.encode([7u8; 32]);
        let signer = Signer::from_base64_seed(&seed).unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains(&signer.public_key_base64()), "{shown}");
        assert!(!shown.contains(&seed), "{shown}");
    }

    #[test]
    fn signature_verifies_over_timestamp_pipe_body() {
        let signer = Signer::from_base64_seed(&BASE64.encode([7u8; 32])).unwrap();
        let (ts, sig) = signer.sign(1_700_000_000, b"{\"a\":1}");
        let public: [u8; 32] = BASE64.decode(signer.public_key_base64()).unwrap().try_into().unwrap();
        let sig: [u8; 64] = BASE64.decode(sig).unwrap().try_into().unwrap();
        let key = VerifyingKey::from_bytes(&public).unwrap();
        assert_eq!(ts, "1700000000");
        assert!(key.verify(b"1700000000|{\"a\":1}", &Signature::from_bytes(&sig)).is_ok());
        assert!(key.verify(b"1700000001|{\"a\":1}", &Signature::from_bytes(&sig)).is_err());
        assert!(Signer::from_base64_seed("AAAA").is_err());
    }

    #[test]
    fn hmac_of_rfc_4231() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn each_tenant_has_its_own_key_and_default_the_configured_one() {
        let configured = Signer::from_base64_seed(&BASE64.encode([7u8; 32])).unwrap();
        let other = Signer::from_base64_seed(&BASE64.encode([8u8; 32])).unwrap();
        let public = |s: &Signer| s.public_key_base64();
        assert_eq!(public(&configured.for_tenant("default")), public(&configured));
        let (a, b) = (configured.for_tenant("a"), configured.for_tenant("b"));
        assert_ne!(public(&a), public(&b));
        assert_ne!(public(&a), public(&configured));
        // Deterministic (every node derives the same), and of the configured seed.
        assert_eq!(public(&configured.for_tenant("a")), public(&a));
        assert_ne!(public(&other.for_tenant("a")), public(&a));
        // Pinned: a change of the derivation would change every tenant's key.
        assert_eq!(a.seed_base64(), "C0ZufKThbiRgQdmHNYA0Vg98Dkt5A+MsnMsjUZ93bZI=");
    }
}
