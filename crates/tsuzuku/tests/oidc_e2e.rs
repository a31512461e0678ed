//! Single sign-on end to end: the real gateway, a real OpenID Connect provider
//! (`oidc-provider` on Node, installed by scripts/setup-oidc.sh), a real upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use tsuzuku_testkit::gateway::{TestGateway, location};
use tsuzuku_testkit::oidc::{OidcProvider, ProviderOptions, drive_login};
use tsuzuku_testkit::upstream::Upstream;

const BIN: &str = env!("CARGO_BIN_EXE_tsuzuku");

const POLICY: &str = r#"
permit (
  principal in Tsuzuku::Group::"sales",
  action in Tsuzuku::Action::"access",
  resource == Tsuzuku::App::"app"
) when { principal.auth_method == "oidc" };
"#;

async fn setup() -> (TestGateway, OidcProvider, Upstream) {
    let mut gw = TestGateway::init(BIN).unwrap();
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
    let p = gw.data_dir().join("sso.cedar");
    std::fs::write(&p, POLICY).unwrap();
    gw.cli_ok(&["policy", "apply", p.to_str().unwrap()])
        .unwrap();
    gw.start().await.unwrap();
    (gw, idp, up)
}

/// Opens `start` on the app host, follows the sign-in page's SSO button, signs in at the
/// provider, and returns the gateway's answer to the callback.
async fn sso(gw: &TestGateway, c: &reqwest::Client, start: &str, login: &str) -> reqwest::Response {
    let r = c.get(start).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let login_url = location(&r).unwrap();
    let page = c
        .get(&login_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with Test SSO"), "{page}");
    let rd = tsuzuku_testkit::gateway::form_field(&page, "rd").unwrap();
    let start = format!(
        "{}?rd={}",
        gw.url("auth", "/.tsuzuku/oidc/start"),
        url_encode(&rd)
    );
    let cb = drive_login(
        c,
        &start,
        login,
        "any-password",
        &gw.url("auth", "/.tsuzuku/oidc/callback"),
    )
    .await
    .unwrap();
    c.get(&cb.url).send().await.unwrap()
}

/// The handoff link the callback's answer `r` leads to: directly, or, for a sign-in that
/// reached the portal without the app host's browser binding, through `/.tsuzuku/signin` and
/// back through the portal.
async fn handoff_of(gw: &TestGateway, c: &reqwest::Client, r: reqwest::Response) -> String {
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let mut next = location(&r).unwrap();
    for _ in 0..2 {
        if next.starts_with(&gw.url("app", "/.tsuzuku/handoff?")) {
            break;
        }
        let r = c.get(&next).send().await.unwrap();
        assert!(r.status().is_redirection(), "{next}: {}", r.status());
        next = location(&r).unwrap();
    }
    assert!(
        next.starts_with(&gw.url("app", "/.tsuzuku/handoff?")),
        "{next}"
    );
    next
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
async fn sso_sign_in_takes_groups_from_the_provider_and_policies_use_them() {
    let (gw, _idp, _up) = setup().await;
    let c = gw.client(&["auth", "app"]).unwrap();
    // Started as the app host starts a sign-in: the browser binding set there comes back
    // through the provider, so the callback goes straight to the handoff.
    let r = sso(
        &gw,
        &c,
        &gw.url("app", "/.tsuzuku/signin?rd=%2Fdeals"),
        "alice",
    )
    .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let handoff = location(&r).unwrap();
    assert!(
        handoff.starts_with(&gw.url("app", "/.tsuzuku/handoff?")),
        "{handoff}"
    );
    // Opened in another browser, the handoff link signs nobody in.
    let other = gw.client(&["auth", "app"]).unwrap();
    let r = other.get(&handoff).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(&handoff).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r).unwrap(), "/deals");
    let r = c.get(gw.url("app", "/deals")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-tsuzuku-user"], "alice");
    let groups = echo["headers"]["x-tsuzuku-groups"].as_str().unwrap();
    assert!(groups.split(',').any(|g| g == "sales"), "{groups}");
    // The SSO user is now known to the gateway, marked as such.
    let users = gw.cli_ok(&["--json", "user", "list"]).unwrap();
    let users: serde_json::Value = serde_json::from_str(&users).unwrap();
    let alice = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .unwrap();
    assert_eq!(alice["sso"], true);
    let logins = gw
        .cli_ok(&["--json", "audit", "tail", "--kind", "login"])
        .unwrap();
    assert!(logins.contains("\"method\":\"oidc\""), "{logins}");
}

#[tokio::test]
async fn sso_user_outside_the_group_is_denied_by_policy() {
    let (gw, _idp, _up) = setup().await;
    let c = gw.client(&["auth", "app"]).unwrap();
    let r = sso(&gw, &c, &gw.url("app", "/deals"), "bob").await;
    let handoff = handoff_of(&gw, &c, r).await;
    let r = c.get(&handoff).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = c.get(gw.url("app", "/deals")).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn sso_callback_is_bound_to_the_browser_and_single_use() {
    let (gw, _idp, _up) = setup().await;
    let victim = gw.client(&["auth", "app"]).unwrap();
    let attacker = gw.client(&["auth", "app"]).unwrap();
    // The attacker completes the provider login, but plants the callback URL in the victim's
    // browser: the state is not bound to that browser, so nothing happens.
    let start = format!("{}?rd=", gw.url("auth", "/.tsuzuku/oidc/start"));
    let cb = drive_login(
        &attacker,
        &start,
        "alice",
        "x",
        &gw.url("auth", "/.tsuzuku/oidc/callback"),
    )
    .await
    .unwrap();
    let r = victim.get(&cb.url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers().get("set-cookie").is_none() || {
            let v = r.headers().get("set-cookie").unwrap().to_str().unwrap();
            !v.starts_with("__Host-tsuzuku_session=") || v.contains("Max-Age=0")
        }
    );
    // The attacker's own browser may use it once ...
    let r = attacker.get(&cb.url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    // ... and only once.
    let r = attacker.get(&cb.url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A callback with an error from the provider gets a readable page.
    let r = attacker
        .get(gw.url(
            "auth",
            "/.tsuzuku/oidc/callback?error=access_denied&state=x",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("access_denied"));
}

#[tokio::test]
async fn gateway_starts_while_the_provider_is_down_and_says_sso_is_unavailable() {
    let mut gw = TestGateway::init(BIN).unwrap();
    let dead = tsuzuku_testkit::gateway::free_port().unwrap();
    gw.append_config(&format!(
        "[oidc]\nissuer = \"http://127.0.0.1:{dead}\"\nclient_id = \"tsuzuku\"\nclient_secret = \"x\"\n"
    ))
    .unwrap();
    gw.start().await.unwrap();
    let c = gw.client(&["auth"]).unwrap();
    let r = c
        .get(gw.url("auth", "/.tsuzuku/oidc/start?rd="))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("cannot be reached"));
    // Local sign-in still works: the sign-in page is served.
    let r = c
        .get(gw.url("auth", "/.tsuzuku/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        gw.stderr_text()
            .contains("single sign-on provider unavailable")
    );
}
