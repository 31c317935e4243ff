//! TLS listeners in process, with rustls clients: the handshake phase (SNI, ALPN, client
//! certificates, the deadline, the per-listener settings), the data phase (echo, bulk
//! under backpressure), how streams end (close_notify both ways, truncation), reload and
//! resumption, and PROXY then TLS.

#[path = "util/pki.rs"]
mod pki;
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack::rustls;
use dualstack::{
    CloseReason, ConnId, ConnInfo, Context, Handler, Input, ListenerId, Peer, ProxyHeader,
    ProxyProtocol, Server, ServerBuilder, TimerId, TlsConfig, TlsInfo,
};
use pki::{Ca, Leaf};
use util::Running;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Open(Peer, Option<TlsInfo>),
    Close(String),
    Refused(String),
}

/// An echo that records opens (with what TLS settled), closes and refusals. A line
/// `close\n` is answered with `bye\n` and a close after flush.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    #[track_caller]
    fn wait(&self, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + util::TIMEOUT;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "no {what}: {events:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn opens(&self) -> Vec<TlsInfo> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Open(_, info) => info,
                _ => None,
            })
            .collect()
    }
}

impl Handler for Log {
    type State = ();

    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, info: &ConnInfo) {
        let tls = ctx.tls(conn).cloned();
        self.0.lock().unwrap().push(Event::Open(info.peer, tls));
    }

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let data = input.take_all();
        if data == b"bulk\n" || data == b"drop\n" {
            // More than the socket takes at once: most of it stays queued.
            let _ = ctx.send(conn, &vec![b'x'; 8 << 20]);
            if data == b"drop\n" {
                ctx.close(conn); // the queue is dropped
            }
            return;
        }
        if data == b"one\n" {
            // A single send of a record's size or more, from a timer: no read of the
            // connection flushes it, only the turn's end.
            ctx.set_conn_timer(conn, Duration::from_millis(1), 0);
            return;
        }
        if data == b"mix\n" {
            for piece in mix() {
                ctx.send(conn, &piece)
                    .expect("the queue limit is not reached");
            }
            return;
        }
        if data == b"half\n" {
            // Our side ends (close_notify, then a FIN); the client's stays open.
            let _ = ctx.send(conn, b"done sending\n");
            ctx.shutdown_write(conn);
            return;
        }
        if data == b"close\n" {
            let _ = ctx.send(conn, b"bye\n");
            ctx.close_after_flush(conn);
            return;
        }
        let _ = ctx.send(conn, data);
    }

    fn on_conn_timer(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: TimerId, _: u64) {
        let _ = ctx.send(conn, &util::pattern(9, 0, 20 << 10));
    }

    fn on_close(&mut self, _: &mut Context<'_, Self>, _: ConnId, reason: &CloseReason) {
        let text = match reason {
            CloseReason::Truncated => "Truncated".to_owned(),
            CloseReason::PeerClosed => "PeerClosed".to_owned(),
            other => other.to_string(),
        };
        self.0.lock().unwrap().push(Event::Close(text));
    }

    fn on_refused(&mut self, _: &mut Context<'_, Self>, _: ListenerId, _: &Peer, r: &CloseReason) {
        let text = match r {
            CloseReason::HandshakeTimeout => "HandshakeTimeout".to_owned(),
            CloseReason::Tls(e) => format!("Tls: {}", e.message()),
            other => other.to_string(),
        };
        self.0.lock().unwrap().push(Event::Refused(text));
    }
}

std::thread_local! {
    /// The handshake threads of the servers this test starts (`on_threads`).
    static THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn start(builder: ServerBuilder) -> (Running<Log>, Log, SocketAddr) {
    let log = Log::default();
    let builder = builder.tls_handshake_threads(THREADS.get());
    let server = Running::start(builder, log.clone());
    let addr = server.addr(0);
    (server, log, addr)
}

fn localhost() -> (Ca, Leaf) {
    let ca = Ca::new("dualstack test CA");
    let leaf = ca.leaf(&["localhost"]);
    (ca, leaf)
}

#[track_caller]
fn echo(tls: &mut pki::Tls, data: &[u8]) {
    tls.write_all(data).unwrap();
    let mut back = vec![0; data.len()];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn tls13_and_tls12_clients_are_served_and_the_handler_learns_what_was_settled() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) =
        start(Server::builder().listen_tls("127.0.0.1:0", leaf.config().alpn(["redis", "h2"])));
    assert!(_server.listeners[0].tls);
    assert!(_server.listeners[0].to_string().ends_with("(ipv4, tls)"));
    for (versions, want) in [
        (&[&rustls::version::TLS13][..], "TLSv1.3"),
        (&[&rustls::version::TLS12][..], "TLSv1.2"),
    ] {
        let config = pki::client_config(&ca, &["h2"], None, versions);
        let mut tls = pki::connect(config, "localhost", util::connect(addr)).unwrap();
        echo(&mut tls, b"hello over TLS\n");
        let info = log.wait("an open", |e| {
            e.len() == 1 + usize::from(want == "TLSv1.2") * 2
        });
        let Event::Open(peer, Some(info)) = info
            .iter()
            .rev()
            .find(|e| matches!(e, Event::Open(..)))
            .unwrap()
            .clone()
        else {
            panic!("no TLS info: {info:?}")
        };
        assert_eq!(peer, Peer::Ip(tls.sock.local_addr().unwrap()));
        assert_eq!(info.version(), want);
        assert_eq!(info.server_name(), Some("localhost"));
        assert_eq!(info.alpn(), Some(&b"h2"[..]));
        assert!(
            info.cipher_suite().starts_with("TLS"),
            "{}",
            info.cipher_suite()
        );
        assert!(info.peer_certificates().is_empty());
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        log.wait("the clean close", |e| {
            e.last() == Some(&Event::Close("PeerClosed".into()))
        });
    }
}

