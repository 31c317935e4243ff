//! The benchmark runner: every scenario against the three servers, back to back, in one go.
//!
//! ```text
//! cargo run --release -p dualstack-bench --bin runner -- [--runs N] [--seconds S]
//!     [--out BENCHMARKS.md] [--svg bench/ratios.svg] [--latency-svg bench/latency.svg]
//!     [--no-syscalls] [--quick] [--only SCENARIO[,SCENARIO]]
//! ```
//!
//! Builds the servers and the load generator (release), then for each run, scenario and
//! family starts each server pinned to CPU 0 (the servers' order balanced over runs: see
//! `dualstack_bench::order`; six runs are a whole period) and the load generator pinned to CPU 1, samples the server's CPU time (scheduler
//! nanoseconds from /proc) at every 250 ms tick the load generator announces and its RSS, and
//! kills the server by the PID it started. A run's figures are medians over those intervals;
//! ratios to the hand-written mio server are taken within each run, then the median over runs
//! is reported with its range, and a geometric mean over every row and run. System calls in
//! `many` are counted in runs of their own by `perf stat` over exactly the measured window.
//! The fairness scenario (`mixed`) runs K = 1, 4 and 8 flooders beside 50 small open-loop
//! clients, over IPv4, and reports the small clients' latency percentiles and the flood's
//! share per connection (and draws `bench/latency.svg`).
//! `--quick` runs one short scenario and writes nothing: the CI smoke test. `--only` runs the
//! named scenarios (for profiling one of them) and needs `--out` and `--svg` elsewhere, so a
//! partial run never replaces the full report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dualstack_bench::order::{order, period};
use dualstack_bench::{cpu_ticks, cpu_time, median, parse_numbers, rss, RssSampler};

const SERVERS: [&str; 3] = ["mio", "dualstack", "tokio"];

struct Scenario {
    name: &'static str,
    args: &'static [&'static str],
    /// The throughput figure the scenario is judged by.
    metric: &'static str,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "pingpong",
        args: &["--connections", "1", "--size", "64", "--depth", "1"],
        metric: "rt_per_s",
    },
    Scenario {
        name: "many",
        args: &["--connections", "100", "--size", "64", "--depth", "1"],
        metric: "rt_per_s",
    },
    Scenario {
        name: "pipelined",
        args: &["--connections", "50", "--size", "64", "--depth", "16"],
        metric: "rt_per_s",
    },
    Scenario {
        name: "bulk",
        args: &["--connections", "4", "--size", "65536", "--depth", "2"],
        metric: "mb_per_s",
    },
    Scenario {
        name: "churn",
        args: &["--mode", "churn", "--workers", "8"],
        metric: "conns_per_s",
    },
    Scenario {
        name: "idle",
        args: &["--mode", "hold", "--connections", "10000"],
        metric: "bytes_per_conn",
    },
];

/// The scenarios also run over Unix-domain sockets (mio and dualstack).
const UNIX_SCENARIOS: [&str; 2] = ["many", "pipelined"];

/// The fairness scenario: K flooders and 50 small clients at 200 requests/s each, run for
/// each K (see `dualstack_bench::mixed`).
const MIXED: Scenario = Scenario {
    name: "mixed",
    args: &[
        "--mode", "mixed", "--smalls", "50", "--rate", "200", "--size", "65536",
    ],
    metric: "flood_mb_per_s",
};

/// The flooder counts of the fairness table.
const FLOODERS: [usize; 3] = [1, 4, 8];

/// The percentiles the latency chart plots, as the loadgen's keys and their labels.
const PERCENTILES: [(&str, &str); 6] = [
    ("small_p50_us", "50"),
    ("small_p90_us", "90"),
    ("small_p99_us", "99"),
    ("small_p999_us", "99.9"),
    ("small_p9999_us", "99.99"),
    ("small_max_us", "max"),
];

struct Opts {
    runs: usize,
    seconds: f64,
    out: PathBuf,
    svg: PathBuf,
    latency_svg: PathBuf,
    syscalls: bool,
    quick: bool,
    only: Vec<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        runs: 6,
        seconds: 3.0,
        out: "BENCHMARKS.md".into(),
        svg: "bench/ratios.svg".into(),
        latency_svg: "bench/latency.svg".into(),
        syscalls: true,
        quick: false,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--runs" => {
                o.runs = value()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("--runs: a whole number above 0"))
            }
            "--seconds" => {
                o.seconds = value()
                    .parse()
                    .unwrap_or_else(|_| fail("--seconds: a number"))
            }
            "--out" => o.out = value().into(),
            "--svg" => o.svg = value().into(),
            "--latency-svg" => o.latency_svg = value().into(),
            "--no-syscalls" => o.syscalls = false,
            "--quick" => o.quick = true,
            "--only" => o.only = value().split(',').map(str::to_owned).collect(),
            other => fail(&format!("unknown option {other}")),
        }
    }
    let known: Vec<&str> = SCENARIOS
        .iter()
        .map(|s| s.name)
        .chain([MIXED.name, "churn-proxy", "pieces", "kv"])
        .collect();
    if let Some(bad) = o.only.iter().find(|n| !known.contains(&n.as_str())) {
        fail(&format!(
            "--only {bad:?}: no such scenario (there are {})",
            known.join(", ")
        ));
    }
    // A partial run must not replace the full report by accident.
    if !o.only.is_empty()
        && (o.out == Path::new("BENCHMARKS.md")
            || o.svg == Path::new("bench/ratios.svg")
            || o.latency_svg == Path::new("bench/latency.svg"))
    {
        fail("--only writes a partial report: give --out, --svg and --latency-svg somewhere else");
    }
    o
}

fn fail(message: &str) -> ! {
    eprintln!("runner: {message}");
    std::process::exit(2)
}

/// The release binaries, built if needed.
struct Bins {
    release: PathBuf,
}

impl Bins {
    fn build() -> Bins {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        for args in [
            &["build", "--release", "-p", "dualstack-bench", "--bins"][..],
            &["build", "--release", "-p", "dualstack", "--example", "echo"][..],
            &["build", "--release", "-p", "dualstack", "--example", "kv"][..],
        ] {
            let ok = Command::new(&cargo)
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                fail(&format!("cargo {} failed", args.join(" ")));
            }
        }
        let exe = std::env::current_exe().expect("the runner's path");
        let target = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "target"))
            .unwrap_or_else(|| Path::new("target"))
            .to_path_buf();
        Bins {
            release: target.join("release"),
        }
    }

    fn server(&self, name: &str) -> PathBuf {
        match name {
            "mio" => self.release.join("mio_echo"),
            "tokio" => self.release.join("tokio_echo"),
            "pieces" => self.release.join("pieces"),
            _ => self.release.join("examples").join("echo"),
        }
    }

    fn loadgen(&self) -> PathBuf {
        self.release.join("loadgen")
    }
}

/// A server pinned to CPU 0, killed (by the PID we started) when dropped.
struct Server {
    child: Child,
    port: u16,
    /// The Unix-domain socket it also listens on (mio and dualstack; tokio's reference
    /// server speaks TCP only).
    unix: Option<PathBuf>,
}

