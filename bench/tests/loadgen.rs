//! The load generator refuses to measure a wrong server: a changed byte or a lost byte fails
//! the run (exit status 1), while a faithful echo passes. Without this, the CI smoke test
//! would pass for a load generator that verified nothing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

/// A blocking echo server on 127.0.0.1 that passes every chunk through `fault` first; one
/// thread per connection. Returns the port.
fn server(fault: fn(&mut Vec<u8>, u64)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut seen = 0u64;
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut chunk = buf[..n].to_vec();
                    fault(&mut chunk, seen);
                    seen += n as u64;
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Runs the load generator for a moment against `port`: (success, stderr).
fn loadgen(port: u16) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--connections", "2", "--size", "64", "--depth", "2"])
        .args(["--seconds", "0.3", "--warmup", "0.1"])
        .output()
        .expect("run loadgen");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_faithful_echo_passes() {
    let (ok, stderr) = loadgen(server(|_, _| {}));
    assert!(ok, "{stderr}");
}

#[test]
fn a_changed_byte_fails_the_run() {
    // Flip one bit of the byte at offset 1000 of every connection.
    let (ok, stderr) = loadgen(server(|chunk, seen| {
        if (seen..seen + chunk.len() as u64).contains(&1000) {
            chunk[(1000 - seen) as usize] ^= 1;
        }
    }));
    assert!(!ok, "a changed byte went unnoticed");
    assert!(stderr.contains("differ"), "{stderr}");
}

#[test]
fn a_lost_byte_fails_the_run() {
    // Drop the byte at offset 1000 of every connection: the echo falls one byte short.
    let (ok, stderr) = loadgen(server(|chunk, seen| {
        if (seen..seen + chunk.len() as u64).contains(&1000) {
            chunk.remove((1000 - seen) as usize);
        }
    }));
    assert!(!ok, "a lost byte went unnoticed");
    assert!(!stderr.is_empty(), "no reason given");
}
