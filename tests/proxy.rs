//! PROXY protocol listeners, driven by Rust clients that play the balancer: the header is
//! read before the handler hears of the connection, the client is the peer, the bytes after
//! the header are delivered, and every way a header can fail closes the connection with a
//! reason (`on_refused`) and a counter. The real balancers (HAProxy, curl) are in
//! `tests/haproxy.rs`.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack::{
    proxy_tlv, CloseReason, ConnId, ConnInfo, Context, Handler, Input, ListenerId, Peer, Proxied,
    ProxyHeader, ProxyProtocol, ProxyVersions, Server,
};
use util::Running;

/// What the handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Open(Peer, Option<Proxied>),
    Data(Vec<u8>),
    Close(String),
    Refused(Peer, String),
}

/// An echo handler that records what it saw.
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

    fn refusals(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Refused(_, r) => Some(r),
                _ => None,
            })
            .collect()
    }
}

impl Handler for Log {
    type State = ();

    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, info: &ConnInfo) {
        assert_eq!(ctx.peer(conn), Some(info.peer));
        let proxied = ctx.proxied(conn).cloned();
        self.0.lock().unwrap().push(Event::Open(info.peer, proxied));
    }

    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let data = input.take_all();
        self.0.lock().unwrap().push(Event::Data(data.to_vec()));
        let _ = ctx.send(conn, data);
    }

    fn on_close(&mut self, _: &mut Context<'_, Self>, _: ConnId, reason: &CloseReason) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Close(reason.to_string()));
    }

    fn on_refused(
        &mut self,
        _: &mut Context<'_, Self>,
        _: ListenerId,
        peer: &Peer,
        reason: &CloseReason,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Refused(*peer, reason.to_string()));
    }
}

fn start(proxy: ProxyProtocol) -> (Running<Log>, Log, SocketAddr) {
    start_with(Server::builder().listen_proxied("127.0.0.1:0", proxy))
}

fn start_with(builder: dualstack::ServerBuilder) -> (Running<Log>, Log, SocketAddr) {
    let log = Log::default();
    let server = Running::start(builder, log.clone());
    let addr = server.addr(0);
    (server, log, addr)
}

fn client() -> SocketAddr {
    "203.0.113.5:40000".parse().unwrap()
}

/// Whether the server closed `stream` without answering: end of stream or a reset, not the
/// read timeout (which would let a close that never came pass).
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn a_v1_header_makes_the_client_the_peer_and_the_data_after_it_arrives() {
    let (server, log, addr) = start(ProxyProtocol::new());
    let mut balancer = util::connect(addr);
    let header = ProxyHeader::v1(client(), addr);
    // The header and the client's first bytes in one write, as balancers do.
    balancer
        .write_all(&[header.to_bytes(), b"hello".to_vec()].concat())
        .unwrap();
    let mut back = [0; 5];
    balancer.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello", "the echo holds the data, not the header");
    let events = log.wait("the data", |e| e.len() >= 2);
    let Event::Open(peer, Some(proxied)) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(*peer, Peer::Ip(client()));
    assert_eq!(proxied.balancer, Peer::Ip(balancer.local_addr().unwrap()));
    assert_eq!(proxied.header.destination(), Some(addr));
    assert_eq!(events[1], Event::Data(b"hello".to_vec()));
    let stats = server.stop().stats();
    assert_eq!((stats.total.accepted, stats.total.proxy_failed), (1, 0));
}

