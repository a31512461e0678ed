//! Site selection: which gateway site the connector uses now, and why.
//!
//! [`select`] is a pure function of the configured sites, the probe history of every gateway
//! endpoint, the operators' exclusions, the sites' load-shedding hints, the current choice, the
//! settings and a clock value `now`. It does no IO and reads no clock: the runtime
//! (`state.rs`) feeds it, and the tests drive it with a simulated clock.
//!
//! The rules, in order:
//!
//! 1. **Health.** An endpoint is *down* after `down_after_misses` failed results in a row
//!    (probes, and connection attempts of user traffic), or when it has been failing for
//!    `down_after` since the sending of the first failed probe with no good answer since, or
//!    when nothing was heard from it for `stale_after`. One good answer makes it healthy
//!    again. A site is healthy when any of its endpoints is. Down sites are never chosen while
//!    another is not down.
//! 2. **Exclusion.** A site excluded by an operator is left at once and not chosen until the
//!    exclusion expires; then it is an ordinary site again and traffic returns by itself.
//! 3. **Load shedding.** A site that sheds load ranks after every site that does not.
//! 4. **Preference, then latency.** The most preferred site wins unless a less preferred one has
//!    been faster by more than `latency_margin` at every point of the last `sustained` window
//!    (smoothed latency, EWMA with `smoothing`).
//! 5. **Hysteresis.** Leaving a site that is down, excluded or shedding is immediate. Any other
//!    switch needs the current site to have been in use for `min_dwell`; a switch back to a
//!    more preferred site also needs that site to have been healthy for `hold_down` and to have
//!    been no slower than the current one by more than `return_margin` over the whole
//!    `sustained` window. Jitter that crosses the margin now and then therefore moves nobody.
//!
//! Within the chosen site new connections are spread over its live endpoints (those whose last
//! result was good); an endpoint whose last result failed is skipped at once, before the site
//! as a whole counts as down ([`Selection::attempts`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tsuzuku_dr::allowlist::check_dns_name;

#[cfg(test)]
mod tests;

/// A point in time: milliseconds since the Unix epoch. The runtime derives it from a monotonic
/// clock anchored at start-up; tests make it up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    pub const fn from_unix_ms(ms: u64) -> Self {
        Self(ms)
    }

    pub const fn unix_ms(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(millis(d)))
    }

    /// `self - d`, saturating at the epoch.
    #[must_use]
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(millis(d)))
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = i64::try_from(self.0 / 1000).unwrap_or(i64::MAX);
        match jiff::Timestamp::from_second(secs) {
            Ok(ts) => write!(f, "{ts}"),
            Err(_) => write!(f, "{} ms after the epoch", self.0),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Formats a duration for people: "850 ms", "1.2 s", "2 s".
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A gateway site: one or more gateway nodes behind one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Unique name, shown to users and operators ("tokyo", "osaka").
    pub name: String,
    /// Lower is more preferred. Ties are broken by name.
    pub preference: u32,
    /// The gateway's host name: the TLS server name and `Host` of probes.
    pub host: String,
    /// The gateway nodes' addresses (the HTTPS port).
    pub endpoints: Vec<SocketAddr>,
}

/// One gateway node of one site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub site: String,
    pub addr: SocketAddr,
}

/// Why a probe or a connection attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// TCP connect or TLS handshake failed (refused, unreachable, bad certificate).
    Connect,
    /// No complete answer within the timeout (includes gateways that accept and stay silent).
    Timeout,
    /// An answer with a status other than 2xx (a gateway that is not ready says 503).
    Status(u16),
    /// An answer that was not valid HTTP, or too large.
    Protocol,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect => f.write_str("could not connect"),
            Failure::Timeout => f.write_str("no answer within the timeout"),
            Failure::Status(s) => write!(f, "answered HTTP {s}"),
            Failure::Protocol => f.write_str("answer was not valid HTTP"),
        }
    }
}

/// The result of one probe or connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok { latency: Duration },
    Failed(Failure),
}

