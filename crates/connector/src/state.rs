//! The connector's shared site state: the site list, the probe history, exclusions and
//! load-shedding hints, the current choice and the last switches, behind one lock.
//!
//! Probers and the proxy record results here; [`SiteState::evaluate`] runs the pure
//! [`select`] with the clock's `now` and publishes the [`Selection`] on a watch channel. Readers
//! (the proxy for every new connection, tunnels waiting for their site to become unusable)
//! never take the lock; watchers are woken only when routing changes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::select::{
    Current, Endpoint, Exclusion, Failure, History, Input, InvalidConfig, Reason, Sample,
    SelectConfig, Selection, Shed, Site, Source, Time, select, validate_sites,
};

#[cfg(test)]
mod tests;

/// How many switches `connect status` can show.
const KEEP_SWITCHES: usize = 32;

/// Traffic failures of one endpoint closer together than this are recorded once: a burst of
/// refused connections is one observation, not a flood.
const TRAFFIC_FAILURE_SPACING: Duration = Duration::from_millis(20);

/// A monotonic clock expressed as Unix time: the wall clock read once at start-up plus the
/// monotonic time since. Wall-clock jumps do not disturb probe windows, and exclusion expiry
/// times from the control plane compare correctly (to within the drift since start-up).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
    start_unix_ms: u64,
}

impl Clock {
    pub fn system() -> Self {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            start: std::time::Instant::now(),
            start_unix_ms,
        }
    }

    pub fn now(&self) -> Time {
        Time::from_unix_ms(self.start_unix_ms).plus(self.start.elapsed())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

/// A change of the chosen site.
#[derive(Clone, Debug, PartialEq)]
pub struct Switch {
    pub at: Time,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Reason,
}

/// What `tsuzuku connect status` shows.
#[derive(Clone, Debug)]
pub struct Status {
    /// The latest decision: the site in use, why, and every site's health, latency and loss.
    pub selection: Arc<Selection>,
    /// The last switches, oldest first.
    pub switches: Vec<Switch>,
}

impl std::fmt::Display for Status {
    /// The text of `tsuzuku connect status`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sel = &self.selection;
        match &sel.site {
            Some(site) => writeln!(f, "site in use: {site} ({})", sel.reason)?,
            None => writeln!(f, "site in use: none ({})", sel.reason)?,
        }
        for v in &sel.sites {
            let latency = v
                .latency
                .map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis()));
            let loss = v
                .loss
                .map_or_else(|| "-".to_owned(), |l| format!("{:.1}%", l * 100.0));
            write!(
                f,
                "  {} (preference {}): {}, latency {latency}, loss {loss}",
                v.name, v.preference, v.health
            )?;
            if let Some(x) = &v.excluded {
                write!(f, ", excluded until {}", x.until)?;
            }
            if v.shedding {
                write!(f, ", shedding load")?;
            }
            writeln!(f)?;
            for e in &v.endpoints {
                let state = if e.live {
                    "live".to_owned()
                } else {
                    e.health.to_string()
                };
                writeln!(f, "    {} {state}", e.addr)?;
            }
        }
        if !self.switches.is_empty() {
            writeln!(f, "last switches:")?;
            for s in &self.switches {
                writeln!(
                    f,
                    "  {} {} -> {}: {}",
                    s.at,
                    s.from.as_deref().unwrap_or("none"),
                    s.to.as_deref().unwrap_or("none"),
                    s.reason
                )?;
            }
        }
        Ok(())
    }
}

struct Inner {
    sites: Vec<Site>,
    config: SelectConfig,
    history: History,
    exclusions: Vec<Exclusion>,
    sheds: Vec<Shed>,
    current: Option<Current>,
    switches: VecDeque<Switch>,
}

/// The shared state. Create with [`SiteState::new`]; share as `Arc<SiteState>`.
pub struct SiteState {
    clock: Clock,
    inner: Mutex<Inner>,
    tx: watch::Sender<Arc<Selection>>,
}

