//! A real browser through the connector's PAC file (issue 4, item 1): headless Chromium, given
//! nothing but `--proxy-pac-url` of a running `tsuzuku connect`, opens an app, is sent to the
//! gateway's sign-in form, signs in there and lands on the app, which shows the identity the
//! gateway asserted. The app and portal live under `tsuzuku.test`, a name no DNS server answers
//! for, so the browser can only reach them by handing them to the connector as the PAC file says;
//! the test checks that every response came from the connector's address.
//!
//! Chromium is driven over the DevTools protocol (a WebSocket on a loopback port it picks). It
//! trusts the gateway's certificate through `--ignore-certificate-errors-spki-list` with the
//! SHA-256 of the gateway key's SubjectPublicKeyInfo: only that key is accepted, every other
//! certificate error still fails.
//!
//! Without Chromium the test is skipped with a loud message, unless `CI` is set: then it fails.
//! `scripts/install-test-deps.sh` installs it. `TSUZUKU_CHROMIUM` names another binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tsuzuku_testkit::connect::Connector;
use tsuzuku_testkit::gateway::TestGateway;
use tsuzuku_testkit::lines::LineLog;
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

/// The organisation's app domain in this test: reserved (RFC 6761), never resolvable.
const APP_DOMAIN: &str = "tsuzuku.test";

