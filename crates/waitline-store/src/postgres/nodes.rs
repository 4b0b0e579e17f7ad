//! The `nodes` table: each node's id, the URL other nodes reach it at, and when it was last
//! seen (its heartbeat, written with each lease renewal, by the database's clock). A node is
//! live while it was seen within one lease length.

use super::{LeaseConn, as_i32, pg_err};
use crate::Result;

/// A node of the cluster as the `nodes` table has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its name (`PgConfig::node`).
    pub id: String,
    /// Where other nodes reach it (`--node-url`); empty for a node that takes no forwarded
    /// requests.
    pub url: String,
}

impl LeaseConn {
    /// Says this node is alive, reachable at `url`.
    pub(crate) fn heartbeat(&mut self, url: &str) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO nodes (node_id, url, seen_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, seen_at = excluded.seen_at",
                &[&self.node, &url],
            )
            .map_err(pg_err(&self.place))?;
        Ok(())
    }

    /// Says this node is gone (a clean stop): the other nodes stop counting it at once,
    /// instead of a lease after its last heartbeat.
    pub(crate) fn leave(&mut self) -> Result<()> {
        self.client
            .execute("UPDATE nodes SET seen_at = '-infinity' WHERE node_id = $1", &[&self.node])
            .map_err(pg_err(&self.place))?;
        Ok(())
    }

    /// The nodes seen within one lease length, by id.
    pub(crate) fn live_nodes(&mut self) -> Result<Vec<Node>> {
        let rows = self
            .client
            .query(
                "SELECT node_id, url FROM nodes \
                 WHERE seen_at > now() - $1::float8 * interval '1 millisecond' ORDER BY node_id",
                &[&self.lease_ms],
            )
            .map_err(pg_err(&self.place))?;
        Ok(rows.iter().map(|r| Node { id: r.get(0), url: r.get(1) }).collect())
    }

    /// Of `buckets`, those free to anyone: no lease yet, or a lease whose owner is not live,
    /// or one that lapsed (not released) more than one lease length ago: its preferred node
    /// had a whole lease to take it and did not. A bucket released by a live node is left
    /// to its preferred node.
    pub(crate) fn abandoned(&mut self, buckets: &[u32]) -> Result<Vec<u32>> {
        let rows = self
            .client
            .query(
                "SELECT b FROM unnest($1::integer[]) AS b WHERE NOT EXISTS ( \
                     SELECT 1 FROM leases JOIN nodes ON nodes.node_id = leases.owner \
                     WHERE leases.bucket = b \
                         AND nodes.seen_at > now() - $2::float8 * interval '1 millisecond' \
                         AND (leases.expires_at = '-infinity' \
                             OR leases.expires_at > now() - $2::float8 * interval '1 millisecond'))",
                &[&as_i32(buckets), &self.lease_ms],
            )
            .map_err(pg_err(&self.place))?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0).unsigned_abs()).collect())
    }

    /// The live owner of `bucket` (its lease not expired) and its URL, if it has one.
    pub(crate) fn owner(&mut self, bucket: u32) -> Result<Option<Node>> {
        let bucket = i32::try_from(bucket).unwrap_or(i32::MAX);
        let row = self
            .client
            .query_opt(
                "SELECT leases.owner, coalesce(nodes.url, '') FROM leases \
                 LEFT JOIN nodes ON nodes.node_id = leases.owner \
                 WHERE leases.bucket = $1 AND leases.expires_at > now()",
                &[&bucket],
            )
            .map_err(pg_err(&self.place))?;
        Ok(row.map(|r| Node { id: r.get(0), url: r.get(1) }))
    }

    /// Every bucket with a live lease (not expired), with its owner and URL.
    pub(crate) fn owners(&mut self) -> Result<Vec<(u32, Node)>> {
        let rows = self
            .client
            .query(
                "SELECT leases.bucket, leases.owner, coalesce(nodes.url, '') FROM leases \
                 LEFT JOIN nodes ON nodes.node_id = leases.owner WHERE leases.expires_at > now()",
                &[],
            )
            .map_err(pg_err(&self.place))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i32>(0).unsigned_abs(), Node { id: r.get(1), url: r.get(2) }))
            .collect())
    }
}
