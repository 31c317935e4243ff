//! The TLS rows: the echo example with `--tls-cert`, the tokio-rustls reference
//! (`tokio_tls_echo`, current-thread) and the hand-written rustls + mio loop
//! (`mio_tls_echo`), the same rustls, provider, certificate (ECDSA P-256) and resumption
//! setup for all three. Each server runs pinned to core 0; this program's clients run on
//! core 1 (start it with `taskset -c 1`, as the runner does its load generator).
//!
//! ```text
//! taskset -c 1 target/release/tls_bench [--seconds S] [--idle N] [--rounds R] [--clients N] [--only bulk|full|resumed|idle|mixed]
//!         [--interleave MS] [--server NAME[,NAME...]]
//! ```
//!
//! Rows, each with the server's CPU time per unit of work (from /proc/PID/task/*/schedstat,
//! so a row is a measure of the server even where the clients limit the rate):
//! - `bulk`: 8 connections, each writing 64 KiB of a byte pattern and reading the echo back
//!   (checked byte for byte), for S seconds after a second of warm-up: MiB/s.
//! - `full handshakes`: 4 clients, each connecting, completing a TLS 1.3 handshake (X25519,
//!   ECDSA P-256, no resumption), one 64-byte round trip and a close_notify, again: per
//!   second (`--clients N`: N clients instead). The clients skip certificate verification
//!   (their cost is not the server's).
//! - `resumed handshakes`: the same with tickets (every handshake after the first resumed).
//! - `idle memory`: N connections, each after a handshake and one round trip, held: the
//!   server's RSS growth per connection; and the same for plain TCP (the echo example
//!   without TLS), for the TLS connection's extra cost.
//!
//! - `echo-threads`: the echo example with `--tls-handshake-threads 1` (handshake steps on a
//!   thread of their own, pinned like the server to core 0).
//! - `mixed`: the p99 round trip of 50 established clients (64 bytes, 20 times a second
//!   each), alone and with 200 full handshakes a second arriving.
//!
//! Prints a Markdown table of figures and ratios (dualstack / other) on stdout. With
//! `--rounds R`, every server is measured R times, in orders that balance which server goes
//! first and which follows which (a Williams design: give R a multiple of the number of
//! servers, of twice it when that is odd; a warning says when R is not): the table gives medians, and each ratio is taken within a round, then given as
//! the median and range over rounds.
//!
//! `--interleave MS` measures the handshake rows another way, for figures this VM's drift
//! does not swamp: every server given runs at once, and the clients switch from one to the
//! next every MS milliseconds, for S seconds of each (see `interleaved`).
//!
//! Every server answers the client's close_notify with its own (RFC 8446, 6.1), so each
//! does the same work per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualstack_bench::median;
use dualstack_bench::order::{circuit, order, period};
use dualstack_bench::tls::{client_config, connect, Tls};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `name` on core 0: `echo` is the library's example (with TLS unless `plain`).
fn start(name: &str, cert: &Path, key: &Path, plain: bool) -> Server {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    dualstack_bench::tls::server_program(&mut cmd, name, !plain, cert, key);
    let (child, port) = dualstack_bench::tls::start_server(&mut cmd, name, cert, key);
    Server { child, port }
}

/// The server's CPU time so far, over all its threads.
fn cpu(pid: u32) -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

fn rss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn round_trip(tls: &mut Tls, data: &[u8], back: &mut [u8]) {
    tls.write_all(data).expect("write");
    tls.read_exact(back).expect("read the echo");
    assert!(back == data, "the echo differs");
}

