//! The reactor: one [`mio::Poll`], the listeners under their tokens, connections in a
//! [`slab::Slab`], and readiness dispatched to a [`Handler`].
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
//!   effect when its callback returns ([`Server::settle`]).
//! - Errors on one connection close that connection only; only errors of `Poll` itself end
//!   [`Server::run`].

mod builder;
mod handle;
mod limits;
mod ready;
mod timers;
pub(crate) mod token;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

pub use builder::ServerBuilder;
pub use handle::ServerHandle;
pub use limits::ConfigError;
pub(crate) use limits::Limits;
pub(crate) use timers::after as deadline_after;
pub use timers::TimerId;

use crate::addr::{normalize, ListenSpec};
use crate::conn::{CloseReason, Closing, Conn, ConnId, ConnInfo, ListenerId, OutQueue};
use crate::handler::{Context, Handler, SendError};
use crate::plan::{Skipped, SocketMode};
use token::Slot;

/// Whether a short read proves the socket drained (see the module docs): Linux TCP only.
const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// What a connection is always registered for. On Linux also PRIORITY (EPOLLPRI): `recv`
/// stops at TCP's urgent mark, so a read can come back short with data behind it, and the
/// urgent byte's event is what says "do not trust the short read" (see [`Server::dispatch`]).
#[cfg(any(target_os = "linux", target_os = "android"))]
const CONN_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const CONN_INTEREST: Interest = Interest::READABLE;

/// The most connections accepted from one listener per turn; then the listener waits for the
/// next turn, so a stream of new clients cannot starve open connections, timers or a stop.
const ACCEPT_BUDGET: usize = 128;

/// The first pause after `accept` fails for lack of descriptors or memory; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while the failure lasts.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listening socket of a running server, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The address it is bound to, normalized, with the real port.
    pub local_addr: SocketAddr,
    /// Its family and `IPV6_V6ONLY` setting, read back from the kernel.
    pub mode: SocketMode,
    /// The spec it was opened for.
    pub spec: ListenSpec,
}

impl std::fmt::Display for ListenerInfo {
    /// `ADDR (MODE)`, as in `[::]:7000 (dual-stack)`: what a server prints as
    /// `listening on …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            crate::display_addr(self.local_addr),
            self.mode
        )
    }
}

impl ListenerInfo {
    /// An address a client on this machine can connect to: the loopback address of the
    /// socket's family for a wildcard socket, the socket's own address otherwise (as
    /// [`Listener::connect_addr`](crate::Listener::connect_addr)).
    pub fn connect_addr(&self) -> SocketAddr {
        crate::listen::connect_addr_for(self.local_addr)
    }
}

/// Counters of one listener and the connections it accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections open now.
    pub open: usize,
    /// Bytes read from its connections.
    pub bytes_in: u64,
    /// Bytes written to its connections.
    pub bytes_out: u64,
    /// Connections accepted and closed at once because their peer already had its share
    /// ([`ServerBuilder::max_connections_per_peer`]).
    pub refused: u64,
}

/// The server's counters: per listener, and their sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The sums over every listener.
    pub total: ListenerStats,
    /// Bytes queued for writing, over every connection, now.
    pub queued: usize,
    /// One entry per listener, in [`Server::listeners`] order.
    pub listeners: Vec<ListenerStats>,
}

pub(crate) struct ListenerSlot {
    /// `None` once the server stopped accepting for good.
    pub(crate) socket: Option<mio::net::TcpListener>,
    pub(crate) info: ListenerInfo,
    pub(crate) stats: ListenerStats,
}

/// Everything but the poller, the handler and the read buffer: what a [`Context`] borrows.
pub(crate) struct Core {
    /// A clone of the poll's registry, so callbacks can (re)register without the `Poll`.
    pub(crate) registry: Registry,
    pub(crate) listeners: Vec<ListenerSlot>,
    pub(crate) conns: Slab<Conn>,
    /// The generation the next connection gets; wraps after 2^32 connections, by which time
    /// no stale id of that slot can plausibly be held.
    next_generation: u32,
    pub(crate) limits: Limits,
    /// Connections to read again without an event: the read budget ran out, or reading
    /// resumed. Each at most once, each read at most once per turn (see `ready.rs`).
    ready: ready::ReadyQueue,
    /// Listeners to accept from again next turn: their accept budget ran out.
    ready_listeners: Vec<usize>,
    /// Connections to close once the current callback returns, in order.
    to_close: VecDeque<(ConnId, CloseReason)>,
    /// Connections whose queue just drained, for `on_drained`.
    drained: VecDeque<ConnId>,
    pub(crate) timers: timers::Timers,
    /// Idle and first-byte deadlines: exactly one entry per open connection that has one
    /// (its key is in [`Conn::deadline`]), re-armed when it comes up and removed on close, so
    /// it grows with open connections, never with churn.
    idle: BTreeSet<(Instant, usize, u32)>,
    /// While accepting is paused because it failed (no descriptors, no memory): when to
    /// try again.
    accept_resume: Option<Instant>,
    /// The pause of the current failure episode (`None`: no episode); it doubles each time
    /// the retry fails too, so the episode is logged once, not once per retry.
    accept_backoff: Option<Duration>,
    /// Accepting stopped at `max_connections`; resumes when a connection closes.
    accept_full: bool,
    /// Set when a slot freed under `accept_full`: accept on every listener when settled.
    accept_wanted: bool,
    /// A stop was asked for and begins when the current callback returns
    /// ([`Server::settle`]), with `on_stop`.
    stop_wanted: bool,
    /// The deadline of a graceful stop in progress.
    stopping: Option<Instant>,
    /// Open connections per peer (an IPv4 address, or an IPv6 prefix), when limited.
    per_peer: HashMap<IpAddr, usize>,
    /// Bytes queued over every connection.
    total_queued: usize,
    pub(crate) now: Instant,
}