/// What `mix\n` sends, in one call: small and large pieces, so that a large one finds the
/// queue empty (encrypted from the handler's slice), larger than the session takes at once
/// (the rest queued), and behind queued bytes (queued too, never ahead of them).
fn mix() -> Vec<Vec<u8>> {
    [100, 17 << 10, 300 << 10, 20 << 10, 16 << 10, 5, 64 << 10]
        .into_iter()
        .enumerate()
        .map(|(i, len)| util::pattern(i as u64, 0, len))
        .collect()
}

#[test]
fn large_and_small_sends_arrive_whole_and_in_order_whether_queued_or_encrypted_at_once() {
    let (ca, leaf) = localhost();
    let (server, _log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    let want = mix().concat();
    for round in 0..3 {
        tls.write_all(b"mix\n").unwrap();
        tls.flush().unwrap();
        if round == 1 {
            // The client reads nothing for a while: the socket fills and the rest waits.
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut got = vec![0; want.len()];
        tls.read_exact(&mut got).unwrap();
        assert!(got == want, "round {round}: the bytes changed on the way");
    }
    tls.write_all(b"one\n").unwrap();
    tls.flush().unwrap();
    let mut one = vec![0; 20 << 10];
    tls.read_exact(&mut one).unwrap();
    assert!(
        one == util::pattern(9, 0, 20 << 10),
        "the single send changed"
    );
    let stats = server.stop().stats();
    assert_eq!(
        stats.total.bytes_out,
        3 * want.len() as u64 + one.len() as u64,
        "bytes counted out"
    );
    assert_eq!(stats.queued, 0, "bytes left counted as queued");
}

#[test]
fn four_megabytes_each_way_under_backpressure_arrive_intact() {
    let (ca, leaf) = localhost();
    let (_server, _log, addr) = start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .water_marks(16 * 1024, 64 * 1024),
    );
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    let data = util::pattern(7, 0, 4 << 20);
    // Write it all before reading anything back: the server's queue passes its high mark
    // and reading stops, until the client reads.
    let writer_data = data.clone();
    let mut got = Vec::with_capacity(data.len());
    let mut sent = 0;
    tls.sock.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + util::TIMEOUT * 4;
    while got.len() < data.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} bytes back",
            got.len(),
            data.len()
        );
        if sent < writer_data.len() {
            let end = (sent + 16 * 1024).min(writer_data.len());
            match tls.write(&writer_data[sent..end]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        let _ = tls.conn.write_tls(&mut tls.sock);
        let mut buf = [0; 64 * 1024];
        match tls.read(&mut buf) {
            Ok(0) => panic!("closed after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(got == data, "the bytes changed on the way");
}

/// Counts what each connection sent, and answers `N\n` once the N bytes it waits for came.
struct Tally(usize);

impl Handler for Tally {
    type State = usize;

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let n = input.take_all().len();
        let Some(count) = ctx.state_mut(conn) else {
            return;
        };
        *count += n;
        if *count == self.0 {
            let _ = ctx.send(conn, format!("{}\n", self.0).as_bytes());
        }
    }
}

/// An upload far larger than one read, sent in one burst and answered only at its end: the
/// server reads it all though the client sends nothing more (a read that stopped at the
/// read size, with more in the socket, is not the socket drained: no readiness event would
/// come for the rest).
#[test]
fn a_burst_larger_than_a_read_is_read_to_its_end_with_no_more_from_the_peer() {
    const SIZE: usize = 8 << 20;
    let (ca, leaf) = localhost();
    let builder = Server::builder()
        .listen_tls("127.0.0.1:0", leaf.config())
        .tls_handshake_threads(THREADS.get());
    let server = Running::start(builder, Tally(SIZE));
    let mut tls =
        pki::connect(pki::client(&ca), "localhost", util::connect(server.addr(0))).unwrap();
    for piece in util::pattern(3, 0, SIZE).chunks(256 * 1024) {
        tls.write_all(piece)
            .unwrap_or_else(|e| panic!("the server stopped reading the upload: {e}"));
    }
    tls.flush().unwrap();
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') {
        match tls.read(&mut byte) {
            Ok(1) => line.push(byte[0] as char),
            other => panic!("no answer after the upload ({other:?}): the server stopped reading"),
        }
    }
    assert_eq!(line, format!("{SIZE}\n"));
}

#[test]
fn sni_picks_the_certificate_that_names_the_host_and_the_first_is_the_default() {
    let ca = Ca::new("sni CA");
    let default = ca.leaf(&["default.test"]);
    let exact = ca.leaf(&["a.test"]);
    let wild = ca.leaf(&["*.b.test"]);
    let config = TlsConfig::new()
        .cert_pem(default.cert_pem.as_bytes(), default.key_pem.as_bytes())
        .unwrap()
        .cert_pem(exact.cert_pem.as_bytes(), exact.key_pem.as_bytes())
        .unwrap()
        .cert_pem(wild.cert_pem.as_bytes(), wild.key_pem.as_bytes())
        .unwrap();
    let (_server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", config));
    for (name, want) in [
        ("a.test", &exact),
        ("x.b.test", &wild),
        ("b.test", &default), // a wildcard covers one label, not the bare name
        ("deep.x.b.test", &default),
        ("unknown.test", &default),
        ("default.test", &default),
    ] {
        let tls = pki::connect(pki::any_cert_client(), name, util::connect(addr)).unwrap();
        let shown = tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
        assert!(shown == want.der, "{name} was shown another certificate");
    }
    // A client that names no server (an IP address is not sent as SNI) gets the default.
    let tls = pki::connect(pki::any_cert_client(), "127.0.0.1", util::connect(addr)).unwrap();
    assert!(tls.conn.peer_certificates().unwrap()[0].as_ref() == default.der);
    log.wait("seven opens", |e| {
        e.iter().filter(|e| matches!(e, Event::Open(..))).count() == 7
    });
    assert_eq!(log.opens().last().unwrap().server_name(), None);
}

#[test]
fn alpn_is_refused_with_no_application_protocol_when_nothing_matches() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) =
        start(Server::builder().listen_tls("127.0.0.1:0", leaf.config().alpn(["redis"])));
    let config = pki::client_config(&ca, &["h2"], None, rustls::ALL_VERSIONS);
    let err = pki::connect(config, "localhost", util::connect(addr)).unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    let events = log.wait("a refusal", |e| !e.is_empty());
    assert!(
        matches!(&events[..], [Event::Refused(r)] if r.contains("doesn't support any known protocol")),
        "{events:?}"
    );
    // A client that offers no ALPN at all is served, without a protocol.
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"x");
    assert_eq!(log.opens()[0].alpn(), None);
}

