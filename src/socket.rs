//! The two kinds of stream socket the library serves, TCP and Unix-domain, behind one face:
//! who is at the other end ([`Peer`]), where a listener listens ([`ListenAddr`]), a
//! connection's socket (`Stream`) and a listening socket (`ListenSocket`).

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::addr::{display_addr, normalize, UnixAddr};
use crate::plan::SocketMode;

/// What a listening TCP socket bound to `local` serves, read back from the kernel: IPv4, or
/// for IPv6 whether `IPV6_V6ONLY` is set (IPv6 only) or not (both families).
///
/// # Errors
///
/// When `IPV6_V6ONLY` cannot be read.
pub(crate) fn read_mode(socket: &socket2::Socket, local: SocketAddr) -> io::Result<SocketMode> {
    Ok(if local.is_ipv4() {
        SocketMode::Ipv4
    } else if socket.only_v6()? {
        SocketMode::Ipv6Only
    } else {
        SocketMode::DualStack
    })
}

/// The options a server sets on its TCP listening sockets for the connections they accept,
/// which inherit them (Linux, the BSDs, macOS and Windows copy socket and TCP options to
/// accepted sockets), so that they cost no system call per connection:
///
/// - `SO_OOBINLINE` (RFC 6093 asks for it): TCP urgent data stays in the byte stream, in
///   order, so no byte a peer sent is left out of what the handler sees;
/// - `TCP_NODELAY` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptOptions {
    pub(crate) nodelay: bool,
}

/// What setting [`AcceptOptions`] on a listener found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Accepting {
    /// The listener's protocol refused `SO_OOBINLINE` (MPTCP: it has no urgent data of its
    /// own, but a plain TCP client falls back to a TCP connection that does, and does not
    /// inherit the option): it is set on each accepted connection instead.
    pub(crate) oob_inline_per_connection: bool,
}

/// Whether `e` says the socket's protocol has no such option (MPTCP answers EOPNOTSUPP to
/// `SO_OOBINLINE`): the option is then not needed, or not to be had, rather than broken.
pub(crate) fn unsupported_option(e: &io::Error) -> bool {
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOPROTOOPT)) {
        return true;
    }
    e.kind() == io::ErrorKind::Unsupported
}

/// Sets `options` on a TCP listening socket (`what` names it for the log), deciding per
/// option what a refusal means: `SO_OOBINLINE` refused as unsupported is set on each
/// accepted connection instead; `TCP_NODELAY` refused as unsupported leaves Nagle's
/// algorithm on, with a warning (it only makes replies wait; nothing is lost). Any other
/// failure is an error naming the option.
///
/// # Errors
///
/// The option that failed, and the OS error.
pub(crate) fn set_accept_options(
    socket: socket2::SockRef<'_>,
    options: AcceptOptions,
    what: &dyn fmt::Display,
) -> Result<Accepting, (&'static str, io::Error)> {
    let oob_inline_per_connection = match socket.set_out_of_band_inline(true) {
        Ok(()) => false,
        Err(e) if unsupported_option(&e) => {
            log::debug!("{what}: SO_OOBINLINE is set per connection ({e})");
            true
        }
        Err(e) => return Err(("set SO_OOBINLINE", e)),
    };
    match socket.set_tcp_nodelay(options.nodelay) {
        Ok(()) => {}
        Err(e) if unsupported_option(&e) => {
            log::warn!("{what}: its protocol has no TCP_NODELAY ({e}): served without it");
        }
        Err(e) => return Err(("set TCP_NODELAY", e)),
    }
    Ok(Accepting {
        oob_inline_per_connection,
    })
}

/// The peer of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// A TCP peer, normalized: an IPv4 client of a dual-stack socket shows as IPv4.
    Ip(SocketAddr),
    /// A Unix-domain peer, known by its credentials.
    Unix(UnixPeer),
}

/// The credentials of a Unix-domain peer, as the kernel reports them when it connected
/// (`SO_PEERCRED` on Linux, `getpeereid(2)` on the BSDs and macOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnixPeer {
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Its process id, where the platform says (Linux).
    pub pid: Option<u32>,
}

impl Peer {
    /// The IP address and port, for a TCP peer.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Peer::Ip(addr) => Some(*addr),
            Peer::Unix(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    /// `127.0.0.1:4242`, `[::1]:4242`, or `unix:uid=1000,pid=4242` (`unix:uid=1000` where the
    /// process id is unknown): something a person can read in a log or a chat line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => display_addr(*addr).fmt(f),
            Peer::Unix(UnixPeer {
                uid,
                pid: Some(pid),
                ..
            }) => write!(f, "unix:uid={uid},pid={pid}"),
            Peer::Unix(UnixPeer { uid, pid: None, .. }) => write!(f, "unix:uid={uid}"),
        }
    }
}

/// Where a listener listens: an IP socket address (normalized, with the real port), or a
/// Unix-domain socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// An IP socket address.
    Ip(SocketAddr),
    /// A Unix-domain socket address.
    Unix(UnixAddr),
    /// An inherited Unix-domain socket whose name means nothing outside the process that
    /// bound it (a path through `/proc/self/fd/N/`): where clients connect cannot be known
    /// from the socket. Shown as `unix:(unknown path)`.
    UnixUnknown,
}

impl ListenAddr {
    /// The IP socket address, for a TCP listener.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Ip(addr) => Some(*addr),
            ListenAddr::Unix(_) | ListenAddr::UnixUnknown => None,
        }
    }

    /// The port, for a TCP listener.
    pub fn port(&self) -> Option<u16> {
        self.ip().map(|a| a.port())
    }
}

