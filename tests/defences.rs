//! Defences against hostile peers, one loopback smoke test each: a per-peer connection
//! limit, a first-byte timeout, and a cap on total queued output. Each test fails without
//! its defence; the rules themselves are unit-tested without sockets, with made-up instants
//! (`src/reactor/{peers,deadlines,output}.rs`).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack::{CloseReason, ConnId, ConnInfo, Context, Handler, Input, Server};
use util::{Recorder, Running};

/// A client bound to a chosen loopback source address before connecting.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    // A plain connect (loopback answers at once): connect_timeout polls for the result, and
    // under Wine a server that closes at once (the refusal tested here) makes that poll see
    // a hang-up with no error, which socket2 reports as a failed connect.
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    stream
}

/// Whether the server closed `stream` (end of stream or reset) rather than serving it.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"?");
    let mut buf = [0; 1];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn one_peer_cannot_take_every_slot() {
    let server = Running::start(
        Server::builder()
            .listen("127.0.0.1:0")
            .max_connections_per_peer(3),
        Recorder::default(),
    );
    let addr = server.addr(0);
    let mut greedy: Vec<TcpStream> = (0..5).map(|_| connect_from("127.0.0.1", addr)).collect();
    let mut served = 0;
    let mut refused = 0;
    for c in &mut greedy {
        if closed_by_server(c) {
            refused += 1;
        } else {
            served += 1;
        }
    }
    assert_eq!(
        (served, refused),
        (3, 2),
        "127.0.0.1 got more than its share"
    );
    // Another host is not affected...
    let mut other = connect_from("127.0.0.2", addr);
    assert_eq!(util::round_trip(&mut other, b"hi"), b"hi");
    // ...and the greedy host gets a slot back when one of its connections closes.
    greedy.clear();
    let deadline = Instant::now() + util::TIMEOUT;
    loop {
        let mut again = connect_from("127.0.0.1", addr);
        if !closed_by_server(&mut again) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slots of closed connections were not given back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = server.stop().stats();
    assert!(stats.total.refused >= 2, "{stats:?}");
    // Refused connections were accepted (and closed at once): counted in both.
    assert!(stats.total.accepted >= stats.total.refused + 4, "{stats:?}");
}

#[test]
fn silent_peers_are_closed_after_the_first_byte_timeout() {
    let recorder = Recorder::default();
    let server = Running::start(
        Server::builder()
            .listen("127.0.0.1:0")
            .first_byte_timeout(Duration::from_millis(200)),
        recorder.clone(),
    );
    let started = Instant::now();
    let mut silent = util::connect(server.addr(0));
    let mut talker = util::connect(server.addr(0));
    assert_eq!(util::round_trip(&mut talker, b"hello"), b"hello");
    let mut buf = [0; 1];
    assert_eq!(
        silent.read(&mut buf).unwrap_or(0),
        0,
        "the silent peer was never closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed, but late: {:?}",
        started.elapsed()
    );
    recorder.wait_for("the close", |s| {
        s.iter().any(|e| matches!(e, util::Seen::Close(..)))
    });
    assert_eq!(recorder.closes(), ["first-byte timeout"]);
    // Having sent a byte, the talker is not subject to it any more (the rule itself, with a
    // virtual clock: reactor/deadlines.rs).
    assert_eq!(util::round_trip(&mut talker, b"still"), b"still");
}

/// Queues `each` bytes for every client as it connects; records close reasons and the total
/// queued output it saw after each send.
struct Hoarder {
    each: usize,
    closes: Arc<Mutex<Vec<(ConnId, String)>>>,
    peak_total: Arc<Mutex<usize>>,
    opened: Arc<Mutex<Vec<ConnId>>>,
}

impl Handler for Hoarder {
    type State = ();
    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
        self.opened.lock().unwrap().push(conn);
        let chunk = vec![7u8; 64 * 1024];
        let mut left = self.each;
        while left > 0 {
            let n = left.min(chunk.len());
            if ctx.send(conn, &chunk[..n]).is_err() {
                break;
            }
            left -= n;
            let mut peak = self.peak_total.lock().unwrap();
            *peak = (*peak).max(ctx.stats().queued);
        }
    }
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let data = input.take_all();
        let _ = ctx.send(conn, data);
    }
    fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, reason: &CloseReason) {
        self.closes.lock().unwrap().push((conn, reason.to_string()));
    }
}

