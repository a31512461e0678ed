#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

#[test]
fn kind_display_matches_serde_and_parses_back() {
    for kind in EventKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{kind}\""));
        assert_eq!(kind.to_string().parse::<EventKind>().unwrap(), kind);
    }
    assert_eq!(EventKind::Decision.to_string(), "decision");
}

#[test]
fn unknown_kind_is_rejected_with_the_offending_text() {
    let err = "Decision".parse::<EventKind>().unwrap_err();
    assert!(err.to_string().contains("\"Decision\""), "{err}");
    assert!(err.to_string().contains("decision, login"), "{err}");
}