/// An embeddable, single-threaded TCP server: listeners from [`ListenSpec`]s, connections
/// served by a [`Handler`].
///
/// Build one with [`Server::builder`], then either [`run`](Server::run) it until it stops,
/// or drive it from your own loop with [`run_once`](Server::run_once).
///
/// ```
/// use dualstack::{ConnId, Context, Handler, Server};
/// use std::io::{Read, Write};
/// use std::time::Duration;
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_data(&mut self, ctx: &mut Context<'_>, conn: ConnId, data: &[u8]) {
///         let _ = ctx.send(conn, data);
///     }
/// }
///
/// let mut server = Server::builder().listen("localhost:0").bind(Echo)?;
/// let addr = server.listeners()[0].local_addr;
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
pub struct Server<H> {
    poll: Poll,
    events: Events,
    core: Core,
    handler: H,
    /// The one read buffer of the loop, lent to `on_data` for each read.
    buf: Vec<u8>,
    handle: ServerHandle,
    skipped: Vec<Skipped>,
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners())
            .field("open", &self.core.conns.len())
            .finish_non_exhaustive()
    }
}

impl<H> Server<H> {
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
}

impl Server<()> {
    /// A builder: listen specs, family policy, limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

pub(crate) fn app_token(token: Token) -> io::Result<Token> {
    token::app(token).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("application tokens must be at most {}", token::MAX_VALUE),
        )
    })
}

