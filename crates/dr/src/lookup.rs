//! Asking DNS for the DR record (the IO shell around the pure core), with hickory-resolver:
//! through the system resolver (`/etc/resolv.conf`), a given server over UDP and TCP, DNS over
//! TLS or DNS over HTTPS (ZT-10), with a time limit.
//!
//! DNS over TLS and HTTPS check the server's certificate against the TLS name given with the
//! server: by default with the public web roots, or — for a resolver with a private CA — only
//! with the CA certificates of a file ([`Transport::with_ca_file`]). A server whose certificate
//! does not verify gives [`LookupError::Tls`] naming the certificate problem, never an answer.
//!
//! The outcomes a connector must tell apart are distinct: the TXT records; [`Answer::Withdrawn`]
//! (NXDOMAIN or no TXT record at the name: the customer removed the record, back to normal);
//! and errors — [`LookupError::Timeout`], [`LookupError::ServFail`] and the rest — after which
//! the last verified state stands. Every lookup asks the servers afresh (the resolver's cache is
//! cleared first), so a record's TTL never delays a switch.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

use crate::memory::Observation;

/// Where and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The system's resolver configuration (`/etc/resolv.conf`).
    System,
    /// This server over UDP, and TCP for answers too long for UDP.
    UdpTcp(SocketAddr),
    /// This server over UDP only.
    Udp(SocketAddr),
    /// This server over TCP only.
    Tcp(SocketAddr),
    /// DNS over TLS to this server, whose certificate must be valid for `server_name` and
    /// issued by a CA in `ca_file` (PEM) or, without one, by a public web root.
    Tls {
        addr: SocketAddr,
        server_name: String,
        ca_file: Option<PathBuf>,
    },
    /// DNS over HTTPS to this server (`path` default `/dns-query`); the certificate is checked
    /// as for [`Transport::Tls`].
    Https {
        addr: SocketAddr,
        server_name: String,
        path: Option<String>,
        ca_file: Option<PathBuf>,
    },
}

/// A CA file given for a transport that does not use TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a CA file ({ca_file}) only applies to DNS over TLS (tls://NAME@IP[:PORT]) or HTTPS \
     (https://NAME@IP[:PORT][/PATH]), not to {transport}"
)]
pub struct CaWithoutTls {
    pub transport: String,
    pub ca_file: String,
}

impl Transport {
    /// Trust only the CA certificates in this PEM file for DNS over TLS or HTTPS (read when
    /// the resolver is set up).
    pub fn with_ca_file(self, path: impl Into<PathBuf>) -> Result<Self, CaWithoutTls> {
        let path = path.into();
        match self {
            Transport::Tls {
                addr, server_name, ..
            } => Ok(Transport::Tls {
                addr,
                server_name,
                ca_file: Some(path),
            }),
            Transport::Https {
                addr,
                server_name,
                path: p,
                ..
            } => Ok(Transport::Https {
                addr,
                server_name,
                path: p,
                ca_file: Some(path),
            }),
            other => Err(CaWithoutTls {
                transport: other.to_string(),
                ca_file: path.display().to_string(),
            }),
        }
    }

    /// The CA file trusted for DNS over TLS or HTTPS, if one is given.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            Transport::Tls { ca_file, .. } | Transport::Https { ca_file, .. } => ca_file.as_deref(),
            _ => None,
        }
    }
}

/// A transport written in an unknown form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a DNS server: use IP[:PORT] (UDP and TCP), udp://IP[:PORT], tcp://IP[:PORT], \
     tls://NAME@IP[:PORT] (DNS over TLS) or https://NAME@IP[:PORT][/PATH] (DNS over HTTPS), or \
     `system`"
)]
pub struct BadTransport {
    pub text: String,
}

