#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

/// The RFC 6238 appendix B SHA-1 key "12345678901234567890" in base32.
const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// RFC 6238 appendix B, SHA-1 rows: (unix time, 8-digit TOTP). A 6-digit code is the last six
/// digits of the 8-digit one (both are the same truncated value modulo 10^digits).
const RFC_VECTORS: &[(i64, &str)] = &[
    (59, "94287082"),
    (1_111_111_109, "07081804"),
    (1_111_111_111, "14050471"),
    (1_234_567_890, "89005924"),
    (2_000_000_000, "69279037"),
    (20_000_000_000, "65353130"),
];

#[test]
fn rfc6238_vectors_match_and_return_their_step() {
    for &(time, eight) in RFC_VECTORS {
        let six = &eight[2..];
        let step = time / 30;
        assert_eq!(code_at_step(RFC_SECRET, step).unwrap(), six, "t={time}");
        assert_eq!(
            verify(RFC_SECRET, six, time).unwrap(),
            Some(step),
            "t={time} code={six}"
        );
    }
}

#[test]
fn neighbouring_steps_are_accepted_and_report_their_own_step() {
    let time = 1_111_111_111;
    let step = time / 30;
    let previous = code_at_step(RFC_SECRET, step - 1).unwrap();
    let next = code_at_step(RFC_SECRET, step + 1).unwrap();
    let too_old = code_at_step(RFC_SECRET, step - 2).unwrap();
    let too_new = code_at_step(RFC_SECRET, step + 2).unwrap();
    assert_eq!(verify(RFC_SECRET, &previous, time).unwrap(), Some(step - 1));
    assert_eq!(verify(RFC_SECRET, &next, time).unwrap(), Some(step + 1));
    assert_eq!(verify(RFC_SECRET, &too_old, time).unwrap(), None);
    assert_eq!(verify(RFC_SECRET, &too_new, time).unwrap(), None);
}

#[test]
fn wrong_and_malformed_codes_do_not_match() {
    let time = 1_234_567_890;
    assert_eq!(verify(RFC_SECRET, "005925", time).unwrap(), None);
    assert_eq!(verify(RFC_SECRET, "", time).unwrap(), None);
    assert_eq!(verify(RFC_SECRET, "5924", time).unwrap(), None);
    assert_eq!(verify(RFC_SECRET, "89005924", time).unwrap(), None);
    assert_eq!(verify(RFC_SECRET, "00592a", time).unwrap(), None);
    // Spaces as users type them are fine.
    assert_eq!(
        verify(RFC_SECRET, "005 924", time).unwrap(),
        Some(time / 30)
    );
}

#[test]
fn secrets_are_validated() {
    let err = verify("not base32!", "123456", 0).unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidTotpSecret { .. }),
        "{err:?}"
    );
    // 80 bits: too short for RFC 4226.
    let err = verify("GEZDGNBVGY3TQOJQ", "123456", 0).unwrap_err();
    assert!(err.to_string().contains("80 bits"), "{err}");
    // Lower case, spaces and padding are accepted.
    let sloppy = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq====";
    assert_eq!(verify(sloppy, "287082", 59).unwrap(), Some(1));
    assert!(matches!(
        verify(RFC_SECRET, "287082", -1),
        Err(IdentityError::InvalidTime { now_unix: -1 })
    ));
}

#[test]
fn generated_secrets_are_160_bit_base32_and_usable() {
    let secret = generate_secret();
    assert_eq!(secret.len(), 32, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    assert_ne!(secret, generate_secret());
    let now = 1_700_000_000;
    let code = code_at_step(&secret, now / 30).unwrap();
    assert_eq!(verify(&secret, &code, now).unwrap(), Some(now / 30));
}

#[test]
fn provisioning_uri_carries_secret_label_and_parameters() {
    let uri = provisioning_uri(RFC_SECRET, "alice@example.test", "Tsuzuku").unwrap();
    let url = url::Url::parse(&uri).unwrap();
    assert_eq!(url.scheme(), "otpauth");
    assert_eq!(url.host_str(), Some("totp"));
    assert!(url.path().contains("Tsuzuku:alice"), "{uri}");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query.get("secret").map(String::as_str), Some(RFC_SECRET));
    assert_eq!(query.get("issuer").map(String::as_str), Some("Tsuzuku"));
    // SHA1, 6 digits and 30 s are the defaults apps assume; totp-rs leaves them out or spells
    // them out, either is fine, but never something else.
    if let Some(digits) = query.get("digits") {
        assert_eq!(digits, "6");
    }
    if let Some(period) = query.get("period") {
        assert_eq!(period, "30");
    }
    if let Some(algorithm) = query.get("algorithm") {
        assert_eq!(algorithm, "SHA1");
    }

    assert!(matches!(
        provisioning_uri(RFC_SECRET, "a:b", "Tsuzuku"),
        Err(IdentityError::InvalidTotpLabel { .. })
    ));
    assert!(matches!(
        provisioning_uri(RFC_SECRET, "alice", ""),
        Err(IdentityError::InvalidTotpLabel { .. })
    ));
    assert!(matches!(
        provisioning_uri("!!", "alice", "Tsuzuku"),
        Err(IdentityError::InvalidTotpSecret { .. })
    ));
}
