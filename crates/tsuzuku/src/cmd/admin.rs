//! `tsuzuku user …`, `tsuzuku app …`, `tsuzuku audit …`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use rand::Rng as _;
use tsuzuku_audit::EventKind;
use tsuzuku_identity::{password, totp};
use tsuzuku_store::{NewApp, NewUser, Store, User};

use crate::cli::{AppCmd, AuditCmd, SiteCmd, UserCmd};
use crate::env::{self, Env};
use crate::outln;
use crate::output::{done, print, time};

/// A random 20-character password from an unambiguous alphabet.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| {
            let i = rng.gen_range(0..ALPHABET.len());
            ALPHABET.get(i).copied().map(char::from).unwrap_or('x')
        })
        .collect()
}

fn read_password_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let pw = s.trim_end_matches(['\n', '\r']).to_owned();
    if pw.is_empty() {
        bail!("the password read from standard input is empty");
    }
    password::check_new(&pw).context("--password-stdin")?;
    Ok(pw)
}

async fn find_user(store: &Store, username: &str) -> Result<User> {
    store
        .get_user_by_name(username)
        .await?
        .with_context(|| format!("no user named {username:?} (see `tsuzuku user list`)"))
}

fn check_name(kind: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if !ok {
        bail!(
            "{kind} {s:?} is not valid: use 1-64 characters of letters, digits, '-', '_', '.', '@'"
        );
    }
    Ok(())
}

