//! The `mixed` load: K flooders pushing as fast as the server takes their bytes, and M small
//! clients sending 64-byte requests at a fixed rate, open loop. It measures what a small
//! client feels while big ones push: latency counted from the *intended* send time, so a
//! stalled server cannot hide its stalls by delaying the next request (coordinated
//! omission), and how evenly the flood is shared.
//!
//! Two threads, pinned together by whoever starts the process:
//! - the flooders' thread: one poll, K connections with fixed 4 MiB socket buffers (no
//!   autotuning, so the run is limited by the server), each writing the pattern and reading
//!   its echo concurrently, every byte verified;
//! - the small clients' thread, at real-time priority where the system allows it (root), so
//!   that the flooders' thread cannot delay a send: a timerfd wakes it at each intended send
//!   time, to the microsecond. How late each send still was ("lateness") is measured and
//!   reported, so the load generator's own delays are visible, not mixed into the server's.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::{Json, Pattern};

/// What to run.
#[derive(Debug, Clone)]
pub struct Mixed {
    pub addr: SocketAddr,
    pub flooders: usize,
    pub smalls: usize,
    /// Requests per second per small client.
    pub rate: f64,
    /// Bytes per flooder write.
    pub flood_size: usize,
    pub warmup: Duration,
    pub seconds: Duration,
}

