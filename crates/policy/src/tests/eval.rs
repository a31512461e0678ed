//! The fast evaluation path (`eval`) against Cedar: on many requests and a
//! policy set that uses every kind of expression, every policy the fast path
//! answers must get Cedar's answer, and every decision must be the one
//! Cedar's authorizer makes on the whole set.

use std::net::IpAddr;

use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

use super::{Case, cedar_inputs, engine};
use crate::engine::PolicyEngine;
use crate::index::Outcome;

/// Policies over apps a0..a4, groups g0..g3 and users u0..u3, with every
/// scope form and every expression kind the fast path implements, plus
/// runtime errors (overflow, extension function errors) it must hand to
/// Cedar.
const POLICIES: &[(&str, &str)] = &[
    (
        "hours",
        r#"permit (principal in Tsuzuku::Group::"g0", action == Tsuzuku::Action::"read", resource == Tsuzuku::App::"a0")
           when { context.local_time >= duration("9h") && context.local_time < duration("18h") };"#,
    ),
    (
        "office-net",
        r#"permit (principal in Tsuzuku::Group::"g1", action in [Tsuzuku::Action::"read", Tsuzuku::Action::"write"], resource in Tsuzuku::App::"a1")
           when { context.source_ip.isInRange(ip("10.0.0.0/8")) || context.source_ip.isLoopback() };"#,
    ),
    (
        "user-u1",
        r#"permit (principal == Tsuzuku::User::"u1", action, resource)
           when { principal.mfa && principal.auth_age_secs < 3600 };"#,
    ),
    (
        "user-in-u2",
        r#"permit (principal in Tsuzuku::User::"u2", action in Tsuzuku::Action::"access", resource is Tsuzuku::App in Tsuzuku::App::"a2");"#,
    ),
    (
        "is-in-group",
        r#"permit (principal is Tsuzuku::User in Tsuzuku::Group::"g2", action == Tsuzuku::Action::"access", resource);"#,
    ),
    (
        "write-mfa",
        r#"forbid (principal, action == Tsuzuku::Action::"write", resource is Tsuzuku::App in Tsuzuku::App::"a2")
           unless { principal.mfa };"#,
    ),
    (
        "managed",
        r#"permit (principal, action, resource)
           when { context has device && context.device.company_issued && context.device.antivirus_version >= 400182403000009 };"#,
    ),
    (
        "weekday-api",
        r#"permit (principal in Tsuzuku::Group::"g3", action, resource)
           when { ["Mon", "Tue"].contains(context.weekday) && context.path like "/api/*" };"#,
    ),
    (
        "stale-posture",
        r#"forbid (principal, action, resource == Tsuzuku::App::"a3")
           when { context has device && context.device.posture_age_secs > 300 };"#,
    ),
    (
        "windows-only",
        r#"permit (principal, action, resource == Tsuzuku::App::"a4")
           when { if context has device then context.device.os == "windows" else false };"#,
    ),
    (
        "overflow-permit",
        r#"permit (principal in Tsuzuku::Group::"g0", action, resource)
           when { principal.auth_age_secs * 4611686018427387904 > 0 };"#,
    ),
    (
        "overflow-forbid",
        r#"forbid (principal in Tsuzuku::Group::"g1", action, resource == Tsuzuku::App::"a0")
           when { principal.auth_age_secs + 9223372036854775000 < 0 };"#,
    ),
    (
        "arith",
        r#"permit (principal, action == Tsuzuku::Action::"write", resource)
           when { -principal.auth_age_secs - 1 < -5000 && principal.auth_age_secs * 2 > 0 };"#,
    ),
    (
        "sets",
        r#"permit (principal, action, resource == Tsuzuku::App::"a1")
           when { [principal.username, "x"].containsAny(["alice", "bob"]) && ["GET", "POST", "HEAD"].containsAll([context.method]) && ![context.path].isEmpty() };"#,
    ),
    (
        "record",
        r#"permit (principal, action, resource == Tsuzuku::App::"a2")
           when { {mfa: principal.mfa, n: 1, name: resource.name}.mfa && {k: "v"} == {k: "v"} };"#,
    ),
    (
        "groups-set",
        r#"permit (principal, action, resource)
           when { resource.data_class == "restricted" && principal in [Tsuzuku::Group::"g0", Tsuzuku::Group::"g3"] };"#,
    ),
    (
        "datetime",
        r#"permit (principal, action, resource == Tsuzuku::App::"a3")
           when { context.now > datetime("2026-11-23T00:00:00Z") && context.now.toDate() == datetime("2026-11-23") && context.now.offset(duration("9h")).toTime() < duration("12h") };"#,
    ),
    (
        "decimal",
        r#"permit (principal in Tsuzuku::Group::"g2", action, resource)
           when { decimal("1.5").lessThan(decimal("2.0")) && context.local_date == "2026-11-23" };"#,
    ),
    (
        "ipv6",
        r#"forbid (principal, action, resource == Tsuzuku::App::"a4")
           when { context.source_ip.isIpv6() && !context.source_ip.isLoopback() };"#,
    ),
    (
        "flags",
        r#"permit (principal in Tsuzuku::Group::"g1", action, resource)
           when { (resource.critical || resource.isolated) && (if principal.mfa then 1 else 2) == 1 };"#,
    ),
    (
        "has-path",
        r#"permit (principal, action == Tsuzuku::Action::"read", resource == Tsuzuku::App::"a0")
           when { context has device.os && principal is Tsuzuku::User };"#,
    ),
    (
        "scope-in-body",
        r#"permit (principal, action, resource)
           when { resource in Tsuzuku::App::"a3" && action in Tsuzuku::Action::"access" && action != Tsuzuku::Action::"write" && principal == Tsuzuku::User::"u3" };"#,
    ),
    (
        "ext-error",
        r#"forbid (principal in Tsuzuku::Group::"g3", action, resource == Tsuzuku::App::"a1")
           when { context.now.offset(duration("9223372036854775807ms")) > context.now };"#,
    ),
    (
        "ip-range-of-var",
        r#"permit (principal == Tsuzuku::User::"u0", action, resource)
           when { ip("192.168.1.20").isInRange(context.source_ip) || context.source_ip == ip("192.168.1.20") };"#,
    ),
    (
        "access-eq",
        r#"permit (principal, action == Tsuzuku::Action::"access", resource == Tsuzuku::App::"a0");"#,
    ),
];

