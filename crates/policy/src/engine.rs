//! The Policy Decision Point: turns the facts about one request into a Cedar
//! request, evaluates the policies that can apply to it (see `index`), and
//! reports a [`Decision`] with its reasons.

use std::cell::OnceCell;
use std::sync::Arc;

use cedar_policy::{Authorizer, Effect};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use jiff::tz::TimeZone;

use crate::PolicyError;
use crate::compile::{Compiled, PolicyDoc, compile_docs};
use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts};
use crate::index::{Entry, Outcome, READ, WRITE};
use crate::request::{Builder, Built, Derived, Parts, local_clock};
use crate::summary::Inputs;

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
    /// What the decision derived from its facts; with the facts,
    /// [`Decision::summary`] gives the inputs as the policies saw them, for
    /// the audit event.
    pub inputs: Inputs,
}

impl Decision {
    /// The inputs as the policies saw them (see [`Inputs::summary`]); pass
    /// the facts the decision was made from.
    pub fn summary<'a>(
        &'a self,
        user: &'a UserFacts,
        device: Option<&'a DeviceFacts>,
        app: &'a AppFacts,
        req: &'a RequestFacts,
    ) -> crate::Summary<'a> {
        self.inputs.summary(user, device, app, req)
    }
}

/// A compiled, validated policy set ready to decide requests.
///
/// `Send + Sync` and immutable: build one per policy snapshot and share it in
/// an `Arc`.
#[derive(Debug)]
pub struct PolicyEngine {
    pub(crate) compiled: Compiled,
    tz: TimeZone,
    /// The zone's IANA name, as decisions report it.
    tz_name: Arc<str>,
    pub(crate) builder: Builder,
    pub(crate) authorizer: Authorizer,
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
        Ok(Self {
            compiled,
            tz_name: Arc::from(tz.iana_name().unwrap_or("(fixed offset)")),
            tz,
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
        let (prepared, inputs) = self.inputs(user, device, app, req);
        let (parts, action) = match prepared {
            Ok(prepared) => prepared,
            Err(problem) => {
                return Decision {
                    allowed: false,
                    determining: Vec::new(),
                    reason: format!("denied: the request could not be evaluated ({problem})"),
                    errors: vec![problem],
                    inputs,
                };
            }
        };
        let env = self.builder.env(&parts);
        // Cedar's request and entity store, built only when a policy needs
        // Cedar's evaluator (see `eval`). Building it adds the user and the
        // app to the action entities; their uids have different types, so
        // it cannot fail, and if it did the policy would be reported failed.
        let cedar: OnceCell<Result<Built, String>> = OnceCell::new();
        let outcomes = self
            .compiled
            .index
            .slice(&app.name)
            .entries_for(user, action)
            .map(|entry| {
                let outcome = entry.evaluate_fast(&env).unwrap_or_else(|| {
                    match cedar.get_or_init(|| self.builder.cedar(&parts)) {
                        Ok(built) => entry.evaluate(&Evaluator::new(
                            built.request.clone(),
                            &built.entities,
                            Extensions::all_available(),
                        )),
                        Err(problem) => Outcome::Failed(problem.clone()),
                    }
                });
                (entry.as_ref(), outcome)
            });
        self.conclude(outcomes, inputs)
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

    /// The Cedar values of the request and the action (READ or WRITE), and
    /// what the audit summary needs (which is returned even when the inputs
    /// are unusable).
    pub(crate) fn inputs(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
    ) -> (Result<(Parts, usize), String>, Inputs) {
        let derived = Derived::new(req);
        let moment = local_clock(&self.tz, req.now_unix).and_then(|c| self.builder.moment(&c));
        let inputs = Inputs::new(
            &derived,
            moment.as_ref().ok().map(Arc::clone),
            Arc::clone(&self.tz_name),
        );
        let parts = moment.and_then(|moment| {
            let parts = self
                .builder
                .parts(user, device, app, req, &moment, &derived)?;
            Ok((parts, if derived.read() { READ } else { WRITE }))
        });
        (parts, inputs)
    }

    /// Builds the Cedar request and entities, and the audit summary of the
    /// inputs (which is returned even when the inputs are unusable).
    pub(crate) fn prepare(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
    ) -> (Result<Built, String>, Inputs) {
        let (prepared, inputs) = self.inputs(user, device, app, req);
        let built = prepared.and_then(|(parts, _)| self.builder.cedar(&parts));
        (built, inputs)
    }

    /// Combines the outcomes of the evaluated policies into one decision,
    /// with Cedar's rules plus fail-closed: any matching forbid denies;
    /// otherwise a forbid that failed to evaluate denies; otherwise any
    /// matching permit allows; otherwise default deny.
    pub(crate) fn conclude<'a>(
        &self,
        outcomes: impl Iterator<Item = (&'a Entry, Outcome)>,
        inputs: Inputs,
    ) -> Decision {
        let mut forbids: Vec<&Entry> = Vec::new();
        let mut permits: Vec<&Entry> = Vec::new();
        let mut failed_forbids: Vec<&Entry> = Vec::new();
        let mut errors: Vec<(usize, String)> = Vec::new();
        for (entry, outcome) in outcomes {
            match (outcome, entry.effect) {
                (Outcome::Satisfied, Effect::Forbid) => forbids.push(entry),
                (Outcome::Satisfied, Effect::Permit) => permits.push(entry),
                (Outcome::NotSatisfied, _) => {}
                (Outcome::Failed(error), effect) => {
                    if effect == Effect::Forbid {
                        failed_forbids.push(entry);
                    }
                    errors.push((entry.rank, format!("{}: {error}", entry.name)));
                }
            }
        }
        errors.sort();
        errors.dedup();
        for entries in [&mut forbids, &mut permits, &mut failed_forbids] {
            // Document order; a policy is listed twice when the user's
            // groups name a group twice.
            entries.sort_by_key(|entry| entry.rank);
            entries.dedup_by_key(|entry| entry.rank);
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
            determining: determining.iter().map(|entry| entry.name.clone()).collect(),
            errors: errors.into_iter().map(|(_, e)| e).collect(),
            reason,
            inputs,
        }
    }
}

/// "policy a" or "policies a, b".
fn name_policies(entries: &[&Entry]) -> String {
    let mut text = String::from(if entries.len() == 1 {
        "policy "
    } else {
        "policies "
    });
    for (n, entry) in entries.iter().enumerate() {
        if n > 0 {
            text.push_str(", ");
        }
        text.push_str(&entry.name);
    }
    text
}
