//! What the example servers share: the command line, logging, and the start-up contract.
//!
//! The contract scripts rely on: one `listening on ADDR (MODE)` line per socket on stdout,
//! flushed, then nothing else on stdout; logs on stderr (level from `RUST_LOG`, default
//! info); a spec that cannot be parsed or bound gives one line on stderr and exit status 2;
//! SIGINT and SIGTERM stop the server gracefully and exit 0.
#![allow(dead_code)] // each example uses a different part

use std::io::Write;
use std::time::Duration;

use dualstack::{display_addr, FamilyPolicy, Handler, Server, ServerBuilder, WildcardStack};

/// The options every example takes.
pub struct Options {
    pub specs: Vec<String>,
    pub family: FamilyPolicy,
    pub separate_stacks: bool,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<Duration>,
    pub first_byte_timeout: Option<Duration>,
    pub max_per_peer: Option<usize>,
    pub max_total_queued: Option<usize>,
    /// Options particular to one example, as `(name, value)`.
    pub extra: Vec<(String, String)>,
}

const GRAMMAR: &str = "\
SPEC (where to listen; repeat for several):
  HOST:PORT          a name, every address it resolves to: localhost:7000, example.com:80
                     (localhost and *.localhost never ask DNS: 127.0.0.1 and ::1)
  IPV4:PORT          exactly this IPv4 address: 127.0.0.1:7000, 0.0.0.0:7000 (IPv4 only)
  [IPV6]:PORT        exactly this IPv6 address: [::1]:7000, [::]:7000 (IPv6 only),
                     [fe80::1%eth0]:7000 (zone by name, number, or %25 as in URIs)
  :PORT  *:PORT  PORT
                     every address of every family: one dual-stack [::] socket where
                     the host supports it, else one socket per family
  PORT is 0-65535; 0 lets the system choose (one port shared by all the spec's sockets).

OPTIONS:
  --family any|v4|v6|dual   which families to use (default any); dual insists on one
                            dual-stack socket, for :PORT or [::]:PORT only
  --separate-stacks         :PORT opens 0.0.0.0 and an IPv6-only [::] instead of one
                            dual-stack socket
  --max-connections N       serve at most N connections at once; others wait
  --idle-timeout SECONDS    close connections idle for that long
  --first-byte-timeout SECONDS
                            close connections that send nothing for that long at first
  --max-per-peer N          at most N connections per IPv4 address or IPv6 /64
  --max-total-queued BYTES  close the biggest queue holders past this much queued output
  -h, --help                this text

Each listening socket is printed on stdout as `listening on ADDR (MODE)`, MODE being
ipv4, ipv6-only or dual-stack as the kernel reports it. Logs go to stderr; set RUST_LOG
(error, warn, info, debug, trace) to change how much. SIGINT or SIGTERM stops the
server gracefully. A spec that cannot be parsed or bound exits with status 2.";

impl Options {
    /// Parses `std::env::args`. `extra` names the example's own options that take a value
    /// (as `("--udp", "--udp ADDR  help text")`). Prints help and exits 0 for `-h`; prints one
    /// line and exits 2 for a mistake.
    pub fn parse(name: &str, about: &str, default_spec: &str, extra: &[(&str, &str)]) -> Options {
        let mut opts = Options {
            specs: Vec::new(),
            family: FamilyPolicy::Any,
            separate_stacks: false,
            max_connections: None,
            idle_timeout: None,
            first_byte_timeout: None,
            max_per_peer: None,
            max_total_queued: None,
            extra: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |what: &str| -> String {
                args.next()
                    .unwrap_or_else(|| fail(name, &format!("{arg} needs {what}")))
            };
            match arg.as_str() {
                "-h" | "--help" => {
                    println!("{about}\n\nUSAGE:\n  cargo run --example {name} -- [OPTIONS] [SPEC]...\n  (no SPEC: {default_spec})\n\n{GRAMMAR}");
                    for (_, help) in extra {
                        println!("  {help}");
                    }
                    std::process::exit(0);
                }
                "--family" => {
                    opts.family = match value("a family (any, v4, v6 or dual)").as_str() {
                        "any" => FamilyPolicy::Any,
                        "v4" => FamilyPolicy::V4,
                        "v6" => FamilyPolicy::V6,
                        "dual" => FamilyPolicy::DualStack,
                        other => fail(
                            name,
                            &format!("--family {other:?}: expected any, v4, v6 or dual"),
                        ),
                    }
                }
                "--separate-stacks" => opts.separate_stacks = true,
                "--max-connections" => {
                    let v = value("a number");
                    opts.max_connections =
                        Some(v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                            fail(
                                name,
                                &format!(
                                    "--max-connections {v:?}: expected a whole number above 0"
                                ),
                            )
                        }));
                }
                "--idle-timeout" | "--first-byte-timeout" => {
                    let v = value("a number of seconds");
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .unwrap_or_else(|| {
                            fail(
                                name,
                                &format!("{arg} {v:?}: expected a number of seconds above 0"),
                            )
                        });
                    let timeout = Some(Duration::from_secs_f64(secs));
                    if arg == "--idle-timeout" {
                        opts.idle_timeout = timeout;
                    } else {
                        opts.first_byte_timeout = timeout;
                    }
                }
                "--max-per-peer" | "--max-total-queued" => {
                    let v = value("a number");
                    let n: usize = v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                        fail(
                            name,
                            &format!("{arg} {v:?}: expected a whole number above 0"),
                        )
                    });
                    if arg == "--max-per-peer" {
                        opts.max_per_peer = Some(n);
                    } else {
                        opts.max_total_queued = Some(n);
                    }
                }
                flag if extra.iter().any(|(e, _)| *e == flag) => {
                    let v = value("a value");
                    opts.extra.push((flag.to_owned(), v));
                }
                flag if flag.starts_with('-') => {
                    fail(name, &format!("unknown option {flag:?}; see --help"))
                }
                spec => opts.specs.push(spec.to_owned()),
            }
        }
        if opts.specs.is_empty() {
            opts.specs.push(default_spec.to_owned());
        }
        opts
    }

    /// The value of an example-specific option.
    pub fn extra(&self, flag: &str) -> Option<&str> {
        self.extra
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    /// A builder with these specs and options.
    pub fn builder(&self) -> ServerBuilder {
        let mut builder = Server::builder().family(self.family);
        if self.separate_stacks {
            builder = builder.wildcard_stack(WildcardStack::Separate);
        }
        if let Some(max) = self.max_connections {
            builder = builder.max_connections(max);
        }
        if let Some(timeout) = self.idle_timeout {
            builder = builder.idle_timeout(timeout);
        }
        if let Some(timeout) = self.first_byte_timeout {
            builder = builder.first_byte_timeout(timeout);
        }
        if let Some(max) = self.max_per_peer {
            builder = builder.max_connections_per_peer(max);
        }
        if let Some(bytes) = self.max_total_queued {
            builder = builder.max_total_queued(bytes);
        }
        for spec in &self.specs {
            builder = builder.listen(spec.as_str());
        }
        builder
    }
}

