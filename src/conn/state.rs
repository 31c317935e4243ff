//! A connection's state, one enum per concern, with its transitions: I/O-free, so every
//! transition is a unit test. The reactor does the I/O a transition asks for.
//!
//! - [`Recv`]: the reading direction (reading, held back, or finished by the peer);
//! - [`Send`]: the writing direction (open, to shut after the queue drains, shut);
//! - [`Life`]: the connection as a whole (open, to close after the queue drains, closing).
//!
//! Each replaces flags that could contradict one another: a write side "shut" that nobody
//! asked to shut, a read "pending" on a connection being read, a close requested twice.

/// Who holds reading back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The handler ([`Context::pause_reading`](crate::Context::pause_reading)).
    App,
    /// Backpressure: the output queue passed its high-water mark.
    Queue,
}

/// The reading direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Readiness is acted on: the reactor reads.
    Reading,
    /// Not reading, because the handler paused it, backpressure holds it, or both.
    /// `pending`: readiness arrived meanwhile, and an edge-triggered poll will not report it
    /// again, so reading must resume without an event.
    Held {
        /// The handler paused reading.
        app: bool,
        /// Backpressure holds it.
        queue: bool,
        /// Readiness arrived while held.
        pending: bool,
    },
    /// The peer sent end of stream: there is nothing more to read.
    Done,
}

impl Recv {
    /// Whether the reactor should read now.
    pub(crate) fn wants_read(self) -> bool {
        self == Recv::Reading
    }

    /// Holds reading back for `by` (a no-op once the peer is done).
    pub(crate) fn hold(&mut self, by: Holder) {
        *self = match *self {
            Recv::Reading => Recv::Held {
                app: by == Holder::App,
                queue: by == Holder::Queue,
                pending: false,
            },
            Recv::Held {
                app,
                queue,
                pending,
            } => Recv::Held {
                app: app || by == Holder::App,
                queue: queue || by == Holder::Queue,
                pending,
            },
            Recv::Done => Recv::Done,
        };
    }

    /// Releases `by`'s hold. Returns whether reading resumed with readiness pending: then the
    /// connection must be read again without waiting for an event.
    pub(crate) fn release(&mut self, by: Holder) -> bool {
        let Recv::Held {
            app,
            queue,
            pending,
        } = *self
        else {
            return false;
        };
        let (app, queue) = (app && by != Holder::App, queue && by != Holder::Queue);
        if app || queue {
            *self = Recv::Held {
                app,
                queue,
                pending,
            };
            false
        } else {
            *self = Recv::Reading;
            pending
        }
    }

    /// Readiness arrived (an event, or a turn on the ready queue). Returns whether to read
    /// now; if not, it is remembered for when reading resumes.
    pub(crate) fn readiness(&mut self) -> bool {
        match self {
            Recv::Reading => true,
            Recv::Held { pending, .. } => {
                *pending = true;
                false
            }
            Recv::Done => false,
        }
    }

    /// Whether the handler holds reading back.
    pub(crate) fn held_by(self, by: Holder) -> bool {
        match self {
            Recv::Held { app, queue, .. } => match by {
                Holder::App => app,
                Holder::Queue => queue,
            },
            _ => false,
        }
    }
}

/// The writing direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Send {
    /// Sends are taken.
    Open,
    /// The handler asked to shut writing down: sends are refused, and a FIN goes once the
    /// queue drains.
    ShutAfterFlush,
    /// The FIN went: writing is over for good.
    Shut,
}

impl Send {
    /// Whether a send may be taken.
    pub(crate) fn open(self) -> bool {
        self == Send::Open
    }

    /// The handler asks to shut writing down. Returns whether to shut it *now* (the queue
    /// is empty); otherwise it happens when the queue drains ([`Send::drained`]).
    pub(crate) fn shutdown(&mut self, queue_empty: bool) -> bool {
        match self {
            Send::Open if queue_empty => {
                *self = Send::Shut;
                true
            }
            Send::Open => {
                *self = Send::ShutAfterFlush;
                false
            }
            Send::ShutAfterFlush | Send::Shut => false,
        }
    }

