//! Hand-over (issue #24): a server passes its listening sockets to a successor it starts,
//! which takes them over; the old process stops accepting and drains. Driven through the
//! echo example (SIGUSR2) under a churn of clients, and through an in-process server whose
//! successor is this test binary run again as one of the `successor_*` functions below.
//!
//! Linux only: descriptor passing through `exec` and `/proc`. The test process makes itself
//! the reaper of the processes it starts (`PR_SET_CHILD_SUBREAPER`), so a successor whose
//! parent ended is still ours to wait for and to kill by its pid.
#![cfg(target_os = "linux")]

#[path = "util/pki.rs"]
mod pki;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack::{
    ConnId, Context, HandOver, HandOverErrorKind, HandOverEvent, Handler, Input, ListenAddr, Server,
};
use dualstack_support::Tool;

/// Makes this process the reaper of the orphans among its descendants, once.
fn reap_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) sets a flag of this process; it reads no
        // memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet); reaps it if it is
/// ours.
fn gone(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG writes the status into a local; a pid that is not our
    // child only makes it fail.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Kills process `pid` (one this test started) and reaps it.
fn kill(pid: u32) {
    // SAFETY: kill sends a signal to a process this test started; no memory is touched.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: as in `kill`.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "signal {pid}");
}

/// The echo example and the successors it hands over to: every process writes to the same
/// stdout and stderr pipes, read here line by line.
struct Echo {
    first: Child,
    /// The process serving now.
    pid: u32,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line so far, for a failure's message.
    log: Vec<String>,
    /// Every process that ever served, in order.
    pids: Vec<u32>,
    /// The first process's process group, which every successor joins once ready.
    group: i32,
}

impl Echo {
    fn start(args: &[&str]) -> Echo {
        Echo::start_with(args, &[])
    }

    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Echo {
        Echo::start_full(args, env, None)
    }

    /// With `inherit` open at descriptor 40 in the first process, not close-on-exec.
    fn start_full(args: &[&str], env: &[(&str, &str)], inherit: Option<&std::fs::File>) -> Echo {
        reap_orphans();
        let mut command = Command::new(util::example("echo"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        if let Some(file) = inherit {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = file.as_raw_fd();
            // SAFETY: dup2 is async-signal-safe and touches no memory; its copy at 40 is
            // not close-on-exec, so the example inherits it.
            unsafe {
                command.pre_exec(move || match libc::dup2(fd, 40) {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                });
            }
        }
        Echo::adopt(command.spawn().expect("start the echo example"))
    }

    /// The `listening on` lines a process prints at start (all at once, flushed).
    fn listening(&self) -> Vec<String> {
        let mut lines = vec![self
            .stdout
            .recv_timeout(util::TIMEOUT)
            .expect("no listening line")];
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
        lines
    }

    /// Waits for a stderr line that contains `what`; returns it.
    fn expect_log(&mut self, what: &str) -> String {
        let deadline = Instant::now() + util::TIMEOUT * 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {what:?}; the log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// SIGUSR2 to the process serving now; returns the successor's pid once the old one
    /// says it is ready, and the successor's `listening on` lines.
    fn hand_over(&mut self) -> (u32, Vec<String>) {
        signal(self.pid, libc::SIGUSR2);
        let line = self.expect_log("is ready and accepts");
        let pid: u32 = line
            .split("hand-over: process ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"));
        let lines = self.listening();
        // Once ready, the successor is in its predecessor's process group.
        // SAFETY: getpgid reads nothing of ours.
        let group = |pid: u32| unsafe { libc::getpgid(pid as i32) };
        let want = self.group;
        let deadline = Instant::now() + util::TIMEOUT;
        while group(pid) != want {
            assert!(
                Instant::now() < deadline,
                "successor {pid} is in group {}, not {want}",
                group(pid)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.pid = pid;
        self.pids.push(pid);
        (pid, lines)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        for &pid in &self.pids {
            kill(pid);
        }
        let _ = self.first.wait();
    }
}

/// The addresses of `listening on ADDR (MODE)` lines.
fn addrs(lines: &[String]) -> Vec<SocketAddr> {
    lines
        .iter()
        .map(|l| {
            dualstack_support::parse_listening_line(l)
                .unwrap_or_else(|| panic!("not a listening line: {l:?}"))
                .0
        })
        .collect()
}

/// What the load saw go wrong, and how much went right.
#[derive(Debug, Default)]
struct Report {
    failures: Vec<String>,
    churned: usize,
    /// Long-lived connections that ended cleanly, and the bytes they had echoed.
    streams: usize,
    streamed: u64,
}

/// A churn of short connections (connect, a line, its echo, close) every 4 ms over
/// `addrs`, and three clients that each keep a connection streaming for about a second
/// (chunks echoed and checked), end it (FIN, then the server's FIN) and open the next.
struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let mut threads = Vec::new();
        {
            let (stop, report, addrs) = (stop.clone(), report.clone(), addrs.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                // Bounded: at most 60 s of churn whatever happens.
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Acquire) && Instant::now() < end {
                    let addr = addrs[n as usize % addrs.len()];
                    match churn_once(addr, n) {
                        Ok(()) => report.lock().unwrap().churned += 1,
                        Err(e) => report.lock().unwrap().failures.push(e),
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(4));
                }
            }));
        }
        for s in 0..3u64 {
            let (stop, report, addrs) = (stop.clone(), report.clone(), addrs.clone());
            threads.push(std::thread::spawn(move || {
                let mut k = 0u64;
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Acquire) && Instant::now() < end {
                    let addr = addrs[(s + k) as usize % addrs.len()];
                    match stream_once(addr, s * 1000 + k) {
                        Ok(bytes) => {
                            let mut r = report.lock().unwrap();
                            r.streams += 1;
                            r.streamed += bytes;
                        }
                        Err(e) => report.lock().unwrap().failures.push(e),
                    }
                    k += 1;
                }
            }));
        }
        Load {
            stop,
            report,
            threads,
        }
    }

    fn stop(self) -> Report {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.report).unwrap().into_inner().unwrap()
    }
}

/// One short connection: connect (within a second), a line, its echo, close.
fn churn_once(addr: SocketAddr, n: u64) -> Result<(), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("churn {n}: connect {addr}: {e}"))?;
    if started.elapsed() > Duration::from_secs(1) {
        return Err(format!(
            "churn {n}: connect {addr} took {:?}",
            started.elapsed()
        ));
    }
    s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let line = format!("churn {n}\n");
    s.write_all(line.as_bytes())
        .map_err(|e| format!("churn {n}: write to {addr}: {e}"))?;
    let mut got = vec![0; line.len()];
    s.read_exact(&mut got)
        .map_err(|e| format!("churn {n}: read from {addr}: {e}"))?;
    if got != line.as_bytes() {
        return Err(format!("churn {n}: {addr} echoed {got:?}"));
    }
    Ok(())
}

/// One long-lived connection: 16 KiB chunks for about a second, each echo checked, then a
/// FIN and the server's FIN with nothing more. Returns the bytes echoed.
fn stream_once(addr: SocketAddr, id: u64) -> Result<u64, String> {
    let what = |step: &str, e: std::io::Error| format!("stream {id} to {addr}: {step}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| what("connect", e))?;
    s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let started = Instant::now();
    let mut offset = 0u64;
    let mut got = vec![0; 16 * 1024];
    while started.elapsed() < Duration::from_secs(1) {
        let chunk = util::pattern(id, offset, 16 * 1024);
        s.write_all(&chunk).map_err(|e| what("write", e))?;
        s.read_exact(&mut got).map_err(|e| what("read", e))?;
        if got != chunk {
            return Err(format!("stream {id} to {addr}: bytes changed at {offset}"));
        }
        offset += chunk.len() as u64;
        std::thread::sleep(Duration::from_millis(5));
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| what("shutdown", e))?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| what("read to the end", e))?;
    if !rest.is_empty() {
        return Err(format!(
            "stream {id} to {addr}: {} bytes after the last echo",
            rest.len()
        ));
    }
    Ok(offset)
}

