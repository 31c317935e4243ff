//! The listen-spec parser.
//!
//! Heads up: before changing this file, read the grammar on [`ListenSpec`], RFC 4007 §11
//! (zones), RFC 6874 (`%25` in URIs) and the WHATWG URL standard's "ends in a number" rule
//! (why `127.1` is an error here and never a name). Two promises rest on this file and are
//! pinned by tests and fuzz targets: `parse(display(x)) == x`, and every input that
//! `std::net::SocketAddr::from_str` accepts is accepted with the same address and port.
//!
//! Every function takes the whole `input` (for error messages), the slice it parses and that
//! slice's byte `offset` in `input` (for error positions).

use std::net::{Ipv4Addr, Ipv6Addr};

use std::str::FromStr;

use super::error::{ParseError, ParseErrorKind, ParseErrorKind::*, MAX_LEN};
use super::spec::{Host, HostName, ListenSpec, SpecKind, UnixAddr, Zone};

type Result<T> = std::result::Result<T, ParseError>;

fn too_long(input: &str) -> ParseError {
    ParseError::new(
        input,
        TooLong,
        Some(MAX_LEN),
        format!(
            "it is {} bytes long; no listen spec is longer than {MAX_LEN}",
            input.len()
        ),
    )
}

/// Parses a whole spec: `HOST:PORT`, `[IPV6]:PORT`, `:PORT`, `*:PORT` or `PORT`.
pub(crate) fn spec(input: &str) -> Result<ListenSpec> {
    unwritten_spec(input).map(|spec| spec.with_written(input))
}

fn unwritten_spec(input: &str) -> Result<ListenSpec> {
    if input.len() > MAX_LEN {
        return Err(too_long(input));
    }
    if input.is_empty() {
        return Err(ParseError::new(
            input,
            Empty,
            None,
            r#"it is empty; expected HOST:PORT, [IPV6]:PORT, PORT, a socket path, sd-listen or fd:N, as in "localhost:8080""#,
        ));
    }
    if let Some(kind) = other_kind(input)? {
        return Ok(ListenSpec::checked(kind));
    }
    if let Some(pos) = input.find(char::is_whitespace) {
        let trimmed = input.trim();
        return Err(whitespace(
            input,
            pos,
            trimmed != input && spec(trimmed).is_ok(),
        ));
    }
    if let Some(scheme_end) = input.find("://") {
        return Err(url(input, scheme_end));
    }
    if let Some(rest) = input.strip_prefix('[') {
        return bracketed(input, rest);
    }
    if input.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ListenSpec::new(Host::Any, port(input, input, 0)?));
    }
    match input.split_once(':') {
        None => {
            // Check the host first: a bad host is the more useful message.
            if input != "*" {
                plain_host(input, input, 0)?;
            }
            Err(ParseError::new(
                input,
                MissingPort,
                Some(input.len()),
                format!("missing port, as in \"{input}:8080\" (port 0 lets the system choose)"),
            ))
        }
        Some((_, rest)) if rest.contains(':') => Err(unbracketed(input)),
        Some((host, port_text)) => {
            let host = match host {
                "" | "*" => Host::Any,
                name => plain_host(input, name, 0)?,
            };
            Ok(ListenSpec::new(
                host,
                port(input, port_text, input.len() - port_text.len())?,
            ))
        }
    }
}

/// The longest path a Unix-domain socket address holds, in bytes: `sun_path` is 108 bytes on
/// Linux and 104 on the BSDs and macOS, and a path needs its terminating NUL.
const MAX_UNIX_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// The specs that are not a host and a port: `unix:…`, a path, `@name`, `sd-listen[:NAME]`,
/// `fd:N`; `None` for anything else.
fn other_kind(input: &str) -> Result<Option<SpecKind>> {
    // The words are matched without regard to case (`UNIX:/a` is `unix:/a`); as host names
    // they are refused (see [`RESERVED`]), so no spec can mean both.
    let prefixed = |word: &str| {
        input
            .get(..word.len())
            .filter(|p| p.eq_ignore_ascii_case(word))
            .map(|_| &input[word.len()..])
    };
    if let Some(rest) = prefixed("unix:") {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(
                input,
                InvalidPath,
                Some(5),
                format!("\"{input}\" could be a host and a port or a socket file named {rest}; write \"unix:./{rest}\" for the file (\"unix\" is not a host name here)"),
            ));
        }
        return unix(input, rest, 5).map(Some);
    }
    if input.starts_with('/') || input.starts_with("./") || input.starts_with("../") {
        return unix(input, input, 0).map(Some);
    }
    if input.starts_with('@') {
        return unix(input, input, 0).map(Some);
    }
    if input.eq_ignore_ascii_case("sd-listen") {
        return Ok(Some(SpecKind::Activated { name: None }));
    }
    if let Some(name) = prefixed("sd-listen:") {
        return fd_name(input, name, 10).map(Some);
    }
    if let Some(n) = prefixed("fd:") {
        return descriptor(input, n, 3).map(Some);
    }
    Ok(None)
}

/// The words of the spec grammar that are not host names, whatever their case: `fd:80`
/// is a descriptor, never host `fd` on port 80. For a host by such a name, write its
/// absolute form (`fd.:80`).
const RESERVED: [&str; 3] = ["unix", "fd", "sd-listen"];

