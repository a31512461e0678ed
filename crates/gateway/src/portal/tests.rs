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

/// The request headers a browser sends back for a `Set-Cookie` of the bind cookie.
fn sent_back(set_cookie_value: &str) -> http::HeaderMap {
    let pair = set_cookie_value.split(';').next().unwrap();
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, pair.parse().unwrap());
    h
}

/// Sign-ins started in tabs of two apps keep a bind each: finishing one neither loses nor
/// takes the other's.
#[test]
fn the_bind_cookie_keeps_one_entry_per_app_host() {
    let (a, b) = (hash_token("nonce-a"), hash_token("nonce-b"));
    let first = binds_cookie(&[], "crm.example:8443", Some(&a));
    let h = sent_back(&first);
    assert_eq!(
        bind_for(&h, "crm.example:8443").as_deref(),
        Some(a.as_str())
    );
    let second = binds_cookie(&binds(&h), "wiki.example", Some(&b));
    let h = sent_back(&second);
    assert_eq!(
        bind_for(&h, "crm.example:8443").as_deref(),
        Some(a.as_str())
    );
    assert_eq!(bind_for(&h, "wiki.example").as_deref(), Some(b.as_str()));
    // A new sign-in for the same host replaces its entry; finishing it removes only it.
    let again = binds_cookie(&binds(&h), "wiki.example", Some(&a));
    assert_eq!(
        bind_for(&sent_back(&again), "wiki.example").as_deref(),
        Some(a.as_str())
    );
    let done = binds_cookie(&binds(&h), "crm.example:8443", None);
    let h = sent_back(&done);
    assert_eq!(bind_for(&h, "crm.example:8443"), None);
    assert_eq!(bind_for(&h, "wiki.example").as_deref(), Some(b.as_str()));
    // The last entry gone, the cookie is deleted.
    let empty = binds_cookie(&binds(&h), "wiki.example", None);
    assert!(empty.contains("Max-Age=0"), "{empty}");
    // Bounded, and entries that are not binds are ignored.
    let mut entries = Vec::new();
    for i in 0..20 {
        let host = format!("app{i}.example");
        let c = binds_cookie(&entries, &host, Some(&a));
        entries = binds(&sent_back(&c));
    }
    assert_eq!(entries.len(), MAX_BINDS);
    assert_eq!(entries[0].0, "app19.example");
    let forged = sent_back("__Host-tsuzuku_bind=x.example=not-a-bind/y.example=");
    assert!(binds(&forged).is_empty());
}
