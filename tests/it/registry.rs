//! Feast's registry as Feast 0.67 wrote it (`examples/feature_repo/data/registry.db`).

use std::path::{Path, PathBuf};

use prost::Message;
use tern::config;
use tern::proto::feast::core as pb;
use tern::registry::data_source::FileSource;
use tern::registry::{RegistryModel, Reloader, file};

const REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo")
}

/// Decoding and encoding again loses nothing: the bytes equal Feast's own
/// deterministic serialization of the same registry (map entries sorted), which the
/// fixture script wrote with Feast's Python protos. A field Tern did not declare would
/// be dropped by the decode and show up here as missing bytes.
#[test]
fn round_trip_loses_nothing() {
    let path = repo().join("data/registry.db");
    let original = std::fs::read(&path).unwrap();
    let decoded = file::decode(&original, &path).unwrap();
    // Through the registry model the commands write back from, and out again.
    let model = RegistryModel::from_file(decoded.clone());
    assert!(
        model.to_file() == decoded,
        "the model gives back what it was read from"
    );
    let encoded = file::encode(&model.to_file());
    let canonical = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast/registry.canonical.bin"),
    )
    .unwrap();
    assert_eq!(encoded.len(), canonical.len(), "re-encoded size");
    assert!(
        encoded == canonical,
        "re-encoded bytes differ from Feast's canonical serialization"
    );

    // The interesting parts are really there, not skipped as unknown fields.
    assert!(
        decoded
            .feature_views
            .iter()
            .any(|v| v.spec.as_ref().is_some_and(|s| s.name == "driver_stats"))
    );
    let history = decoded
        .feature_view_version_history
        .as_ref()
        .expect("field 18");
    let versions: Vec<i32> = history
        .records
        .iter()
        .filter(|r| r.feature_view_name == "driver_stats")
        .map(|r| r.version_number)
        .collect();
    assert_eq!(versions, [0, 1, 2]);
    for record in &history.records {
        let view = pb::FeatureView::decode(record.feature_view_proto.as_slice()).unwrap();
        assert_eq!(
            view.encode_to_vec(),
            record.feature_view_proto,
            "snapshot of {} v{}",
            record.feature_view_name,
            record.version_number
        );
    }
    let pinned = decoded
        .feature_services
        .iter()
        .filter_map(|s| s.spec.as_ref())
        .find(|s| s.name == "driver_svc_pinned")
        .expect("pinned service");
    assert_eq!(
        pinned.features[0].version_tag,
        Some(0),
        "presence of version_tag 0 is kept"
    );
    // Data sources are typed: file sources as Tern materializes from them.
    let sources: Vec<FileSource> = model
        .data_sources
        .iter()
        .filter_map(|s| FileSource::from_proto(&s.object))
        .collect();
    assert_eq!(sources.len(), model.data_sources.len(), "all file sources");
    let a = sources
        .iter()
        .find(|s| s.name == "driver_stats_source_a")
        .expect("source A");
    assert_eq!(
        (
            a.path.as_str(),
            a.timestamp_field.as_str(),
            a.created_timestamp_column.as_deref(),
            a.project.as_str()
        ),
        (
            "data/driver_stats_a.parquet",
            "event_timestamp",
            Some("created"),
            "tern_demo"
        )
    );
    let active = model
        .feature_views
        .iter()
        .find(|v| v.name == "driver_stats")
        .and_then(|v| v.object.spec.as_ref())
        .and_then(|s| s.batch_source.as_ref())
        .and_then(FileSource::from_proto)
        .expect("driver_stats' batch source, typed");
    assert_eq!(
        active.path, "data/driver_stats_b.parquet",
        "v1 reads source B"
    );
}

#[tokio::test]
async fn snapshot_indexes_views_versions_services_and_tables() {
    let config = config::load(&repo().join("feature_store.yaml"), |_| None).unwrap();
    let snap = Reloader::open(&config, REGISTRY_TIMEOUT)
        .await
        .unwrap()
        .registry()
        .snapshot();
    assert_eq!(snap.settings.project, "tern_demo");
    assert!(snap.settings.versioning);
    let mut views = snap.view_names();
    views.sort_unstable();
    assert_eq!(
        views,
        [
            "customer_profile",
            "driver_customer",
            "driver_stats",
            "global_stats",
            "zone_stats"
        ]
    );

    let ds = snap.view("driver_stats").unwrap();
    assert_eq!(ds.active.version, 1, "v2 was staged with --no-promote");
    assert_eq!(ds.active.layout.sqlite_table, "tern_demo_driver_stats_v1");
    assert_eq!(ds.versions.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        ds.version(0).unwrap().layout.sqlite_table,
        "tern_demo_driver_stats"
    );
    assert_eq!(
        ds.version(2).unwrap().layout.sqlite_table,
        "tern_demo_driver_stats_v2"
    );
    assert!(
        ds.version(2)
            .unwrap()
            .layout
            .feature_index
            .contains_key("vip_level")
    );
    assert!(!ds.active.layout.feature_index.contains_key("vip_level"));
    assert!(
        !ds.version(0)
            .unwrap()
            .layout
            .feature_index
            .contains_key("ratings")
    );
    assert_eq!(ds.active.ttl_seconds, Some(86400));
    assert!(ds.version(9).is_none());

    let dc = snap.view("driver_customer").unwrap();
    let keys: Vec<&str> = dc
        .active
        .join_keys
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(keys, ["driver_id", "customer_id"]);
    assert!(snap.view("global_stats").unwrap().active.is_entityless());
    assert_eq!(snap.service_count(), 5);
    assert_eq!(
        snap.service("driver_svc_pinned").unwrap().projections[0].version_tag,
        Some(0)
    );

    // With versioning off every version reads the unsuffixed table.
    let off = config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/feast/flag_off/feature_store.yaml"),
        |_| None,
    )
    .unwrap();
    let snap = Reloader::open(&off, REGISTRY_TIMEOUT)
        .await
        .unwrap()
        .registry()
        .snapshot();
    assert_eq!(
        snap.view("driver_stats")
            .unwrap()
            .active
            .layout
            .sqlite_table,
        "tern_demo_driver_stats"
    );
}

