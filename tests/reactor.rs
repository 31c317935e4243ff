//! The reactor over loopback on both families: echo correctness with many connections,
//! fairness under a flood, stale connection ids, the connection limit, timers, wake-ups,
//! application sources, pausing, and the hard limit on queued output.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack::{
    CloseReason, ConnId, ConnInfo, Context, Handler, Input, SendError, Server, TimerId,
};
use mio::{Interest, Token};
use util::{Recorder, Running, Seen};

#[test]
fn echo_on_many_connections_over_both_families() {
    let server = Running::start(
        Server::builder().listen("localhost:0").listen(":0"),
        Recorder::default(),
    );
    // localhost gives 127.0.0.1 and ::1; ":0" one dual-stack socket reached over both families.
    let targets: Vec<SocketAddr> = vec![
        server.addr(0),
        server.addr(1),
        SocketAddr::from((
            [127, 0, 0, 1],
            server.listeners[2].local_addr.port().unwrap(),
        )),
        server.addr(2),
    ];
    assert!(targets[0].is_ipv4() && targets[1].is_ipv6() && targets[3].is_ipv6());
    let clients: Vec<_> = (0..40u64)
        .map(|i| {
            let target = targets[i as usize % targets.len()];
            std::thread::spawn(move || {
                let mut stream = util::connect(target);
                let data = util::pattern(i, 0, 200_000);
                let mut reader = stream.try_clone().unwrap();
                let expected = data.clone();
                let read = std::thread::spawn(move || {
                    let mut back = vec![0; expected.len()];
                    reader.read_exact(&mut back).expect("read the whole echo");
                    assert!(back == expected, "client {i} via {target}: echo differs");
                });
                for chunk in data.chunks(7_001) {
                    stream.write_all(chunk).unwrap();
                }
                read.join().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    let server = server.stop();
    let stats = server.stats();
    assert_eq!(stats.total.accepted, 40);
    assert_eq!(stats.total.bytes_in, 40 * 200_000);
    assert_eq!(stats.total.bytes_out, 40 * 200_000);
    assert_eq!(stats.total.open, 0);
    assert_eq!(server.handler().send_errors.load(Ordering::SeqCst), 0);
}

#[test]
fn peers_are_normalized_and_local_addresses_resolved_lazily() {
    struct Addrs(Arc<Mutex<Vec<(SocketAddr, SocketAddr)>>>);
    impl Handler for Addrs {
        type State = ();
        fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, info: &ConnInfo) {
            let local = ctx
                .local_addr(conn)
                .expect("local address of an open connection");
            self.0
                .lock()
                .unwrap()
                .push((info.peer.ip().unwrap(), local.ip().unwrap()));
        }
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = Running::start(Server::builder().listen(":0"), Addrs(seen.clone()));
    let port = server.listeners[0].local_addr.port().unwrap();
    let v4 = util::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let v6 = util::connect(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)));
    let deadline = Instant::now() + util::TIMEOUT;
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "connections not reported");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = seen.lock().unwrap().clone();
    got.sort_by_key(|(peer, _)| peer.is_ipv6());
    assert_eq!(
        got[0],
        (v4.local_addr().unwrap(), v4.peer_addr().unwrap()),
        "IPv4 via dual-stack"
    );
    assert!(
        got[0].0.is_ipv4() && got[0].1.is_ipv4(),
        "not normalized: {got:?}"
    );
    assert_eq!(got[1], (v6.local_addr().unwrap(), v6.peer_addr().unwrap()));
}

#[test]
fn a_flooding_peer_does_not_starve_a_ping_pong_peer() {
    let server = Running::start(Server::builder().listen("127.0.0.1:0"), Recorder::default());
    let addr = server.addr(0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The flooder writes as fast as it can and reads its echo back on another thread, so
    // the server always has something to read from it.
    let mut flood = util::connect(addr);
    let mut flood_reader = flood.try_clone().unwrap();
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || {
        let chunk = vec![0x55; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop_w.load(Ordering::SeqCst) && Instant::now() < deadline {
            if flood.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = flood.shutdown(std::net::Shutdown::Write);
    });
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0u64;
        while let Ok(n) = flood_reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut ping = util::connect(addr);
    for i in 0..200u64 {
        let msg = util::pattern(i, 0, 64);
        assert_eq!(util::round_trip(&mut ping, &msg), msg, "ping {i}");
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let flooded = reader.join().unwrap();
    assert!(flooded > 0, "the flood never got an echo");
}

/// With a small read budget, a connection with a lot of data waiting is read in slices, and
/// another connection's data is handled between them rather than after all of it.
#[test]
fn the_read_budget_interleaves_connections() {
    let recorder = Recorder::default();
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .read_buffer_size(1024)
        .read_budget(4096)
        .bind(recorder.clone())
        .unwrap();
    let addr = server.listeners()[0].local_addr.ip().unwrap();
    let mut big = util::connect(addr);
    let mut small = util::connect(addr);
    let turn =
        |server: &mut Server<Recorder>| server.run_once(Some(Duration::from_millis(10))).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while recorder
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Open(..)))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline);
        turn(&mut server);
    }
    let opened: Vec<ConnId> = recorder
        .seen()
        .iter()
        .filter_map(|s| match s {
            Seen::Open(id, _) => Some(*id),
            _ => None,
        })
        .collect();
    big.write_all(&[1; 64 * 1024]).unwrap();
    small.write_all(b"hi").unwrap();
    std::thread::sleep(Duration::from_millis(50)); // both arrive before the next poll
    let mut got = 0;
    while got < 64 * 1024 + 2 {
        assert!(Instant::now() < deadline, "not everything was read");
        turn(&mut server);
        got = recorder
            .seen()
            .iter()
            .map(|s| match s {
                Seen::Data(_, n) => *n,
                _ => 0,
            })
            .sum();
    }
    let order: Vec<ConnId> = recorder
        .seen()
        .iter()
        .filter_map(|s| match s {
            Seen::Data(id, _) => Some(*id),
            _ => None,
        })
        .collect();
    let small_at = order
        .iter()
        .position(|id| *id != order[0])
        .expect("both connections read");
    let last_big = order.iter().rposition(|id| *id == order[0]).unwrap();
    assert!(
        small_at < last_big,
        "the second connection waited for all 64 KiB of the first: {order:?}"
    );
    assert!(opened.contains(&order[0]));
}

