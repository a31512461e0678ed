#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

/// Routes each host with the given DR state; the app domain is `example.com`, critical is
/// `crm.example.com` and `*.hr.example.com`, the allowlist `*.microsoft.com` and `192.0.2.7`.
fn check(dr: DrRouting, internet: Internet, normal_healthy: bool, cases: &[(&str, Route)]) {
    let critical = HostSet::parse(&["crm.example.com", "*.hr.example.com"]).unwrap();
    let allowlist = HostSet::parse(&["*.microsoft.com", "192.0.2.7"]).unwrap();
    let apps = crate::pac::AppDomains::new(&["example.com"]).unwrap();
    for (host, want) in cases {
        let got = route(&RouteInput {
            host,
            app: apps.matches(host),
            internet,
            dr,
            critical: &critical,
            allowlist: &allowlist,
            normal_healthy,
        });
        assert_eq!(
            got, *want,
            "{host} with {dr:?}, {internet:?}, healthy {normal_healthy}"
        );
    }
}

use Refusal::*;
use Route::*;

#[test]
fn normal_mode_is_what_it_was() {
    check(
        DrRouting::Normal,
        Internet::Direct,
        true,
        &[
            ("crm.example.com", Gateway),
            ("wiki.example.com", Gateway),
            ("www.microsoft.com", Refused(NotAnApp)),
        ],
    );
    check(
        DrRouting::Normal,
        Internet::ViaConnector,
        false,
        &[
            ("crm.example.com", Gateway),
            ("www.microsoft.com", Direct),
            ("evil.test", Direct),
        ],
    );
}

#[test]
fn in_dr_mode_critical_apps_go_to_the_dr_gateway_and_others_are_unavailable() {
    for mode in [
        InternetMode::Open,
        InternetMode::Controlled,
        InternetMode::Closed,
    ] {
        check(
            DrRouting::Active(mode),
            Internet::Direct,
            true,
            &[
                ("crm.example.com", DrGateway),
                ("CRM.example.com.", DrGateway),
                ("payroll.hr.example.com", DrGateway),
                ("hr.example.com", Refused(UnavailableInDr)),
                ("wiki.example.com", Refused(UnavailableInDr)),
                ("example.com", Refused(UnavailableInDr)),
            ],
        );
    }
}

#[test]
fn internet_in_dr_mode_follows_the_record() {
    // Whatever the normal internet setting is.
    for internet in [Internet::Direct, Internet::ViaConnector] {
        check(
            DrRouting::Active(InternetMode::Open),
            internet,
            true,
            &[("evil.test", Direct), ("www.microsoft.com", Direct)],
        );
        check(
            DrRouting::Active(InternetMode::Controlled),
            internet,
            true,
            &[
                ("www.microsoft.com", Direct),
                ("login.live.microsoft.com", Direct),
                ("microsoft.com", Refused(NotAllowlisted)),
                ("192.0.2.7", Direct),
                ("192.0.2.8", Refused(NotAllowlisted)),
                ("evil.test", Refused(NotAllowlisted)),
            ],
        );
        check(
            DrRouting::Active(InternetMode::Closed),
            internet,
            true,
            &[
                ("www.microsoft.com", Refused(InternetClosed)),
                ("192.0.2.7", Refused(InternetClosed)),
            ],
        );
    }
}

#[test]
fn returning_keeps_critical_apps_on_the_dr_gateway_until_a_normal_site_is_healthy() {
    check(
        DrRouting::Returning,
        Internet::ViaConnector,
        false,
        &[
            ("crm.example.com", DrGateway),
            ("wiki.example.com", Gateway),
            ("evil.test", Direct),
        ],
    );
    check(
        DrRouting::Returning,
        Internet::Direct,
        true,
        &[
            ("crm.example.com", Gateway),
            ("wiki.example.com", Gateway),
            ("evil.test", Refused(NotAnApp)),
        ],
    );
}

#[test]
fn critical_hosts_outside_the_app_domains_are_internet_hosts() {
    // A critical pattern does not make a host an app: only the app domains do.
    check(
        DrRouting::Active(InternetMode::Closed),
        Internet::Direct,
        true,
        &[("crm.example.org", Refused(InternetClosed))],
    );
}
