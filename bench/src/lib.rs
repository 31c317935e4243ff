//! What the benchmark binaries share: the reference servers' start-up, the byte pattern
//! clients send and verify, readers of /proc, and a flat JSON writer and reader (numbers and
//! strings only).

pub mod kv;
pub mod mixed;
pub mod order;
pub mod perf;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A reference server's start-up: binds the specs given as arguments with
/// `dualstack::bind` (so only the loop differs from the echo example) and prints the same
/// `listening on` lines the runner reads; exits 2 with one line on stderr if binding fails.
pub fn bind_from_args(program: &str) -> Vec<dualstack::Listener> {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    let bound = dualstack::ListenConfig::new()
        .bind_all(&specs)
        .unwrap_or_else(|e| {
            eprintln!("{program}: {e}");
            std::process::exit(2)
        });
    let listeners = bound.into_parts().0;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for l in &listeners {
        let _ = writeln!(out, "listening on {l}");
    }
    let _ = out.flush();
    listeners
}

/// The socket options the echo example's connections get from the library's defaults, set
/// on a reference server's listener (accepted sockets inherit them): `SO_OOBINLINE`, and
/// `TCP_NODELAY` as the library's default has it.
pub fn reference_options(listener: &mio::net::TcpListener) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    socket.set_out_of_band_inline(true)?;
    socket.set_tcp_nodelay(NODELAY)?;
    Ok(())
}

/// The listeners of `bind_from_args`, as the tokio references take them: TCP only, with the
/// reference socket options, as std listeners for `tokio::net::TcpListener::from_std`.
///
/// # Errors
///
/// A Unix-domain spec (the tokio references speak TCP only), or an option that cannot be
/// set.
pub fn std_tcp_listeners(program: &str) -> std::io::Result<Vec<std::net::TcpListener>> {
    bind_from_args(program)
        .into_iter()
        .map(|l| {
            let l = l.into_tcp().map_err(|l| {
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!("{l}: TCP only here"),
                )
            })?;
            reference_options(&l)?;
            Ok(l.into())
        })
        .collect()
}

/// Where the load generator connects: an IP socket address, or `unix:PATH`.
#[derive(Clone, Debug)]
pub enum Target {
    /// A TCP server.
    Ip(std::net::SocketAddr),
    /// A Unix-domain stream socket at this path.
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Target::Unix(path.into())),
            Some(_) => Err("unix: needs a path".into()),
            None => s
                .parse()
                .map(Target::Ip)
                .map_err(|_| format!("{s:?} is neither an IP socket address nor unix:PATH")),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(a) => a.fmt(f),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A client connection over TCP or a Unix-domain socket.
pub enum Stream {
    /// Over TCP.
    Tcp(mio::net::TcpStream),
    /// Over a Unix-domain socket.
    Unix(mio::net::UnixStream),
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl mio::event::Source for Stream {
    fn register(
        &mut self,
        r: &mio::Registry,
        t: mio::Token,
        i: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(
        &mut self,
        r: &mio::Registry,
        t: mio::Token,
        i: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &mio::Registry) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// A non-blocking client connection to `target` (see [`client`] for TCP).
pub fn connect(target: &Target, buffers: Option<usize>) -> std::io::Result<Stream> {
    match target {
        Target::Ip(addr) => client(*addr, buffers).map(Stream::Tcp),
        Target::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            if let Some(size) = buffers {
                let socket = socket2::SockRef::from(&stream);
                socket.set_send_buffer_size(size)?;
                socket.set_recv_buffer_size(size)?;
            }
            stream.set_nonblocking(true)?;
            Ok(Stream::Unix(mio::net::UnixStream::from_std(stream)))
        }
    }
}

/// A non-blocking client connection to `addr` (the connect completes later, as with
/// `mio::net::TcpStream::connect`), with fixed socket buffers if `buffers` is given.
pub fn client(
    addr: std::net::SocketAddr,
    buffers: Option<usize>,
) -> std::io::Result<mio::net::TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(size) = buffers {
        socket.set_send_buffer_size(size)?;
        socket.set_recv_buffer_size(size)?;
    }
    set_client_congestion(&socket);
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// The congestion control of the load generator's own sockets: `cubic` unless
/// `LOADGEN_CC` names another (`system` keeps the system's default).
///
/// Why not the system's default: where it is BBR without the `fq` qdisc (as on this
/// machine), TCP paces every send itself with high-resolution timers, and on a VM each
/// timer costs the sender dearly. With BBR on its sockets the load generator spent most of
/// its CPU arming pacing timers and capped `bulk` at about 1.1 GB/s whatever the server;
/// with cubic it sends as fast as the server takes (3 GB/s and more). The servers' sockets
/// keep the system's default: that cost is theirs to pay, equally.
fn set_client_congestion(socket: &socket2::Socket) {
    #[cfg(target_os = "linux")]
    {
        let cc = std::env::var("LOADGEN_CC").unwrap_or_else(|_| "cubic".to_owned());
        if cc != "system" {
            // Where the kernel lacks it, the default stays; nothing else depends on it.
            let _ = socket.set_tcp_congestion(cc.as_bytes());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// The library's default for `TCP_NODELAY` (`ServerBuilder::nodelay`).
pub const NODELAY: bool = true;

pub use dualstack_support::{cpu_ticks, cpu_time, rss, Pattern, RssSampler};

/// A flat JSON object of numbers and strings, written in insertion order.
#[derive(Default)]
pub struct Json(String);

impl Json {
    pub fn num(mut self, key: &str, value: f64) -> Json {
        self.sep();
        let _ = write!(
            self.0,
            "\"{key}\":{}",
            if value.fract() == 0.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.3}")
            }
        );
        self
    }

    pub fn text(mut self, key: &str, value: &str) -> Json {
        self.sep();
        let _ = write!(self.0, "\"{key}\":\"{value}\"");
        self
    }

    fn sep(&mut self) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
    }

    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// Reads the numbers of a flat JSON object written by [`Json`].
pub fn parse_numbers(json: &str) -> BTreeMap<String, f64> {
    json.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once(':')?;
            Some((
                k.trim().trim_matches('"').to_owned(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// The median of the finite values (the upper of the middle two where their count is even;
/// NaN where there are none): how the runner and tls_bench sum up their runs.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|x| x.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Percentile `p` (0 to 100) of sorted values.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference servers must get the options the library gives its own connections.
    #[test]
    fn reference_nodelay_is_the_library_default() {
        let builder = format!("{:?}", dualstack::Server::builder());
        assert!(
            builder.contains(&format!("nodelay: {NODELAY}")),
            "the library's default differs from NODELAY: {builder}"
        );
    }

    #[test]
    fn json_round_trips_numbers() {
        let j = Json::default()
            .text("mode", "echo")
            .num("rt_per_s", 1234.5)
            .num("n", 7.0)
            .finish();
        assert_eq!(j, r#"{"mode":"echo","rt_per_s":1234.500,"n":7}"#);
        let m = parse_numbers(&j);
        assert_eq!(m["rt_per_s"], 1234.5);
        assert_eq!(m["n"], 7.0);
    }
}
