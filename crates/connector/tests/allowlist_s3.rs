//! The signed DR allowlist fetched from a real S3-compatible server (moto, started and stopped
//! by each test) with requests signed with AWS Signature V4: a good list is fetched and used; a
//! list with a bad signature, wrong credentials and a missing object are refused with clear
//! errors while the last good list stands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use tsuzuku_connector::internet::fetch::{
    FetchError, ListFetcher, ListSource, S3Credentials, S3Object,
};
use tsuzuku_connector::internet::{HostSet, ListError, sign_list};
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

fn fetcher(src: ListSource) -> ListFetcher {
    ListFetcher::new(src, trusted(), None, Duration::from_secs(5)).unwrap()
}

/// Starts moto with the bucket and a good list (issued at 100, allowing *.allowed.example).
async fn s3_with_good_list() -> TestS3 {
    let s3 = TestS3::start("dr-lists").await.unwrap();
    let list = sign_list(100, &["*.allowed.example", "192.0.2.7"], &dr_key()).unwrap();
    s3.put_object(KEY, list.as_bytes()).await.unwrap();
    s3
}

#[tokio::test]
async fn a_good_list_is_fetched_from_the_bucket_and_used() {
    let s3 = s3_with_good_list().await;
    let mut f = fetcher(good_source(&s3));
    let got = f.refresh().await.unwrap();
    assert_eq!(got.list.issued_at, 100);
    assert_eq!(
        got.bytes,
        sign_list(100, &["*.allowed.example", "192.0.2.7"], &dr_key())
            .unwrap()
            .as_bytes()
    );
    // What the `controlled` mode enforces: the customer's own entries and the signed list.
    let own = HostSet::parse(&["own.example.org"]).unwrap();
    let allow = own.union(&f.held().unwrap().hosts);
    for host in ["www.allowed.example", "192.0.2.7", "own.example.org"] {
        assert!(allow.matches(host), "{host} should be allowed");
    }
    for host in ["allowed.example", "evil.example", "192.0.2.8"] {
        assert!(!allow.matches(host), "{host} should be refused");
    }
    // A newer list replaces it at the next refresh.
    let newer = sign_list(200, &["*.newer.example"], &dr_key()).unwrap();
    s3.put_object(KEY, newer.as_bytes()).await.unwrap();
    let got = f.refresh().await.unwrap();
    assert_eq!(got.list.issued_at, 200);
    assert!(f.held().unwrap().hosts.matches("a.newer.example"));
    assert!(!f.held().unwrap().hosts.matches("www.allowed.example"));
    s3.stop().await;
}

#[tokio::test]
async fn a_list_with_a_bad_signature_is_refused_and_the_last_good_list_stands() {
    let s3 = s3_with_good_list().await;
    let mut f = fetcher(good_source(&s3));
    f.refresh().await.unwrap();
    // Someone with write access to the bucket adds a destination to a newer list.
    let forged = sign_list(300, &["*.allowed.example"], &dr_key())
        .unwrap()
        .replacen(
            "*.allowed.example\n",
            "*.allowed.example\nexfil.example\n",
            1,
        );
    s3.put_object(KEY, forged.as_bytes()).await.unwrap();
    let e = f.refresh().await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::List {
                source: ListError::BadSignature { .. },
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("s3://dr-lists/dr/allowlist.txt"), "{msg}");
    assert!(msg.contains("altered or forged"), "{msg}");
    let held = f.held().unwrap();
    assert_eq!(held.issued_at, 100);
    assert!(!held.hosts.matches("exfil.example"));
    // An older (replayed) list is refused too.
    let old = sign_list(50, &["old.example"], &dr_key()).unwrap();
    s3.put_object(KEY, old.as_bytes()).await.unwrap();
    let e = f.refresh().await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::List {
                source: ListError::Replayed { .. },
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(f.held().unwrap().issued_at, 100);
    s3.stop().await;
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_error_and_the_last_good_list_stands() {
    let s3 = s3_with_good_list().await;
    let good = fetcher(good_source(&s3)).refresh().await.unwrap().list;
    // The right access key id with a wrong secret: the server finds the signature wrong.
    let wrong_secret = "not-the-secret-at-all";
    let mut f = ListFetcher::new(
        source(&s3, KEY, s3.access_key_id(), wrong_secret),
        trusted(),
        Some(good.clone()),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = f.refresh().await.unwrap_err();
    let FetchError::S3 { code, status, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        (code.as_str(), *status),
        ("SignatureDoesNotMatch", 403),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("secret access key from the test's credentials is wrong"),
        "{msg}"
    );
    assert!(
        !msg.contains(wrong_secret) && !msg.contains(s3.access_key_id()),
        "{msg}"
    );
    assert_eq!(f.held(), Some(&good));
    // An access key id the server does not know.
    let unknown_id = "AKIAUNKNOWNKEY000000";
    let mut f = ListFetcher::new(
        source(&s3, KEY, unknown_id, s3.secret_access_key()),
        trusted(),
        Some(good.clone()),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = f.refresh().await.unwrap_err();
    let FetchError::S3 { code, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(code, "InvalidAccessKeyId", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("does not know the access key id from the test's credentials"),
        "{msg}"
    );
    assert!(
        !msg.contains(unknown_id) && !msg.contains(s3.secret_access_key()),
        "{msg}"
    );
    assert_eq!(f.held(), Some(&good));
    s3.stop().await;
}

#[tokio::test]
async fn a_missing_object_or_bucket_gives_a_clear_error() {
    let s3 = s3_with_good_list().await;
    let mut f = fetcher(source(
        &s3,
        "dr/no-such-list.txt",
        s3.access_key_id(),
        s3.secret_access_key(),
    ));
    let e = f.refresh().await.unwrap_err();
    let FetchError::S3 { code, status, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!((code.as_str(), *status), ("NoSuchKey", 404), "{e}");
    assert!(
        e.to_string()
            .contains("there is no object \"dr/no-such-list.txt\" in bucket dr-lists"),
        "{e}"
    );
    assert!(f.held().is_none());
    // The list removed after a good fetch: the good list stands.
    let mut f = fetcher(good_source(&s3));
    f.refresh().await.unwrap();
    s3.delete_object(KEY).await.unwrap();
    let e = f.refresh().await.unwrap_err();
    assert!(
        matches!(&e, FetchError::S3 { code, .. } if code == "NoSuchKey"),
        "{e}"
    );
    assert_eq!(f.held().unwrap().issued_at, 100);
    // A bucket that does not exist.
    let other = ListSource::S3(
        S3Object::new(
            "s3://no-such-bucket/x.txt",
            s3.endpoint(),
            s3.region(),
            S3Credentials::new(s3.access_key_id(), s3.secret_access_key(), None, "t"),
        )
        .unwrap(),
    );
    let e = fetcher(other).refresh().await.unwrap_err();
    assert!(
        matches!(&e, FetchError::S3 { code, .. } if code == "NoSuchBucket"),
        "{e}"
    );
    assert!(e.to_string().contains("no bucket no-such-bucket"), "{e}");
    s3.stop().await;
}
