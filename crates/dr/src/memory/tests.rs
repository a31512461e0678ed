#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;

use super::*;
use crate::check::Reason;
use crate::record::{DrState, InternetMode, RecordFields, sign, split_strings};

const T: i64 = 1_767_225_600;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[21u8; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(key().verifying_key()).unwrap();
    t
}

fn record(state: DrState, issued_at: i64, lifetime: i64) -> Vec<Vec<u8>> {
    let f = RecordFields {
        state,
        internet: (state != DrState::Off).then_some(InternetMode::Closed),
        issued_at,
        not_before: issued_at - 300,
        not_after: issued_at + lifetime,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    };
    split_strings(&sign(&f, &key()).unwrap())
        .into_iter()
        .map(String::into_bytes)
        .collect()
}

fn observe(m: &mut Memory, records: &[Vec<Vec<u8>>], now: i64) -> Step {
    m.observe(
        Observation::Records(records),
        &trusted(),
        now,
        &Member::default(),
    )
}

#[test]
fn the_last_verified_state_stands_while_dns_is_unreachable() {
    let mut m = Memory::default();
    let step = m.observe(Observation::Unreachable, &trusted(), T, &Member::default());
    assert_eq!(step.conclusion.reason, Reason::NoRecord);
    assert!(!step.changed);

    let step = observe(&mut m, &[record(DrState::On, T, 3600)], T);
    assert!(step.conclusion.dr_active());
    assert!(step.changed);
    assert!(step.rejections.is_empty());

    let step = m.observe(
        Observation::Unreachable,
        &trusted(),
        T + 60,
        &Member::default(),
    );
    assert!(step.conclusion.dr_active(), "{:?}", step.conclusion);
    assert!(!step.changed);

    // ... until the remembered record expires.
    let step = m.observe(
        Observation::Unreachable,
        &trusted(),
        T + 3600,
        &Member::default(),
    );
    assert!(!step.conclusion.dr_active());
    assert_eq!(step.conclusion.reason, Reason::Expired);
}

#[test]
fn a_withdrawn_record_means_normal_mode_and_stays_so_while_unreachable() {
    let mut m = Memory::default();
    observe(&mut m, &[record(DrState::On, T, 3600)], T);
    let step = m.observe(
        Observation::Withdrawn,
        &trusted(),
        T + 30,
        &Member::default(),
    );
    assert_eq!(step.conclusion.reason, Reason::Withdrawn);
    assert!(step.changed);
    assert_eq!(m.withdrawn_at, Some(T + 30));
    assert!(m.record.is_some(), "kept for replay protection");
    let step = m.observe(
        Observation::Unreachable,
        &trusted(),
        T + 60,
        &Member::default(),
    );
    assert_eq!(step.conclusion.reason, Reason::Withdrawn);
    // No TXT record at all is a withdrawal too.
    let step = observe(&mut m, &[], T + 90);
    assert_eq!(step.conclusion.reason, Reason::Withdrawn);
    assert!(!step.changed);
    // Publishing again (the same record) returns to DR mode.
    let step = observe(&mut m, &[record(DrState::On, T, 3600)], T + 120);
    assert!(step.conclusion.dr_active());
    assert_eq!(m.withdrawn_at, None);
}

#[test]
fn a_spoofed_record_changes_nothing() {
    let mut m = Memory::default();
    observe(&mut m, &[record(DrState::On, T, 3600)], T);
    let before = m.clone();
    let forged = {
        let other = SigningKey::from_bytes(&[22u8; 32]);
        let f = RecordFields {
            state: DrState::Off,
            internet: None,
            issued_at: T + 10,
            not_before: T,
            not_after: T + 100,
            groups: BTreeSet::new(),
            devices: BTreeSet::new(),
        };
        vec![sign(&f, &other).unwrap().into_bytes()]
    };
    let garbage = vec![b"v=TSZDR1; s=off".to_vec()];
    let step = observe(&mut m, &[forged, garbage], T + 20);
    assert!(step.conclusion.dr_active());
    assert_eq!(step.rejections.len(), 2);
    assert!(!step.changed);
    assert_eq!(m, before);
}

#[test]
fn a_newer_off_record_ends_dr_mode_and_the_old_on_record_cannot_be_replayed() {
    let mut m = Memory::default();
    let on = record(DrState::On, T, 3600);
    observe(&mut m, std::slice::from_ref(&on), T);
    let step = observe(&mut m, &[record(DrState::Off, T + 600, 3600)], T + 600);
    assert_eq!(step.conclusion.reason, Reason::Off);
    let step = observe(&mut m, &[on], T + 700);
    assert_eq!(step.conclusion.reason, Reason::Off);
    assert!(matches!(
        step.rejections.as_slice(),
        [Rejection::Replayed { .. }]
    ));
}

#[test]
fn the_newest_of_several_valid_records_wins() {
    let mut m = Memory::default();
    let step = observe(
        &mut m,
        &[
            record(DrState::Off, T, 3600),
            record(DrState::On, T + 5, 3600),
            record(DrState::Off, T + 2, 3600),
        ],
        T + 10,
    );
    assert!(step.conclusion.dr_active());
    assert_eq!(m.record.as_ref().unwrap().issued_at(), T + 5);
}

#[test]
fn a_newer_expired_record_supersedes_an_older_valid_one() {
    let mut m = Memory::default();
    observe(&mut m, &[record(DrState::On, T, 86_400)], T);
    // An `off` issued later, already expired when first seen: DR mode still ends.
    let step = observe(&mut m, &[record(DrState::Off, T + 100, 200)], T + 1000);
    assert!(!step.conclusion.dr_active());
    assert_eq!(step.conclusion.reason, Reason::Expired);
    assert!(step.changed);
    assert_eq!(m.record.as_ref().unwrap().issued_at(), T + 100);
    // An older expired record does not.
    let mut m = Memory::default();
    observe(&mut m, &[record(DrState::On, T, 86_400)], T);
    let step = observe(&mut m, &[record(DrState::Off, T - 100, 200)], T + 1000);
    assert!(step.conclusion.dr_active());
    assert!(!step.changed);
}
