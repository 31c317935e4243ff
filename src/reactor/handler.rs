//! The application's side of the reactor: the [`Handler`] trait, the [`Context`] its
//! callbacks act through, and [`Sender`], the sending half that [`Context::split`] lends
//! beside one connection's value. They reach the `Core` only through its methods.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::{Event, Source};
use mio::{Interest, Token};
use slab::Slab;

use super::core::Core;
use super::output::SendError;
use super::stats::{ListenerInfo, Stats};
use super::timers::TimerId;
use crate::conn::{CloseReason, ConnId, ConnInfo, Input, ListenerId, Proxied};
use crate::socket::{ListenAddr, Peer};

/// What the application does when things happen on the server.
///
/// Every method but [`on_data`](Handler::on_data) has a default. Callbacks run on the
/// server's thread, one at a time, and act through the [`Context`] they are given: send to
/// any connection, close, pause reading, set timers, stop the server. `Context<'_, Self>`
/// reaches this handler's [`State`](Handler::State) for each connection.
///
/// # Implementing Handler
///
/// An echo server is one method:
///
/// ```
/// use dualstack::{ConnId, Context, Handler, Input};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     type State = (); // nothing kept per connection
///
///     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
///         // Refused only when the connection is gone (on_close hears of it) or its client
///         // stopped reading past the output limit: reading it stops before that (the
///         // high-water mark, at least one read below the limit unless set otherwise), so
///         // an echo, which sends what it read, never meets the limit.
///         let _ = ctx.send(conn, input.take_all());
///     }
/// }
///
/// let server = dualstack::Server::builder().listen("localhost:0").bind(Echo)?;
/// assert_eq!(server.listeners().len(), 2); // 127.0.0.1 and ::1, one port
/// # Ok::<(), dualstack::Error>(())
/// ```
///
/// A line protocol with state per connection (the [`frame`](crate::frame) module has
/// the framers):
///
/// ```
/// use dualstack::frame::Lines;
/// use dualstack::{ConnId, Context, Handler, Input};
///
/// #[derive(Default)]
/// struct Counter {
///     lines: u64,
/// }
///
/// struct Count;
///
/// impl Handler for Count {
///     type State = Counter;
///
///     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
///         // A line of up to 1 KiB at a time; a partial one waits in `input` for its rest.
///         while let Ok(Some(_line)) = input.next_frame(&Lines::new(1024)) {
///             let Some((counter, mut out)) = ctx.split(conn) else { return };
///             counter.lines += 1;
///             let _ = out.send(conn, format!("{}\n", counter.lines).as_bytes());
///         }
///     }
/// }
/// # let _server = dualstack::Server::builder().listen("127.0.0.1:0").bind(Count)?;
/// # Ok::<(), dualstack::Error>(())
/// ```
///
/// Callbacks never see a connection that is not open, except `on_close`, which is the last
/// word about it: its [`ConnId`] is dead afterwards.
///
/// # When bytes reach the socket
///
/// Small sends are queued and coalesce: what a connection was sent during its `on_data`
/// calls of a turn leaves in one write (vectored where the queue holds several chunks) when
/// the reactor is done reading that connection; what other callbacks sent (timers,
/// `on_open`, sends to other connections) leaves at the end of the turn, one write per
/// connection. A queue that reaches 64 KiB is written at once. A single send of 16 KiB or
/// more that finds the queue empty leaves during the call, from your slice, without a copy:
/// written at once on a plain connection (what the kernel does not take is queued), and
/// encrypted at once on a TLS one (what the session's 64 KiB of ciphertext does not take is
/// queued; the records are written with the rest, at the read's or the turn's end). So any
/// number of small replies cost one system call, and a single reply leaves in the same turn
/// its request arrived.
pub trait Handler {
    /// The handler's own value for each connection, kept by the server beside it: a
    /// protocol's parser state, a user's name. It is made with `Default` when the
    /// connection is accepted, reached with [`Context::state`], [`Context::state_mut`] or
    /// [`Context::split`] while the connection lives (in `on_close` too, one last time), and
    /// dropped after `on_close` (or, for a PROXY connection refused before `on_open`, with
    /// it, unseen). `()` for a handler that needs none.
    type State: Default;

