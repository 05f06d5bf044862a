//! Writing a registry's project as definition files: `tern export`.
//!
//! The inverse of [`super::load`]: loading what this writes, against the same
//! registry, plans no change. What definitions cannot express is listed, not written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::PREVENT_DESTROY_TAG;
use super::parse::{dtype_name, version_pin};
use crate::definitions::VersionPin;
use crate::proto::feast::core as pb;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::registry::RegistryModel;
use crate::registry::data_source::{FileSource, PushSource, SourceKind};
use crate::registry::snapshot::DUMMY_ENTITY_NAME;

/// One exported file: its name (relative to the output folder) and its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// File name, e.g. `definitions.yaml`.
    pub name: String,
    /// YAML text.
    pub text: String,
}

/// What an export produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// The files to write.
    pub files: Vec<ExportedFile>,
    /// Objects the definitions cannot express (on-demand and stream views, non-file
    /// sources, ...), each as `kind 'name': why`. `tern apply` leaves those alone.
    pub skipped: Vec<String>,
}

/// The definitions of `project` in `model`, with source paths written relative to
/// `out_dir` (stored paths are relative to `repo_dir`).
pub fn export(model: &RegistryModel, project: &str, repo_dir: &Path, out_dir: &Path) -> Export {
    let mut skipped = Vec::new();
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Written by `tern export`; `tern plan -f` on this file shows no change."
    );
    let _ = writeln!(y, "project: {}", scalar(project));

    let in_project = |p: &str| p == project;
    for v in model
        .stream_feature_views
        .iter()
        .filter(|v| in_project(&v.project))
    {
        skipped.push(format!(
            "stream feature view '{}': not expressible in definitions",
            v.name
        ));
    }
    for v in model
        .on_demand_feature_views
        .iter()
        .filter(|v| in_project(&v.project))
    {
        skipped.push(format!(
            "on-demand feature view '{}': not expressible in definitions",
            v.name
        ));
    }
    for v in model.label_views.iter().filter(|v| in_project(&v.project)) {
        skipped.push(format!(
            "label view '{}': not expressible in definitions",
            v.name
        ));
    }

    // Entities.
    let mut entity_types: BTreeMap<String, (String, i32)> = BTreeMap::new();
    let mut entities = String::new();
    for e in model.entities.iter().filter(|e| in_project(&e.project)) {
        let Some(spec) = &e.object.spec else { continue };
        if spec.name == DUMMY_ENTITY_NAME {
            continue;
        }
        let t = ValueType::try_from(spec.value_type)
            .ok()
            .filter(|t| dtype_name(*t).is_some());
        let Some(t) = t else {
            skipped.push(format!(
                "entity '{}': its value type is not one definitions can express",
                spec.name
            ));
            continue;
        };
        entity_types.insert(spec.name.clone(), (spec.join_key.clone(), spec.value_type));
        let _ = writeln!(entities, "  - name: {}", scalar(&spec.name));
        let _ = writeln!(entities, "    join_keys: [{}]", scalar(&spec.join_key));
        let _ = writeln!(entities, "    value_type: {}", t.as_str_name());
        metadata(
            &mut entities,
            "    ",
            &spec.description,
            &spec.owner,
            &spec.tags,
        );
    }
    if !entities.is_empty() {
        y.push_str("entities:\n");
        y.push_str(&entities);
    }

    // File sources: the registered ones, then those only embedded in views.
    let mut sources: Vec<FileSource> = Vec::new();
    let mut pushes: Vec<PushSource> = Vec::new();
    for s in model.data_sources.iter().filter(|s| in_project(&s.project)) {
        if let Some(p) = PushSource::from_proto(&s.object) {
            pushes.push(p);
            continue;
        }
        match FileSource::from_proto(&s.object) {
            Some(f) => sources.push(f),
            None => skipped.push(format!(
                "{} source '{}': only file sources are expressible",
                SourceKind::of(&s.object).as_str(),
                s.name
            )),
        }
    }
    let views: Vec<&pb::FeatureView> = model
        .feature_views
        .iter()
        .filter(|v| in_project(&v.project))
        .map(|v| &v.object)
        .collect();
    for v in &views {
        if let Some(p) = v
            .spec
            .as_ref()
            .and_then(|s| s.stream_source.as_ref())
            .and_then(PushSource::from_proto)
            && !p.name.is_empty()
            && !pushes.iter().any(|q| q.name == p.name)
        {
            pushes.push(p);
        }
    }
    let embedded = views
        .iter()
        .filter_map(|v| v.spec.as_ref()?.batch_source.as_ref())
        .filter_map(FileSource::from_proto)
        .chain(pushes.iter().map(|p| p.batch_source.clone()));
    for f in embedded {
        if !f.name.is_empty() && !sources.iter().any(|s| s.name == f.name) {
            sources.push(f);
        }
    }
    if !sources.is_empty() {
        y.push_str("sources:\n");
    }
    for s in &sources {
        let _ = writeln!(y, "  - name: {}", scalar(&s.name));
        let _ = writeln!(y, "    type: file");
        let _ = writeln!(
            y,
            "    path: {}",
            scalar(&written_path(&s.path, repo_dir, out_dir))
        );
        let _ = writeln!(y, "    timestamp_field: {}", scalar(&s.timestamp_field));
        if let Some(c) = &s.created_timestamp_column {
            let _ = writeln!(y, "    created_timestamp_column: {}", scalar(c));
        }
        if !s.field_mapping.is_empty() {
            let _ = writeln!(y, "    field_mapping: {}", flow_map(&s.field_mapping));
        }
        if let Some(c) = &s.date_partition_column {
            let _ = writeln!(y, "    date_partition_column: {}", scalar(c));
        }
        metadata(&mut y, "    ", &s.description, &s.owner, &s.tags);
    }
    for p in &pushes {
        let _ = writeln!(y, "  - name: {}", scalar(&p.name));
        let _ = writeln!(y, "    type: push");
        let _ = writeln!(y, "    batch_source: {}", scalar(&p.batch_source.name));
        metadata(&mut y, "    ", &p.description, &p.owner, &p.tags);
    }

    // Feature views.
    let mut exported_views: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut view_text = String::new();
    for v in &views {
        let Some(spec) = &v.spec else { continue };
        match view(spec, &entity_types, &sources) {
            Ok(text) => {
                view_text.push_str(&text);
                exported_views.insert(
                    spec.name.clone(),
                    spec.features.iter().map(|f| f.name.clone()).collect(),
                );
            }
            Err(why) => skipped.push(format!("feature view '{}': {why}", spec.name)),
        }
    }
    if !view_text.is_empty() {
        y.push_str("feature_views:\n");
        y.push_str(&view_text);
    }

    // Feature services.
    let mut service_text = String::new();
    for s in model
        .feature_services
        .iter()
        .filter(|s| in_project(&s.project))
    {
        let Some(spec) = &s.object.spec else { continue };
        match service(spec, &exported_views) {
            Ok(text) => service_text.push_str(&text),
            Err(why) => skipped.push(format!("feature service '{}': {why}", spec.name)),
        }
    }
    if !service_text.is_empty() {
        y.push_str("feature_services:\n");
        y.push_str(&service_text);
    }

    // Permissions: written only when the project has some, so that applying the export
    // manages exactly those.
    let mut permission_text = String::new();
    for stored in &model.permissions {
        let Ok(p) = <pb::Permission as prost::Message>::decode(stored.object.as_slice()) else {
            skipped.push("a permission that does not decode".to_owned());
            continue;
        };
        let Some(spec) = p.spec.filter(|s| s.project == project) else {
            continue;
        };
        match permission(&spec) {
            Ok(text) => permission_text.push_str(&text),
            Err(why) => skipped.push(format!("permission '{}': {why}", spec.name)),
        }
    }
    if !permission_text.is_empty() {
        y.push_str("permissions:\n");
        y.push_str(&permission_text);
    }
    Export {
        files: vec![ExportedFile {
            name: "definitions.yaml".to_owned(),
            text: y,
        }],
        skipped,
    }
}

