//! The local forward proxy: loopback HTTP proxy with `CONNECT` tunnels and plain-HTTP
//! forwarding, plus the PAC file at `/proxy.pac`.
//!
//! Traffic for the organisation's app domains is not sent where DNS says: every new tunnel or
//! request is sent to a gateway endpoint of the site the selector chose, and the gateway routes
//! it by SNI / `Host`. A `CONNECT app.example.com:443` therefore becomes a raw TCP tunnel to,
//! say, `192.0.2.10:443` at site "tokyo", carrying the browser's own TLS to the gateway.
//!
//! - Ports: only `allowed_ports` (default 443) may be `CONNECT`ed; others get 403.
//! - Retries: a connection attempt that fails (refused, timed out) has sent nothing, so the
//!   next endpoint in [`Selection::attempts`](crate::select::Selection::attempts) is tried —
//!   another node of the site, then the next site. Plain-HTTP requests that are idempotent
//!   (GET, HEAD, OPTIONS) and have no body are also retried when the gateway fails without an
//!   answer. Every failed attempt is reported to the site state, so a dead node is skipped by
//!   the next connection and a dead site is detected at the speed of traffic.
//! - Tunnels are counted per site and closed promptly when their site becomes unusable (down
//!   or excluded), instead of hanging on a site that no longer answers; with
//!   [`TunnelClose::OnSwitch`] also when the selection moves away from their site for any
//!   reason.
//! - Disaster-recovery (DR) mode ([`crate::dr`], [`crate::route`]): critical apps go to the DR
//!   gateway, other apps get a "unavailable during disaster recovery" page (503, or a refused
//!   `CONNECT`), and internet traffic follows the record's mode — `open` direct, `controlled`
//!   direct only to allowlisted hosts, `closed` refused (403). Every refusal is logged. Tunnels
//!   whose route changes when the DR state changes are closed. With DR configured the PAC file
//!   sends all traffic through the connector, so that the mode can be enforced whenever it
//!   starts (browsers re-read PAC files rarely); outside DR mode internet traffic goes direct.
//! - Requests in origin form are for the proxy itself: only `GET /proxy.pac` with the proxy's
//!   own address as `Host` is answered (another `Host` is a DNS-rebinding attempt or a
//!   mistake: 421).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::dr::{DrGateway, DrLink, DrTargets, normal_site_healthy};
use crate::internet::HostSet;
use crate::pac::{AppDomains, Internet, InvalidDomain, pac_file};
use crate::route::{self, DrRouting, Refusal, Route, RouteInput};
use crate::select::{Endpoint, Failure, Selection, human};
use crate::state::SiteState;

#[cfg(test)]
mod tests;

/// Response bodies of the proxy.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// When established tunnels are closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TunnelClose {
    /// When their site becomes unusable: down, or excluded. A brownout or load-shedding switch
    /// sends new connections elsewhere and lets existing ones finish.
    #[default]
    WhenUnusable,
    /// Also when the selection moves away from their site for any reason.
    OnSwitch,
}

/// The settings of the local proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// A loopback address. Default 127.0.0.1:3128; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The organisation's app domains; each covers its subdomains.
    pub app_domains: Vec<String>,
    /// Ports that may be `CONNECT`ed. Default 443.
    pub allowed_ports: Vec<u16>,
    /// Traffic outside the app domains.
    pub internet: Internet,
    /// Time allowed to connect to one endpoint before trying the next. Default 700 ms.
    pub connect_timeout: Duration,
    /// Endpoints tried per new connection. Default 3.
    pub max_attempts: usize,
    /// TLS towards the gateway for forwarded plain-HTTP requests (the browser's `http://`
    /// request leaves the device encrypted, with the app's host name as SNI). `None` forwards
    /// them as plain HTTP to the endpoint (tests, or a plain-HTTP gateway port).
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    pub tunnel_close: TunnelClose,
    /// Browser tunnels to gateway sites go through device tunnels (mutual TLS with the device
    /// certificate in `upstream_tls`, then `CONNECT`), so the gateway knows the device.
    pub device_tunnel: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            app_domains: Vec::new(),
            allowed_ports: vec![443],
            internet: Internet::Direct,
            connect_timeout: Duration::from_millis(700),
            max_attempts: 3,
            upstream_tls: None,
            tunnel_close: TunnelClose::WhenUnusable,
            device_tunnel: false,
        }
    }
}