pub async fn user(env: &Env, c: UserCmd) -> Result<ExitCode> {
    let store = env.store().await?;
    let now = tsuzuku_gateway::now_unix();
    match c {
        UserCmd::Add {
            username,
            name,
            email,
            groups,
            password_stdin,
            totp: want_totp,
        } => {
            check_name("user name", &username)?;
            for g in &groups {
                check_name("group", g)?;
            }
            let (pw, generated) = if password_stdin {
                (read_password_stdin()?, false)
            } else {
                (generate_password(), true)
            };
            let secret = want_totp.then(totp::generate_secret);
            let user = store
                .create_user(
                    NewUser {
                        display_name: name.unwrap_or_else(|| username.clone()),
                        username,
                        email,
                        password_hash: Some(password::hash(&pw)?),
                        totp_secret: secret.clone(),
                        groups,
                    },
                    now,
                )
                .await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "user.add", "user": user.username, "groups": user.groups, "totp": secret.is_some()}),
            )
            .await?;
            let uri = match &secret {
                Some(s) => Some(totp::provisioning_uri(s, &user.username, "Tsuzuku")?),
                None => None,
            };
            if env.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "user": user.username,
                        "id": user.id,
                        "password": generated.then_some(&pw),
                        "totp_uri": uri,
                    })
                )?;
            } else {
                outln!("Added user {}", user.username)?;
                if generated {
                    outln!("  password: {pw}")?;
                }
                if let Some(u) = uri {
                    outln!("  TOTP enrolment: {u}")?;
                }
            }
        }
        UserCmd::List => {
            let users = store.list_users().await?;
            let rows = users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.display_name.clone(),
                        u.groups.join(","),
                        if u.totp_secret.is_some() { "yes" } else { "no" }.into(),
                        if u.oidc_subject.is_some() {
                            "sso"
                        } else {
                            "local"
                        }
                        .into(),
                        if u.disabled {
                            "disabled".into()
                        } else if u.locked_until.map(|t| t > now).unwrap_or(false) {
                            "locked".into()
                        } else {
                            "active".to_owned()
                        },
                    ]
                })
                .collect();
            let json = serde_json::json!(
                users
                    .iter()
                    .map(|u| serde_json::json!({
                        "id": u.id, "username": u.username, "display_name": u.display_name,
                        "email": u.email, "groups": u.groups, "totp": u.totp_secret.is_some(),
                        "sso": u.oidc_subject.is_some(), "disabled": u.disabled,
                        "locked_until": u.locked_until, "created_at": u.created_at,
                    }))
                    .collect::<Vec<_>>()
            );
            print(
                env.json,
                &["user", "name", "groups", "totp", "source", "state"],
                rows,
                json,
            )?;
        }
        UserCmd::Disable { username } => {
            let u = find_user(&store, &username).await?;
            store.set_user_disabled(&u.id, true).await?;
            store.delete_user_sessions(&u.id).await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "user.disable", "user": u.username}),
            )
            .await?;
            done(
                env.json,
                &format!("Disabled {} and ended their sessions", u.username),
                serde_json::json!({"user": u.username, "disabled": true, "sessions_ended": true}),
            )?;
        }
        UserCmd::Enable { username } => {
            let u = find_user(&store, &username).await?;
            store.set_user_disabled(&u.id, false).await?;
            store.reset_login_failures(&u.id).await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "user.enable", "user": u.username}),
            )
            .await?;
            done(
                env.json,
                &format!("Enabled {}", u.username),
                serde_json::json!({"user": u.username, "disabled": false}),
            )?;
        }
        UserCmd::ResetMfa { username } => {
            let u = find_user(&store, &username).await?;
            let secret = totp::generate_secret();
            store.set_totp_secret(&u.id, Some(secret.clone())).await?;
            store.delete_user_sessions(&u.id).await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "user.reset_mfa", "user": u.username}),
            )
            .await?;
            let uri = totp::provisioning_uri(&secret, &u.username, "Tsuzuku")?;
            if env.json {
                outln!(
                    "{}",
                    serde_json::json!({"user": u.username, "totp_uri": uri})
                )?;
            } else {
                outln!("New TOTP enrolment for {}: {uri}", u.username)?;
            }
        }
        UserCmd::Passwd {
            username,
            password_stdin,
        } => {
            let u = find_user(&store, &username).await?;
            let (pw, generated) = if password_stdin {
                (read_password_stdin()?, false)
            } else {
                (generate_password(), true)
            };
            store
                .set_password_hash(&u.id, Some(password::hash(&pw)?))
                .await?;
            store.reset_login_failures(&u.id).await?;
            store.delete_user_sessions(&u.id).await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "user.passwd", "user": u.username}),
            )
            .await?;
            let mut text = format!("Set a new password for {}", u.username);
            if generated {
                text.push_str(&format!("\n  password: {pw}"));
            }
            done(
                env.json,
                &text,
                serde_json::json!({"user": u.username, "password": generated.then_some(&pw), "sessions_ended": true}),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks an upstream: `http://HOST[:PORT]`, nothing else, with a host and a port in range.
fn check_upstream(u: &str) -> Result<()> {
    let rest = u.strip_prefix("http://").with_context(|| {
        format!("upstream {u:?} must be an http:// URL such as http://10.0.0.5:8080")
    })?;
    let ok = !rest.is_empty()
        && !rest.contains('/')
        && !rest.contains('@')
        && !rest.contains('?')
        && !rest.contains('#');
    if !ok {
        bail!("upstream {u:?} must be scheme, host and port only, such as http://10.0.0.5:8080");
    }
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 address: http://[2001:db8::5]:8080
        Some(r) => {
            let (ip, after) = r.split_once(']').with_context(|| {
                format!("upstream {u:?}: an IPv6 address needs its closing ']'")
            })?;
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                bail!("upstream {u:?}: {ip:?} is not an IPv6 address");
            }
            match after.strip_prefix(':') {
                Some(p) => (ip, Some(p)),
                None if after.is_empty() => (ip, None),
                None => bail!("upstream {u:?} must be scheme, host and port only"),
            }
        }
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        bail!(
            "upstream {u:?} has no host: give a host name or IP address, such as http://10.0.0.5:8080"
        );
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        bail!(
            "upstream {u:?} has port {p:?}: use a port from 1 to 65535, such as http://10.0.0.5:8080"
        );
    }
    let ipv6 = rest.starts_with('[');
    if !ipv6 && !tsuzuku_config::is_dns_name(host) {
        bail!("upstream {u:?}: {host:?} is not a host name or IP address");
    }
    u.parse::<http::Uri>()
        .with_context(|| format!("upstream {u:?} is not a valid URL"))?;
    Ok(())
}

/// `host[:port]` as browsers send it in the Host header: lowercase, without the default
/// HTTPS port 443.
fn effective_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_suffix(":443") {
        Some(h) => h.to_owned(),
        None => host,
    }
}

/// Every check of a new app, wherever it is created (`app add`, the quick start's demo app):
/// name, host (not the portal's, matched as the gateway matches Host headers), upstream and
/// data class.
pub fn check_new_app(portal_host: &str, app: &NewApp) -> Result<()> {
    check_name("app name", &app.name)?;
    let host = &app.host;
    if !tsuzuku_config::valid_host_port(host) {
        bail!(
            "host {host:?} is not valid: use a lowercase host name with an optional :port, such as wiki.example.com"
        );
    }
    if let Some(bare) = host.strip_suffix(":443") {
        bail!(
            "host {host:?}: browsers leave the default port 443 out of the Host header, so no request would match it; use {bare:?}"
        );
    }
    if effective_host(host) == effective_host(portal_host) {
        bail!("host {host:?} is the sign-in portal's host; give the app its own host name");
    }
    check_upstream(&app.upstream)?;
    if !tsuzuku_policy::is_data_class(&app.data_class) {
        bail!(
            "data class {:?} is not one of {} (policies compare it exactly)",
            app.data_class,
            tsuzuku_policy::DATA_CLASSES.join(", ")
        );
    }
    Ok(())
}

