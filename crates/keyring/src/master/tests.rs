#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;

use super::*;

const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn bytes_0_to_31() -> [u8; KEY_LEN] {
    std::array::from_fn(|i| i as u8)
}

fn write_key_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn load_or_create_creates_0600_hex_file_and_reloads_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let created = MasterKey::load_or_create(&path).unwrap();
    assert!(created.was_created());
    assert_eq!(mode_of(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65, "64 hex digits and a newline");
    assert!(text.ends_with('\n'));
    assert!(text.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));

    let again = MasterKey::load_or_create(&path).unwrap();
    assert!(!again.was_created());
    assert_eq!(again.id(), created.id());
    assert_eq!(again.bytes(), created.bytes());
    assert_eq!(MasterKey::load(&path).unwrap().id(), created.id());
    // Nothing but the key file is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("master.key")]);
}

#[test]
fn concurrent_load_or_create_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| MasterKey::load_or_create(&path).unwrap().id().to_owned()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(MasterKey::load(&path).unwrap().id(), ids[0]);
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    write_key_file(&path, HEX, 0o600);
    let err = MasterKey::create(&path).unwrap_err();
    assert!(matches!(err, KeyringError::KeyFileExists { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), HEX);
}

#[test]
fn create_in_missing_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("master.key");
    let err = MasterKey::load_or_create(&path).unwrap_err();
    assert!(matches!(err, KeyringError::KeyFileCreate { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn load_of_missing_file_does_not_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let err = MasterKey::load(&path).unwrap_err();
    assert!(matches!(err, KeyringError::KeyFileMissing { .. }), "{err}");
    assert!(err.to_string().contains("restore the key file"), "{err}");
    assert!(!path.exists());
}

#[test]
fn loose_permissions_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    for mode in [0o644, 0o604, 0o602, 0o601, 0o620, 0o666] {
        write_key_file(&path, HEX, mode);
        let err = MasterKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyringError::KeyFilePermissions { mode: m, .. } if m == mode),
            "mode {mode:o}: {err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        // load_or_create must not replace a file it refuses.
        let err = MasterKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, KeyringError::KeyFilePermissions { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), HEX);
    }
    for mode in [0o600, 0o400, 0o640, 0o440] {
        write_key_file(&path, HEX, mode);
        assert!(MasterKey::load(&path).is_ok(), "mode {mode:o}");
    }
}

#[test]
fn a_directory_is_not_a_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = MasterKey::load(dir.path()).unwrap_err();
    assert!(
        matches!(err, KeyringError::KeyFileNotRegular { .. }),
        "{err}"
    );
}

#[test]
fn hex_and_base64_give_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let expected = MasterKey::from_bytes(bytes_0_to_31());
    for text in [
        HEX.to_string(),
        format!("  {}\n", HEX.to_uppercase()),
        b64.to_string(),
        format!("{}\r\n", b64.trim_end_matches('=')),
    ] {
        write_key_file(&path, &text, 0o600);
        let k = MasterKey::load(&path).unwrap();
        assert_eq!(k.id(), expected.id(), "{text:?}");
        assert_eq!(k.bytes(), expected.bytes());
    }
}

#[test]
fn wrong_length_or_format_is_refused_without_echoing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let long = format!("{HEX}00");
    let cases = [
        (&HEX[..62], "62 characters"),
        (&long[..], "66 characters"),
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", "31 bytes"),
        ("", "empty"),
        ("\n\n", "empty"),
        ("not a key at all, certainly not", "neither"),
    ];
    for (text, reason) in cases {
        write_key_file(&path, text, 0o600);
        let err = MasterKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyringError::KeyFormat { .. }),
            "{text:?}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(reason), "{text:?}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        if text.len() > 8 {
            assert!(
                !msg.contains(&text[..8]),
                "the message echoes the key: {msg}"
            );
        }
    }
    std::fs::write(&path, vec![b'a'; 4096]).unwrap();
    let err = MasterKey::load(&path).unwrap_err();
    assert!(err.to_string().contains("larger than 1024 bytes"), "{err}");
}

#[test]
fn env_value_is_parsed_and_a_missing_variable_is_named() {
    let k = MasterKey::from_env_value("TZ_KEY", Some(format!("{HEX}\n"))).unwrap();
    assert_eq!(k.id(), MasterKey::from_bytes(bytes_0_to_31()).id());
    assert_eq!(
        k.source(),
        &KeySource::Env {
            var: "TZ_KEY".into()
        }
    );

    let err = MasterKey::from_env("TSUZUKU_KEYRING_TEST_SURELY_UNSET").unwrap_err();
    assert!(matches!(err, KeyringError::EnvMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("TSUZUKU_KEYRING_TEST_SURELY_UNSET")
    );

    // A variable that is set (cargo sets this one for tests) but is no key.
    let err = MasterKey::from_env("CARGO_PKG_NAME").unwrap_err();
    assert!(matches!(err, KeyringError::KeyFormat { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("environment variable CARGO_PKG_NAME")
    );
}

#[test]
fn command_stdout_is_the_key() {
    let argv: Vec<String> = ["sh", "-c", &format!("echo {HEX}")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let k = MasterKey::from_command(&argv).unwrap();
    assert_eq!(k.id(), MasterKey::from_bytes(bytes_0_to_31()).id());
    assert!(matches!(k.source(), KeySource::Command { .. }));
}

#[test]
fn failing_commands_report_status_and_stderr() {
    let argv: Vec<String> = ["sh", "-c", "echo vault is sealed >&2; exit 3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let err = MasterKey::from_command(&argv).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, KeyringError::KeyCommand { .. }), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("vault is sealed"), "{msg}");

    let err = MasterKey::from_command(&["/nonexistent/kms-helper".to_string()]).unwrap_err();
    assert!(err.to_string().contains("cannot start it"), "{err}");

    let err = MasterKey::from_command(&[]).unwrap_err();
    assert!(err.to_string().contains("no command"), "{err}");

    let argv: Vec<String> = ["sh", "-c", "echo short"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let err = MasterKey::from_command(&argv).unwrap_err();
    assert!(matches!(err, KeyringError::KeyFormat { .. }), "{err}");
}

#[test]
fn ids_are_16_hex_digits_and_differ_between_keys() {
    let a = MasterKey::generate().unwrap();
    let b = MasterKey::generate().unwrap();
    for k in [&a, &b] {
        assert_eq!(k.id().len(), 16);
        assert!(k.id().bytes().all(|c| c.is_ascii_hexdigit()));
    }
    assert_ne!(a.id(), b.id());
    assert_ne!(a.bytes(), b.bytes());
    // The id is not a prefix of the key itself.
    let k = MasterKey::from_bytes(bytes_0_to_31());
    assert!(!HEX.starts_with(k.id()));
    assert_eq!(k.id(), MasterKey::from_bytes(bytes_0_to_31()).id());
}

#[test]
fn debug_never_shows_key_bytes() {
    let k = MasterKey::from_bytes(bytes_0_to_31());
    let dbg = format!("{k:?}");
    assert!(dbg.contains(k.id()), "{dbg}");
    assert!(!dbg.contains(&HEX[2..20]), "{dbg}");
    assert!(!dbg.contains("[0, 1, 2"), "{dbg}");
    assert!(!dbg.contains("bytes"), "{dbg}");
}
