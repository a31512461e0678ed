//! The disaster-recovery (DR) trigger record: a signed DNS TXT record the customer publishes
//! from its own DNS when everything Tsuzuku runs on is gone, and what a connector concludes from
//! it (docs/CONTINUITY.md, "The DR trigger record").
//!
//! The core — [`record`] (format, canonical content, signing, splitting into TXT strings),
//! [`allowlist`] (the signed internet allowlist of the `controlled` mode and host patterns),
//! [`keys`] (key ids, trusted keys), [`check`] (verification and the conclusion) and [`memory`]
//! (what to remember between lookups) — is a pure function of its inputs: it does no network IO,
//! reads no files and no clock; the time comes in as an argument. That is what the fuzz target
//! exercises and what tests drive without sockets.
//!
//! The IO shell, behind the default `io` feature: [`lookup`] asks DNS (hickory-resolver: the
//! system resolver, a given server over UDP/TCP, DNS over TLS or HTTPS) and tells a timeout,
//! SERVFAIL and NXDOMAIN apart; [`statefile`] keeps the last verified state across restarts.
//!
//! **Invariant:** this crate knows nothing about connectors, gateways, policies or the store; it
//! turns TXT strings, trusted keys, a time and the device's identity into a conclusion.
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod check;
pub mod keys;
#[cfg(feature = "io")]
pub mod lookup;
pub mod memory;
pub mod record;
#[cfg(feature = "io")]
pub mod statefile;

pub use check::{Conclusion, DrMode, Member, Reason, Rejection, Verified, authenticate, check};
pub use keys::{KeyError, KeyId, TrustedKeys};
pub use memory::{Memory, Observation, Step};
pub use record::{DrState, InternetMode, RecordError, RecordFields, SignedRecord};
