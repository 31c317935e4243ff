#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/TARGET/seed-*) from the interesting inputs of the
unit tests: zones, mapped addresses, edge ports, long names, near misses. Rerun after adding
inputs; `cargo test` runs every file through the targets' checks (tests/fuzz_corpus.rs)."""
import hashlib, os

HERE = os.path.dirname(os.path.abspath(__file__))

SPECS = [
    "localhost:80", "LocalHost:80", "example.com.:443", "my_host-1.example:1", "xn--bcher-kva.example:80",
    "127.0.0.1:8080", "0.0.0.0:0", "[::1]:8080", "[::]:80", "[0:0:0:0:0:0:0:1]:1", "[::FFFF:1.2.3.4]:80",
    "[::1.2.3.4]:80", "[fe80::1%eth0]:80", "[fe80::1%eth0.100]:80", "[fe80::1%2]:80", "[fe80::1%25eth0]:80",
    "[fe80::1%25]:80", "[fe80::1%251]:80", "[fe80::1%2525x]:80", "[fe80::1%0]:80", "[fe80::1%4294967295]:80",
    "[fe80::1%4294967296]:80", ":80", "*:80", "80", "0", "65535", "65536", "localhost:0080", "localhost:0",
    "", " localhost:80", "localhost: 80", "local host:80", "http://localhost:8080", "https://user@example.com/path?q",
    "ftp://", "::1:80", "fe80::1%eth0:80", "::1", "a:b:c", "[::1:80", "localhost", "[::1]", "localhost:", "*", ":",
    "localhost:70000", "localhost:99999999999999999999", ":http", "localhost:https", "localhost:8o80",
    "localhost:+80", "localhost:-1", "[::g]:80", "[1.2.3.4]:80", "[]:80", "256.1.1.1:80", "127.1:80",
    "01.2.3.4:80", "0x7f.1:80", "0x7f000001:80", "example.0x:80", "1.2.3.4.:80", "foo!:80", "a..b:80", ".a:80",
    ".:80", "bücher.example:80", "[fe80::1%]:80", "[fe80::1%eth/0]:80", "[fe80::1%25eth%0]:80",
    "[fe80::1%99999999999]:80", "[::1]x80", "[::1]]:80", "app.localhost.:1", "[[::1]]:80", "[::1%3]:80",
    ("a" * 63) + ":1", ("a" * 64) + ":1", ".".join(["a" * 63] * 4)[:253] + ":1", ".".join(["a" * 63] * 4)[:254] + ":1",
    # Issue #13: trailing dots, hyphens at label edges, over-long input, and interface
    # names that look like numbers or the %25 escape (each is also fed to the zone checks).
    "127.0.0.1.:80", "-a:80", "ex-.-ample:80", "xn--:80", "a-:80", "7", "25x", "2525x", "a+b", "eth.1",
    "x" * 600, "[fe80::1%7]:0", "[fe80::1%2525x]:0", "[224.0.0.1]:0", "224.0.0.1:0", "255.255.255.255:0",
    "[::ffff:224.0.0.1]:0", "[ff02::1]:0", "[fe80::1]:0",
    # Issue #16: Unix-domain sockets, inherited sockets and their near misses.
    "unix:/run/app.sock", "/run/app.sock", "./app.sock", "../a.sock", "unix:app.sock", "unix:///var/run/x.sock",
    "unix:@app", "@app", "@app:1", "@", "unix:", "unix:/run/", "unix: /a", "/tmp/a\nb", "/" + "p" * 106,
    "/" + "p" * 107, "@" + "n" * 107, "@" + "n" * 108, "sd-listen", "sd-listen:web", "sd-listen:", "sd-listen:a:b",
    "sd-listen:a b", "sd-listen:" + "w" * 256, "fd:3", "fd:0", "fd:2", "fd:-3", "fd:+3", "fd:", "fd:2147483647",
    "fd:2147483648", "fd:03", "sd-listen ", "unix:/with space/s",
]

ADDRS = [
    "127.0.0.1:80", "0.0.0.0:0", "[::ffff:127.0.0.1]:4242", "[::ffff:0.0.0.0]:1", "[::ffff:255.255.255.255]:65535",
    "[::1]:80", "[::]:80", "[::1.2.3.4]:80", "[fe80::1%3]:80", "[febf::1%3]:80", "[fec0::1%3]:80",
    "[ff02::1%3]:80", "[ff0e::1%3]:80", "[::1%3]:80", "[2001:db8::1%7]:80", "[fe80::1%1]:80",
]

