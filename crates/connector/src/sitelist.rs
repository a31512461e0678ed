//! The signed site list from the control plane (issue 4 items 2 and 6): gateway sites and
//! operators' time-limited exclusions. The connector long-polls `GET /v1/sites`, verifies each
//! list (the control plane's Ed25519 key, its tenant, a version newer than the one in use),
//! keeps the last good one on disk so it starts while the control plane is unreachable, and
//! hands new lists to the running connector. A refused list changes nothing and is reported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tsuzuku_snapshot::{
    SiteListBody, SnapshotError, TrustedKeys, VerifiedSites, cache::write_atomic, verify_sites,
};

use crate::select::{Exclusion, Site, Time};

/// Where the site list comes from and where its copy is kept.
#[derive(Clone)]
pub struct SiteListSource {
    /// Base URL of the control plane, `https://…`.
    pub control_url: String,
    /// Keys site lists must be signed with (the trust file, re-read when it changes).
    pub trusted: std::sync::Arc<tsuzuku_snapshot::TrustFile>,
    pub tenant: String,
    /// Extra CA (PEM) for the control plane's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// The last good list (signed, not secret), replaced atomically.
    pub cache_file: PathBuf,
}

impl std::fmt::Debug for SiteListSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteListSource")
            .field("control_url", &self.control_url)
            .field("cache_file", &self.cache_file)
            .finish_non_exhaustive()
    }
}

/// A verified list in the connector's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteList {
    pub version: i64,
    pub sites: Vec<Site>,
    pub exclusions: Vec<Exclusion>,
    /// Sites over their load threshold: prefer others while the hint lasts.
    pub sheds: Vec<crate::select::Shed>,
    /// The customer's DR gateway, for disaster-recovery mode.
    pub dr_gateway: Option<crate::dr::DrGateway>,
    /// Host names of the critical apps (go to the DR gateway in DR mode).
    pub critical_hosts: Vec<String>,
}

/// Why a site list cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteListError {
    #[error(transparent)]
    Signature(#[from] SnapshotError),
    #[error("site {site:?}: endpoint {endpoint:?} is not IP:PORT")]
    Endpoint { site: String, endpoint: String },
    #[error("site {site:?}: preference {preference} is out of range")]
    Preference { site: String, preference: i64 },
    #[error("the list has no sites")]
    Empty,
    #[error("control plane: {0}")]
    Fetch(String),
}