    /// The queue drained. Returns whether to shut writing down now.
    pub(crate) fn drained(&mut self) -> bool {
        if *self == Send::ShutAfterFlush {
            *self = Send::Shut;
            true
        } else {
            false
        }
    }
}

/// A connection's life as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    /// Open.
    Open,
    /// To close once its queue is written; nothing more is read or taken for sending.
    CloseAfterFlush,
    /// On the reactor's close list: gone when the current callback returns.
    Closing,
}

impl Life {
    /// A close once the queue drains is asked for. Returns whether to close *now* (the
    /// queue is empty).
    pub(crate) fn close_after_flush(&mut self, queue_empty: bool) -> bool {
        match self {
            Life::Open if queue_empty => true,
            Life::Open => {
                *self = Life::CloseAfterFlush;
                false
            }
            Life::CloseAfterFlush | Life::Closing => false,
        }
    }

    /// A close now is asked for. Returns whether this is news: the connection goes on the
    /// close list once, whatever asked how often.
    pub(crate) fn close(&mut self) -> bool {
        if *self == Life::Closing {
            false
        } else {
            *self = Life::Closing;
            true
        }
    }

    /// The queue drained. Returns whether to close now.
    pub(crate) fn drained(self) -> bool {
        self == Life::CloseAfterFlush
    }

    /// Whether it is open for reading and sending (not closing in any way).
    pub(crate) fn open(self) -> bool {
        self == Life::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_while_held_is_kept_for_the_release_that_resumes_reading() {
        let mut r = Recv::Reading;
        assert!(r.readiness(), "a reading connection reads");
        r.hold(Holder::App);
        assert!(!r.wants_read());
        assert!(!r.readiness(), "a held connection does not read");
        r.hold(Holder::Queue);
        assert!(!r.release(Holder::App), "still held by backpressure");
        assert!(r.held_by(Holder::Queue) && !r.held_by(Holder::App));
        assert!(r.release(Holder::Queue), "resumed with readiness pending");
        assert_eq!(r, Recv::Reading);
    }

    #[test]
    fn a_release_without_readiness_asks_for_no_read() {
        let mut r = Recv::Reading;
        r.hold(Holder::Queue);
        assert!(!r.release(Holder::Queue));
        assert_eq!(r, Recv::Reading);
        // Releasing what nobody holds changes nothing.
        assert!(!r.release(Holder::App));
        assert_eq!(r, Recv::Reading);
    }

    #[test]
    fn end_of_stream_is_final() {
        let mut r = Recv::Done;
        r.hold(Holder::App);
        assert_eq!(r, Recv::Done);
        assert!(!r.readiness());
        assert!(!r.release(Holder::App));
        assert!(!r.wants_read());
    }

    #[test]
    fn writing_shuts_now_or_when_the_queue_drains_and_only_once() {
        let mut s = Send::Open;
        assert!(s.shutdown(true));
        assert_eq!(s, Send::Shut);
        assert!(!s.shutdown(true), "shut twice");
        assert!(!s.drained());

        let mut s = Send::Open;
        assert!(!s.shutdown(false));
        assert!(!s.open(), "sends taken after a shutdown was asked for");
        assert!(s.drained(), "the FIN goes when the queue drains");
        assert_eq!(s, Send::Shut);
        assert!(!s.drained());
    }

    #[test]
    fn a_close_is_listed_once_and_waits_for_the_queue_when_asked() {
        let mut l = Life::Open;
        assert!(!l.close_after_flush(false));
        assert_eq!(l, Life::CloseAfterFlush);
        assert!(!l.open());
        assert!(l.drained());
        assert!(l.close());
        assert!(!l.close(), "listed twice");
        assert!(
            !l.close_after_flush(true),
            "a closing connection does not close again"
        );

        let mut l = Life::Open;
        assert!(l.close_after_flush(true), "an empty queue closes at once");
    }
}
