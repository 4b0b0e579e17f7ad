//! Which node should own a bucket: rendezvous (highest random weight) hashing of the bucket
//! with each live node's id. Every node computes the same answer from the same list of
//! live nodes, whatever its order, and when a node joins or leaves only the buckets it wins
//! (or won) change hands: about one in N, not a reshuffle.

use crate::bucket::fnv1a;

/// The weight of `node` for `bucket`: FNV-1a of the node's id and the bucket, then a final
/// mix (FNV alone varies little in its high bits between ids that differ only at the end,
/// like `node-1` and `node-2`, and the highest weight must be a fair draw).
fn weight(bucket: u32, node: &str) -> u64 {
    let mut bytes = Vec::with_capacity(node.len() + 5);
    bytes.extend_from_slice(node.as_bytes());
    bytes.push(0); // no id is a prefix of another's bytes with the bucket
    bytes.extend_from_slice(&bucket.to_le_bytes());
    mix(fnv1a(&bytes))
}

/// The finalizer of SplitMix64: every input bit moves every output bit.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The preferred owner of `bucket` among the `live` node ids (`None` when there is none).
/// Ties of weight go to the greater id, so the answer never depends on the list's order.
#[must_use]
pub fn preferred_owner<'a>(bucket: u32, live: &[&'a str]) -> Option<&'a str> {
    live.iter().copied().max_by_key(|node| (weight(bucket, node), *node))
}

/// The buckets among `0..buckets` whose preferred owner among `live` is `me`.
#[must_use]
pub fn preferred_buckets(buckets: u32, me: &str, live: &[&str]) -> Vec<u32> {
    (0..buckets).filter(|b| preferred_owner(*b, live) == Some(me)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

    #[test]
    fn every_bucket_has_one_preferred_owner_whatever_the_order() {
        let reversed: Vec<&str> = NODES.iter().rev().copied().collect();
        for bucket in 0..256 {
            assert_eq!(preferred_owner(bucket, &NODES), preferred_owner(bucket, &reversed));
        }
        let shares: Vec<Vec<u32>> = NODES.iter().map(|n| preferred_buckets(256, n, &NODES)).collect();
        assert_eq!(shares.iter().map(Vec::len).sum::<usize>(), 256, "each bucket once");
        assert_eq!(preferred_owner(7, &[]), None);
        assert_eq!(preferred_buckets(4, "x", &["x"]), [0, 1, 2, 3]);
    }

    #[test]
    fn the_share_is_fair_between_similar_ids() {
        let ids: Vec<String> = (1..=4).map(|i| format!("node-{i}")).collect();
        let live: Vec<&str> = ids.iter().map(String::as_str).collect();
        for node in &live {
            let share = preferred_buckets(256, node, &live).len();
            // 64 expected; a fair draw stays within about 3 standard deviations (7).
            assert!((43..=85).contains(&share), "{node} prefers {share} of 256 buckets");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_buckets() {
        let before: Vec<Option<&str>> = (0..256).map(|b| preferred_owner(b, &NODES)).collect();
        let after: Vec<Option<&str>> = (0..256).map(|b| preferred_owner(b, &NODES[..2])).collect();
        for (bucket, (was, now)) in before.iter().zip(&after).enumerate() {
            if *was == Some("node-c") {
                assert!(now.is_some_and(|n| n != "node-c"), "bucket {bucket} goes to a live node");
            } else {
                assert_eq!(was, now, "bucket {bucket} did not belong to the node that left");
            }
        }
        // And joining moves only what the newcomer wins.
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert_eq!(moved, preferred_buckets(256, "node-c", &NODES).len());
    }
}
