//! End-to-end tests of the gateway: the real `tsuzuku` binary, a real upstream, HTTPS clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use tsuzuku_testkit::gateway::{TestGateway, location, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

const POLICY: &str = r#"
permit (
  principal in Tsuzuku::Group::"staff",
  action == Tsuzuku::Action::"read",
  resource == Tsuzuku::App::"app"
);
"#;
const FORBID_ADMIN: &str = r#"
forbid (principal, action, resource == Tsuzuku::App::"app")
when { context.path like "/admin*" };
"#;

struct User {
    password: String,
    totp_secret: Option<String>,
}

fn add_user(gw: &TestGateway, name: &str, group: &str, totp: bool) -> User {
    let mut args = vec!["--json", "user", "add", name, "--group", group];
    if totp {
        args.push("--totp");
    }
    let out = gw.cli_ok(&args).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let secret = v["totp_uri"].as_str().map(|uri| {
        let q = uri.split_once('?').unwrap().1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix("secret="))
            .unwrap()
            .to_owned()
    });
    User {
        password: v["password"].as_str().unwrap().to_owned(),
        totp_secret: secret,
    }
}

fn code(secret: &str, offset_steps: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    tsuzuku_identity::totp::code_at_step(secret, now / 30 + offset_steps).unwrap()
}

