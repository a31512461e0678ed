//! The command line: one definition per flag drives parsing and `--help`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tsuzuku: a zero-trust access gateway that keeps going.
#[derive(Debug, Parser)]
#[command(name = "tsuzuku", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory: holds tsuzuku.toml, the embedded store, keys and certificates.
    #[arg(
        long,
        global = true,
        env = "TSUZUKU_DATA_DIR",
        default_value = "tsuzuku-data"
    )]
    pub data_dir: PathBuf,
    /// Configuration file (default: <data-dir>/tsuzuku.toml).
    #[arg(long, global = true, env = "TSUZUKU_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create (or reuse) a data directory with an admin, a demo app and a local CA, and serve.
    Quickstart(QuickstartArgs),
    /// Create a data directory with a default configuration and keys, without serving.
    Init(InitArgs),
    /// Run a role.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage applications.
    #[command(subcommand)]
    App(AppCmd),
    /// Manage and test policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run the device agent: a local proxy and PAC file that send the app domains to the best
    /// healthy gateway site, failing over between sites.
    Connect(Box<ConnectArgs>),
    /// The state store's sites: which server is the writable primary; promotion.
    #[command(subcommand)]
    Site(SiteCmd),
    /// Encryption at rest: the master key and the data keys (docs/ENCRYPTION.md).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Disaster recovery: the signed DNS TXT record that puts connectors in DR mode
    /// (docs/CONTINUITY.md).
    #[command(subcommand)]
    Dr(DrCmd),
    /// The deployment at a glance: the store's role, and each gateway node's snapshot version
    /// and age as the control plane last heard.
    Status,
    /// Device trust: enrolment tokens, enrolled devices, revocation (docs/DEVICES.md).
    #[command(subcommand)]
    Device(DeviceCmd),
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Create a one-time enrolment token (printed once) for `tsuzuku connect enroll`.
    Token {
        /// Devices enrolled with this token are company-issued (managed).
        #[arg(long)]
        company_issued: bool,
        /// How long the token can be used (e.g. 30m, 24h, 7d; at most 30d).
        #[arg(long = "valid-for", default_value = "24h")]
        valid_for: String,
        /// The user the device belongs to (a user name): where `[gateway] device_sign_in` is
        /// on, the device's certificate alone signs that user in.
        #[arg(long)]
        user: Option<String>,
    },
    /// List enrolled devices.
    List,
    /// Revoke a device (by id or name): gateways refuse it from then on.
    Revoke { device: String },
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Address for the HTTPS gateway.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Only prepare the data directory and print what would be served; do not serve.
    #[arg(long)]
    pub no_serve: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address for the HTTPS gateway.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Host name (and port) of the sign-in portal.
    #[arg(long)]
    pub portal_host: Option<String>,
    /// Extra host name for the local CA's server certificate (repeatable), e.g. the host names
    /// of the apps you will add. Browsers and rustls do not accept `*.localhost` wildcards.
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which role to run.
    #[arg(long, value_enum, default_value = "gateway")]
    pub role: Role,
    /// Name of this process in logs and audit events (default: host name and pid).
    #[arg(long)]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    /// The policy enforcement point with its sign-in portal. With `[snapshot]` configured it
    /// takes its configuration from the control plane's signed snapshots.
    Gateway,
    /// The control plane: publishes signed gateway snapshots over HTTPS (`[control]`).
    Control,
    /// The disaster-recovery gateway the customer runs in its own data centre: mirrors the
    /// control plane's snapshots (with credential verifiers) into its own local store and
    /// serves the critical apps from it alone (docs/CONTINUITY.md).
    DrGateway,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a local user; prints a generated password unless --password-stdin is given.
    Add {
        username: String,
        /// Display name (default: the user name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Group membership (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Read the password from standard input instead of generating one (at least 12
        /// characters, at most 1024 bytes; trailing line breaks are dropped).
        #[arg(long)]
        password_stdin: bool,
        /// Enrol a TOTP authenticator and print its otpauth:// URI.
        #[arg(long)]
        totp: bool,
    },
    /// List users.
    List,
    /// Disable a user and end their sessions.
    Disable { username: String },
    /// Enable a disabled user.
    Enable { username: String },
    /// Replace a user's TOTP secret (prints the new otpauth:// URI) and end their sessions.
    ResetMfa { username: String },
    /// Set a new password (generated, or from standard input) and end the user's sessions.
    Passwd {
        username: String,
        /// Read the password from standard input instead of generating one (at least 12
        /// characters, at most 1024 bytes).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Register an application behind the gateway.
    Add {
        name: String,
        /// Host name (with :port if not 443) users open, e.g. wiki.example.com.
        #[arg(long)]
        host: String,
        /// Where the gateway forwards to, e.g. http://10.0.0.5:8080.
        #[arg(long)]
        upstream: String,
        /// Data classification policies can use (public, internal, confidential, restricted).
        #[arg(long, default_value = "internal")]
        data_class: String,
        /// Critical app (kept reachable in disaster-recovery mode).
        #[arg(long)]
        critical: bool,
        /// Isolated app (e.g. browser isolation) that unmanaged devices may use.
        #[arg(long)]
        isolated: bool,
    },
    /// List applications.
    List,
    /// Remove an application.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check policy files against the schema without applying them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replace the active policy set with these files (each file is one policy document,
    /// named after the file).
    Apply {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Why (recorded in the history).
        #[arg(long, short, default_value = "")]
        message: String,
    },
    /// List the active policy documents.
    List,
    /// Show what applying these files would change, or the change between two versions.
    Diff {
        files: Vec<PathBuf>,
        #[arg(long)]
        from: Option<i64>,
        #[arg(long)]
        to: Option<i64>,
    },
    /// Show every version: who, when, why.
    History,
    /// Make an earlier version active again (recorded as a new version).
    Rollback {
        #[arg(id = "target_version", value_name = "VERSION")]
        version: i64,
        #[arg(long, short, default_value = "")]
        message: String,
    },
    /// Explain the decision for a user, app and request.
    Test {
        #[arg(long)]
        user: String,
        #[arg(long)]
        app: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "127.0.0.1")]
        ip: IpAddr,
        /// Time of the request (RFC 3339, e.g. 2026-11-23T10:00:00+09:00); default now.
        #[arg(long)]
        at: Option<String>,
        /// Treat the user as signed in with MFA (implied by --auth-method password+totp).
        #[arg(long)]
        mfa: bool,
        /// Authentication method to assume (password, password+totp, oidc, device).
        #[arg(long)]
        auth_method: Option<String>,
        /// Seconds since the user signed in (policies see `auth_age_secs`); default 0.
        #[arg(long, default_value_t = 0)]
        auth_age: u64,
        /// The request comes from an enrolled device (a personal one unless --company-issued).
        /// The other device flags imply it; without any, the request has no device, as from a
        /// browser without a device certificate.
        #[arg(long)]
        device: bool,
        /// The device is company-issued (managed).
        #[arg(long)]
        company_issued: bool,
        /// The device's operating system and its version, e.g. windows 10.0.22631.
        #[arg(long, num_args = 2, value_names = ["OS", "VERSION"])]
        os: Vec<String>,
        /// The device's system disk is encrypted.
        #[arg(long)]
        disk_encrypted: bool,
        /// The device runs antivirus of this version (e.g. 4.18.24030.9).
        #[arg(long, value_name = "VERSION")]
        antivirus: Option<String>,
        /// Policy files to test instead of the active set.
        #[arg(long = "file")]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConnectArgs {
    #[command(subcommand)]
    pub command: Option<ConnectCmd>,
    /// Loopback address of the local proxy (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3128")]
    pub listen: SocketAddr,
    /// A gateway site, most preferred first: NAME=HOST@ADDR[,ADDR...] — the gateway's host name
    /// (TLS name and Host of health probes) and its nodes' addresses.
    #[arg(long = "site")]
    pub sites: Vec<String>,
    /// A domain (with its subdomains) whose traffic goes through the gateway (repeatable).
    #[arg(long = "app-domain")]
    pub app_domains: Vec<String>,
    /// CA certificate (PEM) the gateways' certificates are issued by.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Ports apps may be reached on through CONNECT (default 443; repeatable).
    #[arg(long = "allow-port")]
    pub allow_ports: Vec<u16>,
    /// The control plane (https://HOST:PORT) to take the signed site list and exclusions from;
    /// with it, --site is not needed.
    #[arg(long, requires = "control_trust")]
    pub control: Option<String>,
    /// The control plane's public key (PEM, `tsuzuku keys snapshot-public`) site lists must be
    /// signed with.
    #[arg(long)]
    pub control_trust: Option<PathBuf>,
    /// CA certificate (PEM) of the control plane's certificate, if not a public one.
    #[arg(long)]
    pub control_ca: Option<PathBuf>,
    /// Where the last good site list is kept, so the connector starts while the control plane
    /// is unreachable.
    #[arg(long, default_value = "tsuzuku-sites.json")]
    pub site_cache: PathBuf,
    /// The organisation's tenant in the control plane.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// This device's name in experience reports to the control plane (default: host name).
    #[arg(long)]
    pub device_id: Option<String>,
    /// How often experience reports (and the DR state) are sent to the control plane.
    #[arg(long, default_value = "10s", hide = true)]
    pub report_every: String,
    #[command(flatten)]
    pub device: Box<ConnectDeviceArgs>,
    #[command(flatten)]
    pub dr: Box<ConnectDrArgs>,
}

