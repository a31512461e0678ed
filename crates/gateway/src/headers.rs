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
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
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

/// Whether the request asks for a protocol upgrade (WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    conn_upgrade && headers.contains_key(header::UPGRADE)
}
