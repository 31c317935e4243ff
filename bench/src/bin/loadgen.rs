//! The load generator: one thread, one mio poll, many connections.
//!
//! ```text
//! loadgen --addr ADDR|unix:PATH [--mode echo|hold|churn|mixed] [--connections C] [--size S] [--depth D]
//!         [--seconds T] [--warmup W] [--count N] [--workers K] [--flooders K] [--smalls M]
//!         [--rate R] [--proxy v1|v2]
//! ```
//!
//! - `echo`: C connections each keep D messages of S bytes in flight; every echoed byte is
//!   checked against what was sent (content and order). Runs W seconds of warm-up, then T
//!   seconds (or N round trips) measured, then stops sending and waits for every byte sent.
//! - `hold`: opens C connections, holds them T seconds idle, then does one round trip on each.
//! - `churn`: K workers each connect, do one 64-byte round trip, close with a reset (no
//!   TIME_WAIT to exhaust the ephemeral ports), again, for T seconds; with `--proxy`, each
//!   connection's first write carries a PROXY protocol header before its 64 bytes.
//! - `mixed`: `--flooders K` connections push S-byte writes as fast as the server takes them
//!   while `--smalls M` clients send 64-byte requests at `--rate R` per second each, open
//!   loop; reports the small clients' latency from the intended send time and how evenly
//!   the flood was shared (see `dualstack_bench::mixed`).
//!
//! `unix:PATH` (echo mode only) connects over a Unix-domain socket.
//!
//! Prints one flat JSON object on stdout. Phases are announced on stderr (`measuring`,
//! `tick` every 250 ms while measuring, `holding`, `done`), so a runner can sample the
//! server exactly over the measured part and over each interval of it.
//! Exits 1 on any mismatch, lost byte or connection error: a benchmark of a wrong server
//! is worthless.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dualstack_bench::{percentile, Json, Pattern, Stream, Target};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Args {
    addr: Target,
    mode: String,
    connections: usize,
    size: usize,
    depth: usize,
    seconds: f64,
    warmup: f64,
    count: Option<u64>,
    workers: usize,
    flooders: usize,
    smalls: usize,
    rate: f64,
    /// `churn` sends a PROXY protocol header of this version first.
    proxy: Option<u8>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: Target::Ip("127.0.0.1:7000".parse().unwrap()),
        mode: "echo".into(),
        connections: 1,
        size: 64,
        depth: 1,
        seconds: 5.0,
        warmup: 1.0,
        count: None,
        workers: 8,
        flooders: 4,
        smalls: 50,
        rate: 200.0,
        proxy: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--addr" => a.addr = value.parse::<Target>().map_err(|e: String| bad(&e))?,
            "--mode" => a.mode = value,
            "--connections" => a.connections = value.parse().map_err(|_| bad("a number"))?,
            "--size" => a.size = value.parse().map_err(|_| bad("a number"))?,
            "--depth" => a.depth = value.parse().map_err(|_| bad("a number"))?,
            "--seconds" => a.seconds = value.parse().map_err(|_| bad("seconds"))?,
            "--warmup" => a.warmup = value.parse().map_err(|_| bad("seconds"))?,
            "--count" => a.count = Some(value.parse().map_err(|_| bad("a number"))?),
            "--workers" => a.workers = value.parse().map_err(|_| bad("a number"))?,
            "--flooders" => a.flooders = value.parse().map_err(|_| bad("a number"))?,
            "--smalls" => a.smalls = value.parse().map_err(|_| bad("a number"))?,
            "--proxy" => {
                a.proxy = Some(match value.as_str() {
                    "v1" => 1,
                    "v2" => 2,
                    _ => return Err(bad("v1 or v2")),
                })
            }
            "--rate" => {
                a.rate = value
                    .parse()
                    .ok()
                    .filter(|r: &f64| (1.0..=100_000.0).contains(r))
                    .ok_or_else(|| bad("requests per second, 1 to 100000"))?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.connections == 0 || a.size == 0 || a.depth == 0 || a.workers == 0 {
        return Err("connections, size, depth and workers must be above 0".into());
    }
    Ok(a)
}

