//! Counting a server's system calls with `perf stat` on its tracepoints, switched on and
//! off exactly at the edges of a measured window (the runner's syscall rows, `instr_bench`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The system calls the counter tells apart, as perf names their tracepoints.
pub const SYSCALL_EVENTS: [&str; 5] = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_epoll_wait",
];

/// `perf stat` counting a server's system calls (every thread) while enabled: attached
/// before the load starts, switched on and off through its control FIFO exactly at the edges
/// of the measured window, so the counts and the round trips cover the same interval. Not
/// `strace`: under strace the server falls behind, handles bigger batches per `epoll_wait`,
/// and looks better than it is.
pub struct SyscallCounter {
    child: Child,
    ctl: std::fs::File,
    ack: std::fs::File,
    dir: PathBuf,
}

impl SyscallCounter {
    pub fn start(pid: u32) -> Option<SyscallCounter> {
        let dir = std::env::temp_dir().join(format!("dualstack-perf-{}", std::process::id()));
        let counter = SyscallCounter::start_in(pid, dir.clone());
        if counter.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        counter
    }

    fn start_in(pid: u32, dir: PathBuf) -> Option<SyscallCounter> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let (ctl, ack) = (dir.join("ctl"), dir.join("ack"));
        for fifo in [&ctl, &ack] {
            if !Command::new("mkfifo").arg(fifo).status().ok()?.success() {
                return None;
            }
        }
        let mut perf = Command::new("perf");
        perf.args(["stat", "--per-thread", "-x", ",", "-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()));
        for event in SYSCALL_EVENTS {
            perf.args(["-e", event]);
        }
        let mut child = perf
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // Opening the write end fails (ENXIO) until perf has opened the read end.
        let deadline = Instant::now() + Duration::from_secs(5);
        let ctl = loop {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&ctl)
            {
                Ok(f) => break f,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        };
        let ack = {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&ack)
            {
                Ok(f) => f,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        };
        Some(SyscallCounter {
            child,
            ctl,
            ack,
            dir,
        })
    }

    /// Sends `enable` or `disable` and waits (up to a second) for perf's acknowledgement.
    pub fn command(&mut self, what: &str) -> bool {
        use std::io::Read;
        if self.ctl.write_all(format!("{what}\n").as_bytes()).is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while Instant::now() < deadline {
            match self.ack.read(&mut buf) {
                Ok(n) if n > 0 => {
                    // perf answers "ack\n" (followed by a NUL byte).
                    got.extend_from_slice(&buf[..n]);
                    if got.contains(&b'\n') {
                        return got.starts_with(b"ack\n");
                    }
                }
                _ => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        false
    }

    /// Stops perf; returns the count per event (summed over threads), or nothing if perf did
    /// not confirm both edges of the window.
    pub fn finish(mut self, enabled: bool) -> Vec<(String, f64)> {
        let disabled = self.command("disable");
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let out = self.child.wait_with_output();
        let _ = std::fs::remove_dir_all(&self.dir);
        match out {
            Ok(out) if enabled && disabled => {
                parse_perf_stat(&String::from_utf8_lossy(&out.stderr))
            }
            _ => Vec::new(),
        }
    }
}

/// Sums `perf stat --per-thread -x,` lines (`thread,count,unit,event,...`) per event.
pub fn parse_perf_stat(text: &str) -> Vec<(String, f64)> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let Some(event) = fields.iter().find(|f| SYSCALL_EVENTS.contains(f)) else {
            continue;
        };
        // "<not counted>" (a thread that made no call in the window) does not parse.
        if let Some(n) = fields.get(1).and_then(|c| c.parse::<f64>().ok()) {
            *sums.entry(short_event(event).to_owned()).or_default() += n;
        }
    }
    sums.into_iter().collect()
}

fn short_event(event: &str) -> &str {
    match event.rsplit_once("sys_enter_") {
        Some((_, name)) => name,
        None => "total",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_stat_lines_are_summed_per_event_over_threads() {
        // As `perf stat --per-thread -x,` prints them: a busy thread and an idle one.
        let text = "echo-10,300,,raw_syscalls:sys_enter,1000000,100.00,,\n\
                    echo-11,<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n\
                    echo-10,100,,syscalls:sys_enter_recvfrom,1000000,100.00,,\n\
                    echo-11,2,,syscalls:sys_enter_epoll_wait,1000000,100.00,,\n\
                    echo-10,5,,syscalls:sys_enter_epoll_wait,1000000,100.00,,\n\
                    some other line perf prints\n";
        assert_eq!(
            parse_perf_stat(text),
            vec![
                ("epoll_wait".to_owned(), 7.0),
                ("recvfrom".to_owned(), 100.0),
                ("total".to_owned(), 300.0),
            ]
        );
    }
}
