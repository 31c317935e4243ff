//! The tokio reference: what most Rust users would write. A current-thread runtime, a task
//! per connection, a 64 KiB read buffer (the reactor's read size, so runtimes are compared,
//! not buffer sizes).
//!
//! `tokio_echo SPEC...`: same sockets (from `dualstack::bind`), socket options
//! (`dualstack_bench::reference_options`) and `listening on` lines as the echo example.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> io::Result<()> {
    let std_listeners = dualstack_bench::std_tcp_listeners("tokio_echo")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let mut accepts = Vec::new();
        for std_listener in std_listeners {
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            accepts.push(tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }));
        }
        for a in accepts {
            let _ = a.await;
        }
        Ok(())
    })
}
