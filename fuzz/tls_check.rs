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
