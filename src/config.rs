//! Feast's `feature_store.yaml`, read the way Feast reads it.
//!
//! Owns: the keys a serving process needs (project, registry, online store, entity key
//! serialization), their defaults, path resolution against the YAML's folder and
//! `${VAR}` expansion. Unknown keys are ignored with a debug log (the file also
//! configures Feast's offline side); a bad value stops start-up with an error naming
//! the key. Does not own: server settings (those are CLI flags, see `cli`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Everything Tern reads from `feature_store.yaml`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    /// Feast project; every registry lookup is filtered on it.
    pub project: String,
    /// Folder holding the YAML; relative paths resolve against it.
    pub repo_dir: PathBuf,
    /// Where the registry lives and how it is refreshed.
    pub registry: RegistryConfig,
    /// Where feature values live.
    pub online_store: OnlineStoreConfig,
    /// Byte layout of entity keys in the online store.
    pub entity_key_serialization: KeySerialization,
    /// `environment: development` (Tern's key): prevent_destroy is not enforced, as in
    /// a Tecton development workspace.
    pub development: bool,
    /// `auth`: who may call the server.
    pub auth: AuthConfig,
}

/// The `auth` key (Feast's): how callers are authenticated.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AuthConfig {
    /// `no_auth` (the default): everyone who reaches the port.
    #[default]
    NoAuth,
    /// `oidc`: bearer JWTs signed by the provider's keys (boxed: every command's
    /// future carries a `RepoConfig`).
    Oidc(Box<OidcConfig>),
    /// `kubernetes`: service-account tokens checked with the API server.
    Kubernetes(KubernetesConfig),
}

/// `auth: {type: kubernetes}`. Feast reads nothing else on the server; Tern's own keys
/// point it at an API server outside a pod (tests, development).
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// `api_server` (Tern's): the API server's URL; default the in-cluster one.
    pub api_server: Option<String>,
    /// `service_account_dir` (Tern's): where the pod's token, `ca.crt` and `namespace`
    /// are; default `/var/run/secrets/kubernetes.io/serviceaccount`.
    pub service_account_dir: PathBuf,
    /// `cache_ttl_seconds` (Tern's, default 60): how long the API server's answer for a
    /// token is reused.
    pub cache_ttl: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_server: None,
            service_account_dir: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount"),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// `auth: {type: oidc, ...}`, as Feast's server reads it. The keys Feast's clients read
/// from the same file (`username`, `password`, `client_secret`, `token`, ...) are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcConfig {
    /// `auth_discovery_url`: the provider's `.well-known/openid-configuration`.
    pub discovery_url: String,
    /// `client_id`: roles are read from `resource_access.<client_id>.roles`.
    pub client_id: Option<String>,
    /// `verify_ssl` (default true): verify the provider's certificate.
    pub verify_ssl: bool,
    /// `ca_cert_path`: a PEM CA for the provider's certificate.
    pub ca_cert: Option<PathBuf>,
    /// `audience`: when set, tokens must carry it in `aud`.
    pub audience: Option<String>,
    /// `issuer`: when set, tokens must carry it in `iss`.
    pub issuer: Option<String>,
    /// `jwks_cache_lifespan_seconds` (300): how long fetched keys are used before they
    /// are fetched again.
    pub jwks_lifespan: Duration,
    /// `jwks_request_timeout_seconds` (10): bound on each fetch from the provider.
    pub jwks_timeout: Duration,
}

/// The `registry` key.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// File or SQL registry.
    pub location: RegistryLocation,
    /// `cache_ttl_seconds`: reload period; `None` for 0 (never by timer).
    pub cache_ttl: Option<Duration>,
    /// `enable_online_feature_view_versioning`: `@vN` refs and per-version tables.
    pub versioning: bool,
    /// `serve_features_while_materializing`: MATERIALIZING views keep serving.
    pub serve_while_materializing: bool,
}

