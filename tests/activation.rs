//! Inherited sockets: `fd:N` in this process (the descriptor is handed over with
//! `into_raw_fd`, so nothing else owns it), and `sd-listen` in a child, the echo example,
//! started the way a service manager starts it: sockets on fd 3 and up, `LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`; then by the real `systemd-socket-activate` (Debian's
//! `systemd` package; a test that needs it, or `socat`, skips with one line where it is
//! missing, and `.ci/run` requires them) and with a real notify socket.
//!
//! Linux only: socket activation is systemd's, and the checks read /proc.

#![cfg(target_os = "linux")]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dualstack::{Error, InheritErrorKind, ListenAddr, ListenConfig, Server, SocketMode};
use dualstack_support::Tool;
use util::{Recorder, Running, TempDir};

/// Whether `fd` is an open descriptor of this process.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags and changes nothing; any int is safe to
    // pass (an unused one gives EBADF).
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The inherit error `specs` get, or a panic naming what happened instead.
#[track_caller]
fn inherit_error(specs: &[String]) -> dualstack::InheritError {
    match ListenConfig::new().bind_all(specs) {
        Err(Error::Inherit(e)) => e,
        Err(other) => panic!("{specs:?}: another error: {other}"),
        Ok(bound) => panic!("{specs:?} bound: {:?}", bound.listeners()),
    }
}

#[test]
fn a_blocking_inherited_tcp_listener_serves_client_after_client() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap(); // blocking, as systemd passes it
    let addr = listener.local_addr().unwrap();
    let fd = listener.into_raw_fd();
    let server = Running::start(
        Server::builder().listen(format!("fd:{fd}")),
        Recorder::default(),
    );
    assert_eq!(server.listeners[0].local_addr, ListenAddr::Ip(addr));
    assert_eq!(server.listeners[0].to_string(), format!("{addr} (ipv4)"));
    // A listener left blocking would serve the first and then hang in accept.
    for round in 0..3 {
        let mut client = util::connect(addr);
        assert_eq!(
            util::round_trip(&mut client, b"inherited"),
            b"inherited",
            "client {round}"
        );
    }
    // The same socket (not just a descriptor number, which a parallel test may reuse at
    // once) is gone once the server is.
    let socket_at = |fd: RawFd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let ours = socket_at(fd).expect("the server holds it");
    drop(server);
    assert_ne!(
        socket_at(fd),
        Some(ours),
        "the descriptor outlived the server that took it"
    );
}

/// Issue #16: an inherited socket is a duplicate the service manager keeps too. Taking it
/// makes it non-blocking and close-on-exec; stopping closes the server's descriptor but
/// never `shutdown()`s the socket, which would end the manager's listening socket too.
#[test]
fn a_taken_socket_is_nonblocking_close_on_exec_and_never_shut_down() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let managers_copy = listener.try_clone().unwrap(); // what systemd keeps
    let fd = listener.into_raw_fd();
    // SAFETY: F_SETFD / F_GETFL / F_GETFD read or set the flags of `fd`, which this test
    // owns until the server takes it; cleared first, as a launcher passes it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let server = Running::start(
        Server::builder().listen(format!("fd:{fd}")),
        Recorder::default(),
    );
    // SAFETY: as above; the server holds the descriptor open while it runs.
    let (status, fd_flags) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    };
    assert_ne!(status & libc::O_NONBLOCK, 0, "not made non-blocking");
    assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "not made close-on-exec");
    let mut client = util::connect(addr);
    assert_eq!(util::round_trip(&mut client, b"x"), b"x");
    drop(client);
    server.stop();
    // The manager's copy still listens: a client gets in and it accepts (blocking, with
    // the socket's flags now non-blocking: so retry on WouldBlock for a bounded time).
    let _client = util::connect(addr);
    let deadline = Instant::now() + util::TIMEOUT;
    loop {
        match managers_copy.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("the manager's copy no longer accepts: {e}"),
        }
    }
}

#[test]
fn an_inherited_ipv6_socket_reports_how_it_was_made() {
    if !util::has_ipv6() {
        return;
    }
    for (only_v6, mode) in [(false, SocketMode::DualStack), (true, SocketMode::Ipv6Only)] {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        socket.set_only_v6(only_v6).unwrap();
        socket
            .bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(16).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let fd = socket.into_raw_fd();
        let bound = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
        let listener = &bound.listeners()[0];
        assert_eq!(listener.mode(), mode);
        assert_eq!(listener.local_addr().to_string(), format!("[::]:{port}"));
        // The dual-stack one takes IPv4 clients, the IPv6-only one does not.
        let v4 =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), util::TIMEOUT);
        assert_eq!(v4.is_ok(), !only_v6, "{mode}");
    }
}

