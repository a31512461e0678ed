//! `tsuzuku device …` (enrolment tokens, the device list, revocation) and
//! `tsuzuku connect enroll`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use tsuzuku_audit::EventKind;
use tsuzuku_connector::device::DeviceIdentity;

use crate::cli::DeviceCmd;
use crate::env::{self, Env};
use crate::outln;
use crate::output::{print, time};

/// The longest an enrolment token can be valid (docs/DEVICES.md): a token is a bearer secret
/// that enrols a device with no one watching, so it should not lie around for long.
const MAX_TOKEN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

pub async fn run(env: &Env, cmd: DeviceCmd) -> Result<ExitCode> {
    let store = env.store().await?;
    let now = jiff::Timestamp::now().as_second();
    match cmd {
        DeviceCmd::Token {
            company_issued,
            valid_for,
            user,
        } => {
            let valid = super::dr::parse_duration("--valid-for", &valid_for)?;
            if valid > MAX_TOKEN_VALIDITY {
                bail!(
                    "--valid-for {valid_for:?} is longer than the {}-day maximum for a one-time enrolment token: give 30d or less and issue a new token when it runs out",
                    MAX_TOKEN_VALIDITY.as_secs() / 86_400
                );
            }
            let owner = match &user {
                None => None,
                Some(name) => Some(store.get_user_by_name(name).await?.with_context(|| {
                    format!("--user {name}: no such user; see `tsuzuku user list`")
                })?),
            };
            let expires = now.saturating_add(i64::try_from(valid.as_secs()).unwrap_or(i64::MAX));
            // The device CA exists before the first device asks for a certificate, so gateways
            // already trust it.
            tsuzuku_control::enroll::ensure_device_ca(&store, now)
                .await
                .context("creating the device CA")?;
            // Hex behind a fixed prefix: never starts with "-", so it passes as a flag value.
            let mut raw = [0u8; 24];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
            let token = format!("tzk1_{}", hex::encode(raw));
            store
                .create_enrol_token(
                    &tsuzuku_control::enroll::token_hash(&token),
                    company_issued,
                    owner.as_ref().map(|u| u.id.as_str()),
                    &env::actor(),
                    now,
                    expires,
                )
                .await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "device.token", "company_issued": company_issued, "user": user, "expires_at": expires}),
            )
            .await?;
            if env.json {
                outln!(
                    "{}",
                    serde_json::json!({"token": token, "company_issued": company_issued, "user": user, "expires_at": expires})
                )?;
            } else {
                outln!("{token}")?;
                eprintln!(
                    "one-time enrolment token, valid until {}{}{}; on the device: tsuzuku connect enroll --control URL --token TOKEN",
                    time(expires),
                    if company_issued {
                        ", marks the device company-issued"
                    } else {
                        ""
                    },
                    user.as_deref()
                        .map(|u| format!(", the device belongs to {u}"))
                        .unwrap_or_default()
                );
            }
        }
        DeviceCmd::List => {
            let devices = store.list_devices().await?;
            let users: std::collections::HashMap<String, String> = store
                .list_users()
                .await?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect();
            let rows = devices
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.name.clone(),
                        d.user_id.as_ref().map_or_else(
                            || "-".into(),
                            |id| users.get(id).cloned().unwrap_or_else(|| id.clone()),
                        ),
                        if d.company_issued { "yes" } else { "no" }.into(),
                        time(d.enrolled_at),
                        time(d.not_after),
                        d.revoked_at.map_or_else(|| "-".into(), time),
                    ]
                })
                .collect();
            let json = serde_json::to_value(&devices)?;
            print(
                env.json,
                &[
                    "device",
                    "name",
                    "user",
                    "company-issued",
                    "enrolled",
                    "certificate expires",
                    "revoked",
                ],
                rows,
                json,
            )?;
        }
        DeviceCmd::Revoke { device } => {
            if !store.revoke_device(&device, now).await? {
                bail!(
                    "no enrolled, unrevoked device with id or name {device:?}; see `tsuzuku device list`"
                );
            }
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "device.revoke", "device": device}),
            )
            .await?;
            outln!(
                "revoked device {device}; gateways refuse it from their next reload or snapshot"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tsuzuku connect enroll`.
pub async fn enroll(
    control: String,
    control_ca: Option<PathBuf>,
    token: String,
    name: Option<String>,
    device_dir: PathBuf,
) -> Result<ExitCode> {
    let ca = match &control_ca {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("reading --control-ca {}", p.display()))?,
        ),
        None => None,
    };
    let name = match name {
        Some(n) => n,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "device".to_owned()),
    };
    let id = DeviceIdentity::enroll(&control, ca.as_deref(), token.trim(), &name, &device_dir)
        .await
        .context("enrolment failed")?;
    outln!(
        "enrolled as {} ({}company-issued); identity kept in {}",
        id.device_id,
        if id.company_issued { "" } else { "not " },
        device_dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
