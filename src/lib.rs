//! An embeddable, single-threaded, [mio]-based TCP server that listens *correctly* on IPv4 and
//! IPv6, and the API a protocol is written against.
//!
//! A server is six types: a [`Server`] (built with [`Server::builder`], run with
//! [`Server::run`] or stepped from your own loop with [`Server::run_once`]); your
//! [`Handler`], whose callbacks act through a [`Context`] (send, close, per-connection
//! [state](Handler::State), timers); the [`Input`] each connection sent, kept until the
//! handler uses it ([`frame`] finds whole lines or messages in it); the [`ConnId`] naming
//! each connection; and the [`CloseReason`] it closed for. `use dualstack::prelude::*` brings
//! them in.
//!
//! The library logs through the [`log`](https://docs.rs/log) crate: its warnings (an
//! address skipped, a listener in trouble, connections shed) go nowhere unless the
//! application installs a logger (`simple_logger`, `env_logger`, …).
//!
//! # Examples
//!
//! An echo server on every loopback address, in a few lines:
//!
//! ```
//! use dualstack::prelude::*;
//! # use std::io::{Read, Write};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = (); // what the server keeps per connection for the handler: nothing
//!
//!     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
//!         // Refused only if the connection is gone, or its client stopped reading past the
//!         // output limit (4 MiB; reading it stopped at 256 KiB): `SendError` says which.
//!         let _ = ctx.send(conn, input.take_all());
//!     }
//! }
//!
//! let mut server = Server::builder().listen("localhost:0").bind(Echo)?;
//! for listener in server.listeners() {
//!     println!("listening on {} ({})", listener.local_addr, listener.mode);
//! }
//! # // One round trip per listener (IPv4 and IPv6), driven with the step function.
//! # for listener in server.listeners() {
//! #     let mut client = std::net::TcpStream::connect(listener.local_addr)?;
//! #     client.set_nonblocking(true)?;
//! #     client.write_all(b"ping")?;
//! #     let mut reply = Vec::new();
//! #     while reply.len() < 4 {
//! #         server.run_once(Some(std::time::Duration::from_millis(10)))?;
//! #         let mut buf = [0; 4];
//! #         match client.read(&mut buf) {
//! #             Ok(n) => reply.extend_from_slice(&buf[..n]),
//! #             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
//! #             Err(e) => return Err(e.into()),
//! #         }
//! #     }
//! #     assert_eq!(reply, b"ping");
//! # }
//! # server.handle().stop();
//! server.run()?; // until stopped: from a handler, or another thread's ServerHandle
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A line protocol keeps no buffer of its own: what a callback does not use stays in the
//! connection's [`Input`] for the next one, and replies sent one by one leave in one write.
//! While a client's replies wait for it to read them, its input is held, so a client that
//! asks for more than it reads is held back, never cut off (see [`Handler::on_data`]):
//!
//! ```
//! use dualstack::prelude::*;
//!
//! const LINE: Lines = Lines::new(4096); // LF or CRLF, at most 4 KiB
//!
//! struct Upper;
//!
//! impl Handler for Upper {
//!     type State = ();
//!
//!     fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
//!         loop {
//!             match input.next_frame(&LINE) {
//!                 Ok(Some(line)) => {
//!                     let _ = ctx.send(conn, &line.to_ascii_uppercase());
//!                     let _ = ctx.send(conn, b"\n");
//!                 }
//!                 Ok(None) => return,               // the rest of the line comes later
//!                 Err(_) => return ctx.close(conn), // a line too long
//!             }
//!         }
//!     }
//! }
//! # let _server = Server::builder().listen("127.0.0.1:0").bind(Upper)?;
//! # Ok::<(), dualstack::Error>(())
//! ```
//!
//! # Listening correctly
//!
//! For a decade Python's `socketserver.TCPServer` could not listen on an IPv6 address
//! ([bpo-20215]), and most server libraries still bind only the first address a name resolves
//! to. `dualstack` takes a listen spec such as `localhost:8080`, `[::1]:0` or `:80` and
//! does what that thread asked for: it picks the family from a numeric host by itself, opens
//! one dual-stack socket for "any address" where the host supports it (setting `IPV6_V6ONLY`
//! explicitly), listens on *every* address a name resolves to, and hands the application
//! normalized peer addresses (`::ffff:1.2.3.4` becomes `1.2.3.4`).
//!
//! `localhost:0` opened `127.0.0.1:P` and `[::1]:P` with one port; `:7000` would open one
//! dual-stack socket; `example.com:80` every address the name resolves to. Peers reach the
//! handler normalized: an IPv4 client of a dual-stack socket is `127.0.0.1:P`, never
//! `[::ffff:127.0.0.1]:P`. An application with its own loop calls
//! [`Server::run_once`] instead of [`Server::run`], and can register its own mio sources
//! with [`Server::register`].
//!
//! # Layers
//!
//! - **Address** ([`ListenSpec`], [`Host`], [`normalize`]): parsing and printing listen specs,
//!   normalizing socket addresses. Pure: no sockets, no DNS.
//! - **Plan** ([`plan`], [`HostCaps`], [`Resolve`]): which sockets a spec needs on this host.
//!   Pure too: the host's capabilities and the resolver are inputs, so every rule is tested
//!   against hosts this machine is not (no IPv6, OpenBSD, IPv6-only).
//! - **Listeners** ([`bind`], [`ListenConfig`], [`Listener`]): opens the planned sockets with
//!   every option set explicitly, one shared port for port 0, and Unix-domain sockets; takes
//!   the sockets a service manager passed (`sd-listen`, `fd:N`, each checked first); reports
//!   what was bound and what was skipped; [`notify`] tells the service manager.
//! - **Reactor** ([`Server`], [`ServerBuilder`], [`ServerHandle`]): one `mio::Poll`, the
//!   listeners under their tokens, connections in a slab, with read budgets, backpressure,
//!   idle timeouts, connection limits, descriptor-exhaustion back-off and graceful stop; the
//!   application's side of it, [`Handler`] and [`Context`], with [`Input`] and [`frame`].
//! - **Hand-over** ([`ServerHandle::hand_over`], [`HandOver`]): a restart or an upgrade
//!   that drops no connection: the listening sockets go to a successor process, which
//!   takes them by spec; the old process stops accepting and drains (Unix).
//! - **Signals** (`signals`, cargo feature `signals`): SIGINT and SIGTERM (Ctrl-C on
//!   Windows) stop a server gracefully, a second ends the process; SIGUSR2 can hand over.
//!   The module exists only with the feature: build these docs with
//!   `cargo doc --features signals` to see it.
//!
//! The listening layer is usable on its own:
//!
//! Listen on `localhost` (both loopback addresses, one port) and talk to each socket:
//!
//! ```
//! use std::io::Write;
//!
//! let bound = dualstack::bind("localhost:0")?;
//! for listener in bound.listeners() {
//!     println!("listening on {listener}"); // e.g. "[::1]:41234 (ipv6-only)"
//! }
//! for skipped in bound.skipped() {
//!     println!("{skipped}"); // e.g. on a host without IPv6: "[::1]:0 skipped: this host has no IPv6"
//! }
//! let (mut listeners, _) = bound.into_parts();
//! for listener in &mut listeners {
//!     let mut client = std::net::TcpStream::connect(listener.connect_addr())?;
//!     client.write_all(b"hello")?;
//!     let tcp = listener.as_tcp().expect("an IP spec gives TCP listeners");
//!     let (_stream, peer) = loop {
//!         match tcp.accept() {
//!             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
//!             other => break other?,
//!         }
//!     };
//!     // Peers are normalized: an IPv4 client of a dual-stack socket shows as IPv4.
//!     assert_eq!(dualstack::normalize(peer), client.local_addr()?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Parse, plan and normalize without opening anything:
//!
//! ```
//! use dualstack::{normalize, plan, Host, HostCaps, ListenSpec, PlanOptions, SystemResolver, ToListenSpec};
//! use std::net::SocketAddr;
//!
//! // The same place to listen, written three ways.
//! let spec: ListenSpec = "[::1]:8080".parse()?;
//! assert_eq!(spec, ("::1", 8080).to_listen_spec()?);
//! assert_eq!(spec, "[::1]:8080".parse::<SocketAddr>().unwrap().to_listen_spec()?);
//!
//! // "Every address" is its own kind of host, distinct from 0.0.0.0 and [::]...
//! let any: ListenSpec = ":8080".parse()?;
//! assert_eq!(any.host(), Some(&Host::Any));
//! // ...and becomes one dual-stack socket on a host that can make one.
//! let openbsd = HostCaps { ipv4: true, ipv6: true, dual_stack: false, ipv4_loopback: true, ipv6_loopback: true };
//! let p = plan(&any, PlanOptions::default(), &openbsd, &SystemResolver)?;
//! assert_eq!(p.sockets.len(), 2); // no dual-stack sockets there: 0.0.0.0 and [::] IPv6-only
//!
//! // Mistakes get an error that quotes the input and says how to fix it.
//! let err = "::1:8080".parse::<ListenSpec>().unwrap_err();
//! assert!(err.to_string().contains(r#"as in "[::1]:8080""#));
//!
//! // A dual-stack socket reports IPv4 peers as mapped addresses; applications see IPv4.
//! let peer: SocketAddr = "[::ffff:192.0.2.7]:50000".parse().unwrap();
//! assert_eq!(normalize(peer).to_string(), "192.0.2.7:50000");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platform behavior
//!
//! `IPV6_V6ONLY` is set explicitly on every IPv6 socket, so the OS default below never decides
//! what a spec means; it only explains why other libraries behave differently per OS.
//!
//! | OS | `IPV6_V6ONLY` default | dual-stack sockets | `:PORT` opens |
//! |---|---|---|---|
//! | Linux | 0 (`net.ipv6.bindv6only`) | yes | one `[::]` dual-stack socket |
//! | macOS | 0 | yes | one `[::]` dual-stack socket |
//! | FreeBSD | 1 (`net.inet6.ip6.v6only`) | yes | one `[::]` dual-stack socket |
//! | Windows | 1 | yes | one `[::]` dual-stack socket |
//! | OpenBSD | always 1 | no | `0.0.0.0` and `[::]` IPv6-only, one port |
//!
//! Interface names in zones (`%eth0`) need `if_nametoindex(3)`: on Windows give the zone as
//! a number (`%2`). `SO_REUSEADDR` is not set on Windows, where it lets another socket take
//! over a port in use; [`ListenConfig::reuse_port`] is unsupported where the platform lacks
//! `SO_REUSEPORT`.
//!
//! [mio]: https://docs.rs/mio
//! [bpo-20215]: https://github.com/python/cpython/issues/64414

