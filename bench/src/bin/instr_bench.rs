//! Instructions per unit of work, counted by valgrind (`cachegrind`, no cache simulation):
//! a measure that does not drift with what else the machine does, where CPU time on this VM
//! varies by ±30 % from one run to the next. It counts the server's own instructions in user
//! space (the library, rustls, libc), not the kernel's: a copy saved or an extra pass over
//! the data shows, a system call saved shows only by its user-space side (count those with
//! the runner's `perf stat` rows).
//!
//! ```text
//! taskset -c 1 target/release/instr_bench [--units N] [--only tls-bulk|handshakes|resumed|bulk|many|pipelined|kv-P1|kv-P16]
//!         [--server NAME]
//! ```
//!
//! Each server runs under valgrind on core 0, twice: once for N units of work and once for
//! 3 N. The difference of the two totals over 2 N units is its cost per unit, without its
//! start-up, its handshakes and its stop. Rows:
//! - `tls-bulk`: the echo example with `--tls-cert`, `mio_tls_echo`, `tokio_tls_echo`; 4
//!   connections, each writing 64 KiB and reading the echo back (checked), N times; per MiB.
//! - `handshakes`: the same three servers and the echo with `--tls-handshake-threads 1`
//!   (`echo-threads`); 4 clients, each a full TLS 1.3 handshake (no resumption), one 64-byte
//!   round trip and a close_notify, N times; per handshake.
//! - `resumed`: the same with ticket resumption (each client's handshakes after its first).
//! - `bulk`: the same over plain TCP against `echo`, `mio_echo`, `tokio_echo`; per MiB.
//! - `many`: 50 connections, each one 64-byte message in flight, N round trips each; per
//!   round trip.
//! - `pipelined`: 50 connections, each writing 16 messages of 64 bytes at once and reading
//!   them back, N times; per message. Also against `pieces --each` (each message sent back
//!   by its own `Context::send`) and `pieces --gathered` (one send per read).
//! - `kv-P1`, `kv-P16`: the key-value example, Debian's `redis-server` (`--save ''
//!   --appendonly no`) and `tokio_kv`, driven by `redis-benchmark -t set,get,incr,mset -c
//!   50 -P 1` (or 16), N requests of each test; per request.
//!
//! With `INSTR_PROFILE=DIR` the servers run under callgrind instead and leave their
//! profiles in DIR, for `callgrind_annotate` (the counts are the same).
//!
//! Under valgrind a server runs some 20–50 times slower, so the clients are always ahead of
//! it and each read finds more waiting than it would natively: the figures compare servers
//! at the same work, not at their native batch sizes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dualstack_bench::perf::SyscallCounter;
use dualstack_bench::tls::{client_config, connect};

const BULK: usize = 64 * 1024;

struct Row {
    name: &'static str,
    servers: &'static [&'static str],
    tls: bool,
    /// What one unit is, for the table.
    unit: &'static str,
    /// Units per repetition of the clients' loop (over all connections).
    units_per_round: f64,
    /// Repetitions for `--units 1`.
    rounds: usize,
}

