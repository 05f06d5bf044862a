//! The immutable, indexed view of one registry load that requests are served from.
//!
//! Built once per load, never mutated: every lookup a request makes is a hash-map
//! probe, and everything derivable from the registry alone (join keys and their types,
//! storage names, SQLite statements, version tables) is computed here, not per request.
//! Owns: filtering on the configured project, view kinds, version history, services.
//! Does not own: ref syntax (`refs`) or request resolution (`serving::plan`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use prost::Message;

use super::RegistryError;
use super::model::{RegistryModel, Stored};
use crate::config::{KeySerialization, RepoConfig};
use crate::permissions::Permissions;
use crate::proto::feast::core as pb;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::store::StorageLayout;

/// Feast's placeholder entity for views without entities.
pub const DUMMY_ENTITY_NAME: &str = "__dummy";
/// Join key of the placeholder entity; its value is always the empty string.
pub const DUMMY_ENTITY_ID: &str = "__dummy_id";

/// Settings that shape a snapshot, from `feature_store.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Only objects of this project are indexed.
    pub project: String,
    /// `enable_online_feature_view_versioning`.
    pub versioning: bool,
    /// `serve_features_while_materializing`.
    pub serve_while_materializing: bool,
    /// Entity key layout of the online store.
    pub key_serialization: KeySerialization,
}

impl SnapshotSettings {
    /// The settings `config` implies.
    pub fn from_config(config: &RepoConfig) -> Self {
        Self {
            project: config.project.clone(),
            versioning: config.registry.versioning,
            serve_while_materializing: config.registry.serve_while_materializing,
            key_serialization: config.entity_key_serialization,
        }
    }
}

/// One registry load.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every published snapshot; plan caches are keyed by it.
    pub generation: u64,
    /// What this snapshot was built with.
    pub settings: SnapshotSettings,
    /// The registry's `version_id` (rewritten by Feast on every write).
    pub version_id: String,
    /// The registry's `last_updated`.
    pub last_updated: Option<prost_types::Timestamp>,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    views: HashMap<String, ViewEntry>,
    services: HashMap<String, Arc<ServiceDef>>,
    /// Join key -> value type, for every entity of the project.
    entity_join_keys: HashMap<String, ValueType>,
    /// Entity name -> join key, where they differ (Feast still accepts entity names
    /// as request columns, with a deprecation warning).
    entity_names: HashMap<String, String>,
    /// Push source name -> the views it feeds (by their active definitions), sorted.
    push_sources: HashMap<String, Vec<String>>,
    /// The project's permissions, decoded once.
    permissions: Permissions,
}

/// Kinds of view Feast serves from the online store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// `FeatureView` (also batch views).
    Feature,
    /// `StreamFeatureView`: served exactly like a feature view.
    Stream,
    /// `OnDemandFeatureView`; only servable when its outputs are written online.
    OnDemand {
        /// `write_to_online_store`.
        stored: bool,
    },
    /// `LabelView`.
    Label,
}

/// A view name with its active definition and its saved versions.
#[derive(Debug)]
pub struct ViewEntry {
    /// The definition currently active (unversioned refs read it).
    pub active: Arc<ViewVersion>,
    /// Saved definitions from the version history, by number (staged `--no-promote`
    /// versions included).
    pub versions: BTreeMap<u32, Arc<ViewVersion>>,
}

impl ViewEntry {
    /// The definition of version `n`: the active one when `n` is the active version
    /// (it carries the latest metadata such as ttl and state), else the saved one.
    pub fn version(&self, n: u32) -> Option<&Arc<ViewVersion>> {
        if n == self.active.version {
            Some(&self.active)
        } else {
            self.versions.get(&n)
        }
    }
}

/// One version of one view, ready to serve.
#[derive(Debug)]
pub struct ViewVersion {
    /// View name.
    pub name: String,
    /// Version number (0 for the first, or for views without versions).
    pub version: u32,
    /// What kind of view.
    pub kind: ViewKind,
    /// `spec.tags` (permissions' `required_tags` match them).
    pub tags: BTreeMap<String, String>,
    /// An on-demand view's source feature views, by name (reading it needs
    /// READ_ONLINE on them too).
    pub sources: Vec<String>,
    /// Join keys in the view's entity order; empty for an entityless view.
    pub join_keys: Vec<JoinKey>,
    /// Values older than this many seconds are OUTSIDE_MAX_AGE.
    pub ttl_seconds: Option<i64>,
    /// `spec.disabled`.
    pub disabled: bool,
    /// `meta.state`.
    pub state: pb::FeatureViewState,
    /// Where the values are stored.
    pub layout: Arc<StorageLayout>,
    /// Why the view cannot be served, if the registry is inconsistent (an entity
    /// that does not exist).
    pub problem: Option<String>,
    /// What online writes to this version need to know.
    pub write: WriteSpec,
}

