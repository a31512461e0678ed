#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use tsuzuku_snapshot::{TrustedKeys, verify};
use tsuzuku_store::{NewApp, StoreRoot};

use crate::server::parse_poll;
use crate::*;

async fn store() -> (tempfile::TempDir, tsuzuku_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let s = StoreRoot::open(&url).await.unwrap().tenant("default");
    (dir, s)
}

#[tokio::test]
async fn publishes_a_new_signed_version_only_when_something_changed() {
    let (_d, s) = store().await;
    // Without an assertion key there is nothing a gateway could sign with.
    let err = Publisher::new(s.clone()).await.unwrap_err();
    assert!(matches!(err, ControlError::NoAssertionKey), "{err}");
    s.put_key("a1", "assertion", "PEM".into(), "{}".into(), 1)
        .await
        .unwrap();
    let p = Publisher::new(s.clone()).await.unwrap();
    let trusted = TrustedKeys::from_pem(&p.public_pem().unwrap()).unwrap();
    let first = p.current().unwrap();
    let v = verify(&first.bytes, &trusted, "default", None).unwrap();
    assert!(v.body.apps.is_empty());
    assert_eq!(v.body.assertion_keys[0].kid, "a1");
    assert!(!p.refresh().await.unwrap(), "nothing changed");
    s.create_app(
        NewApp {
            name: "wiki".into(),
            host: "wiki.example".into(),
            upstream: "http://127.0.0.1:9".into(),
            data_class: "internal".into(),
            critical: true,
            isolated: false,
        },
        2,
    )
    .await
    .unwrap();
    let mut rx = p.subscribe();
    rx.borrow_and_update();
    assert!(p.refresh().await.unwrap());
    assert!(rx.has_changed().unwrap());
    let second = p.current().unwrap();
    assert!(second.version > first.version);
    let v2 = verify(&second.bytes, &trusted, "default", Some(first.version)).unwrap();
    assert_eq!(v2.body.apps[0].host, "wiki.example");
    // The signing key is kept in the store: a restarted control plane signs with the same key.
    let again = Publisher::new(s.clone()).await.unwrap();
    assert_eq!(again.kid(), p.kid());
}

