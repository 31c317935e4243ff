//! TLS terminated inside the loop: a listener's connections go through a handshake phase
//! (after the PROXY header, if the listener has one) before the handler hears of them, and
//! afterwards every read is decrypted before `on_data` sees it and every queued byte is
//! encrypted as it is written. A TLS connection looks to a handler exactly like a plain one;
//! [`Context::tls`](crate::Context::tls) says what was negotiated.
//!
//! rustls (0.23, ring provider) stays behind this module: `config.rs` turns a [`TlsConfig`]
//! into a rustls `ServerConfig` (certificates chosen by SNI in `resolve.rs`), `session.rs`
//! is the one place that drives a rustls connection (`feed` a handshake's ciphertext in,
//! plaintext out; `read_direct` an established connection's records from the socket;
//! `encrypt` a queue; `write_tls`). Without the `tls` feature, `off.rs` puts uninhabited
//! types in their place, so the reactor's code is the same either way and compiles to
//! nothing for TLS.

use std::fmt;

#[cfg(feature = "tls")]
mod config;
#[cfg(feature = "tls")]
pub(crate) mod pool;
#[cfg(feature = "tls")]
mod resolve;
#[cfg(feature = "tls")]
mod session;

#[cfg(feature = "tls")]
pub use config::{TlsConfig, TlsError, TlsErrorKind};
#[cfg(feature = "tls")]
pub use session::TlsInfo;
#[cfg(feature = "tls")]
pub(crate) use session::{Acceptor, Resumption, Session};

#[cfg(not(feature = "tls"))]
mod off;
#[cfg(not(feature = "tls"))]
pub(crate) use off::Pool;
#[cfg(not(feature = "tls"))]
pub(crate) use off::{Acceptor, Session};
#[cfg(feature = "tls")]
pub(crate) use pool::Pool;
#[cfg(all(test, feature = "tls"))]
pub(crate) use pool::STEAL_AFTER;

/// Why a TLS connection failed: the handshake or a record was refused (by us or by the
/// peer's alert), in rustls's words. Given with [`CloseReason::Tls`](crate::CloseReason::Tls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    message: String,
}

impl TlsFailure {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn new(message: String) -> TlsFailure {
        TlsFailure { message }
    }

    /// rustls's description of the failure, for logs (its wording is rustls's, and may
    /// change with it): e.g. `peer doesn't support any known protocol` (no ALPN protocol in
    /// common), `received fatal alert: UnknownCA`, `peer sent no certificates`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.message)
    }
}

impl std::error::Error for TlsFailure {}

/// The plaintext of one read's records: the loop's second buffer. Its memory is kept and
/// never zeroed again (`clear` only forgets the length), so a read costs no `memset`.
#[derive(Debug, Default)]
pub(crate) struct Plain {
    buf: Vec<u8>,
    len: usize,
}

impl Plain {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `n` more bytes at the end, to be filled (grown, zeroed, only past what it ever held).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn extend(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let start = std::mem::replace(&mut self.len, end);
        &mut self.buf[start..end]
    }
}

/// A handshake step a thread did (`pool.rs`): the session of `id` back, the plaintext and
/// the outcome of feeding it.
pub(crate) struct Done {
    pub(crate) id: crate::conn::ConnId,
    pub(crate) session: Box<Session>,
    pub(crate) plain: Plain,
    pub(crate) fed: Result<Fed, TlsFailure>,
}

/// What one [`Session::feed`] did besides giving plaintext.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fed {
    /// The handshake completed within these bytes.
    pub(crate) handshake_done: bool,
    /// The peer's `close_notify` came: its side is done (bytes after it are ignored).
    pub(crate) peer_closed: bool,
}

/// What one [`Session::read_direct`] did: the ciphertext it read from the socket, whether
/// the socket is known to hold nothing more, and the outcome of processing it.
#[derive(Debug)]
pub(crate) struct Direct {
    /// Ciphertext bytes read (0 with `fed` ok: the end of the stream, read first; with a
    /// failure, rustls refused records before it read any).
    pub(crate) read: usize,
    /// The socket said `WouldBlock` after bytes came: drained.
    pub(crate) would_block: bool,
    /// The last read was shorter than the room offered: drained, unless the event that
    /// woke the loop reported the end of the stream (then the end is read next).
    pub(crate) short: bool,
    /// The records' outcome: as [`Session::feed`]'s.
    pub(crate) fed: Result<Fed, TlsFailure>,
}

/// The most handshake steps (ciphertext fed to a connection still handshaking) one turn
/// takes: a full handshake is private-key work inside the one thread, so a burst of new
/// clients waits for later turns instead of delaying every established connection. The
/// rest go on the ready queue, read after the next turn's events.
pub(crate) const HANDSHAKES_PER_TURN: usize = 16;

/// For the crate's tests: a CA, a server configuration for `localhost` it signed, clients
/// that trust it, and sessions of that server.
#[cfg(all(test, feature = "tls"))]
pub(crate) mod testing {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;

    /// A CA (PEM) and a `localhost` leaf it signed (chain PEM, key PEM), so the test
    /// clients verify the server as any client would.
    pub(crate) fn ca_and_leaf() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_pem, leaf.pem(), key.serialize_pem())
    }

    /// A server configuration for `localhost`, and the PEM of the CA that signed it.
    pub(crate) fn localhost() -> (crate::TlsConfig, String) {
        let (ca_pem, cert_pem, key_pem) = ca_and_leaf();
        let tls = crate::TlsConfig::new()
            .cert_pem(cert_pem.as_bytes(), key_pem.as_bytes())
            .unwrap();
        (tls, ca_pem)
    }

    /// A client configuration that trusts `ca_pem` and speaks `versions`.
    #[allow(deprecated)] // ring's default_provider, as src/tls/config.rs uses it
    pub(crate) fn client(
        ca_pem: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }

    /// A new session of a `localhost` server, and the PEM of the CA that signed it.
    pub(crate) fn session() -> (Box<super::Session>, String) {
        let (config, ca_pem) = localhost();
        let resumption = super::Resumption::new().unwrap();
        (config.build(&resumption).unwrap().start().unwrap(), ca_pem)
    }

    /// A server session and a TLS 1.3 client, their handshake done in memory up to the
    /// server's reading of the client's Finished (what the server sends then, its tickets,
    /// waits in the session).
    pub(crate) fn established() -> (Box<super::Session>, rustls::ClientConnection) {
        established_with(|_| {})
    }

    /// As [`established`], the client's configuration changed by `adjust` first.
    pub(crate) fn established_with(
        adjust: impl FnOnce(&mut rustls::ClientConfig),
    ) -> (Box<super::Session>, rustls::ClientConnection) {
        let (mut session, ca_pem) = session();
        let mut config = (*client(&ca_pem, &[&rustls::version::TLS13])).clone();
        adjust(&mut config);
        let config = Arc::new(config);
        let mut client =
            rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut plain = super::Plain::default();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if session.feed(&wire, &mut plain).unwrap().handshake_done {
                return (session, client);
            }
            let mut wire = Vec::new();
            while session.wants_write() {
                session.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        panic!("the handshake did not end");
    }
}
