#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;

use super::*;
use crate::check::authenticate;
use crate::record::{DrState, InternetMode, RecordFields, sign};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[33u8; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(key().verifying_key()).unwrap();
    t
}

fn memory() -> Memory {
    let f = RecordFields {
        state: DrState::On,
        internet: Some(InternetMode::Open),
        issued_at: 1000,
        not_before: 700,
        not_after: 5000,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    };
    let value = sign(&f, &key()).unwrap();
    Memory {
        record: Some(authenticate(&[value], &trusted()).unwrap()),
        withdrawn_at: Some(1200),
    }
}

#[test]
fn saved_state_loads_back_and_no_temporary_file_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dr-state.json");
    save(&path, &memory()).unwrap();
    assert_eq!(load(&path, &trusted()).unwrap(), Some(memory()));
    // Overwriting replaces the file whole.
    save(&path, &Memory::default()).unwrap();
    assert_eq!(load(&path, &trusted()).unwrap(), Some(Memory::default()));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["dr-state.json"]);
}

#[test]
fn a_missing_file_is_no_state() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        load(&dir.path().join("none.json"), &trusted()).unwrap(),
        None
    );
}

#[test]
fn an_edited_record_or_an_untrusted_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dr-state.json");
    save(&path, &memory()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("m=open", "m=closed")).unwrap();
    let err = load(&path, &trusted()).unwrap_err();
    assert!(
        matches!(
            &err,
            StateFileError::Untrusted {
                rejection: Rejection::BadSignature { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("remove the file"), "{err}");
    save(&path, &memory()).unwrap();
    let err = load(&path, &TrustedKeys::new()).unwrap_err();
    assert!(matches!(
        err,
        StateFileError::Untrusted {
            rejection: Rejection::UnknownKey { .. },
            ..
        }
    ));
}

#[test]
fn a_file_that_is_not_a_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dr-state.json");
    for text in [
        "not json",
        r#"{"format":"other/1","record":null,"withdrawn_at":null}"#,
        r#"{"format":"tsuzuku-dr-state/1","record":null,"withdrawn_at":null,"x":1}"#,
    ] {
        std::fs::write(&path, text).unwrap();
        let err = load(&path, &trusted()).unwrap_err();
        assert!(
            matches!(err, StateFileError::Invalid { .. }),
            "{text}: {err:?}"
        );
        assert!(err.to_string().contains("dr-state.json"), "{err}");
    }
    std::fs::write(&path, vec![b' '; 70_000]).unwrap();
    assert!(matches!(
        load(&path, &trusted()),
        Err(StateFileError::TooLarge { len: 70_000, .. })
    ));
}

#[test]
fn saving_into_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("dr-state.json");
    let err = save(&path, &memory()).unwrap_err();
    assert!(matches!(err, StateFileError::Write { .. }));
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}
