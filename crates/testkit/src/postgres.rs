//! Real PostgreSQL servers for tests: a primary and streaming hot standbys on loopback ports.
//!
//! [`PgCluster::start_primary`] runs `initdb` and `pg_ctl start` in a fresh temporary directory
//! (owned by the `postgres` OS user, because `initdb` refuses to run as root: when the test runs
//! as root every server binary runs through `runuser -u postgres --`). The server listens on
//! 127.0.0.1 on a free port, with `wal_level=replica`, WAL senders, trust authentication on
//! loopback (for `replication` too) and `fsync=on` — durability tests need real flushes.
//! [`PgCluster::start_standby`] takes a base backup of a primary with
//! `pg_basebackup -R -X stream` and starts it as a hot standby on another free port, streaming
//! from the primary under its own `application_name`.
//!
//! [`PgCluster::kill`] simulates a lost site: SIGKILL to the postmaster and every process it
//! started, without any shutdown. [`PgCluster::promote`] turns a standby into a primary and
//! [`PgCluster::set_synchronous_standby`] makes the primary wait for a standby's flush on commit.
//! Dropping a cluster stops it (immediate mode) and removes its directory.
//!
//! The binaries are taken from the newest `/usr/lib/postgresql/<version>/bin`. Without them
//! every constructor returns [`PgTestError::NotInstalled`], whose message says to run
//! `scripts/install-test-deps.sh`. Tests should fail on it, not skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

/// What to tell a developer whose machine lacks PostgreSQL.
pub const SETUP_HINT: &str =
    "run scripts/install-test-deps.sh (it installs the Debian package `postgresql`)";

/// Where Debian installs the server binaries, one directory per major version.
const PG_LIB: &str = "/usr/lib/postgresql";

/// How long `pg_ctl` waits for start, stop and promotion.
const PG_CTL_WAIT_SECS: &str = "60";

/// How long to wait for a standby to stream or become synchronous.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// Numbers generated standby names.
static STANDBYS: AtomicU32 = AtomicU32::new(1);

/// Start attempts (a free port can be taken by someone else between probing and binding).
const START_ATTEMPTS: usize = 3;

/// Why a test cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgTestError {
    /// The PostgreSQL server binaries (or the `postgres` OS user) are missing.
    #[error("PostgreSQL is not installed: {what}; {SETUP_HINT}")]
    NotInstalled {
        /// What is missing.
        what: String,
    },
    /// A PostgreSQL command failed.
    #[error("`{command}` failed: {output}\n--- server log ---\n{log}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, stdout and stderr.
        output: String,
        /// The server's recent log.
        log: String,
    },
    /// Something expected did not happen in time.
    #[error("{what} did not happen within {secs} s\n--- server log ---\n{log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The time allowed.
        secs: u64,
        /// The server's recent log.
        log: String,
    },
    /// The input is not usable (e.g. a standby name that is not an identifier).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgTestError {
    let what = what.into();
    move |source| PgTestError::Io { what, source }
}

/// Settings of a new primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// `synchronous_commit` (`on`, `remote_apply`, `remote_write`, `local`, `off`).
    pub synchronous_commit: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            synchronous_commit: "on".into(),
        }
    }
}

/// The server binaries and the OS user they run as.
#[derive(Debug, Clone)]
struct Install {
    bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when this process is root and must switch user.
    switch_to: Option<(u32, u32)>,
}

impl Install {
    fn find() -> Result<Install, PgTestError> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
            .map_err(|e| PgTestError::NotInstalled {
                what: format!("cannot read {PG_LIB}: {e}"),
            })?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        let Some((_, bin)) = versions.pop() else {
            return Err(PgTestError::NotInstalled {
                what: format!("no {PG_LIB}/<version>/bin/initdb"),
            });
        };
        let switch_to = if effective_uid()? == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        Ok(Install { bin, switch_to })
    }

    /// A command running `program` from the server binaries as the server's OS user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.switch_to.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// A directory the server's OS user owns.
    fn own_dir(&self, path: &Path) -> Result<(), PgTestError> {
        if let Some((uid, gid)) = self.switch_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(format!(
                "giving {} to the postgres user",
                path.display()
            )))?;
        }
        Ok(())
    }
}

