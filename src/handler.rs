//! The application's side of the reactor: the [`Handler`] trait and the [`Context`] its
//! callbacks receive.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::{Event, Source};
use mio::{Interest, Token};

use crate::conn::{CloseReason, ConnId, ConnInfo, ListenerId, Proxied};
use crate::reactor::core::Core;
use crate::reactor::output::SendError;
use crate::reactor::stats::{ListenerInfo, Stats};
use crate::reactor::timers::TimerId;
use crate::socket::{ListenAddr, Peer};

/// What the application does when things happen on the server.
///
/// Every method but [`on_data`](Handler::on_data) has a default. Callbacks run on the
/// server's thread, one at a time, and act through the [`Context`] they are given: send to
/// any connection, close, pause reading, set timers, stop the server.
///
/// # Implementing Handler
///
/// An echo server is one method:
///
/// ```
/// use dualstack::{ConnId, Context, Handler};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     type State = (); // nothing kept per connection
///
///     fn on_data(&mut self, ctx: &mut Context<'_, Self::State>, conn: ConnId, data: &[u8]) {
///         // The queue limits are far above what one read can add, so this cannot fail
///         // while the connection is open; a closed one is reported to on_close anyway.
///         let _ = ctx.send(conn, data);
///     }
/// }
///
/// let server = dualstack::Server::builder().listen("localhost:0").bind(Echo)?;
/// assert_eq!(server.listeners().len(), 2); // 127.0.0.1 and ::1, one port
/// # Ok::<(), dualstack::Error>(())
/// ```
///
/// Callbacks never see a connection that is not open, except `on_close`, which is the last
/// word about it: its [`ConnId`] is dead afterwards.
pub trait Handler {
    /// The handler's own value for each connection, kept by the server with the
    /// connection: a protocol's parser state, a user's name. It is made with `Default` when
    /// the connection is accepted, reached with [`Context::state`] and
    /// [`Context::state_mut`] while the connection lives (in `on_close` too, one last time),
    /// and dropped after `on_close` (or, for a PROXY connection refused before `on_open`,
    /// with it, unseen). `()` for a handler that needs none.
    type State: Default;

    /// A connection was accepted (on a PROXY listener: its header is in). `info` says by
    /// which listener, and from which peer: the normalized client address (on a PROXY
    /// listener, the one the header names), or a Unix-domain peer's credentials;
    /// [`Context::local_addr`] gives the local address.
    fn on_open(&mut self, ctx: &mut Context<'_, Self::State>, conn: ConnId, info: &ConnInfo) {
        let _ = (ctx, conn, info);
    }