/// Proxy settings that cannot work, or a listener that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error(
        "the connector's proxy must listen on a loopback address such as 127.0.0.1:3128, not {0}: other machines must not use it"
    )]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Domain(#[from] InvalidDomain),
    #[error("no app domains configured: give the organisation's app domains, such as example.com")]
    NoDomains,
    #[error("allowed_ports is empty: allow at least 443")]
    NoPorts,
    #[error("proxy setting {field} must be {expected}")]
    Setting {
        field: &'static str,
        expected: &'static str,
    },
    /// The cause is part of the message, not a `source`: printed once.
    #[error("could not listen on {addr}: {error}; is another program using that port?")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

struct Shared {
    cfg: ProxyConfig,
    domains: AppDomains,
    pac: String,
    addr: SocketAddr,
    state: Arc<SiteState>,
    /// DR mode's state and settings, when configured.
    dr: Option<DrLink>,
    /// Internet traffic outside DR mode (always through the connector when DR is configured).
    internet: Internet,
    seq: AtomicU64,
    tunnels: Mutex<BTreeMap<String, usize>>,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn tunnel_count(&self, site: &str, delta: isize) {
        let mut t = self.tunnels.lock().unwrap_or_else(PoisonError::into_inner);
        let n = t.entry(site.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            t.remove(site);
        }
    }
}

/// Counts one open tunnel to a site for as long as it lives.
struct TunnelGuard {
    shared: Arc<Shared>,
    site: String,
}

impl TunnelGuard {
    fn open(shared: &Arc<Shared>, site: &str) -> Self {
        shared.tunnel_count(site, 1);
        Self {
            shared: shared.clone(),
            site: site.to_owned(),
        }
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.shared.tunnel_count(&self.site, -1);
    }
}

/// The running proxy. Dropping it stops it too (without waiting).
pub struct Proxy {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Proxy {
    /// Checks the settings, listens, and serves until [`Proxy::shutdown`].
    pub async fn bind(cfg: ProxyConfig, state: Arc<SiteState>) -> Result<Self, ProxyError> {
        Self::bind_with_dr(cfg, state, None).await
    }

    /// [`Proxy::bind`] with disaster-recovery mode: routes by the DR state `dr` publishes.
    pub async fn bind_with_dr(
        cfg: ProxyConfig,
        state: Arc<SiteState>,
        dr: Option<DrLink>,
    ) -> Result<Self, ProxyError> {
        if !cfg.listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(cfg.listen));
        }
        let domains = AppDomains::new(&cfg.app_domains)?;
        if domains.as_slice().is_empty() {
            return Err(ProxyError::NoDomains);
        }
        if cfg.allowed_ports.is_empty() {
            return Err(ProxyError::NoPorts);
        }
        if cfg.max_attempts == 0 {
            return Err(ProxyError::Setting {
                field: "max_attempts",
                expected: "at least 1",
            });
        }
        if cfg.connect_timeout.is_zero() {
            return Err(ProxyError::Setting {
                field: "connect_timeout",
                expected: "more than zero",
            });
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|error| ProxyError::Bind {
                addr: cfg.listen,
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| ProxyError::Bind {
            addr: cfg.listen,
            error,
        })?;
        let internet = if dr.is_some() {
            Internet::ViaConnector
        } else {
            cfg.internet
        };
        let pac = pac_file(&domains, addr, internet);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            domains,
            pac,
            addr,
            state,
            dr,
            internet,
            seq: AtomicU64::new(0),
            tunnels: Mutex::new(BTreeMap::new()),
            stop: stop_rx,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Where browsers get the PAC file (`--proxy-pac-url`).
    pub fn pac_url(&self) -> String {
        format!("http://{}/proxy.pac", self.shared.addr)
    }

    /// The PAC file served.
    pub fn pac(&self) -> &str {
        &self.shared.pac
    }

    /// Open tunnels per site.
    pub fn open_tunnels(&self) -> BTreeMap<String, usize> {
        self.shared
            .tunnels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting, closes every connection and tunnel, and waits for the listener to end.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "proxy task ended abnormally");
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_connection(stream, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Resolves once the proxy is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await.
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "proxy connection ended with an error");
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        connect(shared, req).await
    } else if req.uri().scheme().is_some() {
        forward(shared, req).await
    } else {
        local(&shared, &req)
    }
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Requests for the proxy itself: the PAC file.
fn local(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let port = shared.addr.port();
    let own = [
        shared.addr.to_string(),
        format!("localhost:{port}"),
        match shared.addr {
            SocketAddr::V4(_) => format!("127.0.0.1:{port}"),
            SocketAddr::V6(_) => format!("[::1]:{port}"),
        },
    ];
    if !own.contains(&host) {
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "This is the Tsuzuku connector's local proxy; it answers only requests addressed to {}. The request for host {host:?} was refused.",
                shared.addr
            ),
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/proxy.pac") => {
            let mut resp = Response::new(full(shared.pac.clone()));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        // What `tsuzuku connect status` shows: the site in use, every site's health, latency
        // and loss, the last switches and why. Loopback only, like the proxy itself.
        (&Method::GET, "/status") => {
            let mut status = shared.state.status().to_string();
            if let Some(dr) = &shared.dr {
                status.push_str(&dr.status.borrow().to_string());
            }
            text(StatusCode::OK, status.trim_end().to_owned())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!(
                "Not found. The Tsuzuku connector serves its PAC file at http://{}/proxy.pac and its status at /status",
                shared.addr
            ),
        ),
    }
}

/// Where traffic for a host goes now ([`route::route`] with the current DR state).
fn route_for(shared: &Shared, host: &str) -> Route {
    route_with(shared, host).0
}

/// [`route_for`], with the DR gateway and critical hosts it was decided with (one snapshot of
/// the DR state, so that a new site list never pairs one list's critical hosts with another's
/// gateway).
fn route_with(shared: &Shared, host: &str) -> (Route, Option<Arc<DrTargets>>) {
    let app = shared.domains.matches(host);
    let none = HostSet::default();
    let Some(link) = &shared.dr else {
        let route = route::route(&RouteInput {
            host,
            app,
            internet: shared.internet,
            dr: DrRouting::Normal,
            critical: &none,
            allowlist: &none,
            normal_healthy: true,
        });
        return (route, None);
    };
    let status = link.status.borrow().clone();
    let dr = status.phase.routing();
    let normal_healthy =
        dr != DrRouting::Returning || normal_site_healthy(&shared.state.selection());
    let route = route::route(&RouteInput {
        host,
        app,
        internet: shared.internet,
        dr,
        critical: &status.targets.critical,
        allowlist: &status.allowlist,
        normal_healthy,
    });
    (route, Some(status.targets.clone()))
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    let (title, message) = (html_escape(title), html_escape(message));
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{message}</p>\n<p><small>Tsuzuku connector</small></p></body></html>\n"
    );
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The answer to refused traffic: a page for plain HTTP, one line for `CONNECT`. Logged.
fn refused(shared: &Shared, host: &str, why: Refusal, tunnel: bool) -> Response<Body> {
    if why == Refusal::NotAnApp {
        tracing::debug!(host, "refused: not an app domain");
        return not_an_app(shared, host);
    }
    tracing::info!(host, reason = %why, tunnel, "refused during disaster recovery");
    let (status, title, message) = match why {
        Refusal::UnavailableInDr => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{host} is unavailable during disaster recovery"),
            format!(
                "Your organisation has switched to disaster-recovery mode. Only its critical apps are available until normal service returns, and {host} is not one of them. Try again later, or contact your IT team if you need it now."
            ),
        ),
        Refusal::NotAllowlisted => (
            StatusCode::FORBIDDEN,
            format!("{host} is not reachable during disaster recovery"),
            format!(
                "Your organisation has switched to disaster-recovery mode, in which only internet destinations on its allowlist are reachable, and {host} is not on it. Contact your IT team if you need it."
            ),
        ),
        Refusal::InternetClosed | Refusal::NotAnApp => (
            StatusCode::FORBIDDEN,
            format!("{host} is not reachable during disaster recovery"),
            format!(
                "Your organisation has switched to disaster-recovery mode, in which internet access is closed; only its critical apps are available. Contact your IT team if you need {host}."
            ),
        ),
    };
    if tunnel {
        text(status, format!("{title}: {why}."))
    } else {
        html(status, &title, &message)
    }
}

