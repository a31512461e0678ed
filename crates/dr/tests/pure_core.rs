//! The crate's invariant (lib.rs): without the `io` feature it is a pure core — no async
//! runtime, no DNS client, no serialisation — checked with `cargo tree`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

fn deps(extra: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            "tsuzuku-dr",
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn without_io_the_core_has_no_runtime_dns_or_serialisation() {
    let core = deps(&["--no-default-features"]);
    for forbidden in [
        "tokio",
        "hickory-resolver",
        "hickory-proto",
        "serde_json",
        "anyhow",
    ] {
        assert!(
            !core.iter().any(|d| d == forbidden),
            "the pure core must not depend on {forbidden}"
        );
    }
    // The check is able to fail: the IO shell does depend on them.
    let full = deps(&[]);
    assert!(full.iter().any(|d| d == "hickory-resolver"));
    assert!(full.iter().any(|d| d == "tokio"));
}