impl Args {
    /// The TCP address, for the modes that only speak TCP.
    fn tcp(&self) -> Result<SocketAddr, String> {
        match &self.addr {
            Target::Ip(addr) => Ok(*addr),
            other => Err(format!(
                "--mode {} needs a TCP address, not {other}",
                self.mode
            )),
        }
    }
}

fn main() {
    let result = args().and_then(|a| match a.mode.as_str() {
        "echo" => echo(&a),
        "hold" => hold(&a),
        "churn" => churn(&a),
        "mixed" => dualstack_bench::mixed::run(&dualstack_bench::mixed::Mixed {
            addr: a.tcp()?,
            flooders: a.flooders,
            smalls: a.smalls,
            rate: a.rate,
            flood_size: a.size.max(1),
            warmup: Duration::from_secs_f64(a.warmup),
            seconds: Duration::from_secs_f64(a.seconds),
        }),
        other => Err(format!("unknown mode {other:?}")),
    });
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

/// One echo client connection.
struct Client {
    stream: Stream,
    id: u64,
    /// Bytes written so far (stream offset).
    sent: u64,
    /// Bytes that must be written: messages issued × size.
    target: u64,
    /// Bytes received and verified.
    received: u64,
    /// Send times of the messages whose echo is not complete yet.
    started: VecDeque<Instant>,
}

impl Client {
    fn flush(&mut self, pattern: &Pattern) -> io::Result<()> {
        while self.sent < self.target {
            let chunk = pattern.slice(self.id, self.sent, (self.target - self.sent) as usize);
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn connect_all(
    poll: &Poll,
    addr: &Target,
    n: usize,
    interest: Interest,
) -> Result<Vec<Stream>, String> {
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = dualstack_bench::connect(addr, None)
            .map_err(|e| format!("connect {i} to {addr}: {e}"))?;
        poll.registry()
            .register(&mut s, Token(i), interest)
            .map_err(|e| e.to_string())?;
        streams.push(s);
    }
    Ok(streams)
}

fn echo(a: &Args) -> Result<String, String> {
    let pattern = Pattern::default();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let streams = connect_all(
        &poll,
        &a.addr,
        a.connections,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let size = a.size as u64;
    let start = Instant::now();
    let mut clients: Vec<Client> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| Client {
            stream,
            id: i as u64,
            sent: 0,
            target: size * a.depth as u64,
            received: 0,
            started: std::iter::repeat_n(start, a.depth).collect(),
        })
        .collect();
    let warmup_end = if a.count.is_some() {
        start
    } else {
        start + Duration::from_secs_f64(a.warmup)
    };
    let mut measuring = false;
    let mut ticker = Ticker::default();
    let mut measure_start = start;
    let mut measure_end = None;
    let mut stopping = false;
    let mut round_trips = 0u64;
    let mut latencies: Vec<u32> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut drain_deadline = None;
    loop {
        let now = Instant::now();
        if !measuring && now >= warmup_end {
            measuring = true;
            measure_start = now;
            ticker.start(now);
        }
        if measuring && !stopping {
            ticker.tick(now, round_trips);
        }
        let done_measuring = match a.count {
            Some(count) => round_trips >= count,
            None => measuring && now >= measure_start + Duration::from_secs_f64(a.seconds),
        };
        if done_measuring && !stopping {
            stopping = true;
            measure_end = Some(now);
            eprintln!("done");
            drain_deadline = Some(now + Duration::from_secs(10));
        }
        if stopping && clients.iter().all(|c| c.received == c.target) {
            break;
        }
        if drain_deadline.is_some_and(|d| now > d) {
            let missing: u64 = clients.iter().map(|c| c.target - c.received).sum();
            return Err(format!("{missing} bytes sent were never echoed back"));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for event in events.iter() {
            let c = &mut clients[event.token().0];
            if event.is_writable() {
                c.flush(&pattern)
                    .map_err(|e| format!("connection {}: write: {e}", c.id))?;
            }
            if !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            loop {
                let n = match c.stream.read(&mut buf) {
                    Ok(0) => {
                        return Err(format!(
                            "connection {} closed by the server after {} bytes",
                            c.id, c.received
                        ))
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("connection {}: read: {e}", c.id)),
                };
                if c.received + n as u64 > c.sent {
                    return Err(format!("connection {}: got more bytes than it sent", c.id));
                }
                if !pattern.matches(c.id, c.received, &buf[..n]) {
                    return Err(format!(
                        "connection {}: echoed bytes differ near offset {}",
                        c.id, c.received
                    ));
                }
                let before = c.received / size;
                c.received += n as u64;
                let after = c.received / size;
                let now = Instant::now();
                for _ in before..after {
                    let sent_at = c.started.pop_front().expect("a message in flight");
                    if measuring && !stopping {
                        round_trips += 1;
                        latencies.push(
                            now.duration_since(sent_at)
                                .as_micros()
                                .min(u128::from(u32::MAX)) as u32,
                        );
                    }
                    if !stopping {
                        c.target += size;
                        c.started.push_back(now);
                    }
                }
                c.flush(&pattern)
                    .map_err(|e| format!("connection {}: write: {e}", c.id))?;
                if n < buf.len() && SHORT_READ_DRAINS {
                    // The receive queue was empty when the read returned (Linux TCP): a
                    // further read would only say WouldBlock, one system call per message
                    // the load generator cannot spare (the server does the same).
                    break;
                }
            }
        }
    }
    let secs = measure_end
        .unwrap_or_else(Instant::now)
        .duration_since(measure_start)
        .as_secs_f64()
        .max(1e-9);
    latencies.sort_unstable();
    let verified: u64 = clients.iter().map(|c| c.received).sum();
    Ok(Json::default()
        .text("mode", "echo")
        .num("connections", a.connections as f64)
        .num("size", a.size as f64)
        .num("depth", a.depth as f64)
        .num("seconds", secs)
        .num("round_trips", round_trips as f64)
        .num("rt_per_s", round_trips as f64 / secs)
        .num("mb_per_s", round_trips as f64 * a.size as f64 / secs / 1e6)
        .num("p50_us", percentile(&latencies, 50.0))
        .num("p99_us", percentile(&latencies, 99.0))
        .num("p999_us", percentile(&latencies, 99.9))
        .num("bytes_verified", verified as f64)
        .finish())
}

/// Whether a short read proves the socket drained (Linux TCP; see the reactor's docs).
const SHORT_READ_DRAINS: bool = cfg!(target_os = "linux");

/// Announces the measured window on stderr: `measuring` at its start, then every
/// [`TICK`] `tick MICROSECONDS COUNT` (time into the window, work done so far), so that a
/// runner can sample the server at the same moments and take medians over intervals: a
/// host that takes the CPU away for part of a window then spoils an interval, not a run.
#[derive(Default)]
struct Ticker {
    started: Option<Instant>,
    next: Option<Instant>,
}

/// The interval between `tick` lines.
const TICK: Duration = Duration::from_millis(250);

impl Ticker {
    fn start(&mut self, now: Instant) {
        self.started = Some(now);
        self.next = Some(now + TICK);
        eprintln!("measuring");
    }

    fn tick(&mut self, now: Instant, count: u64) {
        let (Some(started), Some(next)) = (self.started, self.next) else {
            return;
        };
        if now >= next {
            eprintln!("tick {} {count}", now.duration_since(started).as_micros());
            self.next = Some(next + TICK);
        }
    }
}

fn hold(a: &Args) -> Result<String, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut streams = Vec::with_capacity(a.connections);
    // Connect in batches, waiting for each batch, so the listen backlog never overflows.
    for batch in (0..a.connections).collect::<Vec<_>>().chunks(256) {
        let mut pending = batch.len();
        for &i in batch {
            let mut s = TcpStream::connect(a.tcp()?).map_err(|e| format!("connect {i}: {e}"))?;
            poll.registry()
                .register(&mut s, Token(i), Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            streams.push(s);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pending > 0 {
            if Instant::now() > deadline {
                return Err(format!("{pending} connections did not complete"));
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            for e in events.iter() {
                let s = &streams[e.token().0];
                if let Some(err) = s.take_error().map_err(|e| e.to_string())? {
                    return Err(format!("connection {}: {err}", e.token().0));
                }
                if s.peer_addr().is_ok() {
                    pending -= 1;
                    poll.registry()
                        .reregister(&mut streams[e.token().0], e.token(), Interest::READABLE)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    eprintln!("holding {}", streams.len());
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    eprintln!("done");
    // Every held connection still works: one byte there and back.
    for (i, s) in streams.iter_mut().enumerate() {
        s.write_all(&[i as u8])
            .map_err(|e| format!("connection {i}: {e}"))?;
    }
    let mut verified = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = vec![false; streams.len()];
    while verified < streams.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "only {verified} of {} held connections echoed",
                streams.len()
            ));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for e in events.iter() {
            let i = e.token().0;
            let mut b = [0u8; 1];
            match streams[i].read(&mut b) {
                Ok(1) if b[0] == i as u8 && !got[i] => {
                    got[i] = true;
                    verified += 1;
                }
                Ok(_) => return Err(format!("connection {i}: wrong echo")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("connection {i}: {e}")),
            }
        }
    }
    Ok(Json::default()
        .text("mode", "hold")
        .num("connections", streams.len() as f64)
        .num("verified", verified as f64)
        .finish())
}

/// One churn worker's connection: connecting, or waiting for its echo.
enum Step {
    Connecting,
    Reading(usize),
}

fn churn(a: &Args) -> Result<String, String> {
    let pattern = Pattern::default();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let message = pattern.slice(1, 0, 64).to_vec();
    let open = |poll: &Poll, w: usize| -> Result<(TcpStream, Step, Instant), String> {
        let mut s = TcpStream::connect(a.tcp()?).map_err(|e| format!("connect: {e}"))?;
        poll.registry()
            .register(&mut s, Token(w), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        Ok((s, Step::Connecting, Instant::now()))
    };
    let mut workers = (0..a.workers)
        .map(|w| open(&poll, w))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let end = measure_from + Duration::from_secs_f64(a.seconds);
    let mut measuring = false;
    let mut ticker = Ticker::default();
    let mut done = 0u64;
    let mut latencies = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= measure_from {
            measuring = true;
            ticker.start(now);
        }
        if measuring {
            ticker.tick(now, done);
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for e in events.iter() {
            let w = e.token().0;
            let (stream, step, began) = &mut workers[w];
            if let Step::Connecting = step {
                if !e.is_writable() || stream.peer_addr().is_err() {
                    continue;
                }
                if let Some(err) = stream.take_error().map_err(|e| e.to_string())? {
                    return Err(format!("churn connect: {err}"));
                }
                // A fresh socket always takes a header and 64 bytes at once.
                let first = match a.proxy {
                    Some(version) => {
                        let me = stream.local_addr().map_err(|e| e.to_string())?;
                        let to = stream.peer_addr().map_err(|e| e.to_string())?;
                        let header = match version {
                            1 => dualstack::ProxyHeader::v1(me, to),
                            _ => dualstack::ProxyHeader::v2(me, to),
                        };
                        [header.to_bytes(), message.clone()].concat()
                    }
                    None => message.clone(),
                };
                match stream.write(&first) {
                    Ok(n) if n == first.len() => *step = Step::Reading(0),
                    Ok(_) => return Err("the first write was cut short".into()),
                    Err(e) => return Err(format!("churn write: {e}")),
                }
            }
            if let Step::Reading(got) = step {
                loop {
                    match stream.read(&mut buf[*got..]) {
                        Ok(0) if *got < 64 => {
                            return Err("the server closed a churn connection".into())
                        }
                        Ok(n) => *got += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(format!("churn read: {e}")),
                    }
                    if *got == 64 {
                        break;
                    }
                }
                if *got == 64 {
                    if buf[..] != message[..] {
                        return Err("churn echo differs".into());
                    }
                    if measuring {
                        done += 1;
                        latencies
                            .push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    // Abort rather than close: a graceful close leaves the port in
                    // TIME_WAIT here, and at this rate the kernel's search for a free
                    // ephemeral port (28k of them) stalls connect() every second and
                    // sets the pace instead of the server. The server reads a reset
                    // after the echo and closes.
                    let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
                    workers[w] = open(&poll, w)?;
                }
            }
        }
    }
    eprintln!("done");
    latencies.sort_unstable();
    let secs = a.seconds.max(1e-9);
    Ok(Json::default()
        .text("mode", "churn")
        .num("workers", a.workers as f64)
        .num("connections", done as f64)
        .num("conns_per_s", done as f64 / secs)
        .num("p50_us", percentile(&latencies, 50.0))
        .num("p99_us", percentile(&latencies, 99.0))
        .num("p999_us", percentile(&latencies, 99.9))
        .finish())
}
