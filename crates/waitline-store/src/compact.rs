//! Which snapshot a tenant restarts from (its base), and compaction: what the base covers
//! is deleted.
//!
//! The base is the newest snapshot, unless the store keeps the journal for events not yet
//! delivered ([`crate::Options::replay_from_delivered`]): then it is the newest snapshot at
//! or before the tenant's delivery mark, so that a restart replays (and makes again) every
//! event after the mark. With no snapshot that old, the tenant replays from its first
//! record while the journal still has it, else from its oldest snapshot (the events before
//! that are gone: only a store opened without the option deletes them).
//!
//! Compaction keeps the base and the snapshots after it (each becomes the base when the mark
//! passes it: a mark that lags k snapshots behind keeps k + 1 of them) and deletes older
//! snapshots and every journal row the base covers. It runs in the writer's transaction
//! with the snapshot or the mark that moved the base, so a crash leaves either the state
//! before or the state after, both complete.

use crate::Result;
use crate::backend::Conn;

/// The snapshot `tenant` restarts from, if any.
pub(crate) fn base_snapshot(conn: &mut dyn Conn, tenant: &str, from_delivered: bool) -> Result<Option<u64>> {
    if !from_delivered {
        return conn.newest_snapshot_until(tenant, u64::MAX >> 1);
    }
    let mark = conn.delivered_mark(tenant)?;
    if let Some(base) = conn.newest_snapshot_until(tenant, mark.unwrap_or(0))? {
        return Ok(Some(base));
    }
    if conn.first_row(tenant)? == Some(1) {
        return Ok(None);
    }
    conn.oldest_snapshot(tenant)
}

/// Deletes what `tenant`'s base covers: older snapshots and journal rows ending at or
/// before the base.
pub(crate) fn compact(conn: &mut dyn Conn, tenant: &str, from_delivered: bool) -> Result<()> {
    match base_snapshot(conn, tenant, from_delivered)? {
        Some(base) => conn.delete_covered(tenant, base),
        None => Ok(()),
    }
}
