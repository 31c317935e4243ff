//! Version 1: the text line.

use super::*;

/// Version 1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN …\r\n`.
pub(super) fn parse_v1(bytes: &[u8]) -> Result<ProxyParsed, ProxyError> {
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
pub(super) fn line(text: &[u8]) -> Result<ProxyHeader, ProxyError> {
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