    /// Bytes arrived on `conn`. `data` is only valid during the call (the server reuses one
    /// buffer for every connection).
    fn on_data(&mut self, ctx: &mut Context<'_, Self::State>, conn: ConnId, data: &[u8]);

    /// The peer closed its sending side (end of stream). Output can still be sent to it.
    ///
    /// The default closes the connection once everything queued for it is written, with
    /// [`CloseReason::PeerClosed`]. Override it to keep answering a half-closed peer, and
    /// close when done.
    fn on_peer_closed(&mut self, ctx: &mut Context<'_, Self::State>, conn: ConnId) {
        ctx.close_after_flush(conn);
    }

    /// Everything queued for `conn` has been written: a good moment to send more, for a
    /// handler that produces output at its own pace.
    fn on_drained(&mut self, ctx: &mut Context<'_, Self::State>, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// `conn` is closed, for `reason`: the last word about it. Its state and its peer
    /// address can still be read through `ctx` during this call; nothing can be sent to it,
    /// and its id is dead once this returns.
    fn on_close(&mut self, ctx: &mut Context<'_, Self::State>, conn: ConnId, reason: &CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// A connection was closed before the handler heard of it, for `reason`: its peer had its
    /// share of connections already ([`CloseReason::PeerLimit`]), or, on a PROXY listener,
    /// the peer is not a trusted balancer ([`CloseReason::Untrusted`]), its header was bad
    /// ([`CloseReason::ProxyHeader`]) or late ([`CloseReason::HeaderTimeout`]), or it left
    /// (or the server stopped) before the header was complete. `peer` is the socket's peer,
    /// or for a header refused by the per-peer limit the client the header named. No
    /// `on_open` came before and no `on_close` follows, so handlers that pair the two need
    /// not care; this is for logs and counters (see also [`Stats`](crate::Stats)).
    fn on_refused(
        &mut self,
        ctx: &mut Context<'_, Self::State>,
        listener: ListenerId,
        peer: &Peer,
        reason: &CloseReason,
    ) {
        let _ = (ctx, listener, peer, reason);
    }

    /// Another thread called [`ServerHandle::wake`](crate::ServerHandle::wake) (or `stop`).
    fn on_wake(&mut self, ctx: &mut Context<'_, Self::State>) {
        let _ = ctx;
    }

    /// The server is stopping ([`Context::stop`] or
    /// [`ServerHandle::stop`](crate::ServerHandle::stop)); called once, as the stop begins.
    ///
    /// The listeners are already closed and timers set before are cancelled (they never
    /// fire), but every connection is still open: this is the moment to send a goodbye, or
    /// to close connections at once. When it returns, each connection closes as soon as its
    /// queued output is written, with [`CloseReason::Shutdown`], and sends fail from then
    /// on. Timers set here fire while connections drain. The shutdown timeout bounds the
    /// whole drain.
    ///
    /// Dropping a [`Server`](crate::Server) is not a stop: its sockets close at once, with
    /// no `on_stop` and no `on_close`.
    fn on_stop(&mut self, ctx: &mut Context<'_, Self::State>) {
        let _ = ctx;
    }

    /// A timer set with [`Context::set_timer`] is due; `value` is what was given then.
    fn on_timer(&mut self, ctx: &mut Context<'_, Self::State>, timer: TimerId, value: u64) {
        let _ = (ctx, timer, value);
    }

    /// An event on a source the application registered with
    /// [`Server::register`](crate::Server::register) or [`Context::register`]; `token` is the
    /// application's own token.
    fn on_event(&mut self, ctx: &mut Context<'_, Self::State>, token: Token, event: &Event) {
        let _ = (ctx, token, event);
    }
}

/// What a [`Handler`] callback can do: the server's operations, borrowed for the call.
/// `S` is the handler's [`State`](Handler::State).
pub struct Context<'a, S = ()> {
    core: &'a mut Core<S>,
}

impl<S> fmt::Debug for Context<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.core.now())
            .finish_non_exhaustive()
    }
}

impl<'a, S> Context<'a, S> {
    pub(crate) fn new(core: &'a mut Core<S>) -> Context<'a, S> {
        Context { core }
    }

    /// Sends `data` on `conn`: written straight to the socket, and whatever the kernel does
    /// not take is queued and written when the socket can take more.
    ///
    /// When the queue passes the high-water mark the server stops reading from `conn` until
    /// it drains (backpressure), so a peer that does not read cannot make it grow.
    ///
    /// # Errors
    ///
    /// - [`SendError::Closed`]: `conn` is closed or closing, or its writing side is shut down;
    ///   also when this send made the server shed `conn` itself to stay under
    ///   [`max_total_queued`](crate::ServerBuilder::max_total_queued);
    /// - [`SendError::QueueFull`]: the bytes would pass the connection's hard limit on queued
    ///   output;
    /// - [`SendError::TooLarge`]: the bytes alone are more than the server-wide cap.
    ///
    /// Every check runs before the first byte is written: an `Err` means that not one byte of
    /// `data` reached the socket, so retrying cannot duplicate a prefix. A write error closes
    /// the connection (the handler hears of it in `on_close`) and is reported here as
    /// `Closed`. When this send pushes the total queued output past the cap, the
    /// connections holding the most are closed first (`CloseReason::Overloaded`), exactly
    /// as many as needed.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, data)
    }

    /// Closes `conn` now; output still queued is dropped. `on_close` follows when the
    /// current callback returns.
    pub fn close(&mut self, conn: ConnId) {
        self.core.close(conn);
    }

    /// Closes `conn` once its queued output is written. Nothing more is read from it, and
    /// [`send`](Context::send) to it fails from now on.
    pub fn close_after_flush(&mut self, conn: ConnId) {
        self.core.close_after_flush(conn);
    }

    /// Shuts down the writing side of `conn` (a TCP FIN) once its queued output is written;
    /// reading goes on. [`send`](Context::send) fails from now on.
    pub fn shutdown_write(&mut self, conn: ConnId) {
        self.core.shutdown_write(conn);
    }

