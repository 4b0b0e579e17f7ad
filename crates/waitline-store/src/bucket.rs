//! Tenants hashed into a fixed number of buckets: the unit a node owns (through a lease)
//! when several nodes share one PostgreSQL store. The hash is FNV-1a (64 bits) of the
//! tenant's name: stable across processes, versions and machines (std's hasher is seeded
//! at random per process, so two nodes would disagree), and cheap on short names.

/// Buckets a store is divided into, unless configured otherwise.
pub const DEFAULT_BUCKETS: u32 = 256;

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The bucket of `tenant` among `buckets` (0 is taken as 1).
#[must_use]
pub fn bucket_of(tenant: &str, buckets: u32) -> u32 {
    let buckets = u64::from(buckets.max(1));
    u32::try_from(fnv1a(tenant.as_bytes()) % buckets).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a() {
        // The published test vectors of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Pinned: a change here moves tenants between nodes of a running cluster.
        assert_eq!(bucket_of("acme", DEFAULT_BUCKETS), 15);
        assert_eq!(bucket_of("default", 256), bucket_of("default", 256));
        assert_eq!(bucket_of("anything", 1), 0);
        assert_eq!(bucket_of("anything", 0), 0);
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096 {
            let b = bucket_of(&format!("tenant-{i}"), 256);
            assert!(b < 256);
            seen.insert(b);
        }
        assert!(seen.len() > 250, "4096 tenants fall into {} of 256 buckets", seen.len());
    }
}
