//! [`ServerHandle`]: stop or wake a server from another thread.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Registry, Waker};

use super::token;

/// Stops or wakes a [`Server`](crate::Server) from another thread (or a signal-handling
/// thread), through a `mio::Waker`. Cheap to clone; `Send` and `Sync`.
///
/// ```
/// # use dualstack::{ConnId, Context, Handler, Input, Server};
/// # struct Echo;
/// # impl Handler for Echo {
/// #     type State = ();
/// #     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) { let _ = ctx.send(conn, input.take_all()); }
/// # }
/// let mut server = Server::builder().listen("127.0.0.1:0").bind(Echo)?;
/// let handle = server.handle();
/// let stopper = std::thread::spawn(move || handle.stop());
/// server.run()?; // returns once the stop is handled and every connection is closed
/// stopper.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

struct Inner {
    waker: Waker,
    stop: AtomicBool,
    /// `wake`, `stop` or a reload woke the loop: `on_wake` follows.
    woken: AtomicBool,
    /// A TLS handshake thread finished a step: the loop takes it back (no `on_wake`).
    handshakes: AtomicBool,
    /// A hand-over asked for, or its outcome known: the loop looks (no `on_wake`).
    hand_over_news: AtomicBool,
    /// The hand-over asked for and not begun, and whether one is under way or done.
    hand_over: std::sync::Mutex<HandOverState>,
    /// A TLS server's resumption state (kept across reloads), and the configuration a
    /// reload handed in that the loop has not taken yet.
    #[cfg(feature = "tls")]
    tls: std::sync::Mutex<TlsReload>,
}

/// Where a server is with handing its sockets over.
#[derive(Default)]
struct HandOverState {
    /// Asked for, not begun yet.
    request: Option<crate::handover::HandOver>,
    /// Asked for, or under way: another is refused.
    busy: bool,
    /// Done, or the server is stopping: every later one is refused.
    over: bool,
}

#[cfg(feature = "tls")]
#[derive(Default)]
struct TlsReload {
    resumption: Option<crate::tls::Resumption>,
    /// Per listener: `None` if not TLS, else its configuration's group (listeners with
    /// equal settings share one).
    groups: Vec<Option<usize>>,
    next_group: usize,
    pending: Vec<(Vec<usize>, crate::tls::Acceptor)>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("stop_requested", &self.inner.stop.load(Ordering::Relaxed))
            .finish()
    }
}

/// A [`ServerHandle`] that does not keep the server's waker (a descriptor) alive: for a
/// list of servers that may each be dropped (the signals module's).
#[cfg(feature = "signals")]
#[derive(Debug, Clone)]
pub(crate) struct WeakHandle(std::sync::Weak<Inner>);

#[cfg(feature = "signals")]
impl WeakHandle {
    /// The handle, while the server (or another handle of it) is there.
    pub(crate) fn upgrade(&self) -> Option<ServerHandle> {
        self.0.upgrade().map(|inner| ServerHandle { inner })
    }
}

impl ServerHandle {
    /// A handle that does not keep the server's resources alive.
    #[cfg(feature = "signals")]
    pub(crate) fn downgrade(&self) -> WeakHandle {
        WeakHandle(Arc::downgrade(&self.inner))
    }

    pub(crate) fn new(registry: &Registry) -> io::Result<ServerHandle> {
        Ok(ServerHandle {
            inner: Arc::new(Inner {
                waker: Waker::new(registry, token::WAKER_TOKEN)?,
                stop: AtomicBool::new(false),
                woken: AtomicBool::new(false),
                handshakes: AtomicBool::new(false),
                hand_over_news: AtomicBool::new(false),
                hand_over: Default::default(),
                #[cfg(feature = "tls")]
                tls: Default::default(),
            }),
        })
    }

