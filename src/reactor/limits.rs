//! [`Limits`]: the reactor's limits and tunables, and the one place they are checked
//! ([`Limits::validate`], which gives a typed [`ConfigError`]).

use std::fmt;
use std::time::Duration;

/// The largest read buffer the server allocates: a larger one would only be a way to make
/// the allocation itself fail.
pub(crate) const MAX_READ_BUFFER: usize = 64 << 20;

/// The largest events capacity: one poll never usefully returns more.
pub(crate) const MAX_EVENTS: usize = 1 << 16;

/// Limits and tunables, set through [`ServerBuilder`](crate::ServerBuilder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_per_peer: Option<usize>,
    pub(crate) ipv6_peer_prefix: u8,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) first_byte_timeout: Option<Duration>,
    pub(crate) max_total_queued: Option<usize>,
    pub(crate) read_buffer: usize,
    pub(crate) read_budget: usize,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    pub(crate) max_queued: usize,
    /// The most input a connection may leave unused before it is closed.
    pub(crate) max_input: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) nodelay: bool,
    pub(crate) events: usize,
    /// Threads that take TLS handshake steps off the loop (0, the default: the loop does
    /// them).
    pub(crate) handshake_threads: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: None,
            max_per_peer: None,
            ipv6_peer_prefix: 64,
            idle_timeout: None,
            first_byte_timeout: None,
            max_total_queued: None,
            read_buffer: 64 * 1024,
            read_budget: 256 * 1024,
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            max_queued: 4 * 1024 * 1024,
            max_input: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            nodelay: true,
            events: 1024,
            handshake_threads: 0,
        }
    }
}

impl Limits {
    /// Checks that the limits make sense together. Long durations need no check: every
    /// deadline saturates, so `Duration::MAX` means "never"; a zero deadline for peers is
    /// refused (a zero shutdown timeout is a stop without a drain).
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`ConfigError`].
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::*;
        if self.read_buffer == 0 || self.read_buffer > MAX_READ_BUFFER {
            return Err(ReadBufferSize(self.read_buffer));
        }
        if self.read_budget == 0 {
            return Err(ZeroReadBudget);
        }
        if self.handshake_threads > MAX_HANDSHAKE_THREADS {
            return Err(HandshakeThreads(self.handshake_threads));
        }
        if self.low_water > self.high_water {
            return Err(WaterMarksReversed {
                low: self.low_water,
                high: self.high_water,
            });
        }
        if self.max_queued == 0 {
            return Err(ZeroQueueLimit);
        }
        if self.high_water > self.max_queued {
            return Err(HighWaterAboveQueueLimit {
                high: self.high_water,
                limit: self.max_queued,
            });
        }
        if self.events == 0 || self.events > MAX_EVENTS {
            return Err(EventsCapacity(self.events));
        }
        if self.max_per_peer == Some(0) {
            return Err(ZeroPerPeerLimit);
        }
        if self.max_connections == Some(0) {
            return Err(ZeroConnectionLimit);
        }
        if self.ipv6_peer_prefix > 128 {
            return Err(Ipv6PeerPrefix(self.ipv6_peer_prefix));
        }
        if self.first_byte_timeout == Some(Duration::ZERO) {
            return Err(ZeroFirstByteTimeout);
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(ZeroIdleTimeout);
        }
        if let Some(cap) = self.max_total_queued {
            if cap < self.high_water.max(1) {
                return Err(TotalCapBelowHighWater {
                    cap,
                    high: self.high_water,
                });
            }
        }
        Ok(())
    }
}

