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

use super::normalize;

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
    /// A version 1 header for a TCP connection from `source` to `destination` (both of one
    /// family).
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

    /// The header as bytes on the wire: what [`parse`](ProxyHeader::parse) reads back as the
    /// same header. A version 1 header of a Unix connection, which version 1 cannot
    /// express, is written as `PROXY UNKNOWN`.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.version {
            ProxyVersion::V1 => match &self.addresses {
                ProxyAddresses::Ip {
                    source,
                    destination,
                } if source.is_ipv4() == destination.is_ipv4() => format!(
                    "PROXY {} {} {} {} {}\r\n",
                    if source.is_ipv4() { "TCP4" } else { "TCP6" },
                    source.ip(),
                    destination.ip(),
                    source.port(),
                    destination.port()
                )
                .into_bytes(),
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

/// Version 1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN …\r\n`.
fn parse_v1(bytes: &[u8]) -> Result<ProxyParsed, ProxyError> {
    use ProxyErrorKind::*;
    let window = &bytes[..bytes.len().min(V1_MAX)];
    // Only printable ASCII, and CR only right before LF: anything else is refused at once.
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' if i > 0 && window[i - 1] == b'\r' => {
                return line(&window[..i - 1]).map(|h| ProxyParsed::Header(h, i + 1))
            }
            b'\n' => {
                return Err(ProxyError::new(
                    i,
                    Malformed,
                    "a bare LF: the line must end with CRLF",
                ))
            }
            b'\r' if i + 1 < window.len() && window[i + 1] != b'\n' => {
                return Err(ProxyError::new(i, Malformed, "a CR not followed by LF"))
            }
            b'\r' | b' '..=b'~' => {}
            _ => {
                return Err(ProxyError::new(
                    i,
                    Malformed,
                    format!("byte {} is not printable ASCII", shown(&[b])),
                ))
            }
        }
    }
    if bytes.len() >= V1_MAX {
        return Err(ProxyError::new(
            V1_MAX,
            TooLong,
            format!("no CRLF within {V1_MAX} bytes, the longest a version 1 header can be"),
        ));
    }
    Ok(ProxyParsed::Incomplete)
}

/// The fields of a version 1 line (without its CRLF).
fn line(text: &[u8]) -> Result<ProxyHeader, ProxyError> {
    use ProxyErrorKind::*;
    // Printable ASCII, checked by the caller.
    let text = std::str::from_utf8(text).map_err(|_| ProxyError::new(0, Malformed, "not ASCII"))?;
    let mut fields = Vec::new();
    let mut start = 0;
    for part in text.split(' ') {
        fields.push((start, part));
        start += part.len() + 1;
    }
    let protocol = fields.get(1).map_or("", |f| f.1);
    let unknown = ProxyHeader {
        version: ProxyVersion::V1,
        command: ProxyCommand::Proxy,
        addresses: ProxyAddresses::Unknown,
        tlvs: Vec::new(),
    };
    match protocol {
        // "the receiver must ignore anything presented before the CRLF is found"
        "UNKNOWN" => return Ok(unknown),
        "TCP4" | "TCP6" => {}
        other => {
            return Err(ProxyError::new(
                6,
                Malformed,
                format!("protocol {other:?}: expected TCP4, TCP6 or UNKNOWN"),
            ))
        }
    }
    if fields.len() != 6 {
        return Err(ProxyError::new(
            text.len(),
            Malformed,
            format!(
                "{} fields after PROXY {protocol}; expected four, each after one space: SRC DST SPORT DPORT",
                fields.len().saturating_sub(2)
            ),
        ));
    }
    let v4 = protocol == "TCP4";
    let address = |(at, s): (usize, &str)| -> Result<IpAddr, ProxyError> {
        let parsed = if v4 {
            s.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
        } else {
            s.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
        };
        parsed.ok_or_else(|| {
            ProxyError::new(
                at,
                BadAddress,
                format!(
                    "{s:?} is not an {} address",
                    if v4 { "IPv4" } else { "IPv6" }
                ),
            )
        })
    };
    let port = |(at, s): (usize, &str)| -> Result<u16, ProxyError> {
        let canonical = !s.is_empty()
            && s.len() <= 5
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        s.parse::<u16>().ok().filter(|_| canonical).ok_or_else(|| {
            ProxyError::new(
                at,
                BadAddress,
                format!("{s:?} is not a port (0 to 65535, no leading zeros)"),
            )
        })
    };
    let source = SocketAddr::new(address(fields[2])?, port(fields[4])?);
    let destination = SocketAddr::new(address(fields[3])?, port(fields[5])?);
    Ok(ProxyHeader {
        addresses: ProxyAddresses::Ip {
            source,
            destination,
        },
        ..unknown
    })
}