/// The parts of a view version that online writes (push) use: feature types and the
/// source's column names.
#[derive(Debug, Clone, Default)]
pub struct WriteSpec {
    /// Declared type per feature, aligned with `layout.features`.
    pub feature_types: Vec<ValueType>,
    /// The batch source's event-time column (empty when the view has no batch source).
    pub timestamp_field: String,
    /// The batch source's created-time column, if any.
    pub created_column: Option<String>,
    /// Source column -> feature or join key name (`field_mapping`), applied to pushed
    /// columns as Feast applies it.
    pub field_mapping: Vec<(String, String)>,
    /// Name of the push source feeding the view (`stream_source` of type PUSH_SOURCE).
    pub push_source: Option<String>,
}

impl ViewVersion {
    /// Entityless views key every row by `__dummy_id = ""`.
    pub fn is_entityless(&self) -> bool {
        self.join_keys.is_empty()
    }
}

/// A join key of a view and the type its values are coerced to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinKey {
    /// Join key (request column) name.
    pub name: String,
    /// Type from the view's entity columns, else the entity's.
    pub value_type: ValueType,
}

/// A feature service: projections in serving order.
#[derive(Debug)]
pub struct ServiceDef {
    /// Service name.
    pub name: String,
    /// `spec.tags`.
    pub tags: BTreeMap<String, String>,
    /// Projections in order.
    pub projections: Vec<ProjectionDef>,
}

/// One view as a service uses it.
#[derive(Debug)]
pub struct ProjectionDef {
    /// The real view name.
    pub view: String,
    /// Output name instead of the view name, if set.
    pub alias: Option<String>,
    /// Features, in order.
    pub features: Vec<String>,
    /// View join key -> request column.
    pub join_key_map: BTreeMap<String, String>,
    /// Pinned version, if any.
    pub version_tag: Option<u32>,
}

