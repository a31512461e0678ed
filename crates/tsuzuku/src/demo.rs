//! The demo upstream app of the quick start: a page that shows the identity the gateway sent,
//! after verifying the signed assertion against the gateway's key set (JWKS), as a real app
//! behind Tsuzuku should.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::net::TcpListener;

use tsuzuku_gateway::assertion::Claims;
use tsuzuku_gateway::headers::ASSERTION_HEADER;
use tsuzuku_gateway::pages::esc;

/// Serves the demo app on `listener`. `jwks` is the gateway's key set.
pub async fn serve(listener: TcpListener, jwks: JwkSet, issuer: String) -> Result<()> {
    let state = Arc::new((jwks, issuer));
    loop {
        let (tcp, _) = listener.accept().await.context("demo app: accept")?;
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(page(&state.0, &state.1, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Binds the demo app on `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("demo app: cannot listen on {addr}"))
}

fn page<B>(jwks: &JwkSet, issuer: &str, req: &Request<B>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let token = req
        .headers()
        .get(ASSERTION_HEADER)
        .and_then(|h| h.to_str().ok());
    let (status, body) = match token.map(|t| verify(jwks, issuer, host, t)) {
        Some(Ok(c)) => (
            StatusCode::OK,
            format!(
                "<h1>Hello, {}</h1><p>The gateway vouched for you with a signed assertion \
that this app verified against the gateway's JWKS.</p><table>\
<tr><th>user</th><td>{}</td></tr><tr><th>name</th><td>{}</td></tr>\
<tr><th>groups</th><td>{}</td></tr><tr><th>authentication</th><td>{}</td></tr>\
<tr><th>audience</th><td>{}</td></tr><tr><th>path</th><td>{}</td></tr></table>",
                esc(&c.name),
                esc(&c.user),
                esc(&c.name),
                esc(&c.groups.join(", ")),
                esc(&c.amr.join(" + ")),
                esc(&c.aud),
                esc(req.uri().path()),
            ),
        ),
        Some(Err(e)) => (
            StatusCode::UNAUTHORIZED,
            format!("<h1>Assertion rejected</h1><p>{}</p>", esc(&e)),
        ),
        None => (
            StatusCode::UNAUTHORIZED,
            "<h1>No identity</h1><p>This app is only reachable through the Tsuzuku gateway.</p>"
                .to_owned(),
        ),
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tsuzuku demo app</title></head>\
<body style=\"font-family:system-ui;margin:3rem\">{body}</body></html>"
    );
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn verify(jwks: &JwkSet, issuer: &str, host: &str, token: &str) -> Result<Claims, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("assertion has no key id")?;
    let jwk = jwks
        .find(&kid)
        .ok_or("assertion signed by an unknown key")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[format!("https://{host}")]);
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Claims>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| format!("assertion invalid: {e}"))
}