/// A Cedar authorizer error the way decisions report errors.
fn cedar_error(error: &cedar_policy::AuthorizationError) -> String {
    let cedar_policy::AuthorizationError::PolicyEvaluationError(error) = error;
    format!("{}: {}", error.policy_id(), error.inner())
}

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn random_case(rng: &mut Rng) -> Case {
    let mut case = Case::new();
    case.user.id = rng.pick(&["u0", "u1", "u2", "u3", "u4"]).to_string();
    case.user.username = rng.pick(&["alice", "bob", "carol"]).to_string();
    case.user.groups = (0..rng.next() % 4)
        .map(|_| rng.pick(&["g0", "g1", "g2", "g3", "g4"]).to_string())
        .collect();
    case.user.mfa = rng.chance(60);
    case.user.auth_time = case.req.now_unix - rng.pick(&[0, 10, 600, 5000, 1_000_000]);
    case.app.name = rng.pick(&["a0", "a1", "a2", "a3", "a4", "a5"]).to_string();
    case.app.data_class = rng.pick(&["public", "internal", "restricted"]).to_string();
    case.app.critical = rng.chance(30);
    case.app.isolated = rng.chance(30);
    case.req.method = rng.pick(&["GET", "POST", "delete", "head"]).to_string();
    case.req.path = rng.pick(&["/", "/api/items", "/index.html"]).to_string();
    case.req.source_ip = rng
        .pick(&[
            "10.1.2.3",
            "192.168.1.20",
            "203.0.113.9",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ])
        .parse::<IpAddr>()
        .unwrap();
    let times: [&str; 5] = [
        "2026-11-23T03:00:00+09:00",
        "2026-11-23T10:00:00+09:00",
        "2026-11-23T19:30:00+09:00",
        "2026-11-24T11:59:59+09:00",
        "2026-11-28T12:00:00+09:00",
    ];
    case.req.now_unix = super::at(rng.pick(&times));
    if rng.chance(30) {
        case.device = None;
    } else if let Some(device) = case.device.as_mut() {
        device.company_issued = rng.chance(60);
        device.os = rng.pick(&["windows", "macos"]).to_string();
        device.antivirus_version = 400_182_403_000_000 + (rng.next() % 20) as i64;
        device.reported_at = case.req.now_unix - (rng.next() % 600) as i64;
    }
    case
}

