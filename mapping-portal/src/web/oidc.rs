//! Logging in with an OpenID provider (CILogon by default; Globus Auth, Keycloak and others by
//! configuration): discovery, the authorization code flow with PKCE S256, `state` and
//! `nonce`, the ID token checked (signature, issuer, audience, expiry, nonce), then userinfo
//! (its `sub` must be the ID token's).
//!
//! The provider's metadata and keys are fetched on the first login, not at start (a provider
//! that is down must not stop the export), and again after `METADATA_TTL` or when an ID token
//! names a key that is not known (key rotation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::session::PendingLogin;

/// How long discovered metadata and keys are used before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(15 * 60);
/// Each request to the provider.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The ID token signatures accepted: every asymmetric one (CILogon and Keycloak sign with
/// RS256, Globus Auth with RS512), never HMAC with the client secret, never `none`.
const ID_TOKEN_ALGORITHMS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// CILogon's claims beyond the standard ones (`org.cilogon.userinfo` scope).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CilogonClaims {
    pub idp: Option<String>,
    pub idp_name: Option<String>,
    pub eppn: Option<String>,
    pub cert_subject_dn: Option<String>,
}
impl AdditionalClaims for CilogonClaims {}

type IdFields = IdTokenFields<
    CilogonClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResp = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = openidconnect::Client<
    CilogonClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResp,
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

/// The identity provider, as configured.
#[derive(Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Besides `openid`, which is always asked.
    pub scopes: Vec<String>,
    /// URL/login/callback.
    pub redirect_uri: String,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<secret>"),
            )
            .field("scopes", &self.scopes)
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

/// Why a login failed (shown to the user, and logged).
#[derive(Debug, Error)]
pub enum LoginError {
    #[error(
        "the identity provider {issuer} cannot be reached or described itself wrongly: {reason}"
    )]
    Discovery { issuer: String, reason: String },
    #[error("the identity provider refused the login: {0}")]
    Provider(String),
    #[error("the login could not be completed at the identity provider: {0}")]
    Exchange(String),
    #[error("the identity provider's answer is not acceptable: {0}")]
    IdToken(String),
    #[error("the identity provider's userinfo answer is not acceptable: {0}")]
    UserInfo(String),
    #[error("the portal is misconfigured: {0}")]
    Config(String),
}

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub eppn: Option<String>,
    pub idp: Option<String>,
    pub idp_name: Option<String>,
    pub cert_dn: Option<String>,
}

/// A login's start: where to send the browser, and what to remember for the callback.
#[derive(Debug)]
pub struct Started {
    pub url: String,
    pub state: String,
    pub pending: PendingLogin,
}

#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    /// `settings.issuer` and `settings.redirect_uri`, parsed once.
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(Arc<OidcClient>, Instant)>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, LoginError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| LoginError::Config(format!("[portal.oidc] issuer: {e}")))?;
        let redirect = RedirectUrl::new(settings.redirect_uri.clone())
            .map_err(|e| LoginError::Config(format!("redirect URI: {e}")))?;
        let http = reqwest::Client::builder()
            // never follow a redirect from the provider's back channel (SSRF)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| LoginError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            settings,
            issuer,
            redirect,
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    async fn client(&self, refresh: bool) -> Result<Arc<OidcClient>, LoginError> {
        let mut cached = self.cached.lock().await;
        if !refresh
            && let Some((client, at)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(Arc::clone(client));
        }
        let discovery = |reason: String| LoginError::Discovery {
            issuer: self.settings.issuer.clone(),
            reason,
        };
        // checks that the metadata's issuer is the configured one, and fetches the keys
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| discovery(error_chain(&e)))?;
        let client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone());
        let client = Arc::new(client);
        tracing::info!(issuer = %self.settings.issuer, "identity provider metadata and keys fetched");
        *cached = Some((Arc::clone(&client), Instant::now()));
        Ok(client)
    }

    /// Begin a login: the authorization URL (PKCE S256, a fresh state and nonce).
    pub async fn start(&self) -> Result<Started, LoginError> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            pending: PendingLogin {
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                started: Instant::now(),
            },
        })
    }

    /// Finish a login: redeem the code (with the PKCE verifier), check the ID token against
    /// the nonce, read userinfo.
    pub async fn finish(
        &self,
        code: &str,
        pending: &PendingLogin,
    ) -> Result<LoginIdentity, LoginError> {
        let client = self.client(false).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::Config(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Exchange(error_chain(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| LoginError::IdToken("no ID token in the token response".into()))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let verify = |client: &OidcClient| -> Result<_, String> {
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(ID_TOKEN_ALGORITHMS);
            let claims = id_token
                .claims(&verifier, &nonce)
                .map_err(|e| error_chain(&e))?
                .clone();
            // at_hash, when the provider sends it, binds the access token to the ID token
            if let Some(expected) = claims.access_token_hash() {
                let alg = id_token.signing_alg().map_err(|e| error_chain(&e))?;
                let key = id_token
                    .signing_key(&verifier)
                    .map_err(|e| error_chain(&e))?;
                let actual = AccessTokenHash::from_token(token.access_token(), alg, key)
                    .map_err(|e| error_chain(&e))?;
                if actual != *expected {
                    return Err("the access token does not match the ID token's at_hash".into());
                }
            }
            Ok(claims)
        };
        let claims = match verify(&client) {
            Ok(c) => c,
            Err(first) => {
                // perhaps the provider rotated its keys: fetch them again, once
                let fresh = self.client(true).await?;
                verify(&fresh).map_err(|e| {
                    LoginError::IdToken(if e == first {
                        e
                    } else {
                        format!("{e} (before refreshing the keys: {first})")
                    })
                })?
            }
        };
        let subject = claims.subject().clone();
        let mut identity = LoginIdentity {
            issuer: claims.issuer().to_string(),
            subject: subject.to_string(),
            email: claims.email().map(|e| e.to_string()),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            eppn: claims.additional_claims().eppn.clone(),
            idp: claims.additional_claims().idp.clone(),
            idp_name: claims.additional_claims().idp_name.clone(),
            cert_dn: claims.additional_claims().cert_subject_dn.clone(),
        };
        // userinfo when the provider has it: its sub must be the ID token's
        if let Ok(request) = client.user_info(token.access_token().clone(), Some(subject)) {
            let info: UserInfoClaims<CilogonClaims, CoreGenderClaim> = request
                .request_async(&self.http)
                .await
                .map_err(|e| LoginError::UserInfo(error_chain(&e)))?;
            let extra = info.additional_claims();
            fill(&mut identity.email, info.email().map(|e| e.to_string()));
            fill(
                &mut identity.name,
                info.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
            );
            fill(&mut identity.eppn, extra.eppn.clone());
            fill(&mut identity.idp, extra.idp.clone());
            fill(&mut identity.idp_name, extra.idp_name.clone());
            fill(&mut identity.cert_dn, extra.cert_subject_dn.clone());
        }
        Ok(identity)
    }
}

/// Userinfo's value where the ID token had none.
fn fill(slot: &mut Option<String>, value: Option<String>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
