//! The control plane: it turns what the store holds (apps, the current policy version, users'
//! groups, the assertion keys) into a gateway snapshot, signs it with the snapshot key (kept in
//! the store, sealed, so the control planes of both sites sign with the same key), publishes a
//! new version whenever the content changes, and serves it to gateways by long-poll. Each poll
//! records which version the asking gateway uses, for `tsuzuku status`. It also publishes the
//! connectors' signed site list (gateway sites and operators' exclusions) the same way. It
//! records the DR state connectors report (`drill`, for `tsuzuku dr drill`) and appends the
//! audit events DR gateways upload to the tenant's chain, each once (`upload`).
//!
//! Invariant: the control plane never decides a request and never proxies one; gateways can
//! run for as long as they like without it (they keep the last snapshot on disk). It knows the
//! store's API and the snapshot format, not SQL and not policy semantics.

pub mod drill;
pub mod enroll;
mod error;
mod publish;
mod server;
pub mod upload;

pub use error::ControlError;
pub use publish::{
    NodeLoad, Published, Publisher, SHED_AT_PERCENT, SNAPSHOT_KEY_PURPOSE, body_from_store,
    shedding, signing_key, sites_from_store,
};
pub use server::{ServeOptions, serve};

#[cfg(test)]
mod tests;
