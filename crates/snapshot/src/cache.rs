//! The gateway's cache directory: the last good snapshot (and other node-local state, such as
//! the sessions it has seen) sealed with AES-256-GCM under a data key wrapped by the master
//! key, so the files on their own reveal nothing.
//!
//! Layout: `cache-key.json` (the wrapped data key, created once) and one `NAME.sealed` file per
//! entry. Every write goes to a temporary file in the same directory, is flushed to disk and
//! renamed over the old file, then the directory is flushed: a crash or a full disk leaves the
//! previous file whole.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tsuzuku_keyring::{Keyring, MasterKey, WrappedKey};

use crate::error::SnapshotError;
use crate::sign::{TrustedKeys, Verified, verify};

const KEY_FILE: &str = "cache-key.json";
/// Entry name of the last good snapshot.
pub const SNAPSHOT_ENTRY: &str = "snapshot";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: String,
    master_id: String,
    wrapped: String,
    created_at: i64,
}

/// A directory of sealed files.
pub struct DiskCache {
    dir: PathBuf,
    keyring: Keyring,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn cache_err(path: &Path, reason: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Cache {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl DiskCache {
    /// Opens (creating with mode 0700) the cache directory and its data key. A cache written
    /// under another master key fails here with the keyring's "wrong master key" error.
    pub fn open(dir: impl AsRef<Path>, master: MasterKey, now: i64) -> Result<Self, SnapshotError> {
        let dir = dir.as_ref().to_owned();
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| cache_err(&dir, format!("cannot create the directory: {e}")))?;
        }
        let key_path = dir.join(KEY_FILE);
        let keyring = match fs::read(&key_path) {
            Ok(raw) => {
                let k: KeyFile = serde_json::from_slice(&raw).map_err(|e| {
                    cache_err(&key_path, format!("the cache key file is corrupt: {e}"))
                })?;
                Keyring::new(
                    master,
                    vec![WrappedKey {
                        id: k.id,
                        master_id: k.master_id,
                        wrapped: k.wrapped,
                        created_at: k.created_at,
                    }],
                )?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut keyring = Keyring::new(master, Vec::new())?;
                let w = keyring.generate_data_key(now)?;
                let file = KeyFile {
                    id: w.id,
                    master_id: w.master_id,
                    wrapped: w.wrapped,
                    created_at: w.created_at,
                };
                let raw = serde_json::to_vec(&file).map_err(|e| cache_err(&key_path, e))?;
                write_atomic(&key_path, &raw)?;
                keyring
            }
            Err(e) => return Err(cache_err(&key_path, format!("cannot read: {e}"))),
        };
        Ok(Self { dir, keyring })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sealed"))
    }

    /// Seals `bytes` and replaces entry `name` atomically.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
        let sealed = self.keyring.seal(&format!("cache:{name}"), bytes)?;
        write_atomic(&self.entry_path(name), sealed.as_bytes())
    }

    /// Opens entry `name`; `None` when there is none. A file that is truncated, altered or
    /// sealed under another key is an error naming the file.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SnapshotError> {
        let path = self.entry_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_err(&path, format!("cannot read: {e}"))),
        };
        let plain = self
            .keyring
            .open(&format!("cache:{name}"), text.trim())
            .map_err(|e| {
                cache_err(
                    &path,
                    format!("cannot be opened ({e}); it is corrupt or truncated"),
                )
            })?;
        Ok(Some(plain.to_vec()))
    }

    /// Keeps a verified snapshot as the last good one.
    pub fn save_snapshot(&self, v: &Verified) -> Result<(), SnapshotError> {
        self.put(SNAPSHOT_ENTRY, &v.bytes)
    }

    /// The last good snapshot, verified again (a file is never trusted just for being there).
    pub fn load_snapshot(
        &self,
        trusted: &TrustedKeys,
        tenant: &str,
    ) -> Result<Option<Verified>, SnapshotError> {
        match self.get(SNAPSHOT_ENTRY)? {
            None => Ok(None),
            Some(bytes) => verify(&bytes, trusted, tenant, None).map(Some),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let dir = path
        .parent()
        .ok_or_else(|| cache_err(path, "has no parent directory"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", rand::random::<u64>()));
    let result = (|| -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(cache_err(
            path,
            format!("cannot write ({e}); the previous file is unchanged"),
        ));
    }
    Ok(())
}
