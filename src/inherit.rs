//! Sockets this process was handed: systemd socket activation (`sd_listen_fds(3)`: the
//! `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` variables, descriptors from 3 on) and
//! `fd:N`, and the readiness notification a service manager waits for ([`notify`]).
//!
//! Heads up: inherited descriptors are duplicates the service manager keeps too. They are
//! never `shutdown()` (that would shut the manager's copy), each is checked before use (a
//! listening stream socket, or a clear error naming the descriptor), made non-blocking and
//! close-on-exec, and taken at most once per process. The environment is read, never
//! changed: a library must not edit the process's environment behind the application.

#[cfg(unix)]
use std::collections::BTreeMap;
use std::fmt;
use std::io;
#[cfg(unix)]
use std::sync::Mutex;

#[cfg(unix)]
use crate::addr::{normalize, UnixAddr};
use crate::addr::{ListenSpec, SpecKind};
use crate::plan::SocketMode;
use crate::socket::ListenAddr;

/// The first descriptor the service manager passes (`SD_LISTEN_FDS_START`).
const FIRST: i32 = 3;

/// The most descriptors a `LISTEN_FDS` may pass: more than any service has, few enough that
/// a hostile value cannot make the list of them large.
const MAX_PASSED: i32 = 4096;

/// Why an inherited socket could not be used. The message names the spec and the
/// descriptor.
#[derive(Debug)]
pub struct InheritError {
    spec: Box<ListenSpec>,
    fd: Option<i32>,
    kind: InheritErrorKind,
    detail: String,
    source: Option<io::Error>,
}

/// What kind of problem an [`InheritError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InheritErrorKind {
    /// `LISTEN_FDS` is not set: the service manager passed no sockets.
    NotActivated,
    /// `LISTEN_PID` names another process: the variables were meant for it.
    OtherProcess,
    /// `LISTEN_PID`, `LISTEN_FDS` or `LISTEN_FDNAMES` cannot be read.
    Malformed,
    /// No passed socket has the name asked for.
    NoSuchName,
    /// The descriptor is not open.
    NotOpen,
    /// The descriptor is not a socket.
    NotASocket,
    /// The socket is not a stream socket (a UDP socket, say).
    NotStream,
    /// The socket is not listening (a connection socket, as systemd's `Accept=yes` passes).
    /// Checked on Linux, Android and FreeBSD, where the kernel tells (`SO_ACCEPTCONN`).
    NotListening,
    /// The socket's family is neither IPv4, IPv6 nor Unix, or it is a Unix-domain socket
    /// bound to no address.
    Family,
    /// A system call on the descriptor failed (the error's source says which and why).
    Io,
    /// The descriptor was taken already: named twice in one bind, or by an earlier bind.
    TakenTwice,
    /// Inherited sockets are not supported on this platform.
    Unsupported,
}

impl InheritError {
    fn new(
        spec: &ListenSpec,
        fd: Option<i32>,
        kind: InheritErrorKind,
        detail: String,
    ) -> InheritError {
        InheritError {
            spec: Box::new(spec.clone()),
            fd,
            kind,
            detail,
            source: None,
        }
    }

    /// The error of step `step` on inherited descriptor `fd`, named by `spec`: the socket
    /// passed every check, but serving it failed.
    #[cfg(unix)]
    pub(crate) fn io(spec: &ListenSpec, fd: i32, step: &str, source: io::Error) -> InheritError {
        InheritError::new(
            spec,
            Some(fd),
            InheritErrorKind::Io,
            format!("cannot {step}"),
        )
        .with_source(source)
    }

    #[cfg_attr(not(unix), allow(dead_code))]
    fn with_source(mut self, source: io::Error) -> InheritError {
        self.source = Some(source);
        self
    }

    /// The spec that named the socket.
    pub fn spec(&self) -> &ListenSpec {
        &self.spec
    }

