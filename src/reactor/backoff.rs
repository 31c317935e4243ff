//! Accept failures: which errors mean what ([`accept_failure`]), and the pause after
//! exhaustion ([`AcceptBackoff`]). Pure: tested with made-up errors and instants.

use std::io;
use std::time::{Duration, Instant};

use super::timers;

/// The first pause after `accept` fails for lack of descriptors or memory; it doubles up to
/// [`BACKOFF_MAX`] while the failure lasts.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepting paused after exhaustion: when to try again, and how long the pause of the
/// current episode is. Pure: tested with made-up instants.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// While paused: when to try again.
    resume: Option<Instant>,
    /// The pause of the current failure episode (`None`: no episode); it doubles each time
    /// the retry fails too, so the episode is logged once, not once per retry.
    pause: Option<Duration>,
}

impl AcceptBackoff {
    /// Accepting failed at `now` for want of descriptors or memory. Returns the pause, and
    /// whether this failure begins an episode (the one to log).
    pub(crate) fn failed(&mut self, now: Instant) -> (Duration, bool) {
        let (pause, first) = match self.pause {
            None => (BACKOFF_MIN, true),
            Some(pause) => ((pause * 2).min(BACKOFF_MAX), false),
        };
        self.pause = Some(pause);
        self.resume = Some(timers::after(now, pause));
        (pause, first)
    }

    /// An accept worked (or found nothing to accept). Returns whether an episode ended.
    pub(crate) fn succeeded(&mut self) -> bool {
        self.pause.take().is_some()
    }

    /// Whether accepting is paused.
    pub(crate) fn paused(&self) -> bool {
        self.resume.is_some()
    }

    /// When accepting resumes, while paused.
    pub(crate) fn resume_at(&self) -> Option<Instant> {
        self.resume
    }

    /// Whether the pause is over at `now` (then accepting is tried again).
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        match self.resume {
            Some(at) if at <= now => {
                self.resume = None;
                true
            }
            _ => false,
        }
    }
}

/// What an `accept` error means for accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// One connection failed (reset or aborted before it was taken, or a network error
    /// pending on it, which Linux reports through `accept`): take the next one.
    ThisConnection,
    /// The process or the system ran out of descriptors or memory: every listener pauses
    /// for a growing interval, since every accept would fail the same way.
    Exhausted,
    /// Anything else: this listener is in trouble; it is tried again after
    /// [`LISTENER_RETRY`], alone (the others go on).
    Listener,
}

/// How long a listener whose `accept` failed in an unknown way waits before it is tried
/// again: long enough not to spin on a listener that is broken for good, short enough that
/// connections in its backlog do not wait for the next client to arrive.
pub(crate) const LISTENER_RETRY: Duration = Duration::from_millis(100);

pub(crate) fn accept_failure(e: &io::Error) -> AcceptFailure {
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
            Some(libc::ENONET | libc::ENOSR | libc::ESOCKTNOSUPPORT | libc::EPROTONOSUPPORT) => {
                return AcceptFailure::ThisConnection
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            #[cfg(target_os = "linux")]
            (os(libc::ENOSR), ThisConnection),
            #[cfg(target_os = "linux")]
            (os(libc::EPROTONOSUPPORT), ThisConnection),
            (os(libc::EBADF), Listener),
            (os(libc::EINVAL), Listener),
        ] {
            assert_eq!(accept_failure(&e), expected, "{e}");
        }
    }

    /// The back-off, with a virtual clock: 10 ms doubling to 1 s while failures last, one
    /// log line per episode, over at the first success.
    #[test]
    fn the_accept_backoff_doubles_to_a_second_and_logs_once_per_episode() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = AcceptBackoff::default();
        assert!(!b.paused());
        let mut now = t0;
        let mut pauses = Vec::new();
        let mut firsts = 0;
        for _ in 0..10 {
            let (pause, first) = b.failed(now);
            firsts += usize::from(first);
            pauses.push(pause.as_millis());
            assert!(b.paused());
            assert!(!b.due(now + pause - ms(1)), "resumed early");
            now += pause;
            assert!(b.due(now));
            assert!(!b.paused());
        }
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(firsts, 1, "one log line per episode");
        assert!(b.succeeded(), "the episode ends at the first success");
        assert!(!b.succeeded());
        assert_eq!(b.failed(now), (ms(10), true), "a new episode starts over");
        assert_eq!(b.resume_at(), Some(now + ms(10)));
    }
}