/// One line on stderr, exit status 2: the contract for bad input.
pub fn fail(name: &str, message: &str) -> ! {
    eprintln!("{name}: {message}");
    std::process::exit(2)
}

/// Logs to stderr, at the level RUST_LOG names (default info).
pub fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    simple_logger::SimpleLogger::new()
        .with_level(level)
        .init()
        .expect("the logger is set once");
}

/// Binds, or exits with status 2 and one line naming the spec and the reason.
pub fn bind<H: Handler>(name: &str, builder: ServerBuilder, handler: H) -> Server<H> {
    builder
        .bind(handler)
        .unwrap_or_else(|e| fail(name, &e.to_string()))
}

/// Prints `listening on ADDR (MODE)` for each socket, flushes stdout, and logs how to connect.
pub fn announce<H>(server: &Server<H>) {
    let mut out = std::io::stdout().lock();
    for l in server.listeners() {
        writeln!(
            out,
            "listening on {} ({})",
            display_addr(l.local_addr),
            l.mode
        )
        .expect("write to stdout");
    }
    out.flush().expect("flush stdout");
    for l in server.listeners() {
        let (host, port) = (l.local_addr.ip(), l.local_addr.port());
        let hint = match l.mode {
            dualstack::SocketMode::Ipv4 if host.is_unspecified() => {
                format!("nc -4 127.0.0.1 {port}")
            }
            dualstack::SocketMode::Ipv4 => format!("nc -4 {host} {port}"),
            dualstack::SocketMode::Ipv6Only if host.is_unspecified() => format!("nc -6 ::1 {port}"),
            dualstack::SocketMode::Ipv6Only => format!("nc -6 {host} {port}"),
            dualstack::SocketMode::DualStack => {
                format!("nc -4 127.0.0.1 {port}  or  nc -6 ::1 {port}")
            }
        };
        log::info!("try: {hint}");
    }
}

/// Stops the server gracefully on SIGINT or SIGTERM, from a thread of its own.
pub fn stop_on_signals(handle: dualstack::ServerHandle) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).expect("install signal handlers");
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            log::info!("signal {signal}: stopping");
            handle.stop();
        }
    });
}
