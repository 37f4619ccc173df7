//! HTTPS for [`Server`](super::Server): rustls, with ring as its crypto provider, through
//! tokio-rustls. ALPN offers `h2`, which hyper's HTTP/2 serves, and `http/1.1`, which the
//! server's own engine serves.
//!
//! ring, not rustls' default aws-lc-rs: it builds with the C compiler alone (aws-lc-rs needs
//! cmake and takes several times as long), and it has every cipher suite a browser offers.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate a [`Server`](super::Server) presents over HTTPS.
///
/// Built from PEM files (or bytes), it can be swapped while the server runs: [`reload`]
/// replaces the certificate for every handshake from then on (a renewed certificate, say),
/// while open connections keep theirs. Built from a [`rustls::ServerConfig`] of your own,
/// everything is yours but ALPN, which the server sets (`h2` and `http/1.1`, or `http/1.1`
/// alone with [`Server::http2(false)`](super::Server::http2)).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sse_runtime::{Manager, Server, SseHandler, WriteDeadline};
/// use sse_runtime::serve::Tls;
///
/// let manager = Manager::new();
/// let app = axum::Router::new()
///     .route("/alarms", axum::routing::get(SseHandler::new(&manager).topic("alarms")));
/// let tls = Tls::from_pem_files("cert.pem", "key.pem")?;
///
/// // Renewed on disk: swap it in without a restart.
/// let renewing = tls.clone();
/// tokio::spawn(async move {
///     // ... once the files changed:
///     if let Err(error) = renewing.reload("cert.pem", "key.pem") {
///         eprintln!("kept the old certificate: {error}");
///     }
/// });
///
/// let listener = sse_runtime::serve::bind("0.0.0.0:443").await?;
/// Server::new(app)
///     .tls(tls)
///     .run(WriteDeadline::new(listener, manager.heartbeat()))
///     .await;
/// # Ok(()) }
/// ```
///
/// [`reload`]: Self::reload
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    /// The swappable certificate, when the config is the framework's.
    certificate: Option<Arc<Certificate>>,
}

impl Tls {
    /// The certificate chain in `cert` (PEM, the server's certificate first) and its private
    /// key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        Self::with_key(load_files(cert.as_ref(), key.as_ref())?)
    }

    /// Like [`from_pem_files`](Self::from_pem_files), from the files' contents.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::with_key(load(cert, key)?)
    }

    /// A configuration of your own (client certificates, a resolver that picks a certificate
    /// by server name, other cipher suites). The server replaces its `alpn_protocols`; it
    /// cannot [`reload`](Self::reload) (your resolver can).
    pub fn from_config(config: rustls::ServerConfig) -> Self {
        Self {
            config: Arc::new(config),
            certificate: None,
        }
    }

    /// Replaces the certificate and key with those in the PEM files, for every handshake from
    /// now on; open connections keep the certificate they were made with. On an error, the
    /// current certificate stays.
    pub fn reload(&self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<(), TlsError> {
        let certificate = self.certificate.as_ref().ok_or(TlsError::NotReloadable)?;
        certificate.replace(load_files(cert.as_ref(), key.as_ref())?);
        Ok(())
    }

    /// Like [`reload`](Self::reload), from the files' contents.
    pub fn reload_pem(&self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let certificate = self.certificate.as_ref().ok_or(TlsError::NotReloadable)?;
        certificate.replace(load(cert, key)?);
        Ok(())
    }

    fn with_key(key: CertifiedKey) -> Result<Self, TlsError> {
        let certificate = Arc::new(Certificate(RwLock::new(Arc::new(key))));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Key)?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        Ok(Self {
            config: Arc::new(config),
            certificate: Some(certificate),
        })
    }

    /// The configuration a server runs with: this one, offering `h2` only when `http2`.
    pub(super) fn server_config(&self, http2: bool) -> Arc<rustls::ServerConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Arc::new(config)
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("reloadable", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate every new handshake gets; [`Tls::reload`] replaces it.
#[derive(Debug)]
struct Certificate(RwLock<Arc<CertifiedKey>>);

impl Certificate {
    fn replace(&self, key: CertifiedKey) {
        *self.0.write() = Arc::new(key);
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A read lock held for one `Arc` clone: handshakes never wait for each other, and a
        // reload waits for at most the handshakes already in this line.
        Some(self.0.read().clone())
    }
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    load(&read(cert)?, &read(key)?)
}

fn load(cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Key)
}

/// Why a certificate could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it gave.
        source: io::Error,
    },
    /// The certificate or key PEM does not parse, or holds no key.
    Pem {
        /// `"certificate"` or `"private key"`.
        what: &'static str,
        /// What the parser said.
        source: pem::Error,
    },
    /// The certificate PEM holds no certificate.
    NoCertificate,
    /// The key is not one rustls can sign with, or does not belong to the certificate.
    Key(rustls::Error),
    /// [`Tls::reload`] on a [`Tls::from_config`]: swap certificates in your own resolver.
    NotReloadable,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, .. } => write!(f, "cannot read {}", path.display()),
            Self::Pem { what, .. } => write!(f, "the {what} PEM is not valid"),
            Self::NoCertificate => f.write_str("the certificate PEM holds no certificate"),
            Self::Key(error) => write!(f, "the private key cannot be used: {error}"),
            Self::NotReloadable => f.write_str(
                "a Tls made from a rustls::ServerConfig cannot be reloaded: its own \
                 certificate resolver can swap certificates",
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Pem { source, .. } => Some(source),
            Self::Key(error) => Some(error),
            Self::NoCertificate | Self::NotReloadable => None,
        }
    }
}