    /// The descriptor, where one is known.
    pub fn fd(&self) -> Option<i32> {
        self.fd
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> InheritErrorKind {
        self.kind
    }
}

impl fmt::Display for InheritError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: ", self.spec.quoted())?;
        if let Some(fd) = self.fd {
            write!(f, "fd {fd}: ")?;
        }
        f.write_str(&self.detail)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InheritError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// The error for `spec`, an `sd-listen` spec of a process a hand-over started, for which
/// the predecessor (process `from`) passed no socket.
pub(crate) fn not_handed(spec: &ListenSpec, from: &str) -> InheritError {
    InheritError::new(
        spec,
        None,
        InheritErrorKind::NoSuchName,
        format!("this process was started by a hand-over from {from}, which passed no socket for this spec (the predecessor listened on other specs)"),
    )
}

/// The error for descriptor `fd`, named by `spec` and, before it, by `first`.
pub(crate) fn twice(spec: &ListenSpec, fd: i32, first: &ListenSpec) -> InheritError {
    InheritError::new(
        spec,
        Some(fd),
        InheritErrorKind::TakenTwice,
        format!(
            "{} names this descriptor too: one socket cannot be two listeners",
            first.quoted()
        ),
    )
}

/// An inherited descriptor, owned: `OwnedFd` where there are any.
#[cfg(unix)]
pub(crate) type Owned = std::os::fd::OwnedFd;
/// None here.
#[cfg(not(unix))]
pub(crate) enum Owned {}

/// One inherited listening socket, checked and ready, and the listener's now.
pub(crate) struct Inherited {
    pub(crate) fd: Owned,
    pub(crate) addr: ListenAddr,
    pub(crate) mode: SocketMode,
    pub(crate) accepting: crate::socket::Accepting,
    /// How to give it back if the bind fails after all.
    pub(crate) give_back: GiveBack,
}

/// The descriptors `spec` names: for `fd:N`, N; for `sd-listen[:NAME]`, those the service
/// manager passed (with that name).
pub(crate) fn descriptors(spec: &ListenSpec) -> Result<Vec<i32>, InheritError> {
    #[cfg(not(unix))]
    if matches!(spec.kind(), SpecKind::Fd(_) | SpecKind::Activated { .. }) {
        // Not "LISTEN_FDS is not set": there is nothing to set here.
        return Err(unsupported(spec, None));
    }
    match spec.kind() {
        SpecKind::Fd(fd) => Ok(vec![*fd]),
        SpecKind::Activated { name } => {
            let passed = activation(spec)?;
            // (`sd-listen` alone: every socket but those this library stored under its
            // own names, `ds.…`, which go back to the specs that stored them.)
            let chosen: Vec<i32> = passed
                .iter()
                .filter(|(_, n)| match name {
                    Some(want) => n == want,
                    None => !is_stored_name(n),
                })
                .map(|(fd, _)| *fd)
                .collect();
            // (`activation` passes at least one socket, so only a name can choose none.)
            if let (true, Some(want)) = (chosen.is_empty(), name) {
                let names: Vec<&str> = passed.iter().map(|(_, n)| n.as_str()).collect();
                return Err(InheritError::new(
                    spec,
                    None,
                    InheritErrorKind::NoSuchName,
                    format!(
                        "the service manager passed no socket named {want:?} (LISTEN_FDNAMES: {})",
                        names.join(":")
                    ),
                ));
            }
            Ok(chosen)
        }
        _ => Ok(Vec::new()),
    }
}

/// Whether `name` is one this library gives the sockets it passes on or stores.
#[cfg(unix)]
fn is_stored_name(name: &str) -> bool {
    crate::handover::passed::parse_name(name).is_some()
}

/// See the Unix version.
#[cfg(not(unix))]
fn is_stored_name(_: &str) -> bool {
    false
}

/// The sockets systemd passed, with their names, from the environment.
///
/// `LISTEN_PID` must be this process when it is set. When it is not set, the variables are
/// taken as they are: wrappers that exec the server after setting them (systemfd
/// `--no-pid`, cargo-watch) cannot know its pid; each descriptor is checked before use
/// anyway. (`sd_listen_fds` itself returns no sockets then: the one place this library
/// reads the variables more kindly.)
fn activation(spec: &ListenSpec) -> Result<Vec<(i32, String)>, InheritError> {
    let var = |name: &str| std::env::var(name).ok();
    read_activation(
        spec,
        &Environment {
            pid: var("LISTEN_PID"),
            pidfd_id: var("LISTEN_PIDFDID"),
            fds: var("LISTEN_FDS"),
            names: var("LISTEN_FDNAMES"),
        },
        std::process::id(),
        crate::sys::own_pidfd_id(),
    )
}

/// The sockets passed in `LISTEN_FDS`, with their `LISTEN_FDNAMES` names (for a
/// hand-over's successor, which names them its own way).
#[cfg(unix)]
pub(crate) fn passed(spec: &ListenSpec) -> Result<Vec<(i32, String)>, InheritError> {
    activation(spec)
}

/// Whether the socket `id` at `fd` is reserved, taken or opened by a bind of this process.
#[cfg(unix)]
pub(crate) fn in_use(fd: i32, id: Option<(u64, u64)>) -> bool {
    registry()
        .get(&fd)
        .is_some_and(|r| Some(r.id) == id && r.state != Use::Free)
}

/// The variables of `sd_listen_fds(3)`, as read.
struct Environment {
    pid: Option<String>,
    /// `LISTEN_PIDFDID` (systemd 257): the inode number of a pidfd of the process the
    /// sockets are for, which tells it apart from an earlier process with the same pid.
    pidfd_id: Option<String>,
    fds: Option<String>,
    names: Option<String>,
}

/// The descriptors and names `env` passes to process `me`, whose pidfd inode number is
/// `my_pidfd_id` where the kernel gives one (see [`activation`]). Read as systemd's
/// `sd_listen_fds_with_names` reads them (src/libsystemd/sd-daemon/sd-daemon.c): numbers
/// as its `safe_atoi` takes them ([`systemd_int`]), a count of at least 1, names split as
/// its `strv_split_full` splits them ([`systemd_names`]) and exactly one per descriptor.
fn read_activation(
    spec: &ListenSpec,
    env: &Environment,
    me: u32,
    my_pidfd_id: Option<u64>,
) -> Result<Vec<(i32, String)>, InheritError> {
    use InheritErrorKind::*;
    let malformed = |detail: String| InheritError::new(spec, None, Malformed, detail);
    let Some(count) = &env.fds else {
        return Err(InheritError::new(
            spec,
            None,
            NotActivated,
            "LISTEN_FDS is not set: no service manager passed this process any sockets (run it from a systemd socket unit, or systemd-socket-activate)".to_owned(),
        ));
    };
    if let Some(text) = &env.pid {
        // parse_pid: an unsigned number, above 0, that fits a pid.
        let pid = systemd_int(text)
            .filter(|p| (1..=i64::from(i32::MAX)).contains(p))
            .ok_or_else(|| malformed(format!("LISTEN_PID {text:?} is not a process id")))?;
        if pid != i64::from(me) {
            return Err(InheritError::new(
                spec,
                None,
                OtherProcess,
                format!("LISTEN_PID is {pid}, and this process is {me}: the sockets were passed to another process"),
            ));
        }
        if let Some(text) = &env.pidfd_id {
            let id = systemd_u64(text)
                .ok_or_else(|| malformed(format!("LISTEN_PIDFDID {text:?} is not a number")))?;
            if my_pidfd_id.is_some_and(|mine| mine != id) {
                return Err(InheritError::new(
                    spec,
                    None,
                    OtherProcess,
                    format!("LISTEN_PIDFDID is {id}, and this process's pidfd is {}: the sockets were passed to an earlier process with this pid", my_pidfd_id.unwrap_or_default()),
                ));
            }
        }
    }
    let count = systemd_int(count)
        .filter(|n| (1..=i64::from(MAX_PASSED)).contains(n))
        .ok_or_else(|| {
            malformed(format!(
                "LISTEN_FDS {count:?} is not a count of descriptors (1 to {MAX_PASSED}; sd_listen_fds refuses 0 too)"
            ))
        })? as i32;
    let names: Vec<String> = match env.names.as_deref() {
        Some(names) => systemd_names(names).ok_or_else(|| {
            malformed(format!(
                "LISTEN_FDNAMES {names:?} ends with a backslash that escapes nothing"
            ))
        })?,
        None => vec!["unknown".to_owned(); count as usize],
    };
    if names.len() != count as usize {
        return Err(malformed(format!(
            "LISTEN_FDNAMES has {} names for {count} descriptors",
            names.len()
        )));
    }
    Ok((FIRST..FIRST + count).zip(names).collect())
}

/// The names of `LISTEN_FDNAMES`, split as systemd's `strv_split_full(…, ":",
/// EXTRACT_DONT_COALESCE_SEPARATORS)` splits them (src/basic/extract-word.c): at every `:`,
/// empty names kept (`""` is one empty name), a backslash taking the next character as it
/// is (`a\:b` is the one name `a:b`); `None` when a backslash ends it.
fn systemd_names(text: &str) -> Option<Vec<String>> {
    let mut names = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => chars.next()?,
            ':' => {
                names.push(String::new());
                continue;
            }
            c => c,
        };
        names.last_mut().expect("never empty").push(c);
    }
    Some(names)
}

