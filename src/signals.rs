//! Stopping a server on a signal, as a service is expected to stop (the cargo feature
//! `signals`): the first SIGINT or SIGTERM (Ctrl-C or Ctrl-Break on Windows) stops the
//! server gracefully and tells a waiting service manager `STOPPING=1`; a second one, while
//! the graceful stop runs, ends the process at once with status 128 + the signal (130 after
//! SIGINT or Ctrl-C, 143 after SIGTERM).
//!
//! ```no_run
//! use dualstack::signals::Signals;
//! use dualstack::{ConnId, Context, Handler, Input, Server};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type State = ();
//!     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
//!         let _ = ctx.send(conn, input.take_all());
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing: a signal during start-up (a slow name lookup) ends the process at once.
//!     let signals = Signals::install()?;
//!     let mut server = Server::builder().listen("localhost:7000").bind(Echo)?;
//!     signals.stop(&server)?; // from now on, a signal stops this server gracefully
//!     server.run()?; // returns once every connection is closed
//!     Ok(())
//! }
//! ```

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::reactor::{Handler, Server, WeakHandle};

/// Where SIGINT and SIGTERM go: nowhere yet (the process ends at once, with status 0:
/// nothing was served), or, once [`stop`](Signals::stop) named a server, to the graceful
/// stop of every server it named. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Signals {
    /// The servers [`stop`](Signals::stop) named, and whether a signal came.
    named: Arc<Mutex<Named>>,
    /// While set, a signal ends the process at once with status 0 (Unix; on Windows the
    /// Ctrl-C handler looks at `named` instead).
    #[cfg_attr(not(unix), allow(dead_code))]
    early: Arc<AtomicBool>,
}

/// The servers a signal stops: held weakly (a server dropped is forgotten, its descriptors
/// closed); the waiting thread exists once one was named.
#[derive(Debug, Default)]
struct Named {
    servers: Vec<WeakHandle>,
    /// The thread that waits for signals was started (Unix; on Windows the Ctrl-C handler
    /// is installed with the rest).
    #[cfg_attr(not(unix), allow(dead_code))]
    waiting: bool,
    /// The first signal came: a server named from now on is stopped at once.
    signalled: bool,
}

