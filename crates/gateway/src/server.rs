//! Accepting connections: TLS 1.2/1.3 (rustls with ring), ALPN for HTTP/2 and HTTP/1.1,
//! header-read timeout against slow clients, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::service::handle;
use crate::state::{Gateway, GatewayError};

/// Builds the TLS configuration from PEM files: TLS 1.2 and 1.3 only, forward-secret suites only
/// (rustls offers no others), ALPN `h2` then `http/1.1`.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, GatewayError> {
    tls_config_with(cert, key, None)
}

/// [`tls_config`], asking for (not requiring) a client certificate verified by `client_auth`.
pub(crate) fn tls_config_with(
    cert: &Path,
    key: &Path,
    client_auth: Option<Arc<crate::device::DeviceVerifier>>,
) -> Result<Arc<ServerConfig>, GatewayError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| GatewayError::Tls(format!("cannot read certificate {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            GatewayError::Tls(format!("bad certificate PEM in {}: {e}", cert.display()))
        })?;
    if certs.is_empty() {
        return Err(GatewayError::Tls(format!(
            "no certificate found in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        GatewayError::Tls(format!("cannot read private key {}: {e}", key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    let builder = match client_auth {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| GatewayError::Tls(format!("certificate and key do not match: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves until `shutdown` resolves; then stops accepting and lets open requests finish
/// (for at most 10 s).
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let acceptor = TlsAcceptor::from(tls);
    let tracker = tokio_util_tracker::Tracker::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off briefly, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let gw = gw.clone();
        let guard = tracker.guard();
        tokio::spawn(async move {
            let _guard = guard;
            let timeout = gw.settings.header_read_timeout;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let device = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| tsuzuku_device::fingerprint(c.as_ref()));
            let conn = Arc::new(Conn::new(peer, device, false));
            serve_http(gw, tls, conn, Some(acceptor)).await;
        });
    }
    tracker.wait(Duration::from_secs(10)).await;
    Ok(())
}

/// One client connection as the request pipeline sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    /// The peer's address as a header value (`X-Forwarded-For`), written once.
    pub peer_value: hyper::header::HeaderValue,
    /// Fingerprint of the device certificate presented in mutual TLS (the outer connection's,
    /// for a device tunnel).
    pub device: Option<String>,
    /// Inside a device tunnel (`CONNECT` from an enrolled connector).
    pub tunneled: bool,
    /// The upstream connection kept for this connection's requests.
    pub upstream: Arc<crate::proxy::Affinity>,
    /// The identity headers of this connection's last request to an app.
    pub identity: crate::proxy::IdentitySlot,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, device: Option<String>, tunneled: bool) -> Self {
        // An address's text is always a valid header value.
        let peer_value = hyper::header::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("unknown"));
        Conn {
            peer,
            peer_value,
            device,
            tunneled,
            upstream: Arc::default(),
            identity: crate::proxy::IdentitySlot::default(),
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one TLS connection. `tunnels` is the acceptor for device
/// tunnels: an enrolled connector sends `CONNECT app-host:443` over its mutual-TLS connection,
/// and the browser's own TLS connection inside is served here as if it had arrived directly,
/// with the device of the outer connection. Tunnels do not nest.
async fn serve_http<I>(gw: Arc<Gateway>, io: I, conn: Arc<Conn>, tunnels: Option<TlsAcceptor>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = gw.settings.header_read_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(gw.settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(gw.settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let peer = conn.peer;
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let gw = gw.clone();
        let conn = conn.clone();
        let tunnels = tunnels.clone();
        async move {
            if req.method() == hyper::Method::CONNECT {
                return Ok(device_tunnel(gw, conn, tunnels, req));
            }
            handle(gw, conn, req).await
        }
    });
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Answers a `CONNECT`: only from an enrolled device's connection, only to an app host or the
/// portal (the gateway never connects anywhere for it: the tunnel ends here), never nested.
fn device_tunnel(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    tunnels: Option<TlsAcceptor>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<crate::state::Body> {
    use crate::device::ConnDevice;
    let refuse = |status: hyper::StatusCode, why: &str| {
        tracing::info!(peer = %conn.peer, why, "CONNECT refused");
        crate::respond::error(status, "Tunnel refused", why, &crate::service::request_id())
    };
    let Some(acceptor) = tunnels.filter(|_| !conn.tunneled) else {
        return refuse(
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not allowed inside a device tunnel.",
        );
    };
    let snapshot = gw.snapshot.load_full();
    let device = crate::device::resolve(
        conn.device.as_deref(),
        &snapshot.devices,
        crate::state::now_unix(),
    );
    match device {
        ConnDevice::Enrolled(_) => {}
        ConnDevice::Revoked(d) => {
            return refuse(
                hyper::StatusCode::FORBIDDEN,
                &format!("The certificate of device {} was revoked.", d.id),
            );
        }
        ConnDevice::None | ConnDevice::Unknown(_) => {
            return refuse(
                hyper::StatusCode::FORBIDDEN,
                "CONNECT is only for the connectors of enrolled devices (mutual TLS).",
            );
        }
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    let host = authority.split(':').next().unwrap_or_default().to_owned();
    let known = |name: &str| name == gw.settings.portal_host || snapshot.apps.contains_key(name);
    if !(known(&authority) || known(&host)) {
        return refuse(
            hyper::StatusCode::FORBIDDEN,
            &format!("{host:?} is not an application of this gateway."),
        );
    }
    let inner_conn = Arc::new(Conn::new(conn.peer, conn.device.clone(), true));
    let timeout = gw.settings.header_read_timeout;
    let task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "device tunnel upgrade failed");
                return;
            }
        };
        let tls = match tokio::time::timeout(timeout, acceptor.accept(TokioIo::new(upgraded))).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake inside a device tunnel failed");
                return;
            }
            Err(_) => return,
        };
        serve_http(gw, tls, inner_conn, None).await;
    });
    tokio::spawn(task);
    let mut resp = hyper::Response::new(crate::respond::full(bytes::Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::OK;
    resp
}

/// Counts live connections so shutdown can wait for them.
mod tokio_util_tracker {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[derive(Default, Clone)]
    pub struct Tracker(Arc<(AtomicUsize, tokio::sync::Notify)>);

    pub struct Guard(Arc<(AtomicUsize, tokio::sync::Notify)>);

    impl Tracker {
        pub fn guard(&self) -> Guard {
            self.0.0.fetch_add(1, Ordering::SeqCst);
            Guard(self.0.clone())
        }
        pub async fn wait(&self, max: Duration) {
            let deadline = tokio::time::Instant::now() + max;
            while self.0.0.load(Ordering::SeqCst) > 0 {
                if tokio::time::timeout_at(deadline, self.0.1.notified())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.0.fetch_sub(1, Ordering::SeqCst);
            self.0.1.notify_waiters();
        }
    }
}
