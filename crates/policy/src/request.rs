//! Turning the facts about one request into Cedar values: the principal and
//! app entities, the request context with local time in the organisation's
//! zone, and the audit summary of the inputs.
//!
//! Extension values (`ip(..)`, `datetime(..)`, `duration(..)`) are built
//! from function names parsed once per engine: cedar-policy's
//! `RestrictedExpression::new_ip` and friends run Cedar's parser on the
//! function name for every value, which costs more than a whole decision
//! should (about 15 µs each).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use cedar_policy_core::ast::{Name, RestrictedExpr};
use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::{Offset, TimeZone};
use serde_json::json;

use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts};

/// Local calendar values of the request time in the organisation's zone.
pub(crate) struct Clock {
    pub now: Timestamp,
    pub offset: Offset,
    /// Seconds since local midnight.
    pub seconds_of_day: i64,
    pub date: Date,
    pub weekday: &'static str,
}

pub(crate) fn local_clock(tz: &TimeZone, now_unix: i64) -> Result<Clock, String> {
    let now = Timestamp::from_second(now_unix)
        .map_err(|e| format!("request time {now_unix} is out of range: {e}"))?;
    let offset = tz.to_offset(now);
    let local = offset.to_datetime(now);
    if !(1..=9999).contains(&local.year()) {
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

fn date_text(date: Date) -> String {
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

/// Canonical client address: IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`)
/// become plain IPv4 so that IPv4 ranges match them.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Seconds from `then` to `now`, never negative (clock skew reads as 0).
pub(crate) fn age(now: i64, then: i64) -> i64 {
    now.saturating_sub(then).max(0)
}

/// Entity type and extension function names, parsed once per engine.
#[derive(Debug)]
pub(crate) struct Types {
    pub user: EntityTypeName,
    pub group: EntityTypeName,
    pub app: EntityTypeName,
    pub ip: Name,
    pub datetime: Name,
    pub duration: Name,
}

impl Types {
    pub(crate) fn new() -> Result<Self, String> {
        let entity_type = |name: &str| {
            name.parse::<EntityTypeName>()
                .map_err(|e| format!("entity type {name}: {e}"))
        };
        let function = |name: &str| {
            Name::parse_unqualified_name(name).map_err(|e| format!("function {name}: {e}"))
        };
        Ok(Types {
            user: entity_type("Tsuzuku::User")?,
            group: entity_type("Tsuzuku::Group")?,
            app: entity_type("Tsuzuku::App")?,
            ip: function("ip")?,
            datetime: function("datetime")?,
            duration: function("duration")?,
        })
    }

    /// `function("arg")`, the same expression as
    /// `RestrictedExpression::new_ip(arg)` (for `ip`) and friends.
    pub(crate) fn call(function: &Name, arg: String) -> RestrictedExpression {
        RestrictedExpression::from(RestrictedExpr::call_extension_fn(
            function.clone(),
            [RestrictedExpr::val(arg)],
        ))
    }
}

pub(crate) fn user_entity(
    types: &Types,
    user: &UserFacts,
    now_unix: i64,
) -> Result<(EntityUid, Entity), String> {
    let uid = EntityUid::from_type_name_and_id(types.user.clone(), EntityId::new(&user.id));
    let attrs = HashMap::from([
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
            RestrictedExpression::new_long(age(now_unix, user.auth_time)),
        ),
    ]);
    let groups: HashSet<EntityUid> = user
        .groups
        .iter()
        .map(|g| EntityUid::from_type_name_and_id(types.group.clone(), EntityId::new(g)))
        .collect();
    let entity =
        Entity::new(uid.clone(), attrs, groups).map_err(|e| format!("user {:?}: {e}", user.id))?;
    Ok((uid, entity))
}

pub(crate) fn app_entity(types: &Types, app: &AppFacts) -> Result<(EntityUid, Entity), String> {
    let uid = EntityUid::from_type_name_and_id(types.app.clone(), EntityId::new(&app.name));
    let attrs = HashMap::from([
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
    let entity = Entity::new(uid.clone(), attrs, HashSet::new())
        .map_err(|e| format!("app {:?}: {e}", app.name))?;
    Ok((uid, entity))
}

/// The request context (see `RequestContext` in the schema).
pub(crate) fn context_pairs(
    types: &Types,
    req: &RequestFacts,
    device: Option<&DeviceFacts>,
    clock: &Clock,
) -> Result<Vec<(String, RestrictedExpression)>, String> {
    let mut pairs = Vec::with_capacity(8);
    pairs.extend([
        (
            "source_ip".to_owned(),
            Types::call(&types.ip, canonical_ip(req.source_ip).to_string()),
        ),
        (
            "now".to_owned(),
            Types::call(&types.datetime, clock.now.to_string()),
        ),
        (
            "local_time".to_owned(),
            Types::call(&types.duration, format!("{}s", clock.seconds_of_day)),
        ),
        (
            "local_date".to_owned(),
            Types::call(&types.datetime, date_text(clock.date)),
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
    ]);
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
pub(crate) fn summary(
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
            "source_ip": canonical_ip(req.source_ip).to_string(),
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
