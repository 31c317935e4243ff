//! [`ServerBuilder`]: listen specs, policy and limits, then [`bind`](ServerBuilder::bind).

use std::time::Duration;

use super::handler::Handler;
use super::proxy::ProxyProtocol;
use super::{ConfigError, Limits, Server};
use crate::addr::{ListenSpec, ParseError, ToListenSpec};
use crate::error::Error;
use crate::listen::ListenConfig;
use crate::socket::AcceptOptions;

/// A spec as given, with its PROXY protocol and TLS settings.
#[derive(Debug, Clone)]
struct SpecEntry {
    spec: Result<ListenSpec, ParseError>,
    proxy: Option<ProxyProtocol>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

impl SpecEntry {
    fn new(spec: impl ToListenSpec, proxy: Option<ProxyProtocol>) -> SpecEntry {
        SpecEntry {
            spec: spec.to_listen_spec(),
            proxy,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Builds a [`Server`]: where to listen, how, and within which limits.
///
/// ```
/// use dualstack::{ConnId, Context, FamilyPolicy, Handler, Input, ListenConfig, Server};
/// use std::time::Duration;
///
/// struct Discard;
/// impl Handler for Discard {
///     type State = ();
///     fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
/// }
///
/// let server = Server::builder()
///     .listen("localhost:0")
///     .listen(("::1", 0))
///     .listen_config(ListenConfig::new().family(FamilyPolicy::Any))
///     .max_connections(1000)
///     .idle_timeout(Duration::from_secs(60))
///     .bind(Discard)?;
/// assert_eq!(server.listeners().len(), 3); // 127.0.0.1, ::1, and ::1 again on another port
/// # Ok::<(), dualstack::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    /// Each spec, with its PROXY protocol and TLS settings if it has them.
    specs: Vec<SpecEntry>,
    listen: ListenConfig,
    limits: Limits,
    /// The water marks were set by the caller: `max_queued` no longer moves them.
    water_set: bool,
}

impl Default for ServerBuilder {
    fn default() -> ServerBuilder {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// No listen specs yet, the defaults of [`ListenConfig::new`] and these limits: no
    /// connection limit, no idle timeout, 64 KiB read buffer, 256 KiB read budget per turn,
    /// reading paused above 256 KiB queued and resumed below 64 KiB, at most 4 MiB queued per
    /// connection, 5 s to flush at shutdown, `TCP_NODELAY` on (Nagle's algorithm off).
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            specs: Vec::new(),
            listen: ListenConfig::new(),
            limits: Limits::default(),
            water_set: false,
        }
    }

    /// Adds a place to listen; each spec may open several sockets. A spec that does not
    /// parse is reported by [`bind`](ServerBuilder::bind).
    pub fn listen(mut self, spec: impl ToListenSpec) -> ServerBuilder {
        self.specs.push(SpecEntry::new(spec, None));
        self
    }

    /// Adds a place to listen behind a load balancer: every connection to its sockets
    /// begins with a PROXY protocol header (HAProxy's `send-proxy` / `send-proxy-v2`,
    /// nginx's `proxy_protocol on`), which the server reads before the handler hears of the
    /// connection. The handler then sees the client as the peer
    /// ([`Context::proxied`](crate::Context::proxied) gives the balancer and the header).
    /// Peers outside [`ProxyProtocol::trust`], bad headers and headers not complete in time
    /// are closed, and reported to [`Handler::on_refused`](crate::Handler::on_refused).
    ///
    /// Every connection must carry a header: a direct client, or a balancer not set to
    /// send one, is refused. Never enable it on a socket clients reach directly.
    ///
    /// ```
    /// use dualstack::{Cidr, ProxyProtocol, Server};
    /// let _builder = Server::builder()
    ///     .listen("localhost:8080") // direct clients
    ///     .listen_proxied(":8443", ProxyProtocol::new().trust(["10.0.0.0/8".parse::<Cidr>()?]));
    /// # Ok::<(), dualstack::CidrError>(())
    /// ```
    pub fn listen_proxied(
        mut self,
        spec: impl ToListenSpec,
        proxy: ProxyProtocol,
    ) -> ServerBuilder {
        self.specs.push(SpecEntry::new(spec, Some(proxy)));
        self
    }

    /// Adds a place to listen for TLS clients (feature `tls`): each connection's handshake
    /// is done by the server, within [`TlsConfig::handshake_timeout`](crate::TlsConfig::handshake_timeout),
    /// before `on_open`; the handler then reads and sends plaintext as on any connection,
    /// and [`Context::tls`](crate::Context::tls) says what was negotiated. Any spec can be
    /// TLS (TCP, Unix-domain, inherited). A graceful close sends `close_notify`; a peer's
    /// end without one closes with [`CloseReason::Truncated`](crate::CloseReason::Truncated).
    ///
    /// ```no_run
    /// use dualstack::{Server, TlsConfig};
    /// let tls = TlsConfig::new().cert_files("cert.pem", "key.pem")?;
    /// let _builder = Server::builder().listen_tls("localhost:8443", tls);
    /// # Ok::<(), dualstack::TlsError>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn listen_tls(
        mut self,
        spec: impl ToListenSpec,
        tls: crate::tls::TlsConfig,
    ) -> ServerBuilder {
        let mut entry = SpecEntry::new(spec, None);
        entry.tls = Some(tls);
        self.specs.push(entry);
        self
    }

