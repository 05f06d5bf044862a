//! Writing Feast's SQL registry (`SqlSource::begin` / `SqlTxn::commit`), on PostgreSQL
//! (a database per test, restored from Feast's dump or empty) and on SQLite (Feast's
//! file copied to a temp dir, or no file): one transaction under the registry's write
//! lock, only the rows that differ, Feast's schema on a fresh database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tern::proto::feast::core as pb;
use tern::registry::RegistryError;
use tern::registry::RegistrySource;
use tern::registry::model::{RegistryModel, RowColumns, Stored};
use tern::registry::sql::SqlSource;

use crate::sql_registry::{TestDb, connect, feast_pg_registry, sql_dir};
use crate::support::eventually;

const DEADLINE: Duration = Duration::from_secs(20);
const PROJECT: &str = "tern_demo";
/// Later than anything in Feast's fixtures.
const NOW: i64 = 1_900_000_000;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.try_into().unwrap())
}

/// A registry database under test.
enum Db {
    Pg(TestDb),
    Sqlite(tempfile::TempDir),
}

impl Db {
    async fn feast_pg() -> Self {
        Db::Pg(feast_pg_registry().await)
    }

    fn feast_sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            sql_dir().join("registry.sqlite"),
            dir.path().join("registry.db"),
        )
        .unwrap();
        Db::Sqlite(dir)
    }

    fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("registry.db")
    }

    fn url(&self) -> String {
        match self {
            Db::Pg(db) => db.url(),
            Db::Sqlite(dir) => format!("sqlite:///{}", Self::sqlite_path(dir).display()),
        }
    }

    fn source(&self) -> SqlSource {
        SqlSource::from_url(&self.url(), Path::new("/"), DEADLINE).unwrap()
    }

    async fn drop(self) {
        if let Db::Pg(db) = self {
            db.drop().await;
        }
    }

    /// Every row of every table, rendered: `(table, key) → columns`.
    async fn rows(&self) -> BTreeMap<(String, String), Vec<String>> {
        let mut out = BTreeMap::new();
        for (table, columns) in LAYOUT {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let sql = format!("SELECT {} FROM {table}", names.join(", "));
            let rendered: Vec<Vec<String>> = match self {
                Db::Pg(db) => {
                    let c = connect(&db.name).await;
                    match c.query(&sql, &[]).await {
                        Ok(rows) => rows
                            .iter()
                            .map(|r| {
                                columns
                                    .iter()
                                    .enumerate()
                                    .map(|(i, (_, ty))| ty.pg(r, i))
                                    .collect()
                            })
                            .collect(),
                        Err(_) => continue, // no such table
                    }
                }
                Db::Sqlite(dir) => {
                    let c = rusqlite::Connection::open(Self::sqlite_path(dir)).unwrap();
                    let Ok(mut stmt) = c.prepare(&sql) else {
                        continue;
                    };
                    stmt.query_map([], |r| {
                        Ok(columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, ty))| ty.sqlite(r, i))
                            .collect())
                    })
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
                }
            };
            for row in rendered {
                // Object tables: name, project; history: name, project, version;
                // metadata: project, key.
                let key = if table == "feature_view_version_history" {
                    row[..3].join("/")
                } else {
                    row[..2].join("/")
                };
                out.insert((table.to_string(), key), row);
            }
        }
        out
    }
}

