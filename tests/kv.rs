//! `examples/kv.rs`, the Redis-protocol key-value server, driven as Redis is: its replies
//! compared byte for byte with `redis-server`'s (Debian's `redis-server`), `redis-cli` and
//! `redis-benchmark` (Debian's `redis-tools`) as its clients, requests split at every byte,
//! and its limits. Tests that need a program the machine lacks skip with one line saying so
//! (`dualstack_support::Tool`); `.ci/run` installs them and requires them.
//!
//! Unix only: the real clients and servers are Unix programs, and the stop is a signal.

#![cfg(unix)]

#[path = "util/pki.rs"]
mod pki;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dualstack_support::Tool;

/// A server process (the kv example, or redis-server), killed by the PID we started when
/// dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kv example on `127.0.0.1:0` with `args`, once it says where it listens.
fn kv(args: &[&str]) -> Process {
    let mut child = Command::new(util::example("kv"))
        .args(args)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kv");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (addr, _) = dualstack_support::parse_listening_line(&line)
        .unwrap_or_else(|| panic!("kv printed {line:?}"));
    Process { child, addr }
}

/// A free loopback port (for redis-server, which takes a number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's redis-server on loopback, with nothing saved to disk.
fn redis_server() -> Process {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + util::TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Process { child, addr }
}

/// Reads one whole RESP2 reply from `r` and returns its bytes.
fn reply(r: &mut impl BufRead) -> Vec<u8> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).unwrap();
    assert!(
        line.ends_with(b"\r\n"),
        "a reply line without CRLF: {line:?}"
    );
    let n = || -> i64 {
        std::str::from_utf8(&line[1..line.len() - 2])
            .unwrap()
            .parse()
            .unwrap()
    };
    match line[0] {
        b'$' if n() >= 0 => {
            let mut body = vec![0; n() as usize + 2];
            r.read_exact(&mut body).unwrap();
            let mut whole = line.clone();
            whole.extend(body);
            whole
        }
        b'*' if n() > 0 => {
            let mut whole = line.clone();
            for _ in 0..n() {
                whole.extend(reply(r));
            }
            whole
        }
        _ => line,
    }
}

/// A request as an array of bulk strings.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    out
}

/// Sends `requests` to `addr` written in pieces of `piece` bytes (each its own write, with a
/// pause, so each is its own read), and returns the `replies` replies.
fn exchange(addr: SocketAddr, requests: &[u8], piece: usize, replies: usize) -> Vec<Vec<u8>> {
    let mut client = util::connect(addr);
    client.set_nodelay(true).unwrap();
    for chunk in requests.chunks(piece) {
        client.write_all(chunk).unwrap();
        if piece < requests.len() {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    let mut r = BufReader::new(client);
    (0..replies).map(|_| reply(&mut r)).collect()
}

/// The requests both servers must answer the same, each with one reply.
fn script() -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = [
        &["PING"][..],
        &["PING", "hello"],
        &["ECHO", "a\r\nb"],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["GET", "missing"],
        &["SET", "n", "41"],
        &["INCR", "n"],
        &["INCR", "fresh"],
        &["INCR", "k"],
        &["SET", "big", "9223372036854775807"],
        &["INCR", "big"],
        &["SET", "lead", "01"],
        &["INCR", "lead"],
        &["MSET", "a", "1", "b", "2"],
        &["MGET", "a", "missing", "b"],
        &["EXISTS", "a", "a", "missing"],
        &["DEL", "a", "missing", "b"],
        &["DBSIZE"],
        &["SET", "t", "v", "EX", "100"],
        &["SET", "t", "v", "PX", "0"],
        &["SET", "t", "v", "EX", "x"],
        &["SET", "t", "v", "PX", "9223372036854775807"], // past i64 once now is added
        &["SET", "t", "v", "EX", "9223372036854775"],
        &["DBSIZE", "extra"],
        &["SET", "t", "v", "XX", "1"],
        &["SET", "t"],
        &["GET"],
        &["MSET", "a"],
        &["MSET", "a", "1", "b"],
        &["ECHO"],
        &["PING", "a", "b"],
        &["NOSUCH", "x", "y"],
        &["nosuch"],
        &["set", "lower", "case"],
        &["get", "lower"],
        // The fourth review: an unknown option is a syntax error before its amount is read,
        // and FLUSHALL takes only SYNC or ASYNC.
        &["SET", "e", "v", "FOO", "abc"],
        &["FLUSHALL", "x"],
        &["DBSIZE"],
        &["FLUSHALL", "async"],
        &["SET", "k", "v"],
        &["FLUSHALL"],
        &["DBSIZE"],
    ]
    .iter()
    .map(|args| resp(args))
    .collect();
    s.push(b"PING\r\n".to_vec()); // inline
    s.push(b"ECHO  spaced   \r\n".to_vec());
    // A vertical tab or form feed is skipped before a word, and kept within one.
    s.push(b"PING\t\x0bx\r\n".to_vec());
    s.push(b"ECHO \x0ca\x0bb\x0c\r\n".to_vec());
    s.push(b"SET inline yes\nGET inline\n".to_vec()); // LF only, two requests
    s
}

/// Issue #22: the replies of kv are redis-server's, byte for byte, for every request of the
/// script, however the requests are split: whole, pipelined in one write, and one byte at
/// a time.
#[test]
fn kv_answers_as_redis_server_does_at_every_split() {
    if !Tool::REDIS_SERVER.usable() {
        return;
    }
    let script = script();
    let replies = script.len() + 1; // the last piece holds two requests
    let stream = script.concat();
    let redis = redis_server();
    let want = exchange(redis.addr, &stream, stream.len(), replies);
    drop(redis);
    let server = kv(&[]);
    for piece in [stream.len(), 7, 1] {
        let _ = exchange(server.addr, &resp(&["FLUSHALL"]), usize::MAX, 1);
        let got = exchange(server.addr, &stream, piece, replies);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                String::from_utf8_lossy(g),
                String::from_utf8_lossy(w),
                "reply {i} in pieces of {piece}"
            );
        }
    }
}

