//! The sign-in portal (its own host) and the few `/.tsuzuku/` endpoints on app hosts.
//!
//! Flow (like Pomerium's authenticate service): an app host without a session redirects to the
//! portal with `rd=https://<app host><path>`; after sign-in the portal redirects to
//! `https://<app host>/.tsuzuku/handoff?code=…` with a single-use code (30 s), and the app host
//! swaps it for its own host-only session cookie. All cookies of one sign-in share a `login_id`,
//! so signing out anywhere ends them all. No session cookie is ever minted on a refused flow.
//!
//! The code is bound to the browser that started the sign-in (against login CSRF: a code an
//! attacker obtained for their own account and sent as a link must not sign a victim's browser
//! in). The app host's redirect to the portal ([`login_redirect`]) sets a random nonce in a
//! host-only cookie ([`SIGNIN_COOKIE`], 10 min) and sends only its SHA-256 (`bind`) to the
//! portal; the portal keeps `bind`, per app host, in a cookie of its own ([`BIND_COOKIE`]) for
//! the sign-in form's POST and the OIDC callback, and redeems the code only together with it
//! (sign-ins started in tabs of different apps keep one entry each): the store
//! keeps the SHA-256 of `code.bind`, a code sealed during read-only failover carries `bind`
//! inside its seal. The handoff looks the code up with the `bind` of the browser's own nonce,
//! so a code opened in any other browser finds nothing and sets no cookie. A sign-in that
//! reaches the point of handing off without a `bind` (a portal link without one, an expired
//! cookie) first goes through `https://<app host>/.tsuzuku/signin`, which sets the nonce and
//! comes back to the portal, where the browser is already signed in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tsuzuku_audit::{AuditError, AuditEvent, EventKind};
use tsuzuku_identity::token::{ct_eq, hash_token, new_token};
use tsuzuku_identity::{password, totp};
use tsuzuku_store::{App, Device, OidcPending, Session, StoreError, StoreRole, User};

use crate::assertion::JWKS_PATH;
use crate::device::ConnDevice;
use crate::headers::{self, CSRF_COOKIE, OIDC_COOKIE, SESSION_COOKIE, set_cookie};
use crate::pages::{self, LoginPage};
use crate::respond;
use crate::service::{Authn, Ctx, authenticate};
use crate::standby;
use crate::state::{Body, Gateway, now_ms, now_unix};
use tsuzuku_httpguard::redirect::{ReturnTo, check_local_path_with, parse_return_to_with};

/// Largest sign-in form accepted.
const MAX_FORM: usize = 16 * 1024;
/// Lifetime of a handoff code.
const HANDOFF_SECS: i64 = 30;
/// Lifetime of a pending OIDC sign-in.
const OIDC_PENDING_SECS: i64 = 600;
/// Cookie on an app host holding the nonce that ties a sign-in to this browser (a token from
/// `new_token`, never sent anywhere but this host). Its SHA-256 is the sign-in's `bind`.
pub(crate) const SIGNIN_COOKIE: &str = "__Host-tsuzuku_signin";
/// Cookie on the portal holding the `bind` of the sign-in its form was shown for.
const BIND_COOKIE: &str = "__Host-tsuzuku_bind";
/// Lifetime of both: time enough to type a password and a code, or to pass through the
/// identity provider.
const SIGNIN_SECS: i64 = 600;
/// The app-host endpoint that sets the nonce and sends the browser on to the portal.
const SIGNIN_PATH: &str = "/.tsuzuku/signin";

/// Requests to the portal host.
pub(crate) async fn handle(gw: &Arc<Gateway>, ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/.tsuzuku/login") => login_form(gw, ctx, &req).await,
        (Method::POST, "/.tsuzuku/login") => login_submit(gw, ctx, req).await,
        (Method::POST, "/.tsuzuku/login/device") => device_login(gw, ctx, req).await,
        (Method::GET, "/.tsuzuku/oidc/start") => oidc_start(gw, ctx, &req).await,
        (Method::GET, "/.tsuzuku/oidc/callback") => oidc_callback(gw, ctx, &req).await,
        (Method::GET | Method::HEAD, "/.tsuzuku/logout") => logout_page(),
        (Method::POST, "/.tsuzuku/logout") => logout(gw, ctx, req).await,
        (Method::GET | Method::HEAD, p) if p == JWKS_PATH => {
            respond::json(StatusCode::OK, &gw.jwks())
        }
        (Method::GET | Method::HEAD, "/") => home(gw, ctx, &req).await,
        (
            _,
            "/.tsuzuku/login"
            | "/.tsuzuku/login/device"
            | "/.tsuzuku/logout"
            | "/"
            | "/.tsuzuku/oidc/start"
            | "/.tsuzuku/oidc/callback",
        ) => respond::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            &format!("{} is not supported here.", req.method()),
            &ctx.id,
        ),
        _ => respond::error(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page on the sign-in portal.",
            &ctx.id,
        ),
    }
}