#[test]
fn a_v2_header_one_byte_at_a_time_with_tlvs_and_a_checksum() {
    let (_server, log, addr) = start(ProxyProtocol::new());
    let mut balancer = util::connect(addr);
    balancer.set_nodelay(true).unwrap();
    let mut ssl = vec![1, 0, 0, 0, 0, proxy_tlv::SSL_VERSION, 0, 7];
    ssl.extend(b"TLSv1.3");
    let header = ProxyHeader::v2(
        "[2001:db8::7]:5555".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
    )
    .with_tlv(proxy_tlv::ALPN, b"h2".to_vec())
    .and_then(|h| h.with_tlv(proxy_tlv::AUTHORITY, b"example.com".to_vec()))
    .and_then(|h| h.with_tlv(proxy_tlv::UNIQUE_ID, b"conn-42".to_vec()))
    .and_then(|h| h.with_tlv(proxy_tlv::SSL, ssl))
    .and_then(|h| h.with_tlv(proxy_tlv::CRC32C, vec![0; 4]))
    .unwrap();
    let mut bytes = header.to_bytes();
    let last = bytes.pop().unwrap();
    for b in bytes {
        balancer.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        log.events().is_empty(),
        "the handler heard of it before the header was in"
    );
    balancer.write_all(&[last]).unwrap();
    assert_eq!(util::round_trip(&mut balancer, b"after"), b"after");
    let events = log.wait("the open", |e| !e.is_empty());
    let Event::Open(peer, Some(proxied)) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(peer.to_string(), "[2001:db8::7]:5555");
    let h = &proxied.header;
    assert_eq!(h.alpn(), Some(&b"h2"[..]));
    assert_eq!(h.authority(), Some(&b"example.com"[..]));
    assert_eq!(h.unique_id(), Some(&b"conn-42"[..]));
    assert_eq!(h.ssl().and_then(|s| s.version()), Some("TLSv1.3"));
}

#[test]
fn mapped_addresses_in_the_header_are_normalized() {
    let (_server, log, addr) = start(ProxyProtocol::new());
    let mut balancer = util::connect(addr);
    balancer
        .write_all(b"PROXY TCP6 ::ffff:203.0.113.5 ::ffff:127.0.0.1 40000 7000\r\n")
        .unwrap();
    assert_eq!(util::round_trip(&mut balancer, b"x"), b"x");
    let events = log.wait("the open", |e| !e.is_empty());
    assert!(
        matches!(&events[0], Event::Open(p, _) if p.to_string() == "203.0.113.5:40000"),
        "{events:?}"
    );
}

#[test]
fn local_and_unknown_keep_the_real_endpoints() {
    let (_server, log, addr) = start(ProxyProtocol::new());
    for header in [
        ProxyHeader::local().to_bytes(),
        b"PROXY UNKNOWN\r\n".to_vec(),
    ] {
        let mut balancer = util::connect(addr);
        balancer.write_all(&header).unwrap();
        assert_eq!(util::round_trip(&mut balancer, b"k"), b"k");
        let me = Peer::Ip(balancer.local_addr().unwrap());
        log.wait("the open", |e| {
            e.iter()
                .any(|e| matches!(e, Event::Open(p, Some(_)) if *p == me))
        });
    }
}

#[test]
fn an_untrusted_peer_is_closed_without_a_byte_read() {
    let (server, log, addr) = start(ProxyProtocol::new().trust(["10.0.0.0/8".parse().unwrap()]));
    let mut spoofer = util::connect(addr);
    // It claims to relay someone; nobody must believe it.
    let _ = spoofer.write_all(&ProxyHeader::v1(client(), addr).to_bytes());
    assert!(closed(&mut spoofer));
    let me = Peer::Ip(spoofer.local_addr().unwrap());
    log.wait("the refusal", |e| !e.is_empty());
    assert_eq!(
        log.events(),
        [Event::Refused(me, "not a trusted PROXY source".into())],
        "no on_open, no on_close"
    );
    let stats = server.stop().stats();
    assert_eq!(stats.total.proxy_untrusted, 1);
    assert_eq!(stats.total.bytes_in, 0, "nothing was read from it");
}

#[test]
fn bad_headers_are_refused_at_once_with_their_reason() {
    let (server, log, addr) = start(ProxyProtocol::new());
    let mut long_line = b"PROXY UNKNOWN ".to_vec();
    long_line.resize(200, b'x');
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "expected a PROXY header",
        ),
        (
            [b"X".as_slice(), &ProxyHeader::local().to_bytes()].concat(),
            "expected a PROXY header",
        ),
        (long_line, "no CRLF within 107 bytes"),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
            "no leading zeros",
        ),
    ];
    let started = Instant::now();
    for (bytes, why) in &cases {
        let mut balancer = util::connect(addr);
        let _ = balancer.write_all(bytes);
        assert!(closed(&mut balancer), "{why}");
        log.wait(why, |e| {
            e.iter()
                .any(|e| matches!(e, Event::Refused(_, r) if r.contains(why)))
        });
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused at once, not at the 5 s header timeout"
    );
    assert!(log.events().iter().all(|e| matches!(e, Event::Refused(..))));
    assert_eq!(server.stop().stats().total.proxy_failed, cases.len() as u64);
}

