//! Opaque bearer tokens (sessions, invitations, recovery links) and what the store keeps of them.
//!
//! A token is 32 bytes from the operating system's CSPRNG, base64url without padding (43
//! characters). The store keeps only [`hash_token`] (SHA-256, hex), so a leaked database does not
//! leak usable tokens; lookups hash the presented token and compare hashes. SHA-256 without salt
//! or stretching is right here because the input already has 256 bits of entropy.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Number of random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// A new random token: 32 bytes from `OsRng`, base64url without padding.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of the token's text, as 64 lowercase hex digits: the value to store and look up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two byte strings (time depends only on the lengths). Use it when
/// comparing secrets such as tokens, hashes or CSRF values.
pub fn ct_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    a.as_ref().ct_eq(b.as_ref()).into()
}

#[cfg(test)]
mod tests;
