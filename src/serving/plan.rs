//! Resolution plans: what a feature list (or feature service) means against one
//! registry snapshot.
//!
//! A plan is everything about a request that does not depend on its entity values:
//! which view versions and tables to read, which features of each, the output column
//! names, the join keys to encode and their types. It is built once per distinct
//! (features, full_feature_names) and snapshot generation, then cached, so the
//! steady-state request path parses no ref and formats no name.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;

use super::Error;
use crate::error::{clipped, clipped_list};
use crate::permissions::{Action, Covering, Resource, ResourceKind};
use crate::proto::feast::core::FeatureViewState;
use crate::proto::feast::serving::FeatureViewMetadata;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::refs::{self, DisplayName, VersionSel};
use crate::registry::snapshot::{DUMMY_ENTITY_ID, ProjectionDef};
use crate::registry::{Snapshot, ViewKind, ViewVersion};
use crate::store::{StorageLayout, ViewRead, key};

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Feature refs, in output order.
    Refs(&'a [String]),
    /// A feature service by name.
    Service(&'a str),
}

/// A resolved request shape. See the module docs.
#[derive(Debug)]
pub struct Plan {
    generation: u64,
    identity: Identity,
    /// Output names of the feature columns, in order.
    pub feature_names: Vec<String>,
    /// Where each feature column comes from.
    pub columns: Vec<ColumnSource>,
    /// One read per distinct (table, entity key set).
    pub reads: Vec<ReadSpec>,
    /// Distinct sets of join keys the reads need.
    pub key_sets: Vec<KeySetSpec>,
    /// `(name, version)` per distinct view read, for version metadata.
    pub metadata: Vec<FeatureViewMetadata>,
    /// `feature_names` encoded as `FeatureList.val` entries (field 1), ready to append.
    pub encoded_feature_names: Bytes,
    /// `metadata` encoded as `GetOnlineFeaturesResponseMetadata.feature_view_metadata`
    /// entries (field 2), ready to append.
    pub encoded_view_metadata: Bytes,
    /// What a caller must be allowed to READ_ONLINE: the service, or each view read.
    pub access: Vec<Covering>,
    /// Request columns echoed as entity columns: every join key of the project,
    /// aliased join-key columns of this plan, and entity names (Feast's deprecated
    /// spelling, echoed under the join key's name).
    pub entity_columns: HashMap<String, EntityColumn, foldhash::fast::RandomState>,
}

/// How a request column is echoed in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityColumn {
    /// Output column name.
    pub output: Arc<str>,
    /// Type the values are coerced to.
    pub value_type: ValueType,
}

#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Refs(Vec<String>, bool),
    Service(String, bool),
}

impl Identity {
    fn matches(&self, selection: Selection<'_>, full_names: bool) -> bool {
        match (self, selection) {
            (Identity::Refs(refs, f), Selection::Refs(r)) => {
                *f == full_names && refs.as_slice() == r
            }
            (Identity::Service(name, f), Selection::Service(s)) => *f == full_names && name == s,
            _ => false,
        }
    }
}

/// A feature column's source: slot `slot` of read `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSource {
    /// Index into `Plan::reads`.
    pub read: usize,
    /// Index into that read's slots.
    pub slot: usize,
}

/// One table read.
#[derive(Debug)]
pub struct ReadSpec {
    /// The table.
    pub layout: Arc<StorageLayout>,
    /// Features to read, as indexes into `layout.features`.
    pub slots: Arc<[u32]>,
    /// Wanted names and their positions in `slots`, by name (`ViewRead::by_name`).
    pub by_name: Arc<[(Box<[u8]>, u32)]>,
    /// Index into `Plan::key_sets`.
    pub key_set: usize,
    /// ttl of the view version read.
    pub ttl_seconds: Option<i64>,
}