impl fmt::Display for ListenAddr {
    /// `127.0.0.1:7000`, `[::]:7000`, `unix:/run/app.sock` or `unix:@app`: a listen spec
    /// that names the same place again (but for `unix:(unknown path)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Ip(addr) => display_addr(*addr).fmt(f),
            ListenAddr::Unix(addr) => addr.fmt(f),
            ListenAddr::UnixUnknown => f.write_str("unix:(unknown path)"),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr::Ip(addr)
    }
}

impl ToSocketAddrs for ListenAddr {
    type Iter = std::option::IntoIter<SocketAddr>;

    /// The IP socket address, so that `TcpStream::connect(listener.local_addr)` works for a
    /// TCP listener; a Unix-domain address is an `InvalidInput` error.
    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        match self {
            ListenAddr::Ip(addr) => Ok(Some(*addr).into_iter()),
            other => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{other} is a Unix-domain socket, not an IP address"),
            )),
        }
    }
}

/// A connection's socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(mio::net::TcpStream),
    #[cfg(unix)]
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub(crate) fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            #[cfg(unix)]
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            #[cfg(unix)]
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// The local IP address, for a TCP connection (one `getsockname`).
    pub(crate) fn local_ip(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(normalize),
            #[cfg(unix)]
            Stream::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix-domain connection has no IP address",
            )),
        }
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }

    /// One `writev` for several pieces (the output queue's chunks, a TLS session's records):
    /// without it, the default writes only the first piece per system call.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            #[cfg(unix)]
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            #[cfg(unix)]
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            #[cfg(unix)]
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            #[cfg(unix)]
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for Stream {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match self {
            Stream::Tcp(s) => s.as_socket(),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(mio::net::TcpListener),
    #[cfg(unix)]
    Unix(crate::unix::UnixListener),
}

impl ListenSocket {
    /// The socket file a Unix-domain listener made and owns (device and inode).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn file_id(&self) -> Option<(u64, u64)> {
        match self {
            ListenSocket::Tcp(_) => None,
            #[cfg(unix)]
            ListenSocket::Unix(l) => l.file_id(),
        }
    }

    /// Handed to a successor: a Unix-domain socket's file is no longer this process's to
    /// remove.
    pub(crate) fn disown(&mut self) {
        match self {
            ListenSocket::Tcp(_) => {}
            #[cfg(unix)]
            ListenSocket::Unix(l) => l.disown(),
        }
    }

    /// Accepts one connection: its socket and its peer, normalized.
    pub(crate) fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (s, peer) = l.accept()?;
                Ok((Stream::Tcp(s), Peer::Ip(normalize(peer))))
            }
            #[cfg(unix)]
            ListenSocket::Unix(l) => {
                let s = l.accept()?;
                let (uid, gid, pid) = crate::sys::peer_credentials(&s)?;
                let peer = UnixPeer { uid, gid, pid };
                Ok((Stream::Unix(s), Peer::Unix(peer)))
            }
        }
    }
}

impl Source for ListenSocket {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.register(r, t, i),
            #[cfg(unix)]
            ListenSocket::Unix(l) => l.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.reregister(r, t, i),
            #[cfg(unix)]
            ListenSocket::Unix(l) => l.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.deregister(r),
            #[cfg(unix)]
            ListenSocket::Unix(l) => l.deregister(r),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for ListenSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            ListenSocket::Tcp(l) => l.as_fd(),
            ListenSocket::Unix(l) => l.as_fd(),
        }
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for ListenSocket {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match self {
            ListenSocket::Tcp(l) => l.as_socket(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS echo made two `sendto`s per read: `Stream` had no `write_vectored`, so a
    /// session's records (and an output queue's chunks) left one per system call.
    #[test]
    fn a_vectored_write_takes_every_piece_in_one_call() {
        use std::io::{IoSlice, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let mut stream = Stream::Tcp(mio::net::TcpStream::from_std(client));
        let pieces = [
            IoSlice::new(b"first "),
            IoSlice::new(b"second "),
            IoSlice::new(b"third"),
        ];
        assert_eq!(stream.write_vectored(&pieces).unwrap(), 18);
        let mut got = [0; 18];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first second third");
    }

    #[test]
    fn peers_print_as_a_person_reads_them() {
        let v4: SocketAddr = "[::ffff:127.0.0.1]:4242".parse().unwrap();
        assert_eq!(Peer::Ip(crate::normalize(v4)).to_string(), "127.0.0.1:4242");
        let unix = UnixPeer {
            uid: 1000,
            gid: 1000,
            pid: Some(4242),
        };
        assert_eq!(Peer::Unix(unix).to_string(), "unix:uid=1000,pid=4242");
        assert_eq!(
            Peer::Unix(UnixPeer { pid: None, ..unix }).to_string(),
            "unix:uid=1000"
        );
    }

    // Linux only: its cases include abstract socket names, which only Linux has.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_listen_addr_prints_as_a_spec_that_parses_back() {
        for text in [
            "127.0.0.1:7000",
            "[::1]:7000",
            "unix:/run/app.sock",
            "unix:@app",
        ] {
            let spec: crate::ListenSpec = text.parse().unwrap();
            let addr = match spec.kind() {
                crate::SpecKind::Ip { .. } => ListenAddr::Ip(text.parse().unwrap()),
                crate::SpecKind::Unix(u) => ListenAddr::Unix(u.clone()),
                other => panic!("{other:?}"),
            };
            assert_eq!(addr.to_string(), text);
        }
    }
}