#[test]
fn a_stale_id_never_reaches_the_connection_that_reused_its_slot() {
    /// Records opens and closes; on a wake-up, uses the id of the first connection.
    #[derive(Default)]
    struct Stale {
        opened: Vec<ConnId>,
        closed: usize,
        stale_send: Option<Result<(), SendError>>,
    }
    impl Handler for Stale {
        type State = ();
        fn on_open(&mut self, _: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
            self.opened.push(conn);
        }
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
        fn on_close(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &CloseReason) {
            self.closed += 1;
        }
        fn on_wake(&mut self, ctx: &mut Context<'_, Self>) {
            let old = self.opened[0];
            self.stale_send = Some(ctx.send(old, b"not for you"));
            ctx.close(old);
            ctx.pause_reading(old);
            assert!(!ctx.is_open(old));
            assert_eq!(ctx.peer_addr(old), None);
            assert_eq!(ctx.queued(old), 0);
        }
    }
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(Stale::default())
        .unwrap();
    let addr = server.listeners()[0].local_addr.ip().unwrap();
    let step = |server: &mut Server<Stale>, what: &str, done: &dyn Fn(&Stale) -> bool| {
        let deadline = Instant::now() + util::TIMEOUT;
        while !done(server.handler()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
    };
    let first = util::connect(addr);
    step(&mut server, "the first open", &|h| h.opened.len() == 1);
    drop(first);
    step(&mut server, "the first close", &|h| h.closed == 1);
    let mut second = util::connect(addr);
    step(&mut server, "the second open", &|h| h.opened.len() == 2);
    let (old, new) = (server.handler().opened[0], server.handler().opened[1]);
    assert_eq!(
        old.to_string().split('.').next(),
        new.to_string().split('.').next(),
        "the slot is reused"
    );
    assert_ne!(old, new);

    server.handle().wake().unwrap();
    step(&mut server, "the wake-up", &|h| h.stale_send.is_some());
    assert_eq!(server.handler().stale_send, Some(Err(SendError::Closed)));
    assert_eq!(
        server.stats().total.open,
        1,
        "the stale close reached the live connection"
    );
    for _ in 0..5 {
        server.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    second
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0; 16];
    assert!(
        second.read(&mut buf).is_err(),
        "the stale send reached the live connection"
    );
}

#[test]
fn max_connections_makes_new_clients_wait_in_the_backlog() {
    let recorder = Recorder::default();
    let server = Running::start(
        Server::builder().listen("127.0.0.1:0").max_connections(2),
        recorder.clone(),
    );
    let addr = server.addr(0);
    let mut a = util::connect(addr);
    let mut b = util::connect(addr);
    assert_eq!(util::round_trip(&mut a, b"a"), b"a");
    assert_eq!(util::round_trip(&mut b, b"b"), b"b");
    // The third connects (the kernel completes the handshake) but is not accepted.
    let mut c = util::connect(addr);
    c.write_all(b"c").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 1];
    assert!(
        c.read(&mut buf).is_err(),
        "a third connection was served beyond the limit"
    );
    assert_eq!(
        recorder
            .seen()
            .iter()
            .filter(|s| matches!(s, Seen::Open(..)))
            .count(),
        2
    );
    drop(a);
    c.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    c.read_exact(&mut buf).expect("served once a slot freed");
    assert_eq!(&buf, b"c");
}

