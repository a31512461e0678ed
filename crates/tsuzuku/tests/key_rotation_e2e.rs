//! Issue 3: the snapshot signing key is rotated with nothing restarted. A real control plane
//! publishes to a real snapshot-fed gateway and a real connector; the operator prepares the next
//! key, adds it to the trust file (both re-read it), activates it, and later drops the old one.
//! Snapshots and site lists signed with the new key are taken; with a trust file that lacks the
//! new key they are refused and the last good snapshot stays in force.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Stdio;
use std::time::Duration;

use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::lines::LineLog;
use tsuzuku_testkit::upstream::Upstream;
use tsuzuku_testkit::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const STAFF: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#;

async fn status(c: &reqwest::Client, url: &str) -> u16 {
    c.get(url).send().await.unwrap().status().as_u16()
}

/// How long a rotation may take to reach the gateway, the connector or the JWKS.
const WAIT: Duration = Duration::from_secs(20);

/// Applies a policy set that forbids paths starting with `/{word}`.
fn forbid(gw: &TestGateway, word: &str) {
    let p = gw.data().join(format!("{word}.cedar"));
    std::fs::write(
        &p,
        format!(
            "{STAFF}\nforbid (principal, action, resource) when {{ context.path like \"/{word}*\" }};"
        ),
    )
    .unwrap();
    gw.cli_ok(&["policy", "apply", &p.to_string_lossy()])
        .unwrap();
}

#[tokio::test]
async fn the_snapshot_key_rotates_without_restarting_anything() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), STAFF).unwrap();
    let cport = gw.use_control_port().unwrap();
    gw.append_config(&format!(
        "[snapshot]\ncontrol_url = \"https://127.0.0.1:{cport}\"\ntrust = \"snapshot-trust.pem\"\n\
         ca_file = \"tls/ca.pem\"\nstart_timeout_ms = 1500\n"
    ))
    .unwrap();
    let trust = gw.data().join("snapshot-trust.pem");
    let old_key = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    std::fs::write(&trust, &old_key).unwrap();
    gw.cli_ok(&[
        "site",
        "add",
        "a",
        "--host",
        "localhost",
        "--endpoint",
        &gw.addr().to_string(),
    ])
    .unwrap();
    let _control = gw.start_control().await.unwrap();
    gw.start().await.unwrap();

    // A connector following the signed site list with the same trust file.
    let ca = gw.data().join("tls").join("ca.pem");
    let mut connector = tokio::process::Command::new(BIN)
        .args([
            "connect",
            "--listen",
            "127.0.0.1:0",
            "--app-domain",
            "localhost",
        ])
        .arg("--control")
        .arg(format!("https://127.0.0.1:{cport}"))
        .arg("--control-trust")
        .arg(&trust)
        .arg("--control-ca")
        .arg(&ca)
        .arg("--ca")
        .arg(&ca)
        .arg("--site-cache")
        .arg(gw.data().join("sites-cache.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = LineLog::spawn_from(connector.stdout.take().unwrap());
    let lists = |log: &LineLog| log.count(|l| l.starts_with("site list: version"));

    let c = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{}", s.body);
    eventually(WAIT, "the connector uses site a", async || {
        log.any(|l| l.starts_with("site: a"))
    })
    .await
    .unwrap();

    // Prepare: the next key exists, both are printed for the trust files, nothing changes yet.
    let out = gw.cli_ok(&["keys", "snapshot-rotate"]).unwrap();
    assert!(out.contains("prepared the next snapshot key"), "{out}");
    let both = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    assert_eq!(both.matches("BEGIN PUBLIC KEY").count(), 2, "{both}");
    assert!(both.starts_with(&old_key));
    std::fs::write(&trust, &both).unwrap();

    // Activate: the control plane signs with the new key; the gateway and the connector take
    // what it publishes, without restarting.
    let before = lists(&log);
    let out = gw
        .cli_ok(&["keys", "snapshot-rotate", "--activate"])
        .unwrap();
    assert!(out.contains("is active"), "{out}");
    forbid(&gw, "one");
    eventually(
        WAIT,
        "a snapshot signed with the new key is enforced",
        async || status(&c, &gw.url("app", "/one")).await == 403,
    )
    .await
    .unwrap();
    eventually(
        WAIT,
        "a site list signed with the new key is taken",
        async || lists(&log) > before,
    )
    .await
    .unwrap();

    // The old key leaves the trust file; snapshots keep coming.
    let new_key = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    assert_eq!(new_key.matches("BEGIN PUBLIC KEY").count(), 1);
    assert!(!new_key.contains(old_key.trim()));
    std::fs::write(&trust, &new_key).unwrap();
    forbid(&gw, "two");
    eventually(WAIT, "the next snapshot is enforced", async || {
        status(&c, &gw.url("app", "/two")).await == 403
    })
    .await
    .unwrap();

    // A trust file that does not hold the signing key: new snapshots are refused and the last
    // good one stays in force.
    std::fs::write(&trust, &old_key).unwrap();
    forbid(&gw, "three");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(&c, &gw.url("app", "/three")).await, 200);
    assert_eq!(status(&c, &gw.url("app", "/two")).await, 403);
    assert!(
        gw.stderr_text().contains("refused"),
        "the gateway should report the refused snapshot"
    );
    // Trusting the key again, the gateway catches up by itself.
    std::fs::write(&trust, &new_key).unwrap();
    eventually(WAIT, "the gateway catches up", async || {
        status(&c, &gw.url("app", "/three")).await == 403
    })
    .await
    .unwrap();
}