/// A Unix-domain socket address: `@name` (abstract) or a path.
fn unix(input: &str, text: &str, offset: usize) -> Result<SpecKind> {
    let invalid =
        |kind, pos: usize, detail: String| ParseError::new(input, kind, Some(pos), detail);
    if !cfg!(unix) {
        return Err(invalid(
            Unsupported,
            0,
            "Unix-domain sockets are not supported on this platform".to_owned(),
        ));
    }
    if let Some((i, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(invalid(
            InvalidPath,
            offset + i,
            format!(
                "control character {c:?} at byte {} of the socket address",
                offset + i
            ),
        ));
    }
    if text.trim() != text {
        return Err(invalid(
            Whitespace,
            offset,
            format!(
                "whitespace around the socket address; remove it, as in {:?}",
                text.trim()
            ),
        ));
    }
    if let Some(name) = text.strip_prefix('@') {
        if !cfg!(any(target_os = "linux", target_os = "android")) {
            return Err(invalid(
                Unsupported,
                offset,
                format!(
                    "abstract Unix-domain sockets (\"@{name}\") exist only on Linux, not on {}",
                    std::env::consts::OS
                ),
            ));
        }
        if name.is_empty() {
            return Err(invalid(
                InvalidPath,
                offset + 1,
                r#"the abstract socket name after "@" is empty, as in "@app""#.to_owned(),
            ));
        }
        if name.len() > MAX_UNIX_PATH {
            return Err(invalid(
                PathTooLong,
                offset,
                format!(
                    "the abstract socket name is {} bytes long; it holds at most {MAX_UNIX_PATH} here",
                    name.len()
                ),
            ));
        }
        return Ok(SpecKind::Unix(UnixAddr::Abstract(name.as_bytes().to_vec())));
    }
    if text.is_empty() {
        return Err(invalid(
            InvalidPath,
            offset,
            r#"the socket path is empty, as in "unix:/run/app.sock""#.to_owned(),
        ));
    }
    if text.ends_with('/') {
        return Err(invalid(
            InvalidPath,
            offset + text.len() - 1,
            format!(
                "{text:?} names a directory; give the socket's file name, as in \"{text}app.sock\""
            ),
        ));
    }
    if text.len() > MAX_UNIX_PATH {
        return Err(invalid(
            PathTooLong,
            offset,
            format!(
                "the socket path is {} bytes long; a Unix-domain socket path holds at most {MAX_UNIX_PATH} bytes here (sun_path)",
                text.len()
            ),
        ));
    }
    Ok(SpecKind::Unix(UnixAddr::Path(text.into())))
}

/// The NAME of `sd-listen:NAME`: what systemd's `FileDescriptorName=` allows (1 to 255
/// printable ASCII characters, spaces included, no `:`; an empty name selects nothing
/// and is refused).
fn fd_name(input: &str, name: &str, offset: usize) -> Result<SpecKind> {
    let invalid =
        |pos: usize, detail: String| ParseError::new(input, InvalidName, Some(pos), detail);
    if name.is_empty() || name.len() > 255 {
        return Err(invalid(
            offset,
            format!(
                "a socket name is 1 to 255 characters, as in \"sd-listen:web\"; this one is {}",
                name.len()
            ),
        ));
    }
    // systemd's fdname_is_valid: printable ASCII, space included, but no ':'.
    if let Some((i, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_graphic() || c == ' ') || c == ':')
    {
        return Err(invalid(
            offset + i,
            format!("invalid character {c:?} in the socket name {name:?}"),
        ));
    }
    Ok(SpecKind::Activated {
        name: Some(name.to_owned()),
    })
}

/// The N of `fd:N`: a descriptor number, 3 or above (0 to 2 are standard input, output and
/// error).
fn descriptor(input: &str, n: &str, offset: usize) -> Result<SpecKind> {
    let invalid = |detail: String| ParseError::new(input, InvalidFd, Some(offset), detail);
    match n.parse::<i32>() {
        Ok(fd) if fd >= 3 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(SpecKind::Fd(fd)),
        Ok(fd) if (0..3).contains(&fd) => Err(invalid(format!(
            "descriptor {fd} is standard {}, not a socket passed to listen on; inherited sockets start at 3",
            ["input", "output", "error"][fd as usize]
        ))),
        _ => Err(invalid(format!(
            "{n:?} is not a descriptor number; write fd:N, N from 3 to {}",
            i32::MAX
        ))),
    }
}

/// Parses the host of a `(host, port)` pair, where an IPv6 address needs no brackets.
pub(crate) fn tuple_host(host: &str) -> Result<Host> {
    let parsed = if host.len() > MAX_LEN {
        Err(too_long(host))
    } else if host.is_empty() || host == "*" {
        Ok(Host::Any)
    } else if let Some(pos) = host.find(char::is_whitespace) {
        let trimmed = host.trim();
        Err(whitespace(
            host,
            pos,
            trimmed != host && tuple_host(trimmed).is_ok(),
        ))
    } else if host.contains("://") {
        Err(ParseError::new(
            host,
            LooksLikeUrl,
            None,
            "this looks like a URL; give only the host name or address",
        ))
    } else if let Some(inner) = host.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        ipv6_host(host, inner, 1)
    } else if host.matches(':').count() == 1 && !host.contains("::") {
        Err(ParseError::new(
            host,
            InvalidHostName,
            host.find(':'),
            "a host cannot hold a port; give the port separately",
        ))
    } else if host.contains(':') {
        ipv6_host(host, host, 0)
    } else {
        plain_host(host, host, 0)
    };
    parsed.map_err(ParseError::of_host)
}

fn whitespace(input: &str, pos: usize, trimmed_is_valid: bool) -> ParseError {
    let hint = if trimmed_is_valid {
        format!("; remove it, as in {:?}", input.trim())
    } else {
        String::new()
    };
    ParseError::new(
        input,
        Whitespace,
        Some(pos),
        format!("it contains whitespace at byte {pos}{hint}"),
    )
}

