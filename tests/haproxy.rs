//! PROXY protocol headers from real senders nobody here wrote: HAProxy (Debian's, `mode
//! tcp`, `send-proxy` and `send-proxy-v2` with `proxy-v2-options crc32c,unique-id`, health
//! checks on) in front of the echo and chat examples and of an in-process server, on both
//! families and through a `v4v6` frontend, and in front of a TLS listener (PROXY, then
//! the client's own TLS); and `curl --haproxy-protocol`.
//!
//! A test skips with one line where the machine lacks `haproxy` or `curl`
//! (`dualstack_support::Tool`); `.ci/run` installs them and requires them. Linux only: HAProxy is
//! run as a Linux program beside the test (tests/proxy.rs covers the protocol everywhere).

#![cfg(target_os = "linux")]

#[path = "util/pki.rs"]
mod pki;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack::{
    CloseReason, ConnId, ConnInfo, Context, Handler, Input, Peer, ProxyCommand, ProxyProtocol,
    ProxyVersion, Server,
};
use dualstack_support::Tool;
use util::TempDir;

/// A child process, killed (by the PID we started) when dropped; its stderr lines.
struct Process {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: mpsc::Receiver<String>,
}

impl Process {
    fn start(mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?} (is it installed?): {e}"));
        let lines = |out: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Process {
            child,
            stderr,
            stdout,
        }
    }

    /// Everything on stderr so far.
    fn stderr_now(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An example server started with `args`; the port of its first listener.
fn example(name: &str, args: &[&str]) -> (Process, u16) {
    let mut command = Command::new(util::example(name));
    command.args(args).env(
        "RUST_LOG",
        std::env::var("EXAMPLE_LOG").unwrap_or("warn".into()),
    );
    let p = Process::start(command);
    let line = p
        .stdout
        .recv_timeout(util::TIMEOUT)
        .expect("the example's listening line");
    let port = dualstack_support::parse_listening_line(&line)
        .unwrap_or_else(|| panic!("{line}"))
        .0
        .port();
    (p, port)
}

/// A port free on both loopbacks right now (HAProxy needs numbers).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if TcpListener::bind(("::1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// The frontends HAProxy gets in these tests.
struct Frontends {
    /// `send-proxy` (v1), bound on 127.0.0.1 and [::1].
    v1: u16,
    /// `send-proxy-v2` with CRC32c and the unique id (`%ci:%cp`), on 127.0.0.1 and [::1].
    v2: u16,
    /// `send-proxy-v2` from a `:::P v4v6` frontend: IPv4 clients arrive as `::ffff:…`.
    v4v6: u16,
}

/// HAProxy in front of a server at 127.0.0.1:`backend`, health checks every 200 ms, ready
/// once each frontend accepts.
fn haproxy(dir: &TempDir, backend: u16) -> (Process, Frontends) {
    let f = Frontends {
        v1: free_port(),
        v2: free_port(),
        v4v6: free_port(),
    };
    let config = format!(
        "global\n\
         \x20   log stderr format raw local0 notice\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 10s\n\
         \x20   timeout server 10s\n\
         frontend v1\n\
         \x20   bind 127.0.0.1:{v1}\n\
         \x20   bind [::1]:{v1} v6only\n\
         \x20   default_backend v1\n\
         frontend v2\n\
         \x20   bind 127.0.0.1:{v2}\n\
         \x20   bind [::1]:{v2} v6only\n\
         \x20   unique-id-format %ci:%cp\n\
         \x20   default_backend v2\n\
         frontend v4v6\n\
         \x20   bind :::{v4v6} v4v6\n\
         \x20   default_backend v2\n\
         backend v1\n\
         \x20   server s 127.0.0.1:{backend} send-proxy check inter 200\n\
         backend v2\n\
         \x20   server s 127.0.0.1:{backend} send-proxy-v2 proxy-v2-options crc32c,unique-id check inter 200\n",
        v1 = f.v1,
        v2 = f.v2,
        v4v6 = f.v4v6,
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new("haproxy");
    command.arg("-f").arg(&path).arg("-db");
    let p = Process::start(command);
    let deadline = Instant::now() + util::TIMEOUT;
    for port in [f.v1, f.v2, f.v4v6] {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not start: {:?}",
                p.stderr_now()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (p, f)
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))
}

#[test]
fn echo_behind_haproxy_v1_and_v2_on_both_families_with_health_checks() {
    if !Tool::HAPROXY.usable() {
        return;
    }
    let dir = TempDir::new("haproxy-echo");
    let (mut echo, port) = example("echo", &["--proxy-protocol", "127.0.0.1:0"]);
    let (proxy, f) = haproxy(&dir, port);
    for addr in [
        v4(f.v1),
        v6(f.v1),
        v4(f.v2),
        v6(f.v2),
        v4(f.v4v6),
        v6(f.v4v6),
    ] {
        let mut client = util::connect(addr);
        let data = util::pattern(addr.port() as u64, 0, 100_000);
        let writer = {
            let mut client = client.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || client.write_all(&data))
        };
        let mut back = vec![0; data.len()];
        client.read_exact(&mut back).unwrap();
        writer.join().unwrap().unwrap();
        assert!(back == data, "through {addr}: the echo differs");
    }
    // Health checks (a LOCAL header or a PROXY line, then a reset) keep coming every 200 ms:
    // the server stays UP, and nothing goes wrong in the example.
    std::thread::sleep(Duration::from_millis(800));
    let problems = proxy.stderr_now();
    assert!(
        !problems.iter().any(|l| l.contains("DOWN")),
        "haproxy marked the server down: {problems:?}"
    );
    assert!(
        echo.child.try_wait().unwrap().is_none(),
        "the example exited"
    );
    let logged = echo.stderr_now();
    assert!(logged.iter().all(|l| !l.contains("ERROR")), "{logged:?}");
    drop(proxy);
    let _ = echo.child.kill();
}

