//! Runs the real `tsuzuku` binary for end-to-end tests: a data directory, the CLI, a serving
//! gateway process that can be killed, and an HTTPS client that trusts its CA and resolves its
//! `*.localhost` names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Failure of a test helper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    #[error("{0}")]
    Msg(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

/// Host names (under `.localhost`) the test gateway's certificate covers.
pub const TLS_NAMES: &[&str] = &[
    "app.localhost",
    "app2.localhost",
    "other.localhost",
    "auth.localhost",
];

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, KitError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A data directory and, once started, a gateway process.
pub struct TestGateway {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Lines the gateway wrote to stderr (collected in the background).
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestGateway {
    /// `tsuzuku init` in a fresh temporary directory on a free port.
    pub fn init(bin: &str) -> Result<Self, KitError> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let gw = Self {
            bin: PathBuf::from(bin),
            dir,
            port,
            child: None,
            stderr: Default::default(),
        };
        let data = gw.data_dir().join("data");
        let out = std::process::Command::new(&gw.bin)
            .arg("--data-dir")
            .arg(&data)
            .args(["init", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(TLS_NAMES.iter().flat_map(|n| ["--tls-name", n]))
            .output()?;
        if !out.status.success() {
            return Err(KitError::Msg(format!(
                "tsuzuku init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(gw)
    }

    /// The temporary directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The tsuzuku data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Appends TOML to the configuration file (e.g. an `[oidc]` section). Keys of sections that
    /// already exist must be changed with [`TestGateway::set_config`].
    pub fn append_config(&self, toml: &str) -> Result<(), KitError> {
        let p = self.data().join("tsuzuku.toml");
        let mut text = std::fs::read_to_string(&p)?;
        text.push('\n');
        text.push_str(toml);
        std::fs::write(p, text)?;
        Ok(())
    }

    /// Replaces `key = …` (first occurrence) in the configuration file.
    pub fn set_config(&self, key: &str, value: &str) -> Result<(), KitError> {
        let p = self.data().join("tsuzuku.toml");
        let text = std::fs::read_to_string(&p)?;
        let mut done = false;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if !done && l.trim_start().starts_with(&format!("{key} =")) {
                    done = true;
                    format!("{key} = {value}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        if !done {
            return Err(KitError::Msg(format!("no key {key} in tsuzuku.toml")));
        }
        std::fs::write(p, lines.join("\n") + "\n")?;
        Ok(())
    }

    /// Runs the CLI against this data directory.
    pub fn cli(&self, args: &[&str]) -> Result<Output, KitError> {
        Ok(std::process::Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .output()?)
    }

    /// Runs the CLI with `stdin` as standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Result<Output, KitError> {
        use std::io::Write as _;
        let mut child = std::process::Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(stdin.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Runs the CLI and returns its stdout, failing if it exits non-zero.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String, KitError> {
        let out = self.cli(args)?;
        if !out.status.success() {
            return Err(KitError::Msg(format!(
                "tsuzuku {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds a local user (no TOTP) in `group` and returns the generated password.
    pub fn add_user(&self, name: &str, group: &str) -> Result<String, KitError> {
        let out = self.cli_ok(&["--json", "user", "add", name, "--group", group])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .map_err(|e| KitError::Msg(format!("user add --json printed no JSON: {e}")))?;
        v.get("password")
            .and_then(|p| p.as_str())
            .map(str::to_owned)
            .ok_or_else(|| KitError::Msg("user add --json printed no password".into()))
    }

    /// Registers app `name` at `name.localhost:PORT` forwarding to `upstream`, and applies
    /// `policy` (Cedar text) as the whole policy set.
    pub fn add_app_with_policy(
        &self,
        name: &str,
        upstream: &str,
        policy: &str,
    ) -> Result<(), KitError> {
        let host = self.host(name);
        self.cli_ok(&["app", "add", name, "--host", &host, "--upstream", upstream])?;
        let p = self.data_dir().join(format!("{name}-policy.cedar"));
        std::fs::write(&p, policy)?;
        let p = p.to_string_lossy().into_owned();
        self.cli_ok(&["policy", "apply", &p])?;
        Ok(())
    }

    /// Starts `tsuzuku serve` and waits until it prints READY.
    pub async fn start(&mut self) -> Result<(), KitError> {
        self.start_with(&[]).await
    }

    /// Starts `tsuzuku serve ARGS…` (e.g. `--role dr-gateway`) and waits until it prints READY.
    pub async fn start_with(&mut self, args: &[&str]) -> Result<(), KitError> {
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.data())
            .arg("serve")
            .args(args)
            .env("TSUZUKU_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| KitError::Msg("no stdout".into()))?;
        if let Some(err) = child.stderr.take() {
            let sink = self.stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if let Ok(mut s) = sink.lock() {
                        s.push(l);
                    }
                }
            });
        }
        let ready = wait_ready(stdout).await;
        if !ready {
            let _ = child.kill().await;
            let err = self.stderr_text();
            return Err(KitError::Msg(format!(
                "gateway did not become ready: {err}"
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Moves the control plane's `[control] listen` to a free loopback port and makes it
    /// publish every 200 ms; returns the port.
    pub fn use_control_port(&self) -> Result<u16, KitError> {
        let port = free_port()?;
        let cfg = self.data().join("tsuzuku.toml");
        let text = std::fs::read_to_string(&cfg)?
            .replace(
                "listen = \"127.0.0.1:9443\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace("publish_interval_ms = 1000", "publish_interval_ms = 200");
        std::fs::write(&cfg, text)?;
        Ok(port)
    }

    /// Starts the control plane (`serve --role control`) on this data directory and waits until
    /// it prints READY. Killed on drop.
    pub async fn start_control(&self) -> Result<Child, KitError> {
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.data())
            .args(["serve", "--role", "control"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| KitError::Msg("no stdout".into()))?;
        if !wait_ready(stdout).await {
            return Err(KitError::Msg(
                "the control plane did not become ready".into(),
            ));
        }
        Ok(child)
    }

    /// Configures this data directory as a DR gateway following `control`'s control plane on
    /// `cport`: trusts its snapshot key and CA, and holds its DR token (`keys/dr-node-token`)
    /// as the node token. Start it with `start_with(&["--role", "dr-gateway"])`.
    pub fn follow_as_dr_gateway(&self, control: &TestGateway, cport: u16) -> Result<(), KitError> {
        let public = control.cli_ok(&["keys", "snapshot-public"])?;
        std::fs::write(self.data().join("control.pub"), public)?;
        std::fs::create_dir_all(self.data().join("keys"))?;
        std::fs::copy(
            control.data().join("keys").join("dr-node-token"),
            self.data().join("keys").join("node-token"),
        )?;
        std::fs::copy(
            control.data().join("tls").join("ca.pem"),
            self.data().join("control-ca.pem"),
        )?;
        self.append_config(&format!(
            "[snapshot]\ncontrol_url = \"https://127.0.0.1:{cport}\"\ntrust = \"control.pub\"\n\
             ca_file = \"control-ca.pem\"\nstart_timeout_ms = 1500\n"
        ))
    }

    /// Starts a second gateway node of the same site: same store, keys and certificate,
    /// listening on `127.0.0.2` at the first node's port (a copy of the configuration with
    /// another `listen`), so the same URLs reach it when a client resolves the names to
    /// [`Node::addr`] — a client connects to the port in the URL whatever address it resolves
    /// the name to. Killed on drop.
    pub async fn start_node(&self) -> Result<Node, KitError> {
        let port = self.port;
        let text = std::fs::read_to_string(self.data().join("tsuzuku.toml"))?;
        let first = format!("listen = \"127.0.0.1:{port}\"");
        if !text.contains(&first) {
            return Err(KitError::Msg(format!(
                "the configuration has no `{first}` to move to 127.0.0.2"
            )));
        }
        let text = text.replace(&first, &format!("listen = \"127.0.0.2:{port}\""));
        let cfg = self.data().join("node-2.toml");
        std::fs::write(&cfg, text)?;
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| KitError::Msg("no stdout".into()))?;
        let ready = wait_ready(stdout).await;
        if !ready {
            return Err(KitError::Msg("second node did not become ready".into()));
        }
        Ok(Node {
            addr: SocketAddr::from(([127, 0, 0, 2], port)),
            child,
        })
    }

    /// What the gateway wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.join("\n")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) -> Result<(), KitError> {
        if let Some(mut c) = self.child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }

    /// The process id of the running gateway.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The gateway's listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `name.localhost:port`.
    pub fn host(&self, name: &str) -> String {
        format!("{name}.localhost:{}", self.port)
    }

    /// `https://name.localhost:port{path}`.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("https://{}{path}", self.host(name))
    }

    /// The local CA certificate (PEM).
    pub fn ca_pem(&self) -> Result<Vec<u8>, KitError> {
        Ok(std::fs::read(self.data().join("tls").join("ca.pem"))?)
    }

    /// An HTTPS client that trusts the gateway's CA, sends `name.localhost` for every name in
    /// `names` to the gateway, keeps cookies and does not follow redirects.
    pub fn client(&self, names: &[&str]) -> Result<reqwest::Client, KitError> {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem()?)?;
        let mut b = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60));
        for n in names {
            b = b.resolve(&format!("{n}.localhost"), self.addr());
        }
        Ok(b.build()?)
    }
}

/// Waits (at most 30 s) for the `READY` line a serving process prints, then keeps draining its
/// stdout in the background so the process never blocks on a full pipe.
async fn wait_ready(stdout: tokio::process::ChildStdout) -> bool {
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("READY ") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if ready {
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
    ready
}

/// Another gateway node of the same site.
pub struct Node {
    pub addr: SocketAddr,
    child: Child,
}

impl Node {
    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) -> Result<(), KitError> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// Extracts the value of the hidden form field `name` from an HTML page.
pub fn form_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let rest = html.get(start..)?;
    let end = rest.find('"')?;
    Some(
        rest.get(..end)?
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}

/// Result of [`sign_in`].
#[derive(Debug)]
pub struct SignIn {
    /// Status of the login form POST.
    pub status: u16,
    /// Body of the login POST response (an error page when sign-in failed).
    pub body: String,
    /// Final status after following the handoff (200 from the app when allowed).
    pub final_status: Option<u16>,
    pub final_body: Option<String>,
}

/// Walks the sign-in flow for `app_url` with a password and an optional one-time code.
pub async fn sign_in(
    client: &reqwest::Client,
    app_url: &str,
    user: &str,
    password: &str,
    code: Option<&str>,
) -> Result<SignIn, KitError> {
    submit_sign_in(
        client,
        app_url,
        "",
        &[
            ("username", user),
            ("password", password),
            ("totp", code.unwrap_or("")),
        ],
    )
    .await
}

/// Like [`sign_in`], with the sign-in page's device button (`POST /.tsuzuku/login/device`): the
/// client must reach the gateway through an enrolled device's connector.
pub async fn sign_in_with_device(
    client: &reqwest::Client,
    app_url: &str,
) -> Result<SignIn, KitError> {
    submit_sign_in(client, app_url, "/device", &[]).await
}

/// Follows an app's redirect to the sign-in page, posts `fields` (with the page's `csrf` and
/// `rd`) to the login path plus `suffix`, and follows the redirects after a 303.
async fn submit_sign_in(
    client: &reqwest::Client,
    app_url: &str,
    suffix: &str,
    fields: &[(&str, &str)],
) -> Result<SignIn, KitError> {
    let r = client.get(app_url).send().await?;
    if r.status().as_u16() != 302 {
        return Err(KitError::Msg(format!(
            "expected a redirect to sign in, got {}",
            r.status()
        )));
    }
    let login_url = location(&r)?;
    let page = client.get(&login_url).send().await?.text().await?;
    let csrf = form_field(&page, "csrf").ok_or_else(|| KitError::Msg("no csrf field".into()))?;
    let rd = form_field(&page, "rd").unwrap_or_default();
    let post_url = format!(
        "{}{suffix}",
        login_url
            .split_once("?")
            .map(|(a, _)| a.to_owned())
            .unwrap_or(login_url.clone())
    );
    let mut form = vec![("csrf", csrf.as_str()), ("rd", rd.as_str())];
    form.extend_from_slice(fields);
    let r = client.post(&post_url).form(&form).send().await?;
    let status = r.status().as_u16();
    if status != 303 {
        let body = r.text().await?;
        return Ok(SignIn {
            status,
            body,
            final_status: None,
            final_body: None,
        });
    }
    let mut next = location(&r)?;
    let mut last = (0u16, String::new());
    for _ in 0..5 {
        let r = client.get(&next).send().await?;
        let s = r.status().as_u16();
        if (300..400).contains(&s) {
            let loc = location(&r)?;
            next = if loc.starts_with('/') {
                let base = next.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                format!("{base}{loc}")
            } else {
                loc
            };
            continue;
        }
        last = (s, r.text().await?);
        break;
    }
    Ok(SignIn {
        status,
        body: String::new(),
        final_status: Some(last.0),
        final_body: Some(last.1),
    })
}

/// The `Location` header of a response.
pub fn location(r: &reqwest::Response) -> Result<String, KitError> {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| KitError::Msg(format!("no Location header in a {} response", r.status())))
}

impl TestGateway {
    /// Opens a TLS connection to the gateway (SNI `name.localhost`), writes `request` verbatim,
    /// and returns everything read until the server closes or `wait` passes without data.
    pub async fn raw(
        &self,
        name: &str,
        request: &[u8],
        wait: Duration,
    ) -> Result<Vec<u8>, KitError> {
        self.raw_to(self.addr(), name, request, wait).await
    }

    /// Like [`TestGateway::raw`], to another node's address.
    pub async fn raw_to(
        &self,
        addr: SocketAddr,
        name: &str,
        request: &[u8],
        wait: Duration,
    ) -> Result<Vec<u8>, KitError> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut roots = rustls::RootCertStore::empty();
        let pem = self.ca_pem()?;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| KitError::Msg(format!("CA PEM: {e}")))?;
            roots
                .add(c)
                .map_err(|e| KitError::Msg(format!("CA: {e}")))?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| KitError::Msg(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let server_name = rustls::pki_types::ServerName::try_from(format!("{name}.localhost"))
            .map_err(|e| KitError::Msg(e.to_string()))?;
        let mut tls = connector.connect(server_name, tcp).await?;
        // The server may answer and close before it read everything (e.g. 431 for a huge
        // header): a failed write is not an error, what the server said is read below.
        if tls.write_all(request).await.is_ok() {
            let _ = tls.flush().await;
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(wait, tls.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Ok(Err(_)) => break,
            }
        }
        Ok(out)
    }
}

use rustls::pki_types::pem::PemObject as _;