#[derive(Clone, Copy)]
enum C {
    Text,
    OptText,
    Int,
    Blob,
    OptBlob,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl C {
    fn pg(self, r: &tokio_postgres::Row, i: usize) -> String {
        match self {
            C::Text => r.get::<_, String>(i),
            C::OptText => r
                .get::<_, Option<String>>(i)
                .unwrap_or_else(|| "NULL".into()),
            C::Int => match r.try_get::<_, i64>(i) {
                Ok(v) => v.to_string(),
                Err(_) => r.get::<_, i32>(i).to_string(),
            },
            C::Blob => hex(&r.get::<_, Vec<u8>>(i)),
            C::OptBlob => r
                .get::<_, Option<Vec<u8>>>(i)
                .map_or_else(|| "NULL".into(), |b| hex(&b)),
        }
    }

    fn sqlite(self, r: &rusqlite::Row<'_>, i: usize) -> String {
        match self {
            C::Text => r.get::<_, String>(i).unwrap(),
            C::OptText => r
                .get::<_, Option<String>>(i)
                .unwrap()
                .unwrap_or_else(|| "NULL".into()),
            C::Int => r.get::<_, i64>(i).unwrap().to_string(),
            C::Blob => hex(&r.get::<_, Vec<u8>>(i).unwrap()),
            C::OptBlob => r
                .get::<_, Option<Vec<u8>>>(i)
                .unwrap()
                .map_or_else(|| "NULL".into(), |b| hex(&b)),
        }
    }
}

type Layout = &'static [(&'static str, C)];

macro_rules! object {
    ($name:literal, $proto:literal) => {
        &[
            ($name, C::Text),
            ("project_id", C::Text),
            ("last_updated_timestamp", C::Int),
            ($proto, C::Blob),
        ]
    };
}

const VIEW: Layout = &[
    ("feature_view_name", C::Text),
    ("project_id", C::Text),
    ("last_updated_timestamp", C::Int),
    ("feature_view_proto", C::Blob),
    ("user_metadata", C::OptBlob),
];

/// Every column of every table Feast writes.
const LAYOUT: [(&str, Layout); 14] = [
    ("projects", object!("project_name", "project_proto")),
    ("entities", object!("entity_name", "entity_proto")),
    (
        "data_sources",
        object!("data_source_name", "data_source_proto"),
    ),
    (
        "feature_views",
        &[
            ("feature_view_name", C::Text),
            ("project_id", C::Text),
            ("last_updated_timestamp", C::Int),
            ("feature_view_proto", C::Blob),
            ("user_metadata", C::OptBlob),
            ("materialized_intervals", C::OptBlob),
        ],
    ),
    ("stream_feature_views", VIEW),
    ("on_demand_feature_views", VIEW),
    ("label_views", VIEW),
    (
        "feature_services",
        object!("feature_service_name", "feature_service_proto"),
    ),
    (
        "saved_datasets",
        object!("saved_dataset_name", "saved_dataset_proto"),
    ),
    (
        "validation_references",
        object!("validation_reference_name", "validation_reference_proto"),
    ),
    (
        "permissions",
        object!("permission_name", "permission_proto"),
    ),
    ("managed_infra", object!("infra_name", "infra_proto")),
    (
        "feature_view_version_history",
        &[
            ("feature_view_name", C::Text),
            ("project_id", C::Text),
            ("version_number", C::Int),
            ("feature_view_type", C::Text),
            ("feature_view_proto", C::Blob),
            ("created_timestamp", C::Int),
            ("description", C::OptText),
            ("version_id", C::Text),
        ],
    ),
    (
        "feast_metadata",
        &[
            ("project_id", C::Text),
            ("metadata_key", C::Text),
            ("metadata_value", C::Text),
            ("last_updated_timestamp", C::Int),
        ],
    ),
];

fn key(table: &str, parts: &[&str]) -> (String, String) {
    (table.to_owned(), parts.join("/"))
}

fn new_entity(name: &str) -> Stored<pb::Entity> {
    let ts = prost_types::Timestamp {
        seconds: NOW,
        nanos: 0,
    };
    Stored {
        project: PROJECT.into(),
        name: name.into(),
        row: None,
        object: pb::Entity {
            spec: Some(pb::EntitySpecV2 {
                name: name.into(),
                project: PROJECT.into(),
                join_key: format!("{name}_id"),
                value_type: 2,
                ..Default::default()
            }),
            meta: Some(pb::EntityMeta {
                created_timestamp: Some(ts),
                last_updated_timestamp: Some(ts),
            }),
        },
    }
}

