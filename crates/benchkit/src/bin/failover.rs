//! `failover-bench`: the connector's failover benchmark (issue 4, "Measured"), run by
//! `bench/failover/run.sh`. Usage: `failover-bench TSUZUKU_BINARY`; settings come from the
//! environment (see `Settings::from_env`).
//!
//! Two sites are two real `tsuzuku serve` processes sharing one data directory (store, keys,
//! certificate), each on its own port; an upstream app answers behind them; the real
//! `tsuzuku connect` runs in front; clients send a steady load of idempotent GETs through it:
//! plain `http://` requests (the connector opens the TLS connection to the gateway and can
//! retry an idempotent request on another site) and `https://` requests through `CONNECT`
//! tunnels (end-to-end TLS: the connector cannot see or repeat a request inside a tunnel).
//!
//! 1. Blackout: SIGKILL of the primary site's gateway while traffic is on it; the time until
//!    requests succeed through the secondary, failed requests, the time until the connector
//!    reports the switch, and after a restart of the primary the time until traffic is back.
//! 2. Brownout: both sites behind `tsuzuku_testkit::delay` proxies; ±jitter on both (switches
//!    per minute), then extra latency on the primary (time until traffic moves).
//! 3. Every figure against its target.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use reqwest::cookie::CookieStore as _;
use reqwest::header::{COOKIE, HeaderMap};
use tsuzuku_benchkit::env_u64;
use tsuzuku_benchkit::load::{Failover, Load, Record, failover};
use tsuzuku_benchkit::procs::{Connector, Gateway};
use tsuzuku_benchkit::stats::Summary;
use tsuzuku_benchkit::status::{self, Status};
use tsuzuku_testkit::delay::{Delay, DelayProxy};
use tsuzuku_testkit::gateway::{TestGateway, free_port, sign_in};
use tsuzuku_testkit::upstream::Upstream;

/// Issue 4's targets.
const TARGET_FAILOVER_P99_MS: f64 = 1000.0;
const TARGET_BROWNOUT_MOVE_MS: f64 = 3000.0;
const TARGET_SWITCHES_PER_MIN: f64 = 1.0;

/// How often the connector's status is read while waiting for a change.
const POLL: Duration = Duration::from_millis(50);
/// How long each client request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The connector's default selection settings this benchmark has to wait out
/// (`crates/connector/src/select.rs`, `SelectConfig::default`): `min_dwell` before any switch
/// that failure does not force. Plus a margin.
const DWELL_DEFAULT_S: u64 = 32;
/// The connector's default probe interval (`ProbeConfig::default` in
/// `crates/connector/src/probe.rs`).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

struct Settings {
    bin: PathBuf,
    trials: usize,
    failbacks: usize,
    interval: Duration,
    tls_interval: Duration,
    brownout_rtt: Duration,
    connectors: usize,
    jitter: Duration,
    jitter_for: Duration,
    dwell: Duration,
    logs: PathBuf,
    via_proxy: bool,
}

