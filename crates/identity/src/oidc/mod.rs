//! OpenID Connect relying party: authorization code flow with PKCE (S256) and a nonce.
//!
//! 1. [`OidcClient::discover`] fetches the provider metadata and its signing keys (JWKS) once.
//! 2. [`OidcClient::begin`] makes the authorization URL and the per-login secrets. The caller
//!    keeps `state`, `nonce` and `pkce_verifier` server-side (or in an encrypted, short-lived
//!    cookie) and redirects the browser to `authorize_url`.
//! 3. On the callback, **the caller** compares the returned `state` with the stored one (use
//!    [`crate::token::ct_eq`]) and refuses the callback if they differ or the stored login has
//!    expired or was already used; this crate cannot, because it keeps no state. Then it calls
//!    [`OidcClient::finish`] with the `code` and the stored nonce and verifier.
//! 4. `finish` exchanges the code, verifies the ID token (signature against the JWKS, issuer,
//!    audience, expiry, nonce, and the access token hash when present) and reads the groups and
//!    user name from the configured claims, asking the userinfo endpoint when the ID token does
//!    not carry them.
//!
//! The HTTP client never follows redirects (a provider answering with a redirect could otherwise
//! make the gateway fetch arbitrary URLs: SSRF) and has connect and overall timeouts. Issuers must
//! use `https`, except on loopback addresses (tests, local development).
//!
//! The signing keys are those seen at discovery: when the provider rotates its keys, discover
//! again (the gateway re-discovers on configuration reload and when ID tokens start failing).

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
    UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::IdentityError;
use crate::error::chain;

