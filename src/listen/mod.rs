//! Opening listening sockets: from [`ListenSpec`]s, through the planner, to non-blocking
//! [`mio::net::TcpListener`]s with a report of what was bound and what was skipped.
//!
//! Heads up: before changing this file, read RFC 3493 §5.3 (IPV6_V6ONLY), `socket(7)` on
//! SO_REUSEADDR/SO_REUSEPORT, and the failure rules in `README.md`: EADDRINUSE fails the whole
//! spec (a partial bind there is a port hijack), an address the user wrote never fails
//! silently, and every socket of a port-0 spec shares one port.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::{
    display_addr, normalize, Host, HostName, ListenSpec, SpecKind, ToListenSpec, UnixAddr,
};
use crate::error::Error;

pub(crate) mod error;
use crate::host::{HostCaps, Resolve, SystemResolver};
use crate::plan::{
    plan, BindPlan, FamilyPolicy, PlanOptions, SkipReason, Skipped, SocketMode, WildcardStack,
};
use crate::socket::{AcceptOptions, Accepting, ListenAddr, ListenSocket};
pub use error::BindError;

/// How many times a port-0 spec with several sockets is retried on a fresh port when the
/// port the first socket got is taken on another address.
const PORT_ATTEMPTS: usize = 16;

/// How to open listening sockets: family policy, socket options, and (for tests or special
/// hosts) the capabilities and resolver to plan with.
///
/// ```
/// use dualstack::{FamilyPolicy, ListenConfig};
///
/// let bound = ListenConfig::new().family(FamilyPolicy::V4).bind("localhost:0")?;
/// assert_eq!(bound.listeners().len(), 1);
/// assert!(bound.listeners()[0].local_addr().ip().is_some_and(|a| a.is_ipv4()));
/// # Ok::<(), dualstack::Error>(())
/// ```
#[derive(Clone)]
pub struct ListenConfig {
    options: PlanOptions,
    reuse_address: bool,
    reuse_port: bool,
    free_bind: bool,
    unix_mode: Option<u32>,
    backlog: i32,
    caps: Option<HostCaps>,
    resolver: Arc<dyn Resolve>,
    /// Options for accepted connections that a server sets on its TCP listeners, inherited
    /// ones included (before they are taken): `None` for sockets the caller serves itself.
    accept: Option<AcceptOptions>,
}

impl fmt::Debug for ListenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenConfig")
            .field("options", &self.options)
            .field("reuse_address", &self.reuse_address)
            .field("reuse_port", &self.reuse_port)
            .field("free_bind", &self.free_bind)
            .field("unix_mode", &self.unix_mode)
            .field("backlog", &self.backlog)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Default for ListenConfig {
    fn default() -> ListenConfig {
        ListenConfig::new()
    }
}

impl ListenConfig {
    /// The defaults: any family, one dual-stack socket for the wildcard where supported,
    /// SO_REUSEADDR on (not on Windows, where it would let another process steal the port),
    /// SO_REUSEPORT off, backlog 1024, capabilities probed at each bind, the system resolver.
    pub fn new() -> ListenConfig {
        ListenConfig {
            options: PlanOptions::default(),
            reuse_address: true,
            reuse_port: false,
            free_bind: false,
            unix_mode: None,
            // mio's choice too: Linux caps it at net.core.somaxconn anyway.
            backlog: 1024,
            caps: None,
            resolver: Arc::new(SystemResolver),
            accept: None,
        }
    }

    /// The options a server's connections inherit from its TCP listeners, set on each
    /// listener as it is opened, or, for an inherited one, before it is taken.
    pub(crate) fn accept_options(mut self, options: AcceptOptions) -> ListenConfig {
        self.accept = Some(options);
        self
    }

    /// Which families to use (default [`FamilyPolicy::Any`]).
    pub fn family(mut self, family: FamilyPolicy) -> ListenConfig {
        self.options.family = family;
        self
    }

    /// How to open the wildcard (default [`WildcardStack::Single`]).
    pub fn wildcard_stack(mut self, stack: WildcardStack) -> ListenConfig {
        self.options.stack = stack;
        self
    }

    /// Whether to set SO_REUSEADDR, so a restarted server can bind while old connections are
    /// in TIME_WAIT (default on). Ignored on Windows, where SO_REUSEADDR lets another socket
    /// take over a port in use: there every listening socket gets `SO_EXCLUSIVEADDRUSE`
    /// instead, so that no other socket can bind its port (Microsoft's advice for servers;
    /// its price, which Microsoft documents, is that a restarted server cannot bind the port
    /// while connections the old one accepted are still active).
    pub fn reuse_address(mut self, on: bool) -> ListenConfig {
        self.reuse_address = on;
        self
    }

    /// Whether to set SO_REUSEPORT, so several processes can listen on one port (default
    /// off). Binding fails with [`io::ErrorKind::Unsupported`] where the platform lacks it.
    pub fn reuse_port(mut self, on: bool) -> ListenConfig {
        self.reuse_port = on;
        self
    }

    /// Whether to bind an address this host does not have yet (`IP_FREEBIND` /
    /// `IPV6_FREEBIND`, Linux only; systemd's `FreeBind=`): for a service that starts before
    /// the network has given the host its addresses. Default off: then only an address the
    /// host has but cannot use yet (tentative, during duplicate address detection) and that
    /// a name produced is bound that way, and any other missing address is an error.
    ///
    /// # Platform-specific behavior
    ///
    /// Elsewhere it changes nothing: a missing address is an error.
    pub fn free_bind(mut self, on: bool) -> ListenConfig {
        self.free_bind = on;
        self
    }