/// The test: ten successive hand-overs of `localhost:0` (two sockets, one port)
/// under a churn of short connections and long-lived streams: nothing refused or reset, no
/// connect over a second, no byte lost or changed, both sockets still there at the end,
/// every old process gone within the drain deadline and a little.
#[test]
fn ten_hand_overs_under_churn_refuse_reset_and_lose_nothing() {
    let mut echo = Echo::start(&["--drain-timeout", "4", "localhost:0"]);
    let first = echo.listening();
    let listening = addrs(&first);
    assert_eq!(
        listening.len(),
        if util::has_ipv6() { 2 } else { 1 },
        "{first:?}"
    );
    let load = Load::start(listening.clone());
    std::thread::sleep(Duration::from_millis(500));
    let mut handed_at = Vec::new();
    for round in 0..10 {
        let old = echo.pid;
        let asked = Instant::now();
        let (pid, lines) = echo.hand_over();
        handed_at.push((old, Instant::now()));
        assert_ne!(pid, old);
        assert_eq!(
            lines, first,
            "round {round}: the successor listens elsewhere"
        );
        eprintln!(
            "hand-over {round}: {old} -> {pid} ready in {:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert!(
        report.failures.is_empty(),
        "{} failures, first: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.churned > 500, "{report:?}");
    assert!(report.streams >= 6, "{report:?}");
    // Every old process ends within the drain deadline (4 s) and a little.
    for (old, at) in handed_at {
        while !gone(old) {
            assert!(
                at.elapsed() < Duration::from_secs(7),
                "process {old} still runs {:?} after its hand-over",
                at.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for addr in &listening {
        let mut s = util::connect(addr);
        assert_eq!(util::round_trip(&mut s, b"still here"), b"still here");
    }
}

/// The same churn across a naive restart (stop, then start on the same port) shows
/// failures: the test above could see them.
#[test]
fn a_naive_restart_under_the_same_churn_fails_clients() {
    let mut echo = Echo::start(&["127.0.0.1:0"]);
    let first = echo.listening();
    let port = addrs(&first)[0].port();
    let load = Load::start(addrs(&first));
    std::thread::sleep(Duration::from_millis(300));
    signal(echo.pid, libc::SIGTERM);
    let deadline = Instant::now() + util::TIMEOUT;
    while echo.first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the echo example did not stop");
        std::thread::sleep(Duration::from_millis(2));
    }
    let spec = format!("127.0.0.1:{port}");
    let second = Echo::start(&[&spec]);
    assert_eq!(second.listening(), first);
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert!(
        !report.failures.is_empty(),
        "a restart without a hand-over failed no client: {report:?}"
    );
    drop(second);
}

/// A long-lived connection that never ends is closed gracefully at the drain deadline:
/// every echo it was owed, then a FIN (not a reset), and the old process ends.
#[test]
fn a_connection_that_never_ends_is_closed_gracefully_at_the_drain_deadline() {
    let mut echo = Echo::start(&["--drain-timeout", "1", "127.0.0.1:0"]);
    let addr = addrs(&echo.listening())[0];
    let mut long = util::connect(addr);
    assert_eq!(util::round_trip(&mut long, b"before"), b"before");
    let old = echo.pid;
    let (new, _) = echo.hand_over();
    // Served by the old process while it drains.
    assert_eq!(util::round_trip(&mut long, b"during"), b"during");
    let mut fresh = util::connect(addr);
    assert_eq!(util::round_trip(&mut fresh, b"new"), b"new");
    let started = Instant::now();
    let mut rest = Vec::new();
    long.read_to_end(&mut rest)
        .expect("a FIN at the drain deadline, not a reset");
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(old) {
        assert!(Instant::now() < deadline, "the old process did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!gone(new));
    assert_eq!(util::round_trip(&mut fresh, b"after"), b"after");
}

/// `:0` is one dual-stack socket: handed over, it is still one, read back as dual-stack,
/// and IPv4 clients still reach it.
#[test]
fn a_dual_stack_wildcard_is_handed_over_as_it_is() {
    if !util::has_ipv6() {
        return;
    }
    let mut echo = Echo::start(&[":0"]);
    let first = echo.listening();
    assert_eq!(first.len(), 1);
    assert!(first[0].ends_with("(dual-stack)"), "{first:?}");
    let port = addrs(&first)[0].port();
    for _ in 0..2 {
        let (_, lines) = echo.hand_over();
        assert_eq!(lines, first);
    }
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let mut s = util::connect(addr.as_str());
        assert_eq!(util::round_trip(&mut s, b"both"), b"both");
    }
}

/// The file of a Unix-domain socket never disappears: a client that connects every 10 ms
/// through five hand-overs never finds it missing nor refused; the last process removes
/// it when it stops.
#[test]
fn a_unix_socket_path_is_never_missing_during_hand_overs() {
    let dir = tempdir("unix");
    let path = dir.join("echo.sock");
    let spec = format!("unix:{}", path.display());
    let mut echo = Echo::start(&["--drain-timeout", "1", &spec]);
    let first = echo.listening();
    assert_eq!(first, [format!("listening on {spec} (unix)")]);
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failures) = (0, Vec::new());
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Acquire) && Instant::now() < end {
                let result = std::os::unix::net::UnixStream::connect(&path).and_then(|mut s| {
                    s.set_read_timeout(Some(util::TIMEOUT))?;
                    s.write_all(b"x")?;
                    let mut b = [0; 1];
                    s.read_exact(&mut b)?;
                    Ok(())
                });
                match result {
                    Ok(()) => ok += 1,
                    Err(e) => failures.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failures)
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        let (_, lines) = echo.hand_over();
        assert_eq!(lines, first);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let (ok, failures) = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 50, "{ok} connections");
    // The old processes left the file; the one serving now removes it as it stops.
    let last = echo.pid;
    signal(last, libc::SIGTERM);
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(last) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!path.exists(), "the last process left its socket file");
}

/// A Linux abstract socket has no file: it is handed over like any other.
#[test]
fn an_abstract_socket_is_handed_over() {
    let name = format!("@dualstack-handover-{}", std::process::id());
    let mut echo = Echo::start(&[&name]);
    let first = echo.listening();
    for _ in 0..2 {
        let (_, lines) = echo.hand_over();
        assert_eq!(lines, first);
    }
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    s.write_all(b"abstract").unwrap();
    let mut b = [0; 8];
    s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abstract");
}

/// A socket file that replaced the one the predecessor made (another service's, bound at
/// the path since) is never the successor's to remove.
#[test]
fn a_socket_file_the_predecessor_did_not_make_is_left_alone() {
    let dir = tempdir("other-file");
    let path = dir.join("s.sock");
    let spec = format!("unix:{}", path.display());
    let mut echo = Echo::start(&["--drain-timeout", "1", &spec]);
    echo.listening();
    std::fs::remove_file(&path).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (pid, _) = echo.hand_over();
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(pid) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(path.exists(), "the successor removed another socket's file");
    drop(other);
}

/// The successor is the program as the file on disk is now: a binary replaced since the
/// server started is the new one. A file that cannot be run is a start failure, reported
/// as such, and the server goes on. A successor that ends while its predecessor drains is
/// reaped: no zombie.
#[test]
fn the_program_replaced_on_disk_is_the_successor_and_one_that_cannot_run_is_reported() {
    let dir = tempdir("replaced");
    let program = dir.join("echo");
    std::fs::copy(util::example("echo"), &program).unwrap();
    reap_orphans();
    let mut command = Command::new(&program);
    command
        .args(["--drain-timeout", "20", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut echo = Echo::adopt(command.spawn().unwrap());
    let addr = addrs(&echo.listening())[0];
    // Replaced as package managers do: a new file renamed over the old one.
    let new = dir.join("echo.new");
    std::fs::copy(util::example("echo"), &new).unwrap();
    std::fs::rename(&new, &program).unwrap();
    let mut held = util::connect(addr);
    assert_eq!(util::round_trip(&mut held, b"held"), b"held");
    let old = echo.pid;
    let (successor, _) = echo.hand_over();
    let exe = std::fs::read_link(format!("/proc/{successor}/exe")).unwrap();
    assert_eq!(
        exe, program,
        "the successor does not run the file on disk now"
    );
    // Not runnable any more: the next hand-over fails to start, and says so.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o600)).unwrap();
    signal(successor, libc::SIGUSR2);
    let line = echo.expect_log("hand-over failed");
    assert!(line.contains("cannot start"), "{line}");
    assert!(line.contains("Permission denied"), "{line}");
    let mut s = util::connect(addr);
    assert_eq!(util::round_trip(&mut s, b"goes on"), b"goes on");
    // The successor ends while its predecessor still drains (the held connection): the
    // predecessor reaps it.
    signal(successor, libc::SIGKILL);
    let deadline = Instant::now() + util::TIMEOUT;
    while std::path::Path::new(&format!("/proc/{successor}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the successor is a zombie of its draining predecessor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!gone(old), "the predecessor should still drain");
    assert_eq!(util::round_trip(&mut held, b"still"), b"still");
}

/// A copy of the echo example at `dir/echo` (started from there, so a hand-over starts
/// whatever `dir/echo` is then), the real one beside it at `dir/echo.real`.
fn echo_copy(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let program = dir.join("echo");
    let real = dir.join("echo.real");
    std::fs::copy(util::example("echo"), &program).unwrap();
    std::fs::copy(util::example("echo"), &real).unwrap();
    (program, real)
}

/// Replaces `program` with a shell script whose body is `body`.
fn replace_with_script(program: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let new = program.with_extension("new");
    std::fs::write(&new, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, program).unwrap();
}

/// A wrapper that starts the server as its child (no `exec`): the service manager is told
/// the server's pid, which sent READY=1 (a manager that signals the wrapper would leave the
/// server orphaned), and the log names it.
#[test]
fn a_wrappers_server_is_the_main_pid_the_manager_hears() {
    let dir = tempdir("wrapper-pid");
    let (program, real) = echo_copy(&dir);
    let path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    reap_orphans();
    let mut command = Command::new(&program);
    command
        .args(["--drain-timeout", "1", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut echo = Echo::adopt(command.spawn().unwrap());
    echo.listening();
    let mut buf = vec![0; 4096];
    let n = manager.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("READY=1"));
    replace_with_script(&program, &format!("{} \"$@\"\nexit $?", real.display()));
    let (pid, _) = echo.hand_over();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, real, "the pid reported is not the server's");
    let n = manager.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]), format!("MAINPID={pid}"));
    // The wrapper, its parent, goes when the test ends (it is in the successor's first
    // group, which the server left for its predecessor's).
    let wrapper = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()))
        .unwrap();
    echo.pids.push(wrapper);
}

/// A Unix-domain socket the successor does not plan is closed once it is ready, and its
/// file, which the predecessor made and left to it, goes with it.
#[test]
fn a_unix_socket_the_successor_drops_leaves_no_file() {
    let dir = tempdir("dropped-unix");
    let (program, real) = echo_copy(&dir);
    let path = dir.join("a.sock");
    let spec = format!("unix:{}", path.display());
    reap_orphans();
    let mut command = Command::new(&program);
    command
        .args(["--drain-timeout", "1", &spec, "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut echo = Echo::adopt(command.spawn().unwrap());
    echo.listening();
    assert!(path.exists());
    // The new version listens on TCP only.
    replace_with_script(
        &program,
        &format!("exec {} --drain-timeout 1 127.0.0.1:0", real.display()),
    );
    let old = echo.pid;
    let (_, lines) = echo.hand_over();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(old) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!path.exists(), "the dropped socket's file stays");
}

/// One datagram and the descriptors it carries (`SCM_RIGHTS`), as a service manager
/// receives `FDSTORE=1`.
fn recv_with_fds(socket: &std::os::unix::net::UnixDatagram) -> (String, Vec<std::os::fd::OwnedFd>) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = vec![0u8; 4096];
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; it points to `iov` and `control`, alive for the
    // call; recvmsg writes into them within their lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    let mut fds = Vec::new();
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen; each SCM_RIGHTS payload holds ints, read unaligned; each descriptor
    // is new in this process and owned here.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    (
        String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
        fds,
    )
}

