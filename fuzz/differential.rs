//! The `proxy` target's differential check: our parser against the `ppp` crate (a
//! fuzz-only dependency). Where both accept, they must agree on the length, the command,
//! the addresses and the TLVs. Where they disagree, the disagreement must be one the
//! protocol's text decides (each is named below, with the rule); any other is a bug in one
//! of the two, and panics with both results.

use std::net::{IpAddr, SocketAddr};

use dualstack::{ProxyAddresses, ProxyCommand, ProxyErrorKind, ProxyHeader, ProxyParsed, ProxyVersions};
use ppp::PartialResult;

/// What `ppp` made of the bytes, reduced to what is compared.
#[derive(Debug)]
#[allow(dead_code)] // the error text is read through Debug, in a disagreement's message
enum Theirs {
    Incomplete,
    Rejected(String),
    V1 {
        len: usize,
        addresses: Option<(SocketAddr, SocketAddr)>,
    },
    V2 {
        len: usize,
        local: bool,
        datagram: bool,
        addresses: Option<(SocketAddr, SocketAddr)>,
        tlvs: Result<Vec<(u8, Vec<u8>)>, String>,
    },
}

/// A source and a destination, as both parsers' address types give them.
fn pair(
    source: impl Into<IpAddr>,
    source_port: u16,
    destination: impl Into<IpAddr>,
    destination_port: u16,
) -> Option<(SocketAddr, SocketAddr)> {
    Some((
        SocketAddr::new(source.into(), source_port),
        SocketAddr::new(destination.into(), destination_port),
    ))
}

/// Our header's TCP endpoints, as written (not normalized, as ppp leaves them).
fn raw_pair(h: &ProxyHeader) -> Option<(SocketAddr, SocketAddr)> {
    match h.addresses() {
        ProxyAddresses::Ip {
            source,
            destination,
        } => Some((*source, *destination)),
        _ => None,
    }
}

