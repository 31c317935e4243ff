//! The loop's side of a hand-over (see [`crate::handover`]): start the successor with the
//! listening sockets; once it is ready, tell the service manager, retire the listeners
//! (open, no longer accepted from) and drain; at the drain deadline, or once every
//! connection has ended, the graceful stop.

use std::time::Duration;

use super::core::ListenerSlot;
use super::{timers, Context, Handler, Server};
use crate::handover::{HandOver, HandOverError, HandOverErrorKind, HandOverEvent};

impl<H: Handler> Server<H> {
    /// A hand-over was asked for, or the one under way has an outcome.
    #[cfg_attr(not(unix), allow(unreachable_code, unused_variables))]
    pub(super) fn hand_over_news(&mut self) {
        if let Some(how) = self.handle.take_hand_over_request() {
            self.start_hand_over(&how);
        }
        let outcome = self.core.hand_over.as_ref().and_then(|p| p.outcome());
        if let Some(outcome) = outcome {
            let pending = self.core.hand_over.take().expect("an outcome came from it");
            self.hand_over_ended(pending.drain_timeout(), outcome);
        }
    }

    fn start_hand_over(&mut self, how: &HandOver) {
        if self.core.stopping.is_some() || self.core.draining.is_some() {
            let e = HandOverError::new(
                HandOverErrorKind::Stopping,
                "this server handed over already, or is stopping: it has no sockets to pass",
            );
            return self.hand_over_failed(e);
        }
        let listening: Vec<String> = self
            .core
            .listeners
            .iter()
            .filter(|l| l.socket.is_some())
            .map(|l| format!("{} ({})", l.info.local_addr, l.info.mode))
            .collect();
        #[cfg(unix)]
        let started = {
            use std::os::fd::AsFd;
            let sockets: Vec<_> = self
                .core
                .listeners
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let name = socket_name(&self.core.listeners, i);
                    let socket = l.socket.as_ref()?;
                    Some((socket.as_fd(), name, socket.file_id()))
                })
                .collect();
            let handle = self.handle.clone();
            crate::handover::start(how, &sockets, move || handle.hand_over_news())
        };
        #[cfg(not(unix))]
        let started: Result<crate::handover::Pending, HandOverError> = {
            let _ = how;
            Err(crate::handover::unsupported())
        };
        match started {
            Ok(pending) => {
                let pid = pending.pid();
                log::info!(
                    "hand-over: started process {pid} with the listening sockets {}",
                    listening.join(", ")
                );
                self.core.hand_over = Some(pending);
                self.report(&HandOverEvent::Started { pid });
            }
            Err(e) => self.hand_over_failed(e),
        }
    }

    fn hand_over_failed(&mut self, e: HandOverError) {
        log::warn!("{e}; this server goes on serving");
        self.handle.hand_over_ended(false);
        self.report(&HandOverEvent::Failed(e));
    }

    /// The successor said `READY=1` (`Ok`), or the hand-over failed.
    fn hand_over_ended(&mut self, drain: Duration, outcome: Result<u32, HandOverError>) {
        let pid = match outcome {
            Ok(pid) => pid,
            Err(e) => return self.hand_over_failed(e),
        };
        // Before this process exits: the service manager must neither kill the successor
        // as a leftover nor start the service again.
        if let Err(e) = crate::notify(&format!("MAINPID={pid}")) {
            log::warn!("hand-over: cannot tell the service manager the new main pid {pid}: {e}");
        }
        crate::handover::set_handed_over();
        self.handle.hand_over_ended(true);
        self.core.retire_listeners();
        if self.core.stopping.is_none() {
            self.core.draining = Some(timers::after(self.core.now, drain));
        }
        log::info!(
            "hand-over: process {pid} is ready and accepts on the listening sockets; this process accepts no more, and its {} connections have {drain:?} to end",
            self.core.conns.len()
        );
        self.report(&HandOverEvent::Ready { pid });
    }

    fn report(&mut self, event: &HandOverEvent) {
        let mut ctx = Context::new(&mut self.core, &mut self.states);
        self.handler.on_hand_over(&mut ctx, event);
        self.settle();
    }

    /// A hand-over under way when the server stops: the successor is killed, unless it
    /// was ready already (then it serves, and this process drains no longer).
    #[cfg_attr(not(unix), allow(unreachable_code, unused_variables))]
    pub(super) fn end_hand_overs(&mut self) {
        self.handle.no_more_hand_overs();
        if let Some(pending) = self.core.hand_over.take() {
            let drain = pending.drain_timeout();
            let outcome = pending.cancel();
            self.hand_over_ended(drain, outcome);
        }
        self.core.draining = None;
    }

    /// Draining after a hand-over: at the deadline, or once every connection has ended,
    /// the graceful stop.
    pub(super) fn check_drain(&mut self) {
        let Some(until) = self.core.draining else {
            return;
        };
        if self.core.now < until && !self.core.conns.is_empty() {
            return;
        }
        if !self.core.conns.is_empty() {
            log::info!(
                "hand-over: drain deadline: closing the {} connections left",
                self.core.conns.len()
            );
        }
        self.core.draining = None;
        self.core.request_stop();
        self.settle();
    }
}

/// The name listener `i` of `listeners` is passed or stored under: its spec, which of the
/// server's equal specs that is, and which of that spec's sockets it is.
#[cfg_attr(not(unix), allow(dead_code))]
pub(super) fn socket_name(listeners: &[ListenerSlot], i: usize) -> String {
    let l = &listeners[i];
    let index = listeners[..i]
        .iter()
        .filter(|o| o.occurrence == l.occurrence && o.info.spec == l.info.spec)
        .count();
    #[cfg(unix)]
    return crate::handover::passed::name(&l.info.spec, l.occurrence, index);
    #[cfg(not(unix))]
    format!("{}.{}.{index}", l.info.spec, l.occurrence)
}
