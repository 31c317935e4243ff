//! Deadlines: handler timers ([`Timers`]) and the saturating clock arithmetic every deadline
//! in the reactor goes through ([`after`]).
//!
//! Timers live in an ordered map keyed by `(deadline, sequence)`, so cancelling one removes
//! it at once: memory follows the live timers, never how often they were re-armed. A
//! connection's timers are also indexed by connection, so closing it cancels them all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::conn::ConnId;

/// A hundred years: later than any deadline a server lives to see, and small enough that
/// every platform's `Instant` can hold "now + this". Longer delays are cut to it.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `now + delay`, saturating: a delay too long for the clock (`Duration::MAX` is the usual
/// way to say "never") becomes a deadline a century away instead of a panic.
pub(crate) fn after(now: Instant, delay: Duration) -> Instant {
    let mut delay = delay.min(FOREVER);
    loop {
        if let Some(deadline) = now.checked_add(delay) {
            return deadline;
        }
        // Only a clock that cannot count a century ahead gets here; halving ends at zero,
        // and `now + 0` always exists.
        delay /= 2;
    }
}

/// Names a timer set with [`Context::set_timer`](crate::Context::set_timer) or
/// [`Context::set_conn_timer`](crate::Context::set_conn_timer), to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId {
    deadline: Instant,
    seq: u64,
}

/// Whom a timer is for, and the handler's value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// [`Handler::on_timer`](crate::Handler::on_timer).
    Server(u64),
    /// [`Handler::on_conn_timer`](crate::Handler::on_conn_timer).
    Conn(ConnId, u64),
}

/// The handler's pending timers.
///
/// # Invariant
///
/// A timer is pending exactly while its `(deadline, seq)` key is in `pending`: cancelling and
/// firing remove it, so the map holds live timers only. A connection's timer is in
/// `by_conn` exactly while it is pending.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    pending: BTreeMap<(Instant, u64), Due>,
    by_conn: BTreeMap<(ConnId, u64), Instant>,
    next: u64,
}

