//! prevent_destroy, as Tecton defines it: a protected view or service is never
//! deleted, loses no version, and keeps its active schema; a protected service
//! protects every view it uses. Decided on the registry as it is before the plan, so
//! clearing the flag and the destructive change must be two applies.

use std::collections::BTreeMap;
use std::fmt;

use super::{ObjectKind, in_project, is_protected_tag};
use crate::registry::model::RegistryModel;

/// Why an object is protected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "by", content = "name", rename_all = "snake_case")]
pub enum Protection {
    /// Its own `prevent_destroy: true`.
    Own,
    /// A protected feature service uses it.
    Service(String),
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::Own => f.write_str("its own prevent_destroy"),
            Protection::Service(s) => write!(f, "feature service '{s}'"),
        }
    }
}

/// Which objects are protected, and why (own flag first).
#[derive(Debug, Clone, Default)]
pub struct ProtectionMap {
    views: BTreeMap<String, Protection>,
    services: BTreeMap<String, Protection>,
}

impl ProtectionMap {
    /// Why `name` is protected, if it is.
    pub fn get(&self, kind: ObjectKind, name: &str) -> Option<Protection> {
        match kind {
            ObjectKind::FeatureView => self.views.get(name).cloned(),
            ObjectKind::FeatureService => self.services.get(name).cloned(),
            _ => None,
        }
    }
}

/// Protection in `model`'s `project`.
pub fn protection(model: &RegistryModel, project: &str) -> ProtectionMap {
    let mut map = ProtectionMap::default();
    for v in in_project(&model.feature_views, project) {
        if v.object
            .spec
            .as_ref()
            .is_some_and(|s| is_protected_tag(&s.tags))
        {
            map.views.insert(v.name.clone(), Protection::Own);
        }
    }
    for s in in_project(&model.feature_services, project) {
        let Some(spec) = &s.object.spec else { continue };
        if !is_protected_tag(&spec.tags) {
            continue;
        }
        map.services.insert(s.name.clone(), Protection::Own);
        for p in &spec.features {
            map.views
                .entry(p.feature_view_name.clone())
                .or_insert_with(|| Protection::Service(s.name.clone()));
        }
    }
    map
}

/// A change prevent_destroy refuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The object's kind.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// What the plan would do: `delete`, `change-active-schema`,
    /// `promote-cold-version`, `change-service-features`, `drop-versions`.
    pub action: &'static str,
    /// What protects it.
    pub protected_by: Protection,
    /// The whole explanation, with how to proceed.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn how_to_proceed(kind: ObjectKind, name: &str, by: &Protection) -> String {
    match by {
        Protection::Own => format!(
            "To proceed, first apply with `prevent_destroy: false` on {} '{name}', then apply the change in a separate plan.",
            kind.as_str()
        ),
        Protection::Service(s) => format!(
            "To proceed, first apply with `prevent_destroy: false` on feature service '{s}' (or stop using '{name}' there), then apply the change in a separate plan."
        ),
    }
}

impl Violation {
    fn new(
        kind: ObjectKind,
        name: &str,
        action: &'static str,
        what: String,
        project: &str,
        by: Protection,
        extra: &str,
    ) -> Self {
        let message = format!(
            "Cannot {what} {} '{name}' in project '{project}': it is protected by prevent_destroy ({by}). {}{extra}",
            kind.as_str(),
            how_to_proceed(kind, name, &by),
        );
        Self {
            kind,
            name: name.to_owned(),
            action,
            protected_by: by,
            message,
        }
    }

    /// Deleting a protected view or service.
    pub fn delete(project: &str, kind: ObjectKind, name: &str, by: Protection) -> Self {
        let what = if kind == ObjectKind::FeatureView {
            "delete (with every version's table and history)".to_owned()
        } else {
            "delete".to_owned()
        };
        Self::new(kind, name, "delete", what, project, by, "")
    }

    /// Moving a protected view's active version (a promoted new version, a promotion
    /// of a staged one, a pin): consumers read the active schema.
    pub fn active_change(
        project: &str,
        name: &str,
        from: u32,
        to: u32,
        materialized: bool,
        by: Protection,
    ) -> Self {
        let (action, extra) = if materialized {
            ("change-active-schema", String::new())
        } else {
            (
                "promote-cold-version",
                format!(
                    " v{to} was never materialized and would serve empty: materialize it first (it can be staged with --no-promote; `feast materialize --views {name} --version v{to} START END`)."
                ),
            )
        };
        Self::new(
            ObjectKind::FeatureView,
            name,
            action,
            format!("change the active version (v{from} -> v{to}) of"),
            project,
            by,
            &extra,
        )
    }

    /// Changing what a protected service returns.
    pub fn service_schema(project: &str, name: &str, by: Protection) -> Self {
        Self::new(
            ObjectKind::FeatureService,
            name,
            "change-service-features",
            "change the features returned by".to_owned(),
            project,
            by,
            "",
        )
    }

    /// Dropping versions (tables and history records) of a protected view.
    pub fn drop_versions(project: &str, name: &str, versions: &[u32], by: Protection) -> Self {
        let list: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
        Self::new(
            ObjectKind::FeatureView,
            name,
            "drop-versions",
            format!("drop {} (tables and history) of", list.join(", ")),
            project,
            by,
            "",
        )
    }
}
