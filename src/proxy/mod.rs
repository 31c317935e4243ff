//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`, versions 1 and 2): the header a
//! load balancer sends first on each connection to say who the client really is. Pure and
//! sans-IO: bytes in; [`ProxyParsed::Incomplete`], a header and how many bytes it used, or an
//! error with the offset and the reason.
//!
//! Heads up: a header is only to be believed from a trusted balancer, on a listener that
//! expects it on every connection (the reactor's job, not this parser's). The parser never
//! reads past the length it reports, waits for at most 107 bytes of a version 1 line and
//! 16 + 65,535 of a version 2 header, and rejects what deviates from the signature at the
//! first byte that does, so garbage costs nothing to refuse.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::addr::normalize;

mod tlvs;
mod v1;
mod v2;

use tlvs::*;
use v1::*;
use v2::*;

/// The 12 bytes every version 2 header begins with.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, CRLF included.
pub(crate) const V1_MAX: usize = 107;

/// The TLV types of version 2 that this module interprets.
pub mod tlv {
    /// Application-Layer Protocol Negotiation: the protocol the client chose.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI, or an HTTP `Host`).
    pub const AUTHORITY: u8 = 0x02;
    /// A CRC32c checksum of the whole header (verified when present).
    pub const CRC32C: u8 = 0x03;
    /// Padding, ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque id of the connection, at most 128 bytes.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS details, with sub-TLVs of their own.
    pub const SSL: u8 = 0x20;
    /// Within [`SSL`]: the TLS version, as text.
    pub const SSL_VERSION: u8 = 0x21;
    /// Within [`SSL`]: the client certificate's Common Name.
    pub const SSL_CN: u8 = 0x22;
    /// Within [`SSL`]: the cipher, as text.
    pub const SSL_CIPHER: u8 = 0x23;
    /// Within [`SSL`]: the certificate's signature algorithm.
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// Within [`SSL`]: the certificate's key algorithm.
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// The network namespace the connection came from, as text.
    pub const NETNS: u8 = 0x30;
}

/// Which versions of the protocol a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyVersions {
    /// The text line, `PROXY TCP4 …\r\n`.
    pub v1: bool,
    /// The binary header.
    pub v2: bool,
}

impl ProxyVersions {
    /// Both versions.
    pub const BOTH: ProxyVersions = ProxyVersions { v1: true, v2: true };
}

impl Default for ProxyVersions {
    fn default() -> ProxyVersions {
        ProxyVersions::BOTH
    }
}

/// Which version a header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyCommand {
    /// A client's connection, relayed: the addresses are the client's.
    Proxy,
    /// The balancer's own connection (a health check, version 2): the real endpoints stand.
    Local,
}

/// The addresses a header carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProxyAddresses {
    /// None: `PROXY UNKNOWN` (version 1), `LOCAL` or the unspecified family (version 2).
    /// The connection's real endpoints stand.
    Unknown,
    /// A TCP connection from `source` (the client) to `destination` (where it connected
    /// on the balancer), as the header wrote them.
    Ip {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// A Unix-domain connection (version 2): the two `sun_path`s, trailing NULs removed.
    Unix {
        /// The client's path.
        source: Vec<u8>,
        /// The path it connected to.
        destination: Vec<u8>,
    },
}

/// A PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    version: ProxyVersion,
    command: ProxyCommand,
    addresses: ProxyAddresses,
    /// Version 2's TLVs, in order, as received (NOOP and CRC32C included).
    tlvs: Vec<(u8, Vec<u8>)>,
}

/// The outcome of [`ProxyHeader::parse`] on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyParsed {
    /// More bytes are needed; nothing is wrong so far.
    Incomplete,
    /// A whole header, and how many bytes it took: what follows is the client's data.
    Header(ProxyHeader, usize),
}

/// Why bytes are not an acceptable PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    offset: usize,
    kind: ProxyErrorKind,
    detail: String,
}

/// What kind of problem a [`ProxyError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyErrorKind {
    /// Neither signature: the peer did not send a PROXY header (or sent something first).
    NotProxy,
    /// A version the listener does not accept.
    VersionNotAccepted,
    /// A version 1 line without its CRLF within 107 bytes.
    TooLong,
    /// A version 1 line that breaks its grammar.
    Malformed,
    /// An address or a port that does not parse, or does not match the protocol.
    BadAddress,
    /// A version 2 version, command, family or protocol this receiver must reject.
    Unsupported,
    /// A version 2 length too short for its addresses, or a TLV that overruns it.
    BadLength,
    /// A TLV whose value breaks its type's rules.
    BadTlv,
    /// The CRC32c TLV does not match the header.
    Checksum,
}

