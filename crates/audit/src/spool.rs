//! A local spool in front of the central audit store, so that the data plane keeps deciding
//! (and auditing) while the store cannot take writes — a lost primary site, a standby not yet
//! promoted, a database restart (OPS-1, DP-1).
//!
//! [`Spooled`] wraps any [`AuditBackend`]. A batch goes to the backend as usual; when the backend
//! fails with a *retryable* error, the batch is appended to a local file instead (one line of
//! JSON per event, written and `fdatasync`ed before the batch is acknowledged), and from then on
//! every batch goes to the file, so the order of events is kept. [`Spooled::drain`] — run
//! periodically by [`Spooled::spawn_drainer`] — ships the file's events to the backend in
//! order, rewriting the file after each committed chunk, and switches back to direct writes
//! once the file is empty.
//!
//! Guarantees: an acknowledged event is in the backend or in the spool file (it survives
//! `kill -9` and power loss). Delivery to the backend is at least once: a crash between a
//! backend commit and the rewrite of the spool file ships that chunk again after restart (the
//! copies are visible in the chain as identical events). A line cut short by a crash while it
//! was being written was never acknowledged and is skipped with a warning.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::event::AuditEvent;
use crate::writer::{AuditBackend, AuditError};

#[cfg(test)]
mod tests;

/// Events shipped from the spool in one backend batch.
const DRAIN_CHUNK: usize = 500;

/// A backend with a local spool file for the times the backend cannot take writes.
pub struct Spooled<B> {
    inner: B,
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
    drain_lock: tokio::sync::Mutex<()>,
    pending: AtomicBool,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AuditError {
    AuditError::permanent(format!("audit spool {}: {what}: {e}", path.display()))
}

impl<B: AuditBackend> Spooled<B> {
    /// Wraps `inner`, spooling to `path` (its directory is created; an existing spool file from
    /// before a restart is kept and shipped first).
    pub fn open(inner: B, path: PathBuf) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("creating its directory", &path, e))?;
        }
        let pending = std::fs::metadata(&path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        Ok(Self {
            inner,
            path,
            lock: tokio::sync::Mutex::new(()),
            drain_lock: tokio::sync::Mutex::new(()),
            pending: AtomicBool::new(pending),
        })
    }

    /// Whether events are waiting in the spool file.
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ships spooled events to the backend, oldest first. Returns how many were shipped; stops
    /// at the first backend error (the rest stay spooled).
    ///
    /// The spool file is first renamed to `*.shipping` (under the append lock, a moment), then
    /// shipped without holding that lock, so appends never wait for the backend.
    pub async fn drain(&self) -> Result<usize, AuditError> {
        let _one_drainer = self.drain_lock.lock().await;
        let shipping = self.shipping_path();
        {
            let _g = self.lock.lock().await;
            if !shipping.exists() {
                if !self.has_pending() {
                    return Ok(0);
                }
                match std::fs::rename(&self.path, &shipping) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.pending.store(false, Ordering::SeqCst);
                        return Ok(0);
                    }
                    Err(e) => return Err(io_err("moving aside for shipping", &self.path, e)),
                }
            }
        }
        let mut events = read_spool(&shipping)?;
        let mut shipped = 0;
        while !events.is_empty() {
            let n = events.len().min(DRAIN_CHUNK);
            let chunk: Vec<AuditEvent> = events.drain(..n).collect();
            if let Err(e) = self.inner.append(&chunk).await {
                // Put the chunk back in front; the file still holds all of them.
                let mut rest = chunk;
                rest.append(&mut events);
                return if shipped > 0 {
                    rewrite_spool(&shipping, &rest).map(|()| shipped)
                } else {
                    Err(e)
                };
            }
            shipped += n;
            rewrite_spool(&shipping, &events)?;
        }
        let _g = self.lock.lock().await;
        let more = std::fs::metadata(&self.path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        self.pending.store(more, Ordering::SeqCst);
        Ok(shipped)
    }

    fn shipping_path(&self) -> PathBuf {
        self.path.with_extension("shipping")
    }

    /// Drains every `every` until the returned task is aborted or `self` is dropped elsewhere.
    pub fn spawn_drainer(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { break };
                match me.drain().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "audit spool shipped to the store"),
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, "audit store still unavailable; keeping the spool");
                    }
                    Err(e) => tracing::error!(error = %e, "audit spool could not be shipped"),
                }
            }
        })
    }
}

impl<B: AuditBackend> AuditBackend for Spooled<B> {
    async fn append(&self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        let _g = self.lock.lock().await;
        if !self.has_pending() {
            match self.inner.append(batch).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, spool = %self.path.display(),
                        "audit store cannot take writes; spooling audit events locally");
                }
                Err(e) => return Err(e),
            }
        }
        append_spool(&self.path, batch)?;
        self.pending.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn append_spool(path: &Path, batch: &[AuditEvent]) -> Result<(), AuditError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut buf = Vec::new();
    for ev in batch {
        serde_json::to_writer(&mut buf, ev)
            .map_err(|e| AuditError::permanent(format!("audit event cannot be spooled: {e}")))?;
        buf.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("opening", path, e))?;
    f.write_all(&buf).map_err(|e| io_err("writing", path, e))?;
    f.sync_data().map_err(|e| io_err("syncing", path, e))?;
    Ok(())
}

fn read_spool(path: &Path) -> Result<Vec<AuditEvent>, AuditError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", path, e)),
    };
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| io_err("reading", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditEvent>(&line) {
            Ok(ev) => events.push(ev),
            Err(e) => tracing::warn!(line = n + 1, error = %e, spool = %path.display(),
                "skipping a spool line cut short by a crash (it was never acknowledged)"),
        }
    }
    Ok(events)
}

/// Replaces a spool file with `events` (write to a temporary file, sync, rename).
fn rewrite_spool(path: &Path, events: &[AuditEvent]) -> Result<(), AuditError> {
    if events.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", path, e)),
        };
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    append_spool(&tmp, events)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("replacing", path, e))
}
