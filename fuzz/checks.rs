//! The properties the fuzz targets check, shared with `tests/fuzz_corpus.rs` so that every
//! corpus file is also a regression test under a plain `cargo test` (no nightly, no
//! libFuzzer). Each function takes the raw fuzz input and panics when a property fails.
//!
//! Inputs that mix text and structure are "text up to the first NUL byte, then bytes for
//! `arbitrary`", so seeds stay writable by hand: `localhost:0\0` plus anything.

#![allow(dead_code)] // each fuzz target uses one function

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use arbitrary::{Arbitrary, Unstructured};
use dualstack::{
    display_addr, normalize, plan, FamilyPolicy, Host, HostCaps, HostName, ListenSpec,
    PlanErrorKind, PlanOptions, Resolve, SocketMode, SpecKind, ToListenSpec, UnixAddr,
    WildcardStack, Zone,
};

/// The text before the first NUL (lossily decoded), and the bytes after it.
fn split(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::from_utf8_lossy(data).into_owned(), &[]),
    }
}

/// The socket address a numeric spec names; `None` for the wildcard or a name.
fn numeric(spec: &ListenSpec) -> Option<SocketAddr> {
    let port = spec.port()?;
    match spec.host()? {
        Host::V4(a) => Some(SocketAddr::from((*a, port))),
        Host::V6(a, zone) => {
            let scope = zone.as_ref().map_or(0, |z| z.index().unwrap_or(u32::MAX));
            Some(SocketAddr::V6(SocketAddrV6::new(*a, port, 0, scope)))
        }
        Host::Any | Host::Name(_) => None,
    }
}

/// `parse_spec`: arbitrary bytes as a listen spec, and as the host of a `(host, port)` pair.
pub fn parse_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match text.parse::<ListenSpec>() {
        Ok(spec) => {
            let shown = spec.to_string();
            let again: ListenSpec = shown.parse().unwrap_or_else(|e| {
                panic!("{text:?} parsed, but its display {shown:?} does not: {e}")
            });
            assert_eq!(
                again, spec,
                "{text:?} does not round-trip through {shown:?}"
            );
            check_kind(&spec, &text);
        }
        Err(e) => {
            let prefix = quoted("spec", &text);
            assert!(
                e.to_string().starts_with(&prefix),
                "{e} does not quote {text:?}"
            );
            // Bounded whatever the input: at most a few escaped quotes of 512 bytes.
            assert!(
                e.to_string().len() < 32 * 1024,
                "a message of {} bytes",
                e.to_string().len()
            );
            assert_eq!(e.input(), &*text);
            if let Some(p) = e.position() {
                assert!(p <= text.len(), "position {p} is past the end of {text:?}");
            }
        }
    }
    // Whatever std accepts, we accept, with the same address and port.
    if let Ok(std_addr) = text.parse::<SocketAddr>() {
        let ours: ListenSpec = text
            .parse()
            .unwrap_or_else(|e| panic!("std accepts {text:?} as {std_addr}, we do not: {e}"));
        assert_eq!(numeric(&ours), Some(std_addr), "{text:?}");
    }
    // The text as an interface's name: the zone printed for it reads back as that name
    // or that index, never as another interface (issue #13: "25x", "7", "a+b").
    for index in [1, 7, 25, u32::MAX] {
        let zone = Zone::for_interface(index, Some(&text)).expect("index is not 0");
        let shown = zone.to_string();
        let back = Zone::parse(&shown)
            .unwrap_or_else(|e| panic!("interface {text:?} printed as {shown:?}: {e}"));
        assert_eq!(back, zone, "interface {text:?} printed as {shown:?}");
        assert!(
            back.index() == Some(index) || back.name() == Some(&*text),
            "interface {index} called {text:?} printed as {shown:?}, which names another"
        );
        let addr = format!("[fe80::1%{shown}]:80");
        if addr.len() > 512 {
            continue; // no interface name is that long (IF_NAMESIZE is 16 on Linux)
        }
        assert_eq!(
            addr.parse::<ListenSpec>().map(|s| s.host().cloned()),
            Ok(Some(Host::V6(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                Some(zone)
            ))),
            "{addr}"
        );
    }
    match (&*text, 7u16).to_listen_spec() {
        Ok(spec) => {
            let shown = spec.to_string();
            assert_eq!(
                shown.parse::<ListenSpec>().ok(),
                Some(spec),
                "host {text:?} shown as {shown:?}"
            );
        }
        Err(e) => {
            let prefix = quoted("host", &text);
            assert!(
                e.to_string().starts_with(&prefix),
                "{e} does not quote {text:?}"
            );
        }
    }
}

