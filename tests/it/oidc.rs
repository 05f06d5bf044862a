//! `auth: {type: oidc}`: bearer JWTs checked against an identity provider's keys. The
//! provider is a discovery document and a JWKS served here on loopback; the RSA keys
//! are made here with `openssl` and the tokens signed here. Valid, expired, wrong
//! audience, wrong issuer, unknown key (then rotated in), tampered, unsigned and
//! HMAC-signed tokens; open health and reflection; the HTTP API's 401; a provider that
//! hangs slows no request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tern::auth::Authenticator;
use tern::config::OidcConfig;
use tern::proto::feast::serving::GetOnlineFeaturesResponse;
use tern::proto::tern::wire::GetOnlineFeaturesRequest;
use tern::serving::Clock;
use tern::testing::{RsaKey, TestOptions, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::daemon::small_repo;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);
const AUDIENCE: &str = "tern";
const ISSUER: &str = "https://idp.test/realms/ml";
const CLIENT_ID: &str = "tern";

/// Test keys: `tern::testing::RsaKey`, signing with `expect` for brevity.
trait Sign {
    fn token(&self, claims: &serde_json::Value) -> String;
}

impl Sign for RsaKey {
    fn token(&self, claims: &serde_json::Value) -> String {
        self.sign(claims).expect("sign")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims of a valid token, expiring in `expires_in` seconds (negative: past).
fn claims(expires_in: i64) -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1",
        "preferred_username": "alice",
        "exp": now().saturating_add_signed(expires_in),
        "iat": now(),
        "resource_access": {CLIENT_ID: {"roles": ["reader"]}},
    })
}

/// A discovery document and a JWKS on loopback; the JWKS can be replaced, and the
/// whole provider made to hang.
struct Provider {
    addr: SocketAddr,
    jwks: Arc<Mutex<serde_json::Value>>,
    hang: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: &[&RsaKey]) -> Self {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let jwks = Arc::new(Mutex::new(
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
        ));
        let hang = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("http://{addr}/auth"),
            "token_endpoint": format!("http://{addr}/token"),
            "jwks_uri": format!("http://{addr}/jwks"),
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get({
                    let hang = hang.clone();
                    move || async move {
                        if hang.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        json_body(&discovery)
                    }
                }),
            )
            .route(
                "/jwks",
                get({
                    let (jwks, hang, fetches) = (jwks.clone(), hang.clone(), fetches.clone());
                    move || async move {
                        if hang.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let body = jwks.lock().expect("jwks").clone();
                        json_body(&body)
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            jwks,
            hang,
            fetches,
        }
    }

    fn config(&self) -> OidcConfig {
        OidcConfig {
            discovery_url: format!("http://{}/.well-known/openid-configuration", self.addr),
            client_id: Some(CLIENT_ID.to_owned()),
            verify_ssl: true,
            ca_cert: None,
            audience: Some(AUDIENCE.to_owned()),
            issuer: Some(ISSUER.to_owned()),
            jwks_lifespan: Duration::from_secs(300),
            jwks_timeout: Duration::from_secs(10),
        }
    }

    fn publish(&self, keys: &[&RsaKey]) {
        *self.jwks.lock().expect("jwks") =
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }
}

/// The small synthetic repo served with `auth` as `provider` configures it.
async fn serve(provider: &Provider) -> (tempfile::TempDir, TestServer) {
    let (dir, repo, yaml) = small_repo();
    (dir, serve_repo(provider, &yaml, &repo).await)
}

/// `yaml` served with `auth` as `provider` configures it.
async fn serve_repo(
    provider: &Provider,
    yaml: &Path,
    repo: &tern::testing::SyntheticRepo,
) -> TestServer {
    let mut options = TestOptions::default();
    options.server.auth =
        Authenticator::from_config(&tern::config::AuthConfig::Oidc(Box::new(provider.config())))
            .expect("authenticator");
    TestServer::start_with(yaml, Clock::Fixed(repo.event_ts), options)
        .await
        .expect("server")
}

pub(crate) fn request() -> GetOnlineFeaturesRequest {
    refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])])
}

/// GetOnlineFeatures with `authorization: Bearer <token>` when a token is given.
pub(crate) async fn call_as(
    url: &str,
    token: Option<&str>,
) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(url).await);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(request());
    if let Some(token) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
    }
    req.set_timeout(Duration::from_secs(5));
    let codec =
        tonic_prost::ProstCodec::<GetOnlineFeaturesRequest, GetOnlineFeaturesResponse>::default();
    grpc.unary(req, Route::Serving.path().parse().expect("path"), codec)
        .await
        .map(tonic::Response::into_inner)
}