/// `/.tsuzuku/*` requests on an app host.
pub(crate) async fn handle_app_internal(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    _app: &App,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/.tsuzuku/handoff") => handoff(gw, ctx, &req).await,
        (Method::GET | Method::HEAD, SIGNIN_PATH) => signin(gw, ctx, &req),
        (Method::GET | Method::HEAD, "/.tsuzuku/logout") => logout_page(),
        (Method::POST, "/.tsuzuku/logout") => logout(gw, ctx, req).await,
        _ => respond::error(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such gateway page.",
            &ctx.id,
        ),
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Whether `s` looks like a token from `new_token` (43 characters of base64url).
fn is_token(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` looks like a `bind` (a SHA-256 from `hash_token`: 64 lowercase hex digits).
fn is_bind(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the store keeps of a handoff code: the SHA-256 of the code together with the `bind`
/// of the browser it was issued to, so that only that browser's nonce finds it.
fn handoff_key(code: &str, bind: &str) -> String {
    hash_token(&format!("{code}.{bind}"))
}

/// The redirect of a browser without a session on an app host to the portal's sign-in, for
/// `path_and_query` on this host: it ties the sign-in to this browser with a nonce cookie (the
/// browser's own if it still holds one, so that sign-ins started in several tabs share it) and
/// gives the portal only the nonce's SHA-256.
pub(crate) fn login_redirect(
    gw: &Gateway,
    ctx: &Ctx,
    req_headers: &http::HeaderMap,
    path_and_query: &str,
) -> Response<Body> {
    let nonce = headers::cookie(req_headers, SIGNIN_COOKIE)
        .filter(|n| is_token(n))
        .map_or_else(new_token, str::to_owned);
    let rd = format!("https://{}{}", ctx.host, path_and_query);
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("rd", &rd)
        .append_pair("bind", &hash_token(&nonce))
        .finish();
    respond::with_cookie(
        respond::redirect(
            StatusCode::FOUND,
            &format!("https://{}/.tsuzuku/login?{q}", gw.settings.portal_host),
        ),
        &set_cookie(SIGNIN_COOKIE, &nonce, Some(SIGNIN_SECS)),
    )
}

/// `GET /.tsuzuku/signin?rd=<path>` on an app host: (re)starts a sign-in for `path` that is
/// bound to this browser (see [`login_redirect`]).
fn signin(gw: &Gateway, ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let q = query(req);
    let rd = q.get("rd").map(String::as_str).unwrap_or("/");
    match check_local_path_with(rd, gw.settings.path_rules) {
        Ok(path) => login_redirect(gw, ctx, req.headers(), &path),
        Err(_) => respond::error(
            StatusCode::BAD_REQUEST,
            "Bad sign-in link",
            "The address to return to after sign-in is not a path of this application.",
            &ctx.id,
        ),
    }
}

/// The app-host address that (re)starts a sign-in bound to the browser, returning to `path`.
fn signin_link(path: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("rd", path)
        .finish();
    format!("{SIGNIN_PATH}?{q}")
}

fn is_known_host(gw: &Gateway, host: &str) -> bool {
    host == gw.settings.portal_host || gw.snapshot.load().apps.contains_key(host)
}

/// Parses `rd`, where empty means "the portal home".
fn return_to(gw: &Gateway, rd: &str) -> Result<Option<ReturnTo>, String> {
    if rd.is_empty() {
        return Ok(None);
    }
    parse_return_to_with(rd, gw.settings.path_rules, |h| is_known_host(gw, h))
        .map(Some)
        .map_err(|e| e.to_string())
}

fn new_csrf() -> (String, String) {
    let t = new_token();
    let c = set_cookie(CSRF_COOKIE, &t, None);
    (t, c)
}

fn csrf_ok(req_headers: &http::HeaderMap, form_value: Option<&String>) -> bool {
    match (headers::cookie(req_headers, CSRF_COOKIE), form_value) {
        (Some(c), Some(f)) => !c.is_empty() && ct_eq(c, f),
        _ => false,
    }
}

fn render_login(
    gw: &Gateway,
    status: StatusCode,
    error: Option<&str>,
    rd: &str,
    username: &str,
) -> Response<Body> {
    render_login_with(gw, status, error, rd, username, None)
}

/// The sign-in page, offering device sign-in for `device` (the user, the device).
fn render_login_with(
    gw: &Gateway,
    status: StatusCode,
    error: Option<&str>,
    rd: &str,
    username: &str,
    device: Option<(&User, &Device)>,
) -> Response<Body> {
    let (csrf, cookie) = new_csrf();
    let page = pages::login(&LoginPage {
        error,
        csrf: &csrf,
        return_to: rd,
        username,
        sso_label: gw.settings.sso_label.as_deref(),
        device: device.map(|(u, d)| (u.username.as_str(), d.name.as_str())),
    });
    respond::with_cookie(respond::html(status, page), &cookie)
}

/// Why the connection's device cannot sign anyone in, or the user it signs in (device sign-in
/// on, an enrolled unrevoked device that belongs to an existing, enabled user).
async fn device_owner(gw: &Gateway, ctx: &Ctx) -> Result<(User, Arc<Device>), DeviceSignIn> {
    if !gw.settings.device_sign_in {
        return Err(DeviceSignIn::Off);
    }
    let ConnDevice::Enrolled(d) = &ctx.device else {
        return Err(DeviceSignIn::NoDevice);
    };
    let Some(uid) = d.user_id.as_deref() else {
        return Err(DeviceSignIn::NoOwner(d.name.clone()));
    };
    match gw.store.get_user(uid).await {
        Ok(Some(u)) if !u.disabled => Ok((u, d.clone())),
        Ok(_) => Err(DeviceSignIn::OwnerGone(d.name.clone())),
        Err(e) => Err(DeviceSignIn::Store(e.to_string())),
    }
}

/// Why device sign-in is not possible on a connection.
enum DeviceSignIn {
    Off,
    NoDevice,
    NoOwner(String),
    OwnerGone(String),
    Store(String),
}

/// `POST /.tsuzuku/login/device`: signs in the user the connection's device belongs to
/// (auth method `device`, no second factor), where `[gateway] device_sign_in` is on.
async fn device_login(gw: &Arc<Gateway>, ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let PostedForm { hdrs, target, .. } = match posted_sign_in(gw, ctx, req, "device").await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let (user, device) = match device_owner(gw, ctx).await {
        Ok(o) => o,
        Err(why) => {
            let (reason, message) = match why {
                DeviceSignIn::Off => (
                    "device sign-in is off".to_owned(),
                    "Signing in with a device is not enabled on this gateway. Sign in with your user name and password.".to_owned(),
                ),
                DeviceSignIn::NoDevice => (
                    "no enrolled device on the connection".to_owned(),
                    "No enrolled device was recognised on this connection: signing in with a device needs the Tsuzuku connector of an enrolled device. Sign in with your user name and password.".to_owned(),
                ),
                DeviceSignIn::NoOwner(name) => (
                    format!("device {name} belongs to no user"),
                    format!("This device ({name}) was not enrolled for a user, so it cannot sign anyone in. Sign in with your user name and password, or ask your IT team to enrol it for you."),
                ),
                DeviceSignIn::Store(e) => return store_down(ctx, &e),
                DeviceSignIn::OwnerGone(name) => (
                    format!("the user of device {name} is unknown or disabled"),
                    format!("The user this device ({name}) belongs to is unknown or disabled. Ask your IT team."),
                ),
            };
            audit_login(gw, ctx, None, false, &reason, "device").await;
            return respond::error(
                StatusCode::FORBIDDEN,
                "Device sign-in refused",
                &message,
                &ctx.id,
            );
        }
    };
    let now = now_unix();
    if let Some(until) = user.locked_until.filter(|t| *t > now) {
        audit_login(gw, ctx, Some(&user), false, "account locked", "device").await;
        return respond::error(
            StatusCode::TOO_MANY_REQUESTS,
            "Account locked",
            &format!(
                "Too many failed sign-ins: this account is locked until {}. Ask your IT team if you need access sooner.",
                local_hhmm(gw, until)
            ),
            &ctx.id,
        );
    }
    tracing::info!(request_id = %ctx.id, user = %user.username, device = %device.name, "device sign-in");
    finish_login(gw, ctx, &hdrs, &user, "device", false, target).await
}

async fn login_form(gw: &Arc<Gateway>, ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let q = query(req);
    let rd = q.get("rd").map(String::as_str).unwrap_or("");
    let target = match return_to(gw, rd) {
        Ok(t) => t,
        Err(e) => return bad_link(ctx, &e),
    };
    // The browser binding of a sign-in for an app (see the module's documentation).
    let bind = q.get("bind").map(String::as_str).filter(|b| is_bind(b));
    // Already signed in at the portal: go straight on.
    if let Authn::Ok(su) = authenticate(gw, ctx, req).await {
        let session = &su.0;
        if let Some(t) = target {
            return continue_to(gw, ctx, session, &t, bind).await;
        }
        return respond::redirect(StatusCode::FOUND, "/");
    }
    let owner = device_owner(gw, ctx).await.ok();
    let page = render_login_with(
        gw,
        StatusCode::OK,
        None,
        rd,
        "",
        owner.as_ref().map(|(u, d)| (u, d.as_ref())),
    );
    // The form's sign-in (password, device or OIDC) hands off to its app with the `bind` kept
    // for that app's host; a form for a host shown without one forgets any earlier one.
    let Some(t) = target else {
        return page;
    };
    let entries = binds(req.headers());
    respond::with_cookie(page, &binds_cookie(&entries, &t.host, bind))
}

/// Most apps whose sign-ins the portal's bind cookie keeps at once (one entry per app host, so
/// that sign-ins started in tabs of different apps do not take each other's place).
const MAX_BINDS: usize = 8;

/// The entries of the portal's bind cookie: `<app host>=<bind>`, separated by `/` (characters a
/// cookie value may hold; a host name holds neither).
fn binds(hdrs: &http::HeaderMap) -> Vec<(String, String)> {
    headers::cookie(hdrs, BIND_COOKIE)
        .unwrap_or("")
        .split('/')
        .filter_map(|e| e.split_once('='))
        .filter(|(host, bind)| !host.is_empty() && is_bind(bind))
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .take(MAX_BINDS)
        .collect()
}

/// The `bind` kept for sign-ins to `host`.
fn bind_for(hdrs: &http::HeaderMap, host: &str) -> Option<String> {
    binds(hdrs)
        .into_iter()
        .find(|(h, _)| h == host)
        .map(|(_, b)| b)
}

/// The bind cookie with `host`'s entry set to `bind` (newest first), or removed for `None`;
/// an empty cookie is deleted.
fn binds_cookie(entries: &[(String, String)], host: &str, bind: Option<&str>) -> String {
    let kept = entries.iter().filter(|(h, _)| h != host);
    let value: Vec<String> = bind
        .map(|b| format!("{host}={b}"))
        .into_iter()
        .chain(kept.map(|(h, b)| format!("{h}={b}")))
        .take(MAX_BINDS)
        .collect();
    if value.is_empty() {
        return set_cookie(BIND_COOKIE, "", Some(0));
    }
    set_cookie(BIND_COOKIE, &value.join("/"), Some(SIGNIN_SECS))
}

async fn read_form(
    req: Request<Incoming>,
) -> Result<(http::HeaderMap, HashMap<String, String>), String> {
    let (parts, body) = req.into_parts();
    let ct_ok = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.starts_with("application/x-www-form-urlencoded"))
        .unwrap_or(false);
    if !ct_ok {
        return Err("the form must be sent as application/x-www-form-urlencoded".into());
    }
    let bytes = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|_| format!("the form is larger than {MAX_FORM} bytes or was cut off"))?
        .to_bytes();
    let form = form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((parts.headers, form))
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}

/// A posted sign-in form that passed the checks every sign-in makes first.
struct PostedForm {
    hdrs: http::HeaderMap,
    form: HashMap<String, String>,
    /// Where to go after signing in (`rd`), checked.
    target: Option<ReturnTo>,
}

/// The checks before any sign-in (`method` names it in the audit): the per-address throttle,
/// the form itself, its CSRF token (an expired form shows the sign-in page again) and its
/// return address. `Err` is the answer to send.
async fn posted_sign_in(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    req: Request<Incoming>,
    method: &str,
) -> Result<PostedForm, Response<Body>> {
    if !gw
        .ip_limiter
        .check(ctx.client_ip, std::time::Instant::now())
    {
        audit_login(gw, ctx, None, false, "rate limited", method).await;
        return Err(respond::error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many sign-in attempts from your address. Wait a minute and try again.",
            &ctx.id,
        ));
    }
    let (hdrs, form) = read_form(req).await.map_err(|e| {
        respond::error(
            StatusCode::BAD_REQUEST,
            "Bad sign-in form",
            &format!("The sign-in was refused: {e}."),
            &ctx.id,
        )
    })?;
    let rd = field(&form, "rd");
    if !csrf_ok(&hdrs, form.get("csrf")) {
        return Err(render_login(
            gw,
            StatusCode::BAD_REQUEST,
            Some("The sign-in form expired. Please sign in again."),
            rd,
            field(&form, "username").trim(),
        ));
    }
    let target = return_to(gw, rd).map_err(|e| bad_link(ctx, &e))?;
    Ok(PostedForm { hdrs, form, target })
}

/// The page for a sign-in link whose return address cannot be used.
fn bad_link(ctx: &Ctx, e: &str) -> Response<Body> {
    respond::error(
        StatusCode::BAD_REQUEST,
        "Bad sign-in link",
        &format!("This sign-in link cannot be used: {e}."),
        &ctx.id,
    )
}

/// A lockout's end as local time of day (`HH:MM zone`).
fn local_hhmm(gw: &Gateway, unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| {
            t.to_zoned(gw.settings.tz.clone())
                .strftime("%H:%M %Z")
                .to_string()
        })
        .unwrap_or_default()
}

async fn login_submit(gw: &Arc<Gateway>, ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let PostedForm { hdrs, form, target } = match posted_sign_in(gw, ctx, req, "password").await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let rd = field(&form, "rd");
    let username = field(&form, "username").trim();
    let pw = field(&form, "password");
    let code = field(&form, "totp").trim();
    let now = now_unix();
    let generic = "The user name, password or one-time code is not right.";

    let user = match gw.store.get_user_by_name(username).await {
        Ok(u) => u,
        Err(e) => return store_down(ctx, &e.to_string()),
    };
    let Some(user) = user.filter(|u| !u.disabled && u.password_hash.is_some()) else {
        // Spend the same time as a real check so that timing does not reveal which names exist.
        password::verify_dummy(pw);
        audit_login(gw, ctx, None, false, "unknown or disabled user", "password").await;
        tracing::info!(request_id = %ctx.id, "sign-in failed: unknown or disabled user");
        return render_login(gw, StatusCode::UNAUTHORIZED, Some(generic), rd, username);
    };
    if let Some(until) = user.locked_until.filter(|t| *t > now) {
        password::verify_dummy(pw);
        audit_login(gw, ctx, Some(&user), false, "account locked", "password").await;
        let when = local_hhmm(gw, until);
        return render_login(
            gw,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins: this account is locked until {when}. Ask your IT team if you need access sooner."
            )),
            rd,
            username,
        );
    }
    let pw_ok = match user.password_hash.as_deref() {
        Some(hash) => password::verify(pw, hash).unwrap_or(false),
        None => false,
    };
    let mut reason = "wrong password";
    let mut ok = pw_ok;
    let mut mfa = false;
    if pw_ok && let Some(secret) = user.totp_secret.as_deref() {
        if code.is_empty() {
            // Right password, no code yet: ask for it without counting a failure.
            return render_login(
                gw,
                StatusCode::UNAUTHORIZED,
                Some("Enter the one-time code from your authenticator app."),
                rd,
                username,
            );
        }
        match totp::verify(secret, code, now) {
            Ok(Some(step)) => match gw.store.consume_totp_step(&user.id, step).await {
                Ok(true) => mfa = true,
                Ok(false) => {
                    ok = false;
                    reason = "one-time code already used";
                }
                // Read-only failover: the step is remembered on this node, and claimed on the
                // standby so that no other node takes it either (`Store::claim_while_read_only`).
                Err(e) if standby::is_read_only(&e) => {
                    if !gw.standby.consume_totp(&user.id, user.totp_last_step, step) {
                        ok = false;
                        reason = "one-time code already used";
                    } else {
                        match gw
                            .store
                            .claim_while_read_only(
                                &format!("totp:{}:{step}", user.id),
                                standby::TOTP_CLAIM_HOLD,
                            )
                            .await
                        {
                            Ok(true) => mfa = true,
                            Ok(false) => {
                                ok = false;
                                reason = "one-time code already used";
                            }
                            Err(e) => return store_down(ctx, &e.to_string()),
                        }
                    }
                }
                Err(e) => return store_down(ctx, &e.to_string()),
            },
            _ => {
                ok = false;
                reason = "wrong one-time code";
            }
        }
    }
    if !ok {
        let failures = user.failed_logins.saturating_add(1);
        let lock = gw.settings.lockout.lock_after(failures, now);
        match gw.store.record_login_failure(&user.id, now, lock).await {
            Ok(_) => {}
            // Read-only failover: the failure cannot be counted in the store; the per-address
            // throttle still applies, and the audit event records it.
            Err(e) if standby::is_read_only(&e) => {
                tracing::warn!(request_id = %ctx.id, "failed sign-in not counted: the store is read-only");
            }
            Err(e) => return store_down(ctx, &e.to_string()),
        }
        audit_login(gw, ctx, Some(&user), false, reason, "password").await;
        let msg = if reason == "one-time code already used" {
            "This one-time code was already used. Wait for the next code and try again."
        } else {
            generic
        };
        return render_login(gw, StatusCode::UNAUTHORIZED, Some(msg), rd, username);
    }
    if user.failed_logins > 0
        && let Err(e) = gw.store.reset_login_failures(&user.id).await
    {
        tracing::warn!(error = %e, "could not reset failed-login count");
    }
    let method = if mfa { "password+totp" } else { "password" };
    finish_login(gw, ctx, &hdrs, &user, method, mfa, target).await
}

/// Creates the portal session (rotating any old one) and continues to the target.
async fn finish_login(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    hdrs: &http::HeaderMap,
    user: &User,
    method: &str,
    mfa: bool,
    target: Option<ReturnTo>,
) -> Response<Body> {
    let now = now_unix();
    let login_id = new_token();
    let token = new_token();
    let session = Session {
        token_hash: hash_token(&token),
        login_id,
        user_id: user.id.clone(),
        auth_method: method.to_owned(),
        mfa,
        auth_time: now,
        created_at: now,
        last_seen: now,
        absolute_expiry: now + gw.settings.absolute_timeout_secs,
        source_ip: ctx.client_ip.to_string(),
        scope: gw.settings.portal_host.clone(),
        device_id: ctx.device.id().map(str::to_owned),
    };
    let (token, stored) = match gw.store.create_session(&session).await {
        Ok(()) => (token, true),
        Err(e) if standby::is_read_only(&e) => {
            match standby::seal_session(&gw.signer(), session.clone()) {
                Some(sealed) => {
                    tracing::info!(request_id = %ctx.id, user = %user.username, "store is read-only: issued a read-only-failover session");
                    (sealed, false)
                }
                None => return store_down(ctx, &e.to_string()),
            }
        }
        Err(e) => return store_down(ctx, &e.to_string()),
    };
    // No sign-in without its audit event: the session is withdrawn before anyone holds it (a
    // sealed one is simply never handed out).
    if let Err(e) = try_audit_login(gw, ctx, Some(user), true, "signed in", method).await {
        tracing::error!(request_id = %ctx.id, user = %user.username, error = %e, "audit log unavailable; sign-in refused");
        if stored && let Err(e) = gw.store.delete_session(&session.token_hash).await {
            tracing::warn!(request_id = %ctx.id, error = %e, "could not withdraw the session of a refused sign-in (its token was never handed out)");
        }
        return unrecorded(ctx);
    }
    // Rotate: whatever session cookie the browser had is ended (only now that the new sign-in
    // is recorded: a refused one leaves the browser as it was), and the fresh one replaces it.
    if let Some(old) = headers::cookie(hdrs, SESSION_COOKIE) {
        let _ = gw.store.delete_session(&hash_token(old)).await;
    }
    let cookie = set_cookie(SESSION_COOKIE, &token, None);
    let Some(t) = target else {
        return respond::with_cookie(respond::redirect(StatusCode::SEE_OTHER, "/"), &cookie);
    };
    let entries = binds(hdrs);
    let bind = bind_for(hdrs, &t.host);
    let resp = continue_to(gw, ctx, &session, &t, bind.as_deref()).await;
    let resp = respond::with_cookie(resp, &cookie);
    if bind.is_some() {
        // This app's sign-in is done; the others' entries stay.
        return respond::with_cookie(resp, &binds_cookie(&entries, &t.host, None));
    }
    resp
}

/// The refusal of a sign-in whose audit event could not be recorded: no session without it.
fn unrecorded(ctx: &Ctx) -> Response<Body> {
    respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Your sign-in cannot be recorded right now, so it is not completed. Try again in a moment.",
        &ctx.id,
    )
}

/// Sends a signed-in browser on to its target: directly on the portal, or via a handoff code
/// bound to `bind` (the browser's nonce on the app host, hashed). Without a `bind` the browser
/// first gets its nonce on the app host, which sends it back here.
async fn continue_to(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    session: &Session,
    target: &ReturnTo,
    bind: Option<&str>,
) -> Response<Body> {
    if target.host == gw.settings.portal_host {
        return respond::redirect(StatusCode::SEE_OTHER, &target.path);
    }
    let Some(bind) = bind else {
        return respond::redirect(
            StatusCode::SEE_OTHER,
            &format!("https://{}{}", target.host, signin_link(&target.path)),
        );
    };
    let code = new_token();
    let expires = now_unix() + HANDOFF_SECS;
    let code = match gw
        .store
        .create_handoff(
            &handoff_key(&code, bind),
            &session.login_id,
            &target.host,
            expires,
        )
        .await
    {
        Ok(()) => code,
        Err(e) if standby::is_read_only(&e) => {
            let sealed = standby::SealedHandoff {
                portal: session.clone(),
                app_host: target.host.clone(),
                expires_at: expires,
                // Single use is per nonce; the browser binding travels sealed with it.
                nonce: format!("{}.{bind}", new_token()),
            };
            match standby::seal_handoff(&gw.signer(), &sealed) {
                Some(c) => c,
                None => return store_down(ctx, &e.to_string()),
            }
        }
        Err(e) => return store_down(ctx, &e.to_string()),
    };
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("rd", &target.path)
        .finish();
    respond::redirect(
        StatusCode::SEE_OTHER,
        &format!("https://{}/.tsuzuku/handoff?{q}", target.host),
    )
}

/// On an app host: swap a handoff code for a host-only session cookie.
async fn handoff(gw: &Arc<Gateway>, ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let q = query(req);
    let code = q.get("code").map(String::as_str).unwrap_or("");
    let rd = q.get("rd").map(String::as_str).unwrap_or("/");
    let Ok(path) = check_local_path_with(rd, gw.settings.path_rules) else {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "Bad sign-in link",
            "The address to return to after sign-in is not a path of this application.",
            &ctx.id,
        );
    };
    let now = now_unix();
    // The code redeems only in the browser that started the sign-in: the one holding the nonce
    // whose hash the code was bound to. Anywhere else nothing is consumed and no cookie is set.
    let Some(nonce) = headers::cookie(req.headers(), SIGNIN_COOKIE).filter(|n| is_token(n)) else {
        tracing::warn!(request_id = %ctx.id, "handoff refused: this browser did not start the sign-in (no sign-in cookie)");
        return sign_in_again(
            ctx,
            &path,
            "This sign-in link was opened in a browser that did not start the sign-in, or the sign-in took too long. \
             A sign-in link works only in the browser where the sign-in began, so that nobody can sign you in to their account by sending you a link. \
             If you did not just sign in yourself, ignore the link.",
        );
    };
    let bind = hash_token(nonce);
    let expired = || {
        sign_in_again(
            ctx,
            &path,
            "This sign-in link has expired, was already used, or was opened in a browser other than the one where the sign-in began. \
             If you did not just sign in yourself, ignore the link.",
        )
    };
    // The portal session of this login carries the user and how they authenticated: from the
    // store, or inside a code sealed during read-only failover.
    let portal = if code.starts_with(standby::PREFIX) {
        match standby::open_handoff(&gw.signers.load().all, code, now) {
            Some(h)
                if h.app_host == ctx.host
                    && sealed_bind_matches(&h.nonce, &bind)
                    && gw.standby.use_code(&h.nonce, h.expires_at, now) =>
            {
                Some(h.portal)
            }
            _ => return expired(),
        }
    } else {
        // Looked up by the SHA-256 of the code with this browser's `bind`: a database index
        // compares hashes of values holding a 256-bit secret, never the secret itself.
        let handoff = match gw.store.take_handoff(&handoff_key(code, &bind), now).await {
            Ok(h) => h,
            Err(e) => return store_down(ctx, &e.to_string()),
        };
        let Some(h) = handoff.filter(|h| h.app_host == ctx.host) else {
            return expired();
        };
        match gw.store.login_sessions(&h.login_id).await {
            Ok(s) => s.into_iter().find(|s| s.scope == gw.settings.portal_host),
            Err(e) => return store_down(ctx, &e.to_string()),
        }
    };
    let Some(p) = portal.filter(|p| p.absolute_expiry > now) else {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "Signed out",
            "You were signed out before the sign-in finished. Open the application again.",
            &ctx.id,
        );
    };
    // A sign-in made on an enrolled device is handed only to that device.
    if !crate::device::session_device_matches(p.device_id.as_deref(), &ctx.device) {
        return crate::device::other_device_page(ctx);
    }
    let token = new_token();
    let session = Session {
        token_hash: hash_token(&token),
        login_id: p.login_id.clone(),
        user_id: p.user_id.clone(),
        auth_method: p.auth_method.clone(),
        mfa: p.mfa,
        auth_time: p.auth_time,
        created_at: now,
        last_seen: now,
        absolute_expiry: p.absolute_expiry,
        source_ip: ctx.client_ip.to_string(),
        scope: ctx.host.clone(),
        device_id: ctx.device.id().map(str::to_owned),
    };
    if let Some(old) = headers::cookie(req.headers(), SESSION_COOKIE) {
        let _ = gw.store.delete_session(&hash_token(old)).await;
    }
    let token = match gw.store.create_session(&session).await {
        Ok(()) => token,
        Err(e) if standby::is_read_only(&e) => match standby::seal_session(&gw.signer(), session) {
            Some(sealed) => sealed,
            None => return store_down(ctx, &e.to_string()),
        },
        Err(e) => return store_down(ctx, &e.to_string()),
    };
    // The session cookie first (it is what the browser came for), then the spent nonce goes.
    respond::with_cookie(
        respond::with_cookie(
            respond::redirect(StatusCode::SEE_OTHER, &path),
            &set_cookie(SESSION_COOKIE, &token, None),
        ),
        &set_cookie(SIGNIN_COOKIE, "", Some(0)),
    )
}

/// Whether a sealed handoff's nonce (`<random>.<bind>`) carries `bind` (constant-time).
fn sealed_bind_matches(nonce: &str, bind: &str) -> bool {
    nonce
        .split_once('.')
        .is_some_and(|(_, sealed)| ct_eq(sealed, bind))
}

/// The refusal of a handoff on an app host, with a link that starts the sign-in again in this
/// browser.
fn sign_in_again(ctx: &Ctx, path: &str, message: &str) -> Response<Body> {
    respond::html(
        StatusCode::BAD_REQUEST,
        pages::sign_in_again(message, &signin_link(path), &ctx.id),
    )
}

async fn home(gw: &Arc<Gateway>, ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    match authenticate(gw, ctx, req).await {
        Authn::Ok(su) => {
            let user = &su.1;
            let snap = gw.snapshot.load();
            let mut apps: Vec<(String, String)> = snap
                .apps
                .values()
                .map(|a| (a.name.clone(), a.host.clone()))
                .collect();
            apps.sort();
            let (csrf, cookie) = new_csrf();
            respond::with_cookie(
                respond::html(StatusCode::OK, pages::home(&user.username, &apps, &csrf)),
                &cookie,
            )
        }
        Authn::None => respond::redirect(StatusCode::FOUND, "/.tsuzuku/login"),
        Authn::Unavailable(e) => store_down(ctx, &e),
        Authn::OtherDevice => crate::device::other_device_page(ctx),
    }
}

fn logout_page() -> Response<Body> {
    let (csrf, cookie) = new_csrf();
    respond::with_cookie(
        respond::html(StatusCode::OK, pages::logout_page(&csrf)),
        &cookie,
    )
}

async fn logout(gw: &Arc<Gateway>, ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    let (hdrs, form) = match read_form(req).await {
        Ok(f) => f,
        Err(e) => {
            return respond::error(
                StatusCode::BAD_REQUEST,
                "Bad sign-out form",
                &format!("The sign-out was refused: {e}."),
                &ctx.id,
            );
        }
    };
    if !csrf_ok(&hdrs, form.get("csrf")) {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "Sign-out form expired",
            "The sign-out form expired. Open /.tsuzuku/logout and try again.",
            &ctx.id,
        );
    }
    if let Some(token) = headers::cookie(&hdrs, SESSION_COOKIE) {
        let hash = hash_token(token);
        gw.sessions.remove(&hash);
        match gw.store.get_session(&hash).await {
            Ok(Some(s)) => {
                // Forget this node's cached copies of every cookie of this sign-in.
                if let Ok(all) = gw.store.login_sessions(&s.login_id).await {
                    for other in all {
                        gw.sessions.remove(&other.token_hash);
                    }
                }
                if let Err(e) = gw.store.delete_login(&s.login_id).await {
                    return store_down(ctx, &e.to_string());
                }
                let user = gw.store.get_user(&s.user_id).await.ok().flatten();
                record(
                    gw,
                    EventKind::Logout,
                    user.as_ref().map(|u| u.username.clone()),
                    serde_json::json!({
                        "request_id": ctx.id,
                        "node": gw.settings.node_id,
                        "host": ctx.host,
                        "source_ip": ctx.client_ip.to_string(),
                    }),
                )
                .await;
            }
            Ok(None) => {}
            Err(e) => return store_down(ctx, &e.to_string()),
        }
    }
    respond::with_cookie(
        respond::html(StatusCode::OK, pages::signed_out()),
        &set_cookie(SESSION_COOKIE, "", Some(0)),
    )
}

fn sso_unavailable(gw: &Gateway, ctx: &Ctx) -> Response<Body> {
    if gw.settings.sso_label.is_some() {
        respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Single sign-on is unavailable",
            "The identity provider cannot be reached right now. Try again in a moment, or sign in with a password.",
            &ctx.id,
        )
    } else {
        respond::error(
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured",
            "This gateway has no OpenID Connect provider configured. Sign in with a password.",
            &ctx.id,
        )
    }
}

async fn oidc_start(gw: &Arc<Gateway>, ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let Some(client) = gw.oidc.load_full() else {
        return sso_unavailable(gw, ctx);
    };
    let q = query(req);
    let rd = q.get("rd").map(String::as_str).unwrap_or("");
    if let Err(e) = return_to(gw, rd) {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "Bad sign-in link",
            &format!("This sign-in link cannot be used: {e}."),
            &ctx.id,
        );
    }
    let pending = client.begin();
    let expires = now_unix() + OIDC_PENDING_SECS;
    // Read-only failover: the browser carries the pending login, sealed (see `standby`).
    let sealed = match gw
        .store
        .put_oidc_pending(
            &pending.state,
            &pending.nonce,
            &pending.pkce_verifier,
            rd,
            expires,
        )
        .await
    {
        Ok(()) => None,
        Err(e) if standby::is_read_only(&e) => match seal_pending(gw, ctx, &pending, rd, expires) {
            Some(t) => Some(t),
            None => return store_down(ctx, &e.to_string()),
        },
        Err(e) => return store_down(ctx, &e.to_string()),
    };
    // Bind the state to this browser, so a callback URL planted in someone else's browser fails.
    let resp = respond::with_cookie(
        respond::redirect(StatusCode::FOUND, &pending.authorize_url),
        &set_cookie(
            OIDC_COOKIE,
            &hash_token(&pending.state),
            Some(OIDC_PENDING_SECS),
        ),
    );
    match sealed {
        Some(t) => respond::with_cookie(resp, &standby::oidc_cookie(&t, OIDC_PENDING_SECS)),
        None => resp,
    }
}

/// Seals a pending OIDC sign-in the store refused to keep. A return target too long for a
/// cookie is dropped (the sign-in then ends on the portal's home page).
fn seal_pending(
    gw: &Gateway,
    ctx: &Ctx,
    pending: &tsuzuku_identity::oidc::PendingLogin,
    rd: &str,
    expires_at: i64,
) -> Option<String> {
    let mut p = OidcPending {
        state: pending.state.clone(),
        nonce: pending.nonce.clone(),
        pkce_verifier: pending.pkce_verifier.clone(),
        return_to: rd.to_owned(),
        expires_at,
    };
    let signer = gw.signer();
    let mut sealed = standby::seal_oidc(&signer, &p)?;
    if sealed.len() > standby::MAX_OIDC_COOKIE {
        tracing::warn!(request_id = %ctx.id, "the return address is too long to carry in a cookie during read-only failover: the sign-in will end on the portal");
        p.return_to = String::new();
        sealed = standby::seal_oidc(&signer, &p)?;
    }
    tracing::info!(request_id = %ctx.id, "store is read-only: the pending OIDC sign-in is sealed in a cookie");
    Some(sealed)
}

async fn oidc_callback(gw: &Arc<Gateway>, ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    // Once a sealed pending login (read-only failover) has been used, the browser drops it.
    let mut used_sealed = false;
    let mut resp = oidc_callback_inner(gw, ctx, req, &mut used_sealed).await;
    if used_sealed && let Ok(v) = http::HeaderValue::from_str(&standby::oidc_cookie("", 0)) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    resp
}

async fn oidc_callback_inner(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    req: &Request<Incoming>,
    used_sealed: &mut bool,
) -> Response<Body> {
    let Some(client) = gw.oidc.load_full() else {
        return sso_unavailable(gw, ctx);
    };
    let q = query(req);
    if let Some(err) = q.get("error") {
        let desc = q.get("error_description").map(String::as_str).unwrap_or("");
        audit_login(
            gw,
            ctx,
            None,
            false,
            &format!("identity provider: {err} {desc}"),
            "oidc",
        )
        .await;
        return respond::error(
            StatusCode::UNAUTHORIZED,
            "Single sign-on failed",
            &format!(
                "The identity provider refused the sign-in ({err}). Try again, or ask your IT team."
            ),
            &ctx.id,
        );
    }
    let state = q.get("state").map(String::as_str).unwrap_or("");
    let code = q.get("code").map(String::as_str).unwrap_or("");
    let bound = headers::cookie(req.headers(), OIDC_COOKIE)
        .map(|c| ct_eq(c, hash_token(state)))
        .unwrap_or(false);
    let bad = || {
        respond::error(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This single sign-on response is expired, was already used, or was started in another browser. Open the application again.",
            &ctx.id,
        )
    };
    if state.is_empty() || code.is_empty() || !bound {
        return bad();
    }
    let now = now_unix();
    let stored = match gw.store.take_oidc_pending(state, now).await {
        Ok(p) => p,
        // Read-only failover: the pending login, if any, is in the sealed cookie.
        Err(e) if standby::is_read_only(&e) => None,
        Err(e) => return store_down(ctx, &e.to_string()),
    };
    let pending = match stored {
        Some(p) => p,
        None => match headers::cookie(req.headers(), standby::OIDC_COOKIE)
            .and_then(|t| standby::open_oidc(&gw.signers.load().all, t, state, now))
        {
            Some(p) => {
                *used_sealed = true;
                if !gw.standby.use_oidc_state(&p.state, p.expires_at, now) {
                    tracing::warn!(request_id = %ctx.id, "a sealed pending OIDC sign-in was presented again");
                    return bad();
                }
                p
            }
            None => return bad(),
        },
    };
    let identity = match client
        .finish(code, &pending.nonce, &pending.pkce_verifier)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(request_id = %ctx.id, error = %e, "OIDC sign-in failed");
            audit_login(gw, ctx, None, false, &e.to_string(), "oidc").await;
            return respond::error(
                StatusCode::UNAUTHORIZED,
                "Single sign-on failed",
                "The identity provider's answer could not be verified. Try again, or ask your IT team.",
                &ctx.id,
            );
        }
    };
    let user = match gw
        .store
        .upsert_oidc_user(
            &identity.issuer,
            &identity.subject,
            &identity.username,
            identity.name.as_deref().unwrap_or(&identity.username),
            identity.email.clone(),
            identity.groups.clone(),
            now_unix(),
        )
        .await
    {
        Ok(u) => u,
        // Read-only failover: a user known from an earlier sign-in goes on as stored.
        Err(e) if standby::is_read_only(&e) => match known_oidc_user(gw, ctx, &identity).await {
            Ok(u) => u,
            Err(resp) => return resp,
        },
        Err(e @ (StoreError::Conflict(_) | StoreError::Invalid(_))) => {
            audit_login(gw, ctx, None, false, &e.to_string(), "oidc").await;
            return respond::error(
                StatusCode::FORBIDDEN,
                "Account conflict",
                &format!("The single sign-on account cannot be used here: {e}"),
                &ctx.id,
            );
        }
        Err(e) => {
            audit_login(gw, ctx, None, false, &e.to_string(), "oidc").await;
            return store_down(ctx, &e.to_string());
        }
    };
    if user.disabled {
        audit_login(gw, ctx, Some(&user), false, "disabled user", "oidc").await;
        return respond::error(
            StatusCode::FORBIDDEN,
            "Account disabled",
            "This account is disabled. Ask your IT team.",
            &ctx.id,
        );
    }
    let mfa = identity
        .amr
        .iter()
        .any(|m| matches!(m.as_str(), "mfa" | "otp" | "hwk" | "swk" | "fido"));
    let target = return_to(gw, &pending.return_to).ok().flatten();
    let mut resp = finish_login(gw, ctx, req.headers(), &user, "oidc", mfa, target).await;
    if let Ok(v) = http::HeaderValue::from_str(&set_cookie(OIDC_COOKIE, "", Some(0))) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
    resp
}

/// The stored user of an OIDC identity, while the store cannot record the sign-in. Profile and
/// group changes from the provider wait for the store to take writes again: decisions use the
/// stored user, so its groups are the ones that apply. A first sign-in cannot be recorded and
/// is refused.
async fn known_oidc_user(
    gw: &Gateway,
    ctx: &Ctx,
    identity: &tsuzuku_identity::oidc::OidcIdentity,
) -> Result<User, Response<Body>> {
    match gw
        .store
        .get_user_by_oidc(&identity.issuer, &identity.subject)
        .await
    {
        Ok(Some(u)) => {
            let stored: BTreeSet<&String> = u.groups.iter().collect();
            let claimed: BTreeSet<&String> = identity.groups.iter().collect();
            if stored != claimed {
                tracing::warn!(
                    request_id = %ctx.id,
                    user = %u.username,
                    stored = ?u.groups,
                    provider = ?identity.groups,
                    "store is read-only: the provider's groups differ from the stored ones; the stored groups apply until the store takes writes again"
                );
            }
            Ok(u)
        }
        Ok(None) => {
            tracing::warn!(request_id = %ctx.id, user = %identity.username, "store is read-only: refused a first OIDC sign-in (the account cannot be created)");
            record(
                gw,
                EventKind::Login,
                Some(identity.username.clone()),
                serde_json::json!({
                    "request_id": ctx.id,
                    "node": gw.settings.node_id,
                    "success": false,
                    "reason": "first sign-in during read-only failover: the account cannot be created",
                    "method": "oidc",
                    "user_id": null,
                    "issuer": identity.issuer,
                    "subject": identity.subject,
                    "source_ip": ctx.client_ip.to_string(),
                }),
            )
            .await;
            Err(first_sign_in_refused(gw, ctx))
        }
        Err(e) => Err(store_down(ctx, &e.to_string())),
    }
}

/// The page for a first OIDC sign-in while the store is read-only.
fn first_sign_in_refused(gw: &Gateway, ctx: &Ctx) -> Response<Body> {
    let since = match gw.store.root().role() {
        StoreRole::ReadOnlyStandby { since, .. } => {
            jiff::Timestamp::try_from(since).ok().map(|t| {
                format!(
                    " since {}",
                    t.to_zoned(gw.settings.tz.clone())
                        .strftime("%Y-%m-%d %H:%M %Z")
                )
            })
        }
        _ => None,
    }
    .unwrap_or_default();
    respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "First sign-in not possible right now",
        &format!(
            "This is your first sign-in here with single sign-on, and a first sign-in cannot be recorded right now: \
             the gateway's database has been in read-only failover{since}, so no new account can be created until it accepts changes again. \
             People who signed in here before can still sign in. Try again later, or ask your IT team."
        ),
        &ctx.id,
    )
}

fn store_down(ctx: &Ctx, e: &str) -> Response<Body> {
    tracing::error!(request_id = %ctx.id, error = %e, "store unavailable");
    respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Sign-in cannot be completed right now. Try again in a moment.",
        &ctx.id,
    )
}

/// Records a sign-in event; a failure to record it is logged (for refusals, which need no
/// further action: nothing was granted).
async fn audit_login(
    gw: &Gateway,
    ctx: &Ctx,
    user: Option<&User>,
    success: bool,
    reason: &str,
    method: &str,
) {
    if let Err(e) = try_audit_login(gw, ctx, user, success, reason, method).await {
        tracing::error!(request_id = %ctx.id, error = %e, "could not record a sign-in event");
    }
}

/// Records a sign-in event and says whether it was recorded.
async fn try_audit_login(
    gw: &Gateway,
    ctx: &Ctx,
    user: Option<&User>,
    success: bool,
    reason: &str,
    method: &str,
) -> Result<(), AuditError> {
    try_record(
        gw,
        EventKind::Login,
        user.map(|u| u.username.clone()),
        serde_json::json!({
            "request_id": ctx.id,
            "node": gw.settings.node_id,
            "success": success,
            "reason": reason,
            "method": method,
            "user_id": user.map(|u| u.id.clone()),
            "source_ip": ctx.client_ip.to_string(),
        }),
    )
    .await
}

/// Records an event; a failure is logged.
async fn record(gw: &Gateway, kind: EventKind, actor: Option<String>, detail: serde_json::Value) {
    if let Err(e) = try_record(gw, kind, actor, detail).await {
        tracing::error!(error = %e, "could not record audit event");
    }
}

async fn try_record(
    gw: &Gateway,
    kind: EventKind,
    actor: Option<String>,
    detail: serde_json::Value,
) -> Result<(), AuditError> {
    let ev = AuditEvent {
        time_ms: now_ms(),
        kind,
        actor,
        tenant: gw.store.tenant_id().to_owned(),
        detail: detail.into(),
    };
    gw.audit.record(ev).await
}

#[cfg(test)]
mod tests;
