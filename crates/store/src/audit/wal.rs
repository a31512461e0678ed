//! Keeping the audit appender's write-ahead log bounded.
//!
//! SQLite starts a WAL file over from its beginning only when a transaction begins at a moment
//! the log is wholly copied into the database (and no reader still uses it). The pool's
//! background task checkpoints passively every half second, concurrently with appends; under a
//! steady stream of appends, closer together than a checkpoint takes, every checkpoint ends
//! with newer frames behind it and the file only grows (1.7–2.1 GB after each run of the proxy
//! benchmark).
//!
//! So once a commit leaves [`WAL_RESTART_PAGES`] or more pages in the log the appender starts
//! it over, in two steps:
//!
//! 1. a checkpoint on a helper thread of its own, while appends go on: it copies nearly the
//!    whole log and pays the two fsyncs SQLite makes for a large copy;
//! 2. when that is done, a checkpoint on the appender's own connection right after its next
//!    commit, before its next transaction. It copies only the frames appended during step 1,
//!    and no append can slip in before the next transaction, which starts the log over.
//!
//! Appends wait only for step 2, and its wait grows with the size of the log (mostly SQLite's
//! fsync of the database file): at the proxy benchmark's 25,000 decisions a second, 170 ms
//! once in 20 s with a 1 GiB threshold, 15–20 ms with 64 MiB, a few ms with 4 MiB, where the
//! gateway's p99 latency was about the unbounded log's (docs/STORAGE.md, docs/BENCHMARKS.md).
//!
//! A reader holding old pages (a long `tsuzuku audit verify`, say) keeps the log from being
//! wholly copied; the appender then tries again once the log has grown by another sixteenth
//! of the threshold, and never holds an append back for it.
//!
//! The decision is [`Restart::after_commit`], a function of the log's size and the helper's
//! state, tested without files; the IO around it is in the appender.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};

use rusqlite::Connection;

/// Pages in the write-ahead log (4 KiB each) from which the appender starts it over: 4 MiB,
/// about SQLite's own auto-checkpoint size (1,000 pages). Larger logs made the appender's
/// wait longer, not rarer in total (see the module docs).
pub(crate) const WAL_RESTART_PAGES: i32 = 1_024;

/// The helper's checkpoint: not asked for (or its result consumed).
const IDLE: u8 = 0;
/// Asked for, not finished.
const RUNNING: u8 = 1;
/// Finished (whatever it copied): the appender's own checkpoint is next.
const DONE: u8 = 2;

/// What the appender does after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: the log is small, or the helper is still copying it, or a reader held old
    /// pages last time and the log has not grown enough for another try.
    Nothing,
    /// Ask the helper for a checkpoint (step 1).
    AskHelper,
    /// Checkpoint on the appender's connection now (step 2).
    CheckpointNow,
}

/// The appender's side of the restart: its threshold, its back-off after a checkpoint that
/// could not copy the whole log, and its helper.
#[derive(Debug)]
pub(crate) struct Restart {
    threshold: i32,
    /// After a checkpoint that could not copy the whole log, the size it must reach before
    /// the next try (0: none pending).
    retry_from: i32,
    helper: Option<Helper>,
    /// The helper's thread could not start, or it has gone: one step from then on.
    alone: bool,
    /// Checkpoints on the appender's connection that copied the whole log: each lets the next
    /// transaction start the log over.
    rewinds: Arc<AtomicU64>,
}