#[test]
fn timers_wake_ups_and_application_sources_reach_the_handler() {
    #[derive(Default)]
    struct App {
        log: Vec<String>,
        udp: Option<mio::net::UdpSocket>,
        cancelled: Option<TimerId>,
    }
    impl Handler for App {
        type State = ();
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
        fn on_wake(&mut self, ctx: &mut Context<'_, Self>) {
            self.log.push("wake".into());
            ctx.set_timer(Duration::from_millis(20), 7);
            self.cancelled = Some(ctx.set_timer(Duration::from_millis(10), 8));
            assert!(ctx.cancel_timer(self.cancelled.unwrap()));
        }
        fn on_timer(&mut self, _: &mut Context<'_, Self>, _: TimerId, value: u64) {
            self.log.push(format!("timer {value}"));
        }
        fn on_event(&mut self, _: &mut Context<'_, Self>, token: Token, event: &mio::event::Event) {
            let mut buf = [0; 64];
            let udp = self.udp.as_ref().unwrap();
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                self.log.push(format!("udp {} {:?}", token.0, &buf[..n]));
                udp.send_to(b"pong", from).unwrap();
            }
            assert!(event.is_readable());
        }
    }
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(App::default())
        .unwrap();
    let mut udp = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let udp_addr = udp.local_addr().unwrap();
    server
        .register(&mut udp, Token(42), Interest::READABLE)
        .unwrap();
    let err = server
        .register(
            &mut mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            Token(usize::MAX),
            Interest::READABLE,
        )
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    // The error names the token given.
    assert!(err.to_string().contains(&usize::MAX.to_string()), "{err}");
    server.handler_mut().udp = Some(udp);

    let handle = server.handle();
    std::thread::spawn(move || handle.wake().unwrap())
        .join()
        .unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"ping", udp_addr).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while server.handler().log.len() < 3 {
        assert!(Instant::now() < deadline, "log: {:?}", server.handler().log);
        server.run_once(Some(Duration::from_millis(50))).unwrap();
    }
    let mut log = server.handler().log.clone();
    log.sort();
    assert_eq!(log, ["timer 7", "udp 42 [112, 105, 110, 103]", "wake"]);
    client.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let mut buf = [0; 8];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
}

