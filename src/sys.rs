//! The platform calls the standard library, mio and socket2 do not wrap: interface names and
//! indexes (`if_nametoindex(3)`, `if_indextoname(3)`), the addresses the interfaces have
//! (`getifaddrs(3)`), a Unix-domain peer's credentials (`SO_PEERCRED`, `getpeereid(2)`),
//! taking an inherited descriptor and reading its identity (`fstat`), giving a Unix-domain
//! socket its mode as the kernel makes its file (`unshare(CLONE_FS)`, `umask`, `fchmod` on
//! Linux), and the calls relative to a directory descriptor that find, change and remove
//! that file (`fstatat`, `fchmodat`, `unlinkat`, `flock`), and the TLS handshake threads'
//! scheduling class (`gettid`, `sched_setscheduler`, Linux).
//!
//! This is the only module allowed `unsafe`. Every block states why it is sound. On platforms
//! without these calls (Windows, here) names are unsupported and a numeric zone must be used.

use std::io;
use std::net::IpAddr;
#[cfg(unix)]
use std::net::{Ipv4Addr, Ipv6Addr};

/// Makes the calling thread the least urgent to the scheduler (Linux: `SCHED_IDLE`), so a
/// thread of the loop's that wakes always preempts it at once. For the TLS handshake
/// threads: on a core they share with the loop, a request must not wait for a handshake's
/// key work to end its time slice. Elsewhere, or if refused, nothing changes.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
#[allow(unsafe_code)]
pub(crate) fn yield_to_the_loop() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads the `sched_param` it is given for the duration
        // of the call only (a valid, initialized local); pid 0 names the calling thread.
        // It has no other effect on memory, and a failure is only a return value.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            log::debug!(
                "a TLS handshake thread keeps its priority: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The calling thread's id for [`hurry`] (Linux: `gettid`; 0 elsewhere, where `hurry` does
/// nothing).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
#[allow(unsafe_code)]
pub(crate) fn thread_id() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: gettid takes no arguments, touches no memory and cannot fail.
        unsafe { libc::gettid() }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    0
}

/// Gives thread `tid` of this process (from [`thread_id`]) the ordinary scheduling class
/// back (Linux: `SCHED_OTHER`), undoing [`yield_to_the_loop`] for a handshake thread that
/// started a step and got no CPU since: it then competes for the core like any thread, and
/// the step ends. The thread calls `yield_to_the_loop` again after it. Whether it was
/// done: leaving `SCHED_IDLE` takes `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20), which an
/// unprivileged process lacks. Elsewhere nothing is done (the threads never yielded).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
#[allow(unsafe_code)]
pub(crate) fn hurry(tid: i32) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if tid <= 0 {
            return false;
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: as in `yield_to_the_loop`: a valid, initialized local read for the call
        // only. Memory is not involved otherwise; a wrong id would only make the call fail
        // or reschedule that thread (the pool calls it for a thread it knows to be in a
        // step, under the lock the thread takes to leave it).
        let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) };
        if rc != 0 {
            log::debug!(
                "a TLS handshake thread keeps its class: {}",
                io::Error::last_os_error()
            );
        }
        rc == 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = tid;
        false
    }
}

/// The scheduling class of thread `tid` of this process (`sched_getscheduler`): what the
/// handshake threads' tests check.
#[cfg(all(test, feature = "tls", any(target_os = "linux", target_os = "android")))]
#[allow(unsafe_code)]
pub(crate) fn class_of(tid: i32) -> i32 {
    // SAFETY: sched_getscheduler only reads the id it is given; a failure is -1.
    unsafe { libc::sched_getscheduler(tid) }
}

/// The index of the interface called `name`.
///
/// # Errors
///
/// `NotFound` when no interface has that name; `Unsupported` where the platform has no
/// interface names.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    use std::ffi::CString;
    let c_name = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name contains a NUL byte",
        )
    })?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call, and
    // if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        let os = io::Error::last_os_error();
        return Err(match os.raw_os_error() {
            // ENODEV/ENXIO, or no errno at all: the plain "no such interface".
            Some(libc::ENODEV) | Some(libc::ENXIO) | Some(0) | None => io::Error::new(
                io::ErrorKind::NotFound,
                format!("no network interface is called {name:?}"),
            ),
            Some(_) => os,
        });
    }
    Ok(index)
}

