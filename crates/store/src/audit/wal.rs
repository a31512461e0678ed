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
//! Step 2's syncs wait for whatever of the log the kernel has not written out yet. With
//! `synchronous=NORMAL` commits do not sync it, and between restarts only checkpoints do (the
//! pool's every half second, and step 1's as it starts): the appender's own checkpoint found
//! much of the log still dirty. So the helper also syncs the log file itself, off the appends' path:
//! every [`FLUSH_PAGES`] pages of appends while the log is below the threshold, and once more
//! at the end of step 1 for what was appended while it copied. Step 2's syncs then find only
//! the last few pages to write. (Syncing the log early changes nothing SQLite relies on: a
//! frame on the disk sooner is only more durable.)
//!
//! A reader holding old pages (a long `tsuzuku audit verify`, say) keeps the log from being
//! wholly copied; the appender then tries again once the log has grown by another sixteenth
//! of the threshold, and never holds an append back for it.
//!
//! The decision is [`Restart::after_commit`], a function of the log's size, the helper's
//! state and whether it is still syncing, tested without files; the IO around it is in the
//! appender and the helper.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};

use rusqlite::Connection;

/// Pages in the write-ahead log (4 KiB each) from which the appender starts it over: 4 MiB,
/// about SQLite's own auto-checkpoint size (1,000 pages). Larger logs made the appender's
/// wait longer, not rarer in total (see the module docs).
pub(crate) const WAL_RESTART_PAGES: i32 = 1_024;

/// Pages of appends (256 KiB) after which the helper syncs the log file, so that the syncs of
/// a restart find little of it still to write.
pub(crate) const FLUSH_PAGES: i32 = 64;

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
    /// Ask the helper to sync the log file (it has grown by [`FLUSH_PAGES`] since the last).
    Flush,
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
    /// The log's size from which the helper is next asked to sync it.
    flush_from: i32,
    /// Checkpoints on the appender's connection that copied the whole log: each lets the next
    /// transaction start the log over.
    rewinds: Arc<AtomicU64>,
    /// Syncs of the log file the helper made when asked by a [`Step::Flush`].
    flushes: Arc<AtomicU64>,
}

