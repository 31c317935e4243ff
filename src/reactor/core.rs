//! [`Core`]: everything of a server but the poller, the handler, the read buffer and the
//! handler's per-connection values. The server's loop (`mod.rs`, `turn.rs`, `accept.rs`)
//! reaches into its fields; a [`Context`] reaches it only through the `pub(crate)` methods
//! here and in `output.rs`.
//!
//! Why the split (smoltcp's `Interface` / `InterfaceInner` is the same idea): a handler
//! callback receives `&mut Context`, which borrows the `Core` and the handler's values while
//! the `Server` still owns the handler and the poller; the borrow checker then guarantees
//! that a callback can never re-enter the loop, and that the loop's own state (events, the
//! read buffer) is out of its reach. The handler's values are a slab of their own, beside
//! the connections, so a callback can hold its value for one connection and send at once
//! ([`Context::split`]).
//!
//! [`Context`]: crate::Context
//! [`Context::split`]: crate::Context::split

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::backoff::AcceptBackoff;
use super::deadlines::Deadlines;
use super::limits::Limits;
use super::peers::PeerCounts;
use super::ready::ReadyQueue;
use super::stats::{ListenerInfo, ListenerStats, Stats};
use super::timers::{self, Due, TimerId, Timers};
use super::token;
use crate::conn::{CloseReason, Conn, ConnId, Holder, Life, ListenerId, Recv};
use crate::socket::{ListenAddr, ListenSocket, Peer};

/// One listening socket of the server.
pub(crate) struct ListenerSlot {
    /// Which of the server's equal specs its spec is (0: the first): with the spec, what
    /// names the socket in a hand-over.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(super) occurrence: usize,
    /// `None` once the server stopped accepting for good.
    pub(super) socket: Option<ListenSocket>,
    pub(super) info: ListenerInfo,
    pub(super) stats: ListenerStats,
    /// After an `accept` error of unknown meaning: when to try this listener again.
    pub(super) retry_at: Option<Instant>,
    /// Its `accept` has failed in an unknown way since it last worked: the trouble was
    /// logged at warn once, and is at debug until it ends.
    pub(super) failing: bool,
    /// Its PROXY protocol settings: every connection begins with a header.
    pub(super) proxy: Option<super::proxy::ProxyProtocol>,
    /// A TLS listener's settings (replaced by a reload, for new handshakes only).
    pub(super) tls: Option<crate::tls::Acceptor>,
    /// What setting the options its connections inherit found (MPTCP: SO_OOBINLINE is set
    /// per connection).
    pub(super) accepting: crate::socket::Accepting,
}

/// Everything but the poller, the handler, the read buffer and the handler's values: what
/// a `Context` borrows, with those values.
pub(crate) struct Core {
    /// A clone of the poll's registry, so callbacks can (re)register without the `Poll`.
    pub(super) registry: Registry,
    pub(super) listeners: Vec<ListenerSlot>,
    pub(super) conns: Slab<Conn>,
    /// The generation the next connection gets; wraps after 2^32 connections, by which time
    /// no stale id of that slot can plausibly be held.
    pub(super) next_generation: u32,
    pub(super) limits: Limits,
    /// Connections to read again without an event (see `ready.rs`).
    pub(super) ready: ReadyQueue,
    /// Listeners to accept from at the turn's accepting point (see `Server::turn`): an
    /// event said so, a slot freed under `max_connections`, or their accept budget ran out
    /// last turn.
    pub(super) ready_listeners: Vec<usize>,
    /// Connections to close once the current callback returns, in order.
    pub(super) to_close: VecDeque<(ConnId, CloseReason)>,
    /// Connections whose queue drained after it had backed up, for `on_drained`.
    pub(super) drained: VecDeque<ConnId>,
    /// Connections with output sent but not written yet: written once each, when the
    /// reactor is done reading them this turn, or at the turn's end (see `output.rs`).
    pub(super) dirty: Vec<ConnId>,
    /// How many things happened so far ([`news`](Core::news)): kept input a handler refused
    /// is offered again alone only once this moved on since (see `Conn::refused`), so
    /// handlers that only resume each other cannot spin the loop.
    pub(super) epoch: u64,
    /// Connections whose refused input waits for `epoch` to move (see `read_handed`).
    pub(super) owed: Vec<ConnId>,
    pub(super) timers: Timers,
    pub(super) deadlines: Deadlines,
    pub(super) backoff: AcceptBackoff,
    /// Accepting stopped at `max_connections`; resumes when a connection closes.
    pub(super) accept_full: bool,
    /// Which listener is first offered a slot freed under `max_connections` (rotates).
    pub(super) accept_rotation: usize,
    /// A stop was asked for and begins when the current callback returns.
    pub(super) stop_wanted: bool,
    /// The deadline of a graceful stop in progress.
    pub(super) stopping: Option<Instant>,
    pub(super) peers: PeerCounts,
    /// Bytes queued over every connection (closing ones hold none: see `request_close`).
    pub(super) total_queued: usize,
    /// Written chunks of output queues, kept for the next sends.
    pub(super) spares: crate::conn::Spares,
    /// Bytes of input kept over every connection (as they were after each `on_data`).
    pub(super) total_kept: usize,
    /// The time the current turn started.
    pub(super) now: Instant,
    /// The connection whose input `on_data` is looking at, if it is.
    pub(super) serving: Option<ConnId>,
    /// Set when that connection's input is held during the call (its output passed the
    /// high-water mark, or the handler paused or closed it): its `Input` shows nothing more.
    /// Shared with the `Input`, which the reactor lends beside the `Context` (an `Arc`, so
    /// that a `Server` stays `Send`; one thread only ever touches it).
    pub(super) held: Arc<AtomicBool>,
    /// TLS handshake steps taken this turn (see `tls::HANDSHAKES_PER_TURN`).
    pub(super) handshakes: usize,
    /// Threads that take handshake steps off the loop, if the server has them.
    pub(super) tls_pool: Option<crate::tls::Pool>,
    /// A hand-over whose successor is starting.
    pub(super) hand_over: Option<crate::handover::Pending>,
    /// The listening sockets handed to a successor: no longer accepted from, kept open
    /// until the server is dropped.
    pub(super) retired: Vec<ListenSocket>,
    /// Handed over: the connections may go on until then, and the graceful stop follows.
    pub(super) draining: Option<Instant>,
}