    /// Takes TLS handshake steps off the loop, onto `threads` threads of their own (feature
    /// `tls`; default 0: the loop does every step). A full handshake is key-exchange and
    /// private-key work: about 0.3 ms with X25519 and ECDSA P-256 on the machine that
    /// measured it, 1.1 ms with P-384 (which rustls's own clients offer first); done in
    /// the loop, every request that arrives meanwhile waits for it. With threads, the loop
    /// hands a connection's session to one, goes on serving, and takes it back when the
    /// step is done; nothing else leaves the loop (the connection is not read while its
    /// session is away, and the handler sees nothing of it). Only steps that may be key
    /// work go: the ClientHello, and every step of TLS 1.2, of a server that verifies
    /// client certificates, or of a
    /// [`TlsConfig::from_rustls`](crate::TlsConfig::from_rustls) configuration; a TLS 1.3
    /// client's Finished is checked in the loop.
    ///
    /// The trade: under 200 full handshakes a second, the p99 of 50 established clients was
    /// 1.2× its quiet value in the loop with X25519 (6.5× with P-384), 0.7–1.0× with one
    /// thread; but on a core the thread shares with the loop, the loop wakes for every
    /// packet while the thread works, and full handshakes a second fell to 0.7–0.9×
    /// (X25519) or about 0.9× (P-384) the loop's (`BENCHMARKS.md`). Threads pay where handshakes are expensive (P-384, RSA,
    /// client certificates) or where they get cores of their own: one takes as many
    /// handshakes a second as a core does.
    ///
    /// On Linux the threads run in the `SCHED_IDLE` class, so that on a core they share the
    /// loop preempts them whenever it has work. Where other work keeps the machine busy
    /// they may get no CPU, so the loop watches them: a step no thread started within 50 ms
    /// is taken back and done by the loop (which then keeps every step for a second, if no
    /// thread started any meanwhile); a thread that started a step 50 ms ago and has not
    /// finished it gets the ordinary class until the step ends, where the process may
    /// grant it (`CAP_SYS_NICE`; otherwise the loop keeps the next steps for a second and
    /// that step waits for its thread, within the handshake deadline). At most 64.
    #[cfg(feature = "tls")]
    pub fn tls_handshake_threads(mut self, threads: usize) -> ServerBuilder {
        self.limits.handshake_threads = threads;
        self
    }