#[test]
fn an_inherited_unix_listener_serves_and_its_file_is_not_ours_to_remove() {
    let dir = TempDir::new("inherit-unix");
    let path = dir.join("passed.sock");
    let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
    let server = Running::start(
        Server::builder().listen(format!("fd:{fd}")),
        Recorder::default(),
    );
    assert_eq!(
        server.listeners[0].to_string(),
        format!("unix:{} (unix)", path.display())
    );
    let mut client = UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    client.write_all(b"u").unwrap();
    let mut back = [0; 1];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"u");
    server.stop();
    assert!(
        path.exists(),
        "the file of a socket we were handed was removed"
    );
}

#[test]
fn descriptors_that_are_not_listening_stream_sockets_are_refused_and_left_open() {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) just opened both, and nothing else owns them.
    let _pipe_owners = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unlistened =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    unlistened
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap(); // what systemd's Accept=yes passes

    let cases: [(RawFd, InheritErrorKind, &str); 4] = [
        (pipe[0], InheritErrorKind::NotASocket, "not a socket"),
        (
            udp.as_raw_fd(),
            InheritErrorKind::NotStream,
            "not a stream socket",
        ),
        (
            unlistened.as_raw_fd(),
            InheritErrorKind::NotListening,
            "not listening",
        ),
        (
            accepted.as_raw_fd(),
            InheritErrorKind::NotListening,
            "Accept=yes",
        ),
    ];
    for (fd, kind, text) in cases {
        let err = inherit_error(&[format!("fd:{fd}")]);
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(err.fd(), Some(fd));
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot listen on \"fd:{fd}\": fd {fd}: ")),
            "{message}"
        );
        assert!(message.contains(text), "{message}");
        assert!(is_open(fd), "a refused descriptor was closed: {message}");
    }
    // Refused descriptors were not taken: once fixed, the same descriptor can be.
    unlistened.listen(4).unwrap();
    let fd = unlistened.into_raw_fd();
    assert!(ListenConfig::new().bind(format!("fd:{fd}")).is_ok());
}

#[test]
fn a_descriptor_that_is_not_open_is_named() {
    let err = inherit_error(&["fd:999999".to_owned()]);
    assert_eq!(err.kind(), InheritErrorKind::NotOpen);
    assert!(
        err.to_string()
            .contains("fd 999999: not an open descriptor"),
        "{err}"
    );
}

#[test]
fn one_descriptor_named_twice_is_an_error_not_two_listeners() {
    let fd = TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
    let err = inherit_error(&[format!("fd:{fd}"), format!("fd:{fd}")]);
    assert_eq!(err.kind(), InheritErrorKind::TakenTwice, "{err}");
    // Nothing was taken by the failed call: the descriptor is still whole, and one bind
    // takes it; a second bind of the same descriptor is refused.
    let bound = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
    let again = inherit_error(&[format!("fd:{fd}")]);
    assert_eq!(again.kind(), InheritErrorKind::TakenTwice, "{again}");
    drop(bound);
}

/// A hostile review: `fd:N` naming a socket the library itself opened (a config mistake, or
/// a number reused from an earlier bind) made a second owner of it; when both were dropped
/// the descriptor was closed twice, the second time under a file opened meanwhile. Refused
/// while the library's socket is open (by number and inode: another socket at the number
/// later is another socket, as for taken descriptors).
#[test]
fn fd_naming_a_socket_the_library_opened_is_refused() {
    let first = ListenConfig::new().bind("127.0.0.1:0").unwrap();
    let fd = first.listeners()[0].as_raw_fd();
    let err = inherit_error(&[format!("fd:{fd}")]);
    assert_eq!(err.kind(), InheritErrorKind::TakenTwice, "{err}");
    assert!(err.to_string().contains("the library opened"), "{err}");
}

/// A hostile review: a listener handed to the application (`into_tcp`) is the
/// application's, which may hand it to `fd:N`; the library no longer calls it its own.
#[test]
fn a_listener_given_to_the_application_may_come_back_as_fd_n() {
    let bound = ListenConfig::new().bind("127.0.0.1:0").unwrap();
    let listener = bound.into_parts().0.remove(0).into_tcp().unwrap();
    let fd = std::net::TcpListener::from(OwnedFd::from(listener)).into_raw_fd();
    let back = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
    assert_eq!(back.listeners().len(), 1);
}

