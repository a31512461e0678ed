#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::dns::{Fault, TestDns};

use super::*;
use crate::select::{Endpoint, Sample, SelectConfig, Site};
use crate::state::Clock;

const NAME: &str = "_tsuzuku-dr.example.test";

fn mode(internet: InternetMode, drill: bool) -> DrMode {
    DrMode {
        internet,
        until: 2_000,
        drill,
        issued_at: 1_000,
    }
}

#[test]
fn phases_follow_the_record_and_wait_for_a_healthy_site() {
    let on = mode(InternetMode::Closed, false);
    let cases = [
        (Phase::Normal, Some(on), false, Phase::Active(on)),
        (Phase::Normal, None, false, Phase::Normal),
        (Phase::Normal, None, true, Phase::Normal),
        (Phase::Active(on), None, false, Phase::Returning),
        (Phase::Active(on), None, true, Phase::Normal),
        (Phase::Returning, None, false, Phase::Returning),
        (Phase::Returning, None, true, Phase::Normal),
        (Phase::Returning, Some(on), true, Phase::Active(on)),
    ];
    for (prev, dr, healthy, want) in cases {
        assert_eq!(
            next_phase(&prev, dr, healthy),
            want,
            "{prev:?} {dr:?} {healthy}"
        );
    }
    assert_eq!(
        Phase::Active(mode(InternetMode::Open, true)).routing(),
        DrRouting::Active(InternetMode::Open)
    );
}

fn sites() -> Vec<Site> {
    vec![Site {
        name: "a".to_owned(),
        preference: 0,
        host: "gw.example.com".to_owned(),
        endpoints: vec!["127.0.0.1:9".parse().unwrap()],
    }]
}

fn mark_ok(state: &SiteState) {
    state.record(
        Endpoint {
            site: "a".to_owned(),
            addr: "127.0.0.1:9".parse().unwrap(),
        },
        Sample::ok(state.now(), Duration::from_millis(5)),
    );
}

#[test]
fn a_site_is_healthy_once_it_answered() {
    let state = SiteState::new(sites(), SelectConfig::default(), Clock::system()).unwrap();
    assert!(!normal_site_healthy(&state.selection()));
    mark_ok(&state);
    assert!(normal_site_healthy(&state.selection()));
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn record(
    k: &SigningKey,
    state: DrState,
    internet: Option<InternetMode>,
    issued_at: i64,
) -> Vec<String> {
    let f = RecordFields {
        state,
        internet,
        issued_at,
        not_before: issued_at - 300,
        not_after: issued_at + 3600,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    };
    split_strings(&sign(&f, k).unwrap())
}

async fn publish(dns: &TestDns, strings: &[String]) {
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt(NAME, &refs).await.unwrap();
}

/// A one-file HTTP server: answers every request with the current body (or 404 when none).
struct ListServer {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    _task: AbortOnDrop,
}

impl ListServer {
    async fn start() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/allowlist.txt", l.local_addr().unwrap());
        let body: Arc<Mutex<Option<String>>> = Arc::default();
        let b = body.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let b = b.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let resp = match b {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            body,
            _task: AbortOnDrop(task),
        }
    }

    fn set(&self, body: Option<String>) {
        *self.body.lock().unwrap() = body;
    }
}

