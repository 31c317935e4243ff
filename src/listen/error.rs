//! [`BindError`]: a socket of a spec that could not be opened. Its own file, so that the
//! crate's [`Error`](crate::Error), which wraps it, imports nothing that imports it back.

use std::fmt;
use std::io;

use crate::addr::ListenSpec;
use crate::plan::SocketMode;
use crate::socket::ListenAddr;

/// A socket of a spec that could not be opened. Every socket of that spec was closed.
#[derive(Debug)]
pub struct BindError {
    /// Boxed, so that `Result<_, Error>` stays small on the success path.
    pub(super) spec: Box<ListenSpec>,
    pub(super) addr: ListenAddr,
    pub(super) mode: SocketMode,
    pub(super) detail: String,
    pub(super) source: io::Error,
}

impl BindError {
    pub(super) fn new(
        spec: &ListenSpec,
        addr: impl Into<ListenAddr>,
        mode: SocketMode,
        step: &str,
        source: io::Error,
    ) -> BindError {
        let addr = addr.into();
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse if mode == SocketMode::Unix => "",
            io::ErrorKind::AddrInUse => "; another socket is listening there",
            io::ErrorKind::AddrNotAvailable => {
                "; this host has no such address (or not yet: still being configured?)"
            }
            io::ErrorKind::PermissionDenied if mode != SocketMode::Unix => {
                "; ports below 1024 need privileges"
            }
            _ => "",
        };
        BindError {
            spec: Box::new(spec.clone()),
            addr: addr.clone(),
            mode,
            detail: format!("{step} {addr} ({mode}): {source}{hint}"),
            source,
        }
    }

    /// The spec whose sockets could not be opened.
    pub fn spec(&self) -> &ListenSpec {
        &self.spec
    }

    /// The address that failed.
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// The mode the failed socket was to have.
    pub fn mode(&self) -> SocketMode {
        self.mode
    }

    /// The OS error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {}: {}",
            self.spec.quoted(),
            self.detail
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
