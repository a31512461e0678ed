//! A real authoritative DNS server (hickory-server) running in-process for tests: it serves one
//! zone over UDP and TCP on the same loopback port, a test replaces or removes TXT records while
//! it runs, and it can be told to answer SERVFAIL or not to answer at all (so a client times
//! out). It stops when dropped.
//!
//! [`TestDns::start_secure`] also serves the zone over DNS over TLS (RFC 7858) and DNS over HTTPS
//! (RFC 8484, HTTP/2 at `/dns-query`) on two more loopback ports, with a server certificate for a
//! given name issued by a fresh test CA ([`TestDns::ca_pem`]); [`TestDns::untrusted_ca_pem`] is
//! another CA that did not issue it, for tests of a refused certificate.
//!
//! ```no_run
//! # async fn f() -> Result<(), tsuzuku_testkit::dns::DnsError> {
//! use tsuzuku_testkit::dns::TestDns;
//! let dns = TestDns::start("example.test").await?;
//! dns.set_txt("_tsuzuku-dr.example.test", &["v=TSZDR1; ..."]).await?;
//! // resolve against dns.addr() ...
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};

/// The DNS over HTTPS path the test server answers on.
pub const DOH_PATH: &str = "/dns-query";

/// What went wrong starting or changing the test DNS server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    #[error("cannot bind the test DNS server on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    #[error("{name:?} is not a valid DNS name: {reason}")]
    Name { name: String, reason: String },
    #[error("{name} is not inside the served zone {zone}")]
    OutsideZone { name: String, zone: String },
    #[error("a TXT string is {len} bytes; DNS allows at most 255 per string")]
    StringTooLong { len: usize },
    #[error("the zone refused the record for {name}")]
    Rejected { name: String },
    #[error("cannot make the test certificates or TLS setup: {0}")]
    Tls(String),
}

/// How the server answers every query from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer from the zone.
    None,
    /// Answer SERVFAIL to every query.
    ServFail,
    /// Read queries and never answer (clients time out).
    Silent,
}

impl Fault {
    fn to_u8(self) -> u8 {
        match self {
            Fault::None => 0,
            Fault::ServFail => 1,
            Fault::Silent => 2,
        }
    }
}

/// TTL of the records the test server hands out: zero, so no cache keeps an old answer.
const TTL: u32 = 0;

/// The real catalog, behind a switch that can make it fail.
struct FaultyCatalog {
    catalog: Catalog,
    fault: Arc<AtomicU8>,
}

#[async_trait::async_trait]
impl RequestHandler for FaultyCatalog {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        match self.fault.load(Ordering::SeqCst) {
            1 => {
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(_) => not_sent(request),
                }
            }
            2 => not_sent(request),
            _ => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        }
    }
}

/// What the server reports (to itself) about a request it did not answer.
fn not_sent(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// The encrypted listeners of [`TestDns::start_secure`].
#[derive(Debug, Clone)]
struct Secure {
    tls_addr: SocketAddr,
    https_addr: SocketAddr,
    ca_pem: String,
    untrusted_ca_pem: String,
}

/// A running authoritative server for one zone; stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    secure: Option<Secure>,
    origin: Name,
    zone: Arc<InMemoryZoneHandler>,
    fault: Arc<AtomicU8>,
    serial: AtomicU32,
    server: Server<FaultyCatalog>,
}

