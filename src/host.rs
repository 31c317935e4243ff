//! What this host can do, found by trying ([`HostCaps::probe`]), and how names become
//! addresses ([`Resolve`], [`SystemResolver`]): the I/O the pure planner takes as inputs.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::HostName;
use crate::sys;

/// What the host's network stack can do, as the planner needs to know it.
///
/// [`HostCaps::probe`] finds out by really trying: it opens sockets, sets `IPV6_V6ONLY` and
/// binds the loopback addresses to port 0, rather than reading configuration files that may
/// not say what the kernel does. Tests build the fields by hand to describe hosts they cannot
/// be on (a kernel without IPv6, OpenBSD without dual-stack sockets, an IPv6-only host).
///
/// ```
/// let caps = dualstack::HostCaps::probe();
/// if caps.dual_stack {
///     println!("one [::] socket will serve both families here");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostCaps {
    /// The kernel makes `AF_INET` sockets.
    pub ipv4: bool,
    /// IPv6 is in service: the kernel makes `AF_INET6` sockets *and* some interface has an
    /// IPv6 address (`::1` on the loopback, or any address on another interface).
    ///
    /// Linux with `net.ipv6.conf.*.disable_ipv6=1` still makes `AF_INET6` sockets and even
    /// binds `[::]`, but has no IPv6 address at all, so no client could ever reach an IPv6
    /// socket: the probe counts that host as having no IPv6. A host with IPv6 off on its
    /// loopback only still serves IPv6 clients on its other interfaces: that is IPv6.
    pub ipv6: bool,
    /// An `AF_INET6` socket accepts `IPV6_V6ONLY=0` (and reads it back as 0) on a host that
    /// also has IPv4, so one `[::]` socket can serve both families. False on OpenBSD.
    pub dual_stack: bool,
    /// `127.0.0.1` can be bound (the IPv4 loopback address is assigned).
    pub ipv4_loopback: bool,
    /// `::1` can be bound (the IPv6 loopback address is assigned).
    pub ipv6_loopback: bool,
}

impl HostCaps {
    /// Probes this host: four sockets and two binds to port 0, closed before it returns,
    /// and where `::1` cannot be bound, the interface list (`getifaddrs(3)`).
    ///
    /// The planner calls it once per bind unless capabilities were given explicitly.
    pub fn probe() -> HostCaps {
        let ipv4_socket = tcp_socket(Domain::IPV4).is_ok();
        let ipv4_loopback = can_bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let ipv6_loopback = can_bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)));
        let ipv6 = ipv6_loopback
            || (tcp_socket(Domain::IPV6).is_ok()
                && sys::interface_addresses().is_some_and(|a| a.iter().any(IpAddr::is_ipv6)));
        let dual_stack = ipv4_socket
            && ipv6
            && tcp_socket(Domain::IPV6)
                .and_then(|s| {
                    s.set_only_v6(false)?;
                    s.only_v6()
                })
                .is_ok_and(|only_v6| !only_v6);
        let caps = HostCaps {
            ipv4: ipv4_socket,
            ipv6,
            dual_stack,
            ipv4_loopback,
            ipv6_loopback,
        };
        log::debug!("host capabilities: {caps}");
        caps
    }
}

impl fmt::Display for HostCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "IPv4 {}, IPv6 {}, dual-stack {}, 127.0.0.1 {}, ::1 {}",
            yes_no(self.ipv4),
            yes_no(self.ipv6),
            yes_no(self.dual_stack),
            yes_no(self.ipv4_loopback),
            yes_no(self.ipv6_loopback)
        )
    }
}

/// Whether this host can open one IPv6 socket that also accepts IPv4 connections, like
/// Python's `socket.has_dualstack_ipv6()`. Probes the host each time it is called.
///
/// ```
/// if dualstack::has_dual_stack_ipv6() {
///     println!("[::] with IPV6_V6ONLY=0 serves IPv4 and IPv6 here");
/// }
/// ```
pub fn has_dual_stack_ipv6() -> bool {
    HostCaps::probe().dual_stack
}