fn write_policy(gw: &TestGateway, name: &str, text: &str) -> String {
    let p = gw.data_dir().join(format!("{name}.cedar"));
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

async fn setup() -> (TestGateway, Upstream, User) {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let alice = add_user(&gw, "alice", "staff", true);
    let host = gw.host("app");
    gw.cli_ok(&[
        "app",
        "add",
        "app",
        "--host",
        &host,
        "--upstream",
        &up.url(),
    ])
    .unwrap();
    let p1 = write_policy(&gw, "staff-read", POLICY);
    let p2 = write_policy(&gw, "no-admin", FORBID_ADMIN);
    gw.cli_ok(&["policy", "apply", &p1, &p2, "-m", "test"])
        .unwrap();
    gw.start().await.unwrap();
    (gw, up, alice)
}

async fn signed_in(gw: &TestGateway, u: &User, user: &str) -> reqwest::Client {
    let c = gw.client(&["auth", "app", "other"]).unwrap();
    let s = sign_in(
        &c,
        &gw.url("app", "/"),
        user,
        &u.password,
        u.totp_secret.as_deref().map(|s| code(s, 0)).as_deref(),
    )
    .await
    .unwrap();
    assert_eq!(s.status, 303, "sign-in refused: {}", s.body);
    assert_eq!(s.final_status, Some(200), "{:?}", s.final_body);
    c
}

/// Signs in with a fresh client and returns the app host's `name=value` session cookie.
async fn session_cookie(gw: &TestGateway, u: &User, user: &str, step_offset: i64) -> String {
    let c2 = gw.client(&["auth", "app"]).unwrap();
    let r = c2.get(gw.url("app", "/")).send().await.unwrap();
    let login = location(&r).unwrap();
    let page = c2.get(&login).send().await.unwrap().text().await.unwrap();
    let csrf = tsuzuku_testkit::gateway::form_field(&page, "csrf").unwrap();
    let rd = tsuzuku_testkit::gateway::form_field(&page, "rd").unwrap();
    let code = u
        .totp_secret
        .as_deref()
        .map(|s| code(s, step_offset))
        .unwrap_or_default();
    let r = c2
        .post(gw.url("auth", "/.tsuzuku/login"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("rd", rd.as_str()),
            ("username", user),
            ("password", u.password.as_str()),
            ("totp", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c2.get(location(&r).unwrap()).send().await.unwrap();
    let set = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// Sends one raw HTTP/1.1 request to the app host and returns (status, body).
async fn raw_get(gw: &TestGateway, path: &str, extra_headers: &str) -> (u16, String) {
    let host = gw.host("app");
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra_headers}\r\n");
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn sign_in_with_password_and_totp_then_every_request_is_decided_and_audited() {
    let (gw, _up, alice) = setup().await;
    let c = signed_in(&gw, &alice, "alice").await;

    let r = c
        .get(gw.url("app", "/reports/2026?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("strict-transport-security"));
    // Allowed read: the upstream sees the identity assertion, not the client's forged headers
    // and not the session cookie.
    let cookie = session_cookie(&gw, &alice, "alice", 1).await;
    let (status, body) = raw_get(
        &gw,
        "/reports/2026?x=1",
        &format!(
            "X-Tsuzuku-User: mallory\r\nX-Tsuzuku-Assertion: forged\r\nX_Tsuzuku_User: mallory\r\nX_Forwarded_For: 6.6.6.6\r\nCookie: theme=dark; {cookie}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/reports/2026");
    assert_eq!(echo["headers"]["x-tsuzuku-user"], "alice");
    // Underscored look-alikes, which CGI-style apps read as the same header, are dropped.
    assert!(echo["headers"].get("x_tsuzuku_user").is_none(), "{echo}");
    assert!(echo["headers"].get("x_forwarded_for").is_none(), "{echo}");
    let upstream_cookie = echo["headers"]["cookie"].as_str().unwrap_or("");
    assert_eq!(
        upstream_cookie, "theme=dark",
        "session cookie leaked upstream"
    );
    let jwt = echo["headers"]["x-tsuzuku-assertion"].as_str().unwrap();
    assert_ne!(jwt, "forged");

    // The assertion verifies against the published JWKS with audience = the app.
    let jwks: jsonwebtoken::jwk::JwkSet = c
        .get(gw.url("auth", "/.well-known/tsuzuku/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[format!("https://{}", gw.host("app"))]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["user"], "alice");
    assert_eq!(claims["groups"][0], "staff");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 60);

    // A write is not permitted by the policy: default deny.
    let r = c
        .post(gw.url("app", "/reports"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("Access denied"), "{page}");
    // A forbid wins over the permit.
    let r = c.get(gw.url("app", "/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Every decision is in the audit trail with its inputs and deciding policies.
    let tail = gw
        .cli_ok(&["--json", "audit", "tail", "-n", "50", "--kind", "decision"])
        .unwrap();
    let events: Vec<serde_json::Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let admin = events
        .iter()
        .find(|e| e["detail"]["path"] == "/admin/users")
        .expect("decision for /admin/users");
    assert_eq!(admin["detail"]["allowed"], false);
    assert_eq!(admin["detail"]["policies"][0], "no-admin");
    let ok = events
        .iter()
        .find(|e| e["detail"]["path"] == "/reports/2026")
        .unwrap();
    assert_eq!(ok["detail"]["allowed"], true);
    assert_eq!(ok["detail"]["policies"][0], "staff-read");
    assert_eq!(ok["detail"]["source_ip"], "127.0.0.1");
    let logins = gw
        .cli_ok(&["--json", "audit", "tail", "-n", "50", "--kind", "login"])
        .unwrap();
    assert!(logins.contains("\"success\":true"), "{logins}");
    let verify = gw.cli_ok(&["audit", "verify"]).unwrap();
    assert!(verify.contains("intact"), "{verify}");
}

#[tokio::test]
async fn totp_code_is_accepted_once_and_lockout_follows_failures() {
    let (gw, _up, alice) = setup().await;
    let secret = alice.totp_secret.clone().unwrap();
    let c1 = gw.client(&["auth", "app"]).unwrap();
    let the_code = code(&secret, 0);
    let s = sign_in(
        &c1,
        &gw.url("app", "/"),
        "alice",
        &alice.password,
        Some(&the_code),
    )
    .await
    .unwrap();
    assert_eq!(s.status, 303, "{}", s.body);
    // The same code again, from another browser: refused.
    let c2 = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(
        &c2,
        &gw.url("app", "/"),
        "alice",
        &alice.password,
        Some(&the_code),
    )
    .await
    .unwrap();
    assert_eq!(s.status, 401);
    assert!(s.body.contains("already used"), "{}", s.body);
    // Wrong passwords until the account locks; then even the right password is refused.
    for _ in 0..5 {
        let s = sign_in(&c2, &gw.url("app", "/"), "alice", "wrong", Some("000000"))
            .await
            .unwrap();
        assert!(s.status == 401 || s.status == 429, "{}", s.status);
    }
    let s = sign_in(
        &c2,
        &gw.url("app", "/"),
        "alice",
        &alice.password,
        Some(&code(&secret, 1)),
    )
    .await
    .unwrap();
    assert_eq!(s.status, 429, "{}", s.body);
    assert!(s.body.contains("locked until"), "{}", s.body);
    let list = gw.cli_ok(&["user", "list"]).unwrap();
    assert!(list.contains("locked"), "{list}");
}

#[tokio::test]
async fn refusals_bad_paths_redirects_cookies_and_unknown_hosts() {
    let (gw, _up, alice) = setup().await;
    let c = signed_in(&gw, &alice, "alice").await;
    let cookie = session_cookie(&gw, &alice, "alice", 1).await;
    let (status, _) = raw_get(&gw, "/fine", &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(status, 200);
    // Path encodings that an upstream could read differently: 400, never forwarded. (Sent raw:
    // HTTP client libraries normalise some of them away before sending.)
    for p in [
        "/%2e%2e/etc/passwd",
        "/a%2fb",
        "/a%5cb",
        "/a%00b",
        "/%c0%ae%c0%ae/",
        "//admin",
        "/public/..;/admin",
        // Second spellings an upstream decodes back to a path a policy may forbid.
        "/%61dmin/secret",
        "/admin;x/secret",
        "/caf\u{e9}",
    ] {
        let (status, page) = raw_get(&gw, p, &format!("Cookie: {cookie}\r\n")).await;
        assert_eq!(status, 400, "{p}");
        assert!(page.contains("refused because"), "{p}: {page}");
    }
    // A request naming two hosts is refused, not routed by one and forwarded with the other.
    let host = gw.host("app");
    for (target, extra) in [
        ("/fine".to_owned(), "Host: other.localhost\r\n".to_owned()),
        (format!("https://{host}/fine"), String::new()),
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\n{extra}Cookie: {cookie}\r\nConnection: close\r\n\r\n",
            if extra.is_empty() {
                "other.localhost".to_owned()
            } else {
                host.clone()
            }
        );
        let out = gw
            .raw("app", req.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{req:?}: {text}");
    }
    // Login redirects only to configured apps.
    let fresh = gw.client(&["auth", "app"]).unwrap();
    for rd in [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "https:evil.example",
        "https://app.localhost@evil.example/",
        "https%3A%2F%2Fevil.example",
    ] {
        let q: String = url_encode(rd);
        let r = fresh
            .get(gw.url("auth", &format!("/.tsuzuku/login?rd={q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{rd}");
    }
    // An unknown host gets a clear 404.
    let r = c.get(gw.url("other", "/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("No application is configured")
    );
    // A forged session cookie is not a session.
    let forged = gw.client(&["auth", "app"]).unwrap();
    let r = forged
        .get(gw.url("app", "/"))
        .header(
            "Cookie",
            "__Host-tsuzuku_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).unwrap().contains("/.tsuzuku/login?rd="));
    // A POST without a session is refused (401), not redirected.
    let r = forged.post(gw.url("app", "/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
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

#[tokio::test]
async fn sign_out_ends_every_session_of_the_login() {
    let (gw, _up, alice) = setup().await;
    let c = signed_in(&gw, &alice, "alice").await;
    assert_eq!(
        c.get(gw.url("app", "/")).send().await.unwrap().status(),
        200
    );
    // Sign out at the portal (GET shows a form with a CSRF token).
    let page = c
        .get(gw.url("auth", "/.tsuzuku/logout"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = tsuzuku_testkit::gateway::form_field(&page, "csrf").unwrap();
    let r = c
        .post(gw.url("auth", "/.tsuzuku/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The app host's own cookie is dead too.
    let r = c.get(gw.url("app", "/")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    // Sign-out without the CSRF token is refused.
    let r = c
        .post(gw.url("auth", "/.tsuzuku/logout"))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn malformed_and_smuggling_requests_are_refused() {
    let (gw, _up, _alice) = setup().await;
    let host = gw.host("app");
    // Conflicting Content-Length and Transfer-Encoding (CL.TE smuggling): Transfer-Encoding
    // wins (RFC 9112 §6.3), the body is re-framed towards the upstream, and the connection is
    // closed after the one response, so the smuggled second request is never read.
    let smuggled = format!("GET /admin HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(3))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // A Transfer-Encoding other than chunked is refused.
    let req = format!("POST /x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\n");
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    // Two Content-Length values.
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    );
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    // Oversized headers.
    let big = "a".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {big}\r\n\r\n");
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    // Garbage request line.
    let out = gw
        .raw("app", b"HELLO\r\n\r\n", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    // A raw backslash path.
    let req = format!("GET /a\\..\\b HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    // A client that never finishes its headers is cut off after the header-read timeout
    // (10 s by default): the connection ends well before the 30 s we are willing to wait.
    let started = std::time::Instant::now();
    let out = gw
        .raw(
            "app",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "slow client was not cut off"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // The gateway is still healthy after all that.
    let c = gw.client(&["app"]).unwrap();
    assert_eq!(
        c.get(gw.url("app", "/.tsuzuku/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!gw.stderr_text().contains("panicked"));
}

#[tokio::test]
async fn http2_websocket_and_large_streamed_bodies() {
    let (gw, _up, alice) = setup().await;
    // Writes must be permitted for the upload.
    let p = write_policy(
        &gw,
        "staff-write",
        r#"permit (principal in Tsuzuku::Group::"staff", action == Tsuzuku::Action::"write", resource == Tsuzuku::App::"app");"#,
    );
    let p1 = gw.data_dir().join("staff-read.cedar");
    gw.cli_ok(&["policy", "apply", p1.to_str().unwrap(), &p, "-m", "writes"])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = signed_in(&gw, &alice, "alice").await;
    // HTTP/2 from the client (ALPN), HTTP/1.1 to the upstream.
    let r = c.get(gw.url("app", "/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/1.1");

    // 1 GiB up and 1 GiB down, streamed: the gateway's peak memory stays small.
    const GIB: u64 = 1 << 30;
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let stream =
        futures_util::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = c
        .post(gw.url("app", "/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), GIB.to_string());
    let mut r = c
        .get(gw.url("app", &format!("/download?bytes={GIB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut n = 0u64;
    while let Some(b) = r.chunk().await.unwrap() {
        n += b.len() as u64;
    }
    assert_eq!(n, GIB);
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid().unwrap())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 200 * 1024,
        "gateway peak RSS {hwm_kb} kB: bodies are being buffered"
    );

    // WebSocket-style upgrade over HTTP/1.1: bytes flow both ways through the tunnel.
    let cookie = session_cookie(&gw, &alice, "alice", 1).await;
    let host = gw.host("app");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: {cookie}\r\n\r\nping-through-tunnel"
    );
    let out = gw
        .raw("app", req.as_bytes(), Duration::from_secs(2))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.ends_with("ping-through-tunnel"), "{text}");
}

#[tokio::test]
async fn audit_events_survive_kill_9() {
    let (mut gw, _up, alice) = setup().await;
    let c = signed_in(&gw, &alice, "alice").await;
    let mut answered = Vec::new();
    for i in 0..200 {
        let path = format!("/item/{i}");
        let r = c.get(gw.url("app", &path)).send().await.unwrap();
        if r.status() == 200 {
            answered.push(path);
        }
    }
    gw.kill9().await.unwrap();
    let tail = gw
        .cli_ok(&[
            "--json", "audit", "tail", "-n", "1000", "--kind", "decision",
        ])
        .unwrap();
    for p in &answered {
        assert!(
            tail.contains(&format!("\"path\":\"{p}\"")),
            "decision for {p} lost"
        );
    }
    let verify = gw.cli_ok(&["audit", "verify"]).unwrap();
    assert!(verify.contains("intact"), "{verify}");
    // A restarted gateway accepts the old session (sessions live in the store).
    gw.start().await.unwrap();
    assert_eq!(
        c.get(gw.url("app", "/again"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn health_endpoints_answer_without_sign_in() {
    let (gw, _up, _alice) = setup().await;
    let c = gw.client(&["auth", "app"]).unwrap();
    for (name, path) in [
        ("auth", "/healthz"),
        ("auth", "/readyz"),
        ("app", "/.tsuzuku/readyz"),
    ] {
        let r = c.get(gw.url(name, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}{path}");
    }
    // By IP address too (routers probe the address).
    let r = c
        .get(format!("https://auth.localhost:{}/readyz", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[tokio::test]
async fn random_hostile_requests_never_get_a_500_or_a_panic() {
    let (gw, _up, alice) = setup().await;
    let cookie = session_cookie(&gw, &alice, "alice", 0).await;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let methods = [
        "GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT", "PATCH", "G\x01T", "CONNECT", "",
    ];
    let pieces = [
        "/",
        "a",
        "%2e",
        "%2F",
        "..",
        ".",
        ";",
        "%00",
        "%c0%ae",
        "%ff",
        "\\",
        "//",
        "%",
        "%zz",
        "?",
        "#",
        "%20",
        "~",
        "é",
        "%e2%80%ae",
        "*",
        "@",
        ":",
        "%25",
        "admin",
    ];
    let hosts = [
        "app.localhost",
        "auth.localhost",
        "other.localhost",
        "",
        "APP.localhost",
        "app.localhost:1",
        "app.localhost\u{0}",
        "[::1]",
        "127.0.0.1",
    ];
    let headers = [
        "",
        "X-Tsuzuku-User: root\r\n",
        "Cookie: __Host-tsuzuku_session=\r\n",
        "Cookie: __Host-tsuzuku_session=%%%\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 99999999999999999999\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "X-Forwarded-For: 1.2.3.4, garbage\r\n",
        "Connection: upgrade\r\nUpgrade: h2c\r\n",
        "Expect: 100-continue\r\n",
        "Host: second.example\r\n",
        " folded: header\r\n",
    ];
    let port = gw.port;
    for i in 0..250 {
        let m = rng.pick(&methods);
        let mut path = String::new();
        for _ in 0..(rng.next() % 8) {
            path.push_str(rng.pick(&pieces));
        }
        if !rng.next().is_multiple_of(4) {
            path.insert(0, '/');
        }
        let host = rng.pick(&hosts);
        let h1 = rng.pick(&headers);
        let h2 = rng.pick(&headers);
        let auth = if rng.next().is_multiple_of(2) {
            format!("Cookie: {cookie}\r\n")
        } else {
            String::new()
        };
        let req = format!(
            "{m} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{h1}{h2}{auth}Connection: close\r\n\r\n"
        );
        let out = gw
            .raw("app", req.as_bytes(), Duration::from_millis(1500))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.starts_with("HTTP/1.1 5")
                || text.starts_with("HTTP/1.1 502")
                || text.starts_with("HTTP/1.1 503"),
            "request #{i} got a server error:\n{req:?}\n{text}"
        );
    }
    assert!(
        !gw.stderr_text().contains("panicked"),
        "{}",
        gw.stderr_text()
    );
    let c = gw.client(&["app"]).unwrap();
    assert_eq!(
        c.get(gw.url("app", "/.tsuzuku/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Untrusted (the default): the client's X-Forwarded-For is ignored by the policy context
    // and replaced towards the upstream.
    let (gw, _up, alice) = setup().await;
    let cookie = session_cookie(&gw, &alice, "alice", 0).await;
    let (status, body) = raw_get(
        &gw,
        "/xff-untrusted",
        &format!("X-Forwarded-For: 203.0.113.7\r\nCookie: {cookie}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    let tail = gw
        .cli_ok(&["--json", "audit", "tail", "-n", "5", "--kind", "decision"])
        .unwrap();
    let ev = tail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["detail"]["path"] == "/xff-untrusted")
        .unwrap();
    assert_eq!(ev["detail"]["source_ip"], "127.0.0.1");

    // Trusted: the right-most untrusted address is the client, for policies and the audit.
    let mut gw2 = TestGateway::init(BIN).unwrap();
    gw2.set_config("trusted_proxies", "[\"127.0.0.1/32\"]")
        .unwrap();
    let up = Upstream::start().await.unwrap();
    let bob = add_user(&gw2, "alice", "staff", false);
    gw2.add_app_with_policy(
        "app",
        &up.url(),
        r#"permit (principal, action, resource) when { context.source_ip.isInRange(ip("203.0.113.0/24")) };"#,
    )
    .unwrap();
    gw2.start().await.unwrap();
    let cookie = {
        // Sign in (the sign-in itself comes from 127.0.0.1, which the policy does not need).
        let c = gw2.client(&["auth", "app"]).unwrap();
        let s = sign_in(&c, &gw2.url("app", "/"), "alice", &bob.password, None)
            .await
            .unwrap();
        assert_eq!(s.status, 303, "{}", s.body);
        // Final page was refused: the sign-in came from 127.0.0.1 without a forwarded header.
        assert_eq!(s.final_status, Some(403));
        session_cookie(&gw2, &bob, "alice", 0).await
    };
    let (status, body) = raw_get(
        &gw2,
        "/from-office",
        &format!("X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nCookie: {cookie}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        "6.6.6.6, 203.0.113.7, 127.0.0.1"
    );
    let (status, _) = raw_get(
        &gw2,
        "/from-elsewhere",
        &format!("X-Forwarded-For: 198.51.100.1\r\nCookie: {cookie}\r\n"),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_session_made_on_one_node_works_on_another_and_survives_the_first_nodes_death() {
    let (mut gw, _up, alice) = setup().await;
    let mut node2 = gw.start_node().await.unwrap();
    let cookie = session_cookie(&gw, &alice, "alice", 0).await;
    let host = gw.host("app");
    let get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        )
    };
    // Node 2 never saw the sign-in, and serves the session.
    let out = gw
        .raw_to(
            node2.addr,
            "app",
            get("/on-node-2").as_bytes(),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Node 1 dies (SIGKILL): node 2 goes on without a new sign-in.
    gw.kill9().await.unwrap();
    let out = gw
        .raw_to(
            node2.addr,
            "app",
            get("/after-kill").as_bytes(),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    node2.kill9().await.unwrap();
    // Both nodes' decisions are in one intact chain.
    let verify = gw.cli_ok(&["audit", "verify"]).unwrap();
    assert!(verify.contains("intact"), "{verify}");
    let tail = gw.cli_ok(&["--json", "audit", "tail", "-n", "20"]).unwrap();
    assert!(tail.contains("/on-node-2") && tail.contains("/after-kill"));
}

#[tokio::test]
async fn quickstart_serves_a_demo_app_that_verifies_the_assertion() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let port = tsuzuku_testkit::gateway::free_port().unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["quickstart", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut password, mut secret) = (String::new(), String::new());
    while let Some(l) = lines.next_line().await.unwrap() {
        if let Some(p) = l.trim().strip_prefix("One-time password:") {
            password = p.trim().to_owned();
        }
        if let Some(i) = l.find("secret=") {
            secret = l[i + 7..].split('&').next().unwrap().to_owned();
        }
        if l.starts_with("READY ") {
            break;
        }
    }
    assert!(!password.is_empty() && !secret.is_empty());
    let ca = std::fs::read(dir.path().join("d/tls/ca.pem")).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("auth.localhost", addr)
        .resolve("demo.localhost", addr)
        .build()
        .unwrap();
    let s = sign_in(
        &c,
        &format!("https://demo.localhost:{port}/hello"),
        "admin",
        &password,
        Some(&code(&secret, 0)),
    )
    .await
    .unwrap();
    assert_eq!(s.status, 303, "{}", s.body);
    assert_eq!(s.final_status, Some(200));
    let page = s.final_body.unwrap();
    assert!(page.contains("Hello, Administrator"), "{page}");
    assert!(
        page.contains("verified against the gateway's JWKS"),
        "{page}"
    );
}
