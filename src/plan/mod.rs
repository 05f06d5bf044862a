//! What applying definitions to a registry would do, and the registry after it.
//!
//! Owns: comparing [`Definitions`] with a project in a [`RegistryModel`], Tern's
//! feature-view versioning (ADR-0008 without Feast's bugs; see
//! `docs/versioning.md`), prevent_destroy ([`protect`]), the online tables each change
//! needs, and the [`Plan`]: per object create / update in place / new version (staged
//! or promoted) / pin / delete, per table create / drop, every violation, and the new
//! model. Pure: no I/O, the clock passed in. `tern plan` prints a plan, `tern apply`
//! executes one (`commands::apply`).
//!
//! Tern manages the objects its definitions can express (entities, file sources,
//! feature views, feature services). Other kinds in the project (stream and on-demand
//! views, label views, other source kinds, permissions, ...) are kept as they are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::SystemTime;

use prost::Message;

use crate::definitions::{
    DefinitionError, DefinitionErrors, Definitions, PREVENT_DESTROY_TAG, ProjectionDef, ServiceDef,
    VersionPin, ViewDef,
};
use crate::error::ErrorKind;
use crate::proto::feast::core as pb;
use crate::registry::data_source::{FileSource, PushSource, SourceKind};
use crate::registry::model::{RegistryModel, Stored};
use crate::registry::snapshot::DUMMY_ENTITY_NAME;
use crate::store::StorageLayout;

pub(crate) mod build;
mod diff;
pub mod protect;
pub mod render;
pub mod versions;

use build::{FEATURE_VIEW_TYPE, permission_spec, schema, timestamp};
use diff::{
    diff_entity, diff_permission, diff_schema, diff_service, diff_source, diff_view_metadata,
    metadata_lines, service_schema,
};
pub use protect::{Protection, Violation};

/// How to plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// `--no-promote`: record new versions without activating them.
    pub no_promote: bool,
    /// Refuse plans that break prevent_destroy (off in a development environment,
    /// where the plan still marks what would be refused).
    pub enforce: bool,
    /// `registry.enable_online_feature_view_versioning`: each version has its own
    /// online table.
    pub versioning: bool,
}

/// The kinds of object a plan changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// The project itself.
    Project,
    /// Entity.
    Entity,
    /// Data source.
    DataSource,
    /// Feature view.
    FeatureView,
    /// Feature service.
    FeatureService,
    /// Permission.
    Permission,
}

impl ObjectKind {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Project => "project",
            ObjectKind::Entity => "entity",
            ObjectKind::DataSource => "data source",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::FeatureService => "feature service",
            ObjectKind::Permission => "permission",
        }
    }
}

/// What happens to one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// New object (a view starts at v0).
    Create,
    /// Changed in place; a view keeps its active version.
    Update,
    /// A view's schema changed: version `version` is recorded, and activated unless
    /// staged.
    NewVersion {
        /// The new version's number.
        version: u32,
        /// Activated now (else staged by `--no-promote`).
        promoted: bool,
    },
    /// An existing version becomes active: a staged one promoted by a plain apply of
    /// its definition, or a pin.
    Activate {
        /// The version.
        version: u32,
        /// By a `version: vN` pin (else by a plain apply of that definition).
        pinned: bool,
        /// Whether that version's table was ever materialized.
        materialized: bool,
    },
    /// Removed (a view with its whole history and every version's table).
    Delete,
}

/// One object's change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectChange {
    /// Kind.
    pub kind: ObjectKind,
    /// Name.
    pub name: String,
    /// What happens.
    #[serde(flatten)]
    pub action: Action,
    /// What changes, one line each (`description: 'a' -> 'b'`, `+ feature x Float32`).
    pub details: Vec<String>,
    /// Whether prevent_destroy protects it in the registry as it is, and why.
    pub protected: Option<Protection>,
}

/// What happens to one online table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableAction {
    /// Created (SQLite; Redis needs no schema).
    Create,
    /// Dropped (SQLite), or the view's fields deleted (Redis).
    Drop,
}

/// One online table's change: the storage of one view version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableChange {
    /// Create or drop.
    pub action: TableAction,
    /// The view.
    pub view: String,
    /// The version stored there (0 = the unsuffixed table).
    pub version: u32,
    /// Feast's storage name (`view` or `view_vN`).
    pub storage_name: String,
    /// The SQLite table (`{project}_{storage_name}`).
    pub table: String,
    /// The features stored (what a Redis delete removes).
    pub features: Vec<String>,
}

/// The outcome of planning.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The project.
    pub project: String,
    /// Changed objects (unchanged ones are not listed).
    pub objects: Vec<ObjectChange>,
    /// Online table changes.
    pub tables: Vec<TableChange>,
    /// Tables that should exist already, created if they do not (not a change).
    pub ensure: Vec<TableChange>,
    /// Every prevent_destroy violation.
    pub violations: Vec<Violation>,
    /// Whether violations refuse the plan (false in a development environment).
    pub enforced: bool,
    /// Objects in the project the definitions cannot express, kept as they are.
    pub kept: Vec<String>,
    /// The registry after the plan.
    pub model: RegistryModel,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.tables.is_empty()
    }

    /// Whether the plan breaks a rule that refuses it.
    pub fn refused(&self) -> bool {
        self.enforced && !self.violations.is_empty()
    }
}

/// A plan that cannot be made: the definitions contradict the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Definitions that are wrong against the registry (a pin to a version that does
    /// not exist, a definitions project that differs, ...), every one.
    #[error("{0}")]
    Definitions(DefinitionErrors),
    /// Feast's `FeatureViewPinConflict`, with Feast's text.
    #[error(
        "Cannot pin feature view '{view}' to v{version} because the definition has also been modified. To pin to an older version, only change the 'version' parameter — do not modify other fields. To apply a new definition, use version='latest' or omit the version parameter."
    )]
    PinConflict {
        /// The view.
        view: String,
        /// The pinned version.
        version: u32,
    },
}