/// A URL was pasted in: suggest its host and port.
fn url(input: &str, scheme_end: usize) -> ParseError {
    let scheme = &input[..scheme_end];
    let rest = &input[scheme_end + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let suggestion = if !authority.is_empty() && authority.contains(':') && spec(authority).is_ok()
    {
        Some(authority.to_owned())
    } else {
        default_port
            .map(|p| format!("{authority}:{p}"))
            .filter(|s| !authority.is_empty() && spec(s).is_ok())
    };
    let detail = match suggestion {
        Some(s) => format!("this looks like a URL; give only the host and port, as in {s:?}"),
        None => r#"this looks like a URL; give only the host and port, as in "localhost:8080""#
            .to_owned(),
    };
    ParseError::new(input, LooksLikeUrl, Some(0), detail)
}

/// More than one `:` and no brackets: most likely an IPv6 address. Suggest the bracketed form.
fn unbracketed(input: &str) -> ParseError {
    let split = input.rsplit_once(':').filter(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && ipv6_host(input, h, 0).is_ok()
    });
    let detail = match split {
        Some((h, p)) => format!("an IPv6 address needs brackets, as in \"[{h}]:{p}\""),
        None if ipv6_host(input, input, 0).is_ok() => {
            format!("an IPv6 address needs brackets and a port, as in \"[{input}]:8080\"")
        }
        None => r#"too many ":"; an IPv6 address needs brackets, as in "[::1]:80""#.to_owned(),
    };
    ParseError::new(input, UnbracketedIpv6, None, detail)
}

/// `rest` is what follows the opening `[`.
fn bracketed(input: &str, rest: &str) -> Result<ListenSpec> {
    let Some(close) = rest.find(']') else {
        return Err(ParseError::new(
            input,
            MissingBracket,
            Some(input.len()),
            r#"missing "]" after IPv6 address"#,
        ));
    };
    let host = ipv6_host(input, &rest[..close], 1)?;
    let after = &rest[close + 1..];
    match after.strip_prefix(':') {
        Some(port_text) => Ok(ListenSpec::new(host, port(input, port_text, close + 3)?)),
        None if after.is_empty() => Err(ParseError::new(
            input,
            MissingPort,
            Some(input.len()),
            format!("missing port, as in \"{input}:8080\" (port 0 lets the system choose)"),
        )),
        None => {
            let found = after.chars().next().unwrap_or_default();
            Err(ParseError::new(
                input,
                UnexpectedCharacter,
                Some(close + 2),
                format!(r#"expected ":" and a port after "]", found {found:?}"#),
            ))
        }
    }
}

/// An IPv6 address with an optional `%zone`, without brackets.
fn ipv6_host(input: &str, text: &str, offset: usize) -> Result<Host> {
    let (addr_text, zone_text) = match text.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (text, None),
    };
    let addr: Ipv6Addr = addr_text.parse().map_err(|_| {
        let detail = if addr_text.is_empty() {
            r#"the brackets are empty; an IPv6 address goes inside, as in "[::1]:80""#.to_owned()
        } else if addr_text.parse::<Ipv4Addr>().is_ok() {
            format!("{addr_text:?} is an IPv4 address; brackets are only for IPv6 addresses")
        } else {
            format!("{addr_text:?} is not a valid IPv6 address")
        };
        ParseError::new(input, InvalidIpv6, Some(offset), detail)
    })?;
    let zone = match zone_text {
        Some(z) => zone(input, z, offset + addr_text.len() + 1)?,
        None => None,
    };
    Ok(Host::V6(addr, zone))
}

/// The text after `%`. `None` is the zone index 0, which RFC 4007 §6 calls the default zone and
/// which `std` accepts: it is the same as no zone at all.
pub(crate) fn zone(input: &str, text: &str, offset: usize) -> Result<Option<Zone>> {
    let invalid =
        |pos: usize, detail: String| ParseError::new(input, InvalidZone, Some(pos), detail);
    if text.is_empty() {
        return Err(invalid(
            offset,
            r#"the zone after "%" is empty; name an interface, as in "%eth0" or "%2""#.to_owned(),
        ));
    }
    let is_index = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // RFC 6874: in a URI "%" is escaped as "%25", so "%25eth0" is zone "eth0". An all-digit
    // remainder stays a plain index ("%251" is interface 251), which is what Display writes.
    let (body, body_offset) = match text.strip_prefix("25") {
        Some(rest) if !rest.is_empty() && !is_index(rest) => (rest, offset + 2),
        _ => (text, offset),
    };
    if is_index(body) {
        return match body.parse::<u32>() {
            Ok(index) => Ok(Zone::from_index(index)),
            Err(_) => Err(invalid(
                body_offset,
                format!("zone index {body} is too large for an interface index"),
            )),
        };
    }
    if let Some((i, c)) = body
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "-._~".contains(c)))
    {
        return Err(invalid(
            body_offset + i,
            format!(
                "invalid character {c:?} in zone {body:?}; an interface name holds letters, digits, \"-\", \".\", \"_\" and \"~\""
            ),
        ));
    }
    Ok(Some(Zone::name_unchecked(body.to_owned())))
}

