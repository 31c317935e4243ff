//! The reactor: one [`mio::Poll`], the listeners under their tokens, connections in a
//! [`slab::Slab`], and readiness dispatched to a [`Handler`].
//!
//! # Layout
//!
//! One struct's work, spread over files by concern (as smoltcp spreads `Interface`):
//! `mod.rs` is [`Server`] and its public API; `turn.rs` one turn of the loop (dispatch,
//! read, settle, timers, deadlines, stop); `accept.rs` accepting and its back-off;
//! `core.rs` the [`Core`](core::Core) a handler's `Context` borrows, and `output.rs` its
//! sending side. The policies are pure and tested without sockets: `deadlines.rs` (idle,
//! first-byte and PROXY header), `peers.rs` (per-peer limit), `ready.rs` (read budget per
//! turn), `timers.rs`, `limits.rs` and `proxy.rs` (what may be configured), the shed order
//! in `output.rs` and the back-off in `backoff.rs`. Dependencies
//! run one way: connection state (`crate::conn`) → `Core` → `Context` and `Handler`
//! (`crate::handler`) → `Server`.
//!
//! # Contract
//!
//! - Edge-triggered: a socket is read until `WouldBlock`, except that a connection gets at
//!   most `read_budget` bytes per turn; one whose budget ran out goes on the `ready` queue
//!   (once: see `ready.rs`) and is read again next turn, after the connections that had
//!   events, and a readiness event for a queued connection does not read it again. On Linux a
//!   TCP read shorter than the buffer means the receive queue held no more data at that
//!   moment, and any later arrival raises a new edge (`tcp_data_ready` wakes epoll), so the
//!   reactor stops there instead of paying for an empty read. It does not say whether a FIN
//!   is queued behind the data: when the event reports read-closed (EPOLLRDHUP), or there is
//!   no event (a carried-over read), the reactor reads until `WouldBlock` or end of stream.
//! - Writes go straight to the socket; only what the kernel does not take is queued, and
//!   WRITABLE interest is registered only while something is queued. Above the high-water
//!   mark the reactor stops reading that connection until its queue falls below the
//!   low-water mark: memory stays bounded, and no accepted byte is dropped.
//! - Handler callbacks never run inside one another. A close the handler asks for takes
//!   effect when its callback returns (`Server::settle`).
//! - Connections are accepted at one point of the turn, after every event of the batch:
//!   events name slab keys, and a slot freed during the batch must stay empty until the
//!   batch's events for it are spent.
//! - Errors on one connection close that connection only; only errors of `Poll` itself end
//!   [`Server::run`].

mod accept;
mod backoff;
mod builder;
pub(crate) mod core;
mod deadlines;
mod handle;
mod handler;
mod handover;
mod handshake;
pub(crate) mod limits;
pub(crate) mod output;
mod peers;
mod proxy;
mod ready;
pub(crate) mod stats;
pub(crate) mod timers;
pub(crate) mod token;
mod turn;

use std::io;
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Poll, Token};

pub use builder::ServerBuilder;
pub use handle::ServerHandle;
#[cfg(feature = "signals")]
pub(crate) use handle::WeakHandle;
pub use handler::{Context, Handler, Sender};
pub use limits::ConfigError;
pub(crate) use limits::Limits;
pub use output::SendError;
pub use proxy::ProxyProtocol;
pub use stats::{ListenerInfo, ListenerStats, Stats};
pub use timers::TimerId;

use crate::plan::Skipped;
use core::{Core, ListenerSlot};

