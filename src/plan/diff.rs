//! What changed, one line each, for plans and `tern versions diff`: features added,
//! removed and retyped; entities; metadata; a service's projections.

use std::collections::BTreeMap;

use super::build::schema;
use super::is_protected_tag;
use crate::definitions::PREVENT_DESTROY_TAG;
use crate::proto::feast::core as pb;
use crate::registry::data_source::FileSource;

/// One projection's view, alias, pinned version, typed features and join key map.
pub(crate) type ProjectionSchema = (
    String,
    String,
    Option<i32>,
    Vec<(String, i32)>,
    BTreeMap<String, String>,
);

/// What a service returns: per projection the view, alias, pinned version, features
/// with types and join key map. A change to it changes the service's answers.
pub(crate) fn service_schema(spec: &pb::FeatureServiceSpec) -> Vec<ProjectionSchema> {
    spec.features
        .iter()
        .map(|p| {
            (
                p.feature_view_name.clone(),
                p.feature_view_name_alias.clone(),
                p.version_tag,
                p.feature_columns
                    .iter()
                    .map(|f| (f.name.clone(), f.value_type))
                    .collect(),
                p.join_key_map.clone(),
            )
        })
        .collect()
}

pub(crate) fn type_name(t: i32) -> String {
    crate::proto::feast::types::value_type::Enum::try_from(t)
        .map(|e| e.as_str_name().to_owned())
        .unwrap_or_else(|_| t.to_string())
}

pub(crate) fn diff_schema(
    old: Option<&pb::FeatureViewSpec>,
    new: Option<&pb::FeatureViewSpec>,
) -> Vec<String> {
    let (Some(old), Some(new)) = (old, new) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let before: BTreeMap<&str, i32> = old
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.value_type))
        .collect();
    let after: BTreeMap<&str, i32> = new
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.value_type))
        .collect();
    for (name, t) in &after {
        match before.get(name) {
            None => out.push(format!("+ feature {name} {}", type_name(*t))),
            Some(o) if o != t => out.push(format!(
                "~ feature {name} {} -> {}",
                type_name(*o),
                type_name(*t)
            )),
            _ => {}
        }
    }
    for (name, t) in &before {
        if !after.contains_key(name) {
            out.push(format!("- feature {name} {}", type_name(*t)));
        }
    }
    if old.entities != new.entities {
        out.push(format!(
            "entities: [{}] -> [{}]",
            old.entities.join(", "),
            new.entities.join(", ")
        ));
    }
    let cols = |s: &pb::FeatureViewSpec| -> Vec<String> {
        s.entity_columns
            .iter()
            .map(|c| format!("{} {}", c.name, type_name(c.value_type)))
            .collect()
    };
    if cols(old) != cols(new) && old.entities == new.entities {
        out.push(format!(
            "entity columns: [{}] -> [{}]",
            cols(old).join(", "),
            cols(new).join(", ")
        ));
    }
    out.extend(diff_view_metadata(old, new));
    out
}

pub(crate) fn diff_view_metadata(
    old: &pb::FeatureViewSpec,
    new: &pb::FeatureViewSpec,
) -> Vec<String> {
    let mut out = metadata_lines(
        (&old.description, &old.owner, &old.tags),
        (&new.description, &new.owner, &new.tags),
    );
    let secs = |s: &pb::FeatureViewSpec| s.ttl.as_ref().map_or(0, |d| d.seconds);
    if secs(old) != secs(new) {
        out.push(format!("ttl: {}s -> {}s", secs(old), secs(new)));
    }
    if old.online != new.online {
        out.push(format!("online: {} -> {}", old.online, new.online));
    }
    if old.offline != new.offline {
        out.push(format!("offline: {} -> {}", old.offline, new.offline));
    }
    if old.version != new.version {
        out.push(format!("version: '{}' -> '{}'", old.version, new.version));
    }
    let src = |s: &pb::FeatureViewSpec| {
        s.batch_source
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_default()
    };
    if src(old) != src(new) {
        out.push(format!("source: '{}' -> '{}'", src(old), src(new)));
    } else if old.batch_source != new.batch_source {
        out.push(format!("source '{}' changed", src(new)));
    }
    let stream = |s: &pb::FeatureViewSpec| {
        s.stream_source
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_default()
    };
    if stream(old) != stream(new) {
        out.push(format!(
            "push source: '{}' -> '{}'",
            stream(old),
            stream(new)
        ));
    } else if old.stream_source != new.stream_source {
        out.push(format!("push source '{}' changed", stream(new)));
    }
    // Descriptions and tags of single features are metadata too.
    let fmeta = |s: &pb::FeatureViewSpec| -> Vec<(String, String, BTreeMap<String, String>)> {
        s.features
            .iter()
            .map(|f| (f.name.clone(), f.description.clone(), f.tags.clone()))
            .collect()
    };
    if schema(old) == schema(new) && fmeta(old) != fmeta(new) {
        out.push("feature descriptions or tags changed".to_owned());
    }
    out
}

