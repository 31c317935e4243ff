//! Unix-domain listeners: binding with a mode and no window in which the default mode
//! applies, stale socket files, and removing the file when the listener goes (only if it is
//! still the file this listener made).
//!
//! Heads up: the rules here follow the consensus of the projects that got them wrong first
//! (neovim#37378, nng#656, katzenpost#1116): a path is unlinked only after linking the new
//! socket there failed because the path exists, only if it is a socket, and only if nothing
//! answers on it; never before trying, never anything else.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::UnixAddr;

/// A listening Unix-domain socket, and the file it made, if it made one.
#[derive(Debug)]
pub(crate) struct UnixListener {
    /// Dropped first (fields drop in order): the file goes while the socket still answers,
    /// so a file that refuses connections is never still ours, and a server starting at
    /// that moment finds it in use, or gone, never stale.
    owned: Owned,
    inner: mio::net::UnixListener,
}

/// The socket file to remove when the listener goes.
#[derive(Debug)]
struct Owned(Option<File>);

/// A socket file this process made.
#[derive(Debug)]
struct File {
    path: PathBuf,
    /// Its device and inode: a file that has replaced it since is left alone.
    id: (u64, u64),
    /// The process that made it: a child that inherited the listener through `fork` and
    /// drops it leaves the file to the parent, whose socket it still is.
    pid: u32,
}

/// How a bind failed: the step, and the error.
pub(crate) type Failed = (&'static str, io::Error);

impl UnixListener {
    /// Binds `addr` and listens, with the socket file's permission bits set to `mode` before
    /// any client can reach it.
    pub(crate) fn bind(
        addr: &UnixAddr,
        mode: Option<u32>,
        backlog: i32,
    ) -> Result<UnixListener, Failed> {
        if let Some(mode) = mode.filter(|m| *m > 0o777) {
            return Err((
                "set the mode",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{mode:o} is not a permission mode for a socket (at most 777)"),
                ),
            ));
        }
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| ("socket", e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| ("set O_NONBLOCK", e))?;
        let owned = match addr {
            UnixAddr::Abstract(name) => {
                if mode.is_some() {
                    return Err((
                        "set the mode",
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "an abstract socket has no file, so no permissions to set: use a path, or check each peer's credentials",
                        ),
                    ));
                }
                socket
                    .bind(&abstract_addr(name).map_err(|e| ("bind", e))?)
                    .map_err(|e| ("bind", e))?;
                socket.listen(backlog).map_err(|e| ("listen", e))?;
                None
            }
            UnixAddr::Path(path) => Some(bind_path(&socket, path, mode, backlog)?),
        };
        Ok(UnixListener {
            inner: mio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(
                std::os::fd::OwnedFd::from(socket),
            )),
            owned: Owned(owned),
        })
    }

    /// A listener this process was handed (systemd, `fd:N`): its file, if any, is not ours
    /// to remove.
    pub(crate) fn inherited(listener: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener {
            inner: mio::net::UnixListener::from_std(listener),
            owned: Owned(None),
        }
    }

    /// The mio listener; the socket file is no longer removed when it goes.
    pub(crate) fn into_mio(self) -> mio::net::UnixListener {
        let UnixListener { inner, mut owned } = self;
        owned.0 = None;
        inner
    }

    pub(crate) fn accept(&self) -> io::Result<mio::net::UnixStream> {
        self.inner.accept().map(|(stream, _)| stream)
    }
}

impl Drop for Owned {
    /// Removes the socket file if it is still the one the listener made.
    fn drop(&mut self) {
        if let Some(File { path, id, pid }) = self.0.take() {
            if pid != std::process::id() {
                return;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if (meta.dev(), meta.ino()) == id => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        log::debug!("cannot remove {}: {e}", path.display());
                    }
                }
                _ => log::debug!(
                    "{} is no longer the socket file this server made: left alone",
                    path.display()
                ),
            }
        }
    }
}

impl mio::event::Source for UnixListener {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.register(r, t, i)
    }

    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.inner.reregister(r, t, i)
    }

    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.inner.deregister(r)
    }
}

impl std::os::fd::AsFd for UnixListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

