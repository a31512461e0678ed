//! Explanations for `tsuzuku policy test`: which policies matched, which did
//! not and why (the scope part or the condition that failed), and which
//! could not be evaluated.

use std::fmt;

use cedar_policy::pst::{self, ActionConstraint, PrincipalConstraint, ResourceConstraint};
use cedar_policy::{Effect, Policy, PolicySet};
use serde_json::Value;

use crate::engine::{Decision, PolicyEngine};
use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts};
use crate::index::scoped_app;

/// Whether a policy permits or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEffect {
    /// `permit (...)`
    Permit,
    /// `forbid (...)`
    Forbid,
}

impl fmt::Display for PolicyEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyEffect::Permit => "permit",
            PolicyEffect::Forbid => "forbid",
        })
    }
}

/// How one policy fared on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyStatus {
    /// Scope and every condition held.
    Matched,
    /// The policy does not apply; each reason names a scope part or
    /// condition that did not hold.
    NotMatched {
        /// Why, one entry per failing part.
        reasons: Vec<String>,
    },
    /// Evaluating the policy failed (it does not permit; a failing forbid
    /// denies).
    Failed {
        /// Cedar's evaluation error.
        error: String,
    },
}

/// One policy's part in an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Policy id (`doc` or `doc#N`).
    pub id: String,
    /// permit or forbid.
    pub effect: PolicyEffect,
    /// False when the policy's resource scope names another app, so it
    /// could never apply to this request's app.
    pub for_this_app: bool,
    /// Matched, not matched (and why) or failed.
    pub status: PolicyStatus,
}

/// A decision together with how every loaded policy fared. `Display` gives a
/// readable multi-line report.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The decision, exactly as [`PolicyEngine::decide`] makes it.
    pub decision: Decision,
    /// The inputs as the policies saw them ([`Decision::summary`]).
    pub summary: Value,
    /// Every loaded policy, in document order (not only the requested app's
    /// slice).
    pub policies: Vec<PolicyOutcome>,
}

impl Explanation {
    /// Policies whose scope and conditions all held, with the given effect.
    pub fn matched(&self, effect: PolicyEffect) -> Vec<&str> {
        self.policies
            .iter()
            .filter(|p| p.effect == effect && p.status == PolicyStatus::Matched)
            .map(|p| p.id.as_str())
            .collect()
    }
}

/// Probe policies for one real policy: each is a permit that holds exactly
/// when one part of the real policy holds.
struct Probes {
    /// The whole policy turned into a permit.
    whole: Policy,
    /// (probe, what to say when the probe is false, what to say when true).
    parts: Vec<(Policy, Part)>,
}

enum Part {
    /// The scope constraint (e.g. `principal in Group::"x"`) and the
    /// request's entity it was checked against.
    Scope {
        constraint: String,
        actual: String,
    },
    When(String),
    Unless(String),
}