/// The name of interface `index`, or `None` when no interface has that index.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn interface_name(index: u32) -> Option<String> {
    use std::ffi::CStr;
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, the size if_indextoname requires; on success it
    // writes a NUL-terminated name of at most that length into it, and on failure returns NULL.
    let ret = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ret.is_null() {
        return None;
    }
    // SAFETY: if_indextoname succeeded, so `buf` holds a NUL-terminated string within its bounds.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Every address assigned to an interface of this host (tentative ones included: an address
/// in duplicate address detection is listed), or `None` where the list cannot be read.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn interface_addresses() -> Option<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocated into `list`, a valid place
    // for one pointer, or returns -1 and writes nothing.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is the list head or an `ifa_next` of the list getifaddrs returned,
        // which stays allocated until freeifaddrs below; non-null, so it points to an entry.
        let ifa = unsafe { &*entry };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null `ifa_addr` points to a sockaddr of the list whose storage
            // is as large as its family's sockaddr type (getifaddrs(3)); the family is read
            // first, and the address is read through the type that family names.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            found.extend(ip);
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `list` came from a successful getifaddrs and is freed once, after its last use.
    unsafe { libc::freeifaddrs(list) };
    Some(found)
}

/// See the Unix version: the list cannot be read here.
#[cfg(not(unix))]
pub(crate) fn interface_addresses() -> Option<Vec<IpAddr>> {
    None
}

/// The credentials of the peer of a connected Unix-domain socket: `SO_PEERCRED` on Linux
/// (uid, gid and pid), `getpeereid(2)` elsewhere (uid and gid).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn peer_credentials(
    stream: &impl std::os::fd::AsRawFd,
) -> io::Result<(u32, u32, Option<u32>)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the descriptor is a socket `stream` keeps open across the call; `cred` and
    // `len` are valid for writes, and `len` says how many bytes `cred` holds.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        cred.uid,
        cred.gid,
        u32::try_from(cred.pid).ok().filter(|&p| p != 0),
    ))
}

/// See the Linux version: `getpeereid(2)`, which says no pid.
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
#[allow(unsafe_code)]
pub(crate) fn peer_credentials(
    stream: &impl std::os::fd::AsRawFd,
) -> io::Result<(u32, u32, Option<u32>)> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: the descriptor is a socket `stream` keeps open across the call; `uid` and
    // `gid` are valid for writes.
    let rc = unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((uid, gid, None))
}

/// Checks that descriptor `fd`, which this process inherited, is open and 3 or above.
///
/// # Errors
///
/// `EBADF` when `fd` is not open, or is below 3.
#[cfg(unix)]
#[allow(unsafe_code)]
fn check_inherited(fd: i32) -> io::Result<()> {
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF for a
    // descriptor that is not open, and touches no memory of ours.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on descriptor `fd`, which this process inherited, borrowed for that call only,
/// once it is checked to be open and 3 or above.
///
/// # Errors
///
/// `EBADF` when `fd` is not open, or is below 3.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn with_inherited<T>(
    fd: i32,
    f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> T,
) -> io::Result<T> {
    check_inherited(fd)?;
    // SAFETY: `fd` is open (checked just now), and the borrow lives only as long as the
    // call of `f`, which cannot close it (a `BorrowedFd` does not own it). Nothing in the
    // library closes an inherited descriptor it has not taken, and this runs within one
    // `bind` call, before the descriptor is taken.
    Ok(f(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }))
}

