//! `tsuzuku connect`: the device agent — a local forward proxy with a PAC file that sends the
//! organisation's app domains to the best healthy gateway site.
//!
//! The site list comes from the command line for now; fetching it signed from the control
//! plane is not built yet (issue 4, item 2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

pub async fn run(
    listen: SocketAddr,
    sites: &[String],
    app_domains: Vec<String>,
    ca: Option<PathBuf>,
    allow_ports: Vec<u16>,
) -> Result<ExitCode> {
    if sites.is_empty() {
        bail!("give at least one --site NAME=HOST@ADDR[,ADDR...]");
    }
    if app_domains.is_empty() {
        bail!(
            "give at least one --app-domain (e.g. example.com) whose traffic goes through the gateway"
        );
    }
    let sites = sites
        .iter()
        .enumerate()
        .map(|(i, s)| parse_site(s, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect::<Result<Vec<_>>>()?;
    let mut cfg = ConnectorConfig::new(sites, app_domains);
    cfg.proxy.listen = listen;
    if !allow_ports.is_empty() {
        cfg.proxy.allowed_ports = allow_ports;
    }
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca)
            .with_context(|| format!("cannot read the gateway CA file {}", ca.display()))?;
        cfg.proxy.upstream_tls = Some(
            tsuzuku_connector::tls::client_config(&pem)
                .with_context(|| format!("gateway CA file {}", ca.display()))?,
        );
        cfg.probe.ca_pem = Some(pem);
    }
    let connector = Connector::start(cfg).await?;
    println!("PAC {}", connector.pac_url());
    println!("READY {}", connector.proxy_addr());
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let status = connector.status();
                let now = format!("{:?}", status.selection.site);
                if now != last {
                    println!("site: {} ({})", status.selection.site.as_deref().unwrap_or("none"), status.selection.reason);
                    last = now;
                }
            }
            () = super::shutdown_signal() => break,
        }
    }
    connector.shutdown().await;
    Ok(ExitCode::SUCCESS)
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
    print!("{body}");
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