/// What a parsed spec of each kind must hold: an IP spec has a host and a port; a Unix path
/// fits `sun_path` (the kernel's own check, through std, agrees); an abstract name too; an
/// inherited descriptor is 3 or more (0 to 2 are stdin, stdout and stderr).
fn check_kind(spec: &ListenSpec, text: &str) {
    match spec.kind() {
        SpecKind::Ip { host, port } => {
            assert_eq!(spec.host(), Some(host), "{text:?}");
            assert_eq!(spec.port(), Some(*port), "{text:?}");
        }
        SpecKind::Unix(UnixAddr::Path(path)) => {
            assert!(spec.host().is_none() && spec.port().is_none(), "{text:?}");
            assert!(!path.as_os_str().is_empty(), "{text:?}: an empty path");
            #[cfg(unix)]
            {
                std::os::unix::net::SocketAddr::from_pathname(path).unwrap_or_else(|e| {
                    panic!("{text:?} parsed as {path:?}, which std cannot bind: {e}")
                });
            }
        }
        SpecKind::Unix(UnixAddr::Abstract(name)) => check_abstract(name, text),
        SpecKind::Fd(fd) => assert!(*fd >= 3, "{text:?}: fd {fd}"),
        SpecKind::Activated { name } => {
            if let Some(name) = name {
                assert!(
                    !name.is_empty() && !name.contains(':'),
                    "{text:?}: name {name:?}"
                );
            }
        }
        other => panic!("{text:?}: a kind the checks do not know: {other:?}"),
    }
}

/// An abstract name std can bind (Linux: it fits `sun_path` after the leading NUL).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn check_abstract(name: &[u8], text: &str) {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap_or_else(|e| {
        panic!("{text:?} parsed as abstract {name:?}, which std cannot bind: {e}")
    });
}

/// Abstract names exist only on Linux: elsewhere one must not parse.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn check_abstract(_: &[u8], text: &str) {
    panic!("{text:?}: an abstract socket off Linux");
}

/// How an error begins: `invalid listen spec "INPUT": `, or for input longer than any spec
/// (512 bytes), its first 64 characters and its length (issue #13: a 4 MB spec gave an 8 MB
/// message).
fn quoted(what: &str, text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) if text.len() > 512 => {
            format!(
                "invalid listen {what} {:?}… ({} bytes): ",
                &text[..end],
                text.len()
            )
        }
        _ => format!("invalid listen {what} {text:?}: "),
    }
}

/// `normalize`: an arbitrary socket address (first byte even), or the text after the first
/// byte parsed by std (first byte odd), which lets seeds be written as text.
pub fn normalize_addr(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let addr = if mode % 2 == 0 {
        match SocketAddr::arbitrary(&mut Unstructured::new(rest)) {
            Ok(a) => a,
            Err(_) => return,
        }
    } else {
        match std::str::from_utf8(rest).ok().and_then(|t| t.parse().ok()) {
            Some(a) => a,
            None => return,
        }
    };
    check_normalize(addr);
}

fn is_scoped(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    first & 0xffc0 == 0xfe80 || first & 0xff00 == 0xff00
}

pub fn check_normalize(addr: SocketAddr) {
    let n = normalize(addr);
    assert_eq!(normalize(n), n, "normalize is not idempotent on {addr:?}");
    assert_eq!(n.port(), addr.port(), "{addr:?}");
    match addr {
        SocketAddr::V4(_) => assert_eq!(n, addr),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => assert_eq!(n.ip(), IpAddr::V4(v4), "{addr:?} is mapped"),
            None => {
                let SocketAddr::V6(b) = n else {
                    panic!("{addr:?} became IPv4")
                };
                assert_eq!(b.ip(), a.ip());
                assert_eq!(b.flowinfo(), 0, "flow info kept for {addr:?}");
                let scope = if is_scoped(a.ip()) { a.scope_id() } else { 0 };
                assert_eq!(b.scope_id(), scope, "{addr:?}");
            }
        },
    }
    // The display form parses back to the same address.
    let shown = display_addr(addr).to_string();
    let spec: ListenSpec = shown
        .parse()
        .unwrap_or_else(|e| panic!("{shown:?} does not parse: {e}"));
    let back = match spec.host() {
        Some(Host::V6(ip, Some(zone))) => {
            let index = zone.to_index().unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            SocketAddr::V6(SocketAddrV6::new(*ip, addr.port(), 0, index))
        }
        _ => numeric(&spec).unwrap_or_else(|| panic!("{shown:?} is not numeric")),
    };
    assert_eq!(back, n, "{addr:?} shown as {shown:?}");
}