const ROWS: [Row; 8] = [
    Row {
        name: "tls-bulk",
        servers: &["echo", "mio_tls_echo", "tokio_tls_echo"],
        tls: true,
        unit: "MiB",
        units_per_round: 4.0 * BULK as f64 / (1024.0 * 1024.0),
        rounds: 64,
    },
    Row {
        name: "handshakes",
        servers: &["echo", "echo-threads", "mio_tls_echo", "tokio_tls_echo"],
        tls: true,
        unit: "handshake",
        units_per_round: 4.0,
        rounds: 10,
    },
    Row {
        name: "resumed",
        servers: &["echo", "echo-threads", "mio_tls_echo", "tokio_tls_echo"],
        tls: true,
        unit: "handshake",
        units_per_round: 4.0,
        rounds: 10,
    },
    Row {
        name: "bulk",
        servers: &["echo", "mio_echo", "tokio_echo"],
        tls: false,
        unit: "MiB",
        units_per_round: 4.0 * BULK as f64 / (1024.0 * 1024.0),
        rounds: 64,
    },
    Row {
        name: "many",
        servers: &["echo", "mio_echo", "tokio_echo"],
        tls: false,
        unit: "round trip",
        units_per_round: 50.0,
        rounds: 100,
    },
    Row {
        name: "pipelined",
        servers: &[
            "echo",
            "mio_echo",
            "tokio_echo",
            "pieces-each",
            "pieces-gathered",
        ],
        tls: false,
        unit: "message",
        units_per_round: 50.0 * 16.0,
        rounds: 50,
    },
    Row {
        name: "kv-P1",
        servers: &["kv", "redis", "tokio_kv"],
        tls: false,
        unit: "request",
        units_per_round: 4.0,
        rounds: 2000,
    },
    Row {
        name: "kv-P16",
        servers: &["kv", "redis", "tokio_kv"],
        tls: false,
        unit: "request",
        units_per_round: 4.0,
        rounds: 10000,
    },
];

struct Server {
    child: Child,
    port: u16,
    /// valgrind's log, where it runs under valgrind.
    log: Option<PathBuf>,
}