#[test]
fn poll_queries_are_checked() {
    let max = Duration::from_secs(60);
    let p = parse_poll("node=gw-1&after=5&wait=3", max).unwrap();
    assert_eq!(p.node, "gw-1");
    assert_eq!(p.after, Some(5));
    assert_eq!(p.wait, Duration::from_secs(3));
    assert_eq!(p.role, "gateway");
    assert_eq!(
        parse_poll("node=a&wait=999", max).unwrap().wait,
        Duration::from_secs(60)
    );
    for bad in [
        "",
        "after=1",
        "node=",
        "node=a%20b",
        "node=a&after=x",
        "node=a&wait=-1",
        "node=a&color=red",
    ] {
        assert!(parse_poll(bad, max).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn tokens_compare_whole() {
    use crate::server::tokens_equal_for_tests as eq;
    assert!(eq("abc", "abc"));
    assert!(!eq("abd", "abc"));
    assert!(!eq("ab", "abc"));
    assert!(!eq("", ""));
}

#[tokio::test]
async fn publishes_the_site_list_and_a_new_version_on_exclusion() {
    use tsuzuku_snapshot::verify_sites;
    use tsuzuku_store::{GatewaySite, SiteExclusion};
    let (_d, s) = store().await;
    s.put_key("a1", "assertion", "PEM".into(), "{}".into(), 1)
        .await
        .unwrap();
    s.add_gateway_site(&GatewaySite {
        name: "tokyo".into(),
        host: "gw.example".into(),
        endpoints: vec!["192.0.2.1:443".into()],
        preference: 1,
        capacity_rps: None,
        dr: false,
        created_at: 1,
    })
    .await
    .unwrap();
    let p = Publisher::new(s.clone()).await.unwrap();
    let trusted = TrustedKeys::from_pem(&p.public_pem().unwrap()).unwrap();
    let first = p.current_sites().unwrap();
    let v = verify_sites(&first.bytes, &trusted, "default", None).unwrap();
    assert_eq!(v.body.sites[0].name, "tokyo");
    assert!(v.body.exclusions.is_empty());
    let far = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    s.exclude_gateway_site(&SiteExclusion {
        site: "tokyo".into(),
        until_ms: far,
        reason: "maintenance".into(),
        created_by: "test".into(),
        created_at_ms: 1,
    })
    .await
    .unwrap();
    assert!(p.refresh().await.unwrap());
    let second = p.current_sites().unwrap();
    let v = verify_sites(&second.bytes, &trusted, "default", Some(first.version)).unwrap();
    assert_eq!(v.body.exclusions[0].until_ms, far);
}

#[test]
fn site_poll_queries_are_checked() {
    use crate::server::parse_sites_poll;
    let max = Duration::from_secs(60);
    assert_eq!(
        parse_sites_poll("after=3&wait=2", max).unwrap(),
        (Some(3), Duration::from_secs(2))
    );
    assert!(parse_sites_poll("after=x", max).is_err());
    assert!(parse_sites_poll("node=a", max).is_err());
}

#[tokio::test]
async fn only_dr_gateways_get_credential_verifiers() {
    use tsuzuku_store::NewUser;
    let (_d, s) = store().await;
    s.put_key("a1", "assertion", "PEM".into(), "{}".into(), 1)
        .await
        .unwrap();
    s.create_user(
        NewUser {
            username: "alice".into(),
            display_name: "Alice".into(),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
            groups: vec!["staff".into()],
            ..NewUser::default()
        },
        1,
    )
    .await
    .unwrap();
    let p = Publisher::new(s.clone()).await.unwrap();
    let trusted = TrustedKeys::from_pem(&p.public_pem().unwrap()).unwrap();
    let ordinary = p.current().unwrap();
    let text = String::from_utf8_lossy(&ordinary.bytes).into_owned();
    let v = verify(&ordinary.bytes, &trusted, "default", None).unwrap();
    assert!(v.body.credentials.is_empty());
    assert!(!text.contains("argon2"));
    let dr = p.subscribe_dr().borrow().clone().unwrap();
    assert_eq!(dr.version, ordinary.version);
    let v = verify(&dr.bytes, &trusted, "default", None).unwrap();
    assert_eq!(
        v.body.credentials[0].totp_secret.as_deref(),
        Some("JBSWY3DPEHPK3PXP")
    );
}

#[test]
fn reports_are_checked() {
    use crate::server::parse_report;
    let (r, dr) = parse_report(
        br#"{"device":"laptop-1","site":"tokyo","latency_ms":12,"loss_pct":0,"switches":2}"#,
        5,
    )
    .unwrap();
    assert_eq!(dr, None);
    assert_eq!(r.device, "laptop-1");
    assert_eq!(r.reported_ms, 5);
    for bad in [
        &br#"{"device":"","site":null}"#[..],
        br#"{"device":"a b"}"#,
        br#"{"device":"a","latency_ms":-1}"#,
        br#"{"device":"a","loss_pct":101}"#,
        br#"{"device":"a","extra":1}"#,
        br#"not json"#,
    ] {
        assert!(
            parse_report(bad, 0).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_site_over_its_threshold_sheds_and_says_whether_the_others_can_absorb_it() {
    use crate::publish::{NodeLoad, shedding};
    use tsuzuku_store::GatewaySite;
    let site = |name: &str, cap: Option<i64>| GatewaySite {
        name: name.into(),
        host: "gw".into(),
        endpoints: vec![],
        preference: 1,
        capacity_rps: cap,
        dr: false,
        created_at: 0,
    };
    let load = |site: &str, rps: f64, at_ms: i64| NodeLoad {
        site: site.into(),
        rps,
        at_ms,
    };
    let now = 100_000;
    let sites = [
        site("tokyo", Some(1000)),
        site("osaka", Some(1000)),
        site("nagoya", None),
    ];
    // Two nodes of tokyo add up to 95 %: tokyo sheds; osaka has 800 spare < 950: cannot absorb.
    let loads = [
        load("tokyo", 500.0, now),
        load("tokyo", 450.0, now - 5_000),
        load("osaka", 200.0, now),
        load("tokyo", 10_000.0, now - 60_000), // stale: ignored
    ];
    let shed = shedding(&sites, &[], &loads, now);
    assert_eq!(shed.len(), 1);
    assert_eq!(shed[0].site, "tokyo");
    assert_eq!(shed[0].load_pct, 95);
    assert!(!shed[0].others_can_absorb);
    assert!(shed[0].until_ms > now + 9_000 && shed[0].until_ms <= now + 15_000);
    // With osaka idle, it can.
    let loads = [load("tokyo", 950.0, now)];
    assert!(shedding(&sites, &[], &loads, now)[0].others_can_absorb);
    // An excluded site's capacity does not count.
    assert!(!shedding(&sites, &["osaka".into()], &loads, now)[0].others_can_absorb);
    // Under the threshold, or without a known capacity: no hint.
    assert!(shedding(&sites, &[], &[load("tokyo", 899.0, now)], now).is_empty());
    assert!(shedding(&sites, &[], &[load("nagoya", 1e6, now)], now).is_empty());
}

#[test]
fn load_reports_are_checked() {
    use crate::server::parse_load;
    let (node, l) = parse_load(br#"{"node":"gw-1","site":"tokyo","rps":12.5}"#, 7).unwrap();
    assert_eq!(node, "gw-1");
    assert_eq!(l.site, "tokyo");
    assert_eq!(l.at_ms, 7);
    for bad in [
        &br#"{"node":"gw-1","site":"tokyo","rps":-1}"#[..],
        br#"{"node":"gw 1","site":"tokyo","rps":1}"#,
        br#"{"node":"gw-1","rps":1}"#,
        br#"{"node":"gw-1","site":"t","rps":1e12}"#,
    ] {
        assert!(
            parse_load(bad, 0).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[tokio::test]
async fn the_dr_gateway_and_critical_apps_travel_in_the_site_list() {
    use tsuzuku_snapshot::verify_sites;
    use tsuzuku_store::GatewaySite;
    let (_d, s) = store().await;
    s.put_key("a1", "assertion", "PEM".into(), "{}".into(), 1)
        .await
        .unwrap();
    for (name, dr) in [("tokyo", false), ("dr", true)] {
        s.add_gateway_site(&GatewaySite {
            name: name.into(),
            host: format!("{name}.gw.example"),
            endpoints: vec!["192.0.2.1:443".into()],
            preference: 1,
            capacity_rps: None,
            dr,
            created_at: 1,
        })
        .await
        .unwrap();
    }
    for (name, critical) in [("payroll", true), ("wiki", false)] {
        s.create_app(
            NewApp {
                name: name.into(),
                host: format!("{name}.example"),
                upstream: "http://127.0.0.1:9".into(),
                data_class: "internal".into(),
                critical,
                isolated: false,
            },
            2,
        )
        .await
        .unwrap();
    }
    let p = Publisher::new(s.clone()).await.unwrap();
    let trusted = TrustedKeys::from_pem(&p.public_pem().unwrap()).unwrap();
    let v = verify_sites(&p.current_sites().unwrap().bytes, &trusted, "default", None).unwrap();
    let names: Vec<&str> = v.body.sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tokyo"], "the DR gateway is never a normal site");
    assert_eq!(v.body.dr_gateway.unwrap().host, "dr.gw.example");
    assert_eq!(v.body.critical_hosts, ["payroll.example"]);
    // Named, the sign-in portal is a critical host too: people sign in there in DR mode.
    let p = Publisher::with_portal_host(s.clone(), Some("auth.example:443".into()))
        .await
        .unwrap();
    let trusted = TrustedKeys::from_pem(&p.public_pem().unwrap()).unwrap();
    let v = verify_sites(&p.current_sites().unwrap().bytes, &trusted, "default", None).unwrap();
    assert_eq!(
        v.body.critical_hosts,
        ["payroll.example", "auth.example:443"]
    );
}