fn addr_with_default(s: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    ip.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

impl FromStr for Transport {
    type Err = BadTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadTransport { text: s.to_owned() };
        if s == "system" {
            return Ok(Transport::System);
        }
        if let Some(rest) = s.strip_prefix("udp://") {
            return addr_with_default(rest, 53)
                .map(Transport::Udp)
                .ok_or_else(bad);
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            return addr_with_default(rest, 53)
                .map(Transport::Tcp)
                .ok_or_else(bad);
        }
        if let Some(rest) = s.strip_prefix("tls://") {
            let (name, addr) = rest.split_once('@').ok_or_else(bad)?;
            let addr = addr_with_default(addr, 853).ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            return Ok(Transport::Tls {
                addr,
                server_name: name.to_owned(),
                ca_file: None,
            });
        }
        if let Some(rest) = s.strip_prefix("https://") {
            let (name, rest) = rest.split_once('@').ok_or_else(bad)?;
            let (addr, path) = match rest.find('/') {
                Some(i) => (
                    rest.get(..i).ok_or_else(bad)?,
                    Some(rest.get(i..).ok_or_else(bad)?.to_owned()),
                ),
                None => (rest, None),
            };
            let addr = addr_with_default(addr, 443).ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            return Ok(Transport::Https {
                addr,
                server_name: name.to_owned(),
                path,
                ca_file: None,
            });
        }
        addr_with_default(s, 53)
            .map(Transport::UdpTcp)
            .ok_or_else(bad)
    }
}

/// The written form ([`FromStr`] reads it back), followed by ` (CA file PATH)` when a CA file
/// is given.
impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::System => f.write_str("system"),
            Transport::UdpTcp(a) => write!(f, "{a}"),
            Transport::Udp(a) => write!(f, "udp://{a}"),
            Transport::Tcp(a) => write!(f, "tcp://{a}"),
            Transport::Tls {
                addr, server_name, ..
            } => write!(f, "tls://{server_name}@{addr}"),
            Transport::Https {
                addr,
                server_name,
                path,
                ..
            } => write!(
                f,
                "https://{server_name}@{addr}{}",
                path.as_deref().unwrap_or("")
            ),
        }?;
        match self.ca_file() {
            Some(p) => write!(f, " (CA file {})", p.display()),
            None => Ok(()),
        }
    }
}

/// A TLS client configuration trusting only the CA certificates in the PEM file `path`.
fn tls_config_from_ca_file(path: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "the CA file {} holds a certificate that cannot be used: {e}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "the CA file {} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            path.display()
        ));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| format!("TLS setup: {e}"))
}

/// A lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The TXT records at the name, each a list of strings (at least one record).
    Records(Vec<Vec<Vec<u8>>>),
    /// No DR record: the name does not exist (`nxdomain`) or has no TXT record.
    Withdrawn { nxdomain: bool },
}

/// Why a lookup gave no answer. After any of these the last verified state stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    #[error("cannot set up the DNS resolver ({transport}): {reason}")]
    Setup { transport: String, reason: String },
    #[error("{name:?} is not a valid DNS name: {reason}")]
    BadName { name: String, reason: String },
    #[error("no DNS answer for {name} within {} ms", timeout.as_millis())]
    Timeout { name: String, timeout: Duration },
    #[error("the DNS server answered SERVFAIL for {name}")]
    ServFail { name: String },
    #[error("the DNS server refused to answer for {name} (REFUSED)")]
    Refused { name: String },
    #[error("DNS lookup of {name} failed: {reason}")]
    Failed { name: String, reason: String },
    #[error(
        "DNS lookup of {name} failed: the TLS connection to {transport} was refused: {reason}; \
         check the server's TLS name and the CA file trusted for it"
    )]
    Tls {
        name: String,
        transport: String,
        reason: String,
    },
}

/// The resolver for DR lookups.
pub struct TxtLookup {
    resolver: TokioResolver,
    timeout: Duration,
    /// For DNS over TLS / HTTPS: the handshake to redo when a lookup fails, to name the TLS
    /// problem (hickory reports only that no connection was available).
    tls_probe: Option<TlsProbe>,
}

