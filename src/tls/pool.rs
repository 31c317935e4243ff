//! Threads that take TLS handshake steps off the loop
//! ([`ServerBuilder::tls_handshake_threads`](crate::ServerBuilder::tls_handshake_threads)):
//! a full handshake is private-key and key-exchange work (about a millisecond on a slow
//! machine), and a request that arrives while the loop does it waits for it. With a pool,
//! the loop hands a connection's session and the bytes it read to a thread, goes on
//! serving, and takes the session back (with its plaintext, or its failure) when the thread
//! wakes it. The session is the connection's alone while it is away: the loop does not read
//! that connection meanwhile.
//!
//! A step no thread has started within [`STEAL_AFTER`] (the threads get no CPU: they run
//! at the lowest priority, and other work keeps the machine busy; or one died) is taken
//! back by the loop and done there, so a handshake never waits for a thread longer than
//! that.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Done, Plain, Session};
use crate::conn::ConnId;
use crate::reactor::ServerHandle;

/// How long a step waits for a thread to start it before the loop does it itself.
pub(crate) const STEAL_AFTER: Duration = Duration::from_millis(50);

/// A step: the session of `id`, the ciphertext to feed it, and when it was handed over.
struct Job {
    id: ConnId,
    session: Box<Session>,
    bytes: Vec<u8>,
    queued: Instant,
}

/// The steps no thread has taken yet; `closed` once the loop's pool is gone.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled for each step queued, and when the pool closes.
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A thread that panicked in a step held no lock then: the queue is whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The threads' queue, and the loop's end of the finished steps.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    done: mpsc::Receiver<Done>,
    /// Steps handed over and not yet back (finished or taken back): while none are, the
    /// loop does not look at the queue.
    away: Cell<usize>,
    /// Steps handed to the threads, and steps the loop took back (what the tests count).
    #[cfg(test)]
    counts: Cell<(u64, u64)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("away", &self.away.get())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// `threads` threads (at least one) that wake the loop through `handle` after each step.
    pub(crate) fn start(threads: usize, handle: &ServerHandle) -> std::io::Result<Pool> {
        let (pool, finished) = Pool::new();
        for i in 0..threads.max(1) {
            let (shared, finished, handle) =
                (pool.shared.clone(), finished.clone(), handle.clone());
            std::thread::Builder::new()
                .name(format!("dualstack-tls-{i}"))
                .spawn(move || {
                    // Established connections first: on a core shared with the loop, its
                    // wake-ups preempt this work at once.
                    crate::sys::yield_to_the_loop();
                    while let Some(Job {
                        id,
                        mut session,
                        bytes,
                        ..
                    }) = next_job(&shared)
                    {
                        let mut plain = Plain::default();
                        let fed = session.feed(&bytes, &mut plain);
                        let done = Done {
                            id,
                            session,
                            plain,
                            fed,
                        };
                        if finished.send(done).is_err() {
                            return;
                        }
                        handle.handshake_done();
                    }
                })?;
        }
        Ok(pool)
    }

    fn new() -> (Pool, mpsc::Sender<Done>) {
        let (finished, done) = mpsc::channel::<Done>();
        let pool = Pool {
            shared: Arc::default(),
            done,
            away: Cell::new(0),
            #[cfg(test)]
            counts: Cell::new((0, 0)),
        };
        (pool, finished)
    }

    /// A pool whose threads never come: every step waits for the loop to take it back.
    #[cfg(test)]
    pub(crate) fn without_threads() -> Pool {
        let (pool, finished) = Pool::new();
        std::mem::forget(finished); // the channel stays open, as with threads alive
        pool
    }

    /// Hands a step to a thread (`now`: when, for [`steal`](Pool::steal)).
    pub(crate) fn send(&self, id: ConnId, session: Box<Session>, bytes: &[u8], now: Instant) {
        let job = Job {
            id,
            session,
            bytes: bytes.to_vec(),
            queued: now,
        };
        self.shared.lock().jobs.push_back(job);
        self.shared.ready.notify_one();
        self.away.set(self.away.get() + 1);
        #[cfg(test)]
        self.counts
            .set((self.counts.get().0 + 1, self.counts.get().1));
    }

    /// The oldest step, if no thread has started it and it waited [`STEAL_AFTER`] by
    /// `now`: the loop does it instead. The session of a connection, and the ciphertext to
    /// feed it.
    pub(crate) fn steal(&self, now: Instant) -> Option<(ConnId, Box<Session>, Vec<u8>)> {
        if self.away.get() == 0 {
            return None;
        }
        let mut queue = self.shared.lock();
        let due = queue
            .jobs
            .front()
            .is_some_and(|job| job.queued + STEAL_AFTER <= now);
        let job = due.then(|| queue.jobs.pop_front()).flatten()?;
        drop(queue);
        self.away.set(self.away.get() - 1);
        #[cfg(test)]
        self.counts
            .set((self.counts.get().0, self.counts.get().1 + 1));
        Some((job.id, job.session, job.bytes))
    }

    /// When the oldest step not started by a thread is due to be taken back, if any.
    pub(crate) fn next_steal(&self) -> Option<Instant> {
        if self.away.get() == 0 {
            return None;
        }
        let queue = self.shared.lock();
        queue.jobs.front().map(|job| job.queued + STEAL_AFTER)
    }

    /// Steps handed to the threads so far, and how many of them the loop took back.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.counts.get()
    }

    /// A finished step, if one is waiting.
    pub(crate) fn next_done(&self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        self.away.set(self.away.get().saturating_sub(1));
        Some(done)
    }
}

/// A thread's next step; `None` once the pool is gone.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut queue = shared.lock();
    loop {
        if queue.closed {
            return None;
        }
        if let Some(job) = queue.jobs.pop_front() {
            return Some(job);
        }
        queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
    }
}

impl Drop for Pool {
    /// The threads end after the step they are in (its outcome is dropped unread).
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}
