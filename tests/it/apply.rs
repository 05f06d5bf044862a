//! `tern plan` / `tern apply` / `tern versions` on a temp repo: the versioning
//! lifecycle checked in the registry, in the SQLite tables and through `tern serve`
//! after hot reload; prevent_destroy; concurrent applies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use tern::commands::apply::{self, ApplyOptions};
use tern::commands::versions::{self, VersionsCommand};
use tern::commands::{Error, Outcome};
use tern::config::KeySerialization;
use tern::plan::PlanError;
use tern::proto::feast::core as pb;
use tern::proto::feast::types::Value;
use tern::proto::feast::types::value::Val;
use tern::registry::RegistrySource;
use tern::registry::model::RegistryModel;
use tern::serving::Clock;
use tern::store::{EntityValue, key, sqlite};
use tern::testing::TestServer;
use tonic::transport::Channel;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);
pub const PROJECT: &str = "lifecycle";

/// A feature repo in a temp folder: `feature_store.yaml`, definitions written per step.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub defs: PathBuf,
}

impl Repo {
    /// A repo whose registry section is `registry` (YAML, indented two spaces).
    pub fn new(registry: &str) -> Self {
        Self::with_store(registry, "  type: sqlite\n  path: data/online.db")
    }

    /// A repo with `online_store` given (YAML, indented two spaces).
    pub fn with_store(registry: &str, online_store: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("feature_store.yaml");
        std::fs::write(
            &config,
            format!(
                "project: {PROJECT}\nprovider: local\nregistry:\n{registry}\nonline_store:\n{online_store}\nentity_key_serialization_version: 3\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let defs = dir.path().join("features.yaml");
        Self { dir, config, defs }
    }

    pub fn file() -> Self {
        Self::new(
            "  path: data/registry.db\n  cache_ttl_seconds: 1\n  enable_online_feature_view_versioning: true",
        )
    }

    /// A SQL registry at `url` (PostgreSQL, or `sqlite:///…`).
    pub fn sql(url: &str) -> Self {
        Self::new(&format!(
            "  registry_type: sql\n  path: {url}\n  cache_ttl_seconds: 1\n  enable_online_feature_view_versioning: true"
        ))
    }

    pub fn registry_file(&self) -> PathBuf {
        self.dir.path().join("data/registry.db")
    }

    pub fn online(&self) -> PathBuf {
        self.dir.path().join("data/online.db")
    }

    pub fn options(&self) -> ApplyOptions {
        ApplyOptions {
            config: self.config.clone(),
            files: vec![self.defs.clone()],
            execute: true,
            ..Default::default()
        }
    }

    /// Writes the definitions and applies them; the outcome and what was printed.
    pub async fn apply_with(
        &self,
        yaml: &str,
        options: ApplyOptions,
    ) -> (Result<Outcome, Error>, String) {
        std::fs::write(&self.defs, yaml).unwrap();
        let mut out = Vec::new();
        let result = apply::run(&options, &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    pub async fn apply(&self, yaml: &str) -> String {
        let (result, out) = self.apply_with(yaml, self.options()).await;
        match result {
            Ok(Outcome::Done) => out,
            other => panic!("apply failed: {other:?}\n{out}"),
        }
    }

    pub async fn model(&self) -> RegistryModel {
        let config = tern::commands::load_config(&self.config).unwrap();
        let mut source = RegistrySource::open(&config, DEADLINE).unwrap();
        source.read(PROJECT).await.unwrap().model
    }

    pub async fn versions(&self, command: VersionsCommand) -> (Result<Outcome, Error>, String) {
        let mut out = Vec::new();
        let result = versions::run(&self.config, &command, &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    pub fn tables(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.online()).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Stores `score = value` for driver 1 in `table`.
    pub fn write_score(&self, table: &str, value: f64) {
        let mut conn = rusqlite::Connection::open(self.online()).unwrap();
        let mut k = key::key_prefix(&["driver_id"], KeySerialization::V3);
        key::push_value(&mut k, &EntityValue::Int64(1));
        let v = Value {
            val: Some(Val::DoubleVal(value)),
        }
        .encode_to_vec();
        let row = sqlite::WriteRow {
            entity_key: &k,
            feature: "score",
            value: &v,
            event_ts: 100,
            created_ts: None,
        };
        sqlite::write_rows(&mut conn, table, [row]).unwrap();
    }
}

/// Definitions with one view `driver_stats` of `features` (name: dtype) and extra YAML
/// appended to the view (`  key: value` lines) and to the file.
pub fn defs(features: &[(&str, &str)], view_extra: &str, tail: &str) -> String {
    let schema: String = features
        .iter()
        .map(|(n, t)| format!("      - {{name: {n}, dtype: {t}}}\n"))
        .collect();
    format!(
        "project: {PROJECT}\n\
         entities:\n  - {{name: driver, join_keys: [driver_id], value_type: INT64}}\n\
         sources:\n  - {{name: driver_src, type: file, path: data/driver_stats.parquet, timestamp_field: event_timestamp}}\n\
         feature_views:\n  - name: driver_stats\n    entities: [driver]\n    source: driver_src\n    ttl: 1d\n{view_extra}    schema:\n{schema}{tail}"
    )
}

pub fn view<'m>(model: &'m RegistryModel, name: &str) -> &'m pb::FeatureView {
    &model
        .feature_views
        .iter()
        .find(|v| v.name == name && v.project == PROJECT)
        .unwrap_or_else(|| panic!("no view {name}"))
        .object
}

pub fn active_version(model: &RegistryModel, name: &str) -> i32 {
    view(model, name)
        .meta
        .as_ref()
        .unwrap()
        .current_version_number
}

pub fn history(model: &RegistryModel, name: &str) -> Vec<i32> {
    let mut v: Vec<i32> = model
        .version_history
        .iter()
        .filter(|r| r.feature_view_name == name && r.project_id == PROJECT)
        .map(|r| r.version_number)
        .collect();
    v.sort();
    v
}

pub fn feature_names(model: &RegistryModel, name: &str) -> Vec<String> {
    view(model, name)
        .spec
        .as_ref()
        .unwrap()
        .features
        .iter()
        .map(|f| f.name.clone())
        .collect()
}

const V0: &[(&str, &str)] = &[("score", "Float64")];
const V1: &[(&str, &str)] = &[("score", "Float64"), ("trips", "Int64")];
const V2: &[(&str, &str)] = &[
    ("score", "Float64"),
    ("trips", "Int64"),
    ("rating", "Float32"),
];
const V3: &[(&str, &str)] = &[("score", "Float64"), ("trips", "Int64"), ("name", "String")];

async fn score(ch: &Channel, reference: &str) -> Option<f64> {
    let r = call(
        ch,
        Route::Serving,
        refs_request(&[reference], vec![("driver_id", vec![int64(1)])]),
    )
    .await
    .ok()?;
    let name = reference.split(':').nth(1)?;
    match column(&r, name).0.first()?.val {
        Some(Val::DoubleVal(v)) => Some(v),
        _ => None,
    }
}

/// Polls until `reference` reads `want` (the server reloads the registry on its own).
async fn reads(ch: &Channel, reference: &str, want: f64) {
    eventually(DEADLINE, &format!("{reference} = {want}"), || async {
        (score(ch, reference).await == Some(want)).then_some(())
    })
    .await;
}

/// The whole lifecycle on `repo`: v0 → schema change v1 → metadata change (still v1) →
/// staged v2 → promote (still v2) → pin back to v1 → pin conflict → prune.
pub async fn lifecycle(repo: &Repo, serve: bool) {
    let table = |v: u32| {
        if v == 0 {
            format!("{PROJECT}_driver_stats")
        } else {
            format!("{PROJECT}_driver_stats_v{v}")
        }
    };

    // v0
    let out = repo.apply(&defs(V0, "", "")).await;
    assert!(
        out.contains("driver_stats") && out.contains("create"),
        "{out}"
    );
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 0);
    assert_eq!(history(&m, "driver_stats"), [0]);
    assert!(repo.tables().contains(&table(0)));
    repo.write_score(&table(0), 0.0);

    let server = if serve {
        Some(
            TestServer::start(&repo.config, Clock::Fixed(100))
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let ch = match &server {
        Some(s) => Some(channel(&s.url()).await),
        None => None,
    };
    if let Some(ch) = &ch {
        reads(ch, "driver_stats:score", 0.0).await;
    }

    // Schema change → v1, promoted, with its own table.
    let out = repo.apply(&defs(V1, "", "")).await;
    assert!(out.contains("new version v1 (promoted)"), "{out}");
    assert!(out.contains("+ feature trips INT64"), "{out}");
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 1);
    assert_eq!(history(&m, "driver_stats"), [0, 1]);
    assert!(repo.tables().contains(&table(1)));
    repo.write_score(&table(1), 1.0);
    if let Some(ch) = &ch {
        reads(ch, "driver_stats:score", 1.0).await;
        reads(ch, "driver_stats@v0:score", 0.0).await;
    }

    // Metadata only → in place, still v1, no record.
    let out = repo
        .apply(&defs(V1, "    description: the drivers\n", ""))
        .await;
    assert!(out.contains("update in place"), "{out}");
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 1);
    assert_eq!(history(&m, "driver_stats"), [0, 1]);
    assert_eq!(
        view(&m, "driver_stats").spec.as_ref().unwrap().description,
        "the drivers"
    );

    // Staged v2: recorded, table created, active untouched.
    let staged = defs(V2, "    description: the drivers\n", "");
    let (result, out) = repo
        .apply_with(
            &staged,
            ApplyOptions {
                no_promote: true,
                ..repo.options()
            },
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Done)), "{result:?}\n{out}");
    assert!(out.contains("new version v2 (staged)"), "{out}");
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 1);
    assert_eq!(feature_names(&m, "driver_stats"), ["score", "trips"]);
    assert_eq!(history(&m, "driver_stats"), [0, 1, 2]);
    assert!(repo.tables().contains(&table(2)));
    repo.write_score(&table(2), 2.0);
    if let Some(ch) = &ch {
        reads(ch, "driver_stats@v2:score", 2.0).await;
        reads(ch, "driver_stats:score", 1.0).await;
    }