    /// A connection was accepted (on a PROXY listener: its header is in). `info` says by
    /// which listener, and from which peer: the normalized client address (on a PROXY
    /// listener, the one the header names), or a Unix-domain peer's credentials;
    /// [`Context::local_addr`] gives the local address. A good moment to greet the peer,
    /// or set a deadline with [`Context::set_conn_timer`].
    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, info: &ConnInfo) {
        let _ = (ctx, conn, info);
    }

    /// Bytes arrived on `conn`: `input` holds them, after whatever earlier calls did not
    /// use. Use what makes sense ([`Input::next_frame`], [`Input::take`],
    /// [`Input::consume`]); the rest stays and comes again with the next bytes. Keeping
    /// more than [`ServerBuilder::max_input`](crate::ServerBuilder::max_input) closes the
    /// connection ([`CloseReason::InputLimit`]).
    ///
    /// While the connection's output is over its high-water mark (or reading is paused, or
    /// the connection closing), `input` is held: it shows nothing, so a loop over frames
    /// ends, and what is left is offered again once the output drained. Parse one request
    /// at a time from `input`, and backpressure needs nothing more from the handler.
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>);

    /// The peer closed its sending side (end of stream). Output can still be sent to it;
    /// input it left unused ([`Context::unused_input`]) will never be completed: take it
    /// with [`Context::take_unused_input`] to treat a last frame without its end (a final
    /// line with no newline) as whole.
    ///
    /// The default closes the connection once everything queued for it is written, with
    /// [`CloseReason::PeerClosed`]. Override it to keep answering a half-closed peer, and
    /// close when done.
    fn on_peer_closed(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId) {
        ctx.close_after_flush(conn);
    }

    /// Output for `conn` that the kernel could not take at once has now all been written:
    /// a good moment to send more, for a handler that produces output at its own pace
    /// (a large file, a stream). Not called for output that left at once, which includes
    /// small sends queued and written at the end of the callback or turn: it comes when
    /// [`Context::needs_drain`] said it would. A stream sends while `needs_drain` is false
    /// and goes on here.
    fn on_drained(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// `conn` is closed, for `reason`: the last word about it. Its state and its peer
    /// address can still be read through `ctx` during this call; nothing can be sent to it,
    /// its timers are cancelled, and its id is dead once this returns.
    fn on_close(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, reason: &CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// A connection was closed before the handler heard of it, for `reason`: its peer had its
    /// share of connections already ([`CloseReason::PeerLimit`]), or, on a PROXY listener,
    /// the peer is not a trusted balancer ([`CloseReason::Untrusted`]), its header was bad
    /// ([`CloseReason::ProxyHeader`]) or late ([`CloseReason::HeaderTimeout`]), or it left
    /// (or the server stopped) before the header was complete; or, on a TLS listener, its
    /// handshake failed ([`CloseReason::Tls`]: refused by either side, as for a wrong ALPN
    /// or a missing client certificate), was not done in time
    /// ([`CloseReason::HandshakeTimeout`]), or the client left during it
    /// ([`CloseReason::PeerClosed`], [`CloseReason::Reset`]). `peer` is the socket's peer,
    /// or for a header refused by the per-peer limit the client the header named. No
    /// `on_open` came before and no `on_close` follows, so handlers that pair the two need
    /// not care; this is for logs and counters (see also [`Stats`](crate::Stats)).
    fn on_refused(
        &mut self,
        ctx: &mut Context<'_, Self>,
        listener: ListenerId,
        peer: &Peer,
        reason: &CloseReason,
    ) {
        let _ = (ctx, listener, peer, reason);
    }

    /// Another thread called [`ServerHandle::wake`](crate::ServerHandle::wake) (or `stop`).
    fn on_wake(&mut self, ctx: &mut Context<'_, Self>) {
        let _ = ctx;
    }

    /// The server is stopping ([`Context::stop`] or
    /// [`ServerHandle::stop`](crate::ServerHandle::stop)); called once, as the stop begins.
    ///
    /// The listeners are already closed and timers set before are cancelled (they never
    /// fire), but those of connections kept open through the stop
    /// ([`Context::keep_open_on_stop`]); every connection is still open: this is the moment
    /// to send a goodbye, or to close connections at once. When it returns, each connection closes as soon as its
    /// queued output is written, with [`CloseReason::Shutdown`], and sends fail from then
    /// on; but a connection kept open for work in flight
    /// ([`Context::keep_open_on_stop`], set here or before) stays open, and served, until
    /// the handler closes it or lets it go. Timers set here fire while connections drain.
    /// The shutdown timeout bounds the whole drain: what is open then is closed.
    ///
    /// Dropping a [`Server`](crate::Server) is not a stop: its sockets close at once, with
    /// no `on_stop` and no `on_close`.
    fn on_stop(&mut self, ctx: &mut Context<'_, Self>) {
        let _ = ctx;
    }

    /// What became of a hand-over ([`ServerHandle::hand_over`](crate::ServerHandle::hand_over)):
    /// the successor started, it is ready (this server no longer accepts, and its
    /// connections drain: a moment to close idle ones), or it failed (this server goes on as
    /// before, unless it is stopping: a stop while the successor started fails it with
    /// [`HandOverErrorKind::Cancelled`](crate::HandOverErrorKind::Cancelled)). Each is
    /// logged as well; the default does nothing more.
    fn on_hand_over(&mut self, ctx: &mut Context<'_, Self>, event: &crate::HandOverEvent) {
        let _ = (ctx, event);
    }

    /// A timer set with [`Context::set_timer`] is due; `value` is what was given then.
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: TimerId, value: u64) {
        let _ = (ctx, timer, value);
    }

    /// A timer set for `conn` with [`Context::set_conn_timer`] is due; `value` is what was
    /// given then. Never called once `conn` has closed (its timers are cancelled with it);
    /// called while it flushes before its close (`close_after_flush`, a stop's drain).
    /// "Finish your request within 5 s" is a timer set in `on_open`, cancelled when the
    /// request is complete, and a close here. While the input is held
    /// ([`Context::is_held`]: paused, or its replies waiting for the peer to read them) the
    /// server, not the peer, is the one not reading: arm such a timer again then instead of
    /// closing. A closing connection is not held: its timer can bound the flush.
    fn on_conn_timer(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        timer: TimerId,
        value: u64,
    ) {
        let _ = (ctx, conn, timer, value);
    }

    /// An event on a source the application registered with
    /// [`Server::register`](crate::Server::register) or [`Context::register`]; `token` is the
    /// application's own token.
    fn on_event(&mut self, ctx: &mut Context<'_, Self>, token: Token, event: &Event) {
        let _ = (ctx, token, event);
    }
}

