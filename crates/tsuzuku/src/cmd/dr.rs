//! `tsuzuku dr`: the disaster-recovery trigger record — a signing key pair, a signed record's
//! TXT value, and what connectors would conclude from the published record. The format,
//! signing and checking are `tsuzuku-dr`'s; this module reads files and flags and prints.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tsuzuku_dr::check::{self, CLOCK_SKEW_SECS, Conclusion, Member, Rejection};
use tsuzuku_dr::keys::{self, TrustedKeys};
use tsuzuku_dr::lookup::{Answer, Transport, TxtLookup};
use tsuzuku_dr::record::{self, DrState, InternetMode, RecordFields};

use crate::cli::{DrCheckArgs, DrCmd, DrInternetArg, DrRecordArgs, DrStateArg};
use crate::outln;

const PRIVATE_FILE: &str = "dr-signing-key.pem";
const PUBLIC_FILE: &str = "dr-public-key.pem";

pub async fn run(c: DrCmd, json: bool) -> Result<ExitCode> {
    match c {
        DrCmd::Keygen { out } => keygen(&out, json),
        DrCmd::Record(a) => record(a, json),
        DrCmd::Check(a) => check(a, json).await,
        // Needs the control plane's store: run from `cmd::run`, which loads the data directory.
        DrCmd::Drill { .. } => bail!("tsuzuku dr drill needs the control plane's data directory"),
    }
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A time flag: RFC 3339 or unix seconds.
fn parse_time(flag: &str, text: &str) -> Result<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .with_context(|| format!("{flag} {text:?}: not a unix time"));
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .with_context(|| {
            format!("{flag} {text:?}: expected RFC 3339 (2026-01-01T12:00:00Z) or unix seconds")
        })
}

/// A duration flag: 2h, 90m, 3d, 1h30m, ...
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    let span: jiff::Span = text.parse().with_context(|| {
        format!("{flag} {text:?}: expected a duration such as 30s, 90m, 2h, 3d")
    })?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .with_context(|| format!("{flag} {text:?}: not a fixed length of time"))?;
    let d = Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} {text:?}: must be longer than zero"))?;
    Ok(d)
}

fn show_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

fn keygen(dir: &Path, json: bool) -> Result<ExitCode> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let private_path = dir.join(PRIVATE_FILE);
    let public_path = dir.join(PUBLIC_FILE);
    for p in [&private_path, &public_path] {
        if p.exists() {
            bail!(
                "{} already exists; a DR key is never overwritten: choose another --out directory",
                p.display()
            );
        }
    }
    let key = keys::generate();
    let id = keys::key_id(&key.verifying_key());
    let private_pem = keys::signing_key_to_pem(&key)?;
    let public_pem = keys::verifying_key_to_pem(&key.verifying_key())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private_path)
        .with_context(|| format!("creating {}", private_path.display()))?;
    f.write_all(private_pem.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", private_path.display()))?;
    std::fs::write(&public_path, public_pem.as_bytes())
        .with_context(|| format!("writing {}", public_path.display()))?;
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "key_id": id.to_string(),
                "private_key": private_path,
                "public_key": public_path,
            })
        )?;
    } else {
        outln!("DR key id:    {id}")?;
        outln!(
            "Private key:  {} (mode 0600: keep it offline, it can switch every connector)",
            private_path.display()
        )?;
        outln!(
            "Public key:   {} (give it to connectors as a trusted DR key)",
            public_path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn record(a: DrRecordArgs, json: bool) -> Result<ExitCode> {
    let pem = std::fs::read_to_string(&a.key)
        .with_context(|| format!("reading the DR signing key {}", a.key.display()))?;
    let key = keys::signing_key_from_pem(&pem)
        .with_context(|| format!("DR signing key {}", a.key.display()))?;
    let now = now_unix();
    let state = match a.state {
        DrStateArg::On => DrState::On,
        DrStateArg::Off => DrState::Off,
        DrStateArg::Test => DrState::Test,
    };
    let internet = a.internet.map(|m| match m {
        DrInternetArg::Open => InternetMode::Open,
        DrInternetArg::Controlled => InternetMode::Controlled,
        DrInternetArg::Closed => InternetMode::Closed,
    });
    if internet.is_none() && state != DrState::Off {
        bail!(
            "--state {state} needs --internet open|controlled|closed (what devices may reach in DR mode)"
        );
    }
    if internet.is_some() && state == DrState::Off {
        bail!("--state off takes no --internet");
    }
    let not_before = match &a.not_before {
        Some(t) => parse_time("--not-before", t)?,
        None => now - CLOCK_SKEW_SECS,
    };
    let not_after = match (&a.valid_for, &a.not_after) {
        (Some(d), _) => {
            let d = parse_duration("--for", d)?;
            now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        }
        (None, Some(t)) => parse_time("--not-after", t)?,
        (None, None) => bail!("give the validity with --for DURATION or --not-after TIME"),
    };
    let fields = RecordFields {
        state,
        internet,
        issued_at: now,
        not_before,
        not_after,
        groups: a.groups.into_iter().collect(),
        devices: a.devices.into_iter().collect(),
    };
    let value = record::sign(&fields, &key).context("cannot make the DR record")?;
    let strings = record::split_strings(&value);
    let name = a.name.trim_end_matches('.');
    let zone = format!("{name}. 60 IN TXT {}", record::zone_file_strings(&value));
    let quoted: Vec<String> = strings.iter().map(|s| format!("\"{s}\"")).collect();
    // A dnsmasq.conf line: dnsmasq reads quotes (commas inside a string, several strings) only
    // in configuration files, not on its command line.
    let dnsmasq = format!("txt-record={name},{}", quoted.join(","));
    let id = keys::key_id(&key.verifying_key());
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "value": value,
                "strings": strings,
                "zone_file": zone,
                "dnsmasq": dnsmasq,
                "key_id": id.to_string(),
                "issued_at": now,
                "not_before": not_before,
                "not_after": not_after,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "DR record: s={state}{}, valid {} to {}, signed by key {id}",
        internet
            .map(|m| format!(", internet {m}"))
            .unwrap_or_default(),
        show_time(not_before),
        show_time(not_after)
    )?;
    outln!()?;
    outln!(
        "TXT value ({} bytes, {} string(s) of at most 255 bytes):",
        value.len(),
        strings.len()
    )?;
    outln!("{value}")?;
    outln!()?;
    outln!("Zone file:")?;
    outln!("{zone}")?;
    outln!()?;
    outln!("dnsmasq (a line for dnsmasq.conf or a file given with --conf-file):")?;
    outln!("{dnsmasq}")?;
    Ok(ExitCode::SUCCESS)
}

/// The JSON form of a conclusion.
fn conclusion_json(name: &str, c: &Conclusion) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "verified": c.record.is_some(),
        "dr_active": c.dr_active(),
        "internet": c.dr.map(|d| d.internet.to_string()),
        "until": c.dr.map(|d| d.until),
        "drill": c.dr.map(|d| d.drill).unwrap_or(false),
        "issued_at": c.issued_at(),
        "state": c.record.as_ref().map(|r| r.state().to_string()),
        "key_id": c.record.as_ref().map(|r| r.key_id().to_string()),
        "reason": format!("{:?}", c.reason),
    })
}

