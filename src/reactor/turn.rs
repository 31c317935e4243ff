//! One turn of the loop ([`Server::run_once`]'s insides): dispatching readiness, reading,
//! carrying out what callbacks asked for ([`Server::settle`]), timers, deadlines and the
//! graceful stop.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::Events;

use super::core;
use super::deadlines::Verdict;
use super::handler::Context;
use super::handler::Handler;
use super::timers::Due;
use super::token::{self, Slot};
use super::Server;
use crate::conn::{
    client_of, CloseReason, ConnId, ConnInfo, Input, ListenerId, Phase, Proxied, Step,
};
use crate::proxy::ProxyHeader;
use crate::socket::Peer;

/// A PROXY header named the client of connection `id`: it becomes the peer, if it has room
/// under the per-peer limit (else the connection is closed). Returns (balancer, client).
pub(super) fn admit_client(
    core: &mut super::core::Core,
    id: ConnId,
    header: &ProxyHeader,
) -> Option<(Peer, Peer)> {
    let conn = core::conn_mut(&mut core.conns, id)?;
    let balancer = conn.peer;
    let client = client_of(balancer, header);
    conn.peer = client;
    if !core.peers.admit(&client) {
        log::debug!("{id}: {client} (through {balancer}) already has its share of connections");
        core.request_close(id, CloseReason::PeerLimit);
        return None;
    }
    Some((balancer, client))
}

/// What [`Server::deliver`] offers the handler: the first bytes of the loop's buffer (a
/// read, nothing kept), the plaintext a read's records held (TLS, nothing kept), or the
/// bytes kept for the connection.
#[derive(Debug, Clone, Copy)]
enum Offer {
    Read(usize),
    Plain,
    Kept,
}