async fn wait_for(w: &DrWatcher, what: &str, f: impl Fn(&DrStatus) -> bool) -> Arc<DrStatus> {
    let start = Instant::now();
    loop {
        let s = w.status();
        if f(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(dns: &TestDns, k: &SigningKey, dir: &Path, list_url: &str) -> DrConfig {
    let mut trusted = TrustedKeys::new();
    trusted.insert(k.verifying_key()).unwrap();
    let mut c = DrConfig::new(
        NAME,
        Transport::UdpTcp(dns.addr()),
        trusted,
        DrGateway {
            host: "dr.example.com".to_owned(),
            endpoints: vec!["127.0.0.1:9".parse().unwrap()],
        },
    );
    c.interval = Duration::from_millis(200);
    c.lookup_timeout = Duration::from_millis(150);
    c.state_file = Some(dir.join("dr-state.json"));
    c.allowlist_cache = Some(dir.join("dr-state.json.allowlist"));
    c.allowlist_source = Some(ListSource::http(list_url).unwrap());
    c.allowlist_refresh = Duration::from_millis(200);
    c.allow = vec!["own.example.org".to_owned()];
    c.critical_hosts = vec!["crm.example.com".to_owned()];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_the_record_keeps_it_across_restarts_and_ignores_forgeries() {
    let dns = TestDns::start("example.test").await.unwrap();
    let lists = ListServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let k = key(11);
    let state = SiteState::new(sites(), SelectConfig::default(), Clock::system()).unwrap();
    let w = DrWatcher::start(config(&dns, &k, tmp.path(), &lists.url), state.clone()).unwrap();

    // No record: normal; the list URL answers 404, which is reported.
    let s = wait_for(&w, "first check", |s| {
        s.last_check.is_some() && s.list.last_error.is_some()
    })
    .await;
    assert_eq!(s.phase, Phase::Normal);
    assert!(
        s.last_check.as_ref().unwrap().outcome.contains("NXDOMAIN"),
        "{s}"
    );
    assert!(s.list.last_error.as_ref().unwrap().contains("404"), "{s}");
    assert_eq!(s.allowlist.len(), 1, "only the customer's own entry");

    // A forged `on` record changes nothing and is reported.
    publish(
        &dns,
        &record(&key(12), DrState::On, Some(InternetMode::Open), now()),
    )
    .await;
    let s = wait_for(&w, "forgery reported", |s| {
        s.last_check
            .as_ref()
            .is_some_and(|c| !c.rejections.is_empty())
    })
    .await;
    assert_eq!(s.phase, Phase::Normal, "{s}");
    assert!(s.to_string().contains("not trusted"), "{s}");

    // The real one: DR mode, controlled; the signed allowlist is fetched.
    let t = now();
    publish(
        &dns,
        &record(&k, DrState::On, Some(InternetMode::Controlled), t),
    )
    .await;
    lists.set(Some(
        internet::sign_list(t, &["*.microsoft.com", "192.0.2.7"], &k).unwrap(),
    ));
    let s = wait_for(&w, "DR mode and the list", |s| {
        s.active() && s.list.issued_at.is_some()
    })
    .await;
    assert!(
        matches!(s.phase, Phase::Active(m) if m.internet == InternetMode::Controlled && !m.drill)
    );
    assert!(s.allowlist.matches("www.microsoft.com") && s.allowlist.matches("own.example.org"));
    assert_eq!(s.list.patterns, 2);
    assert!(s.to_string().contains("disaster recovery: ACTIVE"), "{s}");
    assert!(tmp.path().join("dr-state.json").exists());
    assert!(tmp.path().join("dr-state.json.allowlist").exists());

    // A list with a bad signature is refused and the good one stays.
    let forged = internet::sign_list(t + 1, &["evil.test"], &key(12)).unwrap();
    lists.set(Some(forged));
    let s = wait_for(&w, "bad list reported", |s| {
        s.list
            .last_error
            .as_ref()
            .is_some_and(|e| e.contains("not trusted"))
    })
    .await;
    assert!(!s.allowlist.matches("evil.test") && s.allowlist.matches("192.0.2.7"));

    // SERVFAIL and silence: the last verified state stands.
    dns.set_fault(Fault::ServFail);
    let s = wait_for(&w, "SERVFAIL seen", |s| {
        s.last_check
            .as_ref()
            .is_some_and(|c| c.outcome.contains("SERVFAIL"))
    })
    .await;
    assert!(s.active(), "{s}");
    dns.set_fault(Fault::Silent);
    let s = wait_for(&w, "timeout seen", |s| {
        s.last_check
            .as_ref()
            .is_some_and(|c| !c.answered && !c.outcome.contains("SERVFAIL"))
    })
    .await;
    assert!(s.active(), "{s}");

    // A restart while DNS is silent starts in DR mode from the state file, with the cached list.
    drop(w);
    let w = DrWatcher::start(config(&dns, &k, tmp.path(), &lists.url), state.clone()).unwrap();
    let s = w.status();
    assert!(s.active(), "{s}");
    assert!(s.allowlist.matches("www.microsoft.com"), "{s}");

    // Withdrawn: returning while no normal site is healthy, then normal.
    dns.set_fault(Fault::None);
    dns.remove_txt(NAME).await.unwrap();
    let s = wait_for(&w, "returning", |s| s.phase == Phase::Returning).await;
    assert!(s.to_string().contains("RETURNING"), "{s}");
    mark_ok(&state);
    wait_for(&w, "normal", |s| s.phase == Phase::Normal).await;

    // A signed `off` ends DR mode for good: the older `on`, published again, is a replay.
    publish(&dns, &record(&k, DrState::Off, None, t + 10)).await;
    wait_for(&w, "off seen", |s| {
        s.last_check
            .as_ref()
            .is_some_and(|c| c.outcome.contains("off"))
    })
    .await;
    publish(&dns, &record(&k, DrState::On, Some(InternetMode::Open), t)).await;
    let s = wait_for(&w, "replay refused", |s| {
        s.last_check
            .as_ref()
            .is_some_and(|c| c.rejections.iter().any(|r| r.contains("replayed")))
    })
    .await;
    assert_eq!(s.phase, Phase::Normal, "{s}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    let dns = TestDns::start("example.test").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let k = key(1);
    let state = SiteState::new(sites(), SelectConfig::default(), Clock::system()).unwrap();
    let base = || config(&dns, &k, tmp.path(), "http://127.0.0.1:9/list");
    let mut c = base();
    c.trusted = TrustedKeys::new();
    assert!(matches!(
        DrWatcher::start(c, state.clone()),
        Err(DrError::NoKeys)
    ));
    let mut c = base();
    c.gateway.endpoints.clear();
    assert!(matches!(
        DrWatcher::start(c, state.clone()),
        Err(DrError::NoGatewayAddress(_))
    ));
    let mut c = base();
    c.allow = vec!["a.*.example.com".to_owned()];
    let e = DrWatcher::start(c, state.clone()).unwrap_err();
    assert!(e.to_string().contains("allowlist entry"), "{e}");
    let mut c = base();
    c.critical_hosts = vec!["bad host".to_owned()];
    assert!(matches!(
        DrWatcher::start(c, state.clone()),
        Err(DrError::Critical(_))
    ));
    assert!(ListSource::http("ftp://example.com/list").is_err());
    let mut c = base();
    c.interval = Duration::ZERO;
    assert!(matches!(
        DrWatcher::start(c, state.clone()),
        Err(DrError::Setting { .. })
    ));
    // An edited state file is refused, reported, and the connector starts without it.
    std::fs::write(
        tmp.path().join("dr-state.json"),
        "{\"format\":\"tsuzuku-dr-state/1\",\"record\":\"v=TSZDR1; s=on\",\"withdrawn_at\":null}",
    )
    .unwrap();
    let w = DrWatcher::start(base(), state).unwrap();
    let s = w.status();
    assert_eq!(s.phase, Phase::Normal);
    assert!(s.state_file_error.is_some(), "{s}");
}

#[tokio::test]
async fn new_targets_replace_the_gateway_and_critical_hosts_together() {
    let dns = TestDns::start("example.test").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let k = key(2);
    let state = SiteState::new(sites(), SelectConfig::default(), Clock::system()).unwrap();
    let mut c = config(&dns, &k, tmp.path(), "http://127.0.0.1:9/list");
    c.watch_network = false;
    let w = DrWatcher::start(c, state).unwrap();
    let mut rx = w.subscribe();
    let _ = rx.borrow_and_update();
    let before = w.status().targets.clone();
    assert!(before.critical.matches("crm.example.com"));
    assert!(!before.critical.matches("payroll.example.com"));

    let gw = DrGateway {
        host: "dr2.example.com".to_owned(),
        endpoints: vec!["127.0.0.1:10".parse().unwrap()],
    };
    let hosts = vec![
        "crm.example.com".to_owned(),
        "payroll.example.com".to_owned(),
    ];
    assert!(w.set_targets(gw.clone(), hosts.clone()).unwrap());
    // One change, seen by subscribers (the proxy's tunnels), with both parts in it.
    assert!(rx.has_changed().unwrap());
    let t = rx.borrow_and_update().targets.clone();
    assert_eq!(t.gateway, gw);
    assert!(t.critical.matches("payroll.example.com"));
    assert_eq!(
        t.to_string(),
        "DR gateway dr2.example.com at 127.0.0.1:10; critical apps: crm.example.com, payroll.example.com"
    );
    assert!(w.status().to_string().contains(&t.to_string()));
    // The same again: no change (the lookups go on changing the rest of the status).
    assert!(!w.set_targets(gw.clone(), hosts.clone()).unwrap());
    assert!(Arc::ptr_eq(&w.status().targets, &t));
    // Unusable ones change nothing.
    let none = DrGateway {
        host: "dr3.example.com".to_owned(),
        endpoints: vec![],
    };
    assert!(matches!(
        w.set_targets(none, hosts),
        Err(DrError::NoGatewayAddress(_))
    ));
    assert!(matches!(
        w.set_targets(gw, vec!["bad host".to_owned()]),
        Err(DrError::Critical(_))
    ));
    assert!(Arc::ptr_eq(&w.status().targets, &t));
}
