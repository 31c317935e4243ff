//! What the example servers share: the command line, logging, and the start-up contract.
//!
//! The contract scripts rely on: one `listening on ADDR (MODE)` line per socket on stdout,
//! flushed, then nothing else on stdout (embed adds one `udp on ADDR` line after them); logs
//! on stderr (`RUST_LOG`: a level, `TARGET=LEVEL` directives or both, comma-separated;
//! default info); a spec or option that cannot be used gives one line on stderr and exit
//! status 2; SIGINT and SIGTERM stop the server gracefully and exit 0, from the very start
//! (they are caught before anything else happens, a slow name lookup included); a second
//! one during the graceful stop ends the process at once (status 128 + the signal). A log
//! line that cannot be written (stderr closed) is dropped, never a reason to stop.
#![allow(dead_code)] // each example uses a different part

use std::io::Write;
use std::time::Duration;

use dualstack::{
    display_addr, FamilyPolicy, Handler, ListenConfig, Server, ServerBuilder, WildcardStack,
};

/// The shortest and longest timeout an option takes, in seconds: shorter than a millisecond
/// is below what the clock can tell apart from zero, longer than a year is a typo.
const TIMEOUT_RANGE: (f64, f64) = (0.001, 365.0 * 24.0 * 3600.0);

/// The example's name, for messages from where it is not passed.
static NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The options every example takes.
#[derive(Clone)]
pub struct Options {
    pub specs: Vec<String>,
    pub family: FamilyPolicy,
    pub separate_stacks: bool,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<Duration>,
    pub first_byte_timeout: Option<Duration>,
    pub max_per_peer: Option<usize>,
    pub max_total_queued: Option<usize>,
    pub nodelay: Option<bool>,
    pub read_budget: Option<usize>,
    pub unix_mode: Option<u32>,
    /// Every spec's connections begin with a PROXY protocol header.
    pub proxy: bool,
    /// The balancers trusted to send one (default: loopback).
    pub proxy_from: Option<Vec<dualstack::Cidr>>,
    /// TLS on every spec: certificate and key files, in pairs (the first is the default).
    pub tls_certs: Vec<(String, Option<String>)>,
    /// ALPN protocols offered, most preferred first.
    pub tls_alpn: Vec<String>,
    /// Client certificates required, issued under these CAs.
    pub tls_client_ca: Option<String>,
    pub tls_handshake_timeout: Option<Duration>,
    /// Threads that do handshake steps off the loop.
    pub tls_handshake_threads: Option<usize>,
    /// After a hand-over (SIGUSR2): how long this process's connections may go on.
    pub drain_timeout: Option<Duration>,
    /// Give the service manager the listening sockets to keep across restarts.
    pub fd_store: bool,
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
  unix:PATH  /PATH  ./PATH
                     a Unix-domain socket file (a stale one is replaced, a live one not)
  unix:@NAME  @NAME  a Linux abstract Unix-domain socket
  sd-listen          every socket the service manager passed (systemd socket activation)
  sd-listen:NAME     those of them named NAME (FileDescriptorName=)
  fd:N               the inherited listening socket N (3 or above)
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
  --max-per-peer N          at most N connections per IPv4 address, IPv6 /64 or, on a
                            Unix-domain socket, user id
  --max-total-queued BYTES  close the biggest queue holders past this much queued output
  --nodelay on|off          TCP_NODELAY on accepted connections (default: the library's)
  --read-budget BYTES       the most read from one connection per turn (default 256 KiB)
  --unix-mode MODE          permissions of Unix-domain socket files, in octal (as 660),
                            set before any client can connect (default: the umask's)
  --proxy-protocol          every connection begins with a PROXY protocol header (v1 or
                            v2) from a load balancer; the client it names is the peer
  --tls-cert FILE --tls-key FILE
                            TLS on every spec: a certificate chain and its key (PEM);
                            repeat the pair for more names (each certificate serves
                            the names in its SAN list; the first is the default).
                            SIGHUP reads the files again (a bad file is logged, and
                            the running certificates stay)
  --tls-alpn LIST           application protocols offered, as h2,http/1.1
  --tls-client-ca FILE      require client certificates issued under these CAs (PEM)
  --tls-handshake-timeout SECONDS
                            close clients whose handshake is not done by then (10)
  --tls-handshake-threads N do handshakes' key work on N threads of their own, so that
                            the loop goes on serving meanwhile (default 0: the loop
                            does it)
  --drain-timeout SECONDS   after a hand-over (SIGUSR2), how long this process's
                            connections may go on before they are closed (30)
  --fd-store                give the service manager (NOTIFY_SOCKET) the listening
                            sockets to keep across restarts (systemd's
                            FileDescriptorStoreMax=); a restart takes them back
  --proxy-from CIDR[,CIDR...]
                            the balancers trusted to send one (default 127.0.0.0/8,::1);
                            other peers are closed without a byte read
  -h, --help                this text
  --                        what follows is a SPEC, even if it begins with \"-\"

Each listening socket is printed on stdout as `listening on ADDR (MODE)`, MODE being
ipv4, ipv6-only or dual-stack as the kernel reports it, or unix; with TLS options,
`(MODE, tls)`. Logs go to stderr; set RUST_LOG
to a level (error, warn, info, debug, trace), TARGET=LEVEL directives, or both, separated
by commas (RUST_LOG=warn,dualstack=debug). SIGINT or SIGTERM stops the server gracefully.
SIGUSR2 starts this program again with the listening sockets, and once it is ready, this
process stops accepting and drains: a restart or an upgrade that drops no connection.
A spec or option that cannot be used exits with status 2. Timeouts are 0.001 to 31536000
seconds.";

impl Options {
    /// Parses `std::env::args`. `extra` names the example's own options that take a value
    /// (as `("--udp", "--udp ADDR  help text")`). Prints help and exits 0 for `-h`; prints one
    /// line and exits 2 for a mistake.
    pub fn parse(
        name: &'static str,
        about: &str,
        default_spec: &str,
        extra: &[(&str, &str)],
    ) -> Options {
        let _ = NAME.set(name);
        let mut opts = Options {
            specs: Vec::new(),
            family: FamilyPolicy::Any,
            separate_stacks: false,
            max_connections: None,
            idle_timeout: None,
            first_byte_timeout: None,
            max_per_peer: None,
            max_total_queued: None,
            nodelay: None,
            read_budget: None,
            unix_mode: None,
            proxy: false,
            proxy_from: None,
            tls_certs: Vec::new(),
            tls_alpn: Vec::new(),
            tls_client_ca: None,
            tls_handshake_timeout: None,
            tls_handshake_threads: None,
            drain_timeout: None,
            fd_store: false,
            extra: Vec::new(),
        };
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .enumerate()
            .map(|(i, arg)| {
                arg.into_string().unwrap_or_else(|arg| {
                    fail(
                        name,
                        &format!(
                            "argument {} ({}) is not valid UTF-8",
                            i + 1,
                            quoted(&arg.to_string_lossy())
                        ),
                    )
                })
            })
            .collect();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |what: &str| -> String {
                args.next()
                    .unwrap_or_else(|| fail(name, &format!("{arg} needs {what}")))
            };
            match arg.as_str() {
                "--" => {
                    opts.specs.extend(args.by_ref());
                    break;
                }
                "-h" | "--help" => {
                    let mut text = format!("{about}\n\nUSAGE:\n  cargo run --example {name} -- [OPTIONS] [SPEC]...\n  (no SPEC: {default_spec})\n\n{GRAMMAR}\n");
                    for (_, help) in extra {
                        text.push_str(&format!("  {help}\n"));
                    }
                    print_or_fail(name, &text);
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
                            &format!("--family {}: expected any, v4, v6 or dual", quoted(other)),
                        ),
                    }
                }
                "--separate-stacks" => opts.separate_stacks = true,
                "--max-connections" => {
                    opts.max_connections = Some(count(name, &arg, &value("a number")));
                }
                "--idle-timeout" => {
                    opts.idle_timeout = Some(seconds(name, &arg, &value("a number of seconds"), TIMEOUT_RANGE));
                }
                "--first-byte-timeout" => {
                    opts.first_byte_timeout = Some(seconds(name, &arg, &value("a number of seconds"), TIMEOUT_RANGE));
                }
                "--max-per-peer" => opts.max_per_peer = Some(count(name, &arg, &value("a number"))),
                "--max-total-queued" => {
                    opts.max_total_queued = Some(count(name, &arg, &value("a number")));
                }
                "--nodelay" => {
                    opts.nodelay = match value("on or off").as_str() {
                        "on" => Some(true),
                        "off" => Some(false),
                        other => fail(name, &format!("--nodelay {}: expected on or off", quoted(other))),
                    }
                }
                "--read-budget" => opts.read_budget = Some(count(name, &arg, &value("a number"))),
                "--proxy-protocol" => opts.proxy = true,
                "--tls-cert" => opts.tls_certs.push((value("a file"), None)),
                "--tls-key" => {
                    let key = value("a file");
                    match opts.tls_certs.last_mut() {
                        Some((_, slot @ None)) => *slot = Some(key),
                        _ => fail(name, &format!("--tls-key {}: each key follows its --tls-cert", quoted(&key))),
                    }
                }
                "--tls-alpn" => {
                    let list = value("a list");
                    opts.tls_alpn = list.split(',').map(str::to_owned).collect();
                    if opts.tls_alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
                        fail(name, &format!("--tls-alpn {}: each protocol is 1 to 255 bytes, separated by commas", quoted(&list)));
                    }
                }
                "--tls-client-ca" => opts.tls_client_ca = Some(value("a file")),
                "--tls-handshake-threads" => {
                    let text = value("a number");
                    let threads = text.parse().unwrap_or_else(|_| {
                        fail(name, &format!("--tls-handshake-threads {}: expected a whole number (0: none, the loop does the handshakes)", quoted(&text)))
                    });
                    opts.tls_handshake_threads = Some(threads);
                }
                "--tls-handshake-timeout" => {
                    opts.tls_handshake_timeout = Some(seconds(name, &arg, &value("seconds"), TIMEOUT_RANGE));
                }
                "--fd-store" => opts.fd_store = true,
                "--drain-timeout" => {
                    opts.drain_timeout = Some(seconds(name, &arg, &value("seconds"), TIMEOUT_RANGE));
                }
                "--proxy-from" => {
                    let v = value("networks, as 10.0.0.0/8,::1");
                    let nets: Result<Vec<dualstack::Cidr>, _> =
                        v.split(',').map(|n| n.trim().parse()).collect();
                    opts.proxy_from = Some(nets.unwrap_or_else(|e| {
                        fail(name, &format!("--proxy-from {}: {e}", quoted(&v)))
                    }));
                }
                "--unix-mode" => {
                    let v = value("an octal mode, as 660");
                    // Octal digits only: from_str_radix would take a sign ("+777").
                    let digits = !v.is_empty() && v.bytes().all(|b| (b'0'..=b'7').contains(&b));
                    opts.unix_mode = Some(
                        u32::from_str_radix(&v, 8)
                            .ok()
                            .filter(|m| digits && *m <= 0o777)
                            .unwrap_or_else(|| {
                                fail(
                                    name,
                                    &format!("--unix-mode {}: expected an octal mode from 0 to 777, as 660", quoted(&v)),
                                )
                            }),
                    );
                }
                flag if extra.iter().any(|(e, _)| *e == flag) => {
                    let v = value("a value");
                    opts.extra.push((flag.to_owned(), v));
                }
                flag if flag.starts_with('-') && flag.len() > 1 && !flag.starts_with("-[") => {
                    fail(name, &format!("unknown option {}; see --help (a spec that begins with \"-\" goes after --)", quoted(flag)))
                }
                spec => opts.specs.push(spec.to_owned()),
            }
        }
        if opts.specs.is_empty() {
            opts.specs.push(default_spec.to_owned());
        }
        if opts.unix_mode.is_some()
            && !opts.specs.iter().any(|s| {
                s.parse::<dualstack::ListenSpec>()
                    .is_ok_and(|spec| matches!(spec.kind(), dualstack::SpecKind::Unix(_)))
            })
        {
            // Silently ignored otherwise: an inherited socket's mode is its launcher's
            // (systemd's SocketMode=), and TCP and abstract sockets have none.
            fail(
                name,
                "--unix-mode sets the mode of the socket files this server makes, and no spec makes one (give a unix:PATH spec; an inherited socket's mode is set by whoever made it, as systemd's SocketMode=)",
            );
        }
        if let Some((cert, None)) = opts.tls_certs.last() {
            fail(
                name,
                &format!("--tls-cert {}: give its key with --tls-key", quoted(cert)),
            );
        }
        if opts.tls_certs.is_empty()
            && (!opts.tls_alpn.is_empty()
                || opts.tls_client_ca.is_some()
                || opts.tls_handshake_timeout.is_some()
                || opts.tls_handshake_threads.is_some())
        {
            fail(name, "--tls-alpn, --tls-client-ca and --tls-handshake-timeout/-threads set up TLS, and mean nothing without --tls-cert and --tls-key");
        }
        if opts.proxy_from.is_some() && !opts.proxy {
            fail(
                name,
                "--proxy-from names trusted balancers, and means nothing without --proxy-protocol",
            );
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
        let mut listen = ListenConfig::new().family(self.family);
        if self.separate_stacks {
            listen = listen.wildcard_stack(WildcardStack::Separate);
        }
        if let Some(mode) = self.unix_mode {
            listen = listen.unix_mode(mode);
        }
        let mut builder = Server::builder().listen_config(listen);
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
        if let Some(on) = self.nodelay {
            builder = builder.nodelay(on);
        }
        if let Some(bytes) = self.read_budget {
            builder = builder.read_budget(bytes);
        }
        if let Some(threads) = self.tls_handshake_threads {
            builder = builder.tls_handshake_threads(threads);
        }
        let proxy = self.proxy.then(|| {
            let p = dualstack::ProxyProtocol::new();
            match &self.proxy_from {
                Some(nets) => p.trust(nets.iter().copied()),
                None => p,
            }
        });
        let tls = (!self.tls_certs.is_empty()).then(|| {
            self.tls_config()
                .unwrap_or_else(|e| fail(NAME.get().copied().unwrap_or("server"), &e.to_string()))
        });
        for spec in &self.specs {
            builder = match (&proxy, &tls) {
                (Some(p), Some(t)) => {
                    builder.listen_proxied_tls(spec.as_str(), p.clone(), t.clone())
                }
                (Some(p), None) => builder.listen_proxied(spec.as_str(), p.clone()),
                (None, Some(t)) => builder.listen_tls(spec.as_str(), t.clone()),
                (None, None) => builder.listen(spec.as_str()),
            };
        }
        builder
    }