fn view(
    spec: &pb::FeatureViewSpec,
    entity_types: &BTreeMap<String, (String, i32)>,
    sources: &[FileSource],
) -> Result<String, String> {
    let push = match &spec.stream_source {
        None => None,
        Some(s) => Some(
            PushSource::from_proto(s)
                .filter(|p| !p.name.is_empty())
                .ok_or_else(|| {
                    "its stream source is not a push source over a file source".to_owned()
                })?,
        ),
    };
    if !spec.source_views.is_empty() || spec.feature_transformation.is_some() {
        return Err("it is derived from other views".to_owned());
    }
    let source = spec
        .batch_source
        .as_ref()
        .and_then(FileSource::from_proto)
        .filter(|f| sources.iter().any(|s| s.name == f.name))
        .ok_or_else(|| "its source is not a named file source".to_owned())?;
    let entityless = spec.entities.iter().all(|e| e == DUMMY_ENTITY_NAME);
    let mut y = String::new();
    let _ = writeln!(y, "  - name: {}", scalar(&spec.name));
    if entityless {
        let _ = writeln!(y, "    entities: []");
    } else {
        let names: Vec<String> = spec.entities.iter().map(|e| scalar(e)).collect();
        let _ = writeln!(y, "    entities: [{}]", names.join(", "));
    }
    let _ = writeln!(
        y,
        "    source: {}",
        scalar(push.as_ref().map_or(&source.name, |p| &p.name))
    );
    let _ = writeln!(
        y,
        "    ttl: {}",
        ttl(spec.ttl.as_ref().map_or(0, |d| d.seconds))
    );
    let _ = writeln!(y, "    online: {}", spec.online);
    if spec.offline {
        let _ = writeln!(y, "    offline: true");
    }
    if spec
        .tags
        .get(PREVENT_DESTROY_TAG)
        .is_some_and(|v| v == "true")
    {
        let _ = writeln!(y, "    prevent_destroy: true");
    }
    if let Ok(VersionPin::Pinned(_)) = version_pin(&spec.version) {
        let _ = writeln!(y, "    version: {}", scalar(&spec.version));
    }
    let tags: BTreeMap<String, String> = spec
        .tags
        .iter()
        .filter(|(k, _)| *k != PREVENT_DESTROY_TAG)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata(&mut y, "    ", &spec.description, &spec.owner, &tags);
    let _ = writeln!(y, "    schema:");
    // Entity columns whose type differs from their entity's go into the schema.
    if !entityless {
        for c in &spec.entity_columns {
            let entity_type = entity_types
                .iter()
                .find(|(name, (key, _))| spec.entities.contains(name) && *key == c.name)
                .map(|(_, (_, t))| *t);
            if entity_type != Some(c.value_type) || !c.description.is_empty() || !c.tags.is_empty()
            {
                let _ = writeln!(y, "      - {}", field(c)?);
            }
        }
    }
    for f in &spec.features {
        if f.vector_index || f.vector_length != 0 || !f.vector_search_metric.is_empty() {
            return Err(format!("feature '{}' has vector search settings", f.name));
        }
        let _ = writeln!(y, "      - {}", field(f)?);
    }
    Ok(y)
}

