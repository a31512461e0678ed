//! The DR watcher (`tsuzuku_connector::dr`) with its signed allowlist in an S3-compatible bucket
//! (moto, started and stopped by the test): the fetched list is in force in `controlled` mode, a
//! list with a bad signature is reported while the good one stays, and a restarted watcher with
//! wrong credentials keeps the cached good list.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use tsuzuku_connector::internet::fetch::{ListSource, S3Credentials, S3Object};
use tsuzuku_connector::internet::sign_list;
use tsuzuku_dr::TrustedKeys;
use tsuzuku_testkit::s3::TestS3;

const KEY: &str = "dr/allowlist.txt";

fn dr_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn trusted() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.insert(dr_key().verifying_key()).unwrap();
    t
}

fn source(s3: &TestS3, key: &str, id: &str, secret: &str) -> ListSource {
    ListSource::S3(
        S3Object::new(
            &format!("s3://{}/{key}", s3.bucket()),
            s3.endpoint(),
            s3.region(),
            S3Credentials::new(id, secret, None, "the test's credentials"),
        )
        .unwrap(),
    )
}

fn good_source(s3: &TestS3) -> ListSource {
    source(s3, KEY, s3.access_key_id(), s3.secret_access_key())
}

/// Starts moto with the bucket and a good list (issued at 100, allowing *.allowed.example).
async fn s3_with_good_list() -> TestS3 {
    let s3 = TestS3::start("dr-lists").await.unwrap();
    let list = sign_list(100, &["*.allowed.example", "192.0.2.7"], &dr_key()).unwrap();
    s3.put_object(KEY, list.as_bytes()).await.unwrap();
    s3
}

/// The DR watcher with an S3 source: in `controlled` mode the fetched list is in force, a list
/// with a bad signature is reported and the good one stays, and a restarted watcher with wrong
/// credentials keeps the cached good list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dr_watcher_fetches_the_list_from_the_bucket_and_keeps_the_last_good_one() {
    use std::sync::Arc;
    use std::time::Instant;
    use tsuzuku_connector::dr::{DrConfig, DrGateway, DrStatus, DrWatcher, Phase};
    use tsuzuku_connector::select::{SelectConfig, Site};
    use tsuzuku_connector::state::{Clock, SiteState};
    use tsuzuku_dr::lookup::Transport;
    use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
    use tsuzuku_testkit::dns::TestDns;

    async fn wait(w: &DrWatcher, what: &str, f: impl Fn(&DrStatus) -> bool) -> Arc<DrStatus> {
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

    let s3 = s3_with_good_list().await;
    let dns = TestDns::start("example.test").await.unwrap();
    let t = jiff::Timestamp::now().as_second();
    let record = sign(
        &RecordFields {
            state: DrState::On,
            internet: Some(InternetMode::Controlled),
            issued_at: t,
            not_before: t - 300,
            not_after: t + 3600,
            groups: Default::default(),
            devices: Default::default(),
        },
        &dr_key(),
    )
    .unwrap();
    let strings = split_strings(&record);
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt("_tsuzuku-dr.example.test", &refs)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = |src: ListSource| {
        let mut c = DrConfig::new(
            "_tsuzuku-dr.example.test",
            Transport::UdpTcp(dns.addr()),
            trusted(),
            DrGateway {
                host: "dr.example.com".to_owned(),
                endpoints: vec!["127.0.0.1:9".parse().unwrap()],
            },
        );
        c.interval = Duration::from_millis(200);
        c.lookup_timeout = Duration::from_millis(150);
        c.allowlist_cache = Some(tmp.path().join("allowlist"));
        c.allowlist_refresh = Duration::from_millis(200);
        c.allowlist_source = Some(src);
        c.watch_network = false;
        c
    };
    let state = SiteState::new(
        vec![Site {
            name: "a".to_owned(),
            preference: 0,
            host: "gw.example.com".to_owned(),
            endpoints: vec!["127.0.0.1:9".parse().unwrap()],
        }],
        SelectConfig::default(),
        Clock::system(),
    )
    .unwrap();

    let w = DrWatcher::start(config(good_source(&s3)), state.clone()).unwrap();
    let s = wait(&w, "list fetched", |s| s.list.issued_at == Some(100)).await;
    assert!(matches!(s.phase, Phase::Active(_)), "{s}");
    assert!(s.allowlist.matches("www.allowed.example"), "{s}");
    assert!(!s.allowlist.matches("evil.example"), "{s}");

    let forged = sign_list(300, &["*.allowed.example"], &dr_key())
        .unwrap()
        .replacen(
            "*.allowed.example\n",
            "*.allowed.example\nevil.example\n",
            1,
        );
    s3.put_object(KEY, forged.as_bytes()).await.unwrap();
    let s = wait(&w, "forgery reported", |s| {
        s.list
            .last_error
            .as_ref()
            .is_some_and(|e| e.contains("altered or forged"))
    })
    .await;
    assert_eq!(s.list.issued_at, Some(100));
    assert!(!s.allowlist.matches("evil.example"), "{s}");
    drop(w);

    let wrong = source(&s3, KEY, s3.access_key_id(), "wrong secret");
    let w = DrWatcher::start(config(wrong), state).unwrap();
    let s = wait(&w, "credentials refused", |s| {
        s.list
            .last_error
            .as_ref()
            .is_some_and(|e| e.contains("SignatureDoesNotMatch"))
    })
    .await;
    assert_eq!(s.list.issued_at, Some(100), "cached good list: {s}");
    assert!(s.allowlist.matches("www.allowed.example"), "{s}");
    assert!(!s.to_string().contains("wrong secret"), "{s}");
    s3.stop().await;
}
