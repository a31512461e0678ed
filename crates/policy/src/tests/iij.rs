//! The IIJ example policies from `examples/iij/` (product requirement ZT-7).

use expect_test::expect;

use super::{Case, PERMIT_ALL, check, engine, engine_in};
use crate::{TimeZone, version_code};

const ALLOWED_APPS: &str = include_str!("../../../../examples/iij/1-allowed-apps.cedar");
const WORKING_HOURS: &str = include_str!("../../../../examples/iij/2-working-hours.cedar");
const MANAGED_PC: &str = include_str!("../../../../examples/iij/3-managed-pc.cedar");
const UNMANAGED: &str = include_str!("../../../../examples/iij/4-unmanaged-isolated-mfa.cedar");

fn all_four() -> Vec<(&'static str, &'static str)> {
    vec![
        ("iij-allowed-apps", ALLOWED_APPS),
        ("iij-working-hours", WORKING_HOURS),
        ("iij-managed-pc", MANAGED_PC),
        ("iij-unmanaged-isolated-mfa", UNMANAGED),
    ]
}

/// A personal (not company-issued, not enrolled) laptop.
fn personal(case: Case) -> Case {
    case.device(|d| {
        d.company_issued = false;
        d.enrolled = false;
    })
}

#[test]
fn iij_1_allowed_apps() {
    let engine = engine(&[("iij-allowed-apps", ALLOWED_APPS)]);
    check(
        &engine,
        &[
            ("attendance", Case::new().app("attendance", false)),
            ("sales", Case::new().app("sales", false)),
            ("teams", Case::new().app("teams", false)),
            ("browser", Case::new().app("browser", true)),
            (
                "browser POST",
                Case::new().app("browser", true).method("POST"),
            ),
            ("hr (not listed)", Case::new().app("hr", false)),
            (
                "sales, not an employee",
                Case::new().with(|c| c.user.groups = vec!["sales".into()]),
            ),
        ],
        expect![[r#"
            [attendance] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [sales] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [teams] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [browser] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [browser POST] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [hr (not listed)] DENY: denied: no policy permits (default deny)
            [sales, not an employee] DENY: denied: no policy permits (default deny)
        "#]],
    );
}

#[test]
fn iij_2_working_hours_in_tokyo() {
    let engine = engine(&[
        ("everyone", PERMIT_ALL),
        ("iij-working-hours", WORKING_HOURS),
    ]);
    check(
        &engine,
        &[
            ("Mon 08:59:59", Case::new().at("2026-11-23T08:59:59+09:00")),
            ("Mon 09:00:00", Case::new().at("2026-11-23T09:00:00+09:00")),
            ("Mon 17:29:59", Case::new().at("2026-11-23T17:29:59+09:00")),
            ("Mon 17:30:00", Case::new().at("2026-11-23T17:30:00+09:00")),
            ("Fri 12:00", Case::new().at("2026-11-27T12:00:00+09:00")),
            ("Sat 12:00", Case::new().at("2026-11-28T12:00:00+09:00")),
            ("Sun 12:00", Case::new().at("2026-11-29T12:00:00+09:00")),
            // 00:30 UTC on Monday is 09:30 in Tokyo.
            ("Mon 00:30Z", Case::new().at("2026-11-23T00:30:00Z")),
        ],
        expect![[r#"
            [Mon 08:59:59] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Mon 09:00:00] ALLOW: allowed by policy everyone
            determining: everyone
            [Mon 17:29:59] ALLOW: allowed by policy everyone
            determining: everyone
            [Mon 17:30:00] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Fri 12:00] ALLOW: allowed by policy everyone
            determining: everyone
            [Sat 12:00] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Sun 12:00] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Mon 00:30Z] ALLOW: allowed by policy everyone
            determining: everyone
        "#]],
    );
}