/// The planner's inputs besides the spec.
#[derive(Debug, Arbitrary)]
struct PlanInput {
    family: u8,
    separate_stacks: bool,
    caps: [bool; 5],
    resolve_fails: bool,
    /// The resolver's answers, each with a scope id (0 to 3).
    answers: Vec<(IpAddr, u8)>,
}

/// A resolver with a fixed answer, and two interfaces: `lo` (1) and `eth0` (7).
struct Fake {
    answers: Vec<SocketAddr>,
    fails: bool,
}

impl Resolve for Fake {
    fn resolve(&self, _: &HostName) -> io::Result<Vec<IpAddr>> {
        unreachable!("the planner asks for scoped answers")
    }

    fn resolve_scoped(&self, _: &HostName) -> io::Result<Vec<SocketAddr>> {
        if self.fails {
            Err(io::Error::other("the fake resolver fails"))
        } else {
            Ok(self.answers.clone())
        }
    }

    fn interface_index(&self, name: &str) -> io::Result<u32> {
        match name {
            "lo" => Ok(1),
            "eth0" => Ok(7),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

/// `plan`: a spec (text before the first NUL) with an arbitrary policy, stack option, host
/// capabilities and resolver answer.
pub fn plan_spec(data: &[u8]) {
    let (text, rest) = split(data);
    let Ok(spec) = text.parse::<ListenSpec>() else {
        return;
    };
    let Ok(mut input) = PlanInput::arbitrary(&mut Unstructured::new(rest)) else {
        return;
    };
    input.answers.truncate(8);
    let family = [
        FamilyPolicy::Any,
        FamilyPolicy::V4,
        FamilyPolicy::V6,
        FamilyPolicy::DualStack,
    ][usize::from(input.family % 4)];
    let stack = if input.separate_stacks {
        WildcardStack::Separate
    } else {
        WildcardStack::Single
    };
    let [ipv4, ipv6, dual_stack, ipv4_loopback, ipv6_loopback] = input.caps;
    let caps = HostCaps {
        ipv4,
        ipv6,
        dual_stack,
        ipv4_loopback,
        ipv6_loopback,
    };
    let fake = Fake {
        answers: input
            .answers
            .iter()
            .map(|&(ip, scope)| match ip {
                IpAddr::V4(_) => SocketAddr::new(ip, 0),
                IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, u32::from(scope % 4))),
            })
            .collect(),
        fails: input.resolve_fails,
    };
    check_plan(&spec, PlanOptions { family, stack }, &caps, &fake);
}

/// The rules, written a second time and independently of the planner: the error planning
/// `spec` must give, or `None` if it must succeed.
fn expected_error(
    spec: &ListenSpec,
    o: PlanOptions,
    caps: &HostCaps,
    fake: &Fake,
) -> Option<PlanErrorKind> {
    use PlanErrorKind::*;
    let dual = caps.dual_stack && caps.ipv4 && caps.ipv6;
    let numeric = |ip: IpAddr, scope: u32| -> Option<PlanErrorKind> {
        if !ip.is_unspecified() && unreachable_by_clients(ip, scope) {
            return Some(UnusableAddress);
        }
        match ip {
            IpAddr::V4(_) => match o.family {
                FamilyPolicy::V6 | FamilyPolicy::DualStack => Some(PolicyMismatch),
                _ if !caps.ipv4 => Some(FamilyUnavailable),
                _ => None,
            },
            IpAddr::V6(a) => match o.family {
                FamilyPolicy::V4 => Some(PolicyMismatch),
                FamilyPolicy::DualStack if !a.is_unspecified() => Some(PolicyMismatch),
                FamilyPolicy::DualStack if !dual => Some(DualStackUnavailable),
                _ if !caps.ipv6 => Some(FamilyUnavailable),
                _ => None,
            },
        }
    };
    let Some(host) = spec.host() else {
        return Some(NotAHost);
    };
    match host {
        Host::Any => match o.family {
            FamilyPolicy::V4 => (!caps.ipv4).then_some(FamilyUnavailable),
            FamilyPolicy::V6 => (!caps.ipv6).then_some(FamilyUnavailable),
            FamilyPolicy::DualStack => (!dual).then_some(DualStackUnavailable),
            FamilyPolicy::Any => (!caps.ipv4 && !caps.ipv6).then_some(FamilyUnavailable),
        },
        Host::V4(ip) => numeric(IpAddr::V4(*ip), 0),
        Host::V6(ip, zone) => {
            if let Some(zone) = zone {
                if !is_scoped(ip) {
                    return Some(ZoneNotApplicable);
                }
                if let Some(name) = zone.name() {
                    if fake.interface_index(name).is_err() {
                        return Some(UnknownInterface);
                    }
                }
            }
            match ip.to_ipv4_mapped() {
                Some(v4) => numeric(IpAddr::V4(v4), 0),
                None => numeric(IpAddr::V6(*ip), u32::from(zone.is_some())),
            }
        }
        Host::Name(name) => {
            if o.family == FamilyPolicy::DualStack {
                return Some(PolicyMismatch);
            }
            let candidates: Vec<SocketAddr> = if name.is_localhost() {
                vec![
                    (Ipv4Addr::LOCALHOST, 0).into(),
                    (Ipv6Addr::LOCALHOST, 0).into(),
                ]
            } else if fake.fails {
                return Some(Resolve);
            } else {
                fake.answers.clone()
            };
            let usable = candidates
                .iter()
                .map(|a| normalize(*a))
                .filter(|a| !unreachable_by_clients(a.ip(), scope_of(a)))
                .map(|a| a.ip())
                .any(|ip| {
                    let wanted = match o.family {
                        FamilyPolicy::V4 => ip.is_ipv4(),
                        FamilyPolicy::V6 => ip.is_ipv6(),
                        _ => true,
                    };
                    let has = match ip {
                        IpAddr::V4(a) => {
                            caps.ipv4 && (a != Ipv4Addr::LOCALHOST || caps.ipv4_loopback)
                        }
                        IpAddr::V6(a) => {
                            caps.ipv6 && (a != Ipv6Addr::LOCALHOST || caps.ipv6_loopback)
                        }
                    };
                    wanted && has
                });
            (!usable).then_some(NoAddress)
        }
    }
}

fn scope_of(addr: &SocketAddr) -> u32 {
    match addr {
        SocketAddr::V4(_) => 0,
        SocketAddr::V6(a) => a.scope_id(),
    }
}

/// No TCP client can reach a listener there: the unspecified address (from a resolver:
/// every interface), multicast, broadcast, or link-local IPv6 without a scope.
fn unreachable_by_clients(ip: IpAddr, scope: u32) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a == Ipv4Addr::BROADCAST,
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.segments()[0] & 0xff00 == 0xff00
                || (a.segments()[0] & 0xffc0 == 0xfe80 && scope == 0)
        }
    }
}

