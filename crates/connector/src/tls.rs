//! TLS towards the gateways for requests the connector originates itself (plain-HTTP requests
//! it forwards): a rustls client configuration (ring provider) that trusts the given CA.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A CA certificate file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(
        "the gateway CA file is not valid PEM ({0}); give a file with one or more CERTIFICATE blocks"
    )]
    Pem(String),
    #[error("the gateway CA file holds no CERTIFICATE block")]
    Empty,
    #[error("a certificate in the gateway CA file was refused as a trust anchor: {0}")]
    Anchor(String),
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// A client configuration trusting only the certificates in `ca_pem`, speaking HTTP/1.1.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with(ca_pem, None)
}

/// [`client_config`], presenting `identity` (certificate chain and key) when a server asks for
/// a client certificate. With an identity, session resumption is off: every connection
/// presents the certificate afresh, so a session begun before the server trusted it (no
/// certificate asked for) is never resumed as an anonymous one.
pub fn client_config_with(
    ca_pem: &[u8],
    identity: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::Pem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Anchor(e.to_string()))?;
        any = true;
    }
    if !any {
        return Err(TlsError::Empty);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => {
            let mut c = builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Setup(format!("the device certificate and key: {e}")))?;
            c.resumption = rustls::client::Resumption::disabled();
            c
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
