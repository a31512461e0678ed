//! The control plane's HTTPS endpoint.
//!
//! - `GET /healthz` — `ok`.
//! - `GET /v1/snapshot?node=ID&after=VERSION[&role=ROLE][&wait=SECS]` with
//!   `Authorization: Bearer <node token>` — the published snapshot if its version is newer than
//!   `after` (200, `application/json`), otherwise waits up to `wait` seconds (default 25, at
//!   most 60) for a newer one and answers 204 if none came. Every poll records the node's
//!   report (`after` is the version it uses).
//! - `POST /v1/report` — a connector's experience report (JSON: `device`, `site`, `latency_ms`,
//!   `loss_pct`, `switches`, and `dr`: `{"state": "normal"|"active"|"returning", "drill": bool,
//!   "since_ms": N}` when DR mode is configured; at most 16 KiB), kept per device for `tsuzuku
//!   status`; every change of `dr` is recorded for `tsuzuku dr drill`. Not authenticated (the
//!   control plane does not ask for device certificates): a report can only claim what a device
//!   sees, and a device id replaces only that device's row.
//! - `POST /v1/enroll` — device enrolment: a one-time token and a proof of key possession in,
//!   a device certificate out (see [`crate::enroll`]).
//! - `POST /v1/audit` with the node token — a DR gateway uploads the audit events of its own
//!   chain; they are appended to the tenant's chain once each (see [`crate::upload`]).
//! - `POST /v1/load` with the node token — a gateway node's load (JSON: `node`, `site`, `rps`),
//!   from which the site list's load-shedding hints are computed.
//! - `GET /v1/sites?after=VERSION[&wait=SECS]` — the connectors' signed site list, the same
//!   long-poll way. No token: the list names public gateway addresses and exclusions, and its
//!   signature (checked by every connector) is what protects it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ct::tokens_equal;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tsuzuku_store::NodeReport;

use crate::error::ControlError;
use crate::publish::Publisher;

/// What the endpoint needs besides the publisher.
#[derive(Clone)]
pub struct ServeOptions {
    /// The shared secret gateways present as a bearer token.
    pub node_token: String,
    /// The secret DR gateways present; the only one that gets credential verifiers.
    pub dr_token: String,
    /// Longest long-poll wait.
    pub max_wait: Duration,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    publisher: Arc<Publisher>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControlError> {
    // This endpoint speaks HTTP/1.1 only (long-polls need nothing more).
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let options = Arc::new(options);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let publisher = publisher.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
            let svc = service_fn(move |req| {
                let publisher = publisher.clone();
                let options = options.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&publisher, &options, peer, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
    Ok(())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Query of a snapshot poll.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Poll {
    pub node: String,
    pub role: String,
    pub after: Option<i64>,
    pub wait: Duration,
}

/// Parses and checks the query of `/v1/snapshot`.
pub(crate) fn parse_poll(query: &str, max_wait: Duration) -> Result<Poll, String> {
    let mut node = None;
    let mut role = "gateway".to_owned();
    let mut after = None;
    let mut wait = Duration::from_secs(25).min(max_wait);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "node" => node = Some(v.into_owned()),
            "role" => role = v.into_owned(),
            "after" => {
                after = Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("after={v:?} is not a snapshot version"))?,
                )
            }
            "wait" => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("wait={v:?} is not a number of seconds"))?;
                wait = Duration::from_secs(secs).min(max_wait);
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let node = node.ok_or("the node parameter is missing")?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    if !valid(&node) {
        return Err("node must be 1-128 characters of letters, digits, - _ . :".into());
    }
    if !valid(&role) {
        return Err("role must be 1-128 characters of letters, digits, - _ . :".into());
    }
    Ok(Poll {
        node,
        role,
        after,
        wait,
    })
}

async fn handle(
    publisher: &Publisher,
    options: &ServeOptions,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
        (&Method::GET, "/v1/snapshot") => {}
        (&Method::GET, "/v1/sites") => {
            let (after, wait) =
                match parse_sites_poll(req.uri().query().unwrap_or(""), options.max_wait) {
                    Ok(x) => x,
                    Err(e) => return text(StatusCode::BAD_REQUEST, &e),
                };
            return long_poll(publisher.subscribe_sites(), after, wait).await;
        }
        (&Method::POST, "/v1/report") => {
            return report(publisher, req).await;
        }
        (&Method::POST, "/v1/enroll") => {
            return enroll(publisher, peer, req).await;
        }
        (&Method::POST, "/v1/load" | "/v1/audit") => {}
        (_, "/v1/snapshot" | "/v1/sites") => {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        _ => return text(StatusCode::NOT_FOUND, "no such endpoint"),
    }
    let authorized = |req: &Request<Incoming>| {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        tokens_equal(presented, &options.node_token) || tokens_equal(presented, &options.dr_token)
    };
    if req.method() == Method::POST && req.uri().path() == "/v1/load" {
        if !authorized(&req) {
            return text(
                StatusCode::UNAUTHORIZED,
                "a valid node token is required (Authorization: Bearer ...)",
            );
        }
        return load(publisher, req).await;
    }
    if req.method() == Method::POST && req.uri().path() == "/v1/audit" {
        if !authorized(&req) {
            tracing::warn!(%peer, "audit upload with a missing or wrong node token");
            return text(
                StatusCode::UNAUTHORIZED,
                "a valid node token is required (Authorization: Bearer ...)",
            );
        }
        return audit_upload(publisher, req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let poll = match parse_poll(req.uri().query().unwrap_or(""), options.max_wait) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    // The DR variant carries credential verifiers: only the DR token gets it.
    let expected = if poll.role == "dr-gateway" {
        &options.dr_token
    } else {
        &options.node_token
    };
    if !tokens_equal(presented, expected) {
        tracing::warn!(%peer, role = %poll.role, "snapshot request with a missing or wrong token");
        return text(
            StatusCode::UNAUTHORIZED,
            "a valid token for this role is required (Authorization: Bearer ...)",
        );
    }
    // DR gateways get the variant with credential verifiers; every other node does not.
    let rx = if poll.role == "dr-gateway" {
        publisher.subscribe_dr()
    } else {
        publisher.subscribe()
    };
    record(publisher, &poll).await;
    long_poll(rx, poll.after, poll.wait).await
}

/// Answers with the published document once its version is newer than `after` (at once if it
/// already is), or 204 after `wait`.
async fn long_poll(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<crate::publish::Published>>>,
    after: Option<i64>,
    wait: Duration,
) -> Response<Full<Bytes>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(p) = current
            && after.is_none_or(|a| p.version > a)
        {
            let mut r = Response::new(Full::new(p.bytes.clone()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            return r;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Err(_) => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                return r;
            }
        }
    }
}

/// Parses a gateway node's load report (pure).
pub(crate) fn parse_load(
    body: &[u8],
    now_ms: i64,
) -> Result<(String, crate::publish::NodeLoad), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        node: String,
        site: String,
        rps: f64,
    }
    let w: Wire = serde_json::from_slice(body).map_err(|e| format!("not a load report: {e}"))?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    if !valid(&w.node) || !valid(&w.site) {
        return Err("node and site must be 1-128 characters of letters, digits, - _ . :".into());
    }
    if !w.rps.is_finite() || w.rps < 0.0 || w.rps > 1e9 {
        return Err("rps must be a number from 0 to 1e9".into());
    }
    Ok((
        w.node,
        crate::publish::NodeLoad {
            site: w.site,
            rps: w.rps,
            at_ms: now_ms,
        },
    ))
}

