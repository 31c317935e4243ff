//! The ready queue: connections to read again without a new readiness event, served
//! round-robin, each at most once per turn.
//!
//! A connection lands here when its read budget ran out (more data may be waiting, and an
//! edge-triggered poll will not say so again) or when reading resumes after a pause. Two
//! rules make the read budget mean something:
//!
//! - **One entry per connection.** Pushing a connection that is already queued does nothing;
//!   otherwise a flooder that gets a new edge every turn piles up entries and is read until
//!   empty, as if there were no budget at all.
//! - **One budget per connection per turn.** [`begin_turn`](ReadyQueue::begin_turn) says how
//!   many entries were queued before the turn; only those are served in it, and the reactor
//!   skips the readiness event of a connection that is queued. A connection whose budget runs
//!   out again goes to the back, behind every other ready connection.

use std::collections::VecDeque;

use crate::conn::ConnId;

/// Connections waiting for a read, in order, each at most once.
///
/// # Invariant
///
/// `member[key] == Some(generation)` exactly when that connection has an entry in `queue`.
/// An entry whose connection closed stays until it is popped; a new connection in the same
/// slot has another generation, so it is neither mistaken for queued nor blocked from
/// queueing.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    queue: VecDeque<ConnId>,
    member: Vec<Option<u32>>,
}

impl ReadyQueue {
    /// Queues `id` unless it is queued already; returns whether it was added.
    pub(crate) fn push(&mut self, id: ConnId) -> bool {
        if self.contains(id) {
            return false;
        }
        if self.member.len() <= id.key {
            self.member.resize(id.key + 1, None);
        }
        self.member[id.key] = Some(id.generation);
        self.queue.push_back(id);
        true
    }

    /// Whether `id` has an entry.
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.member.get(id.key) == Some(&Some(id.generation))
    }

    /// How many entries to serve in the turn that begins: those queued before it. Entries
    /// added during the turn wait for the next one.
    pub(crate) fn begin_turn(&self) -> usize {
        self.queue.len()
    }

    /// The next connection to read, no longer queued.
    pub(crate) fn pop(&mut self) -> Option<ConnId> {
        let id = self.queue.pop_front()?;
        if self.contains(id) {
            self.member[id.key] = None;
        }
        Some(id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: usize, generation: u32) -> ConnId {
        ConnId { key, generation }
    }

    /// Plays turns: each turn serves the entries queued before it, and every connection served
    /// runs out of budget again (a flooder) and is queued again. Returns who was served.
    fn turns(
        q: &mut ReadyQueue,
        n: usize,
        mut on_event: impl FnMut(usize, &mut ReadyQueue),
    ) -> Vec<Vec<ConnId>> {
        (0..n)
            .map(|turn| {
                on_event(turn, q);
                let mut served = Vec::new();
                for _ in 0..q.begin_turn() {
                    let c = q.pop().unwrap();
                    served.push(c);
                    q.push(c);
                }
                served
            })
            .collect()
    }

    #[test]
    fn a_connection_queued_twice_has_one_entry() {
        let mut q = ReadyQueue::default();
        assert!(q.push(id(3, 1)));
        assert!(!q.push(id(3, 1)), "queued twice");
        assert_eq!(q.begin_turn(), 1);
        assert_eq!(q.pop(), Some(id(3, 1)));
        assert!(!q.contains(id(3, 1)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn flooders_get_one_budget_per_turn_in_round_robin() {
        let mut q = ReadyQueue::default();
        let (a, b, c) = (id(0, 0), id(1, 0), id(2, 0));
        // A new edge every turn for a and b (as a flooder gets), and c joins in turn 1.
        let served = turns(&mut q, 4, |turn, q| {
            q.push(a);
            q.push(b);
            if turn == 1 {
                q.push(c);
            }
        });
        assert_eq!(
            served,
            vec![vec![a, b], vec![a, b, c], vec![a, b, c], vec![a, b, c]]
        );
    }

    #[test]
    fn an_entry_added_during_a_turn_waits_for_the_next() {
        let mut q = ReadyQueue::default();
        q.push(id(0, 0));
        let carried = q.begin_turn();
        q.push(id(1, 0)); // say, reading resumed during this turn's events
        let mut served = Vec::new();
        for _ in 0..carried {
            served.push(q.pop().unwrap());
        }
        assert_eq!(served, [id(0, 0)]);
        assert!(q.contains(id(1, 0)));
        assert!(!q.is_empty());
    }

    #[test]
    fn a_reused_slot_is_neither_blocked_nor_mistaken_for_queued() {
        let mut q = ReadyQueue::default();
        q.push(id(5, 1)); // closes while queued
        assert!(!q.contains(id(5, 2)));
        assert!(
            q.push(id(5, 2)),
            "the new connection in slot 5 could not queue"
        );
        assert_eq!(q.pop(), Some(id(5, 1))); // the stale entry: the reactor skips it
        assert!(
            q.contains(id(5, 2)),
            "popping the stale entry unqueued the new one"
        );
        assert_eq!(q.pop(), Some(id(5, 2)));
        assert!(!q.contains(id(5, 2)));
    }
}