impl PolicyEngine {
    /// Decides the request like [`PolicyEngine::decide`] and reports, for
    /// every loaded policy, whether it matched, and if not, which part of
    /// its scope or which condition did not hold. For `tsuzuku policy test`;
    /// slower than `decide`.
    pub fn explain(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
    ) -> Explanation {
        let decision = self.decide(user, device, app, req);
        let summary = decision.summary(user, device, app, req).to_value();
        let (prepared, _) = self.prepare(user, device, app, req);
        let Ok(prepared) = prepared else {
            return Explanation {
                decision,
                summary,
                policies: Vec::new(),
            };
        };
        let request = cedar_policy::Request::from(prepared.request);
        let entities = cedar_policy::Entities::from(prepared.entities);

        // All probes go into one set and are evaluated in one call.
        let mut probe_set = PolicySet::new();
        let mut probes = Vec::new();
        for (index, id) in self.compiled.order.iter().enumerate() {
            let Some(policy) = self.compiled.all.policy(id) else {
                continue;
            };
            let built = build_probes(index, policy, &request);
            if let Ok(built) = &built {
                let _ = probe_set.add(built.whole.clone());
                for (probe, _) in &built.parts {
                    let _ = probe_set.add(probe.clone());
                }
            }
            probes.push((policy, built));
        }
        let response = self
            .authorizer
            .is_authorized(&request, &probe_set, &entities);
        let diagnostics = response.diagnostics();
        let held = |probe: &Policy| diagnostics.reason().any(|id| id == probe.id());
        let error_of = |probe: &Policy| {
            diagnostics.errors().find_map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                (e.policy_id() == probe.id()).then(|| e.inner().to_string())
            })
        };

        let policies = probes
            .into_iter()
            .map(|(policy, built)| {
                let effect = match policy.effect() {
                    Effect::Permit => PolicyEffect::Permit,
                    Effect::Forbid => PolicyEffect::Forbid,
                };
                let status = match built {
                    Err(error) => PolicyStatus::Failed { error },
                    Ok(built) => {
                        if held(&built.whole) {
                            PolicyStatus::Matched
                        } else if let Some(error) = error_of(&built.whole) {
                            PolicyStatus::Failed { error }
                        } else {
                            let mut reasons: Vec<String> = built
                                .parts
                                .iter()
                                .filter_map(|(probe, part)| {
                                    if let Some(error) = error_of(probe) {
                                        let text = match part {
                                            Part::Scope { constraint, .. } => constraint,
                                            Part::When(s) | Part::Unless(s) => s,
                                        };
                                        return Some(format!(
                                            "`{text}` could not be evaluated: {error}"
                                        ));
                                    }
                                    match (part, held(probe)) {
                                        (Part::Scope { constraint, actual }, false) => {
                                            Some(format!(
                                                "scope `{constraint}` does not match `{actual}`"
                                            ))
                                        }
                                        (Part::When(text), false) => {
                                            Some(format!("condition `when {{ {text} }}` is false"))
                                        }
                                        (Part::Unless(text), true) => {
                                            Some(format!("condition `unless {{ {text} }}` is true"))
                                        }
                                        _ => None,
                                    }
                                })
                                .collect();
                            if reasons.is_empty() {
                                reasons.push("its conditions do not all hold together".to_owned());
                            }
                            PolicyStatus::NotMatched { reasons }
                        }
                    }
                };
                let for_this_app = scoped_app(policy).is_none_or(|scoped| scoped == app.name);
                PolicyOutcome {
                    id: policy.id().to_string(),
                    effect,
                    for_this_app,
                    status,
                }
            })
            .collect();
        Explanation {
            decision,
            summary,
            policies,
        }
    }
}

fn build_probes(
    index: usize,
    policy: &Policy,
    request: &cedar_policy::Request,
) -> Result<Probes, String> {
    let pst::Policy::Static(body) = policy
        .to_pst()
        .map_err(|e| format!("cannot take the policy apart to explain it: {e}"))?
    else {
        return Err("linked template policies cannot be explained".to_owned());
    };
    let body = body.body().clone();
    let make = |suffix: &str, template: pst::Template| -> Result<Policy, String> {
        let template = template.with_id(pst::PolicyID(format!("probe{index}.{suffix}").into()));
        let policy = pst::StaticPolicy::try_from(template)
            .map_err(|e| format!("cannot build a probe policy: {e}"))?;
        Policy::from_pst(pst::Policy::Static(policy))
            .map_err(|e| format!("cannot build a probe policy: {e}"))
    };
    let open = |principal, action, resource| {
        pst::Template::new("probe", pst::Effect::Permit, principal, action, resource)
    };

    let mut whole = body.clone();
    whole.effect = pst::Effect::Permit;
    let whole = make("whole", whole)?;

    let show = |uid: Option<&cedar_policy::EntityUid>| {
        uid.map_or_else(|| "(unknown)".to_owned(), ToString::to_string)
    };
    let mut parts = Vec::new();
    if body.principal != PrincipalConstraint::Any {
        parts.push((
            make(
                "principal",
                open(
                    body.principal.clone(),
                    ActionConstraint::Any,
                    ResourceConstraint::Any,
                ),
            )?,
            Part::Scope {
                constraint: format!("principal {}", body.principal),
                actual: show(request.principal()),
            },
        ));
    }
    if body.action != ActionConstraint::Any {
        parts.push((
            make(
                "action",
                open(
                    PrincipalConstraint::Any,
                    body.action.clone(),
                    ResourceConstraint::Any,
                ),
            )?,
            Part::Scope {
                constraint: format!("action {}", body.action),
                actual: show(request.action()),
            },
        ));
    }
    if body.resource != ResourceConstraint::Any {
        parts.push((
            make(
                "resource",
                open(
                    PrincipalConstraint::Any,
                    ActionConstraint::Any,
                    body.resource.clone(),
                ),
            )?,
            Part::Scope {
                constraint: format!("resource {}", body.resource),
                actual: show(request.resource()),
            },
        ));
    }
    for (n, clause) in body.clauses().iter().enumerate() {
        let (expr, part) = match clause {
            pst::Clause::When(expr) => (expr.clone(), Part::When(expr.to_string())),
            pst::Clause::Unless(expr) => (expr.clone(), Part::Unless(expr.to_string())),
        };
        let template = open(
            PrincipalConstraint::Any,
            ActionConstraint::Any,
            ResourceConstraint::Any,
        )
        .try_with_clauses([pst::Clause::When(expr)])
        .map_err(|e| format!("cannot build a probe policy: {e}"))?;
        parts.push((make(&format!("clause{n}"), template)?, part));
    }
    Ok(Probes { whole, parts })
}