    /// A TLS listener behind a load balancer: the PROXY header, then the TLS handshake
    /// (HAProxy `mode tcp` with `send-proxy-v2`). The handler sees the client the header
    /// names as the peer, as with [`listen_proxied`](ServerBuilder::listen_proxied).
    #[cfg(feature = "tls")]
    pub fn listen_proxied_tls(
        mut self,
        spec: impl ToListenSpec,
        proxy: ProxyProtocol,
        tls: crate::tls::TlsConfig,
    ) -> ServerBuilder {
        let mut entry = SpecEntry::new(spec, Some(proxy));
        entry.tls = Some(tls);
        self.specs.push(entry);
        self
    }

    /// How to listen: family policy, wildcard stack, backlog, `SO_REUSEADDR` /
    /// `SO_REUSEPORT`, and (for tests) host capabilities and resolver, all set on the
    /// [`ListenConfig`] itself: the one place each of them is set.
    ///
    /// ```
    /// use dualstack::{FamilyPolicy, ListenConfig, Server};
    /// let _builder = Server::builder()
    ///     .listen("localhost:0")
    ///     .listen_config(ListenConfig::new().family(FamilyPolicy::V4).backlog(64));
    /// ```
    pub fn listen_config(mut self, config: ListenConfig) -> ServerBuilder {
        self.listen = config;
        self
    }

    /// At most `max` connections open at once; beyond, new clients wait in the listen
    /// backlog until one closes.
    pub fn max_connections(mut self, max: usize) -> ServerBuilder {
        self.limits.max_connections = Some(max);
        self
    }

    /// At most `max` connections open at once from one peer: one IPv4 address, or one IPv6
    /// prefix (a /64 unless [`ipv6_peer_prefix`](ServerBuilder::ipv6_peer_prefix) says
    /// otherwise). Beyond, a new connection from that peer is accepted and closed at once
    /// (counted in [`ListenerStats::refused`](crate::ListenerStats::refused)).
    ///
    /// Threat: one host opening connections until `max_connections` is reached or the
    /// process runs out of descriptors, locking everyone else out. Off by default.
    pub fn max_connections_per_peer(mut self, max: usize) -> ServerBuilder {
        self.limits.max_per_peer = Some(max);
        self
    }

    /// How many leading bits of an IPv6 peer address name one peer for
    /// [`max_connections_per_peer`](ServerBuilder::max_connections_per_peer) (default 64:
    /// a host or a site usually gets a whole /64, so counting single addresses would let it
    /// take 2^64 shares); 0 to 128, [`bind`](ServerBuilder::bind) refuses more.
    pub fn ipv6_peer_prefix(mut self, bits: u8) -> ServerBuilder {
        self.limits.ipv6_peer_prefix = bits;
        self
    }

    /// Closes a connection whose peer sent nothing within `timeout` of connecting
    /// ([`CloseReason::FirstByteTimeout`](crate::CloseReason::FirstByteTimeout)).
    ///
    /// Threat: peers that connect and stay silent, holding a slot each (slowloris). For
    /// peers that trickle a byte now and then, use [`idle_timeout`](ServerBuilder::idle_timeout)
    /// too. Off by default; protocols where the server speaks first should leave it off.
    /// [`bind`](ServerBuilder::bind) refuses zero.
    pub fn first_byte_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.limits.first_byte_timeout = Some(timeout);
        self
    }

    /// A cap on output queued over every connection together. When a
    /// [`send`](crate::Context::send) would pass it, the connections holding the most queued
    /// output are closed ([`CloseReason::Overloaded`](crate::CloseReason::Overloaded)), largest
    /// first, exactly as many as needed for the new bytes to fit; a single send larger than
    /// the cap fails with [`SendError::TooLarge`](crate::SendError::TooLarge) before anything
    /// is written. The cap may not be below the high-water mark (one connection's queue in
    /// normal operation): [`bind`](ServerBuilder::bind) refuses that.
    ///
    /// Threat: many peers that stop reading, each within its own per-connection limit,
    /// together exhausting memory. The policy sheds the peers costing the most and never
    /// stops the whole server. Off by default.
    pub fn max_total_queued(mut self, bytes: usize) -> ServerBuilder {
        self.limits.max_total_queued = Some(bytes);
        self
    }