/// Version 2: the signature, version and command, family and protocol, a length, then
/// that many bytes of addresses and TLVs.
fn parse_v2(bytes: &[u8]) -> Result<ProxyParsed, ProxyError> {
    use ProxyErrorKind::*;
    if bytes.len() < 16 {
        // The signature so far matched; the fixed part is not all here yet. Check what is.
        if let Some(&vc) = bytes.get(12) {
            version_command(vc)?;
        }
        if let Some(&fp) = bytes.get(13) {
            family_protocol(fp)?;
        }
        return Ok(ProxyParsed::Incomplete);
    }
    let command = version_command(bytes[12])?;
    let (family, protocol) = family_protocol(bytes[13])?;
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let total = 16 + len;
    let need = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if command == ProxyCommand::Proxy {
        // Refused now, not once a length's worth has come: it cannot hold the addresses.
        if protocol == 2 {
            return Err(ProxyError::new(
                13,
                Unsupported,
                "a datagram (UDP) connection's header on a stream connection",
            ));
        }
        if len < need {
            return Err(ProxyError::new(
                14,
                BadLength,
                format!(
                    "length {len} is too short for the addresses of family {family} ({need} bytes)"
                ),
            ));
        }
    }
    if bytes.len() < total {
        return Ok(ProxyParsed::Incomplete);
    }
    let header = &bytes[..total];
    let body = &header[16..];
    if command == ProxyCommand::Local {
        // "the receiver must accept the connection and ignore any address information":
        // the length is skipped exactly, whatever it holds.
        return Ok(ProxyParsed::Header(ProxyHeader::local(), total));
    }
    let (addrs, rest) = body.split_at(need);
    let addresses = match (family, protocol) {
        (1, 1) => ip_pair::<4>(addrs),
        (2, 1) => ip_pair::<16>(addrs),
        (3, 1) => ProxyAddresses::Unix {
            source: trim_nul(&addrs[..108]),
            destination: trim_nul(&addrs[108..216]),
        },
        // AF_UNSPEC, or a family with an unspecified protocol: keep the real endpoints
        // (the spec lets the receiver accept it that way).
        _ => ProxyAddresses::Unknown,
    };
    if addresses == ProxyAddresses::Unknown {
        // The real endpoints stand and the rest is ignored, TLVs included (HAProxy and
        // ppp read none there either).
        return Ok(ProxyParsed::Header(
            ProxyHeader {
                version: ProxyVersion::V2,
                command,
                addresses,
                tlvs: Vec::new(),
            },
            total,
        ));
    }
    let tlvs = parse_tlvs(rest, 16 + need, false)?;
    for (i, (kind, value)) in tlvs.iter().enumerate() {
        if *kind == tlv::CRC32C {
            let at = 16 + need + tlv_offset(&tlvs, i) + 3;
            let mut copy = header.to_vec();
            copy[at..at + 4].fill(0);
            let want = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            let got = crc32c(&copy);
            if got != want {
                return Err(ProxyError::new(
                    at,
                    Checksum,
                    format!("CRC32c {want:#010x} in the header, {got:#010x} computed"),
                ));
            }
        }
    }
    Ok(ProxyParsed::Header(
        ProxyHeader {
            version: ProxyVersion::V2,
            command,
            addresses,
            tlvs,
        },
        total,
    ))
}

/// Where TLV `i` begins within the TLV block.
fn tlv_offset(tlvs: &[(u8, Vec<u8>)], i: usize) -> usize {
    tlvs[..i].iter().map(|(_, v)| 3 + v.len()).sum()
}

