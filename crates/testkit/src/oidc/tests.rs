#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

/// The shape of oidc-provider's development login view.
const LOGIN_PAGE: &str = r#"<div><form autocomplete="off" action="http://127.0.0.1:1234/interaction/abc?x=1&amp;y=2" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
  <input required type="password" name="password" placeholder="and password" >
  <button type="submit" class="login login-submit">Sign-in</button>
</form></div>"#;

#[test]
fn parses_the_development_login_form() {
    let form = parse_form(LOGIN_PAGE).unwrap();
    assert_eq!(
        form,
        Form {
            action: "http://127.0.0.1:1234/interaction/abc?x=1&y=2".to_owned(),
            hidden: vec![("prompt".to_owned(), "login".to_owned())],
            inputs: vec!["login".to_owned(), "password".to_owned()],
        }
    );
    assert_eq!(parse_form("<html>no form</html>"), None);
}

#[test]
fn callback_reads_code_state_and_errors() {
    let ok = callback(
        Url::parse("https://auth.localhost:8443/cb?code=C&state=S&iss=http%3A%2F%2F127.0.0.1%3A1")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ok.code, "C");
    assert_eq!(ok.state, "S");
    assert_eq!(ok.iss.as_deref(), Some("http://127.0.0.1:1"));

    let err = callback(
        Url::parse(
            "https://auth.localhost:8443/cb?error=access_denied&error_description=no&state=S",
        )
        .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("error=access_denied: no"), "{err}");
    assert!(callback(Url::parse("https://a/cb?state=S").unwrap()).is_err());
}

#[test]
fn options_serialise_to_the_provider_config() {
    let mut options = ProviderOptions::confidential_client("id", "secret", "https://a/cb");
    options.groups_in_id_token = false;
    options.accounts = Some(BTreeMap::from([(
        "carol".to_owned(),
        ProviderAccount {
            groups: vec!["ops".to_owned()],
            ..ProviderAccount::default()
        },
    )]));
    let config = options.to_json();
    assert_eq!(config["clients"][0]["client_id"], "id");
    assert_eq!(config["clients"][0]["redirect_uris"][0], "https://a/cb");
    assert_eq!(config["groups_in_id_token"], false);
    assert_eq!(config["accounts"]["carol"]["groups"][0], "ops");
}
