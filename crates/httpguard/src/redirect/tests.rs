#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn known(h: &str) -> bool {
    h == "app.example.com" || h == "auth.example.com:8443"
}

#[test]
fn configured_apps_are_accepted() {
    let r = parse_return_to("https://app.example.com/reports?q=1", known).unwrap();
    assert_eq!(r.host, "app.example.com");
    assert_eq!(r.path, "/reports?q=1");
    assert_eq!(r.url(), "https://app.example.com/reports?q=1");
    let r = parse_return_to("https://auth.example.com:8443", known).unwrap();
    assert_eq!(r.path, "/");
}

#[test]
fn open_redirect_forms_are_refused() {
    for bad in [
        "//evil.com",
        "/\\evil.com",
        "https:evil.com",
        "https:/evil.com",
        "http://app.example.com/",
        "https://evil.com/",
        "https://app.example.com.evil.com/",
        "https://app.example.com@evil.com/",
        "https://evil.com@app.example.com/",
        "https://APP.example.com/",
        "https://app.example.com./",
        "https://app.example.com:443/",
        "https://app.example.com//evil.com",
        "https://app.example.com/\\evil.com",
        "https://app.example.com/%2f%2fevil.com",
        "https://app.example.com/%5cevil.com",
        "https://app.example.com/..%2f..%2f",
        "https://app.example.com/?next=\\\\evil",
        "https://app.example.com/\t/evil.com",
        "https://app.example.com/ok#//evil",
        "%2F%2Fevil.com",
        "javascript:alert(1)",
        "HTTPS://app.example.com/",
        " https://app.example.com/",
        "",
    ] {
        assert!(parse_return_to(bad, known).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn local_paths() {
    assert_eq!(check_local_path("/a/b?x=1").unwrap(), "/a/b?x=1");
    for bad in ["//evil", "/\\evil", "evil", "/a/../b", "/x?a b", "/%2e%2e/"] {
        assert!(check_local_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn refusal_names_the_host() {
    let e = parse_return_to("https://evil.com/", known).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the return address names host \"evil.com\", which is not a configured application"
    );
}

/// With path parameters allowed (`[gateway] path_parameters`), a path that can be requested can
/// also be returned to after sign-in; by default neither.
#[test]
fn return_paths_follow_the_gateway_s_path_rules() {
    use crate::path::PathRules;
    let known = |h: &str| h == "app.example.com";
    let on = PathRules { parameters: true };
    assert!(check_local_path("/a;jsessionid=1").is_err());
    assert_eq!(
        check_local_path_with("/a;jsessionid=1?x=1", on).unwrap(),
        "/a;jsessionid=1?x=1"
    );
    assert!(parse_return_to("https://app.example.com/a;jsessionid=1", known).is_err());
    let r = parse_return_to_with("https://app.example.com/a;jsessionid=1", on, known).unwrap();
    assert_eq!(r.path, "/a;jsessionid=1");
    // Dot segments stay refused whatever the rules.
    assert!(check_local_path_with("/public/..;/admin", on).is_err());
}