pub async fn app(env: &Env, c: AppCmd) -> Result<ExitCode> {
    let store = env.store().await?;
    match c {
        AppCmd::Add {
            name,
            host,
            upstream,
            data_class,
            critical,
            isolated,
        } => {
            let new = NewApp {
                name,
                host,
                upstream,
                data_class,
                critical,
                isolated,
            };
            check_new_app(&env.config.gateway.portal_host, &new)?;
            let a = store.create_app(new, tsuzuku_gateway::now_unix()).await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "app.add", "app": a.name, "host": a.host, "upstream": a.upstream, "data_class": a.data_class, "critical": a.critical, "isolated": a.isolated}),
            )
            .await?;
            done(
                env.json,
                &format!(
                    "Added app {} at https://{}/ -> {}",
                    a.name, a.host, a.upstream
                ),
                serde_json::json!({"app": a.name, "host": a.host, "upstream": a.upstream, "data_class": a.data_class, "critical": a.critical, "isolated": a.isolated}),
            )?;
        }
        AppCmd::List => {
            let apps = store.list_apps().await?;
            let rows = apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.host.clone(),
                        a.upstream.clone(),
                        a.data_class.clone(),
                        a.critical.to_string(),
                        a.isolated.to_string(),
                    ]
                })
                .collect();
            let json = serde_json::json!(
                apps.iter()
                    .map(|a| serde_json::json!({
                        "name": a.name, "host": a.host, "upstream": a.upstream,
                        "data_class": a.data_class, "critical": a.critical, "isolated": a.isolated,
                        "created_at": a.created_at,
                    }))
                    .collect::<Vec<_>>()
            );
            print(
                env.json,
                &[
                    "app",
                    "host",
                    "upstream",
                    "data class",
                    "critical",
                    "isolated",
                ],
                rows,
                json,
            )?;
        }
        AppCmd::Remove { name } => {
            if !store.delete_app(&name).await? {
                bail!("no app named {name:?} (see `tsuzuku app list`)");
            }
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "app.remove", "app": name}),
            )
            .await?;
            done(
                env.json,
                &format!("Removed app {name}"),
                serde_json::json!({"app": name, "removed": true}),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(env: &Env, c: AuditCmd) -> Result<ExitCode> {
    let store = env.store().await?;
    match c {
        AuditCmd::Verify => {
            // Every stored row of the tenant, in pages, against the head row (tail truncation,
            // a removed head row, rows past the head, rows numbered below 1, unreadable rows:
            // each a problem naming its event).
            let report = store.verify_audit().await?;
            if env.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "checked": report.checked,
                        "head": report.head.as_ref().map(|(seq, hash)| {
                            serde_json::json!({"seq": seq, "hash": hash})
                        }),
                        "intact": report.is_intact(),
                        "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    })
                )?;
            } else if report.is_intact() {
                match &report.head {
                    Some((seq, hash)) => outln!(
                        "audit trail intact: {} events, head #{seq} {hash}",
                        report.checked
                    )?,
                    None => outln!("audit trail intact: no events yet")?,
                }
            } else {
                for p in &report.problems {
                    eprintln!("tampering: {p}");
                }
            }
            if report.is_intact() {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(2))
            }
        }
        AuditCmd::Tail { lines, kind } => {
            let kind = match kind {
                Some(k) => Some(k.parse::<EventKind>().map_err(|e| anyhow::anyhow!("{e}"))?),
                None => None,
            };
            // The newest `lines` events of the kind asked for: read further back until there
            // are that many of it, or the whole log was read.
            let want = usize::try_from(lines.clamp(1, 100_000)).unwrap_or(20);
            let mut window = lines.clamp(1, 100_000);
            let events = loop {
                let read = store.audit_tail(window).await?;
                let whole_log = i64::try_from(read.len()).unwrap_or(i64::MAX) < window;
                let mut of_kind: Vec<_> = read
                    .into_iter()
                    .filter(|e| kind.map(|k| e.event.kind == k).unwrap_or(true))
                    .collect();
                if of_kind.len() >= want || whole_log {
                    let skip = of_kind.len().saturating_sub(want);
                    break of_kind.split_off(skip);
                }
                window = window.saturating_mul(8);
            };
            if env.json {
                for e in &events {
                    outln!(
                        "{}",
                        serde_json::json!({
                            "seq": e.seq, "time_ms": e.event.time_ms, "kind": e.event.kind.as_str(),
                            "actor": e.event.actor, "detail": e.event.detail, "hash": e.hash,
                        })
                    )?;
                }
            } else {
                let rows = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            time(e.event.time_ms / 1000),
                            e.event.kind.as_str().to_owned(),
                            e.event.actor.clone().unwrap_or_default(),
                            summary(&e.event.detail.to_value()),
                        ]
                    })
                    .collect();
                print(
                    false,
                    &["#", "time", "kind", "actor", "what"],
                    rows,
                    serde_json::Value::Null,
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn summary(d: &serde_json::Value) -> String {
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if let Some(allowed) = d.get("allowed").and_then(|v| v.as_bool()) {
        return format!(
            "{} {} {}{} — {}",
            if allowed { "ALLOW" } else { "DENY" },
            s("method"),
            s("app"),
            s("path"),
            s("reason")
        );
    }
    if let Some(ok) = d.get("success").and_then(|v| v.as_bool()) {
        return format!(
            "{} {} from {} ({})",
            if ok { "sign-in" } else { "FAILED sign-in" },
            s("method"),
            s("source_ip"),
            s("reason")
        );
    }
    // Any other event: its fields as `key=value`, long values and the whole line cut short
    // (a policy change carries whole policy texts; `--json` has everything).
    let Some(fields) = d.as_object() else {
        return clip(&d.to_string(), SUMMARY_CHARS);
    };
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => format!("[{} items]", a.len()),
                serde_json::Value::Object(_) => "{…}".to_owned(),
                other => other.to_string(),
            };
            Some(format!("{k}={}", clip(&text, 40)))
        })
        .collect();
    clip(&parts.join(" "), SUMMARY_CHARS)
}