#[test]
fn client_certificates_are_required_verified_and_shown() {
    let (ca, leaf) = localhost();
    let clients = Ca::new("client CA");
    let stranger = Ca::new("another CA");
    let (_server, log, addr) = start(Server::builder().listen_tls(
        "127.0.0.1:0",
        leaf.config().client_ca_pem(clients.pem.as_bytes()).unwrap(),
    ));
    let alice = clients.client("alice");
    let config = pki::client_config(&ca, &[], Some(&alice), rustls::ALL_VERSIONS);
    let mut tls = pki::connect(config, "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"it is alice\n");
    let info = &log.opens()[0];
    assert!(info.peer_certificates()[0] == alice.der);
    // No certificate, or one from another CA: refused in the handshake. (A TLS 1.3 client
    // thinks it is done before the server has read its certificate: the refusal comes as
    // an alert on its first read.)
    let mallory = stranger.client("mallory");
    for cert in [None, Some(&mallory)] {
        let config = pki::client_config(&ca, &[], cert, rustls::ALL_VERSIONS);
        let failed = match pki::connect(config, "localhost", util::connect(addr)) {
            Err(_) => true,
            Ok(mut tls) => {
                let _ = tls.write_all(b"let me in\n");
                let mut buf = [0; 16];
                !matches!(tls.read(&mut buf), Ok(n) if n > 0)
            }
        };
        assert!(failed, "a client without a good certificate was served");
    }
    let events = log.wait("two refusals", |e| {
        e.iter().filter(|e| matches!(e, Event::Refused(_))).count() == 2
    });
    assert_eq!(log.opens().len(), 1, "{events:?}");
}

#[test]
fn silent_and_dribbling_clients_meet_the_handshake_deadline_while_good_ones_are_served() {
    let (ca, leaf) = localhost();
    let timeout = Duration::from_millis(400);
    let (_server, log, addr) = start(
        Server::builder().listen_tls("127.0.0.1:0", leaf.config().handshake_timeout(timeout)),
    );
    let started = Instant::now();
    let mut silent = util::connect(addr);
    let mut dribbler = util::connect(addr);
    // A real ClientHello, one byte every 50 ms: it would take many seconds to finish.
    let mut hello = Vec::new();
    let mut conn =
        rustls::ClientConnection::new(pki::client(&ca), "localhost".try_into().unwrap()).unwrap();
    conn.write_tls(&mut hello).unwrap();
    let mut sent = 0;
    let mut good = 0;
    while started.elapsed() < timeout * 3 / 2 {
        if sent < hello.len() && dribbler.write_all(&hello[sent..sent + 1]).is_ok() {
            sent += 1;
        }
        // Meanwhile, complete clients are served at once.
        let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
        echo(&mut tls, b"on time\n");
        good += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sent < hello.len(),
        "the ClientHello went out whole; dribble slower"
    );
    for stream in [&mut silent, &mut dribbler] {
        let mut buf = [0; 64];
        let end = stream.read(&mut buf);
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    }
    let events = log.wait("two late handshakes", |e| {
        e.iter()
            .filter(|e| **e == Event::Refused("HandshakeTimeout".into()))
            .count()
            == 2
    });
    assert_eq!(log.opens().len(), good, "{events:?}");
    assert!(started.elapsed() >= timeout);
}

#[test]
fn a_close_after_flush_ends_with_close_notify_and_the_reply_arrives() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    tls.write_all(b"close\n").unwrap();
    let mut got = Vec::new();
    // A rustls client reads to a clean end only after close_notify (else UnexpectedEof).
    tls.read_to_end(&mut got)
        .expect("a clean end (close_notify)");
    assert_eq!(got, b"bye\n");
    log.wait("the close", |e| matches!(e.last(), Some(Event::Close(_))));
}

#[test]
fn a_half_close_sends_close_notify_after_the_queue_and_the_client_may_still_send() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    tls.write_all(b"half\n").unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got)
        .expect("a clean end of the server's side (close_notify)");
    assert_eq!(got, b"done sending\n");
    // Our side is still open: the server reads it, and sees its clean end.
    tls.write_all(b"still talking\n").unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    log.wait("the close", |e| {
        e.last() == Some(&Event::Close("PeerClosed".into()))
    });
}

#[test]
fn a_stop_sends_close_notify_to_every_tls_client() {
    let (ca, leaf) = localhost();
    let (server, _log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"before the stop\n");
    server.stop();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("a clean end (close_notify)");
    assert!(rest.is_empty());
}

