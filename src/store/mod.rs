//! Online stores: where feature values live, in Feast's byte layouts.
//!
//! Owns: the batch read contract ([`OnlineStore`]), the per-view storage layout
//! precomputed when a registry snapshot loads ([`StorageLayout`]), entity-key bytes
//! ([`key`]) and the backends. Does not own: which views or entities a request needs
//! (that is `serving`), nor registry parsing.
//!
//! The contract is batch-first on purpose: one call carries every (view, entity batch)
//! of a request, so SQLite runs one query per view on one pooled connection and Redis
//! (next) can send one pipelined round trip. There is no per-key read to loop over.

pub mod key;
pub mod redis;
pub mod sqlite;
pub mod value;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost_types::Timestamp;

use crate::error::ErrorKind;

pub use key::{EntityValue, KeyBatch};
pub use redis::{RedisSettings, RedisStore, Written};
pub use sqlite::{SqliteSettings, SqliteStore};

/// How one view version is laid out in the online stores. Built once per snapshot.
#[derive(Debug)]
pub struct StorageLayout {
    /// Feast's storage name: the view name, plus `_vN` for versions > 0 when online
    /// versioning is on. Redis hashes fields over it.
    pub storage_name: String,
    /// SQLite table: `{project}_{storage_name}`.
    pub sqlite_table: String,
    /// The SQLite read for this table (one statement, cached per connection).
    pub sqlite_select: String,
    /// The same read for a single key.
    pub sqlite_point_select: String,
    /// Feature names in definition order; reads address them by index ("slot").
    pub features: Vec<String>,
    /// Feature name -> index in `features`.
    pub feature_index: HashMap<String, u32>,
    /// Redis hash field per feature: murmur3_32 (seed 0) of `{storage_name}:{feature}`,
    /// 4 bytes little-endian.
    pub redis_fields: Vec<[u8; 4]>,
    /// Redis hash field holding the event time: `_ts:{storage_name}`.
    pub redis_ts_field: Vec<u8>,
}

impl StorageLayout {
    /// Layout of `view` stored under version `version` (0 = unsuffixed). Callers pass
    /// version 0 when online versioning is off: every read then uses the legacy table.
    pub fn new(project: &str, view: &str, version: u32, features: Vec<String>) -> Self {
        let storage_name = if version > 0 {
            format!("{view}_v{version}")
        } else {
            view.to_owned()
        };
        let sqlite_table = format!("{project}_{storage_name}");
        let sqlite_select = sqlite::select_statement(&sqlite_table);
        let sqlite_point_select = sqlite::point_select_statement(&sqlite_table);
        let feature_index = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        let redis_fields = features
            .iter()
            .map(|f| redis::field_name(&storage_name, f))
            .collect();
        let redis_ts_field = format!("_ts:{storage_name}").into_bytes();
        Self {
            storage_name,
            sqlite_table,
            sqlite_select,
            sqlite_point_select,
            features,
            feature_index,
            redis_fields,
            redis_ts_field,
        }
    }
}

/// One view's part of a request: which features of which entities.
#[derive(Debug, Clone)]
pub struct ViewRead {
    /// Where the view's values are.
    pub layout: Arc<StorageLayout>,
    /// Indexes into `layout.features`, in the order results are wanted.
    pub slots: Arc<[u32]>,
    /// Each wanted feature's name and its position in `slots`, ordered by name (SQLite
    /// hands an entity's rows over in that order); see [`ViewRead::by_name`].
    pub by_name: Arc<[(Box<[u8]>, u32)]>,
    /// Distinct serialized entity keys (no project suffix).
    pub keys: Arc<KeyBatch>,
}

impl ViewRead {
    /// A read of `slots` of `layout` for `keys`. The request path builds reads from
    /// its plan instead, where [`ViewRead::by_name`] is computed once.
    pub fn new(layout: Arc<StorageLayout>, slots: Arc<[u32]>, keys: Arc<KeyBatch>) -> Self {
        let by_name = Self::by_name(&layout, &slots);
        Self {
            layout,
            slots,
            by_name,
            keys,
        }
    }

