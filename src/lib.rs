//! An embeddable, single-threaded, [mio]-based TCP server that listens *correctly* on IPv4 and
//! IPv6.
//!
//! For a decade Python's `socketserver.TCPServer` could not listen on an IPv6 address
//! ([bpo-20215]), and most server libraries still bind only the first address a name resolves
//! to. `dualstack` takes a listen spec such as `localhost:8080`, `[::1]:0` or `:80` and
//! does what that thread asked for: it picks the family from a numeric host by itself, opens
//! one dual-stack socket for "any address" where the host supports it (setting `IPV6_V6ONLY`
//! explicitly), listens on *every* address a name resolves to, and hands the application
//! normalized peer addresses (`::ffff:1.2.3.4` becomes `1.2.3.4`).
//!
//! # Layers
//!
//! - **Address** ([`ListenSpec`], [`Host`], [`normalize`]): parsing and printing listen specs,
//!   normalizing socket addresses. Pure: no sockets, no DNS.
//!
//! The planner, the listeners and the reactor are built on top of this layer; see
//! `ARCHITECTURE.md` in the repository for the whole picture.
//!
//! # Examples
//!
//! ```
//! use dualstack::{normalize, Host, ListenSpec, ToListenSpec};
//! use std::net::SocketAddr;
//!
//! // The same place to listen, written three ways.
//! let spec: ListenSpec = "[::1]:8080".parse()?;
//! assert_eq!(spec, ("::1", 8080).to_listen_spec()?);
//! assert_eq!(spec, "[::1]:8080".parse::<SocketAddr>().unwrap().to_listen_spec()?);
//!
//! // "Every address" is its own kind of host, distinct from 0.0.0.0 and [::].
//! assert_eq!(":8080".parse::<ListenSpec>()?.host(), &Host::Any);
//!
//! // Mistakes get an error that quotes the input and says how to fix it.
//! let err = "::1:8080".parse::<ListenSpec>().unwrap_err();
//! assert!(err.to_string().contains(r#"as in "[::1]:8080""#));
//!
//! // A dual-stack socket reports IPv4 peers as mapped addresses; applications see IPv4.
//! let peer: SocketAddr = "[::ffff:192.0.2.7]:50000".parse().unwrap();
//! assert_eq!(normalize(peer).to_string(), "192.0.2.7:50000");
//! # Ok::<(), dualstack::Error>(())
//! ```
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

mod addr;
mod error;
mod host;
mod listen;
mod plan;
mod sys;

pub use addr::{
    display_addr, normalize, DisplayAddr, Host, HostName, ListenSpec, ParseError, ParseErrorKind,
    ToListenSpec, Zone,
};
pub use error::Error;
pub use host::{has_dual_stack_ipv6, HostCaps, Resolve, SystemResolver};
pub use listen::{bind, BindError, Bound, ListenConfig, Listener};
pub use plan::{
    plan, BindPlan, FamilyPolicy, PlanError, PlanErrorKind, PlanOptions, PlannedSocket, SkipReason,
    Skipped, SocketMode, WildcardStack,
};
