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

/// The mixed load (flooders and small clients) against `port`: (success, stdout, stderr).
fn mixed(port: u16) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--mode", "mixed"])
        .args([
            "--flooders",
            "2",
            "--smalls",
            "4",
            "--rate",
            "100",
            "--size",
            "4096",
        ])
        .args(["--seconds", "0.4", "--warmup", "0.1"])
        .output()
        .expect("run loadgen");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_mixed_load_verifies_and_reports_both_kinds_of_client() {
    let (ok, stdout, stderr) = mixed(server(|_, _| {}));
    assert!(ok, "{stderr}");
    let n = dualstack_bench::parse_numbers(&stdout);
    // 4 clients at 100/s over 0.4 s: about 160 requests measured, each answered.
    assert!((120.0..=200.0).contains(&n["small_count"]), "{stdout}");
    assert!(
        n["small_p50_us"] > 0.0 && n["small_p50_us"] <= n["small_p99_us"],
        "{stdout}"
    );
    assert!(n["small_p99_us"] <= n["small_max_us"], "{stdout}");
    assert!(n["flood_mb_per_s"] > 0.0, "{stdout}");
    assert!(
        n["flood_min_mb_per_s"] <= n["flood_max_mb_per_s"],
        "{stdout}"
    );
    assert!(n["bytes_verified"] > 0.0, "{stdout}");
}

#[test]
fn the_mixed_load_fails_on_a_changed_byte() {
    // Every connection, flooder or small client, gets one byte flipped at offset 100.
    let (ok, _, stderr) = mixed(server(|chunk, seen| {
        if (seen..seen + chunk.len() as u64).contains(&100) {
            chunk[(100 - seen) as usize] ^= 1;
        }
    }));
    assert!(!ok, "a changed byte went unnoticed");
    assert!(stderr.contains("differ"), "{stderr}");
}