/// How long any one step (a page load, the sign-in) may take.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn headless_chromium_signs_in_and_reaches_an_app_through_the_pac_file() {
    let Some(chromium) = chromium_binary() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "Chromium is not installed but CI is set: the browser test must run in CI. \
                 Install it with scripts/install-test-deps.sh (apt-get install chromium) or point \
                 TSUZUKU_CHROMIUM at a Chromium binary."
            );
        }
        // Straight to the process's stderr, past the test harness's output capture, so that
        // `cargo test` shows it although the test passes.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED browser_e2e: no Chromium found (chromium, chromium-browser, \
             google-chrome on PATH, or TSUZUKU_CHROMIUM).\n!!!!! The PAC file is NOT tested with \
             a real browser. Install it with scripts/install-test-deps.sh.\n"
        );
        return;
    };
    let started = Instant::now();

    // A gateway whose app and portal are under the app domain.
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let password = gw.add_user("alice", "staff").unwrap();
    let app_host = format!("app.{APP_DOMAIN}:{}", gw.port);
    let portal_host = format!("auth.{APP_DOMAIN}:{}", gw.port);
    gw.cli_ok(&[
        "app",
        "add",
        "app",
        "--host",
        &app_host,
        "--upstream",
        &up.url(),
    ])
    .unwrap();
    let policy = gw.data_dir().join("staff.cedar");
    std::fs::write(
        &policy,
        r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
    )
    .unwrap();
    gw.cli_ok(&["policy", "apply", &policy.to_string_lossy()])
        .unwrap();
    gw.set_config("portal_host", &format!("\"{portal_host}\""))
        .unwrap();
    gw.start().await.unwrap();

    // The names resolve nowhere: whatever reaches them went through the connector.
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host(app_host.as_str()),
    )
    .await;
    assert!(
        !matches!(lookup, Ok(Ok(_))),
        "{app_host} resolves on this machine, so the test would not show that the browser used the proxy"
    );

    // The connector, one site: the gateway.
    let connector = tokio::time::timeout(
        STEP,
        Connector::start(
            tokio::process::Command::new(BIN)
                .args(["connect", "--listen", "127.0.0.1:0"])
                .arg("--site")
                .arg(format!("a=localhost@{}", gw.addr()))
                .args(["--app-domain", APP_DOMAIN])
                .args(["--allow-port", &gw.port.to_string()])
                .arg("--ca")
                .arg(gw.data().join("tls").join("ca.pem"))
                .stderr(Stdio::inherit()),
        ),
    )
    .await
    .expect("tsuzuku connect printed no READY line in time")
    .unwrap();
    let pac = connector.pac.clone().expect("no PAC line");
    let proxy = &connector.proxy;
    let proxy_addr: std::net::SocketAddr = proxy.parse().unwrap();
    let log = &connector.stdout;
    log.wait_line("site: a", Duration::from_secs(10))
        .await
        .expect("the connector chose no site");

    // Chromium with the PAC file, trusting exactly the gateway's key.
    let key_pem = std::fs::read_to_string(gw.data().join("tls").join("gateway-key.pem")).unwrap();
    let spki =
        rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::from_pem(&key_pem).unwrap());
    let pin = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki));
    let browser = Chromium::start(&chromium, &pac, &pin).await;
    let launched = started.elapsed();
    let cdp = Cdp::connect(&browser.ws_url).await;
    let target = cdp
        .call(None, "Target.createTarget", json!({"url": "about:blank"}))
        .await
        .unwrap();
    let attached = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await
        .unwrap();
    let page = attached["sessionId"].as_str().unwrap().to_owned();
    cdp.call(Some(&page), "Network.enable", json!({}))
        .await
        .unwrap();

    // Opening the app leads to the sign-in form on the portal.
    let app_url = format!("https://{app_host}/reports/2026?q=1");
    let nav = cdp
        .call(Some(&page), "Page.navigate", json!({"url": app_url}))
        .await
        .unwrap();
    assert!(nav.get("errorText").is_none(), "navigation failed: {nav}");
    let at_login = cdp
        .wait_for(
            &page,
            "location.host + ' ' + !!document.getElementById('password')",
            |v| v.as_str() == Some(&format!("{portal_host} true")),
        )
        .await;
    assert!(
        at_login.is_ok(),
        "no sign-in form on {portal_host}: last seen {at_login:?}\nconnector: {:?}\nchromium: {}",
        log.lines(),
        browser.stderr_tail()
    );

    // Sign in with the form, as a user would.
    let fill = format!(
        "document.getElementById('username').value = {user};\
         document.getElementById('password').value = {pw};\
         document.querySelector('form[action=\"/.tsuzuku/login\"] button[type=submit]').click();\
         'submitted'",
        user = serde_json::to_string("alice").unwrap(),
        pw = serde_json::to_string(&password).unwrap(),
    );
    let submitted = cdp.eval(&page, &fill).await.unwrap();
    assert_eq!(submitted, "submitted");

    // The app answers: the upstream's echo of what the gateway sent it.
    let shown = cdp
        .wait_for(
            &page,
            "JSON.stringify({host: location.host, text: document.body ? document.body.innerText : ''})",
            |v| {
                let v: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
                v["host"] == app_host.as_str()
                    && serde_json::from_str::<Value>(v["text"].as_str().unwrap_or("")).is_ok()
            },
        )
        .await;
    let shown: Value = match shown {
        Ok(v) => serde_json::from_str(v.as_str().unwrap()).unwrap(),
        Err(last) => panic!(
            "the app did not show after signing in: last seen {last}\nconnector: {:?}\ngateway: {}\nchromium: {}",
            log.lines(),
            gw.stderr_text(),
            browser.stderr_tail()
        ),
    };
    let echo: Value = serde_json::from_str(shown["text"].as_str().unwrap()).unwrap();
    assert_eq!(echo["path"], "/reports/2026", "{echo}");
    assert_eq!(echo["headers"]["x-tsuzuku-user"], "alice", "{echo}");
    let signed_in = started.elapsed();

    // The browser holds the gateway's session cookie for the app.
    let cookies = cdp
        .call(
            Some(&page),
            "Network.getCookies",
            json!({"urls": [format!("https://{app_host}/")]}),
        )
        .await
        .unwrap();
    let names: Vec<&str> = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"__Host-tsuzuku_session"), "{names:?}");

    // Every response for the app domain came from the connector's address, and there were
    // responses from both the portal and the app.
    let events = cdp.events.lock().unwrap().clone();
    let mut hosts = HashMap::<String, usize>::new();
    for e in events
        .iter()
        .filter(|e| e["method"] == "Network.responseReceived")
    {
        let r = &e["params"]["response"];
        let url = r["url"].as_str().unwrap_or("");
        let Some(host) = url
            .strip_prefix("https://")
            .and_then(|u| u.split('/').next())
        else {
            continue;
        };
        if host != app_host && host != portal_host {
            continue;
        }
        assert_eq!(
            (r["remoteIPAddress"].as_str(), r["remotePort"].as_u64()),
            (
                Some(proxy_addr.ip().to_string().as_str()),
                Some(u64::from(proxy_addr.port()))
            ),
            "{url} did not come through the connector at {proxy}: {r}"
        );
        *hosts.entry(host.to_owned()).or_default() += 1;
    }
    assert!(
        hosts.contains_key(&app_host) && hosts.contains_key(&portal_host),
        "responses seen: {hosts:?}"
    );

    let _ = cdp.call(None, "Browser.close", json!({})).await;
    drop(browser);
    eprintln!(
        "browser e2e: Chromium up after {launched:?}, app shown after {signed_in:?}; responses via the connector: {hosts:?}"
    );
}