/// Whether `name` parses as a zone *name* (and so prints and reads back as itself): zone
/// characters only, and not all digits (which would be an index).
pub(crate) fn is_zone_name(name: &str) -> bool {
    !name.is_empty()
        && !name.bytes().all(|b| b.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
}

/// A host without `:`: a dotted-quad IPv4 address or a DNS name.
fn plain_host(input: &str, text: &str, offset: usize) -> Result<Host> {
    match text.parse::<Ipv4Addr>() {
        Ok(addr) => Ok(Host::V4(addr)),
        Err(_) => host_name(input, text, offset).map(Host::Name),
    }
}

/// Whether the last label is a number (decimal, or `0x` hexadecimal): the WHATWG URL rule for
/// "this host is meant as an IPv4 address". Resolvers read such names as legacy IPv4 forms
/// (`inet_aton("127.1")` is 127.0.0.1), so they are never names here.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Explains why `text`, which ends in a number, is not a valid IPv4 address.
fn invalid_ipv4(input: &str, text: &str, offset: usize) -> ParseError {
    let parts: Vec<&str> = text.split('.').collect();
    let why = if let Some(addr) = text
        .strip_suffix('.')
        .and_then(|t| t.parse::<Ipv4Addr>().ok())
    {
        format!("an IPv4 address takes no trailing dot (only names do), as in \"{addr}\"")
    } else if parts.len() != 4 {
        r#"it needs four decimal parts, as in "127.0.0.1""#.to_owned()
    } else if let Some(p) = parts.iter().find(|p| p.len() > 1 && p.starts_with('0')) {
        format!("part {p:?} has a leading zero, which some parsers read as octal")
    } else if let Some(p) = parts.iter().find(|p| p.parse::<u8>().is_err()) {
        format!("part {p:?} is not a number from 0 to 255")
    } else {
        r#"it needs four decimal parts, as in "127.0.0.1""#.to_owned()
    };
    ParseError::new(
        input,
        InvalidIpv4,
        Some(offset),
        format!("{text:?} ends in a number but is not a valid IPv4 address: {why}"),
    )
}

/// A DNS name: labels of 1 to 63 letters, digits, `-` or `_`, neither beginning nor ending
/// with `-` (RFC 952, RFC 1123 §2.1); 253 characters at most, not counting an optional
/// trailing dot.
pub(crate) fn host_name(input: &str, text: &str, offset: usize) -> Result<HostName> {
    let invalid =
        |pos: usize, detail: String| ParseError::new(input, InvalidHostName, Some(pos), detail);
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err(invalid(offset, "the host name is empty".to_owned()));
    }
    if let Some(word) = RESERVED.iter().find(|w| w.eq_ignore_ascii_case(text)) {
        return Err(invalid(
            offset,
            format!("{text:?} is a word of the spec grammar ({word}:…), not a host name; for a host by that name write its absolute form, \"{text}.\""),
        ));
    }
    if ends_in_number(name) {
        return Err(invalid_ipv4(input, text, offset));
    }
    if name.len() > 253 {
        return Err(invalid(
            offset,
            format!(
                "the host name is {} characters long; the limit is 253",
                name.len()
            ),
        ));
    }
    let mut label_offset = offset;
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid(
                label_offset,
                format!("empty label at byte {label_offset} of the host name (two dots in a row, or a leading dot)"),
            ));
        }
        if label.len() > 63 {
            return Err(invalid(
                label_offset,
                format!(
                    "a label of the host name is {} characters long; the limit is 63",
                    label.len()
                ),
            ));
        }
        if let Some((i, c)) = label
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            let pos = label_offset + i;
            let idn = if c.is_ascii() {
                ""
            } else {
                "; give an internationalized name in its ASCII (\"xn--\") form"
            };
            return Err(invalid(
                pos,
                format!("invalid character {c:?} in host name at byte {pos}{idn}"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            let at = if label.starts_with('-') {
                label_offset
            } else {
                label_offset + label.len() - 1
            };
            return Err(invalid(
                at,
                format!("the label {label:?} begins or ends with \"-\", which a host name may not"),
            ));
        }
        label_offset += label.len() + 1;
    }
    Ok(HostName::new_unchecked(text.to_ascii_lowercase()))
}

/// Decimal digits only, 0 to 65535. Leading zeros are allowed, as `std` allows them.
fn port(input: &str, text: &str, offset: usize) -> Result<u16> {
    if text.is_empty() {
        return Err(ParseError::new(
            input,
            MissingPort,
            Some(offset),
            format!("missing port number after \":\", as in \"{input}8080\""),
        ));
    }
    if let Some(i) = text.bytes().position(|b| !b.is_ascii_digit()) {
        let is_word = text.as_bytes()[0].is_ascii_alphabetic()
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if is_word {
            let known = well_known_port(text)
                .map(|p| format!(" ({text} is port {p})"))
                .unwrap_or_default();
            return Err(ParseError::new(
                input,
                ServiceName,
                Some(offset),
                format!("port {text:?} is a service name; ports are numbers only and names are never looked up{known}"),
            ));
        }
        return Err(ParseError::new(
            input,
            InvalidPort,
            Some(offset + i),
            format!("port {text:?} is not a decimal number from 0 to 65535"),
        ));
    }
    let value = text.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    u16::try_from(value).map_err(|_| {
        ParseError::new(
            input,
            PortOutOfRange,
            Some(offset),
            format!("port {text} is out of range; ports are 0 to 65535"),
        )
    })
}

/// A few service names people type, for the hint only: nothing is ever looked up.
fn well_known_port(name: &str) -> Option<u16> {
    Some(match name.to_ascii_lowercase().as_str() {
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" | "dns" => 53,
        "http" | "www" => 80,
        "pop3" => 110,
        "imap" => 143,
        "https" => 443,
        "imaps" => 993,
        _ => return None,
    })
}

// Making the address layer's values from text: every parse goes through this file.

impl FromStr for ListenSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<ListenSpec, ParseError> {
        spec(s)
    }
}

impl TryFrom<&str> for ListenSpec {
    type Error = ParseError;

    fn try_from(s: &str) -> std::result::Result<ListenSpec, ParseError> {
        spec(s)
    }
}

impl Host {
    /// Parses the host of a `(host, port)` pair: `""` or `"*"` for [`Host::Any`], an IPv4
    /// address, an IPv6 address with or without brackets and with an optional zone
    /// (`"fe80::1%eth0"`), or a DNS name.
    ///
    /// ```
    /// use dualstack::Host;
    /// assert_eq!(Host::parse("")?, Host::Any);
    /// assert_eq!(Host::parse("::1")?, Host::V6(std::net::Ipv6Addr::LOCALHOST, None));
    /// assert_eq!(Host::parse("LocalHost")?.to_string(), "localhost");
    /// # Ok::<(), dualstack::ParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ParseError`] naming the host when it is none of these.
    pub fn parse(host: &str) -> std::result::Result<Host, ParseError> {
        tuple_host(host)
    }
}

