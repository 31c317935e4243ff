//! The hand-written reference: the practical limit of one mio loop. One Poll, a Slab, read
//! until WouldBlock (no budget: a flooder is read until it is empty), write what was read,
//! and when the kernel does not take all of it, queue the rest, stop reading that
//! connection and wait for WRITABLE. Sockets get the options the library gives its own
//! (`dualstack_bench::reference_options`), so rows compare loops, not options.
//!
//! `mio_echo SPEC...`: listens like the echo example (sockets from `dualstack::bind`, so only
//! the loop differs) and prints the same `listening on` lines.

use std::io::{self, Read, Write};

use dualstack_bench::Stream;
use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

const LISTENER_BASE: usize = usize::MAX / 2;

struct Conn {
    stream: Stream,
    pending: Vec<u8>,
}

/// A TCP or a Unix-domain listener (the Unix rows compare the same loop over that kind).
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }
}

fn main() -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listeners = Vec::new();
    for (i, l) in dualstack_bench::bind_from_args("mio_echo")
        .into_iter()
        .enumerate()
    {
        let mut l = match l.into_tcp() {
            Ok(tcp) => {
                dualstack_bench::reference_options(&tcp)?;
                Listener::Tcp(tcp)
            }
            Err(l) => Listener::Unix(l.into_unix().map_err(|l| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{l}: neither TCP nor Unix"),
                )
            })?),
        };
        register(
            poll.registry(),
            l.source(),
            Token(LISTENER_BASE + i),
            Interest::READABLE,
        )?;
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
                        Ok(mut stream) => {
                            let entry = conns.vacant_entry();
                            register(
                                poll.registry(),
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
            let mut readable = event.is_readable() || event.is_read_closed();
            if event.is_writable() && !conn.pending.is_empty() {
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
                    conn.stream
                        .reregister(poll.registry(), Token(token), Interest::READABLE)?;
                    // Reading stopped while the echo waited: resume, without an edge.
                    readable = true;
                }
            }
            if readable && conn.pending.is_empty() && !close {
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => {
                            let mut rest = &buf[..n];
                            match conn.stream.write(rest) {
                                Ok(w) => rest = &rest[w..],
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(_) => {
                                    close = true;
                                    break;
                                }
                            }
                            if !rest.is_empty() {
                                // The peer is not taking its echo: stop reading until it
                                // does, so the queue is one read at most.
                                conn.pending.extend_from_slice(rest);
                                conn.stream.reregister(
                                    poll.registry(),
                                    Token(token),
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
            }
            if close {
                let mut conn = conns.remove(token);
                let _ = conn.stream.deregister(poll.registry());
            }
        }
    }
}

fn register(
    registry: &Registry,
    source: &mut dyn Source,
    token: Token,
    interest: Interest,
) -> io::Result<()> {
    source.register(registry, token, interest)
}