#[test]
fn inherited_and_own_sockets_mix_in_one_list() {
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let passed_addr = passed.local_addr().unwrap();
    let fd = passed.into_raw_fd();
    let dir = TempDir::new("inherit-mix");
    let path = dir.join("mix.sock");
    let server = Running::start(
        Server::builder()
            .listen("127.0.0.1:0")
            .listen(format!("fd:{fd}"))
            .listen(format!("unix:{}", path.display())),
        Recorder::default(),
    );
    let shown: Vec<String> = server.listeners.iter().map(|l| l.to_string()).collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert!(
        shown.contains(&format!("{passed_addr} (ipv4)")),
        "{shown:?}"
    );
    assert!(
        shown.contains(&format!("unix:{} (unix)", path.display())),
        "{shown:?}"
    );
    // Each of the three serves: two over TCP, one over the Unix socket.
    let mut tcp = 0;
    for i in 0..3 {
        if let Some(addr) = server.listeners[i].connect_addr().ip() {
            let mut c = util::connect(addr);
            assert_eq!(util::round_trip(&mut c, b"mix"), b"mix");
            tcp += 1;
        }
    }
    assert_eq!(tcp, 2);
    let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
    u.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    u.write_all(b"mix").unwrap();
    let mut back = [0; 3];
    u.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"mix");
}

// ---- A child started the way a service manager starts one ----

/// The path of the echo example, freshly built.
fn echo_binary() -> PathBuf {
    util::example("echo")
}

/// A child process and what it prints.
struct Launched {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Launched {
    /// The lines it prints on stdout until 300 ms pass without one (at most [`util::TIMEOUT`]
    /// for the first).
    fn lines(&self) -> Vec<String> {
        read_lines(&self.stdout)
    }

    /// Waits for it to exit; its status code and everything on stderr.
    fn exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + util::TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Everything it wrote: until the reader sees the pipe's end (bounded).
        let mut stderr = Vec::new();
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            stderr.push(line);
        }
        (status.code(), stderr.join("\n"))
    }

    fn terminate(&self) {
        // SAFETY: kill(2) with the PID of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Ok(line) = rx.recv_timeout(util::TIMEOUT) {
        lines.push(line);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            lines.push(line);
        }
    }
    lines
}

