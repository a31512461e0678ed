//! Accepting connections: TLS 1.2/1.3 (rustls with ring), ALPN for HTTP/2 and HTTP/1.1,
//! header-read timeout against slow clients, and graceful shutdown.

use std::future::Future;
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
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_no_client_auth()
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
                .max_header_list_size(
                    u32::try_from(gw.settings.max_header_bytes).unwrap_or(u32::MAX),
                )
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let svc = service_fn(move |req| handle(gw.clone(), peer, req));
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracker.wait(Duration::from_secs(10)).await;
    Ok(())
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
