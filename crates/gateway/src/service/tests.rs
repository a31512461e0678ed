#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn session(last_seen: i64, absolute_expiry: i64) -> Session {
    Session {
        token_hash: "h".into(),
        login_id: "l".into(),
        user_id: "u".into(),
        auth_method: "password+totp".into(),
        mfa: true,
        auth_time: 1000,
        created_at: 1000,
        last_seen,
        absolute_expiry,
        source_ip: "127.0.0.1".into(),
        scope: "app.example".into(),
        device_id: None,
    }
}

#[test]
fn a_fresh_session_is_usable_on_its_own_host_only() {
    let s = session(1000, 1000 + 43200);
    assert_eq!(session_usable(&s, "app.example", 1001, 1800), Ok(()));
    assert_eq!(
        session_usable(&s, "other.example", 1001, 1800),
        Err(SessionUnusable::OtherHost)
    );
}

#[test]
fn idle_timeout_counts_from_last_activity() {
    let s = session(5000, 1000 + 43200);
    assert_eq!(session_usable(&s, "app.example", 5000 + 1799, 1800), Ok(()));
    assert_eq!(
        session_usable(&s, "app.example", 5000 + 1800, 1800),
        Err(SessionUnusable::Idle)
    );
}

#[test]
fn absolute_timeout_wins_over_activity() {
    let s = session(44_000, 1000 + 43200);
    assert_eq!(
        session_usable(&s, "app.example", 44_200, 1800),
        Err(SessionUnusable::Expired)
    );
}

#[test]
fn a_clock_behind_the_session_does_not_extend_it() {
    // now < last_seen (clock skew between nodes): still usable, never negative idle.
    let s = session(5000, 1000 + 43200);
    assert_eq!(session_usable(&s, "app.example", 4000, 1800), Ok(()));
}