/// Whether descriptor `fd` is non-blocking (`O_NONBLOCK`) and close-on-exec
/// (`FD_CLOEXEC`), in that order.
///
/// # Errors
///
/// The OS error of `fcntl`.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn flags(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL and F_GETFD only read flags of a descriptor the borrow keeps open;
    // no memory of ours is touched.
    let (status, fd_flags) = unsafe {
        (
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
            libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
        )
    };
    if status < 0 || fd_flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        status & libc::O_NONBLOCK != 0,
        fd_flags & libc::FD_CLOEXEC != 0,
    ))
}

/// Takes ownership of descriptor `fd`, which this process inherited, after checking that it
/// is open.
///
/// # Errors
///
/// `EBADF` (as an `io::Error`) when `fd` is not open, or is below 3.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn take_inherited(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    check_inherited(fd)?;
    // SAFETY: `fd` is open (checked just now) and 3 or above, so no standard stream. It was
    // handed to this process to listen on: by the service manager (LISTEN_FDS names it) or
    // by whoever started the process (the user wrote fd:N, which hands the descriptor to
    // the library: `SpecKind::Fd` documents that nothing else may own it). It was open
    // from the start of the bind call to here, so no socket the call opened can be on its
    // number, and the registry of taken descriptors (by number and inode) refuses a socket
    // the library already took: this OwnedFd is its only owner in the library and closes
    // it once.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The identity (device and inode) of open descriptor `fd` (`fstat`; no duplicate is
/// made, so it works with every descriptor in use).
///
/// # Errors
///
/// The OS error of `fstat`.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn identity(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open for the call (borrowed), and `st` points to memory the size of a
    // `stat`, which fstat fills when it succeeds (and only then is it read).
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Sets close-on-exec on descriptor `fd` if it is open, 3 or above, and a socket; nothing
/// else (a number `LISTEN_FDS` claims may hold a file of the application's own).
#[cfg(unix)]
pub(crate) fn set_cloexec_if_socket(fd: i32) {
    // Best effort: a descriptor that is not open has nothing to close on exec.
    let _ = with_inherited(fd, |fd| {
        let socket = socket2::SockRef::from(&fd);
        // SO_TYPE answers only for a socket (ENOTSOCK otherwise).
        socket.r#type().and_then(|_| socket.set_cloexec(true))
    });
}

/// The inode number of a pidfd of this process, where the kernel keeps pidfds in pidfs
/// (Linux 6.9 and later), which makes it a number no other process ever has: what
/// `LISTEN_PIDFDID` names. `None` where it cannot be had.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn own_pidfd_id() -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    /// PID_FS_MAGIC, from linux/magic.h.
    const PID_FS_MAGIC: i64 = 0x5049_4446;
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours; it
    // returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by pidfd_open, is open, and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fstatfs writes a statfs into the zeroed value it is given, which lives until
    // it returns; `fd` is open.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let statted = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } == 0;
    // `f_type`'s integer type differs between targets (__fsword_t): widened to compare.
    #[allow(clippy::useless_conversion)]
    if !statted || i64::from(fs.f_type) != PID_FS_MAGIC {
        return None;
    }
    std::fs::File::from(fd).metadata().ok().map(|m| m.ino())
}

/// See the Linux version: no pidfds here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn own_pidfd_id() -> Option<u64> {
    None
}

/// The effective user id of this process.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// `name` as a C string, for the calls below.
#[cfg(unix)]
fn c_name(name: &std::ffi::OsStr) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte"))
}

/// Sets the permission bits of `name`, an entry of directory `dir`, to `mode`, if it is
/// the socket `expected` names (device and inode) and this user's (anything else is refused,
/// and left alone), without following a symlink (`fstatat`, then `fchmodat`). Where the
/// kernel cannot make the file with its mode ([`bind_with_mode`] is Linux's), this is how
/// it is given one; an entry swapped between the two calls is the residual risk there.
///
/// # Errors
///
/// `InvalidData` when the entry is not that socket; the OS error otherwise.
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
#[allow(unsafe_code)]
pub(crate) fn chmod_socket_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    mode: u32,
    expected: (u64, u64),
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (dev, ino, is_socket, uid) = stat_at(dir, name)?;
    if !is_socket || uid != euid() || (dev, ino) != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the entry is not the socket just made: it was replaced",
        ));
    }
    let c = c_name(name)?;
    // SAFETY: `dir` is an open descriptor for the call (borrowed), `c` a NUL-terminated
    // string that outlives it; fchmodat reads them and writes no memory of ours.
    let r = unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The device and inode of `name`, an entry of directory `dir`, whether it is a socket, and
