//! The storage test suite: backend-independent checks of everything a [`StoreRoot`] promises,
//! written against the public API so the same checks run on every backend (SQLite in this
//! crate's unit tests; a real PostgreSQL in `tests/postgres.rs`, through the `testsuite`
//! feature).
//!
//! Every check works in tenants with fresh random names, so the suite can run repeatedly and
//! concurrently against one shared database without cleaning up. Checks panic on failure.
//! [`run_all`] runs them all; the individual functions let a test harness report them one by
//! one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use tsuzuku_audit::{AuditEvent, AuditWriter, ChainProblem, EventKind, chain_hash, verify};

use crate::{
    ConnectorReport, DEVICE_CA_CERT_PURPOSE, Device, DrAuditUpload, DrTransition, EnrolGrant,
    GatewaySite, NewApp, NewUser, NodeReport, PolicyDoc, Session, SiteExclusion, Store, StoreError,
    StoreRoot, StoredPosture, UploadedEvent,
};

/// A fixed "now" (Unix seconds) so expiry arithmetic is deterministic.
pub const NOW: i64 = 1_760_000_000;

/// A tenant nobody else uses.
pub fn fresh_tenant(root: &StoreRoot, label: &str) -> Store {
    root.tenant(&format!("{label}-{}", uuid::Uuid::new_v4()))
}

/// Runs every check against the database at `url` (opened twice, for the multi-writer checks).
pub async fn run_all(url: &str) {
    let root = StoreRoot::open(url).await.expect("open store");
    let second = StoreRoot::open(url)
        .await
        .expect("open store a second time");
    ping(&root).await;
    users_crud(&root).await;
    user_conflicts(&root).await;
    login_failures_and_lockout(&root).await;
    totp_step_replay_guard(&root).await;
    oidc_users(&root).await;
    oidc_user_lookup(&root).await;
    apps_crud_and_conflicts(&root).await;
    sessions_lifecycle(&root).await;
    handoff_single_use_and_expiry(&root).await;
    oidc_pending_single_use(&root).await;
    policy_versions_and_optimistic_concurrency(&root).await;
    signing_keys(&root).await;
    gateway_nodes(&root).await;
    dr_transitions(&root).await;
    dr_audit_uploads_are_idempotent(&root).await;
    gateway_sites_and_exclusions(&root).await;
    devices_tokens_and_posture(&root).await;
    mirror_users_and_apps(&root).await;
    mirror_device_trust(&root).await;
    tenant_isolation(&root).await;
    audit_append_and_read(&root).await;
    audit_tampering_is_detected(&root).await;
    audit_verify_reads_every_row_and_the_head(&root).await;
    audit_verify_reports_unreadable_rows_and_goes_on(&root).await;
    audit_verify_flags_details_not_stored_canonically(&root).await;
    audit_verify_is_not_fooled_by_concurrent_appends(&root).await;
    audit_concurrent_writers_keep_one_chain(&root, &second).await;
    audit_multi_tenant_batches(&root).await;
    audit_writer_loses_nothing(&root).await;
    audit_survives_reopen(url).await;
}

fn new_user(username: &str) -> NewUser {
    NewUser {
        username: username.into(),
        display_name: format!("{username} Example"),
        email: Some(format!("{username}@example.org")),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        totp_secret: None,
        groups: vec!["staff".into(), "sales".into()],
    }
}

fn session(token: &str, login: &str, user_id: &str, scope: &str) -> Session {
    Session {
        token_hash: token.into(),
        login_id: login.into(),
        user_id: user_id.into(),
        auth_method: "password+totp".into(),
        mfa: true,
        auth_time: NOW - 10,
        created_at: NOW - 10,
        last_seen: NOW - 10,
        absolute_expiry: NOW + 3600,
        source_ip: "192.0.2.7".into(),
        scope: scope.into(),
        device_id: None,
    }
}

fn event(store: &Store, i: usize) -> AuditEvent {
    AuditEvent {
        time_ms: NOW * 1000 + i as i64,
        kind: EventKind::ALL[i % EventKind::ALL.len()],
        actor: (!i.is_multiple_of(3)).then(|| format!("user-{}", i % 11)),
        tenant: store.tenant_id().to_owned(),
        detail: json!({
            "i": i,
            "ratio": (i as f64) / 3.0,
            "path": format!("/app/{i}?q=\"x\"&é"),
            "matched": ["policy0", "policy1"],
            "ctx": {"mfa": i.is_multiple_of(2), "ip": "10.0.0.1", "n": null},
        })
        .into(),
    }
}

