//! Threads that take TLS handshake steps off the loop
//! ([`ServerBuilder::tls_handshake_threads`](crate::ServerBuilder::tls_handshake_threads)):
//! a full handshake is private-key and key-exchange work (about a millisecond on a slow
//! machine), and a request that arrives while the loop does it waits for it. With a pool,
//! the loop hands a connection's session and the bytes it read to a thread, goes on
//! serving, and takes the session back (with its plaintext, or its failure) when the thread
//! wakes it. The session is the connection's alone while it is away: the loop does not read
//! that connection meanwhile.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::{Done, Plain, Session};
use crate::conn::ConnId;
use crate::reactor::ServerHandle;

/// A step for a thread: the session of `id` and the ciphertext to feed it.
struct Job {
    id: ConnId,
    session: Box<Session>,
    bytes: Vec<u8>,
}

/// The threads, and the two ends the loop holds.
pub(crate) struct Pool {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    /// Steps handed to the threads so far (what the tests count).
    #[cfg(test)]
    sent: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    /// `threads` threads (at least one) that wake the loop through `handle` after each step.
    pub(crate) fn start(threads: usize, handle: &ServerHandle) -> std::io::Result<Pool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let (queue, finished, handle) = (queue.clone(), finished.clone(), handle.clone());
            std::thread::Builder::new()
                .name(format!("dualstack-tls-{i}"))
                .spawn(move || {
                    // Established connections first: on a core shared with the loop, its
                    // wake-ups preempt this work at once.
                    crate::sys::yield_to_the_loop();
                    loop {
                        // The loop's end of the queue is gone with the server: so is this thread.
                        let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        let Job {
                            id,
                            mut session,
                            bytes,
                        } = job;
                        let mut plain = Plain::default();
                        let fed = session.feed(&bytes, &mut plain);
                        if finished
                            .send(Done {
                                id,
                                session,
                                plain,
                                fed,
                            })
                            .is_err()
                        {
                            return;
                        }
                        handle.handshake_done();
                    }
                })?;
        }
        Ok(Pool {
            jobs,
            done,
            #[cfg(test)]
            sent: std::cell::Cell::new(0),
        })
    }

    /// Hands a step to a thread; gives the session back if the threads are gone.
    pub(crate) fn send(
        &self,
        id: ConnId,
        session: Box<Session>,
        bytes: &[u8],
    ) -> Result<(), Box<Session>> {
        let job = Job {
            id,
            session,
            bytes: bytes.to_vec(),
        };
        #[cfg(test)]
        self.sent.set(self.sent.get() + 1);
        self.jobs.send(job).map_err(|e| e.0.session)
    }

    /// Steps handed to the threads so far.
    #[cfg(test)]
    pub(crate) fn sent(&self) -> u64 {
        self.sent.get()
    }

    /// A finished step, if one is waiting.
    pub(crate) fn next_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }
}
