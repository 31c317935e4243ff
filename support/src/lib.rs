//! What dualstack's tests, the soak example and the benchmark suite share, written once:
//! the byte pattern clients send and verify, readers of `/proc` (CPU time, RSS,
//! descriptors), the descriptor limit, the `listening on ADDR (MODE)` line, and the
//! programs some tests drive ([`Tool`]: skipped with one line where they are missing).
//!
//! It does not depend on the library (rustls keeps `rustls-test/` the same way), so it can
//! serve the library's own tests without a cycle, and it is never published.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

/// The content connections send: byte `offset` of connection `id` is
/// `table()[(offset + id * STRIDE) % len]`, so every connection sends varied bytes and every
/// byte that comes back can be checked without keeping a copy of what was sent.
#[derive(Debug, Clone)]
pub struct Pattern {
    table: Vec<u8>,
}

/// A prime stride, so connections start at different places in the table.
const STRIDE: u64 = 7919;

impl Default for Pattern {
    fn default() -> Pattern {
        // 1 MiB + 7 bytes of xorshift output: longer than any message, not a power of two.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let table = (0..(1 << 20) + 7)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Pattern { table }
    }
}

impl Pattern {
    /// The longest run of pattern bytes of connection `id` from `offset`, up to `max` bytes
    /// (shorter where the table wraps: call again from the new offset).
    pub fn slice(&self, id: u64, offset: u64, max: usize) -> &[u8] {
        let len = self.table.len() as u64;
        let start = ((offset + id.wrapping_mul(STRIDE)) % len) as usize;
        let end = self.table.len().min(start + max);
        &self.table[start..end]
    }

    /// `len` bytes of connection `id` from `offset`, in one buffer.
    pub fn bytes(&self, id: u64, mut offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let s = self.slice(id, offset, len - out.len());
            out.extend_from_slice(s);
            offset += s.len() as u64;
        }
        out
    }

    /// Whether `data` is what connection `id` sent from `offset` on.
    pub fn matches(&self, id: u64, mut offset: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let expected = self.slice(id, offset, data.len());
            if data[..expected.len()] != *expected {
                return false;
            }
            offset += expected.len() as u64;
            data = &data[expected.len()..];
        }
        true
    }
}

/// CPU time of process `pid` (all its live threads, user + system), in nanoseconds from the
/// scheduler's own accounting (`/proc/PID/task/*/schedstat`), or failing that in clock ticks
/// ([`cpu_ticks`]).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let scheduled = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .and_then(|tasks| {
            let mut total = 0u64;
            for task in tasks {
                let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                total += text.split_whitespace().next()?.parse::<u64>().ok()?;
            }
            Some(Duration::from_nanos(total))
        });
    scheduled.or_else(|| cpu_ticks(pid))
}

/// CPU time of process `pid` in clock ticks (10 ms resolution), counting threads that have
/// exited too (`/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / clock_ticks_per_second(),
    ))
}

fn clock_ticks_per_second() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions and touches no memory of ours.
        #[allow(unsafe_code)]
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(hz).unwrap_or(100).max(1)
    }
    #[cfg(not(unix))]
    100
}

/// Resident set size of process `pid`, in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How many descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The highest RSS process `pid` reaches while the sampler runs (every 20 ms, on a thread
/// of its own); [`RssSampler::stop`] ends it and says.
#[derive(Debug)]
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss(pid).unwrap_or(0);
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    /// Stops sampling; the peak RSS seen, in bytes.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

#[cfg(unix)]
fn fd_limits() -> std::io::Result<libc::rlimit> {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `rlim`, which lives across the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rlim)
}

#[cfg(unix)]
fn set_fd_limits(rlim: libc::rlimit) -> std::io::Result<()> {
    // SAFETY: setrlimit reads the rlimit we pass, which lives across the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's limit on open descriptors toward `want` (children inherit it):
/// the hard limit too where the process may (root), else the soft one up to the hard one.
/// Returns the soft limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit(want: u64) -> std::io::Result<u64> {
    let rlim = fd_limits()?;
    if rlim.rlim_cur >= want {
        return Ok(rlim.rlim_cur);
    }
    if rlim.rlim_max < want
        && set_fd_limits(libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        })
        .is_ok()
    {
        return Ok(want);
    }
    let soft = want.min(rlim.rlim_max);
    set_fd_limits(libc::rlimit {
        rlim_cur: soft,
        rlim_max: rlim.rlim_max,
    })?;
    Ok(soft)
}