/// What a [`Handler`] callback can do: the server's operations, borrowed for the call.
/// `Context<'_, H>` reaches handler `H`'s [`State`](Handler::State) for each connection;
/// in a handler's methods it is `Context<'_, Self>`.
pub struct Context<'a, H: Handler + ?Sized> {
    core: &'a mut Core,
    states: &'a mut Slab<H::State>,
}

impl<H: Handler + ?Sized> fmt::Debug for Context<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.core.now())
            .field("connections", &self.core.conns.len())
            .finish_non_exhaustive()
    }
}

impl<'a, H: Handler + ?Sized> Context<'a, H> {
    /// The context of a callback other than `on_data`: each is news for input a handler
    /// refused (see `Core::news`), as any resume it makes may be what that input waits for.
    pub(crate) fn new(core: &'a mut Core, states: &'a mut Slab<H::State>) -> Context<'a, H> {
        core.news();
        Context { core, states }
    }

    /// The context of an `on_data` call: news only if the call is not a refusal, which is
    /// known after it (see `Server::deliver`).
    pub(crate) fn for_data(core: &'a mut Core, states: &'a mut Slab<H::State>) -> Context<'a, H> {
        Context { core, states }
    }

    /// Sends `data` to `conn`. A small send is queued and written with everything else
    /// `conn` is sent this turn, in one write, when the server is done reading `conn` or at
    /// the end of the turn; a send of 16 KiB or more into an empty queue leaves during the
    /// call (see [`Handler`], "When bytes reach the socket"). What the kernel does not take
    /// waits in the queue and is written as the socket takes more.
    ///
    /// When the queue passes the high-water mark the server holds `conn`'s input (the
    /// [`Input`](crate::Input) of the current `on_data` shows nothing more) and stops reading
    /// it until the queue is down to the low-water mark: a peer that does not read cannot
    /// make it grow, and is held rather than cut off.
    ///
    /// # Errors
    ///
    /// - [`SendError::Closed`]: `conn` is closed or closing, or its writing side is shut down;
    ///   also when this send made the server shed `conn` itself to stay under
    ///   [`max_total_queued`](crate::ServerBuilder::max_total_queued). Nothing to do: the
    ///   handler hears of the close in `on_close`.
    /// - [`SendError::QueueFull`]: the bytes would pass the connection's hard limit on queued
    ///   output ([`max_queued`](crate::ServerBuilder::max_queued)); a handler that keeps
    ///   sending to a peer that does not read meets it. Close the connection, or wait for
    ///   [`Handler::on_drained`] before sending more. With `queued: 0` the bytes alone are
    ///   longer than the limit and no `on_drained` will come: send them in pieces no longer
    ///   than the limit (each after `on_drained`), or raise it.
    /// - [`SendError::TooLarge`]: the bytes alone are more than the server-wide cap. Send
    ///   them in smaller pieces (as `on_drained` signals room).
    ///
    /// Every check runs before the bytes are queued: an `Err` means that not one byte of
    /// `data` will reach the socket, so retrying cannot duplicate a prefix. When this send
    /// pushes the total queued output past the cap, the connections holding the most are
    /// closed first ([`CloseReason::Overloaded`](crate::CloseReason::Overloaded)), exactly
    /// as many as needed.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, data)
    }

    /// The handler's value for `conn` and the sending half of this context, at once: to
    /// update a connection's state and send (to it or any other) without looking the state
    /// up again after each send. `None` once `conn` is gone.
    ///
    /// ```
    /// # use dualstack::{ConnId, Context, Handler, Input};
    /// # #[derive(Default)] struct Client { name: String }
    /// # struct Greeter;
    /// # impl Handler for Greeter {
    /// #     type State = Client;
    /// fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
    ///     let Some((client, mut out)) = ctx.split(conn) else { return };
    ///     client.name = String::from_utf8_lossy(input.take_all()).trim().to_owned();
    ///     let _ = out.send(conn, b"hello, ");
    ///     let _ = out.send(conn, client.name.as_bytes()); // the state, sent as it is
    /// }
    /// # }
    /// # let _server = dualstack::Server::builder().listen("127.0.0.1:0").bind(Greeter)?;
    /// # Ok::<(), dualstack::Error>(())
    /// ```
    pub fn split(&mut self, conn: ConnId) -> Option<(&mut H::State, Sender<'_>)> {
        self.core.get(conn)?;
        let state = self.states.get_mut(conn.key)?;
        Some((state, Sender { core: self.core }))
    }

    /// Closes `conn` now; output still queued is dropped. `on_close` follows when the
    /// current callback returns. Input the peer sent that was never read is read and dropped
    /// first (up to 256 KiB), so the peer sees a FIN; past that, or for bytes arriving after
    /// the close, its kernel may answer with a reset, and the peer may then lose replies it
    /// had not read yet.
    ///
    /// Sends earlier in the turn may have left in part: one of 16 KiB or more is written at
    /// once, and its rest dropped here, so a plain TCP peer can see the start of a reply
    /// and then an orderly end (a TLS peer sees no `close_notify`: a truncation). To end
    /// after the replies, use [`close_after_flush`](Context::close_after_flush).
    pub fn close(&mut self, conn: ConnId) {
        self.core.close(conn);
    }

    /// Closes `conn` once its queued output is written: the way to end with an error reply.
    /// Nothing more is read from it (its input is held), and [`send`](Context::send) to it
    /// fails from now on. The close then ends as [`close`](Context::close) describes: a FIN
    /// after the replies, unless the peer sent more than 256 KiB that was never read. A peer
    /// that does not read holds the connection until the idle timeout, or a connection
    /// timer that closes it ([`set_conn_timer`](Context::set_conn_timer) works while it
    /// flushes).
    pub fn close_after_flush(&mut self, conn: ConnId) {
        self.core.close_after_flush(conn);
    }

    /// Shuts down the writing side of `conn` (a TCP FIN) once its queued output is written;
    /// reading goes on. [`send`](Context::send) fails from now on.
    pub fn shutdown_write(&mut self, conn: ConnId) {
        self.core.shutdown_write(conn);
    }

    /// Stops reading from `conn` until [`resume_reading`](Context::resume_reading): its
    /// input is held (the current `on_data`'s shows nothing more), and the peer is then
    /// held back by TCP flow control; nothing it sent is lost.
    pub fn pause_reading(&mut self, conn: ConnId) {
        self.core.set_paused(conn, true);
    }

    /// Reads from `conn` again after [`pause_reading`](Context::pause_reading): input left
    /// unused is offered again, first, even if the peer sends nothing more. Input offered
    /// again and left whole (the call used none of it and paused again) comes next with
    /// whatever the socket holds by then, or alone once anything else happened in the
    /// server since that call (any other callback, such as a timer's or a close's, or any
    /// `on_data` but such a refusal): two handlers that only refuse and resume each other
    /// wait for that, they do not spin. A resume within the very call that paused shows the
    /// input again at once; what that call then leaves waits for more bytes, as any input a
    /// call leaves unheld does.
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
    pub fn state(&self, conn: ConnId) -> Option<&H::State> {
        self.core.get(conn)?;
        self.states.get(conn.key)
    }

    /// The handler's value for `conn`, mutably; `None` once it is gone. To send while
    /// holding it, use [`split`](Context::split).
    pub fn state_mut(&mut self, conn: ConnId) -> Option<&mut H::State> {
        self.core.get(conn)?;
        self.states.get_mut(conn.key)
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

    /// What the TLS handshake of `conn` settled (version, cipher suite, SNI name, ALPN,
    /// the client's certificates): known from `on_open` on. `None` for a connection that is
    /// not TLS (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls(&self, conn: ConnId) -> Option<&crate::tls::TlsInfo> {
        self.core.get(conn)?.tls.as_ref()?.info()
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

    /// The socket of `conn`, to set options or ask the kernel about it (keep-alive,
    /// `TCP_USER_TIMEOUT`, `TCP_INFO`, buffer sizes) with `socket2`; `None` once it is
    /// gone. Reading, writing or shutting it down behind the server's back loses bytes or
    /// confuses it: use the context for those.
    ///
    /// ```
    /// # use dualstack::{ConnId, ConnInfo, Context, Handler, Input};
    /// # struct Tuned;
    /// # impl Handler for Tuned {
    /// #     type State = ();
    /// #     fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    /// fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
    ///     if let Some(socket) = ctx.socket(conn) {
    ///         let _ = socket.set_keepalive(true);
    ///     }
    /// }
    /// # }
    /// # let _server = dualstack::Server::builder().listen("127.0.0.1:0").bind(Tuned)?;
    /// # Ok::<(), dualstack::Error>(())
    /// ```
    pub fn socket(&self, conn: ConnId) -> Option<socket2::SockRef<'_>> {
        self.core.socket(conn)
    }

    /// The listener that accepted `conn`; `None` once it is gone.
    pub fn listener_of(&self, conn: ConnId) -> Option<ListenerId> {
        self.core.listener_of(conn)
    }

    /// A listener of the server.
    pub fn listener(&self, id: ListenerId) -> Option<&ListenerInfo> {
        self.core.listener(id)
    }

    /// How many bytes are queued for `conn` and not written yet (0 if it is closed). On a
    /// TLS connection, plaintext already encrypted into the session (up to 64 KiB of records
    /// waiting for the socket) is no longer counted.
    pub fn queued(&self, conn: ConnId) -> usize {
        self.core.queued(conn)
    }

    /// Whether a graceful stop leaves `conn` open, served as before, until the handler closes
    /// it or calls this again with `false` (then it closes once its queue is written, as
    /// the others did at the stop): for work in flight, such as a response still being
    /// streamed, which a stop would otherwise cut short; its timers go on through the stop.
    /// The shutdown timeout
    /// ([`ServerBuilder::shutdown_timeout`](crate::ServerBuilder::shutdown_timeout)) still
    /// bounds the stop: what is kept open then is cut short (a TLS peer sees no
    /// `close_notify`, a truncation). After a hand-over's drain timeout, connections still
    /// kept open get the shutdown timeout on top. Off for every connection at first; set it
    /// when the work begins and clear it when it ends (hyper's and Go's graceful shutdown
    /// wait for active requests the same way, and close idle connections at once).
    pub fn keep_open_on_stop(&mut self, conn: ConnId, keep: bool) {
        self.core.keep_open_on_stop(conn, keep);
    }

    /// Takes the bytes `conn` sent that the handler has not used: they are the caller's now,
    /// and the connection keeps nothing. For [`Handler::on_peer_closed`], where a last frame
    /// without its end (a final line with no newline) is never completed otherwise: tokio's
    /// `decode_eof`. Empty if nothing is kept, if `conn` is closed, and during `conn`'s own
    /// `on_data` (its input is in the [`Input`](crate::Input) then).
    pub fn take_unused_input(&mut self, conn: ConnId) -> Vec<u8> {
        self.core.take_unused_input(conn)
    }

    /// Whether output for `conn` waits for the kernel, which refused some of it: then, and
    /// only then, [`Handler::on_drained`] will come, once it is all written (Node's
    /// `writableNeedDrain`). A handler producing output at its own pace (a large file, a
    /// stream) sends pieces while this is `false` and goes on in `on_drained`; waiting for
    /// `on_drained` because [`queued`](Context::queued) is above 0 waits for ever when the
    /// kernel takes the queue at the end of the turn. A queue that reaches 64 KiB is offered
    /// to the kernel at once, so a loop of sends ends when the peer is slower than the
    /// producer; under a [`max_queued`](crate::ServerBuilder::max_queued) below that, a
    /// send can be refused with [`SendError::QueueFull`] first: that piece was not taken,
    /// and, unless it alone is over the limit (`queued: 0`), `needs_drain` is then true
    /// (the queue was offered to the kernel before the refusal), so keep the piece for
    /// `on_drained`. `false` once `conn` is closing or closed.
    pub fn needs_drain(&self, conn: ConnId) -> bool {
        self.core.needs_drain(conn)
    }

    /// Whether `conn`'s input is held: reading paused
    /// ([`pause_reading`](Context::pause_reading)), or its output above the high-water mark
    /// (until it drains to the low one). The server, not the peer, is then the one not
    /// reading: a "finish your request" timer that comes now should be armed again, not
    /// close the connection. `false` for a connection that is closing (after
    /// [`close_after_flush`](Context::close_after_flush), or in a stop's drain: a timer for
    /// it bounds that flush), or closed, and after the peer's end (nothing is left to
    /// read). Within `on_data`, [`Input::is_held`](crate::Input::is_held) says whether the
    /// call's input was held at any point in it, and stays so for the call.
    pub fn is_held(&self, conn: ConnId) -> bool {
        self.core.is_held(conn)
    }

    /// How many bytes `conn` sent that the handler has not used (0 if it is closed), as
    /// kept between calls: during `conn`'s own `on_data` they are in its
    /// [`Input`](crate::Input) instead.
    pub fn unused_input(&self, conn: ConnId) -> usize {
        self.core.unused_input(conn)
    }

    /// Calls [`Handler::on_timer`] with `value` after `delay`, counted from
    /// [`now`](Context::now). A delay too long for the clock (`Duration::MAX`) means a
    /// century, which is to say never. A timer set from `on_timer` fires on a later turn,
    /// after a poll, even with a zero delay.
    pub fn set_timer(&mut self, delay: Duration, value: u64) -> TimerId {
        self.core.set_timer(delay, value)
    }

    /// Calls [`Handler::on_conn_timer`] for `conn` with `value` after `delay` (as
    /// [`set_timer`](Context::set_timer) counts it), unless `conn` closes first: its timers
    /// are cancelled with it. A connection flushing its queue before it closes (after
    /// [`close_after_flush`](Context::close_after_flush), or in a stop's drain) has not
    /// closed: its timers fire, and one set then can bound the flush (close it in
    /// [`Handler::on_conn_timer`]). `None` if `conn` has closed or is closing.
    pub fn set_conn_timer(&mut self, conn: ConnId, delay: Duration, value: u64) -> Option<TimerId> {
        self.core.set_conn_timer(conn, delay, value)
    }

    /// Cancels a timer of either kind; returns whether it was still pending. A cancelled
    /// timer never fires, even one already due in this turn.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.cancel_timer(timer)
    }

    /// Stops the server gracefully once this callback returns: no more accepting, pending
    /// timers cancelled, [`Handler::on_stop`], then queued output flushed (up to the
    /// shutdown timeout) and every connection closed with
    /// [`CloseReason::Shutdown`](crate::CloseReason::Shutdown).
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