    /// Stops reading from `conn` until [`resume_reading`](Context::resume_reading). The peer
    /// is then held back by TCP flow control; nothing it sent is lost.
    pub fn pause_reading(&mut self, conn: ConnId) {
        self.core.set_paused(conn, true);
    }

    /// Reads from `conn` again after [`pause_reading`](Context::pause_reading).
    pub fn resume_reading(&mut self, conn: ConnId) {
        self.core.set_paused(conn, false);
    }

    /// Every open connection that is not closing, in no particular order (for a
    /// broadcast: each one yielded can be sent to).
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.core.sendable()
    }

    /// Whether `conn` is open (and not closing).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.core.is_open(conn)
    }

    /// The handler's value for `conn` ([`Handler::State`]); `None` once it is gone.
    pub fn state(&self, conn: ConnId) -> Option<&S> {
        self.core.state(conn)
    }

    /// The handler's value for `conn`, mutably; `None` once it is gone.
    pub fn state_mut(&mut self, conn: ConnId) -> Option<&mut S> {
        self.core.state_mut(conn)
    }

    /// The peer of `conn`: its address, normalized, or a Unix-domain peer's credentials;
    /// `None` once it is gone.
    pub fn peer(&self, conn: ConnId) -> Option<Peer> {
        self.core.peer(conn)
    }

    /// How `conn` came through a load balancer, on a PROXY listener: the balancer's own
    /// address and the header (the client's address is [`peer`](Context::peer), where
    /// the client connected is `header.destination()`, and version 2's TLVs are there).
    /// `None` for a direct connection.
    pub fn proxied(&self, conn: ConnId) -> Option<&Proxied> {
        self.core.proxied(conn)
    }

    /// The peer's IP address of `conn`, normalized; `None` once it is gone, or for a
    /// Unix-domain peer.
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.core.peer(conn)?.ip()
    }

    /// The local address of `conn`, normalized. For a connection accepted by a wildcard
    /// listener this asks the kernel (one `getsockname`), since it depends on which address
    /// the client reached; otherwise it is the listener's address.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] if `conn` is closed; the OS error of `getsockname`.
    pub fn local_addr(&self, conn: ConnId) -> io::Result<ListenAddr> {
        self.core.local_addr(conn)
    }

    /// The listener that accepted `conn`; `None` once it is gone.
    pub fn listener_of(&self, conn: ConnId) -> Option<ListenerId> {
        self.core.listener_of(conn)
    }

    /// A listener of the server.
    pub fn listener(&self, id: ListenerId) -> Option<&ListenerInfo> {
        self.core.listener(id)
    }

    /// How many bytes are queued for `conn` (0 if it is closed).
    pub fn queued(&self, conn: ConnId) -> usize {
        self.core.queued(conn)
    }

    /// Calls [`Handler::on_timer`] with `value` after `delay`, counted from
    /// [`now`](Context::now). A delay too long for the clock (`Duration::MAX`) means a
    /// century, which is to say never. A timer set from `on_timer` fires on a later turn,
    /// after a poll, even with a zero delay.
    pub fn set_timer(&mut self, delay: Duration, value: u64) -> TimerId {
        self.core.set_timer(delay, value)
    }

    /// Cancels a timer; returns whether it was still pending.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.cancel_timer(timer)
    }

    /// Stops the server gracefully once this callback returns: no more accepting, pending
    /// timers cancelled, [`Handler::on_stop`], then queued output flushed (up to the
    /// shutdown timeout) and every connection closed with [`CloseReason::Shutdown`].
    pub fn stop(&mut self) {
        self.core.request_stop();
    }

    /// The time the current loop turn started: cheaper than `Instant::now()` and the clock
    /// timers and timeouts use.
    pub fn now(&self) -> Instant {
        self.core.now()
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Registers an application source; its events come to [`Handler::on_event`] with
    /// `token`. See [`Server::register`](crate::Server::register).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a token above the application range; the OS error.
    pub fn register<T: Source + ?Sized>(
        &mut self,
        source: &mut T,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.core.register_app(source, token, interest, false)
    }

    /// Changes the interest of an application source.
    ///
    /// # Errors
    ///
    /// As for [`register`](Context::register).
    pub fn reregister<T: Source + ?Sized>(
        &mut self,
        source: &mut T,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.core.register_app(source, token, interest, true)
    }

    /// Deregisters an application source.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn deregister<T: Source + ?Sized>(&mut self, source: &mut T) -> io::Result<()> {
        self.core.deregister_app(source)
    }
}
