//! Property tests of the address layer's public promises: Display/parse round trips,
//! `normalize` is idempotent, we accept everything `std` accepts (with the same address), and
//! no input makes the parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use dualstack::{display_addr, normalize, Host, HostName, ListenSpec, ToListenSpec, Zone};
use proptest::prelude::*;

fn zone() -> impl Strategy<Value = Option<Zone>> {
    prop_oneof![
        Just(None),
        any::<u32>().prop_map(Zone::from_index),
        // Zone::parse also reads the URI form, so names starting "25" come out of this too.
        "(25)?[a-zA-Z0-9._~-]{1,15}"
            .prop_filter_map("not a zone", |s| Zone::parse(&s).ok().map(Some)),
    ]
}

fn host_name() -> impl Strategy<Value = HostName> {
    "[a-zA-Z0-9_-]{1,63}(\\.[a-zA-Z0-9_-]{1,20}){0,4}\\.?"
        .prop_filter_map("not a host name", |s| HostName::new(&s).ok())
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        Just(Host::Any),
        any::<Ipv4Addr>().prop_map(Host::V4),
        (any::<Ipv6Addr>(), zone()).prop_map(|(a, z)| Host::V6(a, z)),
        any::<Ipv4Addr>().prop_map(|a| Host::V6(a.to_ipv6_mapped(), None)),
        host_name().prop_map(Host::Name),
    ]
}

fn spec() -> impl Strategy<Value = ListenSpec> {
    (host(), any::<u16>()).prop_map(|(h, p)| ListenSpec::new(h, p))
}

/// Socket addresses with flow info and scope ids set, biased towards the interesting kinds.
fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    let v6 =
        |ip: Ipv6Addr, port, flow, scope| SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope));
    prop_oneof![
        any::<SocketAddrV4>().prop_map(SocketAddr::V4),
        (any::<Ipv6Addr>(), any::<u16>(), any::<u32>(), any::<u32>())
            .prop_map(move |(ip, p, f, s)| v6(ip, p, f, s)),
        (any::<Ipv4Addr>(), any::<u16>(), any::<u32>(), any::<u32>())
            .prop_map(move |(ip, p, f, s)| v6(ip.to_ipv6_mapped(), p, f, s)),
        (any::<u64>(), any::<u16>(), any::<u32>(), 0u32..4).prop_map(move |(low, p, f, s)| v6(
            Ipv6Addr::from((0xfe80u128 << 112) | u128::from(low)),
            p,
            f,
            s
        )),
        (any::<u128>(), any::<u16>(), 0u32..4).prop_map(move |(bits, p, s)| v6(
            Ipv6Addr::from((0xffu128 << 120) | (bits >> 8)),
            p,
            0,
            s
        )),
    ]
}

/// The socket address a numeric spec names; `None` for a wildcard or a name.
fn numeric(spec: &ListenSpec) -> Option<SocketAddr> {
    let port = spec.port()?;
    match spec.host()? {
        Host::V4(a) => Some(SocketAddr::from((*a, port))),
        Host::V6(a, zone) => {
            let scope = zone
                .as_ref()
                .map_or(0, |z| z.index().expect("numeric zone"));
            Some(SocketAddr::V6(SocketAddrV6::new(*a, port, 0, scope)))
        }
        Host::Any | Host::Name(_) => None,
    }
}

/// Strings that look like socket addresses, near misses included.
fn addr_like() -> impl Strategy<Value = String> {
    prop_oneof![
        socket_addr().prop_map(|a| a.to_string()),
        socket_addr().prop_map(|a| format!("{a:?}")),
        "[0-9a-fA-F:.%\\[\\]*]{0,45}",
        "\\[[0-9a-fA-F:.]{0,39}(%[0-9a-z]{0,12})?\\]:[0-9]{0,7}",
        "[0-9.]{0,16}:[0-9]{0,7}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn display_then_parse_gives_the_same_spec(spec in spec()) {
        let text = spec.to_string();
        let parsed: ListenSpec = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(parsed, spec);
    }

    #[test]
    fn normalize_is_idempotent_and_unmaps(addr in socket_addr()) {
        let once = normalize(addr);
        prop_assert_eq!(normalize(once), once);
        prop_assert_eq!(once.port(), addr.port());
        if let SocketAddr::V6(a) = addr {
            match a.ip().to_ipv4_mapped() {
                Some(v4) => prop_assert_eq!(once.ip(), IpAddr::V4(v4)),
                None => {
                    prop_assert_eq!(once.ip(), IpAddr::V6(*a.ip()));
                    let SocketAddr::V6(n) = once else { unreachable!("stays IPv6") };
                    prop_assert_eq!(n.flowinfo(), 0);
                }
            }
        } else {
            prop_assert_eq!(once, addr);
        }
    }

    #[test]
    fn display_addr_parses_back_to_the_normalized_address(addr in socket_addr()) {
        let shown = display_addr(addr).to_string();
        let spec: ListenSpec = shown.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let back = match spec.host() {
            Some(Host::V6(ip, zone)) => {
                let scope = match zone {
                    Some(z) => z.to_index().map_err(|e| TestCaseError::fail(format!("{e}")))?,
                    None => 0,
                };
                SocketAddr::V6(SocketAddrV6::new(*ip, addr.port(), 0, scope))
            }
            _ => numeric(&spec).expect("display_addr prints a numeric address"),
        };
        prop_assert_eq!(back, normalize(addr));
    }

    #[test]
    fn everything_std_accepts_we_accept_with_the_same_address(s in addr_like()) {
        if let Ok(std_addr) = s.parse::<SocketAddr>() {
            let ours: ListenSpec = s.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(numeric(&ours), Some(std_addr));
            prop_assert_eq!(s.to_listen_spec().ok(), Some(ours));
        }
    }

    #[test]
    fn arbitrary_text_never_panics_and_errors_quote_it(s in prop_oneof!["\\PC{0,40}", ".{0,40}", addr_like()]) {
        match s.parse::<ListenSpec>() {
            Ok(spec) => prop_assert_eq!(spec.to_string().parse::<ListenSpec>().ok(), Some(spec)),
            Err(e) => {
                let prefix = format!("invalid listen spec {:?}: ", s);
                prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
                prop_assert_eq!(e.input(), s.as_str());
                if let Some(p) = e.position() {
                    prop_assert!(p <= s.len(), "position {} past the end of {:?}", p, s);
                }
            }
        }
        match (s.as_str(), 1u16).to_listen_spec() {
            Ok(spec) => prop_assert_eq!(spec.to_string().parse::<ListenSpec>().ok(), Some(spec)),
            Err(e) => {
                let prefix = format!("invalid listen host {:?}: ", s);
                prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
            }
        }
    }
}