impl Timers {
    pub(crate) fn set(&mut self, deadline: Instant, due: Due) -> TimerId {
        let seq = self.next;
        self.next += 1;
        self.pending.insert((deadline, seq), due);
        if let Due::Conn(conn, _) = due {
            self.by_conn.insert((conn, seq), deadline);
        }
        TimerId { deadline, seq }
    }

    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        match self.pending.remove(&(id.deadline, id.seq)) {
            Some(Due::Conn(conn, _)) => {
                self.by_conn.remove(&(conn, id.seq));
                true
            }
            Some(Due::Server(_)) => true,
            None => false,
        }
    }

    /// Cancels every timer of `conn` (it closed); returns how many there were.
    pub(crate) fn cancel_conn(&mut self, conn: ConnId) -> usize {
        let seqs: Vec<(u64, Instant)> = self
            .by_conn
            .range((conn, 0)..=(conn, u64::MAX))
            .map(|(&(_, seq), &deadline)| (seq, deadline))
            .collect();
        for &(seq, deadline) in &seqs {
            self.by_conn.remove(&(conn, seq));
            self.pending.remove(&(deadline, seq));
        }
        seqs.len()
    }

    /// The earliest deadline of a pending timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.keys().next().map(|&(deadline, _)| deadline)
    }

    /// A mark for [`pop_due`](Timers::pop_due): timers set after it are not fired by a pass
    /// that took it.
    pub(crate) fn mark(&self) -> u64 {
        self.next
    }

    /// Removes and returns the earliest timer due at `now` that was set before `mark`.
    ///
    /// A timer set during the firing pass (a zero delay re-armed from `on_timer`) sorts after
    /// every older due one (its deadline is at least `now`, its sequence above theirs), so
    /// the pass ends when it reaches one and the new timer waits for the next turn.
    pub(crate) fn pop_due(&mut self, now: Instant, mark: u64) -> Option<(TimerId, Due)> {
        let (&(deadline, seq), _) = self.pending.first_key_value()?;
        if deadline > now || seq >= mark {
            return None;
        }
        let due = self.pending.remove(&(deadline, seq))?;
        if let Due::Conn(conn, _) = due {
            self.by_conn.remove(&(conn, seq));
        }
        Some((TimerId { deadline, seq }, due))
    }

    /// Cancels every timer but those of the connections `keep` names.
    pub(crate) fn clear_but(&mut self, keep: impl Fn(ConnId) -> bool) {
        self.pending
            .retain(|_, due| matches!(due, Due::Conn(conn, _) if keep(*conn)));
        self.by_conn.retain(|(conn, _), _| keep(*conn));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        let late = timers.set(at(30), Due::Server(3));
        let early = timers.set(at(10), Due::Server(1));
        let cancelled = timers.set(at(20), Due::Server(2));
        assert!(timers.cancel(cancelled));
        assert!(!timers.cancel(cancelled));
        assert_eq!(timers.next_deadline(), Some(at(10)));
        let mark = timers.mark();
        assert_eq!(timers.pop_due(at(5), mark), None);
        assert_eq!(timers.pop_due(at(25), mark), Some((early, Due::Server(1))));
        assert_eq!(
            timers.pop_due(at(25), mark),
            None,
            "the cancelled timer must not fire"
        );
        assert_eq!(timers.next_deadline(), Some(at(30)));
        assert_eq!(timers.pop_due(at(30), mark), Some((late, Due::Server(3))));
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_timer_set_while_firing_waits_for_the_next_pass() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let old_late = timers.set(now, Due::Server(2));
        let old_early = timers.set(now - Duration::from_millis(5), Due::Server(1));
        let mark = timers.mark();
        assert_eq!(timers.pop_due(now, mark), Some((old_early, Due::Server(1))));
        // As a handler re-arming with a zero delay from on_timer would.
        let rearmed = timers.set(now, Due::Server(9));
        assert_eq!(timers.pop_due(now, mark), Some((old_late, Due::Server(2))));
        assert_eq!(timers.pop_due(now, mark), None, "fired in the same pass");
        assert_eq!(
            timers.pop_due(now, timers.mark()),
            Some((rearmed, Due::Server(9)))
        );
    }

    #[test]
    fn rearming_keeps_memory_to_the_live_timers() {
        let now = Instant::now();
        let mut timers = Timers::default();
        let _first = timers.set(now + Duration::from_secs(1), Due::Server(0));
        let mut id = timers.set(now + Duration::from_secs(2), Due::Server(1));
        for i in 0..100_000 {
            assert!(timers.cancel(id));
            id = timers.set(now + Duration::from_secs(3), Due::Server(i));
        }
        assert_eq!(timers.len(), 2);
    }

    #[test]
    fn a_closed_connections_timers_are_all_cancelled_and_no_others() {
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let a = ConnId {
            key: 1,
            generation: 7,
        };
        let b = ConnId {
            key: 1,
            generation: 8,
        };
        let mut timers = Timers::default();
        timers.set(at(10), Due::Conn(a, 1));
        timers.set(at(5), Due::Conn(a, 2));
        let kept = timers.set(at(7), Due::Conn(b, 3));
        let server = timers.set(at(1), Due::Server(4));
        assert_eq!(timers.cancel_conn(a), 2);
        assert_eq!(timers.cancel_conn(a), 0);
        assert_eq!(timers.len(), 2);
        let mark = timers.mark();
        assert_eq!(timers.pop_due(at(20), mark), Some((server, Due::Server(4))));
        assert_eq!(timers.pop_due(at(20), mark), Some((kept, Due::Conn(b, 3))));
        assert_eq!(timers.pop_due(at(20), mark), None);
        assert!(timers.by_conn.is_empty(), "the index keeps a fired timer");
    }

    #[test]
    fn huge_delays_saturate_instead_of_panicking() {
        let now = Instant::now();
        let never = after(now, Duration::MAX);
        assert!(never > now + Duration::from_secs(50 * 365 * 24 * 3600));
        assert_eq!(after(now, Duration::ZERO), now);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
