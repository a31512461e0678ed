//! A real OpenID Connect provider for end-to-end tests, and a scripted browser for its login.
//!
//! [`OidcProvider::start`] runs `tests/oidc/provider.mjs` (panva's certified `oidc-provider` on
//! Node) on a free loopback port and kills it when dropped. [`drive_login`] plays the user: it
//! follows redirects from an authorization URL (or from a gateway URL that redirects there),
//! submits the provider's development login form and consent form, and stops at the first
//! redirect to the relying party's callback, returning `code` and `state`.
//!
//! The provider must be installed with `scripts/setup-oidc.sh`; without it [`OidcProvider::start`]
//! returns [`OidcTestError::NotInstalled`], whose message says so. Tests should fail on it, not
//! skip.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Url;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// What to tell a developer whose machine lacks the provider.
pub const SETUP_HINT: &str =
    "run scripts/setup-oidc.sh (needs Node.js >= 20 and npm) to install the test OIDC provider";

/// How long the provider may take to print its READY line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects and form posts [`drive_login`] follows before giving up.
pub const MAX_HOPS: usize = 20;

/// Lines of provider output kept for error messages.
const LOG_LINES: usize = 200;

/// Why the test provider or the scripted login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcTestError {
    /// Node or the npm package is missing.
    #[error("test OIDC provider is not installed: {what}; {SETUP_HINT}")]
    NotInstalled {
        /// What is missing.
        what: String,
    },
    /// The provider did not start.
    #[error("test OIDC provider did not start: {reason}\n--- provider output ---\n{log}")]
    Startup {
        /// What went wrong.
        reason: String,
        /// The provider's recent stdout and stderr.
        log: String,
    },
    /// An HTTP request of the scripted browser failed.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The login flow went somewhere unexpected.
    #[error("OIDC login flow failed at {url}: {reason}")]
    Flow {
        /// The URL where it went wrong.
        url: String,
        /// What was unexpected.
        reason: String,
    },
}

/// A client registered at the test provider.
#[derive(Clone, Debug)]
pub struct ProviderClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`; `None` registers a public client (`token_endpoint_auth_method=none`).
    pub client_secret: Option<String>,
    /// Allowed redirect URIs (http or https, any host, including `https://auth.localhost:PORT/...`).
    pub redirect_uris: Vec<String>,
}

/// A user the test provider knows. The login name (map key) is also `sub`; any password works.
#[derive(Clone, Debug, Default)]
pub struct ProviderAccount {
    /// `preferred_username`; the login name when `None`.
    pub preferred_username: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `groups`.
    pub groups: Vec<String>,
}

/// How to configure the test provider.
#[derive(Clone, Debug)]
pub struct ProviderOptions {
    /// Registered clients.
    pub clients: Vec<ProviderClient>,
    /// Whether ID tokens carry `groups` (and the other profile claims). When false, they are
    /// only available from the userinfo endpoint.
    pub groups_in_id_token: bool,
    /// Known users; `None` gives the defaults: `alice` (groups `sales`, `staff`) and `bob`
    /// (`engineering`), with `@example.test` e-mail addresses.
    pub accounts: Option<BTreeMap<String, ProviderAccount>>,
}

impl ProviderOptions {
    /// One confidential client, groups in ID tokens, default accounts.
    pub fn confidential_client(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            clients: vec![ProviderClient {
                client_id: client_id.to_owned(),
                client_secret: Some(client_secret.to_owned()),
                redirect_uris: vec![redirect_uri.to_owned()],
            }],
            groups_in_id_token: true,
            accounts: None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let clients: Vec<_> = self
            .clients
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "redirect_uris": c.redirect_uris,
                })
            })
            .collect();
        let mut config = json!({
            "clients": clients,
            "groups_in_id_token": self.groups_in_id_token,
        });
        if let (Some(accounts), Some(obj)) = (&self.accounts, config.as_object_mut()) {
            let accounts: serde_json::Map<_, _> = accounts
                .iter()
                .map(|(login, a)| {
                    (
                        login.clone(),
                        json!({
                            "preferred_username": a.preferred_username,
                            "email": a.email,
                            "name": a.name,
                            "groups": a.groups,
                        }),
                    )
                })
                .collect();
            obj.insert("accounts".to_owned(), serde_json::Value::Object(accounts));
        }
        config
    }
}

/// The directory holding `provider.mjs`, `package.json` and (once installed) `node_modules`.
pub fn provider_dir() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/testkit -> the workspace root.
    let root = testkit.parent().and_then(Path::parent).unwrap_or(testkit);
    root.join("tests").join("oidc")
}

