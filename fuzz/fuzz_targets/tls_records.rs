//! Fuzz target `tls_records`: an established TLS connection's reading of the client's
//! records, end to end over loopback (`fuzz/tls_check.rs`): plaintext of any size in
//! records cut at any point comes back whole; raw bytes after the handshake never panic,
//! hang or draw an unbounded answer.
#![no_main]

#[path = "../tls_check.rs"]
mod tls_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tls_check::tls_records(data);
});
