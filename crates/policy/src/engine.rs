//! The Policy Decision Point: turns the facts about one request into a Cedar
//! request, evaluates the policies that can apply to it (see `index`), and
//! reports a [`Decision`] with its reasons.

use std::collections::HashMap;

use cedar_policy::{Authorizer, Effect, PolicyId};
use cedar_policy_core::ast::Request as CoreRequest;
use cedar_policy_core::entities::Entities as CoreEntities;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use jiff::tz::TimeZone;

use crate::PolicyError;
use crate::compile::{Compiled, PolicyDoc, compile_docs};
use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts, action_for_method};
use crate::index::{Entry, Outcome, READ, WRITE};
use crate::request::{Builder, local_clock, summary};

/// The outcome of one authorization decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The policies that determined the outcome, in document order: the
    /// permits that allowed it, or the forbids that denied it. Empty for a
    /// default deny.
    pub determining: Vec<String>,
    /// Policies that failed to evaluate (`"<policy id>: <message>"`), and any
    /// problem with the inputs. A failing permit never allows; a failing
    /// forbid denies.
    pub errors: Vec<String>,
    /// One sentence for people: "allowed by policy X", "denied by forbid
    /// policy Y", "denied: no policy permits (default deny)", ...
    pub reason: String,
    /// The inputs as the policies saw them, for the audit event.
    pub context_summary: serde_json::Value,
}

/// A compiled, validated policy set ready to decide requests.
///
/// `Send + Sync` and immutable: build one per policy snapshot and share it in
/// an `Arc`.
#[derive(Debug)]
pub struct PolicyEngine {
    pub(crate) compiled: Compiled,
    tz: TimeZone,
    /// Position of every policy in document order, to sort reasons.
    rank: HashMap<PolicyId, usize>,
    builder: Builder,
    pub(crate) authorizer: Authorizer,
}

/// Everything one request turns into before Cedar evaluates it.
pub(crate) struct Prepared {
    pub request: CoreRequest,
    pub entities: CoreEntities,
    /// READ or WRITE.
    pub action: usize,
}

impl PolicyEngine {
    /// Parses the documents, validates them against the schema (strict
    /// mode) and indexes them by scope. `tz` is the organisation's time
    /// zone: `context.local_time`, `local_date` and `weekday` are computed
    /// in it, daylight saving time included.
    ///
    /// The error lists every problem in every document, with the document id
    /// and Cedar's message.
    pub fn compile(docs: &[PolicyDoc<'_>], tz: TimeZone) -> Result<Self, PolicyError> {
        let compiled = compile_docs(docs)?;
        let schema = crate::schema::schema()?;
        let builder = Builder::new(schema).map_err(PolicyError::Schema)?;
        let rank = compiled
            .order
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Ok(Self {
            compiled,
            tz,
            rank,
            builder,
            authorizer: Authorizer::new(),
        })
    }

    /// Decides one request. Default deny: allowed only when a permit policy
    /// matches and no forbid policy matches or fails to evaluate.
    pub fn decide(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
    ) -> Decision {
        let (prepared, summary) = self.prepare(user, device, app, req);
        match prepared {
            Ok(prepared) => {
                let evaluator = Evaluator::new(
                    prepared.request,
                    &prepared.entities,
                    Extensions::all_available(),
                );
                let outcomes = self
                    .compiled
                    .index
                    .slice(&app.name)
                    .entries_for(user, prepared.action)
                    .map(|entry| (entry.as_ref(), entry.evaluate(&evaluator)));
                self.conclude(outcomes, summary)
            }
            Err(problem) => Decision {
                allowed: false,
                determining: Vec::new(),
                reason: format!("denied: the request could not be evaluated ({problem})"),
                errors: vec![problem],
                context_summary: summary,
            },
        }
    }

    /// The organisation's time zone the engine computes local time in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Ids of all loaded policies, in document order.
    pub fn policy_ids(&self) -> Vec<String> {
        self.compiled
            .order
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Builds the Cedar request and entities, and the audit summary of the
    /// inputs (which is returned even when the inputs are unusable).
    pub(crate) fn prepare(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
    ) -> (Result<Prepared, String>, serde_json::Value) {
        let action = action_for_method(&req.method);
        let read = action == "read";
        let moment = local_clock(&self.tz, req.now_unix).and_then(|c| self.builder.moment(&c));
        let summary = summary(
            user,
            device,
            app,
            req,
            action,
            &self.tz,
            moment.as_ref().ok(),
        );
        let prepared = moment.and_then(|moment| {
            let built = self.builder.build(user, device, app, req, read, &moment)?;
            Ok(Prepared {
                request: built.request,
                entities: built.entities,
                action: if read { READ } else { WRITE },
            })
        });
        (prepared, summary)
    }

    /// Combines the outcomes of the evaluated policies into one decision,
    /// with Cedar's rules plus fail-closed: any matching forbid denies;
    /// otherwise a forbid that failed to evaluate denies; otherwise any
    /// matching permit allows; otherwise default deny.
    pub(crate) fn conclude<'a>(
        &self,
        outcomes: impl Iterator<Item = (&'a Entry, Outcome)>,
        summary: serde_json::Value,
    ) -> Decision {
        let mut forbids = Vec::new();
        let mut permits = Vec::new();
        let mut failed_forbids = Vec::new();
        let mut errors: Vec<(usize, String)> = Vec::new();
        for (entry, outcome) in outcomes {
            match (outcome, entry.effect) {
                (Outcome::Satisfied, Effect::Forbid) => forbids.push(&entry.id),
                (Outcome::Satisfied, Effect::Permit) => permits.push(&entry.id),
                (Outcome::NotSatisfied, _) => {}
                (Outcome::Failed(error), effect) => {
                    if effect == Effect::Forbid {
                        failed_forbids.push(&entry.id);
                    }
                    errors.push((self.rank_of(&entry.id), format!("{}: {error}", entry.id)));
                }
            }
        }
        errors.sort();
        errors.dedup();
        for ids in [&mut forbids, &mut permits, &mut failed_forbids] {
            ids.sort_by_key(|id| (self.rank_of(id), *id));
            ids.dedup();
        }

        let (allowed, determining, reason) = if !forbids.is_empty() {
            let reason = format!("denied by forbid {}", name_policies(&forbids));
            (false, forbids, reason)
        } else if !failed_forbids.is_empty() {
            let reason = format!(
                "denied: forbid {} could not be evaluated (fail closed)",
                name_policies(&failed_forbids)
            );
            (false, failed_forbids, reason)
        } else if !permits.is_empty() {
            let reason = format!("allowed by {}", name_policies(&permits));
            (true, permits, reason)
        } else {
            (
                false,
                Vec::new(),
                "denied: no policy permits (default deny)".to_owned(),
            )
        };
        Decision {
            allowed,
            determining: determining.iter().map(ToString::to_string).collect(),
            errors: errors.into_iter().map(|(_, e)| e).collect(),
            reason,
            context_summary: summary,
        }
    }

    /// Position of a policy in document order.
    pub(crate) fn rank_of(&self, id: &PolicyId) -> usize {
        self.rank.get(id).copied().unwrap_or(usize::MAX)
    }
}

/// "policy a" or "policies a, b".
fn name_policies(ids: &[&PolicyId]) -> String {
    let list = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() == 1 {
        format!("policy {list}")
    } else {
        format!("policies {list}")
    }
}
