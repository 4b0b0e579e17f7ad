//! The store's tables in PostgreSQL, for several nodes sharing one database: the same
//! journal, snapshots and delivery marks as in SQLite plus each row's bucket (and the epoch
//! of the lease it was written under), and the `leases` table that says which node owns a
//! bucket. Connections use the synchronous `postgres` client (see the crate's README for
//! why).

use std::collections::HashMap;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};

use crate::backend::{Conn, JournalSize, NewRow, Row, RowVisitor, from_sql, to_sql};
use crate::bucket::{DEFAULT_BUCKETS, bucket_of};
use crate::{Error, Fsync, Result};

pub(crate) mod nodes;
pub(crate) mod tls;

pub use tls::PgTls;

/// Version of the PostgreSQL tables this code reads and writes.
const SCHEMA_VERSION: i64 = 1;

/// Where the store is and who this node is. Several nodes share one schema; each must
/// have its own `node` name.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq-style URL or key=value string, e.g. `postgres://user@host:5432/db`.
    pub url: String,
    /// The schema holding the tables (created if missing): one waitline deployment each.
    pub schema: String,
    /// This node's name in the `leases` table.
    pub node: String,
    /// Buckets tenants are hashed into; every node of a schema must agree (the first store
    /// opened keeps it in the schema, later ones are checked against it).
    pub buckets: u32,
    /// How long a lease lasts after it is taken or renewed, by the database's clock.
    pub lease: Duration,
    /// What the server's certificate is checked against when the URL says
    /// `sslmode=require` (the webpki roots unless a CA file is given).
    pub tls: PgTls,
}

impl PgConfig {
    /// Schema `waitline`, 256 buckets, leases of 5 s, and a node name made of this
    /// process's id and the time.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self {
            url: url.into(),
            schema: "waitline".into(),
            node: format!("node-{}-{:x}", std::process::id(), nanos.as_nanos()),
            buckets: DEFAULT_BUCKETS,
            lease: Duration::from_secs(5),
            tls: PgTls::default(),
        }
    }

    /// How messages name the database (never with the URL: it may hold a password).
    #[must_use]
    pub fn place(&self) -> String {
        format!("PostgreSQL schema {:?}", self.schema)
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: left out.
        f.debug_struct("PgConfig")
            .field("schema", &self.schema)
            .field("node", &self.node)
            .field("buckets", &self.buckets)
            .field("lease", &self.lease)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

fn pg_err(place: &str) -> impl Fn(postgres::Error) -> Error + use<> {
    let place = place.to_owned();
    move |source| {
        // The client's own text is only "db error" or "error connecting to server": the
        // server's message, or the cause, says what happened.
        let detail = match (source.as_db_error(), std::error::Error::source(&source)) {
            (Some(db), _) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
            (None, Some(cause)) => format!("{source}: {cause}"),
            (None, None) => source.to_string(),
        };
        Error::Postgres { place: place.clone(), detail, source }
    }
}

/// Schema names go into SQL text (`SET search_path`): only plain identifiers.
fn checked_schema(config: &PgConfig) -> Result<&str> {
    let s = config.schema.as_str();
    let plain = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if plain { Ok(s) } else { Err(Error::SchemaName(s.to_owned())) }
}

/// A client with the store's schema first on its search path.
fn connect(config: &PgConfig) -> Result<Client> {
    let schema = checked_schema(config)?;
    let err = pg_err(&config.place());
    let url: postgres::Config = config.url.parse().map_err(&err)?;
    // `sslmode=require` encrypts and verifies the server's certificate. `prefer` (the
    // default) and `disable` stay in plaintext, as before: libpq's `prefer` encrypts without
    // verifying anything, which protects nothing from an active attacker.
    let mut client = match url.get_ssl_mode() {
        SslMode::Require => url.connect(config.tls.clone()),
        _ if config.tls.ca().is_some() => return Err(Error::PostgresCaUnused(config.place())),
        _ => url.connect(NoTls),
    }
    .map_err(&err)?;
    client.batch_execute(&format!("SET search_path TO {schema}")).map_err(&err)?;
    Ok(client)
}

/// A session that writes under a lease: PostgreSQL ends its transaction, and the row locks
/// it holds, once it has been idle inside it for a whole lease. A node paused (`SIGSTOP`, a
/// stall) between its fencing check (`FOR SHARE` on the lease rows) and its commit would
/// otherwise hold those locks for as long as it is paused, and every takeover's `UPDATE` of
/// the rows would wait behind it. Its own statements follow each other at once, so only a
/// paused or dead node meets the limit; the session it loses is then a dropped connection
/// ([`crate::Error::is_disconnect`]), which a node of several recovers from.
fn end_paused_transactions(client: &mut Client, config: &PgConfig) -> Result<()> {
    let ms = u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX).max(1);
    client
        .batch_execute(&format!("SET idle_in_transaction_session_timeout = {ms}"))
        .map_err(pg_err(&config.place()))
}

