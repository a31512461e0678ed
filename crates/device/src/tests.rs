#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use crate::collect::{self, CollectorConfig};
use crate::*;

fn posture(id: &str, at: i64) -> Posture {
    Posture {
        device_id: id.into(),
        collected_at: at,
        os: "linux".into(),
        os_version: "12".into(),
        os_name: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0".into(),
        disk_encrypted: true,
        antivirus: Some("clamd".into()),
        antivirus_running: true,
        antivirus_version: Some("1.0.7".into()),
    }
}

#[test]
fn signed_posture_verifies_and_every_tamper_is_refused() {
    let key = DeviceKey::generate().unwrap();
    let other = DeviceKey::generate().unwrap();
    let now = 1_800_000_000;
    let s = SignedPosture::sign(&posture("d1", now - 10), &key).unwrap();
    let p = verify_posture(&s, "d1", key.public_raw(), now, 300).unwrap();
    assert_eq!(p.antivirus_version.as_deref(), Some("1.0.7"));
    // Another device's key.
    assert!(matches!(
        verify_posture(&s, "d1", other.public_raw(), now, 300),
        Err(DeviceError::BadSignature)
    ));
    // Signed by the right key but naming another device.
    assert!(matches!(
        verify_posture(&s, "d2", key.public_raw(), now, 300),
        Err(DeviceError::WrongDevice { .. })
    ));
    // Too old, and from the future.
    assert!(matches!(
        verify_posture(&s, "d1", key.public_raw(), now + 1000, 300),
        Err(DeviceError::TooOld { .. })
    ));
    let future = SignedPosture::sign(&posture("d1", now + 3600), &key).unwrap();
    assert!(matches!(
        verify_posture(&future, "d1", key.public_raw(), now, 300),
        Err(DeviceError::FromTheFuture { .. })
    ));
    // A changed report under the old signature.
    let mut forged = s.clone();
    let mut p2 = posture("d1", now - 10);
    p2.antivirus_version = Some("9.9.9".into());
    forged.report = SignedPosture::sign(&p2, &other).unwrap().report;
    assert!(matches!(
        verify_posture(&forged, "d1", key.public_raw(), now, 300),
        Err(DeviceError::BadSignature)
    ));
    // Garbage.
    assert!(SignedPosture::from_json(b"{not json").is_err());
    assert!(SignedPosture::from_json(&vec![b' '; MAX_REPORT_BYTES_PLUS]).is_err());
    let garbage = SignedPosture {
        report: "%%%".into(),
        signature: "AAAA".into(),
    };
    assert!(matches!(
        verify_posture(&garbage, "d1", key.public_raw(), now, 300),
        Err(DeviceError::BadEncoding { .. })
    ));
    assert!(matches!(
        verify_posture(&s, "d1", b"short", now, 300),
        Err(DeviceError::BadPublicKey)
    ));
}

const MAX_REPORT_BYTES_PLUS: usize = posture::MAX_REPORT_BYTES + 1;

#[test]
fn device_key_round_trips_through_pem() {
    let key = DeviceKey::generate().unwrap();
    let again = DeviceKey::from_pem(key.pem()).unwrap();
    assert_eq!(key.public_raw(), again.public_raw());
    let sig = again.sign(b"m").unwrap();
    verify_signature(key.public_raw(), b"m", &sig).unwrap();
    assert!(verify_signature(key.public_raw(), b"n", &sig).is_err());
    assert!(
        DeviceKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
    assert!(!format!("{key:?}").contains("PRIVATE"));
}

#[test]
fn enrolment_request_needs_proof_of_the_key() {
    let key = DeviceKey::generate().unwrap();
    let req = EnrollRequest::new("tok", "laptop-1", &key).unwrap();
    assert_eq!(req.check().unwrap(), key.public_raw());
    // The proof binds the token: replaying it with another token fails.
    let mut other_token = req.clone();
    other_token.token = "tok2".into();
    assert!(matches!(
        other_token.check(),
        Err(DeviceError::BadSignature)
    ));
    // A public key the sender does not hold.
    let mut swapped = req.clone();
    swapped.public_key = EnrollRequest::new("tok", "x", &DeviceKey::generate().unwrap())
        .unwrap()
        .public_key;
    assert!(swapped.check().is_err());
    let mut bad_name = req.clone();
    bad_name.name = "a\u{7}b".into();
    assert!(matches!(
        bad_name.check(),
        Err(DeviceError::BadEnrollment(_))
    ));
    let mut empty = req;
    empty.token = String::new();
    assert!(empty.check().is_err());
}

/// The issued certificate chains to the CA in a real rustls mutual-TLS handshake, and the
/// fingerprint the server sees is the one computed from the PEM.
#[test]
fn issued_certificate_authenticates_a_tls_client() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let now = 1_800_000_000_i64.min(time::OffsetDateTime::now_utc().unix_timestamp());
    let ca = DeviceCa::generate("default", now, 5).unwrap();
    let ca2 = DeviceCa::from_pem(&ca.key_pem(), ca.cert_pem()).unwrap();
    let key = DeviceKey::generate().unwrap();
    let cert_pem = ca2
        .issue("default", "dev-1", key.public_raw(), now, 365)
        .unwrap();
    let fp = fingerprint_pem(&cert_pem).unwrap();
    assert_eq!(fp.len(), 64);
    assert!(ca.issue("default", "x", b"nope", now, 1).is_err());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["gw.test".to_owned()])
        .unwrap()
        .self_signed(&server_key)
        .unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let mut server_roots = rustls::RootCertStore::empty();
    server_roots.add(server_cert.der().clone()).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(server_roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let mut client =
        rustls::ClientConnection::new(Arc::new(client_cfg), "gw.test".try_into().unwrap()).unwrap();
    let mut server = rustls::ServerConnection::new(Arc::new(server_cfg)).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    assert!(!server.is_handshaking() && !client.is_handshaking());
    let presented = server.peer_certificates().unwrap();
    assert_eq!(fingerprint(presented[0].as_ref()), fp);
}