/// An embeddable, single-threaded TCP server: listeners from [`ListenSpec`]s, connections
/// served by a [`Handler`].
///
/// Build one with [`Server::builder`], then either [`run`](Server::run) it until it stops,
/// or drive it from your own loop with [`run_once`](Server::run_once).
///
/// ```
/// use dualstack::{ConnId, Context, Handler, Input, Server};
/// use std::io::{Read, Write};
/// use std::time::Duration;
///
/// struct Echo;
/// impl Handler for Echo {
///     type State = ();
///     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
///         let _ = ctx.send(conn, input.take_all());
///     }
/// }
///
/// let mut server = Server::builder().listen("localhost:0").bind(Echo)?;
/// let addr = server.listeners()[0].local_addr.ip().unwrap();
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"ping")?;
/// let mut reply = [0; 4];
/// let mut got = 0;
/// while got < 4 {
///     server.run_once(Some(Duration::from_millis(10)))?;
///     client.set_nonblocking(true)?;
///     if let Ok(n) = client.read(&mut reply[got..]) { got += n; }
/// }
/// assert_eq!(&reply, b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping a `Server` closes every socket at once, without `on_stop` or `on_close`; stop
/// it ([`ServerHandle::stop`], [`Context::stop`](crate::Context::stop)) and run it until
/// [`run`](Server::run) returns for a graceful end.
///
/// [`ListenSpec`]: crate::ListenSpec
pub struct Server<H: Handler> {
    poll: Poll,
    events: Events,
    core: Core,
    /// The handler's value for each connection, under the connection's own key.
    states: slab::Slab<H::State>,
    handler: H,
    /// The one read buffer of the loop, lent to `on_data` for each read.
    buf: Vec<u8>,
    /// The plaintext of a TLS read's records: the loop's second buffer, lent to `on_data`
    /// as `buf` is (empty until the first TLS read).
    plain: crate::tls::Plain,
    /// The core's "input held" flag, shared once here so that each `on_data` can lend it to
    /// the `Input` while the `Context` borrows the core (no reference count per call).
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: ServerHandle,
    skipped: Vec<Skipped>,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners())
            .field("open", &self.core.conns.len())
            .finish_non_exhaustive()
    }
}

/// The poller of a server to be, with a clone of its registry and its waker: made before
/// anything a bind takes, so that failing to make them leaves nothing taken.
pub(crate) struct Poller {
    poll: Poll,
    registry: mio::Registry,
    handle: ServerHandle,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let handle = ServerHandle::new(&registry)?;
        Ok(Poller {
            poll,
            registry,
            handle,
        })
    }
}