/// Connects to one of the DR gateway's addresses.
async fn open_dr_gateway(
    shared: &Shared,
    gw: &DrGateway,
    tried: &mut Vec<String>,
) -> Option<(TcpStream, SocketAddr)> {
    let n = gw.endpoints.len();
    let start =
        usize::try_from(shared.seq.fetch_add(1, Ordering::Relaxed) % n.max(1) as u64).unwrap_or(0);
    for k in 0..n {
        let Some(&addr) = gw.endpoints.get((start + k) % n) else {
            continue;
        };
        match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, addr));
            }
            Ok(Err(e)) => tried.push(format!("DR gateway {} at {addr} ({e})", gw.host)),
            Err(_) => tried.push(format!(
                "DR gateway {} at {addr} (no connection within {})",
                gw.host,
                human(shared.cfg.connect_timeout)
            )),
        }
    }
    None
}

fn dr_unreachable(gw: &DrGateway, tried: &[String]) -> Response<Body> {
    tracing::warn!(gateway = %gw.host, tried = %tried.join("; "), "the DR gateway does not answer");
    text(
        StatusCode::BAD_GATEWAY,
        format!(
            "Disaster-recovery mode: the Tsuzuku connector could not reach the disaster-recovery gateway {}. Tried: {}. Try again in a moment; if it persists, tell your IT team.",
            gw.host,
            if tried.is_empty() {
                "nothing".to_owned()
            } else {
                tried.join("; ")
            }
        ),
    )
}