/// Where a sample came from. Only probes carry latency and count towards loss; failed
/// connection attempts of user traffic count towards health, so a dead node is noticed at the
/// speed of traffic rather than of probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Probe,
    Traffic,
}

/// One timestamped result. `at` is when the probe was *sent*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: Time,
    pub outcome: Outcome,
    pub source: Source,
}

impl Sample {
    pub fn ok(at: Time, latency: Duration) -> Self {
        Self {
            at,
            outcome: Outcome::Ok { latency },
            source: Source::Probe,
        }
    }

    pub fn failed(at: Time, failure: Failure) -> Self {
        Self {
            at,
            outcome: Outcome::Failed(failure),
            source: Source::Probe,
        }
    }

    pub fn traffic_failure(at: Time, failure: Failure) -> Self {
        Self {
            at,
            outcome: Outcome::Failed(failure),
            source: Source::Traffic,
        }
    }
}

/// At most this many samples are kept per endpoint, whatever the retention.
const MAX_SAMPLES: usize = 4096;

/// The probe history of every endpoint, oldest first.
#[derive(Clone, Debug, Default)]
pub struct History {
    samples: BTreeMap<Endpoint, VecDeque<Sample>>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample, keeping each endpoint's samples in time order.
    pub fn record(&mut self, endpoint: Endpoint, sample: Sample) {
        let q = self.samples.entry(endpoint).or_default();
        let pos = q
            .iter()
            .rposition(|s| s.at <= sample.at)
            .map_or(0, |i| i + 1);
        q.insert(pos, sample);
        while q.len() > MAX_SAMPLES {
            q.pop_front();
        }
    }

    /// The samples of one endpoint, oldest first.
    pub fn samples(&self, endpoint: &Endpoint) -> impl Iterator<Item = &Sample> {
        self.samples.get(endpoint).into_iter().flatten()
    }

    /// The newest sample of one endpoint.
    pub fn last(&self, endpoint: &Endpoint) -> Option<&Sample> {
        self.samples.get(endpoint).and_then(|q| q.back())
    }

    /// Forgets samples older than `keep_after` (but always keeps each endpoint's newest, so a
    /// silent endpoint still shows as stale) and endpoints no longer in `sites`.
    pub fn prune(&mut self, keep_after: Time, sites: &[Site]) {
        self.samples.retain(|e, _| {
            sites
                .iter()
                .any(|s| s.name == e.site && s.endpoints.contains(&e.addr))
        });
        for q in self.samples.values_mut() {
            while q.len() > 1 && q.front().is_some_and(|s| s.at < keep_after) {
                q.pop_front();
            }
        }
    }
}

/// An operator's time-limited exclusion of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub site: String,
    /// The exclusion ends at this time; the site is usable again from then on.
    pub until: Time,
    /// Why, as the operator wrote it ("maintenance").
    pub reason: String,
}

/// A site's request to be avoided because it is over its load threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shed {
    pub site: String,
    /// The hint lapses at this time unless renewed.
    pub until: Time,
}

/// The site in use and since when (the time of the last switch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub site: String,
    pub since: Time,
}

/// The settings of selection. [`SelectConfig::default`] gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectConfig {
    /// EWMA weight of the newest latency sample, in (0, 1]. Default 0.5.
    pub smoothing: f64,
    /// A less preferred site wins when the preferred one is slower by more than this over the
    /// sustained window. Default 40 ms.
    pub latency_margin: Duration,
    /// Returning to a more preferred site needs it to be no slower than this over the sustained
    /// window. At most `latency_margin`. Default 10 ms.
    pub return_margin: Duration,
    /// How long a latency difference must hold. Default 2 s.
    pub sustained: Duration,
    /// How long a recovered preferred site must stay healthy before traffic returns. Default 30 s.
    pub hold_down: Duration,
    /// Least time between two switches that are not forced by failure, exclusion or load
    /// shedding. Default 30 s.
    pub min_dwell: Duration,
    /// Failed results in a row that make an endpoint down. Default 3.
    pub down_after_misses: u32,
    /// Time of continuous failure (from the sending of the first failed probe, with no good
    /// answer since) that makes an endpoint down. More than the probe timeout plus one
    /// answer's latency, so that a single lost probe does not. Default 1 s.
    pub down_after: Duration,
    /// An endpoint not heard from for this long is down. More than the probe interval plus the
    /// probe timeout. Default 5 s.
    pub stale_after: Duration,
    /// Loss is the share of failed probes over this window. Default 60 s.
    pub loss_window: Duration,
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            smoothing: 0.5,
            latency_margin: Duration::from_millis(40),
            return_margin: Duration::from_millis(10),
            sustained: Duration::from_secs(2),
            hold_down: Duration::from_secs(30),
            min_dwell: Duration::from_secs(30),
            down_after_misses: 3,
            down_after: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
            loss_window: Duration::from_secs(60),
        }
    }
}

