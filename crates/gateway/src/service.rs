//! One request through the gateway. The order is the design, so it is all here:
//!
//! 1. **normalise** — refuse ambiguous request targets (400), never rewrite them;
//! 2. **route** — health endpoints, the sign-in portal, or a configured app by `Host`;
//! 3. **authenticate** — the session cookie (stored hash, idle and absolute limits, user active);
//! 4. **build context** — user, app, method, path, client address (forwarded headers only from
//!    trusted proxies), time;
//! 5. **decide** — the Cedar policy engine; default deny;
//! 6. **audit** — the decision is durably recorded *before* anything is forwarded; if the audit
//!    log cannot record it, the request is refused (fail closed);
//! 7. **forward** — to the app's upstream with a signed identity assertion.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tsuzuku_audit::{AuditEvent, Detail, EventKind};
use tsuzuku_identity::token::hash_token;
use tsuzuku_policy::{AppFacts, RequestFacts, UserFacts};
use tsuzuku_store::{App, Session, User};

use crate::device::{self, ConnDevice};
use crate::headers::{self, SESSION_COOKIE};
use crate::portal;
use crate::proxy;
use crate::respond;
use crate::server::Conn;
use crate::standby;
use crate::state::{Body, Gateway, now_ms, now_unix};
use tsuzuku_httpguard::path::check_path_with;

#[cfg(test)]
mod tests;

/// A short random id that ties a response, the log and the audit event together. From the
/// thread's CSPRNG (seeded from the OS), not the OS itself: no system call per request.
pub(crate) fn request_id() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Request-scoped facts every handler needs.
pub(crate) struct Ctx {
    pub id: String,
    pub peer: SocketAddr,
    pub client_ip: IpAddr,
    pub host: String,
    /// The device of the connection (mutual TLS).
    pub device: ConnDevice,
    /// The client connection (its kept upstream connection and identity headers).
    pub conn: Arc<Conn>,
}

/// Entry point for every request on every connection.
pub(crate) async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    gw.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let peer = conn.peer;
    let device = match conn.device.as_deref() {
        None => ConnDevice::None,
        fp => device::resolve(fp, &gw.snapshot.load().devices, now_unix()),
    };
    let id = request_id();
    let host = match request_host(&req) {
        Ok(h) => h,
        Err(why) => {
            return Ok(respond::error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                &format!("The request was refused because {why}."),
                &id,
            ));
        }
    };
    let ctx = Ctx {
        id,
        peer,
        client_ip: headers::client_ip(peer.ip(), req.headers(), &gw.settings.trusted_proxies),
        host,
        device,
        conn,
    };
    let resp = route(&gw, &ctx, req).await;
    Ok(resp)
}

/// The host the request is for, lower-cased: the request target's authority (absolute form,
/// HTTP/2's `:authority`) or the one `Host` header. Two names for the request are refused
/// rather than one picked: the app is chosen by this name, and the upstream is given it as
/// its `Host`, so an upstream routing by name can never be reached under another app's
/// decision.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<String, &'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("it has more than one Host header");
    }
    let header = match header.map(|h| h.to_str()) {
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Err("its Host header is not text"),
        None => None,
    };
    let raw = match (req.uri().authority().map(|a| a.as_str()), header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err("its Host header names another host than its request target");
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => "",
    };
    Ok(raw.to_ascii_lowercase())
}

