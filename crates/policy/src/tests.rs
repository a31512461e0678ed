#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod eval;
mod iij;

use std::net::IpAddr;
use std::str::FromStr;

use expect_test::{Expect, expect};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::{
    AppFacts, Decision, DeviceFacts, PolicyDoc, PolicyEngine, PolicyError, RequestFacts, UserFacts,
    action_for_method, schema_text, validate, version_code,
};

/// One request: every input of `decide`, with defaults that a test changes.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub user: UserFacts,
    pub device: Option<DeviceFacts>,
    pub app: AppFacts,
    pub req: RequestFacts,
}

/// Unix seconds of an RFC 3339 time with offset.
pub(crate) fn at(time: &str) -> i64 {
    Timestamp::from_str(time).unwrap().as_second()
}

impl Case {
    /// alice (group sales + employees, password+totp, mfa) on a managed,
    /// up-to-date Windows PC, GET / on the "sales" app from 10.0.0.1 on
    /// Monday 2026-11-23 10:00 in Tokyo.
    pub fn new() -> Self {
        let now = at("2026-11-23T10:00:00+09:00");
        Case {
            user: UserFacts {
                id: "u-alice".into(),
                username: "alice".into(),
                groups: vec!["employees".into(), "sales".into()],
                auth_method: "password+totp".into(),
                mfa: true,
                auth_time: now - 600,
            },
            device: Some(DeviceFacts {
                enrolled: true,
                company_issued: true,
                os: "windows".into(),
                os_version: "10.0.22631".into(),
                disk_encrypted: true,
                antivirus_running: true,
                antivirus_version: version_code("4.18.24030.9").unwrap(),
                reported_at: now - 30,
            }),
            app: app("sales", false),
            req: RequestFacts {
                method: "GET".into(),
                path: "/".into(),
                source_ip: "10.0.0.1".parse().unwrap(),
                now_unix: now,
            },
        }
    }

    pub fn with(mut self, change: impl FnOnce(&mut Case)) -> Self {
        change(&mut self);
        self
    }

    pub fn at(self, time: &str) -> Self {
        self.with(|c| c.req.now_unix = at(time))
    }

    pub fn ip(self, ip: &str) -> Self {
        self.with(|c| c.req.source_ip = IpAddr::from_str(ip).unwrap())
    }

    pub fn method(self, method: &str) -> Self {
        self.with(|c| c.req.method = method.into())
    }

    pub fn app(self, name: &str, isolated: bool) -> Self {
        self.with(|c| c.app = app(name, isolated))
    }

    pub fn no_device(self) -> Self {
        self.with(|c| c.device = None)
    }

    pub fn device(self, change: impl FnOnce(&mut DeviceFacts)) -> Self {
        self.with(|c| change(c.device.as_mut().unwrap()))
    }

    pub fn decide(&self, engine: &PolicyEngine) -> Decision {
        engine.decide(&self.user, self.device.as_ref(), &self.app, &self.req)
    }

    /// The summary of a decision made for this case, as JSON.
    pub fn summary(&self, decision: &Decision) -> serde_json::Value {
        decision
            .summary(&self.user, self.device.as_ref(), &self.app, &self.req)
            .to_value()
    }
}

pub(crate) fn app(name: &str, isolated: bool) -> AppFacts {
    AppFacts {
        name: name.into(),
        data_class: "internal".into(),
        critical: false,
        isolated,
    }
}

pub(crate) fn tokyo() -> TimeZone {
    TimeZone::get("Asia/Tokyo").unwrap()
}

/// Compiles `(doc id, text)` pairs in Asia/Tokyo.
pub(crate) fn engine(docs: &[(&str, &str)]) -> PolicyEngine {
    engine_in(docs, tokyo())
}

pub(crate) fn engine_in(docs: &[(&str, &str)], tz: TimeZone) -> PolicyEngine {
    let docs: Vec<PolicyDoc<'_>> = docs
        .iter()
        .map(|(id, text)| PolicyDoc { id, text })
        .collect();
    match PolicyEngine::compile(&docs, tz) {
        Ok(engine) => engine,
        Err(e) => panic!("policies did not compile:\n{e}"),
    }
}

/// The decision and its reasons, one line each, for snapshots.
pub(crate) fn render(decision: &Decision) -> String {
    let mut out = format!(
        "{}: {}\n",
        if decision.allowed { "ALLOW" } else { "DENY" },
        decision.reason
    );
    if !decision.determining.is_empty() {
        out.push_str(&format!(
            "determining: {}\n",
            decision.determining.join(", ")
        ));
    }
    for error in &decision.errors {
        out.push_str(&format!("error: {error}\n"));
    }
    out
}

/// Renders each labelled case's decision, one block per case.
pub(crate) fn check(engine: &PolicyEngine, cases: &[(&str, Case)], expect: Expect) {
    let mut out = String::new();
    for (label, case) in cases {
        out.push_str(&format!("[{label}] {}", render(&case.decide(engine))));
    }
    expect.assert_eq(&out);
}

/// The rejection message for documents that must not compile.
fn rejection(docs: &[(&str, &str)]) -> String {
    let docs: Vec<PolicyDoc<'_>> = docs
        .iter()
        .map(|(id, text)| PolicyDoc { id, text })
        .collect();
    let validated = validate(&docs);
    match PolicyEngine::compile(&docs, tokyo()) {
        Ok(_) => panic!("expected the documents to be rejected"),
        Err(e) => {
            assert_eq!(
                validated.unwrap_err().to_string(),
                e.to_string(),
                "validate and compile must agree"
            );
            e.to_string()
        }
    }
}