/// A site list or selection setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidConfig {
    #[error("the site list is empty: configure at least one gateway site")]
    NoSites,
    #[error("a site has an empty name: give every site a name such as \"tokyo\"")]
    EmptySiteName,
    #[error("site {0:?} appears twice in the site list: site names must be unique")]
    DuplicateSite(String),
    #[error(
        "site {site:?} has no gateway endpoints: give at least one address such as 192.0.2.10:443"
    )]
    NoEndpoints { site: String },
    #[error(
        "site {site:?}: {host:?} is not a host name ({problem}); give the gateway's DNS name such as gw.example.com"
    )]
    BadHost {
        site: String,
        host: String,
        problem: &'static str,
    },
    #[error("selection setting {field} must be {expected}, not {got}")]
    Setting {
        field: &'static str,
        expected: &'static str,
        got: String,
    },
}

impl SelectConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field, expected, got: String| {
            Err(InvalidConfig::Setting {
                field,
                expected,
                got,
            })
        };
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad(
                "smoothing",
                "a number above 0 and at most 1",
                self.smoothing.to_string(),
            );
        }
        if self.return_margin > self.latency_margin {
            return bad(
                "return_margin",
                "at most latency_margin",
                human(self.return_margin),
            );
        }
        if self.sustained.is_zero() {
            return bad("sustained", "more than zero", human(self.sustained));
        }
        if self.down_after_misses == 0 {
            return bad("down_after_misses", "at least 1", "0".to_owned());
        }
        if self.down_after.is_zero() {
            return bad("down_after", "more than zero", human(self.down_after));
        }
        if self.stale_after <= self.down_after {
            return bad(
                "stale_after",
                "longer than down_after",
                human(self.stale_after),
            );
        }
        Ok(())
    }

    /// How far back history is needed.
    pub fn retention(&self) -> Duration {
        let longest = [
            self.hold_down,
            self.sustained,
            self.loss_window,
            self.min_dwell,
            self.stale_after,
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        // Extra time so the EWMA has warmed up at the start of the sustained window.
        longest + Duration::from_secs(10)
    }
}

/// Checks a site list: unique non-empty names, DNS host names, at least one endpoint each.
pub fn validate_sites(sites: &[Site]) -> Result<(), InvalidConfig> {
    if sites.is_empty() {
        return Err(InvalidConfig::NoSites);
    }
    for (i, s) in sites.iter().enumerate() {
        if s.name.trim().is_empty() {
            return Err(InvalidConfig::EmptySiteName);
        }
        if sites.iter().take(i).any(|o| o.name == s.name) {
            return Err(InvalidConfig::DuplicateSite(s.name.clone()));
        }
        if s.endpoints.is_empty() {
            return Err(InvalidConfig::NoEndpoints {
                site: s.name.clone(),
            });
        }
        if let Err(problem) = check_dns_name(&s.host) {
            return Err(InvalidConfig::BadHost {
                site: s.name.clone(),
                host: s.host.clone(),
                problem,
            });
        }
    }
    Ok(())
}

/// Why an endpoint or a site counts as down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownCause {
    /// This many results in a row failed.
    MissedProbes { count: u32, last: Failure },
    /// Results have been failing for this long.
    FailingFor { duration: Duration, last: Failure },
    /// Nothing heard since this time.
    NoRecentProbe { last_at: Time },
    /// The site has no endpoints.
    NoEndpoints,
}

