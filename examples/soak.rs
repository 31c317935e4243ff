//! A chaos soak of the echo server: everything at once, over both families, for a while.
//!
//! Run with `cargo run --release --example soak -- [--seconds N] [--seed S] [--rss-bound MIB]`
//! (default 60 s, seed 1, 64 MiB). It starts the echo example as a child process (so the
//! server's memory and descriptors are its own), with the hostile-peer defences on, and runs
//! a seeded mix of clients against it:
//!
//! - well-behaved clients that send random-sized messages and verify every byte they get
//!   back, content and order;
//! - clients that reset mid-transfer (SO_LINGER 0);
//! - clients that half-close and read the rest of their echo;
//! - clients that stop reading while sending (the server must hold them back, then drop them);
//! - slowloris clients, silent or trickling a byte now and then;
//! - connect-and-drop storms.
//!
//! At the end it checks that every well-behaved client received exactly what it sent, that
//! the server's RSS stayed under the bound the whole time (sampled every 50 ms), that it
//! still accepts over both families, and that its descriptor count is back to where it
//! started. Prints the figures; exits 1 if any check fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A small seeded generator (xorshift64*): the soak must repeat with the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng((seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `len` bytes of the stream client `id` sends, from `offset`.
fn bytes(id: u64, offset: u64, len: u64) -> Vec<u8> {
    static PATTERN: std::sync::OnceLock<dualstack_support::Pattern> = std::sync::OnceLock::new();
    PATTERN
        .get_or_init(dualstack_support::Pattern::default)
        .bytes(id, offset, len as usize)
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_verified: AtomicU64,
    resets: AtomicU64,
    half_closes: AtomicU64,
    stopped_readers: AtomicU64,
    slowloris: AtomicU64,
    slowloris_closed: AtomicU64,
    storm_connections: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Counters {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Sends random-sized messages, reading each echo back and checking every byte.
fn well_behaved(id: u64, addrs: [SocketAddr; 2], rng: &mut Rng, c: &Counters, deadline: Instant) {
    let mut session = 0u64;
    while Instant::now() < deadline {
        let stream_id = id * 1_000_000 + session;
        session += 1;
        let addr = addrs[(stream_id % 2) as usize];
        let mut s = match connect(addr) {
            Ok(s) => s,
            Err(e) => return c.fail(format!("well-behaved {id}: connect {addr}: {e}")),
        };
        c.connections.fetch_add(1, Ordering::Relaxed);
        let mut offset = 0u64;
        for _ in 0..1 + rng.below(40) {
            if Instant::now() >= deadline {
                break;
            }
            let len = 1 + rng.below(64 * 1024);
            let msg = bytes(stream_id, offset, len);
            if let Err(e) = s.write_all(&msg) {
                return c.fail(format!("well-behaved {id} via {addr}: write: {e}"));
            }
            c.bytes_sent.fetch_add(len, Ordering::Relaxed);
            let mut back = vec![0; msg.len()];
            if let Err(e) = s.read_exact(&mut back) {
                return c.fail(format!(
                    "well-behaved {id} via {addr}: read {len} bytes at {offset}: {e}"
                ));
            }
            if back != msg {
                let at = back.iter().zip(&msg).position(|(a, b)| a != b).unwrap_or(0);
                return c.fail(format!(
                    "well-behaved {id} via {addr}: byte {} differs",
                    offset + at as u64
                ));
            }
            c.bytes_verified.fetch_add(len, Ordering::Relaxed);
            offset += len;
        }
    }
}

fn resetter(addrs: [SocketAddr; 2], rng: &mut Rng, c: &Counters) {
    let Ok(mut s) = connect(addrs[rng.below(2) as usize]) else {
        return;
    };
    let data = vec![0x5a; 1 + rng.below(200_000) as usize];
    let _ = s.write_all(&data[..data.len() / 2]);
    let mut buf = [0; 1000];
    let _ = s.read(&mut buf);
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    c.resets.fetch_add(1, Ordering::Relaxed);
}

fn half_closer(id: u64, addrs: [SocketAddr; 2], rng: &mut Rng, c: &Counters) {
    let addr = addrs[rng.below(2) as usize];
    let Ok(mut s) = connect(addr) else {
        return c.fail(format!("half-closer: connect {addr}"));
    };
    let data = bytes(id, 0, 1 + rng.below(100_000));
    if s.write_all(&data)
        .and_then(|_| s.shutdown(Shutdown::Write))
        .is_err()
    {
        return c.fail(format!("half-closer {id} via {addr}: write"));
    }
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) if back == data => {
            c.half_closes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => c.fail(format!(
            "half-closer {id} via {addr}: got {} of {} bytes",
            back.len(),
            data.len()
        )),
        Err(e) => c.fail(format!("half-closer {id} via {addr}: {e}")),
    }
}

/// Sends without ever reading, until the server stops taking its bytes or drops it.
fn stop_reader(addrs: [SocketAddr; 2], rng: &mut Rng, c: &Counters, deadline: Instant) {
    let Ok(s) = connect(addrs[rng.below(2) as usize]) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let chunk = vec![0xa5; 64 * 1024];
    let mut s = s;
    while Instant::now() < deadline {
        if s.write_all(&chunk).is_err() {
            break; // held back (timeout) or dropped by the server: both are the point
        }
    }
    c.stopped_readers.fetch_add(1, Ordering::Relaxed);
}

/// Connects and sends nothing, or a byte now and then; the server must close it.
fn slowloris(addrs: [SocketAddr; 2], rng: &mut Rng, c: &Counters, deadline: Instant) {
    let Ok(mut s) = connect(addrs[rng.below(2) as usize]) else {
        return;
    };
    c.slowloris.fetch_add(1, Ordering::Relaxed);
    let trickle = rng.below(2) == 0;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut last = Instant::now();
    let mut buf = [0; 16];
    while Instant::now() < deadline + Duration::from_secs(10) {
        if trickle && last.elapsed() > Duration::from_secs(6) {
            let _ = s.write_all(b"x");
            last = Instant::now();
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break, // reset by the server: closed too
        }
    }
    if Instant::now() < deadline + Duration::from_secs(10) {
        c.slowloris_closed.fetch_add(1, Ordering::Relaxed);
    }
}

fn storm(addrs: [SocketAddr; 2], rng: &mut Rng, c: &Counters) {
    for _ in 0..20 + rng.below(60) {
        if TcpStream::connect_timeout(&addrs[rng.below(2) as usize], IO_TIMEOUT).is_ok() {
            c.storm_connections.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn fd_count(pid: u32) -> usize {
    dualstack_support::fd_count(pid).unwrap_or(0)
}

fn rss(pid: u32) -> u64 {
    dualstack_support::rss(pid).unwrap_or(0)
}

fn main() {
    let mut seconds = 60.0f64;
    let mut seed = 1u64;
    let mut rss_bound_mib = 64u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds: a number"),
            "--seed" => seed = value.parse().expect("--seed: a number"),
            "--rss-bound" => rss_bound_mib = value.parse().expect("--rss-bound: MiB"),
            _ => {
                eprintln!("usage: soak [--seconds N] [--seed S] [--rss-bound MIB]");
                std::process::exit(2);
            }
        }
    }
    let echo = std::env::current_exe().unwrap().with_file_name("echo");
    let mut child = Command::new(&echo)
        .args([
            "127.0.0.1:0",
            "[::1]:0",
            "--first-byte-timeout",
            "2",
            "--idle-timeout",
            "5",
            "--max-per-peer",
            "5000",
            "--max-total-queued",
            "67108864",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {} (build it with --example echo): {e}",
                echo.display()
            )
        });
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let (addr, _) = dualstack_support::parse_listening_line(&line).expect("a listening line");
        addrs.push(addr);
    }
    let addrs = [addrs[0], addrs[1]];
    let stderr = child.stderr.take().unwrap();
    let warnings = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("WARN"))
            .count()
    });
    std::thread::sleep(Duration::from_millis(200));
    let (base_fds, base_rss) = (fd_count(pid), rss(pid));

    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let sampler = dualstack_support::RssSampler::start(pid);
    let mut threads = Vec::new();
    for id in 0..8u64 {
        let c = counters.clone();
        threads.push(std::thread::spawn(move || {
            well_behaved(id, addrs, &mut Rng::new(seed, id), &c, deadline)
        }));
    }
    // The troublemakers: one thread per kind, each starting one client at a time, repeatedly.
    for kind in 0..5u64 {
        let c = counters.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(seed, 100 + kind);
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                match kind {
                    0 => resetter(addrs, &mut rng, &c),
                    1 => half_closer(1000 + n, addrs, &mut rng, &c),
                    2 => stop_reader(
                        addrs,
                        &mut rng,
                        &c,
                        deadline.min(Instant::now() + Duration::from_secs(3)),
                    ),
                    3 => {
                        // A few slowloris clients at a time, each on its own thread.
                        let c2 = c.clone();
                        let mut r2 = Rng::new(seed, 10_000 + n);
                        std::thread::spawn(move || slowloris(addrs, &mut r2, &c2, deadline));
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    _ => storm(addrs, &mut rng, &c),
                }
                std::thread::sleep(Duration::from_millis(rng.below(100)));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    // Slowloris threads end within the server's timeouts; wait for the server to settle.
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    while fd_count(pid) > base_fds && Instant::now() < settle_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let end_fds = fd_count(pid);
    let peak = sampler.stop().max(base_rss);

    // Still accepting, over both families?
    let mut accepting = true;
    for addr in addrs {
        let ok = connect(addr).and_then(|mut s| {
            s.write_all(b"still there?")?;
            let mut b = [0; 12];
            s.read_exact(&mut b)?;
            Ok(&b == b"still there?")
        });
        accepting &= ok.unwrap_or(false);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().expect("the echo server's exit");
    let warnings = warnings.join().unwrap_or(0);

    let c = &counters;
    let sent = c.bytes_sent.load(Ordering::Relaxed);
    let verified = c.bytes_verified.load(Ordering::Relaxed);
    let faults = c.resets.load(Ordering::Relaxed)
        + c.half_closes.load(Ordering::Relaxed)
        + c.stopped_readers.load(Ordering::Relaxed)
        + c.slowloris.load(Ordering::Relaxed)
        + c.storm_connections.load(Ordering::Relaxed);
    println!("soak: {seconds} s, seed {seed}");
    println!(
        "well-behaved connections: {}",
        c.connections.load(Ordering::Relaxed)
    );
    println!("bytes sent by well-behaved clients: {sent}");
    println!("bytes verified: {verified}");
    println!("bytes lost: {}", sent - verified);
    println!(
        "faults injected: {faults} (resets {}, half-closes {}, stopped readers {}, slowloris {} of which closed by the server {}, storm connections {})",
        c.resets.load(Ordering::Relaxed),
        c.half_closes.load(Ordering::Relaxed),
        c.stopped_readers.load(Ordering::Relaxed),
        c.slowloris.load(Ordering::Relaxed),
        c.slowloris_closed.load(Ordering::Relaxed),
        c.storm_connections.load(Ordering::Relaxed)
    );
    println!(
        "server RSS: {} KiB at start, {} KiB peak (bound {rss_bound_mib} MiB)",
        base_rss / 1024,
        peak / 1024
    );
    println!("server descriptors: {base_fds} at start, {end_fds} at the end");
    println!("server warnings logged: {warnings}; still accepting: {accepting}; exit: {status}");
    let mut failures = c.failures.lock().unwrap().clone();
    if sent != verified {
        failures.push(format!("{} bytes lost", sent - verified));
    }
    if peak > rss_bound_mib * 1024 * 1024 {
        failures.push(format!(
            "RSS peaked at {} KiB, above the bound",
            peak / 1024
        ));
    }
    if end_fds != base_fds {
        failures.push(format!(
            "descriptors: {base_fds} at start, {end_fds} at the end (a leak)"
        ));
    }
    if !accepting {
        failures.push("the server no longer accepts".into());
    }
    if !status.success() {
        failures.push(format!("the server exited with {status}"));
    }
    if verified == 0 {
        failures.push("nothing was verified: the soak tested nothing".into());
    }
    if failures.is_empty() {
        println!("soak passed");
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
