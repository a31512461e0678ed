//! `tsuzuku policy …`: validate, apply (versioned, audited), diff, history, rollback, test.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use tsuzuku_audit::EventKind;
use tsuzuku_policy::{AUTH_METHODS, AppFacts, DeviceFacts, PolicyEngine, RequestFacts, UserFacts};
use tsuzuku_store::{PolicyDoc, Store};

use crate::cli::PolicyCmd;
use crate::env::{self, Env};
use crate::output::{done, print, time};
use crate::{out, outln};

/// Reads policy files; each becomes a document named after the file stem.
fn read_docs(files: &[PathBuf]) -> Result<Vec<PolicyDoc>> {
    let mut docs: Vec<PolicyDoc> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read policy file {}", f.display()))?;
        let id = f
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("policy file {} has no usable name", f.display()))?
            .to_owned();
        if docs.iter().any(|d| d.id == id) {
            bail!("two policy files are both named {id:?}; policy document names must be unique");
        }
        docs.push(PolicyDoc { id, text });
    }
    Ok(docs)
}

fn check(docs: &[PolicyDoc]) -> Result<()> {
    let refs: Vec<tsuzuku_policy::PolicyDoc<'_>> = docs
        .iter()
        .map(|d| tsuzuku_policy::PolicyDoc {
            id: &d.id,
            text: &d.text,
        })
        .collect();
    tsuzuku_policy::validate(&refs).map_err(|e| anyhow::anyhow!("policies rejected:\n{e}"))
}

fn engine(docs: &[PolicyDoc], tz: jiff::tz::TimeZone) -> Result<PolicyEngine> {
    let refs: Vec<tsuzuku_policy::PolicyDoc<'_>> = docs
        .iter()
        .map(|d| tsuzuku_policy::PolicyDoc {
            id: &d.id,
            text: &d.text,
        })
        .collect();
    PolicyEngine::compile(&refs, tz).map_err(|e| anyhow::anyhow!("policies rejected:\n{e}"))
}

/// A unified diff between two policy sets, document by document.
pub fn diff(old: &[PolicyDoc], new: &[PolicyDoc]) -> String {
    let mut ids: Vec<&str> = old.iter().chain(new).map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = String::new();
    for id in ids {
        let a = old.iter().find(|d| d.id == id).map(|d| d.text.as_str());
        let b = new.iter().find(|d| d.id == id).map(|d| d.text.as_str());
        if a == b {
            continue;
        }
        let d = similar::TextDiff::from_lines(a.unwrap_or(""), b.unwrap_or(""));
        let from = if a.is_some() {
            format!("a/{id}")
        } else {
            "/dev/null".into()
        };
        let to = if b.is_some() {
            format!("b/{id}")
        } else {
            "/dev/null".into()
        };
        out.push_str(
            &d.unified_diff()
                .context_radius(3)
                .header(&from, &to)
                .to_string(),
        );
    }
    out
}

async fn current_docs(store: &Store) -> Result<(i64, Vec<PolicyDoc>)> {
    Ok(match store.current_policy().await? {
        Some(v) => (v.version, v.docs),
        None => (0, Vec::new()),
    })
}

async fn save(
    store: &Store,
    base: i64,
    old: &[PolicyDoc],
    docs: Vec<PolicyDoc>,
    comment: &str,
    action: &str,
) -> Result<i64> {
    let change = diff(old, &docs);
    if change.is_empty() {
        bail!("nothing to change: the policies are identical to the active version {base}");
    }
    let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
    let v = store
        .save_policy(
            base,
            &env::actor(),
            comment,
            docs,
            tsuzuku_gateway::now_unix(),
        )
        .await?;
    env::audit(
        store,
        EventKind::Policy,
        serde_json::json!({"action": action, "version": v, "previous": base, "documents": ids, "comment": comment, "diff": change}),
    )
    .await?;
    Ok(v)
}