fn not_an_app(shared: &Shared, host: &str) -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        format!(
            "{host} is not one of the organisation's app domains ({}); the Tsuzuku connector carries only app traffic. Check that the browser uses the PAC file http://{}/proxy.pac.",
            shared.domains.as_slice().join(", "),
            shared.addr
        ),
    )
}

fn normalise_host(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    h.strip_suffix('.').map(str::to_owned).unwrap_or(h)
}

/// Connects to the first endpoint of the current selection that answers, reporting the ones
/// that do not.
async fn open_gateway(
    shared: &Shared,
    tried: &mut Vec<String>,
) -> (Arc<Selection>, Option<(TcpStream, Endpoint)>) {
    let selection = shared.state.selection();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    for ep in selection
        .attempts(seq)
        .into_iter()
        .take(shared.cfg.max_attempts)
    {
        match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(ep.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return (selection, Some((stream, ep)));
            }
            Ok(Err(e)) => {
                tried.push(format!("site {} at {} ({e})", ep.site, ep.addr));
                shared.state.report_traffic_failure(ep, Failure::Connect);
            }
            Err(_) => {
                tried.push(format!(
                    "site {} at {} (no connection within {})",
                    ep.site,
                    ep.addr,
                    human(shared.cfg.connect_timeout)
                ));
                shared.state.report_traffic_failure(ep, Failure::Timeout);
            }
        }
    }
    (selection, None)
}

async fn open_direct(shared: &Shared, host: &str, port: u16) -> Result<TcpStream, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect((bare, port))).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("{host}:{port} ({e})")),
        Err(_) => Err(format!(
            "{host}:{port} (no connection within {})",
            human(shared.cfg.connect_timeout)
        )),
    }
}

fn unreachable(selection: &Selection, tried: &[String]) -> Response<Body> {
    text(
        StatusCode::BAD_GATEWAY,
        format!(
            "The Tsuzuku connector could not reach a gateway ({}). Tried: {}. The connector keeps probing every site and uses one as soon as it answers: try again in a moment.",
            selection.reason,
            if tried.is_empty() {
                "nothing".to_owned()
            } else {
                tried.join("; ")
            }
        ),
    )
}

