//! Test helpers that start real components (OIDC provider, ...) for end-to-end tests.

pub mod delay;
pub mod dns;
pub mod gateway;
pub mod oidc;
pub mod postgres;
pub mod upstream;