impl Settings {
    /// TRIALS (20), FAILBACKS (5: trials that also wait for traffic to return), INTERVAL_MS
    /// (10: plain-HTTP load), TLS_INTERVAL_MS (20: HTTPS-through-CONNECT load), BROWNOUT_MS
    /// (80: round-trip time added to the primary), CONNECTORS (4: connectors watching the
    /// brownout), JITTER_MS (30), JITTER_SECS (90), DWELL_S (32), LOG_DIR,
    /// BLACKOUT_VIA_PROXY (0; 1 puts a TCP proxy that stays up in front of each gateway).
    fn from_env() -> Result<Self> {
        let mut args = std::env::args_os().skip(1);
        let bin = PathBuf::from(
            args.next()
                .context("usage: failover-bench PATH_TO_TSUZUKU_BINARY")?,
        );
        if !bin.is_file() {
            bail!("{}: no tsuzuku binary there", bin.display());
        }
        let trials = usize::try_from(env_u64("TRIALS", 20, 1)?)?;
        let failbacks = usize::try_from(env_u64("FAILBACKS", 5, 0)?)?.min(trials);
        let logs = match std::env::var_os("LOG_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::temp_dir().join(format!("tsuzuku-failover-{}", std::process::id())),
        };
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create the log directory {}", logs.display()))?;
        Ok(Self {
            bin,
            trials,
            failbacks,
            interval: Duration::from_millis(env_u64("INTERVAL_MS", 10, 1)?),
            tls_interval: Duration::from_millis(env_u64("TLS_INTERVAL_MS", 20, 1)?),
            brownout_rtt: Duration::from_millis(env_u64("BROWNOUT_MS", 80, 2)?),
            connectors: usize::try_from(env_u64("CONNECTORS", 4, 1)?)?,
            jitter: Duration::from_millis(env_u64("JITTER_MS", 30, 0)?),
            jitter_for: Duration::from_secs(env_u64("JITTER_SECS", 90, 1)?),
            dwell: Duration::from_secs(env_u64("DWELL_S", DWELL_DEFAULT_S, 0)?),
            logs,
            via_proxy: env_u64("BLACKOUT_VIA_PROXY", 0, 0)? == 1,
        })
    }
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failover-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt_summary(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "median {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms (n={})",
            s.median, s.p99, s.min, s.max, s.n
        ),
        None => "no values".to_owned(),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

/// Everything the two phases share.
struct Rig {
    s: Settings,
    gw: TestGateway,
    _upstream: Upstream,
    site_a: Gateway,
    site_b: Gateway,
    ca: PathBuf,
    ca_pem: Vec<u8>,
    jar: Arc<reqwest::cookie::Jar>,
    password: String,
    cookie: Option<reqwest::header::HeaderValue>,
    connector_logs: usize,
}

impl Rig {
    async fn new(s: Settings) -> Result<Self> {
        let bin = s.bin.to_str().context("the binary's path is not UTF-8")?;
        let gw = TestGateway::init(bin).map_err(|e| anyhow::anyhow!("{e}"))?;
        let password = gw
            .add_user("alice", "staff")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let upstream = Upstream::start()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        gw.add_app_with_policy(
            "app",
            &upstream.url(),
            r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let data = gw.data();
        // Site b: the same data directory with its own `listen` (as TestGateway::start_node).
        let b_port = free_port().map_err(|e| anyhow::anyhow!("{e}"))?;
        let cfg = std::fs::read_to_string(data.join("tsuzuku.toml"))?;
        let from = format!("listen = \"127.0.0.1:{}\"", gw.port);
        if !cfg.contains(&from) {
            bail!("tsuzuku.toml has no line {from}");
        }
        let b_cfg = data.join("site-b.toml");
        std::fs::write(
            &b_cfg,
            cfg.replace(&from, &format!("listen = \"127.0.0.1:{b_port}\"")),
        )?;
        let mut site_a = Gateway::new(
            "a",
            &s.bin,
            &data,
            None,
            gw.addr(),
            s.logs.join("gateway-a.log"),
        );
        let mut site_b = Gateway::new(
            "b",
            &s.bin,
            &data,
            Some(b_cfg),
            SocketAddr::from(([127, 0, 0, 1], b_port)),
            s.logs.join("gateway-b.log"),
        );
        site_a.start().await?;
        site_b.start().await?;
        let ca = data.join("tls").join("ca.pem");
        let ca_pem = std::fs::read(&ca)?;
        Ok(Self {
            s,
            gw,
            _upstream: upstream,
            site_a,
            site_b,
            ca,
            ca_pem,
            jar: Arc::default(),
            password,
            cookie: None,
            connector_logs: 0,
        })
    }

    async fn connector(&mut self, a: SocketAddr, b: SocketAddr) -> Result<Connector> {
        self.connector_logs += 1;
        let log = self
            .s
            .logs
            .join(format!("connector-{}.log", self.connector_logs));
        Ok(Connector::start(
            &self.s.bin,
            &[("a", a), ("b", b)],
            "localhost",
            "localhost",
            &self.ca,
            self.gw.port,
            &log,
        )
        .await?)
    }

    /// A browser-like HTTPS client through the connector: CONNECT tunnels, reused.
    fn tls_client(&self, proxy: SocketAddr) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}"))?)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .tls_built_in_root_certs(false)
            .cookie_provider(self.jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?)
    }

