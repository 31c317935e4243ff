//! What the application can see of a running server: its listeners ([`ListenerInfo`]) and
//! counters ([`ListenerStats`], [`Stats`]).

use std::fmt;

use crate::addr::ListenSpec;
use crate::plan::SocketMode;
use crate::socket::ListenAddr;

/// A listening socket of a running server, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The address it is bound to, normalized, with the real port; or its Unix-domain
    /// address.
    pub local_addr: ListenAddr,
    /// Its family and `IPV6_V6ONLY` setting, read back from the kernel
    /// ([`SocketMode::Unix`] for a Unix-domain socket).
    pub mode: SocketMode,
    /// The spec it was opened for.
    pub spec: ListenSpec,
    /// Every connection begins with a PROXY protocol header
    /// ([`ServerBuilder::listen_proxied`](crate::ServerBuilder::listen_proxied)).
    pub proxy_protocol: bool,
    /// Its connections are TLS (`ServerBuilder::listen_tls`, feature `tls`).
    pub tls: bool,
}

impl fmt::Display for ListenerInfo {
    /// `ADDR (MODE)`, as in `[::]:7000 (dual-stack)` or `unix:/run/app.sock (unix)`, and
    /// `ADDR (MODE, tls)` for a TLS listener: what a server prints as `listening on …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tls {
            true => write!(f, "{} ({}, tls)", self.local_addr, self.mode),
            false => write!(f, "{} ({})", self.local_addr, self.mode),
        }
    }
}

impl ListenerInfo {
    /// An address a client on this machine can connect to: the loopback address of the
    /// socket's family for a wildcard TCP socket, the socket's own address otherwise (as
    /// [`Listener::connect_addr`](crate::Listener::connect_addr)).
    pub fn connect_addr(&self) -> ListenAddr {
        crate::listen::connect_addr_for(&self.local_addr)
    }
}

/// Counters of one listener and the connections it accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections accepted so far, those refused (`refused`, `proxy_untrusted`,
    /// `proxy_failed`, `tls_failed`) included.
    pub accepted: u64,
    /// Connections open now.
    pub open: usize,
    /// Bytes read from its connections (for TLS, the plaintext the handler got).
    pub bytes_in: u64,
    /// Bytes written to its connections (for TLS, the plaintext the handler sent).
    pub bytes_out: u64,
    /// Connections refused because their peer already had its share
    /// ([`ServerBuilder::max_connections_per_peer`](crate::ServerBuilder::max_connections_per_peer)):
    /// at once, or on a PROXY listener once the header named the client.
    pub refused: u64,
    /// On a PROXY listener: connections closed without a byte read because their peer is
    /// not a trusted balancer.
    pub proxy_untrusted: u64,
    /// On a PROXY listener: connections closed because their header was malformed, not
    /// complete in time, or never came (the peer left first).
    pub proxy_failed: u64,
    /// On a TLS listener: connections closed in their handshake: refused (by either side),
    /// not complete in time, or left by the client.
    pub tls_failed: u64,
}

/// The server's counters: per listener, and their sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The sums over every listener.
    pub total: ListenerStats,
    /// Bytes queued for writing, over every connection, now.
    pub queued: usize,
    /// Bytes of input kept for handlers (sent by peers, not used yet), over every
    /// connection, now.
    pub kept: usize,
    /// One entry per listener, in [`Server::listeners`](crate::Server::listeners) order.
    pub listeners: Vec<ListenerStats>,
}

impl Stats {
    /// The counters of `listeners`, summed into `total`.
    pub(crate) fn of(listeners: Vec<ListenerStats>, queued: usize, kept: usize) -> Stats {
        let mut total = ListenerStats::default();
        for l in &listeners {
            total.accepted += l.accepted;
            total.open += l.open;
            total.bytes_in += l.bytes_in;
            total.bytes_out += l.bytes_out;
            total.refused += l.refused;
            total.proxy_untrusted += l.proxy_untrusted;
            total.proxy_failed += l.proxy_failed;
            total.tls_failed += l.tls_failed;
        }
        Stats {
            total,
            queued,
            kept,
            listeners,
        }
    }
}