fn record(view: &pb::FeatureView, version: i32) -> pb::FeatureViewVersionRecord {
    let spec = view.spec.as_ref().unwrap();
    pb::FeatureViewVersionRecord {
        feature_view_name: spec.name.clone(),
        project_id: PROJECT.into(),
        version_number: version,
        feature_view_type: "feature_view".into(),
        feature_view_proto: view.encode_to_vec(),
        created_timestamp: Some(prost_types::Timestamp {
            seconds: NOW,
            nanos: 0,
        }),
        description: String::new(),
        version_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// The model sorted the way a read returns it (by name, version, key).
fn sorted(mut m: RegistryModel) -> RegistryModel {
    m.projects.sort_by(|a, b| a.name.cmp(&b.name));
    m.entities.sort_by(|a, b| a.name.cmp(&b.name));
    m.data_sources.sort_by(|a, b| a.name.cmp(&b.name));
    m.feature_views.sort_by(|a, b| a.name.cmp(&b.name));
    m.feature_services.sort_by(|a, b| a.name.cmp(&b.name));
    m.infra.sort_by(|a, b| a.name.cmp(&b.name));
    m.version_history.sort_by(|a, b| {
        (&a.feature_view_name, a.version_number).cmp(&(&b.feature_view_name, b.version_number))
    });
    m.metadata.sort_by(|a, b| a.key.cmp(&b.key));
    m
}

fn view_mut<'a>(m: &'a mut RegistryModel, name: &str) -> &'a mut Stored<pb::FeatureView> {
    m.feature_views.iter_mut().find(|v| v.name == name).unwrap()
}

fn stamp_metadata(m: &mut RegistryModel, at: i64) {
    let row = m
        .metadata
        .iter_mut()
        .find(|r| r.key == "last_updated_timestamp")
        .unwrap();
    row.value = at.to_string();
    row.last_updated = at;
}

/// Adds an entity, edits a view's description, deletes a service and adds a version,
/// through `tern apply`'s interface; a fresh read gives exactly the new model, the
/// changed rows stamped now, every other row byte for byte as Feast wrote it.
async fn round_trip(db: Db) {
    let before = db.rows().await;
    let fingerprint = db.source().fingerprint(PROJECT).await.unwrap();
    let mut source = RegistrySource::Sql(db.source());

    let txn = source.begin(PROJECT).await.unwrap();
    let mut new = txn.model().clone();
    new.entities.push(new_entity("rider"));
    view_mut(&mut new, "zone_stats")
        .object
        .spec
        .as_mut()
        .unwrap()
        .description = "edited".into();
    new.feature_services
        .retain(|s| s.name != "driver_svc_alias");
    let driver_stats = view_mut(&mut new, "driver_stats").object.clone();
    new.version_history.push(record(&driver_stats, 4));
    txn.commit(new.clone(), at(NOW)).await.unwrap();

    let (read, after_fingerprint) = db.source().read(PROJECT).await.unwrap();
    let mut expected = new;
    expected.entities.last_mut().unwrap().row = Some(RowColumns {
        last_updated: NOW,
        user_metadata: None,
        materialized_intervals: None,
    });
    view_mut(&mut expected, "zone_stats")
        .row
        .as_mut()
        .unwrap()
        .last_updated = NOW;
    stamp_metadata(&mut expected, NOW);
    assert!(sorted(read) == sorted(expected), "read back as written");
    assert_ne!(after_fingerprint, fingerprint);

    let after = db.rows().await;
    let changed = [
        key("entities", &["rider", PROJECT]),
        key("feature_views", &["zone_stats", PROJECT]),
        key("feature_services", &["driver_svc_alias", PROJECT]),
        key(
            "feature_view_version_history",
            &["driver_stats", PROJECT, "4"],
        ),
        key("feast_metadata", &[PROJECT, "last_updated_timestamp"]),
    ];
    for (k, row) in &before {
        if !changed.contains(k) {
            assert_eq!(after.get(k), Some(row), "{k:?} untouched");
        }
    }
    assert!(!after.contains_key(&changed[2]), "the service is deleted");
    assert_eq!(
        after.len(),
        before.len() + 1,
        "one entity and one version more, one service less"
    );
    assert_eq!(after[&changed[0]][2], NOW.to_string());
    assert_eq!(after[&changed[1]][2], NOW.to_string());
    assert_eq!(
        after[&changed[1]][4..],
        before[&changed[1]][4..],
        "user_metadata, intervals kept"
    );
    assert_eq!(
        after[&changed[3]][5],
        NOW.to_string(),
        "created_timestamp in epoch seconds"
    );
    assert_eq!(after[&changed[4]][2..], [NOW.to_string(), NOW.to_string()]);
    db.drop().await;
}