impl HostName {
    /// Validates `name` as a DNS host name and lower-cases it.
    ///
    /// ```
    /// use dualstack::HostName;
    /// assert_eq!(HostName::new("Example.COM.")?.as_str(), "example.com.");
    /// assert!(HostName::new("127.1").is_err()); // numeric-looking: never a name
    /// # Ok::<(), dualstack::ParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when a label is empty or over 63 characters, the name is over 253,
    /// a character is not a letter, digit, `-` or `_`, or the last label is numeric.
    pub fn new(name: &str) -> std::result::Result<HostName, ParseError> {
        host_name(name, name, 0).map_err(ParseError::of_host)
    }
}

impl Zone {
    /// Parses the text after `%`: an index (`2`), an interface name (`eth0`), or either in the
    /// URI form of RFC 6874 (`25eth0`, where `%25` is an escaped `%`).
    ///
    /// ```
    /// use dualstack::Zone;
    /// assert_eq!(Zone::parse("eth0")?.name(), Some("eth0"));
    /// assert_eq!(Zone::parse("25eth0")?.name(), Some("eth0"));
    /// assert_eq!(Zone::parse("2")?.index(), Some(2));
    /// assert!(Zone::parse("0").is_err());
    /// # Ok::<(), dualstack::ParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when the zone is empty, index 0, too large an index, or holds a
    /// character other than letters, digits, `-`, `.`, `_` and `~`.
    pub fn parse(text: &str) -> std::result::Result<Zone, ParseError> {
        match zone(text, text, 0) {
            Ok(Some(zone)) => Ok(zone),
            Ok(None) => Err(ParseError::new(
                text,
                ParseErrorKind::InvalidZone,
                Some(0),
                "zone index 0 names no interface",
            )
            .of_host()),
            Err(e) => Err(e.of_host()),
        }
    }

