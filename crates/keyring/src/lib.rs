//! Envelope encryption for values at rest (DP-3). Secrets and personal data that the store keeps
//! (TOTP secrets, OIDC client secrets, assertion signing keys, e-mail addresses, display names)
//! are sealed with AES-256-GCM under **data keys**; the data keys are stored in the database only
//! in **wrapped** form, encrypted under a **master key** that lives outside the database (a key
//! file, an environment variable or a command — bring your own key). Rotating the master key
//! re-wraps the data keys and leaves the sealed values untouched.
//!
//! - [`MasterKey`] loads or creates the master key and never shows its bytes.
//! - [`Keyring`] unwraps the data keys ([`WrappedKey`], what a `data_keys` table holds),
//!   [`seals`](Keyring::seal) and [`opens`](Keyring::open) values bound to their column and row,
//!   and [`rewraps`](Keyring::rewrap) data keys for master-key rotation.
//!
//! The operator's view (where the key lives, rotation, what losing it means) is
//! `docs/ENCRYPTION.md`.
//!
//! Architecture invariant: this crate knows nothing about SQL, HTTP, tokio or other Tsuzuku
//! crates. It turns bytes and text into sealed text and back; where the wrapped keys and sealed
//! values are stored is the store's business, and which fields are sealed is its caller's.
//! Key material is zeroized when dropped and never appears in `Debug` output or error messages.

mod error;
pub mod keyring;
pub mod master;

pub use error::{KeyringError, Result};
pub use keyring::{Keyring, WrappedKey, field};
pub use master::{KeySource, MasterKey};
pub use zeroize::Zeroizing;