    /// The TLS configuration the options describe, its files read now.
    pub fn tls_config(&self) -> Result<dualstack::TlsConfig, dualstack::TlsError> {
        let mut tls = dualstack::TlsConfig::new().alpn(&self.tls_alpn);
        for (cert, key) in &self.tls_certs {
            tls = tls.cert_files(cert, key.as_deref().unwrap_or_default())?;
        }
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_file(ca)?;
        }
        if let Some(timeout) = self.tls_handshake_timeout {
            tls = tls.handshake_timeout(timeout);
        }
        Ok(tls)
    }
}

/// `text` in double quotes, its first 64 characters only if it is longer (with its length),
/// so that a mistake's message stays one readable line whatever was passed.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// One line on stderr, exit status 2: the contract for bad input.
pub fn fail(name: &str, message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "{name}: {message}");
    std::process::exit(2)
}

/// A whole number above 0, or one line and exit 2.
pub fn count(name: &str, option: &str, text: &str) -> usize {
    text.parse()
        .ok()
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| {
            fail(
                name,
                &format!(
                    "{option} {}: expected a whole number from 1 to {}",
                    quoted(text),
                    usize::MAX
                ),
            )
        })
}

/// A number of seconds within `range`, or one line and exit 2.
pub fn seconds(name: &str, option: &str, text: &str, (min, max): (f64, f64)) -> Duration {
    text.parse::<f64>()
        .ok()
        .filter(|s| (min..=max).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or_else(|| {
            fail(
                name,
                &format!(
                    "{option} {}: expected a number of seconds from {min} to {max}",
                    quoted(text)
                ),
            )
        })
}

/// Writes `text` to stdout and flushes, or ends the program with one line on stderr (a
/// closed pipe is not a reason to panic).
pub fn print_or_fail(name: &str, text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        let _ = writeln!(std::io::stderr(), "{name}: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Logs to stderr, as RUST_LOG says: a default level and `TARGET=LEVEL` directives,
/// separated by commas (`warn,dualstack=debug`); default info. A directive it cannot read is
/// reported on stderr, not ignored in silence.
pub fn init_logging() {
    let mut logger = simple_logger::SimpleLogger::new().with_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let (target, level) = match directive.split_once('=') {
                Some((target, level)) => (Some(target.trim()), level.trim()),
                None => (None, directive),
            };
            match (target, level.parse::<log::LevelFilter>()) {
                (None, Ok(level)) => logger = logger.with_level(level),
                (Some(target), Ok(level)) if !target.is_empty() => {
                    logger = logger.with_module_level(target, level)
                }
                _ => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "RUST_LOG: ignoring {directive:?}: expected LEVEL or TARGET=LEVEL, LEVEL one of off, error, warn, info, debug, trace"
                    );
                }
            }
        }
    }
    log::set_max_level(logger.max_level());
    log::set_boxed_logger(Box::new(Quiet(logger))).expect("the logger is set once");
}

