//! A local spool in front of the central audit store, so that the data plane keeps deciding
//! (and auditing) while the store cannot take writes — a lost primary site, a standby not yet
//! promoted, a database restart (OPS-1, DP-1).
//!
//! [`Spooled`] wraps any [`AuditBackend`]. A batch goes to the backend as usual; when the backend
//! fails with a *retryable* error, the batch is appended to a local file instead (one line of
//! JSON per event, written and `fdatasync`ed before the batch is acknowledged), and from then on
//! every batch goes to the file, so the order of events is kept. [`Spooled::drain`] — run
//! periodically by [`Spooled::spawn_drainer`] — moves the file aside (`*.shipping`), ships its
//! events to the backend in order, rewriting that file after each committed chunk, and switches
//! back to direct writes once neither file holds anything. One process at a time uses a spool:
//! [`Spooled::open`] takes an exclusive lock on `<spool>.lock` for as long as the [`Spooled`]
//! lives, and fails with [`SpoolOpenError::InUse`] while another process holds it.
//!
//! Guarantees: an acknowledged event is in the backend or in the spool files (it survives
//! `kill -9` and power loss). Delivery to the backend is at least once: a crash between a
//! backend commit and the rewrite of the spool file ships that chunk again after restart (the
//! copies are visible in the chain as identical events). A write or sync that fails is cut back
//! from the file, and a line cut short by a crash (the file's tail without its newline — never
//! acknowledged) is cut off before the next append or skipped when shipping, with a warning. A
//! line that cannot be read anywhere else is corruption or tampering: it is logged as an error
//! with its line number, and the good events around it are shipped. Nothing is dropped: every
//! unreadable line, torn tails included, is first appended verbatim to `<spool>.rejected` (0600,
//! synced) beside the spool.

use std::io::{BufRead, Read, Seek as _, Write};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
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

/// Bytes read at a time when looking backwards for the end of the last whole line.
const TAIL_SCAN_CHUNK: u64 = 64 * 1024;

/// Why [`Spooled::open`] could not open a spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolOpenError {
    /// Another process (or another [`Spooled`] in this one) holds the spool's lock. Two
    /// gateways shipping one spool would record its events twice.
    #[error(
        "another gateway process is using the audit spool {} (it holds {}); stop it first, or give this process its own port or --node-id",
        spool.display(),
        lock.display()
    )]
    InUse { spool: PathBuf, lock: PathBuf },
    /// The spool's directory or files could not be created or read.
    #[error("audit spool {}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A backend with a local spool file for the times the backend cannot take writes.
pub struct Spooled<B> {
    inner: B,
    path: PathBuf,
    /// Where unreadable lines are kept (`<spool>.rejected`).
    rejected: PathBuf,
    lock: tokio::sync::Mutex<()>,
    drain_lock: tokio::sync::Mutex<()>,
    pending: AtomicBool,
    /// Holds the exclusive lock on `<spool>.lock` while `self` lives (released on drop).
    _owner: std::fs::File,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AuditError {
    AuditError::permanent(format!("audit spool {}: {what}: {e}", path.display()))
}

/// `path` with `suffix` added to its file name (`gw.jsonl` → `gw.jsonl.lock`).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `map_err` for an I/O failure on `path` while opening or taking over a spool.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolOpenError {
    let path = path.to_path_buf();
    move |source| SpoolOpenError::Io { path, what, source }
}

/// Opens `<spool>.lock` and takes its exclusive lock, held while the returned file lives.
fn lock_spool(path: &Path) -> Result<std::fs::File, SpoolOpenError> {
    let lock_path = beside(path, ".lock");
    let owner = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io("opening its lock file", &lock_path))?;
    match owner.try_lock() {
        Ok(()) => Ok(owner),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolOpenError::InUse {
            spool: path.to_path_buf(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io("locking", &lock_path)(e)),
    }
}

fn shipping_path(spool: &Path) -> PathBuf {
    spool.with_extension("shipping")
}

