//! One accepted connection: its public identity ([`ConnId`]), why it closed
//! ([`CloseReason`]), and the state the reactor keeps for it.

pub(crate) mod input;
pub(crate) mod preamble;
mod queue;
pub(crate) mod state;

use std::fmt;
use std::io;
use std::time::Instant;

use crate::proxy::ProxyError;
use crate::socket::{Peer, Stream};

pub use input::Input;
pub(crate) use input::Kept;
pub use preamble::Proxied;
pub(crate) use preamble::{client_of, Preamble, Step};
#[cfg(test)]
pub(crate) use queue::tests::Counting;
pub(crate) use queue::{OutQueue, Spares};
pub(crate) use state::{Holder, Life, Recv, Send};

/// Names one connection for as long as it is open.
///
/// It carries the connection's slot in the server and a generation, so an id kept after the
/// connection closed never addresses a newer connection that reused the slot: operations on
/// it fail as they would on any closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) key: usize,
    pub(crate) generation: u32,
}

impl fmt::Display for ConnId {
    /// `#KEY.GENERATION`, as in `#3.17`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.key, self.generation)
    }
}

/// Names one listening socket of a server: its index in
/// [`Server::listeners`](crate::Server::listeners). Only the server makes them, so every
/// `ListenerId` a handler holds names a listener that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) usize);

impl fmt::Display for ListenerId {
    /// `listener N`, N its index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {}", self.0)
    }
}

impl ListenerId {
    /// The listener's index in [`Server::listeners`](crate::Server::listeners) and in
    /// [`Stats::listeners`](crate::Stats::listeners).
    pub fn index(self) -> usize {
        self.0
    }
}

/// What the handler learns about a connection when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The listener that accepted it.
    pub listener: ListenerId,
    /// The peer: its address, normalized (an IPv4 client of a dual-stack socket shows as
    /// IPv4), or a Unix-domain peer's credentials.
    pub peer: Peer,
}

impl fmt::Display for ConnInfo {
    /// `PEER on listener N`, as in `127.0.0.1:50000 on listener 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.peer, self.listener)
    }
}

/// Why a connection closed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (end of stream) and the connection was then closed, after
    /// any output still queued for it was delivered.
    PeerClosed,
    /// The peer reset the connection (or it broke: `ECONNRESET`, `EPIPE`, `ECONNABORTED`).
    /// Output still queued was lost.
    Reset,
    /// Nothing was read or written for longer than the idle timeout.
    IdleTimeout,
    /// The peer sent nothing within the first-byte timeout after connecting.
    FirstByteTimeout,
    /// Closed to bring the server's total queued output back under its limit: this
    /// connection held the most. Output queued for it was lost.
    Overloaded,
    /// The server stopped.
    Shutdown,
    /// The handler closed it.
    Closed,
    /// An I/O error other than a reset.
    Error(io::Error),
    /// On a PROXY listener: the peer is not a trusted balancer; nothing was read from it.
    Untrusted,
    /// On a PROXY listener: what came first was not an acceptable header.
    ProxyHeader(ProxyError),
    /// On a PROXY listener: the header was not complete within its timeout.
    HeaderTimeout,
    /// The peer (for a proxied connection, the client its header named) already had its
    /// share of connections
    /// ([`ServerBuilder::max_connections_per_peer`](crate::ServerBuilder::max_connections_per_peer)).
    PeerLimit,
    /// The peer sent more than the handler used, past
    /// [`ServerBuilder::max_input`](crate::ServerBuilder::max_input): a frame too long for
    /// it, or input the handler never said it used. What was kept is dropped.
    InputLimit {
        /// How many unused bytes there were.
        kept: usize,
        /// The limit.
        limit: usize,
    },
    /// A TLS listener's client did not finish its handshake within the deadline
    /// (`TlsConfig::handshake_timeout`, feature `tls`).
    HandshakeTimeout,
    /// TLS failed: a handshake or a record was refused, by us (with an alert where rustls
    /// has one for the failure; a handshake message too large to hold has none) or by the
    /// peer's alert.
    Tls(crate::tls::TlsFailure),
    /// A TLS peer ended its stream without `close_notify`: what came may be cut short (an
    /// attacker can end a stream; only `close_notify` proves the end was the peer's). A
    /// clean TLS end is [`PeerClosed`](CloseReason::PeerClosed), as for a plain stream.
    Truncated,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Reset => f.write_str("reset by peer"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::FirstByteTimeout => f.write_str("first-byte timeout"),
            CloseReason::Overloaded => f.write_str("closed to bound total queued output"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::Closed => f.write_str("closed by the handler"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
            CloseReason::Untrusted => f.write_str("not a trusted PROXY source"),
            CloseReason::ProxyHeader(e) => e.fmt(f),
            CloseReason::HeaderTimeout => f.write_str("no complete PROXY header in time"),
            CloseReason::PeerLimit => f.write_str("the peer already has its share of connections"),
            CloseReason::InputLimit { kept, limit } => write!(
                f,
                "{kept} bytes of input the handler did not use, more than the {limit} kept"
            ),
            CloseReason::HandshakeTimeout => f.write_str("no complete TLS handshake in time"),
            CloseReason::Tls(e) => e.fmt(f),
            CloseReason::Truncated => {
                f.write_str("the peer ended its TLS stream without close_notify")
            }
        }
    }
}

impl CloseReason {
    /// The reason an I/O error on a connection gives.
    pub(crate) fn from_io(e: io::Error) -> CloseReason {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CloseReason::Reset,
            _ => CloseReason::Error(e),
        }
    }
}

