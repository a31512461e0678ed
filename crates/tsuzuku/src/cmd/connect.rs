//! `tsuzuku connect`: the device agent — a local forward proxy with a PAC file that sends the
//! organisation's app domains to the best healthy gateway site.
//!
//! The site list comes from the command line for now; fetching it signed from the control
//! plane is not built yet (issue 4, item 2).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::{out, outln};
use anyhow::{Context as _, Result, bail};
use tsuzuku_connector::{Connector, ConnectorConfig, Site};

/// Parses `NAME=HOST@ADDR[,ADDR…]`; the order of `--site` flags is the preference order.
pub fn parse_site(spec: &str, preference: u32) -> Result<Site> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--site {spec:?}: expected NAME=HOST@ADDR[,ADDR...], e.g. tokyo=gw.example.com@192.0.2.10:443"))?;
    let (host, addrs) = rest
        .split_once('@')
        .with_context(|| format!("--site {spec:?}: expected NAME=HOST@ADDR[,ADDR...]: the gateway's host name, '@', then its node addresses"))?;
    if name.is_empty() || host.is_empty() {
        bail!("--site {spec:?}: the site name and the gateway host name must not be empty");
    }
    let endpoints = addrs
        .split(',')
        .map(|a| {
            a.trim().parse::<SocketAddr>().with_context(|| {
                format!(
                    "--site {spec:?}: {a:?} is not an IP address with a port, e.g. 192.0.2.10:443"
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Site {
        name: name.to_owned(),
        preference,
        host: host.to_owned(),
        endpoints,
    })
}

pub async fn run(a: crate::cli::ConnectArgs) -> Result<ExitCode> {
    let listen = a.listen;
    let app_domains = a.app_domains.clone();
    let ca = a.ca.clone();
    let allow_ports = a.allow_ports.clone();
    let sites = &a.sites;
    if app_domains.is_empty() {
        bail!(
            "give at least one --app-domain (e.g. example.com) whose traffic goes through the gateway"
        );
    }
    let mut feed = None;
    let mut report_to = None;
    let mut exclusions = Vec::new();
    let mut sheds = Vec::new();
    let mut first_list = None;
    let sites = match &a.control {
        Some(url) => {
            let source = site_list_source(&a, url)?;
            let initial =
                tsuzuku_connector::sitelist::initial(&source, Duration::from_secs(3)).await;
            let list = match initial {
                // It answered, with nothing usable in it: say so, not "gave none".
                Err(tsuzuku_connector::sitelist::SiteListError::Empty) => bail!(
                    "no site list: the control plane at {url} answered with no gateway sites \
                     (a DR site alone is not one); add one on the control plane's data \
                     directory with `tsuzuku site add NAME --host HOST --endpoint IP:PORT`"
                ),
                other => other?.with_context(|| {
                    format!(
                        "no site list: the control plane at {url} gave none and {} holds none",
                        source.cache_file.display()
                    )
                })?,
            };
            exclusions = list.exclusions.clone();
            sheds = list.sheds.clone();
            first_list = Some(list.clone());
            let sites = list.sites.clone();
            report_to = Some(source.clone());
            feed = Some(tsuzuku_connector::sitelist::spawn(source, Some(list))?);
            sites
        }
        None => {
            if sites.is_empty() {
                bail!("give at least one --site NAME=HOST@ADDR[,ADDR...], or --control URL");
            }
            sites
                .iter()
                .enumerate()
                .map(|(i, s)| parse_site(s, u32::try_from(i).unwrap_or(u32::MAX)))
                .collect::<Result<Vec<_>>>()?
        }
    };
    let mut cfg = ConnectorConfig::new(sites, app_domains);
    cfg.proxy.listen = listen;
    if !allow_ports.is_empty() {
        cfg.proxy.allowed_ports = allow_ports;
    }
    let mut gateway_ca = None;
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca)
            .with_context(|| format!("cannot read the gateway CA file {}", ca.display()))?;
        cfg.proxy.upstream_tls = Some(
            tsuzuku_connector::tls::client_config(&pem)
                .with_context(|| format!("gateway CA file {}", ca.display()))?,
        );
        cfg.probe.ca_pem = Some(pem.clone());
        gateway_ca = Some(pem);
    }
    // Device trust: the device certificate on every connection to a gateway, browser tunnels
    // through device tunnels, and signed posture reports.
    let device = match (&a.device.device_dir, &gateway_ca) {
        (None, _) => None,
        (Some(dir), None) => bail!(
            "--device-dir {} needs --ca: the device certificate is presented over TLS to gateways",
            dir.display()
        ),
        (Some(dir), Some(pem)) => {
            let id = std::sync::Arc::new(
                tsuzuku_connector::device::DeviceIdentity::load(dir)
                    .with_context(|| format!("--device-dir {}", dir.display()))?,
            );
            cfg.proxy.upstream_tls = Some(
                id.client_config(pem)
                    .with_context(|| format!("--device-dir {}", dir.display()))?,
            );
            cfg.proxy.device_tunnel = true;
            cfg.probe.client_identity_pem = Some(id.identity_pem());
            let collector = tsuzuku_device::collect::CollectorConfig {
                antivirus_process: a.device.av_process.clone(),
                antivirus_version_command: a
                    .device
                    .av_version_cmd
                    .as_deref()
                    .map(|c| c.split_whitespace().map(str::to_owned).collect()),
                ..Default::default()
            };
            let every = super::dr::parse_duration("--posture-every", &a.device.posture_every)?;
            outln!("device: {}", id.device_id)?;
            Some((id, pem.clone(), collector, every))
        }
    };
    cfg.dr = dr_config(&a.dr, first_list.as_ref())?;
    let mut connector = Connector::start(cfg).await?;
    let _posture = device.map(|(id, pem, collector, every)| {
        AbortOnDrop(tsuzuku_connector::device::spawn_posture_reporter(
            connector.state().clone(),
            connector.dr_link(),
            id,
            pem,
            collector,
            every,
        ))
    });
    connector.set_exclusions(exclusions);
    connector.set_sheds(sheds);
    // The DR state as the main loop last saw it, for the reports.
    let (dr_tx, dr_rx) = tokio::sync::watch::channel(connector.dr_status());
    // Experience monitoring: the site in use, its latency and the DR state, every 10 s.
    let report_every = super::dr::parse_duration("--report-every", &a.report_every)?;
    let _reports = match report_to {
        Some(source) => {
            let device = a.device_id.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "device".into())
            });
            let state = connector.state().clone();
            Some(AbortOnDrop(tsuzuku_connector::sitelist::spawn_reports(
                &source,
                device,
                report_every,
                move || (state.status(), dr_rx.borrow().clone()),
            )?))
        }
        None => None,
    };
    let (mut lists, _feed_task) = match feed {
        Some((rx, task)) => (Some(rx), Some(AbortOnDrop(task))),
        None => (None, None),
    };
    // A running connector keeps running when nobody reads its output any more.
    let _ = outln!("PAC {}", connector.pac_url());
    let _ = outln!("READY {}", connector.proxy_addr());
    let mut last = String::new();
    let mut last_dr = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let status = connector.status();
                let now = format!("{:?}", status.selection.site);
                if now != last {
                    let _ = outln!("site: {} ({})", status.selection.site.as_deref().unwrap_or("none"), status.selection.reason);
                    last = now;
                }
                if let Some(dr) = connector.dr_status() {
                    dr_tx.send_replace(Some(dr.clone()));
                    let phase = dr_phase_line(&dr);
                    if phase != last_dr {
                        let _ = outln!("{phase}");
                        last_dr = phase;
                    }
                }
            }
            Some(list) = next_list(&mut lists) => {
                if list.sites != connector.state().sites()
                    && let Err(e) = connector.set_sites(list.sites.clone())
                {
                    tracing::error!(error = %e, "the new site list cannot be used; keeping the previous one");
                    continue;
                }
                connector.set_exclusions(list.exclusions.clone());
                connector.set_sheds(list.sheds.clone());
                // A running connector takes the list's DR gateway and critical apps too.
                if let Some((gw, critical)) = list_dr_targets(&a.dr, &list)? {
                    match connector.set_dr_targets(gw, critical) {
                        Ok(true) => if let Some(dr) = connector.dr_status() { let _ = outln!("dr targets: {}", dr.targets); },
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "the site list's DR gateway or critical apps cannot be used; keeping the previous ones"),
                    }
                }
                let _ = outln!("site list: version {} ({} sites, {} excluded, {} shedding)", list.version, list.sites.len(), list.exclusions.len(), list.sheds.len());
            }
            () = super::shutdown_signal() => break,
        }
    }
    connector.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `dr: active internet=… drill=…`, `dr: returning` or `dr: normal` — printed on every change.
