#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn device(id: &str, revoked_at: Option<i64>) -> Arc<Device> {
    Arc::new(Device {
        id: id.into(),
        name: format!("{id}-name"),
        fingerprint: format!("fp-{id}"),
        public_key: String::new(),
        company_issued: true,
        enrolled_at: 0,
        not_after: i64::MAX,
        revoked_at,
        user_id: None,
    })
}

fn posture(at: i64, av: Option<&str>) -> Posture {
    Posture {
        device_id: "d1".into(),
        collected_at: at,
        os: "linux".into(),
        os_version: "12".into(),
        os_name: "Debian".into(),
        kernel: "6.1".into(),
        disk_encrypted: true,
        antivirus: Some("clamd".into()),
        antivirus_running: av.is_some(),
        antivirus_version: av.map(str::to_owned),
    }
}

#[test]
fn connections_resolve_to_enrolled_revoked_or_unknown_devices() {
    let mut devices = HashMap::new();
    devices.insert("fp-d1".to_owned(), device("d1", None));
    devices.insert("fp-d2".to_owned(), device("d2", Some(100)));
    assert_eq!(resolve(None, &devices, 200), ConnDevice::None);
    assert!(
        matches!(resolve(Some("fp-d1"), &devices, 200), ConnDevice::Enrolled(d) if d.id == "d1")
    );
    assert!(matches!(
        resolve(Some("fp-d2"), &devices, 200),
        ConnDevice::Revoked(_)
    ));
    // Revocation dated in the future is not in force yet.
    assert!(matches!(
        resolve(Some("fp-d2"), &devices, 50),
        ConnDevice::Enrolled(_)
    ));
    assert_eq!(
        resolve(Some("fp-x"), &devices, 200),
        ConnDevice::Unknown("fp-x".into())
    );
}

#[test]
fn sessions_bound_to_a_device_work_only_from_it() {
    let d1 = ConnDevice::Enrolled(device("d1", None));
    let d2 = ConnDevice::Enrolled(device("d2", None));
    assert!(session_device_matches(None, &ConnDevice::None));
    assert!(session_device_matches(None, &d1));
    assert!(session_device_matches(Some("d1"), &d1));
    assert!(!session_device_matches(Some("d1"), &d2));
    assert!(!session_device_matches(Some("d1"), &ConnDevice::None));
    assert!(!session_device_matches(
        Some("d1"),
        &ConnDevice::Revoked(device("d1", Some(1)))
    ));
}

#[test]
fn facts_carry_the_posture_until_it_is_too_old() {
    let d = device("d1", None);
    let f = facts(&d, &posture(1000, Some("1.0.7")), 1010, 300).unwrap();
    assert!(f.enrolled && f.company_issued && f.disk_encrypted && f.antivirus_running);
    assert_eq!(f.antivirus_version, version_code("1.0.7").unwrap());
    assert_eq!(f.reported_at, 1000);
    assert_eq!(facts(&d, &posture(1000, Some("1.0.7")), 1301, 300), None);
    // No antivirus version: 0, which no minimum accepts.
    assert_eq!(
        facts(&d, &posture(1000, None), 1010, 300)
            .unwrap()
            .antivirus_version,
        0
    );
}

#[test]
fn postures_keep_the_newest_collection() {
    let ps = Postures::default();
    let t = Instant::now();
    ps.put(posture(10, Some("1.0")), t);
    ps.put(posture(5, Some("0.9")), t);
    let (p, fresh) = ps.get("d1", t).unwrap();
    assert_eq!(p.antivirus_version.as_deref(), Some("1.0"));
    assert!(fresh);
    let (_, fresh) = ps.get("d1", t + POSTURE_RECHECK).unwrap();
    assert!(!fresh);
    assert!(ps.get("d2", t).is_none());
}
