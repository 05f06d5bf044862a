//! The registry as data: everything a Feast registry holds, decoded, with nothing
//! dropped, whichever source it was read from.
//!
//! Owns: [`RegistryModel`], the one shape that a file registry (`registry.db`) and a
//! SQL registry (one table per object kind) both read into; which project every object
//! belongs to ([`Stored::project`]: the object's `spec.project` in a file, the
//! `project_id` column in SQL, where Feast's materialization leaves `spec.project`
//! empty); and the exact conversion back to a file registry. The serving snapshot is
//! built from it, and the write-side commands diff against it and write it back, so
//! what Tern does not model (permissions, saved datasets, infra, other source kinds)
//! is carried as opaque bytes, byte for byte.

use crate::proto::feast::core as pb;

/// An object Tern does not interpret, as the registry stores it (a serialized proto).
pub type Opaque = Vec<u8>;

/// One object and where it lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    /// The project it belongs to. Empty for opaque objects of a file registry (the
    /// project is inside the bytes Tern does not decode).
    pub project: String,
    /// Its name (empty where only the opaque bytes say).
    pub name: String,
    /// The SQL row's other columns; `None` for a file registry.
    pub row: Option<RowColumns>,
    /// The object.
    pub object: T,
}

/// The columns of a SQL registry row besides name, project and proto, kept so a
/// rewrite of the row loses none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowColumns {
    /// `last_updated_timestamp`, epoch seconds.
    pub last_updated: i64,
    /// `user_metadata` (view tables), NULL as `None`.
    pub user_metadata: Option<Vec<u8>>,
    /// `materialized_intervals` (`feature_views`), NULL as `None`.
    pub materialized_intervals: Option<Vec<u8>>,
}

/// One `feast_metadata` row of a SQL registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRow {
    /// `project_id`.
    pub project: String,
    /// `metadata_key` (`project_uuid`, `last_updated_timestamp`, ...).
    pub key: String,
    /// `metadata_value`.
    pub value: String,
    /// `last_updated_timestamp`, epoch seconds.
    pub last_updated: i64,
}

/// The registry-wide fields of a file registry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// `registry_schema_version`.
    pub registry_schema_version: String,
    /// `version_id`: a new uuid on every write; reloaders compare it.
    pub version_id: String,
    /// `last_updated`.
    pub last_updated: Option<prost_types::Timestamp>,
    /// `project_metadata` (deprecated by Feast in favour of `projects`).
    pub project_metadata: Vec<pb::ProjectMetadata>,
    /// `feature_tables` (legacy), opaque.
    pub feature_tables: Vec<Opaque>,
    /// Whether field 18 (the version history) was present, even if empty.
    pub history_present: bool,
}

/// Everything a registry holds. See the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryModel {
    /// Registry-wide fields (a SQL registry has none of its own; see `metadata`).
    pub header: Header,
    /// Projects.
    pub projects: Vec<Stored<pb::Project>>,
    /// Entities.
    pub entities: Vec<Stored<pb::Entity>>,
    /// Data sources: file sources typed, other kinds' options opaque.
    pub data_sources: Vec<Stored<pb::DataSource>>,
    /// Feature views (batch views too).
    pub feature_views: Vec<Stored<pb::FeatureView>>,
    /// Stream feature views.
    pub stream_feature_views: Vec<Stored<pb::StreamFeatureView>>,
    /// On-demand feature views.
    pub on_demand_feature_views: Vec<Stored<pb::OnDemandFeatureView>>,
    /// Label views.
    pub label_views: Vec<Stored<pb::LabelView>>,
    /// Feature services.
    pub feature_services: Vec<Stored<pb::FeatureService>>,
    /// Saved datasets, opaque.
    pub saved_datasets: Vec<Stored<Opaque>>,
    /// Validation references, opaque.
    pub validation_references: Vec<Stored<Opaque>>,
    /// Permissions, opaque.
    pub permissions: Vec<Stored<Opaque>>,
    /// Managed infrastructure (`feast.core.Infra`), opaque: at most one in a file
    /// registry, one row per project in SQL.
    pub infra: Vec<Stored<Opaque>>,
    /// Every saved version of every view (each record names its project).
    pub version_history: Vec<pb::FeatureViewVersionRecord>,
    /// `feast_metadata` rows of a SQL registry.
    pub metadata: Vec<MetadataRow>,
}

/// Name and project of a typed registry object, from its spec.
pub trait RegistryObject {
    /// The object's name.
    fn name(&self) -> &str;
    /// `spec.project` (a project's own name, for a project).
    fn spec_project(&self) -> &str;
}

