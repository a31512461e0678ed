//! Turning the facts about one request into Cedar values: the principal and
//! app entities, the request context with local time in the organisation's
//! zone, and the audit summary of the inputs.
//!
//! Cedar's public constructors are too slow for a per-request path:
//! `RestrictedExpression::new_ip` and friends run Cedar's parser on the
//! function name for every value (about 15 µs each), `Context::from_pairs`
//! and `Entity::new` evaluate expressions, and `Entities::from_entities`
//! recomputes the transitive closure. So the request, its context and its
//! entities are built here from `cedar-policy-core` values directly (the
//! crate `cedar-policy` wraps, at the exact version it pins), with names and
//! extension functions looked up once per engine. The time values, whose
//! construction runs Cedar's date parser, are kept per thread for the
//! current second. Cedar's request and entity store are only put together
//! when Cedar's evaluator is needed (see `eval`). A test checks that the
//! result equals what the public constructors build.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::pst::SmolStr;
use cedar_policy::{EntityTypeName, Schema};
use cedar_policy_core::ast::{
    Context as CoreContext, Eid, Entity as CoreEntity, EntityType, EntityUID, EntityUIDEntry,
    ExtensionFunction, Name, PartialValue, Request as CoreRequest, Value,
};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::{Offset, TimeZone};

use crate::eval::Env;
use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts, action_for_method};

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

/// What both the Cedar values and the audit summary of a request use,
/// computed once.
pub(crate) struct Derived {
    /// The Cedar action: "read" or "write".
    pub action: &'static str,
    /// The canonical client address, and its text.
    pub addr: IpAddr,
    pub ip: String,
    /// The HTTP method in upper case.
    pub method: String,
}

/// A client address with its text and Cedar `ipaddr` value.
struct Source {
    addr: IpAddr,
    text: String,
    value: Option<Value>,
}

thread_local! {
    /// The client address of the last request this thread built: the
    /// requests of one connection all come from one address, and formatting
    /// it and parsing it again into a Cedar value cost more than the rest of
    /// the context.
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
}

impl Derived {
    pub(crate) fn new(req: &RequestFacts) -> Self {
        let addr = canonical_ip(req.source_ip);
        let ip = SOURCE.with(|cache| {
            let mut cache = cache.borrow_mut();
            match cache.as_ref() {
                Some(source) if source.addr == addr => source.text.clone(),
                _ => {
                    let text = addr.to_string();
                    *cache = Some(Source {
                        addr,
                        text: text.clone(),
                        value: None,
                    });
                    text
                }
            }
        });
        Derived {
            action: action_for_method(&req.method),
            addr,
            ip,
            method: req.method.to_ascii_uppercase(),
        }
    }

    pub(crate) fn read(&self) -> bool {
        self.action == "read"
    }
}

/// Seconds from `then` to `now`, never negative (clock skew reads as 0).
pub(crate) fn age(now: i64, then: i64) -> i64 {
    now.saturating_sub(then).max(0)
}

/// Names and entities every request needs, prepared once per engine.
#[derive(Debug)]
pub(crate) struct Builder {
    user: EntityType,
    group: EntityType,
    app: EntityType,
    ip: &'static ExtensionFunction,
    datetime: &'static ExtensionFunction,
    duration: &'static ExtensionFunction,
    read: Arc<EntityUID>,
    write: Arc<EntityUID>,
    read_value: Value,
    write_value: Value,
    /// `read` and `write`, both in `access`, from the schema: every
    /// request's entities start from these.
    actions: CoreEntities,
    /// The same entities, for the fast evaluation path.
    action_list: Vec<CoreEntity>,
}

/// A Cedar request ready to evaluate.
pub(crate) struct Built {
    pub request: CoreRequest,
    pub entities: CoreEntities,
}

