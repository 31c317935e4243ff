//! The library inside an event-driven application that owns its loop.
//!
//! Run with `cargo run --example embed -- [OPTIONS] [SPEC]...` (default `localhost:7002`).
//! The TCP listeners echo. The application adds a UDP socket of its own (`--udp ADDR`,
//! default `127.0.0.1:0`; one address, never a wildcard, since a reply from a wildcard socket
//! may leave from another address than the request came to) to the server's poll: send it `stats`, padded with spaces to at
//! least as many bytes as the answer, and it answers with the server's counters, per
//! listener:
//!
//! ```text
//! printf 'stats%1019s' '' | nc -u -w1 127.0.0.1 PORT
//! ```
//!
//! It answers nothing else, and never with more bytes than the request had: a UDP socket
//! that answers anything, or answers small requests with large replies, lets anyone who can
//! forge a source address aim its replies at a third party (a reflector, an amplifier).
//!
//! The application keeps its own timer too (a stats line in the log every
//! `--report-every SECONDS`, default 10), and drives the server one step at a time with
//! `Server::run_once`, as an application with other work in its loop would.

mod common;

use std::time::Instant;

use dualstack::mio::{self, Interest, Token};
use dualstack::{display_addr, ConnId, Context, Handler, Input, Stats};

/// The token of the application's UDP socket, in the application's own token space.
const UDP: Token = Token(0);

struct App {
    udp: Option<mio::net::UdpSocket>,
    /// Listener descriptions, for the stats answer: "ADDR (MODE)".
    listeners: Vec<String>,
}

impl App {
    fn stats_text(&self, stats: &Stats) -> String {
        let t = &stats.total;
        let mut text = format!(
            "open {} accepted {} bytes_in {} bytes_out {}\n",
            t.open, t.accepted, t.bytes_in, t.bytes_out
        );
        for (name, l) in self.listeners.iter().zip(&stats.listeners) {
            text.push_str(&format!(
                "listener {name} open {} accepted {} bytes_in {} bytes_out {}\n",
                l.open, l.accepted, l.bytes_in, l.bytes_out
            ));
        }
        text
    }
}

impl Handler for App {
    type State = ();
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let _ = ctx.send(conn, input.take_all());
    }

    fn on_event(&mut self, ctx: &mut Context<'_, Self>, token: Token, _: &mio::event::Event) {
        if token == UDP {
            self.serve_udp(ctx);
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: dualstack::TimerId, value: u64) {
        if value == UDP_MORE {
            self.serve_udp(ctx);
        }
    }
}

/// The timer value that means "the UDP socket has more datagrams waiting".
const UDP_MORE: u64 = 1;

/// The most datagrams answered per turn: a flood on the UDP socket must not hold the loop
/// (the TCP connections wait for their turn meanwhile).
const UDP_BUDGET: usize = 64;

impl App {
    /// Answers the datagrams waiting, at most [`UDP_BUDGET`] of them; if the budget runs out,
    /// a zero-delay timer brings the rest after the loop has served everything else once
    /// (edge-triggered: no new event would say they are there).
    fn serve_udp(&mut self, ctx: &mut Context<'_, Self>) {
        let Some(udp) = &self.udp else { return };
        // The largest datagram there is: nothing is cut short.
        let mut buf = vec![0; 65536];
        for _ in 0..UDP_BUDGET {
            let (n, from) = match udp.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("udp: {e}");
                    return;
                }
            };
            let request = buf[..n]
                .strip_prefix(b"stats")
                .filter(|padding| padding.iter().all(|b| b" \r\n\0".contains(b)));
            if request.is_none() {
                log::debug!(
                    "udp: {n} bytes from {} are not a request: no answer",
                    display_addr(from)
                );
                continue;
            }
            let answer = self.stats_text(&ctx.stats());
            if answer.len() > n {
                log::debug!(
                    "udp: a {n}-byte request from {} for a {}-byte answer: no answer (pad it)",
                    display_addr(from),
                    answer.len()
                );
                continue;
            }
            if let Err(e) = udp.send_to(answer.as_bytes(), from) {
                log::warn!("udp reply to {}: {e}", display_addr(from));
            }
        }
        ctx.set_timer(std::time::Duration::ZERO, UDP_MORE);
    }
}

