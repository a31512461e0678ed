//! The binary against a real PostgreSQL primary and streaming standby (issue 3, items 1–2):
//! `site status` and `site promote` through the CLI, read-only failover with a clear message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use tsuzuku_testkit::gateway::TestGateway;
use tsuzuku_testkit::postgres::PgCluster;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const STAFF_POLICY: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#;

#[tokio::test]
async fn cli_reads_from_the_standby_refuses_writes_clearly_and_promotes() {
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let gw = TestGateway::init(BIN).unwrap();
    gw.set_config("url", &format!("\"{},{}\"", primary.url(), standby.url()))
        .unwrap();
    // Schema and data on the primary.
    let status = gw.cli_ok(&["site", "status"]).unwrap();
    assert!(status.contains("primary"), "{status}");
    gw.cli_ok(&["user", "add", "alice", "--group", "staff"])
        .unwrap();
    primary.wait_until_replayed(&standby).await.unwrap();

    // The primary's site is lost.
    primary.kill().unwrap();
    let status = gw.cli_ok(&["site", "status"]).unwrap();
    assert!(status.contains("read-only standby"), "{status}");
    // Reads work through the standby.
    let users = gw.cli_ok(&["user", "list"]).unwrap();
    assert!(users.contains("alice"), "{users}");
    // Writes are refused with a message that says why and what to do — not a crash.
    let out = gw.cli(&["user", "add", "bob"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only"), "{err}");
    assert!(err.contains("tsuzuku site promote"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // One error line (a log warning about the failover may precede it).
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("tsuzuku: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");

    // Promotion makes the standby writable; the promotion itself is audited.
    let out = gw.cli_ok(&["site", "promote"]).unwrap();
    assert!(out.contains("promoted"), "{out}");
    gw.cli_ok(&["user", "add", "bob"]).unwrap();
    let users = gw.cli_ok(&["user", "list"]).unwrap();
    assert!(users.contains("bob"), "{users}");
    let admin = gw
        .cli_ok(&["--json", "audit", "tail", "--kind", "admin"])
        .unwrap();
    assert!(admin.contains("site.promote"), "{admin}");
    let verify = gw.cli_ok(&["audit", "verify"]).unwrap();
    assert!(verify.contains("intact"), "{verify}");
}

#[tokio::test]
async fn promotion_is_refused_while_the_primary_answers() {
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let gw = TestGateway::init(BIN).unwrap();
    gw.set_config("url", &format!("\"{},{}\"", primary.url(), standby.url()))
        .unwrap();
    let out = gw.cli(&["site", "promote"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("promotion refused"), "{err}");
}

#[tokio::test]
async fn gateway_keeps_deciding_through_a_lost_primary_and_ships_its_audit_after_promotion() {
    use tsuzuku_testkit::gateway::sign_in;
    use tsuzuku_testkit::upstream::Upstream;
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let mut gw = TestGateway::init(BIN).unwrap();
    gw.set_config("url", &format!("\"{},{}\"", primary.url(), standby.url()))
        .unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), STAFF_POLICY)
        .unwrap();
    gw.start().await.unwrap();
    let c = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{}", s.body);
    primary.wait_until_replayed(&standby).await.unwrap();

    // The primary's site is lost: the existing session keeps working, every request is still
    // decided by policy, and its audit event is spooled on the gateway's disk.
    primary.kill().unwrap();
    for i in 0..5 {
        let r = c
            .get(gw.url("app", &format!("/during-failover/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i} during failover");
    }
    let spool = gw.data().join("audit-spool");
    let spooled: String = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(spooled.contains("/during-failover/4"), "{spooled}");

    // After promotion the spool is shipped into the chain, in order, and the chain verifies.
    gw.cli_ok(&["site", "promote"]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let tail = gw
            .cli_ok(&["--json", "audit", "tail", "-n", "50", "--kind", "decision"])
            .unwrap();
        if tail.contains("/during-failover/4") {
            assert!(tail.contains("/during-failover/0"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spool not shipped: {tail}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let verify = gw.cli_ok(&["audit", "verify"]).unwrap();
    assert!(verify.contains("intact"), "{verify}");
}

/// Issue 3: with the primary lost, people still sign in (password + TOTP) through the standby;
/// the session works on every gateway node; a one-time code still works only once; admin
/// changes stay refused; after promotion the session goes on working.
#[tokio::test]
async fn sign_ins_work_on_every_node_during_read_only_failover() {
    use std::sync::Arc;
    use tsuzuku_testkit::gateway::sign_in;
    use tsuzuku_testkit::upstream::Upstream;
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let mut gw = TestGateway::init(BIN).unwrap();
    gw.set_config("url", &format!("\"{},{}\"", primary.url(), standby.url()))
        .unwrap();
    let up = Upstream::start().await.unwrap();
    let out = gw
        .cli_ok(&[
            "--json", "user", "add", "carol", "--group", "staff", "--totp",
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let password = v["password"].as_str().unwrap().to_owned();
    let uri = v["totp_uri"].as_str().unwrap().to_owned();
    let secret = uri
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    gw.add_app_with_policy("app", &up.url(), STAFF_POLICY)
        .unwrap();
    gw.start().await.unwrap();
    let node2 = gw.start_node().await.unwrap();
    primary.wait_until_replayed(&standby).await.unwrap();
    primary.kill().unwrap();

    let ca = reqwest::Certificate::from_pem(&gw.ca_pem().unwrap()).unwrap();
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = |addr: std::net::SocketAddr, jar: Arc<reqwest::cookie::Jar>| {
        reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .tls_built_in_root_certs(false)
            .resolve("auth.localhost", addr)
            .resolve("app.localhost", addr)
            .cookie_provider(jar)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let c1 = client(gw.addr(), jar.clone());
    let now = jiff::Timestamp::now().as_second();
    let code = tsuzuku_identity::totp::code_at_step(&secret, now / 30).unwrap();
    let s = sign_in(&c1, &gw.url("app", "/"), "carol", &password, Some(&code))
        .await
        .unwrap();
    assert_eq!(s.status, 303, "sign-in during failover: {}", s.body);
    assert_eq!(s.final_status, Some(200), "{:?}", s.final_body);
    assert!(
        gw.stderr_text()
            .contains("issued a read-only-failover session")
    );

    // The same one-time code does not work twice, even while the store cannot record it.
    let other = client(gw.addr(), Arc::new(reqwest::cookie::Jar::default()));
    let again = sign_in(&other, &gw.url("app", "/"), "carol", &password, Some(&code))
        .await
        .unwrap();
    assert_eq!(again.status, 401);
    assert!(again.body.contains("already used"), "{}", again.body);
    // Nor on the other node: the step is claimed on the standby (an advisory lock).
    let elsewhere = client(node2.addr, Arc::new(reqwest::cookie::Jar::default()));
    let again = sign_in(
        &elsewhere,
        &gw.url("app", "/"),
        "carol",
        &password,
        Some(&code),
    )
    .await
    .unwrap();
    assert_eq!(
        again.status, 401,
        "a code used on node 1 replayed on node 2"
    );
    assert!(again.body.contains("already used"), "{}", again.body);

    // The session works on the other node of the site too (it carries itself).
    let on_node2 = client(node2.addr, jar.clone());
    let r = on_node2
        .get(gw.url("app", "/on-node-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A made-up or altered sealed session is not accepted.
    let forged = client(gw.addr(), Arc::new(reqwest::cookie::Jar::default()));
    let r = forged
        .get(gw.url("app", "/"))
        .header(
            "cookie",
            "__Host-tsuzuku_session=ro1.eyJraW5kIjoic2Vzc2lvbiJ9.AAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "a forged session must lead to sign-in");

    // Admin changes are still refused while read-only.
    let out = gw.cli(&["user", "add", "dave"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));

    // After promotion, the session goes on working.
    gw.cli_ok(&["site", "promote"]).unwrap();
    let r = c1
        .get(gw.url("app", "/after-promotion"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