/// The Node binary: `$TSUZUKU_NODE` or `node` from `PATH`.
fn node_binary() -> String {
    std::env::var("TSUZUKU_NODE").unwrap_or_else(|_| "node".to_owned())
}

type Log = Arc<Mutex<VecDeque<String>>>;

fn push_log(log: &Log, line: String) {
    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
    if log.len() >= LOG_LINES {
        log.pop_front();
    }
    log.push_back(line);
}

fn read_log(log: &Log) -> String {
    let log = log.lock().unwrap_or_else(PoisonError::into_inner);
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// A running `oidc-provider`. Killed when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    // Field order matters for drop: the child is killed (kill_on_drop) while stdin is still
    // open; closing stdin alone would also stop it (`--exit-with-stdin`), e.g. if this process
    // dies without running destructors.
    child: Child,
    _stdin: Option<ChildStdin>,
    issuer: String,
    log: Log,
}

impl OidcProvider {
    /// Starts the provider on a free port of 127.0.0.1 and waits until it listens.
    pub async fn start(options: &ProviderOptions) -> Result<Self, OidcTestError> {
        let dir = provider_dir();
        let script = dir.join("provider.mjs");
        if !script.is_file() {
            return Err(OidcTestError::NotInstalled {
                what: format!("{} is missing", script.display()),
            });
        }
        let package = dir.join("node_modules/oidc-provider/package.json");
        if !package.is_file() {
            return Err(OidcTestError::NotInstalled {
                what: format!("{} is missing", package.display()),
            });
        }

        let node = node_binary();
        let mut child = Command::new(&node)
            .arg(&script)
            .arg("--port")
            .arg("0")
            .arg("--config")
            .arg(options.to_json().to_string())
            .arg("--exit-with-stdin")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => OidcTestError::NotInstalled {
                    what: format!("`{node}` (Node.js) is not on PATH"),
                },
                _ => OidcTestError::Startup {
                    reason: format!("cannot run `{node}`: {err}"),
                    log: String::new(),
                },
            })?;

        let log: Log = Arc::new(Mutex::new(VecDeque::new()));
        let stdin = child.stdin.take();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(OidcTestError::Startup {
                reason: "the child's stdout or stderr was not captured".to_owned(),
                log: String::new(),
            });
        };

        let stderr_log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                push_log(&stderr_log, format!("[stderr] {line}"));
            }
        });

        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        let stdout_log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(issuer) = line.strip_prefix("READY ")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(issuer.trim().to_owned());
                }
                push_log(&stdout_log, format!("[stdout] {line}"));
            }
        });

        let issuer = match tokio::time::timeout(STARTUP_TIMEOUT, ready_rx).await {
            Ok(Ok(issuer)) => issuer,
            Ok(Err(_)) => {
                // stdout closed without READY: the process is exiting; let stderr drain.
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(OidcTestError::Startup {
                    reason: format!("it exited before listening ({status:?})"),
                    log: read_log(&log),
                });
            }
            Err(_) => {
                return Err(OidcTestError::Startup {
                    reason: format!("no READY line within {STARTUP_TIMEOUT:?}"),
                    log: read_log(&log),
                });
            }
        };

        Ok(Self {
            child,
            _stdin: stdin,
            issuer,
            log,
        })
    }

    /// The issuer URL, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's recent output (for assertion messages).
    pub fn recent_log(&self) -> String {
        read_log(&self.log)
    }

    /// The child's process id, if it is still running.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the provider and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A client behaving like a browser for [`drive_login`]: cookie store on, redirects off (so each
/// hop is visible and the callback is never fetched).
pub fn browser() -> Result<reqwest::Client, OidcTestError> {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|err| OidcTestError::Http {
            url: String::new(),
            reason: err.to_string(),
        })
}

/// Where the provider sent the browser back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    /// The full callback URL (fetch it to complete a gateway login).
    pub url: String,
    /// `code`.
    pub code: String,
    /// `state`.
    pub state: String,
    /// `iss` (RFC 9207), when the provider adds it.
    pub iss: Option<String>,
}