impl fmt::Display for DownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownCause::MissedProbes { count, last } => {
                write!(f, "missed {count} probes (last: {last})")
            }
            DownCause::FailingFor { duration, last } => {
                write!(f, "failed probes for {} (last: {last})", human(*duration))
            }
            DownCause::NoRecentProbe { last_at } => write!(f, "has not answered since {last_at}"),
            DownCause::NoEndpoints => f.write_str("has no endpoints"),
        }
    }
}

/// Health of an endpoint or a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Nothing decisive heard yet.
    Unknown,
    /// Healthy continuously since this time.
    Healthy {
        since: Time,
    },
    Down(DownCause),
}

impl Health {
    pub fn is_down(&self) -> bool {
        matches!(self, Health::Down(_))
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Unknown => f.write_str("not probed yet"),
            Health::Healthy { .. } => f.write_str("healthy"),
            Health::Down(c) => write!(f, "down: {c}"),
        }
    }
}

/// What selection knows about one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub addr: SocketAddr,
    pub health: Health,
    /// Its last result was good: new connections may go there.
    pub live: bool,
}

/// What selection knows about one site (for `connect status` and experience reports).
#[derive(Clone, Debug, PartialEq)]
pub struct SiteView {
    pub name: String,
    pub preference: u32,
    pub health: Health,
    /// Smoothed probe latency.
    pub latency: Option<Duration>,
    /// Share of failed probes over the loss window, 0.0 to 1.0.
    pub loss: Option<f64>,
    pub excluded: Option<Exclusion>,
    pub shedding: bool,
    pub endpoints: Vec<EndpointView>,
}

/// Why the chosen site is the chosen one. Shown by `connect status`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// The most preferred site is in use.
    Preferred,
    /// The preferred site is down.
    FailedOver { from: String, cause: DownCause },
    /// The preferred site is excluded by an operator.
    Excluded {
        site: String,
        until: Time,
        note: String,
    },
    /// The preferred site asked connectors to go elsewhere.
    Shedding { site: String },
    /// The preferred site is slower than the chosen one.
    Brownout {
        slower: String,
        faster: String,
        by: Duration,
        window: Duration,
    },
    /// The preferred site recovered and is waiting out the hold-down period.
    HoldDown { preferred: String, until: Time },
    /// The preferred site is healthy and fast again; traffic returns once the difference has
    /// held for the sustained window and the dwell time has passed.
    Settling { preferred: String },
    /// The preferred site has not answered a probe yet.
    NotProbed { preferred: String },
    /// Every site that is not down is excluded; an excluded one is used rather than none.
    OnlyExcludedLeft,
    /// Every site is down.
    AllDown { causes: Vec<(String, DownCause)> },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Preferred => f.write_str("preferred site healthy"),
            Reason::FailedOver { from, cause } => write!(f, "failed over: site {from} {cause}"),
            Reason::Excluded { site, until, note } => {
                write!(f, "site {site} excluded until {until}")?;
                if !note.is_empty() {
                    write!(f, " ({note})")?;
                }
                Ok(())
            }
            Reason::Shedding { site } => write!(f, "site {site} is shedding load"),
            Reason::Brownout {
                slower,
                faster,
                by,
                window,
            } => write!(
                f,
                "brownout: {faster} faster than {slower} by {} (held for {})",
                human(*by),
                human(*window)
            ),
            Reason::HoldDown { preferred, until } => write!(
                f,
                "site {preferred} healthy again; returning to it at {until} after the hold-down period"
            ),
            Reason::Settling { preferred } => write!(
                f,
                "site {preferred} healthy and fast again; returning to it shortly"
            ),
            Reason::NotProbed { preferred } => {
                write!(f, "site {preferred} has not answered a probe yet")
            }
            Reason::OnlyExcludedLeft => {
                f.write_str("every site that is up is excluded; using an excluded site")
            }
            Reason::AllDown { causes } => {
                f.write_str("all sites down")?;
                for (i, (site, cause)) in causes.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{site} {cause}")?;
                }
                Ok(())
            }
        }
    }
}