/// Whether `path` holds at least one byte (a missing file holds none).
fn non_empty(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len() > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether events wait in the spool: in the file itself or in one moved aside for shipping.
fn spooled_events(spool: &Path) -> std::io::Result<bool> {
    Ok(non_empty(spool)? || shipping_path(spool).try_exists()?)
}

impl<B: AuditBackend> Spooled<B> {
    /// Wraps `inner`, spooling to `path` (its directory is created; an existing spool file from
    /// before a restart is kept and shipped first). Fails with [`SpoolOpenError::InUse`] while
    /// another process uses the same spool.
    pub fn open(inner: B, path: PathBuf) -> Result<Self, SpoolOpenError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating its directory", &path))?;
        }
        let owner = lock_spool(&path)?;
        let pending = spooled_events(&path).map_err(io("reading", &path))?;
        Ok(Self {
            inner,
            rejected: beside(&path, ".rejected"),
            path,
            lock: tokio::sync::Mutex::new(()),
            drain_lock: tokio::sync::Mutex::new(()),
            pending: AtomicBool::new(pending),
            _owner: owner,
        })
    }

    /// Takes over a spool this process used under another name (before spools were named per
    /// listen address they were named by port alone), so that none of its events is stranded:
    /// while no process holds `legacy`'s lock and this spool holds no events, `legacy`'s files
    /// (the spool, its shipping file, its rejected lines) become this spool's. Returns whether
    /// anything was taken over. Call it before the first append or drain.
    pub fn adopt(&self, legacy: &Path) -> Result<bool, SpoolOpenError> {
        let legacy_rejected = beside(legacy, ".rejected");
        let has_rejected = legacy_rejected
            .try_exists()
            .map_err(io("reading", &legacy_rejected))?;
        if legacy == self.path
            || !(spooled_events(legacy).map_err(io("reading", legacy))? || has_rejected)
        {
            return Ok(false);
        }
        let _held = match lock_spool(legacy) {
            Ok(f) => f,
            // A live process uses it: it ships it.
            Err(SpoolOpenError::InUse { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if spooled_events(&self.path).map_err(io("reading", &self.path))? {
            tracing::warn!(legacy = %legacy.display(), spool = %self.path.display(),
                "both an older spool and this one hold events; the older one is left for an operator to ship");
            return Ok(false);
        }
        let mut moves = vec![
            (legacy.to_path_buf(), self.path.clone()),
            (shipping_path(legacy), shipping_path(&self.path)),
        ];
        if !self
            .rejected
            .try_exists()
            .map_err(io("reading", &self.rejected))?
        {
            moves.push((legacy_rejected, self.rejected.clone()));
        }
        for (from, to) in moves {
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("taking over an older spool", &from)(e)),
            }
        }
        sync_dir(&self.path).map_err(io("syncing its directory", &self.path))?;
        let pending = spooled_events(&self.path).map_err(io("reading", &self.path))?;
        self.pending.store(pending, Ordering::SeqCst);
        tracing::info!(legacy = %legacy.display(), spool = %self.path.display(),
            "took over the audit spool of an earlier version; its events are shipped from here");
        Ok(true)
    }

    /// Whether events are waiting in the spool (its file or the one moved aside for shipping).
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file beside the spool where unreadable spool lines are kept, verbatim.
    pub fn rejected_path(&self) -> &Path {
        &self.rejected
    }

    /// Ships spooled events to the backend, oldest first. Returns how many were shipped; stops
    /// at the first backend error (the rest stay spooled).
    ///
    /// The spool file is first renamed to `*.shipping` (under the append lock, a moment), then
    /// shipped without holding that lock, so appends never wait for the backend. Once that file
    /// is shipped (or held nothing readable) it is removed, and what was spooled meanwhile is
    /// moved aside and shipped in turn, until the spool is empty.
    pub async fn drain(&self) -> Result<usize, AuditError> {
        let _one_drainer = self.drain_lock.lock().await;
        let shipping = shipping_path(&self.path);
        let mut shipped = 0;
        loop {
            {
                let _g = self.lock.lock().await;
                let left = shipping
                    .try_exists()
                    .map_err(|e| io_err("looking for", &shipping, e))?;
                if !left {
                    if !self.has_pending() {
                        return Ok(shipped);
                    }
                    let more =
                        non_empty(&self.path).map_err(|e| io_err("reading", &self.path, e))?;
                    if !more {
                        // Neither file holds anything: back to direct writes.
                        self.pending.store(false, Ordering::SeqCst);
                        return Ok(shipped);
                    }
                    std::fs::rename(&self.path, &shipping)
                        .map_err(|e| io_err("moving aside for shipping", &self.path, e))?;
                }
            }
            let read = read_spool(&shipping, &self.rejected)?;
            let mut events = read.events;
            if read.rejected > 0 || events.is_empty() {
                // The unreadable lines are kept in the rejected file now: drop them from the
                // shipping file so that they are neither kept twice nor block the spool.
                rewrite_spool(&shipping, &self.rejected, &events)?;
            }
            let mut shipped_here = 0;
            while !events.is_empty() {
                let n = events.len().min(DRAIN_CHUNK);
                let chunk: Vec<AuditEvent> = events.drain(..n).collect();
                if let Err(e) = self.inner.append(&chunk).await {
                    if shipped_here > 0 {
                        // Put the chunk back in front; the file still holds all of them.
                        let mut rest = chunk;
                        rest.append(&mut events);
                        rewrite_spool(&shipping, &self.rejected, &rest)?;
                    }
                    return if shipped > 0 { Ok(shipped) } else { Err(e) };
                }
                shipped += n;
                shipped_here += n;
                rewrite_spool(&shipping, &self.rejected, &events)?;
            }
        }
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
        append_spool(&self.path, &self.rejected, batch)?;
        self.pending.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn append_spool(path: &Path, rejected: &Path, batch: &[AuditEvent]) -> Result<(), AuditError> {
    let mut buf = Vec::new();
    for ev in batch {
        serde_json::to_writer(&mut buf, ev)
            .map_err(|e| AuditError::permanent(format!("audit event cannot be spooled: {e}")))?;
        buf.push(b'\n');
    }
    append_lines(path, rejected, &buf, write_synced)
}

/// Writes `buf` at the end of `f` and syncs it.
fn write_synced(mut f: &std::fs::File, buf: &[u8]) -> std::io::Result<()> {
    f.write_all(buf)?;
    f.sync_data()
}

/// Appends whole lines (`buf`) to the spool file `path` with `write`, so that the file holds
/// either all of them or none: a torn tail left by a crash is cut off first (kept in
/// `rejected`), and a failed write or sync is cut back.
fn append_lines(
    path: &Path,
    rejected: &Path,
    buf: &[u8],
    write: impl FnOnce(&std::fs::File, &[u8]) -> std::io::Result<()>,
) -> Result<(), AuditError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("opening", path, e))?;
    let mut len = f
        .metadata()
        .map_err(|e| io_err("reading the size of", path, e))?
        .len();
    if len > 0 && !ends_with_newline(&f, len).map_err(|e| io_err("reading", path, e))? {
        // A crash cut the last write short. That batch was never acknowledged (acknowledgement
        // follows the sync), but appending after it would glue the next batch's first line to it.
        let keep = end_of_last_line(&f, len).map_err(|e| io_err("reading", path, e))?;
        let mut from = &f;
        from.seek(std::io::SeekFrom::Start(keep))
            .map_err(|e| io_err("reading", path, e))?;
        keep_rejected(rejected, &mut from.take(len - keep).chain(&b"\n"[..]))?;
        f.set_len(keep)
            .and_then(|()| f.sync_data())
            .map_err(|e| io_err("cutting off a torn line in", path, e))?;
        tracing::warn!(spool = %path.display(), bytes = len - keep, rejected = %rejected.display(),
            "cut off the spool's last line, cut short by a crash (it was never acknowledged); kept in the rejected file");
        len = keep;
    }
    let written = write(&f, buf).and_then(|()| {
        if len == 0 {
            // A new file: its directory entry must survive power loss too.
            sync_dir(path)
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        // Nothing of this batch may stay: it is not acknowledged, and a partial line would
        // spoil the next batch.
        if let Err(cut) = f.set_len(len).and_then(|()| f.sync_data()) {
            tracing::error!(spool = %path.display(), error = %cut,
                "could not cut a failed write back from the audit spool; the next append cuts off its torn line");
        }
        return Err(io_err("writing", path, e));
    }
    Ok(())
}

/// Whether the `len` bytes of `f` end in a newline.
fn ends_with_newline(f: &std::fs::File, len: u64) -> std::io::Result<bool> {
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len.saturating_sub(1))?;
    Ok(last == *b"\n")
}

/// The length of `f`'s first `len` bytes up to and including its last newline (0 if none);
/// read backwards in chunks, as a spool can be large.
fn end_of_last_line(f: &std::fs::File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_SCAN_CHUNK);
        let n = usize::try_from(end - start).unwrap_or(0);
        buf.resize(n, 0);
        f.read_exact_at(&mut buf, start)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

/// Appends `lines` (verbatim, each ending in a newline) to the rejected file and syncs it.
fn keep_rejected(rejected: &Path, lines: &mut impl Read) -> Result<(), AuditError> {
    let err = |e| io_err("keeping unreadable lines in", rejected, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(rejected)
        .map_err(err)?;
    let len = f.metadata().map_err(err)?.len();
    if len > 0 && !ends_with_newline(&f, len).map_err(err)? {
        // A crash cut an earlier copy short: keep lines apart.
        f.write_all(b"\n").map_err(err)?;
    }
    std::io::copy(lines, &mut f).map_err(err)?;
    f.sync_data().map_err(err)?;
    if len == 0 {
        sync_dir(rejected).map_err(err)?;
    }
    Ok(())
}

/// A spool file's readable events, and how many unreadable lines were kept aside.
struct SpoolContents {
    events: Vec<AuditEvent>,
    rejected: usize,
}

/// Reads the events of a spool file. Unreadable lines are appended verbatim to `rejected`
/// (synced) before this returns, then logged: the last line without its newline as a write cut
/// short by a crash (a warning), any other as corruption (an error).
fn read_spool(path: &Path, rejected: &Path) -> Result<SpoolContents, AuditError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SpoolContents {
                events: Vec::new(),
                rejected: 0,
            });
        }
        Err(e) => return Err(io_err("reading", path, e)),
    };
    let mut reader = std::io::BufReader::new(f);
    let mut events = Vec::new();
    let mut bad = Vec::new();
    let mut problems = Vec::new();
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_err("reading", path, e))?;
        if read == 0 {
            break;
        }
        n += 1;
        let torn = !line.ends_with(b"\n");
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<AuditEvent>(text) {
            Ok(ev) => events.push(ev),
            Err(e) => {
                bad.extend_from_slice(text);
                bad.push(b'\n');
                problems.push((n, torn, e));
            }
        }
    }
    if !bad.is_empty() {
        keep_rejected(rejected, &mut bad.as_slice())?;
    }
    for (line, torn, error) in &problems {
        if *torn {
            tracing::warn!(spool = %path.display(), line, %error, rejected = %rejected.display(),
                "skipping the spool's last line, cut short by a crash (it was never acknowledged); kept in the rejected file");
        } else {
            tracing::error!(spool = %path.display(), line, %error, rejected = %rejected.display(),
                "audit spool line is corrupt (damaged or tampered with); shipping the events around it and keeping the line in the rejected file");
        }
    }
    Ok(SpoolContents {
        events,
        rejected: problems.len(),
    })
}

/// Replaces a spool file with `events` (write to a temporary file, sync, rename).
fn rewrite_spool(path: &Path, rejected: &Path, events: &[AuditEvent]) -> Result<(), AuditError> {
    if events.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", path, e)),
        };
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    append_spool(&tmp, rejected, events)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("replacing", path, e))
}