/// The status of a refused call; panics if it was answered.
async fn refused(url: &str, token: Option<&str>) -> tonic::Status {
    let status = call_as(url, token).await.expect_err("refused");
    if let Some(token) = token {
        assert!(
            !status.message().contains(token),
            "the token is echoed: {status:?}"
        );
    }
    status
}

/// Waits until `token` is accepted (the keys are fetched in the background).
async fn accepted(url: &str, token: &str) {
    eventually(DEADLINE, "the token is accepted", || {
        let (url, token) = (url.to_owned(), token.to_owned());
        async move { call_as(&url, Some(&token)).await.ok().map(drop) }
    })
    .await;
}

#[tokio::test]
async fn oidc_tokens_are_verified_against_the_providers_keys() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (k1, k2) = (
        RsaKey::make(keys.path(), "k1").expect("rsa key"),
        RsaKey::make(keys.path(), "k2").expect("rsa key"),
    );
    let provider = Provider::start(&[&k1]).await;
    let (_dir, server) = serve(&provider).await;
    let url = server.url();
    let valid = k1.token(&claims(300));
    accepted(&url, &valid).await;
    // Within the 10 s leeway, an expired token still passes.
    call_as(&url, Some(&k1.token(&claims(-5))))
        .await
        .expect("10 s of leeway");

    let cases: Vec<(String, &str)> = vec![
        (k1.token(&claims(-60)), "invalid token: expired"),
        (
            {
                let mut c = claims(300);
                c["aud"] = json!("someone-else");
                k1.token(&c)
            },
            "invalid token: wrong audience (expected 'tern')",
        ),
        (
            {
                let mut c = claims(300);
                c["iss"] = json!("https://evil.test");
                k1.token(&c)
            },
            "invalid token: wrong issuer (expected 'https://idp.test/realms/ml')",
        ),
        (
            {
                // The payload changed after signing.
                let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let mut payload: serde_json::Value =
                    serde_json::from_slice(&b64.decode(&parts[1]).expect("b64")).expect("json");
                payload["preferred_username"] = json!("mallory");
                parts[1] = b64.encode(payload.to_string());
                parts.join(".")
            },
            "invalid token: its signature does not verify",
        ),
        (
            {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                format!(
                    "{}.{}.",
                    b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
                    b64.encode(claims(300).to_string())
                )
            },
            "invalid token: its algorithm is not RS256",
        ),
        (
            {
                // Algorithm confusion: HMAC keyed with something public.
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("k1".into());
                jsonwebtoken::encode(&header, &claims(300), &EncodingKey::from_secret(b"k1"))
                    .expect("sign")
            },
            "only RS256 is accepted",
        ),
        ("not-a-jwt".to_owned(), "invalid token: not a JWT"),
    ];
    for (token, expected) in &cases {
        let status = refused(&url, Some(token)).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{expected}: {status:?}"
        );
        assert!(
            status.message().contains(expected),
            "{expected}: {status:?}"
        );
    }
    let missing = refused(&url, None).await;
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().starts_with("missing bearer token"),
        "{missing:?}"
    );

    // A key the provider publishes only later: refused, then accepted once rotated in.
    let rotated = k2.token(&claims(300));
    let unknown = refused(&url, Some(&rotated)).await;
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert!(
        unknown.message().contains("signing key 'k2' is unknown"),
        "{unknown:?}"
    );
    provider.publish(&[&k1, &k2]);
    accepted(&url, &rotated).await;

    // Health checks and reflection need no token.
    let health = HealthClient::new(channel(&url).await)
        .check(HealthCheckRequest::default())
        .await
        .expect("health is open");
    assert_eq!(health.into_inner().status, 1);
    server.stop().await.expect("stop");
}

/// Feast's HTTP API answers 401 with FastAPI's `{"detail": ...}` and
/// `WWW-Authenticate: Bearer`; `/health` stays open.
#[tokio::test]
async fn http_api_requires_the_bearer_token_too() {
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = RsaKey::make(keys.path(), "k1").expect("rsa key");
    let provider = Provider::start(&[&k1]).await;
    let (_dir, server) = serve(&provider).await;
    let token = k1.token(&claims(300));
    accepted(&server.url(), &token).await;
    let body = br#"{"features":["bench:f0"],"entities":{"driver_id":[1]}}"#;
    let (status, head, text) = post(server.addr, "/get-online-features", None, body).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(
        text,
        r#"{"detail":"missing bearer token: send `authorization: Bearer <token>`"}"#
    );
    let (status, _, text) = post(server.addr, "/get-online-features", Some(&token), body).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = get(server.addr, "/health").await;
    assert_eq!(status, 200, "{text}");
    server.stop().await.expect("stop");
}