/// Review of #23: a close that dropped queued output (a close without flushing, a stop's
/// deadline) sent close_notify, so the client took a cut-off stream for a whole one. The
/// client must see a truncation.
#[test]
fn a_close_that_drops_queued_output_is_a_truncation_to_the_client() {
    let (ca, leaf) = localhost();
    let log = Log::default();
    let server = Running::start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .max_queued(16 << 20)
            .shutdown_timeout(Duration::from_millis(300)),
        log.clone(),
    );
    let addr = server.addr(0);
    let cut_short = |tls: &mut pki::Tls| {
        let mut got = Vec::new();
        let end = tls.read_to_end(&mut got);
        assert!(got.len() < 8 << 20, "everything came ({} bytes)", got.len());
        let e = end.expect_err("a clean end (close_notify) after a cut-off stream");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    };
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    tls.write_all(b"drop\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    cut_short(&mut tls);
    // A stop whose deadline passes with output queued for a client that does not read.
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    tls.write_all(b"bulk\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.stop();
    cut_short(&mut tls);
}

#[test]
fn an_end_without_close_notify_is_truncation_and_with_it_a_clean_close() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"then I vanish\n");
    tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    log.wait("a truncation", |e| {
        e.last() == Some(&Event::Close("Truncated".into()))
    });
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"goodbye, properly\n");
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("the server's close_notify back");
    log.wait("a clean close", |e| {
        e.last() == Some(&Event::Close("PeerClosed".into()))
    });
}

