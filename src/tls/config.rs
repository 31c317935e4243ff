//! [`TlsConfig`]: certificates, ALPN, client certificates and the handshake deadline, in
//! a few lines; built into a rustls `ServerConfig` when the server binds (or reloads).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::resolve::BySni;
use super::session::{Acceptor, Resumption};

/// The handshake deadline unless [`TlsConfig::handshake_timeout`] says otherwise.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener's settings (feature `tls`): one or more certificate chains with their
/// keys, the application protocols offered (ALPN), optional client-certificate
/// verification (mTLS), and the handshake deadline. Given to
/// [`ServerBuilder::listen_tls`](crate::ServerBuilder::listen_tls), or to
/// [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls) to replace the running
/// one.
///
/// Each certificate serves the names in its own SAN list (wildcards as clients read them);
/// the first is the default, for clients that name no server (SNI) or a name no
/// certificate covers. TLS 1.2 and 1.3, rustls's safe defaults, the ring provider; early
/// data (0-RTT) off; session resumption on (tickets, and a cache), kept across reloads.
///
/// ```no_run
/// use dualstack::{Server, TlsConfig};
/// use std::time::Duration;
/// # struct App;
/// # impl dualstack::Handler for App {
/// #     type State = ();
/// #     fn on_data(&mut self, _: &mut dualstack::Context<'_, Self>, _: dualstack::ConnId, _: &mut dualstack::Input<'_>) {}
/// # }
/// let tls = TlsConfig::new()
///     .cert_files("/etc/ssl/example.org.pem", "/etc/ssl/example.org.key")?
///     .cert_files("/etc/ssl/example.net.pem", "/etc/ssl/example.net.key")?
///     .alpn(["h2", "http/1.1"])
///     .handshake_timeout(Duration::from_secs(5));
/// let mut server = Server::builder().listen_tls(":443", tls).bind(App)?;
/// server.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A test certificate for a name, with `openssl`:
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30
/// -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem -out cert.pem`.
#[derive(Clone)]
pub struct TlsConfig {
    certs: Vec<(Arc<CertifiedKey>, String)>,
    alpn: Vec<Vec<u8>>,
    client_ca: Option<(Arc<RootCertStore>, String)>,
    timeout: Duration,
    rustls: Option<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "certs",
                &self.certs.iter().map(|(_, from)| from).collect::<Vec<_>>(),
            )
            .field("alpn", &self.alpn)
            .field("client_ca", &self.client_ca.as_ref().map(|(_, from)| from))
            .field("handshake_timeout", &self.timeout)
            .field("rustls", &self.rustls.is_some())
            .finish()
    }
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig::new()
    }
}

impl TlsConfig {
    /// No certificate yet (add one before binding), no ALPN, no client certificates, a
    /// 10 s handshake deadline.
    pub fn new() -> TlsConfig {
        TlsConfig {
            certs: Vec::new(),
            alpn: Vec::new(),
            client_ca: None,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            rustls: None,
        }
    }