fn field(f: &pb::FeatureSpecV2) -> Result<String, String> {
    let t = ValueType::try_from(f.value_type)
        .ok()
        .and_then(dtype_name)
        .ok_or_else(|| format!("feature '{}' has a type definitions cannot express", f.name))?;
    let mut parts = vec![format!("name: {}", scalar(&f.name)), format!("dtype: {t}")];
    if !f.description.is_empty() {
        parts.push(format!("description: {}", scalar(&f.description)));
    }
    if !f.tags.is_empty() {
        parts.push(format!("tags: {}", flow_map(&f.tags)));
    }
    Ok(format!("{{{}}}", parts.join(", ")))
}

fn service(
    spec: &pb::FeatureServiceSpec,
    views: &BTreeMap<String, Vec<String>>,
) -> Result<String, String> {
    let mut y = String::new();
    let _ = writeln!(y, "  - name: {}", scalar(&spec.name));
    if spec
        .tags
        .get(PREVENT_DESTROY_TAG)
        .is_some_and(|v| v == "true")
    {
        let _ = writeln!(y, "    prevent_destroy: true");
    }
    let tags: BTreeMap<String, String> = spec
        .tags
        .iter()
        .filter(|(k, _)| *k != PREVENT_DESTROY_TAG)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata(&mut y, "    ", &spec.description, &spec.owner, &tags);
    let _ = writeln!(y, "    features:");
    for p in &spec.features {
        let Some(all) = views.get(&p.feature_view_name) else {
            return Err(format!(
                "it uses '{}', which is not exported",
                p.feature_view_name
            ));
        };
        let names: Vec<String> = p.feature_columns.iter().map(|f| f.name.clone()).collect();
        let plain = p.feature_view_name_alias.is_empty()
            && p.version_tag.is_none()
            && p.join_key_map.is_empty();
        if plain && &names == all {
            let _ = writeln!(y, "      - {}", scalar(&p.feature_view_name));
        } else if plain {
            let list: Vec<String> = names.iter().map(|n| scalar(n)).collect();
            let _ = writeln!(
                y,
                "      - {}: [{}]",
                scalar(&p.feature_view_name),
                list.join(", ")
            );
        } else {
            let mut parts = vec![format!("view: {}", scalar(&p.feature_view_name))];
            if !p.feature_view_name_alias.is_empty() {
                parts.push(format!("alias: {}", scalar(&p.feature_view_name_alias)));
            }
            if let Some(v) = p.version_tag {
                parts.push(format!("version: v{v}"));
            }
            let list: Vec<String> = names.iter().map(|n| scalar(n)).collect();
            parts.push(format!("features: [{}]", list.join(", ")));
            if !p.join_key_map.is_empty() {
                parts.push(format!("join_key_map: {}", flow_map(&p.join_key_map)));
            }
            let _ = writeln!(y, "      - {{{}}}", parts.join(", "));
        }
    }
    Ok(y)
}

