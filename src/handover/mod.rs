//! Handing the listening sockets to a successor: a restart or an upgrade that refuses and
//! resets no connection ([`ServerHandle::hand_over`](crate::ServerHandle::hand_over)).
//!
//! The sequence (ARCHITECTURE.md has it in full):
//! 1. The predecessor starts the successor (by default its own program, as the file on disk
//!    is now, with its own arguments) with its listening sockets on descriptors 3, 4, …
//!    (`LISTEN_FDS`, `LISTEN_FDNAMES` naming each socket's spec), a private channel for
//!    `READY=1`, and `DUALSTACK_HANDOVER`; no other descriptor but the standard streams
//!    crosses `exec`.
//! 2. The successor's binds take the passed socket each planned socket matches (same spec,
//!    same address; the mode and the port checked) instead of binding one, bind only what
//!    is missing, and close what matches nothing once ready. It says `READY=1`
//!    ([`notify`](crate::notify)) when it serves.
//! 3. The predecessor, told `READY=1` within the ready timeout, tells a service manager the
//!    new main pid (`MAINPID=`), stops accepting (its copies of the sockets stay open until
//!    it exits; the successor accepts from the same sockets, so no queued connection is
//!    lost) and drains: its connections go on until they end or the drain deadline closes
//!    them gracefully. A successor that exits, or is not ready in time, is killed and
//!    reported; the predecessor goes on serving as before.
//!
//! `passed.rs` is the successor's side; `spawn.rs` starts the successor and waits for it.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg(unix)]
pub(crate) mod passed;
#[cfg(unix)]
mod spawn;
#[cfg(unix)]
pub(crate) use spawn::{start, Pending};

/// How to hand the listening sockets over (see
/// [`ServerHandle::hand_over`](crate::ServerHandle::hand_over)).
///
/// ```
/// use std::time::Duration;
/// let how = dualstack::HandOver::new()
///     .ready_timeout(Duration::from_secs(10))
///     .drain_timeout(Duration::from_secs(60));
/// # let _ = how;
/// ```
#[derive(Debug, Clone)]
pub struct HandOver {
    pub(crate) program: Option<OsString>,
    pub(crate) args: Option<Vec<OsString>>,
    pub(crate) ready_timeout: Duration,
    pub(crate) drain_timeout: Duration,
}

impl Default for HandOver {
    fn default() -> HandOver {
        HandOver::new()
    }
}

impl HandOver {
    /// The successor is this program (the file at its path now, so a binary replaced on
    /// disk is the new one) with this process's arguments and working directory, and its
    /// environment but for the hand-over's own variables (`LISTEN_PID` and
    /// `LISTEN_PIDFDID` removed; `LISTEN_FDS`, `LISTEN_FDNAMES`, `DUALSTACK_HANDOVER` and
    /// `DUALSTACK_HANDOVER_FILES` set, and left set in the successor); it has 30 s to say
    /// `READY=1` (it calls [`notify`](crate::notify)`("READY=1")` after its binds, with or
    /// without a service manager: that is how this process learns it serves), and this
    /// process's connections then have 30 s to end before they are closed gracefully.
    pub fn new() -> HandOver {
        HandOver {
            program: None,
            args: None,
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// Starts `program` with `args` (not including the program's name) instead. A
    /// `program` without a `/` is looked up in `PATH`, as a shell does.
    pub fn command<A: Into<OsString>>(
        mut self,
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = A>,
    ) -> HandOver {
        self.program = Some(program.into());
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// How long the successor has to say `READY=1` before it is killed and the hand-over
    /// fails (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> HandOver {
        self.ready_timeout = timeout;
        self
    }

    /// How long this process's connections may go on after the successor is ready; then
    /// each is closed once its output is written, as in a graceful stop (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> HandOver {
        self.drain_timeout = timeout;
        self
    }
}

/// Why a hand-over did not happen. The server that tried goes on serving as before.
#[derive(Debug)]
pub struct HandOverError {
    kind: HandOverErrorKind,
    detail: String,
    source: Option<io::Error>,
}

/// What kind of problem a [`HandOverError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandOverErrorKind {
    /// A hand-over is running already: one at a time.
    Busy,
    /// The server handed over already, or is stopping: it has no sockets to pass.
    Stopping,
    /// Not on this platform (Windows has no descriptor inheritance of this kind).
    Unsupported,
    /// The successor could not be started (the error's source says why).
    Spawn,
    /// The successor ended before it said `READY=1`.
    Exited,
    /// The successor did not say `READY=1` in time, and was killed.
    NotReady,
    /// The server stopped while the successor was starting; the successor was killed.
    Cancelled,
    /// A system call failed (the error's source says which).
    Io,
}

impl HandOverError {
    pub(crate) fn new(kind: HandOverErrorKind, detail: impl Into<String>) -> HandOverError {
        HandOverError {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn with_source(mut self, source: io::Error) -> HandOverError {
        self.source = Some(source);
        self
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> HandOverErrorKind {
        self.kind
    }
}

impl fmt::Display for HandOverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hand-over failed: {}", self.detail)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HandOverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// What became of a hand-over, for [`Handler::on_hand_over`](crate::Handler::on_hand_over)
/// (each is logged too).
#[derive(Debug)]
#[non_exhaustive]
pub enum HandOverEvent {
    /// The successor was started with the listening sockets.
    Started {
        /// Its process id.
        pid: u32,
    },
    /// The successor said `READY=1`: this server has stopped accepting and drains.
    Ready {
        /// The pid of the server that said it (the successor itself, or the server a
        /// wrapper it was started as runs).
        pid: u32,
    },
    /// The hand-over failed; this server goes on as before, and may try again.
    Failed(HandOverError),
}

/// The pid of the process that handed this one its listening sockets
/// ([`ServerHandle::hand_over`](crate::ServerHandle::hand_over)), if one did: `None` in a
/// process started any other way (and off Unix). Read once, when a bind or
/// [`notify`](crate::notify) first looks.
pub fn predecessor() -> Option<u32> {
    #[cfg(unix)]
    return passed::predecessor();
    #[cfg(not(unix))]
    None
}

/// This process handed its service over: it no longer speaks for it to the service
/// manager (a `STOPPING=1` from it now would stop its successor's service).
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Whether this process has handed its service over to a successor.
pub(crate) fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Acquire)
}

pub(crate) fn set_handed_over() {
    HANDED_OVER.store(true, Ordering::Release);
}

/// No hand-over is ever pending here.
#[cfg(not(unix))]
pub(crate) enum Pending {}

#[cfg(not(unix))]
impl Pending {
    pub(crate) fn pid(&self) -> u32 {
        match *self {}
    }
    pub(crate) fn drain_timeout(&self) -> Duration {
        match *self {}
    }
    pub(crate) fn outcome(&self) -> Option<Result<u32, HandOverError>> {
        match *self {}
    }
    pub(crate) fn cancel(self) -> Result<u32, HandOverError> {
        match self {}
    }
}

/// See the Unix version: there is no hand-over here.
#[cfg(not(unix))]
pub(crate) fn unsupported() -> HandOverError {
    HandOverError::new(
        HandOverErrorKind::Unsupported,
        format!(
            "handing sockets to a successor is not supported on {}",
            std::env::consts::OS
        ),
    )
}
