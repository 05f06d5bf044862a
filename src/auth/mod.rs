//! Who is calling: Feast's `auth` section (`no_auth`, `oidc`, `kubernetes`) turned into
//! a [`Principal`] per request, without I/O on the request path.
//!
//! Owns: verifying a bearer token into a principal ([`Authenticator::verify`]), the
//! background work that keeps an identity provider's keys fresh, and the typed
//! failures the edges map to UNAUTHENTICATED / 401. Does not own: reading the token
//! from a request (the edges do: gRPC metadata and HTTP headers are both `authorization:
//! Bearer …`), nor deciding what a principal may do (permissions).

pub mod kubernetes;
pub mod oidc;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::AuthConfig;
use crate::error::{ErrorKind, clip};

/// An authenticated caller, as Feast's `User`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The first of `preferred_username`, `upn`, `azp`, `appid`, `sub`.
    pub username: String,
    /// `resource_access.<client_id>.roles` and the top-level `roles`, in that order,
    /// without duplicates.
    pub roles: Vec<String>,
    /// `groups`.
    pub groups: Vec<String>,
    /// Kubernetes namespaces (service-account tokens).
    pub namespaces: Vec<String>,
}

/// Why a caller was not authenticated. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header or metadata.
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    /// `authorization` is there but not `Bearer <token>`.
    #[error("the authorization header is not `Bearer <token>`")]
    NotBearer,
    /// The token is not valid: malformed, wrong algorithm, bad signature, expired,
    /// wrong audience or issuer.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token names a signing key the provider did not publish (yet); the keys are
    /// being fetched again.
    #[error(
        "invalid token: signing key '{0}' is unknown; the provider's keys are being fetched again, retry shortly"
    )]
    UnknownKey(String),
    /// The provider's keys have never been fetched: nothing can be verified.
    #[error("cannot verify tokens yet: the identity provider's keys are not available ({0})")]
    KeysUnavailable(String),
}

impl AuthError {
    /// How the edges answer it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::KeysUnavailable(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Unauthenticated,
        }
    }

    /// A closed set of labels for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::NotBearer => "not_bearer",
            AuthError::Invalid(_) => "invalid",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// The server's authentication, from `feature_store.yaml`'s `auth`.
#[derive(Debug, Clone, Default)]
pub enum Authenticator {
    /// `no_auth`: every caller is let in, anonymous.
    #[default]
    None,
    /// `oidc`: bearer JWTs.
    Oidc(Arc<oidc::OidcVerifier>),
    /// `kubernetes`: tokens checked by the API server's TokenReview.
    Kubernetes(Arc<kubernetes::KubernetesVerifier>),
}

/// A check that is done, or one that must ask the Kubernetes API server first.
pub enum Check {
    /// Decided from what is in memory.
    Ready(Result<Arc<Principal>, AuthError>),
    /// Waits for the API server (a Kubernetes token not seen for a while).
    Pending(std::pin::Pin<Box<dyn Future<Output = Result<Arc<Principal>, AuthError>> + Send>>),
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Check::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// An `auth` section this build cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The Kubernetes client cannot be set up (not in a pod, a bad CA file).
    #[error("auth (kubernetes): {0}")]
    Kubernetes(String),
    /// The OIDC client cannot be built (its CA file, for instance).
    #[error("auth (oidc): {0}")]
    Oidc(String),
}

impl Authenticator {
    /// The authenticator `auth` asks for; nothing is fetched yet ([`run`](Self::run)
    /// does that).
    pub fn from_config(auth: &AuthConfig) -> Result<Self, AuthSetupError> {
        match auth {
            AuthConfig::NoAuth => Ok(Authenticator::None),
            AuthConfig::Kubernetes(config) => Ok(Authenticator::Kubernetes(Arc::new(
                kubernetes::KubernetesVerifier::new(config)?,
            ))),
            AuthConfig::Oidc(config) => Ok(Authenticator::Oidc(Arc::new(oidc::OidcVerifier::new(
                (**config).clone(),
            )?))),
        }
    }

    /// Whether callers must present a token.
    pub fn enabled(&self) -> bool {
        !matches!(self, Authenticator::None)
    }

    /// The principal an `authorization` value (`None`: absent) proves: at once from
    /// memory, or after asking the Kubernetes API server.
    pub fn check(&self, authorization: Option<&[u8]>) -> Check {
        let token = match self {
            Authenticator::None => return Check::Ready(Ok(Arc::default())),
            _ => match bearer(authorization) {
                Ok(token) => token,
                Err(e) => return Check::Ready(Err(e)),
            },
        };
        match self {
            Authenticator::None => Check::Ready(Ok(Arc::default())),
            Authenticator::Oidc(oidc) => oidc.check(token),
            Authenticator::Kubernetes(k8s) => match k8s.remembered(token) {
                Some(p) => Check::Ready(Ok(p)),
                None => {
                    let (k8s, token) = (k8s.clone(), token.to_owned());
                    Check::Pending(Box::pin(async move { k8s.verify(&token).await }))
                }
            },
        }
    }

    /// Like [`check`](Self::check), waiting when it must.
    pub async fn verify(&self, authorization: Option<&[u8]>) -> Result<Arc<Principal>, AuthError> {
        match self.check(authorization) {
            Check::Ready(r) => r,
            Check::Pending(f) => f.await,
        }
    }

    /// Keeps the provider's keys fresh until `stop` turns true (nothing to do without
    /// a provider).
    pub async fn run(self, stop: watch::Receiver<bool>) {
        if let Authenticator::Oidc(oidc) = self {
            oidc.run(stop).await;
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, as RFC 6750).
fn bearer(authorization: Option<&[u8]>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

/// A client-controlled name (a key id) as quoted in messages.
fn quoted(s: &str) -> String {
    clip(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some(b"bearer   abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some(b"Basic abc")), Err(AuthError::NotBearer));
        assert_eq!(bearer(Some(b"Bearer ")), Err(AuthError::NotBearer));
        assert_eq!(bearer(Some(b"abc")), Err(AuthError::NotBearer));
    }
}
