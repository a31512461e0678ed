//! Where the proxy sends a request: a pure function of the destination host, whether it is an
//! app, the connector's internet setting, the disaster-recovery (DR) mode, the critical app
//! hosts, the allowlist and whether normal site selection has a healthy site. No IO, no clock.
//!
//! | mode | app host, critical | app host, other | other host |
//! |------|--------------------|-----------------|------------|
//! | normal | normal sites | normal sites | direct with [`Internet::ViaConnector`], else refused |
//! | DR | DR gateway | refused: unavailable during DR | `open`: direct; `controlled`: direct if allowlisted; `closed`: refused |
//! | returning, no healthy normal site | DR gateway | normal sites | as in normal mode |
//!
//! *Returning* is the time between the end of DR mode (`off`, withdrawn, expired) and the first
//! healthy normal site: critical apps stay on the DR gateway until a normal site can take them.

use std::fmt;

use tsuzuku_dr::InternetMode;

use crate::internet::HostSet;
use crate::pac::Internet;

#[cfg(test)]
mod tests;

/// The DR side of routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrRouting {
    /// No DR mode: normal routing.
    Normal,
    /// DR mode with this internet access.
    Active(InternetMode),
    /// DR mode ended; critical apps stay on the DR gateway until a normal site is healthy.
    Returning,
}

/// Where traffic for a host goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A gateway site chosen by normal site selection.
    Gateway,
    /// The customer's DR gateway.
    DrGateway,
    /// The proxy connects to the destination itself.
    Direct,
    Refused(Refusal),
}

/// Why traffic was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an app, and internet traffic does not go through the connector.
    NotAnApp,
    /// An app that is not critical, during DR mode.
    UnavailableInDr,
    /// Internet access is `controlled` and the host is not on the allowlist.
    NotAllowlisted,
    /// Internet access is `closed`.
    InternetClosed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotAnApp => "not an app domain",
            Refusal::UnavailableInDr => "app unavailable during disaster recovery",
            Refusal::NotAllowlisted => {
                "internet access is controlled during disaster recovery and the host is not on the allowlist"
            }
            Refusal::InternetClosed => "internet access is closed during disaster recovery",
        })
    }
}

/// Everything a routing decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct RouteInput<'a> {
    /// The destination host (name or IP literal).
    pub host: &'a str,
    /// Whether the host is in the organisation's app domains.
    pub app: bool,
    /// Internet traffic outside DR mode.
    pub internet: Internet,
    pub dr: DrRouting,
    /// App hosts that stay reachable during DR (through the DR gateway).
    pub critical: &'a HostSet,
    /// Internet destinations allowed in `controlled` mode.
    pub allowlist: &'a HostSet,
    /// Whether normal site selection has a healthy site.
    pub normal_healthy: bool,
}

/// The decision.
pub fn route(i: &RouteInput<'_>) -> Route {
    let normal_internet = match i.internet {
        Internet::ViaConnector => Route::Direct,
        Internet::Direct => Route::Refused(Refusal::NotAnApp),
    };
    match i.dr {
        DrRouting::Normal if i.app => Route::Gateway,
        DrRouting::Normal | DrRouting::Returning if !i.app => normal_internet,
        DrRouting::Returning => {
            if !i.normal_healthy && i.critical.matches(i.host) {
                Route::DrGateway
            } else {
                Route::Gateway
            }
        }
        DrRouting::Active(_) if i.app => {
            if i.critical.matches(i.host) {
                Route::DrGateway
            } else {
                Route::Refused(Refusal::UnavailableInDr)
            }
        }
        DrRouting::Active(InternetMode::Open) => Route::Direct,
        DrRouting::Active(InternetMode::Controlled) => {
            if i.allowlist.matches(i.host) {
                Route::Direct
            } else {
                Route::Refused(Refusal::NotAllowlisted)
            }
        }
        DrRouting::Active(InternetMode::Closed) => Route::Refused(Refusal::InternetClosed),
        // Unreachable: `Normal` with `app` is the first arm; `Normal` without is the second.
        DrRouting::Normal => normal_internet,
    }
}
