//! Issue 5 item 3, the upload: a DR gateway audits the decisions it makes while the control
//! plane is down into its own chain, and uploads them when the control plane is back — into the
//! tenant's main chain, each event once (also after the DR gateway restarts having forgotten
//! what it uploaded), with its origin in its detail, both chains intact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const POLICY: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);
forbid (principal, action, resource) when { context.path like "/secret*" };"#;

/// The decisions in `gw`'s chain, as `audit tail --kind decision --json` prints them.
fn decisions(gw: &TestGateway) -> Vec<serde_json::Value> {
    gw.cli_ok(&[
        "--json", "audit", "tail", "-n", "10000", "--kind", "decision",
    ])
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// The uploaded DR events in the main chain: `(dr_seq, path)` in chain order.
fn uploaded(main: &TestGateway) -> Vec<(i64, String)> {
    decisions(main)
        .iter()
        .filter(|e| e["detail"]["dr_gateway"] == "dr-east")
        .map(|e| {
            (
                e["detail"]["dr_seq"].as_i64().unwrap(),
                e["detail"].to_string(),
            )
        })
        .collect()
}

async fn wait_uploaded(main: &TestGateway, what: &str, within: Duration) -> Vec<(i64, String)> {
    let start = Instant::now();
    loop {
        let up = uploaded(main);
        if up.iter().any(|(_, d)| d.contains(what)) {
            return up;
        }
        assert!(
            start.elapsed() < within,
            "{what} not uploaded within {within:?}: {up:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn assert_once_each(up: &[(i64, String)]) {
    let mut seqs: Vec<i64> = up.iter().map(|(s, _)| *s).collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "an event was uploaded twice: {up:?}");
}

#[tokio::test]
async fn dr_gateway_uploads_its_audit_events_once_when_the_control_plane_is_back() {
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
    let secret = v["totp_uri"]
        .as_str()
        .unwrap()
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    let code =
        tsuzuku_identity::totp::code_at_step(&secret, jiff::Timestamp::now().as_second() / 30)
            .unwrap();
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
    let p = main.data().join("policy.cedar");
    std::fs::write(&p, POLICY).unwrap();
    main.cli_ok(&["policy", "apply", &p.to_string_lossy()])
        .unwrap();

    // The control plane, and a DR gateway following it.
    let cport = main.use_control_port().unwrap();
    let mut control = main.start_control().await.unwrap();
    drgw.follow_as_dr_gateway(&main, cport).unwrap();
    drgw.start_with(&["--role", "dr-gateway", "--node-id", "dr-east"])
        .await
        .unwrap();

    // The control plane is down; the DR gateway decides and audits alone.
    control.start_kill().unwrap();
    control.wait().await.unwrap();
    let c = drgw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &drgw.url("app", "/"), "alice", &password, Some(&code))
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{}", drgw.stderr_text());
    for i in 0..3 {
        let r = c
            .get(drgw.url("app", &format!("/payroll/outage-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(drgw.url("app", "/secret/outage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let local = decisions(&drgw);
    assert!(
        local
            .iter()
            .any(|e| e["detail"].to_string().contains("/secret/outage")),
        "{local:?}"
    );
    // Nothing of it has reached the main chain.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !decisions(&main)
            .iter()
            .any(|e| e["detail"].to_string().contains("outage")),
    );

    // The control plane is back: the events arrive, with their origin, in an intact chain.
    let t = Instant::now();
    let _control = main.start_control().await.unwrap();
    let up1 = wait_uploaded(&main, "/secret/outage", Duration::from_secs(20)).await;
    eprintln!(
        "TIMING control plane back -> DR audit uploaded: {:?}",
        t.elapsed()
    );
    for i in 0..3 {
        assert!(
            up1.iter()
                .any(|(_, d)| d.contains(&format!("/payroll/outage-{i}"))),
            "{up1:?}"
        );
    }
    assert_once_each(&up1);
    // Every decision of the DR gateway's chain is there, with its sequence number there.
    for e in &local {
        let seq = e["seq"].as_i64().unwrap();
        assert!(
            up1.iter().any(|(s, _)| *s == seq),
            "DR event #{seq} missing: {up1:?}"
        );
    }
    let main_verify = main.cli_ok(&["audit", "verify"]).unwrap();
    assert!(main_verify.contains("intact"), "{main_verify}");
    let dr_verify = drgw.cli_ok(&["audit", "verify"]).unwrap();
    assert!(dr_verify.contains("intact"), "{dr_verify}");

    // The DR gateway crashes and loses its upload position: nothing is uploaded twice, and what
    // it decides next arrives too.
    drgw.kill9().await.unwrap();
    let position = drgw.data().join("audit-upload.json");
    assert!(position.exists());
    std::fs::remove_file(&position).unwrap();
    drgw.start_with(&["--role", "dr-gateway", "--node-id", "dr-east"])
        .await
        .unwrap();
    let r = c
        .get(drgw.url("app", "/payroll/after-restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", drgw.stderr_text());
    let up2 = wait_uploaded(&main, "/payroll/after-restart", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up2_later = uploaded(&main);
    assert_once_each(&up2_later);
    assert_eq!(up2_later.len(), up2.len(), "{up2_later:?}");
    assert!(up2.len() > up1.len());
    assert!(
        main.cli_ok(&["audit", "verify"])
            .unwrap()
            .contains("intact")
    );
    assert!(
        drgw.cli_ok(&["audit", "verify"])
            .unwrap()
            .contains("intact")
    );
}
