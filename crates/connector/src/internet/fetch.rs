//! Fetching the signed allowlist (docs/CONTINUITY.md, "Where the allowlist comes from"): from an
//! HTTP(S) URL, or from an object in an S3-compatible bucket (AWS S3, MinIO, Ceph, ...) with a
//! `GET` signed with AWS Signature V4.
//!
//! The signing is AWS's own signer (`aws-sigv4`), in the `Authorization` header: the signature
//! never appears in a URL, so no proxy or log line keeps a usable request. The secret access key
//! is held only by the signer's credentials type, which wipes it when dropped; neither the secret
//! nor the access key id is ever written in an error message, a log line or `Debug` output —
//! errors say where the credentials came from instead.
//!
//! [`ListFetcher::refresh`] fetches, verifies ([`super::verify_newer`]) and only then replaces
//! the list it holds: a list that is unsigned, wrongly signed, older or invalid, a refused
//! request, a missing object — none of them changes the held list. Caching the verified bytes on
//! disk and publishing the list is the caller's job.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use reqwest::Url;
use tsuzuku_dr::TrustedKeys;

use super::{ListError, MAX_LIST_BYTES, SignedList, verify_newer};

#[cfg(test)]
mod tests;

/// How much of an error answer is read to find the S3 error code.
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Where the signed allowlist is fetched.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListSource {
    /// A plain `GET` of an `http://` or `https://` URL.
    Http(Url),
    /// An object in an S3-compatible bucket, fetched with a signed `GET`.
    S3(S3Object),
}

impl fmt::Display for ListSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListSource::Http(u) => write!(f, "{u}"),
            ListSource::S3(o) => write!(f, "{o}"),
        }
    }
}

impl fmt::Debug for ListSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListSource({self})")
    }
}

/// A source of the allowlist that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error(
        "the allowlist URL {0:?} is not an http://, https:// or s3://BUCKET/KEY address; give the signed list's address"
    )]
    Url(String),
    #[error(
        "{location:?} is not an S3 object: {problem}; write s3://BUCKET/KEY, such as s3://dr-lists/allowlist.txt"
    )]
    S3Location {
        location: String,
        problem: &'static str,
    },
    #[error(
        "the S3 endpoint {endpoint:?} cannot be used: {problem}; give the server's base URL, such as https://s3.eu-west-1.amazonaws.com or http://minio.internal:9000"
    )]
    Endpoint { endpoint: String, problem: String },
    #[error("the S3 region must not be empty; give the bucket's region, such as us-east-1")]
    Region,
    #[error(
        "the S3 credentials file {path}: {problem}; write the lines aws_access_key_id = ... and aws_secret_access_key = ... (as in ~/.aws/credentials, one profile)"
    )]
    CredentialsFile { path: String, problem: String },
    #[error(
        "no S3 credentials in the environment: {missing} is not set; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give a credentials file"
    )]
    CredentialsEnv { missing: &'static str },
}

impl ListSource {
    /// An `http://` or `https://` URL.
    pub fn http(url: &str) -> Result<Self, SourceError> {
        let bad = || SourceError::Url(url.to_owned());
        let u = Url::parse(url).map_err(|_| bad())?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(bad());
        }
        Ok(ListSource::Http(u))
    }
}

/// Access key id and secret access key (and a session token for temporary credentials) of an
/// S3-compatible store. `Debug` shows neither; the secret is wiped when dropped.
#[derive(Clone)]
pub struct S3Credentials {
    inner: Credentials,
    /// Where they came from, for error messages (never the values).
    origin: String,
}

