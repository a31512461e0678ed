//! Forwarding an authorised request to the app's upstream, bodies streamed both ways, with
//! WebSocket (HTTP/1.1 `Upgrade`) tunnels.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tsuzuku_store::{App, Session, User};

use crate::assertion::Claims;
use crate::headers::{self, Origin};
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

    let identity = match identity(gw, ctx, app, user, session) {
        Ok(i) => i,
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
    headers::to_upstream(
        h,
        &Origin {
            peer: ctx.peer.ip(),
            peer_value: &ctx.conn.peer_value,
            trusted: &gw.settings.trusted_proxies,
            host: &ctx.host,
        },
    );
    h.insert(headers::ASSERTION, identity.assertion.clone());
    if let Some(v) = &identity.user {
        h.insert(headers::USER, v.clone());
    }
    if let Some(v) = &identity.groups {
        h.insert(headers::GROUPS, v.clone());
    }
    if let Some(up) = &upgrade_value {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, up.clone());
    }
    // The upstream is told the name the app was chosen by (`request_host` refused a request
    // naming two), never another the client sent.
    match HeaderValue::from_str(&ctx.host) {
        Ok(v) => {
            h.insert(header::HOST, v);
        }
        Err(_) => {
            h.remove(header::HOST);
        }
    }
    let body: Body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed();
    let upstream_req = Request::from_parts(parts, body);

    let sent = if upgrade_value.is_some() {
        // Upgraded connections become tunnels: they come from the pool, never kept.
        via_pool(&gw.client, upstream_req).await
    } else {
        send_kept(&gw.client, &ctx.conn.upstream, &app.upstream, upstream_req).await
    };
    let mut resp = match sent {
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

    // Only a WebSocket switch answering a WebSocket request becomes a tunnel; any other
    // `101` would leave the connection to a protocol the gateway does not decide on.
    let client_upgrade = match client_upgrade {
        _ if resp.status() != StatusCode::SWITCHING_PROTOCOLS => None,
        Some(u) if headers::is_websocket(resp.headers()) => Some(u),
        _ => {
            tracing::warn!(app = %app.name, request_id = %ctx.id, "upstream switched to a protocol that was not asked for");
            return respond::error(
                StatusCode::BAD_GATEWAY,
                "Application answered wrongly",
                &format!(
                    "The application {} switched to a protocol that was not asked for. Tell your IT team.",
                    app.name
                ),
                &ctx.id,
            );
        }
    };
    if let Some(client_upgrade) = client_upgrade {
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
    headers::strip_own_set_cookies(&mut parts.headers);
    parts.headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    Response::from_parts(parts, body)
}

/// The upstream HTTP/1.1 connection kept for one client connection: its next request to the
/// same upstream goes out on it without the shared pool (its lock, and the task the pool
/// spawns per request to take the connection back once the response body is read). Each
/// client connection has at most one such connection: while it is in use (by another of the
/// connection's concurrent HTTP/2 streams) or kept for another upstream, requests go through
/// the pool. It is kept again once its response body has been read to the end.
#[derive(Default)]
pub(crate) struct Affinity(std::sync::Mutex<Slot>);

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    InUse,
    Kept(String, SendRequest<Body>),
}

/// What a request to an upstream uses.
enum Route {
    Kept(SendRequest<Body>),
    Open,
    Pool,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Affinity")
    }
}

impl Affinity {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, upstream: &str) -> Route {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::InUse) {
            Slot::Kept(u, sender) if u == upstream => {
                if sender.is_closed() {
                    Route::Open
                } else {
                    Route::Kept(sender)
                }
            }
            Slot::Empty => Route::Open,
            other => {
                *slot = other;
                Route::Pool
            }
        }
    }

    fn put(&self, upstream: String, sender: SendRequest<Body>) {
        *self.slot() = Slot::Kept(upstream, sender);
    }

    /// The connection taken was lost: the next request opens another.
    fn release(&self) {
        *self.slot() = Slot::Empty;
    }
}

/// Sends `req` on the client connection's kept upstream connection, on a new one, or through
/// the pool (see [`Affinity`]). A request a reused connection did not take (closed by the
/// upstream while idle) goes to the pool.
async fn send_kept(
    pool: &Client<HttpConnector, Body>,
    affinity: &Arc<Affinity>,
    upstream: &str,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    // Kept connections are plain HTTP/1.1 (what `tsuzuku app add` accepts); anything else goes
    // to the pool, which refuses what it cannot serve.
    if req.uri().scheme_str() != Some("http") {
        return via_pool(pool, req).await;
    }
    let (sender, reused) = match affinity.take(upstream) {
        Route::Pool => return via_pool(pool, req).await,
        Route::Kept(mut sender) => match sender.ready().await {
            Ok(()) => (Ok(sender), true),
            Err(_) => (connect(req.uri()).await, false),
        },
        Route::Open => (connect(req.uri()).await, false),
    };
    let mut sender = match sender {
        Ok(s) => s,
        Err(e) => {
            affinity.release();
            return Err(e);
        }
    };
    // On the connection itself the request goes in origin form (`GET /path`): an absolute URI
    // in the request line would name the upstream's own address to an app that routes by it
    // (RFC 9112 §3.2.2 lets a server take the host from it and ignore `Host`).
    let full = req.uri().clone();
    let (mut parts, body) = req.into_parts();
    parts.uri = full
        .path_and_query()
        .cloned()
        .map_or_else(|| http::Uri::from_static("/"), http::Uri::from);
    let req = Request::from_parts(parts, body);
    match sender.try_send_request(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut back = GiveBack {
                body,
                back: Some((Arc::clone(affinity), upstream.to_owned(), sender)),
            };
            if back.body.is_end_stream() {
                back.give_back();
            }
            Ok(Response::from_parts(parts, back.boxed()))
        }
        Err(mut e) => {
            affinity.release();
            match e.take_message() {
                Some(mut req) if reused => {
                    *req.uri_mut() = full;
                    via_pool(pool, req).await
                }
                _ => Err(Box::new(e.into_error())),
            }
        }
    }
}

