//! [`ListenSpec`] and its parts: where a server should listen, as the user said it.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::num::NonZeroU32;

use super::error::ParseError;
use crate::sys;

/// Where a server should listen: a [`Host`] and a port, a Unix-domain socket, or sockets
/// the process was handed ([`SpecKind`]).
///
/// A spec is what the user asked for, not yet sockets: `localhost:8080` is one spec that the
/// planner later turns into two sockets (`127.0.0.1:8080` and `[::1]:8080`). Port 0 means "let
/// the system choose"; every socket planned from one spec then shares the chosen port.
///
/// Build one by parsing a string, or from anything that implements [`ToListenSpec`]:
///
/// ```
/// use dualstack::{Host, ListenSpec, ToListenSpec};
/// use std::net::Ipv6Addr;
///
/// let a: ListenSpec = "[::1]:8080".parse()?;
/// let b = ("::1", 8080).to_listen_spec()?; // the case Python's socketserver could not do
/// assert_eq!(a, b);
/// assert_eq!(a.host(), Some(&Host::V6(Ipv6Addr::LOCALHOST, None)));
///
/// let any: ListenSpec = ":8080".parse()?;
/// assert_eq!(any.host(), Some(&Host::Any));
/// assert_eq!(any.to_string(), "*:8080");
///
/// # #[cfg(unix)] {
/// let local: ListenSpec = "./app.sock".parse()?; // a Unix-domain socket (Unix only)
/// assert_eq!(local.to_string(), "unix:./app.sock");
/// assert_eq!(local.port(), None);
/// # }
/// # Ok::<(), dualstack::ParseError>(())
/// ```
///
/// # Grammar
///
/// | form | meaning |
/// |---|---|
/// | `HOST:PORT` | a DNS name (`localhost:80`, `example.com.:80`) or a dotted-quad IPv4 address (`127.0.0.1:80`) |
/// | `[IPV6]:PORT` | an IPv6 address, optionally with a zone: `[::1]:80`, `[fe80::1%eth0]:80`, `[fe80::1%2]:80`, `[fe80::1%25eth0]:80` (RFC 6874) |
/// | `:PORT`, `*:PORT`, `PORT` | every address of every family: [`Host::Any`] |
/// | `0.0.0.0:PORT`, `[::]:PORT` | the IPv4 or the IPv6 "any" address only |
/// | `unix:/run/app.sock`, `/run/app.sock`, `./app.sock` | a Unix-domain stream socket at that path (Unix only) |
/// | `unix:@name`, `@name` | a Linux abstract Unix-domain socket |
/// | `sd-listen` | every socket the service manager passed (`LISTEN_FDS`, systemd socket activation) |
/// | `sd-listen:NAME` | those of them named NAME (`LISTEN_FDNAMES`; names may repeat) |
/// | `fd:N` | the inherited descriptor N (3 or above), whatever passed it |
///
/// PORT is decimal digits only, 0 to 65535. Names are case-insensitive (kept in lower case).
/// A host that ends in a numeric label must be a valid dotted quad: `127.1` and `0x7f.1` are
/// errors, never names handed to a resolver that would read them as legacy IPv4 forms.
///
/// `Display` prints the canonical form, and parsing it gives back an equal spec. A spec
/// parsed from text also keeps that text ([`written`](ListenSpec::written)), which errors
/// and logs quote, so that a user who typed `:7000` reads `:7000`, not `*:7000`; it takes no
/// part in equality.
#[derive(Debug, Clone)]
pub struct ListenSpec {
    kind: SpecKind,
    written: Option<Box<str>>,
}

impl PartialEq for ListenSpec {
    fn eq(&self, other: &ListenSpec) -> bool {
        self.kind == other.kind
    }
}

impl Eq for ListenSpec {}

impl std::hash::Hash for ListenSpec {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

/// What a [`ListenSpec`] names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpecKind {
    /// A host and a port: sockets this process opens, after planning.
    Ip {
        /// The host.
        host: Host,
        /// The port; 0 lets the system choose.
        port: u16,
    },
    /// A Unix-domain stream socket this process opens.
    Unix(UnixAddr),
    /// Listening sockets the service manager passed (systemd socket activation,
    /// `sd_listen_fds(3)`): every one, or those whose name is `name`.
    Activated {
        /// The `LISTEN_FDNAMES` entry to select by; `None` for all.
        name: Option<String>,
    },
    /// The inherited descriptor `fd` (3 or above), whatever passed it.
    ///
    /// Binding it hands the descriptor to the listener, which closes it when it goes: as
    /// with `FromRawFd`, nothing else in the process may own it (a launcher's descriptor
    /// meant for this, not a socket the program opened itself). The library refuses a
    /// descriptor it has taken already, and a listening socket it opened itself and still
    /// holds; a descriptor the program owns elsewhere it cannot tell.
    Fd(i32),
}

