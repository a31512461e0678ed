//! Probing: every gateway endpoint of every site is asked for its readiness (`GET /readyz`
//! over HTTPS, by default every second) and the results feed the site state.
//!
//! A probe takes the path user traffic takes: a new TCP connection to the endpoint's address,
//! TLS with the site's host name (SNI) checked against the configured CA, and an HTTP request.
//! Its latency is the time from sending to the end of the answer, so it includes the handshakes
//! a new user connection pays. Only a 2xx answer within the timeout counts as good: refused
//! connections, silence (a gateway that accepts TCP but never answers), slow drip, garbage and
//! 503 all count as failures. After a failure the endpoint is probed again after the shorter
//! `fast_interval`, so that a dead site is confirmed within the failure budget rather than
//! after several full intervals.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::select::{Endpoint, Failure, Outcome, Sample, Site};
use crate::state::SiteState;

#[cfg(test)]
mod tests;

/// Largest readiness answer read; a bigger one is a protocol failure.
const MAX_ANSWER: usize = 64 * 1024;

/// The URL scheme of probes. Gateways speak HTTPS; plain HTTP is for tests and for gateways
/// behind a local TLS terminator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

/// The settings of probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub scheme: Scheme,
    /// Default `/readyz`.
    pub path: String,
    /// Time between the starts of two probes of a healthy endpoint. Default 1 s.
    pub interval: Duration,
    /// Time between the starts of two probes after a failure. Default 200 ms.
    pub fast_interval: Duration,
    /// A probe without a complete answer by then has failed. Default 800 ms.
    pub timeout: Duration,
    /// PEM certificates of the CA that issued the gateways' certificates. When given, only
    /// these are trusted; otherwise the built-in web roots are.
    pub ca_pem: Option<Vec<u8>>,
    /// The enrolled device's certificate and key (PEM, one after the other): probes present
    /// them like user connections do.
    pub client_identity_pem: Option<Vec<u8>>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            scheme: Scheme::Https,
            path: "/readyz".to_owned(),
            // 500 ms: a brownout is noticed within the 3 s target however the slowdown falls
            // against the probe schedule (measured by bench/failover), at twice the probe
            // traffic of 1 s.
            interval: Duration::from_millis(500),
            fast_interval: Duration::from_millis(200),
            timeout: Duration::from_millis(800),
            ca_pem: None,
            client_identity_pem: None,
        }
    }
}

/// Probing settings or certificates that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("probe setting {field} must be {expected}")]
    Setting {
        field: &'static str,
        expected: &'static str,
    },
    #[error(
        "the gateway CA certificates could not be read ({source}); give a PEM file with one or more CERTIFICATE blocks"
    )]
    Ca {
        #[source]
        source: reqwest::Error,
    },
    #[error("the gateway CA file holds no PEM CERTIFICATE block")]
    EmptyCa,
    #[error("could not set up probing of site {site:?} endpoint {addr}: {source}")]
    Client {
        site: String,
        addr: std::net::SocketAddr,
        #[source]
        source: reqwest::Error,
    },
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<(), ProbeError> {
        let bad = |field, expected| Err(ProbeError::Setting { field, expected });
        if !self.path.starts_with('/') || self.path.chars().any(|c| c.is_whitespace()) {
            return bad("path", "an absolute path such as /readyz");
        }
        if self.interval < Duration::from_millis(10) {
            return bad("interval", "at least 10 ms");
        }
        if self.fast_interval.is_zero() || self.fast_interval > self.interval {
            return bad("fast_interval", "more than zero and at most interval");
        }
        if self.timeout.is_zero() {
            return bad("timeout", "more than zero");
        }
        Ok(())
    }
}

/// The prober of one endpoint.
#[derive(Clone, Debug)]
pub struct EndpointProbe {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl EndpointProbe {
    /// A prober that connects to `addr` whatever `site.host` resolves to.
    pub fn new(
        site: &Site,
        addr: std::net::SocketAddr,
        cfg: &ProbeConfig,
    ) -> Result<Self, ProbeError> {
        let client_err = |source| ProbeError::Client {
            site: site.name.clone(),
            addr,
            source,
        };
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // A new connection per probe: the path a new user connection takes.
            .pool_max_idle_per_host(0)
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .resolve(&site.host, addr);
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|source| ProbeError::Ca { source })?;
            if certs.is_empty() {
                return Err(ProbeError::EmptyCa);
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some(pem) = &cfg.client_identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem).map_err(client_err)?);
        }
        let client = builder.build().map_err(client_err)?;
        let scheme = match cfg.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        Ok(Self {
            client,
            url: format!("{scheme}://{}:{}{}", site.host, addr.port(), cfg.path),
            timeout: cfg.timeout,
        })
    }

    /// The URL probed (its host is resolved to the endpoint's address).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one probe and waits for its complete answer, at most the timeout.
    pub async fn probe(&self) -> Outcome {
        let start = tokio::time::Instant::now();
        let exchange = async {
            let mut resp = self.client.get(&self.url).send().await?;
            let status = resp.status();
            let mut read = 0usize;
            while let Some(chunk) = resp.chunk().await? {
                read = read.saturating_add(chunk.len());
                if read > MAX_ANSWER {
                    return Ok(Err(Failure::Protocol));
                }
            }
            Ok::<_, reqwest::Error>(Ok(status))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Failed(Failure::Timeout),
            Ok(Err(e)) => Outcome::Failed(classify(&e)),
            Ok(Ok(Err(f))) => Outcome::Failed(f),
            Ok(Ok(Ok(status))) if status.is_success() => Outcome::Ok {
                latency: start.elapsed(),
            },
            Ok(Ok(Ok(status))) => Outcome::Failed(Failure::Status(status.as_u16())),
        }
    }
}

fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Connect
    } else {
        Failure::Protocol
    }
}

/// The running probers of all endpoints. Dropping it stops them.
#[derive(Debug)]
pub struct Probers {
    tasks: JoinSet<()>,
}

impl Probers {
    /// Starts one prober per endpoint of every site, recording into `state`.
    pub fn start(
        state: &Arc<SiteState>,
        sites: &[Site],
        cfg: &ProbeConfig,
    ) -> Result<Self, ProbeError> {
        cfg.validate()?;
        let mut probes = Vec::new();
        for site in sites {
            for &addr in &site.endpoints {
                let endpoint = Endpoint {
                    site: site.name.clone(),
                    addr,
                };
                probes.push((endpoint, EndpointProbe::new(site, addr, cfg)?));
            }
        }
        let mut tasks = JoinSet::new();
        for (endpoint, probe) in probes {
            tasks.spawn(run(
                state.clone(),
                endpoint,
                probe,
                cfg.interval,
                cfg.fast_interval,
            ));
        }
        Ok(Self { tasks })
    }

    /// Stops every prober.
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

async fn run(
    state: Arc<SiteState>,
    endpoint: Endpoint,
    probe: EndpointProbe,
    interval: Duration,
    fast_interval: Duration,
) {
    loop {
        let started = tokio::time::Instant::now();
        let at = state.now();
        let outcome = probe.probe().await;
        if let Outcome::Failed(f) = outcome {
            tracing::debug!(site = %endpoint.site, addr = %endpoint.addr, failure = %f, "probe failed");
        }
        let wait = match outcome {
            Outcome::Ok { .. } => interval,
            Outcome::Failed(_) => fast_interval,
        };
        state.record(
            endpoint.clone(),
            Sample {
                at,
                outcome,
                source: crate::select::Source::Probe,
            },
        );
        tokio::time::sleep_until(started + wait).await;
    }
}