async fn connect(shared: Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "CONNECT needs a host and a port, such as app.example.com:443",
        );
    };
    let host = normalise_host(authority.host());
    let Some(port) = authority.port_u16() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("CONNECT {host} has no port; give one, such as {host}:443"),
        );
    };
    if !shared.cfg.allowed_ports.contains(&port) {
        let allowed: Vec<String> = shared
            .cfg
            .allowed_ports
            .iter()
            .map(u16::to_string)
            .collect();
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Port {port} is not allowed through the Tsuzuku connector (allowed: {}). Ask your IT team if {host}:{port} should be reachable.",
                allowed.join(", ")
            ),
        );
    }
    let (opened, targets) = route_with(&shared, &host);
    let (upstream, site) = match opened {
        Route::Refused(why) => return refused(&shared, &host, why, true),
        Route::DrGateway => {
            let Some(targets) = &targets else {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no DR gateway configured",
                );
            };
            let mut tried = Vec::new();
            match open_dr_gateway(&shared, &targets.gateway, &mut tried).await {
                // An enrolled device reaches the DR gateway through a device tunnel too, so
                // the DR gateway knows the device of every request (issue 5 item 3).
                Some((stream, addr)) => {
                    match (&shared.cfg.upstream_tls, shared.cfg.device_tunnel) {
                        (Some(tls), true) => {
                            match crate::device::open_tunnel(tls.clone(), stream, &host, port).await
                            {
                                Ok(s) => (Box::new(s) as Upstream, None),
                                Err(why) => {
                                    tracing::info!(gateway = %targets.gateway.host, %addr, %why, "device tunnel to the DR gateway not opened");
                                    return text(
                                        StatusCode::BAD_GATEWAY,
                                        format!(
                                            "Disaster-recovery mode: the Tsuzuku connector could not open a tunnel to {host} through the disaster-recovery gateway {}: {why}.",
                                            targets.gateway.host
                                        ),
                                    );
                                }
                            }
                        }
                        _ => (Box::new(stream) as Upstream, None),
                    }
                }
                None => return dr_unreachable(&targets.gateway, &tried),
            }
        }
        Route::Gateway => {
            let mut tried = Vec::new();
            match open_gateway(&shared, &mut tried).await {
                (_, Some((stream, ep))) => {
                    match (&shared.cfg.upstream_tls, shared.cfg.device_tunnel) {
                        (Some(tls), true) => {
                            match crate::device::open_tunnel(tls.clone(), stream, &host, port).await
                            {
                                Ok(s) => (Box::new(s) as Upstream, Some(ep)),
                                Err(why) => {
                                    tracing::info!(site = %ep.site, addr = %ep.addr, %why, "device tunnel not opened");
                                    return text(
                                        StatusCode::BAD_GATEWAY,
                                        format!(
                                            "The Tsuzuku connector could not open a tunnel to {host} through site {}: {why}.",
                                            ep.site
                                        ),
                                    );
                                }
                            }
                        }
                        _ => (Box::new(stream) as Upstream, Some(ep)),
                    }
                }
                (selection, None) => return unreachable(&selection, &tried),
            }
        }
        Route::Direct => match open_direct(&shared, &host, port).await {
            Ok(stream) => (Box::new(stream) as Upstream, None),
            Err(why) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!("The Tsuzuku connector could not reach {why}."),
                );
            }
        },
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Subscribed before answering, so a change that happens while the tunnel starts is seen.
    let selection = site.as_ref().map(|_| {
        let mut rx = shared.state.subscribe();
        let at_open = rx.borrow_and_update().site.clone();
        (rx, at_open)
    });
    let dr = shared.dr.as_ref().map(|link| {
        let mut rx = link.status.clone();
        let _ = rx.borrow_and_update();
        DrWatch {
            rx,
            host: host.clone(),
            opened,
        }
    });
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "CONNECT upgrade failed");
                return;
            }
        };
        tunnel(
            shared,
            TokioIo::new(upgraded),
            upstream,
            site,
            selection,
            dr,
        )
        .await;
    });
    Response::new(empty())
}

/// What a tunnel watches of the DR state: it is closed when its host's route changes.
struct DrWatch {
    rx: watch::Receiver<Arc<crate::dr::DrStatus>>,
    host: String,
    opened: Route,
}

