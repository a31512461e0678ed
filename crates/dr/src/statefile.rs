//! Keeps a connector's [`Memory`] across restarts in a small JSON file, written atomically
//! (a temporary file beside it, fsync, rename, fsync of the directory): a crash leaves the old
//! file or the new one, never a torn one.
//!
//! The file holds the remembered record's published value, not its conclusions; loading
//! verifies its signature again with the trusted keys, so an edited file is refused rather than
//! believed.
//!
//! ```json
//! {"format":"tsuzuku-dr-state/1","record":"v=TSZDR1; s=on; ...; sig=...","withdrawn_at":null}
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check::{Rejection, authenticate_value};
use crate::keys::TrustedKeys;
use crate::memory::Memory;

const FORMAT: &str = "tsuzuku-dr-state/1";
/// State files are small; a larger file is not one of ours.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A problem reading or writing the state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    /// The cause is part of the message, not a `source`: printed once.
    #[error("cannot read the DR state file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The cause is part of the message, not a `source`: printed once.
    #[error("cannot write the DR state file {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the DR state file {path} is {len} bytes, larger than any state file; remove it")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("the DR state file {path} is not valid ({reason}); remove it to start afresh")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "the record remembered in the DR state file {path} is no longer trusted: {rejection}; \
         remove the file to start afresh"
    )]
    Untrusted {
        path: PathBuf,
        #[source]
        rejection: Rejection,
    },
}

/// The file's serialised form (the domain type [`Memory`] stays plain).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFileV1 {
    format: String,
    record: Option<String>,
    withdrawn_at: Option<i64>,
}

/// Loads the remembered state; `Ok(None)` when the file does not exist.
pub fn load(path: &Path, trusted: &TrustedKeys) -> Result<Option<Memory>, StateFileError> {
    let read_err = |error| StateFileError::Read {
        path: path.to_owned(),
        error,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(StateFileError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let file: StateFileV1 = serde_json::from_str(&text).map_err(|e| StateFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if file.format != FORMAT {
        return Err(StateFileError::Invalid {
            path: path.to_owned(),
            reason: format!("format {:?}, expected {FORMAT:?}", file.format),
        });
    }
    let record = match file.record {
        None => None,
        Some(value) => Some(authenticate_value(&value, trusted).map_err(|rejection| {
            StateFileError::Untrusted {
                path: path.to_owned(),
                rejection,
            }
        })?),
    };
    Ok(Some(Memory {
        record,
        withdrawn_at: file.withdrawn_at,
    }))
}

/// Saves the state atomically: writes `<path>.tmp`, fsyncs it, renames it over `path` and
/// fsyncs the directory.
pub fn save(path: &Path, memory: &Memory) -> Result<(), StateFileError> {
    let write_err = |error| StateFileError::Write {
        path: path.to_owned(),
        error,
    };
    let file = StateFileV1 {
        format: FORMAT.to_owned(),
        record: memory.record.as_ref().map(|r| r.value().to_owned()),
        withdrawn_at: memory.withdrawn_at,
    };
    let json = serde_json::to_vec(&file).map_err(|e| write_err(std::io::Error::other(e)))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
        f.write_all(&json).map_err(write_err)?;
        f.write_all(b"\n").map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
    }
    std::fs::rename(&tmp, path).map_err(write_err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(())
}

#[cfg(test)]
mod tests;
