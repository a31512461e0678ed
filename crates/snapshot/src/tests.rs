#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use base64::Engine as _;
use tsuzuku_keyring::MasterKey;

use crate::body::next_version;
use crate::*;

fn body(version: i64) -> SnapshotBody {
    SnapshotBody {
        format: 1,
        tenant: "default".into(),
        version,
        issued_at_ms: version,
        policy_version: 3,
        policies: vec![PolicyEntry {
            id: "p1".into(),
            text: "permit(principal, action, resource);".into(),
        }],
        apps: vec![AppEntry {
            id: "a1".into(),
            name: "wiki".into(),
            host: "wiki.example".into(),
            upstream: "http://127.0.0.1:9".into(),
            data_class: "internal".into(),
            critical: true,
            isolated: false,
            created_at: 1,
        }],
        users: vec![UserEntry {
            id: "u1".into(),
            username: "alice".into(),
            display_name: "Alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["staff".into()],
            disabled: false,
            created_at: 1,
        }],
        assertion_keys: vec![],
        credentials: vec![],
        device_ca: None,
        devices: vec![],
    }
}

#[test]
fn signed_snapshot_verifies_and_round_trips() {
    let s = SnapshotSigner::generate();
    let wire = s.sign(&body(10)).unwrap();
    let trusted = TrustedKeys::from_pem(&s.public_pem().unwrap()).unwrap();
    let v = verify(&wire, &trusted, "default", Some(9)).unwrap();
    assert_eq!(v.body, body(10));
    assert_eq!(v.kid, s.kid());
    // The private key survives PEM.
    let again = SnapshotSigner::from_pem(&s.to_pem().unwrap()).unwrap();
    assert_eq!(again.kid(), s.kid());
}

#[test]
fn a_snapshot_signed_by_another_key_is_refused() {
    let ours = SnapshotSigner::generate();
    let theirs = SnapshotSigner::generate();
    let wire = theirs.sign(&body(10)).unwrap();
    let err = verify(&wire, &TrustedKeys::single(&ours), "default", None).unwrap_err();
    assert!(matches!(err, SnapshotError::UnknownKey { .. }), "{err}");
}

#[test]
fn a_forged_envelope_claiming_our_key_id_is_refused() {
    let ours = SnapshotSigner::generate();
    let theirs = SnapshotSigner::generate();
    let wire = theirs.sign(&body(10)).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    env["kid"] = ours.kid().into();
    let forged = serde_json::to_vec(&env).unwrap();
    let err = verify(&forged, &TrustedKeys::single(&ours), "default", None).unwrap_err();
    assert!(matches!(err, SnapshotError::BadSignature { .. }), "{err}");
}

#[test]
fn an_altered_body_is_refused() {
    let s = SnapshotSigner::generate();
    let wire = s.sign(&body(10)).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    let mut b = body(10);
    b.users[0].groups.push("admins".into());
    env["body"] = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&b).unwrap())
        .into();
    let err = verify(
        &serde_json::to_vec(&env).unwrap(),
        &TrustedKeys::single(&s),
        "default",
        None,
    )
    .unwrap_err();
    assert!(matches!(err, SnapshotError::BadSignature { .. }), "{err}");
}

#[test]
fn older_or_equal_versions_and_other_tenants_are_refused() {
    let s = SnapshotSigner::generate();
    let t = TrustedKeys::single(&s);
    let wire = s.sign(&body(10)).unwrap();
    for have in [10, 11] {
        let err = verify(&wire, &t, "default", Some(have)).unwrap_err();
        assert!(
            matches!(err, SnapshotError::NotNewer { got: 10, .. }),
            "{err}"
        );
    }
    let err = verify(&wire, &t, "other", None).unwrap_err();
    assert!(matches!(err, SnapshotError::WrongTenant { .. }), "{err}");
}

#[test]
fn garbage_and_truncation_are_malformed_not_panics() {
    let s = SnapshotSigner::generate();
    let t = TrustedKeys::single(&s);
    let wire = s.sign(&body(10)).unwrap();
    for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
        let err = verify(&wire[..cut], &t, "default", None).unwrap_err();
        assert!(matches!(err, SnapshotError::Malformed(_)), "{cut}: {err}");
    }
    assert!(verify(b"\xff\xfe", &t, "default", None).is_err());
}

#[test]
fn trusted_keys_need_a_public_key_block() {
    assert!(TrustedKeys::from_pem("nothing here").is_err());
    let a = SnapshotSigner::generate();
    let b = SnapshotSigner::generate();
    let both = format!("{}{}", a.public_pem().unwrap(), b.public_pem().unwrap());
    let t = TrustedKeys::from_pem(&both).unwrap();
    assert!(verify(&a.sign(&body(1)).unwrap(), &t, "default", None).is_ok());
    assert!(verify(&b.sign(&body(1)).unwrap(), &t, "default", None).is_ok());
}

#[test]
fn digest_ignores_version_but_not_content() {
    let a = body(1);
    let mut b = body(2);
    assert_eq!(a.content_digest(), b.content_digest());
    b.apps[0].upstream = "http://127.0.0.1:10".into();
    assert_ne!(a.content_digest(), b.content_digest());
}

#[test]
fn digest_follows_device_trust() {
    let a = body(1);
    let mut b = body(2);
    b.device_ca = Some("CA".into());
    assert_ne!(a.content_digest(), b.content_digest(), "a new device CA");
    let mut c = body(2);
    c.devices.push(crate::DeviceEntry {
        id: "d1".into(),
        name: "laptop".into(),
        fingerprint: "ab".repeat(32),
        public_key: "BAAA".into(),
        company_issued: true,
        enrolled_at: 1,
        not_after: 2,
        revoked_at: None,
        user_id: None,
    });
    assert_ne!(a.content_digest(), c.content_digest(), "an enrolment");
    let mut d = c.clone();
    d.devices[0].revoked_at = Some(2);
    assert_ne!(c.content_digest(), d.content_digest(), "a revocation");
}