/// Reads chat lines until one contains `what`.
fn read_until(reader: &mut BufReader<TcpStream>, what: &str) -> String {
    let deadline = Instant::now() + util::TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        if let Err(e) = reader.read_line(&mut line) {
            panic!("no line with {what} ({e}); seen {seen:?}");
        }
        if line.contains(what) {
            return line.trim_end().to_owned();
        }
        seen.push(line);
        assert!(
            Instant::now() < deadline,
            "no line with {what}; seen {seen:?}"
        );
    }
}

#[test]
fn chat_behind_haproxy_shows_each_clients_own_address() {
    if !Tool::HAPROXY.usable() {
        return;
    }
    let dir = TempDir::new("haproxy-chat");
    let (chat, port) = example("chat", &["--proxy-protocol", "127.0.0.1:0"]);
    let (proxy, f) = haproxy(&dir, port);
    let watcher = util::connect(v4(f.v2));
    let mut watcher = BufReader::new(watcher);
    // In the room once it hears anyone join (a health check comes every 200 ms): only then
    // can it hear the talkers, whose connections may otherwise overtake its own in HAProxy.
    read_until(&mut watcher, "joined");
    for addr in [
        v4(f.v1),
        v6(f.v1),
        v4(f.v2),
        v6(f.v2),
        v4(f.v4v6),
        v6(f.v4v6),
    ] {
        let talker = util::connect(addr);
        let me = dualstack::display_addr(talker.local_addr().unwrap()).to_string();
        // Health checks come and go meanwhile (as HAProxy itself, 127.0.0.1): skipped.
        let line = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_until(&mut watcher, &format!("* {me} joined"))
        }))
        .unwrap_or_else(|_| {
            panic!(
                "through {addr}; haproxy said {:?}; chat said {:?}",
                proxy.stderr_now(),
                chat.stderr_now()
            )
        });
        assert!(!line.contains("::ffff:"), "{line}");
        drop(talker);
        read_until(&mut watcher, &format!("* {me} left"));
    }
}

/// One connection's open: its peer, the header's version and command, its unique id, and
/// whether it carried a CRC32c TLV (verified, or the connection would have been refused).
type Open = (Peer, ProxyVersion, ProxyCommand, Option<Vec<u8>>, bool);

/// What an in-process server behind HAProxy saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Open>>>);

impl Handler for Seen {
    type State = ();
    fn on_open(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, info: &ConnInfo) {
        let p = ctx.proxied(conn).expect("a proxied connection");
        self.0.lock().unwrap().push((
            info.peer,
            p.header.version(),
            p.header.command(),
            p.header.unique_id().map(<[u8]>::to_vec),
            p.header.tlv(dualstack::proxy_tlv::CRC32C).is_some(),
        ));
    }
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let data = input.take_all();
        let _ = ctx.send(conn, data);
    }
    fn on_close(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &CloseReason) {}
}

