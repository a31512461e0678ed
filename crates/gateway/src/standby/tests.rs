#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn session(created: i64, expiry: i64) -> Session {
    Session {
        token_hash: "h".into(),
        login_id: "l".into(),
        user_id: "u".into(),
        auth_method: "password+totp".into(),
        mfa: true,
        auth_time: created,
        created_at: created,
        last_seen: created,
        absolute_expiry: expiry,
        source_ip: "192.0.2.1".into(),
        scope: "app.example".into(),
        device_id: None,
    }
}

#[test]
fn sealed_sessions_open_with_the_same_key_only_and_expire() {
    let (signer, _) = Signer::generate().unwrap();
    let (other, _) = Signer::generate().unwrap();
    let keys = [Arc::new(signer)];
    let signer = &keys[0];
    let other = [Arc::new(other)];
    let t = seal_session(signer, session(1000, 1000 + 12 * 3600)).unwrap();
    assert!(t.starts_with(PREFIX));
    let s = open_session(&keys, &t, 2000).unwrap();
    assert_eq!(s.user_id, "u");
    assert_eq!(s.last_seen, 2000);
    // Capped at MAX_SECS after creation.
    assert_eq!(s.absolute_expiry, 1000 + MAX_SECS);
    assert!(open_session(&keys, &t, 1000 + MAX_SECS).is_none());
    // Another tenant's key, a changed payload, a truncated tag, garbage.
    assert!(open_session(&other, &t, 2000).is_none());
    let (p, tag) = t.strip_prefix(PREFIX).unwrap().split_once('.').unwrap();
    let mut json = URL_SAFE_NO_PAD.decode(p).unwrap();
    let i = json.iter().position(|b| *b == b'u').unwrap();
    json[i] = b'v';
    let forged = format!("{PREFIX}{}.{tag}", URL_SAFE_NO_PAD.encode(json));
    assert!(open_session(&keys, &forged, 2000).is_none());
    assert!(open_session(&keys, &t[..t.len() - 2], 2000).is_none());
    assert!(open_session(&keys, "ro1.x.y", 2000).is_none());
    assert!(open_session(&keys, "not-sealed", 2000).is_none());
}

#[test]
fn a_handoff_code_never_passes_for_a_session_or_the_other_way() {
    let (signer, _) = Signer::generate().unwrap();
    let keys = [Arc::new(signer)];
    let signer = &keys[0];
    let h = SealedHandoff {
        portal: session(1000, 5000),
        app_host: "app.example".into(),
        expires_at: 1030,
        nonce: "n1".into(),
    };
    let code = seal_handoff(signer, &h).unwrap();
    assert_eq!(open_handoff(&keys, &code, 1010), Some(h));
    assert!(open_handoff(&keys, &code, 1030).is_none());
    assert!(open_session(&keys, &code, 1010).is_none());
    let t = seal_session(signer, session(1000, 5000)).unwrap();
    assert!(open_handoff(&keys, &t, 1010).is_none());
}

#[test]
fn guards_make_codes_and_totp_steps_single_use() {
    let g = Guards::default();
    assert!(g.use_code("n1", 100, 50));
    assert!(!g.use_code("n1", 100, 60));
    assert!(g.use_code("n2", 100, 60));
    // Expired entries are dropped (the code itself no longer opens by then).
    assert!(g.use_code("n1", 300, 200));

    assert!(!g.consume_totp("u", Some(10), 10));
    assert!(g.consume_totp("u", Some(10), 11));
    assert!(!g.consume_totp("u", Some(10), 11));
    assert!(g.consume_totp("u", Some(10), 12));
    assert!(g.consume_totp("w", None, 1));
}
