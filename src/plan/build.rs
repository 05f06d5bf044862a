//! Definitions to registry protos, the way Feast writes each object.

use std::collections::HashMap;

use prost_types::{Duration, Timestamp};

use crate::definitions::{
    Definitions, EntityDef, FieldDef, PREVENT_DESTROY_TAG, PushSourceDef, SourceDef, ViewDef,
};
use crate::proto::feast::core as pb;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::registry::data_source::{FileFormat, FileSource, PushSource};
use crate::registry::snapshot::{DUMMY_ENTITY_ID, DUMMY_ENTITY_NAME};

/// Feast's type string for feature views in version records.
pub(crate) const FEATURE_VIEW_TYPE: &str = "feature_view";

pub(crate) fn entity_spec(def: &EntityDef, project: &str) -> pb::EntitySpecV2 {
    pb::EntitySpecV2 {
        name: def.name.clone(),
        project: project.to_owned(),
        value_type: def.value_type as i32,
        description: def.description.clone(),
        join_key: def.join_key.clone(),
        tags: def.tags.clone(),
        owner: def.owner.clone(),
    }
}

/// The hidden entity Feast registers for views without entities.
pub(crate) fn dummy_entity_spec(project: &str) -> pb::EntitySpecV2 {
    pb::EntitySpecV2 {
        name: DUMMY_ENTITY_NAME.to_owned(),
        project: project.to_owned(),
        join_key: DUMMY_ENTITY_ID.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn file_source(def: &SourceDef, project: &str) -> FileSource {
    FileSource {
        name: def.name.clone(),
        project: project.to_owned(),
        path: def.path.clone(),
        format: FileFormat::Unspecified,
        timestamp_field: def.timestamp_field.clone(),
        created_timestamp_column: non_empty(&def.created_timestamp_column),
        field_mapping: def.field_mapping.clone(),
        date_partition_column: non_empty(&def.date_partition_column),
        s3_endpoint_override: None,
        description: def.description.clone(),
        tags: def.tags.clone(),
        owner: def.owner.clone(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub(crate) fn feature_spec(f: &FieldDef) -> pb::FeatureSpecV2 {
    pb::FeatureSpecV2 {
        name: f.name.clone(),
        value_type: f.dtype as i32,
        tags: f.tags.clone(),
        description: f.description.clone(),
        ..Default::default()
    }
}

pub(crate) fn duration(seconds: i64) -> Duration {
    Duration { seconds, nanos: 0 }
}

pub(crate) fn timestamp(now: std::time::SystemTime) -> Timestamp {
    Timestamp::from(now)
}

/// The spec a view definition asks for. `base` is the registered spec it replaces, if
/// any: fields Tern does not model (org, mode, stream source, ...) carry over from it.
pub(crate) fn view_spec(
    def: &ViewDef,
    defs: &Definitions,
    project: &str,
    base: Option<&pb::FeatureViewSpec>,
) -> pb::FeatureViewSpec {
    let mut spec = base.cloned().unwrap_or_default();
    spec.name = def.name.clone();
    // A registered view keeps its stored `spec.project` (Feast's SQL registry leaves
    // it empty; the row's project_id says).
    if base.is_none() {
        spec.project = project.to_owned();
    }
    if def.entities.is_empty() {
        spec.entities = vec![DUMMY_ENTITY_NAME.to_owned()];
        spec.entity_columns = vec![pb::FeatureSpecV2 {
            name: DUMMY_ENTITY_ID.to_owned(),
            value_type: ValueType::String as i32,
            ..Default::default()
        }];
    } else {
        spec.entities = def.entities.clone();
        spec.entity_columns = def.entity_columns.iter().map(feature_spec).collect();
    }
    spec.features = def.features.iter().map(feature_spec).collect();
    spec.tags = def.tags.clone();
    if def.prevent_destroy {
        spec.tags
            .insert(PREVENT_DESTROY_TAG.to_owned(), "true".to_owned());
    }
    spec.ttl = Some(duration(def.ttl_seconds));
    spec.online = def.online;
    spec.offline = def.offline;
    spec.description = def.description.clone();
    spec.owner = def.owner.clone();
    // "latest" however spelled (Feast writes "latest"; older registries ""): keep the
    // registered spelling so an unchanged definition is not a change.
    let base_latest =
        base.is_some_and(|b| b.version.is_empty() || b.version.eq_ignore_ascii_case("latest"));
    if !(def.version == crate::definitions::VersionPin::Latest && base_latest) {
        spec.version = def.version_text.clone();
    }
    let sources: HashMap<&str, &SourceDef> =
        defs.sources.iter().map(|s| (s.name.as_str(), s)).collect();
    // A push source is the view's stream source; its file source is the batch source.
    let push = defs.push_sources.iter().find(|p| p.name == def.source);
    let batch = push.map_or(def.source.as_str(), |p| p.batch_source.as_str());
    match push.and_then(|p| {
        Some(push_source(
            p,
            sources.get(p.batch_source.as_str())?,
            project,
        ))
    }) {
        Some(typed) => {
            let same = spec
                .stream_source
                .as_ref()
                .and_then(PushSource::from_proto)
                .is_some_and(|old| same_push_source(&old, &typed));
            if !same {
                spec.stream_source = Some(typed.to_proto());
            }
        }
        None => spec.stream_source = None,
    }
    if let Some(source) = sources.get(batch) {
        let typed = file_source(source, project);
        // Keep the registered source's bookkeeping (meta) when it is the same source.
        let same = spec
            .batch_source
            .as_ref()
            .and_then(FileSource::from_proto)
            .is_some_and(|old| same_file_source(&old, &typed));
        if !same {
            spec.batch_source = Some(typed.to_proto());
        }
    }
    spec
}

pub(crate) fn push_source(def: &PushSourceDef, batch: &SourceDef, project: &str) -> PushSource {
    PushSource {
        name: def.name.clone(),
        project: project.to_owned(),
        batch_source: file_source(batch, project),
        description: def.description.clone(),
        tags: def.tags.clone(),
        owner: def.owner.clone(),
    }
}

/// Equal for what a definition can say (not project or bookkeeping).
pub(crate) fn same_push_source(a: &PushSource, b: &PushSource) -> bool {
    a.name == b.name
        && same_file_source(&a.batch_source, &b.batch_source)
        && a.description == b.description
        && a.tags == b.tags
        && a.owner == b.owner
}

/// Equal for what a definition can say (not project or bookkeeping).
pub(crate) fn same_file_source(a: &FileSource, b: &FileSource) -> bool {
    a.name == b.name
        && a.path == b.path
        && a.timestamp_field == b.timestamp_field
        && a.created_timestamp_column == b.created_timestamp_column
        && a.field_mapping == b.field_mapping
        && a.date_partition_column == b.date_partition_column
        && a.description == b.description
        && a.tags == b.tags
        && a.owner == b.owner
}

/// The version-significant part of a view (what makes a new version): features with
/// their types, entities, entity columns with their types, source views and the
/// transformation. Field descriptions and tags are metadata here (Feast counts them,
/// minting a version for a comment edit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema {
    features: Vec<(String, i32, i32)>,
    entities: Vec<String>,
    entity_columns: Vec<(String, i32)>,
    source_views: Vec<Vec<u8>>,
    transformation: Option<Vec<u8>>,
}

pub(crate) fn schema(spec: &pb::FeatureViewSpec) -> Schema {
    use prost::Message;
    let mut features: Vec<_> = spec
        .features
        .iter()
        .map(|f| (f.name.clone(), f.value_type, f.vector_length))
        .collect();
    features.sort();
    let mut entities = spec.entities.clone();
    entities.sort();
    let mut entity_columns: Vec<_> = spec
        .entity_columns
        .iter()
        .map(|f| (f.name.clone(), f.value_type))
        .collect();
    entity_columns.sort();
    Schema {
        features,
        entities,
        entity_columns,
        source_views: spec
            .source_views
            .iter()
            .map(|v| v.encode_to_vec())
            .collect(),
        transformation: spec.feature_transformation.clone(),
    }
}

/// A permission as Feast stores it.
pub(crate) fn permission_spec(
    def: &crate::definitions::PermissionDef,
    project: &str,
) -> pb::PermissionSpec {
    use crate::definitions::PolicyDef;
    use pb::policy::PolicyType;
    let policy_type = match &def.policy {
        PolicyDef::Roles(roles) => PolicyType::RoleBasedPolicy(pb::RoleBasedPolicy {
            roles: roles.clone(),
        }),
        PolicyDef::Groups(groups) => PolicyType::GroupBasedPolicy(pb::GroupBasedPolicy {
            groups: groups.clone(),
        }),
        PolicyDef::Namespaces(namespaces) => {
            PolicyType::NamespaceBasedPolicy(pb::NamespaceBasedPolicy {
                namespaces: namespaces.clone(),
            })
        }
        PolicyDef::GroupsOrNamespaces(groups, namespaces) => {
            PolicyType::CombinedGroupNamespacePolicy(pb::CombinedGroupNamespacePolicy {
                groups: groups.clone(),
                namespaces: namespaces.clone(),
            })
        }
    };
    pb::PermissionSpec {
        name: def.name.clone(),
        project: project.to_owned(),
        types: def.types.iter().map(|t| *t as i32).collect(),
        name_patterns: def.name_patterns.clone(),
        required_tags: def.required_tags.clone(),
        actions: def.actions.iter().map(|a| *a as i32).collect(),
        policy: Some(pb::Policy {
            policy_type: Some(policy_type),
            ..Default::default()
        }),
        tags: def.tags.clone(),
    }
}