    /// The names of `slots` with their positions, ordered by name, bytewise.
    pub fn by_name(layout: &StorageLayout, slots: &[u32]) -> Arc<[(Box<[u8]>, u32)]> {
        let mut order: Vec<(Box<[u8]>, u32)> = slots
            .iter()
            .zip(0u32..)
            .filter_map(|(&f, position)| {
                let name = layout.features.get(f as usize)?;
                Some((Box::from(name.as_bytes()), position))
            })
            .collect();
        order.sort_unstable();
        order.into()
    }
}

/// Where one stored value is in its answer's value buffer ([`Found::values`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Appends `value` to `buffer`; its span there.
    pub fn push(buffer: &mut Vec<u8>, value: &[u8]) -> Self {
        let start = buffer.len();
        buffer.extend_from_slice(value);
        Self::new(start, buffer.len())
    }

    /// The value's bytes in `buffer` (empty if the span is not in it).
    pub fn of<'a>(&self, buffer: &'a [u8]) -> &'a [u8] {
        buffer.get(self.start..self.end).unwrap_or_default()
    }

    /// Bytes the value takes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// An empty value: a stored null, or no value at all.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// What a store found for one [`ViewRead`].
#[derive(Debug, Default)]
pub struct ViewRows {
    /// Per key: the entity's event time, `None` when the store has no row for it.
    pub timestamps: Vec<Option<Timestamp>>,
    /// Per key and slot (`key * slots + slot`): where the serialized
    /// `feast.types.Value` is in [`Found::values`], `None` when the feature is not
    /// stored. An empty value is a stored null.
    pub values: Vec<Option<Span>>,
}

impl ViewRows {
    /// Empty results for `keys` keys and `slots` slots.
    pub fn new(keys: usize, slots: usize) -> Self {
        Self {
            timestamps: vec![None; keys],
            values: vec![None; keys * slots],
        }
    }
}

/// What a store found for one request: `views[i]` answers `reads[i]`, and every value
/// they hold is a span of one buffer (one allocation per request, not one per value).
#[derive(Debug, Default)]
pub struct Found {
    pub views: Vec<ViewRows>,
    /// The values' bytes.
    pub values: Bytes,
}

impl Found {
    /// View `view`'s values in `key * slots + slot` order: bytes, or `None` when not
    /// stored.
    pub fn values_of(&self, view: usize) -> Vec<Option<&[u8]>> {
        self.views.get(view).map_or_else(Vec::new, |rows| {
            rows.values
                .iter()
                .map(|span| span.map(|s| s.of(&self.values)))
                .collect()
        })
    }
}

/// Value bytes of one request, copied once into one buffer as a store reads them.
#[derive(Default)]
pub(crate) struct ValueArena {
    buffer: BytesMut,
}

impl ValueArena {
    /// Appends `value` once it has checked that the bytes are a well-formed
    /// `feast.types.Value` (here, where they are in cache anyway): a client must never
    /// receive a value it cannot parse.
    pub(crate) fn push(&mut self, value: &[u8]) -> Result<Span, value::Invalid> {
        value::check(value)?;
        let start = self.buffer.len();
        self.buffer.extend_from_slice(value);
        Ok(Span::new(start, self.buffer.len()))
    }

    /// The answer: `views` with the values they point into.
    pub(crate) fn finish(self, views: Vec<ViewRows>) -> Found {
        Found {
            views,
            values: self.buffer.freeze(),
        }
    }
}

/// One entity's new values for one view version, as an online write hands them to a
/// store.
#[derive(Debug, Clone)]
pub struct EntityWrite {
    /// Serialized entity key (no project suffix).
    pub entity_key: Vec<u8>,
    /// Serialized `feast.types.Value` per feature, in the layout's order; empty is null.
    pub values: Vec<Vec<u8>>,
    /// SQLite `value_text` per feature, as Feast fills it.
    pub texts: Vec<Option<String>>,
    /// The row's event time.
    pub event_time: Timestamp,
    /// The row's created time, if the source has the column.
    pub created_time: Option<Timestamp>,
}