    /// The permission bits of the files of Unix-domain listeners (as `0o660`), set before
    /// any client can connect: the socket is bound at its path and given its mode before it
    /// listens (until then every connect is refused). Default: none set, so the process's
    /// umask decides, as for any file. A mode above `0o777` (set-id and sticky bits mean
    /// nothing on a socket) and a mode for an abstract socket (it has no file) are errors
    /// when binding. An inherited Unix-domain socket keeps the mode whoever made it gave it
    /// (systemd's `SocketMode=`): a warning says so when a mode is set here.
    pub fn unix_mode(mut self, mode: u32) -> ListenConfig {
        self.unix_mode = Some(mode);
        self
    }

    /// The `listen(2)` backlog: how many connections may wait to be accepted (default 1024).
    pub fn backlog(mut self, backlog: i32) -> ListenConfig {
        self.backlog = backlog;
        self
    }

    /// Plan with these capabilities instead of probing the host.
    pub fn host_caps(mut self, caps: HostCaps) -> ListenConfig {
        self.caps = Some(caps);
        self
    }

    /// Resolve names with `resolver` instead of the system resolver.
    pub fn resolver(mut self, resolver: impl Resolve + 'static) -> ListenConfig {
        self.resolver = Arc::new(resolver);
        self
    }

    /// The plan for `spec`, without opening anything.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] or [`Error::Plan`], as for [`bind`](ListenConfig::bind).
    pub fn plan(&self, spec: impl ToListenSpec) -> Result<BindPlan, Error> {
        let caps = self.caps.unwrap_or_else(HostCaps::probe);
        Ok(plan(
            &spec.to_listen_spec()?,
            self.options,
            &caps,
            &*self.resolver,
        )?)
    }

    /// Opens every socket `spec` needs.
    ///
    /// # Errors
    ///
    /// - [`Error::Parse`]: the spec is not valid text;
    /// - [`Error::Plan`]: the spec cannot be served on this host with this policy;
    /// - [`Error::Bind`]: a socket could not be opened. No socket of the spec stays open.
    pub fn bind(&self, spec: impl ToListenSpec) -> Result<Bound, Error> {
        self.bind_all([spec])
    }

    /// Opens every socket of every spec, probing the host once. If any spec fails, every
    /// socket already opened is closed and the error names the spec.
    ///
    /// # Errors
    ///
    /// As for [`bind`](ListenConfig::bind).
    pub fn bind_all<S: ToListenSpec>(
        &self,
        specs: impl IntoIterator<Item = S>,
    ) -> Result<Bound, Error> {
        let specs: Vec<ListenSpec> = specs
            .into_iter()
            .map(|s| s.to_listen_spec())
            .collect::<Result<_, _>>()?;
        let checked = self.check_inherited(specs)?;
        self.open_checked(checked)
    }

    /// The first half of [`bind_all`](ListenConfig::bind_all): every inherited descriptor
    /// the specs name is checked and reserved for this bind, before any socket of our own
    /// is opened: a descriptor a spec names that is not open fails here, so no socket of
    /// ours can land on its number and be taken for it, and no other thread's bind can take
    /// one reserved here. Dropping the result releases the reservations.
    pub(crate) fn check_inherited(&self, specs: Vec<ListenSpec>) -> Result<CheckedSpecs, Error> {
        let mut inherited: Vec<Vec<crate::inherit::Checked>> = Vec::with_capacity(specs.len());
        let mut handed: Vec<Option<(String, bool)>> = Vec::with_capacity(specs.len());
        let mut named: Vec<(i32, usize)> = Vec::new();
        let texts: Vec<String> = specs.iter().map(ListenSpec::to_string).collect();
        for (i, spec) in specs.iter().enumerate() {
            // A successor of a hand-over takes the sockets its predecessor passed for this
            // spec (the same text, the same place among equal specs) before anything else.
            let occurrence = texts[..i].iter().filter(|t| **t == texts[i]).count();
            let fds = match handover_group(spec, occurrence) {
                Some((fds, from, strict)) if !fds.is_empty() => {
                    handed.push(Some((from, strict)));
                    fds
                }
                Some((_, from, _)) if matches!(spec.kind(), SpecKind::Activated { .. }) => {
                    return Err(crate::inherit::not_handed(spec, &from).into());
                }
                _ => {
                    handed.push(None);
                    crate::inherit::descriptors(spec)?
                }
            };
            for &fd in &fds {
                if let Some(&(_, first)) = named.iter().find(|(f, _)| *f == fd) {
                    return Err(crate::inherit::twice(spec, fd, &specs[first]).into());
                }
                named.push((fd, i));
            }
            inherited.push(
                fds.into_iter()
                    .map(|fd| crate::inherit::check(spec, fd))
                    .collect::<Result<_, _>>()?,
            );
        }
        Ok(CheckedSpecs {
            specs,
            inherited,
            handed,
        })
    }