/// Converts a verified list (pure).
pub fn convert(body: &SiteListBody) -> Result<SiteList, SiteListError> {
    if body.sites.is_empty() {
        return Err(SiteListError::Empty);
    }
    let sites = body
        .sites
        .iter()
        .map(|s| {
            let endpoints = s
                .endpoints
                .iter()
                .map(|e| {
                    e.parse::<SocketAddr>()
                        .map_err(|_| SiteListError::Endpoint {
                            site: s.name.clone(),
                            endpoint: e.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Site {
                name: s.name.clone(),
                preference: u32::try_from(s.preference).map_err(|_| SiteListError::Preference {
                    site: s.name.clone(),
                    preference: s.preference,
                })?,
                host: s.host.clone(),
                endpoints,
            })
        })
        .collect::<Result<Vec<_>, SiteListError>>()?;
    crate::select::validate_sites(&sites)
        .map_err(|e| SiteListError::Fetch(format!("the site list is not usable: {e}")))?;
    let exclusions = body
        .exclusions
        .iter()
        .map(|e| Exclusion {
            site: e.site.clone(),
            until: Time::from_unix_ms(u64::try_from(e.until_ms).unwrap_or(0)),
            reason: e.reason.clone(),
        })
        .collect();
    let sheds = body
        .shedding
        .iter()
        .map(|s| crate::select::Shed {
            site: s.site.clone(),
            until: Time::from_unix_ms(u64::try_from(s.until_ms).unwrap_or(0)),
        })
        .collect();
    let dr_gateway = match &body.dr_gateway {
        None => None,
        Some(g) => Some(crate::dr::DrGateway {
            host: g.host.clone(),
            endpoints: g
                .endpoints
                .iter()
                .map(|e| {
                    e.parse::<SocketAddr>()
                        .map_err(|_| SiteListError::Endpoint {
                            site: g.name.clone(),
                            endpoint: e.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        }),
    };
    Ok(SiteList {
        version: body.version,
        sites,
        exclusions,
        sheds,
        dr_gateway,
        critical_hosts: body.critical_hosts.clone(),
    })
}

/// The DR gateway and critical app hosts a connector uses with `list`: the locally configured
/// gateway (`tsuzuku connect --dr-gateway`) over the list's, the local critical hosts plus the
/// list's (without their ports: connectors match host names), in that order, without
/// repeats. `None` when neither names a DR gateway. Pure.
pub fn dr_targets(
    list: Option<&SiteList>,
    local_gateway: Option<&crate::dr::DrGateway>,
    local_critical: &[String],
) -> Option<(crate::dr::DrGateway, Vec<String>)> {
    let gateway = local_gateway
        .cloned()
        .or_else(|| list.and_then(|l| l.dr_gateway.clone()))?;
    let mut critical: Vec<String> = Vec::new();
    let from_list = list
        .map(|l| l.critical_hosts.as_slice())
        .unwrap_or_default();
    for h in local_critical.iter().chain(from_list) {
        let name = match h.rsplit_once(':') {
            Some((n, port)) if !n.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => h.as_str(),
        };
        if !critical.iter().any(|c| c == name) {
            critical.push(name.to_owned());
        }
    }
    Some((gateway, critical))
}

/// The copy on disk, verified again (a file is never trusted for being there).
pub fn load_cached(source: &SiteListSource) -> Result<Option<SiteList>, SiteListError> {
    let bytes = match std::fs::read(&source.cache_file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SiteListError::Fetch(format!(
                "cannot read {}: {e}",
                source.cache_file.display()
            )));
        }
    };
    let v = verify_sites(&bytes, &trusted_now(source), &source.tenant, None)?;
    convert(&v.body).map(Some)
}

/// The keys to verify with now (a changed trust file is read again; a bad one is reported and
/// the keys trusted before stay).
fn trusted_now(source: &SiteListSource) -> TrustedKeys {
    let (keys, problem) = source.trusted.keys();
    if let Some(p) = problem {
        tracing::error!(problem = %p, "the site-list trust file changed but cannot be used");
    }
    keys
}

fn client(source: &SiteListSource) -> Result<reqwest::Client, SiteListError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(40))
        .https_only(true)
        .min_tls_version(reqwest::tls::Version::TLS_1_2);
    if let Some(pem) = &source.ca_pem {
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(pem)
                .map_err(|e| SiteListError::Fetch(format!("the CA file is not PEM: {e}")))?,
        );
    }
    b.build()
        .map_err(|e| SiteListError::Fetch(format!("cannot build the HTTPS client: {e}")))
}

/// One long-poll: `None` when nothing newer came within `wait_secs`.
async fn fetch(
    client: &reqwest::Client,
    source: &SiteListSource,
    after: Option<i64>,
    wait_secs: u64,
) -> Result<Option<(VerifiedSites, SiteList)>, SiteListError> {
    let mut url = format!(
        "{}/v1/sites?wait={wait_secs}",
        source.control_url.trim_end_matches('/')
    );
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    let resp =
        client.get(&url).send().await.map_err(|e| {
            SiteListError::Fetch(format!("unreachable: {}", crate::error_chain(&e)))
        })?;
    match resp.status().as_u16() {
        204 => Ok(None),
        200 => {
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| SiteListError::Fetch(format!("download failed: {e}")))?;
            let v = match verify_sites(&bytes, &trusted_now(source), &source.tenant, after) {
                Ok(v) => v,
                Err(SnapshotError::NotNewer { got, have }) if got == have => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let list = convert(&v.body)?;
            Ok(Some((v, list)))
        }
        s => Err(SiteListError::Fetch(format!("answered HTTP {s}"))),
    }
}

/// Start-up: the newer of the disk copy and one fetch within `timeout`. `Ok(None)` when neither
/// gives a list.
///
/// Errors: [`SiteListError::Empty`] when there is no disk copy and the control plane answered
/// with a list that has no (ordinary) gateway sites — it answered, but there is nothing to use.
pub async fn initial(
    source: &SiteListSource,
    timeout: Duration,
) -> Result<Option<SiteList>, SiteListError> {
    let cached = match load_cached(source) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, file = %source.cache_file.display(), "the site list on disk was refused");
            None
        }
    };
    let c = client(source)?;
    let after = cached.as_ref().map(|l| l.version);
    match tokio::time::timeout(timeout, fetch(&c, source, after, 0)).await {
        Ok(Ok(Some((v, list)))) => {
            save(source, &v);
            Ok(Some(list))
        }
        Ok(Ok(None)) => Ok(cached),
        Ok(Err(SiteListError::Empty)) if cached.is_none() => Err(SiteListError::Empty),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "no site list from the control plane at start");
            Ok(cached)
        }
        Err(_) => {
            tracing::warn!("the control plane did not answer at start");
            Ok(cached)
        }
    }
}

