//! The Policy Decision Point: turns the facts about one request into a Cedar
//! request, evaluates the policies of the requested app's slice, and reports
//! a [`Decision`] with its reasons.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, Response, RestrictedExpression,
};
use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::{Offset, TimeZone};
use serde_json::json;

use crate::PolicyError;
use crate::compile::{Compiled, PolicyDoc, compile_docs};
use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts, action_for_method};

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
    pub(crate) tz: TimeZone,
    /// Position of every policy in document order, to sort reasons.
    rank: HashMap<PolicyId, usize>,
    types: Types,
    /// `read`, `write` and the group `access` they are in.
    action_entities: Vec<Entity>,
    read: EntityUid,
    write: EntityUid,
    pub(crate) authorizer: Authorizer,
}

#[derive(Debug)]
struct Types {
    user: EntityTypeName,
    group: EntityTypeName,
    app: EntityTypeName,
}

/// Everything one request turns into before Cedar evaluates it.
pub(crate) struct Prepared {
    pub request: Request,
    pub entities: Entities,
}

/// Local calendar values of the request time in the organisation's zone.
struct Clock {
    now: Timestamp,
    offset: Offset,
    /// Seconds since local midnight.
    seconds_of_day: i64,
    date: jiff::civil::Date,
    weekday: &'static str,
}

impl PolicyEngine {
    /// Parses the documents, validates them against the schema (strict
    /// mode) and prepares one policy slice per application. `tz` is the
    /// organisation's time zone: `context.local_time`, `local_date` and
    /// `weekday` are computed in it, daylight saving time included.
    ///
    /// The error lists every problem in every document, with the document id
    /// and Cedar's message.
    pub fn compile(docs: &[PolicyDoc<'_>], tz: TimeZone) -> Result<Self, PolicyError> {
        let compiled = compile_docs(docs)?;
        let schema = crate::schema::schema()?;
        let internal =
            |what: &str, e: &dyn std::fmt::Display| PolicyError::Schema(format!("{what}: {e}"));
        let type_name = |name: &str| EntityTypeName::from_str(name).map_err(|e| internal(name, &e));
        let types = Types {
            user: type_name("Tsuzuku::User")?,
            group: type_name("Tsuzuku::Group")?,
            app: type_name("Tsuzuku::App")?,
        };
        let action_type = type_name("Tsuzuku::Action")?;
        let action =
            |name: &str| EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(name));
        let action_entities: Vec<Entity> = schema
            .action_entities()
            .map_err(|e| internal("action entities", &e))?
            .iter()
            .cloned()
            .collect();
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
            types,
            action_entities,
            read: action("read"),
            write: action("write"),
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
                let slice = self.slice_for(&app.name);
                let response =
                    self.authorizer
                        .is_authorized(&prepared.request, slice, &prepared.entities);
                self.conclude(slice, &response, summary)
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

    /// The policies that can apply to `app`: the policies whose resource
    /// scope names it plus those naming no app.
    pub(crate) fn slice_for(&self, app: &str) -> &PolicySet {
        self.compiled
            .slices
            .get(app)
            .unwrap_or(&self.compiled.shared)
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
        let clock = local_clock(&self.tz, req.now_unix);
        let action = action_for_method(&req.method);
        let summary = summary(
            user,
            device,
            app,
            req,
            action,
            &self.tz,
            clock.as_ref().ok(),
        );
        let prepared = clock.and_then(|clock| self.build(user, device, app, req, action, &clock));
        (prepared, summary)
    }

    fn build(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
        action: &str,
        clock: &Clock,
    ) -> Result<Prepared, String> {
        let principal =
            EntityUid::from_type_name_and_id(self.types.user.clone(), EntityId::new(&user.id));
        let resource =
            EntityUid::from_type_name_and_id(self.types.app.clone(), EntityId::new(&app.name));
        let action = if action == "read" {
            self.read.clone()
        } else {
            self.write.clone()
        };

        let user_attrs = HashMap::from([
            (
                "username".to_owned(),
                RestrictedExpression::new_string(user.username.clone()),
            ),
            (
                "auth_method".to_owned(),
                RestrictedExpression::new_string(user.auth_method.clone()),
            ),
            ("mfa".to_owned(), RestrictedExpression::new_bool(user.mfa)),
            (
                "auth_age_secs".to_owned(),
                RestrictedExpression::new_long(age(req.now_unix, user.auth_time)),
            ),
        ]);
        let groups: HashSet<EntityUid> = user
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.types.group.clone(), EntityId::new(g)))
            .collect();
        let user_entity = Entity::new(principal.clone(), user_attrs, groups)
            .map_err(|e| format!("user {:?}: {e}", user.id))?;