/// The Chromium binary: `TSUZUKU_CHROMIUM`, or the first of the usual names on `PATH`.
fn chromium_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TSUZUKU_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A headless Chromium in its own process group with a temporary profile. Dropping it kills
/// the whole group (browser, zygote, renderers).
struct Chromium {
    child: tokio::process::Child,
    ws_url: String,
    stderr: LineLog,
    _profile: tempfile::TempDir,
}

impl Chromium {
    async fn start(bin: &std::path::Path, pac: &str, spki_pin: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--proxy-pac-url={pac}"))
            .arg(format!("--ignore-certificate-errors-spki-list={spki_pin}"))
            .arg("about:blank")
            .env("HOME", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = LineLog::new();
        let ws_url = tokio::time::timeout(STEP, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(u) = l.strip_prefix("DevTools listening on ") {
                    return Some(u.trim().to_owned());
                }
                stderr.push(l);
            }
            None
        })
        .await;
        let Ok(Some(ws_url)) = ws_url else {
            panic!(
                "Chromium ({}) printed no DevTools address within {STEP:?}: {}",
                bin.display(),
                stderr.lines().join("\n")
            );
        };
        stderr.collect_lines(lines);
        Self {
            child,
            ws_url,
            stderr,
            _profile: profile,
        }
    }

    /// The last lines Chromium wrote, without its D-Bus complaints (there is no bus here).
    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lines();
        let useful: Vec<&String> = lines.iter().filter(|l| !l.contains("dbus")).collect();
        let from = useful.len().saturating_sub(20);
        useful[from..]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The group's id is the browser's pid (process_group(0)); this kills only that group.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A DevTools protocol client: commands with ids, answers matched by id, events kept.
struct Cdp {
    tx: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    next: AtomicU64,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    events: Arc<Mutex<Vec<Value>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Cdp {
    async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools WebSocket: timed out")
            .expect("DevTools WebSocket");
        let (tx, mut rx) = ws.split();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                match v["id"].as_u64() {
                    Some(id) => {
                        if let Some(done) = p.lock().unwrap().remove(&id) {
                            let _ = done.send(v);
                        }
                    }
                    None => e.lock().unwrap().push(v),
                }
            }
        });
        Self {
            tx: tokio::sync::Mutex::new(tx),
            next: AtomicU64::new(1),
            pending,
            events,
            reader,
        }
    }

    /// Sends `method` (to the page `session`, or to the browser) and returns its result, or the
    /// protocol's error as text.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (done, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, done);
        self.tx
            .lock()
            .await
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| format!("{method}: sending: {e}"))?;
        let v = tokio::time::timeout(STEP, answer)
            .await
            .map_err(|_| format!("{method}: no answer within {STEP:?}"))?
            .map_err(|_| format!("{method}: the connection closed"))?;
        match v.get("error") {
            Some(err) => Err(format!("{method}: {err}")),
            None => Ok(v["result"].clone()),
        }
    }

    /// Evaluates `js` in the page and returns its value.
    async fn eval(&self, session: &str, js: &str) -> Result<Value, String> {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{js}: {ex}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `js` every 100 ms until `done` accepts its value (returned), or [`STEP`] passes
    /// (then the last value or error is returned as the error). Errors while a page is being
    /// replaced count as "not yet".
    async fn wait_for(
        &self,
        session: &str,
        js: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + STEP;
        let mut last = String::from("nothing");
        while Instant::now() < deadline {
            match self.eval(session, js).await {
                Ok(v) if done(&v) => return Ok(v),
                Ok(v) => last = v.to_string(),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }
}