/// The rest of a [`Context`], lent by [`Context::split`] beside one connection's value:
/// sending to any connection, closing, pausing and resuming reading, timers of both kinds
/// and the turn's time. (The rest of the `Context`, such as peers, sockets and stats, is
/// reached before or after the split.)
pub struct Sender<'a> {
    core: &'a mut Core,
}

impl fmt::Debug for Sender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender<'_> {
    /// As [`Context::send`].
    ///
    /// # Errors
    ///
    /// As for [`Context::send`].
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, data)
    }

    /// As [`Context::queued`].
    pub fn queued(&self, conn: ConnId) -> usize {
        self.core.queued(conn)
    }

    /// As [`Context::needs_drain`].
    pub fn needs_drain(&self, conn: ConnId) -> bool {
        self.core.needs_drain(conn)
    }

    /// As [`Context::keep_open_on_stop`].
    pub fn keep_open_on_stop(&mut self, conn: ConnId, keep: bool) {
        self.core.keep_open_on_stop(conn, keep);
    }

    /// As [`Context::is_open`].
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.core.is_open(conn)
    }

    /// As [`Context::connections`].
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.core.sendable()
    }

    /// As [`Context::close`].
    pub fn close(&mut self, conn: ConnId) {
        self.core.close(conn);
    }

    /// As [`Context::close_after_flush`].
    pub fn close_after_flush(&mut self, conn: ConnId) {
        self.core.close_after_flush(conn);
    }

    /// As [`Context::pause_reading`].
    pub fn pause_reading(&mut self, conn: ConnId) {
        self.core.set_paused(conn, true);
    }

    /// As [`Context::resume_reading`].
    pub fn resume_reading(&mut self, conn: ConnId) {
        self.core.set_paused(conn, false);
    }

    /// As [`Context::set_timer`].
    pub fn set_timer(&mut self, delay: Duration, value: u64) -> TimerId {
        self.core.set_timer(delay, value)
    }

    /// As [`Context::set_conn_timer`].
    pub fn set_conn_timer(&mut self, conn: ConnId, delay: Duration, value: u64) -> Option<TimerId> {
        self.core.set_conn_timer(conn, delay, value)
    }

    /// As [`Context::cancel_timer`].
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.cancel_timer(timer)
    }

    /// As [`Context::now`].
    pub fn now(&self) -> Instant {
        self.core.now()
    }
}
