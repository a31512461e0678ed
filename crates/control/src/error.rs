//! Control-plane errors.

/// Why the control plane could not build, sign or serve a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("store: {0}")]
    Store(#[from] tsuzuku_store::StoreError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] tsuzuku_snapshot::SnapshotError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the store holds no identity-assertion key yet; start a gateway once or run `tsuzuku serve --role control` against a writable store"
    )]
    NoAssertionKey,
}
