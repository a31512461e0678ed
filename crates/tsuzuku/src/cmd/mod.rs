//! The subcommands.

mod admin;
mod connect;
mod control;
mod device;
mod dr;
mod drgateway;
mod drill;
mod keys;
mod policy;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tsuzuku_audit::{AuditWriter, EventKind, Spooled};
use tsuzuku_config::Config;
use tsuzuku_gateway::{Gateway, GatewaySettings};
use tsuzuku_identity::oidc::{OidcClient, OidcSettings};
use tsuzuku_identity::throttle::LockoutPolicy;
use tsuzuku_identity::{password, totp};
use tsuzuku_store::{NewApp, NewUser, PolicyDoc};

use crate::cli::{Cli, Command, InitArgs, QuickstartArgs, ServeArgs};
use crate::env::{self, Env};
use crate::outln;
use crate::{demo, localca};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Quickstart(a) => quickstart(&cli.data_dir, a).await,
        Command::Init(a) => {
            init(&cli.data_dir, &a).await?;
            outln!("Initialised {}", cli.data_dir.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            serve(&env, a, None).await
        }
        Command::User(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            admin::user(&env, c).await
        }
        Command::App(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            admin::app(&env, c).await
        }
        Command::Policy(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            policy::run(&env, c).await
        }
        Command::Audit(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            admin::audit(&env, c).await
        }
        Command::Connect(a) => match a.command {
            Some(crate::cli::ConnectCmd::Status { proxy }) => connect::status(proxy).await,
            Some(crate::cli::ConnectCmd::Enroll {
                control,
                control_ca,
                token,
                name,
                device_dir,
            }) => device::enroll(control, control_ca, token, name, device_dir).await,
            None => connect::run(*a).await,
        },
        Command::Site(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            admin::site(&env, c).await
        }
        Command::Dr(crate::cli::DrCmd::Drill { since }) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            drill::run(&env, &since).await
        }
        Command::Dr(c) => dr::run(c, json).await,
        Command::Keys(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            keys::run(&env, c).await
        }
        Command::Device(c) => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            device::run(&env, c).await
        }
        Command::Status => {
            let env = Env::load(&cli.data_dir, cli.config.as_deref(), json)?;
            control::status(&env).await
        }
    }
}

/// Creates a data directory: configuration, TLS files from a local CA, and the store.
/// Refuses to touch an existing configuration.
async fn init(dir: &std::path::Path, a: &InitArgs) -> Result<Env> {
    let cfg_path = dir.join("tsuzuku.toml");
    if cfg_path.exists() {
        bail!(
            "{} already exists; remove the data directory first or use another --data-dir",
            cfg_path.display()
        );
    }
    create_private_dir(dir)?;
    let mut config = Config::default();
    config.gateway.listen = a.listen;
    let port = a.listen.port();
    let suffix = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    config.gateway.portal_host = match &a.portal_host {
        // Checked here so that the error names the flag, not a file not written yet.
        Some(h) if !tsuzuku_config::valid_host_port(h) => bail!(
            "--portal-host {h:?} is not valid: use a lowercase host name with an optional :port, such as auth.example.com"
        ),
        Some(h) => h.clone(),
        None => format!("auth.localhost{suffix}"),
    };
    config.gateway.timezone = jiff::tz::TimeZone::system()
        .iana_name()
        .filter(|n| jiff::tz::TimeZone::get(n).is_ok())
        .unwrap_or("UTC")
        .to_owned();
    config
        .validate(&cfg_path)
        .context("the generated configuration is not valid")?;
    let tls = localca::TlsFiles::in_dir(&dir.join("tls"));
    let portal_name = config
        .gateway
        .portal_host
        .rsplit_once(':')
        .map(|(h, _)| h.to_owned())
        .unwrap_or_else(|| config.gateway.portal_host.clone());
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "auth.localhost".into(),
        "demo.localhost".into(),
        portal_name,
        "127.0.0.1".into(),
    ];
    for n in &a.tls_names {
        let host = n.rsplit_once(':').map(|(h, _)| h).unwrap_or(n);
        if !tsuzuku_config::valid_host_port(host) {
            bail!("--tls-name {n:?} is not a valid lowercase host name");
        }
        names.push(host.to_owned());
    }
    names.sort();
    names.dedup();
    localca::create(&tls, &names)?;
    std::fs::write(&cfg_path, config.to_toml()?)
        .with_context(|| format!("writing {}", cfg_path.display()))?;
    let env = Env::load(dir, None, false)?;
    env.store().await?;
    Ok(env)
}

fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

const QUICKSTART_POLICY: &str = r#"// Quick start: administrators who signed in with two factors may use every app.
permit (
    principal in Tsuzuku::Group::"admins",
    action in Tsuzuku::Action::"access",
    resource
) when { principal.mfa };
"#;

/// Makes a data directory ready for the quick start: whatever `init` or an earlier run left is
/// reused, whatever is missing (the directory, the admin user, a policy, the demo app) is
/// created, and the output says which. Run twice, it changes nothing but the demo app's
/// upstream port.
async fn quickstart(dir: &std::path::Path, a: QuickstartArgs) -> Result<ExitCode> {
    let fresh = !dir.join("tsuzuku.toml").exists();
    let env = if fresh {
        init(
            dir,
            &InitArgs {
                listen: a.listen,
                portal_host: None,
                tls_names: Vec::new(),
            },
        )
        .await?
    } else {
        Env::load(dir, None, false)?
    };
    let store = env.store().await?;
    let mut reused: Vec<String> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    if fresh {
        outln!("Created data directory {}", dir.display())?;
    } else {
        outln!("Reusing data directory {}", dir.display())?;
    }

    // The admin user: its one-time password and TOTP enrolment are shown only when created.
    let admin_credentials = match store.get_user_by_name("admin").await? {
        Some(_) => {
            reused.push("the admin user".into());
            None
        }
        None => {
            let pw = admin::generate_password();
            let secret = totp::generate_secret();
            let user = store
                .create_user(
                    NewUser {
                        username: "admin".into(),
                        display_name: "Administrator".into(),
                        email: None,
                        password_hash: Some(password::hash(&pw)?),
                        totp_secret: Some(secret.clone()),
                        groups: vec!["admins".into()],
                    },
                    tsuzuku_gateway::now_unix(),
                )
                .await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "user.add", "user": user.username, "groups": user.groups, "totp": true, "via": "quickstart"}),
            )
            .await?;
            created.push("the admin user".into());
            Some((pw, secret))
        }
    };

    // A policy: the active set is kept if there is one; otherwise admins with MFA may use
    // every app.
    match store.current_policy().await? {
        Some(p) if !p.docs.is_empty() => reused.push(format!("policy version {}", p.version)),
        current => {
            let base = current.map_or(0, |p| p.version);
            let doc = PolicyDoc {
                id: "quickstart-admins".into(),
                text: QUICKSTART_POLICY.into(),
            };
            tsuzuku_policy::validate(&[tsuzuku_policy::PolicyDoc {
                id: &doc.id,
                text: &doc.text,
            }])?;
            let v = store
                .save_policy(
                    base,
                    &env::actor(),
                    "quick start",
                    vec![doc],
                    tsuzuku_gateway::now_unix(),
                )
                .await?;
            env::audit(
                &store,
                EventKind::Policy,
                serde_json::json!({"action": "policy.apply", "version": v, "via": "quickstart"}),
            )
            .await?;
            created.push(format!("the quick-start policy (version {v})"));
        }
    }

    // The demo app listens on a fresh port each run; point its registration there.
    let demo_listener = demo::bind("127.0.0.1:0".parse()?).await?;
    let demo_addr = demo_listener.local_addr()?;
    let port = env.config.gateway.listen.port();
    let suffix = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let demo_host = format!("demo.localhost{suffix}");
    let existing = store.get_app_by_name("demo").await?;
    let upstream = format!("http://{demo_addr}");
    match &existing {
        Some(app) if app.upstream == upstream => reused.push("the demo app".into()),
        _ => {
            let new = NewApp {
                name: "demo".into(),
                host: demo_host.clone(),
                upstream: upstream.clone(),
                data_class: "internal".into(),
                critical: false,
                isolated: false,
            };
            admin::check_new_app(&env.config.gateway.portal_host, &new)?;
            if existing.is_some() {
                store.delete_app("demo").await?;
                env::audit(
                    &store,
                    EventKind::Admin,
                    serde_json::json!({"action": "app.remove", "app": "demo", "via": "quickstart"}),
                )
                .await?;
                reused.push("the demo app (registered again at its new local port)".into());
            } else {
                created.push("the demo app".into());
            }
            store.create_app(new, tsuzuku_gateway::now_unix()).await?;
            env::audit(
                &store,
                EventKind::Admin,
                serde_json::json!({"action": "app.add", "app": "demo", "host": demo_host, "upstream": upstream, "via": "quickstart"}),
            )
            .await?;
        }
    }

    if !fresh {
        if !reused.is_empty() {
            outln!("  Reused:  {}", reused.join(", "))?;
        }
        if !created.is_empty() {
            outln!("  Created: {}", created.join(", "))?;
        }
    }
    if let Some((pw, secret)) = admin_credentials {
        outln!()?;
        outln!("  Admin user:        admin")?;
        outln!("  One-time password: {pw}")?;
        outln!(
            "  TOTP enrolment:    {}",
            totp::provisioning_uri(&secret, "admin", "Tsuzuku")?
        )?;
        outln!(
            "  (shown only now: add the TOTP URI to an authenticator app and keep the password safe;"
        )?;
        outln!("   `tsuzuku user passwd admin` sets a new password)")?;
    } else {
        outln!(
            "  (the admin's password was shown when it was created; `tsuzuku user passwd admin` sets a new one)"
        )?;
    }
    let ca = env.data_dir.join("tls").join("ca.pem");
    outln!()?;
    outln!(
        "  Sign-in portal:    https://{}/",
        env.config.gateway.portal_host
    )?;
    outln!("  Demo app:          https://{demo_host}/")?;
    outln!(
        "  Trust this CA:     {}",
        std::path::absolute(&ca).unwrap_or(ca).display()
    )?;
    outln!(
        "  Health:            https://{}/healthz",
        env.config.gateway.listen
    )?;
    outln!()?;
    if a.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    serve(
        &env,
        ServeArgs {
            role: crate::cli::Role::Gateway,
            node_id: None,
        },
        Some(demo_listener),
    )
    .await
}

fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}", std::process::id())
}

/// Runs the gateway (and, in the quick start, the demo app) until SIGINT/SIGTERM.
async fn serve(
    env: &Env,
    a: ServeArgs,
    demo_listener: Option<tokio::net::TcpListener>,
) -> Result<ExitCode> {
    if let crate::cli::Role::Control = a.role {
        return control::serve(env, shutdown_signal()).await;
    }
    let c = &env.config;
    let dr = matches!(a.role, crate::cli::Role::DrGateway);
    let node = a.node_id.clone().unwrap_or_else(node_id);
    let store = match (&c.snapshot, dr) {
        (Some(_), false) => env.store_for_snapshot_gateway().await?,
        _ => env.store().await?,
    };
    // A DR gateway mirrors the control plane's snapshots into its own local store and serves
    // from that store: it needs nothing else alive.
    let mut dr_follow = None;
    let mut dr_upload = None;
    if dr {
        let sn = c.snapshot.as_ref().context(
            "--role dr-gateway runs from the control plane's snapshots: configure [snapshot] (docs/CONTINUITY.md)",
        )?;
        if !c.store.url.starts_with("sqlite:") {
            bail!(
                "a DR gateway keeps its own local copy: store.url must be a sqlite: URL, not the control plane's database"
            );
        }
        let feed = feed_settings(env, sn, "dr-gateway")?;
        dr_upload = Some(drgateway::Uploader::new(&feed, &node, &env.data_dir));
        let follower = tsuzuku_gateway::SnapshotFollower::new(feed, store.tenant_id(), &node)?;
        let first = follower
            .initial(Duration::from_millis(sn.start_timeout_ms))
            .await?;
        drgateway::mirror(&store, &first.body).await?;
        dr_follow = Some((follower, first.body.version));
    }
    // Decisions are audited into the store; while it cannot take writes (a lost primary, a
    // standby not yet promoted) they go to a local spool and are shipped later (OPS-1).
    let spool_name = match &a.node_id {
        Some(n) => n.clone(),
        // Two gateways may share a data directory on one machine, listening on different
        // addresses with the same port: each has a spool of its own.
        None if c.gateway.listen.ip().is_unspecified() => {
            format!("gateway-{}", c.gateway.listen.port())
        }
        None => format!(
            "gateway-{}-{}",
            c.gateway.listen.ip().to_string().replace(':', "_"),
            c.gateway.listen.port()
        ),
    };
    let spool_path = env
        .data_dir
        .join("audit-spool")
        .join(format!("{spool_name}.jsonl"));
    // The spool is locked while this process runs: a second process on the same data dir and
    // port (or node id) stops here, before its drainer could ship the same events again, with
    // a one-line error naming the spool.
    let backend = Arc::new(Spooled::open(store.clone(), spool_path)?);
    // Before spools were named per listen address they were named by port alone: a spool an
    // earlier version left under that name is taken over, so none of its events is stranded.
    if a.node_id.is_none() && !c.gateway.listen.ip().is_unspecified() {
        let legacy = env
            .data_dir
            .join("audit-spool")
            .join(format!("gateway-{}.jsonl", c.gateway.listen.port()));
        backend.adopt(&legacy)?;
    }
    let _drainer = backend.spawn_drainer(Duration::from_secs(1));
    let (audit, audit_task) = AuditWriter::spawn(backend, 4096);
    let oidc_settings = match &c.oidc {
        None => None,
        Some(o) => {
            let ca_pem =
                match &o.ca_file {
                    Some(p) => Some(std::fs::read(env.path(p)).with_context(|| {
                        format!("reading oidc.ca_file {}", env.path(p).display())
                    })?),
                    None => None,
                };
            Some(OidcSettings {
                issuer: o.issuer.clone(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.clone(),
                redirect_url: format!("https://{}/.tsuzuku/oidc/callback", c.gateway.portal_host),
                scopes: o.scopes.clone(),
                groups_claim: o.groups_claim.clone(),
                username_claim: o.username_claim.clone(),
                ca_pem,
            })
        }
    };
    let settings = GatewaySettings {
        portal_host: c.gateway.portal_host.clone(),
        tz: jiff::tz::TimeZone::get(&c.gateway.timezone)?,
        trusted_proxies: c.gateway.trusted_proxies.clone(),
        idle_timeout_secs: c.session.idle_timeout_secs,
        absolute_timeout_secs: c.session.absolute_timeout_secs,
        assertion_ttl_secs: i64::try_from(c.gateway.assertion_ttl_secs).unwrap_or(60),
        header_read_timeout: Duration::from_secs(c.gateway.header_read_timeout_secs),
        max_header_bytes: c.gateway.max_header_bytes,
        lockout: LockoutPolicy {
            max_failures: c.login.max_failures,
            lock_secs: c.login.lockout_secs,
            ..LockoutPolicy::default()
        },
        login_attempts_per_minute: c.login.attempts_per_minute_per_ip,
        reload_interval: Duration::from_millis(c.gateway.reload_interval_ms),
        node_id: node.clone(),
        sso_label: c.oidc.as_ref().map(|o| o.display_name.clone()),
        posture_max_age_secs: i64::try_from(c.gateway.posture_max_age_secs).unwrap_or(300),
        device_sign_in: c.gateway.device_sign_in,
        path_rules: tsuzuku_httpguard::path::PathRules {
            parameters: c.gateway.path_parameters,
        },
    };
    // One attempt before serving; if the provider is down, keep trying in the background.
    let mut oidc = None;
    let mut retry = None;
    if let Some(o) = oidc_settings {
        match tokio::time::timeout(Duration::from_secs(10), OidcClient::discover(o.clone())).await {
            Ok(Ok(client)) => oidc = Some(client),
            Ok(Err(e)) => {
                tracing::warn!(issuer = %o.issuer, error = %e, "single sign-on provider unavailable; retrying in the background");
                retry = Some(o);
            }
            Err(_) => {
                tracing::warn!(issuer = %o.issuer, "single sign-on provider did not answer within 10 s; retrying in the background");
                retry = Some(o);
            }
        }
    }
    let gw: Arc<Gateway> = match &c.snapshot {
        None => Gateway::new(settings, store.clone(), audit, oidc).await?,
        Some(_) if dr => Gateway::new(settings, store.clone(), audit, oidc).await?,
        Some(sn) => {
            Gateway::with_feed(
                settings,
                store.clone(),
                audit,
                oidc,
                feed_settings(env, sn, "gateway")?,
                Duration::from_millis(sn.start_timeout_ms),
            )
            .await?
        }
    };
    if let Some(o) = retry {
        spawn_oidc_discovery(&gw, o);
    }
    let tls = gw.tls_config(
        &env.path(&c.gateway.tls_cert),
        &env.path(&c.gateway.tls_key),
    )?;
    let listener = tokio::net::TcpListener::bind(c.gateway.listen)
        .await
        .with_context(|| format!("cannot listen on {} (gateway.listen)", c.gateway.listen))?;
    let _reloader = gw.spawn_reloader();
    if let Some((follower, have)) = dr_follow {
        let mut snapshots = follower.spawn(have);
        let local = store.clone();
        tokio::spawn(async move {
            while let Some(v) = snapshots.recv().await {
                if let Err(e) = drgateway::mirror(&local, &v.body).await {
                    tracing::error!(error = %format!("{e:#}"), version = v.body.version, "cannot mirror the snapshot; serving the previous copy");
                }
            }
        });
    }
    // A DR gateway uploads its own audit events whenever the control plane is reachable.
    let _uploader = match dr_upload {
        Some(u) => Some(u.spawn(store.clone()).context("the DR audit uploader")?),
        None => None,
    };
    if let Some(l) = demo_listener {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(gw.jwks())?;
        let issuer = format!("https://{}", c.gateway.portal_host);
        tokio::spawn(async move {
            if let Err(e) = demo::serve(l, jwks, issuer).await {
                tracing::error!(error = %e, "demo app stopped");
            }
        });
    }
    tracing::info!(listen = %c.gateway.listen, portal = %c.gateway.portal_host, node = %gw.settings().node_id, "gateway serving");
    // A server keeps serving when nobody reads its output any more.
    let _ = outln!("READY https://{}", listener.local_addr()?);
    tsuzuku_gateway::serve(gw, listener, tls, shutdown_signal()).await?;
    // Every queued audit event is written before the process exits.
    let _ = tokio::time::timeout(Duration::from_secs(5), audit_task).await;
    Ok(ExitCode::SUCCESS)
}

/// The `[snapshot]` settings as the gateway crate takes them.
fn feed_settings(
    env: &Env,
    sn: &tsuzuku_config::SnapshotConfig,
    role: &str,
) -> Result<tsuzuku_gateway::FeedSettings> {
    let trust_path = env.path(&sn.trust);
    // Re-read when it changes: a signing-key rotation needs no gateway restart.
    let trusted = std::sync::Arc::new(
        tsuzuku_snapshot::TrustFile::open(&trust_path)
            .with_context(|| format!("snapshot.trust {}", trust_path.display()))?,
    );
    let token_path = env.path(&sn.node_token_file);
    let node_token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading snapshot.node_token_file {}", token_path.display()))?
        .trim()
        .to_owned();
    let ca_pem = match &sn.ca_file {
        Some(p) => Some(
            std::fs::read(env.path(p))
                .with_context(|| format!("reading snapshot.ca_file {}", env.path(p).display()))?,
        ),
        None => None,
    };
    let cache_dir = env.path(&sn.cache_dir);
    let cache = tsuzuku_snapshot::DiskCache::open(
        &cache_dir,
        env.master_key(false)
            .context("the snapshot cache is sealed with the master key ([keys])")?,
        tsuzuku_gateway::now_unix(),
    )
    .with_context(|| format!("snapshot.cache_dir {}", cache_dir.display()))?;
    Ok(tsuzuku_gateway::FeedSettings {
        control_url: sn.control_url.clone(),
        node_token,
        trusted,
        ca_pem,
        cache,
        role: role.into(),
        site: sn.site.clone(),
    })
}

/// Discovers the OIDC provider, retrying until it answers: the gateway serves local sign-ins
/// and existing sessions meanwhile, and the SSO button says the provider is unreachable.
fn spawn_oidc_discovery(gw: &Arc<Gateway>, settings: OidcSettings) {
    let weak = Arc::downgrade(gw);
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            match OidcClient::discover(settings.clone()).await {
                Ok(client) => {
                    if let Some(gw) = weak.upgrade() {
                        gw.set_oidc(client);
                        tracing::info!(issuer = %settings.issuer, "single sign-on provider ready");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(issuer = %settings.issuer, error = %e, retry_in = ?delay, "single sign-on provider unavailable");
                }
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
