#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;

use super::*;

#[test]
fn tokens_are_43_chars_of_base64url_and_decode_to_32_bytes() {
    let token = new_token();
    assert_eq!(token.len(), 43, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), TOKEN_BYTES);
}

#[test]
fn tokens_do_not_repeat() {
    let tokens: HashSet<String> = (0..1000).map(|_| new_token()).collect();
    assert_eq!(tokens.len(), 1000);
}

#[test]
fn hash_token_is_sha256_hex() {
    // SHA-256("abc") from FIPS 180-2, appendix B.1.
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hash_token(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let t = new_token();
    assert_eq!(hash_token(&t), hash_token(&t));
    assert_ne!(hash_token(&t), hash_token(&new_token()));
}

#[test]
fn ct_eq_compares_contents_and_lengths() {
    assert!(ct_eq("abc", "abc"));
    assert!(ct_eq(b"", b""));
    assert!(!ct_eq("abc", "abd"));
    assert!(!ct_eq("abc", "ab"));
    assert!(!ct_eq("ab", "abc"));
    let t = new_token();
    assert!(ct_eq(hash_token(&t), hash_token(&t)));
}