fn pipe_lines(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn spawn(mut command: Command) -> Launched {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = pipe_lines(child.stdout.take().unwrap());
    let stderr = pipe_lines(child.stderr.take().unwrap());
    Launched {
        child,
        stdout,
        stderr,
    }
}

/// How `LISTEN_PID` is set for the child.
enum Pid {
    /// To the child's own pid: a shell sets it to `$$` and execs the server (same pid).
    Child,
    /// To another process's.
    Other,
    /// Not at all.
    Unset,
}

/// Puts `passed` on descriptors 3, 4, … of the child `command` starts (without
/// close-on-exec), and nothing on the eight after them, as a service manager leaves them.
fn pass_fds(command: &mut Command, passed: &[RawFd]) {
    assert!(passed.len() <= 8, "at most 8 descriptors");
    let mut fds = [-1; 8];
    fds[..passed.len()].copy_from_slice(passed);
    let count = passed.len();
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl, dup2
    // and close, which are async-signal-safe; it allocates nothing (`fds` is a copied
    // array) and takes no lock.
    unsafe {
        command.pre_exec(move || {
            // First out of the way (close-on-exec copies from 100 up), so that moving one onto
            // 3 cannot clobber another that happens to be there.
            let mut high = [-1; 8];
            for i in 0..count {
                high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, &fd) in (3..).zip(&high[..count]) {
                // dup2 clears close-on-exec on the copy: it survives the exec.
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Nothing on the descriptors after them, as a service manager leaves it.
            for fd in 3 + count as RawFd..3 + count as RawFd + 8 {
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// The echo example with `passed` on fd 3, 4, … (and nothing else there), `LISTEN_FDS`,
/// `names` as `LISTEN_FDNAMES` if given, and `args`.
fn activated(passed: &[RawFd], names: Option<&str>, pid: Pid, args: &[&str]) -> Launched {
    let mut command = Command::new("sh");
    let script = match pid {
        Pid::Child => "LISTEN_PID=$$ exec \"$0\" \"$@\"",
        Pid::Other => "LISTEN_PID=1 exec \"$0\" \"$@\"",
        Pid::Unset => "exec \"$0\" \"$@\"",
    };
    command
        .arg("-c")
        .arg(script)
        .arg(echo_binary())
        .args(args)
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .env("LISTEN_FDS", passed.len().to_string());
    match names {
        Some(names) => command.env("LISTEN_FDNAMES", names),
        None => command.env_remove("LISTEN_FDNAMES"),
    };
    pass_fds(&mut command, passed);
    spawn(command)
}

fn listener(addr: &str) -> TcpListener {
    TcpListener::bind(addr).unwrap()
}

fn addr_of(line: &str) -> SocketAddr {
    dualstack_support::parse_listening_line(line)
        .unwrap_or_else(|| panic!("not a listening line: {line}"))
        .0
}

#[test]
fn sd_listen_takes_every_passed_socket_and_a_name_picks_some() {
    let v4 = listener("127.0.0.1:0");
    let v4_addr = v4.local_addr().unwrap();
    let other = listener("127.0.0.1:0");
    let other_addr = other.local_addr().unwrap();
    let fds = [v4.as_raw_fd(), other.as_raw_fd()];

    let all = activated(&fds, Some("a:b"), Pid::Child, &["sd-listen"]);
    let lines = all.lines();
    assert_eq!(
        lines,
        [
            format!("listening on {v4_addr} (ipv4)"),
            format!("listening on {other_addr} (ipv4)")
        ]
    );
    for addr in [v4_addr, other_addr] {
        let mut c = util::connect(addr);
        assert_eq!(util::round_trip(&mut c, b"activated"), b"activated");
    }
    all.terminate();
    assert_eq!(all.exit().0, Some(0));

    let named = activated(&fds, Some("a:b"), Pid::Child, &["sd-listen:b"]);
    assert_eq!(named.lines(), [format!("listening on {other_addr} (ipv4)")]);
    // Fd 3 was passed and not taken: close-on-exec all the same, as sd_listen_fds(3) does.
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", named.child.id())).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .unwrap();
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "fd 3 flags {flags:o}");
    let mut c = util::connect(other_addr);
    assert_eq!(util::round_trip(&mut c, b"b only"), b"b only");
    named.terminate();
    assert_eq!(named.exit().0, Some(0));

    // A name may repeat (several ListenStream= in one unit share FileDescriptorName=): all.
    let third = listener("127.0.0.1:0");
    let third_addr = third.local_addr().unwrap();
    let fds = [v4.as_raw_fd(), other.as_raw_fd(), third.as_raw_fd()];
    let repeated = activated(&fds, Some("web:admin:web"), Pid::Child, &["sd-listen:web"]);
    assert_eq!(
        repeated.lines(),
        [
            format!("listening on {v4_addr} (ipv4)"),
            format!("listening on {third_addr} (ipv4)")
        ]
    );
    repeated.terminate();
    assert_eq!(repeated.exit().0, Some(0));
}

#[test]
fn an_absent_listen_pid_is_accepted_and_another_process_is_refused() {
    let l = listener("127.0.0.1:0");
    let unset = activated(&[l.as_raw_fd()], None, Pid::Unset, &["sd-listen"]);
    assert_eq!(unset.lines().len(), 1, "LISTEN_PID unset: served");
    unset.terminate();
    assert_eq!(unset.exit().0, Some(0));

    let other = activated(&[l.as_raw_fd()], None, Pid::Other, &["sd-listen"]);
    let (code, stderr) = other.exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("LISTEN_PID is 1"), "{stderr}");
}

#[test]
fn activation_errors_exit_2_with_one_clear_line() {
    let l = listener("127.0.0.1:0");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    /// Passed descriptors, their names, the example's arguments, what stderr must say.
    type Case<'a> = (Vec<RawFd>, Option<&'a str>, &'a [&'a str], &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![l.as_raw_fd()],
            Some("web"),
            &["sd-listen:admin"],
            "no socket named \"admin\" (LISTEN_FDNAMES: web)",
        ),
        (
            vec![udp.as_raw_fd()],
            None,
            &["sd-listen"],
            "fd 3: not a stream socket",
        ),
        (
            vec![l.as_raw_fd()],
            None,
            &["sd-listen", "fd:3"],
            "names this descriptor too",
        ),
        // sd_listen_fds refuses a count of 0 (EINVAL), and so does this.
        (
            vec![],
            None,
            &["sd-listen"],
            "LISTEN_FDS \"0\" is not a count",
        ),
        // Taken before any socket of our own is opened: the TCP socket of the first spec
        // cannot land on the free fd 3 and be taken as the passed one.
        (
            vec![],
            None,
            &["127.0.0.1:0", "fd:3"],
            "fd 3: not an open descriptor",
        ),
    ];
    for (fds, names, args, text) in cases {
        let child = activated(&fds, names, Pid::Child, args);
        let (code, stderr) = child.exit();
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(text), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    // Not activated at all.
    let mut command = Command::new(echo_binary());
    command
        .arg("sd-listen")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    let (code, stderr) = spawn(command).exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("LISTEN_FDS is not set"), "{stderr}");
}

/// Receives datagrams on a notify socket until `want` arrives or the timeout passes.
fn wait_for_state(socket: &UnixDatagram, want: &str) -> Vec<String> {
    socket.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !got.iter().any(|g: &String| g.lines().any(|l| l == want)) {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("no {want} on the notify socket ({e}); got {got:?}"),
        }
    }
    got
}

#[test]
fn socat_as_the_notify_socket_hears_ready() {
    if !Tool::SOCAT.usable() {
        return;
    }
    let dir = TempDir::new("notify-socat");
    let path = dir.join("notify.sock");
    let mut socat = Command::new("socat")
        .args(["-u", &format!("UNIX-RECV:{}", path.display()), "STDOUT"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start socat (is it installed?)");
    let heard = pipe_lines(socat.stdout.take().unwrap());
    let deadline = Instant::now() + util::TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "socat made no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut command = Command::new(echo_binary());
    command.arg("127.0.0.1:0").env("NOTIFY_SOCKET", &path);
    let child = spawn(command);
    let mut lines: Vec<String> = Vec::new();
    while !lines.iter().any(|l| l == "READY=1") {
        match heard.recv_timeout(util::TIMEOUT) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("socat heard no READY=1: {lines:?}"),
        }
    }
    // The datagram's last line has no newline: socat's output ends it.
    let _ = socat.kill();
    let _ = socat.wait();
    lines.extend(heard.iter());
    let status = format!("STATUS={}", child.lines()[0]);
    assert!(
        lines.contains(&status),
        "socat heard {lines:?}, not {status}"
    );
}

#[test]
fn the_notify_socket_hears_ready_status_and_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let abstract_name = format!("dualstack-notify-{}", std::process::id());
    let by_path = UnixDatagram::bind(&path).unwrap();
    let by_name = {
        use std::os::linux::net::SocketAddrExt;
        UnixDatagram::bind_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    for (target, socket) in [
        (path.display().to_string(), &by_path),
        (format!("@{abstract_name}"), &by_name),
    ] {
        let mut command = Command::new(echo_binary());
        command.arg("127.0.0.1:0").env("NOTIFY_SOCKET", &target);
        let child = spawn(command);
        let lines = child.lines();
        let ready = wait_for_state(socket, "READY=1");
        let status = format!("STATUS={}", lines[0]);
        assert!(
            ready.iter().any(|d| d.lines().any(|l| l == status)),
            "{target}: {ready:?} lacks {status}"
        );
        child.terminate();
        wait_for_state(socket, "STOPPING=1");
        assert_eq!(child.exit().0, Some(0));
    }
}

// ---- The real launcher ----

/// A port free on both loopbacks right now (the launcher needs a number).
fn free_port() -> u16 {
    loop {
        let v4 = listener("127.0.0.1:0");
        let port = v4.local_addr().unwrap().port();
        if TcpListener::bind(("::1", port)).is_ok() || !util::has_ipv6() {
            return port;
        }
    }
}

/// `systemd-socket-activate` with `args`, running the echo example with `echo_args`; ready
/// once it has said it listens on every `-l`.
fn socket_activate(args: &[String], echo_args: &[&str]) -> Launched {
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(args)
        .arg(echo_binary())
        .args(echo_args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET");
    let launched = spawn(command);
    let wanted = args.iter().filter(|a| *a == "-l").count();
    let deadline = Instant::now() + util::TIMEOUT;
    let mut said = 0;
    while said < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        match launched.stderr.recv_timeout(left) {
            Ok(line) if line.starts_with("Listening on") => said += 1,
            Ok(_) => {}
            Err(_) => panic!("systemd-socket-activate did not start listening"),
        }
    }
    launched
}

#[test]
fn systemd_socket_activate_passes_two_named_sockets_and_both_echo() {
    if !Tool::SOCKET_ACTIVATE.usable() {
        return;
    }
    if !util::has_ipv6() {
        return;
    }
    let port = free_port();
    let args: Vec<String> = [
        "-l".to_owned(),
        format!("127.0.0.1:{port}"),
        "-l".to_owned(),
        format!("[::1]:{port}"),
        "--fdname=a:b".to_owned(),
    ]
    .into();
    let launched = socket_activate(&args, &["sd-listen"]);
    // Version 252 execs the server on the first connection, with that one queued.
    let mut first = util::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(util::round_trip(&mut first, b"first"), b"first");
    let lines = launched.lines();
    let addrs: Vec<SocketAddr> = lines.iter().map(|l| addr_of(l)).collect();
    assert_eq!(
        addrs,
        [
            SocketAddr::from(([127, 0, 0, 1], port)),
            format!("[::1]:{port}").parse().unwrap()
        ]
    );
    let mut v6 = util::connect(addrs[1]);
    assert_eq!(util::round_trip(&mut v6, b"second"), b"second");
    launched.terminate();
    assert_eq!(launched.exit().0, Some(0));

    let launched = socket_activate(&args, &["sd-listen:b"]);
    let mut only = util::connect(format!("[::1]:{port}").parse::<SocketAddr>().unwrap());
    assert_eq!(util::round_trip(&mut only, b"b"), b"b");
    assert_eq!(
        launched.lines(),
        [format!("listening on [::1]:{port} (ipv6-only)")]
    );
    launched.terminate();
    assert_eq!(launched.exit().0, Some(0));
}

#[test]
fn systemd_socket_activate_wildcard_is_dual_stack_and_reported_so() {
    if !Tool::SOCKET_ACTIVATE.usable() {
        return;
    }
    if !util::has_ipv6() {
        return;
    }
    let port = free_port();
    let launched = socket_activate(&["-l".to_owned(), port.to_string()], &["sd-listen"]);
    let mut v4 = util::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(util::round_trip(&mut v4, b"4"), b"4");
    assert_eq!(
        launched.lines(),
        [format!("listening on [::]:{port} (dual-stack)")]
    );
    launched.terminate();
    assert_eq!(launched.exit().0, Some(0));
}

#[test]
fn systemd_socket_activate_accept_mode_connections_are_refused() {
    if !Tool::SOCKET_ACTIVATE.usable() {
        return;
    }
    let port = free_port();
    let launched = socket_activate(
        &[
            "-a".to_owned(),
            "-l".to_owned(),
            format!("127.0.0.1:{port}"),
        ],
        &["sd-listen"],
    );
    let mut c = util::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let mut buf = [0; 1];
    // The server exits on the connection socket it was given: the client sees the end.
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    let deadline = Instant::now() + util::TIMEOUT;
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = launched
            .stderr
            .recv_timeout(left)
            .expect("the server's error line");
        if line.contains("cannot listen on") {
            break line;
        }
    };
    assert!(line.contains("fd 3: the socket is not listening"), "{line}");
}

/// Review of #16: a bind that failed on a later spec closed the inherited descriptors it
/// had already taken, and they could never be named again.
#[test]
fn a_failed_bind_leaves_inherited_descriptors_open_for_another_try() {
    let fd = listener("127.0.0.1:0").into_raw_fd();
    let err = ListenConfig::new()
        .bind_all([
            format!("fd:{fd}"),
            "unix:/nonexistent-dir/x.sock".to_owned(),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/x.sock"), "{err}");
    assert!(is_open(fd), "the failed call closed fd {fd}");
    let bound = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
    assert_eq!(bound.listeners().len(), 1);
}

// ---- This test binary as the activated process ----

/// Set in a child this file starts from its own binary: the child test runs only then.
const CHILD_ENV: &str = "DUALSTACK_ACTIVATION_CHILD";

/// Runs test `name` of this binary in a child with `passed` on descriptors 3, 4, … (each
/// without close-on-exec, nothing after them), `LISTEN_FDS` counting them and `env` set;
/// returns whether it passed, and its output.
fn child_test(name: &str, passed: &[RawFd], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env("LISTEN_FDS", passed.len().to_string())
        .envs(env.iter().copied());
    pass_fds(&mut command, passed);
    let out = command.output().expect("start this test binary as a child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Issue #21, item 6: `close_passed_on_exec` set close-on-exec on every number
/// `LISTEN_FDS` claimed, so a file of the application's own at a claimed number (here a
/// pipe on fd 4, which `LISTEN_FDS=2` claims though only fd 3 is a passed socket) was closed
/// in every child the application started. Only sockets are touched now.
#[test]
fn only_passed_sockets_are_made_close_on_exec() {
    let socket = listener("127.0.0.1:0");
    let (read_end, write_end) = std::io::pipe().unwrap();
    let (passed, text) = child_test(
        "child_binds_sd_listen_a_and_leaves_fd_4_alone",
        &[socket.as_raw_fd(), read_end.as_raw_fd()],
        &[("LISTEN_FDNAMES", "a:b")],
    );
    drop(write_end);
    assert!(passed, "the child failed:\n{text}");
    assert!(text.contains("fd 4 left as it was"), "{text}");
}

#[test]
#[ignore = "run by only_passed_sockets_are_made_close_on_exec, in a child it starts"]
fn child_binds_sd_listen_a_and_leaves_fd_4_alone() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cloexec = |fd: RawFd| {
        // SAFETY: F_GETFD reads the flags of a descriptor number; no memory is touched.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0, "fd {fd} is not open");
        flags & libc::FD_CLOEXEC != 0
    };
    assert!(
        !cloexec(3) && !cloexec(4),
        "the parent set them up that way"
    );
    let bound = ListenConfig::new().bind("sd-listen:a").unwrap();
    assert_eq!(bound.listeners().len(), 1);
    assert!(
        cloexec(3),
        "the passed socket must not reach a child of ours"
    );
    assert!(!cloexec(4), "fd 4 is not a socket: not ours to change");
    println!("fd 4 left as it was");
}

// ---- Issue #21, items 2 to 4 ----

/// Issue #21, item 2: two threads binding the same `fd:N` at once both succeeded in about
/// 1.6 % of rounds (the registry was looked up at check time and written only when the
/// descriptor was taken): two listeners owned one descriptor. The reservation is now made
/// in the same hold of the lock as the look-up: exactly one bind wins, every round.
#[test]
fn two_threads_binding_one_descriptor_never_both_own_it() {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::{Arc, Barrier};
    const ROUNDS: usize = 2000;
    let fd = Arc::new(AtomicI32::new(-1));
    let (start, end) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
    let (tx, results) = mpsc::channel();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (fd, start, end, tx) = (fd.clone(), start.clone(), end.clone(), tx.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    start.wait();
                    let spec = format!("fd:{}", fd.load(Ordering::SeqCst));
                    let (won, bound) = match ListenConfig::new().bind(spec.as_str()) {
                        Ok(bound) => (Ok(()), Some(bound)),
                        Err(Error::Inherit(e)) => (Err(e.kind()), None),
                        Err(e) => panic!("{spec}: {e}"),
                    };
                    tx.send(won).unwrap();
                    // Held until both have tried; then given up without being closed, so
                    // that a round the bug wins twice cannot close the descriptor twice.
                    end.wait();
                    if let Some(bound) = bound {
                        let l = bound.into_parts().0.remove(0).into_tcp().unwrap();
                        let _ = OwnedFd::from(l).into_raw_fd();
                    }
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        fd.store(socket.as_raw_fd(), Ordering::SeqCst);
        start.wait();
        let outcomes = [results.recv().unwrap(), results.recv().unwrap()];
        end.wait();
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.contains(&Err(InheritErrorKind::TakenTwice)),
            "round {round}: {outcomes:?}"
        );
        drop(socket); // closed once, here
    }
    for w in workers {
        w.join().unwrap();
    }
}

/// Issue #21, item 2: `fd:N` could name a socket another thread's bind had just opened
/// (recorded as the library's only when that bind ended), and take it: two owners. A thread
/// binding the library's own sockets over and over, and one taking `fd:N` for every number
/// they may be on: in a child, where no other listening socket exists, so every success is
/// a theft.
#[test]
fn fd_n_never_takes_a_socket_another_thread_is_binding() {
    let (passed, text) = child_test("child_races_fd_n_against_own_binds", &[], &[]);
    assert!(passed, "the child failed:\n{text}");
    assert!(text.contains("binds raced"), "{text}");
}

#[test]
#[ignore = "run by fd_n_never_takes_a_socket_another_thread_is_binding, in a child it starts"]
fn child_races_fd_n_against_own_binds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let dir = TempDir::new("race-own");
    let path = dir.join("own.sock");
    let done = Arc::new(AtomicBool::new(false));
    let binder = {
        let done = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut binds = 0;
            while binds < 4000 && started.elapsed() < Duration::from_secs(3) {
                let spec = format!("unix:{}", path.display());
                let bound = ListenConfig::new()
                    .bind_all(["127.0.0.1:0", spec.as_str()])
                    .unwrap();
                drop(bound);
                binds += 1;
            }
            done.store(true, Ordering::SeqCst);
            binds
        })
    };
    let mut stolen = Vec::new();
    let mut tries = 0u64;
    while !done.load(Ordering::SeqCst) {
        for n in 3..40 {
            tries += 1;
            if let Ok(bound) = ListenConfig::new().bind(format!("fd:{n}")) {
                // Two owners now: give it up without closing it, and say so.
                for l in bound.into_parts().0 {
                    let fd = match l.into_tcp() {
                        Ok(tcp) => OwnedFd::from(tcp),
                        Err(l) => OwnedFd::from(l.into_unix().unwrap()),
                    };
                    stolen.push(fd.into_raw_fd());
                }
            }
        }
    }
    let binds = binder.join().unwrap();
    assert!(
        stolen.is_empty(),
        "fd:N took {} sockets another bind owned, first {:?} ({binds} binds, {tries} tries)",
        stolen.len(),
        &stolen[..stolen.len().min(8)]
    );
    println!("{binds} binds raced {tries} fd:N tries");
}