const PERMIT_ALL: &str = "permit (principal, action, resource);";

#[test]
fn schema_is_published_verbatim_in_policy_md() {
    let doc = include_str!("../../../docs/POLICY.md");
    assert!(
        doc.contains(schema_text()),
        "docs/POLICY.md must contain src/tsuzuku.cedarschema verbatim"
    );
}

#[test]
fn data_classes_are_the_documented_ones_exactly() {
    let schema = schema_text();
    for class in crate::DATA_CLASSES {
        assert!(crate::is_data_class(class));
        assert!(
            schema.contains(&format!("\"{class}\"")),
            "{class} not in the schema"
        );
    }
    for not_one in [
        "confidental",
        "Confidential",
        "INTERNAL",
        "",
        " public",
        "secret",
    ] {
        assert!(!crate::is_data_class(not_one), "{not_one:?}");
    }
}

#[test]
fn schema_parses() {
    crate::schema::schema().unwrap();
}

#[test]
fn engine_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
    assert_send_sync::<std::sync::Arc<PolicyEngine>>();
}

#[test]
fn crate_depends_on_no_io_crates() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in [
        "tokio", "hyper", "sqlx", "reqwest", "http", "axum", "tsuzuku-",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "tsuzuku-policy must stay pure, but depends on {banned}"
        );
    }
}