    /// A plain-HTTP client through the connector (the connector speaks TLS to the gateway).
    fn plain_client(proxy: SocketAddr) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::http(format!("http://{proxy}"))?)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?)
    }

    /// Signs in once (through the connector); the session then works on every site.
    async fn sign_in(&mut self, proxy: SocketAddr) -> Result<()> {
        let c = self.tls_client(proxy)?;
        let app = self.gw.url("app", "/");
        let s = sign_in(&c, &app, "alice", &self.password, None)
            .await
            .map_err(|e| anyhow::anyhow!("sign-in through the connector: {e}"))?;
        if s.final_status != Some(200) {
            bail!(
                "sign-in through the connector ended with {:?}: {}",
                s.final_status,
                s.body
            );
        }
        let url = reqwest::Url::parse(&app)?;
        self.cookie = self.jar.cookies(&url);
        if self.cookie.is_none() {
            bail!("no session cookie for {app} after signing in");
        }
        Ok(())
    }

    fn plain_load(&self, proxy: SocketAddr, interval: Duration) -> Result<Load> {
        let mut h = HeaderMap::new();
        if let Some(c) = &self.cookie {
            h.insert(COOKIE, c.clone());
        }
        Ok(Load::start(
            Self::plain_client(proxy)?,
            format!("http://{}/bench", self.gw.host("app")),
            h,
            interval,
        ))
    }

    fn tls_load(&self, proxy: SocketAddr) -> Result<Load> {
        Ok(Load::start(
            self.tls_client(proxy)?,
            self.gw.url("app", "/bench-tls"),
            HeaderMap::new(),
            self.s.tls_interval,
        ))
    }

    /// `tsuzuku connect status --proxy ADDR`, indented.
    async fn cli_status(&self, proxy: SocketAddr) -> String {
        let out = tokio::process::Command::new(&self.s.bin)
            .args(["connect", "status", "--proxy", &proxy.to_string()])
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect(),
            Ok(o) => format!(
                "    (connect status failed: {})\n",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("    (connect status could not run: {e})\n"),
        }
    }
}