/// A server setting that makes no sense, found by
/// [`ServerBuilder::bind`](crate::ServerBuilder::bind) before any socket is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigError {
    /// No listen spec was given: the server would never accept anything.
    NoListenSpec,
    /// The read buffer is 0 bytes, or larger than 64 MiB.
    ReadBufferSize(usize),
    /// The read budget is 0 bytes: no connection could ever be read.
    ZeroReadBudget,
    /// The low water mark is above the high one.
    WaterMarksReversed {
        /// The low water mark.
        low: usize,
        /// The high water mark.
        high: usize,
    },
    /// The high water mark is above the per-connection queue limit, so backpressure would
    /// never start before sends fail.
    HighWaterAboveQueueLimit {
        /// The high water mark.
        high: usize,
        /// The per-connection queue limit.
        limit: usize,
    },
    /// The events capacity is 0, or above 65536.
    EventsCapacity(usize),
    /// The per-peer connection limit is 0: every connection would be refused.
    ZeroPerPeerLimit,
    /// The connection limit is 0: the server would never accept.
    ZeroConnectionLimit,
    /// The per-connection queue limit is 0: every send would be refused.
    ZeroQueueLimit,
    /// The IPv6 peer prefix is longer than an address: more than 128 bits.
    Ipv6PeerPrefix(u8),
    /// The first-byte timeout is 0: every connection would be closed before its first read.
    ZeroFirstByteTimeout,
    /// The idle timeout is 0: every connection would be closed before its first read.
    ZeroIdleTimeout,
    /// The cap on total queued output is below the high-water mark (or 0), so one
    /// connection's queue in normal operation would pass it and every send be shed or
    /// refused.
    TotalCapBelowHighWater {
        /// The cap.
        cap: usize,
        /// The high-water mark.
        high: usize,
    },
    /// A PROXY listener accepts neither version of the protocol.
    ProxyNoVersion,
    /// A PROXY listener trusts no network: every connection would be refused.
    ProxyTrustsNobody,
    /// A PROXY listener's header timeout is 0: every connection would time out.
    ProxyZeroHeaderTimeout,
    /// More TLS handshake threads than 64.
    HandshakeThreads(usize),
}