/// Where the registry is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryLocation {
    /// A `registry.db` file (the serialized `feast.core.Registry`).
    File(PathBuf),
    /// A SQLAlchemy-style URL of Feast's SQL registry, as written in the YAML.
    Sql(String),
    /// A `registry.db` in object storage: `s3://`, `gs://` or `az://` URL.
    Object(String),
}

/// The `online_store` key.
#[derive(Debug, Clone, PartialEq)]
pub enum OnlineStoreConfig {
    /// `type: sqlite`.
    Sqlite {
        /// Database file (default `data/online.db` under the repo folder).
        path: PathBuf,
    },
    /// `type: redis`.
    Redis(RedisConfig),
}

/// `online_store` with `type: redis`, as Feast spells it.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis` or `redis_cluster` (Feast's `redis_sentinel` is refused).
    pub redis_type: RedisType,
    /// `host:port` entries of the connection string; a single server uses the first.
    pub nodes: Vec<(String, u16)>,
    /// `username=` (Redis ACL user).
    pub username: Option<String>,
    /// `password=`; never logged.
    pub password: Option<String>,
    /// `db=` (single server only).
    pub db: i64,
    /// `ssl=true` and its certificate options.
    pub tls: Option<RedisTls>,
    /// `key_ttl_seconds`: expiry Feast sets on writes; reads ignore it.
    pub key_ttl_seconds: Option<u64>,
}

/// TLS options of a Redis connection string (redis-py's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// `ssl_ca_certs`: PEM file of the CA to trust instead of the system roots.
    pub ca_certs: Option<PathBuf>,
    /// `ssl_certfile` + `ssl_keyfile`: client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `ssl_cert_reqs`: `required` (default) verifies the server; `none` does not.
    pub verify: bool,
}

impl fmt::Debug for RedisConfig {
    // The password must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("redis_type", &self.redis_type)
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("key_ttl_seconds", &self.key_ttl_seconds)
            .finish()
    }
}

impl RedisConfig {
    /// `host:port[,host:port]` for messages (no credentials).
    pub fn display_nodes(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        nodes.join(",")
    }
}

/// Parses Feast's `connection_string`: comma-separated `host:port` and `key=value` tokens.
/// Errors name the offending token or key, never a value (it may be a password).
fn parse_connection_string(text: &str, repo_dir: &Path) -> Result<Connection, String> {
    let mut nodes = Vec::new();
    let (mut username, mut password, mut db) = (None, None, 0i64);
    let (mut ssl, mut ca, mut certfile, mut keyfile, mut verify) = (false, None, None, None, true);
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if let Some((key, value)) = token.split_once('=') {
            let value = value.trim().trim_matches('"');
            let flag = |v: &str| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(format!("option '{key}' expects true or false")),
            };
            match key.trim() {
                "password" => password = Some(value.to_owned()),
                "username" => username = Some(value.to_owned()),
                "db" => {
                    db = value
                        .parse()
                        .map_err(|_| "option 'db' expects a database number".to_owned())?
                }
                "ssl" => ssl = flag(value)?,
                "ssl_ca_certs" => ca = Some(resolve(repo_dir, value)),
                "ssl_certfile" => certfile = Some(resolve(repo_dir, value)),
                "ssl_keyfile" => keyfile = Some(resolve(repo_dir, value)),
                "ssl_cert_reqs" => {
                    verify = match value.to_ascii_lowercase().as_str() {
                        "required" | "optional" => true,
                        "none" => false,
                        _ => {
                            return Err(
                                "option 'ssl_cert_reqs' expects required, optional or none".into(),
                            );
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown option '{other}' (accepted: password, username, db, ssl, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs)"
                    ));
                }
            }
        } else {
            let (host, port) = token
                .rsplit_once(':')
                .ok_or_else(|| format!("'{token}' is neither host:port nor key=value"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("'{token}': the port must be a number from 1 to 65535"))?;
            if host.is_empty() || port == 0 {
                return Err(format!("'{token}' is not a valid host:port"));
            }
            nodes.push((host.trim_matches(['[', ']']).to_owned(), port));
        }
    }
    if nodes.is_empty() {
        return Err("no host:port given".into());
    }
    let client_cert = match (certfile, keyfile) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("ssl_certfile and ssl_keyfile go together".into()),
    };
    let tls = ssl.then_some(RedisTls {
        ca_certs: ca,
        client_cert,
        verify,
    });
    Ok(Connection {
        nodes,
        username,
        password,
        db,
        tls,
    })
}