    /// Closes a connection when nothing was read from or written to it for `timeout`
    /// ([`CloseReason::IdleTimeout`](crate::CloseReason::IdleTimeout)). A connection whose
    /// input is held (its output above the high-water mark, or paused) and whose peer takes
    /// nothing counts as idle: this bounds a peer that stopped reading, as it does one that
    /// stopped sending. Off by default; [`bind`](ServerBuilder::bind) refuses zero.
    pub fn idle_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.limits.idle_timeout = Some(timeout);
        self
    }

    /// The size of the loop's one read buffer (default 64 KiB): the most one read takes.
    pub fn read_buffer_size(mut self, bytes: usize) -> ServerBuilder {
        self.limits.read_buffer = bytes;
        self
    }

    /// The most bytes read from one connection per loop turn before the others get theirs
    /// (default 256 KiB). A connection whose budget runs out is read again next turn, after
    /// every connection that became ready meanwhile, and never twice in one turn.
    ///
    /// The trade-off: a smaller budget is fairer (a small client waits for at most one
    /// budget per busy connection before its turn comes), a larger one costs fewer loop
    /// turns, and so fewer `epoll_wait` calls, per byte of a bulk transfer. With 4 peers
    /// flooding, the default keeps a small client's p99 near a millisecond (BENCHMARKS.md,
    /// "Fairness under a flood") while bulk transfers run at the hand-written mio server's
    /// speed. It is rounded up to whole reads of the read buffer.
    pub fn read_budget(mut self, bytes: usize) -> ServerBuilder {
        self.limits.read_budget = bytes;
        self
    }

    /// Backpressure: stop reading a connection when more than `high` bytes are queued for
    /// it, read again when it is down to `low` (defaults 256 KiB and 64 KiB).
    ///
    /// `high` may not be above [`max_queued`](ServerBuilder::max_queued), nor `low` above
    /// `high`: [`bind`](ServerBuilder::bind) refuses that. The queue can pass `high` by one
    /// send (the one that crossed it), so leave room for it below `max_queued`: with less, a
    /// handler that sends what it reads gets `QueueFull` from a peer that reads slowly.
    pub fn water_marks(mut self, low: usize, high: usize) -> ServerBuilder {
        self.limits.low_water = low;
        self.limits.high_water = high;
        self.water_set = true;
        self
    }

    /// The hard limit of output queued for one connection that its peer has not taken
    /// (default 4 MiB): a [`send`](crate::Context::send) that would pass it fails with
    /// [`SendError::QueueFull`](crate::SendError::QueueFull). Before refusing, the queue is
    /// offered to the kernel, so output merely waiting for the turn's end never counts
    /// against a peer that reads; a single send longer than the limit is always refused. The
    /// kernel's send buffer holds more on top (megabytes, as it tunes itself); bound it with
    /// `SO_SNDBUF` through [`Context::socket`](crate::Context::socket) where that matters.
    ///
    /// Unless [`water_marks`](ServerBuilder::water_marks) set them, the water marks follow a
    /// small limit: high at most the limit less one read
    /// ([`read_buffer_size`](ServerBuilder::read_buffer_size)), low at most a quarter of high,
    /// so a handler that sends what it reads never meets the limit while its peer reads. That
    /// needs a limit above the read buffer (64 KiB by default): at or below it, both marks
    /// are 0 (reading pauses while anything is queued), and one read's echo can be refused.
    pub fn max_queued(mut self, bytes: usize) -> ServerBuilder {
        self.limits.max_queued = bytes;
        self
    }

    /// The most input a connection may leave unused (default 1 MiB): bytes the handler did
    /// not use stay for the next call (a request split over reads), up to this; past it the
    /// connection is closed with [`CloseReason::InputLimit`](crate::CloseReason::InputLimit).
    /// Set it above the largest request the protocol accepts (its largest frame); memory per
    /// connection is bounded by about twice it plus one read (the buffer grows by doubling);
    /// input held back while the client's replies wait does not count against it.
    pub fn max_input(mut self, bytes: usize) -> ServerBuilder {
        self.limits.max_input = bytes;
        self
    }

    /// How long a graceful stop may spend flushing queued output, and serving connections
    /// kept open for work in flight ([`Context::keep_open_on_stop`](crate::Context::keep_open_on_stop)),
    /// before what is left is closed (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.limits.shutdown_timeout = timeout;
        self
    }

    /// Whether accepted connections have `TCP_NODELAY` (default on), which turns Nagle's
    /// algorithm off: each send leaves at once instead of waiting for the peer to
    /// acknowledge what is in flight.
    ///
    /// On by default because an event loop already decides when to write (one write per
    /// read it answers), so Nagle can only add delay: measured here, a bulk echo ran at
    /// about a third of the speed with it (1.1 against 3.0 GB/s, 4 connections of 64 KiB
    /// messages), while many small request-response connections, pipelined ones and
    /// connection churn were level within noise (BENCHMARKS.md). Go and nginx
    /// (`tcp_nodelay on`) make the same choice. Turn it off for a protocol that writes many
    /// tiny pieces per message and would rather have them coalesced.
    ///
    /// It is set once, on the listening socket, and accepted connections inherit it (Linux,
    /// the BSDs, macOS and Windows do), so it costs no system call per connection.
    pub fn nodelay(mut self, on: bool) -> ServerBuilder {
        self.limits.nodelay = on;
        self
    }

    /// How many readiness events one poll returns at most (default 1024).
    pub fn events_capacity(mut self, events: usize) -> ServerBuilder {
        self.limits.events = events;
        self
    }

    /// Opens every listen spec (probing the host once) and makes the server.
    ///
    /// # Errors
    ///
    /// - [`Error::Parse`], [`Error::Plan`], [`Error::Bind`]: as for [`ListenConfig::bind`];
    ///   no socket stays open;
    /// - [`Error::Config`]: a setting makes no sense ([`ConfigError`] says which), or no
    ///   spec was given;
    /// - [`Error::Io`]: the poller could not be made;
    /// - [`Error::Bind`] or [`Error::Inherit`]: a listener could not be registered with the
    ///   poller, or an inherited socket refused an option the server needs (named by its
    ///   spec and descriptor).
    ///
    /// Whatever fails, inherited descriptors are left open and untaken (so a retry can
    /// take them), and every socket of the server's own is closed.
    pub fn bind<H: Handler>(self, handler: H) -> Result<Server<H>, Error> {
        self.bind_with(super::Poller::new, handler)
    }

    /// [`bind`](ServerBuilder::bind), with the poller made by `poller` (a test can hand one
    /// in that fails to register a listener).
    fn bind_with<H: Handler>(
        mut self,
        poller: impl FnOnce() -> std::io::Result<super::Poller>,
        handler: H,
    ) -> Result<Server<H>, Error> {
        if !self.water_set {
            // Reading stops once the queue passes `high`, and the send that passed it may
            // add one read's worth (an echo): `high` one read below the limit keeps a
            // handler that sends what it reads clear of `QueueFull`.
            let l = &mut self.limits;
            l.high_water = l.high_water.min(l.max_queued.saturating_sub(l.read_buffer));
            l.low_water = l.low_water.min(l.high_water / 4);
        }
        self.limits.validate()?;
        if self.specs.is_empty() {
            return Err(ConfigError::NoListenSpec.into());
        }
        let mut specs = Vec::with_capacity(self.specs.len());
        let mut proxies_of_specs = Vec::with_capacity(self.specs.len());
        let mut tls_of_specs: Vec<Option<crate::tls::Acceptor>> =
            Vec::with_capacity(self.specs.len());
        #[cfg(feature = "tls")]
        let mut resumption = None;
        #[cfg(feature = "tls")]
        let tls_configs: Vec<Option<crate::tls::TlsConfig>> =
            self.specs.iter().map(|e| e.tls.clone()).collect();
        for entry in self.specs {
            if let Some(proxy) = &entry.proxy {
                proxy.validate()?;
            }
            specs.push(entry.spec?);
            proxies_of_specs.push(entry.proxy);
            #[cfg(feature = "tls")]
            tls_of_specs.push(match &entry.tls {
                Some(tls) => {
                    let resumption = match &mut resumption {
                        Some(r) => r,
                        None => resumption.insert(
                            crate::tls::Resumption::new()
                                .map_err(|e| std::io::Error::other(e.to_string()))?,
                        ),
                    };
                    Some(tls.build(resumption)?)
                }
                None => None,
            });
            #[cfg(not(feature = "tls"))]
            tls_of_specs.push(None);
        }
        let listen = self.listen.accept_options(AcceptOptions {
            nodelay: self.limits.nodelay,
        });
        // Inherited descriptors are checked and reserved first; the poller and its waker
        // come next (so neither lands on a number a spec names and is checked in its
        // place), before anything is taken: if they cannot be made, nothing was.
        let checked = listen.check_inherited(specs)?;
        let poller = poller()?;
        let (listeners, skipped) = listen.open_checked(checked)?.into_parts();
        // Each listener has its spec's settings (`origin` is the spec's index).
        let proxies = listeners
            .iter()
            .map(|l| proxies_of_specs[l.origin].clone())
            .collect();
        let tls = listeners
            .iter()
            .map(|l| tls_of_specs[l.origin].clone())
            .collect();
        // Which listeners share their TLS settings (a reload of all of them at once is
        // refused when they differ): specs with equal configurations are one group.
        #[cfg(feature = "tls")]
        let groups: Vec<Option<usize>> = {
            let group_of_spec: Vec<Option<usize>> = (0..tls_configs.len())
                .map(|i| {
                    let config = tls_configs[i].as_ref()?;
                    (0..=i).find(|&j| tls_configs[j].as_ref().is_some_and(|c| c.same_as(config)))
                })
                .collect();
            listeners.iter().map(|l| group_of_spec[l.origin]).collect()
        };
        let server = Server::new(
            poller,
            listeners,
            proxies,
            tls,
            skipped,
            self.limits,
            handler,
        )?;
        #[cfg(feature = "tls")]
        if let Some(resumption) = resumption {
            server.handle.enable_tls(resumption, groups);
        }
        Ok(server)
    }
}