/// Per policy of the request's slice: the fast path's answer (when it
/// gives one) must be Cedar's evaluator's. Returns (answered by the fast
/// path, evaluated).
fn compare_policies(engine: &PolicyEngine, case: &Case) -> (usize, usize) {
    let (inputs, _) = engine.inputs(&case.user, case.device.as_ref(), &case.app, &case.req);
    let (parts, action) = inputs.unwrap();
    let env = engine.builder.env(&parts);
    let built = engine.builder.cedar(&parts).unwrap();
    let mut fast = 0;
    let mut all = 0;
    for entry in engine
        .compiled
        .index
        .slice(&case.app.name)
        .entries_for(&case.user, action)
    {
        let evaluator = Evaluator::new(
            built.request.clone(),
            &built.entities,
            Extensions::all_available(),
        );
        let cedar = entry.evaluate(&evaluator);
        all += 1;
        if let Some(outcome) = entry.evaluate_fast(&env) {
            fast += 1;
            assert_eq!(outcome, cedar, "policy {} on {case:?}", entry.name);
        } else {
            assert!(
                matches!(cedar, Outcome::Failed(_)),
                "the fast path gave up on policy {} but Cedar evaluates it to {cedar:?} ({case:?})",
                entry.name
            );
        }
    }
    (fast, all)
}

#[test]
fn fast_path_agrees_with_cedar() {
    let engine = engine(POLICIES);
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut fast, mut all, mut allowed, mut errors) = (0, 0, 0, 0);
    for _ in 0..3000 {
        let case = random_case(&mut rng);
        let (f, a) = compare_policies(&engine, &case);
        fast += f;
        all += a;

        let decision = case.decide(&engine);
        let (request, entities) = cedar_inputs(&engine, &case);
        let response = engine
            .authorizer
            .is_authorized(&request, &engine.compiled.all, &entities);
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        reasons.sort();
        let mut determining = decision.determining.clone();
        determining.sort();
        let mut failed: Vec<String> = response.diagnostics().errors().map(cedar_error).collect();
        failed.sort();
        let mut reported = decision.errors.clone();
        reported.sort();
        assert_eq!(reported, failed, "{case:?}");
        let cedar_allowed = response.decision() == cedar_policy::Decision::Allow;
        if decision.reason.contains("(fail closed)") {
            // Unlike Cedar's authorizer, a forbid that fails to evaluate
            // denies, even when a permit matches.
            assert!(!decision.allowed, "{case:?}");
            assert!(
                determining
                    .iter()
                    .all(|id| failed.iter().any(|e| e.starts_with(&format!("{id}: ")))),
                "{case:?}"
            );
        } else {
            assert_eq!(
                (decision.allowed, determining),
                (cedar_allowed, reasons),
                "{case:?}"
            );
        }
        allowed += usize::from(decision.allowed);
        errors += usize::from(!decision.errors.is_empty());
    }
    assert!(
        allowed > 300,
        "too few allowed requests to compare ({allowed})"
    );
    assert!(
        errors > 100,
        "too few failing policies to compare ({errors})"
    );
    assert!(
        fast * 10 > all * 9,
        "the fast path answered only {fast} of {all} evaluations"
    );
}

/// The error a policy reports is Cedar's, word for word, also when the fast
/// path gives up on it.
#[test]
fn fast_path_leaves_errors_to_cedar() {
    let engine = engine(&[(
        "bad-offset",
        r#"forbid (principal, action, resource) when { context.now.offset(duration("9223372036854775807ms")) > context.now };"#,
    )]);
    let decision = Case::new().decide(&engine);
    let (request, entities) = cedar_inputs(&engine, &Case::new());
    let response = engine
        .authorizer
        .is_authorized(&request, &engine.compiled.all, &entities);
    let cedar: Vec<String> = response.diagnostics().errors().map(cedar_error).collect();
    assert_eq!(decision.errors, cedar);
    assert!(!decision.allowed);
    assert_eq!(decision.determining, vec!["bad-offset".to_owned()]);
}