impl Server<NoHandler> {
    /// A builder: listen specs, family policy, limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

/// The handler of no server: only there so that [`Server::builder`] has a type to hang on.
#[derive(Debug)]
pub enum NoHandler {}

impl Handler for NoHandler {
    type State = ();
    fn on_data(&mut self, _: &mut Context<'_, Self>, _: crate::ConnId, _: &mut crate::Input<'_>) {
        match *self {}
    }
}

impl<H: Handler> Server<H> {
    /// The server over `poller`, with `listeners` registered. If one cannot be registered,
    /// every listener is undone (ours closed, inherited ones given back open and untaken)
    /// and the error names the one that failed.
    pub(crate) fn new(
        poller: Poller,
        listeners: Vec<crate::listen::Listener>,
        proxies: Vec<Option<ProxyProtocol>>,
        tls: Vec<Option<crate::tls::Acceptor>>,
        skipped: Vec<Skipped>,
        limits: Limits,
        handler: H,
    ) -> Result<Server<H>, crate::Error> {
        let Poller {
            poll,
            registry,
            handle,
        } = poller;
        let mut listeners = listeners;
        // The TLS handshake threads first: if they cannot be made, nothing was registered,
        // and the listeners are undone as for any failure here.
        #[cfg(feature = "tls")]
        let tls_pool = match limits.handshake_threads > 0 && tls.iter().any(Option::is_some) {
            true => match crate::tls::Pool::start(limits.handshake_threads, &handle) {
                Ok(pool) => Some(pool),
                Err(e) => {
                    listeners
                        .into_iter()
                        .for_each(crate::listen::Listener::undo);
                    return Err(crate::Error::Io(e));
                }
            },
            false => None,
        };
        #[cfg(not(feature = "tls"))]
        let tls_pool = None;
        for (index, listener) in listeners.iter_mut().enumerate() {
            if let Err(e) = registry.register(
                listener.socket_mut(),
                token::listener(index),
                Interest::READABLE,
            ) {
                let error = listener.error("register it with the poller", e);
                // The poller goes with this function, and its registrations with it.
                listeners
                    .into_iter()
                    .for_each(crate::listen::Listener::undo);
                return Err(error);
            }
        }
        // Which of the equal specs each listener's is (a hand-over names sockets by it).
        let occurrences: Vec<usize> = listeners
            .iter()
            .map(|l| {
                let text = l.spec().to_string();
                let mut earlier: Vec<usize> = listeners
                    .iter()
                    .filter(|o| o.origin < l.origin && o.spec().to_string() == text)
                    .map(|o| o.origin)
                    .collect();
                earlier.dedup();
                earlier.len()
            })
            .collect();
        let slots = listeners
            .into_iter()
            .zip(proxies)
            .zip(tls)
            .zip(occurrences)
            .map(|(((listener, proxy), tls), occurrence)| ListenerSlot {
                occurrence,
                info: ListenerInfo {
                    local_addr: listener.local_addr().clone(),
                    mode: listener.mode(),
                    spec: listener.spec().clone(),
                    proxy_protocol: proxy.is_some(),
                    tls: tls.is_some(),
                },
                accepting: listener.accepting,
                socket: Some(listener.into_socket()),
                stats: ListenerStats::default(),
                retry_at: None,
                failing: false,
                proxy,
                tls,
            })
            .collect();
        let mut core = Core::new(registry, slots, limits);
        core.tls_pool = tls_pool;
        Ok(Server {
            poll,
            events: Events::with_capacity(limits.events),
            buf: vec![0; limits.read_buffer],
            plain: Default::default(),
            held: std::sync::Arc::clone(&core.held),
            core,
            states: slab::Slab::new(),
            handler,
            handle,
            skipped,
        })
    }

    /// The listening sockets, in the order their specs planned them. Empty once the server
    /// has begun to stop.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.core
            .listeners
            .iter()
            .filter(|l| l.socket.is_some())
            .map(|l| l.info.clone())
            .collect()
    }

