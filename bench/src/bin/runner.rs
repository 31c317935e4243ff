//! The benchmark runner: every scenario against the three servers, back to back, in one go.
//!
//! ```text
//! cargo run --release -p dualstack-bench --bin runner -- [--runs N] [--seconds S]
//!     [--out BENCHMARKS.md] [--svg bench/ratios.svg] [--no-syscalls] [--quick]
//! ```
//!
//! Builds the servers and the load generator (release), then for each run, scenario and
//! family starts each server pinned to CPU 0 and the load generator pinned to CPU 1, samples
//! the server's CPU time (from /proc, exactly over the measured window the load generator
//! announces) and its RSS, and kills the server by the PID it started. Ratios to the
//! hand-written mio server are taken within each run, then the median over runs is reported.
//! `--quick` runs one short scenario and writes nothing: the CI smoke test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualstack_bench::{cpu_time, parse_numbers, rss};

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

struct Opts {
    runs: usize,
    seconds: f64,
    out: PathBuf,
    svg: PathBuf,
    syscalls: bool,
    quick: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        runs: 3,
        seconds: 3.0,
        out: "BENCHMARKS.md".into(),
        svg: "bench/ratios.svg".into(),
        syscalls: true,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--runs" => o.runs = value().parse().unwrap_or_else(|_| fail("--runs: a number")),
            "--seconds" => {
                o.seconds = value()
                    .parse()
                    .unwrap_or_else(|_| fail("--seconds: a number"))
            }
            "--out" => o.out = value().into(),
            "--svg" => o.svg = value().into(),
            "--no-syscalls" => o.syscalls = false,
            "--quick" => o.quick = true,
            other => fail(&format!("unknown option {other}")),
        }
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
}

