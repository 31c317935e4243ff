//! `dualstack::signals` in a process of its own: this test binary runs itself again as the
//! child (the harness must not take the signal).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dualstack::signals::Signals;
use dualstack::{ConnId, Context, Handler, Input, Server};

/// Set in the child's environment: it runs [`two_servers`] instead of the test.
const CHILD: &str = "DUALSTACK_SIGNALS_TEST_CHILD";

struct Nothing;

impl Handler for Nothing {
    type State = ();

    fn on_data(&mut self, _: &mut Context<'_, Self>, _: ConnId, _: &mut Input<'_>) {}
}

/// A server on a loopback port that does nothing.
fn nothing() -> Server<Nothing> {
    Server::builder()
        .listen("127.0.0.1:0")
        .bind(Nothing)
        .unwrap()
}

/// The child: two servers, each named to `Signals::stop`, the first run on a thread of its
/// own, then a SIGTERM; says `stopped N` as each `run` returns.
fn two_servers() {
    let signals = Signals::install().unwrap();
    let (bound, ready) = std::sync::mpsc::channel();
    let first = {
        let signals = signals.clone();
        std::thread::spawn(move || {
            let mut server = nothing();
            signals.stop(&server).unwrap();
            bound.send(()).unwrap();
            server.run().unwrap();
            println!("stopped 1");
        })
    };
    ready.recv().unwrap();
    let mut server = nothing();
    signals.stop(&server).unwrap();
    // SAFETY: kill(2) with this process's own PID and a valid signal number; no memory is
    // involved.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    server.run().unwrap();
    println!("stopped 2");
    first.join().unwrap();
    std::process::exit(0);
}

/// The child for the late server: one server named and run, a SIGTERM, then a second server
/// named after it; says `stopped N` as each `run` returns.
fn late_server() {
    let signals = Signals::install().unwrap();
    let mut first = nothing();
    signals.stop(&first).unwrap();
    // SAFETY: kill(2) with this process's own PID and a valid signal number; no memory is
    // involved.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    first.run().unwrap();
    println!("stopped 1");
    let mut second = nothing();
    signals.stop(&second).unwrap();
    second.run().unwrap();
    println!("stopped 2");
    std::process::exit(0);
}

/// Runs this test binary again as the child `mode`, and returns its status (or `None` if
/// it did not end within 10 s: killed then) and what it printed.
fn child(test: &str, mode: &str) -> (Option<std::process::ExitStatus>, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(CHILD, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (status, lines.map_while(Result::ok).collect())
}

/// Fifth review of #22: a server named to `Signals::stop` after the first signal came is
/// stopped at once (it ran on until a second signal ended the process).
#[test]
fn a_server_named_after_the_signal_is_stopped_at_once() {
    if std::env::var_os(CHILD).is_some() {
        return late_server();
    }
    let (status, said) = child("a_server_named_after_the_signal_is_stopped_at_once", "late");
    let status = status.expect("the child ended within 10 s");
    assert!(status.success(), "the child ended with {status}");
    assert!(
        said.iter().any(|l| l == "stopped 2"),
        "the child said {said:?}"
    );
}

/// How many descriptors this process has open (Linux: `/proc`).
#[cfg(target_os = "linux")]
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Fifth review of #22: servers named to `Signals::stop` and dropped are forgotten with
/// their descriptors (each kept its waker's open: 50 servers, 50 descriptors).
#[test]
#[cfg(target_os = "linux")]
fn servers_named_and_dropped_leave_no_descriptor_behind() {
    let signals = Signals::install().unwrap();
    let warm = nothing();
    signals.stop(&warm).unwrap(); // the waiting thread and its pipe, once
    drop(warm);
    let before = open_descriptors();
    for _ in 0..50 {
        signals.stop(&nothing()).unwrap();
    }
    let after = open_descriptors();
    assert!(
        after < before + 10,
        "{before} descriptors before, {after} after"
    );
}

/// Fourth review of #22: a process with two servers names both to `Signals::stop`, and one
/// SIGTERM stops both gracefully. (Each `stop` replaced the server named before: the first
/// server ran on, and the process never ended.)
#[test]
fn one_signal_stops_every_server_named() {
    if std::env::var_os(CHILD).is_some() {
        return two_servers();
    }
    let (status, said) = child("one_signal_stops_every_server_named", "two");
    let status = status.expect("both servers stopped within 10 s of SIGTERM");
    assert!(status.success(), "the child ended with {status}");
    assert!(
        said.iter().any(|l| l == "stopped 1") && said.iter().any(|l| l == "stopped 2"),
        "the child said {said:?}"
    );
}