    /// The second half of [`bind_all`](ListenConfig::bind_all): our own sockets are opened,
    /// then the inherited descriptors are prepared (non-blocking, close-on-exec, a server's
    /// options) and taken last, once everything else has worked: a failed call leaves each
    /// as it was, open, and the same descriptor may be named again once the problem is
    /// fixed.
    pub(crate) fn open_checked(&self, checked: CheckedSpecs) -> Result<Bound, Error> {
        let CheckedSpecs {
            specs,
            mut inherited,
            handed,
        } = checked;
        // Probed once, and only if a spec needs it.
        let mut caps = self.caps;
        let mut skipped = Vec::new();
        let mut logged = Vec::new();
        // Our own sockets, one group per spec, in spec order.
        let mut own: Vec<Vec<Listener>> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let mine = match spec.kind() {
                SpecKind::Ip { .. } => {
                    let caps = *caps.get_or_insert_with(HostCaps::probe);
                    let mut plan = plan(spec, self.options, &caps, &*self.resolver)?;
                    let planned_skips = std::mem::take(&mut plan.skipped);
                    let missing = match &handed[i] {
                        Some((from, strict)) => {
                            adopt(&plan, &mut inherited[i], from, *strict, &mut logged)?
                        }
                        None => Some(plan),
                    };
                    let mut opened = match missing {
                        Some(missing) => self.open(&missing, &own)?,
                        None => Opened {
                            listeners: Vec::new(),
                            skipped: Vec::new(),
                            notes: Vec::new(),
                        },
                    };
                    for l in &mut opened.listeners {
                        // A plan for the sockets a hand-over did not pass names the port
                        // the passed ones have; the listener keeps the spec as written.
                        l.spec = spec.clone();
                    }
                    for s in planned_skips.into_iter().chain(opened.skipped) {
                        logged.push(format!("listen spec {}: {s}", spec.quoted()));
                        skipped.push(s);
                    }
                    logged.extend(opened.notes);
                    opened.listeners
                }
                SpecKind::Unix(addr) => match &handed[i] {
                    Some((from, strict))
                        if adopt_unix(
                            spec,
                            addr,
                            &mut inherited[i],
                            from,
                            *strict,
                            &mut logged,
                        )? =>
                    {
                        Vec::new()
                    }
                    _ => vec![self.open_unix(spec, addr)?],
                },
                _ => Vec::new(),
            };
            own.push(mine);
        }
        // Everything else worked: now the inherited descriptors are made non-blocking and
        // close-on-exec, given a server's options, and taken.
        for (spec, checked) in specs.iter().zip(&mut inherited) {
            for c in checked {
                crate::inherit::prepare(spec, c, self.accept)?;
            }
        }
        let mut listeners: Vec<Listener> = Vec::new();
        for (origin, ((spec, mine), checked)) in specs.iter().zip(own).zip(inherited).enumerate() {
            for l in mine {
                listeners.push(Listener { origin, ..l });
            }
            for c in checked {
                let taken = match crate::inherit::own(spec, c) {
                    Ok(taken) => taken,
                    Err(e) => {
                        // Those taken before it go back as they were; ours close.
                        listeners.into_iter().for_each(Listener::undo);
                        return Err(e.into());
                    }
                };
                if self.unix_mode.is_some() && taken.mode == SocketMode::Unix {
                    logged.push(format!(
                        "listen spec {}: {}: an inherited Unix-domain socket keeps the mode whoever made it gave it; the Unix mode asked for applies to sockets this server makes",
                        spec.quoted(),
                        taken.addr
                    ));
                }
                if let Some((from, _)) = &handed[origin] {
                    log::info!(
                        "listen spec {}: took over fd {} ({} ({})) from {from}",
                        spec.quoted(),
                        taken.give_back.fd(),
                        taken.addr,
                        taken.mode
                    );
                }
                listeners.push(Listener {
                    socket: match &handed[origin] {
                        Some(_) => handed_socket(taken.fd, &taken.addr, taken.give_back.fd()),
                        None => inherited_socket(taken.fd, &taken.addr),
                    },
                    local_addr: taken.addr,
                    mode: taken.mode,
                    spec: spec.clone(),
                    origin,
                    accepting: taken.accepting,
                    give_back: Some(taken.give_back),
                });
            }
        }
        if specs
            .iter()
            .any(|s| matches!(s.kind(), SpecKind::Activated { .. }))
        {
            crate::inherit::close_passed_on_exec();
        }
        // Logged here, once, whether the planner or the kernel left the address out, and
        // only once every spec is bound.
        for line in logged {
            log::warn!("{line}");
        }
        Ok(Bound { listeners, skipped })
    }

    /// What the log says of `addr`, of `spec`, bound with `IP_FREEBIND` / `IPV6_FREEBIND`.
    fn free_bind_note(&self, spec: &ListenSpec, addr: SocketAddr) -> String {
        let option = if addr.is_ipv4() {
            "IP_FREEBIND"
        } else {
            "IPV6_FREEBIND"
        };
        let (spec, addr) = (spec.quoted(), display_addr(addr));
        if self.free_bind {
            format!(
                "listen spec {spec}: {addr} is not usable on this host yet: bound with {option} \
                 as asked (ListenConfig::free_bind); it serves clients once the host has the \
                 address"
            )
        } else {
            format!(
                "listen spec {spec}: {addr} is assigned to this host but not usable yet \
                 (tentative: duplicate address detection): bound with {option}, so no other \
                 socket can take it, and it serves clients once detection ends"
            )
        }
    }

    /// Opens a Unix-domain listener.
    #[cfg(unix)]
    fn open_unix(&self, spec: &ListenSpec, addr: &UnixAddr) -> Result<Listener, BindError> {
        let listener = crate::unix::UnixListener::bind(addr, self.unix_mode, self.backlog)
            .map_err(|(step, e)| {
                BindError::new(
                    spec,
                    ListenAddr::Unix(addr.clone()),
                    SocketMode::Unix,
                    step,
                    e,
                )
            })?;
        Ok(Listener {
            socket: ListenSocket::Unix(listener),
            local_addr: ListenAddr::Unix(addr.clone()),
            mode: SocketMode::Unix,
            spec: spec.clone(),
            origin: 0,
            accepting: Accepting::default(),
            give_back: None,
        })
    }

    /// See the Unix version: the parser refuses such specs here, so this is not reached.
    #[cfg(not(unix))]
    fn open_unix(&self, spec: &ListenSpec, addr: &UnixAddr) -> Result<Listener, BindError> {
        Err(BindError::new(
            spec,
            ListenAddr::Unix(addr.clone()),
            SocketMode::Unix,
            "socket",
            io::Error::new(io::ErrorKind::Unsupported, "no Unix-domain sockets here"),
        ))
    }

    /// Opens the sockets of one plan, retrying on a fresh port if a shared ephemeral port
    /// turns out to be taken on a later address. `ours` are the listeners earlier specs of
    /// the same call opened, so that a collision with them is reported as such.
    fn open(&self, plan: &BindPlan, ours: &[Vec<Listener>]) -> Result<Opened, BindError> {
        // The kernel hands out the same free port to bind(0) again and again (seen on Linux
        // 6.x), so the sockets of a failed attempt stay bound until this spec is done: then
        // the next attempt must get a different port. They never listen, so no client can
        // connect to one and be reset when it is dropped.
        let mut held: Vec<BoundSocket> = Vec::new();
        let mut attempts = 1;
        loop {
            match self.open_once(plan, ours) {
                Ok(opened) => return Ok(opened),
                Err(Failure::Fatal(e)) => return Err(*e),
                Err(Failure::PortTaken(e, bound)) if attempts < PORT_ATTEMPTS => {
                    log::debug!("{e}; trying another port ({attempts} of {PORT_ATTEMPTS})");
                    attempts += 1;
                    held.extend(bound);
                }
                Err(Failure::PortTaken(e, _)) => {
                    return Err(BindError {
                        detail: format!(
                            "no port was free on every address after {PORT_ATTEMPTS} attempts; last: {}",
                            e.detail
                        ),
                        ..*e
                    })
                }
            }
        }
    }

    /// One attempt at opening every socket of `plan`: bind them all, then listen on them
    /// all. Sockets bound before a failure are closed when the partial list is dropped.
    fn open_once(&self, plan: &BindPlan, ours: &[Vec<Listener>]) -> Result<Opened, Failure> {
        let mut bound: Vec<BoundSocket> = Vec::new();
        let mut skipped = Vec::new();
        let mut notes = Vec::new();
        // 0 until the first socket binds; then that socket's port, for all the others.
        let mut port = plan.port();
        for planned in &plan.sockets {
            let mut addr = planned.addr;
            addr.set_port(port);
            let result = match self.bind_socket(addr, planned.mode, false) {
                // EADDRNOTAVAIL for an address this host has but cannot use yet (tentative:
                // duplicate address detection) when a name gave it, or for any address when
                // free binding was asked for. Skipping it would let another user take it;
                // on Linux the socket holds it anyway and serves once the address is up.
                Err((_, e))
                    if e.kind() == io::ErrorKind::AddrNotAvailable
                        && FREEBIND
                        && (self.free_bind || (planned.optional && is_assigned(addr))) =>
                {
                    let freed = self.bind_socket(addr, planned.mode, true);
                    if freed.is_ok() {
                        notes.push(self.free_bind_note(&plan.spec, addr));
                    }
                    freed
                }
                other => other,
            };
            match result {
                Ok(socket) => {
                    port = socket.local.port();
                    bound.push(socket);
                }
                Err((_, e)) if planned.optional && is_family_missing(&e) => {
                    let reason = SkipReason::Os(e.raw_os_error().unwrap_or_default());
                    skipped.push(Skipped { addr, reason });
                }
                Err((step, e)) => {
                    let port_was_ours = plan.port() == 0 && !bound.is_empty();
                    let in_use = e.kind() == io::ErrorKind::AddrInUse;
                    let mut err = BindError::new(&plan.spec, addr, planned.mode, step, e);
                    // With a port the kernel chose, a collision is luck: try another port.
                    if in_use && plan.port() != 0 {
                        if let Some(other) = ours
                            .iter()
                            .flatten()
                            .find(|l| overlaps(l, addr, planned.mode))
                        {
                            // Not someone else's socket: this server's own, from another
                            // spec. Retrying on other ports would not help either.
                            err.detail = format!(
                                "bind {} ({}): this server already listens on {other} for {}, \
                                 and the two overlap",
                                display_addr(addr),
                                planned.mode,
                                other.spec.quoted()
                            );
                            return Err(Failure::Fatal(Box::new(err)));
                        }
                    }
                    let err = Box::new(err);
                    return Err(if in_use && port_was_ours {
                        Failure::PortTaken(err, bound)
                    } else {
                        Failure::Fatal(err)
                    });
                }
            }
        }
        if bound.is_empty() {
            let what: Vec<String> = skipped.iter().map(Skipped::to_string).collect();
            let first = plan
                .sockets
                .first()
                .expect("a plan has at least one socket");
            return Err(Failure::Fatal(Box::new(BindError {
                spec: Box::new(plan.spec.clone()),
                addr: ListenAddr::Ip(first.addr),
                mode: first.mode,
                detail: format!("no address could be bound ({})", what.join("; ")),
                source: io::Error::from(io::ErrorKind::AddrNotAvailable),
            })));
        }
        let mut listeners = Vec::with_capacity(bound.len());
        for b in bound {
            let (local, mode) = (b.local, b.mode);
            let listener = b.listen(self.backlog, &plan.spec).map_err(|e| {
                Failure::Fatal(Box::new(BindError::new(
                    &plan.spec, local, mode, "listen", e,
                )))
            })?;
            listeners.push(listener);
        }
        Ok(Opened {
            listeners,
            skipped,
            notes,
        })
    }

    /// Creates, configures and binds one socket (`IP_FREEBIND` / `IPV6_FREEBIND` with
    /// `free`), and reads back its address and mode. On error, says which step failed.
    fn bind_socket(
        &self,
        addr: SocketAddr,
        mode: SocketMode,
        free: bool,
    ) -> Result<BoundSocket, (&'static str, io::Error)> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| ("socket", e))?;
        // Recorded as the library's from its first moment, before it listens: no other
        // thread's `fd:N` can take it while this bind goes on.
        #[cfg(unix)]
        crate::inherit::opened(std::os::fd::AsFd::as_fd(&socket));
        if addr.is_ipv6() {
            // Always explicit: the OS default (Linux: net.ipv6.bindv6only) must not decide.
            socket
                .set_only_v6(mode != SocketMode::DualStack)
                .map_err(|e| ("set IPV6_V6ONLY", e))?;
        }
        // On Windows SO_REUSEADDR would let a socket take over a port in use; there the
        // port is made exclusive instead (see `reuse_address`).
        #[cfg(not(windows))]
        socket
            .set_reuse_address(self.reuse_address)
            .map_err(|e| ("set SO_REUSEADDR", e))?;
        #[cfg(windows)]
        crate::sys::set_exclusive_address_use(&socket)
            .map_err(|e| ("set SO_EXCLUSIVEADDRUSE", e))?;
        set_reuse_port(&socket, self.reuse_port).map_err(|e| ("set SO_REUSEPORT", e))?;
        if free {
            set_freebind(&socket, addr).map_err(|e| ("set IP_FREEBIND", e))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(|e| ("set O_NONBLOCK", e))?;
        let accepting = match self.accept {
            Some(options) => crate::socket::set_accept_options(
                socket2::SockRef::from(&socket),
                options,
                &display_addr(addr),
            )?,
            None => Accepting::default(),
        };
        socket.bind(&addr.into()).map_err(|e| ("bind", e))?;
        let local = socket
            .local_addr()
            .map_err(|e| ("getsockname", e))?
            .as_socket()
            .ok_or_else(|| ("getsockname", io::Error::other("not an IP socket")))?;
        let mode = crate::socket::read_mode(&socket, local).map_err(|e| ("get IPV6_V6ONLY", e))?;
        Ok(BoundSocket {
            socket,
            local: normalize(local),
            mode,
            accepting,
        })
    }
}