impl SiteState {
    /// Checks the site list and settings and makes the first selection (with no probe results
    /// yet it is the most preferred site).
    pub fn new(
        sites: Vec<Site>,
        config: SelectConfig,
        clock: Clock,
    ) -> Result<Arc<Self>, InvalidConfig> {
        validate_sites(&sites)?;
        config.validate()?;
        let mut inner = Inner {
            sites,
            config,
            history: History::new(),
            exclusions: Vec::new(),
            sheds: Vec::new(),
            current: None,
            switches: VecDeque::new(),
        };
        let first = Self::decide(&mut inner, clock.now());
        let (tx, _) = watch::channel(Arc::new(first));
        Ok(Arc::new(Self {
            clock,
            inner: Mutex::new(inner),
            tx,
        }))
    }

    pub fn now(&self) -> Time {
        self.clock.now()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a probe result (or a failed connection) and re-evaluates.
    pub fn record(&self, endpoint: Endpoint, sample: Sample) {
        {
            let mut inner = self.lock();
            if sample.source == Source::Traffic
                && inner.history.last(&endpoint).is_some_and(|last| {
                    last.source == Source::Traffic
                        && sample.at.since(last.at) < TRAFFIC_FAILURE_SPACING
                })
            {
                return;
            }
            inner.history.record(endpoint, sample);
        }
        self.evaluate();
    }

    /// Records that user traffic could not connect to an endpoint.
    pub fn report_traffic_failure(&self, endpoint: Endpoint, failure: Failure) {
        let sample = Sample::traffic_failure(self.now(), failure);
        self.record(endpoint, sample);
    }

    /// Replaces the site list (for example after a signed refresh from the control plane).
    /// History of endpoints that remain is kept.
    pub fn set_sites(&self, sites: Vec<Site>) -> Result<(), InvalidConfig> {
        validate_sites(&sites)?;
        self.lock().sites = sites;
        self.evaluate();
        Ok(())
    }

    pub fn sites(&self) -> Vec<Site> {
        self.lock().sites.clone()
    }

    /// Replaces the operators' exclusions.
    pub fn set_exclusions(&self, exclusions: Vec<Exclusion>) {
        self.lock().exclusions = exclusions;
        self.evaluate();
    }

    /// Replaces the sites' load-shedding hints.
    pub fn set_sheds(&self, sheds: Vec<Shed>) {
        self.lock().sheds = sheds;
        self.evaluate();
    }

    /// Decides again with the current time and publishes the result. Called after every
    /// recorded result and by a ticker, so that time-based changes (hold-down over, exclusion
    /// expired, an endpoint gone quiet) take effect without a new result.
    pub fn evaluate(&self) -> Arc<Selection> {
        let mut inner = self.lock();
        let selection = Arc::new(Self::decide(&mut inner, self.clock.now()));
        // Published under the lock, so that decisions are published in the order they were made.
        let published = selection.clone();
        self.tx.send_if_modified(|old| {
            let changed = !old.same_routing(&published);
            *old = published;
            changed
        });
        drop(inner);
        selection
    }

    fn decide(inner: &mut Inner, now: Time) -> Selection {
        let keep_after = now.minus(inner.config.retention());
        let Inner {
            sites,
            config,
            history,
            exclusions,
            sheds,
            current,
            switches,
        } = inner;
        history.prune(keep_after, sites);
        exclusions.retain(|x| x.until > now);
        sheds.retain(|x| x.until > now);
        let selection = select(&Input {
            sites,
            history,
            exclusions,
            sheds,
            current: current.as_ref(),
            config,
            now,
        });
        let before = current.as_ref().map(|c| c.site.clone());
        if before != selection.site {
            if before.is_some() || !switches.is_empty() {
                switches.push_back(Switch {
                    at: now,
                    from: before,
                    to: selection.site.clone(),
                    reason: selection.reason.clone(),
                });
                while switches.len() > KEEP_SWITCHES {
                    switches.pop_front();
                }
            }
            *current = selection
                .site
                .clone()
                .map(|site| Current { site, since: now });
        }
        selection
    }

    /// The latest decision (without deciding again).
    pub fn selection(&self) -> Arc<Selection> {
        self.tx.borrow().clone()
    }

    /// A receiver that is woken when routing changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Selection>> {
        self.tx.subscribe()
    }

    /// What `tsuzuku connect status` shows.
    pub fn status(&self) -> Status {
        let switches = self.lock().switches.iter().cloned().collect();
        Status {
            selection: self.selection(),
            switches,
        }
    }
}