/// Creates the schema and tables if missing (one node at a time), and checks the version
/// and the number of buckets.
fn create_tables(client: &mut Client, config: &PgConfig) -> Result<()> {
    let schema = checked_schema(config)?;
    let err = pg_err(&config.place());
    let mut tx = client.transaction().map_err(&err)?;
    // Two nodes starting at once would race on CREATE ... IF NOT EXISTS.
    tx.execute("SELECT pg_advisory_xact_lock(7346823511)", &[]).map_err(&err)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS journal (
             tenant TEXT NOT NULL,
             seq BIGINT NOT NULL,
             last BIGINT NOT NULL,
             bucket INTEGER NOT NULL,
             epoch BIGINT NOT NULL,
             records BYTEA NOT NULL,
             PRIMARY KEY (tenant, seq)
         );
         CREATE INDEX IF NOT EXISTS journal_by_bucket ON journal (bucket, tenant);
         CREATE TABLE IF NOT EXISTS snapshots (
             tenant TEXT NOT NULL,
             seq BIGINT NOT NULL,
             bucket INTEGER NOT NULL,
             data BYTEA NOT NULL,
             PRIMARY KEY (tenant, seq)
         );
         CREATE TABLE IF NOT EXISTS delivered (tenant TEXT PRIMARY KEY, bucket INTEGER NOT NULL, seq BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS leases (
             bucket INTEGER PRIMARY KEY,
             owner TEXT NOT NULL,
             epoch BIGINT NOT NULL,
             expires_at TIMESTAMPTZ NOT NULL
         );
         CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, url TEXT NOT NULL, seen_at TIMESTAMPTZ NOT NULL);"
    ))
    .map_err(&err)?;
    let mut meta = |key: &str, value: i64| -> Result<i64> {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &value],
        )
        .map_err(&err)?;
        let row = tx.query_one("SELECT value FROM meta WHERE key = $1", &[&key]).map_err(&err)?;
        Ok(row.get(0))
    };
    let version = meta("schema", SCHEMA_VERSION)?;
    if version != SCHEMA_VERSION {
        return Err(Error::Schema { place: config.place(), found: version });
    }
    let buckets = meta("buckets", i64::from(config.buckets))?;
    if buckets != i64::from(config.buckets) {
        return Err(Error::Buckets { place: config.place(), stored: buckets, configured: config.buckets });
    }
    tx.commit().map_err(&err)
}

/// A connection to the store's tables.
pub(crate) struct Postgres {
    client: Client,
    place: String,
    node: String,
    buckets: u32,
    statements: HashMap<&'static str, Statement>,
}

impl Postgres {
    /// The writer's connection: creates the tables if needed; with [`Fsync::Periodic`]
    /// commits do not wait for PostgreSQL's WAL flush (`synchronous_commit = off`).
    pub(crate) fn open_writer(config: &PgConfig, fsync: Fsync) -> Result<Self> {
        let mut client = connect(config)?;
        create_tables(&mut client, config)?;
        end_paused_transactions(&mut client, config)?;
        // Commits not waited for are flushed by PostgreSQL's WAL writer (within 3 x wal_writer_delay,
        // 0.6 s by default).
        if fsync == Fsync::Periodic {
            client.batch_execute("SET synchronous_commit = off").map_err(pg_err(&config.place()))?;
        }
        Ok(Self::over(client, config))
    }

