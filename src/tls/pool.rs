//! Threads that take TLS handshake steps off the loop
//! ([`ServerBuilder::tls_handshake_threads`](crate::ServerBuilder::tls_handshake_threads)):
//! a full handshake is private-key and key-exchange work (about a millisecond on a slow
//! machine), and a request that arrives while the loop does it waits for it. With a pool,
//! the loop hands a connection's session and the bytes it read to a thread, goes on
//! serving, and takes the session back (with its plaintext, or its failure) when the thread
//! wakes it. The session is the connection's alone while it is away: the loop does not read
//! that connection meanwhile.
//!
//! The threads run at the lowest priority (Linux's `SCHED_IDLE`), so that the loop
//! preempts them on a core they share; on a machine busy with other work they may get no
//! CPU at all. So the loop watches the steps it handed over:
//! - a step no thread has started within [`STEAL_AFTER`] is taken back and done by the
//!   loop; if no thread started any step meanwhile (they are starved, not busy), the loop
//!   also does every step itself for the next [`LOOP_FOR`];
//! - a thread that started a step [`STEAL_AFTER`] ago and has not finished it is given the
//!   ordinary scheduling class until the step ends (`sys::hurry`), so it gets its share of
//!   the core like any thread; where that is not permitted (no `CAP_SYS_NICE`), the loop
//!   does every step itself for the next [`LOOP_FOR`], and the step waits for its thread.
//!
//! The loop never waits for the queue's lock (a thread preempted while it holds it could
//! hold the loop for as long as it gets no CPU): it does the step itself instead, or looks
//! again a millisecond later.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Done, Plain, Session};
use crate::conn::ConnId;
use crate::reactor::ServerHandle;

/// How long a step may wait for a thread to start it, or to finish it once started, before
/// the loop steps in.
pub(crate) const STEAL_AFTER: Duration = Duration::from_millis(50);

/// After a step was taken back, how long the loop does every step itself before it tries
/// the threads again.
pub(crate) const LOOP_FOR: Duration = Duration::from_secs(1);

/// A step: the session of `id`, the ciphertext to feed it, and when it was handed over.
struct Job {
    id: ConnId,
    session: Box<Session>,
    bytes: Vec<u8>,
    queued: Instant,
}

/// A thread, as the loop sees it.
#[derive(Default, Clone, Copy)]
struct Worker {
    /// Its id for `sys::hurry` (0 until it has started, or where there is none).
    tid: i32,
    /// The connection whose step it is in, and when it started it, if it is in one.
    step: Option<(ConnId, Instant)>,
    /// It was given the ordinary class for this step.
    hurried: bool,
}