/// A service manager's descriptor store (`FDSTORE=1`, `--fd-store`): the sockets it keeps
/// hold clients in the backlog while no process runs (a plain restart refuses nobody), the
/// next start takes them back by spec, on the same port, and serves the client that
/// waited; a stored socket the new start no longer plans is closed, and the manager told
/// to forget it (`FDSTOREREMOVE=1`).
#[test]
fn a_restart_takes_the_sockets_back_from_the_descriptor_store() {
    use std::os::fd::{AsFd, AsRawFd};
    let dir = tempdir("fdstore");
    let path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let notify = path.to_str().unwrap().to_owned();
    let abstract_name = format!("@dualstack-fdstore-{}", std::process::id());
    let mut first = Echo::start_with(
        &["--fd-store", "127.0.0.1:0", &abstract_name],
        &[("NOTIFY_SOCKET", &notify)],
    );
    let lines = first.listening();
    let addr = addrs(&lines[..1])[0];
    assert!(recv_with_fds(&manager).0.starts_with("READY=1"));
    let mut stored = Vec::new();
    for _ in 0..2 {
        let (message, mut fds) = recv_with_fds(&manager);
        let name = message
            .strip_prefix("FDSTORE=1\nFDNAME=")
            .unwrap_or_else(|| panic!("{message:?}"))
            .to_owned();
        assert_eq!(fds.len(), 1, "{message}");
        stored.push((name, fds.remove(0)));
    }
    // A plain restart: the process ends; the manager (this test) holds the sockets.
    signal(first.pid, libc::SIGTERM);
    let deadline = Instant::now() + util::TIMEOUT;
    while first.first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut waiting = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .expect("refused while no process ran");
    waiting.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    waiting.write_all(b"waited").unwrap();
    // The next start gets them as systemd passes them: at 3, 4, … with their names and
    // LISTEN_PID its own (here in a syntax systemd's parser takes too, `+PID`); it plans
    // the TCP spec only.
    let copies: Vec<std::os::fd::OwnedFd> = stored
        .iter()
        .map(|(_, fd)| {
            // SAFETY: F_DUPFD_CLOEXEC makes a copy at 100 or above; the result is owned.
            let copy = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
            assert!(copy >= 100);
            // SAFETY: just made, owned here only.
            unsafe { std::os::fd::FromRawFd::from_raw_fd(copy) }
        })
        .collect();
    // And, as from a socket unit, a socket of its own named `web`, for `sd-listen`: that
    // spec takes it, and none of the stored ones (they go back to their own specs).
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap();
    // SAFETY: as above.
    let web_copy = unsafe { libc::fcntl(web.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    assert!(web_copy >= 100);
    // SAFETY: just made, owned here only.
    let web_copy: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(web_copy) };
    let mut raw: Vec<i32> = copies.iter().map(|c| c.as_raw_fd()).collect();
    raw.push(web_copy.as_raw_fd());
    let mut names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    names.push("web");
    let script = format!(
        "LISTEN_PID=+$$ exec {} --fd-store 127.0.0.1:0 sd-listen",
        util::example("echo").display()
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify)
        .env("LISTEN_FDS", raw.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: dup2 is async-signal-safe; the sources are at 100 and above, above
        // every target.
        unsafe {
            command.pre_exec(move || {
                for (i, fd) in raw.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let second = Echo::adopt(command.spawn().unwrap());
    drop(copies);
    drop(web_copy);
    let again = second.listening();
    assert_eq!(
        again,
        [lines[0].clone(), format!("listening on {web_addr} (ipv4)")],
        "not the stored socket, or sd-listen took a stored one"
    );
    let mut back = [0; 6];
    waiting.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"waited");
    // What the manager heard from the second: the abstract socket forgotten, READY=1, and
    // the TCP one stored again (and maybe the first's STOPPING=1 before them).
    let heard = hear_until(&manager, |h| {
        has_all(h, &["FDSTOREREMOVE=1", "READY=1", "FDSTORE=1"])
    });
    let abstract_stored = &stored
        .iter()
        .find(|(n, _)| n.contains("%40") || n.contains('@'))
        .unwrap()
        .0;
    assert!(
        heard.contains(&format!("FDSTOREREMOVE=1\nFDNAME={abstract_stored}")),
        "{heard:?}"
    );
    assert!(heard.iter().any(|m| m.starts_with("READY=1")), "{heard:?}");
    assert!(
        heard
            .iter()
            .any(|m| m.starts_with("FDSTORE=1\nFDNAME=") && !m.contains(abstract_stored.as_str())),
        "{heard:?}"
    );
    drop(second);
}

/// The stored sockets a service manager received, by name.
fn stored_sockets(
    manager: &std::os::unix::net::UnixDatagram,
    count: usize,
) -> Vec<(String, std::os::fd::OwnedFd)> {
    (0..count)
        .map(|_| {
            let (message, mut fds) = recv_with_fds(manager);
            let name = message
                .strip_prefix("FDSTORE=1\nFDNAME=")
                .unwrap_or_else(|| panic!("{message:?}"))
                .to_owned();
            assert_eq!(fds.len(), 1, "{message}");
            (name, fds.remove(0))
        })
        .collect()
}

/// The echo example started as systemd starts a service with a descriptor store: the
/// stored sockets at 3, 4, …, `LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID` its own.
fn start_from_store(
    stored: &[(String, std::os::fd::OwnedFd)],
    notify: &str,
    args: &[&str],
) -> Echo {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::process::CommandExt;
    let copies: Vec<std::os::fd::OwnedFd> = stored
        .iter()
        .map(|(_, fd)| fd.as_fd().try_clone_to_owned().unwrap())
        .collect();
    // Moved above every target first, so no move overwrites one still to be moved.
    let raw: Vec<i32> = copies
        .iter()
        .map(|c| {
            // SAFETY: F_DUPFD_CLOEXEC copies an open descriptor to 100 or above.
            let fd = unsafe { libc::fcntl(c.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
            assert!(fd >= 100);
            fd
        })
        .collect();
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    let script = format!(
        "LISTEN_PID=$$ exec {} {}",
        util::example("echo").display(),
        args.join(" ")
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", notify)
        .env("LISTEN_FDS", raw.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let moves = raw.clone();
    // SAFETY: dup2 is async-signal-safe; the sources are at 100 and above.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in moves.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let echo = Echo::adopt(command.spawn().unwrap());
    for fd in raw {
        // SAFETY: our own copies, closed once the child has them.
        unsafe { libc::close(fd) };
    }
    echo
}

/// Stops `echo`'s process and waits for it.
fn stop(echo: &mut Echo) {
    signal(echo.pid, libc::SIGTERM);
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(echo.pid) {
        assert!(Instant::now() < deadline, "{} did not stop", echo.pid);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a manager hears until `done` says it has heard enough (or the timeout). Whatever
/// else comes meanwhile is kept too (a stopping process's `STOPPING=1` may come or not: it
/// is sent after the stop is asked for, and the process may be gone first).
fn hear_until(
    manager: &std::os::unix::net::UnixDatagram,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut heard = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + util::TIMEOUT * 2;
    while !done(&heard) && Instant::now() < deadline {
        if let Ok(n) = manager.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    heard
}

/// Whether `heard` has a message that starts with each of `starts`.
fn has_all(heard: &[String], starts: &[&str]) -> bool {
    starts
        .iter()
        .all(|s| heard.iter().any(|m| m.starts_with(s)))
}

/// Each socket of a spec has a name of its own in the store (the store forgets by name):
/// a restart that plans `localhost:0` on IPv4 only takes 127.0.0.1 back, on its port, and
/// has the manager forget [::1] only.
#[test]
fn a_restart_forgets_only_the_stored_sockets_it_no_longer_plans() {
    if !util::has_ipv6() {
        return;
    }
    let dir = tempdir("fdstore-names");
    let path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let notify = path.to_str().unwrap().to_owned();
    let mut first = Echo::start_with(
        &["--fd-store", "localhost:0"],
        &[("NOTIFY_SOCKET", &notify)],
    );
    let lines = first.listening();
    assert!(recv_with_fds(&manager).0.starts_with("READY=1"));
    let stored = stored_sockets(&manager, 2);
    assert_ne!(stored[0].0, stored[1].0, "two sockets under one name");
    stop(&mut first);
    let second = start_from_store(
        &stored,
        &notify,
        &["--fd-store", "--family", "v4", "localhost:0"],
    );
    assert_eq!(second.listening(), lines[..1]);
    let heard = hear_until(&manager, |h| {
        has_all(h, &["FDSTOREREMOVE=1", "READY=1", "FDSTORE=1"])
    });
    let v6 = &stored
        .iter()
        .find(|(n, _)| n.starts_with("ds.0.1."))
        .unwrap()
        .0;
    let forgotten: Vec<&String> = heard
        .iter()
        .filter(|m| m.starts_with("FDSTOREREMOVE"))
        .collect();
    assert_eq!(
        forgotten,
        [&format!("FDSTOREREMOVE=1\nFDNAME={v6}")],
        "{heard:?}"
    );
    drop(second);
}

/// Unlike a hand-over, a restart may change a socket: a stored dual-stack `:0` restarted
/// with one socket per family is closed and forgotten before the new ones are bound, and
/// the new start serves them.
#[test]
fn a_restart_may_change_a_stored_sockets_mode() {
    if !util::has_ipv6() {
        return;
    }
    let dir = tempdir("fdstore-mode");
    let path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let notify = path.to_str().unwrap().to_owned();
    let mut first = Echo::start_with(&["--fd-store", ":0"], &[("NOTIFY_SOCKET", &notify)]);
    let lines = first.listening();
    assert!(lines[0].ends_with("(dual-stack)"), "{lines:?}");
    assert!(recv_with_fds(&manager).0.starts_with("READY=1"));
    let stored = stored_sockets(&manager, 1);
    stop(&mut first);
    let second = start_from_store(&stored, &notify, &["--fd-store", "--separate-stacks", ":0"]);
    let again = second.listening();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again[1].ends_with("(ipv6-only)"), "{again:?}");
    let heard = hear_until(&manager, |h| has_all(h, &["FDSTOREREMOVE=1", "READY=1"]));
    assert!(
        heard.contains(&format!("FDSTOREREMOVE=1\nFDNAME={}", stored[0].0)),
        "{heard:?}"
    );
    for addr in addrs(&again) {
        let port = addr.port();
        let mut s = util::connect(("127.0.0.1", port));
        assert_eq!(util::round_trip(&mut s, b"mode"), b"mode");
    }
    drop(second);
}

/// A socket whose spec would make a name longer than a service manager takes (255 bytes)
/// is not stored, and the log says so; the others are.
#[test]
fn a_socket_whose_name_is_too_long_for_the_store_is_left_out() {
    let dir = tempdir("fdstore-long");
    let path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    // 100 bytes, each written %25 in a name.
    let long = format!("@{}", "%".repeat(100));
    let mut echo = Echo::start_with(
        &["--fd-store", "127.0.0.1:0", &long],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    echo.listening();
    assert!(recv_with_fds(&manager).0.starts_with("READY=1"));
    let (message, fds) = recv_with_fds(&manager);
    assert!(
        message.starts_with("FDSTORE=1\nFDNAME=ds.0.0.127.0.0.1%3A0"),
        "{message}"
    );
    assert_eq!(fds.len(), 1);
    echo.expect_log("is not stored");
    manager.set_nonblocking(true).unwrap();
    let mut buf = [0; 512];
    assert!(
        manager.recv(&mut buf).is_err(),
        "a second socket was stored"
    );
}

/// Each successor of ten hand-overs has as many descriptors as the first successor: nothing
/// of a predecessor leaks into its successor (the readiness channel, copies of the
/// sockets). (The first process may have more: what the test harness left open without
/// close-on-exec, which no successor inherits.)
#[test]
fn descriptor_counts_stay_the_same_across_ten_hand_overs() {
    let dir = tempdir("fds");
    let spec = format!("unix:{}", dir.join("s.sock").display());
    let marker = std::fs::File::create(dir.join("marker")).unwrap();
    let mut echo = Echo::start_full(
        &["--drain-timeout", "1", "localhost:0", &spec],
        &[],
        Some(&marker),
    );
    echo.listening();
    let leaked = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/40")).is_ok_and(|t| t.ends_with("marker"))
    };
    assert!(leaked(echo.pid), "the first process did not get the marker");
    let fds = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                let mut fds: Vec<String> = d
                    .filter_map(|e| e.ok())
                    .map(|e| {
                        let target = std::fs::read_link(e.path()).unwrap_or_default();
                        format!(
                            "{} -> {}",
                            e.file_name().to_string_lossy(),
                            target.display()
                        )
                    })
                    .collect();
                fds.sort();
                fds
            })
            .unwrap_or_default()
    };
    let mut first: Option<Vec<String>> = None;
    for round in 0..10 {
        let old = echo.pid;
        let (pid, _) = echo.hand_over();
        let deadline = Instant::now() + util::TIMEOUT;
        while !gone(old) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !leaked(pid),
            "round {round}: the successor inherited a descriptor that was not passed"
        );
        let now = fds(pid);
        let first = first.get_or_insert_with(|| now.clone());
        assert_eq!(
            now.len(),
            first.len(),
            "round {round}: {now:?}, the first successor: {first:?}"
        );
        // Passed sockets sit at 3, 4, 5 (LISTEN_FDS), and nothing but sockets, pipes of
        // the standard streams, /dev/null, the poller and the directory of the socket file
        // is open.
        for fd in &now {
            let (_, target) = fd.split_once(" -> ").unwrap();
            assert!(
                ["socket:", "pipe:", "/dev/null", "anon_inode:"]
                    .iter()
                    .any(|t| target.starts_with(t))
                    || target == dir.to_str().unwrap(),
                "round {round}: {fd}"
            );
        }
    }
}

/// A service manager on `NOTIFY_SOCKET` (a datagram socket here): the first process says
/// READY=1; at each hand-over the old process says MAINPID= with the successor's pid before
/// it exits; a successor's READY=1 goes to its predecessor, not to the manager; nothing
/// says STOPPING=1 (that would stop the successor's service).
#[test]
fn the_service_manager_hears_the_new_main_pid_before_the_old_process_exits() {
    let dir = tempdir("notify");
    let path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let socket = path.to_str().unwrap().to_owned();
    let mut echo = Echo::start_with(
        &["--drain-timeout", "30", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", &socket)],
    );
    let lines = echo.listening();
    let mut buf = vec![0; 4096];
    let mut next = || {
        let n = manager.recv(&mut buf).expect("a message for the manager");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().starts_with("READY=1\n"));
    for _ in 0..2 {
        let old = echo.pid;
        let (pid, _) = echo.hand_over();
        let deadline = Instant::now() + util::TIMEOUT;
        while !gone(old) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        // The old process is gone: its word is queued already.
        manager.set_nonblocking(true).unwrap();
        let said = next();
        manager.set_nonblocking(false).unwrap();
        assert_eq!(said, format!("MAINPID={pid}"));
    }
    // A signal to an old process while it drains stops it, and it must not say
    // STOPPING=1: that would be its successor's service stopping.
    let addr = addrs(&lines)[0];
    let mut held = util::connect(addr);
    assert_eq!(util::round_trip(&mut held, b"held"), b"held");
    let old = echo.pid;
    let (pid, _) = echo.hand_over();
    signal(old, libc::SIGTERM);
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(old) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(next(), format!("MAINPID={pid}"));
    manager.set_nonblocking(true).unwrap();
    let mut more = Vec::new();
    while let Ok(n) = manager.recv(&mut buf) {
        more.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(more.is_empty(), "the manager heard more: {more:?}");
}

/// `sd-listen:NAME` from a real `systemd-socket-activate`: the socket it passed is handed
/// on, by its spec, to the successor.
#[test]
fn a_socket_from_systemd_socket_activate_is_handed_on() {
    if !Tool::SOCKET_ACTIVATE.usable() {
        return;
    }
    reap_orphans();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=web"])
        .arg(util::example("echo"))
        .args(["--drain-timeout", "1", "sd-listen:web"])
        .env("RUST_LOG", "info")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let first = command.spawn().unwrap();
    let mut echo = Echo::adopt(first);
    // Version 252 starts the server at the first connection.
    let deadline = Instant::now() + util::TIMEOUT;
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("systemd-socket-activate does not listen: {e}"),
        }
    };
    s.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    assert_eq!(util::round_trip(&mut s, b"one"), b"one");
    let first = echo.listening();
    assert_eq!(first, [format!("listening on 127.0.0.1:{port} (ipv4)")]);
    for _ in 0..2 {
        let (_, lines) = echo.hand_over();
        assert_eq!(lines, first);
        let mut s = util::connect(("127.0.0.1", port));
        assert_eq!(util::round_trip(&mut s, b"two"), b"two");
    }
}

/// A TLS listener hands over with its socket; the successor reads the certificate files
/// itself (so a certificate renewed on disk is the successor's), and a TLS connection
/// open on the old process goes on while it drains.
#[test]
fn a_tls_listener_is_handed_over_and_the_successor_reads_its_own_certificates() {
    let dir = tempdir("tls");
    let ca = pki::Ca::new("hand-over CA");
    let (first, second) = (ca.leaf(&["localhost"]), ca.leaf(&["localhost"]));
    let (cert, key) = first.write(&dir, "server");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut echo = Echo::start(&[
        "--drain-timeout",
        "5",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "127.0.0.1:0",
    ]);
    let lines = echo.listening();
    assert!(lines[0].ends_with("(ipv4, tls)"), "{lines:?}");
    let addr = addrs(&lines)[0];
    let hello = |tls: &mut pki::Tls, what: &[u8]| {
        tls.write_all(what).unwrap();
        let mut back = vec![0; what.len()];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(back, what);
    };
    let shown = |tls: &pki::Tls| tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    let mut old = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    hello(&mut old, b"before");
    assert!(shown(&old) == first.der);
    second.write(&dir, "server");
    let (_, after) = echo.hand_over();
    assert_eq!(after, lines);
    let mut new = pki::connect(pki::client(&ca), "localhost", util::connect(addr)).unwrap();
    hello(&mut new, b"successor");
    assert!(
        shown(&new) == second.der,
        "the successor serves the old certificate"
    );
    hello(&mut old, b"still on the old process");
}

impl Echo {
    /// An `Echo` for a process started some other way (the first line of stdout is the
    /// echo example's).
    fn adopt(mut first: Child) -> Echo {
        let lines = |pipe: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(first.stdout.take().unwrap()));
        let stderr = lines(Box::new(first.stderr.take().unwrap()));
        let pid = first.id();
        Echo {
            first,
            pid,
            stdout,
            stderr,
            log: Vec::new(),
            pids: vec![pid],
            // SAFETY: getpgid reads nothing of ours.
            group: unsafe { libc::getpgid(pid as i32) },
        }
    }
}

/// A fresh directory under the system's temporary one, removed when the test drops it.
fn tempdir(what: &str) -> util::TempDir {
    util::TempDir::new(&format!("handover-{what}"))
}

// ---------------------------------------------------------------------------------------
// An in-process server, handing over to this test binary run again as a successor.

/// An echo handler that records what became of its hand-overs.
struct Recording {
    events: Vec<String>,
    /// The pids of the successors started.
    pids: Vec<u32>,
    /// The pids that said READY=1 (a wrapper's server, where there is a wrapper).
    ready: Vec<u32>,
}

impl Handler for Recording {
    type State = ();
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let _ = ctx.send(conn, input.take_all());
    }
    fn on_hand_over(&mut self, _: &mut Context<'_, Self>, event: &HandOverEvent) {
        match event {
            HandOverEvent::Started { pid } => {
                self.pids.push(*pid);
                self.events.push("started".into());
            }
            HandOverEvent::Ready { pid } => {
                self.events.push("ready".into());
                self.ready.push(*pid);
            }
            HandOverEvent::Failed(e) => self.events.push(format!("failed: {:?}: {e}", e.kind())),
            _ => self.events.push(format!("{event:?}")),
        }
    }
}

/// Runs `server` until its handler has heard `n` events (or the timeout).
fn run_until(server: &mut Server<Recording>, n: usize) {
    let deadline = Instant::now() + util::TIMEOUT * 3;
    while server.handler().events.len() < n {
        assert!(
            Instant::now() < deadline,
            "events so far: {:?}",
            server.handler().events
        );
        server.run_once(Some(Duration::from_millis(10))).unwrap();
    }
}

/// This test binary run again as the successor function `name`.
fn successor(name: &str) -> HandOver {
    HandOver::new()
        .command(
            std::env::current_exe().unwrap(),
            [
                "--ignored",
                "--exact",
                name,
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ],
        )
        .ready_timeout(Duration::from_secs(5))
        .drain_timeout(Duration::from_millis(300))
}

/// Where successor `name` of process `parent` writes what it saw.
fn said_file(parent: u32, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dualstack-successor-{parent}-{name}"))
}

/// What this process's successor `name` wrote, read once: the file is removed.
fn take_said(name: &str) -> String {
    let file = said_file(std::process::id(), name);
    let said = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let _ = std::fs::remove_file(&file);
    said
}

/// In a successor (this binary run again by a hand-over): `Some(parent pid)`.
fn as_successor() -> Option<u32> {
    std::env::var_os("DUALSTACK_HANDOVER").and(dualstack::predecessor())
}

fn echo_addr(server: &Server<Recording>, i: usize) -> SocketAddr {
    match &server.listeners()[i].local_addr {
        ListenAddr::Ip(a) => *a,
        other => panic!("{other}"),
    }
}

fn echoes(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .and_then(|mut s| {
            s.set_read_timeout(Some(util::TIMEOUT))?;
            s.write_all(b"ping")?;
            let mut b = [0; 4];
            s.read_exact(&mut b)?;
            Ok(&b == b"ping")
        })
        .unwrap_or(false)
}

/// Whether `addr` echoes, while `server` runs on this thread.
fn echoes_while(server: &mut Server<Recording>, addr: SocketAddr) -> bool {
    let client = std::thread::spawn(move || echoes(addr));
    while !client.is_finished() {
        server.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    client.join().unwrap()
}

/// Successor: ends at once, before it is ready.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_exits_at_once() {
    if as_successor().is_some() {
        std::process::exit(3);
    }
}

/// Successor: takes the sockets and never says READY=1.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_never_ready() {
    never_ready("successor_never_ready");
}

/// The same successor, for the test that runs it under a wrapper (its own file: the two
/// tests run at once in one parent, and each reads the pid of its own successor).
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_never_ready_wrapped() {
    never_ready("successor_never_ready_wrapped");
}

/// In a successor: writes its pid to `said_file(parent, name)`, takes the sockets and
/// never says READY=1.
fn never_ready(name: &str) {
    if let Some(parent) = as_successor() {
        std::fs::write(said_file(parent, name), std::process::id().to_string()).unwrap();
        let _server = Server::builder()
            .listen("127.0.0.1:0")
            .bind(recording())
            .unwrap();
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(4);
    }
}

/// Successor: plans `:0` as two sockets where the predecessor had one dual-stack socket,
/// and writes the bind error.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_plans_separate_stacks() {
    if let Some(parent) = as_successor() {
        let result = Server::builder()
            .listen(":0")
            .listen_config(
                dualstack::ListenConfig::new().wildcard_stack(dualstack::WildcardStack::Separate),
            )
            .bind(recording());
        let said = match result {
            Ok(_) => "bound".to_owned(),
            Err(e) => e.to_string(),
        };
        std::fs::write(said_file(parent, "successor_plans_separate_stacks"), said).unwrap();
        std::process::exit(2);
    }
}

/// Successor: serves `127.0.0.1:0` only (the predecessor also had `[::1]:0`), says
/// READY=1, and echoes for a while.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_serves_the_first_spec_only() {
    if as_successor().is_some() {
        let mut server = Server::builder()
            .listen("127.0.0.1:0")
            .bind(recording())
            .unwrap();
        dualstack::notify("READY=1").unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            server.run_once(Some(Duration::from_millis(50))).unwrap();
        }
        std::process::exit(0);
    }
}

