//! The connector: the device agent behind `tsuzuku connect`. It listens on loopback as an HTTP
//! forward proxy (plain HTTP and `CONNECT`) and serves a PAC file that sends the organisation's
//! app domains through it; it probes every gateway site continuously and sends each new
//! connection to the best healthy site, failing over on blackout, moving on sustained brownout
//! without flapping, avoiding excluded and load-shedding sites, and closing tunnels to sites
//! that are lost.
//!
//! Architecture invariant: `select.rs` knows no IO. Site selection is a pure function of the
//! site list, the probe history, exclusions, load-shedding hints, the current choice, the
//! settings and a clock value passed in; it opens no socket, reads no clock and knows nothing
//! of tokio, HTTP or TLS. Probing (`probe.rs`), the shared state and its clock (`state.rs`) and
//! the proxy (`proxy.rs`) feed it and act on its answer. The same holds for `route.rs` (where a
//! request goes, including in disaster-recovery mode) and `internet.rs` (host patterns, the
//! signed allowlist): pure functions of their inputs; `dr.rs` is their IO shell. The crate
//! knows nothing of the store, policies or the gateway's internals: it talks to gateways over
//! the network only.
//!
//! Modules:
//! - [`select`]: the decision (pure), with the reasons `connect status` shows.
//! - [`probe`]: `GET /readyz` per endpoint, on an interval, into the history.
//! - [`state`]: the shared state, the clock, re-evaluation and publication of the decision.
//! - [`proxy`]: the loopback forward proxy and `/proxy.pac`.
//! - [`pac`]: app domains and the PAC file text (pure).
//! - [`sitelist`]: the control plane's signed site list and exclusions, with a disk copy.
//! - [`tls`]: TLS client settings towards gateways.
//! - [`route`]: where a request goes — normal sites, the DR gateway, direct, or refused (pure).
//! - [`internet`]: host patterns and the signed DR allowlist format (pure).
//! - [`dr`]: disaster-recovery mode: watching the signed DR record, the remembered state, the
//!   allowlist fetcher; publishes the DR state the proxy routes by.
//! - [`device`]: the enrolled device's identity (mutual TLS, device tunnels) and its signed
//!   posture reports.
//! - [`connector`]: all of the above started as one [`Connector`].

pub mod connector;
pub mod device;
pub mod dr;
pub mod internet;
pub mod pac;
pub mod probe;
pub mod proxy;
pub mod route;
pub mod select;
pub mod sitelist;
pub mod state;
pub mod tls;

#[cfg(test)]
mod testsupport;

/// An error and its causes on one line, each cause once (an HTTP client's "error sending
/// request" says nothing until its causes say "invalid peer certificate: UnknownIssuer").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

pub use connector::{Connector, ConnectorConfig, ConnectorError};
pub use dr::{DrConfig, DrGateway, DrStatus, DrWatcher, Phase};
pub use pac::{AppDomains, Internet};
pub use probe::{ProbeConfig, Scheme};
pub use proxy::{ProxyConfig, TunnelClose};
pub use select::{Exclusion, Reason, SelectConfig, Selection, Shed, Site, SiteView, Time};
pub use state::{SiteState, Status, Switch};
