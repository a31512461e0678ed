//! A real process standing in for a device's antivirus in posture tests: a copy of `/bin/sleep`
//! under a name no other run uses (the name `tsuzuku connect --av-process` looks for), and a
//! version command (`--av-version-cmd`) that prints a version the test changes.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::gateway::KitError;

/// Numbers the stand-ins of one test process, so their names differ.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The running stand-in; killed on drop.
pub struct Antivirus {
    child: Child,
    name: String,
    version_file: PathBuf,
    version_cmd: PathBuf,
}

impl Antivirus {
    /// Copies `/bin/sleep` into `dir` and runs it (for ten minutes at most) under a unique name
    /// (`tzkav<pid>-<n>`: `/proc/PID/comm` holds 15 bytes); writes its version command in `dir`,
    /// printing `TzkAV <version>`.
    pub fn start(dir: &Path, version: &str) -> Result<Self, KitError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tzkav{}-{n}", std::process::id());
        let exe = dir.join(&name);
        std::fs::copy("/bin/sleep", &exe)
            .map_err(|e| KitError::Msg(format!("copying /bin/sleep to {}: {e}", exe.display())))?;
        let version_file = dir.join(format!("{name}-version"));
        let version_cmd = dir.join(format!("{name}-version.sh"));
        std::fs::write(
            &version_cmd,
            format!("#!/bin/sh\ncat '{}'\n", version_file.display()),
        )?;
        std::fs::set_permissions(
            &version_cmd,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let child = std::process::Command::new(&exe)
            .arg("600")
            .spawn()
            .map_err(|e| KitError::Msg(format!("running {}: {e}", exe.display())))?;
        let av = Self {
            child,
            name,
            version_file,
            version_cmd,
        };
        av.set_version(version)?;
        Ok(av)
    }

    /// The process name (for `--av-process`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version command (for `--av-version-cmd`).
    pub fn version_cmd(&self) -> &Path {
        &self.version_cmd
    }

    /// From now on the version command prints `TzkAV <version>`.
    pub fn set_version(&self, version: &str) -> Result<(), KitError> {
        std::fs::write(&self.version_file, format!("TzkAV {version}\n"))?;
        Ok(())
    }

    /// Stops the process (the antivirus is no longer running) and waits for it to end.
    pub fn stop(&mut self) -> Result<(), KitError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Antivirus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests;
