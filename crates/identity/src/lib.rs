//! Identity primitives for Tsuzuku: password hashing (Argon2id), TOTP second factors
//! (RFC 6238), opaque random tokens and their storage hashes, login throttling, and an
//! OpenID Connect relying-party client (authorization code flow with PKCE and nonce).
//!
//! **Architecture invariant:** this crate knows nothing about HTTP servers, SQL or the
//! gateway's routes. It computes and verifies; callers store what it returns (PHC strings,
//! token hashes, TOTP steps, lockout times) and enforce one-time use atomically in their store.
//! The only IO it does is the OIDC client's outgoing HTTPS requests to the identity provider.

mod error;
pub mod oidc;
pub mod password;
pub mod throttle;
pub mod token;
pub mod totp;

pub use error::IdentityError;