/// A number as systemd's `safe_atoi` / `safe_atollu` read one (src/basic/parse-util.c):
/// leading white space, then an optional `0b` or `0o` prefix, then what C's `strtol` takes
/// with base 0 (a sign; `0x` for hexadecimal, a leading `0` for octal, else decimal), and
/// nothing after it. `None` for anything else, or beyond 64 bits. So `+3`, ` 3`, `0x3`
/// and `03` are 3, as for every program that uses `sd_listen_fds`; `3 ` and `3a` are not
/// numbers. (Range checks are the caller's.)
fn systemd_int(text: &str) -> Option<i64> {
    let (negative, magnitude) = systemd_number(text)?;
    let value = i64::try_from(magnitude).ok()?;
    Some(if negative { -value } else { value })
}

/// An unsigned number as systemd's `safe_atou64` reads one: as [`systemd_int`], up to
/// `u64::MAX`, and a minus sign only before 0.
fn systemd_u64(text: &str) -> Option<u64> {
    match systemd_number(text)? {
        (true, 0) | (false, _) => u64::try_from(systemd_number(text)?.1).ok(),
        (true, _) => None,
    }
}

/// The sign and magnitude of a number as systemd reads one (see [`systemd_int`]).
fn systemd_number(text: &str) -> Option<(bool, u128)> {
    let text = text.trim_start_matches([' ', '\t', '\n', '\r']);
    let (base, text) = match text.get(..2) {
        Some("0b" | "0B") => (2, &text[2..]),
        Some("0o" | "0O") => (8, &text[2..]),
        _ => (0, text),
    };
    // strtol: white space (isspace), a sign, a base prefix, digits.
    let text = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let hex_digit_follows = text.as_bytes().get(2).is_some_and(u8::is_ascii_hexdigit);
    let (radix, digits) = match base {
        0 if (text.starts_with("0x") || text.starts_with("0X")) && hex_digit_follows => {
            (16, &text[2..])
        }
        0 if text.starts_with('0') => (8, text),
        0 => (10, text),
        b => (b, text),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    Some((negative, magnitude))
}

/// A descriptor that passed every check and is reserved for the bind that checked it (see
/// [`check`]); not taken yet. Dropped without being taken, it releases the reservation.
#[cfg(unix)]
pub(crate) struct Checked {
    fd: i32,
    /// The socket's identity (device and inode): another socket at the same number later
    /// is another socket.
    id: (u64, u64),
    /// Where it listens, as the kernel says, and what it serves.
    addr: ListenAddr,
    mode: SocketMode,
    /// What the registry said of this number before the reservation: put back if the
    /// socket is not taken after all.
    before: Option<Record>,
    /// The descriptor's flags before [`prepare`] changed them, to put back likewise.
    flags: Option<Flags>,
    /// What setting the accept options found.
    accepting: crate::socket::Accepting,
    /// Taken: nothing to release when dropped.
    taken: bool,
}

/// Nothing passes [`check`] here.
#[cfg(not(unix))]
pub(crate) enum Checked {}

#[cfg(unix)]
impl Checked {
    /// Where it listens, as the kernel says.
    pub(crate) fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// Its family and `IPV6_V6ONLY`, read back.
    pub(crate) fn mode(&self) -> SocketMode {
        self.mode
    }

    /// Its number.
    pub(crate) fn fd(&self) -> i32 {
        self.fd
    }
}

#[cfg(not(unix))]
impl Checked {
    pub(crate) fn addr(&self) -> &ListenAddr {
        match *self {}
    }
    pub(crate) fn mode(&self) -> SocketMode {
        match *self {}
    }
    pub(crate) fn fd(&self) -> i32 {
        match *self {}
    }
}

/// A descriptor's own flags, and the options a server sets, as they were when the library
/// found it.
#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
struct Flags {
    nonblocking: bool,
    cloexec: bool,
    /// `SO_OOBINLINE` and `TCP_NODELAY`, for a TCP socket a server set them on.
    options: Option<(bool, bool)>,
}

/// What the library knows of a descriptor number: the identity of the socket it last saw
/// there, whether the service manager once passed a socket at this number (so `sd-listen`
/// never takes what is open there later), and what the library is doing with it.
#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
struct Record {
    id: (u64, u64),
    activated: bool,
    state: Use,
}

/// What the library does with the socket of a [`Record`].
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A bind in progress checked it and will take it: nobody else may.
    Reserved,
    /// A listener owns it: inherited, and taken.
    Taken,
    /// The library opened it itself for a listener, which owns it.
    Opened,
    /// Nothing: given to the application, or given back by a failed bind.
    Free,
}

/// The descriptors this process has reserved, taken or opened, by number, each with the
/// identity of its socket. Every decision about a socket is made under this lock, by
/// number and by identity (a `dup` is the same socket), with the identity read again under
/// it, and the reservation is made in the same hold of it as the look-up that allows it:
/// two binds cannot both take one socket.
#[cfg(unix)]
static REGISTRY: Mutex<BTreeMap<i32, Record>> = Mutex::new(BTreeMap::new());