fn save(source: &SiteListSource, v: &VerifiedSites) {
    if let Err(e) = write_atomic(&source.cache_file, &v.bytes) {
        tracing::error!(error = %e, "cannot keep the site list on disk; the previous copy stays");
    }
}

/// The newest verified site list, as the feed publishes it.
pub type SiteLists = watch::Receiver<Option<Arc<SiteList>>>;

/// Follows the control plane from `start` on: every verified newer list is saved and sent.
pub fn spawn(
    source: SiteListSource,
    start: Option<SiteList>,
) -> Result<(SiteLists, tokio::task::JoinHandle<()>), SiteListError> {
    let c = client(&source)?;
    let (tx, rx) = watch::channel(start.map(Arc::new));
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        let mut last_problem: Option<String> = None;
        loop {
            let have = tx.borrow().as_ref().map(|l| l.version);
            match fetch(&c, &source, have, 25).await {
                Ok(Some((v, list))) => {
                    save(&source, &v);
                    tracing::info!(
                        version = list.version,
                        sites = list.sites.len(),
                        exclusions = list.exclusions.len(),
                        "new site list"
                    );
                    if tx.send(Some(Arc::new(list))).is_err() {
                        return;
                    }
                    last_problem = None;
                    backoff = Duration::from_millis(500);
                }
                Ok(None) => {
                    last_problem = None;
                    backoff = Duration::from_millis(500);
                }
                Err(e) => {
                    let msg = e.to_string();
                    if last_problem.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(problem = %msg, "site list");
                    }
                    last_problem = Some(msg);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok((rx, task))
}

/// What a connector tells the control plane about its experience (JSON body of
/// `POST /v1/report`), built from its status and, when DR mode is configured, its DR state
/// (`dr`: `state` normal/active/returning, `drill`, `since_ms`) (pure).
pub fn report_body(
    device: &str,
    status: &crate::state::Status,
    dr: Option<&crate::dr::DrStatus>,
) -> String {
    let sel = &status.selection;
    let view = sel
        .site
        .as_ref()
        .and_then(|s| sel.sites.iter().find(|v| &v.name == s));
    let latency = view
        .and_then(|v| v.latency)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let loss = view
        .and_then(|v| v.loss)
        .map(|l| (l * 100.0).round().clamp(0.0, 100.0) as i64);
    let mut body = serde_json::json!({
        "device": device,
        "site": sel.site,
        "latency_ms": latency,
        "loss_pct": loss,
        "switches": status.switches.len(),
    });
    if let (Some(dr), Some(obj)) = (dr, body.as_object_mut()) {
        let state = match dr.phase {
            crate::dr::Phase::Normal => "normal",
            crate::dr::Phase::Active(_) => "active",
            crate::dr::Phase::Returning => "returning",
        };
        obj.insert(
            "dr".into(),
            serde_json::json!({
                "state": state,
                "drill": dr.drill(),
                "since_ms": dr.since.saturating_mul(1000),
            }),
        );
    }
    body.to_string()
}

/// Sends a report every `every` until the task is aborted; failures are logged once each.
pub fn spawn_reports(
    source: &SiteListSource,
    device: String,
    every: Duration,
    status: impl Fn() -> (crate::state::Status, Option<Arc<crate::dr::DrStatus>>) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, SiteListError> {
    let c = client(source)?;
    let url = format!("{}/v1/report", source.control_url.trim_end_matches('/'));
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut failing = false;
        loop {
            tick.tick().await;
            let (site_status, dr) = status();
            let body = report_body(&device, &site_status, dr.as_deref());
            let sent = c
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => failing = false,
                Ok(r) if !failing => {
                    failing = true;
                    tracing::warn!(status = %r.status(), "the control plane refused the experience report");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot send the experience report");
                }
                _ => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use tsuzuku_snapshot::{ExclusionEntry, SiteEntry};

    fn body() -> SiteListBody {
        SiteListBody {
            format: 1,
            tenant: "default".into(),
            version: 3,
            issued_at_ms: 3,
            sites: vec![SiteEntry {
                name: "tokyo".into(),
                host: "gw.example".into(),
                endpoints: vec!["192.0.2.1:443".into(), "192.0.2.2:443".into()],
                preference: 1,
            }],
            exclusions: vec![ExclusionEntry {
                site: "tokyo".into(),
                until_ms: 5_000,
                reason: "maintenance".into(),
            }],
            shedding: vec![],
            dr_gateway: None,
            critical_hosts: vec![],
        }
    }

    #[test]
    fn converts_sites_and_exclusions() {
        let l = convert(&body()).unwrap();
        assert_eq!(l.version, 3);
        assert_eq!(l.sites[0].endpoints.len(), 2);
        assert_eq!(l.exclusions[0].until, Time::from_unix_ms(5_000));
    }

    #[test]
    fn carries_the_dr_gateway_and_critical_hosts() {
        let mut b = body();
        b.dr_gateway = Some(SiteEntry {
            name: "dr".into(),
            host: "dr.example".into(),
            endpoints: vec!["10.0.0.5:443".into()],
            preference: 0,
        });
        b.critical_hosts = vec!["payroll.example".into()];
        let l = convert(&b).unwrap();
        let g = l.dr_gateway.unwrap();
        assert_eq!(g.host, "dr.example");
        assert_eq!(g.endpoints, ["10.0.0.5:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(l.critical_hosts, ["payroll.example"]);
        b.dr_gateway.as_mut().unwrap().endpoints[0] = "dr:443".into();
        assert!(matches!(convert(&b), Err(SiteListError::Endpoint { .. })));
    }

    #[test]
    fn dr_targets_take_the_local_gateway_first_and_join_the_critical_hosts() {
        let dr = |host: &str| crate::dr::DrGateway {
            host: host.into(),
            endpoints: vec!["10.0.0.5:443".parse().unwrap()],
        };
        let mut b = body();
        b.dr_gateway = Some(SiteEntry {
            name: "dr".into(),
            host: "dr.example".into(),
            endpoints: vec!["10.0.0.5:443".into()],
            preference: 0,
        });
        b.critical_hosts = vec!["payroll.example:8443".into(), "crm.example".into()];
        let l = convert(&b).unwrap();
        // From the list alone; ports dropped.
        let (g, c) = dr_targets(Some(&l), None, &[]).unwrap();
        assert_eq!(g, dr("dr.example"));
        assert_eq!(c, ["payroll.example", "crm.example"]);
        // Local settings first; no repeats.
        let local = vec!["crm.example".to_owned(), "wiki.example".to_owned()];
        let (g, c) = dr_targets(Some(&l), Some(&dr("local-dr.example")), &local).unwrap();
        assert_eq!(g, dr("local-dr.example"));
        assert_eq!(c, ["crm.example", "wiki.example", "payroll.example"]);
        // A list without a DR gateway: only a local one counts.
        b.dr_gateway = None;
        let l = convert(&b).unwrap();
        assert_eq!(dr_targets(Some(&l), None, &local), None);
        assert_eq!(dr_targets(None, None, &local), None);
        let (_, c) = dr_targets(None, Some(&dr("x")), &local).unwrap();
        assert_eq!(c, local);
    }

    #[test]
    fn refuses_bad_endpoints_preferences_and_empty_lists() {
        let mut b = body();
        b.sites[0].endpoints[0] = "gw:443".into();
        assert!(matches!(convert(&b), Err(SiteListError::Endpoint { .. })));
        let mut b = body();
        b.sites[0].preference = -1;
        assert!(matches!(convert(&b), Err(SiteListError::Preference { .. })));
        let mut b = body();
        b.sites.clear();
        assert!(matches!(convert(&b), Err(SiteListError::Empty)));
    }

    #[test]
    fn the_disk_copy_is_verified_again() {
        let dir = tempfile::tempdir().unwrap();
        let signer = tsuzuku_snapshot::SnapshotSigner::generate();
        let source = SiteListSource {
            control_url: "https://127.0.0.1:1".into(),
            trusted: std::sync::Arc::new(tsuzuku_snapshot::TrustFile::fixed(TrustedKeys::single(
                &signer,
            ))),
            tenant: "default".into(),
            ca_pem: None,
            cache_file: dir.path().join("sites.json"),
        };
        assert!(load_cached(&source).unwrap().is_none());
        std::fs::write(&source.cache_file, signer.sign_sites(&body()).unwrap()).unwrap();
        assert_eq!(load_cached(&source).unwrap().unwrap().version, 3);
        // Signed by another key: refused.
        let other = tsuzuku_snapshot::SnapshotSigner::generate();
        std::fs::write(&source.cache_file, other.sign_sites(&body()).unwrap()).unwrap();
        assert!(matches!(
            load_cached(&source),
            Err(SiteListError::Signature(SnapshotError::UnknownKey { .. }))
        ));
    }
}
