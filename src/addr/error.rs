//! The error a listen spec that cannot be parsed gives back.

use std::error::Error as StdError;
use std::fmt;

/// No valid spec is longer: a 253-character name and a port, or a bracketed IPv6 address
/// with a zone, fit well within it. Longer input is refused before any hint quotes it.
pub(crate) const MAX_LEN: usize = 512;

/// A listen spec (or the host of a `(host, port)` pair) that could not be parsed.
///
/// The message quotes the input, says what is wrong with it and, for the common
/// mistakes, how to write it instead:
///
/// ```
/// use dualstack::ListenSpec;
///
/// let err = "::1:80".parse::<ListenSpec>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid listen spec "::1:80": an IPv6 address needs brackets, as in "[::1]:80""#,
/// );
/// ```
///
/// # Potential causes
///
/// - an IPv6 address without brackets: `::1:80` (write `[::1]:80`);
/// - no port: `localhost` (write `localhost:8080`; use port 0 to let the system choose);
/// - a port above 65535, or a service name such as `:http` (ports are numbers only);
/// - whitespace around or inside the spec, often from a configuration file;
/// - a URL pasted in: `http://localhost:8080` (give only `localhost:8080`);
/// - an empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    input: String,
    kind: ParseErrorKind,
    position: Option<usize>,
    detail: String,
    of_host: bool,
}

/// What kind of mistake a [`ParseError`] reports, for callers that match on it.
///
/// Each variant lists an input that produces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The input is empty: `""`.
    Empty,
    /// The input contains whitespace: `" localhost:80"`, `"localhost: 80"`.
    Whitespace,
    /// The input is a URL rather than a host and port: `"http://localhost:8080"`.
    LooksLikeUrl,
    /// An IPv6 address is written without brackets: `"::1:80"`.
    UnbracketedIpv6,
    /// An opening `[` has no matching `]`: `"[::1:80"`.
    MissingBracket,
    /// There is no port: `"localhost"`, `"[::1]"`, `"localhost:"`.
    MissingPort,
    /// The port is not a decimal number: `"localhost:8o80"`, `"localhost:+80"`.
    InvalidPort,
    /// The port is a decimal number above 65535: `"localhost:70000"`.
    PortOutOfRange,
    /// The port is a service name, which is never looked up: `":http"`.
    ServiceName,
    /// The text inside brackets is not an IPv6 address: `"[::g]:80"`, `"[1.2.3.4]:80"`.
    InvalidIpv6,
    /// The host looks numeric but is not a valid dotted-quad IPv4 address:
    /// `"256.1.1.1:80"`, `"127.1:80"`, `"01.2.3.4:80"`.
    InvalidIpv4,
    /// The host is not a valid DNS name: `"foo!:80"`, `"a..b:80"`, a label over 63 characters.
    InvalidHostName,
    /// The zone after `%` is empty, malformed or index 0: `"[fe80::1%]:80"`, `"[fe80::1%0]:80"`.
    InvalidZone,
    /// Something else follows where a `:` was expected: `"[::1]x80"`.
    UnexpectedCharacter,
    /// The input is longer than any listen spec can be (512 bytes): often a file or a
    /// variable pasted in by mistake.
    TooLong,
    /// A Unix-domain socket address is empty, names a directory, or holds a control
    /// character: `"unix:"`, `"/run/"`.
    InvalidPath,
    /// A Unix-domain socket path longer than `sun_path` holds (107 bytes on Linux).
    PathTooLong,
    /// This platform has no such socket: Unix-domain sockets off Unix, abstract ones off
    /// Linux.
    Unsupported,
    /// `fd:N` with N not a descriptor number of 3 or above: `"fd:2"`, `"fd:x"`.
    InvalidFd,
    /// The NAME of `sd-listen:NAME` is empty, too long, or holds a space or `:`.
    InvalidName,
}

impl ParseError {
    pub(crate) fn new(
        input: &str,
        kind: ParseErrorKind,
        position: Option<usize>,
        detail: impl Into<String>,
    ) -> ParseError {
        ParseError {
            input: input.to_owned(),
            kind,
            position,
            detail: detail.into(),
            of_host: false,
        }
    }

    /// Marks the error as being about the host of a `(host, port)` pair rather than a whole spec.
    pub(crate) fn of_host(mut self) -> ParseError {
        self.of_host = true;
        self
    }

    /// The text that failed to parse: the whole spec, or the host of a `(host, port)` pair.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// The byte offset in [`input`](ParseError::input) where the problem was found, when it is
    /// at one place.
    pub fn position(&self) -> Option<usize> {
        self.position
    }
}

impl fmt::Display for ParseError {
    /// `invalid listen spec "INPUT": WHAT IS WRONG`. An input too long to be a spec is
    /// quoted by its first 64 characters only, so the message stays one readable line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.of_host { "host" } else { "spec" };
        const SHOWN: usize = 64;
        match self.input.char_indices().nth(SHOWN) {
            Some((end, _)) if self.input.len() > MAX_LEN => write!(
                f,
                "invalid listen {} {:?}… ({} bytes): {}",
                what,
                &self.input[..end],
                self.input.len(),
                self.detail
            ),
            _ => write!(
                f,
                "invalid listen {} {:?}: {}",
                what, self.input, self.detail
            ),
        }
    }
}

impl StdError for ParseError {}