impl std::fmt::Debug for TestDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDns")
            .field("addr", &self.addr)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn parse_name(name: &str) -> Result<Name, DnsError> {
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&fqdn).map_err(|e| DnsError::Name {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

/// A UDP socket and a TCP listener on the same free loopback port.
async fn bind_pair() -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsError> {
    let mut last = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(DnsError::Bind)?;
        let addr = udp.local_addr().map_err(DnsError::Bind)?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(DnsError::Bind(last.unwrap_or_else(|| {
        std::io::Error::other("no port free for both UDP and TCP")
    })))
}

/// A test CA's certificate (PEM) and, issued by it, a server certificate chain and key for
/// `name`.
fn test_certificates(
    name: &str,
    ca_name: &str,
) -> Result<
    (
        String,
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    DnsError,
> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let tls = |e: rcgen::Error| DnsError::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(tls)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(tls)?;
    let mut leaf = CertificateParams::new(vec![name.to_owned()]).map_err(tls)?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).map_err(tls)?;
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    Ok((
        ca_cert.pem(),
        vec![cert.der().clone(), ca_cert.der().clone()],
        key_der,
    ))
}

/// A TLS 1.2/1.3 server configuration with this certificate, speaking `alpn`.
fn server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, DnsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DnsError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| DnsError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

impl TestDns {
    /// Starts serving `zone` (e.g. `example.test`) with only its SOA record, on a free
    /// 127.0.0.1 port over UDP and TCP.
    pub async fn start(zone: &str) -> Result<Self, DnsError> {
        Self::start_inner(zone, None).await
    }

    /// Like [`TestDns::start`], and also serves DNS over TLS ([`TestDns::tls_addr`]) and DNS
    /// over HTTPS ([`TestDns::https_addr`], path [`DOH_PATH`]) with a certificate for
    /// `server_name` issued by a fresh test CA ([`TestDns::ca_pem`]).
    pub async fn start_secure(zone: &str, server_name: &str) -> Result<Self, DnsError> {
        Self::start_inner(zone, Some(server_name)).await
    }

    async fn start_inner(zone: &str, server_name: Option<&str>) -> Result<Self, DnsError> {
        let origin = parse_name(zone)?;
        let mut handler =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            parse_name(&format!("ns.{origin}"))?,
            parse_name(&format!("hostmaster.{origin}"))?,
            1,
            3600,
            600,
            86400,
            TTL,
        );
        if !handler.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1) {
            return Err(DnsError::Rejected {
                name: origin.to_string(),
            });
        }
        let zone_handler = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone_handler.clone() as Arc<dyn ZoneHandler>],
        );
        let fault = Arc::new(AtomicU8::new(Fault::None.to_u8()));
        let mut server = Server::new(FaultyCatalog {
            catalog,
            fault: fault.clone(),
        });
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr().map_err(DnsError::Bind)?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        let secure = match server_name {
            None => None,
            Some(name) => {
                let (ca_pem, chain, key) = test_certificates(name, "Tsuzuku test DNS CA")?;
                let (untrusted_ca_pem, _, _) = test_certificates(name, "Another test CA")?;
                let tls = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(DnsError::Bind)?;
                let https = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(DnsError::Bind)?;
                let tls_addr = tls.local_addr().map_err(DnsError::Bind)?;
                let https_addr = https.local_addr().map_err(DnsError::Bind)?;
                server
                    .register_tls_listener_with_tls_config(
                        tls,
                        Duration::from_secs(5),
                        server_config(chain.clone(), key.clone_key(), b"dot")?,
                    )
                    .map_err(DnsError::Bind)?;
                server
                    .register_https_listener_with_tls_config(
                        https,
                        Duration::from_secs(5),
                        server_config(chain, key, b"h2")?,
                        Some(name.to_owned()),
                        DOH_PATH.to_owned(),
                    )
                    .map_err(DnsError::Bind)?;
                Some(Secure {
                    tls_addr,
                    https_addr,
                    ca_pem,
                    untrusted_ca_pem,
                })
            }
        };
        Ok(Self {
            addr,
            secure,
            origin,
            zone: zone_handler,
            fault,
            serial: AtomicU32::new(1),
            server,
        })
    }

    /// The address the server answers on, for UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The DNS over TLS address (after [`TestDns::start_secure`]).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.secure.as_ref().map(|s| s.tls_addr)
    }

    /// The DNS over HTTPS address (after [`TestDns::start_secure`]); the path is [`DOH_PATH`].
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.secure.as_ref().map(|s| s.https_addr)
    }

    /// The test CA (PEM) that issued the server's certificate (after [`TestDns::start_secure`]).
    pub fn ca_pem(&self) -> Option<&str> {
        self.secure.as_ref().map(|s| s.ca_pem.as_str())
    }

    /// Another CA's certificate (PEM), which did not issue the server's certificate.
    pub fn untrusted_ca_pem(&self) -> Option<&str> {
        self.secure.as_ref().map(|s| s.untrusted_ca_pem.as_str())
    }

    /// From now on answer normally, SERVFAIL, or not at all.
    pub fn set_fault(&self, fault: Fault) {
        self.fault.store(fault.to_u8(), Ordering::SeqCst);
    }

    fn name_in_zone(&self, name: &str) -> Result<Name, DnsError> {
        let n = parse_name(name)?;
        if !self.origin.zone_of(&n) {
            return Err(DnsError::OutsideZone {
                name: name.to_owned(),
                zone: self.origin.to_string(),
            });
        }
        Ok(n)
    }

    /// Replaces every TXT record at `name` with one record made of these strings.
    pub async fn set_txt(&self, name: &str, strings: &[&str]) -> Result<(), DnsError> {
        let bytes: Vec<Vec<u8>> = strings.iter().map(|s| s.as_bytes().to_vec()).collect();
        self.set_txt_records(name, &[bytes]).await
    }

    /// Replaces every TXT record at `name` with these records, each a list of raw strings.
    pub async fn set_txt_records(
        &self,
        name: &str,
        records: &[Vec<Vec<u8>>],
    ) -> Result<(), DnsError> {
        let n = self.name_in_zone(name)?;
        for s in records.iter().flatten() {
            if s.len() > 255 {
                return Err(DnsError::StringTooLong { len: s.len() });
            }
        }
        self.remove_txt_named(&n).await;
        let serial = self.serial.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        for strings in records {
            let txt = TXT::from_bytes(strings.iter().map(Vec::as_slice).collect());
            let record = Record::from_rdata(n.clone(), TTL, RData::TXT(txt));
            if !self.zone.upsert(record, serial).await {
                return Err(DnsError::Rejected {
                    name: name.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Removes every TXT record at `name`: with nothing else there, the name no longer exists
    /// (NXDOMAIN).
    pub async fn remove_txt(&self, name: &str) -> Result<(), DnsError> {
        let n = self.name_in_zone(name)?;
        self.remove_txt_named(&n).await;
        Ok(())
    }

    async fn remove_txt_named(&self, n: &Name) {
        let key = RrKey::new(LowerName::new(n), RecordType::TXT);
        self.zone.records_mut().await.remove(&key);
    }

    /// Stops the server and waits until its sockets are closed.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        // The server's tasks end when they see the cancellation (and are aborted when the
        // server's task set is dropped right after).
        self.server.shutdown_token().cancel();
    }
}