/// Sends `req` through hyper-util's shared pool.
async fn via_pool(
    pool: &Client<HttpConnector, Body>,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    Ok(pool
        .request(req)
        .await?
        .map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed()))
}

/// Opens an HTTP/1.1 connection to the upstream named by `uri` (`http://host[:port]`).
async fn connect(uri: &http::Uri) -> Result<SendRequest<Body>, BoxError> {
    let host = uri.host().ok_or("upstream URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| "connecting to the upstream timed out")??;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// An upstream response body that puts its connection back for the client connection's next
/// request once it has been read to the end. Dropped before that, the connection goes with it.
struct GiveBack {
    body: Incoming,
    back: Option<(Arc<Affinity>, String, SendRequest<Body>)>,
}

impl GiveBack {
    fn give_back(&mut self) {
        if let Some((affinity, upstream, sender)) = self.back.take() {
            affinity.put(upstream, sender);
        }
    }
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        if let Some((affinity, _, _)) = self.back.take() {
            affinity.release();
        }
    }
}

impl hyper::body::Body for GiveBack {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => this.give_back(),
            std::task::Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            std::task::Poll::Ready(Some(Err(_))) => {
                if let Some((affinity, _, _)) = this.back.take() {
                    affinity.release();
                }
            }
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(|e| -> BoxError { Box::new(e) })))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What the upstream is told of the user, as header values: the signed assertion, the user
/// name and the groups.
#[derive(Debug)]
pub(crate) struct Identity {
    pub assertion: HeaderValue,
    pub user: Option<HeaderValue>,
    pub groups: Option<HeaderValue>,
    /// When the assertion was signed: it is reused for at most the caches' lifetime after.
    pub signed: std::time::Instant,
}

/// The identity headers of one session for one app, kept by a client connection for its next
/// request (no lock shared with other connections, no key to build): a browser's connection
/// carries one session to one app host.
#[derive(Debug, Default)]
pub(crate) struct IdentitySlot(std::sync::Mutex<Option<KeptIdentity>>);

#[derive(Debug)]
struct KeptIdentity {
    token_hash: String,
    app_host: String,
    identity: Arc<Identity>,
}

impl IdentitySlot {
    fn get(
        &self,
        token_hash: &str,
        app_host: &str,
        now: std::time::Instant,
        ttl: std::time::Duration,
    ) -> Option<Arc<Identity>> {
        let slot = self.0.lock().ok()?;
        let kept = slot.as_ref()?;
        (kept.token_hash == token_hash
            && kept.app_host == app_host
            && now.saturating_duration_since(kept.identity.signed) < ttl)
            .then(|| Arc::clone(&kept.identity))
    }

    fn put(&self, token_hash: &str, app_host: &str, identity: &Arc<Identity>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(KeptIdentity {
                token_hash: token_hash.to_owned(),
                app_host: app_host.to_owned(),
                identity: Arc::clone(identity),
            });
        }
    }
}

/// The identity headers for `session` at `app`: from the client connection's slot, the
/// gateway's cache, or signed now. One session's assertion for one app is reused for half its
/// lifetime: signing on every request costs more than the rest of the decision.
fn identity(
    gw: &Gateway,
    ctx: &Ctx,
    app: &App,
    user: &User,
    session: &Session,
) -> Result<Arc<Identity>, crate::assertion::AssertionError> {
    let t = std::time::Instant::now();
    let ttl = gw.assertions.ttl();
    if let Some(identity) = ctx
        .conn
        .identity
        .get(&session.token_hash, &app.host, t, ttl)
    {
        return Ok(identity);
    }
    let key = format!("{}|{}", session.token_hash, app.host);
    let identity = match gw.assertions.get(&key, t) {
        Some(identity) => identity,
        None => {
            let jwt = sign_fresh(gw, app, user, session)?;
            let identity = Arc::new(Identity {
                assertion: HeaderValue::from_str(&jwt).map_err(|e| {
                    crate::assertion::AssertionError::Sign(format!(
                        "the signed assertion is not a header value: {e}"
                    ))
                })?,
                user: HeaderValue::from_str(&user.username).ok(),
                groups: HeaderValue::from_str(&user.groups.join(",")).ok(),
                signed: t,
            });
            gw.assertions.insert(key, Arc::clone(&identity), t);
            identity
        }
    };
    ctx.conn
        .identity
        .put(&session.token_hash, &app.host, &identity);
    Ok(identity)
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
