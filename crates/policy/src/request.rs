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

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
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
    pub ip: Arc<str>,
    /// The HTTP method in upper case.
    pub method: Cow<'static, str>,
}

/// A client address with its text and Cedar `ipaddr` value.
struct Source {
    addr: IpAddr,
    text: Arc<str>,
    value: Option<Value>,
}

/// The methods of RFC 9110 and PATCH, upper case: the method of almost every
/// request, without allocating.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// `method` in upper case.
fn upper_method(method: &str) -> Cow<'static, str> {
    match KNOWN_METHODS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(method))
    {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(method.to_ascii_uppercase()),
    }
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
                Some(source) if source.addr == addr => Arc::clone(&source.text),
                _ => {
                    let text: Arc<str> = Arc::from(addr.to_string());
                    *cache = Some(Source {
                        addr,
                        text: Arc::clone(&text),
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
            method: upper_method(&req.method),
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

/// An entity of a request with its uid, and the uid as a value.
pub(crate) struct Built1 {
    pub uid: Arc<EntityUID>,
    pub value: Value,
    pub entity: Arc<CoreEntity>,
}

impl Built1 {
    fn new(uid: EntityUID, entity: CoreEntity) -> Arc<Built1> {
        let uid = Arc::new(uid);
        Arc::new(Built1 {
            value: Value::from(Arc::clone(&uid)),
            uid,
            entity: Arc::new(entity),
        })
    }
}

/// A few entries, most recently used first, looked up by scanning: per thread, for the
/// entities of the users and apps of recent requests. Building an entity (its attribute map,
/// its parents) costs more than the rest of a request's Cedar values.
pub(crate) struct Recent<K> {
    entries: Vec<(K, Arc<Built1>)>,
    max: usize,
}

impl<K> Recent<K> {
    const fn new(max: usize) -> Self {
        Recent {
            entries: Vec::new(),
            max,
        }
    }

    fn find(&mut self, hit: impl Fn(&K) -> bool) -> Option<Arc<Built1>> {
        let i = self.entries.iter().position(|(k, _)| hit(k))?;
        if i > 0 {
            // Most recent first, so that the requests of one user stay at the front.
            let entry = self.entries.remove(i);
            self.entries.insert(0, entry);
        }
        self.entries.first().map(|(_, b)| Arc::clone(b))
    }

    fn put(&mut self, key: K, built: Arc<Built1>) {
        self.entries.truncate(self.max.saturating_sub(1));
        self.entries.insert(0, (key, built));
    }
}

thread_local! {
    /// Users' principal entities, by builder, facts and second.
    static USERS: RefCell<Recent<(usize, (UserFacts, i64))>> = const { RefCell::new(Recent::new(32)) };
    /// Apps' resource entities, by builder and facts.
    static APPS: RefCell<Recent<(usize, AppFacts)>> = const { RefCell::new(Recent::new(16)) };
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
    action: Arc<EntityUID>,
    user: Arc<Built1>,
    app: Arc<Built1>,
    context: Arc<BTreeMap<SmolStr, Value>>,
    context_value: Value,
}

/// Everything derived from the instant and the zone offset: the Cedar time
/// values and their texts for the audit summary.
#[derive(Debug)]
pub(crate) struct Moment {
    key: (i64, i32),
    now: Value,
    local_time: Value,
    pub texts: MomentTexts,
}

/// The texts of a [`Moment`], as the audit summary shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MomentTexts {
    pub now: String,
    pub offset: String,
    pub date: String,
    pub time: String,
    pub weekday: &'static str,
}

thread_local! {
    /// The moment of the last request this thread built, reused while the
    /// second lasts.
    static MOMENT: RefCell<Option<Arc<Moment>>> = const { RefCell::new(None) };
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
    pub(crate) fn moment(&self, clock: &Clock) -> Result<Arc<Moment>, String> {
        let key = (clock.now.as_second(), clock.offset.seconds());
        MOMENT.with(|cache| {
            if let Some(moment) = cache.borrow().as_ref()
                && moment.key == key
            {
                return Ok(Arc::clone(moment));
            }
            let now_text = clock.now.to_string();
            let moment = Arc::new(Moment {
                key,
                now: Self::extension(self.datetime, &now_text)?,
                local_time: Self::extension(self.duration, &format!("{}s", clock.seconds_of_day))?,
                texts: MomentTexts {
                    now: now_text,
                    offset: offset_text(clock.offset),
                    date: date_text(clock.date),
                    time: time_of_day_text(clock.seconds_of_day),
                    weekday: clock.weekday,
                },
            });
            *cache.borrow_mut() = Some(Arc::clone(&moment));
            Ok(moment)
        })
    }

    /// The principal entity of `user` at `now_unix` (its `auth_age_secs` changes every
    /// second), from this thread's cache when it was built before.
    fn user_entity(&self, user: &UserFacts, now_unix: i64) -> Arc<Built1> {
        let key = self.key();
        USERS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let hit =
                |(k, (u, t)): &(usize, (UserFacts, i64))| *k == key && *t == now_unix && u == user;
            if let Some(built) = cache.find(hit) {
                return built;
            }
            let uid =
                EntityUID::from_components(self.user.clone(), Eid::new(user.id.as_str()), None);
            let groups: HashSet<EntityUID> = user
                .groups
                .iter()
                .map(|g| EntityUID::from_components(self.group.clone(), Eid::new(g.as_str()), None))
                .collect();
            let entity = CoreEntity::new_with_attr_partial_value(
                uid.clone(),
                [
                    // In key order, which saves the map's sort some moves.
                    attr("auth_age_secs", age(now_unix, user.auth_time)),
                    attr("auth_method", user.auth_method.as_str()),
                    attr("mfa", user.mfa),
                    attr("username", user.username.as_str()),
                ],
                HashSet::new(),
                groups,
                [],
            );
            let built = Built1::new(uid, entity);
            cache.put((key, (user.clone(), now_unix)), Arc::clone(&built));
            built
        })
    }

    /// The resource entity of `app`, from this thread's cache when it was built before.
    fn app_entity(&self, app: &AppFacts) -> Arc<Built1> {
        let key = self.key();
        APPS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(built) = cache.find(|(k, a)| *k == key && a == app) {
                return built;
            }
            let uid =
                EntityUID::from_components(self.app.clone(), Eid::new(app.name.as_str()), None);
            let entity = CoreEntity::new_with_attr_partial_value(
                uid.clone(),
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
            let built = Built1::new(uid, entity);
            cache.put((key, app.clone()), Arc::clone(&built));
            built
        })
    }

    /// Tells this builder's cached entities from another's (entity types are the schema's,
    /// the same for every builder; the key only keeps the caches plainly per engine).
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
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
        let user_entity = self.user_entity(user, req.now_unix);
        let app_entity = self.app_entity(app);
        let action = if derived.read() {
            &self.read
        } else {
            &self.write
        };

        let mut context: BTreeMap<SmolStr, Value> = BTreeMap::new();
        context.insert(SmolStr::new_static("source_ip"), self.source_ip(derived)?);
        context.insert(SmolStr::new_static("now"), moment.now.clone());
        context.insert(SmolStr::new_static("local_time"), moment.local_time.clone());
        context.insert(
            SmolStr::new_static("local_date"),
            Value::from(moment.texts.date.as_str()),
        );
        context.insert(
            SmolStr::new_static("weekday"),
            Value::from(SmolStr::new_static(moment.texts.weekday)),
        );
        context.insert(
            SmolStr::new_static("method"),
            Value::from(derived.method.as_ref()),
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
            action: Arc::clone(action),
            user: user_entity,
            app: app_entity,
            context_value: Value::record_arc(Arc::clone(&context), None),
            context,
        })
    }

    /// The request as the fast evaluation path sees it.
    pub(crate) fn env<'a>(&'a self, parts: &'a Parts) -> Env<'a> {
        Env {
            principal: &parts.user.value,
            action: if parts.read {
                &self.read_value
            } else {
                &self.write_value
            },
            resource: &parts.app.value,
            context: &parts.context_value,
            request_entities: [&parts.user.entity, &parts.app.entity],
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
                [
                    Arc::clone(&parts.user.entity),
                    Arc::clone(&parts.app.entity),
                ],
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
            known(&parts.user.uid),
            known(&parts.action),
            known(&parts.app.uid),
            Some(CoreContext::Value(Arc::clone(&parts.context))),
        );
        Ok(Built { request, entities })
    }
}

fn attr(name: &'static str, value: impl Into<Value>) -> (SmolStr, PartialValue) {
    (SmolStr::new_static(name), PartialValue::from(value.into()))
}
