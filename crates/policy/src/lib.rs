//! The Policy Decision Point (PDP) of Tsuzuku: it compiles Cedar policies
//! against the published `Tsuzuku` schema and decides, for one request, from
//! facts about the user, the device, the application and the request, whether
//! it may proceed, and why.
//!
//! **Invariant:** this crate is pure. It knows nothing about HTTP, SQL,
//! tokio, files or the network; it takes plain facts, a policy snapshot and a
//! time zone, and returns a decision. The clock is an input
//! ([`RequestFacts::now_unix`]). Default deny: nothing is allowed unless a
//! permit policy matches, and a policy that fails to evaluate never allows.

mod compile;
mod engine;
mod error;
mod eval;
mod explain;
mod facts;
mod index;
mod request;
mod schema;
mod summary;

pub use compile::{PolicyDoc, validate};
pub use engine::{Decision, PolicyEngine};
pub use error::{DocProblem, PolicyError};
pub use explain::{Explanation, PolicyEffect, PolicyOutcome, PolicyStatus};
pub use facts::{
    AUTH_METHODS, AppFacts, DATA_CLASSES, DeviceFacts, RequestFacts, UserFacts, action_for_method,
    is_data_class, version_code,
};
pub use jiff::tz::TimeZone;
pub use schema::schema_text;
pub use summary::{Inputs, Summary};

#[cfg(test)]
mod tests;