/// Whether a short read proves the socket drained (see the module docs of `reactor`):
/// Linux stream sockets only (TCP, and Unix-domain, whose every arrival wakes epoll too).
pub(super) const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl<H: Handler> Server<H> {
    /// One turn: poll, dispatch this turn's events, serve what was carried over from the
    /// last turn (after the events, so a busy connection cannot cut in), then timers,
    /// deadlines, a paused accept and the stop deadline.
    pub(super) fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = self.poll_timeout(timeout);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.core.now = Instant::now();
        self.core.handshakes = 0;
        // Handshake steps the threads did not take in time: before this turn's new ones,
        // which would otherwise take the budget whenever 16 or more ClientHellos come.
        self.take_back_handshakes();
        let carried = self.core.ready.begin_turn();
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            self.dispatch(event);
        }
        self.events = events;
        for _ in 0..carried {
            let Some(id) = self.core.ready.pop() else {
                break;
            };
            if self.core.get(id).is_some() {
                // No event says what is queued: read until WouldBlock or end of stream.
                self.read(id, false);
            }
        }
        // The one point of the turn where connections are accepted: after every event of
        // the batch, because events name slab keys, and a connection accepted into a slot
        // that a callback freed earlier in the batch must not receive a later event of the
        // batch meant for the slot's previous connection. Accepted now: listeners an event
        // named, those with a slot freed under `max_connections`, and those whose budget
        // ran out last turn (this turn's leftovers wait for the next).
        for index in std::mem::take(&mut self.core.ready_listeners) {
            self.accept(index);
        }
        self.fire_timers();
        self.check_deadlines();
        self.retry_accept();
        self.check_stop_deadline();
        self.check_drain();
        // Whatever callbacks sent and is not written yet: one write per connection. A write
        // that fails closes its connection, and what its on_close sends (to the others) is
        // written too, not left for a turn that may not come until some other event.
        loop {
            self.core.flush_dirty();
            self.settle();
            if self.core.dirty.is_empty() {
                break;
            }
        }
        self.offer_owed();
        Ok(())
    }

    /// Refused input owed to its handler (see `read_handed`) is offered next turn once
    /// something happened since its refusal; until then it waits, and the loop sleeps.
    fn offer_owed(&mut self) {
        if self.core.owed.is_empty() {
            return;
        }
        let epoch = self.core.epoch;
        let mut owed = std::mem::take(&mut self.core.owed);
        owed.retain(|&id| {
            let Some(conn) = core::conn_mut(&mut self.core.conns, id) else {
                return false; // closed
            };
            let waiting = conn.offer_kept && !conn.input.is_empty();
            if waiting && conn.refused == Some(epoch) {
                return true; // nothing happened yet
            }
            conn.owed = false;
            if waiting {
                self.core.ready.push(id);
            }
            false
        });
        self.core.owed = owed;
    }

    fn poll_timeout(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.core.ready.is_empty()
            || !self.core.ready_listeners.is_empty()
            || !self.core.to_close.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let listener_retry = self.core.listeners.iter().filter_map(|l| l.retry_at).min();
        let deadline = [
            self.core.timers.next_deadline(),
            self.core.deadlines.next(),
            self.core.backoff.resume_at(),
            listener_retry,
            self.core.stopping,
            self.core.draining,
            self.core.tls_pool.as_ref().and_then(|p| p.next_steal()),
        ]
        .into_iter()
        .flatten()
        .min();
        // Read the clock only when a deadline needs it: one clock read per turn, not two.
        deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .into_iter()
            .chain(timeout)
            .min()
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match token::slot(event.token()) {
            Slot::Conn(key) => {
                let Some(id) = self.core.conns.get(key).map(|c| c.id(key)) else {
                    return;
                };
                if event.is_writable() {
                    self.core.writable(key);
                    self.settle();
                }
                // A failed flush may have closed it. (Its slot stays empty until the turn's
                // accepting point, after the batch: see `turn`.)
                let Some(conn) = core::conn_mut(&mut self.core.conns, id) else {
                    return;
                };
                // On Windows mio reports a reset (AFD_POLL_ABORT) as both directions closed,
                // not as an error; a peer's FIN closes only the read side there.
                let aborted = cfg!(windows) && event.is_read_closed() && event.is_write_closed();
                if (event.is_error() || aborted) && !conn.recv.wants_read() {
                    // A reset (or another socket error) on a connection that is not being
                    // read: reading would find it, but may not resume for a long time, and
                    // a dead peer must not keep its descriptor, slot and per-peer share.
                    let reason = match conn.stream.take_error() {
                        Ok(Some(e)) | Err(e) => Some(CloseReason::from_io(e)),
                        Ok(None) if aborted => Some(CloseReason::Reset),
                        Ok(None) => None,
                    };
                    if let Some(reason) = reason {
                        self.core.request_close(id, reason);
                        self.settle();
                        return;
                    }
                }
                if self.core.ready.contains(id) {
                    // Already queued: it gets its one budget of the turn from the queue.
                    return;
                }
                if event.is_read_closed() || event.is_error() || event.is_priority() {
                    // End of stream (or an error) is already queued: read until it shows. Or
                    // urgent data arrived, and a read that stops at its mark is short with
                    // more behind it, so a short read proves nothing either.
                    self.read(id, false);
                } else if event.is_readable() {
                    self.read(id, SHORT_READ_DRAINS);
                }
            }
            Slot::Listener(index) => self.core.accept_soon(index),
            Slot::Waker => {
                if self.handle.take_handshakes() {
                    self.finish_handshakes();
                }
                if self.handle.take_hand_over_news() {
                    self.hand_over_news();
                }
                if !self.handle.take_woken() {
                    return; // only a handshake thread: not the application's wake
                }
                if self.handle.take_stop() {
                    self.core.request_stop();
                }
                #[cfg(feature = "tls")]
                for (listeners, tls) in self.handle.take_tls() {
                    self.core.replace_tls(&listeners, tls);
                }
                let mut ctx = Context::new(&mut self.core, &mut self.states);
                self.handler.on_wake(&mut ctx);
                self.settle();
            }
            Slot::App(token) => {
                let mut ctx = Context::new(&mut self.core, &mut self.states);
                self.handler.on_event(&mut ctx, token, event);
                self.settle();
            }
        }
    }

    /// Reads from connection `id` until `WouldBlock`, its budget runs out, or the handler
    /// stops it (a hold: backpressure, a pause, a close), handing each read to `on_data`
    /// after the input left unused before; then writes what `id` was sent meanwhile, in
    /// one write. With `short_read_drains`, a read shorter than the buffer also ends it:
    /// only when the event did not report end-of-stream, which a short read says nothing
    /// about.
    pub(super) fn read(&mut self, id: ConnId, short_read_drains: bool) {
        match core::conn_mut(&mut self.core.conns, id).map(|c| &c.phase) {
            Some(Phase::Preamble(_)) => return self.read_preamble(id, short_read_drains),
            Some(Phase::Handshake(_)) => return self.read_handshake(id, short_read_drains),
            _ => {}
        }
        self.read_handed(id, short_read_drains, false);
        self.core.flush(id);
        self.settle();
    }

    /// The reading of [`read`](Server::read), for a connection the handler has: with
    /// `drained`, the socket is known to hold nothing now, so only kept input is offered.
    pub(super) fn read_handed(&mut self, id: ConnId, short_read_drains: bool, drained: bool) {
        let mut budget = self.core.limits.read_budget;
        loop {
            // By id: a callback may close it, and its slot must not be taken for it.
            let Some(conn) = core::conn_mut(&mut self.core.conns, id) else {
                return;
            };
            if !conn.life.open() || !conn.recv.wants_read() {
                // Held by the handler or by backpressure (maybe during this read): what may
                // be left is read when the hold is released.
                conn.recv.readiness();
                return;
            }
            if budget == 0 {
                self.core.ready.push(id);
                return;
            }
            if conn.input.is_empty() {
                conn.offer_kept = false;
            }
            // Bytes the handler was not shown since its input was held: first. They count
            // against the budget, so a handler that is refused again and again (a pause and
            // a resume at each call) cannot keep the loop from other connections. Bytes it
            // refused (a re-offer it used none of) come again with what the socket brings
            // (read below, up to `max_input` kept), or alone once something else happened
            // in the server (`epoch`): the requests in them must not wait for bytes a client
            // waiting for its replies never sends, nor handlers that resume each other spin
            // the loop. Until then they are owed (see `offer_owed`).
            if conn.offer_kept {
                let read_first = conn.refused.is_some()
                    && !drained
                    && conn.input.len() <= self.core.limits.max_input;
                if !read_first {
                    let reoffer = conn.shown;
                    if !self.offer_kept(id, &mut budget, reoffer) {
                        return;
                    }
                    continue;
                }
            }
            // A TLS peer's close_notify came with bytes before it: its end is taken here,
            // like a plain stream's, once everything before it was offered (never ahead of
            // input kept or held), and nothing after it is processed or delivered.
            let clean_end = conn.tls.as_ref().is_some_and(|t| t.peer_closed());
            if drained && !clean_end {
                return;
            }
            // Into the loop's buffer, or for TLS, records read by the session itself and
            // decrypted into the loop's second buffer (all of them: the session keeps no
            // plaintext). While input is kept, what came is added to it (a read straight
            // into the kept buffer made room for a whole read, and two kept bytes pinned
            // 64 KiB per connection).
            let room = self.buf.len();
            let fresh = conn.input.is_empty();
            let mut direct = None;
            let result = match (clean_end, &mut conn.tls) {
                (true, _) => Ok(0),
                (false, None) => conn.stream.read(&mut self.buf),
                (false, Some(tls)) => {
                    self.plain.clear();
                    tls.read_direct(&mut conn.stream, &mut self.plain, room)
                        .map(|d| {
                            let n = d.read;
                            direct = Some(d);
                            n
                        })
                }
            };
            // A TLS failure, whatever was read with it: rustls may refuse records before it
            // reads a byte (a handshake message too large to hold, its last record read by
            // the call before), and that is the peer's failure, not the end of its stream.
            let direct = match direct {
                Some(crate::tls::Direct { fed: Err(e), .. }) => {
                    log::debug!("{id}: {e}");
                    self.core.request_close(id, CloseReason::Tls(e));
                    self.settle();
                    return;
                }
                Some(crate::tls::Direct {
                    fed: Ok(fed),
                    would_block,
                    short,
                    ..
                }) => Some((fed.peer_closed, would_block, short)),
                None => None,
            };
            let nothing_new = matches!(&result, Ok(0))
                || matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            if nothing_new && conn.offer_kept {
                // Nothing new (or the end, read again after them): the refused bytes alone.
                if !self.offer_kept(id, &mut budget, true) {
                    return;
                }
                continue;
            }
            match result {
                Ok(0) if conn.tls.is_some() && !clean_end => {
                    log::debug!("{id}: the peer ended its TLS stream without close_notify");
                    self.core.request_close(id, CloseReason::Truncated);
                    self.settle();
                    return;
                }
                Ok(0) => {
                    conn.recv = crate::conn::Recv::Done;
                    log::debug!(
                        "{id}: peer closed its side{}",
                        if clean_end { " (close_notify)" } else { "" }
                    );
                    let mut ctx = Context::new(&mut self.core, &mut self.states);
                    self.handler.on_peer_closed(&mut ctx, id);
                    self.settle();
                    return;
                }
                Ok(n) => {
                    let (drained, offer, peer_closed) = match direct {
                        None => (short_read_drains && n < room, Offer::Read(n), false),
                        Some((peer_closed, would_block, short)) => (
                            would_block || (short_read_drains && short),
                            Offer::Plain,
                            peer_closed,
                        ),
                    };
                    let bytes = match offer {
                        Offer::Plain => self.plain.bytes(),
                        _ => &self.buf[..n],
                    };
                    let len = bytes.len();
                    // Activity is what the handler gets: a TLS peer that trickles a record
                    // it never completes is silent (the first-byte and idle deadlines).
                    if len > 0 {
                        conn.timing.last_active = self.core.now;
                        conn.timing.first_byte = true;
                    }
                    self.core.listeners[conn.listener as usize].stats.bytes_in += len as u64;
                    if len > 0 {
                        conn.offer_kept = false;
                        if !fresh {
                            conn.input.append(bytes);
                            self.core.total_kept += len;
                        }
                        self.deliver(id, if fresh { offer } else { Offer::Kept }, false);
                    }
                    // A hold the handler released during the call (a pause and a resume, a
                    // send that wrote its own queue) leaves kept bytes to offer: the loop's
                    // top does it, though the socket is drained (else they waited for the
                    // peer's next bytes, which a request/reply client never sends).
                    // So does a close_notify: its end is taken at the loop's top.
                    if drained
                        && !peer_closed
                        && !core::conn_mut(&mut self.core.conns, id).is_some_and(|c| c.offer_kept)
                    {
                        return;
                    }
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.core.request_close(id, CloseReason::from_io(e));
                    self.settle();
                    return;
                }
            }
        }
    }

    /// Offers `id` its kept input (a `reoffer` if it was offered before), charged to
    /// `budget`; or, if the handler refused it and nothing happened since (`epoch`), puts
    /// `id` on the owed list instead (see `offer_owed`) and returns `false`.
    fn offer_kept(&mut self, id: ConnId, budget: &mut usize, reoffer: bool) -> bool {
        let Some(conn) = core::conn_mut(&mut self.core.conns, id) else {
            return false;
        };
        if conn.refused == Some(self.core.epoch) {
            if !std::mem::replace(&mut conn.owed, true) {
                self.core.owed.push(id);
            }
            return false;
        }
        conn.offer_kept = false;
        *budget = budget.saturating_sub(conn.input.len().max(1));
        self.deliver(id, Offer::Kept, reoffer);
        true
    }

    /// Calls `on_data` for `id` with its input: the first `fresh` bytes of the loop's
    /// buffer (nothing was kept), or else the bytes kept for it. Then keeps what the handler
    /// did not use (copying it out of the loop's buffer, the one copy input ever gets), or
    /// closes the connection if that is more than the limit.
    fn deliver(&mut self, id: ConnId, offer: Offer, reoffer: bool) {
        let held = &*self.held;
        held.store(false, std::sync::atomic::Ordering::Relaxed);
        let fresh = !matches!(offer, Offer::Kept);
        let kept = match fresh {
            true => crate::conn::Kept::default(),
            false => match core::conn_mut(&mut self.core.conns, id) {
                Some(conn) => std::mem::take(&mut conn.input),
                None => return,
            },
        };
        let kept_before = kept.len();
        let bytes = match offer {
            Offer::Read(n) => &self.buf[..n],
            Offer::Plain => self.plain.bytes(),
            Offer::Kept => kept.bytes(),
        };
        self.core.serving = Some(id);
        let mut input = Input::new(bytes, held);
        let mut ctx = Context::for_data(&mut self.core, &mut self.states);
        self.handler.on_data(&mut ctx, id, &mut input);
        let used = input.used();
        self.core.serving = None;
        // A refusal: a re-offer the call used none of, ending held again. Any other call is
        // news (handlers that only refuse and resume each other make none: they cannot spin).
        let was_held = held.load(std::sync::atomic::Ordering::Relaxed);
        let refused = was_held && reoffer && used == 0;
        if !refused {
            self.core.news();
        }
        let max_input = self.core.limits.max_input;
        let Some(conn) = core::conn_mut(&mut self.core.conns, id) else {
            return;
        };
        match fresh {
            true => conn.input.keep(&bytes[used..]),
            false => {
                // Put back what the handler left: `kept` was taken out of the connection for
                // the call (the `Context` borrows every connection).
                let mut rest = kept;
                rest.consume(used);
                debug_assert!(conn.input.is_empty(), "input arrived during on_data");
                conn.input = rest;
            }
        }
        // What a call that ended held left is offered again once the hold ends: the handler
        // may have stopped because of the hold. After a refusal (a partial request, or a
        // handler still not ready), the socket is read first (see `read_handed`).
        conn.shown = !conn.input.is_empty();
        if was_held && !conn.input.is_empty() {
            conn.offer_kept = true;
            conn.refused = refused.then_some(self.core.epoch);
        }
        let kept = conn.input.len();
        self.core.total_kept = self.core.total_kept - kept_before + kept;
        // Input the handler was not shown (held: its replies wait for the peer to read
        // them) is not input it declined: an amplifying client is held, not cut off. Memory
        // stays bounded, as a held connection is not read (and after a refusal, no read
        // adds to it past the limit).
        if kept > max_input && conn.life.open() && !was_held {
            log::debug!("{id}: {kept} bytes of input unused, more than the {max_input} kept");
            self.core.request_close(
                id,
                CloseReason::InputLimit {
                    kept,
                    limit: max_input,
                },
            );
        }
        self.settle();
    }

    /// Reads a connection's PROXY header: it is the reactor's until the header is complete
    /// (then `on_open` with the client as the peer, `on_data` with whatever came after the
    /// header in the same read, and reading goes on as for any connection), malformed, or
    /// the balancer leaves. A header is at most 16 + 65,535 bytes, and the parser refuses
    /// garbage at its first byte, so this loop ends.
    fn read_preamble(&mut self, id: ConnId, short_read_drains: bool) {
        loop {
            let core = &mut self.core;
            let Some(conn) = core::conn_mut(&mut core.conns, id) else {
                return;
            };
            let Phase::Preamble(preamble) = &mut conn.phase else {
                return;
            };
            if !conn.life.open() {
                return;
            }
            let (step, drained) = match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    log::debug!("{id}: the balancer left before its PROXY header was complete");
                    core.request_close(id, CloseReason::PeerClosed);
                    break;
                }
                Ok(n) => {
                    // (Deadlines: the header's is the only one until it is in.)
                    core.listeners[conn.listener as usize].stats.bytes_in += n as u64;
                    let drained = short_read_drains && n < self.buf.len();
                    (preamble.feed(&self.buf[..n]), drained)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    core.request_close(id, CloseReason::from_io(e));
                    break;
                }
            };
            match step {
                Step::More => {}
                Step::Fail(e) => {
                    log::debug!("{id} from {}: {e}", conn.peer);
                    core.request_close(id, CloseReason::ProxyHeader(e));
                    break;
                }
                Step::Done(header, rest) if conn.tls.is_some() => {
                    self.tls_after_header(id, header, rest, short_read_drains, drained);
                    return self.settle();
                }
                Step::Done(header, rest) => {
                    self.hand_over(id, header, rest);
                    // On as for any connection: the bytes that came with the header first,
                    // then the socket, unless the read was short (nothing more is there).
                    self.read_handed(id, short_read_drains, drained);
                    self.core.flush(id);
                    return self.settle();
                }
            }
        }
        self.settle();
    }

    /// A proxied connection's header is in: it becomes the client's connection (per-peer
    /// limit, deadlines from now, `on_open`); the bytes that came with the header are kept
    /// as its first input, offered before anything more is read.
    fn hand_over(&mut self, id: ConnId, header: ProxyHeader, rest: Vec<u8>) {
        let Some((balancer, client)) = admit_client(&mut self.core, id, &header) else {
            return self.settle();
        };
        log::debug!("{id}: {balancer} relays {client}");
        let core = &mut self.core;
        let now = core.now;
        let Some(conn) = core::conn_mut(&mut core.conns, id) else {
            return;
        };
        conn.phase = Phase::Proxied(Box::new(Proxied { balancer, header }));
        core.deadlines.reopen(id, &mut conn.timing, now);
        if !rest.is_empty() {
            conn.timing.first_byte = true;
            conn.input.keep(&rest);
            conn.offer_kept = true;
            conn.shown = false;
            core.total_kept += rest.len();
        }
        let info = ConnInfo {
            listener: ListenerId(conn.listener as usize),
            peer: client,
        };
        let mut ctx = Context::new(&mut self.core, &mut self.states);
        self.handler.on_open(&mut ctx, id, &info);
        self.settle();
    }

    /// A connection that never reached `on_open`: counted by its reason (a stop counts as
    /// nothing), then told to the handler's `on_refused`.
    pub(super) fn refuse(
        &mut self,
        listener: ListenerId,
        peer: &Peer,
        reason: CloseReason,
        in_handshake: bool,
    ) {
        let stats = &mut self.core.listeners[listener.0].stats;
        match reason {
            CloseReason::PeerLimit => stats.refused += 1,
            CloseReason::Untrusted => stats.proxy_untrusted += 1,
            CloseReason::Shutdown => {}
            // The handshake failed, was late, or the client left or failed during it.
            _ if in_handshake => stats.tls_failed += 1,
            // The header was bad or late, or the balancer left or failed before it was in.
            _ => stats.proxy_failed += 1,
        }
        let mut ctx = Context::new(&mut self.core, &mut self.states);
        self.handler.on_refused(&mut ctx, listener, peer, &reason);
    }

    /// Carries out what callbacks asked for: closes (each reported to `on_close` while the
    /// connection is still there to look at, then removed; a slot freed under
    /// `max_connections` queues every listener for the turn's accepting point), drained
    /// notifications, and a stop.
    pub(super) fn settle(&mut self) {
        loop {
            if let Some((id, reason)) = self.core.to_close.pop_front() {
                match self.core.get(id) {
                    // Never handed over (a PROXY header that did not work out): the
                    // handler hears of it as refused, not as closed.
                    Some(conn) if !conn.phase.handed() => {
                        let (listener, peer) = (ListenerId(conn.listener as usize), conn.peer);
                        let in_handshake = matches!(conn.phase, Phase::Handshake(_));
                        self.core.remove(id, &reason);
                        self.states.remove(id.key);
                        self.refuse(listener, &peer, reason, in_handshake);
                    }
                    Some(_) => {
                        let mut ctx = Context::new(&mut self.core, &mut self.states);
                        self.handler.on_close(&mut ctx, id, &reason);
                        self.core.remove(id, &reason);
                        self.states.remove(id.key);
                    }
                    None => {}
                }
            } else if let Some(id) = self.core.drained.pop_front() {
                if self.core.is_open(id) {
                    let mut ctx = Context::new(&mut self.core, &mut self.states);
                    self.handler.on_drained(&mut ctx, id);
                }
            } else {
                break;
            }
        }
        if self.core.stop_wanted {
            self.core.stop_wanted = false;
            self.begin_stop();
        }
    }

    /// The graceful stop: no more accepting, pending timers cancelled, then `on_stop` (the
    /// application's last chance to send while every connection is still open), then every
    /// connection closes once its output is written, within the shutdown timeout.
    fn begin_stop(&mut self) {
        log::debug!("stopping: {} connections to close", self.core.conns.len());
        self.end_hand_overs();
        self.core.stop_listening();
        let mut ctx = Context::new(&mut self.core, &mut self.states);
        self.handler.on_stop(&mut ctx);
        self.settle();
        self.core.close_all_after_flush();
        self.settle();
    }

    /// Fires the timers that were due when the turn began; one set meanwhile (a zero delay
    /// re-armed from `on_timer`) waits for the next turn, after a poll.
    fn fire_timers(&mut self) {
        let mark = self.core.timers.mark();
        while let Some((timer, due)) = self.core.timers.pop_due(self.core.now, mark) {
            // Cancelled when it closed, so its connection is open or flushing before its
            // close (or closing in this very turn: then it does not fire).
            if let Due::Conn(conn, _) = due {
                if !self.core.is_unclosed(conn) {
                    continue;
                }
            }
            let mut ctx = Context::new(&mut self.core, &mut self.states);
            match due {
                Due::Server(value) => self.handler.on_timer(&mut ctx, timer, value),
                Due::Conn(conn, value) => self.handler.on_conn_timer(&mut ctx, conn, timer, value),
            }
            self.settle();
        }
    }

    /// Closes connections whose idle, first-byte or PROXY header deadline passed.
    fn check_deadlines(&mut self) {
        let now = self.core.now;
        while let Some(id) = self.core.deadlines.pop_due(now) {
            let core = &mut self.core;
            let Some(conn) = super::core::conn_mut(&mut core.conns, id) else {
                debug_assert!(false, "{id} closed with its deadline still armed");
                continue;
            };
            match core.deadlines.judge(id, &mut conn.timing, now) {
                Verdict::FirstByte => {
                    log::debug!(
                        "{id}: nothing received within {:?}",
                        core.deadlines.first_byte_timeout().unwrap_or_default()
                    );
                    core.request_close(id, CloseReason::FirstByteTimeout);
                }
                Verdict::Idle => {
                    log::debug!(
                        "{id}: idle for {:?}",
                        core.deadlines.idle_timeout().unwrap_or_default()
                    );
                    core.request_close(id, CloseReason::IdleTimeout);
                }
                Verdict::Header if matches!(conn.phase, Phase::Handshake(_)) => {
                    log::debug!("{id}: no complete TLS handshake in time");
                    core.request_close(id, CloseReason::HandshakeTimeout);
                }
                Verdict::Header => {
                    log::debug!("{id}: no complete PROXY header in time");
                    core.request_close(id, CloseReason::HeaderTimeout);
                }
                Verdict::Later(_) | Verdict::Done => {}
            }
        }
        self.settle();
    }

    /// Past the shutdown timeout, closes what still has not drained.
    fn check_stop_deadline(&mut self) {
        let Some(deadline) = self.core.stopping else {
            return;
        };
        if self.core.now < deadline {
            return;
        }
        let ids: Vec<_> = self.core.conns.iter().map(|(k, c)| c.id(k)).collect();
        for id in ids {
            let queued = self.core.queued(id);
            if queued > 0 {
                log::warn!("{id}: shutdown timeout: {queued} queued bytes not delivered");
            }
            // Work kept open through the stop and not done is cut short: a TLS peer must
            // see a truncation, not close_notify, though nothing was queued.
            if let Some(conn) = core::conn_mut(&mut self.core.conns, id) {
                if conn.keep_on_stop {
                    log::warn!("{id}: shutdown timeout: work kept open through the stop cut short");
                    if let Some(tls) = &mut conn.tls {
                        tls.output_dropped();
                    }
                }
            }
            self.core.request_close(id, CloseReason::Shutdown);
        }
        self.settle();
    }
}
