//! Output: [`Core::send`] queues; what a connection was sent is written once, in one
//! (vectored) write, when the reactor is done reading that connection or at the turn's end
//! ([`Core::flush`], [`Core::flush_dirty`]), and again on WRITABLE while the kernel does not
//! take it all; backpressure and the total-queue cap ([`shed_order`]) keep memory bounded.

use std::cmp::Reverse;
use std::fmt;
use std::io;

use mio::Interest;

use super::core::{conn_mut, Core};
use super::token;
use crate::conn::{CloseReason, ConnId, Holder, OutQueue, Send, Spares};

/// What a connection is always registered for. On Linux also PRIORITY (EPOLLPRI): `recv`
/// stops at TCP's urgent mark, so a read can come back short with data behind it, and the
/// urgent byte's event is what says "do not trust the short read".
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) const CONN_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) const CONN_INTEREST: Interest = Interest::READABLE;

/// Why [`Context::send`](crate::Context::send) refused bytes. Not one byte of them was
/// written or queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed, closing, or its writing side was shut down.
    Closed,
    /// Queuing the bytes would pass the connection's hard limit on queued output
    /// ([`ServerBuilder::max_queued`](crate::ServerBuilder::max_queued)), even after the
    /// queue was offered to the kernel: the peer is not reading fast enough, or the bytes
    /// alone are longer than the limit. The connection stays open; a handler usually closes
    /// it, or sends again after [`on_drained`](crate::Handler::on_drained).
    QueueFull {
        /// Bytes already queued, which the kernel did not take.
        queued: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes alone are more than the server's cap on total queued output
    /// ([`ServerBuilder::max_total_queued`](crate::ServerBuilder::max_total_queued)), so the
    /// server could not promise to hold what the kernel does not take. Send them in smaller
    /// pieces (as `on_drained` signals room).
    TooLarge {
        /// The length of the refused bytes.
        len: usize,
        /// The cap.
        limit: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("the connection is closed"),
            SendError::QueueFull { queued, limit } => write!(
                f,
                "the connection's output queue is full ({queued} bytes queued, limit {limit})"
            ),
            SendError::TooLarge { len, limit } => write!(
                f,
                "{len} bytes are more than the server's total output cap ({limit})"
            ),
        }
    }
}

impl std::error::Error for SendError {}

/// Which holders to close, largest queue first, so that at most `target` bytes stay queued
/// of `total`: exactly as many as needed. `holders` are `(queued bytes, connection)`.
pub(super) fn shed_order(
    mut holders: Vec<(usize, ConnId)>,
    total: usize,
    target: usize,
) -> Vec<(usize, ConnId)> {
    holders.sort_unstable_by_key(|&(queued, id)| (Reverse(queued), id));
    let mut remaining = total;
    holders
        .into_iter()
        .take_while(|&(queued, _)| {
            let needed = remaining > target;
            remaining = remaining.saturating_sub(queued);
            needed
        })
        .collect()
}

/// A queue this long is written at once, in the send that makes it so, instead of at the
/// end of the read or turn: a bulk sender keeps the socket busy instead of building up a
/// turn's worth of output first (one write per read of a 64 KiB echo, as before coalescing).
pub(super) const FLUSH_AT: usize = 64 * 1024;

/// A send this large or larger skips the queue when nothing waits in it (see
/// [`Core::send`]): one system call per 16 KiB or more costs less than copying them, and for
/// TLS it is the largest record's plaintext, so records stay full either way. Smaller sends
/// still gather into one write (one record) per turn.
pub(crate) const SEND_NOW_AT: usize = 16 * 1024;

/// Calls `write` until it has nothing left to write (`None`) or the sink stops taking it
/// (WouldBlock). Returns how many bytes left, counted even when an error ended the loop
/// (issue #12, item 9: bytes written before an error stayed in the total queued count for
/// good), and that error, if one did.
fn write_while(mut write: impl FnMut() -> Option<io::Result<usize>>) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while let Some(result) = write() {
        match result {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Some(e)),
        }
    }
    (written, None)
}