impl PartialEq for S3Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for S3Credentials {}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl S3Credentials {
    /// Credentials given directly; `origin` says where from in error messages.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
        origin: impl Into<String>,
    ) -> Self {
        Self {
            inner: Credentials::new(
                access_key_id,
                secret_access_key,
                session_token,
                None,
                "tsuzuku",
            ),
            origin: origin.into(),
        }
    }

    /// Reads a credentials file in the form of `~/.aws/credentials` with one profile:
    /// `aws_access_key_id = ...`, `aws_secret_access_key = ...` and optionally
    /// `aws_session_token = ...`. `#` and `;` start comments; a `[profile]` line is allowed.
    pub fn from_file(path: &Path) -> Result<Self, SourceError> {
        let bad = |problem: String| SourceError::CredentialsFile {
            path: path.display().to_string(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        if meta.len() > 64 * 1024 {
            return Err(bad("it is larger than 64 KiB".into()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read it as text: {e}")))?;
        Self::parse_file(&text, &format!("the credentials file {}", path.display())).map_err(bad)
    }

    fn parse_file(text: &str, origin: &str) -> Result<Self, String> {
        let (mut id, mut secret, mut token) = (None, None, None);
        let mut sections = 0;
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if l.starts_with('[') && l.ends_with(']') {
                sections += 1;
                if sections > 1 {
                    return Err(format!(
                        "line {}: a second profile; keep only the one the connector uses",
                        i + 1
                    ));
                }
                continue;
            }
            // Values are never echoed in messages: they are secrets.
            let Some((k, v)) = l.split_once('=') else {
                return Err(format!("line {} is not KEY = VALUE", i + 1));
            };
            let v = v.trim();
            if v.is_empty() {
                return Err(format!("line {}: {} has no value", i + 1, k.trim()));
            }
            let slot = match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => &mut id,
                "aws_secret_access_key" => &mut secret,
                "aws_session_token" => &mut token,
                _ => continue,
            };
            if slot.is_some() {
                return Err(format!("line {}: {} is given twice", i + 1, k.trim()));
            }
            *slot = Some(v.to_owned());
        }
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(Self::new(id, secret, token, origin)),
            (None, _) => Err("there is no aws_access_key_id line".into()),
            (_, None) => Err("there is no aws_secret_access_key line".into()),
        }
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, if set, `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, SourceError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SourceError> {
        let get = |k| var(k).filter(|v| !v.trim().is_empty());
        let id = get("AWS_ACCESS_KEY_ID").ok_or(SourceError::CredentialsEnv {
            missing: "AWS_ACCESS_KEY_ID",
        })?;
        let secret = get("AWS_SECRET_ACCESS_KEY").ok_or(SourceError::CredentialsEnv {
            missing: "AWS_SECRET_ACCESS_KEY",
        })?;
        Ok(Self::new(
            id.trim(),
            secret.trim(),
            get("AWS_SESSION_TOKEN"),
            "the environment (AWS_ACCESS_KEY_ID)",
        ))
    }

    /// Where the credentials came from (a file, the environment), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// An object in an S3-compatible bucket, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Object {
    bucket: String,
    key: String,
    endpoint: Url,
    region: String,
    credentials: S3Credentials,
    virtual_hosted: bool,
}

impl fmt::Display for S3Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s3://{}/{} at {}",
            self.bucket,
            self.key,
            self.endpoint.as_str().trim_end_matches('/')
        )
    }
}

impl fmt::Debug for S3Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Object")
            .field("location", &self.to_string())
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("virtual_hosted", &self.virtual_hosted)
            .finish()
    }
}

/// Whether `name` can be an S3 bucket name (3 to 63 lower-case letters, digits, `-` and `.`,
/// starting and ending with a letter or digit).
fn valid_bucket(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..")
}

/// Percent-encodes an object key for the URL path: every byte but the unreserved ones and `/`
/// (the form Signature V4 expects for S3, which encodes the path once).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3Object {
    /// `location` is `s3://BUCKET/KEY`; `endpoint` the server's base URL (`https://…` or
    /// `http://…`, with a path prefix if the server has one). Requests use path-style URLs
    /// (`ENDPOINT/BUCKET/KEY`, what MinIO, Ceph and most S3-compatible servers expect) unless
    /// [`S3Object::virtual_hosted`] is set.
    pub fn new(
        location: &str,
        endpoint: &str,
        region: &str,
        credentials: S3Credentials,
    ) -> Result<Self, SourceError> {
        let bad = |problem| SourceError::S3Location {
            location: location.to_owned(),
            problem,
        };
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("there is no /KEY after the bucket"))?;
        if !valid_bucket(bucket) {
            return Err(bad(
                "the bucket name must be 3 to 63 lower-case letters, digits, '-' or '.'",
            ));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(bad("the object key is empty or names a folder"));
        }
        if key.len() > 1024 || key.chars().any(char::is_control) {
            return Err(bad(
                "the object key is longer than 1024 bytes or has control characters",
            ));
        }
        let ebad = |problem: String| SourceError::Endpoint {
            endpoint: endpoint.to_owned(),
            problem,
        };
        let mut url = Url::parse(endpoint).map_err(|e| ebad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ebad("it is not an http:// or https:// URL".into()));
        }
        if url.host_str().is_none() {
            return Err(ebad("it has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ebad(
                "it carries a user name or password; give S3 credentials separately".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ebad("it has a query or fragment".into()));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let region = region.trim();
        if region.is_empty() {
            return Err(SourceError::Region);
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            endpoint: url,
            region: region.to_owned(),
            credentials,
            virtual_hosted: false,
        })
    }

    /// Use virtual-hosted-style URLs (`BUCKET.HOST/KEY`), as AWS S3 prefers.
    pub fn virtual_hosted(mut self, yes: bool) -> Self {
        self.virtual_hosted = yes;
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The object's URL (unsigned).
    pub fn url(&self) -> String {
        let key = encode_key(&self.key);
        let base = self.endpoint.as_str();
        if self.virtual_hosted {
            let mut u = self.endpoint.clone();
            let host = format!("{}.{}", self.bucket, u.host_str().unwrap_or_default());
            // A bucket name is a valid host label (checked in `new`).
            if u.set_host(Some(&host)).is_err() {
                return format!("{base}{}/{key}", self.bucket);
            }
            format!("{}{key}", u.as_str())
        } else {
            format!("{base}{}/{key}", self.bucket)
        }
    }

    /// The headers that sign a `GET` of the object at `time` (`Authorization`, `x-amz-date`,
    /// `x-amz-content-sha256` and, for temporary credentials, `x-amz-security-token`).
    pub fn signed_get_headers(&self, time: SystemTime) -> Result<Vec<(String, String)>, String> {
        let identity = self.credentials.inner.clone().into();
        let mut settings = SigningSettings::default();
        // S3 wants the payload hash header, and the path encoded once and not normalised.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let url = self.url();
        let request = SignableRequest::new(
            "GET",
            url.as_str(),
            std::iter::empty(),
            SignableBody::empty(),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    /// What an S3 error code means here, and what to do.
    fn explain(&self, code: &str, message: &str) -> String {
        let creds = self.credentials.origin();
        match code {
            "NoSuchKey" => format!(
                "there is no object {:?} in bucket {}: upload the signed list there, or correct the key",
                self.key, self.bucket
            ),
            "NoSuchBucket" => format!(
                "there is no bucket {} on this server: correct the bucket name or the endpoint",
                self.bucket
            ),
            "InvalidAccessKeyId" => format!(
                "the server does not know the access key id from {creds}: correct the credentials"
            ),
            "SignatureDoesNotMatch" => format!(
                "the request's signature does not match: the secret access key from {creds} is wrong for its access key id (or the region {} is not the bucket's)",
                self.region
            ),
            "AccessDenied" => format!(
                "the credentials from {creds} may not read this object: allow them s3:GetObject on {}/{}",
                self.bucket, self.key
            ),
            "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => format!(
                "the server refused the region {}: give the bucket's region",
                self.region
            ),
            "RequestTimeTooSkewed" => {
                "this device's clock is too far from the server's: correct the clock".into()
            }
            "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => format!(
                "the session token from {creds} is expired or invalid: renew the credentials"
            ),
            _ if message.is_empty() => "the server gave no reason".into(),
            _ => format!("the server says: {message}"),
        }
    }
}

/// Why a fetch gave no usable list. After any of these the list held before stays in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("cannot set up the allowlist HTTP client: {0}")]
    Client(String),
    #[error("cannot fetch the allowlist from {from}: {reason}")]
    Transport { from: String, reason: String },
    #[error("the allowlist at {from} answered HTTP status {status}")]
    Status { from: String, status: u16 },
    #[error("the S3 server refused the allowlist {from}: {code} (HTTP {status}): {explanation}")]
    S3 {
        from: String,
        status: u16,
        /// The S3 error code (`NoSuchKey`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`, ...),
        /// or `HTTP <status>` when the answer had none.
        code: String,
        explanation: String,
    },
    #[error("cannot sign the S3 request for {from}: {reason}")]
    Sign { from: String, reason: String },
    #[error("the allowlist from {from} is refused: {source}")]
    List {
        from: String,
        #[source]
        source: ListError,
    },
}

/// The first `<Tag>…</Tag>` of an S3 error document.
fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let rest = xml.get(start..)?;
    rest.get(..rest.find(&close)?)
}