/// Lowers this process's limit on open descriptors, soft and hard, to `limit` (for a
/// child that must run out of descriptors).
#[cfg(unix)]
pub fn lower_fd_limit(limit: u64) -> std::io::Result<()> {
    set_fd_limits(libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    })
}

/// The address and mode of a `listening on ADDR (MODE)` line, the examples' and reference
/// servers' start-up contract; `None` for any other line.
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, String)> {
    let rest = line.trim().strip_prefix("listening on ")?;
    let (addr, mode) = rest.split_once(' ')?;
    let mode = mode.strip_prefix('(')?.strip_suffix(')')?;
    Some((addr.parse().ok()?, mode.to_owned()))
}

/// A program some tests drive, and the Debian package that gives it: the clients nobody
/// here wrote (`socat`, `nc`, `haproxy`…). A machine with only Rust may lack them; see
/// [`Tool::usable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// The program, as looked up on `PATH`.
    pub program: &'static str,
    /// The Debian package that gives it, for the message.
    pub package: &'static str,
    /// Arguments that make it print something and exit (its help or version).
    probe: &'static [&'static str],
    /// Text the probe's output must contain, where another program goes by the same name
    /// (`nc`: only netcat-openbsd has `-N`).
    must_say: Option<&'static str>,
}

/// The environment variable that makes a missing tool a failure instead of a skip: set it
/// to `1` (`.ci/run` does) so that CI proves every path. `CI=true` does the same.
pub const REQUIRE_TOOLS: &str = "DUALSTACK_REQUIRE_TOOLS";

impl Tool {
    /// `socat`.
    pub const SOCAT: Tool = Tool::new("socat", "socat", &["-V"], None);
    /// OpenBSD's `nc` (the only one with `-N`, which the tests need).
    pub const NC: Tool = Tool::new("nc", "netcat-openbsd", &["-h"], Some("-N"));
    /// `haproxy`.
    pub const HAPROXY: Tool = Tool::new("haproxy", "haproxy", &["-v"], None);
    /// `curl`.
    pub const CURL: Tool = Tool::new("curl", "curl", &["--version"], None);
    /// `python3`.
    pub const PYTHON3: Tool = Tool::new("python3", "python3", &["--version"], None);
    /// `systemd-socket-activate`.
    pub const SOCKET_ACTIVATE: Tool =
        Tool::new("systemd-socket-activate", "systemd", &["--version"], None);
    /// `strace`.
    pub const STRACE: Tool = Tool::new("strace", "strace", &["-V"], None);
    /// `ip` (iproute2).
    pub const IP: Tool = Tool::new("ip", "iproute2", &["-V"], None);
    /// `redis-server`.
    pub const REDIS_SERVER: Tool = Tool::new("redis-server", "redis-server", &["--version"], None);
    /// `redis-cli`.
    pub const REDIS_CLI: Tool = Tool::new("redis-cli", "redis-tools", &["--version"], None);
    /// `redis-benchmark`.
    pub const REDIS_BENCHMARK: Tool =
        Tool::new("redis-benchmark", "redis-tools", &["--version"], None);
    /// `openssl`.
    pub const OPENSSL: Tool = Tool::new("openssl", "openssl", &["version"], None);
    /// `gnutls-cli`.
    pub const GNUTLS_CLI: Tool = Tool::new("gnutls-cli", "gnutls-bin", &["--version"], None);

