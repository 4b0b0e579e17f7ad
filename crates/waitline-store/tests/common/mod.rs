//! What the store's test files share: a record's bytes, and every entry a replay hands over.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use waitline_store::{Entry, Options, PgConfig, Replayed, Store};

/// The bytes of record `n`.
pub fn record(n: u64) -> Vec<u8> {
    format!("record {n}").into_bytes()
}

/// An entry replay handed over: (tenant, "snapshot" or "record", seq, data).
pub type Seen = (String, &'static str, u64, Vec<u8>);

/// Every entry replay hands over.
pub fn replay_all(store: &Store) -> (Vec<Seen>, Replayed) {
    let mut seen = Vec::new();
    let summary = store
        .replay(|e| {
            seen.push(match e {
                Entry::Snapshot { tenant, seq, data } => (tenant.to_owned(), "snapshot", seq, data.to_vec()),
                Entry::Record { tenant, seq, data } => (tenant.to_owned(), "record", seq, data.to_vec()),
            });
            Ok(())
        })
        .expect("replay");
    (seen, summary)
}

pub use waitline_store::test_support::postgres_url;

/// A database under a store, for the cases both must pass.
pub trait Backend {
    /// Opens the store (again, once the last handle of the one before is dropped); over
    /// PostgreSQL it takes every bucket's lease.
    fn open(&self, options: Options) -> Store;
    /// What damage messages name: the database file, or the schema.
    fn place(&self) -> String;
    /// Runs `sql` behind the store's back, as a bad disk or a bad hand would.
    fn tamper(&self, sql: &str);
    /// The stored bytes of the journal row of `tenant` starting at `seq`.
    fn records(&self, tenant: &str, seq: i64) -> Vec<u8>;
    /// Replaces them.
    fn set_records(&self, tenant: &str, seq: i64, stored: &[u8]);
}

/// A store in a temporary data directory.
pub struct Sqlite(tempfile::TempDir);

impl Sqlite {
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.0.path().join(waitline_store::DB_FILE)).unwrap()
    }
}

impl Backend for Sqlite {
    fn open(&self, options: Options) -> Store {
        Store::open(self.0.path(), options).unwrap()
    }

    fn place(&self) -> String {
        self.0.path().join(waitline_store::DB_FILE).display().to_string()
    }

    fn tamper(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }

    fn records(&self, tenant: &str, seq: i64) -> Vec<u8> {
        let sql = "SELECT records FROM journal WHERE tenant = ?1 AND seq = ?2";
        self.conn().query_row(sql, rusqlite::params![tenant, seq], |r| r.get(0)).unwrap()
    }

    fn set_records(&self, tenant: &str, seq: i64, stored: &[u8]) {
        let sql = "UPDATE journal SET records = ?3 WHERE tenant = ?1 AND seq = ?2";
        assert_eq!(self.conn().execute(sql, rusqlite::params![tenant, seq, stored]).unwrap(), 1);
    }
}

/// A store in a PostgreSQL schema of its own (dropped first, so a run starts clean), so
/// that tests run in parallel on one database.
pub struct Postgres {
    pub config: PgConfig,
}

impl Postgres {
    /// `None` (the test is skipped) when no PostgreSQL is configured.
    pub fn new(schema: &str) -> Option<Self> {
        let url = postgres_url()?;
        let mut config = PgConfig::new(url);
        config.schema = schema.chars().take(63).collect();
        let backend = Self { config };
        backend
            .client()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", backend.config.schema))
            .unwrap();
        Some(backend)
    }

    /// A client of its own, with the schema on its search path.
    pub fn client(&self) -> postgres::Client {
        let mut client = postgres::Client::connect(&self.config.url, postgres::NoTls).unwrap();
        client.batch_execute(&format!("SET search_path TO {}", self.config.schema)).unwrap();
        client
    }
}

impl Backend for Postgres {
    fn open(&self, options: Options) -> Store {
        let store = Store::open_postgres(&self.config, options).unwrap();
        assert_eq!(store.acquire_all().unwrap().len(), self.config.buckets as usize);
        store
    }

    fn place(&self) -> String {
        format!("PostgreSQL schema {:?}", self.config.schema)
    }

    fn tamper(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }

    fn records(&self, tenant: &str, seq: i64) -> Vec<u8> {
        let sql = "SELECT records FROM journal WHERE tenant = $1 AND seq = $2";
        self.client().query_one(sql, &[&tenant, &seq]).unwrap().get(0)
    }

    fn set_records(&self, tenant: &str, seq: i64, stored: &[u8]) {
        let sql = "UPDATE journal SET records = $3 WHERE tenant = $1 AND seq = $2";
        assert_eq!(self.client().execute(sql, &[&tenant, &seq, &stored]).unwrap(), 1);
    }
}