/// The address of abstract name `name`: a `sun_path` that starts with a NUL byte (Linux).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name);
    SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SockAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix-domain sockets exist only on Linux",
    ))
}

/// Binds `socket` at `path`, listening, with `mode` if given; returns what identifies the
/// file made.
///
/// The socket is bound in a new directory beside `path` that only this user can enter,
/// given its mode there, set listening, and only then linked into place. So no client can
/// connect while a default mode applies, and the file never sits at `path` without a
/// listening socket behind it (another server starting at the same moment would take it
/// for stale). The mode and the link go through a descriptor of that directory, never its
/// path: whoever may write the directory above cannot swap in one of their own and have a
/// file of ours changed or linked in its place.
fn bind_path(
    socket: &Socket,
    path: &Path,
    mode: Option<u32>,
    backlog: i32,
) -> Result<File, Failed> {
    use std::os::fd::AsFd;
    let dir = Private::new(path).map_err(|e| ("make a private directory to bind in", e))?;
    socket
        .bind(&dir.addr_of("s").map_err(|e| ("bind", e))?)
        .map_err(|e| ("bind", e))?;
    // Bound by path: the socket must be in our directory, not in one put at its path since.
    let (dev, ino, is_socket) = crate::sys::identity_at(dir.fd.as_fd(), "s")
        .map_err(|e| ("find the socket in the private directory", e))?;
    if !is_socket {
        return Err((
            "bind",
            io::Error::other("the private directory was tampered with: no socket in it"),
        ));
    }
    if let Some(mode) = mode {
        crate::sys::chmod_at(dir.fd.as_fd(), "s", mode).map_err(|e| ("set the mode", e))?;
    }
    socket.listen(backlog).map_err(|e| ("listen", e))?;
    place(path, &dir)?;
    Ok(File {
        path: path.to_owned(),
        id: (dev, ino),
        pid: std::process::id(),
    })
}

/// Links the listening socket's file (`s` in `dir`) at `path`. If something is there
/// already, removes it only if it is a stale socket (nothing answers on it) and links once
/// more. Two servers finding the same stale file must not both remove what is there (the
/// second would remove the first's live socket) and both believe they serve `path`: the
/// replacement is done under an `flock` on the directory of `path`, which every server of
/// this library takes for it. The lock is waited for a bounded time only, and is skipped
/// (with the race it closes) where the directory cannot be opened or locked: another
/// process holding it cannot hang or fail a bind.
fn place(path: &Path, dir: &Private) -> Result<(), Failed> {
    use std::os::fd::AsFd;
    let link = || crate::sys::link_at(dir.fd.as_fd(), "s", path);
    match link() {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(("bind", e)),
    }
    let _lock = lock_dir(parent_of(path));
    let in_use_now = || {
        (
            "bind",
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use: a server answers on it", path.display()),
            ),
        )
    };
    // A few rounds: the file may go (its server stopping) while it is looked at; then the
    // path is free and the link is tried again.
    for _ in 0..3 {
        match link() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(("bind", e)),
        }
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(("stat", e)),
        };
        if !meta.file_type().is_socket() {
            return Err((
                "bind",
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket: it is not removed",
                        path.display()
                    ),
                ),
            ));
        }
        match answers(path) {
            Ok(true) => return Err(in_use_now()),
            Ok(false) => {}
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(("connect to the socket already there", e)),
        }
        log::info!(
            "{}: a stale socket (nothing answers on it): removed",
            path.display()
        );
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(("remove the stale socket", e)),
        }
    }
    // Still taken after that: a server that did not need the lock (it found the path free)
    // placed its socket in between, and it is live (see bind_path).
    match link() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(in_use_now()),
        Err(e) => Err(("bind", e)),
    }
}

