//! `auth: {type: kubernetes}` against a fake Kubernetes API server on loopback (the
//! TokenReview and RBAC endpoints Tern calls, answering as a cluster would): service
//! accounts get the roles their RoleBindings give in Tern's namespace, users those of
//! their (cluster) role bindings and groups; a token the API server does not
//! authenticate is refused; an answer is reused; an unreachable API server answers
//! UNAVAILABLE.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tern::auth::Authenticator;
use tern::config::{AuthConfig, KubernetesConfig};
use tern::serving::Clock;
use tern::testing::{TestOptions, TestServer};
use tonic::Code;

use crate::daemon::small_repo;
use crate::oidc::{add_permissions, call_as, role_permission};

/// Tern's own service-account token, as the fake API server expects it.
const OWN_TOKEN: &str = "tern-own-token";
const NAMESPACE: &str = "ml-serving";

fn json_answer(v: Value) -> impl axum::response::IntoResponse + use<> {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
}

/// The fake API server: who each token is, and the RBAC bindings.
async fn api_server(reviews: Arc<AtomicUsize>) -> SocketAddr {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let authorized = |headers: &axum::http::HeaderMap| {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == format!("Bearer {OWN_TOKEN}").as_bytes())
    };
    let app = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let reviews = reviews.clone();
                async move {
                    if !authorized(&headers) {
                        return Err(axum::http::StatusCode::UNAUTHORIZED);
                    }
                    reviews.fetch_add(1, Ordering::SeqCst);
                    let body: Value = serde_json::from_str(&body).unwrap_or_default();
                    let user = match body["spec"]["token"].as_str() {
                        Some("model-token") => json!({
                            "username": format!("system:serviceaccount:{NAMESPACE}:model"),
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NAMESPACE}")],
                        }),
                        Some("intruder-token") => json!({
                            "username": "system:serviceaccount:other:intruder",
                            "groups": ["system:serviceaccounts", "system:serviceaccounts:other"],
                        }),
                        Some("alice-token") => json!({"username": "alice", "groups": ["data-science"]}),
                        _ => Value::Null,
                    };
                    let status = if user.is_null() {
                        json!({"authenticated": false, "error": "invalid bearer token"})
                    } else {
                        json!({"authenticated": true, "user": user})
                    };
                    Ok(json_answer(json!({"kind": "TokenReview", "status": status})))
                }
            }),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            get(move |axum::extract::Path(ns): axum::extract::Path<String>| async move {
                let items = if ns == NAMESPACE {
                    json!([
                        {"metadata": {"name": "model-reads"}, "roleRef": {"kind": "Role", "name": "feature-reader"},
                         "subjects": [{"kind": "ServiceAccount", "name": "model", "namespace": NAMESPACE}]},
                        {"metadata": {"name": "team"}, "roleRef": {"kind": "Role", "name": "viewer"},
                         "subjects": [{"kind": "Group", "name": "ml-team"}]}
                    ])
                } else {
                    json!([])
                };
                json_answer(json!({"kind": "RoleBindingList", "items": items}))
            }),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/rolebindings",
            get(|| async { json_answer(json!({"kind": "RoleBindingList", "items": []})) }),
        )
        .route(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            get(|| async {
                json_answer(json!({"kind": "ClusterRoleBindingList", "items": [
                    {"metadata": {"name": "ds"}, "roleRef": {"kind": "ClusterRole", "name": "feature-reader"},
                     "subjects": [{"kind": "Group", "name": "data-science"}]}
                ]}))
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The small repo, READ_ONLINE on `bench` for role `feature-reader`, served with
/// Kubernetes auth against `api`.
async fn serve(api: String) -> (tempfile::TempDir, tempfile::TempDir, TestServer) {
    use tern::proto::feast::core::permission_spec::AuthzedAction as A;
    let (dir, repo, yaml) = small_repo();
    add_permissions(
        &dir.path().join("data/registry.db"),
        vec![role_permission("readers", A::ReadOnline, "feature-reader")],
    );
    let account = tempfile::tempdir().expect("tempdir");
    std::fs::write(account.path().join("token"), OWN_TOKEN).expect("token");
    std::fs::write(account.path().join("namespace"), NAMESPACE).expect("namespace");
    let mut options = TestOptions::default();
    options.server.auth = Authenticator::from_config(&AuthConfig::Kubernetes(KubernetesConfig {
        api_server: Some(api),
        service_account_dir: account.path().to_owned(),
        ..KubernetesConfig::default()
    }))
    .expect("authenticator");
    let server = TestServer::start_with(&yaml, Clock::Fixed(repo.event_ts), options)
        .await
        .expect("server");
    (dir, account, server)
}

#[tokio::test]
async fn kubernetes_tokens_get_their_rbac_roles() {
    let reviews = Arc::new(AtomicUsize::new(0));
    let api = api_server(reviews.clone()).await;
    let (_dir, _account, server) = serve(format!("http://{api}")).await;
    let url = server.url();

    // A service account bound to feature-reader in Tern's namespace.
    call_as(&url, Some("model-token"))
        .await
        .expect("the model's service account reads");
    call_as(&url, Some("model-token")).await.expect("and again");
    assert_eq!(reviews.load(Ordering::SeqCst), 1, "the answer is reused");

    // A user whose group a ClusterRoleBinding binds to feature-reader.
    call_as(&url, Some("alice-token"))
        .await
        .expect("alice reads through her group");

    // Authenticated, but no binding gives the role.
    let denied = call_as(&url, Some("intruder-token"))
        .await
        .expect_err("no role");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied
            .message()
            .contains("Requires roles ['feature-reader']"),
        "{denied:?}"
    );

    let refused = call_as(&url, Some("forged-token"))
        .await
        .expect_err("not a cluster token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(
        refused.message(),
        "invalid token: the Kubernetes API server does not authenticate it"
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unreachable_api_server_answers_unavailable() {
    let port = crate::redis_support::free_port();
    let (_dir, _account, server) = serve(format!("http://127.0.0.1:{port}")).await;
    let status = call_as(&server.url(), Some("model-token"))
        .await
        .expect_err("no API server");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("the Kubernetes API server at"),
        "{status:?}"
    );
    assert!(!status.message().contains("model-token"), "{status:?}");
    server.stop().await.expect("stop");
}
