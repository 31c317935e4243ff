//! The hand-written TLS reference: rustls over one mio loop, as rustls's own
//! `tlsserver-mio` does it but without its per-event re-registration: edge-triggered, read
//! until WouldBlock, feed every read to the session, echo the plaintext through its writer,
//! write records until WouldBlock, WRITABLE only while ciphertext waits; the client's
//! close_notify is answered with ours, then the connection closed. The same rustls
//! configuration as the other TLS rows (`dualstack_bench::tls::server_config`).
//!
//! `TLS_CERT=… TLS_KEY=… mio_tls_echo SPEC...` (TCP specs).

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConnection;
use slab::Slab;

const LISTENER_BASE: usize = usize::MAX / 2;

struct Conn {
    stream: TcpStream,
    tls: ServerConnection,
    writable: bool,
    /// The client's close_notify came, and ours is queued: closed once it is written.
    closing: bool,
}

fn main() -> io::Result<()> {
    let config = dualstack_bench::tls::server_config();
    let mut poll = Poll::new()?;
    let mut listeners: Vec<TcpListener> = Vec::new();
    for l in dualstack_bench::std_tcp_listeners("mio_tls_echo")? {
        l.set_nonblocking(true)?;
        let mut l = TcpListener::from_std(l);
        poll.registry().register(
            &mut l,
            Token(LISTENER_BASE + listeners.len()),
            Interest::READABLE,
        )?;
        listeners.push(l);
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut plain = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            let token = event.token().0;
            if token >= LISTENER_BASE {
                let listener = &listeners[token - LISTENER_BASE];
                while let Ok((mut stream, _)) = listener.accept() {
                    let entry = conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE,
                    )?;
                    let mut tls = ServerConnection::new(config.clone()).expect("a session");
                    // What a read echoes is held until written, as mio_echo queues it.
                    tls.set_buffer_limit(None);
                    entry.insert(Conn {
                        stream,
                        tls,
                        writable: false,
                        closing: false,
                    });
                }
                continue;
            }
            let Some(conn) = conns.get_mut(token) else {
                continue;
            };
            let mut closed = false;
            if event.is_readable() {
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => {
                            let mut slice = &buf[..n];
                            while !slice.is_empty() {
                                if conn.tls.read_tls(&mut slice).is_err()
                                    || conn.tls.process_new_packets().is_err()
                                {
                                    closed = true;
                                    break;
                                }
                                // Echo what came, through the session's writer.
                                loop {
                                    match conn.tls.reader().read(&mut plain) {
                                        Ok(0) => {
                                            // The client's close_notify: answer with ours,
                                            // as RFC 8446 (6.1) asks and as the others do.
                                            if !conn.closing {
                                                conn.tls.send_close_notify();
                                                conn.closing = true;
                                            }
                                            break;
                                        }
                                        Ok(m) => {
                                            let _ = conn.tls.writer().write_all(&plain[..m]);
                                        }
                                        Err(_) => break,
                                    }
                                }
                            }
                            if closed {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            // Records out until the socket is full; WRITABLE only while some wait.
            // (A close_notify queued goes out even if the client's FIN came with its own.)
            while (!closed || conn.closing) && conn.tls.wants_write() {
                match conn.tls.write_tls(&mut conn.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed || (conn.closing && !conn.tls.wants_write()) {
                let conn = conns.remove(token);
                drop(conn);
                continue;
            }
            let want = conn.tls.wants_write();
            if want != conn.writable {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry()
                    .reregister(&mut conn.stream, Token(token), interest)?;
                conn.writable = want;
            }
        }
    }
}
