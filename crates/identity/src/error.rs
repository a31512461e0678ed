//! The error type shared by every module of this crate.

/// What went wrong in an identity operation. Every message names the input that was wrong and,
/// where the caller can do something about it, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The password is empty.
    #[error("password is empty: a password needs at least one character")]
    EmptyPassword,

    /// The password is longer than [`crate::password::MAX_PASSWORD_BYTES`].
    #[error(
        "password is {len} bytes long, more than the {max} bytes accepted: use a shorter password"
    )]
    PasswordTooLong {
        /// Length of the rejected password in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },

    /// A new password is shorter than [`crate::password::MIN_NEW_PASSWORD_CHARS`].
    #[error(
        "password is {chars} characters long, fewer than the {min} required: use a longer password"
    )]
    PasswordTooShort {
        /// Length of the rejected password in characters.
        chars: usize,
        /// The minimum in characters.
        min: usize,
    },

    /// A stored password hash is not a PHC string argon2 can read.
    #[error(
        "stored password hash is not a valid Argon2 PHC string ({reason}): reset the user's password"
    )]
    InvalidPasswordHash {
        /// What argon2 reported.
        reason: String,
    },

    /// Argon2 failed while hashing (parameters or memory).
    #[error("hashing the password with Argon2id failed: {reason}")]
    PasswordHashing {
        /// What argon2 reported.
        reason: String,
    },

    /// A TOTP secret is not base32 or too short.
    #[error("TOTP secret is unusable: {reason}")]
    InvalidTotpSecret {
        /// Why it was rejected.
        reason: String,
    },

    /// The account or issuer for a TOTP provisioning URI is unusable.
    #[error("cannot build a TOTP provisioning URI: {reason}")]
    InvalidTotpLabel {
        /// Why it was rejected.
        reason: String,
    },

    /// The clock value given to TOTP verification is before 1970.
    #[error("time {now_unix} is before the Unix epoch: pass the current Unix time in seconds")]
    InvalidTime {
        /// The rejected time.
        now_unix: i64,
    },

    /// An [`crate::oidc::OidcSettings`] field is invalid.
    #[error("OIDC setting `{field}` is invalid: {reason}")]
    OidcSettings {
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The HTTP client for the provider could not be built (bad CA bundle, TLS backend).
    #[error("cannot build the HTTP client for the OIDC provider at {issuer}: {reason}")]
    OidcHttpClient {
        /// The configured issuer.
        issuer: String,
        /// What failed.
        reason: String,
    },

    /// Discovery (provider metadata or JWKS) failed.
    #[error(
        "OIDC provider at {issuer} did not answer discovery: {reason} \
         (check the issuer URL, that {issuer}/.well-known/openid-configuration is reachable, \
         and the CA bundle if it uses a private CA)"
    )]
    OidcDiscovery {
        /// The configured issuer.
        issuer: String,
        /// What failed, with its causes.
        reason: String,
    },

    /// The token endpoint refused or failed the code exchange.
    #[error("OIDC provider at {issuer} did not exchange the authorization code: {reason}")]
    OidcCodeExchange {
        /// The issuer.
        issuer: String,
        /// What failed, with the provider's error code when it sent one.
        reason: String,
    },

    /// The ID token failed verification (signature, issuer, audience, nonce, expiry, ...).
    #[error("ID token from OIDC provider at {issuer} was rejected: {reason}")]
    OidcIdToken {
        /// The issuer.
        issuer: String,
        /// What check failed.
        reason: String,
    },

    /// The userinfo request failed.
    #[error("userinfo request to OIDC provider at {issuer} failed: {reason}")]
    OidcUserInfo {
        /// The issuer.
        issuer: String,
        /// What failed.
        reason: String,
    },

    /// A claim has a type the configuration cannot use.
    #[error("claim `{claim}` from OIDC provider at {issuer} {reason}")]
    OidcClaim {
        /// The issuer.
        issuer: String,
        /// The claim name.
        claim: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Formats an error and its `source()` chain as `outer: cause: cause`.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        // Some libraries repeat their cause in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}
