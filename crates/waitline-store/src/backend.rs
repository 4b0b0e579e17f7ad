//! What a database must do for the store: the few statements that differ between SQLite
//! and PostgreSQL. Everything else (framing, group commit, the order of each tenant's
//! numbers, fencing decisions, replay and its damage checks, compaction's choice of base)
//! is written once, over this trait.

use std::collections::HashMap;

use crate::Result;

/// One journal row: a run of a tenant's records, numbers `first..=last`, framed.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) records: Vec<u8>,
}

/// A row to insert, written under `epoch` (0 where there are no leases).
#[derive(Debug)]
pub(crate) struct NewRow<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) epoch: u64,
    pub(crate) records: Vec<u8>,
}

/// What the journal of one tenant holds, without decoding it.
#[derive(Debug, Default)]
pub(crate) struct JournalSize {
    pub(crate) rows: u64,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) last: Option<u64>,
}

/// What `rows_after` hands each row to; it says whether to go on.
pub(crate) type RowVisitor<'a> = dyn FnMut(Row) -> Result<bool> + 'a;

/// A connection to the store's tables. The writer's runs transactions (`begin` .. `commit`);
/// a reader's only reads. Every error is already the crate's, naming the database.
pub(crate) trait Conn: Send {
    fn begin(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    /// Ends the transaction without keeping anything (errors ignored: the connection may
    /// be the reason).
    fn rollback(&mut self);
    /// Of the (bucket, epoch) `claims`, those whose lease is no longer ours at that epoch
    /// (taken over, or expired by the database's clock). The others' leases cannot be taken
    /// over until this transaction ends. A store without leases has none lost.
    fn fence(&mut self, claims: &[(u32, u64)]) -> Result<Vec<(u32, u64)>>;
    /// The tenant's last number stored: its newest journal row's or snapshot's (0: none).
    fn head(&mut self, tenant: &str) -> Result<u64>;
    fn insert_rows(&mut self, rows: &[NewRow<'_>]) -> Result<()>;
    /// Keeps (or replaces) the snapshot of `tenant` at `seq`.
    fn put_snapshot(&mut self, tenant: &str, seq: u64, data: &[u8]) -> Result<()>;
    /// Moves the delivery mark of `tenant` to `seq` unless it is already past it.
    fn put_delivered(&mut self, tenant: &str, seq: u64) -> Result<()>;
    /// Notes that the intake (SQLite only, with `Fsync::Periodic`) is committed up to
    /// `position`.
    fn put_intake(&mut self, position: u64) -> Result<()>;
    /// Deletes the snapshots before `base` and the rows ending at or before it.
    fn delete_covered(&mut self, tenant: &str, base: u64) -> Result<()>;
    /// Forgets the tenant's history from `from` on: deletes the rows starting at or after
    /// it and the snapshots at or after it, and lowers its delivery mark below it.
    fn forget_from(&mut self, tenant: &str, from: u64) -> Result<()>;
    /// The row that starts before `seq` and ends at or after it.
    fn row_holding(&mut self, tenant: &str, seq: u64) -> Result<Option<Row>>;
    /// Shortens the row starting at `first` to end at `last` with `records`.
    fn cut_row(&mut self, tenant: &str, first: u64, last: u64, records: &[u8]) -> Result<()>;

    /// Every tenant with a snapshot or a journal row, in name order.
    fn tenants(&mut self) -> Result<Vec<String>>;
    /// The newest snapshot of `tenant` at or before `bound`.
    fn newest_snapshot_until(&mut self, tenant: &str, bound: u64) -> Result<Option<u64>>;
    fn oldest_snapshot(&mut self, tenant: &str) -> Result<Option<u64>>;
    /// The first number of the tenant's oldest row.
    fn first_row(&mut self, tenant: &str) -> Result<Option<u64>>;
    fn delivered_mark(&mut self, tenant: &str) -> Result<Option<u64>>;
    fn snapshot(&mut self, tenant: &str, seq: u64) -> Result<Option<Vec<u8>>>;
    /// Hands the tenant's rows ending after `after` to `visit`, in order, while it says
    /// `true`.
    fn rows_after(
        &mut self,
        tenant: &str,
        after: u64,
        visit: &mut dyn FnMut(Row) -> Result<bool>,
    ) -> Result<()>;
    /// The tenant's snapshots, oldest first: (number, bytes stored).
    fn snapshot_sizes(&mut self, tenant: &str) -> Result<Vec<(u64, u64)>>;
    fn journal_size(&mut self, tenant: &str) -> Result<JournalSize>;
    fn delivered(&mut self) -> Result<HashMap<String, u64>>;
    fn newest_snapshots(&mut self) -> Result<HashMap<String, u64>>;
}

/// Both databases keep signed 64-bit integers: numbers above `i64::MAX` are refused before
/// they get here.
pub(crate) fn to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(seq: i64) -> u64 {
    seq.unsigned_abs()
}