/// Device trust of `tsuzuku connect` (docs/DEVICES.md).
#[derive(Debug, Args)]
pub struct ConnectDeviceArgs {
    /// The enrolled device identity (`tsuzuku connect enroll`): present the device certificate
    /// to gateways and report the device's posture. Needs --ca.
    #[arg(long)]
    pub device_dir: Option<PathBuf>,
    /// The antivirus process whose presence the posture reports (e.g. clamd).
    #[arg(long)]
    pub av_process: Option<String>,
    /// A command printing the antivirus version (e.g. "clamd --version"), split at spaces.
    #[arg(long)]
    pub av_version_cmd: Option<String>,
    /// How often the device's posture is reported.
    #[arg(long, default_value = "30s")]
    pub posture_every: String,
}

/// Disaster-recovery mode of `tsuzuku connect` (docs/CONTINUITY.md).
#[derive(Debug, Args)]
pub struct ConnectDrArgs {
    /// The DR trigger record's name (e.g. _tsuzuku-dr.example.com); enables DR mode.
    #[arg(long = "dr-record", requires = "dr_trust")]
    pub dr_record: Option<String>,
    /// A DR public key (PEM) records and allowlists must be signed with (repeatable).
    #[arg(long = "dr-trust")]
    pub dr_trust: Vec<PathBuf>,
    /// How DNS is asked: system, IP[:PORT], udp://IP[:PORT], tcp://IP[:PORT],
    /// tls://NAME@IP[:PORT] or https://NAME@IP[:PORT][/PATH].
    #[arg(long = "dr-dns", default_value = "system")]
    pub dr_dns: String,
    /// For --dr-dns tls://... or https://...: trust only the CA certificates (PEM) in this file
    /// for the DNS server's certificate, instead of the public web roots.
    #[arg(long = "dr-dns-ca", value_name = "CA.pem")]
    pub dr_dns_ca: Option<PathBuf>,
    /// How often the record is looked up.
    #[arg(long = "dr-interval", default_value = "30s")]
    pub dr_interval: String,
    /// Where the last verified DR state is kept across restarts (the signed allowlist is cached
    /// beside it, in FILE.allowlist).
    #[arg(long = "dr-state")]
    pub dr_state: Option<PathBuf>,
    /// The DR gateway: HOST@ADDR[,ADDR...] — its host name and its addresses. Without it, the
    /// DR site of the control plane's site list (--control), followed while running.
    #[arg(long = "dr-gateway")]
    pub dr_gateway: Option<String>,
    /// An app host that stays reachable in DR mode through the DR gateway (repeatable;
    /// `*.example.com` covers the names below example.com).
    #[arg(long = "dr-critical-host")]
    pub dr_critical_hosts: Vec<String>,
    /// A group of this device's user (DR drills name groups; repeatable).
    #[arg(long = "dr-group")]
    pub dr_groups: Vec<String>,
    /// This device's id (DR drills name devices).
    #[arg(long = "dr-device")]
    pub dr_device: Option<String>,
    /// Where the signed allowlist of the `controlled` internet mode is fetched: an http(s) URL,
    /// or s3://BUCKET/KEY in an S3-compatible bucket (see the --dr-allowlist-s3-* flags).
    #[arg(long = "dr-allowlist-url")]
    pub dr_allowlist_url: Option<String>,
    /// For an s3:// allowlist: the S3-compatible server's base URL (e.g. http://minio:9000).
    /// Default: AWS S3 in the region, https://s3.REGION.amazonaws.com.
    #[arg(long = "dr-allowlist-s3-endpoint", value_name = "URL")]
    pub dr_allowlist_s3_endpoint: Option<String>,
    /// For an s3:// allowlist: the bucket's region.
    #[arg(long = "dr-allowlist-s3-region", default_value = "us-east-1")]
    pub dr_allowlist_s3_region: String,
    /// For an s3:// allowlist: a credentials file (aws_access_key_id = ..., aws_secret_access_key
    /// = ..., as in ~/.aws/credentials). Default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long = "dr-allowlist-s3-credentials", value_name = "FILE")]
    pub dr_allowlist_s3_credentials: Option<PathBuf>,
    /// For an s3:// allowlist with --dr-allowlist-s3-endpoint: virtual-hosted-style URLs
    /// (BUCKET.HOST/KEY) instead of path-style (HOST/BUCKET/KEY).
    #[arg(long = "dr-allowlist-s3-virtual-hosted")]
    pub dr_allowlist_s3_virtual_hosted: bool,
    /// How often the signed allowlist is fetched again.
    #[arg(long = "dr-allowlist-refresh", default_value = "15m")]
    pub dr_allowlist_refresh: String,
    /// An internet destination allowed in the `controlled` mode, besides the signed list
    /// (repeatable): www.example.com, *.example.com or an IP address.
    #[arg(long = "dr-allow")]
    pub dr_allow: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectCmd {
    /// Enrol this device: obtain a device certificate from the control plane with a one-time
    /// token from `tsuzuku device token`.
    Enroll {
        /// The control plane (https://HOST:PORT).
        #[arg(long)]
        control: String,
        /// CA certificate (PEM) of the control plane's certificate, if not a public one.
        #[arg(long)]
        control_ca: Option<PathBuf>,
        /// The one-time enrolment token.
        #[arg(long, env = "TSUZUKU_ENROL_TOKEN")]
        token: String,
        /// This device's name (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// Where the device key and certificate are kept.
        #[arg(long, default_value = "tsuzuku-device")]
        device_dir: PathBuf,
    },
    /// Show what the running connector sees: the site in use, every site's health, latency and
    /// loss, and the last switches and why.
    Status {
        /// The running connector's proxy address.
        #[arg(long, default_value = "127.0.0.1:3128")]
        proxy: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCmd {
    /// Show which configured database server serves reads and writes.
    Status,
    /// Make the reachable standby writable after the primary site is lost. Refused while a
    /// writable primary still answers (so two primaries never accept writes).
    Promote,
    /// Add a gateway site for connectors: its gateways' host name and node addresses.
    Add {
        name: String,
        /// The gateways' TLS host name (probes and tunnels use it as SNI and Host).
        #[arg(long)]
        host: String,
        /// A gateway node's address, IP:PORT (repeatable).
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// Lower is preferred (default 100).
        #[arg(long, default_value_t = 100)]
        preference: i64,
        /// Requests per second the site's gateways can take. With it, connectors are told to
        /// prefer other sites while the site's nodes report 90 % of it or more.
        #[arg(long)]
        capacity_rps: Option<i64>,
        /// This is the customer's disaster-recovery gateway (`serve --role dr-gateway`): never
        /// used in normal operation; connectors send critical apps there in DR mode.
        #[arg(long)]
        dr: bool,
    },
    /// Remove a gateway site.
    Remove { name: String },
    /// Gateway sites, their preference, and exclusions in force with their expiry.
    List,
    /// Move every connector off a gateway site for a time (maintenance); they come back by
    /// themselves when it expires.
    Exclude {
        name: String,
        /// How long, e.g. 30m, 2h.
        #[arg(long = "for", value_name = "DURATION")]
        valid_for: String,
        /// Why, shown to operators and in connectors' status.
        #[arg(long)]
        reason: String,
    },
    /// End a site's exclusion now.
    Include { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Print the control plane's snapshot public key (creating the signing key if there is
    /// none): put it in each gateway's `snapshot.trust` file.
    SnapshotPublic,
    /// Rotate the snapshot signing key in two steps, with no restart anywhere: without
    /// --activate, create the next key (then add `keys snapshot-public`, which prints both, to
    /// every gateway's snapshot.trust and connector's --control-trust); with --activate, the
    /// control plane signs with it from its next refresh and the old key is deleted.
    SnapshotRotate {
        #[arg(long)]
        activate: bool,
    },
    /// Start signing identity assertions with a new key. Gateways take it up from their next
    /// reload or snapshot, with no restart; the JWKS keeps the previous key so upstreams verify
    /// assertions signed just before, and older keys are deleted.
    AssertionRotate,
    /// Show the master key's id and source, each tenant's data keys, and how many stored
    /// values are encrypted or still plaintext.
    Status,
    /// Re-wrap every data key under a new master key, in one transaction; running gateways
    /// keep working. Then point `[keys]` at the new key and restart the nodes one by one.
    #[command(group(clap::ArgGroup::new("new_key").required(true)))]
    Rotate {
        /// The new key file; created (mode 0600, 64 hex digits) if it does not exist.
        #[arg(long, group = "new_key")]
        new_key_file: Option<PathBuf>,
        /// The environment variable holding the new key (bring your own key).
        #[arg(long, group = "new_key")]
        new_key_env: Option<String>,
    },
    /// Encrypt values still stored in plaintext (written before encryption was turned on).
    SealExisting,
}

#[derive(Debug, Subcommand)]
pub enum DrCmd {
    /// Create a DR signing key pair in DIR: dr-signing-key.pem (PKCS#8, mode 0600; keep it
    /// offline) and dr-public-key.pem (give it to connectors); prints the key id.
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a signed DR record's TXT value: as is, in zone-file form and as a dnsmasq.conf line.
    Record(DrRecordArgs),
    /// Look the record up and show what connectors would conclude. Exits 0 when a record
    /// verifies, 2 when there is none (NXDOMAIN or no TXT record), 1 with the reason when it
    /// is rejected or DNS fails.
    Check(DrCheckArgs),
    /// Per connector, when it entered and left DR mode (drill or real) and for how long, as
    /// connectors reported it to the control plane (run where the control plane's store is).
    Drill {
        /// How far back to look, e.g. 1h, 90m, 7d.
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        since: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("validity").required(true).args(["valid_for", "not_after"])))]
pub struct DrRecordArgs {
    /// The DR signing key (PKCS#8 PEM, from `tsuzuku dr keygen`).
    #[arg(long, value_name = "PRIVATE.pem")]
    pub key: PathBuf,
    /// on: every connector enters DR mode; off: back to normal; test: a drill for --groups
    /// and --devices only.
    #[arg(long, value_enum)]
    pub state: DrStateArg,
    /// Internet access in DR mode (required for on and test).
    #[arg(long, value_enum)]
    pub internet: Option<DrInternetArg>,
    /// How long the record is valid from now, e.g. 2h, 90m, 3d.
    #[arg(long = "for", value_name = "DURATION")]
    pub valid_for: Option<String>,
    /// End of validity: RFC 3339 (2026-01-01T12:00:00Z) or unix seconds.
    #[arg(long, value_name = "TIME")]
    pub not_after: Option<String>,
    /// Start of validity (default: 5 minutes ago, for devices whose clock is behind).
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// For test: the groups the drill applies to (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// For test: the device ids the drill applies to (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// The record's DNS name, for the zone-file and dnsmasq forms.
    #[arg(long, default_value = "_tsuzuku-dr.example.com")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DrStateArg {
    On,
    Off,
    Test,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DrInternetArg {
    Open,
    Controlled,
    Closed,
}

#[derive(Debug, Args)]
pub struct DrCheckArgs {
    /// The record's DNS name, e.g. _tsuzuku-dr.example.com.
    pub name: String,
    /// A trusted DR public key (PEM; repeat during a key rotation).
    #[arg(long = "trust", value_name = "PUBLIC.pem", required = true)]
    pub trust: Vec<PathBuf>,
    /// The DNS server to ask: IP[:PORT] (UDP and TCP), udp://IP[:PORT], tcp://IP[:PORT],
    /// tls://NAME@IP[:PORT] (DNS over TLS), https://NAME@IP[:PORT][/PATH] (DNS over HTTPS).
    /// Default: the system resolver.
    #[arg(long, value_name = "SERVER")]
    pub nameserver: Option<String>,
    /// For a tls:// or https:// --nameserver: trust only the CA certificates (PEM) in this file
    /// for the server's certificate, instead of the public web roots.
    #[arg(long = "nameserver-ca", value_name = "CA.pem", requires = "nameserver")]
    pub nameserver_ca: Option<PathBuf>,
    /// Conclude as a member of this group (repeatable), for test records.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Conclude as this device, for test records.
    #[arg(long)]
    pub device: Option<String>,
    /// Give up on DNS after this long.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub timeout: String,
    /// Check as at this time (RFC 3339 or unix seconds) instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain; exits non-zero and names the event if anything was altered,
    /// removed or reordered.
    Verify,
    /// Print the newest events.
    Tail {
        /// How many events (1 to 100000).
        #[arg(short = 'n', long, default_value_t = 20,
              value_parser = clap::value_parser!(i64).range(1..=100_000))]
        lines: i64,
        /// Only events of this kind (decision, login, logout, admin, policy, system).
        #[arg(long)]
        kind: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
