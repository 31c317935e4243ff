//! The chaos soak (`examples/soak.rs`) as a test. Ignored by default because it runs for a
//! while: `SOAK_SECONDS=600 cargo test --test soak -- --ignored --nocapture` for a long one.
//! CI runs the release build for about a minute instead.

#[test]
#[ignore = "a soak: runs for SOAK_SECONDS (default 20); run with --ignored"]
fn chaos_soak_loses_nothing() {
    let seconds = std::env::var("SOAK_SECONDS").unwrap_or_else(|_| "20".into());
    let exe = std::env::current_exe().unwrap();
    let examples = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    // Always ask cargo: `cargo test --test soak` does not rebuild the examples by itself.
    let ok = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "soak", "--example", "echo"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cargo build --example soak --example echo failed");
    let out = std::process::Command::new(examples.join("soak"))
        .args(["--seconds", &seconds, "--seed", "7"])
        .output()
        .expect("run the soak");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "the soak failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("bytes lost: 0"), "{report}");
}
