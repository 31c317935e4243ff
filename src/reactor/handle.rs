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
    /// A TLS server's resumption state (kept across reloads), and the configuration a
    /// reload handed in that the loop has not taken yet.
    #[cfg(feature = "tls")]
    tls: std::sync::Mutex<TlsReload>,
}

#[cfg(feature = "tls")]
#[derive(Default)]
struct TlsReload {
    resumption: Option<crate::tls::Resumption>,
    pending: Option<crate::tls::Acceptor>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("stop_requested", &self.inner.stop.load(Ordering::Relaxed))
            .finish()
    }
}

impl ServerHandle {
    pub(crate) fn new(registry: &Registry) -> io::Result<ServerHandle> {
        Ok(ServerHandle {
            inner: Arc::new(Inner {
                waker: Waker::new(registry, token::WAKER_TOKEN)?,
                stop: AtomicBool::new(false),
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
        self.inner.waker.wake()
    }

    /// Whether a stop was asked for since the last call (then clears it).
    /// Replaces the TLS configuration of every TLS listener (feature `tls`), from any
    /// thread: new handshakes use it from the loop's next turn; established connections
    /// keep theirs; session resumption goes on working across it (the ticket keys and the
    /// session cache are the server's, not the configuration's). Built and checked here,
    /// before the swap: an error (a file that cannot be read, a key that does not belong to
    /// its certificate…) names the file and leaves the running configuration as it was.
    ///
    /// ```no_run
    /// fn reload(handle: &dualstack::ServerHandle) -> Result<(), dualstack::TlsError> {
    ///     let tls = dualstack::TlsConfig::new().cert_files("cert.pem", "key.pem")?;
    ///     handle.reload_tls(&tls) // a bad file: Err, and the old certificates stay
    /// }
    /// # let _ = reload;
    /// ```
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, config: &crate::tls::TlsConfig) -> Result<(), crate::tls::TlsError> {
        let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        let Some(resumption) = &tls.resumption else {
            return Err(crate::tls::TlsError::no_tls_listener());
        };
        tls.pending = Some(config.build(resumption)?);
        drop(tls);
        if let Err(e) = self.inner.waker.wake() {
            log::warn!("cannot wake the server to reload its TLS configuration: {e}");
        }
        Ok(())
    }

    /// The server has TLS listeners, served with `resumption`.
    #[cfg(feature = "tls")]
    pub(crate) fn enable_tls(&self, resumption: crate::tls::Resumption) {
        let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        tls.resumption = Some(resumption);
    }

    /// A configuration a reload handed in, once.
    #[cfg(feature = "tls")]
    pub(crate) fn take_tls(&self) -> Option<crate::tls::Acceptor> {
        let mut tls = self.inner.tls.lock().unwrap_or_else(|e| e.into_inner());
        tls.pending.take()
    }

    pub(crate) fn take_stop(&self) -> bool {
        self.inner.stop.swap(false, Ordering::Acquire)
    }
}
