//! The tokio-rustls reference for the TLS rows: a current-thread runtime, a task per
//! connection, `TlsAcceptor` with the same rustls configuration as the others
//! (`dualstack_bench::tls::server_config`), a 64 KiB read buffer; the client's close_notify
//! is answered with `shutdown` (ours, then the TCP FIN), as tokio-rustls's users close.
//!
//! `TLS_CERT=… TLS_KEY=… tokio_tls_echo SPEC...`

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(dualstack_bench::tls::server_config());
    let std_listeners = dualstack_bench::std_tcp_listeners("tokio_tls_echo")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let mut accepts = Vec::new();
        for std_listener in std_listeners {
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            let acceptor = acceptor.clone();
            accepts.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match stream.read(&mut buf).await {
                                // The client's close_notify: answer with ours, as RFC 8446
                                // (6.1) asks and as the others do.
                                Ok(0) => {
                                    let _ = stream.shutdown().await;
                                    return;
                                }
                                Err(_) => return,
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