#[test]
fn paused_reading_loses_nothing_and_resumes() {
    /// Pauses each connection at its first byte and resumes it 150 ms later.
    struct Pauser {
        got: Vec<u8>,
        paused_at: Option<Instant>,
        resumed_at: Option<Instant>,
    }
    impl Handler for Pauser {
        type State = ();
        fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
            let data = input.take_all();
            self.got.extend_from_slice(data);
            if self.paused_at.is_none() {
                self.paused_at = Some(Instant::now());
                ctx.pause_reading(conn);
                ctx.set_timer(Duration::from_millis(150), 0);
            }
        }
        fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: TimerId, _: u64) {
            self.resumed_at = Some(Instant::now());
            let conns: Vec<ConnId> = ctx.connections().collect();
            for conn in conns {
                ctx.resume_reading(conn);
            }
        }
    }
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .read_buffer_size(16)
        .bind(Pauser {
            got: Vec::new(),
            paused_at: None,
            resumed_at: None,
        })
        .unwrap();
    let mut client = util::connect(server.listeners()[0].local_addr.ip().unwrap());
    let data = util::pattern(3, 0, 10_000);
    client.write_all(&data).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while server.handler().got.len() < data.len() {
        assert!(
            Instant::now() < deadline,
            "got {} of {}",
            server.handler().got.len(),
            data.len()
        );
        server.run_once(Some(Duration::from_millis(10))).unwrap();
        if server.handler().resumed_at.is_none() {
            assert!(server.handler().got.len() <= 16, "read while paused");
        }
    }
    assert_eq!(server.handler().got, data);
}

#[test]
fn sending_beyond_the_hard_limit_is_refused_not_queued() {
    struct Pusher(Vec<Result<(), SendError>>, usize);
    impl Handler for Pusher {
        type State = ();
        fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
            // The client never reads: the kernel takes a few hundred KiB, the rest queues.
            for _ in 0..64 {
                let r = ctx.send(conn, &[9; 64 * 1024]);
                self.0.push(r);
            }
            self.1 = ctx.queued(conn);
        }
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .water_marks(64 * 1024, 256 * 1024)
        .max_queued(1024 * 1024)
        .bind(Pusher(Vec::new(), 0))
        .unwrap();
    let _client = util::connect_small_window(server.listeners()[0].local_addr.ip().unwrap());
    while server.handler().0.is_empty() {
        server.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    let results = &server.handler().0;
    let first_full = results
        .iter()
        .position(|r| r.is_err())
        .expect("4 MiB cannot all fit");
    assert!(results[..first_full].iter().all(|r| r.is_ok()));
    for r in &results[first_full..] {
        assert!(
            matches!(r, Err(SendError::QueueFull { limit: 1048576, .. })),
            "{r:?}"
        );
    }
    assert!(
        server.handler().1 <= 1024 * 1024,
        "queued {} bytes",
        server.handler().1
    );
}

/// A burst of new clients is accepted a slice per turn, so a stop (or a timer, or open
/// connections) is not held up until the backlog is empty.
#[test]
fn accepting_is_budgeted_per_turn() {
    #[derive(Default)]
    struct Count(usize, Vec<usize>);
    impl Handler for Count {
        type State = ();
        fn on_open(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &ConnInfo) {
            self.0 += 1;
        }
        fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
    }
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .listen_config(dualstack::ListenConfig::new().backlog(1024))
        .bind(Count::default())
        .unwrap();
    let addr = server.listeners()[0].local_addr.ip().unwrap();
    let _clients: Vec<TcpStream> = (0..300).map(|_| util::connect(addr)).collect();
    let deadline = Instant::now() + util::TIMEOUT;
    while server.handler().0 < 300 {
        assert!(
            Instant::now() < deadline,
            "accepted {} of 300",
            server.handler().0
        );
        server.run_once(Some(Duration::from_millis(10))).unwrap();
        let opened = server.handler().0;
        server.handler_mut().1.push(opened);
    }
    let per_turn: Vec<usize> = server.handler().1.windows(2).map(|w| w[1] - w[0]).collect();
    let first = server.handler().1[0];
    assert!(
        first <= 128 && per_turn.iter().all(|n| *n <= 128),
        "accepted per turn: {first}, {per_turn:?}"
    );
    assert!(
        server.handler().1.len() >= 3,
        "300 clients took fewer than 3 turns"
    );
}

#[test]
fn the_handle_crosses_threads_and_the_server_moves_to_one() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync_clone::<dualstack::ServerHandle>();
    assert_send::<Server<Recorder>>();
}
