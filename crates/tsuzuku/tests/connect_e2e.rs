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

use tsuzuku_testkit::connect::Connector;
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
    let connector = Connector::start(
        tokio::process::Command::new(BIN)
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
            .stderr(Stdio::inherit()),
    )
    .await
    .unwrap();
    let proxy = &connector.proxy;
    let pac = connector.pac.as_deref().unwrap();
    let log = &connector.stdout;

    // The PAC file sends app domains through the connector and the rest direct.
    let pac_text = reqwest::get(pac).await.unwrap().text().await.unwrap();
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
    log.wait_line("site: a", Duration::from_secs(10))
        .await
        .unwrap();
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
    log.wait_line("site: b", Duration::from_secs(5))
        .await
        .unwrap();
    // `tsuzuku connect status` shows the site in use and why.
    let status = connector.status().unwrap();
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
