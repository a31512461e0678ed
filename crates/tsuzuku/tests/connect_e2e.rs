//! `tsuzuku connect` end to end: two real gateway processes as two sites sharing one store, the
//! real connector in front of an HTTPS client, and SIGKILL of the preferred site (issue 4,
//! items 1, 3, 4: blackout failover without signing in again).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt as _;
use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

#[tokio::test]
async fn connector_fails_over_to_the_second_site_without_a_new_sign_in() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy(
        "app",
        &up.url(),
        r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
    )
    .unwrap();
    gw.start().await.unwrap();
    let site_b = gw.start_node().await.unwrap();

    let ca = gw.data().join("tls").join("ca.pem");
    let mut connector = tokio::process::Command::new(BIN)
        .args(["connect", "--listen", "127.0.0.1:0"])
        .arg("--site")
        .arg(format!("a=localhost@{}", gw.addr()))
        .arg("--site")
        .arg(format!("b=localhost@{}", site_b.addr))
        .args([
            "--app-domain",
            "localhost",
            "--allow-port",
            &gw.port.to_string(),
        ])
        .arg("--ca")
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(connector.stdout.take().unwrap()).lines();
    let mut proxy = String::new();
    let mut pac = String::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        if let Some(u) = l.strip_prefix("PAC ") {
            pac = u.to_owned();
        }
        if let Some(a) = l.strip_prefix("READY ") {
            proxy = a.to_owned();
            break;
        }
    }
    assert!(!proxy.is_empty());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            sink.lock().unwrap().push(l);
        }
    });

    // The PAC file sends app domains through the connector and the rest direct.
    let pac_text = reqwest::get(&pac).await.unwrap().text().await.unwrap();
    assert!(pac_text.contains("FindProxyForURL"), "{pac_text}");
    assert!(pac_text.contains(&format!("PROXY {proxy}")), "{pac_text}");

    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Wait until the connector has chosen a site.
    let start = Instant::now();
    while !log.lock().unwrap().iter().any(|l| l.starts_with("site: a")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.status, 303, "{}", s.body);
    assert_eq!(s.final_status, Some(200));

    // Site A is lost.
    gw.kill9().await.unwrap();
    let killed = Instant::now();
    let mut failures = 0;
    loop {
        match c.get(gw.url("app", "/after-failover")).send().await {
            Ok(r) if r.status() == 200 => break,
            Ok(r) => panic!(
                "unexpected {} after failover: a new sign-in was asked for?",
                r.status()
            ),
            Err(_) => failures += 1,
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    eprintln!(
        "connector failover: first success {took:?} after SIGKILL, {failures} failed requests"
    );
    assert!(took < Duration::from_secs(3), "failover took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.lock().unwrap().iter().any(|l| l.starts_with("site: b")) {
        assert!(Instant::now() < deadline, "{:?}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `tsuzuku connect status` shows the site in use and why.
    let out = std::process::Command::new(BIN)
        .args(["connect", "status", "--proxy", &proxy])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains('b') && status.contains('a'), "{status}");
    eprintln!("connect status:\n{status}");
    // With no connector there, a one-line error.
    let dead = tsuzuku_testkit::gateway::free_port().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["connect", "status", "--proxy", &format!("127.0.0.1:{dead}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no connector answers"));
}