/// An HTTP client for allowlist fetches: no proxy (the connector is the proxy), a time limit.
#[derive(Clone, Debug)]
pub struct ListClient {
    http: reqwest::Client,
}

impl ListClient {
    pub fn new(timeout: Duration) -> Result<Self, FetchError> {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map(|http| Self { http })
            .map_err(|e| FetchError::Client(e.to_string()))
    }

    /// The list's bytes (at most [`MAX_LIST_BYTES`]), not yet verified.
    pub async fn get(&self, source: &ListSource) -> Result<Vec<u8>, FetchError> {
        let from = source.to_string();
        let transport = |e: reqwest::Error| FetchError::Transport {
            from: from.clone(),
            // Without the URL: reqwest's message would repeat it.
            reason: crate::error_chain(&e.without_url()),
        };
        let resp = match source {
            ListSource::Http(url) => self.http.get(url.clone()).send().await,
            ListSource::S3(o) => {
                let headers =
                    o.signed_get_headers(SystemTime::now())
                        .map_err(|reason| FetchError::Sign {
                            from: from.clone(),
                            reason,
                        })?;
                let mut req = self.http.get(o.url());
                for (n, v) in headers {
                    req = req.header(n, v);
                }
                req.send().await
            }
        }
        .map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(match source {
                ListSource::Http(_) => FetchError::Status {
                    from,
                    status: status.as_u16(),
                },
                ListSource::S3(o) => {
                    let body = read_limited(resp, MAX_ERROR_BYTES)
                        .await
                        .unwrap_or_default();
                    let text = String::from_utf8_lossy(&body);
                    let code = xml_value(&text, "Code")
                        .map(str::to_owned)
                        .unwrap_or_else(|| {
                            if status == reqwest::StatusCode::NOT_FOUND {
                                "NoSuchKey".into()
                            } else {
                                format!("HTTP {}", status.as_u16())
                            }
                        });
                    let message = xml_value(&text, "Message").unwrap_or_default();
                    FetchError::S3 {
                        explanation: o.explain(&code, message),
                        from,
                        status: status.as_u16(),
                        code,
                    }
                }
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_LIST_BYTES as u64)
        {
            return Err(FetchError::List {
                from,
                source: ListError::TooLarge {
                    len: usize::try_from(resp.content_length().unwrap_or(0)).unwrap_or(usize::MAX),
                },
            });
        }
        match read_limited(resp, MAX_LIST_BYTES).await {
            Ok(body) => Ok(body),
            Err(Limited::TooLarge(len)) => Err(FetchError::List {
                from,
                source: ListError::TooLarge { len },
            }),
            Err(Limited::Http(e)) => Err(transport(e)),
        }
    }
}

enum Limited {
    TooLarge(usize),
    Http(reqwest::Error),
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Limited> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Limited::Http)? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(Limited::TooLarge(body.len()));
        }
    }
    Ok(body)
}