#[tokio::test]
async fn postgres_commit_writes_only_what_changed() {
    round_trip(Db::feast_pg().await).await;
}

#[tokio::test]
async fn sqlite_commit_writes_only_what_changed() {
    round_trip(Db::feast_sqlite()).await;
}

/// A model with a project, an entity, a view and its version, as `tern apply` builds
/// it for a new project.
fn fresh_model() -> RegistryModel {
    let ts = prost_types::Timestamp {
        seconds: NOW,
        nanos: 0,
    };
    let view = pb::FeatureView {
        spec: Some(pb::FeatureViewSpec {
            name: "rides".into(),
            project: PROJECT.into(),
            entities: vec!["rider".into()],
            ..Default::default()
        }),
        meta: Some(pb::FeatureViewMeta {
            created_timestamp: Some(ts),
            last_updated_timestamp: Some(ts),
            ..Default::default()
        }),
    };
    RegistryModel {
        projects: vec![Stored {
            project: PROJECT.into(),
            name: PROJECT.into(),
            row: None,
            object: pb::Project {
                spec: Some(pb::ProjectSpec {
                    name: PROJECT.into(),
                    ..Default::default()
                }),
                meta: Some(pb::ProjectMeta {
                    created_timestamp: Some(ts),
                    last_updated_timestamp: Some(ts),
                }),
            },
        }],
        entities: vec![new_entity("rider")],
        version_history: vec![record(&view, 0)],
        feature_views: vec![Stored {
            project: PROJECT.into(),
            name: "rides".into(),
            row: None,
            object: view,
        }],
        ..Default::default()
    }
}

/// Columns (name, type, nullability, order), primary keys and indexes of every table.
async fn pg_schema(db: &str) -> Vec<String> {
    let c = connect(db).await;
    let mut out = Vec::new();
    for sql in [
        "SELECT table_name::text, ordinal_position::text, column_name::text, data_type::text, \
         coalesce(character_maximum_length::text, ''), is_nullable::text \
         FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        "SELECT tc.table_name::text, tc.constraint_name::text, k.column_name::text, k.ordinal_position::text \
         FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k \
         USING (constraint_schema, constraint_name) \
         WHERE tc.table_schema = 'public' AND tc.constraint_type = 'PRIMARY KEY' ORDER BY 1, 4",
        "SELECT tablename::text, indexname::text, indexdef::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 2",
    ] {
        for row in c.query(sql, &[]).await.unwrap() {
            let cells: Vec<String> = (0..row.len()).map(|i| row.get::<_, String>(i)).collect();
            out.push(cells.join(" | "));
        }
    }
    out
}

fn sqlite_schema(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let objects: Vec<(String, String, String)> = c
        .prepare("SELECT type, name, tbl_name FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for (kind, name, table) in objects {
        out.push(format!("{kind} {name} on {table}"));
        let pragma = if kind == "table" {
            format!("PRAGMA table_info({name})")
        } else {
            format!("PRAGMA index_info({name})")
        };
        let mut stmt = c.prepare(&pragma).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join(" | "))
            })
            .unwrap()
            .map(Result::unwrap);
        out.extend(rows);
    }
    out
}

