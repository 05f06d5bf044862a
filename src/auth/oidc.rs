//! OIDC bearer tokens, as Feast's server checks them: RS256 JWTs signed by a key the
//! provider publishes (discovery document → `jwks_uri`), `exp` and `nbf` with 10 s of
//! leeway, `aud` and `iss` only when configured; the user and roles read from the
//! claims as Feast reads them.
//!
//! The keys are fetched by a background task ([`OidcVerifier::run`]) at start, every
//! `jwks_cache_lifespan_seconds`, and when a token names a key id not in the set (at
//! most once every [`UNKNOWN_KEY_REFETCH`]). A request never waits on the provider: it
//! is checked against the keys in hand, so a provider that hangs or is down slows no
//! request; a failed fetch keeps the previous keys.
//!
//! A model server sends the same token on every call until it expires, so a verified
//! token is remembered with its principal until its `exp` (plus the leeway), for as long
//! as the key set it was verified with is current: a repeat costs a map lookup instead
//! of an RSA verification. Every fetch of the keys forgets the remembered tokens, so a
//! key the provider withdrew stops validating within `jwks_cache_lifespan_seconds`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind as JwtError;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};

use super::kubernetes::KubernetesVerifier;
use super::{AuthError, AuthSetupError, Check, Principal, quoted};
use crate::config::OidcConfig;

/// Clock skew allowed on `exp` and `nbf`, as Feast.
const LEEWAY_S: u64 = 10;
/// Shortest time between fetches caused by unknown key ids (a client sending made-up
/// ids must not make Tern hammer the provider).
pub const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(2);
/// How soon a failed fetch is tried again (at most the lifespan).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Most verified tokens remembered at once; past it the memory is cleared (a flood of
/// distinct tokens costs verifications, never memory).
const REMEMBERED_TOKENS: usize = 10_000;

/// A verified token's principal and when it stops being valid.
struct Verified {
    principal: Arc<Principal>,
    /// `exp` + leeway, Unix seconds.
    valid_until: u64,
    /// The key set it was verified with.
    generation: u64,
}

/// The keys in hand, by key id.
#[derive(Default)]
struct KeySet {
    /// Increases with every key set stored.
    generation: u64,
    keys: HashMap<String, DecodingKey>,
    /// Why there are none yet (the last fetch's failure).
    missing_because: Option<String>,
    fetched: bool,
}