/// Longest "what" of an `audit tail` row, in characters.
const SUMMARY_CHARS: usize = 160;

/// `text` on one line (control characters as spaces), at most `max` characters, `…` marking a
/// cut.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    let mut out: String = one_line.clone().take(max).collect();
    if one_line.count() > max {
        out.pop();
        out.push('…');
    }
    out
}

pub async fn site(env: &Env, c: SiteCmd) -> Result<ExitCode> {
    let root = env.store_root().await?;
    match c {
        SiteCmd::Status => {
            let role = root.role();
            if env.json {
                outln!(
                    "{}",
                    serde_json::json!({"role": role.to_string(), "writable": role.is_writable(), "readable": role.is_readable()})
                )?;
            } else {
                outln!("store: {role}")?;
            }
        }
        SiteCmd::Promote => {
            let role = root.promote().await.context("promotion refused")?;
            let store = root.tenant(&env.config.store.tenant);
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "site.promote", "role": role.to_string()}),
            )
            .await?;
            outln!("promoted: store is now {role}")?;
        }
        other => return gateway_site(env, root.tenant(&env.config.store.tenant), other).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway-site verbs of `tsuzuku site` (connectors' sites; the store's own database sites
/// are `status` and `promote`).
async fn gateway_site(env: &Env, store: tsuzuku_store::Store, c: SiteCmd) -> Result<ExitCode> {
    use tsuzuku_store::{GatewaySite, SiteExclusion};
    let now_ms = tsuzuku_gateway::now_ms();
    match c {
        SiteCmd::Add {
            name,
            host,
            endpoints,
            preference,
            capacity_rps,
            dr,
        } => {
            if capacity_rps.is_some_and(|c| c <= 0) {
                bail!("--capacity-rps must be more than zero");
            }
            // A DR site is never in the connectors' ordinary site list, so no load shedding
            // ever reads its capacity (docs/CONNECTOR.md): refuse rather than store a no-op.
            if dr && let Some(c) = capacity_rps {
                bail!(
                    "--capacity-rps {c} with --dr: a DR gateway site takes no part in load shedding, so it has no capacity; leave out --capacity-rps"
                );
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("site name {name:?}: expected letters, digits, '-' or '_'");
            }
            if !tsuzuku_config::valid_host_port(&host) {
                bail!("--host {host:?} is not a valid lowercase host name");
            }
            let mut seen: Vec<(std::net::SocketAddr, &str)> = Vec::with_capacity(endpoints.len());
            for e in &endpoints {
                let addr = e.parse::<std::net::SocketAddr>().with_context(|| {
                    format!(
                        "--endpoint {e:?} is not an IP address with a port, e.g. 192.0.2.10:443"
                    )
                })?;
                if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                    let what = if first == e {
                        "is given twice".to_owned()
                    } else {
                        format!("is the same address as --endpoint {first:?}")
                    };
                    bail!("--endpoint {e:?} {what}: give each gateway node once");
                }
                seen.push((addr, e));
            }
            store
                .add_gateway_site(&GatewaySite {
                    name: name.clone(),
                    host: host.clone(),
                    endpoints: endpoints.clone(),
                    preference,
                    capacity_rps,
                    dr,
                    created_at: now_ms / 1000,
                })
                .await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "site.add", "site": name, "host": host, "endpoints": endpoints, "preference": preference, "dr": dr}),
            )
            .await?;
            done(
                env.json,
                &format!("added gateway site {name}"),
                serde_json::json!({"site": name, "host": host, "endpoints": endpoints, "preference": preference, "capacity_rps": capacity_rps, "dr": dr}),
            )?;
        }
        SiteCmd::Remove { name } => {
            if !store.remove_gateway_site(&name).await? {
                bail!("no gateway site named {name:?}; see `tsuzuku site list`");
            }
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "site.remove", "site": name}),
            )
            .await?;
            done(
                env.json,
                &format!("removed gateway site {name}"),
                serde_json::json!({"site": name, "removed": true}),
            )?;
        }
        SiteCmd::Exclude {
            name,
            valid_for,
            reason,
        } => {
            if reason.trim().is_empty() {
                bail!(
                    "--reason {reason:?} is empty: say why the site is excluded (operators and the audit trail see it), e.g. --reason \"switch replacement\""
                );
            }
            let d = super::dr::parse_duration("--for", &valid_for)?;
            let until_ms = now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            store
                .exclude_gateway_site(&SiteExclusion {
                    site: name.clone(),
                    until_ms,
                    reason: reason.clone(),
                    created_by: env::actor(),
                    created_at_ms: now_ms,
                })
                .await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "site.exclude", "site": name, "until_ms": until_ms, "reason": reason}),
            )
            .await?;
            done(
                env.json,
                &format!(
                    "excluded gateway site {name} until {} ({reason}); connectors move off it at their next site-list refresh",
                    time(until_ms / 1000)
                ),
                serde_json::json!({"site": name, "excluded_until_ms": until_ms, "reason": reason}),
            )?;
        }
        SiteCmd::Include { name } => {
            if !store
                .list_gateway_sites()
                .await?
                .iter()
                .any(|s| s.name == name)
            {
                bail!("no gateway site named {name:?}; see `tsuzuku site list`");
            }
            if !store.include_gateway_site(&name).await? {
                bail!("gateway site {name:?} is not excluded");
            }
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "site.include", "site": name}),
            )
            .await?;
            done(
                env.json,
                &format!("gateway site {name} is no longer excluded"),
                serde_json::json!({"site": name, "excluded_until_ms": null}),
            )?;
        }
        SiteCmd::List => {
            let sites = store.list_gateway_sites().await?;
            let exclusions = store.active_site_exclusions(now_ms).await?;
            let rows = sites
                .iter()
                .map(|s| {
                    let ex = exclusions.iter().find(|e| e.site == s.name);
                    vec![
                        s.name.clone(),
                        s.preference.to_string(),
                        s.host.clone(),
                        s.endpoints.join(", "),
                        if s.dr {
                            "DR gateway".into()
                        } else {
                            s.capacity_rps
                                .map_or_else(|| "-".into(), |c| format!("{c} rps"))
                        },
                        ex.map_or_else(
                            || "-".into(),
                            |e| format!("until {} ({})", time(e.until_ms / 1000), e.reason),
                        ),
                    ]
                })
                .collect();
            let json = serde_json::json!(
                sites
                    .iter()
                    .map(|s| {
                        let ex = exclusions.iter().find(|e| e.site == s.name);
                        serde_json::json!({
                            "name": s.name, "preference": s.preference, "host": s.host,
                            "endpoints": s.endpoints, "capacity_rps": s.capacity_rps,
                            "dr": s.dr,
                            "excluded_until_ms": ex.map(|e| e.until_ms),
                            "exclusion_reason": ex.map(|e| e.reason.clone()),
                        })
                    })
                    .collect::<Vec<_>>()
            );
            print(
                env.json,
                &[
                    "site",
                    "preference",
                    "host",
                    "endpoints",
                    "capacity",
                    "excluded",
                ],
                rows,
                json,
            )?;
        }
        SiteCmd::Status | SiteCmd::Promote => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;