/// Plays the user: starts at `start_url` (an authorization URL, or a relying-party URL that
/// redirects to one), follows redirects, signs in as `login` with `password` on the provider's
/// development login form, confirms the consent form, and stops at the first URL that starts
/// with `callback_prefix` without requesting it. Fails if that redirect carries `error`.
pub async fn drive_login(
    browser: &reqwest::Client,
    start_url: &str,
    login: &str,
    password: &str,
    callback_prefix: &str,
) -> Result<Callback, OidcTestError> {
    let mut url = parse_url(start_url, None)?;
    let mut pending_post: Option<Vec<(String, String)>> = None;
    for _ in 0..MAX_HOPS {
        if url.as_str().starts_with(callback_prefix) {
            return callback(url);
        }
        let request = match pending_post.take() {
            Some(fields) => browser.post(url.clone()).form(&fields),
            None => browser.get(url.clone()),
        };
        let response = request.send().await.map_err(|err| OidcTestError::Http {
            url: url.to_string(),
            reason: err.to_string(),
        })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| flow(&url, format!("{status} without a Location header")))?
                .to_owned();
            url = parse_url(&location, Some(&url))?;
            continue;
        }
        let body = response.text().await.map_err(|err| OidcTestError::Http {
            url: url.to_string(),
            reason: err.to_string(),
        })?;
        if !status.is_success() {
            return Err(flow(&url, format!("{status}: {}", snippet(&body))));
        }
        let form = parse_form(&body).ok_or_else(|| {
            flow(
                &url,
                format!("expected a login or consent form, got: {}", snippet(&body)),
            )
        })?;
        let mut fields = form.hidden;
        if form.inputs.iter().any(|n| n == "login") {
            fields.push(("login".to_owned(), login.to_owned()));
        }
        if form.inputs.iter().any(|n| n == "password") {
            fields.push(("password".to_owned(), password.to_owned()));
        }
        pending_post = Some(fields);
        url = parse_url(&form.action, Some(&url))?;
    }
    Err(flow(
        &url,
        format!("no redirect to {callback_prefix} after {MAX_HOPS} steps"),
    ))
}

fn flow(url: &Url, reason: String) -> OidcTestError {
    OidcTestError::Flow {
        url: url.to_string(),
        reason,
    }
}

fn parse_url(text: &str, base: Option<&Url>) -> Result<Url, OidcTestError> {
    let parsed = match base {
        Some(base) => base.join(text),
        None => Url::parse(text),
    };
    parsed.map_err(|err| OidcTestError::Flow {
        url: text.to_owned(),
        reason: format!("not a URL: {err}"),
    })
}

fn callback(url: Url) -> Result<Callback, OidcTestError> {
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    if let Some(error) = query.get("error") {
        let description = query.get("error_description").cloned().unwrap_or_default();
        return Err(flow(
            &url,
            format!("the provider returned error={error}: {description}"),
        ));
    }
    let (Some(code), Some(state)) = (query.get("code"), query.get("state")) else {
        return Err(flow(&url, "the callback lacks code or state".to_owned()));
    };
    Ok(Callback {
        url: url.to_string(),
        code: code.clone(),
        state: state.clone(),
        iss: query.get("iss").cloned(),
    })
}

/// The visible text of an HTML page (tags, styles and scripts dropped), shortened, for errors.
fn snippet(body: &str) -> String {
    let mut text = String::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        text.push_str(rest.get(..open).unwrap_or_default());
        let after = rest.get(open..).unwrap_or_default();
        let skip_to = ["<style", "<script"]
            .iter()
            .zip(["</style>", "</script>"])
            .find(|(start, _)| after.starts_with(**start))
            .map(|(_, end)| end)
            .unwrap_or(">");
        match after.find(skip_to) {
            Some(end) => rest = after.get(end + skip_to.len()..).unwrap_or_default(),
            None => rest = "",
        }
        text.push(' ');
    }
    text.push_str(rest);
    let words: Vec<&str> = text.split_whitespace().collect();
    unescape(&words.join(" ")).chars().take(600).collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Form {
    action: String,
    hidden: Vec<(String, String)>,
    inputs: Vec<String>,
}

/// The first `<form>` of a page: its action, hidden fields and the names of its other inputs.
/// Enough for oidc-provider's development views, not a general HTML parser.
fn parse_form(html: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let rest = html.get(start..)?;
    let end = rest.find("</form>").unwrap_or(rest.len());
    let form = rest.get(..end)?;
    let tag_end = form.find('>')?;
    let action = attribute(form.get(..tag_end)?, "action")?;
    let mut hidden = Vec::new();
    let mut inputs = Vec::new();
    let mut cursor = form;
    while let Some(pos) = cursor.find("<input") {
        let tail = cursor.get(pos..)?;
        let close = tail.find('>')?;
        let tag = tail.get(..close)?;
        if let Some(name) = attribute(tag, "name") {
            if attribute(tag, "type").as_deref() == Some("hidden") {
                hidden.push((name, attribute(tag, "value").unwrap_or_default()));
            } else {
                inputs.push(name);
            }
        }
        cursor = tail.get(close..)?;
    }
    Some(Form {
        action,
        hidden,
        inputs,
    })
}

/// The double-quoted value of `name="..."` in one tag, with HTML entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let rest = tag.get(start..)?;
    let end = rest.find('"')?;
    Some(unescape(rest.get(..end)?))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests;
