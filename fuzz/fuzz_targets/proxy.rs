//! Fuzz target `proxy`: the PROXY protocol parser's properties (`fuzz/checks.rs`), and a
//! differential check against the `ppp` crate (`fuzz/differential.rs`), which every
//! disagreement must be explained by a rule of the protocol.
#![no_main]

#[path = "../checks.rs"]
mod checks;
#[path = "../differential.rs"]
mod differential;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::proxy_header(data);
    differential::against_ppp(data);
});
