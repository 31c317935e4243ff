//! The one place a rustls connection is driven: ciphertext in ([`Session::feed`]),
//! plaintext out of the output queue ([`Session::encrypt`]), records to the socket
//! ([`Session::write_tls`]), `close_notify`.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ProducesTickets, ServerConnection, StoresServerSessions};
use rustls::{ProtocolVersion, ServerConfig};

use super::{Fed, TlsFailure};
use crate::conn::{OutQueue, Spares};

/// The most ciphertext a connection holds that the socket has not taken (rustls's own
/// buffer; the plaintext behind it waits in the connection's output queue, where the
/// queue limits and backpressure count it).
const CIPHERTEXT_LIMIT: usize = 64 * 1024;

/// A listener's TLS settings: the rustls configuration new handshakes use, and their
/// deadline. Cheap to clone; a reload replaces it for new handshakes only.
#[derive(Clone)]
pub(crate) struct Acceptor {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) timeout: Duration,
    /// The configuration verifies no client certificates (known only for one built here):
    /// in TLS 1.3 the client's steps after the server's first flight are then cheap.
    pub(crate) light_finish: bool,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("alpn", &self.config.alpn_protocols)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What resumption needs to outlive a reload: the ticket keys and the session cache,
/// made once per server and put into every configuration it builds.
#[derive(Debug, Clone)]
pub(crate) struct Resumption {
    pub(crate) ticketer: Arc<dyn ProducesTickets>,
    pub(crate) cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    pub(crate) fn new() -> Result<Resumption, rustls::Error> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            cache: rustls::server::ServerSessionMemoryCache::new(1024),
        })
    }
}

impl Acceptor {
    /// A new connection's session, waiting for its ClientHello.
    pub(crate) fn start(&self) -> Result<Box<Session>, TlsFailure> {
        let mut conn = ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| TlsFailure::new(e.to_string()))?;
        conn.set_buffer_limit(Some(CIPHERTEXT_LIMIT));
        Ok(Box::new(Session {
            conn,
            info: None,
            notified: false,
            peer_closed: false,
            light_finish: self.light_finish,
            answered: false,
        }))
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.timeout
    }
}

