//! Time-based one-time passwords (RFC 6238) as authenticator apps use them: HMAC-SHA1,
//! 6 digits, 30-second steps, secrets of 160 random bits in base32.
//!
//! [`verify`] accepts the code of the current step and of one step either side (clock skew) and
//! returns the step that matched. It does not remember anything: to make each code usable once,
//! the caller records the step atomically and refuses a step that is not greater than the last
//! one used (the store's `consume_totp_step(user, step)`). Throttle failed attempts as for
//! passwords: six digits are only a million possibilities.

use rand::RngCore as _;
use rand::rngs::OsRng;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::IdentityError;
use crate::token::ct_eq;

/// Digits in a code.
pub const DIGITS: usize = 6;
/// Length of one time step in seconds.
pub const STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: u8 = 1;
/// Bytes in a secret made by [`generate_secret`] (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

/// A new random secret (160 bits from `OsRng`), base32 without padding: 32 characters to show
/// the user or put into [`provisioning_uri`]. Store it encrypted; it is a shared secret.
pub fn generate_secret() -> String {
    let mut bytes = vec![0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    match Secret::Raw(bytes).to_encoded() {
        Secret::Encoded(text) => text,
        // `to_encoded` of a raw secret always returns the encoded form; this arm only keeps the
        // match exhaustive.
        Secret::Raw(_) => String::new(),
    }
}

/// Decodes a base32 secret, tolerating lower case, spaces and `=` padding as users type them.
fn decode_secret(secret_b32: &str) -> Result<Vec<u8>, IdentityError> {
    let normalized: String = secret_b32
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes =
        Secret::Encoded(normalized)
            .to_bytes()
            .map_err(|_| IdentityError::InvalidTotpSecret {
                reason: "it is not base32 (letters A-Z and digits 2-7)".to_owned(),
            })?;
    if bytes.len() < 16 {
        return Err(IdentityError::InvalidTotpSecret {
            reason: format!(
                "it has {} bits, RFC 4226 requires at least 128: generate a new secret",
                bytes.len() * 8
            ),
        });
    }
    Ok(bytes)
}

fn totp(secret: Vec<u8>, issuer: Option<String>, account: String) -> Result<TOTP, IdentityError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        SKEW_STEPS,
        STEP_SECS,
        secret,
        issuer,
        account,
    )
    .map_err(|err| IdentityError::InvalidTotpLabel {
        reason: err.to_string(),
    })
}

/// The `otpauth://totp/...` URI an authenticator app reads (usually from a QR code), labelled
/// `issuer:account`. Neither may contain `:`.
pub fn provisioning_uri(
    secret_b32: &str,
    account: &str,
    issuer: &str,
) -> Result<String, IdentityError> {
    let secret = decode_secret(secret_b32)?;
    if account.is_empty() {
        return Err(IdentityError::InvalidTotpLabel {
            reason: "the account name is empty: pass the user's login name".to_owned(),
        });
    }
    if issuer.is_empty() {
        return Err(IdentityError::InvalidTotpLabel {
            reason: "the issuer is empty: pass the service name users see in their app".to_owned(),
        });
    }
    Ok(totp(secret, Some(issuer.to_owned()), account.to_owned())?.get_url())
}

/// The code for `secret_b32` at time step `step` (Unix time / 30).
pub fn code_at_step(secret_b32: &str, step: i64) -> Result<String, IdentityError> {
    let totp = totp(decode_secret(secret_b32)?, None, String::new())?;
    let time = u64::try_from(step)
        .ok()
        .and_then(|s| s.checked_mul(STEP_SECS))
        .ok_or(IdentityError::InvalidTime { now_unix: step })?;
    Ok(totp.generate(time))
}

/// Checks `code` against the steps around `now_unix` (current, previous, next). Returns the
/// matched time step (`unix_time / 30`), or `None` if the code matches none of them. Spaces in
/// the code are ignored; anything but six digits then simply does not match.
///
/// Errors: an unusable secret, or `now_unix` before 1970.
pub fn verify(secret_b32: &str, code: &str, now_unix: i64) -> Result<Option<i64>, IdentityError> {
    let secret = decode_secret(secret_b32)?;
    let now = u64::try_from(now_unix).map_err(|_| IdentityError::InvalidTime { now_unix })?;
    let totp = totp(secret, None, String::new())?;

    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let well_formed = code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit());

    let current = now / STEP_SECS;
    let skew = u64::from(SKEW_STEPS);
    let mut matched = None;
    // Current step first, then the past, then the future; every candidate is computed and
    // compared so the time does not tell which one matched.
    let candidates = std::iter::once(current)
        .chain((1..=skew).filter_map(|d| current.checked_sub(d)))
        .chain((1..=skew).filter_map(|d| current.checked_add(d)));
    for step in candidates {
        let expected = totp.generate(step.saturating_mul(STEP_SECS));
        if ct_eq(expected.as_bytes(), code.as_bytes()) && matched.is_none() {
            matched = i64::try_from(step).ok();
        }
    }
    Ok(if well_formed { matched } else { None })
}

#[cfg(test)]
mod tests;
