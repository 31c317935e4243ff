//! The planner: which sockets a [`ListenSpec`] needs on a host with given [`HostCaps`].
//!
//! # Contract
//!
//! [`plan`] is pure: the host's capabilities and the resolver are inputs, so the same inputs
//! always give the same plan, and tests can describe hosts they cannot run on. It opens no
//! socket. It resolves a name once (through the given [`Resolve`]), never `localhost`
//! (RFC 6761 §6.3) and never a numeric host. The rules it implements are the table in
//! `README.md` ("Listening rules"); each rule has a unit test below.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::addr::{normalize, Host, ListenSpec, SpecKind};
use crate::host::{HostCaps, Resolve};

/// Which address families a spec may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FamilyPolicy {
    /// Whatever the spec and the host allow (the default).
    #[default]
    Any,
    /// IPv4 only: names keep their IPv4 addresses, the wildcard becomes `0.0.0.0`.
    V4,
    /// IPv6 only: names keep their IPv6 addresses, the wildcard becomes `[::]` IPv6-only.
    V6,
    /// Exactly one dual-stack `[::]` socket; only for the wildcard or `[::]`, and an error
    /// where the host cannot make one.
    DualStack,
}

/// How the wildcard (`:PORT`) is opened when the policy is [`FamilyPolicy::Any`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WildcardStack {
    /// One dual-stack `[::]` socket where the host supports it, else one socket per family
    /// (the default).
    #[default]
    Single,
    /// Always `0.0.0.0` and an IPv6-only `[::]`, one socket per family.
    Separate,
}

/// Options for [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlanOptions {
    /// Which families to use.
    pub family: FamilyPolicy,
    /// How to open the wildcard.
    pub stack: WildcardStack,
}

/// How a listening socket takes connections: its family and, for IPv6, `IPV6_V6ONLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketMode {
    /// An `AF_INET` socket.
    Ipv4,
    /// An `AF_INET6` socket with `IPV6_V6ONLY=1`: IPv6 connections only.
    Ipv6Only,
    /// An `AF_INET6` socket with `IPV6_V6ONLY=0`: IPv6 connections, and IPv4 ones as
    /// IPv4-mapped addresses (RFC 3493 §5.3).
    DualStack,
    /// An `AF_UNIX` stream socket.
    Unix,
}

impl fmt::Display for SocketMode {
    /// `ipv4`, `ipv6-only`, `dual-stack` or `unix`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketMode::Ipv4 => "ipv4",
            SocketMode::Ipv6Only => "ipv6-only",
            SocketMode::DualStack => "dual-stack",
            SocketMode::Unix => "unix",
        })
    }
}

/// One socket a plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlannedSocket {
    /// The address to bind (port 0: the system chooses, shared by every socket of the plan).
    pub addr: SocketAddr,
    /// The family and `IPV6_V6ONLY` setting.
    pub mode: SocketMode,
    /// Whether the address came from a name or the wildcard. Such an address is skipped if
    /// the kernel turns out to lack its family (`EAFNOSUPPORT`), as long as another socket
    /// of the plan binds. `EADDRNOTAVAIL` never skips it, since another user could take it:
    /// an address the host has but cannot use yet (tentative) is bound with `IP_FREEBIND` /
    /// `IPV6_FREEBIND` on Linux, and any other is an error. An address the user wrote is
    /// never optional.
    pub optional: bool,
}

/// An address that was planned or bound for a spec but left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Skipped {
    /// The address left out.
    pub addr: SocketAddr,
    /// Why.
    pub reason: SkipReason,
}

/// Why an address was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The host has no IPv4.
    NoIpv4,
    /// The host has no IPv6 (the kernel refuses `AF_INET6`, or IPv6 is switched off).
    NoIpv6,
    /// The host has IPv6 but cannot make dual-stack sockets, so the wildcard needs two.
    NoDualStack,
    /// The host has no such loopback address assigned.
    NoLoopback,
    /// Binding failed with this OS error (`EAFNOSUPPORT`: the kernel lacks the family).
    Os(i32),
    /// A resolver answered with the unspecified address (`0.0.0.0`, `::`), as an
    /// ad-blocking hosts file does: listening there would mean every interface.
    Unspecified,
    /// A resolver answered with a multicast address, which TCP cannot listen on.
    Multicast,
    /// A resolver answered with the broadcast address `255.255.255.255`.
    Broadcast,
    /// A resolver answered with a link-local IPv6 address without its interface (zone).
    LinkLocalWithoutZone,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} skipped: {}",
            crate::addr::display_addr(self.addr),
            self.reason
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoIpv4 => f.write_str("this host has no IPv4"),
            SkipReason::NoIpv6 => f.write_str("this host has no IPv6"),
            SkipReason::NoDualStack => {
                f.write_str("this host cannot make dual-stack sockets (IPV6_V6ONLY=0 refused)")
            }
            SkipReason::NoLoopback => f.write_str("this loopback address is not assigned here"),
            SkipReason::Os(code) => write!(f, "{}", io::Error::from_raw_os_error(*code)),
            SkipReason::Unspecified => f.write_str(
                "the unspecified address, which would mean every interface (a hosts file that \
                 blocks the name answers with it)",
            ),
            SkipReason::Multicast => {
                f.write_str("a multicast address, which no TCP client can connect to")
            }
            SkipReason::Broadcast => {
                f.write_str("the broadcast address, which no TCP client can connect to")
            }
            SkipReason::LinkLocalWithoutZone => {
                f.write_str("a link-local address without its interface (zone)")
            }
        }
    }
}