/// The Cedar values of one request, before they are put together into
/// Cedar's request and entity store (which only the fallback to Cedar's
/// evaluator needs, see `eval`).
pub(crate) struct Parts {
    /// The action is `read` (else `write`).
    read: bool,
    principal: Arc<EntityUID>,
    principal_value: Value,
    action: Arc<EntityUID>,
    resource: Arc<EntityUID>,
    resource_value: Value,
    user: CoreEntity,
    app: CoreEntity,
    context: Arc<BTreeMap<SmolStr, Value>>,
    context_value: Value,
}

/// Everything derived from the instant and the zone offset: the Cedar time
/// values and their texts for the audit summary.
pub(crate) struct Moment {
    key: (i64, i32),
    now: Value,
    local_time: Value,
    pub now_text: String,
    pub offset_text: String,
    pub date_text: String,
    pub time_text: String,
    pub weekday: &'static str,
}

thread_local! {
    /// The moment of the last request this thread built, reused while the
    /// second lasts.
    static MOMENT: RefCell<Option<Rc<Moment>>> = const { RefCell::new(None) };
}

impl Builder {
    pub(crate) fn new(schema: &Schema) -> Result<Self, String> {
        let entity_type = |name: &str| {
            EntityTypeName::from_str(name)
                .map(|t| AsRef::<EntityType>::as_ref(&t).clone())
                .map_err(|e| format!("entity type {name}: {e}"))
        };
        let function = |name: &str| {
            Name::parse_unqualified_name(name)
                .map_err(|e| e.to_string())
                .and_then(|name| {
                    Extensions::all_available()
                        .func(&name)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| format!("function {name}: {e}"))
        };
        let action_type = entity_type("Tsuzuku::Action")?;
        let action = |id: &str| {
            Arc::new(EntityUID::from_components(
                action_type.clone(),
                Eid::new(id),
                None,
            ))
        };
        let actions = schema
            .action_entities()
            .map_err(|e| format!("action entities: {e}"))?;
        let actions = AsRef::<CoreEntities>::as_ref(&actions).clone();
        let read = action("read");
        let write = action("write");
        Ok(Builder {
            user: entity_type("Tsuzuku::User")?,
            group: entity_type("Tsuzuku::Group")?,
            app: entity_type("Tsuzuku::App")?,
            ip: function("ip")?,
            datetime: function("datetime")?,
            duration: function("duration")?,
            read_value: Value::from(Arc::clone(&read)),
            write_value: Value::from(Arc::clone(&write)),
            read,
            write,
            action_list: actions.iter().cloned().collect(),
            actions,
        })
    }

    /// Calls a one-argument extension constructor, e.g. `ip("10.0.0.1")`,
    /// as Cedar's evaluator does.
    fn extension(function: &ExtensionFunction, arg: &str) -> Result<Value, String> {
        match function.call(&[Value::from(arg)]) {
            Ok(PartialValue::Value(value)) => Ok(value),
            Ok(PartialValue::Residual(residual)) => {
                Err(format!("{} gave the unknown {residual}", function.name()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The Cedar `ipaddr` of the request's client, from this thread's cache
    /// when the last request came from the same address.
    fn source_ip(&self, derived: &Derived) -> Result<Value, String> {
        SOURCE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(source) = cache.as_mut()
                && source.addr == derived.addr
            {
                if let Some(value) = &source.value {
                    return Ok(value.clone());
                }
                let value = Self::extension(self.ip, &source.text)?;
                source.value = Some(value.clone());
                return Ok(value);
            }
            Self::extension(self.ip, &derived.ip)
        })
    }

    /// The time values of `clock`, from this thread's cache when the last
    /// request was in the same second and zone offset.
    pub(crate) fn moment(&self, clock: &Clock) -> Result<Rc<Moment>, String> {
        let key = (clock.now.as_second(), clock.offset.seconds());
        MOMENT.with(|cache| {
            if let Some(moment) = cache.borrow().as_ref()
                && moment.key == key
            {
                return Ok(Rc::clone(moment));
            }
            let now_text = clock.now.to_string();
            let moment = Rc::new(Moment {
                key,
                now: Self::extension(self.datetime, &now_text)?,
                local_time: Self::extension(self.duration, &format!("{}s", clock.seconds_of_day))?,
                now_text,
                offset_text: offset_text(clock.offset),
                date_text: date_text(clock.date),
                time_text: time_of_day_text(clock.seconds_of_day),
                weekday: clock.weekday,
            });
            *cache.borrow_mut() = Some(Rc::clone(&moment));
            Ok(moment)
        })
    }

    /// The Cedar values of one request.
    pub(crate) fn parts(
        &self,
        user: &UserFacts,
        device: Option<&DeviceFacts>,
        app: &AppFacts,
        req: &RequestFacts,
        moment: &Moment,
        derived: &Derived,
    ) -> Result<Parts, String> {
        let principal = Arc::new(EntityUID::from_components(
            self.user.clone(),
            Eid::new(user.id.as_str()),
            None,
        ));
        let resource = Arc::new(EntityUID::from_components(
            self.app.clone(),
            Eid::new(app.name.as_str()),
            None,
        ));
        let action = if derived.read() {
            &self.read
        } else {
            &self.write
        };

        let groups: HashSet<EntityUID> = user
            .groups
            .iter()
            .map(|g| EntityUID::from_components(self.group.clone(), Eid::new(g.as_str()), None))
            .collect();
        let user_entity = CoreEntity::new_with_attr_partial_value(
            EntityUID::clone(&principal),
            [
                // In key order, which saves the map's sort some moves.
                attr("auth_age_secs", age(req.now_unix, user.auth_time)),
                attr("auth_method", user.auth_method.as_str()),
                attr("mfa", user.mfa),
                attr("username", user.username.as_str()),
            ],
            HashSet::new(),
            groups,
            [],
        );
        let app_entity = CoreEntity::new_with_attr_partial_value(
            EntityUID::clone(&resource),
            [
                attr("critical", app.critical),
                attr("data_class", app.data_class.as_str()),
                attr("isolated", app.isolated),
                attr("name", app.name.as_str()),
            ],
            HashSet::new(),
            HashSet::new(),
            [],
        );

        let mut context: BTreeMap<SmolStr, Value> = BTreeMap::new();
        context.insert(SmolStr::new_static("source_ip"), self.source_ip(derived)?);
        context.insert(SmolStr::new_static("now"), moment.now.clone());
        context.insert(SmolStr::new_static("local_time"), moment.local_time.clone());
        context.insert(
            SmolStr::new_static("local_date"),
            Value::from(moment.date_text.as_str()),
        );
        context.insert(
            SmolStr::new_static("weekday"),
            Value::from(SmolStr::new_static(moment.weekday)),
        );
        context.insert(
            SmolStr::new_static("method"),
            Value::from(derived.method.as_str()),
        );
        context.insert(SmolStr::new_static("path"), Value::from(req.path.as_str()));
        if let Some(device) = device {
            let posture: BTreeMap<SmolStr, Value> = [
                // In key order.
                ("antivirus_running", Value::from(device.antivirus_running)),
                ("antivirus_version", Value::from(device.antivirus_version)),
                ("company_issued", Value::from(device.company_issued)),
                ("disk_encrypted", Value::from(device.disk_encrypted)),
                ("enrolled", Value::from(device.enrolled)),
                ("os", Value::from(device.os.as_str())),
                ("os_version", Value::from(device.os_version.as_str())),
                (
                    "posture_age_secs",
                    Value::from(age(req.now_unix, device.reported_at)),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (SmolStr::new_static(k), v))
            .collect();
            context.insert(
                SmolStr::new_static("device"),
                Value::record_arc(Arc::new(posture), None),
            );
        }
        let context = Arc::new(context);

        Ok(Parts {
            read: derived.read(),
            principal_value: Value::from(Arc::clone(&principal)),
            principal,
            action: Arc::clone(action),
            resource_value: Value::from(Arc::clone(&resource)),
            resource,
            user: user_entity,
            app: app_entity,
            context_value: Value::record_arc(Arc::clone(&context), None),
            context,
        })
    }

    /// The request as the fast evaluation path sees it.
    pub(crate) fn env<'a>(&'a self, parts: &'a Parts) -> Env<'a> {
        Env {
            principal: &parts.principal_value,
            action: if parts.read {
                &self.read_value
            } else {
                &self.write_value
            },
            resource: &parts.resource_value,
            context: &parts.context_value,
            request_entities: [&parts.user, &parts.app],
            shared_entities: &self.action_list,
        }
    }

    /// Cedar's request and entity store for `parts`.
    pub(crate) fn cedar(&self, parts: &Parts) -> Result<Built, String> {
        // The hierarchy is already transitively closed: users are in
        // groups, groups and apps have no parents, and the schema's action
        // entities come closed.
        let entities = self
            .actions
            .clone()
            .add_entities(
                [Arc::new(parts.user.clone()), Arc::new(parts.app.clone())],
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| format!("entities: {e}"))?;
        let known = |euid: &Arc<EntityUID>| EntityUIDEntry::Known {
            euid: Arc::clone(euid),
            loc: None,
        };
        let request = CoreRequest::new_unchecked(
            known(&parts.principal),
            known(&parts.action),
            known(&parts.resource),
            Some(CoreContext::Value(Arc::clone(&parts.context))),
        );
        Ok(Built { request, entities })
    }
}

fn attr(name: &'static str, value: impl Into<Value>) -> (SmolStr, PartialValue) {
    (SmolStr::new_static(name), PartialValue::from(value.into()))
}

/// A JSON object with the given keys, in order; values are inserted in
/// place (building an array of pairs first costs copies).
macro_rules! object {
    ($($key:literal => $value:expr),* $(,)?) => {{
        let mut map = serde_json::Map::with_capacity([$($key),*].len());
        $(map.insert($key.to_owned(), $value);)*
        serde_json::Value::Object(map)
    }};
}

/// The inputs as the policies see them, for the audit event. `moment` is
/// absent when the request time could not be used.
pub(crate) fn summary(
    user: &UserFacts,
    device: Option<&DeviceFacts>,
    app: &AppFacts,
    req: &RequestFacts,
    tz: &TimeZone,
    moment: Option<&Moment>,
    derived: &Derived,
) -> serde_json::Value {
    use serde_json::Value as J;
    let text = |s: &str| J::String(s.to_owned());
    let device = match device {
        None => J::Null,
        Some(d) => object! {
            "enrolled" => J::Bool(d.enrolled),
            "company_issued" => J::Bool(d.company_issued),
            "os" => text(&d.os),
            "os_version" => text(&d.os_version),
            "disk_encrypted" => J::Bool(d.disk_encrypted),
            "antivirus_running" => J::Bool(d.antivirus_running),
            "antivirus_version" => J::from(d.antivirus_version),
            "posture_age_secs" => J::from(age(req.now_unix, d.reported_at)),
        },
    };
    let moment_text = |f: fn(&Moment) -> &str| moment.map_or(J::Null, |m| text(f(m)));
    object! {
        "principal" => object! {
            "id" => text(&user.id),
            "username" => text(&user.username),
            "groups" => J::Array(user.groups.iter().map(|g| text(g)).collect()),
            "auth_method" => text(&user.auth_method),
            "mfa" => J::Bool(user.mfa),
            "auth_age_secs" => J::from(age(req.now_unix, user.auth_time)),
        },
        "action" => text(derived.action),
        "resource" => object! {
            "name" => text(&app.name),
            "data_class" => text(&app.data_class),
            "critical" => J::Bool(app.critical),
            "isolated" => J::Bool(app.isolated),
        },
        "context" => object! {
            "source_ip" => text(&derived.ip),
            "now_unix" => J::from(req.now_unix),
            "now" => moment_text(|m| &m.now_text),
            "time_zone" => text(tz.iana_name().unwrap_or("(fixed offset)")),
            "utc_offset" => moment_text(|m| &m.offset_text),
            "local_date" => moment_text(|m| &m.date_text),
            "local_time" => moment_text(|m| &m.time_text),
            "weekday" => moment_text(|m| m.weekday),
            "method" => text(&derived.method),
            "path" => text(&req.path),
            "device" => device,
        },
    }
}
