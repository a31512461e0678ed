//! Header hygiene between client and upstream: hop-by-hop headers, Tsuzuku's identity headers,
//! the session cookie, and which `X-Forwarded-For` to believe.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

#[cfg(test)]
mod tests;

/// Prefix of every header Tsuzuku adds for upstreams; a client's copies are always removed.
pub const IDENTITY_PREFIX: &str = "x-tsuzuku-";
/// The signed identity assertion (JWT) header.
pub const ASSERTION_HEADER: &str = "x-tsuzuku-assertion";
/// Plain user name and groups, for upstreams that do not verify the JWT (informational only).
pub const USER_HEADER: &str = "x-tsuzuku-user";
pub const GROUPS_HEADER: &str = "x-tsuzuku-groups";
/// The same names as header names, built once (a `&str` name is parsed on every insert).
pub(crate) const ASSERTION: HeaderName = HeaderName::from_static(ASSERTION_HEADER);
pub(crate) const USER: HeaderName = HeaderName::from_static(USER_HEADER);
pub(crate) const GROUPS: HeaderName = HeaderName::from_static(GROUPS_HEADER);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Name of the session cookie (the `__Host-` prefix pins it to this host, `Secure`, `Path=/`).
pub const SESSION_COOKIE: &str = "__Host-tsuzuku_session";
/// Double-submit token of the login form.
pub const CSRF_COOKIE: &str = "__Host-tsuzuku_csrf";
/// Binds an OIDC `state` to the browser that started the login.
pub const OIDC_COOKIE: &str = "__Host-tsuzuku_oidc";

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the proxies' own), removed in both directions.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Removes an upstream's `Set-Cookie` for any of Tsuzuku's own cookies (`__Host-tsuzuku_…`,
/// in any letter case, as browsers match the prefix): an app must not be able to plant the
/// gateway's session or the nonce that binds a sign-in to a browser.
pub fn strip_own_set_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let own = |v: &HeaderValue| {
        let name = v
            .as_bytes()
            .split(|b| *b == b'=')
            .next()
            .unwrap_or_default();
        name.trim_ascii()
            .get(..OWN_COOKIE_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(OWN_COOKIE_PREFIX.as_bytes()))
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(own) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !own(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Removes hop-by-hop headers, including those named in `Connection`. One pass over the
/// names present: a request has a handful, and looking each of the nine up costs more.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed = connection_named(headers);
    doomed.extend(headers.keys().filter(|k| is_hop_by_hop(k)).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

/// The header names listed in `Connection` (hop-by-hop by the sender's say-so).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// Values of the cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a `Cookie` header value carries one of Tsuzuku's own cookies.
fn has_own_cookie(value: &HeaderValue) -> bool {
    value.to_str().map_or(true, |v| {
        v.split(';')
            .any(|kv| kv.trim().starts_with(OWN_COOKIE_PREFIX))
    })
}

/// The prefix of every cookie Tsuzuku sets.
const OWN_COOKIE_PREFIX: &str = "__Host-tsuzuku_";

/// Removes Tsuzuku's own cookies from the `Cookie` header so upstreams never see session tokens.
/// A header without them is left as it is.
pub fn strip_own_cookies(headers: &mut HeaderMap) {
    if !headers.get_all(header::COOKIE).iter().any(has_own_cookie) {
        return;
    }
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && !kv.starts_with(OWN_COOKIE_PREFIX))
        .collect();
    let joined = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join("; ")).ok())
        .flatten();
    headers.remove(header::COOKIE);
    if let Some(v) = joined {
        headers.insert(header::COOKIE, v);
    }
}

/// A `Set-Cookie` value for a host-only, `Secure; HttpOnly; SameSite=Lax` cookie.
/// `max_age` of `None` makes a browser-session cookie; `Some(0)` deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>) -> String {
    let mut s = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    s
}

/// The client's address: the TCP peer, or — only when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
///
/// The list is walked from the right, the end each trusted proxy appends to, and the walk
/// stops at the first entry that is not an address (`ip`, `ip:port` or `[ip]:port`): what is
/// left of it came from beyond the trusted proxies, so the last trusted address walked (or the
/// peer) stands. A client's garbage therefore never moves its address to a trusted one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    let mut client = peer;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = forwarded_addr(entry.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, with or without a port.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// `X_Tsuzuku_User` or `X_Forwarded_For`: a name that CGI, WSGI, PHP and Rack turn into the
/// same variable as the gateway's own header (`HTTP_X_TSUZUKU_USER`), where the two values are
/// joined or the client's wins (the class of Puma's CVE-2024-45614). Such names are dropped.
fn underscored_lookalike(name: &str) -> bool {
    if !name.contains('_') {
        return false;
    }
    let dashed = name.replace('_', "-");
    dashed.starts_with(IDENTITY_PREFIX) || is_forwarding(&dashed)
}

/// Forwarding headers a client may send; the gateway sets its own.
fn is_forwarding(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto" | "forwarded" | "x-real-ip"
    )
}

/// Where a request came from, as the upstream is told.
pub struct Origin<'a> {
    /// The TCP peer, and its address as a header value.
    pub peer: IpAddr,
    pub peer_value: &'a HeaderValue,
    /// The proxies whose `X-Forwarded-For` is believed.
    pub trusted: &'a [ipnet::IpNet],
    /// The host the client asked for.
    pub host: &'a str,
}

/// Turns a client's request headers into the upstream's, in one pass over the names present:
/// removes hop-by-hop headers and those `Connection` names, every `X-Tsuzuku-*` header (the
/// gateway sets its own), the client's forwarding headers and Tsuzuku's own cookies; then sets
/// `X-Forwarded-For` (rebuilt from the trusted chain: a client's own value is dropped unless
/// its peer is a trusted proxy), `X-Forwarded-Host` and `X-Forwarded-Proto`.
pub fn to_upstream(headers: &mut HeaderMap, origin: &Origin<'_>) {
    let peer_trusted = origin.trusted.iter().any(|n| n.contains(&origin.peer));
    let prior: Option<String> = if peer_trusted {
        let joined = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        (!joined.is_empty()).then_some(joined)
    } else {
        None
    };
    let mut doomed = connection_named(headers);
    let mut cookies = false;
    for name in headers.keys() {
        if is_hop_by_hop(name)
            || name.as_str().starts_with(IDENTITY_PREFIX)
            || is_forwarding(name.as_str())
            || underscored_lookalike(name.as_str())
        {
            doomed.push(name.clone());
        } else if name == header::COOKIE {
            cookies = true;
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if cookies {
        strip_own_cookies(headers);
    }
    let xff = match prior {
        Some(p) => HeaderValue::from_str(&format!("{p}, {}", origin.peer)).ok(),
        None => Some(origin.peer_value.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::from_str(origin.host) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
}

/// Whether the request asks for a WebSocket upgrade (`Connection: upgrade` and `Upgrade:
/// websocket`). No other protocol is tunnelled: after an upgrade the gateway sees no more
/// requests, so an upstream that switched to `h2c` would take every later request on the
/// connection without a decision.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    conn_upgrade && is_websocket(headers)
}

/// Whether `Upgrade` is exactly one header naming `websocket` (a request's, or a `101`
/// answer's).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket")),
        _ => false,
    }
}