// Unix only: the one test takes an inherited descriptor.
#[cfg(all(test, unix))]
mod tests {
    use super::super::tests::Discard;
    use super::*;

    /// Issue #21, item 3: a failure after the inherited descriptors were taken (here the
    /// poller refuses to register one, as it refuses a descriptor it has already) closed
    /// them, recorded them as taken, and named nothing. It names the spec and the
    /// descriptor now; the descriptor stays open, as blocking as it came, and untaken: the
    /// next bind takes it.
    #[test]
    #[allow(unsafe_code)]
    fn a_failure_after_taking_gives_inherited_descriptors_back() {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let fd = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .into_raw_fd();
        let spec = format!("fd:{fd}");
        let poller = || {
            let poller = super::super::Poller::new()?;
            // SAFETY: `fd` is open (bound above), and this listener is given up with
            // into_raw_fd right after the registration, so it never closes `fd`.
            let mut same =
                mio::net::TcpListener::from_std(unsafe { std::net::TcpListener::from_raw_fd(fd) });
            let registered =
                poller
                    .registry
                    .register(&mut same, mio::Token(7), mio::Interest::READABLE);
            let _ = same.into_raw_fd();
            registered.map(|()| poller)
        };
        let err = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .listen(spec.as_str())
            .bind_with(poller, Discard)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot listen on \"{spec}\": fd {fd}: cannot register it with the poller"
            )),
            "{text}"
        );
        assert!(matches!(err, Error::Inherit(_)), "{err:?}");
        let (nonblocking, _) = crate::sys::with_inherited(fd, crate::sys::flags)
            .expect("given back closed")
            .unwrap();
        assert!(
            !nonblocking,
            "given back non-blocking: its flags were not restored"
        );
        let server = ServerBuilder::new().listen(spec.as_str()).bind(Discard);
        assert!(server.is_ok(), "not given back untaken: {:?}", server.err());
    }
}