#[test]
fn a_reload_serves_new_handshakes_keeps_old_connections_and_resumes_sessions() {
    let ca = Ca::new("reload CA");
    let first = ca.leaf(&["localhost"]);
    let second = ca.leaf(&["localhost"]);
    let (server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", first.config()));
    // One client config, so its session cache carries a ticket across the reload.
    let client = pki::client(&ca);
    let mut old = pki::connect(client.clone(), "localhost", util::connect(addr)).unwrap();
    echo(&mut old, b"first\n");
    assert!(old.conn.peer_certificates().unwrap()[0].as_ref() == first.der);
    server.handle.reload_tls(&second.config()).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    let mut fresh = loop {
        // A new client (no ticket), to see the certificate new handshakes get.
        let tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
        if tls.conn.peer_certificates().unwrap()[0].as_ref() == second.der {
            break tls;
        }
        assert!(Instant::now() < deadline, "the reload never took");
        std::thread::sleep(Duration::from_millis(5));
    };
    echo(&mut fresh, b"second\n");
    echo(&mut old, b"still the first\n");
    // The first client comes back with its ticket: resumed, across the reload.
    let mut again = pki::connect(client, "localhost", util::connect(addr)).unwrap();
    echo(&mut again, b"resumed\n");
    let opens = log.opens();
    assert!(opens.last().unwrap().resumed(), "{opens:?}");
    assert!(!opens[0].resumed());
    // A configuration that does not work is refused before the swap, naming its file.
    let dir = std::env::temp_dir().join(format!("dualstack-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, _) = first.write(&dir, "first");
    let (_, wrong_key) = second.write(&dir, "second");
    let err = TlsConfig::new().cert_files(&cert, &wrong_key).unwrap_err();
    assert!(
        matches!(err.kind(), dualstack::TlsErrorKind::KeyMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("second.key"), "{err}");
    assert!(err.to_string().contains("first.crt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_proxy_header_then_tls_makes_the_headers_client_the_peer() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(Server::builder().listen_proxied_tls(
        "127.0.0.1:0",
        ProxyProtocol::new(),
        leaf.config(),
    ));
    let client: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    let mut tcp = util::connect(addr);
    tcp.write_all(&ProxyHeader::v2(client, addr).to_bytes())
        .unwrap();
    let mut tls = pki::connect(pki::client(&ca), "localhost", tcp).unwrap();
    echo(&mut tls, b"through a balancer\n");
    let events = log.events();
    assert!(
        matches!(&events[0], Event::Open(peer, Some(_)) if *peer == Peer::Ip(client)),
        "{events:?}"
    );
    // Plaintext where TLS is expected is refused in the handshake.
    let mut plain = util::connect(addr);
    plain
        .write_all(&ProxyHeader::v1(client, addr).to_bytes())
        .unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0; 256];
    let _ = plain.read(&mut buf);
    log.wait("a refusal", |e| {
        e.iter()
            .any(|e| matches!(e, Event::Refused(r) if r.starts_with("Tls")))
    });
}

#[cfg(unix)]
#[test]
fn a_unix_socket_listener_is_tls_too() {
    let (ca, leaf) = localhost();
    let dir = std::env::temp_dir().join(format!("dualstack-tls-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let log = Log::default();
    let server = Running::start(
        Server::builder().listen_tls(format!("unix:{}", path.display()), leaf.config()),
        log.clone(),
    );
    assert!(
        server.listeners[0].to_string().ends_with("(unix, tls)"),
        "{}",
        server.listeners[0]
    );
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let conn =
        rustls::ClientConnection::new(pki::client(&ca), "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    tls.write_all(b"over a unix socket\n").unwrap();
    let mut back = [0; 19];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over a unix socket\n");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_burst_of_handshakes_is_served_across_turns() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    // More than one turn's budget of handshakes at once: all are served.
    let hellos: Vec<_> = (0..48)
        .map(|_| {
            let mut tcp = util::connect(addr);
            let mut conn =
                rustls::ClientConnection::new(pki::client(&ca), "localhost".try_into().unwrap())
                    .unwrap();
            conn.write_tls(&mut tcp).unwrap();
            (conn, tcp)
        })
        .collect();
    for (conn, tcp) in hellos {
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        echo(&mut tls, b"one of many\n");
    }
    assert_eq!(log.opens().len(), 48);
}

#[test]
fn bad_configurations_are_refused_naming_what_is_wrong() {
    let (_, leaf) = localhost();
    let err = Server::builder()
        .listen_tls("127.0.0.1:0", TlsConfig::new())
        .bind(Log::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("at least one certificate"),
        "{err}"
    );
    let err = TlsConfig::new()
        .cert_pem(b"not pem", leaf.key_pem.as_bytes())
        .unwrap_err();
    assert_eq!(err.kind(), &dualstack::TlsErrorKind::NoCertificate);
    let err = TlsConfig::new()
        .cert_pem(leaf.cert_pem.as_bytes(), b"")
        .unwrap_err();
    assert_eq!(err.kind(), &dualstack::TlsErrorKind::NoKey);
    let err = TlsConfig::new()
        .cert_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/cert.pem: cannot read it"),
        "{err}"
    );
    // A server without TLS listeners has nothing to reload.
    let server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(Log::default())
        .unwrap();
    let err = server.handle().reload_tls(&leaf.config()).unwrap_err();
    assert_eq!(err.kind(), &dualstack::TlsErrorKind::NoTlsListener);
    // Ninth review of #22: a zero handshake deadline closed every connection before its
    // ClientHello was read; refused at bind and at a reload.
    let zero = leaf.config().handshake_timeout(Duration::ZERO);
    let err = Server::builder()
        .listen_tls("127.0.0.1:0", zero.clone())
        .bind(Log::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("TLS handshake timeout must be above 0"),
        "{err}"
    );
    let server = Server::builder()
        .listen_tls("127.0.0.1:0", leaf.config())
        .bind(Log::default())
        .unwrap();
    let err = server.handle().reload_tls(&zero).unwrap_err();
    assert_eq!(err.kind(), &dualstack::TlsErrorKind::ZeroHandshakeTimeout);
}

/// Takes one line per call, then pauses for 50 ms (a connection timer resumes it).
#[derive(Clone, Default)]
struct Slow(Arc<Mutex<Vec<String>>>);

impl Slow {
    #[track_caller]
    fn wait_for(&self, want: &[&str]) {
        let deadline = Instant::now() + util::TIMEOUT;
        loop {
            let seen = self.0.lock().unwrap().clone();
            if seen == want {
                return;
            }
            assert!(Instant::now() < deadline, "saw {seen:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Handler for Slow {
    type State = ();

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        if let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(input.take(i + 1)).trim().to_owned();
            self.0.lock().unwrap().push(line);
            ctx.pause_reading(conn);
            ctx.set_conn_timer(conn, Duration::from_millis(50), 0);
        }
    }

    fn on_conn_timer(
        &mut self,
        ctx: &mut Context<'_, Self>,
        conn: ConnId,
        _: dualstack::TimerId,
        _: u64,
    ) {
        ctx.resume_reading(conn);
    }

    fn on_peer_closed(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId) {
        self.0.lock().unwrap().push("end".into());
        ctx.close_after_flush(conn);
    }
}

/// Review of #23: a close_notify that came in the same read as lines a paused handler had
/// not taken yet ended reading at once, and the lines were lost. Its end comes after them,
/// as a plain stream's does.
#[test]
fn lines_before_close_notify_reach_a_handler_that_pauses() {
    let (ca, leaf) = localhost();
    let slow = Slow::default();
    let server = Running::start(
        Server::builder().listen_tls("127.0.0.1:0", leaf.config()),
        slow.clone(),
    );
    let mut tls =
        pki::connect(pki::client(&ca), "localhost", util::connect(server.addr(0))).unwrap();
    tls.conn.writer().write_all(b"one\ntwo\nthree\n").unwrap();
    tls.conn.send_close_notify();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock).unwrap();
    }
    slow.wait_for(&["one", "two", "three", "end"]);
}

/// A client's handshake driven by hand up to its Finished, left unsent: what the client
/// writes next goes in one flight with it ([`send_flight`]).
fn handshake_but_finished(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> (rustls::ClientConnection, TcpStream) {
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut sock = util::connect(addr);
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        conn.read_tls(&mut sock).unwrap();
        conn.process_new_packets().unwrap();
    }
    (conn, sock)
}

/// Writes all that `conn` has to send in one write.
fn send_flight(conn: &mut rustls::ClientConnection, sock: &mut TcpStream) {
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).unwrap();
    }
    sock.write_all(&flight).unwrap();
}

/// Review of #23: a handshake message after the handshake that rustls will not hold (it
/// buffers at most 64 KiB of records toward an unfinished one; this one claims 65,000 bytes
/// and comes 100 bytes a record) is the peer's TLS failure, also when rustls refuses before
/// it asks the socket for a byte. With a 1-byte read buffer every read takes one, so the
/// refusal always comes at a read that got nothing, which was taken for the end of the
/// stream: a truncation.
#[test]
fn a_handshake_message_too_large_to_hold_is_a_tls_failure_not_a_truncation() {
    use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
    use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion};
    let (ca, leaf) = localhost();
    let builder = Server::builder().read_buffer_size(1);
    let (_server, log, addr) = start(builder.listen_tls("127.0.0.1:0", leaf.config()));
    let mut config = (*pki::client(&ca)).clone();
    config.enable_secret_extraction = true;
    let (mut conn, mut sock) = handshake_but_finished(Arc::new(config), addr);
    send_flight(&mut conn, &mut sock);
    log.wait("the open", |e| matches!(e.last(), Some(Event::Open(..))));
    // The client's keys, to write records its rustls would not.
    let Some(rustls::SupportedCipherSuite::Tls13(suite)) = conn.negotiated_cipher_suite() else {
        panic!("not TLS 1.3");
    };
    let (seq, secrets) = conn.dangerous_extract_secrets().unwrap().tx;
    let (key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => panic!("a suite this test cannot write records for"),
    };
    let mut encrypter = suite.aead_alg.encrypter(key, iv);
    let mut seq = seq..;
    let mut record = |typ, payload: &[u8]| {
        let plain = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let seq = seq.next().unwrap();
        encrypter.encrypt(plain, seq).unwrap().encode()
    };
    let mut message = vec![24, 0, 0xfd, 0xe8];
    message.resize(4 + 65_000, 0);
    let mut wire = Vec::new();
    for piece in message.chunks(100) {
        wire.extend(record(ContentType::Handshake, piece));
    }
    // The server may close before it took everything: a reset here is fine.
    let _ = sock.write_all(&wire);
    let events = log.wait("the close", |e| matches!(e.last(), Some(Event::Close(_))));
    assert_eq!(
        events.last(),
        Some(&Event::Close("TLS: message buffer full".into())),
        "{events:?}"
    );
}

/// Review of #23: the client's Finished, a request and close_notify in one write: the
/// request was never offered (the end was taken first, during the handshake's hand-over).
#[test]
fn a_request_and_close_notify_in_the_handshakes_last_flight_arrive_in_order() {
    let (ca, leaf) = localhost();
    let slow = Slow::default();
    let server = Running::start(
        Server::builder().listen_tls("127.0.0.1:0", leaf.config()),
        slow.clone(),
    );
    let (mut conn, mut sock) = handshake_but_finished(pki::client(&ca), server.addr(0));
    conn.writer().write_all(b"hello\nagain\n").unwrap();
    conn.send_close_notify();
    send_flight(&mut conn, &mut sock);
    slow.wait_for(&["hello", "again", "end"]);
}

/// Finds its backend busy at its first call (uses nothing, pauses, a connection timer
/// resumes it), then answers every whole line with the line and `!`.
#[derive(Default)]
struct BusyFirst {
    calls: usize,
}

impl Handler for BusyFirst {
    type State = ();

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        self.calls += 1;
        if self.calls == 1 {
            ctx.pause_reading(conn);
            ctx.set_conn_timer(conn, Duration::from_millis(1), 0);
            return;
        }
        while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = input.take(i + 1);
            let _ = ctx.send(conn, &[&line[..i], b"!\n"].concat());
        }
    }

    fn on_conn_timer(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: TimerId, _: u64) {
        ctx.resume_reading(conn);
    }
}

