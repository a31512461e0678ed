//! Issue 5 item 3, device trust in disaster-recovery mode: the DR gateway mirrors the control
//! plane's enrolled devices (revocations included) and device CA, so in DR mode it knows the
//! device of every request and decides with its posture, exactly like a normal site.
//!
//! Real parts: a control plane publishing snapshots and the signed site list (a normal site and
//! a DR site), the normal gateway, a DR gateway following the control plane
//! (`serve --role dr-gateway`, on 127.0.0.2 at the normal gateway's port so app URLs are the
//! same), a DNS server (hickory, in-process) serving the signed record, a real process as the
//! antivirus, and the real `tsuzuku connect` with an enrolled device and no local DR settings
//! but the record: the DR gateway, the critical app and the sign-in portal all come from the
//! site list. After the record is published, the control plane and the normal gateway are
//! killed; the user signs in at the DR gateway with her device alone (device sign-in: the
//! laptop was enrolled for her; a browser without the connector is refused, and her password
//! without the device gets her signed in but refused by the policy), the
//! policy's posture condition decides (refused while the antivirus is too old, allowed again
//! without a new sign-in once it is fixed), the DR gateway's audit names the device, and a
//! device revoked before the disaster is refused there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::connect::{Connector, connect_answer};
use tsuzuku_testkit::device::Antivirus;
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::gateway::{TestGateway, sign_in, sign_in_with_device};
use tsuzuku_testkit::upstream::Upstream;
use tsuzuku_testkit::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");
const NAME: &str = "_tsuzuku-dr.example.test";
/// Antivirus 3.0 or newer, running, on a company-issued device.
const POLICY: &str = r#"
permit (principal in Tsuzuku::Group::"staff", action, resource == Tsuzuku::App::"app")
when {
  context has device &&
  context.device.company_issued &&
  context.device.antivirus_running &&
  context.device.antivirus_version >= 300000000000000
};
"#;

/// How long each wait for a posture report to decide may take.
const TEN_SECONDS: Duration = Duration::from_secs(10);

