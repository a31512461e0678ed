//! `dr-bench`: the disaster-recovery switch benchmark (issue 5, "Measured"), run by
//! `bench/dr/run.sh`. Usage: `dr-bench TSUZUKU_BINARY`; settings come from the environment (see
//! `Settings::from_env`).
//!
//! Real parts, measured from outside: a DNS server (hickory, in-process) serves the record,
//! signed by `tsuzuku dr record`; the normal site is a real `tsuzuku serve`; the DR gateway is a
//! second real `tsuzuku serve` on 127.0.0.2 at the same port (the same data directory, so one
//! sign-in is valid at both and the figures are about routing, not about signing in again);
//! CONNECTORS real `tsuzuku connect` processes look the record up every INTERVAL_S, with the
//! app marked critical; a fixed-rate client load of idempotent GETs to the critical app goes
//! through each connector.
//!
//! Per trial:
//! 1. The disaster: the normal gateway is killed (SIGKILL) and the record published at once.
//!    Time until ALL connectors are in DR mode (their `/status`), against the target
//!    `interval + 1 s`. Failed requests during the switch (sent through a connector between
//!    the kill and that connector's switch) and after it (sent after the switch, for AFTER_S).
//! 2. The return: the normal gateway is started again; once every connector sees it healthy
//!    the record is withdrawn. Time until all connectors are back to normal; failed requests
//!    from the withdrawal until AFTER_S after the last return.
//!
//! Medians over the trials, as ratios to the targets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use reqwest::cookie::CookieStore as _;
use reqwest::header::{COOKIE, HeaderMap};
use tsuzuku_benchkit::env_u64;
use tsuzuku_benchkit::load::{Load, Record};
use tsuzuku_benchkit::procs::{Connector, Gateway};
use tsuzuku_benchkit::stats::Summary;
use tsuzuku_benchkit::status::{self, DrPhase};
use tsuzuku_testkit::dns::TestDns;
use tsuzuku_testkit::gateway::{TestGateway, sign_in};
use tsuzuku_testkit::upstream::Upstream;