#[test]
fn total_queued_output_stays_under_its_cap_by_closing_the_biggest_holders() {
    // The kernel takes up to a few MiB per socket itself (send buffer autotuning), so each
    // hoarder gets 6 MiB: several are queued in the server, and two pass the cap together.
    const CAP: usize = 3 * 1024 * 1024;
    let closes = Arc::new(Mutex::new(Vec::new()));
    let peak = Arc::new(Mutex::new(0));
    let opened = Arc::new(Mutex::new(Vec::new()));
    let server = Running::start(
        Server::builder()
            .listen("127.0.0.1:0")
            .max_queued(16 * 1024 * 1024)
            .water_marks(0, CAP)
            .max_total_queued(CAP),
        Hoarder {
            each: 6 * 1024 * 1024,
            closes: closes.clone(),
            peak_total: peak.clone(),
            opened: opened.clone(),
        },
    );
    let addr = server.addr(0);
    // Three peers that never read: each is within its own limit, together they are not.
    let mut sleepers = Vec::new();
    for i in 0..3 {
        sleepers.push(util::connect_small_window(addr));
        let deadline = Instant::now() + util::TIMEOUT;
        while opened.lock().unwrap().len() < i + 1 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(
        *peak.lock().unwrap() <= CAP,
        "total queued reached {} bytes",
        peak.lock().unwrap()
    );
    let closed: Vec<(ConnId, String)> = closes.lock().unwrap().clone();
    assert!(
        !closed.is_empty(),
        "nothing was shed: the test did not reach the cap"
    );
    assert!(
        closed
            .iter()
            .all(|(_, r)| r == "closed to bound total queued output"),
        "{closed:?}"
    );
    // The first sleepers held the most when the cap was reached: they are the ones shed.
    let first = opened.lock().unwrap()[0];
    assert!(
        closed.iter().any(|(id, _)| *id == first),
        "shed {closed:?}, not the biggest holder {first}"
    );
    // A well-behaved client is served throughout.
    let mut reader = util::connect(addr);
    let mut greeting = vec![0; 6 * 1024 * 1024];
    reader
        .read_exact(&mut greeting)
        .expect("its own output, in full");
    assert_eq!(util::round_trip(&mut reader, b"ok"), b"ok");
}

/// Sends one block to each client as it connects: `sizes[i]` bytes to the i-th, with the
/// server's send buffer `buffers[i]` bytes; records what stayed queued after each send and
/// every close.
struct Blocks {
    sizes: [usize; 2],
    buffers: [usize; 2],
    opened: Arc<Mutex<Vec<(ConnId, usize)>>>,
    closes: Arc<Mutex<Vec<(ConnId, String)>>>,
}

impl Handler for Blocks {
    type State = ();
    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, _: &ConnInfo) {
        let i = self.opened.lock().unwrap().len().min(1);
        if let Some(socket) = ctx.socket(conn) {
            socket.set_send_buffer_size(self.buffers[i]).unwrap();
        }
        ctx.send(conn, &vec![b'a' + i as u8; self.sizes[i]])
            .expect("within every limit");
        let queued = ctx.queued(conn);
        self.opened.lock().unwrap().push((conn, queued));
    }
    fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, input: &mut Input<'_>) {
        input.take_all();
    }
    fn on_close(&mut self, _: &mut Context<'_, Self>, conn: ConnId, reason: &CloseReason) {
        self.closes.lock().unwrap().push((conn, reason.to_string()));
    }
}

/// A large send into an empty queue leaves from the handler's slice, so under
/// `max_total_queued` it needs room only for what the kernel leaves of it: a peer that
/// reads takes it all, and nobody else is shed for bytes that were never queued. (Other
/// connections were closed to make room for the whole send before it was written.)
#[test]
fn a_large_send_the_kernel_takes_sheds_nobody_under_the_total_cap() {
    const CAP: usize = 256 * 1024;
    const SLEEPER: usize = 200 * 1024;
    const READER: usize = 96 * 1024;
    let opened = Arc::new(Mutex::new(Vec::new()));
    let closes = Arc::new(Mutex::new(Vec::new()));
    let server = Running::start(
        Server::builder()
            .listen("127.0.0.1:0")
            .max_total_queued(CAP),
        Blocks {
            sizes: [SLEEPER, READER],
            // The sleeper's kernel takes little, the reader's all of its block.
            buffers: [4096, 4 * 1024 * 1024],
            opened: opened.clone(),
            closes: closes.clone(),
        },
    );
    let addr = server.addr(0);
    let wait_opened = |n: usize| {
        let deadline = Instant::now() + util::TIMEOUT;
        while opened.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{n} connections were not opened");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let mut sleeper = util::connect_small_window(addr);
    wait_opened(1);
    let held = opened.lock().unwrap()[0].1;
    assert!(
        held + READER > CAP,
        "the sleeper holds {held} bytes: the reader's block fits beside it, nothing to show"
    );
    let mut reader = util::connect(addr);
    wait_opened(2);
    assert_eq!(
        opened.lock().unwrap()[1].1,
        0,
        "the kernel did not take the reader's whole block: nothing to show"
    );
    let mut block = vec![0; READER];
    reader.read_exact(&mut block).unwrap();
    assert!(block.iter().all(|&b| b == b'b'));
    // The sleeper was not shed: everything it was sent arrives once it reads.
    let mut block = vec![0; SLEEPER];
    sleeper.read_exact(&mut block).unwrap();
    assert!(block.iter().all(|&b| b == b'a'));
    assert_eq!(*closes.lock().unwrap(), []);
}