/// Starts `name` on core 0, under valgrind if `log` names its log file, and waits for its
/// listening line.
fn start(name: &str, tls: bool, cert: &Path, key: &Path, log: Option<PathBuf>) -> Server {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    if let Some(log) = &log {
        cmd.arg("valgrind");
        // INSTR_PROFILE=DIR: callgrind instead, its profiles kept in DIR (callgrind_annotate).
        match std::env::var_os("INSTR_PROFILE") {
            Some(out) => cmd.arg("--tool=callgrind").arg(format!(
                "--callgrind-out-file={}",
                Path::new(&out).join(log.file_stem().unwrap()).display()
            )),
            None => cmd.args([
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
            ]),
        };
        cmd.arg(format!("--log-file={}", log.display()));
    }
    if name == "redis" {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = cmd
            .arg("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (Debian's redis-server package)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        return Server { child, port, log };
    }
    let program = |cmd: &mut Command, name, tls| {
        dualstack_bench::tls::server_program(cmd, name, tls, cert, key)
    };
    match name.strip_prefix("pieces-") {
        Some(how) => {
            program(&mut cmd, "pieces", false);
            cmd.arg(format!("--{how}")).arg("64");
        }
        None if name == "kv" => program(&mut cmd, "examples/kv", false),
        None => program(&mut cmd, name, tls),
    }
    let (child, port) = dualstack_bench::tls::start_server(&mut cmd, name, cert, key);
    Server { child, port, log }
}

/// Stops the server (SIGTERM; each of them ends on it) and reads its instruction count
/// (0 if it ran without valgrind).
fn stop(mut server: Server) -> f64 {
    // SAFETY: a plain kill(2) of the child this program started and has not reaped.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    server.child.wait().expect("wait for the server");
    let Some(log) = server.log else {
        return 0.0;
    };
    let text = std::fs::read_to_string(&log).expect("valgrind's log");
    let refs = text
        .lines()
        .find_map(|l| {
            ["I   refs:", "Collected :"]
                .iter()
                .find_map(|k| l.split_once(k))
        })
        .map(|(_, n)| n.trim().replace(',', ""))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no instruction count in {}", log.display()));
    let _ = std::fs::remove_file(&log);
    refs
}

fn plain(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Runs `round` on `conns` connections' threads, `rounds` times each (for the key-value
/// rows: `redis-benchmark`, `rounds` requests of each of its four tests).
fn clients(row: &Row, port: u16, rounds: usize) {
    if let Some(pipeline) = row.name.strip_prefix("kv-P") {
        let run = Command::new("redis-benchmark")
            .args(["-q", "-p", &port.to_string(), "-t", "set,get,incr,mset"])
            .args(["-n", &rounds.to_string(), "-c", "50", "-P", pipeline])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run redis-benchmark (Debian's redis-tools package)");
        assert!(run.success(), "redis-benchmark failed");
        return;
    }
    let conns = match row.name {
        "tls-bulk" | "bulk" | "handshakes" | "resumed" => 4,
        _ => 50,
    };
    let tls = row.tls;
    let name = row.name;
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || {
                let (size, pieces) = match name {
                    "tls-bulk" | "bulk" => (BULK, 1),
                    "many" | "handshakes" | "resumed" => (64, 1),
                    _ => (64, 16),
                };
                let data: Vec<u8> = (0..size * pieces).map(|j| (j * 7 + i * 13) as u8).collect();
                let mut back = vec![0; data.len()];
                if name == "handshakes" || name == "resumed" {
                    // Resumed: each client's handshakes after its first (the difference
                    // of the two runs leaves only those).
                    let config = client_config(name == "resumed");
                    for _ in 0..rounds {
                        let mut t = connect(port, &config);
                        t.write_all(&data).expect("write");
                        t.read_exact(&mut back).expect("read the echo");
                        assert!(back == data, "the echo differs");
                        t.conn.send_close_notify();
                        let _ = t.flush();
                    }
                    return;
                }
                let mut stream: Box<dyn ReadWrite> = if tls {
                    let t = connect(port, &client_config(false));
                    t.sock
                        .set_read_timeout(Some(Duration::from_secs(120)))
                        .unwrap();
                    Box::new(t)
                } else {
                    Box::new(plain(port))
                };
                for _ in 0..rounds {
                    stream.write_all(&data).expect("write");
                    stream.read_exact(&mut back).expect("read the echo");
                    assert!(back == data, "the echo differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn main() {
    let mut units = 1usize;
    let mut only: Option<String> = None;
    let mut server_only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value");
        match flag.as_str() {
            "--units" => units = value.parse().expect("a count"),
            "--only" => only = Some(value),
            "--server" => server_only = Some(value),
            other => panic!("unknown option {other}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("dualstack-instr-{}", std::process::id()));
    let (cert, key) = dualstack_bench::tls::write_localhost_cert(&dir);
    println!(
        "| row | unit | server | instructions / unit | / first | system calls / unit | / first |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in ROWS
        .iter()
        .filter(|r| only.as_deref().is_none_or(|o| o == r.name))
    {
        let mut first = None;
        for &name in row.servers {
            if server_only.as_deref().is_some_and(|s| s != name) {
                continue;
            }
            let n = row.rounds * units;
            let mut total = [0.0; 2];
            let mut calls = [0.0; 2];
            for (k, rounds) in [n, 3 * n].into_iter().enumerate() {
                let log = dir.join(format!("{}-{name}-{k}.log", row.name));
                let server = start(name, row.tls, &cert, &key, Some(log));
                clients(row, server.port, rounds);
                total[k] = stop(server);
                // The same work natively, its system calls counted over exactly the clients'
                // run (they depend on timing, so they vary a little from run to run).
                let server = start(name, row.tls, &cert, &key, None);
                let mut counter = SyscallCounter::start(server.child.id()).expect("perf stat");
                let enabled = counter.command("enable");
                clients(row, server.port, rounds);
                calls[k] = counter
                    .finish(enabled)
                    .into_iter()
                    .find_map(|(event, n)| (event == "total").then_some(n))
                    .expect("perf counted no system calls");
                stop(server);
            }
            let units = 2.0 * n as f64 * row.units_per_round;
            let per_unit = (total[1] - total[0]) / units;
            let syscalls = (calls[1] - calls[0]) / units;
            let base = *first.get_or_insert((per_unit, syscalls));
            println!(
                "| {} | {} | {name} | {per_unit:.0} | {:.3} | {syscalls:.2} | {:.3} |",
                row.name,
                row.unit,
                per_unit / base.0,
                syscalls / base.1,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