fn metadata(
    y: &mut String,
    indent: &str,
    description: &str,
    owner: &str,
    tags: &BTreeMap<String, String>,
) {
    if !description.is_empty() {
        let _ = writeln!(y, "{indent}description: {}", scalar(description));
    }
    if !owner.is_empty() {
        let _ = writeln!(y, "{indent}owner: {}", scalar(owner));
    }
    if !tags.is_empty() {
        let _ = writeln!(y, "{indent}tags: {}", flow_map(tags));
    }
}

fn permission(spec: &pb::PermissionSpec) -> Result<String, String> {
    use pb::policy::PolicyType;
    let mut y = String::new();
    let _ = writeln!(y, "  - name: {}", scalar(&spec.name));
    let lower = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let types = lower(spec.types().map(|t| t.as_str_name()).collect());
    if !types.is_empty() {
        let _ = writeln!(y, "    types: {}", flow_list(&types));
    }
    if !spec.name_patterns.is_empty() {
        let _ = writeln!(y, "    name_patterns: {}", flow_list(&spec.name_patterns));
    }
    if !spec.required_tags.is_empty() {
        let _ = writeln!(y, "    required_tags: {}", flow_map(&spec.required_tags));
    }
    let actions = lower(spec.actions().map(|a| a.as_str_name()).collect());
    let _ = writeln!(y, "    actions: {}", flow_list(&actions));
    let policy = match spec.policy.as_ref().and_then(|p| p.policy_type.as_ref()) {
        Some(PolicyType::RoleBasedPolicy(r)) => format!("{{roles: {}}}", flow_list(&r.roles)),
        Some(PolicyType::GroupBasedPolicy(g)) => format!("{{groups: {}}}", flow_list(&g.groups)),
        Some(PolicyType::NamespaceBasedPolicy(n)) => {
            format!("{{namespaces: {}}}", flow_list(&n.namespaces))
        }
        Some(PolicyType::CombinedGroupNamespacePolicy(c)) => format!(
            "{{groups: {}, namespaces: {}}}",
            flow_list(&c.groups),
            flow_list(&c.namespaces)
        ),
        None => return Err("it has no policy, which definitions cannot express".into()),
    };
    let _ = writeln!(y, "    policy: {policy}");
    if !spec.tags.is_empty() {
        let _ = writeln!(y, "    tags: {}", flow_map(&spec.tags));
    }
    Ok(y)
}

fn flow_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", parts.join(", "))
}

fn flow_map(map: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Seconds in the largest exact unit.
fn ttl(seconds: i64) -> String {
    if seconds == 0 {
        return "0".to_owned();
    }
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds % n == 0 {
            return format!("{}{unit}", seconds / n);
        }
    }
    format!("{seconds}s")
}

/// A YAML scalar: plain when that reads back as the same string, else double-quoted
/// (JSON's escapes are YAML's).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@'))
        && !s.starts_with(['-', '@'])
        && (!s.starts_with('.') || s.starts_with("./") || s.starts_with("../"))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
        )
        && s.parse::<f64>().is_err()
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

/// A stored source path (relative to the repo folder) as written in a definition file
/// in `out_dir`.
fn written_path(stored: &str, repo_dir: &Path, out_dir: &Path) -> String {
    if stored.contains("://") || Path::new(stored).is_absolute() {
        return stored.to_owned();
    }
    let target = absolute(&repo_dir.join(stored));
    let from = absolute(out_dir);
    relative(&target, &from).to_string_lossy().into_owned()
}

fn absolute(path: &Path) -> PathBuf {
    let full = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in full.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `target` relative to the folder `from` (both absolute).
fn relative(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<Component<'_>> = target.components().collect();
    let f: Vec<Component<'_>> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back_as_written() {
        for s in [
            "plain", "a b", "true", "1d", "007", "x: y", "#c", "", "é", "-x", "quote\"d",
        ] {
            let y = format!("k: {}\n", scalar(s));
            let v: serde_norway::Value = serde_norway::from_str(&y).unwrap();
            assert_eq!(v["k"].as_str(), Some(s), "{y}");
        }
    }

    #[test]
    fn paths_are_rewritten_relative_to_the_output() {
        assert_eq!(
            written_path("data/a.parquet", Path::new("/r"), Path::new("/r/defs")),
            "../data/a.parquet"
        );
        assert_eq!(
            written_path("data/a.parquet", Path::new("/r"), Path::new("/r")),
            "data/a.parquet"
        );
        assert_eq!(
            written_path("s3://b/a.parquet", Path::new("/r"), Path::new("/x")),
            "s3://b/a.parquet"
        );
        assert_eq!(ttl(86_400), "1d");
        assert_eq!(ttl(7200), "2h");
        assert_eq!(ttl(90), "90s");
        assert_eq!(ttl(0), "0");
    }
}