/// simple_logger writes with `eprintln!`, which panics when stderr is gone (a closed pipe):
/// a log line that cannot be written must not take the server, or a signal's stop, down
/// with it. The line is dropped instead.
struct Quiet(simple_logger::SimpleLogger);

impl log::Log for Quiet {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.log(record)));
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// The examples' server, from bind to stop: binds (or exits with status 2), stops on
/// SIGINT/SIGTERM, rereads the TLS certificates on SIGHUP, hands over on SIGUSR2, announces
/// where it listens, gives the sockets to the service manager with `--fd-store`, and runs
/// until stopped (exit 1 if the loop fails).
pub fn serve<H: Handler>(
    name: &str,
    signals: &dualstack::signals::Signals,
    opts: &Options,
    builder: ServerBuilder,
    handler: H,
) {
    let mut server = bind(name, builder, handler);
    stop_on_signals(name, signals, &server);
    reload_tls_on_hangup(name, signals, opts, &server);
    hand_over_on_usr2(name, signals, opts, &server);
    announce(name, &server);
    store_listeners(opts, &server);
    if let Err(e) = server.run() {
        log::error!("the server loop failed: {e}");
        std::process::exit(1);
    }
}

/// Binds, or exits with status 2 and one line naming the spec and the reason.
pub fn bind<H: Handler>(name: &str, builder: ServerBuilder, handler: H) -> Server<H> {
    builder
        .bind(handler)
        .unwrap_or_else(|e| fail(name, &e.to_string()))
}

