//! For tests of this crate and of its users: where the PostgreSQL tests connect, and a
//! database of their own. Not part of the API.

/// Where the PostgreSQL tests connect: `WAITLINE_TEST_POSTGRES_URL` (set by
/// `scripts/test.sh` and `scripts/postgres.sh`). Without it a test is skipped, saying so,
/// except in CI (`CI=true`), where it fails: CI must not pass by skipping them.
///
/// # Panics
/// In CI without the variable.
#[must_use]
pub fn postgres_url() -> Option<String> {
    test_variable("WAITLINE_TEST_POSTGRES_URL")
}

/// The PEM file of the CA that signed the test PostgreSQL's certificate:
/// `WAITLINE_TEST_POSTGRES_CA` (set by `scripts/postgres.sh`), skipped or failing without
/// it as [`postgres_url`].
///
/// # Panics
/// In CI without the variable.
#[must_use]
pub fn postgres_ca() -> Option<std::path::PathBuf> {
    test_variable("WAITLINE_TEST_POSTGRES_CA").map(Into::into)
}

fn test_variable(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and {name} is not set: the PostgreSQL tests may not be skipped in CI")
        }
        _ => {
            eprintln!("skipped: no PostgreSQL (run under scripts/postgres.sh, or set {name})");
            None
        }
    }
}

/// The URL of an empty database named `name` (dropped and made again) on the server of
/// [`postgres_url`], for a test that needs a whole database (say, a server with its default
/// schema); `None` as [`postgres_url`].
///
/// # Panics
/// The server refuses, or its URL does not end in a database name.
#[must_use]
pub fn fresh_database(name: &str) -> Option<String> {
    let url = postgres_url()?;
    execute(&url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    execute(&url, &format!("CREATE DATABASE {name}"));
    let (server, _) = url.rsplit_once('/').expect("a URL ending in /DATABASE");
    Some(format!("{server}/{name}"))
}

/// Runs `sql` (one statement, or several in one transaction) on the database of `url`, from a thread of its own
/// (the `postgres` client may not block a thread that drives an async runtime, such as an
/// async test's).
///
/// # Panics
/// The server refuses.
pub fn execute(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).expect("connecting to the test PostgreSQL");
        client.batch_execute(&sql).expect("running test SQL");
    })
    .join()
    .expect("the SQL's thread");
}

/// Terminates every connection to the database of `url` but the caller's, as a PostgreSQL
/// failover or restart does to its clients.
///
/// # Panics
/// The server refuses, or `url` names no database.
pub fn drop_connections(url: &str) {
    let database = url.rsplit_once('/').expect("a URL naming a database").1;
    execute(
        url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ),
    );
}