/// The address of a Unix-domain socket: a path in the file system, or a Linux abstract name
/// (no file; it lives in the network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A path, absolute or relative to the working directory at bind time.
    Path(std::path::PathBuf),
    /// An abstract name (Linux), without the leading NUL the kernel stores.
    Abstract(Vec<u8>),
}

impl fmt::Display for UnixAddr {
    /// `unix:/path` or `unix:@name`: the spec that names it again.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "unix:{}", p.display()),
            UnixAddr::Abstract(name) => write!(f, "unix:@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// The host part of a [`ListenSpec`]; each kind stays distinct, and a numeric host is never a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Every address of every family this host has (`:80`, `*:80`, `80`): one dual-stack
    /// socket where possible, else one socket per family.
    Any,
    /// One IPv4 address, `0.0.0.0` included (which means IPv4 only).
    V4(Ipv4Addr),
    /// One IPv6 address, `::` included (which means IPv6 only), with an optional zone
    /// (RFC 4007) naming the interface a link-local address belongs to.
    V6(Ipv6Addr, Option<Zone>),
    /// A DNS name, resolved when the spec is planned: every address it resolves to gets a socket.
    Name(HostName),
}

/// A validated DNS host name, in lower case.
///
/// Labels are 1 to 63 letters, digits, hyphens or underscores; the whole name is at most 253
/// characters, not counting an optional trailing dot (which is kept: it tells the resolver
/// the name is absolute).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

/// The zone of a scoped IPv6 address (RFC 4007 §11): an interface name or a non-zero index.
///
/// A name is turned into its index when the spec is planned, so an unknown interface is
/// reported then. A zone made only of digits is always an index. The type is opaque so that
/// every zone is valid and prints in a form that parses back to itself.
///
/// ```
/// use dualstack::{Host, ListenSpec};
///
/// let spec: ListenSpec = "[fe80::1%25eth0]:80".parse()?; // the URI form of RFC 6874
/// assert_eq!(spec.to_string(), "[fe80::1%eth0]:80");
/// match spec.host() {
///     Some(Host::V6(_, Some(zone))) => assert_eq!(zone.name(), Some("eth0")),
///     other => panic!("unexpected host {other:?}"),
/// }
/// # Ok::<(), dualstack::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Zone(ZoneRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ZoneRepr {
    Index(NonZeroU32),
    Name(String),
}

impl ListenSpec {
    /// A spec for `host` and `port`.
    ///
    /// Prefer parsing or [`ToListenSpec`] for text; this constructor is for values already
    /// typed.
    ///
    /// ```
    /// use dualstack::{Host, ListenSpec};
    /// assert_eq!(ListenSpec::new(Host::Any, 0).to_string(), "*:0");
    /// ```
    pub fn new(host: Host, port: u16) -> ListenSpec {
        ListenSpec::checked(SpecKind::Ip { host, port })
    }

    /// A spec of any kind, held to the same rules as parsed text: a Unix path that fits
    /// `sun_path` and reads back as itself, a descriptor of 3 or more, a valid name.
    ///
    /// ```
    /// use dualstack::{ListenSpec, SpecKind, UnixAddr};
    /// let spec = ListenSpec::of(SpecKind::Activated { name: Some("web".into()) })?;
    /// assert_eq!(spec.to_string(), "sd-listen:web");
    /// assert!(ListenSpec::of(SpecKind::Fd(1)).is_err()); // standard output
    /// assert!(ListenSpec::of(SpecKind::Unix(UnixAddr::Path("80".into()))).is_err()); // "unix:80"?
    /// # Ok::<(), dualstack::ParseError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The [`ParseError`] the spec's text form gets, or one saying it has none (a path
    /// that is not UTF-8, say).
    pub fn of(kind: SpecKind) -> Result<ListenSpec, ParseError> {
        let spec = ListenSpec::checked(kind);
        if matches!(spec.kind, SpecKind::Ip { .. }) {
            return Ok(spec); // a Host is valid by construction
        }
        let text = spec.to_string();
        let parsed: ListenSpec = text.parse()?;
        if parsed != spec {
            return Err(ParseError::new(
                &text,
                super::ParseErrorKind::InvalidPath,
                None,
                format!(
                    "{:?} cannot be written as a listen spec that reads back as itself",
                    spec.kind
                ),
            ));
        }
        Ok(spec)
    }