/// The longest a bind waits for another server's lock on a directory.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// An exclusive `flock` on directory `dir`, held while the returned file is open: waited
/// for [`LOCK_WAIT`] at most. `None` (logged) when it cannot be had: a directory this user
/// may not read, a file system without locks, or a holder that keeps it.
fn lock_dir(dir: &Path) -> Option<std::fs::File> {
    let file = match std::fs::File::open(dir) {
        Ok(file) => file,
        Err(e) => {
            log::debug!("cannot open {} to lock it: {e}", dir.display());
            return None;
        }
    };
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match crate::sys::try_lock(&file) {
            Ok(true) => return Some(file),
            Ok(false) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Ok(false) => {
                log::warn!(
                    "{}: another process holds a lock on this directory; replacing a stale socket without it",
                    dir.display()
                );
                return None;
            }
            Err(e) => {
                log::debug!("cannot lock {}: {e}", dir.display());
                return None;
            }
        }
    }
}

/// The directory `path` is in.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether a server answers at `path`: a connect that does not block, so a server whose
/// backlog is full (or a socket that never accepts) is "in use", not a hang.
fn answers(path: &Path) -> io::Result<bool> {
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// A directory beside the socket's path that only this user can enter, removed with what
/// is in it when dropped.
struct Private {
    path: PathBuf,
    /// The directory itself, opened right after it was made and checked to be ours: what is
    /// done in it goes through this descriptor, never through `path`.
    fd: std::fs::File,
}

impl Private {
    /// Makes the directory: `.dsPID.RANDOM` in the socket's directory, mode 0700. The name
    /// is not guessable (so another user cannot make it first and have this bind fail), and a
    /// name that exists already is never used: `mkdir` does not follow a symlink there.
    fn new(beside: &Path) -> io::Result<Private> {
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::OpenOptionsExt;
        let parent = parent_of(beside);
        let mut last = None;
        for attempt in 0u64..8 {
            // RandomState is seeded from the OS's randomness once per process and then
            // varied per instance: good enough for a name nobody can guess in advance.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(attempt);
            let path = parent.join(format!(
                ".ds{}.{:016x}",
                std::process::id(),
                hasher.finish()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            // Made: now opened without following a symlink, and checked to be ours. If
            // either fails, what is at `path` is not what we made, and is not removed.
            let fd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("the private directory {} was replaced: {e}", path.display()),
                    )
                })?;
            let meta = fd.metadata()?;
            if meta.uid() != crate::sys::euid() || meta.mode() & 0o077 != 0 {
                return Err(io::Error::other(format!(
                    "the private directory {} was replaced by one this user does not own alone",
                    path.display()
                )));
            }
            return Ok(Private { path, fd });
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// The socket address of `name` in this directory. On Linux it is reached through
    /// `/proc/self/fd/N/NAME`, N the directory's descriptor (systemd does the same), so the
    /// socket is made in this very directory even if another was put at its path meanwhile,
    /// and a staged path is never what makes a path the parser accepted too long. Elsewhere,
    /// or without `/proc`, by its path (a swap is then caught after the bind: `bind_path`
    /// looks for the socket through the descriptor).
    fn addr_of(&self, name: &str) -> io::Result<SockAddr> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::AsRawFd;
            let via_fd = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
            if Path::new(&via_fd).is_dir() {
                return SockAddr::unix(format!("{via_fd}/{name}"));
            }
        }
        SockAddr::unix(self.path.join(name))
    }
}

impl Drop for Private {
    /// Removes the socket's staging name through the directory's descriptor, then the
    /// directory by path only if it is empty: if someone put another directory at the
    /// path, nothing of theirs is removed.
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        let _ = crate::sys::unlink_at(self.fd.as_fd(), "s");
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile review: a child that inherited a listener through `fork` and dropped it
    /// removed the parent's live socket file (same device and inode). The file is removed
    /// only by the process that made it; here the record says another process made it.
    #[test]
    fn a_listener_dropped_in_another_process_leaves_the_file() {
        let dir = std::env::temp_dir().join(format!("ds-unit-fork-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = UnixAddr::Path(path.clone());
        let mut listener = UnixListener::bind(&addr, None, 8).unwrap();
        listener.owned.0.as_mut().unwrap().pid = std::process::id().wrapping_add(1);
        drop(listener);
        assert!(
            path.exists(),
            "a forked child removed the parent's socket file"
        );
        // And the process that made it does remove it.
        std::fs::remove_file(&path).unwrap();
        drop(UnixListener::bind(&addr, None, 8).unwrap());
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