/// The parts of a connection string.
#[derive(Debug)]
struct Connection {
    nodes: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    tls: Option<RedisTls>,
}

/// Redis deployment shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisType {
    /// One server (the first address of the connection string).
    Single,
    /// Redis Cluster; every address is a startup node.
    Cluster,
}

/// `entity_key_serialization_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySerialization {
    /// Version 2: no key count, no key lengths (pre-0.38 repos).
    V2,
    /// Version 3, Feast's default: counted, length-prefixed, keys sorted.
    V3,
}

/// A `feature_store.yaml` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The YAML path.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Not YAML, or a value of the wrong type (serde's message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The YAML path.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A key with a value Tern cannot use.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The YAML path.
        path: PathBuf,
        /// Dotted key, e.g. `registry.registry_type`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

const DEFAULT_CACHE_TTL_SECONDS: u64 = 600;
const DEFAULT_SQLITE_PATH: &str = "data/online.db";

/// Reads and validates `feature_store.yaml`. `env` looks up variables for `${VAR}`
/// expansion (pass `|k| std::env::var(k).ok()` in production).
pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<RepoConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        cause: source,
    })?;
    let repo_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_owned();
    parse(&text, path, &repo_dir, env)
}

/// Parses YAML text; `path` is only used in messages, `repo_dir` anchors relative paths.
pub fn parse(
    text: &str,
    path: &Path,
    repo_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<RepoConfig, ConfigError> {
    let expanded = expand_env(text, env);
    let deserializer = serde_norway::Deserializer::from_str(&expanded);
    let raw: RawConfig = serde_ignored::deserialize(deserializer, |ignored| {
        tracing::debug!(key = %ignored, file = %path.display(), "ignoring feature_store.yaml key Tern does not use");
    })
    .map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let invalid = |key: &'static str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };

    let registry = raw.registry.ok_or_else(|| {
        invalid(
            "registry",
            "required: the path of registry.db (or a mapping with `path`)".into(),
        )
    })?;
    let online_store = build_online_store(raw.online_store.unwrap_or_default(), repo_dir)
        .map_err(|(key, msg)| invalid(key, msg))?;

    let project = raw
        .project
        .ok_or_else(|| invalid("project", "required: the Feast project to serve".into()))?;
    validate_project(
        &project,
        matches!(online_store, OnlineStoreConfig::Sqlite { .. }),
    )
    .map_err(|msg| invalid("project", msg))?;

    let registry = build_registry(registry, repo_dir).map_err(|(key, msg)| invalid(key, msg))?;

    let entity_key_serialization = match raw.entity_key_serialization_version.unwrap_or(3) {
        3 => KeySerialization::V3,
        2 => KeySerialization::V2,
        other => {
            return Err(invalid(
                "entity_key_serialization_version",
                format!(
                    "{other} is not supported: Tern reads versions 2 and 3 (Feast's default is 3)"
                ),
            ));
        }
    };

    let development = match raw.environment.as_deref() {
        None | Some("production") => false,
        Some("development") => true,
        Some(other) => {
            return Err(invalid(
                "environment",
                format!(
                    "'{other}' is not an environment: use 'production' (the default) or 'development'"
                ),
            ));
        }
    };

    let auth = build_auth(raw.auth.unwrap_or_default(), repo_dir)
        .map_err(|(key, msg)| invalid(key, msg))?;

    Ok(RepoConfig {
        project,
        repo_dir: repo_dir.to_owned(),
        registry,
        online_store,
        entity_key_serialization,
        development,
        auth,
    })
}

fn build_auth(raw: RawAuth, repo_dir: &Path) -> Result<AuthConfig, KeyError> {
    let empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    match raw.auth_type.as_deref().unwrap_or("no_auth") {
        "no_auth" => Ok(AuthConfig::NoAuth),
        "kubernetes" => {
            let defaults = KubernetesConfig::default();
            Ok(AuthConfig::Kubernetes(KubernetesConfig {
                api_server: empty(raw.api_server),
                service_account_dir: empty(raw.service_account_dir)
                    .map_or(defaults.service_account_dir, |p| resolve(repo_dir, &p)),
                cache_ttl: raw
                    .cache_ttl_seconds
                    .map_or(defaults.cache_ttl, Duration::from_secs),
            }))
        }
        "oidc" => {
            let discovery_url = empty(raw.auth_discovery_url).ok_or((
                "auth.auth_discovery_url",
                "required with type: oidc (the provider's .well-known/openid-configuration URL)"
                    .to_owned(),
            ))?;
            let lifespan = raw.jwks_cache_lifespan_seconds.unwrap_or(300);
            if lifespan == 0 {
                return Err((
                    "auth.jwks_cache_lifespan_seconds",
                    "must be greater than 0".into(),
                ));
            }
            let timeout = raw.jwks_request_timeout_seconds.unwrap_or(10.0);
            let timeout = Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero())
                .ok_or((
                    "auth.jwks_request_timeout_seconds",
                    format!("{timeout} is not a number of seconds greater than 0"),
                ))?;
            Ok(AuthConfig::Oidc(Box::new(OidcConfig {
                discovery_url,
                client_id: empty(raw.client_id),
                verify_ssl: raw.verify_ssl.unwrap_or(true),
                ca_cert: empty(raw.ca_cert_path).map(|p| resolve(repo_dir, &p)),
                audience: empty(raw.audience),
                issuer: empty(raw.issuer),
                jwks_lifespan: Duration::from_secs(lifespan),
                jwks_timeout: timeout,
            })))
        }
        other => Err((
            "auth.type",
            format!("'{other}' is not an auth type: use no_auth, oidc or kubernetes"),
        )),
    }
}