impl<H: Handler> Server<H> {
    pub(crate) fn new(
        listeners: Vec<crate::listen::Listener>,
        skipped: Vec<Skipped>,
        limits: Limits,
        handler: H,
    ) -> io::Result<Server<H>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let handle = ServerHandle::new(&registry)?;
        let mut slots = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let info = ListenerInfo {
                local_addr: listener.local_addr(),
                mode: listener.mode(),
                spec: listener.spec().clone(),
            };
            let mut socket = listener.into_mio();
            set_inherited_options(&socket, &limits)?;
            registry.register(&mut socket, token::listener(index), Interest::READABLE)?;
            slots.push(ListenerSlot {
                socket: Some(socket),
                info,
                stats: ListenerStats::default(),
            });
        }
        Ok(Server {
            poll,
            events: Events::with_capacity(limits.events),
            buf: vec![0; limits.read_buffer],
            core: Core {
                registry,
                listeners: slots,
                conns: Slab::new(),
                next_generation: 0,
                limits,
                ready: ready::ReadyQueue::default(),
                ready_listeners: Vec::new(),
                to_close: VecDeque::new(),
                drained: VecDeque::new(),
                timers: timers::Timers::default(),
                idle: BTreeSet::new(),
                accept_resume: None,
                accept_backoff: None,
                accept_full: false,
                accept_wanted: false,
                stop_wanted: false,
                stopping: None,
                per_peer: HashMap::new(),
                total_queued: 0,
                now: Instant::now(),
            },
            handler,
            handle,
            skipped,
        })
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
        self.core.register_app(source, token, interest)
    }

    /// Deregisters an application source.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn deregister<S: Source + ?Sized>(&mut self, source: &mut S) -> io::Result<()> {
        self.core.registry.deregister(source)
    }

    /// Whether the server has stopped: a stop was asked for and every connection is closed.
    pub fn is_stopped(&self) -> bool {
        self.core.stopping.is_some() && self.core.conns.is_empty()
    }

    /// Runs until the server is stopped (by [`Context::stop`] or [`ServerHandle::stop`]) and
    /// every connection is closed.
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
        let timeout = self.poll_timeout(timeout);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.core.now = Instant::now();
        // Connections and listeners carried over from the last turn are served after this
        // turn's events.
        let carried = self.core.ready.begin_turn();
        let carried_listeners = std::mem::take(&mut self.core.ready_listeners);
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            self.dispatch(event);
        }
        self.events = events;
        for _ in 0..carried {
            let Some(id) = self.core.ready.pop() else {
                break;
            };
            if self.core.get(id).is_some() {
                // No event says what is queued: read until WouldBlock or end of stream.
                self.read(id.key, false);
            }
        }
        for index in carried_listeners {
            self.accept(index);
        }
        self.fire_timers();
        self.check_idle();
        self.retry_accept();
        self.check_stop_deadline();
        Ok(!self.is_stopped())
    }

    fn poll_timeout(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.core.ready.is_empty() || !self.core.ready_listeners.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = [
            self.core.timers.next_deadline(),
            self.core.idle.first().map(|&(d, _, _)| d),
            self.core.accept_resume,
            self.core.stopping,
        ]
        .into_iter()
        .flatten()
        .min();
        // Read the clock only when a deadline needs it: one clock read per turn, not two.
        deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .into_iter()
            .chain(timeout)
            .min()
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match token::slot(event.token()) {
            Slot::Conn(key) => {
                if event.is_writable() {
                    self.core.flush(key);
                    self.settle();
                }
                let Some(conn) = self.core.conns.get_mut(key) else {
                    return;
                };
                let id = conn.id(key);
                if event.is_error() && !conn.wants_read() {
                    // A reset (or another socket error) on a connection that is not being
                    // read: reading would find it, but may not resume for a long time, and
                    // a dead peer must not keep its descriptor, slot and per-peer share.
                    if let Ok(Some(e)) | Err(e) = conn.stream.take_error() {
                        self.core.request_close(id, CloseReason::from_io(e));
                        self.settle();
                        return;
                    }
                }
                if self.core.ready.contains(id) {
                    // Already queued: it gets its one budget of the turn from the queue.
                    return;
                }
                if event.is_read_closed() || event.is_error() || event.is_priority() {
                    // End of stream (or an error) is already queued: read until it shows. Or
                    // urgent data arrived, and a read that stops at its mark is short with
                    // more behind it, so a short read proves nothing either.
                    self.read(key, false);
                } else if event.is_readable() {
                    self.read(key, SHORT_READ_DRAINS);
                }
            }
            Slot::Listener(index) => self.accept(index),
            Slot::Waker => {
                if self.handle.take_stop() {
                    self.core.request_stop();
                }
                self.handler.on_wake(&mut Context::new(&mut self.core));
                self.settle();
            }
            Slot::App(token) => {
                self.handler
                    .on_event(&mut Context::new(&mut self.core), token, event);
                self.settle();
            }
        }
    }

    /// Reads from connection `key` until `WouldBlock`, its budget runs out, or the handler
    /// stops it. With `short_read_drains`, a read shorter than the buffer also ends it: only
    /// when the event did not report end-of-stream, which a short read says nothing about.
    fn read(&mut self, key: usize, short_read_drains: bool) {
        let mut budget = self.core.limits.read_budget;
        loop {
            let Some(conn) = self.core.conns.get_mut(key) else {
                return;
            };
            let id = conn.id(key);
            if !conn.wants_read() {
                conn.read_pending = conn.closing == Closing::No && !conn.read_closed;
                return;
            }
            if budget == 0 {
                conn.read_pending = true;
                self.core.ready.push(id);
                return;
            }
            match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    conn.read_closed = true;
                    conn.read_pending = false;
                    log::debug!("{id}: peer closed its side");
                    self.handler
                        .on_peer_closed(&mut Context::new(&mut self.core), id);
                    self.settle();
                    return;
                }
                Ok(n) => {
                    conn.last_active = self.core.now;
                    conn.first_byte = true;
                    let listener = conn.listener as usize;
                    self.core.listeners[listener].stats.bytes_in += n as u64;
                    let drained = short_read_drains && n < self.buf.len();
                    self.handler
                        .on_data(&mut Context::new(&mut self.core), id, &self.buf[..n]);
                    self.settle();
                    if drained {
                        if let Some(conn) = self.core.conns.get_mut(key) {
                            conn.read_pending = false;
                        }
                        return;
                    }
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.read_pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.core.request_close(id, CloseReason::from_io(e));
                    self.settle();
                    return;
                }
            }
        }
    }

    /// Accepts on listener `index` until `WouldBlock`, the connection limit, a shortage of
    /// descriptors or memory (then accepting pauses for a growing interval), or the accept
    /// budget (then the listener is served again next turn).
    fn accept(&mut self, index: usize) {
        for _ in 0..ACCEPT_BUDGET {
            if self.core.accept_resume.is_some() || self.core.stopping.is_some() {
                return;
            }
            if let Some(max) = self.core.limits.max_connections {
                if self.core.conns.len() >= max {
                    if !self.core.accept_full {
                        log::debug!("{max} connections open: accepting paused until one closes");
                    }
                    self.core.accept_full = true;
                    return;
                }
            }
            let Some(listener) = self.core.listeners[index].socket.as_ref() else {
                return;
            };
            let result = listener.accept();
            let accepting = match &result {
                Ok(_) => true,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            };
            if accepting && self.core.accept_backoff.is_some() {
                self.core.accept_backoff = None;
                log::info!("accepting connections again");
            }
            match result {
                Ok((stream, peer)) => self.open(index, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match accept_failure(&e) {
                    AcceptFailure::ThisConnection => log::debug!(
                        "accept on {}: {e}",
                        self.core.listeners[index].info.local_addr
                    ),
                    AcceptFailure::Exhausted => {
                        self.core.pause_accepting(e);
                        return;
                    }
                    AcceptFailure::Listener => {
                        // Not a shortage, and not one connection's fault: this listener is
                        // in trouble. Try again on its next readiness event, without spinning
                        // and without holding back the other listeners.
                        log::warn!(
                            "accept on {}: {e}",
                            self.core.listeners[index].info.local_addr
                        );
                        return;
                    }
                },
            }
        }
        if !self.core.ready_listeners.contains(&index) {
            self.core.ready_listeners.push(index);
        }
    }

    fn open(&mut self, index: usize, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        let core = &mut self.core;
        let peer = normalize(peer);
        if let Some(max) = core.limits.max_per_peer {
            let count = core
                .per_peer
                .entry(peer_key(peer.ip(), core.limits.ipv6_peer_prefix))
                .or_insert(0);
            if *count >= max {
                // Debug, not warn: a hostile peer must not be able to flood the log either.
                log::debug!(
                    "{} refused: it already has {max} connections",
                    crate::display_addr(peer)
                );
                core.listeners[index].stats.refused += 1;
                return;
            }
            *count += 1;
        }
        let entry = core.conns.vacant_entry();
        let key = entry.key();
        let registered = if key > token::MAX_VALUE {
            Err(io::Error::other("no token left for it"))
        } else {
            core.registry
                .register(&mut stream, token::conn(key), CONN_INTEREST)
        };
        if let Err(e) = registered {
            log::warn!("connection from {peer} dropped: {e}");
            core.forget_peer(peer.ip());
            return;
        }
        let generation = core.next_generation;
        core.next_generation = generation.wrapping_add(1);
        let deadline = [core.limits.idle_timeout, core.limits.first_byte_timeout]
            .into_iter()
            .flatten()
            .min()
            .map(|timeout| timers::after(core.now, timeout));
        if let Some(due) = deadline {
            core.idle.insert((due, key, generation));
        }
        entry.insert(Conn {
            stream,
            generation,
            listener: index as u32,
            peer,
            out: OutQueue::default(),
            last_active: core.now,
            opened: core.now,
            first_byte: false,
            deadline,
            writable: false,
            paused: false,
            backpressure: false,
            read_pending: false,
            read_closed: false,
            shutdown_write: false,
            write_closed: false,
            closing: Closing::No,
        });
        let stats = &mut core.listeners[index].stats;
        stats.accepted += 1;
        stats.open += 1;
        let id = ConnId { key, generation };
        log::debug!(
            "{id}: accepted from {} on {}",
            crate::display_addr(peer),
            core.listeners[index].info.local_addr
        );
        let info = ConnInfo {
            listener: ListenerId(index),
            peer,
        };
        self.handler
            .on_open(&mut Context::new(&mut self.core), id, &info);
        self.settle();
    }

    /// Carries out what callbacks asked for: closes (each reported to `on_close`), drained
    /// notifications, and accepting again once a slot freed under `max_connections`.
    fn settle(&mut self) {
        loop {
            if let Some((id, reason)) = self.core.to_close.pop_front() {
                if self.core.remove(id, &reason) {
                    self.handler
                        .on_close(&mut Context::new(&mut self.core), id, &reason);
                }
            } else if let Some(id) = self.core.drained.pop_front() {
                if self.core.get(id).is_some() {
                    self.handler
                        .on_drained(&mut Context::new(&mut self.core), id);
                }
            } else {
                break;
            }
        }
        if self.core.accept_wanted {
            self.core.accept_wanted = false;
            for index in 0..self.core.listeners.len() {
                self.accept(index);
            }
        }
        if self.core.stop_wanted {
            self.core.stop_wanted = false;
            self.begin_stop();
        }
    }

    /// The graceful stop: no more accepting, pending timers cancelled, then `on_stop` (the
    /// application's last chance to send while every connection is still open), then every
    /// connection closes once its output is written, within the shutdown timeout.
    fn begin_stop(&mut self) {
        log::debug!("stopping: {} connections to close", self.core.conns.len());
        self.core.stop_listening();
        self.handler.on_stop(&mut Context::new(&mut self.core));
        self.settle();
        self.core.close_all_after_flush();
        self.settle();
    }

    /// Fires the timers that were due when the turn began; one set meanwhile (a zero delay
    /// re-armed from `on_timer`) waits for the next turn, after a poll.
    fn fire_timers(&mut self) {
        let mark = self.core.timers.mark();
        while let Some((timer, value)) = self.core.timers.pop_due(self.core.now, mark) {
            self.handler
                .on_timer(&mut Context::new(&mut self.core), timer, value);
            self.settle();
        }
    }

    fn check_idle(&mut self) {
        let limits = self.core.limits;
        if limits.idle_timeout.is_none() && limits.first_byte_timeout.is_none() {
            return;
        }
        let now = self.core.now;
        while let Some(&(deadline, key, generation)) = self.core.idle.first() {
            if deadline > now {
                break;
            }
            self.core.idle.pop_first();
            let id = ConnId { key, generation };
            let Some(conn) = self.core.get_mut(id) else {
                debug_assert!(false, "{id} closed with its deadline still armed");
                continue;
            };
            conn.deadline = None;
            let first_byte_due = limits
                .first_byte_timeout
                .filter(|_| !conn.first_byte)
                .map(|t| timers::after(conn.opened, t));
            let idle_due = limits
                .idle_timeout
                .map(|t| timers::after(conn.last_active, t));
            if first_byte_due.is_some_and(|due| due <= now) {
                log::debug!(
                    "{id}: nothing received within {:?}",
                    limits.first_byte_timeout.unwrap_or_default()
                );
                self.core.request_close(id, CloseReason::FirstByteTimeout);
            } else if idle_due.is_some_and(|due| due <= now) {
                log::debug!(
                    "{id}: idle for {:?}",
                    limits.idle_timeout.unwrap_or_default()
                );
                self.core.request_close(id, CloseReason::IdleTimeout);
            } else if let Some(due) = [first_byte_due, idle_due].into_iter().flatten().min() {
                conn.deadline = Some(due);
                self.core.idle.insert((due, key, generation));
            }
        }
        self.settle();
    }

    fn retry_accept(&mut self) {
        match self.core.accept_resume {
            Some(at) if at <= self.core.now => self.core.accept_resume = None,
            _ => return,
        }
        for index in 0..self.core.listeners.len() {
            self.accept(index);
        }
    }

    fn check_stop_deadline(&mut self) {
        let Some(deadline) = self.core.stopping else {
            return;
        };
        if self.core.now < deadline {
            return;
        }
        let ids: Vec<ConnId> = self.core.conns.iter().map(|(k, c)| c.id(k)).collect();
        for id in ids {
            let queued = self.core.get(id).map_or(0, |c| c.out.len());
            if queued > 0 {
                log::warn!("{id}: shutdown timeout: {queued} queued bytes not delivered");
            }
            self.core.request_close(id, CloseReason::Shutdown);
        }
        self.settle();
    }
}