/// Copies both ways until either side closes, the tunnel's site becomes unusable, its route
/// changes with the DR state, or the proxy stops. Dropping both streams closes both
/// connections.
/// The gateway side of a tunnel: a TCP connection, or a device tunnel inside mutual TLS.
trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpstreamIo for T {}
type Upstream = Box<dyn UpstreamIo>;

async fn tunnel<C>(
    shared: Arc<Shared>,
    mut client: C,
    mut upstream: Upstream,
    endpoint: Option<Endpoint>,
    selection: Option<(watch::Receiver<Arc<Selection>>, Option<String>)>,
    dr: Option<DrWatch>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let site = endpoint.as_ref().map(|e| e.site.clone());
    let _guard = site.as_deref().map(|s| TunnelGuard::open(&shared, s));
    let policy = shared.cfg.tunnel_close;
    let close = async {
        let (Some(site), Some((mut rx, at_open))) = (site.as_deref(), selection) else {
            return std::future::pending::<()>().await;
        };
        // Only a change after the tunnel opened closes it: a tunnel opened as a last resort to
        // a site marked down stays until routing moves on.
        while rx.changed().await.is_ok() {
            let sel = rx.borrow_and_update();
            let moved_away = sel.site != at_open && sel.site.as_deref() != Some(site);
            if !sel.usable(site) || (policy == TunnelClose::OnSwitch && moved_away) {
                tracing::info!(site, now = %sel.reason, "closing tunnel to a site no longer in use");
                return;
            }
        }
    };
    let dr_close = async {
        let Some(DrWatch {
            mut rx,
            host,
            opened,
        }) = dr
        else {
            return std::future::pending::<()>().await;
        };
        while rx.changed().await.is_ok() {
            let _ = rx.borrow_and_update();
            let now = route_for(&shared, &host);
            if now != opened {
                tracing::info!(host, was = ?opened, now = ?now, "closing tunnel: its route changed with the DR state");
                return;
            }
        }
        std::future::pending::<()>().await
    };
    let mut stop = shared.stop.clone();
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            match r {
                // The client sent something and the gateway closed without a byte back: the
                // node behind that address is gone (e.g. behind a load balancer that still
                // accepts TCP). Selection hears of it now, not at the next probe.
                Ok((sent, 0)) if sent > 0 => {
                    if let Some(ep) = endpoint {
                        tracing::info!(site = %ep.site, addr = %ep.addr, "a gateway closed a tunnel without answering");
                        shared.state.report_traffic_failure(ep, Failure::Protocol);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
            }
        }
        () = close => {}
        () = dr_close => {}
        () = stopped(&mut stop) => {}
    }
}

/// Headers that concern one connection only (RFC 9110 §7.6.1), including those named in
/// `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// Where one attempt of a forwarded request goes.
enum Target {
    Site(Endpoint),
    Dr(SocketAddr),
    Direct,
}

async fn http1<I>(io: I) -> Result<Sender, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Opens an HTTP/1.1 connection on `stream`, with TLS (SNI `host`) when configured and the
/// destination is a gateway.
async fn open_sender(
    shared: &Shared,
    stream: TcpStream,
    host: &str,
    gateway: bool,
) -> Result<Sender, String> {
    match (&shared.cfg.upstream_tls, gateway) {
        (Some(tls), true) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            http1(stream).await
        }
        _ => http1(stream).await,
    }
}