pub(crate) fn metadata_lines(
    old: (&String, &String, &BTreeMap<String, String>),
    new: (&String, &String, &BTreeMap<String, String>),
) -> Vec<String> {
    let mut out = Vec::new();
    if old.0 != new.0 {
        out.push(format!("description: '{}' -> '{}'", old.0, new.0));
    }
    if old.1 != new.1 {
        out.push(format!("owner: '{}' -> '{}'", old.1, new.1));
    }
    let pd = |t: &BTreeMap<String, String>| is_protected_tag(t);
    if pd(old.2) != pd(new.2) {
        out.push(format!("prevent_destroy: {} -> {}", pd(old.2), pd(new.2)));
    }
    let user = |t: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        t.iter()
            .filter(|(k, _)| *k != PREVENT_DESTROY_TAG)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if user(old.2) != user(new.2) {
        out.push(format!("tags: {:?} -> {:?}", user(old.2), user(new.2)));
    }
    out
}

pub(crate) fn diff_entity(old: &pb::EntitySpecV2, new: &pb::EntitySpecV2) -> Vec<String> {
    let mut out = Vec::new();
    if old.join_key != new.join_key {
        out.push(format!(
            "join key: '{}' -> '{}'",
            old.join_key, new.join_key
        ));
    }
    if old.value_type != new.value_type {
        out.push(format!(
            "value_type: {} -> {}",
            type_name(old.value_type),
            type_name(new.value_type)
        ));
    }
    out.extend(metadata_lines(
        (&old.description, &old.owner, &old.tags),
        (&new.description, &new.owner, &new.tags),
    ));
    out
}

pub(crate) fn diff_source(old: &FileSource, new: &FileSource) -> Vec<String> {
    let mut out = Vec::new();
    if old.path != new.path {
        out.push(format!("path: '{}' -> '{}'", old.path, new.path));
    }
    if old.timestamp_field != new.timestamp_field {
        out.push(format!(
            "timestamp_field: '{}' -> '{}'",
            old.timestamp_field, new.timestamp_field
        ));
    }
    if old.created_timestamp_column != new.created_timestamp_column {
        out.push(format!(
            "created_timestamp_column: '{}' -> '{}'",
            old.created_timestamp_column.as_deref().unwrap_or(""),
            new.created_timestamp_column.as_deref().unwrap_or("")
        ));
    }
    if old.field_mapping != new.field_mapping {
        out.push("field_mapping changed".to_owned());
    }
    out.extend(metadata_lines(
        (&old.description, &old.owner, &old.tags),
        (&new.description, &new.owner, &new.tags),
    ));
    out
}

pub(crate) fn diff_service(
    old: &pb::FeatureServiceSpec,
    new: &pb::FeatureServiceSpec,
) -> Vec<String> {
    let line = |p: &pb::FeatureViewProjection| -> String {
        let mut s = p.feature_view_name.clone();
        if let Some(v) = p.version_tag {
            s.push_str(&format!("@v{v}"));
        }
        if !p.feature_view_name_alias.is_empty() {
            s.push_str(&format!(" as {}", p.feature_view_name_alias));
        }
        let f: Vec<&str> = p.feature_columns.iter().map(|f| f.name.as_str()).collect();
        format!("{s}: [{}]", f.join(", "))
    };
    let before: Vec<String> = old.features.iter().map(line).collect();
    let after: Vec<String> = new.features.iter().map(line).collect();
    let mut out = Vec::new();
    for a in &after {
        if !before.contains(a) {
            out.push(format!("+ {a}"));
        }
    }
    for b in &before {
        if !after.contains(b) {
            out.push(format!("- {b}"));
        }
    }
    if out.is_empty() && service_schema(old) != service_schema(new) {
        out.push("feature types or join key maps changed".to_owned());
    }
    out
}

/// What changed in a permission, one line per field.
pub(crate) fn diff_permission(old: &pb::PermissionSpec, new: &pb::PermissionSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} -> {b}"));
        }
    };
    let types = |s: &pb::PermissionSpec| format!("{:?}", s.types().collect::<Vec<_>>());
    let actions = |s: &pb::PermissionSpec| format!("{:?}", s.actions().collect::<Vec<_>>());
    field("types", types(old), types(new));
    field(
        "name_patterns",
        format!("{:?}", old.name_patterns),
        format!("{:?}", new.name_patterns),
    );
    field(
        "required_tags",
        format!("{:?}", old.required_tags),
        format!("{:?}", new.required_tags),
    );
    field("actions", actions(old), actions(new));
    field(
        "policy",
        format!(
            "{:?}",
            old.policy.as_ref().and_then(|p| p.policy_type.as_ref())
        ),
        format!(
            "{:?}",
            new.policy.as_ref().and_then(|p| p.policy_type.as_ref())
        ),
    );
    field("tags", format!("{:?}", old.tags), format!("{:?}", new.tags));
    out
}