/// What [`plan`] decided for one spec: the sockets to open, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPlan {
    /// The spec this plan is for.
    pub spec: ListenSpec,
    /// The sockets to open, in order. The first one chooses the port when the spec's is 0.
    pub sockets: Vec<PlannedSocket>,
    /// Addresses the spec produced that this host cannot have.
    pub skipped: Vec<Skipped>,
}

impl BindPlan {
    /// The port every socket of the plan gets (0: the first one's, chosen by the system).
    pub fn port(&self) -> u16 {
        self.spec.port().unwrap_or(0)
    }
}

/// A spec that cannot be planned on this host.
#[derive(Debug)]
pub struct PlanError {
    /// Boxed, so that `Result<_, Error>` stays small on the success path.
    spec: Box<ListenSpec>,
    kind: PlanErrorKind,
    detail: String,
    source: Option<io::Error>,
}

/// What kind of problem a [`PlanError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlanErrorKind {
    /// The spec needs an address family this host does not have: `[::1]:80` without IPv6.
    FamilyUnavailable,
    /// The family policy excludes the spec's address: `127.0.0.1:80` with [`FamilyPolicy::V6`].
    PolicyMismatch,
    /// [`FamilyPolicy::DualStack`] on a host that cannot make dual-stack sockets.
    DualStackUnavailable,
    /// A `%zone` names no interface on this host.
    UnknownInterface,
    /// A `%zone` on an address that has no zones (only link-local and multicast do).
    ZoneNotApplicable,
    /// The resolver failed for the spec's name.
    Resolve,
    /// The name resolved, but to no address this host and policy can use.
    NoAddress,
    /// The spec is not a host and a port (a Unix-domain or inherited socket): there is
    /// nothing to plan.
    NotAHost,
    /// The address the user wrote cannot take TCP connections: multicast, broadcast, or a
    /// link-local IPv6 address without a zone.
    UnusableAddress,
}