/// `begin` on a database without Feast's tables creates them; a commit then reads
/// back equal.
async fn fresh(db: &Db) {
    let mut sql = db.source();
    let txn = sql.begin(PROJECT).await.unwrap();
    let old = txn.model().clone();
    assert!(old.projects.is_empty() && old.metadata.is_empty());
    let new = fresh_model();
    txn.commit(&old, &new, at(NOW)).await.unwrap();

    let (read, _) = db.source().read(PROJECT).await.unwrap();
    let mut expected = new;
    let row = Some(RowColumns {
        last_updated: NOW,
        user_metadata: None,
        materialized_intervals: None,
    });
    expected.projects[0].row = row.clone();
    expected.entities[0].row = row.clone();
    expected.feature_views[0].row = row;
    expected.header.history_present = true;
    // Feast's per-project rows: a uuid, and the apply's stamp.
    let uuid = read
        .metadata
        .iter()
        .find(|m| m.key == "project_uuid")
        .expect("a project_uuid row");
    assert!(uuid::Uuid::parse_str(&uuid.value).is_ok() && uuid.last_updated == NOW);
    expected.metadata = read.metadata.clone();
    stamp_metadata(&mut expected, NOW);
    assert_eq!(read.metadata.len(), 2);
    assert!(sorted(read) == sorted(expected), "read back as written");
}

#[tokio::test]
async fn postgres_fresh_database_gets_feasts_schema() {
    let db = Db::Pg(TestDb::create().await);
    fresh(&db).await;
    let feast = feast_pg_registry().await;
    let Db::Pg(ours) = &db else { unreachable!() };
    let (ours, theirs) = (pg_schema(&ours.name).await, pg_schema(&feast.name).await);
    assert_eq!(ours, theirs, "Feast's tables, columns, keys and indexes");
    assert!(
        theirs
            .iter()
            .any(|l| l.contains("feature_view_version_history_pkey | version_number | 3")),
        "{theirs:#?}"
    );
    feast.drop().await;
    db.drop().await;
}

#[tokio::test]
async fn sqlite_fresh_database_gets_feasts_schema() {
    let db = Db::Sqlite(tempfile::tempdir().unwrap());
    fresh(&db).await;
    let Db::Sqlite(dir) = &db else { unreachable!() };
    let (ours, theirs) = (
        sqlite_schema(&Db::sqlite_path(dir)),
        sqlite_schema(&sql_dir().join("registry.sqlite")),
    );
    assert_eq!(ours, theirs, "Feast's tables, columns, keys and indexes");
    assert!(
        theirs
            .iter()
            .any(|l| l == "index idx_fv_version_history_project_id on feature_view_version_history")
    );
}

/// Ungranted advisory locks of sessions on `db`.
async fn advisory_waiters(db: &str) -> i64 {
    connect("postgres")
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND l.locktype = 'advisory' AND NOT l.granted",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

/// A second writer's `begin` waits for the first writer's commit, then reads what it
/// wrote. The second is known to be waiting (its source counts the wait, and on
/// PostgreSQL the server shows its advisory lock ungranted), not guessed from timing.
async fn second_writer_waits(db: Db) {
    let mut first = db.source();
    let txn = first.begin(PROJECT).await.unwrap();

    // A writer that will not wait long gives up, saying why.
    let mut impatient = db.source();
    impatient.set_lock_wait(Duration::from_millis(200));
    let e = tokio::time::timeout(DEADLINE, impatient.begin(PROJECT))
        .await
        .expect("the wait is bounded")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("another writer held the registry's write lock"),
        "{e}"
    );

    let mut second = db.source();
    let lock = second.write_lock();
    let waiting = tokio::spawn(async move {
        let txn = second.begin(PROJECT).await?;
        Ok::<_, RegistryError>(txn.model().clone())
    });
    eventually(DEADLINE, "the second writer waiting", || async {
        (lock.waits() == 1).then_some(())
    })
    .await;
    if let Db::Pg(pg) = &db {
        eventually(DEADLINE, "an ungranted advisory lock", || async {
            (advisory_waiters(&pg.name).await == 1).then_some(())
        })
        .await;
    }
    assert!(
        !waiting.is_finished(),
        "the first writer still holds the lock"
    );

    let old = txn.model().clone();
    let mut new = old.clone();
    new.entities.push(new_entity("rider"));
    txn.commit(&old, &new, at(NOW)).await.unwrap();
    let seen = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the second writer gets the lock")
        .unwrap()
        .unwrap();
    assert!(
        seen.entities.iter().any(|e| e.name == "rider"),
        "the second writer reads the first one's write"
    );
    db.drop().await;
}

