//! The connector's status as `tsuzuku connect status` shows it: fetched from the connector's
//! loopback `/status` (the endpoint that command reads) and read line by line.
//!
//! The text looks like:
//!
//! ```text
//! site in use: b (failed over: site a missed 3 probes (last: could not connect))
//!   a (preference 0): down: missed 3 probes (last: could not connect), latency 4 ms, loss 5.0%
//!     127.0.0.1:4431 down: ...
//!   b (preference 1): healthy, latency 5 ms, loss 0.0%
//!     127.0.0.1:4432 live
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::BenchError;

#[cfg(test)]
mod tests;

/// What one status text says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The site in use; `None` when the connector uses none (all down).
    pub site: Option<String>,
    /// Why, as the connector explains it.
    pub reason: String,
    /// Every site: name, health ("healthy", "not probed yet", "down: ..."), latency in ms.
    pub sites: Vec<SiteLine>,
}

/// Where a connector stands in disaster-recovery mode, from its status text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrPhase {
    Normal,
    Active,
    Returning,
}

/// The DR phase the status text shows (its `disaster recovery:` line); `None` without DR mode
/// configured. Pure.
pub fn dr_phase(text: &str) -> Option<DrPhase> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("disaster recovery: "))?;
    if rest.starts_with("ACTIVE") {
        Some(DrPhase::Active)
    } else if rest.starts_with("RETURNING") {
        Some(DrPhase::Returning)
    } else if rest.starts_with("not active") {
        Some(DrPhase::Normal)
    } else {
        None
    }
}

/// One site's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteLine {
    pub name: String,
    pub health: String,
    pub latency_ms: Option<u64>,
}

impl Status {
    /// Reads the status text; `None` when it has no `site in use:` line.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let first = lines.next()?.strip_prefix("site in use: ")?;
        let (site, reason) = match first.split_once(" (") {
            Some((s, r)) => (s, r.strip_suffix(')').unwrap_or(r)),
            None => (first, ""),
        };
        let site = (site != "none").then(|| site.to_owned());
        let mut sites = Vec::new();
        for l in lines {
            // Site lines are indented by two spaces, endpoint lines by four.
            let Some(rest) = l.strip_prefix("  ") else {
                break;
            };
            if rest.starts_with(' ') {
                continue;
            }
            let Some((name, after)) = rest.split_once(" (preference ") else {
                continue;
            };
            let Some((_, after)) = after.split_once("): ") else {
                continue;
            };
            let (health, latency) = match after.rsplit_once(", latency ") {
                Some((h, l)) => (h, l),
                None => (after, ""),
            };
            let latency_ms = latency
                .split_once(" ms")
                .and_then(|(n, _)| n.trim().parse().ok());
            sites.push(SiteLine {
                name: name.to_owned(),
                health: health.to_owned(),
                latency_ms,
            });
        }
        Some(Self {
            site,
            reason: reason.to_owned(),
            sites,
        })
    }

    /// Whether `site` is in use.
    pub fn on(&self, site: &str) -> bool {
        self.site.as_deref() == Some(site)
    }

    /// Whether every listed site is healthy (and at least one is listed).
    pub fn all_healthy(&self) -> bool {
        !self.sites.is_empty() && self.sites.iter().all(|s| s.health == "healthy")
    }

    /// The smoothed latency the connector measured for `site`.
    pub fn latency_ms(&self, site: &str) -> Option<u64> {
        self.sites
            .iter()
            .find(|s| s.name == site)
            .and_then(|s| s.latency_ms)
    }
}

/// Asks the connector listening at `proxy` for its status text (`GET /status`, as
/// `tsuzuku connect status` does).
pub async fn fetch_text(proxy: SocketAddr) -> Result<String, BenchError> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(proxy).await?;
        s.write_all(
            format!("GET /status HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| {
            BenchError::Msg(format!(
                "the connector at {proxy} did not answer GET /status within 3 s"
            ))
        })??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(BenchError::Msg(format!(
            "the connector at {proxy} answered GET /status with {:?}",
            head.lines().next().unwrap_or("nothing")
        )));
    }
    Ok(body.to_owned())
}

/// Fetches and reads the status of the connector at `proxy`.
pub async fn fetch(proxy: SocketAddr) -> Result<Status, BenchError> {
    let text = fetch_text(proxy).await?;
    Status::parse(&text).ok_or_else(|| {
        BenchError::Msg(format!(
            "the connector at {proxy} sent a status without a 'site in use:' line: {text:?}"
        ))
    })
}
