//! Disaster-recovery mode in `tsuzuku connect`, end to end with real parts (issue 5, items 2, 4
//! and 6, and the connector's side of 3 and 5): a real DNS server (hickory-server, in-process)
//! serves the signed DR record, a real gateway process is the normal site, a second real gateway
//! process is the DR gateway, the signed allowlist is served over HTTP, and the real connector
//! process sits in front of an HTTPS client.
//!
//! The DR gateway has its own data directory (its own users and CA) and listens on 127.0.0.2 at
//! the normal gateway's port, so the apps' URLs (`https://app.localhost:PORT`) are the same at
//! both. Internet destinations are loopback servers allowlisted by IP literal (`127.0.0.1`):
//! every name under `localhost` is an app domain here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tsuzuku_connector::internet::sign_list;
use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::connect::{Connector, connect_status};
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const NAME: &str = "_tsuzuku-dr.example.test";
const POLICY: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// An `on` record's fields, valid for an hour.
fn on(internet: InternetMode) -> RecordFields {
    let t = now();
    RecordFields {
        state: DrState::On,
        internet: Some(internet),
        issued_at: t,
        not_before: t - 300,
        not_after: t + 3600,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    }
}

async fn publish(dns: &TestDns, strings: &[String]) {
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt(NAME, &refs).await.unwrap();
}