#[cfg(unix)]
fn registry() -> std::sync::MutexGuard<'static, BTreeMap<i32, Record>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The identity (device and inode) of an open descriptor.
#[cfg(unix)]
fn identity(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    crate::sys::identity(fd)
}

/// Records a socket the library has just made (before it is bound or listens), for a
/// listener that will own it: `fd:N` naming it is refused from now on, since the library
/// already owns it (two owners would close it twice). Recorded as soon as it exists, so no
/// other thread's `fd:N` can take it between its `listen` and the end of that bind.
#[cfg(unix)]
pub(crate) fn opened(socket: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    // A socket whose identity cannot be read is not recorded (nothing names it then).
    let Ok(id) = identity(socket) else { return };
    let mut registry = registry();
    let fd = socket.as_raw_fd();
    // A passed socket once at this number is still never handed out again.
    let activated = registry.get(&fd).is_some_and(|r| r.activated);
    registry.insert(
        fd,
        Record {
            id,
            activated,
            state: Use::Opened,
        },
    );
}

/// A socket the library opened or took was handed to the application
/// (`Listener::into_tcp`, `into_unix`): the application owns it now, and may hand it to
/// `fd:N`.
#[cfg(unix)]
pub(crate) fn released(fd: i32) {
    if let Some(r) = registry().get_mut(&fd) {
        r.state = Use::Free;
    }
}

/// Checks that descriptor `fd`, named by `spec`, is an open, listening stream socket of a
/// family this library serves and not taken, reserved or owned already, and reserves it for
/// this bind (in the same hold of the registry's lock as the look-up). Reads only, on a
/// borrowed descriptor: one that fails is left exactly as it was, open, for whatever else of
/// the process may own it; and a list of specs is checked whole before any descriptor is
/// taken.
#[cfg(unix)]
pub(crate) fn check(spec: &ListenSpec, fd: i32) -> Result<Checked, InheritError> {
    use InheritErrorKind::*;
    let error = |kind, detail: &str| InheritError::new(spec, Some(fd), kind, detail.to_owned());
    let look =
        |borrowed: std::os::fd::BorrowedFd<'_>| -> Result<(ListenAddr, SocketMode), InheritError> {
            let socket = socket2::SockRef::from(&borrowed);
            let ty = socket.r#type().map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOTSOCK) {
                    error(NotASocket, "not a socket")
                } else {
                    error(Io, "cannot read the socket's type").with_source(e)
                }
            })?;
            if ty != socket2::Type::STREAM {
                return Err(error(
                    NotStream,
                    "not a stream socket (a datagram socket cannot be listened on)",
                ));
            }
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
            if !socket.is_listener().unwrap_or(true) {
                return Err(error(
                NotListening,
                "the socket is not listening: a connection socket (systemd's Accept=yes passes those) or one never given listen()",
            ));
            }
            let local = socket
                .local_addr()
                .map_err(|e| error(Io, "cannot read its address").with_source(e))?;
            let (addr, mode) = if let Some(ip) = local.as_socket() {
                let mode = crate::socket::read_mode(&socket, ip)
                    .map_err(|e| error(Io, "cannot read IPV6_V6ONLY").with_source(e))?;
                (ListenAddr::Ip(normalize(ip)), mode)
            } else if let Some(addr) = unix_addr(&local) {
                (addr, SocketMode::Unix)
            } else if local.is_unix() {
                return Err(error(
                Family,
                "the Unix-domain socket is bound to no address (unnamed): no client can reach it",
            ));
            } else {
                return Err(error(
                    Family,
                    "the socket is neither IPv4, IPv6 nor Unix-domain",
                ));
            };
            Ok((addr, mode))
        };
    // The socket at `fd` may be closed and another made at its number by another thread
    // while it is looked at: its identity is read before the checks and after them, and
    // once more under the registry's lock; the checks count only if all three agree (a
    // few tries, then the number is said to be changing).
    for _ in 0..3 {
        let looked = crate::sys::with_inherited(fd, |borrowed| {
            let before = identity(borrowed)
                .map_err(|e| error(Io, "cannot read what it is").with_source(e))?;
            let (addr, mode) = look(borrowed)?;
            let after = identity(borrowed)
                .map_err(|e| error(Io, "cannot read what it is").with_source(e))?;
            Ok::<_, InheritError>((before == after).then_some((before, addr, mode)))
        })
        .map_err(|e| error(NotOpen, "not an open descriptor").with_source(e))??;
        let Some((id, addr, mode)) = looked else {
            continue;
        };
        let mut registry = registry();
        let now = crate::sys::with_inherited(fd, identity)
            .ok()
            .and_then(Result::ok);
        if now != Some(id) {
            continue;
        }
        return reserve(&mut registry, spec, fd, id, addr, mode);
    }
    Err(error(
        Io,
        "the descriptor changed while it was checked: another thread closes and opens sockets at this number",
    ))
}

/// Reserves socket `id` at `fd` for the bind of `spec`, under the registry's lock, unless
/// the library has it already, at this number or any other (a `dup` of a socket is the
/// same socket).
#[cfg(unix)]
fn reserve(
    registry: &mut BTreeMap<i32, Record>,
    spec: &ListenSpec,
    fd: i32,
    id: (u64, u64),
    addr: ListenAddr,
    mode: SocketMode,
) -> Result<Checked, InheritError> {
    let error =
        |detail: String| InheritError::new(spec, Some(fd), InheritErrorKind::TakenTwice, detail);
    let activated = matches!(spec.kind(), SpecKind::Activated { .. });
    let before = registry.get(&fd).copied();
    if let Some((&other, r)) = registry
        .iter()
        .find(|(_, r)| r.id == id && r.state != Use::Free)
    {
        let at = if other == fd {
            String::new()
        } else {
            format!(" (as descriptor {other}: the same socket under another number)")
        };
        return Err(error(match r.state {
            Use::Opened => format!("this is a socket the library opened for another bind of this process, and it is still open: it has an owner{at}"),
            Use::Reserved => format!("another bind of this process is taking this socket at this moment{at}: one socket cannot be two listeners"),
            _ => format!("this socket was taken already, by an earlier bind of this process, and is still open there{at}"),
        }));
    }
    if before.is_some_and(|r| r.activated) && activated {
        return Err(error(
            "the socket the service manager passed here was taken by an earlier bind and closed since; what is open at this number now is another descriptor".to_owned(),
        ));
    }
    registry.insert(
        fd,
        Record {
            id,
            activated: before.is_some_and(|r| r.activated),
            state: Use::Reserved,
        },
    );
    Ok(Checked {
        fd,
        id,
        addr,
        mode,
        before,
        flags: None,
        accepting: Default::default(),
        taken: false,
    })
}

