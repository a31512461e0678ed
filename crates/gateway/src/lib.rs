//! The Policy Enforcement Point: an HTTPS reverse proxy (hyper) that authenticates every
//! request, asks the policy engine, records the decision in the audit log, and only then
//! forwards — with a signed identity assertion — to the app's upstream.
//!
//! Architecture invariant: the gateway holds no policy logic of its own (that is
//! `tsuzuku-policy`), no SQL (that is `tsuzuku-store`), and no credential algorithms (that is
//! `tsuzuku-identity`). It knows HTTP: parsing, routing, cookies, forwarding. The request
//! pipeline's order is written out once, in `service.rs`.

pub mod assertion;
pub mod headers;
pub mod pages;

mod cache;
mod device;
mod feed;
mod portal;
mod proxy;
mod respond;
mod server;
mod service;
mod standby;
mod state;

pub use device::DeviceVerifier;
pub use feed::{FeedSettings, SnapshotFollower};
pub use server::{serve, tls_config};
pub use state::{
    ASSERTION_KEY_PURPOSE, Body, BoxError, Gateway, GatewayError, GatewaySettings,
    app_from_snapshot, device_from_snapshot, ensure_assertion_key, now_ms, now_unix,
};