/// One connection's TLS state.
pub(crate) struct Session {
    conn: ServerConnection,
    info: Option<TlsInfo>,
    notified: bool,
    /// The peer's close_notify came (its plaintext before it was given out).
    peer_closed: bool,
    /// From the acceptor: no client certificates to verify.
    light_finish: bool,
    /// The session has answered a ClientHello (a flight, or a HelloRetryRequest).
    answered: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Takes `bytes` read from the socket: every whole record in them is processed, and
    /// the plaintext they carry is appended to `plain` (all of it: rustls keeps none, so
    /// the reactor's input rules alone say what the handler sees and when). What the
    /// session must answer (handshake messages, alerts, tickets) waits in
    /// [`wants_write`](Session::wants_write). An error leaves an alert to write.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        plain: &mut super::Plain,
    ) -> Result<Fed, TlsFailure> {
        let was_handshaking = self.conn.is_handshaking();
        let mut fed = Fed::default();
        while !bytes.is_empty() {
            match self.conn.read_tls(&mut bytes) {
                // The peer's close_notify came: nothing after it is read.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsFailure::new(e.to_string())),
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsFailure::new(e.to_string()))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                self.conn
                    .reader()
                    .read_exact(plain.extend(n))
                    .map_err(|e| TlsFailure::new(e.to_string()))?;
            }
            if state.peer_has_closed() {
                fed.peer_closed = true;
                self.peer_closed = true;
                break;
            }
        }
        if self.conn.wants_write() {
            self.answered = true;
        }
        if was_handshaking && !self.conn.is_handshaking() {
            fed.handshake_done = true;
            self.info = Some(TlsInfo::of(&self.conn));
        }
        Ok(fed)
    }

    /// Whether the next handshake step may be key work, worth a handshake thread: the
    /// ClientHello (in as many pieces as it comes), and every step of a TLS 1.2 handshake
    /// (its ClientKeyExchange), after a HelloRetryRequest (the second ClientHello), or of
    /// a server that verifies client certificates (their signature and chain). What is
    /// left of a TLS 1.3 handshake after the server's flight is the client's Finished, a
    /// MAC: done in the loop, it saves the two hand-offs a step costs.
    pub(crate) fn wants_thread(&self) -> bool {
        !self.answered
            || !self.light_finish
            || self.conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
            || self.conn.handshake_kind() == Some(rustls::HandshakeKind::FullWithHelloRetryRequest)
    }

    /// The peer's close_notify came: its side is done, cleanly (nothing after it is read).
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Ciphertext is waiting for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting ciphertext to `sink` (vectored, as rustls holds it in records).
    pub(crate) fn write_tls(&mut self, sink: &mut dyn io::Write) -> io::Result<usize> {
        self.conn.write_tls(sink)
    }

    /// Encrypts what `out` holds, as much as the ciphertext limit takes (`Ok(0)`: none
    /// fits until [`write_tls`](Session::write_tls) made room); the bytes leave `out`.
    pub(crate) fn encrypt(&mut self, out: &mut OutQueue, spares: &mut Spares) -> io::Result<usize> {
        out.write_to(&mut self.conn.writer(), spares)
    }

    /// Encrypts the start of `data` straight from the caller's slice, without a queue: as
    /// much as the ciphertext limit takes (0 while it is full), or the session's error (it
    /// failed before, or the record sequence ran out). For a send of a record's size
    /// or more, where the queue would hold it only to copy it here.
    pub(crate) fn encrypt_slice(&mut self, data: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut self.conn.writer(), data)
    }

    /// Output the handler sent was dropped (a close that did not wait for the queue): no
    /// close_notify from now on, so the peer sees the stream cut short.
    pub(crate) fn output_dropped(&mut self) {
        self.notified = true;
    }

    /// Queues `close_notify`, once, unless output was dropped; says whether it did now.
    pub(crate) fn close_notify(&mut self) -> bool {
        if std::mem::replace(&mut self.notified, true) {
            return false;
        }
        self.conn.send_close_notify();
        true
    }

    /// The handshake's outcome in a few words, for the log.
    pub(crate) fn summary(&self) -> String {
        match &self.info {
            Some(i) => format!(
                "{} {}{}{}",
                i.version,
                i.cipher_suite,
                i.server_name
                    .as_ref()
                    .map(|n| format!(" for {n}"))
                    .unwrap_or_default(),
                i.alpn
                    .as_ref()
                    .map(|p| format!(" ({})", String::from_utf8_lossy(p)))
                    .unwrap_or_default()
            ),
            None => "TLS handshake in progress".to_owned(),
        }
    }

    /// The connection speaks TLS 1.3 (known from the ServerHello on).
    pub(crate) fn is_tls13(&self) -> bool {
        self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3)
    }

    /// What the handshake settled, once it is done.
    pub(crate) fn info(&self) -> Option<&TlsInfo> {
        self.info.as_ref()
    }
}

/// What a TLS connection's handshake settled, for [`Context::tls`](crate::Context::tls):
/// known when `on_open` is called, fixed for the connection's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    version: &'static str,
    cipher_suite: &'static str,
    server_name: Option<String>,
    alpn: Option<Vec<u8>>,
    peer_certificates: Vec<Vec<u8>>,
    resumed: bool,
}

impl TlsInfo {
    fn of(conn: &ServerConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        TlsInfo {
            version,
            cipher_suite,
            server_name: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certificates: conn
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }

    /// The protocol version: `"TLSv1.3"` or `"TLSv1.2"`.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The cipher suite's IANA name, e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub fn cipher_suite(&self) -> &'static str {
        self.cipher_suite
    }

    /// The name the client asked for (SNI), if it sent one: lower case, as rustls gives it.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The application protocol both sides agreed on (ALPN), if any, as bytes (ALPN names
    /// are byte strings); to print it: `tls.alpn().map(String::from_utf8_lossy)`.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The client's certificate chain (DER, leaf first) when the listener verifies client
    /// certificates ([`TlsConfig::client_ca_file`](crate::TlsConfig::client_ca_file)); empty
    /// otherwise.
    pub fn peer_certificates(&self) -> &[Vec<u8>] {
        &self.peer_certificates
    }

    /// The session was resumed (a ticket or a cached session), not a full handshake.
    pub fn resumed(&self) -> bool {
        self.resumed
    }
}