/// A v2 `AF_UNIX` address as the name it carries: a path ends at its first NUL (what
/// follows is padding, or garbage a sender left there); an abstract name keeps its leading
/// NUL and ends at the next one. All NULs (an unnamed socket, as a client's usually is) is
/// no name: empty.
fn trim_nul(path: &[u8]) -> Vec<u8> {
    let from = usize::from(path.first() == Some(&0));
    let end = path[from..]
        .iter()
        .position(|&b| b == 0)
        .map_or(path.len(), |i| from + i);
    if end == from {
        return Vec::new();
    }
    path[..end].to_vec()
}

fn version_command(byte: u8) -> Result<ProxyCommand, ProxyError> {
    use ProxyErrorKind::*;
    if byte >> 4 != 2 {
        return Err(ProxyError::new(
            12,
            Unsupported,
            format!(
                "protocol version {} (byte {byte:#04x}); only 2 exists",
                byte >> 4
            ),
        ));
    }
    match byte & 0x0f {
        0 => Ok(ProxyCommand::Local),
        1 => Ok(ProxyCommand::Proxy),
        c => Err(ProxyError::new(
            12,
            Unsupported,
            format!("command {c}: only LOCAL (0) and PROXY (1) exist"),
        )),
    }
}

fn family_protocol(byte: u8) -> Result<(u8, u8), ProxyError> {
    let (family, protocol) = (byte >> 4, byte & 0x0f);
    if family > 3 || protocol > 2 {
        return Err(ProxyError::new(
            13,
            ProxyErrorKind::Unsupported,
            format!("address family {family} and protocol {protocol} (byte {byte:#04x}): families go to 3 and protocols to 2"),
        ));
    }
    Ok((family, protocol))
}

/// The TLVs of `block`, which begins at byte `base` of the header; each checked.
/// The source and destination of a version 2 TCP address block: two addresses of `N` bytes
/// (4 or 16), then two ports. `addrs` holds them all (its length was checked).
fn ip_pair<const N: usize>(addrs: &[u8]) -> ProxyAddresses
where
    IpAddr: From<[u8; N]>,
{
    let ip = |at: usize| IpAddr::from(<[u8; N]>::try_from(&addrs[at..at + N]).unwrap_or([0; N]));
    let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
    ProxyAddresses::Ip {
        source: SocketAddr::new(ip(0), port(2 * N)),
        destination: SocketAddr::new(ip(N), port(2 * N + 2)),
    }
}

/// The TLVs of `block`, which starts at offset `base` of the header; `in_ssl` when `block`
/// is an SSL TLV's sub-TLVs, where another SSL TLV is refused before it is looked into: so
/// the nesting is at most one deep, whatever a 64 KiB header holds (the parser recursed
/// once per level before, and a header of nested SSL TLVs overflowed the stack).
fn parse_tlvs(
    mut block: &[u8],
    base: usize,
    in_ssl: bool,
) -> Result<Vec<(u8, Vec<u8>)>, ProxyError> {
    use ProxyErrorKind::*;
    let mut tlvs = Vec::new();
    let mut at = base;
    while !block.is_empty() {
        if block.len() < 3 {
            return Err(ProxyError::new(
                at,
                BadLength,
                format!(
                    "{} bytes left after the last TLV; a TLV takes at least 3",
                    block.len()
                ),
            ));
        }
        let kind = block[0];
        let len = usize::from(u16::from_be_bytes([block[1], block[2]]));
        let Some(value) = block.get(3..3 + len) else {
            return Err(ProxyError::new(
                at,
                BadLength,
                format!(
                    "TLV {kind:#04x} has length {len}, and {} bytes are left",
                    block.len() - 3
                ),
            ));
        };
        check_tlv(kind, value, at, in_ssl)?;
        if kind == tlv::CRC32C && !in_ssl && tlvs.iter().any(|(k, _)| *k == tlv::CRC32C) {
            // Each checksum would be checked with only itself zeroed, and no encoder can
            // write two that both hold (`with_tlv` refuses a second one too).
            return Err(ProxyError::new(
                at,
                BadTlv,
                "a second CRC32C TLV: a header has one checksum",
            ));
        }
        tlvs.push((kind, value.to_vec()));
        block = &block[3 + len..];
        at += 3 + len;
    }
    Ok(tlvs)
}