        let app_attrs = HashMap::from([
            (
                "name".to_owned(),
                RestrictedExpression::new_string(app.name.clone()),
            ),
            (
                "data_class".to_owned(),
                RestrictedExpression::new_string(app.data_class.clone()),
            ),
            (
                "critical".to_owned(),
                RestrictedExpression::new_bool(app.critical),
            ),
            (
                "isolated".to_owned(),
                RestrictedExpression::new_bool(app.isolated),
            ),
        ]);
        let app_entity = Entity::new(resource.clone(), app_attrs, HashSet::new())
            .map_err(|e| format!("app {:?}: {e}", app.name))?;

        let entities = Entities::from_entities(
            [user_entity, app_entity]
                .into_iter()
                .chain(self.action_entities.iter().cloned()),
            None,
        )
        .map_err(|e| format!("entities: {e}"))?;

        let context = Context::from_pairs(context_pairs(req, device, clock)?)
            .map_err(|e| format!("request context: {e}"))?;
        let request = Request::new(principal, action, resource, context, None)
            .map_err(|e| format!("request: {e}"))?;
        Ok(Prepared { request, entities })
    }

    /// Turns Cedar's response into a decision, failing closed on forbid
    /// policies that could not be evaluated.
    pub(crate) fn conclude(
        &self,
        slice: &PolicySet,
        response: &Response,
        summary: serde_json::Value,
    ) -> Decision {
        let diagnostics = response.diagnostics();
        let mut errors: Vec<(usize, String)> = Vec::new();
        let mut failed_forbids = Vec::new();
        for error in diagnostics.errors() {
            let AuthorizationError::PolicyEvaluationError(e) = error;
            let id = e.policy_id();
            if slice
                .policy(id)
                .is_some_and(|p| p.effect() == Effect::Forbid)
            {
                failed_forbids.push(id.clone());
            }
            errors.push((self.rank_of(id), format!("{id}: {}", e.inner())));
        }
        errors.sort();
        let errors: Vec<String> = errors.into_iter().map(|(_, e)| e).collect();

        let mut reasons: Vec<PolicyId> = diagnostics.reason().cloned().collect();
        reasons.sort_by_key(|id| self.rank_of(id));
        failed_forbids.sort_by_key(|id| self.rank_of(id));

        let (allowed, determining, reason) = match response.decision() {
            cedar_policy::Decision::Allow if failed_forbids.is_empty() => {
                let reason = format!("allowed by {}", name_policies("policy", &reasons));
                (true, reasons, reason)
            }
            cedar_policy::Decision::Deny if !reasons.is_empty() => {
                let reason = format!("denied by forbid {}", name_policies("policy", &reasons));
                (false, reasons, reason)
            }
            _ if !failed_forbids.is_empty() => {
                let reason = format!(
                    "denied: forbid {} could not be evaluated (fail closed)",
                    name_policies("policy", &failed_forbids)
                );
                (false, failed_forbids, reason)
            }
            _ => (
                false,
                Vec::new(),
                "denied: no policy permits (default deny)".to_owned(),
            ),
        };
        Decision {
            allowed,
            determining: determining.iter().map(ToString::to_string).collect(),
            errors,
            reason,
            context_summary: summary,
        }
    }

    pub(crate) fn rank_of(&self, id: &PolicyId) -> usize {
        self.rank.get(id).copied().unwrap_or(usize::MAX)
    }
}

/// "policy a" or "policies a, b".
fn name_policies(singular: &str, ids: &[PolicyId]) -> String {
    let list = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() == 1 {
        format!("{singular} {list}")
    } else {
        format!("policies {list}")
    }
}

/// Seconds from `then` to `now`, never negative (clock skew reads as 0).
fn age(now: i64, then: i64) -> i64 {
    now.saturating_sub(then).max(0)
}