fn validate_project(project: &str, sqlite: bool) -> Result<(), String> {
    let first = project.chars().next();
    if first.is_none() {
        return Err("must not be empty".into());
    }
    if matches!(first, Some('_' | '-')) {
        return Err(format!("'{project}' must not start with '_' or '-'"));
    }
    if let Some(c) = project
        .chars()
        .find(|c| !(c.is_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "'{project}' contains '{c}': only letters, digits, '_' and '-' are allowed"
        ));
    }
    if sqlite && project.contains('-') {
        return Err(format!(
            "'{project}' contains '-', which Feast forbids with the sqlite online store"
        ));
    }
    Ok(())
}

type KeyError = (&'static str, String);

fn build_registry(raw: RawRegistry, repo_dir: &Path) -> Result<RegistryConfig, KeyError> {
    let ttl = raw.cache_ttl_seconds.unwrap_or(DEFAULT_CACHE_TTL_SECONDS);
    let path = raw.path.unwrap_or_default();
    let location = match raw.registry_type.as_deref().unwrap_or("file") {
        "file" if crate::registry::object::is_object_url(&path) => RegistryLocation::Object(path),
        "file" => RegistryLocation::File(resolve_file_registry(&path, repo_dir)?),
        "sql" => {
            if path.is_empty() {
                return Err((
                    "registry.path",
                    "required with registry_type: sql (a URL such as postgresql://user@host/db)"
                        .into(),
                ));
            }
            RegistryLocation::Sql(path)
        }
        other => {
            return Err((
                "registry.registry_type",
                format!("'{other}' is not supported: Tern reads 'file' and 'sql' registries"),
            ));
        }
    };
    Ok(RegistryConfig {
        location,
        cache_ttl: (ttl > 0).then(|| Duration::from_secs(ttl)),
        versioning: raw.enable_online_feature_view_versioning.unwrap_or(false),
        serve_while_materializing: raw.serve_features_while_materializing.unwrap_or(false),
    })
}

fn resolve_file_registry(path: &str, repo_dir: &Path) -> Result<PathBuf, KeyError> {
    if path.is_empty() {
        return Err(("registry.path", "required: the path of registry.db".into()));
    }
    let local = path.strip_prefix("file://").unwrap_or(path);
    if let Some((scheme, _)) = local.split_once("://") {
        return Err((
            "registry.path",
            format!(
                "'{scheme}://' registries are not supported: Tern reads a registry.db in a local file, s3://, gs:// or az://, or a SQL registry"
            ),
        ));
    }
    Ok(resolve(repo_dir, local))
}

fn build_online_store(raw: RawOnlineStore, repo_dir: &Path) -> Result<OnlineStoreConfig, KeyError> {
    match raw.store_type.as_deref().unwrap_or("sqlite") {
        "sqlite" => Ok(OnlineStoreConfig::Sqlite {
            path: resolve(repo_dir, raw.path.as_deref().unwrap_or(DEFAULT_SQLITE_PATH)),
        }),
        "redis" => {
            let redis_type = match raw.redis_type.as_deref().unwrap_or("redis") {
                "redis" => RedisType::Single,
                "redis_cluster" => RedisType::Cluster,
                other => {
                    return Err((
                        "online_store.redis_type",
                        format!("'{other}' is not supported: use 'redis' or 'redis_cluster'"),
                    ));
                }
            };
            if let Some(client) = raw.client.as_deref()
                && !matches!(client, "redis" | "glide")
            {
                return Err((
                    "online_store.client",
                    format!("'{client}' is not a Feast redis client: use 'redis' or 'glide'"),
                ));
            }
            let text = raw.connection_string.as_deref().unwrap_or("localhost:6379");
            let Connection {
                nodes,
                username,
                password,
                db,
                tls,
            } = parse_connection_string(text, repo_dir)
                .map_err(|msg| ("online_store.connection_string", msg))?;
            Ok(OnlineStoreConfig::Redis(RedisConfig {
                redis_type,
                nodes,
                username,
                password,
                db,
                tls,
                key_ttl_seconds: raw.key_ttl_seconds,
            }))
        }
        "none" | "null" => Err((
            "online_store.type",
            "the online store is disabled; Tern serves features from an online store (sqlite or redis)".into(),
        )),
        other => Err((
            "online_store.type",
            format!("'{other}' is not supported: Tern serves 'sqlite' and 'redis' online stores"),
        )),
    }
}

fn resolve(repo_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        repo_dir.join(p)
    }
}