impl PlanError {
    fn new(spec: &ListenSpec, kind: PlanErrorKind, detail: impl Into<String>) -> PlanError {
        PlanError {
            spec: Box::new(spec.clone()),
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    fn with_source(mut self, source: io::Error) -> PlanError {
        self.source = Some(source);
        self
    }

    /// The spec that could not be planned.
    pub fn spec(&self) -> &ListenSpec {
        &self.spec
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> PlanErrorKind {
        self.kind
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {}: {}",
            self.spec.quoted(),
            self.detail
        )?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Plans the sockets for `spec` on a host with capabilities `caps`.
///
/// | spec | plan on a dual-stack host (default options) |
/// |---|---|
/// | `:P`, `*:P`, `P` | one `[::]:P` dual-stack socket; else `0.0.0.0:P` and/or `[::]:P` IPv6-only |
/// | `0.0.0.0:P` | `0.0.0.0:P` |
/// | `[::]:P` | `[::]:P` IPv6-only, so that `0.0.0.0:P` can be bound beside it |
/// | `localhost:P` | `127.0.0.1:P` and `[::1]:P` IPv6-only, without asking any resolver |
/// | `name:P` | every address the resolver gives, once each, in its order |
/// | `127.0.0.1:P`, `[::1]:P` | exactly that address (`[::ffff:a.b.c.d]` is planned as `a.b.c.d`) |
///
/// Addresses a name or the wildcard produced that this host cannot have are left out and
/// listed in [`BindPlan::skipped`]; an address the user wrote is an error instead.
///
/// ```
/// use dualstack::{plan, HostCaps, PlanOptions, SocketMode, SystemResolver};
///
/// let no_ipv6 = HostCaps { ipv4: true, ipv6: false, dual_stack: false, ipv4_loopback: true, ipv6_loopback: false };
/// let p = plan(&"localhost:8080".parse()?, PlanOptions::default(), &no_ipv6, &SystemResolver)?;
/// assert_eq!(p.sockets.len(), 1);
/// assert_eq!(p.sockets[0].addr.to_string(), "127.0.0.1:8080");
/// assert_eq!(p.sockets[0].mode, SocketMode::Ipv4);
/// assert_eq!(p.skipped[0].to_string(), "[::1]:8080 skipped: this host has no IPv6");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// A [`PlanError`] naming the spec when the policy excludes every address, the host lacks the
/// family of an address the user wrote, a zone names no interface, or resolution fails.
pub fn plan(
    spec: &ListenSpec,
    options: PlanOptions,
    caps: &HostCaps,
    resolver: &dyn Resolve,
) -> Result<BindPlan, PlanError> {
    // Dual-stack sockets serve two families: without both, the claim means nothing.
    let caps = &HostCaps {
        dual_stack: caps.dual_stack && caps.ipv4 && caps.ipv6,
        ..*caps
    };
    let mut plan = BindPlan {
        spec: spec.clone(),
        sockets: Vec::new(),
        skipped: Vec::new(),
    };
    let SpecKind::Ip { host, port } = spec.kind() else {
        return Err(PlanError::new(
            spec,
            PlanErrorKind::NotAHost,
            "only a host and a port are planned; a Unix-domain or inherited socket is bound as it is",
        ));
    };
    let port = *port;
    match host {
        Host::Any => wildcard(&mut plan, options, caps)?,
        Host::V4(ip) => numeric(&mut plan, options.family, caps, (*ip, port).into())?,
        Host::V6(ip, zone) => {
            let scope = match zone {
                None => 0,
                Some(_) if !crate::addr::is_scoped(ip) => {
                    return Err(PlanError::new(
                        spec,
                        PlanErrorKind::ZoneNotApplicable,
                        format!("{ip} is not a link-local or multicast address, so a zone means nothing for it"),
                    ))
                }
                Some(zone) => match (zone.index(), zone.name()) {
                    (Some(index), _) => index,
                    (None, Some(name)) => resolver.interface_index(name).map_err(|e| {
                        let kind = PlanErrorKind::UnknownInterface;
                        if e.kind() == io::ErrorKind::NotFound {
                            // The error says no more than this: saying it twice helps nobody.
                            PlanError::new(
                                spec,
                                kind,
                                format!("no network interface is called {name:?}"),
                            )
                        } else {
                            PlanError::new(
                                spec,
                                kind,
                                format!("cannot look up the interface {name:?}"),
                            )
                            .with_source(e)
                        }
                    })?,
                    (None, None) => unreachable!("a zone is an index or a name"),
                },
            };
            let addr = normalize(SocketAddr::V6(SocketAddrV6::new(*ip, port, 0, scope)));
            numeric(&mut plan, options.family, caps, addr)?
        }
        Host::Name(name) => {
            if options.family == FamilyPolicy::DualStack {
                return Err(PlanError::new(
                    spec,
                    PlanErrorKind::PolicyMismatch,
                    "the dual-stack policy needs the wildcard or [::], not a name",
                ));
            }
            let answers = if name.is_localhost() {
                vec![
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                    SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
                ]
            } else {
                resolver.resolve_scoped(name).map_err(|e| {
                    PlanError::new(
                        spec,
                        PlanErrorKind::Resolve,
                        format!("cannot resolve {name}"),
                    )
                    .with_source(e)
                })?
            };
            named(&mut plan, options.family, caps, answers)?
        }
    }
    Ok(plan)
}

/// Why no TCP client could ever reach a listener on `addr`, if that is so: the wildcard
/// (from a resolver, where it would silently mean "every interface"), a multicast or the
/// broadcast address, or a link-local IPv6 address without the interface it belongs to.
fn unusable(addr: SocketAddr) -> Option<SkipReason> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => Some(SkipReason::Unspecified),
        SocketAddr::V4(a) if a.ip().is_multicast() => Some(SkipReason::Multicast),
        SocketAddr::V4(a) if a.ip().is_broadcast() => Some(SkipReason::Broadcast),
        SocketAddr::V6(a) if a.ip().is_unspecified() => Some(SkipReason::Unspecified),
        SocketAddr::V6(a) if a.ip().is_multicast() => Some(SkipReason::Multicast),
        SocketAddr::V6(a) if crate::addr::is_scoped(a.ip()) && a.scope_id() == 0 => {
            Some(SkipReason::LinkLocalWithoutZone)
        }
        _ => None,
    }
}

fn socket(addr: SocketAddr, mode: SocketMode, optional: bool) -> PlannedSocket {
    PlannedSocket {
        addr,
        mode,
        optional,
    }
}

fn wildcard(plan: &mut BindPlan, options: PlanOptions, caps: &HostCaps) -> Result<(), PlanError> {
    let port = plan.port();
    let any4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let unavailable = |what: &str| {
        PlanError::new(
            &plan.spec,
            PlanErrorKind::FamilyUnavailable,
            format!("this host has no {what}"),
        )
    };
    match options.family {
        FamilyPolicy::V4 if caps.ipv4 => plan.sockets.push(socket(any4, SocketMode::Ipv4, false)),
        FamilyPolicy::V4 => return Err(unavailable("IPv4")),
        FamilyPolicy::V6 if caps.ipv6 => {
            plan.sockets.push(socket(any6, SocketMode::Ipv6Only, false))
        }
        FamilyPolicy::V6 => return Err(unavailable("IPv6")),
        FamilyPolicy::DualStack if caps.dual_stack => {
            plan.sockets
                .push(socket(any6, SocketMode::DualStack, false))
        }
        FamilyPolicy::DualStack => return Err(no_dual_stack(&plan.spec, caps)),
        FamilyPolicy::Any if caps.dual_stack && options.stack == WildcardStack::Single => plan
            .sockets
            .push(socket(any6, SocketMode::DualStack, false)),
        FamilyPolicy::Any => {
            // One socket per family this host has (OpenBSD, or a host with one family).
            if caps.ipv4 {
                plan.sockets.push(socket(any4, SocketMode::Ipv4, true));
            } else {
                plan.skipped.push(Skipped {
                    addr: any4,
                    reason: SkipReason::NoIpv4,
                });
            }
            if caps.ipv6 {
                plan.sockets.push(socket(any6, SocketMode::Ipv6Only, true));
            } else {
                plan.skipped.push(Skipped {
                    addr: any6,
                    reason: SkipReason::NoIpv6,
                });
            }
            if plan.sockets.is_empty() {
                return Err(unavailable("IPv4 and no IPv6"));
            }
        }
    }
    Ok(())
}

fn no_dual_stack(spec: &ListenSpec, caps: &HostCaps) -> PlanError {
    let why = if !caps.ipv6 {
        "this host has no IPv6"
    } else if !caps.ipv4 {
        "this host has no IPv4"
    } else {
        "this host refuses IPV6_V6ONLY=0"
    };
    PlanError::new(
        spec,
        PlanErrorKind::DualStackUnavailable,
        format!("a dual-stack socket was asked for, but {why}"),
    )
}

/// An address the user wrote: never optional, never skipped.
fn numeric(
    plan: &mut BindPlan,
    family: FamilyPolicy,
    caps: &HostCaps,
    addr: SocketAddr,
) -> Result<(), PlanError> {
    let mismatch = |policy: &str| {
        PlanError::new(
            &plan.spec,
            PlanErrorKind::PolicyMismatch,
            format!("{} is not allowed by the {policy} policy", addr.ip()),
        )
    };
    // The user's own 0.0.0.0 or [::] is the family's wildcard, and means it.
    if let Some(why) = unusable(addr).filter(|why| *why != SkipReason::Unspecified) {
        return Err(PlanError::new(
            &plan.spec,
            PlanErrorKind::UnusableAddress,
            match why {
                SkipReason::LinkLocalWithoutZone => format!(
                    "{} is link-local: name its interface with a zone, as in \"[{}%eth0]:{}\"",
                    addr.ip(),
                    addr.ip(),
                    addr.port()
                ),
                other => format!("{} is {}", addr.ip(), other),
            },
        ));
    }
    let mode = match (addr, family) {
        (SocketAddr::V4(_), FamilyPolicy::V6) => return Err(mismatch("IPv6-only")),
        (SocketAddr::V6(_), FamilyPolicy::V4) => return Err(mismatch("IPv4-only")),
        (SocketAddr::V6(a), FamilyPolicy::DualStack) if a.ip().is_unspecified() => {
            if !caps.dual_stack {
                return Err(no_dual_stack(&plan.spec, caps));
            }
            SocketMode::DualStack
        }
        (_, FamilyPolicy::DualStack) => {
            return Err(PlanError::new(
                &plan.spec,
                PlanErrorKind::PolicyMismatch,
                "the dual-stack policy needs the wildcard or [::]",
            ))
        }
        (SocketAddr::V4(_), _) => SocketMode::Ipv4,
        (SocketAddr::V6(_), _) => SocketMode::Ipv6Only,
    };
    let (has_family, name) = match mode {
        SocketMode::Ipv4 => (caps.ipv4, "IPv4"),
        _ => (caps.ipv6, "IPv6"),
    };
    if !has_family {
        return Err(PlanError::new(
            &plan.spec,
            PlanErrorKind::FamilyUnavailable,
            format!("this host has no {name}, so {} cannot be bound", addr.ip()),
        ));
    }
    plan.sockets.push(socket(addr, mode, false));
    Ok(())
}

/// The addresses a name resolved to: normalized, each once, in order; those of a family the
/// policy excludes are dropped, those this host cannot have are skipped.
fn named(
    plan: &mut BindPlan,
    family: FamilyPolicy,
    caps: &HostCaps,
    answers: Vec<SocketAddr>,
) -> Result<(), PlanError> {
    let port = plan.port();
    let resolved: Vec<SocketAddr> = answers
        .into_iter()
        .map(|mut a| {
            a.set_port(port);
            normalize(a)
        })
        .collect();
    let mut seen: Vec<SocketAddr> = Vec::new();
    for addr in &resolved {
        if seen.contains(addr) {
            continue;
        }
        seen.push(*addr);
        let wanted = match family {
            FamilyPolicy::V4 => addr.is_ipv4(),
            FamilyPolicy::V6 => addr.is_ipv6(),
            FamilyPolicy::Any | FamilyPolicy::DualStack => true,
        };
        if !wanted {
            continue;
        }
        let skip = match addr.ip() {
            _ if unusable(*addr).is_some() => unusable(*addr),
            IpAddr::V4(_) if !caps.ipv4 => Some(SkipReason::NoIpv4),
            IpAddr::V6(_) if !caps.ipv6 => Some(SkipReason::NoIpv6),
            IpAddr::V4(ip) if ip == Ipv4Addr::LOCALHOST && !caps.ipv4_loopback => {
                Some(SkipReason::NoLoopback)
            }
            IpAddr::V6(ip) if ip == Ipv6Addr::LOCALHOST && !caps.ipv6_loopback => {
                Some(SkipReason::NoLoopback)
            }
            _ => None,
        };
        match skip {
            Some(reason) => plan.skipped.push(Skipped {
                addr: *addr,
                reason,
            }),
            None => {
                let mode = if addr.is_ipv4() {
                    SocketMode::Ipv4
                } else {
                    SocketMode::Ipv6Only
                };
                plan.sockets.push(socket(*addr, mode, true));
            }
        }
    }
    if plan.sockets.is_empty() {
        let list: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
        let mut detail = format!(
            "{} resolved to {}",
            plan.spec
                .host()
                .map(ToString::to_string)
                .unwrap_or_default(),
            if list.is_empty() {
                "no address".to_owned()
            } else {
                list.join(", ")
            }
        );
        if !resolved.is_empty() {
            detail.push_str(", none of which this host and family policy can use");
        }
        for s in &plan.skipped {
            detail.push_str(&format!("; {s}"));
        }
        return Err(PlanError::new(&plan.spec, PlanErrorKind::NoAddress, detail));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const fn caps(ipv4: bool, ipv6: bool, dual: bool, lo4: bool, lo6: bool) -> HostCaps {
        HostCaps {
            ipv4,
            ipv6,
            dual_stack: dual,
            ipv4_loopback: lo4,
            ipv6_loopback: lo6,
        }
    }

    /// The four columns of the listening table, as the probe sees them. `bindv6only=1` looks
    /// like a normal host because every socket sets IPV6_V6ONLY itself.
    const NORMAL: HostCaps = caps(true, true, true, true, true);
    const NO_IPV6: HostCaps = caps(true, false, false, true, false);
    const BINDV6ONLY: HostCaps = NORMAL;
    const NO_IPV4_LOOPBACK: HostCaps = caps(true, true, true, false, true);
    /// Shapes this machine cannot build.
    const OPENBSD: HostCaps = caps(true, true, false, true, true);
    const IPV6_ONLY_HOST: HostCaps = caps(false, true, false, false, true);
    const NO_NETWORK: HostCaps = caps(false, false, false, false, false);

    /// A resolver that answers from a fixed list and counts its calls.
    #[derive(Default)]
    struct Fake {
        answer: Mutex<Option<io::Result<Vec<IpAddr>>>>,
        calls: AtomicUsize,
    }

    impl Fake {
        fn answering(ips: &[&str]) -> Fake {
            let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
            Fake {
                answer: Mutex::new(Some(Ok(ips))),
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl Resolve for Fake {
        fn resolve(&self, _name: &crate::HostName) -> io::Result<Vec<IpAddr>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answer
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| Err(io::Error::other("the fake resolver was asked twice")))
        }

        fn interface_index(&self, name: &str) -> io::Result<u32> {
            match name {
                "eth0" => Ok(7),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such interface")),
            }
        }
    }

    /// A plan as short strings, or the kind of error planning gave.
    type Expected = Result<Vec<String>, PlanErrorKind>;

    /// The plan as short strings: "ADDR MODE" per socket, then "ADDR skipped: REASON".
    fn run(spec: &str, options: PlanOptions, caps: &HostCaps) -> Expected {
        let resolver = Fake::answering(&["192.0.2.1"]);
        let spec: ListenSpec = spec.parse().unwrap();
        let plan = plan(&spec, options, caps, &resolver).map_err(|e| e.kind())?;
        let mut out: Vec<String> = plan
            .sockets
            .iter()
            .map(|s| format!("{} {}", s.addr, s.mode))
            .collect();
        out.extend(plan.skipped.iter().map(|s| s.to_string()));
        Ok(out)
    }

    fn ok(items: &[&str]) -> Expected {
        Ok(items.iter().map(|s| s.to_string()).collect())
    }

    type Row = (&'static str, [Expected; 4]);

    #[test]
    fn the_listening_table_with_default_options() {
        use PlanErrorKind::*;
        let hosts = [
            ("normal", NORMAL),
            ("no IPv6", NO_IPV6),
            ("bindv6only", BINDV6ONLY),
            ("no 127.0.0.1", NO_IPV4_LOOPBACK),
        ];
        let dual = || ok(&["[::]:8080 dual-stack"]);
        let rows: Vec<Row> = vec![
            (
                ":8080",
                [
                    dual(),
                    ok(&[
                        "0.0.0.0:8080 ipv4",
                        "[::]:8080 skipped: this host has no IPv6",
                    ]),
                    dual(),
                    dual(),
                ],
            ),
            (
                "*:8080",
                [
                    dual(),
                    ok(&[
                        "0.0.0.0:8080 ipv4",
                        "[::]:8080 skipped: this host has no IPv6",
                    ]),
                    dual(),
                    dual(),
                ],
            ),
            (
                "8080",
                [
                    dual(),
                    ok(&[
                        "0.0.0.0:8080 ipv4",
                        "[::]:8080 skipped: this host has no IPv6",
                    ]),
                    dual(),
                    dual(),
                ],
            ),
            (
                "0.0.0.0:8080",
                [
                    ok(&["0.0.0.0:8080 ipv4"]),
                    ok(&["0.0.0.0:8080 ipv4"]),
                    ok(&["0.0.0.0:8080 ipv4"]),
                    ok(&["0.0.0.0:8080 ipv4"]),
                ],
            ),
            (
                "[::]:8080",
                [
                    ok(&["[::]:8080 ipv6-only"]),
                    Err(FamilyUnavailable),
                    ok(&["[::]:8080 ipv6-only"]),
                    ok(&["[::]:8080 ipv6-only"]),
                ],
            ),
            (
                "localhost:8080",
                [
                    ok(&["127.0.0.1:8080 ipv4", "[::1]:8080 ipv6-only"]),
                    ok(&[
                        "127.0.0.1:8080 ipv4",
                        "[::1]:8080 skipped: this host has no IPv6",
                    ]),
                    ok(&["127.0.0.1:8080 ipv4", "[::1]:8080 ipv6-only"]),
                    ok(&[
                        "[::1]:8080 ipv6-only",
                        "127.0.0.1:8080 skipped: this loopback address is not assigned here",
                    ]),
                ],
            ),
            // 127.0.0.1 without the address assigned: planned, and bind reports EADDRNOTAVAIL.
            (
                "127.0.0.1:8080",
                [
                    ok(&["127.0.0.1:8080 ipv4"]),
                    ok(&["127.0.0.1:8080 ipv4"]),
                    ok(&["127.0.0.1:8080 ipv4"]),
                    ok(&["127.0.0.1:8080 ipv4"]),
                ],
            ),
            (
                "[::1]:8080",
                [
                    ok(&["[::1]:8080 ipv6-only"]),
                    Err(FamilyUnavailable),
                    ok(&["[::1]:8080 ipv6-only"]),
                    ok(&["[::1]:8080 ipv6-only"]),
                ],
            ),
            (
                "localhost:0",
                [
                    ok(&["127.0.0.1:0 ipv4", "[::1]:0 ipv6-only"]),
                    ok(&["127.0.0.1:0 ipv4", "[::1]:0 skipped: this host has no IPv6"]),
                    ok(&["127.0.0.1:0 ipv4", "[::1]:0 ipv6-only"]),
                    ok(&[
                        "[::1]:0 ipv6-only",
                        "127.0.0.1:0 skipped: this loopback address is not assigned here",
                    ]),
                ],
            ),
        ];
        for (spec, expected) in rows {
            for ((host, caps), want) in hosts.iter().zip(expected) {
                assert_eq!(
                    run(spec, PlanOptions::default(), caps),
                    want,
                    "{spec} on a {host} host"
                );
            }
        }
    }

    #[test]
    fn host_shapes_this_machine_cannot_build() {
        let d = PlanOptions::default();
        // OpenBSD: no dual-stack sockets, so the wildcard is two sockets, both optional.
        assert_eq!(
            run(":80", d, &OPENBSD),
            ok(&["0.0.0.0:80 ipv4", "[::]:80 ipv6-only"])
        );
        let p = plan(&":80".parse().unwrap(), d, &OPENBSD, &Fake::default()).unwrap();
        assert!(p.sockets.iter().all(|s| s.optional));
        assert_eq!(
            run(
                "[::]:80",
                PlanOptions {
                    family: FamilyPolicy::DualStack,
                    ..d
                },
                &OPENBSD
            ),
            Err(PlanErrorKind::DualStackUnavailable)
        );
        // A kernel with IPv6 compiled out looks like NO_IPV6 to the probe.
        assert_eq!(
            run("[fe80::1%eth0]:80", d, &NO_IPV6),
            Err(PlanErrorKind::FamilyUnavailable)
        );
        // An IPv6-only host.
        assert_eq!(
            run(":80", d, &IPV6_ONLY_HOST),
            ok(&[
                "[::]:80 ipv6-only",
                "0.0.0.0:80 skipped: this host has no IPv4"
            ])
        );
        assert_eq!(
            run("localhost:80", d, &IPV6_ONLY_HOST),
            ok(&[
                "[::1]:80 ipv6-only",
                "127.0.0.1:80 skipped: this host has no IPv4"
            ])
        );
        assert_eq!(
            run("127.0.0.1:80", d, &IPV6_ONLY_HOST),
            Err(PlanErrorKind::FamilyUnavailable)
        );
        // Nothing at all.
        assert_eq!(
            run(":80", d, &NO_NETWORK),
            Err(PlanErrorKind::FamilyUnavailable)
        );
        assert_eq!(
            run("localhost:80", d, &NO_NETWORK),
            Err(PlanErrorKind::NoAddress)
        );
    }

    /// `HostCaps` is plain data: a caller can claim dual-stack sockets without one of the
    /// families. Dual-stack means nothing then, and must not put a family the host lacks in
    /// the plan.
    #[test]
    fn dual_stack_without_both_families_counts_as_no_dual_stack() {
        let d = PlanOptions::default();
        let dual_no_v6 = caps(true, false, true, true, false);
        assert_eq!(
            run(":80", d, &dual_no_v6),
            ok(&["0.0.0.0:80 ipv4", "[::]:80 skipped: this host has no IPv6"])
        );
        let dual_no_v4 = caps(false, true, true, false, true);
        assert_eq!(
            run(":80", d, &dual_no_v4),
            ok(&[
                "[::]:80 ipv6-only",
                "0.0.0.0:80 skipped: this host has no IPv4"
            ])
        );
        let dual = PlanOptions {
            family: FamilyPolicy::DualStack,
            ..d
        };
        assert_eq!(
            run(":80", dual, &dual_no_v6),
            Err(PlanErrorKind::DualStackUnavailable)
        );
        assert_eq!(
            run("[::]:80", dual, &dual_no_v4),
            Err(PlanErrorKind::DualStackUnavailable)
        );
    }

    #[test]
    fn family_policies() {
        use FamilyPolicy::*;
        use PlanErrorKind::*;
        let with = |family| PlanOptions {
            family,
            stack: WildcardStack::Single,
        };
        let cases: &[(&str, FamilyPolicy, HostCaps, Expected)] = &[
            (":80", V4, NORMAL, ok(&["0.0.0.0:80 ipv4"])),
            (":80", V6, NORMAL, ok(&["[::]:80 ipv6-only"])),
            (":80", DualStack, NORMAL, ok(&["[::]:80 dual-stack"])),
            (":80", V6, NO_IPV6, Err(FamilyUnavailable)),
            (":80", V4, IPV6_ONLY_HOST, Err(FamilyUnavailable)),
            (":80", DualStack, NO_IPV6, Err(DualStackUnavailable)),
            (":80", DualStack, OPENBSD, Err(DualStackUnavailable)),
            ("[::]:80", DualStack, NORMAL, ok(&["[::]:80 dual-stack"])),
            ("[::]:80", V4, NORMAL, Err(PolicyMismatch)),
            ("0.0.0.0:80", V6, NORMAL, Err(PolicyMismatch)),
            ("0.0.0.0:80", DualStack, NORMAL, Err(PolicyMismatch)),
            ("127.0.0.1:80", V6, NORMAL, Err(PolicyMismatch)),
            ("127.0.0.1:80", DualStack, NORMAL, Err(PolicyMismatch)),
            ("[::1]:80", V4, NORMAL, Err(PolicyMismatch)),
            ("[::1]:80", DualStack, NORMAL, Err(PolicyMismatch)),
            ("localhost:80", V4, NORMAL, ok(&["127.0.0.1:80 ipv4"])),
            ("localhost:80", V6, NORMAL, ok(&["[::1]:80 ipv6-only"])),
            ("localhost:80", DualStack, NORMAL, Err(PolicyMismatch)),
            ("localhost:80", V6, NO_IPV6, Err(NoAddress)),
            // A mapped address is planned as the IPv4 address it maps.
            (
                "[::ffff:127.0.0.1]:80",
                Any,
                NORMAL,
                ok(&["127.0.0.1:80 ipv4"]),
            ),
            (
                "[::ffff:127.0.0.1]:80",
                V4,
                NORMAL,
                ok(&["127.0.0.1:80 ipv4"]),
            ),
            ("[::ffff:127.0.0.1]:80", V6, NORMAL, Err(PolicyMismatch)),
        ];
        for (spec, family, caps, want) in cases {
            assert_eq!(
                &run(spec, with(*family), caps),
                want,
                "{spec} with {family:?} on {caps}"
            );
        }
    }

    #[test]
    fn separate_stacks_for_the_wildcard() {
        let separate = PlanOptions {
            family: FamilyPolicy::Any,
            stack: WildcardStack::Separate,
        };
        assert_eq!(
            run(":80", separate, &NORMAL),
            ok(&["0.0.0.0:80 ipv4", "[::]:80 ipv6-only"])
        );
        assert_eq!(
            run(":80", separate, &NO_IPV6),
            ok(&["0.0.0.0:80 ipv4", "[::]:80 skipped: this host has no IPv6"])
        );
        // Only the wildcard is affected.
        assert_eq!(
            run("[::]:80", separate, &NORMAL),
            ok(&["[::]:80 ipv6-only"])
        );
    }

    #[test]
    fn names_are_resolved_once_normalized_and_deduplicated_in_order() {
        let resolver = Fake::answering(&[
            "::ffff:192.0.2.1",
            "192.0.2.1",
            "2001:db8::1",
            "192.0.2.2",
            "2001:db8::1",
        ]);
        let spec: ListenSpec = "example.com:80".parse().unwrap();
        let p = plan(&spec, PlanOptions::default(), &NORMAL, &resolver).unwrap();
        let addrs: Vec<String> = p
            .sockets
            .iter()
            .map(|s| format!("{} {}", s.addr, s.mode))
            .collect();
        assert_eq!(
            addrs,
            [
                "192.0.2.1:80 ipv4",
                "[2001:db8::1]:80 ipv6-only",
                "192.0.2.2:80 ipv4"
            ]
        );
        assert!(p.sockets.iter().all(|s| s.optional));
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
    }

    /// The plan for `example.com:80` when the resolver answers `answers` (with scopes).
    fn plan_answers(answers: &[&str]) -> Expected {
        struct Scoped(Vec<SocketAddr>);
        impl Resolve for Scoped {
            fn resolve(&self, _: &crate::HostName) -> io::Result<Vec<IpAddr>> {
                unreachable!("the planner asks for scopes")
            }
            fn resolve_scoped(&self, _: &crate::HostName) -> io::Result<Vec<SocketAddr>> {
                Ok(self.0.clone())
            }
        }
        let answers = answers.iter().map(|a| a.parse().unwrap()).collect();
        let spec: ListenSpec = "example.com:80".parse().unwrap();
        let p =
            plan(&spec, PlanOptions::default(), &NORMAL, &Scoped(answers)).map_err(|e| e.kind())?;
        let mut out: Vec<String> = p
            .sockets
            .iter()
            .map(|s| format!("{} {}", s.addr, s.mode))
            .collect();
        out.extend(p.skipped.iter().map(|s| s.to_string()));
        Ok(out)
    }

    /// Issue #13, item 2: a hosts file that blocks a name with 0.0.0.0 made it listen on
    /// every interface; multicast, broadcast and scope-less link-local answers reported
    /// sockets no client can reach, or failed the whole spec with EINVAL.
    #[test]
    fn resolver_answers_no_client_could_reach_are_skipped_with_a_reason() {
        assert_eq!(
            plan_answers(&[
                "0.0.0.0:0",
                "127.0.0.1:0",
                "[::]:0",
                "224.0.0.1:0",
                "255.255.255.255:0",
                "[::ffff:224.0.0.2]:0",
                "[ff02::1]:0",
                "[fe80::1]:0",
                "[::1]:0",
            ]),
            ok(&[
                "127.0.0.1:80 ipv4",
                "[::1]:80 ipv6-only",
                "0.0.0.0:80 skipped: the unspecified address, which would mean every interface (a hosts file that blocks the name answers with it)",
                "[::]:80 skipped: the unspecified address, which would mean every interface (a hosts file that blocks the name answers with it)",
                "224.0.0.1:80 skipped: a multicast address, which no TCP client can connect to",
                "255.255.255.255:80 skipped: the broadcast address, which no TCP client can connect to",
                "224.0.0.2:80 skipped: a multicast address, which no TCP client can connect to",
                "[ff02::1]:80 skipped: a multicast address, which no TCP client can connect to",
                "[fe80::1]:80 skipped: a link-local address without its interface (zone)",
            ])
        );
        // Nothing left: an error that says why, not a socket on every interface.
        assert_eq!(plan_answers(&["0.0.0.0:0"]), Err(PlanErrorKind::NoAddress));
    }

    /// Issue #12, item 14: the scope of a link-local answer was dropped.
    #[test]
    fn a_link_local_answer_keeps_its_zone() {
        assert_eq!(
            plan_answers(&["[fe80::1%3]:0", "[fe80::1%4]:0", "[fe80::1%3]:0"]),
            ok(&["[fe80::1%3]:80 ipv6-only", "[fe80::1%4]:80 ipv6-only"])
        );
    }

    /// Issue #13, item 2: the same addresses written by the user are refused, naming the
    /// address; the user's own wildcards mean what they say.
    #[test]
    fn written_addresses_no_client_could_reach_are_refused() {
        for spec in [
            "224.0.0.1:0",
            "255.255.255.255:0",
            "[::ffff:224.0.0.1]:0",
            "[ff02::1]:0",
            "[ff02::1%eth0]:0",
            "[fe80::1]:0",
        ] {
            let err = plan(
                &spec.parse().unwrap(),
                PlanOptions::default(),
                &NORMAL,
                &Fake::default(),
            )
            .unwrap_err();
            assert_eq!(err.kind(), PlanErrorKind::UnusableAddress, "{spec}: {err}");
        }
        let err = plan(
            &"[fe80::1]:80".parse().unwrap(),
            PlanOptions::default(),
            &NORMAL,
            &Fake::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cannot listen on "[fe80::1]:80": fe80::1 is link-local: name its interface with a zone, as in "[fe80::1%eth0]:80""#
        );
        for spec in ["0.0.0.0:0", "[::]:0", "[::ffff:0.0.0.0]:0", "169.254.1.1:0"] {
            let p = plan(
                &spec.parse().unwrap(),
                PlanOptions::default(),
                &NORMAL,
                &Fake::default(),
            );
            assert!(p.is_ok(), "{spec}: {p:?}");
        }
    }

    #[test]
    fn localhost_and_numeric_hosts_never_reach_the_resolver() {
        for spec in [
            "localhost:80",
            "LOCALHOST.:80",
            "app.localhost:80",
            "127.0.0.1:80",
            "[::1]:80",
            ":80",
            "[fe80::1%eth0]:80",
        ] {
            let resolver = Fake::answering(&["192.0.2.1"]);
            let spec: ListenSpec = spec.parse().unwrap();
            plan(&spec, PlanOptions::default(), &NORMAL, &resolver).unwrap();
            assert_eq!(
                resolver.calls.load(Ordering::SeqCst),
                0,
                "{spec} asked the resolver"
            );
        }
        // ...and localhost never means what a resolver (or a hosts file) says it means.
        assert_eq!(
            run("app.localhost:80", PlanOptions::default(), &NORMAL),
            ok(&["127.0.0.1:80 ipv4", "[::1]:80 ipv6-only"])
        );
    }

    #[test]
    fn resolver_failures_and_empty_answers_name_the_spec() {
        let spec: ListenSpec = "nowhere.example:80".parse().unwrap();
        let failing = Fake {
            answer: Mutex::new(Some(Err(io::Error::other("lookup timed out")))),
            calls: AtomicUsize::new(0),
        };
        let err = plan(&spec, PlanOptions::default(), &NORMAL, &failing).unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::Resolve);
        assert_eq!(
            err.to_string(),
            r#"cannot listen on "nowhere.example:80": cannot resolve nowhere.example: lookup timed out"#
        );

        let err = plan(
            &spec,
            PlanOptions::default(),
            &NORMAL,
            &Fake::answering(&[]),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::NoAddress);
        assert!(err.to_string().contains("resolved to no address"), "{err}");

        let v4 = PlanOptions {
            family: FamilyPolicy::V4,
            ..PlanOptions::default()
        };
        let err = plan(&spec, v4, &NORMAL, &Fake::answering(&["2001:db8::1"])).unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::NoAddress);
        assert!(
            err.to_string().contains("2001:db8::1, none of which"),
            "{err}"
        );
    }

    #[test]
    fn zones_become_scope_ids() {
        let d = PlanOptions::default();
        let scope_of = |spec: &str| {
            let p = plan(&spec.parse().unwrap(), d, &NORMAL, &Fake::default()).unwrap();
            match p.sockets[0].addr {
                SocketAddr::V6(a) => a.scope_id(),
                other => panic!("{spec} planned {other}"),
            }
        };
        assert_eq!(scope_of("[fe80::1%eth0]:80"), 7);
        assert_eq!(scope_of("[fe80::1%3]:80"), 3);
        // TCP cannot listen on multicast, zone or not (issue #13).
        let err = plan(
            &"[ff02::1%eth0]:80".parse().unwrap(),
            d,
            &NORMAL,
            &Fake::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::UnusableAddress);

        let err = plan(
            &"[fe80::1%wlan9]:80".parse().unwrap(),
            d,
            &NORMAL,
            &Fake::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::UnknownInterface);
        // Said once: the resolver's NotFound error adds nothing to it (issue #12).
        assert_eq!(
            err.to_string(),
            r#"cannot listen on "[fe80::1%wlan9]:80": no network interface is called "wlan9""#
        );

        let err = plan(
            &"[2001:db8::1%eth0]:80".parse().unwrap(),
            d,
            &NORMAL,
            &Fake::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PlanErrorKind::ZoneNotApplicable);
    }
}
