//! Issue 5 item 5: drill reporting. A real connector (`tsuzuku connect --control … --dr-record
//! …`) reports its DR state to a real control plane; a `test` record for its group, served by a
//! real DNS server, puts it into a drill and withdrawing the record ends it; `tsuzuku dr drill`
//! then shows when the connector entered and left DR mode.
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
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::gateway::TestGateway;
use tsuzuku_testkit::lines::LineLog;
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const NAME: &str = "_tsuzuku-dr.example.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_drill_reports_when_each_connector_entered_and_left_dr_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = Upstream::start().await.unwrap();

    // The normal site and the control plane that publishes it.
    let mut gw = TestGateway::init(BIN).unwrap();
    gw.add_app_with_policy(
        "app",
        &up.url(),
        r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
    )
    .unwrap();
    gw.start().await.unwrap();
    let cport = gw.use_control_port().unwrap();
    let public = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    std::fs::write(dir.join("snapshot-trust.pem"), &public).unwrap();
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
    let _control = gw.start_control().await.unwrap();

    // Nothing reported yet.
    let out = gw.cli_ok(&["--json", "dr", "drill"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["episodes"], serde_json::json!([]), "{out}");

    // The DR key and the DNS server the record is published in.
    let key = keys::generate();
    let dr_public = dir.join("dr-public-key.pem");
    std::fs::write(
        &dr_public,
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let dns = TestDns::start("example.test").await.unwrap();

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
        .arg(dir.join("snapshot-trust.pem"))
        .arg("--control-ca")
        .arg(&ca)
        .arg("--ca")
        .arg(&ca)
        .arg("--site-cache")
        .arg(dir.join("sites.json"))
        .args(["--device-id", "laptop-1", "--report-every", "1s"])
        .args(["--dr-record", NAME, "--dr-dns", &dns.addr().to_string()])
        .arg("--dr-trust")
        .arg(&dr_public)
        .args(["--dr-interval", "1s"])
        .args(["--dr-gateway", "localhost@127.0.0.2:9"])
        .args(["--dr-group", "drill-team"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = LineLog::spawn_from(connector.stdout.take().unwrap());
    log.wait_lines("site: tokyo", 1, Duration::from_secs(15))
        .await
        .unwrap();
    log.wait_lines("dr: normal", 1, Duration::from_secs(15))
        .await
        .unwrap();
    // Reports in normal mode record nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = gw.cli_ok(&["--json", "dr", "drill"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["episodes"], serde_json::json!([]), "{out}");

    // A drill for the connector's group.
    let t = jiff::Timestamp::now().as_second();
    let drill = RecordFields {
        state: DrState::Test,
        internet: Some(InternetMode::Open),
        issued_at: t,
        not_before: t - 300,
        not_after: t + 3600,
        groups: BTreeSet::from(["drill-team".to_owned()]),
        devices: BTreeSet::new(),
    };
    let strings = split_strings(&sign(&drill, &key).unwrap());
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    let published = Instant::now();
    dns.set_txt(NAME, &refs).await.unwrap();
    log.wait_lines("dr: active", 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        log.any(|l| l.starts_with("dr: active") && l.contains("drill=true")),
        "{:?}",
        log.lines()
    );
    // The control plane hears of it within a report interval or two.
    let start = Instant::now();
    loop {
        let out = gw.cli_ok(&["--json", "dr", "drill"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v["episodes"].as_array().is_some_and(|e| e.len() == 1) {
            let e = &v["episodes"][0];
            assert_eq!(e["device"], "laptop-1", "{out}");
            assert_eq!(e["drill"], true, "{out}");
            assert_eq!(e["ongoing"], true, "{out}");
            assert!(e["left_ms"].is_null(), "{out}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the drill was not reported: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The record is withdrawn: the connector returns to normal by itself.
    dns.remove_txt(NAME).await.unwrap();
    let withdrawn = Instant::now();
    log.wait_lines("dr: normal", 2, Duration::from_secs(15))
        .await
        .unwrap();
    let in_drill = withdrawn - published;
    let start = Instant::now();
    let episode = loop {
        let out = gw
            .cli_ok(&["--json", "dr", "drill", "--since", "1h"])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = v["episodes"][0].clone();
        if !e["back_ms"].is_null() {
            assert_eq!(v["episodes"].as_array().unwrap().len(), 1, "{out}");
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the return was not reported: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(episode["device"], "laptop-1");
    assert_eq!(episode["drill"], true);
    assert_eq!(episode["ongoing"], false);
    let entered = episode["entered_ms"].as_i64().unwrap();
    let left = episode["left_ms"].as_i64().unwrap();
    let back = episode["back_ms"].as_i64().unwrap();
    assert!(entered < left && left <= back, "{episode}");
    // Times are the connector's, to the second: the drill lasted about as long as the record
    // was published.
    let d = Duration::from_millis(u64::try_from(episode["duration_ms"].as_i64().unwrap()).unwrap());
    eprintln!("drill: published for {in_drill:?}, reported in DR mode for {d:?}");
    assert!(
        d + Duration::from_secs(3) >= in_drill && d <= in_drill + Duration::from_secs(3),
        "published {in_drill:?}, reported {d:?}"
    );

    // The table for people.
    let text = gw.cli_ok(&["dr", "drill", "--since", "1h"]).unwrap();
    assert!(
        text.contains("laptop-1") && text.contains("drill"),
        "{text}"
    );
    // A bad window is refused with the flag named.
    let out = gw.cli(&["dr", "drill", "--since", "soon"]).unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--since"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
