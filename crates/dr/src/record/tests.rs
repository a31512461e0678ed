#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;

use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn on_fields() -> RecordFields {
    RecordFields {
        state: DrState::On,
        internet: Some(InternetMode::Controlled),
        issued_at: 1_767_225_600,
        not_before: 1_767_225_300,
        not_after: 1_767_232_800,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A valid signed value, then `edit` applied to its text; returns the parse result.
fn parse_edited(edit: impl Fn(&str) -> String) -> Result<SignedRecord, RecordError> {
    let value = sign(&on_fields(), &key()).unwrap();
    parse(&edit(&value))
}

#[test]
fn canonical_content_is_the_fixed_order_with_sorted_lists() {
    let mut f = on_fields();
    f.state = DrState::Test;
    f.groups = set(&["zeta", "alpha"]);
    f.devices = set(&["dev-2"]);
    let kid: KeyId = "0123456789abcdef".parse().unwrap();
    assert_eq!(
        f.canonical(&kid),
        "v=TSZDR1; s=test; m=controlled; t=1767225600; nb=1767225300; na=1767232800; \
         g=alpha,zeta; d=dev-2; k=0123456789abcdef"
    );
    let mut off = on_fields();
    off.state = DrState::Off;
    off.internet = None;
    assert_eq!(
        off.canonical(&kid),
        "v=TSZDR1; s=off; t=1767225600; nb=1767225300; na=1767232800; k=0123456789abcdef"
    );
}

#[test]
fn sign_then_parse_gives_the_fields_back() {
    let mut f = on_fields();
    f.state = DrState::Test;
    f.groups = set(&["it-ops", "finance"]);
    f.devices = set(&["laptop-17"]);
    let value = sign(&f, &key()).unwrap();
    let kid = crate::keys::key_id(&key().verifying_key());
    assert!(value.starts_with(&f.canonical(&kid)), "{value}");
    assert!(value.contains("; sig="), "{value}");
    let parsed = parse(&value).unwrap();
    assert_eq!(parsed.fields, f);
    assert_eq!(parsed.key_id, kid);
}

#[test]
fn parse_accepts_any_order_spaces_and_a_trailing_semicolon() {
    let value = sign(&on_fields(), &key()).unwrap();
    let expected = parse(&value).unwrap();
    let mut pairs: Vec<&str> = value.split("; ").collect();
    pairs.reverse();
    let shuffled = format!("  {} ;", pairs.join(" ;  "));
    assert_eq!(parse(&shuffled).unwrap(), expected);
    let spaced = value
        .replace("s=on", "s = on")
        .replace("; t=", ";t =  ")
        .replace("; sig=", " ;  sig =  ");
    // `sig =  AAA==` keeps the padding: only the first `=` splits.
    assert_eq!(parse(&spaced).unwrap(), expected);
}

#[test]
fn parse_rejects_duplicates_unknown_keys_and_missing_keys() {
    assert_eq!(
        parse_edited(|v| format!("s=on; {v}")),
        Err(RecordError::DuplicateKey { key: "s" })
    );
    assert_eq!(
        parse_edited(|v| format!("{v}; x=1")),
        Err(RecordError::UnknownKey { key: "x".into() })
    );
    assert_eq!(
        parse_edited(|v| v.replace("s=on", "S=on")),
        Err(RecordError::UnknownKey { key: "S".into() })
    );
    for key in ["v", "s", "t", "nb", "na", "k"] {
        let err = parse_edited(|v| {
            v.split("; ")
                .filter(|p| !p.starts_with(&format!("{key}=")))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_err();
        assert_eq!(err, RecordError::MissingKey { key }, "without {key}");
    }
}

#[test]
fn parse_rejects_an_unsigned_record() {
    let kid = crate::keys::key_id(&key().verifying_key());
    let unsigned = on_fields().canonical(&kid);
    assert_eq!(parse(&unsigned), Err(RecordError::Unsigned));
}

#[test]
fn parse_rejects_bad_values() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("v=TSZDR1", "v=TSZDR2", "version"),
        ("s=on", "s=maybe", "s"),
        ("m=controlled", "m=fo", "m"),
        ("t=1767225600", "t=01767225600", "t"),
        ("t=1767225600", "t=-1", "t"),
        ("t=1767225600", "t=+1767225600", "t"),
        ("t=1767225600", "t=17672256x0", "t"),
        ("t=1767225600", "t=", "t"),
        ("t=1767225600", "t=9999999999999", "t"),
        ("nb=1767225300", "nb=1.5", "nb"),
    ];
    for (from, to, what) in cases {
        let err = parse_edited(|v| v.replace(from, to)).unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::BadValue { .. } | RecordError::UnsupportedVersion { .. }
            ),
            "{what}: {to} gave {err:?}"
        );
    }
    let err = parse_edited(|v| {
        let kid = crate::keys::key_id(&key().verifying_key()).to_string();
        v.replace(&kid, &kid.to_uppercase())
    })
    .unwrap_err();
    assert!(
        matches!(err, RecordError::BadValue { key: "k", .. }),
        "{err:?}"
    );
    let err = parse_edited(|v| v.replace("t=1767225600", "t=300000000000")).unwrap_err();
    assert_eq!(
        err,
        RecordError::TimeOutOfRange {
            field: "t",
            value: 300_000_000_000
        }
    );
}

