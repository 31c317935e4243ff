//! Peer and local addresses as an application should see them.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::Zone;
use crate::sys;

/// Normalizes a socket address the way an application expects to see it.
///
/// - An IPv4-mapped IPv6 address (`[::ffff:a.b.c.d]:p`, RFC 4291 §2.5.5.2), which is what a
///   dual-stack socket reports for an IPv4 peer, becomes the IPv4 address `a.b.c.d:p`.
/// - IPv6 flow info is cleared: it describes one packet flow, not the peer.
/// - The scope id is kept only where it means something (link-local unicast `fe80::/10`
///   and multicast `ff00::/8`, RFC 4007) and cleared elsewhere.
/// - IPv4 addresses are returned unchanged, and so is the deprecated IPv4-compatible form
///   `::a.b.c.d` (RFC 4291 §2.5.5.1): converting it would turn `::1` into `0.0.0.1`.
///
/// `normalize` is idempotent: `normalize(normalize(a)) == normalize(a)`.
///
/// ```
/// use dualstack::normalize;
/// use std::net::SocketAddr;
///
/// let peer: SocketAddr = "[::ffff:127.0.0.1]:4242".parse()?;
/// assert_eq!(normalize(peer).to_string(), "127.0.0.1:4242");
///
/// let loopback: SocketAddr = "[::1]:80".parse()?;
/// assert_eq!(normalize(loopback), loopback);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => addr,
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => {
                let scope = if is_scoped(a.ip()) { a.scope_id() } else { 0 };
                SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, scope))
            }
        },
    }
}

/// Whether a scope id means something for `ip`: link-local unicast or multicast.
pub(crate) fn is_scoped(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    first & 0xffc0 == 0xfe80 || first & 0xff00 == 0xff00
}

/// Formats a socket address for logs and user interfaces, normalized first.
///
/// `127.0.0.1:80`, `[::1]:80`, and `[fe80::1%eth0]:80` for a scoped address, with the
/// interface name where the index still names an interface and the number otherwise (or
/// where the name would read back as something else: see [`Zone::for_interface`]). The
/// output parses back as a [`ListenSpec`](crate::ListenSpec) naming the same interface.
/// This looks up an interface name for scoped addresses only (one local call, no network).
///
/// ```
/// use dualstack::display_addr;
/// use std::net::SocketAddr;
///
/// let addr: SocketAddr = "[::ffff:10.0.0.1]:80".parse()?;
/// assert_eq!(display_addr(addr).to_string(), "10.0.0.1:80");
/// let addr: SocketAddr = "[fe80::1%4000000000]:80".parse()?; // no such interface
/// assert_eq!(display_addr(addr).to_string(), "[fe80::1%4000000000]:80");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn display_addr(addr: SocketAddr) -> DisplayAddr {
    DisplayAddr(normalize(addr))
}

/// A normalized socket address that formats as [`display_addr`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DisplayAddr(SocketAddr);

impl DisplayAddr {
    /// The normalized address.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }
}

impl fmt::Display for DisplayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(a) => write!(f, "{a}"),
            SocketAddr::V6(a) if a.scope_id() == 0 => write!(f, "[{}]:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => {
                let name = sys::interface_name(a.scope_id());
                match Zone::for_interface(a.scope_id(), name.as_deref()) {
                    Some(zone) => write!(f, "[{}%{}]:{}", a.ip(), zone, a.port()),
                    None => write!(f, "[{}]:{}", a.ip(), a.port()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, normalized) pairs; every output is also checked to be a fixed point.
    const CASES: &[(&str, &str)] = &[
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("0.0.0.0:0", "0.0.0.0:0"),
        ("[::ffff:127.0.0.1]:4242", "127.0.0.1:4242"),
        ("[::ffff:0.0.0.0]:1", "0.0.0.0:1"),
        ("[::ffff:255.255.255.255]:65535", "255.255.255.255:65535"),
        // IPv4-compatible (deprecated) addresses are not converted.
        ("[::1]:80", "[::1]:80"),
        ("[::]:80", "[::]:80"),
        ("[::1.2.3.4]:80", "[::102:304]:80"),
        // Scope kept on link-local unicast and on multicast, dropped elsewhere.
        ("[fe80::1%3]:80", "[fe80::1%3]:80"),
        ("[febf::1%3]:80", "[febf::1%3]:80"),
        ("[fec0::1%3]:80", "[fec0::1]:80"),
        ("[ff02::1%3]:80", "[ff02::1%3]:80"),
        ("[ff0e::1%3]:80", "[ff0e::1%3]:80"),
        ("[::1%3]:80", "[::1]:80"),
        ("[2001:db8::1%7]:80", "[2001:db8::1]:80"),
    ];

    #[test]
    fn normalize_table() {
        for (input, expected) in CASES {
            let addr: SocketAddr = input.parse().unwrap();
            let expected: SocketAddr = expected.parse().unwrap();
            let got = normalize(addr);
            assert_eq!(got, expected, "normalize({input})");
            assert_eq!(
                normalize(got),
                got,
                "normalize is not idempotent on {input}"
            );
        }
    }

    #[test]
    fn normalize_clears_flowinfo_and_keeps_meaningful_scope() {
        let a = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            80,
            0xabcde,
            9,
        ));
        match normalize(a) {
            SocketAddr::V6(n) => {
                assert_eq!(n.flowinfo(), 0);
                assert_eq!(n.scope_id(), 9);
            }
            other => panic!("fe80::1 became {other}"),
        }
        let mapped = SocketAddr::V6(SocketAddrV6::new(
            "::ffff:1.2.3.4".parse().unwrap(),
            9,
            77,
            5,
        ));
        assert_eq!(
            normalize(mapped),
            "1.2.3.4:9".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn display_addr_forms() {
        let cases = [
            ("[::ffff:127.0.0.1]:80", "127.0.0.1:80"),
            ("[::1]:80", "[::1]:80"),
            ("[::]:7000", "[::]:7000"),
            ("[2001:db8::1%5]:80", "[2001:db8::1]:80"),
        ];
        for (input, expected) in cases {
            let addr: SocketAddr = input.parse().unwrap();
            assert_eq!(
                display_addr(addr).to_string(),
                expected,
                "display_addr({input})"
            );
        }
    }

    // Linux only: it relies on the loopback interface being "lo", index 1.
    #[cfg(target_os = "linux")]
    #[test]
    fn display_addr_names_the_interface_of_a_scoped_address() {
        // The loopback interface is called "lo" on Linux and always has index 1.
        let addr: SocketAddr = "[fe80::1%1]:80".parse().unwrap();
        assert_eq!(display_addr(addr).to_string(), "[fe80::1%lo]:80");
    }
}