/// A provider that hangs: with keys in hand requests go on being answered at once
/// (even while a refetch for an unknown key hangs); with none yet they are refused at
/// once as UNAVAILABLE, never held until their deadline.
#[tokio::test]
async fn a_hanging_provider_slows_no_request() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (k1, k2) = (
        RsaKey::make(keys.path(), "k1").expect("rsa key"),
        RsaKey::make(keys.path(), "k2").expect("rsa key"),
    );
    let provider = Provider::start(&[&k1]).await;
    let (_dir, server) = serve(&provider).await;
    let url = server.url();
    let token = k1.token(&claims(300));
    accepted(&url, &token).await;
    provider.hang.store(true, Ordering::SeqCst);
    let fetched = provider.fetches.load(Ordering::SeqCst);
    // An unknown key starts a refetch, which hangs; known keys keep working.
    refused(&url, Some(&k2.token(&claims(300)))).await;
    for _ in 0..3 {
        call_as(&url, Some(&token))
            .await
            .expect("answered while the provider hangs");
    }
    assert_eq!(provider.fetches.load(Ordering::SeqCst), fetched);
    server.stop().await.expect("stop");

    let silent = Provider::start(&[&k1]).await;
    silent.hang.store(true, Ordering::SeqCst);
    let (_dir, server) = serve(&silent).await;
    let status = refused(&server.url(), Some(&token)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("the identity provider's keys are not available"),
        "{status:?}"
    );
    server.stop().await.expect("stop");
}

fn json_body(v: &serde_json::Value) -> impl axum::response::IntoResponse + use<> {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await
}

pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    exchange(addr, &head).await
}

/// One HTTP/1.1 exchange: status, head and body.
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

/// Adds Feast permissions (project `synthetic`) to a registry file.
pub(crate) fn add_permissions(
    registry: &Path,
    permissions: Vec<tern::proto::feast::core::Permission>,
) {
    use prost::Message as _;
    let bytes = std::fs::read(registry).expect("registry");
    let mut proto =
        tern::proto::feast::core::Registry::decode(bytes.as_slice()).expect("decode registry");
    proto
        .permissions
        .extend(permissions.iter().map(prost::Message::encode_to_vec));
    std::fs::write(registry, proto.encode_to_vec()).expect("write registry");
}