/// Sixth review of #22: the plaintext that came in the handshake's last flight is the
/// handler's first offer, as bytes after a PROXY header are, not input it was shown
/// before: a handler whose first call finds its backend busy, over more than `max_input`
/// of pipelined requests, is served. (Counted as shown, that first call was a refusal
/// past the limit, and the connection was closed with `InputLimit`; the test fails if a
/// first offer counts as shown and a refusal past the limit closes again.)
#[test]
fn the_handshakes_last_flight_is_a_first_offer_not_a_refused_one() {
    let (ca, leaf) = localhost();
    let server = Running::start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .max_input(16 * 1024),
        BusyFirst::default(),
    );
    let (mut conn, mut sock) = handshake_but_finished(pki::client(&ca), server.addr(0));
    // 330 lines of 60 bytes (19,800 bytes, past the 16 KiB limit) behind the Finished.
    let lines: Vec<String> = (0..330)
        .map(|i| format!("{i:04}{}", "-".repeat(55)))
        .collect();
    conn.writer()
        .write_all(
            lines
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .as_bytes(),
        )
        .unwrap();
    send_flight(&mut conn, &mut sock);
    let want: String = lines.iter().map(|l| format!("{l}!\n")).collect();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut got = vec![0; want.len()];
    let read = tls.read_exact(&mut got);
    assert!(
        read.is_ok() && got == want.as_bytes(),
        "{read:?}: {} bytes answered of {}",
        got.iter().position(|&b| b == 0).unwrap_or(got.len()),
        want.len()
    );
}

/// `go` starts work kept open through a stop it starts: one line, then nothing more.
struct Unfinished;

impl Handler for Unfinished {
    type State = ();

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        input.take_all();
        ctx.keep_open_on_stop(conn, true);
        let _ = ctx.send(conn, b"part 1 of 2\n");
        ctx.stop();
    }
}

/// Review of the kept-open stop: work kept open that the shutdown timeout cut short ended
/// with close_notify when nothing was queued, so a TLS client took half a response for a
/// whole one. It ends as a truncation.
#[test]
fn work_kept_open_that_the_shutdown_timeout_cuts_short_is_a_truncation() {
    let (ca, leaf) = localhost();
    let server = Running::start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .shutdown_timeout(Duration::from_millis(300)),
        Unfinished,
    );
    let mut tls =
        pki::connect(pki::client(&ca), "localhost", util::connect(server.addr(0))).unwrap();
    tls.write_all(b"go\n").unwrap();
    let mut got = Vec::new();
    let end = tls.read_to_end(&mut got);
    assert_eq!(got, b"part 1 of 2\n");
    let err = end.expect_err("a clean end (close_notify) after half the work");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}

/// Sends 1,000-byte pieces while `needs_drain` is false, then shuts its writing side.
#[derive(Default)]
struct ShutAfterPieces {
    needs_drain_at_shut: Option<bool>,
    drains: usize,
}

impl Handler for ShutAfterPieces {
    type State = ();

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        input.take_all();
        if self.needs_drain_at_shut.is_some() {
            return;
        }
        for _ in 0..100_000 {
            if ctx.needs_drain(conn) {
                break;
            }
            ctx.send(conn, &[b'x'; 1000]).unwrap();
        }
        ctx.shutdown_write(conn);
        self.needs_drain_at_shut = Some(ctx.needs_drain(conn));
    }

    fn on_drained(&mut self, _: &mut Context<'_, Self>, _: ConnId) {
        self.drains += 1;
    }
}

