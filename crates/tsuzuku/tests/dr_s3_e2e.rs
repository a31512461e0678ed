//! The `controlled` internet mode's signed allowlist from an S3-compatible bucket, end to end:
//! a real S3-compatible server (moto, started and stopped by the test, checking every request's
//! AWS Signature V4), a real DNS server (hickory-server, in-process) with the DR record, and the
//! real `tsuzuku connect` process with `--dr-allowlist-url s3://…`. A good list is fetched and
//! enforced; a list with a bad signature, wrong credentials and a missing object are each
//! reported clearly in `connect status` while the last good list stands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tsuzuku_connector::internet::sign_list;
use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::connect::{Connector, connect_status};
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::s3::TestS3;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const NAME: &str = "_tsuzuku-dr.example.test";
const KEY: &str = "dr/allowlist.txt";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Waits until `connect status` contains every one of `parts`.
async fn wait_status(c: &Connector, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let st = c.status().unwrap();
        if parts.iter().all(|p| st.contains(p)) {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "status never showed {parts:?}:\n{st}\nstderr: {:?}",
            c.stderr.lines()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connector(
    dir: &Path,
    dns: &TestDns,
    s3: &TestS3,
    public: &Path,
    location: &str,
    credentials: &Path,
    allow_port: u16,
) -> Connector {
    Connector::start(
        tokio::process::Command::new(BIN)
            .args(["connect", "--listen", "127.0.0.1:0"])
            .args(["--site", "a=localhost@127.0.0.1:9"])
            .args(["--app-domain", "localhost"])
            .args(["--allow-port", &allow_port.to_string()])
            .args(["--dr-record", NAME, "--dr-dns", &dns.addr().to_string()])
            .arg("--dr-trust")
            .arg(public)
            .args(["--dr-interval", "1s", "--dr-allowlist-refresh", "1s"])
            .arg("--dr-state")
            .arg(dir.join("dr-state.json"))
            .args(["--dr-gateway", "dr.localhost@127.0.0.1:9"])
            .args(["--dr-allowlist-url", location])
            .args(["--dr-allowlist-s3-endpoint", s3.endpoint()])
            .args(["--dr-allowlist-s3-region", s3.region()])
            .arg("--dr-allowlist-s3-credentials")
            .arg(credentials)
            .env("TSUZUKU_LOG", "info")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stderr(Stdio::piped()),
    )
    .await
    .unwrap()
}

fn credentials_file(path: &Path, id: &str, secret: &str) {
    std::fs::write(
        path,
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_comes_from_an_s3_bucket_and_the_last_good_list_stands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s3 = TestS3::start("dr-lists").await.unwrap();
    let dns = TestDns::start("example.test").await.unwrap();
    let key = keys::generate();
    let public = dir.join("dr-public.pem");
    std::fs::write(
        &public,
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    // An internet destination on loopback, allowed by the signed list by IP literal.
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = allowed.local_addr().unwrap().port();
    tokio::spawn(async move { while allowed.accept().await.is_ok() {} });

    let issued = now() - 60;
    let good = sign_list(issued, &["127.0.0.1", "*.allowed.example"], &key).unwrap();
    s3.put_object(KEY, good.as_bytes()).await.unwrap();
    let t = now();
    let record = sign(
        &RecordFields {
            state: DrState::On,
            internet: Some(InternetMode::Controlled),
            issued_at: t,
            not_before: t - 300,
            not_after: t + 3600,
            groups: BTreeSet::new(),
            devices: BTreeSet::new(),
        },
        &key,
    )
    .unwrap();
    let strings = split_strings(&record);
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt(NAME, &refs).await.unwrap();

    let location = format!("s3://{}/{KEY}", s3.bucket());
    let creds = dir.join("s3-credentials");
    credentials_file(&creds, s3.access_key_id(), s3.secret_access_key());

    // The good list is fetched with a signed GET and enforced.
    let mut c = connector(dir, &dns, &s3, &public, &location, &creds, port).await;
    let st = wait_status(&c, &["controlled", "2 from the signed list"]).await;
    assert!(!st.contains("allowlist problem"), "{st}");
    assert!(
        connect_status(&c.proxy, &format!("127.0.0.1:{port}"))
            .await
            .unwrap()
            .contains(" 200"),
    );
    assert!(
        connect_status(&c.proxy, &format!("127.0.0.2:{port}"))
            .await
            .unwrap()
            .contains(" 403"),
    );

    // Someone with write access to the bucket adds a destination: the signature fails, the
    // problem is shown, and the good list stands.
    let forged = sign_list(now(), &["127.0.0.1", "*.allowed.example"], &key)
        .unwrap()
        .replacen("127.0.0.1\n", "127.0.0.1\n127.0.0.2\n", 1);
    s3.put_object(KEY, forged.as_bytes()).await.unwrap();
    let st = wait_status(&c, &["allowlist problem", "altered or forged"]).await;
    assert!(st.contains("2 from the signed list"), "{st}");
    assert!(
        connect_status(&c.proxy, &format!("127.0.0.2:{port}"))
            .await
            .unwrap()
            .contains(" 403"),
    );
    s3.put_object(KEY, good.as_bytes()).await.unwrap();
    c.stop().await.unwrap();

    // Wrong credentials (restarted, holding the cached good list): a clear error, the good list
    // stands, and neither the key id nor the secret is shown or logged.
    let wrong = dir.join("wrong-credentials");
    credentials_file(&wrong, s3.access_key_id(), "not-the-secret");
    let mut c = connector(dir, &dns, &s3, &public, &location, &wrong, port).await;
    let st = wait_status(&c, &["SignatureDoesNotMatch", "secret access key"]).await;
    assert!(st.contains("2 from the signed list"), "{st}");
    assert!(
        connect_status(&c.proxy, &format!("127.0.0.1:{port}"))
            .await
            .unwrap()
            .contains(" 200"),
    );
    c.stop().await.unwrap();
    let logged = c.stderr.lines().join("\n");
    assert!(logged.contains("SignatureDoesNotMatch"), "{logged}");
    for secret in [s3.access_key_id(), "not-the-secret", s3.secret_access_key()] {
        assert!(!st.contains(secret) && !logged.contains(secret), "{secret}");
    }

    // The object is missing: a clear error, the good list stands.
    let missing = format!("s3://{}/dr/missing.txt", s3.bucket());
    let mut c = connector(dir, &dns, &s3, &public, &missing, &creds, port).await;
    let st = wait_status(
        &c,
        &[
            "NoSuchKey",
            "there is no object \"dr/missing.txt\" in bucket dr-lists",
        ],
    )
    .await;
    assert!(st.contains("2 from the signed list"), "{st}");
    c.stop().await.unwrap();
    s3.stop().await;
}
