//! The successor's side of a hand-over: the sockets its predecessor passed, read once from
//! the environment, matched to this process's specs by the listen layer, and the readiness
//! it owes the predecessor.
//!
//! The contract (see [`crate::handover`] for the predecessor's side): descriptors 3, 4, …
//! are the predecessor's listening sockets, `LISTEN_FDS` counts them and `LISTEN_FDNAMES`
//! names each `OCCURRENCE/SPEC` (the spec as the predecessor displays it, and which of its
//! equal specs it was, from 0; `:` and `\` escaped with `\` as systemd escapes them);
//! `DUALSTACK_HANDOVER` is `PID:FD`, the predecessor's pid and the descriptor of the
//! channel that `READY=1` goes back on; `DUALSTACK_HANDOVER_FILES` (`I=DEV:INO,…`) names
//! the socket files the predecessor made, by the index of their socket, so the successor
//! takes over the removal of those files and of no other. The variables count only when
//! the channel is there and was made by `PID` (its peer's credentials say so on Linux;
//! elsewhere `PID` must be the parent): a process the successor starts in turn inherits
//! the variables, not the channel, and must not take them for its own; a wrapper between
//! the two that keeps the descriptors open is fine.

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
    /// The socket file the predecessor made for it (device and inode), if it made one.
    file: Option<(u64, u64)>,
}

/// What the predecessor passed.
#[derive(Debug)]
struct Table {
    from: u32,
    entries: Vec<Entry>,
    /// The channel `READY=1` goes back on; `None` once used.
    ready: Option<OwnedFd>,
    /// A bind looked for its sockets here: `READY=1` before that would close them all.
    consulted: bool,
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

/// The pid of the process that handed this one its sockets, if one did.
pub(crate) fn predecessor() -> Option<u32> {
    with_table(|table| table.map(|t| t.from))
}

/// The socket file the predecessor made for the socket it passed at `fd`, if it made one.
pub(crate) fn file_of(fd: i32) -> Option<(u64, u64)> {
    with_table(|table| {
        table?
            .entries
            .iter()
            .find(|e| e.fd == fd)
            .and_then(|e| e.file)
    })
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
    // The channel must be there, and be the predecessor's: a process further down
    // inherits the variables, but not the channel (close-on-exec here at once).
    let maker = crate::sys::with_inherited(ready_fd, |fd| {
        let channel = socket2::SockRef::from(&fd).r#type().ok() == Some(socket2::Type::SEQPACKET);
        let pid = crate::sys::peer_credentials(&fd)
            .ok()
            .and_then(|(_, _, pid)| pid);
        (channel, pid)
    });
    let trusted = match maker {
        Ok((true, Some(pid))) => pid == from,
        // No pid from the kernel here: the parent must be the predecessor.
        Ok((true, None)) => from == crate::sys::parent_pid(),
        _ => false,
    };
    if !trusted {
        log::debug!("{VARIABLE}={value:?}: fd {ready_fd} is not a readiness channel process {from} made: ignored");
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
    let files: Vec<(usize, (u64, u64))> = std::env::var("DUALSTACK_HANDOVER_FILES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|f| {
            let (i, id) = f.split_once('=')?;
            let (dev, ino) = id.split_once(':')?;
            Some((i.parse().ok()?, (dev.parse().ok()?, ino.parse().ok()?)))
        })
        .collect();
    let mut entries = Vec::with_capacity(passed.len());
    for (index, (fd, name)) in passed.into_iter().enumerate() {
        let file = files.iter().find(|(i, _)| *i == index).map(|(_, id)| *id);
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
                file,
            }),
            None => log::warn!(
                "hand-over from process {from}: fd {fd} is named {name:?}, not OCCURRENCE/SPEC: not taken"
            ),
        }
    }
    crate::sys::set_cloexec_if_socket(ready_fd);
    let ready = crate::sys::take_inherited(ready_fd).ok();
    Some(Table {
        from,
        entries,
        ready,
        consulted: false,
    })
}

/// The descriptors the predecessor passed for the `occurrence`-th spec equal to `spec`
/// (from 0), and the predecessor's pid; `None` when this process is no successor.
pub(crate) fn group(spec: &ListenSpec, occurrence: usize) -> Option<(Vec<i32>, u32)> {
    let text = spec.to_string();
    with_table(|table| {
        let table = table?;
        table.consulted = true;
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
/// predecessor stops accepting on its copies, so nobody would ever accept from them. A
/// `READY=1` before any bind looked at the passed sockets is refused (not sent): it would
/// close them all, and the service would move to whatever the binds open later.
pub(crate) fn ready(state: &str) -> Option<io::Result<()>> {
    with_table(|table| {
        let table = table?;
        if table.ready.is_some() && !table.consulted {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("READY=1 before any bind of this process took the sockets process {} handed over: not sent (bind first, then say READY=1)", table.from),
            )));
        }
        let channel = table.ready.take()?;
        // With this process's pid: a wrapper between the two may be what the predecessor
        // started, and the service manager must learn the server's pid.
        let message = match state.lines().any(|l| l.starts_with("MAINPID=")) {
            true => state.to_owned(),
            false => format!(
                "{}\nMAINPID={}",
                state.trim_end_matches('\n'),
                std::process::id()
            ),
        };
        let sent = socket2::SockRef::from(&channel.as_fd()).send(message.as_bytes());
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
            let Ok(socket) = crate::sys::take_inherited(e.fd) else {
                continue;
            };
            let path = socket2::SockRef::from(&socket)
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(std::path::Path::to_owned));
            drop(socket);
            // Its file, if the predecessor made it: the predecessor left it to this
            // process, which serves nothing there.
            if let (Some(path), Some(made)) = (path, e.file) {
                crate::unix::remove_if_made(&path, made);
            }
        }
        if sent.is_ok() {
            // The predecessor's process group from now on, as a child of it would be: a
            // terminal's Ctrl-C, or a supervisor that signals the group, reaches it. (Its
            // own group until now, so that a failed start was killed with what it began.)
            crate::sys::join_group_of(table.from);
        }
        Some(sent.map(drop))
    })
}

/// A spec as a name in `LISTEN_FDNAMES`: `OCCURRENCE/SPEC`, `\` and `:` escaped.
pub(crate) fn name(spec: &ListenSpec, occurrence: usize) -> String {
    let text = spec.to_string().replace('\\', "\\\\").replace(':', "\\:");
    format!("{occurrence}/{text}")
}
