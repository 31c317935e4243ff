//! Bounded helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts one connection on a non-blocking mio listener, waiting at most [`TIMEOUT`].
#[track_caller]
pub fn accept(listener: &mut mio::net::TcpListener) -> (mio::net::TcpStream, SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok(pair) => return pair,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("accept on {:?} failed: {e}", listener.local_addr()),
        }
    }
}

/// The one IP socket address `addr` names (a `SocketAddr`, or the `ListenAddr` of a TCP
/// listener).
#[track_caller]
pub fn ip(addr: impl std::net::ToSocketAddrs + std::fmt::Debug) -> SocketAddr {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("{addr:?} is not an IP socket address"))
}

/// Connects to `addr` with a bounded timeout.
#[track_caller]
pub fn connect(addr: impl std::net::ToSocketAddrs + std::fmt::Debug) -> TcpStream {
    let addr = ip(addr);
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} failed: {e}"));
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("set write timeout");
    stream
}

/// Whether this host has IPv6 on its loopback (a socket can bind `[::1]`).
pub fn has_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Whether a TCP connection to `addr` is refused (or otherwise fails) within the timeout.
pub fn cannot_connect(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, TIMEOUT).is_err()
}

/// Sends `data` on `stream` and reads back exactly as many bytes.
#[track_caller]
pub fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read the echo");
    back
}

/// A deterministic, varied byte pattern: `len` bytes of stream `seed` from `start`
/// (`dualstack_support::Pattern`, the one the soak and the bench verify with).
pub fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    static PATTERN: std::sync::OnceLock<dualstack_support::Pattern> = std::sync::OnceLock::new();
    PATTERN
        .get_or_init(dualstack_support::Pattern::default)
        .bytes(seed, start, len)
}

/// A server running on its own thread; stopped and joined on drop.
pub struct Running<H: dualstack::Handler + Send + 'static>
where
    H::State: Send,
{
    pub handle: dualstack::ServerHandle,
    pub listeners: Vec<dualstack::ListenerInfo>,
    thread: Option<std::thread::JoinHandle<dualstack::Server<H>>>,
}

impl<H: dualstack::Handler + Send + 'static> Running<H>
where
    H::State: Send,
{
    #[track_caller]
    pub fn start(builder: dualstack::ServerBuilder, handler: H) -> Running<H> {
        let mut server = builder.bind(handler).expect("bind the test server");
        let handle = server.handle();
        let listeners = server.listeners();
        let thread = std::thread::spawn(move || {
            server.run().expect("the server loop failed");
            server
        });
        Running {
            handle,
            listeners,
            thread: Some(thread),
        }
    }

    /// The IP address a client connects to for listener `i` (a TCP listener).
    #[track_caller]
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.listeners[i]
            .connect_addr()
            .ip()
            .expect("a TCP listener")
    }

    /// Stops the server and returns it once `run` has returned (within [`TIMEOUT`] plus the
    /// server's shutdown timeout).
    #[track_caller]
    pub fn stop(mut self) -> dualstack::Server<H> {
        self.handle.stop();
        let thread = self.thread.take().expect("running");
        let deadline = Instant::now() + TIMEOUT * 3;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the server did not stop in time");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("the server thread panicked")
    }
}

impl<H: dualstack::Handler + Send + 'static> Drop for Running<H>
where
    H::State: Send,
{
    /// Stops the server and joins it, but never waits longer than the timeout: a test
    /// that failed because the server hung must fail, not hang.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let deadline = Instant::now() + TIMEOUT * 3;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            // A server that panicked, or hung past its stop, fails the test that dropped it
            // (unless that test is failing already: a second panic would abort).
            if std::thread::panicking() {
                return;
            }
            assert!(
                thread.is_finished(),
                "the server did not stop within {:?}",
                TIMEOUT * 3
            );
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// What a [`Recorder`] saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Open(dualstack::ConnId, dualstack::Peer),
    Data(dualstack::ConnId, usize),
    PeerClosed(dualstack::ConnId),
    Close(dualstack::ConnId, String),
}

/// An echo handler that records every callback, for tests to inspect.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    /// The most bytes ever queued for one connection right after an echo.
    pub max_queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Sends that failed (an echo server must never lose bytes).
    pub send_errors: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what was seen, or fails after [`TIMEOUT`].
    #[track_caller]
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let seen = self.seen();
            if pred(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; seen: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The close reasons seen, as text.
    pub fn closes(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Close(_, r) => Some(r),
                _ => None,
            })
            .collect()
    }
}

