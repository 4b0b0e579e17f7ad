//! The store's tables in SQLite (write-ahead log) in a data directory: opening and
//! upgrading them, and the statements of [`Conn`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::backend::{Conn, JournalSize, NewRow, Row, RowVisitor, from_sql, to_sql};
use crate::checkpoint::Checkpointer;
use crate::{Error, Fsync, Result};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "journal.sqlite3";

/// Version of the tables this code reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// The same tables, in a store whose intake has been used (`--fsync periodic`): an earlier
/// waitline, which reads no intake, must refuse it rather than start without the records
/// only the intake holds.
pub(crate) const INTAKE_SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    last INTEGER NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivered (tenant TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
";

/// A connection to the database file `db`.
pub(crate) struct Sqlite {
    // Declared first so that it stops (after its last pass) before the writer's
    // connection closes.
    /// The writer's: copies the log into the database file, and syncs it (`Fsync::Periodic`).
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    db: PathBuf,
}

impl Sqlite {
    /// The writer's connection: creates the tables (or upgrades them), sets the sync policy
    /// and starts its checkpointer (SQLite's own checkpoints, which would run in the
    /// writer's commits, are turned off).
    pub(crate) fn open_writer(db: &Path, fsync: Fsync) -> Result<Self> {
        let sql = |source| Error::Sqlite { path: db.to_path_buf(), source };
        let conn = Connection::open(db).map_err(sql)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql)?;
        debug_assert_eq!(mode, "wal");
        let synchronous = match fsync {
            Fsync::Always => "FULL",
            Fsync::Periodic => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = 0;"))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let found: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        match found {
            None => {
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", params![SCHEMA_VERSION])
                    .map_err(sql)?;
            }
            Some(SCHEMA_VERSION | INTAKE_SCHEMA_VERSION) => {}
            // Version 2 kept one snapshot per tenant (and wrote none): the same rows, keyed
            // by tenant and number.
            Some(2) => conn
                .execute_batch(
                    "BEGIN IMMEDIATE;
                     ALTER TABLE snapshots RENAME TO snapshots_v2;
                     CREATE TABLE snapshots (tenant TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
                         PRIMARY KEY (tenant, seq)) WITHOUT ROWID;
                     INSERT INTO snapshots SELECT tenant, seq, data FROM snapshots_v2;
                     DROP TABLE snapshots_v2;
                     UPDATE meta SET value = 3 WHERE key = 'schema';
                     COMMIT;",
                )
                .map_err(sql)?,
            Some(found) => return Err(Error::Schema { place: db.display().to_string(), found }),
        }
        let checkpointer = Some(Checkpointer::start(db, fsync)?);
        Ok(Self { checkpointer, conn, db: db.to_path_buf() })
    }

    /// Marks the store as one whose intake is in use (see [`INTAKE_SCHEMA_VERSION`]).
    pub(crate) fn mark_intake_in_use(&self) -> Result<()> {
        self.execute("UPDATE meta SET value = ?1 WHERE key = 'schema'", params![INTAKE_SCHEMA_VERSION])
    }

    /// How far into the intake the database holds (0: never written).
    pub(crate) fn intake_position(&self) -> Result<u64> {
        let err = self.err();
        let found: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'intake'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        Ok(found.map_or(0, from_sql))
    }

    /// A connection that only reads.
    pub(crate) fn open_reader(db: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Sqlite { path: db.to_path_buf(), source })?;
        Ok(Self { checkpointer: None, conn, db: db.to_path_buf() })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + use<> {
        let path = self.db.clone();
        move |source| Error::Sqlite { path: path.clone(), source }
    }

    fn one_seq(&self, sql: &str, tenant: &str, bound: Option<u64>) -> Result<Option<u64>> {
        let err = self.err();
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let v: Option<i64> = match bound {
            Some(bound) => stmt.query_row(params![tenant, to_sql(bound)], |r| r.get(0)),
            None => stmt.query_row(params![tenant], |r| r.get(0)),
        }
        .optional()
        .map_err(&err)?
        .flatten();
        Ok(v.map(from_sql))
    }

    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<()> {
        let err = self.err();
        self.conn.prepare_cached(sql).map_err(&err)?.execute(params).map_err(&err)?;
        Ok(())
    }

    /// The writer's transaction has ended.
    fn left(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.leave();
        }
    }

    fn tenant_seqs(&self, sql: &str) -> Result<HashMap<String, u64>> {
        let err = self.err();
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, from_sql(r.get(1)?)))).map_err(&err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(&err)
    }
}