/// its owner (`fstatat`, not following a symlink).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn stat_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> io::Result<(u64, u64, bool, u32)> {
    use std::os::fd::AsRawFd;
    let name = c_name(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is open for the call, `name` NUL-terminated and alive, and `st` points
    // to memory the size of a `stat`, which fstatat fills when it succeeds (and only then
    // is it read).
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((
        st.st_dev as u64,
        st.st_ino as u64,
        st.st_mode & libc::S_IFMT == libc::S_IFSOCK,
        st.st_uid,
    ))
}

/// Releases an `flock` on `file` (best effort: closing it releases it too).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn unlock(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is open for the call; flock touches no memory of ours.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

/// Removes `name`, an entry of directory `dir` that is not a directory (`unlinkat`): in that
/// very directory, whatever its path has become.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn unlink_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = c_name(name)?;
    // SAFETY: `dir` is open for the call and `name` a NUL-terminated string that outlives
    // it; unlinkat reads them and writes no memory of ours.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds Unix-domain `socket` to `addr`, its file made with permission bits `mode` exactly,
/// whatever the process's umask: on a thread of its own that stops sharing the process's
/// file-system attributes (`unshare(CLONE_FS)`), sets its own umask to 0, and gives the
/// socket's inode the mode (`fchmod`), which Linux gives the file `bind` makes. No path is
/// ever changed after the fact, so nothing swapped in at the path can be given the mode.
///
/// # Errors
///
/// The step that failed (`unshare`, `fchmod`, `bind`) and its OS error.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn bind_with_mode(
    socket: &socket2::Socket,
    addr: &socket2::SockAddr,
    mode: u32,
) -> Result<(), (&'static str, io::Error)> {
    use std::os::fd::AsRawFd;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare(CLONE_FS) only gives this thread its own copy of the
                // process's root, working directory and umask (a thread may do it in a
                // multi-threaded process); it touches no memory of ours.
                if unsafe { libc::unshare(libc::CLONE_FS) } < 0 {
                    return Err(("unshare the umask", io::Error::last_os_error()));
                }
                // SAFETY: umask sets this thread's own umask now (see above) and cannot
                // fail.
                unsafe { libc::umask(0) };
                // SAFETY: fchmod on the socket's descriptor, open for the call; it reads no
                // memory of ours.
                if unsafe { libc::fchmod(socket.as_raw_fd(), mode as libc::mode_t) } < 0 {
                    return Err(("set the mode", io::Error::last_os_error()));
                }
                socket.bind(addr).map_err(|e| ("bind", e))
            })
            .join()
            .unwrap_or_else(|_| Err(("bind", io::Error::other("the binding thread panicked"))))
    })
}

/// Tries to take an exclusive `flock` on `file`, held until it is closed, without waiting:
/// `Ok(false)` when another open file holds one.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: `file` is open for the call; flock touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// See the Unix version: interface names are not supported here.
#[cfg(not(unix))]
pub(crate) fn interface_index(name: &str) -> io::Result<u32> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("interface names such as {name:?} are not supported on this platform; give the zone as a number, as in \"%2\""),
    ))
}

/// See the Unix version: interface names are not supported here.
#[cfg(not(unix))]
pub(crate) fn interface_name(_index: u32) -> Option<String> {
    None
}