/// Enrols a device at the control plane with a fresh company-issued token, for `user` if given.
fn enrol(gw: &TestGateway, cport: u16, ca: &Path, name: &str, dir: &Path, user: Option<&str>) {
    let mut args = vec!["device", "token", "--company-issued", "--valid-for", "10m"];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let token = gw.cli_ok(&args).unwrap().trim().to_owned();
    let out = std::process::Command::new(BIN)
        .args(["connect", "enroll", "--control"])
        .arg(format!("https://127.0.0.1:{cport}"))
        .arg("--control-ca")
        .arg(ca)
        .args(["--token", &token, "--name", name, "--device-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `tsuzuku connect` following the control plane's site list, with the DR record and
/// the device of `device_dir`.
async fn connector(
    cport: u16,
    dir: &Path,
    dns: &TestDns,
    device_dir: &Path,
    port: u16,
    extra: &[&std::ffi::OsStr],
) -> Connector {
    let state = dir.join(format!(
        "state-{}",
        device_dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&state).unwrap();
    Connector::start(
        tokio::process::Command::new(BIN)
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
            .arg(dir.join("control-ca.pem"))
            .arg("--ca")
            .arg(dir.join("cas.pem"))
            .arg("--site-cache")
            .arg(state.join("sites.json"))
            .args(["--dr-record", NAME, "--dr-dns", &dns.addr().to_string()])
            .arg("--dr-trust")
            .arg(dir.join("dr-public-key.pem"))
            .args(["--dr-interval", "1s"])
            .arg("--dr-state")
            .arg(state.join("dr-state.json"))
            .arg("--device-dir")
            .arg(device_dir)
            .args(["--allow-port", &port.to_string()])
            .args(["--posture-every", "1s"])
            .args(extra)
            .env("TSUZUKU_LOG", "info")
            .stderr(Stdio::inherit()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_gateway_knows_enrolled_devices_decides_on_posture_and_refuses_revoked_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let up = Upstream::start().await.unwrap();

    // The normal site, and the control plane on its data directory.
    let mut gw = TestGateway::init(BIN).unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    // Only critical apps are served in DR mode.
    gw.cli_ok(&[
        "app",
        "add",
        "app",
        "--host",
        &gw.host("app"),
        "--upstream",
        &up.url(),
        "--critical",
    ])
    .unwrap();
    std::fs::write(dir.join("policy.cedar"), POLICY).unwrap();
    gw.cli_ok(&[
        "policy",
        "apply",
        dir.join("policy.cedar").to_str().unwrap(),
    ])
    .unwrap();
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
    let cport = gw.use_control_port().unwrap();
    gw.start().await.unwrap();
    let mut control = gw.start_control().await.unwrap();
    let control_ca = gw.data().join("tls").join("ca.pem");
    std::fs::copy(&control_ca, dir.join("control-ca.pem")).unwrap();

    // Two devices; the second is revoked before the disaster.
    let laptop = dir.join("laptop");
    let stolen = dir.join("stolen");
    enrol(&gw, cport, &control_ca, "laptop-1", &laptop, Some("alice"));
    enrol(&gw, cport, &control_ca, "stolen-2", &stolen, Some("alice"));
    gw.cli_ok(&["device", "revoke", "stolen-2"]).unwrap();
    let list = gw.cli_ok(&["--json", "device", "list"]).unwrap();
    let devices: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    let laptop_id = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "laptop-1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The DR gateway follows the control plane into its own store.
    let mut drgw = TestGateway::init(BIN).unwrap();
    drgw.set_config("listen", &format!("\"{dr_addr}\""))
        .unwrap();
    drgw.set_config("portal_host", &format!("\"auth.localhost:{}\"", gw.port))
        .unwrap();
    drgw.set_config("device_sign_in", "true").unwrap();
    drgw.follow_as_dr_gateway(&gw, cport).unwrap();
    drgw.start_with(&["--role", "dr-gateway"]).await.unwrap();
    let start = Instant::now();
    loop {
        let l = drgw.cli_ok(&["--json", "device", "list"]);
        if l.as_ref()
            .is_ok_and(|l| l.contains("laptop-1") && l.contains("stolen-2"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the DR gateway did not mirror both devices: {l:?}\n{}",
            drgw.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The DR key, the DNS server, and both gateways' CAs for the connector and the browser.
    let key = keys::generate();
    std::fs::write(
        dir.join("dr-public-key.pem"),
        keys::verifying_key_to_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
    let dns = TestDns::start("example.test").await.unwrap();
    let mut cas = gw.ca_pem().unwrap();
    cas.extend(drgw.ca_pem().unwrap());
    std::fs::write(dir.join("cas.pem"), &cas).unwrap();

    // A real process stands for the antivirus; its version command prints a version we change.
    let av = Antivirus::start(dir, "3.1.0").unwrap();

    let conn = connector(
        cport,
        dir,
        &dns,
        &laptop,
        gw.port,
        &[
            "--av-process".as_ref(),
            av.name().as_ref(),
            "--av-version-cmd".as_ref(),
            av.version_cmd().as_os_str(),
        ],
    )
    .await;
    conn.stdout
        .wait_line("site: tokyo", Duration::from_secs(15))
        .await
        .unwrap();
    conn.stdout
        .wait_line("dr: normal", Duration::from_secs(5))
        .await
        .unwrap();

    // The disaster: the record is published, the control plane and the normal site are lost.
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
    dns.set_txt(
        NAME,
        &split_strings(&sign(&on, &key).unwrap())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    conn.stdout
        .wait_line("dr: active", Duration::from_secs(5))
        .await
        .unwrap();
    control.start_kill().unwrap();
    control.wait().await.unwrap();
    gw.kill9().await.unwrap();

    let mut builder = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", conn.proxy)).unwrap())
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5));
    for pem in [gw.ca_pem().unwrap(), drgw.ca_pem().unwrap()] {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    let c = builder.build().unwrap();

    // Without the connector (no device): no device button, device sign-in refused, and a
    // password sign-in is refused by the policy (it needs the device's posture).
    let direct = reqwest::Client::builder()
        .resolve("auth.localhost", dr_addr.parse().unwrap())
        .resolve("app.localhost", dr_addr.parse().unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&drgw.ca_pem().unwrap()).unwrap())
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let login = gw.url("auth", "/.tsuzuku/login");
    let page = direct
        .get(&login)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("with this device"), "{page}");
    let s = sign_in_with_device(&direct, &gw.url("app", "/"))
        .await
        .unwrap();
    assert_eq!(s.status, 403, "{}", s.body);
    assert!(
        s.body.contains("No enrolled device was recognised"),
        "{}",
        s.body
    );
    let s = sign_in(&direct, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(403), "{s:?}");

    // Through the connector, the DR gateway's portal (a critical host from the site list, not a
    // local setting) offers device sign-in, and the device alone signs alice in; the posture
    // reported there allows her.
    let page = c.get(&login).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Continue as alice with this device (laptop-1)"),
        "{page}"
    );
    let s = sign_in_with_device(&c, &gw.url("app", "/")).await.unwrap();
    assert_eq!(s.status, 303, "{}\n{}", s.body, drgw.stderr_text());
    eventually(
        TEN_SECONDS,
        "access at the DR gateway with antivirus 3.1.0",
        || async { c.get(gw.url("app", "/dr")).send().await.unwrap().status() == 200 },
    )
    .await
    .unwrap();
    let r = c.get(gw.url("app", "/dr")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("alice"));

    // The posture condition decides there too: too old is refused, fixed is allowed again, on
    // the same session.
    av.set_version("2.9.1").unwrap();
    eventually(
        TEN_SECONDS,
        "a refusal at the DR gateway for antivirus 2.9.1",
        || async { c.get(gw.url("app", "/dr")).send().await.unwrap().status() == 403 },
    )
    .await
    .unwrap();
    av.set_version("3.0.0").unwrap();
    eventually(TEN_SECONDS, "access again at antivirus 3.0.0", || async {
        c.get(gw.url("app", "/dr")).send().await.unwrap().status() == 200
    })
    .await
    .unwrap();

    // The DR gateway's own audit trail names the device, and the sign-in's method.
    let tail = drgw
        .cli_ok(&["--json", "audit", "tail", "-n", "5", "--kind", "decision"])
        .unwrap();
    assert!(tail.contains(&laptop_id), "{tail}");
    let logins = drgw
        .cli_ok(&["--json", "audit", "tail", "-n", "200", "--kind", "login"])
        .unwrap();
    assert!(logins.contains(r#""method":"device""#), "{logins}");
    assert!(
        logins.contains("no enrolled device on the connection"),
        "{logins}"
    );

    // The device revoked before the disaster stays refused at the DR gateway. (With the control
    // plane gone, its connector starts from the site list the first one cached.)
    std::fs::create_dir_all(dir.join("state-stolen")).unwrap();
    std::fs::copy(
        dir.join("state-laptop").join("sites.json"),
        dir.join("state-stolen").join("sites.json"),
    )
    .unwrap();
    let revoked = connector(cport, dir, &dns, &stolen, gw.port, &[]).await;
    revoked
        .stdout
        .wait_line("dr: active", Duration::from_secs(10))
        .await
        .unwrap();
    // The status line and the explanation may come in separate writes.
    let answer = connect_answer(&revoked.proxy, &format!("app.localhost:{}", gw.port))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("refused the device tunnel"), "{answer}");
}
