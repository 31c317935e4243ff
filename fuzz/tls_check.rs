//! The `tls_phase` fuzz target's property, shared with `tests/fuzz_corpus.rs`: arbitrary
//! client bytes against a real TLS listener (a server on a thread of this process, over
//! loopback) never panic the server, never hang a connection, and draw a bounded answer:
//! once the client has sent its bytes and ended its side, the server ends the connection
//! (an end of stream or a reset) within 5 s, having written at most 64 KiB.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use dualstack::{ConnId, Context, Handler, Input, Server, TlsConfig};

/// A self-signed certificate for `localhost` and its key, for this check only (P-256, valid
/// for a century; the server does not check its own certificate's dates).
const CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBlDCCATugAwIBAgIUbQG8WQ8+rViOlNHbfVHM7Z5GAeEwCgYIKoZIzj0EAwIw\n\
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNTE2MzcyM1oYDzIxMjYxMTEx\n\
MTYzNzIzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n\
PQMBBwNCAASpQVlvLaJYwgl61jY7Y7XtPNyPO6FKneZszV4AfZun/7UXblZvvvEy\n\
Q3gK+FI98DC+VWho/bWk+hKX8tQYIlxRo2kwZzAdBgNVHQ4EFgQU93VqEcjaiaWp\n\
6YYDNHWd/xvFT0AwHwYDVR0jBBgwFoAU93VqEcjaiaWp6YYDNHWd/xvFT0AwDwYD\n\
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID\n\
RwAwRAIgXF/xEKHqkfRp66mYEqH11IwN/7CR1OreGZFFYeMV2uICIAhzzwnCAJ7L\n\
tOEqQTwFRnAdc9jEZzDxqPUt1clbdx0y\n\
-----END CERTIFICATE-----\n\
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgzGzwvn7ga8ylPXGT\n\
d61iuULeS0VaFVzvimAdCPR9wMOhRANCAASpQVlvLaJYwgl61jY7Y7XtPNyPO6FK\n\
neZszV4AfZun/7UXblZvvvEyQ3gK+FI98DC+VWho/bWk+hKX8tQYIlxR\n\
-----END PRIVATE KEY-----\n\
";

struct Echo;

impl Handler for Echo {
    type State = ();
    fn on_data(&mut self, ctx: &mut Context<'_, Self>, conn: ConnId, input: &mut Input<'_>) {
        let _ = ctx.send(conn, input.take_all());
    }
}

/// The one TLS listener every input goes to.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let tls = TlsConfig::new()
            .cert_pem(CERT.as_bytes(), KEY.as_bytes())
            .expect("the check's certificate")
            .alpn(["h2", "http/1.1"]);
        let mut server = Server::builder()
            .listen_tls("127.0.0.1:0", tls)
            .bind(Echo)
            .expect("bind the TLS listener");
        let addr = server.listeners()[0].connect_addr().ip().expect("TCP");
        std::thread::spawn(move || server.run().expect("the server loop failed"));
        addr
    })
}

pub fn tls_phase(data: &[u8]) {
    let addr = server();
    let mut client = TcpStream::connect(addr).expect("the TLS listener is gone (a panic?)");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The server may refuse the bytes before they are all written: a reset here is fine.
    let _ = client.write_all(data);
    let _ = client.shutdown(Shutdown::Write);
    let mut answer = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer += n;
                assert!(answer <= 64 * 1024, "the server answered {answer} bytes");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept the connection 5 s after the client's end")
            }
            // A reset: the server closed with the client's bytes unread.
            Err(_) => break,
        }
    }
}

/// A client verifier that takes the check's self-signed certificate (any certificate: the
/// property is about the server's reading of records, not the client's checks).
#[derive(Debug)]
struct AnyCert;

