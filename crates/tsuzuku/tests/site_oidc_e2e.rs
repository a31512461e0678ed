//! Single sign-on during read-only failover (issue 3: "the secondary serves everything
//! read-only (logins, sessions and decisions work)"): a real PostgreSQL primary and streaming
//! standby, a real OpenID Connect provider (`oidc-provider` on Node), two gateway nodes of one
//! site, a real upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tsuzuku_testkit::gateway::{TestGateway, form_field, location};
use tsuzuku_testkit::oidc::{OidcProvider, ProviderOptions, drive_login};
use tsuzuku_testkit::postgres::PgCluster;
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

const POLICY: &str = r#"
permit (
  principal in Tsuzuku::Group::"sales",
  action in Tsuzuku::Action::"access",
  resource == Tsuzuku::App::"app"
) when { principal.auth_method == "oidc" };
"#;

/// The sealed pending sign-in's cookie (crates/gateway/src/standby.rs).
const SEALED_COOKIE: &str = "__Secure-tsuzuku_oidc_ro";
/// The cookie that binds the `state` to the browser.
const STATE_COOKIE: &str = "__Host-tsuzuku_oidc";

/// A second gateway node of the site, listening on `127.0.0.2` at the first node's port: the
/// same URLs (`https://auth.localhost:PORT/…`, which is also the redirect URI registered at the
/// provider) reach it when a client resolves the names to `127.0.0.2`.
struct SecondNode {
    _child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl SecondNode {
    async fn start(gw: &TestGateway) -> Self {
        let text = std::fs::read_to_string(gw.data().join("tsuzuku.toml")).unwrap();
        let first = format!("listen = \"127.0.0.1:{}\"", gw.port);
        assert!(text.contains(&first), "{text}");
        let text = text.replace(&first, &format!("listen = \"127.0.0.2:{}\"", gw.port));
        let cfg = gw.data().join("node-2.toml");
        std::fs::write(&cfg, text).unwrap();
        let mut child = Command::new(&gw.bin)
            .arg("--data-dir")
            .arg(gw.data())
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env("TSUZUKU_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = out.next_line().await {
                if l.starts_with("READY ") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(
            ready,
            "the second node did not start: {}",
            stderr.lock().unwrap().join("\n")
        );
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Self {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 2], gw.port)),
            stderr,
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

/// A browser whose requests for the gateway's names go to the node at `ip` (`addr`'s port is
/// ignored: the port in the URL is used). Clients sharing `jar` are one browser.
fn browser(gw: &TestGateway, addr: SocketAddr, jar: Arc<reqwest::cookie::Jar>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&gw.ca_pem().unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .resolve("auth.localhost", addr)
        .resolve("app.localhost", addr)
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

/// The start of an SSO sign-in for the app, on the portal: `(Set-Cookie values, authorize
/// URL)`. Retries while the gateway still answers 503 (it notices the lost primary within a
/// second).
async fn start_sso(gw: &TestGateway, c: &reqwest::Client) -> (Vec<String>, String) {
    let r = c.get(gw.url("app", "/deals")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let page = c
        .get(location(&r).unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with Test SSO"), "{page}");
    let rd = form_field(&page, "rd").unwrap();
    let start = format!(
        "{}?rd={}",
        gw.url("auth", "/.tsuzuku/oidc/start"),
        url_encode(&rd)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&start).send().await.unwrap();
        if r.status() == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        return (set_cookies(&r), location(&r).unwrap());
    }
}

async fn login_at_provider(
    gw: &TestGateway,
    c: &reqwest::Client,
    authorize: &str,
    login: &str,
) -> String {
    drive_login(
        c,
        authorize,
        login,
        "any-password",
        &gw.url("auth", "/.tsuzuku/oidc/callback"),
    )
    .await
    .unwrap()
    .url
}

/// Follows the handoff to the app and fetches `/deals`: the upstream's echo. A sign-in that
/// reached the portal without the app host's browser binding first passes through
/// `/.tsuzuku/signin` and back through the portal (signed in there already).
async fn open_app(gw: &TestGateway, c: &reqwest::Client, next: &str) -> serde_json::Value {
    let mut handoff = next.to_owned();
    for _ in 0..2 {
        if handoff.starts_with(&gw.url("app", "/.tsuzuku/handoff?")) {
            break;
        }
        let r = c.get(&handoff).send().await.unwrap();
        assert!(r.status().is_redirection(), "{handoff}: {}", r.status());
        handoff = location(&r).unwrap();
    }
    assert!(
        handoff.starts_with(&gw.url("app", "/.tsuzuku/handoff?")),
        "{handoff}"
    );
    let r = c.get(&handoff).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r).unwrap(), "/deals");
    let r = c.get(gw.url("app", "/deals")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Issue 3: with the primary lost, a user who signed in with SSO before signs in again through
/// the provider, on any node; a first SSO sign-in is refused with a page that says why; admin
/// changes stay refused.
#[tokio::test]
async fn oidc_sign_ins_work_on_every_node_during_read_only_failover() {
    let primary = PgCluster::start_primary().await.unwrap();
    let standby = PgCluster::start_standby(&primary).await.unwrap();
    let mut gw = TestGateway::init(BIN).unwrap();
    gw.set_config("url", &format!("\"{},{}\"", primary.url(), standby.url()))
        .unwrap();
    let callback = format!("https://{}/.tsuzuku/oidc/callback", gw.host("auth"));
    let idp = OidcProvider::start(&ProviderOptions::confidential_client(
        "tsuzuku",
        "s3cret-for-tests",
        &callback,
    ))
    .await
    .unwrap();
    gw.append_config(&format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"tsuzuku\"\nclient_secret = \"s3cret-for-tests\"\n\
         scopes = [\"openid\", \"profile\", \"email\", \"groups\"]\ndisplay_name = \"Test SSO\"\n",
        idp.issuer()
    ))
    .unwrap();
    let up = Upstream::start().await.unwrap();
    gw.add_app_with_policy("app", &up.url(), POLICY).unwrap();
    gw.start().await.unwrap();
    let node2 = SecondNode::start(&gw).await;

    // Alice signs in with SSO once while the primary is up: her account is created.
    let first = browser(&gw, gw.addr(), Arc::default());
    let (cookies, authorize) = start_sso(&gw, &first).await;
    assert_eq!(cookie_value(&cookies, SEALED_COOKIE), None, "{cookies:?}");
    let cb = login_at_provider(&gw, &first, &authorize, "alice").await;
    let r = first.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let echo = open_app(&gw, &first, &location(&r).unwrap()).await;
    assert_eq!(echo["headers"]["x-tsuzuku-user"], "alice");

    // An administrator changed her groups in the store; the change reached the standby. Then the
    // primary's site is lost.
    let out = primary
        .psql(r#"UPDATE users SET groups_json = '["sales","auditors"]' WHERE username = 'alice'"#)
        .await
        .unwrap();
    assert!(out.contains("UPDATE 1") || out.is_empty(), "{out}");
    primary.wait_until_replayed(&standby).await.unwrap();
    primary.kill().unwrap();

    // Alice signs in again, in a new browser: she starts on node 1, the provider sends her back
    // to node 2. The pending sign-in travels in a sealed cookie limited to the callback.
    let jar: Arc<reqwest::cookie::Jar> = Arc::default();
    let on1 = browser(&gw, gw.addr(), jar.clone());
    let on2 = browser(&gw, node2.addr, jar.clone());
    let (cookies, authorize) = start_sso(&gw, &on1).await;
    let sealed = cookie_value(&cookies, SEALED_COOKIE)
        .unwrap_or_else(|| panic!("no sealed pending sign-in: {cookies:?}"));
    assert!(sealed.starts_with("ro1."), "{sealed}");
    let line = cookies
        .iter()
        .find(|c| c.starts_with(SEALED_COOKIE))
        .unwrap();
    for attr in [
        "Path=/.tsuzuku/oidc/callback",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(line.contains(attr), "{line}");
    }
    let bound = cookie_value(&cookies, STATE_COOKIE).unwrap();
    assert!(
        !authorize.contains(&sealed),
        "the sealed state must not travel to the provider"
    );
    let cb = login_at_provider(&gw, &on1, &authorize, "alice").await;
    let r = on2.get(&cb).send().await.unwrap();
    let cookies = set_cookies(&r);
    let status = r.status();
    let handoff = location(&r).unwrap_or_default();
    assert_eq!(
        status,
        303,
        "{cookies:?} {} | node 2: {}",
        r.text().await.unwrap_or_default(),
        node2.stderr_text()
    );
    let session = cookie_value(&cookies, "__Host-tsuzuku_session").unwrap();
    assert!(session.starts_with("ro1."), "a sealed session: {session}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("{SEALED_COOKIE}=;")) && c.contains("Max-Age=0")),
        "the sealed pending sign-in is cleared: {cookies:?}"
    );
    // She reaches the app (on node 2, then node 1): allowed by policy, the upstream sees her,
    // with the groups the store holds.
    let echo = open_app(&gw, &on2, &handoff).await;
    assert_eq!(echo["headers"]["x-tsuzuku-user"], "alice");
    let groups = echo["headers"]["x-tsuzuku-groups"].as_str().unwrap();
    assert!(groups.split(',').any(|g| g == "auditors"), "{groups}");
    let r = on1.get(gw.url("app", "/on-node-1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let log2 = node2.stderr_text();
    assert!(
        log2.contains("issued a read-only-failover session"),
        "{log2}"
    );
    assert!(
        log2.contains("the provider's groups differ from the stored ones"),
        "{log2}"
    );
    assert!(
        gw.stderr_text()
            .contains("the pending OIDC sign-in is sealed in a cookie")
    );

    // The same callback, with the same cookies, does not work again: not on the node that took
    // it (it remembers), and not on the other (the provider takes a code once).
    let replay = format!("{STATE_COOKIE}={bound}; {SEALED_COOKIE}={sealed}");
    for (addr, expect) in [(node2.addr, 400), (gw.addr(), 401)] {
        let c = browser(&gw, addr, Arc::default());
        let r = c.get(&cb).header("cookie", &replay).send().await.unwrap();
        assert_eq!(r.status(), expect, "replay on {addr}");
        assert_eq!(
            cookie_value(&set_cookies(&r), "__Host-tsuzuku_session"),
            None
        );
    }
    // Without the sealed cookie, or with it but for another state, nothing happens either.
    let c = browser(&gw, gw.addr(), Arc::default());
    let r = c
        .get(&cb)
        .header("cookie", format!("{STATE_COOKIE}={bound}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Bob never signed in here: his first sign-in cannot be recorded, and the page says so.
    let bob = browser(&gw, gw.addr(), Arc::default());
    let (_, authorize) = start_sso(&gw, &bob).await;
    let cb = login_at_provider(&gw, &bob, &authorize, "bob").await;
    let r = bob.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        cookie_value(&set_cookies(&r), "__Host-tsuzuku_session"),
        None
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("first sign-in cannot be recorded"), "{page}");
    assert!(page.contains("read-only failover since 20"), "{page}");
    assert!(page.contains("People who signed in here before"), "{page}");

    // Admin changes are still refused.
    let out = gw.cli(&["user", "add", "dave"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));

    // Both sign-in outcomes are audited (spooled until the store takes writes).
    let spooled: String = std::fs::read_dir(gw.data().join("audit-spool"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(spooled.contains("\"method\":\"oidc\""), "{spooled}");
    assert!(spooled.contains("signed in"), "{spooled}");
    assert!(
        spooled.contains("first sign-in during read-only failover"),
        "{spooled}"
    );
}
