//! The per-peer connection limit ([`PeerCounts`]): how many connections each peer has open,
//! where a peer is an IPv4 address, an IPv6 prefix, or the IPv4 host an IPv6 address
//! embeds ([`peer_key`]). Pure: tested without sockets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::socket::Peer;

/// Open connections per peer, when a limit is set.
///
/// # Invariant
///
/// `counts` holds exactly the peers with at least one admitted, unreleased connection.
#[derive(Debug)]
pub(crate) struct PeerCounts {
    max: Option<usize>,
    ipv6_prefix: u8,
    counts: HashMap<Key, usize>,
}

/// The group a peer is counted in: an IP address or prefix ([`peer_key`]), or a Unix-domain
/// peer's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Uid(u32),
}

impl PeerCounts {
    fn key(&self, peer: &Peer) -> Key {
        match peer {
            Peer::Ip(addr) => Key::Ip(peer_key(addr.ip(), self.ipv6_prefix)),
            Peer::Unix(unix) => Key::Uid(unix.uid),
        }
    }

    /// At most `max` connections per peer (`None`: no limit, nothing counted); IPv6 peers
    /// grouped by their first `ipv6_prefix` bits.
    pub(crate) fn new(max: Option<usize>, ipv6_prefix: u8) -> PeerCounts {
        PeerCounts {
            max,
            ipv6_prefix,
            counts: HashMap::new(),
        }
    }

    /// A connection from `peer` is accepted: counts it and returns `true`, or returns
    /// `false` if its group already has its share (and counts nothing).
    pub(crate) fn admit(&mut self, peer: &Peer) -> bool {
        let Some(max) = self.max else { return true };
        let key = self.key(peer);
        let count = self.counts.entry(key).or_insert(0);
        if *count >= max {
            // Never a fresh entry: `max` is at least 1 (Limits::validate).
            return false;
        }
        *count += 1;
        true
    }

    /// An admitted connection from `peer` closed.
    pub(crate) fn release(&mut self, peer: &Peer) {
        if self.max.is_none() {
            return;
        }
        let key = self.key(peer);
        if let Some(count) = self.counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.counts.len()
    }
}

/// The group a peer address is counted in for the per-peer limit: an IPv4 address, or the
/// IPv6 prefix of `prefix` bits (a /64 is what one host or site usually gets).
///
/// An IPv6 address that carries an IPv4 one counts as that IPv4 address, since that is the
/// host behind it: NAT64 and SIIT prefixes (`64:ff9b::/96`, RFC 6052, and the local-use
/// `64:ff9b:1::/48`, RFC 8215, in its /96 form), 6to4 (`2002::/16`, RFC 3056) and Teredo
/// (`2001::/32`, RFC 4380, the client's public address). Otherwise two IPv4 hosts behind
/// one translator would share one /64 and one share.
pub(crate) fn peer_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_ipv4(a) {
                return IpAddr::V4(v4);
            }
            IpAddr::V6(crate::addr::mask(u128::from(a), prefix).into())
        }
    }
}