/// A non-blocking UDP socket bound to `addr` (one address, not a wildcard), with
/// `IPV6_V6ONLY` set explicitly for IPv6 as the library sets it for every listener: the
/// operating system's default never decides what the socket serves.
fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<mio::net::UdpSocket> {
    use dualstack::socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

fn main() {
    let signals = common::signals("embed");
    let opts = common::Options::parse(
        "embed",
        "embed: an application that owns its loop, with an echo server and a UDP stats socket.",
        "localhost:7002",
        &[
            (
                "--udp",
                "--udp ADDR                the UDP stats socket (default 127.0.0.1:0); send it\n                            \"stats\" padded with spaces to the answer's size (1 KiB is plenty)",
            ),
            (
                "--report-every",
                "--report-every SECONDS   how often to log the stats (default 10)",
            ),
        ],
    );
    let udp_text = opts.extra("--udp").unwrap_or("127.0.0.1:0");
    let udp_addr: std::net::SocketAddr = udp_text.parse().unwrap_or_else(|_| {
        common::fail(
            "embed",
            &format!(
                "--udp {}: expected an address such as 127.0.0.1:0 or [::1]:9000",
                common::quoted(udp_text)
            ),
        )
    });
    // `[::ffff:127.0.0.1]:P` is 127.0.0.1:P, as for every address this library takes.
    let udp_addr = dualstack::normalize(udp_addr);
    if udp_addr.ip().is_unspecified() {
        // A reply to a datagram leaves from the address the kernel picks for it, and on a
        // host with several addresses that is not always the one the request was sent to:
        // the client drops it. Answering from the request's own address needs
        // IP_PKTINFO / IPV6_RECVPKTINFO, which this example does not do.
        common::fail(
            "embed",
            &format!(
                "--udp {}: a wildcard UDP address would answer from whichever address the kernel picks, which a client that wrote to another address of this host drops; give one address of this host, as 127.0.0.1:{}",
                common::quoted(udp_text),
                udp_addr.port()
            ),
        );
    }
    // At most ten reports a second, at least one a day.
    let every = common::seconds(
        "embed",
        "--report-every",
        opts.extra("--report-every").unwrap_or("10"),
        (0.1, 86_400.0),
    );
    common::init_logging();

    let mut server = common::bind(
        "embed",
        opts.builder(),
        App {
            udp: None,
            listeners: Vec::new(),
        },
    );
    let mut udp = bind_udp(udp_addr).unwrap_or_else(|e| {
        common::fail(
            "embed",
            &format!("cannot bind the UDP socket {}: {e}", display_addr(udp_addr)),
        )
    });
    server
        .register(&mut udp, UDP, Interest::READABLE)
        .expect("register the UDP socket");
    let udp_local = udp.local_addr().expect("the UDP socket's address");
    let listeners = server.listeners().iter().map(|l| l.to_string()).collect();
    let app = server.handler_mut();
    app.udp = Some(udp);
    app.listeners = listeners;

    common::stop_on_signals("embed", &signals, &server);
    common::announce("embed", &server);
    common::print_or_fail("embed", &format!("udp on {}\n", display_addr(udp_local)));

    // The application's loop: its own timer, and one server step per turn.
    let mut next_report = Instant::now() + every;
    loop {
        let wait = next_report.saturating_duration_since(Instant::now());
        match server.run_once(Some(wait)) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                log::error!("the server loop failed: {e}");
                std::process::exit(1);
            }
        }
        if Instant::now() >= next_report {
            let stats = server.stats();
            log::info!(
                "stats: {}",
                server
                    .handler()
                    .stats_text(&stats)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            next_report += every;
        }
    }
}
