//! Tsuzuku's configuration file (`tsuzuku.toml`): its typed form, defaults, and validation.
//!
//! Loading happens in two stages, like ripgrep's flags: the TOML text is parsed into raw serde
//! structs that refuse unknown keys and wrong types, then [`Config::validate`] checks what types
//! cannot (time zones, host names, ranges). Every error names the file, the key and what was
//! expected.
//!
//! Architecture invariant: this crate knows nothing about sockets, SQL or policies. It only
//! describes and checks settings; the binary turns them into running components.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cause is part of the message, not a `source`: printed once.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub login: LoginConfig,
    /// Single sign-on through an OpenID Connect provider; absent means local accounts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
    /// Encryption at rest: where the master key comes from (docs/ENCRYPTION.md).
    #[serde(default)]
    pub keys: KeysConfig,
    /// The control plane (`tsuzuku serve --role control`): where it publishes snapshots.
    #[serde(default)]
    pub control: ControlConfig,
    /// A gateway fed by the control plane's signed snapshots instead of reading its
    /// configuration from the store; absent means the gateway reads the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotConfig>,
}

/// `[control]`: the control plane's HTTPS endpoint (docs/STORAGE.md, "Snapshots").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    /// File holding the shared token gateways present, relative to the data directory.
    pub node_token_file: PathBuf,
    /// File holding the token DR gateways present: only it gets the snapshot variant with
    /// credential verifiers, so an ordinary gateway's token never yields password hashes or
    /// TOTP secrets.
    pub dr_token_file: PathBuf,
    /// How often the store is read for changes to publish.
    pub publish_interval_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            node_token_file: PathBuf::from("keys/node-token"),
            dr_token_file: PathBuf::from("keys/dr-node-token"),
            publish_interval_ms: 1000,
        }
    }
}

/// `[snapshot]`: where a gateway gets its signed configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Base URL of the control plane, e.g. `https://control.example:9443`.
    pub control_url: String,
    /// The control plane's snapshot public key(s), PEM (`tsuzuku keys snapshot-public`).
    pub trust: PathBuf,
    /// File holding the node token.
    #[serde(default = "default_node_token_file")]
    pub node_token_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Where the last good snapshot is kept (sealed with the master key).
    #[serde(default = "default_snapshot_cache")]
    pub cache_dir: PathBuf,
    /// How long a starting gateway waits for the control plane before using its disk copy.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_ms: u64,
    /// The gateway site this node belongs to (as in `tsuzuku site add`): it then reports its
    /// load every 2 s, from which the control plane tells connectors to shed load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

fn default_node_token_file() -> PathBuf {
    PathBuf::from("keys/node-token")
}
fn default_snapshot_cache() -> PathBuf {
    PathBuf::from("snapshot-cache")
}
fn default_start_timeout() -> u64 {
    3000
}

/// Encryption at rest (`[keys]`): secrets and personal data in the store are sealed under data
/// keys wrapped by a master key kept outside the database. At most one of `master_key_file`,
/// `master_key_env` and `master_key_command` may be set; with none, the key file
/// [`DEFAULT_MASTER_KEY_FILE`] in the data directory is used (created when the store holds no
/// encrypted data yet).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Encrypt at rest (default true). `false` stores new values as given; a store that already
    /// holds data keys refuses to open without its master key.
    pub enabled: bool,
    /// Key file, relative to the data directory unless absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    /// Bring your own key: the environment variable holding the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_env: Option<String>,
    /// Bring your own key: a command (program and arguments, no shell) that prints the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_command: Option<Vec<String>>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            master_key_file: None,
            master_key_env: None,
            master_key_command: None,
        }
    }
}

/// The key file used when `[keys]` names no source, relative to the data directory: apart from
/// the database file, in its own directory.
pub const DEFAULT_MASTER_KEY_FILE: &str = "keys/master.key";

/// Where the master key comes from, once the configuration has been validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A key file (as configured: resolve it against the data directory with [`resolve`]).
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command's standard output.
    Command(Vec<String>),
}

impl KeysConfig {
    /// The configured source, or the default key file.
    pub fn source(&self) -> MasterKeySource {
        if let Some(var) = &self.master_key_env {
            MasterKeySource::Env(var.clone())
        } else if let Some(argv) = &self.master_key_command {
            MasterKeySource::Command(argv.clone())
        } else {
            MasterKeySource::File(
                self.master_key_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_MASTER_KEY_FILE)),
            )
        }
    }
}

/// Where state lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A `sqlite:` URL; a relative file path is taken relative to the data directory.
    pub url: String,
    /// Tenant whose data this deployment serves.
    pub tenant: String,
    /// PostgreSQL across sites: the control plane (`serve --role control`) promotes the
    /// standby by itself once no writable primary has answered for this long and the fencing
    /// rule holds (docs/STORAGE.md). Unset: promotion is manual (`tsuzuku site promote`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_promote_after_ms: Option<u64>,
    /// `host:port` in a third place that must answer before an automatic promotion (so the
    /// process that promotes is not the one cut off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fencing_witness: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:store.db".to_owned(),
            tenant: "default".to_owned(),
            auto_promote_after_ms: None,
            fencing_witness: None,
        }
    }
}