/// The Unix-domain socket of process `parent`'s test of a successor that gives up.
fn gives_up_path(parent: u32) -> PathBuf {
    std::env::temp_dir().join(format!("dualstack-successor-{parent}-gives-up.sock"))
}

/// Successor: takes the Unix-domain socket over, then gives up before it is ready (its
/// server dropped, as a program that fails after binding drops it).
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_binds_then_gives_up() {
    if let Some(parent) = as_successor() {
        let spec = format!("unix:{}", gives_up_path(parent).display());
        let server = Server::builder()
            .listen(spec.as_str())
            .bind(recording())
            .unwrap();
        drop(server);
        std::process::exit(5);
    }
}

/// A successor that took a Unix-domain socket over and gives up before it is ready leaves
/// the file alone: it is still its predecessor's, which goes on serving it.
#[test]
fn a_successor_that_gives_up_leaves_the_socket_file_to_its_predecessor() {
    if as_successor().is_some() {
        return;
    }
    reap_orphans();
    let path = gives_up_path(std::process::id());
    let _ = std::fs::remove_file(&path);
    let spec = format!("unix:{}", path.display());
    let mut server = Server::builder()
        .listen(spec.as_str())
        .bind(recording())
        .unwrap();
    server
        .handle()
        .hand_over(successor("successor_binds_then_gives_up"))
        .unwrap();
    run_until(&mut server, 2);
    let events = &server.handler().events;
    assert!(events[1].contains("exit status: 5"), "{events:?}");
    assert!(
        path.exists(),
        "the successor removed its predecessor's socket file"
    );
    let client = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&path)?;
            s.set_read_timeout(Some(util::TIMEOUT))?;
            s.write_all(b"unix")?;
            let mut b = [0; 4];
            s.read_exact(&mut b)?;
            Ok::<_, std::io::Error>(b)
        })
    };
    while !client.is_finished() {
        server.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    assert_eq!(&client.join().unwrap().unwrap(), b"unix");
    drop(server);
    assert!(
        !path.exists(),
        "the predecessor, dropped, did not remove its file"
    );
}

