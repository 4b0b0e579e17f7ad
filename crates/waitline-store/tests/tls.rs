//! TLS to PostgreSQL: with `sslmode=require` the store verifies the server's certificate
//! (against the webpki roots, or a CA file) and every connection it opens is encrypted; a
//! certificate that does not verify, or a CA file that cannot be used, is an error at open,
//! never a plaintext session. Needs `WAITLINE_TEST_POSTGRES_CA` (the throwaway cluster's CA,
//! from `scripts/postgres.sh`) beside the URL.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use waitline_store::bucket::bucket_of;
use waitline_store::test_support::{drop_connections, fresh_database, postgres_ca};
use waitline_store::{Error, Options, PgConfig, PgTls, Store};

/// A fresh database's URL asking for TLS, and the test cluster's CA; `None` (skipped) as
/// [`fresh_database`] or without the CA.
fn tls_database(name: &str) -> Option<(String, String, PathBuf)> {
    let ca = postgres_ca()?;
    let url = fresh_database(name)?;
    Some((url.clone(), format!("{url}?sslmode=require"), ca))
}

/// Whether each session open on `database` (but the asking one) is encrypted.
fn sessions_encrypted(plain_url: &str, database: &str) -> Vec<bool> {
    let mut client = postgres::Client::connect(plain_url, postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
            &[&database],
        )
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn with_sslmode_require_and_the_ca_every_connection_of_the_store_is_encrypted() {
    let Some((plain, url, ca)) = tls_database("store_tls") else { return };
    let config = PgConfig { tls: PgTls::ca_file(&ca).unwrap(), ..PgConfig::new(url) };
    let store = Store::open_postgres(&config, Options::default()).unwrap();
    let bucket = bucket_of("acme", config.buckets);
    store.acquire(&[bucket]).unwrap();
    let sessions = sessions_encrypted(&plain, "store_tls");
    // The writer's, the reader's and the lease connection at least.
    assert!(sessions.len() >= 2, "the store's sessions: {sessions:?}");
    assert!(sessions.iter().all(|ssl| *ssl), "a plaintext session: {sessions:?}");

    // A failover as the client sees it: the sessions that replace the dropped ones are
    // encrypted too.
    drop_connections(&plain);
    assert!(store.wait(store.append("acme", 1, &[1]).unwrap()).is_err());
    store.reconnect_leases().unwrap();
    store.restart_writer().unwrap();
    store.acquire(&[bucket]).unwrap();
    let sessions = sessions_encrypted(&plain, "store_tls");
    assert!(sessions.len() >= 2, "the store's sessions after reconnecting: {sessions:?}");
    assert!(sessions.iter().all(|ssl| *ssl), "a plaintext session after reconnecting: {sessions:?}");
    drop(store);

    // The same server without sslmode stays in plaintext (as before TLS was built).
    let store = Store::open_postgres(&PgConfig::new(plain.clone()), Options::default()).unwrap();
    let sessions = sessions_encrypted(&plain, "store_tls");
    assert!(!sessions.is_empty() && sessions.iter().all(|ssl| !*ssl), "{sessions:?}");
    drop(store);
}

#[test]
fn with_sslmode_require_and_only_the_webpki_roots_a_private_certificate_fails_to_open() {
    let Some((_, url, _)) = tls_database("store_tls_webpki") else { return };
    let err = Store::open_postgres(&PgConfig::new(url), Options::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn a_ca_that_did_not_sign_the_server_certificate_fails_to_open() {
    let Some((_, url, _)) = tls_database("store_tls_other_ca") else { return };
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap().cert;
    std::fs::write(&other, cert.pem()).unwrap();
    let config = PgConfig { tls: PgTls::ca_file(&other).unwrap(), ..PgConfig::new(url) };
    let text = Store::open_postgres(&config, Options::default()).unwrap_err().to_string();
    assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn a_ca_file_that_cannot_be_used_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = PgTls::ca_file(&missing).unwrap_err();
    assert!(matches!(&err, Error::PostgresCa { path, .. } if *path == missing), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = PgTls::ca_file(&garbage).unwrap_err();
    assert!(matches!(&err, Error::PostgresCa { path, .. } if *path == garbage), "{err}");
    assert!(
        err.to_string().contains("garbage.pem") && err.to_string().contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn a_ca_file_with_a_url_that_does_not_ask_for_tls_is_refused() {
    let Some((plain, _, ca)) = tls_database("store_tls_unused") else { return };
    for url in [plain.clone(), format!("{plain}?sslmode=prefer"), format!("{plain}?sslmode=disable")] {
        let config = PgConfig { tls: PgTls::ca_file(&ca).unwrap(), ..PgConfig::new(url) };
        let err = Store::open_postgres(&config, Options::default()).unwrap_err();
        assert!(matches!(err, Error::PostgresCaUnused(_)), "{err}");
    }
}