/// Runs `work` on `threads` threads for `seconds` after a second of warm-up; returns the
/// units done in the measured window and the server's CPU time over it.
fn measure(
    pid: u32,
    threads: usize,
    seconds: f64,
    work: impl Fn(usize, &AtomicBool, &AtomicU64) + Send + Sync + 'static,
) -> (f64, Duration, f64) {
    let work = Arc::new(work);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (work, stop, done) = (work.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || work(i, &stop, &done))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (n0, c0, t0) = (done.load(Ordering::Relaxed), cpu(pid), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (n1, c1, t1) = (done.load(Ordering::Relaxed), cpu(pid), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a client thread failed");
    }
    ((n1 - n0) as f64, c1 - c0, (t1 - t0).as_secs_f64())
}

fn bulk(port: u16, pid: u32, seconds: f64) -> (f64, f64) {
    let config = client_config(false);
    let (bytes, cpu, wall) = measure(pid, 8, seconds, move |i, stop, done| {
        let mut tls = connect(port, &config);
        let data: Vec<u8> = (0..64 * 1024).map(|j| (j * 7 + i * 13) as u8).collect();
        let mut back = vec![0; data.len()];
        while !stop.load(Ordering::Relaxed) {
            round_trip(&mut tls, &data, &mut back);
            done.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    });
    let mib = bytes / (1024.0 * 1024.0);
    (mib / wall, cpu.as_secs_f64() * 1e3 / mib)
}

/// The handshake rows' clients (`--clients`, 4 unless told).
static CLIENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(4);

fn handshakes(port: u16, pid: u32, seconds: f64, resume: bool) -> (f64, f64) {
    let config = client_config(resume);
    let resumed = Arc::new(AtomicU64::new(0));
    let counted = resumed.clone();
    let clients = CLIENTS.load(Ordering::Relaxed);
    let (n, cpu, wall) = measure(pid, clients, seconds, move |_, stop, done| {
        while !stop.load(Ordering::Relaxed) {
            if one_handshake(port, &config) {
                resumed.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    });
    if resume {
        check_resumed(counted.load(Ordering::Relaxed) as f64, n);
    }
    (n / wall, cpu.as_secs_f64() * 1e6 / n)
}

/// One client's unit of the handshake rows: a connection, its handshake, one 64-byte round
/// trip and a close_notify. Whether the handshake was a resumption.
fn one_handshake(port: u16, config: &Arc<rustls::ClientConfig>) -> bool {
    let mut tls = connect(port, config);
    let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    round_trip(&mut tls, &[7u8; 64], &mut [0u8; 64]);
    tls.conn.send_close_notify();
    let _ = tls.flush();
    resumed
}

/// Every handshake but each client's first (on each server) is a resumption, or the
/// resumed row is wrong.
fn check_resumed(resumed: f64, all: f64) {
    assert!(
        resumed >= all * 0.9,
        "only {resumed} of about {all} handshakes were resumed"
    );
}

/// One server's share of an interleaved row: handshakes, CPU time and wall time, per slice.
#[derive(Clone, Default)]
struct Slices {
    handshakes: Vec<f64>,
    cpu: Vec<Duration>,
    wall: Vec<f64>,
}

/// `--interleave MS`: the handshake row (`resume` or not) of every server at once. All are
/// started; the clients connect to one at a time, switching every `slice` along the
/// servers' `circuit` (each server follows every other exactly once a period, never
/// itself), for `seconds` of each server's time, rounded up to whole periods. A server's
/// slices and the next's are milliseconds apart, so a machine that drifts over seconds
/// (this VM's rates move by 30 % from one three-second run to the next) moves both alike. Each switch
/// waits 20 ms before its slice begins, for the handshakes in flight to finish where they
/// began. Each server has its own client configuration, so tickets are presented only to
/// the server that issued them.
fn interleaved(
    servers: &[&str],
    cert: &Path,
    key: &Path,
    seconds: f64,
    slice: Duration,
    resume: bool,
) -> Vec<Slices> {
    let started: Vec<Server> = servers.iter().map(|n| start(n, cert, key, false)).collect();
    let ports: Vec<u16> = started.iter().map(|s| s.port).collect();
    let configs: Vec<_> = servers.iter().map(|_| client_config(resume)).collect();
    let n = servers.len();
    let target = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let resumed: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let clients: Vec<_> = (0..CLIENTS.load(Ordering::Relaxed))
        .map(|_| {
            let (target, stop, done, resumed) =
                (target.clone(), stop.clone(), done.clone(), resumed.clone());
            let (ports, configs) = (ports.clone(), configs.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = target.load(Ordering::Relaxed);
                    if one_handshake(ports[i], &configs[i]) {
                        resumed[i].fetch_add(1, Ordering::Relaxed);
                    }
                    done[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Warm-up: half a second on each.
    for i in 0..n {
        target.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each server's slices, rounded up to whole periods of the circuit (n - 1 each).
    let circuit = circuit(n);
    let each = (seconds / slice.as_secs_f64()).ceil().max(1.0) as usize;
    let periods = each.div_ceil((n - 1).max(1));
    let mut slices = vec![Slices::default(); n];
    for &i in circuit.iter().cycle().take(periods * circuit.len()) {
        target.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        let pid = started[i].child.id();
        let (n0, c0, t0) = (done[i].load(Ordering::Relaxed), cpu(pid), Instant::now());
        std::thread::sleep(slice);
        let (n1, c1, t1) = (done[i].load(Ordering::Relaxed), cpu(pid), Instant::now());
        slices[i].handshakes.push((n1 - n0) as f64);
        slices[i].cpu.push(c1 - c0);
        slices[i].wall.push((t1 - t0).as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client thread failed");
    }
    if resume {
        let sum = |v: &[AtomicU64]| v.iter().map(|d| d.load(Ordering::Relaxed) as f64).sum();
        check_resumed(sum(&resumed), sum(&done));
    }
    slices
}

/// Prints an interleaved row: each server's rate and CPU per handshake over all its slices,
/// and the first server's against each other's, slice by slice (the k-th slices of two
/// servers fall in the same period): the median of those ratios, its bootstrap interval
/// and their range.
fn print_interleaved(servers: &[&str], row: &str, slices: &[Slices]) {
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    println!(
        "\n{row}, interleaved ({} slices each):\n",
        slices[0].wall.len()
    );
    println!("| server | {row}/s | CPU µs/handshake |");
    println!("|---|---|---|");
    for (name, s) in servers.iter().zip(slices) {
        let cpu: f64 = s.cpu.iter().map(Duration::as_secs_f64).sum();
        println!(
            "| {name} | {:.0} | {:.0} |",
            sum(&s.handshakes) / sum(&s.wall),
            cpu * 1e6 / sum(&s.handshakes)
        );
    }
    // A slice with no handshake has no rate to compare, and leaving it out would drop
    // one side's bad slices only: no ratios then.
    let empty: usize = slices
        .iter()
        .map(|s| s.handshakes.iter().filter(|&&h| h == 0.0).count())
        .sum();
    if empty > 0 {
        println!("\n{empty} slices had no handshake: no ratios; give --interleave more");
        return;
    }
    let rate = |s: &Slices, c: usize| s.handshakes[c] / s.wall[c];
    let per_handshake = |s: &Slices, c: usize| s.cpu[c].as_secs_f64() / s.handshakes[c];
    for (name, other) in servers.iter().zip(slices).skip(1) {
        let ours = &slices[0];
        let ratios = |f: &dyn Fn(&Slices, usize) -> f64| -> String {
            let r: Vec<f64> = (0..ours.wall.len())
                .map(|k| f(ours, k) / f(other, k))
                .collect();
            let (low, high) = range(&r);
            let (from, to) = median_interval(&r);
            format!(
                "{:.3}× (95 % interval {from:.3}–{to:.3}; single slices {low:.2}–{high:.2})",
                median(r)
            )
        };
        let whole =
            (sum(&ours.handshakes) / sum(&ours.wall)) / (sum(&other.handshakes) / sum(&other.wall));
        println!(
            "\n{}/{name}: {row} {:.3}× over all slices; slice by slice {}, CPU per handshake {}",
            servers[0],
            whole,
            ratios(&rate),
            ratios(&per_handshake),
        );
    }
}

/// The lowest and highest of `values` (NaN for none).
fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::NAN, f64::NAN), |(l, h), &x| (l.min(x), h.max(x)))
}

/// The 95 % interval of the median of `values`: the medians of 2,000 resamplings of them
/// (a bootstrap, with a fixed seed), their 2.5th and 97.5th percentiles.
fn median_interval(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        values[(state % values.len() as u64) as usize]
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| median((0..values.len()).map(|_| pick()).collect()))
        .collect();
    medians.sort_by(f64::total_cmp);
    (medians[50], medians[1949])
}

/// The p50 and p99 round-trip latency (µs) of 50 established TLS clients, each sending 64
/// bytes 20 times a second (10 threads of 5), over `seconds`; with `handshakes_per_second`
/// new clients completing full handshakes meanwhile (paced, from one more thread).
fn mixed(port: u16, seconds: f64, handshakes_per_second: f64) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let config = client_config(false);
    let churn = (handshakes_per_second > 0.0).then(|| {
        let (stop, config) = (stop.clone(), config.clone());
        std::thread::spawn(move || {
            // The clients' own handshake work must not delay the 50 clients measured on
            // the same core: this thread runs only when they do not.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a valid local read for the call only; pid 0 is this thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            let interval = Duration::from_secs_f64(1.0 / handshakes_per_second);
            let mut next = Instant::now();
            let mut done = 0u64;
            let mut back = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                let mut tls = connect(port, &config);
                round_trip(&mut tls, b"12345678", &mut back);
                done += 1;
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            done
        })
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let (stop, config) = (stop.clone(), config.clone());
            std::thread::spawn(move || {
                let mut conns: Vec<Tls> = (0..5).map(|_| connect(port, &config)).collect();
                let mut back = [0u8; 64];
                let mut times = Vec::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    for tls in &mut conns {
                        let t = Instant::now();
                        round_trip(tls, &[5u8; 64], &mut back);
                        times.push(t.elapsed().as_micros() as u32);
                    }
                    next += Duration::from_millis(50);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                times
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u32> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let rate = churn.map_or(0.0, |c| {
        c.join().unwrap() as f64 / started.elapsed().as_secs_f64()
    });
    all.sort_unstable();
    (
        dualstack_bench::percentile(&all, 50.0),
        dualstack_bench::percentile(&all, 99.0),
        rate,
    )
}

/// RSS growth per held connection (bytes).
fn idle(port: u16, pid: u32, count: usize, tls: bool) -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    let before = rss(pid);
    let config = client_config(false);
    let mut back = [0u8; 16];
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::with_capacity(count);
    for _ in 0..count {
        if tls {
            let mut t = connect(port, &config);
            round_trip(&mut t, b"0123456789abcdef", &mut back);
            held.push(Box::new(t));
        } else {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"0123456789abcdef").unwrap();
            s.read_exact(&mut back).unwrap();
            held.push(Box::new(s));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(pid);
    drop(held);
    // The server closes them all now: let it, before the next row measures latency.
    std::thread::sleep(Duration::from_secs(1));
    (after.saturating_sub(before)) as f64 / count as f64
}

/// One server's figures, in the table's column order.
fn server_row(
    name: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    seconds: f64,
    idle_count: usize,
    only: Option<&str>,
) -> Vec<f64> {
    let s = start(name, cert, key, false);
    let pid = s.child.id();
    let row = |r: &str| only.is_none_or(|o| o == r);
    let nan = (f64::NAN, f64::NAN);
    let (mibs, ms_per_mib) = if row("bulk") {
        bulk(s.port, pid, seconds)
    } else {
        nan
    };
    let (full, us_full) = if row("full") {
        handshakes(s.port, pid, seconds, false)
    } else {
        nan
    };
    let (resumed, us_resumed) = if row("resumed") {
        handshakes(s.port, pid, seconds, true)
    } else {
        nan
    };
    let per_conn = if row("idle") {
        idle(s.port, pid, idle_count, true)
    } else {
        f64::NAN
    };
    let (calm_p50, calm_p99, busy_p99, rate) = if row("mixed") {
        let (p50, p99, _) = mixed(s.port, seconds, 0.0);
        let (_, busy_p99, rate) = mixed(s.port, seconds, 200.0);
        (p50, p99, busy_p99, rate)
    } else {
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
    };
    eprintln!(
        "{name}: 50 small clients p50 {calm_p50:.0} us, p99 {calm_p99:.0} us; with {rate:.0} handshakes/s p99 {busy_p99:.0} us ({:.2}x)",
        busy_p99 / calm_p99
    );
    eprintln!(
        "{name}: bulk {mibs:.1} MiB/s ({ms_per_mib:.2} ms CPU/MiB), full {full:.0}/s ({us_full:.0} us), resumed {resumed:.0}/s ({us_resumed:.0} us), idle {per_conn:.0} B/conn"
    );
    vec![
        mibs, ms_per_mib, full, us_full, resumed, us_resumed, per_conn, calm_p99, busy_p99,
    ]
}

fn main() {
    let mut seconds = 5.0;
    let mut idle_count = 800;
    let mut rounds = 1;
    let mut only: Option<String> = None;
    let mut interleave: Option<Duration> = None;
    let mut servers = vec!["echo", "tokio_tls_echo", "mio_tls_echo", "echo-threads"];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next().filter(|_| flag != "--help" && flag != "-h") else {
            usage(&flag);
        };
        let bad = |what: &str| -> ! { usage(&format!("{flag} {value}: {what}")) };
        match flag.as_str() {
            "--seconds" => {
                seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .unwrap_or_else(|| bad("not seconds above 0 and up to a day"))
            }
            "--idle" => idle_count = value.parse().unwrap_or_else(|_| bad("not a count")),
            "--rounds" => {
                rounds = value
                    .parse::<usize>()
                    .unwrap_or_else(|_| bad("not a count"))
                    .max(1)
            }
            "--only" => only = Some(value),
            "--clients" => CLIENTS.store(
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| bad("not a count above 0")),
                Ordering::Relaxed,
            ),
            "--server" => {
                let asked: Vec<&str> = value.split(',').collect();
                if let Some(unknown) = asked.iter().find(|a| !servers.contains(a)) {
                    bad(&format!("no server named {unknown:?}"));
                }
                servers.retain(|s| asked.contains(s));
            }
            "--interleave" => {
                interleave = Some(Duration::from_millis(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|&ms| ms > 0 && ms <= 60_000)
                        .unwrap_or_else(|| bad("not milliseconds from 1 to 60000")),
                ))
            }
            _ => usage(&flag),
        }
    }
    if servers.is_empty() {
        usage("--server: no such server");
    }
    let dir =
        TempDir(std::env::temp_dir().join(format!("dualstack-tls-bench-{}", std::process::id())));
    let (cert, key) = dualstack_bench::tls::write_localhost_cert(&dir.0);
    if let Some(slice) = interleave {
        for (row, resume) in [("full", false), ("resumed", true)] {
            if only.as_deref().is_none_or(|o| o == row) {
                let slices = interleaved(&servers, &cert, &key, seconds, slice, resume);
                print_interleaved(&servers, row, &slices);
            }
        }
        return;
    }
    // Each round measures every server, in the order `order` gives.
    if !rounds.is_multiple_of(period(servers.len())) {
        eprintln!(
            "tls_bench: {rounds} rounds are not whole periods of {} (the orders balance \
             only over whole periods)",
            period(servers.len())
        );
    }
    let mut runs: Vec<Vec<Vec<f64>>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for i in order(servers.len(), round) {
            let figures = server_row(
                servers[i],
                &cert,
                &key,
                seconds,
                idle_count,
                only.as_deref(),
            );
            runs[i].push(figures);
        }
    }
    let column = |i: usize, c: usize| median(runs[i].iter().map(|v| v[c]).collect());
    let rows: Vec<(&str, Vec<f64>)> = servers
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, (0..9).map(|c| column(i, c)).collect()))
        .collect();
    let plain = {
        let s = start("echo", &cert, &key, true);
        idle(s.port, s.child.id(), idle_count, false)
    };
    if rows.len() < 4 {
        return; // one server asked for: its line above is the result
    }
    let ours = rows[0].1.clone();
    println!("Medians over {rounds} round(s):\n");
    println!("| server | bulk MiB/s | CPU ms/MiB | full handshakes/s | CPU µs/handshake | resumed/s | CPU µs/resumed | idle B/conn | p99 µs, 50 clients | p99 µs, + 200 handshakes/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, v) in &rows {
        println!(
            "| {name} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
        );
    }
    println!("| echo, plain TCP | | | | | | | {plain:.0} | | |");
    // Ratios within each round (the same minutes of the machine), then their median and
    // range over rounds.
    let ratio = |other: usize, c: usize| {
        let r: Vec<f64> = (0..rounds)
            .map(|k| runs[0][k][c] / runs[other][k][c])
            .collect();
        let (low, high) = range(&r);
        match rounds {
            1 => format!("{:.3}×", median(r)),
            _ => format!("{:.3}× ({low:.2}–{high:.2})", median(r)),
        }
    };
    for (i, (name, _)) in rows.iter().enumerate().skip(1).take(2) {
        println!(
            "\necho/{name}: bulk {} (CPU/MiB {}), full handshakes {} (CPU/handshake {}), resumed {} (CPU {}), idle memory {}",
            ratio(i, 0),
            ratio(i, 1),
            ratio(i, 2),
            ratio(i, 3),
            ratio(i, 4),
            ratio(i, 5),
            ratio(i, 6),
        );
    }
    println!(
        "\nTLS over plain per idle connection: {:.0} B",
        ours[6] - plain
    );
}

/// The certificate's directory, removed however `main` ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Says what was wrong (`--help` asks for the usage alone) and how to call this; exits 2.
fn usage(what: &str) -> ! {
    if what != "--help" && what != "-h" {
        eprintln!("tls_bench: {what}");
    }
    eprintln!(
        "usage: taskset -c 1 tls_bench [--seconds S] [--idle N] [--rounds R] \
         [--only bulk|full|resumed|idle|mixed] [--clients N] [--interleave MS] \
         [--server NAME[,NAME...]] (names: echo, tokio_tls_echo, mio_tls_echo, echo-threads)"
    );
    std::process::exit(2)
}
