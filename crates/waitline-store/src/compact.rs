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

use rusqlite::{Connection, OptionalExtension, params};

use crate::writer::sql_seq;

/// The snapshot `tenant` restarts from, if any.
pub(crate) fn base_snapshot(
    conn: &Connection,
    tenant: &str,
    from_delivered: bool,
) -> rusqlite::Result<Option<u64>> {
    let seq = |sql: &str, bound: i64| -> rusqlite::Result<Option<u64>> {
        let v: Option<i64> = conn.query_row(sql, params![tenant, bound], |r| r.get(0))?;
        Ok(v.map(i64::unsigned_abs))
    };
    let newest_until = "SELECT max(seq) FROM snapshots WHERE tenant = ?1 AND seq <= ?2";
    if !from_delivered {
        return seq(newest_until, i64::MAX);
    }
    let mark: Option<i64> = conn
        .query_row("SELECT seq FROM delivered WHERE tenant = ?1", params![tenant], |r| r.get(0))
        .optional()?;
    if let Some(base) = seq(newest_until, mark.unwrap_or(0))? {
        return Ok(Some(base));
    }
    let first: Option<i64> =
        conn.query_row("SELECT min(seq) FROM journal WHERE tenant = ?1", params![tenant], |r| r.get(0))?;
    if first == Some(1) {
        return Ok(None);
    }
    seq("SELECT min(seq) FROM snapshots WHERE tenant = ?1 AND seq <= ?2", i64::MAX)
}

/// Deletes what `tenant`'s base covers: older snapshots and journal rows ending at or
/// before the base.
pub(crate) fn compact(conn: &Connection, tenant: &str, from_delivered: bool) -> rusqlite::Result<()> {
    let Some(base) = base_snapshot(conn, tenant, from_delivered)? else { return Ok(()) };
    let base = sql_seq(base);
    conn.prepare_cached("DELETE FROM snapshots WHERE tenant = ?1 AND seq < ?2")?
        .execute(params![tenant, base])?;
    conn.prepare_cached("DELETE FROM journal WHERE tenant = ?1 AND seq <= ?2 AND last <= ?2")?
        .execute(params![tenant, base])?;
    Ok(())
}
