//! Gateway configuration snapshots: what a gateway needs to decide on its own (apps, policies,
//! the user facts decisions use, the assertion signing keys), published by the control plane
//! as a versioned document signed with Ed25519, verified by every gateway, and kept on the
//! gateway's disk sealed with the master key so a gateway restarted while the control plane and
//! its database are down comes back up deciding exactly as before (issue 3, OPS-1, RS-2).
//!
//! - [`body`]: the document (`SnapshotBody`) and its content digest.
//! - [`sign`]: signing and the pure verification every received or loaded snapshot goes
//!   through: signature by a trusted key, the right tenant, strictly newer than the one in use.
//! - The same signing covers the connectors' site list ([`body::SiteListBody`],
//!   [`sign::verify_sites`]), under its own wire format so neither passes for the other.
//! - [`trust`]: the trusted-keys file, re-read when it changes (key rotation without restarts).
//! - [`cache`]: the sealed file on disk, replaced atomically (a failed write leaves the last
//!   good one intact).
//!
//! Invariant: this crate knows the snapshot format, Ed25519 and files. It knows no SQL, no
//! HTTP, and no policy semantics (policies are opaque Cedar text here); the store, the control
//! plane and the gateway convert to and from [`body::SnapshotBody`].

pub mod body;
pub mod cache;
pub mod sign;
pub mod trust;

mod error;

pub use body::{
    AppEntry, CredentialEntry, DeviceEntry, ExclusionEntry, KeyEntry, PolicyEntry, ShedEntry,
    SiteEntry, SiteListBody, SnapshotBody, UserEntry,
};
pub use cache::DiskCache;
pub use error::SnapshotError;
pub use sign::{SnapshotSigner, TrustedKeys, Verified, VerifiedSites, verify, verify_sites};
pub use trust::TrustFile;

#[cfg(test)]
mod tests;