fn dr_phase_line(dr: &tsuzuku_connector::DrStatus) -> String {
    match &dr.phase {
        tsuzuku_connector::Phase::Active(m) => {
            format!("dr: active internet={} drill={}", m.internet, m.drill)
        }
        tsuzuku_connector::Phase::Returning => "dr: returning".to_owned(),
        tsuzuku_connector::Phase::Normal => "dr: normal".to_owned(),
    }
}

/// A duration flag of DR mode: 30s, 2m, 1h, ...
fn dr_duration(flag: &str, text: &str) -> Result<Duration> {
    let span: jiff::Span = text
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected a duration such as 30s, 2m or 1h"))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .with_context(|| format!("{flag} {text:?}: not a fixed length of time"))?;
    Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} {text:?}: must be longer than zero"))
}

/// The DR settings from the `--dr-*` flags; `None` without `--dr-record`.
/// The DR settings from the flags; the DR gateway and the critical apps may instead come from
/// the control plane's signed site list (`from_list`), the flags adding to or overriding it.
fn dr_config(
    a: &crate::cli::ConnectDrArgs,
    from_list: Option<&tsuzuku_connector::sitelist::SiteList>,
) -> Result<Option<tsuzuku_connector::DrConfig>> {
    let Some(record) = &a.dr_record else {
        return Ok(None);
    };
    let mut trusted = tsuzuku_dr::TrustedKeys::new();
    for p in &a.dr_trust {
        let pem = std::fs::read_to_string(p)
            .with_context(|| format!("--dr-trust: cannot read {}", p.display()))?;
        trusted
            .insert_pem(&pem)
            .with_context(|| format!("--dr-trust {}", p.display()))?;
    }
    let transport: tsuzuku_dr::lookup::Transport = a
        .dr_dns
        .parse()
        .with_context(|| format!("--dr-dns {:?}", a.dr_dns))?;
    let transport = match &a.dr_dns_ca {
        Some(ca) => transport.with_ca_file(ca).context("--dr-dns-ca")?,
        None => transport,
    };
    let gateway = match (
        a.dr_gateway.as_deref(),
        from_list.and_then(|l| l.dr_gateway.clone()),
    ) {
        (Some(spec), _) => parse_dr_gateway(spec)?,
        (None, Some(g)) => g,
        (None, None) => bail!(
            "--dr-record needs the DR gateway: --dr-gateway HOST@ADDR[,ADDR...], or a DR site in the control plane's site list (`tsuzuku site add NAME --dr ...`)"
        ),
    };
    let mut cfg = tsuzuku_connector::DrConfig::new(record, transport, trusted, gateway);
    cfg.interval = dr_duration("--dr-interval", &a.dr_interval)?;
    cfg.allowlist_refresh = dr_duration("--dr-allowlist-refresh", &a.dr_allowlist_refresh)?;
    cfg.lookup_timeout = cfg.lookup_timeout.min(cfg.interval);
    cfg.state_file = a.dr_state.clone();
    cfg.allowlist_cache = a.dr_state.as_ref().map(|p| {
        let mut s = p.as_os_str().to_owned();
        s.push(".allowlist");
        std::path::PathBuf::from(s)
    });
    cfg.member = tsuzuku_dr::Member {
        groups: a.dr_groups.clone(),
        device_id: a.dr_device.clone(),
    };
    // The flags' critical hosts, then the site list's (without ports).
    cfg.critical_hosts = tsuzuku_connector::sitelist::dr_targets(
        from_list,
        Some(&cfg.gateway),
        &a.dr_critical_hosts,
    )
    .map(|(_, c)| c)
    .unwrap_or_default();
    cfg.allow = a.dr_allow.clone();
    cfg.allowlist_source = allowlist_source(a)?;
    Ok(Some(cfg))
}