async fn load(publisher: &Publisher, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let body = match http_body_util::Limited::new(req.into_body(), 4096)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a load report is at most 4 KiB",
            );
        }
    };
    match parse_load(&body, jiff::Timestamp::now().as_millisecond()) {
        Ok((node, l)) => {
            publisher.report_load(&node, l);
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Err(e) => text(StatusCode::BAD_REQUEST, &e),
    }
}

/// A DR gateway's audit upload (see [`crate::upload`]).
async fn audit_upload(publisher: &Publisher, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let body = match http_body_util::Limited::new(req.into_body(), crate::upload::MAX_UPLOAD_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "an audit upload is at most 4 MiB: send fewer events at once",
            );
        }
    };
    let (status, answer) = crate::upload::accept(
        publisher.store(),
        &body,
        jiff::Timestamp::now().as_millisecond(),
    )
    .await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::OK || status == StatusCode::CONFLICT {
        let mut r = Response::new(Full::new(Bytes::from(answer)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return r;
    }
    text(status, &answer)
}

/// Largest accepted report body.
const MAX_REPORT_BYTES: usize = 16 * 1024;

/// Parses and checks a connector's report (pure).
pub(crate) fn parse_report(
    body: &[u8],
    now_ms: i64,
) -> Result<
    (
        tsuzuku_store::ConnectorReport,
        Option<crate::drill::DrReport>,
    ),
    String,
> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        device: String,
        site: Option<String>,
        latency_ms: Option<i64>,
        loss_pct: Option<i64>,
        #[serde(default)]
        switches: i64,
        dr: Option<DrWire>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DrWire {
        state: String,
        #[serde(default)]
        drill: bool,
        since_ms: Option<i64>,
    }
    let w: Wire = serde_json::from_slice(body).map_err(|e| format!("not a report: {e}"))?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    if !valid(&w.device) {
        return Err("device must be 1-128 characters of letters, digits, - _ . :".into());
    }
    if let Some(site) = &w.site
        && !valid(site)
    {
        return Err("site must be 1-128 characters of letters, digits, - _ . :".into());
    }
    if w.latency_ms.is_some_and(|l| !(0..=600_000).contains(&l)) {
        return Err("latency_ms must be 0 to 600000".into());
    }
    if w.loss_pct.is_some_and(|l| !(0..=100).contains(&l)) {
        return Err("loss_pct must be 0 to 100".into());
    }
    if w.switches < 0 {
        return Err("switches must not be negative".into());
    }
    let dr = match w.dr {
        None => None,
        Some(d) => Some(crate::drill::DrReport {
            state: crate::drill::DrState::parse(&d.state).ok_or_else(|| {
                format!(
                    "dr.state {:?} is not one of normal, active, returning",
                    d.state
                )
            })?,
            drill: d.drill,
            since_ms: match d.since_ms {
                Some(t) if !(0..=253_402_300_799_999).contains(&t) => {
                    return Err("dr.since_ms must be a Unix time in milliseconds".into());
                }
                t => t,
            },
        }),
    };
    Ok((
        tsuzuku_store::ConnectorReport {
            device: w.device,
            site: w.site,
            latency_ms: w.latency_ms,
            loss_pct: w.loss_pct,
            switches: w.switches,
            reported_ms: now_ms,
        },
        dr,
    ))
}

