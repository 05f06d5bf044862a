//! Registry definitions as a team writes them: YAML files of entities, sources,
//! feature views and feature services (`tern plan|apply -f PATH`).
//!
//! Owns: reading one or more definition files into [`Definitions`] with every
//! object's origin (file and line), checking them on their own (types, names,
//! references between objects) and reporting every error of every file at once
//! ([`DefinitionErrors`]); and the reverse, writing a registry's project back as
//! definition files ([`export`]). Does not own: comparing definitions with a registry
//! or versioning (`plan`), nor writing a registry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::proto::feast::types::value_type::Enum as ValueType;

pub mod export;
mod parse;

/// The tag Tern stores `prevent_destroy: true` as, on views and services, so Feast
/// clients keep it (Feast has no such field).
pub const PREVENT_DESTROY_TAG: &str = "feast.dev/prevent-destroy";

/// Where an object (or one of its fields) was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The definition file, as given on the command line (or found in a folder).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Every object the definition files declare, checked on their own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// `project:` when a file gives it (all files that give it agree), with where.
    pub project: Option<(String, Origin)>,
    /// Entities, in file order.
    pub entities: Vec<EntityDef>,
    /// File sources.
    pub sources: Vec<SourceDef>,
    /// Push sources (`type: push`), each over a file source.
    pub push_sources: Vec<PushSourceDef>,
    /// Feature views.
    pub feature_views: Vec<ViewDef>,
    /// Feature services.
    pub feature_services: Vec<ServiceDef>,
    /// Permissions; `None` when no file has a `permissions:` key, and then `tern apply`
    /// leaves the registry's permissions as they are (they may be managed elsewhere).
    pub permissions: Option<Vec<PermissionDef>>,
}

/// A Feast permission: who may do what to which registry objects.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// Resource types covered (empty: all), as Feast's `PermissionSpec.Type`.
    pub types: Vec<crate::proto::feast::core::permission_spec::Type>,
    /// Whole-name regular expressions (empty: every name).
    pub name_patterns: Vec<String>,
    /// Tags a resource must carry.
    pub required_tags: BTreeMap<String, String>,
    /// Actions covered.
    pub actions: Vec<crate::proto::feast::core::permission_spec::AuthzedAction>,
    /// Who is let in.
    pub policy: PolicyDef,
    /// Tags of the permission itself.
    pub tags: BTreeMap<String, String>,
}

/// A permission's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDef {
    /// `roles: [...]`: callers holding any of them.
    Roles(Vec<String>),
    /// `groups: [...]`.
    Groups(Vec<String>),
    /// `namespaces: [...]`.
    Namespaces(Vec<String>),
    /// `groups` and `namespaces` together: callers in any of either.
    GroupsOrNamespaces(Vec<String>, Vec<String>),
}

/// An entity.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// The one join key (`join_keys: [k]` or `join_key: k`).
    pub join_key: String,
    /// `value_type` (Feast's enum names: INT64, STRING, ...).
    pub value_type: ValueType,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A push source: where online writes (Feast's `Push`) address the views it feeds. A
/// view whose `source` names it reads its batch source for materialization.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSourceDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// The file source behind it (`batch_source`).
    pub batch_source: String,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A file data source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// `path`, as the registry stores it: relative to the repo folder (the folder of
    /// `feature_store.yaml`, which Feast resolves it against) when the file lies
    /// under it, else absolute. Written in the definitions relative to the
    /// definition file.
    pub path: String,
    /// `timestamp_field`.
    pub timestamp_field: String,
    /// `created_timestamp_column` (empty when not given).
    pub created_timestamp_column: String,
    /// `field_mapping`: column in the file → feature or key name.
    pub field_mapping: BTreeMap<String, String>,
    /// `date_partition_column` (empty when not given).
    pub date_partition_column: String,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A feature's or an entity column's name and type.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// Type (`Float32` → FLOAT, `Array(Float64)` → DOUBLE_LIST, ...).
    pub dtype: ValueType,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// `version:` of a view: follow the newest definition, or pin one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionPin {
    /// `latest` (or absent, or empty): the definition given is the one to serve.
    #[default]
    Latest,
    /// `vN` / `versionN` (any case): serve version N.
    Pinned(u32),
}

/// A feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// Entity names, in order.
    pub entities: Vec<String>,
    /// Name of its data source (one of [`Definitions::sources`]).
    pub source: String,
    /// `ttl` in seconds (0: no limit).
    pub ttl_seconds: i64,
    /// `online` (default true).
    pub online: bool,
    /// `offline` (default false).
    pub offline: bool,
    /// `prevent_destroy` (default false).
    pub prevent_destroy: bool,
    /// `version`.
    pub version: VersionPin,
    /// `version` as written (Feast stores the user's spelling); "latest" when absent.
    pub version_text: String,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Tags, without the prevent-destroy tag (that is `prevent_destroy`).
    pub tags: BTreeMap<String, String>,
    /// `schema`: the features, in order. Entity join keys listed in the schema are
    /// taken out into `entity_columns` (as Feast does).
    pub features: Vec<FieldDef>,
    /// Entity columns: each entity's join key with its type (from the schema when
    /// listed there, else from the entity's `value_type`), in entity order.
    pub entity_columns: Vec<FieldDef>,
}

/// One entry of a feature service's `features`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionDef {
    /// Where it is declared.
    pub origin: Origin,
    /// The view.
    pub view: String,
    /// `alias` (empty when not given).
    pub alias: String,
    /// `version: vN`: read that version (`version_tag`); `None` reads the active one.
    pub version: Option<u32>,
    /// The features, in order; `None` for every feature of the view (`- view_name`).
    pub features: Option<Vec<String>>,
    /// `join_key_map`: the view's join key → the request column to read it from.
    pub join_key_map: BTreeMap<String, String>,
}

/// A feature service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    /// Where it is declared.
    pub origin: Origin,
    /// Name.
    pub name: String,
    /// `prevent_destroy` (default false).
    pub prevent_destroy: bool,
    /// What it returns.
    pub features: Vec<ProjectionDef>,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Tags, without the prevent-destroy tag.
    pub tags: BTreeMap<String, String>,
}

/// One problem in the definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// Where (file and line; line 0 when the file as a whole is at fault).
    pub origin: Origin,
    /// The path of the field, e.g. `feature_views[driver_stats].schema[2].dtype`
    /// (empty for the file as a whole).
    pub field: String,
    /// What is wrong and, where it helps, what was expected.
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.origin.line == 0 {
            write!(f, "{}: ", self.origin.file.display())?;
        } else {
            write!(f, "{}: ", self.origin)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in the definitions, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} error{} in the definitions:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl DefinitionErrors {
    /// Always a caller's mistake.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BadRequest
    }
}

/// Reads definition files: each path a `.yaml`/`.yml` file or a folder whose
/// `*.yaml`/`*.yml` files are read in name order (not recursively). `repo_dir` is the
/// folder of `feature_store.yaml`: source paths are stored relative to it.
pub fn load(paths: &[PathBuf], repo_dir: &Path) -> Result<Definitions, DefinitionErrors> {
    parse::load(paths, repo_dir)
}

/// Parses a pin as Feast does: `latest` (any case, or empty), `vN` or `versionN`.
pub fn parse_version_pin(text: &str) -> Result<VersionPin, String> {
    parse::version_pin(text)
}

/// The item type of a list type (`DOUBLE_LIST` → `DOUBLE`); `None` for scalars.
pub fn list_item_type(t: ValueType) -> Option<ValueType> {
    parse::list_item(t)
}