/// A list fetched and verified: the list and the exact bytes (what to cache).
#[derive(Clone, Debug)]
pub struct Fetched {
    pub list: SignedList,
    pub bytes: Vec<u8>,
}

/// Fetches the signed allowlist from its source and holds the last one that verified.
#[derive(Debug)]
pub struct ListFetcher {
    source: ListSource,
    client: ListClient,
    trusted: TrustedKeys,
    held: Option<SignedList>,
}

impl ListFetcher {
    /// `held` is the list already in force (from the cache), if any: a fetched list older than
    /// it is refused as a replay.
    pub fn new(
        source: ListSource,
        trusted: TrustedKeys,
        held: Option<SignedList>,
        timeout: Duration,
    ) -> Result<Self, FetchError> {
        Ok(Self {
            source,
            client: ListClient::new(timeout)?,
            trusted,
            held,
        })
    }

    pub fn source(&self) -> &ListSource {
        &self.source
    }

    /// The last list that verified (fetched or from the cache).
    pub fn held(&self) -> Option<&SignedList> {
        self.held.as_ref()
    }

    /// Fetches and verifies the list. On success it becomes the held list; on any error the
    /// held list stays as it was.
    pub async fn refresh(&mut self) -> Result<Fetched, FetchError> {
        let bytes = self.client.get(&self.source).await?;
        let list = verify_newer(
            &bytes,
            &self.trusted,
            self.held.as_ref().map(|l| l.issued_at),
        )
        .map_err(|source| FetchError::List {
            from: self.source.to_string(),
            source,
        })?;
        self.held = Some(list.clone());
        Ok(Fetched { list, bytes })
    }
}