async fn check(a: DrCheckArgs, json: bool) -> Result<ExitCode> {
    let mut trusted = TrustedKeys::new();
    for p in &a.trust {
        let pem = std::fs::read_to_string(p)
            .with_context(|| format!("reading the trusted DR key {}", p.display()))?;
        trusted
            .insert_pem(&pem)
            .with_context(|| format!("trusted DR key {}", p.display()))?;
    }
    let transport: Transport = match &a.nameserver {
        Some(s) => s.parse().context("--nameserver")?,
        None => Transport::System,
    };
    let transport = match &a.nameserver_ca {
        Some(ca) => transport.with_ca_file(ca).context("--nameserver-ca")?,
        None => transport,
    };
    let timeout = parse_duration("--timeout", &a.timeout)?;
    let now = match &a.at {
        Some(t) => parse_time("--at", t)?,
        None => now_unix(),
    };
    let member = Member {
        groups: a.groups.clone(),
        device_id: a.device.clone(),
    };
    let lookup = TxtLookup::new(&transport, timeout)?;
    let name = a.name.trim_end_matches('.');
    let answer = lookup.lookup(name).await.with_context(|| {
        format!("DNS lookup via {transport} failed (connectors keep their last verified state)")
    })?;
    let records = match answer {
        Answer::Withdrawn { nxdomain } => {
            let what = if nxdomain {
                "the name does not exist (NXDOMAIN)"
            } else {
                "the name has no TXT record"
            };
            if json {
                let mut v = conclusion_json(name, &check::withdrawn());
                if let Some(o) = v.as_object_mut() {
                    o.insert("nxdomain".into(), serde_json::json!(nxdomain));
                }
                outln!("{v}")?;
            } else {
                outln!("No DR record at {name}: {what}.")?;
                outln!("Connectors conclude: normal mode (a withdrawn record ends DR mode).")?;
            }
            return Ok(ExitCode::from(2));
        }
        Answer::Records(r) => r,
    };
    // As a connector does: the newest record that verifies and is valid now wins.
    let mut best: Option<Conclusion> = None;
    let mut rejections: Vec<Rejection> = Vec::new();
    for strings in &records {
        match check::check(strings, &trusted, now, None, &member) {
            Ok(c) => {
                if best.as_ref().is_none_or(|b| c.issued_at() > b.issued_at()) {
                    best = Some(c);
                }
            }
            Err(e) => rejections.push(e),
        }
    }
    let Some(c) = best else {
        let first = rejections
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "no TXT record".into());
        let more = if rejections.len() > 1 {
            format!(
                " (and {} more TXT record(s) rejected)",
                rejections.len() - 1
            )
        } else {
            String::new()
        };
        bail!(
            "DR record at {name} rejected: {first}{more}; connectors ignore it and keep their last verified state"
        );
    };
    if json {
        outln!("{}", conclusion_json(name, &c))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(r) = &c.record else {
        bail!("internal: a verified conclusion without its record");
    };
    let f = r.fields();
    outln!(
        "DR record at {name} (via {transport}): verified, signed by key {}",
        r.key_id()
    )?;
    outln!(
        "  s={}{}, issued {}, valid {} to {}",
        f.state,
        f.internet.map(|m| format!(", m={m}")).unwrap_or_default(),
        show_time(f.issued_at),
        show_time(f.not_before),
        show_time(f.not_after)
    )?;
    if !f.groups.is_empty() || !f.devices.is_empty() {
        outln!(
            "  drill for groups [{}] devices [{}]",
            f.groups.iter().cloned().collect::<Vec<_>>().join(", "),
            f.devices.iter().cloned().collect::<Vec<_>>().join(", ")
        )?;
    }
    match &c.dr {
        Some(dr) => outln!(
            "Connectors conclude: DR mode{} — internet {} until {}",
            if dr.drill { " (drill)" } else { "" },
            dr.internet,
            show_time(dr.until)
        )?,
        None => outln!("Connectors conclude: normal mode ({c})")?,
    }
    for e in &rejections {
        eprintln!("warning: another TXT record at {name} was rejected: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