impl Restart {
    pub(crate) fn new(threshold: i32) -> Restart {
        Restart {
            threshold,
            retry_from: 0,
            helper: None,
            alone: false,
            flush_from: FLUSH_PAGES,
            rewinds: Arc::new(AtomicU64::new(0)),
            flushes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The step after a commit that left `pages` in the log, with the helper's checkpoint in
    /// `helper` (one of the states above; [`IDLE`] when there is no helper) and `flushing`
    /// whether the helper is still syncing the log from the last [`Step::Flush`].
    pub(crate) fn after_commit(&mut self, pages: i32, helper: u8, flushing: bool) -> Step {
        if pages < self.flush_from.saturating_sub(FLUSH_PAGES) {
            // The log was started over.
            self.flush_from = FLUSH_PAGES;
        }
        if pages < self.threshold {
            self.retry_from = 0;
            if helper == DONE {
                // Step 1 copied the whole log and a transaction started it over before the
                // appender's own checkpoint was needed: that result is stale, and the next
                // crossing of the threshold starts again from step 1.
                self.consume();
            }
            if pages >= self.flush_from && helper != RUNNING && !flushing && !self.alone {
                self.flush_from = pages.saturating_add(FLUSH_PAGES);
                return Step::Flush;
            }
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
        self.ask(path, vfs, Ask::Checkpoint);
    }

    /// Asks the helper to sync the log file of the database at `path`, starting it first if
    /// needed. Without a helper nothing is synced ahead: the restart's own syncs write the log.
    pub(crate) fn ask_flush(&mut self, path: &Path, vfs: Option<&str>) {
        self.ask(path, vfs, Ask::Flush);
    }

    /// Marks the helper busy with `ask` and sends it. A helper that cannot start or has gone
    /// is given up for good: from then on the appender checkpoints in one step, and nothing
    /// asks for syncs ahead of it.
    fn ask(&mut self, path: &Path, vfs: Option<&str>, ask: Ask) {
        if self.helper.is_none() {
            self.helper = Helper::start(path, vfs, &self.flushes);
        }
        let asked = self.helper.as_ref().is_some_and(|h| {
            match ask {
                Ask::Checkpoint => h.state.store(RUNNING, Ordering::Release),
                Ask::Flush => h.flushing.store(true, Ordering::Release),
            }
            h.ask.send(ask).is_ok()
        });
        if !asked {
            self.helper = None;
            self.alone = true;
            tracing::warn!(
                "the audit log's checkpoint helper is not running; checkpointing in one step"
            );
        }
    }

    /// Whether the helper is still syncing the log from the last [`Step::Flush`].
    pub(crate) fn flushing(&self) -> bool {
        self.helper
            .as_ref()
            .is_some_and(|h| h.flushing.load(Ordering::Acquire))
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

    /// How many times the helper synced the log when asked by a [`Step::Flush`].
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.flushes)
    }
}

/// What the helper is asked for.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// Step 1: a passive checkpoint, then a sync of the log for what came meanwhile.
    Checkpoint,
    /// A sync of the log file.
    Flush,
}

/// The helper thread: one connection to the file, one passive checkpoint per request, and a
/// handle on the log file to sync it. It ends when the appender (its sender) is dropped.
#[derive(Debug)]
struct Helper {
    ask: Sender<Ask>,
    state: Arc<AtomicU8>,
    flushing: Arc<AtomicBool>,
}

impl Helper {
    fn start(path: &Path, vfs: Option<&str>, flushes: &Arc<AtomicU64>) -> Option<Helper> {
        let flushes = Arc::clone(flushes);
        let (ask, asked) = channel::<Ask>();
        let state = Arc::new(AtomicU8::new(IDLE));
        let flushing = Arc::new(AtomicBool::new(false));
        let theirs = Arc::clone(&state);
        let their_flushing = Arc::clone(&flushing);
        let path: PathBuf = path.to_owned();
        let vfs = vfs.map(str::to_owned);
        let spawned = std::thread::Builder::new()
            .name("tsuzuku-audit-wal".into())
            .spawn(move || {
                let mut conn: Option<Connection> = None;
                let log = LogFile::new(&path);
                while let Ok(ask) = asked.recv() {
                    match ask {
                        Ask::Flush => {
                            if log.sync() {
                                flushes.fetch_add(1, Ordering::Relaxed);
                            }
                            their_flushing.store(false, Ordering::Release);
                        }
                        Ask::Checkpoint => {
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
                            log.sync();
                            theirs.store(DONE, Ordering::Release);
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Helper {
                ask,
                state,
                flushing,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the audit log's checkpoint helper");
                None
            }
        }
    }
}

/// The database's write-ahead log file (`<database>-wal`), opened read-only for each sync, so
/// a log SQLite deleted and made anew (after its last connection closed) is never synced in
/// its place. SQLite holds no lock on the log file itself (its locks are on the database and
/// the `-shm` index), so closing the handle releases none of them.
struct LogFile {
    path: PathBuf,
}

impl LogFile {
    fn new(database: &Path) -> LogFile {
        let mut name = database.as_os_str().to_owned();
        name.push("-wal");
        LogFile {
            path: PathBuf::from(name),
        }
    }

    /// Syncs the log's data to the disk; whether it did. A log not there (yet, or no longer)
    /// needs nothing; a failure is logged and the restart's own syncs write the log as before.
    fn sync(&self) -> bool {
        let synced = std::fs::File::open(&self.path).and_then(|f| f.sync_data());
        match synced {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "could not sync the audit log's WAL");
                false
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

    /// The helper is still syncing the log: no [`Step::Flush`] (the restart tests).
    const BUSY: bool = true;

    #[test]
    fn a_small_log_needs_nothing() {
        let mut r = Restart::new(100);
        assert_eq!(r.after_commit(0, IDLE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(99, IDLE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(99, DONE, BUSY), Step::Nothing);
    }

    #[test]
    fn a_full_log_asks_the_helper_first_then_checkpoints_itself_once_it_is_done() {
        let mut r = Restart::new(100);
        assert_eq!(r.after_commit(100, IDLE, BUSY), Step::AskHelper);
        assert_eq!(r.after_commit(104, RUNNING, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(108, RUNNING, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(112, DONE, BUSY), Step::CheckpointNow);
        r.checkpointed(112, Some((112, 112)));
        assert_eq!(r.rewinds.load(Ordering::Relaxed), 1);
        // The next transaction started the log over.
        assert_eq!(r.after_commit(3, IDLE, BUSY), Step::Nothing);
    }

    #[test]
    fn a_partial_checkpoint_backs_off_by_a_sixteenth_of_the_threshold() {
        let mut r = Restart::new(1600);
        assert_eq!(r.after_commit(1600, DONE, BUSY), Step::CheckpointNow);
        // A reader held old pages.
        r.checkpointed(1600, Some((1600, 900)));
        assert_eq!(r.rewinds.load(Ordering::Relaxed), 0);
        assert_eq!(r.after_commit(1650, IDLE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(1699, IDLE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(1700, IDLE, BUSY), Step::AskHelper);
        // A checkpoint that could not run at all backs off the same way.
        r.checkpointed(1700, None);
        assert_eq!(r.after_commit(1750, DONE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(1800, DONE, BUSY), Step::CheckpointNow);
    }

    #[test]
    fn the_back_off_is_forgotten_once_the_log_is_small_again() {
        let mut r = Restart::new(1600);
        r.checkpointed(1600, None);
        assert_eq!(r.after_commit(1650, IDLE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(10, IDLE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(1600, IDLE, BUSY), Step::AskHelper);
    }

    #[test]
    fn without_a_helper_every_try_is_one_step() {
        let mut r = Restart::new(100);
        r.alone = true;
        assert_eq!(
            r.after_commit(100, r.helper_state(), BUSY),
            Step::CheckpointNow
        );
    }

    #[test]
    fn a_tiny_threshold_still_backs_off_by_some_pages() {
        let mut r = Restart::new(4);
        r.checkpointed(4, None);
        assert_eq!(r.after_commit(19, DONE, BUSY), Step::Nothing);
        assert_eq!(r.after_commit(20, DONE, BUSY), Step::CheckpointNow);
    }

    #[test]
    fn the_helper_syncs_the_log_every_flush_pages_while_it_is_small() {
        let mut r = Restart::new(1_024);
        assert_eq!(r.after_commit(3, IDLE, false), Step::Nothing);
        assert_eq!(r.after_commit(FLUSH_PAGES - 1, IDLE, false), Step::Nothing);
        assert_eq!(r.after_commit(FLUSH_PAGES + 2, IDLE, false), Step::Flush);
        // Counted from where it was asked.
        assert_eq!(
            r.after_commit(2 * FLUSH_PAGES + 1, IDLE, false),
            Step::Nothing
        );
        assert_eq!(
            r.after_commit(2 * FLUSH_PAGES + 2, IDLE, false),
            Step::Flush
        );
        // Not asked again while it is still syncing, nor while it checkpoints.
        assert_eq!(r.after_commit(4 * FLUSH_PAGES, IDLE, true), Step::Nothing);
        assert_eq!(
            r.after_commit(4 * FLUSH_PAGES, RUNNING, false),
            Step::Nothing
        );
        assert_eq!(r.after_commit(4 * FLUSH_PAGES, IDLE, false), Step::Flush);
    }

    #[test]
    fn flushes_count_again_from_the_start_once_the_log_is_started_over() {
        let mut r = Restart::new(1_024);
        assert_eq!(r.after_commit(900, IDLE, false), Step::Flush);
        assert_eq!(r.after_commit(1_024, IDLE, false), Step::AskHelper);
        assert_eq!(r.after_commit(1_100, DONE, false), Step::CheckpointNow);
        r.consume();
        r.checkpointed(1_100, Some((1_100, 1_100)));
        // The next transaction started the log over.
        assert_eq!(r.after_commit(3, IDLE, false), Step::Nothing);
        assert_eq!(r.after_commit(FLUSH_PAGES, IDLE, false), Step::Flush);
    }

    #[test]
    fn a_full_log_is_restarted_rather_than_synced() {
        let mut r = Restart::new(100);
        assert_eq!(r.after_commit(100, IDLE, false), Step::AskHelper);
        assert_eq!(r.after_commit(130, RUNNING, false), Step::Nothing);
    }

    #[test]
    fn without_a_helper_nothing_is_synced_early() {
        let mut r = Restart::new(1_024);
        r.alone = true;
        assert_eq!(r.after_commit(FLUSH_PAGES * 2, IDLE, false), Step::Nothing);
        assert_eq!(r.after_commit(FLUSH_PAGES * 3, DONE, false), Step::Nothing);
    }

    #[test]
    fn a_stale_result_of_step_one_is_dropped_once_the_log_has_started_over() {
        let (ask, _asked) = channel();
        let state = Arc::new(AtomicU8::new(DONE));
        let mut r = Restart::new(1_024);
        r.helper = Some(Helper {
            ask,
            state: Arc::clone(&state),
            flushing: Arc::new(AtomicBool::new(false)),
        });
        // Step 1 copied everything and the log started over without the appender's own
        // checkpoint: syncs go on, and the next full log starts from step 1 again.
        assert_eq!(
            r.after_commit(FLUSH_PAGES, r.helper_state(), false),
            Step::Flush
        );
        assert_eq!(state.load(Ordering::Acquire), IDLE);
        assert_eq!(
            r.after_commit(1_024, r.helper_state(), false),
            Step::AskHelper
        );
    }

    #[test]
    fn the_log_file_is_the_database_name_with_wal_appended() {
        let log = LogFile::new(Path::new("/data/store.db"));
        assert_eq!(log.path, Path::new("/data/store.db-wal"));
    }
}
