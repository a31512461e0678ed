//! Password hashing with Argon2id, stored as PHC strings.
//!
//! Parameters follow the OWASP Password Storage Cheat Sheet's first Argon2id recommendation:
//! m = 19456 KiB (19 MiB), t = 2 iterations, p = 1 lane, 16-byte random salt, 32-byte output.
//! One hash costs about 19 MiB of memory and tens of milliseconds of one core; callers that hash
//! on an async runtime should run these functions on a blocking thread.
//!
//! The parameters are written into every PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`), so
//! [`verify`] keeps accepting hashes made with older parameters; [`needs_rehash`] tells the
//! caller to store a fresh [`hash`] after a successful login.
//!
//! Use [`verify_dummy`] when the user does not exist so that "unknown user" and "wrong password"
//! take the same time.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::IdentityError;

/// Memory cost in KiB (OWASP: 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Number of passes over memory (OWASP: 2).
pub const ITERATIONS: u32 = 2;
/// Degree of parallelism (OWASP: 1).
pub const PARALLELISM: u32 = 1;
/// Longest password accepted, in bytes. Longer input is rejected rather than truncated, and keeps
/// an attacker from making the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Fewest characters (Unicode scalar values) in a password an administrator chooses
/// ([`check_new`]). NIST SP 800-63B asks for at least 8; Tsuzuku asks for 12.
pub const MIN_NEW_PASSWORD_CHARS: usize = 12;

/// A hash of a random password made with the current parameters; [`verify_dummy`] verifies
/// against it so that it costs what a real verification costs. A unit test checks that its
/// parameters match the constants above.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$J9oMYwvfq5bIhzxfoxzQ+A$48KX6Hdr2M3NlzXtYJ32ZjMJHmWG+XbEjZi/7npSTD0";

fn hasher() -> Result<Argon2<'static>, IdentityError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).map_err(|err| {
        IdentityError::PasswordHashing {
            reason: err.to_string(),
        }
    })?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn check_length(password: &str) -> Result<(), IdentityError> {
    if password.is_empty() {
        return Err(IdentityError::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(IdentityError::PasswordTooLong {
            len: password.len(),
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

/// Checks a new password someone chose (not one being verified at sign-in, where the rules at
/// the time it was set apply): at least [`MIN_NEW_PASSWORD_CHARS`] characters and at most
/// [`MAX_PASSWORD_BYTES`] bytes.
///
/// Errors: [`IdentityError::EmptyPassword`], [`IdentityError::PasswordTooShort`],
/// [`IdentityError::PasswordTooLong`].
pub fn check_new(password: &str) -> Result<(), IdentityError> {
    check_length(password)?;
    let chars = password.chars().count();
    if chars < MIN_NEW_PASSWORD_CHARS {
        return Err(IdentityError::PasswordTooShort {
            chars,
            min: MIN_NEW_PASSWORD_CHARS,
        });
    }
    Ok(())
}

/// Hashes `password` with Argon2id and a fresh random salt; returns the PHC string to store.
///
/// Errors: [`IdentityError::EmptyPassword`], [`IdentityError::PasswordTooLong`].
pub fn hash(password: &str) -> Result<String, IdentityError> {
    check_length(password)?;
    let salt = SaltString::generate(&mut OsRng);
    let phc = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|err| IdentityError::PasswordHashing {
            reason: err.to_string(),
        })?;
    Ok(phc.to_string())
}

/// Checks `password` against a stored PHC string. `Ok(false)` means the password is wrong; the
/// comparison of hash outputs is constant-time inside argon2. Uses the parameters recorded in
/// `phc`, whatever they are.
///
/// Errors: empty or oversized password, or a `phc` that is not an Argon2 PHC string.
pub fn verify(password: &str, phc: &str) -> Result<bool, IdentityError> {
    check_length(password)?;
    let parsed = PasswordHash::new(phc).map_err(|err| IdentityError::InvalidPasswordHash {
        reason: err.to_string(),
    })?;
    match hasher()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(err) => Err(IdentityError::InvalidPasswordHash {
            reason: err.to_string(),
        }),
    }
}

/// Spends the time of one [`verify`] with the current parameters and throws the result away.
/// Call it when the login names an unknown user, then answer exactly as for a wrong password.
/// Empty or oversized passwords return at once, as [`verify`] does for them.
pub fn verify_dummy(password: &str) {
    // The outcome is meaningless by construction: only the time spent matters.
    let _ = verify(password, DUMMY_PHC);
}

/// True when `phc` was made with other parameters than the current ones (or is not argon2id),
/// so the caller should store [`hash`] of the password after the next successful [`verify`].
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return true;
    }
    if parsed.version != Some(Version::V0x13.into()) {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(params) => {
            params.m_cost() != MEMORY_KIB
                || params.t_cost() != ITERATIONS
                || params.p_cost() != PARALLELISM
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests;
