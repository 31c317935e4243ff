//! Running out of file descriptors: the server neither spins nor dies, keeps serving its open
//! connections, logs the trouble once per episode, and accepts again by itself when
//! descriptors free up.
//!
//! The server runs in a child process (this test binary again, with the `emfile_child_server`
//! test selected) whose RLIMIT_NOFILE is lowered, so the test's own descriptors stay free.
//!
//! Linux only: RLIMIT_NOFILE and /proc (Windows has no descriptor limit to lower).

#![cfg(target_os = "linux")]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dualstack::{ConnId, Context, Handler, Input, Server};

const CHILD_ENV: &str = "DUALSTACK_EMFILE_CHILD";
/// The child's descriptor limit: the server, its poller and a few std handles fit, plus a
/// couple of dozen connections.
const FD_LIMIT: u64 = 48;

struct Echo;

impl Handler for Echo {
    type State = ();
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let data = input.take_all();
        let _ = ctx.send(conn, data);
    }
}

fn lower_fd_limit(limit: u64) {
    dualstack_support::lower_fd_limit(limit).expect("setrlimit");
}

/// The child: an echo server with few descriptors. Prints its port, serves until its stdin
/// closes, then stops gracefully.
#[test]
#[ignore = "the server side of emfile_backs_off_keeps_serving_and_recovers; run by it"]
fn emfile_child_server() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "run only as the child of the EMFILE test"
    );
    simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Info)
        .init()
        .unwrap();
    lower_fd_limit(FD_LIMIT);
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(Echo)
        .expect("bind");
    println!(
        "port {}",
        server.listeners()[0]
            .local_addr
            .port()
            .expect("a TCP listener")
    );
    std::io::stdout().flush().unwrap();
    let handle = server.handle();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        handle.stop();
    });
    server.run().expect("the server loop");
}

/// CPU time (user + system) of process `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    dualstack_support::cpu_ticks(pid).expect("read /proc/PID/stat")
}

#[test]
fn emfile_backs_off_keeps_serving_and_recovers() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "emfile_child_server", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child server");
    let pid = child.id();
    // Read stderr on a thread, so the child never blocks on a full pipe.
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "the child exited without a port"
        );
        if let Some(p) = line.trim().strip_prefix("port ") {
            break p.parse::<u16>().unwrap();
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // A first group of clients, each served.
    let mut first: Vec<TcpStream> = (0..20).map(|_| util::connect(addr)).collect();
    for (i, c) in first.iter_mut().enumerate() {
        assert_eq!(
            util::round_trip(c, &[i as u8; 10]),
            [i as u8; 10],
            "first client {i}"
        );
    }
    // More clients than the child has descriptors for: the kernel queues them in the
    // backlog, and accept fails with EMFILE once the limit is reached.
    let mut waiting: Vec<TcpStream> = (0..60).map(|_| util::connect(addr)).collect();
    for (i, c) in waiting.iter_mut().enumerate() {
        c.write_all(&[i as u8; 3]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));

    // The server must not spin while it cannot accept.
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(300),
        "the child used {spent:?} of CPU in 1 s: spinning"
    );
    // ...and must keep serving the connections it has.
    for (i, c) in first.iter_mut().enumerate() {
        assert_eq!(
            util::round_trip(c, b"still"),
            *b"still",
            "first client {i} during EMFILE"
        );
    }
    // Descriptors free up: every waiting client gets served, without any help.
    drop(first);
    for i in 0..waiting.len() {
        let mut buf = [0; 3];
        waiting[i]
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("waiting client {i} never served: {e}"));
        assert_eq!(buf, [i as u8; 3]);
        if i % 10 == 9 {
            // Free descriptors as we go, as a real server's clients would.
            for done in &waiting[i - 9..=i] {
                let _ = done.shutdown(std::net::Shutdown::Both);
            }
        }
    }
    drop(waiting);
    drop(child.stdin.take()); // the child stops when its stdin closes
    let deadline = Instant::now() + util::TIMEOUT * 2;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = log.join().unwrap();
    assert!(status.success(), "the child failed: {status}\n{log}");
    let warnings = log.lines().filter(|l| l.contains("accept failed")).count();
    let recoveries = log
        .lines()
        .filter(|l| l.contains("accepting connections again"))
        .count();
    assert!(
        warnings >= 1,
        "EMFILE was never hit or never logged:\n{log}"
    );
    assert!(recoveries >= 1, "no recovery logged:\n{log}");
    assert!(
        warnings <= recoveries + 1,
        "logged more than once per episode:\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
}