#[test]
fn haproxys_v2_tlvs_and_health_checks_arrive_as_sent() {
    if !Tool::HAPROXY.usable() {
        return;
    }
    let dir = TempDir::new("haproxy-tlv");
    let seen = Seen::default();
    let server = util::Running::start(
        Server::builder().listen_proxied("127.0.0.1:0", ProxyProtocol::new()),
        seen.clone(),
    );
    let (_proxy, f) = haproxy(&dir, server.addr(0).port());
    let mut client = util::connect(v6(f.v2));
    assert_eq!(util::round_trip(&mut client, b"tlv"), b"tlv");
    let me = client.local_addr().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let opens = seen.0.lock().unwrap().clone();
    // The client: its address as the peer, and HAProxy's unique id (%ci:%cp) says the same.
    let ours = opens
        .iter()
        .find(|(p, ..)| *p == Peer::Ip(me))
        .unwrap_or_else(|| panic!("no open from {me}: {opens:?}"));
    assert_eq!((ours.1, ours.2), (ProxyVersion::V2, ProxyCommand::Proxy));
    assert_eq!(
        ours.3.as_deref(),
        Some(format!("::1:{}", me.port()).as_bytes())
    );
    // The frontend sends crc32c: the TLV came, and was verified (or it would be refused).
    assert!(ours.4, "no CRC32c TLV in HAProxy's header: {ours:?}");
    // The health checks: v2 LOCAL (the balancer is the peer) and v1 lines.
    assert!(
        opens.iter().any(|(p, v, c, ..)| *v == ProxyVersion::V2
            && *c == ProxyCommand::Local
            && p.ip().is_some_and(|a| a.ip().is_loopback())),
        "{opens:?}"
    );
    assert!(
        opens.iter().any(|(_, v, ..)| *v == ProxyVersion::V1),
        "{opens:?}"
    );
    let stats = server.stop().stats();
    assert_eq!(stats.total.proxy_failed, 0, "{stats:?}");
}

/// PROXY then TLS (HAProxy `mode tcp`, the TLS passing through it untouched): every client,
/// through each kind of frontend, is served over TLS and seen by its own address; health
/// checks (a header, then a close) keep the server UP.
#[test]
fn tls_behind_haproxy_sees_each_clients_own_address() {
    if !Tool::HAPROXY.usable() {
        return;
    }
    let dir = TempDir::new("haproxy-tls");
    let ca = pki::Ca::new("haproxy CA");
    let leaf = ca.leaf(&["localhost"]);
    let seen = Seen::default();
    let server = util::Running::start(
        Server::builder().listen_proxied_tls("127.0.0.1:0", ProxyProtocol::new(), leaf.config()),
        seen.clone(),
    );
    let (proxy, f) = haproxy(&dir, server.addr(0).port());
    for addr in [
        v4(f.v1),
        v6(f.v1),
        v4(f.v2),
        v6(f.v2),
        v4(f.v4v6),
        v6(f.v4v6),
    ] {
        let tcp = util::connect(addr);
        let me = tcp.local_addr().unwrap();
        let mut tls = pki::connect(pki::client(&ca), "localhost", tcp)
            .unwrap_or_else(|e| panic!("through {addr}: {e}"));
        tls.write_all(b"through haproxy\n").unwrap();
        let mut back = [0; 16];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"through haproxy\n");
        let opens = seen.0.lock().unwrap().clone();
        assert!(
            opens.iter().any(|(p, ..)| *p == Peer::Ip(me)),
            "through {addr}: no open from {me}: {opens:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let problems = proxy.stderr_now();
    assert!(
        !problems.iter().any(|l| l.contains("DOWN")),
        "haproxy marked the server down: {problems:?}"
    );
    let stats = server.stop().stats();
    assert_eq!(stats.total.proxy_failed, 0, "{stats:?}");
}

#[test]
fn curl_sends_a_v1_header_the_echo_example_takes() {
    if !Tool::CURL.usable() {
        return;
    }
    let (_echo, port) = example("echo", &["--proxy-protocol", "127.0.0.1:0"]);
    let mut curl = Command::new("timeout")
        // curl's telnet never ends by itself: -N so that what it got is written before
        // `timeout` ends it.
        .args(["2", "curl", "-sN", "--haproxy-protocol"])
        .arg(format!("telnet://127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    curl.stdin
        .take()
        .unwrap()
        .write_all(b"hello through curl\n")
        .unwrap();
    let out = curl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello through curl"), "{text:?}");
    assert!(
        !text.contains("PROXY TCP4"),
        "the header came back as data: {text:?}"
    );
}
