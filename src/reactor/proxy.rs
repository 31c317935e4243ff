//! The PROXY protocol on a listener ([`ProxyProtocol`]): which balancers are trusted, which
//! versions are accepted, how long a header may take. (The pure step the reactor takes with
//! the bytes a connection sent before its header was complete is `Preamble::feed`, in
//! `crate::conn`.)
//!
//! Heads up: enabled per listener, never guessed from the bytes (the protocol forbids it:
//! a client could otherwise send a header of its own and pick its address). A connection
//! on such a listener is the reactor's until its header is complete: the handler hears of
//! it in `on_open`, with the client as the peer, or, if it never gets that far, in
//! `on_refused`.

use std::time::Duration;

use crate::addr::Cidr;
use crate::proxy::ProxyVersions;
use crate::socket::Peer;

/// The PROXY protocol settings of a listener: see
/// [`ServerBuilder::listen_proxied`](crate::ServerBuilder::listen_proxied).
///
/// ```
/// use dualstack::{Cidr, ProxyProtocol, ProxyVersions};
/// use std::time::Duration;
///
/// let behind_haproxy = ProxyProtocol::new()
///     .trust(["10.0.0.0/8".parse::<Cidr>()?, "fd00::/8".parse()?])
///     .versions(ProxyVersions { v1: false, v2: true })
///     .header_timeout(Duration::from_secs(3));
/// let _builder = dualstack::Server::builder().listen_proxied(":8443", behind_haproxy);
/// # Ok::<(), dualstack::CidrError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub(crate) versions: ProxyVersions,
    pub(crate) trusted: Vec<Cidr>,
    pub(crate) header_timeout: Duration,
}

impl Default for ProxyProtocol {
    fn default() -> ProxyProtocol {
        ProxyProtocol::new()
    }
}

impl ProxyProtocol {
    /// Both versions, balancers on the loopback addresses only (`127.0.0.0/8`, `::1`), and
    /// 5 s for the header from accept.
    pub fn new() -> ProxyProtocol {
        ProxyProtocol {
            versions: ProxyVersions::BOTH,
            trusted: Cidr::loopback().to_vec(),
            header_timeout: Duration::from_secs(5),
        }
    }

    /// The versions accepted (a listener with neither is refused when binding).
    pub fn versions(mut self, versions: ProxyVersions) -> ProxyProtocol {
        self.versions = versions;
        self
    }

    /// The networks the balancers connect from; replaces the set (an empty set is refused
    /// when binding). A TCP peer outside it is closed without a byte read: its header
    /// would be a claim anyone could make. Unix-domain peers are trusted: the socket file's
    /// permissions decide who can connect, so give a proxied Unix listener a mode only the
    /// balancer's user can connect with. An abstract socket has no permissions (anyone in
    /// the network namespace connects) and systemd's default `SocketMode=` is 0666: there,
    /// any local process could claim any client address.
    pub fn trust(mut self, networks: impl IntoIterator<Item = Cidr>) -> ProxyProtocol {
        self.trusted = networks.into_iter().collect();
        self
    }

    /// How long after accept the whole header may take (a zero timeout is refused when
    /// binding). Once the header is in, the connection's own timeouts apply from then on.
    pub fn header_timeout(mut self, timeout: Duration) -> ProxyProtocol {
        self.header_timeout = timeout;
        self
    }

    /// Refuses settings no listener could work with.
    pub(crate) fn validate(&self) -> Result<(), super::ConfigError> {
        use super::ConfigError::*;
        if !self.versions.v1 && !self.versions.v2 {
            return Err(ProxyNoVersion);
        }
        if self.trusted.is_empty() {
            return Err(ProxyTrustsNobody);
        }
        if self.header_timeout.is_zero() {
            return Err(ProxyZeroHeaderTimeout);
        }
        Ok(())
    }

    /// Whether a connection from `peer` may send a header.
    pub(crate) fn trusts(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Ip(addr) => self.trusted.iter().any(|c| c.contains(addr.ip())),
            Peer::Unix(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_no_listener_could_use_are_refused() {
        use super::super::ConfigError;
        assert_eq!(ProxyProtocol::new().validate(), Ok(()));
        let none = ProxyVersions {
            v1: false,
            v2: false,
        };
        assert_eq!(
            ProxyProtocol::new().versions(none).validate(),
            Err(ConfigError::ProxyNoVersion)
        );
        assert_eq!(
            ProxyProtocol::new().trust([]).validate(),
            Err(ConfigError::ProxyTrustsNobody)
        );
        assert_eq!(
            ProxyProtocol::new()
                .header_timeout(Duration::ZERO)
                .validate(),
            Err(ConfigError::ProxyZeroHeaderTimeout)
        );
    }

    #[test]
    fn trust_is_by_normalized_address_and_unix_peers_are_trusted() {
        let p = ProxyProtocol::new();
        let ip = |s: &str| Peer::Ip(s.parse().unwrap());
        assert!(p.trusts(&ip("127.0.0.1:1")));
        assert!(p.trusts(&ip("[::1]:1")));
        assert!(!p.trusts(&ip("192.0.2.1:1")));
        let lan = p.trust(["10.0.0.0/8".parse().unwrap()]);
        assert!(lan.trusts(&ip("10.9.9.9:1")));
        assert!(lan.trusts(&ip("[::ffff:10.9.9.9]:1")));
        assert!(
            !lan.trusts(&ip("127.0.0.1:1")),
            "the set replaces the default"
        );
        assert!(lan.trusts(&Peer::Unix(crate::socket::UnixPeer {
            uid: 1,
            gid: 1,
            pid: None
        })));
    }
}