/// The steps no thread has taken yet, the threads, when one last started a step, the
/// connections whose step a thread took with it as it panicked, and `closed` once the pool
/// is gone.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    workers: Vec<Worker>,
    last_start: Option<Instant>,
    lost: Vec<ConnId>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled for each step queued, and when the pool closes.
    ready: Condvar,
    /// Tests hold a thread in its step while this is set.
    #[cfg(test)]
    stall: std::sync::atomic::AtomicBool,
    /// Tests make the next step panic.
    #[cfg(test)]
    panic: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A thread that panicked in a step held no lock then: the queue is whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock if it is free now: what the loop takes.
    fn try_lock(&self) -> Option<MutexGuard<'_, Queue>> {
        match self.queue.try_lock() {
            Ok(queue) => Some(queue),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// The threads' queue, and the loop's end of the finished steps.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    done: mpsc::Receiver<Done>,
    /// Steps handed over and not yet back (finished or taken back): while none are, the
    /// loop does not look at the queue.
    away: Cell<usize>,
    /// Until when the loop does every step itself (a step was taken back).
    in_loop_until: Cell<Option<Instant>>,
    /// Steps handed to the threads, and steps the loop took back (what the tests count).
    #[cfg(test)]
    counts: Cell<(u64, u64)>,
    /// Tests that count which steps go to the threads: none is taken back, however long
    /// the threads wait for CPU (on a busy machine the lowest class may get none for a
    /// while), so what they count does not depend on the machine's load.
    #[cfg(test)]
    patient: Cell<bool>,
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
        let threads = threads.max(1);
        let (pool, finished) = Pool::new(threads);
        for i in 0..threads {
            let (shared, finished, handle) =
                (pool.shared.clone(), finished.clone(), handle.clone());
            std::thread::Builder::new()
                .name(format!("dualstack-tls-{i}"))
                .spawn(move || {
                    // Established connections first: on a core shared with the loop, its
                    // wake-ups preempt this work at once.
                    crate::sys::yield_to_the_loop();
                    shared.lock().workers[i].tid = crate::sys::thread_id();
                    // However the thread ends (a panic in a step too), the loop stops seeing
                    // it: a dead thread's id may be another's by then, not to be hurried;
                    // and the loop hears of the step it was in (its session is gone).
                    let _gone = Gone(&shared, i, &handle);
                    while let Some(Job {
                        id,
                        mut session,
                        bytes,
                        ..
                    }) = next_job(&shared, i)
                    {
                        #[cfg(test)]
                        while shared.stall.load(std::sync::atomic::Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        #[cfg(test)]
                        if shared
                            .panic
                            .swap(false, std::sync::atomic::Ordering::SeqCst)
                        {
                            panic!("a step that panics (a test)");
                        }
                        let mut plain = Plain::default();
                        let fed = session.feed(&bytes, &mut plain);
                        let hurried = {
                            let mut queue = shared.lock();
                            let worker = &mut queue.workers[i];
                            worker.step = None;
                            std::mem::take(&mut worker.hurried)
                        };
                        if hurried {
                            crate::sys::yield_to_the_loop();
                        }
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

    fn new(threads: usize) -> (Pool, mpsc::Sender<Done>) {
        let (finished, done) = mpsc::channel::<Done>();
        let shared = Shared::default();
        shared.lock().workers = vec![Worker::default(); threads];
        let pool = Pool {
            shared: Arc::new(shared),
            done,
            away: Cell::new(0),
            in_loop_until: Cell::new(None),
            #[cfg(test)]
            counts: Cell::new((0, 0)),
            #[cfg(test)]
            patient: Cell::new(false),
        };
        (pool, finished)
    }

    /// A pool whose threads never come: every step waits for the loop to take it back.
    #[cfg(test)]
    pub(crate) fn without_threads() -> Pool {
        let (pool, finished) = Pool::new(0);
        std::mem::forget(finished); // the channel stays open, as with threads alive
        pool
    }

    /// Whether steps go to the threads now: not for [`LOOP_FOR`] after one was taken back.
    pub(crate) fn takes_steps(&self, now: Instant) -> bool {
        match self.in_loop_until.get() {
            Some(until) if now < until => false,
            Some(_) => {
                self.in_loop_until.set(None);
                true
            }
            None => true,
        }
    }

    /// Hands a step to a thread (`now`: when, for [`steal`](Pool::steal)); gives the
    /// session back if a thread holds the queue's lock now (the loop does the step).
    pub(crate) fn send(
        &self,
        id: ConnId,
        session: Box<Session>,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), Box<Session>> {
        let Some(mut queue) = self.shared.try_lock() else {
            return Err(session);
        };
        queue.jobs.push_back(Job {
            id,
            session,
            bytes: bytes.to_vec(),
            queued: now,
        });
        drop(queue);
        self.shared.ready.notify_one();
        self.away.set(self.away.get() + 1);
        #[cfg(test)]
        self.counts
            .set((self.counts.get().0 + 1, self.counts.get().1));
        Ok(())
    }

    /// The oldest step, if no thread has started it and it waited [`STEAL_AFTER`] by
    /// `now`: the loop does it instead (the session of a connection, and the ciphertext
    /// to feed it), and every step for the next [`LOOP_FOR`] if the threads are starved.
    /// Also hurries each thread that started a step [`STEAL_AFTER`] ago (see the module's
    /// docs).
    pub(crate) fn steal(&self, now: Instant) -> Option<(ConnId, Box<Session>, Vec<u8>)> {
        if self.away.get() == 0 {
            return None;
        }
        let patient = self.patient();
        let mut queue = self.shared.try_lock()?;
        for worker in &mut queue.workers {
            if let Some((_, since)) = worker.step.filter(|_| !worker.hurried) {
                if since + STEAL_AFTER <= now {
                    // Under the lock the thread takes to leave the step: it is in it.
                    if !crate::sys::hurry(worker.tid) && !patient {
                        self.in_loop_until.set(Some(now + LOOP_FOR));
                    }
                    worker.hurried = true;
                }
            }
        }
        if patient {
            return None;
        }
        let due = queue
            .jobs
            .front()
            .is_some_and(|job| job.queued + STEAL_AFTER <= now);
        let job = due.then(|| queue.jobs.pop_front()).flatten()?;
        // Starved, not busy: no thread started a step since this one was queued.
        let starved = queue.last_start.map_or(true, |start| start < job.queued);
        drop(queue);
        self.away.set(self.away.get() - 1);
        if starved {
            self.in_loop_until.set(Some(now + LOOP_FOR));
        }
        #[cfg(test)]
        self.counts
            .set((self.counts.get().0, self.counts.get().1 + 1));
        Some((job.id, job.session, job.bytes))
    }

    /// When [`steal`](Pool::steal) or [`next_lost`](Pool::next_lost) next has something to
    /// do, if ever.
    pub(crate) fn next_steal(&self) -> Option<Instant> {
        if self.away.get() == 0 {
            return None;
        }
        let Some(queue) = self.shared.try_lock() else {
            return Some(Instant::now() + Duration::from_millis(1)); // a thread holds it
        };
        if !queue.lost.is_empty() {
            return Some(Instant::now()); // a connection to close (see `next_lost`)
        }
        let started = queue
            .workers
            .iter()
            .filter(|w| !w.hurried)
            .filter_map(|w| w.step.map(|(_, since)| since));
        // Patient (tests), queued steps are never taken back: no wake for them.
        let queued = queue.jobs.front().filter(|_| !self.patient());
        let queued = queued.map(|job| job.queued);
        started.chain(queued).min().map(|since| since + STEAL_AFTER)
    }

    /// Whether queued steps are never taken back (tests only: see `patient`).
    fn patient(&self) -> bool {
        #[cfg(test)]
        return self.patient.get();
        #[cfg(not(test))]
        false
    }

    /// Never takes a step back from the threads (see `patient`); threads that started a
    /// step are still hurried.
    #[cfg(test)]
    pub(crate) fn be_patient(&self) {
        self.patient.set(true);
    }

    /// Steps handed to the threads so far, and how many of them the loop took back.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.counts.get()
    }

    /// Holds the threads in the steps they start (`true`) or lets them go on.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn stall(&self, on: bool) {
        self.shared
            .stall
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the next step a thread takes panic.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn panic_next(&self) {
        self.shared
            .panic
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many threads are in a step.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn in_steps(&self) -> usize {
        let queue = self.shared.lock();
        queue.workers.iter().filter(|w| w.step.is_some()).count()
    }

    /// When the thread in a step began it, if one is.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn step_since(&self) -> Option<Instant> {
        let queue = self.shared.lock();
        queue
            .workers
            .iter()
            .find_map(|w| w.step.map(|(_, since)| since))
    }

    /// The id of a thread in a step, if one is.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn in_step(&self) -> Option<i32> {
        let queue = self.shared.lock();
        let worker = queue.workers.iter().find(|w| w.step.is_some());
        worker.map(|w| w.tid)
    }

    /// Pretends a thread `tid` started a step at `since` and is in it (`in_step`), or
    /// started one then and is done.
    #[cfg(test)]
    fn pretend(&self, tid: i32, since: Instant, in_step: bool) {
        let mut queue = self.shared.lock();
        queue.workers = vec![Worker {
            tid,
            step: in_step.then_some((
                ConnId {
                    key: 0,
                    generation: 0,
                },
                since,
            )),
            hurried: false,
        }];
        queue.last_start = Some(since);
    }

    /// Pretends a thread panicked in the step of `id` (as `Gone` reports it), without a
    /// wake.
    #[cfg(test)]
    pub(crate) fn lose(&self, id: ConnId) {
        self.shared.lock().lost.push(id);
        self.away.set(self.away.get() + 1);
    }

    /// The threads' ids.
    #[cfg(all(test, any(target_os = "linux", target_os = "android")))]
    pub(crate) fn tids(&self) -> Vec<i32> {
        self.shared.lock().workers.iter().map(|w| w.tid).collect()
    }

    /// A finished step, if one is waiting.
    pub(crate) fn next_done(&self) -> Option<Done> {
        let done = self.done.try_recv().ok()?;
        self.away.set(self.away.get().saturating_sub(1));
        Some(done)
    }

    /// A connection whose step a thread took with it as it panicked: its session is gone,
    /// and the loop closes it.
    pub(crate) fn next_lost(&self) -> Option<ConnId> {
        if self.away.get() == 0 {
            return None;
        }
        let id = self.shared.try_lock()?.lost.pop()?;
        self.away.set(self.away.get() - 1);
        Some(id)
    }
}

/// Forgets thread `i` when dropped, as the thread ends or unwinds from a panic, and tells
/// the loop of the step it was in, if any.
struct Gone<'a>(&'a Shared, usize, &'a ServerHandle);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        let lost = queue.workers[self.1].step.map(|(id, _)| id);
        queue.workers[self.1] = Worker::default();
        queue.lost.extend(lost);
        drop(queue);
        if lost.is_some() {
            self.2.handshake_done();
        }
    }
}

/// Thread `i`'s next step (marked started); `None` once the pool is gone.
fn next_job(shared: &Shared, i: usize) -> Option<Job> {
    let mut queue = shared.lock();
    loop {
        if queue.closed {
            return None;
        }
        if let Some(job) = queue.jobs.pop_front() {
            let now = Instant::now();
            queue.workers[i].step = Some((job.id, now));
            queue.last_start = Some(now);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #23: a queued step is taken back once it waited `STEAL_AFTER` (not before,
    /// and the loop is told when to wake for it); then the loop does every step itself
    /// for `LOOP_FOR`, and hands them over again after.
    #[test]
    fn a_step_is_taken_back_when_due_and_the_loop_keeps_the_next_ones_for_a_while() {
        let pool = Pool::without_threads();
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        assert_eq!(pool.next_steal(), None, "nothing handed over");
        let id = ConnId {
            key: 3,
            generation: 1,
        };
        assert!(pool.send(id, session(), b"hello", t0).is_ok());
        assert_eq!(pool.next_steal(), Some(t0 + STEAL_AFTER));
        assert!(pool.steal(t0 + STEAL_AFTER - ms(1)).is_none(), "early");
        assert!(pool.takes_steps(t0 + STEAL_AFTER - ms(1)));
        let t1 = t0 + STEAL_AFTER;
        let (back, _, bytes) = pool.steal(t1).expect("due");
        assert_eq!((back, &bytes[..]), (id, &b"hello"[..]));
        assert_eq!(pool.counts(), (1, 1));
        assert_eq!(pool.next_steal(), None, "nothing left away");
        assert!(!pool.takes_steps(t1));
        assert!(!pool.takes_steps(t1 + LOOP_FOR - ms(1)));
        assert!(pool.takes_steps(t1 + LOOP_FOR));
        assert!(pool.takes_steps(t1), "tried again once LOOP_FOR passed");
    }

    /// A step lost to a panic is reported even if the queue's lock was busy when the
    /// thread's wake came: the loop is told to look again (at once, or a millisecond later
    /// while the lock is held), and the step is no longer counted as away.
    #[test]
    fn a_lost_step_is_looked_for_again_until_it_is_taken() {
        let pool = Pool::without_threads();
        pool.lose(ID);
        let held = pool.shared.lock();
        let now = Instant::now();
        assert_eq!(pool.next_lost(), None, "the lock is busy");
        let again = pool.next_steal().expect("a time to look again");
        assert!(again > now && again <= Instant::now() + Duration::from_millis(1));
        drop(held);
        assert!(pool.next_steal().expect("at once") <= Instant::now());
        assert_eq!(pool.next_lost(), Some(ID));
        assert_eq!(pool.next_lost(), None);
        assert_eq!(pool.next_steal(), None, "nothing away");
    }

    /// A session for the tests' steps.
    fn session() -> Box<Session> {
        super::super::testing::session().0
    }

    const ID: ConnId = ConnId {
        key: 1,
        generation: 1,
    };

    /// Issue #23 (review): a step taken back while the threads are busy (one started a step
    /// after it was queued) leaves the next steps to them: only starved threads make the
    /// loop keep the steps for `LOOP_FOR`, or a burst of handshakes would switch the
    /// threads off exactly when they help.
    #[test]
    fn busy_threads_keep_their_steps_and_only_starved_ones_lose_them() {
        let pool = Pool::without_threads();
        let t0 = Instant::now();
        assert!(pool.send(ID, session(), b"", t0).is_ok());
        pool.pretend(0, t0 + Duration::from_millis(1), false);
        let t1 = t0 + STEAL_AFTER;
        assert!(pool.steal(t1).is_some(), "due");
        assert!(pool.takes_steps(t1), "busy threads lost their steps");
    }

    /// Issue #23 (review): a thread in a step for `STEAL_AFTER` that cannot be hurried (no
    /// permission, or no such thread: id 0 here) makes the loop keep the next steps for
    /// `LOOP_FOR`; it is tried once, not at every turn.
    #[test]
    fn a_thread_that_cannot_be_hurried_makes_the_loop_keep_the_steps() {
        let pool = Pool::without_threads();
        let t0 = Instant::now();
        assert!(pool.send(ID, session(), b"", t0 + STEAL_AFTER).is_ok());
        pool.pretend(0, t0, true);
        let t1 = t0 + STEAL_AFTER;
        assert_eq!(pool.next_steal(), Some(t1));
        assert!(pool.steal(t1).is_none(), "the queued step is not due yet");
        assert!(
            !pool.takes_steps(t1),
            "the steps stayed with a stuck thread"
        );
        assert_eq!(
            pool.next_steal(),
            Some(t1 + STEAL_AFTER),
            "the stuck thread again"
        );
    }

    /// Issue #23 (review): the loop never waits for the queue's lock: while a thread holds
    /// it, a step is not handed over (the loop does it), nothing is taken back, and the
    /// loop looks again within a millisecond.
    #[test]
    fn the_loop_never_waits_for_the_queues_lock() {
        let pool = Pool::without_threads();
        let t0 = Instant::now();
        assert!(pool.send(ID, session(), b"", t0).is_ok());
        let held = pool.shared.lock();
        assert!(pool.send(ID, session(), b"", t0).is_err(), "handed over");
        assert!(pool.steal(t0 + STEAL_AFTER).is_none(), "taken back");
        let next = pool.next_steal().expect("a time to look again");
        assert!(next <= Instant::now() + Duration::from_millis(1));
        drop(held);
        assert!(pool.steal(t0 + STEAL_AFTER).is_some());
    }
}