/// Specs whose inherited descriptors are checked and reserved (see
/// [`ListenConfig::check_inherited`]); their own sockets are not opened yet.
pub(crate) struct CheckedSpecs {
    specs: Vec<ListenSpec>,
    inherited: Vec<Vec<crate::inherit::Checked>>,
    /// For each spec: the pid of the predecessor that handed its sockets over, if one did.
    handed: Vec<Option<(String, bool)>>,
}

/// What opening one plan gave: the listeners, the addresses skipped, and warnings to log.
struct Opened {
    listeners: Vec<Listener>,
    skipped: Vec<Skipped>,
    notes: Vec<String>,
}

/// A socket bound but not listening yet.
struct BoundSocket {
    socket: Socket,
    /// Normalized, with the real port.
    local: SocketAddr,
    /// Read back from the kernel.
    mode: SocketMode,
    accepting: Accepting,
}

impl BoundSocket {
    fn listen(self, backlog: i32, spec: &ListenSpec) -> io::Result<Listener> {
        self.socket.listen(backlog)?;
        let std_listener: std::net::TcpListener = self.socket.into();
        Ok(Listener {
            socket: ListenSocket::Tcp(mio::net::TcpListener::from_std(std_listener)),
            local_addr: ListenAddr::Ip(self.local),
            mode: self.mode,
            spec: spec.clone(),
            origin: 0,
            accepting: self.accepting,
            give_back: None,
        })
    }
}