/// A TLS client speaks first: its ClientHello, there when the connection is accepted, is
/// read and answered in the turn that accepts it (it waited for the next turn's readiness
/// event: a system call and a turn more per handshake).
#[test]
fn a_client_hello_there_at_accept_is_answered_in_the_accepting_turn() {
    let (ca, leaf) = localhost();
    let mut server = Server::builder()
        .listen_tls("127.0.0.1:0", leaf.config())
        .bind(Log::default())
        .unwrap();
    let addr = server.listeners()[0].local_addr.ip().unwrap();
    let mut tcp = util::connect(addr);
    let name = "localhost".try_into().unwrap();
    let mut client = rustls::ClientConnection::new(pki::client(&ca), name).unwrap();
    client.write_tls(&mut tcp).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while server.stats().total.accepted == 0 {
        assert!(Instant::now() < deadline, "not accepted");
        server.run_once(Some(util::TIMEOUT)).unwrap();
    }
    tcp.set_nonblocking(true).unwrap();
    let mut flight = [0u8; 4096];
    let got = tcp.read(&mut flight);
    assert!(
        got.as_ref().is_ok_and(|&n| n > 0),
        "no ServerHello after the accepting turn: {got:?}"
    );
}

/// Review of `needs_drain`: on TLS, a queue whose last write took close_notify along after
/// `shutdown_write` never had its promised `on_drained` (WRITABLE was dropped before that
/// write, which then took the queue for one that had never backed up).
#[test]
fn on_drained_comes_as_needs_drain_promised_when_close_notify_goes_with_the_queue() {
    let (ca, leaf) = localhost();
    let mut server = Server::builder()
        .listen_tls("127.0.0.1:0", leaf.config())
        .bind(ShutAfterPieces::default())
        .unwrap();
    let addr = server.listeners()[0].local_addr.ip().unwrap();
    let client = std::thread::spawn(move || {
        let tcp = util::connect_small_window(addr);
        let mut tls = pki::connect(pki::client(&ca), "localhost", tcp).unwrap();
        tls.write_all(b"go\n").unwrap();
        std::thread::sleep(Duration::from_millis(300)); // let the queue back up
        let mut got = Vec::new();
        tls.read_to_end(&mut got).map(|_| got.len())
    });
    let deadline = Instant::now() + util::TIMEOUT;
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the client did not finish");
        server.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    for _ in 0..10 {
        server.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    let got = client.join().unwrap().expect("a clean end");
    let h = server.handler();
    assert!(got > 0);
    assert_eq!(
        h.needs_drain_at_shut,
        Some(true),
        "the queue never backed up"
    );
    assert_eq!(h.drains, 1, "needs_drain promised an on_drained");
}

/// Review of #23: ciphertext that never completes a record counted as activity, so a peer
/// trickling one record held its slot past the first-byte and idle deadlines while the
/// handler got nothing. Activity is plaintext.
#[test]
fn a_record_trickled_after_the_handshake_meets_the_first_byte_deadline() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .first_byte_timeout(Duration::from_millis(400)),
    );
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    tls.conn.writer().write_all(&[b'x'; 5000]).unwrap();
    let mut record = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut record).unwrap();
    }
    let started = Instant::now();
    for byte in record.iter().take(30) {
        if tls.sock.write_all(&[*byte]).is_err() {
            break; // closed: the deadline came
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = log.wait("the first-byte deadline", |e| {
        e.contains(&Event::Close("first-byte timeout".into()))
    });
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{events:?}"
    );
}

