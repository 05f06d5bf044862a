//! `auth: {type: kubernetes}`: bearer tokens are Kubernetes tokens (a model server's
//! service-account token, or a user's), checked by the API server's TokenReview, with
//! roles read from RBAC bindings as Feast reads them:
//! - a service account `system:serviceaccount:NS:NAME` is the user `NS:NAME`; its roles
//!   are the roles bound to it by RoleBindings in Tern's own namespace; its namespaces
//!   are NS (and those of `system:serviceaccounts:X` groups); its groups are
//!   TokenReview's plus the groups bound by RoleBindings in NS;
//! - any other user keeps TokenReview's name and groups, and its roles are the roles
//!   and cluster roles bound to it or to one of its groups, in any namespace.
//!
//! The API server is asked once per token and the answer remembered for
//! `cache_ttl_seconds`: the first call with a token waits for the API server (bounded
//! by the request timeout of the client and [`API_TIMEOUT`]); the next ones do not.
//! Tern's own credentials are the pod's (its service-account token, re-read as the
//! kubelet rotates it, and the cluster CA).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{AuthError, AuthSetupError, Principal};
use crate::config::KubernetesConfig;

/// Bound on each call to the API server.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Most answers remembered at once.
const REMEMBERED_TOKENS: usize = 10_000;

/// Checks Kubernetes tokens with the API server.
pub struct KubernetesVerifier {
    api: String,
    account_dir: PathBuf,
    ttl: Duration,
    client: reqwest::Client,
    remembered: dashmap::DashMap<Box<str>, (Arc<Principal>, Instant), foldhash::fast::RandomState>,
}