impl Snapshot {
    /// Builds a snapshot of `settings.project` from a registry. `source` names the
    /// registry in errors. An object belongs to the project its registry says
    /// ([`super::model::Stored::project`]).
    pub fn build(
        registry: &RegistryModel,
        settings: &SnapshotSettings,
        generation: u64,
        source: &str,
    ) -> Result<Self, RegistryError> {
        let project = settings.project.as_str();
        check_project(registry, project, source)?;

        let entities: HashMap<&str, (&str, ValueType)> = registry
            .entities
            .iter()
            .filter(|e| e.project == project)
            .filter_map(|e| e.object.spec.as_ref())
            .map(|s| {
                (
                    s.name.as_str(),
                    (s.join_key.as_str(), value_type(s.value_type)),
                )
            })
            .collect();
        let entity_join_keys = entities
            .values()
            .filter(|(jk, _)| *jk != DUMMY_ENTITY_ID)
            .map(|&(jk, t)| (jk.to_owned(), t))
            .collect();
        let entity_names = entities
            .iter()
            .filter(|(name, (jk, _))| *jk != DUMMY_ENTITY_ID && **name != *jk)
            .map(|(name, (jk, _))| ((*name).to_owned(), (*jk).to_owned()))
            .collect();

        let builder = Builder {
            settings,
            entities: &entities,
        };
        let mut views: HashMap<String, ViewEntry> = HashMap::new();
        // Feast's lookup order: the first kind holding a name wins.
        let defs = of_project(&registry.feature_views, project, |v| {
            Some(ViewDef::from_feature_view(
                v.spec.as_ref()?,
                v.meta.as_ref(),
            ))
        })
        .chain(of_project(&registry.stream_feature_views, project, |v| {
            Some(ViewDef::from_stream_view(v.spec.as_ref()?, v.meta.as_ref()))
        }))
        .chain(of_project(
            &registry.on_demand_feature_views,
            project,
            |v| {
                Some(ViewDef::from_on_demand_view(
                    v.spec.as_ref()?,
                    v.meta.as_ref(),
                ))
            },
        ))
        .chain(of_project(&registry.label_views, project, |v| {
            v.spec.as_ref().map(ViewDef::from_label_view)
        }));
        for def in defs {
            if views.contains_key(def.name) {
                continue;
            }
            let active = Arc::new(builder.version(&def, def.current_version));
            views.insert(
                def.name.to_owned(),
                ViewEntry {
                    active,
                    versions: BTreeMap::new(),
                },
            );
        }

        let records = registry
            .version_history
            .iter()
            .filter(|r| r.project_id == project);
        for record in records {
            let Some(entry) = views.get_mut(&record.feature_view_name) else {
                continue;
            };
            let Ok(number) = u32::try_from(record.version_number) else {
                continue;
            };
            let decoded = decode_record(record);
            match decoded.as_ref().map(RecordProto::def) {
                Ok(Some(def)) => {
                    entry
                        .versions
                        .insert(number, Arc::new(builder.version(&def, number)));
                }
                Ok(None) => tracing::warn!(
                    view = %record.feature_view_name,
                    version = number,
                    "skipping a version record without a spec"
                ),
                Err(e) => tracing::warn!(
                    view = %record.feature_view_name,
                    version = number,
                    error = %e,
                    "skipping a version record that cannot be decoded"
                ),
            }
        }

        let mut push_sources: HashMap<String, Vec<String>> = HashMap::new();
        for (name, entry) in &views {
            if let Some(source) = &entry.active.write.push_source {
                push_sources
                    .entry(source.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
        for names in push_sources.values_mut() {
            names.sort();
        }

        let services = registry
            .feature_services
            .iter()
            .filter(|s| s.project == project)
            .filter_map(|s| s.object.spec.as_ref())
            .map(|s| (s.name.clone(), Arc::new(service_def(s))))
            .collect();

        let (permissions, problems) = Permissions::build(
            registry.permissions.iter().map(|p| p.object.as_slice()),
            project,
        );
        for problem in problems {
            tracing::warn!(source = %source, %problem, "registry permission not usable as written");
        }
        Ok(Self {
            permissions,
            generation,
            settings: settings.clone(),
            version_id: registry.header.version_id.clone(),
            last_updated: registry.header.last_updated,
            loaded_at: SystemTime::now(),
            views,
            services,
            entity_join_keys,
            entity_names,
            push_sources,
        })
    }

    /// The project's permissions.
    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// The views a push source feeds, sorted by name; `None` for an unknown source.
    pub fn push_source_views(&self, source: &str) -> Option<&[String]> {
        self.push_sources.get(source).map(Vec::as_slice)
    }

    /// The view named `name` in this project.
    pub fn view(&self, name: &str) -> Option<&ViewEntry> {
        self.views.get(name)
    }

    /// The feature service named `name` in this project.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceDef>> {
        self.services.get(name)
    }

    /// Type of the join key `name`, if an entity of the project has it.
    pub fn entity_join_key(&self, name: &str) -> Option<ValueType> {
        self.entity_join_keys.get(name).copied()
    }

    /// Join keys of every entity of the project, with their types.
    pub fn entity_join_keys(&self) -> impl Iterator<Item = (&str, ValueType)> {
        self.entity_join_keys.iter().map(|(k, t)| (k.as_str(), *t))
    }

    /// `(entity name, join key)` for entities whose name differs from their join key.
    pub fn entity_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entity_names
            .iter()
            .map(|(n, k)| (n.as_str(), k.as_str()))
    }

    /// Number of views (of every kind) in the project.
    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    /// Number of feature services in the project.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Number of entities in the project (the placeholder entity excluded).
    pub fn entity_count(&self) -> usize {
        self.entity_join_keys.len()
    }

    /// View names, sorted (for listings and error hints).
    pub fn view_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.views.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The view definitions of `project` among `objects`.
fn of_project<'m, T: 'm>(
    objects: &'m [Stored<T>],
    project: &'m str,
    def: impl Fn(&'m T) -> Option<ViewDef<'m>> + 'm,
) -> impl Iterator<Item = ViewDef<'m>> + 'm {
    objects
        .iter()
        .filter(move |s| s.project == project)
        .filter_map(move |s| def(&s.object))
}

fn check_project(
    registry: &RegistryModel,
    project: &str,
    source: &str,
) -> Result<(), RegistryError> {
    let names: Vec<&str> = registry.project_names().collect();
    if names.contains(&project) {
        return Ok(());
    }
    Err(RegistryError::ProjectMissing {
        source_name: source.to_owned(),
        project: project.to_owned(),
        found: if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
    })
}

fn value_type(raw: i32) -> ValueType {
    ValueType::try_from(raw).unwrap_or(ValueType::Invalid)
}

/// The parts of any view kind that serving needs, borrowed from its proto.
struct ViewDef<'a> {
    name: &'a str,
    kind: ViewKind,
    tags: &'a BTreeMap<String, String>,
    /// An on-demand view's source feature views.
    sources: Vec<String>,
    entities: &'a [String],
    features: Vec<String>,
    entity_columns: &'a [pb::FeatureSpecV2],
    feature_types: Vec<ValueType>,
    batch_source: Option<&'a pb::DataSource>,
    stream_source: Option<&'a pb::DataSource>,
    ttl: Option<&'a prost_types::Duration>,
    disabled: bool,
    state: i32,
    current_version: u32,
}

impl<'a> ViewDef<'a> {
    fn from_feature_view(
        spec: &'a pb::FeatureViewSpec,
        meta: Option<&'a pb::FeatureViewMeta>,
    ) -> Self {
        Self {
            name: &spec.name,
            kind: ViewKind::Feature,
            tags: &spec.tags,
            sources: Vec::new(),
            entities: &spec.entities,
            features: spec.features.iter().map(|f| f.name.clone()).collect(),
            entity_columns: &spec.entity_columns,
            feature_types: feature_types(&spec.features),
            batch_source: spec.batch_source.as_ref(),
            stream_source: spec.stream_source.as_ref(),
            ttl: spec.ttl.as_ref(),
            disabled: spec.disabled,
            state: meta.map_or(0, |m| m.state),
            current_version: meta.map_or(0, |m| non_negative(m.current_version_number)),
        }
    }

    fn from_stream_view(
        spec: &'a pb::StreamFeatureViewSpec,
        meta: Option<&'a pb::FeatureViewMeta>,
    ) -> Self {
        Self {
            name: &spec.name,
            kind: ViewKind::Stream,
            tags: &spec.tags,
            sources: Vec::new(),
            entities: &spec.entities,
            features: spec.features.iter().map(|f| f.name.clone()).collect(),
            entity_columns: &spec.entity_columns,
            feature_types: feature_types(&spec.features),
            batch_source: spec.batch_source.as_ref(),
            stream_source: spec.stream_source.as_ref(),
            ttl: spec.ttl.as_ref(),
            disabled: spec.disabled,
            state: meta.map_or(0, |m| m.state),
            current_version: meta.map_or(0, |m| non_negative(m.current_version_number)),
        }
    }

    fn from_on_demand_view(
        spec: &'a pb::OnDemandFeatureViewSpec,
        meta: Option<&'a pb::OnDemandFeatureViewMeta>,
    ) -> Self {
        Self {
            name: &spec.name,
            kind: ViewKind::OnDemand {
                stored: spec.write_to_online_store,
            },
            tags: &spec.tags,
            sources: on_demand_sources(spec),
            entities: &spec.entities,
            features: spec.features.iter().map(|f| f.name.clone()).collect(),
            entity_columns: &spec.entity_columns,
            feature_types: feature_types(&spec.features),
            batch_source: None,
            stream_source: None,
            ttl: None,
            disabled: spec.disabled,
            state: meta.map_or(0, |m| m.state),
            current_version: meta.map_or(0, |m| non_negative(m.current_version_number)),
        }
    }

    fn from_label_view(spec: &'a pb::LabelViewSpec) -> Self {
        Self {
            name: &spec.name,
            kind: ViewKind::Label,
            tags: &spec.tags,
            sources: Vec::new(),
            entities: &spec.entities,
            features: spec.features.iter().map(|f| f.name.clone()).collect(),
            entity_columns: &spec.entity_columns,
            feature_types: feature_types(&spec.features),
            batch_source: None,
            stream_source: spec.source.as_ref(),
            ttl: spec.ttl.as_ref(),
            disabled: false,
            state: 0,
            current_version: 0,
        }
    }
}

/// The feature views an on-demand view reads from (request sources left out).
fn on_demand_sources(spec: &pb::OnDemandFeatureViewSpec) -> Vec<String> {
    let mut names = Vec::new();
    for bytes in spec.sources.values() {
        let Ok(source) = pb::OnDemandSource::decode(bytes.as_slice()) else {
            continue;
        };
        let name = source
            .feature_view_projection
            .map(|p| p.feature_view_name)
            .or_else(|| source.feature_view.and_then(|v| v.spec).map(|s| s.name))
            .filter(|n| !n.is_empty());
        if let Some(name) = name
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

fn feature_types(features: &[pb::FeatureSpecV2]) -> Vec<ValueType> {
    features.iter().map(|f| value_type(f.value_type)).collect()
}

impl WriteSpec {
    fn of(def: &ViewDef<'_>) -> Self {
        let batch = def
            .batch_source
            .or_else(|| def.stream_source.and_then(|s| s.batch_source.as_deref()));
        let push_source = def
            .stream_source
            .filter(|s| s.r#type == pb::data_source::SourceType::PushSource as i32)
            .map(|s| s.name.clone());
        Self {
            feature_types: def.feature_types.clone(),
            timestamp_field: batch.map(|b| b.timestamp_field.clone()).unwrap_or_default(),
            created_column: batch
                .map(|b| b.created_timestamp_column.clone())
                .filter(|c| !c.is_empty()),
            field_mapping: batch
                .map(|b| {
                    let mut m: Vec<_> = b
                        .field_mapping
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    m.sort();
                    m
                })
                .unwrap_or_default(),
            push_source,
        }
    }
}

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

struct Builder<'a> {
    settings: &'a SnapshotSettings,
    entities: &'a HashMap<&'a str, (&'a str, ValueType)>,
}

impl Builder<'_> {
    fn version(&self, def: &ViewDef<'_>, version: u32) -> ViewVersion {
        let mut problem = None;
        let mut join_keys = Vec::with_capacity(def.entities.len());
        let entityless =
            def.entities.first().is_some_and(|e| e == DUMMY_ENTITY_NAME) || def.entities.is_empty();
        if !entityless {
            for entity in def.entities {
                match self.entities.get(entity.as_str()) {
                    Some(&(join_key, entity_type)) => {
                        let column_type = def
                            .entity_columns
                            .iter()
                            .find(|c| c.name == join_key)
                            .map(|c| value_type(c.value_type))
                            .filter(|t| *t != ValueType::Invalid);
                        join_keys.push(JoinKey {
                            name: join_key.to_owned(),
                            value_type: column_type.unwrap_or(entity_type),
                        });
                    }
                    None => {
                        problem = Some(format!(
                            "Entity {entity} does not exist in project {}",
                            self.settings.project
                        ));
                    }
                }
            }
        }
        // With online versioning off, every version reads the legacy unsuffixed table.
        let storage_version = if self.settings.versioning { version } else { 0 };
        let layout = StorageLayout::new(
            &self.settings.project,
            def.name,
            storage_version,
            def.features.clone(),
        );
        ViewVersion {
            name: def.name.to_owned(),
            version,
            kind: def.kind,
            tags: def.tags.clone(),
            sources: def.sources.clone(),
            join_keys,
            ttl_seconds: def.ttl.map(|d| d.seconds).filter(|s| *s > 0),
            disabled: def.disabled,
            state: pb::FeatureViewState::try_from(def.state).unwrap_or_default(),
            layout: Arc::new(layout),
            problem,
            write: WriteSpec::of(def),
        }
    }
}

/// A decoded version record, owning its proto.
enum RecordProto {
    Feature(pb::FeatureView),
    Stream(pb::StreamFeatureView),
    OnDemand(pb::OnDemandFeatureView),
    Label(pb::LabelView),
}

impl RecordProto {
    fn def(&self) -> Option<ViewDef<'_>> {
        Some(match self {
            RecordProto::Feature(v) => {
                ViewDef::from_feature_view(v.spec.as_ref()?, v.meta.as_ref())
            }
            RecordProto::Stream(v) => ViewDef::from_stream_view(v.spec.as_ref()?, v.meta.as_ref()),
            RecordProto::OnDemand(v) => {
                ViewDef::from_on_demand_view(v.spec.as_ref()?, v.meta.as_ref())
            }
            RecordProto::Label(v) => ViewDef::from_label_view(v.spec.as_ref()?),
        })
    }
}

fn decode_record(record: &pb::FeatureViewVersionRecord) -> Result<RecordProto, String> {
    let bytes = record.feature_view_proto.as_slice();
    let decoded = match record.feature_view_type.as_str() {
        "feature_view" | "" => pb::FeatureView::decode(bytes).map(RecordProto::Feature),
        "stream_feature_view" => pb::StreamFeatureView::decode(bytes).map(RecordProto::Stream),
        "on_demand_feature_view" => {
            pb::OnDemandFeatureView::decode(bytes).map(RecordProto::OnDemand)
        }
        "label_view" => pb::LabelView::decode(bytes).map(RecordProto::Label),
        other => return Err(format!("unknown feature_view_type '{other}'")),
    };
    decoded.map_err(|e| e.to_string())
}

fn service_def(spec: &pb::FeatureServiceSpec) -> ServiceDef {
    ServiceDef {
        name: spec.name.clone(),
        tags: spec.tags.clone(),
        projections: spec
            .features
            .iter()
            .map(|p| ProjectionDef {
                view: p.feature_view_name.clone(),
                alias: (!p.feature_view_name_alias.is_empty())
                    .then(|| p.feature_view_name_alias.clone()),
                features: p.feature_columns.iter().map(|f| f.name.clone()).collect(),
                join_key_map: p.join_key_map.clone(),
                version_tag: p.version_tag.map(non_negative),
            })
            .collect(),
    }
}