fn check_tlv(kind: u8, value: &[u8], at: usize, in_ssl: bool) -> Result<(), ProxyError> {
    use ProxyErrorKind::*;
    let bad = |detail: String| Err(ProxyError::new(at, BadTlv, detail));
    match kind {
        tlv::CRC32C if value.len() != 4 => bad(format!(
            "the CRC32C TLV has {} bytes; it has 4",
            value.len()
        )),
        tlv::UNIQUE_ID if value.len() > 128 => bad(format!(
            "the UNIQUE_ID TLV has {} bytes; it has at most 128",
            value.len()
        )),
        tlv::SSL if in_ssl => bad("an SSL TLV inside an SSL TLV".to_owned()),
        tlv::SSL => {
            if value.len() < 5 {
                return bad(format!(
                    "the SSL TLV has {} bytes; it has at least 5 (client, verify)",
                    value.len()
                ));
            }
            parse_tlvs(&value[5..], at + 3 + 5, true).map(drop)
        }
        _ => Ok(()),
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as the CRC32C TLV uses.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<ProxyParsed, ProxyError> {
        ProxyHeader::parse(bytes, ProxyVersions::BOTH)
    }

    fn header(bytes: &[u8]) -> (ProxyHeader, usize) {
        match parse(bytes) {
            Ok(ProxyParsed::Header(h, n)) => (h, n),
            other => panic!("{:?}: {other:?}", bytes.escape_ascii().to_string()),
        }
    }

    fn error(bytes: &[u8]) -> ProxyError {
        match parse(bytes) {
            Err(e) => e,
            other => panic!(
                "{:?} was accepted: {other:?}",
                bytes.escape_ascii().to_string()
            ),
        }
    }

    /// A hostile review: SSL TLVs each inside the last, as deep as a 64 KiB header allows
    /// (~8,000), overflowed the stack (the parser recursed once per level before it looked
    /// for an SSL TLV inside an SSL TLV) and aborted the whole process.
    #[test]
    fn ssl_tlvs_nested_as_deep_as_a_header_allows_are_refused_without_recursing() {
        let mut tlv: Vec<u8> = vec![tlv::SSL, 0, 5, 1, 0, 0, 0, 0];
        while tlv.len() + 8 <= 65535 - 12 {
            let mut outer = vec![tlv::SSL];
            outer.extend(((tlv.len() + 5) as u16).to_be_bytes());
            outer.extend([1, 0, 0, 0, 0]);
            outer.extend(&tlv);
            tlv = outer;
        }
        let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
        bytes.extend(((12 + tlv.len()) as u16).to_be_bytes());
        bytes.extend([192, 0, 2, 1, 127, 0, 0, 1, 0, 1, 0, 2]);
        bytes.extend(&tlv);
        // A small stack, as a server thread may have: one level of nesting fits in it.
        let e = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || error(&bytes))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(e.kind(), ProxyErrorKind::BadTlv, "{e}");
        assert!(
            e.to_string().contains("an SSL TLV inside an SSL TLV"),
            "{e}"
        );
        // The second SSL TLV: the first's sub-TLVs begin 16 + 12 + 3 + 5 bytes in.
        assert_eq!(e.offset(), 16 + 12 + 3 + 5, "{e}");
    }

    /// A hostile review: `to_bytes` cut what did not fit and wrote TLVs `parse` refuses, so
    /// its "reads back as the same header" did not hold. `with_tlv` refuses them instead.
    #[test]
    fn with_tlv_refuses_what_parse_would_and_what_cannot_be_encoded() {
        let h = || {
            ProxyHeader::v2(
                "192.0.2.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            )
        };
        let kind = |r: Result<ProxyHeader, ProxyError>| r.map(|_| ()).unwrap_err().kind();
        use ProxyErrorKind::*;
        assert_eq!(kind(h().with_tlv(tlv::SSL, vec![])), BadTlv);
        assert_eq!(kind(h().with_tlv(tlv::UNIQUE_ID, vec![b'u'; 129])), BadTlv);
        let crc = h().with_tlv(tlv::CRC32C, vec![]).unwrap();
        assert_eq!(kind(crc.with_tlv(tlv::CRC32C, vec![])), BadTlv);
        let big = h().with_tlv(tlv::NOOP, vec![0; 40_000]).unwrap();
        assert_eq!(
            kind(big.clone().with_tlv(tlv::NOOP, vec![0; 40_000])),
            BadLength
        );
        let v1 = ProxyHeader::v1(
            "192.0.2.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        assert_eq!(kind(v1.with_tlv(tlv::ALPN, b"h2".to_vec())), Unsupported);
        assert_eq!(
            kind(ProxyHeader::local().with_tlv(tlv::ALPN, b"h2".to_vec())),
            Unsupported
        );
        // The largest header that fits reads back whole.
        let room = usize::from(u16::MAX) - (big.to_bytes().len() - 16) - 3;
        let full = big.with_tlv(tlv::NOOP, vec![7; room]).unwrap();
        let bytes = full.to_bytes();
        assert_eq!(bytes.len(), 16 + usize::from(u16::MAX));
        assert_eq!(header(&bytes), (full, bytes.len()));
    }

    /// Issue #21, item 5: two CRC32C TLVs, each right with only itself zeroed, parsed; their
    /// `to_bytes` (which writes one checksum over both) did not parse back.
    #[test]
    fn a_second_crc32c_tlv_is_refused_as_with_tlv_refuses_it() {
        let one = ProxyHeader::v2(
            "192.0.2.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        )
        .with_tlv(tlv::CRC32C, vec![])
        .unwrap();
        let mut bytes = one.to_bytes();
        // Append a second CRC32C TLV, then make each checksum right with only itself
        // zeroed (the other one as it will be sent).
        bytes.extend_from_slice(&[tlv::CRC32C, 0, 4, 0, 0, 0, 0]);
        let len = u16::try_from(bytes.len() - 16).unwrap();
        bytes[14..16].copy_from_slice(&len.to_be_bytes());
        let (first, second) = (bytes.len() - 7 - 4, bytes.len() - 4);
        for _ in 0..4 {
            for at in [first, second] {
                let mut copy = bytes.clone();
                copy[at..at + 4].fill(0);
                let crc = crc32c(&copy).to_be_bytes();
                bytes[at..at + 4].copy_from_slice(&crc);
            }
        }
        let err = error(&bytes);
        assert_eq!(err.kind(), ProxyErrorKind::BadTlv, "{err}");
        assert_eq!(err.offset(), second - 3, "{err}");
        assert!(err.to_string().contains("second CRC32C"), "{err}");
    }

    /// Issue #21, item 5: an `AF_UNIX` address kept the garbage after its first NUL.
    #[test]
    fn unix_addresses_end_at_their_first_nul_and_abstract_ones_keep_their_leading_one() {
        let mut path = [0u8; 108];
        path[..6].copy_from_slice(b"/a.skx");
        path[6] = 0;
        path[7..10].copy_from_slice(b"bad");
        assert_eq!(trim_nul(&path), b"/a.skx");
        let mut name = [0u8; 108];
        name[1..4].copy_from_slice(b"app");
        name[5..8].copy_from_slice(b"bad");
        assert_eq!(trim_nul(&name), b"\0app");
        assert_eq!(trim_nul(&[0; 108]), b"", "an unnamed socket");
        assert_eq!(
            trim_nul(&[b'x'; 108]),
            [b'x'; 108],
            "a path that fills it all"
        );
    }

    /// Issue #17: an error names the byte it was found at: the field that is wrong, the
    /// CRLF that ends a line whose grammar is wrong, the fixed byte of a v2 header, the TLV
    /// that overruns.
    #[test]
    fn errors_name_the_byte_they_were_found_at() {
        use ProxyErrorKind::*;
        let sig = b"\r\n\r\n\x00\r\nQUIT\n".as_slice();
        let v2 = |rest: &[&[u8]]| [&[sig][..], rest].concat().concat();
        let cases: Vec<(&str, Vec<u8>, usize, ProxyErrorKind)> = vec![
            ("not a header", b"GET / HTTP/1.1\r\n".to_vec(), 0, NotProxy),
            (
                "a leading zero",
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                11,
                BadAddress,
            ),
            (
                "a signed port",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(),
                27,
                BadAddress,
            ),
            (
                "a bare LF",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
                30,
                Malformed,
            ),
            (
                "two spaces",
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                31,
                Malformed,
            ),
            (
                "no CRLF",
                [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
                107,
                TooLong,
            ),
            (
                "a wrong v2 signature",
                b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c".to_vec(),
                10,
                NotProxy,
            ),
            (
                "version 3",
                v2(&[&[0x31, 0x11, 0, 12], &[0; 12]]),
                12,
                Unsupported,
            ),
            (
                "family 4",
                v2(&[&[0x21, 0x41, 0, 12], &[0; 12]]),
                13,
                Unsupported,
            ),
            (
                "a short length",
                v2(&[&[0x21, 0x11, 0, 11], &[0; 11]]),
                14,
                BadLength,
            ),
            (
                "a TLV past the end",
                v2(&[&[0x21, 0x11, 0, 16], &[0; 12], &[tlv::ALPN, 0, 9, b'h']]),
                28,
                BadLength,
            ),
        ];
        for (what, bytes, offset, kind) in cases {
            let e = error(&bytes);
            assert_eq!((e.offset(), e.kind()), (offset, kind), "{what}: {e}");
            assert!(
                e.to_string().contains(&format!("at byte {offset}")),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn v1_lines_parse_and_report_their_length() {
        let (h, n) = header(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nrest");
        assert_eq!(n, 45);
        assert_eq!(h.source(), Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(h.destination(), Some("198.51.100.1:443".parse().unwrap()));
        let (h, _) = header(b"PROXY TCP6 ::ffff:127.0.0.1 ::1 1 65535\r\n");
        assert_eq!(
            h.source(),
            Some("127.0.0.1:1".parse().unwrap()),
            "HAProxy's v4v6 frontends send mapped addresses: normalized"
        );
        let (h, n) = header(b"PROXY UNKNOWN whatever is here\r\nX");
        assert_eq!((h.addresses(), n), (&ProxyAddresses::Unknown, 32));
        let (h, _) = header(b"PROXY UNKNOWN\r\n");
        assert_eq!(h.addresses(), &ProxyAddresses::Unknown);
        // The longest TCP line (104 bytes), and an UNKNOWN line of the most a receiver must
        // take (107).
        let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(header(longest).1, 104);
        let unknown = [b"PROXY UNKNOWN ".as_slice(), &[b'u'; 91], b"\r\n"].concat();
        assert_eq!(header(&unknown).1, V1_MAX);
    }

    #[test]
    fn v1_every_prefix_is_incomplete_and_one_byte_at_a_time_works() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
        for end in 0..line.len() {
            assert_eq!(parse(&line[..end]), Ok(ProxyParsed::Incomplete), "{end}");
        }
        assert_eq!(header(line).1, line.len());
    }

    #[test]
    fn v1_refusals_say_what_and_where() {
        use ProxyErrorKind::*;
        let cases: &[(&[u8], ProxyErrorKind, &str)] = &[
            (b"GET / HTTP/1.1\r\n", NotProxy, "expected a PROXY header"),
            (b"PROXI TCP4", NotProxy, "signature"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Malformed, "bare LF"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
                Malformed,
                "CR not followed by LF",
            ),
            (
                b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
                Malformed,
                "not printable",
            ),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                Malformed,
                "protocol \"UDP4\"",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Malformed, "3 fields"),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", Malformed, "fields"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Malformed, "fields"),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                BadAddress,
                "not an IPv4 address",
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
                BadAddress,
                "not an IPv6 address",
            ),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
                BadAddress,
                "\"01.2.3.4\"",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                BadAddress,
                "no leading zeros",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
                BadAddress,
                "\"65536\"",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", BadAddress, "\"+1\""),
            (
                b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
                BadAddress,
                "fe80::1%eth0",
            ),
        ];
        for (bytes, kind, text) in cases {
            let e = error(bytes);
            assert_eq!(e.kind(), *kind, "{e}");
            assert!(e.to_string().contains(text), "{e} lacks {text}");
            assert!(
                e.to_string().starts_with("invalid PROXY header at byte "),
                "{e}"
            );
        }
        // 200 bytes with no CRLF: refused at 107, not waited for.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 186]].concat();
        assert_eq!(error(&long).kind(), TooLong);
        assert_eq!(error(&long[..V1_MAX]).kind(), TooLong);
        assert_eq!(parse(&long[..V1_MAX - 1]), Ok(ProxyParsed::Incomplete));
    }

    #[test]
    fn versions_not_accepted_are_refused() {
        let v1 = b"PROXY UNKNOWN\r\n";
        let only_v2 = ProxyVersions {
            v1: false,
            v2: true,
        };
        let e = ProxyHeader::parse(v1, only_v2).unwrap_err();
        assert_eq!(e.kind(), ProxyErrorKind::VersionNotAccepted);
        let only_v1 = ProxyVersions {
            v1: true,
            v2: false,
        };
        let e = ProxyHeader::parse(&V2_SIGNATURE, only_v1).unwrap_err();
        assert_eq!(e.kind(), ProxyErrorKind::VersionNotAccepted);
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(command);
        out.push(family);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn v2_addresses_of_each_family() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend(56324u16.to_be_bytes());
        body.extend(443u16.to_be_bytes());
        let bytes = [v2(0x21, 0x11, &body), b"data".to_vec()].concat();
        let (h, n) = header(&bytes);
        assert_eq!(n, 28);
        assert_eq!(h.source(), Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(h.command(), ProxyCommand::Proxy);

        let mut body = Ipv6Addr::LOCALHOST.octets().to_vec();
        body.extend(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets());
        body.extend([0, 80, 1, 187]);
        let (h, _) = header(&v2(0x21, 0x21, &body));
        assert_eq!(h.source(), Some("[::1]:80".parse().unwrap()));
        assert_eq!(
            h.destination(),
            Some("10.0.0.1:443".parse().unwrap()),
            "normalized"
        );

        let mut body = [0u8; 216];
        body[..4].copy_from_slice(b"/a/b");
        body[108..111].copy_from_slice(b"\0ab");
        let (h, _) = header(&v2(0x21, 0x31, &body));
        assert_eq!(
            h.addresses(),
            &ProxyAddresses::Unix {
                source: b"/a/b".to_vec(),
                destination: b"\0ab".to_vec()
            }
        );
        assert_eq!(h.source(), None, "a Unix client has no IP address");
    }

    #[test]
    fn v2_local_and_unspec_keep_the_real_endpoints_and_skip_the_length_exactly() {
        // A health check: LOCAL, with whatever in its body.
        let bytes = [v2(0x20, 0x11, &[1, 2, 3, 4, 5]), b"after".to_vec()].concat();
        let (h, n) = header(&bytes);
        assert_eq!(
            (h.command(), h.addresses(), n),
            (ProxyCommand::Local, &ProxyAddresses::Unknown, 21)
        );
        let (h, n) = header(&v2(0x21, 0x00, &[]));
        assert_eq!((h.addresses(), n), (&ProxyAddresses::Unknown, 16));
    }

    #[test]
    fn v2_incomplete_until_the_length_is_here_and_its_refusals() {
        use ProxyErrorKind::*;
        let full = v2(0x21, 0x11, &[0; 12]);
        for end in 0..full.len() {
            assert_eq!(parse(&full[..end]), Ok(ProxyParsed::Incomplete), "{end}");
        }
        // Length 65535 and no body: incomplete (the reactor's header deadline ends it).
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Ok(ProxyParsed::Incomplete));
        let cases: Vec<(Vec<u8>, ProxyErrorKind, &str)> = vec![
            (
                b"\r\n\r\n\0\r\nQUIX".to_vec(),
                NotProxy,
                "version 2 signature",
            ),
            (
                [V2_SIGNATURE.as_slice(), &[0x11]].concat(),
                Unsupported,
                "protocol version 1",
            ),
            (
                [V2_SIGNATURE.as_slice(), &[0x22]].concat(),
                Unsupported,
                "command 2",
            ),
            (
                [V2_SIGNATURE.as_slice(), &[0x21, 0x41]].concat(),
                Unsupported,
                "address family 4",
            ),
            (
                [V2_SIGNATURE.as_slice(), &[0x21, 0x13]].concat(),
                Unsupported,
                "protocol 3",
            ),
            (v2(0x21, 0x12, &[0; 12]), Unsupported, "datagram"),
            (v2(0x21, 0x11, &[0; 11]), BadLength, "too short"),
            (v2(0x21, 0x21, &[0; 35]), BadLength, "too short"),
            (
                v2(0x21, 0x11, &[[0; 12].as_slice(), &[1, 0]].concat()),
                BadLength,
                "2 bytes left",
            ),
            (
                v2(0x21, 0x11, &[[0; 12].as_slice(), &[1, 0, 5, 1]].concat()),
                BadLength,
                "length 5",
            ),
            (
                v2(0x21, 0x11, &[[0; 12].as_slice(), &[3, 0, 2, 1, 2]].concat()),
                BadTlv,
                "CRC32C TLV has 2",
            ),
            (
                v2(
                    0x21,
                    0x11,
                    &[[0; 12].as_slice(), &[5, 0, 129], &[7; 129]].concat(),
                ),
                BadTlv,
                "at most 128",
            ),
            (
                v2(
                    0x21,
                    0x11,
                    &[[0; 12].as_slice(), &[0x20, 0, 4, 1, 0, 0, 0]].concat(),
                ),
                BadTlv,
                "at least 5",
            ),
            (
                v2(
                    0x21,
                    0x11,
                    &[[0; 12].as_slice(), &[0x20, 0, 6, 1, 0, 0, 0, 0, 0x21]].concat(),
                ),
                BadLength,
                "1 bytes left",
            ),
        ];
        for (bytes, kind, text) in cases {
            let e = error(&bytes);
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.to_string().contains(text), "{e} lacks {text}");
        }
    }

    #[test]
    fn v2_tlvs_are_exposed_and_the_crc_is_checked() {
        let source: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let destination: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut ssl = vec![1, 0, 0, 0, 0];
        ssl.extend([tlv::SSL_VERSION, 0, 7]);
        ssl.extend(b"TLSv1.3");
        ssl.extend([tlv::SSL_CN, 0, 6]);
        ssl.extend(b"client");
        let h = ProxyHeader::v2(source, destination)
            .with_tlv(tlv::ALPN, b"h2".to_vec())
            .and_then(|h| h.with_tlv(tlv::AUTHORITY, b"example.com".to_vec()))
            .and_then(|h| h.with_tlv(tlv::UNIQUE_ID, b"id-1".to_vec()))
            .and_then(|h| h.with_tlv(tlv::SSL, ssl))
            .and_then(|h| h.with_tlv(tlv::CRC32C, vec![]))
            .unwrap();
        let bytes = h.to_bytes();
        let (back, n) = header(&bytes);
        assert_eq!(n, bytes.len());
        assert_eq!(back.alpn(), Some(&b"h2"[..]));
        assert_eq!(back.authority(), Some(&b"example.com"[..]));
        assert_eq!(back.unique_id(), Some(&b"id-1"[..]));
        let ssl = back.ssl().unwrap();
        assert_eq!((ssl.client, ssl.verify), (1, 0));
        assert_eq!(
            (ssl.version(), ssl.common_name()),
            (Some("TLSv1.3"), Some("client"))
        );
        assert_eq!(back.to_bytes(), bytes, "re-encodes to the same bytes");
        // One bit flipped anywhere in the addresses: the checksum catches it.
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert_eq!(error(&bad).kind(), ProxyErrorKind::Checksum);
    }

    #[test]
    fn built_headers_round_trip() {
        let four: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let six: SocketAddr = "[::1]:2".parse().unwrap();
        for h in [
            ProxyHeader::v1(four, four),
            ProxyHeader::v1(six, six),
            ProxyHeader::v2(four, four),
            ProxyHeader::v2(six, six),
            ProxyHeader::local(),
        ] {
            let bytes = h.to_bytes();
            assert_eq!(header(&bytes), (h, bytes.len()));
        }
    }
}
