//! 10,000 concurrent connections across an IPv4 and an IPv6 listener: every one is echoed,
//! and the server's memory per idle connection is reported. Ignored by default (it raises
//! its descriptor limit, which needs root or a high hard limit); CI runs it with --ignored.
//! Linux only: it raises RLIMIT_NOFILE and reads /proc.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const PER_FAMILY: usize = 5_000;

/// Raises the descriptor limit (the server child inherits it), and checks that is enough for
/// one end of every connection.
fn raise_fd_limit(needed: u64) {
    let got = dualstack_support::raise_fd_limit(needed).expect("setrlimit");
    assert!(
        got >= needed,
        "RLIMIT_NOFILE can only go to {got}, and 10,000 connections need {needed}: raise the hard limit (ulimit -Hn) first"
    );
}

fn rss(pid: u32) -> u64 {
    dualstack_support::rss(pid).expect("read the server's RSS")
}

#[test]
#[ignore = "holds 10,000 connections: raises RLIMIT_NOFILE; run with --ignored"]
fn ten_thousand_connections_over_both_families() {
    raise_fd_limit(2 * PER_FAMILY as u64 + 100); // per process: the test and the server each hold one end
    let exe = std::env::current_exe().unwrap();
    let echo = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join("echo");
    let mut server = Command::new(&echo)
        .args(["127.0.0.1:0", "[::1]:0", "--max-connections", "20000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", echo.display()));
    let pid = server.id();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let addrs: Vec<SocketAddr> = (0..2)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("listening on ")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss(pid);
    let mut clients = Vec::with_capacity(2 * PER_FAMILY);
    for i in 0..2 * PER_FAMILY {
        let addr = addrs[i % 2];
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        clients.push(s);
    }
    // Every connection is served: one distinct byte there and back on each.
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&[(i % 251) as u8]).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        c.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(b[0], (i % 251) as u8, "connection {i}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let held = rss(pid);
    let per_conn = held.saturating_sub(before) as f64 / clients.len() as f64;
    println!("10,000 connections held: server RSS {} KiB before, {} KiB held: {per_conn:.0} bytes per idle connection", before / 1024, held / 1024);
    drop(clients);
    let _ = server.kill();
    let _ = server.wait();
}