/// Review of #23: one reload gave every TLS listener the same configuration, so renewing
/// the public listener's certificate silently turned client-certificate checks off on the
/// mTLS one. Listeners with different settings refuse a reload of all at once, and are
/// reloaded each with its own.
#[test]
fn listeners_with_different_settings_are_reloaded_each_with_its_own() {
    let (ca, leaf) = localhost();
    let staff = Ca::new("staff CA");
    let renewed = ca.leaf(&["localhost"]);
    let (server, _log, _) = start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .listen_tls(
                "127.0.0.1:0",
                leaf.config().client_ca_pem(staff.pem.as_bytes()).unwrap(),
            )
            .listen("127.0.0.1:0"),
    );
    let (public, mtls) = (server.addr(0), server.addr(1));
    let anonymous_served = |addr| {
        let Ok(mut tls) = pki::connect(pki::client(&ca), "localhost", util::connect(addr)) else {
            return false;
        };
        let _ = tls.write_all(b"hi\n");
        let mut buf = [0; 3];
        tls.read_exact(&mut buf).is_ok()
    };
    assert!(!anonymous_served(mtls));
    let err = server.handle.reload_tls(&renewed.config()).unwrap_err();
    assert_eq!(
        err.kind(),
        &dualstack::TlsErrorKind::ListenersDiffer,
        "{err}"
    );
    let err = server
        .handle
        .reload_tls_of(&[2], &renewed.config())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &dualstack::TlsErrorKind::NotTlsListener(Some(2))
    );
    server
        .handle
        .reload_tls_of(&[0], &renewed.config())
        .unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    loop {
        let tls = pki::connect(pki::client(&ca), "localhost", util::connect(public)).unwrap();
        if tls.conn.peer_certificates().unwrap()[0].as_ref() == renewed.der {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(anonymous_served(public));
    assert!(
        !anonymous_served(mtls),
        "the mTLS listener lost its client CA"
    );
    // Given the same settings again, the two are one group: a reload of all is taken.
    let staff_renewed = renewed
        .config()
        .client_ca_pem(staff.pem.as_bytes())
        .unwrap();
    server
        .handle
        .reload_tls_of(&[0, 1], &staff_renewed)
        .unwrap();
    server.handle.reload_tls(&staff_renewed).unwrap();
}

/// Runs `test` with its servers' handshakes on two threads of their own
/// (`ServerBuilder::tls_handshake_threads`): every behaviour the test checks holds there too.
fn on_threads(test: fn()) {
    THREADS.set(2);
    test();
}

#[test]
fn on_threads_versions_and_what_was_settled() {
    on_threads(tls13_and_tls12_clients_are_served_and_the_handler_learns_what_was_settled);
}

#[test]
fn on_threads_sni() {
    on_threads(sni_picks_the_certificate_that_names_the_host_and_the_first_is_the_default);
}

#[test]
fn on_threads_alpn_refused() {
    on_threads(alpn_is_refused_with_no_application_protocol_when_nothing_matches);
}

#[test]
fn on_threads_client_certificates() {
    on_threads(client_certificates_are_required_verified_and_shown);
}

#[test]
fn on_threads_the_handshake_deadline() {
    on_threads(silent_and_dribbling_clients_meet_the_handshake_deadline_while_good_ones_are_served);
}

#[test]
fn on_threads_a_burst() {
    on_threads(a_burst_of_handshakes_is_served_across_turns);
}

#[test]
fn on_threads_proxy_then_tls() {
    on_threads(a_proxy_header_then_tls_makes_the_headers_client_the_peer);
}

#[test]
fn on_threads_reload_and_resumption() {
    on_threads(a_reload_serves_new_handshakes_keeps_old_connections_and_resumes_sessions);
}

#[test]
fn on_threads_bulk() {
    on_threads(four_megabytes_each_way_under_backpressure_arrive_intact);
}

/// A handshake thread's wake is the server's own business: `on_wake` is the application's
/// (its `ServerHandle::wake`), and a handler that counts wakes sees none from handshakes.
#[test]
fn handshake_threads_do_not_call_on_wake() {
    #[derive(Clone, Default)]
    struct Wakes(Arc<std::sync::atomic::AtomicUsize>);
    impl Handler for Wakes {
        type State = ();
        fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
            let _ = ctx.send(conn, input.take_all());
        }
        fn on_wake(&mut self, _: &mut Context<'_, Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let (ca, leaf) = localhost();
    let wakes = Wakes::default();
    let server = Running::start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config())
            .tls_handshake_threads(1),
        wakes.clone(),
    );
    for _ in 0..10 {
        let mut tls =
            pki::connect(pki::client(&ca), "localhost", util::connect(server.addr(0))).unwrap();
        echo(&mut tls, b"hi\n");
    }
    assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.handle.wake().unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while wakes.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "on_wake never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    let err = Server::builder()
        .listen_tls("127.0.0.1:0", leaf.config())
        .tls_handshake_threads(65)
        .bind(Log::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("65 TLS handshake threads"),
        "{err}"
    );
}

/// Issue #23: a connection in its handshake holds its place under `max_connections`: with
/// one place, a silent client keeps the next one in the backlog until its handshake
/// deadline frees the place.
#[test]
fn a_handshake_in_progress_counts_against_max_connections() {
    let (ca, leaf) = localhost();
    let timeout = Duration::from_millis(400);
    let (_server, log, addr) = start(
        Server::builder()
            .listen_tls("127.0.0.1:0", leaf.config().handshake_timeout(timeout))
            .max_connections(1),
    );
    let _silent = util::connect(addr);
    std::thread::sleep(Duration::from_millis(50)); // accepted: it holds the one place
    let started = Instant::now();
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"after the silent one\n");
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(100),
        "served after {:?}, while the silent client held the only place",
        started.elapsed()
    );
    log.wait("the silent client's deadline", |e| {
        e.contains(&Event::Refused("HandshakeTimeout".into()))
    });
}

/// Issue #23: early data (0-RTT) is off. A client that would send a request in its first
/// flight on resumption (where nothing stops a replay of it) is not allowed to: the tickets
/// the server gives allow no early data, the resumed handshake accepts none, and the
/// request goes after the handshake, as on any connection.
/// A whole rustls configuration is served as it is, but one that allows early data is
/// refused at bind and at a reload (tenth review of #23: rustls accepted the client's
/// 0-RTT bytes, told it so, and the reactor never read them).
#[test]
fn a_rustls_configuration_is_served_unless_it_allows_early_data() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (ca, leaf) = localhost();
    let config = |early: u32| {
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.max_early_data_size = early;
        TlsConfig::from_rustls(Arc::new(config))
    };
    let err = Server::builder()
        .listen_tls("127.0.0.1:0", config(16384))
        .bind(Log::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("16384 bytes of early data"),
        "{err}"
    );
    let (server, _, addr) = start(Server::builder().listen_tls("127.0.0.1:0", config(0)));
    let mut tls = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    echo(&mut tls, b"served as it is\n");
    let err = server.handle.reload_tls(&config(1)).unwrap_err();
    assert_eq!(err.kind(), &dualstack::TlsErrorKind::EarlyData(1));
}

#[test]
fn early_data_is_never_allowed_and_the_request_goes_after_the_handshake() {
    let (ca, leaf) = localhost();
    let (_server, log, addr) = start(Server::builder().listen_tls("127.0.0.1:0", leaf.config()));
    let mut config = (*pki::client_config(&ca, &[], None, &[&rustls::version::TLS13])).clone();
    config.enable_early_data = true;
    let config = Arc::new(config);
    // The first connection brings a ticket (read with the echo).
    let mut first = pki::connect(config.clone(), "localhost", util::connect(addr)).unwrap();
    echo(&mut first, b"first\n");
    drop(first);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    assert!(
        conn.early_data().is_none(),
        "the server's ticket allows early data"
    );
    let mut tls = rustls::StreamOwned::new(conn, util::connect(addr));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    assert!(!tls.conn.is_early_data_accepted());
    echo(&mut tls, b"after the handshake\n");
    let opens = log.opens();
    assert!(opens.last().unwrap().resumed(), "{opens:?}");
}