/// The IPv4 address an IPv6 address embeds by a well-known translation or tunnelling
/// scheme (see [`peer_key`]).
fn embedded_ipv4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(a);
    let seg = a.segments();
    let low32 = Ipv4Addr::from(bits as u32);
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low32); // 64:ff9b::/96
    }
    if seg[..3] == [0x0064, 0xff9b, 0x0001] && seg[3..6] == [0, 0, 0] {
        return Some(low32); // 64:ff9b:1::/48, /96 form
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32)); // 6to4: bits 16..48
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        return Some(Ipv4Addr::from(!(bits as u32))); // Teredo: the client, inverted
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::UnixPeer;
    use std::net::SocketAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(s: &str) -> Peer {
        Peer::Ip(SocketAddr::new(ip(s), 4242))
    }

    #[test]
    fn each_peer_gets_its_share_and_gets_it_back() {
        let mut p = PeerCounts::new(Some(2), 64);
        assert!(p.admit(&peer("192.0.2.1")));
        assert!(p.admit(&peer("192.0.2.1")));
        assert!(
            !p.admit(&peer("192.0.2.1")),
            "a third connection from one address"
        );
        assert!(
            p.admit(&peer("192.0.2.2")),
            "another address is not affected"
        );
        p.release(&peer("192.0.2.1"));
        assert!(
            p.admit(&peer("192.0.2.1")),
            "a closed connection gives its slot back"
        );
        p.release(&peer("192.0.2.1"));
        p.release(&peer("192.0.2.1"));
        p.release(&peer("192.0.2.2"));
        assert_eq!(p.peers(), 0, "peers with nothing open are forgotten");
    }

    #[test]
    fn a_unix_peer_is_counted_by_its_user() {
        let mut p = PeerCounts::new(Some(1), 64);
        let unix = |uid, pid| {
            Peer::Unix(UnixPeer {
                uid,
                gid: 0,
                pid: Some(pid),
            })
        };
        assert!(p.admit(&unix(1000, 1)));
        assert!(
            !p.admit(&unix(1000, 2)),
            "a second process of the same user"
        );
        assert!(p.admit(&unix(1001, 3)), "another user is not affected");
    }

    #[test]
    fn an_ipv6_site_is_one_peer_and_no_limit_counts_nothing() {
        let mut p = PeerCounts::new(Some(1), 64);
        assert!(p.admit(&peer("2001:db8:1:2::1")));
        assert!(!p.admit(&peer("2001:db8:1:2:ffff::9")), "same /64");
        assert!(p.admit(&peer("2001:db8:1:3::1")), "another /64");
        let mut none = PeerCounts::new(None, 64);
        for _ in 0..1000 {
            assert!(none.admit(&peer("192.0.2.1")));
        }
        assert_eq!(none.peers(), 0);
    }

    #[test]
    fn ipv6_peers_are_counted_per_prefix_and_ipv4_per_address() {
        assert_eq!(
            peer_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            peer_key(ip("2001:db8:1:2:bbbb::9"), 64),
            peer_key(ip("2001:db8:1:2::7"), 64)
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:3::1"), 64),
            peer_key(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(peer_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(peer_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(peer_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
    }

    /// Issue #13, item 4: clients from 64:ff9b::1.2.3.4 and 64:ff9b::5.6.7.8 (different
    /// IPv4 hosts behind NAT64) shared one /64 key, so the second was refused.
    #[test]
    fn ipv6_addresses_that_embed_ipv4_count_as_that_ipv4_host() {
        for (v6, v4) in [
            ("64:ff9b::1.2.3.4", "1.2.3.4"),
            ("64:ff9b::5.6.7.8", "5.6.7.8"),
            ("64:ff9b:1::1.2.3.4", "1.2.3.4"),
            ("2002:c000:0207::1", "192.0.2.7"),
            ("2002:c000:0207:ffff::2", "192.0.2.7"),
            // Teredo: server 65.54.227.120, client 192.0.2.45 obfuscated (RFC 4380 §4).
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),
        ] {
            assert_eq!(peer_key(ip(v6), 64), ip(v4), "{v6}");
        }
        let mut p = PeerCounts::new(Some(1), 64);
        assert!(p.admit(&peer("64:ff9b::1.2.3.4")));
        assert!(
            p.admit(&peer("64:ff9b::5.6.7.8")),
            "another IPv4 host behind NAT64"
        );
        assert!(!p.admit(&peer("1.2.3.4")), "the same host, directly");
        // Not a translation prefix: counted by /64 as before.
        assert_eq!(peer_key(ip("64:ff9b:2::1.2.3.4"), 64), ip("64:ff9b:2::"));
        assert_eq!(peer_key(ip("2001:db8::1"), 64), ip("2001:db8::"));
    }
}