/// How to build entity keys for a set of join keys.
#[derive(Debug)]
pub struct KeySetSpec {
    /// Columns in key order (sorted by join key, as Feast serializes them).
    pub columns: Vec<KeyColumn>,
    /// Key bytes that depend only on the join-key names.
    pub prefix: Vec<u8>,
    /// An entityless view: every row has the key `__dummy_id = ""`.
    pub entityless: bool,
    /// A view that needs this key set, for error messages.
    pub view: String,
}

/// One join key of a key set.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// Request column holding the values (the join key, or its alias).
    pub request_column: String,
    /// Column used when `request_column` is absent: the entity's name.
    pub fallback_column: Option<String>,
    /// The view's join key.
    pub join_key: String,
    /// Type values are coerced to.
    pub value_type: ValueType,
}

/// Plans by snapshot generation and request shape.
#[derive(Debug, Default)]
pub struct PlanCache {
    plans: DashMap<(u64, u64), Arc<Plan>>,
    generation: AtomicU64,
}

/// Distinct request shapes kept per generation; a client with unbounded shapes
/// gets plans built per request instead of unbounded memory.
const PLAN_CACHE_CAPACITY: usize = 4096;

impl PlanCache {
    /// The plan for this request shape, built and cached on first use.
    pub fn get(
        &self,
        snapshot: &Snapshot,
        selection: Selection<'_>,
        full_names: bool,
    ) -> Result<Arc<Plan>, Error> {
        let generation = snapshot.generation;
        let hash = shape_hash(selection, full_names);
        if let Some(plan) = self.plans.get(&(generation, hash))
            && plan.identity.matches(selection, full_names)
        {
            return Ok(plan.clone());
        }
        let plan = Arc::new(build(snapshot, selection, full_names)?);
        // Drop plans of older snapshots once a newer one is in use.
        if self.generation.fetch_max(generation, Ordering::Relaxed) < generation {
            self.plans.retain(|(g, _), _| *g >= generation);
        }
        if self.plans.len() < PLAN_CACHE_CAPACITY {
            self.plans.insert((generation, hash), plan.clone());
        }
        Ok(plan)
    }

    /// Number of cached plans.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// True when no plan is cached.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }
}

fn shape_hash(selection: Selection<'_>, full_names: bool) -> u64 {
    // Not a DoS surface: a collision only costs a comparison with the cached plan.
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    full_names.hash(&mut h);
    match selection {
        Selection::Refs(refs) => {
            0u8.hash(&mut h);
            refs.hash(&mut h);
        }
        Selection::Service(name) => {
            1u8.hash(&mut h);
            name.hash(&mut h);
        }
    }
    h.finish()
}

/// One resolved (view version, alias, join-key map): Feast's "projection".
struct Group<'s> {
    view: &'s Arc<ViewVersion>,
    /// Alias or view name.
    name: &'s str,
    /// `Some(n)` when the ref or projection named a version: rendered `@vN`.
    display_version: Option<u32>,
    join_key_map: Option<&'s std::collections::BTreeMap<String, String>>,
}

impl Group<'_> {
    fn display(&self) -> DisplayName<'_> {
        DisplayName {
            name: self.name,
            version: self.display_version,
        }
    }
}

