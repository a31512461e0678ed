//! Issue 4 items 2 and 6: the connector takes its sites from the control plane's signed site
//! list, keeps it on disk and starts from it while the control plane is down; an operator's
//! `tsuzuku site exclude … --for` moves it off a site within one refresh and it comes back by
//! itself when the exclusion expires.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tsuzuku_testkit::gateway::TestGateway;
use tsuzuku_testkit::lines::LineLog;
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

struct Connect {
    _child: Child,
    log: LineLog,
}

async fn start_connect(gw: &TestGateway, cport: u16, cache: &std::path::Path) -> Connect {
    let ca = gw.data().join("tls").join("ca.pem");
    let mut child = Command::new(BIN)
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
        .arg(gw.data().join("snapshot-trust.pem"))
        .arg("--control-ca")
        .arg(&ca)
        .arg("--ca")
        .arg(&ca)
        .arg("--site-cache")
        .arg(cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = LineLog::spawn_from(child.stdout.take().unwrap());
    Connect { _child: child, log }
}

impl Connect {
    /// The site the connector last announced.
    fn site(&self) -> Option<String> {
        self.log
            .lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("site: ").map(|s| s.to_owned()))
    }

    async fn wait_site(&self, prefix: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.site().is_some_and(|s| s.starts_with(prefix)) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "connector not on {prefix:?} after {within:?}: {:?}",
                self.log.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn connectors_follow_the_signed_site_list_and_time_limited_exclusions() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    gw.add_app_with_policy(
        "app",
        &up.url(),
        r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
    )
    .unwrap();
    gw.start().await.unwrap();
    let site_b = gw.start_node().await.unwrap();
    let cport = gw.use_control_port().unwrap();
    let public = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    std::fs::write(gw.data().join("snapshot-trust.pem"), &public).unwrap();

    // Bad input is refused with a message.
    let out = gw
        .cli(&[
            "site",
            "add",
            "x",
            "--host",
            "localhost",
            "--endpoint",
            "nohost:1",
        ])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--endpoint"));

    gw.cli_ok(&[
        "site",
        "add",
        "tokyo",
        "--host",
        "localhost",
        "--endpoint",
        &gw.addr().to_string(),
        "--preference",
        "1",
    ])
    .unwrap();
    gw.cli_ok(&[
        "site",
        "add",
        "osaka",
        "--host",
        "localhost",
        "--endpoint",
        &site_b.addr.to_string(),
        "--preference",
        "2",
    ])
    .unwrap();
    let mut control = gw.start_control().await.unwrap();
    let cache = gw.data_dir().join("connector-sites.json");
    let connect = start_connect(&gw, cport, &cache).await;
    connect.wait_site("tokyo", Duration::from_secs(15)).await;

    // Maintenance: every connector moves off tokyo within one refresh, and comes back by itself.
    let out = gw
        .cli_ok(&[
            "site",
            "exclude",
            "tokyo",
            "--for",
            "6s",
            "--reason",
            "maintenance",
        ])
        .unwrap();
    assert!(out.contains("excluded gateway site tokyo"), "{out}");
    let list = gw.cli_ok(&["site", "list"]).unwrap();
    assert!(list.contains("maintenance"), "{list}");
    let moved = connect.wait_site("osaka", Duration::from_secs(5)).await;
    eprintln!("TIMING exclude -> connector moved: {moved:?}");
    let back = connect.wait_site("tokyo", Duration::from_secs(40)).await;
    eprintln!("TIMING exclusion expiry (6 s) -> back on tokyo after {back:?} from the move");
    let list = gw.cli_ok(&["--json", "site", "list"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(v[0]["excluded_until_ms"].is_null(), "{list}");

    // Experience monitoring: the connector reports its site and latency; `tsuzuku status`
    // shows connectors per site.
    let start = Instant::now();
    loop {
        let out = gw.cli_ok(&["--json", "status"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let sites = v["sites"].as_array().cloned().unwrap_or_default();
        if sites.iter().any(|s| {
            s["site"] == "tokyo" && s["connectors"] == 1 && s["median_latency_ms"].is_i64()
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "no report: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The control plane goes away: a new connector starts from the copy on disk.
    control.start_kill().unwrap();
    control.wait().await.unwrap();
    drop(connect);
    let again = start_connect(&gw, cport, &cache).await;
    again.wait_site("tokyo", Duration::from_secs(15)).await;

    // A tampered copy on disk is refused; with no control plane there is nothing to start from.
    drop(again);
    let raw = std::fs::read_to_string(&cache).unwrap();
    std::fs::write(&cache, raw.replace("\"sig\":\"", "\"sig\":\"AAAA")).unwrap();
    let out = Command::new(BIN)
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
        .arg(gw.data().join("snapshot-trust.pem"))
        .arg("--site-cache")
        .arg(&cache)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no site list"), "{err}");
    assert!(err.contains("refused"), "{err}");
}

/// Issue 4 item 7: a site over its load threshold tells connectors to prefer another site.
#[tokio::test]
async fn an_overloaded_site_moves_connectors_to_a_site_with_capacity() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    gw.add_app_with_policy(
        "app",
        &up.url(),
        r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
    )
    .unwrap();
    // osaka: an ordinary node; tokyo: a node that reports its load to the control plane.
    let site_b = gw.start_node().await.unwrap();
    let cport = gw.use_control_port().unwrap();
    let public = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    std::fs::write(gw.data().join("snapshot-trust.pem"), &public).unwrap();
    let gw_addr = gw.addr().to_string();
    let b_addr = site_b.addr.to_string();
    for (name, addr, pref, cap) in [
        ("tokyo", gw_addr.as_str(), "1", "20"),
        ("osaka", b_addr.as_str(), "2", "100000"),
    ] {
        gw.cli_ok(&[
            "site",
            "add",
            name,
            "--host",
            "localhost",
            "--endpoint",
            addr,
            "--preference",
            pref,
            "--capacity-rps",
            cap,
        ])
        .unwrap();
    }
    let _control = gw.start_control().await.unwrap();
    gw.append_config(&format!(
        "[snapshot]\ncontrol_url = \"https://127.0.0.1:{cport}\"\ntrust = \"snapshot-trust.pem\"\n\
         ca_file = \"tls/ca.pem\"\nsite = \"tokyo\"\n"
    ))
    .unwrap();
    gw.start().await.unwrap();
    let cache = gw.data_dir().join("connector-sites.json");
    let connect = start_connect(&gw, cport, &cache).await;
    connect.wait_site("tokyo", Duration::from_secs(15)).await;

    // Load on tokyo: about 50 requests per second against a capacity of 20.
    let c = gw.client(&["app"]).unwrap();
    let url = gw.url("app", "/healthz");
    let hammer = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) {
            let _ = c.get(&url).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let moved = connect.wait_site("osaka", Duration::from_secs(8)).await;
    eprintln!("TIMING load over the threshold -> connector moved: {moved:?}");
    let site = connect.site().unwrap();
    assert!(site.contains("shedding"), "{site}");
    hammer.abort();
}

/// CLI review: a control plane that answered with an empty site list made the connector say
/// "the control plane … gave none", as if it had never answered. It says it answered with no
/// gateway sites (a DR site alone is not one) and what to do.
#[tokio::test]
async fn a_control_plane_with_no_gateway_sites_is_named_as_such() {
    let gw = TestGateway::init(BIN).unwrap();
    let cport = gw.use_control_port().unwrap();
    let public = gw.cli_ok(&["keys", "snapshot-public"]).unwrap();
    std::fs::write(gw.data().join("snapshot-trust.pem"), &public).unwrap();
    gw.cli_ok(&[
        "site",
        "add",
        "dr",
        "--host",
        "localhost",
        "--endpoint",
        "127.0.0.1:9",
        "--dr",
    ])
    .unwrap();
    let _control = gw.start_control().await.unwrap();
    let cache = gw.data_dir().join("connector-sites.json");
    let out = Command::new(BIN)
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
        .arg(gw.data().join("snapshot-trust.pem"))
        .arg("--control-ca")
        .arg(gw.data().join("tls").join("ca.pem"))
        .arg("--site-cache")
        .arg(&cache)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the control plane at https://127.0.0.1:{cport} answered with no gateway sites"
        )),
        "{err}"
    );
    assert!(err.contains("tsuzuku site add"), "{err}");
    assert!(!err.contains("gave none"), "{err}");
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{err}"
    );
}