    /// A spec of a kind the parser made (so valid).
    pub(crate) fn checked(kind: SpecKind) -> ListenSpec {
        ListenSpec {
            kind,
            written: None,
        }
    }

    /// What this spec names.
    pub fn kind(&self) -> &SpecKind {
        &self.kind
    }

    pub(crate) fn with_written(mut self, text: &str) -> ListenSpec {
        self.written = Some(text.into());
        self
    }

    /// The text this spec was parsed from, as the user wrote it; `None` for a spec built
    /// from values.
    ///
    /// ```
    /// use dualstack::ListenSpec;
    /// let spec: ListenSpec = ":7000".parse()?;
    /// assert_eq!(spec.written(), Some(":7000"));
    /// assert_eq!(spec.to_string(), "*:7000");
    /// # Ok::<(), dualstack::ParseError>(())
    /// ```
    pub fn written(&self) -> Option<&str> {
        self.written.as_deref()
    }

    /// What errors and logs quote: the text as written, else the canonical form.
    pub(crate) fn quoted(&self) -> QuotedSpec<'_> {
        QuotedSpec(self)
    }

    /// The host, for a host-and-port spec.
    pub fn host(&self) -> Option<&Host> {
        match &self.kind {
            SpecKind::Ip { host, .. } => Some(host),
            _ => None,
        }
    }

    /// The port, for a host-and-port spec; 0 means the system chooses one when the spec is
    /// bound.
    pub fn port(&self) -> Option<u16> {
        match self.kind {
            SpecKind::Ip { port, .. } => Some(port),
            _ => None,
        }
    }
}

impl From<SocketAddr> for ListenSpec {
    /// The spec for exactly this address. Flow info is dropped and a non-zero scope id becomes
    /// an index [`Zone`].
    fn from(addr: SocketAddr) -> ListenSpec {
        match addr {
            SocketAddr::V4(a) => a.into(),
            SocketAddr::V6(a) => a.into(),
        }
    }
}

impl From<SocketAddrV4> for ListenSpec {
    fn from(addr: SocketAddrV4) -> ListenSpec {
        ListenSpec::new(Host::V4(*addr.ip()), addr.port())
    }
}

impl From<SocketAddrV6> for ListenSpec {
    fn from(addr: SocketAddrV6) -> ListenSpec {
        let zone = Zone::from_index(addr.scope_id());
        ListenSpec::new(Host::V6(*addr.ip(), zone), addr.port())
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SpecKind::Ip { host, port } => write!(f, "{host}:{port}"),
            SpecKind::Unix(addr) => addr.fmt(f),
            SpecKind::Activated { name: None } => f.write_str("sd-listen"),
            SpecKind::Activated { name: Some(name) } => write!(f, "sd-listen:{name}"),
            SpecKind::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

/// A spec as errors and logs show it: in double quotes, as the user wrote it.
pub(crate) struct QuotedSpec<'a>(&'a ListenSpec);

impl fmt::Display for QuotedSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.written() {
            Some(text) => write!(f, "{text:?}"),
            None => write!(f, "\"{}\"", self.0),
        }
    }
}

impl Host {}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a, None),
        }
    }
}

impl fmt::Display for Host {
    /// The host as it appears in a spec: `*`, `127.0.0.1`, `[fe80::1%eth0]` or `localhost`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Any => f.write_str("*"),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a, None) => write!(f, "[{a}]"),
            Host::V6(a, Some(zone)) => write!(f, "[{a}%{zone}]"),
            Host::Name(name) => f.write_str(name.as_str()),
        }
    }
}

impl HostName {
    pub(crate) fn new_unchecked(lower: String) -> HostName {
        HostName(lower)
    }