    /// Gives the service manager (`NOTIFY_SOCKET`) a copy of each listening socket for its
    /// descriptor store (`FDSTORE=1`, each named by its spec and place), so that a plain
    /// restart (`systemctl restart`) keeps them: the manager holds them while no process
    /// runs (clients wait in the backlog instead of being refused), and passes them back
    /// to the next start, whose binds take each by its spec and address as after a
    /// hand-over ([`ServerHandle::hand_over`]). Unlike a hand-over, a restart may change a
    /// socket (another mode, port or address): the stored one is closed, and the manager
    /// told to forget it (`FDSTOREREMOVE=1`), before the new one is bound; stored sockets
    /// it no longer plans go the same way once it says `READY=1`. Call it once every
    /// listener is up (after `READY=1`); again after a restart is harmless with systemd,
    /// which keeps one copy of a socket. The unit needs `FileDescriptorStoreMax=` above 0
    /// (the default, 0, makes systemd drop them); with hand-overs too, `NotifyAccess=all`,
    /// since a successor may store before systemd has taken its `MAINPID=`.
    ///
    /// Stored: sockets of host and port specs, and abstract Unix-domain ones. Not stored:
    /// Unix-domain sockets with a file (the file goes when the server stops, and a socket
    /// without it serves nobody), and sockets the manager passed itself (`sd-listen`,
    /// `fd:N`: it has them), and a socket whose spec makes a name longer than the 255
    /// bytes a manager takes (logged). Returns how many were sent (whether the manager
    /// kept them is its own affair): 0 without a manager, in a process that handed its
    /// service over, or off Unix.
    ///
    /// # Errors
    ///
    /// The OS error of sending, when none could be sent (each failure is logged).
    pub fn store_listeners(&self) -> io::Result<usize> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            if std::env::var_os("NOTIFY_SOCKET").is_none() || crate::handover::handed_over() {
                return Ok(0);
            }
            let mut stored = 0;
            let mut failed = None;
            for (i, l) in self.core.listeners.iter().enumerate() {
                let Some(socket) = &l.socket else { continue };
                let storable = match &l.info.local_addr {
                    crate::socket::ListenAddr::Ip(_) => {
                        matches!(l.info.spec.kind(), crate::addr::SpecKind::Ip { .. })
                    }
                    crate::socket::ListenAddr::Unix(crate::addr::UnixAddr::Abstract(_)) => {
                        matches!(l.info.spec.kind(), crate::addr::SpecKind::Unix(_))
                    }
                    _ => false,
                };
                if !storable {
                    continue;
                }
                let name = handover::socket_name(&self.core.listeners, i);
                if name.len() > 255 {
                    // systemd's limit for a name (FDNAME_MAX): it would refuse the socket.
                    log::warn!(
                        "{} is not stored: its spec, {}, makes a name longer than the 255 bytes a service manager takes",
                        l.info.local_addr,
                        l.info.spec
                    );
                    continue;
                }
                let message = format!("FDSTORE=1\nFDNAME={name}");
                match crate::inherit::send_to_manager(&message, Some(socket.as_fd())) {
                    Ok(true) => stored += 1,
                    Ok(false) => {}
                    Err(e) => {
                        log::warn!(
                            "{}: not given to the service manager: {e}",
                            l.info.local_addr
                        );
                        failed.get_or_insert(e);
                    }
                }
            }
            match failed {
                Some(e) if stored == 0 => Err(e),
                _ => Ok(stored),
            }
        }
        #[cfg(not(unix))]
        Ok(0)
    }

    /// Addresses the specs produced that were not bound, with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// A handle that stops or wakes the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Registers an application source with the server's poll; its events come to
    /// [`Handler::on_event`] with `token`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `token` is above `usize::MAX >> 2` (the top two
    /// bits tag the server's own tokens); otherwise the OS error.
    pub fn register<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.core.register_app(source, token, interest, false)
    }

    /// Deregisters an application source.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn deregister<S: Source + ?Sized>(&mut self, source: &mut S) -> io::Result<()> {
        self.core.deregister_app(source)
    }

    /// Whether the server has stopped: a stop was asked for and every connection is closed.
    pub fn is_stopped(&self) -> bool {
        self.core.stopping.is_some() && self.core.conns.is_empty()
    }

    /// Runs until the server is stopped (by [`Context::stop`](crate::Context::stop) or
    /// [`ServerHandle::stop`]) and every connection is closed.
    ///
    /// # Errors
    ///
    /// Only an error of the poller itself; errors on connections close those connections.
    pub fn run(&mut self) -> io::Result<()> {
        while self.run_once(None)? {}
        Ok(())
    }

    /// Polls once, waiting at most `timeout` (`None`: until something happens), and handles
    /// what is ready. Returns `false` once the server has stopped.
    ///
    /// This is the step function for an application that owns its loop: call it with the
    /// timeout your loop needs. The server shortens the wait itself when a timer, an idle
    /// deadline or a connection with unread data needs it.
    ///
    /// # Errors
    ///
    /// Only an error of the poller itself (an interrupted poll is not an error).
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        if self.is_stopped() {
            return Ok(false);
        }
        self.turn(timeout)?;
        Ok(!self.is_stopped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{ConnId, ConnInfo, Life};
    use crate::{Context, Input};
    use std::time::Instant;

    /// A handler that does nothing: for tests of the reactor's own behaviour.
    pub(super) struct Discard;

    impl Handler for Discard {
        type State = ();
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }

    /// Issue #12, item 7: one idle-deadline entry per accepted connection outlived its close
    /// until the deadline, so reconnecting in a loop grew the heap by rate × timeout.
    #[test]
    fn deadlines_are_bounded_by_open_connections_not_by_churn() {
        let mut server = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .idle_timeout(Duration::from_secs(3600))
            .bind(Discard)
            .unwrap();
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let keep = std::net::TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..300 {
            drop(std::net::TcpStream::connect(addr).unwrap());
        }
        while server.core.listeners[0].stats.accepted < 301 || server.core.conns.len() > 1 {
            assert!(
                Instant::now() < deadline,
                "the churn was not served in time"
            );
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(server.core.conns.len(), 1);
        assert_eq!(
            server.core.deadlines.len(),
            1,
            "deadlines of closed connections are still armed"
        );
        drop(keep);
    }

    /// Sets an hour-long timer for each connection as it opens.
    struct LongTimers;

    impl Handler for LongTimers {
        type State = ();
        fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
            ctx.set_conn_timer(conn, Duration::from_secs(3600), 0)
                .unwrap();
            ctx.set_conn_timer(conn, Duration::from_secs(7200), 1)
                .unwrap();
        }
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }

    /// Issue #22: a connection's timers go when it closes, so a reconnecting client cannot
    /// grow the timers by rate × delay (as deadlines once did).
    #[test]
    fn a_closed_connections_timers_are_gone_at_once() {
        let mut server = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .bind(LongTimers)
            .unwrap();
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let keep = std::net::TcpStream::connect(addr).unwrap();
        for _ in 0..50 {
            drop(std::net::TcpStream::connect(addr).unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.core.listeners[0].stats.accepted < 51 || server.core.conns.len() > 1 {
            assert!(
                Instant::now() < deadline,
                "the churn was not served in time"
            );
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(
            server.core.timers.len(),
            2,
            "timers of closed connections remain"
        );
        drop(keep);
    }

    /// A server with `builder`'s limits and `n` connections from clients that never read,
    /// with tiny socket buffers on both sides so that nearly all a send gives is queued.
    fn stalled_pair(
        builder: ServerBuilder,
        n: usize,
    ) -> (Server<Discard>, Vec<std::net::TcpStream>, Vec<ConnId>) {
        let mut server = builder.listen("127.0.0.1:0").bind(Discard).unwrap();
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let clients: Vec<std::net::TcpStream> = (0..n)
            .map(|_| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                socket.set_recv_buffer_size(4096).unwrap();
                socket.connect(&addr.into()).unwrap();
                socket.into()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.core.conns.len() < n {
            assert!(Instant::now() < deadline, "the clients were not accepted");
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        let mut ids: Vec<ConnId> = server.core.conns.iter().map(|(k, c)| c.id(k)).collect();
        ids.sort();
        for id in &ids {
            let conn = server.core.get(*id).unwrap();
            socket2::SockRef::from(&conn.stream)
                .set_send_buffer_size(4096)
                .unwrap();
        }
        (server, clients, ids)
    }

    const MIB: usize = 1 << 20;

    /// Issue #12, item 3: `shed` counted the queues of connections it had just closed, so
    /// every later send in the same callback closed another one: with A holding 3 MiB of a
    /// 4 MiB cap and B sending, both went, and the total stayed above the cap.
    #[test]
    fn shedding_closes_exactly_enough_and_counts_closing_queues_as_gone() {
        let (mut server, _clients, ids) = stalled_pair(
            ServerBuilder::new()
                .max_total_queued(4 * MIB)
                .max_queued(16 * MIB)
                .water_marks(0, 4 * MIB),
            3,
        );
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        server.core.send(a, &vec![1; 3 * MIB]).unwrap();
        server.core.send(c, &vec![3; MIB / 4]).unwrap();
        assert!(
            server.core.total_queued > 3 * MIB,
            "the kernel took A's burst"
        );
        // B's send passes the cap: A, the biggest holder, makes room, and nobody else.
        server.core.send(b, &vec![2; 2 * MIB]).unwrap();
        // Later sends in the same callback must not shed for A's bytes again.
        server.core.send(b, &vec![2; 64 * 1024]).unwrap();
        server.core.send(c, &vec![3; 64 * 1024]).unwrap();
        assert!(
            server.core.total_queued <= 4 * MIB,
            "{} bytes queued, above the cap",
            server.core.total_queued
        );
        assert_eq!(server.core.get(a).unwrap().life, Life::Closing);
        assert_eq!(server.core.get(b).unwrap().life, Life::Open, "B was shed");
        assert_eq!(server.core.get(c).unwrap().life, Life::Open, "C was shed");
        server.settle();
        assert_eq!(server.stats().queued, server.core.total_queued);
        assert_eq!(server.core.conns.len(), 2);
    }

    /// Issue #12, item 2: with a total cap, a 16 MiB send wrote ~3.9 MB to the socket and
    /// then returned `QueueFull`; a handler that retried duplicated a prefix. Refusals now
    /// come before the first write.
    #[test]
    fn a_refused_send_wrote_nothing() {
        let mut server = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .max_total_queued(4 * MIB)
            .max_queued(32 * MIB)
            .water_marks(0, 4 * MIB)
            .bind(Discard)
            .unwrap();
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let mut reader = std::net::TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.core.conns.is_empty() {
            assert!(Instant::now() < deadline);
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        let id = server
            .core
            .conns
            .iter()
            .map(|(k, c)| c.id(k))
            .next()
            .unwrap();
        assert_eq!(
            server.core.send(id, &vec![7; 16 * MIB]),
            Err(SendError::TooLarge {
                len: 16 * MIB,
                limit: 4 * MIB
            })
        );
        assert_eq!(server.stats().total.bytes_out, 0);
        reader.set_nonblocking(true).unwrap();
        let mut buf = [0; 16];
        assert_eq!(
            std::io::Read::read(&mut reader, &mut buf).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "bytes of a refused send reached the peer"
        );
    }

    /// Issue #12, item 2, the sender shed: a connection holding the biggest queue that sends
    /// more past the cap is closed, and its send fails without writing.
    #[test]
    fn a_sender_shed_by_its_own_send_wrote_nothing_of_it() {
        let (mut server, _clients, ids) = stalled_pair(
            ServerBuilder::new()
                .max_total_queued(4 * MIB)
                .max_queued(16 * MIB)
                .water_marks(0, 4 * MIB),
            2,
        );
        let (a, b) = (ids[0], ids[1]);
        server.core.send(a, &vec![1; 3 * MIB]).unwrap();
        server.core.send(b, &vec![2; MIB / 2]).unwrap();
        let out_before = server.stats().total.bytes_out;
        assert_eq!(
            server.core.send(a, &vec![1; 2 * MIB]),
            Err(SendError::Closed)
        );
        assert_eq!(server.stats().total.bytes_out, out_before);
        assert_eq!(server.core.get(a).unwrap().life, Life::Closing);
        assert_eq!(server.core.get(b).unwrap().life, Life::Open);
    }

    /// The review of issue #12: an `accept` error of unknown meaning left that listener
    /// until its next readiness event, so its backlog waited for the next client. It is
    /// retried alone, a little later, without spinning, and the other listeners go on.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_listener_in_unknown_trouble_is_retried_alone_without_spinning() {
        let mut server = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .listen("[::1]:0")
            .bind(Discard)
            .unwrap();
        // A listening socket shut down for reading fails every accept with EINVAL.
        let broken = server.core.listeners[0].socket.as_ref().unwrap();
        socket2::SockRef::from(broken)
            .shutdown(std::net::Shutdown::Read)
            .unwrap();
        server.accept(0);
        assert!(server.core.listeners[0].retry_at.is_some());
        assert!(server.core.listeners[0].failing);
        let other = server.listeners()[1].local_addr.ip().unwrap();
        let _client = std::net::TcpStream::connect(other).unwrap();
        let started = Instant::now();
        let mut turns = 0;
        while started.elapsed() < Duration::from_millis(350) {
            server.run_once(Some(Duration::from_millis(200))).unwrap();
            turns += 1;
        }
        assert_eq!(
            server.stats().listeners[1].accepted,
            1,
            "the other listener stalled"
        );
        assert!(
            server.core.listeners[0].retry_at.is_some(),
            "still failing, still retried"
        );
        // Woken about every 100 ms by the retry, plus the accept: not a busy loop.
        assert!((3..=12).contains(&turns), "{turns} turns in 350 ms");
    }

    /// The options set on listeners reach accepted connections without a system call per
    /// accept; this pins the inheritance the reactor relies on.
    #[test]
    fn accepted_connections_inherit_nodelay_and_oobinline() {
        for nodelay in [false, true] {
            let mut server = ServerBuilder::new()
                .listen("localhost:0")
                .nodelay(nodelay)
                .bind(Discard)
                .unwrap();
            let clients: Vec<_> = server
                .listeners()
                .iter()
                .map(|l| std::net::TcpStream::connect(&l.local_addr).unwrap())
                .collect();
            let deadline = Instant::now() + Duration::from_secs(5);
            while server.core.conns.len() < clients.len() {
                assert!(Instant::now() < deadline);
                server.run_once(Some(Duration::from_millis(10))).unwrap();
            }
            for (_, conn) in &server.core.conns {
                let socket = socket2::SockRef::from(&conn.stream);
                assert_eq!(socket.tcp_nodelay().unwrap(), nodelay, "{}", conn.peer);
                assert!(socket.out_of_band_inline().unwrap(), "{}", conn.peer);
            }
        }
    }

    /// Queues 4 MiB for the first connection; sends nothing to the others.
    struct FirstGetsABurst(bool);

    impl Handler for FirstGetsABurst {
        type State = ();
        fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
            if !std::mem::replace(&mut self.0, true) {
                ctx.send(conn, &vec![1u8; 4 << 20]).unwrap();
            }
        }
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }

    #[test]
    fn writable_interest_is_registered_only_while_output_is_queued() {
        let mut server = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .max_queued(8 << 20)
            .water_marks(0, 8 << 20)
            .bind(FirstGetsABurst(false))
            .unwrap();
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        // A small receive window, so the kernel cannot take the burst and the server queues.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut burst: std::net::TcpStream = socket.into();
        let _quiet = std::net::TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let step = |server: &mut Server<FirstGetsABurst>| {
            assert!(Instant::now() < deadline, "timed out");
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        };
        while server.core.conns.len() < 2 {
            step(&mut server);
        }
        let state = |server: &Server<FirstGetsABurst>| -> Vec<(bool, usize)> {
            server
                .core
                .conns
                .iter()
                .map(|(_, c)| (c.writable, c.out.len()))
                .collect()
        };
        let states = state(&server);
        assert!(
            states.iter().any(|&(w, q)| w && q > 0),
            "output queued without WRITABLE: {states:?}"
        );
        assert!(
            states.iter().any(|&(w, q)| !w && q == 0),
            "WRITABLE without output: {states:?}"
        );

        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 4 << 20];
            std::io::Read::read_exact(&mut burst, &mut got).unwrap();
        });
        while server.core.conns.iter().any(|(_, c)| !c.out.is_empty()) {
            step(&mut server);
        }
        reader.join().unwrap();
        let states = state(&server);
        assert!(
            states.iter().all(|&(w, q)| !w && q == 0),
            "WRITABLE kept after draining: {states:?}"
        );
    }
}