/// The policy enforcement point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTPS listener binds to.
    pub listen: SocketAddr,
    /// `host[:port]` of the sign-in portal as users' browsers see it.
    pub portal_host: String,
    /// PEM certificate chain and key for the listener (relative to the data directory).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Proxies whose `X-Forwarded-For` is believed (CIDR list). Empty: nobody's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// IANA time zone in which policies see the time of day and weekday.
    pub timezone: String,
    /// A client must finish sending request headers within this many seconds.
    pub header_read_timeout_secs: u64,
    /// Largest request head (request line plus headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Lifetime of the signed identity assertion given to upstreams.
    pub assertion_ttl_secs: u64,
    /// How often the gateway looks for new policies and apps in the store.
    pub reload_interval_ms: u64,
    /// Device posture older than this counts as unknown (the policy sees no `device`).
    pub posture_max_age_secs: u64,
    /// Whether an enrolled device that belongs to a user (`tsuzuku device token --user`) can
    /// sign that user in with its certificate alone (auth method `device`). Off by default;
    /// meant above all for DR gateways, where people who sign in with SSO have no password.
    pub device_sign_in: bool,
    /// Whether request paths may carry `;` parameters (`/page;jsessionid=1`). Off by default:
    /// Tomcat, Jetty and Spring cut them off before routing, so a policy would see
    /// `/admin;x/secret` where the app serves `/admin/secret`. Turn on only for apps that need
    /// them, and write their policies for both forms.
    pub path_parameters: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            portal_host: "auth.localhost:8443".to_owned(),
            tls_cert: PathBuf::from("tls/gateway.pem"),
            tls_key: PathBuf::from("tls/gateway-key.pem"),
            trusted_proxies: Vec::new(),
            timezone: "UTC".to_owned(),
            header_read_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            assertion_ttl_secs: 60,
            reload_interval_ms: 1000,
            posture_max_age_secs: 300,
            device_sign_in: false,
            path_parameters: false,
        }
    }
}

/// Session lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused for this long ends.
    pub idle_timeout_secs: i64,
    /// A session ends this long after sign-in, however active.
    pub absolute_timeout_secs: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 12 * 3600,
        }
    }
}

/// Failed-login throttling.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Failures in a row before an account is locked.
    pub max_failures: u32,
    /// First lockout length; each further failure doubles it, up to a day.
    pub lockout_secs: i64,
    /// Login attempts one source address may make per minute.
    pub attempts_per_minute_per_ip: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lockout_secs: 900,
            attempts_per_minute_per_ip: 30,
        }
    }
}