fn assert_conflict_names<T: std::fmt::Debug>(r: Result<T, StoreError>, needle: &str) {
    match r {
        Err(StoreError::Conflict(msg)) => {
            assert!(
                msg.contains(needle),
                "conflict message {msg:?} should name {needle:?}"
            )
        }
        other => panic!("expected a conflict naming {needle:?}, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::NotFound(_))),
        "expected NotFound, got {r:?}"
    );
}

pub async fn ping(root: &StoreRoot) {
    root.ping().await.expect("ping");
}

pub async fn users_crud(root: &StoreRoot) {
    let s = fresh_tenant(root, "users");
    let alice = s.create_user(new_user("alice"), NOW).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.groups, vec!["staff".to_owned(), "sales".to_owned()]);
    assert_eq!(alice.created_at, NOW);
    assert!(!alice.disabled);
    assert_eq!(alice.failed_logins, 0);
    assert_eq!(alice.oidc_subject, None);
    assert_eq!(s.get_user(&alice.id).await.unwrap().as_ref(), Some(&alice));
    assert_eq!(
        s.get_user_by_name("alice").await.unwrap().as_ref(),
        Some(&alice)
    );
    assert_eq!(s.get_user("no-such-id").await.unwrap(), None);
    assert_eq!(s.get_user_by_name("nobody").await.unwrap(), None);

    let bob = s
        .create_user(
            NewUser {
                username: "bob".into(),
                display_name: "Bob".into(),
                ..NewUser::default()
            },
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(bob.email, None);
    assert_eq!(bob.password_hash, None);
    assert!(bob.groups.is_empty());
    s.create_user(new_user("aaron"), NOW + 2).await.unwrap();
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["aaron", "alice", "bob"]);

    s.set_user_disabled(&alice.id, true).await.unwrap();
    s.set_password_hash(&alice.id, None).await.unwrap();
    s.set_groups(&alice.id, vec!["admins".into()])
        .await
        .unwrap();
    assert!(s.consume_totp_step(&alice.id, 5).await.unwrap());
    s.set_totp_secret(&alice.id, Some("JBSWY3DPEHPK3PXP".into()))
        .await
        .unwrap();
    let a = s.get_user(&alice.id).await.unwrap().unwrap();
    assert!(a.disabled);
    assert_eq!(a.password_hash, None);
    assert_eq!(a.groups, vec!["admins".to_owned()]);
    assert_eq!(a.totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    assert_eq!(
        a.totp_last_step, None,
        "a new TOTP secret resets the last step"
    );
    assert_eq!(a.email, alice.email);
    s.set_user_disabled(&alice.id, false).await.unwrap();
    s.set_password_hash(&alice.id, Some("h2".into()))
        .await
        .unwrap();
    let a = s.get_user(&alice.id).await.unwrap().unwrap();
    assert!(!a.disabled);
    assert_eq!(a.password_hash.as_deref(), Some("h2"));

    assert_not_found(s.set_user_disabled("no-such-id", true).await);
    assert_not_found(s.set_password_hash("no-such-id", None).await);
    assert_not_found(s.set_totp_secret("no-such-id", None).await);
    assert_not_found(s.set_groups("no-such-id", vec![]).await);
    assert!(matches!(
        s.create_user(new_user(" "), NOW).await,
        Err(StoreError::Invalid(_))
    ));
}

pub async fn user_conflicts(root: &StoreRoot) {
    let s = fresh_tenant(root, "conflicts");
    s.create_user(new_user("carol"), NOW).await.unwrap();
    assert_conflict_names(s.create_user(new_user("carol"), NOW).await, "carol");
    // A name differing only in letter case would pass for the same person.
    assert_conflict_names(s.create_user(new_user("Carol"), NOW).await, "carol");
    assert_conflict_names(
        s.upsert_oidc_user("https://idp", "sub-c", "CAROL", "C", None, vec![], NOW)
            .await,
        "carol",
    );
    assert_eq!(s.list_users().await.unwrap().len(), 1);
    // Names that would break a table or a log line are refused, naming what is wrong.
    for (bad, why) in [
        ("eve\nmallory", "control character"),
        ("eve\t", "control character"),
        (" eve", "space"),
        ("eve ", "space"),
    ] {
        match s.create_user(new_user(bad), NOW).await {
            Err(StoreError::Invalid(msg)) => assert!(msg.contains(why), "{bad:?}: {msg}"),
            other => panic!("{bad:?}: expected Invalid, got {other:?}"),
        }
    }
    let long = "a".repeat(129);
    assert!(matches!(
        s.create_user(new_user(&long), NOW).await,
        Err(StoreError::Invalid(_))
    ));
    s.create_user(new_user("dave.o'brien@example.com"), NOW)
        .await
        .unwrap();
}

pub async fn login_failures_and_lockout(root: &StoreRoot) {
    let s = fresh_tenant(root, "lockout");
    let u = s.create_user(new_user("dave"), NOW).await.unwrap();
    assert_eq!(s.record_login_failure(&u.id, NOW, None).await.unwrap(), 1);
    assert_eq!(
        s.record_login_failure(&u.id, NOW + 1, Some(NOW + 300))
            .await
            .unwrap(),
        2
    );
    // A further failure without a new lock keeps the existing one.
    assert_eq!(
        s.record_login_failure(&u.id, NOW + 2, None).await.unwrap(),
        3
    );
    let d = s.get_user(&u.id).await.unwrap().unwrap();
    assert_eq!(d.failed_logins, 3);
    assert_eq!(d.locked_until, Some(NOW + 300));
    s.reset_login_failures(&u.id).await.unwrap();
    let d = s.get_user(&u.id).await.unwrap().unwrap();
    assert_eq!(d.failed_logins, 0);
    assert_eq!(d.locked_until, None);
    assert_not_found(s.record_login_failure("no-such-id", NOW, None).await);
    assert_not_found(s.reset_login_failures("no-such-id").await);

    // Concurrent failures from many nodes are all counted.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        let id = u.id.clone();
        tasks.push(tokio::spawn(async move {
            s.record_login_failure(&id, NOW, None).await.unwrap()
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<i64>>());
}

pub async fn totp_step_replay_guard(root: &StoreRoot) {
    let s = fresh_tenant(root, "totp");
    let u = s.create_user(new_user("erin"), NOW).await.unwrap();
    assert!(s.consume_totp_step(&u.id, 100).await.unwrap());
    assert!(
        !s.consume_totp_step(&u.id, 100).await.unwrap(),
        "same step twice is a replay"
    );
    assert!(
        !s.consume_totp_step(&u.id, 99).await.unwrap(),
        "earlier step is a replay"
    );
    assert!(s.consume_totp_step(&u.id, 101).await.unwrap());
    assert_eq!(
        s.get_user(&u.id).await.unwrap().unwrap().totp_last_step,
        Some(101)
    );
    s.set_totp_secret(&u.id, Some("NEWSECRET".into()))
        .await
        .unwrap();
    assert!(s.consume_totp_step(&u.id, 50).await.unwrap());
    assert!(!s.consume_totp_step("no-such-id", 1000).await.unwrap());

    // Many nodes racing to accept the same code: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        let id = u.id.clone();
        tasks.push(tokio::spawn(async move {
            s.consume_totp_step(&id, 200).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// The read-only lookup of an OIDC user (what a gateway uses while the store is a standby):
/// keyed by issuer and subject, scoped to the tenant, and equal to what the upsert returned.
pub async fn oidc_user_lookup(root: &StoreRoot) {
    let s = fresh_tenant(root, "oidc-lookup");
    let idp = "https://idp.example.org";
    assert_eq!(s.get_user_by_oidc(idp, "sub-1").await.unwrap(), None);
    let u = s
        .upsert_oidc_user(
            idp,
            "sub-1",
            "ivan",
            "Ivan",
            Some("ivan@example.org".into()),
            vec!["eng".into(), "ops".into()],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        s.get_user_by_oidc(idp, "sub-1").await.unwrap(),
        Some(u.clone())
    );
    // Another issuer's subject of the same name, and an unknown subject, are nobody.
    assert_eq!(
        s.get_user_by_oidc("https://other.example", "sub-1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_user_by_oidc(idp, "sub-2").await.unwrap(), None);
    // A local user of the same name is not an OIDC user.
    s.create_user(new_user("judy"), NOW).await.unwrap();
    assert_eq!(s.get_user_by_oidc(idp, "judy").await.unwrap(), None);
    // Another tenant does not see it, even with the same issuer and subject.
    let other = fresh_tenant(root, "oidc-lookup-other");
    assert_eq!(other.get_user_by_oidc(idp, "sub-1").await.unwrap(), None);
    let theirs = other
        .upsert_oidc_user(idp, "sub-1", "ivan", "Ivan B", None, vec![], NOW)
        .await
        .unwrap();
    assert_ne!(theirs.id, u.id);
    assert_eq!(s.get_user_by_oidc(idp, "sub-1").await.unwrap(), Some(u));
}

pub async fn oidc_users(root: &StoreRoot) {
    let s = fresh_tenant(root, "oidc");
    let idp = "https://idp.example.org";
    let u = s
        .upsert_oidc_user(
            idp,
            "sub-1",
            "frank",
            "Frank",
            Some("frank@example.org".into()),
            vec!["eng".into()],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(u.oidc_subject.as_deref(), Some("sub-1"));
    assert_eq!(u.password_hash, None);
    assert_eq!(s.get_user(&u.id).await.unwrap().as_ref(), Some(&u));

    let again = s
        .upsert_oidc_user(
            idp,
            "sub-1",
            "frank-renamed",
            "Frank F.",
            None,
            vec!["eng".into(), "ops".into()],
            NOW + 100,
        )
        .await
        .unwrap();
    assert_eq!(again.id, u.id);
    assert_eq!(again.username, "frank", "the username stays");
    assert_eq!(again.display_name, "Frank F.");
    assert_eq!(again.email, None);
    assert_eq!(again.groups, vec!["eng".to_owned(), "ops".to_owned()]);
    assert_eq!(again.created_at, NOW);
    assert_eq!(s.get_user(&u.id).await.unwrap().as_ref(), Some(&again));

    // A local user's name cannot be taken over by an IdP login.
    s.create_user(new_user("grace"), NOW).await.unwrap();
    assert_conflict_names(
        s.upsert_oidc_user(idp, "sub-2", "grace", "G", None, vec![], NOW)
            .await,
        "grace",
    );
    // The same subject at another issuer is another person.
    let other = s
        .upsert_oidc_user(
            "https://other.example",
            "sub-1",
            "frank2",
            "F2",
            None,
            vec![],
            NOW,
        )
        .await
        .unwrap();
    assert_ne!(other.id, u.id);

    // Concurrent first logins of one subject end in one user.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.upsert_oidc_user(idp, "sub-race", "heidi", "Heidi", None, vec![], NOW)
                .await
                .unwrap()
                .id
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(
        s.list_users()
            .await
            .unwrap()
            .iter()
            .filter(|u| u.username == "heidi")
            .count(),
        1
    );
}

pub async fn apps_crud_and_conflicts(root: &StoreRoot) {
    let s = fresh_tenant(root, "apps");
    let crm = s
        .create_app(
            NewApp {
                name: "crm".into(),
                host: " CRM.Example.ORG:8443 ".into(),
                upstream: "http://10.0.0.5:8080".into(),
                data_class: "confidential".into(),
                critical: true,
                isolated: false,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(crm.host, "crm.example.org:8443");
    assert!(crm.critical);
    let wiki = s
        .create_app(
            NewApp {
                name: "wiki".into(),
                host: "wiki.example.org".into(),
                upstream: "http://10.0.0.6".into(),
                data_class: "internal".into(),
                critical: false,
                isolated: false,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        s.list_apps().await.unwrap(),
        vec![crm.clone(), wiki.clone()]
    );
    assert_eq!(s.get_app_by_name("crm").await.unwrap().as_ref(), Some(&crm));
    assert_eq!(
        s.get_app_by_host("CRM.example.org:8443")
            .await
            .unwrap()
            .as_ref(),
        Some(&crm)
    );
    assert_eq!(s.get_app_by_name("nope").await.unwrap(), None);

    let dup_name = NewApp {
        name: "crm".into(),
        host: "other.example.org".into(),
        ..NewApp::default()
    };
    assert_conflict_names(s.create_app(dup_name, NOW).await, "\"crm\"");
    let dup_host = NewApp {
        name: "crm2".into(),
        host: "WIKI.example.org".into(),
        ..NewApp::default()
    };
    let r = s.create_app(dup_host, NOW).await;
    assert_conflict_names(r, "wiki.example.org");
    assert!(matches!(
        s.create_app(NewApp::default(), NOW).await,
        Err(StoreError::Invalid(_))
    ));

    assert!(s.delete_app("crm").await.unwrap());
    assert!(!s.delete_app("crm").await.unwrap());
    assert_eq!(s.list_apps().await.unwrap(), vec![wiki]);
}

pub async fn sessions_lifecycle(root: &StoreRoot) {
    let s = fresh_tenant(root, "sessions");
    let u = s.create_user(new_user("ivan"), NOW).await.unwrap();
    let portal = session("h-portal", "login-1", &u.id, "portal");
    let app = session("h-app", "login-1", &u.id, "crm.example.org");
    let mut other = session("h-other", "login-2", &u.id, "portal");
    other.device_id = Some("dev-1".into());
    for x in [&portal, &app, &other] {
        s.create_session(x).await.unwrap();
    }
    assert_eq!(
        s.get_session("h-portal").await.unwrap().as_ref(),
        Some(&portal)
    );
    assert_eq!(s.get_session("h-none").await.unwrap(), None);
    assert_eq!(s.list_user_sessions(&u.id).await.unwrap().len(), 3);
    assert!(matches!(
        s.create_session(&portal).await,
        Err(StoreError::Conflict(_))
    ));
    assert_not_found(
        s.create_session(&session("h-x", "l", "no-such-user", "portal"))
            .await,
    );

    assert!(s.touch_session("h-portal", NOW + 60).await.unwrap());
    assert_eq!(
        s.get_session("h-portal").await.unwrap().unwrap().last_seen,
        NOW + 60
    );
    // A node with a slow clock cannot move last_seen backwards.
    assert!(s.touch_session("h-portal", NOW + 30).await.unwrap());
    assert_eq!(
        s.get_session("h-portal").await.unwrap().unwrap().last_seen,
        NOW + 60
    );
    assert!(!s.touch_session("h-none", NOW).await.unwrap());

    assert_eq!(s.delete_login("login-1").await.unwrap(), 2);
    assert_eq!(s.get_session("h-app").await.unwrap(), None);
    assert_eq!(s.delete_login("login-1").await.unwrap(), 0);
    assert!(s.delete_session("h-other").await.unwrap());
    assert!(!s.delete_session("h-other").await.unwrap());

    for x in [&portal, &app, &other] {
        s.create_session(x).await.unwrap();
    }
    assert_eq!(s.delete_user_sessions(&u.id).await.unwrap(), 3);
    assert_eq!(s.delete_user_sessions(&u.id).await.unwrap(), 0);

    // Purge: one past its absolute expiry, one idle too long, one fresh.
    let expired = Session {
        absolute_expiry: NOW - 1,
        last_seen: NOW - 5,
        ..session("h-expired", "l-e", &u.id, "portal")
    };
    let idle = Session {
        last_seen: NOW - 1800,
        ..session("h-idle", "l-i", &u.id, "portal")
    };
    let fresh = Session {
        last_seen: NOW - 60,
        ..session("h-fresh", "l-f", &u.id, "portal")
    };
    for x in [&expired, &idle, &fresh] {
        s.create_session(x).await.unwrap();
    }
    assert_eq!(s.purge_expired_sessions(NOW, 900).await.unwrap(), 2);
    assert_eq!(
        s.get_session("h-fresh").await.unwrap().as_ref(),
        Some(&fresh)
    );
    assert_eq!(s.get_session("h-idle").await.unwrap(), None);
    assert_eq!(s.get_session("h-expired").await.unwrap(), None);
}

pub async fn handoff_single_use_and_expiry(root: &StoreRoot) {
    let s = fresh_tenant(root, "handoff");
    s.create_handoff("c1", "login-1", "crm.example.org", NOW + 30)
        .await
        .unwrap();
    assert!(matches!(
        s.create_handoff("c1", "login-x", "x", NOW + 30).await,
        Err(StoreError::Conflict(_))
    ));
    let h = s.take_handoff("c1", NOW).await.unwrap().unwrap();
    assert_eq!(h.login_id, "login-1");
    assert_eq!(h.app_host, "crm.example.org");
    assert_eq!(h.expires_at, NOW + 30);
    assert_eq!(s.take_handoff("c1", NOW).await.unwrap(), None, "single use");
    assert_eq!(s.take_handoff("never", NOW).await.unwrap(), None);

    s.create_handoff("c2", "login-2", "crm.example.org", NOW + 30)
        .await
        .unwrap();
    assert_eq!(
        s.take_handoff("c2", NOW + 30).await.unwrap(),
        None,
        "expired at expires_at"
    );
    assert_eq!(
        s.take_handoff("c2", NOW).await.unwrap(),
        None,
        "an expired code is gone, not just refused"
    );

    // Racing redemptions: exactly one gets it.
    s.create_handoff("c3", "login-3", "crm.example.org", NOW + 30)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.take_handoff("c3", NOW).await.unwrap().is_some()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);

    s.create_handoff("c4", "l", "h", NOW - 1).await.unwrap();
    s.create_handoff("c5", "l", "h", NOW + 100).await.unwrap();
    s.put_oidc_pending("st-old", "n", "v", "/", NOW - 1)
        .await
        .unwrap();
    assert_eq!(s.purge_expired_tokens(NOW).await.unwrap(), 2);
    assert!(s.take_handoff("c5", NOW).await.unwrap().is_some());
}

pub async fn oidc_pending_single_use(root: &StoreRoot) {
    let s = fresh_tenant(root, "oidc-pending");
    s.put_oidc_pending("state-1", "nonce-1", "verifier-1", "/apps/crm", NOW + 600)
        .await
        .unwrap();
    assert!(matches!(
        s.put_oidc_pending("state-1", "n", "v", "/", NOW + 600)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let p = s.take_oidc_pending("state-1", NOW).await.unwrap().unwrap();
    assert_eq!(p.state, "state-1");
    assert_eq!(p.nonce, "nonce-1");
    assert_eq!(p.pkce_verifier, "verifier-1");
    assert_eq!(p.return_to, "/apps/crm");
    assert_eq!(p.expires_at, NOW + 600);
    assert_eq!(s.take_oidc_pending("state-1", NOW).await.unwrap(), None);

    s.put_oidc_pending("state-2", "n", "v", "/", NOW + 10)
        .await
        .unwrap();
    assert_eq!(
        s.take_oidc_pending("state-2", NOW + 11).await.unwrap(),
        None
    );
    assert_eq!(s.take_oidc_pending("state-2", NOW).await.unwrap(), None);
}

fn docs(pairs: &[(&str, &str)]) -> Vec<PolicyDoc> {
    pairs
        .iter()
        .map(|(id, text)| PolicyDoc {
            id: (*id).into(),
            text: (*text).into(),
        })
        .collect()
}

pub async fn policy_versions_and_optimistic_concurrency(root: &StoreRoot) {
    let s = fresh_tenant(root, "policy");
    assert_eq!(s.current_policy_version().await.unwrap(), 0);
    assert_eq!(s.current_policy().await.unwrap(), None);
    assert!(s.policy_history().await.unwrap().is_empty());

    let v1_docs = docs(&[
        (
            "working-hours",
            "permit(principal, action, resource) when { context.hour >= 9 };",
        ),
        (
            "base",
            "forbid(principal, action, resource) unless { context.mfa };",
        ),
    ]);
    let v1 = s
        .save_policy(0, "alice", "initial", v1_docs.clone(), NOW)
        .await
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(s.current_policy_version().await.unwrap(), 1);
    let cur = s.current_policy().await.unwrap().unwrap();
    assert_eq!(cur.version, 1);
    assert_eq!(cur.author, "alice");
    assert_eq!(cur.comment, "initial");
    assert_eq!(cur.created_at, NOW);
    let ids: Vec<&str> = cur.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["base", "working-hours"], "docs ordered by id");

    // Bob edits from version 0 too late: refused, nothing written.
    match s
        .save_policy(0, "bob", "stale", docs(&[("x", "y")]), NOW + 1)
        .await
    {
        Err(StoreError::Conflict(msg)) => {
            assert!(msg.contains("since version 0"), "{msg}");
            assert!(msg.contains("current version is 1"), "{msg}");
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(s.current_policy_version().await.unwrap(), 1);

    let v2 = s
        .save_policy(
            1,
            "bob",
            "tighten",
            docs(&[("base", "forbid(principal, action, resource);")]),
            NOW + 2,
        )
        .await
        .unwrap();
    assert_eq!(v2, 2);
    // Rollback = saving version 1's documents again.
    let old = s.policy_version(1).await.unwrap().unwrap();
    let v3 = s
        .save_policy(2, "alice", "roll back to 1", old.docs.clone(), NOW + 3)
        .await
        .unwrap();
    assert_eq!(v3, 3);
    assert_eq!(s.current_policy().await.unwrap().unwrap().docs, old.docs);

    let history = s.policy_history().await.unwrap();
    let versions: Vec<i64> = history.iter().map(|v| v.version).collect();
    assert_eq!(versions, [3, 2, 1], "newest first");
    assert_eq!(history[1].author, "bob");
    assert_eq!(history[1].comment, "tighten");
    assert_eq!(history[1].docs.len(), 1);
    assert_eq!(history[2].docs.len(), 2);
    assert_eq!(s.policy_version(99).await.unwrap(), None);

    assert!(matches!(
        s.save_policy(3, "a", "dup", docs(&[("a", "1"), ("a", "2")]), NOW)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.save_policy(3, "a", "empty id", docs(&[("", "1")]), NOW)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.save_policy(3, "a", "no documents", vec![], NOW)
            .await
            .unwrap(),
        4
    );

    // Eight admins save from the same base at once: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.save_policy(
                4,
                &format!("admin{i}"),
                "race",
                docs(&[("p", "permit(principal, action, resource);")]),
                NOW,
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, 5);
                ok += 1;
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(s.current_policy_version().await.unwrap(), 5);
    assert_eq!(s.policy_history().await.unwrap().len(), 5);
}

pub async fn signing_keys(root: &StoreRoot) {
    let s = fresh_tenant(root, "keys");
    s.put_key("k1", "assertion", "sec1".into(), "pub1".into(), NOW)
        .await
        .unwrap();
    s.put_key("k2", "assertion", "sec2".into(), "pub2".into(), NOW + 10)
        .await
        .unwrap();
    s.put_key("s1", "snapshot", "sec3".into(), "pub3".into(), NOW)
        .await
        .unwrap();
    let keys = s.keys("assertion").await.unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k2", "k1"], "newest first");
    assert_eq!(keys[0].secret, "sec2");
    assert_eq!(keys[0].public, "pub2");
    assert_eq!(keys[0].purpose, "assertion");
    assert_eq!(keys[0].created_at, NOW + 10);
    assert!(s.keys("other").await.unwrap().is_empty());
    assert_conflict_names(
        s.put_key("k1", "assertion", "x".into(), "y".into(), NOW)
            .await,
        "k1",
    );
    assert_eq!(s.newest_key("assertion").await.unwrap().unwrap().kid, "k2");
    assert_eq!(s.newest_key("other").await.unwrap(), None);
    // A prepared key becomes the active one: new purpose, new date.
    assert!(
        s.set_key_purpose("s1", "snapshot-next", NOW + 20)
            .await
            .unwrap()
    );
    assert!(s.keys("snapshot").await.unwrap().is_empty());
    assert_eq!(
        s.newest_key("snapshot-next")
            .await
            .unwrap()
            .unwrap()
            .created_at,
        NOW + 20
    );
    assert!(!s.set_key_purpose("nope", "x", NOW).await.unwrap());
    assert!(s.delete_key("k1").await.unwrap());
    assert!(!s.delete_key("k1").await.unwrap());
    assert_eq!(s.keys("assertion").await.unwrap().len(), 1);
}

pub async fn gateway_nodes(root: &StoreRoot) {
    let s = fresh_tenant(root, "nodes");
    let other = fresh_tenant(root, "nodes-other");
    let mut r = NodeReport {
        node_id: "gw-b".into(),
        role: "gateway".into(),
        snapshot_version: None,
        snapshot_issued_ms: None,
        last_seen_ms: NOW * 1000,
    };
    s.report_node(&r).await.unwrap();
    r.node_id = "gw-a".into();
    r.snapshot_version = Some(7);
    r.snapshot_issued_ms = Some(NOW * 1000 - 5);
    s.report_node(&r).await.unwrap();
    // A second report replaces the first.
    r.snapshot_version = Some(8);
    r.last_seen_ms = NOW * 1000 + 1;
    s.report_node(&r).await.unwrap();
    let nodes = s.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0], r);
    assert_eq!(nodes[1].node_id, "gw-b");
    assert_eq!(nodes[1].snapshot_version, None);
    assert!(other.list_nodes().await.unwrap().is_empty());

    let mut c = ConnectorReport {
        device: "laptop-1".into(),
        site: Some("tokyo".into()),
        latency_ms: Some(12),
        loss_pct: Some(0),
        switches: 1,
        reported_ms: NOW * 1000,
    };
    s.report_connector(&c).await.unwrap();
    c.site = Some("osaka".into());
    c.reported_ms += 10;
    s.report_connector(&c).await.unwrap();
    assert_eq!(s.connector_reports(0).await.unwrap(), vec![c.clone()]);
    assert!(
        s.connector_reports(c.reported_ms + 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(other.connector_reports(0).await.unwrap().is_empty());
}

pub async fn dr_transitions(root: &StoreRoot) {
    let s = fresh_tenant(root, "drt");
    let other = fresh_tenant(root, "drt-other");
    assert_eq!(s.last_dr_transition("laptop-1").await.unwrap(), None);
    let t = |device: &str, seq: i64, at_ms: i64, state: &str, drill: bool| DrTransition {
        device: device.into(),
        seq,
        at_ms,
        state: state.into(),
        drill,
        reported_ms: at_ms + 5,
    };
    let ms = NOW * 1000;
    let rows = [
        t("laptop-1", 1, ms, "active", true),
        t("laptop-1", 2, ms + 60_000, "normal", false),
        t("laptop-1", 3, ms + 120_000, "active", false),
        t("laptop-2", 1, ms + 10_000, "active", true),
        t("laptop-2", 2, ms + 20_000, "returning", false),
    ];
    for r in &rows {
        s.add_dr_transition(r).await.unwrap();
    }
    // The same number twice is a conflict, and nothing changes.
    assert!(matches!(
        s.add_dr_transition(&t("laptop-1", 3, ms + 130_000, "normal", false))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.last_dr_transition("laptop-1").await.unwrap(),
        Some(rows[2].clone())
    );
    assert_eq!(s.dr_transitions(0).await.unwrap(), rows.to_vec());
    // From a later time on: per device the state it was in then, and everything after.
    assert_eq!(
        s.dr_transitions(ms + 60_001).await.unwrap(),
        vec![rows[1].clone(), rows[2].clone(), rows[4].clone()]
    );
    assert_eq!(
        s.dr_transitions(ms + 10_000).await.unwrap(),
        vec![
            rows[0].clone(),
            rows[1].clone(),
            rows[2].clone(),
            rows[3].clone(),
            rows[4].clone()
        ]
    );
    assert!(other.dr_transitions(0).await.unwrap().is_empty());
    assert_eq!(other.last_dr_transition("laptop-1").await.unwrap(), None);
}

/// A DR gateway's chain of `n` events, linked as that gateway's store would link them, in
/// `s`'s tenant; the uploaded form names the origin.
fn dr_chain(s: &Store, n: usize) -> Vec<UploadedEvent> {
    let mut prev = tsuzuku_audit::GENESIS_HASH.to_owned();
    (1..=n)
        .map(|i| {
            let ev = event(s, i);
            let seq = i as i64;
            let hash = chain_hash(seq, &prev, &ev);
            let mut up = ev.clone();
            let mut detail = up.detail.to_value();
            detail["dr_seq"] = json!(seq);
            up.detail = detail.into();
            let u = UploadedEvent {
                dr_seq: seq,
                dr_prev_hash: prev.clone(),
                dr_hash: hash.clone(),
                event: up,
            };
            prev = hash;
            u
        })
        .collect()
}

pub async fn dr_audit_uploads_are_idempotent(root: &StoreRoot) {
    let s = fresh_tenant(root, "drup");
    s.append_audit(vec![event(&s, 100)]).await.unwrap();
    let chain = dr_chain(&s, 6);
    let id = chain[0].dr_hash.clone();
    let up = |events: &[UploadedEvent]| s.append_dr_audit(&id, "dr-1", events.to_vec(), NOW);
    // A first upload must start at the chain's beginning.
    assert!(matches!(
        up(&chain[1..3]).await.unwrap(),
        DrAuditUpload::OutOfStep { last_seq: 0, .. }
    ));
    assert_eq!(
        up(&chain[..3]).await.unwrap(),
        DrAuditUpload::Accepted {
            appended: 3,
            last_seq: 3
        }
    );
    // A retry of the same batch (its answer was lost) appends nothing.
    assert_eq!(
        up(&chain[..3]).await.unwrap(),
        DrAuditUpload::Accepted {
            appended: 0,
            last_seq: 3
        }
    );
    // An overlapping batch appends only what is new; a gap is refused.
    assert!(matches!(
        up(&chain[4..]).await.unwrap(),
        DrAuditUpload::OutOfStep { last_seq: 3, .. }
    ));
    assert_eq!(
        up(&chain[1..5]).await.unwrap(),
        DrAuditUpload::Accepted {
            appended: 2,
            last_seq: 5
        }
    );
    // A batch whose events are not linked, or that differs at the recorded position.
    let mut unlinked = chain[5..].to_vec();
    unlinked[0].dr_prev_hash = "0".repeat(64);
    assert!(matches!(
        up(&unlinked).await.unwrap(),
        DrAuditUpload::OutOfStep { last_seq: 5, .. }
    ));
    let mut forged = chain[4..].to_vec();
    forged[0].dr_hash = "f".repeat(64);
    forged[1].dr_prev_hash = "f".repeat(64);
    assert!(matches!(
        up(&forged).await.unwrap(),
        DrAuditUpload::OutOfStep { last_seq: 5, .. }
    ));
    // Events of another tenant are refused.
    let mut foreign = chain[5..].to_vec();
    foreign[0].event.tenant = "someone-else".into();
    assert!(matches!(up(&foreign).await, Err(StoreError::Invalid(_))));
    assert_eq!(
        up(&chain[5..]).await.unwrap(),
        DrAuditUpload::Accepted {
            appended: 1,
            last_seq: 6
        }
    );
    // Each DR event is in the tenant's chain exactly once, in order, and the chain verifies.
    let all = s.audit_events(1, 100).await.unwrap();
    let dr: Vec<i64> = all
        .iter()
        .filter_map(|e| e.event.detail.to_value()["dr_seq"].as_i64())
        .collect();
    assert_eq!(dr, [1, 2, 3, 4, 5, 6]);
    assert_eq!(all.len(), 7);
    assert_eq!(all[1].event, chain[0].event);
    assert!(s.verify_audit().await.unwrap().is_intact());
    // Another chain (a DR gateway with a new store) is uploaded on its own.
    let other = fresh_tenant(root, "drup-other");
    let chain2 = dr_chain(&other, 2);
    assert_eq!(
        other
            .append_dr_audit(&chain2[0].dr_hash, "dr-1", chain2.clone(), NOW)
            .await
            .unwrap(),
        DrAuditUpload::Accepted {
            appended: 2,
            last_seq: 2
        }
    );
    assert_eq!(s.audit_events(1, 100).await.unwrap().len(), 7);
}

pub async fn gateway_sites_and_exclusions(root: &StoreRoot) {
    let s = fresh_tenant(root, "gsites");
    let other = fresh_tenant(root, "gsites-other");
    let site = |name: &str, pref: i64| GatewaySite {
        name: name.into(),
        host: format!("{name}.gw.example"),
        endpoints: vec!["192.0.2.1:443".into(), "192.0.2.2:443".into()],
        preference: pref,
        capacity_rps: Some(1000),
        dr: false,
        created_at: NOW,
    };
    s.add_gateway_site(&site("osaka", 2)).await.unwrap();
    s.add_gateway_site(&site("tokyo", 1)).await.unwrap();
    assert_conflict_names(s.add_gateway_site(&site("tokyo", 5)).await, "tokyo");
    let names: Vec<String> = s
        .list_gateway_sites()
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, ["tokyo", "osaka"], "by preference");
    assert_eq!(s.list_gateway_sites().await.unwrap()[0], site("tokyo", 1));
    let ex = |site: &str, until_ms: i64| SiteExclusion {
        site: site.into(),
        until_ms,
        reason: "maintenance".into(),
        created_by: "cli:test".into(),
        created_at_ms: NOW * 1000,
    };
    s.exclude_gateway_site(&ex("tokyo", NOW * 1000 + 7_200_000))
        .await
        .unwrap();
    assert_not_found(s.exclude_gateway_site(&ex("nagoya", NOW * 1000 + 1)).await);
    // Excluding again replaces the exclusion.
    s.exclude_gateway_site(&ex("tokyo", NOW * 1000 + 3_600_000))
        .await
        .unwrap();
    let active = s.active_site_exclusions(NOW * 1000).await.unwrap();
    assert_eq!(active, vec![ex("tokyo", NOW * 1000 + 3_600_000)]);
    // Expired exclusions are not active.
    assert!(
        s.active_site_exclusions(NOW * 1000 + 3_600_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(other.list_gateway_sites().await.unwrap().is_empty());
    assert!(other.active_site_exclusions(0).await.unwrap().is_empty());
    assert!(s.include_gateway_site("tokyo").await.unwrap());
    assert!(!s.include_gateway_site("tokyo").await.unwrap());
    s.exclude_gateway_site(&ex("osaka", NOW * 1000 + 1000))
        .await
        .unwrap();
    assert!(s.remove_gateway_site("osaka").await.unwrap());
    assert!(!s.remove_gateway_site("osaka").await.unwrap());
    assert!(s.active_site_exclusions(0).await.unwrap().is_empty());
}

pub async fn devices_tokens_and_posture(root: &StoreRoot) {
    let s = fresh_tenant(root, "devices");
    let other = fresh_tenant(root, "devices-other");
    // Tokens work once, and not after expiry, and not in another tenant.
    s.create_enrol_token("t1", true, None, "admin", NOW, NOW + 60)
        .await
        .unwrap();
    s.create_enrol_token("t2", false, Some("u-7"), "admin", NOW, NOW + 60)
        .await
        .unwrap();
    s.create_enrol_token("t3", false, None, "admin", NOW - 100, NOW - 1)
        .await
        .unwrap();
    let grant = |company_issued: bool, user: Option<&str>| {
        Some(EnrolGrant {
            company_issued,
            user_id: user.map(str::to_owned),
        })
    };
    assert_eq!(other.take_enrol_token("t1", NOW).await.unwrap(), None);
    assert_eq!(
        s.take_enrol_token("t1", NOW).await.unwrap(),
        grant(true, None)
    );
    assert_eq!(s.take_enrol_token("t1", NOW).await.unwrap(), None);
    assert_eq!(
        s.take_enrol_token("t2", NOW).await.unwrap(),
        grant(false, Some("u-7"))
    );
    assert_eq!(s.take_enrol_token("t3", NOW).await.unwrap(), None);
    let d = Device {
        id: "dev-1".into(),
        name: "laptop".into(),
        fingerprint: "ab".repeat(32),
        public_key: "BAAA".into(),
        company_issued: true,
        enrolled_at: NOW,
        not_after: NOW + 86_400,
        revoked_at: None,
        user_id: Some("u-7".into()),
    };
    s.add_device(&d).await.unwrap();
    assert_conflict_names(s.add_device(&d).await, "dev-1");
    assert_eq!(s.list_devices().await.unwrap(), vec![d.clone()]);
    assert!(other.list_devices().await.unwrap().is_empty());
    assert!(!other.revoke_device("dev-1", NOW).await.unwrap());
    assert!(s.revoke_device("laptop", NOW + 5).await.unwrap());
    assert!(!s.revoke_device("dev-1", NOW + 6).await.unwrap());
    assert_eq!(s.list_devices().await.unwrap()[0].revoked_at, Some(NOW + 5));
    // Posture: newest collection wins, an older report does not overwrite.
    let p = |at: i64, r: &str| StoredPosture {
        device_id: "dev-1".into(),
        report: r.into(),
        collected_at: at,
        received_ms: at * 1000,
    };
    assert_eq!(s.get_posture("dev-1").await.unwrap(), None);
    s.put_posture(&p(NOW, "a")).await.unwrap();
    s.put_posture(&p(NOW + 10, "b")).await.unwrap();
    s.put_posture(&p(NOW + 5, "old")).await.unwrap();
    assert_eq!(s.get_posture("dev-1").await.unwrap().unwrap().report, "b");
    assert_eq!(other.get_posture("dev-1").await.unwrap(), None);
}

pub async fn mirror_users_and_apps(root: &StoreRoot) {
    let source = fresh_tenant(root, "mirror-src");
    let copy = fresh_tenant(root, "mirror-dst");
    let mut alice = source.create_user(new_user("alice"), NOW).await.unwrap();
    alice.totp_secret = Some("JBSWY3DPEHPK3PXP".into());
    let bob = source.create_user(new_user("bob"), NOW).await.unwrap();
    let stale = copy.create_user(new_user("carol"), NOW).await.unwrap();
    copy.mirror_users(&[alice.clone(), bob.clone()])
        .await
        .unwrap();
    let got = copy.get_user(&alice.id).await.unwrap().unwrap();
    assert_eq!(got.username, "alice");
    assert_eq!(got.password_hash, alice.password_hash);
    assert_eq!(got.totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    assert_eq!(got.groups, alice.groups);
    assert!(
        copy.get_user(&stale.id).await.unwrap().is_none(),
        "not in the mirror: removed"
    );
    // Mirroring again updates in place (groups changed, bob removed).
    alice.groups = vec!["admins".into()];
    copy.mirror_users(std::slice::from_ref(&alice))
        .await
        .unwrap();
    assert_eq!(
        copy.get_user(&alice.id).await.unwrap().unwrap().groups,
        ["admins"]
    );
    assert!(copy.get_user(&bob.id).await.unwrap().is_none());
    let app = source
        .create_app(
            NewApp {
                name: "wiki".into(),
                host: "wiki.example".into(),
                upstream: "http://127.0.0.1:9".into(),
                data_class: "internal".into(),
                critical: true,
                isolated: false,
            },
            NOW,
        )
        .await
        .unwrap();
    copy.mirror_apps(std::slice::from_ref(&app)).await.unwrap();
    copy.mirror_apps(std::slice::from_ref(&app)).await.unwrap();
    assert_eq!(copy.list_apps().await.unwrap(), vec![app]);
    copy.mirror_apps(&[]).await.unwrap();
    assert!(copy.list_apps().await.unwrap().is_empty());
}

/// The DR gateway's copy of device trust: devices (revocations included) and the device CA's
/// certificate, replaced as a whole.
pub async fn mirror_device_trust(root: &StoreRoot) {
    let s = fresh_tenant(root, "mirror-devices");
    let device = |id: &str, fp: &str| Device {
        id: id.into(),
        name: format!("{id}-laptop"),
        fingerprint: fp.repeat(32),
        public_key: "BAAA".into(),
        company_issued: true,
        enrolled_at: NOW,
        not_after: NOW + 86_400,
        revoked_at: None,
        user_id: (id == "a").then(|| "u-1".to_owned()),
    };
    let (a, mut b) = (device("a", "aa"), device("b", "bb"));
    s.mirror_devices(&[a.clone(), b.clone()]).await.unwrap();
    s.put_posture(&StoredPosture {
        device_id: "b".into(),
        report: "{}".into(),
        collected_at: NOW,
        received_ms: NOW * 1000,
    })
    .await
    .unwrap();
    assert_eq!(s.list_devices().await.unwrap(), vec![a.clone(), b.clone()]);
    // Revoking b and dropping a: b keeps its posture, a is gone.
    b.revoked_at = Some(NOW + 5);
    s.mirror_devices(std::slice::from_ref(&b)).await.unwrap();
    assert_eq!(s.list_devices().await.unwrap(), vec![b.clone()]);
    assert!(s.get_posture("b").await.unwrap().is_some());
    // A new device taking a's old fingerprint is no conflict.
    let c = device("c", "aa");
    s.mirror_devices(&[b.clone(), c.clone()]).await.unwrap();
    assert_eq!(s.list_devices().await.unwrap(), vec![b, c]);
    s.mirror_devices(&[]).await.unwrap();
    assert!(s.list_devices().await.unwrap().is_empty());
    assert!(
        s.get_posture("b").await.unwrap().is_none(),
        "posture goes with its device"
    );

    let newest = |s: Store| async move {
        s.newest_key(DEVICE_CA_CERT_PURPOSE)
            .await
            .unwrap()
            .map(|k| (k.kid, k.public))
    };
    s.mirror_device_ca("ca-1", Some("CERT 1"), NOW)
        .await
        .unwrap();
    s.mirror_device_ca("ca-1", Some("CERT 1"), NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        s.keys(DEVICE_CA_CERT_PURPOSE).await.unwrap().len(),
        1,
        "unchanged: not rewritten"
    );
    s.mirror_device_ca("ca-2", Some("CERT 2"), NOW + 2)
        .await
        .unwrap();
    assert_eq!(
        newest(s.clone()).await,
        Some(("ca-2".into(), "CERT 2".into()))
    );
    s.mirror_device_ca("ca-1", Some("CERT 1"), NOW + 3)
        .await
        .unwrap();
    assert_eq!(
        newest(s.clone()).await,
        Some(("ca-1".into(), "CERT 1".into()))
    );
    s.mirror_device_ca("none", None, NOW + 4).await.unwrap();
    assert_eq!(newest(s.clone()).await, None);
}

/// DP-9: everything written under tenant A is invisible to and unchangeable from tenant B.
pub async fn tenant_isolation(root: &StoreRoot) {
    let a = fresh_tenant(root, "iso-a");
    let b = fresh_tenant(root, "iso-b");

    // Tenant A writes one of everything.
    let user = a.create_user(new_user("judy"), NOW).await.unwrap();
    let oidc = a
        .upsert_oidc_user("https://idp", "sub-j", "judy-sso", "J", None, vec![], NOW)
        .await
        .unwrap();
    let app = a
        .create_app(
            NewApp {
                name: "crm".into(),
                host: "crm.example.org".into(),
                upstream: "http://10.0.0.5".into(),
                data_class: "internal".into(),
                critical: false,
                isolated: false,
            },
            NOW,
        )
        .await
        .unwrap();
    let sess = session("iso-token", "iso-login", &user.id, "portal");
    a.create_session(&sess).await.unwrap();
    a.create_handoff("iso-code", "iso-login", "crm.example.org", NOW + 60)
        .await
        .unwrap();
    a.put_oidc_pending("iso-state", "n", "v", "/", NOW + 60)
        .await
        .unwrap();
    a.save_policy(
        0,
        "admin",
        "a's policy",
        docs(&[("p", "permit(principal, action, resource);")]),
        NOW,
    )
    .await
    .unwrap();
    a.put_key("iso-kid", "assertion", "s".into(), "p".into(), NOW)
        .await
        .unwrap();
    a.append_audit(vec![event(&a, 1), event(&a, 2)])
        .await
        .unwrap();

    // Tenant B sees none of it...
    assert_eq!(b.get_user(&user.id).await.unwrap(), None);
    assert_eq!(b.get_user_by_name("judy").await.unwrap(), None);
    assert!(b.list_users().await.unwrap().is_empty());
    assert_eq!(b.get_app_by_name("crm").await.unwrap(), None);
    assert_eq!(b.get_app_by_host("crm.example.org").await.unwrap(), None);
    assert!(b.list_apps().await.unwrap().is_empty());
    assert_eq!(b.get_session("iso-token").await.unwrap(), None);
    assert!(b.list_user_sessions(&user.id).await.unwrap().is_empty());
    assert_eq!(b.current_policy_version().await.unwrap(), 0);
    assert_eq!(b.current_policy().await.unwrap(), None);
    assert_eq!(b.policy_version(1).await.unwrap(), None);
    assert!(b.policy_history().await.unwrap().is_empty());
    assert!(b.keys("assertion").await.unwrap().is_empty());
    assert!(b.audit_events(1, 100).await.unwrap().is_empty());
    assert!(b.audit_tail(10).await.unwrap().is_empty());
    assert_eq!(b.audit_head().await.unwrap(), None);

    // ... and cannot change or consume any of it.
    assert_not_found(b.set_user_disabled(&user.id, true).await);
    assert_not_found(b.set_password_hash(&user.id, None).await);
    assert_not_found(b.set_totp_secret(&user.id, Some("x".into())).await);
    assert_not_found(b.set_groups(&user.id, vec!["admins".into()]).await);
    assert_not_found(b.record_login_failure(&user.id, NOW, Some(NOW + 999)).await);
    assert_not_found(b.reset_login_failures(&user.id).await);
    assert!(!b.consume_totp_step(&user.id, 7).await.unwrap());
    assert_not_found(
        b.create_session(&session("b-token", "b-login", &user.id, "portal"))
            .await,
    );
    assert!(!b.delete_app("crm").await.unwrap());
    assert!(!b.touch_session("iso-token", NOW + 500).await.unwrap());
    assert!(!b.delete_session("iso-token").await.unwrap());
    assert_eq!(b.delete_login("iso-login").await.unwrap(), 0);
    assert_eq!(b.delete_user_sessions(&user.id).await.unwrap(), 0);
    assert_eq!(
        b.purge_expired_sessions(NOW + 1_000_000, 1).await.unwrap(),
        0
    );
    assert_eq!(b.take_handoff("iso-code", NOW).await.unwrap(), None);
    assert_eq!(b.take_oidc_pending("iso-state", NOW).await.unwrap(), None);
    assert_eq!(b.purge_expired_tokens(NOW + 1_000_000).await.unwrap(), 0);
    assert!(!b.delete_key("iso-kid").await.unwrap());
    assert!(matches!(
        b.append_audit(vec![event(&a, 3)]).await,
        Err(StoreError::Invalid(_))
    ));

    // Same names in B are B's own and do not collide with A's.
    let b_user = b.create_user(new_user("judy"), NOW).await.unwrap();
    assert_ne!(b_user.id, user.id);
    let b_oidc = b
        .upsert_oidc_user(
            "https://idp",
            "sub-j",
            "judy-sso",
            "J",
            None,
            vec!["b".into()],
            NOW,
        )
        .await
        .unwrap();
    assert_ne!(b_oidc.id, oidc.id);
    b.create_app(
        NewApp {
            name: "crm".into(),
            host: "crm.example.org".into(),
            upstream: "http://10.9.9.9".into(),
            data_class: "public".into(),
            critical: true,
            isolated: false,
        },
        NOW,
    )
    .await
    .unwrap();
    b.create_session(&session("iso-token", "iso-login", &b_user.id, "portal"))
        .await
        .unwrap();
    assert_eq!(b.delete_login("iso-login").await.unwrap(), 1);
    assert_eq!(
        b.save_policy(0, "b-admin", "b's policy", vec![], NOW)
            .await
            .unwrap(),
        1
    );
    b.put_key("iso-kid", "assertion", "bs".into(), "bp".into(), NOW)
        .await
        .unwrap();
    b.append_audit(vec![event(&b, 1)]).await.unwrap();

    // A's state is exactly as A left it.
    assert_eq!(a.get_user(&user.id).await.unwrap().as_ref(), Some(&user));
    assert_eq!(
        a.get_user(&oidc.id).await.unwrap().unwrap().groups,
        Vec::<String>::new()
    );
    assert_eq!(a.list_users().await.unwrap().len(), 2);
    assert_eq!(a.list_apps().await.unwrap(), vec![app]);
    assert_eq!(
        a.get_session("iso-token").await.unwrap().as_ref(),
        Some(&sess)
    );
    assert_eq!(
        a.current_policy().await.unwrap().unwrap().comment,
        "a's policy"
    );
    assert_eq!(a.keys("assertion").await.unwrap()[0].secret, "s");
    let a_report = a.verify_audit().await.unwrap();
    assert!(a_report.is_intact(), "{a_report}");
    assert_eq!(a_report.checked, 2);
    assert!(a.consume_totp_step(&user.id, 7).await.unwrap());
    assert!(a.take_handoff("iso-code", NOW).await.unwrap().is_some());
    assert!(
        a.take_oidc_pending("iso-state", NOW)
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn audit_append_and_read(root: &StoreRoot) {
    let s = fresh_tenant(root, "audit");
    assert_eq!(s.audit_head().await.unwrap(), None);
    assert!(s.verify_audit().await.unwrap().is_intact());
    assert_eq!(s.append_audit(vec![]).await.unwrap(), Vec::<i64>::new());
    let first: Vec<AuditEvent> = (1..=3).map(|i| event(&s, i)).collect();
    assert_eq!(s.append_audit(first.clone()).await.unwrap(), [1, 2, 3]);
    let second: Vec<AuditEvent> = (4..=5).map(|i| event(&s, i)).collect();
    assert_eq!(s.append_audit(second.clone()).await.unwrap(), [4, 5]);

    let all = s.audit_events(1, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    let stored: Vec<AuditEvent> = all.iter().map(|e| e.event.clone()).collect();
    assert_eq!(
        stored,
        [first, second].concat(),
        "events read back unchanged"
    );
    assert_eq!(
        s.audit_head().await.unwrap(),
        Some((5, all[4].hash.clone()))
    );
    let report = verify(all.clone());
    assert!(report.is_intact(), "{report}");
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.checked, 5);

    let page = s.audit_events(3, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    let tail = s.audit_tail(2).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(tail[1], all[4]);
    assert!(s.audit_tail(0).await.unwrap().is_empty());

    // A batch with a stranger's event is refused whole.
    let mut foreign = event(&s, 6);
    foreign.tenant = "someone-else".into();
    assert!(matches!(
        s.append_audit(vec![event(&s, 6), foreign]).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.audit_tail(10).await.unwrap().len(), 5);
}

async fn tampered(root: &StoreRoot, label: &str, n: usize) -> Store {
    let s = fresh_tenant(root, label);
    s.append_audit((1..=n).map(|i| event(&s, i)).collect())
        .await
        .unwrap();
    assert!(s.verify_audit().await.unwrap().is_intact());
    s
}

/// Changing rows behind the store's back (raw SQL) is caught by verification.
pub async fn audit_tampering_is_detected(root: &StoreRoot) {
    let pool = root.raw_pool();

    // Content changed.
    let s = tampered(root, "tamper-alter", 10).await;
    sqlx::query("UPDATE audit_events SET actor = $1 WHERE tenant_id = $2 AND seq = $3")
        .bind("mallory")
        .bind(s.tenant_id())
        .bind(4_i64)
        .execute(pool)
        .await
        .unwrap();
    let report = s.verify_audit().await.unwrap();
    assert_eq!(
        report.problems,
        vec![ChainProblem::Altered { seq: 4 }],
        "{report}"
    );
    assert!(
        report.to_string().contains("event #4 was altered"),
        "{report}"
    );

    // An event removed from the middle.
    let s = tampered(root, "tamper-remove", 10).await;
    sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2")
        .bind(s.tenant_id())
        .bind(6_i64)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        s.verify_audit().await.unwrap().problems,
        vec![ChainProblem::Removed {
            after_seq: 5,
            missing_from: 6,
            missing_to: 6
        }]
    );

    // The newest events removed: only the head row betrays it.
    let s = tampered(root, "tamper-truncate", 10).await;
    sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq >= $2")
        .bind(s.tenant_id())
        .bind(9_i64)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        s.verify_audit().await.unwrap().problems,
        vec![ChainProblem::HeadMismatch {
            last_seq: 8,
            head_seq: 10
        }]
    );

    // Changed and re-hashed: the next link breaks.
    let s = tampered(root, "tamper-rehash", 10).await;
    let mut ev = s.audit_events(5, 1).await.unwrap().remove(0);
    ev.event.detail = json!({"i": 5, "allowed": true}).into();
    let new_hash = chain_hash(ev.seq, &ev.prev_hash, &ev.event);
    sqlx::query("UPDATE audit_events SET detail = $1, hash = $2 WHERE tenant_id = $3 AND seq = $4")
        .bind(ev.event.detail.to_string())
        .bind(new_hash)
        .bind(s.tenant_id())
        .bind(5_i64)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        s.verify_audit().await.unwrap().problems,
        vec![ChainProblem::BrokenLink { seq: 6 }]
    );

    // Garbage that does not even decode counts as altered.
    let s = tampered(root, "tamper-garbage", 5).await;
    sqlx::query("UPDATE audit_events SET kind = $1 WHERE tenant_id = $2 AND seq = $3")
        .bind("bogus")
        .bind(s.tenant_id())
        .bind(3_i64)
        .execute(pool)
        .await
        .unwrap();
    let problems = s.verify_audit().await.unwrap().problems;
    assert!(
        matches!(&problems[..], [ChainProblem::Unreadable { seq: 3, reason }] if reason.contains("\"bogus\"")),
        "{problems:?}"
    );
    assert!(matches!(
        s.audit_events(1, 10).await,
        Err(StoreError::Corrupt(_))
    ));

    // Two rows' contents swapped.
    let s = tampered(root, "tamper-swap", 6).await;
    let evs = s.audit_events(2, 2).await.unwrap();
    for (seq, src) in [(2_i64, &evs[1]), (3_i64, &evs[0])] {
        sqlx::query(
            "UPDATE audit_events SET prev_hash = $1, hash = $2, time_ms = $3, kind = $4, actor = $5, detail = $6
             WHERE tenant_id = $7 AND seq = $8",
        )
        .bind(src.prev_hash.clone())
        .bind(src.hash.clone())
        .bind(src.event.time_ms)
        .bind(src.event.kind.as_str())
        .bind(src.event.actor.clone())
        .bind(src.event.detail.to_string())
        .bind(s.tenant_id())
        .bind(seq)
        .execute(pool)
        .await
        .unwrap();
    }
    // Read back by seq, a swap shows as both events altered (not as "reordered").
    let problems = s.verify_audit().await.unwrap().problems;
    assert!(
        problems.contains(&ChainProblem::Altered { seq: 2 }),
        "{problems:?}"
    );
    assert!(
        problems.contains(&ChainProblem::Altered { seq: 3 }),
        "{problems:?}"
    );

    // Appending after tampering with the head is refused, not forked.
    let s = tampered(root, "tamper-head", 3).await;
    sqlx::query("UPDATE audit_head SET seq = $1 WHERE tenant_id = $2")
        .bind(1_i64)
        .bind(s.tenant_id())
        .execute(pool)
        .await
        .unwrap();
    assert!(matches!(
        s.append_audit(vec![event(&s, 4)]).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(s.audit_tail(10).await.unwrap().len(), 3);
}

/// Runs `sql` with `binds` (text or integers) on the raw pool; false if the database refuses it
/// (PostgreSQL refuses text in a BIGINT column, which SQLite stores).
async fn raw(root: &StoreRoot, sql: &str, binds: &[Bind<'_>]) -> bool {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t.to_string()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q.execute(root.raw_pool()).await.is_ok()
}

enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

/// A copy of the tenant's row `seq` inserted as `new_seq`, with its hash recomputed for that
/// place after `prev_hash` (a forgery that links correctly).
async fn forge_row(root: &StoreRoot, s: &Store, from_seq: i64, new_seq: i64, prev_hash: &str) {
    let mut ev = s.audit_events(from_seq, 1).await.unwrap().remove(0);
    ev.event.actor = Some("mallory".into());
    let hash = chain_hash(new_seq, prev_hash, &ev.event);
    assert!(
        raw(
            root,
            "INSERT INTO audit_events (tenant_id, seq, prev_hash, hash, time_ms, kind, actor, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                Bind::Text(s.tenant_id()),
                Bind::Int(new_seq),
                Bind::Text(prev_hash),
                Bind::Text(&hash),
                Bind::Int(ev.event.time_ms),
                Bind::Text(ev.event.kind.as_str()),
                Bind::Text("mallory"),
                Bind::Text(ev.event.detail.as_str()),
            ],
        )
        .await
    );
}

/// Review findings (`audit verify` ignored the head row and read only rows numbered from 1):
/// tail truncation, a deleted head row, a correctly hashed event appended past the head and a
/// row numbered -5 all verified intact.
pub async fn audit_verify_reads_every_row_and_the_head(root: &StoreRoot) {
    // Events 5 and 6 deleted, the head row still says 6.
    let s = tampered(root, "verify-truncate", 6).await;
    assert!(
        raw(
            root,
            "DELETE FROM audit_events WHERE tenant_id = $1 AND seq >= $2",
            &[Bind::Text(s.tenant_id()), Bind::Int(5)]
        )
        .await
    );
    let report = s.verify_audit().await.unwrap();
    assert_eq!(
        report.problems,
        vec![ChainProblem::HeadMismatch {
            last_seq: 4,
            head_seq: 6
        }]
    );
    assert!(report.to_string().contains("events #5 to #6"), "{report}");

    // The head row deleted.
    let s = tampered(root, "verify-nohead", 6).await;
    assert!(
        raw(
            root,
            "DELETE FROM audit_head WHERE tenant_id = $1",
            &[Bind::Text(s.tenant_id())]
        )
        .await
    );
    assert_eq!(
        s.verify_audit().await.unwrap().problems,
        vec![ChainProblem::HeadMissing { last_seq: 6 }]
    );

    // A forged event #7, hashed and linked correctly, while the head says 6.
    let s = tampered(root, "verify-pasthead", 6).await;
    let (_, head_hash) = s.audit_head().await.unwrap().unwrap();
    forge_row(root, &s, 3, 7, &head_hash).await;
    assert_eq!(
        s.verify_audit().await.unwrap().problems,
        vec![ChainProblem::PastHead {
            first: 7,
            last: 7,
            head_seq: 6
        }]
    );

    // The head row's hash replaced.
    let s = tampered(root, "verify-headhash", 6).await;
    let other = s.audit_events(5, 1).await.unwrap().remove(0).hash;
    assert!(
        raw(
            root,
            "UPDATE audit_head SET hash = $1 WHERE tenant_id = $2",
            &[Bind::Text(&other), Bind::Text(s.tenant_id())]
        )
        .await
    );
    assert_eq!(
        s.verify_audit().await.unwrap().problems,
        vec![ChainProblem::HeadHashMismatch { seq: 6 }]
    );

    // Rows numbered -5 and 0.
    let s = tampered(root, "verify-negative", 4).await;
    forge_row(root, &s, 2, -5, GENESIS).await;
    forge_row(root, &s, 2, 0, GENESIS).await;
    let report = s.verify_audit().await.unwrap();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem::BadSeq {
                stored: "-5".into()
            },
            ChainProblem::BadSeq { stored: "0".into() },
        ]
    );
    assert_eq!(report.checked, 6);
    assert!(report.to_string().contains("a row numbered -5"), "{report}");
}

const GENESIS: &str = tsuzuku_audit::GENESIS_HASH;

/// Review finding: an unreadable row (an unknown kind, a detail that is not JSON, a time that
/// is not a number) stopped verification with "stored data is corrupt", and later problems went
/// unreported. Each is a finding naming its event, and the check goes on.
pub async fn audit_verify_reports_unreadable_rows_and_goes_on(root: &StoreRoot) {
    let s = tampered(root, "verify-unreadable", 8).await;
    let set = |col: &'static str, value: &'static str, seq: i64| {
        let tenant = s.tenant_id().to_owned();
        async move {
            raw(
                root,
                &format!("UPDATE audit_events SET {col} = $1 WHERE tenant_id = $2 AND seq = $3"),
                &[Bind::Text(value), Bind::Text(&tenant), Bind::Int(seq)],
            )
            .await
        }
    };
    assert!(set("kind", "bogus", 2).await);
    assert!(set("detail", "{\"app\":", 3).await);
    // SQLite keeps text in an integer column; PostgreSQL refuses it.
    let text_time = set("time_ms", "abc", 4).await;
    assert!(
        raw(
            root,
            "DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2",
            &[Bind::Text(s.tenant_id()), Bind::Int(6)]
        )
        .await
    );
    let report = s.verify_audit().await.unwrap();
    let p = &report.problems;
    assert!(
        matches!(&p[0], ChainProblem::Unreadable { seq: 2, reason } if reason.contains("bogus")),
        "{report}"
    );
    assert!(
        matches!(&p[1], ChainProblem::Unreadable { seq: 3, reason } if reason.contains("not JSON")),
        "{report}"
    );
    let rest = if text_time {
        assert!(
            matches!(&p[2], ChainProblem::Unreadable { seq: 4, reason } if reason.contains("time_ms is not an integer but \"abc\"")),
            "{report}"
        );
        &p[3..]
    } else {
        &p[2..]
    };
    assert_eq!(
        rest,
        [ChainProblem::Removed {
            after_seq: 5,
            missing_from: 6,
            missing_to: 6
        }],
        "{report}"
    );
    assert_eq!(report.checked, 7);

    // SQLite also keeps a seq that is no number: reported, and the rows after it still read.
    let s = tampered(root, "verify-textseq", 3).await;
    let (_, head_hash) = s.audit_head().await.unwrap().unwrap();
    if raw(
        root,
        "UPDATE audit_events SET seq = $1 WHERE tenant_id = $2 AND seq = $3",
        &[Bind::Text("abc"), Bind::Text(s.tenant_id()), Bind::Int(2)],
    )
    .await
    {
        forge_row(root, &s, 3, 4, &head_hash).await;
        assert_eq!(
            s.verify_audit().await.unwrap().problems,
            vec![
                ChainProblem::BadSeq {
                    stored: "\"abc\"".into()
                },
                ChainProblem::Removed {
                    after_seq: 1,
                    missing_from: 2,
                    missing_to: 2
                },
                ChainProblem::PastHead {
                    first: 4,
                    last: 4,
                    head_seq: 3
                },
            ]
        );
    }
}

/// Review finding: a detail stored as `{"app":"FORGED",…,"app":"app3"}` verified intact
/// (serde keeps the last key) while SQL's `json_extract` reads FORGED.
pub async fn audit_verify_flags_details_not_stored_canonically(root: &StoreRoot) {
    let s = tampered(root, "verify-dupkey", 4).await;
    let ev = s.audit_events(3, 1).await.unwrap().remove(0);
    let canonical = ev.event.detail.as_str();
    let forged = format!(
        "{{\"ctx\":\"FORGED\",{}",
        canonical.strip_prefix('{').unwrap()
    );
    assert!(
        raw(
            root,
            "UPDATE audit_events SET detail = $1 WHERE tenant_id = $2 AND seq = $3",
            &[Bind::Text(&forged), Bind::Text(s.tenant_id()), Bind::Int(3)],
        )
        .await
    );
    let report = s.verify_audit().await.unwrap();
    assert_eq!(
        report.problems,
        vec![ChainProblem::DetailNotCanonical { seq: 3 }],
        "{report}"
    );
    assert!(
        report.to_string().contains("event #3 was altered"),
        "{report}"
    );

    // The canonical text put back verifies again: the check is exact.
    assert!(
        raw(
            root,
            "UPDATE audit_events SET detail = $1 WHERE tenant_id = $2 AND seq = $3",
            &[
                Bind::Text(canonical),
                Bind::Text(s.tenant_id()),
                Bind::Int(3)
            ],
        )
        .await
    );
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
}

/// Verification reads one snapshot: events appended while it runs are neither reported past
/// the head nor make the head look removed.
pub async fn audit_verify_is_not_fooled_by_concurrent_appends(root: &StoreRoot) {
    let s = tampered(root, "verify-concurrent", 50).await;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                s.append_audit((0..5).map(|j| event(&s, 100 + i * 5 + j)).collect())
                    .await
                    .unwrap();
            }
        })
    };
    while !writer.is_finished() {
        let report = s.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report}");
    }
    writer.await.unwrap();
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.checked, 800);
}

/// Two independently opened roots (two processes, or two nodes) append to one tenant's
/// chain at the same time: the result is one intact chain holding every event once.
pub async fn audit_concurrent_writers_keep_one_chain(first: &StoreRoot, second: &StoreRoot) {
    let tenant = format!("audit-mw-{}", uuid::Uuid::new_v4());
    let stores = [first.tenant(&tenant), second.tenant(&tenant)];
    let mut tasks = Vec::new();
    let mut next = 0usize;
    let mut expected = 0usize;
    for w in 0..8 {
        let s = stores[w % 2].clone();
        let mut batches = Vec::new();
        for b in 0..20 {
            let size = 1 + (w + b) % 5;
            batches.push(
                (next..next + size)
                    .map(|i| event(&s, i))
                    .collect::<Vec<_>>(),
            );
            next += size;
            expected += size;
        }
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for batch in batches {
                let n = batch.len();
                let got = s.append_audit(batch).await.unwrap();
                assert_eq!(got.len(), n);
                assert!(
                    got.windows(2).all(|w| w[1] == w[0] + 1),
                    "a batch is contiguous"
                );
                seqs.extend(got);
            }
            seqs
        }));
    }
    let mut all_seqs = Vec::new();
    for t in tasks {
        all_seqs.extend(t.await.unwrap());
    }
    all_seqs.sort_unstable();
    assert_eq!(all_seqs, (1..=expected as i64).collect::<Vec<_>>());

    let store = &stores[0];
    let events = store.audit_events(1, 1_000_000).await.unwrap();
    assert_eq!(events.len(), expected);
    let ids: BTreeSet<i64> = events
        .iter()
        .map(|e| e.event.detail.to_value()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), expected, "every event exactly once");
    let report = verify(events);
    assert!(report.is_intact(), "{report}");
    let report = stores[1].verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.head.map(|h| h.0), Some(expected as i64));
}

/// [`StoreRoot`] as an audit backend routes each event to its tenant's chain, one
/// transaction per batch.
pub async fn audit_multi_tenant_batches(root: &StoreRoot) {
    let a = fresh_tenant(root, "audit-mt-a");
    let b = fresh_tenant(root, "audit-mt-b");
    let batch = vec![
        event(&a, 1),
        event(&b, 2),
        event(&a, 3),
        event(&b, 4),
        event(&a, 5),
    ];
    root.append_audit(batch).await.unwrap();
    let a_events = a.audit_events(1, 100).await.unwrap();
    let b_events = b.audit_events(1, 100).await.unwrap();
    let a_ids: Vec<i64> = a_events
        .iter()
        .map(|e| e.event.detail.to_value()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(a_ids, [1, 3, 5]);
    assert_eq!(b_events.len(), 2);
    assert!(a.verify_audit().await.unwrap().is_intact());
    assert!(b.verify_audit().await.unwrap().is_intact());
}

/// The group-commit writer over the store loses nothing under 2000 concurrent records.
pub async fn audit_writer_loses_nothing(root: &StoreRoot) {
    let s = fresh_tenant(root, "audit-writer");
    let (writer, task) = AuditWriter::spawn(s.clone(), 256);
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let w = writer.clone();
        let ev = event(&s, i);
        tasks.push(tokio::spawn(async move { w.record(ev).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    drop(writer);
    task.await.unwrap();
    let events = s.audit_events(1, 10_000).await.unwrap();
    assert_eq!(events.len(), 2000);
    let ids: BTreeSet<i64> = events
        .iter()
        .map(|e| e.event.detail.to_value()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..2000).collect::<BTreeSet<i64>>());
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");

    // Same through the all-tenants backend.
    let other = fresh_tenant(root, "audit-writer-root");
    let (writer, task) = AuditWriter::spawn(Arc::new(root.clone()), 64);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let w = writer.clone();
        let ev = event(if i % 2 == 0 { &s } else { &other }, 10_000 + i);
        tasks.push(tokio::spawn(async move { w.record(ev).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    drop(writer);
    task.await.unwrap();
    assert_eq!(s.audit_tail(1).await.unwrap()[0].seq, 2100);
    assert_eq!(other.audit_events(1, 1000).await.unwrap().len(), 100);
    assert!(s.verify_audit().await.unwrap().is_intact());
    assert!(other.verify_audit().await.unwrap().is_intact());
}

/// The chain is durable: closed and reopened, it verifies and continues where it ended.
pub async fn audit_survives_reopen(url: &str) {
    let tenant = format!("audit-reopen-{}", uuid::Uuid::new_v4());
    let root = StoreRoot::open(url).await.unwrap();
    let s = root.tenant(&tenant);
    s.append_audit((1..=20).map(|i| event(&s, i)).collect())
        .await
        .unwrap();
    let before = s.audit_events(1, 100).await.unwrap();
    root.close().await;
    assert!(
        s.audit_head().await.is_err(),
        "a closed store must refuse work"
    );

    let root = StoreRoot::open(url).await.unwrap();
    let s = root.tenant(&tenant);
    let after = s.audit_events(1, 100).await.unwrap();
    assert_eq!(after, before);
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(s.append_audit(vec![event(&s, 21)]).await.unwrap(), [21]);
    assert!(s.verify_audit().await.unwrap().is_intact());
    root.close().await;
}