#[cfg(unix)]
impl Drop for Checked {
    /// Not taken after all: the descriptor's flags and options, and its record, are as
    /// they were (each only if the socket at the number is still the one reserved).
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut registry = registry();
        let ours = registry
            .get(&self.fd)
            .is_some_and(|r| r.id == self.id && r.state == Use::Reserved);
        if !ours {
            return;
        }
        if let Some(flags) = self.flags {
            let _ = restore_flags(self.fd, self.id, flags);
        }
        match self.before {
            Some(before) => registry.insert(self.fd, before),
            None => registry.remove(&self.fd),
        };
    }
}

/// Puts the flags and options of socket `id` at `fd` back as they were, if it is still
/// there.
#[cfg(unix)]
fn restore_flags(fd: i32, id: (u64, u64), flags: Flags) -> io::Result<()> {
    crate::sys::with_inherited(fd, |borrowed| {
        if identity(borrowed)? != id {
            return Ok(());
        }
        let socket = socket2::SockRef::from(&borrowed);
        socket.set_nonblocking(flags.nonblocking)?;
        socket.set_cloexec(flags.cloexec)?;
        if let Some((oob_inline, nodelay)) = flags.options {
            let _ = socket.set_out_of_band_inline(oob_inline);
            let _ = socket.set_tcp_nodelay(nodelay);
        }
        Ok(())
    })?
}

/// The address of a Unix-domain socket, as the kernel reports it; `None` when unnamed. A
/// name that only means something inside the process that bound the socket (a path through
/// `/proc/self/fd/N/` or `/dev/fd/N/`, as the library itself bound sockets before 0.2 and as
/// others still do) is not where clients connect: it is reported as unknown, never as the
/// socket's address.
#[cfg(unix)]
fn unix_addr(local: &socket2::SockAddr) -> Option<ListenAddr> {
    if let Some(path) = local.as_pathname() {
        if is_staging_name(path) {
            return Some(ListenAddr::UnixUnknown);
        }
        return Some(ListenAddr::Unix(UnixAddr::Path(path.to_owned())));
    }
    local
        .as_abstract_namespace()
        .map(|name| ListenAddr::Unix(UnixAddr::Abstract(name.to_owned())))
}

/// Whether `path`, the name the kernel reports for a Unix-domain socket, only means
/// something inside the process that bound it: a path through a descriptor
/// (`/proc/self/fd/N/…`, `/proc/PID/fd/N/…`, `/dev/fd/N/…`), or the private directory
/// `….dsPID.RANDOM/s` this library bound in before it bound at the real path.
#[cfg(unix)]
fn is_staging_name(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let through_fd = |rest: &[u8]| {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        digits > 0 && rest.get(digits) == Some(&b'/')
    };
    if let Some(rest) = bytes
        .strip_prefix(b"/proc/self/fd/")
        .or_else(|| bytes.strip_prefix(b"/dev/fd/"))
    {
        return through_fd(rest);
    }
    if let Some(rest) = bytes.strip_prefix(b"/proc/") {
        let pid = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if pid > 0 {
            if let Some(rest) = rest[pid..].strip_prefix(b"/fd/") {
                return through_fd(rest);
            }
        }
    }
    // `.dsPID.HEX16/s`
    let staged = |dir: &[u8]| {
        let Some(rest) = dir.strip_prefix(b".ds") else {
            return false;
        };
        let pid = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        pid > 0
            && rest.get(pid) == Some(&b'.')
            && rest[pid + 1..].len() == 16
            && rest[pid + 1..].iter().all(u8::is_ascii_hexdigit)
    };
    path.file_name().is_some_and(|n| n == "s")
        && path
            .parent()
            .and_then(std::path::Path::file_name)
            .is_some_and(|d| staged(d.as_bytes()))
}

/// Makes a checked descriptor non-blocking (systemd-socket-activate passes blocking
/// sockets) and close-on-exec, and, for a server, sets the options its connections inherit
/// (per option: see [`set_accept_options`](crate::socket::set_accept_options)), still
/// borrowed: the last step that can fail before it is taken. A failure leaves the
/// descriptor open, its flags as they were (when `checked` is dropped), and names the spec
/// and the descriptor.
#[cfg(unix)]
pub(crate) fn prepare(
    spec: &ListenSpec,
    checked: &mut Checked,
    options: Option<crate::socket::AcceptOptions>,
) -> Result<(), InheritError> {
    use InheritErrorKind::*;
    let fd = checked.fd;
    let error = |kind, detail: &str| InheritError::new(spec, Some(fd), kind, detail.to_owned());
    let is_tcp = checked.addr.ip().is_some();
    let mut flags = None;
    let mut options_before = None;
    let result = crate::sys::with_inherited(fd, |borrowed| {
        let socket = socket2::SockRef::from(&borrowed);
        let before = crate::sys::flags(borrowed)
            .map_err(|e| error(Io, "cannot read its flags").with_source(e))?;
        flags = Some(before);
        socket
            .set_nonblocking(true)
            .map_err(|e| error(Io, "cannot make it non-blocking").with_source(e))?;
        socket
            .set_cloexec(true)
            .map_err(|e| error(Io, "cannot make it close-on-exec").with_source(e))?;
        match options {
            Some(options) if is_tcp => {
                options_before = Some((
                    socket.out_of_band_inline().unwrap_or(false),
                    socket.tcp_nodelay().unwrap_or(false),
                ));
                let what = format!("listen spec {}: fd {fd}", spec.quoted());
                crate::socket::set_accept_options(socket, options, &what).map_err(|(step, e)| {
                    error(Io, &format!("cannot {step}, which the server needs")).with_source(e)
                })
            }
            _ => Ok(Default::default()),
        }
    })
    .map_err(|e| error(NotOpen, "not an open descriptor").with_source(e))?;
    checked.flags = flags.map(|(nonblocking, cloexec)| Flags {
        nonblocking,
        cloexec,
        options: options_before,
    });
    checked.accepting = result?;
    Ok(())
}