/// What a connection's clock says, for its idle and first-byte deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// When it was accepted.
    pub(crate) opened: Instant,
    /// The last time a byte was read from it or written to it.
    pub(crate) last_active: Instant,
    /// A byte has been read from it.
    pub(crate) first_byte: bool,
    /// Its entry in the reactor's deadlines, if one is armed.
    pub(crate) deadline: Option<Instant>,
    /// A PROXY header is awaited: the armed deadline is the header's.
    pub(crate) awaiting_header: bool,
}

impl Timing {
    /// A connection accepted at `now`.
    pub(crate) fn new(now: Instant) -> Timing {
        Timing {
            opened: now,
            last_active: now,
            first_byte: false,
            deadline: None,
            awaiting_header: false,
        }
    }
}

/// The reactor's record of one connection: its socket, its output queue, the input the
/// handler has not used, its state (one enum per concern, in [`state`]) and its clock. The
/// handler's own value for it lives beside it, under the same key (so a handler can hold its
/// value and send at once).
///
/// # Invariant
///
/// WRITABLE interest is registered only while `out` holds bytes the kernel would not take
/// (`writable` says which interest is registered). A connection with nothing queued and no
/// unused input owns no heap memory.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) generation: u32,
    /// Index of the listener that accepted it, for per-listener counters.
    pub(crate) listener: u32,
    /// The peer, normalized.
    pub(crate) peer: Peer,
    pub(crate) out: OutQueue,
    /// Bytes the handler has not used yet.
    pub(crate) input: Kept,
    /// `input` holds bytes the handler has not been shown since it was held (by
    /// backpressure, a pause, or a PROXY header's read): offer them before reading more.
    pub(crate) offer_kept: bool,
    /// With `offer_kept`: the reactor's `epoch` when the last offer of `input` was refused
    /// (a call that used none of it ended held again). The socket is read first then, and
    /// `input` offered with what the read brought, or alone once the epoch moved on.
    pub(crate) refused: Option<u64>,
    /// `input` was offered to the handler (a call saw it): offered again, it is a re-offer,
    /// which the handler may refuse. Bytes kept before the first call (after a PROXY header,
    /// in a TLS handshake's last flight) were not.
    pub(crate) shown: bool,
    /// Refused input waits on the reactor's `owed` list for something to happen.
    pub(crate) owed: bool,
    /// It is on the list of connections whose output is written at the turn's end.
    pub(crate) dirty: bool,
    /// A graceful stop leaves it open until the handler closes it (or clears this), within
    /// the shutdown timeout: work in flight.
    pub(crate) keep_on_stop: bool,
    pub(crate) recv: Recv,
    pub(crate) send: Send,
    pub(crate) life: Life,
    /// WRITABLE is registered (see the invariant).
    pub(crate) writable: bool,
    pub(crate) timing: Timing,
    /// Whether the handler has it yet, and how it came.
    pub(crate) phase: Phase,
    /// A TLS listener's connection: its session (from accept to close).
    pub(crate) tls: Option<Box<crate::tls::Session>>,
}

/// How far a connection is from the handler.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The handler has it (`on_open` was called).
    Open,
    /// The handler has it, and it came through a balancer.
    Proxied(Box<Proxied>),
    /// Accepted on a PROXY listener, its header not complete: the reactor reads it, and
    /// the handler has not heard of it (nor counted its peer).
    Preamble(Box<Preamble>),
    /// A TLS listener's connection in its handshake (after the PROXY header, if it came
    /// through a balancer): the reactor drives it, the handler has not heard of it, its
    /// peer is counted.
    Handshake(Option<Box<Proxied>>),
}

impl Phase {
    /// Whether the handler has heard of the connection.
    pub(crate) fn handed(&self) -> bool {
        matches!(self, Phase::Open | Phase::Proxied(_))
    }

    /// Whether the connection's peer holds a share of the per-peer limit: from accept, or
    /// from its PROXY header (which names the peer).
    pub(crate) fn counted(&self) -> bool {
        !matches!(self, Phase::Preamble(_))
    }
}

impl Conn {
    pub(crate) fn id(&self, key: usize) -> ConnId {
        ConnId {
            key,
            generation: self.generation,
        }
    }

    /// Whether a send may be taken: open, and writing not shut down.
    pub(crate) fn sendable(&self) -> bool {
        self.life.open() && self.send.open() && self.phase.handed()
    }

    /// Puts the connection (`id`, its own) on `dirty`, the list written at the turn's end,
    /// unless it is on it already.
    #[inline(always)]
    pub(crate) fn mark_dirty(&mut self, id: ConnId, dirty: &mut Vec<ConnId>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(id);
        }
    }

    /// Nothing waits to be written: neither queued plaintext nor (TLS) ciphertext.
    pub(crate) fn flushed(&self) -> bool {
        self.out.is_empty() && !self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_told_apart_from_other_errors() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::ConnectionAborted,
        ] {
            assert!(
                matches!(CloseReason::from_io(kind.into()), CloseReason::Reset),
                "{kind:?}"
            );
        }
        assert!(matches!(
            CloseReason::from_io(io::ErrorKind::TimedOut.into()),
            CloseReason::Error(_)
        ));
    }

    #[test]
    fn conn_info_reads_as_a_log_line() {
        let info = ConnInfo {
            listener: ListenerId(2),
            peer: Peer::Ip("[::1]:50000".parse().unwrap()),
        };
        assert_eq!(info.to_string(), "[::1]:50000 on listener 2");
    }
}
