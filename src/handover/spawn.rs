//! The predecessor's side of a hand-over: start the successor with the listening sockets,
//! and wait (on a thread of its own, so the loop goes on serving) for its `READY=1`, its
//! end, or the ready timeout.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{HandOver, HandOverError, HandOverErrorKind};

/// The first descriptor the successor finds its sockets at (`SD_LISTEN_FDS_START`).
const FIRST: i32 = 3;

/// How often the waiting thread looks at the successor and at a cancellation.
const TICK: Duration = Duration::from_millis(20);

/// A hand-over whose successor runs and has not said `READY=1` yet.
pub(crate) struct Pending {
    pid: u32,
    drain_timeout: Duration,
    cancel: Arc<AtomicBool>,
    outcome: mpsc::Receiver<Result<u32, HandOverError>>,
}

impl Pending {
    /// The successor's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// How long the connections may go on once the successor is ready.
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// The outcome, if the waiting thread has one.
    pub(crate) fn outcome(&self) -> Option<Result<u32, HandOverError>> {
        match self.outcome.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(HandOverError::new(
                HandOverErrorKind::Io,
                "the thread waiting for the successor ended without a word",
            ))),
        }
    }

    /// Cancels it (the successor is killed, unless it was ready already) and waits for the
    /// outcome, at most a few seconds.
    pub(crate) fn cancel(self) -> Result<u32, HandOverError> {
        self.cancel.store(true, Ordering::Release);
        self.outcome
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| {
                Err(HandOverError::new(
                    HandOverErrorKind::Cancelled,
                    "the server stopped while the successor was starting",
                ))
            })
    }
}

/// The program to start: `how`'s, or this one as it is on disk now. On Linux the path of
/// a binary replaced since it started reads `PATH (deleted)`: the path is where the new
/// one is.
fn program(how: &HandOver) -> io::Result<(OsString, Vec<OsString>)> {
    if let (Some(program), Some(args)) = (&how.program, &how.args) {
        return Ok((program.clone(), args.clone()));
    }
    let exe = std::env::current_exe()?;
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) if !exe.exists() => OsString::from(path),
        _ => exe.into_os_string(),
    };
    Ok((exe, std::env::args_os().skip(1).collect()))
}

/// Starts the successor with `sockets` (each with its name) on descriptors 3, 4, …, and a
/// thread that waits for its `READY=1` and calls `wake` once it has an outcome.
/// A listening socket to pass: the socket, its name, and the socket file it made (device
/// and inode) if it made one.
pub(crate) type Passing<'a> = (BorrowedFd<'a>, String, Option<(u64, u64)>);

pub(crate) fn start(
    how: &HandOver,
    sockets: &[Passing<'_>],
    wake: impl Fn() + Send + 'static,
) -> Result<Pending, HandOverError> {
    let io =
        |what: &str, e: io::Error| HandOverError::new(HandOverErrorKind::Io, what).with_source(e);
    let (program, args) =
        program(how).map_err(|e| io("cannot find the path of this program", e))?;
    let (ours, theirs) =
        socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)
            .map_err(|e| io("cannot make the readiness channel", e))?;
    // Copies at numbers above every target, so no move in the child overwrites one still to
    // be moved; closed here once the child has them.
    let count = sockets.len() as i32 + 1;
    let above = FIRST + count;
    let mut copies: Vec<OwnedFd> = Vec::with_capacity(sockets.len() + 1);
    for (fd, _, _) in sockets {
        copies.push(
            crate::sys::dup_at_least(*fd, above)
                .map_err(|e| io("cannot copy a listening socket for the successor", e))?,
        );
    }
    copies.push(
        crate::sys::dup_at_least(std::os::fd::AsFd::as_fd(&theirs), above)
            .map_err(|e| io("cannot copy the readiness channel", e))?,
    );
    drop(theirs);
    let names: Vec<&str> = sockets.iter().map(|(_, n, _)| n.as_str()).collect();
    let files: Vec<String> = sockets
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, file))| file.map(|(dev, ino)| format!("{i}={dev}:{ino}")))
        .collect();
    let mut command = std::process::Command::new(&program);
    command
        .args(&args)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_PIDFDID")
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env("DUALSTACK_HANDOVER_FILES", files.join(","))
        .env(
            super::passed::VARIABLE,
            format!("{}:{}", std::process::id(), FIRST + sockets.len() as i32),
        );
    crate::sys::pass_descriptors(
        &mut command,
        copies.iter().map(AsRawFd::as_raw_fd).collect(),
        FIRST,
    );
    // The waiting thread first: if it cannot be made, no successor is started (one
    // nobody waits for could neither be reported nor killed).
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (give, take) = mpsc::channel::<std::process::Child>();
    let now = Instant::now();
    // A timeout too long for the clock to add is a year: as good as never.
    let deadline = now
        .checked_add(how.ready_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    let stop = Arc::clone(&cancel);
    std::thread::Builder::new()
        .name("dualstack-handover".to_owned())
        .spawn(move || {
            // No child: the spawn failed, and the caller reports it.
            let Ok(child) = take.recv() else { return };
            let mut child = child;
            let outcome = wait(&mut child, ours, deadline, &stop);
            let ready = outcome.is_ok();
            let _ = tx.send(outcome);
            wake();
            if ready {
                // It serves now: reaped when it ends, if this process is still there then
                // (no zombie while this one drains, or goes on as an embedder's).
                let _ = child.wait();
            }
        })
        .map_err(|e| io("cannot start the thread that waits for the successor", e))?;
    // Every number the child moves descriptors to is held here while it is made, so the
    // standard library's pipe for a failed exec lands above them.
    let held = crate::sys::fill_below(above)
        .map_err(|e| io("cannot keep the successor's descriptor numbers free", e))?;
    // A process group of its own: a failed successor is killed with whatever it started
    // (a wrapper script that does not exec, and the server it runs).
    command.process_group(0);
    let spawned = command.spawn();
    drop(held);
    let child = spawned.map_err(|e| {
        HandOverError::new(
            HandOverErrorKind::Spawn,
            format!("cannot start {:?}", program),
        )
        .with_source(e)
    })?;
    drop(copies);
    let pid = child.id();
    let _ = give.send(child);
    Ok(Pending {
        pid,
        drain_timeout: how.drain_timeout,
        cancel,
        outcome: rx,
    })
}

