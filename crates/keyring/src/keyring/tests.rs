#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

const TOTP: &str = "users.totp_secret";

fn master(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; KEY_LEN])
}

/// A keyring under master key `n` with one data key, and that key's row.
fn keyring(n: u8) -> (Keyring, WrappedKey) {
    let mut kr = Keyring::new(master(n), Vec::new()).unwrap();
    let row = kr.generate_data_key(1_700_000_000).unwrap();
    (kr, row)
}

fn payload(sealed: &str) -> (String, Vec<u8>) {
    let (head, data) = sealed.rsplit_once(':').unwrap();
    (head.to_owned(), URL_SAFE_NO_PAD.decode(data).unwrap())
}

fn with_payload(head: &str, bytes: &[u8]) -> String {
    format!("{head}:{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[test]
fn round_trip() {
    let (kr, row) = keyring(1);
    let f = field(TOTP, "t1", "u1");
    for plain in [
        &b""[..],
        b"JBSWY3DPEHPK3PXP",
        &[0u8; 10_000],
        "名前 ✓".as_bytes(),
    ] {
        let sealed = kr.seal(&f, plain).unwrap();
        assert!(sealed.starts_with(&format!("tz1:{}:", row.id)), "{sealed}");
        assert!(Keyring::is_sealed(&sealed));
        assert_eq!(&kr.open(&f, &sealed).unwrap()[..], plain);
    }
    assert!(
        row.id.starts_with("dk-") && row.id.len() == 19,
        "{}",
        row.id
    );
    assert_eq!(row.master_id, master(1).id());
    assert_eq!(kr.active_key_id(), Some(row.id.as_str()));
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let (kr, _) = keyring(1);
    let f = field("users.email", "t1", "u1");
    let a = kr.seal(&f, b"alice@example.com").unwrap();
    let b = kr.seal(&f, b"alice@example.com").unwrap();
    assert_ne!(a, b);
    assert_ne!(payload(&a).1[..NONCE_LEN], payload(&b).1[..NONCE_LEN]);
    assert!(!a.contains("alice"));
}

#[test]
fn a_value_moved_to_another_row_or_field_does_not_open() {
    let (kr, row) = keyring(1);
    let sealed = kr.seal(&field(TOTP, "t1", "u1"), b"secret").unwrap();
    for other in [
        field(TOTP, "t1", "u2"),
        field(TOTP, "t2", "u1"),
        field("oidc.client_secret", "t1", "u1"),
        String::new(),
    ] {
        let err = kr.open(&other, &sealed).unwrap_err();
        match &err {
            KeyringError::Unauthentic { field, key_id } => {
                assert_eq!(field, &other);
                assert_eq!(key_id, &row.id);
            }
            e => panic!("{e}"),
        }
        assert!(err.to_string().contains("another column or row"), "{err}");
    }
}

#[test]
fn field_escapes_separators() {
    assert_eq!(field(TOTP, "t1", "u42"), "users.totp_secret:t1:u42");
    assert_ne!(field("a", "b:c", "d"), field("a:b", "c", "d"));
    assert_ne!(field("a", "b", "c:d"), field("a", "b:c", "d"));
    assert_ne!(field("a", "b%3Ac", "d"), field("a", "b:c", "d"));
    assert_eq!(field("c", "t:1", "50%"), "c:t%3A1:50%25");
}

#[test]
fn tampered_nonce_ciphertext_or_tag_is_refused() {
    let (kr, _) = keyring(1);
    let f = field(TOTP, "t1", "u1");
    let sealed = kr.seal(&f, b"JBSWY3DPEHPK3PXP").unwrap();
    let (head, bytes) = payload(&sealed);
    assert_eq!(bytes.len(), NONCE_LEN + 16 + TAG_LEN);
    // Every bit of nonce, ciphertext and tag matters.
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            let err = kr.open(&f, &with_payload(&head, &b)).unwrap_err();
            assert!(
                matches!(err, KeyringError::Unauthentic { .. }),
                "byte {i}: {err}"
            );
        }
    }
    // Truncated or extended.
    for b in [
        &bytes[..bytes.len() - 1],
        &bytes[1..],
        &[&bytes[..], &[0]].concat(),
    ] {
        assert!(kr.open(&f, &with_payload(&head, b)).is_err());
    }
    let short = with_payload(&head, &bytes[..NONCE_LEN + TAG_LEN - 1]);
    assert!(matches!(
        kr.open(&f, &short).unwrap_err(),
        KeyringError::Malformed { .. }
    ));
}

