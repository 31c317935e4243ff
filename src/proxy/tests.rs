//! The parser's and the encoder's tests, over the public API of this module (both
//! versions, TLVs, every split point).

use super::*;

fn parse(bytes: &[u8]) -> Result<ProxyParsed, ProxyError> {
    ProxyHeader::parse(bytes, ProxyVersions::BOTH)
}

fn header(bytes: &[u8]) -> (ProxyHeader, usize) {
    match parse(bytes) {
        Ok(ProxyParsed::Header(h, n)) => (h, n),
        other => panic!("{:?}: {other:?}", bytes.escape_ascii().to_string()),
    }
}

fn error(bytes: &[u8]) -> ProxyError {
    match parse(bytes) {
        Err(e) => e,
        other => panic!(
            "{:?} was accepted: {other:?}",
            bytes.escape_ascii().to_string()
        ),
    }
}

/// A hostile review: SSL TLVs each inside the last, as deep as a 64 KiB header allows
/// (~8,000), overflowed the stack (the parser recursed once per level before it looked
/// for an SSL TLV inside an SSL TLV) and aborted the whole process.
#[test]
fn ssl_tlvs_nested_as_deep_as_a_header_allows_are_refused_without_recursing() {
    let mut tlv: Vec<u8> = vec![tlv::SSL, 0, 5, 1, 0, 0, 0, 0];
    while tlv.len() + 8 <= 65535 - 12 {
        let mut outer = vec![tlv::SSL];
        outer.extend(((tlv.len() + 5) as u16).to_be_bytes());
        outer.extend([1, 0, 0, 0, 0]);
        outer.extend(&tlv);
        tlv = outer;
    }
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    bytes.extend(((12 + tlv.len()) as u16).to_be_bytes());
    bytes.extend([192, 0, 2, 1, 127, 0, 0, 1, 0, 1, 0, 2]);
    bytes.extend(&tlv);
    // A small stack, as a server thread may have: one level of nesting fits in it.
    let e = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || error(&bytes))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(e.kind(), ProxyErrorKind::BadTlv, "{e}");
    assert!(
        e.to_string().contains("an SSL TLV inside an SSL TLV"),
        "{e}"
    );
    // The second SSL TLV: the first's sub-TLVs begin 16 + 12 + 3 + 5 bytes in.
    assert_eq!(e.offset(), 16 + 12 + 3 + 5, "{e}");
}

