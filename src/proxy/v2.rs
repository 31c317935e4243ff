//! Version 2: the binary header (signature, command, family, addresses), its TLVs handed to
//! `tlvs.rs`.

use super::*;

/// Version 2: the signature, version and command, family and protocol, a length, then
/// that many bytes of addresses and TLVs.
pub(super) fn parse_v2(bytes: &[u8]) -> Result<ProxyParsed, ProxyError> {
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
pub(super) fn tlv_offset(tlvs: &[(u8, Vec<u8>)], i: usize) -> usize {
    tlvs[..i].iter().map(|(_, v)| 3 + v.len()).sum()
}

/// A v2 `AF_UNIX` address as the name it carries: a path ends at its first NUL (what
/// follows is padding, or garbage a sender left there); an abstract name keeps its leading
/// NUL and ends at the next one. All NULs (an unnamed socket, as a client's usually is) is
/// no name: empty.
pub(super) fn trim_nul(path: &[u8]) -> Vec<u8> {
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

pub(super) fn version_command(byte: u8) -> Result<ProxyCommand, ProxyError> {
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

pub(super) fn family_protocol(byte: u8) -> Result<(u8, u8), ProxyError> {
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
pub(super) fn ip_pair<const N: usize>(addrs: &[u8]) -> ProxyAddresses
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
