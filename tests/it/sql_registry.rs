//! Feast's SQL registry (`registry_type: sql`), as the real Feast 0.67 wrote it, on
//! PostgreSQL (a fresh database per test, restored from Feast's `pg_dump`) and on
//! SQLite. Feast's own answers from that registry are `sql/cases_sql.json`; its
//! `--no-promote` bug left driver_stats active at v3 there.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tern::serving::Clock;
use tern::testing::TestServer;
use tokio_postgres::NoTls;
use tonic::Code;

use crate::compat::check_fixture_cases;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);
const NOW: i64 = 1_736_470_800;
/// driver_stats' active version in Feast's SQL registry fixture.
const ACTIVE: i32 = 3;

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast/sql")
}

async fn connect(db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port=5432 user=postgres dbname={db}"),
        NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 (trust auth for postgres)");
    tokio::spawn(connection);
    client
}

/// A database of this test's own, dropped by `drop`.
struct TestDb {
    name: String,
}

impl TestDb {
    async fn create() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("tern_test_{}_{nanos}", std::process::id());
        connect("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }

    /// Runs Feast's dump on a connection of its own (it empties `search_path`).
    async fn restore(&self, sql: &str) {
        connect(&self.name)
            .await
            .batch_execute(sql)
            .await
            .expect("restore the dump");
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:5432/{}", self.name)
    }

    async fn drop(self) {
        let _ = connect("postgres")
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// feature_store.yaml for a SQL registry at `url`, with Feast's SQLite online store.
fn yaml(dir: &Path, url: &str, versioning: bool, ttl: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("feature_store.yaml");
    std::fs::write(
        &path,
        format!(
            "project: tern_demo\nregistry:\n  registry_type: sql\n  path: {url}\n  cache_ttl_seconds: {ttl}\n  \
             enable_online_feature_view_versioning: {versioning}\nonline_store:\n  type: sqlite\n  path: {}\n",
            sql_dir().join("online.db").display()
        ),
    )
    .unwrap();
    path
}

async fn serve_both(url: &str, dir: &Path) -> (TestServer, TestServer) {
    let on = TestServer::start(&yaml(&dir.join("on"), url, true, 0), Clock::Fixed(NOW))
        .await
        .unwrap();
    let off = TestServer::start(&yaml(&dir.join("off"), url, false, 0), Clock::Fixed(NOW))
        .await
        .unwrap();
    (on, off)
}

#[tokio::test]
async fn postgres_sql_registry_serves_feasts_answers() {
    let db = TestDb::create().await;
    db.restore(&std::fs::read_to_string(sql_dir().join("registry.pg.sql")).unwrap())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (on, off) = serve_both(&db.url(), dir.path()).await;
    check_fixture_cases(
        &sql_dir().join("cases_sql.json"),
        ACTIVE,
        &on.url(),
        &off.url(),
    )
    .await;
    on.stop().await.unwrap();
    off.stop().await.unwrap();
    db.drop().await;
}

#[tokio::test]
async fn sqlite_sql_registry_serves_feasts_answers() {
    let url = format!("sqlite:///{}", sql_dir().join("registry.sqlite").display());
    let dir = tempfile::tempdir().unwrap();
    let (on, off) = serve_both(&url, dir.path()).await;
    check_fixture_cases(
        &sql_dir().join("cases_sql.json"),
        ACTIVE,
        &on.url(),
        &off.url(),
    )
    .await;
    on.stop().await.unwrap();
    off.stop().await.unwrap();
}

#[tokio::test]
async fn sql_registry_changes_are_picked_up_and_failures_keep_serving() {
    let db = TestDb::create().await;
    db.restore(&std::fs::read_to_string(sql_dir().join("registry.pg.sql")).unwrap())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&yaml(dir.path(), &db.url(), true, 1), Clock::Fixed(NOW))
        .await
        .unwrap();
    let reload = server.reload.clone().unwrap();
    let ch = channel(&server.url()).await;
    let svc = || {
        service_request(
            "driver_svc",
            vec![
                ("driver_id", vec![int64(1001)]),
                ("customer_id", vec![string("c1")]),
            ],
        )
    };
    assert!(call(&ch, Route::Serving, svc()).await.is_ok());

    // Nothing changed: the fingerprint says so, and nothing is rebuilt.
    eventually(DEADLINE, "timer reloads", || async {
        (reload.unchanged() >= 2).then_some(())
    })
    .await;
    assert_eq!(reload.swaps(), 0);

    // Feast deletes a feature service: the next reload publishes it.
    connect(&db.name)
        .await
        .batch_execute("DELETE FROM feature_services WHERE feature_service_name = 'driver_svc' AND project_id = 'tern_demo'")
        .await
        .unwrap();
    let status = eventually(DEADLINE, "the deletion served", || {
        let ch = ch.clone();
        async move { call(&ch, Route::Serving, svc()).await.err() }
    })
    .await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reload.swaps(), 1);

    // The database goes away: reloads fail, the last good snapshot keeps serving.
    let failures = reload.failures();
    let name = db.name.clone();
    db.drop().await;
    eventually(DEADLINE, "failed reloads", || async {
        (reload.failures() > failures).then_some(())
    })
    .await;
    let r = call(&ch, Route::Serving, conv_rate_request())
        .await
        .unwrap_or_else(|s| panic!("still serving without {name}: {s:?}"));
    assert_eq!(names(&r), ["driver_id", "conv_rate"]);
    server.stop().await.unwrap();
}

/// The machine's PostgreSQL serves TLS (Debian turns it on with its snakeoil certificate,
/// named `localhost`); returns the server certificate file.
async fn server_certificate() -> PathBuf {
    let c = connect("postgres").await;
    let show = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let ssl = show(c.query_one("SHOW ssl", &[]).await.unwrap());
    assert_eq!(
        ssl, "on",
        "PostgreSQL on 127.0.0.1:5432 must have ssl = on for the TLS tests"
    );
    let file = PathBuf::from(show(c.query_one("SHOW ssl_cert_file", &[]).await.unwrap()));
    if file.is_absolute() {
        file
    } else {
        PathBuf::from(show(c.query_one("SHOW data_directory", &[]).await.unwrap())).join(file)
    }
}

/// Connections to `db` that the server sees encrypted.
async fn encrypted_connections(db: &str) -> i64 {
    connect("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1 AND s.ssl",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn postgres_registry_over_tls_with_libpq_sslmodes() {
    let db = TestDb::create().await;
    db.restore(&std::fs::read_to_string(sql_dir().join("registry.pg.sql")).unwrap())
        .await;
    let cert = server_certificate().await;
    let dir = tempfile::tempdir().unwrap();
    let foreign_ca = crate::redis_support::tls::write_test_pki(dir.path()).ca;
    let url = |host: &str, options: String| {
        format!("postgresql://postgres@{host}:5432/{}?{options}", db.name)
    };
    let start = |name: &str, url: String| {
        let yaml = yaml(&dir.path().join(name), &url, true, 0);
        async move { TestServer::start(&yaml, Clock::Fixed(NOW)).await }
    };

    // Encrypted, server not authenticated (libpq's require): served, and the server
    // sees Tern's registry connection as TLS.
    let server = start("require", url("127.0.0.1", "sslmode=require".into()))
        .await
        .unwrap();
    call(
        &channel(&server.url()).await,
        Route::Serving,
        conv_rate_request(),
    )
    .await
    .unwrap();
    assert_eq!(encrypted_connections(&db.name).await, 1);
    server.stop().await.unwrap();

    // The chain is checked against sslrootcert; verify-ca ignores the host name, and
    // verify-full accepts the name the certificate carries.
    let root = cert.display();
    for (name, url) in [
        (
            "verify-ca",
            url("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={root}")),
        ),
        (
            "verify-full",
            url(
                "localhost",
                format!("sslmode=verify-full&sslrootcert={root}"),
            ),
        ),
    ] {
        let server = start(name, url)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        call(
            &channel(&server.url()).await,
            Route::Serving,
            conv_rate_request(),
        )
        .await
        .unwrap();
        server.stop().await.unwrap();
    }

    // Refused: a name the certificate does not carry, and a CA that did not sign it.
    for (name, url, expected) in [
        (
            "wrong-name",
            url(
                "127.0.0.1",
                format!("sslmode=verify-full&sslrootcert={root}"),
            ),
            "not valid for name \"127.0.0.1\"",
        ),
        (
            "wrong-ca",
            url(
                "127.0.0.1",
                format!("sslmode=verify-ca&sslrootcert={}", foreign_ca.display()),
            ),
            "UnknownIssuer",
        ),
    ] {
        let e = start(name, url).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("postgresql://127.0.0.1:5432/{}", db.name))
                && e.contains("certificate"),
            "{name}: {e}"
        );
        assert!(e.contains(expected), "{name}: {e}");
    }
    db.drop().await;
}
