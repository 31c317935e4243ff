//! Regressions named after the bug they guard against.

use std::net::{Ipv6Addr, SocketAddr};

use dualstack::{Host, ListenSpec, ParseErrorKind, ToListenSpec};

/// CPython bpo-20215: `TCPServer(("::1", port))` failed because the family was hard-coded to
/// IPv4. A tuple with an unbracketed IPv6 host must give an IPv6 spec, zone and all.
#[test]
fn bpo_20215_tuple_ipv6_host() {
    let spec = ("::1", 8080)
        .to_listen_spec()
        .expect("(\"::1\", 8080) is a valid spec");
    assert_eq!(spec.host(), &Host::V6(Ipv6Addr::LOCALHOST, None));
    assert_eq!(spec, "[::1]:8080".parse::<ListenSpec>().unwrap());

    let scoped = ("fe80::1%eth0", 80).to_listen_spec().unwrap();
    assert_eq!(scoped.to_string(), "[fe80::1%eth0]:80");
}

/// `SocketAddr::from_str` cannot parse zone names (rust-lang/rfcs#1992); we can, and keep
/// numeric scope ids the way std does.
#[test]
fn zones_that_std_cannot_parse() {
    assert!("[fe80::1%eth0]:80".parse::<SocketAddr>().is_err());
    assert!("[fe80::1%eth0]:80".parse::<ListenSpec>().is_ok());
    let std_addr: SocketAddr = "[fe80::1%3]:80".parse().unwrap();
    assert_eq!(
        std_addr.to_listen_spec().unwrap(),
        "[fe80::1%3]:80".parse::<ListenSpec>().unwrap()
    );
}

/// Whitespace inside a spec once sent the "is the trimmed text valid?" hint into endless
/// recursion (a stack overflow: a crash on bad input).
#[test]
fn inner_whitespace_is_an_error_not_a_crash() {
    let err = "local host:80".parse::<ListenSpec>().unwrap_err();
    assert_eq!(err.kind(), ParseErrorKind::Whitespace);
    let err = ("local host", 80).to_listen_spec().unwrap_err();
    assert_eq!(err.kind(), ParseErrorKind::Whitespace);
}

/// `inet_aton` reads `127.1` as 127.0.0.1 and `0x7f000001` likewise; handing such "names"
/// to a resolver would bind an address the user never wrote.
#[test]
fn legacy_ipv4_forms_are_never_names() {
    for input in [
        "127.1:80",
        "0x7f000001:80",
        "2130706433:80",
        "0177.0.0.1:80",
    ] {
        let result = input.parse::<ListenSpec>();
        assert!(
            !matches!(result, Ok(ref s) if matches!(s.host(), Host::Name(_))),
            "{input:?} became a name: {result:?}"
        );
    }
}