/// Whether `server` takes part in the Unix-domain rows.
fn serves_unix(server: &str) -> bool {
    server != "tokio" && server != "pieces"
}

/// The requests redis-benchmark sends per test of the key-value rows, and its clients (as
/// the issue that set the targets says: `-n 200000 -c 50`).
const KV_REQUESTS: u32 = 200_000;
const KV_CLIENTS: u32 = 50;
/// The pipeline depths of the key-value rows.
const KV_PIPELINES: [u32; 2] = [1, 16];

/// Whether the key-value rows can run: redis-server and redis-benchmark are here.
fn kv_tools() -> bool {
    ["redis-server", "redis-benchmark"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// One pass of the key-value rows at `pipeline`, the servers in the order `run` gives:
/// (server, its samples by test).
fn kv_pass(
    bins: &Bins,
    run: usize,
    pipeline: u32,
    requests: u32,
) -> Vec<(
    &'static str,
    BTreeMap<&'static str, dualstack_bench::kv::KvSample>,
)> {
    use dualstack_bench::kv::{benchmark, KvServer, SERVERS};
    in_order(&SERVERS, run)
        .map(|name| {
            let server = KvServer::start(&bins.release, name)
                .unwrap_or_else(|e| fail(&format!("start {name}: {e}")));
            let samples = benchmark(&server, requests, KV_CLIENTS, pipeline)
                .unwrap_or_else(|e| fail(&format!("{name} -P {pipeline}: {e}")));
            (name, samples)
        })
        .collect()
}

impl Server {
    fn start(bins: &Bins, name: &str) -> Server {
        Server::start_with(bins, name, &[])
    }

    /// As [`start`](Server::start), with `options` before the specs.
    fn start_with(bins: &Bins, name: &str, options: &[&str]) -> Server {
        let unix = serves_unix(name).then(|| {
            std::env::temp_dir().join(format!(
                "dualstack-bench-{}-{name}.sock",
                std::process::id()
            ))
        });
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg("0")
            .arg(bins.server(name))
            .args(options)
            .arg(":0")
            .args(unix.iter().map(|p| format!("unix:{}", p.display())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("start {name}: {e}")));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the server's first line");
        let port = dualstack_support::parse_listening_line(&line)
            .map(|(addr, _)| addr.port())
            .unwrap_or_else(|| fail(&format!("{name} printed {line:?}")));
        Server { child, port, unix }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed, it could not remove its socket file.
        if let Some(path) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One measurement's figures.
#[derive(Default, Clone)]
struct Sample {
    numbers: BTreeMap<String, f64>,
}

impl Sample {
    fn get(&self, key: &str) -> f64 {
        self.numbers.get(key).copied().unwrap_or(f64::NAN)
    }
}

/// Runs the load generator against `server`, sampling the server over the measured window.
fn measure(
    bins: &Bins,
    server: &Server,
    family: &str,
    scenario: &Scenario,
    seconds: f64,
    extra: &[&str],
    count_syscalls: bool,
) -> Sample {
    let addr = match family {
        "v4" => format!("127.0.0.1:{}", server.port),
        "v6" => format!("[::1]:{}", server.port),
        _ => format!(
            "unix:{}",
            server
                .unix
                .as_ref()
                .expect("a server with a Unix socket")
                .display()
        ),
    };
    let pid = server.pid();
    let base_rss = rss(pid).unwrap_or(0);
    let sampler = RssSampler::start(pid);
    let mut counter = if count_syscalls {
        dualstack_bench::perf::SyscallCounter::start(pid)
    } else {
        None
    };
    let mut enabled = false;
    let secs = seconds.to_string();
    let mut child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bins.loadgen())
        .args(["--addr", &addr, "--seconds", &secs, "--warmup", "1"])
        .args(scenario.args)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("start loadgen: {e}")));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let loadgen_pid = child.id();
    let (mut cpu_start, mut cpu_end, mut held_rss) = (None, None, None);
    // (wall clock, load generator CPU) at the edges of the measured window, for how busy
    // each side was: a row is only a measure of the server if the server was the busy one.
    let (mut lg_start, mut lg_end) = (None, None);
    let mut counts = None;
    // (microseconds into the window, work done, server CPU time) at each tick.
    let mut ticks: Vec<(f64, f64, Duration)> = Vec::new();
    let mut messages = Vec::new();
    for line in stderr.lines().map_while(Result::ok) {
        if line == "measuring" {
            lg_start = cpu_ticks(loadgen_pid).map(|c| (Instant::now(), c));
            cpu_start = cpu_time(pid);
            ticks.extend(cpu_start.map(|c| (0.0, 0.0, c)));
            if let Some(c) = counter.as_mut() {
                enabled = c.command("enable");
            }
        } else if line == "done" {
            lg_end = cpu_ticks(loadgen_pid).map(|c| (Instant::now(), c));
            cpu_end = cpu_time(pid);
            counts = counter.take().map(|c| c.finish(enabled));
        } else if let Some(tick) = line.strip_prefix("tick ") {
            let mut f = tick.split(' ').filter_map(|x| x.parse::<f64>().ok());
            if let (Some(us), Some(n), Some(cpu)) = (f.next(), f.next(), cpu_time(pid)) {
                ticks.push((us, n, cpu));
            }
        } else if line.starts_with("holding") {
            std::thread::sleep(Duration::from_millis(500));
            held_rss = rss(pid);
        } else {
            messages.push(line);
        }
    }
    let out = child.wait_with_output().expect("loadgen output");
    let peak = sampler.stop();
    if !out.status.success() {
        fail(&format!(
            "loadgen failed against {addr} ({}): {}",
            scenario.name,
            messages.join("; ")
        ));
    }
    let mut sample = Sample {
        numbers: parse_numbers(&String::from_utf8_lossy(&out.stdout)),
    };
    sample.numbers.insert("rss_peak".into(), peak as f64);
    if let (Some((t0, l0)), Some((t1, l1)), Some(a), Some(b)) =
        (lg_start, lg_end, cpu_start, cpu_end)
    {
        let wall = (t1 - t0).as_secs_f64().max(1e-9);
        sample.numbers.insert(
            "server_busy".into(),
            b.saturating_sub(a).as_secs_f64() / wall,
        );
        sample.numbers.insert(
            "loadgen_busy".into(),
            l1.saturating_sub(l0).as_secs_f64() / wall,
        );
    }
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        let work = sample.get("round_trips").max(sample.get("connections"));
        if work > 0.0 {
            sample.numbers.insert(
                "cpu_ns_per_op".into(),
                b.saturating_sub(a).as_nanos() as f64 / work,
            );
        }
    }
    // Medians over the 250 ms intervals: the figures the report uses.
    // (The whole-window figures above remain only where there are too few intervals.)
    if let Some((rate, cpu)) = interval_medians(&ticks) {
        let metric = scenario.metric;
        let per_unit = if metric == "mb_per_s" {
            sample.get("size") / 1e6
        } else {
            1.0
        };
        sample.numbers.insert(metric.into(), rate * per_unit);
        sample.numbers.insert("cpu_ns_per_op".into(), cpu);
    }
    if let Some(counts) = counts {
        let rts = sample.get("round_trips");
        for (event, n) in counts {
            sample.numbers.insert(format!("sys:{event}"), n / rts);
        }
    }
    if let Some(held) = held_rss {
        let n = sample.get("connections");
        sample.numbers.insert(
            "bytes_per_conn".into(),
            (held.saturating_sub(base_rss)) as f64 / n,
        );
    }
    sample
}

