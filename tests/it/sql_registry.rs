//! Feast's SQL registry (`registry_type: sql`), as the real Feast 0.67 wrote it, on
//! PostgreSQL (a fresh database per test, restored from Feast's `pg_dump`) and on
//! SQLite. Feast's own answers from that registry are `sql/cases_sql.json`; its
//! `--no-promote` bug left driver_stats active at v3 there.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tern::proto::feast::core as pb;
use tern::registry::model::{RegistryModel, Stored};
use tern::registry::sql::SqlSource;
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

pub fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast/sql")
}

pub async fn connect(db: &str) -> tokio_postgres::Client {
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
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create() -> Self {
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
    pub async fn restore(&self, sql: &str) {
        connect(&self.name)
            .await
            .batch_execute(sql)
            .await
            .expect("restore the dump");
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub async fn drop(self) {
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
pub fn yaml(dir: &Path, url: &str, versioning: bool, ttl: u64) -> PathBuf {
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

/// `(table, name, proto bytes)` of every object the model holds, encoded again.
fn encoded_objects(model: &RegistryModel) -> Vec<(&'static str, String, Vec<u8>)> {
    fn typed<'a, T: prost::Message>(
        table: &'static str,
        objects: &'a [Stored<T>],
    ) -> impl Iterator<Item = (&'static str, String, Vec<u8>)> + 'a {
        objects
            .iter()
            .map(move |s| (table, s.name.clone(), s.object.encode_to_vec()))
    }
    fn opaque<'a>(
        table: &'static str,
        objects: &'a [Stored<Vec<u8>>],
    ) -> impl Iterator<Item = (&'static str, String, Vec<u8>)> + 'a {
        objects
            .iter()
            .map(move |s| (table, s.name.clone(), s.object.clone()))
    }
    let m = model;
    typed("projects", &m.projects)
        .chain(typed("entities", &m.entities))
        .chain(typed("data_sources", &m.data_sources))
        .chain(typed("feature_views", &m.feature_views))
        .chain(typed("stream_feature_views", &m.stream_feature_views))
        .chain(typed("on_demand_feature_views", &m.on_demand_feature_views))
        .chain(typed("label_views", &m.label_views))
        .chain(typed("feature_services", &m.feature_services))
        .chain(opaque("saved_datasets", &m.saved_datasets))
        .chain(opaque("validation_references", &m.validation_references))
        .chain(opaque("permissions", &m.permissions))
        .chain(opaque("managed_infra", &m.infra))
        .collect()
}

/// `(table, name column, proto column)` of Feast's object tables.
const RAW_TABLES: [(&str, &str, &str); 12] = [
    ("projects", "project_name", "project_proto"),
    ("entities", "entity_name", "entity_proto"),
    ("data_sources", "data_source_name", "data_source_proto"),
    ("feature_views", "feature_view_name", "feature_view_proto"),
    (
        "stream_feature_views",
        "feature_view_name",
        "feature_view_proto",
    ),
    (
        "on_demand_feature_views",
        "feature_view_name",
        "feature_view_proto",
    ),
    ("label_views", "feature_view_name", "feature_view_proto"),
    (
        "feature_services",
        "feature_service_name",
        "feature_service_proto",
    ),
    (
        "saved_datasets",
        "saved_dataset_name",
        "saved_dataset_proto",
    ),
    (
        "validation_references",
        "validation_reference_name",
        "validation_reference_proto",
    ),
    ("permissions", "permission_name", "permission_proto"),
    ("managed_infra", "infra_name", "infra_proto"),
];

/// Checks a model read by Tern against the rows Feast wrote, read here directly:
/// every object there, each one re-encoding to Feast's exact bytes, the version
/// history's snapshots too, `feast_metadata` kept, and projects taken from the rows.
fn check_lossless(
    model: &RegistryModel,
    raw: &[(&'static str, String, Vec<u8>)],
    history: &[Vec<u8>],
    metadata_rows: usize,
) {
    let mut ours = encoded_objects(model);
    let mut theirs = raw.to_vec();
    ours.sort();
    theirs.sort();
    assert_eq!(ours.len(), theirs.len(), "objects read");
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!((o.0, &o.1), (t.0, &t.1));
        assert!(o.2 == t.2, "{} '{}' re-encodes to other bytes", o.0, o.1);
    }
    assert!(
        model.data_sources.len() == 7 && model.infra.len() == 1,
        "data sources and managed infra are read"
    );
    assert_eq!(model.metadata.len(), metadata_rows, "feast_metadata rows");
    let mut snapshots: Vec<Vec<u8>> = model
        .version_history
        .iter()
        .map(|r| {
            pb::FeatureView::decode(r.feature_view_proto.as_slice())
                .unwrap()
                .encode_to_vec()
        })
        .collect();
    let mut stored = history.to_vec();
    snapshots.sort();
    stored.sort();
    assert!(
        snapshots == stored,
        "version snapshots re-encode to Feast's bytes"
    );
    for stored in &model.feature_views {
        assert_eq!(stored.project, "tern_demo", "{}", stored.name);
    }
}

#[tokio::test]
async fn sql_registries_are_read_whole_and_re_encode_to_feasts_bytes() {
    // SQLite: materialized, so Feast left spec.project empty in the view rows.
    let path = sql_dir().join("registry.sqlite");
    let mut source = SqlSource::from_url(
        &format!("sqlite:///{}", path.display()),
        Path::new("/"),
        DEADLINE,
    )
    .unwrap();
    let (model, _) = source.read("tern_demo").await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut raw = Vec::new();
    for (table, name, proto) in RAW_TABLES {
        let mut stmt = conn
            .prepare(&format!("SELECT {name}, {proto} FROM {table}"))
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((table, r.get(0)?, r.get(1)?)))
            .unwrap();
        raw.extend(rows.map(Result::unwrap));
    }
    let history: Vec<Vec<u8>> = conn
        .prepare("SELECT feature_view_proto FROM feature_view_version_history")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    check_lossless(&model, &raw, &history, 2);
    assert!(
        model.feature_views.iter().any(|v| v
            .object
            .spec
            .as_ref()
            .is_some_and(|s| s.project.is_empty())),
        "spec.project is kept as Feast stored it, not rewritten"
    );

    // PostgreSQL, restored from Feast's dump.
    let db = TestDb::create().await;
    db.restore(&std::fs::read_to_string(sql_dir().join("registry.pg.sql")).unwrap())
        .await;
    let mut source = SqlSource::from_url(&db.url(), Path::new("/"), DEADLINE).unwrap();
    let (model, _) = source.read("tern_demo").await.unwrap();
    let c = connect(&db.name).await;
    let mut raw = Vec::new();
    for (table, name, proto) in RAW_TABLES {
        for row in c
            .query(&format!("SELECT {name}, {proto} FROM {table}"), &[])
            .await
            .unwrap()
        {
            raw.push((table, row.get(0), row.get(1)));
        }
    }
    let history: Vec<Vec<u8>> = c
        .query(
            "SELECT feature_view_proto FROM feature_view_version_history",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    check_lossless(&model, &raw, &history, 2);
    db.drop().await;
}

/// A fresh database holding Feast's PostgreSQL registry fixture.
pub async fn feast_pg_registry() -> TestDb {
    let db = TestDb::create().await;
    db.restore(&std::fs::read_to_string(sql_dir().join("registry.pg.sql")).unwrap())
        .await;
    db
}

/// Waits until a query of `db` that mentions `table` waits on a lock.
pub async fn blocked_on(db: &str, table: &str) {
    eventually(DEADLINE, &format!("a read waiting on {table}"), || async {
        let waiting: i64 = connect("postgres")
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%' || $2 || '%'",
                &[&db, &table],
            )
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
}

/// A writer commits while Tern is half-way through reading: Tern's read must see the
/// registry entirely before the write (one REPEATABLE READ transaction), never the
/// views of one state and the rest of another.
#[tokio::test]
async fn a_concurrent_writer_never_yields_a_mixed_registry() {
    let db = feast_pg_registry().await;
    let mut source = SqlSource::from_url(&db.url(), Path::new("/"), DEADLINE).unwrap();
    let (before, fingerprint) = source.read("tern_demo").await.unwrap();
    let old_views: Vec<i64> = before
        .feature_views
        .iter()
        .map(|v| v.row.as_ref().unwrap().last_updated)
        .collect();

    // The writer changes the views, and feast_metadata (read last), and holds a lock
    // on feast_metadata so that Tern's read stops just before it.
    let writer = connect(&db.name).await;
    writer
        .batch_execute(
            "BEGIN; \
             UPDATE feature_views SET last_updated_timestamp = last_updated_timestamp + 1000 WHERE project_id = 'tern_demo'; \
             UPDATE feast_metadata SET metadata_value = 'written-by-the-writer' WHERE project_id = 'tern_demo'; \
             LOCK TABLE feast_metadata IN ACCESS EXCLUSIVE MODE;",
        )
        .await
        .unwrap();
    let read = tokio::spawn(async move { source.read("tern_demo").await });
    blocked_on(&db.name, "feast_metadata").await;
    writer.batch_execute("COMMIT").await.unwrap();
    let (during, during_fingerprint) = read.await.unwrap().unwrap();

    let views: Vec<i64> = during
        .feature_views
        .iter()
        .map(|v| v.row.as_ref().unwrap().last_updated)
        .collect();
    assert_eq!(
        views, old_views,
        "the views as they were when the read began"
    );
    assert!(
        during
            .metadata
            .iter()
            .all(|m| m.value != "written-by-the-writer"),
        "feast_metadata from the same state as the views, not the later commit"
    );
    assert_eq!(
        during_fingerprint, fingerprint,
        "fingerprint of what was read"
    );

    // The next read sees the write, whole.
    let mut source = SqlSource::from_url(&db.url(), Path::new("/"), DEADLINE).unwrap();
    let (after, _) = source.read("tern_demo").await.unwrap();
    assert!(
        after.feature_views.iter().zip(&old_views).all(|(v, old)| v
            .row
            .as_ref()
            .unwrap()
            .last_updated
            == old + 1000)
    );
    assert!(
        after
            .metadata
            .iter()
            .all(|m| m.value == "written-by-the-writer")
    );
    db.drop().await;
}

#[tokio::test]
async fn bad_columns_are_named_and_the_last_good_snapshot_keeps_serving() {
    // PostgreSQL: a NULL where Feast always writes a proto.
    let db = feast_pg_registry().await;
    connect(&db.name)
        .await
        .batch_execute(
            "ALTER TABLE feature_services ALTER COLUMN feature_service_proto DROP NOT NULL; \
             UPDATE feature_services SET feature_service_proto = NULL WHERE feature_service_name = 'driver_svc'",
        )
        .await
        .unwrap();
    let mut source = SqlSource::from_url(&db.url(), Path::new("/"), DEADLINE).unwrap();
    let err = source.read("tern_demo").await.unwrap_err().to_string();
    assert!(
        err.contains("table feature_services, column feature_service_proto (row 'driver_svc')")
            && err.contains("NULL where a value is required"),
        "{err}"
    );
    db.drop().await;

    // SQLite, through a running server: text where Feast writes epoch seconds.
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.sqlite");
    std::fs::copy(sql_dir().join("registry.sqlite"), &registry).unwrap();
    let url = format!("sqlite:///{}", registry.display());
    let server = TestServer::start(&yaml(dir.path(), &url, true, 0), Clock::Fixed(NOW))
        .await
        .unwrap();
    let reload = server.reload.clone().unwrap();
    rusqlite::Connection::open(&registry)
        .unwrap()
        .execute_batch(
            "UPDATE entities SET last_updated_timestamp = 'yesterday' WHERE entity_name = 'driver'",
        )
        .unwrap();
    reload.force();
    eventually(DEADLINE, "the failed reload", || async {
        (reload.failures() == 1).then_some(())
    })
    .await;
    let mut source = SqlSource::from_url(&url, Path::new("/"), DEADLINE).unwrap();
    let err = source.read("tern_demo").await.unwrap_err().to_string();
    assert!(
        err.contains("table entities, column last_updated_timestamp (row 'driver')")
            && err.contains("Text"),
        "{err}"
    );
    let r = call(
        &channel(&server.url()).await,
        Route::Serving,
        conv_rate_request(),
    )
    .await
    .expect("the last good snapshot keeps serving");
    assert_eq!(names(&r), ["driver_id", "conv_rate"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn registry_reads_and_connections_are_bounded() {
    const SHORT: Duration = Duration::from_millis(300);
    // A server that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgresql://postgres@{}/tern",
        silent.local_addr().unwrap()
    );
    let mut source = SqlSource::from_url(&url, Path::new("/"), SHORT).unwrap();
    let err = tokio::time::timeout(DEADLINE, source.read("tern_demo"))
        .await
        .expect("the read gives up by itself")
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not answer within 300 ms"), "{err}");

    // A table locked by another transaction: the read gives up, and works once the
    // lock is gone (on a new connection).
    let db = feast_pg_registry().await;
    let locker = connect(&db.name).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE entities IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let mut source = SqlSource::from_url(&db.url(), Path::new("/"), SHORT).unwrap();
    let err = tokio::time::timeout(DEADLINE, source.read("tern_demo"))
        .await
        .expect("the read gives up by itself")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "{} did not answer within 300 ms",
            db.url().replace("postgres@", "")
        )),
        "{err}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    let (model, _) = source.read("tern_demo").await.unwrap();
    assert_eq!(model.entities.len(), 4);
    db.drop().await;
}
