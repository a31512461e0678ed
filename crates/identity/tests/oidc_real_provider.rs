//! The OIDC client against a real OpenID provider (`oidc-provider` on Node, started per test).
//!
//! These tests fail, not skip, when the provider is not installed: run scripts/setup-oidc.sh.
//!
//! `state` is not checked by `OidcClient::finish`: comparing the callback's `state` with the one
//! stored at `begin()` is the caller's job (the gateway), because this crate keeps no login state.
//! `state_is_returned_unchanged_for_the_caller_to_compare` shows what the caller gets to compare.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use tsuzuku_identity::IdentityError;
use tsuzuku_identity::oidc::{OidcClient, OidcSettings, PendingLogin};
use tsuzuku_testkit::oidc::{
    Callback, OidcProvider, ProviderClient, ProviderOptions, browser, drive_login,
};

const CLIENT_ID: &str = "tsuzuku-gateway";
const CLIENT_SECRET: &str = "a-long-enough-test-client-secret";
/// The gateway's real callback shape: https on a *.localhost name.
const REDIRECT: &str = "https://auth.localhost:8443/.tsuzuku/oidc/callback";

async fn start(groups_in_id_token: bool) -> OidcProvider {
    let mut options = ProviderOptions::confidential_client(CLIENT_ID, CLIENT_SECRET, REDIRECT);
    options.groups_in_id_token = groups_in_id_token;
    match OidcProvider::start(&options).await {
        Ok(provider) => provider,
        Err(err) => panic!("{err}"),
    }
}

fn settings(issuer: &str) -> OidcSettings {
    OidcSettings {
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: Some(CLIENT_SECRET.to_owned()),
        redirect_url: REDIRECT.to_owned(),
        scopes: vec![
            "openid".to_owned(),
            "profile".to_owned(),
            "email".to_owned(),
            "groups".to_owned(),
        ],
        groups_claim: "groups".to_owned(),
        username_claim: "preferred_username".to_owned(),
        ca_pem: None,
    }
}

async fn login_as(
    provider: &OidcProvider,
    client: &OidcClient,
    user: &str,
) -> (PendingLogin, Callback) {
    let pending = client.begin();
    let callback = drive_login(
        &browser().unwrap(),
        &pending.authorize_url,
        user,
        "anything",
        REDIRECT,
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n--- provider ---\n{}", provider.recent_log()));
    (pending, callback)
}

#[tokio::test]
async fn alice_logs_in_with_groups_from_the_id_token() {
    let provider = start(true).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let (pending, callback) = login_as(&provider, &client, "alice").await;

    // The authorization request carried PKCE S256, the nonce and the state.
    let url = reqwest::Url::parse(&pending.authorize_url).unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["nonce"], pending.nonce);
    assert_eq!(query["state"], pending.state);
    assert_eq!(query["response_type"], "code");
    assert!(query["scope"].split(' ').any(|s| s == "openid"));
    assert_eq!(
        query["scope"].split(' ').filter(|s| *s == "openid").count(),
        1,
        "openid requested once: {}",
        query["scope"]
    );

    assert_eq!(callback.state, pending.state);
    assert_eq!(callback.iss.as_deref(), Some(provider.issuer()));

    let identity = client
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap_or_else(|err| panic!("{err}\n--- provider ---\n{}", provider.recent_log()));
    assert_eq!(identity.issuer, provider.issuer());
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.username, "alice");
    assert_eq!(identity.email.as_deref(), Some("alice@example.test"));
    assert_eq!(identity.name.as_deref(), Some("Alice Example"));
    assert!(
        identity.groups.contains(&"sales".to_owned()),
        "{identity:?}"
    );
    assert!(
        identity.groups.contains(&"staff".to_owned()),
        "{identity:?}"
    );
    assert_eq!(identity.amr, vec!["pwd".to_owned()]);
    let auth_time = identity.auth_time.expect("oidc-provider sends auth_time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - 300..=now + 5).contains(&auth_time),
        "{auth_time} vs {now}"
    );
}

#[tokio::test]
async fn groups_come_from_userinfo_when_the_id_token_lacks_them() {
    let provider = start(false).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let (pending, callback) = login_as(&provider, &client, "bob").await;
    let identity = client
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap_or_else(|err| panic!("{err}\n--- provider ---\n{}", provider.recent_log()));
    assert_eq!(identity.subject, "bob");
    assert_eq!(identity.username, "bob");
    assert_eq!(identity.groups, vec!["engineering".to_owned()]);
    assert_eq!(identity.email.as_deref(), Some("bob@example.test"));
}