/// Every socket the service manager passed is made close-on-exec, taken or not, as
/// `sd_listen_fds(3)` does: a child this process starts must not inherit them. Only the
/// numbers that hold sockets: `LISTEN_FDS` may claim more than the process was given, and
/// those numbers then hold the application's own files. Once per process, as
/// `sd_listen_fds` is called once: later, the numbers may hold the application's own
/// sockets.
#[cfg(unix)]
pub(crate) fn close_passed_on_exec() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let spec = ListenSpec::checked(SpecKind::Activated { name: None });
        if let Ok(passed) = activation(&spec) {
            for (fd, _) in passed {
                crate::sys::set_cloexec_if_socket(fd);
            }
        }
    });
}

/// How to give an inherited socket back if the bind that took it fails later (the reactor
/// could not register it, say): its number, identity, flags and record as they were.
#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct GiveBack {
    fd: i32,
    id: (u64, u64),
    before: Option<Record>,
    flags: Option<Flags>,
}

#[cfg(unix)]
impl GiveBack {
    /// The descriptor's number.
    pub(crate) fn fd(&self) -> i32 {
        self.fd
    }
}

/// Not on this platform.
#[cfg(not(unix))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum GiveBack {}

#[cfg(not(unix))]
impl GiveBack {
    pub(crate) fn fd(&self) -> i32 {
        match *self {}
    }
}

/// Takes a checked and prepared descriptor: from here it is the listener's, recorded as
/// taken (by number and identity).
#[cfg(unix)]
pub(crate) fn own(spec: &ListenSpec, mut checked: Checked) -> Result<Inherited, InheritError> {
    let fd = checked.fd;
    let mut registry = registry();
    // Open all along (checked, then prepared, in this call): only another thread closing it
    // behind the library's back (and maybe opening another socket at its number) makes
    // this fail; then nothing is taken.
    let gone = |detail: &str, source: io::Error| {
        InheritError::new(spec, Some(fd), InheritErrorKind::NotOpen, detail.to_owned())
            .with_source(source)
    };
    let now = crate::sys::with_inherited(fd, identity)
        .and_then(|id| id)
        .map_err(|e| gone("closed while it was being taken", e))?;
    let still_reserved = registry
        .get(&fd)
        .is_some_and(|r| r.id == checked.id && r.state == Use::Reserved);
    if now != checked.id || !still_reserved {
        return Err(gone(
            "closed while it was being taken, and another descriptor opened at its number",
            io::Error::from(io::ErrorKind::NotFound),
        ));
    }
    let owned =
        crate::sys::take_inherited(fd).map_err(|e| gone("closed while it was being taken", e))?;
    checked.taken = true;
    registry.insert(
        fd,
        Record {
            id: checked.id,
            activated: matches!(spec.kind(), SpecKind::Activated { .. })
                || checked.before.is_some_and(|r| r.activated),
            state: Use::Taken,
        },
    );
    Ok(Inherited {
        fd: owned,
        addr: checked.addr.clone(),
        mode: checked.mode,
        accepting: checked.accepting,
        give_back: GiveBack {
            fd,
            id: checked.id,
            before: checked.before,
            flags: checked.flags,
        },
    })
}

/// Gives an inherited socket back, as the bind found it: open (never closed here: whoever
/// passed it still owns it), its flags and its record as before the bind took it, so a
/// later bind may take it again.
#[cfg(unix)]
pub(crate) fn give_back(fd: std::os::fd::OwnedFd, give_back: GiveBack) {
    use std::os::fd::IntoRawFd;
    let fd = fd.into_raw_fd();
    debug_assert_eq!(fd, give_back.fd);
    if let Some(flags) = give_back.flags {
        let _ = restore_flags(fd, give_back.id, flags);
    }
    let mut registry = registry();
    if registry.get(&fd).is_some_and(|r| r.id == give_back.id) {
        match give_back.before {
            Some(before) => registry.insert(fd, before),
            None => registry.remove(&fd),
        };
    }
}

/// The error for an inherited socket where there are none.
#[cfg(not(unix))]
fn unsupported(spec: &ListenSpec, fd: Option<i32>) -> InheritError {
    InheritError::new(
        spec,
        fd,
        InheritErrorKind::Unsupported,
        format!(
            "inherited sockets are not supported on {}",
            std::env::consts::OS
        ),
    )
}

/// See the Unix version: no inherited sockets here.
#[cfg(not(unix))]
pub(crate) fn check(spec: &ListenSpec, fd: i32) -> Result<Checked, InheritError> {
    Err(unsupported(spec, Some(fd)))
}

/// See the Unix version: nothing passes [`check`] here.
#[cfg(not(unix))]
pub(crate) fn prepare(
    _: &ListenSpec,
    checked: &mut Checked,
    _: Option<crate::socket::AcceptOptions>,
) -> Result<(), InheritError> {
    match *checked {}
}

/// See the Unix version.
#[cfg(not(unix))]
pub(crate) fn close_passed_on_exec() {}

/// See the Unix version: nothing passes [`check`] here.
#[cfg(not(unix))]
pub(crate) fn own(_: &ListenSpec, checked: Checked) -> Result<Inherited, InheritError> {
    match checked {}
}