/// A hostile review: `to_bytes` cut what did not fit and wrote TLVs `parse` refuses, so
/// its "reads back as the same header" did not hold. `with_tlv` refuses them instead.
#[test]
fn with_tlv_refuses_what_parse_would_and_what_cannot_be_encoded() {
    let h = || {
        ProxyHeader::v2(
            "192.0.2.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        )
    };
    let kind = |r: Result<ProxyHeader, ProxyError>| r.map(|_| ()).unwrap_err().kind();
    use ProxyErrorKind::*;
    assert_eq!(kind(h().with_tlv(tlv::SSL, vec![])), BadTlv);
    assert_eq!(kind(h().with_tlv(tlv::UNIQUE_ID, vec![b'u'; 129])), BadTlv);
    let crc = h().with_tlv(tlv::CRC32C, vec![]).unwrap();
    assert_eq!(kind(crc.with_tlv(tlv::CRC32C, vec![])), BadTlv);
    let big = h().with_tlv(tlv::NOOP, vec![0; 40_000]).unwrap();
    assert_eq!(
        kind(big.clone().with_tlv(tlv::NOOP, vec![0; 40_000])),
        BadLength
    );
    let v1 = ProxyHeader::v1(
        "192.0.2.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    assert_eq!(kind(v1.with_tlv(tlv::ALPN, b"h2".to_vec())), Unsupported);
    assert_eq!(
        kind(ProxyHeader::local().with_tlv(tlv::ALPN, b"h2".to_vec())),
        Unsupported
    );
    // The largest header that fits reads back whole.
    let room = usize::from(u16::MAX) - (big.to_bytes().len() - 16) - 3;
    let full = big.with_tlv(tlv::NOOP, vec![7; room]).unwrap();
    let bytes = full.to_bytes();
    assert_eq!(bytes.len(), 16 + usize::from(u16::MAX));
    assert_eq!(header(&bytes), (full, bytes.len()));
}

/// Issue #21, item 5: two CRC32C TLVs, each right with only itself zeroed, parsed; their
/// `to_bytes` (which writes one checksum over both) did not parse back.
#[test]
fn a_second_crc32c_tlv_is_refused_as_with_tlv_refuses_it() {
    let one = ProxyHeader::v2(
        "192.0.2.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    )
    .with_tlv(tlv::CRC32C, vec![])
    .unwrap();
    let mut bytes = one.to_bytes();
    // Append a second CRC32C TLV, then make each checksum right with only itself
    // zeroed (the other one as it will be sent).
    bytes.extend_from_slice(&[tlv::CRC32C, 0, 4, 0, 0, 0, 0]);
    let len = u16::try_from(bytes.len() - 16).unwrap();
    bytes[14..16].copy_from_slice(&len.to_be_bytes());
    let (first, second) = (bytes.len() - 7 - 4, bytes.len() - 4);
    for _ in 0..4 {
        for at in [first, second] {
            let mut copy = bytes.clone();
            copy[at..at + 4].fill(0);
            let crc = crc32c(&copy).to_be_bytes();
            bytes[at..at + 4].copy_from_slice(&crc);
        }
    }
    let err = error(&bytes);
    assert_eq!(err.kind(), ProxyErrorKind::BadTlv, "{err}");
    assert_eq!(err.offset(), second - 3, "{err}");
    assert!(err.to_string().contains("second CRC32C"), "{err}");
}

/// Issue #21, item 5: an `AF_UNIX` address kept the garbage after its first NUL.
#[test]
fn unix_addresses_end_at_their_first_nul_and_abstract_ones_keep_their_leading_one() {
    let mut path = [0u8; 108];
    path[..6].copy_from_slice(b"/a.skx");
    path[6] = 0;
    path[7..10].copy_from_slice(b"bad");
    assert_eq!(trim_nul(&path), b"/a.skx");
    let mut name = [0u8; 108];
    name[1..4].copy_from_slice(b"app");
    name[5..8].copy_from_slice(b"bad");
    assert_eq!(trim_nul(&name), b"\0app");
    assert_eq!(trim_nul(&[0; 108]), b"", "an unnamed socket");
    assert_eq!(
        trim_nul(&[b'x'; 108]),
        [b'x'; 108],
        "a path that fills it all"
    );
}

/// Issue #17: an error names the byte it was found at: the field that is wrong, the
/// CRLF that ends a line whose grammar is wrong, the fixed byte of a v2 header, the TLV
/// that overruns.
#[test]
fn errors_name_the_byte_they_were_found_at() {
    use ProxyErrorKind::*;
    let sig = b"\r\n\r\n\x00\r\nQUIT\n".as_slice();
    let v2 = |rest: &[&[u8]]| [&[sig][..], rest].concat().concat();
    let cases: Vec<(&str, Vec<u8>, usize, ProxyErrorKind)> = vec![
        ("not a header", b"GET / HTTP/1.1\r\n".to_vec(), 0, NotProxy),
        (
            "a leading zero",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            11,
            BadAddress,
        ),
        (
            "a signed port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(),
            27,
            BadAddress,
        ),
        (
            "a bare LF",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
            30,
            Malformed,
        ),
        (
            "two spaces",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            31,
            Malformed,
        ),
        (
            "no CRLF",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
            107,
            TooLong,
        ),
        (
            "a wrong v2 signature",
            b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c".to_vec(),
            10,
            NotProxy,
        ),
        (
            "version 3",
            v2(&[&[0x31, 0x11, 0, 12], &[0; 12]]),
            12,
            Unsupported,
        ),
        (
            "family 4",
            v2(&[&[0x21, 0x41, 0, 12], &[0; 12]]),
            13,
            Unsupported,
        ),
        (
            "a short length",
            v2(&[&[0x21, 0x11, 0, 11], &[0; 11]]),
            14,
            BadLength,
        ),
        (
            "a TLV past the end",
            v2(&[&[0x21, 0x11, 0, 16], &[0; 12], &[tlv::ALPN, 0, 9, b'h']]),
            28,
            BadLength,
        ),
    ];
    for (what, bytes, offset, kind) in cases {
        let e = error(&bytes);
        assert_eq!((e.offset(), e.kind()), (offset, kind), "{what}: {e}");
        assert!(
            e.to_string().contains(&format!("at byte {offset}")),
            "{what}: {e}"
        );
    }
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
}

#[test]
fn v1_lines_parse_and_report_their_length() {
    let (h, n) = header(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nrest");
    assert_eq!(n, 45);
    assert_eq!(h.source(), Some("192.0.2.7:56324".parse().unwrap()));
    assert_eq!(h.destination(), Some("198.51.100.1:443".parse().unwrap()));
    let (h, _) = header(b"PROXY TCP6 ::ffff:127.0.0.1 ::1 1 65535\r\n");
    assert_eq!(
        h.source(),
        Some("127.0.0.1:1".parse().unwrap()),
        "HAProxy's v4v6 frontends send mapped addresses: normalized"
    );
    let (h, n) = header(b"PROXY UNKNOWN whatever is here\r\nX");
    assert_eq!((h.addresses(), n), (&ProxyAddresses::Unknown, 32));
    let (h, _) = header(b"PROXY UNKNOWN\r\n");
    assert_eq!(h.addresses(), &ProxyAddresses::Unknown);
    // The longest TCP line (104 bytes), and an UNKNOWN line of the most a receiver must
    // take (107).
    let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(header(longest).1, 104);
    let unknown = [b"PROXY UNKNOWN ".as_slice(), &[b'u'; 91], b"\r\n"].concat();
    assert_eq!(header(&unknown).1, V1_MAX);
}

#[test]
fn v1_every_prefix_is_incomplete_and_one_byte_at_a_time_works() {
    let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
    for end in 0..line.len() {
        assert_eq!(parse(&line[..end]), Ok(ProxyParsed::Incomplete), "{end}");
    }
    assert_eq!(header(line).1, line.len());
}

#[test]
fn v1_refusals_say_what_and_where() {
    use ProxyErrorKind::*;
    let cases: &[(&[u8], ProxyErrorKind, &str)] = &[
        (b"GET / HTTP/1.1\r\n", NotProxy, "expected a PROXY header"),
        (b"PROXI TCP4", NotProxy, "signature"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Malformed, "bare LF"),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            Malformed,
            "CR not followed by LF",
        ),
        (
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            Malformed,
            "not printable",
        ),
        (
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            Malformed,
            "protocol \"UDP4\"",
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Malformed, "3 fields"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", Malformed, "fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Malformed, "fields"),
        (
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            BadAddress,
            "not an IPv4 address",
        ),
        (
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            BadAddress,
            "not an IPv6 address",
        ),
        (
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            BadAddress,
            "\"01.2.3.4\"",
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            BadAddress,
            "no leading zeros",
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            BadAddress,
            "\"65536\"",
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", BadAddress, "\"+1\""),
        (
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            BadAddress,
            "fe80::1%eth0",
        ),
    ];
    for (bytes, kind, text) in cases {
        let e = error(bytes);
        assert_eq!(e.kind(), *kind, "{e}");
        assert!(e.to_string().contains(text), "{e} lacks {text}");
        assert!(
            e.to_string().starts_with("invalid PROXY header at byte "),
            "{e}"
        );
    }
    // 200 bytes with no CRLF: refused at 107, not waited for.
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 186]].concat();
    assert_eq!(error(&long).kind(), TooLong);
    assert_eq!(error(&long[..V1_MAX]).kind(), TooLong);
    assert_eq!(parse(&long[..V1_MAX - 1]), Ok(ProxyParsed::Incomplete));
}

#[test]
fn versions_not_accepted_are_refused() {
    let v1 = b"PROXY UNKNOWN\r\n";
    let only_v2 = ProxyVersions {
        v1: false,
        v2: true,
    };
    let e = ProxyHeader::parse(v1, only_v2).unwrap_err();
    assert_eq!(e.kind(), ProxyErrorKind::VersionNotAccepted);
    let only_v1 = ProxyVersions {
        v1: true,
        v2: false,
    };
    let e = ProxyHeader::parse(&V2_SIGNATURE, only_v1).unwrap_err();
    assert_eq!(e.kind(), ProxyErrorKind::VersionNotAccepted);
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(command);
    out.push(family);
    out.extend((body.len() as u16).to_be_bytes());
    out.extend(body);
    out
}

#[test]
fn v2_addresses_of_each_family() {
    let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
    body.extend(56324u16.to_be_bytes());
    body.extend(443u16.to_be_bytes());
    let bytes = [v2(0x21, 0x11, &body), b"data".to_vec()].concat();
    let (h, n) = header(&bytes);
    assert_eq!(n, 28);
    assert_eq!(h.source(), Some("192.0.2.7:56324".parse().unwrap()));
    assert_eq!(h.command(), ProxyCommand::Proxy);

    let mut body = Ipv6Addr::LOCALHOST.octets().to_vec();
    body.extend(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets());
    body.extend([0, 80, 1, 187]);
    let (h, _) = header(&v2(0x21, 0x21, &body));
    assert_eq!(h.source(), Some("[::1]:80".parse().unwrap()));
    assert_eq!(
        h.destination(),
        Some("10.0.0.1:443".parse().unwrap()),
        "normalized"
    );

    let mut body = [0u8; 216];
    body[..4].copy_from_slice(b"/a/b");
    body[108..111].copy_from_slice(b"\0ab");
    let (h, _) = header(&v2(0x21, 0x31, &body));
    assert_eq!(
        h.addresses(),
        &ProxyAddresses::Unix {
            source: b"/a/b".to_vec(),
            destination: b"\0ab".to_vec()
        }
    );
    assert_eq!(h.source(), None, "a Unix client has no IP address");
}

#[test]
fn v2_local_and_unspec_keep_the_real_endpoints_and_skip_the_length_exactly() {
    // A health check: LOCAL, with whatever in its body.
    let bytes = [v2(0x20, 0x11, &[1, 2, 3, 4, 5]), b"after".to_vec()].concat();
    let (h, n) = header(&bytes);
    assert_eq!(
        (h.command(), h.addresses(), n),
        (ProxyCommand::Local, &ProxyAddresses::Unknown, 21)
    );
    let (h, n) = header(&v2(0x21, 0x00, &[]));
    assert_eq!((h.addresses(), n), (&ProxyAddresses::Unknown, 16));
}

#[test]
fn v2_incomplete_until_the_length_is_here_and_its_refusals() {
    use ProxyErrorKind::*;
    let full = v2(0x21, 0x11, &[0; 12]);
    for end in 0..full.len() {
        assert_eq!(parse(&full[..end]), Ok(ProxyParsed::Incomplete), "{end}");
    }
    // Length 65535 and no body: incomplete (the reactor's header deadline ends it).
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend([0x21, 0x11, 0xff, 0xff]);
    assert_eq!(parse(&huge), Ok(ProxyParsed::Incomplete));
    let cases: Vec<(Vec<u8>, ProxyErrorKind, &str)> = vec![
        (
            b"\r\n\r\n\0\r\nQUIX".to_vec(),
            NotProxy,
            "version 2 signature",
        ),
        (
            [V2_SIGNATURE.as_slice(), &[0x11]].concat(),
            Unsupported,
            "protocol version 1",
        ),
        (
            [V2_SIGNATURE.as_slice(), &[0x22]].concat(),
            Unsupported,
            "command 2",
        ),
        (
            [V2_SIGNATURE.as_slice(), &[0x21, 0x41]].concat(),
            Unsupported,
            "address family 4",
        ),
        (
            [V2_SIGNATURE.as_slice(), &[0x21, 0x13]].concat(),
            Unsupported,
            "protocol 3",
        ),
        (v2(0x21, 0x12, &[0; 12]), Unsupported, "datagram"),
        (v2(0x21, 0x11, &[0; 11]), BadLength, "too short"),
        (v2(0x21, 0x21, &[0; 35]), BadLength, "too short"),
        (
            v2(0x21, 0x11, &[[0; 12].as_slice(), &[1, 0]].concat()),
            BadLength,
            "2 bytes left",
        ),
        (
            v2(0x21, 0x11, &[[0; 12].as_slice(), &[1, 0, 5, 1]].concat()),
            BadLength,
            "length 5",
        ),
        (
            v2(0x21, 0x11, &[[0; 12].as_slice(), &[3, 0, 2, 1, 2]].concat()),
            BadTlv,
            "CRC32C TLV has 2",
        ),
        (
            v2(
                0x21,
                0x11,
                &[[0; 12].as_slice(), &[5, 0, 129], &[7; 129]].concat(),
            ),
            BadTlv,
            "at most 128",
        ),
        (
            v2(
                0x21,
                0x11,
                &[[0; 12].as_slice(), &[0x20, 0, 4, 1, 0, 0, 0]].concat(),
            ),
            BadTlv,
            "at least 5",
        ),
        (
            v2(
                0x21,
                0x11,
                &[[0; 12].as_slice(), &[0x20, 0, 6, 1, 0, 0, 0, 0, 0x21]].concat(),
            ),
            BadLength,
            "1 bytes left",
        ),
    ];
    for (bytes, kind, text) in cases {
        let e = error(&bytes);
        assert_eq!(e.kind(), kind, "{e}");
        assert!(e.to_string().contains(text), "{e} lacks {text}");
    }
}

#[test]
fn v2_tlvs_are_exposed_and_the_crc_is_checked() {
    let source: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
    let destination: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let mut ssl = vec![1, 0, 0, 0, 0];
    ssl.extend([tlv::SSL_VERSION, 0, 7]);
    ssl.extend(b"TLSv1.3");
    ssl.extend([tlv::SSL_CN, 0, 6]);
    ssl.extend(b"client");
    let h = ProxyHeader::v2(source, destination)
        .with_tlv(tlv::ALPN, b"h2".to_vec())
        .and_then(|h| h.with_tlv(tlv::AUTHORITY, b"example.com".to_vec()))
        .and_then(|h| h.with_tlv(tlv::UNIQUE_ID, b"id-1".to_vec()))
        .and_then(|h| h.with_tlv(tlv::SSL, ssl))
        .and_then(|h| h.with_tlv(tlv::CRC32C, vec![]))
        .unwrap();
    let bytes = h.to_bytes();
    let (back, n) = header(&bytes);
    assert_eq!(n, bytes.len());
    assert_eq!(back.alpn(), Some(&b"h2"[..]));
    assert_eq!(back.authority(), Some(&b"example.com"[..]));
    assert_eq!(back.unique_id(), Some(&b"id-1"[..]));
    let ssl = back.ssl().unwrap();
    assert_eq!((ssl.client, ssl.verify), (1, 0));
    assert_eq!(
        (ssl.version(), ssl.common_name()),
        (Some("TLSv1.3"), Some("client"))
    );
    assert_eq!(back.to_bytes(), bytes, "re-encodes to the same bytes");
    // One bit flipped anywhere in the addresses: the checksum catches it.
    let mut bad = bytes.clone();
    bad[20] ^= 1;
    assert_eq!(error(&bad).kind(), ProxyErrorKind::Checksum);
}

#[test]
fn built_headers_round_trip() {
    let four: SocketAddr = "192.0.2.7:1".parse().unwrap();
    let six: SocketAddr = "[::1]:2".parse().unwrap();
    for h in [
        ProxyHeader::v1(four, four),
        ProxyHeader::v1(six, six),
        ProxyHeader::v2(four, four),
        ProxyHeader::v2(six, six),
        ProxyHeader::local(),
    ] {
        let bytes = h.to_bytes();
        assert_eq!(header(&bytes), (h, bytes.len()));
    }
}

/// Tenth review of #23: a version 1 header of an IPv4 client on an IPv6 destination (a
/// relay's dual-stack socket, whose peers this crate normalizes to IPv4) was written as
/// `PROXY UNKNOWN`, and the client's address was lost in silence. Both are written as IPv6,
/// and read back as the addresses given.
#[test]
fn a_version_1_header_of_two_families_keeps_both_addresses() {
    let four: SocketAddr = "203.0.113.5:51000".parse().unwrap();
    let six: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    for (source, destination) in [(four, six), (six, four)] {
        let bytes = ProxyHeader::v1(source, destination).to_bytes();
        assert!(bytes.starts_with(b"PROXY TCP6 "), "{}", shown(&bytes));
        let (back, n) = header(&bytes);
        assert_eq!(n, bytes.len());
        assert_eq!(back.source(), Some(source));
        assert_eq!(back.destination(), Some(destination));
    }
}
