//! Accepting: [`Server::accept`] takes connections from a listener within a budget,
//! [`Server::open`] admits one (per-peer limit, registration) and hands it to the handler.
//! When accepting fails for want of descriptors or memory, `AcceptBackoff` (`backoff.rs`)
//! pauses it for a growing interval.

use std::io;

use super::backoff::{accept_failure, AcceptFailure, BACKOFF_MAX, LISTENER_RETRY};
use super::handler::{Context, Handler};
use super::output::CONN_INTEREST;
use super::timers::after;
use super::token;
use super::Server;
use crate::conn::{
    CloseReason, Conn, ConnId, ConnInfo, Kept, Life, ListenerId, OutQueue, Phase, Preamble, Recv,
    Send, Timing,
};
use crate::socket::{Peer, Stream};

/// The most connections accepted from one listener per turn; then the listener waits for the
/// next turn, so a stream of new clients cannot starve open connections, timers or a stop.
const ACCEPT_BUDGET: usize = 128;

impl<H: Handler> Server<H> {
    /// Accepts on listener `index` until `WouldBlock`, the connection limit, a shortage of
    /// descriptors or memory (then accepting pauses for a growing interval), or the accept
    /// budget (then the listener is served again next turn).
    pub(super) fn accept(&mut self, index: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let core = &mut self.core;
            if core.backoff.paused() || core.stopping.is_some() {
                return;
            }
            if let Some(max) = core.limits.max_connections {
                if core.conns.len() >= max {
                    if !core.accept_full {
                        log::debug!("{max} connections open: accepting paused until one closes");
                    }
                    core.accept_full = true;
                    return;
                }
            }
            let slot = &core.listeners[index];
            if slot.retry_at.is_some() {
                return; // it waits for its retry (see retry_accept)
            }
            let Some(listener) = slot.socket.as_ref() else {
                return;
            };
            let result = listener.accept();
            let accepting = match &result {
                Ok(_) => true,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            };
            if accepting && core.backoff.succeeded() {
                log::info!("accepting connections again");
            }
            if accepting && std::mem::take(&mut core.listeners[index].failing) {
                log::info!(
                    "accepting on {} again",
                    core.listeners[index].info.local_addr
                );
            }
            match result {
                Ok((stream, peer)) => self.open(index, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A Unix-domain peer whose credentials cannot be read (it left at once):
                // that connection only.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    log::debug!("accept on {}: {e}", core.listeners[index].info.local_addr)
                }
                Err(e) => match accept_failure(&e) {
                    AcceptFailure::ThisConnection => {
                        log::debug!("accept on {}: {e}", core.listeners[index].info.local_addr)
                    }
                    AcceptFailure::Exhausted => {
                        let (pause, first) = core.backoff.failed(core.now);
                        if first {
                            log::warn!(
                                "accept failed: {e}; serving open connections, accepting again in {pause:?} (backing off to {BACKOFF_MAX:?} while it lasts)"
                            );
                        }
                        return;
                    }
                    AcceptFailure::Listener => {
                        // Not a shortage, and not one connection's fault: this listener is
                        // in trouble. Try it again a little later, alone: no spinning, the
                        // other listeners go on, and what waits in its backlog is not left
                        // until the next client arrives.
                        let slot = &mut core.listeners[index];
                        if std::mem::replace(&mut slot.failing, true) {
                            log::debug!("accept on {}: {e}", slot.info.local_addr);
                        } else {
                            log::warn!(
                                "accept on {}: {e}; trying again every {LISTENER_RETRY:?} while it lasts",
                                slot.info.local_addr
                            );
                        }
                        slot.retry_at = Some(super::timers::after(core.now, LISTENER_RETRY));
                        return;
                    }
                },
            }
        }
        self.core.accept_soon(index); // next turn
    }

    /// Admits one accepted connection: the per-peer limit, a slot and a token, its first
    /// deadline, then `on_open`. On a PROXY listener: the trust check, then the slot and a
    /// header deadline; the limit and `on_open` wait for the header (`turn.rs`). On a PROXY
    /// or TLS listener the connection is read at once.
    fn open(&mut self, index: usize, mut stream: Stream, peer: Peer) {
        let core = &mut self.core;
        // On a PROXY listener: (versions, when the header is due), or the peer is not a
        // trusted balancer.
        let proxy = core.listeners[index].proxy.as_ref().map(|p| {
            (
                p.versions,
                after(core.now, p.header_timeout),
                p.trusts(&peer),
            )
        });
        let refused = match proxy {
            Some((_, _, false)) => {
                // Debug, not warn: a hostile peer must not be able to flood the log either.
                log::debug!(
                    "{peer} on {}: not a trusted PROXY source, closed without reading",
                    core.listeners[index].info.local_addr
                );
                Some(CloseReason::Untrusted)
            }
            Some(_) => None,
            None if !core.peers.admit(&peer) => {
                log::debug!("{peer} refused: it already has its share of connections");
                Some(CloseReason::PeerLimit)
            }
            None => None,
        };
        if let Some(reason) = refused {
            core.listeners[index].stats.accepted += 1;
            drop(stream);
            self.refuse(ListenerId(index), &peer, reason, false);
            self.settle();
            return;
        }
        if core.listeners[index].accepting.oob_inline_per_connection {
            // The listener's protocol (MPTCP) refused SO_OOBINLINE, so its connections do
            // not inherit it; one that fell back to plain TCP has urgent data, and must keep
            // it in the byte stream. A connection that refuses it too has none.
            match socket2::SockRef::from(&stream).set_out_of_band_inline(true) {
                Err(e) if !crate::socket::unsupported_option(&e) => {
                    log::debug!("connection from {peer} dropped: SO_OOBINLINE: {e}");
                    if proxy.is_none() {
                        core.peers.release(&peer);
                    }
                    core.listeners[index].stats.accepted += 1;
                    return;
                }
                _ => {}
            }
        }
        let tls = match core.listeners[index].tls.as_ref().map(|t| t.start()) {
            None => None,
            Some(Ok(session)) => Some(session),
            Some(Err(e)) => {
                log::warn!("connection from {peer} dropped: {e}");
                if proxy.is_none() {
                    core.peers.release(&peer);
                }
                core.listeners[index].stats.accepted += 1;
                return;
            }
        };
        let handshake_due = core.listeners[index]
            .tls
            .as_ref()
            .map(|t| after(core.now, t.handshake_timeout()));
        let preamble = proxy.map(|(versions, due, _)| (Box::new(Preamble::new(versions)), due));
        let entry = core.conns.vacant_entry();
        let key = entry.key();
        let registered = if key > token::MAX_VALUE {
            Err(io::Error::other("no token left for it"))
        } else {
            core.registry
                .register(&mut stream, token::conn(key), CONN_INTEREST)
        };
        if let Err(e) = registered {
            log::warn!("connection from {peer} dropped: {e}");
            if proxy.is_none() {
                core.peers.release(&peer);
            }
            return;
        }
        let generation = core.next_generation;
        core.next_generation = generation.wrapping_add(1);
        let id = ConnId { key, generation };
        let mut timing = Timing::new(core.now);
        let phase = match (preamble, handshake_due) {
            (Some((preamble, due)), _) => {
                core.deadlines.open_header(id, &mut timing, due);
                Phase::Preamble(preamble)
            }
            (None, Some(due)) => {
                core.deadlines.open_header(id, &mut timing, due);
                Phase::Handshake(None)
            }
            (None, None) => {
                core.deadlines.open(id, &mut timing);
                Phase::Open
            }
        };
        let handed = phase.handed();
        entry.insert(Conn {
            stream,
            generation,
            listener: index as u32,
            peer,
            out: OutQueue::default(),
            input: Kept::default(),
            offer_kept: false,
            refused: None,
            shown: false,
            owed: false,
            dirty: false,
            keep_on_stop: false,
            recv: Recv::Reading,
            send: Send::Open,
            life: Life::Open,
            writable: false,
            timing,
            phase,
            tls,
        });
        // The handler's value, under the same key: both slabs take and give back the same
        // keys in the same order.
        let state_key = self.states.insert(H::State::default());
        debug_assert_eq!(
            state_key, key,
            "the handler's values and the connections diverged"
        );
        let stats = &mut core.listeners[index].stats;
        stats.accepted += 1;
        stats.open += 1;
        log::debug!(
            "{id}: accepted from {peer} on {}{}",
            core.listeners[index].info.local_addr,
            if handed {
                ""
            } else if proxy.is_some() {
                ", awaiting its PROXY header"
            } else {
                ", awaiting its TLS handshake"
            }
        );
        if handed {
            let info = ConnInfo {
                listener: ListenerId(index),
                peer,
            };
            let mut ctx = Context::new(&mut self.core, &mut self.states);
            self.handler.on_open(&mut ctx, id, &info);
            self.settle();
        } else {
            // A PROXY header or a ClientHello: the client speaks first, and on a busy
            // server its bytes are there already. Read them now, not at the next turn's
            // event (a turn and a system call more per connection). Nothing there costs
            // one read, and the event comes when they do: the socket is registered (edge-
            // triggered) before this read, so an arrival after it is a new edge.
            self.read(id, super::turn::SHORT_READ_DRAINS);
        }
    }

    /// Tries accepting again once a pause after exhaustion is over, and each listener whose
    /// retry after an unknown error is due.
    pub(super) fn retry_accept(&mut self) {
        let now = self.core.now;
        let all = self.core.backoff.due(now);
        for index in 0..self.core.listeners.len() {
            let slot = &mut self.core.listeners[index];
            let due = slot.retry_at.is_some_and(|at| at <= now);
            if due {
                slot.retry_at = None;
            }
            if all || due {
                self.accept(index);
            }
        }
    }
}