/// The listening socket an inherited descriptor is, by the address it reported.
#[cfg(unix)]
fn inherited_socket(fd: crate::inherit::Owned, addr: &ListenAddr) -> ListenSocket {
    match addr {
        ListenAddr::Ip(_) => ListenSocket::Tcp(mio::net::TcpListener::from_std(
            std::net::TcpListener::from(fd),
        )),
        _ => ListenSocket::Unix(crate::unix::UnixListener::inherited(
            std::os::unix::net::UnixListener::from(fd),
        )),
    }
}

/// The listening socket a predecessor handed over, by the address it reported: for a
/// Unix-domain socket at a path, the file becomes this process's to remove once it has told
/// the predecessor it is ready (until then, a successor that gives up leaves it alone).
#[cfg(unix)]
fn handed_socket(fd: crate::inherit::Owned, addr: &ListenAddr, number: i32) -> ListenSocket {
    match addr {
        ListenAddr::Unix(UnixAddr::Path(path)) => {
            ListenSocket::Unix(crate::unix::UnixListener::handed(
                std::os::unix::net::UnixListener::from(fd),
                path,
                crate::handover::passed::file_of(number),
            ))
        }
        _ => inherited_socket(fd, addr),
    }
}

/// Nothing is handed over here.
#[cfg(not(unix))]
fn handed_socket(fd: crate::inherit::Owned, _: &ListenAddr, _: i32) -> ListenSocket {
    match fd {}
}