/// Prints `listening on ADDR (MODE)` for each socket, flushes stdout, tells a service
/// manager that waits for it (`NOTIFY_SOCKET`: `READY=1` and the same lines as `STATUS=`),
/// and logs how to connect.
pub fn announce<H: Handler>(name: &str, server: &Server<H>) {
    let mut text = String::new();
    for l in server.listeners() {
        text.push_str(&format!("listening on {l}\n"));
    }
    if dualstack::predecessor().is_some() {
        // A successor of a hand-over writes to its predecessor's stdout, which whoever
        // started that one may have closed long ago: no reason to fail the hand-over.
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            log::warn!("cannot write the listening lines to stdout: {e}");
        }
    } else {
        print_or_fail(name, &text);
    }
    let status = text.trim_end().replace('\n', "; ");
    if let Err(e) = dualstack::notify(&format!("READY=1\nSTATUS={status}")) {
        log::warn!("cannot tell the service manager it is ready: {e}");
    }
    for l in server.listeners() {
        log::info!("try: {}", hint(&l));
    }
}

/// `word` as one shell word: as it is when it holds nothing a shell treats specially,
/// else in single quotes.
fn shell_word(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// How to reach listener `l` with a client nobody here wrote.
fn hint(l: &dualstack::ListenerInfo) -> String {
    use dualstack::{ListenAddr, SocketMode, UnixAddr};
    let ip = match &l.local_addr {
        ListenAddr::Unix(UnixAddr::Path(p)) => {
            return format!(
                "socat - {}",
                shell_word(&format!("UNIX-CONNECT:{}", p.display()))
            )
        }
        ListenAddr::Unix(UnixAddr::Abstract(n)) => {
            return format!(
                "socat - {}",
                shell_word(&format!("ABSTRACT-CONNECT:{}", String::from_utf8_lossy(n)))
            )
        }
        ListenAddr::Ip(ip) => *ip,
        _ => return l.local_addr.to_string(),
    };
    let port = ip.port();
    // The host as nc takes it: the display form without brackets, zone included.
    let shown = display_addr(ip).to_string();
    let host = shown
        .rsplit_once(':')
        .map_or(shown.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let unspecified = ip.ip().is_unspecified();
    if l.tls {
        let target = match l.mode {
            SocketMode::Ipv4 if unspecified => format!("127.0.0.1:{port}"),
            SocketMode::Ipv6Only | SocketMode::DualStack if unspecified => format!("[::1]:{port}"),
            _ => shown.clone(),
        };
        return format!("openssl s_client -quiet -connect {target}");
    }
    match l.mode {
        SocketMode::Ipv4 if unspecified => format!("nc -4 127.0.0.1 {port}"),
        SocketMode::Ipv4 => format!("nc -4 {host} {port}"),
        SocketMode::Ipv6Only if unspecified => format!("nc -6 ::1 {port}"),
        SocketMode::Ipv6Only => format!("nc -6 {host} {port}"),
        SocketMode::DualStack => format!("nc -4 127.0.0.1 {port}  or  nc -6 ::1 {port}"),
        _ => format!("nc {host} {port}"),
    }
}

/// Catches SIGINT and SIGTERM from now on (the library's `signals` feature): call it first,
/// before parsing, resolving or binding. One line and exit 2 if it cannot.
pub fn signals(name: &str) -> dualstack::signals::Signals {
    dualstack::signals::Signals::install()
        .unwrap_or_else(|e| fail(name, &format!("cannot catch signals: {e}")))
}

/// From now on a signal stops `server` gracefully (a second one ends the process).
pub fn stop_on_signals<H: Handler>(
    name: &str,
    signals: &dualstack::signals::Signals,
    server: &Server<H>,
) {
    signals
        .stop(server)
        .unwrap_or_else(|e| fail(name, &format!("cannot catch signals: {e}")));
}

/// With `--fd-store`, gives the service manager the listening sockets to keep across
/// restarts (after READY=1, which `announce` sent).
fn store_listeners<H: Handler>(opts: &Options, server: &Server<H>) {
    if !opts.fd_store {
        return;
    }
    match server.store_listeners() {
        Ok(n) => log::info!("{n} listening sockets given to the service manager to keep"),
        Err(e) => log::warn!("cannot give the service manager the listening sockets: {e}"),
    }
}

/// SIGUSR2 hands the listening sockets to this program started again (the binary on disk
/// now, the same arguments), which says READY=1 through `announce`; this process then
/// drains and `run` returns. Unix only.
fn hand_over_on_usr2<H: Handler>(
    name: &str,
    signals: &dualstack::signals::Signals,
    opts: &Options,
    server: &Server<H>,
) {
    let mut how = dualstack::HandOver::new();
    if let Some(drain) = opts.drain_timeout {
        how = how.drain_timeout(drain);
    }
    signals
        .hand_over_on_usr2(server, how)
        .unwrap_or_else(|e| fail(name, &format!("cannot catch SIGUSR2: {e}")));
}

/// With TLS options, SIGHUP reads the certificate files again and hands them to `server`
/// (a file that does not work is logged, and the running certificates stay). Unix only.
fn reload_tls_on_hangup<H: Handler>(
    name: &str,
    signals: &dualstack::signals::Signals,
    opts: &Options,
    server: &Server<H>,
) {
    if opts.tls_certs.is_empty() {
        return;
    }
    let handle = server.handle();
    let opts = opts.clone();
    signals
        .on_hangup(
            move || match opts.tls_config().and_then(|tls| handle.reload_tls(&tls)) {
                Ok(()) => log::info!("SIGHUP: TLS certificates read again"),
                Err(e) => log::warn!("SIGHUP: {e}; the running certificates stay"),
            },
        )
        .unwrap_or_else(|e| fail(name, &format!("cannot catch SIGHUP: {e}")));
}