/// Verifies OIDC bearer tokens against the provider's published keys.
pub struct OidcVerifier {
    config: OidcConfig,
    keys: ArcSwap<KeySet>,
    verified: dashmap::DashMap<Box<str>, Verified, foldhash::fast::RandomState>,
    /// Service-account tokens (a `kubernetes.io` claim) go to the API server, as in
    /// Feast; outside a pod there is none, and why.
    kubernetes: Result<Arc<KubernetesVerifier>, String>,
    refetch: Notify,
    validation: Validation,
    client: reqwest::Client,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("discovery_url", &self.config.discovery_url)
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier for `config`; no key is fetched until [`run`](Self::run).
    pub fn new(config: OidcConfig) -> Result<Self, AuthSetupError> {
        // reqwest here has no crypto provider of its own: ring, as everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = reqwest::Client::builder().timeout(config.jwks_timeout);
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                AuthSetupError::Oidc(format!("cannot read ca_cert_path {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| AuthSetupError::Oidc(format!("ca_cert_path {}: {e}", ca.display())))?;
            client = client.add_root_certificate(cert);
        }
        if !config.verify_ssl {
            client = client.danger_accept_invalid_certs(true);
        }
        let client = client
            .build()
            .map_err(|e| AuthSetupError::Oidc(format!("HTTP client: {e}")))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            config,
            keys: ArcSwap::default(),
            verified: dashmap::DashMap::default(),
            kubernetes: KubernetesVerifier::new(&crate::config::KubernetesConfig::default())
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            refetch: Notify::new(),
            validation,
            client,
        })
    }

    /// What `token` proves: from memory or the keys in hand, or (a Kubernetes
    /// service-account token, as Feast routes them) from the API server.
    pub fn check(self: &Arc<Self>, token: &str) -> Check {
        if let Some(p) = self.remembered(token) {
            return Check::Ready(Ok(p));
        }
        if !kubernetes_claim(token) {
            return Check::Ready(self.verify_and_remember(token));
        }
        match &self.kubernetes {
            Ok(k8s) => match k8s.remembered(token) {
                Some(p) => Check::Ready(Ok(p)),
                None => {
                    let (k8s, token) = (k8s.clone(), token.to_owned());
                    Check::Pending(Box::pin(async move { k8s.review_only(&token).await }))
                }
            },
            Err(why) => Check::Ready(Err(AuthError::Invalid(format!(
                "a Kubernetes service-account token, which is checked with the Kubernetes API server: {why}"
            )))),
        }
    }

    fn remembered(&self, token: &str) -> Option<Arc<Principal>> {
        let hit = self.verified.get(token)?;
        (hit.generation == self.keys.load().generation && unix_now() < hit.valid_until)
            .then(|| hit.principal.clone())
    }

    /// The principal `token` proves, from the keys in hand. CPU only.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        match self.remembered(token) {
            Some(p) => Ok(p),
            None => self.verify_and_remember(token),
        }
    }

    /// Verifies in full, and remembers the token for the key set it was verified with.
    fn verify_and_remember(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let generation = self.keys.load().generation;
        let (principal, exp) = self.verify_fully(token)?;
        let principal = Arc::new(principal);
        if self.verified.len() >= REMEMBERED_TOKENS {
            self.verified.clear();
        }
        self.verified.insert(
            token.into(),
            Verified {
                principal: principal.clone(),
                valid_until: exp.saturating_add(LEEWAY_S),
                generation,
            },
        );
        Ok(principal)
    }

    /// Signature and claims, every time; the principal and the token's `exp`.
    fn verify_fully(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // A header that names an algorithm jsonwebtoken does not know ("none"):
            // say so rather than "not a JWT".
            match declared_algorithm(token) {
                Some(alg) => AuthError::Invalid(format!(
                    "its algorithm is not RS256 ('{}'; unsigned tokens are refused)",
                    quoted(&alg)
                )),
                None => AuthError::Invalid("not a JWT".into()),
            }
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!(
                "signed with {:?}; only RS256 is accepted",
                header.alg
            )));
        }
        let keys = self.keys.load();
        if !keys.fetched {
            return Err(AuthError::KeysUnavailable(
                keys.missing_because
                    .clone()
                    .unwrap_or_else(|| "not fetched yet".into()),
            ));
        }
        let key = match &header.kid {
            Some(kid) => keys.keys.get(kid).ok_or_else(|| {
                self.refetch.notify_one();
                AuthError::UnknownKey(quoted(kid))
            })?,
            // No key id: acceptable only when there is no choice to make.
            None if keys.keys.len() == 1 => keys
                .keys
                .values()
                .next()
                .ok_or_else(|| AuthError::Invalid("no key id (kid) in its header".into()))?,
            None => return Err(AuthError::Invalid("no key id (kid) in its header".into())),
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|e| AuthError::Invalid(self.reason(e.kind())))?;
        // Validation required `exp`; a token that somehow lacks a number is not kept.
        let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((
            principal(&data.claims, self.config.client_id.as_deref())?,
            exp,
        ))
    }

    fn reason(&self, e: &JwtError) -> String {
        match e {
            JwtError::ExpiredSignature => "expired".into(),
            JwtError::ImmatureSignature => "not valid yet (nbf)".into(),
            JwtError::InvalidSignature => "its signature does not verify".into(),
            JwtError::InvalidAudience => format!(
                "wrong audience (expected '{}')",
                self.config.audience.as_deref().unwrap_or_default()
            ),
            JwtError::InvalidIssuer => format!(
                "wrong issuer (expected '{}')",
                self.config.issuer.as_deref().unwrap_or_default()
            ),
            JwtError::MissingRequiredClaim(claim) => format!("missing claim '{}'", quoted(claim)),
            JwtError::InvalidAlgorithm => "its algorithm is not RS256".into(),
            _ => "malformed".into(),
        }
    }

    /// Fetches the keys now and then as the module docs say, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut last_error: Option<String> = None;
        loop {
            let started = Instant::now();
            let wait = match self.fetch().await {
                Ok(keys) => {
                    let count = keys.len();
                    // Every fetch starts a new generation: remembered tokens are
                    // verified again against what the provider publishes now.
                    let generation = self.keys.load().generation + 1;
                    self.keys.store(Arc::new(KeySet {
                        generation,
                        keys,
                        missing_because: None,
                        fetched: true,
                    }));
                    if last_error.take().is_some() {
                        tracing::info!(provider = %self.config.discovery_url, keys = count, "OIDC signing keys fetched again");
                    } else {
                        tracing::debug!(provider = %self.config.discovery_url, keys = count, "OIDC signing keys fetched");
                    }
                    self.config.jwks_lifespan
                }
                Err(error) => {
                    let current = self.keys.load();
                    if !current.fetched {
                        self.keys.store(Arc::new(KeySet {
                            missing_because: Some(error.clone()),
                            ..KeySet::default()
                        }));
                    }
                    if last_error.as_deref() != Some(&error) {
                        tracing::error!(
                            provider = %self.config.discovery_url,
                            %error,
                            keeping_previous_keys = current.fetched,
                            "cannot fetch the OIDC provider's signing keys"
                        );
                    }
                    last_error = Some(error);
                    self.config.jwks_lifespan.min(RETRY_AFTER_FAILURE)
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.refetch.notified() => {
                    let since = started.elapsed();
                    if since < UNKNOWN_KEY_REFETCH {
                        tokio::select! {
                            _ = stop.changed() => return,
                            () = tokio::time::sleep(UNKNOWN_KEY_REFETCH - since) => {}
                        }
                    }
                }
            }
        }
    }

    /// Discovery document → `jwks_uri` → the RSA signing keys, by key id.
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let discovery: Map<String, Value> = self.get_json(&self.config.discovery_url).await?;
        // Feast refuses a provider whose document lacks these; so does Tern.
        for endpoint in ["authorization_endpoint", "token_endpoint"] {
            if !discovery.get(endpoint).is_some_and(Value::is_string) {
                return Err(format!("the discovery document has no {endpoint}"));
            }
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no jwks_uri")?
            .to_owned();
        let set: JwkSet = self.get_json(&jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let signing = matches!(
                jwk.common.public_key_use,
                None | Some(PublicKeyUse::Signature)
            );
            let rsa = matches!(jwk.algorithm, AlgorithmParameters::RSA(_));
            let (Some(kid), true, true) = (&jwk.common.key_id, signing, rsa) else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid.clone(), key);
                }
                Err(e) => {
                    tracing::warn!(kid = %quoted(kid), error = %e, "skipping an unusable key in the provider's JWKS")
                }
            }
        }
        if keys.is_empty() {
            return Err(format!("{jwks_uri} holds no RSA signing key"));
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", crate::error::chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {}", crate::error::chain(&e)))?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the JSON expected: {e}"))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a token's (unverified) payload has a `kubernetes.io` object: a Kubernetes
/// service-account token.
fn kubernetes_claim(token: &str) -> bool {
    use base64::Engine as _;
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|claims| claims.get("kubernetes.io").is_some_and(Value::is_object))
}