    /// A connection that reads one consistent view of the tables (a repeatable-read
    /// transaction, ended when it is dropped).
    pub(crate) fn open_reader(config: &PgConfig) -> Result<Self> {
        let mut client = connect(config)?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .map_err(pg_err(&config.place()))?;
        Ok(Self::over(client, config))
    }

    fn over(client: Client, config: &PgConfig) -> Self {
        Self {
            client,
            place: config.place(),
            node: config.node.clone(),
            buckets: config.buckets,
            statements: HashMap::new(),
        }
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(pg_err(&self.place))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<()> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params).map_err(pg_err(&self.place))?;
        Ok(())
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<postgres::Row>> {
        let s = self.statement(sql)?;
        self.client.query(&s, params).map_err(pg_err(&self.place))
    }

    fn one_seq(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<u64>> {
        let rows = self.query(sql, params)?;
        let v: Option<i64> = rows.first().and_then(|r| r.get(0));
        Ok(v.map(from_sql))
    }

    fn bucket(&self, tenant: &str) -> i32 {
        i32::try_from(bucket_of(tenant, self.buckets)).unwrap_or(i32::MAX)
    }

    fn tenant_seqs(&mut self, sql: &'static str) -> Result<HashMap<String, u64>> {
        Ok(self.query(sql, &[])?.iter().map(|r| (r.get(0), from_sql(r.get(1)))).collect())
    }
}

impl Conn for Postgres {
    fn begin(&mut self) -> Result<()> {
        self.client.batch_execute("BEGIN").map_err(pg_err(&self.place))
    }

    fn commit(&mut self) -> Result<()> {
        self.client.batch_execute("COMMIT").map_err(pg_err(&self.place))
    }

    fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK");
    }

    fn fence(&mut self, claims: &[(u32, u64)]) -> Result<Vec<(u32, u64)>> {
        let buckets: Vec<i32> = claims.iter().map(|c| i32::try_from(c.0).unwrap_or(i32::MAX)).collect();
        let node = self.node.clone();
        // FOR SHARE: a takeover (an UPDATE of the row) waits until this batch is committed,
        // so what it then reads includes this batch. In bucket order, as every statement
        // locking lease rows (see `LeaseConn`): no two wait on each other in a cycle.
        let rows = self.query(
            "SELECT bucket, epoch FROM leases \
             WHERE bucket = ANY($1) AND owner = $2 AND expires_at > now() ORDER BY bucket FOR SHARE",
            &[&buckets, &node],
        )?;
        let current: HashMap<u32, u64> =
            rows.iter().map(|r| (r.get::<_, i32>(0).unsigned_abs(), from_sql(r.get(1)))).collect();
        Ok(claims.iter().filter(|(b, e)| current.get(b) != Some(e)).copied().collect())
    }

    fn head(&mut self, tenant: &str) -> Result<u64> {
        let last = self.one_seq(
            "SELECT greatest(coalesce((SELECT max(last) FROM journal WHERE tenant = $1), 0), \
                             coalesce((SELECT max(seq) FROM snapshots WHERE tenant = $1), 0))",
            &[&tenant],
        )?;
        Ok(last.unwrap_or(0))
    }

