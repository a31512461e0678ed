#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::json;

use super::*;

fn settings(issuer: &str) -> OidcSettings {
    OidcSettings {
        issuer: issuer.to_owned(),
        client_id: "tsuzuku".to_owned(),
        client_secret: Some("secret".to_owned()),
        redirect_url: "https://auth.localhost:8443/.tsuzuku/oidc/callback".to_owned(),
        scopes: vec!["profile".to_owned(), "email".to_owned()],
        groups_claim: "groups".to_owned(),
        username_claim: "preferred_username".to_owned(),
        ca_pem: None,
    }
}

fn field_of(err: IdentityError) -> &'static str {
    match err {
        IdentityError::OidcSettings { field, .. } => field,
        other => panic!("expected a settings error, got {other:?}"),
    }
}

#[test]
fn settings_are_validated_with_the_offending_field_named() {
    assert!(validate(&settings("https://login.example.com/realms/staff")).is_ok());
    assert!(validate(&settings("http://127.0.0.1:5556")).is_ok());
    assert!(validate(&settings("http://[::1]:5556")).is_ok());
    assert!(validate(&settings("http://localhost:5556")).is_ok());

    let err = validate(&settings("http://login.example.com")).unwrap_err();
    assert!(err.to_string().contains("plain http"), "{err}");
    assert_eq!(field_of(err), "issuer");
    assert_eq!(
        field_of(validate(&settings("not a url")).unwrap_err()),
        "issuer"
    );
    assert_eq!(
        field_of(validate(&settings("ftp://login.example.com")).unwrap_err()),
        "issuer"
    );
    assert_eq!(
        field_of(validate(&settings("https://login.example.com/?x=1")).unwrap_err()),
        "issuer"
    );

    let mut s = settings("https://login.example.com");
    s.redirect_url = "http://gateway.example.com/cb".to_owned();
    assert_eq!(field_of(validate(&s).unwrap_err()), "redirect_url");

    let mut s = settings("https://login.example.com");
    s.client_id.clear();
    assert_eq!(field_of(validate(&s).unwrap_err()), "client_id");

    let mut s = settings("https://login.example.com");
    s.client_secret = Some(String::new());
    assert_eq!(field_of(validate(&s).unwrap_err()), "client_secret");

    let mut s = settings("https://login.example.com");
    s.groups_claim.clear();
    assert_eq!(field_of(validate(&s).unwrap_err()), "groups_claim");

    let mut s = settings("https://login.example.com");
    s.username_claim.clear();
    assert_eq!(field_of(validate(&s).unwrap_err()), "username_claim");

    let mut s = settings("https://login.example.com");
    s.scopes.push("two words".to_owned());
    assert_eq!(field_of(validate(&s).unwrap_err()), "scopes");
}

#[test]
fn loopback_detection() {
    for (url, expected) in [
        ("http://127.0.0.1/", true),
        ("http://127.8.9.10/", true),
        ("http://[::1]/", true),
        ("http://localhost/", true),
        ("http://auth.localhost/", true),
        ("http://LOCALHOST/", true),
        ("http://localhost.example.com/", false),
        ("http://10.0.0.1/", false),
        ("http://example.com/", false),
    ] {
        assert_eq!(
            is_loopback_host(&url::Url::parse(url).unwrap()),
            expected,
            "{url}"
        );
    }
}

#[test]
fn groups_accept_arrays_and_single_strings() {
    let claims = |v: Value| json!({ "g": v }).as_object().unwrap().clone();
    assert_eq!(
        read_groups(&claims(json!(["sales", "staff"])), "g").unwrap(),
        vec!["sales", "staff"]
    );
    assert_eq!(
        read_groups(&claims(json!("sales")), "g").unwrap(),
        vec!["sales"]
    );
    assert!(read_groups(&claims(json!(null)), "g").unwrap().is_empty());
    assert!(read_groups(&claims(json!([])), "g").unwrap().is_empty());
    assert!(
        read_groups(&claims(json!("x")), "other")
            .unwrap()
            .is_empty()
    );
    let err = read_groups(&claims(json!([1, "a"])), "g").unwrap_err();
    assert!(err.contains("as strings"), "{err}");
    let err = read_groups(&claims(json!({"a": 1})), "g").unwrap_err();
    assert!(err.contains("string or an array"), "{err}");
}

#[test]
fn pending_login_debug_hides_secrets() {
    let login = PendingLogin {
        authorize_url: "https://idp/auth".to_owned(),
        state: "STATE-SECRET".to_owned(),
        nonce: "NONCE-SECRET".to_owned(),
        pkce_verifier: "VERIFIER-SECRET".to_owned(),
    };
    let text = format!("{login:?}");
    assert!(text.contains("https://idp/auth"));
    assert!(!text.contains("SECRET"), "{text}");
}

#[test]
fn bad_ca_bundle_is_reported() {
    let mut s = settings("https://login.example.com");
    s.ca_pem = Some(b"no certificates here".to_vec());
    let err = http_client(&s).unwrap_err();
    assert!(
        matches!(err, IdentityError::OidcHttpClient { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca_pem"), "{err}");
}

#[tokio::test]
async fn discovery_failure_names_the_issuer() {
    // A port nothing listens on: bind, note the port, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{port}");
    let err = OidcClient::discover(settings(&issuer)).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::OidcDiscovery { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "OIDC provider at {issuer} did not answer discovery:"
        )),
        "{text}"
    );
}

#[test]
fn token_errors_explain_invalid_grant() {
    use openidconnect::core::CoreErrorResponseType;
    let response = StandardErrorResponse::new(
        CoreErrorResponseType::InvalidGrant,
        Some("grant request is invalid".to_owned()),
        None,
    );
    let err: RequestTokenError<std::io::Error, _> = RequestTokenError::ServerResponse(response);
    let text = describe_token_error(&err);
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains("already used"), "{text}");
}

#[test]
fn client_is_clone_send_and_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<OidcClient>();
    assert_traits::<PendingLogin>();
    assert_traits::<OidcIdentity>();
}
