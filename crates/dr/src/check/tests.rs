#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;

use super::*;
use crate::record::{RecordFields, sign, split_strings};

const T: i64 = 1_767_225_600;
const NB: i64 = T - 300;
const NA: i64 = T + 7200;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[10u8; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(key().verifying_key()).unwrap();
    t
}

fn fields(state: DrState) -> RecordFields {
    RecordFields {
        state,
        internet: (state != DrState::Off).then_some(InternetMode::Controlled),
        issued_at: T,
        not_before: NB,
        not_after: NA,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    }
}

fn drill() -> RecordFields {
    let mut f = fields(DrState::Test);
    f.groups = ["it-ops".to_owned()].into();
    f.devices = ["laptop-7".to_owned()].into();
    f
}

fn nobody() -> Member {
    Member::default()
}

/// Checks one value given as one TXT string.
fn run(
    value: &str,
    now: i64,
    last: Option<&Verified>,
    member: &Member,
) -> Result<Conclusion, Rejection> {
    check(&[value], &trusted(), now, last, member)
}

fn signed(f: &RecordFields) -> String {
    sign(f, &key()).unwrap()
}

fn verified(f: &RecordFields) -> Verified {
    authenticate(&[signed(f)], &trusted()).unwrap()
}

#[test]
fn an_on_record_puts_every_device_in_dr_mode_until_not_after() {
    let c = run(&signed(&fields(DrState::On)), T, None, &nobody()).unwrap();
    assert!(c.dr_active());
    assert_eq!(
        c.dr,
        Some(DrMode {
            internet: InternetMode::Controlled,
            until: NA,
            drill: false,
            issued_at: T,
        })
    );
    assert_eq!(c.reason, Reason::On);
    assert_eq!(c.issued_at(), Some(T));
    assert_eq!(
        c.record.as_ref().unwrap().key_id(),
        crate::keys::key_id(&key().verifying_key())
    );
    let line = c.to_string();
    assert!(
        line.contains("DR mode on") && line.contains("controlled"),
        "{line}"
    );
}

#[test]
fn every_internet_mode_is_carried_through() {
    for mode in [
        InternetMode::Open,
        InternetMode::Controlled,
        InternetMode::Closed,
    ] {
        let mut f = fields(DrState::On);
        f.internet = Some(mode);
        let c = run(&signed(&f), T, None, &nobody()).unwrap();
        assert_eq!(c.dr.unwrap().internet, mode);
    }
}

#[test]
fn an_off_record_concludes_normal_mode() {
    let c = run(&signed(&fields(DrState::Off)), T, None, &nobody()).unwrap();
    assert!(!c.dr_active());
    assert_eq!(c.reason, Reason::Off);
    assert_eq!(c.issued_at(), Some(T));
    assert!(c.to_string().starts_with("normal mode"), "{c}");
}

#[test]
fn a_test_record_applies_only_to_its_groups_and_devices() {
    let value = signed(&drill());
    let in_group = Member {
        groups: vec!["staff".into(), "it-ops".into()],
        device_id: Some("laptop-1".into()),
    };
    let by_device = Member {
        groups: vec!["staff".into()],
        device_id: Some("laptop-7".into()),
    };
    let outsider = Member {
        groups: vec!["staff".into()],
        device_id: Some("laptop-1".into()),
    };
    for m in [&in_group, &by_device] {
        let c = run(&value, T, None, m).unwrap();
        let dr = c.dr.unwrap();
        assert!(dr.drill, "{m:?}");
        assert_eq!(c.reason, Reason::Drill);
    }
    let c = run(&value, T, None, &outsider).unwrap();
    assert!(!c.dr_active());
    assert_eq!(c.reason, Reason::DrillForOthers);
    let c = run(&value, T, None, &nobody()).unwrap();
    assert_eq!(c.reason, Reason::DrillForOthers);
}

#[test]
fn a_record_split_into_several_strings_is_joined_before_checking() {
    let mut f = drill();
    f.groups = (0..30).map(|i| format!("group-{i:03}")).collect();
    let value = signed(&f);
    let parts = split_strings(&value);
    assert!(parts.len() > 1);
    let member = Member {
        groups: vec!["group-017".into()],
        device_id: None,
    };
    let c = check(&parts, &trusted(), T, None, &member).unwrap();
    assert!(c.dr.unwrap().drill);
    // Out of order, the strings no longer make the signed record.
    let mut swapped = parts.clone();
    swapped.swap(0, 1);
    assert!(check(&swapped, &trusted(), T, None, &member).is_err());
}

#[test]
fn an_unsigned_record_is_rejected() {
    let kid = crate::keys::key_id(&key().verifying_key());
    let unsigned = fields(DrState::On).canonical(&kid);
    assert_eq!(
        run(&unsigned, T, None, &nobody()),
        Err(Rejection::Malformed(RecordError::Unsigned))
    );
}