fn local_clock(tz: &TimeZone, now_unix: i64) -> Result<Clock, String> {
    let now = Timestamp::from_second(now_unix)
        .map_err(|e| format!("request time {now_unix} is out of range: {e}"))?;
    let offset = tz.to_offset(now);
    let local = offset.to_datetime(now);
    let year = local.year();
    if !(1..=9999).contains(&year) {
        return Err(format!(
            "request time {now_unix} is outside the years 1 to 9999"
        ));
    }
    let time = local.time();
    Ok(Clock {
        now,
        offset,
        seconds_of_day: i64::from(time.hour()) * 3600
            + i64::from(time.minute()) * 60
            + i64::from(time.second()),
        date: local.date(),
        weekday: weekday_name(local.weekday()),
    })
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

fn date_text(date: jiff::civil::Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

fn time_of_day_text(seconds: i64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `+09:00`, `-04:00`, `+05:45`.
fn offset_text(offset: Offset) -> String {
    let seconds = offset.seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Canonical text of the client address: IPv4-mapped IPv6 addresses
/// (`::ffff:10.0.0.1`) become plain IPv4 so that IPv4 ranges match them.
fn ip_text(ip: std::net::IpAddr) -> String {
    ip.to_canonical().to_string()
}

fn context_pairs(
    req: &RequestFacts,
    device: Option<&DeviceFacts>,
    clock: &Clock,
) -> Result<Vec<(String, RestrictedExpression)>, String> {
    let mut pairs = vec![
        (
            "source_ip".to_owned(),
            RestrictedExpression::new_ip(ip_text(req.source_ip)),
        ),
        (
            "now".to_owned(),
            RestrictedExpression::new_datetime(clock.now.to_string()),
        ),
        (
            "local_time".to_owned(),
            RestrictedExpression::new_duration(format!("{}s", clock.seconds_of_day)),
        ),
        (
            "local_date".to_owned(),
            RestrictedExpression::new_datetime(date_text(clock.date)),
        ),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_string(clock.weekday.to_owned()),
        ),
        (
            "method".to_owned(),
            RestrictedExpression::new_string(req.method.to_ascii_uppercase()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(req.path.clone()),
        ),
    ];
    if let Some(device) = device {
        let record = RestrictedExpression::new_record([
            (
                "enrolled".to_owned(),
                RestrictedExpression::new_bool(device.enrolled),
            ),
            (
                "company_issued".to_owned(),
                RestrictedExpression::new_bool(device.company_issued),
            ),
            (
                "os".to_owned(),
                RestrictedExpression::new_string(device.os.clone()),
            ),
            (
                "os_version".to_owned(),
                RestrictedExpression::new_string(device.os_version.clone()),
            ),
            (
                "disk_encrypted".to_owned(),
                RestrictedExpression::new_bool(device.disk_encrypted),
            ),
            (
                "antivirus_running".to_owned(),
                RestrictedExpression::new_bool(device.antivirus_running),
            ),
            (
                "antivirus_version".to_owned(),
                RestrictedExpression::new_long(device.antivirus_version),
            ),
            (
                "posture_age_secs".to_owned(),
                RestrictedExpression::new_long(age(req.now_unix, device.reported_at)),
            ),
        ])
        .map_err(|e| format!("device record: {e}"))?;
        pairs.push(("device".to_owned(), record));
    }
    Ok(pairs)
}

/// The inputs as the policies see them, for the audit event.
fn summary(
    user: &UserFacts,
    device: Option<&DeviceFacts>,
    app: &AppFacts,
    req: &RequestFacts,
    action: &str,
    tz: &TimeZone,
    clock: Option<&Clock>,
) -> serde_json::Value {
    let device = device.map(|d| {
        json!({
            "enrolled": d.enrolled,
            "company_issued": d.company_issued,
            "os": d.os,
            "os_version": d.os_version,
            "disk_encrypted": d.disk_encrypted,
            "antivirus_running": d.antivirus_running,
            "antivirus_version": d.antivirus_version,
            "posture_age_secs": age(req.now_unix, d.reported_at),
        })
    });
    json!({
        "principal": {
            "id": user.id,
            "username": user.username,
            "groups": user.groups,
            "auth_method": user.auth_method,
            "mfa": user.mfa,
            "auth_age_secs": age(req.now_unix, user.auth_time),
        },
        "action": action,
        "resource": {
            "name": app.name,
            "data_class": app.data_class,
            "critical": app.critical,
            "isolated": app.isolated,
        },
        "context": {
            "source_ip": ip_text(req.source_ip),
            "now_unix": req.now_unix,
            "now": clock.map(|c| c.now.to_string()),
            "time_zone": tz.iana_name().unwrap_or("(fixed offset)"),
            "utc_offset": clock.map(|c| offset_text(c.offset)),
            "local_date": clock.map(|c| date_text(c.date)),
            "local_time": clock.map(|c| time_of_day_text(c.seconds_of_day)),
            "weekday": clock.map(|c| c.weekday),
            "method": req.method.to_ascii_uppercase(),
            "path": req.path,
            "device": device,
        },
    })
}

#[cfg(test)]
pub(crate) fn summary_for_profile(c: &crate::tests::Case) -> serde_json::Value {
    let tz = TimeZone::get("Asia/Tokyo").unwrap_or(TimeZone::UTC);
    let clock = local_clock(&tz, c.req.now_unix).ok();
    summary(
        &c.user,
        c.device.as_ref(),
        &c.app,
        &c.req,
        "read",
        &tz,
        clock.as_ref(),
    )
}
