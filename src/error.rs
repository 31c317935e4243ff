//! [`Error`]: the one error type of the crate's convenience entry points.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::addr::ParseError;
use crate::inherit::InheritError;
use crate::listen::error::BindError;
use crate::plan::PlanError;
use crate::reactor::limits::ConfigError;

/// Any error the crate's entry points can return; each variant wraps the error of one layer.
///
/// ```
/// let err: dualstack::Error = "localhost".parse::<dualstack::ListenSpec>().unwrap_err().into();
/// assert!(matches!(err, dualstack::Error::Parse(_)));
/// assert_eq!(err.to_string(), r#"invalid listen spec "localhost": missing port, as in "localhost:8080" (port 0 lets the system choose)"#);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A listen spec could not be parsed.
    Parse(ParseError),
    /// A spec could not be planned on this host (policy, family, zone or resolution).
    Plan(PlanError),
    /// A socket could not be opened; every socket of its spec was closed.
    Bind(BindError),
    /// An inherited socket (systemd socket activation, `fd:N`) cannot be used.
    Inherit(InheritError),
    /// A server setting makes no sense.
    Config(ConfigError),
    /// The poller could not be made (or another I/O error outside any one socket).
    Io(io::Error),
    /// A TLS listener's configuration cannot be used (feature `tls`).
    #[cfg(feature = "tls")]
    Tls(crate::tls::TlsError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(e) => e.fmt(f),
            Error::Plan(e) => e.fmt(f),
            Error::Bind(e) => e.fmt(f),
            Error::Inherit(e) => e.fmt(f),
            Error::Config(e) => write!(f, "invalid server configuration: {e}"),
            Error::Io(e) => e.fmt(f),
            #[cfg(feature = "tls")]
            Error::Tls(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Parse(e) => Some(e),
            Error::Plan(e) => Some(e),
            Error::Bind(e) => Some(e),
            Error::Inherit(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::Io(e) => Some(e),
            #[cfg(feature = "tls")]
            Error::Tls(e) => Some(e),
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Error {
        Error::Parse(e)
    }
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Error {
        Error::Plan(e)
    }
}

impl From<BindError> for Error {
    fn from(e: BindError) -> Error {
        Error::Bind(e)
    }
}

impl From<InheritError> for Error {
    fn from(e: InheritError) -> Error {
        Error::Inherit(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

#[cfg(feature = "tls")]
impl From<crate::tls::TlsError> for Error {
    fn from(e: crate::tls::TlsError) -> Error {
        Error::Tls(e)
    }
}