impl PlanError {
    /// Always a caller's mistake.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }
}

/// The version records of one view, newest last.
pub(crate) fn records<'a>(
    model: &'a RegistryModel,
    project: &'a str,
    view: &'a str,
) -> impl Iterator<Item = &'a pb::FeatureViewVersionRecord> + 'a {
    model
        .version_history
        .iter()
        .filter(move |r| r.project_id == project && r.feature_view_name == view)
}

/// A record's snapshot; `None` when its bytes do not decode as a feature view.
pub(crate) fn snapshot(record: &pb::FeatureViewVersionRecord) -> Option<pb::FeatureView> {
    if record.feature_view_type != FEATURE_VIEW_TYPE {
        return None;
    }
    pb::FeatureView::decode(record.feature_view_proto.as_slice()).ok()
}

/// Whether version `version` of `view` was ever materialized: the active version's
/// intervals live on the view, other versions' on their records (see
/// `docs/versioning.md`).
pub(crate) fn materialized(
    model: &RegistryModel,
    project: &str,
    view: &pb::FeatureView,
    version: u32,
) -> bool {
    let name = view.spec.as_ref().map_or("", |s| s.name.as_str());
    if active_version(view) == version {
        return view
            .meta
            .as_ref()
            .is_some_and(|m| !m.materialization_intervals.is_empty());
    }
    records(model, project, name)
        .filter(|r| r.version_number == version as i32)
        .filter_map(snapshot)
        .any(|s| {
            s.meta
                .is_some_and(|m| !m.materialization_intervals.is_empty())
        })
}

/// A view's active version (`meta.current_version_number`; 0 when unset).
pub fn active_version_of(view: &pb::FeatureView) -> u32 {
    active_version(view)
}

pub(crate) fn active_version(view: &pb::FeatureView) -> u32 {
    view.meta
        .as_ref()
        .map_or(0, |m| u32::try_from(m.current_version_number).unwrap_or(0))
}

pub(crate) fn is_protected_tag(tags: &BTreeMap<String, String>) -> bool {
    tags.get(PREVENT_DESTROY_TAG).is_some_and(|v| v == "true")
}

fn new_record(
    project: &str,
    view: &pb::FeatureView,
    version: u32,
    now: SystemTime,
) -> pb::FeatureViewVersionRecord {
    let mut snap = view.clone();
    if let Some(meta) = snap.meta.as_mut() {
        meta.current_version_number = version as i32;
    }
    pb::FeatureViewVersionRecord {
        feature_view_name: view.spec.as_ref().map_or(String::new(), |s| s.name.clone()),
        project_id: project.to_owned(),
        version_number: version as i32,
        feature_view_type: FEATURE_VIEW_TYPE.to_owned(),
        feature_view_proto: snap.encode_to_vec(),
        created_timestamp: Some(timestamp(now)),
        description: String::new(),
        version_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// Plans applying `defs` to `project` in `current`.
pub fn plan(
    current: &RegistryModel,
    project: &str,
    defs: &Definitions,
    options: PlanOptions,
    now: SystemTime,
) -> Result<Plan, PlanError> {
    let mut errors = Vec::new();
    if let Some((p, origin)) = &defs.project
        && p != project
    {
        errors.push(DefinitionError {
            origin: origin.clone(),
            field: "project".to_owned(),
            message: format!(
                "'{p}' differs from the project of feature_store.yaml ('{project}'); fix one of them"
            ),
        });
    }
    let mut p = Planner {
        current,
        project,
        defs,
        options,
        now,
        ts: timestamp(now),
        model: current.clone(),
        objects: Vec::new(),
        tables: Vec::new(),
        ensure: Vec::new(),
        errors,
        protection: protect::protection(current, project),
        violations: Vec::new(),
        kept: Vec::new(),
    };
    p.project_entry();
    p.entities();
    p.sources();
    p.views()?;
    p.services();
    p.permissions();
    p.note_kept();
    if !p.errors.is_empty() {
        p.errors
            .sort_by(|a, b| (&a.origin.file, a.origin.line).cmp(&(&b.origin.file, b.origin.line)));
        return Err(PlanError::Definitions(DefinitionErrors(p.errors)));
    }
    Ok(Plan {
        project: project.to_owned(),
        objects: p.objects,
        tables: p.tables,
        ensure: p.ensure,
        violations: p.violations,
        enforced: options.enforce,
        kept: p.kept,
        model: p.model,
    })
}

struct Planner<'a> {
    current: &'a RegistryModel,
    project: &'a str,
    defs: &'a Definitions,
    options: PlanOptions,
    now: SystemTime,
    ts: prost_types::Timestamp,
    model: RegistryModel,
    objects: Vec<ObjectChange>,
    tables: Vec<TableChange>,
    ensure: Vec<TableChange>,
    errors: Vec<DefinitionError>,
    protection: protect::ProtectionMap,
    violations: Vec<Violation>,
    kept: Vec<String>,
}

fn in_project<'m, T>(
    list: &'m [Stored<T>],
    project: &'m str,
) -> impl Iterator<Item = &'m Stored<T>> + 'm {
    list.iter().filter(move |s| s.project == project)
}

fn position<T>(list: &[Stored<T>], project: &str, name: &str) -> Option<usize> {
    list.iter()
        .position(|s| s.project == project && s.name == name)
}