#[tokio::test]
async fn postgres_writers_wait_for_each_other() {
    second_writer_waits(Db::feast_pg().await).await;
}

#[tokio::test]
async fn sqlite_writers_wait_for_each_other() {
    second_writer_waits(Db::feast_sqlite()).await;
}

fn is_conflict(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Conflict { .. })
}

/// A non-Tern writer (which takes no lock) adds the version Tern is about to add:
/// the commit is a conflict, nothing of it is written, the lock is free again and
/// the retry sees the other writer's version.
#[tokio::test]
async fn postgres_version_taken_meanwhile_is_a_conflict() {
    let db = Db::feast_pg().await;
    let Db::Pg(pg) = &db else { unreachable!() };
    let before = db.rows().await;
    let mut sql = db.source();
    let txn = sql.begin(PROJECT).await.unwrap();
    let old = txn.model().clone();
    let mut new = old.clone();
    new.entities.push(new_entity("rider"));
    let driver_stats = view_mut(&mut new, "driver_stats").object.clone();
    new.version_history.push(record(&driver_stats, 4));

    connect(&pg.name)
        .await
        .batch_execute(
            "INSERT INTO feature_view_version_history \
             SELECT feature_view_name, project_id, 4, feature_view_type, feature_view_proto, \
             created_timestamp, description, 'feast-wrote-this-one' \
             FROM feature_view_version_history WHERE feature_view_name = 'driver_stats' AND version_number = 3",
        )
        .await
        .unwrap();
    let e = txn.commit(&old, &new, at(NOW)).await.unwrap_err();
    assert!(is_conflict(&e), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("version 4 of 'driver_stats'")
            && message.contains(&db.url().replace("postgres@", "")),
        "{message}"
    );

    let after = db.rows().await;
    assert!(!after.contains_key(&key("entities", &["rider", PROJECT])));
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the other writer's version"
    );
    let retry = tokio::time::timeout(DEADLINE, sql.begin(PROJECT))
        .await
        .expect("the lock is released")
        .unwrap();
    assert!(
        retry
            .model()
            .version_history
            .iter()
            .any(|r| r.version_id == "feast-wrote-this-one")
    );
    drop(retry);
    db.drop().await;
}

/// SQLite serialises writers, so no one can add a row while Tern holds the lock; a
/// commit from a stale `old` (a version it does not know of) still meets the stored
/// row: a conflict, and nothing of the commit is written.
#[tokio::test]
async fn sqlite_version_already_stored_is_a_conflict() {
    let db = Db::feast_sqlite();
    let before = db.rows().await;
    let mut sql = db.source();
    let txn = sql.begin(PROJECT).await.unwrap();
    let mut old = txn.model().clone();
    old.version_history.retain(|r| r.version_number != 3);
    let mut new = txn.model().clone();
    new.entities.push(new_entity("rider"));
    let v3 = new
        .version_history
        .iter_mut()
        .find(|r| r.feature_view_name == "driver_stats" && r.version_number == 3)
        .unwrap();
    v3.version_id = uuid::Uuid::new_v4().to_string();
    let e = txn.commit(&old, &new, at(NOW)).await.unwrap_err();
    assert!(is_conflict(&e), "{e}");
    assert!(e.to_string().contains("version 3 of 'driver_stats'"), "{e}");
    assert_eq!(db.rows().await, before, "nothing written");
    drop(sql);
    db.drop().await;
}

/// A transaction dropped without commit changes nothing, and frees the lock; on a
/// fresh database, not even the tables are created.
async fn dropped_changes_nothing(db: Db, empty: Db) {
    let before = db.rows().await;
    let mut sql = db.source();
    let txn = sql.begin(PROJECT).await.unwrap();
    drop(txn);
    let txn = tokio::time::timeout(DEADLINE, sql.begin(PROJECT))
        .await
        .expect("the lock is released")
        .unwrap();
    let old = txn.model().clone();
    let mut new = old.clone();
    new.entities.push(new_entity("rider"));
    drop(new);
    drop(txn);
    assert_eq!(db.rows().await, before);

    let mut sql = empty.source();
    let txn = sql.begin(PROJECT).await.unwrap();
    drop(txn);
    assert!(empty.rows().await.is_empty());
    let (model, _) = empty.source().read(PROJECT).await.unwrap();
    assert!(model.projects.is_empty());
    db.drop().await;
    empty.drop().await;
}

