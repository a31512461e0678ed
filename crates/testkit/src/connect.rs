//! End-to-end helpers for `tsuzuku connect`: start a connector and learn its proxy address and
//! PAC URL from its `PAC <url>` / `READY <addr>` lines, keep its output lines, ask it for
//! `tsuzuku connect status`, and send a raw `CONNECT` through its proxy.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::gateway::KitError;
use crate::lines::LineLog;

/// A running `tsuzuku connect`; killed on drop.
pub struct Connector {
    pub child: Child,
    /// The proxy's address, from the `READY <addr>` line.
    pub proxy: String,
    /// The PAC file's URL, from the `PAC <url>` line printed before `READY`.
    pub pac: Option<String>,
    /// Its stdout lines, from the first (the `READY` line and those before it included).
    pub stdout: LineLog,
    /// Its stderr lines when the command pipes stderr (`Stdio::piped()`); empty otherwise.
    pub stderr: LineLog,
    bin: PathBuf,
}

impl Connector {
    /// Spawns `cmd`, a `tsuzuku connect …` command (its stdout is piped and it is killed on
    /// drop; its stderr goes where `cmd` says), and reads its stdout until `READY <addr>`.
    /// Fails if it ends without that line.
    pub async fn start(cmd: &mut Command) -> Result<Self, KitError> {
        let bin = PathBuf::from(cmd.as_std().get_program());
        let mut child = cmd
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| KitError::Msg(format!("could not start {}: {e}", bin.display())))?;
        let stderr = LineLog::new();
        if let Some(err) = child.stderr.take() {
            stderr.collect(err);
        }
        let out = child
            .stdout
            .take()
            .ok_or_else(|| KitError::Msg(format!("{}: no stdout", bin.display())))?;
        let mut lines = BufReader::new(out).lines();
        let stdout = LineLog::new();
        let mut pac = None;
        let proxy = loop {
            let Some(l) = lines.next_line().await? else {
                let exit = child.wait().await?;
                return Err(KitError::Msg(format!(
                    "{} ended ({exit}) without printing `READY <address>`; stdout: {:?}; stderr: {:?}",
                    bin.display(),
                    stdout.lines(),
                    stderr.lines()
                )));
            };
            if let Some(u) = l.strip_prefix("PAC ") {
                pac = Some(u.to_owned());
            }
            let ready = l.strip_prefix("READY ").map(str::to_owned);
            stdout.push(l);
            if let Some(a) = ready {
                break a;
            }
        };
        stdout.collect_lines(lines);
        Ok(Self {
            child,
            proxy,
            pac,
            stdout,
            stderr,
            bin,
        })
    }

    /// `tsuzuku connect status --proxy <this proxy>` with the binary that started it: stdout.
    pub fn status(&self) -> Result<String, KitError> {
        status(&self.bin, &self.proxy)
    }

    /// Kills the connector and waits for it to end; its lines stay readable.
    pub async fn stop(&mut self) -> Result<(), KitError> {
        self.child.kill().await?;
        Ok(())
    }
}

/// `tsuzuku connect status --proxy <proxy>` run with `bin`: its stdout; an error with its
/// stderr when it fails.
pub fn status(bin: impl AsRef<OsStr>, proxy: &str) -> Result<String, KitError> {
    let bin = Path::new(bin.as_ref());
    let out = std::process::Command::new(bin)
        .args(["connect", "status", "--proxy", proxy])
        .output()?;
    if !out.status.success() {
        return Err(KitError::Msg(format!(
            "{} connect status --proxy {proxy} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A raw `CONNECT target` through the proxy at `proxy`: the status line of the answer (read
/// within 5 s).
pub async fn connect_status(proxy: &str, target: &str) -> Result<String, KitError> {
    let answer = raw_connect(proxy, target, Duration::ZERO, Duration::from_secs(5)).await?;
    Ok(answer.lines().next().unwrap_or("").to_owned())
}

/// A raw `CONNECT target` through the proxy at `proxy`: the whole answer, the status line and
/// the explanation of a refusal. They may come in separate writes, so it waits 200 ms before
/// reading (within 10 s).
pub async fn connect_answer(proxy: &str, target: &str) -> Result<String, KitError> {
    raw_connect(
        proxy,
        target,
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
    .await
}

/// Sends `CONNECT target`, waits `settle`, and returns what one read within `within` gets.
async fn raw_connect(
    proxy: &str,
    target: &str,
    settle: Duration,
    within: Duration,
) -> Result<String, KitError> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    tokio::time::sleep(settle).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, s.read(&mut buf))
        .await
        .map_err(|_| {
            KitError::Msg(format!(
                "the proxy at {proxy} did not answer CONNECT {target} within {within:?}"
            ))
        })??;
    Ok(String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned())
}

#[cfg(test)]
mod tests;