#[test]
fn a_version_the_listener_does_not_accept_is_refused() {
    let only_v2 = ProxyVersions {
        v1: false,
        v2: true,
    };
    let (_server, log, addr) = start(ProxyProtocol::new().versions(only_v2));
    let mut balancer = util::connect(addr);
    balancer
        .write_all(&ProxyHeader::v1(client(), addr).to_bytes())
        .unwrap();
    assert!(closed(&mut balancer));
    log.wait("the refusal", |e| !e.is_empty());
    assert!(
        log.refusals()[0].contains("accepts only version 2"),
        "{:?}",
        log.events()
    );
}

#[test]
fn silent_and_slow_balancers_meet_the_header_deadline_and_headed_connections_do_not() {
    let (_server, log, addr) =
        start(ProxyProtocol::new().header_timeout(Duration::from_millis(300)));
    // One headed connection first: it must outlive the deadline that the others meet.
    let mut headed = util::connect(addr);
    headed
        .write_all(&ProxyHeader::v1(client(), addr).to_bytes())
        .unwrap();
    assert_eq!(util::round_trip(&mut headed, b"1"), b"1");
    let mut silent = util::connect(addr);
    // A v2 header that announces 65,535 bytes and sends none of them.
    let mut huge = ProxyHeader::local().to_bytes();
    huge[14] = 0xff;
    huge[15] = 0xff;
    let mut announcer = util::connect(addr);
    announcer.write_all(&huge).unwrap();
    let started = Instant::now();
    assert!(closed(&mut silent));
    assert!(closed(&mut announcer));
    let took = started.elapsed();
    // The configured 300 ms, not the 5 s default.
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    log.wait("two refusals", |e| {
        e.iter()
            .filter(
                |e| matches!(e, Event::Refused(_, r) if r == "no complete PROXY header in time"),
            )
            .count()
            == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        util::round_trip(&mut headed, b"2"),
        b"2",
        "the header deadline touched an established connection"
    );
}

#[test]
fn the_per_peer_limit_and_the_first_byte_timeout_apply_to_the_client() {
    let (server, log, addr) = start_with(
        Server::builder()
            .listen_proxied("127.0.0.1:0", ProxyProtocol::new())
            .max_connections_per_peer(1)
            .first_byte_timeout(Duration::from_millis(300)),
    );
    let header = |src: &str| ProxyHeader::v2(src.parse().unwrap(), addr).to_bytes();
    // Two clients behind one balancer address: both served (the limit is per client).
    let mut a = util::connect(addr);
    a.write_all(&[header("203.0.113.5:1"), b"a".to_vec()].concat())
        .unwrap();
    let mut b = util::connect(addr);
    b.write_all(&[header("203.0.113.6:1"), b"b".to_vec()].concat())
        .unwrap();
    let mut one = [0; 1];
    a.read_exact(&mut one).unwrap();
    b.read_exact(&mut one).unwrap();
    // A second connection of the first client is refused, naming the client.
    let mut again = util::connect(addr);
    again.write_all(&header("203.0.113.5:2")).unwrap();
    assert!(closed(&mut again));
    log.wait("the refusal", |e| {
        e.iter().any(|e| {
            matches!(e, Event::Refused(p, r) if p.to_string() == "203.0.113.5:2" && r.contains("its share"))
        })
    });
    // A client that sends its header and nothing more meets the first-byte timeout,
    // counted from the header.
    let mut quiet = util::connect(addr);
    quiet.write_all(&header("203.0.113.7:1")).unwrap();
    assert!(closed(&mut quiet));
    log.wait("the first-byte close", |e| {
        e.iter()
            .any(|e| matches!(e, Event::Close(r) if r == "first-byte timeout"))
    });
    assert_eq!(server.stop().stats().total.refused, 1);
}

#[test]
fn direct_and_proxied_listeners_side_by_side() {
    let (server, log, _) = start_with(
        Server::builder()
            .listen("127.0.0.1:0")
            .listen_proxied("127.0.0.1:0", ProxyProtocol::new()),
    );
    assert!(!server.listeners[0].proxy_protocol && server.listeners[1].proxy_protocol);
    let mut direct = util::connect(server.addr(0));
    // On the direct listener a header is just data: the protocol is never guessed.
    let header = ProxyHeader::v1(client(), server.addr(0)).to_bytes();
    assert_eq!(util::round_trip(&mut direct, &header), header);
    let events = log.wait("the open", |e| !e.is_empty());
    assert_eq!(
        events[0],
        Event::Open(Peer::Ip(direct.local_addr().unwrap()), None)
    );
}

#[test]
fn a_stop_while_a_header_is_awaited_refuses_that_connection() {
    let (server, log, addr) = start(ProxyProtocol::new());
    let mut waiting = util::connect(addr);
    waiting.write_all(b"PROXY TCP4 ").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    server.stop();
    assert!(closed(&mut waiting));
    assert_eq!(log.refusals(), ["server shutdown"]);
}

#[cfg(unix)]
#[test]
fn a_unix_listener_takes_headers_from_any_local_peer() {
    use std::os::unix::net::UnixStream;
    let dir = util::TempDir::new("proxy-unix");
    let path = dir.join("p.sock");
    let (_server, log, _) = {
        let log = Log::default();
        let server = Running::start(
            Server::builder().listen_proxied(
                format!("unix:{}", path.display()),
                ProxyProtocol::new().trust(["10.0.0.0/8".parse().unwrap()]),
            ),
            log.clone(),
        );
        (server, log, ())
    };
    let mut balancer = UnixStream::connect(&path).unwrap();
    balancer.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    balancer
        .write_all(
            &[
                ProxyHeader::v2(client(), "192.0.2.1:443".parse().unwrap()).to_bytes(),
                b"u".to_vec(),
            ]
            .concat(),
        )
        .unwrap();
    let mut one = [0; 1];
    balancer.read_exact(&mut one).unwrap();
    let events = log.wait("the open", |e| !e.is_empty());
    assert!(
        matches!(&events[0], Event::Open(p, Some(_)) if *p == Peer::Ip(client())),
        "{events:?}"
    );
}

/// A handler that pauses reading in `on_open` and resumes 150 ms later, recording whether
/// data came while paused.
#[derive(Clone, Default)]
struct Pauser(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Handler for Pauser {
    type State = ();
    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
        ctx.pause_reading(conn);
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        ctx.set_timer(Duration::from_millis(150), conn.to_string().len() as u64);
        self.0.lock().unwrap().push("open".into());
    }
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: dualstack::TimerId, _: u64) {
        self.1.store(false, std::sync::atomic::Ordering::SeqCst);
        let conns: Vec<ConnId> = ctx.connections().collect();
        for c in conns {
            ctx.resume_reading(c);
        }
        self.0.lock().unwrap().push("resume".into());
    }
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let data = input.take_all();
        let paused = self.1.load(std::sync::atomic::Ordering::SeqCst);
        self.0.lock().unwrap().push(format!(
            "data {} paused={paused}",
            String::from_utf8_lossy(data)
        ));
        let _ = ctx.send(conn, data);
    }
}