fn recording() -> Recording {
    Recording {
        events: Vec::new(),
        pids: Vec::new(),
        ready: Vec::new(),
    }
}

/// A successor that exits at start, then one that never becomes ready: each is reported,
/// the second is killed, a second hand-over while one runs is refused, and the server
/// serves throughout; then a successor that works takes over, and a passed socket it does
/// not plan is closed.
#[test]
fn failed_successors_leave_the_server_serving_and_a_later_hand_over_works() {
    if as_successor().is_some() || !util::has_ipv6() {
        return;
    }
    reap_orphans();
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .listen("[::1]:0")
        .bind(recording())
        .unwrap();
    let v4 = echo_addr(&server, 0);
    let v6 = echo_addr(&server, 1);
    let handle = server.handle();

    handle
        .hand_over(successor("successor_exits_at_once"))
        .unwrap();
    run_until(&mut server, 2);
    let events = &server.handler().events;
    assert!(events[1].starts_with("failed: Exited"), "{events:?}");
    assert!(events[1].contains("exit status: 3"), "{events:?}");
    assert!(echoes_while(&mut server, v4));

    handle
        .hand_over(successor("successor_never_ready").ready_timeout(Duration::from_secs(1)))
        .unwrap();
    let refused = handle.hand_over(successor("successor_exits_at_once"));
    assert_eq!(refused.unwrap_err().kind(), HandOverErrorKind::Busy);
    run_until(&mut server, 4);
    let events = &server.handler().events;
    assert!(events[3].starts_with("failed: NotReady"), "{events:?}");
    let never_ready = server.handler().pids[1];
    let _ = std::fs::remove_file(said_file(std::process::id(), "successor_never_ready"));
    assert!(
        gone(never_ready),
        "the successor that was not ready still runs"
    );
    assert!(echoes_while(&mut server, v4));

    handle
        .hand_over(successor("successor_serves_the_first_spec_only"))
        .unwrap();
    run_until(&mut server, 6);
    assert_eq!(
        server.handler().events[5],
        "ready",
        "{:?}",
        server.handler().events
    );
    let serving = server.handler().pids[2];
    // Drained (no connections) and stopped; refused from now on.
    server.run().unwrap();
    assert_eq!(
        handle.hand_over(HandOver::new()).unwrap_err().kind(),
        HandOverErrorKind::Stopping
    );
    drop(server);
    // The successor serves the spec it planned; the socket it did not plan is closed.
    assert!(echoes(v4), "the successor does not serve 127.0.0.1");
    assert!(util::cannot_connect(v6), "[::1] is still served, by nobody");
    kill(serving);
}

