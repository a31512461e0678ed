//! Device trust end to end (issue 4 item 8): a real control plane enrols a device with a
//! one-time token; the real connector presents the device certificate to the real gateway
//! (mutual TLS, device tunnels), collects the device's posture for real (a running antivirus
//! process and the version its command prints) and reports it signed; a policy demanding a
//! minimum antivirus version refuses and then allows the same session as the version changes,
//! without a new sign-in. The session is bound to the device, a revoked device is refused, and
//! forged or unauthenticated posture reports are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tsuzuku_testkit::connect::Connector;
use tsuzuku_testkit::device::Antivirus;
use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;
use tsuzuku_testkit::wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

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

/// How long each wait for the connector, a posture report or a revocation may take.
const TEN_SECONDS: Duration = Duration::from_secs(10);

#[tokio::test]
async fn posture_decides_access_on_the_same_session_and_revocation_ends_it() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), POLICY).unwrap();
    let cport = gw.use_control_port().unwrap();
    gw.start().await.unwrap();
    let _control = gw.start_control().await.unwrap();
    let ca = gw.data().join("tls").join("ca.pem");

    // Enrolment with a one-time token; the token does not work twice.
    let token = gw
        .cli_ok(&["device", "token", "--company-issued", "--valid-for", "10m"])
        .unwrap()
        .trim()
        .to_owned();
    let work = tempfile::tempdir().unwrap();
    let device_dir = work.path().join("device");
    let enrol = |dir: &std::path::Path| {
        std::process::Command::new(BIN)
            .args(["connect", "enroll", "--control"])
            .arg(format!("https://127.0.0.1:{cport}"))
            .arg("--control-ca")
            .arg(&ca)
            .args(["--token", &token, "--name", "laptop-7", "--device-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    // Without the control plane's CA the refusal says why: the certificate, not just "error
    // sending request".
    let untrusted = std::process::Command::new(BIN)
        .args(["connect", "enroll", "--control"])
        .arg(format!("https://127.0.0.1:{cport}"))
        .args(["--token", &token, "--name", "laptop-7", "--device-dir"])
        .arg(work.path().join("untrusted"))
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = enrol(&device_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("company-issued"), "{said}");
    let again = enrol(&work.path().join("other"));
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already used"), "{err}");
    let list = gw.cli_ok(&["--json", "device", "list"]).unwrap();
    let devices: serde_json::Value = serde_json::from_str(list.trim()).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 1, "{list}");
    let device_id = devices[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(devices[0]["name"], "laptop-7");

    // A real process stands for the antivirus; its version command prints a version we change.
    // A name no other run uses, killed however the test ends.
    let mut av = Antivirus::start(work.path(), "2.9.1").unwrap();

    let connector = Connector::start(
        tokio::process::Command::new(BIN)
            .args(["connect", "--listen", "127.0.0.1:0"])
            .arg("--site")
            .arg(format!("a=localhost@{}", gw.addr()))
            .args([
                "--app-domain",
                "localhost",
                "--allow-port",
                &gw.port.to_string(),
            ])
            .arg("--ca")
            .arg(&ca)
            .arg("--device-dir")
            .arg(&device_dir)
            .args(["--av-process", av.name(), "--posture-every", "1s"])
            .arg("--av-version-cmd")
            .arg(av.version_cmd())
            .stderr(Stdio::inherit()),
    )
    .await
    .unwrap();
    let proxy = &connector.proxy;

    let jar = Arc::new(reqwest::cookie::Jar::default());
    let ca_cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .add_root_certificate(ca_cert.clone())
        .tls_built_in_root_certs(false)
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Wait until the connector uses the site (the first request may race its first probe).
    eventually(TEN_SECONDS, "the connector reaches the gateway", || async {
        c.get(gw.url("app", "/")).send().await.is_ok()
    })
    .await
    .unwrap();

    // Antivirus 2.9.1: signed in, but refused by policy.
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &password, None)
        .await
        .unwrap();
    assert_eq!(s.status, 303, "{}", s.body);
    eventually(TEN_SECONDS, "a refusal for antivirus 2.9.1", || async {
        c.get(gw.url("app", "/x")).send().await.unwrap().status() == 403
    })
    .await
    .unwrap();
    let body = c
        .get(gw.url("app", "/x"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("Access denied"), "{body}");

    // Fixed: the same session is allowed, no new sign-in.
    av.set_version("3.1.0").unwrap();
    eventually(
        TEN_SECONDS,
        "access once antivirus 3.1.0 is reported",
        || async { c.get(gw.url("app", "/x")).send().await.unwrap().status() == 200 },
    )
    .await
    .unwrap();
    // Downgraded: refused again; then fixed again: allowed.
    av.set_version("2.0").unwrap();
    eventually(
        TEN_SECONDS,
        "refusal once antivirus 2.0 is reported",
        || async { c.get(gw.url("app", "/x")).send().await.unwrap().status() == 403 },
    )
    .await
    .unwrap();
    av.set_version("3.0.0").unwrap();
    eventually(TEN_SECONDS, "access again at antivirus 3.0.0", || async {
        c.get(gw.url("app", "/x")).send().await.unwrap().status() == 200
    })
    .await
    .unwrap();
    // The antivirus stops: refused (not running).
    av.stop().unwrap();
    eventually(
        TEN_SECONDS,
        "refusal once the antivirus stopped",
        || async { c.get(gw.url("app", "/x")).send().await.unwrap().status() == 403 },
    )
    .await
    .unwrap();

    // The audit trail names the device on each decision.
    let tail = gw.cli_ok(&["--json", "audit", "tail", "-n", "5"]).unwrap();
    assert!(tail.contains(&device_id), "{tail}");

    // The session is bound to the device: the same cookie without the device is refused.
    let direct = reqwest::Client::builder()
        .resolve("app.localhost", gw.addr())
        .add_root_certificate(ca_cert.clone())
        .tls_built_in_root_certs(false)
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = direct.get(gw.url("app", "/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("another device"));

    // Posture reports: only over mutual TLS, only signed by the device's own key.
    let posture_url = format!("https://localhost:{}/.tsuzuku/device/posture", gw.port);
    let r = direct.post(&posture_url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let mut pem = std::fs::read(device_dir.join("device.crt")).unwrap();
    pem.extend(std::fs::read(device_dir.join("device.key")).unwrap());
    let as_device = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .add_root_certificate(ca_cert.clone())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let other_key = tsuzuku_device::DeviceKey::generate().unwrap();
    let forged = tsuzuku_device::SignedPosture::sign(
        &tsuzuku_device::Posture {
            device_id: device_id.clone(),
            collected_at: jiff::Timestamp::now().as_second(),
            os: "linux".into(),
            os_version: "12".into(),
            os_name: "x".into(),
            kernel: "x".into(),
            disk_encrypted: true,
            antivirus: Some("tzk-av".into()),
            antivirus_running: true,
            antivirus_version: Some("9.9".into()),
        },
        &other_key,
    )
    .unwrap();
    let r = as_device
        .post(&posture_url)
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("does not verify"));
    let r = as_device
        .post(&posture_url)
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The forged report changed nothing: still refused.
    assert_eq!(
        c.get(gw.url("app", "/x")).send().await.unwrap().status(),
        403
    );

    // Revocation: the gateway refuses the device from its next reload.
    gw.cli_ok(&["device", "revoke", "laptop-7"]).unwrap();
    eventually(TEN_SECONDS, "the revoked device refused", || async {
        let r = as_device
            .post(&posture_url)
            .json(&forged)
            .send()
            .await
            .unwrap();
        r.status() == 403 && r.text().await.unwrap().contains("revoked")
    })
    .await
    .unwrap();
    // Through the connector, its tunnels are refused now.
    let fresh = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .add_root_certificate(ca_cert)
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(fresh.get(gw.url("app", "/x")).send().await.is_err());
}