/// Review of #17: the bytes that came with the header reached on_data although on_open had
/// paused reading.
#[test]
fn bytes_after_the_header_wait_while_on_open_has_paused_reading() {
    let pauser = Pauser::default();
    let server = Running::start(
        Server::builder().listen_proxied("127.0.0.1:0", ProxyProtocol::new()),
        pauser.clone(),
    );
    let addr = server.addr(0);
    let mut balancer = util::connect(addr);
    balancer
        .write_all(
            &[
                ProxyHeader::v1(client(), addr).to_bytes(),
                b"hello".to_vec(),
            ]
            .concat(),
        )
        .unwrap();
    let mut back = [0; 5];
    balancer.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello", "not lost either");
    assert_eq!(
        *pauser.0.lock().unwrap(),
        ["open", "resume", "data hello paused=false"]
    );
}

/// Review of #17: with an idle timeout shorter than the header timeout, a silent balancer
/// was closed as idle, and counted nowhere.
#[test]
fn a_header_is_late_not_idle_whatever_the_idle_timeout() {
    let (server, log, addr) = start_with(
        Server::builder()
            .listen_proxied(
                "127.0.0.1:0",
                ProxyProtocol::new().header_timeout(Duration::from_millis(300)),
            )
            .idle_timeout(Duration::from_millis(100)),
    );
    let mut silent = util::connect(addr);
    let started = Instant::now();
    assert!(closed(&mut silent));
    // Late by the header's 300 ms: not idle at 100 ms, not the 5 s default.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    log.wait("the refusal", |e| !e.is_empty());
    assert_eq!(log.refusals(), ["no complete PROXY header in time"]);
    let stats = server.stop().stats();
    assert_eq!((stats.total.accepted, stats.total.proxy_failed), (1, 1));
}

