//! Architecture invariant: the identity crate computes and verifies; it runs no HTTP server,
//! speaks no SQL and knows nothing of the gateway or the store. Checked on its direct
//! dependencies (reqwest, the OIDC client's transport, pulls an HTTP *client* stack only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

const FORBIDDEN: &[&str] = &[
    "sqlx",
    "rusqlite",
    "tokio-postgres",
    "postgres",
    "hyper",
    "hyper-util",
    "axum",
    "tower",
    "tokio-rustls",
    "tsuzuku-store",
    "tsuzuku-gateway",
    "tsuzuku-policy",
    "tsuzuku-audit",
    "tsuzuku-config",
];

#[test]
fn identity_has_no_server_or_sql_dependencies() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().unwrap();
    let deps = manifest["dependencies"].as_table().unwrap();
    assert!(
        deps.contains_key("openidconnect"),
        "the check reads the right table"
    );
    for name in FORBIDDEN {
        assert!(
            !deps.contains_key(*name),
            "tsuzuku-identity must not depend on {name}: it stays free of servers and SQL"
        );
    }
}