#[test]
fn os_release_and_versions_parse() {
    let text = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nPRETTY_NAME='Debian 12'\nID=debian\n";
    assert_eq!(
        collect::os_release_field(text, "VERSION_ID").as_deref(),
        Some("12")
    );
    assert_eq!(
        collect::os_release_field(text, "PRETTY_NAME").as_deref(),
        Some("Debian 12")
    );
    assert_eq!(
        collect::os_release_field(text, "ID").as_deref(),
        Some("debian")
    );
    assert_eq!(collect::os_release_field(text, "MISSING"), None);
    assert_eq!(
        collect::parse_version("ClamAV 1.0.7/27102/Mon Nov 18").as_deref(),
        Some("1.0.7")
    );
    assert_eq!(
        collect::parse_version("v4.18.24030.9\n").as_deref(),
        Some("4.18.24030.9")
    );
    assert_eq!(collect::parse_version("no version here 42"), None);
}

#[test]
fn root_device_comes_from_the_last_root_mount() {
    let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
              30 22 0:5 / /proc rw - proc proc rw\n\
              40 22 253:1 / / rw - ext4 /dev/mapper/root rw\n";
    assert_eq!(collect::root_device(mi).as_deref(), Some("253:1"));
    assert_eq!(collect::root_device(""), None);
}

/// LVM on LUKS: the root mapping's slave is the dm-crypt mapping.
#[test]
fn encryption_is_found_through_slaves() {
    let sys = tempfile::tempdir().unwrap();
    let mk = |dev: &str, uuid: &str, slaves: &[(&str, &str)]| {
        let base = sys.path().join("dev/block").join(dev);
        std::fs::create_dir_all(base.join("dm")).unwrap();
        std::fs::write(base.join("dm/uuid"), uuid).unwrap();
        for (name, d) in slaves {
            let s = base.join("slaves").join(name);
            std::fs::create_dir_all(&s).unwrap();
            std::fs::write(s.join("dev"), format!("{d}\n")).unwrap();
        }
    };
    mk("253:0", "CRYPT-LUKS2-abc-root_crypt\n", &[]);
    mk("253:1", "LVM-xyz\n", &[("dm-0", "253:0")]);
    mk("253:2", "LVM-plain\n", &[]);
    assert!(collect::is_encrypted(sys.path(), "253:1", 0));
    assert!(!collect::is_encrypted(sys.path(), "253:2", 0));
    assert!(!collect::is_encrypted(sys.path(), "8:1", 0));
}

/// A real process found by name, and a real version command run.
#[test]
fn antivirus_process_and_version_are_read_for_real() {
    let dir = tempfile::tempdir().unwrap();
    let name = "tzk-av-test";
    let bin = dir.path().join(name);
    std::fs::copy("/bin/sleep", &bin).unwrap();
    let mut child = std::process::Command::new(&bin).arg("30").spawn().unwrap();
    let cfg = CollectorConfig {
        antivirus_process: Some(name.into()),
        antivirus_version_command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo 'TzkAV 3.14.15 (engine 2)'".into(),
        ]),
        ..CollectorConfig::default()
    };
    let p = collect::collect(&cfg, "d1", 5);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(p.antivirus_running);
    assert_eq!(p.antivirus_version.as_deref(), Some("3.14.15"));
    assert_eq!(p.os, "linux");
    assert!(!p.kernel.is_empty());
    let after = collect::collect(&cfg, "d1", 6);
    assert!(!after.antivirus_running);
    assert_eq!(after.antivirus_version, None);
}