struct TlsProbe {
    transport: String,
    addr: SocketAddr,
    server_name: rustls::pki_types::ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

/// What connecting again to a DNS over TLS / HTTPS server showed.
enum ProbeFailure {
    /// No TCP connection.
    Connect(String),
    /// Connected, but the TLS handshake failed (certificate, name, protocol).
    Handshake(String),
}

impl TlsProbe {
    /// Why a connection to the server fails, if it does within `limit`.
    async fn failure(&self, limit: Duration) -> Option<ProbeFailure> {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| {
                    ProbeFailure::Connect(format!("cannot connect to {}: {e}", self.addr))
                })?;
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map(drop)
                .map_err(|e| {
                    ProbeFailure::Handshake(match e.get_ref() {
                        Some(inner) => inner.to_string(),
                        None => e.to_string(),
                    })
                })
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Err(failure)) => Some(failure),
            Ok(Ok(())) | Err(_) => None,
        }
    }
}

impl fmt::Debug for TxtLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxtLookup")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn connection(mut c: ConnectionConfig, port: u16) -> ConnectionConfig {
    c.port = port;
    c
}

impl TxtLookup {
    /// A resolver using `transport`; each lookup gives up after `timeout`.
    pub fn new(transport: &Transport, timeout: Duration) -> Result<Self, LookupError> {
        let setup = |reason: String| LookupError::Setup {
            transport: transport.to_string(),
            reason,
        };
        let server = |addr: SocketAddr, conns: Vec<ConnectionConfig>| {
            ResolverConfig::from_parts(
                None,
                Vec::new(),
                vec![NameServerConfig::new(addr.ip(), true, conns)],
            )
        };
        let mut builder = match transport {
            Transport::System => {
                TokioResolver::builder_tokio().map_err(|e| setup(e.to_string()))?
            }
            Transport::UdpTcp(a) => {
                let conns = vec![
                    connection(ConnectionConfig::udp(), a.port()),
                    connection(ConnectionConfig::tcp(), a.port()),
                ];
                TokioResolver::builder_with_config(
                    server(*a, conns),
                    TokioRuntimeProvider::default(),
                )
            }
            Transport::Udp(a) => TokioResolver::builder_with_config(
                server(*a, vec![connection(ConnectionConfig::udp(), a.port())]),
                TokioRuntimeProvider::default(),
            ),
            Transport::Tcp(a) => TokioResolver::builder_with_config(
                server(*a, vec![connection(ConnectionConfig::tcp(), a.port())]),
                TokioRuntimeProvider::default(),
            ),
            Transport::Tls {
                addr, server_name, ..
            } => TokioResolver::builder_with_config(
                server(
                    *addr,
                    vec![connection(
                        ConnectionConfig::tls(Arc::from(server_name.as_str())),
                        addr.port(),
                    )],
                ),
                TokioRuntimeProvider::default(),
            ),
            Transport::Https {
                addr,
                server_name,
                path,
                ..
            } => TokioResolver::builder_with_config(
                server(
                    *addr,
                    vec![connection(
                        ConnectionConfig::https(
                            Arc::from(server_name.as_str()),
                            path.as_deref().map(Arc::from),
                        ),
                        addr.port(),
                    )],
                ),
                TokioRuntimeProvider::default(),
            ),
        };
        // The resolver and the diagnostic handshake use the same TLS configuration: only the
        // CA file's certificates, or hickory's default (the public web roots).
        let mut tls_probe = None;
        if let Transport::Tls {
            addr, server_name, ..
        }
        | Transport::Https {
            addr, server_name, ..
        } = transport
        {
            let config = match transport.ca_file() {
                Some(ca) => tls_config_from_ca_file(ca).map_err(setup)?,
                None => hickory_resolver::net::tls::client_config()
                    .map_err(|e| setup(format!("TLS setup: {e}")))?,
            };
            builder = builder.with_tls_config(config.clone());
            let mut probe_config = config;
            probe_config.alpn_protocols = vec![if matches!(transport, Transport::Https { .. }) {
                b"h2".to_vec()
            } else {
                b"dot".to_vec()
            }];
            tls_probe = Some(TlsProbe {
                transport: transport.to_string(),
                addr: *addr,
                server_name: rustls::pki_types::ServerName::try_from(server_name.clone())
                    .map_err(|e| setup(format!("{server_name:?} is not a TLS name: {e}")))?,
                config: Arc::new(probe_config),
            });
        }
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.try_tcp_on_error = true;
        let resolver = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            resolver,
            timeout,
            tls_probe,
        })
    }

    /// Looks up the TXT records at `name` (a fully qualified name; a final `.` is added).
    pub async fn lookup(&self, name: &str) -> Result<Answer, LookupError> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let display = fqdn.trim_end_matches('.').to_owned();
        let query_name = hickory_resolver::proto::rr::Name::from_ascii(&fqdn).map_err(|e| {
            LookupError::BadName {
                name: name.to_owned(),
                reason: e.to_string(),
            }
        })?;
        self.resolver.clear_cache();
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, self.resolver.txt_lookup(query_name)).await;
        let lookup = match result {
            Err(_) => {
                return Err(LookupError::Timeout {
                    name: display,
                    timeout: self.timeout,
                });
            }
            Ok(Err(e)) => {
                let outcome = classify(e, display, self.timeout);
                // A failure that is not a DNS answer: over TLS, say what is wrong with the
                // connection if that is it (within the lookup's time limit).
                if let (Err(LookupError::Failed { name, .. }), Some(probe)) =
                    (&outcome, &self.tls_probe)
                {
                    let left = self.timeout.saturating_sub(started.elapsed());
                    let failure = if left.is_zero() {
                        None
                    } else {
                        probe.failure(left).await
                    };
                    match failure {
                        Some(ProbeFailure::Handshake(reason)) => {
                            return Err(LookupError::Tls {
                                name: name.clone(),
                                transport: probe.transport.clone(),
                                reason,
                            });
                        }
                        Some(ProbeFailure::Connect(reason)) => {
                            return Err(LookupError::Failed {
                                name: name.clone(),
                                reason,
                            });
                        }
                        None => {}
                    }
                }
                return outcome;
            }
            Ok(Ok(lookup)) => lookup,
        };
        let records: Vec<Vec<Vec<u8>>> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| s.to_vec()).collect()),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            Ok(Answer::Withdrawn { nxdomain: false })
        } else {
            Ok(Answer::Records(records))
        }
    }
}

fn classify(e: NetError, name: String, timeout: Duration) -> Result<Answer, LookupError> {
    match e {
        NetError::Timeout => Err(LookupError::Timeout { name, timeout }),
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Ok(Answer::Withdrawn { nxdomain: true }),
            ResponseCode::NoError => Ok(Answer::Withdrawn { nxdomain: false }),
            ResponseCode::ServFail => Err(LookupError::ServFail { name }),
            ResponseCode::Refused => Err(LookupError::Refused { name }),
            other => Err(LookupError::Failed {
                name,
                reason: format!("response code {other}"),
            }),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            Err(LookupError::ServFail { name })
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            Err(LookupError::Refused { name })
        }
        other => Err(LookupError::Failed {
            name,
            reason: other.to_string(),
        }),
    }
}

/// The lookup's outcome as the pure core's [`Observation`].
pub fn observation(result: &Result<Answer, LookupError>) -> Observation<'_> {
    match result {
        Ok(Answer::Records(r)) => Observation::Records(r),
        Ok(Answer::Withdrawn { .. }) => Observation::Withdrawn,
        Err(_) => Observation::Unreachable,
    }
}

#[cfg(test)]
mod tests;