#[test]
fn versions_always_increase() {
    assert_eq!(next_version(None, 100), 100);
    assert_eq!(next_version(Some(50), 100), 100);
    assert_eq!(next_version(Some(100), 100), 101);
    assert_eq!(next_version(Some(200), 100), 201);
}

fn master(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

#[test]
fn disk_cache_keeps_the_snapshot_sealed_and_verifies_it_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = SnapshotSigner::generate();
    let t = TrustedKeys::single(&s);
    let v = verify(&s.sign(&body(7)).unwrap(), &t, "default", None).unwrap();
    let cache = DiskCache::open(dir.path(), master(1), 0).unwrap();
    assert!(cache.load_snapshot(&t, "default").unwrap().is_none());
    cache.save_snapshot(&v).unwrap();
    // The file reveals nothing in the clear.
    let raw = std::fs::read(dir.path().join("snapshot.sealed")).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("alice"), "{text}");
    assert!(!text.contains("wiki"), "{text}");
    // A new process with the same master key reads it back.
    drop(cache);
    let cache = DiskCache::open(dir.path(), master(1), 0).unwrap();
    let back = cache.load_snapshot(&t, "default").unwrap().unwrap();
    assert_eq!(back.body, v.body);
}

#[test]
fn disk_cache_refuses_a_wrong_master_key_corruption_and_a_foreign_signer() {
    let dir = tempfile::tempdir().unwrap();
    let s = SnapshotSigner::generate();
    let t = TrustedKeys::single(&s);
    let v = verify(&s.sign(&body(7)).unwrap(), &t, "default", None).unwrap();
    let cache = DiskCache::open(dir.path(), master(1), 0).unwrap();
    cache.save_snapshot(&v).unwrap();
    drop(cache);

    let err = DiskCache::open(dir.path(), master(2), 0).unwrap_err();
    assert!(err.to_string().contains("master key"), "{err}");

    // A snapshot sealed correctly but signed by a key this gateway does not trust.
    let other = TrustedKeys::single(&SnapshotSigner::generate());
    let cache = DiskCache::open(dir.path(), master(1), 0).unwrap();
    let err = cache.load_snapshot(&other, "default").unwrap_err();
    assert!(matches!(err, SnapshotError::UnknownKey { .. }), "{err}");

    // Truncated file.
    let path = dir.path().join("snapshot.sealed");
    let raw = std::fs::read(&path).unwrap();
    std::fs::write(&path, &raw[..raw.len() / 2]).unwrap();
    let err = cache.load_snapshot(&t, "default").unwrap_err();
    assert!(err.to_string().contains("snapshot.sealed"), "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn a_failed_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let s = SnapshotSigner::generate();
    let t = TrustedKeys::single(&s);
    let cache = DiskCache::open(dir.path(), master(1), 0).unwrap();
    let v1 = verify(&s.sign(&body(1)).unwrap(), &t, "default", None).unwrap();
    cache.save_snapshot(&v1).unwrap();
    // A write that fails after the temporary file was written (here: the rename, because the
    // target is a non-empty directory; on a full disk it is the write or the fsync).
    let blocked = dir.path().join("blocked.sealed");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), b"x").unwrap();
    let err = cache.put("blocked", b"new").unwrap_err();
    assert!(
        err.to_string().contains("previous file is unchanged"),
        "{err}"
    );
    assert!(blocked.join("keep").exists());
    // The snapshot written before is untouched and no temporary file is left behind.
    let back = cache.load_snapshot(&t, "default").unwrap().unwrap();
    assert_eq!(back.body.version, 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

fn sites(version: i64) -> SiteListBody {
    SiteListBody {
        format: 1,
        tenant: "default".into(),
        version,
        issued_at_ms: version,
        sites: vec![SiteEntry {
            name: "tokyo".into(),
            host: "gw.example".into(),
            endpoints: vec!["192.0.2.1:443".into()],
            preference: 1,
        }],
        exclusions: vec![ExclusionEntry {
            site: "tokyo".into(),
            until_ms: 99,
            reason: "maintenance".into(),
        }],
        shedding: vec![],
        dr_gateway: None,
        critical_hosts: vec![],
    }
}

#[test]
fn site_lists_verify_and_never_pass_for_snapshots_or_the_other_way_round() {
    let s = SnapshotSigner::generate();
    let t = TrustedKeys::single(&s);
    let wire = s.sign_sites(&sites(5)).unwrap();
    let v = verify_sites(&wire, &t, "default", Some(4)).unwrap();
    assert_eq!(v.body, sites(5));
    assert!(matches!(
        verify_sites(&wire, &t, "default", Some(5)).unwrap_err(),
        SnapshotError::NotNewer { .. }
    ));
    // Same key, other document type: refused by format before anything is parsed.
    let err = verify(&wire, &t, "default", None).unwrap_err();
    assert!(matches!(err, SnapshotError::Malformed(_)), "{err}");
    let snap = s.sign(&body(5)).unwrap();
    assert!(verify_sites(&snap, &t, "default", None).is_err());
    // A forged list is refused.
    let other = SnapshotSigner::generate();
    assert!(matches!(
        verify_sites(&other.sign_sites(&sites(6)).unwrap(), &t, "default", None).unwrap_err(),
        SnapshotError::UnknownKey { .. }
    ));
    let mut changed = sites(6);
    assert_eq!(changed.content_digest(), sites(5).content_digest());
    changed.exclusions.clear();
    assert_ne!(changed.content_digest(), sites(5).content_digest());
}