/// Serves one body over HTTP at any path.
async fn serve_body(body: String) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/dr-allowlist.txt", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_mode_keeps_critical_apps_up_enforces_the_internet_mode_and_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = Upstream::start().await.unwrap();

    // The normal site.
    let mut gw = TestGateway::init(BIN).unwrap();
    let alice = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), POLICY).unwrap();
    gw.cli_ok(&[
        "app",
        "add",
        "app2",
        "--host",
        &gw.host("app2"),
        "--upstream",
        &up.url(),
    ])
    .unwrap();
    gw.start().await.unwrap();

    // The DR gateway: its own data directory, users and CA; the same app URLs.
    let mut drgw = TestGateway::init(BIN).unwrap();
    drgw.set_config("listen", &format!("\"127.0.0.2:{}\"", gw.port))
        .unwrap();
    drgw.set_config("portal_host", &format!("\"auth.localhost:{}\"", gw.port))
        .unwrap();
    let bob = drgw.add_user("bob", "staff").unwrap();
    drgw.cli_ok(&[
        "app",
        "add",
        "app",
        "--host",
        &gw.host("app"),
        "--upstream",
        &up.url(),
    ])
    .unwrap();
    let policy = dir.join("policy.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    drgw.cli_ok(&["policy", "apply", policy.to_str().unwrap()])
        .unwrap();
    drgw.start().await.unwrap();
    let dr_addr = format!("127.0.0.2:{}", gw.port);

    // Internet destinations: one allowlisted, one not (it counts connections it receives).
    let allowed = Upstream::start().await.unwrap();
    let blocked = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let blocked_addr = blocked.local_addr().unwrap();
    let blocked_hits = Arc::new(AtomicUsize::new(0));
    {
        let hits = blocked_hits.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = blocked.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    // The DR key, the signed allowlist and the DNS server.
    let key = keys::generate();
    let public = dir.join("dr-public-key.pem");
    std::fs::write(
        &public,
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let list_url = serve_body(sign_list(now(), &["127.0.0.1"], &key).unwrap()).await;
    let dns = TestDns::start("example.test").await.unwrap();

    // Both gateways' CAs, for the connector's probes and for the browser.
    let mut cas = gw.ca_pem().unwrap();
    cas.extend(drgw.ca_pem().unwrap());
    let ca = dir.join("cas.pem");
    std::fs::write(&ca, &cas).unwrap();

    let connector = Connector::start(
        tokio::process::Command::new(BIN)
            .args(["connect", "--listen", "127.0.0.1:0"])
            .arg("--site")
            .arg(format!("a=localhost@{}", gw.addr()))
            .args(["--app-domain", "localhost"])
            .args(["--allow-port", &gw.port.to_string()])
            .args(["--allow-port", &allowed.addr.port().to_string()])
            .args(["--allow-port", &blocked_addr.port().to_string()])
            .arg("--ca")
            .arg(&ca)
            .args(["--dr-record", NAME, "--dr-dns", &dns.addr().to_string()])
            .arg("--dr-trust")
            .arg(&public)
            .args(["--dr-interval", "1s", "--dr-allowlist-refresh", "1s"])
            .arg("--dr-state")
            .arg(dir.join("dr-state.json"))
            .args(["--dr-gateway", &format!("localhost@{dr_addr}")])
            .args(["--dr-critical-host", "app.localhost"])
            .args(["--dr-critical-host", "auth.localhost"])
            .args(["--dr-allowlist-url", &list_url])
            .args(["--dr-allow", "*.example.org"])
            .env("TSUZUKU_LOG", "info")
            .stderr(Stdio::piped()),
    )
    .await
    .unwrap();
    let proxy = &connector.proxy;
    let pac = connector.pac.as_deref().unwrap();
    let log = &connector.stdout;

    // With DR configured, the PAC file sends everything through the connector.
    let pac_text = reqwest::get(pac).await.unwrap().text().await.unwrap();
    assert!(
        pac_text.contains(&format!("return \"PROXY {proxy}\";\n}}")),
        "{pac_text}"
    );

    let mut client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5));
    for pem in [gw.ca_pem().unwrap(), drgw.ca_pem().unwrap()] {
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    let c = client.build().unwrap();

    log.wait_line("site: a", Duration::from_secs(10))
        .await
        .unwrap();
    log.wait_line("dr: normal", Duration::from_secs(10))
        .await
        .unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &alice, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{s:?}");

    // A spoofed record (signed with another key) changes nothing.
    let spoofed = split_strings(&sign(&on(InternetMode::Closed), &keys::generate()).unwrap());
    publish(&dns, &spoofed).await;
    let start = Instant::now();
    loop {
        let st = connector.status().unwrap();
        if st.contains("not trusted") {
            assert!(st.contains("disaster recovery: not active"), "{st}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!log.any(|l| l.starts_with("dr: active")));
    let r = c.get(gw.url("app", "/still-normal")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The real record: DR mode with controlled internet, then the normal site is lost.
    let published = Instant::now();
    publish(
        &dns,
        &split_strings(&sign(&on(InternetMode::Controlled), &key).unwrap()),
    )
    .await;
    log.wait_line(
        "dr: active internet=controlled drill=false",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    eprintln!("DR mode {:?} after publishing", published.elapsed());
    gw.kill9().await.unwrap();

    // The critical app works through the DR gateway: bob exists only there.
    let s = sign_in(&c, &gw.url("app", "/"), "bob", &bob, None)
        .await
        .unwrap();
    assert_eq!(s.status, 303, "{}", s.body);
    assert_eq!(s.final_status, Some(200), "{s:?}");

    // A non-critical app: a clear page for HTTP, a refused CONNECT.
    let r = c
        .get(format!("http://app2.localhost:{}/", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("app2.localhost is unavailable during disaster recovery"),
        "{body}"
    );
    let line = connect_status(proxy, &format!("app2.localhost:{}", gw.port))
        .await
        .unwrap();
    assert!(line.starts_with("HTTP/1.1 503"), "{line}");

    // Internet: the allowlisted destination (from the signed list) works, the other is refused.
    let start = Instant::now();
    while !connector.status().unwrap().contains("from the signed list") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            connector.status().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c
        .get(format!("http://127.0.0.1:{}/hello", allowed.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/hello"));
    let r = c
        .get(format!("http://{blocked_addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("not on it"), "{body}");
    let line = connect_status(proxy, &blocked_addr.to_string())
        .await
        .unwrap();
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    assert_eq!(blocked_hits.load(Ordering::SeqCst), 0);

    let st = connector.status().unwrap();
    assert!(st.contains("disaster recovery: ACTIVE since"), "{st}");
    assert!(st.contains("internet controlled"), "{st}");
    eprintln!("connect status in DR mode:\n{st}");
    // Every refusal is logged.
    connector
        .stderr
        .wait_for(
            "containing \"refused during disaster recovery\"",
            4,
            Duration::from_secs(5),
            |l| l.contains("refused during disaster recovery"),
        )
        .await
        .unwrap();

    // Withdrawn while the normal site is still down (its probes have noticed): critical apps
    // stay on the DR gateway.
    log.wait_line("site: none", Duration::from_secs(10))
        .await
        .unwrap();
    dns.remove_txt(NAME).await.unwrap();
    log.wait_line("dr: returning", Duration::from_secs(5))
        .await
        .unwrap();
    let r = c.get(gw.url("app", "/returning")).send().await.unwrap();
    assert_eq!(r.status(), 200, "bob's session at the DR gateway");
    assert!(connector.status().unwrap().contains("RETURNING"));

    // The normal site is back: the connector returns to it by itself.
    gw.start().await.unwrap();
    let back = Instant::now();
    log.wait_lines("dr: normal", 2, Duration::from_secs(15))
        .await
        .unwrap();
    eprintln!(
        "back to normal {:?} after the normal site restarted",
        back.elapsed()
    );
    let s = sign_in(&c, &gw.url("app", "/back"), "alice", &alice, None)
        .await
        .unwrap();
    assert_eq!(
        s.final_status,
        Some(200),
        "alice exists only at the normal site: {s:?}"
    );
    // Outside DR mode internet traffic goes direct: the proxy connects to the test server
    // (which accepts and closes without answering, hence 502).
    let r = c
        .get(format!("http://{blocked_addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(blocked_hits.load(Ordering::SeqCst) >= 1);
}