fn text(summary: &Value, pointer: &str) -> String {
    match summary.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn yes_no(summary: &Value, pointer: &str) -> &'static str {
    match summary.pointer(pointer) {
        Some(Value::Bool(true)) => "yes",
        Some(Value::Bool(false)) => "no",
        _ => "?",
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        let verdict = if self.decision.allowed {
            "ALLOW"
        } else {
            "DENY"
        };
        writeln!(f, "decision: {verdict} ({})", self.decision.reason)?;
        writeln!(
            f,
            "request:  {} {} (action {}) to app {} from {}",
            text(s, "/context/method"),
            text(s, "/context/path"),
            text(s, "/action"),
            text(s, "/resource/name"),
            text(s, "/context/source_ip"),
        )?;
        let groups = match s.pointer("/principal/groups") {
            Some(Value::Array(groups)) if !groups.is_empty() => groups
                .iter()
                .map(|g| g.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "(none)".to_owned(),
        };
        writeln!(
            f,
            "user:     {} (id {}), groups: {groups}; login {} (mfa {}) {} s ago",
            text(s, "/principal/username"),
            text(s, "/principal/id"),
            text(s, "/principal/auth_method"),
            yes_no(s, "/principal/mfa"),
            text(s, "/principal/auth_age_secs"),
        )?;
        match s.pointer("/context/device") {
            Some(Value::Object(_)) => writeln!(
                f,
                "device:   enrolled {}, company-issued {}, {} {}, disk encrypted {}, \
                 antivirus running {} (version code {}), posture {} s old",
                yes_no(s, "/context/device/enrolled"),
                yes_no(s, "/context/device/company_issued"),
                text(s, "/context/device/os"),
                text(s, "/context/device/os_version"),
                yes_no(s, "/context/device/disk_encrypted"),
                yes_no(s, "/context/device/antivirus_running"),
                text(s, "/context/device/antivirus_version"),
                text(s, "/context/device/posture_age_secs"),
            )?,
            _ => writeln!(
                f,
                "device:   unknown (no posture: `context has device` is false)"
            )?,
        }
        writeln!(
            f,
            "app:      data class {}, critical {}, isolated {}",
            text(s, "/resource/data_class"),
            yes_no(s, "/resource/critical"),
            yes_no(s, "/resource/isolated"),
        )?;
        writeln!(
            f,
            "time:     {} {} {} in {} (UTC{}), {}",
            text(s, "/context/weekday"),
            text(s, "/context/local_date"),
            text(s, "/context/local_time"),
            text(s, "/context/time_zone"),
            text(s, "/context/utc_offset"),
            text(s, "/context/now"),
        )?;

        let section = |f: &mut fmt::Formatter<'_>, title: &str, lines: Vec<String>| {
            writeln!(f, "{title}:")?;
            if lines.is_empty() {
                writeln!(f, "  (none)")
            } else {
                lines.iter().try_for_each(|line| writeln!(f, "  {line}"))
            }
        };
        let matched = self
            .policies
            .iter()
            .filter(|p| p.status == PolicyStatus::Matched)
            .map(|p| format!("{} {}", p.effect, p.id))
            .collect();
        section(f, "matched", matched)?;
        let mut not_matched = Vec::new();
        let mut other_apps = 0usize;
        for p in &self.policies {
            if let PolicyStatus::NotMatched { reasons } = &p.status {
                if !p.for_this_app {
                    other_apps += 1;
                    continue;
                }
                not_matched.push(format!("{} {}:", p.effect, p.id));
                not_matched.extend(reasons.iter().map(|r| format!("  - {r}")));
            }
        }
        if other_apps > 0 {
            not_matched.push(format!(
                "({other_apps} more {} for other apps not shown)",
                if other_apps == 1 {
                    "policy"
                } else {
                    "policies"
                }
            ));
        }
        section(f, "not matched", not_matched)?;
        let mut failed: Vec<String> = self
            .policies
            .iter()
            .filter_map(|p| match &p.status {
                PolicyStatus::Failed { error } => Some(format!("{} {}: {error}", p.effect, p.id)),
                _ => None,
            })
            .collect();
        // Input problems are reported by the decision only.
        if self.policies.is_empty() {
            failed.extend(self.decision.errors.iter().cloned());
        }
        section(f, "errors", failed)
    }
}