macro_rules! spec_object {
    ($($ty:ty),*) => {$(
        impl RegistryObject for $ty {
            fn name(&self) -> &str {
                self.spec.as_ref().map_or("", |s| s.name.as_str())
            }
            fn spec_project(&self) -> &str {
                self.spec.as_ref().map_or("", |s| s.project.as_str())
            }
        }
    )*};
}
spec_object!(
    pb::Entity,
    pb::FeatureView,
    pb::StreamFeatureView,
    pb::OnDemandFeatureView,
    pb::LabelView,
    pb::FeatureService
);

impl RegistryObject for pb::Project {
    fn name(&self) -> &str {
        self.spec.as_ref().map_or("", |s| s.name.as_str())
    }
    fn spec_project(&self) -> &str {
        self.name()
    }
}

impl RegistryObject for pb::DataSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn spec_project(&self) -> &str {
        &self.project
    }
}

impl<T: RegistryObject> Stored<T> {
    /// An object of a file registry: its project and name from its spec.
    pub fn from_spec(object: T) -> Self {
        Self {
            project: object.spec_project().to_owned(),
            name: object.name().to_owned(),
            row: None,
            object,
        }
    }
}

impl Stored<Opaque> {
    fn opaque(bytes: Opaque) -> Self {
        Self {
            project: String::new(),
            name: String::new(),
            row: None,
            object: bytes,
        }
    }
}

fn typed<T: RegistryObject>(objects: Vec<T>) -> Vec<Stored<T>> {
    objects.into_iter().map(Stored::from_spec).collect()
}

fn opaque(objects: Vec<Opaque>) -> Vec<Stored<Opaque>> {
    objects.into_iter().map(Stored::opaque).collect()
}

fn objects<T>(stored: &[Stored<T>]) -> Vec<T>
where
    T: Clone,
{
    stored.iter().map(|s| s.object.clone()).collect()
}

impl RegistryModel {
    /// The model of a decoded file registry. [`to_file`](Self::to_file) gives back
    /// the same message.
    pub fn from_file(registry: pb::Registry) -> Self {
        let pb::Registry {
            entities,
            feature_tables,
            feature_views,
            data_sources,
            on_demand_feature_views,
            stream_feature_views,
            feature_services,
            saved_datasets,
            validation_references,
            infra,
            project_metadata,
            registry_schema_version,
            version_id,
            last_updated,
            permissions,
            projects,
            feature_view_version_history,
            label_views,
        } = registry;
        Self {
            header: Header {
                registry_schema_version,
                version_id,
                last_updated,
                project_metadata,
                feature_tables,
                history_present: feature_view_version_history.is_some(),
            },
            projects: typed(projects),
            entities: typed(entities),
            data_sources: typed(data_sources),
            feature_views: typed(feature_views),
            stream_feature_views: typed(stream_feature_views),
            on_demand_feature_views: typed(on_demand_feature_views),
            label_views: typed(label_views),
            feature_services: typed(feature_services),
            saved_datasets: opaque(saved_datasets),
            validation_references: opaque(validation_references),
            permissions: opaque(permissions),
            infra: opaque(infra.into_iter().collect()),
            version_history: feature_view_version_history
                .map(|h| h.records)
                .unwrap_or_default(),
            metadata: Vec::new(),
        }
    }

    /// The registry as a file registry stores it. Objects keep their order, so a
    /// model read from a file gives back the message it was read from.
    pub fn to_file(&self) -> pb::Registry {
        let h = &self.header;
        pb::Registry {
            entities: objects(&self.entities),
            feature_tables: h.feature_tables.clone(),
            feature_views: objects(&self.feature_views),
            data_sources: objects(&self.data_sources),
            on_demand_feature_views: objects(&self.on_demand_feature_views),
            stream_feature_views: objects(&self.stream_feature_views),
            feature_services: objects(&self.feature_services),
            saved_datasets: objects(&self.saved_datasets),
            validation_references: objects(&self.validation_references),
            infra: self.infra.first().map(|i| i.object.clone()),
            project_metadata: h.project_metadata.clone(),
            registry_schema_version: h.registry_schema_version.clone(),
            version_id: h.version_id.clone(),
            last_updated: h.last_updated,
            permissions: objects(&self.permissions),
            projects: objects(&self.projects),
            feature_view_version_history: (h.history_present || !self.version_history.is_empty())
                .then(|| pb::FeatureViewVersionHistory {
                    records: self.version_history.clone(),
                }),
            label_views: objects(&self.label_views),
        }
    }

    /// Names of the projects the registry holds.
    pub fn project_names(&self) -> impl Iterator<Item = &str> {
        self.projects.iter().map(|p| p.name.as_str())
    }
}
