//! Handler timers: a min-heap of deadlines, with cancellation by id.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Names a timer set with [`Context::set_timer`](crate::Context::set_timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// # Invariant
///
/// A timer is live exactly while its id is in `live`; heap entries whose id is not (it was
/// cancelled or fired) are skipped when they come up.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Live timers and the value the handler gave each.
    live: HashMap<u64, u64>,
    next: u64,
}

impl Timers {
    pub(crate) fn set(&mut self, deadline: Instant, value: u64) -> TimerId {
        let id = self.next;
        self.next += 1;
        self.heap.push(Reverse((deadline, id)));
        self.live.insert(id, value);
        TimerId(id)
    }

    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        self.live.remove(&id.0).is_some()
    }

    /// The earliest deadline of a live timer.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.heap.peek() {
            if self.live.contains_key(id) {
                return Some(*deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns one timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, u64)> {
        while let Some(Reverse((deadline, id))) = self.heap.peek().copied() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(value) = self.live.remove(&id) {
                return Some((TimerId(id), value));
            }
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.live.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        let late = timers.set(at(30), 3);
        let early = timers.set(at(10), 1);
        let cancelled = timers.set(at(20), 2);
        assert!(timers.cancel(cancelled));
        assert!(!timers.cancel(cancelled));
        assert_eq!(timers.next_deadline(), Some(at(10)));
        assert_eq!(timers.pop_due(at(5)), None);
        assert_eq!(timers.pop_due(at(25)), Some((early, 1)));
        assert_eq!(
            timers.pop_due(at(25)),
            None,
            "the cancelled timer must not fire"
        );
        assert_eq!(timers.next_deadline(), Some(at(30)));
        assert_eq!(timers.pop_due(at(30)), Some((late, 3)));
        assert_eq!(timers.next_deadline(), None);
    }
}