/// Issue #22: `redis-cli` talks to kv as to Redis (it sends `COMMAND DOCS` first), and
/// `redis-benchmark` runs its SET, GET, INCR and MSET tests, pipelined or not, without an
/// error.
#[test]
fn redis_cli_and_redis_benchmark_drive_kv() {
    if !Tool::all_usable(&[Tool::REDIS_CLI, Tool::REDIS_BENCHMARK]) {
        return;
    }
    let server = kv(&[]);
    let port = server.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("timeout")
            .args(["10", "redis-cli", "-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["set", "greeting", "hello"]), "OK\n");
    assert_eq!(cli(&["get", "greeting"]), "hello\n");
    assert_eq!(cli(&["incr", "visits"]), "1\n");
    assert_eq!(cli(&["mget", "greeting", "nope"]), "hello\n\n");
    for pipeline in ["1", "16"] {
        let out = Command::new("timeout")
            .args([
                "60",
                "redis-benchmark",
                "-p",
                &port,
                "-q",
                "-n",
                "2000",
                "-c",
                "10",
            ])
            .args(["-t", "set,get,incr,mset", "-P", pipeline])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
        assert!(out.status.success(), "-P {pipeline}: {text}");
        for test in ["SET", "GET", "INCR", "MSET"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(test) && l.contains("requests per second")),
                "-P {pipeline}: no {test} result in {text}"
            );
        }
        assert!(!text.contains("ERR"), "-P {pipeline}: {text}");
    }
}

