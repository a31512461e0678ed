//! The sign-in's handoff to an app host, end to end (the real gateway and a real upstream):
//! a handoff link works only in the browser that started the sign-in (security review: login
//! CSRF / session fixation through the handoff), and a sign-in whose audit event cannot be
//! recorded is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use sha2::{Digest as _, Sha256};
use tsuzuku_testkit::gateway::{TestGateway, form_field, location, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

const POLICY: &str = r#"
permit (
  principal in Tsuzuku::Group::"staff",
  action in Tsuzuku::Action::"access",
  resource == Tsuzuku::App::"app"
);
"#;

const SESSION: &str = "__Host-tsuzuku_session";
const NONCE: &str = "__Host-tsuzuku_signin";

/// A gateway with the app and two local users: `(gateway, upstream, mallory's password,
/// alice's password)`.
async fn setup() -> (TestGateway, Upstream, String, String) {
    let mut gw = TestGateway::init(BIN).unwrap();
    let up = Upstream::start().await.unwrap();
    let mallory = gw.add_user("mallory", "staff").unwrap();
    let alice = gw.add_user("alice", "staff").unwrap();
    gw.add_app_with_policy("app", &up.url(), POLICY).unwrap();
    gw.start().await.unwrap();
    (gw, up, mallory, alice)
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `url` made absolute against the address it was answered from.
fn absolute(from: &str, url: &str) -> String {
    if url.starts_with('/') {
        let base = from.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        format!("{base}{url}")
    } else {
        url.to_owned()
    }
}

/// Signs in at the portal from `start` (an app address) as `user`, follows the redirects and
/// stops at the handoff link to the app, which it returns without opening it: what an
/// attacker captures to send to someone else. Also returns how many redirects the browser
/// went through after the form.
async fn handoff_link(
    gw: &TestGateway,
    c: &reqwest::Client,
    start: &str,
    user: &str,
    password: &str,
) -> (String, usize) {
    let mut url = start.to_owned();
    let page = loop {
        let r = c.get(&url).send().await.unwrap();
        if r.status().is_redirection() {
            url = absolute(&url, &location(&r).unwrap());
            continue;
        }
        assert_eq!(r.status(), 200, "{url}");
        break r.text().await.unwrap();
    };
    assert!(
        url.starts_with(&gw.url("auth", "/.tsuzuku/login?")),
        "{url}"
    );
    let r = c
        .post(gw.url("auth", "/.tsuzuku/login"))
        .form(&[
            ("csrf", form_field(&page, "csrf").unwrap().as_str()),
            ("rd", form_field(&page, "rd").unwrap().as_str()),
            ("username", user),
            ("password", password),
            ("totp", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let mut next = location(&r).unwrap();
    for hops in 0..5 {
        if next.starts_with(&gw.url("app", "/.tsuzuku/handoff?")) {
            return (next, hops);
        }
        let r = c.get(&next).send().await.unwrap();
        assert!(r.status().is_redirection(), "{next}: {}", r.status());
        next = absolute(&next, &location(&r).unwrap());
    }
    panic!("no handoff link after signing in: last {next}");
}

/// The user the upstream saw for `GET /whoami`, or the gateway's status when it did not
/// forward the request.
async fn whoami(gw: &TestGateway, c: &reqwest::Client) -> Result<String, u16> {
    let r = c.get(gw.url("app", "/whoami")).send().await.unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let echo: serde_json::Value = r.json().await.unwrap();
    Ok(echo["headers"]["x-tsuzuku-user"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Security review, login CSRF through the handoff: mallory signs in as herself, keeps the
/// handoff link and sends it to alice. Opened in a browser that did not start the sign-in —
/// a fresh one, one in the middle of its own sign-in, or one signed in as alice — it sets no
/// session cookie and consumes nothing; alice's own session survives. In mallory's browser the
/// same link still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_link_opened_in_another_browser_signs_nobody_in() {
    let (gw, _up, mallory_pw, alice_pw) = setup().await;
    let mallory = gw.client(&["auth", "app"]).unwrap();
    let (link, _) = handoff_link(&gw, &mallory, &gw.url("app", "/"), "mallory", &mallory_pw).await;

    // A fresh browser: refused with a page that explains and offers a new sign-in.
    let fresh = gw.client(&["auth", "app"]).unwrap();
    let r = fresh.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let cookies = set_cookies(&r);
    assert!(
        !cookies.iter().any(|c| c.starts_with(SESSION)),
        "{cookies:?}"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("did not start the sign-in"), "{page}");
    assert!(
        page.contains("<a href=\"/.tsuzuku/signin?rd=%2F\">Sign in again</a>"),
        "{page}"
    );
    assert_eq!(whoami(&gw, &fresh).await, Err(302));

    // A browser that holds a sign-in nonce of its own (it was on its way to sign in).
    let r = fresh
        .get(gw.url("app", "/.tsuzuku/signin?rd=%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let r = fresh.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        !set_cookies(&r).iter().any(|c| c.starts_with(SESSION)),
        "{:?}",
        set_cookies(&r)
    );
    assert_eq!(whoami(&gw, &fresh).await, Err(302));

    // Alice, signed in: the link neither replaces nor ends her session.
    let alice = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&alice, &gw.url("app", "/"), "alice", &alice_pw, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{s:?}");
    assert_eq!(whoami(&gw, &alice).await.as_deref(), Ok("alice"));
    let r = alice.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        !set_cookies(&r).iter().any(|c| c.starts_with(SESSION)),
        "{:?}",
        set_cookies(&r)
    );
    assert_eq!(whoami(&gw, &alice).await.as_deref(), Ok("alice"));

    // The code was good all along: in mallory's own browser it signs mallory in, once, and the
    // spent nonce is cleared.
    let r = mallory.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookies = set_cookies(&r);
    assert!(
        cookies[0].starts_with(&format!("{SESSION}=")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("{NONCE}=;")) && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert_eq!(whoami(&gw, &mallory).await.as_deref(), Ok("mallory"));
    let r = mallory.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 400, "a handoff code is single-use");
}

/// The sign-in as the app host starts it (`/.tsuzuku/signin`, the redirect of a request without
/// a session): the nonce cookie is host-only and short-lived, only its SHA-256 travels to the
/// portal, and the form's sign-in goes straight to the handoff. A sign-in that reaches the
/// portal without a binding (an old link to the portal) is bound on the way back through the
/// app host, and works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normal_sign_in_is_bound_to_its_browser_and_still_works() {
    let (gw, _up, _mallory_pw, alice_pw) = setup().await;
    let c = gw.client(&["auth", "app"]).unwrap();
    let r = c
        .get(gw.url("app", "/.tsuzuku/signin?rd=%2Freports%3Fq%3D1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookies = set_cookies(&r);
    let line = cookies.iter().find(|c| c.starts_with(NONCE)).unwrap();
    for attr in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(line.contains(attr), "{line}");
    }
    assert!(!line.contains("Domain"), "{line}");
    let nonce = line
        .strip_prefix(&format!("{NONCE}="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let login = location(&r).unwrap();
    let bind = hex(&Sha256::digest(nonce.as_bytes()));
    assert!(login.ends_with(&format!("&bind={bind}")), "{login}");
    assert!(!login.contains(&nonce), "{login}");

    let (link, hops) = handoff_link(
        &gw,
        &c,
        &gw.url("app", "/.tsuzuku/signin?rd=%2Freports%3Fq%3D1"),
        "alice",
        &alice_pw,
    )
    .await;
    assert_eq!(hops, 0, "the form's sign-in goes straight to the handoff");
    let r = c.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r).unwrap(), "/reports?q=1");
    let cookies = set_cookies(&r);
    assert!(
        cookies[0].starts_with(&format!("{SESSION}=")),
        "{cookies:?}"
    );
    assert_eq!(whoami(&gw, &c).await.as_deref(), Ok("alice"));

    // The portal's own sign-in link, without a binding: the browser passes through the app
    // host for its nonce and comes back, already signed in at the portal.
    let other = gw.client(&["auth", "app"]).unwrap();
    let portal_link = gw.url(
        "auth",
        &format!(
            "/.tsuzuku/login?rd={}",
            form_urlencode(&gw.url("app", "/x"))
        ),
    );
    let (link, hops) = handoff_link(&gw, &other, &portal_link, "alice", &alice_pw).await;
    assert_eq!(hops, 2, "through /.tsuzuku/signin and back to the portal");
    let r = other.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(whoami(&gw, &other).await.as_deref(), Ok("alice"));

    // And the whole walk as tests and scripts do it, from the app's own redirect.
    let third = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&third, &gw.url("app", "/"), "alice", &alice_pw, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{s:?}");
}

/// Security review: a sign-in whose audit event cannot be recorded must not proceed. The
/// store refuses sign-in events (a trigger); the sign-in is refused with 503 and no session.
/// Once events are taken again, the same sign-in works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_whose_audit_event_cannot_be_recorded_is_refused() {
    let (gw, _up, _mallory_pw, alice_pw) = setup().await;
    let root = tsuzuku_store::StoreRoot::open(&format!(
        "sqlite://{}",
        gw.data().join("store.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_login_events BEFORE INSERT ON audit_events \
         WHEN NEW.kind = 'login' BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END",
    )
    .execute(root.raw_pool())
    .await
    .unwrap();

    let c = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &alice_pw, None)
        .await
        .unwrap();
    assert_eq!(s.status, 503, "{s:?}");
    assert!(s.body.contains("cannot be recorded"), "{}", s.body);
    assert_eq!(whoami(&gw, &c).await, Err(302));
    let r = c.get(gw.url("auth", "/")).send().await.unwrap();
    assert_eq!(r.status(), 302, "no portal session either");
    assert!(
        gw.stderr_text().contains("sign-in refused"),
        "{}",
        gw.stderr_text()
    );

    sqlx::query("DROP TRIGGER refuse_login_events")
        .execute(root.raw_pool())
        .await
        .unwrap();
    root.close().await;
    let c = gw.client(&["auth", "app"]).unwrap();
    let s = sign_in(&c, &gw.url("app", "/"), "alice", &alice_pw, None)
        .await
        .unwrap();
    assert_eq!(s.final_status, Some(200), "{s:?}");
    assert_eq!(whoami(&gw, &c).await.as_deref(), Ok("alice"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn form_urlencode(s: &str) -> String {
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