#![deny(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_code
)]
#![warn(rustdoc::broken_intra_doc_links)]
#![doc(test(attr(deny(warnings))))]

/// Every code block of `README.md` that uses the library, compiled (and run, unless marked
/// `no_run`) by `cargo test` as a doctest, so that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod addr;
mod conn;
mod error;
pub mod frame;
mod handover;
mod host;
mod inherit;
mod listen;
mod plan;
mod proxy;
mod reactor;
#[cfg(feature = "signals")]
pub mod signals;
mod socket;
mod sys;
mod tls;
#[cfg(unix)]
mod unix;

pub use addr::{
    display_addr, normalize, Cidr, CidrError, DisplayAddr, Host, HostName, ListenSpec, ParseError,
    ParseErrorKind, SpecKind, ToListenSpec, UnixAddr, Zone,
};
pub use conn::{CloseReason, ConnId, ConnInfo, Input, ListenerId, Proxied};
pub use error::Error;
pub use handover::{predecessor, HandOver, HandOverError, HandOverErrorKind, HandOverEvent};
pub use host::{has_dual_stack_ipv6, HostCaps, Resolve, SystemResolver};
pub use inherit::{notify, InheritError, InheritErrorKind};
pub use listen::{bind, BindError, Bound, ListenConfig, Listener};
pub use plan::{
    plan, BindPlan, FamilyPolicy, PlanError, PlanErrorKind, PlanOptions, PlannedSocket, SkipReason,
    Skipped, SocketMode, WildcardStack,
};
pub use proxy::tlv as proxy_tlv;
pub use proxy::{
    ProxyAddresses, ProxyCommand, ProxyError, ProxyErrorKind, ProxyHeader, ProxyParsed, ProxySsl,
    ProxyVersion, ProxyVersions,
};
pub use reactor::{
    ConfigError, Context, Handler, ListenerInfo, ListenerStats, NoHandler, ProxyProtocol,
    SendError, Sender, Server, ServerBuilder, ServerHandle, Stats, TimerId,
};
/// The rustls crate this library serves TLS with (feature `tls`), for
/// [`TlsConfig::from_rustls`].
#[cfg(feature = "tls")]
pub use rustls;
pub use tls::TlsFailure;
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError, TlsErrorKind, TlsInfo};

/// mio, whose types ([`mio::Token`], [`mio::Interest`], [`mio::event::Event`], sources) are
/// part of this API: an application registering its own sources uses this one, the same
/// version.
pub use mio;
/// socket2, whose [`SockRef`](socket2::SockRef) [`Context::socket`] lends.
pub use socket2;

/// What a server author needs, in one import: `use dualstack::prelude::*;`.
pub mod prelude {
    pub use crate::frame::{Delimited, FrameError, Framing, LengthPrefixed, Lines};
    pub use crate::{
        CloseReason, ConnId, ConnInfo, Context, Handler, Input, SendError, Server, ServerHandle,
        TimerId,
    };
}
pub use socket::{ListenAddr, Peer, UnixPeer};
