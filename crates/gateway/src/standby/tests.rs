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

fn pending(state: &str, expires_at: i64) -> OidcPending {
    OidcPending {
        state: state.into(),
        nonce: "nonce-1".into(),
        pkce_verifier: "verifier-1".into(),
        return_to: "https://app.example/deals".into(),
        expires_at,
    }
}

#[test]
fn a_sealed_pending_oidc_login_opens_only_for_its_state_until_it_expires() {
    let (signer, _) = Signer::generate().unwrap();
    let keys = [Arc::new(signer)];
    let t = seal_oidc(&keys[0], &pending("st-1", 1600)).unwrap();
    assert!(t.starts_with(PREFIX));
    assert_eq!(
        open_oidc(&keys, &t, "st-1", 1000),
        Some(pending("st-1", 1600))
    );
    // The callback's state must be the sealed one.
    assert!(open_oidc(&keys, &t, "st-2", 1000).is_none());
    assert!(open_oidc(&keys, &t, "st-", 1000).is_none());
    assert!(open_oidc(&keys, &t, "", 1000).is_none());
    // Expired.
    assert!(open_oidc(&keys, &t, "st-1", 1600).is_none());
    assert!(open_oidc(&keys, &t, "st-1", 1599).is_some());
}

#[test]
fn a_tampered_or_foreign_sealed_pending_oidc_login_does_not_open() {
    let (signer, _) = Signer::generate().unwrap();
    let (other, _) = Signer::generate().unwrap();
    let keys = [Arc::new(signer)];
    let t = seal_oidc(&keys[0], &pending("st-1", 1600)).unwrap();
    // Another tenant's key.
    assert!(open_oidc(&[Arc::new(other)], &t, "st-1", 1000).is_none());
    // A later expiry or another return target, with the old tag.
    let (p, tag) = t.strip_prefix(PREFIX).unwrap().split_once('.').unwrap();
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    for (from, to) in [
        ("1600", "9600"),
        ("app.example/deals", "evil.example/deals"),
    ] {
        assert!(json.contains(from));
        let changed = json.replace(from, to);
        let forged = format!("{PREFIX}{}.{tag}", URL_SAFE_NO_PAD.encode(changed));
        assert!(open_oidc(&keys, &forged, "st-1", 1000).is_none(), "{to}");
    }
    assert!(open_oidc(&keys, &t[..t.len() - 1], "st-1", 1000).is_none());
    assert!(open_oidc(&keys, "ro1.x.y", "st-1", 1000).is_none());
    assert!(open_oidc(&keys, "st-1", "st-1", 1000).is_none());
}

#[test]
fn a_sealed_pending_oidc_login_never_passes_for_a_session_or_handoff_or_the_other_way() {
    let (signer, _) = Signer::generate().unwrap();
    let keys = [Arc::new(signer)];
    let t = seal_oidc(&keys[0], &pending("st-1", 5000)).unwrap();
    assert!(open_session(&keys, &t, 1000).is_none());
    assert!(open_handoff(&keys, &t, 1000).is_none());
    let s = seal_session(&keys[0], session(1000, 5000)).unwrap();
    let h = seal_handoff(
        &keys[0],
        &SealedHandoff {
            portal: session(1000, 5000),
            app_host: "app.example".into(),
            expires_at: 5000,
            nonce: "st-1".into(),
        },
    )
    .unwrap();
    for other in [s, h] {
        assert!(open_oidc(&keys, &other, "st-1", 1000).is_none());
        assert!(open_oidc(&keys, &other, "", 1000).is_none());
    }
    // The kind alone decides, even when the body has the right shape.
    let body = SealedOidc {
        state: "st-1".into(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        return_to: String::new(),
        expires_at: 5000,
    };
    for kind in ["session", "handoff", "oidc2", ""] {
        let t = seal(&keys[0], kind, &body).unwrap();
        assert!(open_oidc(&keys, &t, "st-1", 1000).is_none(), "{kind}");
    }
    let t = seal(&keys[0], "oidc", &body).unwrap();
    assert!(open_oidc(&keys, &t, "st-1", 1000).is_some());
}

#[test]
fn a_pending_oidc_login_sealed_before_a_key_rotation_still_opens() {
    let (old, _) = Signer::generate().unwrap();
    let (new, _) = Signer::generate().unwrap();
    let old = Arc::new(old);
    let t = seal_oidc(&old, &pending("st-1", 1600)).unwrap();
    let keys = [Arc::new(new), old];
    assert!(open_oidc(&keys, &t, "st-1", 1000).is_some());
}

#[test]
fn a_sealed_pending_oidc_login_is_used_once_per_node_and_apart_from_handoff_codes() {
    let g = Guards::default();
    assert!(g.use_oidc_state("st-1", 1600, 1000));
    assert!(!g.use_oidc_state("st-1", 1600, 1001));
    assert!(g.use_oidc_state("st-2", 1600, 1001));
    // A handoff nonce equal to a state is another thing.
    assert!(g.use_code("st-1", 1600, 1001));
    assert!(!g.use_code("st-1", 1600, 1002));
    assert!(!g.use_oidc_state("st-1", 1600, 1002));
}

#[test]
fn the_pending_oidc_cookie_is_host_only_secure_and_sent_only_to_the_callback() {
    let c = oidc_cookie("ro1.abc.def", 600);
    assert_eq!(
        c,
        "__Secure-tsuzuku_oidc_ro=ro1.abc.def; Path=/.tsuzuku/oidc/callback; Secure; HttpOnly; SameSite=Lax; Max-Age=600"
    );
    assert!(!c.contains("Domain"));
    assert!(oidc_cookie("", 0).ends_with("Max-Age=0"));
}