impl Conn for Sqlite {
    // Prepared once (not parsed again for every batch).
    fn begin(&mut self) -> Result<()> {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.enter()?;
        }
        let begun = self.execute("BEGIN IMMEDIATE", []);
        if begun.is_err() {
            self.left();
        }
        begun
    }

    fn commit(&mut self) -> Result<()> {
        let committed = self.execute("COMMIT", []);
        self.left();
        committed
    }

    fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.left();
    }

    fn fence(&mut self, _claims: &[(u32, u64)]) -> Result<Vec<(u32, u64)>> {
        // One process has the directory (its lock file): nothing to fence.
        Ok(Vec::new())
    }

    fn head(&mut self, tenant: &str) -> Result<u64> {
        let last = self.one_seq(
            "SELECT max(coalesce((SELECT max(last) FROM journal WHERE tenant = ?1), 0), \
                        coalesce((SELECT max(seq) FROM snapshots WHERE tenant = ?1), 0))",
            tenant,
            None,
        )?;
        Ok(last.unwrap_or(0))
    }

    fn insert_rows(&mut self, rows: &[NewRow<'_>]) -> Result<()> {
        for row in rows {
            self.execute(
                "INSERT INTO journal (tenant, seq, last, records) VALUES (?1, ?2, ?3, ?4)",
                params![row.tenant, to_sql(row.first), to_sql(row.last), row.records],
            )?;
        }
        Ok(())
    }

    fn put_snapshot(&mut self, tenant: &str, seq: u64, data: &[u8]) -> Result<()> {
        self.execute(
            "INSERT OR REPLACE INTO snapshots (tenant, seq, data) VALUES (?1, ?2, ?3)",
            params![tenant, to_sql(seq), data],
        )
    }

    fn put_delivered(&mut self, tenant: &str, seq: u64) -> Result<()> {
        self.execute(
            "INSERT INTO delivered (tenant, seq) VALUES (?1, ?2) \
             ON CONFLICT (tenant) DO UPDATE SET seq = max(seq, excluded.seq)",
            params![tenant, to_sql(seq)],
        )
    }

    fn put_intake(&mut self, position: u64) -> Result<()> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ('intake', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![to_sql(position)],
        )
    }

    fn delete_covered(&mut self, tenant: &str, base: u64) -> Result<()> {
        self.execute("DELETE FROM snapshots WHERE tenant = ?1 AND seq < ?2", params![tenant, to_sql(base)])?;
        self.execute(
            "DELETE FROM journal WHERE tenant = ?1 AND seq <= ?2 AND last <= ?2",
            params![tenant, to_sql(base)],
        )
    }

    fn forget_from(&mut self, tenant: &str, from: u64) -> Result<()> {
        let from = to_sql(from);
        self.execute("DELETE FROM journal WHERE tenant = ?1 AND seq >= ?2", params![tenant, from])?;
        self.execute("DELETE FROM snapshots WHERE tenant = ?1 AND seq >= ?2", params![tenant, from])?;
        self.execute(
            "UPDATE delivered SET seq = ?2 - 1 WHERE tenant = ?1 AND seq >= ?2",
            params![tenant, from],
        )
    }

    fn row_holding(&mut self, tenant: &str, seq: u64) -> Result<Option<Row>> {
        let err = self.err();
        self.conn
            .prepare_cached(
                "SELECT seq, last, records FROM journal WHERE tenant = ?1 AND seq < ?2 AND last >= ?2",
            )
            .map_err(&err)?
            .query_row(params![tenant, to_sql(seq)], |r| {
                Ok(Row { first: from_sql(r.get(0)?), last: from_sql(r.get(1)?), records: r.get(2)? })
            })
            .optional()
            .map_err(&err)
    }

    fn cut_row(&mut self, tenant: &str, first: u64, last: u64, records: &[u8]) -> Result<()> {
        self.execute(
            "UPDATE journal SET last = ?3, records = ?4 WHERE tenant = ?1 AND seq = ?2",
            params![tenant, to_sql(first), to_sql(last), records],
        )
    }

    fn tenants(&mut self) -> Result<Vec<String>> {
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT tenant FROM snapshots UNION SELECT DISTINCT tenant FROM journal ORDER BY 1",
            )
            .map_err(&err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(&err)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(&err)
    }

    fn newest_snapshot_until(&mut self, tenant: &str, bound: u64) -> Result<Option<u64>> {
        self.one_seq("SELECT max(seq) FROM snapshots WHERE tenant = ?1 AND seq <= ?2", tenant, Some(bound))
    }

    fn oldest_snapshot(&mut self, tenant: &str) -> Result<Option<u64>> {
        self.one_seq("SELECT min(seq) FROM snapshots WHERE tenant = ?1", tenant, None)
    }

    fn first_row(&mut self, tenant: &str) -> Result<Option<u64>> {
        self.one_seq("SELECT min(seq) FROM journal WHERE tenant = ?1", tenant, None)
    }

    fn delivered_mark(&mut self, tenant: &str) -> Result<Option<u64>> {
        self.one_seq("SELECT seq FROM delivered WHERE tenant = ?1", tenant, None)
    }

    fn snapshot(&mut self, tenant: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        let err = self.err();
        self.conn
            .prepare_cached("SELECT data FROM snapshots WHERE tenant = ?1 AND seq = ?2")
            .map_err(&err)?
            .query_row(params![tenant, to_sql(seq)], |r| r.get(0))
            .optional()
            .map_err(&err)
    }

    fn rows_after(&mut self, tenant: &str, after: u64, visit: &mut RowVisitor<'_>) -> Result<()> {
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, last, records FROM journal WHERE tenant = ?1 AND last > ?2 ORDER BY seq",
            )
            .map_err(&err)?;
        let mut rows = stmt.query(params![tenant, to_sql(after)]).map_err(&err)?;
        while let Some(r) = rows.next().map_err(&err)? {
            let row = Row {
                first: from_sql(r.get(0).map_err(&err)?),
                last: from_sql(r.get(1).map_err(&err)?),
                records: r.get(2).map_err(&err)?,
            };
            if !visit(row)? {
                break;
            }
        }
        Ok(())
    }

    fn snapshot_sizes(&mut self, tenant: &str) -> Result<Vec<(u64, u64)>> {
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, length(data) FROM snapshots WHERE tenant = ?1 ORDER BY seq")
            .map_err(&err)?;
        stmt.query_map([tenant], |r| Ok((from_sql(r.get(0)?), from_sql(r.get(1)?))))
            .and_then(Iterator::collect)
            .map_err(&err)
    }

    fn journal_size(&mut self, tenant: &str) -> Result<JournalSize> {
        let err = self.err();
        self.conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(last - seq + 1), 0), coalesce(sum(length(records)), 0), max(last) \
                 FROM journal WHERE tenant = ?1",
            )
            .map_err(&err)?
            .query_row(params![tenant], |r| {
                Ok(JournalSize {
                    rows: from_sql(r.get(0)?),
                    records: from_sql(r.get(1)?),
                    bytes: from_sql(r.get(2)?),
                    last: r.get::<_, Option<i64>>(3)?.map(from_sql),
                })
            })
            .map_err(&err)
    }

    fn delivered(&mut self) -> Result<HashMap<String, u64>> {
        self.tenant_seqs("SELECT tenant, seq FROM delivered")
    }

    fn newest_snapshots(&mut self) -> Result<HashMap<String, u64>> {
        self.tenant_seqs("SELECT tenant, max(seq) FROM snapshots GROUP BY tenant")
    }
}