impl Planner<'_> {
    fn change(&mut self, kind: ObjectKind, name: &str, action: Action, details: Vec<String>) {
        let protected = self.protection.get(kind, name);
        self.objects.push(ObjectChange {
            kind,
            name: name.to_owned(),
            action,
            details,
            protected,
        });
    }

    fn project_entry(&mut self) {
        if position(&self.model.projects, self.project, self.project).is_some() {
            return;
        }
        let project = pb::Project {
            spec: Some(pb::ProjectSpec {
                name: self.project.to_owned(),
                ..Default::default()
            }),
            meta: Some(pb::ProjectMeta {
                created_timestamp: Some(self.ts),
                last_updated_timestamp: Some(self.ts),
            }),
        };
        self.model.projects.push(Stored {
            project: self.project.to_owned(),
            name: self.project.to_owned(),
            row: None,
            object: project,
        });
        self.change(
            ObjectKind::Project,
            self.project,
            Action::Create,
            Vec::new(),
        );
    }

    fn entities(&mut self) {
        let mut wanted: Vec<pb::EntitySpecV2> = self
            .defs
            .entities
            .iter()
            .map(|d| build::entity_spec(d, self.project))
            .collect();
        if self
            .defs
            .feature_views
            .iter()
            .any(|v| v.entities.is_empty())
        {
            wanted.push(build::dummy_entity_spec(self.project));
        }
        for spec in wanted {
            let name = spec.name.clone();
            match position(&self.model.entities, self.project, &name) {
                Some(i) => {
                    let stored = &mut self.model.entities[i];
                    let old = stored.object.spec.clone().unwrap_or_default();
                    let mut spec = spec;
                    spec.project = old.project.clone();
                    if old == spec {
                        continue;
                    }
                    let details = diff_entity(&old, &spec);
                    stored.object.spec = Some(spec);
                    let meta = stored.object.meta.get_or_insert_with(Default::default);
                    meta.last_updated_timestamp = Some(self.ts);
                    self.change(ObjectKind::Entity, &name, Action::Update, details);
                }
                None => {
                    self.model.entities.push(Stored {
                        project: self.project.to_owned(),
                        name: name.clone(),
                        row: None,
                        object: pb::Entity {
                            spec: Some(spec),
                            meta: Some(pb::EntityMeta {
                                created_timestamp: Some(self.ts),
                                last_updated_timestamp: Some(self.ts),
                            }),
                        },
                    });
                    if name != DUMMY_ENTITY_NAME {
                        self.change(ObjectKind::Entity, &name, Action::Create, Vec::new());
                    }
                }
            }
        }
        let keep_dummy = self
            .defs
            .feature_views
            .iter()
            .any(|v| v.entities.is_empty())
            || in_project(&self.current.feature_views, self.project).any(|v| {
                // A view the definitions do not manage may still use it.
                v.object
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.entities.iter().any(|e| e == DUMMY_ENTITY_NAME))
                    && !self.defs.feature_views.iter().any(|d| d.name == v.name)
            });
        let declared: BTreeSet<&str> = self.defs.entities.iter().map(|e| e.name.as_str()).collect();
        let gone: Vec<String> = in_project(&self.model.entities, self.project)
            .map(|e| e.name.clone())
            .filter(|n| !declared.contains(n.as_str()))
            .filter(|n| !(n == DUMMY_ENTITY_NAME && keep_dummy))
            .collect();
        for name in gone {
            self.model
                .entities
                .retain(|e| !(e.project == self.project && e.name == name));
            if name != DUMMY_ENTITY_NAME {
                self.change(ObjectKind::Entity, &name, Action::Delete, Vec::new());
            }
        }
    }

    fn sources(&mut self) {
        for def in &self.defs.sources {
            let typed = build::file_source(def, self.project);
            self.upsert_source(&def.name, &def.origin, typed.to_proto(), |old| {
                let old = FileSource::from_proto(old)?;
                Some(if build::same_file_source(&old, &typed) {
                    None
                } else {
                    Some(diff_source(&old, &typed))
                })
            });
        }
        for def in &self.defs.push_sources {
            // An unknown batch source is a definition error already reported.
            let Some(batch) = self
                .defs
                .sources
                .iter()
                .find(|s| s.name == def.batch_source)
            else {
                continue;
            };
            let typed = build::push_source(def, batch, self.project);
            self.upsert_source(&def.name, &def.origin, typed.to_proto(), |old| {
                let old = PushSource::from_proto(old)?;
                Some(if build::same_push_source(&old, &typed) {
                    None
                } else {
                    let mut details = diff_source(&old.batch_source, &typed.batch_source);
                    if old.batch_source.name != typed.batch_source.name {
                        details.insert(
                            0,
                            format!(
                                "batch_source: '{}' -> '{}'",
                                old.batch_source.name, typed.batch_source.name
                            ),
                        );
                    }
                    Some(details)
                })
            });
        }
        let declared: BTreeSet<&str> = self
            .defs
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.defs.push_sources.iter().map(|s| s.name.as_str()))
            .collect();
        let gone: Vec<String> = in_project(&self.model.data_sources, self.project)
            .filter(|s| {
                matches!(
                    SourceKind::of(&s.object),
                    SourceKind::File | SourceKind::Push
                )
            })
            .map(|s| s.name.clone())
            .filter(|n| !declared.contains(n.as_str()))
            .collect();
        for name in gone {
            self.model
                .data_sources
                .retain(|s| !(s.project == self.project && s.name == name));
            self.change(ObjectKind::DataSource, &name, Action::Delete, Vec::new());
        }
    }

    /// Creates or updates one registered source. `compare` reads the registered proto
    /// as the same kind: `None` when it is another kind (an error: Tern does not
    /// replace sources it cannot express), `Some(None)` when unchanged, else the
    /// change's details.
    fn upsert_source(
        &mut self,
        name: &str,
        origin: &crate::definitions::Origin,
        proto: pb::DataSource,
        compare: impl Fn(&pb::DataSource) -> Option<Option<Vec<String>>>,
    ) {
        match position(&self.model.data_sources, self.project, name) {
            Some(i) => {
                let stored = &mut self.model.data_sources[i];
                match compare(&stored.object) {
                    Some(None) => {}
                    Some(Some(details)) => {
                        let meta = stored.object.meta.take();
                        stored.object = proto;
                        stored.object.meta = meta;
                        if let Some(m) = stored.object.meta.as_mut() {
                            m.last_updated_timestamp = Some(self.ts);
                        }
                        self.change(ObjectKind::DataSource, name, Action::Update, details);
                    }
                    None => self.errors.push(DefinitionError {
                        origin: origin.clone(),
                        field: format!("sources[{name}]"),
                        message: format!(
                            "the registry holds a {} source of this name; Tern manages file and push sources only: rename it",
                            SourceKind::of(&stored.object).as_str()
                        ),
                    }),
                }
            }
            None => {
                let mut proto = proto;
                proto.meta = Some(pb::data_source::SourceMeta {
                    created_timestamp: Some(self.ts),
                    last_updated_timestamp: Some(self.ts),
                    ..Default::default()
                });
                self.model.data_sources.push(Stored {
                    project: self.project.to_owned(),
                    name: name.to_owned(),
                    row: None,
                    object: proto,
                });
                self.change(ObjectKind::DataSource, name, Action::Create, Vec::new());
            }
        }
    }

    fn table(&mut self, action: TableAction, view: &str, version: u32, features: Vec<String>) {
        let stored_version = if self.options.versioning { version } else { 0 };
        let layout = StorageLayout::new(self.project, view, stored_version, Vec::new());
        if self
            .tables
            .iter()
            .any(|t| t.table == layout.sqlite_table && t.action == action)
        {
            return;
        }
        self.tables.push(TableChange {
            action,
            view: view.to_owned(),
            version: stored_version,
            storage_name: layout.storage_name,
            table: layout.sqlite_table,
            features,
        });
    }

    fn ensure_table(&mut self, view: &str, version: u32) {
        let stored_version = if self.options.versioning { version } else { 0 };
        let layout = StorageLayout::new(self.project, view, stored_version, Vec::new());
        self.ensure.push(TableChange {
            action: TableAction::Create,
            view: view.to_owned(),
            version: stored_version,
            storage_name: layout.storage_name,
            table: layout.sqlite_table,
            features: Vec::new(),
        });
    }

    fn views(&mut self) -> Result<(), PlanError> {
        for def in &self.defs.feature_views {
            if self.options.versioning && has_version_suffix(&def.name) {
                self.errors.push(DefinitionError {
                    origin: def.origin.clone(),
                    field: format!("feature_views[{}].name", def.name),
                    message: format!(
                        "'{}' ends like a version table (_v<digits>): with online versioning on, its table would collide with version tables of another view; rename it",
                        def.name
                    ),
                });
                continue;
            }
            if let Some(kind) = self.other_view_kind(&def.name) {
                self.errors.push(DefinitionError {
                    origin: def.origin.clone(),
                    field: format!("feature_views[{}]", def.name),
                    message: format!(
                        "the registry holds a {kind} named '{}'; a feature view cannot take its name (delete it first)",
                        def.name
                    ),
                });
                continue;
            }
            match position(&self.model.feature_views, self.project, &def.name) {
                None => self.create_view(def),
                Some(i) => self.change_view(def, i)?,
            }
        }
        let declared: BTreeSet<&str> = self
            .defs
            .feature_views
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        let gone: Vec<usize> = self
            .model
            .feature_views
            .iter()
            .enumerate()
            .filter(|(_, v)| v.project == self.project && !declared.contains(v.name.as_str()))
            .map(|(i, _)| i)
            .collect();
        for i in gone.into_iter().rev() {
            let view = self.model.feature_views.remove(i);
            self.delete_view(&view.object);
        }
        Ok(())
    }

    fn other_view_kind(&self, name: &str) -> Option<&'static str> {
        let p = self.project;
        if position(&self.current.stream_feature_views, p, name).is_some() {
            Some("stream feature view")
        } else if position(&self.current.on_demand_feature_views, p, name).is_some() {
            Some("on-demand feature view")
        } else if position(&self.current.label_views, p, name).is_some() {
            Some("label view")
        } else {
            None
        }
    }

    fn create_view(&mut self, def: &ViewDef) {
        if let VersionPin::Pinned(n) = def.version {
            self.errors.push(DefinitionError {
                origin: def.origin.clone(),
                field: format!("feature_views[{}].version", def.name),
                message: format!(
                    "v{n} cannot be pinned: feature view '{}' has no version history yet; apply it without `version` (or with `version: latest`) first",
                    def.name
                ),
            });
            return;
        }
        let spec = build::view_spec(def, self.defs, self.project, None);
        let view = pb::FeatureView {
            spec: Some(spec),
            meta: Some(pb::FeatureViewMeta {
                created_timestamp: Some(self.ts),
                last_updated_timestamp: Some(self.ts),
                ..Default::default()
            }),
        };
        // Leftover records of an earlier view of this name (a registry Feast wrote
        // before purging history): the new view starts after them.
        let start = records(&self.model, self.project, &def.name)
            .map(|r| r.version_number + 1)
            .max()
            .unwrap_or(0)
            .max(0) as u32;
        let mut view = view;
        if let Some(m) = view.meta.as_mut() {
            m.current_version_number = start as i32;
        }
        self.model
            .version_history
            .push(new_record(self.project, &view, start, self.now));
        self.model.feature_views.push(Stored {
            project: self.project.to_owned(),
            name: def.name.clone(),
            row: None,
            object: view,
        });
        self.table(TableAction::Create, &def.name, start, feature_names(def));
        let details = if start > 0 {
            vec![format!("starts at v{start}")]
        } else {
            Vec::new()
        };
        self.change(ObjectKind::FeatureView, &def.name, Action::Create, details);
    }

    fn change_view(&mut self, def: &ViewDef, i: usize) -> Result<(), PlanError> {
        let active = self.model.feature_views[i].object.clone();
        let active_spec = active.spec.clone().unwrap_or_default();
        let active_n = active_version(&active);
        let wanted = build::view_spec(def, self.defs, self.project, Some(&active_spec));
        let wanted_schema = schema(&wanted);
        let history: Vec<(u32, pb::FeatureView)> = records(&self.model, self.project, &def.name)
            .filter_map(|r| Some((u32::try_from(r.version_number).ok()?, snapshot(r)?)))
            .collect();
        match def.version {
            VersionPin::Pinned(n) => {
                let Some((_, pinned)) = history.iter().find(|(v, _)| *v == n) else {
                    let known: Vec<String> = history.iter().map(|(v, _)| format!("v{v}")).collect();
                    self.errors.push(DefinitionError {
                        origin: def.origin.clone(),
                        field: format!("feature_views[{}].version", def.name),
                        message: format!(
                            "v{n} of feature view '{}' does not exist (versions: {}); a pin selects a recorded version, it never creates one",
                            def.name,
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    });
                    return Ok(());
                };
                let pinned_spec = pinned.spec.clone().unwrap_or_default();
                let matches_active = wanted_schema == schema(&active_spec);
                let matches_pinned = wanted_schema == schema(&pinned_spec);
                // Once the pin is in force, the definition it was made from (any
                // recorded version) re-applies as a no-op: pins are idempotent.
                let already = n == active_n
                    && history
                        .iter()
                        .any(|(_, s)| s.spec.as_ref().map(schema).as_ref() == Some(&wanted_schema));
                if !matches_active && !matches_pinned && !already {
                    return Err(PlanError::PinConflict {
                        view: def.name.clone(),
                        version: n,
                    });
                }
                if n == active_n {
                    // The active version's schema stays; metadata from the definition.
                    let mut spec = active_spec.clone();
                    copy_metadata(&wanted, &mut spec);
                    self.update_view_in_place(i, def, &active, spec);
                    return Ok(());
                }
                // The pinned snapshot's schema with the definition's metadata.
                let mut spec = pinned_spec.clone();
                copy_metadata(&wanted, &mut spec);
                self.activate(i, def, &active, spec, n, true, pinned);
                Ok(())
            }
            VersionPin::Latest => {
                if wanted_schema == schema(&active_spec) {
                    self.update_view_in_place(i, def, &active, wanted);
                    return Ok(());
                }
                // A recorded version with this schema (a staged one, or an older one
                // written back) is activated, not minted again.
                if let Some((n, snap)) = history
                    .iter()
                    .rev()
                    .find(|(_, s)| s.spec.as_ref().map(schema).as_ref() == Some(&wanted_schema))
                {
                    if self.options.no_promote {
                        return Ok(());
                    }
                    let (n, snap) = (*n, snap.clone());
                    self.activate(i, def, &active, wanted, n, false, &snap);
                    return Ok(());
                }
                self.new_version(i, def, &active, wanted, &history);
                Ok(())
            }
        }
    }

    fn update_view_in_place(
        &mut self,
        i: usize,
        def: &ViewDef,
        active: &pb::FeatureView,
        wanted: pb::FeatureViewSpec,
    ) {
        let old = active.spec.clone().unwrap_or_default();
        if old == wanted {
            return;
        }
        let details = diff_view_metadata(&old, &wanted);
        let stored = &mut self.model.feature_views[i];
        stored.object.spec = Some(wanted);
        let meta = stored.object.meta.get_or_insert_with(Default::default);
        meta.last_updated_timestamp = Some(self.ts);
        self.change(ObjectKind::FeatureView, &def.name, Action::Update, details);
    }

    /// Makes recorded version `n` (snapshot `snap`) active with `spec`.
    #[allow(clippy::too_many_arguments)]
    fn activate(
        &mut self,
        i: usize,
        def: &ViewDef,
        active: &pb::FeatureView,
        spec: pb::FeatureViewSpec,
        n: u32,
        pinned: bool,
        snap: &pb::FeatureView,
    ) {
        let active_n = active_version(active);
        let was_materialized = materialized(self.current, self.project, active, n);
        let details = diff_schema(active.spec.as_ref(), Some(&spec));
        self.park_intervals(active, active_n);
        let mut meta = active.meta.clone().unwrap_or_default();
        meta.last_updated_timestamp = Some(self.ts);
        meta.current_version_number = n as i32;
        meta.materialization_intervals = snap
            .meta
            .as_ref()
            .map(|m| m.materialization_intervals.clone())
            .unwrap_or_default();
        meta.state = snap.meta.as_ref().map_or(0, |m| m.state);
        self.model.feature_views[i].object = pb::FeatureView {
            spec: Some(spec),
            meta: Some(meta),
        };
        // Its table exists unless Feast made the version (Feast forgets): make sure,
        // without listing it as a change.
        self.ensure_table(&def.name, n);
        self.protect_active_change(def, active_n, n, was_materialized);
        self.change(
            ObjectKind::FeatureView,
            &def.name,
            Action::Activate {
                version: n,
                pinned,
                materialized: was_materialized,
            },
            details,
        );
    }

    /// Keeps the outgoing active version's watermark on its own record, so it is not
    /// lost and not inherited by the next version (Feast's bug).
    fn park_intervals(&mut self, active: &pb::FeatureView, active_n: u32) {
        let intervals = active
            .meta
            .as_ref()
            .map(|m| m.materialization_intervals.clone())
            .unwrap_or_default();
        let name = active
            .spec
            .as_ref()
            .map_or("", |s| s.name.as_str())
            .to_owned();
        let project = self.project;
        if let Some(record) = self.model.version_history.iter_mut().find(|r| {
            r.project_id == project
                && r.feature_view_name == name
                && r.version_number == active_n as i32
        }) && let Some(mut snap) = snapshot(record)
        {
            let meta = snap.meta.get_or_insert_with(Default::default);
            if meta.materialization_intervals != intervals {
                meta.materialization_intervals = intervals;
                record.feature_view_proto = snap.encode_to_vec();
            }
        }
    }

    fn new_version(
        &mut self,
        i: usize,
        def: &ViewDef,
        active: &pb::FeatureView,
        wanted: pb::FeatureViewSpec,
        history: &[(u32, pb::FeatureView)],
    ) {
        let active_n = active_version(active);
        let mut n = history.iter().map(|(v, _)| v + 1).max().unwrap_or(0);
        if history.is_empty() {
            // A view from before versioning: its definition becomes v0 first.
            self.model
                .version_history
                .push(new_record(self.project, active, active_n, self.now));
            n = active_n + 1;
        }
        let promoted = !self.options.no_promote;
        let mut meta = active.meta.clone().unwrap_or_default();
        meta.last_updated_timestamp = Some(self.ts);
        meta.current_version_number = n as i32;
        // A new version starts cold: it has its own (empty) table and watermark.
        meta.materialization_intervals.clear();
        meta.state = 0;
        let view = pb::FeatureView {
            spec: Some(wanted.clone()),
            meta: Some(meta),
        };
        self.model
            .version_history
            .push(new_record(self.project, &view, n, self.now));
        self.table(TableAction::Create, &def.name, n, feature_names(def));
        let details = diff_schema(active.spec.as_ref(), Some(&wanted));
        if promoted {
            self.park_intervals(active, active_n);
            self.model.feature_views[i].object = view;
            self.protect_active_change(def, active_n, n, false);
        }
        self.change(
            ObjectKind::FeatureView,
            &def.name,
            Action::NewVersion {
                version: n,
                promoted,
            },
            details,
        );
    }

    fn protect_active_change(&mut self, def: &ViewDef, from: u32, to: u32, warm: bool) {
        if let Some(by) = self.protection.get(ObjectKind::FeatureView, &def.name) {
            self.violations.push(Violation::active_change(
                self.project,
                &def.name,
                from,
                to,
                warm,
                by,
            ));
        }
    }

    fn delete_view(&mut self, view: &pb::FeatureView) {
        let spec = view.spec.clone().unwrap_or_default();
        let name = spec.name.clone();
        let features: Vec<String> = spec.features.iter().map(|f| f.name.clone()).collect();
        let mut versions: BTreeSet<u32> = records(&self.model, self.project, &name)
            .filter_map(|r| u32::try_from(r.version_number).ok())
            .collect();
        versions.insert(active_version(view));
        for v in versions {
            let features = records(&self.model, self.project, &name)
                .filter(|r| r.version_number == v as i32)
                .filter_map(snapshot)
                .next()
                .and_then(|s| s.spec)
                .map(|s| s.features.iter().map(|f| f.name.clone()).collect())
                .unwrap_or_else(|| features.clone());
            self.table(TableAction::Drop, &name, v, features);
        }
        let project = self.project;
        self.model
            .version_history
            .retain(|r| !(r.project_id == project && r.feature_view_name == name));
        if let Some(by) = self.protection.get(ObjectKind::FeatureView, &name) {
            self.violations.push(Violation::delete(
                self.project,
                ObjectKind::FeatureView,
                &name,
                by,
            ));
        }
        self.change(ObjectKind::FeatureView, &name, Action::Delete, Vec::new());
    }

    fn services(&mut self) {
        for def in &self.defs.feature_services {
            let Some(spec) = self.service_spec(def) else {
                continue;
            };
            match position(&self.model.feature_services, self.project, &def.name) {
                None => {
                    self.model.feature_services.push(Stored {
                        project: self.project.to_owned(),
                        name: def.name.clone(),
                        row: None,
                        object: pb::FeatureService {
                            spec: Some(spec),
                            meta: Some(pb::FeatureServiceMeta {
                                created_timestamp: Some(self.ts),
                                last_updated_timestamp: Some(self.ts),
                            }),
                        },
                    });
                    self.change(
                        ObjectKind::FeatureService,
                        &def.name,
                        Action::Create,
                        Vec::new(),
                    );
                }
                Some(i) => {
                    let stored = &mut self.model.feature_services[i];
                    let old = stored.object.spec.clone().unwrap_or_default();
                    let mut merged = old.clone();
                    // Projections are compared by what the service returns; Feast's
                    // bookkeeping in them (source copies, timestamp fields) is kept.
                    if service_schema(&old) != service_schema(&spec) {
                        merged.features = spec
                            .features
                            .iter()
                            .map(|p| keep_projection_extras(p, &old.features))
                            .collect();
                    }
                    merged.tags = spec.tags.clone();
                    merged.description = spec.description.clone();
                    merged.owner = spec.owner.clone();
                    if merged == old {
                        continue;
                    }
                    let schema_changed = service_schema(&old) != service_schema(&merged);
                    let mut details = diff_service(&old, &merged);
                    if !schema_changed {
                        details.extend(metadata_lines(
                            (&old.description, &old.owner, &old.tags),
                            (&merged.description, &merged.owner, &merged.tags),
                        ));
                    }
                    stored.object.spec = Some(merged);
                    let meta = stored.object.meta.get_or_insert_with(Default::default);
                    meta.last_updated_timestamp = Some(self.ts);
                    if schema_changed
                        && let Some(by) = self.protection.get(ObjectKind::FeatureService, &def.name)
                    {
                        self.violations.push(Violation::service_schema(
                            self.project,
                            &def.name,
                            by,
                        ));
                    }
                    self.change(
                        ObjectKind::FeatureService,
                        &def.name,
                        Action::Update,
                        details,
                    );
                }
            }
        }
        let declared: BTreeSet<&str> = self
            .defs
            .feature_services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let gone: Vec<String> = in_project(&self.model.feature_services, self.project)
            .map(|s| s.name.clone())
            .filter(|n| !declared.contains(n.as_str()))
            .collect();
        for name in gone {
            self.model
                .feature_services
                .retain(|s| !(s.project == self.project && s.name == name));
            if let Some(by) = self.protection.get(ObjectKind::FeatureService, &name) {
                self.violations.push(Violation::delete(
                    self.project,
                    ObjectKind::FeatureService,
                    &name,
                    by,
                ));
            }
            self.change(
                ObjectKind::FeatureService,
                &name,
                Action::Delete,
                Vec::new(),
            );
        }
    }

    /// Makes the project's permissions those the definitions declare, when they
    /// declare any `permissions:` at all (else leaves them alone).
    fn permissions(&mut self) {
        let Some(defs) = &self.defs.permissions else {
            return;
        };
        // A file registry keeps permissions opaque, project and name inside the bytes.
        let decoded: Vec<Option<pb::Permission>> = self
            .model
            .permissions
            .iter()
            .map(|s| prost::Message::decode(s.object.as_slice()).ok())
            .collect();
        let spec_of = |p: &Option<pb::Permission>| p.as_ref().and_then(|p| p.spec.clone());
        let find = |name: &str| {
            decoded.iter().position(|p| {
                spec_of(p).is_some_and(|s| s.project == self.project && s.name == name)
            })
        };
        let mut changes = Vec::new();
        let mut updates: Vec<(Option<usize>, pb::Permission)> = Vec::new();
        for def in defs {
            let spec = permission_spec(def, self.project);
            match find(&def.name) {
                None => {
                    changes.push((def.name.clone(), Action::Create, Vec::new()));
                    updates.push((
                        None,
                        pb::Permission {
                            spec: Some(spec),
                            meta: Some(pb::PermissionMeta {
                                created_timestamp: Some(self.ts),
                                last_updated_timestamp: Some(self.ts),
                            }),
                        },
                    ));
                }
                Some(i) => {
                    let Some(old) = decoded[i].clone() else {
                        continue;
                    };
                    let old_spec = old.spec.clone().unwrap_or_default();
                    if old_spec == spec {
                        continue;
                    }
                    changes.push((
                        def.name.clone(),
                        Action::Update,
                        diff_permission(&old_spec, &spec),
                    ));
                    let mut meta = old.meta.unwrap_or_default();
                    meta.last_updated_timestamp = Some(self.ts);
                    updates.push((
                        Some(i),
                        pb::Permission {
                            spec: Some(spec),
                            meta: Some(meta),
                        },
                    ));
                }
            }
        }
        let declared: BTreeSet<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        let gone: Vec<usize> = decoded
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let s = spec_of(p)?;
                (s.project == self.project && !declared.contains(s.name.as_str())).then_some(i)
            })
            .collect();
        for (at, permission) in updates {
            let bytes = prost::Message::encode_to_vec(&permission);
            let name = permission.spec.map(|s| s.name).unwrap_or_default();
            match at {
                Some(i) => self.model.permissions[i].object = bytes,
                None => self.model.permissions.push(Stored {
                    project: self.project.to_owned(),
                    name,
                    row: None,
                    object: bytes,
                }),
            }
        }
        for &i in gone.iter().rev() {
            if let Some(s) = spec_of(&decoded[i]) {
                changes.push((s.name, Action::Delete, Vec::new()));
            }
            self.model.permissions.remove(i);
        }
        for (name, action, details) in changes {
            self.change(ObjectKind::Permission, &name, action, details);
        }
    }

    fn service_spec(&mut self, def: &ServiceDef) -> Option<pb::FeatureServiceSpec> {
        let mut tags = def.tags.clone();
        if def.prevent_destroy {
            tags.insert(PREVENT_DESTROY_TAG.to_owned(), "true".to_owned());
        }
        let mut features = Vec::new();
        let mut ok = true;
        for (k, p) in def.features.iter().enumerate() {
            match self.projection(def, k, p) {
                Some(proj) => features.push(proj),
                None => ok = false,
            }
        }
        ok.then(|| pb::FeatureServiceSpec {
            name: def.name.clone(),
            project: self.project.to_owned(),
            features,
            tags,
            description: def.description.clone(),
            owner: def.owner.clone(),
            ..Default::default()
        })
    }

    /// A service entry against the view as planned (or its pinned version).
    fn projection(
        &mut self,
        def: &ServiceDef,
        k: usize,
        p: &ProjectionDef,
    ) -> Option<pb::FeatureViewProjection> {
        let field = format!("feature_services[{}].features[{k}]", def.name);
        let view = position(&self.model.feature_views, self.project, &p.view)
            .map(|i| self.model.feature_views[i].object.clone());
        let spec = match (p.version, &view) {
            (_, None) => {
                self.errors.push(DefinitionError {
                    origin: p.origin.clone(),
                    field,
                    message: format!("feature view '{}' is not defined", p.view),
                });
                return None;
            }
            (None, Some(v)) => v.spec.clone().unwrap_or_default(),
            (Some(n), Some(_)) => {
                let snap = records(&self.model, self.project, &p.view)
                    .filter(|r| r.version_number == n as i32)
                    .find_map(snapshot);
                match snap.and_then(|s| s.spec) {
                    Some(s) => s,
                    None => {
                        self.errors.push(DefinitionError {
                            origin: p.origin.clone(),
                            field: format!("{field}.version"),
                            message: format!(
                                "v{n} of feature view '{}' does not exist; pin a recorded version (tern versions list {})",
                                p.view, p.view
                            ),
                        });
                        return None;
                    }
                }
            }
        };
        let columns: Vec<pb::FeatureSpecV2> = match &p.features {
            None => spec.features.clone(),
            Some(names) => {
                let by_name: HashMap<&str, &pb::FeatureSpecV2> =
                    spec.features.iter().map(|f| (f.name.as_str(), f)).collect();
                let mut out = Vec::new();
                for name in names {
                    match by_name.get(name.as_str()) {
                        Some(f) => out.push((*f).clone()),
                        None => {
                            let which = p.version.map_or(String::new(), |n| format!("@v{n}"));
                            self.errors.push(DefinitionError {
                                origin: p.origin.clone(),
                                field: format!("{field}.features"),
                                message: format!(
                                    "feature view '{}{which}' has no feature '{name}'",
                                    p.view
                                ),
                            });
                            return None;
                        }
                    }
                }
                out
            }
        };
        let source = spec.batch_source.clone().map(|mut s| {
            s.data_source_class_type.clear();
            s
        });
        Some(pb::FeatureViewProjection {
            feature_view_name: p.view.clone(),
            feature_view_name_alias: p.alias.clone(),
            feature_columns: columns,
            join_key_map: p.join_key_map.clone(),
            timestamp_field: source
                .as_ref()
                .map(|s| s.timestamp_field.clone())
                .unwrap_or_default(),
            created_timestamp_column: source
                .as_ref()
                .map(|s| s.created_timestamp_column.clone())
                .unwrap_or_default(),
            date_partition_column: source
                .as_ref()
                .map(|s| s.date_partition_column.clone())
                .unwrap_or_default(),
            batch_source: source,
            stream_source: None,
            version_tag: p.version.map(|n| n as i32),
            view_type: "featureView".to_owned(),
        })
    }

    fn note_kept(&mut self) {
        let p = self.project;
        let mut kept: Vec<String> = Vec::new();
        kept.extend(
            in_project(&self.current.stream_feature_views, p)
                .map(|v| format!("stream feature view '{}'", v.name)),
        );
        kept.extend(
            in_project(&self.current.on_demand_feature_views, p)
                .map(|v| format!("on-demand feature view '{}'", v.name)),
        );
        kept.extend(
            in_project(&self.current.label_views, p).map(|v| format!("label view '{}'", v.name)),
        );
        kept.extend(
            in_project(&self.current.data_sources, p)
                .filter(|s| SourceKind::of(&s.object) != SourceKind::File)
                .map(|s| format!("{} source '{}'", SourceKind::of(&s.object).as_str(), s.name)),
        );
        self.kept = kept;
    }
}