impl dualstack::rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &dualstack::rustls::pki_types::CertificateDer<'_>,
        _: &[dualstack::rustls::pki_types::CertificateDer<'_>],
        _: &dualstack::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: dualstack::rustls::pki_types::UnixTime,
    ) -> Result<dualstack::rustls::client::danger::ServerCertVerified, dualstack::rustls::Error>
    {
        Ok(dualstack::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &dualstack::rustls::pki_types::CertificateDer<'_>,
        _: &dualstack::rustls::DigitallySignedStruct,
    ) -> Result<dualstack::rustls::client::danger::HandshakeSignatureValid, dualstack::rustls::Error>
    {
        Ok(dualstack::rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &dualstack::rustls::pki_types::CertificateDer<'_>,
        dss: &dualstack::rustls::DigitallySignedStruct,
    ) -> Result<dualstack::rustls::client::danger::HandshakeSignatureValid, dualstack::rustls::Error>
    {
        self.verify_tls12_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<dualstack::rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[allow(deprecated)] // ring's default_provider, as the library uses it
fn provider() -> dualstack::rustls::crypto::CryptoProvider {
    dualstack::rustls::crypto::ring::default_provider()
}

/// The fuzzer's TLS client: TLS 1.2 or 1.3 as `tls12` says, no resumption.
fn client(tls12: bool) -> dualstack::rustls::ClientConnection {
    use dualstack::rustls;
    static CONFIGS: OnceLock<[std::sync::Arc<rustls::ClientConfig>; 2]> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        [&rustls::version::TLS13, &rustls::version::TLS12].map(|version| {
            let mut config = rustls::ClientConfig::builder_with_provider(provider().into())
                .with_protocol_versions(&[version])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert))
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            std::sync::Arc::new(config)
        })
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    rustls::ClientConnection::new(configs[tls12 as usize].clone(), name).unwrap()
}

/// The `tls_records` target's property: after a real handshake (TLS 1.3, or 1.2 if bit 1 of
/// `data[0]` is set), what an established connection's reading makes of the client's bytes.
/// With bit 0 clear, the rest of `data`, repeated `data[0] >> 2` + 1 times, is the client's
/// plaintext: written through the session in pieces and to the socket in segments whose
/// sizes come from the data, then a close_notify. The echo must come back whole and in
/// order, and the server must end the connection. With bit 0 set, the rest of `data` is
/// written raw after the handshake (records of any shape, garbage): no panic, no hang, an
/// answer of at most 64 KiB, and the connection ended within 5 s of the client's end.
pub fn tls_records(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let addr = server();
    let mut tcp = TcpStream::connect(addr).expect("the TLS listener is gone (a panic?)");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = client(mode & 2 != 0);
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .expect("the handshake with the check's server");
    }
    // What the server sends is collected on a thread, so that it is never blocked on a
    // client that is still writing (the echo of a large input backs up otherwise).
    let mut reader = tcp.try_clone().unwrap();
    let collected = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(got.len())
                }
                // A reset: the server closed with the client's bytes unread.
                Err(_) => return Ok(got),
            }
        }
    });
    if mode & 1 == 1 {
        // Raw: the server may refuse the bytes before they are all written.
        let _ = tcp.write_all(rest);
        let _ = tcp.shutdown(Shutdown::Write);
        match collected.join().unwrap() {
            Ok(got) => assert!(got.len() <= 64 * 1024, "the server answered {}", got.len()),
            Err(n) => {
                panic!("the server kept the connection 5 s after the client's end ({n} bytes came)")
            }
        }
        return;
    }
    let times = usize::from(mode >> 2) + 1;
    let plain: Vec<u8> = rest
        .iter()
        .copied()
        .cycle()
        .take(rest.len() * times)
        .collect();
    // Sizes from the data: each plaintext piece 1..=20,000 bytes, each segment 1..=40,000.
    let mut sizes = rest
        .iter()
        .cycle()
        .map(|&b| usize::from(b) * 157 % 20_000 + 1);
    let mut wire = Vec::new();
    let mut at = 0;
    while at < plain.len() {
        let n = sizes.next().unwrap_or(1000).min(plain.len() - at);
        tls.writer().write_all(&plain[at..at + n]).unwrap();
        at += n;
        while tls.wants_write() {
            tls.write_tls(&mut wire).unwrap();
        }
    }
    tls.send_close_notify();
    while tls.wants_write() {
        tls.write_tls(&mut wire).unwrap();
    }
    let mut at = 0;
    while at < wire.len() {
        let n = (sizes.next().unwrap_or(1000) * 2).min(wire.len() - at);
        tcp.write_all(&wire[at..at + n])
            .expect("the server refused a well-formed stream");
        at += n;
    }
    let _ = tcp.shutdown(Shutdown::Write);
    let got = match collected.join().unwrap() {
        Ok(got) => got,
        Err(n) => panic!("the server kept the connection 5 s after close_notify ({n} bytes came)"),
    };
    // rustls takes at most a record's worth a call: the whole answer, piece by piece.
    let mut echo = Vec::new();
    let mut answer = &got[..];
    let mut end = Ok(0);
    while !answer.is_empty() {
        if tls.read_tls(&mut answer).unwrap() == 0 {
            break;
        }
        tls.process_new_packets().expect("the server's records");
        // The server's close_notify ends the read with Ok; without it, UnexpectedEof.
        end = tls.reader().read_to_end(&mut echo);
    }
    assert!(
        echo == plain,
        "the echo differs: {} bytes sent, {} back",
        plain.len(),
        echo.len()
    );
    assert!(
        end.is_ok(),
        "the server's end was not a close_notify: {end:?}"
    );
}
