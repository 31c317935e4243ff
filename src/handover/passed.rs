//! The successor's side of a hand-over: the sockets its predecessor passed, read once from
//! the environment, matched to this process's specs by the listen layer, and the readiness
//! it owes the predecessor.
//!
//! The contract (see [`crate::handover`] for the predecessor's side): descriptors 3, 4, …
//! are the predecessor's listening sockets, `LISTEN_FDS` counts them and `LISTEN_FDNAMES`
//! names each `ds.OCCURRENCE.INDEX.SPEC` (which of the predecessor's equal specs it was,
//! from 0, which of that spec's sockets, and the spec as the predecessor displays it,
//! percent-encoded: names keep the rules of
//! systemd's `FDNAME=`, so the same names serve its descriptor store, [`read_store`]);
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
    /// Its name, as passed (what the descriptor store knows it by).
    name: String,
}

/// Where the passed sockets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A predecessor's hand-over, from this pid.
    Process(u32),
    /// The service manager's descriptor store (`FDSTORE=1`), on a restart.
    Store,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Process(pid) => write!(f, "process {pid}"),
            Source::Store => f.write_str("the service manager's descriptor store"),
        }
    }
}

/// What the predecessor passed.
#[derive(Debug)]
struct Table {
    from: Source,
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
    with_table(|table| match table?.from {
        Source::Process(pid) => Some(pid),
        Source::Store => None,
    })
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

/// Reads the hand-over variables, once per process, or else what the service manager's
/// descriptor store passed back. The passed sockets and the channel are made
/// close-on-exec at once: a process this one starts must not inherit them.
fn read() -> Option<Table> {
    let Ok(value) = std::env::var(VARIABLE) else {
        return read_store();
    };
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
    let from = Source::Process(from);
    let spec = ListenSpec::checked(SpecKind::Activated { name: None });
    let passed = match crate::inherit::passed(&spec) {
        Ok(passed) => passed,
        Err(e) => {
            log::warn!("hand-over from {from}: {e}; no socket taken over");
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
        match entry(fd, &name, file) {
            Some(e) => entries.push(e),
            None => log::warn!(
                "hand-over from {from}: fd {fd} is named {name:?}, not ds.OCCURRENCE.INDEX.SPEC: not taken"
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

/// The sockets the service manager passed back from its descriptor store (those with this
/// library's names, [`name`]), when `LISTEN_PID` names this process: a restart of a
/// service that stored its listeners (`Server::store_listeners`).
fn read_store() -> Option<Table> {
    // LISTEN_PID read as for any activation (systemd's number syntax; absent: taken as
    // they are, for wrappers that cannot know the pid).
    let spec = ListenSpec::checked(SpecKind::Activated { name: None });
    let passed = match crate::inherit::passed(&spec) {
        Ok(passed) => passed,
        Err(e) if e.kind() == crate::inherit::InheritErrorKind::NotActivated => return None,
        Err(e) => {
            log::debug!("no stored sockets taken back: {e}");
            return None;
        }
    };
    let entries: Vec<Entry> = passed
        .into_iter()
        .filter_map(|(fd, name)| {
            let e = entry(fd, &name, None)?;
            crate::sys::set_cloexec_if_socket(fd);
            Some(e)
        })
        .collect();
    (!entries.is_empty()).then_some(Table {
        from: Source::Store,
        entries,
        ready: None,
        consulted: false,
    })
}

/// The entry for socket `fd`, passed as `name`, if the name is one of this library's.
fn entry(fd: i32, name: &str, file: Option<(u64, u64)>) -> Option<Entry> {
    let (occurrence, spec) = parse_name(name)?;
    let id = crate::sys::with_inherited(fd, crate::sys::identity)
        .ok()
        .and_then(Result::ok);
    Some(Entry {
        fd,
        occurrence,
        spec,
        id,
        file,
        name: name.to_owned(),
    })
}

/// The descriptors passed for the `occurrence`-th spec equal to `spec` (from 0), and
/// where they came from: `None` when this process is no successor, or when the descriptor
/// store passed nothing for this spec (then it binds as on any start).
pub(crate) fn group(spec: &ListenSpec, occurrence: usize) -> Option<(Vec<i32>, String, bool)> {
    let text = spec.to_string();
    with_table(|table| {
        let table = table?;
        table.consulted = true;
        let fds: Vec<i32> = table
            .entries
            .iter()
            .filter(|e| e.occurrence == occurrence && e.spec == text)
            .map(|e| e.fd)
            .collect();
        if fds.is_empty() && table.from == Source::Store {
            return None;
        }
        // A hand-over passes sockets as they are; a restart may change them.
        let strict = matches!(table.from, Source::Process(_));
        Some((fds, table.from.to_string(), strict))
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
        if table.from == Source::Store {
            // A restart: READY=1 goes to the manager as usual; stored sockets no bind took
            // are closed, and the manager is told to forget them.
            if table.consulted {
                close_leftovers(table);
            }
            return None;
        }
        if table.ready.is_some() && !table.consulted {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("READY=1 before any bind of this process took the sockets {} handed over: not sent (bind first, then say READY=1)", table.from),
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
        // The predecessor's group, asked while it surely lives (it waits for this message;
        // once it has it, it may drain, exit and be reaped before this process asks).
        let group = match table.from {
            Source::Process(pid) => crate::sys::group_of(pid),
            _ => None,
        };
        let sent = socket2::SockRef::from(&channel.as_fd()).send(message.as_bytes());
        drop(channel);
        READY_SENT.store(true, Ordering::Release);
        close_leftovers(table);
        if let (true, Some(group)) = (sent.is_ok(), group) {
            // The predecessor's process group from now on, as a child of it would be: a
            // terminal's Ctrl-C, or a supervisor that signals the group, reaches it. (Its
            // own group until now, so that a failed start was killed with what it began.)
            crate::sys::join_group(group);
        }
        Some(sent.map(drop))
    })
}

/// Closes passed socket `fd` (if it is still the one passed) and, if it came from the
/// service manager's descriptor store, has the manager forget it: a restart that no longer
/// plans it, or plans it differently, before it binds in its place.
pub(crate) fn forget(fd: i32) {
    with_table(|table| {
        let Some(table) = table else { return };
        let Some(i) = table.entries.iter().position(|e| e.fd == fd) else {
            return;
        };
        let e = table.entries.remove(i);
        let now = crate::sys::with_inherited(e.fd, crate::sys::identity)
            .ok()
            .and_then(Result::ok);
        if now.is_none() || now != e.id || crate::inherit::in_use(e.fd, e.id) {
            return;
        }
        drop(crate::sys::take_inherited(e.fd));
        if table.from == Source::Store {
            forget_stored(&e.name);
        }
    })
}

/// Tells the service manager to drop the stored socket called `name`.
fn forget_stored(name: &str) {
    let forget = format!("FDSTOREREMOVE=1\nFDNAME={name}");
    if let Err(e) = crate::inherit::send_to_manager(&forget, None) {
        log::warn!("cannot tell the service manager to forget stored socket {name}: {e}");
    }
}

/// Closes the passed sockets no bind of this process took (logged), removes the socket
/// files the predecessor made for them, and tells the service manager to forget any that
/// came from its descriptor store.
fn close_leftovers(table: &mut Table) {
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
            "{}: no listen spec of this process matches the socket passed for {} (fd {}): closed",
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
        // Its file, if the predecessor made it: the predecessor left it to this process,
        // which serves nothing there.
        if let (Some(path), Some(made)) = (path, e.file) {
            crate::unix::remove_if_made(&path, made);
        }
        if table.from == Source::Store {
            forget_stored(&e.name);
        }
    }
}

/// The name of the `index`-th socket of the `occurrence`-th spec equal to `spec`, in
/// `LISTEN_FDNAMES` and the descriptor store's `FDNAME=` (one name per socket: the store
/// forgets by name): `ds.OCCURRENCE.INDEX.SPEC`, the spec percent-encoded (`:` is `%3A`),
/// so printable ASCII without `:` as `FDNAME=` wants; its 255-byte limit is the caller's
/// to check.
pub(crate) fn name(spec: &ListenSpec, occurrence: usize, index: usize) -> String {
    let mut name = format!("ds.{occurrence}.{index}.");
    for b in spec.to_string().bytes() {
        match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'/'
            | b'['
            | b']'
            | b'@'
            | b','
            | b'='
            | b'+'
            | b'~' => name.push(b as char),
            _ => name.push_str(&format!("%{b:02X}")),
        }
    }
    name
}

/// The occurrence and spec of a name [`name`] made; `None` for any other name.
pub(crate) fn parse_name(name: &str) -> Option<(usize, String)> {
    let rest = name.strip_prefix("ds.")?;
    let (occurrence, rest) = rest.split_once('.')?;
    let occurrence = occurrence.parse().ok()?;
    let (index, encoded) = rest.split_once('.')?;
    index.parse::<usize>().ok()?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut it = encoded.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    Some((occurrence, String::from_utf8(bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_keep_the_descriptor_stores_rules() {
        let specs = [
            "localhost:0",
            "[fe80::1%25eth0]:7000",
            "unix:/run/a b:c\\d%e.sock",
            "@abstract",
            "sd-listen:web",
            "fd:3",
            ":8080",
        ];
        for text in specs {
            let spec: ListenSpec = text.parse().unwrap();
            for occurrence in [0, 7] {
                let n = name(&spec, occurrence, 3);
                assert!(
                    n.len() <= 255 && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                    "{n}"
                );
                assert_eq!(parse_name(&n), Some((occurrence, spec.to_string())), "{n}");
            }
        }
        for other in [
            "web",
            "ds.",
            "ds.x.y",
            "ds.0.%",
            "ds.0.%zz",
            "0/localhost:0",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }
}
