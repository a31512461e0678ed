#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

/// The crate-level invariant: no dependency on the components it measures.
#[test]
fn benchkit_does_not_link_the_components_it_measures() {
    let manifest = include_str!("../Cargo.toml");
    for forbidden in [
        "tsuzuku-connector",
        "tsuzuku-gateway",
        "tsuzuku-store",
        "tsuzuku-policy",
    ] {
        assert!(
            !manifest.contains(forbidden),
            "crates/benchkit/Cargo.toml depends on {forbidden}"
        );
    }
}