/// The DR gateway and critical apps for a new site list, with the flags' over and beside the
/// list's; `None` without DR mode.
fn list_dr_targets(
    a: &crate::cli::ConnectDrArgs,
    list: &tsuzuku_connector::sitelist::SiteList,
) -> Result<Option<(tsuzuku_connector::DrGateway, Vec<String>)>> {
    if a.dr_record.is_none() {
        return Ok(None);
    }
    let local = a.dr_gateway.as_deref().map(parse_dr_gateway).transpose()?;
    Ok(tsuzuku_connector::sitelist::dr_targets(
        Some(list),
        local.as_ref(),
        &a.dr_critical_hosts,
    ))
}

/// The signed allowlist's source: an http(s) URL, or s3://BUCKET/KEY with the
/// `--dr-allowlist-s3-*` flags (credentials from a file or the environment).
fn allowlist_source(
    a: &crate::cli::ConnectDrArgs,
) -> Result<Option<tsuzuku_connector::internet::fetch::ListSource>> {
    use tsuzuku_connector::internet::fetch::{ListSource, S3Credentials, S3Object};
    let Some(url) = &a.dr_allowlist_url else {
        return Ok(None);
    };
    if !url.starts_with("s3://") {
        return Ok(Some(ListSource::http(url).context("--dr-allowlist-url")?));
    }
    let credentials = match &a.dr_allowlist_s3_credentials {
        Some(p) => S3Credentials::from_file(p).context("--dr-allowlist-s3-credentials")?,
        None => S3Credentials::from_env().with_context(|| {
            format!("--dr-allowlist-url {url}: give --dr-allowlist-s3-credentials FILE")
        })?,
    };
    let region = &a.dr_allowlist_s3_region;
    let (endpoint, virtual_hosted) = match &a.dr_allowlist_s3_endpoint {
        Some(e) => (e.clone(), a.dr_allowlist_s3_virtual_hosted),
        None => (format!("https://s3.{region}.amazonaws.com"), true),
    };
    let object = S3Object::new(url, &endpoint, region, credentials)
        .context("--dr-allowlist-url")?
        .virtual_hosted(virtual_hosted);
    Ok(Some(ListSource::S3(object)))
}