/// The socket buffers of a flooder, fixed (which turns autotuning off).
const FLOOD_BUFFER: usize = 4 << 20;
/// A flooder stops writing while this much of its own output has not come back yet.
const FLOOD_IN_FLIGHT: u64 = 16 << 20;
/// Pattern ids: flooders use 0..K, small clients start here.
const SMALL_ID: u64 = 1 << 20;
/// The size of a small client's request.
const SMALL_SIZE: usize = 64;
/// How long stragglers may take once the window closes before bytes count as lost.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the load; returns the JSON report or what went wrong (a mismatch, a lost byte, a
/// closed connection: a benchmark of a wrong server is worthless).
pub fn run(m: &Mixed) -> Result<String, String> {
    let start = Instant::now() + Duration::from_millis(200);
    let window = (start + m.warmup, start + m.warmup + m.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let flood_stop = stop.clone();
    let fm = m.clone();
    let flooders = std::thread::spawn(move || flood(&fm, window, &flood_stop));
    let sm = m.clone();
    let smalls = std::thread::spawn(move || small(&sm, start, window));
    // The phases the runner samples the server by.
    sleep_until(window.0);
    eprintln!("measuring");
    let mut tick = window.0 + Duration::from_millis(250);
    while tick <= window.1 {
        sleep_until(tick);
        eprintln!("tick {} 0", tick.duration_since(window.0).as_micros());
        tick += Duration::from_millis(250);
    }
    sleep_until(window.1);
    eprintln!("done");
    // Everybody stops sending at the end of the window and waits for what is in flight: a
    // server that starves the small clients answers them once the flood is over, late, and
    // their latency says so.
    stop.store(true, Ordering::SeqCst);
    let small = smalls
        .join()
        .map_err(|_| "the small clients' thread panicked")??;
    let flood = flooders
        .join()
        .map_err(|_| "the flooders' thread panicked")??;
    let secs = m.seconds.as_secs_f64();
    let per_conn: Vec<f64> = flood
        .measured
        .iter()
        .map(|&b| b as f64 / secs / 1e6)
        .collect();
    let total: f64 = per_conn.iter().sum();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64;
    Ok(Json::default()
        .text("mode", "mixed")
        .num("flooders", m.flooders as f64)
        .num("smalls", m.smalls as f64)
        .num("rate", m.rate)
        .num("seconds", secs)
        .num("small_count", small.latency.len() as f64)
        .num("small_p50_us", q(&small.latency, 0.5))
        .num("small_p90_us", q(&small.latency, 0.9))
        .num("small_p99_us", q(&small.latency, 0.99))
        .num("small_p999_us", q(&small.latency, 0.999))
        .num("small_p9999_us", q(&small.latency, 0.9999))
        .num("small_max_us", small.latency.max() as f64)
        .num("late_p50_us", q(&small.lateness, 0.5))
        .num("late_p99_us", q(&small.lateness, 0.99))
        .num("late_max_us", small.lateness.max() as f64)
        .num("realtime", f64::from(u8::from(small.realtime)))
        .num("flood_mb_per_s", total)
        .num(
            "flood_min_mb_per_s",
            per_conn.iter().copied().fold(f64::INFINITY, f64::min),
        )
        .num(
            "flood_max_mb_per_s",
            per_conn.iter().copied().fold(0.0, f64::max),
        )
        .num("bytes_verified", (flood.verified + small.verified) as f64)
        .finish())
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// A connection with fixed socket buffers, non-blocking, registered under `token`.
fn connect(
    poll: &Poll,
    addr: SocketAddr,
    token: Token,
    buffers: Option<usize>,
) -> Result<TcpStream, String> {
    let mut stream = crate::client(addr, buffers).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

struct Flooded {
    /// Bytes echoed back per flooder within the window.
    measured: Vec<u64>,
    verified: u64,
}

struct Flooder {
    stream: TcpStream,
    sent: u64,
    received: u64,
    at_start: Option<u64>,
    at_end: Option<u64>,
}

fn flood(m: &Mixed, window: (Instant, Instant), stop: &AtomicBool) -> Result<Flooded, String> {
    let pattern = Pattern::default();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(64);
    let mut conns = (0..m.flooders)
        .map(|i| {
            Ok(Flooder {
                stream: connect(&poll, m.addr, Token(i), Some(FLOOD_BUFFER))?,
                sent: 0,
                received: 0,
                at_start: None,
                at_end: None,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut draining: Option<Instant> = None;
    loop {
        let now = Instant::now();
        for c in &mut conns {
            if now >= window.0 && c.at_start.is_none() {
                c.at_start = Some(c.received);
            }
            if now >= window.1 && c.at_end.is_none() {
                c.at_end = Some(c.received);
            }
        }
        if draining.is_none() && stop.load(Ordering::SeqCst) {
            draining = Some(now + DRAIN);
        }
        if let Some(deadline) = draining {
            if conns.iter().all(|c| c.received == c.sent) {
                break;
            }
            if now > deadline {
                let missing: u64 = conns.iter().map(|c| c.sent - c.received).sum();
                return Err(format!(
                    "flooders: {missing} bytes sent were never echoed back"
                ));
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .map_err(|e| e.to_string())?;
        for event in events.iter() {
            let i = event.token().0;
            let c = &mut conns[i];
            if event.is_readable() || event.is_read_closed() {
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => return Err(format!("flooder {i} closed by the server")),
                        Ok(n) => {
                            if c.received + n as u64 > c.sent
                                || !pattern.matches(i as u64, c.received, &buf[..n])
                            {
                                return Err(format!(
                                    "flooder {i}: echoed bytes differ near offset {}",
                                    c.received
                                ));
                            }
                            c.received += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("flooder {i}: read: {e}")),
                    }
                }
            }
            // Write after every event: reading made room in the in-flight allowance.
            while draining.is_none() && c.sent - c.received < FLOOD_IN_FLIGHT {
                let chunk = pattern.slice(i as u64, c.sent, m.flood_size);
                match c.stream.write(chunk) {
                    Ok(n) => c.sent += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("flooder {i}: write: {e}")),
                }
            }
        }
    }
    Ok(Flooded {
        measured: conns
            .iter()
            .map(|c| c.at_end.unwrap_or(c.received) - c.at_start.unwrap_or(0))
            .collect(),
        verified: conns.iter().map(|c| c.received).sum(),
    })
}

struct Smalls {
    latency: Histogram<u64>,
    lateness: Histogram<u64>,
    realtime: bool,
    verified: u64,
}

struct Small {
    stream: TcpStream,
    id: u64,
    /// The intended send time of the next request.
    next: Instant,
    sent: u64,
    received: u64,
    /// Intended send times of the requests whose echo is not complete.
    pending: VecDeque<Instant>,
    /// Bytes written but not yet taken by the socket (rare: 64 bytes fit).
    backlog: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn small(m: &Mixed, start: Instant, window: (Instant, Instant)) -> Result<Smalls, String> {
    let realtime = set_realtime();
    let pattern = Pattern::default();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(256);
    let period = Duration::from_secs_f64(1.0 / m.rate);
    let timer = Timer::new()?;
    let timer_token = Token(usize::MAX - 1);
    poll.registry()
        .register(
            &mut SourceFd(&timer.file.as_raw_fd()),
            timer_token,
            Interest::READABLE,
        )
        .map_err(|e| e.to_string())?;
    let mut clients = (0..m.smalls)
        .map(|i| {
            // Spread evenly over one period, so sends do not come in bursts.
            let phase = period.mul_f64(i as f64 / m.smalls as f64);
            Ok(Small {
                stream: connect(&poll, m.addr, Token(i), None)?,
                id: SMALL_ID + i as u64,
                next: start + phase,
                sent: 0,
                received: 0,
                pending: VecDeque::new(),
                backlog: 0,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut latency = histogram();
    let mut lateness = histogram();
    let mut buf = [0u8; 4096];
    let drain_deadline = window.1 + DRAIN;
    loop {
        let now = Instant::now();
        // Send every request that is due, each stamped with when it was meant to go.
        for c in &mut clients {
            while c.next <= now && c.next < window.1 {
                c.pending.push_back(c.next);
                if c.next >= window.0 {
                    lateness.record(micros(now - c.next)).ok();
                }
                c.backlog += SMALL_SIZE as u64;
                c.next += period;
            }
            write_backlog(c, &pattern)?;
        }
        let sending = clients.iter().any(|c| c.next < window.1);
        if !sending && clients.iter().all(|c| c.pending.is_empty()) {
            break;
        }
        if now > drain_deadline {
            let missing: usize = clients.iter().map(|c| c.pending.len()).sum();
            return Err(format!(
                "small clients: {missing} requests were never answered"
            ));
        }
        let wake = clients
            .iter()
            .map(|c| c.next)
            .filter(|t| *t < window.1)
            .min()
            .unwrap_or(drain_deadline);
        timer.set(wake.saturating_duration_since(Instant::now()))?;
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
        for event in events.iter() {
            if event.token() == timer_token {
                timer.clear();
                continue;
            }
            let i = event.token().0;
            let c = &mut clients[i];
            if event.is_writable() {
                write_backlog(c, &pattern)?;
            }
            if !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            loop {
                let n = match c.stream.read(&mut buf) {
                    Ok(0) => return Err(format!("small client {i} closed by the server")),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("small client {i}: read: {e}")),
                };
                if c.received + n as u64 > c.sent || !pattern.matches(c.id, c.received, &buf[..n]) {
                    return Err(format!(
                        "small client {i}: echoed bytes differ near offset {}",
                        c.received
                    ));
                }
                let before = c.received / SMALL_SIZE as u64;
                c.received += n as u64;
                let after = c.received / SMALL_SIZE as u64;
                let now = Instant::now();
                for _ in before..after {
                    let intended = c.pending.pop_front().expect("a request in flight");
                    if intended >= window.0 && intended < window.1 {
                        latency.record(micros(now - intended)).ok();
                    }
                }
            }
        }
    }
    Ok(Smalls {
        latency,
        lateness,
        realtime,
        verified: clients.iter().map(|c| c.received).sum(),
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn write_backlog(c: &mut Small, pattern: &Pattern) -> Result<(), String> {
    while c.backlog > 0 {
        let chunk = pattern.slice(c.id, c.sent, c.backlog as usize);
        match c.stream.write(chunk) {
            Ok(n) => {
                c.sent += n as u64;
                c.backlog -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("small client: write: {e}")),
        }
    }
    Ok(())
}

/// Runs the calling thread at real-time priority (SCHED_FIFO), if the system allows it.
#[allow(unsafe_code)]
fn set_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the calling
    // thread, and the call changes nothing but its scheduling.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// A one-shot timerfd: wakes the poll at a set time, to the microsecond (a poll timeout is
/// rounded to milliseconds).
struct Timer {
    file: std::fs::File,
}

impl Timer {
    #[allow(unsafe_code)]
    fn new() -> Result<Timer, String> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!("timerfd_create: {}", io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer {
            file: std::fs::File::from(fd),
        })
    }

    /// Fires once, `after` from now (at once for zero).
    #[allow(unsafe_code)]
    fn set(&self, after: Duration) -> Result<(), String> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: the descriptor is a timerfd this struct owns; `spec` is a valid itimerspec
        // that outlives the call, and the old value is not asked for (null).
        let rc =
            unsafe { libc::timerfd_settime(self.file.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(format!("timerfd_settime: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Reads the expiration count, so the next expiration raises a new edge.
    fn clear(&self) {
        let mut count = [0u8; 8];
        // A would-block read is fine: nothing expired since the last one.
        let _ = (&self.file).read(&mut count);
    }
}