#[test]
fn parse_rejects_bad_base64_and_wrong_signature_length() {
    assert_eq!(
        parse_edited(|v| format!("{}; sig=not*base64", v.split("; sig=").next().unwrap())),
        Err(RecordError::BadBase64)
    );
    assert_eq!(
        parse_edited(|v| format!("{}; sig=AAAA", v.split("; sig=").next().unwrap())),
        Err(RecordError::BadSignatureLength { len: 3 })
    );
    // Unpadded base64 is not the canonical form.
    assert_eq!(
        parse_edited(|v| v.trim_end_matches('=').to_owned()),
        Err(RecordError::BadBase64)
    );
}

#[test]
fn parse_rejects_times_in_the_wrong_order() {
    assert_eq!(
        parse_edited(|v| v.replace("na=1767232800", "na=1767225300")),
        Err(RecordError::TimesOutOfOrder {
            not_before: 1_767_225_300,
            not_after: 1_767_225_300
        })
    );
    assert_eq!(
        parse_edited(|v| v.replace("na=1767232800", "na=100")),
        Err(RecordError::TimesOutOfOrder {
            not_before: 1_767_225_300,
            not_after: 100
        })
    );
}

#[test]
fn parse_checks_mode_and_targets_against_the_state() {
    assert_eq!(
        parse_edited(|v| v.replace("s=on", "s=off")),
        Err(RecordError::InternetModeWithOff)
    );
    assert_eq!(
        parse_edited(|v| v.replace("m=controlled; ", "")),
        Err(RecordError::InternetModeMissing { state: DrState::On })
    );
    assert_eq!(
        parse_edited(|v| v.replace("s=on", "s=test")),
        Err(RecordError::TestWithoutTargets)
    );
    assert_eq!(
        parse_edited(|v| v.replace("; k=", "; g=admins; k=")),
        Err(RecordError::TargetsOutsideTest { state: DrState::On })
    );
    for bad in ["a,,b", "a b", "a;b", "", "x/y", &"a".repeat(65)] {
        let err = parse_edited(|v| {
            v.replace("s=on", "s=test")
                .replace("; k=", &format!("; g={bad}; k="))
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                RecordError::BadTarget { .. }
                    | RecordError::EmptyField { .. }
                    | RecordError::NoEquals { .. }
            ),
            "g={bad:?} gave {err:?}"
        );
    }
    let many: Vec<String> = (0..65).map(|i| format!("d{i}")).collect();
    let err = parse_edited(|v| {
        v.replace("s=on", "s=test")
            .replace("; k=", &format!("; d={}; k=", many.join(",")))
    })
    .unwrap_err();
    assert_eq!(
        err,
        RecordError::TooManyTargets {
            list: "d",
            count: 65
        }
    );
}

