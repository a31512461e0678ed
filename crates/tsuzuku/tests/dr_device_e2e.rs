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
//! killed; the user signs in at the DR gateway through the connector's device tunnel, the
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
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tsuzuku_dr::keys;
use tsuzuku_dr::record::{DrState, InternetMode, RecordFields, sign, split_strings};
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

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

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it returns true, for at most `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_line(log: &Arc<Mutex<Vec<String>>>, prefix: &str, within: Duration) {
    let start = Instant::now();
    while !log.lock().unwrap().iter().any(|l| l.starts_with(prefix)) {
        assert!(
            start.elapsed() < within,
            "no line {prefix:?} within {within:?}: {:#?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enrols a device at the control plane with a fresh company-issued token.
fn enrol(gw: &TestGateway, cport: u16, ca: &Path, name: &str, dir: &Path) {
    let token = gw
        .cli_ok(&["device", "token", "--company-issued", "--valid-for", "10m"])
        .unwrap()
        .trim()
        .to_owned();
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

/// The running connector: its proxy address and its stdout lines.
struct Connector {
    _child: tokio::process::Child,
    proxy: String,
    log: Arc<Mutex<Vec<String>>>,
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
    let mut child = tokio::process::Command::new(BIN)
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
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut proxy = String::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        if let Some(a) = l.strip_prefix("READY ") {
            proxy = a.to_owned();
            break;
        }
    }
    assert!(!proxy.is_empty());
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
    }
    Connector {
        _child: child,
        proxy,
        log,
    }
}

/// A raw `CONNECT` through the proxy; returns the status line.
async fn connect_status(proxy: &str, target: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    // The status line and the explanation may come in separate writes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
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
    enrol(&gw, cport, &control_ca, "laptop-1", &laptop);
    enrol(&gw, cport, &control_ca, "stolen-2", &stolen);
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

    // A real process stands for the antivirus; its version command reads a file we change.
    let av_name = format!("tzkdr{}", std::process::id());
    let av = dir.join(&av_name);
    std::fs::copy("/bin/sleep", &av).unwrap();
    let _av_proc = KillOnDrop(std::process::Command::new(&av).arg("600").spawn().unwrap());
    let version_file = dir.join("av-version");
    std::fs::write(&version_file, "TzkAV 3.1.0\n").unwrap();
    let version_cmd: PathBuf = dir.join("av-version.sh");
    std::fs::write(
        &version_cmd,
        format!("#!/bin/sh\ncat {}\n", version_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &version_cmd,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let conn = connector(
        cport,
        dir,
        &dns,
        &laptop,
        gw.port,
        &[
            "--av-process".as_ref(),
            av_name.as_ref(),
            "--av-version-cmd".as_ref(),
            version_cmd.as_os_str(),
        ],
    )
    .await;
    wait_line(&conn.log, "site: tokyo", Duration::from_secs(15)).await;
    wait_line(&conn.log, "dr: normal", Duration::from_secs(5)).await;

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
    wait_line(&conn.log, "dr: active", Duration::from_secs(5)).await;
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

    // Alice signs in at the DR gateway's portal (a critical host from the site list, not a
    // local setting) through the device tunnel; the posture reported there allows her.
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.status, 303, "{}\n{}", s.body, drgw.stderr_text());
    eventually(
        10,
        "access at the DR gateway with antivirus 3.1.0",
        || async { c.get(gw.url("app", "/dr")).send().await.unwrap().status() == 200 },
    )
    .await;
    let r = c.get(gw.url("app", "/dr")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("alice"));

    // The posture condition decides there too: too old is refused, fixed is allowed again, on
    // the same session.
    std::fs::write(&version_file, "TzkAV 2.9.1\n").unwrap();
    eventually(
        10,
        "a refusal at the DR gateway for antivirus 2.9.1",
        || async { c.get(gw.url("app", "/dr")).send().await.unwrap().status() == 403 },
    )
    .await;
    std::fs::write(&version_file, "TzkAV 3.0.0\n").unwrap();
    eventually(10, "access again at antivirus 3.0.0", || async {
        c.get(gw.url("app", "/dr")).send().await.unwrap().status() == 200
    })
    .await;

    // The DR gateway's own audit trail names the device.
    let tail = drgw
        .cli_ok(&["--json", "audit", "tail", "-n", "5", "--kind", "decision"])
        .unwrap();
    assert!(tail.contains(&laptop_id), "{tail}");

    // The device revoked before the disaster stays refused at the DR gateway. (With the control
    // plane gone, its connector starts from the site list the first one cached.)
    std::fs::create_dir_all(dir.join("state-stolen")).unwrap();
    std::fs::copy(
        dir.join("state-laptop").join("sites.json"),
        dir.join("state-stolen").join("sites.json"),
    )
    .unwrap();
    let revoked = connector(cport, dir, &dns, &stolen, gw.port, &[]).await;
    wait_line(&revoked.log, "dr: active", Duration::from_secs(10)).await;
    let answer = connect_status(&revoked.proxy, &format!("app.localhost:{}", gw.port)).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("refused the device tunnel"), "{answer}");
}