// Linux only: these read the interfaces and credentials Linux gives (lo, SO_PEERCRED).
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The pidfd inode number is this process's for as long as it lives: asked twice, the
    /// same (where the kernel has pidfs at all).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_pidfd_id_of_this_process_is_stable() {
        assert_eq!(own_pidfd_id(), own_pidfd_id());
    }

    #[test]
    fn loopback_name_and_index_agree() {
        let index = interface_index("lo").expect("Linux always has an interface called lo");
        assert_eq!(interface_name(index).as_deref(), Some("lo"));
    }

    #[test]
    fn the_loopback_addresses_are_listed() {
        let all = interface_addresses().expect("getifaddrs works on Linux");
        assert!(all.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{all:?}");
    }

    #[test]
    fn unknown_interface_is_not_found_and_named() {
        let err = interface_index("nosuchif0").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nosuchif0"), "{err}");
        assert_eq!(interface_name(u32::MAX), None);
    }
}

/// Sets `SO_EXCLUSIVEADDRUSE` on `socket` (Windows): no other socket may then bind its
/// address and port, whatever options that one sets. Without it, another process that sets
/// `SO_REUSEADDR` can bind a port this server listens on and take its clients (Microsoft's
/// "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE").
#[cfg(windows)]
#[allow(unsafe_code)]
pub(crate) fn set_exclusive_address_use(socket: &socket2::Socket) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        setsockopt, WSAGetLastError, SOCKET_ERROR, SOL_SOCKET, SO_EXCLUSIVEADDRUSE,
    };
    let on: i32 = 1;
    // SAFETY: the socket handle is open for the duration of the call (`socket` borrows it);
    // setsockopt reads exactly `optlen` bytes from `optval`, which points to `on`, a live i32
    // of that size, and writes nothing.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_socket() as _,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&on as *const i32).cast(),
            std::mem::size_of::<i32>() as i32,
        )
    };
    if rc == SOCKET_ERROR {
        // SAFETY: WSAGetLastError reads the calling thread's last Winsock error; no memory.
        return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
    }
    Ok(())
}

/// A duplicate of `fd` at descriptor number `min` or above, close-on-exec
/// (`fcntl(F_DUPFD_CLOEXEC)`): for a hand-over, which moves the copies to 3, 4, … in the
/// successor, and must not find a copy already sitting on one of those numbers.
///
/// # Errors
///
/// The OS error of `fcntl` (`EMFILE`, `EINVAL` for a `min` past the limit).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn dup_at_least(
    fd: std::os::fd::BorrowedFd<'_>,
    min: i32,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor for the open one the borrow keeps
    // alive, touching no memory of ours; it returns the new number or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just made by fcntl, is open, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

/// Descriptors of `/dev/null` on every free number from 3 up to `past` (close-on-exec,
/// closed when dropped): while they are held, nothing the process opens lands below
/// `past`, in particular the pipe through which the standard library learns that a child's
/// `exec` failed, which the child's moves to `3..past` ([`pass_descriptors`]) must not
/// overwrite. (Another thread that closes a descriptor below `past` meanwhile reopens a
/// hole; the spawn that follows then reports a failed `exec` as an early end.)
///
/// # Errors
///
/// The OS error of opening `/dev/null` or of `fcntl`.
#[cfg(unix)]
pub(crate) fn fill_below(past: i32) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::{AsFd, AsRawFd};
    let null = std::fs::File::open("/dev/null")?;
    let mut held = Vec::new();
    loop {
        let copy = dup_at_least(null.as_fd(), 3)?;
        if copy.as_raw_fd() >= past {
            break;
        }
        held.push(copy);
    }
    if null.as_raw_fd() < past {
        held.push(null.into());
    }
    Ok(held)
}