/// From ticks `(microseconds, work done, server CPU time)`: the median over intervals of
/// the work rate (per second) and of the server's CPU nanoseconds per unit of work; `None`
/// with fewer than three intervals that did work.
fn interval_medians(ticks: &[(f64, f64, Duration)]) -> Option<(f64, f64)> {
    let intervals: Vec<(f64, f64)> = ticks
        .windows(2)
        .filter(|w| w[1].1 > w[0].1 && w[1].0 > w[0].0)
        .map(|w| {
            let work = w[1].1 - w[0].1;
            let rate = work / ((w[1].0 - w[0].0) / 1e6);
            let cpu = w[1].2.saturating_sub(w[0].2).as_nanos() as f64 / work;
            (rate, cpu)
        })
        .collect();
    (intervals.len() >= 3).then(|| {
        (
            median(intervals.iter().map(|i| i.0).collect()),
            median(intervals.iter().map(|i| i.1).collect()),
        )
    })
}

/// The servers in the order run `run` (from 1) measures them: a Williams design, so over
/// a period each goes first equally often and follows each other equally often, and
/// neither a drift in the machine's speed nor what one server leaves behind for the next
/// always favours the same one (rotated by one, each always had the same predecessor).
fn servers_in_order(run: usize) -> impl Iterator<Item = &'static str> {
    in_order(&SERVERS, run)
}

/// `servers` in the order run `run` (from 1) measures them (see [`servers_in_order`]).
fn in_order(servers: &'static [&'static str], run: usize) -> impl Iterator<Item = &'static str> {
    order(servers.len(), run.saturating_sub(1))
        .into_iter()
        .map(move |i| servers[i])
}

/// Geometric mean (NaN for none): the average of ratios that treats 0.5 and 2 alike.
fn geomean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x.ln(), n + 1));
    if n == 0 {
        f64::NAN
    } else {
        (sum / n as f64).exp()
    }
}

/// Raises the descriptor limit toward 65536 (the `idle` scenario holds 10,000 connections
/// in the load generator and in the server).
fn raise_fd_limit() {
    match dualstack_support::raise_fd_limit(65536) {
        Ok(n) if n >= 10_100 => {}
        Ok(n) => eprintln!(
            "runner: descriptor limit {n} (the idle scenario needs about 10,100 per process)"
        ),
        Err(e) => eprintln!("runner: cannot raise the descriptor limit: {e}"),
    }
}

