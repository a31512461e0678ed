//! Reading a Linux device's posture for real: `/etc/os-release`, the kernel release, whether the
//! root file system is on dm-crypt (directly or under LVM), and whether the configured antivirus
//! process runs and which version its version command prints. Blocking file and process IO: run
//! it off the async runtime. The parsing is pure and tested on its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::posture::Posture;

/// Where to look, and what antivirus to look for.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The antivirus process name as in `/proc/PID/comm` (e.g. `clamd`); `None` when no
    /// antivirus is required on this device.
    pub antivirus_process: Option<String>,
    /// A command that prints the antivirus version (e.g. `["clamd", "--version"]`); the first
    /// dotted number in its output is the version.
    pub antivirus_version_command: Option<Vec<String>>,
    /// `/proc`, `/sys`, `/etc/os-release` (other roots for tests).
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub os_release: PathBuf,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            antivirus_process: None,
            antivirus_version_command: None,
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            os_release: PathBuf::from("/etc/os-release"),
        }
    }
}

/// How long the version command may run.
const VERSION_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Collects the posture of this device now. Unreadable sources give "unknown" values (empty
/// text, `false`), never an error: a posture is a report, and a policy decides what to demand.
pub fn collect(cfg: &CollectorConfig, device_id: &str, now_unix: i64) -> Posture {
    let release = std::fs::read_to_string(&cfg.os_release).unwrap_or_default();
    let kernel = std::fs::read_to_string(cfg.proc_root.join("sys/kernel/osrelease"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let mountinfo =
        std::fs::read_to_string(cfg.proc_root.join("self/mountinfo")).unwrap_or_default();
    let disk_encrypted = root_device(&mountinfo)
        .map(|dev| is_encrypted(&cfg.sys_root, &dev, 0))
        .unwrap_or(false);
    let antivirus_running = cfg
        .antivirus_process
        .as_deref()
        .is_some_and(|name| process_running(&cfg.proc_root, name));
    let antivirus_version = match (&cfg.antivirus_process, &cfg.antivirus_version_command) {
        (Some(_), Some(cmd)) if antivirus_running => run_version_command(cmd),
        _ => None,
    };
    Posture {
        device_id: device_id.to_owned(),
        collected_at: now_unix,
        os: "linux".to_owned(),
        os_version: os_release_field(&release, "VERSION_ID").unwrap_or_default(),
        os_name: os_release_field(&release, "PRETTY_NAME").unwrap_or_default(),
        kernel,
        disk_encrypted,
        antivirus: cfg.antivirus_process.clone(),
        antivirus_running,
        antivirus_version,
    }
}

/// A field of an os-release file (`KEY=value`, `KEY="value"` or `KEY='value'`).
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        if k != key {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
            .unwrap_or(v);
        Some(v.replace("\\\"", "\""))
    })
}

/// The `major:minor` of the device mounted at `/`, from `/proc/self/mountinfo` (the last mount
/// of `/` wins, as it is the one visible).
pub fn root_device(mountinfo: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let _parent = fields.next()?;
            let dev = fields.next()?;
            let _root = fields.next()?;
            let mount_point = fields.next()?;
            (mount_point == "/").then(|| dev.to_owned())
        })
        .next_back()
}

/// Whether the block device `major:minor` is a dm-crypt mapping or sits on one (LVM on LUKS):
/// `/sys/dev/block/M:m/dm/uuid` starts with `CRYPT-`, here or in any of its `slaves`.
pub fn is_encrypted(sys_root: &Path, dev: &str, depth: u8) -> bool {
    if depth > 8 {
        return false;
    }
    let base = sys_root.join("dev/block").join(dev);
    let uuid = std::fs::read_to_string(base.join("dm/uuid")).unwrap_or_default();
    if uuid.trim_start().starts_with("CRYPT-") {
        return true;
    }
    let Ok(slaves) = std::fs::read_dir(base.join("slaves")) else {
        return false;
    };
    slaves.flatten().any(|slave| {
        std::fs::read_to_string(slave.path().join("dev"))
            .map(|d| is_encrypted(sys_root, d.trim(), depth + 1))
            .unwrap_or(false)
    })
}

/// Whether a process whose `comm` is `name` runs (`comm` holds at most 15 bytes).
pub fn process_running(proc_root: &Path, name: &str) -> bool {
    let want: String = name.chars().take(15).collect();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim_end_matches('\n') == want)
                .unwrap_or(false)
    })
}

/// The first dotted number (`1.2`, `0.103.11`, `4.18.24030.9`) in a command's output.
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|t| t.trim_matches('.'))
        .find(|t| t.contains('.') && t.split('.').all(|p| !p.is_empty()))
        .map(str::to_owned)
}

fn run_version_command(cmd: &[String]) -> Option<String> {
    let (program, args) = cmd.split_first()?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    use std::io::Read as _;
    child
        .stdout
        .take()?
        .take(64 * 1024)
        .read_to_string(&mut out)
        .ok()?;
    parse_version(&out)
}