impl Core {
    pub(super) fn new(registry: Registry, listeners: Vec<ListenerSlot>, limits: Limits) -> Core {
        Core {
            registry,
            listeners,
            conns: Slab::new(),
            next_generation: 0,
            ready: ReadyQueue::default(),
            ready_listeners: Vec::new(),
            to_close: VecDeque::new(),
            drained: VecDeque::new(),
            dirty: Vec::new(),
            epoch: 0,
            owed: Vec::new(),
            timers: Timers::default(),
            deadlines: Deadlines::new(limits.idle_timeout, limits.first_byte_timeout),
            backoff: AcceptBackoff::default(),
            accept_full: false,
            accept_rotation: 0,
            stop_wanted: false,
            stopping: None,
            peers: PeerCounts::new(limits.max_per_peer, limits.ipv6_peer_prefix),
            total_queued: 0,
            spares: Default::default(),
            total_kept: 0,
            now: Instant::now(),
            serving: None,
            held: Arc::new(AtomicBool::new(false)),
            handshakes: 0,
            tls_pool: None,
            hand_over: None,
            retired: Vec::new(),
            draining: None,
            limits,
        }
    }

    /// The connection `id` names, if it is still there (open, or closing during its
    /// `on_close`).
    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.key)
            .filter(|c| c.generation == id.generation)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        conn_mut(&mut self.conns, id)
    }

    /// Whether `id` is open and not closing.
    pub(crate) fn is_open(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| c.life.open())
    }

    /// `id` is open and output for it waits for the kernel (which refused some): an
    /// `on_drained` will come once it is all written.
    pub(crate) fn needs_drain(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| c.writable && c.life.open())
    }

    /// `id` is open and its input is held: reading paused, or its output over the
    /// high-water mark (after the peer's end nothing is left to read, so nothing is held).
    pub(crate) fn is_held(&self, id: ConnId) -> bool {
        self.get(id)
            .is_some_and(|c| matches!(c.recv, Recv::Held { .. }) && c.life.open())
    }

    /// `id` has not closed: open, or flushing its queue before it closes (after
    /// `close_after_flush`, or in a stop's drain). Its timers live as long.
    pub(crate) fn is_unclosed(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| c.life != Life::Closing)
    }

    /// Every connection a send may be taken for.
    pub(crate) fn sendable(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.sendable())
            .map(|(key, c)| c.id(key))
    }

    pub(crate) fn peer(&self, id: ConnId) -> Option<Peer> {
        self.get(id).map(|c| c.peer)
    }

    pub(crate) fn proxied(&self, id: ConnId) -> Option<&crate::conn::Proxied> {
        match &self.get(id)?.phase {
            crate::conn::Phase::Proxied(proxied) => Some(proxied),
            _ => None,
        }
    }

    pub(crate) fn listener_of(&self, id: ConnId) -> Option<ListenerId> {
        self.get(id).map(|c| ListenerId(c.listener as usize))
    }

    pub(crate) fn listener(&self, id: ListenerId) -> Option<&ListenerInfo> {
        self.listeners.get(id.0).map(|l| &l.info)
    }

    pub(crate) fn queued(&self, id: ConnId) -> usize {
        self.get(id).map_or(0, |c| c.out.len())
    }

    /// How many bytes of `id`'s input the handler has not used, as kept between calls.
    pub(crate) fn unused_input(&self, id: ConnId) -> usize {
        self.get(id).map_or(0, |c| c.input.len())
    }

    /// Whether a graceful stop leaves `id` open; cleared during a stop, it closes once its
    /// queue is written, as the others did.
    pub(crate) fn keep_open_on_stop(&mut self, id: ConnId, keep: bool) {
        let Some(conn) = self.get_mut(id) else { return };
        conn.keep_on_stop = keep;
        if !keep && self.stopping.is_some() {
            self.close_after_flush(id);
        }
    }

    /// Gives the handler `id`'s unused input, which the connection no longer keeps.
    pub(crate) fn take_unused_input(&mut self, id: ConnId) -> Vec<u8> {
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Vec::new();
        };
        let bytes = conn.input.take();
        (conn.offer_kept, conn.shown, conn.refused) = (false, false, None);
        self.total_kept -= bytes.len();
        bytes
    }

    /// The socket of `id`, for options and queries.
    pub(crate) fn socket(&self, id: ConnId) -> Option<socket2::SockRef<'_>> {
        self.get(id).map(|c| socket2::SockRef::from(&c.stream))
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats::of(
            self.listeners.iter().map(|l| l.stats).collect(),
            self.total_queued,
            self.total_kept,
        )
    }

    pub(crate) fn set_timer(&mut self, delay: std::time::Duration, value: u64) -> TimerId {
        self.timers
            .set(timers::after(self.now, delay), Due::Server(value))
    }

    /// A timer for connection `id`; `None` if it is not open.
    pub(crate) fn set_conn_timer(
        &mut self,
        id: ConnId,
        delay: std::time::Duration,
        value: u64,
    ) -> Option<TimerId> {
        if !self.is_unclosed(id) {
            return None;
        }
        Some(
            self.timers
                .set(timers::after(self.now, delay), Due::Conn(id, value)),
        )
    }

    pub(crate) fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.timers.cancel(timer)
    }

    pub(crate) fn register_app<T: Source + ?Sized>(
        &mut self,
        source: &mut T,
        token: Token,
        interest: Interest,
        again: bool,
    ) -> io::Result<()> {
        let token = app_token(token)?;
        if again {
            self.registry.reregister(source, token, interest)
        } else {
            self.registry.register(source, token, interest)
        }
    }

    pub(crate) fn deregister_app<T: Source + ?Sized>(&mut self, source: &mut T) -> io::Result<()> {
        self.registry.deregister(source)
    }

    pub(crate) fn local_addr(&self, id: ConnId) -> io::Result<ListenAddr> {
        let conn = self
            .get(id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let listener = &self.listeners[conn.listener as usize].info.local_addr;
        match listener {
            ListenAddr::Ip(ip) if ip.ip().is_unspecified() => {
                conn.stream.local_ip().map(ListenAddr::Ip)
            }
            other => Ok(other.clone()),
        }
    }

    /// The reason a close the handler asked for gets.
    pub(crate) fn local_close_reason(&self, id: ConnId) -> CloseReason {
        match self.get(id) {
            _ if self.stopping.is_some() => CloseReason::Shutdown,
            Some(c) if c.recv == crate::conn::Recv::Done => CloseReason::PeerClosed,
            _ => CloseReason::Closed,
        }
    }

    /// The handler closes `id` now.
    pub(crate) fn close(&mut self, id: ConnId) {
        let reason = self.local_close_reason(id);
        self.request_close(id, reason);
    }

    /// Holds the input of `id` if `on_data` is looking at it: it shows nothing more.
    pub(super) fn hold_input(&mut self, id: ConnId) {
        if self.serving == Some(id) {
            self.held.store(true, Ordering::Relaxed);
        }
    }

    /// Puts `id` on the close list. Its queued output is dropped here, not when it is
    /// removed, so the total stops counting it at once (a shed later in the same callback
    /// must not close another connection for bytes that are already gone).
    pub(crate) fn request_close(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = conn_mut(&mut self.conns, id) {
            if conn.life.close() {
                let dropped = conn.out.clear(&mut self.spares);
                self.total_queued -= dropped;
                if dropped > 0 {
                    if let Some(tls) = &mut conn.tls {
                        // The stream did not end where the handler's output did: the peer
                        // must not get a close_notify that says it did.
                        tls.output_dropped();
                    }
                    log::debug!("{id}: closing with {dropped} queued bytes undelivered");
                }
                self.to_close.push_back((id, reason));
                self.hold_input(id);
            }
        }
    }

    pub(crate) fn close_after_flush(&mut self, id: ConnId) {
        let Some(conn) = self.get_mut(id) else { return };
        if conn.tls.is_some() && conn.phase.handed() {
            // close_notify goes after what is queued: `after_write` sends it, then closes.
            if conn.life.open() {
                conn.life.close_after_flush(false);
                let was_blocked = conn.writable;
                self.hold_input(id);
                self.after_write(id, was_blocked);
            }
            return;
        }
        if conn.life.close_after_flush(conn.out.is_empty()) {
            let reason = self.local_close_reason(id);
            self.request_close(id, reason);
        } else {
            // Nothing more is read from it.
            self.hold_input(id);
        }
    }

    pub(crate) fn shutdown_write(&mut self, id: ConnId) {
        let Some(conn) = self.get_mut(id) else { return };
        if !conn.life.open() {
            return;
        }
        if conn.tls.is_some() {
            // close_notify, then the FIN, after what is queued (`after_write`).
            if conn.send.open() {
                conn.send.shutdown(false);
                let was_blocked = conn.writable;
                self.after_write(id, was_blocked);
            }
            return;
        }
        if conn.send.shutdown(conn.out.is_empty()) {
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                self.request_close(id, CloseReason::from_io(e));
            }
        }
    }

    /// Something happened that input a handler refused may have waited for: a callback
    /// other than `on_data` (a timer's, a close's after a deadline, …: `Context::new`), or
    /// an `on_data` that was not a refusal (see `epoch`). An event that calls the handler
    /// for nothing (a write that drained no queue) is no news.
    #[inline]
    pub(super) fn news(&mut self) {
        self.epoch += 1;
    }

    /// The handler pauses or resumes reading `id`.
    pub(crate) fn set_paused(&mut self, id: ConnId, paused: bool) {
        let Some(conn) = self.get_mut(id) else { return };
        if paused {
            conn.recv.hold(Holder::App);
            self.hold_input(id);
        } else {
            let wake = conn.recv.release(Holder::App) || conn.offer_kept;
            let unheld = conn.recv.wants_read() && conn.life.open();
            if wake {
                self.ready.push(id);
            }
            // A resume within the connection's own on_data, with nothing else holding it:
            // the input shows its bytes again at once.
            if unheld && self.serving == Some(id) {
                self.held.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Asks for a graceful stop; it begins when the current callback returns. Asking again
    /// changes nothing.
    pub(crate) fn request_stop(&mut self) {
        if self.stopping.is_none() {
            self.stop_wanted = true;
        }
    }

    /// Removes a connection the close list named, once the handler heard of it. Everything
    /// it held is given back: descriptor, slot, deadline, timers, peer share, place under
    /// `max_connections`. (The handler's value for it goes with the caller's slab.)
    pub(super) fn remove(&mut self, id: ConnId, reason: &CloseReason) {
        let Some(conn) = self.get(id) else { return };
        debug_assert!(conn.out.is_empty(), "request_close drops the queue");
        let mut conn = self.conns.remove(id.key);
        if let Some(tls) = &mut conn.tls {
            // What TLS still owes the peer, as far as the socket takes it now: the alert of
            // a failed handshake, or close_notify where the end is ours and orderly and no
            // queued output was dropped (a close that did not wait for the queue;
            // `close_after_flush` sent it already). A peer that loses the rest of the
            // stream must see a truncation, not a clean end.
            let orderly = matches!(
                reason,
                CloseReason::Closed
                    | CloseReason::PeerClosed
                    | CloseReason::Shutdown
                    | CloseReason::IdleTimeout
                    | CloseReason::FirstByteTimeout
            );
            if orderly && conn.phase.handed() {
                tls.close_notify();
            }
            if !matches!(reason, CloseReason::Reset | CloseReason::Error(_)) {
                while tls.wants_write() && tls.write_tls(&mut conn.stream).is_ok_and(|n| n > 0) {}
            }
        }
        if matches!(reason, CloseReason::Closed | CloseReason::Shutdown)
            && conn.recv != crate::conn::Recv::Done
        {
            discard_unread(&mut conn.stream);
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
        self.deadlines.close(id, &conn.timing);
        self.timers.cancel_conn(id);
        if conn.phase.counted() {
            self.peers.release(&conn.peer); // counted at accept, or with its PROXY header
        }
        let unused = conn.input.len();
        self.total_kept -= unused;
        if unused > 0 {
            log::debug!("{id}: closed ({reason}), {unused} bytes of input unused");
        } else {
            log::debug!("{id}: closed ({reason})");
        }
        self.listeners[conn.listener as usize].stats.open -= 1;
        if self.accept_full {
            self.accept_full = false;
            // Every listener may take the freed slot; which one asks first rotates, so a
            // flood on one listener cannot keep the others' clients waiting for ever.
            let n = self.listeners.len();
            if n > 0 {
                self.accept_rotation = (self.accept_rotation + 1) % n;
                for i in 0..n {
                    self.accept_soon((self.accept_rotation + i) % n);
                }
            }
        }
    }

    /// New handshakes on `listeners` (TLS listeners) use `tls` from now on.
    #[cfg(feature = "tls")]
    pub(super) fn replace_tls(&mut self, listeners: &[usize], tls: crate::tls::Acceptor) {
        for &i in listeners {
            if let Some(slot) = self.listeners.get_mut(i).filter(|l| l.tls.is_some()) {
                slot.tls = Some(tls.clone());
            }
        }
        log::info!("TLS configuration reloaded for listeners {listeners:?}");
    }

    /// Accepts from listener `index` at the turn's accepting point, once.
    pub(super) fn accept_soon(&mut self, index: usize) {
        if !self.ready_listeners.contains(&index) {
            self.ready_listeners.push(index);
        }
    }

    /// The first half of a stop: the deadline is set, the listening sockets are closed and
    /// the handler's pending timers are cancelled.
    pub(super) fn stop_listening(&mut self) {
        self.stopping = Some(timers::after(self.now, self.limits.shutdown_timeout));
        for slot in &mut self.listeners {
            if let Some(mut socket) = slot.socket.take() {
                let _ = self.registry.deregister(&mut socket);
            }
        }
        // Work kept open through the stop keeps its timers (it is served as before).
        let conns = &self.conns;
        self.timers.clear_but(|id| {
            conns
                .get(id.key)
                .is_some_and(|c| c.generation == id.generation && c.keep_on_stop)
        });
    }

    /// A successor took the listening sockets over: they are no longer accepted from, but
    /// stay open (a Unix-domain socket's file is the successor's now).
    pub(super) fn retire_listeners(&mut self) {
        for slot in &mut self.listeners {
            if let Some(mut socket) = slot.socket.take() {
                let _ = self.registry.deregister(&mut socket);
                socket.disown();
                self.retired.push(socket);
            }
        }
        self.ready_listeners.clear();
    }

    /// The second half of a stop: every connection closes once its output is written, but
    /// those kept open for work in flight.
    pub(super) fn close_all_after_flush(&mut self) {
        let ids: Vec<ConnId> = (self.conns.iter())
            .filter(|(_, c)| !c.keep_on_stop)
            .map(|(k, c)| c.id(k))
            .collect();
        for id in ids {
            self.close_after_flush(id);
        }
    }
}

/// The connection `id` names, borrowing only the slab (so other fields stay usable).
#[inline]
pub(super) fn conn_mut(conns: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.key)
        .filter(|c| c.generation == id.generation)
}

/// The server's token for an application source with token `token`.
pub(crate) fn app_token(token: Token) -> io::Result<Token> {
    token::app(token).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "application token {} is too large: tokens must be at most {}",
                token.0,
                token::MAX_VALUE
            ),
        )
    })
}

/// The most unread input a close discards: beyond it, the close may reset.
const DISCARD_AT_CLOSE: usize = 256 * 1024;

/// Reads and drops what the peer sent that was never read (input held, a request after the
/// last one served), up to [`DISCARD_AT_CLOSE`]: a socket closed with unread bytes sends a
/// reset instead of a FIN (RFC 2525, 2.17), and the peer's kernel may discard the replies
/// it has not yet handed to its application (a `close_after_flush` error line lost). What
/// arrives after the close can still draw a reset; a lingering close would need a deadline.
fn discard_unread(stream: &mut impl io::Read) {
    let mut scratch = [0u8; 16 * 1024];
    let mut left = DISCARD_AT_CLOSE;
    while left > 0 {
        match stream.read(&mut scratch) {
            Ok(0) => return,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
