//! The secret nodes of one cluster share (`--cluster-secret`): a request carrying it in
//! [`HEADER`] comes from another node (forwarded once already, never forwarded again). It is
//! never printed: its `Debug` says only that it is set. A presented secret is hashed, then
//! compared with the configured one's digest in constant time (as API keys are), so
//! neither its bytes nor its length show in the answer's timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header a node puts the cluster secret in when it forwards a request.
pub const HEADER: &str = "waitline-cluster-secret";

/// The shortest secret taken: guessing one must be out of reach.
pub const MIN_LEN: usize = 16;

/// The cluster's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    secret: String,
    digest: [u8; 32],
}

impl ClusterSecret {
    /// The secret `text`.
    ///
    /// # Errors
    /// Shorter than [`MIN_LEN`] bytes, or not printable ASCII (it travels in a header).
    pub fn new(text: &str) -> Result<Self, String> {
        if text.len() < MIN_LEN {
            return Err(format!("the cluster secret must be at least {MIN_LEN} characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the cluster secret must be printable ASCII without spaces".into());
        }
        Ok(Self { secret: text.to_owned(), digest: Sha256::digest(text.as_bytes()).into() })
    }

    /// Whether `presented` is this secret (constant time in its bytes).
    #[must_use]
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        bool::from(self.digest.ct_eq(&presented))
    }

    /// The secret itself, to put in a forwarded request's [`HEADER`].
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(set)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_matches_and_it_is_never_printed() {
        let secret = ClusterSecret::new("s3cret-of-the-cluster").unwrap();
        assert!(secret.matches(b"s3cret-of-the-cluster"));
        assert!(!secret.matches(b"s3cret-of-the-clusteR"));
        assert!(!secret.matches(b"s3cret-of-the-cluster "));
        assert!(!secret.matches(b""));
        assert_eq!(secret.expose(), "s3cret-of-the-cluster");
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert!(ClusterSecret::new("short").unwrap_err().contains("at least 16"));
        assert!(ClusterSecret::new("has a space in the middle").unwrap_err().contains("printable"));
    }
}