    /// Serves a complete rustls configuration as it is: certificates, verifiers, ALPN,
    /// versions, resumption are all its own (only the handshake deadline is this type's).
    /// The escape hatch for what the other methods do not offer. Early data (0-RTT) is
    /// not served: a configuration with a `max_early_data_size` above 0 is refused where it
    /// is used ([`TlsErrorKind::EarlyData`]).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            rustls: Some(config),
            ..TlsConfig::new()
        }
    }

    /// Adds a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1
    /// or SEC1), read now (a relative path from the process's working directory at this
    /// call). Refused, naming the file: unreadable, no certificate or no key in it, a key
    /// rustls cannot use, or a key that does not belong to the certificate.
    pub fn cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        self.add(
            &cert_pem,
            &key_pem,
            Origin::File(cert.to_path_buf()),
            Origin::File(key.to_path_buf()),
        )
    }

    /// [`cert_files`](TlsConfig::cert_files) from PEM already in memory.
    pub fn cert_pem(self, cert: &[u8], key: &[u8]) -> Result<TlsConfig, TlsError> {
        self.add(
            cert,
            key,
            Origin::Memory("certificate"),
            Origin::Memory("key"),
        )
    }

    fn add(
        mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
        cert: Origin,
        key: Origin,
    ) -> Result<TlsConfig, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::new(&cert, TlsErrorKind::Pem(e.to_string())))?;
        if chain.is_empty() {
            return Err(TlsError::new(&cert, TlsErrorKind::NoCertificate));
        }
        let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            let kind = match e {
                rustls::pki_types::pem::Error::NoItemsFound => TlsErrorKind::NoKey,
                e => TlsErrorKind::Pem(e.to_string()),
            };
            TlsError::new(&key, kind)
        })?;
        let certified =
            CertifiedKey::from_der(chain, private, &provider()).map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::new(
                    &key,
                    TlsErrorKind::KeyMismatch {
                        certificate: cert.to_string(),
                    },
                ),
                e => TlsError::new(&key, TlsErrorKind::Key(e.to_string())),
            })?;
        self.certs
            .push((Arc::new(certified), format!("{cert} with {key}")));
        Ok(self)
    }

    /// The application protocols offered, most preferred first (`"h2"`, `"http/1.1"`,
    /// `"redis"`…). A client that offers ALPN but none of these is refused with
    /// `no_application_protocol`; one that offers none is served.
    pub fn alpn<I, P>(mut self, protocols: I) -> TlsConfig
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Requires a client certificate issued under one of the CA certificates in this PEM
    /// file (mutual TLS); a client without one, or with another, is refused in the
    /// handshake. [`TlsInfo::peer_certificates`](crate::TlsInfo::peer_certificates) gives
    /// the chain to the handler.
    pub fn client_ca_file(self, path: impl AsRef<Path>) -> Result<TlsConfig, TlsError> {
        let path = path.as_ref();
        let pem = read(path)?;
        self.client_ca(&pem, Origin::File(path.to_path_buf()))
    }

    /// [`client_ca_file`](TlsConfig::client_ca_file) from PEM already in memory.
    pub fn client_ca_pem(self, pem: &[u8]) -> Result<TlsConfig, TlsError> {
        self.client_ca(pem, Origin::Memory("client CA"))
    }

    fn client_ca(mut self, pem: &[u8], origin: Origin) -> Result<TlsConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| TlsError::new(&origin, TlsErrorKind::Pem(e.to_string())))?;
            roots
                .add(cert)
                .map_err(|e| TlsError::new(&origin, TlsErrorKind::Key(e.to_string())))?;
        }
        if roots.is_empty() {
            return Err(TlsError::new(&origin, TlsErrorKind::NoCertificate));
        }
        self.client_ca = Some((Arc::new(roots), origin.to_string()));
        Ok(self)
    }

    /// How long a client has from its connection (or its PROXY header) to the end of the
    /// handshake; past it the connection is closed (`CloseReason::HandshakeTimeout`), so a
    /// client that says nothing, or dribbles its ClientHello, never holds a slot longer.
    /// Default 10 s. A duration too long for the clock means no deadline; zero is refused
    /// where the configuration is used ([`TlsErrorKind::ZeroHandshakeTimeout`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsConfig {
        self.timeout = timeout;
        self
    }

    /// Whether `other` has the same settings: the same certificate chains, ALPN list,
    /// client CAs and deadline (or the same rustls configuration).
    pub(crate) fn same_as(&self, other: &TlsConfig) -> bool {
        let chains = |c: &TlsConfig| -> Vec<Vec<rustls::pki_types::CertificateDer<'static>>> {
            c.certs.iter().map(|(k, _)| k.cert.clone()).collect()
        };
        let cas = |c: &TlsConfig| {
            c.client_ca.as_ref().map(|(roots, _)| {
                roots
                    .roots
                    .iter()
                    .map(|r| r.subject.as_ref().to_vec())
                    .collect::<Vec<_>>()
            })
        };
        let rustls_same = match (&self.rustls, &other.rustls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        rustls_same
            && chains(self) == chains(other)
            && self.alpn == other.alpn
            && cas(self) == cas(other)
            && self.timeout == other.timeout
    }

    /// The rustls configuration, with `resumption` (the server's ticket keys and session
    /// cache, kept across reloads) unless the caller gave a whole one.
    pub(crate) fn build(&self, resumption: &Resumption) -> Result<Acceptor, TlsError> {
        if self.timeout.is_zero() {
            return Err(TlsError::whole(TlsErrorKind::ZeroHandshakeTimeout));
        }
        if let Some(config) = &self.rustls {
            // Early data would be accepted by rustls and never read: bytes the client was
            // told were taken, lost. 0-RTT requests are replayable anyway (SECURITY.md).
            if config.max_early_data_size > 0 {
                return Err(TlsError::whole(TlsErrorKind::EarlyData(
                    config.max_early_data_size,
                )));
            }
            return Ok(Acceptor {
                config: Arc::clone(config),
                timeout: self.timeout,
                // Whether it verifies clients is not told: every step may be key work.
                light_finish: false,
            });
        }
        if self.certs.is_empty() {
            return Err(TlsError::whole(TlsErrorKind::NoCertificate));
        }
        let provider = Arc::new(provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::whole(TlsErrorKind::Key(e.to_string())))?;
        let builder = match &self.client_ca {
            Some((roots, origin)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider)
                        .build()
                        .map_err(|e| TlsError {
                            origin: origin.clone(),
                            kind: TlsErrorKind::Key(e.to_string()),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(BySni {
            keys: self.certs.iter().map(|(k, _)| Arc::clone(k)).collect(),
        }));
        config.alpn_protocols = self.alpn.clone();
        // No early data (0-RTT: a replayable request). Twice guarded: no size for it, and
        // rustls allows it only with stateful resumption, while tickets here are stateless.
        // tests/tls.rs `early_data_is_never_allowed_…` fails if both guards go.
        config.max_early_data_size = 0;
        config.ticketer = Arc::clone(&resumption.ticketer);
        config.session_storage = Arc::clone(&resumption.cache);
        Ok(Acceptor {
            config: Arc::new(config),
            timeout: self.timeout,
            light_finish: self.client_ca.is_none(),
        })
    }
}

/// The crypto provider: ring, which cross-builds for Windows with mingw alone (aws-lc-rs,
/// rustls's default, needs cmake and NASM there). rustls 0.23.48 marks it deprecated
/// because ring has no post-quantum key exchange; X25519, P-256 and P-384 remain.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Where PEM came from, for errors.
enum Origin {
    File(PathBuf),
    Memory(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Memory(what) => write!(f, "the {what} PEM given"),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError::new(
            &Origin::File(path.to_path_buf()),
            TlsErrorKind::Read(e.kind(), e.to_string()),
        )
    })
}

