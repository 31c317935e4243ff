//! [`Cidr`]: an IP network, `ADDR/BITS`, for the set of load balancers a PROXY listener
//! trusts. Pure.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`; a bare
/// address is the network of that one host). Matching normalizes the address first, so an
/// IPv4 client of a dual-stack socket (`::ffff:10.1.2.3`) is in `10.0.0.0/8`.
///
/// ```
/// use dualstack::Cidr;
///
/// let lan: Cidr = "10.0.0.0/8".parse()?;
/// assert!(lan.contains("10.1.2.3".parse()?));
/// assert!(lan.contains("::ffff:10.1.2.3".parse()?));
/// assert!(!lan.contains("11.0.0.1".parse()?));
/// // Host bits set are a mistake, not something to round away silently.
/// assert!("10.0.0.1/8".parse::<Cidr>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

/// Why text is not a [`Cidr`]; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError {
    input: String,
    detail: String,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.input.chars().take(64).collect();
        write!(f, "invalid network {shown:?}: {}", self.detail)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The network of `bits` leading bits of `addr`.
    ///
    /// # Errors
    ///
    /// `bits` longer than the address (32 or 128), or bits set in `addr` beyond them.
    pub fn new(addr: IpAddr, bits: u8) -> Result<Cidr, CidrError> {
        // A network of IPv4-mapped addresses is that IPv4 network: peers are normalized.
        let (addr, bits) = match addr {
            IpAddr::V6(a) if bits >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), bits - 96),
                None => (addr, bits),
            },
            _ => (addr, bits),
        };
        let error = |detail: String| CidrError {
            input: format!("{addr}/{bits}"),
            detail,
        };
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if bits > width {
            return Err(error(format!(
                "a prefix of {bits} bits; an IPv{} address has {width}",
                if addr.is_ipv4() { 4 } else { 6 }
            )));
        }
        let cidr = Cidr { addr, bits };
        if cidr.network() != addr {
            return Err(error(format!(
                "bits are set after the first {bits}; the network is {}",
                Cidr {
                    addr: cidr.network(),
                    bits
                }
            )));
        }
        Ok(cidr)
    }

    /// The loopback networks, `127.0.0.0/8` and `::1/128`: the default set of trusted
    /// balancers.
    pub fn loopback() -> [Cidr; 2] {
        [
            Cidr {
                addr: IpAddr::from([127, 0, 0, 0]),
                bits: 8,
            },
            Cidr {
                addr: IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
                bits: 128,
            },
        ]
    }

    /// Whether `ip` (normalized) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = crate::addr::normalize(std::net::SocketAddr::new(ip, 0)).ip();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)) << 96, self.bits)
                    == mask(u128::from(u32::from(net)) << 96, self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.bits) == mask(u128::from(net), self.bits)
            }
            _ => false,
        }
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = mask(u128::from(u32::from(a)) << 96, self.bits) >> 96;
                IpAddr::from((m as u32).to_be_bytes())
            }
            IpAddr::V6(a) => IpAddr::from(mask(u128::from(a), self.bits).to_be_bytes()),
        }
    }
}

/// `value` with all but its leading `bits` bits cleared (all of them from 128 on).
pub(crate) fn mask(value: u128, bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => value,
        b => value & !(u128::MAX >> b),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/BITS` or `ADDR` (one host); an IPv6 address without brackets.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let error = |detail: &str| CidrError {
            input: s.to_owned(),
            detail: detail.to_owned(),
        };
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            error("expected an IP address and a prefix length, as in 10.0.0.0/8 or 2001:db8::/32")
        })?;
        let bits = match bits {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(b) if !b.is_empty() && b.len() <= 3 && b.bytes().all(|c| c.is_ascii_digit()) => b
                .parse::<u8>()
                .map_err(|_| error("the prefix length is 0 to 128"))?,
            Some(_) => return Err(error("the prefix length after / is a number, 0 to 128")),
        };
        Cidr::new(addr, bits).map_err(|e| CidrError {
            input: s.to_owned(),
            detail: e.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_what_they_should() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.0.1", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "::1", true),
            ("::/0", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("::1", "::1", true),
            ("::ffff:10.0.0.0/104", "10.0.0.1", true),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.1", true),
            ("192.168.1.128/25", "192.168.1.200", true),
            ("192.168.1.128/25", "192.168.1.100", false),
        ];
        for (net, ip, want) in cases {
            let cidr: Cidr = net.parse().unwrap();
            assert_eq!(cidr.contains(ip.parse().unwrap()), *want, "{net} ∋ {ip}");
        }
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        for (text, why) in [
            ("10.0.0.1/8", "the network is 10.0.0.0/8"),
            ("10.0.0.0/33", "a prefix of 33 bits"),
            ("::/129", "a prefix of 129 bits"),
            ("10.0.0.0/", "a number"),
            ("10.0.0.0/+8", "a number"),
            ("10.0.0.0/0008", "a number"),
            ("10.0.0/8", "expected an IP address"),
            ("[::1]/128", "expected an IP address"),
            ("", "expected an IP address"),
        ] {
            let e = text.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.starts_with(&format!("invalid network {text:?}")), "{e}");
        }
    }

    #[test]
    fn display_parses_back() {
        for text in ["10.0.0.0/8", "::1/128", "0.0.0.0/0", "2001:db8::/32"] {
            let cidr: Cidr = text.parse().unwrap();
            assert_eq!(cidr.to_string(), text);
            assert_eq!(cidr.to_string().parse::<Cidr>().unwrap(), cidr);
        }
    }
}
