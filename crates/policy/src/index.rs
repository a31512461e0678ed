//! Indexing policies by their scope so that a request evaluates only the
//! policies that can apply to it.
//!
//! Cedar evaluates every policy in the set it is given, and a policy costs
//! about a microsecond. The scope of most policies rules out most requests
//! cheaply and exactly: `resource == Tsuzuku::App::"sales"` only ever applies
//! to the sales app, `principal in Tsuzuku::Group::"ops"` only to members of
//! ops, `action == Tsuzuku::Action::"read"` only to reads. So the policies
//! are bucketed by app, then by the group or user in the principal scope,
//! then by action; a request evaluates the buckets for its app, its user, its
//! groups and its action, and the results are combined with Cedar's rules
//! (any matching forbid denies; otherwise any matching permit allows).
//! Policies whose scope cannot be bucketed exactly go into the buckets that
//! apply to every request, so the result is always the same as evaluating
//! the whole set.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};

use crate::facts::UserFacts;

const APP_TYPE: &str = "Tsuzuku::App";
const USER_TYPE: &str = "Tsuzuku::User";
const GROUP_TYPE: &str = "Tsuzuku::Group";
const ACTION_TYPE: &str = "Tsuzuku::Action";

/// Index into per-action arrays.
pub(crate) const READ: usize = 0;
pub(crate) const WRITE: usize = 1;

/// One policy set per action: `[read, write]`.
type PerAction = [PolicySet; 2];

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
}

enum Principal {
    Anyone,
    Group(String),
    User(String),
}

impl Slice {
    fn insert(&mut self, principal: &Principal, actions: [bool; 2], policy: &Policy) {
        let buckets = match principal {
            Principal::Anyone => &mut self.anyone,
            Principal::Group(g) => self.by_group.entry(g.clone()).or_default(),
            Principal::User(u) => self.by_user.entry(u.clone()).or_default(),
        };
        for (bucket, applies) in buckets.iter_mut().zip(actions) {
            if applies {
                // Ids are unique in the whole set, so they are in a bucket.
                let _ = bucket.add(policy.clone());
            }
        }
    }

    /// The non-empty policy sets a request by `user` with `action` (READ or
    /// WRITE) must evaluate. Each policy is in at most one of them, except
    /// when `user.groups` lists a group twice.
    pub(crate) fn sets_for<'a>(
        &'a self,
        user: &'a UserFacts,
        action: usize,
    ) -> impl Iterator<Item = &'a PolicySet> {
        let pick = move |buckets: &'a PerAction| buckets.get(action);
        pick(&self.anyone)
            .into_iter()
            .chain(self.by_user.get(&user.id).and_then(pick))
            .chain(
                user.groups
                    .iter()
                    .filter_map(move |g| self.by_group.get(g).and_then(pick)),
            )
            .filter(|set| !set.is_empty())
    }

    /// Every policy in the slice (for tests and diagnostics), possibly
    /// twice when it applies to both actions.
    #[cfg(test)]
    pub(crate) fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.anyone
            .iter()
            .chain(self.by_group.values().flatten())
            .chain(self.by_user.values().flatten())
            .flat_map(PolicySet::policies)
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
    pub(crate) fn build(all: &PolicySet) -> Index {
        let placed: Vec<(Placement, &Policy)> = all.policies().map(|p| (placement(p), p)).collect();
        let mut index = Index::default();
        for (place, _) in &placed {
            if let Some(app) = &place.app {
                index.per_app.entry(app.clone()).or_default();
            }
        }
        for (place, policy) in &placed {
            match &place.app {
                Some(app) => {
                    if let Some(slice) = index.per_app.get_mut(app) {
                        slice.insert(&place.principal, place.actions, policy);
                    }
                }
                None => {
                    index
                        .other_apps
                        .insert(&place.principal, place.actions, policy);
                    for slice in index.per_app.values_mut() {
                        slice.insert(&place.principal, place.actions, policy);
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

fn placement(policy: &Policy) -> Placement {
    // `resource in App::"x"` equals `==` because apps have no parents.
    let app = match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid)
            if is(&uid, APP_TYPE) =>
        {
            Some(uid.id().unescaped().to_owned())
        }
        _ => None,
    };
    // Users are only ever in groups (never in other users), and groups have
    // no parents, so `principal in Group::"g"` holds exactly for members of
    // g, and `principal in User::"u"` exactly for u.
    let principal = match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid)
        | PrincipalConstraint::In(uid)
        | PrincipalConstraint::IsIn(_, uid)
            if is(&uid, USER_TYPE) =>
        {
            Principal::User(uid.id().unescaped().to_owned())
        }
        PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid)
            if is(&uid, GROUP_TYPE) =>
        {
            Principal::Group(uid.id().unescaped().to_owned())
        }
        _ => Principal::Anyone,
    };
    // `read` and `write` are both in `access`; anything unrecognised is
    // evaluated for both actions.
    let covers = |uid: &EntityUid, action: &str| {
        is(uid, ACTION_TYPE) && [action, "access"].contains(&uid.id().unescaped())
    };
    let actions = match policy.action_constraint() {
        ActionConstraint::Any => [true, true],
        ActionConstraint::Eq(uid) => [covers(&uid, "read"), covers(&uid, "write")],
        ActionConstraint::In(uids) => [
            uids.iter().any(|u| covers(u, "read")),
            uids.iter().any(|u| covers(u, "write")),
        ],
    };
    Placement {
        app,
        principal,
        actions,
    }
}