#[tokio::test]
async fn username_falls_back_to_email_when_the_claim_is_missing() {
    let provider = start(true).await;
    let mut s = settings(provider.issuer());
    s.username_claim = "upn".to_owned();
    let client = OidcClient::discover(s).await.unwrap();
    let (pending, callback) = login_as(&provider, &client, "alice").await;
    let identity = client
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap();
    assert_eq!(identity.username, "alice@example.test");
}

#[tokio::test]
async fn wrong_nonce_is_rejected() {
    let provider = start(true).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let (pending, callback) = login_as(&provider, &client, "alice").await;
    let other = client.begin();
    let err = client
        .finish(&callback.code, &other.nonce, &pending.pkce_verifier)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::OidcIdToken { .. }), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("nonce"), "{err}");
}

#[tokio::test]
async fn reused_code_is_rejected() {
    let provider = start(true).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let (pending, callback) = login_as(&provider, &client, "alice").await;
    client
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap();
    let err = client
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::OidcCodeExchange { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid_grant"), "{err}");
}

#[tokio::test]
async fn wrong_pkce_verifier_is_rejected() {
    let provider = start(true).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let (pending, callback) = login_as(&provider, &client, "alice").await;
    let other = client.begin();
    let err = client
        .finish(&callback.code, &pending.nonce, &other.pkce_verifier)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::OidcCodeExchange { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid_grant"), "{err}");
}

#[tokio::test]
async fn wrong_client_secret_is_rejected() {
    let provider = start(true).await;
    let good = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let mut s = settings(provider.issuer());
    s.client_secret = Some("not-the-secret".to_owned());
    let bad = OidcClient::discover(s).await.unwrap();
    let (pending, callback) = login_as(&provider, &good, "alice").await;
    let err = bad
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_client"), "{err}");
}

#[tokio::test]
async fn state_is_returned_unchanged_for_the_caller_to_compare() {
    let provider = start(true).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let first = client.begin();
    let second = client.begin();
    assert_ne!(first.state, second.state);
    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.pkce_verifier, second.pkce_verifier);
    let (pending, callback) = login_as(&provider, &client, "alice").await;
    // The caller compares in constant time and refuses a tampered or foreign state.
    assert!(tsuzuku_identity::token::ct_eq(
        &callback.state,
        &pending.state
    ));
    assert!(!tsuzuku_identity::token::ct_eq(
        &callback.state,
        &first.state
    ));
}

#[tokio::test]
async fn discovery_rejects_an_issuer_that_differs_from_the_metadata() {
    let provider = start(true).await;
    // Same server, but "localhost" instead of "127.0.0.1": the metadata's issuer differs.
    let issuer = provider.issuer().replace("127.0.0.1", "localhost");
    let err = OidcClient::discover(settings(&issuer)).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::OidcDiscovery { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "OIDC provider at {issuer} did not answer discovery"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_user_cannot_finish_the_login() {
    let provider = start(true).await;
    let client = OidcClient::discover(settings(provider.issuer()))
        .await
        .unwrap();
    let pending = client.begin();
    let result = drive_login(
        &browser().unwrap(),
        &pending.authorize_url,
        "mallory",
        "anything",
        REDIRECT,
    )
    .await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("error=access_denied"), "{err}");
    assert!(err.contains("mallory"), "{err}");
}

#[tokio::test]
async fn public_client_uses_pkce_without_a_secret() {
    let mut options = ProviderOptions::confidential_client(CLIENT_ID, CLIENT_SECRET, REDIRECT);
    options.clients.push(ProviderClient {
        client_id: "public-cli".to_owned(),
        client_secret: None,
        redirect_uris: vec!["http://127.0.0.1:9/callback".to_owned()],
    });
    let provider = OidcProvider::start(&options)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let mut s = settings(provider.issuer());
    s.client_id = "public-cli".to_owned();
    s.client_secret = None;
    s.redirect_url = "http://127.0.0.1:9/callback".to_owned();
    let client = OidcClient::discover(s).await.unwrap();
    let pending = client.begin();
    let callback = drive_login(
        &browser().unwrap(),
        &pending.authorize_url,
        "bob",
        "x",
        "http://127.0.0.1:9/callback",
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", provider.recent_log()));
    let identity = client
        .finish(&callback.code, &pending.nonce, &pending.pkce_verifier)
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", provider.recent_log()));
    assert_eq!(identity.groups, vec!["engineering".to_owned()]);
}