impl dualstack::Handler for Recorder {
    type State = ();
    fn on_open(
        &mut self,
        _: &mut dualstack::Context<'_, Self>,
        conn: dualstack::ConnId,
        info: &dualstack::ConnInfo,
    ) {
        self.seen.lock().unwrap().push(Seen::Open(conn, info.peer));
    }

    fn on_data(
        &mut self,
        ctx: &mut dualstack::Context<'_, Self>,
        conn: dualstack::ConnId,
        input: &mut dualstack::Input<'_>,
    ) {
        let data = input.take_all();
        self.seen.lock().unwrap().push(Seen::Data(conn, data.len()));
        if ctx.send(conn, data).is_err() {
            self.send_errors
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.max_queued
            .fetch_max(ctx.queued(conn), std::sync::atomic::Ordering::SeqCst);
    }

    fn on_peer_closed(&mut self, ctx: &mut dualstack::Context<'_, Self>, conn: dualstack::ConnId) {
        self.seen.lock().unwrap().push(Seen::PeerClosed(conn));
        ctx.close_after_flush(conn);
    }

    fn on_close(
        &mut self,
        _: &mut dualstack::Context<'_, Self>,
        conn: dualstack::ConnId,
        reason: &dualstack::CloseReason,
    ) {
        self.seen
            .lock()
            .unwrap()
            .push(Seen::Close(conn, reason.to_string()));
    }
}

/// Connects with a small receive buffer (set before the handshake, so the window stays
/// small): the server's kernel then takes little, and the server has to queue.
#[track_caller]
pub fn connect_small_window(addr: impl std::net::ToSocketAddrs + std::fmt::Debug) -> TcpStream {
    let addr = ip(addr);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("client socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set read timeout");
    stream
}

/// A resolver with a fixed answer, so tests never depend on DNS or /etc/hosts.
pub struct Fixed(pub &'static [&'static str]);

impl dualstack::Resolve for Fixed {
    fn resolve(&self, _name: &dualstack::HostName) -> io::Result<Vec<std::net::IpAddr>> {
        Ok(self.0.iter().map(|s| s.parse().unwrap()).collect())
    }
}

/// A fresh directory under the system temp dir, removed (with what is in it) on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A new empty directory whose name has `tag`, this process's id and a counter.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ds-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create a temp dir");
        TempDir(path)
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the tests of TCP listening need from a `Listener`: its IP address and its mio
/// listener (the library's own methods return `ListenAddr` and an `Option`, since a listener
/// may be a Unix one).
pub trait Tcp {
    /// The listener's IP socket address.
    fn tcp_addr(&self) -> SocketAddr;
    /// The mio TCP listener inside.
    fn as_mio(&mut self) -> &mut mio::net::TcpListener;
}

impl Tcp for dualstack::Listener {
    #[track_caller]
    fn tcp_addr(&self) -> SocketAddr {
        self.local_addr().ip().expect("a TCP listener")
    }

    #[track_caller]
    fn as_mio(&mut self) -> &mut mio::net::TcpListener {
        self.as_tcp().expect("a TCP listener")
    }
}

/// The path of example `name`, freshly built: `cargo test --test X` alone does not rebuild
/// the examples, and a stale binary would test old code, so cargo is asked once per test
/// binary (a no-op when they are fresh), for the profile and target this test was built
/// for (read from where it runs: `target[/TRIPLE]/PROFILE/deps/TEST`).
pub fn example(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target[/TRIPLE]/PROFILE/deps/TEST");
    BUILT.call_once(|| {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "--examples"]);
        match profile_dir.file_name().and_then(|p| p.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cargo.arg("--release");
            }
            Some(other) => {
                cargo.args(["--profile", other]);
            }
        }
        // target/TRIPLE/PROFILE when built with --target: a directory named like a triple
        // of this architecture holds the profile directory.
        if let Some(triple) = profile_dir
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|t| t.to_str())
            .filter(|t| t.starts_with(std::env::consts::ARCH) && t.contains('-'))
        {
            cargo.args(["--target", triple]);
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build --examples failed");
    });
    profile_dir.join("examples").join(name)
}

/// Whether this test runs under Wine (which sets WINELOADER in every process it starts),
/// for the few facts Wine does not emulate as Windows has them.
pub fn under_wine() -> bool {
    cfg!(windows) && std::env::var_os("WINELOADER").is_some()
}
