//! Feast's registry: loading it, and the snapshot requests are served from.
//!
//! Owns: reading a registry source ([`mod@file`]), turning it into an immutable indexed
//! [`Snapshot`], and the handle that publishes snapshots atomically ([`Registry`]).
//! Does not own: resolving a request against a snapshot (`serving::plan`).

pub mod file;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::{RegistrySource, RepoConfig};
use crate::metrics as m;
use crate::proto::feast::core as pb;
pub use snapshot::{
    JoinKey, ServiceDef, Snapshot, SnapshotSettings, ViewEntry, ViewKind, ViewVersion,
};

/// A registry that cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Feast's wording, which users recognise.
    #[error("Registry not found at path \"{0}\". Have you run \"feast apply\"?")]
    NotFound(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read registry {path}: {cause}")]
    Io {
        /// Registry file.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// Not a serialized `feast.core.Registry` (garbage or cut in the middle of a field).
    #[error("registry {path} is not a valid Feast registry: {cause}")]
    Decode {
        /// Registry file.
        path: PathBuf,
        /// Protobuf decode error.
        cause: prost::DecodeError,
    },
    /// Decodes, but does not hold the configured project: empty, truncated at a field
    /// boundary, or the wrong registry.
    #[error(
        "registry {source_name} has no project '{project}' (projects found: {found}); check `project` in feature_store.yaml, or run `feast apply`"
    )]
    ProjectMissing {
        /// Registry file or URL.
        source_name: String,
        /// The configured project.
        project: String,
        /// Projects present, comma-separated.
        found: String,
    },
    /// A registry kind this build cannot read yet.
    #[error("{0}")]
    Unsupported(String),
}

/// The published snapshot, swapped atomically when a new registry is loaded.
#[derive(Debug)]
pub struct Registry {
    /// `ArcSwap` rather than a lock: requests load the current snapshot without
    /// contending with each other or with a reload, and keep the `Arc` they loaded for
    /// the whole request, so a swap never changes a request half-way.
    current: ArcSwap<Snapshot>,
    /// Generation of the next published snapshot (monotonic).
    next_generation: AtomicU64,
    settings: SnapshotSettings,
    source: RegistrySource,
}

impl Registry {
    /// Loads the registry named by `config` (blocking I/O: call at start-up or from
    /// `spawn_blocking`).
    pub fn load(config: &RepoConfig) -> Result<Self, RegistryError> {
        let settings = SnapshotSettings::from_config(config);
        let source = config.registry.source.clone();
        let started = Instant::now();
        let proto = read_source(&source)?;
        let snapshot = Snapshot::build(proto, &settings, 1, &source_name(&source))?;
        record_load(&snapshot, started);
        Ok(Self {
            current: ArcSwap::from_pointee(snapshot),
            next_generation: AtomicU64::new(2),
            settings,
            source,
        })
    }

    /// Wraps an already built snapshot (tests and benches).
    pub fn from_snapshot(snapshot: Snapshot, source: RegistrySource) -> Self {
        let next = snapshot.generation + 1;
        Self {
            settings: snapshot.settings.clone(),
            current: ArcSwap::from_pointee(snapshot),
            next_generation: AtomicU64::new(next),
            source,
        }
    }

    /// The snapshot a request must use from start to finish.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reads the source again and publishes the result if it builds; on failure the
    /// current snapshot stays. Blocking I/O.
    pub fn reload(&self) -> Result<Arc<Snapshot>, RegistryError> {
        let started = Instant::now();
        let proto = read_source(&self.source)?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let snapshot = Snapshot::build(
            proto,
            &self.settings,
            generation,
            &source_name(&self.source),
        )?;
        record_load(&snapshot, started);
        let snapshot = Arc::new(snapshot);
        self.current.store(snapshot.clone());
        Ok(snapshot)
    }
}

fn read_source(source: &RegistrySource) -> Result<pb::Registry, RegistryError> {
    match source {
        RegistrySource::File(path) => file::read(path),
        RegistrySource::Sql(_) => Err(RegistryError::Unsupported(
            "registry_type: sql is not supported by this version of Tern yet; use a file registry (registry.db)"
                .into(),
        )),
    }
}

fn source_name(source: &RegistrySource) -> String {
    match source {
        RegistrySource::File(path) => path.display().to_string(),
        RegistrySource::Sql(_) => "SQL registry".into(),
    }
}

fn record_load(snapshot: &Snapshot, started: Instant) {
    let elapsed = started.elapsed();
    metrics::gauge!(m::REGISTRY_GENERATION).set(snapshot.generation as f64);
    metrics::histogram!(m::REGISTRY_LOAD_SECONDS).record(elapsed.as_secs_f64());
    tracing::info!(
        generation = snapshot.generation,
        project = %snapshot.settings.project,
        views = snapshot.view_count(),
        services = snapshot.service_count(),
        entities = snapshot.entity_count(),
        load_ms = elapsed.as_secs_f64() * 1e3,
        "registry snapshot loaded"
    );
}