impl std::fmt::Debug for KubernetesVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesVerifier")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl KubernetesVerifier {
    /// A verifier for `config`: the API server it names, or the in-cluster one
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`); the cluster CA from the account folder.
    pub fn new(config: &KubernetesConfig) -> Result<Self, AuthSetupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = match &config.api_server {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    AuthSetupError::Kubernetes(
                        "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set; outside a pod, give auth.api_server)".into(),
                    )
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let mut client = reqwest::Client::builder().timeout(API_TIMEOUT);
        let ca = config.service_account_dir.join("ca.crt");
        if let Ok(pem) = std::fs::read(&ca) {
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                AuthSetupError::Kubernetes(format!("cluster CA {}: {e}", ca.display()))
            })?;
            client = client.add_root_certificate(cert);
        }
        let client = client
            .build()
            .map_err(|e| AuthSetupError::Kubernetes(format!("HTTP client: {e}")))?;
        Ok(Self {
            api,
            account_dir: config.service_account_dir.clone(),
            ttl: config.cache_ttl,
            client,
            remembered: dashmap::DashMap::default(),
        })
    }

    /// The principal a token proved within the last `cache_ttl_seconds`, if any.
    pub fn remembered(&self, token: &str) -> Option<Arc<Principal>> {
        let hit = self.remembered.get(token)?;
        (hit.1.elapsed() < self.ttl).then(|| hit.0.clone())
    }

    /// Asks the API server who `token` is, and the RBAC bindings what it may be.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if let Some(p) = self.remembered(token) {
            return Ok(p);
        }
        let (username, mut groups) = self.review(token).await?;
        let mut namespaces: Vec<String> = groups
            .iter()
            .filter_map(|g| g.strip_prefix("system:serviceaccounts:"))
            .filter(|ns| !ns.is_empty() && !ns.contains(':'))
            .map(str::to_owned)
            .collect();
        let principal = match service_account(&username) {
            Some((ns, name)) => {
                namespaces.push(ns.to_owned());
                let own = self.own_namespace().await?;
                let roles = bound_roles(&self.role_bindings(Some(&own)).await?, |s| {
                    s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == ns
                });
                for binding in items(&self.role_bindings(Some(ns)).await?) {
                    for s in items(&binding["subjects"]) {
                        if s["kind"] == "Group"
                            && let Some(g) = s["name"].as_str()
                        {
                            groups.push(g.to_owned());
                        }
                    }
                }
                Principal {
                    username: format!("{ns}:{name}"),
                    roles,
                    groups: Vec::new(),
                    namespaces: Vec::new(),
                }
            }
            None => {
                let subject = |s: &Value| {
                    (s["kind"] == "User" && s["name"] == username.as_str())
                        || (s["kind"] == "Group"
                            && s["name"]
                                .as_str()
                                .is_some_and(|g| groups.contains(&g.to_owned())))
                };
                let mut roles = bound_roles(&self.role_bindings(None).await?, subject);
                let cluster = self
                    .call(
                        reqwest::Method::GET,
                        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                        None,
                    )
                    .await?;
                roles.extend(bound_roles(&cluster, subject));
                roles.sort();
                roles.dedup();
                Principal {
                    username: username.clone(),
                    roles,
                    groups: Vec::new(),
                    namespaces: Vec::new(),
                }
            }
        };
        groups.sort();
        groups.dedup();
        namespaces.sort();
        namespaces.dedup();
        let principal = Arc::new(Principal {
            groups,
            namespaces,
            ..principal
        });
        self.remember(token, &principal);
        Ok(principal)
    }

    /// Feast's check of a service-account token met by its OIDC parser: the API
    /// server's TokenReview alone; the user as TokenReview names it, no roles or
    /// groups, the account's namespace.
    pub async fn review_only(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if let Some(p) = self.remembered(token) {
            return Ok(p);
        }
        let (username, _) = self.review(token).await?;
        let namespaces = service_account(&username)
            .map(|(ns, _)| vec![ns.to_owned()])
            .unwrap_or_default();
        let principal = Arc::new(Principal {
            username,
            roles: Vec::new(),
            groups: Vec::new(),
            namespaces,
        });
        self.remember(token, &principal);
        Ok(principal)
    }

    /// TokenReview: the user name and groups, or why not.
    async fn review(&self, token: &str) -> Result<(String, Vec<String>), AuthError> {
        let review = self
            .call(
                reqwest::Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Some(json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                })),
            )
            .await?;
        let status = &review["status"];
        if status["authenticated"] != true {
            return Err(AuthError::Invalid(
                "the Kubernetes API server does not authenticate it".into(),
            ));
        }
        Ok((
            status["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            strings(&status["user"]["groups"]),
        ))
    }

    fn remember(&self, token: &str, principal: &Arc<Principal>) {
        if self.remembered.len() >= REMEMBERED_TOKENS {
            self.remembered.clear();
        }
        self.remembered
            .insert(token.into(), (principal.clone(), Instant::now()));
    }

    /// Tern's own namespace (the pod's).
    async fn own_namespace(&self) -> Result<String, AuthError> {
        let path = self.account_dir.join("namespace");
        tokio::fs::read_to_string(&path)
            .await
            .map(|s| s.trim().to_owned())
            .map_err(|e| AuthError::KeysUnavailable(format!("cannot read {}: {e}", path.display())))
    }

    /// RoleBindings of `namespace`, or of every namespace.
    async fn role_bindings(&self, namespace: Option<&str>) -> Result<Value, AuthError> {
        let path = match namespace {
            Some(ns) => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            None => "/apis/rbac.authorization.k8s.io/v1/rolebindings".to_owned(),
        };
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// One call to the API server with Tern's own service-account token.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AuthError> {
        let token_file = self.account_dir.join("token");
        // Re-read each time: the kubelet rotates projected tokens.
        let own = tokio::fs::read_to_string(&token_file).await.map_err(|e| {
            AuthError::KeysUnavailable(format!(
                "cannot read Tern's service-account token {}: {e}",
                token_file.display()
            ))
        })?;
        let url = format!("{}{path}", self.api);
        let mut request = self
            .client
            .request(method, &url)
            .bearer_auth(own.trim())
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let unavailable = |why: String| {
            AuthError::KeysUnavailable(format!("the Kubernetes API server at {url}: {why}"))
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(crate::error::chain(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(crate::error::chain(&e)))?;
        if !status.is_success() {
            return Err(unavailable(format!(
                "HTTP {status} (does Tern's service account may create tokenreviews and list rolebindings?)"
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| unavailable(format!("not JSON: {e}")))
    }
}

/// `(namespace, name)` of a service-account user name.
fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then_some((ns, name))
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array()
        .map(|a| a.iter())
        .or_else(|| v["items"].as_array().map(|a| a.iter()))
        .into_iter()
        .flatten()
}

fn strings(v: &Value) -> Vec<String> {
    items(v)
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The role names of bindings (a list response) with a subject `matches` accepts.
fn bound_roles(list: &Value, matches: impl Fn(&Value) -> bool) -> Vec<String> {
    let mut roles: Vec<String> = items(list)
        .filter(|b| items(&b["subjects"]).any(&matches))
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .map(str::to_owned)
        .collect();
    roles.sort();
    roles.dedup();
    roles
}