/// The sockets of `plan` that a hand-over did not pass, as a plan of their own (on the
/// port the passed ones have), or `None` when every one was passed. Each planned socket
/// takes the passed socket with its address; a passed socket with the address but another
/// mode or port is an error that names both (a hand-over never changes a socket, and a
/// socket bound beside it would not get its clients). Planned sockets nothing was passed
/// for are bound (the host has an address more); passed sockets no planned socket has the
/// address of are left out of `passed` (closed once this process is ready: the host has
/// an address less); both at once is an error naming both (the spec means another
/// address now).
#[cfg_attr(not(unix), allow(unreachable_code, unused_variables))]
fn adopt(
    plan: &BindPlan,
    passed: &mut Vec<crate::inherit::Checked>,
    from: &str,
    strict: bool,
    logged: &mut Vec<String>,
) -> Result<Option<BindPlan>, BindError> {
    let mut used = vec![false; passed.len()];
    let mut missing = Vec::new();
    let mut port = None;
    for planned in &plan.sockets {
        let same = |a: SocketAddr| {
            a.ip() == planned.addr.ip()
                && match (a, planned.addr) {
                    (SocketAddr::V6(a), SocketAddr::V6(p)) => a.scope_id() == p.scope_id(),
                    _ => true,
                }
        };
        let Some(j) = passed.iter().position(|c| c.addr().ip().is_some_and(same)) else {
            missing.push(*planned);
            continue;
        };
        let c = &passed[j];
        let got = c.addr().ip().expect("matched by its IP address");
        let want_port = match (plan.port(), port) {
            (0, None) => got.port(),
            (0, Some(p)) => p,
            (p, _) => p,
        };
        if (c.mode() != planned.mode || got.port() != want_port) && !strict {
            // A restart from the descriptor store may change a socket: the stored one goes
            // (below), and the planned one is bound.
            missing.push(*planned);
            continue;
        }
        if c.mode() != planned.mode || got.port() != want_port {
            let mut want = planned.addr;
            want.set_port(want_port);
            return Err(BindError {
                spec: Box::new(plan.spec.clone()),
                addr: ListenAddr::Ip(want),
                mode: planned.mode,
                detail: format!(
                    "{from} handed over fd {} as {} ({}), where this process plans {} ({}): a hand-over passes sockets as they are; listen as the predecessor did, or restart without a hand-over",
                    c.fd(),
                    display_addr(got),
                    c.mode(),
                    display_addr(want),
                    planned.mode
                ),
                source: io::Error::from(io::ErrorKind::AddrInUse),
            });
        }
        port = Some(got.port());
        used[j] = true;
    }
    // A passed socket this plan has no address for, where the plan also has an address
    // nothing was passed for: the spec now means another address (a name that resolves
    // elsewhere). Taking the new one beside the old would move clients silently: an
    // error that names both.
    let replaced = (missing.first(), used.iter().position(|u| !u));
    if let (Some(planned), Some(j), true) = (replaced.0, replaced.1, strict) {
        let c = &passed[j];
        let mut want = planned.addr;
        want.set_port(match plan.port() {
            // The port the socket would have had: the passed ones'.
            0 => c.addr().ip().map_or(0, |a| a.port()),
            p => p,
        });
        return Err(BindError {
            spec: Box::new(plan.spec.clone()),
            addr: ListenAddr::Ip(want),
            mode: planned.mode,
            detail: format!(
                "{from} handed over fd {} as {} ({}), where this process plans {} ({}) instead: the spec means another address now; restart without a hand-over to move it",
                c.fd(),
                c.addr(),
                c.mode(),
                display_addr(want),
                planned.mode
            ),
            source: io::Error::from(io::ErrorKind::AddrNotAvailable),
        });
    }
    let mut j = 0;
    let mut unused = Vec::new();
    passed.retain(|c| {
        let keep = used[j];
        j += 1;
        if !keep {
            let when = match strict {
                true => "closed once this process is ready",
                false => "closed now, and the manager told to forget it",
            };
            logged.push(format!(
                "listen spec {}: {from} handed over fd {} ({} ({})), which this process does not plan: left out, {when}",
                plan.spec.quoted(),
                c.fd(),
                c.addr(),
                c.mode()
            ));
            unused.push(c.fd());
        }
        keep
    });
    if !strict {
        // Closed before anything is bound in their place.
        unused.into_iter().for_each(forget_stored);
    }
    if missing.is_empty() {
        return Ok(None);
    }
    let spec = match (port, plan.spec.host()) {
        (Some(port), Some(host)) if plan.port() == 0 => ListenSpec::new(host.clone(), port),
        _ => plan.spec.clone(),
    };
    Ok(Some(BindPlan {
        spec,
        sockets: missing,
        skipped: Vec::new(),
    }))
}

/// The passed socket of a Unix-domain spec: the one at its address, or an error that names
/// both (then nothing is bound at the path: it is the predecessor's, and still served).
#[cfg_attr(not(unix), allow(unreachable_code, unused_variables))]
fn adopt_unix(
    spec: &ListenSpec,
    addr: &UnixAddr,
    passed: &mut Vec<crate::inherit::Checked>,
    from: &str,
    strict: bool,
    logged: &mut Vec<String>,
) -> Result<bool, BindError> {
    let want = ListenAddr::Unix(addr.clone());
    let found = passed.iter().position(|c| *c.addr() == want);
    if found.is_none() && !strict {
        // From the descriptor store, for an address this spec no longer means: it goes.
        let fds: Vec<i32> = passed.drain(..).map(|c| c.fd()).collect();
        fds.into_iter().for_each(forget_stored);
        return Ok(false);
    }
    let Some(j) = found else {
        let got: Vec<String> = passed
            .iter()
            .map(|c| format!("fd {} ({})", c.fd(), c.addr()))
            .collect();
        return Err(BindError {
            spec: Box::new(spec.clone()),
            addr: want.clone(),
            mode: SocketMode::Unix,
            detail: format!(
                "{from} handed over {} for this spec, where this process plans {want}: a hand-over passes sockets as they are",
                got.join(", ")
            ),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        });
    };
    let keep = passed.swap_remove(j);
    for c in passed.drain(..) {
        logged.push(format!(
            "listen spec {}: {from} handed over fd {} ({}) too, which this process does not plan: left out, and closed once this process is ready",
            spec.quoted(),
            c.fd(),
            c.addr()
        ));
    }
    passed.push(keep);
    Ok(true)
}

