//! Forwarding an authorised request to the app's upstream, bodies streamed both ways, with
//! WebSocket (HTTP/1.1 `Upgrade`) tunnels.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tsuzuku_store::{App, Session, User};

use crate::assertion::Claims;
use crate::headers::{self, ASSERTION_HEADER, GROUPS_HEADER, USER_HEADER};
use crate::respond;
use crate::service::Ctx;
use crate::state::{Body, BoxError, Gateway, now_unix};

pub(crate) async fn forward(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    app: &App,
    user: &User,
    session: &Session,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: http::Uri = match format!("{}{}", app.upstream.trim_end_matches('/'), pq).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(app = %app.name, error = %e, "bad upstream URL");
            return respond::error(
                StatusCode::BAD_GATEWAY,
                "Application misconfigured",
                "The application's upstream address is not valid. Ask your IT team to check it.",
                &ctx.id,
            );
        }
    };
    let upgrade_value = (req.version() == Version::HTTP_11
        && headers::wants_upgrade(req.headers()))
    .then(|| req.headers().get(header::UPGRADE).cloned())
    .flatten();
    let client_upgrade = upgrade_value.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let assertion = match sign_assertion(gw, app, user, session) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "could not sign identity assertion");
            return respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The gateway could not vouch for your identity right now. Try again in a moment.",
                &ctx.id,
            );
        }
    };

    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::strip_identity_headers(h);
    headers::strip_own_cookies(h);
    headers::set_forwarded(h, ctx.peer.ip(), &gw.settings.trusted_proxies, &ctx.host);
    if let Ok(v) = HeaderValue::from_str(&assertion) {
        h.insert(ASSERTION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&user.username) {
        h.insert(USER_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&user.groups.join(",")) {
        h.insert(GROUPS_HEADER, v);
    }
    if let Some(up) = &upgrade_value {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, up.clone());
    }
    if !h.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&ctx.host)
    {
        h.insert(header::HOST, v);
    }
    let body: Body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed();
    let upstream_req = Request::from_parts(parts, body);

    let mut resp = match gw.client.request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(app = %app.name, request_id = %ctx.id, error = %e, "upstream did not answer");
            return respond::error(
                StatusCode::BAD_GATEWAY,
                "Application unavailable",
                &format!(
                    "The application {} did not answer. Try again in a moment; if it persists, tell your IT team.",
                    app.name
                ),
                &ctx.id,
            );
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let rid = ctx.id.clone();
        tokio::spawn(async move {
            match (client_upgrade.await, upstream_upgrade.await) {
                (Ok(c), Ok(u)) => {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        tracing::debug!(request_id = %rid, error = %e, "tunnel closed");
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(request_id = %rid, error = %e, "upgrade failed");
                }
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, respond::full(bytes::Bytes::new()));
    }

    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    let body: Body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed();
    Response::from_parts(parts, body)
}

fn sign_assertion(
    gw: &Gateway,
    app: &App,
    user: &User,
    session: &Session,
) -> Result<String, crate::assertion::AssertionError> {
    // One session's assertion for one app is reused for half its lifetime: signing on every
    // request costs more than the rest of the decision.
    let key = format!("{}|{}", session.token_hash, app.host);
    let t = std::time::Instant::now();
    if let Some(jwt) = gw.assertions.get(&key, t) {
        return Ok(jwt);
    }
    let jwt = sign_fresh(gw, app, user, session)?;
    gw.assertions.insert(key, jwt.clone(), t);
    Ok(jwt)
}

fn sign_fresh(
    gw: &Gateway,
    app: &App,
    user: &User,
    session: &Session,
) -> Result<String, crate::assertion::AssertionError> {
    let now = now_unix();
    let amr = match session.auth_method.as_str() {
        "password+totp" => vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()],
        "password" => vec!["pwd".to_owned()],
        other => {
            let mut v = vec![other.to_owned()];
            if session.mfa {
                v.push("mfa".to_owned());
            }
            v
        }
    };
    let claims = Claims {
        iss: format!("https://{}", gw.settings.portal_host),
        aud: format!("https://{}", app.host),
        sub: user.id.clone(),
        iat: now,
        exp: now + gw.settings.assertion_ttl_secs,
        jti: crate::service::request_id(),
        user: user.username.clone(),
        name: user.display_name.clone(),
        email: user.email.clone(),
        groups: user.groups.clone(),
        amr,
        auth_time: session.auth_time,
    };
    gw.signer().sign(&claims)
}