impl ProxyError {
    fn new(offset: usize, kind: ProxyErrorKind, detail: impl Into<String>) -> ProxyError {
        ProxyError {
            offset,
            kind,
            detail: detail.into(),
        }
    }

    /// The byte of the header the problem was found at.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> ProxyErrorKind {
        self.kind
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid PROXY header at byte {}: {}",
            self.offset, self.detail
        )
    }
}

impl std::error::Error for ProxyError {}

/// TLS details from a version 2 `SSL` TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySsl<'a> {
    /// Bit 0: the client connected over TLS; bit 1: it sent a certificate on this
    /// connection; bit 2: on this session.
    pub client: u8,
    /// 0 when the client's certificate was verified.
    pub verify: u32,
    /// `SSL_VERSION`, `SSL_CN`, `SSL_CIPHER`, `SSL_SIG_ALG`, `SSL_KEY_ALG` and any other
    /// sub-TLVs, as `(type, value)` in order.
    sub: &'a [u8],
}

impl<'a> ProxySsl<'a> {
    /// The value of sub-TLV `kind` (`tlv::SSL_VERSION`, …), if present.
    pub fn get(&self, kind: u8) -> Option<&'a [u8]> {
        Tlvs(self.sub).find(|&(t, _)| t == kind).map(|(_, v)| v)
    }

    /// The TLS version, as the balancer wrote it (`TLSv1.3`).
    pub fn version(&self) -> Option<&'a str> {
        self.get(tlv::SSL_VERSION)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The client certificate's Common Name.
    pub fn common_name(&self) -> Option<&'a str> {
        self.get(tlv::SSL_CN)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The cipher, as the balancer wrote it.
    pub fn cipher(&self) -> Option<&'a str> {
        self.get(tlv::SSL_CIPHER)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Walks a TLV sequence already checked to be well formed.
struct Tlvs<'a>(&'a [u8]);

impl<'a> Iterator for Tlvs<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        if self.0.len() < 3 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.0[1], self.0[2]]));
        let value = self.0.get(3..3 + len)?;
        let kind = self.0[0];
        self.0 = &self.0[3 + len..];
        Some((kind, value))
    }
}

impl ProxyHeader {
    /// A version 1 header for a TCP connection from `source` to `destination`. Addresses
    /// of two families are written as IPv6 (`TCP6`, the IPv4 one as `::ffff:a.b.c.d`, which
    /// [`source`](ProxyHeader::source) and [`destination`](ProxyHeader::destination) give
    /// back as IPv4).
    pub fn v1(source: SocketAddr, destination: SocketAddr) -> ProxyHeader {
        ProxyHeader {
            version: ProxyVersion::V1,
            command: ProxyCommand::Proxy,
            addresses: ProxyAddresses::Ip {
                source,
                destination,
            },
            tlvs: Vec::new(),
        }
    }

    /// A version 2 `PROXY` header for a TCP connection from `source` to `destination`.
    pub fn v2(source: SocketAddr, destination: SocketAddr) -> ProxyHeader {
        ProxyHeader {
            version: ProxyVersion::V2,
            ..ProxyHeader::v1(source, destination)
        }
    }

    /// A version 2 `LOCAL` header: the balancer's own connection.
    pub fn local() -> ProxyHeader {
        ProxyHeader {
            version: ProxyVersion::V2,
            command: ProxyCommand::Local,
            addresses: ProxyAddresses::Unknown,
            tlvs: Vec::new(),
        }
    }

    /// The same header with TLV `(kind, value)` appended: version 2 `PROXY` headers only. A
    /// CRC32C TLV's value is computed when the header is encoded, whatever is given here.
    ///
    /// # Errors
    ///
    /// A version 1 or `LOCAL` header, which carry no TLVs (`Unsupported`); a value its type
    /// does not allow, as [`parse`](ProxyHeader::parse) would refuse it, or a second CRC32C
    /// TLV (`BadTlv`, `BadLength`); a header that would outgrow the 65,535 bytes version 2 allows after its
    /// first 16 (`BadLength`). So [`to_bytes`](ProxyHeader::to_bytes) never cuts anything.
    pub fn with_tlv(
        mut self,
        kind: u8,
        value: impl Into<Vec<u8>>,
    ) -> Result<ProxyHeader, ProxyError> {
        use ProxyErrorKind::*;
        let value = match kind {
            tlv::CRC32C => vec![0; 4],
            _ => value.into(),
        };
        if self.version != ProxyVersion::V2 || self.command != ProxyCommand::Proxy {
            return Err(ProxyError::new(
                0,
                Unsupported,
                "only a version 2 PROXY header carries TLVs",
            ));
        }
        let at = self.v2_bytes().len();
        if kind == tlv::CRC32C && self.tlvs.iter().any(|(k, _)| *k == tlv::CRC32C) {
            // Each would be written with the checksum of the header with both zeroed, and
            // each is checked with only itself zeroed: it could never read back.
            return Err(ProxyError::new(
                at,
                BadTlv,
                "a second CRC32C TLV: a header has one checksum",
            ));
        }
        if at - 16 + 3 + value.len() > usize::from(u16::MAX) {
            return Err(ProxyError::new(
                at,
                BadLength,
                format!(
                    "TLV {kind:#04x} of {} bytes would make the header longer than version 2 allows ({} bytes after the first 16)",
                    value.len(),
                    u16::MAX
                ),
            ));
        }
        check_tlv(kind, &value, at, false)?;
        self.tlvs.push((kind, value));
        Ok(self)
    }

