//! Issue 3 item 3: the management plane is independent of the data plane. A real control plane
//! (`serve --role control`) publishes signed snapshots; a real gateway fed by them keeps
//! serving existing sessions and enforcing policy with the control plane AND its PostgreSQL
//! database killed, and comes back up from its disk snapshot when restarted in that state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::postgres::PgCluster;
use tsuzuku_testkit::upstream::Upstream;
use tsuzuku_testkit::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const STAFF_POLICY: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#;
const STAFF_BUT_NOT_SECRET: &str = r#"permit (principal in Tsuzuku::Group::"staff", action, resource);
forbid (principal, action, resource) when { context.path like "/secret*" };"#;

async fn get(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// How long a change may take to show (the gateway applies new snapshots within a long-poll
/// round trip).
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn gateway_enforces_from_its_snapshot_with_control_plane_and_database_down_even_after_restart()
 {
    let pg = PgCluster::start_primary().await.unwrap();
    let mut gw = TestGateway::init(BIN).unwrap();
    gw.set_config("url", &format!("\"{}\"", pg.url())).unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), STAFF_POLICY)
        .unwrap();
    let cport = gw.use_control_port().unwrap();
    gw.append_config(&format!(
        "[snapshot]\ncontrol_url = \"https://127.0.0.1:{cport}\"\ntrust = \"snapshot-trust.pem\"\n\
         ca_file = \"tls/ca.pem\"\nstart_timeout_ms = 1500\n"
    ))
    .unwrap();
    let public = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    assert!(public.contains("BEGIN PUBLIC KEY"), "{public}");
    std::fs::write(gw.data().join("snapshot-trust.pem"), &public).unwrap();

    let mut control = gw.start_control().await.unwrap();
    gw.start().await.unwrap();
    let c = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{}", s.body);

    // A policy change made on the control plane's store reaches the gateway as a new snapshot.
    let policy = gw.data().join("secret.cedar");
    std::fs::write(&policy, STAFF_BUT_NOT_SECRET).unwrap();
    gw.cli_ok(&["policy", "apply", &policy.to_string_lossy()])
        .unwrap();
    eventually(WAIT, "the new policy is enforced", async || {
        get(&c, &gw.url("app", "/secret/1")).await.0 == 403
    })
    .await
    .unwrap();
    assert_eq!(get(&c, &gw.url("app", "/open")).await.0, 200);

    // `tsuzuku status` shows the gateway and the snapshot version it uses.
    eventually(
        WAIT,
        "status lists the gateway with a snapshot",
        async || {
            let out = gw.cli_ok(&["--json", "status"]).unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["snapshot_version"].is_i64()))
        },
    )
    .await
    .unwrap();

    // The whole management plane is lost — the control plane and its database — while a
    // client keeps a steady load on the app. No request may fail.
    tokio::time::sleep(Duration::from_secs(3)).await; // the known sessions reach the disk
    let load = {
        let c = c.clone();
        let url = gw.url("app", "/steady");
        tokio::spawn(async move {
            let mut results = Vec::new();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                let t = Instant::now();
                let status = match c.get(&url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                results.push((status, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    control.start_kill().unwrap();
    control.wait().await.unwrap();
    pg.kill().unwrap();
    let results = load.await.unwrap();
    let failed = results.iter().filter(|(s, _)| *s != 200).count();
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!(
        "data-plane figures: {} requests, {failed} failed, slowest {} ms",
        results.len(),
        slowest.as_millis()
    );
    assert_eq!(
        failed, 0,
        "requests failed with the management plane down: {results:?}"
    );
    // Policy is still enforced, from the snapshot.
    assert_eq!(get(&c, &gw.url("app", "/secret/2")).await.0, 403);
    assert_eq!(get(&c, &gw.url("app", "/during")).await.0, 200);
    let ready = c
        .get(gw.url("app", "/.tsuzuku/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "a snapshot-fed gateway stays ready");

    // Restarted in that state, it comes up from its disk snapshot and still knows the session
    // and the policy.
    gw.kill9().await.unwrap();
    gw.start().await.unwrap();
    assert!(
        gw.stderr_text()
            .contains("starting from the snapshot on disk"),
        "{}",
        gw.stderr_text()
    );
    let (status, body) = get(&c, &gw.url("app", "/after-restart")).await;
    assert_eq!(status, 200, "{body}\n{}", gw.stderr_text());
    assert!(body.contains("alice"), "{body}");
    assert_eq!(get(&c, &gw.url("app", "/secret/3")).await.0, 403);

    // A corrupted disk snapshot is refused and reported; with nothing else to start from the
    // gateway refuses to start, with a message saying why.
    gw.kill9().await.unwrap();
    let sealed = gw.data().join("snapshot-cache").join("snapshot.sealed");
    let raw = std::fs::read(&sealed).unwrap();
    std::fs::write(&sealed, &raw[..raw.len() / 2]).unwrap();
    let err = gw.start().await.unwrap_err().to_string();
    assert!(err.contains("no usable snapshot"), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
