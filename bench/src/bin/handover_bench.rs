//! Hand-over under churn (issue #24): what a hand-over every second costs a churn of short
//! connections, and what a naive restart (stop, then start on the same port) costs it.
//!
//! ```text
//! cargo build --release -p dualstack --example echo
//! taskset -c 1 cargo run --release -p dualstack-bench --bin handover_bench -- [--seconds S] [--threads N]
//! ```
//!
//! The release echo example runs on `127.0.0.1:0` with `--drain-timeout 2`, pinned to core 0
//! (`taskset -c 0`; its successors inherit the affinity). This program's clients run where it
//! runs: start it with `taskset -c 1`. N client threads (default 4) each loop: connect
//! (within 1 s), write a short line, read its echo (within 1 s), close. Every failure is
//! counted by kind: refused, reset, timeout, a connect slower than 1 s, wrong bytes, other
//! (an early EOF).
//! The clients are the limit on a 2-core machine (their core busy, the server's not): the
//! rate shows whether hand-overs stall or fail clients, not what they cost the server.
//!
//! Three phases of S seconds each (default 5):
//! - (a) no hand-over;
//! - (b) a hand-over every second: SIGUSR2 to the process serving now, then the time to the
//!   old process's `hand-over: process PID is ready and accepts` log line;
//! - (c) the control: a naive restart every second (SIGTERM to the process serving now,
//!   wait for it to end, start a new echo on the same port).
//!
//! Prints a Markdown table on stdout. Linux only (`/proc`, `prctl`, `taskset`). This program
//! makes itself the reaper of the processes it starts (a successor whose parent ended is
//! still its to wait for) and, at the end, kills by pid those that still run.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The longest any one wait of this program lasts (a log line, a process's end).
const WAIT: Duration = Duration::from_secs(5);
/// A connect or a read slower than this is a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

