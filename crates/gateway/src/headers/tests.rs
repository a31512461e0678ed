#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("accept", "text/html"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("accept"));

    // Every hop-by-hop name, some of them twice, goes; what is left stays whole.
    let mut h = map(&[
        ("Proxy-Connection", "keep-alive"),
        ("trailer", "x-checksum"),
        ("upgrade", "websocket"),
        ("upgrade", "h2c"),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("proxy-authenticate", "Basic"),
        ("te", "trailers"),
        ("te", "gzip"),
        ("x-kept", "1"),
        ("x-kept", "2"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    assert_eq!(h.get_all("x-kept").iter().count(), 2);
}

/// `to_upstream` for a client at 203.0.113.9 (no trusted proxies) asking for app.example.com.
fn to_upstream_from_client(h: &mut HeaderMap) {
    let peer: IpAddr = "203.0.113.9".parse().unwrap();
    let peer_value = HeaderValue::from_str(&peer.to_string()).unwrap();
    to_upstream(
        h,
        &Origin {
            peer,
            peer_value: &peer_value,
            trusted: &[],
            host: "app.example.com",
        },
    );
}

#[test]
fn identity_headers_from_clients_are_removed() {
    let mut h = map(&[
        ("x-tsuzuku-assertion", "forged"),
        ("X-Tsuzuku-User", "admin"),
        ("x-tsuzuku-groups", "admins"),
        ("x-tsuzuku-anything-else", "1"),
        ("x-other", "kept"),
    ]);
    to_upstream_from_client(&mut h);
    assert!(
        h.keys().all(|k| !k.as_str().starts_with("x-tsuzuku-")),
        "{h:?}"
    );
    assert_eq!(h.get("x-other").unwrap(), "kept");
}

#[test]
fn the_upstream_gets_no_hop_by_hop_headers_and_no_own_cookies_and_the_rest_whole() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("cookie", "a=1; __Host-tsuzuku_session=tok"),
        ("cookie", "b=2"),
        ("accept", "text/html"),
        ("accept", "*/*"),
    ]);
    to_upstream_from_client(&mut h);
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "cookie",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(h.get_all("accept").iter().count(), 2);
    assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
    // A Cookie header without Tsuzuku's cookies is passed on as it is, every line of it.
    let mut h = map(&[("cookie", "a=1;b=2"), ("cookie", "c=3")]);
    to_upstream_from_client(&mut h);
    let cookies: Vec<_> = h.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1;b=2", "c=3"]);
}

#[test]
fn cookies_are_found_and_own_cookies_stripped() {
    let mut h = map(&[
        ("cookie", "a=1; __Host-tsuzuku_session=tok; b=2"),
        ("cookie", "__Host-tsuzuku_csrf=c"),
    ]);
    assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
    assert_eq!(cookie(&h, CSRF_COOKIE), Some("c"));
    assert_eq!(cookie(&h, "zz"), None);
    strip_own_cookies(&mut h);
    assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
    let mut only_ours = map(&[("cookie", "__Host-tsuzuku_session=tok")]);
    strip_own_cookies(&mut only_ours);
    assert!(!only_ours.contains_key("cookie"));
}

#[test]
fn set_cookie_has_security_attributes() {
    let c = set_cookie(SESSION_COOKIE, "v", None);
    assert_eq!(
        c,
        "__Host-tsuzuku_session=v; Path=/; Secure; HttpOnly; SameSite=Lax"
    );
    assert!(set_cookie(SESSION_COOKIE, "", Some(0)).ends_with("Max-Age=0"));
}

#[test]
fn forwarded_for_is_ignored_from_untrusted_peers() {
    let h = map(&[("x-forwarded-for", "1.2.3.4")]);
    let peer: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(client_ip(peer, &h, &[]), peer);
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    assert_eq!(client_ip(peer, &h, &trusted), peer);
}