/// The `kid` in the header of the identity assertion the upstream received.
fn assertion_kid(echo: &serde_json::Value) -> String {
    use base64::Engine as _;
    let jwt = echo["headers"]["x-tsuzuku-assertion"].as_str().unwrap();
    let header = jwt.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&header).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(c: &reqwest::Client, gw: &TestGateway) -> Vec<String> {
    let v: serde_json::Value = c
        .get(gw.url("auth", "/.well-known/tsuzuku/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_assertion_key_rotates_without_restarting_the_gateway() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), STAFF).unwrap();
    gw.start().await.unwrap();
    let c = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(s.final_body.as_deref().unwrap()).unwrap();
    let first = assertion_kid(&echo);
    assert_eq!(jwks_kids(&c, &gw).await, vec![first.clone()]);

    let out = gw.cli_ok(&["keys", "assertion-rotate"]).unwrap();
    assert!(
        out.contains("identity assertions are signed with key"),
        "{out}"
    );
    eventually(WAIT, "the JWKS publishes both keys", async || {
        jwks_kids(&c, &gw).await.len() == 2
    })
    .await
    .unwrap();
    let kids = jwks_kids(&c, &gw).await;
    assert_eq!(kids[1], first, "the previous key stays published: {kids:?}");
    let second = kids[0].clone();
    // A new sign-in gets assertions signed with the new key; the old session goes on working.
    let c2 = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c2, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(s.final_body.as_deref().unwrap()).unwrap();
    assert_eq!(assertion_kid(&echo), second);
    assert_eq!(status(&c, &gw.url("app", "/still")).await, 200);

    // The next rotation retires the first key.
    gw.cli_ok(&["keys", "assertion-rotate"]).unwrap();
    eventually(WAIT, "the oldest key leaves the JWKS", async || {
        let kids = jwks_kids(&c, &gw).await;
        kids.len() == 2 && !kids.contains(&first) && kids[1] == second
    })
    .await
    .unwrap();
    let audit = gw
        .cli_ok(&["--json", "audit", "tail", "-n", "5", "--kind", "admin"])
        .unwrap();
    assert!(audit.contains("keys.assertion_rotate"), "{audit}");
}