impl Signals {
    /// Catches SIGINT and SIGTERM (Ctrl-C, Ctrl-Break and a closing console on Windows)
    /// from now on: until [`stop`](Signals::stop) names a server, one ends the process at
    /// once with status 0. Call it first, before binding: a signal that arrives before the
    /// handlers exist kills the process with the default action (status 130 or 143, and
    /// no graceful anything). It opens no descriptor: until the library has checked the
    /// inherited sockets, nothing may sit on a number a spec names (`fd:3`).
    ///
    /// # Errors
    ///
    /// The OS error of installing the handlers.
    pub fn install() -> io::Result<Signals> {
        let signals = Signals {
            named: Arc::default(),
            early: Arc::new(AtomicBool::new(true)),
        };
        #[cfg(unix)]
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(signal, 0, signals.early.clone())?;
        }
        // Windows: Ctrl-C and Ctrl-Break (and the console closing, though Windows then ends
        // the process soon after the handler returns, so that stop may not finish), through
        // the ctrlc crate; the same contract.
        #[cfg(windows)]
        {
            let target = signals.clone();
            let count = std::sync::atomic::AtomicUsize::new(0);
            ctrlc::set_handler(move || {
                if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    target.deliver(2);
                } else {
                    std::process::exit(130);
                }
            })
            .map_err(|e| io::Error::other(format!("cannot catch Ctrl-C: {e}")))?;
        }
        Ok(signals)
    }

    /// From now on the first signal stops `server` gracefully (its
    /// [`ServerHandle::stop`](crate::ServerHandle::stop), and `STOPPING=1` to a service
    /// manager that waits for it), and a second ends the process at once with status 128 +
    /// the signal. A process with several servers (each run on a thread of its own) names
    /// each: the first signal stops them all, and one named after it at once. A server
    /// dropped is forgotten (with none left, a signal ends the process with status 0, as
    /// before the first). Graceful as
    /// [`Context::stop`](crate::Context::stop) says: no more accepting, `on_stop`, then
    /// each connection closed once its queued output is written (within the shutdown
    /// timeout); it does not wait for clients to finish. To let them finish while a new
    /// process serves, hand over instead ([`hand_over_on_usr2`](Signals::hand_over_on_usr2)).
    ///
    /// # Errors
    ///
    /// The OS error of making the thread's signal pipe (Unix).
    pub fn stop<H: Handler>(&self, server: &Server<H>) -> io::Result<()> {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        named.servers.retain(|s| s.upgrade().is_some());
        if named.signalled {
            // The signal came before this server was named (a start-up of several).
            server.handle().stop();
            return Ok(());
        }
        #[cfg(unix)]
        if !named.waiting {
            // The waiting thread, for every server named from now on (it takes the lock
            // only for a signal, after this returns).
            use signal_hook::consts::{SIGINT, SIGTERM};
            let target = self.clone();
            let mut caught = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
            std::thread::Builder::new()
                .name("dualstack-signals".to_owned())
                .spawn(move || {
                    let mut caught = caught.forever();
                    if let Some(signal) = caught.next() {
                        target.deliver(signal);
                    }
                    // A second signal while the graceful stop runs: stop now, as is
                    // customary.
                    if let Some(signal) = caught.next() {
                        std::process::exit(128 + signal);
                    }
                })?;
            // Only now that the waiting thread's handlers exist (a signal from here on
            // reaches both: the early exit is still right, nothing was served).
            self.early.store(false, std::sync::atomic::Ordering::SeqCst);
            named.waiting = true;
        }
        named.servers.push(server.handle().downgrade());
        Ok(())
    }

    /// Calls `reload` on a thread of its own at each SIGHUP, the customary "read your
    /// configuration again" (with the `tls` feature, typically: read the certificate files
    /// into a `TlsConfig` and hand it to
    /// [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls)). Until it is called,
    /// SIGHUP ends the process; it needs no server, so it may follow
    /// [`install`](Signals::install) at once. Windows has no SIGHUP: there this does nothing.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// let signals = dualstack::signals::Signals::install()?;
    /// signals.on_hangup(|| log::info!("SIGHUP: configuration read again"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// With TLS: one function builds the configuration at start and at each reload (a
    /// reload replaces all of it, ALPN and client CAs too), and the closure owns a handle:
    ///
    /// ```no_run
    /// # use dualstack::prelude::*;
    /// # struct App;
    /// # impl Handler for App {
    /// #     type State = ();
    /// #     fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    /// # }
    /// use dualstack::{TlsConfig, TlsError};
    ///
    /// fn tls() -> Result<TlsConfig, TlsError> {
    ///     Ok(TlsConfig::new().cert_files("site.pem", "site.key")?.alpn(["h2", "http/1.1"]))
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let signals = dualstack::signals::Signals::install()?;
    /// let mut server = Server::builder().listen_tls(":8443", tls()?).bind(App)?;
    /// let handle = server.handle();
    /// signals.on_hangup(move || match tls().and_then(|t| handle.reload_tls(&t)) {
    ///     Ok(()) => log::info!("SIGHUP: certificates read again"),
    ///     Err(e) => log::warn!("SIGHUP: {e}; the running certificates stay"),
    /// })?;
    /// signals.stop(&server)?;
    /// server.run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error of making the thread's signal pipe (Unix).
    pub fn on_hangup(&self, mut reload: impl FnMut() + Send + 'static) -> io::Result<()> {
        #[cfg(unix)]
        {
            let mut caught = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
            std::thread::Builder::new()
                .name("dualstack-sighup".to_owned())
                .spawn(move || {
                    for _ in caught.forever() {
                        reload();
                    }
                })?;
        }
        #[cfg(not(unix))]
        let _ = &mut reload;
        Ok(())
    }

    /// At each SIGUSR2 (nginx's signal for it), hands `server`'s listening sockets to a
    /// successor as `how` says ([`ServerHandle::hand_over`](crate::ServerHandle::hand_over)):
    /// a restart or an upgrade that refuses and resets no connection; the outcome is logged
    /// (at info; failures at warn). The successor must call
    /// [`notify`](crate::notify)`("READY=1")` after its binds, service manager or not.
    /// Without this, SIGUSR2 ends the process.
    /// Windows has no SIGUSR2 (and no hand-over): there this does nothing.
    ///
    /// ```no_run
    /// # use dualstack::{ConnId, Context, Handler, Input, Server};
    /// # struct App;
    /// # impl Handler for App {
    /// #     type State = ();
    /// #     fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let signals = dualstack::signals::Signals::install()?;
    /// let mut server = Server::builder().listen("localhost:7000").bind(App)?;
    /// signals.stop(&server)?;
    /// signals.hand_over_on_usr2(&server, dualstack::HandOver::new())?;
    /// dualstack::notify("READY=1")?; // what a successor's predecessor waits for
    /// server.run()?; // after a hand-over: returns once the connections drained
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error of making the thread's signal pipe (Unix).
    pub fn hand_over_on_usr2<H: Handler>(
        &self,
        server: &Server<H>,
        how: crate::HandOver,
    ) -> io::Result<()> {
        #[cfg(unix)]
        {
            let handle = server.handle();
            let mut caught = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])?;
            std::thread::Builder::new()
                .name("dualstack-sigusr2".to_owned())
                .spawn(move || {
                    for _ in caught.forever() {
                        match handle.hand_over(how.clone()) {
                            Ok(()) => log::info!("SIGUSR2: handing the listening sockets over"),
                            Err(e) => log::warn!("SIGUSR2: {e}"),
                        }
                    }
                })?;
        }
        #[cfg(not(unix))]
        let _ = (server, how);
        Ok(())
    }

    fn deliver(&self, signal: i32) {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        let servers: Vec<_> = named
            .servers
            .iter()
            .filter_map(WeakHandle::upgrade)
            .collect();
        if servers.is_empty() {
            // Before there is a server (a slow lookup, say), or after the last is gone:
            // nothing to flush or close.
            std::process::exit(0);
        }
        named.signalled = true;
        // The manager hears it before the stop is asked for: a server with nothing to drain
        // can end the process at once, and a datagram sent after that is never sent. Sent
        // without waiting (a manager whose queue is full loses it), so that nothing keeps
        // the stop from happening.
        let _ = crate::inherit::notify_without_waiting("STOPPING=1");
        for server in servers {
            server.stop();
        }
        log::info!("signal {signal}: stopping (again to stop at once)");
    }
}
