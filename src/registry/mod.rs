//! Feast's registry: where it is read from, the snapshot requests are served from, and
//! keeping that snapshot fresh.
//!
//! Owns: the registry as data ([`model`], [`data_source`]), where it is stored
//! ([`source`]: [`mod@file`] or [`sql`]), the immutable indexed [`Snapshot`] requests are
//! served from, the handle that publishes snapshots atomically ([`Registry`]) and the
//! reload loop ([`reload`]). Does not own: resolving a request against a snapshot
//! (`serving::plan`).

pub mod data_source;
pub mod file;
pub mod model;
pub mod object;
pub mod reload;
pub mod snapshot;
pub mod source;
pub mod sql;
pub mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub use model::RegistryModel;
pub use reload::{ReloadHandle, Reloader};
pub use snapshot::{
    JoinKey, ServiceDef, Snapshot, SnapshotSettings, ViewEntry, ViewKind, ViewVersion,
};
pub use source::RegistrySource;
pub use write::RegistryTxn;

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
    /// The file kept changing while being read (a writer is rewriting it).
    #[error("registry {0} changed while it was being read; it is being rewritten")]
    Unstable(PathBuf),
    /// Not a serialized `feast.core.Registry` (garbage or cut in the middle of a field).
    #[error("registry {path} is not a valid Feast registry: {cause}")]
    Decode {
        /// Registry file (or table, for a SQL registry).
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
    /// The SQL registry's database failed (connection, query, or an unexpected row).
    #[error("SQL registry {source_name}: {detail}")]
    Sql {
        /// The database, without credentials.
        source_name: String,
        /// What failed.
        detail: String,
    },
    /// A SQL registry column holds NULL or a value of the wrong type.
    #[error(
        "SQL registry {source_name}: table {table}, column {column}{}: {problem}",
        row.as_ref().map(|r| format!(" (row '{r}')")).unwrap_or_default()
    )]
    SqlColumn {
        /// The database, without credentials.
        source_name: String,
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// The row's name, when it could be read.
        row: Option<String>,
        /// What is wrong with the value.
        problem: String,
    },
    /// The SQL registry did not answer within the registry timeout.
    #[error(
        "SQL registry {source_name} did not answer within {} ms (--registry-timeout-ms)",
        after.as_millis()
    )]
    SqlTimeout {
        /// The database, without credentials.
        source_name: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// A concurrent writer got there first (a unique key taken); the whole apply
    /// can be retried on the registry as it is now.
    #[error("registry {source_name}: {detail}")]
    Conflict {
        /// The database, without credentials.
        source_name: String,
        /// What collided.
        detail: String,
    },
    /// A registry in object storage that cannot be reached or read.
    #[error("registry {url}: {detail}")]
    Object {
        /// The registry's URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// A registry this build cannot read.
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
    /// Generation the next published snapshot gets (monotonic; only publishing moves
    /// it, so generations count swaps).
    next_generation: AtomicU64,
}

impl Registry {
    /// A registry serving `snapshot` as generation 1.
    pub fn new(mut snapshot: Snapshot) -> Self {
        snapshot.generation = 1;
        Self {
            current: ArcSwap::from_pointee(snapshot),
            next_generation: AtomicU64::new(2),
        }
    }

    /// The snapshot a request must use from start to finish.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `snapshot` as the next generation: requests starting after this see
    /// it; requests in flight finish on the one they loaded.
    pub fn publish(&self, mut snapshot: Snapshot) -> Arc<Snapshot> {
        snapshot.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let snapshot = Arc::new(snapshot);
        self.current.store(snapshot.clone());
        snapshot
    }
}