fn theirs(data: &[u8]) -> Theirs {
    match ppp::HeaderResult::parse(data) {
        r if r.is_incomplete() => Theirs::Incomplete,
        ppp::HeaderResult::V1(Ok(h)) => Theirs::V1 {
            len: h.header.len(),
            addresses: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => pair(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                ppp::v1::Addresses::Tcp6(a) => pair(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                ppp::v1::Addresses::Unknown => None,
            },
        },
        ppp::HeaderResult::V2(Ok(h)) => Theirs::V2 {
            len: h.header.len(),
            local: h.command == ppp::v2::Command::Local,
            datagram: h.protocol == ppp::v2::Protocol::Datagram,
            addresses: match h.addresses {
                ppp::v2::Addresses::IPv4(a) => pair(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                ppp::v2::Addresses::IPv6(a) => pair(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                _ => None,
            },
            tlvs: h
                .tlvs()
                .map(|t| t.map(|t| (t.kind, t.value.to_vec())).map_err(|e| e.to_string()))
                .collect(),
        },
        ppp::HeaderResult::V1(Err(e)) => Theirs::Rejected(e.to_string()),
        ppp::HeaderResult::V2(Err(e)) => Theirs::Rejected(e.to_string()),
    }
}

/// Checks `data` on both parsers; panics on a disagreement no rule explains.
pub fn against_ppp(data: &[u8]) {
    let ours = ProxyHeader::parse(data, ProxyVersions::BOTH);
    let theirs = theirs(data);
    let unexplained = || -> ! {
        panic!(
            "ours and ppp disagree on {:?}:\n  ours: {ours:?}\n  ppp:  {theirs:?}",
            data.escape_ascii().to_string()
        )
    };
    match (&ours, &theirs) {
        (Ok(ProxyParsed::Header(h, used)), Theirs::V1 { len, addresses }) => {
            if used != len {
                unexplained();
            }
            if raw_pair(h) != *addresses {
                unexplained();
            }
        }
        (
            Ok(ProxyParsed::Header(h, used)),
            Theirs::V2 {
                len,
                local,
                addresses,
                tlvs,
                ..
            },
        ) => {
            if used != len || (h.command() == ProxyCommand::Local) != *local {
                unexplained();
            }
            if *local {
                return; // Rule: LOCAL's address information is ignored (section 2.2).
            }
            // Rule: with an unspecified family or protocol the real endpoints stand and the
            // rest is ignored (2.2); ppp reads addresses and TLVs anyway.
            if data[13] & 0x0f == 0 || data[13] >> 4 == 0 {
                if *h.addresses() != ProxyAddresses::Unknown || h.tlvs().next().is_some() {
                    unexplained();
                }
                return;
            }
            if raw_pair(h) != *addresses {
                unexplained();
            }
            // Where both read TLVs (after the family's address block), they read the
            // same ones.
            let mine: Vec<(u8, Vec<u8>)> = h.tlvs().map(|(t, v)| (t, v.to_vec())).collect();
            match tlvs {
                Ok(theirs) if *theirs == mine => {}
                _ => unexplained(),
            }
        }
        (Ok(ProxyParsed::Header(h, _)), Theirs::Rejected(_)) => {
            // Rule: LOCAL is accepted whatever its length holds (2.2: "the receiver must
            // accept the connection and ignore any address information"); ppp wants the
            // family's address block even then.
            if h.command() == ProxyCommand::Local {
                return;
            }
            unexplained();
        }
        (Ok(ProxyParsed::Header(h, _)), Theirs::Incomplete) => {
            // Rule (2.1): after "PROXY UNKNOWN" the receiver ignores anything up to the
            // CRLF; ppp splits the line into at most seven words and, with more, never
            // finds the CRLF in the last one.
            if h.version() == dualstack::ProxyVersion::V1
                && *h.addresses() == ProxyAddresses::Unknown
            {
                return;
            }
            unexplained()
        }
        (Ok(ProxyParsed::Incomplete), Theirs::V1 { .. } | Theirs::V2 { .. }) => unexplained(),
        (Ok(ProxyParsed::Incomplete), Theirs::Rejected(_)) => {
            // Rule: a version 1 line is judged when its CRLF comes (within 107 bytes, 2.1);
            // ppp judges the words of a partial line as they come.
            if data.first() == Some(&b'P') {
                return;
            }
            // Rule: LOCAL ignores the address block, so no length is too short for it;
            // ppp refuses a LOCAL header whose length cannot hold its family's addresses
            // before the rest has come.
            if data.get(12).is_some_and(|b| b & 0x0f == 0) {
                return;
            }
            unexplained();
        }
        (Ok(ProxyParsed::Incomplete), Theirs::Incomplete) => {}
        (Err(_), Theirs::Rejected(_)) => {}
        // Rule: refused at the first byte that cannot begin an acceptable header (a
        // receiver must not wait for more of what is already wrong); ppp waits.
        (Err(_), Theirs::Incomplete) => {}
        (Err(e), Theirs::V1 { .. }) => match e.kind() {
            // Rule (2.1): a v1 line is printable US-ASCII ended by CRLF, ports are
            // decimal without leading zeros or signs (ppp lets u16::from_str take "+1"),
            // and single spaces separate the fields.
            ProxyErrorKind::Malformed | ProxyErrorKind::BadAddress => {}
            _ => unexplained(),
        },
        (Err(e), Theirs::V2 { datagram, tlvs, .. }) => match e.kind() {
            // Rule: a stream server refuses a datagram connection's header.
            ProxyErrorKind::Unsupported if *datagram => {}
            // Rule: TLVs are checked (2.2.x: lengths within the header, one CRC32C of 4
            // bytes and matching, UNIQUE_ID at most 128 bytes, SSL at least 5); ppp
            // reads them lazily.
            ProxyErrorKind::BadTlv | ProxyErrorKind::Checksum => {}
            ProxyErrorKind::BadLength if tlvs.is_err() || e.offset() > 16 => {}
            _ => unexplained(),
        },
    }
}
