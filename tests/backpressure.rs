//! Backpressure: a peer that sends a lot and reads slowly gets every byte back, in order,
//! while the server's queue for it stays bounded and no send ever fails.

mod util;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use dualstack::Server;
use util::{Recorder, Running};

const HIGH: usize = 128 * 1024;
const READ_BUFFER: usize = 16 * 1024;

#[test]
fn a_slow_reader_gets_every_byte_in_order_with_bounded_memory() {
    let recorder = Recorder::default();
    let server = Running::start(
        Server::builder()
            .listen("localhost:0")
            .read_buffer_size(READ_BUFFER)
            .water_marks(32 * 1024, HIGH)
            .max_queued(HIGH + READ_BUFFER),
        recorder.clone(),
    );
    const TOTAL: usize = 24 * 1024 * 1024;
    for listener in 0..2 {
        let stream = util::connect_small_window(server.addr(listener));
        let mut writer = stream.try_clone().unwrap();
        let send = std::thread::spawn(move || {
            for (i, start) in (0..TOTAL).step_by(100_000).enumerate() {
                let len = 100_000.min(TOTAL - start);
                writer
                    .write_all(&util::pattern(7, start as u64, len))
                    .unwrap_or_else(|e| panic!("write {i}: {e}"));
            }
        });
        // Read nothing for a while: the server must queue up to its high-water mark, stop
        // reading, and let TCP flow control hold the writer back.
        std::thread::sleep(Duration::from_millis(300));
        let mut reader = stream;
        let mut got = 0usize;
        let mut buf = vec![0; 7_000];
        while got < TOTAL {
            let n = reader.read(&mut buf).expect("read the echo");
            assert_ne!(n, 0, "the server closed after {got} bytes");
            assert_eq!(
                buf[..n],
                util::pattern(7, got as u64, n)[..],
                "echo differs at byte {got}"
            );
            got += n;
            if got % (1024 * 1024) < 7_000 {
                std::thread::sleep(Duration::from_millis(5)); // stay slow
            }
        }
        send.join().unwrap();
    }
    let max = recorder.max_queued.load(Ordering::SeqCst);
    assert!(
        max > 0,
        "the server never had to queue: the test did not test backpressure"
    );
    assert!(
        max <= HIGH + READ_BUFFER,
        "queued {max} bytes for one connection"
    );
    assert_eq!(
        recorder.send_errors.load(Ordering::SeqCst),
        0,
        "a send failed: bytes were lost"
    );
}