/// A new projection with the fields Tern does not model taken from the registered
/// projection of the same view, alias and version, if there is one.
fn keep_projection_extras(
    new: &pb::FeatureViewProjection,
    old: &[pb::FeatureViewProjection],
) -> pb::FeatureViewProjection {
    let Some(o) = old.iter().find(|o| {
        o.feature_view_name == new.feature_view_name
            && o.feature_view_name_alias == new.feature_view_name_alias
            && o.version_tag == new.version_tag
    }) else {
        return new.clone();
    };
    pb::FeatureViewProjection {
        feature_columns: new.feature_columns.clone(),
        join_key_map: new.join_key_map.clone(),
        ..o.clone()
    }
}

fn feature_names(def: &ViewDef) -> Vec<String> {
    def.features.iter().map(|f| f.name.clone()).collect()
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create => f.write_str("create"),
            Action::Update => f.write_str("update in place"),
            Action::NewVersion {
                version,
                promoted: true,
            } => write!(f, "new version v{version} (promoted)"),
            Action::NewVersion {
                version,
                promoted: false,
            } => write!(f, "new version v{version} (staged)"),
            Action::Activate {
                version,
                pinned,
                materialized,
            } => write!(
                f,
                "{} v{version}{}",
                if *pinned { "pin" } else { "promote" },
                if *materialized {
                    ""
                } else {
                    " (never materialized: serves empty)"
                }
            ),
            Action::Delete => f.write_str("delete"),
        }
    }
}

/// The fields a definition may change without a new version (Feast's metadata
/// update): description, tags, owner, ttl, online, offline, the sources, the pin.
fn copy_metadata(from: &pb::FeatureViewSpec, to: &mut pb::FeatureViewSpec) {
    to.description = from.description.clone();
    to.tags = from.tags.clone();
    to.owner = from.owner.clone();
    to.ttl = from.ttl;
    to.online = from.online;
    to.offline = from.offline;
    to.batch_source = from.batch_source.clone();
    to.stream_source = from.stream_source.clone();
    to.version = from.version.clone();
}

/// `name_v3`: the shape of a version's storage name.
fn has_version_suffix(name: &str) -> bool {
    name.rsplit_once("_v").is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::has_version_suffix;

    #[test]
    fn version_suffixes_are_recognised() {
        assert!(has_version_suffix("stats_v2"));
        assert!(has_version_suffix("stats_v10"));
        assert!(!has_version_suffix("stats_v"));
        assert!(!has_version_suffix("stats_vx"));
        assert!(!has_version_suffix("_v2"));
        assert!(!has_version_suffix("stats"));
    }
}