/// Polls the connector's status until `pred` holds; the moment it was seen, or `None` after
/// `within`.
async fn wait_for(
    proxy: SocketAddr,
    within: Duration,
    pred: impl Fn(&Status) -> bool,
) -> Option<(Instant, Status)> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = status::fetch(proxy).await
            && pred(&s)
        {
            return Some((Instant::now(), s));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A connector with its two loads (blackout phase).
struct Driven {
    connector: Connector,
    plain: Load,
    tls: Load,
}

impl Driven {
    async fn stop(self, plain: &mut Vec<Record>, tls: &mut Vec<Record>) -> Result<()> {
        plain.extend(
            self.plain
                .stop(REQUEST_TIMEOUT + Duration::from_secs(1))
                .await,
        );
        tls.extend(
            self.tls
                .stop(REQUEST_TIMEOUT + Duration::from_secs(1))
                .await,
        );
        self.connector.stop().await?;
        Ok(())
    }
}

struct Trial {
    plain: Option<Failover>,
    tls: Option<Failover>,
    switch: Option<Duration>,
    failback: Option<Duration>,
}

impl Trial {
    /// The pause of this trial: the later of both loads; 10 s when one saw no success.
    fn failover_ms(&self) -> f64 {
        match (self.plain, self.tls) {
            (Some(p), Some(t)) => ms(p.settled.max(t.settled)),
            _ => 10_000.0,
        }
    }
}

struct BlackoutResult {
    failover_p99_ms: f64,
    failed_plain: usize,
    plain_total: usize,
    failed_tls: usize,
    tls_total: usize,
    failback: Option<Summary>,
}

async fn blackout(rig: &mut Rig) -> Result<BlackoutResult> {
    let s = &rig.s;
    let (trials, failbacks) = (s.trials, s.failbacks);
    println!(
        "== blackout: SIGKILL of the primary site's gateway, {trials} trials ({failbacks} also wait for traffic to return) =="
    );
    println!(
        "load: plain-HTTP GET every {} ms (connector speaks TLS to the gateway, may retry idempotent requests) and HTTPS GET through CONNECT every {} ms (reused tunnels, like a browser)",
        s.interval.as_millis(),
        s.tls_interval.as_millis()
    );
    // With BLACKOUT_VIA_PROXY=1 each site is reached through a zero-delay TCP proxy that
    // stays up when the gateway behind it dies, as a load balancer or NAT in front of a
    // gateway would: connections are accepted, then closed.
    let fronts = if rig.s.via_proxy {
        let a = DelayProxy::start(rig.site_a.addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let b = DelayProxy::start(rig.site_b.addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "sites reached through TCP proxies that stay up (like a load balancer in front of each gateway)"
        );
        Some((a, b))
    } else {
        None
    };
    let (addr_a, addr_b) = fronts
        .as_ref()
        .map_or((rig.site_a.addr, rig.site_b.addr), |(a, b)| {
            (a.addr(), b.addr())
        });
    // Spread the trials that wait for failback over the run.
    let failback_at =
        |i: usize| failbacks > 0 && (i * failbacks) / trials != ((i + 1) * failbacks) / trials;
    let (mut all_plain, mut all_tls) = (Vec::new(), Vec::new());
    let mut driven: Option<Driven> = None;
    let mut results: Vec<Trial> = Vec::new();
    let mut shown_status = false;
    let (mut i, mut redone) = (0, 0);
    while i < trials {
        if driven.is_none() {
            let c = rig.connector(addr_a, addr_b).await?;
            wait_for(c.proxy, Duration::from_secs(20), |st| {
                st.on("a") && st.all_healthy()
            })
            .await
            .context(
                "a new connector did not settle on site a with both sites healthy within 20 s",
            )?;
            if rig.cookie.is_none() {
                rig.sign_in(c.proxy).await?;
            }
            // At least two probes of each site before the fault.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let plain = rig.plain_load(c.proxy, rig.s.interval)?;
            let tls = rig.tls_load(c.proxy)?;
            driven = Some(Driven {
                connector: c,
                plain,
                tls,
            });
        }
        let Some(d) = driven.as_ref() else {
            bail!("no connector running");
        };
        let proxy = d.connector.proxy;
        // Steady traffic on the primary first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = status::fetch(proxy).await?;
        if !before.on("a") {
            // Not a trial of a failover from the primary: start over with a new connector.
            redone += 1;
            println!(
                "trial {:>2}: the connector left site a before the kill ({}); trial redone with a new connector",
                i + 1,
                before.reason
            );
            if redone > 5 {
                bail!("the connector left site a before the kill more than 5 times");
            }
            if let Some(d) = driven.take() {
                d.stop(&mut all_plain, &mut all_tls).await?;
            }
            continue;
        }
        let kill = rig.site_a.kill9().await?;
        let switched = wait_for(proxy, Duration::from_secs(10), |st| st.on("b"))
            .await
            .map(|(t, _)| t.duration_since(kill));
        // Wait until both loads have succeeded after the kill and nothing sent before that
        // success is still waiting (or 10 s).
        let deadline = kill + Duration::from_secs(10);
        let (plain, tls) = loop {
            let now = Instant::now();
            let p = failover(&d.plain.records(), kill, now);
            let t = failover(&d.tls.records(), kill, now);
            let settled = |f: Option<Failover>, l: &Load| {
                f.is_some_and(|f| l.oldest_in_flight().is_none_or(|o| o > kill + f.first_ok))
            };
            let done = settled(p, &d.plain) && settled(t, &d.tls);
            if (done && now >= kill + Duration::from_millis(1500)) || now >= deadline {
                break (p, t);
            }
            tokio::time::sleep(POLL).await;
        };
        if !shown_status {
            shown_status = true;
            println!(
                "`tsuzuku connect status` after the first failover:\n{}",
                rig.cli_status(proxy).await.trim_end()
            );
        }
        let ready = rig.site_a.start().await?;
        let mut failback = None;
        if failback_at(i) {
            failback = wait_for(proxy, Duration::from_secs(150), |st| st.on("a"))
                .await
                .map(|(t, _)| t.duration_since(ready));
        }
        let trial = Trial {
            plain,
            tls,
            switch: switched,
            failback,
        };
        let show = |f: Option<Failover>| match f {
            Some(f) => format!(
                "{:.0} ms (first success {:.0} ms), failed {}/{}",
                ms(f.settled),
                ms(f.first_ok),
                f.failed,
                f.requests
            ),
            None => "no success within 10 s".to_owned(),
        };
        println!(
            "trial {:>2}: plain {}; https {}; connector on b after {}{}",
            i + 1,
            show(plain),
            show(tls),
            switched.map_or("-".to_owned(), |d| format!("{:.0} ms", ms(d))),
            if failback_at(i) {
                format!(
                    "; back on a {} after the restart",
                    failback.map_or("not within 150 s".to_owned(), |d| format!(
                        "{:.1} s",
                        d.as_secs_f64()
                    ))
                )
            } else {
                String::new()
            }
        );
        results.push(trial);
        // A connector that is still on b is replaced, so that every trial starts on a.
        if (!failback_at(i) || failback.is_none())
            && let Some(d) = driven.take()
        {
            d.stop(&mut all_plain, &mut all_tls).await?;
        }
        i += 1;
    }
    if let Some(d) = driven.take() {
        d.stop(&mut all_plain, &mut all_tls).await?;
    }

    let failover_ms: Vec<f64> = results.iter().map(Trial::failover_ms).collect();
    let first_ok: Vec<f64> = results
        .iter()
        .filter_map(|t| Some(ms(t.plain?.first_ok.max(t.tls?.first_ok))))
        .collect();
    let switch: Vec<f64> = results.iter().filter_map(|t| t.switch.map(ms)).collect();
    let failback: Vec<f64> = results.iter().filter_map(|t| t.failback.map(ms)).collect();
    let failed_plain = all_plain.iter().filter(|r| !r.ok).count();
    let failed_tls = all_tls.iter().filter(|r| !r.ok).count();
    let summary = Summary::of(&failover_ms).context("no trials")?;
    println!(
        "failover (SIGKILL until every request sent before the first success after it has its answer): {}",
        fmt_summary(Some(summary))
    );
    println!(
        "first success after the SIGKILL (later of both loads): {}",
        fmt_summary(Summary::of(&first_ok))
    );
    println!(
        "connector reports site b (status polled every {} ms): {}{}",
        POLL.as_millis(),
        fmt_summary(Summary::of(&switch)),
        if switch.len() < results.len() {
            format!(
                " — {} trials without a switch within 10 s",
                results.len() - switch.len()
            )
        } else {
            String::new()
        }
    );
    let fb = Summary::of(&failback);
    println!(
        "failback (restarted primary READY until the connector is on it again): {}",
        fmt_summary(fb)
    );
    let failed_fb = results
        .iter()
        .enumerate()
        .filter(|(i, t)| failback_at(*i) && t.failback.is_none())
        .count();
    if failed_fb > 0 {
        println!("failback: {failed_fb} trials did not return to a within 150 s");
    }
    println!(
        "failed requests over the whole phase: plain HTTP (idempotent GET, connector may retry) {failed_plain} of {}; HTTPS GET inside CONNECT tunnels (end-to-end TLS, not retried by the connector or this client) {failed_tls} of {}",
        all_plain.len(),
        all_tls.len()
    );
    println!(
        "failover p99 ms: {:.0}, failed requests: {failed_plain}",
        summary.p99
    );
    Ok(BlackoutResult {
        failover_p99_ms: summary.p99,
        failed_plain,
        plain_total: all_plain.len(),
        failed_tls,
        tls_total: all_tls.len(),
        failback: fb,
    })
}

/// A change of the site in use one connector reported.
#[derive(Clone, Debug)]
struct Change {
    at: Instant,
    site: Option<String>,
    reason: String,
}

/// Polls one connector's status in the background and keeps every change of the site in use.
struct Monitor {
    changes: Arc<Mutex<Vec<Change>>>,
    last: Arc<Mutex<Option<Status>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Monitor {
    fn start(proxy: SocketAddr) -> Self {
        let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
        let last: Arc<Mutex<Option<Status>>> = Arc::default();
        let task = {
            let (changes, last) = (changes.clone(), last.clone());
            tokio::spawn(async move {
                loop {
                    if let Ok(st) = status::fetch(proxy).await {
                        let at = Instant::now();
                        let mut ch = changes.lock().unwrap_or_else(PoisonError::into_inner);
                        if ch.last().is_none_or(|c| c.site != st.site) {
                            ch.push(Change {
                                at,
                                site: st.site.clone(),
                                reason: st.reason.clone(),
                            });
                        }
                        drop(ch);
                        *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(st);
                    }
                    tokio::time::sleep(POLL).await;
                }
            })
        };
        Self {
            changes,
            last,
            task,
        }
    }

    fn changes(&self) -> Vec<Change> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn last(&self) -> Option<Status> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the connector is on `site` and has been since `now - dwell` at least.
    fn settled_on(&self, site: &str, dwell: Duration, now: Instant) -> bool {
        let ch = self.changes();
        ch.last()
            .is_some_and(|c| c.site.as_deref() == Some(site) && c.at + dwell <= now)
    }

    /// The first time after `from` the connector reported `site`.
    fn first_on_after(&self, site: &str, from: Instant) -> Option<Instant> {
        self.changes()
            .iter()
            .find(|c| c.at > from && c.site.as_deref() == Some(site))
            .map(|c| c.at)
    }
}

struct BrownoutResult {
    moves_ms: Vec<Option<f64>>,
    switches_per_min: f64,
    worst_per_min: f64,
    switches: usize,
    connector_minutes: f64,
}

/// Waits until every monitor is on `site` and has been for `dwell`; `false` after `within`.
async fn wait_settled(monitors: &[Monitor], site: &str, dwell: Duration, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let now = Instant::now();
        if monitors.iter().all(|m| m.settled_on(site, dwell, now)) {
            return true;
        }
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn median_latency(records: &[Record], from: Instant, to: Instant) -> String {
    let v: Vec<f64> = records
        .iter()
        .filter(|r| r.ok && r.start >= from && r.start < to)
        .map(|r| ms(r.end.duration_since(r.start)))
        .collect();
    Summary::of(&v).map_or("-".to_owned(), |s| format!("{:.0} ms", s.median))
}

async fn brownout(rig: &mut Rig) -> Result<BrownoutResult> {
    let (k, dwell) = (rig.s.connectors, rig.s.dwell);
    let da = DelayProxy::start(rig.site_a.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = DelayProxy::start(rig.site_b.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!();
    println!(
        "== brownout: both sites behind delaying proxies, {k} connectors (independent devices) watching =="
    );
    // Started a fraction of the probe interval apart, so that their probes (every second)
    // fall at different moments relative to the fault: together they sample the whole range
    // of "how soon after the fault the next probe goes out".
    let mut conns = Vec::new();
    for j in 0..k {
        if j > 0 {
            tokio::time::sleep(PROBE_INTERVAL / u32::try_from(k).unwrap_or(1)).await;
        }
        conns.push(rig.connector(da.addr(), db.addr()).await?);
    }
    let started = Instant::now();
    let monitors: Vec<Monitor> = conns.iter().map(|c| Monitor::start(c.proxy)).collect();
    let Some(first) = conns.first() else {
        bail!("CONNECTORS must be at least 1");
    };
    let load = rig.plain_load(first.proxy, rig.s.interval)?;

    // Jitter on both sites. Switches are counted only once the connectors have been up for
    // the dwell time, because before that the connector would not switch anyway.
    let j = rig.s.jitter;
    da.set(Delay::jittered(j, j));
    db.set(Delay::jittered(j, j));
    let from = started + dwell;
    println!(
        "jitter: each chunk in each direction of both sites delayed {} ms ± {} ms (uniform, in order); waiting {} s (dwell), then counting switches for {} s",
        j.as_millis(),
        j.as_millis(),
        dwell.as_secs(),
        rig.s.jitter_for.as_secs()
    );
    tokio::time::sleep_until((from).into()).await;
    let to = from + rig.s.jitter_for;
    tokio::time::sleep_until(to.into()).await;
    let (mut switches, mut most) = (0, 0);
    for (i, m) in monitors.iter().enumerate() {
        let ch: Vec<Change> = m
            .changes()
            .into_iter()
            .filter(|c| c.at > from && c.at <= to)
            .collect();
        switches += ch.len();
        most = most.max(ch.len());
        let lat = m.last().map_or("-".to_owned(), |s| {
            format!(
                "a {} ms, b {} ms",
                s.latency_ms("a").map_or("-".into(), |v| v.to_string()),
                s.latency_ms("b").map_or("-".into(), |v| v.to_string())
            )
        });
        println!(
            "connector {}: {} switch{} ({lat} smoothed probe latency at the end){}",
            i + 1,
            ch.len(),
            if ch.len() == 1 { "" } else { "es" },
            ch.iter()
                .map(|c| format!(
                    "\n    +{:.1} s -> {}: {}",
                    c.at.duration_since(from).as_secs_f64(),
                    c.site.as_deref().unwrap_or("none"),
                    c.reason
                ))
                .collect::<String>()
        );
    }
    let connector_minutes = rig.s.jitter_for.as_secs_f64() / 60.0 * k as f64;
    let per_min = switches as f64 / connector_minutes;
    let worst_per_min = most as f64 / (rig.s.jitter_for.as_secs_f64() / 60.0);
    println!(
        "switches per minute under ±{} ms jitter: {per_min:.2} ({switches} switches over {connector_minutes:.1} connector-minutes); worst connector {worst_per_min:.2} ({most} in {} s)",
        j.as_millis(),
        rig.s.jitter_for.as_secs()
    );
    da.set(Delay::NONE);
    db.set(Delay::NONE);

    // Extra latency on the primary.
    if !wait_settled(&monitors, "a", dwell, Duration::from_secs(150)).await {
        bail!(
            "the connectors did not settle on site a for {} s within 150 s after the jitter ended",
            dwell.as_secs()
        );
    }
    let rtt = rig.s.brownout_rtt;
    let calm = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    da.set(Delay::fixed(rtt / 2));
    println!(
        "brownout: +{} ms round trip on site a ({} ms each way)",
        rtt.as_millis(),
        (rtt / 2).as_millis()
    );
    let deadline = t + Duration::from_secs(30);
    while Instant::now() < deadline && monitors.iter().any(|m| m.first_on_after("b", t).is_none()) {
        tokio::time::sleep(POLL).await;
    }
    let moves: Vec<Option<f64>> = monitors
        .iter()
        .map(|m| m.first_on_after("b", t).map(|x| ms(x.duration_since(t))))
        .collect();
    for (i, (m, mv)) in monitors.iter().zip(&moves).enumerate() {
        println!(
            "connector {}: traffic moved to b after {}{}",
            i + 1,
            mv.map_or("— not within 30 s".to_owned(), |v| format!("{v:.0} ms")),
            m.changes()
                .iter()
                .find(|c| c.at > t)
                .map_or(String::new(), |c| format!(" ({})", c.reason))
        );
    }
    let moved_at = monitors
        .first()
        .and_then(|m| m.first_on_after("b", t))
        .unwrap_or(deadline);
    println!(
        "`tsuzuku connect status` of connector 1 after the move:\n{}",
        rig.cli_status(first.proxy).await.trim_end()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Instant::now();
    da.set(Delay::NONE);
    let r = Instant::now();
    let back = wait_settled(&monitors, "a", Duration::ZERO, Duration::from_secs(150)).await;
    let returns: Vec<String> = monitors
        .iter()
        .map(|m| {
            m.first_on_after("a", r).map_or("-".to_owned(), |x| {
                format!("{:.1} s", x.duration_since(r).as_secs_f64())
            })
        })
        .collect();
    println!(
        "delay removed: connectors back on a after {}{}",
        returns.join(", "),
        if back { "" } else { " (not all within 150 s)" }
    );
    let records = load.stop(REQUEST_TIMEOUT + Duration::from_secs(1)).await;
    println!(
        "client load through connector 1 (plain HTTP): median latency {} before the delay, {} delayed before the move, {} after the move; {} of {} requests failed in this phase",
        median_latency(&records, calm, t),
        median_latency(&records, t, moved_at),
        median_latency(&records, moved_at, after),
        records.iter().filter(|r| !r.ok).count(),
        records.len()
    );
    drop(monitors);
    for c in conns {
        c.stop().await?;
    }
    Ok(BrownoutResult {
        moves_ms: moves,
        switches_per_min: per_min,
        worst_per_min,
        switches,
        connector_minutes,
    })
}

async fn run() -> Result<()> {
    let s = Settings::from_env()?;
    let began = Instant::now();
    println!(
        "failover-bench: {} (logs in {})",
        s.bin.display(),
        s.logs.display()
    );
    let mut rig = Rig::new(s).await?;
    println!(
        "sites: a = gateway at {}, b = gateway at {} (one shared store); preference a, then b",
        rig.site_a.addr, rig.site_b.addr
    );
    let t = Instant::now();
    let bo = blackout(&mut rig).await?;
    println!("(blackout phase took {:.0} s)", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let br = brownout(&mut rig).await?;
    println!("(brownout phase took {:.0} s)", t.elapsed().as_secs_f64());

    println!();
    println!("== figures against targets ==");
    let x = bo.failover_p99_ms;
    println!(
        "blackout failover p99: {x:.0} ms / target {TARGET_FAILOVER_P99_MS:.0} ms = {:.2} ({})",
        x / TARGET_FAILOVER_P99_MS,
        verdict(x <= TARGET_FAILOVER_P99_MS)
    );
    println!(
        "failed idempotent requests (plain HTTP, {} sent): {} / target 0 ({})",
        bo.plain_total,
        bo.failed_plain,
        verdict(bo.failed_plain == 0)
    );
    println!(
        "failed HTTPS requests inside CONNECT tunnels ({} sent): {} (the connector cannot repeat a request inside end-to-end TLS; a browser retries such GETs itself)",
        bo.tls_total, bo.failed_tls
    );
    println!(
        "failback after the primary's restart: {} (no target; the connector waits out its 30 s hold-down by design)",
        fmt_summary(bo.failback)
    );
    let moved: Vec<f64> = br.moves_ms.iter().map(|m| m.unwrap_or(30_000.0)).collect();
    let worst = moved.iter().copied().fold(0.0, f64::max);
    println!(
        "brownout (+{} ms): traffic moved after {} — worst {worst:.0} ms / target {TARGET_BROWNOUT_MOVE_MS:.0} ms = {:.2} ({})",
        rig.s.brownout_rtt.as_millis(),
        moved
            .iter()
            .map(|v| format!("{v:.0} ms"))
            .collect::<Vec<_>>()
            .join(", "),
        worst / TARGET_BROWNOUT_MOVE_MS,
        verdict(worst <= TARGET_BROWNOUT_MOVE_MS)
    );
    println!(
        "switches per minute under ±{} ms jitter: {:.2} ({} over {:.1} connector-minutes) / target {TARGET_SWITCHES_PER_MIN:.0} = {:.2} ({})",
        rig.s.jitter.as_millis(),
        br.switches_per_min,
        br.switches,
        br.connector_minutes,
        br.switches_per_min / TARGET_SWITCHES_PER_MIN,
        verdict(br.switches_per_min <= TARGET_SWITCHES_PER_MIN)
    );
    println!(
        "  worst single connector: {:.2} switches per minute = {:.2} of the target ({})",
        br.worst_per_min,
        br.worst_per_min / TARGET_SWITCHES_PER_MIN,
        verdict(br.worst_per_min <= TARGET_SWITCHES_PER_MIN)
    );
    println!("total run time: {:.0} s", began.elapsed().as_secs_f64());
    println!(
        "failover p99 ms: {x:.0}, failed requests: {}",
        bo.failed_plain
    );
    Ok(())
}
