//! Every file of the fuzz corpus (`fuzz/corpus/TARGET/`), run through the same property
//! checks as the fuzz targets (`fuzz/checks.rs`), so the corpus is a regression suite under
//! a plain `cargo test`.

#[path = "../fuzz/checks.rs"]
mod checks;
#[path = "../fuzz/tls_check.rs"]
mod tls_check;

use std::path::Path;

fn run_corpus(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!(
                "{target}: {} fails its properties (input {:?})",
                path.display(),
                String::from_utf8_lossy(&data)
            );
        }
    }
}

#[test]
fn parse_spec_corpus() {
    run_corpus("parse_spec", checks::parse_spec);
}

#[test]
fn normalize_corpus() {
    run_corpus("normalize", checks::normalize_addr);
}

#[test]
fn plan_corpus() {
    run_corpus("plan", checks::plan_spec);
}

#[test]
fn proxy_corpus() {
    run_corpus("proxy", checks::proxy_header);
}

#[test]
fn tls_phase_corpus() {
    run_corpus("tls_phase", tls_check::tls_phase);
}

#[test]
fn tls_records_corpus() {
    run_corpus("tls_records", tls_check::tls_records);
}