#[test]
fn a_record_signed_with_an_untrusted_key_is_rejected() {
    let value = sign(&fields(DrState::On), &other_key()).unwrap();
    let err = run(&value, T, None, &nobody()).unwrap_err();
    let kid = crate::keys::key_id(&other_key().verifying_key());
    assert!(
        matches!(&err, Rejection::UnknownKey { key_id, .. } if *key_id == kid),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&kid.to_string()), "{msg}");
    assert!(
        msg.contains(&crate::keys::key_id(&key().verifying_key()).to_string()),
        "{msg}"
    );
    let err = check(&[value], &TrustedKeys::new(), T, None, &nobody()).unwrap_err();
    assert!(err.to_string().contains("trusted: none"), "{err}");
}

#[test]
fn a_tampered_record_fails_its_signature() {
    let value = signed(&fields(DrState::On));
    let kid = crate::keys::key_id(&key().verifying_key());
    for tampered in [
        value.replace("m=controlled", "m=open"),
        value.replace(&format!("na={NA}"), &format!("na={}", NA + 86_400)),
        value.replace("s=on", "s=test").replace("; k=", "; g=x; k="),
    ] {
        assert_eq!(
            run(&tampered, T, None, &nobody()),
            Err(Rejection::BadSignature { key_id: kid }),
            "{tampered}"
        );
    }
    // A signature from another key, relabelled with the trusted key's id.
    let forged = sign(&fields(DrState::On), &other_key()).unwrap();
    let other_kid = crate::keys::key_id(&other_key().verifying_key()).to_string();
    let forged = forged.replace(&other_kid, &kid.to_string());
    assert_eq!(
        run(&forged, T, None, &nobody()),
        Err(Rejection::BadSignature { key_id: kid })
    );
}

#[test]
fn the_validity_window_is_not_before_inclusive_to_not_after_exclusive() {
    let value = signed(&fields(DrState::On));
    assert!(run(&value, NB, None, &nobody()).is_ok());
    assert!(run(&value, NA - 1, None, &nobody()).is_ok());
    assert_eq!(
        run(&value, NA, None, &nobody()),
        Err(Rejection::Expired {
            not_after: NA,
            now: NA
        })
    );
    // A record scheduled for later.
    let mut f = fields(DrState::On);
    f.not_before = T + 100;
    let scheduled = signed(&f);
    assert!(run(&scheduled, T + 100, None, &nobody()).is_ok());
    assert_eq!(
        run(&scheduled, T + 99, None, &nobody()),
        Err(Rejection::NotYetValid {
            not_before: T + 100,
            now: T + 99
        })
    );
}

#[test]
fn a_record_issued_too_far_in_the_future_is_rejected() {
    let mut f = fields(DrState::On);
    f.not_before = 0;
    let value = signed(&f);
    assert!(run(&value, T - CLOCK_SKEW_SECS, None, &nobody()).is_ok());
    assert_eq!(
        run(&value, T - CLOCK_SKEW_SECS - 1, None, &nobody()),
        Err(Rejection::IssuedInFuture {
            issued_at: T,
            now: T - CLOCK_SKEW_SECS - 1
        })
    );
}

#[test]
fn a_record_older_than_the_last_verified_one_is_a_replay() {
    let old = signed(&fields(DrState::On));
    let mut newer = fields(DrState::Off);
    newer.issued_at = T + 60;
    let last = verified(&newer);
    assert_eq!(
        run(&old, T + 120, Some(&last), &nobody()),
        Err(Rejection::Replayed {
            issued_at: T,
            last_issued_at: T + 60
        })
    );
    // The same record seen again is not a replay.
    let same = verified(&fields(DrState::On));
    assert!(
        run(&old, T + 120, Some(&same), &nobody())
            .unwrap()
            .dr_active()
    );
}

#[test]
fn authentic_rejections_are_told_apart_from_forgeries() {
    assert!(
        Rejection::Expired {
            not_after: 1,
            now: 2
        }
        .authentic()
    );
    assert!(
        Rejection::Replayed {
            issued_at: 1,
            last_issued_at: 2
        }
        .authentic()
    );
    assert!(
        !Rejection::BadSignature {
            key_id: "0000000000000000".parse().unwrap()
        }
        .authentic()
    );
    assert!(!Rejection::Malformed(RecordError::Unsigned).authentic());
}

#[test]
fn a_remembered_record_is_followed_until_it_expires() {
    let v = verified(&fields(DrState::On));
    assert!(conclude(&v, T, &nobody()).dr_active());
    let c = conclude(&v, NA, &nobody());
    assert!(!c.dr_active());
    assert_eq!(c.reason, Reason::Expired);
    assert_eq!(conclude(&v, NB - 1, &nobody()).reason, Reason::NotYetValid);
    let d = verified(&drill());
    assert_eq!(conclude(&d, T, &nobody()).reason, Reason::DrillForOthers);
    assert_eq!(no_record().reason, Reason::NoRecord);
    assert_eq!(withdrawn().reason, Reason::Withdrawn);
    assert!(withdrawn().to_string().contains("withdrawn"));
}

#[test]
fn malformed_input_is_rejected_as_malformed() {
    for strings in [
        vec![],
        vec!["".to_owned()],
        vec!["v=1; b=on; m=fo".to_owned()],
    ] {
        let err = check(&strings, &trusted(), T, None, &nobody()).unwrap_err();
        assert!(
            matches!(err, Rejection::Malformed(_)),
            "{strings:?}: {err:?}"
        );
    }
}
