//! A real S3-compatible object store for tests: moto's server (`moto_server`, Python) on a free
//! loopback port, killed when dropped.
//!
//! [`TestS3::start`] creates an IAM user with an access key allowed `s3:*`, creates one bucket,
//! and then turns moto's request authentication on: from then on every request must carry a
//! valid AWS Signature V4 made with that key, so a wrong access key id answers
//! `InvalidAccessKeyId` and a wrong secret `SignatureDoesNotMatch`, as S3 does. Objects are
//! uploaded with signed `PUT`s ([`TestS3::put_object`]).
//!
//! moto is installed by `scripts/install-test-deps.sh` (in a venv under
//! `~/.cache/tsuzuku/moto-venv`); without it [`TestS3::start`] returns
//! [`S3TestError::NotInstalled`], whose message says so. Tests should fail on it, not skip.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// What to tell a developer whose machine lacks moto.
pub const SETUP_HINT: &str = "run scripts/install-test-deps.sh (it installs moto[server] in a venv under ~/.cache/tsuzuku/moto-venv), or set TSUZUKU_MOTO_SERVER to a moto_server program";

/// How long moto may take to answer its first request.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The region the test server's bucket is in.
pub const REGION: &str = "us-east-1";

/// Lines of server output kept for error messages.
const LOG_LINES: usize = 100;

/// Why the test S3 server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3TestError {
    #[error("the test S3 server (moto) is not installed: {what}; {SETUP_HINT}")]
    NotInstalled { what: String },
    #[error("the test S3 server (moto) did not start: {reason}\n--- moto output ---\n{log}")]
    Startup { reason: String, log: String },
    #[error("test S3 request {what} failed: {reason}")]
    Request { what: String, reason: String },
}