fn echo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let echo = exe.parent().unwrap().join("examples/echo");
    if !echo.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release -p dualstack --example echo` first",
            echo.display()
        );
        std::process::exit(2);
    }
    echo
}

/// Makes this process the reaper of the orphans among its descendants.
fn reap_orphans() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) sets a flag of this process; it reads no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// The state letter and the parent of process `pid`, if it exists.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text.rsplit_once(") ")?.1.split(' ');
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether process `pid` has ended; reaps it if it is ours.
fn gone(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG writes the status into a local; a pid that is not our
    // child only makes it fail.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    stat(pid).is_none_or(|(state, _)| state == 'Z')
}

fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill sends a signal to a process this program started (checked by the
    // callers); it touches no memory.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// Waits (at most `WAIT`) for process `pid` to end.
fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + WAIT;
    while !gone(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Lines of a pipe, on a channel, read by a thread of their own until every writer closes
/// it (successors inherit the pipes: they must always be read).
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Every echo process this program started, directly or through a hand-over.
struct Family {
    echo: PathBuf,
    children: Vec<Child>,
    /// Every pid that ever served, in order.
    pids: Vec<u32>,
}

impl Family {
    /// Starts the echo example on core 0 with `args`; returns its pid, its stdout lines and
    /// its stderr lines (when `log`, else stderr is dropped).
    fn start(
        &mut self,
        args: &[&str],
        log: bool,
    ) -> (u32, mpsc::Receiver<String>, Option<mpsc::Receiver<String>>) {
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(&self.echo)
            .args(args)
            .env("RUST_LOG", if log { "info" } else { "warn" })
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if log { Stdio::piped() } else { Stdio::null() })
            .spawn()
            .expect("start taskset -c 0 echo");
        let out = lines(child.stdout.take().unwrap());
        let err = child.stderr.take().map(lines);
        // taskset execs the echo example: the same pid.
        let pid = child.id();
        self.children.push(child);
        self.pids.push(pid);
        (pid, out, err)
    }

    /// Whether `pid` is one of ours: a pid we saw serve, still there, whose parent is this
    /// process or another of ours (a pid reused by someone else is not).
    fn ours(&self, pid: u32) -> bool {
        self.pids.contains(&pid)
            && stat(pid).is_some_and(|(state, ppid)| {
                state != 'Z' && (ppid == std::process::id() || self.pids.contains(&ppid))
            })
    }

    fn kill_all(&mut self) {
        for &pid in self.pids.iter().rev() {
            if !gone(pid) && self.ours(pid) {
                signal(pid, libc::SIGKILL);
                wait_gone(pid);
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The first `listening on` line of a process, and the address in it.
fn listening(out: &mpsc::Receiver<String>) -> Option<(String, SocketAddr)> {
    let line = out.recv_timeout(WAIT).ok()?;
    let addr = dualstack_support::parse_listening_line(&line)?.0;
    Some((line, addr))
}

/// What the churn saw in one phase.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    timeout: AtomicU64,
    slow: AtomicU64,
    wrong: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn failures(&self) -> u64 {
        [
            &self.refused,
            &self.reset,
            &self.timeout,
            &self.slow,
            &self.wrong,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// The failures by kind, those that happened.
    fn detail(&self) -> String {
        let kinds = [
            ("refused", &self.refused),
            ("reset", &self.reset),
            ("timeout", &self.timeout),
            ("connect > 1 s", &self.slow),
            ("wrong bytes", &self.wrong),
            ("other", &self.other),
        ];
        let parts: Vec<String> = kinds
            .iter()
            .map(|(name, c)| (name, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        if parts.is_empty() {
            "0".to_string()
        } else {
            format!("{} ({})", self.failures(), parts.join(", "))
        }
    }

    fn count(&self, e: &std::io::Error) {
        let c = match e.kind() {
            ErrorKind::ConnectionRefused => &self.refused,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                &self.reset
            }
            ErrorKind::TimedOut | ErrorKind::WouldBlock => &self.timeout,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One short connection: connect (within 1 s), a line, its echo (within 1 s), close.
fn churn_once(addr: SocketAddr, line: &[u8], got: &mut [u8], counts: &Counts) {
    let started = Instant::now();
    let mut s = match TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return counts.count(&e),
    };
    if started.elapsed() > CLIENT_TIMEOUT {
        counts.slow.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let result = s
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| s.write_all(line))
        .and_then(|()| s.read_exact(got));
    match result {
        Err(e) => counts.count(&e),
        Ok(()) if got != line => {
            counts.wrong.fetch_add(1, Ordering::Relaxed);
        }
        Ok(()) => {
            counts.ok.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The churn of `THREADS` clients on `addr` until `stop` (and at most `limit`).
struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let threads = (0..threads)
            .map(|t| {
                let (stop, counts) = (stop.clone(), counts.clone());
                std::thread::spawn(move || {
                    let end = Instant::now() + limit;
                    let mut got = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let line = format!("churn {t} {n}\n");
                        got.resize(line.len(), 0);
                        churn_once(addr, line.as_bytes(), &mut got, &counts);
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            counts,
            threads,
            started: Instant::now(),
        }
    }

    /// Stops the clients; returns what they saw and how long they ran.
    fn stop(self) -> (Arc<Counts>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        for t in self.threads {
            t.join().unwrap();
        }
        (self.counts, elapsed)
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Milliseconds: the median and the maximum of `times`.
fn median_max(times: &mut [Duration]) -> (f64, f64) {
    if times.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = times.len();
    let median = if n % 2 == 1 {
        ms(times[n / 2])
    } else {
        (ms(times[n / 2 - 1]) + ms(times[n / 2])) / 2.0
    };
    (median, ms(times[n - 1]))
}

fn main() {
    let mut seconds = 5u64;
    let mut threads = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| (1..=600).contains(&s))
                    .unwrap_or_else(|| {
                        eprintln!("--seconds wants a whole number from 1 to 600");
                        std::process::exit(2);
                    })
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| (1..=64).contains(&n))
                    .unwrap_or_else(|| {
                        eprintln!("--threads wants a whole number from 1 to 64");
                        std::process::exit(2);
                    })
            }
            _ => {
                eprintln!("usage: taskset -c 1 handover_bench [--seconds S] [--threads N]");
                std::process::exit(2);
            }
        }
    }
    let phase = Duration::from_secs(seconds);
    // A phase's clients stop by themselves at the latest this long after they start.
    let limit = phase + WAIT;
    reap_orphans();
    let mut family = Family {
        echo: echo_binary(),
        children: Vec::new(),
        pids: Vec::new(),
    };

    let (first, out, err) = family.start(&["--drain-timeout", "2", "127.0.0.1:0"], true);
    let err = err.unwrap();
    let (first_line, addr) = listening(&out).expect("the echo example printed no listening line");
    eprintln!("{first_line} (pid {first})");
    let mut log = Vec::new();

    // (a) No hand-over.
    let load = Load::start(addr, threads, limit);
    std::thread::sleep(phase);
    let (quiet, quiet_time) = load.stop();
    eprintln!(
        "(a) {} connections, failures {}",
        quiet.ok.load(Ordering::Relaxed),
        quiet.detail()
    );

    // (b) A hand-over every second, at the middle of each second.
    let mut pid = first;
    let mut ready = Vec::new();
    let mut stray_lines = 0;
    let mut missed = 0;
    let load = Load::start(addr, threads, limit);
    let t0 = Instant::now();
    for k in 0..seconds {
        sleep_until(t0 + Duration::from_millis(500 + 1000 * k));
        let old = pid;
        let asked = Instant::now();
        if !signal(old, libc::SIGUSR2) {
            eprintln!("(b) SIGUSR2 to {old} failed");
            missed += 1;
            continue;
        }
        let deadline = asked + WAIT;
        let mut new = None;
        while let Ok(line) = err.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let found = line.contains("is ready and accepts");
            log.push(line);
            if found {
                ready.push(asked.elapsed());
                new = log
                    .last()
                    .unwrap()
                    .split("hand-over: process ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|p| p.parse::<u32>().ok());
                break;
            }
        }
        match new {
            Some(new) => {
                family.pids.push(new);
                pid = new;
                // The successor's own line: the same address.
                match out.recv_timeout(WAIT) {
                    Ok(line) if line == first_line => {}
                    Ok(line) => {
                        eprintln!("(b) successor {new} printed {line:?}");
                        stray_lines += 1;
                    }
                    Err(_) => {
                        eprintln!("(b) successor {new} printed no listening line");
                        stray_lines += 1;
                    }
                }
            }
            None => {
                eprintln!("(b) no `is ready` line within {WAIT:?} of SIGUSR2 to {old}");
                missed += 1;
            }
        }
    }
    sleep_until(t0 + phase);
    let (handed, handed_time) = load.stop();
    let hand_overs = ready.len();
    let (ready_median, ready_max) = median_max(&mut ready);
    eprintln!(
        "(b) {} connections, failures {}, {hand_overs} hand-overs, ready in {ready_median:.1} ms (median), {ready_max:.1} ms (max)",
        handed.ok.load(Ordering::Relaxed),
        handed.detail()
    );
    // Every old process ends within its drain deadline (2 s) and a little.
    let mut lingering = 0;
    for &old in family.pids.iter().filter(|&&p| p != pid) {
        if !wait_gone(old) {
            lingering += 1;
            eprintln!("(b) old process {old} still runs");
        }
    }

    // (c) The control: a naive restart every second.
    let spec = format!("127.0.0.1:{}", addr.port());
    let mut down = Vec::new();
    let mut restarts = 0;
    let mut restart_failures = 0;
    let load = Load::start(addr, threads, limit);
    let t0 = Instant::now();
    'restarts: for k in 0..seconds {
        sleep_until(t0 + Duration::from_millis(500 + 1000 * k));
        let asked = Instant::now();
        if !(family.ours(pid) && signal(pid, libc::SIGTERM) && wait_gone(pid)) {
            eprintln!("(c) process {pid} did not stop on SIGTERM");
            restart_failures += 1;
            break;
        }
        // The port is free now; a start that finds it taken again is tried a few times.
        for _ in 0..5 {
            let (new, out, _) = family.start(&[&spec], false);
            match listening(&out) {
                Some((line, _)) if line == first_line => {
                    down.push(asked.elapsed());
                    restarts += 1;
                    pid = new;
                    continue 'restarts;
                }
                other => {
                    eprintln!("(c) restart {k}: {other:?}");
                    restart_failures += 1;
                    if family.ours(new) {
                        signal(new, libc::SIGKILL);
                    }
                    wait_gone(new);
                }
            }
        }
        break;
    }
    sleep_until(t0 + phase);
    let (naive, naive_time) = load.stop();
    let (down_median, down_max) = median_max(&mut down);
    eprintln!(
        "(c) {} connections, failures {}, {restarts} restarts, down {down_median:.1} ms (median), {down_max:.1} ms (max)",
        naive.ok.load(Ordering::Relaxed),
        naive.detail()
    );

    family.kill_all();

    let rate = |c: &Counts, t: Duration| c.ok.load(Ordering::Relaxed) as f64 / t.as_secs_f64();
    let quiet_rate = rate(&quiet, quiet_time);
    let handed_rate = rate(&handed, handed_time);
    let naive_rate = rate(&naive, naive_time);
    println!(
        "| phase ({seconds} s each, {threads} clients) | connections/s | vs (a) | failures | hand-overs / restarts | ms from SIGUSR2 to `is ready` / from SIGTERM to listening again (median, max) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| (a) no hand-over | {quiet_rate:.0} | 1.000 | {} | 0 | |",
        quiet.detail()
    );
    println!(
        "| (b) a hand-over every second | {handed_rate:.0} | {:.3} | {} | {hand_overs} | {ready_median:.1}, {ready_max:.1} |",
        handed_rate / quiet_rate,
        handed.detail()
    );
    println!(
        "| (c) control: naive restart every second | {naive_rate:.0} | {:.3} | {} | {restarts} | {down_median:.1}, {down_max:.1} |",
        naive_rate / quiet_rate,
        naive.detail()
    );
    if missed + stray_lines + lingering + restart_failures > 0 {
        println!(
            "\nodd: {missed} hand-overs not ready in time, {stray_lines} successors with other listening lines, {lingering} old processes past their drain, {restart_failures} naive restarts that failed"
        );
    }
    let handed_fail = handed.failures();
    if handed_fail > 0 || quiet.failures() > 0 {
        eprintln!("FAILED: clients failed without a naive restart");
        drop(family);
        std::process::exit(1);
    }
}
