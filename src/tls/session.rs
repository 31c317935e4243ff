//! The one place a rustls connection is driven: ciphertext in ([`Session::feed`] during the
//! handshake, [`Session::read_direct`] from the socket after it), plaintext out of the
//! output queue ([`Session::encrypt`]), records to the socket ([`Session::write_tls`]),
//! `close_notify`.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ProducesTickets, ServerConnection, StoresServerSessions};
use rustls::{ProtocolVersion, ServerConfig};

use super::{Direct, Fed, TlsFailure};
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
            pending: None,
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
    /// A socket error a direct read met after bytes it returned: the next read's result.
    pending: Option<io::Error>,
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
    /// [`wants_write`](Session::wants_write). An error leaves an alert to write, if rustls
    /// has one for it (it has none for a handshake message too large to hold).
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        plain: &mut super::Plain,
    ) -> Result<Fed, TlsFailure> {
        let was_handshaking = self.conn.is_handshaking();
        let mut fed = Fed::default();
        while !bytes.is_empty() {
            match self.conn.read_tls(&mut bytes) {
                // The peer's close_notify came: nothing after it is processed.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsFailure::new(e.to_string())),
            }
            self.process(plain, &mut fed)?;
            if fed.peer_closed {
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

    /// Reads ciphertext from `stream` into the session itself, as tokio-rustls does (an
    /// established connection's records need no copy through the loop's buffer), and
    /// processes it as [`feed`](Session::feed) does, its plaintext appended to `plain`.
    /// Reads go on until about `limit` bytes came, a read is short or would block, the
    /// stream ends (read again by the next call), or the peer's `close_notify`. An error
    /// before any byte is the result; one after bytes is the next call's (the bytes first).
    pub(crate) fn read_direct(
        &mut self,
        stream: &mut dyn Read,
        plain: &mut super::Plain,
        limit: usize,
    ) -> io::Result<Direct> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let mut direct = Direct {
            read: 0,
            would_block: false,
            short: false,
            fed: Ok(Fed::default()),
        };
        let mut fed = Fed::default();
        while direct.read < limit {
            let mut counted = Counted {
                inner: stream,
                asked: 0,
            };
            let n = match self.conn.read_tls(&mut counted) {
                Ok(0) => break,
                Ok(n) => n,
                // rustls refused before reading the socket (its buffer full of a handshake
                // message too large): the peer's fault, as a bad record is.
                Err(e) if counted.asked == 0 => {
                    direct.fed = Err(TlsFailure::new(e.to_string()));
                    return Ok(direct);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if direct.read == 0 => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    direct.would_block = true;
                    break;
                }
                Err(e) => {
                    self.pending = Some(e);
                    break;
                }
            };
            direct.read += n;
            direct.short = n < counted.asked;
            if let Err(e) = self.process(plain, &mut fed) {
                direct.fed = Err(e);
                return Ok(direct);
            }
            if fed.peer_closed || direct.short {
                break;
            }
        }
        direct.fed = Ok(fed);
        Ok(direct)
    }

    /// Processes the records rustls holds, appending their plaintext to `plain`, and
    /// notes the peer's `close_notify` in `fed`.
    fn process(&mut self, plain: &mut super::Plain, fed: &mut Fed) -> Result<(), TlsFailure> {
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
        }
        Ok(())
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

    /// The peer's close_notify came: its side is done, cleanly (nothing after it is
    /// processed).
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

/// A reader that notes how much room each read was offered: a read that fills less is
/// short (rustls offers its own buffer's room, not the caller's).
struct Counted<'a> {
    inner: &'a mut dyn Read,
    asked: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked = buf.len();
        self.inner.read(buf)
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

#[cfg(test)]
mod tests {
    use std::io::{self, Write};

    use super::super::{testing, Plain};

    /// A socket as the session's direct reads see it: every read is filled from `data`
    /// (a short read only if asked to), and once `error_after` bytes were handed out the
    /// next read fails with `error` (once: then the stream ends, as a reset socket's
    /// does).
    struct Socket {
        data: Vec<u8>,
        at: usize,
        error_after: usize,
        error: Option<io::ErrorKind>,
        short_first: bool,
        reads: usize,
    }

    impl Socket {
        fn new(data: Vec<u8>) -> Socket {
            Socket {
                error_after: data.len(),
                data,
                at: 0,
                error: None,
                short_first: false,
                reads: 0,
            }
        }
    }

    impl io::Read for Socket {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.at >= self.error_after {
                return match self.error.take() {
                    Some(kind) => Err(kind.into()),
                    None => Ok(0),
                };
            }
            let mut n = buf.len().min(self.data.len() - self.at);
            if std::mem::take(&mut self.short_first) {
                n = n.min(buf.len() / 2);
            }
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// The client's records for `plain`, and an established server session to read them.
    fn records(plain: &[u8]) -> (Box<super::Session>, Vec<u8>) {
        let (session, mut client) = testing::established();
        let mut wire = Vec::new();
        for piece in plain.chunks(16 * 1024) {
            client.writer().write_all(piece).unwrap();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
        }
        (session, wire)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// A reset met after bytes came in the same call: the bytes are given first, and the
    /// reset is the next call's result. A socket reports an error once (then its stream
    /// ends), so a reset dropped there would read as an end without close_notify.
    #[test]
    fn an_error_after_bytes_is_the_next_reads_result() {
        let sent = pattern(200_000);
        let (mut session, wire) = records(&sent);
        let mut socket = Socket::new(wire);
        socket.error_after = 20_000;
        socket.error = Some(io::ErrorKind::ConnectionReset);
        let mut plain = Plain::default();
        let direct = session
            .read_direct(&mut socket, &mut plain, 64 * 1024)
            .unwrap();
        assert!(direct.read >= 20_000, "{direct:?}");
        assert!(!direct.would_block && !direct.short, "{direct:?}");
        assert!(direct.fed.is_ok(), "{direct:?}");
        assert!(plain.bytes().len() >= 16_000, "{}", plain.bytes().len());
        assert_eq!(plain.bytes(), &sent[..plain.bytes().len()]);
        let next = session.read_direct(&mut socket, &mut Plain::default(), 64 * 1024);
        assert_eq!(
            next.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset,
            "the reset was lost"
        );
    }

    /// Reads go on until about the limit, while every read is full; a short read or a
    /// `WouldBlock` ends them (the socket is drained); the end of the stream after bytes
    /// is read again by the next call.
    #[test]
    fn direct_reads_stop_at_the_limit_a_short_read_or_would_block() {
        let sent = pattern(300_000);
        let (mut session, wire) = records(&sent);
        let total = wire.len();
        let mut socket = Socket::new(wire);
        let mut got = Vec::new();
        let mut plain = Plain::default();
        let direct = session
            .read_direct(&mut socket, &mut plain, 64 * 1024)
            .unwrap();
        assert!(
            (64 * 1024..64 * 1024 + 17 * 1024).contains(&direct.read),
            "{direct:?}"
        );
        assert!(!direct.short && !direct.would_block, "{direct:?}");
        got.extend_from_slice(plain.bytes());

        socket.short_first = true;
        let reads = socket.reads;
        plain.clear();
        let direct = session
            .read_direct(&mut socket, &mut plain, 64 * 1024)
            .unwrap();
        assert!(direct.short, "{direct:?}");
        assert_eq!(socket.reads, reads + 1, "read on after a short read");
        got.extend_from_slice(plain.bytes());

        // The rest, then WouldBlock.
        socket.error_after = socket.at + 30_000;
        socket.error = Some(io::ErrorKind::WouldBlock);
        plain.clear();
        let direct = session
            .read_direct(&mut socket, &mut plain, 64 * 1024)
            .unwrap();
        assert!(direct.would_block, "{direct:?}");
        got.extend_from_slice(plain.bytes());
        socket.error = Some(io::ErrorKind::WouldBlock);
        let e = session.read_direct(&mut socket, &mut plain, 64 * 1024);
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::WouldBlock);

        // Then everything to the end: the last call's bytes, and then the end alone.
        socket.error_after = total;
        loop {
            plain.clear();
            let direct = session
                .read_direct(&mut socket, &mut plain, 64 * 1024)
                .unwrap();
            got.extend_from_slice(plain.bytes());
            if direct.read == 0 {
                break;
            }
        }
        assert_eq!(got, sent);
        assert_eq!(socket.at, total);
    }

    /// A handshake message after the handshake that rustls will not hold (it buffers at
    /// most 64 KiB of records toward an unfinished one; this one comes 100 bytes a record,
    /// whole only after 80 KB of them): rustls refuses to read on before it asks the socket
    /// for a byte. The peer's doing, as a bad record is: a TLS failure of this call, not a
    /// socket error kept for the next one (which a socket that merely has more bytes would
    /// never raise).
    #[test]
    fn a_handshake_message_rustls_will_not_hold_is_a_tls_failure() {
        let (failure, calls) = too_large_to_hold(1 << 20);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(failure.message().contains("buffer full"), "{failure:?}");
    }

    /// The same when the call before read exactly up to the refusal: the refusing call
    /// reads nothing, and says so with the failure (not the stream's end).
    #[test]
    fn a_refusal_before_any_byte_is_a_failure_that_read_nothing() {
        let (failure, calls) = too_large_to_hold(65_535);
        assert_eq!(calls, [65_535, 0]);
        assert!(failure.message().contains("buffer full"), "{failure:?}");
    }

    /// Feeds an established session a key_update that claims (and has) 65,000 bytes, in
    /// 100-byte records written with the client's keys, reading at most `limit` a call
    /// until the session fails: the failure, and what each call read.
    fn too_large_to_hold(limit: usize) -> (super::super::TlsFailure, Vec<usize>) {
        use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
        use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion};
        let (mut session, client) = testing::established_with(|c| {
            c.enable_secret_extraction = true;
        });
        let Some(rustls::SupportedCipherSuite::Tls13(suite)) = client.negotiated_cipher_suite()
        else {
            panic!("not TLS 1.3");
        };
        // The client's keys, to write records its rustls would not.
        let (seq, secrets) = client.dangerous_extract_secrets().unwrap().tx;
        let (key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
            _ => panic!("a suite this test cannot write records for"),
        };
        let mut encrypter = suite.aead_alg.encrypter(key, iv);
        let mut message = vec![24, 0, 0xfd, 0xe8];
        message.resize(4 + 65_000, 0);
        let mut wire = Vec::new();
        for (i, piece) in message.chunks(100).enumerate() {
            let record = OutboundPlainMessage {
                typ: ContentType::Handshake,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(piece),
            };
            let record = encrypter.encrypt(record, seq + i as u64).unwrap();
            wire.extend(record.encode());
        }
        let mut socket = Socket::new(wire);
        let mut plain = Plain::default();
        let mut calls = Vec::new();
        loop {
            let direct = session.read_direct(&mut socket, &mut plain, limit);
            let direct = direct.expect("a socket error, where the peer failed");
            calls.push(direct.read);
            match direct.fed {
                Err(failure) => {
                    assert!(socket.at < socket.data.len(), "read to the end");
                    assert!(plain.bytes().is_empty());
                    return (failure, calls);
                }
                Ok(_) => assert!(direct.read > 0, "the stream ended first: {calls:?}"),
            }
        }
    }

    /// Nothing after the peer's close_notify is processed or delivered: a record after it
    /// (here a well-formed one, then garbage that would fail as a record) may be read off
    /// the socket in the same read, but its plaintext never reaches `plain`, now or in a
    /// later call, and the garbage raises no error.
    #[test]
    fn nothing_after_close_notify_is_delivered() {
        let (mut session, mut client) = testing::established();
        let mut wire = Vec::new();
        client.writer().write_all(b"last words").unwrap();
        client.send_close_notify();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let before = wire.len();
        client.writer().write_all(b" and more").unwrap();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        assert!(
            wire.len() > before,
            "no record after close_notify to test with"
        );
        wire.extend_from_slice(&[0xff; 100]);
        let mut socket = Socket::new(wire);
        let mut plain = Plain::default();
        let direct = session
            .read_direct(&mut socket, &mut plain, 64 * 1024)
            .unwrap();
        assert!(direct.fed.unwrap().peer_closed);
        assert!(session.peer_closed());
        assert_eq!(plain.bytes(), b"last words");
        let again = session.read_direct(&mut socket, &mut plain, 64 * 1024);
        assert!(
            again.as_ref().is_ok_and(|d| d.read == 0 && d.fed.is_ok()),
            "{again:?}"
        );
        assert_eq!(plain.bytes(), b"last words");
    }
}