    /// The name, in lower case, with its trailing dot if it had one.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `localhost` or a name under `.localhost`, which RFC 6761 §6.3 reserves
    /// for the loopback addresses: such names are never sent to a resolver.
    ///
    /// ```
    /// use dualstack::HostName;
    /// assert!(HostName::new("app.localhost.")?.is_localhost());
    /// assert!(!HostName::new("localhost.example")?.is_localhost());
    /// # Ok::<(), dualstack::ParseError>(())
    /// ```
    pub fn is_localhost(&self) -> bool {
        let name = self.0.strip_suffix('.').unwrap_or(&self.0);
        name == "localhost" || name.ends_with(".localhost")
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Zone {
    /// The zone for interface index `index`; `None` for 0, which names no interface.
    pub fn from_index(index: u32) -> Option<Zone> {
        NonZeroU32::new(index).map(|i| Zone(ZoneRepr::Index(i)))
    }

    pub(crate) fn name_unchecked(name: String) -> Zone {
        Zone(ZoneRepr::Name(name))
    }

    /// The interface index this zone names: the number itself, or the index of the named
    /// interface looked up now with `if_nametoindex(3)` (a local call, no network).
    ///
    /// ```
    /// use dualstack::Zone;
    /// assert_eq!(Zone::parse("7")?.to_index()?, 7);
    /// let err = Zone::parse("nosuchif0")?.to_index().unwrap_err();
    /// assert!(err.to_string().contains("nosuchif0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] naming the interface when none has that name.
    ///
    /// # Platform-specific behavior
    ///
    /// Windows has no interface names here: a named zone is [`io::ErrorKind::Unsupported`].
    pub fn to_index(&self) -> io::Result<u32> {
        match &self.0 {
            ZoneRepr::Index(i) => Ok(i.get()),
            ZoneRepr::Name(n) => sys::interface_index(n),
        }
    }

    /// The interface index, if the zone was given as a number.
    pub fn index(&self) -> Option<u32> {
        match &self.0 {
            ZoneRepr::Index(i) => Some(i.get()),
            ZoneRepr::Name(_) => None,
        }
    }

    /// The interface name, if the zone was given as a name.
    pub fn name(&self) -> Option<&str> {
        match &self.0 {
            ZoneRepr::Index(_) => None,
            ZoneRepr::Name(n) => Some(n),
        }
    }
}

impl fmt::Display for Zone {
    /// The zone as written after `%`. A name that begins with `25` is written in the URI form
    /// (`%2525a`), so that parsing it back cannot mistake it for the `%25` escape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ZoneRepr::Index(i) => write!(f, "{i}"),
            ZoneRepr::Name(n) if n.starts_with("25") => write!(f, "25{n}"),
            ZoneRepr::Name(n) => f.write_str(n),
        }
    }
}

/// Conversion into a [`ListenSpec`], in the spirit of [`std::net::ToSocketAddrs`].
///
/// Every function that takes a place to listen takes `impl ToListenSpec`, so all of these work:
///
/// ```
/// use dualstack::ToListenSpec;
/// use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
///
/// let specs = [
///     "[::1]:8080".to_listen_spec()?,
///     ("::1", 8080).to_listen_spec()?,
///     (String::from("::1"), 8080).to_listen_spec()?,
///     (Ipv6Addr::LOCALHOST, 8080).to_listen_spec()?,
///     SocketAddr::from((Ipv6Addr::LOCALHOST, 8080)).to_listen_spec()?,
/// ];
/// assert!(specs.iter().all(|s| s == &specs[0]));
/// assert_eq!(("", 80).to_listen_spec()?.to_string(), "*:80");
/// assert_eq!((Ipv4Addr::UNSPECIFIED, 80).to_listen_spec()?.to_string(), "0.0.0.0:80");
/// # Ok::<(), dualstack::ParseError>(())
/// ```
///
/// # Errors
///
/// Conversions from text return a [`ParseError`] that names the text; conversions from
/// addresses cannot fail.
pub trait ToListenSpec {
    /// Converts `self` into a listen spec.
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError>;
}

impl ToListenSpec for ListenSpec {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok(self.clone())
    }
}

impl ToListenSpec for str {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        self.parse()
    }
}

impl ToListenSpec for String {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        self.parse()
    }
}

impl<T: ToListenSpec + ?Sized> ToListenSpec for &T {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        (**self).to_listen_spec()
    }
}

impl ToListenSpec for SocketAddr {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok((*self).into())
    }
}

impl ToListenSpec for SocketAddrV4 {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok((*self).into())
    }
}

impl ToListenSpec for SocketAddrV6 {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok((*self).into())
    }
}

impl ToListenSpec for (&str, u16) {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok(ListenSpec::new(Host::parse(self.0)?, self.1))
    }
}

impl ToListenSpec for (String, u16) {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        (self.0.as_str(), self.1).to_listen_spec()
    }
}

impl ToListenSpec for (IpAddr, u16) {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok(ListenSpec::new(self.0.into(), self.1))
    }
}

impl ToListenSpec for (Ipv4Addr, u16) {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok(ListenSpec::new(Host::V4(self.0), self.1))
    }
}

impl ToListenSpec for (Ipv6Addr, u16) {
    fn to_listen_spec(&self) -> Result<ListenSpec, ParseError> {
        Ok(ListenSpec::new(Host::V6(self.0, None), self.1))
    }
}