#[test]
fn parse_rejects_malformed_text() {
    assert_eq!(parse(""), Err(RecordError::Empty));
    assert_eq!(parse("  ; "), Err(RecordError::Empty));
    assert_eq!(
        parse_edited(|v| v.replacen("; ", ";; ", 1)),
        Err(RecordError::EmptyField { index: 1 })
    );
    assert_eq!(
        parse_edited(|v| v.replacen("s=on", "s", 1)),
        Err(RecordError::NoEquals {
            index: 1,
            text: "s".into()
        })
    );
    assert_eq!(
        parse_edited(|v| v.replacen("s=on", "s=\u{e9}", 1)),
        Err(RecordError::NotPrintable { offset: 12 })
    );
    assert_eq!(
        parse_edited(|v| v.replacen("s=on", "s=o\nn", 1)),
        Err(RecordError::NotPrintable { offset: 13 })
    );
    assert_eq!(
        parse_edited(|v| v.replacen("; s=on", ";\ts=on", 1)),
        Err(RecordError::NotPrintable { offset: 9 })
    );
    let long = "v=TSZDR1; ".repeat(300);
    assert_eq!(parse(&long), Err(RecordError::TooLong { len: long.len() }));
}

#[test]
fn join_concatenates_strings_and_enforces_limits() {
    assert_eq!(join_strings(&["v=TS", "ZDR1"]).unwrap(), "v=TSZDR1");
    assert_eq!(join_strings::<&[u8]>(&[]), Err(RecordError::NoStrings));
    let s256 = vec![b'a'; 256];
    assert_eq!(
        join_strings(&[b"ok".to_vec(), s256]),
        Err(RecordError::StringTooLong { index: 1, len: 256 })
    );
    let s255 = vec![b'a'; 255];
    let nine: Vec<Vec<u8>> = std::iter::repeat_n(s255, 9).collect();
    assert_eq!(
        join_strings(&nine),
        Err(RecordError::TooLong { len: 2040 + 255 })
    );
    assert_eq!(
        join_strings(&[&b"a\xffb"[..]]),
        Err(RecordError::NotPrintable { offset: 1 })
    );
}

#[test]
fn split_gives_strings_of_at_most_255_bytes_that_join_back() {
    let mut f = on_fields();
    f.state = DrState::Test;
    f.groups = (0..20).map(|i| format!("group-number-{i:02}")).collect();
    let value = sign(&f, &key()).unwrap();
    assert!(value.len() > 2 * MAX_TXT_STRING, "{}", value.len());
    let parts = split_strings(&value);
    assert!(parts.len() >= 3);
    assert!(
        parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= MAX_TXT_STRING)
    );
    assert_eq!(join_strings(&parts).unwrap(), value);
    let zone = zone_file_strings(&value);
    assert_eq!(zone.matches('"').count(), 2 * parts.len());
    assert!(zone.starts_with("\"v=TSZDR1; s=test"), "{zone}");
    assert!(split_strings("").is_empty());
}

#[test]
fn sign_refuses_invalid_fields_and_oversized_records() {
    let mut f = on_fields();
    f.not_after = f.not_before;
    assert!(matches!(
        sign(&f, &key()),
        Err(RecordError::TimesOutOfOrder { .. })
    ));
    let mut f = on_fields();
    f.state = DrState::Test;
    f.groups = (0..40).map(|i| format!("{i:0>60}")).collect();
    assert!(matches!(sign(&f, &key()), Err(RecordError::TooLong { .. })));
    let mut f = on_fields();
    f.issued_at = -5;
    assert_eq!(
        sign(&f, &key()),
        Err(RecordError::TimeOutOfRange {
            field: "t",
            value: -5
        })
    );
}

#[test]
fn every_error_names_what_was_wrong() {
    let msg = RecordError::DuplicateKey { key: "nb" }.to_string();
    assert!(msg.contains("\"nb\""), "{msg}");
    let msg = RecordError::Unsigned.to_string();
    assert!(msg.contains("unsigned"), "{msg}");
    let msg = RecordError::BadValue {
        key: "m",
        value: "fo".into(),
        expected: "open, controlled or closed",
    }
    .to_string();
    assert!(
        msg.contains("m=\"fo\"") && msg.contains("controlled"),
        "{msg}"
    );
}