/// Builds a plan. Errors come in Feast's order: ref syntax, then views, then name
/// collisions, then features.
pub fn build(
    snapshot: &Snapshot,
    selection: Selection<'_>,
    full_names: bool,
) -> Result<Plan, Error> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    // (group, feature) in output order
    let mut items: Vec<(usize, &str)> = Vec::new();

    match selection {
        Selection::Refs(list) => {
            if list.is_empty() {
                return Err(Error::NoFeatures);
            }
            let parsed = list
                .iter()
                .map(|r| refs::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let mut by_key: HashMap<(&str, Option<u32>), usize> = HashMap::new();
            for r in &parsed {
                let display_version = match r.version {
                    VersionSel::Exact(n) => Some(n),
                    VersionSel::Unqualified | VersionSel::Latest => None,
                };
                let g = match by_key.get(&(r.view, display_version)) {
                    Some(&g) => g,
                    None => {
                        let view = resolve_view(snapshot, r.view, display_version)?;
                        groups.push(Group {
                            view,
                            name: r.view,
                            display_version,
                            join_key_map: None,
                        });
                        by_key.insert((r.view, display_version), groups.len() - 1);
                        groups.len() - 1
                    }
                };
                items.push((g, r.feature));
            }
        }
        Selection::Service(name) => {
            let service = snapshot
                .service(name)
                .ok_or_else(|| Error::ServiceNotFound {
                    service: clipped(name),
                    project: snapshot.settings.project.clone(),
                })?;
            for projection in &service.projections {
                let g = groups.len();
                groups.push(resolve_projection(snapshot, projection)?);
                items.extend(projection.features.iter().map(|f| (g, f.as_str())));
            }
            if items.is_empty() {
                return Err(Error::NoFeatures);
            }
        }
    }

    let feature_names: Vec<String> = items
        .iter()
        .map(|&(g, feature)| {
            if full_names {
                format!("{}__{feature}", groups[g].display())
            } else {
                feature.to_owned()
            }
        })
        .collect();
    check_collisions(&feature_names, full_names)?;

    // Resolve every feature before building anything else.
    let mut layout_slots = Vec::with_capacity(items.len());
    for &(g, feature) in &items {
        let group = &groups[g];
        let slot = group
            .view
            .layout
            .feature_index
            .get(feature)
            .copied()
            .ok_or_else(|| Error::FeatureNotFound {
                feature: clipped(feature),
                projection: group.display().to_string(),
            })?;
        layout_slots.push(slot);
    }

    let version = snapshot.settings.key_serialization;
    let entity_by_join_key: HashMap<&str, &str> =
        snapshot.entity_names().map(|(n, k)| (k, n)).collect();
    let mut key_sets: Vec<KeySetSpec> = Vec::new();
    let mut reads: Vec<(ReadSpec, Vec<u32>)> = Vec::new();
    let mut group_read = Vec::with_capacity(groups.len());
    for group in &groups {
        let key_set = key_set_for(group, &mut key_sets, &entity_by_join_key, version);
        let read = reads
            .iter()
            .position(|(r, _)| r.key_set == key_set && Arc::ptr_eq(&r.layout, &group.view.layout))
            .unwrap_or_else(|| {
                reads.push((
                    ReadSpec {
                        layout: group.view.layout.clone(),
                        slots: Arc::from(Vec::new()),
                        by_name: Arc::from(Vec::new()),
                        key_set,
                        ttl_seconds: group.view.ttl_seconds,
                    },
                    Vec::new(),
                ));
                reads.len() - 1
            });
        group_read.push(read);
    }
    let mut columns = Vec::with_capacity(items.len());
    for (&(g, _), &layout_slot) in items.iter().zip(&layout_slots) {
        let read = group_read[g];
        let slots = &mut reads[read].1;
        let slot = slots
            .iter()
            .position(|&s| s == layout_slot)
            .unwrap_or_else(|| {
                slots.push(layout_slot);
                slots.len() - 1
            });
        columns.push(ColumnSource { read, slot });
    }
    let reads = reads
        .into_iter()
        .map(|(mut spec, slots)| {
            spec.by_name = ViewRead::by_name(&spec.layout, &slots);
            spec.slots = Arc::from(slots);
            spec
        })
        .collect();

    let mut metadata: Vec<FeatureViewMetadata> = Vec::new();
    for group in &groups {
        let version = i32::try_from(group.view.version).unwrap_or(i32::MAX);
        if !metadata
            .iter()
            .any(|m| m.name == group.name && m.version == version)
        {
            metadata.push(FeatureViewMetadata {
                name: group.name.to_owned(),
                version,
            });
        }
    }

    let mut entity_columns: HashMap<String, EntityColumn, foldhash::fast::RandomState> = snapshot
        .entity_join_keys()
        .map(|(k, t)| {
            let column = EntityColumn {
                output: Arc::from(k),
                value_type: t,
            };
            (k.to_owned(), column)
        })
        .collect();
    for (name, join_key) in snapshot.entity_names() {
        if let Some(t) = snapshot.entity_join_key(join_key)
            && !entity_columns.contains_key(name)
        {
            let column = EntityColumn {
                output: Arc::from(join_key),
                value_type: t,
            };
            entity_columns.insert(name.to_owned(), column);
        }
    }
    for set in &key_sets {
        for c in &set.columns {
            let output = EntityColumn {
                output: Arc::from(c.request_column.as_str()),
                value_type: c.value_type,
            };
            if let Some(fallback) = &c.fallback_column {
                entity_columns.insert(fallback.clone(), output.clone());
            }
            entity_columns.insert(c.request_column.clone(), output);
        }
    }

    let permissions = snapshot.permissions();
    let access = match selection {
        Selection::Service(name) => snapshot
            .service(name)
            .map(|s| {
                vec![permissions.covering(
                    Resource {
                        kind: ResourceKind::FeatureService,
                        name: &s.name,
                        tags: &s.tags,
                    },
                    Action::ReadOnline,
                )]
            })
            .unwrap_or_default(),
        Selection::Refs(_) => {
            // As Feast: the feature views read, each on-demand view's source views
            // among them, then the on-demand views.
            let mut views: Vec<&ViewVersion> = Vec::new();
            let mut on_demand: Vec<&ViewVersion> = Vec::new();
            for group in &groups {
                let view = group.view.as_ref();
                if matches!(view.kind, ViewKind::OnDemand { .. }) {
                    if !on_demand.iter().any(|v| v.name == view.name) {
                        on_demand.push(view);
                    }
                    for source in &view.sources {
                        if let Some(entry) = snapshot.view(source)
                            && !views.iter().any(|v| v.name == *source)
                        {
                            views.push(&entry.active);
                        }
                    }
                } else if !views.iter().any(|v| v.name == view.name) {
                    views.push(view);
                }
            }
            views
                .into_iter()
                .chain(on_demand)
                .map(|view| permissions.covering(Resource::view(view), Action::ReadOnline))
                .collect()
        }
    };

    let mut encoded_feature_names = Vec::new();
    for name in &feature_names {
        prost::encoding::string::encode(1, name, &mut encoded_feature_names);
    }
    let mut encoded_view_metadata = Vec::new();
    for m in &metadata {
        prost::encoding::message::encode(2, m, &mut encoded_view_metadata);
    }

    Ok(Plan {
        generation: snapshot.generation,
        encoded_feature_names: Bytes::from(encoded_feature_names),
        encoded_view_metadata: Bytes::from(encoded_view_metadata),
        identity: match selection {
            Selection::Refs(r) => Identity::Refs(r.to_vec(), full_names),
            Selection::Service(s) => Identity::Service(s.to_owned(), full_names),
        },
        feature_names,
        columns,
        reads,
        key_sets,
        metadata,
        access,
        entity_columns,
    })
}