#[test]
fn default_deny() {
    check(
        &engine(&[]),
        &[("no policies", Case::new())],
        expect![[r#"
            [no policies] DENY: denied: no policy permits (default deny)
        "#]],
    );
    check(
        &engine(&[(
            "ops-only",
            r#"permit (principal in Tsuzuku::Group::"ops", action, resource);"#,
        )]),
        &[("no matching policy", Case::new())],
        expect![[r#"
            [no matching policy] DENY: denied: no policy permits (default deny)
        "#]],
    );
}

#[test]
fn permit_by_group_and_app() {
    let engine = engine(&[(
        "sales-app",
        r#"permit (
             principal in Tsuzuku::Group::"sales",
             action,
             resource == Tsuzuku::App::"sales"
           );"#,
    )]);
    check(
        &engine,
        &[
            ("sales member", Case::new()),
            ("other app", Case::new().app("hr", false)),
            (
                "not in group",
                Case::new().with(|c| c.user.groups = vec!["employees".into()]),
            ),
        ],
        expect![[r#"
            [sales member] ALLOW: allowed by policy sales-app
            determining: sales-app
            [other app] DENY: denied: no policy permits (default deny)
            [not in group] DENY: denied: no policy permits (default deny)
        "#]],
    );
}

#[test]
fn forbid_overrides_permit() {
    let engine = engine(&[
        ("everyone", PERMIT_ALL),
        (
            "no-contractors",
            r#"forbid (principal in Tsuzuku::Group::"contractors", action, resource);"#,
        ),
        (
            "also-everyone",
            r#"permit (principal, action in Tsuzuku::Action::"access", resource);"#,
        ),
    ]);
    check(
        &engine,
        &[
            ("employee", Case::new()),
            (
                "contractor",
                Case::new().with(|c| c.user.groups.push("contractors".into())),
            ),
        ],
        expect![[r#"
            [employee] ALLOW: allowed by policies everyone, also-everyone
            determining: everyone, also-everyone
            [contractor] DENY: denied by forbid policy no-contractors
            determining: no-contractors
        "#]],
    );
}

#[test]
fn evaluation_errors_never_allow() {
    // Long overflow is a runtime error the validator cannot see.
    let overflow = "principal.auth_age_secs * 9223372036854775807 > 0";
    let failing_permit = format!("permit (principal, action, resource) when {{ {overflow} }};");
    let failing_forbid = format!("forbid (principal, action, resource) when {{ {overflow} }};");
    check(
        &engine(&[("broken-permit", &failing_permit)]),
        &[("failing permit alone", Case::new())],
        expect![[r#"
            [failing permit alone] DENY: denied: no policy permits (default deny)
            error: broken-permit: integer overflow while attempting to multiply the values `600` and `9223372036854775807`
        "#]],
    );
    check(
        &engine(&[("everyone", PERMIT_ALL), ("broken-forbid", &failing_forbid)]),
        &[("failing forbid with a matching permit", Case::new())],
        expect![[r#"
            [failing forbid with a matching permit] DENY: denied: forbid policy broken-forbid could not be evaluated (fail closed)
            determining: broken-forbid
            error: broken-forbid: integer overflow while attempting to multiply the values `600` and `9223372036854775807`
        "#]],
    );
}

#[test]
fn unusable_request_time_is_denied() {
    check(
        &engine(&[("everyone", PERMIT_ALL)]),
        &[
            ("i64::MAX", Case::new().with(|c| c.req.now_unix = i64::MAX)),
            ("year 0", Case::new().at("0000-06-01T00:00:00Z")),
        ],
        expect![[r#"
            [i64::MAX] DENY: denied: the request could not be evaluated (request time 9223372036854775807 is out of range: parameter 'Unix timestamp seconds' is not in the required range of -377705023201..=253402207200)
            error: request time 9223372036854775807 is out of range: parameter 'Unix timestamp seconds' is not in the required range of -377705023201..=253402207200
            [year 0] DENY: denied: the request could not be evaluated (request time -62154086400 is outside the years 1 to 9999)
            error: request time -62154086400 is outside the years 1 to 9999
        "#]],
    );
}

#[test]
fn missing_device_is_unknown() {
    let engine = engine(&[
        (
            "managed-only",
            "permit (principal, action, resource)
             when { context has device && context.device.company_issued };",
        ),
        (
            "unknown-device-no-writes",
            r#"forbid (principal, action == Tsuzuku::Action::"write", resource)
               unless { context has device };"#,
        ),
    ]);
    check(
        &engine,
        &[
            ("managed device", Case::new()),
            (
                "personal device",
                Case::new().device(|d| d.company_issued = false),
            ),
            ("unknown device", Case::new().no_device()),
            (
                "unknown device writes",
                Case::new().no_device().method("POST"),
            ),
        ],
        expect![[r#"
            [managed device] ALLOW: allowed by policy managed-only
            determining: managed-only
            [personal device] DENY: denied: no policy permits (default deny)
            [unknown device] DENY: denied: no policy permits (default deny)
            [unknown device writes] DENY: denied by forbid policy unknown-device-no-writes
            determining: unknown-device-no-writes
        "#]],
    );
}

#[test]
fn ip_ranges() {
    let engine = engine(&[(
        "office-network",
        r#"permit (principal, action, resource)
           when {
             context.source_ip.isInRange(ip("10.0.0.0/8")) ||
             context.source_ip.isInRange(ip("2001:db8::/32"))
           };"#,
    )]);
    check(
        &engine,
        &[
            ("10.1.2.3", Case::new().ip("10.1.2.3")),
            ("192.168.1.10", Case::new().ip("192.168.1.10")),
            ("2001:db8::5", Case::new().ip("2001:db8::5")),
            ("2001:db9::5", Case::new().ip("2001:db9::5")),
            (
                "IPv4-mapped ::ffff:10.9.9.9",
                Case::new().ip("::ffff:10.9.9.9"),
            ),
        ],
        expect![[r#"
            [10.1.2.3] ALLOW: allowed by policy office-network
            determining: office-network
            [192.168.1.10] DENY: denied: no policy permits (default deny)
            [2001:db8::5] ALLOW: allowed by policy office-network
            determining: office-network
            [2001:db9::5] DENY: denied: no policy permits (default deny)
            [IPv4-mapped ::ffff:10.9.9.9] ALLOW: allowed by policy office-network
            determining: office-network
        "#]],
    );
}

/// Each thread keeps the last client address's text and Cedar value; a
/// request from another address, or back from an earlier one, must not see
/// them — in the decision or in the audit summary.
#[test]
fn the_last_address_kept_per_thread_never_leaks_into_another_request() {
    let engine = engine(&[(
        "office-network",
        r#"permit (principal, action, resource)
           when { context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
    )]);
    let sequence = [
        ("10.1.2.3", true),
        ("10.1.2.3", true),
        ("192.168.1.10", false),
        ("192.168.1.10", false),
        ("10.1.2.3", true),
        ("::ffff:192.168.1.10", false),
        ("192.168.1.10", false),
        ("::ffff:10.9.9.9", true),
        ("10.9.9.9", true),
        ("2001:db8::5", false),
    ];
    for (ip, allowed) in sequence {
        let case = Case::new().ip(ip);
        let decision = case.decide(&engine);
        assert_eq!(decision.allowed, allowed, "{ip}: {}", render(&decision));
        let canonical = IpAddr::from_str(ip).unwrap().to_canonical().to_string();
        let summary = case.summary(&decision);
        assert_eq!(
            summary["context"]["source_ip"], canonical,
            "{ip}: {summary}"
        );
    }
}

#[test]
fn weekday_and_local_time() {
    let engine = engine(&[(
        "weekdays",
        r#"permit (principal, action, resource)
           when {
             ["Mon", "Tue", "Wed", "Thu", "Fri"].contains(context.weekday) &&
             context.local_time >= duration("8h")
           };"#,
    )]);
    check(
        &engine,
        &[
            // Sunday 23:30 UTC is already Monday 08:30 in Tokyo.
            (
                "Sun 23:30Z = Mon 08:30 JST",
                Case::new().at("2026-11-22T23:30:00Z"),
            ),
            (
                "Mon 07:59:59 JST",
                Case::new().at("2026-11-23T07:59:59+09:00"),
            ),
            ("Sat 10:00 JST", Case::new().at("2026-11-28T10:00:00+09:00")),
            (
                "Fri 23:59:59 JST",
                Case::new().at("2026-11-27T23:59:59+09:00"),
            ),
        ],
        expect![[r#"
            [Sun 23:30Z = Mon 08:30 JST] ALLOW: allowed by policy weekdays
            determining: weekdays
            [Mon 07:59:59 JST] DENY: denied: no policy permits (default deny)
            [Sat 10:00 JST] DENY: denied: no policy permits (default deny)
            [Fri 23:59:59 JST] ALLOW: allowed by policy weekdays
            determining: weekdays
        "#]],
    );
}

#[test]
fn local_date_and_now() {
    let engine = engine(&[(
        "closed-new-year-holidays",
        r#"permit (principal, action, resource)
           when {
             !["2027-01-01", "2027-01-02", "2027-01-03"].contains(context.local_date) &&
             context.now >= datetime("2026-01-01T00:00:00Z")
           };"#,
    )]);
    check(
        &engine,
        &[
            (
                "2026-12-31 23:59 JST",
                Case::new().at("2026-12-31T23:59:00+09:00"),
            ),
            // Still 2026 in UTC, already 2027 in Tokyo.
            (
                "2027-01-01 00:30 JST",
                Case::new().at("2027-01-01T00:30:00+09:00"),
            ),
        ],
        expect![[r#"
            [2026-12-31 23:59 JST] ALLOW: allowed by policy closed-new-year-holidays
            determining: closed-new-year-holidays
            [2027-01-01 00:30 JST] DENY: denied: no policy permits (default deny)
        "#]],
    );
}

#[test]
fn method_to_action() {
    let table: Vec<String> = [
        "GET", "head", "Options", "POST", "PUT", "PATCH", "DELETE", "PROPFIND",
    ]
    .iter()
    .map(|m| format!("{m} -> {}", action_for_method(m)))
    .collect();
    expect![[r#"
        GET -> read
        head -> read
        Options -> read
        POST -> write
        PUT -> write
        PATCH -> write
        DELETE -> write
        PROPFIND -> write"#]]
    .assert_eq(&table.join("\n"));

    let engine = engine(&[
        (
            "read-only",
            r#"permit (principal, action == Tsuzuku::Action::"read", resource);"#,
        ),
        (
            "writers",
            r#"permit (principal in Tsuzuku::Group::"writers", action in [Tsuzuku::Action::"write"], resource);"#,
        ),
    ]);
    check(
        &engine,
        &[
            ("GET", Case::new()),
            ("HEAD", Case::new().method("HEAD")),
            ("OPTIONS", Case::new().method("OPTIONS")),
            ("POST", Case::new().method("POST")),
            ("delete", Case::new().method("delete")),
            (
                "POST by a writer",
                Case::new()
                    .method("POST")
                    .with(|c| c.user.groups.push("writers".into())),
            ),
        ],
        expect![[r#"
            [GET] ALLOW: allowed by policy read-only
            determining: read-only
            [HEAD] ALLOW: allowed by policy read-only
            determining: read-only
            [OPTIONS] ALLOW: allowed by policy read-only
            determining: read-only
            [POST] DENY: denied: no policy permits (default deny)
            [delete] DENY: denied: no policy permits (default deny)
            [POST by a writer] ALLOW: allowed by policy writers
            determining: writers
        "#]],
    );
}

#[test]
fn user_and_app_attributes() {
    let engine = engine(&[(
        "fresh-mfa-for-confidential",
        r#"permit (principal, action, resource)
           when {
             resource.data_class != "confidential" ||
             (principal.mfa && principal.auth_age_secs <= 3600 && principal.username != "mallory")
           };"#,
    )]);
    let confidential = |c: &mut Case| c.app.data_class = "confidential".into();
    check(
        &engine,
        &[
            ("internal app", Case::new().with(|c| c.user.mfa = false)),
            (
                "confidential, mfa 10 min ago",
                Case::new().with(confidential),
            ),
            (
                "confidential, mfa 2 h ago",
                Case::new()
                    .with(confidential)
                    .with(|c| c.user.auth_time -= 7200),
            ),
            (
                "confidential, no mfa",
                Case::new().with(confidential).with(|c| c.user.mfa = false),
            ),
        ],
        expect![[r#"
            [internal app] ALLOW: allowed by policy fresh-mfa-for-confidential
            determining: fresh-mfa-for-confidential
            [confidential, mfa 10 min ago] ALLOW: allowed by policy fresh-mfa-for-confidential
            determining: fresh-mfa-for-confidential
            [confidential, mfa 2 h ago] DENY: denied: no policy permits (default deny)
            [confidential, no mfa] DENY: denied: no policy permits (default deny)
        "#]],
    );
}

#[test]
fn schema_rejects_bad_policies_with_the_validator_message() {
    expect![[r#"
        5 problem(s) in the policy documents; fix them and load again (nothing was loaded):
          - policy document "typo" at line 2, column 10: for policy `typo`, attribute `mfa_enabled` on entity type `Tsuzuku::User` not found (hint: did you mean `mfa`?)
          - policy document "unknown-type" at line 1, column 22: for policy `unknown-type`, unrecognized entity type `Tsuzuku::Usr` (hint: did you mean `Tsuzuku::User`?)
          - policy document "optional-device" at line 1, column 45: for policy `optional-device`, unable to guarantee safety of access to optional attribute `device` in context for Tsuzuku::Action::"read" (hint: try testing for the attribute's presence with `context has device && ..`)
          - policy document "optional-device" at line 1, column 45: for policy `optional-device`, unable to guarantee safety of access to optional attribute `device` in context for Tsuzuku::Action::"write" (hint: try testing for the attribute's presence with `context has device && ..`)
          - policy document "type-error" at line 1, column 45: for policy `type-error`, unexpected type: expected Long but saw String"#]]
    .assert_eq(&rejection(&[
        ("good", PERMIT_ALL),
        (
            "typo",
            "permit (principal, action, resource)\n  when { principal.mfa_enabled };",
        ),
        (
            "unknown-type",
            r#"permit (principal in Tsuzuku::Usr::"a", action, resource);"#,
        ),
        (
            "optional-device",
            "permit (principal, action, resource) when { context.device.enrolled };",
        ),
        (
            "type-error",
            r#"permit (principal, action, resource) when { context.weekday > 3 };"#,
        ),
    ]));
}

#[test]
fn parse_errors_list_every_document() {
    expect![[r#"
        2 problem(s) in the policy documents; fix them and load again (nothing was loaded):
          - policy document "missing-semicolon" at line 1, column 37: unexpected end of input (expected `;` or identifier)
          - policy document "second-broken" at line 2, column 27: unexpected token `resource` (expected `!=`, `)`, `,`, `:`, `<`, `<=`, `==`, `>`, `>=`, `in`, or `is`)"#]]
    .assert_eq(&rejection(&[
        ("missing-semicolon", "permit (principal, action, resource)"),
        (
            "second-broken",
            "permit (principal, action, resource);\nforbid (principal, action resource);",
        ),
        ("ok", PERMIT_ALL),
    ]));
}

#[test]
fn document_ids_are_checked() {
    expect![[r#"
        4 problem(s) in the policy documents; fix them and load again (nothing was loaded):
          - policy document "dup": another document has the same id; document ids must be unique
          - policy document "has#hash": the document id contains '#', which is reserved for numbering the policies in a document
          - policy document "": the document id is empty; give every policy document a name
          - policy document "template": policy templates (with ?principal or ?resource slots) are not supported; write the entity into the policy instead"#]]
    .assert_eq(&rejection(&[
        ("dup", PERMIT_ALL),
        ("dup", PERMIT_ALL),
        ("has#hash", PERMIT_ALL),
        ("", PERMIT_ALL),
        ("template", "permit (principal == ?principal, action, resource);"),
    ]));
}

#[test]
fn policies_in_one_document_are_numbered() {
    let engine = engine(&[
        (
            "single",
            r#"@id("ignored") forbid (principal in Tsuzuku::Group::"x", action, resource);"#,
        ),
        (
            "multi",
            r#"@id("not-the-id") permit (principal in Tsuzuku::Group::"a", action, resource);
               permit (principal in Tsuzuku::Group::"sales", action, resource);
               permit (principal in Tsuzuku::Group::"sales", action, resource == Tsuzuku::App::"sales");"#,
        ),
    ]);
    assert_eq!(
        engine.policy_ids(),
        ["single", "multi#1", "multi#2", "multi#3"]
    );
    check(
        &engine,
        &[("sales member", Case::new())],
        expect![[r#"
            [sales member] ALLOW: allowed by policies multi#2, multi#3
            determining: multi#2, multi#3
        "#]],
    );
}

#[test]
fn policies_are_sliced_by_app() {
    let engine = engine(&[
        (
            "shared",
            r#"forbid (principal in Tsuzuku::Group::"blocked", action, resource);"#,
        ),
        (
            "for-a",
            r#"permit (principal, action, resource == Tsuzuku::App::"a");"#,
        ),
        (
            "for-b",
            r#"permit (principal, action, resource in Tsuzuku::App::"b");"#,
        ),
        (
            "for-c",
            r#"permit (principal, action, resource is Tsuzuku::App in Tsuzuku::App::"c");"#,
        ),
        (
            "any-app",
            r#"permit (principal, action, resource is Tsuzuku::App) when { resource.name == "d" };"#,
        ),
    ]);
    let ids = |app: &str| {
        let mut ids: Vec<String> = engine
            .compiled
            .index
            .slice(app)
            .policy_ids()
            .map(ToString::to_string)
            .collect();
        ids.sort();
        ids.dedup();
        ids.join(" ")
    };
    assert_eq!(ids("a"), "any-app for-a shared");
    assert_eq!(ids("b"), "any-app for-b shared");
    assert_eq!(ids("c"), "any-app for-c shared");
    assert_eq!(ids("d"), "any-app shared");
    assert_eq!(ids("unnamed"), "any-app shared");
    check(
        &engine,
        &[
            ("a", Case::new().app("a", false)),
            ("b", Case::new().app("b", false)),
            ("c", Case::new().app("c", false)),
            ("d", Case::new().app("d", false)),
            ("e", Case::new().app("e", false)),
            (
                "a, blocked user",
                Case::new()
                    .app("a", false)
                    .with(|c| c.user.groups.push("blocked".into())),
            ),
        ],
        expect![[r#"
            [a] ALLOW: allowed by policy for-a
            determining: for-a
            [b] ALLOW: allowed by policy for-b
            determining: for-b
            [c] ALLOW: allowed by policy for-c
            determining: for-c
            [d] ALLOW: allowed by policy any-app
            determining: any-app
            [e] DENY: denied: no policy permits (default deny)
            [a, blocked user] DENY: denied by forbid policy shared
            determining: shared
        "#]],
    );
}

/// The request's Cedar request and entities, as cedar-policy's types.
fn cedar_inputs(
    engine: &PolicyEngine,
    case: &Case,
) -> (cedar_policy::Request, cedar_policy::Entities) {
    let (prepared, _) = engine.prepare(&case.user, case.device.as_ref(), &case.app, &case.req);
    let prepared = prepared.unwrap();
    (prepared.request.into(), prepared.entities.into())
}

/// Evaluating the indexed slice must decide exactly like Cedar's authorizer
/// on the whole set, for every app.
#[test]
fn slices_decide_like_the_whole_set() {
    let mut docs = Vec::new();
    for app in 0..6 {
        for group in 0..3 {
            docs.push((
                format!("p-{app}-{group}"),
                format!(
                    r#"permit (principal in Tsuzuku::Group::"g{group}", action, resource == Tsuzuku::App::"app{app}")
                       when {{ context.local_time >= duration("{h}h") }};"#,
                    h = (app + group) % 12
                ),
            ));
        }
        docs.push((
            format!("f-{app}"),
            format!(
                r#"forbid (principal, action == Tsuzuku::Action::"write", resource == Tsuzuku::App::"app{app}")
                   unless {{ principal in Tsuzuku::Group::"g{}" }};"#,
                app % 3
            ),
        ));
    }
    docs.push((
        "shared-forbid".into(),
        r#"forbid (principal, action, resource) unless { context has device };"#.into(),
    ));
    let doc_refs: Vec<(&str, &str)> = docs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let engine = engine(&doc_refs);
    let mut allowed = 0;
    for app in 0..7 {
        for group in 0..4 {
            for hour in [3, 9, 15] {
                for method in ["GET", "POST"] {
                    for device in [true, false] {
                        let mut case = Case::new()
                            .app(&format!("app{app}"), false)
                            .method(method)
                            .at(&format!("2026-11-23T{hour:02}:00:00+09:00"))
                            .with(|c| c.user.groups = vec![format!("g{group}")]);
                        if !device {
                            case = case.no_device();
                        }
                        let sliced = case.decide(&engine);
                        let (request, entities) = cedar_inputs(&engine, &case);
                        let response = engine.authorizer.is_authorized(
                            &request,
                            &engine.compiled.all,
                            &entities,
                        );
                        let mut reasons: Vec<String> = response
                            .diagnostics()
                            .reason()
                            .map(ToString::to_string)
                            .collect();
                        reasons.sort();
                        let mut determining = sliced.determining.clone();
                        determining.sort();
                        assert_eq!(
                            (sliced.allowed, determining, sliced.errors.len()),
                            (
                                response.decision() == cedar_policy::Decision::Allow,
                                reasons,
                                response.diagnostics().errors().count()
                            ),
                            "{case:?}"
                        );
                        allowed += usize::from(sliced.allowed);
                    }
                }
            }
        }
    }
    assert!(
        allowed > 10,
        "the comparison must cover allowed requests too ({allowed})"
    );
}

/// The context and entities built without schema checks on the hot path
/// must conform to the schema.
#[test]
fn requests_conform_to_the_schema() {
    let schema = crate::schema::schema().unwrap();
    let engine = engine(&[]);
    for case in [
        Case::new(),
        Case::new().no_device().method("DELETE").ip("::1"),
    ] {
        let (request, entities) = cedar_inputs(&engine, &case);
        let request = &request;
        cedar_policy::Request::new(
            request.principal().unwrap().clone(),
            request.action().unwrap().clone(),
            request.resource().unwrap().clone(),
            request.context().unwrap().clone(),
            Some(schema),
        )
        .unwrap();
        let users_and_apps = entities
            .iter()
            .filter(|e| e.uid().type_name().to_string() != "Tsuzuku::Action")
            .cloned();
        cedar_policy::Entities::from_entities(users_and_apps, Some(schema)).unwrap();
    }
}

/// The request, context and entities built from Cedar's core types must
/// equal what Cedar's public constructors build from the same facts.
#[test]
fn fast_request_building_matches_the_public_api() {
    use cedar_policy::{Context, Entities, Entity, EntityUid, RestrictedExpression as R};
    use std::collections::{HashMap, HashSet};

    let schema = crate::schema::schema().unwrap();
    let engine = engine(&[]);
    let uid = |text: &str| EntityUid::from_str(text).unwrap();
    let s = |text: &str| R::new_string(text.to_owned());
    let posture = R::new_record([
        ("enrolled".to_owned(), R::new_bool(true)),
        ("company_issued".to_owned(), R::new_bool(true)),
        ("os".to_owned(), s("windows")),
        ("os_version".to_owned(), s("10.0.22631")),
        ("disk_encrypted".to_owned(), R::new_bool(true)),
        ("antivirus_running".to_owned(), R::new_bool(true)),
        ("antivirus_version".to_owned(), R::new_long(400182403000009)),
        ("posture_age_secs".to_owned(), R::new_long(30)),
    ])
    .unwrap();
    let cases = [
        (
            Case::new(),
            "10.0.0.1",
            "GET",
            Some(posture),
            r#"Tsuzuku::Action::"read""#,
        ),
        (
            Case::new().no_device().ip("::ffff:10.1.1.1").method("post"),
            "10.1.1.1",
            "POST",
            None,
            r#"Tsuzuku::Action::"write""#,
        ),
    ];
    for (case, ip, method, device, action) in cases {
        let (request, entities) = cedar_inputs(&engine, &case);
        let request = &request;
        assert_eq!(
            request.principal(),
            Some(&uid(r#"Tsuzuku::User::"u-alice""#))
        );
        assert_eq!(request.action(), Some(&uid(action)));
        assert_eq!(request.resource(), Some(&uid(r#"Tsuzuku::App::"sales""#)));

        let mut pairs = vec![
            ("source_ip".to_owned(), R::new_ip(ip)),
            ("now".to_owned(), R::new_datetime("2026-11-23T01:00:00Z")),
            ("local_time".to_owned(), R::new_duration("10h")),
            ("local_date".to_owned(), s("2026-11-23")),
            ("weekday".to_owned(), s("Mon")),
            ("method".to_owned(), s(method)),
            ("path".to_owned(), s("/")),
        ];
        pairs.extend(device.map(|d| ("device".to_owned(), d)));
        let expected = Context::from_pairs(pairs).unwrap();
        assert_eq!(request.context(), Some(&expected));

        let user = Entity::new(
            uid(r#"Tsuzuku::User::"u-alice""#),
            HashMap::from([
                ("username".to_owned(), s("alice")),
                ("auth_method".to_owned(), s("password+totp")),
                ("mfa".to_owned(), R::new_bool(true)),
                ("auth_age_secs".to_owned(), R::new_long(600)),
            ]),
            HashSet::from([
                uid(r#"Tsuzuku::Group::"employees""#),
                uid(r#"Tsuzuku::Group::"sales""#),
            ]),
        )
        .unwrap();
        let app = Entity::new(
            uid(r#"Tsuzuku::App::"sales""#),
            HashMap::from([
                ("name".to_owned(), s("sales")),
                ("data_class".to_owned(), s("internal")),
                ("critical".to_owned(), R::new_bool(false)),
                ("isolated".to_owned(), R::new_bool(false)),
            ]),
            HashSet::new(),
        )
        .unwrap();
        // With the schema, Cedar adds the action entities and checks types.
        let expected = Entities::from_entities([user, app], Some(schema)).unwrap();
        assert!(
            entities.deep_eq(&expected),
            "{:?}\n!=\n{:?}",
            entities,
            expected
        );
    }
}

#[test]
fn context_summary_records_the_inputs() {
    let case = Case::new();
    let decision = case.decide(&engine(&[("everyone", PERMIT_ALL)]));
    expect![[r#"
        {
          "action": "read",
          "context": {
            "device": {
              "antivirus_running": true,
              "antivirus_version": 400182403000009,
              "company_issued": true,
              "disk_encrypted": true,
              "enrolled": true,
              "os": "windows",
              "os_version": "10.0.22631",
              "posture_age_secs": 30
            },
            "local_date": "2026-11-23",
            "local_time": "10:00:00",
            "method": "GET",
            "now": "2026-11-23T01:00:00Z",
            "now_unix": 1795395600,
            "path": "/",
            "source_ip": "10.0.0.1",
            "time_zone": "Asia/Tokyo",
            "utc_offset": "+09:00",
            "weekday": "Mon"
          },
          "principal": {
            "auth_age_secs": 600,
            "auth_method": "password+totp",
            "groups": [
              "employees",
              "sales"
            ],
            "id": "u-alice",
            "mfa": true,
            "username": "alice"
          },
          "resource": {
            "critical": false,
            "data_class": "internal",
            "isolated": false,
            "name": "sales"
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&case.summary(&decision)).unwrap());
}

#[test]
fn explain_reports_every_policy() {
    let engine = engine(&[
        (
            "sales",
            r#"permit (principal in Tsuzuku::Group::"sales", action, resource == Tsuzuku::App::"sales");"#,
        ),
        (
            "ops",
            r#"permit (principal in Tsuzuku::Group::"ops", action == Tsuzuku::Action::"write", resource == Tsuzuku::App::"ops");"#,
        ),
        (
            "hours",
            r#"forbid (principal, action, resource)
               unless { context.local_time >= duration("9h") && context.local_time < duration("17h30m") };"#,
        ),
        (
            "office",
            r#"forbid (principal, action, resource)
               when { context has device }
               unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };"#,
        ),
        (
            "broken",
            "permit (principal, action, resource) when { principal.auth_age_secs * 9223372036854775807 > 0 };",
        ),
    ]);
    let case = Case::new();
    let explanation = engine.explain(&case.user, case.device.as_ref(), &case.app, &case.req);
    assert_eq!(explanation.decision, case.decide(&engine));
    assert_eq!(explanation.matched(crate::PolicyEffect::Permit), ["sales"]);
    let for_this_app: Vec<(&str, bool)> = explanation
        .policies
        .iter()
        .map(|p| (p.id.as_str(), p.for_this_app))
        .collect();
    assert_eq!(
        for_this_app,
        [
            ("sales", true),
            ("ops", false),
            ("hours", true),
            ("office", true),
            ("broken", true)
        ]
    );
    expect![[r#"
        decision: ALLOW (allowed by policy sales)
        request:  GET / (action read) to app sales from 10.0.0.1
        user:     alice (id u-alice), groups: employees, sales; login password+totp (mfa yes) 600 s ago
        device:   enrolled yes, company-issued yes, windows 10.0.22631, disk encrypted yes, antivirus running yes (version code 400182403000009), posture 30 s old
        app:      data class internal, critical no, isolated no
        time:     Mon 2026-11-23 10:00:00 in Asia/Tokyo (UTC+09:00), 2026-11-23T01:00:00Z
        matched:
          permit sales
        not matched:
          forbid hours:
            - condition `unless { (context.local_time >= duration("9h")) && (context.local_time < duration("17h30m")) }` is true
          forbid office:
            - condition `unless { context.source_ip.isInRange(ip("10.0.0.0/8")) }` is true
          (1 more policy for other apps not shown)
        errors:
          permit broken: integer overflow while attempting to multiply the values `600` and `9223372036854775807`
    "#]]
    .assert_eq(&explanation.to_string());

    let late = case
        .clone()
        .at("2026-11-23T18:00:00+09:00")
        .ip("203.0.113.7")
        .app("ops", false);
    let explanation = engine.explain(&late.user, late.device.as_ref(), &late.app, &late.req);
    expect![[r#"
        decision: DENY (denied by forbid policies hours, office)
        request:  GET / (action read) to app ops from 203.0.113.7
        user:     alice (id u-alice), groups: employees, sales; login password+totp (mfa yes) 29400 s ago
        device:   enrolled yes, company-issued yes, windows 10.0.22631, disk encrypted yes, antivirus running yes (version code 400182403000009), posture 28830 s old
        app:      data class internal, critical no, isolated no
        time:     Mon 2026-11-23 18:00:00 in Asia/Tokyo (UTC+09:00), 2026-11-23T09:00:00Z
        matched:
          forbid hours
          forbid office
        not matched:
          permit ops:
            - scope `principal in Tsuzuku::Group::"ops"` does not match `Tsuzuku::User::"u-alice"`
            - scope `action == Tsuzuku::Action::"write"` does not match `Tsuzuku::Action::"read"`
          (1 more policy for other apps not shown)
        errors:
          permit broken: integer overflow while attempting to multiply the values `29400` and `9223372036854775807`
    "#]]
    .assert_eq(&explanation.to_string());
}

#[test]
fn version_codes() {
    let codes: Vec<String> = [
        "4.18.24030.9",
        "4.18",
        "1",
        "9999.9999.99999.99999",
        "4.18.24030.10",
        "",
        "1.2.3.4.5",
        "1.x",
        "10000",
        "1..2",
    ]
    .iter()
    .map(|v| match version_code(v) {
        Ok(code) => format!("{v:?} -> {code}"),
        Err(e) => format!("{v:?} -> error: {e}"),
    })
    .collect();
    expect![[r#"
        "4.18.24030.9" -> 400182403000009
        "4.18" -> 400180000000000
        "1" -> 100000000000000
        "9999.9999.99999.99999" -> 999999999999999999
        "4.18.24030.10" -> 400182403000010
        "" -> error: version "" cannot be encoded: it is empty; expected up to four dot-separated numbers A.B.C.D with A and B at most 9999 and C and D at most 99999, e.g. "4.18.24030.9"
        "1.2.3.4.5" -> error: version "1.2.3.4.5" cannot be encoded: it has 5 components; expected up to four dot-separated numbers A.B.C.D with A and B at most 9999 and C and D at most 99999, e.g. "4.18.24030.9"
        "1.x" -> error: version "1.x" cannot be encoded: component "x" is not a number; expected up to four dot-separated numbers A.B.C.D with A and B at most 9999 and C and D at most 99999, e.g. "4.18.24030.9"
        "10000" -> error: version "10000" cannot be encoded: component 10000 is larger than 9999; expected up to four dot-separated numbers A.B.C.D with A and B at most 9999 and C and D at most 99999, e.g. "4.18.24030.9"
        "1..2" -> error: version "1..2" cannot be encoded: component "" is not a number; expected up to four dot-separated numbers A.B.C.D with A and B at most 9999 and C and D at most 99999, e.g. "4.18.24030.9""#]]
    .assert_eq(&codes.join("\n"));
    assert!(version_code("4.18.24030.10").unwrap() > version_code("4.18.24030.9").unwrap());
    assert!(version_code("4.19").unwrap() > version_code("4.18.99999.99999").unwrap());
    assert!(matches!(
        version_code("x"),
        Err(PolicyError::BadVersion { .. })
    ));
}

/// The user and app entities are kept per thread for the next request (see
/// `request::Recent`); any change of the facts, or of the second (the age of
/// the sign-in), must be seen by the very next decision.
#[test]
fn entities_kept_per_thread_follow_every_change_of_the_facts() {
    let engine = engine(&[(
        "fresh-sales-mfa",
        r#"permit (principal in Tsuzuku::Group::"sales", action, resource)
           when { principal.mfa && principal.auth_age_secs < 602 &&
                  resource.data_class == "internal" && principal.username == "alice" };"#,
    )]);
    let base = Case::new();
    let now = base.req.now_unix;
    let steps: Vec<(&str, Case, bool)> = vec![
        ("as given", Case::new(), true),
        (
            "no longer in sales",
            Case::new().with(|c| c.user.groups = vec!["employees".into()]),
            false,
        ),
        ("back in sales", Case::new(), true),
        (
            "without mfa",
            Case::new().with(|c| c.user.mfa = false),
            false,
        ),
        (
            "one second later",
            Case::new().with(|c| c.req.now_unix = now + 1),
            true,
        ),
        (
            "two seconds later",
            Case::new().with(|c| c.req.now_unix = now + 2),
            false,
        ),
        (
            "renamed",
            Case::new().with(|c| c.user.username = "bob".into()),
            false,
        ),
        (
            "app reclassified",
            Case::new().with(|c| c.app.data_class = "restricted".into()),
            false,
        ),
        ("as given again", Case::new(), true),
    ];
    for round in 0..3 {
        for (what, case, allowed) in &steps {
            let decision = case.decide(&engine);
            assert_eq!(
                decision.allowed,
                *allowed,
                "round {round}, {what}: {}",
                render(&decision)
            );
        }
    }
}
