//! The TLS phase of a connection, beside the PROXY preamble (`turn.rs`): from accept (or
//! the PROXY header) to the end of the handshake the reactor drives the session, within
//! the handshake deadline and a per-turn budget of handshake steps; then `on_open`, and the
//! connection is read like any other, its records decrypted on the way in.

use std::io::{self, Read};

use super::core::conn_mut;
use super::handler::{Context, Handler};
use super::timers::after;
use super::Server;
use crate::conn::{CloseReason, ConnId, ConnInfo, ListenerId, Phase, Proxied, Timing};
use crate::proxy::ProxyHeader;
use crate::tls::HANDSHAKES_PER_TURN;

/// What a handshake step left to do.
pub(super) enum Step {
    /// The handshake needs more bytes from the client.
    More,
    /// The connection is the handler's now, or it closed: nothing more for this phase.
    Done,
}

impl<H: Handler> Server<H> {
    /// Reads a TLS connection in its handshake until `WouldBlock`, the handshake's end
    /// (then on as for any connection), a failure, or the turn's handshake budget (then it
    /// goes on the ready queue, read after the next turn's events). `short_read_drains` as
    /// for [`read`](Server::read).
    pub(super) fn read_handshake(&mut self, id: ConnId, short_read_drains: bool) {
        loop {
            if self.core.handshakes >= HANDSHAKES_PER_TURN {
                self.core.ready.push(id);
                return;
            }
            let core = &mut self.core;
            let Some(conn) = conn_mut(&mut core.conns, id) else {
                return;
            };
            if !conn.life.open() || !matches!(conn.phase, Phase::Handshake(_)) {
                return;
            }
            if conn.tls.is_none() {
                // Its session is with a handshake thread: read when it is back.
                return;
            }
            if !conn.input.is_empty() {
                // Bytes that came with a PROXY header when the budget was spent: first.
                let waiting = conn.input.take();
                core.total_kept -= waiting.len();
                match self.step_with(id, &waiting, short_read_drains, false) {
                    Step::Done => return,
                    Step::More => continue,
                }
            }
            let n = match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    log::debug!("{id}: the client left during its TLS handshake");
                    core.request_close(id, CloseReason::PeerClosed);
                    return self.settle();
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    core.request_close(id, CloseReason::from_io(e));
                    return self.settle();
                }
            };
            let drained = short_read_drains && n < self.buf.len();
            match self.handshake_step(id, n, short_read_drains, drained) {
                Step::Done => return,
                Step::More if drained => return,
                Step::More => {}
            }
        }
    }

    /// Feeds the first `n` bytes of the loop's buffer to the handshake of `id`, writes what
    /// it answers, and on its end hands the connection to the handler (`on_open`, then the
    /// plaintext that came with the end, then reading on as for any connection).
    pub(super) fn handshake_step(
        &mut self,
        id: ConnId,
        n: usize,
        short_read_drains: bool,
        drained: bool,
    ) -> Step {
        self.core.handshakes += 1;
        let core = &mut self.core;
        let Some(conn) = conn_mut(&mut core.conns, id) else {
            return Step::Done;
        };
        // Only a step that may be key work is worth the two hand-offs, and only while the
        // threads get the CPU to do them (see `tls::pool`).
        let now = core.now;
        let pool = core.tls_pool.as_ref();
        let pool = pool
            .filter(|p| conn.tls.as_ref().is_some_and(|t| t.wants_thread()) && p.takes_steps(now));
        if let Some(pool) = pool {
            // To a thread; the loop goes on, and takes it back in `finish_handshakes`.
            let Some(session) = conn.tls.take() else {
                return Step::Done;
            };
            match pool.send(id, session, &self.buf[..n], now) {
                Ok(()) => return Step::Done,
                // A thread holds the queue's lock: not worth waiting for, done here.
                Err(session) => conn.tls = Some(session),
            }
        }
        let Some(tls) = conn.tls.as_mut() else {
            return Step::Done;
        };
        self.plain.clear();
        let fed = tls.feed(&self.buf[..n], &mut self.plain);
        self.after_feed(id, fed, short_read_drains, drained)
    }

    /// Sessions the handshake threads are done with: each goes back to its connection (if
    /// it is still there), and the handshake goes on from what the step gave.
    pub(super) fn finish_handshakes(&mut self) {
        self.close_lost_handshakes();
        while let Some(done) = self.core.tls_pool.as_ref().and_then(|p| p.next_done()) {
            let crate::tls::Done {
                id,
                session,
                plain,
                fed,
            } = done;
            // Into the loop's own buffer (a few bytes at most, usually none): replacing it
            // with the thread's would drop its grown capacity, to be zeroed again.
            self.plain.clear();
            let bytes = plain.bytes();
            self.plain.extend(bytes.len()).copy_from_slice(bytes);
            self.resume_handshake(id, session, fed);
        }
    }

    /// Connections whose handshake thread panicked in their step: their session is gone,
    /// and they are closed.
    fn close_lost_handshakes(&mut self) {
        while let Some(id) = self.core.tls_pool.as_ref().and_then(|p| p.next_lost()) {
            log::warn!("{id}: its handshake thread panicked in its step");
            let panicked = io::Error::other("its handshake thread panicked");
            self.core.request_close(id, CloseReason::Error(panicked));
            self.settle();
        }
    }

    /// Steps no handshake thread started within `STEAL_AFTER` (the threads get no CPU, or
    /// died): the loop takes them back and does them, within the turn's handshake budget,
    /// ahead of this turn's new steps (it runs first in the turn). And threads that started
    /// a step that long ago and did not finish it are hurried (see `tls::pool`).
    pub(super) fn take_back_handshakes(&mut self) {
        // Every turn, not only at a thread's wake: the queue's lock may have been busy then.
        self.close_lost_handshakes();
        let now = self.core.now;
        while self.core.handshakes < HANDSHAKES_PER_TURN {
            let Some((id, mut session, bytes)) =
                self.core.tls_pool.as_ref().and_then(|p| p.steal(now))
            else {
                return;
            };
            self.core.handshakes += 1;
            self.plain.clear();
            let fed = session.feed(&bytes, &mut self.plain);
            self.resume_handshake(id, session, fed);
        }
    }

    /// A step done away from the connection (by a thread, or taken back): its session goes
    /// back to `id` (if it is still there) and the handshake goes on from `fed`, with the
    /// step's plaintext in the loop's second buffer.
    fn resume_handshake(
        &mut self,
        id: ConnId,
        session: Box<crate::tls::Session>,
        fed: Result<crate::tls::Fed, crate::tls::TlsFailure>,
    ) {
        let Some(conn) = conn_mut(&mut self.core.conns, id) else {
            return; // closed meanwhile (its deadline, a stop): the session goes
        };
        if !matches!(conn.phase, Phase::Handshake(_)) || conn.tls.is_some() {
            return;
        }
        conn.tls = Some(session);
        if let Step::More = self.after_feed(id, fed, false, false) {
            // Whatever came while the session was away.
            self.read_handshake(id, false);
        }
    }

    /// A handshake step's outcome for `id`: a failure closes it (its alert, if rustls has
    /// one, is written as it is removed); otherwise the session's answer is written, and at the handshake's end
    /// the connection is the handler's.
    fn after_feed(
        &mut self,
        id: ConnId,
        fed: Result<crate::tls::Fed, crate::tls::TlsFailure>,
        short_read_drains: bool,
        drained: bool,
    ) -> Step {
        let core = &mut self.core;
        let Some(conn) = conn_mut(&mut core.conns, id) else {
            return Step::Done;
        };
        let fed = match fed {
            Ok(fed) => fed,
            Err(e) => {
                log::debug!("{id} from {}: {e}", conn.peer);
                // Its alert (if rustls has one) is written as it is removed.
                core.request_close(id, CloseReason::Tls(e));
                self.settle();
                return Step::Done;
            }
        };
        // TLS 1.3 ends with the client's Finished, and what the session has to say after it
        // is its tickets: they wait for the end of the reading below, so that a reply to a
        // request that came in the same flight as the Finished (browsers and rustls clients
        // send one so) takes them along, one write fewer per connection. Anything else (the
        // ServerHello flight, TLS 1.2's Finished) at once: the client waits for it.
        let tickets_only = fed.handshake_done && conn.tls.as_ref().is_some_and(|t| t.is_tls13());
        if !tickets_only {
            core.flush(id);
        }
        if !fed.handshake_done {
            self.settle();
            return if self.core.is_open(id) {
                Step::More
            } else {
                Step::Done
            };
        }
        // A close_notify in the same flight is taken by `read_handed`, after the
        // plaintext before it.
        self.tls_open(id);
        self.read_handed(id, short_read_drains, drained);
        // The handler sent something (`dirty`): it leaves now, tickets first. Otherwise the
        // tickets leave at the turn's end, with whatever else is sent to this connection in
        // the turn: a client may be waiting for them (GnuTLS waits a round trip for a
        // ticket to resume with), so they never wait for a later turn.
        match conn_mut(&mut self.core.conns, id) {
            Some(conn) if tickets_only && !conn.dirty => conn.mark_dirty(id, &mut self.core.dirty),
            Some(_) => self.core.flush(id),
            None => {}
        }
        self.settle();
        Step::Done
    }

    /// The handshake of `id` is done: it becomes the handler's connection (deadlines from
    /// now, `on_open`); the plaintext that came with the handshake's last flight is kept as
    /// its first input.
    fn tls_open(&mut self, id: ConnId) {
        let core = &mut self.core;
        let now = core.now;
        let Some(conn) = conn_mut(&mut core.conns, id) else {
            return;
        };
        conn.phase = match std::mem::replace(&mut conn.phase, Phase::Open) {
            Phase::Handshake(Some(proxied)) => Phase::Proxied(proxied),
            _ => Phase::Open,
        };
        core.deadlines.reopen(id, &mut conn.timing, now);
        if !self.plain.is_empty() {
            conn.timing.first_byte = true;
            let plain = self.plain.bytes();
            conn.input.keep(plain);
            conn.offer_kept = true;
            conn.shown = false;
            core.total_kept += plain.len();
            core.listeners[conn.listener as usize].stats.bytes_in += plain.len() as u64;
        }
        if let Some(tls) = &conn.tls {
            log::debug!("{id}: {} with {}", tls.summary(), conn.peer);
        }
        let info = ConnInfo {
            listener: ListenerId(conn.listener as usize),
            peer: conn.peer,
        };
        let mut ctx = Context::new(&mut self.core, &mut self.states);
        self.handler.on_open(&mut ctx, id, &info);
        self.settle();
    }

    /// A TLS connection's PROXY header is in: the client it names is the peer (its share
    /// counted now), the handshake deadline runs from now, and the bytes that came after
    /// the header are the handshake's first.
    pub(super) fn tls_after_header(
        &mut self,
        id: ConnId,
        header: ProxyHeader,
        rest: Vec<u8>,
        short_read_drains: bool,
        drained: bool,
    ) {
        let Some((balancer, client)) = super::turn::admit_client(&mut self.core, id, &header)
        else {
            return self.settle();
        };
        log::debug!("{id}: {balancer} relays {client}, awaiting its TLS handshake");
        let core = &mut self.core;
        let now = core.now;
        let Some(conn) = conn_mut(&mut core.conns, id) else {
            return;
        };
        conn.phase = Phase::Handshake(Some(Box::new(Proxied { balancer, header })));
        let timeout = core.listeners[conn.listener as usize]
            .tls
            .as_ref()
            .map(|t| t.handshake_timeout())
            .unwrap_or_default();
        core.deadlines.close(id, &conn.timing);
        conn.timing = Timing::new(now);
        core.deadlines
            .open_header(id, &mut conn.timing, after(now, timeout));
        if !rest.is_empty() && self.core.handshakes >= HANDSHAKES_PER_TURN {
            // The turn's handshake budget is spent: what came after the header waits with
            // the connection, and is the first step when the ready queue reads it.
            if let Some(conn) = conn_mut(&mut self.core.conns, id) {
                conn.input.keep(&rest);
                self.core.total_kept += rest.len();
                self.core.ready.push(id);
            }
            return;
        }
        if !rest.is_empty() {
            if let Step::Done = self.step_with(id, &rest, short_read_drains, drained) {
                return;
            }
        }
        if !drained {
            self.read_handshake(id, short_read_drains);
        }
    }

    /// A handshake step on `bytes` not read into the loop's buffer by this call (those
    /// that came after a PROXY header, in its last read: they fit the buffer).
    fn step_with(
        &mut self,
        id: ConnId,
        bytes: &[u8],
        short_read_drains: bool,
        drained: bool,
    ) -> Step {
        debug_assert!(bytes.len() <= self.buf.len());
        let n = bytes.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&bytes[..n]);
        self.handshake_step(id, n, short_read_drains, drained)
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::time::{Duration, Instant};

    use crate::conn::ConnId;
    use crate::reactor::{Context, Handler, ServerBuilder};
    use crate::tls::testing::{ca_and_leaf, client, localhost};
    use crate::tls::HANDSHAKES_PER_TURN;
    use crate::Input;
    use rustls::pki_types::pem::PemObject;

    struct Discard;

    impl Handler for Discard {
        type State = ();
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }

    /// A `localhost` server with `tls` and `threads` handshake threads (`Some(0)`, the
    /// default: none; `None`: a pool whose threads never come).
    fn server(tls: crate::TlsConfig, threads: Option<usize>) -> crate::Server<Discard> {
        let mut server = ServerBuilder::new()
            .listen_tls("127.0.0.1:0", tls)
            .tls_handshake_threads(threads.unwrap_or(1))
            .bind(Discard)
            .unwrap();
        if threads.is_none() {
            server.core.tls_pool = Some(crate::tls::Pool::without_threads());
        }
        server
    }

    /// A client of `config` on `tcp`, its ClientHello sent.
    fn hello(
        config: &std::sync::Arc<rustls::ClientConfig>,
        mut tcp: std::net::TcpStream,
    ) -> (rustls::ClientConnection, std::net::TcpStream) {
        let name = "localhost".try_into().unwrap();
        let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        conn.write_tls(&mut tcp).unwrap();
        (conn, tcp)
    }

    /// A server with `threads` handshake threads (as [`server`]), `burst` clients that sent
    /// their ClientHello, every one of them accepted and its hello in, no step taken yet.
    fn hellos_in(
        threads: Option<usize>,
        burst: usize,
    ) -> (
        crate::Server<Discard>,
        Vec<(rustls::ClientConnection, std::net::TcpStream)>,
    ) {
        let (tls, ca_pem) = localhost();
        hellos_with(tls, &ca_pem, threads, burst)
    }

    /// As [`hellos_in`], with the server's configuration `tls` (its CA: `ca_pem`).
    fn hellos_with(
        tls: crate::TlsConfig,
        ca_pem: &str,
        threads: Option<usize>,
        burst: usize,
    ) -> (
        crate::Server<Discard>,
        Vec<(rustls::ClientConnection, std::net::TcpStream)>,
    ) {
        let mut server = server(tls, threads);
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let client = client(ca_pem, rustls::DEFAULT_VERSIONS);
        // Accepted first, with nothing to read (a connection is read as it is accepted),
        // then the hellos: the steps come from their readiness events.
        let tcps: Vec<_> = (0..burst)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.core.conns.len() < burst {
            assert!(Instant::now() < deadline, "the burst was not accepted");
            server.run_once(Some(Duration::from_millis(10))).unwrap();
            assert_eq!(server.core.handshakes, 0, "a step before any hello");
        }
        let clients = tcps.into_iter().map(|tcp| hello(&client, tcp)).collect();
        // Every hello is in by now.
        std::thread::sleep(Duration::from_millis(50));
        (server, clients)
    }

    /// Runs turns until `burst` handshake steps were taken; the steps of each turn, every
    /// one within the budget.
    fn steps_per_turn(server: &mut crate::Server<Discard>, burst: usize) -> Vec<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut steps = Vec::new();
        while steps.iter().sum::<usize>() < burst {
            assert!(Instant::now() < deadline, "steps per turn: {steps:?}");
            server.run_once(Some(Duration::from_millis(10))).unwrap();
            let taken = server.core.handshakes;
            assert!(taken <= HANDSHAKES_PER_TURN, "{taken} steps in one turn");
            steps.push(taken);
        }
        steps
    }

    /// Issue #23: handshakes are CPU work inside the loop, so one turn takes at most
    /// `HANDSHAKES_PER_TURN` handshake steps; a burst waits on the ready queue for the
    /// next turns, and the turn ends (timers, writes, other connections) in between.
    #[test]
    fn a_burst_of_client_hellos_takes_one_budget_of_steps_per_turn() {
        let burst = 2 * HANDSHAKES_PER_TURN + HANDSHAKES_PER_TURN / 2;
        // Every step in the loop.
        let (mut server, _clients) = hellos_in(Some(0), burst);
        // Each turn takes one budget, the rest wait.
        let steps = steps_per_turn(&mut server, burst);
        assert_eq!(
            steps[..3],
            [
                HANDSHAKES_PER_TURN,
                HANDSHAKES_PER_TURN,
                HANDSHAKES_PER_TURN / 2
            ],
            "{steps:?}"
        );
    }

    /// Connections are read as they are accepted: a burst whose hellos are there at accept
    /// takes one budget of steps in the accepting turn too, and the rest wait.
    #[test]
    fn a_burst_there_at_accept_takes_one_budget_in_the_accepting_turn() {
        let burst = 2 * HANDSHAKES_PER_TURN;
        let (tls, ca_pem) = localhost();
        let mut server = server(tls, Some(0));
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let client = client(&ca_pem, rustls::DEFAULT_VERSIONS);
        let _clients: Vec<_> = (0..burst)
            .map(|_| hello(&client, std::net::TcpStream::connect(addr).unwrap()))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let steps = steps_per_turn(&mut server, burst);
        assert_eq!(
            steps[0], HANDSHAKES_PER_TURN,
            "the accepting turn: {steps:?}"
        );
    }

    /// The budget holds behind a PROXY header too: a burst whose header and ClientHello
    /// came in one write (HAProxy's `send-proxy-v2`) took a step per connection at the
    /// header's end, whatever the turn had taken (32 in the accepting turn); the bytes
    /// after a header the budget stops wait with the connection for a later turn.
    #[test]
    fn a_burst_behind_proxy_headers_takes_one_budget_per_turn() {
        burst_behind_proxy_headers(0);
    }

    /// The same with a handshake thread: the bytes that waited are stepped on the thread
    /// or in the loop, and no ClientHello is lost either way.
    #[test]
    fn a_burst_behind_proxy_headers_loses_no_hello_with_a_handshake_thread() {
        burst_behind_proxy_headers(1);
    }

    /// A burst of PROXY headers, each with a ClientHello in the same write, against a
    /// server with `threads` handshake threads: one budget per turn, no byte left waiting,
    /// and every client gets its server's flight. With no thread, the first two turns take
    /// a whole budget each; with one, steps taken back from the thread share the budget.
    fn burst_behind_proxy_headers(threads: usize) {
        let burst = 2 * HANDSHAKES_PER_TURN;
        let (tls, ca_pem) = localhost();
        let mut server = ServerBuilder::new()
            .listen_proxied_tls("127.0.0.1:0", crate::ProxyProtocol::new(), tls)
            .tls_handshake_threads(threads)
            .bind(Discard)
            .unwrap();
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let config = client(&ca_pem, rustls::DEFAULT_VERSIONS);
        let clients: Vec<_> = (0..burst)
            .map(|i| {
                let mut tcp = std::net::TcpStream::connect(addr).unwrap();
                let source = std::net::SocketAddr::from(([192, 0, 2, 1], 1000 + i as u16));
                let mut wire = crate::ProxyHeader::v1(source, addr).to_bytes();
                let name = "localhost".try_into().unwrap();
                let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                conn.write_tls(&mut wire).unwrap();
                std::io::Write::write_all(&mut tcp, &wire).unwrap();
                (conn, tcp)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let steps = steps_per_turn(&mut server, burst);
        if threads == 0 {
            // Each hello is one step in the loop, so `burst` steps took every byte.
            assert_eq!(steps[..2], [HANDSHAKES_PER_TURN; 2], "{steps:?}");
            assert_eq!(server.core.total_kept, 0, "bytes left waiting");
        } else {
            // A step taken back from the thread is counted twice (handed over, then taken
            // back), so after `burst` steps as many hellos as were taken back may still
            // wait (a slow thread: Wine in CI), and no more: a step counted when it was not
            // taken leaves more waiting. Those that wait are checked below: each client
            // gets its flight, and nothing is kept at the end.
            let waiting = server.core.conns.iter();
            let waiting = waiting.filter(|(_, c)| !c.input.is_empty()).count() as u64;
            let counts = server.core.tls_pool.as_ref().unwrap().counts();
            assert!(
                waiting <= counts.1,
                "{waiting} hellos left waiting, {steps:?}, {counts:?} handed over, taken back"
            );
        }
        // Every client gets its server's flight (written when a thread's step comes back,
        // so the loop turns meanwhile): none of the waiting hellos was lost.
        let readers: Vec<_> = clients
            .into_iter()
            .map(|(mut conn, mut tcp)| {
                std::thread::spawn(move || -> Result<(), String> {
                    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    while conn.is_handshaking() {
                        match conn.read_tls(&mut tcp) {
                            Ok(0) => return Err("the server left".into()),
                            Ok(_) => {}
                            Err(e) => return Err(e.to_string()),
                        }
                        conn.process_new_packets().map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !readers.iter().all(|r| r.is_finished()) {
            assert!(Instant::now() < deadline, "a client got no flight");
            server.run_once(Some(Duration::from_millis(5))).unwrap();
        }
        for reader in readers {
            reader.join().unwrap().unwrap();
        }
        assert_eq!(server.core.total_kept, 0, "bytes left waiting");
    }

    /// Issue #23 (review): steps the threads did not take in time are taken back first in
    /// a turn, ahead of new ClientHellos, which would otherwise take the whole budget of
    /// every turn while 16 or more come, and leave the due steps waiting.
    #[test]
    fn steps_due_to_be_taken_back_come_before_new_hellos() {
        let (mut server, _clients) = hellos_in(None, 3 * HANDSHAKES_PER_TURN);
        server.run_once(Some(Duration::from_millis(10))).unwrap();
        let counts = || server.core.tls_pool.as_ref().unwrap().counts();
        assert_eq!(counts(), (HANDSHAKES_PER_TURN as u64, 0), "the first turn");
        std::thread::sleep(crate::tls::STEAL_AFTER + Duration::from_millis(10));
        server.run_once(Some(Duration::from_millis(10))).unwrap();
        let counts = server.core.tls_pool.as_ref().unwrap().counts();
        assert_eq!(
            counts,
            (HANDSHAKES_PER_TURN as u64, HANDSHAKES_PER_TURN as u64),
            "the second turn: the due steps, not new hellos"
        );
    }

    /// Completes one handshake of a `version` client against a server with a handshake
    /// thread (`threadless`: a pool whose threads never come) and `tls`;
    /// returns the steps the loop handed to the pool, and how many it took back.
    fn steps_on_threads(
        tls: crate::TlsConfig,
        ca_pem: &str,
        version: &'static rustls::SupportedProtocolVersion,
        threadless: bool,
    ) -> (u64, u64) {
        let mut server = server(tls, if threadless { None } else { Some(1) });
        if !threadless {
            // What goes to the thread, whether or not it gets CPU in time on a busy host.
            server.core.tls_pool.as_ref().unwrap().be_patient();
        }
        // Threadless, the loop must wake by itself to take a step back.
        let wait = Duration::from_millis(if threadless { 1000 } else { 5 });
        handshake(&mut server, ca_pem, version, wait, |_| {});
        server.core.tls_pool.as_ref().unwrap().counts()
    }

    /// Drives one handshake of a `version` client against `server` to its end, polling at
    /// most `wait` at a time and calling `each` after each poll.
    fn handshake(
        server: &mut crate::Server<Discard>,
        ca_pem: &str,
        version: &'static rustls::SupportedProtocolVersion,
        wait: Duration,
        mut each: impl FnMut(&mut crate::Server<Discard>),
    ) -> (rustls::ClientConnection, std::net::TcpStream) {
        let addr = server.listeners()[0].local_addr.ip().unwrap();
        let mut conn = rustls::ClientConnection::new(
            client(ca_pem, &[version]),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Until the client is done and the server has taken its last flight.
        while conn.is_handshaking() || !opened(server) {
            assert!(Instant::now() < deadline, "the handshake did not end");
            while conn.wants_write() {
                match conn.write_tls(&mut tcp) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client write: {e}"),
                }
            }
            server.run_once(Some(wait)).unwrap();
            each(server);
            match conn.read_tls(&mut tcp) {
                Ok(0) => panic!("the server closed"),
                Ok(_) => {
                    conn.process_new_packets().unwrap();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        (conn, tcp)
    }

    /// The one connection has left its handshake phase.
    fn opened(server: &crate::Server<Discard>) -> bool {
        server
            .core
            .conns
            .iter()
            .any(|(_, c)| !matches!(c.phase, crate::conn::Phase::Handshake(_)))
    }

    /// Issue #23: with a handshake thread, only steps that may be key work leave the loop
    /// (each costs two hand-offs): in TLS 1.3 without client certificates, the ClientHello
    /// alone; the client's Finished is a MAC, checked in the loop. In TLS 1.2 (its
    /// ClientKeyExchange is key work), and where the configuration is the caller's (it may
    /// verify client certificates), every step.
    #[test]
    fn only_steps_that_may_be_key_work_go_to_the_handshake_thread() {
        let (ca_pem, cert_pem, key_pem) = ca_and_leaf();
        let ours = || {
            crate::TlsConfig::new()
                .cert_pem(cert_pem.as_bytes(), key_pem.as_bytes())
                .unwrap()
        };
        let server = ServerBuilder::new()
            .listen_tls("127.0.0.1:0", ours())
            .bind(Discard)
            .unwrap();
        assert!(
            server.core.tls_pool.is_none(),
            "a handshake thread by default"
        );
        assert_eq!(
            steps_on_threads(ours(), &ca_pem, &rustls::version::TLS13, false).0,
            1,
            "TLS 1.3"
        );
        assert_eq!(
            steps_on_threads(ours(), &ca_pem, &rustls::version::TLS12, false).0,
            2,
            "TLS 1.2"
        );
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap(),
                ],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let theirs = crate::TlsConfig::from_rustls(std::sync::Arc::new(config));
        assert_eq!(
            steps_on_threads(theirs, &ca_pem, &rustls::version::TLS13, false).0,
            2,
            "a caller's config"
        );
    }

    /// Issue #23: a step no thread starts (the threads get no CPU on a busy machine, or one
    /// died) is done by the loop once it waited `STEAL_AFTER`: the handshake completes,
    /// where it used to wait for its deadline. The loop wakes for it by itself (each poll
    /// here may wait a second). After a step was taken back, the loop does the next ones
    /// itself for `LOOP_FOR` (TLS 1.2's second step is not handed over), then tries the
    /// threads again.
    #[test]
    fn a_step_no_thread_starts_is_done_by_the_loop() {
        let (tls, ca_pem) = localhost();
        let started = Instant::now();
        assert_eq!(
            steps_on_threads(tls.clone(), &ca_pem, &rustls::version::TLS13, true),
            (1, 1),
            "TLS 1.3"
        );
        let took = started.elapsed();
        assert!(
            took >= crate::tls::STEAL_AFTER,
            "taken back before it was due"
        );
        assert!(
            took < Duration::from_millis(900),
            "the loop slept past it: {took:?}"
        );
        assert_eq!(
            steps_on_threads(tls, &ca_pem, &rustls::version::TLS12, true),
            (1, 1),
            "TLS 1.2"
        );
    }

    /// Issue #23: a handshake thread that started a step and gets no CPU (here: held in it)
    /// is given the ordinary scheduling class once the step is `STEAL_AFTER` old, and goes
    /// back to the lowest one after it. The step is not taken back (it has begun).
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn a_thread_stuck_in_a_step_is_hurried_and_yields_again_after_it() {
        // Leaving SCHED_IDLE takes CAP_SYS_NICE (CI runs as root).
        let permitted = std::thread::spawn(|| {
            crate::sys::yield_to_the_loop();
            crate::sys::hurry(crate::sys::thread_id())
        });
        if !permitted.join().unwrap() {
            eprintln!("skipped: this process may not leave SCHED_IDLE (no CAP_SYS_NICE)");
            return;
        }
        let (tls, ca_pem) = localhost();
        let mut server = server(tls, Some(1));
        let pool = server.core.tls_pool.as_ref().unwrap();
        // The step must begin on the thread, however long it waits for CPU first.
        pool.be_patient();
        pool.stall(true);
        let mut hurried = false;
        handshake(
            &mut server,
            &ca_pem,
            &rustls::version::TLS13,
            Duration::from_millis(5),
            |server| {
                let pool = server.core.tls_pool.as_ref().unwrap();
                let Some(tid) = pool.in_step() else {
                    return;
                };
                if crate::sys::class_of(tid) == libc::SCHED_OTHER {
                    if !hurried {
                        // Timed from when the thread began the step, not from when this saw
                        // it (on a busy host the test may look tens of milliseconds late).
                        // Still held in it: the step cannot end before this looks (after
                        // the stall is lifted, it may end between two looks).
                        let began = pool.step_since().expect("in its step");
                        assert!(
                            began.elapsed() >= crate::tls::STEAL_AFTER,
                            "hurried too soon"
                        );
                    }
                    hurried = true;
                    pool.stall(false);
                } else {
                    assert_eq!(crate::sys::class_of(tid), libc::SCHED_IDLE, "in its step");
                }
            },
        );
        assert!(hurried, "the stuck thread was never hurried");
        let pool = server.core.tls_pool.as_ref().unwrap();
        assert_eq!(pool.counts(), (1, 0), "the begun step was taken back");
        let tid = pool.tids()[0];
        assert_eq!(
            crate::sys::class_of(tid),
            libc::SCHED_IDLE,
            "after its step"
        );
    }

    /// Issue #23 (review): threads that start steps are busy, not starved, and keep the
    /// steps: one queued before they started theirs and taken back leaves the next ones to
    /// them. Real threads here, each noting when it started a step (a thread that noted
    /// nothing would look starved, and the loop would keep every step for `LOOP_FOR`).
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn threads_that_started_steps_are_busy_not_starved() {
        let (tls, _) = localhost();
        let server = server(tls, Some(2));
        let pool = server.core.tls_pool.as_ref().unwrap();
        // Generous: the threads run at the lowest class, and a busy host may starve them.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.tids().contains(&0) {
            assert!(Instant::now() < deadline, "the threads never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        pool.stall(true);
        let t0 = Instant::now();
        for key in 1..=3 {
            let id = ConnId { key, generation: 1 };
            let session = crate::tls::testing::session().0;
            assert!(pool.send(id, session, b"", t0).is_ok(), "handed over");
        }
        // Both threads take a step (after `t0`) and are held in it; the third waits.
        while pool.in_steps() < 2 {
            assert!(Instant::now() < deadline, "the threads took no steps");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Due at `t0 + STEAL_AFTER`; the threads' own steps are not (they began later),
        // so no hurry is tried, which may not be permitted here.
        let t1 = t0 + crate::tls::STEAL_AFTER;
        let (back, _, _) = pool.steal(t1).expect("the waiting step is due");
        assert_eq!(back.key, 3, "the step no thread took");
        assert!(pool.takes_steps(t1), "busy threads lost their steps");
        pool.stall(false);
    }

    /// Issue #23 (review): a thread that panics in a step is forgotten by the loop, so its
    /// id (which the kernel may give to another thread by then) is never hurried; and the
    /// connection whose session it took with it is closed at once, not at its handshake
    /// deadline, and no longer counted as away (the loop would look at the queue every
    /// turn for ever).
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn a_thread_that_panics_in_a_step_is_forgotten() {
        // A handshake deadline far off, so that a close within seconds of the death is not
        // the deadline's, however late the death comes.
        let (tls, ca_pem) = localhost();
        let tls = tls.handshake_timeout(Duration::from_secs(600));
        let (mut server, _clients) = hellos_with(tls, &ca_pem, Some(1), 1);
        let pool = server.core.tls_pool.as_ref().unwrap();
        // Generous: at the lowest class on a busy host, the thread may get little CPU for
        // its start and its panic (a backtrace too, with RUST_BACKTRACE).
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.tids() == [0] {
            assert!(Instant::now() < deadline, "the thread never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        pool.panic_next();
        server.run_once(Some(Duration::from_millis(10))).unwrap();
        let pool = server.core.tls_pool.as_ref().unwrap();
        assert_eq!(pool.counts(), (1, 0), "the hello was not handed over");
        while pool.tids() != [0] {
            assert!(Instant::now() < deadline, "the dead thread is still known");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(pool.in_step(), None);
        // Closed in the loop's next turns (within milliseconds on an idle host), not at
        // its deadline, ten minutes off.
        let died = Instant::now();
        while !server.core.conns.is_empty() {
            assert!(
                died.elapsed() < Duration::from_secs(30),
                "the connection waits for its deadline"
            );
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(
            format!("{:?}", server.core.tls_pool.unwrap()),
            "Pool { away: 0, .. }"
        );
    }

    /// Issue #23 (review): a connection whose handshake thread panicked in its step is
    /// closed in the next turn even if no wake says so (the queue's lock may have been
    /// busy when the thread's wake came): every turn looks.
    #[test]
    fn a_connection_whose_step_was_lost_is_closed_without_a_wake() {
        let (mut server, _clients) = hellos_in(None, 1);
        let (key, conn) = server.core.conns.iter().next().unwrap();
        let id = conn.id(key);
        server.core.tls_pool.as_ref().unwrap().lose(id);
        server.run_once(Some(Duration::from_millis(10))).unwrap();
        assert!(
            server.core.conns.is_empty(),
            "the connection is still there"
        );
    }

    /// Issue #23 (review): a TLS 1.3 server's tickets wait for the end of the read that
    /// brought the client's Finished (a reply to a request in the same flight takes them
    /// along), but never for a later turn: a client that sends nothing and waits for them
    /// (GnuTLS does, to resume) gets them in the turn its Finished is read. They waited for
    /// the client's next bytes, and such a client never resumed.
    #[test]
    fn tls13_tickets_reach_a_client_that_sends_nothing_in_the_same_turn() {
        let (tls, ca_pem) = localhost();
        let mut server = server(tls, Some(0));
        let wait = Duration::from_millis(5);
        let (mut conn, mut tcp) =
            handshake(&mut server, &ca_pem, &rustls::version::TLS13, wait, |_| {});
        // `handshake` returns after the turn that opened the connection: no more turns.
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        // (The handshake's last read may have brought them already.)
        let mut tickets = conn.tls13_tickets_received();
        while tickets == 0 {
            match conn.read_tls(&mut tcp) {
                Ok(n) if n > 0 => {}
                other => panic!("no tickets after the handshake's turn: {other:?}"),
            }
            conn.process_new_packets()
                .expect("tickets a client accepts");
            tickets = conn.tls13_tickets_received();
        }
    }

    /// TLS 1.2 ends with the server's Finished, which the client waits for: it leaves at
    /// once (the handshake would not end otherwise; `handshake` drives it).
    #[test]
    fn tls12_ends_with_the_servers_finished_at_once() {
        let (tls, ca_pem) = localhost();
        let mut server = server(tls, Some(0));
        let (conn, _tcp) = handshake(
            &mut server,
            &ca_pem,
            &rustls::version::TLS12,
            Duration::from_millis(5),
            |_| {},
        );
        assert!(!conn.is_handshaking());
    }
}
