//! The crate-dependency invariants of ARCHITECTURE.md, checked with `cargo tree`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

fn deps(krate: &str, depth: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--depth",
            depth,
            "-p",
            krate,
        ])
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

fn assert_free_of(krate: &str, forbidden: &[&str]) {
    assert_free_of_at(krate, forbidden, "1000");
}

fn assert_free_of_at(krate: &str, forbidden: &[&str], depth: &str) {
    let d = deps(krate, depth);
    for f in forbidden {
        assert!(
            !d.iter().any(|x| x == f),
            "{krate} must not depend on {f} (ARCHITECTURE.md invariants)"
        );
    }
}

#[test]
fn policy_knows_no_io() {
    assert_free_of(
        "tsuzuku-policy",
        &[
            "tokio",
            "hyper",
            "sqlx",
            "reqwest",
            "tsuzuku-store",
            "tsuzuku-gateway",
        ],
    );
}

#[test]
fn audit_knows_no_sql_or_http() {
    assert_free_of(
        "tsuzuku-audit",
        &["sqlx", "hyper", "reqwest", "tsuzuku-store"],
    );
}

#[test]
fn store_knows_no_http_policy_or_credentials() {
    assert_free_of(
        "tsuzuku-store",
        &[
            "hyper",
            "cedar-policy",
            "argon2",
            "openidconnect",
            "tsuzuku-policy",
            "tsuzuku-identity",
        ],
    );
}

#[test]
fn keyring_knows_no_sql_http_or_runtime() {
    assert_free_of(
        "tsuzuku-keyring",
        &[
            "sqlx",
            "hyper",
            "tokio",
            "reqwest",
            "tsuzuku-store",
            "tsuzuku-gateway",
        ],
    );
}

#[test]
fn httpguard_depends_on_nothing_but_thiserror() {
    let d = deps("tsuzuku-httpguard", "1");
    let mut direct: Vec<&str> = d
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "tsuzuku-httpguard")
        .collect();
    direct.sort_unstable();
    direct.dedup();
    assert_eq!(direct, ["thiserror"]);
}

#[test]
fn config_knows_no_io() {
    assert_free_of(
        "tsuzuku-config",
        &["tokio", "sqlx", "hyper", "cedar-policy"],
    );
}

#[test]
fn only_the_binary_uses_anyhow() {
    for k in [
        "tsuzuku-policy",
        "tsuzuku-identity",
        "tsuzuku-store",
        "tsuzuku-audit",
        "tsuzuku-gateway",
        "tsuzuku-config",
    ] {
        // Direct dependencies only: a library we use may use anyhow internally.
        assert_free_of_at(k, &["anyhow"], "1");
    }
}

#[test]
fn snapshot_knows_no_sql_http_or_policy() {
    assert_free_of(
        "tsuzuku-snapshot",
        &[
            "tokio",
            "sqlx",
            "hyper",
            "reqwest",
            "cedar-policy",
            "tsuzuku-store",
            "tsuzuku-policy",
        ],
    );
}

#[test]
fn control_plane_never_decides_or_proxies() {
    assert_free_of(
        "tsuzuku-control",
        &[
            "tsuzuku-gateway",
            "tsuzuku-policy",
            "cedar-policy",
            "reqwest",
        ],
    );
}

#[test]
fn device_trust_knows_no_sql_http_or_policy() {
    assert_free_of(
        "tsuzuku-device",
        &[
            "tokio",
            "sqlx",
            "hyper",
            "reqwest",
            "cedar-policy",
            "tsuzuku-store",
            "tsuzuku-policy",
        ],
    );
}
