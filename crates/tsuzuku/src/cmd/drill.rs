//! `tsuzuku dr drill`: per connector, when it entered and left disaster-recovery mode (a drill
//! or the real thing) and for how long, from the DR transitions connectors reported to the
//! control plane. The episodes are `tsuzuku-control`'s ([`tsuzuku_control::drill::episodes`]);
//! this module reads the store and prints.

use std::process::ExitCode;

use anyhow::Result;
use tsuzuku_control::drill::episodes;

use crate::env::Env;
use crate::outln;
use crate::output;

fn show_ms(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| output::time(ms.div_euclid(1000)))
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
}

fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

pub async fn run(env: &Env, since: &str) -> Result<ExitCode> {
    let window = super::dr::parse_duration("--since", since)?;
    let now = tsuzuku_gateway::now_ms();
    let since_ms = now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let store = env.store().await?;
    let list = episodes(&store.dr_transitions(since_ms).await?, since_ms);
    let rows = list
        .iter()
        .map(|e| {
            vec![
                e.device.clone(),
                if e.drill { "drill" } else { "real" }.into(),
                show_ms(e.entered_ms),
                e.left_ms
                    .map_or_else(|| "still in DR mode".into(), |l| show_ms(Some(l))),
                e.duration_ms(now).map_or_else(|| "-".into(), human),
                match (e.back_ms, e.left_ms) {
                    (Some(b), _) => show_ms(Some(b)),
                    (None, Some(_)) => "returning".into(),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    let json = serde_json::json!({
        "since": rfc3339(Some(since_ms)),
        "episodes": list.iter().map(|e| serde_json::json!({
            "device": e.device,
            "drill": e.drill,
            "entered_ms": e.entered_ms,
            "entered": rfc3339(e.entered_ms),
            "left_ms": e.left_ms,
            "left": rfc3339(e.left_ms),
            "back_ms": e.back_ms,
            "back": rfc3339(e.back_ms),
            "duration_ms": e.duration_ms(now),
            "ongoing": e.left_ms.is_none(),
        })).collect::<Vec<_>>(),
    });
    if !env.json && list.is_empty() {
        outln!(
            "no connector was in DR mode in the last {since} (connectors report their DR state with --control)"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    output::print(
        env.json,
        &[
            "connector",
            "kind",
            "entered DR mode",
            "left DR mode",
            "in DR mode",
            "back on a normal site",
        ],
        rows,
        json,
    )?;
    Ok(ExitCode::SUCCESS)
}