/// Options set on a listening socket for the connections it accepts, which inherit them
/// (Linux, the BSDs, macOS and Windows copy socket and TCP options to accepted sockets), so
/// they cost no system call per connection:
///
/// - `SO_OOBINLINE` (RFC 6093 asks for it): TCP urgent data stays in the byte stream, in
///   order, so no byte a peer sent is left out of what the handler sees;
/// - `TCP_NODELAY` when asked for.
fn set_inherited_options(listener: &mio::net::TcpListener, limits: &Limits) -> io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    socket.set_out_of_band_inline(true)?;
    if limits.nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    Ok(())
}

/// The group a peer address is counted in for the per-peer limit: an IPv4 address, or the
/// IPv6 prefix of `prefix` bits (a /64 is what one host or site usually gets).
///
/// An IPv6 address that carries an IPv4 one counts as that IPv4 address, since that is the
/// host behind it: NAT64 and SIIT prefixes (`64:ff9b::/96`, RFC 6052, and the local-use
/// `64:ff9b:1::/48`, RFC 8215, in its /96 form), 6to4 (`2002::/16`, RFC 3056) and Teredo
/// (`2001::/32`, RFC 4380, the client's public address). Otherwise two IPv4 hosts behind
/// one translator would share one /64 and one share.
pub(crate) fn peer_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_ipv4(a) {
                return IpAddr::V4(v4);
            }
            let bits = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// The IPv4 address an IPv6 address embeds by a well-known translation or tunnelling