/// An OpenID Connect identity provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Label of the sign-in button.
    #[serde(default = "default_display_name")]
    pub display_name: String,
    /// Extra CA certificate (PEM) to trust for the provider, relative to the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_display_name() -> String {
    "single sign-on".into()
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if !self.store.url.starts_with("sqlite:") && !self.store.url.starts_with("postgres") {
            return Err(invalid(
                "store.url",
                format!(
                    "expected a `sqlite:` or `postgres://` URL, got {:?}",
                    self.store.url
                ),
            ));
        }
        if self
            .store
            .auto_promote_after_ms
            .is_some_and(|ms| !(1_000..=3_600_000).contains(&ms))
        {
            return Err(invalid(
                "store.auto_promote_after_ms",
                "expected 1000 to 3600000 milliseconds".into(),
            ));
        }
        if let Some(w) = &self.store.fencing_witness
            && w.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(invalid(
                "store.fencing_witness",
                format!("expected host:port, got {w:?}"),
            ));
        }
        if !(100..=60_000).contains(&self.control.publish_interval_ms) {
            return Err(invalid(
                "control.publish_interval_ms",
                "expected 100 to 60000 milliseconds".into(),
            ));
        }
        if let Some(sn) = &self.snapshot {
            if !sn.control_url.starts_with("https://") {
                return Err(invalid(
                    "snapshot.control_url",
                    format!(
                        "expected an https:// URL of the control plane, got {:?}",
                        sn.control_url
                    ),
                ));
            }
            if !(100..=600_000).contains(&sn.start_timeout_ms) {
                return Err(invalid(
                    "snapshot.start_timeout_ms",
                    "expected 100 to 600000 milliseconds".into(),
                ));
            }
        }
        if !valid_tenant(&self.store.tenant) {
            return Err(invalid(
                "store.tenant",
                "expected 1-64 characters of a-z, 0-9, '-' or '_'".into(),
            ));
        }
        jiff::tz::TimeZone::get(&self.gateway.timezone).map_err(|_| {
            invalid(
                "gateway.timezone",
                format!(
                    "unknown time zone {:?}; expected an IANA name such as \"Asia/Tokyo\" or \"UTC\"",
                    self.gateway.timezone
                ),
            )
        })?;
        if !valid_host_port(&self.gateway.portal_host) {
            return Err(invalid(
                "gateway.portal_host",
                format!(
                    "expected a lowercase host name with an optional :port, got {:?}",
                    self.gateway.portal_host
                ),
            ));
        }
        if !(1..=300).contains(&self.gateway.header_read_timeout_secs) {
            return Err(invalid(
                "gateway.header_read_timeout_secs",
                "expected 1 to 300 seconds".into(),
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.gateway.max_header_bytes) {
            return Err(invalid(
                "gateway.max_header_bytes",
                "expected 1024 to 1048576 bytes".into(),
            ));
        }
        if !(5..=3600).contains(&self.gateway.assertion_ttl_secs) {
            return Err(invalid(
                "gateway.assertion_ttl_secs",
                "expected 5 to 3600 seconds".into(),
            ));
        }
        if !(5..=86_400).contains(&self.gateway.posture_max_age_secs) {
            return Err(invalid(
                "gateway.posture_max_age_secs",
                "expected 5 to 86400 seconds".into(),
            ));
        }
        if !(50..=60_000).contains(&self.gateway.reload_interval_ms) {
            return Err(invalid(
                "gateway.reload_interval_ms",
                "expected 50 to 60000 milliseconds".into(),
            ));
        }
        if self.session.idle_timeout_secs < 60 {
            return Err(invalid(
                "session.idle_timeout_secs",
                "expected at least 60 seconds".into(),
            ));
        }
        if self.session.absolute_timeout_secs < self.session.idle_timeout_secs {
            return Err(invalid(
                "session.absolute_timeout_secs",
                "expected at least session.idle_timeout_secs".into(),
            ));
        }
        if self.login.max_failures == 0 {
            return Err(invalid("login.max_failures", "expected at least 1".into()));
        }
        if self.login.lockout_secs < 1 {
            return Err(invalid(
                "login.lockout_secs",
                "expected at least 1 second".into(),
            ));
        }
        if self.login.attempts_per_minute_per_ip == 0 {
            return Err(invalid(
                "login.attempts_per_minute_per_ip",
                "expected at least 1".into(),
            ));
        }
        if let Some(oidc) = &self.oidc {
            let ok_scheme =
                oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://");
            if !ok_scheme {
                return Err(invalid(
                    "oidc.issuer",
                    format!("expected an http(s) URL, got {:?}", oidc.issuer),
                ));
            }
            if oidc.client_id.is_empty() {
                return Err(invalid("oidc.client_id", "must not be empty".into()));
            }
            if !oidc.scopes.iter().any(|s| s == "openid") {
                return Err(invalid("oidc.scopes", "must include \"openid\"".into()));
            }
        }
        self.validate_keys(path)
    }

    fn validate_keys(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let k = &self.keys;
        let set = usize::from(k.master_key_file.is_some())
            + usize::from(k.master_key_env.is_some())
            + usize::from(k.master_key_command.is_some());
        if set > 1 {
            return Err(invalid(
                "keys",
                "expected at most one of master_key_file, master_key_env and master_key_command; \
                 the master key must come from exactly one source"
                    .into(),
            ));
        }
        if let Some(file) = &k.master_key_file
            && file.as_os_str().is_empty()
        {
            return Err(invalid(
                "keys.master_key_file",
                "expected a file path such as \"keys/master.key\", got an empty string".into(),
            ));
        }
        if let Some(var) = &k.master_key_env
            && !valid_env_name(var)
        {
            return Err(invalid(
                "keys.master_key_env",
                format!(
                    "expected an environment variable name of A-Z, a-z, 0-9 and '_' not starting with a digit, such as \"TSUZUKU_MASTER_KEY\", got {var:?}"
                ),
            ));
        }
        if let Some(argv) = &k.master_key_command
            && argv.first().is_none_or(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "keys.master_key_command",
                "expected a list of a program and its arguments, such as [\"vault\", \"kv\", \"get\", \"-field=key\", \"secret/tsuzuku\"]; the program must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The configuration as TOML text (used by `quickstart` to write a starting file).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<generated>"),
            message: e.to_string(),
        })
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One line: where (line, the line's text) and what toml said.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or("");
            let line_no = before.matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("line {line_no} (`{line}`): {msg}")
        }
        None => msg,
    }
}

/// Resolves `p` against `base` unless it is absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `host` or `host:port` with a lowercase DNS name (labels of a-z, 0-9 and '-').
pub fn valid_host_port(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().map(|p| p == 0).unwrap_or(true)
    {
        return false;
    }
    is_dns_name(host) && !host.bytes().any(|b| b.is_ascii_uppercase())
}

/// A DNS host name: dot-separated labels of 1–63 letters, digits and '-' (not at either end),
/// 253 characters at most. Letter case is the caller's concern.
pub fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