/// Waits for `READY=1` on `channel` from `child`, until `deadline` or a cancellation.
/// Anything but `READY=1` kills the child (and reaps it).
fn wait(
    child: &mut std::process::Child,
    channel: socket2::Socket,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<u32, HandOverError> {
    let pid = child.id();
    fn kill(child: &mut std::process::Child, error: HandOverError) -> Result<u32, HandOverError> {
        crate::sys::kill_group(child.id());
        let _ = child.kill();
        let _ = child.wait();
        Err(error)
    }
    if let Err(e) = channel.set_read_timeout(Some(TICK)) {
        return kill(
            child,
            HandOverError::new(
                HandOverErrorKind::Io,
                "cannot wait on the readiness channel",
            )
            .with_source(e),
        );
    }
    let mut buf = [0u8; 4096];
    loop {
        if cancel.load(Ordering::Acquire) {
            return kill(child, HandOverError::new(
                HandOverErrorKind::Cancelled,
                format!("the server stopped while its successor (pid {pid}) was starting; the successor was killed"),
            ));
        }
        match (&channel).read(&mut buf) {
            Ok(0) => {
                // Its end closed: it exited (or closed it without a word). A moment for
                // the exit to be seen.
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until {
                    if let Some(status) = reap_ended(child) {
                        return Err(exited(pid, status));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                return kill(child, HandOverError::new(
                    HandOverErrorKind::NotReady,
                    format!("the successor (pid {pid}) closed its readiness channel without saying READY=1, and was killed"),
                ));
            }
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                if message.lines().any(|l| l == "READY=1") {
                    // The server's own pid, which a wrapper that did not exec is not.
                    let server = message
                        .lines()
                        .find_map(|l| l.strip_prefix("MAINPID="))
                        .and_then(|p| p.parse::<u32>().ok())
                        .filter(|p| *p > 1)
                        .unwrap_or(pid);
                    return Ok(server);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                return kill(
                    child,
                    HandOverError::new(
                        HandOverErrorKind::Io,
                        format!("cannot read the readiness channel of the successor (pid {pid}), which was killed"),
                    )
                    .with_source(e),
                )
            }
        }
        if let Some(status) = reap_ended(child) {
            return Err(exited(pid, status));
        }
        if Instant::now() >= deadline {
            return kill(child, HandOverError::new(
                HandOverErrorKind::NotReady,
                format!("the successor (pid {pid}) did not say READY=1 in time (it must call dualstack::notify(\"READY=1\") once it serves), and was killed"),
            ));
        }
    }
}

/// If `child` has ended: its process group is killed first (what it started, a wrapper's
/// server, must not go on holding the sockets; while the ended child is not reaped, its
/// pid, the group's id, cannot be anyone else's), then it is reaped, and its status
/// returned.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn reap_ended(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    if !crate::sys::has_ended(child.id()) {
        return None;
    }
    crate::sys::kill_group(child.id());
    child.wait().ok()
}

/// See the Linux version. Without a way to look at an ended child before reaping it here,
/// what a successor that ended started is left alone (its group's id could be anyone's
/// once it is reaped).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn reap_ended(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    child.try_wait().ok().flatten()
}

fn exited(pid: u32, status: std::process::ExitStatus) -> HandOverError {
    HandOverError::new(
        HandOverErrorKind::Exited,
        format!("the successor (pid {pid}) ended before it was ready ({status})"),
    )
}
