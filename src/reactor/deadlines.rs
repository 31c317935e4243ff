//! Idle, first-byte and PROXY header deadlines ([`Deadlines`]): one entry per open connection that has
//! one, re-armed when it comes up and removed when the connection closes, so memory follows
//! open connections, never churn. Pure: its rules are tested with made-up instants.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::timers::after;
use crate::conn::{ConnId, Timing};

/// What a deadline that came up means for its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing received within the first-byte timeout: close it.
    FirstByte,
    /// Nothing read or written within the idle timeout: close it.
    Idle,
    /// Its PROXY header was not complete in time: close it.
    Header,
    /// It was active meanwhile: the deadline moves to this instant.
    Later(Instant),
    /// No deadline applies to it any more (it sent its first byte, and there is no idle
    /// timeout).
    Done,
}

/// The connections' deadlines, earliest first.
///
/// # Invariant
///
/// A connection has an entry exactly when its [`Timing::deadline`] is `Some`, at that
/// instant.
#[derive(Debug)]
pub(crate) struct Deadlines {
    idle: Option<Duration>,
    first_byte: Option<Duration>,
    set: BTreeSet<(Instant, usize, u32)>,
}

impl Deadlines {
    pub(crate) fn new(idle: Option<Duration>, first_byte: Option<Duration>) -> Deadlines {
        Deadlines {
            idle,
            first_byte,
            set: BTreeSet::new(),
        }
    }

    /// Arms the first deadline of connection `id`, accepted at `timing.opened`.
    pub(crate) fn open(&mut self, id: ConnId, timing: &mut Timing) {
        let first = [self.idle, self.first_byte]
            .into_iter()
            .flatten()
            .min()
            .map(|t| after(timing.opened, t));
        if let Some(at) = first {
            self.arm(id, timing, at);
        }
    }

    /// Arms connection `id`'s PROXY header deadline, `due`, its only deadline until the
    /// header is in: a connection not handed over yet is not idle, it is late (reported as
    /// such). Its first-byte and idle deadlines start with [`reopen`](Deadlines::reopen).
    pub(crate) fn open_header(&mut self, id: ConnId, timing: &mut Timing, due: Instant) {
        timing.awaiting_header = true;
        self.arm(id, timing, due);
    }

    /// Connection `id`'s PROXY header came in at `now`: from here its deadlines are those
    /// of a connection accepted now.
    pub(crate) fn reopen(&mut self, id: ConnId, timing: &mut Timing, now: Instant) {
        self.close(id, timing);
        *timing = Timing::new(now);
        self.open(id, timing);
    }

    fn arm(&mut self, id: ConnId, timing: &mut Timing, at: Instant) {
        timing.deadline = Some(at);
        self.set.insert((at, id.key, id.generation));
    }