fn main() {
    let o = opts();
    raise_fd_limit();
    let bins = Bins::build();
    if o.quick {
        // The CI smoke test: correctness of the whole chain, no numbers kept.
        for name in SERVERS {
            let server = Server::start(&bins, name);
            let families: &[&str] = if serves_unix(name) {
                &["v4", "v6", "unix"]
            } else {
                &["v4", "v6"]
            };
            for &family in families {
                let s = measure(&bins, &server, family, &SCENARIOS[1], 1.0, &[], false);
                println!(
                    "{name} {family} many: {:.0} round trips/s, {} bytes verified",
                    s.get("rt_per_s"),
                    s.get("bytes_verified")
                );
            }
            let s = measure(
                &bins,
                &server,
                "v4",
                &MIXED,
                1.0,
                &["--flooders", "2"],
                false,
            );
            println!(
                "{name} v4 mixed: small p99 {:.0} µs, flood {:.0} MB/s, {} bytes verified",
                s.get("small_p99_us"),
                s.get("flood_mb_per_s"),
                s.get("bytes_verified")
            );
        }
        let server = Server::start_with(&bins, "dualstack", &["--proxy-protocol"]);
        let churn = SCENARIOS.iter().find(|s| s.name == "churn").expect("churn");
        let s = measure(&bins, &server, "v4", churn, 1.0, &["--proxy", "v2"], false);
        println!(
            "dualstack v4 churn with PROXY v2 headers: {:.0} connections/s",
            s.get("conns_per_s")
        );
        for each in ["--each", "--gathered"] {
            let server = Server::start_with(&bins, "pieces", &[each, "64"]);
            let s = measure(&bins, &server, "v4", &SCENARIOS[2], 1.0, &[], false);
            println!(
                "pieces {each} v4 pipelined: {:.0} round trips/s, {} bytes verified",
                s.get("rt_per_s"),
                s.get("bytes_verified")
            );
        }
        if kv_tools() {
            for (name, samples) in kv_pass(&bins, 0, 16, 2000) {
                for (test, s) in samples {
                    println!("{name} {test} -P 16: {:.0} requests/s", s.rps);
                }
            }
        } else {
            fail("redis-server or redis-benchmark not found (apt-get install redis-server redis-tools)");
        }
        return;
    }
    if !o.runs.is_multiple_of(period(SERVERS.len())) {
        eprintln!(
            "runner: {} runs are not whole periods of the servers' order ({} runs each): \
             some servers go first or follow another more often than the rest",
            o.runs,
            period(SERVERS.len())
        );
    }
    let started = Instant::now();
    // results[(scenario, family, server)] = one Sample per run
    let mut results: BTreeMap<(usize, &'static str, &'static str), Vec<Sample>> = BTreeMap::new();
    for run in 1..=o.runs {
        for (si, scenario) in SCENARIOS.iter().enumerate() {
            if !o.only.is_empty() && !o.only.iter().any(|n| n == scenario.name) {
                continue;
            }
            for family in ["v4", "v6"] {
                for name in servers_in_order(run) {
                    let server = Server::start(&bins, name);
                    let s = measure(&bins, &server, family, scenario, o.seconds, &[], false);
                    eprintln!(
                        "run {run} {} {family} {name}: {} = {:.1}, cpu/op {:.0} ns",
                        scenario.name,
                        scenario.metric,
                        s.get(scenario.metric),
                        s.get("cpu_ns_per_op")
                    );
                    results.entry((si, family, name)).or_default().push(s);
                }
            }
        }
    }
    // The same loops over Unix-domain sockets, in `many` and `pipelined`.
    for run in 1..=o.runs {
        for (si, scenario) in SCENARIOS.iter().enumerate() {
            if !UNIX_SCENARIOS.contains(&scenario.name)
                || (!o.only.is_empty() && !o.only.iter().any(|n| n == scenario.name))
            {
                continue;
            }
            for name in servers_in_order(run).filter(|n| serves_unix(n)) {
                let server = Server::start(&bins, name);
                let s = measure(&bins, &server, "unix", scenario, o.seconds, &[], false);
                eprintln!(
                    "run {run} {} unix {name}: {} = {:.1}, cpu/op {:.0} ns",
                    scenario.name,
                    scenario.metric,
                    s.get(scenario.metric),
                    s.get("cpu_ns_per_op")
                );
                results.entry((si, "unix", name)).or_default().push(s);
            }
        }
    }
    // The PROXY protocol's cost: `churn` over IPv4 against the echo example, plain and with
    // a v2 header on every connection (which of the two goes first alternates).
    let mut proxy_runs: BTreeMap<bool, Vec<Sample>> = BTreeMap::new();
    if o.only.is_empty() || o.only.iter().any(|n| n == "churn-proxy") {
        let churn = SCENARIOS.iter().find(|s| s.name == "churn").expect("churn");
        for run in 1..=o.runs {
            for proxied in [run % 2 == 0, run % 2 == 1] {
                let server = if proxied {
                    Server::start_with(&bins, "dualstack", &["--proxy-protocol"])
                } else {
                    Server::start(&bins, "dualstack")
                };
                let extra: &[&str] = if proxied { &["--proxy", "v2"] } else { &[] };
                let s = measure(&bins, &server, "v4", churn, o.seconds, extra, false);
                eprintln!(
                    "run {run} churn v4 dualstack{}: conns_per_s = {:.1}, cpu/op {:.0} ns",
                    if proxied { " with PROXY v2" } else { "" },
                    s.get("conns_per_s"),
                    s.get("cpu_ns_per_op")
                );
                proxy_runs.entry(proxied).or_default().push(s);
            }
        }
    }
    // Fairness: small clients beside K flooders, over IPv4.
    let mut mixed_runs: BTreeMap<(usize, &'static str), Vec<Sample>> = BTreeMap::new();
    if o.only.is_empty() || o.only.iter().any(|n| n == MIXED.name) {
        for run in 1..=o.runs {
            for k in FLOODERS {
                for name in servers_in_order(run) {
                    let server = Server::start(&bins, name);
                    let flooders = k.to_string();
                    let s = measure(
                        &bins,
                        &server,
                        "v4",
                        &MIXED,
                        o.seconds,
                        &["--flooders", &flooders],
                        false,
                    );
                    eprintln!(
                        "run {run} mixed K={k} {name}: small p99 {:.0} us, p99.9 {:.0} us, flood {:.0} MB/s ({:.0}-{:.0} per connection), lateness p99 {:.0} us",
                        s.get("small_p99_us"),
                        s.get("small_p999_us"),
                        s.get("flood_mb_per_s"),
                        s.get("flood_min_mb_per_s"),
                        s.get("flood_max_mb_per_s"),
                        s.get("late_p99_us"),
                    );
                    mixed_runs.entry((k, name)).or_default().push(s);
                }
            }
        }
    }
    // System calls in `many` over IPv4, counted in runs of their own (counting costs a
    // little, so it stays out of the throughput figures above).
    let mut syscall_runs: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    if o.syscalls {
        for run in 1..=o.runs {
            for name in servers_in_order(run) {
                let server = Server::start(&bins, name);
                let s = measure(&bins, &server, "v4", &SCENARIOS[1], o.seconds, &[], true);
                eprintln!(
                    "syscalls run {run} {name}: {:.2} per round trip",
                    s.get("sys:total")
                );
                syscall_runs.entry(name).or_default().push(s);
            }
        }
    }
    // Many sends or one: the pipelined scenario over IPv4, each message sent back by its
    // own send against all of a read's in one, alternating which goes first; then the
    // system calls of each, counted in runs of their own.
    let mut pieces_runs: BTreeMap<(&'static str, bool), Vec<Sample>> = BTreeMap::new();
    if o.only.is_empty() || o.only.iter().any(|n| n == "pieces") {
        for run in 1..=o.runs {
            for each in [run % 2 == 0, run % 2 == 1] {
                let mode = if each { "--each" } else { "--gathered" };
                for count in [false, true] {
                    let server = Server::start_with(&bins, "pieces", &[mode, "64"]);
                    let s = measure(&bins, &server, "v4", &SCENARIOS[2], o.seconds, &[], count);
                    eprintln!(
                        "run {run} pipelined v4 pieces {mode}{}: rt_per_s = {:.1}, cpu/op {:.0} ns, {:.2} syscalls/rt",
                        if count { " (counted)" } else { "" },
                        s.get("rt_per_s"),
                        s.get("cpu_ns_per_op"),
                        s.get("sys:total")
                    );
                    let key = if count { "counted" } else { "timed" };
                    pieces_runs.entry((key, each)).or_default().push(s);
                }
            }
        }
    }
    // The key-value rows: kv, redis-server and the tokio version under redis-benchmark.
    let mut kv_runs: KvRuns = BTreeMap::new();
    let kv_ran = (o.only.is_empty() || o.only.iter().any(|n| n == "kv")) && kv_tools();
    if kv_ran {
        for run in 1..=o.runs {
            for pipeline in KV_PIPELINES {
                for (name, samples) in kv_pass(&bins, run, pipeline, KV_REQUESTS) {
                    for (test, s) in samples {
                        eprintln!(
                            "run {run} kv -P {pipeline} {name} {test}: {:.0} requests/s, cpu {:.0} ns/request",
                            s.rps, s.cpu_ns
                        );
                        kv_runs.entry((pipeline, test, name)).or_default().push(s);
                    }
                }
            }
        }
    }
    let report = Report {
        o: &o,
        kv: kv_ran.then_some(&kv_runs),
        pieces: &pieces_runs,
        proxy: &proxy_runs,
        results: &results,
        mixed: &mixed_runs,
        syscalls: &syscall_runs,
        minutes: started.elapsed().as_secs_f64() / 60.0,
    };
    // A hand-written "## Notes" section (what the numbers mean, what changed) survives reruns.
    let notes = std::fs::read_to_string(&o.out)
        .ok()
        .and_then(|old| old.find("\n## Notes").map(|i| old[i..].to_owned()))
        .unwrap_or_default();
    std::fs::write(&o.out, report.markdown() + &notes)
        .unwrap_or_else(|e| fail(&format!("write {}: {e}", o.out.display())));
    std::fs::write(&o.svg, report.svg())
        .unwrap_or_else(|e| fail(&format!("write {}: {e}", o.svg.display())));
    std::fs::write(&o.latency_svg, report.latency_svg())
        .unwrap_or_else(|e| fail(&format!("write {}: {e}", o.latency_svg.display())));
    eprintln!(
        "wrote {}, {} and {}",
        o.out.display(),
        o.svg.display(),
        o.latency_svg.display()
    );
}

/// The key-value runs: (pipeline, test, server) to one sample per run.
type KvRuns = BTreeMap<(u32, &'static str, &'static str), Vec<dualstack_bench::kv::KvSample>>;

struct Report<'a> {
    o: &'a Opts,
    /// The key-value runs, if they ran.
    kv: Option<&'a KvRuns>,
    /// Many sends or one: (timed or counted, each message by its own send) to samples.
    pieces: &'a BTreeMap<(&'static str, bool), Vec<Sample>>,
    /// `churn` runs of the echo example, by whether each connection carried a PROXY header.
    proxy: &'a BTreeMap<bool, Vec<Sample>>,
    results: &'a BTreeMap<(usize, &'static str, &'static str), Vec<Sample>>,
    /// The fairness runs, by (flooders, server).
    mixed: &'a BTreeMap<(usize, &'static str), Vec<Sample>>,
    syscalls: &'a BTreeMap<&'static str, Vec<Sample>>,
    minutes: f64,
}