fn check_plan(spec: &ListenSpec, o: PlanOptions, caps: &HostCaps, fake: &Fake) {
    let context = format!("{spec} with {o:?} on {caps}");
    let result = plan(spec, o, caps, fake);
    let expected = expected_error(spec, o, caps, fake);
    let p = match (result, expected) {
        (Ok(p), None) => p,
        (Err(e), Some(kind)) => {
            assert_eq!(e.kind(), kind, "{context}: {e}");
            // Quoted as the user wrote it when it was parsed from text.
            let quoted = match spec.written() {
                Some(text) => format!("{text:?}"),
                None => format!("\"{spec}\""),
            };
            assert!(
                e.to_string().contains(&quoted),
                "{context}: {e} does not name the spec as {quoted}"
            );
            return;
        }
        (Ok(p), Some(kind)) => panic!("{context}: expected {kind:?}, planned {:?}", p.sockets),
        (Err(e), None) => panic!("{context}: expected a plan, got {e}"),
    };
    let dual = caps.dual_stack && caps.ipv4 && caps.ipv6;
    assert!(!p.sockets.is_empty(), "{context}: an empty plan");
    let addrs: Vec<SocketAddr> = p.sockets.iter().map(|s| s.addr).collect();
    for (i, a) in addrs.iter().enumerate() {
        assert!(!addrs[..i].contains(a), "{context}: {a} planned twice");
        assert!(
            p.skipped.iter().all(|s| s.addr != *a),
            "{context}: {a} both planned and skipped"
        );
        assert_eq!(Some(a.port()), spec.port(), "{context}");
    }
    for s in &p.sockets {
        if matches!(spec.host(), Some(Host::Name(_))) {
            assert!(
                !unreachable_by_clients(s.addr.ip(), scope_of(&s.addr)),
                "{context}: a name planned {}, which no client can reach",
                s.addr
            );
        }
        match s.mode {
            SocketMode::Ipv4 => assert!(s.addr.is_ipv4() && caps.ipv4, "{context}: {s:?}"),
            SocketMode::Ipv6Only => assert!(s.addr.is_ipv6() && caps.ipv6, "{context}: {s:?}"),
            SocketMode::DualStack => {
                let wildcard = matches!(spec.host(), Some(Host::Any))
                    || matches!(spec.host(), Some(Host::V6(ip, _)) if ip.is_unspecified());
                assert!(
                    dual && wildcard && p.sockets.len() == 1 && s.addr.ip().is_unspecified(),
                    "{context}: dual-stack is only for the single wildcard socket: {:?}",
                    p.sockets
                );
            }
            other => panic!("{context}: a {other} socket planned for an IP spec: {s:?}"),
        }
    }
}