/// Expands `$NAME` and `${NAME}` like Python's `os.path.expandvars`, which Feast runs
/// on the raw YAML: unknown variables are left as written.
fn expand_env(text: &str, env: impl Fn(&str) -> Option<String>) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after.find(|c| !is_name(c)).unwrap_or(after.len());
            (&after[..end], end)
        };
        match (name.is_empty(), env(name)) {
            (false, Some(value)) => out.push_str(&value),
            _ => out.push_str(&rest[pos..pos + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    project: Option<String>,
    registry: Option<RawRegistry>,
    online_store: Option<RawOnlineStore>,
    entity_key_serialization_version: Option<u32>,
    environment: Option<String>,
    auth: Option<RawAuth>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAuth {
    #[serde(rename = "type")]
    auth_type: Option<String>,
    auth_discovery_url: Option<String>,
    client_id: Option<String>,
    verify_ssl: Option<bool>,
    ca_cert_path: Option<String>,
    audience: Option<String>,
    issuer: Option<String>,
    jwks_cache_lifespan_seconds: Option<u64>,
    jwks_request_timeout_seconds: Option<f64>,
    api_server: Option<String>,
    service_account_dir: Option<String>,
    cache_ttl_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRegistryMap {
    registry_type: Option<String>,
    path: Option<String>,
    cache_ttl_seconds: Option<u64>,
    enable_online_feature_view_versioning: Option<bool>,
    serve_features_while_materializing: Option<bool>,
}

/// `registry:` is either a path string or a mapping.
#[derive(Debug, Default)]
struct RawRegistry {
    registry_type: Option<String>,
    path: Option<String>,
    cache_ttl_seconds: Option<u64>,
    enable_online_feature_view_versioning: Option<bool>,
    serve_features_while_materializing: Option<bool>,
}

impl<'de> Deserialize<'de> for RawRegistry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRegistry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a registry path or a mapping with `path`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRegistry, E> {
                Ok(RawRegistry {
                    path: Some(v.to_owned()),
                    ..RawRegistry::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRegistry, A::Error> {
                let m = RawRegistryMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRegistry {
                    registry_type: m.registry_type,
                    path: m.path,
                    cache_ttl_seconds: m.cache_ttl_seconds,
                    enable_online_feature_view_versioning: m.enable_online_feature_view_versioning,
                    serve_features_while_materializing: m.serve_features_while_materializing,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `online_store:` is a mapping with `type`, or just the type name.
#[derive(Debug, Default)]
struct RawOnlineStore {
    store_type: Option<String>,
    path: Option<String>,
    redis_type: Option<String>,
    connection_string: Option<String>,
    key_ttl_seconds: Option<u64>,
    client: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawOnlineStoreMap {
    #[serde(rename = "type")]
    store_type: Option<String>,
    path: Option<String>,
    redis_type: Option<String>,
    connection_string: Option<String>,
    key_ttl_seconds: Option<u64>,
    client: Option<String>,
}

impl<'de> Deserialize<'de> for RawOnlineStore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawOnlineStore;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an online store type or a mapping with `type`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawOnlineStore, E> {
                Ok(RawOnlineStore {
                    store_type: Some(v.to_owned()),
                    ..RawOnlineStore::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawOnlineStore, A::Error> {
                let m = RawOnlineStoreMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawOnlineStore {
                    store_type: m.store_type,
                    path: m.path,
                    redis_type: m.redis_type,
                    connection_string: m.connection_string,
                    key_ttl_seconds: m.key_ttl_seconds,
                    client: m.client,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(yaml: &str) -> Result<RepoConfig, ConfigError> {
        parse(
            yaml,
            Path::new("feature_store.yaml"),
            Path::new("/repo"),
            |k| (k == "REDIS_PASSWORD").then(|| "s3cret".to_owned()),
        )
    }

    #[test]
    fn minimal_file_uses_feast_defaults() {
        let c = parse_str("project: demo\nregistry: data/registry.db\n").unwrap();
        assert_eq!(c.project, "demo");
        assert_eq!(
            c.registry.location,
            RegistryLocation::File("/repo/data/registry.db".into())
        );
        assert_eq!(c.registry.cache_ttl, Some(Duration::from_secs(600)));
        assert!(!c.registry.versioning);
        assert_eq!(
            c.online_store,
            OnlineStoreConfig::Sqlite {
                path: "/repo/data/online.db".into()
            }
        );
        assert_eq!(c.entity_key_serialization, KeySerialization::V3);
    }

    #[test]
    fn auth_section_as_feast_writes_it() {
        let c = parse_str("project: demo\nregistry: r.db\n").unwrap();
        assert_eq!(c.auth, AuthConfig::NoAuth);
        let c = parse_str(
            "project: demo\nregistry: r.db\nauth:\n  type: oidc\n  client_id: tern\n  \
             auth_discovery_url: https://idp/realms/ml/.well-known/openid-configuration\n  \
             username: reader\n  password: secret\n  audience: tern\n  ca_cert_path: ca.pem\n",
        )
        .unwrap();
        let AuthConfig::Oidc(oidc) = c.auth else {
            panic!("expected oidc")
        };
        assert_eq!(oidc.client_id.as_deref(), Some("tern"));
        assert_eq!(oidc.audience.as_deref(), Some("tern"));
        assert_eq!(oidc.issuer, None);
        assert_eq!(oidc.ca_cert, Some(PathBuf::from("/repo/ca.pem")));
        assert_eq!(oidc.jwks_lifespan, Duration::from_secs(300));
        assert!(oidc.verify_ssl);
        for (yaml, key) in [
            ("auth: {type: oidc}", "auth.auth_discovery_url"),
            ("auth: {type: ldap}", "auth.type"),
            (
                "auth: {type: oidc, auth_discovery_url: u, jwks_cache_lifespan_seconds: 0}",
                "auth.jwks_cache_lifespan_seconds",
            ),
        ] {
            let err = parse_str(&format!("project: demo\nregistry: r.db\n{yaml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn registry_in_object_storage() {
        for url in [
            "s3://bucket/feast/registry.db",
            "gs://bucket/registry.pb",
            "az://container/registry.db",
        ] {
            let c = parse_str(&format!("project: demo\nregistry: {url}\n")).unwrap();
            assert_eq!(
                c.registry.location,
                RegistryLocation::Object(url.to_owned())
            );
        }
        let err = parse_str("project: demo\nregistry: hdfs://nn/registry.db\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'hdfs://' registries are not supported") && err.contains("s3://"),
            "{err}"
        );
    }

    #[test]
    fn registry_mapping_and_unknown_keys() {
        let c = parse_str(
            "project: demo\nprovider: local\noffline_store: {type: file}\n\
             registry:\n  path: /abs/registry.db\n  cache_ttl_seconds: 0\n  \
             enable_online_feature_view_versioning: true\n  some_future_key: 1\n\
             online_store:\n  type: sqlite\n  path: online.db\n  vector_enabled: false\n\
             entity_key_serialization_version: 2\n",
        )
        .unwrap();
        assert_eq!(
            c.registry.location,
            RegistryLocation::File("/abs/registry.db".into())
        );
        assert_eq!(c.registry.cache_ttl, None);
        assert!(c.registry.versioning);
        assert_eq!(
            c.online_store,
            OnlineStoreConfig::Sqlite {
                path: "/repo/online.db".into()
            }
        );
        assert_eq!(c.entity_key_serialization, KeySerialization::V2);
    }

    #[test]
    fn redis_store_with_env_expansion() {
        let c = parse_str(
            "project: demo\nregistry: r.db\nonline_store:\n  type: redis\n  redis_type: redis_cluster\n  \
             connection_string: \"h1:6379,h2:6379,password=${REDIS_PASSWORD},ssl=true\"\n  key_ttl_seconds: 60\n",
        )
        .unwrap();
        let OnlineStoreConfig::Redis(r) = c.online_store else {
            panic!("expected redis")
        };
        assert_eq!(r.redis_type, RedisType::Cluster);
        assert_eq!(r.nodes, [("h1".to_owned(), 6379), ("h2".to_owned(), 6379)]);
        assert_eq!(r.password.as_deref(), Some("s3cret"));
        assert_eq!(
            r.tls,
            Some(RedisTls {
                ca_certs: None,
                client_cert: None,
                verify: true
            })
        );
        assert_eq!(r.key_ttl_seconds, Some(60));
        assert!(
            !format!("{r:?}").contains("s3cret"),
            "debug output hides the password"
        );
    }

    #[test]
    fn connection_string_options_and_errors() {
        let Connection {
            nodes,
            username: user,
            password: pass,
            db,
            tls,
        } = parse_connection_string(
            "127.0.0.1:7000, password=p@ss=word,username=tern,db=3,ssl=True,ssl_ca_certs=ca.pem,\
             ssl_certfile=/abs/c.pem,ssl_keyfile=k.pem,ssl_cert_reqs=none",
            Path::new("/repo"),
        )
        .unwrap();
        assert_eq!(nodes, [("127.0.0.1".to_owned(), 7000)]);
        assert_eq!(
            (user.as_deref(), pass.as_deref(), db),
            (Some("tern"), Some("p@ss=word"), 3)
        );
        let tls = tls.unwrap();
        assert_eq!(tls.ca_certs, Some("/repo/ca.pem".into()));
        assert_eq!(
            tls.client_cert,
            Some(("/abs/c.pem".into(), "/repo/k.pem".into()))
        );
        assert!(!tls.verify);

        for (bad, says) in [
            (
                "localhost",
                "'localhost' is neither host:port nor key=value",
            ),
            ("localhost:port", "the port must be a number"),
            ("localhost:0", "not a valid host:port"),
            ("localhost:6379,pasword=hunter2", "unknown option 'pasword'"),
            (
                "localhost:6379,db=x",
                "option 'db' expects a database number",
            ),
            (
                "localhost:6379,ssl=maybe",
                "option 'ssl' expects true or false",
            ),
            (
                "localhost:6379,ssl_certfile=c.pem",
                "ssl_certfile and ssl_keyfile go together",
            ),
            ("password=hunter2", "no host:port given"),
        ] {
            let err = parse_connection_string(bad, Path::new("/repo")).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(
                !err.contains("hunter2"),
                "{bad}: the message leaks a value: {err}"
            );
        }
        let yaml = "project: demo\nregistry: r.db\nonline_store: {type: redis, connection_string: 'h:1,pwd=x'}\n";
        assert!(
            parse_str(yaml)
                .unwrap_err()
                .to_string()
                .contains("online_store.connection_string: unknown option 'pwd'")
        );
    }

    #[test]
    fn env_expansion_leaves_unknown_variables() {
        let env = |k: &str| (k == "A").then(|| "x".to_owned());
        assert_eq!(
            expand_env("$A ${A} $B ${B} $ ${ a$", env),
            "x x $B ${B} $ ${ a$"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("registry: r.db\n", "project"),
            ("project: demo\n", "registry"),
            (
                "project: demo\nregistry: {path: r.db, cache_ttl_seconds: soon}\n",
                "cache_ttl_seconds",
            ),
            (
                "project: demo\nregistry: {path: r.db, registry_type: remote}\n",
                "registry.registry_type",
            ),
            (
                "project: demo\nregistry: hdfs://nn/registry.db\n",
                "registry.path",
            ),
            (
                "project: demo\nregistry: {path: r.db, enable_online_feature_view_versioning: maybe}\n",
                "enable_online_feature_view_versioning",
            ),
            (
                "project: demo\nregistry: r.db\nonline_store: {type: dynamodb}\n",
                "online_store.type",
            ),
            (
                "project: demo\nregistry: r.db\nonline_store: {type: redis, redis_type: redis_sentinel}\n",
                "online_store.redis_type",
            ),
            (
                "project: demo\nregistry: r.db\nentity_key_serialization_version: 1\n",
                "entity_key_serialization_version",
            ),
            ("project: my-demo\nregistry: r.db\n", "project"),
            ("project: _demo\nregistry: r.db\n", "project"),
            ("project: [1]\nregistry: r.db\n", "project"),
        ];
        for (yaml, key) in cases {
            let err = parse_str(yaml).expect_err(yaml).to_string();
            assert!(
                err.contains(key),
                "{yaml:?}: error {err:?} should name {key}"
            );
        }
    }

    #[test]
    fn dashes_allowed_with_redis() {
        let c =
            parse_str("project: my-demo\nregistry: r.db\nonline_store: {type: redis}\n").unwrap();
        assert_eq!(c.project, "my-demo");
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/feature_store.yaml");
        let c = load(&path, |_| None).unwrap();
        assert_eq!(c.project, "tern_demo");
    }
}
