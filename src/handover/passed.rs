//! The successor's side of a hand-over: the sockets its predecessor passed, read once from
//! the environment, matched to this process's specs by the listen layer, and the readiness
//! it owes the predecessor.
//!
//! The contract (see [`crate::handover`] for the predecessor's side): descriptors 3, 4, …
//! are the predecessor's listening sockets, `LISTEN_FDS` counts them and `LISTEN_FDNAMES`
//! names each `OCCURRENCE/SPEC` (the spec as the predecessor displays it, and which of its
//! equal specs it was, from 0; `:` and `\` escaped with `\` as systemd escapes them);
//! `DUALSTACK_HANDOVER` is `PID:FD`, the predecessor's pid and the descriptor of the
//! channel that `READY=1` goes back on. The variables count only when `PID` is this
//! process's parent: a process the successor starts in turn inherits them, and must not
//! take them for its own.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::addr::{ListenSpec, SpecKind};

/// The variable that marks a hand-over: `PID:FD`.
pub(crate) const VARIABLE: &str = "DUALSTACK_HANDOVER";

/// One socket the predecessor passed.
#[derive(Debug)]
struct Entry {
    fd: i32,
    /// Which of the predecessor's equal specs it came from (0 for the first).
    occurrence: usize,
    /// The spec, as the predecessor displays it.
    spec: String,
    /// Its identity when the table was read: a socket at this number later is another.
    id: Option<(u64, u64)>,
}

/// What the predecessor passed.
#[derive(Debug)]
struct Table {
    from: u32,
    entries: Vec<Entry>,
    /// The channel `READY=1` goes back on; `None` once used.
    ready: Option<OwnedFd>,
}

/// `None` until read; then `Some(None)` when this process is no successor.
static TABLE: Mutex<Option<Option<Table>>> = Mutex::new(None);

/// The successor said `READY=1` to its predecessor: the files of the Unix-domain sockets it
/// took over are its own to remove from now on (before, a successor that gives up must
/// leave them to the predecessor, which still serves them).
static READY_SENT: AtomicBool = AtomicBool::new(false);

/// Whether this process has told its predecessor it is ready.
pub(crate) fn ready_sent() -> bool {
    READY_SENT.load(Ordering::Acquire)
}

fn with_table<T>(f: impl FnOnce(Option<&mut Table>) -> T) -> T {
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let table = table.get_or_insert_with(read);
    f(table.as_mut())
}

/// Reads the hand-over variables, once per process. The passed sockets and the channel are
/// made close-on-exec at once: a process this one starts must not inherit them.
fn read() -> Option<Table> {
    let value = std::env::var(VARIABLE).ok()?;
    let parsed = value.split_once(':').and_then(|(pid, fd)| {
        Some((
            pid.parse::<u32>().ok()?,
            fd.parse::<i32>().ok().filter(|fd| *fd >= 3)?,
        ))
    });
    let Some((from, ready_fd)) = parsed else {
        log::warn!("{VARIABLE}={value:?} is not PID:FD: not taken for a hand-over");
        return None;
    };
    if from != crate::sys::parent_pid() {
        // Inherited from a process further up: not for this one.
        log::debug!("{VARIABLE} names process {from}, not this process's parent: ignored");
        return None;
    }
    let spec = ListenSpec::checked(SpecKind::Activated { name: None });
    let passed = match crate::inherit::passed(&spec) {
        Ok(passed) => passed,
        Err(e) => {
            log::warn!("hand-over from process {from}: {e}; no socket taken over");
            Vec::new()
        }
    };
    let mut entries = Vec::with_capacity(passed.len());
    for (fd, name) in passed {
        crate::sys::set_cloexec_if_socket(fd);
        let id = crate::sys::with_inherited(fd, crate::sys::identity)
            .ok()
            .and_then(Result::ok);
        let parsed = name
            .split_once('/')
            .and_then(|(n, spec)| Some((n.parse::<usize>().ok()?, spec.to_owned())));
        match parsed {
            Some((occurrence, spec)) => entries.push(Entry {
                fd,
                occurrence,
                spec,
                id,
            }),
            None => log::warn!(
                "hand-over from process {from}: fd {fd} is named {name:?}, not OCCURRENCE/SPEC: not taken"
            ),
        }
    }
    crate::sys::set_cloexec_if_socket(ready_fd);
    let ready = crate::sys::with_inherited(ready_fd, |fd| {
        socket2::SockRef::from(&fd).r#type().ok() == Some(socket2::Type::SEQPACKET)
    })
    .unwrap_or(false)
    .then(|| crate::sys::take_inherited(ready_fd).ok())
    .flatten();
    if ready.is_none() {
        log::warn!("hand-over from process {from}: fd {ready_fd} is not its readiness channel; READY=1 cannot reach it");
    }
    Some(Table {
        from,
        entries,
        ready,
    })
}

/// The descriptors the predecessor passed for the `occurrence`-th spec equal to `spec`
/// (from 0), and the predecessor's pid; `None` when this process is no successor.
pub(crate) fn group(spec: &ListenSpec, occurrence: usize) -> Option<(Vec<i32>, u32)> {
    let text = spec.to_string();
    with_table(|table| {
        let table = table?;
        let fds = table
            .entries
            .iter()
            .filter(|e| e.occurrence == occurrence && e.spec == text)
            .map(|e| e.fd)
            .collect();
        Some((fds, table.from))
    })
}

/// Sends `state` (which says `READY=1`) to the predecessor, once: `None` when this process
/// is no successor, or said it already (then it goes to the service manager as usual).
/// Passed sockets no bind of this process took are closed then, and logged: the
/// predecessor stops accepting on its copies, so nobody would ever accept from them.
pub(crate) fn ready(state: &str) -> Option<io::Result<()>> {
    with_table(|table| {
        let table = table?;
        let channel = table.ready.take()?;
        let sent = socket2::SockRef::from(&channel.as_fd()).send(state.as_bytes());
        drop(channel);
        READY_SENT.store(true, Ordering::Release);
        for e in std::mem::take(&mut table.entries) {
            if crate::inherit::in_use(e.fd, e.id) {
                continue;
            }
            let now = crate::sys::with_inherited(e.fd, crate::sys::identity)
                .ok()
                .and_then(Result::ok);
            if now.is_none() || now != e.id {
                continue;
            }
            log::warn!(
                "hand-over from process {}: no listen spec of this process matches the socket passed for {} (fd {}): closed",
                table.from,
                e.spec,
                e.fd
            );
            drop(crate::sys::take_inherited(e.fd));
        }
        Some(sent.map(drop))
    })
}

/// A spec as a name in `LISTEN_FDNAMES`: `OCCURRENCE/SPEC`, `\` and `:` escaped.
pub(crate) fn name(spec: &ListenSpec, occurrence: usize) -> String {
    let text = spec.to_string().replace('\\', "\\\\").replace(':', "\\:");
    format!("{occurrence}/{text}")
}