    // A plain apply of the staged definition promotes v2: no v3.
    let out = repo.apply(&staged).await;
    assert!(out.contains("promote v2"), "{out}");
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 2);
    assert_eq!(history(&m, "driver_stats"), [0, 1, 2]);
    if let Some(ch) = &ch {
        reads(ch, "driver_stats:score", 2.0).await;
    }

    // Pin back to v1 (definition unchanged but for the pin): v1's schema is active.
    let pinned = defs(V2, "    description: the drivers\n    version: v1\n", "");
    let out = repo.apply(&pinned).await;
    assert!(out.contains("pin v1"), "{out}");
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 1);
    assert_eq!(feature_names(&m, "driver_stats"), ["score", "trips"]);
    assert_eq!(
        view(&m, "driver_stats").spec.as_ref().unwrap().version,
        "v1"
    );
    assert_eq!(history(&m, "driver_stats"), [0, 1, 2]);
    if let Some(ch) = &ch {
        reads(ch, "driver_stats:score", 1.0).await;
    }
    // Re-applying the pin changes nothing (Feast raises a conflict here).
    let out = repo.apply(&pinned).await;
    assert!(out.contains("No changes"), "{out}");

    // A pin together with a schema change is Feast's FeatureViewPinConflict; nothing
    // changes on disk.
    let before = registry_bytes(repo).await;
    let (result, _) = repo
        .apply_with(&defs(V3, "    version: v1\n", ""), repo.options())
        .await;
    match result {
        Err(Error::Plan(e @ PlanError::PinConflict { .. })) => assert!(
            e.to_string().starts_with(
                "Cannot pin feature view 'driver_stats' to v1 because the definition has also been modified."
            ),
            "{e}"
        ),
        other => panic!("expected a pin conflict, got {other:?}"),
    }
    assert_eq!(registry_bytes(repo).await, before);

    // A pin to a version that does not exist is an error, never a new version.
    let (result, _) = repo
        .apply_with(&defs(V1, "    version: v7\n", ""), repo.options())
        .await;
    let Err(Error::Plan(PlanError::Definitions(e))) = result else {
        panic!("expected an error, got {result:?}");
    };
    assert!(
        e.to_string()
            .contains("v7 of feature view 'driver_stats' does not exist"),
        "{e}"
    );
    assert_eq!(registry_bytes(repo).await, before);

    // versions list: the active and the staged ones marked.
    let (result, out) = repo
        .versions(VersionsCommand::List {
            view: "driver_stats".into(),
        })
        .await;
    assert!(matches!(result, Ok(Outcome::Done)));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("VERSION  TYPE"), "{out}");
    assert!(
        lines[0].contains("CREATED")
            && lines[0].contains("VERSION_ID")
            && lines[0].contains("ACTIVE")
            && lines[0].contains("MATERIALIZED"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[2].starts_with("v1") && lines[2].contains("yes"),
        "{out}"
    );
    assert!(
        lines[3].starts_with("v2") && lines[3].contains("staged"),
        "{out}"
    );
    // CREATED as Feast prints it: a SQL registry's times are aware ones.
    let sql = !repo.registry_file().exists();
    assert_eq!(lines[1].contains("+00:00"), sql, "{out}");

    // diff
    let (_, out) = repo
        .versions(VersionsCommand::Diff {
            view: "driver_stats".into(),
            a: 1,
            b: 2,
        })
        .await;
    assert!(out.contains("+ feature rating FLOAT"), "{out}");

    // Prune keeping one: v0 goes (older than the active v1); v1 active and v2 staged stay.
    let (result, out) = repo
        .versions(VersionsCommand::Prune {
            view: "driver_stats".into(),
            keep: 1,
            dev: false,
        })
        .await;
    assert!(matches!(result, Ok(Outcome::Done)), "{result:?}\n{out}");
    let m = repo.model().await;
    assert_eq!(history(&m, "driver_stats"), [1, 2]);
    let tables = repo.tables();
    assert!(!tables.contains(&table(0)), "{tables:?}");
    assert!(
        tables.contains(&table(1)) && tables.contains(&table(2)),
        "{tables:?}"
    );
    if let Some(ch) = &ch {
        reads(ch, "driver_stats:score", 1.0).await;
    }
    if let Some(server) = server {
        server.stop().await.unwrap();
    }
}

