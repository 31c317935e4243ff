//! Bounded helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts one connection on a non-blocking mio listener, waiting at most [`TIMEOUT`].
#[track_caller]
pub fn accept(listener: &mut mio::net::TcpListener) -> (mio::net::TcpStream, SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok(pair) => return pair,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("accept on {:?} failed: {e}", listener.local_addr()),
        }
    }
}

/// Connects to `addr` with a bounded timeout.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr} failed: {e}"));
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("set write timeout");
    stream
}

/// Whether a TCP connection to `addr` is refused (or otherwise fails) within the timeout.
pub fn cannot_connect(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, TIMEOUT).is_err()
}

/// Sends `data` on `stream` and reads back exactly as many bytes.
#[track_caller]
pub fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read the echo");
    back
}