/// Tells the service manager something (`sd_notify(3)`): `READY=1` once every listener is
/// up, `STATUS=…` for `systemctl status`, `STOPPING=1` as a graceful stop begins. One
/// datagram to the socket `NOTIFY_SOCKET` names (a path, or `@name` for an abstract one).
/// Returns whether it was sent: `false` when `NOTIFY_SOCKET` is not set (no manager waits).
///
/// In a hand-over ([`ServerHandle::hand_over`](crate::ServerHandle::hand_over)): a
/// successor's first `READY=1` goes to its predecessor, with this process's pid (say it
/// after every bind: one before any bind of this library looked at the passed sockets is
/// refused with `InvalidInput`, since it would close every one of them; a successor that
/// takes them without this library's binds cannot say it), which then tells the service
/// manager the new main pid; a process
/// that has handed its service over sends nothing more (returns `false`), whichever of its
/// servers handed over: its `STOPPING=1` would stop the successor's service.
///
/// ```
/// // Outside a service manager this does nothing.
/// std::env::remove_var("NOTIFY_SOCKET");
/// assert!(!dualstack::notify("READY=1")?);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The error of sending the datagram, or `Unsupported` off Unix.
pub fn notify(state: &str) -> io::Result<bool> {
    if crate::handover::handed_over() {
        return Ok(false);
    }
    #[cfg(unix)]
    if state.lines().any(|l| l == "READY=1") {
        if let Some(sent) = crate::handover::passed::ready(state) {
            return sent.map(|()| true);
        }
    }
    #[cfg(unix)]
    return send_to_manager(state, None);
    #[cfg(not(unix))]
    match (std::env::var_os("NOTIFY_SOCKET"), state) {
        (None, _) => Ok(false),
        (Some(_), _) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "NOTIFY_SOCKET is a Unix-domain socket",
        )),
    }
}

/// [`notify`] for a state that is not `READY=1`, without waiting if the manager's queue is
/// full (`WouldBlock` then): for a signal's `STOPPING=1`, which must not hold up the stop.
#[cfg(feature = "signals")]
pub(crate) fn notify_without_waiting(state: &str) -> io::Result<bool> {
    if crate::handover::handed_over() {
        return Ok(false);
    }
    #[cfg(unix)]
    return send_to_manager_as(state, None, false);
    #[cfg(not(unix))]
    notify(state)
}