/// Closes stored socket `fd`, which this process does not serve, and has the service
/// manager forget it.
#[cfg(unix)]
fn forget_stored(fd: i32) {
    crate::handover::passed::forget(fd);
}

/// Nothing is stored here.
#[cfg(not(unix))]
fn forget_stored(_: i32) {}

/// The sockets a hand-over's predecessor passed for the `occurrence`-th spec equal to
/// `spec`, and its pid; `None` when this process is no successor.
#[cfg(unix)]
fn handover_group(spec: &ListenSpec, occurrence: usize) -> Option<(Vec<i32>, String, bool)> {
    crate::handover::passed::group(spec, occurrence)
}

/// No hand-over here.
#[cfg(not(unix))]
fn handover_group(_: &ListenSpec, _: usize) -> Option<(Vec<i32>, String, bool)> {
    None
}

/// Nothing is inherited here.
#[cfg(not(unix))]
fn inherited_socket(fd: crate::inherit::Owned, _: &ListenAddr) -> ListenSocket {
    match fd {}
}

/// Whether a socket on `addr` in `mode` would collide with `listener` (on Linux: the same
/// port, and one of them covers the other's address).
fn overlaps(listener: &Listener, addr: SocketAddr, mode: SocketMode) -> bool {
    let Some(a) = listener.local_addr.ip() else {
        return false;
    };
    let a_mode = listener.mode;
    if a.port() != addr.port() {
        return false;
    }
    let covers = |w: SocketAddr, w_mode: SocketMode, other: SocketAddr| {
        w.ip().is_unspecified()
            && (w_mode == SocketMode::DualStack || w.is_ipv4() == other.is_ipv4())
    };
    a.ip() == addr.ip() || covers(a, a_mode, addr) || covers(addr, mode, a)
}

/// Whether this platform can bind an address the host does not have yet.
const FREEBIND: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Whether `addr` is assigned to an interface of this host, usable or not (a tentative
/// address is listed too).
fn is_assigned(addr: SocketAddr) -> bool {
    crate::sys::interface_addresses().is_some_and(|all| all.contains(&addr.ip()))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_freebind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)
    } else {
        socket.set_freebind_v6(true)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_freebind(_socket: &Socket, _addr: SocketAddr) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Why an attempt at opening a plan failed.
enum Failure {
    /// EADDRINUSE on a port the attempt chose itself, with the sockets it had bound: try
    /// again on a fresh port.
    PortTaken(Box<BindError>, Vec<BoundSocket>),
    /// Anything else: the spec fails.
    Fatal(Box<BindError>),
}

#[cfg(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
))]
fn set_reuse_port(socket: &Socket, on: bool) -> io::Result<()> {
    socket.set_reuse_port(on)
}

#[cfg(not(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
)))]
fn set_reuse_port(_socket: &Socket, on: bool) -> io::Result<()> {
    if on {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not available on this platform",
        ));
    }
    Ok(())
}

/// EAFNOSUPPORT: the kernel lacks the address's family, so this host can never have it.
/// (EADDRNOTAVAIL says only that the host lacks the address *now*.)
fn is_family_missing(e: &io::Error) -> bool {
    #[cfg(unix)]
    const EAFNOSUPPORT: i32 = libc::EAFNOSUPPORT;
    #[cfg(windows)]
    const EAFNOSUPPORT: i32 = 10047; // WSAEAFNOSUPPORT
    #[cfg(not(any(unix, windows)))]
    const EAFNOSUPPORT: i32 = -1;
    e.raw_os_error() == Some(EAFNOSUPPORT)
}

/// Opens every socket `spec` needs, with the default [`ListenConfig`].
///
/// ```
/// let bound = dualstack::bind("localhost:0")?;
/// for l in bound.listeners() {
///     println!("listening on {} ({})", l.local_addr(), l.mode());
/// }
/// // Every socket of a port-0 spec shares one port.
/// let port = bound.listeners()[0].local_addr().port();
/// assert!(port.is_some_and(|p| p != 0));
/// assert!(bound.listeners().iter().all(|l| l.local_addr().port() == port));
/// # Ok::<(), dualstack::Error>(())
/// ```
///
/// # Errors
///
/// As for [`ListenConfig::bind`].
pub fn bind(spec: impl ToListenSpec) -> Result<Bound, Error> {
    ListenConfig::new().bind(spec)
}

/// What [`ListenConfig::bind`] opened, and what it left out.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Listener>,
    skipped: Vec<Skipped>,
}

impl Bound {
    /// The listening sockets, in the order their specs planned them.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Addresses that were planned but not bound, with the reason (also logged at warn).
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The listeners and the skipped addresses, by value.
    pub fn into_parts(self) -> (Vec<Listener>, Vec<Skipped>) {
        (self.listeners, self.skipped)
    }
}

/// One listening socket, non-blocking, with what it was bound for: TCP (bound by this
/// process, or inherited) or Unix-domain.
#[derive(Debug)]
pub struct Listener {
    socket: ListenSocket,
    local_addr: ListenAddr,
    mode: SocketMode,
    spec: ListenSpec,
    /// The index of its spec in the list [`ListenConfig::bind_all`] was given.
    pub(crate) origin: usize,
    /// What setting a server's options on it found.
    pub(crate) accepting: Accepting,
    /// For an inherited socket: how to give it back untaken if the bind fails later.
    give_back: Option<crate::inherit::GiveBack>,
}