impl Server {
    fn start(bins: &Bins, name: &str) -> Server {
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg("0")
            .arg(bins.server(name))
            .arg(":0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("start {name}: {e}")));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the server's first line");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| fail(&format!("{name} printed {line:?}")));
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| fail(&format!("no port in {line:?}")));
        Server { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
) -> Sample {
    let host = if family == "v4" { "127.0.0.1" } else { "[::1]" };
    let addr = format!("{host}:{}", server.port);
    let pid = server.pid();
    let base_rss = rss(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(base_rss));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
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
    let (mut cpu_start, mut cpu_end, mut held_rss) = (None, None, None);
    let mut messages = Vec::new();
    for line in stderr.lines().map_while(Result::ok) {
        if line == "measuring" {
            cpu_start = cpu_time(pid);
        } else if line == "done" {
            cpu_end = cpu_time(pid);
        } else if line.starts_with("holding") {
            std::thread::sleep(Duration::from_millis(500));
            held_rss = rss(pid);
        } else {
            messages.push(line);
        }
    }
    let out = child.wait_with_output().expect("loadgen output");
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
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
    sample
        .numbers
        .insert("rss_peak".into(), peak.load(Ordering::Relaxed) as f64);
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        let work = sample.get("round_trips").max(sample.get("connections"));
        if work > 0.0 {
            sample
                .numbers
                .insert("cpu_ns_per_op".into(), (b - a).as_nanos() as f64 / work);
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

/// System calls per round trip in `many`, counted by strace over a fixed number of round trips.
fn syscalls(bins: &Bins, name: &str) -> Option<(f64, String)> {
    let server = Server::start(bins, name);
    let log = std::env::temp_dir().join(format!("dualstack-strace-{name}.txt"));
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(&log)
        .args(["-p", &server.pid().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let count = 100_000;
    let scenario = &SCENARIOS[1];
    let sample = measure(
        bins,
        &server,
        "v4",
        scenario,
        60.0,
        &["--count", &count.to_string()],
    );
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    let text = std::fs::read_to_string(&log).ok()?;
    let total = text.lines().find(|l| l.trim_end().ends_with("total"))?;
    let calls: f64 = total.split_whitespace().nth(3)?.parse().ok()?;
    let mut top: Vec<(f64, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls: f64 = f.get(3)?.parse().ok()?;
            (name != "total" && !name.starts_with('-')).then(|| (calls, name.to_owned()))
        })
        .collect();
    top.sort_by(|a, b| b.0.total_cmp(&a.0));
    let per_rt = |c: f64| c / sample.get("round_trips");
    let detail = top
        .iter()
        .take(4)
        .map(|(c, n)| format!("{n} {:.2}", per_rt(*c)))
        .collect::<Vec<_>>()
        .join(", ");
    Some((per_rt(calls), detail))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn raise_fd_limit() {
    let rlim = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit reads the struct we pass, which lives across the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlim) };
    if rc != 0 {
        eprintln!(
            "runner: cannot raise RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
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
            for family in ["v4", "v6"] {
                let s = measure(&bins, &server, family, &SCENARIOS[1], 1.0, &[]);
                println!(
                    "{name} {family} many: {:.0} round trips/s, {} bytes verified",
                    s.get("rt_per_s"),
                    s.get("bytes_verified")
                );
            }
        }
        return;
    }
    let started = Instant::now();
    // results[(scenario, family, server)] = one Sample per run
    let mut results: BTreeMap<(usize, &'static str, &'static str), Vec<Sample>> = BTreeMap::new();
    for run in 1..=o.runs {
        for (si, scenario) in SCENARIOS.iter().enumerate() {
            for family in ["v4", "v6"] {
                for name in SERVERS {
                    let server = Server::start(&bins, name);
                    let s = measure(&bins, &server, family, scenario, o.seconds, &[]);
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
    let syscall_rows: Vec<(String, Option<(f64, String)>)> = if o.syscalls {
        SERVERS
            .iter()
            .map(|n| (n.to_string(), syscalls(&bins, n)))
            .collect()
    } else {
        Vec::new()
    };
    let report = Report {
        o: &o,
        results: &results,
        syscalls: &syscall_rows,
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
    eprintln!("wrote {} and {}", o.out.display(), o.svg.display());
}

struct Report<'a> {
    o: &'a Opts,
    results: &'a BTreeMap<(usize, &'static str, &'static str), Vec<Sample>>,
    syscalls: &'a [(String, Option<(f64, String)>)],
    minutes: f64,
}

impl Report<'_> {
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

    /// Median over runs of the ratio server/mio within each run.
    fn ratio(&self, si: usize, family: &'static str, server: &'static str, key: &str) -> f64 {
        let ours = self.runs(si, family, server);
        let base = self.runs(si, family, "mio");
        median(
            ours.iter()
                .zip(base)
                .map(|(a, b)| a.get(key) / b.get(key))
                .collect(),
        )
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
             Figures are medians over runs; ratios are taken to the mio server *of the same run*, then the median is reported.\n\n",
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
                let v = |srv: &'static str| self.med(si, family, srv, sc.metric);
                let c = |srv: &'static str| self.med(si, family, srv, "cpu_ns_per_op");
                m.push_str(&format!(
                    "| {} | {family} | {} | {:.0} | {:.0} | {:.0} | **{:.3}** | {:.3} | {:.0} | {:.0} | {:.0} | **{:.3}** |\n",
                    sc.name, sc.metric, v("mio"), v("dualstack"), v("tokio"),
                    self.ratio(si, family, "dualstack", sc.metric), self.ratio(si, family, "tokio", sc.metric),
                    c("mio"), c("dualstack"), c("tokio"), self.ratio(si, family, "dualstack", "cpu_ns_per_op"),
                ));
            }
        }
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
            m.push_str("\n## System calls per round trip (`many`, IPv4, 100,000 round trips under `strace -c -f`)\n\n| server | syscalls / round trip | the most frequent, per round trip |\n|---|---|---|\n");
            for (name, row) in self.syscalls {
                match row {
                    Some((per, detail)) => {
                        m.push_str(&format!("| {name} | {per:.2} | {detail} |\n"))
                    }
                    None => m.push_str(&format!("| {name} | (strace unavailable) | |\n")),
                }
            }
        }
        m.push_str("\n![ratios to the hand-written mio server](bench/ratios.svg)\n");
        m
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