/// The most TLS handshake threads a server takes.
pub(crate) const MAX_HANDSHAKE_THREADS: usize = 64;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NoListenSpec => {
                f.write_str("no listen spec: add one with ServerBuilder::listen")
            }
            ConfigError::ReadBufferSize(n) => write!(
                f,
                "the read buffer size is {n} bytes; it must be from 1 byte to {MAX_READ_BUFFER}"
            ),
            ConfigError::ZeroReadBudget => f.write_str("the read budget must be at least 1 byte"),
            ConfigError::WaterMarksReversed { low, high } => {
                write!(
                    f,
                    "the low water mark ({low}) is above the high one ({high})"
                )
            }
            ConfigError::HighWaterAboveQueueLimit { high, limit } => write!(
                f,
                "the high water mark ({high}) is above the queue limit ({limit})"
            ),
            ConfigError::EventsCapacity(n) => write!(
                f,
                "the events capacity is {n}; it must be from 1 to {MAX_EVENTS}"
            ),
            ConfigError::ZeroPerPeerLimit => {
                f.write_str("the per-peer connection limit must be at least 1")
            }
            ConfigError::ProxyNoVersion => {
                f.write_str("a PROXY listener must accept version 1, version 2 or both")
            }
            ConfigError::ProxyTrustsNobody => f.write_str(
                "a PROXY listener must trust at least one network (the balancers' addresses)",
            ),
            ConfigError::ProxyZeroHeaderTimeout => {
                f.write_str("a PROXY listener's header timeout must be above 0")
            }
            ConfigError::ZeroConnectionLimit => f.write_str(
                "the connection limit must be at least 1: with 0 the server never accepts",
            ),
            ConfigError::ZeroQueueLimit => f.write_str(
                "the per-connection queue limit (max_queued) must be at least 1 byte: with 0 \
                 every send is refused",
            ),
            ConfigError::Ipv6PeerPrefix(bits) => write!(
                f,
                "the IPv6 peer prefix is {bits} bits; an IPv6 address has 128"
            ),
            ConfigError::ZeroFirstByteTimeout => f.write_str(
                "the first-byte timeout must be above 0: with 0 every connection is closed \
                 before its first read",
            ),
            ConfigError::ZeroIdleTimeout => f.write_str(
                "the idle timeout must be above 0: with 0 every connection is closed before its \
                 first read",
            ),
            ConfigError::HandshakeThreads(n) => write!(
                f,
                "{n} TLS handshake threads; at most {MAX_HANDSHAKE_THREADS} (0: the loop does them)"
            ),
            ConfigError::TotalCapBelowHighWater { cap, high } => write!(
                f,
                "the cap on total queued output ({cap}) is below one connection's high water \
                 mark ({high}): raise the cap or lower the water marks"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn each_nonsense_setting_is_named() {
        let d = Limits::default();
        let cases: Vec<(Limits, ConfigError)> = vec![
            (
                Limits {
                    read_buffer: 0,
                    ..d
                },
                ConfigError::ReadBufferSize(0),
            ),
            (
                Limits {
                    read_buffer: usize::MAX,
                    ..d
                },
                ConfigError::ReadBufferSize(usize::MAX),
            ),
            (
                Limits {
                    read_budget: 0,
                    ..d
                },
                ConfigError::ZeroReadBudget,
            ),
            (
                Limits {
                    low_water: 10,
                    high_water: 5,
                    ..d
                },
                ConfigError::WaterMarksReversed { low: 10, high: 5 },
            ),
            (
                Limits {
                    high_water: 10,
                    max_queued: 5,
                    low_water: 1,
                    ..d
                },
                ConfigError::HighWaterAboveQueueLimit { high: 10, limit: 5 },
            ),
            (Limits { events: 0, ..d }, ConfigError::EventsCapacity(0)),
            (
                Limits {
                    events: usize::MAX,
                    ..d
                },
                ConfigError::EventsCapacity(usize::MAX),
            ),
            (
                Limits {
                    max_per_peer: Some(0),
                    ..d
                },
                ConfigError::ZeroPerPeerLimit,
            ),
            (
                Limits {
                    max_connections: Some(0),
                    ..d
                },
                ConfigError::ZeroConnectionLimit,
            ),
            (
                Limits {
                    max_queued: 0,
                    high_water: 0,
                    low_water: 0,
                    ..d
                },
                ConfigError::ZeroQueueLimit,
            ),
            // The ninth review of #22: a prefix past 128 bits was cut to 128 in silence.
            (
                Limits {
                    ipv6_peer_prefix: 129,
                    ..d
                },
                ConfigError::Ipv6PeerPrefix(129),
            ),
            // The ninth review of #22: a zero deadline closed every connection, bytes waiting
            // or not, as a peer that "sent nothing" (while 1 ns read them first).
            (
                Limits {
                    first_byte_timeout: Some(Duration::ZERO),
                    ..d
                },
                ConfigError::ZeroFirstByteTimeout,
            ),
            (
                Limits {
                    idle_timeout: Some(Duration::ZERO),
                    ..d
                },
                ConfigError::ZeroIdleTimeout,
            ),
            // The review of issue #12: a cap of 0 passed, and then every send failed.
            (
                Limits {
                    max_total_queued: Some(0),
                    ..d
                },
                ConfigError::TotalCapBelowHighWater {
                    cap: 0,
                    high: d.high_water,
                },
            ),
            (
                Limits {
                    max_total_queued: Some(d.high_water - 1),
                    ..d
                },
                ConfigError::TotalCapBelowHighWater {
                    cap: d.high_water - 1,
                    high: d.high_water,
                },
            ),
        ];
        for (limits, expected) in cases {
            assert_eq!(limits.validate(), Err(expected), "{limits:?}");
        }
    }

    #[test]
    fn extremes_that_mean_something_are_accepted() {
        let d = Limits::default();
        let ok = [
            Limits {
                max_queued: usize::MAX,
                high_water: usize::MAX,
                low_water: usize::MAX,
                ..d
            },
            Limits {
                idle_timeout: Some(Duration::MAX),
                first_byte_timeout: Some(Duration::from_nanos(1)),
                shutdown_timeout: Duration::MAX,
                ..d
            },
            Limits {
                idle_timeout: Some(Duration::from_nanos(1)),
                shutdown_timeout: Duration::ZERO,
                ..d
            },
            Limits {
                read_buffer: MAX_READ_BUFFER,
                events: MAX_EVENTS,
                read_budget: usize::MAX,
                max_total_queued: Some(d.high_water),
                ..d
            },
        ];
        for limits in ok {
            assert_eq!(limits.validate(), Ok(()), "{limits:?}");
        }
    }
}