    /// Asks the server to stop gracefully, as [`Context::stop`](crate::Context::stop) does.
    /// Returns at once; the server's thread does the work. Calling it again is harmless, and
    /// so is calling it after the server is gone.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.woken.store(true, Ordering::Release);
        if let Err(e) = self.inner.waker.wake() {
            log::warn!("cannot wake the server to stop it: {e}");
        }
    }

    /// Wakes the server: it calls [`Handler::on_wake`](crate::Handler::on_wake) on its thread.
    ///
    /// # Errors
    ///
    /// The OS error of the waker.
    pub fn wake(&self) -> io::Result<()> {
        self.inner.woken.store(true, Ordering::Release);
        self.inner.waker.wake()
    }

    /// Hands this server's listening sockets to a successor process and, once it is ready,
    /// stops accepting and drains: a restart or an upgrade that refuses and resets no
    /// connection (Unix). Returns at once; the server's thread starts the successor, and
    /// [`Handler::on_hand_over`](crate::Handler::on_hand_over) hears what became of it
    /// (it is logged too).
    ///
    /// The successor ([`HandOver::new`](crate::HandOver::new): this program as the file on
    /// disk is now, with this process's arguments) gets the listening sockets on
    /// descriptors 3, 4, … (`LISTEN_FDS`, `LISTEN_FDNAMES` naming each one's spec), its
    /// standard streams, and no other descriptor of this process. It starts in a process
    /// group of its own (a failed one is killed with whatever it started), and joins this
    /// process's group once it is ready, as a child of it would be (a terminal's Ctrl-C, or
    /// a supervisor that signals the group, reaches it). Its binds take, for each socket they plan, the
    /// passed socket of the same spec and address (its mode and port checked: a
    /// difference is a bind error naming both), bind only what was not passed, and close
    /// passed sockets nothing planned once it is ready. It must say `READY=1` through
    /// [`notify`](crate::notify) after every bind, within the ready timeout (a `READY=1`
    /// before any bind is refused; [`notify`](crate::notify) adds the server's pid). A
    /// wrapper script in between works if it keeps descriptors 3 and up open, whether it
    /// `exec`s the server or starts it as a child: the pid the server sends with `READY=1`
    /// is the one reported and given to the service manager.
    ///
    /// Then this process tells a service manager the new main pid (`MAINPID=`), stops
    /// accepting (its copies of the sockets stay open until the server is dropped; both
    /// processes accept from the same sockets, so no queued connection is lost, and a
    /// Unix-domain socket's file stays, now the successor's to remove), and drains: its
    /// connections go on until they end or the drain timeout passes; then the graceful
    /// stop ([`Handler::on_stop`](crate::Handler::on_stop), each connection closed once its
    /// output is written) ends [`Server::run`](crate::Server::run). The successor replaces
    /// the whole process: from then on this process sends the service manager nothing
    /// ([`notify`](crate::notify) returns `false`), so hand over a process with one server.
    ///
    /// A successor that ends before it is ready is reaped, one not ready in time is killed
    /// (with its process group), and this server goes on as before; a later hand-over may
    /// try again. A stop while the successor starts kills it too. A successor that dies
    /// after it said `READY=1` leaves the sockets with nobody accepting: clients wait in
    /// the backlogs until a new server takes them (a service manager restarting it), or
    /// are reset when this process, the last holder, exits.
    ///
    /// ```no_run
    /// # use dualstack::{ConnId, Context, Handler, Input, Server};
    /// # struct App;
    /// # impl Handler for App {
    /// #     type State = ();
    /// #     fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    /// # }
    /// let mut server = Server::builder().listen("localhost:7000").bind(App)?;
    /// // After every bind: a successor's first READY=1 reaches its predecessor.
    /// dualstack::notify("READY=1")?;
    /// let handle = server.handle();
    /// // From another thread (a SIGUSR2 handler, an admin command):
    /// handle.hand_over(dualstack::HandOver::new())?;
    /// server.run()?; // returns once the successor is ready and the connections drained
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`HandOverErrorKind::Busy`](crate::HandOverErrorKind::Busy) while another hand-over
    /// runs; [`Stopping`](crate::HandOverErrorKind::Stopping) once the server handed over
    /// or began to stop; [`Unsupported`](crate::HandOverErrorKind::Unsupported) off Unix.
    /// What goes wrong later comes to `on_hand_over`.
    pub fn hand_over(
        &self,
        how: crate::handover::HandOver,
    ) -> Result<(), crate::handover::HandOverError> {
        #[cfg(not(unix))]
        {
            let _ = how;
            Err(crate::handover::unsupported())
        }
        #[cfg(unix)]
        {
            use crate::handover::{HandOverError, HandOverErrorKind};
            let mut state = self
                .inner
                .hand_over
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if state.over || self.inner.stop.load(Ordering::Acquire) {
                return Err(HandOverError::new(
                    HandOverErrorKind::Stopping,
                    "this server handed over already, or is stopping: it has no sockets to pass",
                ));
            }
            if state.busy {
                return Err(HandOverError::new(
                    HandOverErrorKind::Busy,
                    "a hand-over is running already; one at a time (wait for its outcome)",
                ));
            }
            state.busy = true;
            state.request = Some(how);
            drop(state);
            self.hand_over_news();
            Ok(())
        }
    }

    /// Something for the loop about a hand-over: a request, or an outcome.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn hand_over_news(&self) {
        self.inner.hand_over_news.store(true, Ordering::Release);
        if let Err(e) = self.inner.waker.wake() {
            log::warn!("cannot wake the server for a hand-over: {e}");
        }
    }

    /// Whether there is hand-over news since the last call (then clears it).
    pub(crate) fn take_hand_over_news(&self) -> bool {
        self.inner.hand_over_news.swap(false, Ordering::Acquire)
    }

    /// The hand-over asked for and not begun, if any.
    pub(crate) fn take_hand_over_request(&self) -> Option<crate::handover::HandOver> {
        self.inner
            .hand_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request
            .take()
    }

    /// The hand-over under way ended: `done` if the successor took over (no other may
    /// follow), else another may be tried.
    pub(crate) fn hand_over_ended(&self, done: bool) {
        let mut state = self
            .inner
            .hand_over
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        state.busy = false;
        state.over |= done;
    }

    /// The server stops: no hand-over from now on.
    pub(crate) fn no_more_hand_overs(&self) {
        let mut state = self
            .inner
            .hand_over
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        state.over = true;
        state.request = None;
    }

    /// A TLS handshake thread has a finished step for the loop.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn handshake_done(&self) {
        self.inner.handshakes.store(true, Ordering::Release);
        if let Err(e) = self.inner.waker.wake() {
            log::warn!("cannot wake the server for a finished TLS handshake step: {e}");
        }
    }

    /// Whether a handshake thread woke the loop since the last call (then clears it).
    pub(crate) fn take_handshakes(&self) -> bool {
        self.inner.handshakes.swap(false, Ordering::Acquire)
    }

    /// Whether `wake`, `stop` or a reload woke the loop since the last call (then clears it).
    pub(crate) fn take_woken(&self) -> bool {
        self.inner.woken.swap(false, Ordering::Acquire)
    }

    /// Replaces the TLS configuration of the server's TLS listeners (feature `tls`), from
    /// any thread: the whole configuration (certificates, ALPN, client CAs, handshake
    /// deadline), for new handshakes from the loop's next turn; established connections
    /// keep theirs; session resumption goes on working across it (the ticket keys and the
    /// session cache are the server's, not the configuration's). A configuration whose
    /// files did not read or match failed already where it was built
    /// ([`TlsConfig::cert_files`](crate::TlsConfig::cert_files)…), so nothing is swapped
    /// then; replace a certificate and its key together (write both, then reload; a
    /// watcher that reloads on each file's change sees the first one alone and fails on
    /// the pair until the second is written). Since a reload replaces everything, build
    /// the configuration at start and at each reload with one function
    /// ([`Signals::on_hangup`](crate::signals::Signals::on_hangup) shows it).
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::NoTlsListener`](crate::TlsErrorKind::NoTlsListener): the server has
    /// none. [`TlsErrorKind::ListenersDiffer`](crate::TlsErrorKind::ListenersDiffer): its TLS
    /// listeners were given different configurations (an mTLS listener beside a public
    /// one), which one configuration cannot replace without turning one into the other:
    /// reload each with [`reload_tls_of`](ServerHandle::reload_tls_of).
    ///
    /// ```no_run
    /// fn reload(handle: &dualstack::ServerHandle) -> Result<(), dualstack::TlsError> {
    ///     let tls = dualstack::TlsConfig::new().cert_files("cert.pem", "key.pem")?; // read now
    ///     handle.reload_tls(&tls) // on Err, the old certificates stay
    /// }
    /// # let _ = reload;
    /// ```
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, config: &crate::tls::TlsConfig) -> Result<(), crate::tls::TlsError> {
        self.reload(None, config)
    }

    /// [`reload_tls`](ServerHandle::reload_tls) for the TLS listeners `listeners` only: their
    /// indexes in [`Server::listeners`](crate::Server::listeners) (and
    /// [`ListenerId::index`](crate::ListenerId::index)); the others keep their
    /// configuration.
    ///
    /// ```no_run
    /// # use dualstack::{ConnId, Context, Handler, Input, Server, TlsConfig};
    /// # struct App;
    /// # impl Handler for App {
    /// #     type State = ();
    /// #     fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    /// # }
    /// let public = TlsConfig::new().cert_files("site.pem", "site.key")?;
    /// let internal = public.clone().client_ca_file("staff-ca.pem")?;
    /// let server = Server::builder()
    ///     .listen_tls(":443", public)
    ///     .listen_tls(":8443", internal)
    ///     .bind(App)?;
    /// // Later, with new certificates: each listener keeps its own settings.
    /// let public = TlsConfig::new().cert_files("site.pem", "site.key")?;
    /// let internal = public.clone().client_ca_file("staff-ca.pem")?;
    /// let (mut outside, mut staff) = (Vec::new(), Vec::new());
    /// for (i, l) in server.listeners().iter().enumerate() {
    ///     let port = l.local_addr.ip().map(|a| a.port());
    ///     if port == Some(443) { outside.push(i) } else { staff.push(i) }
    /// }
    /// server.handle().reload_tls_of(&outside, &public)?;
    /// server.handle().reload_tls_of(&staff, &internal)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::NotTlsListener`](crate::TlsErrorKind::NotTlsListener): one of them is
    /// not a TLS listener of this server (or none was named).
    #[cfg(feature = "tls")]
    pub fn reload_tls_of(
        &self,
        listeners: &[usize],
        config: &crate::tls::TlsConfig,
    ) -> Result<(), crate::tls::TlsError> {
        self.reload(Some(listeners), config)
    }

    #[cfg(feature = "tls")]
    fn reload(
        &self,
        listeners: Option<&[usize]>,
        config: &crate::tls::TlsConfig,
    ) -> Result<(), crate::tls::TlsError> {
        use crate::tls::{TlsError, TlsErrorKind};
        let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        let Some(resumption) = &tls.resumption else {
            return Err(TlsError::whole(TlsErrorKind::NoTlsListener));
        };
        let targets: Vec<usize> = match listeners {
            None => {
                let mut groups = tls.groups.iter().flatten();
                let first = groups.next();
                if groups.any(|g| Some(g) != first) {
                    return Err(TlsError::whole(TlsErrorKind::ListenersDiffer));
                }
                (0..tls.groups.len())
                    .filter(|&i| tls.groups[i].is_some())
                    .collect()
            }
            Some(ids) => {
                let bad = ids
                    .iter()
                    .find(|&&i| tls.groups.get(i).copied().flatten().is_none());
                if let Some(&i) = bad {
                    return Err(TlsError::whole(TlsErrorKind::NotTlsListener(Some(i))));
                }
                if ids.is_empty() {
                    return Err(TlsError::whole(TlsErrorKind::NotTlsListener(None)));
                }
                ids.to_vec()
            }
        };
        let acceptor = config.build(resumption)?;
        // The listeners reloaded together have one configuration from now on.
        let group = tls.next_group;
        tls.next_group += 1;
        for &i in &targets {
            tls.groups[i] = Some(group);
        }
        tls.pending.push((targets, acceptor));
        drop(tls);
        self.inner.woken.store(true, Ordering::Release);
        if let Err(e) = self.inner.waker.wake() {
            log::warn!("cannot wake the server to reload its TLS configuration: {e}");
        }
        Ok(())
    }

    /// The server has TLS listeners, served with `resumption`; `groups` says, per
    /// listener, which configuration it has (`None`: not TLS; equal: the same settings).
    #[cfg(feature = "tls")]
    pub(crate) fn enable_tls(
        &self,
        resumption: crate::tls::Resumption,
        groups: Vec<Option<usize>>,
    ) {
        let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        tls.next_group = groups.iter().flatten().max().map_or(0, |g| g + 1);
        tls.groups = groups;
        tls.resumption = Some(resumption);
    }

    /// The configurations reloads handed in, in order, each with the listeners it is for.
    #[cfg(feature = "tls")]
    pub(crate) fn take_tls(&self) -> Vec<(Vec<usize>, crate::tls::Acceptor)> {
        let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut tls.pending)
    }

    /// Whether a stop was asked for since the last call (then clears it).
    pub(crate) fn take_stop(&self) -> bool {
        self.inner.stop.swap(false, Ordering::Acquire)
    }
}
