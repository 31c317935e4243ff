//! The key-value rows: `examples/kv.rs` (dualstack), Debian's `redis-server` and the tokio
//! version (`tokio_kv`), each pinned to CPU 0 and driven by Debian's `redis-benchmark`
//! pinned to CPU 1, with the server's CPU time sampled around each test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The servers, in the order of the report.
pub const SERVERS: [&str; 3] = ["kv", "redis", "tokio_kv"];

/// The tests redis-benchmark runs, as its `-t` names them and as its CSV names them.
pub const TESTS: [(&str, &str); 4] = [
    ("set", "SET"),
    ("get", "GET"),
    ("incr", "INCR"),
    ("mset", "MSET (10 keys)"),
];

/// A key-value server pinned to CPU 0, killed (by the PID we started) when dropped.
pub struct KvServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl KvServer {
    /// Starts `name`: `kv` and `tokio_kv` from `release` (the directory of the release
    /// build), `redis` as Debian's `redis-server`, saving nothing to disk.
    pub fn start(release: &Path, name: &str) -> std::io::Result<KvServer> {
        let mut command = Command::new("taskset");
        command.args(["-c", "0"]);
        let port = match name {
            "redis" => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                command
                    .arg("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--dir"])
                    .arg(std::env::temp_dir());
                Some(port)
            }
            "kv" => {
                command
                    .arg(release.join("examples").join("kv"))
                    .arg("127.0.0.1:0");
                None
            }
            _ => {
                command.arg(release.join(name)).arg("127.0.0.1:0");
                None
            }
        };
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let port = match port {
            Some(port) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err(std::io::Error::other("redis-server did not start"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                port
            }
            None => {
                let mut line = String::new();
                BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
                dualstack_support::parse_listening_line(&line)
                    .map(|(addr, _)| addr.port())
                    .ok_or_else(|| std::io::Error::other(format!("{name} printed {line:?}")))?
            }
        };
        Ok(KvServer { child, port })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for KvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `redis-benchmark` test gave: requests per second, median latency, and the
/// server's CPU time per request over the test.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvSample {
    /// Requests per second, as redis-benchmark reports it.
    pub rps: f64,
    /// The median latency in milliseconds.
    pub p50_ms: f64,
    /// The server's CPU time per request, in nanoseconds.
    pub cpu_ns: f64,
}

/// Runs `redis-benchmark` against `server` for each test of [`TESTS`], `requests` requests
/// of `clients` connections pipelining `pipeline`: the sample of each test, by its `-t`
/// name.
pub fn benchmark(
    server: &KvServer,
    requests: u32,
    clients: u32,
    pipeline: u32,
) -> std::io::Result<BTreeMap<&'static str, KvSample>> {
    let mut out = BTreeMap::new();
    for (test, csv_name) in TESTS {
        let before = crate::cpu_time(server.pid());
        let run = Command::new("taskset")
            .args(["-c", "1", "redis-benchmark", "--csv", "-p"])
            .arg(server.port.to_string())
            .args(["-t", test, "-n", &requests.to_string()])
            .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
            .stdin(Stdio::null())
            .output()?;
        let after = crate::cpu_time(server.pid());
        let text = String::from_utf8_lossy(&run.stdout);
        if !run.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-benchmark -t {test}: {}",
                String::from_utf8_lossy(&run.stderr)
            )));
        }
        let fields = csv_row(&text, csv_name).ok_or_else(|| {
            std::io::Error::other(format!(
                "no {csv_name:?} row in redis-benchmark's output: {text}"
            ))
        })?;
        let number = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let cpu_ns = match (before, after) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_nanos() as f64 / f64::from(requests),
            _ => f64::NAN,
        };
        out.insert(
            test,
            KvSample {
                rps: number(1),
                p50_ms: number(4),
                cpu_ns,
            },
        );
    }
    Ok(out)
}

/// The fields of the CSV row whose first field is `name` (quotes removed).
fn csv_row(text: &str, name: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split(',')
                .map(|f| f.trim().trim_matches('"').to_owned())
                .collect::<Vec<_>>()
        })
        .find(|f| f.first().is_some_and(|n| n == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmarks_csv_is_read_by_test_name() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"71428.57\",\"0.391\",\"0.096\",\"0.383\",\"0.551\",\"0.711\",\"1.927\"\n\
                    \"MSET (10 keys)\",\"60000.00\",\"0.5\",\"0.1\",\"0.48\",\"0.6\",\"0.7\",\"2.0\"\n";
        let set = csv_row(text, "SET").unwrap();
        assert_eq!(set[1], "71428.57");
        assert_eq!(set[4], "0.383");
        assert_eq!(csv_row(text, "MSET (10 keys)").unwrap()[1], "60000.00");
        assert!(csv_row(text, "GET").is_none());
    }
}
