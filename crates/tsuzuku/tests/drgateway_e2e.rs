//! Issue 5 item 3: the DR gateway (`serve --role dr-gateway`) follows the control plane's
//! snapshots into its own local store, and when the control plane and the normal gateway are
//! gone it signs people in (password + TOTP), enforces the same policies and serves the critical
//! apps alone — also after a restart in that state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Instant;

use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const POLICY: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);
forbid (principal, action, resource) when { context.path like "/secret*" };"#;

#[tokio::test]
async fn dr_gateway_signs_in_and_serves_critical_apps_with_everything_else_down() {
    let main = TestGateway::init(BIN).unwrap();
    let mut drgw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let out = main
        .cli_ok(&[
            "--json", "user", "add", "alice", "--group", "staff", "--totp",
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let password = v["password"].as_str().unwrap().to_owned();
    let uri = v["totp_uri"].as_str().unwrap();
    let secret = uri
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let code = tsuzuku_identity::totp::code_at_step(&secret, now / 30).unwrap();
    // The apps people reach through the DR gateway in DR mode are named by the host they have
    // there; in a real deployment both gateways answer on 443 under the same names.
    main.cli_ok(&[
        "app",
        "add",
        "payroll",
        "--host",
        &drgw.host("app"),
        "--upstream",
        &up.url(),
        "--critical",
    ])
    .unwrap();
    main.cli_ok(&[
        "app",
        "add",
        "wiki",
        "--host",
        &drgw.host("app2"),
        "--upstream",
        &up.url(),
    ])
    .unwrap();
    let p = main.data_dir().join("policy.cedar");
    std::fs::write(&p, POLICY).unwrap();
    main.cli_ok(&["policy", "apply", &p.to_string_lossy()])
        .unwrap();

    // The control plane, and a DR gateway following it.
    let cport = main.use_control_port().unwrap();
    let mut control = main.start_control().await.unwrap();
    drgw.follow_as_dr_gateway(&main, cport).unwrap();
    drgw.start_with(&["--role", "dr-gateway"]).await.unwrap();

    // Only the DR token gets the variant with credential verifiers.
    let ca = reqwest::Certificate::from_pem(
        &std::fs::read(main.data().join("tls").join("ca.pem")).unwrap(),
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let node_token = std::fs::read_to_string(main.data().join("keys").join("node-token")).unwrap();
    let dr_token = std::fs::read_to_string(main.data().join("keys").join("dr-node-token")).unwrap();
    let ask = |role: &str, token: &str| {
        http.get(format!(
            "https://127.0.0.1:{cport}/v1/snapshot?node=probe&role={role}&wait=0"
        ))
        .bearer_auth(token.trim())
        .send()
    };
    assert_eq!(ask("dr-gateway", &node_token).await.unwrap().status(), 401);
    assert_eq!(ask("gateway", &node_token).await.unwrap().status(), 200);
    assert_eq!(ask("dr-gateway", &dr_token).await.unwrap().status(), 200);

    // Disaster: the control plane (and with it the normal service) is gone.
    control.start_kill().unwrap();
    control.wait().await.unwrap();
    drop(main);

    let c = drgw.client(&["auth", "app", "app2"]).unwrap();
    let s = sign_in(&c, &drgw.url("app", "/"), "alice", &password, Some(&code))
        .await
        .unwrap();
    assert_eq!(
        s.final_status,
        Some(200),
        "{}\n{}",
        s.body,
        drgw.stderr_text()
    );
    let r = c.get(drgw.url("app", "/payroll")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("alice"));
    // The same policies: forbidden stays forbidden.
    let r = c.get(drgw.url("app", "/secret/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // A non-critical app is not served by the DR gateway.
    let r = c.get(drgw.url("app2", "/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Every decision is audited locally, in an intact chain.
    let tail = drgw
        .cli_ok(&["--json", "audit", "tail", "-n", "20", "--kind", "decision"])
        .unwrap();
    assert!(tail.contains("/payroll"), "{tail}");
    assert!(
        drgw.cli_ok(&["audit", "verify"])
            .unwrap()
            .contains("intact")
    );

    // Restarted with nothing else alive, it comes up from its copy and the session still works.
    drgw.kill9().await.unwrap();
    let t = Instant::now();
    drgw.start_with(&["--role", "dr-gateway"]).await.unwrap();
    eprintln!(
        "DR gateway restart with the control plane down: {:?}",
        t.elapsed()
    );
    let r = c
        .get(drgw.url("app", "/after-restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", drgw.stderr_text());
}
