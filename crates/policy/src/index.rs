//! Indexing policies by their scope so that a request evaluates only the
//! policies that can apply to it, and evaluating them.
//!
//! Cedar's authorizer evaluates every policy in the set it is given, and a
//! policy costs about a microsecond. The scope of most policies rules out most requests
//! cheaply and exactly: `resource == Tsuzuku::App::"sales"` only ever applies
//! to the sales app, `principal in Tsuzuku::Group::"ops"` only to members of
//! ops, `action == Tsuzuku::Action::"read"` only to reads. So the policies
//! are bucketed by app, then by the group or user in the principal scope,
//! then by action; a request evaluates the buckets for its app, its user, its
//! groups and its action. Policies whose scope cannot be bucketed exactly go
//! into the buckets that apply to every request, so the result is always the
//! same as evaluating the whole set.
//!
//! Each bucket holds the policies' conditions built once: compiled for the
//! fast path (see `eval`), without the scope parts that the bucket already
//! guarantees, and as one Cedar expression (scope and `when`/`unless`
//! clauses, Cedar's `condition()`) for Cedar's evaluator, which decides
//! whatever the fast path leaves to it, exactly as Cedar's authorizer does
//! (which rebuilds every condition on every request). Tests compare the
//! results with Cedar's authorizer.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Effect, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
    ResourceConstraint,
};
use cedar_policy_core::ast::{Expr, SlotEnv, Value};
use cedar_policy_core::evaluator::Evaluator;

use crate::eval::{Env, Node};
use crate::facts::UserFacts;

const APP_TYPE: &str = "Tsuzuku::App";
const USER_TYPE: &str = "Tsuzuku::User";
const GROUP_TYPE: &str = "Tsuzuku::Group";
const ACTION_TYPE: &str = "Tsuzuku::Action";

/// Index into per-action arrays.
pub(crate) const READ: usize = 0;
pub(crate) const WRITE: usize = 1;

/// One policy, ready to evaluate.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The policy id as text, for decisions.
    pub name: String,
    /// Position in document order.
    pub rank: usize,
    pub effect: Effect,
    /// Scope and conditions as one expression (Cedar's `condition()`).
    condition: Expr,
    env: SlotEnv,
    /// The same, compiled for the fast path (see `eval`).
    fast: Node,
}

/// What evaluating one policy gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Satisfied,
    NotSatisfied,
    Failed(String),
}

impl Entry {
    /// `exact` says which scope parts the policy's buckets imply (see
    /// [`Placement`]); the fast path leaves them out. Scope constraints
    /// always evaluate to a boolean without error, so leaving out one that
    /// is true changes neither the result nor whether evaluation fails.
    fn new(policy: &Policy, rank: usize, exact: [bool; 3]) -> Self {
        let core: &cedar_policy_core::ast::Policy = policy.as_ref();
        let condition = core.condition();
        let [principal, action, resource] = exact;
        let needed = [
            (!principal).then(|| core.principal_constraint().as_expr()),
            (!action).then(|| core.action_constraint().as_expr()),
            (!resource).then(|| core.resource_constraint().as_expr()),
            core.non_scope_constraints().cloned(),
        ];
        // The same shape as Cedar's `condition()`: a && (b && (c && d)).
        let needed = needed
            .into_iter()
            .flatten()
            .rev()
            .reduce(|rest, first| Expr::and(first, rest))
            .unwrap_or_else(|| Expr::val(true));
        Entry {
            name: policy.id().to_string(),
            rank,
            effect: policy.effect(),
            fast: Node::compile(&needed),
            condition,
            env: core.env().clone(),
        }
    }

    /// Evaluates the policy on the fast path; `None` when only Cedar's
    /// evaluator can tell (an error, or a construct the fast path does not
    /// implement), see [`Entry::evaluate`].
    pub(crate) fn evaluate_fast(&self, env: &Env<'_>) -> Option<Outcome> {
        match self.fast.holds(env) {
            Ok(true) => Some(Outcome::Satisfied),
            Ok(false) => Some(Outcome::NotSatisfied),
            Err(_) => None,
        }
    }