    /// A tool: `program`, from Debian's `package`, found when `program probe…` runs and
    /// prints `must_say` (if given) on stdout or stderr.
    pub const fn new(
        program: &'static str,
        package: &'static str,
        probe: &'static [&'static str],
        must_say: Option<&'static str>,
    ) -> Tool {
        Tool {
            program,
            package,
            probe,
            must_say,
        }
    }

    /// Whether the program is on this machine (asked once per process).
    pub fn found(&self) -> bool {
        static SEEN: std::sync::Mutex<Vec<(Tool, bool)>> = std::sync::Mutex::new(Vec::new());
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, found)) = seen.iter().find(|(t, _)| t == self) {
            return found;
        }
        let found = std::process::Command::new(self.program)
            .args(self.probe)
            .stdin(std::process::Stdio::null())
            .output()
            .is_ok_and(|out| {
                self.must_say.is_none_or(|text| {
                    String::from_utf8_lossy(&out.stdout).contains(text)
                        || String::from_utf8_lossy(&out.stderr).contains(text)
                })
            });
        seen.push((*self, found));
        found
    }

    /// Whether a test that needs this program can run: `true` when it is here. When it is
    /// not, the test is skipped: one line on the real stderr (past the test harness's
    /// capture, so `cargo test` shows it) names the test, the program and the package, and
    /// this returns `false` for the test to return early. Where a missing tool must fail
    /// the run ([`REQUIRE_TOOLS`]`=1`, or `CI=true`), this panics instead, with the same
    /// words.
    ///
    /// ```no_run
    /// # use dualstack_support::Tool;
    /// if !Tool::SOCAT.usable() {
    ///     return;
    /// }
    /// ```
    #[track_caller]
    pub fn usable(&self) -> bool {
        Tool::all_usable(&[*self])
    }

    /// Whether every one of `tools` is usable; the missing ones are named on one line, as
    /// [`usable`](Tool::usable) does for one.
    #[track_caller]
    pub fn all_usable(tools: &[Tool]) -> bool {
        let missing: Vec<String> = tools
            .iter()
            .filter(|t| !t.found())
            .map(|t| format!("{} not found (apt-get install {})", t.program, t.package))
            .collect();
        if missing.is_empty() {
            return true;
        }
        let what = missing.join(", ");
        if tools_required() {
            panic!("{what}: {REQUIRE_TOOLS} or CI asks for every tool");
        }
        let test = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped{test}: {what}");
        false
    }
}

/// Whether a missing tool fails the run: [`REQUIRE_TOOLS`] is set to anything but `0` or
/// empty, or `CI` is `true` (as most CI services set it).
pub fn tools_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set(REQUIRE_TOOLS) || std::env::var("CI").is_ok_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_verifies_what_it_produced_and_nothing_else() {
        let p = Pattern::default();
        let sent = p.bytes(5, 0, 3_000_000);
        assert!(p.matches(5, 0, &sent));
        assert!(p.matches(5, 1234, &sent[1234..2_500_000]));
        assert!(
            !p.matches(6, 0, &sent[..1000]),
            "another connection's bytes"
        );
        let mut bad = sent[..5000].to_vec();
        bad[4321] ^= 1;
        assert!(!p.matches(5, 0, &bad));
    }

    #[test]
    fn a_missing_tool_is_not_found_and_a_present_one_is() {
        assert!(!Tool::new("dualstack-no-such-program", "none", &[], None).found());
        // `sh -c 'echo -N'` stands for a program that prints what is asked of it.
        let sh = |must: &'static str| Tool {
            program: "sh",
            package: "dash",
            probe: &["-c", "echo has -N"],
            must_say: Some(must),
        };
        assert!(sh("-N").found());
        assert!(!sh("-Z").found(), "another program by the same name");
    }

    #[test]
    fn listening_lines_parse_and_nothing_else_does() {
        assert_eq!(
            parse_listening_line("listening on [::1]:7000 (ipv6-only)\n"),
            Some(("[::1]:7000".parse().unwrap(), "ipv6-only".to_owned()))
        );
        assert_eq!(parse_listening_line("udp on 127.0.0.1:9"), None);
        assert_eq!(parse_listening_line("listening on nowhere (x)"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_readers_see_this_process() {
        let me = std::process::id();
        assert!(rss(me).unwrap() > 0);
        assert!(fd_count(me).unwrap() >= 3);
        assert!(cpu_time(me).is_some() && cpu_ticks(me).is_some());
    }
}
