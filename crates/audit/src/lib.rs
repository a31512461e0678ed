//! Tamper-evident audit log model for Tsuzuku (OPS-7, ZT-6): audit events, the hash chain that
//! links them ([`link`], [`chain_hash`]), chain verification ([`verify`]) and a group-commit
//! writer ([`AuditWriter`]) that batches events into any [`AuditBackend`].
//!
//! **Architecture invariant:** this crate knows nothing about SQL, HTTP, Cedar or any other
//! Tsuzuku crate. Storage plugs in through the [`AuditBackend`] trait (implemented by
//! `tsuzuku-store`); the chain format defined here ([`canonical_bytes`]) is the one thing every
//! backend and every verifier must agree on.
#![forbid(unsafe_code)]

pub mod chain;
pub mod detail;
pub mod event;
pub mod memory;
pub mod spool;
pub mod writer;

pub use chain::{
    ChainProblem, GENESIS_HASH, Verifier, VerifyReport, canonical_bytes, canonical_detail,
    chain_hash, link, link_to, verify, verify_from,
};
pub use detail::Detail;
pub use event::{AuditEvent, ChainedEvent, EventKind, ParseEventKindError};
pub use memory::MemoryBackend;
pub use spool::Spooled;
pub use writer::{AuditBackend, AuditError, AuditWriter, WriterOptions};

#[cfg(test)]
mod tests;
