//! HTTPS: the certificate chain and key of `--tls-cert` and `--tls-key` (PEM), read at start
//! and again on `SIGHUP`. A reload that fails keeps the certificate in use; connections
//! already open keep the one they were made with.

use std::sync::Arc;

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::config::TlsFiles;

/// The certificate being served, swapped whole on reload.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not fit.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let acceptor = acceptor(&files)?;
        Ok(Self { files, current: RwLock::new(acceptor) })
    }

    /// Reads the files again; on failure the certificate in use stays.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn reload(&self) -> Result<(), String> {
        let fresh = acceptor(&self.files)?;
        *self.current.write() = fresh;
        Ok(())
    }

    /// The acceptor for a new connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current.read().clone()
    }
}

/// The files as a rustls acceptor (HTTP/1.1 only, TLS 1.2 and 1.3). Messages name the file,
/// never its content.
fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let cert_err = |e: &dyn std::fmt::Display| format!("{}: {e}", files.cert.display());
    let key_err = |e: &dyn std::fmt::Display| format!("{}: {e}", files.key.display());
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(&e))?;
    if chain.is_empty() {
        return Err(cert_err(&"no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_err(&e))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} with {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
