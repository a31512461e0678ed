//! Test helpers that start real components (OIDC provider, DNS server, S3-compatible store, ...)
//! for end-to-end tests.

pub mod connect;
pub mod delay;
pub mod device;
pub mod dns;
pub mod gateway;
pub mod lines;
pub mod oidc;
pub mod postgres;
pub mod s3;
pub mod upstream;
pub mod wait;