impl Plan {
    /// Generation of the snapshot this plan was built against.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

fn resolve_view<'s>(
    snapshot: &'s Snapshot,
    name: &str,
    version: Option<u32>,
) -> Result<&'s Arc<ViewVersion>, Error> {
    let project = &snapshot.settings.project;
    let entry = snapshot.view(name).ok_or_else(|| Error::ViewNotFound {
        view: clipped(name),
        project: project.clone(),
    })?;
    let view = match version {
        None => &entry.active,
        Some(n) => {
            if !snapshot.settings.versioning {
                return Err(Error::VersioningDisabled {
                    view: name.to_owned(),
                    version: n,
                });
            }
            entry.version(n).ok_or_else(|| Error::VersionNotFound {
                view: name.to_owned(),
                version: n,
                project: project.clone(),
            })?
        }
    };
    check_servable(view, snapshot.settings.serve_while_materializing)?;
    Ok(view)
}

fn resolve_projection<'s>(
    snapshot: &'s Snapshot,
    p: &'s ProjectionDef,
) -> Result<Group<'s>, Error> {
    // Only a pinned projection reads a fixed version; the others read the active one
    // (Feast 0.67 reads v0 for them: its projection copy loses the version).
    let view = resolve_view(snapshot, &p.view, p.version_tag)?;
    Ok(Group {
        view,
        name: p.alias.as_deref().unwrap_or(&p.view),
        display_version: p.version_tag,
        join_key_map: Some(&p.join_key_map),
    })
}