/// Makes `command`'s child, between `fork` and `exec`, move each descriptor of `from` to
/// number `first + i` (`dup2`, whose copy is not close-on-exec, so it crosses `exec`), and
/// then mark every descriptor above those close-on-exec (Linux's `close_range` with
/// `CLOSE_RANGE_CLOEXEC`, where the kernel has it): only the passed descriptors cross.
/// Every number in `from` must be above `first + from.len()` (see [`dup_at_least`]), so
/// no `dup2` overwrites a descriptor still to be moved.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn pass_descriptors(command: &mut std::process::Command, from: Vec<i32>, first: i32) {
    use std::os::unix::process::CommandExt;
    debug_assert!(from.iter().all(|&fd| fd >= first + from.len() as i32));
    let past = first + from.len() as i32;
    // SAFETY: the closure runs in the child after fork, where only async-signal-safe calls
    // are allowed: it calls dup2 and close_range (system calls), reads the vector captured
    // before the fork (no allocation, no lock), and builds an io::Error from errno (a
    // plain value). The numbers it overwrites (`first..past`) are the child's copies of
    // whatever the parent had there, all close-on-exec (the standard library and this
    // library open everything close-on-exec), so nothing the child still needs before
    // exec is lost, provided the caller held every number below `past` open when the
    // child was made ([`fill_below`]): then the standard library's own pipe for a failed
    // exec is above them, and stays open until exec.
    unsafe {
        command.pre_exec(move || {
            for (i, &fd) in from.iter().enumerate() {
                if libc::dup2(fd, first + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                // Best effort: kernels before 5.11 lack it, and everything the library and
                // std open is close-on-exec anyway.
                let _ = libc::syscall(
                    libc::SYS_close_range,
                    past as libc::c_uint,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let _ = past;
            Ok(())
        });
    }
}

/// Sends SIGKILL to every process of process group `pgid` (a hand-over's successor, made
/// the leader of a group of its own, and whatever it started). Best effort.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        if pgid > 1 {
            // SAFETY: kill takes a process group (negative) and a signal by value and
            // touches no memory; `pgid` above 1 never names this process's own group by
            // accident (0) nor every process (-1).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Whether child `pid` has ended, without reaping it (`waitid` with `WNOWAIT`): its pid
/// stays its own until it is reaped.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn has_ended(pid: u32) -> bool {
    let pid = libc::id_t::from(pid);
    // SAFETY: a zeroed siginfo_t is a valid value of it (plain integers and unions of them).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, which lives across the call; WNOWAIT leaves the
    // child waitable, WNOHANG makes it return at once.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid reads the field waitid filled (0 when no child changed state).
    rc == 0 && unsafe { info.si_pid() } != 0
}

/// The process group of process `pid`, while it lives.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn group_of(pid: u32) -> Option<i32> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: getpgid takes a pid by value and touches no memory of ours; a failure (no such
    // process) is only a return value.
    let group = unsafe { libc::getpgid(pid) };
    (group > 0).then_some(group)
}

/// Moves this process into process group `group` (best effort: a session leader, or a
/// group in another session or with no process left, is refused by the kernel, and nothing
/// changes).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn join_group(group: i32) {
    // SAFETY: setpgid takes ids by value and touches no memory of ours; a failure is only
    // a return value.
    unsafe {
        libc::setpgid(0, group);
    }
}

/// Sends `bytes` on connected datagram socket `socket` with descriptor `fd` attached
/// (`SCM_RIGHTS`): how a service manager's descriptor store is given a socket.
///
/// # Errors
///
/// The OS error of `sendmsg`.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn send_with_fd(
    socket: &std::os::unix::net::UnixDatagram,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // A control buffer for one descriptor, aligned for cmsghdr (u64 words).
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE computes a size from a constant; no memory is touched.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    assert!(
        space <= std::mem::size_of_val(&control),
        "the control buffer is too small"
    );
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: a zeroed msghdr is a valid value of it (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to `control`, which holds `space` bytes (checked above), so
    // CMSG_FIRSTHDR returns a pointer inside it, at which one cmsghdr and the int after it
    // (CMSG_DATA) fit; they are written with unaligned writes. sendmsg reads `msg`, the
    // iovec (which points to `bytes`, alive and only read) and `control`, all alive for
    // the call; `raw` is an open descriptor the borrow keeps open.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        loop {
            if libc::sendmsg(socket.as_raw_fd(), &msg, 0) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The pid of this process's parent.
#[cfg(unix)]
pub(crate) fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}