/// scheme (see [`peer_key`]).
fn embedded_ipv4(a: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let bits = u128::from(a);
    let seg = a.segments();
    let low32 = std::net::Ipv4Addr::from(bits as u32);
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low32); // 64:ff9b::/96
    }
    if seg[..3] == [0x0064, 0xff9b, 0x0001] && seg[3..6] == [0, 0, 0] {
        return Some(low32); // 64:ff9b:1::/48, /96 form
    }
    if seg[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::from((bits >> 80) as u32)); // 6to4: bits 16..48
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        return Some(std::net::Ipv4Addr::from(!(bits as u32))); // Teredo: client, inverted
    }
    None
}

/// The open connection `id` names, borrowing only the slab (so other fields stay usable).
fn conn_mut(conns: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.key)
        .filter(|c| c.generation == id.generation)
}

/// What an `accept` error means for accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptFailure {
    /// One connection failed (reset or aborted before it was taken, or a network error
    /// pending on it, which Linux reports through `accept`): take the next one.
    ThisConnection,
    /// The process or the system ran out of descriptors or memory: every listener pauses
    /// for a growing interval, since every accept would fail the same way.
    Exhausted,
    /// Anything else: this listener waits for its next readiness event.
    Listener,
}

fn accept_failure(e: &io::Error) -> AcceptFailure {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::TimedOut
        | io::ErrorKind::PermissionDenied => return AcceptFailure::ThisConnection,
        io::ErrorKind::OutOfMemory => return AcceptFailure::Exhausted,
        _ => {}
    }
    #[cfg(unix)]
    {
        // accept(2) on Linux: "already-pending network errors on the new socket" come back
        // as these; treat them like EAGAIN and retry.
        match e.raw_os_error() {
            Some(
                libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::EOPNOTSUPP
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EHOSTUNREACH,
            ) => return AcceptFailure::ThisConnection,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Some(libc::ENONET) => return AcceptFailure::ThisConnection,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                return AcceptFailure::Exhausted
            }
            _ => {}
        }
    }
    #[cfg(windows)]
    {
        const WSAEMFILE: i32 = 10024;
        const WSAENOBUFS: i32 = 10055;
        if matches!(e.raw_os_error(), Some(WSAEMFILE | WSAENOBUFS)) {
            return AcceptFailure::Exhausted;
        }
    }
    AcceptFailure::Listener
}

