//! Feast reads what `tern apply` writes. `tests/fixtures/feast/tern_written.sh` applied
//! step1..step3 with Tern and recorded the real Feast 0.67.0 listing, materializing and
//! reading that repo (`tern_written/feast_read.json`). Here the same steps are applied
//! again and checked against that record: Feast succeeded at every step, and the
//! views, versions, features and online tables Feast saw are the ones Tern writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde_json::Value as Json;
use tern::commands::Outcome;
use tern::commands::apply::{self, ApplyOptions};
use tern::proto::feast::core as pb;
use tern::proto::feast::types::value_type::Enum as ValueType;
use tern::registry::RegistrySource;
use tern::registry::model::RegistryModel;

const PROJECT: &str = "tern_written";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast/tern_written")
}

fn feast_read() -> Json {
    let text = std::fs::read_to_string(fixture().join("feast_read.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fixture repo in a temp folder, with the three steps applied by Tern.
async fn applied() -> (tempfile::TempDir, RegistryModel) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    for file in [
        "feature_store.yaml",
        "step1.yaml",
        "step2.yaml",
        "step3.yaml",
        "data/driver_stats.parquet",
    ] {
        std::fs::copy(fixture().join(file), dir.path().join(file)).unwrap();
    }
    let config = dir.path().join("feature_store.yaml");
    for step in ["step1.yaml", "step2.yaml", "step3.yaml"] {
        let options = ApplyOptions {
            config: config.clone(),
            files: vec![dir.path().join(step)],
            execute: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        let result = apply::run(&options, &mut out).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            matches!(result, Ok(Outcome::Done)),
            "{step}: {result:?}\n{out}"
        );
    }
    let config = tern::commands::load_config(&config).unwrap();
    let mut source = RegistrySource::open(&config, Duration::from_secs(20)).unwrap();
    let model = source.read(PROJECT).await.unwrap().model;
    (dir, model)
}

/// Feast's type names (`str(Field.dtype)`) as Tern's value types.
fn feast_type(name: &str) -> &'static str {
    match name {
        "Float32" => "FLOAT",
        "Float64" => "DOUBLE",
        "Int64" => "INT64",
        "String" => "STRING",
        other => panic!("no mapping for Feast type {other}"),
    }
}

/// `[name, type]` of every feature, in Tern's words.
fn tern_features(spec: &pb::FeatureViewSpec) -> Vec<(String, String)> {
    spec.features
        .iter()
        .map(|f| {
            let t = ValueType::try_from(f.value_type).unwrap().as_str_name();
            (f.name.clone(), t.to_owned())
        })
        .collect()
}

fn feast_features(features: &Json) -> Vec<(String, String)> {
    features
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_owned(),
                feast_type(f[1].as_str().unwrap()).to_owned(),
            )
        })
        .collect()
}

