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

/// The child: two servers, each named to `Signals::stop`, the first run on a thread of its
/// own; says `ready`, then `stopped N` as each `run` returns.
fn two_servers() {
    let signals = Signals::install().unwrap();
    let (bound, ready) = std::sync::mpsc::channel();
    let first = {
        let signals = signals.clone();
        std::thread::spawn(move || {
            let mut server = Server::builder()
                .listen("127.0.0.1:0")
                .bind(Nothing)
                .unwrap();
            signals.stop(&server).unwrap();
            bound.send(()).unwrap();
            server.run().unwrap();
            println!("stopped 1");
        })
    };
    ready.recv().unwrap();
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .bind(Nothing)
        .unwrap();
    signals.stop(&server).unwrap();
    println!("ready");
    server.run().unwrap();
    println!("stopped 2");
    first.join().unwrap();
    std::process::exit(0);
}

/// Fourth review of #22: a process with two servers names both to `Signals::stop`, and one
/// SIGTERM stops both gracefully. (Each `stop` replaced the server named before: the first
/// server ran on, and the process never ended.)
#[test]
fn one_signal_stops_every_server_named() {
    if std::env::var_os(CHILD).is_some() {
        return two_servers();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "one_signal_stops_every_server_named",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut saw = |want: &str| loop {
        match lines.next() {
            Some(Ok(line)) if line == want => return true,
            Some(Ok(_)) => {}
            _ => return false,
        }
    };
    assert!(saw("ready"), "the child did not start");
    // SAFETY: kill(2) with a PID of our own child, which has not been waited for (so the
    // number is still its), and a valid signal number; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
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
    let status = status.expect("both servers stopped within 10 s of SIGTERM");
    assert!(status.success(), "the child ended with {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l == "stopped 1") && rest.iter().any(|l| l == "stopped 2"),
        "the child said {rest:?}"
    );
}