fn check_servable(view: &ViewVersion, serve_while_materializing: bool) -> Result<(), Error> {
    if let Some(problem) = &view.problem {
        return Err(Error::ViewBroken {
            view: view.name.clone(),
            problem: problem.clone(),
        });
    }
    if view.disabled {
        return Err(Error::ViewDisabled {
            view: view.name.clone(),
        });
    }
    let servable = match view.state {
        FeatureViewState::StateUnspecified | FeatureViewState::AvailableOnline => true,
        FeatureViewState::Materializing => serve_while_materializing,
        FeatureViewState::Created | FeatureViewState::Generated => false,
    };
    if !servable {
        return Err(Error::ViewNotServable {
            view: view.name.clone(),
            state: view.state.as_str_name().to_owned(),
        });
    }
    if view.kind == (ViewKind::OnDemand { stored: false }) {
        return Err(Error::OnDemandTransform {
            view: view.name.clone(),
        });
    }
    Ok(())
}

fn check_collisions(names: &[String], full_names: bool) -> Result<(), Error> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for n in names {
        *seen.entry(n.as_str()).or_default() += 1;
    }
    if seen.values().all(|&c| c == 1) {
        return Ok(());
    }
    let mut dup: Vec<&str> = Vec::new();
    for n in names {
        if seen.get(n.as_str()).is_some_and(|&c| c > 1) && !dup.contains(&n.as_str()) {
            dup.push(n);
        }
    }
    Err(Error::NameCollision {
        names: clipped_list(dup),
        full_feature_names: full_names,
    })
}

fn key_set_for(
    group: &Group<'_>,
    key_sets: &mut Vec<KeySetSpec>,
    entity_by_join_key: &HashMap<&str, &str>,
    version: crate::config::KeySerialization,
) -> usize {
    let view = group.view;
    if view.is_entityless() {
        if let Some(i) = key_sets.iter().position(|s| s.entityless) {
            return i;
        }
        key_sets.push(KeySetSpec {
            columns: Vec::new(),
            prefix: key::key_prefix(&[DUMMY_ENTITY_ID], version),
            entityless: true,
            view: view.name.clone(),
        });
        return key_sets.len() - 1;
    }
    let mut columns: Vec<KeyColumn> = view
        .join_keys
        .iter()
        .map(|jk| {
            let alias = group.join_key_map.and_then(|m| m.get(&jk.name));
            KeyColumn {
                request_column: alias.cloned().unwrap_or_else(|| jk.name.clone()),
                fallback_column: match alias {
                    Some(_) => None,
                    None => entity_by_join_key
                        .get(jk.name.as_str())
                        .map(|n| (*n).to_owned()),
                },
                join_key: jk.name.clone(),
                value_type: jk.value_type,
            }
        })
        .collect();
    // Feast serializes keys sorted by join-key name.
    columns.sort_by(|a, b| a.join_key.cmp(&b.join_key));
    if let Some(i) = key_sets
        .iter()
        .position(|s| !s.entityless && s.columns == columns)
    {
        return i;
    }
    let names: Vec<&str> = columns.iter().map(|c| c.join_key.as_str()).collect();
    key_sets.push(KeySetSpec {
        prefix: key::key_prefix(&names, version),
        entityless: false,
        view: view.name.clone(),
        columns,
    });
    key_sets.len() - 1
}