    /// Evaluates the policy like Cedar's authorizer: satisfied when the
    /// condition is `true`; an error (including a non-boolean result) makes
    /// the policy not apply and is reported.
    pub(crate) fn evaluate(&self, evaluator: &Evaluator<'_>) -> Outcome {
        match evaluator.interpret(&self.condition, &self.env) {
            Ok(value) if value == Value::from(true) => Outcome::Satisfied,
            Ok(value) if value == Value::from(false) => Outcome::NotSatisfied,
            Ok(value) => Outcome::Failed(format!(
                "the condition evaluated to {value}, not to a boolean"
            )),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// One list of policies per action: `[read, write]`.
type PerAction = [Vec<Arc<Entry>>; 2];

/// The policies that can apply to one application, bucketed by principal
/// scope and action.
#[derive(Debug, Default)]
pub(crate) struct Slice {
    /// Principal scope names no particular user or group.
    anyone: PerAction,
    /// `principal in Tsuzuku::Group::"<key>"`.
    by_group: HashMap<String, PerAction>,
    /// `principal == Tsuzuku::User::"<key>"` (or `in`).
    by_user: HashMap<String, PerAction>,
}

/// Where a policy goes, derived from its scope.
struct Placement {
    app: Option<String>,
    principal: Principal,
    actions: [bool; 2],
    /// Whether the principal, action and resource scope hold for every
    /// request that evaluates the policy from the buckets it is in, so that
    /// the fast path need not test them.
    exact: [bool; 3],
}

enum Principal {
    Anyone,
    Group(String),
    User(String),
}

impl Slice {
    fn insert(&mut self, principal: &Principal, actions: [bool; 2], entry: &Arc<Entry>) {
        let buckets = match principal {
            Principal::Anyone => &mut self.anyone,
            Principal::Group(g) => self.by_group.entry(g.clone()).or_default(),
            Principal::User(u) => self.by_user.entry(u.clone()).or_default(),
        };
        for (bucket, applies) in buckets.iter_mut().zip(actions) {
            if applies {
                bucket.push(Arc::clone(entry));
            }
        }
    }

    /// The policies a request by `user` with `action` (READ or WRITE) must
    /// evaluate. Each policy is listed once, except when `user.groups`
    /// lists a group twice.
    pub(crate) fn entries_for<'a>(
        &'a self,
        user: &'a UserFacts,
        action: usize,
    ) -> impl Iterator<Item = &'a Arc<Entry>> {
        let pick = move |buckets: &'a PerAction| buckets.get(action);
        pick(&self.anyone)
            .into_iter()
            .chain(self.by_user.get(&user.id).and_then(pick))
            .chain(
                user.groups
                    .iter()
                    .filter_map(move |g| self.by_group.get(g).and_then(pick)),
            )
            .flatten()
    }

    /// Ids of every policy in the slice (for tests), possibly twice when
    /// it applies to both actions.
    #[cfg(test)]
    pub(crate) fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.anyone
            .iter()
            .chain(self.by_group.values().flatten())
            .chain(self.by_user.values().flatten())
            .flatten()
            .map(|entry| entry.name.as_str())
    }
}

/// Every policy, bucketed: one slice per app named in a resource scope, and
/// one for all other apps.
#[derive(Debug, Default)]
pub(crate) struct Index {
    per_app: HashMap<String, Slice>,
    other_apps: Slice,
}