/// A TLS configuration that cannot be used: it names the file (or the PEM given in
/// memory) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    origin: String,
    kind: TlsErrorKind,
}

/// What is wrong in a [`TlsError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The file could not be read.
    Read(std::io::ErrorKind, String),
    /// Not PEM, or a PEM section that does not decode.
    Pem(String),
    /// No certificate in it (or, from `bind`, a configuration with no certificate at all).
    NoCertificate,
    /// No private key in it.
    NoKey,
    /// A key rustls cannot use (or a CA certificate it cannot take), in its words.
    Key(String),
    /// The key does not belong to this certificate.
    KeyMismatch {
        /// The certificate's file.
        certificate: String,
    },
    /// The server has no TLS listener to reload.
    NoTlsListener,
    /// A reload named a listener (by its index) that is not one of the server's TLS
    /// listeners, or (`None`) named none.
    NotTlsListener(Option<usize>),
    /// The server's TLS listeners have different configurations: reload each group with
    /// `ServerHandle::reload_tls_of`.
    ListenersDiffer,
    /// The handshake timeout is 0: every connection would be closed before its ClientHello.
    ZeroHandshakeTimeout,
    /// A rustls configuration ([`TlsConfig::from_rustls`]) allows early data (0-RTT), which
    /// is not served: set its `max_early_data_size` to 0. The size it allows.
    EarlyData(u32),
}

impl TlsError {
    fn new(origin: &Origin, kind: TlsErrorKind) -> TlsError {
        TlsError {
            origin: origin.to_string(),
            kind,
        }
    }

    /// An error about the configuration (or the server's listeners) as a whole: no origin.
    pub(crate) fn whole(kind: TlsErrorKind) -> TlsError {
        TlsError {
            origin: String::new(),
            kind,
        }
    }

    /// The file (or `the key PEM given`, …) the error is about; empty when it is about the
    /// configuration as a whole.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What is wrong.
    pub fn kind(&self) -> &TlsErrorKind {
        &self.kind
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.origin.is_empty() {
            write!(f, "{}: ", self.origin)?;
        }
        match &self.kind {
            TlsErrorKind::Read(_, e) => write!(f, "cannot read it: {e}"),
            TlsErrorKind::Pem(e) => write!(f, "not usable PEM: {e}"),
            TlsErrorKind::NoCertificate if self.origin.is_empty() => {
                f.write_str("a TLS configuration needs at least one certificate and key")
            }
            TlsErrorKind::NoCertificate => f.write_str("no certificate in it"),
            TlsErrorKind::NoKey => f.write_str("no private key in it"),
            TlsErrorKind::Key(e) => write!(f, "{e}"),
            TlsErrorKind::KeyMismatch { certificate } => {
                write!(
                    f,
                    "this key does not belong to the certificate in {certificate}"
                )
            }
            TlsErrorKind::NoTlsListener => f.write_str("the server has no TLS listener to reload"),
            TlsErrorKind::NotTlsListener(None) => f.write_str("no listener named to reload"),
            TlsErrorKind::NotTlsListener(Some(i)) => {
                write!(f, "listener {i} is not a TLS listener of this server")
            }
            TlsErrorKind::ListenersDiffer => f.write_str(
                "the TLS listeners have different configurations; reload each with reload_tls_of",
            ),
            TlsErrorKind::EarlyData(size) => write!(
                f,
                "the rustls configuration allows {size} bytes of early data (0-RTT), which is \
                 not served: set max_early_data_size to 0"
            ),
            TlsErrorKind::ZeroHandshakeTimeout => f.write_str(
                "the TLS handshake timeout must be above 0: with 0 every connection is closed \
                 before its ClientHello",
            ),
        }
    }
}

impl std::error::Error for TlsError {}