/// A failed store read; [`StoreError::kind`] says how a caller treats it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table for a view is not in the database: the view was never materialized
    /// (or, for `_vN` tables, Feast 0.67's apply did not create it).
    #[error(
        "online table \"{table}\" does not exist in {path}: materialize the feature view into this online store first"
    )]
    MissingTable {
        /// Table name.
        table: String,
        /// Database file.
        path: PathBuf,
    },
    /// The database is locked by a writer for longer than the busy timeout.
    #[error("SQLite online store {path} is busy (locked by a writer): {cause}")]
    Busy {
        /// Database file.
        path: PathBuf,
        /// SQLite's error.
        cause: rusqlite::Error,
    },
    /// Any other SQLite failure (corrupt file, I/O error).
    #[error("SQLite online store {path}: {cause}")]
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// SQLite's error.
        cause: rusqlite::Error,
    },
    /// Too many reads queued: shed load rather than queue without bound.
    #[error("online store overloaded: {queued} reads already queued")]
    Overloaded {
        /// Queue capacity that was reached.
        queued: usize,
    },
    /// A reader thread could not be started.
    #[error("cannot start an online store reader thread: {0}")]
    Thread(std::io::Error),
    /// The store cannot be reached (connection refused, reset, authentication).
    #[error("online store {store} is unavailable: {detail}")]
    Unavailable {
        /// Which store (no credentials).
        store: String,
        /// What failed.
        detail: String,
    },
    /// The store did not answer within the store timeout.
    #[error("online store {store} did not answer within {} ms", after.as_millis())]
    Timeout {
        /// Which store.
        store: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// The store answered something that is not Feast's layout or protocol.
    #[error("online store {store} answered unexpectedly: {detail}")]
    Protocol {
        /// Which store.
        store: String,
        /// What was unexpected.
        detail: String,
    },
    /// The store holds something Feast's layout does not allow (a wrong Redis type, a
    /// timestamp or value that does not decode): retrying will not help, the data must
    /// be rewritten.
    #[error(
        "online store {store} holds unreadable data for feature view {view}, entity key {key}: {detail}"
    )]
    DataFault {
        /// Which store (`redis host:port`, `sqlite path`).
        store: String,
        /// Storage name of the view (`driver_stats_v1`).
        view: String,
        /// The entity key bytes in hex, cut by [`key_hex`].
        key: String,
        /// What is unreadable.
        detail: String,
    },
    /// The store's workers have stopped (shutdown).
    #[error("online store is shutting down")]
    Closed,
}

impl StoreError {
    /// How a caller must treat this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::MissingTable { .. } => ErrorKind::NotServable,
            StoreError::Busy { .. } | StoreError::Closed | StoreError::Unavailable { .. } => {
                ErrorKind::Unavailable
            }
            StoreError::Overloaded { .. } => ErrorKind::Overloaded,
            StoreError::Timeout { .. } => ErrorKind::Timeout,
            StoreError::Sqlite { .. } | StoreError::Thread(_) | StoreError::Protocol { .. } => {
                ErrorKind::Internal
            }
            StoreError::DataFault { .. } => ErrorKind::CorruptData,
        }
    }

    /// Metric label of the failure (a closed set).
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::MissingTable { .. } => "missing_table",
            StoreError::Busy { .. } => "busy",
            StoreError::Sqlite { .. } => "sqlite",
            StoreError::Overloaded { .. } => "overloaded",
            StoreError::Thread(_) => "thread",
            StoreError::Closed => "closed",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Timeout { .. } => "timeout",
            StoreError::Protocol { .. } => "protocol",
            StoreError::DataFault { .. } => "data",
        }
    }
}

/// Longest entity key shown in a message, in hex characters.
const KEY_HEX_MAX: usize = 64;