fn effective_uid() -> Result<u32, PgTestError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(io("reading /proc/self/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| PgTestError::Invalid("no effective uid in /proc/self/status".into()))
}

fn postgres_user() -> Result<(u32, u32), PgTestError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io("reading /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut f = line.split(':');
            (f.next()? == "postgres").then_some(())?;
            let _password = f.next()?;
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .ok_or_else(|| PgTestError::NotInstalled {
            what: "no `postgres` OS user (the server package creates it)".into(),
        })
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, PgTestError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io("probing for a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("probing for a free port"))?
        .port())
}

/// Runs a command to completion and fails with its output if it fails.
async fn run(mut cmd: Command, shown: &str, log: &Path) -> Result<String, PgTestError> {
    let out = cmd
        .output()
        .await
        .map_err(io(format!("running `{shown}`")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(PgTestError::Command {
            command: shown.to_owned(),
            output: format!(
                "{}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            log: tail(log),
        })
    }
}

/// The last lines of a log file (empty if unreadable).
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(40)..)
        .unwrap_or_default()
        .join("\n")
}

/// One running PostgreSQL server (primary or standby) in its own temporary directory.
#[derive(Debug)]
pub struct PgCluster {
    install: Install,
    /// Removed on drop, after the server is stopped.
    dir: tempfile::TempDir,
    port: u16,
    /// `application_name` it streams under (standbys), or `primary`.
    name: String,
    standby: bool,
    /// Set once the server was killed or stopped on purpose.
    down: AtomicBool,
}

impl PgCluster {
    /// Starts a new primary with default settings (`synchronous_commit=on`, no synchronous
    /// standby yet).
    pub async fn start_primary() -> Result<PgCluster, PgTestError> {
        PgCluster::start_primary_with(PgOptions::default()).await
    }

    /// Starts a new primary.
    pub async fn start_primary_with(options: PgOptions) -> Result<PgCluster, PgTestError> {
        let install = Install::find()?;
        let dir = tempfile::Builder::new()
            .prefix("tsuzuku-pg-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?;
        install.own_dir(dir.path())?;
        let mut cluster = PgCluster {
            install,
            dir,
            port: 0,
            name: "primary".into(),
            standby: false,
            down: AtomicBool::new(true),
        };
        let data = cluster.data_dir();
        let mut initdb = cluster.install.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8"])
            .args(["--locale=C", "--no-instructions"]);
        run(initdb, "initdb", &cluster.log_file()).await?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "# tsuzuku test cluster: trust on loopback only\n\
             local all all trust\n\
             host all all 127.0.0.1/32 trust\n\
             local replication all trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )
        .map_err(io("writing pg_hba.conf"))?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(io("opening postgresql.conf"))?;
        std::io::Write::write_all(
            &mut conf,
            b"\n# tsuzuku tests: settings of this node\ninclude_if_exists = 'tsuzuku.conf'\n",
        )
        .map_err(io("appending to postgresql.conf"))?;
        cluster.start_on_free_port(&options).await?;
        Ok(cluster)
    }

    /// Starts a hot standby of `primary`, streaming under a generated `application_name`
    /// (see [`PgCluster::name`]).
    pub async fn start_standby(primary: &PgCluster) -> Result<PgCluster, PgTestError> {
        PgCluster::start_standby_named(primary, None).await
    }

    /// Starts a hot standby of `primary` that streams under `application_name` `name` (an
    /// identifier: letters, digits, `_`), or a generated name when `None`.
    pub async fn start_standby_named(
        primary: &PgCluster,
        name: Option<&str>,
    ) -> Result<PgCluster, PgTestError> {
        if let Some(n) = name {
            check_identifier(n)?;
        }
        let install = primary.install.clone();
        let dir = tempfile::Builder::new()
            .prefix("tsuzuku-pg-standby-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?;
        install.own_dir(dir.path())?;
        let name = match name {
            Some(n) => n.to_owned(),
            None => format!(
                "standby_{}_{}",
                std::process::id(),
                STANDBYS.fetch_add(1, Ordering::SeqCst)
            ),
        };
        let mut cluster = PgCluster {
            install,
            dir,
            port: 0,
            name,
            standby: true,
            down: AtomicBool::new(true),
        };
        let mut backup = cluster.install.command("pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(cluster.data_dir())
            .args(["-R", "-X", "stream", "-c", "fast", "-d"])
            .arg(format!("application_name={}", cluster.name));
        run(backup, "pg_basebackup", &primary.log_file()).await?;
        cluster.start_on_free_port(&PgOptions::default()).await?;
        primary.wait_for_standby(&cluster.name, false).await?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `application_name` a standby streams under (the name for
    /// [`PgCluster::set_synchronous_standby`]); `primary` for a primary.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a server started as a standby (even after promotion).
    pub fn started_as_standby(&self) -> bool {
        self.standby
    }

    /// The server's log so far (last 40 lines), for failure messages.
    pub fn log(&self) -> String {
        tail(&self.log_file())
    }

    /// Runs SQL through `psql` and returns its unaligned, tuples-only output, trimmed.
    pub async fn psql(&self, sql: &str) -> Result<String, PgTestError> {
        let mut cmd = Command::new(self.install.bin.join("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = run(cmd, &format!("psql -c {sql:?}"), &self.log_file()).await?;
        Ok(out.trim().to_owned())
    }

    /// Makes the primary wait on commit until standby `name` has flushed the commit record
    /// (`synchronous_standby_names` + reload), and waits until that standby reports `sync`.
    /// An empty name turns synchronous replication off again.
    pub async fn set_synchronous_standby(&self, name: &str) -> Result<(), PgTestError> {
        if !name.is_empty() {
            check_identifier(name)?;
        }
        self.psql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{name}'"
        ))
        .await?;
        self.psql("SELECT pg_reload_conf()").await?;
        if !name.is_empty() {
            self.wait_for_standby(name, true).await?;
        }
        Ok(())
    }

    /// Waits until standby `name` streams from this primary (and, with `sync`, is its
    /// synchronous standby).
    pub async fn wait_for_standby(&self, name: &str, sync: bool) -> Result<(), PgTestError> {
        check_identifier(name)?;
        let sql = format!(
            "SELECT state || '/' || sync_state FROM pg_stat_replication WHERE application_name = '{name}'"
        );
        let started = Instant::now();
        loop {
            let state = self.psql(&sql).await?;
            let ok = if sync {
                state == "streaming/sync"
            } else {
                state.starts_with("streaming/")
            };
            if ok {
                return Ok(());
            }
            if started.elapsed() > REPLICATION_WAIT {
                return Err(PgTestError::Timeout {
                    what: format!(
                        "standby {name} streaming{} (state: {state:?})",
                        if sync { " synchronously" } else { "" }
                    ),
                    secs: REPLICATION_WAIT.as_secs(),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `standby` has replayed everything this primary has written so far (so a
    /// read on the standby sees every commit made before the call).
    pub async fn wait_until_replayed(&self, standby: &PgCluster) -> Result<(), PgTestError> {
        let lsn = self.psql("SELECT pg_current_wal_lsn()").await?;
        if lsn.is_empty() || !lsn.chars().all(|c| c.is_ascii_hexdigit() || c == '/') {
            return Err(PgTestError::Invalid(format!(
                "unexpected WAL position {lsn:?} from the primary on port {}",
                self.port
            )));
        }
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let started = Instant::now();
        while standby.psql(&sql).await? != "t" {
            if started.elapsed() > REPLICATION_WAIT {
                return Err(PgTestError::Timeout {
                    what: format!("the standby on port {} replaying up to {lsn}", standby.port),
                    secs: REPLICATION_WAIT.as_secs(),
                    log: standby.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Promotes a standby to a writable primary and waits until it is one.
    pub async fn promote(&self) -> Result<(), PgTestError> {
        let mut cmd = self.install.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", PG_CTL_WAIT_SECS, "promote"]);
        run(cmd, "pg_ctl promote", &self.log_file()).await?;
        Ok(())
    }

    /// Simulates a lost site: SIGKILL to the postmaster and to every process it started, no
    /// shutdown of any kind, then waits until they are gone.
    pub fn kill(&self) -> Result<(), PgTestError> {
        let pid = self.postmaster_pid()?;
        self.down.store(true, Ordering::SeqCst);
        let mut victims = vec![pid];
        victims.extend(children_of(pid));
        for p in &victims {
            // By process id only: the postmaster first, so it cannot start replacements.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let started = Instant::now();
        while victims
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
        {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(PgTestError::Timeout {
                    what: format!("the processes of the server on port {} to die", self.port),
                    secs: 10,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m immediate` (no checkpoint; like a crash, but
    /// every process exits).
    pub async fn stop_immediate(&self) -> Result<(), PgTestError> {
        let mut cmd = self.install.command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args([
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "-m",
            "immediate",
            "stop",
        ]);
        run(cmd, "pg_ctl stop -m immediate", &self.log_file()).await?;
        self.down.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Starts a stopped or killed server again with its data directory as it is (crash
    /// recovery runs if needed).
    pub async fn restart(&self) -> Result<(), PgTestError> {
        // A killed postmaster can stay a zombie when nobody reaps orphans (some container
        // inits do not); its lock file then names a pid that still exists, and the server
        // would refuse to start. Such a lock file is stale.
        if let Ok(pid) = self.postmaster_pid()
            && (!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid))
        {
            let socket = self.dir.path().join(format!(".s.PGSQL.{}", self.port));
            let stale = [
                self.data_dir().join("postmaster.pid"),
                socket.with_extension(format!("{}.lock", self.port)),
                socket,
            ];
            for file in stale.iter().filter(|f| f.exists()) {
                std::fs::remove_file(file)
                    .map_err(io(format!("removing the stale {}", file.display())))?;
            }
        }
        self.pg_ctl_start().await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn postmaster_pid(&self) -> Result<u32, PgTestError> {
        let file = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&file).map_err(io(format!(
            "reading {} (is the server running?)",
            file.display()
        )))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| PgTestError::Invalid(format!("no pid in {}", file.display())))
    }

    fn write_settings(&self, options: &PgOptions) -> Result<(), PgTestError> {
        check_setting(&options.synchronous_commit)?;
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             wal_keep_size = '256MB'\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n\
             fsync = on\n\
             synchronous_commit = {sc}\n\
             max_connections = 80\n\
             shared_buffers = '32MB'\n\
             wal_retrieve_retry_interval = '500ms'\n\
             logging_collector = off\n",
            port = self.port,
            dir = self.dir.path().display(),
            sc = options.synchronous_commit,
        );
        let path = self.data_dir().join("tsuzuku.conf");
        std::fs::write(&path, settings).map_err(io(format!("writing {}", path.display())))?;
        self.install.own_dir(&path)
    }

    async fn start_on_free_port(&mut self, options: &PgOptions) -> Result<(), PgTestError> {
        for attempt in 0..START_ATTEMPTS {
            self.port = free_port()?;
            self.write_settings(options)?;
            match self.pg_ctl_start().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt + 1 < START_ATTEMPTS && self.port_was_taken() => drop(e),
                Err(e) => return Err(e),
            }
        }
        Err(PgTestError::Invalid("no free port for the server".into()))
    }

    fn port_was_taken(&self) -> bool {
        tail(&self.log_file()).contains("could not bind")
    }

    async fn pg_ctl_start(&self) -> Result<(), PgTestError> {
        let mut cmd = self.install.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", PG_CTL_WAIT_SECS, "start"]);
        run(cmd, "pg_ctl start", &self.log_file()).await?;
        self.down.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.down.load(Ordering::SeqCst) {
            let path = self.install.bin.join("pg_ctl");
            let mut cmd = if self.install.switch_to.is_some() {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            } else {
                std::process::Command::new(path)
            };
            let _ = cmd
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The TempDir field removes the directory after this.
    }
}

fn check_identifier(name: &str) -> Result<(), PgTestError> {
    if !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(PgTestError::Invalid(format!(
            "{name:?} is not a usable standby name; use letters, digits and _ (at most 63)"
        )))
    }
}

fn check_setting(value: &str) -> Result<(), PgTestError> {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(PgTestError::Invalid(format!(
            "synchronous_commit {value:?}: expected on, off, local, remote_write or remote_apply"
        )))
    }
}

/// Every process whose parent is `pid` (the postmaster's backends and auxiliary processes).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z"))
}