    /// Connection `id` closed: its entry goes.
    pub(crate) fn close(&mut self, id: ConnId, timing: &Timing) {
        if let Some(at) = timing.deadline {
            self.set.remove(&(at, id.key, id.generation));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _, _)| at)
    }

    /// Removes and returns the connection whose deadline is the earliest, if it is due at
    /// `now`. Its entry is gone: [`judge`](Deadlines::judge) it next.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ConnId> {
        let &(at, key, generation) = self.set.first()?;
        if at > now {
            return None;
        }
        self.set.pop_first();
        Some(ConnId { key, generation })
    }

    /// What the deadline of connection `id`, just popped, means at `now`; re-arms it when
    /// the connection was active meanwhile.
    pub(crate) fn judge(&mut self, id: ConnId, timing: &mut Timing, now: Instant) -> Verdict {
        timing.deadline = None;
        if timing.awaiting_header {
            // Its one deadline, the header's, is what came up.
            return Verdict::Header;
        }
        let first_byte_due = self
            .first_byte
            .filter(|_| !timing.first_byte)
            .map(|t| after(timing.opened, t));
        let idle_due = self.idle.map(|t| after(timing.last_active, t));
        if first_byte_due.is_some_and(|due| due <= now) {
            return Verdict::FirstByte;
        }
        if idle_due.is_some_and(|due| due <= now) {
            return Verdict::Idle;
        }
        match [first_byte_due, idle_due].into_iter().flatten().min() {
            Some(due) => {
                self.arm(id, timing, due);
                Verdict::Later(due)
            }
            // The first byte came, and there is no idle timeout: nothing left to watch.
            None => Verdict::Done,
        }
    }

    /// The idle timeout, for the log.
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.idle
    }

    /// The first-byte timeout, for the log.
    pub(crate) fn first_byte_timeout(&self) -> Option<Duration> {
        self.first_byte
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: usize) -> ConnId {
        ConnId { key, generation: 0 }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Drives the deadlines to `now` the way the reactor does: the verdicts of what came up.
    fn run_to(d: &mut Deadlines, timings: &mut [Timing], now: Instant) -> Vec<(usize, Verdict)> {
        let mut out = Vec::new();
        while let Some(c) = d.pop_due(now) {
            let verdict = d.judge(c, &mut timings[c.key], now);
            if matches!(
                verdict,
                Verdict::FirstByte | Verdict::Idle | Verdict::Header
            ) {
                out.push((c.key, verdict));
            }
        }
        out
    }

    #[test]
    fn the_header_deadline_counts_from_accept_and_ends_with_the_header() {
        let t0 = Instant::now();
        // First-byte 2 s, idle 3 s (shorter than the header's 5 s: it does not apply before
        // the header is in).
        let mut d = Deadlines::new(Some(secs(3)), Some(secs(2)));
        let mut timings = [Timing::new(t0), Timing::new(t0)];
        for (i, t) in timings.iter_mut().enumerate() {
            d.open_header(id(i), t, t0 + secs(5));
        }
        // Neither the first-byte nor the idle timeout applies while the header is awaited.
        assert_eq!(run_to(&mut d, &mut timings, t0 + secs(3)), []);
        // Connection 1's header comes at 4 s: from then on its own deadlines run, from then.
        d.reopen(id(1), &mut timings[1], t0 + secs(4));
        assert_eq!(
            run_to(&mut d, &mut timings, t0 + secs(5)),
            [(0, Verdict::Header)]
        );
        assert_eq!(
            run_to(
                &mut d,
                &mut timings,
                t0 + secs(5) + Duration::from_millis(900)
            ),
            []
        );
        assert_eq!(
            run_to(&mut d, &mut timings, t0 + secs(6)),
            [(1, Verdict::FirstByte)],
            "first byte due 2 s after the header"
        );
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_silent_peer_meets_the_first_byte_deadline_and_a_talker_does_not() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Some(secs(10)), Some(secs(2)));
        let mut timings = [Timing::new(t0), Timing::new(t0)];
        d.open(id(0), &mut timings[0]);
        d.open(id(1), &mut timings[1]);
        assert_eq!(d.next(), Some(t0 + secs(2)));
        // Connection 1 talks at t0 + 1 s.
        timings[1].first_byte = true;
        timings[1].last_active = t0 + secs(1);
        assert_eq!(run_to(&mut d, &mut timings, t0 + secs(1)), []);
        let verdicts = run_to(&mut d, &mut timings, t0 + secs(2));
        assert_eq!(verdicts, [(0, Verdict::FirstByte)]);
        // The talker's deadline moved to its idle deadline.
        assert_eq!(timings[1].deadline, Some(t0 + secs(11)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn with_only_a_first_byte_timeout_a_talker_is_watched_no_more() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(None, Some(secs(2)));
        let mut timings = [Timing::new(t0)];
        d.open(id(0), &mut timings[0]);
        timings[0].first_byte = true;
        assert_eq!(d.pop_due(t0 + secs(2)), Some(id(0)));
        assert_eq!(d.judge(id(0), &mut timings[0], t0 + secs(2)), Verdict::Done);
        assert_eq!(timings[0].deadline, None);
        assert_eq!(d.len(), 0);
    }

    /// A slowloris that sends its first byte in time, then nothing: the first-byte
    /// deadline is met, the idle one is not.
    #[test]
    fn a_byte_now_and_then_does_not_beat_the_idle_timeout() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Some(secs(3)), Some(secs(2)));
        let mut timings = [Timing::new(t0)];
        d.open(id(0), &mut timings[0]);
        timings[0].first_byte = true;
        timings[0].last_active = t0 + secs(1);
        assert_eq!(run_to(&mut d, &mut timings, t0 + secs(2)), []);
        assert_eq!(
            run_to(&mut d, &mut timings, t0 + secs(4)),
            [(0, Verdict::Idle)]
        );
    }

    #[test]
    fn activity_keeps_moving_the_idle_deadline_until_it_stops() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Some(secs(5)), None);
        let mut timings = [Timing::new(t0)];
        d.open(id(0), &mut timings[0]);
        for active in [3, 7, 11] {
            timings[0].last_active = t0 + secs(active);
            assert_eq!(run_to(&mut d, &mut timings, t0 + secs(active + 1)), []);
        }
        assert_eq!(timings[0].deadline, Some(t0 + secs(16)));
        assert_eq!(
            run_to(&mut d, &mut timings, t0 + secs(16)),
            [(0, Verdict::Idle)]
        );
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_closed_connection_leaves_nothing_behind() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Some(secs(3600)), None);
        for key in 0..10_000 {
            let mut t = Timing::new(t0);
            d.open(id(key), &mut t);
            d.close(id(key), &t);
        }
        assert_eq!(d.len(), 0, "entries of closed connections stayed");
    }

    #[test]
    fn a_timeout_too_long_for_the_clock_means_never() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(Some(Duration::MAX), Some(Duration::MAX));
        let mut timings = [Timing::new(t0)];
        d.open(id(0), &mut timings[0]);
        assert!(d.next().unwrap() > t0 + secs(50 * 365 * 24 * 3600));
        assert_eq!(run_to(&mut d, &mut timings, t0 + secs(3600)), []);
    }
}
