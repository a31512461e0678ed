//! The inputs of a decision as the policies saw them, for the audit event.
//!
//! A decision keeps only what it derived from the facts ([`Inputs`]: the
//! action, the client address as the policies compare it, the local time in
//! the organisation's zone, ...); [`Inputs::summary`] puts that together
//! with the facts into a [`Summary`], a borrowed view that serialises to
//! JSON. Nothing is copied or built per request beyond the view itself: the
//! gateway serialises it once, straight into the audit event's text.
//!
//! Every struct here declares its fields in key order, so that serialised
//! they are already in the audit chain's canonical (sorted) order.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use crate::facts::{AppFacts, DeviceFacts, RequestFacts, UserFacts};
use crate::request::{Derived, Moment, age};

/// What a decision derived from its facts, for [`Inputs::summary`].
#[derive(Debug, Clone)]
pub struct Inputs {
    action: &'static str,
    source_ip: Arc<str>,
    method: Cow<'static, str>,
    time_zone: Arc<str>,
    /// Absent when the request time could not be used.
    moment: Option<Arc<Moment>>,
}

impl PartialEq for Inputs {
    fn eq(&self, other: &Self) -> bool {
        self.action == other.action
            && self.source_ip == other.source_ip
            && self.method == other.method
            && self.time_zone == other.time_zone
            && self.moment.as_ref().map(|m| &m.texts) == other.moment.as_ref().map(|m| &m.texts)
    }
}

impl Inputs {
    pub(crate) fn new(derived: &Derived, moment: Option<Arc<Moment>>, time_zone: Arc<str>) -> Self {
        Inputs {
            action: derived.action,
            source_ip: Arc::clone(&derived.ip),
            method: derived.method.clone(),
            time_zone,
            moment,
        }
    }

    /// The inputs as the policies saw them: these derived values with the
    /// facts the decision was made from (pass the same facts).
    pub fn summary<'a>(
        &'a self,
        user: &'a UserFacts,
        device: Option<&'a DeviceFacts>,
        app: &'a AppFacts,
        req: &'a RequestFacts,
    ) -> Summary<'a> {
        let texts = self.moment.as_ref().map(|m| &m.texts);
        Summary {
            action: self.action,
            context: ContextSummary {
                device: device.map(|d| DeviceSummary {
                    antivirus_running: d.antivirus_running,
                    antivirus_version: d.antivirus_version,
                    company_issued: d.company_issued,
                    disk_encrypted: d.disk_encrypted,
                    enrolled: d.enrolled,
                    os: &d.os,
                    os_version: &d.os_version,
                    posture_age_secs: age(req.now_unix, d.reported_at),
                }),
                local_date: texts.map(|t| t.date.as_str()),
                local_time: texts.map(|t| t.time.as_str()),
                method: &self.method,
                now: texts.map(|t| t.now.as_str()),
                now_unix: req.now_unix,
                path: &req.path,
                source_ip: &self.source_ip,
                time_zone: &self.time_zone,
                utc_offset: texts.map(|t| t.offset.as_str()),
                weekday: texts.map(|t| t.weekday),
            },
            principal: PrincipalSummary {
                auth_age_secs: age(req.now_unix, user.auth_time),
                auth_method: &user.auth_method,
                groups: &user.groups,
                id: &user.id,
                mfa: user.mfa,
                username: &user.username,
            },
            resource: ResourceSummary {
                critical: app.critical,
                data_class: &app.data_class,
                isolated: app.isolated,
                name: &app.name,
            },
        }
    }
}

/// The inputs of one decision as the policies saw them: principal, action,
/// resource and context, with the same names as in the policies. Serialises
/// with its keys in sorted order.
#[derive(Debug, Clone, Serialize)]
pub struct Summary<'a> {
    action: &'a str,
    context: ContextSummary<'a>,
    principal: PrincipalSummary<'a>,
    resource: ResourceSummary<'a>,
}

#[derive(Debug, Clone, Serialize)]
struct ContextSummary<'a> {
    /// `null` when the request came from no enrolled device with fresh posture.
    device: Option<DeviceSummary<'a>>,
    local_date: Option<&'a str>,
    local_time: Option<&'a str>,
    method: &'a str,
    now: Option<&'a str>,
    now_unix: i64,
    path: &'a str,
    source_ip: &'a str,
    time_zone: &'a str,
    utc_offset: Option<&'a str>,
    weekday: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
struct DeviceSummary<'a> {
    antivirus_running: bool,
    antivirus_version: i64,
    company_issued: bool,
    disk_encrypted: bool,
    enrolled: bool,
    os: &'a str,
    os_version: &'a str,
    posture_age_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
struct PrincipalSummary<'a> {
    auth_age_secs: i64,
    auth_method: &'a str,
    groups: &'a [String],
    id: &'a str,
    mfa: bool,
    username: &'a str,
}

#[derive(Debug, Clone, Serialize)]
struct ResourceSummary<'a> {
    critical: bool,
    data_class: &'a str,
    isolated: bool,
    name: &'a str,
}

impl Summary<'_> {
    /// As a JSON value (for reports and tests; the audit path serialises
    /// the summary directly).
    pub fn to_value(&self) -> serde_json::Value {
        // Plain structs of strings, numbers and booleans always serialise.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
