//! A connection on a PROXY listener before the handler hears of it ([`Preamble`]: the bytes
//! so far, the step taken with each read), and after ([`Proxied`]: the balancer and the
//! header). Pure: no socket.

use crate::proxy::{ProxyError, ProxyHeader, ProxyParsed, ProxyVersions};
use crate::socket::Peer;

/// A connection that came through a balancer: the balancer's address (the socket's peer)
/// and the header it sent. See [`Context::proxied`](crate::Context::proxied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// The balancer: the peer of the socket itself.
    pub balancer: Peer,
    /// The header: the client's address and where it connected, and version 2's TLVs.
    pub header: ProxyHeader,
}

/// A connection whose header is not complete yet.
#[derive(Debug)]
pub(crate) struct Preamble {
    /// The bytes received so far (at most a header and one read more).
    pub(crate) buf: Vec<u8>,
    pub(crate) versions: ProxyVersions,
}

/// What to do after bytes arrived for a [`Preamble`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wait for more.
    More,
    /// The header, and the client's data that came with it.
    Done(ProxyHeader, Vec<u8>),
    /// Not an acceptable header: close.
    Fail(ProxyError),
}

impl Preamble {
    pub(crate) fn new(versions: ProxyVersions) -> Preamble {
        Preamble {
            buf: Vec::new(),
            versions,
        }
    }

    /// Takes `bytes` just read and says what follows.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Step {
        self.buf.extend_from_slice(bytes);
        match ProxyHeader::parse(&self.buf, self.versions) {
            Ok(ProxyParsed::Incomplete) => Step::More,
            Ok(ProxyParsed::Header(header, used)) => {
                let rest = self.buf.split_off(used);
                Step::Done(header, rest)
            }
            Err(e) => Step::Fail(e),
        }
    }
}

/// The peer a proxied connection is known by: the client the header names, or the
/// balancer itself (`LOCAL`, `UNKNOWN`, a Unix client).
pub(crate) fn client_of(balancer: Peer, header: &ProxyHeader) -> Peer {
    match header.source() {
        Some(addr) => Peer::Ip(addr),
        None => balancer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyErrorKind;

    fn preamble() -> Preamble {
        Preamble::new(ProxyVersions::BOTH)
    }

    #[test]
    fn a_header_one_byte_at_a_time_then_data_in_the_same_read() {
        let header = ProxyHeader::v2(
            "192.0.2.7:40000".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
        );
        let mut bytes = header.to_bytes();
        let mut p = preamble();
        let last = bytes.pop().unwrap();
        for b in &bytes {
            assert_eq!(p.feed(&[*b]), Step::More);
        }
        assert_eq!(
            p.feed(&[last, b'h', b'i']),
            Step::Done(header, b"hi".to_vec())
        );
    }

    #[test]
    fn garbage_fails_at_once() {
        let mut p = preamble();
        match p.feed(b"GET / HTTP/1.1\r\n") {
            Step::Fail(e) => assert_eq!(e.kind(), ProxyErrorKind::NotProxy),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_client_is_the_headers_source_or_else_the_balancer() {
        let balancer = Peer::Ip("127.0.0.1:9".parse().unwrap());
        let h = ProxyHeader::v1(
            "[::ffff:203.0.113.5]:80".parse().unwrap(),
            "[::ffff:127.0.0.1]:7000".parse().unwrap(),
        );
        assert_eq!(
            client_of(balancer, &h),
            Peer::Ip("203.0.113.5:80".parse().unwrap())
        );
        assert_eq!(client_of(balancer, &ProxyHeader::local()), balancer);
    }
}