/// An entity key in hex for messages: whole up to 64 characters, otherwise cut there
/// and marked with its full length.
pub fn key_hex(key: &[u8]) -> String {
    use std::fmt::Write;
    let shown = &key[..key.len().min(KEY_HEX_MAX / 2)];
    let mut out = String::with_capacity(KEY_HEX_MAX + 16);
    for b in shown {
        let _ = write!(out, "{b:02x}");
    }
    if shown.len() < key.len() {
        let _ = write!(out, "… ({} bytes)", key.len());
    }
    out
}

/// Bytes from hex with optional spaces (`"01 ab"`), for the store's unit tests.
#[cfg(test)]
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The read contract every backend implements.
pub trait OnlineStore {
    /// Reads every view of one request. `result.views[i]` answers `reads[i]`.
    fn read(&self, reads: Vec<ViewRead>) -> impl Future<Output = Result<Found, StoreError>> + Send;

    /// Checks that the store answers (for health reporting).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A short name for logs and metric labels.
    fn kind(&self) -> StoreKind;
}

/// Closed set of backends, for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite file.
    Sqlite,
    /// Redis or Redis Cluster.
    Redis,
}

impl StoreKind {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Redis => "redis",
        }
    }
}

/// The configured backend. An enum rather than `dyn OnlineStore`: `async fn` in
/// traits is not object-safe, and static dispatch keeps the hot path direct.
#[derive(Debug, Clone)]
pub enum Store {
    /// Feast's SQLite layout.
    Sqlite(SqliteStore),
    /// Feast's Redis layout.
    Redis(RedisStore),
}

impl Store {
    /// Writes rows of one view version, never replacing an entity's newer event (see
    /// each backend's `write`). Counts rows written and skipped in metrics.
    pub async fn write(
        &self,
        layout: &Arc<StorageLayout>,
        rows: Vec<EntityWrite>,
    ) -> Result<Written, StoreError> {
        match self {
            Store::Sqlite(s) => s.write(layout.clone(), rows).await,
            Store::Redis(s) => {
                let values: Vec<Vec<(&str, &[u8])>> = rows
                    .iter()
                    .map(|r| {
                        layout
                            .features
                            .iter()
                            .map(String::as_str)
                            .zip(r.values.iter().map(Vec::as_slice))
                            .collect()
                    })
                    .collect();
                let batch: Vec<redis::WriteRow<'_>> = rows
                    .iter()
                    .zip(&values)
                    .map(|(r, v)| redis::WriteRow {
                        entity_key: &r.entity_key,
                        values: v,
                        event_time: r.event_time,
                    })
                    .collect();
                s.write_batch(layout, &batch).await
            }
        }
    }
}

impl OnlineStore for Store {
    async fn read(&self, reads: Vec<ViewRead>) -> Result<Found, StoreError> {
        match self {
            Store::Sqlite(s) => s.read(reads).await,
            Store::Redis(s) => s.read(reads).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Redis(s) => s.ping().await,
        }
    }

    fn kind(&self) -> StoreKind {
        match self {
            Store::Sqlite(s) => s.kind(),
            Store::Redis(s) => s.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_cut_in_messages() {
        assert_eq!(key_hex(&[0x01, 0xab]), "01ab");
        assert_eq!(key_hex(&[7; 32]), "07".repeat(32));
        let long = key_hex(&[7; 33]);
        assert_eq!(long, format!("{}… (33 bytes)", "07".repeat(32)));
    }

    #[test]
    fn the_arena_refuses_unreadable_values() {
        let mut arena = ValueArena::default();
        let seven = arena.push(b"\x20\x07").unwrap();
        let null = arena.push(b"").unwrap();
        assert!(arena.push(b"\x12\x02\xc3\x28").is_err());
        let eight = arena.push(b"\x20\x08").unwrap();
        let found = arena.finish(Vec::new());
        assert_eq!(seven.of(&found.values), b"\x20\x07");
        assert!(null.is_empty() && null.of(&found.values).is_empty());
        assert_eq!(
            eight.of(&found.values),
            b"\x20\x08",
            "the refused value left nothing"
        );
    }
}
