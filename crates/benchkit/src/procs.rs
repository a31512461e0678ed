//! Real `tsuzuku` processes for benchmarks: a gateway (`tsuzuku serve`) that can be killed with
//! SIGKILL and started again on the same address, and a connector (`tsuzuku connect`). Each
//! process's stderr goes to a log file; stdout is read until `READY` and then drained.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::BenchError;

/// How long a process may take to print `READY`.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Opens `path` for appending (the log of every start of one process).
fn log_file(path: &Path) -> Result<std::fs::File, BenchError> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

/// Reads stdout until a line starting with `READY `, remembering every line starting with one
/// of `keep`; then drains the rest in the background so the process never blocks on a full
/// pipe. Returns the `READY` line's rest and the kept lines.
async fn wait_ready(
    stdout: ChildStdout,
    what: &str,
    keep: &[&str],
) -> Result<(String, Vec<String>), BenchError> {
    let mut lines = BufReader::new(stdout).lines();
    let mut kept = Vec::new();
    let found = tokio::time::timeout(READY_WITHIN, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(rest) = l.strip_prefix("READY ") {
                return Some(rest.to_owned());
            }
            if keep.iter().any(|k| l.starts_with(k)) {
                kept.push(l);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(ready) = found else {
        return Err(BenchError::Msg(format!(
            "{what} did not print READY within {} s; see its log",
            READY_WITHIN.as_secs()
        )));
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((ready, kept))
}

/// One gateway process of one site.
pub struct Gateway {
    pub name: String,
    bin: PathBuf,
    data: PathBuf,
    config: Option<PathBuf>,
    pub addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Gateway {
    /// A gateway serving `data` (with `config` instead of the data directory's own
    /// `tsuzuku.toml`, if given) that listens on `addr` once started.
    pub fn new(
        name: &str,
        bin: &Path,
        data: &Path,
        config: Option<PathBuf>,
        addr: SocketAddr,
        log: PathBuf,
    ) -> Self {
        Self {
            name: name.to_owned(),
            bin: bin.to_owned(),
            data: data.to_owned(),
            config,
            addr,
            log,
            child: None,
        }
    }

    /// Starts `tsuzuku serve` and waits for `READY`; returns when that was printed.
    pub async fn start(&mut self) -> Result<Instant, BenchError> {
        if self.child.is_some() {
            return Err(BenchError::Msg(format!(
                "gateway {} is already running",
                self.name
            )));
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir").arg(&self.data);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd
            .arg("serve")
            .env(
                "TSUZUKU_LOG",
                std::env::var("TSUZUKU_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.log)?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Msg("no stdout".into()))?;
        let what = format!("gateway {} ({})", self.name, self.log.display());
        match wait_ready(stdout, &what, &[]).await {
            Ok(_) => {
                self.child = Some(child);
                Ok(Instant::now())
            }
            Err(e) => {
                let _ = child.kill().await;
                Err(e)
            }
        }
    }

    /// SIGKILL, as a crash would; waits until the process is gone. Returns the moment the
    /// signal was sent.
    pub async fn kill9(&mut self) -> Result<Instant, BenchError> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| BenchError::Msg(format!("gateway {} is not running", self.name)))?;
        let at = Instant::now();
        child.start_kill()?;
        child.wait().await?;
        Ok(at)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running `tsuzuku connect`. Killed when dropped.
pub struct Connector {
    pub proxy: SocketAddr,
    pub pac: String,
    child: Child,
}

impl Connector {
    /// Starts `tsuzuku connect` on a free loopback port with `sites` (name and address, most
    /// preferred first; `host` is every gateway's TLS name), the app domain `domain`, the
    /// gateway CA `ca`, and `allow_port` open for CONNECT.
    pub async fn start(
        bin: &Path,
        sites: &[(&str, SocketAddr)],
        host: &str,
        domain: &str,
        ca: &Path,
        allow_port: u16,
        log: &Path,
    ) -> Result<Self, BenchError> {
        Self::start_with(bin, sites, host, domain, ca, allow_port, &[], log).await
    }

    /// [`Connector::start`] with more `tsuzuku connect` arguments (`extra`), e.g. the
    /// disaster-recovery flags.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with(
        bin: &Path,
        sites: &[(&str, SocketAddr)],
        host: &str,
        domain: &str,
        ca: &Path,
        allow_port: u16,
        extra: &[String],
        log: &Path,
    ) -> Result<Self, BenchError> {
        let mut cmd = Command::new(bin);
        cmd.args(["connect", "--listen", "127.0.0.1:0"]);
        for (name, addr) in sites {
            cmd.arg("--site").arg(format!("{name}={host}@{addr}"));
        }
        let mut child = cmd
            .args(["--app-domain", domain])
            .args(["--allow-port", &allow_port.to_string()])
            .arg("--ca")
            .arg(ca)
            .args(extra)
            .env(
                "TSUZUKU_LOG",
                std::env::var("TSUZUKU_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(log)?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Msg("no stdout".into()))?;
        let what = format!("the connector ({})", log.display());
        let (ready, kept) = match wait_ready(stdout, &what, &["PAC "]).await {
            Ok(x) => x,
            Err(e) => {
                let _ = child.kill().await;
                return Err(e);
            }
        };
        let proxy = ready.trim().parse().map_err(|e| {
            BenchError::Msg(format!(
                "the connector printed READY {ready:?}, not an address: {e}"
            ))
        })?;
        let pac = kept
            .iter()
            .find_map(|l| l.strip_prefix("PAC "))
            .unwrap_or_default()
            .to_owned();
        Ok(Self { proxy, pac, child })
    }

    /// Stops the connector (SIGKILL) and waits for it.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}
