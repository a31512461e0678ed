//! Internet access in disaster-recovery mode: host patterns (the allowlist of the `controlled`
//! mode and the list of critical app hosts) and the signed allowlist format (`TSZAL1`,
//! docs/CONTINUITY.md "The signed allowlist"), from [`tsuzuku_dr::allowlist`] (the pure core,
//! fuzzed there); and, in [`fetch`], getting that list from an HTTP(S) URL or an S3-compatible
//! bucket. Caching the list on disk and refreshing it on a schedule is [`crate::dr`]'s job.

pub use tsuzuku_dr::allowlist::*;

pub mod fetch;
