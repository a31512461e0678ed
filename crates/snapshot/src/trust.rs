//! The trusted-keys file (`snapshot.trust`, `--control-trust`), re-read when it changes, so a
//! running gateway or connector follows a signing-key rotation without a restart: the operator
//! first adds the next key to the file, the control plane then switches to it, and finally the
//! old key is removed from the file.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::error::SnapshotError;
use crate::sign::TrustedKeys;

/// Trusted keys from a file, or fixed ones.
#[derive(Debug)]
pub struct TrustFile {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    modified: Option<SystemTime>,
    keys: TrustedKeys,
    /// The last refusal of a changed file, so it is reported once.
    refused: Option<String>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<TrustedKeys, SnapshotError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SnapshotError::BadKey(format!(
            "cannot read the trusted keys {}: {e}",
            path.display()
        ))
    })?;
    TrustedKeys::from_pem(&text)
        .map_err(|e| SnapshotError::BadKey(format!("trusted keys {}: {e}", path.display())))
}

impl TrustFile {
    /// Reads the file now (an unreadable or empty file is an error).
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let stamp = modified(path);
        let keys = read(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            state: Mutex::new(State {
                modified: stamp,
                keys,
                refused: None,
            }),
        })
    }

    /// Fixed keys, never re-read.
    pub fn fixed(keys: TrustedKeys) -> Self {
        Self {
            path: None,
            state: Mutex::new(State {
                modified: None,
                keys,
                refused: None,
            }),
        }
    }

    /// The keys to verify with now. When the file changed since it was last read, it is read
    /// again; a changed file that cannot be used leaves the last good keys in force, and the
    /// reason is returned (once per distinct problem) for the caller to report.
    pub fn keys(&self) -> (TrustedKeys, Option<String>) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = &self.path else {
            return (st.keys.clone(), None);
        };
        let stamp = modified(path);
        if stamp == st.modified {
            return (st.keys.clone(), None);
        }
        match read(path) {
            Ok(keys) => {
                st.keys = keys;
                st.modified = stamp;
                st.refused = None;
                (st.keys.clone(), None)
            }
            Err(e) => {
                let msg = format!("{e}; keeping the keys trusted before");
                let report = (st.refused.as_deref() != Some(msg.as_str())).then(|| msg.clone());
                st.refused = Some(msg);
                (st.keys.clone(), report)
            }
        }
    }
}