/// A plain-HTTP request in absolute form.
async fn forward(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "Only http:// addresses are forwarded as plain requests; https:// goes through CONNECT.",
        );
    }
    let Some(authority) = uri.authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "The request address has no host.");
    };
    let host = normalise_host(authority.host());
    let port = authority.port_u16().unwrap_or(80);
    let (route, dr_targets) = route_with(&shared, &host);
    if let Route::Refused(why) = route {
        return refused(&shared, &host, why, false);
    }
    let path: Uri = match uri.path_and_query().map_or("/", |p| p.as_str()).parse() {
        Ok(p) => p,
        Err(_) => return text(StatusCode::BAD_REQUEST, "The request path is not valid."),
    };
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(header::HOST, v);
    }
    let retriable =
        matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) && body.is_end_stream();
    let mut body = Some(body);
    let mut tried = Vec::new();

    let mut targets: Vec<Target> = Vec::new();
    let mut selection = None;
    let mut dr_gateway = None;
    match route {
        Route::Gateway => {
            let sel = shared.state.selection();
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            targets.extend(
                sel.attempts(seq)
                    .into_iter()
                    .take(shared.cfg.max_attempts)
                    .map(Target::Site),
            );
            selection = Some(sel);
        }
        Route::DrGateway => {
            if let Some(t) = &dr_targets {
                let gw = t.gateway.clone();
                let n = gw.endpoints.len().max(1);
                let start = usize::try_from(shared.seq.fetch_add(1, Ordering::Relaxed) % n as u64)
                    .unwrap_or(0);
                for k in 0..n {
                    if let Some(&a) = gw.endpoints.get((start + k) % n) {
                        targets.push(Target::Dr(a));
                    }
                }
                dr_gateway = Some(gw);
            }
        }
        Route::Direct | Route::Refused(_) => targets.push(Target::Direct),
    }
    for target in targets {
        let stream = match &target {
            Target::Dr(addr) => {
                match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(*addr))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tried.push(format!("DR gateway at {addr} ({e})"));
                        continue;
                    }
                    Err(_) => {
                        tried.push(format!(
                            "DR gateway at {addr} (no connection within {})",
                            human(shared.cfg.connect_timeout)
                        ));
                        continue;
                    }
                }
            }
            Target::Site(ep) => {
                match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(ep.addr))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tried.push(format!("site {} at {} ({e})", ep.site, ep.addr));
                        shared
                            .state
                            .report_traffic_failure(ep.clone(), Failure::Connect);
                        continue;
                    }
                    Err(_) => {
                        tried.push(format!(
                            "site {} at {} (no connection within {})",
                            ep.site,
                            ep.addr,
                            human(shared.cfg.connect_timeout)
                        ));
                        shared
                            .state
                            .report_traffic_failure(ep.clone(), Failure::Timeout);
                        continue;
                    }
                }
            }
            Target::Direct => match open_direct(&shared, &host, port).await {
                Ok(s) => s,
                Err(why) => {
                    tried.push(why);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let where_ = match &target {
            Target::Site(ep) => format!("site {} at {}", ep.site, ep.addr),
            Target::Dr(addr) => format!("DR gateway at {addr}"),
            Target::Direct => host.clone(),
        };
        let gateway = !matches!(target, Target::Direct);
        let mut sender = match open_sender(&shared, stream, &host, gateway).await {
            Ok(s) => s,
            Err(why) => {
                // A gateway that accepts TCP but fails the handshake counts against its site
                // at once, not only at the next probe.
                if let Target::Site(ep) = &target {
                    shared
                        .state
                        .report_traffic_failure(ep.clone(), Failure::Connect);
                }
                tried.push(format!("{where_} ({why})"));
                continue;
            }
        };
        let out_body = if retriable {
            empty()
        } else {
            body.take().map_or_else(empty, |b| b.boxed())
        };
        let mut out = Request::new(out_body);
        *out.method_mut() = method.clone();
        *out.uri_mut() = path.clone();
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers.clone();
        match sender.send_request(out).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Response::from_parts(parts, body.boxed());
            }
            Err(e) if retriable => {
                tried.push(format!("{where_} (no answer: {e})"));
                if let Target::Site(ep) = target {
                    shared.state.report_traffic_failure(ep, Failure::Protocol);
                }
            }
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{where_} failed before answering ({e}). The {method} request was not repeated, because repeating it could apply it twice: try again."
                    ),
                );
            }
        }
    }
    if let Some(gw) = dr_gateway {
        return dr_unreachable(&gw, &tried);
    }
    match selection {
        Some(selection) => unreachable(&selection, &tried),
        None => text(
            StatusCode::BAD_GATEWAY,
            format!(
                "The Tsuzuku connector could not reach {}.",
                tried.join("; ")
            ),
        ),
    }
}