/// Issue #21, item 3: an inherited MPTCP listener (systemd's `SocketProtocol=mptcp`)
/// passed every check, then the server's `SO_OOBINLINE` failed with EOPNOTSUPP: the caller
/// got "Operation not supported" naming nothing, and the descriptor was gone. MPTCP has no
/// urgent data, so the option is set per connection instead (a plain TCP client falls back
/// to TCP, which has): it is served, and urgent data stays in the byte stream.
#[test]
fn an_inherited_mptcp_listener_is_served_and_keeps_urgent_data_in_band() {
    const IPPROTO_MPTCP: i32 = 262;
    let socket = match socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(IPPROTO_MPTCP)),
    ) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped an_inherited_mptcp_listener_is_served_and_keeps_urgent_data_in_band: this kernel makes no MPTCP sockets ({e})"
            );
            return;
        }
    };
    assert!(
        socket.set_out_of_band_inline(true).is_err(),
        "MPTCP took SO_OOBINLINE: the test shows nothing"
    );
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(16).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let fd = socket.into_raw_fd();
    let server = Running::start(
        Server::builder().listen(format!("fd:{fd}")),
        Recorder::default(),
    );
    let mut client = util::connect(addr);
    assert_eq!(util::round_trip(&mut client, b"mp"), b"mp");
    // An urgent byte between two ordinary ones: all three come back, in order.
    client.write_all(b"a").unwrap();
    let sent = socket2::SockRef::from(&client)
        .send_out_of_band(b"!")
        .unwrap();
    assert_eq!(sent, 1);
    client.write_all(b"b").unwrap();
    let mut back = [0; 3];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"a!b", "the urgent byte left the stream");
    drop(server);
}