/// The `alg` a token's header declares, if the header is readable JSON.
fn declared_algorithm(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let header: Map<String, Value> = serde_json::from_slice(&json).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// The user, roles and groups in verified claims, as Feast reads them.
fn principal(claims: &Map<String, Value>, client_id: Option<&str>) -> Result<Principal, AuthError> {
    let username = ["preferred_username", "upn", "azp", "appid", "sub"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
        .ok_or_else(|| {
            AuthError::Invalid(
                "no user claim: expected one of preferred_username, upn, azp, appid or sub".into(),
            )
        })?
        .to_owned();
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut roles = match client_id {
        Some(id) => strings(
            claims
                .get("resource_access")
                .and_then(|r| r.get(id))
                .and_then(|c| c.get("roles")),
        ),
        None => Vec::new(),
    };
    for role in strings(claims.get("roles")) {
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(Principal {
        username,
        roles,
        groups: strings(claims.get("groups")),
        namespaces: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> OidcVerifier {
        OidcVerifier::new(OidcConfig {
            discovery_url: "http://127.0.0.1:9/.well-known/openid-configuration".into(),
            client_id: None,
            verify_ssl: true,
            ca_cert: None,
            audience: None,
            issuer: None,
            jwks_lifespan: Duration::from_secs(300),
            jwks_timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn remembered_tokens_end_with_their_expiry_and_their_key_set() {
        let v = verifier();
        let alice = Arc::new(Principal {
            username: "alice".into(),
            ..Principal::default()
        });
        let remember = |token: &str, valid_until: u64, generation: u64| {
            v.verified.insert(
                token.into(),
                Verified {
                    principal: alice.clone(),
                    valid_until,
                    generation,
                },
            );
        };
        remember("fresh", unix_now() + 60, 0);
        remember("expired", unix_now() - 1, 0);
        remember("old-keys", unix_now() + 60, 7);
        assert_eq!(v.verify("fresh").unwrap().username, "alice");
        // Not remembered any more: verified in full, which fails here (no keys).
        for token in ["expired", "old-keys", "unknown"] {
            assert!(
                matches!(
                    v.verify(token),
                    Err(AuthError::Invalid(_) | AuthError::KeysUnavailable(_))
                ),
                "{token}"
            );
        }
    }

    #[test]
    fn claims_as_feast_reads_them() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"s-1","preferred_username":"alice","resource_access":{"tern":{"roles":["reader","writer"]},"other":{"roles":["x"]}},"roles":["writer","admin"],"realm_access":{"roles":["ignored"]},"groups":["ml"]}"#,
        )
        .unwrap();
        let p = principal(&claims, Some("tern")).unwrap();
        assert_eq!(p.username, "alice");
        assert_eq!(p.roles, ["reader", "writer", "admin"]);
        assert_eq!(p.groups, ["ml"]);
        let p = principal(&claims, None).unwrap();
        assert_eq!(p.roles, ["writer", "admin"]);
        let app: Map<String, Value> =
            serde_json::from_str(r#"{"sub":"s-1","azp":"svc","preferred_username":7}"#).unwrap();
        assert_eq!(principal(&app, None).unwrap().username, "svc");
        let none: Map<String, Value> = serde_json::from_str(r#"{"iss":"x"}"#).unwrap();
        assert!(principal(&none, None).is_err());
    }
}
