//! `tern export` of registries the real Feast 0.67 wrote, then `tern plan` on the
//! result: no change. A Feast user moves to Tern's definitions this way.

use std::path::{Path, PathBuf};

use tern::commands::apply::{self, ApplyOptions};
use tern::commands::{Outcome, export};

use crate::sql_registry::{TestDb, sql_dir};

fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo")
}

/// Exports `config`'s project into `dir/defs`, then plans those definitions (JSON).
async fn export_then_plan(config: &Path, dir: &Path) -> serde_json::Value {
    let defs = dir.join("defs");
    let mut out = Vec::new();
    let result = export::run(config, &defs, &mut out).await;
    let printed = String::from_utf8(out).unwrap();
    assert!(matches!(result, Ok(Outcome::Done)), "{result:?}\n{printed}");
    assert!(printed.contains("definitions.yaml"), "{printed}");
    let options = ApplyOptions {
        config: config.to_owned(),
        files: vec![defs],
        json: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    let result = apply::run(&options, &mut out).await;
    let printed = String::from_utf8(out).unwrap();
    assert!(matches!(result, Ok(Outcome::Done)), "{result:?}\n{printed}");
    serde_json::from_str(&printed).unwrap()
}

fn assert_no_change(plan: &serde_json::Value) {
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan:#}");
    assert_eq!(plan["tables"], serde_json::json!([]), "{plan:#}");
    assert_eq!(plan["violations"], serde_json::json!([]), "{plan:#}");
}

#[tokio::test]
async fn exporting_feasts_file_registry_then_planning_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A copy: the plan takes the registry's write lock beside the file.
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    for f in ["feature_store.yaml", "data/registry.db"] {
        std::fs::copy(example_repo().join(f), repo.join(f)).unwrap();
    }
    let before = std::fs::read(repo.join("data/registry.db")).unwrap();
    let plan = export_then_plan(&repo.join("feature_store.yaml"), dir.path()).await;
    assert_no_change(&plan);
    assert_eq!(
        std::fs::read(repo.join("data/registry.db")).unwrap(),
        before
    );

    // What was exported: pins, aliases, join key maps and entityless views.
    let text = std::fs::read_to_string(dir.path().join("defs/definitions.yaml")).unwrap();
    for needle in [
        "{view: driver_stats, version: v2, features: [",
        "{view: driver_stats, alias: ds_alias, features: [conv_rate, name]}",
        "join_key_map: {driver_id: other_driver_id}",
        "  - name: global_stats\n    entities: []",
        "path: ../repo/data/driver_stats_b.parquet",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

fn sql_yaml(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("feature_store.yaml");
    std::fs::write(
        &path,
        format!(
            "project: tern_demo\nregistry:\n  registry_type: sql\n  path: {url}\n  enable_online_feature_view_versioning: true\nonline_store:\n  type: sqlite\n  path: online.db\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn exporting_feasts_sql_registries_then_planning_changes_nothing() {
    // SQLite
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        sql_dir().join("registry.sqlite"),
        dir.path().join("registry.sqlite"),
    )
    .unwrap();
    let config = sql_yaml(dir.path(), "sqlite:///registry.sqlite");
    assert_no_change(&export_then_plan(&config, dir.path()).await);

    // PostgreSQL
    let db = TestDb::create().await;
    db.restore(&std::fs::read_to_string(sql_dir().join("registry.pg.sql")).unwrap())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = sql_yaml(dir.path(), &db.url());
    assert_no_change(&export_then_plan(&config, dir.path()).await);
    db.drop().await;
}