/// Issue #21, item 4: the library bound Unix sockets through `/proc/self/fd/D/s`, so a
/// listener handed to the application and bound again as `fd:N` (or passed to a child)
/// reported `unix:/proc/self/fd/4/s`, and `connect_addr()` returned it. Bound at the real
/// path now, the kernel's own name for it is the path clients use.
#[test]
fn a_unix_listener_handed_on_reports_the_path_clients_use() {
    let dir = TempDir::new("unix-handed-on");
    let path = dir.join("real.sock");
    let bound = ListenConfig::new()
        .unix_mode(0o600)
        .bind(format!("unix:{}", path.display()))
        .unwrap();
    let listener = bound.into_parts().0.remove(0).into_unix().unwrap();
    let named = listener.local_addr().unwrap();
    assert_eq!(named.as_pathname(), Some(path.as_path()), "{named:?}");
    let fd = OwnedFd::from(listener).into_raw_fd();
    // To another bind of this process.
    let back = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
    let want = ListenAddr::Unix(dualstack::UnixAddr::Path(path.clone()));
    assert_eq!(back.listeners()[0].local_addr(), &want);
    assert_eq!(back.listeners()[0].connect_addr(), want);
    let (mut listeners, _) = back.into_parts();
    let fd = OwnedFd::from(listeners.remove(0).into_unix().unwrap());
    // And to a child, as a service manager passes it.
    let child = activated(&[fd.as_raw_fd()], None, Pid::Child, &["sd-listen"]);
    assert_eq!(
        child.lines(),
        [format!("listening on unix:{} (unix)", path.display())]
    );
    let mut client = UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(util::TIMEOUT)).unwrap();
    client.write_all(b"p").unwrap();
    let mut back = [0; 1];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"p");
}