pub async fn run(env: &Env, c: PolicyCmd) -> Result<ExitCode> {
    let tz = jiff::tz::TimeZone::get(&env.config.gateway.timezone)?;
    match c {
        PolicyCmd::Validate { files } => {
            let docs = read_docs(&files)?;
            check(&docs)?;
            let e = engine(&docs, tz)?;
            let policies = e.policy_ids().len();
            done(
                env.json,
                &format!(
                    "valid: {} document(s), {policies} polic{}",
                    docs.len(),
                    if policies == 1 { "y" } else { "ies" }
                ),
                serde_json::json!({"valid": true, "documents": docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), "policies": policies}),
            )?;
        }
        PolicyCmd::Apply { files, message } => {
            let store = env.store().await?;
            let docs = read_docs(&files)?;
            check(&docs)?;
            let (base, old) = current_docs(&store).await?;
            let change = diff(&old, &docs);
            let v = save(&store, base, &old, docs, &message, "policy.apply").await?;
            if env.json {
                outln!(
                    "{}",
                    serde_json::json!({"version": v, "previous": base, "diff": change})
                )?;
            } else {
                out!("{change}")?;
                outln!("applied as version {v} (was {base})")?;
            }
        }
        PolicyCmd::List => {
            let store = env.store().await?;
            let (v, docs) = current_docs(&store).await?;
            let rows = docs
                .iter()
                .map(|d| vec![d.id.clone(), d.text.lines().count().to_string()])
                .collect();
            let json = serde_json::json!({"version": v, "documents": docs.iter().map(|d| serde_json::json!({"id": d.id, "text": d.text})).collect::<Vec<_>>()});
            if !env.json {
                outln!("active version: {v}")?;
            }
            print(env.json, &["document", "lines"], rows, json)?;
        }
        PolicyCmd::Diff { files, from, to } => {
            let store = env.store().await?;
            let (cur, cur_docs) = current_docs(&store).await?;
            let load = |v: i64| {
                let store = store.clone();
                async move {
                    if v == 0 {
                        return Ok(Vec::new());
                    }
                    store
                        .policy_version(v)
                        .await?
                        .map(|p| p.docs)
                        .with_context(|| {
                            format!("no policy version {v} (see `tsuzuku policy history`)")
                        })
                }
            };
            let (old, new, unchanged, versions) = match (files.is_empty(), from, to) {
                (false, None, None) => (
                    cur_docs,
                    read_docs(&files)?,
                    format!("no changes against version {cur}"),
                    serde_json::Map::from_iter([("against".to_owned(), cur.into())]),
                ),
                (true, Some(f), t) => {
                    let t = t.unwrap_or(cur);
                    (
                        load(f).await?,
                        load(t).await?,
                        format!("no changes between version {f} and version {t}"),
                        serde_json::Map::from_iter([
                            ("from".to_owned(), f.into()),
                            ("to".to_owned(), t.into()),
                        ]),
                    )
                }
                (true, None, None) => bail!(
                    "give policy files to compare with the active set, or --from VERSION [--to VERSION]"
                ),
                (true, None, Some(t)) => bail!(
                    "--to {t} needs --from: give the version to compare from, e.g. --from {} --to {t}",
                    (t - 1).max(0)
                ),
                (false, _, _) => bail!(
                    "give either policy files or --from/--to, not both: files are compared with the active version"
                ),
            };
            let change = diff(&old, &new);
            if env.json {
                let mut j = versions;
                j.insert("changed".into(), (!change.is_empty()).into());
                j.insert("diff".into(), change.into());
                outln!("{}", serde_json::Value::Object(j))?;
            } else if change.is_empty() {
                outln!("{unchanged}")?;
            } else {
                out!("{change}")?;
            }
        }
        PolicyCmd::History => {
            let store = env.store().await?;
            let hist = store.policy_history().await?;
            let rows = hist
                .iter()
                .map(|h| {
                    vec![
                        h.version.to_string(),
                        time(h.created_at),
                        h.author.clone(),
                        h.docs.len().to_string(),
                        h.comment.clone(),
                    ]
                })
                .collect();
            let json = serde_json::json!(hist.iter().map(|h| serde_json::json!({"version": h.version, "created_at": h.created_at, "author": h.author, "comment": h.comment, "documents": h.docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>()})).collect::<Vec<_>>());
            print(
                env.json,
                &["version", "when", "who", "documents", "why"],
                rows,
                json,
            )?;
        }
        PolicyCmd::Rollback { version, message } => {
            let store = env.store().await?;
            let target = store.policy_version(version).await?.with_context(|| {
                format!("no policy version {version} (see `tsuzuku policy history`)")
            })?;
            check(&target.docs)?;
            let (base, old) = current_docs(&store).await?;
            let comment = if message.is_empty() {
                format!("rollback to version {version}")
            } else {
                format!("rollback to version {version}: {message}")
            };
            let v = save(&store, base, &old, target.docs, &comment, "policy.rollback").await?;
            done(
                env.json,
                &format!("version {version} is active again, as version {v}"),
                serde_json::json!({"version": v, "previous": base, "restored": version}),
            )?;
        }
        PolicyCmd::Test {
            user,
            app,
            method,
            path,
            ip,
            at,
            mfa,
            auth_method,
            auth_age,
            device,
            company_issued,
            os,
            disk_encrypted,
            antivirus,
            files,
        } => {
            let store = env.store().await?;
            let docs = if files.is_empty() {
                current_docs(&store).await?.1
            } else {
                read_docs(&files)?
            };
            let e = engine(&docs, tz)?;
            let u = store
                .get_user_by_name(&user)
                .await?
                .with_context(|| format!("no user named {user:?} (see `tsuzuku user list`)"))?;
            let a = store
                .get_app_by_name(&app)
                .await?
                .with_context(|| format!("no app named {app:?} (see `tsuzuku app list`)"))?;
            let now = match at {
                Some(t) => t
                    .parse::<jiff::Timestamp>()
                    .with_context(|| {
                        format!(
                            "--at {t:?} is not an RFC 3339 time such as 2026-11-23T10:00:00+09:00"
                        )
                    })?
                    .as_second(),
                None => tsuzuku_gateway::now_unix(),
            };
            let method_name = auth_method
                .unwrap_or_else(|| if mfa { "password+totp" } else { "password" }.to_owned());
            if !AUTH_METHODS.contains(&method_name.as_str()) {
                bail!(
                    "--auth-method {method_name:?} is not one the gateway records: use one of {}",
                    AUTH_METHODS.join(", ")
                );
            }
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                bail!("--method {method:?} is not an HTTP method such as GET or POST");
            }
            if let Err(e) = tsuzuku_httpguard::path::check_path(&path) {
                bail!("--path {path:?} is one the gateway refuses: {e}");
            }
            let auth_age = i64::try_from(auth_age).context("--auth-age is too large")?;
            let uf = UserFacts {
                id: u.id.clone(),
                username: u.username.clone(),
                groups: u.groups.clone(),
                // As the gateway records it: a second factor is MFA.
                mfa: mfa || method_name == "password+totp",
                auth_method: method_name,
                auth_time: now.saturating_sub(auth_age),
            };
            let any_device =
                device || company_issued || !os.is_empty() || disk_encrypted || antivirus.is_some();
            let df = match any_device {
                false => None,
                true => Some(DeviceFacts {
                    enrolled: true,
                    company_issued,
                    os: os.first().cloned().unwrap_or_default(),
                    os_version: os.get(1).cloned().unwrap_or_default(),
                    disk_encrypted,
                    antivirus_running: antivirus.is_some(),
                    antivirus_version: match &antivirus {
                        Some(v) => tsuzuku_policy::version_code(v)
                            .with_context(|| format!("--antivirus {v:?}"))?,
                        None => 0,
                    },
                    reported_at: now,
                }),
            };
            let af = AppFacts {
                name: a.name.clone(),
                data_class: a.data_class.clone(),
                critical: a.critical,
                isolated: a.isolated,
            };
            let rf = RequestFacts {
                method: method.to_ascii_uppercase(),
                path,
                source_ip: ip,
                now_unix: now,
            };
            let x = e.explain(&uf, df.as_ref(), &af, &rf);
            if env.json {
                outln!("{}", serde_json::to_string_pretty(&explanation_json(&x))?)?;
            } else {
                outln!("{x}")?;
            }
            return Ok(if x.decision.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn explanation_json(x: &tsuzuku_policy::Explanation) -> serde_json::Value {
    use tsuzuku_policy::PolicyStatus;
    serde_json::json!({
        "allowed": x.decision.allowed,
        "reason": x.decision.reason,
        "determining": x.decision.determining,
        "errors": x.decision.errors,
        "context": x.summary,
        "policies": x.policies.iter().map(|p| {
            let (status, detail) = match &p.status {
                PolicyStatus::Matched => ("matched", serde_json::Value::Null),
                PolicyStatus::NotMatched { reasons } => ("not_matched", serde_json::json!(reasons)),
                PolicyStatus::Failed { error } => ("failed", serde_json::json!(error)),
            };
            serde_json::json!({"id": p.id, "effect": p.effect.to_string(), "status": status, "detail": detail})
        }).collect::<Vec<_>>(),
    })
}