impl Listener {
    /// The address the socket is bound to, as the kernel reports it, normalized; with port 0
    /// asked, the port chosen.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local_addr
    }

    /// The family and `IPV6_V6ONLY` setting, read back from the kernel with getsockopt
    /// ([`SocketMode::Unix`] for a Unix-domain socket).
    pub fn mode(&self) -> SocketMode {
        self.mode
    }

    /// The spec this socket was opened for.
    pub fn spec(&self) -> &ListenSpec {
        &self.spec
    }

    /// A host a client on this machine can use to reach this TCP socket, found without any
    /// network lookup (never reverse DNS): `localhost` for `127.0.0.1`, `::1` and the
    /// wildcards, the address itself otherwise (`127.0.0.2` is loopback, but `localhost`
    /// does not name it). `None` for a Unix-domain socket.
    pub fn client_host(&self) -> Option<Host> {
        let addr = self.local_addr.ip()?;
        Some(match addr.ip() {
            ip if ip.is_unspecified() || ip == Ipv4Addr::LOCALHOST || ip == Ipv6Addr::LOCALHOST => {
                Host::Name(HostName::new_unchecked("localhost".to_owned()))
            }
            // Keeps the zone of a link-local address.
            _ => ListenSpec::from(addr).host()?.clone(),
        })
    }

    /// An address a client on this machine can connect to: for a wildcard TCP socket the
    /// loopback address of its family, otherwise the socket's own address.
    pub fn connect_addr(&self) -> ListenAddr {
        connect_addr_for(&self.local_addr)
    }

    /// The mio TCP listener, to register with a `Poll` and accept from; `None` for a
    /// Unix-domain socket.
    pub fn as_tcp(&mut self) -> Option<&mut mio::net::TcpListener> {
        match &mut self.socket {
            ListenSocket::Tcp(l) => Some(l),
            #[cfg(unix)]
            ListenSocket::Unix(_) => None,
        }
    }

    /// The mio TCP listener, by value; the listener back if it is a Unix-domain one.
    ///
    /// # Errors
    ///
    /// `self`, unchanged, for a Unix-domain listener.
    pub fn into_tcp(self) -> Result<mio::net::TcpListener, Box<Listener>> {
        match self.socket {
            ListenSocket::Tcp(l) => {
                #[cfg(unix)]
                crate::inherit::released(std::os::fd::AsRawFd::as_raw_fd(&l));
                Ok(l)
            }
            #[cfg(unix)]
            socket => Err(Box::new(Listener { socket, ..self })),
        }
    }

    /// The mio Unix-domain listener, by value; the listener back if it is a TCP one. The
    /// socket file, if this listener made one, is then the caller's to remove.
    ///
    /// # Errors
    ///
    /// `self`, unchanged, for a TCP listener.
    #[cfg(unix)]
    pub fn into_unix(self) -> Result<mio::net::UnixListener, Box<Listener>> {
        match self.socket {
            ListenSocket::Unix(l) => {
                use std::os::fd::{AsFd, AsRawFd};
                crate::inherit::released(l.as_fd().as_raw_fd());
                Ok(l.into_mio())
            }
            socket => Err(Box::new(Listener { socket, ..self })),
        }
    }

    pub(crate) fn into_socket(self) -> ListenSocket {
        self.socket
    }

    /// The listening socket, to register with a poller.
    pub(crate) fn socket_mut(&mut self) -> &mut ListenSocket {
        &mut self.socket
    }

    /// The error for step `step` of serving this listener, which failed with `e`: named by
    /// its spec and descriptor for an inherited socket, by its spec and address otherwise.
    pub(crate) fn error(&self, step: &str, e: io::Error) -> Error {
        match self.give_back {
            #[cfg(unix)]
            Some(_) => {
                use std::os::fd::AsRawFd;
                crate::inherit::InheritError::io(&self.spec, self.as_raw_fd(), step, e).into()
            }
            _ => BindError::new(&self.spec, self.local_addr.clone(), self.mode, step, e).into(),
        }
    }

    /// Ends this listener as part of a failed bind: a socket of our own is closed (and its
    /// file removed); an inherited one is given back open and untaken, its flags as they
    /// were, so that whoever passed it still has it and a later bind may take it.
    pub(crate) fn undo(self) {
        match self.give_back {
            #[cfg(unix)]
            Some(give_back) => {
                let fd = match self.socket {
                    ListenSocket::Tcp(l) => std::os::fd::OwnedFd::from(l),
                    ListenSocket::Unix(l) => std::os::fd::OwnedFd::from(l.into_mio()),
                };
                crate::inherit::give_back(fd, give_back);
            }
            #[cfg(not(unix))]
            Some(give_back) => match give_back {},
            None => drop(self.socket),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.socket.as_fd().as_raw_fd()
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsRawSocket for Listener {
    fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
        use std::os::windows::io::AsSocket;
        self.socket.as_socket().as_raw_socket()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for Listener {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        self.socket.as_socket()
    }
}

impl fmt::Display for Listener {
    /// `ADDR (MODE)`, as in `[::]:7000 (dual-stack)` or `unix:/run/app.sock (unix)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.local_addr, self.mode)
    }
}

/// Where a client on this machine connects to reach a socket bound to `local`: the loopback
/// address of its family for a wildcard, `local` itself otherwise.
pub(crate) fn connect_addr_for(local: &ListenAddr) -> ListenAddr {
    let ListenAddr::Ip(ip) = local else {
        return local.clone();
    };
    let port = ip.port();
    ListenAddr::Ip(match ip {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, port).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, port).into(),
        other => *other,
    })
}
