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
    Connect(ConnectArgs),
    /// The state store's sites: which server is the writable primary; promotion.
    #[command(subcommand)]
    Site(SiteCmd),
    /// Encryption at rest: the master key and the data keys (docs/ENCRYPTION.md).
    #[command(subcommand)]
    Keys(KeysCmd),
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
    /// The policy enforcement point with its sign-in portal.
    Gateway,
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
        /// Read the password from standard input instead of generating one.
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
        /// Treat the user as signed in with MFA.
        #[arg(long)]
        mfa: bool,
        /// Authentication method to assume (password, password+totp, oidc).
        #[arg(long)]
        auth_method: Option<String>,
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
}

#[derive(Debug, Subcommand)]
pub enum ConnectCmd {
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
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
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
pub enum AuditCmd {
    /// Check the hash chain; exits non-zero and names the event if anything was altered,
    /// removed or reordered.
    Verify,
    /// Print the newest events.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
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