/// Timeout for establishing a connection to the provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for a whole request to the provider.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gateway's configuration says about one OpenID provider.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// Issuer URL exactly as the provider states it in its metadata (`iss`), e.g.
    /// `https://login.example.com/realms/staff`.
    pub issuer: String,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret for a confidential client; `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// The gateway's callback URL, registered at the provider.
    pub redirect_url: String,
    /// Scopes to request besides `openid` (always requested), e.g. `profile`, `email`, `groups`.
    pub scopes: Vec<String>,
    /// Claim holding the user's groups, e.g. `groups`: an array of strings or a single string.
    pub groups_claim: String,
    /// Claim holding the user name, e.g. `preferred_username`; when absent, `email`, then `sub`.
    pub username_claim: String,
    /// PEM bundle of extra CA certificates to trust for the provider (private CAs), in addition
    /// to the built-in web PKI roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// The per-login values [`OidcClient::begin`] makes. Keep `state`, `nonce` and `pkce_verifier`
/// where the browser cannot read them; send the browser to `authorize_url`.
#[derive(Clone)]
pub struct PendingLogin {
    /// Where to redirect the browser.
    pub authorize_url: String,
    /// The `state` the callback must carry back (CSRF protection; the caller compares it).
    pub state: String,
    /// The nonce the ID token must carry; pass it to [`OidcClient::finish`].
    pub nonce: String,
    /// The PKCE verifier; pass it to [`OidcClient::finish`].
    pub pkce_verifier: String,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("authorize_url", &self.authorize_url)
            .field("state", &"<redacted>")
            .field("nonce", &"<redacted>")
            .field("pkce_verifier", &"<redacted>")
            .finish()
    }
}

/// Who logged in, as the provider vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The issuer that signed the ID token.
    pub issuer: String,
    /// The provider's stable identifier for the user (`sub`); pair it with `issuer` as the key.
    pub subject: String,
    /// From the configured username claim, else `email`, else `sub`.
    pub username: String,
    /// `email`, if the provider released it.
    pub email: Option<String>,
    /// `name`, if the provider released it.
    pub name: Option<String>,
    /// From the configured groups claim (ID token, else userinfo); empty when absent.
    pub groups: Vec<String>,
    /// `auth_time` (Unix seconds) when the provider sent it.
    pub auth_time: Option<i64>,
    /// `amr` values (e.g. `pwd`, `otp`, `hwk`) when the provider sent them.
    pub amr: Vec<String>,
}

/// Every claim this crate does not model, kept so configured claim names can be looked up.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}
impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;
type InnerClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Inner {
    client: InnerClient,
    http: reqwest::Client,
    issuer: String,
    scopes: Vec<String>,
    groups_claim: String,
    username_claim: String,
}

/// A relying-party client for one provider, made by [`OidcClient::discover`]. Cheap to clone.
#[derive(Clone)]
pub struct OidcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.inner.issuer)
            .field("scopes", &self.inner.scopes)
            .finish_non_exhaustive()
    }
}

fn setting(field: &'static str, reason: impl Into<String>) -> IdentityError {
    IdentityError::OidcSettings {
        field,
        reason: reason.into(),
    }
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost") || domain.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate(settings: &OidcSettings) -> Result<(IssuerUrl, RedirectUrl), IdentityError> {
    let issuer_url = url::Url::parse(&settings.issuer).map_err(|err| {
        setting(
            "issuer",
            format!("`{}` is not a URL ({err})", settings.issuer),
        )
    })?;
    match issuer_url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&issuer_url) => {}
        "http" => {
            return Err(setting(
                "issuer",
                format!(
                    "`{}` uses plain http: use the provider's https URL (http is allowed only on loopback addresses)",
                    settings.issuer
                ),
            ));
        }
        other => {
            return Err(setting(
                "issuer",
                format!("`{}` has scheme `{other}`, expected https", settings.issuer),
            ));
        }
    }
    if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
        return Err(setting(
            "issuer",
            format!(
                "`{}` has a query or fragment; an issuer URL has neither",
                settings.issuer
            ),
        ));
    }
    let issuer = IssuerUrl::new(settings.issuer.clone())
        .map_err(|err| setting("issuer", format!("`{}`: {err}", settings.issuer)))?;

    let redirect = url::Url::parse(&settings.redirect_url).map_err(|err| {
        setting(
            "redirect_url",
            format!("`{}` is not a URL ({err})", settings.redirect_url),
        )
    })?;
    if redirect.scheme() != "https" && !(redirect.scheme() == "http" && is_loopback_host(&redirect))
    {
        return Err(setting(
            "redirect_url",
            format!(
                "`{}` must be an https URL (http only on loopback addresses)",
                settings.redirect_url
            ),
        ));
    }
    let redirect_url = RedirectUrl::new(settings.redirect_url.clone()).map_err(|err| {
        setting(
            "redirect_url",
            format!("`{}`: {err}", settings.redirect_url),
        )
    })?;

    if settings.client_id.is_empty() {
        return Err(setting(
            "client_id",
            "it is empty: use the client id registered at the provider",
        ));
    }
    if settings.client_secret.as_deref() == Some("") {
        return Err(setting(
            "client_secret",
            "it is empty: leave it out for a public client or use the registered secret",
        ));
    }
    if settings.groups_claim.is_empty() {
        return Err(setting(
            "groups_claim",
            "it is empty: name the claim that lists the user's groups, e.g. `groups`",
        ));
    }
    if settings.username_claim.is_empty() {
        return Err(setting(
            "username_claim",
            "it is empty: name the claim with the user name, e.g. `preferred_username`",
        ));
    }
    for scope in &settings.scopes {
        if scope.is_empty()
            || scope
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        {
            return Err(setting(
                "scopes",
                format!("`{scope}` is not a scope token (no spaces, quotes or backslashes)"),
            ));
        }
    }
    Ok((issuer, redirect_url))
}

fn http_client(settings: &OidcSettings) -> Result<reqwest::Client, IdentityError> {
    let failed = |reason: String| IdentityError::OidcHttpClient {
        issuer: settings.issuer.clone(),
        reason,
    };
    let mut builder = reqwest::Client::builder()
        // Following redirects opens the client up to SSRF (openidconnect's security warning).
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("tsuzuku/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &settings.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|err| {
            failed(format!(
                "ca_pem is not a PEM bundle of certificates: {}",
                chain(&err)
            ))
        })?;
        if certs.is_empty() {
            return Err(failed(
                "ca_pem holds no certificate: give the PEM of the CA that signed the provider's certificate"
                    .to_owned(),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|err| failed(chain(&err)))
}

impl OidcClient {
    /// Validates `settings`, fetches the provider's metadata from
    /// `<issuer>/.well-known/openid-configuration` (its `issuer` must equal `settings.issuer`)
    /// and its JWKS.
    pub async fn discover(settings: OidcSettings) -> Result<Self, IdentityError> {
        let (issuer_url, redirect_url) = validate(&settings)?;
        let http = http_client(&settings)?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
            .await
            .map_err(|err| IdentityError::OidcDiscovery {
                issuer: settings.issuer.clone(),
                reason: chain(&err),
            })?;
        if metadata.token_endpoint().is_none() {
            return Err(IdentityError::OidcDiscovery {
                issuer: settings.issuer.clone(),
                reason:
                    "its metadata has no token_endpoint, which the authorization code flow needs"
                        .to_owned(),
            });
        }
        if metadata.jwks().keys().is_empty() {
            return Err(IdentityError::OidcDiscovery {
                issuer: settings.issuer.clone(),
                reason: "its JWKS holds no key, so no ID token could be verified".to_owned(),
            });
        }
        let client = InnerClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect_url);
        let scopes = settings
            .scopes
            .iter()
            .filter(|s| s.as_str() != "openid")
            .cloned()
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                http,
                issuer: settings.issuer,
                scopes,
                groups_claim: settings.groups_claim,
                username_claim: settings.username_claim,
            }),
        })
    }

    /// The issuer this client talks to.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Starts a login: fresh random `state` and `nonce` (128 bits each), a PKCE S256 challenge
    /// in the URL and its verifier to keep.
    pub fn begin(&self) -> PendingLogin {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random();
        let nonce = Nonce::new_random();
        let (state_out, nonce_out) = (state.secret().clone(), nonce.secret().clone());
        let mut request = self
            .inner
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || state,
                move || nonce,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.inner.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.url();
        PendingLogin {
            authorize_url: url.to_string(),
            state: state_out,
            nonce: nonce_out,
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Completes a login: exchanges `code` (with the PKCE verifier) at the token endpoint,
    /// verifies the ID token against `nonce`, and builds the identity. The caller has already
    /// checked `state`.
    pub async fn finish(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<OidcIdentity, IdentityError> {
        let inner = &*self.inner;
        let issuer = &inner.issuer;
        let exchange_failed = |reason: String| IdentityError::OidcCodeExchange {
            issuer: issuer.clone(),
            reason,
        };
        let id_token_failed = |reason: String| IdentityError::OidcIdToken {
            issuer: issuer.clone(),
            reason,
        };

        let response: TokenResponse = inner
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|err| exchange_failed(chain(&err)))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&inner.http)
            .await
            .map_err(|err| exchange_failed(describe_token_error(&err)))?;

        let id_token = response.id_token().ok_or_else(|| {
            exchange_failed(
                "the token response has no id_token: is `openid` an allowed scope for this client?"
                    .to_owned(),
            )
        })?;
        let verifier = inner.client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|err| id_token_failed(chain(&err)))?;

        // The access token is used for userinfo: make sure it is the one this ID token was
        // issued with (OIDC Core 3.1.3.8).
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|err| id_token_failed(chain(&err)))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|err| id_token_failed(chain(&err)))?;
            let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
                .map_err(|err| id_token_failed(chain(&err)))?;
            if actual != *expected {
                return Err(id_token_failed(
                    "at_hash does not match the access token that came with it".to_owned(),
                ));
            }
        }

        let subject = claims.subject().as_str().to_owned();
        let mut all = claims_object(claims).map_err(&id_token_failed)?;

        let needs_userinfo = !present(&all, &inner.groups_claim)
            || !present(&all, &inner.username_claim)
            || !present(&all, "email")
            || !present(&all, "name");
        if needs_userinfo && let Some(extra) = self.userinfo(&response, &subject).await? {
            // Claims of the signed ID token win; userinfo only fills in what it lacks.
            for (key, value) in extra {
                if !present(&all, &key) {
                    all.insert(key, value);
                }
            }
        }

        let groups =
            read_groups(&all, &inner.groups_claim).map_err(|reason| IdentityError::OidcClaim {
                issuer: issuer.clone(),
                claim: inner.groups_claim.clone(),
                reason,
            })?;
        let string = |key: &str| {
            all.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let email = string("email");
        let username = string(&inner.username_claim)
            .or_else(|| email.clone())
            .unwrap_or_else(|| subject.clone());
        Ok(OidcIdentity {
            issuer: claims.issuer().as_str().to_owned(),
            subject,
            username,
            email,
            name: string("name"),
            groups,
            auth_time: claims.auth_time().map(|t| t.timestamp()),
            amr: claims
                .auth_method_refs()
                .map(|refs| refs.iter().map(|r| r.as_str().to_owned()).collect())
                .unwrap_or_default(),
        })
    }

    /// Claims from the userinfo endpoint, or `None` when the provider has none.
    async fn userinfo(
        &self,
        response: &TokenResponse,
        subject: &str,
    ) -> Result<Option<Map<String, Value>>, IdentityError> {
        let inner = &*self.inner;
        let failed = |reason: String| IdentityError::OidcUserInfo {
            issuer: inner.issuer.clone(),
            reason,
        };
        // The provider has no userinfo endpoint: the ID token is all there is.
        let Ok(request) = inner.client.user_info(
            response.access_token().clone(),
            Some(openidconnect::SubjectIdentifier::new(subject.to_owned())),
        ) else {
            return Ok(None);
        };
        let claims: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
            .request_async(&inner.http)
            .await
            .map_err(|err| failed(chain(&err)))?;
        serde_json::to_value(&claims)
            .ok()
            .and_then(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .map(Some)
            .ok_or_else(|| failed("its claims do not form a JSON object".to_owned()))
    }
}

/// All claims of a verified ID token as one JSON object, so any configured name can be read.
fn claims_object<T: Serialize>(claims: &T) -> Result<Map<String, Value>, String> {
    match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("its claims do not form a JSON object".to_owned()),
        Err(err) => Err(format!("its claims cannot be read back: {err}")),
    }
}

fn present(claims: &Map<String, Value>, key: &str) -> bool {
    claims.get(key).is_some_and(|v| !v.is_null())
}

/// Groups from `claim`: an array of strings, or one string. Absent or null means no groups.
fn read_groups(claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, String> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "must list groups as strings, but holds {other}: set groups_claim to a claim with group names"
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "must be a string or an array of strings, but is {other}: set groups_claim to a claim with group names"
        )),
    }
}

/// The provider's error code and description for a refused exchange, else the transport error.
fn describe_token_error<RE, T>(err: &RequestTokenError<RE, T>) -> String
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match err {
        RequestTokenError::ServerResponse(response) => {
            let mut text = format!("the provider answered `{response}`");
            if text.contains("invalid_grant") {
                text.push_str(
                    " (the code was already used, has expired, or does not match the PKCE verifier or redirect URL)",
                );
            } else if text.contains("invalid_client") || text.contains("unauthorized_client") {
                text.push_str(" (check client_id and client_secret)");
            }
            text
        }
        other => chain(other),
    }
}

#[cfg(test)]
mod tests;