# Plan: a spec, NUL, then bytes for arbitrary (family, stack, five capability flags,
# resolver failure, addresses). A few byte patterns give different host shapes.
PLAN_SPECS = [":0", ":80", "0.0.0.0:80", "[::]:80", "localhost:0", "localhost:80", "127.0.0.1:80", "[::1]:80",
              "[::ffff:127.0.0.1]:80", "[fe80::1%eth0]:80", "[fe80::1%wlan9]:80", "[2001:db8::1%eth0]:80",
              "[fe80::1%3]:80", "example.com:443", "app.localhost:1", "blocked.test:0", "224.0.0.1:0",
              "[ff02::1%eth0]:0", "[fe80::1]:0", "unix:/run/a.sock", "@a", "sd-listen", "fd:3"]
PLAN_TAILS = [
    b"",
    bytes([0, 0, 1, 1, 1, 1, 1, 0]),
    bytes([1, 1, 1, 0, 0, 1, 0, 0]),
    bytes([2, 0, 0, 1, 0, 0, 1, 0]),
    bytes([3, 0, 1, 1, 0, 1, 1, 0]),
    bytes([0, 1, 1, 1, 1, 0, 1, 1]),
    bytes([0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 192, 0, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 192, 0, 2, 1]),
    # Answers (each an address and a scope byte): 0.0.0.0, 127.0.0.1, fe80::1 with scope 1.
    bytes([0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 127, 0, 0, 1, 0, 1, 1, 0xfe, 0x80] + [0] * 13 + [1, 1]),
]


# PROXY protocol headers (issue #17): v1 lines, v2 headers of each family, TLVs, LOCAL,
# and near misses; each is also a seed with data after it.
def v2(command, family, body):
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([command, family]) + len(body).to_bytes(2, "big") + body


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def with_crc(command, family, body_without_crc):
    body = body_without_crc + bytes([0x03, 0, 4, 0, 0, 0, 0])
    header = bytearray(v2(command, family, body))
    header[-4:] = crc32c(bytes(header)).to_bytes(4, "big")
    return bytes(header)


INET = bytes([192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb])
INET6 = bytes(15) + b"\x01" + bytes(10) + b"\xff\xff\x7f\x00\x00\x01" + b"\x00\x50\x01\xbb"
PROXY = [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n",
    b"PROXY TCP6 ::ffff:127.0.0.1 ::1 1 65535\r\n",
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
    b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN " + b"u" * 91 + b"\r\n", b"PROXY UNKNOWN " + b"x" * 186,
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", b"PROXY TCP4 ::1 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", b"GET / HTTP/1.1\r\n",
    v2(0x21, 0x11, INET), v2(0x21, 0x21, INET6), v2(0x21, 0x31, b"/a/b" + bytes(104) + b"\x00ab" + bytes(105)),
    v2(0x20, 0x00, b""), v2(0x20, 0x11, b"\x01\x02\x03"), v2(0x21, 0x00, b""), v2(0x21, 0x10, INET),
    v2(0x21, 0x12, INET), v2(0x21, 0x11, INET[:11]), v2(0x22, 0x11, INET), v2(0x11, 0x11, INET),
    v2(0x21, 0x41, INET), v2(0x21, 0x11, INET + b"\x01\x00\x02h2\x02\x00\x0bexample.com\x05\x00\x02id"),
    v2(0x21, 0x11, INET + b"\x20\x00\x0f\x01\x00\x00\x00\x00\x21\x00\x07TLSv1.3"),
    v2(0x21, 0x11, INET + b"\x01\x00\x05h2"), v2(0x21, 0x11, INET + b"\x03\x00\x02ab"),
    with_crc(0x21, 0x11, INET), with_crc(0x21, 0x21, INET6 + b"\x05\x00\x04abcd"),
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", b"X\r\n\r\n\x00\r\nQUIT\n",
]


def nested_ssl():
    """A header as long as v2 allows, of SSL TLVs each inside the last (~8,000 deep): the
    parser once recursed per level and overflowed the stack."""
    tlv = bytes([0x20, 0, 5, 1, 0, 0, 0, 0])
    while len(tlv) + 8 <= 65535 - len(INET):
        tlv = bytes([0x20]) + (len(tlv) + 5).to_bytes(2, "big") + bytes([1, 0, 0, 0, 0]) + tlv
    return v2(0x21, 0x11, INET + tlv)


PROXY.append(nested_ssl())


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(d, f"seed-{name}-{digest}"), "wb") as f:
        f.write(data)


for i, s in enumerate(SPECS):
    write("parse_spec", f"{i:03}", s.encode())
for i, a in enumerate(ADDRS):
    write("normalize", f"text{i:03}", b"\x01" + a.encode())
    write("normalize", f"raw{i:03}", b"\x00" + hashlib.sha256(a.encode()).digest())
for i, s in enumerate(PLAN_SPECS):
    for j, tail in enumerate(PLAN_TAILS):
        write("plan", f"{i:03}-{j}", s.encode() + b"\x00" + tail)
for i, header in enumerate(PROXY):
    write("proxy", f"{i:03}", header)
    write("proxy", f"{i:03}-data", header + b"GET / HTTP/1.1\r\n")