/// Sends `state` to the service manager's `NOTIFY_SOCKET` as it is (no hand-over rule
/// applies), with descriptor `fd` (`SCM_RIGHTS`) if given: `Ok(false)` when no manager
/// listens.
#[cfg(unix)]
pub(crate) fn send_to_manager(
    state: &str,
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<bool> {
    send_to_manager_as(state, fd, true)
}

/// [`send_to_manager`], waiting for room in the manager's queue or not (`WouldBlock`).
#[cfg(unix)]
fn send_to_manager_as(
    state: &str,
    fd: Option<std::os::fd::BorrowedFd<'_>>,
    wait: bool,
) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    match bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.connect_addr(&addr)?;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "an abstract NOTIFY_SOCKET exists only on Linux",
            ))
        }
        None => socket.connect(std::path::Path::new(&target))?,
    }
    socket.set_nonblocking(!wait)?;
    match fd {
        Some(fd) => crate::sys::send_with_fd(&socket, state.as_bytes(), fd)?,
        None => {
            socket.send(state.as_bytes())?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn names_through_a_descriptor_or_the_old_private_directory_are_staging_names() {
        let cases: &[(&str, bool)] = &[
            ("/proc/self/fd/4/s", true),
            ("/proc/self/fd/12/app.sock", true),
            ("/proc/4242/fd/4/s", true),
            ("/dev/fd/5/s", true),
            ("/tmp/.ds4242.0123456789abcdef/s", true),
            ("/run/app.sock", false),
            ("/proc/self/fd", false),
            ("/proc/self/fd/x/s", false),
            ("/tmp/.ds4242.0123/s", false),
            ("/tmp/.ds4242.0123456789abcdef/t", false),
            ("./app.sock", false),
        ];
        for (path, staged) in cases {
            assert_eq!(
                is_staging_name(std::path::Path::new(path)),
                *staged,
                "{path}"
            );
        }
    }

    /// A hostile review: recording a socket the library opened at a number where a passed
    /// socket had been taken (and closed since) forgot that it had been passed, so a later
    /// `sd-listen` took whatever the application had opened at that number.
    #[cfg(unix)]
    #[test]
    fn a_number_once_passed_stays_passed_when_the_library_reuses_it() {
        use std::os::fd::{AsFd, AsRawFd};
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = socket.as_raw_fd();
        let gone = Record {
            id: (0, 0),
            activated: true,
            state: Use::Free,
        };
        registry().insert(fd, gone);
        opened(socket.as_fd());
        let now = registry().get(&fd).copied().unwrap();
        assert_eq!(now.state, Use::Opened);
        assert!(now.activated, "the number forgot it held a passed socket");
        released(fd);
        let after = registry().remove(&fd).unwrap();
        assert!(after.state == Use::Free && after.activated);
    }

    fn env(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> Environment {
        Environment {
            pid: pid.map(str::to_owned),
            pidfd_id: None,
            fds: fds.map(str::to_owned),
            names: names.map(str::to_owned),
        }
    }

    fn read(e: &Environment) -> Result<Vec<(i32, String)>, InheritError> {
        read_activation(&"sd-listen".parse().unwrap(), e, 4242, Some(77))
    }

    /// Issue #21, item 6: numbers are read as systemd's `safe_atoi` reads them (its
    /// src/basic/parse-util.c), case by case.
    #[test]
    fn numbers_are_read_as_systemd_reads_them() {
        let cases: &[(&str, Option<i64>)] = &[
            ("3", Some(3)),
            ("+3", Some(3)),
            ("-3", Some(-3)),
            (" \t3", Some(3)),
            ("0x1f", Some(31)),
            ("0X1F", Some(31)),
            ("010", Some(8)),
            ("0o10", Some(8)),
            ("0b101", Some(5)),
            ("0", Some(0)),
            ("3 ", None),
            ("3a", None),
            ("", None),
            (" ", None),
            ("+", None),
            ("08", None),
            ("0x", None),
            ("0b2", None),
            ("١", None),
            ("99999999999999999999", None),
        ];
        for (text, want) in cases {
            assert_eq!(systemd_int(text), *want, "{text:?}");
        }
    }

    /// A review of issue #21: names are split as systemd's `strv_split_full` splits them
    /// (its test-strv.c: `":foo\\:bar::waldo:"` is `"", "foo:bar", "", "waldo", ""`).
    #[test]
    fn names_are_split_as_systemd_splits_them() {
        let split = |t: &str| systemd_names(t);
        let v = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            split(":foo\\:bar::waldo:"),
            v(&["", "foo:bar", "", "waldo", ""])
        );
        assert_eq!(split(""), v(&[""]), "one empty name");
        assert_eq!(split("a\\b"), v(&["ab"]));
        assert_eq!(split("a\\\\b"), v(&["a\\b"]));
        assert_eq!(split("web"), v(&["web"]));
        assert_eq!(split("a\\"), None, "a backslash that escapes nothing");
        assert_eq!(
            read(&env(None, Some("1"), Some("a\\:b"))).unwrap(),
            [(3, "a:b".into())]
        );
        assert!(read(&env(None, Some("1"), Some("x\\"))).is_err());
        assert_eq!(systemd_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(systemd_u64("-0"), Some(0));
        assert_eq!(systemd_u64("-1"), None);
    }

    /// Issue #21, item 6: each case of `sd_listen_fds_with_names`, as systemd decides it.
    #[test]
    fn the_environment_is_judged_as_sd_listen_fds_judges_it() {
        // LISTEN_FDS=0 is refused by sd_listen_fds (n <= 0 is EINVAL), names or not.
        for names in [None, Some(""), Some("a")] {
            let err = read(&env(Some("4242"), Some("0"), names)).unwrap_err();
            assert_eq!(err.kind(), InheritErrorKind::Malformed, "{names:?}: {err}");
        }
        // An empty LISTEN_FDNAMES is one empty name: right for one descriptor.
        assert_eq!(
            read(&env(None, Some("1"), Some(""))).unwrap(),
            [(3, "".into())]
        );
        assert!(read(&env(None, Some("2"), Some(""))).is_err());
        // Empty names between colons count.
        assert_eq!(
            read(&env(None, Some("3"), Some("a::b"))).unwrap(),
            [(3, "a".into()), (4, "".into()), (5, "b".into())]
        );
        // Numbers as safe_atoi takes them.
        assert_eq!(
            read(&env(Some("+4242"), Some("+2"), None)).unwrap().len(),
            2
        );
        assert_eq!(
            read(&env(Some(" 4242"), Some("0x2"), None)).unwrap().len(),
            2
        );
        // LISTEN_PIDFDID: another process of the same pid is refused; ours is fine; a
        // kernel without pidfs inode numbers cannot tell, so it is not asked.
        let with_id = |id: &str| Environment {
            pidfd_id: Some(id.to_owned()),
            ..env(Some("4242"), Some("1"), None)
        };
        let spec = "sd-listen".parse().unwrap();
        assert!(read_activation(&spec, &with_id("77"), 4242, Some(77)).is_ok());
        let other = read_activation(&spec, &with_id("78"), 4242, Some(77)).unwrap_err();
        assert_eq!(other.kind(), InheritErrorKind::OtherProcess, "{other}");
        assert!(read_activation(&spec, &with_id("78"), 4242, None).is_ok());
        let bad = read_activation(&spec, &with_id("x"), 4242, Some(77)).unwrap_err();
        assert_eq!(bad.kind(), InheritErrorKind::Malformed, "{bad}");
    }

    #[test]
    fn names_pair_with_descriptors_from_3() {
        assert_eq!(
            read(&env(Some("4242"), Some("3"), Some("a:b:a"))).unwrap(),
            [(3, "a".into()), (4, "b".into()), (5, "a".into())]
        );
        assert_eq!(
            read(&env(Some("4242"), Some("2"), None)).unwrap(),
            [(3, "unknown".into()), (4, "unknown".into())],
            "unnamed sockets are called unknown, as sd_listen_fds_with_names(3) does"
        );
    }

    #[test]
    fn an_absent_listen_pid_is_accepted_for_wrappers() {
        assert_eq!(read(&env(None, Some("1"), None)).unwrap().len(), 1);
        // Set but empty is not absent: parse_pid refuses it, and so does this.
        let err = read(&env(Some(""), Some("1"), None)).unwrap_err();
        assert_eq!(err.kind(), InheritErrorKind::Malformed, "{err}");
    }

    #[test]
    fn each_bad_environment_has_its_own_error() {
        use InheritErrorKind::*;
        let cases: &[(Environment, InheritErrorKind, &str)] = &[
            (
                env(Some("4242"), None, None),
                NotActivated,
                "LISTEN_FDS is not set",
            ),
            (
                env(Some("1"), Some("1"), None),
                OtherProcess,
                "LISTEN_PID is 1, and this process is 4242",
            ),
            (
                env(Some("x"), Some("1"), None),
                Malformed,
                "LISTEN_PID \"x\"",
            ),
            (env(None, Some("-1"), None), Malformed, "LISTEN_FDS \"-1\""),
            (
                env(None, Some("99999999999"), None),
                Malformed,
                "LISTEN_FDS \"99999999999\"",
            ),
            (env(None, Some("4097"), None), Malformed, "1 to 4096"),
            (env(None, Some("0"), None), Malformed, "LISTEN_FDS \"0\""),
            (
                env(Some("0"), Some("1"), None),
                Malformed,
                "LISTEN_PID \"0\"",
            ),
            (env(None, Some("2"), Some("a")), Malformed, "1 names for 2"),
            (
                env(None, Some("1"), Some("a:b")),
                Malformed,
                "2 names for 1",
            ),
        ];
        for (e, kind, text) in cases {
            let err = read(e).unwrap_err();
            assert_eq!(err.kind(), *kind, "{err}");
            assert!(err.to_string().contains(text), "{err:?} lacks {text}");
            assert!(
                err.to_string()
                    .starts_with("cannot listen on \"sd-listen\""),
                "{err}"
            );
        }
    }
}