/// Issue #21, item 4: a socket whose kernel name is a path through a descriptor (bound by
/// another program, or by this library before it bound at real paths) does not say where
/// clients connect: reported as unknown, never as that path.
#[test]
fn a_unix_socket_named_through_a_descriptor_reports_an_unknown_path() {
    let dir = TempDir::new("unix-staged");
    let dir_fd = std::fs::File::open(&dir.0).unwrap();
    let staged = format!("/proc/self/fd/{}/s", dir_fd.as_raw_fd());
    let listener = UnixListener::bind(&staged).unwrap();
    let fd = listener.into_raw_fd();
    let bound = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
    assert_eq!(bound.listeners()[0].local_addr(), &ListenAddr::UnixUnknown);
    assert_eq!(
        bound.listeners()[0].to_string(),
        "unix:(unknown path) (unix)"
    );
}

/// A review of issue #21: the registry went by number, so one socket under two numbers (a
/// `dup`) became two listeners. It goes by identity too now, within one bind and across.
#[test]
fn one_socket_under_two_numbers_is_one_listener() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let copy = socket.try_clone().unwrap().into_raw_fd();
    let fd = socket.into_raw_fd();
    let err = inherit_error(&[format!("fd:{fd}"), format!("fd:{copy}")]);
    assert_eq!(err.kind(), InheritErrorKind::TakenTwice, "{err}");
    assert!(err.to_string().contains("another number"), "{err}");
    assert!(is_open(fd) && is_open(copy), "a refused bind closed one");
    let bound = ListenConfig::new().bind(format!("fd:{fd}")).unwrap();
    let again = inherit_error(&[format!("fd:{copy}")]);
    assert_eq!(again.kind(), InheritErrorKind::TakenTwice, "{again}");
    drop(bound);
    // SAFETY: `copy` was never taken (both binds of it were refused): this closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(copy) });
}