async fn route(gw: &Arc<Gateway>, ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    // 1. normalise
    // (Conflicting Content-Length and Transfer-Encoding never get here: hyper lets
    // Transfer-Encoding win, drops Content-Length and closes the connection after the
    // response, RFC 9112 §6.3; the body is re-framed towards the upstream.)
    let path = req.uri().path();
    if let Err(e) = check_path_with(path, gw.settings.path_rules) {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            &format!("The address was refused because {e}."),
            &ctx.id,
        );
    }
    // 2. route
    let snapshot = gw.snapshot.load_full();
    let app = snapshot.apps.get(&ctx.host);
    let is_portal = ctx.host == gw.settings.portal_host;
    match path {
        "/.tsuzuku/healthz" => return health(gw, false).await,
        "/.tsuzuku/readyz" => return health(gw, true).await,
        "/healthz" if app.is_none() => return health(gw, false).await,
        "/readyz" if app.is_none() => return health(gw, true).await,
        _ => {}
    }
    // The posture endpoint is an API for connectors: it refuses a revoked device itself, in
    // JSON.
    if path == device::POSTURE_PATH {
        return device::posture_endpoint(gw, ctx, req).await;
    }
    if let ConnDevice::Revoked(d) = &ctx.device {
        tracing::warn!(request_id = %ctx.id, device = %d.id, "request from a revoked device refused");
        return respond::error(
            StatusCode::FORBIDDEN,
            "Device revoked",
            &format!(
                "The certificate of this device ({}) was revoked by your IT team, so nothing can be reached from it. Ask your IT team to enrol the device again.",
                d.name
            ),
            &ctx.id,
        );
    }
    if is_portal {
        return portal::handle(gw, ctx, req).await;
    }
    let Some(app) = app else {
        return respond::error(
            StatusCode::NOT_FOUND,
            "Unknown application",
            &format!(
                "No application is configured for the address {:?}. Check the link, or ask your IT team to add the application.",
                ctx.host
            ),
            &ctx.id,
        );
    };
    if path.starts_with("/.tsuzuku/") {
        return portal::handle_app_internal(gw, ctx, app, req).await;
    }
    protected(gw, ctx, app, &snapshot.engine, req).await
}