fn request_err(what: &str, reason: impl ToString) -> S3TestError {
    S3TestError::Request {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// A running moto server with one bucket and one access key; killed when dropped.
pub struct TestS3 {
    child: Child,
    endpoint: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for TestS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestS3")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// Where `moto_server` is: `$TSUZUKU_MOTO_SERVER`, the venv the install script makes, or `PATH`.
pub fn find_moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TSUZUKU_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        let p = c.join("tsuzuku/moto-venv/bin/moto_server");
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, S3TestError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| S3TestError::Startup {
        reason: format!("no free port: {e}"),
        log: String::new(),
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| S3TestError::Startup {
            reason: e.to_string(),
            log: String::new(),
        })
}

/// The first `<Tag>…</Tag>` in an XML answer.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    xml.get(start..start + len).map(str::to_owned)
}

/// The headers that sign a request with AWS Signature V4 (plus `x-amz-content-sha256`).
pub fn sigv4_headers(
    method: &str,
    url: &str,
    service: &str,
    access_key_id: &str,
    secret_access_key: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<Vec<(String, String)>, String> {
    let identity = Credentials::new(access_key_id, secret_access_key, None, None, "testkit").into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    if service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect())
}

impl TestS3 {
    /// Starts moto, creates the access key and `bucket`, and turns authentication on.
    pub async fn start(bucket: &str) -> Result<Self, S3TestError> {
        let program = find_moto_server().ok_or_else(|| S3TestError::NotInstalled {
            what: "no moto_server program".into(),
        })?;
        let port = free_port()?;
        let mut child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| S3TestError::NotInstalled {
                what: format!("cannot run {}: {e}", program.display()),
            })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            keep_lines(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            keep_lines(err, log.clone());
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| request_err("client", e))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let startup = |reason: String| S3TestError::Startup {
            reason,
            log: log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .join("\n"),
        };
        // Ready when it answers anything.
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            if http
                .get(format!("{endpoint}/moto-api/"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(startup(format!("moto_server exited with {status}")));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(startup(format!(
                    "no answer on {endpoint} within {} s",
                    STARTUP_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut s3 = Self {
            child,
            endpoint,
            bucket: bucket.to_owned(),
            access_key_id: "AKIAIOSFODNN7BOOTSTRAP".into(),
            secret_access_key: "bootstrap".into(),
            http,
            log,
        };
        // With authentication still off, any key signs; moto routes by the signed service.
        s3.iam("CreateUser", &[("UserName", "tsuzuku-test")])
            .await?;
        let key = s3
            .iam("CreateAccessKey", &[("UserName", "tsuzuku-test")])
            .await?;
        let (Some(id), Some(secret)) = (
            xml_value(&key, "AccessKeyId"),
            xml_value(&key, "SecretAccessKey"),
        ) else {
            return Err(request_err("CreateAccessKey", format!("no key in {key}")));
        };
        s3.iam(
            "PutUserPolicy",
            &[
                ("UserName", "tsuzuku-test"),
                ("PolicyName", "s3-all"),
                (
                    "PolicyDocument",
                    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
                ),
            ],
        )
        .await?;
        s3.access_key_id = id;
        s3.secret_access_key = secret;
        let url = format!("{}/{}", s3.endpoint, s3.bucket);
        s3.signed("CreateBucket", "PUT", &url, Vec::new()).await?;
        // From now on every request must be signed with the key above.
        let resp = s3
            .http
            .post(format!("{}/moto-api/reset-auth", s3.endpoint))
            .body("0")
            .send()
            .await
            .map_err(|e| request_err("reset-auth", e))?;
        if !resp.status().is_success() {
            return Err(request_err(
                "reset-auth",
                format!("HTTP status {}", resp.status()),
            ));
        }
        Ok(s3)
    }

    async fn iam(&self, action: &str, params: &[(&str, &str)]) -> Result<String, S3TestError> {
        let mut form = form_urlencoded_pairs(&[("Action", action), ("Version", "2010-05-08")]);
        form.push('&');
        form.push_str(&form_urlencoded_pairs(params));
        let url = format!("{}/", self.endpoint);
        let ct = ("content-type", "application/x-www-form-urlencoded");
        let headers = sigv4_headers(
            "POST",
            &url,
            "iam",
            &self.access_key_id,
            &self.secret_access_key,
            form.as_bytes(),
            &[ct],
        )
        .map_err(|e| request_err(action, e))?;
        let mut req = self.http.post(&url).header(ct.0, ct.1).body(form);
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let resp = req.send().await.map_err(|e| request_err(action, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| request_err(action, e))?;
        if !status.is_success() {
            return Err(request_err(action, format!("HTTP status {status}: {text}")));
        }
        Ok(text)
    }

    async fn signed(
        &self,
        what: &str,
        method: &str,
        url: &str,
        body: Vec<u8>,
    ) -> Result<String, S3TestError> {
        let headers = sigv4_headers(
            method,
            url,
            "s3",
            &self.access_key_id,
            &self.secret_access_key,
            &body,
            &[],
        )
        .map_err(|e| request_err(what, e))?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| request_err(what, e))?;
        let mut req = self.http.request(m, url).body(body);
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let resp = req.send().await.map_err(|e| request_err(what, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| request_err(what, e))?;
        if !status.is_success() {
            return Err(request_err(what, format!("HTTP status {status}: {text}")));
        }
        Ok(text)
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn region(&self) -> &str {
        REGION
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id allowed to read and write the bucket.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Its secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// Stores `bytes` at `key` in the bucket (a signed `PUT`).
    pub async fn put_object(&self, key: &str, bytes: &[u8]) -> Result<(), S3TestError> {
        let url = format!("{}/{}/{}", self.endpoint, self.bucket, key);
        self.signed("PutObject", "PUT", &url, bytes.to_vec())
            .await
            .map(|_| ())
    }

    /// Removes the object at `key` (a signed `DELETE`).
    pub async fn delete_object(&self, key: &str) -> Result<(), S3TestError> {
        let url = format!("{}/{}/{}", self.endpoint, self.bucket, key);
        self.signed("DeleteObject", "DELETE", &url, Vec::new())
            .await
            .map(|_| ())
    }

    /// The server's recent output.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn keep_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
    log: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
            if l.len() >= LOG_LINES {
                l.remove(0);
            }
            l.push(line);
        }
    });
}