    /// The zone to print for interface `index`, called `name`: the name where it reads back
    /// as that same name, the number otherwise, so that a printed address never names
    /// another interface. An interface called `7` would read back as index 7, and one called
    /// `a+b` would not parse at all: both print as their index. `None` for index 0.
    ///
    /// ```
    /// use dualstack::Zone;
    /// assert_eq!(Zone::for_interface(2, Some("eth0")).unwrap().to_string(), "eth0");
    /// assert_eq!(Zone::for_interface(3, Some("7")).unwrap().to_string(), "3");
    /// assert_eq!(Zone::for_interface(4, Some("a+b")).unwrap().to_string(), "4");
    /// assert_eq!(Zone::for_interface(5, Some("25x")).unwrap().to_string(), "2525x");
    /// assert_eq!(Zone::for_interface(6, None).unwrap().to_string(), "6");
    /// ```
    pub fn for_interface(index: u32, name: Option<&str>) -> Option<Zone> {
        let by_index = Zone::from_index(index)?;
        match name {
            Some(n) if is_zone_name(n) => Some(Zone::name_unchecked(n.to_owned())),
            _ => Some(by_index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::ParseErrorKind;
    use super::*;

    /// Accepted specs and their canonical form; each canonical form must parse back equal.
    const ACCEPTED: &[(&str, &str)] = &[
        ("localhost:80", "localhost:80"),
        ("LocalHost:80", "localhost:80"),
        ("example.com.:443", "example.com.:443"),
        ("my_host-1.example:1", "my_host-1.example:1"),
        ("xn--bcher-kva.example:80", "xn--bcher-kva.example:80"),
        ("1a:80", "1a:80"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("0.0.0.0:0", "0.0.0.0:0"),
        ("[::1]:8080", "[::1]:8080"),
        ("[::]:80", "[::]:80"),
        ("[0:0:0:0:0:0:0:1]:1", "[::1]:1"),
        ("[::FFFF:1.2.3.4]:80", "[::ffff:1.2.3.4]:80"),
        ("[fe80::1%eth0]:80", "[fe80::1%eth0]:80"),
        ("[fe80::1%eth0.100]:80", "[fe80::1%eth0.100]:80"),
        ("[fe80::1%2]:80", "[fe80::1%2]:80"),
        ("[fe80::1%02]:80", "[fe80::1%2]:80"),
        ("[fe80::1%25eth0]:80", "[fe80::1%eth0]:80"),
        ("[fe80::1%25]:80", "[fe80::1%25]:80"),
        ("[fe80::1%251]:80", "[fe80::1%251]:80"),
        ("[fe80::1%2525x]:80", "[fe80::1%2525x]:80"),
        ("[fe80::1%0]:80", "[fe80::1]:80"),
        (":80", "*:80"),
        ("*:80", "*:80"),
        ("80", "*:80"),
        ("0", "*:0"),
        ("65535", "*:65535"),
        ("localhost:0080", "localhost:80"),
        ("localhost:0", "localhost:0"),
    ];

    #[test]
    fn accepted_specs_print_canonically_and_round_trip() {
        for (input, canonical) in ACCEPTED {
            let spec = spec(input).unwrap_or_else(|e| panic!("{input:?} was rejected: {e}"));
            assert_eq!(spec.to_string(), *canonical, "Display of {input:?}");
            let again = super::spec(canonical)
                .unwrap_or_else(|e| panic!("canonical {canonical:?} was rejected: {e}"));
            assert_eq!(again, spec, "round trip of {input:?}");
        }
    }

    #[test]
    fn host_kinds_stay_distinct() {
        let v6 = |s: &str| Host::V6(s.parse().unwrap(), None);
        let cases: &[(&str, Host)] = &[
            (":1", Host::Any),
            ("*:1", Host::Any),
            ("1", Host::Any),
            ("0.0.0.0:1", Host::V4(Ipv4Addr::UNSPECIFIED)),
            ("[::]:1", v6("::")),
            ("127.0.0.1:1", Host::V4(Ipv4Addr::LOCALHOST)),
            ("[::ffff:127.0.0.1]:1", v6("::ffff:127.0.0.1")),
            (
                "[fe80::1%7]:1",
                Host::V6("fe80::1".parse().unwrap(), Zone::from_index(7)),
            ),
            (
                "[fe80::1%eth0]:1",
                Host::V6(
                    "fe80::1".parse().unwrap(),
                    Some(Zone::parse("eth0").unwrap()),
                ),
            ),
        ];
        for (input, host) in cases {
            assert_eq!(spec(input).unwrap().host(), Some(host), "host of {input:?}");
        }
        assert!(
            matches!(spec("localhost:1").unwrap().host(), Some(Host::Name(n)) if n.as_str() == "localhost")
        );
    }

    #[test]
    fn names_at_the_length_limits() {
        let label63 = "a".repeat(63);
        assert!(spec(&format!("{label63}:1")).is_ok());
        assert_eq!(
            spec(&format!("{}:1", "a".repeat(64))).unwrap_err().kind(),
            ParseErrorKind::InvalidHostName
        );
        // 4 labels of 63 plus 3 dots = 255; trim to exactly 253 and 254.
        let long = [label63.as_str(); 4].join(".");
        let name253 = &long[..253];
        let name254 = &long[..254];
        assert!(
            spec(&format!("{name253}:1")).is_ok(),
            "253 characters must be accepted"
        );
        assert!(
            spec(&format!("{name253}.:1")).is_ok(),
            "the trailing dot does not count"
        );
        let err = spec(&format!("{name254}:1")).unwrap_err();
        assert_eq!(err.kind(), ParseErrorKind::InvalidHostName);
        assert!(
            err.to_string()
                .contains("254 characters long; the limit is 253"),
            "{err}"
        );
    }

    /// (input, kind, a part of the message that must appear).
    const REJECTED: &[(&str, ParseErrorKind, &str)] = &[
        ("", Empty, r#"invalid listen spec "": it is empty"#),
        (
            " localhost:80",
            Whitespace,
            r#"at byte 0; remove it, as in "localhost:80""#,
        ),
        ("localhost: 80", Whitespace, "at byte 10"),
        ("local host:80", Whitespace, "at byte 5"),
        (
            "http://localhost:8080",
            LooksLikeUrl,
            r#"give only the host and port, as in "localhost:8080""#,
        ),
        (
            "https://user@example.com/path?q",
            LooksLikeUrl,
            r#"as in "example.com:443""#,
        ),
        ("ftp://", LooksLikeUrl, r#"as in "localhost:8080""#),
        (
            "::1:80",
            UnbracketedIpv6,
            r#"invalid listen spec "::1:80": an IPv6 address needs brackets, as in "[::1]:80""#,
        ),
        (
            "fe80::1%eth0:80",
            UnbracketedIpv6,
            r#"as in "[fe80::1%eth0]:80""#,
        ),
        (
            "::1",
            UnbracketedIpv6,
            r#"needs brackets and a port, as in "[::1]:8080""#,
        ),
        ("a:b:c", UnbracketedIpv6, "too many"),
        (
            "[::1:80",
            MissingBracket,
            r#"invalid listen spec "[::1:80": missing "]" after IPv6 address"#,
        ),
        (
            "localhost",
            MissingPort,
            r#"missing port, as in "localhost:8080""#,
        ),
        ("[::1]", MissingPort, r#"as in "[::1]:8080""#),
        ("localhost:", MissingPort, r#"as in "localhost:8080""#),
        ("*", MissingPort, r#"as in "*:8080""#),
        (":", MissingPort, "missing port"),
        (
            "localhost:70000",
            PortOutOfRange,
            "port 70000 is out of range; ports are 0 to 65535",
        ),
        ("65536", PortOutOfRange, "out of range"),
        (
            "localhost:99999999999999999999",
            PortOutOfRange,
            "out of range",
        ),
        (":http", ServiceName, "(http is port 80)"),
        (
            "localhost:https",
            ServiceName,
            "names are never looked up (https is port 443)",
        ),
        ("localhost:myservice", ServiceName, "service name"),
        ("localhost:8o80", InvalidPort, "not a decimal number"),
        ("localhost:+80", InvalidPort, "not a decimal number"),
        ("localhost:-1", InvalidPort, "not a decimal number"),
        (
            "[::g]:80",
            InvalidIpv6,
            r#""::g" is not a valid IPv6 address"#,
        ),
        (
            "[1.2.3.4]:80",
            InvalidIpv6,
            "brackets are only for IPv6 addresses",
        ),
        ("[]:80", InvalidIpv6, "brackets are empty"),
        (
            "256.1.1.1:80",
            InvalidIpv4,
            r#"part "256" is not a number from 0 to 255"#,
        ),
        ("127.1:80", InvalidIpv4, "four decimal parts"),
        ("01.2.3.4:80", InvalidIpv4, "leading zero"),
        ("0x7f.1:80", InvalidIpv4, "not a valid IPv4 address"),
        ("example.0x:80", InvalidIpv4, "not a valid IPv4 address"),
        ("1.2.3.4.:80", InvalidIpv4, "not a valid IPv4 address"),
        (
            "foo!:80",
            InvalidHostName,
            "invalid character '!' in host name at byte 3",
        ),
        ("a..b:80", InvalidHostName, "empty label at byte 2"),
        (".a:80", InvalidHostName, "empty label"),
        (".:80", InvalidHostName, "empty"),
        ("bücher.example:80", InvalidHostName, "xn--"),
        (
            "[fe80::1%]:80",
            InvalidZone,
            "the zone after \"%\" is empty",
        ),
        (
            "[fe80::1%eth/0]:80",
            InvalidZone,
            "invalid character '/' in zone",
        ),
        ("[fe80::1%25eth%0]:80", InvalidZone, "invalid character '%'"),
        ("[fe80::1%99999999999]:80", InvalidZone, "too large"),
        (
            "[::1]x80",
            UnexpectedCharacter,
            r#"expected ":" and a port after "]", found 'x'"#,
        ),
        ("[::1]]:80", UnexpectedCharacter, "found ']'"),
        (
            "127.0.0.1.:80",
            InvalidIpv4,
            r#"an IPv4 address takes no trailing dot (only names do), as in "127.0.0.1""#,
        ),
        (
            "-a:80",
            InvalidHostName,
            r#"the label "-a" begins or ends with "-""#,
        ),
        (
            "ex-.-ample:80",
            InvalidHostName,
            r#"the label "ex-" begins"#,
        ),
        (
            "xn--:80",
            InvalidHostName,
            r#"the label "xn--" begins or ends"#,
        ),
        ("a.b-:80", InvalidHostName, r#"label "b-""#),
    ];

    /// Issue #13, item 8: a 4 MB spec gave an 8 MB error message.
    #[test]
    fn input_too_long_for_a_spec_gets_a_short_message() {
        for input in [
            "a".repeat(4 << 20) + ":80",
            format!("localhost:{}", "9".repeat(4 << 20)),
            format!("[::1%{}]:80", "e".repeat(4 << 20)),
            format!("localhost:{}", "x".repeat(4 << 20)),
            "é".repeat(1 << 20),
        ] {
            let err = spec(&input).unwrap_err();
            assert_eq!(err.kind(), TooLong);
            let text = err.to_string();
            assert!(text.len() < 300, "{} bytes: {}", text.len(), &text[..300]);
            assert!(text.contains(&format!("({} bytes)", input.len())), "{text}");
            let err = tuple_host(&input).unwrap_err();
            assert!(err.to_string().len() < 300);
        }
        // The longest valid specs are well within the limit.
        let name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert!(spec(&format!("{name}.:65535")).is_ok());
    }

    /// Specs that are not a host and a port, their kind and their canonical form.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_other_kinds_parse_print_and_round_trip() {
        let path = |p: &str| SpecKind::Unix(UnixAddr::Path(p.into()));
        let named = |n: &str| SpecKind::Activated {
            name: Some(n.to_owned()),
        };
        let cases: Vec<(&str, SpecKind, &str)> = vec![
            (
                "unix:/run/app.sock",
                path("/run/app.sock"),
                "unix:/run/app.sock",
            ),
            ("/run/app.sock", path("/run/app.sock"), "unix:/run/app.sock"),
            ("./app.sock", path("./app.sock"), "unix:./app.sock"),
            (
                "../up/app.sock",
                path("../up/app.sock"),
                "unix:../up/app.sock",
            ),
            ("unix:app.sock", path("app.sock"), "unix:app.sock"),
            (
                "unix:///var/run/x.sock",
                path("///var/run/x.sock"),
                "unix:///var/run/x.sock",
            ),
            (
                "unix:/with space/s",
                path("/with space/s"),
                "unix:/with space/s",
            ),
            (
                "unix:@app",
                SpecKind::Unix(UnixAddr::Abstract(b"app".to_vec())),
                "unix:@app",
            ),
            (
                "@app:1",
                SpecKind::Unix(UnixAddr::Abstract(b"app:1".to_vec())),
                "unix:@app:1",
            ),
            ("sd-listen", SpecKind::Activated { name: None }, "sd-listen"),
            ("sd-listen:web", named("web"), "sd-listen:web"),
            ("sd-listen:a.b-c_d", named("a.b-c_d"), "sd-listen:a.b-c_d"),
            ("sd-listen:my sock", named("my sock"), "sd-listen:my sock"),
            ("fd:3", SpecKind::Fd(3), "fd:3"),
            ("fd:2147483647", SpecKind::Fd(i32::MAX), "fd:2147483647"),
            ("UNIX:/a", path("/a"), "unix:/a"),
            ("SD-Listen", SpecKind::Activated { name: None }, "sd-listen"),
            ("Sd-Listen:Web", named("Web"), "sd-listen:Web"),
            ("FD:4", SpecKind::Fd(4), "fd:4"),
        ];
        for (input, kind, canonical) in cases {
            let parsed = spec(input).unwrap_or_else(|e| panic!("{input:?} was rejected: {e}"));
            assert_eq!(parsed.kind(), &kind, "{input:?}");
            assert_eq!(parsed.host(), None, "{input:?}");
            assert_eq!(parsed.port(), None, "{input:?}");
            assert_eq!(parsed.to_string(), canonical, "{input:?}");
            assert_eq!(spec(canonical).unwrap(), parsed, "round trip of {input:?}");
            assert_eq!(parsed.written(), Some(input));
        }
        // The longest path and abstract name that fit, and one byte more.
        let longest = format!("/{}", "p".repeat(106));
        assert!(spec(&longest).is_ok());
        assert_eq!(
            spec(&format!("{longest}p")).unwrap_err().kind(),
            PathTooLong
        );
        let name = "n".repeat(107);
        assert!(spec(&format!("@{name}")).is_ok());
        assert_eq!(spec(&format!("@{name}n")).unwrap_err().kind(), PathTooLong);
    }

    /// Where there are no Unix-domain sockets (Windows), such specs are refused at parse
    /// time, naming the platform; elsewhere off Linux, abstract names are.
    #[test]
    fn unix_specs_off_unix_and_abstract_names_off_linux_are_refused() {
        let unix = spec("unix:/run/app.sock");
        let abstract_name = spec("@app");
        if cfg!(unix) {
            assert!(unix.is_ok());
        } else {
            let e = unix.unwrap_err();
            assert_eq!(e.kind(), Unsupported);
            assert!(
                e.to_string().contains("not supported on this platform"),
                "{e}"
            );
        }
        if cfg!(any(target_os = "linux", target_os = "android")) {
            assert!(abstract_name.is_ok());
        } else {
            let e = abstract_name.unwrap_err();
            assert_eq!(e.kind(), Unsupported);
            assert!(
                e.to_string().contains(std::env::consts::OS) || !cfg!(unix),
                "{e}"
            );
        }
        // Inherited sockets parse everywhere; binding one off Unix is an error
        // (tests/listen.rs, inherited_specs_are_unsupported_off_unix_with_the_platform_named).
        assert!(spec("sd-listen").is_ok() && spec("fd:3").is_ok());
    }

    #[test]
    fn the_words_of_the_grammar_are_not_host_names() {
        for host in ["fd", "FD", "unix", "Unix", "sd-listen", "SD-LISTEN"] {
            let err = tuple_host(host).unwrap_err();
            assert_eq!(err.kind(), InvalidHostName, "{host}");
            assert!(
                err.to_string().contains("a word of the spec grammar"),
                "{err}"
            );
            // The absolute name is a host name, and prints in a form that parses back.
            let absolute = format!("{host}.");
            let spec = ListenSpec::new(tuple_host(&absolute).unwrap(), 80);
            assert_eq!(super::spec(&spec.to_string()).unwrap(), spec);
        }
        assert!(tuple_host("fdx").is_ok() && tuple_host("unix1").is_ok());
    }

    #[test]
    fn the_other_kinds_refuse_bad_input_clearly() {
        let cases: &[(&str, ParseErrorKind, &str)] = &[
            ("unix:", InvalidPath, "the socket path is empty"),
            ("unix:/run/", InvalidPath, "names a directory"),
            ("/tmp/a\nb", InvalidPath, "control character"),
            (
                "unix: /run/a",
                Whitespace,
                "whitespace around the socket address",
            ),
            ("@", InvalidPath, "name after \"@\" is empty"),
            ("sd-listen:", InvalidName, "1 to 255 characters"),
            ("sd-listen:a:b", InvalidName, "invalid character ':'"),
            ("sd-listen:a\tb", InvalidName, "invalid character '\\t'"),
            ("fd:0", InvalidFd, "descriptor 0 is standard input"),
            ("fd:2", InvalidFd, "descriptor 2 is standard error"),
            ("fd:-3", InvalidFd, "\"-3\" is not a descriptor number"),
            ("fd:+3", InvalidFd, "\"+3\" is not a descriptor number"),
            ("fd:", InvalidFd, "is not a descriptor number"),
            ("fd:2147483648", InvalidFd, "N from 3 to 2147483647"),
            ("unix:80", InvalidPath, "write \"unix:./80\" for the file"),
            ("fd", InvalidHostName, "a word of the spec grammar"),
        ];
        for (input, kind, text) in cases {
            let unix_syntax = ["unix:", "/", "@"].iter().any(|p| input.starts_with(p));
            if unix_syntax && !cfg!(unix) {
                continue; // refused as unsupported first (the test below)
            }
            let err = spec(input).unwrap_err();
            assert_eq!(err.kind(), *kind, "{input:?}: {err}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("invalid listen spec {input:?}: ")),
                "{message}"
            );
            assert!(message.contains(text), "{input:?}: {message} lacks {text}");
        }
    }

    #[test]
    fn rejected_specs_name_the_input_and_the_mistake() {
        for (input, kind, message) in REJECTED {
            let err = match spec(input) {
                Ok(s) => panic!("{input:?} was accepted as {s}"),
                Err(e) => e,
            };
            assert_eq!(err.kind(), *kind, "kind for {input:?}: {err}");
            assert_eq!(err.input(), *input);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid listen spec {input:?}: ")),
                "{text}"
            );
            assert!(
                text.contains(message),
                "message for {input:?} lacks {message:?}: {text}"
            );
        }
    }

    #[test]
    fn positions_point_at_the_mistake() {
        let cases: &[(&str, usize)] = &[
            ("foo!:80", 3),
            ("localhost:8o80", 11),
            ("localhost: 80", 10),
            ("[fe80::1%eth/0]:80", 12),
            ("[fe80::1%25e/]:80", 12),
            ("[::1]x80", 5),
            ("a..b:80", 2),
            ("localhost:70000", 10),
        ];
        for (input, pos) in cases {
            assert_eq!(
                spec(input).unwrap_err().position(),
                Some(*pos),
                "position for {input:?}"
            );
        }
    }

    #[test]
    fn tuple_hosts() {
        let v6 = |s: &str| Host::V6(s.parse().unwrap(), None);
        let cases: &[(&str, Host)] = &[
            ("", Host::Any),
            ("*", Host::Any),
            ("::1", v6("::1")),
            ("[::1]", v6("::1")),
            ("::", v6("::")),
            ("::ffff:1.2.3.4", v6("::ffff:1.2.3.4")),
            (
                "fe80::1%eth0",
                Host::V6(
                    "fe80::1".parse().unwrap(),
                    Some(Zone::parse("eth0").unwrap()),
                ),
            ),
            ("127.0.0.1", Host::V4(Ipv4Addr::LOCALHOST)),
            ("0.0.0.0", Host::V4(Ipv4Addr::UNSPECIFIED)),
        ];
        for (input, host) in cases {
            assert_eq!(&tuple_host(input).unwrap(), host, "tuple host {input:?}");
        }
        assert_eq!(tuple_host("LOCALHOST").unwrap().to_string(), "localhost");
    }

    #[test]
    fn rejected_tuple_hosts_say_host() {
        let cases: &[(&str, ParseErrorKind, &str)] = &[
            ("localhost:80", InvalidHostName, "a host cannot hold a port"),
            (" ::1", Whitespace, r#"remove it, as in "::1""#),
            ("::g", InvalidIpv6, "not a valid IPv6 address"),
            ("http://x", LooksLikeUrl, "URL"),
            ("127.1", InvalidIpv4, "four decimal parts"),
            ("fe80::1%", InvalidZone, "empty"),
        ];
        for (input, kind, message) in cases {
            let err = tuple_host(input).unwrap_err();
            assert_eq!(err.kind(), *kind, "{input:?}: {err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid listen host {input:?}: ")),
                "{text}"
            );
            assert!(
                text.contains(message),
                "{input:?} lacks {message:?}: {text}"
            );
        }
    }
}
