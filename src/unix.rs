//! Unix-domain listeners: binding at the path clients use, with a mode set before any
//! client can connect, stale socket files, and removing the file when the listener goes
//! (only if it is still the file this listener made).
//!
//! Heads up: the rules here follow the consensus of the projects that got them wrong first
//! (neovim#37378, nng#656, katzenpost#1116): a path is unlinked only after binding the new
//! socket there failed because the path exists, only if it is a socket, and only if nothing
//! answers on it; never before trying, never anything else.

use std::io;
use std::os::unix::fs::MetadataExt;
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
    /// The directory it is in, opened before the bind: it is found and removed there,
    /// whatever the path's directories become.
    dir: std::fs::File,
    /// Its name in that directory.
    name: std::ffi::OsString,
    /// Its path, for the log.
    path: PathBuf,
    /// Its device and inode: a file that has replaced it since is left alone.
    id: (u64, u64),
    /// The process that made it: a child that inherited the listener through `fork` and
    /// drops it leaves the file to the parent, whose socket it still is.
    pid: u32,
    /// Handed over by a predecessor: removed only once this process said it is ready.
    handed: bool,
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
        // The library's from its first moment: no other thread's `fd:N` can take it.
        crate::inherit::opened(std::os::fd::AsFd::as_fd(&socket));
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

    /// A listener a hand-over's predecessor passed, for the socket file at `path`, which
    /// the predecessor made as the file `made` (device and inode) names: if it is still
    /// that file, it is removed when the listener goes, as if this process had made it,
    /// but only once this process has told the predecessor it is ready (a successor that
    /// gives up must leave the predecessor's file alone). A file the predecessor did not
    /// make (systemd's), or one that replaced it, is never removed.
    pub(crate) fn handed(
        listener: std::os::unix::net::UnixListener,
        path: &Path,
        made: Option<(u64, u64)>,
    ) -> UnixListener {
        let file = (|| {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path.file_name()?.to_owned();
            let dir = std::fs::File::open(dir).ok()?;
            let (dev, ino, is_socket, _) =
                crate::sys::stat_at(std::os::fd::AsFd::as_fd(&dir), &name).ok()?;
            (is_socket && Some((dev, ino)) == made).then(|| File {
                dir,
                name,
                path: path.to_owned(),
                id: (dev, ino),
                pid: std::process::id(),
                handed: true,
            })
        })();
        UnixListener {
            inner: mio::net::UnixListener::from_std(listener),
            owned: Owned(file),
        }
    }

    /// The socket file this listener made (device and inode), if it made one and still
    /// owns it.
    pub(crate) fn file_id(&self) -> Option<(u64, u64)> {
        self.owned.0.as_ref().map(|f| f.id)
    }

    /// This listener's socket is handed to a successor, which removes its file when it is
    /// done with it: this process no longer does.
    pub(crate) fn disown(&mut self) {
        self.owned.0 = None;
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
    /// Removes the socket file if it is still the one the listener made, from the directory
    /// it was made in.
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        if let Some(File {
            dir,
            name,
            path,
            id,
            pid,
            handed,
        }) = self.0.take()
        {
            if pid != std::process::id() || (handed && !crate::handover::passed::ready_sent()) {
                return;
            }
            match crate::sys::stat_at(dir.as_fd(), &name) {
                Ok((dev, ino, _, _)) if (dev, ino) == id => {
                    if let Err(e) = crate::sys::unlink_at(dir.as_fd(), &name) {
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

/// Removes the socket file at `path` if it is the file `made` (device and inode) names
/// (through its directory's descriptor; best effort, logged at debug).
pub(crate) fn remove_if_made(path: &Path, made: (u64, u64)) {
    use std::os::fd::AsFd;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (Some(name), Ok(dir)) = (path.file_name(), std::fs::File::open(dir)) else {
        return;
    };
    match crate::sys::stat_at(dir.as_fd(), name) {
        Ok((dev, ino, true, _)) if (dev, ino) == made => {
            if let Err(e) = crate::sys::unlink_at(dir.as_fd(), name) {
                log::debug!("cannot remove {}: {e}", path.display());
            }
        }
        _ => log::debug!(
            "{} is not the socket file made for it: left alone",
            path.display()
        ),
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
/// The socket is bound at `path` itself, so the kernel's name for it (`getsockname`, what
/// a process it is handed to reads back) is the path clients use. On Linux its file is
/// made with `mode` by the bind itself ([`crate::sys::bind_with_mode`]): no path is changed
/// after the fact. Elsewhere the mode is set on the file found through a descriptor of its
/// directory (opened before the bind), if it is the socket the bind made, before the socket
/// listens: until then every connect is refused, so no client reaches it under a default
/// mode.
///
/// From before the bind until the socket listens, this holds an `flock` on the directory,
/// which every server of this library takes to bind there: another one that finds the file
/// meanwhile (not answering yet) waits, then finds it live, instead of removing it as
/// stale. A file already at `path` is removed only if it is a stale socket (see
/// [`replace_stale`]), and the bind is tried again.
fn bind_path(
    socket: &Socket,
    path: &Path,
    mode: Option<u32>,
    backlog: i32,
) -> Result<File, Failed> {
    use std::os::fd::AsFd;
    let name = path.file_name().ok_or_else(|| {
        (
            "bind",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            ),
        )
    })?;
    let parent = parent_of(path);
    let dir = Dir::open(parent).map_err(|e| ("open the socket's directory", e))?;
    let lock = dir.lock(parent);
    let addr = SockAddr::unix(path).map_err(|e| ("bind", e))?;
    let mut rounds = 0;
    loop {
        let bound = match mode {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Some(mode) => crate::sys::bind_with_mode(socket, &addr, mode),
            _ => socket.bind(&addr).map_err(|e| ("bind", e)),
        };
        match bound {
            Ok(()) => break,
            // A few rounds: the file may go (its server stopping) while it is looked at, or
            // a server that took no lock may have bound in between.
            Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse && rounds < 3 => {
                rounds += 1;
                replace_stale(&dir, name, path)?;
            }
            Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse => return Err(in_use(path)),
            Err(failed) => return Err(failed),
        }
    }
    let tampered = || {
        (
            "bind",
            io::Error::other(format!(
                "{} changed while it was being bound: the socket is not at that path",
                path.display()
            )),
        )
    };
    let (dev, ino, is_socket, uid) =
        crate::sys::stat_at(dir.fd.as_fd(), name).map_err(|_| tampered())?;
    // Ours from here: removed again if anything below fails (while it is still ours).
    let mut made = Made {
        dir: &dir,
        name,
        id: (dev, ino),
        armed: true,
    };
    // The path and the directory's descriptor name the same file: the bind went where the
    // descriptor is, not into a directory swapped onto the path.
    let by_path = std::fs::symlink_metadata(path).map_err(|_| tampered())?;
    if !is_socket || uid != crate::sys::euid() || (by_path.dev(), by_path.ino()) != (dev, ino) {
        return Err(tampered());
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    if let Some(mode) = mode {
        crate::sys::chmod_socket_at(dir.fd.as_fd(), name, mode, (dev, ino))
            .map_err(|e| ("set the mode", e))?;
    }
    socket.listen(backlog).map_err(|e| ("listen", e))?;
    made.armed = false;
    drop(made);
    drop(lock);
    Ok(File {
        dir: dir.fd,
        name: name.to_owned(),
        path: path.to_owned(),
        id: (dev, ino),
        pid: std::process::id(),
        handed: false,
    })
}

/// The socket file a bind has just made, removed (through its directory's descriptor, if it
/// is still that file) if the bind fails after all.
struct Made<'a> {
    dir: &'a Dir,
    name: &'a std::ffi::OsStr,
    id: (u64, u64),
    armed: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsFd;
        if self.armed
            && crate::sys::stat_at(self.dir.fd.as_fd(), self.name)
                .is_ok_and(|(dev, ino, _, _)| (dev, ino) == self.id)
        {
            let _ = crate::sys::unlink_at(self.dir.fd.as_fd(), self.name);
        }
    }
}

/// The error for a path a live server answers on.
fn in_use(path: &Path) -> Failed {
    (
        "bind",
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use: a server answers on it", path.display()),
        ),
    )
}

/// Something is at `name` in `dir` (`path`), where a bind wants to make its socket: removes
/// it if it is a stale socket (nothing answers on it), and returns `Ok` to have the bind
/// tried again (also when it went by itself meanwhile). Anything else stays: a live socket
/// (an `AddrInUse` error), a file that is not a socket. Everything is looked at and removed
/// in `dir`, through its descriptor: a directory swapped onto the path meanwhile cannot make
/// it look at one file and remove another.
fn replace_stale(dir: &Dir, name: &std::ffi::OsStr, path: &Path) -> Result<(), Failed> {
    use std::os::fd::AsFd;
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let (dev, ino, is_socket, _) = match crate::sys::stat_at(dir.fd.as_fd(), name) {
        Ok(found) => found,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(("stat", e)),
    };
    if !is_socket {
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
    match answers(&dir.path_to(name, path)) {
        Ok(true) => return Err(in_use(path)),
        Ok(false) => {}
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(("connect to the socket already there", e)),
    }
    // Still the socket that refused: removed. (Another put there meanwhile is looked at
    // again, by the next round.)
    match crate::sys::stat_at(dir.fd.as_fd(), name) {
        Ok((d, i, _, _)) if (d, i) == (dev, ino) => {}
        Ok(_) => return Ok(()),
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(("stat", e)),
    }
    log::info!(
        "{}: a stale socket (nothing answers on it): removed",
        path.display()
    );
    match crate::sys::unlink_at(dir.fd.as_fd(), name) {
        Ok(()) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(("remove the stale socket", e)),
    }
}

/// The longest a bind waits for another server's lock on a directory.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The directory a socket file is made in, opened before the bind.
struct Dir {
    fd: std::fs::File,
    /// Opened for reading, so it can be locked (not only found through: `O_PATH`).
    lockable: bool,
}

impl Dir {
    /// Opens directory `path` (a symlink to a directory is followed, as `/var/run` to
    /// `/run`); where this user may not read it (only search it), on Linux as a path-only
    /// descriptor.
    fn open(path: &Path) -> io::Result<Dir> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | flags)
                .open(path)
        };
        match open(0) {
            Ok(fd) => Ok(Dir { fd, lockable: true }),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(Dir {
                fd: open(libc::O_PATH)?,
                lockable: false,
            }),
            Err(e) => Err(e),
        }
    }

    /// An exclusive `flock` on the directory, held while the returned guard lives: waited
    /// for [`LOCK_WAIT`] at most. `None` (logged) when it cannot be had: a directory this
    /// user may not read, a file system without locks, or a holder that keeps it; the bind
    /// goes on without it (with the race it closes).
    fn lock(&self, path: &Path) -> Option<Locked<'_>> {
        if !self.lockable {
            log::debug!("{}: cannot be read, so not locked", path.display());
            return None;
        }
        let until = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match crate::sys::try_lock(&self.fd) {
                Ok(true) => return Some(Locked(&self.fd)),
                Ok(false) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Ok(false) => {
                    log::warn!(
                        "{}: another process holds a lock on this directory; binding without it",
                        path.display()
                    );
                    return None;
                }
                Err(e) => {
                    log::debug!("cannot lock {}: {e}", path.display());
                    return None;
                }
            }
        }
    }
}

impl Dir {
    /// A socket address that reaches `name` in this very directory: through the
    /// descriptor on Linux (`/proc/self/fd/N/NAME`) where that fits `sun_path`, else by
    /// `path`.
    fn path_to(&self, name: &std::ffi::OsStr, path: &Path) -> PathBuf {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::AsRawFd;
            let via = Path::new(&format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(name);
            if via.as_os_str().len() < 108 && via.parent().is_some_and(Path::is_dir) {
                return via;
            }
        }
        let _ = name;
        path.to_owned()
    }
}

/// A held `flock` on a [`Dir`]: released when dropped.
struct Locked<'a>(&'a std::fs::File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        crate::sys::unlock(self.0);
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
