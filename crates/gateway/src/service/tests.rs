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

/// The decision detail, with a real decision's summary (device posture, a denial with its
/// errors, text that needs escapes), is written straight into the audit chain's canonical
/// text: its fields and the summary's are declared in key order.
#[test]
fn a_decision_detail_is_written_directly_as_canonical_text() {
    use tsuzuku_policy::{AppFacts, DeviceFacts, PolicyDoc, PolicyEngine, RequestFacts, UserFacts};
    let engine = PolicyEngine::compile(
        &[PolicyDoc {
            id: "staff",
            text: r#"permit (principal in Tsuzuku::Group::"staff", action, resource)
                     when { context.path like "/ok/*" };"#,
        }],
        jiff::tz::TimeZone::get("Asia/Tokyo").unwrap(),
    )
    .unwrap();
    let user = UserFacts {
        id: "u-1".into(),
        username: "ali\"ce\u{8}".into(),
        groups: vec!["staff".into(), "ops\n".into()],
        auth_method: "password+totp".into(),
        mfa: true,
        auth_time: 1_795_395_000,
    };
    let device = DeviceFacts {
        enrolled: true,
        company_issued: false,
        os: "linux".into(),
        os_version: "6.1".into(),
        disk_encrypted: true,
        antivirus_running: false,
        antivirus_version: 0,
        reported_at: 1_795_395_500,
    };
    let app = AppFacts {
        name: "crm".into(),
        data_class: "confidential".into(),
        critical: true,
        isolated: false,
    };
    for (device, path) in [(Some(&device), "/ok/\\x"), (None, "/no")] {
        let req = RequestFacts {
            method: "post".into(),
            path: path.into(),
            source_ip: "::ffff:10.0.0.7".parse().unwrap(),
            now_unix: 1_795_395_600,
        };
        let decision = engine.decide(&user, device, &app, &req);
        assert_eq!(decision.allowed, device.is_some());
        let detail = DecisionDetail {
            allowed: decision.allowed,
            app: &app.name,
            auth_method: &user.auth_method,
            context: decision.summary(&user, device, &app, &req),
            device: device.map(|_| "dev-1"),
            errors: &decision.errors,
            groups: &user.groups,
            host: "crm.example:8443",
            method: &req.method,
            mfa: user.mfa,
            node: "node-1",
            path: &req.path,
            peer_ip: "10.0.0.7".parse().unwrap(),
            policies: &decision.determining,
            policy_version: 3,
            reason: &decision.reason,
            request_id: "abc",
            source_ip: req.source_ip,
            user: &user.username,
            user_id: &user.id,
        };
        assert!(tsuzuku_audit::Detail::writes_directly(&detail));
        let written = tsuzuku_audit::Detail::from_serialize(&detail).unwrap();
        let value = serde_json::to_value(&detail).unwrap();
        assert_eq!(written, tsuzuku_audit::Detail::from_value(&value));
        assert_eq!(value["context"]["context"]["source_ip"], "10.0.0.7");
        assert_eq!(value["context"]["context"]["method"], "POST");
        assert_eq!(value["source_ip"], "::ffff:10.0.0.7");
    }
}

/// The app is chosen by the one name a request gives; two different names, or two `Host`
/// headers, are refused rather than one picked (the upstream gets that name as its `Host`).
#[test]
fn a_request_naming_two_hosts_is_refused() {
    let req = |uri: &str, hosts: &[&str]| {
        let mut b = Request::get(uri);
        for h in hosts {
            b = b.header(http::header::HOST, *h);
        }
        b.body(()).unwrap()
    };
    assert_eq!(
        request_host(&req("/x", &["App.Example"])).unwrap(),
        "app.example"
    );
    assert_eq!(
        request_host(&req("https://app.example/x", &[])).unwrap(),
        "app.example"
    );
    assert_eq!(
        request_host(&req("https://app.example/x", &["APP.example"])).unwrap(),
        "app.example"
    );
    assert!(request_host(&req("https://pub.example/x", &["secret.example"])).is_err());
    assert!(request_host(&req("/x", &["pub.example", "secret.example"])).is_err());
    assert!(request_host(&req("/x", &["pub.example", "pub.example"])).is_err());
}