    /// Its version.
    pub fn version(&self) -> ProxyVersion {
        self.version
    }

    /// `PROXY` or `LOCAL`.
    pub fn command(&self) -> ProxyCommand {
        self.command
    }

    /// The addresses it carries.
    pub fn addresses(&self) -> &ProxyAddresses {
        &self.addresses
    }

    /// The client's address, normalized (`::ffff:1.2.3.4` is `1.2.3.4`), when the header
    /// names a TCP client: the peer the application should see.
    pub fn source(&self) -> Option<SocketAddr> {
        match &self.addresses {
            ProxyAddresses::Ip { source, .. } => Some(normalize(*source)),
            _ => None,
        }
    }

    /// Where the client connected on the balancer, normalized.
    pub fn destination(&self) -> Option<SocketAddr> {
        match &self.addresses {
            ProxyAddresses::Ip { destination, .. } => Some(normalize(*destination)),
            _ => None,
        }
    }

    /// Every TLV (version 2), as `(type, value)` in the order received.
    pub fn tlvs(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        self.tlvs.iter().map(|(t, v)| (*t, v.as_slice()))
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs().find(|&(t, _)| t == kind).map(|(_, v)| v)
    }

    /// The ALPN TLV: the application protocol the client negotiated (`h2`).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(tlv::ALPN)
    }

    /// The AUTHORITY TLV: the host name the client asked for.
    pub fn authority(&self) -> Option<&[u8]> {
        self.tlv(tlv::AUTHORITY)
    }

    /// The UNIQUE_ID TLV: the balancer's id of the connection.
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(tlv::UNIQUE_ID)
    }

    /// The SSL TLV: whether and how the client used TLS.
    pub fn ssl(&self) -> Option<ProxySsl<'_>> {
        let v = self.tlv(tlv::SSL)?;
        // Checked when parsed (or when made by hand: then at least five bytes or nothing).
        let verify = u32::from_be_bytes(v.get(1..5)?.try_into().ok()?);
        Some(ProxySsl {
            client: v[0],
            verify,
            sub: &v[5..],
        })
    }

    /// Parses the bytes received so far on a connection of a listener that accepts
    /// `versions`.
    ///
    /// ```
    /// use dualstack::{ProxyParsed, ProxyHeader, ProxyVersions};
    ///
    /// let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
    /// match ProxyHeader::parse(&bytes[..20], ProxyVersions::BOTH)? {
    ///     ProxyParsed::Incomplete => {} // wait for more
    ///     other => panic!("{other:?}"),
    /// }
    /// let ProxyParsed::Header(header, used) = ProxyHeader::parse(bytes, ProxyVersions::BOTH)? else {
    ///     unreachable!()
    /// };
    /// assert_eq!(header.source(), Some("192.0.2.7:56324".parse()?));
    /// assert_eq!(&bytes[used..], b"GET / HTTP/1.1\r\n"); // the client's data
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ProxyError`] as soon as the bytes cannot begin an acceptable header.
    pub fn parse(bytes: &[u8], versions: ProxyVersions) -> Result<ProxyParsed, ProxyError> {
        use ProxyErrorKind::*;
        let Some(&first) = bytes.first() else {
            return Ok(ProxyParsed::Incomplete);
        };
        let (version, signature): (ProxyVersion, &[u8]) = match first {
            b'P' => (ProxyVersion::V1, b"PROXY "),
            b'\r' => (ProxyVersion::V2, &V2_SIGNATURE),
            _ => {
                return Err(ProxyError::new(
                    0,
                    NotProxy,
                    format!(
                        "expected a PROXY header, got {} (is the balancer set to send one?)",
                        shown(&bytes[..bytes.len().min(8)])
                    ),
                ))
            }
        };
        let seen = bytes.len().min(signature.len());
        if let Some(i) = (0..seen).find(|&i| bytes[i] != signature[i]) {
            return Err(ProxyError::new(
                i,
                NotProxy,
                format!(
                    "expected the {} signature, got {}",
                    match version {
                        ProxyVersion::V1 => "version 1 (\"PROXY \")",
                        ProxyVersion::V2 => "version 2",
                    },
                    shown(&bytes[..bytes.len().min(16)])
                ),
            ));
        }
        let accepted = match version {
            ProxyVersion::V1 => versions.v1,
            ProxyVersion::V2 => versions.v2,
        };
        if !accepted {
            return Err(ProxyError::new(
                0,
                VersionNotAccepted,
                format!(
                    "a version {} header, and this listener accepts only version {}",
                    version_number(version),
                    version_number(other(version))
                ),
            ));
        }
        match version {
            ProxyVersion::V1 => parse_v1(bytes),
            ProxyVersion::V2 => parse_v2(bytes),
        }
    }

    /// The header as bytes on the wire, which [`parse`](ProxyHeader::parse) reads back as
    /// the same connection: the same addresses from [`source`](ProxyHeader::source) and
    /// [`destination`](ProxyHeader::destination), the same TLVs. Not always an equal value:
    /// addresses of two families are written as IPv6 (the IPv4 one mapped), and a CRC32C
    /// TLV is written with the header's checksum in it, whatever value it held. A version 1
    /// header of a Unix connection, which version 1 cannot express, is written as
    /// `PROXY UNKNOWN`.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.version {
            ProxyVersion::V1 => match &self.addresses {
                ProxyAddresses::Ip {
                    source,
                    destination,
                } => {
                    let (s, d) = match source.is_ipv4() == destination.is_ipv4() {
                        true => (source.ip(), destination.ip()),
                        // One family for both (a relay's IPv4 client on an IPv6 socket).
                        false => (v6(source.ip()).into(), v6(destination.ip()).into()),
                    };
                    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                    let (sp, dp) = (source.port(), destination.port());
                    format!("PROXY {family} {s} {d} {sp} {dp}\r\n").into_bytes()
                }
                _ => b"PROXY UNKNOWN\r\n".to_vec(),
            },
            ProxyVersion::V2 => self.v2_bytes(),
        }
    }

    fn v2_bytes(&self) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        let command = match self.command {
            ProxyCommand::Local => 0x20,
            ProxyCommand::Proxy => 0x21,
        };
        out.push(command);
        let mut body = Vec::new();
        let family = match (&self.addresses, self.command) {
            (_, ProxyCommand::Local) | (ProxyAddresses::Unknown, _) => 0x00,
            (
                ProxyAddresses::Ip {
                    source,
                    destination,
                },
                _,
            ) => match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    body.extend(s.octets());
                    body.extend(d.octets());
                    body.extend(source.port().to_be_bytes());
                    body.extend(destination.port().to_be_bytes());
                    0x11
                }
                (s, d) => {
                    body.extend(v6(s).octets());
                    body.extend(v6(d).octets());
                    body.extend(source.port().to_be_bytes());
                    body.extend(destination.port().to_be_bytes());
                    0x21
                }
            },
            (
                ProxyAddresses::Unix {
                    source,
                    destination,
                },
                _,
            ) => {
                for path in [source, destination] {
                    let mut field = [0u8; 108];
                    let n = path.len().min(108);
                    field[..n].copy_from_slice(&path[..n]);
                    body.extend(field);
                }
                0x31
            }
        };
        out.push(family);
        let mut crc_at = Vec::new();
        if self.command == ProxyCommand::Proxy {
            // Each TLV, and the whole, fit their lengths: `with_tlv` and `parse` see to it.
            for (kind, value) in &self.tlvs {
                body.push(*kind);
                body.extend((value.len() as u16).to_be_bytes());
                if *kind == tlv::CRC32C {
                    // Zero while the checksum is computed, then the checksum (4 bytes, as
                    // `with_tlv` and `parse` see to).
                    crc_at.push(16 + body.len());
                    body.extend([0; 4]);
                } else {
                    body.extend(value);
                }
            }
        }
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(&body);
        if !crc_at.is_empty() {
            let crc = crc32c(&out).to_be_bytes();
            for at in crc_at {
                if at + 4 <= out.len() {
                    out[at..at + 4].copy_from_slice(&crc);
                }
            }
        }
        out
    }
}

fn version_number(v: ProxyVersion) -> u8 {
    match v {
        ProxyVersion::V1 => 1,
        ProxyVersion::V2 => 2,
    }
}

fn other(v: ProxyVersion) -> ProxyVersion {
    match v {
        ProxyVersion::V1 => ProxyVersion::V2,
        ProxyVersion::V2 => ProxyVersion::V1,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Bytes as a person reads them: printable ASCII as is, the rest escaped, in quotes.
fn shown(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests;