#[tokio::test]
async fn broken_registries_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(repo().join("data/registry.db")).unwrap();
    let yaml = dir.path().join("feature_store.yaml");
    std::fs::write(&yaml, "project: tern_demo\nregistry: registry.db\n").unwrap();
    let config = config::load(&yaml, |_| None).unwrap();
    let load = async |bytes: &[u8]| {
        std::fs::write(dir.path().join("registry.db"), bytes).unwrap();
        Reloader::open(&config, REGISTRY_TIMEOUT)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(
        load(b"")
            .await
            .contains("has no project 'tern_demo' (projects found: none)")
    );
    assert!(
        load(b"\xff\xff\xff garbage")
            .await
            .contains("is not a valid Feast registry")
    );
    assert!(
        load(&original[..original.len() / 2])
            .await
            .contains("registry.db"),
        "cut in the middle"
    );

    std::fs::write(&yaml, "project: other\nregistry: registry.db\n").unwrap();
    std::fs::write(dir.path().join("registry.db"), &original).unwrap();
    let err = Reloader::open(&config::load(&yaml, |_| None).unwrap(), REGISTRY_TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no project 'other' (projects found: tern_demo)"),
        "{err}"
    );
}

/// Every message Tern declares in Feast's packages declares every field Feast 0.67
/// does, under the same number, with the same type (or as opaque bytes in place of a
/// message Tern does not interpret) and the same cardinality. A field missing here
/// would be dropped, silently, by every decode/encode of a registry Feast wrote.
/// `feast_descriptors.bin` is Feast's own, written by `dump_descriptors.py`.
#[test]
fn every_field_feast_declares_is_declared() {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FileDescriptorSet};
    use std::collections::BTreeMap;

    fn walk<'a>(
        prefix: &str,
        messages: &'a [DescriptorProto],
        out: &mut BTreeMap<String, &'a DescriptorProto>,
    ) {
        for m in messages {
            let name = format!("{prefix}.{}", m.name());
            walk(&name, &m.nested_type, out);
            out.insert(name, m);
        }
    }
    fn index(set: &FileDescriptorSet) -> BTreeMap<String, &DescriptorProto> {
        let mut out = BTreeMap::new();
        for f in &set.file {
            walk(&format!(".{}", f.package()), &f.message_type, &mut out);
        }
        out
    }
    let feast_set = FileDescriptorSet::decode(
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/feast/feast_descriptors.bin"),
        )
        .unwrap()
        .as_slice(),
    )
    .unwrap();
    let tern_set = FileDescriptorSet::decode(tern::proto::REFLECTION_DESCRIPTOR_SET).unwrap();
    let (feast, tern) = (index(&feast_set), index(&tern_set));

    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, ours) in tern.iter().filter(|(n, _)| n.starts_with(".feast.")) {
        if ours.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let Some(theirs) = feast.get(name) else {
            problems.push(format!("{name}: not a Feast message"));
            continue;
        };
        checked += 1;
        for field in &theirs.field {
            let Some(mine) = ours.field.iter().find(|f| f.number() == field.number()) else {
                problems.push(format!(
                    "{name}.{} = {}: not declared",
                    field.name(),
                    field.number()
                ));
                continue;
            };
            let same_type = mine.r#type() == field.r#type()
                && (field.r#type() != Type::Message || mine.type_name() == field.type_name())
                || (mine.r#type() == Type::Bytes && field.r#type() == Type::Message);
            if !same_type {
                problems.push(format!(
                    "{name}.{}: Feast {:?} {}, Tern {:?} {}",
                    field.name(),
                    field.r#type(),
                    field.type_name(),
                    mine.r#type(),
                    mine.type_name()
                ));
            }
            if (mine.label() == Label::Repeated) != (field.label() == Label::Repeated) {
                problems.push(format!("{name}.{}: repeated differs", field.name()));
            }
            if mine.name() != field.name() {
                problems.push(format!(
                    "{name}.{}: named {} here",
                    field.name(),
                    mine.name()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 60, "{checked} messages compared");
}