async fn health(gw: &Gateway, ready: bool) -> Response<Body> {
    if !ready {
        return respond::text(StatusCode::OK, "ok\n");
    }
    match gw.ready().await {
        Ok(()) => respond::text(StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            respond::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }
}

/// What authentication found for a request.
pub(crate) enum Authn {
    /// Shared with the session cache: nothing is copied per request.
    Ok(Arc<(Session, User)>),
    None,
    Unavailable(String),
    /// The session was created on an enrolled device and this connection is not from it.
    OtherDevice,
}

/// Looks up and checks the session cookie for this host.
pub(crate) async fn authenticate(gw: &Gateway, ctx: &Ctx, req: &Request<Incoming>) -> Authn {
    let Some(token) = headers::cookie(req.headers(), SESSION_COOKIE) else {
        return Authn::None;
    };
    // Tokens are looked up by their SHA-256, so no comparison of the secret itself happens here;
    // the database index compares hashes of uniformly random values.
    let hash = hash_token(token);
    let now = now_unix();
    let cached = gw.sessions.get(&hash, std::time::Instant::now());
    let su = match cached {
        Some(su) => su,
        None => {
            // A session issued during read-only failover carries itself (see `standby`).
            // A snapshot-fed gateway does not wait for a store that no server answers for.
            let looked_up = match gw.feed.as_ref() {
                _ if token.starts_with(standby::PREFIX) => {
                    Ok(standby::open_session(&gw.signers.load().all, token, now))
                }
                Some(_) if !gw.store.root().role().is_readable() => Err(
                    tsuzuku_store::StoreError::Unavailable("no database server answers".into()),
                ),
                _ => gw.store.get_session(&hash).await,
            };
            let session = match (looked_up, gw.feed.as_ref()) {
                (Ok(Some(s)), feed) => {
                    if let Some(f) = feed {
                        f.remember(&s);
                    }
                    s
                }
                (Ok(None), feed) => {
                    if let Some(f) = feed {
                        f.forget(&hash);
                    }
                    return Authn::None;
                }
                // The store cannot answer: a snapshot-fed gateway goes on with the sessions it
                // has seen (their own idle and absolute limits still apply below).
                (Err(e), Some(f)) => match f.known(&hash) {
                    Some(s) => s,
                    None => return Authn::Unavailable(e.to_string()),
                },
                (Err(e), None) => return Authn::Unavailable(e.to_string()),
            };
            let from_snapshot = gw
                .snapshot
                .load()
                .users
                .as_ref()
                .map(|users| users.get(&session.user_id).cloned());
            let user = match from_snapshot {
                Some(Some(u)) => u,
                Some(None) => return Authn::None,
                None => match gw.store.get_user(&session.user_id).await {
                    Ok(Some(u)) => u,
                    Ok(None) => return Authn::None,
                    Err(e) => return Authn::Unavailable(e.to_string()),
                },
            };
            let su = Arc::new((session, user));
            gw.sessions
                .insert(hash.clone(), su.clone(), std::time::Instant::now());
            su
        }
    };
    let (session, user) = (&su.0, &su.1);
    if user.disabled {
        return Authn::None;
    }
    if let Err(why) = session_usable(session, &ctx.host, now, gw.settings.idle_timeout_secs) {
        tracing::debug!(request_id = %ctx.id, %why, "session not usable");
        return Authn::None;
    }
    if !device::session_device_matches(session.device_id.as_deref(), &ctx.device) {
        tracing::warn!(request_id = %ctx.id, bound = ?session.device_id, "session used from another device");
        return Authn::OtherDevice;
    }
    // Refresh the idle clock at most once a minute, so requests do not each write. The cached
    // copy learns the new time first (keeping its age, so the cache still re-reads the store
    // on time): without that, every request served from the cache until it expires would see
    // the old time and write too.
    if now.saturating_sub(session.last_seen) >= 60 {
        let mut fresh = session.clone();
        fresh.last_seen = now;
        gw.sessions.replace(&hash, Arc::new((fresh, user.clone())));
        if let Err(e) = touch(gw, &hash, now).await {
            match gw.feed.as_ref() {
                Some(f) => f.touch(&hash, now),
                None => tracing::warn!(error = %e, "could not refresh session activity"),
            }
        }
    }
    Authn::Ok(su)
}

async fn touch(gw: &Gateway, hash: &str, now: i64) -> Result<(), tsuzuku_store::StoreError> {
    if gw.feed.is_some() && !gw.store.root().role().is_writable() {
        return Err(tsuzuku_store::StoreError::Unavailable(
            "no database server takes writes".into(),
        ));
    }
    gw.store.touch_session(hash, now).await.map(drop)
}

/// Why a stored session cannot be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionUnusable {
    #[error("the session belongs to another host")]
    OtherHost,
    #[error("the session passed its absolute lifetime")]
    Expired,
    #[error("the session was idle too long")]
    Idle,
}

/// Pure check of a stored session against the request's host and the clock.
pub(crate) fn session_usable(
    s: &Session,
    host: &str,
    now: i64,
    idle_timeout_secs: i64,
) -> Result<(), SessionUnusable> {
    if s.scope != host {
        return Err(SessionUnusable::OtherHost);
    }
    if now >= s.absolute_expiry {
        return Err(SessionUnusable::Expired);
    }
    if now.saturating_sub(s.last_seen) >= idle_timeout_secs {
        return Err(SessionUnusable::Idle);
    }
    Ok(())
}

