//! Why a snapshot was refused or could not be kept.

/// Every way a snapshot can fail. A refused snapshot never changes what is in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("the snapshot is malformed: {0}")]
    Malformed(String),
    #[error(
        "the snapshot is signed by key {kid}, which this gateway does not trust (trusted: {trusted}); check snapshot.trust"
    )]
    UnknownKey { kid: String, trusted: String },
    #[error("the snapshot's signature does not verify with key {kid}: it was altered or forged")]
    BadSignature { kid: String },
    #[error("the snapshot is for tenant {got:?}, this gateway serves tenant {want:?}")]
    WrongTenant { got: String, want: String },
    #[error(
        "snapshot version {got} is not newer than version {have} in use; refusing to go back (a replayed or stale snapshot)"
    )]
    NotNewer { got: i64, have: i64 },
    #[error("the signing key is unusable: {0}")]
    BadKey(String),
    #[error("the snapshot cache at {path}: {reason}")]
    Cache { path: String, reason: String },
    #[error("the snapshot cache key: {0}")]
    Keyring(#[from] tsuzuku_keyring::KeyringError),
}