/// Same UTC time of day, either side of a DST switch: the local time moves
/// by an hour and so does the decision.
#[test]
fn iij_2_working_hours_across_dst_in_berlin() {
    let engine = engine_in(
        &[
            ("everyone", PERMIT_ALL),
            ("iij-working-hours", WORKING_HOURS),
        ],
        TimeZone::get("Europe/Berlin").unwrap(),
    );
    check(
        &engine,
        &[
            // Summer time starts Sunday 2026-03-29.
            (
                "Fri 03-27 07:30Z = 08:30 CET",
                Case::new().at("2026-03-27T07:30:00Z"),
            ),
            (
                "Mon 03-30 07:30Z = 09:30 CEST",
                Case::new().at("2026-03-30T07:30:00Z"),
            ),
            (
                "Fri 03-27 16:15Z = 17:15 CET",
                Case::new().at("2026-03-27T16:15:00Z"),
            ),
            (
                "Mon 03-30 16:15Z = 18:15 CEST",
                Case::new().at("2026-03-30T16:15:00Z"),
            ),
            // Summer time ends Sunday 2026-10-25.
            (
                "Fri 10-23 16:00Z = 18:00 CEST",
                Case::new().at("2026-10-23T16:00:00Z"),
            ),
            (
                "Mon 10-26 16:00Z = 17:00 CET",
                Case::new().at("2026-10-26T16:00:00Z"),
            ),
        ],
        expect![[r#"
            [Fri 03-27 07:30Z = 08:30 CET] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Mon 03-30 07:30Z = 09:30 CEST] ALLOW: allowed by policy everyone
            determining: everyone
            [Fri 03-27 16:15Z = 17:15 CET] ALLOW: allowed by policy everyone
            determining: everyone
            [Mon 03-30 16:15Z = 18:15 CEST] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Fri 10-23 16:00Z = 18:00 CEST] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Mon 10-26 16:00Z = 17:00 CET] ALLOW: allowed by policy everyone
            determining: everyone
        "#]],
    );
}