#[tokio::test]
async fn postgres_dropped_transaction_changes_nothing() {
    dropped_changes_nothing(Db::feast_pg().await, Db::Pg(TestDb::create().await)).await;
}

#[tokio::test]
async fn sqlite_dropped_transaction_changes_nothing() {
    dropped_changes_nothing(Db::feast_sqlite(), Db::Sqlite(tempfile::tempdir().unwrap())).await;
}

/// A change committed in the same second as the row's stamp still moves the row, and
/// with it the fingerprint the reloaders compare.
#[tokio::test]
async fn a_commit_within_the_same_second_moves_the_fingerprint() {
    let db = Db::feast_sqlite();
    let (model, fingerprint) = db.source().read(PROJECT).await.unwrap();
    let stamp = model
        .feature_views
        .iter()
        .find(|v| v.name == "driver_stats")
        .and_then(|v| v.row.as_ref())
        .unwrap()
        .last_updated;
    let mut sql = db.source();
    let txn = sql.begin(PROJECT).await.unwrap();
    let old = txn.model().clone();
    let mut new = old.clone();
    view_mut(&mut new, "driver_stats")
        .object
        .spec
        .as_mut()
        .unwrap()
        .description = "edited".into();
    txn.commit(&old, &new, at(stamp)).await.unwrap();
    let (read, moved) = db.source().read(PROJECT).await.unwrap();
    let row = read
        .feature_views
        .iter()
        .find(|v| v.name == "driver_stats")
        .and_then(|v| v.row.clone())
        .unwrap();
    assert_eq!(row.last_updated, stamp + 1);
    assert_ne!(moved, fingerprint);
}

/// A server that accepts the connection and never answers: `begin` gives up.
#[tokio::test]
async fn begin_is_bounded_by_the_registry_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgresql://postgres@{}/tern",
        silent.local_addr().unwrap()
    );
    let mut sql = SqlSource::from_url(&url, Path::new("/"), Duration::from_millis(300)).unwrap();
    let e = tokio::time::timeout(DEADLINE, sql.begin(PROJECT))
        .await
        .expect("begin gives up by itself")
        .unwrap_err()
        .to_string();
    assert!(e.contains("did not answer within 300 ms"), "{e}");
}

/// A statement that hangs (here: on a row another session holds) is given up after
/// the registry timeout, by the server too, so the write lock is free again at once.
#[tokio::test]
async fn postgres_commit_statements_are_bounded() {
    let db = Db::feast_pg().await;
    let Db::Pg(pg) = &db else { unreachable!() };
    let before = db.rows().await;
    let mut sql =
        SqlSource::from_url(&db.url(), Path::new("/"), Duration::from_millis(300)).unwrap();
    let txn = sql.begin(PROJECT).await.unwrap();
    let locker = connect(&pg.name).await;
    locker
        .batch_execute("BEGIN; SELECT * FROM entities WHERE entity_name = 'driver' FOR UPDATE")
        .await
        .unwrap();
    let old = txn.model().clone();
    let mut new = old.clone();
    let driver = new
        .entities
        .iter_mut()
        .find(|e| e.name == "driver")
        .unwrap();
    driver.object.spec.as_mut().unwrap().description = "edited".into();
    let e = tokio::time::timeout(DEADLINE, txn.commit(&old, &new, at(NOW)))
        .await
        .expect("the commit gives up by itself")
        .unwrap_err();
    assert!(matches!(e, RegistryError::SqlTimeout { .. }), "{e}");
    let mut next = db.source();
    let txn = tokio::time::timeout(DEADLINE, next.begin(PROJECT))
        .await
        .expect("the lock is free")
        .unwrap();
    drop(txn);
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(db.rows().await, before);
    db.drop().await;
}