impl Report<'_> {
    /// The key-value section: kv against redis-server and the tokio version.
    fn kv_section(&self) -> String {
        use dualstack_bench::kv::TESTS;
        let Some(kv) = self.kv else {
            return "\n## Key-value server (Redis protocol)\n\nNot run: redis-server and redis-benchmark are needed (`apt-get install redis-server redis-tools`).\n".to_owned();
        };
        let runs =
            |p: u32, t: &'static str, srv: &'static str| -> &[dualstack_bench::kv::KvSample] {
                kv.get(&(p, t, srv)).map_or(&[], Vec::as_slice)
            };
        let ratios = |p: u32,
                      t: &'static str,
                      other: &'static str,
                      f: fn(&dualstack_bench::kv::KvSample) -> f64|
         -> Vec<f64> {
            runs(p, t, "kv")
                .iter()
                .zip(runs(p, t, other))
                .map(|(a, b)| f(a) / f(b))
                .filter(|r| r.is_finite())
                .collect()
        };
        let med = |p: u32,
                   t: &'static str,
                   srv: &'static str,
                   f: fn(&dualstack_bench::kv::KvSample) -> f64| {
            median(runs(p, t, srv).iter().map(f).collect())
        };
        let range = |r: &[f64]| {
            if r.len() < 2 {
                return String::new();
            }
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("({lo:.2}–{hi:.2})")
        };
        let rps: fn(&dualstack_bench::kv::KvSample) -> f64 = |s| s.rps;
        let cpu: fn(&dualstack_bench::kv::KvSample) -> f64 = |s| s.cpu_ns;
        let mut m = format!(
            "\n## Key-value server (Redis protocol)\n\n\
             `examples/kv.rs` (**kv**), Debian's `redis-server` 7 (**redis**, `--save '' \
             --appendonly no`) and the same server written for tokio (**tokio**, \
             `bench/src/bin/tokio_kv.rs`: a current-thread runtime, a task per connection, a \
             `BufWriter` flushed when no whole request is left), each pinned to CPU 0; \
             `redis-benchmark -n {KV_REQUESTS} -c {KV_CLIENTS} -P P -t TEST --csv` pinned to CPU \
             1, the servers in a balanced order (`dualstack_bench::order`). Requests per second as redis-benchmark reports \
             them; ratios are taken within each run (median, and range over runs); CPU is the \
             server's own time per request over the test.\n\n\
             | test | P | kv | redis | tokio | kv / redis | kv / tokio | CPU ns/req kv | redis | tokio |\n\
             |---|---|---|---|---|---|---|---|---|---|\n"
        );
        for pipeline in KV_PIPELINES {
            let (mut vs_redis, mut vs_tokio) = (Vec::new(), Vec::new());
            for (test, _) in TESTS {
                let (r, t) = (
                    ratios(pipeline, test, "redis", rps),
                    ratios(pipeline, test, "tokio_kv", rps),
                );
                m.push_str(&format!(
                    "| {test} | {pipeline} | {:.0} | {:.0} | {:.0} | **{:.3}** {} | **{:.3}** {} | {:.0} | {:.0} | {:.0} |\n",
                    med(pipeline, test, "kv", rps),
                    med(pipeline, test, "redis", rps),
                    med(pipeline, test, "tokio_kv", rps),
                    median(r.clone()),
                    range(&r),
                    median(t.clone()),
                    range(&t),
                    med(pipeline, test, "kv", cpu),
                    med(pipeline, test, "redis", cpu),
                    med(pipeline, test, "tokio_kv", cpu),
                ));
                vs_redis.extend(r);
                vs_tokio.extend(t);
            }
            m.push_str(&format!(
                "| all | {pipeline} | | | | geomean **{:.3}** | geomean **{:.3}** | | | |\n",
                geomean(vs_redis.into_iter()),
                geomean(vs_tokio.into_iter())
            ));
        }
        m
    }

    /// Many sends or one: the pipelined scenario against `pieces --each` and `--gathered`.
    fn pieces_section(&self) -> String {
        let (Some(each), Some(gathered)) = (
            self.pieces.get(&("timed", true)),
            self.pieces.get(&("timed", false)),
        ) else {
            return String::new();
        };
        let ratios: Vec<f64> = each
            .iter()
            .zip(gathered)
            .map(|(a, b)| a.get("rt_per_s") / b.get("rt_per_s"))
            .filter(|r| r.is_finite())
            .collect();
        let med = |runs: &[Sample], key: &str| median(runs.iter().map(|s| s.get(key)).collect());
        let sys = |each: bool, key: &str| {
            self.pieces
                .get(&("counted", each))
                .map_or(f64::NAN, |runs| med(runs, key))
        };
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "\n## Many sends or one\n\n\
             The `pipelined` scenario (IPv4, 50 connections, 16 messages of 64 bytes in flight \
             each) against `bench/src/bin/pieces.rs`: each message sent back by its own \
             `Context::send` (**each**), or every whole message of a read in one send \
             (**gathered**, by hand). Sends coalesce, so the first should cost what the second \
             does. System calls per round trip are counted in runs of their own (`perf stat`).\n\n\
             | | round trips/s | CPU ns/rt | syscalls/rt | writes (sendto, writev)/rt | reads (recvfrom)/rt |\n\
             |---|---|---|---|---|---|\n\
             | each | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} |\n\
             | gathered | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} |\n\
             | each / gathered | **{:.3}** ({lo:.2}–{hi:.2}) | | | | |\n",
            med(each, "rt_per_s"),
            med(each, "cpu_ns_per_op"),
            sys(true, "sys:total"),
            sys(true, "sys:sendto") + sys(true, "sys:writev"),
            sys(true, "sys:recvfrom"),
            med(gathered, "rt_per_s"),
            med(gathered, "cpu_ns_per_op"),
            sys(false, "sys:total"),
            sys(false, "sys:sendto") + sys(false, "sys:writev"),
            sys(false, "sys:recvfrom"),
            median(ratios),
        )
    }

    fn runs(&self, si: usize, family: &'static str, server: &'static str) -> &[Sample] {
        self.results
            .get(&(si, family, server))
            .map_or(&[], Vec::as_slice)
    }

    /// Median of one figure over runs.
    fn med(&self, si: usize, family: &'static str, server: &'static str, key: &str) -> f64 {
        median(
            self.runs(si, family, server)
                .iter()
                .map(|s| s.get(key))
                .collect(),
        )
    }

    /// The ratio server/mio within each run.
    fn ratios(&self, si: usize, family: &'static str, server: &'static str, key: &str) -> Vec<f64> {
        let ours = self.runs(si, family, server);
        let base = self.runs(si, family, "mio");
        ours.iter()
            .zip(base)
            .map(|(a, b)| a.get(key) / b.get(key))
            .filter(|r| r.is_finite())
            .collect()
    }

    /// Median over runs of the ratio server/mio within each run.
    fn ratio(&self, si: usize, family: &'static str, server: &'static str, key: &str) -> f64 {
        median(self.ratios(si, family, server, key))
    }

    /// "(low–high)" of the per-run ratios, or nothing with fewer than two runs.
    fn range(&self, si: usize, family: &'static str, server: &'static str, key: &str) -> String {
        let r = self.ratios(si, family, server, key);
        if r.len() < 2 {
            return String::new();
        }
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("({lo:.2}–{hi:.2})")
    }

    fn markdown(&self) -> String {
        let mut m = String::new();
        let machine = machine();
        m.push_str("# Benchmarks\n\n");
        m.push_str(&format!(
            "Measured with `cargo run --release -p dualstack-bench --bin runner` ({} runs, {} s measured per scenario after 1 s of warm-up, {:.0} minutes in all) on {machine}.\n\
             Each server runs pinned to CPU 0, the load generator to CPU 1; every echoed byte is verified.\n\
             **dualstack** is `examples/echo.rs` (release), **mio** the hand-written reference (`bench/src/bin/mio_echo.rs`), **tokio** a current-thread runtime with a task per connection and a 64 KiB buffer (`bench/src/bin/tokio_echo.rs`).\n\
             All listen on one dual-stack `[::]` socket; v4 rows connect to 127.0.0.1, v6 rows to ::1.\n\
             Each figure of a run is the median over the 250 ms intervals of its measured window (this VM's host takes the CPU away now and then: that spoils an interval, not the run); figures are then medians over runs. Ratios are taken to the mio server *of the same run*; the table gives their median and, in brackets, their range over runs.\n\n",
            self.o.runs, self.o.seconds, self.minutes
        ));
        m.push_str("## Throughput and server CPU time\n\n");
        m.push_str("| scenario | family | metric | mio | dualstack | tokio | dualstack / mio | tokio / mio | CPU ns/op mio | CPU ns/op dualstack | CPU ns/op tokio | CPU dualstack / mio |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (si, sc) in SCENARIOS
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name != "idle")
        {
            for family in ["v4", "v6"] {
                if self.runs(si, family, "dualstack").is_empty() {
                    continue; // not run (--only)
                }
                let v = |srv: &'static str| self.med(si, family, srv, sc.metric);
                let c = |srv: &'static str| self.med(si, family, srv, "cpu_ns_per_op");
                m.push_str(&format!(
                    "| {} | {family} | {} | {:.0} | {:.0} | {:.0} | **{:.3}** {} | {:.3} | {:.0} | {:.0} | {:.0} | **{:.3}** {} |\n",
                    sc.name, sc.metric, v("mio"), v("dualstack"), v("tokio"),
                    self.ratio(si, family, "dualstack", sc.metric),
                    self.range(si, family, "dualstack", sc.metric),
                    self.ratio(si, family, "tokio", sc.metric),
                    c("mio"), c("dualstack"), c("tokio"), self.ratio(si, family, "dualstack", "cpu_ns_per_op"),
                    self.range(si, family, "dualstack", "cpu_ns_per_op"),
                ));
            }
        }
        let all = |server: &'static str, key: &str| {
            geomean(
                SCENARIOS
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.name != "idle")
                    .flat_map(|(si, sc)| {
                        let key = if key == "metric" { sc.metric } else { key };
                        ["v4", "v6"]
                            .into_iter()
                            .flat_map(move |f| self.ratios(si, f, server, key))
                    }),
            )
        };
        m.push_str(&format!(
            "\nOver every row and run (geometric mean of the per-run ratios): throughput dualstack / mio **{:.3}**, tokio / mio {:.3}, dualstack / tokio {:.3}; server CPU per operation dualstack / mio **{:.3}**, tokio / mio {:.3}.\n",
            all("dualstack", "metric"),
            all("tokio", "metric"),
            all("dualstack", "metric") / all("tokio", "metric"),
            all("dualstack", "cpu_ns_per_op"),
            all("tokio", "cpu_ns_per_op"),
        ));
        if UNIX_SCENARIOS.iter().any(|n| {
            SCENARIOS
                .iter()
                .position(|s| s.name == *n)
                .is_some_and(|si| !self.runs(si, "unix", "dualstack").is_empty())
        }) {
            m.push_str(
                "\n## Unix-domain sockets\n\n\
                 The same loops and load generator over a Unix-domain stream socket (`unix:PATH`; \
                 tokio's reference server speaks TCP only).\n\n\
                 | scenario | metric | mio | dualstack | dualstack / mio | CPU ns/op mio | CPU ns/op dualstack | CPU dualstack / mio |\n|---|---|---|---|---|---|---|---|\n",
            );
            let mut ratios = Vec::new();
            for (si, sc) in SCENARIOS.iter().enumerate() {
                if !UNIX_SCENARIOS.contains(&sc.name)
                    || self.runs(si, "unix", "dualstack").is_empty()
                {
                    continue;
                }
                let v = |srv: &'static str| self.med(si, "unix", srv, sc.metric);
                let c = |srv: &'static str| self.med(si, "unix", srv, "cpu_ns_per_op");
                ratios.extend(self.ratios(si, "unix", "dualstack", sc.metric));
                m.push_str(&format!(
                    "| {} | {} | {:.0} | {:.0} | **{:.3}** {} | {:.0} | {:.0} | **{:.3}** {} |\n",
                    sc.name,
                    sc.metric,
                    v("mio"),
                    v("dualstack"),
                    self.ratio(si, "unix", "dualstack", sc.metric),
                    self.range(si, "unix", "dualstack", sc.metric),
                    c("mio"),
                    c("dualstack"),
                    self.ratio(si, "unix", "dualstack", "cpu_ns_per_op"),
                    self.range(si, "unix", "dualstack", "cpu_ns_per_op"),
                ));
            }
            m.push_str(&format!(
                "\nOver these rows and runs: dualstack / mio **{:.3}**.\n",
                geomean(ratios.into_iter())
            ));
        }
        if let (Some(plain), Some(proxied)) = (self.proxy.get(&false), self.proxy.get(&true)) {
            let ratios = |key: &str| -> Vec<f64> {
                plain
                    .iter()
                    .zip(proxied)
                    .map(|(a, b)| b.get(key) / a.get(key))
                    .filter(|r| r.is_finite())
                    .collect()
            };
            let med =
                |runs: &[Sample], key: &str| median(runs.iter().map(|s| s.get(key)).collect());
            let range = |r: Vec<f64>| {
                let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("({lo:.2}–{hi:.2})")
            };
            m.push_str(&format!(
                "\n## The PROXY protocol's cost\n\n\
                 `churn` over IPv4 against the echo example, plain and with `--proxy-protocol`, the load \
                 generator sending a v2 header (28 bytes) before each connection's 64 bytes; \
                 the two alternate within each run.\n\n\
                 | | conns/s | CPU ns/conn |\n|---|---|---|\n\
                 | plain | {:.0} | {:.0} |\n\
                 | with a v2 header | {:.0} | {:.0} |\n\
                 | ratio (median of runs) | **{:.3}** {} | **{:.3}** {} |\n",
                med(plain, "conns_per_s"),
                med(plain, "cpu_ns_per_op"),
                med(proxied, "conns_per_s"),
                med(proxied, "cpu_ns_per_op"),
                median(ratios("conns_per_s")),
                range(ratios("conns_per_s")),
                median(ratios("cpu_ns_per_op")),
                range(ratios("cpu_ns_per_op")),
            ));
        }
        m.push_str(
            "\n## Who limits each row\n\n\
             The share of the measured window each side spent on its CPU (server / load \
             generator, medians over runs). Each is pinned to a core of its own, so near 100% \
             that side is the limit. Where the load generator is the busier one, the row \
             measures it as much as the server, and the server's CPU time per operation (the \
             table above) is the fairer comparison: on loopback each side pays the kernel's \
             delivery of what it sends, so a load generator cannot be much cheaper per round \
             trip than an efficient server, and two cores leave it no second one.\n\n\
             | scenario | family | mio | dualstack | tokio |\n|---|---|---|---|---|\n",
        );
        for (si, sc) in SCENARIOS
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name != "idle")
        {
            for family in ["v4", "v6"] {
                if self.runs(si, family, "dualstack").is_empty() {
                    continue;
                }
                let b = |srv: &'static str| {
                    format!(
                        "{:.0}% / {:.0}%",
                        100.0 * self.med(si, family, srv, "server_busy"),
                        100.0 * self.med(si, family, srv, "loadgen_busy")
                    )
                };
                m.push_str(&format!(
                    "| {} | {family} | {} | {} | {} |\n",
                    sc.name,
                    b("mio"),
                    b("dualstack"),
                    b("tokio")
                ));
            }
        }
        m.push_str(&self.kv_section());
        m.push_str(&self.pieces_section());
        m.push_str("\n## Latency (dualstack, µs)\n\n| scenario | family | p50 | p99 | p99.9 |\n|---|---|---|---|---|\n");
        for (si, sc) in SCENARIOS
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name != "idle")
        {
            for family in ["v4", "v6"] {
                let l = |k: &str| self.med(si, family, "dualstack", k);
                m.push_str(&format!(
                    "| {} | {family} | {:.0} | {:.0} | {:.0} |\n",
                    sc.name,
                    l("p50_us"),
                    l("p99_us"),
                    l("p999_us")
                ));
            }
        }
        let idle = SCENARIOS.iter().position(|s| s.name == "idle").unwrap();
        m.push_str("\n## Memory per idle connection (10,000 held, server RSS growth / connections)\n\n| family | mio | dualstack | tokio | dualstack − mio |\n|---|---|---|---|---|\n");
        for family in ["v4", "v6"] {
            let b = |srv: &'static str| self.med(idle, family, srv, "bytes_per_conn");
            m.push_str(&format!(
                "| {family} | {:.0} B | {:.0} B | {:.0} B | {:.0} B |\n",
                b("mio"),
                b("dualstack"),
                b("tokio"),
                b("dualstack") - b("mio")
            ));
        }
        if !self.syscalls.is_empty() {
            m.push_str(&format!(
                "\n## System calls per round trip (`many`, IPv4, steady state)\n\n\
                 Counted by `perf stat` on the server's syscall tracepoints over exactly the measured \
                 window ({} runs of {} s, medians). `strace` is not used: it slows the server until it \
                 falls behind and handles bigger batches per `epoll_wait`, which hides the cost of \
                 polling.\n\n\
                 | server | syscalls / round trip | recvfrom | sendto | epoll_wait | other | round trips/s while counted |\n\
                 |---|---|---|---|---|---|---|\n",
                self.o.runs, self.o.seconds
            ));
            for name in SERVERS {
                let runs = self.syscalls.get(name).map_or(&[][..], Vec::as_slice);
                let med = |key: &str| median(runs.iter().map(|s| s.get(key)).collect());
                let total = med("sys:total");
                if total.is_nan() {
                    m.push_str(&format!("| {name} | (perf could not count) | | | | | |\n"));
                    continue;
                }
                let (recv, send, epoll) = (
                    med("sys:recvfrom"),
                    med("sys:sendto"),
                    med("sys:epoll_wait"),
                );
                m.push_str(&format!(
                    "| {name} | {total:.2} | {recv:.2} | {send:.2} | {epoll:.2} | {:.2} | {:.0} |\n",
                    (total - recv - send - epoll).max(0.0),
                    med("rt_per_s")
                ));
            }
        }
        m.push_str("\n![ratios to the hand-written mio server](bench/ratios.svg)\n");
        m.push_str(&self.fairness_markdown());
        m
    }

    /// Medians over runs of one figure of the fairness runs.
    fn mixed_med(&self, k: usize, server: &'static str, key: &str) -> f64 {
        median(
            self.mixed
                .get(&(k, server))
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|s| s.get(key))
                .collect(),
        )
    }

    fn fairness_markdown(&self) -> String {
        if self.mixed.is_empty() {
            return String::new();
        }
        let mut m = String::from(
            "\n## Fairness under a flood\n\n\
             K flooders push 64 KiB writes as fast as the server takes them (fixed 4 MiB socket \
             buffers, every byte verified) while 50 small clients each send a 64-byte request \
             200 times a second, open loop, over IPv4. Latency is counted from the *intended* \
             send time, so a server that stalls cannot hide it by delaying the next request. \
             The small clients' thread runs at real-time priority on a timerfd; *late* is how \
             far behind schedule the load generator itself sent (its own share of the latency). \
             Medians over runs; per-connection flood shows the slowest and fastest flooder.\n\n\
             | K | server | small p50 µs | p99 µs | p99.9 µs | max µs | late p99 µs | flood MB/s | per connection MB/s | p99 / mio | p99 / tokio |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for k in FLOODERS {
            for server in SERVERS {
                let v = |key: &str| self.mixed_med(k, server, key);
                if v("small_p99_us").is_nan() {
                    continue;
                }
                m.push_str(&format!(
                    "| {k} | {server} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}–{:.0} | {:.4} | {:.3} |\n",
                    v("small_p50_us"),
                    v("small_p99_us"),
                    v("small_p999_us"),
                    v("small_max_us"),
                    v("late_p99_us"),
                    v("flood_mb_per_s"),
                    v("flood_min_mb_per_s"),
                    v("flood_max_mb_per_s"),
                    v("small_p99_us") / self.mixed_med(k, "mio", "small_p99_us"),
                    v("small_p99_us") / self.mixed_med(k, "tokio", "small_p99_us"),
                ));
            }
        }
        m.push_str("\n![small-client latency percentiles with 4 flooders](bench/latency.svg)\n");
        m
    }

    /// Small-client latency by percentile (log scales), one line per server, at K = 4.
    fn latency_svg(&self) -> String {
        let k = 4;
        let (w, h, left, top, right, bottom) = (760.0, 380.0, 70.0, 40.0, 150.0, 50.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let lines: Vec<(&str, &str, Vec<f64>)> = SERVERS
            .iter()
            .zip(["#888888", "#2b7bb9", "#e08a2b"])
            .map(|(server, colour)| {
                let values = PERCENTILES
                    .iter()
                    .map(|(key, _)| self.mixed_med(k, server, key))
                    .collect();
                (*server, colour, values)
            })
            .collect();
        let finite = lines
            .iter()
            .flat_map(|l| l.2.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0);
        // With no figures (`--only` without `mixed`) the axis is 1 to 10, not endless.
        let lo = match finite.clone().fold(f64::INFINITY, f64::min) {
            lo if lo.is_finite() => lo.max(1.0),
            _ => 1.0,
        };
        let hi = finite.fold(1.0, f64::max);
        let (ylo, yhi) = (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        );
        let y = |v: f64| top + ph * (1.0 - (v.max(1.0).log10() - ylo) / (yhi - ylo));
        let x = |i: usize| left + pw * i as f64 / (PERCENTILES.len() - 1) as f64;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">Small-client latency beside {k} flooders (µs, log scale; lower is better)</text>\n"
        );
        let mut decade = ylo;
        while decade <= yhi {
            let v = 10f64.powf(decade);
            s.push_str(&format!(
                "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{v:.0}</text>\n",
                y(v),
                left + pw,
                left - 6.0,
                y(v) + 4.0
            ));
            decade += 1.0;
        }
        for (i, (_, label)) in PERCENTILES.iter().enumerate() {
            s.push_str(&format!(
                "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{label}</text>\n",
                x(i),
                top + ph,
                top + ph + 18.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n",
            left + pw / 2.0,
            h - 8.0
        ));
        for (n, (server, colour, values)) in lines.iter().enumerate() {
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
                .collect();
            s.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
                points.join(" ")
            ));
            let ly = top + 20.0 * n as f64;
            s.push_str(&format!(
                "<line x1=\"{0:.1}\" y1=\"{ly:.1}\" x2=\"{1:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{2:.1}\" y=\"{3:.1}\">{server}</text>\n",
                left + pw + 12.0,
                left + pw + 32.0,
                left + pw + 38.0,
                ly + 4.0
            ));
        }
        s.push_str("</svg>\n");
        s
    }

    fn svg(&self) -> String {
        let mut bars = Vec::new();
        for (si, sc) in SCENARIOS
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name != "idle")
        {
            for family in ["v4", "v6"] {
                bars.push((
                    format!("{} {family}", sc.name),
                    self.ratio(si, family, "dualstack", sc.metric),
                    self.ratio(si, family, "tokio", sc.metric),
                ));
            }
        }
        let (w, row, left, scale) = (760.0, 26.0, 140.0, 400.0);
        let h = 60.0 + row * bars.len() as f64;
        let x = |r: f64| left + scale * r.clamp(0.0, 1.5) / 1.5;
        let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"18\" font-size=\"14\">Throughput relative to the hand-written mio server (1.0 = equal)</text>\n");
        for (i, (label, ours, tokio)) in bars.iter().enumerate() {
            let y = 34.0 + row * i as f64;
            s.push_str(&format!(
                "<text x=\"10\" y=\"{}\">{label}</text>\n",
                y + 14.0
            ));
            s.push_str(&format!("<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"10\" fill=\"#2b7bb9\"/><text x=\"{:.1}\" y=\"{}\">{ours:.2}</text>\n", x(*ours) - left, x(*ours) + 4.0, y + 9.0));
            s.push_str(&format!("<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"10\" fill=\"#e08a2b\"/><text x=\"{:.1}\" y=\"{}\">{tokio:.2}</text>\n", y + 11.0, x(*tokio) - left, x(*tokio) + 4.0, y + 20.0));
        }
        for (r, dash) in [(1.0, ""), (0.95, " stroke-dasharray=\"4 3\"")] {
            s.push_str(&format!(
                "<line x1=\"{0:.1}\" y1=\"28\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#444\"{dash}/>\n",
                x(r),
                h - 20.0
            ));
        }
        s.push_str(&format!("<rect x=\"{left}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"#2b7bb9\"/><text x=\"{}\" y=\"{}\">dualstack</text>\n", h - 14.0, left + 14.0, h - 5.0));
        s.push_str(&format!("<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"#e08a2b\"/><text x=\"{}\" y=\"{}\">tokio current-thread</text>\n", left + 100.0, h - 14.0, left + 114.0, h - 5.0));
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\">dashed: 0.95</text>\n",
            left + 260.0,
            h - 5.0
        ));
        s.push_str("</svg>\n");
        s
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!("{cores} cores ({cpu}), Linux {}", kernel.trim());
    let _ = std::io::stdout().flush();
    out.push_str(&format!(", {}", std::env::consts::ARCH));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a period of runs (from 1, as `main` counts them), each server goes first as
    /// often as the others and follows each other as often: rotated by one, each always
    /// followed the same one.
    #[test]
    fn runs_give_each_server_every_predecessor_alike() {
        for servers in [&SERVERS[..], &dualstack_bench::kv::SERVERS[..]] {
            let runs = period(servers.len());
            let mut firsts = BTreeMap::new();
            let mut pairs = BTreeMap::new();
            for run in 1..=runs {
                let order: Vec<_> = in_order(servers, run).collect();
                assert_eq!(order.len(), servers.len(), "{order:?}");
                *firsts.entry(order[0]).or_insert(0) += 1;
                for w in order.windows(2) {
                    *pairs.entry((w[0], w[1])).or_insert(0) += 1;
                }
            }
            assert!(
                firsts.values().all(|&n| n == runs / servers.len()),
                "{firsts:?}"
            );
            let n = servers.len();
            assert_eq!(pairs.len(), n * (n - 1), "{pairs:?}");
            assert!(pairs.values().all(|&c| c == runs / n), "{pairs:?}");
        }
    }

    #[test]
    fn a_stalled_interval_does_not_move_the_medians() {
        let ms = Duration::from_millis;
        // 1000 operations per 250 ms at 200 µs of CPU each, except one interval in which
        // the host took the CPU away: 100 operations for 50 ms of CPU.
        let ticks = [
            (0.0, 0.0, ms(0)),
            (250_000.0, 1000.0, ms(200)),
            (500_000.0, 1100.0, ms(250)),
            (750_000.0, 2100.0, ms(450)),
            (1_000_000.0, 3100.0, ms(650)),
        ];
        let (rate, cpu) = interval_medians(&ticks).unwrap();
        assert_eq!(rate, 4000.0);
        assert_eq!(cpu, 200_000.0);
        assert_eq!(interval_medians(&ticks[..3]), None);
    }

    #[test]
    fn geomean_treats_reciprocal_ratios_alike() {
        assert!((geomean([0.5, 2.0].into_iter()) - 1.0).abs() < 1e-12);
        assert!(geomean(std::iter::empty()).is_nan());
    }
}