async fn enroll(
    publisher: &Publisher,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let body = match http_body_util::Limited::new(req.into_body(), 16 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "an enrolment request is at most 16 KiB",
            );
        }
    };
    let now = jiff::Timestamp::now().as_second();
    match crate::enroll::enroll(publisher.store(), &body, now).await {
        Ok(resp) => {
            // Gateways learn the new device from the next snapshot: publish it now.
            if let Err(e) = publisher.refresh().await {
                tracing::warn!(error = %e, "device enrolled; the next snapshot will carry it");
            }
            let mut r = Response::new(Full::new(Bytes::from(
                serde_json::to_vec(&resp).unwrap_or_default(),
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e @ crate::enroll::EnrollError::BadRequest(_)) => {
            text(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e @ crate::enroll::EnrollError::BadToken) => {
            tracing::warn!(%peer, "enrolment with an unknown, used or expired token");
            text(StatusCode::FORBIDDEN, &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "enrolment failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "enrolment is not possible right now; try again later",
            )
        }
    }
}

async fn report(publisher: &Publisher, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let body = match http_body_util::Limited::new(req.into_body(), MAX_REPORT_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "a report is at most 16 KiB");
        }
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let (r, dr) = match parse_report(&body, now) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let recorded = match publisher.store().report_connector(&r).await {
        Ok(()) => match dr {
            Some(dr) => record_dr(publisher.store(), &r.device, &dr, now).await,
            None => Ok(()),
        },
        Err(e) => Err(e),
    };
    match recorded {
        Ok(()) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a connector report");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the report cannot be recorded now",
            )
        }
    }
}

/// Records the device's DR transition, if its state changed since the last recorded one. A
/// concurrent report that recorded the same change first is not an error.
async fn record_dr(
    store: &tsuzuku_store::Store,
    device: &str,
    dr: &crate::drill::DrReport,
    now_ms: i64,
) -> Result<(), tsuzuku_store::StoreError> {
    let prev = store.last_dr_transition(device).await?;
    let Some(t) = crate::drill::transition(device, prev.as_ref(), dr, now_ms) else {
        return Ok(());
    };
    match store.add_dr_transition(&t).await {
        Ok(()) => {
            tracing::info!(device, state = %t.state, drill = t.drill, "connector DR state changed");
            Ok(())
        }
        Err(tsuzuku_store::StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Parses the query of `/v1/sites`: `after` and `wait`.
pub(crate) fn parse_sites_poll(
    query: &str,
    max_wait: Duration,
) -> Result<(Option<i64>, Duration), String> {
    let mut after = None;
    let mut wait = Duration::from_secs(25).min(max_wait);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "after" => {
                after = Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("after={v:?} is not a site-list version"))?,
                )
            }
            "wait" => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("wait={v:?} is not a number of seconds"))?;
                wait = Duration::from_secs(secs).min(max_wait);
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok((after, wait))
}

/// Records the node's report; a store that cannot take it costs the report, not the poll.
async fn record(publisher: &Publisher, poll: &Poll) {
    let now = jiff::Timestamp::now().as_millisecond();
    // The version a gateway names is one this control plane (or its peer) issued, and versions
    // are issue times: the version is the issue time.
    let report = NodeReport {
        node_id: poll.node.clone(),
        role: poll.role.clone(),
        snapshot_version: poll.after,
        snapshot_issued_ms: poll.after,
        last_seen_ms: now,
    };
    if let Err(e) = publisher.store().report_node(&report).await {
        tracing::debug!(error = %e, node = %poll.node, "cannot record the node's report");
    }
}

/// Constant-time comparison of bearer tokens.
mod ct {
    use subtle::ConstantTimeEq as _;

    /// True when `a` and `b` are the same non-empty token. Runs in time independent of where
    /// they differ (the length of the expected token is not secret).
    pub fn tokens_equal(a: &str, b: &str) -> bool {
        !b.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
    }
}

#[cfg(test)]
pub(crate) use ct::tokens_equal as tokens_equal_for_tests;