fn tcp_socket(domain: Domain) -> io::Result<Socket> {
    Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
}

fn can_bind(addr: SocketAddr) -> bool {
    let Ok(socket) = tcp_socket(Domain::for_address(addr)) else {
        return false;
    };
    if addr.is_ipv6() && socket.set_only_v6(true).is_err() {
        return false;
    }
    socket.bind(&addr.into()).is_ok()
}

/// Turns host names into addresses for the planner, and interface names into indexes.
///
/// The planner calls [`resolve`](Resolve::resolve) once per name, and never for a numeric
/// host or for `localhost` (RFC 6761 §6.3). Implement it to use your own resolver, or in tests
/// to keep them hermetic:
///
/// ```
/// use dualstack::{plan, HostCaps, HostName, PlanOptions, Resolve};
/// use std::net::IpAddr;
///
/// struct Fixed(Vec<IpAddr>);
///
/// impl Resolve for Fixed {
///     fn resolve(&self, _name: &HostName) -> std::io::Result<Vec<IpAddr>> {
///         Ok(self.0.clone())
///     }
/// }
///
/// let resolver = Fixed(vec!["192.0.2.1".parse()?, "2001:db8::1".parse()?]);
/// let p = plan(&"example.com:80".parse()?, PlanOptions::default(), &HostCaps::probe(), &resolver)?;
/// assert!(p.sockets.len() + p.skipped.len() == 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Resolve: Send + Sync {
    /// Every address `name` resolves to, in the resolver's order. Never a reverse lookup.
    ///
    /// # Errors
    ///
    /// The resolver's error; the planner reports it with the spec it was resolving.
    fn resolve(&self, name: &HostName) -> io::Result<Vec<IpAddr>>;

    /// Every address `name` resolves to, with the scope (interface index) of each link-local
    /// IPv6 answer, as socket addresses whose port means nothing. This is what the planner
    /// calls.
    ///
    /// The default calls [`resolve`](Resolve::resolve) and gives every answer scope 0, so a
    /// link-local answer is skipped for want of a zone. [`SystemResolver`] keeps whatever
    /// scope `getaddrinfo(3)` returns (name services that carry scopes give them; glibc's
    /// hosts file does not).
    ///
    /// # Errors
    ///
    /// As for [`resolve`](Resolve::resolve).
    fn resolve_scoped(&self, name: &HostName) -> io::Result<Vec<SocketAddr>> {
        Ok(self
            .resolve(name)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 0))
            .collect())
    }

    /// The index of the network interface called `name`, for `%zone` suffixes.
    ///
    /// The default asks the operating system with `if_nametoindex(3)`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when no interface has that name.
    fn interface_index(&self, name: &str) -> io::Result<u32> {
        sys::interface_index(name)
    }
}

/// The system resolver (`getaddrinfo(3)` through the standard library): one forward lookup
/// per name, no reverse lookup.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &HostName) -> io::Result<Vec<IpAddr>> {
        Ok(self
            .resolve_scoped(name)?
            .into_iter()
            .map(|a| a.ip())
            .collect())
    }

    fn resolve_scoped(&self, name: &HostName) -> io::Result<Vec<SocketAddr>> {
        // The port does not matter; std asks for stream sockets, so each address comes once.
        Ok((name.as_str(), 0).to_socket_addrs()?.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_agrees_with_a_direct_try_on_this_host() {
        let caps = HostCaps::probe();
        assert_eq!(
            caps.ipv4_loopback,
            std::net::TcpListener::bind("127.0.0.1:0").is_ok()
        );
        assert_eq!(
            caps.ipv6_loopback,
            std::net::TcpListener::bind("[::1]:0").is_ok()
        );
        assert!(!caps.dual_stack || (caps.ipv4 && caps.ipv6), "{caps}");
    }
}
