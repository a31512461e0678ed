#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Crate-level tidy checks.

/// Architecture invariant: tsuzuku-audit depends on no other Tsuzuku crate and knows no SQL or
/// HTTP.
#[test]
fn audit_crate_depends_on_nothing_of_ours_and_no_sql_or_http() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] section");
    for forbidden in [
        "tsuzuku-", "sqlx", "hyper", "http", "reqwest", "cedar", "rusqlite", "postgres",
    ] {
        assert!(
            !deps.contains(forbidden),
            "tsuzuku-audit must not depend on {forbidden}"
        );
    }
}