#[test]
fn forwarded_for_is_used_from_trusted_proxies() {
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    // The client may prepend anything; the right-most untrusted hop is the real client.
    let h = map(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5")]);
    assert_eq!(
        client_ip(peer, &h, &trusted),
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
    let garbage = map(&[("x-forwarded-for", "not-an-ip")]);
    assert_eq!(client_ip(peer, &garbage, &trusted), peer);
}

/// A client's unparseable entry left of the proxy's own must not make the trusted proxy the
/// client (it used to empty the whole list), nor may a port hide the address.
#[test]
fn a_client_s_garbage_in_forwarded_for_does_not_hide_its_address() {
    let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let client: IpAddr = "203.0.113.5".parse().unwrap();
    for xff in [
        "x, 203.0.113.5",
        "203.0.113.5:4711",
        "127.0.0.9, x, 203.0.113.5",
        "[::1]:80, 203.0.113.5",
    ] {
        let h = map(&[("x-forwarded-for", xff)]);
        assert_eq!(client_ip(peer, &h, &trusted), client, "{xff}");
    }
    // Several header lines are one list, the last line the right-most.
    let mut h = map(&[("x-forwarded-for", "garbage")]);
    h.append(
        "x-forwarded-for",
        http::HeaderValue::from_static("203.0.113.5"),
    );
    assert_eq!(client_ip(peer, &h, &trusted), client);
    // Garbage right of the trusted hops stops the walk at the last trusted address.
    let h = map(&[("x-forwarded-for", "203.0.113.5, zz, 127.0.0.7")]);
    assert_eq!(
        client_ip(peer, &h, &trusted),
        "127.0.0.7".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn upstream_forwarding_headers_are_rebuilt() {
    let mut h = map(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "http"),
    ]);
    to_upstream_from_client(&mut h);
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9");
    assert!(!h.contains_key("forwarded"));
    assert!(!h.contains_key("x-real-ip"));
    assert_eq!(h.get_all("x-forwarded-host").iter().count(), 1);
    assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "app.example.com");
}

#[test]
fn upgrade_detection() {
    assert!(wants_upgrade(&map(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket")
    ])));
    assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
    // Only WebSocket is tunnelled: after an `h2c` switch the gateway would decide nothing.
    for other in ["h2c", "websocket, h2c", "HTTP/2.0", ""] {
        assert!(
            !wants_upgrade(&map(&[("connection", "upgrade"), ("upgrade", other)])),
            "{other}"
        );
    }
    assert!(!is_websocket(&map(&[
        ("upgrade", "websocket"),
        ("upgrade", "h2c")
    ])));
    assert!(is_websocket(&map(&[("upgrade", "WebSocket")])));
}

/// Names with underscores that CGI-style servers read as the gateway's own headers.
#[test]
fn underscored_lookalikes_of_identity_and_forwarding_headers_are_dropped() {
    let mut h = map(&[
        ("x_tsuzuku_user", "admin"),
        ("x_tsuzuku-groups", "admins"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x_real_ip", "6.6.6.6"),
        ("x_custom_header", "kept"),
    ]);
    to_upstream_from_client(&mut h);
    for gone in [
        "x_tsuzuku_user",
        "x_tsuzuku-groups",
        "x_forwarded_for",
        "x_real_ip",
    ] {
        assert!(!h.contains_key(gone), "{gone}");
    }
    assert_eq!(h.get("x_custom_header").unwrap(), "kept");
}

#[test]
fn forwarded_for_from_a_trusted_proxy_is_extended() {
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    let peer_value = HeaderValue::from_str(&peer.to_string()).unwrap();
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let mut h = map(&[
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-for", "10.0.0.5"),
    ]);
    to_upstream(
        &mut h,
        &Origin {
            peer,
            peer_value: &peer_value,
            trusted: &trusted,
            host: "app.example.com",
        },
    );
    assert_eq!(
        h.get("x-forwarded-for").unwrap(),
        "198.51.100.7, 10.0.0.5, 10.0.0.2"
    );
}

/// An app cannot plant the gateway's own cookies (a session, the sign-in nonce) through its
/// responses; its own cookies pass.
#[test]
fn an_upstream_cannot_set_the_gateway_s_cookies() {
    let mut h = map(&[
        (
            "set-cookie",
            "__Host-tsuzuku_signin=planted; Path=/; Secure",
        ),
        ("set-cookie", "theme=dark; Path=/"),
        ("set-cookie", "__HOST-Tsuzuku_session=x; Path=/; Secure"),
        ("set-cookie", " __Host-tsuzuku_bind=y"),
        ("set-cookie", "app_session=z; HttpOnly"),
    ]);
    strip_own_set_cookies(&mut h);
    let left: Vec<&str> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(left, ["theme=dark; Path=/", "app_session=z; HttpOnly"]);
    let mut none = map(&[("content-type", "text/plain")]);
    strip_own_set_cookies(&mut none);
    assert_eq!(none.len(), 1);
}