impl Index {
    /// Indexes the policies `order` names (document order) from `all`.
    pub(crate) fn build(all: &PolicySet, order: &[PolicyId]) -> Index {
        let placed: Vec<(Placement, Arc<Entry>)> = order
            .iter()
            .enumerate()
            .filter_map(|(rank, id)| all.policy(id).map(|p| (rank, p)))
            .map(|(rank, p)| {
                let place = placement(p);
                let entry = Arc::new(Entry::new(p, rank, place.exact));
                (place, entry)
            })
            .collect();
        let mut index = Index::default();
        for (place, _) in &placed {
            if let Some(app) = &place.app {
                index.per_app.entry(app.clone()).or_default();
            }
        }
        for (place, entry) in &placed {
            match &place.app {
                Some(app) => {
                    if let Some(slice) = index.per_app.get_mut(app) {
                        slice.insert(&place.principal, place.actions, entry);
                    }
                }
                None => {
                    index
                        .other_apps
                        .insert(&place.principal, place.actions, entry);
                    for slice in index.per_app.values_mut() {
                        slice.insert(&place.principal, place.actions, entry);
                    }
                }
            }
        }
        index
    }

    pub(crate) fn slice(&self, app: &str) -> &Slice {
        self.per_app.get(app).unwrap_or(&self.other_apps)
    }
}

fn is(uid: &EntityUid, type_name: &str) -> bool {
    uid.type_name().to_string() == type_name
}

/// The app a policy's resource scope restricts it to, if any.
/// `resource in App::"x"` equals `==` because apps have no parents.
pub(crate) fn scoped_app(policy: &Policy) -> Option<String> {
    match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid)
            if is(&uid, APP_TYPE) =>
        {
            Some(uid.id().unescaped().to_owned())
        }
        _ => None,
    }
}

fn placement(policy: &Policy) -> Placement {
    let app = scoped_app(policy);
    // `resource == App::"x"` and `resource in App::"x"` hold exactly in the
    // slice of x (`is ... in` also tests the type, so it is evaluated).
    let resource_exact = app.is_some()
        && matches!(
            policy.resource_constraint(),
            ResourceConstraint::Eq(_) | ResourceConstraint::In(_)
        );
    // Users are only ever in groups (never in other users), and groups have
    // no parents, so `principal in Group::"g"` holds exactly for members of
    // g, and `principal in User::"u"` exactly for u.
    let (principal, principal_exact) = match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid) if is(&uid, USER_TYPE) => {
            (Principal::User(uid.id().unescaped().to_owned()), true)
        }
        PrincipalConstraint::IsIn(_, uid) if is(&uid, USER_TYPE) => {
            (Principal::User(uid.id().unescaped().to_owned()), false)
        }
        PrincipalConstraint::In(uid) if is(&uid, GROUP_TYPE) => {
            (Principal::Group(uid.id().unescaped().to_owned()), true)
        }
        PrincipalConstraint::IsIn(_, uid) if is(&uid, GROUP_TYPE) => {
            (Principal::Group(uid.id().unescaped().to_owned()), false)
        }
        _ => (Principal::Anyone, false),
    };
    // `read` and `write` are both in `access` (and nothing else is): a
    // policy is in an action's bucket when its action scope names that
    // action or `access`. That is exact for `action in [...]` and for
    // `action == read` or `write`; `action == access` holds for neither
    // action, and anything unrecognised is evaluated for both actions.
    let covers = |uid: &EntityUid, action: &str| {
        is(uid, ACTION_TYPE) && [action, "access"].contains(&uid.id().unescaped())
    };
    let (actions, action_exact) = match policy.action_constraint() {
        ActionConstraint::Any => ([true, true], false),
        ActionConstraint::Eq(uid) => (
            [covers(&uid, "read"), covers(&uid, "write")],
            is(&uid, ACTION_TYPE) && ["read", "write"].contains(&uid.id().unescaped()),
        ),
        ActionConstraint::In(uids) => (
            [
                uids.iter().any(|u| covers(u, "read")),
                uids.iter().any(|u| covers(u, "write")),
            ],
            true,
        ),
    };
    Placement {
        app,
        principal,
        actions,
        exact: [principal_exact, action_exact, resource_exact],
    }
}