/// Successor: says READY=1 before it binds (refused, as it would close every passed
/// socket), then binds and says it again.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_ready_before_binding() {
    if let Some(parent) = as_successor() {
        let early = dualstack::notify("READY=1").map_err(|e| e.kind());
        std::fs::write(
            said_file(parent, "successor_ready_before_binding"),
            format!("{early:?}"),
        )
        .unwrap();
        let mut server = Server::builder()
            .listen("127.0.0.1:0")
            .bind(recording())
            .unwrap();
        dualstack::notify("READY=1").unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            server.run_once(Some(Duration::from_millis(50))).unwrap();
        }
        std::process::exit(0);
    }
}

/// A `READY=1` before any bind is refused, not sent: it would have closed the passed
/// sockets and moved the service to a new port. Said after the bind, it goes through,
/// and the successor serves the same port.
#[test]
fn a_ready_before_any_bind_is_refused_and_the_port_stays() {
    if as_successor().is_some() {
        return;
    }
    reap_orphans();
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(recording())
        .unwrap();
    let v4 = echo_addr(&server, 0);
    server
        .handle()
        .hand_over(successor("successor_ready_before_binding"))
        .unwrap();
    run_until(&mut server, 2);
    assert_eq!(server.handler().events[1], "ready");
    let said = take_said("successor_ready_before_binding");
    assert_eq!(said, "Err(InvalidInput)");
    let serving = server.handler().pids[0];
    server.run().unwrap();
    drop(server);
    assert!(
        echoes(v4),
        "the successor does not serve the port it was passed"
    );
    kill(serving);
}