/// Issue #23: kv over TLS (`--tls-cert`, ALPN `redis`), driven by `redis-cli --tls` and
/// `redis-benchmark --tls` (Debian's are built with TLS), verifying the certificate
/// against the test CA.
#[test]
fn redis_cli_and_redis_benchmark_drive_kv_over_tls() {
    if !Tool::all_usable(&[Tool::REDIS_CLI, Tool::REDIS_BENCHMARK]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dualstack-kv-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = pki::Ca::new("kv CA");
    let (cert, key) = ca.leaf(&["localhost"]).write(&dir, "kv");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let server = kv(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = server.addr.port().to_string();
    let tls = [
        "--tls",
        "--sni",
        "localhost",
        "--cacert",
        ca_file.to_str().unwrap(),
    ];
    let cli = |args: &[&str]| {
        let out = Command::new("timeout")
            .args(["10", "redis-cli", "-h", "localhost", "-p", &port])
            .args(tls)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["set", "greeting", "hello over TLS"]), "OK\n");
    assert_eq!(cli(&["get", "greeting"]), "hello over TLS\n");
    let out = Command::new("timeout")
        .args(["60", "redis-benchmark", "-h", "localhost", "-p", &port])
        .args(tls)
        .args(["-q", "-n", "2000", "-c", "10", "-t", "set,get", "-P", "16"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "{text}");
    for test in ["SET", "GET"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(test) && l.contains("requests per second")),
            "no {test} result in {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #22: a bulk string longer than `--max-bulk`, or a line longer than 64 KiB, gets an
/// error and a close; a bulk string that only claims to be large makes the server allocate
/// nothing of the claimed size.
#[test]
fn oversized_requests_get_an_error_and_a_close_without_an_allocation_of_their_size() {
    let server = kv(&["--max-bulk", "10"]);
    let closed_after = |request: &[u8], want: &str| {
        let mut c = util::connect(server.addr);
        c.write_all(request).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap(); // the close ends it
        assert_eq!(
            String::from_utf8_lossy(&all),
            want,
            "{:?}",
            &request[..20.min(request.len())]
        );
    };
    closed_after(
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$11\r\n",
        "-ERR Protocol error: invalid bulk length\r\n",
    );
    let mut long = vec![b'x'; 70 * 1024];
    long.extend(b"\r\n");
    closed_after(&long, "-ERR Protocol error: too big inline request\r\n");
    // A header line of 64 KiB and no end: Redis's words for it.
    closed_after(
        &[&b"*"[..], &[b'1'; 70_000]].concat(),
        "-ERR Protocol error: too big mbulk count string\r\n",
    );
    closed_after(
        &[&b"*1\r\n$"[..], &[b'1'; 70_000]].concat(),
        "-ERR Protocol error: too big bulk count string\r\n",
    );
    closed_after(
        b"*2\r\n+x\r\n",
        "-ERR Protocol error: expected '$', got '+'\r\n",
    );
    // Within the limit, still fine.
    let ok = exchange(
        server.addr,
        &resp(&["SET", "k", "0123456789"]),
        usize::MAX,
        1,
    );
    assert_eq!(ok, [b"+OK\r\n".to_vec()]);
    drop(server);

    // The default limit is Redis's 512 MiB: a request that claims that much, and sends 4
    // bytes of it, makes the server grow by about nothing.
    let server = kv(&[]);
    let pid = server.child.id();
    let before = dualstack_support::rss(pid).expect("RSS");
    let mut claims = Vec::new();
    for _ in 0..20 {
        let mut c = util::connect(server.addr);
        c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\nabcd")
            .unwrap();
        claims.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = dualstack_support::rss(pid).expect("RSS");
    assert!(
        after < before + 16 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes for 20 claims of 512 MiB"
    );
    let still = exchange(server.addr, &resp(&["PING"]), usize::MAX, 1);
    assert_eq!(still, [b"+PONG\r\n".to_vec()]);
}

/// Fourth review of #22: a small `--max-bulk` limits each bulk string, not the request: an
/// MSET of 200 values of 1,000 bytes each is taken (the input limit was one bulk string's
/// size, and the connection was reset without a reply). And `--max-bulk` at its largest
/// works (the output limit overflowed: a panic in a debug build, a GET closed in release).
#[test]
fn max_bulk_limits_each_bulk_string_at_any_value() {
    let server = kv(&["--max-bulk", "1000"]);
    let value = "m".repeat(1000);
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    let mut args = vec!["MSET"];
    for key in &keys {
        args.extend([key.as_str(), value.as_str()]);
    }
    let mut requests = resp(&["PING"]).repeat(3);
    requests.extend(resp(&args));
    requests.extend(resp(&["GET", "key199"]));
    let replies = exchange(server.addr, &requests, usize::MAX, 5);
    assert_eq!(
        replies[..4],
        [&b"+PONG\r\n"[..], b"+PONG\r\n", b"+PONG\r\n", b"+OK\r\n"]
    );
    assert_eq!(replies[4], format!("$1000\r\n{value}\r\n").into_bytes());
    drop(server);

    let server = kv(&["--max-bulk", &usize::MAX.to_string()]);
    let value = "w".repeat(300_000);
    let mut requests = resp(&["SET", "w", &value]);
    requests.extend(resp(&["GET", "w"]));
    let replies = exchange(server.addr, &requests, usize::MAX, 2);
    assert_eq!(replies[0], b"+OK\r\n");
    assert!(
        replies[1] == format!("$300000\r\n{value}\r\n").as_bytes(),
        "GET of 300 KB"
    );
}

/// Issue #22 (review): a value longer than the default limit on queued output (4 MiB) comes
/// back whole from GET. (The reply was refused and the refusal ignored: the client waited
/// for ever.)
#[test]
fn a_value_larger_than_the_default_output_limit_comes_back_whole() {
    let server = kv(&[]);
    let value = "v".repeat(5 << 20);
    let mut requests = resp(&["SET", "big", &value]);
    requests.extend(resp(&["GET", "big"]));
    let replies = exchange(server.addr, &requests, usize::MAX, 2);
    assert_eq!(replies[0], b"+OK\r\n");
    let want = format!("${}\r\n{value}\r\n", value.len());
    assert!(
        replies[1] == want.as_bytes(),
        "GET gave {} bytes, not the {} of the value's reply",
        replies[1].len(),
        want.len()
    );
}

/// Second review of #22: a client that reads slowly and asks for the largest value while
/// replies are queued gets it, not a close (the output limit was the largest reply alone,
/// with no room for what the high-water mark lets wait before it).
#[test]
fn the_largest_value_comes_to_a_slow_reader_with_replies_queued() {
    let server = kv(&["--max-bulk", "4194304"]);
    let big = "b".repeat(4 << 20);
    let small = "s".repeat(150 * 1024);
    let set = [resp(&["SET", "big", &big]), resp(&["SET", "s", &small])].concat();
    assert_eq!(exchange(server.addr, &set, usize::MAX, 2).len(), 2);
    let mut requests = resp(&["GET", "s"]).repeat(21);
    requests.extend(resp(&["GET", "big"]));
    let mut client = util::connect_small_window(server.addr);
    client.write_all(&requests).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the replies back up
    let mut r = BufReader::new(client);
    let bulk_len = |v: &str| format!("${}\r\n{v}\r\n", v.len()).len();
    for i in 0..21 {
        assert_eq!(reply(&mut r).len(), bulk_len(&small), "reply {i}");
    }
    assert_eq!(reply(&mut r).len(), bulk_len(&big), "the largest value");
}

/// Issue #22: `EX` and `PX` expire keys through the server's timers: gone for GET once due,
/// and from DBSIZE (the timer removed them, not only a lazy check).
#[test]
fn keys_expire_through_the_servers_timers() {
    let server = kv(&[]);
    let one = |args: &[&str]| exchange(server.addr, &resp(args), usize::MAX, 1).remove(0);
    assert_eq!(one(&["SET", "short", "v", "PX", "100"]), b"+OK\r\n");
    assert_eq!(one(&["SET", "long", "v", "EX", "100"]), b"+OK\r\n");
    assert_eq!(one(&["SET", "reset", "v", "PX", "100"]), b"+OK\r\n");
    assert_eq!(one(&["SET", "reset", "w"]), b"+OK\r\n"); // no expiry any more
                                                         // A key deleted takes its expiry along: set again, it stays.
    assert_eq!(one(&["SET", "again", "v", "PX", "100"]), b"+OK\r\n");
    assert_eq!(one(&["DEL", "again"]), b":1\r\n");
    assert_eq!(one(&["SET", "again", "w"]), b"+OK\r\n");
    assert_eq!(one(&["GET", "short"]), b"$1\r\nv\r\n");
    assert_eq!(one(&["DBSIZE"]), b":4\r\n");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(one(&["GET", "short"]), b"$-1\r\n");
    assert_eq!(one(&["DBSIZE"]), b":3\r\n");
    assert_eq!(one(&["GET", "reset"]), b"$1\r\nw\r\n");
    assert_eq!(one(&["GET", "again"]), b"$1\r\nw\r\n");
}

/// Issue #22: QUIT answers and closes; an unknown command answers and the connection goes
/// on.
#[test]
fn quit_closes_and_unknown_commands_do_not() {
    let server = kv(&[]);
    let mut c = util::connect(server.addr);
    c.write_all(
        &[
            resp(&["WHAT"]),
            resp(&["PING"]),
            resp(&["QUIT"]),
            resp(&["PING"]),
        ]
        .concat(),
    )
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&all),
        "-ERR unknown command 'WHAT', with args beginning with: \r\n+PONG\r\n+OK\r\n"
    );
}
