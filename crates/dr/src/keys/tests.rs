#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::*;

#[test]
fn key_id_is_the_sha256_prefix_of_the_raw_public_key() {
    let key = SigningKey::from_bytes(&[1u8; 32]).verifying_key();
    let digest = Sha256::digest(key.as_bytes());
    let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let id = key_id(&key);
    assert_eq!(id.to_string(), expected);
    assert_eq!(id.to_string().len(), 16);
    assert_eq!(&id.as_bytes()[..], &digest[..8]);
}

#[test]
fn key_ids_parse_only_in_canonical_form() {
    let id: KeyId = "00ff10a0b0c0d0e0".parse().unwrap();
    assert_eq!(id.to_string(), "00ff10a0b0c0d0e0");
    for bad in [
        "",
        "00ff10a0b0c0d0e",
        "00ff10a0b0c0d0e00",
        "00FF10A0B0C0D0E0",
        "00ff10a0b0c0d0eg",
        "+0ff10a0b0c0d0e0",
    ] {
        assert_eq!(bad.parse::<KeyId>(), Err(BadKeyId), "{bad:?}");
    }
}

#[test]
fn pem_round_trips_and_garbage_is_refused() {
    let key = generate();
    let private = signing_key_to_pem(&key).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private}"
    );
    let public = verifying_key_to_pem(&key.verifying_key()).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    assert_eq!(
        signing_key_from_pem(&private).unwrap().to_bytes(),
        key.to_bytes()
    );
    assert_eq!(
        verifying_key_from_pem(&public).unwrap(),
        key.verifying_key()
    );
    assert!(matches!(
        verifying_key_from_pem("hello"),
        Err(KeyError::PublicPem { .. })
    ));
    // A private key is not a public key, and the other way round.
    assert!(matches!(
        verifying_key_from_pem(&private),
        Err(KeyError::PublicPem { .. })
    ));
    assert!(matches!(
        signing_key_from_pem(&public),
        Err(KeyError::PrivatePem { .. })
    ));
    assert_ne!(generate().to_bytes(), key.to_bytes());
}

#[test]
fn trusted_keys_hold_several_keys_and_refuse_weak_ones() {
    let a = SigningKey::from_bytes(&[2u8; 32]).verifying_key();
    let b = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
    let mut trusted = TrustedKeys::new();
    assert!(trusted.is_empty());
    let ida = trusted.insert(a).unwrap();
    let idb = trusted
        .insert_pem(&verifying_key_to_pem(&b).unwrap())
        .unwrap();
    assert_eq!(trusted.len(), 2);
    assert_eq!(trusted.get(&ida), Some(&a));
    assert_eq!(trusted.get(&idb), Some(&b));
    let mut ids: Vec<KeyId> = vec![ida, idb];
    ids.sort();
    assert_eq!(trusted.ids().copied().collect::<Vec<_>>(), ids);
    // The identity point: a small-order key anyone can "sign" for.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = VerifyingKey::from_bytes(&identity).unwrap();
    assert_eq!(trusted.insert(weak), Err(KeyError::WeakKey));
    assert_eq!(trusted.len(), 2);
}