/// Table rows of a recorded CLI command (header first).
fn rows(command: &Json) -> Vec<Vec<String>> {
    command["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn feast_succeeded_at_every_step() {
    let read = feast_read();
    assert_eq!(read["feast_version"], "0.67.0");
    assert_eq!(read["project"], PROJECT);
    for command in [
        "feature_views_list",
        "list_versions",
        "materialize",
        "materialize_v0",
    ] {
        assert_eq!(read[command]["exit_code"], 0, "{command}");
        assert!(read[command].get("stderr_tail").is_none(), "{command}");
    }
    for v in read["decoded_versions"].as_array().unwrap() {
        assert!(v.get("error").is_none(), "{v}");
    }
    // Feast materialized the active version (v1) and v0 into the tables Tern created.
    assert_eq!(
        read["online_tables"],
        serde_json::json!({"tern_written_driver_stats": 3, "tern_written_driver_stats_v1": 3})
    );

    // Values read back: drivers 1001..1003 found, 9999 not; 1003's name is a stored
    // null. conv_rate is a float32 (JSON holds it widened).
    let conv = [0.11_f32, 0.12, 0.13];
    for (case, has_name) in [
        ("plain", true),
        ("v1", true),
        ("v0", false),
        ("service", false),
    ] {
        let answer = &read["online"][case];
        assert!(answer.get("error").is_none(), "{case}: {answer}");
        let column = |name: &str| answer["columns"][name].as_array().unwrap().clone();
        let statuses = |name: &str| -> Vec<String> {
            column(name)
                .iter()
                .map(|c| c["status"].as_str().unwrap().to_owned())
                .collect()
        };
        let conv_rate: Vec<f32> = column("conv_rate")[..3]
            .iter()
            .map(|c| c["value"]["float_val"].as_f64().unwrap() as f32)
            .collect();
        assert_eq!(conv_rate, conv, "{case}");
        assert_eq!(
            statuses("conv_rate"),
            ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"],
            "{case}"
        );
        let trips: Vec<i64> = column("avg_daily_trips")[..3]
            .iter()
            .map(|c| c["value"]["int64_val"].as_i64().unwrap())
            .collect();
        assert_eq!(trips, [11, 12, 13], "{case}");
        let times: Vec<i64> = column("acc_rate")
            .iter()
            .map(|c| c["event_timestamp"].as_i64().unwrap())
            .collect();
        assert_eq!(
            times,
            [1_736_467_200, 1_736_463_600, 1_736_467_200, 0],
            "{case}"
        );
        assert_eq!(answer["columns"].get("name").is_some(), has_name, "{case}");
        if has_name {
            let names: Vec<Json> = column("name").iter().map(|c| c["value"].clone()).collect();
            assert_eq!(
                names,
                [
                    serde_json::json!({"string_val": "alice"}),
                    serde_json::json!({"string_val": "bob"}),
                    serde_json::json!({}),
                    serde_json::json!({}),
                ],
                "{case}"
            );
        }
    }
    // The unversioned refs read the active version: v1's answer.
    assert_eq!(read["online"]["plain"], read["online"]["v1"]);
}

#[tokio::test]
async fn tern_writes_what_feast_listed() {
    let read = feast_read();
    let (dir, model) = applied().await;

    // `feast feature-views list`: Tern's views, by name and type.
    let listed = rows(&read["feature_views_list"]);
    assert_eq!(listed[0][..3], ["NAME", "ENTITIES", "TYPE"]);
    let feast_views: Vec<(&str, &str)> = listed[1..]
        .iter()
        .map(|r| (r[0].as_str(), r[2].as_str()))
        .collect();
    let tern_views: Vec<&str> = model
        .feature_views
        .iter()
        .filter(|v| v.object.spec.as_ref().unwrap().project == PROJECT)
        .map(|v| v.object.spec.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(feast_views, [("driver_stats", "FeatureView")]);
    assert_eq!(tern_views, ["driver_stats"]);

    // `feast feature-views list-versions`: Tern's history records, in order, with
    // their types, a creation time and a UUID each (masked in the record).
    let versions = rows(&read["list_versions"]);
    assert_eq!(versions[0], ["VERSION", "TYPE", "CREATED", "VERSION_ID"]);
    let mut records: Vec<&pb::FeatureViewVersionRecord> = model
        .version_history
        .iter()
        .filter(|r| r.feature_view_name == "driver_stats" && r.project_id == PROJECT)
        .collect();
    records.sort_by_key(|r| r.version_number);
    let tern_rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            assert!(r.created_timestamp.as_ref().is_some_and(|t| t.seconds > 0));
            assert!(
                uuid_like(&r.version_id),
                "version_id {:?} is a UUID",
                r.version_id
            );
            vec![
                format!("v{}", r.version_number),
                r.feature_view_type.clone(),
                "<time>".to_owned(),
                "<uuid>".to_owned(),
            ]
        })
        .collect();
    assert_eq!(tern_rows, versions[1..]);

    // Each version as Feast decoded it: Tern's snapshot's features, types, number.
    let decoded = read["decoded_versions"].as_array().unwrap();
    assert_eq!(decoded.len(), records.len());
    for (feast, record) in decoded.iter().zip(&records) {
        let snapshot = pb::FeatureView::decode(record.feature_view_proto.as_slice()).unwrap();
        let spec = snapshot.spec.as_ref().unwrap();
        assert_eq!(feast["version"], record.version_number);
        assert_eq!(
            feast["current_version_number"],
            snapshot.meta.as_ref().unwrap().current_version_number
        );
        assert_eq!(feast_features(&feast["features"]), tern_features(spec));
        assert_eq!(feast["description"], spec.description.as_str());
        assert_eq!(feast["entities"], serde_json::json!(spec.entities));
    }

    // The active view: v1 after the metadata-only step 3, with its new description.
    let active = &model.feature_views[0].object;
    let spec = active.spec.as_ref().unwrap();
    let before = &read["active_before_materialize"];
    assert_eq!(
        before["current_version_number"],
        active.meta.as_ref().unwrap().current_version_number
    );
    assert_eq!(before["current_version_number"], 1);
    assert_eq!(before["description"], spec.description.as_str());
    assert_eq!(feast_features(&before["features"]), tern_features(spec));

    // The online tables Feast materialized into are the ones Tern's apply created.
    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let feast_tables: Vec<String> = read["online_tables"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(tables, feast_tables);

    // The feature service's projection, as Feast answered it.
    let service = &model
        .feature_services
        .iter()
        .find(|s| s.object.spec.as_ref().unwrap().name == "driver_svc")
        .unwrap()
        .object;
    let projected: BTreeMap<String, ()> = service.spec.as_ref().unwrap().features[0]
        .feature_columns
        .iter()
        .map(|f| (f.name.clone(), ()))
        .collect();
    let answered: BTreeMap<String, ()> = read["online"]["service"]["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .filter(|n| n != "driver_id")
        .map(|n| (n, ()))
        .collect();
    assert_eq!(projected, answered);
}

fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}