async fn protected(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    app: &App,
    engine: &tsuzuku_policy::PolicyEngine,
    req: Request<Incoming>,
) -> Response<Body> {
    // 3. authenticate
    let su = match authenticate(gw, ctx, &req).await {
        Authn::Ok(su) => su,
        Authn::None => {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            if req.method() == Method::GET || req.method() == Method::HEAD {
                return portal::login_redirect(gw, ctx, req.headers(), &pq);
            }
            return respond::error(
                StatusCode::UNAUTHORIZED,
                "Sign-in required",
                "Your session has ended or you have not signed in. Open the application again to sign in.",
                &ctx.id,
            );
        }
        Authn::Unavailable(e) => {
            tracing::error!(request_id = %ctx.id, error = %e, "session store unavailable");
            return respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Sign-in information cannot be checked right now. Try again in a moment.",
                &ctx.id,
            );
        }
        Authn::OtherDevice => return device::other_device_page(ctx),
    };
    let (session, user) = (&su.0, &su.1);
    // 4. build context
    let user_facts = UserFacts {
        id: user.id.clone(),
        username: user.username.clone(),
        groups: user.groups.clone(),
        auth_method: session.auth_method.clone(),
        mfa: session.mfa,
        auth_time: session.auth_time,
    };
    let app_facts = AppFacts {
        name: app.name.clone(),
        data_class: app.data_class.clone(),
        critical: app.critical,
        isolated: app.isolated,
    };
    let req_facts = RequestFacts {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        source_ip: ctx.client_ip,
        now_unix: now_unix(),
    };
    let device_facts = device::facts_for(gw, &ctx.device, req_facts.now_unix).await;
    // 5. decide
    let decision = engine.decide(&user_facts, device_facts.as_ref(), &app_facts, &req_facts);
    // 6. audit, before anything reaches the app. The detail is written once, here, straight
    // into its canonical text (no JSON tree is built, handed over and freed).
    let detail = DecisionDetail {
        allowed: decision.allowed,
        app: &app.name,
        auth_method: &session.auth_method,
        context: decision.summary(&user_facts, device_facts.as_ref(), &app_facts, &req_facts),
        device: ctx.device.id(),
        errors: &decision.errors,
        groups: &user.groups,
        host: &ctx.host,
        method: &req_facts.method,
        mfa: session.mfa,
        node: &gw.settings.node_id,
        path: &req_facts.path,
        peer_ip: ctx.peer.ip(),
        policies: &decision.determining,
        policy_version: gw.policy_version(),
        reason: &decision.reason,
        request_id: &ctx.id,
        source_ip: ctx.client_ip,
        user: &user.username,
        user_id: &user.id,
    };
    let detail = match Detail::from_serialize(&detail) {
        Ok(d) => d,
        Err(e) => {
            // Plain strings, numbers and addresses: never happens; refused like an audit
            // failure if it did.
            tracing::error!(request_id = %ctx.id, error = %e, "could not encode a decision's audit detail");
            return unrecorded(ctx);
        }
    };
    let event = AuditEvent {
        time_ms: now_ms(),
        kind: EventKind::Decision,
        actor: Some(user.username.clone()),
        tenant: gw.store.tenant_id().to_owned(),
        detail,
    };
    if let Err(e) = gw.audit.record(event).await {
        tracing::error!(request_id = %ctx.id, error = %e, "audit log unavailable; refusing request");
        return unrecorded(ctx);
    }
    if !decision.allowed {
        return respond::error(
            StatusCode::FORBIDDEN,
            "Access denied",
            &format!(
                "{} may not {} {} on {}: {}",
                user.username, req_facts.method, req_facts.path, app.name, decision.reason
            ),
            &ctx.id,
        );
    }
    // 7. forward
    proxy::forward(gw, ctx, app, user, session, req).await
}

/// The refusal of a request whose decision could not be recorded: no access without its audit
/// event.
fn unrecorded(ctx: &Ctx) -> Response<Body> {
    respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Access cannot be recorded right now, so it is not granted. Try again in a moment.",
        &ctx.id,
    )
}

/// The detail of a decision's audit event: who, what, from where, which policies decided and
/// why, and the inputs as the policies saw them (`context`). Fields in key order: serialised,
/// it is already the audit chain's canonical text (checked by a test).
#[derive(serde::Serialize)]
struct DecisionDetail<'a> {
    allowed: bool,
    app: &'a str,
    auth_method: &'a str,
    context: tsuzuku_policy::Summary<'a>,
    device: Option<&'a str>,
    errors: &'a [String],
    groups: &'a [String],
    host: &'a str,
    method: &'a str,
    mfa: bool,
    node: &'a str,
    path: &'a str,
    peer_ip: IpAddr,
    policies: &'a [String],
    policy_version: i64,
    reason: &'a str,
    request_id: &'a str,
    source_ip: IpAddr,
    user: &'a str,
    user_id: &'a str,
}