    fn insert_rows(&mut self, rows: &[NewRow<'_>]) -> Result<()> {
        // One statement for the whole batch: one round trip however many tenants it holds.
        let tenants: Vec<&str> = rows.iter().map(|r| r.tenant).collect();
        let firsts: Vec<i64> = rows.iter().map(|r| to_sql(r.first)).collect();
        let lasts: Vec<i64> = rows.iter().map(|r| to_sql(r.last)).collect();
        let buckets: Vec<i32> = rows.iter().map(|r| self.bucket(r.tenant)).collect();
        let epochs: Vec<i64> = rows.iter().map(|r| to_sql(r.epoch)).collect();
        let records: Vec<&[u8]> = rows.iter().map(|r| r.records.as_slice()).collect();
        self.execute(
            "INSERT INTO journal (tenant, seq, last, bucket, epoch, records) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::bigint[], $6::bytea[])",
            &[&tenants, &firsts, &lasts, &buckets, &epochs, &records],
        )
    }

    fn put_snapshot(&mut self, tenant: &str, seq: u64, data: &[u8]) -> Result<()> {
        let bucket = self.bucket(tenant);
        self.execute(
            "INSERT INTO snapshots (tenant, seq, bucket, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, seq) DO UPDATE SET data = excluded.data",
            &[&tenant, &to_sql(seq), &bucket, &data],
        )
    }

    fn put_intake(&mut self, _position: u64) -> Result<()> {
        // Only a SQLite store has an intake (`Store::open`).
        Err(Error::Stopped("PostgreSQL keeps no intake".into()))
    }

    fn put_delivered(&mut self, tenant: &str, seq: u64) -> Result<()> {
        let bucket = self.bucket(tenant);
        self.execute(
            "INSERT INTO delivered (tenant, bucket, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant) DO UPDATE SET seq = greatest(delivered.seq, excluded.seq)",
            &[&tenant, &bucket, &to_sql(seq)],
        )
    }

    fn delete_covered(&mut self, tenant: &str, base: u64) -> Result<()> {
        self.execute("DELETE FROM snapshots WHERE tenant = $1 AND seq < $2", &[&tenant, &to_sql(base)])?;
        self.execute(
            "DELETE FROM journal WHERE tenant = $1 AND seq <= $2 AND last <= $2",
            &[&tenant, &to_sql(base)],
        )
    }

    fn forget_from(&mut self, tenant: &str, from: u64) -> Result<()> {
        let from = to_sql(from);
        self.execute("DELETE FROM journal WHERE tenant = $1 AND seq >= $2", &[&tenant, &from])?;
        self.execute("DELETE FROM snapshots WHERE tenant = $1 AND seq >= $2", &[&tenant, &from])?;
        self.execute("UPDATE delivered SET seq = $2 - 1 WHERE tenant = $1 AND seq >= $2", &[&tenant, &from])
    }

    fn row_holding(&mut self, tenant: &str, seq: u64) -> Result<Option<Row>> {
        let rows = self.query(
            "SELECT seq, last, records FROM journal WHERE tenant = $1 AND seq < $2 AND last >= $2",
            &[&tenant, &to_sql(seq)],
        )?;
        Ok(rows.first().map(|r| Row {
            first: from_sql(r.get(0)),
            last: from_sql(r.get(1)),
            records: r.get(2),
        }))
    }

    fn cut_row(&mut self, tenant: &str, first: u64, last: u64, records: &[u8]) -> Result<()> {
        self.execute(
            "UPDATE journal SET last = $3, records = $4 WHERE tenant = $1 AND seq = $2",
            &[&tenant, &to_sql(first), &to_sql(last), &records],
        )
    }

    fn tenants(&mut self) -> Result<Vec<String>> {
        let rows = self.query(
            "SELECT tenant FROM (SELECT tenant FROM snapshots UNION SELECT tenant FROM journal) AS t \
             ORDER BY tenant COLLATE \"C\"",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn newest_snapshot_until(&mut self, tenant: &str, bound: u64) -> Result<Option<u64>> {
        self.one_seq(
            "SELECT max(seq) FROM snapshots WHERE tenant = $1 AND seq <= $2",
            &[&tenant, &to_sql(bound)],
        )
    }

    fn oldest_snapshot(&mut self, tenant: &str) -> Result<Option<u64>> {
        self.one_seq("SELECT min(seq) FROM snapshots WHERE tenant = $1", &[&tenant])
    }

    fn first_row(&mut self, tenant: &str) -> Result<Option<u64>> {
        self.one_seq("SELECT min(seq) FROM journal WHERE tenant = $1", &[&tenant])
    }

    fn delivered_mark(&mut self, tenant: &str) -> Result<Option<u64>> {
        self.one_seq("SELECT seq FROM delivered WHERE tenant = $1", &[&tenant])
    }

    fn snapshot(&mut self, tenant: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        let rows = self
            .query("SELECT data FROM snapshots WHERE tenant = $1 AND seq = $2", &[&tenant, &to_sql(seq)])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn rows_after(&mut self, tenant: &str, after: u64, visit: &mut RowVisitor<'_>) -> Result<()> {
        use postgres::fallible_iterator::FallibleIterator;
        let s = self.statement(
            "SELECT seq, last, records FROM journal WHERE tenant = $1 AND last > $2 ORDER BY seq",
        )?;
        let err = pg_err(&self.place);
        let after = to_sql(after);
        let params: [&(dyn ToSql + Sync); 2] = [&tenant, &after];
        // Streamed: a long journal is not held in memory at once.
        let mut rows = self.client.query_raw(&s, params).map_err(&err)?;
        while let Some(r) = rows.next().map_err(&err)? {
            let row = Row { first: from_sql(r.get(0)), last: from_sql(r.get(1)), records: r.get(2) };
            if !visit(row)? {
                break;
            }
        }
        Ok(())
    }

    fn snapshot_sizes(&mut self, tenant: &str) -> Result<Vec<(u64, u64)>> {
        let rows = self.query(
            "SELECT seq, octet_length(data)::bigint FROM snapshots WHERE tenant = $1 ORDER BY seq",
            &[&tenant],
        )?;
        Ok(rows.iter().map(|r| (from_sql(r.get(0)), from_sql(r.get(1)))).collect())
    }

    fn journal_size(&mut self, tenant: &str) -> Result<JournalSize> {
        let rows = self.query(
            "SELECT count(*), coalesce(sum(last - seq + 1), 0)::bigint, \
                    coalesce(sum(octet_length(records)), 0)::bigint, max(last) \
             FROM journal WHERE tenant = $1",
            &[&tenant],
        )?;
        Ok(rows.first().map_or_else(JournalSize::default, |r| JournalSize {
            rows: from_sql(r.get(0)),
            records: from_sql(r.get(1)),
            bytes: from_sql(r.get(2)),
            last: r.get::<_, Option<i64>>(3).map(from_sql),
        }))
    }

    fn delivered(&mut self) -> Result<HashMap<String, u64>> {
        self.tenant_seqs("SELECT tenant, seq FROM delivered")
    }

    fn newest_snapshots(&mut self) -> Result<HashMap<String, u64>> {
        self.tenant_seqs("SELECT tenant, max(seq) FROM snapshots GROUP BY tenant")
    }
}

/// The connection that takes, renews and gives up this node's leases (apart from the
/// writer's, so that a long batch never delays a renewal).
///
/// Each of its statements, like a batch's fence, locks the lease rows it touches in bucket
/// order: two nodes asking for the same buckets, or one renewing what another's batch
/// fences, then wait on each other in one direction only, never in a cycle (which
/// PostgreSQL would break by aborting one of them).
pub(crate) struct LeaseConn {
    client: Client,
    place: String,
    node: String,
    lease_ms: f64,
}

impl std::fmt::Debug for LeaseConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseConn").field("node", &self.node).finish_non_exhaustive()
    }
}

fn as_i32(buckets: &[u32]) -> Vec<i32> {
    buckets.iter().map(|b| i32::try_from(*b).unwrap_or(i32::MAX)).collect()
}

fn bucket_epochs(rows: &[postgres::Row]) -> Vec<(u32, u64)> {
    let mut got: Vec<(u32, u64)> =
        rows.iter().map(|r| (r.get::<_, i32>(0).unsigned_abs(), from_sql(r.get(1)))).collect();
    got.sort_unstable();
    got
}

impl LeaseConn {
    pub(crate) fn open(config: &PgConfig) -> Result<Self> {
        let mut client = connect(config)?;
        end_paused_transactions(&mut client, config)?;
        Ok(Self {
            client,
            place: config.place(),
            node: config.node.clone(),
            lease_ms: config.lease.as_secs_f64() * 1000.0,
        })
    }

    /// Takes each of `buckets` that is free or whose lease expired (by the database's
    /// clock), or that this node holds under a lease its store forgot (it reconnected:
    /// see `reconnect`), with its epoch one past the last; returns those taken with their
    /// epochs.
    pub(crate) fn acquire(&mut self, buckets: &[u32]) -> Result<Vec<(u32, u64)>> {
        let rows = self
            .client
            .query(
                "INSERT INTO leases (bucket, owner, epoch, expires_at) \
                 SELECT b, $2, 1, now() + $3::float8 * interval '1 millisecond' FROM unnest($1::integer[]) AS b \
                 ORDER BY b \
                 ON CONFLICT (bucket) DO UPDATE \
                     SET owner = excluded.owner, epoch = leases.epoch + 1, expires_at = excluded.expires_at \
                     WHERE leases.expires_at <= now() OR leases.owner = excluded.owner \
                 RETURNING bucket, epoch",
                &[&as_i32(buckets), &self.node, &self.lease_ms],
            )
            .map_err(pg_err(&self.place))?;
        Ok(bucket_epochs(&rows))
    }

    /// Extends the leases of `buckets` still held by this node and not expired; returns
    /// those extended with their epochs.
    pub(crate) fn renew(&mut self, buckets: &[u32]) -> Result<Vec<(u32, u64)>> {
        let rows = self
            .client
            .query(
                "WITH mine AS (SELECT bucket FROM leases \
                     WHERE bucket = ANY($1) AND owner = $2 AND expires_at > now() ORDER BY bucket FOR UPDATE) \
                 UPDATE leases SET expires_at = now() + $3::float8 * interval '1 millisecond' \
                 FROM mine WHERE leases.bucket = mine.bucket \
                 RETURNING leases.bucket, leases.epoch",
                &[&as_i32(buckets), &self.node, &self.lease_ms],
            )
            .map_err(pg_err(&self.place))?;
        Ok(bucket_epochs(&rows))
    }

    /// Ends this node's lease of each (bucket, epoch) now: another node may take it at once.
    pub(crate) fn release(&mut self, held: &[(u32, u64)]) -> Result<()> {
        let buckets: Vec<i32> = as_i32(&held.iter().map(|h| h.0).collect::<Vec<_>>());
        let epochs: Vec<i64> = held.iter().map(|h| to_sql(h.1)).collect();
        self.client
            .execute(
                "WITH given AS (SELECT leases.bucket FROM leases \
                     JOIN unnest($1::integer[], $2::bigint[]) AS h(bucket, epoch) \
                         ON leases.bucket = h.bucket AND leases.epoch = h.epoch \
                     WHERE leases.owner = $3 ORDER BY leases.bucket FOR UPDATE OF leases) \
                 UPDATE leases SET expires_at = '-infinity' FROM given WHERE leases.bucket = given.bucket",
                &[&buckets, &epochs, &self.node],
            )
            .map_err(pg_err(&self.place))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::pg_err;

    /// The error a statement raising `code` gets, as the store reports it.
    fn raised(code: &str) -> crate::Error {
        let Some(url) = crate::test_support::postgres_url() else { panic!("skipped") };
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$");
        pg_err("a test")(client.batch_execute(&sql).unwrap_err())
    }

    /// Only a transaction PostgreSQL rolled back for a conflict (class 40) is written again:
    /// any other failure (a constraint, a full disk, a lost connection) stops the store.
    #[test]
    fn only_class_40_counts_as_a_conflict_rolled_back() {
        if crate::test_support::postgres_url().is_none() {
            return;
        }
        for code in ["40P01", "40001", "40000"] {
            assert!(raised(code).is_rolled_back_conflict(), "{code}");
        }
        for code in ["23505", "53100", "57P01", "08006", "P0001"] {
            assert!(!raised(code).is_rolled_back_conflict(), "{code}");
        }
    }
}