#[test]
fn iij_2_working_hours_across_dst_in_new_york() {
    let engine = engine_in(
        &[
            ("everyone", PERMIT_ALL),
            ("iij-working-hours", WORKING_HOURS),
        ],
        TimeZone::get("America/New_York").unwrap(),
    );
    check(
        &engine,
        &[
            // Daylight time starts Sunday 2026-03-08.
            (
                "Fri 03-06 13:30Z = 08:30 EST",
                Case::new().at("2026-03-06T13:30:00Z"),
            ),
            (
                "Mon 03-09 13:30Z = 09:30 EDT",
                Case::new().at("2026-03-09T13:30:00Z"),
            ),
            // Friday 23:00 EDT is already Saturday in UTC.
            (
                "Sat 03-14 02:00Z = Fri 22:00 EDT",
                Case::new().at("2026-03-14T02:00:00Z"),
            ),
        ],
        expect![[r#"
            [Fri 03-06 13:30Z = 08:30 EST] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [Mon 03-09 13:30Z = 09:30 EDT] ALLOW: allowed by policy everyone
            determining: everyone
            [Sat 03-14 02:00Z = Fri 22:00 EDT] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
        "#]],
    );
}

#[test]
fn iij_3_managed_pc_with_minimum_antivirus() {
    let engine = engine(&[("everyone", PERMIT_ALL), ("iij-managed-pc", MANAGED_PC)]);
    let old = version_code("4.18.24020.7").unwrap();
    let newer = version_code("4.18.25010.1").unwrap();
    check(
        &engine,
        &[
            ("company PC, AV 4.18.24030.9", Case::new()),
            (
                "company PC, AV newer",
                Case::new().device(|d| d.antivirus_version = newer),
            ),
            (
                "company PC, AV too old",
                Case::new().device(|d| d.antivirus_version = old),
            ),
            (
                "company PC, AV not running",
                Case::new().device(|d| d.antivirus_running = false),
            ),
            ("personal PC", personal(Case::new())),
            ("unknown device", Case::new().no_device()),
            (
                "unknown device, isolated app",
                Case::new().no_device().app("browser", true),
            ),
        ],
        expect![[r#"
            [company PC, AV 4.18.24030.9] ALLOW: allowed by policy everyone
            determining: everyone
            [company PC, AV newer] ALLOW: allowed by policy everyone
            determining: everyone
            [company PC, AV too old] DENY: denied by forbid policy iij-managed-pc
            determining: iij-managed-pc
            [company PC, AV not running] DENY: denied by forbid policy iij-managed-pc
            determining: iij-managed-pc
            [personal PC] DENY: denied by forbid policy iij-managed-pc
            determining: iij-managed-pc
            [unknown device] DENY: denied by forbid policy iij-managed-pc
            determining: iij-managed-pc
            [unknown device, isolated app] ALLOW: allowed by policy everyone
            determining: everyone
        "#]],
    );
}

#[test]
fn iij_4_unmanaged_only_isolated_with_mfa() {
    let engine = engine(&[
        ("everyone", PERMIT_ALL),
        ("iij-unmanaged-isolated-mfa", UNMANAGED),
    ]);
    let no_mfa = |c: &mut Case| {
        c.user.mfa = false;
        c.user.auth_method = "password".into();
    };
    check(
        &engine,
        &[
            ("company PC, sales", Case::new()),
            ("company PC, sales, no mfa", Case::new().with(no_mfa)),
            (
                "personal, isolated browser, mfa",
                personal(Case::new()).app("browser", true),
            ),
            (
                "personal, isolated browser, no mfa",
                personal(Case::new()).app("browser", true).with(no_mfa),
            ),
            ("personal, sales, mfa", personal(Case::new())),
            (
                "unknown device, isolated browser, mfa",
                Case::new().no_device().app("browser", true),
            ),
            ("unknown device, sales, mfa", Case::new().no_device()),
        ],
        expect![[r#"
            [company PC, sales] ALLOW: allowed by policy everyone
            determining: everyone
            [company PC, sales, no mfa] ALLOW: allowed by policy everyone
            determining: everyone
            [personal, isolated browser, mfa] ALLOW: allowed by policy everyone
            determining: everyone
            [personal, isolated browser, no mfa] DENY: denied by forbid policy iij-unmanaged-isolated-mfa
            determining: iij-unmanaged-isolated-mfa
            [personal, sales, mfa] DENY: denied by forbid policy iij-unmanaged-isolated-mfa
            determining: iij-unmanaged-isolated-mfa
            [unknown device, isolated browser, mfa] ALLOW: allowed by policy everyone
            determining: everyone
            [unknown device, sales, mfa] DENY: denied by forbid policy iij-unmanaged-isolated-mfa
            determining: iij-unmanaged-isolated-mfa
        "#]],
    );
}

/// All four together: the IIJ model as a whole.
#[test]
fn iij_all_four_together() {
    let engine = engine(&all_four());
    check(
        &engine,
        &[
            ("company PC, sales, Mon 10:00", Case::new()),
            (
                "company PC, teams, Mon 10:00",
                Case::new().app("teams", false),
            ),
            ("company PC, hr, Mon 10:00", Case::new().app("hr", false)),
            (
                "company PC, sales, Mon 19:00",
                Case::new().at("2026-11-23T19:00:00+09:00"),
            ),
            (
                "company PC with old AV, sales",
                Case::new().device(|d| d.antivirus_version = 1),
            ),
            (
                "company PC with old AV, isolated browser",
                Case::new()
                    .device(|d| d.antivirus_version = 1)
                    .app("browser", true),
            ),
            (
                "personal, isolated browser, mfa",
                personal(Case::new()).app("browser", true),
            ),
            (
                "personal, attendance, mfa",
                personal(Case::new()).app("attendance", false),
            ),
            (
                "personal, isolated browser, Sat",
                personal(Case::new())
                    .app("browser", true)
                    .at("2026-11-28T10:00:00+09:00"),
            ),
        ],
        expect![[r#"
            [company PC, sales, Mon 10:00] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [company PC, teams, Mon 10:00] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [company PC, hr, Mon 10:00] DENY: denied: no policy permits (default deny)
            [company PC, sales, Mon 19:00] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
            [company PC with old AV, sales] DENY: denied by forbid policy iij-managed-pc
            determining: iij-managed-pc
            [company PC with old AV, isolated browser] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [personal, isolated browser, mfa] ALLOW: allowed by policy iij-allowed-apps
            determining: iij-allowed-apps
            [personal, attendance, mfa] DENY: denied by forbid policies iij-managed-pc, iij-unmanaged-isolated-mfa
            determining: iij-managed-pc, iij-unmanaged-isolated-mfa
            [personal, isolated browser, Sat] DENY: denied by forbid policy iij-working-hours
            determining: iij-working-hours
        "#]],
    );
}