/// `proxy`: arbitrary bytes as what a connection sent first on a PROXY listener. Never a
/// panic; a header is never longer than the input nor (version 1) than 107 bytes; it
/// re-encodes to bytes that parse to the same header; the bytes after it do not change it;
/// every shorter prefix of it is "incomplete", not an error (a header split over any reads
/// works); and a version the listener does not take is refused at once.
pub fn proxy_header(data: &[u8]) {
    use dualstack::{ProxyErrorKind, ProxyHeader, ProxyParsed, ProxyVersion, ProxyVersions};
    let both = ProxyVersions::BOTH;
    let result = ProxyHeader::parse(data, both);
    match &result {
        Ok(ProxyParsed::Incomplete) => {
            assert!(
                data.len() < 16 + 65535,
                "incomplete after {} bytes",
                data.len()
            );
            if data.first() == Some(&b'P') {
                assert!(
                    data.len() < 107,
                    "a v1 line still incomplete at {} bytes",
                    data.len()
                );
            }
        }
        Ok(ProxyParsed::Header(header, used)) => {
            let used = *used;
            assert!(used <= data.len(), "used {used} of {} bytes", data.len());
            if header.version() == ProxyVersion::V1 {
                assert!(used <= 107, "a v1 header of {used} bytes");
            }
            // Only the header's own bytes decide it.
            assert_eq!(
                ProxyHeader::parse(&data[..used], both),
                Ok(ProxyParsed::Header(header.clone(), used)),
                "the bytes after the header changed it"
            );
            for end in [0, 1, used / 2, used.saturating_sub(1)] {
                if end < used {
                    assert_eq!(
                        ProxyHeader::parse(&data[..end], both),
                        Ok(ProxyParsed::Incomplete),
                        "a prefix of {end} of {used} bytes"
                    );
                }
            }
            let again = header.to_bytes();
            match ProxyHeader::parse(&again, both) {
                Ok(ProxyParsed::Header(back, n)) => {
                    assert_eq!(
                        &back,
                        header,
                        "re-encoded as {:?}",
                        again.escape_ascii().to_string()
                    );
                    assert_eq!(n, again.len());
                }
                other => panic!(
                    "{header:?} re-encodes to {:?}, which parses as {other:?}",
                    again.escape_ascii().to_string()
                ),
            }
            // A listener that takes only the other version refuses it.
            let other = match header.version() {
                ProxyVersion::V1 => ProxyVersions {
                    v1: false,
                    v2: true,
                },
                ProxyVersion::V2 => ProxyVersions {
                    v1: true,
                    v2: false,
                },
            };
            let refused = ProxyHeader::parse(data, other).expect_err("the other version only");
            assert_eq!(refused.kind(), ProxyErrorKind::VersionNotAccepted);
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("invalid PROXY header at byte "), "{text}");
            assert!(text.len() < 1024, "a message of {} bytes", text.len());
            assert!(
                e.offset() <= data.len().max(107),
                "offset {} of {}",
                e.offset(),
                data.len()
            );
        }
    }
}