/// Everything [`select`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub sites: &'a [Site],
    pub history: &'a History,
    pub exclusions: &'a [Exclusion],
    pub sheds: &'a [Shed],
    pub current: Option<&'a Current>,
    pub config: &'a SelectConfig,
    pub now: Time,
}

/// The decision: the site to use, why, what is known about every site, and in which order
/// new connections try the endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub at: Time,
    /// The chosen site; `None` when every site is down.
    pub site: Option<String>,
    pub reason: Reason,
    /// Every site, most preferred first.
    pub sites: Vec<SiteView>,
    /// Indexes into `sites` in the order connections try them: the chosen site, then the other
    /// sites that are not down in rank order (all sites when all are down).
    order: Vec<usize>,
}

impl Selection {
    /// The view of one site.
    pub fn site_view(&self, name: &str) -> Option<&SiteView> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// Whether connections to `site` may stay open: it is the chosen one, or it is neither
    /// down nor excluded.
    pub fn usable(&self, site: &str) -> bool {
        if self.site.as_deref() == Some(site) {
            return true;
        }
        self.site_view(site)
            .is_some_and(|v| !v.health.is_down() && v.excluded.is_none())
    }

    /// The endpoints a new connection tries, in order. Within a site, live endpoints come
    /// first, rotated by `seq` so that successive connections spread over them; then those
    /// whose last result failed; then those that are down.
    pub fn attempts(&self, seq: u64) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for v in self.order.iter().filter_map(|&i| self.sites.get(i)) {
            let live: Vec<&EndpointView> = v.endpoints.iter().filter(|e| e.live).collect();
            let n = live.len();
            if n > 0 {
                let start = usize::try_from(seq % n as u64).unwrap_or(0);
                for k in 0..n {
                    if let Some(e) = live.get((start + k) % n) {
                        out.push(Endpoint {
                            site: v.name.clone(),
                            addr: e.addr,
                        });
                    }
                }
            }
            for down in [false, true] {
                for e in v
                    .endpoints
                    .iter()
                    .filter(|e| !e.live && e.health.is_down() == down)
                {
                    out.push(Endpoint {
                        site: v.name.clone(),
                        addr: e.addr,
                    });
                }
            }
        }
        out
    }

    /// Whether `other` routes new and existing connections the same way (same site, same
    /// usable sites, same live endpoints) — used to wake tunnel watchers only on change.
    pub fn same_routing(&self, other: &Selection) -> bool {
        let key = |s: &Selection| {
            (
                s.site.clone(),
                s.order.clone(),
                s.sites
                    .iter()
                    .map(|v| {
                        (
                            v.name.clone(),
                            s.usable(&v.name),
                            v.endpoints.iter().map(|e| e.live).collect::<Vec<_>>(),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        key(self) == key(other)
    }
}

/// One endpoint's state after replaying its samples.
struct EndpointEval {
    health: Health,
    live: bool,
}

fn eval_endpoint<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    cfg: &SelectConfig,
    now: Time,
) -> EndpointEval {
    let mut health = Health::Unknown;
    let mut streak: u32 = 0;
    // When the first failed *probe* of the current streak was sent. Failed connections of user
    // traffic count as misses but do not start the clock: the next probe may be up to a whole
    // interval away, and one refused connection must not be a second of failure.
    let mut probe_start: Option<Time> = None;
    let mut last: Option<&Sample> = None;
    for s in samples {
        last = Some(s);
        match s.outcome {
            Outcome::Ok { .. } => {
                let was_down = health.is_down()
                    || probe_start.is_some_and(|start| s.at.since(start) >= cfg.down_after);
                if was_down || !matches!(health, Health::Healthy { .. }) {
                    health = Health::Healthy { since: s.at };
                }
                streak = 0;
                probe_start = None;
            }
            Outcome::Failed(failure) => {
                streak = streak.saturating_add(1);
                if s.source == Source::Probe {
                    probe_start.get_or_insert(s.at);
                }
                if streak >= cfg.down_after_misses {
                    health = Health::Down(DownCause::MissedProbes {
                        count: streak,
                        last: failure,
                    });
                }
            }
        }
    }
    let Some(last) = last else {
        return EndpointEval {
            health,
            live: false,
        };
    };
    // Still failing: down once the failure has lasted the budget, even while the next probe
    // is still waiting for its answer (a gateway that accepts and stays silent).
    if let (Outcome::Failed(failure), Some(start)) = (last.outcome, probe_start)
        && !health.is_down()
        && now.since(start) >= cfg.down_after
    {
        health = Health::Down(DownCause::FailingFor {
            duration: now.since(start),
            last: failure,
        });
    }
    if now.since(last.at) > cfg.stale_after {
        health = Health::Down(DownCause::NoRecentProbe { last_at: last.at });
    }
    let live = matches!(last.outcome, Outcome::Ok { .. }) && !health.is_down();
    EndpointEval { health, live }
}

/// One site's state at `now`.
struct Eval<'a> {
    site: &'a Site,
    view: SiteView,
    healthy_since: Option<Time>,
    /// Smoothed latency in ms after each good probe, oldest first.
    series: Vec<(Time, f64)>,
}

fn eval_site<'a>(site: &'a Site, input: &Input<'_>) -> Eval<'a> {
    let cfg = input.config;
    let now = input.now;
    let mut endpoints = Vec::with_capacity(site.endpoints.len());
    let mut good: Vec<(Time, f64)> = Vec::new();
    let (mut probes, mut lost) = (0u32, 0u32);
    let loss_from = now.minus(cfg.loss_window);
    for &addr in &site.endpoints {
        let key = Endpoint {
            site: site.name.clone(),
            addr,
        };
        let e = eval_endpoint(input.history.samples(&key), cfg, now);
        for s in input.history.samples(&key) {
            if s.source != Source::Probe {
                continue;
            }
            if let Outcome::Ok { latency } = s.outcome {
                good.push((s.at, ms_f64(latency)));
            }
            if s.at >= loss_from {
                probes += 1;
                if matches!(s.outcome, Outcome::Failed(_)) {
                    lost += 1;
                }
            }
        }
        endpoints.push(EndpointView {
            addr,
            health: e.health,
            live: e.live,
        });
    }
    good.sort_by_key(|&(at, _)| at);
    let mut series = Vec::with_capacity(good.len());
    let mut ewma: Option<f64> = None;
    for (at, ms) in good {
        let v = match ewma {
            None => ms,
            Some(prev) => prev + cfg.smoothing * (ms - prev),
        };
        ewma = Some(v);
        series.push((at, v));
    }

    // A site is healthy when any endpoint is; it has been healthy at least since the earliest
    // of its healthy endpoints came back (a lower bound that only ever delays a failback).
    let healthy_since = endpoints
        .iter()
        .filter_map(|e| match e.health {
            Health::Healthy { since } => Some(since),
            _ => None,
        })
        .min();
    let health = if let Some(since) = healthy_since {
        Health::Healthy { since }
    } else if endpoints.iter().any(|e| e.health == Health::Unknown) {
        Health::Unknown
    } else {
        endpoints
            .iter()
            .find_map(|e| match &e.health {
                Health::Down(c) => Some(Health::Down(c.clone())),
                _ => None,
            })
            .unwrap_or(Health::Down(DownCause::NoEndpoints))
    };
    let excluded = input
        .exclusions
        .iter()
        .filter(|x| x.site == site.name && now < x.until)
        .max_by_key(|x| x.until)
        .cloned();
    let shedding = input
        .sheds
        .iter()
        .any(|x| x.site == site.name && now < x.until);
    let latency = series
        .last()
        .map(|&(_, ms)| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    let loss = (probes > 0).then(|| f64::from(lost) / f64::from(probes));
    Eval {
        site,
        view: SiteView {
            name: site.name.clone(),
            preference: site.preference,
            health,
            latency,
            loss,
            excluded,
            shedding,
            endpoints,
        },
        healthy_since,
        series,
    }
}

/// The smoothed latency at `t`: the value after the last good probe at or before `t`.
fn value_at(series: &[(Time, f64)], t: Time) -> Option<f64> {
    let i = series.partition_point(|&(at, _)| at <= t);
    i.checked_sub(1)
        .and_then(|i| series.get(i))
        .map(|&(_, v)| v)
}

/// Whether `pred(a, b)` held at every point of `[from, to]`: at `from` and after every new
/// value of either series. False when either series has no value yet at `from`.
fn held(
    a: &[(Time, f64)],
    b: &[(Time, f64)],
    from: Time,
    to: Time,
    pred: impl Fn(f64, f64) -> bool,
) -> bool {
    let inside = |&&(t, _): &&(Time, f64)| t > from && t <= to;
    std::iter::once(from)
        .chain(a.iter().filter(inside).map(|&(t, _)| t))
        .chain(b.iter().filter(inside).map(|&(t, _)| t))
        .all(|t| match (value_at(a, t), value_at(b, t)) {
            (Some(x), Some(y)) => pred(x, y),
            _ => false,
        })
}

/// Decides which site to use now. See the module documentation for the rules.
pub fn select(input: &Input<'_>) -> Selection {
    let cfg = input.config;
    let now = input.now;
    let mut sites: Vec<&Site> = input.sites.iter().collect();
    sites.sort_by(|a, b| (a.preference, &a.name).cmp(&(b.preference, &b.name)));
    let evals: Vec<Eval<'_>> = sites.iter().map(|s| eval_site(s, input)).collect();
    let get = |i: usize| evals.get(i);

    // Candidates: not down and not excluded (excluded ones only if nothing else is left),
    // in rank order: sites that do not shed load first, then by preference.
    let not_down: Vec<usize> = (0..evals.len())
        .filter(|&i| get(i).is_some_and(|e| !e.view.health.is_down()))
        .collect();
    let mut cands: Vec<usize> = not_down
        .iter()
        .copied()
        .filter(|&i| get(i).is_some_and(|e| e.view.excluded.is_none()))
        .collect();
    let only_excluded = cands.is_empty() && !not_down.is_empty();
    if only_excluded {
        cands = not_down;
    }
    cands.sort_by_key(|&i| get(i).is_some_and(|e| e.view.shedding));
    let rank = |i: usize| cands.iter().position(|&c| c == i);
    let shedding = |i: usize| get(i).is_some_and(|e| e.view.shedding);
    let latency_ms = |i: usize| {
        get(i)
            .and_then(|e| e.series.last())
            .map_or(f64::INFINITY, |&(_, v)| v)
    };
    let series = |i: usize| get(i).map_or(&[][..], |e| e.series.as_slice());
    let healthy_for = |i: usize| {
        get(i)
            .and_then(|e| e.healthy_since)
            .map(|since| now.since(since))
    };
    let window_start = now.minus(cfg.sustained);
    let margin = ms_f64(cfg.latency_margin);
    let back = ms_f64(cfg.return_margin);
    // `fast` has been faster than `slow` by more than the margin over the whole window.
    let clearly_faster = |fast: usize, slow: usize| {
        healthy_for(fast).is_some_and(|d| d >= cfg.sustained)
            && held(series(fast), series(slow), window_start, now, |f, s| {
                f + margin < s
            })
    };

    // The choice without regard to the current site: the top-ranked candidate, unless a lower
    // ranked one (that does not shed load when the top does not) is clearly faster.
    let fresh = |cands: &[usize]| -> Option<usize> {
        let (&top, rest) = cands.split_first()?;
        let faster = rest
            .iter()
            .copied()
            .filter(|&l| (shedding(top) || !shedding(l)) && clearly_faster(l, top))
            .min_by(|&a, &b| latency_ms(a).total_cmp(&latency_ms(b)));
        Some(faster.unwrap_or(top))
    };

    let current = input.current.and_then(|c| {
        evals
            .iter()
            .position(|e| e.site.name == c.site)
            .map(|i| (i, c.since))
    });
    let chosen = match current {
        Some((c, since)) if rank(c).is_some() => {
            // Forced: the current site sheds load and some candidate does not.
            let forced = shedding(c) && cands.iter().any(|&o| !shedding(o));
            if forced {
                fresh(&cands)
            } else if now.since(since) < cfg.min_dwell {
                Some(c)
            } else {
                let beats = |s: usize| -> bool {
                    if s == c || shedding(s) {
                        return false;
                    }
                    if rank(s) < rank(c) {
                        healthy_for(s).is_some_and(|d| d >= cfg.hold_down)
                            && held(series(s), series(c), window_start, now, |a, b| {
                                a <= b + back
                            })
                    } else {
                        clearly_faster(s, c)
                    }
                };
                let challengers: Vec<usize> = cands.iter().copied().filter(|&s| beats(s)).collect();
                match challengers.split_first() {
                    None => Some(c),
                    Some((&best, rest)) => {
                        let faster = rest
                            .iter()
                            .copied()
                            .filter(|&l| clearly_faster(l, best))
                            .min_by(|&a, &b| latency_ms(a).total_cmp(&latency_ms(b)));
                        Some(faster.unwrap_or(best))
                    }
                }
            }
        }
        _ => fresh(&cands),
    };

    let reason = match chosen {
        None => Reason::AllDown {
            causes: evals
                .iter()
                .filter_map(|e| match &e.view.health {
                    Health::Down(c) => Some((e.site.name.clone(), c.clone())),
                    _ => None,
                })
                .collect(),
        },
        Some(_) if only_excluded => Reason::OnlyExcludedLeft,
        Some(x) => explain(&evals, x, cfg, now),
    };

    let order: Vec<usize> = match chosen {
        Some(x) => std::iter::once(x)
            .chain(cands.iter().copied().filter(|&i| i != x))
            .collect(),
        None => {
            let mut all: Vec<usize> = (0..evals.len()).collect();
            all.sort_by_key(|&i| get(i).is_some_and(|e| e.view.excluded.is_some()));
            all
        }
    };
    Selection {
        at: now,
        site: chosen.and_then(get).map(|e| e.site.name.clone()),
        reason,
        order,
        sites: evals.into_iter().map(|e| e.view).collect(),
    }
}

/// Explains why `x` is chosen: by the state of the most preferred site, if that is not `x`.
fn explain(evals: &[Eval<'_>], x: usize, cfg: &SelectConfig, now: Time) -> Reason {
    let (Some(p), Some(chosen)) = (evals.first(), evals.get(x)) else {
        return Reason::Preferred;
    };
    if x == 0 {
        return Reason::Preferred;
    }
    let name = p.site.name.clone();
    if let Some(ex) = &p.view.excluded {
        return Reason::Excluded {
            site: name,
            until: ex.until,
            note: ex.reason.clone(),
        };
    }
    match &p.view.health {
        Health::Down(cause) => {
            return Reason::FailedOver {
                from: name,
                cause: cause.clone(),
            };
        }
        Health::Unknown => return Reason::NotProbed { preferred: name },
        Health::Healthy { .. } => {}
    }
    if p.view.shedding {
        return Reason::Shedding { site: name };
    }
    if let Some(since) = p.healthy_since
        && now.since(since) < cfg.hold_down
    {
        return Reason::HoldDown {
            preferred: name,
            until: since.plus(cfg.hold_down),
        };
    }
    let slow = p.series.last().map(|&(_, v)| v);
    let fast = chosen.series.last().map(|&(_, v)| v);
    if let (Some(slow), Some(fast)) = (slow, fast)
        && slow - fast > ms_f64(cfg.return_margin)
    {
        return Reason::Brownout {
            slower: name,
            faster: chosen.site.name.clone(),
            by: Duration::from_secs_f64((slow - fast) / 1000.0),
            window: cfg.sustained,
        };
    }
    Reason::Settling { preferred: name }
}