/// Issue #17: the header deadline counts from accept, so a balancer that trickles its
/// header (a byte every 100 ms) cannot push it back by being active; and a balancer that
/// leaves with half a header is refused, counted as a failed header.
#[test]
fn a_trickled_header_meets_the_deadline_from_accept_and_half_a_header_is_refused() {
    let (server, log, addr) =
        start(ProxyProtocol::new().header_timeout(Duration::from_millis(400)));
    let header = ProxyHeader::v1(client(), addr).to_bytes();
    let mut trickler = util::connect(addr);
    trickler.set_nodelay(true).unwrap();
    let started = Instant::now();
    for &b in &header {
        // About 4 s for the whole header: ten times the deadline.
        if trickler.write_all(&[b]).is_err() {
            break; // closed: the deadline came
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    log.wait("the refusal", |e| !e.is_empty());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the deadline moved with the trickle: {took:?}"
    );
    assert_eq!(log.refusals(), ["no complete PROXY header in time"]);
    // Half a header, then the balancer leaves.
    let mut leaver = util::connect(addr);
    leaver.write_all(&header[..header.len() / 2]).unwrap();
    drop(leaver);
    log.wait("the second refusal", |e| e.len() == 2);
    assert_eq!(
        log.refusals(),
        ["no complete PROXY header in time", "peer closed"]
    );
    let stats = server.stop().stats();
    assert_eq!((stats.total.accepted, stats.total.proxy_failed), (2, 2));
}

/// A balancer speaks first: a header (and the client's first bytes) there when the
/// connection is accepted is read in the turn that accepts it, `on_open` and `on_data`
/// included (it waited for the next turn's readiness event); an end of stream that came
/// with them is still seen (at the next turn on Linux, where the short read ended this one).
#[test]
fn a_header_there_at_accept_is_read_in_the_accepting_turn() {
    let log = Log::default();
    let mut server = Server::builder()
        .listen_proxied("127.0.0.1:0", ProxyProtocol::new())
        .bind(log.clone())
        .unwrap();
    let addr = server.listeners()[0].local_addr.ip().unwrap();
    let mut balancer = util::connect(addr);
    let mut wire = ProxyHeader::v1(client(), addr).to_bytes();
    wire.extend_from_slice(b"hello");
    balancer.write_all(&wire).unwrap();
    balancer.shutdown(std::net::Shutdown::Write).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while server.stats().total.accepted == 0 {
        assert!(Instant::now() < deadline, "not accepted");
        server.run_once(Some(util::TIMEOUT)).unwrap();
    }
    // (Where a short read proves nothing, as on Windows, the same turn reads on to the
    // end of stream too.)
    let events = log.events();
    assert!(
        matches!(&events[..], [Event::Open(..), Event::Data(d), ..] if d == b"hello"),
        "after the accepting turn: {events:?}"
    );
    while server.stats().total.open > 0 {
        assert!(Instant::now() < deadline, "the end was not seen");
        server.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    let mut echo = Vec::new();
    balancer.read_to_end(&mut echo).unwrap();
    assert_eq!(echo, b"hello");
}