async fn registry_bytes(repo: &Repo) -> Vec<u8> {
    let m = repo.model().await;
    let mut m = m;
    // A file registry re-encodes to its bytes; a SQL one compares by model.
    m.header.version_id.clear();
    m.to_file().encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_a_file_registry_through_tern_serve() {
    let repo = Repo::file();
    lifecycle(&repo, true).await;
}

fn files_unchanged(paths: &[&Path]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn identical_reapply_writes_nothing() {
    let repo = Repo::file();
    repo.apply(&defs(V0, "", "")).await;
    let before = files_unchanged(&[&repo.registry_file()]);
    let out = repo.apply(&defs(V0, "", "")).await;
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(files_unchanged(&[&repo.registry_file()]), before);
}

/// Applies of different schemas at once: each waits for the lock and plans against
/// the previous one's registry, so every version is recorded (Feast loses all but
/// the last write).
pub async fn concurrent_applies_lose_nothing(repo: &Repo) {
    repo.apply(&defs(V0, "", "")).await;
    let extra = ["a", "b", "c", "d"];
    let mut tasks = Vec::new();
    for name in extra {
        let file = repo.dir.path().join(format!("defs_{name}.yaml"));
        std::fs::write(
            &file,
            defs(&[("score", "Float64"), (name, "Int64")], "", ""),
        )
        .unwrap();
        let options = ApplyOptions {
            files: vec![file],
            ..repo.options()
        };
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let result = apply::run(&options, &mut out).await;
            (
                result.map_err(|e| e.to_string()),
                String::from_utf8(out).unwrap(),
            )
        }));
    }
    for t in tasks {
        let (result, out) = t.await.unwrap();
        assert_eq!(result, Ok(Outcome::Done), "{out}");
    }
    let m = repo.model().await;
    assert_eq!(history(&m, "driver_stats"), [0, 1, 2, 3, 4]);
    // Each schema is one of the recorded versions.
    let mut recorded: Vec<String> = m
        .version_history
        .iter()
        .filter(|r| r.version_number > 0)
        .map(|r| {
            let v = pb::FeatureView::decode(r.feature_view_proto.as_slice()).unwrap();
            v.spec.unwrap().features[1].name.clone()
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded, extra);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_on_a_file_registry_lose_nothing() {
    concurrent_applies_lose_nothing(&Repo::file()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_a_postgres_registry_through_tern_serve() {
    let db = crate::sql_registry::TestDb::create().await;
    let repo = Repo::sql(&db.url());
    lifecycle(&repo, true).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_a_sqlite_sql_registry() {
    let repo = Repo::sql("sqlite:///data/registry.sqlite");
    lifecycle(&repo, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_on_a_postgres_registry_lose_nothing() {
    let db = crate::sql_registry::TestDb::create().await;
    concurrent_applies_lose_nothing(&Repo::sql(&db.url())).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_on_a_sqlite_sql_registry_lose_nothing() {
    concurrent_applies_lose_nothing(&Repo::sql("sqlite:///data/registry.sqlite")).await;
}

/// Deleting a view from a Redis-backed repo deletes every version's fields from the
/// entity hashes, and nothing of the views that stay.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_view_deletes_its_redis_fields() {
    use tern::store::redis::WriteRow;
    use tern::store::{RedisSettings, RedisStore, StorageLayout};

    let redis = tern::testing::RedisServer::start(&[]).unwrap();
    let repo = Repo::with_store(
        "  path: data/registry.db\n  enable_online_feature_view_versioning: true",
        &format!("  type: redis\n  connection_string: \"{}\"", redis.addr()),
    );
    let other = "  - name: other\n    entities: [driver]\n    source: driver_src\n    schema:\n      - {name: score, dtype: Float64}\n";
    repo.apply(&defs(V0, "", other)).await;
    repo.apply(&defs(V1, "", other)).await;

    let config = tern::commands::load_config(&repo.config).unwrap();
    let tern::config::OnlineStoreConfig::Redis(rc) = &config.online_store else {
        panic!("a Redis store");
    };
    let store = RedisStore::open(
        rc,
        PROJECT,
        RedisSettings {
            timeout: DEADLINE,
            connections: 1,
        },
    )
    .unwrap();
    let mut k = key::key_prefix(&["driver_id"], KeySerialization::V3);
    key::push_value(&mut k, &EntityValue::Int64(1));
    let v = Value {
        val: Some(Val::DoubleVal(1.0)),
    }
    .encode_to_vec();
    let time = prost_types::Timestamp {
        seconds: 100,
        nanos: 0,
    };
    for (view, version, features) in [
        ("driver_stats", 0, vec!["score"]),
        ("driver_stats", 1, vec!["score", "trips"]),
        ("other", 0, vec!["score"]),
    ] {
        let layout = StorageLayout::new(
            PROJECT,
            view,
            version,
            features.iter().map(|f| (*f).to_owned()).collect(),
        );
        let values: Vec<(&str, &[u8])> = features.iter().map(|f| (*f, v.as_slice())).collect();
        store
            .write_batch(
                &layout,
                &[WriteRow {
                    entity_key: &k,
                    values: &values,
                    event_time: time,
                }],
            )
            .await
            .unwrap();
    }
    let mut hash_key = k.clone();
    hash_key.extend_from_slice(PROJECT.as_bytes());
    let client = redis::Client::open(format!("redis://{}", redis.addr())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let fields = |m: std::collections::HashMap<Vec<u8>, Vec<u8>>| {
        let mut f: Vec<Vec<u8>> = m.into_keys().collect();
        f.sort();
        f
    };
    let before: std::collections::HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg(&hash_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(before.len(), 2 + 3 + 2, "{before:?}");

    // Delete driver_stats (the definitions keep `other`).
    let yaml = format!(
        "entities:\n  - {{name: driver, join_keys: [driver_id], value_type: INT64}}\nsources:\n  - {{name: driver_src, type: file, path: data/driver_stats.parquet, timestamp_field: event_timestamp}}\nfeature_views:\n{other}"
    );
    let out = repo.apply(&yaml).await;
    assert!(out.contains("drop"), "{out}");
    let after: std::collections::HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg(&hash_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let kept = StorageLayout::new(PROJECT, "other", 0, vec!["score".to_owned()]);
    let mut want = vec![kept.redis_fields[0].to_vec(), kept.redis_ts_field.clone()];
    want.sort();
    assert_eq!(fields(after), want);
}

/// Definitions that contradict the registry are refused whole, naming each problem,
/// and nothing is written.
#[tokio::test]
async fn bad_definitions_change_nothing() {
    let repo = Repo::file();
    repo.apply(&defs(V0, "", "")).await;
    let before = std::fs::read(repo.registry_file()).unwrap();
    let cases: [(String, &str); 5] = [
        (
            defs(V0, "", "").replace("project: lifecycle", "project: other"),
            "project: 'other' differs from the project of feature_store.yaml ('lifecycle')",
        ),
        (
            defs(V0, "", "")
                .replace("name: driver_stats", "name: fresh")
                .replace("    ttl: 1d\n", "    ttl: 1d\n    version: v1\n"),
            "v1 cannot be pinned: feature view 'fresh' has no version history yet",
        ),
        (
            defs(
                V0,
                "",
                "feature_services:\n  - name: s\n    features:\n      - {view: driver_stats, version: v0, features: [nope]}\n",
            ),
            "feature view 'driver_stats@v0' has no feature 'nope'",
        ),
        (
            defs(
                V0,
                "",
                "feature_services:\n  - name: s\n    features:\n      - {view: driver_stats, version: v9, features: [score]}\n",
            ),
            "v9 of feature view 'driver_stats' does not exist",
        ),
        (
            defs(V0, "", "").replace("name: driver_stats", "name: stats_v2"),
            "'stats_v2' ends like a version table",
        ),
    ];
    for (yaml, want) in cases {
        let (result, out) = repo.apply_with(&yaml, repo.options()).await;
        match result {
            Err(e) => assert!(e.to_string().contains(want), "{want:?} not in {e}"),
            Ok(o) => panic!("{want:?}: expected an error, got {o:?}\n{out}"),
        }
        assert_eq!(
            std::fs::read(repo.registry_file()).unwrap(),
            before,
            "{want}"
        );
    }
}

/// The `tern` binary: exit statuses and what a person sees.
#[tokio::test]
async fn the_cli_plans_applies_and_lists() {
    use std::process::Command;
    let repo = Repo::file();
    std::fs::write(&repo.defs, defs(V0, "    prevent_destroy: true\n", "")).unwrap();
    let tern = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .arg("--config")
            .arg(&repo.config)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let defs_path = repo.defs.to_str().unwrap();
    let (code, out, err) = tern(&["plan", "-f", defs_path]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("feature view  driver_stats  create"), "{out}");
    assert!(
        out.contains("create  lifecycle_driver_stats  (feature view driver_stats v0)"),
        "{out}"
    );
    assert!(!repo.registry_file().exists(), "plan wrote a registry");

    let (code, out, err) = tern(&["apply", "-f", defs_path]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Applied to"), "{out}");

    // A destructive plan exits 1 and lists the violation.
    std::fs::write(&repo.defs, defs(V1, "    prevent_destroy: true\n", "")).unwrap();
    let (code, out, _) = tern(&["plan", "-f", defs_path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("1 change refused by prevent_destroy:"),
        "{out}"
    );
    let (code, out, _) = tern(&["apply", "-f", defs_path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Nothing was changed."), "{out}");

    // Bad input: exit 1, every error on stderr with file and line.
    std::fs::write(
        &repo.defs,
        defs(&[("score", "Flaot64"), ("x", "Int6")], "", ""),
    )
    .unwrap();
    let (code, _, err) = tern(&["plan", "-f", defs_path]);
    assert_eq!(code, Some(1));
    assert!(err.contains("2 errors in the definitions"), "{err}");
    assert!(
        err.contains(
            "features.yaml:12: feature_views[driver_stats].schema[0].dtype: unknown type 'Flaot64'"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "features.yaml:13: feature_views[driver_stats].schema[1].dtype: unknown type 'Int6'"
        ),
        "{err}"
    );

    let (code, out, err) = tern(&["versions", "list", "driver_stats"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("VERSION  TYPE"), "{out}");
    let (code, out, err) = tern(&["versions", "show", "driver_stats", "v0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("- name: driver_stats") && out.contains("{name: score, dtype: Float64}"),
        "{out}"
    );
    let (code, _, err) = tern(&["versions", "show", "driver_stats", "v5"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Version v5 of feature view driver_stats does not exist in project lifecycle"),
        "{err}"
    );
}

/// The registry's permissions, decoded: (name, project, roles).
async fn permissions(repo: &Repo) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = repo
        .model()
        .await
        .permissions
        .iter()
        .map(|p| {
            let p = pb::Permission::decode(p.object.as_slice()).expect("permission");
            let spec = p.spec.expect("spec");
            let roles = match spec.policy.and_then(|p| p.policy_type) {
                Some(pb::policy::PolicyType::RoleBasedPolicy(r)) => r.roles,
                other => panic!("{other:?}"),
            };
            (spec.name, spec.project, roles)
        })
        .collect();
    out.sort();
    out
}

/// The plan line of a permission, or panics.
fn permission_line<'o>(out: &'o str, name: &str) -> &'o str {
    out.lines()
        .find(|l| l.contains("permission") && l.contains(name))
        .unwrap_or_else(|| panic!("no plan line for permission {name}:\n{out}"))
}

/// `permissions:` in the definitions: created, updated (the change shown), left alone
/// when no file says `permissions:` (they may be managed elsewhere), deleted by
/// `permissions: []`; written as Feast stores them.
pub async fn permissions_are_applied(repo: &Repo) {
    let readers = |roles: &str| {
        format!(
            "permissions:\n  - name: readers\n    types: [feature_view, feature_service]\n    name_patterns: ['driver_.*']\n    required_tags: {{team: ml}}\n    actions: [read_online]\n    policy: {{roles: [{roles}]}}\n"
        )
    };
    let out = repo.apply(&defs(V0, "", &readers("reader"))).await;
    assert!(permission_line(&out, "readers").contains("create"), "{out}");
    assert_eq!(
        permissions(repo).await,
        [("readers".into(), PROJECT.into(), vec!["reader".to_string()])]
    );
    let stored = repo.model().await;
    let spec = pb::Permission::decode(stored.permissions[0].object.as_slice())
        .expect("permission")
        .spec
        .expect("spec");
    assert_eq!(
        spec.types().collect::<Vec<_>>(),
        [
            pb::permission_spec::Type::FeatureView,
            pb::permission_spec::Type::FeatureService
        ]
    );
    assert_eq!(spec.name_patterns, ["driver_.*"]);
    assert_eq!(
        spec.required_tags.get("team").map(String::as_str),
        Some("ml")
    );
    assert_eq!(
        spec.actions().collect::<Vec<_>>(),
        [pb::permission_spec::AuthzedAction::ReadOnline]
    );

    let out = repo.apply(&defs(V0, "", &readers("reader"))).await;
    assert!(out.contains("No changes"), "{out}");
    let out = repo.apply(&defs(V0, "", &readers("reader, analyst"))).await;
    assert!(permission_line(&out, "readers").contains("update"), "{out}");
    assert!(out.contains("policy:"), "{out}");
    assert_eq!(
        permissions(repo).await,
        [(
            "readers".into(),
            PROJECT.into(),
            vec!["reader".to_string(), "analyst".to_string()]
        )]
    );
    // `tern export` writes them back: applying the export changes nothing.
    let exported = repo.dir.path().join("exported");
    let mut printed = Vec::new();
    tern::commands::export::run(&repo.config, &exported, &mut printed)
        .await
        .expect("export");
    let text = std::fs::read_to_string(exported.join("definitions.yaml")).expect("exported");
    assert!(text.contains("permissions:\n  - name: readers\n"), "{text}");
    let options = ApplyOptions {
        files: vec![exported.join("definitions.yaml")],
        ..repo.options()
    };
    let mut out = Vec::new();
    let applied = apply::run(&options, &mut out).await;
    let out = String::from_utf8(out).expect("utf-8");
    assert!(matches!(applied, Ok(Outcome::Done)), "{applied:?}");
    assert!(out.contains("No changes"), "{out}\n{text}");
    // No `permissions:` key: the registry's permissions stay.
    let out = repo.apply(&defs(V0, "", "")).await;
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(permissions(repo).await.len(), 1);
    let out = repo.apply(&defs(V0, "", "permissions: []\n")).await;
    assert!(permission_line(&out, "readers").contains("delete"), "{out}");
    assert!(permissions(repo).await.is_empty());
}

#[tokio::test]
async fn permissions_are_applied_to_a_file_registry() {
    permissions_are_applied(&Repo::file()).await;
}

#[tokio::test]
async fn permissions_are_applied_to_a_sqlite_sql_registry() {
    permissions_are_applied(&Repo::sql("sqlite:///data/registry.sqlite")).await;
}

#[tokio::test]
async fn bad_permissions_name_their_field() {
    let repo = Repo::file();
    let yaml = defs(
        V0,
        "",
        "permissions:\n  - name: p\n    types: [gizmo]\n    name_patterns: ['(']\n    actions: [read_everything]\n    policy: {roles: [a], groups: [b]}\n",
    );
    let (result, _) = repo.apply_with(&yaml, repo.options()).await;
    let Err(Error::Definitions(errors)) = result else {
        panic!("refused: {result:?}")
    };
    let text = errors.to_string();
    for expected in [
        "permissions[p].types: unknown type 'gizmo'",
        "permissions[p].name_patterns: '(' is not a regular expression",
        "permissions[p].actions: unknown action 'read_everything'",
        "permissions[p].policy: give roles, groups, namespaces, or groups with namespaces",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
    assert!(
        !repo.registry_file().exists(),
        "a refused apply writes nothing"
    );
}