const NAME: &str = "_tsuzuku-dr.example.test";
/// How often each connector's status is read while waiting for a change.
const POLL: Duration = Duration::from_millis(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

struct Settings {
    bin: PathBuf,
    connectors: usize,
    trials: usize,
    interval: Duration,
    load_interval: Duration,
    after: Duration,
    logs: PathBuf,
}

impl Settings {
    /// CONNECTORS (3), TRIALS (5), INTERVAL_S (1, the connectors' lookup interval),
    /// LOAD_INTERVAL_MS (50: 20 requests per second per connector), AFTER_S (3), LOGS
    /// (a new temporary directory).
    fn from_env() -> Result<Self> {
        let bin = std::env::args_os()
            .nth(1)
            .map(PathBuf::from)
            .context("usage: dr-bench TSUZUKU_BINARY")?;
        let logs = match std::env::var_os("LOGS") {
            Some(p) => PathBuf::from(p),
            None => std::env::temp_dir().join(format!("dr-bench-{}", std::process::id())),
        };
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create the log directory {}", logs.display()))?;
        Ok(Self {
            bin,
            connectors: usize::try_from(env_u64("CONNECTORS", 3, 1)?)?,
            trials: usize::try_from(env_u64("TRIALS", 5, 1)?)?,
            interval: Duration::from_secs(env_u64("INTERVAL_S", 1, 1)?),
            load_interval: Duration::from_millis(env_u64("LOAD_INTERVAL_MS", 50, 5)?),
            after: Duration::from_secs(env_u64("AFTER_S", 3, 1)?),
            logs,
        })
    }

    fn target(&self) -> Duration {
        self.interval + Duration::from_secs(1)
    }
}

fn any(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// What one trial measured.
struct Trial {
    /// Record published → each connector in DR mode.
    switched: Vec<Duration>,
    failed_during: usize,
    sent_during: usize,
    failed_after: usize,
    sent_after: usize,
    /// Record withdrawn → each connector back to normal.
    back: Vec<Duration>,
    failed_return: usize,
    sent_return: usize,
}

struct Rig {
    s: Settings,
    gw: TestGateway,
    _upstream: Upstream,
    normal: Gateway,
    dr: Gateway,
    dns: TestDns,
    key: PathBuf,
    connectors: Vec<Connector>,
    cookie: Option<reqwest::header::HeaderValue>,
    ca_pem: Vec<u8>,
}

impl Rig {
    async fn new(s: Settings) -> Result<Self> {
        let bin = s.bin.to_str().context("the binary's path is not UTF-8")?;
        let gw = TestGateway::init(bin).map_err(any)?;
        let password = gw.add_user("alice", "staff").map_err(any)?;
        let upstream = Upstream::start().await.map_err(any)?;
        gw.add_app_with_policy(
            "app",
            &upstream.url(),
            r#"permit (principal in Tsuzuku::Group::"staff", action, resource);"#,
        )
        .map_err(any)?;
        let data = gw.data();
        // The DR gateway: the same data directory, listening on 127.0.0.2 at the same port.
        let cfg = std::fs::read_to_string(data.join("tsuzuku.toml"))?;
        let from = format!("listen = \"127.0.0.1:{}\"", gw.port);
        if !cfg.contains(&from) {
            bail!("tsuzuku.toml has no line {from}");
        }
        let dr_cfg = data.join("dr-gateway.toml");
        std::fs::write(
            &dr_cfg,
            cfg.replace(&from, &format!("listen = \"127.0.0.2:{}\"", gw.port)),
        )?;
        let mut normal = Gateway::new(
            "normal",
            &s.bin,
            &data,
            None,
            gw.addr(),
            s.logs.join("gateway-normal.log"),
        );
        let mut dr = Gateway::new(
            "dr",
            &s.bin,
            &data,
            Some(dr_cfg),
            SocketAddr::from(([127, 0, 0, 2], gw.port)),
            s.logs.join("gateway-dr.log"),
        );
        normal.start().await?;
        dr.start().await?;

        // The customer's DR key, and the DNS server.
        let keys = s.logs.join("dr-keys");
        let out = tokio::process::Command::new(&s.bin)
            .args(["dr", "keygen", "--out"])
            .arg(&keys)
            .output()
            .await?;
        if !out.status.success() {
            bail!("dr keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let dns = TestDns::start("example.test").await.map_err(any)?;

        let ca = data.join("tls").join("ca.pem");
        let ca_pem = std::fs::read(&ca)?;
        let mut connectors = Vec::new();
        for i in 0..s.connectors {
            let extra: Vec<String> = [
                "--dr-record",
                NAME,
                "--dr-dns",
                &dns.addr().to_string(),
                "--dr-trust",
                &keys.join("dr-public-key.pem").to_string_lossy(),
                "--dr-interval",
                &format!("{}s", s.interval.as_secs()),
                "--dr-gateway",
                &format!("localhost@{}", dr.addr),
                "--dr-critical-host",
                "app.localhost",
                "--dr-critical-host",
                "auth.localhost",
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            connectors.push(
                Connector::start_with(
                    &s.bin,
                    &[("a", gw.addr())],
                    "localhost",
                    "localhost",
                    &ca,
                    gw.port,
                    &extra,
                    &s.logs.join(format!("connector-{i}.log")),
                )
                .await?,
            );
        }
        let mut rig = Self {
            s,
            gw,
            _upstream: upstream,
            normal,
            dr,
            dns,
            key: keys.join("dr-signing-key.pem"),
            connectors,
            cookie: None,
            ca_pem,
        };
        rig.wait_all(
            "every connector on the normal site",
            Duration::from_secs(30),
            |t| {
                status::dr_phase(t) == Some(DrPhase::Normal)
                    && status::Status::parse(t).is_some_and(|s| s.on("a"))
            },
        )
        .await?;
        rig.sign_in(&password).await?;
        Ok(rig)
    }

    /// Signs in once through the first connector; the session is valid at both gateways.
    async fn sign_in(&mut self, password: &str) -> Result<()> {
        let proxy = self.connectors.first().context("no connector")?.proxy;
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let c = reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}"))?)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .tls_built_in_root_certs(false)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let app = self.gw.url("app", "/");
        let s = sign_in(&c, &app, "alice", password, None)
            .await
            .map_err(|e| anyhow::anyhow!("sign-in through the connector: {e}"))?;
        if s.final_status != Some(200) {
            bail!("sign-in ended with {:?}: {}", s.final_status, s.body);
        }
        self.cookie = jar.cookies(&reqwest::Url::parse(&app)?);
        if self.cookie.is_none() {
            bail!("no session cookie for {app} after signing in");
        }
        Ok(())
    }

    /// The load through connector `i`: plain `http://` GETs of the critical app (the connector
    /// opens the TLS connection to whichever gateway the route says).
    fn load(&self, i: usize) -> Result<Load> {
        let proxy = self.connectors.get(i).context("no such connector")?.proxy;
        let mut h = HeaderMap::new();
        if let Some(c) = &self.cookie {
            h.insert(COOKIE, c.clone());
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::http(format!("http://{proxy}"))?)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Load::start(
            client,
            format!("http://{}/bench", self.gw.host("app")),
            h,
            self.s.load_interval,
        ))
    }

    /// Polls every connector's status until `pred` holds for it; when each was first seen so.
    async fn wait_each(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Vec<Instant>> {
        let start = Instant::now();
        let mut seen: Vec<Option<Instant>> = vec![None; self.connectors.len()];
        loop {
            for (c, at) in self.connectors.iter().zip(seen.iter_mut()) {
                if at.is_none()
                    && let Ok(text) = status::fetch_text(c.proxy).await
                    && pred(&text)
                {
                    *at = Some(Instant::now());
                }
            }
            if seen.iter().all(Option::is_some) {
                return Ok(seen.into_iter().flatten().collect());
            }
            if start.elapsed() > within {
                bail!(
                    "{what}: {} of {} connectors within {} s",
                    seen.iter().filter(|s| s.is_some()).count(),
                    seen.len(),
                    within.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_all(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<()> {
        self.wait_each(what, within, pred).await.map(|_| ())
    }

    /// `tsuzuku --json dr record` with the customer's key: the TXT strings.
    async fn record(&self, state: &str) -> Result<Vec<String>> {
        let out = tokio::process::Command::new(&self.s.bin)
            .arg("--json")
            .args(["dr", "record", "--key"])
            .arg(&self.key)
            .args(["--state", state, "--internet", "open", "--for", "1h"])
            .output()
            .await?;
        if !out.status.success() {
            bail!("dr record: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v.get("strings")
            .and_then(|s| s.as_array())
            .context("dr record printed no strings")?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .context("a string that is not text")
            })
            .collect()
    }

    async fn trial(&mut self, loads: &[Load]) -> Result<Trial> {
        let interval = self.s.interval;
        let strings = self.record("on").await?;
        let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
        // The disaster, then the record.
        let killed = self.normal.kill9().await?;
        self.dns.set_txt(NAME, &refs).await.map_err(any)?;
        let published = Instant::now();
        let active = self
            .wait_each("DR mode", interval * 3 + Duration::from_secs(10), |t| {
                status::dr_phase(t) == Some(DrPhase::Active)
            })
            .await?;
        let all_active = active.iter().copied().max().unwrap_or(published);
        tokio::time::sleep(self.s.after).await;
        let mut t = Trial {
            switched: active.iter().map(|a| a.duration_since(published)).collect(),
            failed_during: 0,
            sent_during: 0,
            failed_after: 0,
            sent_after: 0,
            back: Vec::new(),
            failed_return: 0,
            sent_return: 0,
        };
        for (load, at) in loads.iter().zip(&active) {
            let r = load.records();
            let sent = |from: Instant, to: Instant| -> Vec<&Record> {
                r.iter()
                    .filter(|x| x.start >= from && x.start < to)
                    .collect()
            };
            let during = sent(killed, *at);
            t.sent_during += during.len();
            t.failed_during += during.iter().filter(|x| !x.ok).count();
            let after = sent(*at, all_active + self.s.after);
            t.sent_after += after.len();
            t.failed_after += after.iter().filter(|x| !x.ok).count();
        }

        // The return: the normal site first, then the record is withdrawn.
        self.normal.start().await?;
        self.wait_all(
            "the normal site healthy again",
            Duration::from_secs(30),
            |t| status::Status::parse(t).is_some_and(|s| s.all_healthy()),
        )
        .await?;
        self.dns.remove_txt(NAME).await.map_err(any)?;
        let withdrawn = Instant::now();
        let normal = self
            .wait_each(
                "back to normal",
                interval * 3 + Duration::from_secs(10),
                |t| status::dr_phase(t) == Some(DrPhase::Normal),
            )
            .await?;
        let all_back = normal.iter().copied().max().unwrap_or(withdrawn);
        tokio::time::sleep(self.s.after).await;
        t.back = normal.iter().map(|n| n.duration_since(withdrawn)).collect();
        for load in loads {
            let r = load.records();
            let ret: Vec<&Record> = r
                .iter()
                .filter(|x| x.start >= withdrawn && x.start < all_back + self.s.after)
                .collect();
            t.sent_return += ret.len();
            t.failed_return += ret.iter().filter(|x| !x.ok).count();
        }
        Ok(t)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[f64]) -> f64 {
    Summary::of(v).map_or(f64::NAN, |s| s.median)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

async fn run() -> Result<()> {
    let s = Settings::from_env()?;
    let began = Instant::now();
    println!(
        "dr-bench: {} (logs in {}); {} connectors, lookup interval {} s, {} requests/s per connector, {} trials",
        s.bin.display(),
        s.logs.display(),
        s.connectors,
        s.interval.as_secs(),
        1000 / s.load_interval.as_millis().max(1),
        s.trials
    );
    let mut rig = Rig::new(s).await?;
    println!(
        "normal gateway {}, DR gateway {} (same store), connectors at {}",
        rig.normal.addr,
        rig.dr.addr,
        rig.connectors
            .iter()
            .map(|c| c.proxy.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let loads = (0..rig.connectors.len())
        .map(|i| rig.load(i))
        .collect::<Result<Vec<_>>>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let target = rig.s.target();
    let mut trials = Vec::new();
    for i in 1..=rig.s.trials {
        let t = rig.trial(&loads).await?;
        let all = t.switched.iter().copied().max().unwrap_or_default();
        let back = t.back.iter().copied().max().unwrap_or_default();
        println!(
            "trial {i}: record -> all in DR mode {:.0} ms ({}) = {:.2} of the target; failed during the switch {}/{}, after it {}/{}; withdrawn -> all back {:.0} ms; failed during the return {}/{}",
            ms(all),
            t.switched
                .iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", "),
            ms(all) / ms(target),
            t.failed_during,
            t.sent_during,
            t.failed_after,
            t.sent_after,
            ms(back),
            t.failed_return,
            t.sent_return
        );
        trials.push(t);
    }
    let records: Vec<Vec<Record>> = {
        let mut v = Vec::new();
        for l in loads {
            v.push(l.stop(REQUEST_TIMEOUT).await);
        }
        v
    };
    let total: usize = records.iter().map(Vec::len).sum();

    let all: Vec<f64> = trials
        .iter()
        .map(|t| ms(t.switched.iter().copied().max().unwrap_or_default()))
        .collect();
    let each: Vec<f64> = trials
        .iter()
        .flat_map(|t| t.switched.iter().map(|d| ms(*d)))
        .collect();
    let back: Vec<f64> = trials
        .iter()
        .map(|t| ms(t.back.iter().copied().max().unwrap_or_default()))
        .collect();
    let during: Vec<f64> = trials.iter().map(|t| t.failed_during as f64).collect();
    let after: Vec<f64> = trials.iter().map(|t| t.failed_after as f64).collect();
    let ret: Vec<f64> = trials.iter().map(|t| t.failed_return as f64).collect();
    let worst_after = trials.iter().map(|t| t.failed_after).max().unwrap_or(0);
    let t_ms = ms(target);
    let all_med = median(&all);
    let all_max = all.iter().copied().fold(0.0, f64::max);
    println!();
    println!(
        "== figures against targets ({} trials, {total} requests) ==",
        trials.len()
    );
    println!(
        "record published -> ALL {} connectors in DR mode: median {all_med:.0} ms, max {all_max:.0} ms / target {t_ms:.0} ms (interval + 1 s) = {:.2} median, {:.2} max ({})",
        rig.connectors.len(),
        all_med / t_ms,
        all_max / t_ms,
        verdict(all_max <= t_ms)
    );
    println!(
        "  one connector: median {:.0} ms = {:.2} of the target",
        median(&each),
        median(&each) / t_ms
    );
    println!(
        "failed requests to the critical app during the switch (normal site killed -> that connector in DR mode): median {:.0} per trial (no target: the normal site is gone until the switch)",
        median(&during)
    );
    println!(
        "failed requests after the switch completed ({} s per trial): median {:.0}, worst {worst_after} / target 0 ({})",
        rig.s.after.as_secs(),
        median(&after),
        verdict(worst_after == 0)
    );
    println!(
        "record withdrawn -> ALL back to normal: median {:.0} ms = {:.2} of the target; failed requests during the return: median {:.0}",
        median(&back),
        median(&back) / t_ms,
        median(&ret)
    );
    println!("total run time: {:.0} s", began.elapsed().as_secs_f64());
    println!(
        "dr all-connectors switch p50 ms: {all_med:.0} (target <= {t_ms:.0}), failed after switch: {worst_after}"
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dr-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
