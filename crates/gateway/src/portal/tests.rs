#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

#[test]
fn nonces_and_binds_are_recognised_by_their_form_only() {
    let n = new_token();
    assert!(is_token(&n), "{n}");
    assert!(!is_token(""));
    assert!(!is_token(&format!("{n}x")));
    assert!(!is_token(&n.replace(|_: char| true, ".")));
    let b = hash_token(&n);
    assert!(is_bind(&b), "{b}");
    assert!(!is_bind(&b.to_uppercase()));
    assert!(!is_bind(&b[..63]));
    assert!(!is_token(&b) && !is_bind(&n));
}

/// A stored handoff code is found only with the `bind` it was issued for.
#[test]
fn a_handoff_key_depends_on_the_code_and_the_browser() {
    let (code, mine, theirs) = (new_token(), hash_token("mine"), hash_token("theirs"));
    assert_eq!(handoff_key(&code, &mine), handoff_key(&code, &mine));
    assert_ne!(handoff_key(&code, &mine), handoff_key(&code, &theirs));
    assert_ne!(handoff_key(&code, &mine), hash_token(&code));
    assert_ne!(handoff_key(&code, &mine), handoff_key(&new_token(), &mine));
}

#[test]
fn a_sealed_handoff_carries_its_bind_after_the_nonce() {
    let bind = hash_token("nonce");
    let sealed = format!("{}.{bind}", new_token());
    assert!(sealed_bind_matches(&sealed, &bind));
    assert!(!sealed_bind_matches(&sealed, &hash_token("other")));
    assert!(!sealed_bind_matches(&new_token(), &bind), "an unbound code");
    assert!(!sealed_bind_matches(&format!("{}.", new_token()), &bind));
}

#[test]
fn the_sign_in_link_keeps_the_path_and_query() {
    assert_eq!(
        signin_link("/reports?q=1&x=%2F"),
        "/.tsuzuku/signin?rd=%2Freports%3Fq%3D1%26x%3D%252F"
    );
}