pub(crate) fn role_permission(
    name: &str,
    action: tern::proto::feast::core::permission_spec::AuthzedAction,
    role: &str,
) -> tern::proto::feast::core::Permission {
    use tern::proto::feast::core as pb;
    pb::Permission {
        spec: Some(pb::PermissionSpec {
            name: name.into(),
            project: "synthetic".into(),
            types: vec![pb::permission_spec::Type::FeatureView as i32],
            name_patterns: vec!["bench".into()],
            actions: vec![action as i32],
            policy: Some(pb::Policy {
                policy_type: Some(pb::policy::PolicyType::RoleBasedPolicy(
                    pb::RoleBasedPolicy {
                        roles: vec![role.into()],
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        meta: None,
    }
}

/// A token for a user holding `roles`.
fn token_with_roles(key: &RsaKey, roles: &[&str]) -> String {
    let mut c = claims(300);
    c["resource_access"] = json!({CLIENT_ID: {"roles": roles}});
    key.token(&c)
}

/// The registry's permissions decide reads (READ_ONLINE on each view read) and writes
/// (WRITE_ONLINE on each view written) on gRPC and HTTP, with Feast's messages; a caller
/// no permission lets in gets PERMISSION_DENIED / 403 `FeastPermissionError`.
#[tokio::test]
async fn permissions_decide_reads_and_writes() {
    use tern::proto::feast::core::permission_spec::AuthzedAction as A;
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = RsaKey::make(keys.path(), "k1").expect("rsa key");
    let provider = Provider::start(&[&k1]).await;
    let (dir, repo, yaml) = small_repo();
    add_permissions(
        &dir.path().join("data/registry.db"),
        vec![
            role_permission("readers", A::ReadOnline, "reader"),
            role_permission("writers", A::WriteOnline, "writer"),
        ],
    );
    let server = serve_repo(&provider, &yaml, &repo).await;
    let url = server.url();
    let reader = token_with_roles(&k1, &["reader"]);
    let writer = token_with_roles(&k1, &["writer"]);
    accepted(&url, &reader).await;

    let denied = call_as(&url, Some(&writer))
        .await
        .expect_err("a writer may not read");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(
        denied.message(),
        "Permission error:\nPermission readers denied execution of ['READ_ONLINE'] to FeatureView:bench: Requires roles ['reader']"
    );

    let write = |token: String| {
        let url = url.clone();
        async move {
            let mut client = tern::grpc::OnlineWriterClient::new(channel(&url).await);
            let col =
                |name: &str, v: tern::proto::feast::types::Value| tern::proto::tern::v1::Column {
                    name: name.into(),
                    values: vec![v],
                };
            let mut req = tonic::Request::new(tern::proto::tern::v1::WriteFeaturesRequest {
                feature_view: "bench".into(),
                version: None,
                columns: vec![
                    col("driver_id", int64(1)),
                    col("f0", double(1.5)),
                    col("f1", double(2.5)),
                ],
                event_timestamps: vec![],
            });
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("metadata"),
            );
            client.write_features(req).await
        }
    };
    let refused = write(reader.clone())
        .await
        .expect_err("a reader may not write");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "Permission error:\nPermission writers denied execution of ['WRITE_ONLINE'] to FeatureView:bench: Requires roles ['writer']"
    );
    write(writer.clone()).await.expect("a writer writes");

    // The HTTP API decides the same, in Feast's error format.
    let body = br#"{"features":["bench:f0"],"entities":{"driver_id":[1]}}"#;
    let (status, _, text) = post(server.addr, "/get-online-features", Some(&reader), body).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = post(server.addr, "/get-online-features", Some(&writer), body).await;
    assert_eq!(status, 403, "{text}");
    let detail: serde_json::Value =
        serde_json::from_str(&serde_json::from_str::<String>(&text).expect("a JSON string"))
            .expect("Feast's detail");
    assert_eq!(detail["class"], "FeastPermissionError", "{text}");
    let push = br#"{"feature_view_name":"bench","df":{"driver_id":[1],"f0":[3.5],"f1":[4.5],"event_timestamp":["2025-01-01T00:00:00"]}}"#;
    let (status, _, text) = post(server.addr, "/write-to-online-store", Some(&reader), push).await;
    assert_eq!(status, 403, "{text}");
    // The writer is let through to the write's own checks (this synthetic view has no
    // event-time column: the gRPC write above gave the server's clock instead).
    let (status, _, text) = post(server.addr, "/write-to-online-store", Some(&writer), push).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("'event_timestamp' is not a join key"),
        "{text}"
    );
    server.stop().await.expect("stop");
}

/// The daemon as an operator runs it with `auth: {type: oidc}`: accepted and refused
/// calls, at debug level, never write a token to the log.
#[tokio::test]
async fn tokens_never_reach_the_log() {
    let keys = tempfile::tempdir().expect("tempdir");
    let k1 = RsaKey::make(keys.path(), "k1").expect("rsa key");
    let provider = Provider::start(&[&k1]).await;
    let (dir, _repo, yaml) = small_repo();
    let config = provider.config();
    let mut text = std::fs::read_to_string(&yaml).expect("yaml");
    text.push_str(&format!(
        "auth:\n  type: oidc\n  client_id: {CLIENT_ID}\n  auth_discovery_url: {}\n  audience: {AUDIENCE}\n  issuer: {ISSUER}\n",
        config.discovery_url
    ));
    std::fs::write(&yaml, text).expect("yaml");
    let mut daemon = crate::daemon::Daemon::spawn_with_env(
        &[
            "serve",
            "--config",
            yaml.to_str().expect("utf-8"),
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        &[],
    );
    let serving = daemon.wait_for_log("serving gRPC");
    let url = format!("http://{}", serving["addr"].as_str().expect("addr"));
    let good = k1.token(&claims(300));
    let expired = k1.token(&claims(-60));
    accepted(&url, &good).await;
    let body = br#"{"features":["bench:f0"],"entities":{"driver_id":[1]}}"#;
    let addr: SocketAddr = serving["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    let (status, _, _) = post(addr, "/get-online-features", Some(&good), body).await;
    assert_eq!(status, 200);
    refused(&url, Some(&expired)).await;
    let (status, _, _) = post(addr, "/get-online-features", Some(&expired), body).await;
    assert_eq!(status, 401);
    daemon.wait_for_log("call refused: not authenticated");
    assert!(daemon.terminate().await.success());
    daemon.wait_for_log("server stopped");
    let logs = daemon.seen.join("\n");
    for token in [&good, &expired] {
        // Any third of a token is already too much.
        let part = &token[token.len() / 3..2 * token.len() / 3];
        assert!(!logs.contains(part), "a token reached the log:\n{logs}");
    }
    drop(dir);
}
