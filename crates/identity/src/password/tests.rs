#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Instant;

use super::*;

#[test]
fn hash_then_verify_accepts_right_and_rejects_wrong_password() {
    let phc = hash("correct horse battery staple").unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(verify("correct horse battery staple", &phc).unwrap());
    assert!(!verify("correct horse battery stapler", &phc).unwrap());
    assert!(!verify("Correct horse battery staple", &phc).unwrap());
}

#[test]
fn same_password_gets_different_salts() {
    let a = hash("pw").unwrap();
    let b = hash("pw").unwrap();
    assert_ne!(a, b);
    assert!(verify("pw", &a).unwrap());
    assert!(verify("pw", &b).unwrap());
}

#[test]
fn empty_and_oversized_passwords_are_errors() {
    assert!(matches!(hash(""), Err(IdentityError::EmptyPassword)));
    let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
    let err = hash(&long).unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::PasswordTooLong {
                len: 1025,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("1025 bytes"), "{err}");

    let phc = hash("x").unwrap();
    assert!(matches!(
        verify("", &phc),
        Err(IdentityError::EmptyPassword)
    ));
    assert!(matches!(
        verify(&long, &phc),
        Err(IdentityError::PasswordTooLong { .. })
    ));
    // Exactly at the limit is fine; the limit is bytes, not characters.
    let at_limit = "x".repeat(MAX_PASSWORD_BYTES);
    assert!(verify(&at_limit, &hash(&at_limit).unwrap()).unwrap());
    let multibyte = "é".repeat(MAX_PASSWORD_BYTES / 2 + 1);
    assert!(matches!(
        hash(&multibyte),
        Err(IdentityError::PasswordTooLong { .. })
    ));
}

/// Review: `user add --password-stdin` took a 5-character password. New passwords need 12
/// characters (counted as characters, not bytes) and at most 1024 bytes.
#[test]
fn new_passwords_need_twelve_characters_and_at_most_1024_bytes() {
    assert!(matches!(check_new(""), Err(IdentityError::EmptyPassword)));
    let err = check_new("abcde").unwrap_err();
    assert!(
        matches!(err, IdentityError::PasswordTooShort { chars: 5, min: 12 }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("fewer than the 12 required"),
        "{err}"
    );
    assert!(matches!(
        check_new("abcdefghijk"),
        Err(IdentityError::PasswordTooShort { chars: 11, .. })
    ));
    check_new("abcdefghijkl").unwrap();
    // Twelve two-byte characters are twelve characters.
    check_new(&"é".repeat(12)).unwrap();
    check_new(&"x".repeat(MAX_PASSWORD_BYTES)).unwrap();
    assert!(matches!(
        check_new(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
        Err(IdentityError::PasswordTooLong { len: 1025, .. })
    ));
}

#[test]
fn garbage_phc_is_an_error_not_a_mismatch() {
    let err = verify("pw", "not a phc string").unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidPasswordHash { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("reset the user's password"));
}

#[test]
fn verifies_hashes_made_with_other_parameters_and_flags_them_for_rehash() {
    // Made with argon2id m=4096,t=3,p=1 (argon2's old defaults) for the password "legacy".
    let salt = SaltString::generate(&mut OsRng);
    let old = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(4096, 3, 1, None).unwrap(),
    )
    .hash_password(b"legacy", &salt)
    .unwrap()
    .to_string();
    assert!(verify("legacy", &old).unwrap());
    assert!(!verify("legacy2", &old).unwrap());
    assert!(needs_rehash(&old));
    assert!(!needs_rehash(&hash("legacy").unwrap()));
    assert!(needs_rehash("garbage"));
}

#[test]
fn dummy_hash_uses_the_current_parameters() {
    assert!(
        !needs_rehash(DUMMY_PHC),
        "DUMMY_PHC must be regenerated with the current parameters"
    );
    assert!(PasswordHash::new(DUMMY_PHC).is_ok());
}

#[test]
fn verify_dummy_costs_about_as_much_as_verify() {
    let phc = hash("some password").unwrap();
    // Warm up, then take the best of a few runs to dampen scheduler noise.
    verify_dummy("warm-up");
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .min()
            .unwrap()
    };
    let real = best(&|| {
        let _ = verify("wrong password", &phc);
    });
    let dummy = best(&|| verify_dummy("wrong password"));
    let ratio = dummy.as_secs_f64() / real.as_secs_f64();
    assert!(
        (0.25..4.0).contains(&ratio),
        "verify took {real:?}, verify_dummy took {dummy:?}"
    );
}
