//! Issue 5 item 3, for a running connector: the DR gateway and the critical apps come from the
//! control plane's signed site list, and a change there reaches a connector that is already
//! running — in DR mode — without a restart.
//!
//! Real parts: a control plane (`serve --role control`) publishing the site list with a DR site
//! (`site add … --dr`), the normal gateway, a DR gateway (its own data directory and users, on
//! 127.0.0.2 at the normal gateway's port so app URLs are the same), a DNS server (hickory,
//! in-process) serving the signed record, and the real `tsuzuku connect` with no `--dr-gateway`
//! and only the sign-in portal as a local `--dr-critical-host`. In DR mode the app `app2` is not critical: the connector
//! answers with the DR page. The operator marks it critical on the control plane
//! (`tsuzuku app add app2 … --critical`); the connector takes the new list and `app2` now goes
//! to the DR gateway, where bob (who exists only there) signs in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::connect::Connector;
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const NAME: &str = "_tsuzuku-dr.example.test";
const POLICY: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_an_app_critical_reaches_a_connector_in_dr_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = Upstream::start().await.unwrap();

    // The normal site, and the control plane on its data directory.
    let mut gw = TestGateway::init(BIN).unwrap();
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
    let cport = gw.use_control_port().unwrap();
    let dr_addr = format!("127.0.0.2:{}", gw.port);
    gw.cli_ok(&[
        "site",
        "add",
        "tokyo",
        "--host",
        "localhost",
        "--endpoint",
        &gw.addr().to_string(),
    ])
    .unwrap();
    gw.cli_ok(&[
        "site",
        "add",
        "dr",
        "--host",
        "localhost",
        "--endpoint",
        &dr_addr,
        "--dr",
    ])
    .unwrap();
    std::fs::write(
        dir.join("snapshot-trust.pem"),
        gw.cli_ok(&["keys", "snapshot-public"]).unwrap(),
    )
    .unwrap();
    let _control = gw.start_control().await.unwrap();

    // The DR gateway: its own users; app2 is served there.
    let mut drgw = TestGateway::init(BIN).unwrap();
    drgw.set_config("listen", &format!("\"{dr_addr}\""))
        .unwrap();
    drgw.set_config("portal_host", &format!("\"auth.localhost:{}\"", gw.port))
        .unwrap();
    let bob = drgw.add_user("bob", "staff").unwrap();
    drgw.cli_ok(&[
        "app",
        "add",
        "app2",
        "--host",
        &gw.host("app2"),
        "--upstream",
        &up.url(),
    ])
    .unwrap();
    let policy = dir.join("policy.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    drgw.cli_ok(&["policy", "apply", policy.to_str().unwrap()])
        .unwrap();
    drgw.start().await.unwrap();

    let key = keys::generate();
    let dr_public = dir.join("dr-public-key.pem");
    std::fs::write(
        &dr_public,
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let dns = TestDns::start("example.test").await.unwrap();
    let mut cas = gw.ca_pem().unwrap();
    cas.extend(drgw.ca_pem().unwrap());
    let ca = dir.join("cas.pem");
    std::fs::write(&ca, &cas).unwrap();

    let connector = Connector::start(
        tokio::process::Command::new(BIN)
            .args(["connect", "--listen", "127.0.0.1:0"])
            .args(["--app-domain", "localhost"])
            .args(["--allow-port", &gw.port.to_string()])
            .arg("--control")
            .arg(format!("https://127.0.0.1:{cport}"))
            .arg("--control-trust")
            .arg(dir.join("snapshot-trust.pem"))
            .arg("--control-ca")
            .arg(gw.data().join("tls").join("ca.pem"))
            .arg("--ca")
            .arg(&ca)
            .arg("--site-cache")
            .arg(dir.join("sites.json"))
            .args(["--dr-record", NAME, "--dr-dns", &dns.addr().to_string()])
            .arg("--dr-trust")
            .arg(&dr_public)
            .args(["--dr-interval", "1s"])
            // The sign-in portal stays reachable in DR mode: a local addition to the list's apps.
            .args(["--dr-critical-host", "auth.localhost"])
            .env("TSUZUKU_LOG", "info")
            .stderr(Stdio::inherit()),
    )
    .await
    .unwrap();
    let proxy = &connector.proxy;
    let log = &connector.stdout;
    log.wait_line("site: tokyo", Duration::from_secs(15))
        .await
        .unwrap();
    log.wait_line("dr: normal", Duration::from_secs(5))
        .await
        .unwrap();

    // The disaster: the record is published, the normal site is lost.
    let t = jiff::Timestamp::now().as_second();
    let on = RecordFields {
        state: DrState::On,
        internet: Some(InternetMode::Closed),
        issued_at: t,
        not_before: t - 300,
        not_after: t + 3600,
        groups: BTreeSet::new(),
        devices: BTreeSet::new(),
    };
    let strings = split_strings(&sign(&on, &key).unwrap());
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    dns.set_txt(NAME, &refs).await.unwrap();
    log.wait_line("dr: active", Duration::from_secs(5))
        .await
        .unwrap();
    gw.kill9().await.unwrap();

    let mut builder = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5));
    for pem in [gw.ca_pem().unwrap(), drgw.ca_pem().unwrap()] {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    let c = builder.build().unwrap();

    // app2 is not critical: the DR page.
    let r = c
        .get(format!("http://app2.localhost:{}/", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("app2.localhost is unavailable during disaster recovery")
    );
    let st = connector.status().unwrap();
    assert!(
        st.contains(&format!("DR gateway localhost at {dr_addr}")),
        "{st}"
    );
    assert!(st.contains("critical apps: auth.localhost\n"), "{st}");

    // The operator marks it critical on the control plane (app2 is added again, critical).
    gw.cli_ok(&["app", "remove", "app2"]).unwrap();
    let marked = Instant::now();
    gw.cli_ok(&[
        "app",
        "add",
        "app2",
        "--host",
        &gw.host("app2"),
        "--upstream",
        &up.url(),
        "--critical",
    ])
    .unwrap();
    let line = log
        .wait_line("dr targets:", Duration::from_secs(10))
        .await
        .unwrap();
    eprintln!("{line} ({:?} after the change)", marked.elapsed());
    assert!(
        line.ends_with("critical apps: auth.localhost, app2.localhost"),
        "{line}"
    );
    let st = connector.status().unwrap();
    assert!(
        st.contains("critical apps: auth.localhost, app2.localhost"),
        "{st}"
    );
    assert!(st.contains("disaster recovery: ACTIVE"), "{st}");

    // app2 now goes to the DR gateway: bob exists only there.
    let s = sign_in(&c, &gw.url("app2", "/"), "bob", &bob, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{s:?}");
    assert!(
        log.any(|l| l == "dr: active internet=closed drill=false"),
        "DR mode held throughout"
    );
}
