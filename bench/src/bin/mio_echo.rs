//! The hand-written reference: the practical limit of one mio loop. One Poll, a Slab, read
//! until WouldBlock, write what was read, queue the rest and wait for WRITABLE.
//!
//! `mio_echo SPEC...`: listens like the echo example (sockets from `dualstack::bind`, so only
//! the loop differs) and prints the same `listening on` lines.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER_BASE: usize = usize::MAX / 2;

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listeners = Vec::new();
    for (i, l) in dualstack_bench::bind_from_args("mio_echo")
        .into_iter()
        .enumerate()
    {
        let mut l = l.into_mio();
        poll.registry()
            .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        listeners.push(l);
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            let token = event.token().0;
            if token >= LISTENER_BASE {
                let listener = &listeners[token - LISTENER_BASE];
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE,
                            )?;
                            entry.insert(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(conn) = conns.get_mut(token) else {
                continue;
            };
            let mut close = false;
            if event.is_writable() {
                while !conn.pending.is_empty() {
                    match conn.stream.write(&conn.pending) {
                        Ok(n) => {
                            conn.pending.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
                if conn.pending.is_empty() && !close {
                    poll.registry().reregister(
                        &mut conn.stream,
                        Token(token),
                        Interest::READABLE,
                    )?;
                }
            }
            if event.is_readable() && !close {
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => {
                            let mut rest = &buf[..n];
                            if conn.pending.is_empty() {
                                match conn.stream.write(rest) {
                                    Ok(w) => rest = &rest[w..],
                                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                    Err(_) => {
                                        close = true;
                                        break;
                                    }
                                }
                                if !rest.is_empty() {
                                    poll.registry().reregister(
                                        &mut conn.stream,
                                        Token(token),
                                        Interest::READABLE | Interest::WRITABLE,
                                    )?;
                                }
                            }
                            conn.pending.extend_from_slice(rest);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
            }
            if close {
                let mut conn = conns.remove(token);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}