/// A wrapper that does not `exec` (a shell script) between the two: the server it starts
/// still takes the sockets (the channel's maker is the predecessor), and when it is never
/// ready, the whole process group goes, not the wrapper alone.
#[test]
fn a_wrapper_that_does_not_exec_works_and_its_server_goes_with_it_on_failure() {
    if as_successor().is_some() {
        return;
    }
    reap_orphans();
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(recording())
        .unwrap();
    let v4 = echo_addr(&server, 0);
    let exe = std::env::current_exe().unwrap();
    let wrapped = |name: &str| {
        let line = format!(
            "{} --ignored --exact {name} --nocapture --test-threads=1 --quiet; true",
            exe.display()
        );
        HandOver::new()
            .command("sh", ["-c", line.as_str()])
            .ready_timeout(Duration::from_secs(2))
            .drain_timeout(Duration::from_millis(300))
    };
    server
        .handle()
        .hand_over(wrapped("successor_never_ready_wrapped"))
        .unwrap();
    run_until(&mut server, 2);
    assert!(
        server.handler().events[1].starts_with("failed: NotReady"),
        "{:?}",
        server.handler().events
    );
    let inner: u32 = take_said("successor_never_ready_wrapped").parse().unwrap();
    let deadline = Instant::now() + util::TIMEOUT;
    while !gone(inner) {
        assert!(
            Instant::now() < deadline,
            "the wrapped successor {inner} outlived its failed hand-over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(echoes_while(&mut server, v4));
    server
        .handle()
        .hand_over(wrapped("successor_serves_the_first_spec_only"))
        .unwrap();
    run_until(&mut server, 4);
    assert_eq!(
        server.handler().events[3],
        "ready",
        "{:?}",
        server.handler().events
    );
    let shell = server.handler().pids[1];
    let inner = server.handler().ready[0];
    assert_ne!(
        inner, shell,
        "the wrapper's pid was reported, not its server's"
    );
    server.run().unwrap();
    drop(server);
    assert!(echoes(v4), "the wrapped successor does not serve");
    kill(inner);
    kill(shell);
}

/// Successor: takes over the last two of six specs only (so the numbers 3 to 6 of the
/// other four, and the channel's, are free once it is ready: the socket pair of its own
/// hand-over takes two of them, and two stay free below where that hand-over moves its
/// sockets), then hands over to a file that cannot be run, and writes what it heard.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_takes_two_of_six_and_hands_over_to_nothing() {
    if let Some(parent) = as_successor() {
        let mut server = Server::builder()
            .listen("127.0.0.5:0")
            .listen("127.0.0.6:0")
            .bind(recording())
            .unwrap();
        dualstack::notify("READY=1").unwrap();
        let not_a_program = said_file(parent, "not-a-program");
        std::fs::write(&not_a_program, "not a program").unwrap();
        server
            .handle()
            .hand_over(HandOver::new().command(&not_a_program, [""; 0]))
            .unwrap();
        let end = Instant::now() + util::TIMEOUT;
        while !server
            .handler()
            .events
            .iter()
            .any(|e| e.starts_with("failed"))
            && Instant::now() < end
        {
            server.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        std::fs::write(
            said_file(
                parent,
                "successor_takes_two_of_six_and_hands_over_to_nothing",
            ),
            server.handler().events.join("\n"),
        )
        .unwrap();
        std::process::exit(0);
    }
}

/// An exec that fails is reported as a start failure (`Spawn`, with the OS's reason), even
/// in a process whose free descriptor numbers lie below the ones a hand-over moves the
/// sockets to (where the standard library's pipe for a failed exec could land and be
/// overwritten: then the failure looked like a start and an early exit).
#[test]
fn a_failed_exec_is_reported_as_such_with_free_numbers_below_the_passed_ones() {
    if as_successor().is_some() {
        return;
    }
    reap_orphans();
    let mut builder = Server::builder();
    for i in 1..=6 {
        builder = builder.listen(format!("127.0.0.{i}:0").as_str());
    }
    let mut server = builder.bind(recording()).unwrap();
    server
        .handle()
        .hand_over(successor(
            "successor_takes_two_of_six_and_hands_over_to_nothing",
        ))
        .unwrap();
    run_until(&mut server, 2);
    assert_eq!(server.handler().events[1], "ready");
    let serving = server.handler().pids[0];
    let file = said_file(
        std::process::id(),
        "successor_takes_two_of_six_and_hands_over_to_nothing",
    );
    let deadline = Instant::now() + util::TIMEOUT * 2;
    while !file.exists() {
        assert!(Instant::now() < deadline, "the successor said nothing");
        server.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let said = take_said("successor_takes_two_of_six_and_hands_over_to_nothing");
    let _ = std::fs::remove_file(said_file(std::process::id(), "not-a-program"));
    assert!(said.starts_with("failed: Spawn"), "{said}");
    assert!(said.contains("Permission denied"), "{said}");
    kill(serving);
}

/// A resolver whose answer is given by the process's role: 127.0.0.1 in a predecessor,
/// 127.0.0.2 in a successor (as a name moved in DNS between the two).
struct Moved;

impl dualstack::Resolve for Moved {
    fn resolve(&self, _: &dualstack::HostName) -> std::io::Result<Vec<std::net::IpAddr>> {
        let ip = match as_successor() {
            Some(_) => "127.0.0.2",
            None => "127.0.0.1",
        };
        Ok(vec![ip.parse().unwrap()])
    }
}

/// Successor: its name resolves elsewhere now; writes the bind error.
#[test]
#[ignore = "a successor the hand-over tests run"]
fn successor_resolves_elsewhere() {
    if let Some(parent) = as_successor() {
        let result = Server::builder()
            .listen("service.test:0")
            .listen_config(dualstack::ListenConfig::new().resolver(Moved))
            .bind(recording());
        let said = match result {
            Ok(_) => "bound".to_owned(),
            Err(e) => e.to_string(),
        };
        std::fs::write(said_file(parent, "successor_resolves_elsewhere"), said).unwrap();
        std::process::exit(2);
    }
}

/// A spec that means another address in the successor (a name that resolves elsewhere now)
/// is not bound beside the passed socket: an error that names both, and the predecessor
/// goes on.
#[test]
fn an_address_the_successor_would_move_is_an_error_naming_both() {
    if as_successor().is_some() {
        return;
    }
    reap_orphans();
    let mut server = Server::builder()
        .listen("service.test:0")
        .listen_config(dualstack::ListenConfig::new().resolver(Moved))
        .bind(recording())
        .unwrap();
    let addr = echo_addr(&server, 0);
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    server
        .handle()
        .hand_over(successor("successor_resolves_elsewhere"))
        .unwrap();
    run_until(&mut server, 2);
    assert!(server.handler().events[1].starts_with("failed: Exited"));
    let said = take_said("successor_resolves_elsewhere");
    let port = addr.port();
    assert!(said.contains(&format!("127.0.0.1:{port} (ipv4)")), "{said}");
    assert!(said.contains(&format!("127.0.0.2:{port} (ipv4)")), "{said}");
    assert!(echoes_while(&mut server, addr));
}

/// A successor that cannot be started at all is reported at once, naming the program, and
/// the server goes on; so does a hand-over asked for with a timeout no clock can add.
#[test]
fn a_program_that_cannot_start_is_reported_and_the_server_goes_on() {
    if as_successor().is_some() {
        return;
    }
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(recording())
        .unwrap();
    let v4 = echo_addr(&server, 0);
    server
        .handle()
        .hand_over(
            HandOver::new()
                .command("/nonexistent/successor", ["--flag"])
                .ready_timeout(Duration::MAX)
                .drain_timeout(Duration::MAX),
        )
        .unwrap();
    run_until(&mut server, 1);
    let event = &server.handler().events[0];
    assert!(event.starts_with("failed: Spawn"), "{event}");
    assert!(event.contains("/nonexistent/successor"), "{event}");
    assert!(echoes_while(&mut server, v4));
}

/// A socket whose mode the successor would change is not rebound beside it: the bind fails
/// with an error that names both, and the predecessor goes on.
#[test]
fn a_mode_the_successor_would_change_is_an_error_naming_both() {
    if as_successor().is_some() || !util::has_ipv6() {
        return;
    }
    reap_orphans();
    let mut server = Server::builder().listen(":0").bind(recording()).unwrap();
    let port = echo_addr(&server, 0).port();
    server
        .handle()
        .hand_over(successor("successor_plans_separate_stacks"))
        .unwrap();
    run_until(&mut server, 2);
    assert!(server.handler().events[1].starts_with("failed: Exited"));
    let said = take_said("successor_plans_separate_stacks");
    assert!(
        said.contains(&format!("[::]:{port} (dual-stack)")),
        "{said}"
    );
    assert!(said.contains(&format!("[::]:{port} (ipv6-only)")), "{said}");
    assert!(said.contains("\":0\""), "{said}");
    assert!(echoes_while(
        &mut server,
        SocketAddr::from(([127, 0, 0, 1], port))
    ));
}
