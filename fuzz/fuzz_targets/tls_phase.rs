//! Fuzz target `tls_phase`: arbitrary client bytes against a TLS listener's handshake
//! phase, end to end over loopback (`fuzz/tls_check.rs`): no panic, no hang, a bounded
//! answer.
#![no_main]

#[path = "../tls_check.rs"]
mod tls_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tls_check::tls_phase(data);
});