#[test]
fn a_value_relabelled_with_another_data_key_is_refused() {
    let (mut kr, old) = keyring(1);
    let f = field(TOTP, "t1", "u1");
    let sealed = kr.seal(&f, b"secret").unwrap();
    let new = kr.generate_data_key(1_800_000_000).unwrap();
    let relabelled = sealed.replacen(&old.id, &new.id, 1);
    assert!(matches!(
        kr.open(&f, &relabelled).unwrap_err(),
        KeyringError::Unauthentic { .. }
    ));
    assert_eq!(&kr.open(&f, &sealed).unwrap()[..], b"secret");
}

#[test]
fn unknown_data_key_names_the_key_and_the_known_ones() {
    let (kr, row) = keyring(1);
    let f = field(TOTP, "t1", "u1");
    let sealed = kr.seal(&f, b"secret").unwrap();
    let foreign = sealed.replacen(&row.id, "dk-0000000000000000", 1);
    let err = kr.open(&f, &foreign).unwrap_err();
    match &err {
        KeyringError::UnknownDataKey { key_id, known } => {
            assert_eq!(key_id, "dk-0000000000000000");
            assert_eq!(known, &vec![row.id.clone()]);
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("restore it from backup"), "{err}");
}

#[test]
fn wrong_master_key_names_the_keys_and_never_gives_garbage() {
    let (mut kr, first) = keyring(1);
    let second = kr.generate_data_key(1_700_000_100).unwrap();
    let err = Keyring::new(master(2), vec![first.clone(), second.clone()]).unwrap_err();
    match &err {
        KeyringError::WrongMasterKey {
            master_id,
            data_keys,
            wrapped_by,
            ..
        } => {
            assert_eq!(master_id, master(2).id());
            assert_eq!(data_keys, &vec![first.id.clone(), second.id.clone()]);
            assert_eq!(wrapped_by, &vec![master(1).id().to_owned()]);
        }
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    for needle in [
        master(1).id(),
        master(2).id(),
        &first.id,
        &second.id,
        "supplied bytes",
    ] {
        assert!(msg.contains(needle), "{needle} missing: {msg}");
    }
}

#[test]
fn a_wrapped_key_claiming_the_right_master_but_not_decrypting_is_corrupt() {
    let (_, row) = keyring(1);
    // The row names master 1, but the bytes were wrapped under master 1 for another id.
    let mut moved = row.clone();
    moved.id = "dk-ffffffffffffffff".into();
    let err = Keyring::new(master(1), vec![moved]).unwrap_err();
    assert!(matches!(err, KeyringError::DataKeyCorrupt { .. }), "{err}");

    let mut flipped = row.clone();
    let (head, mut bytes) = payload(&flipped.wrapped);
    bytes[20] ^= 1;
    flipped.wrapped = with_payload(&head, &bytes);
    let err = Keyring::new(master(1), vec![flipped]).unwrap_err();
    assert!(matches!(err, KeyringError::DataKeyCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(&row.id));

    // A row forged to name master 2 does not decrypt under master 2 either.
    let mut forged = row.clone();
    forged.master_id = master(2).id().to_owned();
    let err = Keyring::new(master(2), vec![forged]).unwrap_err();
    assert!(matches!(err, KeyringError::DataKeyCorrupt { .. }), "{err}");
}

#[test]
fn malformed_and_duplicate_rows_are_refused() {
    let (_, row) = keyring(1);
    for wrapped in ["", "tzk2:AAAA", "tzk1:!!!", "tzk1:AAAA"] {
        let mut bad = row.clone();
        bad.wrapped = wrapped.into();
        let err = Keyring::new(master(1), vec![bad]).unwrap_err();
        assert!(
            matches!(err, KeyringError::MalformedWrappedKey { .. }),
            "{wrapped}: {err}"
        );
    }
    let mut bad_id = row.clone();
    bad_id.id = "dk:1".into();
    assert!(matches!(
        Keyring::new(master(1), vec![bad_id]).unwrap_err(),
        KeyringError::MalformedWrappedKey { .. }
    ));
    let err = Keyring::new(master(1), vec![row.clone(), row.clone()]).unwrap_err();
    assert!(
        matches!(err, KeyringError::DuplicateDataKey { .. }),
        "{err}"
    );
}

#[test]
fn rewrap_then_open_old_values_with_the_new_master_key() {
    let (mut kr, _) = keyring(1);
    let f1 = field(TOTP, "t1", "u1");
    let f2 = field("users.email", "t1", "u1");
    let old_value = kr.seal(&f1, b"from the first key").unwrap();
    kr.generate_data_key(1_700_000_500).unwrap();
    let newer_value = kr.seal(&f2, b"alice@example.com").unwrap();

    let rows = kr.rewrap(&master(2)).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.master_id == master(2).id()));
    assert_eq!(
        rows.iter().map(|r| r.created_at).collect::<Vec<_>>(),
        vec![1_700_000_000, 1_700_000_500]
    );

    // The new keyring opens everything sealed before, unchanged, and keeps the newest key active.
    let rotated = Keyring::new(master(2), rows.clone()).unwrap();
    assert_eq!(
        &rotated.open(&f1, &old_value).unwrap()[..],
        b"from the first key"
    );
    assert_eq!(
        &rotated.open(&f2, &newer_value).unwrap()[..],
        b"alice@example.com"
    );
    assert_eq!(rotated.active_key_id(), kr.active_key_id());
    // The old master key no longer unwraps the new rows.
    assert!(matches!(
        Keyring::new(master(1), rows).unwrap_err(),
        KeyringError::WrongMasterKey { .. }
    ));
    // The running keyring goes on working meanwhile (no downtime).
    assert_eq!(
        &kr.open(&f1, &old_value).unwrap()[..],
        b"from the first key"
    );
}

#[test]
fn rotate_master_wraps_later_data_keys_under_the_new_master() {
    let (mut kr, first) = keyring(1);
    let rows = kr.rotate_master(master(2)).unwrap();
    assert_eq!(kr.master_id(), master(2).id());
    let later = kr.generate_data_key(1_800_000_000).unwrap();
    assert_eq!(later.master_id, master(2).id());
    let mut all = rows;
    all.push(later);
    let reloaded = Keyring::new(master(2), all).unwrap();
    let ids: Vec<&str> = reloaded.data_key_ids().collect();
    assert!(ids.contains(&first.id.as_str()) && ids.len() == 2);
}

#[test]
fn newest_data_key_is_active_and_all_keys_open() {
    let mut kr = Keyring::new(master(1), Vec::new()).unwrap();
    let a = kr.generate_data_key(300).unwrap();
    let f = field(TOTP, "t", "r");
    let by_a = kr.seal(&f, b"a").unwrap();
    let b = kr.generate_data_key(500).unwrap();
    let by_b = kr.seal(&f, b"b").unwrap();
    assert!(by_b.contains(&b.id));
    // Rows come back from the database in any order.
    let kr = Keyring::new(master(1), vec![b.clone(), a.clone()]).unwrap();
    assert_eq!(kr.active_key_id(), Some(b.id.as_str()));
    assert!(kr.seal(&f, b"c").unwrap().contains(&b.id));
    assert_eq!(&kr.open(&f, &by_a).unwrap()[..], b"a");
    assert_eq!(&kr.open(&f, &by_b).unwrap()[..], b"b");
}

#[test]
fn sealing_without_a_data_key_says_what_to_do() {
    let kr = Keyring::new(master(1), Vec::new()).unwrap();
    let err = kr.seal("x", b"y").unwrap_err();
    assert!(matches!(err, KeyringError::NoActiveDataKey));
    assert!(err.to_string().contains("generate"), "{err}");
    assert_eq!(kr.active_key_id(), None);
}

#[test]
fn is_sealed_recognises_the_form_only() {
    let (kr, _) = keyring(1);
    let sealed = kr.seal("f", b"v").unwrap();
    assert!(Keyring::is_sealed(&sealed));
    assert!(Keyring::is_sealed("tz2:anything"));
    for plain in [
        "alice@example.com",
        "",
        "tz1:",
        "tz1:dk-1",
        "tz1:dk-1:",
        "tz1:dk-1:!!!!",
        "tz1:dk 1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "tz1:dk-1:AAAA",
        "Tz1:dk-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "tzx:dk-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "JBSWY3DPEHPK3PXP",
    ] {
        assert!(!Keyring::is_sealed(plain), "{plain:?}");
    }
    assert!(matches!(
        kr.open("f", "tz2:dk-1:AAAA").unwrap_err(),
        KeyringError::UnsupportedVersion { .. }
    ));
    assert!(matches!(
        kr.open("f", "alice@example.com").unwrap_err(),
        KeyringError::Malformed { .. }
    ));
}

#[test]
fn debug_shows_ids_not_keys() {
    let (kr, row) = keyring(1);
    let dbg = format!("{kr:?}");
    assert!(
        dbg.contains(&row.id) && dbg.contains(kr.master_id()),
        "{dbg}"
    );
    assert!(!dbg.contains("bytes") && !dbg.contains("cipher"), "{dbg}");
}

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn open_never_panics_and_never_accepts_a_changed_value() {
    let (kr, row) = keyring(1);
    let f = field(TOTP, "t1", "u1");
    let good = kr.seal(&f, b"JBSWY3DPEHPK3PXP").unwrap();
    let alphabet: Vec<char> = "tz1k:dD-_AZaz09+/=%\0é✓ \n".chars().collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // Random strings, partly starting with a valid prefix.
    for i in 0..20_000 {
        let len = rng.below(120);
        let mut s: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        if i % 2 == 0 {
            s = format!("tz1:{}:{s}", row.id);
        }
        assert!(kr.open(&f, &s).is_err(), "{s:?}");
        let _ = Keyring::is_sealed(&s);
    }

    // Mutations of a valid value: any change is refused.
    let chars: Vec<char> = good.chars().collect();
    for _ in 0..20_000 {
        let mut m = chars.clone();
        for _ in 0..=rng.below(3) {
            match rng.below(3) {
                0 if !m.is_empty() => {
                    let at = rng.below(m.len());
                    m[at] = alphabet[rng.below(alphabet.len())];
                }
                1 if !m.is_empty() => {
                    m.remove(rng.below(m.len()));
                }
                _ => {
                    let at = rng.below(m.len() + 1);
                    m.insert(at, alphabet[rng.below(alphabet.len())]);
                }
            }
        }
        let s: String = m.into_iter().collect();
        match kr.open(&f, &s) {
            Ok(plain) => {
                assert_eq!(s, good, "a changed value opened");
                assert_eq!(&plain[..], b"JBSWY3DPEHPK3PXP");
            }
            Err(e) => {
                // Messages stay short and never carry the plaintext.
                let msg = e.to_string();
                assert!(!msg.contains("JBSWY3DP"), "{msg}");
            }
        }
    }
}

#[test]
fn key_file_end_to_end_and_a_lost_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let f = field(TOTP, "t1", "u1");

    // First start: key file created, one data key stored, a value sealed.
    let mut kr = Keyring::new(MasterKey::load_or_create(&path).unwrap(), Vec::new()).unwrap();
    let rows = vec![kr.generate_data_key(1).unwrap()];
    let sealed = kr.seal(&f, b"secret").unwrap();
    drop(kr);

    // Restart: same key file, same rows.
    let kr = Keyring::new(MasterKey::load(&path).unwrap(), rows.clone()).unwrap();
    assert_eq!(&kr.open(&f, &sealed).unwrap()[..], b"secret");

    // The key file is lost and a new one gets created: a clear error, no garbage.
    std::fs::remove_file(&path).unwrap();
    let err = Keyring::new(MasterKey::load_or_create(&path).unwrap(), rows).unwrap_err();
    assert!(matches!(err, KeyringError::WrongMasterKey { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("created just now"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}