impl Core {
    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.key)
            .filter(|c| c.generation == id.generation)
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        conn_mut(&mut self.conns, id)
    }

    pub(crate) fn stats(&self) -> Stats {
        let listeners: Vec<ListenerStats> = self.listeners.iter().map(|l| l.stats).collect();
        let mut total = ListenerStats::default();
        for l in &listeners {
            total.accepted += l.accepted;
            total.open += l.open;
            total.bytes_in += l.bytes_in;
            total.bytes_out += l.bytes_out;
            total.refused += l.refused;
        }
        Stats {
            total,
            listeners,
            queued: self.total_queued,
        }
    }

    pub(crate) fn register_app<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.register(source, app_token(token)?, interest)
    }

    pub(crate) fn local_addr(&self, id: ConnId) -> io::Result<SocketAddr> {
        let conn = self
            .get(id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let listener = self.listeners[conn.listener as usize].info.local_addr;
        if listener.ip().is_unspecified() {
            conn.stream.local_addr().map(normalize)
        } else {
            Ok(listener)
        }
    }

    /// The reason a close the handler asked for gets.
    pub(crate) fn local_close_reason(&self, id: ConnId) -> CloseReason {
        match self.get(id) {
            _ if self.stopping.is_some() => CloseReason::Shutdown,
            Some(c) if c.read_closed => CloseReason::PeerClosed,
            _ => CloseReason::Closed,
        }
    }

    /// Puts `id` on the close list. Its queued output is dropped here, not when it is
    /// removed, so the total stops counting it at once (a shed later in the same callback
    /// must not close another connection for bytes that are already gone).
    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = conn_mut(&mut self.conns, id) {
            if conn.closing != Closing::Now {
                conn.closing = Closing::Now;
                let dropped = conn.out.clear();
                self.total_queued -= dropped;
                if dropped > 0 {
                    log::debug!("{id}: closing with {dropped} queued bytes undelivered");
                }
                self.to_close.push_back((id, reason));
            }
        }
    }

    pub(crate) fn close_after_flush(&mut self, id: ConnId) {
        let Some(conn) = self.get_mut(id) else { return };
        if conn.out.is_empty() {
            let reason = self.local_close_reason(id);
            self.request_close(id, reason);
        } else if conn.closing == Closing::No {
            conn.closing = Closing::AfterFlush;
        }
    }

    pub(crate) fn shutdown_write(&mut self, id: ConnId) {
        let Some(conn) = self.get_mut(id) else { return };
        conn.shutdown_write = true;
        if conn.out.is_empty() && !conn.write_closed {
            conn.write_closed = true;
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                self.request_close(id, CloseReason::from_io(e));
            }
        }
    }

    pub(crate) fn set_paused(&mut self, id: ConnId, paused: bool) {
        let Some(conn) = self.get_mut(id) else { return };
        conn.paused = paused;
        if !paused && conn.read_pending && conn.wants_read() {
            self.ready.push(id);
        }
    }

    /// Writes `data` to `id` and queues what the kernel does not take.
    ///
    /// Every check that can refuse the bytes runs before the first byte is written, so an
    /// `Err` always means that nothing of `data` reached the socket.
    pub(crate) fn send(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        let limits = self.limits;
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Err(SendError::Closed);
        };
        if conn.closing != Closing::No || conn.shutdown_write {
            return Err(SendError::Closed);
        }
        if data.is_empty() {
            return Ok(());
        }
        let queued = conn.out.len();
        if queued + data.len() > limits.max_queued {
            return Err(SendError::QueueFull {
                queued,
                limit: limits.max_queued,
            });
        }
        if let Some(cap) = limits.max_total_queued {
            if data.len() > cap {
                return Err(SendError::TooLarge {
                    len: data.len(),
                    limit: cap,
                });
            }
        }
        let mut rest = data;
        if queued == 0 {
            // One write: if the kernel takes only part, it is full and a second write would
            // only return WouldBlock.
            loop {
                match io::Write::write(&mut conn.stream, rest) {
                    Ok(n) => {
                        rest = &rest[n..];
                        conn.last_active = self.now;
                        let listener = conn.listener as usize;
                        self.listeners[listener].stats.bytes_out += n as u64;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Nothing was written: the error is the whole answer.
                        self.request_close(id, CloseReason::from_io(e));
                        return Err(SendError::Closed);
                    }
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
        if let Some(cap) = limits.max_total_queued {
            if self.total_queued + rest.len() > cap {
                // `rest.len() <= cap`, so closing every other holder always makes room. The
                // sender is a candidate only while it holds a queue, and then this call has
                // written nothing yet: if it is shed, `Err` still means "not one byte".
                self.shed(cap - rest.len());
                if self.get(id).map_or(true, |c| c.closing != Closing::No) {
                    debug_assert_eq!(rest.len(), data.len(), "shed after writing");
                    return Err(SendError::Closed);
                }
            }
        }
        let conn = conn_mut(&mut self.conns, id).expect("checked above");
        conn.out.push(rest);
        self.total_queued += rest.len();
        if conn.out.len() > limits.high_water && !conn.backpressure {
            log::debug!("{id}: {} bytes queued: reading paused", conn.out.len());
            conn.backpressure = true;
        }
        self.after_write(id, false);
        Ok(())
    }

    /// Writes what is queued for connection `key` until the kernel stops taking it.
    pub(crate) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let id = conn.id(key);
        if conn.closing == Closing::Now || conn.out.is_empty() {
            return;
        }
        let listener = conn.listener as usize;
        let mut failed = None;
        while !conn.out.is_empty() {
            match conn.out.write_to(&mut conn.stream) {
                Ok(0) => {
                    failed = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => {
                    // Counted at once: a later error in this loop must not leave the total
                    // holding bytes that already left.
                    self.total_queued -= n;
                    self.listeners[listener].stats.bytes_out += n as u64;
                    conn.last_active = self.now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => self.request_close(id, CloseReason::from_io(e)),
            None => self.after_write(id, true),
        }
    }

    /// Brings interest, backpressure and pending closes in line with the queue of `id`.
    /// `flushed`: the queue was written from (so it may just have drained).
    fn after_write(&mut self, id: ConnId, flushed: bool) {
        let limits = self.limits;
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return;
        };
        let want_writable = !conn.out.is_empty();
        if want_writable != conn.writable {
            let interest = if want_writable {
                CONN_INTEREST | Interest::WRITABLE
            } else {
                CONN_INTEREST
            };
            if let Err(e) =
                self.registry
                    .reregister(&mut conn.stream, token::conn(id.key), interest)
            {
                self.request_close(id, CloseReason::Error(e));
                return;
            }
            conn.writable = want_writable;
        }
        if conn.backpressure && conn.out.len() <= limits.low_water {
            conn.backpressure = false;
            log::debug!(
                "{id}: queue down to {} bytes: reading again",
                conn.out.len()
            );
            if conn.read_pending && conn.wants_read() {
                self.ready.push(id);
            }
        }
        if !conn.out.is_empty() {
            return;
        }
        if conn.shutdown_write && !conn.write_closed {
            conn.write_closed = true;
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                self.request_close(id, CloseReason::from_io(e));
                return;
            }
        }
        if conn.closing == Closing::AfterFlush {
            let reason = self.local_close_reason(id);
            self.request_close(id, reason);
        } else if flushed {
            self.drained.push_back(id);
        }
    }

    /// Removes a connection the close list named; returns whether it was there.
    fn remove(&mut self, id: ConnId, reason: &CloseReason) -> bool {
        if self.get(id).is_none() {
            return false;
        }
        let mut conn = self.conns.remove(id.key);
        if let Some(due) = conn.deadline {
            self.idle.remove(&(due, id.key, id.generation));
        }
        // epoll and kqueue drop a descriptor from their sets when it is closed (epoll(7),
        // kqueue(2)), so there the deregister syscall would only add cost; elsewhere mio
        // requires it.
        if !cfg!(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        )) {
            let _ = self.registry.deregister(&mut conn.stream);
        }
        debug_assert!(conn.out.is_empty(), "request_close drops the queue");
        self.forget_peer(conn.peer.ip());
        log::debug!("{id}: closed ({reason})");
        self.listeners[conn.listener as usize].stats.open -= 1;
        if self.accept_full {
            self.accept_full = false;
            self.accept_wanted = true;
        }
        true
    }

    /// One connection of `ip`'s peer group closed (or never opened).
    fn forget_peer(&mut self, ip: IpAddr) {
        if self.limits.max_per_peer.is_none() {
            return;
        }
        let key = peer_key(ip, self.limits.ipv6_peer_prefix);
        if let Some(count) = self.per_peer.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&key);
            }
        }
    }

    /// The total queued output is about to pass its cap: close the connections holding the
    /// most until at most `target` bytes stay queued, and not one more. A scan of every
    /// connection, but only when the cap is reached. Connections already closing hold no
    /// queue (see [`request_close`](Core::request_close)), so they are neither counted nor
    /// chosen.
    fn shed(&mut self, target: usize) {
        let mut holders: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.out.is_empty())
            .map(|(k, c)| (c.out.len(), c.id(k)))
            .collect();
        holders.sort_unstable_by_key(|h| Reverse(h.0));
        let mut closed = Vec::new();
        for (queued, id) in holders {
            if self.total_queued <= target {
                break;
            }
            closed.push((id, queued));
            self.request_close(id, CloseReason::Overloaded);
        }
        log::warn!(
            "queued output passed its limit: closing {} connections holding the most ({})",
            closed.len(),
            closed
                .iter()
                .map(|(id, q)| format!("{id}: {q} bytes"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// Accepting failed for lack of descriptors or memory: stop for a while rather than
    /// spin, keep serving open connections, and try again.
    fn pause_accepting(&mut self, e: io::Error) {
        let pause = match self.accept_backoff {
            None => {
                log::warn!(
                    "accept failed: {e}; serving open connections, accepting again in {ACCEPT_BACKOFF_MIN:?} (backing off to {ACCEPT_BACKOFF_MAX:?} while it lasts)"
                );
                ACCEPT_BACKOFF_MIN
            }
            Some(pause) => (pause * 2).min(ACCEPT_BACKOFF_MAX),
        };
        self.accept_backoff = Some(pause);
        self.accept_resume = Some(timers::after(self.now, pause));
    }

    /// Asks for a graceful stop; it begins when the current callback returns. Asking again
    /// changes nothing.
    pub(crate) fn request_stop(&mut self) {
        if self.stopping.is_none() {
            self.stop_wanted = true;
        }
    }

    /// The first half of a stop: the deadline is set, the listening sockets are closed and
    /// the handler's pending timers are cancelled.
    fn stop_listening(&mut self) {
        self.stopping = Some(timers::after(self.now, self.limits.shutdown_timeout));
        for slot in &mut self.listeners {
            if let Some(mut socket) = slot.socket.take() {
                let _ = self.registry.deregister(&mut socket);
            }
        }
        self.timers.clear();
    }

    /// The second half of a stop: every connection closes once its output is written.
    fn close_all_after_flush(&mut self) {
        let ids: Vec<ConnId> = self.conns.iter().map(|(k, c)| c.id(k)).collect();
        for id in ids {
            self.close_after_flush(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_are_counted_per_prefix_and_ipv4_per_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            peer_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            peer_key(ip("2001:db8:1:2:bbbb::9"), 64),
            peer_key(ip("2001:db8:1:2::7"), 64)
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:3::1"), 64),
            peer_key(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(peer_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(peer_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(peer_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
    }

    /// Issue #13, item 4: clients from 64:ff9b::1.2.3.4 and 64:ff9b::5.6.7.8 (different
    /// IPv4 hosts behind NAT64) shared one /64 key, so the second was refused.
    #[test]
    fn ipv6_addresses_that_embed_ipv4_count_as_that_ipv4_host() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (v6, v4) in [
            ("64:ff9b::1.2.3.4", "1.2.3.4"),
            ("64:ff9b::5.6.7.8", "5.6.7.8"),
            ("64:ff9b:1::1.2.3.4", "1.2.3.4"),
            ("2002:c000:0207::1", "192.0.2.7"),
            ("2002:c000:0207:ffff::2", "192.0.2.7"),
            // Teredo: server 65.54.227.120, client 192.0.2.45 obfuscated (RFC 4380 §4).
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),
        ] {
            assert_eq!(peer_key(ip(v6), 64), ip(v4), "{v6}");
        }
        assert_ne!(
            peer_key(ip("64:ff9b::1.2.3.4"), 64),
            peer_key(ip("64:ff9b::5.6.7.8"), 64)
        );
        // Not a translation prefix: counted by /64 as before.
        assert_eq!(peer_key(ip("64:ff9b:2::1.2.3.4"), 64), ip("64:ff9b:2::"));
        assert_eq!(peer_key(ip("2001:db8::1"), 64), ip("2001:db8::"));
    }

    struct Discard;

    impl Handler for Discard {
        fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
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
        let addr = server.listeners()[0].local_addr;
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
            server.core.idle.len(),
            1,
            "deadlines of closed connections are still armed"
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
        let addr = server.listeners()[0].local_addr;
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
                .water_marks(0, 16 * MIB),
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
        assert_eq!(server.core.get(a).unwrap().closing, Closing::Now);
        assert_eq!(
            server.core.get(b).unwrap().closing,
            Closing::No,
            "B was shed"
        );
        assert_eq!(
            server.core.get(c).unwrap().closing,
            Closing::No,
            "C was shed"
        );
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
            .water_marks(0, 32 * MIB)
            .bind(Discard)
            .unwrap();
        let addr = server.listeners()[0].local_addr;
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
                .water_marks(0, 16 * MIB),
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
        assert_eq!(server.core.get(a).unwrap().closing, Closing::Now);
        assert_eq!(server.core.get(b).unwrap().closing, Closing::No);
    }

    /// Issue #12, item 12: an error that concerns one connection (EPROTO, ENETUNREACH, …)
    /// paused accepting on every listener; only exhaustion may.
    #[cfg(unix)]
    #[test]
    fn only_exhaustion_pauses_accepting() {
        use AcceptFailure::*;
        let os = io::Error::from_raw_os_error;
        for (e, expected) in [
            (io::ErrorKind::ConnectionAborted.into(), ThisConnection),
            (io::ErrorKind::ConnectionReset.into(), ThisConnection),
            (os(libc::EPROTO), ThisConnection),
            (os(libc::ENETUNREACH), ThisConnection),
            (os(libc::EHOSTUNREACH), ThisConnection),
            (os(libc::ETIMEDOUT), ThisConnection),
            (os(libc::EPERM), ThisConnection),
            (os(libc::EMFILE), Exhausted),
            (os(libc::ENFILE), Exhausted),
            (os(libc::ENOBUFS), Exhausted),
            (os(libc::ENOMEM), Exhausted),
            (os(libc::EBADF), Listener),
            (os(libc::EINVAL), Listener),
        ] {
            assert_eq!(accept_failure(&e), expected, "{e}");
        }
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
                .map(|l| std::net::TcpStream::connect(l.local_addr).unwrap())
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
        fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &ConnInfo) {
            if !std::mem::replace(&mut self.0, true) {
                ctx.send(conn, &vec![1u8; 4 << 20]).unwrap();
            }
        }
        fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &[u8]) {}
    }

    #[test]
    fn writable_interest_is_registered_only_while_output_is_queued() {
        let mut server = ServerBuilder::new()
            .listen("127.0.0.1:0")
            .max_queued(8 << 20)
            .water_marks(0, 8 << 20)
            .bind(FirstGetsABurst(false))
            .unwrap();
        let addr = server.listeners()[0].local_addr;
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