impl Restart {
    pub(crate) fn new(threshold: i32) -> Restart {
        Restart {
            threshold,
            retry_from: 0,
            helper: None,
            alone: false,
            rewinds: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The step after a commit that left `pages` in the log, with the helper's checkpoint in
    /// `helper` (one of the states above; [`IDLE`] when there is no helper).
    pub(crate) fn after_commit(&mut self, pages: i32, helper: u8) -> Step {
        if pages < self.threshold {
            self.retry_from = 0;
            return Step::Nothing;
        }
        if pages < self.retry_from {
            return Step::Nothing;
        }
        match helper {
            IDLE => Step::AskHelper,
            RUNNING => Step::Nothing,
            _ => Step::CheckpointNow,
        }
    }

    /// Records the result of the appender's own checkpoint after a commit that left `pages`
    /// in the log: `Some((log, copied))`, or `None` when it could not run (another checkpoint
    /// under way, an error).
    pub(crate) fn checkpointed(&mut self, pages: i32, result: Option<(i32, i32)>) {
        match result {
            Some((log, copied)) if copied >= log => {
                self.retry_from = 0;
                self.rewinds.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.retry_from = pages.saturating_add((self.threshold / 16).max(16)),
        }
    }

    /// The helper's state: [`IDLE`] before it is first asked, [`DONE`] for good once it is
    /// known not to run (the appender then checkpoints in one step).
    pub(crate) fn helper_state(&self) -> u8 {
        if self.alone {
            return DONE;
        }
        self.helper
            .as_ref()
            .map_or(IDLE, |h| h.state.load(Ordering::Acquire))
    }

    /// Marks the helper's finished checkpoint as consumed.
    pub(crate) fn consume(&self) {
        if let Some(h) = &self.helper {
            h.state.store(IDLE, Ordering::Release);
        }
    }

    /// Asks the helper for a checkpoint of the file at `path`, starting it first if needed.
    /// Without a helper (its thread could not start, or it has gone) the appender's own
    /// checkpoint comes next, as in one step.
    pub(crate) fn ask_helper(&mut self, path: &Path, vfs: Option<&str>) {
        if self.helper.is_none() {
            self.helper = Helper::start(path, vfs);
        }
        let asked = self.helper.as_ref().is_some_and(|h| {
            h.state.store(RUNNING, Ordering::Release);
            h.ask.send(()).is_ok()
        });
        if !asked {
            self.helper = None;
            self.alone = true;
            tracing::warn!(
                "the audit log's checkpoint helper is not running; checkpointing in one step"
            );
        }
    }

    /// Ends the helper thread (its channel closes), as when the appender closes.
    pub(crate) fn stop_helper(&mut self) {
        self.helper = None;
    }

    /// How many times the log was wholly copied by the appender's own checkpoint.
    #[cfg(test)]
    pub(crate) fn rewinds(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rewinds)
    }
}

/// The helper thread: one connection to the file, one passive checkpoint per request. It ends
/// when the appender (its sender) is dropped.
#[derive(Debug)]
struct Helper {
    ask: Sender<()>,
    state: Arc<AtomicU8>,
}

impl Helper {
    fn start(path: &Path, vfs: Option<&str>) -> Option<Helper> {
        let (ask, asked) = channel::<()>();
        let state = Arc::new(AtomicU8::new(IDLE));
        let theirs = Arc::clone(&state);
        let path: PathBuf = path.to_owned();
        let vfs = vfs.map(str::to_owned);
        let spawned = std::thread::Builder::new()
            .name("tsuzuku-audit-wal".into())
            .spawn(move || {
                let mut conn: Option<Connection> = None;
                while asked.recv().is_ok() {
                    if conn.is_none() {
                        conn = super::appender::open(&path, vfs.as_deref())
                            .map_err(|e| {
                                tracing::warn!(path = %path.display(), error = %e, "the audit log's checkpoint helper could not open the file")
                            })
                            .ok();
                    }
                    if let Some(c) = &conn {
                        helper_checkpoint(c);
                    }
                    theirs.store(DONE, Ordering::Release);
                }
            });
        match spawned {
            Ok(_) => Some(Helper { ask, state }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the audit log's checkpoint helper");
                None
            }
        }
    }
}

/// The helper's checkpoint. Another one under way (the pool's background task's, which
/// takes some milliseconds) makes it wait and try again, for up to 50 ms.
fn helper_checkpoint(conn: &Connection) {
    for _ in 0..10 {
        match checkpoint(conn) {
            Ok(_) => return,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => {
                tracing::debug!(error = %e, "the audit log's helper checkpoint failed");
                return;
            }
        }
    }
}

/// A passive checkpoint: `(pages in the log, pages copied)`, or the reason it did not run
/// (another checkpoint holding the lock: `SQLITE_BUSY` in its first column).
pub(crate) fn checkpoint(conn: &Connection) -> Result<(i32, i32), rusqlite::Error> {
    let (busy, log, copied): (i32, i32, i32) = conn
        .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if busy != 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("another checkpoint is running".into()),
        ));
    }
    Ok((log, copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_log_needs_nothing() {
        let mut r = Restart::new(100);
        assert_eq!(r.after_commit(0, IDLE), Step::Nothing);
        assert_eq!(r.after_commit(99, IDLE), Step::Nothing);
        assert_eq!(r.after_commit(99, DONE), Step::Nothing);
    }

    #[test]
    fn a_full_log_asks_the_helper_first_then_checkpoints_itself_once_it_is_done() {
        let mut r = Restart::new(100);
        assert_eq!(r.after_commit(100, IDLE), Step::AskHelper);
        assert_eq!(r.after_commit(104, RUNNING), Step::Nothing);
        assert_eq!(r.after_commit(108, RUNNING), Step::Nothing);
        assert_eq!(r.after_commit(112, DONE), Step::CheckpointNow);
        r.checkpointed(112, Some((112, 112)));
        assert_eq!(r.rewinds.load(Ordering::Relaxed), 1);
        // The next transaction started the log over.
        assert_eq!(r.after_commit(3, IDLE), Step::Nothing);
    }

    #[test]
    fn a_partial_checkpoint_backs_off_by_a_sixteenth_of_the_threshold() {
        let mut r = Restart::new(1600);
        assert_eq!(r.after_commit(1600, DONE), Step::CheckpointNow);
        // A reader held old pages.
        r.checkpointed(1600, Some((1600, 900)));
        assert_eq!(r.rewinds.load(Ordering::Relaxed), 0);
        assert_eq!(r.after_commit(1650, IDLE), Step::Nothing);
        assert_eq!(r.after_commit(1699, IDLE), Step::Nothing);
        assert_eq!(r.after_commit(1700, IDLE), Step::AskHelper);
        // A checkpoint that could not run at all backs off the same way.
        r.checkpointed(1700, None);
        assert_eq!(r.after_commit(1750, DONE), Step::Nothing);
        assert_eq!(r.after_commit(1800, DONE), Step::CheckpointNow);
    }

    #[test]
    fn the_back_off_is_forgotten_once_the_log_is_small_again() {
        let mut r = Restart::new(1600);
        r.checkpointed(1600, None);
        assert_eq!(r.after_commit(1650, IDLE), Step::Nothing);
        assert_eq!(r.after_commit(10, IDLE), Step::Nothing);
        assert_eq!(r.after_commit(1600, IDLE), Step::AskHelper);
    }

    #[test]
    fn without_a_helper_every_try_is_one_step() {
        let mut r = Restart::new(100);
        r.alone = true;
        assert_eq!(r.after_commit(100, r.helper_state()), Step::CheckpointNow);
    }

    #[test]
    fn a_tiny_threshold_still_backs_off_by_some_pages() {
        let mut r = Restart::new(4);
        r.checkpointed(4, None);
        assert_eq!(r.after_commit(19, DONE), Step::Nothing);
        assert_eq!(r.after_commit(20, DONE), Step::CheckpointNow);
    }
}