fn parse_dr_gateway(spec: &str) -> Result<tsuzuku_connector::DrGateway> {
    let (host, addrs) = spec.split_once('@').with_context(|| {
        format!("--dr-gateway {spec:?}: expected HOST@ADDR[,ADDR...], e.g. dr-gw.example.com@10.0.0.5:443")
    })?;
    if host.is_empty() {
        bail!("--dr-gateway {spec:?}: the DR gateway's host name must not be empty");
    }
    let endpoints = addrs
        .split(',')
        .map(|x| {
            x.trim().parse::<SocketAddr>().with_context(|| {
                format!("--dr-gateway {spec:?}: {x:?} is not an IP address with a port, e.g. 10.0.0.5:443")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(tsuzuku_connector::DrGateway {
        host: host.to_owned(),
        endpoints,
    })
}

fn site_list_source(
    a: &crate::cli::ConnectArgs,
    url: &str,
) -> Result<tsuzuku_connector::sitelist::SiteListSource> {
    if !url.starts_with("https://") {
        bail!("--control {url:?}: expected an https:// URL");
    }
    let trust_path = a
        .control_trust
        .as_ref()
        .context("--control needs --control-trust (the control plane's public key)")?;
    // Re-read when it changes: a signing-key rotation needs no connector restart.
    let trusted = std::sync::Arc::new(
        tsuzuku_snapshot::TrustFile::open(trust_path)
            .with_context(|| format!("--control-trust {}", trust_path.display()))?,
    );
    let ca_pem = match &a.control_ca {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("reading --control-ca {}", p.display()))?,
        ),
        None => None,
    };
    Ok(tsuzuku_connector::sitelist::SiteListSource {
        control_url: url.to_owned(),
        trusted,
        tenant: a.tenant.clone(),
        ca_pem,
        cache_file: a.site_cache.clone(),
    })
}

/// The next site list, or never when there is no feed.
async fn next_list(
    rx: &mut Option<tsuzuku_connector::sitelist::SiteLists>,
) -> Option<std::sync::Arc<tsuzuku_connector::sitelist::SiteList>> {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            r.borrow_and_update().clone()
        }
        None => std::future::pending().await,
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks a running connector (on loopback) for its status and prints it.
pub async fn status(proxy: SocketAddr) -> Result<ExitCode> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(proxy),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no connector answers at {proxy} (timed out)"))?
    .with_context(|| format!("no connector answers at {proxy}; is `tsuzuku connect` running?"))?;
    s.write_all(
        format!("GET /status HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .with_context(|| format!("asking the connector at {proxy}"))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("the connector at {proxy} did not answer within 5 s"))?
        .with_context(|| format!("reading the connector's answer from {proxy}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the connector at {proxy} answered {}",
            head.lines().next().unwrap_or("nothing")
        );
    }
    out!("{body}")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn site_specs() {
        let s = parse_site("tokyo=gw.example.com@192.0.2.10:443,192.0.2.11:443", 0).unwrap();
        assert_eq!(s.name, "tokyo");
        assert_eq!(s.host, "gw.example.com");
        assert_eq!(s.endpoints.len(), 2);
        for bad in [
            "tokyo",
            "tokyo=gw",
            "=gw@1.2.3.4:1",
            "t=gw@nohost",
            "t=@1.2.3.4:1",
        ] {
            assert!(parse_site(bad, 0).is_err(), "{bad}");
        }
    }
}
