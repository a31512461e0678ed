//! The whole connector in one handle: site state, probers, the re-evaluation ticker and the
//! local proxy, started together and stopped together. This is what `tsuzuku connect` runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::dr::{DrConfig, DrError, DrStatus, DrWatcher};
use crate::probe::{ProbeConfig, ProbeError, Probers};
use crate::proxy::{Proxy, ProxyConfig, ProxyError};
use crate::select::{Exclusion, InvalidConfig, SelectConfig, Shed, Site, human};
use crate::state::{Clock, SiteState, Status};

#[cfg(test)]
mod tests;

/// Everything the connector needs to run.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// The gateway sites (from the control plane's signed site list, or the local copy).
    pub sites: Vec<Site>,
    pub select: SelectConfig,
    pub probe: ProbeConfig,
    pub proxy: ProxyConfig,
    /// How often selection is re-evaluated without a new probe result, so that time-based
    /// changes (hold-down over, exclusion expired, endpoint silent) apply. Default 100 ms.
    pub evaluate_every: Duration,
    /// Disaster-recovery mode: the DR record to watch and what to do in DR mode. `None`: no DR
    /// mode.
    pub dr: Option<DrConfig>,
}

impl ConnectorConfig {
    /// A configuration with the documented defaults for everything but the sites and the app
    /// domains.
    pub fn new(sites: Vec<Site>, app_domains: Vec<String>) -> Self {
        Self {
            sites,
            select: SelectConfig::default(),
            probe: ProbeConfig::default(),
            proxy: ProxyConfig {
                app_domains,
                ..ProxyConfig::default()
            },
            evaluate_every: Duration::from_millis(100),
            dr: None,
        }
    }
}

/// Why the connector could not start or take a new site list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("disaster-recovery mode: {0}")]
    Dr(#[from] DrError),
    #[error("evaluate_every must be more than zero")]
    EvaluateEvery,
    #[error("settings do not fit together: {0}")]
    Inconsistent(String),
}

impl ConnectorConfig {
    /// Checks the settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        if self.evaluate_every.is_zero() {
            return Err(ConnectorError::EvaluateEvery);
        }
        self.probe.validate()?;
        self.select.validate()?;
        let (p, s) = (&self.probe, &self.select);
        if p.timeout >= s.down_after {
            return Err(ConnectorError::Inconsistent(format!(
                "the probe timeout ({}) must be shorter than the failure budget down_after ({}), or one slow probe would count as an outage",
                human(p.timeout),
                human(s.down_after)
            )));
        }
        if p.interval + p.timeout >= s.stale_after {
            return Err(ConnectorError::Inconsistent(format!(
                "stale_after ({}) must be longer than the probe interval plus the probe timeout ({})",
                human(s.stale_after),
                human(p.interval + p.timeout)
            )));
        }
        Ok(())
    }
}

/// A running connector. Dropping it stops everything too, without waiting.
pub struct Connector {
    state: Arc<SiteState>,
    probe_config: ProbeConfig,
    probers: Probers,
    ticker: AbortOnDrop,
    proxy: Proxy,
    dr: Option<DrWatcher>,
}

impl Connector {
    /// Validates everything, starts probing every endpoint and listens on the proxy address.
    pub async fn start(config: ConnectorConfig) -> Result<Self, ConnectorError> {
        config.validate()?;
        let state = SiteState::new(config.sites.clone(), config.select, Clock::system())?;
        let dr = match config.dr {
            Some(dr) => Some(DrWatcher::start(dr, state.clone())?),
            None => None,
        };
        let proxy = Proxy::bind_with_dr(
            config.proxy,
            state.clone(),
            dr.as_ref().map(DrWatcher::link),
        )
        .await?;
        let probers = Probers::start(&state, &config.sites, &config.probe)?;
        let ticker = {
            let state = state.clone();
            let every = config.evaluate_every;
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    state.evaluate();
                }
            }))
        };
        Ok(Self {
            state,
            probe_config: config.probe,
            probers,
            ticker,
            proxy,
            dr,
        })
    }

    /// The proxy's address (`127.0.0.1:PORT`).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    /// The PAC file's URL, for the browser's automatic proxy configuration.
    pub fn pac_url(&self) -> String {
        self.proxy.pac_url()
    }

    /// The site in use, why, every site's health, latency and loss, and the last switches.
    pub fn status(&self) -> Status {
        self.state.status()
    }

    /// The disaster-recovery state, when DR mode is configured.
    pub fn dr_status(&self) -> Option<Arc<DrStatus>> {
        self.dr.as_ref().map(DrWatcher::status)
    }

    /// The DR state's feed, for tasks that follow DR mode (the posture reporter).
    pub fn dr_link(&self) -> Option<crate::dr::DrLink> {
        self.dr.as_ref().map(DrWatcher::link)
    }

    /// Looks the DR record up now (after a network change) instead of at the next interval.
    pub fn recheck_dr(&self) {
        if let Some(dr) = &self.dr {
            dr.recheck_now();
        }
    }

    /// Replaces the DR gateway and the critical app hosts (from a new signed site list) while
    /// running; see [`DrWatcher::set_targets`]. `Ok(false)` when nothing changed or DR mode is
    /// not configured.
    pub fn set_dr_targets(
        &self,
        gateway: crate::dr::DrGateway,
        critical_hosts: Vec<String>,
    ) -> Result<bool, ConnectorError> {
        match &self.dr {
            Some(dr) => Ok(dr.set_targets(gateway, critical_hosts)?),
            None => Ok(false),
        }
    }

    /// Open tunnels per site.
    pub fn open_tunnels(&self) -> std::collections::BTreeMap<String, usize> {
        self.proxy.open_tunnels()
    }

    /// The shared state, for callers that record or inspect directly.
    pub fn state(&self) -> &Arc<SiteState> {
        &self.state
    }

    /// Takes a new site list (after a configuration refresh) and re-starts probing for it.
    pub fn set_sites(&mut self, sites: Vec<Site>) -> Result<(), ConnectorError> {
        let probers = Probers::start(&self.state, &sites, &self.probe_config)?;
        self.state.set_sites(sites)?;
        std::mem::replace(&mut self.probers, probers).stop();
        Ok(())
    }

    /// Takes the operators' current exclusions (replacing the previous ones).
    pub fn set_exclusions(&self, exclusions: Vec<Exclusion>) {
        self.state.set_exclusions(exclusions);
    }

    /// Takes the sites' current load-shedding hints (replacing the previous ones).
    pub fn set_sheds(&self, sheds: Vec<Shed>) {
        self.state.set_sheds(sheds);
    }

    /// Stops probing and the proxy, closing every tunnel.
    pub async fn shutdown(self) {
        drop(self.ticker);
        drop(self.dr);
        self.probers.stop();
        self.proxy.shutdown().await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
