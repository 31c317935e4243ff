//! The address layer: what a listen spec is, how it is parsed and printed, and how socket
//! addresses are normalized for applications.
//!
//! # Contract
//!
//! This layer is pure: it opens no socket and does no network I/O. Parsing never consults a
//! resolver, and a numeric host never becomes a name. The only system call it can make is the
//! local interface-name lookup of [`Zone::to_index`] and [`display_addr`].

mod cidr;
mod error;
mod normalize;
mod parse;
mod spec;

pub(crate) use cidr::mask;
pub use cidr::{Cidr, CidrError};
pub use error::{ParseError, ParseErrorKind};
pub(crate) use normalize::is_scoped;
pub use normalize::{display_addr, normalize, DisplayAddr};
pub use spec::{Host, HostName, ListenSpec, SpecKind, ToListenSpec, UnixAddr, Zone};