/// Writes `out` into `sink` until it is empty or the sink stops taking it (see
/// [`write_while`]).
fn write_queue(
    out: &mut OutQueue,
    sink: &mut impl io::Write,
    spares: &mut Spares,
) -> (usize, Option<io::Error>) {
    write_while(|| (!out.is_empty()).then(|| out.write_to(sink, spares)))
}

/// Writes `data` into `sink` until all of it is written or the sink stops taking it (see
/// [`write_while`]).
fn write_slice(data: &[u8], sink: &mut impl io::Write) -> (usize, Option<io::Error>) {
    let mut done = 0;
    write_while(|| {
        (done < data.len()).then(|| {
            let result = sink.write(&data[done..]);
            if let Ok(n) = result {
                done += n;
            }
            result
        })
    })
}

/// [`write_queue`] through a TLS session: the queue encrypted (as much as the session's
/// ciphertext limit takes at a time) behind the ciphertext already waiting there (tickets,
/// say), and both written in one vectored write, until the queue is empty or the socket
/// stops taking it. Returns the plaintext that left the queue.
fn write_queue_tls(
    out: &mut OutQueue,
    tls: &mut crate::tls::Session,
    sink: &mut impl io::Write,
    spares: &mut Spares,
) -> (usize, Option<io::Error>) {
    let mut moved = 0;
    loop {
        if !out.is_empty() {
            // Ok(0): the session's buffer is full; the write below makes room.
            match tls.encrypt(out, spares) {
                Ok(n) => moved += n,
                Err(e) => return (moved, Some(e)),
            }
        }
        if !tls.wants_write() {
            // Nothing waits, so the queue is empty, or an empty session took none of it.
            let stuck = (!out.is_empty()).then(|| io::ErrorKind::WriteZero.into());
            return (moved, stuck);
        }
        while tls.wants_write() {
            match tls.write_tls(sink) {
                Ok(0) => return (moved, Some(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (moved, None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (moved, Some(e)),
            }
        }
        if out.is_empty() {
            return (moved, None);
        }
    }
}

impl Core {
    /// Queues `data` for `id`, to be written with everything else sent to it this turn: when
    /// the reactor is done reading it, or at the turn's end (at once past [`FLUSH_AT`]). A
    /// send of [`SEND_NOW_AT`] or more that finds the queue empty is written at once instead.
    ///
    /// Every check that can refuse the bytes runs before they are queued, so an `Err`
    /// always means that nothing of `data` will reach the socket.
    #[inline(always)]
    pub(crate) fn send(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Err(SendError::Closed);
        };
        if !conn.sendable() {
            return Err(SendError::Closed);
        }
        if data.is_empty() {
            return Ok(());
        }
        // The usual send: small, within the connection's limit, no server-wide cap. Queued
        // with no more checks than it needs (a reply per request is called per message).
        let queued = conn.out.len() + data.len();
        if data.len() < SEND_NOW_AT
            && queued < FLUSH_AT
            && queued <= self.limits.max_queued
            && self.limits.max_total_queued.is_none()
        {
            conn.out.push(data, &mut self.spares);
            self.total_queued += data.len();
            conn.mark_dirty(id, &mut self.dirty);
            if queued > self.limits.high_water && !conn.recv.held_by(Holder::Queue) {
                log::debug!("{id}: {queued} bytes queued: reading paused");
                conn.recv.hold(Holder::Queue);
                self.hold_input(id);
            }
            return Ok(());
        }
        self.send_checked(id, data)
    }

    /// [`send`](Core::send) past its usual case: a large send, a queue near a limit, or a
    /// server-wide cap. Kept out of line, so the usual send stays small enough to inline
    /// into the handler's loop.
    #[cold]
    #[inline(never)]
    fn send_checked(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        let limits = self.limits;
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Err(SendError::Closed);
        };
        if conn.out.len() + data.len() > limits.max_queued && !conn.writable {
            // Part of the queue may only be waiting for the read's or turn's end: offered to
            // the kernel now, the limit holds only what the peer has not taken (a limit at
            // or below FLUSH_AT refused a burst to a peer that reads).
            self.flush(id);
        }
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Err(SendError::Closed);
        };
        if !conn.sendable() {
            return Err(SendError::Closed);
        }
        let queued = conn.out.len();
        if queued + data.len() > limits.max_queued {
            return Err(SendError::QueueFull {
                queued,
                limit: limits.max_queued,
            });
        }
        // A send that leaves from the handler's slice (below) needs room under the
        // server-wide cap only for what the kernel leaves of it: for that send the cap is
        // checked after the write, or other connections were shed for bytes never queued.
        let direct = data.len() >= SEND_NOW_AT && queued == 0 && !conn.writable;
        if let Some(cap) = limits.max_total_queued {
            if data.len() > cap {
                return Err(SendError::TooLarge {
                    len: data.len(),
                    limit: cap,
                });
            }
            if !direct {
                self.make_room(id, cap, data.len())?;
            }
        }
        let conn = conn_mut(&mut self.conns, id).expect("checked above");
        // A send of [`SEND_NOW_AT`] or more with nothing queued before it (and a socket not
        // known to be full) leaves from the handler's slice: written at once, or encrypted
        // into the TLS session; the queue would only hold it to copy it there.
        let mut sent = 0;
        if direct {
            let failed = match &mut conn.tls {
                Some(tls) => match tls.encrypt_slice(data) {
                    Ok(n) => {
                        sent = n;
                        None
                    }
                    Err(e) => Some(e),
                },
                None => {
                    let (n, failed) = write_slice(data, &mut conn.stream);
                    sent = n;
                    failed
                }
            };
            if sent > 0 {
                self.listeners[conn.listener as usize].stats.bytes_out += sent as u64;
                conn.timing.last_active = self.now;
            }
            if let Some(e) = failed {
                // The handler hears of it in on_close, as of any write error.
                self.request_close(id, CloseReason::from_io(e));
                return Ok(());
            }
            if let Some(cap) = limits.max_total_queued {
                // Room for the rest, which is queued whatever happens now (the send may
                // have taken bytes); the sender holds no queue, so it is never the one shed.
                let _ = self.make_room(id, cap, data.len() - sent);
            }
        }
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Ok(()); // never: the sender held no queue to shed
        };
        let rest = &data[sent..];
        conn.out.push(rest, &mut self.spares);
        self.total_queued += rest.len();
        if !conn.flushed() {
            conn.mark_dirty(id, &mut self.dirty);
        }
        if conn.tls.is_none() && sent > 0 && !conn.out.is_empty() {
            // The kernel took only part: the rest waits for WRITABLE.
            self.after_write(id, false);
        } else if conn.out.len() + sent >= FLUSH_AT && !conn.writable {
            self.flush(id);
        }
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return Ok(()); // a write error closed it: the handler hears of it in on_close
        };
        if conn.out.len() > limits.high_water && !conn.recv.held_by(Holder::Queue) {
            log::debug!("{id}: {} bytes queued: reading paused", conn.out.len());
            conn.recv.hold(Holder::Queue);
            self.hold_input(id);
        }
        Ok(())
    }

    /// Makes room under the server-wide `cap` for `len` more queued bytes (`len <= cap`):
    /// first by writing what only waits for the turn's end, then by closing the
    /// connections that hold the most. `Err` if that closed `id` itself: a sender is a
    /// candidate only while it holds a queue, and then its queue (and this send) is
    /// dropped, so `Err` still means "not one byte".
    fn make_room(&mut self, id: ConnId, cap: usize, len: usize) -> Result<(), SendError> {
        if self.total_queued + len > cap {
            // Much of what is queued may only be waiting for the turn's end: written now,
            // it is not held against anyone.
            self.flush_dirty();
        }
        if self.total_queued + len > cap {
            // `len <= cap`, so closing every other holder always makes room.
            self.shed(cap - len);
            if !self.get(id).is_some_and(|c| c.sendable()) {
                return Err(SendError::Closed);
            }
        }
        Ok(())
    }

    /// Writes what is queued for every connection sent to since the last time: the turn's
    /// end. One write each (vectored), more only where the kernel takes it piece by piece.
    pub(super) fn flush_dirty(&mut self) {
        while let Some(id) = self.dirty.pop() {
            self.flush(id);
        }
    }

    /// Writes what is queued for `id` now, if anything is, and the socket is not known to be
    /// full (then its WRITABLE event does it).
    pub(super) fn flush(&mut self, id: ConnId) {
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return;
        };
        conn.dirty = false;
        if conn.flushed() || conn.writable {
            return;
        }
        self.write_out(id);
    }

    /// Writes what is queued for connection `key` until the kernel stops taking it: its
    /// WRITABLE event.
    pub(super) fn writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let id = conn.id(key);
        self.write_out(id);
    }

    fn write_out(&mut self, id: ConnId) {
        self.write_out_after(id, false);
    }

    /// [`write_out`](Core::write_out), for a queue that backed up before (`blocked`) even if
    /// WRITABLE is no longer registered: its `on_drained` is still owed.
    fn write_out_after(&mut self, id: ConnId, blocked: bool) {
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return;
        };
        if conn.flushed() {
            return;
        }
        let was_blocked = conn.writable || blocked;
        let listener = conn.listener as usize;
        let (left, failed) = match &mut conn.tls {
            Some(tls) => write_queue_tls(&mut conn.out, tls, &mut conn.stream, &mut self.spares),
            None => write_queue(&mut conn.out, &mut conn.stream, &mut self.spares),
        };
        if left > 0 {
            self.total_queued -= left;
            self.listeners[listener].stats.bytes_out += left as u64;
            conn.timing.last_active = self.now;
        }
        match failed {
            Some(e) => self.request_close(id, CloseReason::from_io(e)),
            None => self.after_write(id, was_blocked),
        }
    }

    /// Brings interest, backpressure and pending closes in line with the queue of `id`
    /// after a write. `was_blocked`: WRITABLE was registered (the queue had backed up), so
    /// a queue now empty is worth an `on_drained`.
    pub(super) fn after_write(&mut self, id: ConnId, was_blocked: bool) {
        let limits = self.limits;
        let Some(conn) = conn_mut(&mut self.conns, id) else {
            return;
        };
        let want_writable = !conn.flushed();
        if want_writable != conn.writable {
            let interest = if want_writable {
                CONN_INTEREST | Interest::WRITABLE
            } else {
                CONN_INTEREST
            };
            if let Err(e) =
                self.registry
                    .reregister(&mut conn.stream, token::conn(id.key), interest)
            {
                self.request_close(id, CloseReason::Error(e));
                return;
            }
            conn.writable = want_writable;
        }
        if conn.recv.held_by(Holder::Queue) && conn.out.len() <= limits.low_water {
            log::debug!(
                "{id}: queue down to {} bytes: reading again",
                conn.out.len()
            );
            if conn.recv.release(Holder::Queue) || (conn.offer_kept && conn.recv.wants_read()) {
                self.ready.push(id);
            }
        }
        if !conn.out.is_empty() {
            return;
        }
        let ending = conn.send == Send::ShutAfterFlush || conn.life.drained();
        if ending && conn.tls.as_mut().is_some_and(|t| t.close_notify()) {
            // A TLS stream ends with close_notify, after everything sent: written like
            // the rest, and this runs again once it is (an on_drained still owed, though
            // WRITABLE was dropped above).
            return self.write_out_after(id, was_blocked);
        }
        if !conn.flushed() {
            return; // ciphertext waits for WRITABLE
        }
        if conn.send.drained() {
            if let Err(e) = conn.stream.shutdown(std::net::Shutdown::Write) {
                self.request_close(id, CloseReason::from_io(e));
                return;
            }
        }
        if conn.life.drained() {
            let reason = self.local_close_reason(id);
            self.request_close(id, reason);
        } else if was_blocked && conn.phase.handed() {
            self.drained.push_back(id);
        }
    }

    /// The total queued output is about to pass its cap: close the connections holding the
    /// most until at most `target` bytes stay queued, and not one more. A scan of every
    /// connection, but only when the cap is reached. Connections already closing hold no
    /// queue (see [`request_close`](Core::request_close)), so they are neither counted nor
    /// chosen.
    fn shed(&mut self, target: usize) {
        let holders: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.out.is_empty())
            .map(|(k, c)| (c.out.len(), c.id(k)))
            .collect();
        let closed = shed_order(holders, self.total_queued, target);
        for &(_, id) in &closed {
            self.request_close(id, CloseReason::Overloaded);
        }
        log::warn!(
            "queued output passed its limit: closing {} connections holding the most ({})",
            closed.len(),
            closed
                .iter()
                .map(|(q, id)| format!("{id}: {q} bytes"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: usize) -> ConnId {
        ConnId { key, generation: 0 }
    }

    /// A sink that takes `budget` bytes, a few at a time, then fails like a reset peer.
    struct Failing {
        budget: usize,
    }

    impl io::Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let n = buf.len().min(self.budget).min(3);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Issue #12, item 9: a write error after partial writes in one flush left the bytes
    /// already written in the total queued count, a phantom that grew until every send
    /// shed. Every write is counted as it happens.
    #[test]
    fn bytes_written_before_an_error_are_counted() {
        let mut out = OutQueue::default();
        let mut spares = Spares::default();
        out.push(&[7; 100], &mut spares);
        let (counted, err) = write_queue(&mut out, &mut Failing { budget: 10 }, &mut spares);
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::ConnectionReset));
        assert_eq!(
            counted, 10,
            "bytes that left before the error were not counted"
        );
        assert_eq!(out.len(), 90);
    }

    /// The shed order, socket-free: largest first, exactly enough, ties by id.
    #[test]
    fn shedding_closes_the_largest_holders_and_no_more_than_needed() {
        let holders = vec![(100, id(0)), (300, id(1)), (50, id(2)), (300, id(3))];
        // 750 queued; room for 500 more under a cap of 800 means at most 300 may stay.
        assert_eq!(
            shed_order(holders.clone(), 750, 300),
            [(300, id(1)), (300, id(3))]
        );
        assert_eq!(shed_order(holders.clone(), 750, 450), [(300, id(1))]);
        assert_eq!(shed_order(holders.clone(), 750, 750), []);
        assert_eq!(shed_order(holders.clone(), 750, 0).len(), 4);
        assert_eq!(shed_order(Vec::new(), 0, 0), []);
    }

    /// Issue #23: what waits in a TLS session (here a TLS 1.3 server's tickets, left there
    /// as the handshake ends) and the reply queued after it leave in one write: each used to
    /// be written on its own, a system call more per connection.
    #[test]
    #[cfg(feature = "tls")]
    fn waiting_tls_records_and_the_queue_leave_in_one_write() {
        let (mut session, mut client) = crate::tls::testing::established();
        assert!(session.wants_write(), "no tickets wait");
        let mut out = OutQueue::default();
        let mut spares = Spares::default();
        out.push(b"hello\n", &mut spares);
        let mut sink = crate::conn::Counting::default();
        let (moved, failed) = write_queue_tls(&mut out, &mut session, &mut sink, &mut spares);
        assert!(failed.is_none(), "{failed:?}");
        assert_eq!((moved, sink.calls), (6, 1), "plaintext moved, writes");
        client.read_tls(&mut &sink.got[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut client.reader(), &mut got);
        assert_eq!(got, b"hello\n");
    }
}
