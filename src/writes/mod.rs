//! Online writes: rows pushed by clients, validated against the registry snapshot and
//! written to the online store in Feast's layout.
//!
//! Owns: resolving the target (a view version, or every view a push source feeds),
//! matching columns to join keys, features and time columns (after the source's
//! `field_mapping`), converting cells to each feature's type, encoding entity keys
//! and values. Every target is validated before anything is written, so a rejected
//! request writes nothing. The store applies the "an older event never replaces a
//! newer one" rule. Transport-free: the gRPC edge turns [`WriteError`] into a status.

pub(crate) mod convert;

use std::collections::HashMap;
use std::sync::Arc;

use prost_types::Timestamp;

use crate::config::KeySerialization;
use crate::error::ErrorKind;
use crate::metrics as m;
use crate::proto::feast::types::Value;
use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::registry::Registry;
use crate::registry::snapshot::{DUMMY_ENTITY_ID, Snapshot, ViewKind, ViewVersion};
use crate::serving::entities::{coerce, type_label};
use crate::store::{EntityValue, EntityWrite, Store, StoreError, key};

/// Where a write goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One view: its active version, or the version given.
    View {
        /// View name.
        name: &'a str,
        /// Version number, `None` for the active one.
        version: Option<u32>,
    },
    /// Every view whose stream source is this push source (Feast's `push`).
    PushSource(&'a str),
}

/// The cells of one pushed column.
#[derive(Debug, Clone, Copy)]
pub enum Cells<'a> {
    /// One row's value as text (Feast's `features` map), parsed as the column's type.
    Text(&'a str),
    /// Typed values, one per row (Feast's `typed_features` map, Tern's columns).
    Typed(&'a [Value]),
    /// JSON values, one per row (a column of the HTTP API's `df`), converted to the
    /// column's type.
    Json(&'a [serde_json::Value]),
}

impl Cells<'_> {
    fn len(&self) -> usize {
        match self {
            Cells::Text(_) => 1,
            Cells::Typed(values) => values.len(),
            Cells::Json(values) => values.len(),
        }
    }
}

/// One pushed column.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    /// Name as sent (before `field_mapping`).
    pub name: &'a str,
    /// Its cells.
    pub cells: Cells<'a>,
}

/// What to write.
#[derive(Debug, Clone)]
pub struct WriteRequest<'a> {
    /// Where.
    pub target: Target<'a>,
    /// Join keys, features and optionally the source's time columns.
    pub columns: Vec<Column<'a>>,
    /// Event times given beside the columns (Tern's API): none, one for all rows, or
    /// one per row. When empty and no column carries them, `default_event_time` is used
    /// or, without one, the request is refused (Feast requires the column).
    pub event_times: &'a [Timestamp],
    /// The event time of rows that carry none (Tern's API: the server clock).
    pub default_event_time: Option<Timestamp>,
    /// The authenticated caller, who must be allowed WRITE_ONLINE on every target
    /// view; `None` when authentication is off.
    pub caller: Option<&'a crate::auth::Principal>,
}

/// What a write did, per view version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// (view, version, rows written, rows skipped as older than the stored event).
    pub views: Vec<ViewWritten>,
}

/// One view version's part of a [`WriteSummary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewWritten {
    /// View name.
    pub view: String,
    /// Version written.
    pub version: u32,
    /// Rows stored.
    pub written: usize,
    /// Rows skipped: the store held a newer event for the entity.
    pub skipped: usize,
}

impl WriteSummary {
    /// Rows written over all views.
    pub fn written(&self) -> usize {
        self.views.iter().map(|v| v.written).sum()
    }

    /// Rows skipped over all views.
    pub fn skipped(&self) -> usize {
        self.views.iter().map(|v| v.skipped).sum()
    }
}

/// A refused or failed write. Every variant but `Store` is the client's to fix and
/// means nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Feast's text.
    #[error("Only one of features or typed_features may be set, not both")]
    BothForms,
    /// Feast's text (its ValueError for an unknown `to`).
    #[error(
        "{0} is not a supported push format. Please specify one of these ['online', 'offline', 'online_and_offline']."
    )]
    PushMode(String),
    /// Tern has no offline store.
    #[error(
        "push to '{0}' needs an offline store, which Tern does not have: push with to=\"online\" (and write the offline store with Feast)"
    )]
    Offline(String),
    /// Nothing to write.
    #[error("the request has no columns: send the join keys and features of the view as columns")]
    NoColumns,
    /// Same text as reads.
    #[error("Feature view {view} does not exist in project {project}")]
    ViewNotFound {
        /// View name.
        view: String,
        /// Configured project.
        project: String,
    },
    /// Feast's text (`PushSourceNotFoundException`).
    #[error("Unable to find push source '{0}'.")]
    PushSourceNotFound(String),
    /// Same text as reads.
    #[error("Version v{version} of feature view {view} does not exist in project {project}")]
    VersionNotFound {
        /// View name.
        view: String,
        /// Requested version.
        version: u32,
        /// Configured project.
        project: String,
    },
    /// A version was named but versions share one table.
    #[error(
        "cannot write version v{version} of feature view '{view}': online versioning is disabled. Set 'enable_online_feature_view_versioning: true' under 'registry' in feature_store.yaml."
    )]
    VersioningDisabled {
        /// View name.
        view: String,
        /// Requested version.
        version: u32,
    },
    /// On-demand views compute at read time; Tern runs no transformations.
    #[error(
        "feature view '{0}' is an on-demand feature view: Tern does not run its transformation on write; write its source views instead"
    )]
    OnDemand(String),
    /// The registry is inconsistent for this view.
    #[error("feature view '{view}' cannot be written: {problem}")]
    Broken {
        /// View name.
        view: String,
        /// What is wrong.
        problem: String,
    },
    /// A column no target view knows.
    #[error(
        "column '{column}' is not a join key, feature or timestamp column of feature view '{view}' (its columns: {expected})"
    )]
    UnknownColumn {
        /// Column as sent.
        column: String,
        /// The (first) target view.
        view: String,
        /// The columns the view takes.
        expected: String,
    },
    /// Two columns with one name (after `field_mapping`).
    #[error("column '{0}' is sent twice")]
    DuplicateColumn(String),
    /// A join key, feature or the event-time column is missing.
    #[error("feature view '{view}' needs column '{column}' ({role}); the request has: {sent}")]
    MissingColumn {
        /// View name.
        view: String,
        /// Missing column.
        column: String,
        /// What it is: "join key", "feature", "event timestamp".
        role: &'static str,
        /// Columns sent.
        sent: String,
    },
    /// Columns of different lengths.
    #[error(
        "column '{column}' has {got} values but column '{first}' has {expected}: every column needs one value per row"
    )]
    RowCount {
        /// Column with the odd length.
        column: String,
        /// Its length.
        got: usize,
        /// The first column.
        first: String,
        /// The first column's length.
        expected: usize,
    },
    /// `event_timestamps` of the wrong length.
    #[error("{got} event timestamps for {rows} rows: send none, one for every row, or one per row")]
    TimestampCount {
        /// Timestamps sent.
        got: usize,
        /// Rows.
        rows: usize,
    },
    /// A cell that does not fit its column's type.
    #[error("feature view '{view}', column '{column}', row {row}: {detail}")]
    BadValue {
        /// View name.
        view: String,
        /// Column name.
        column: String,
        /// 0-based row.
        row: usize,
        /// What was expected and what came.
        detail: String,
    },
    /// The caller may not write a target view (Feast's `FeastPermissionError` text).
    #[error("{0}")]
    PermissionDenied(#[from] crate::permissions::Denied),
    /// The online store failed; what was written before the failure stays written
    /// (each view's rows are one transaction on SQLite).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WriteError {
    /// How a caller must treat this error. Exhaustive on purpose.
    pub fn kind(&self) -> ErrorKind {
        match self {
            WriteError::BothForms
            | WriteError::PushMode(_)
            | WriteError::NoColumns
            | WriteError::ViewNotFound { .. }
            | WriteError::PushSourceNotFound(_)
            | WriteError::VersionNotFound { .. }
            | WriteError::VersioningDisabled { .. }
            | WriteError::UnknownColumn { .. }
            | WriteError::DuplicateColumn(_)
            | WriteError::MissingColumn { .. }
            | WriteError::RowCount { .. }
            | WriteError::TimestampCount { .. }
            | WriteError::BadValue { .. } => ErrorKind::BadRequest,
            WriteError::Offline(_) | WriteError::OnDemand(_) => ErrorKind::Unsupported,
            WriteError::Broken { .. } => ErrorKind::NotServable,
            WriteError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            WriteError::Store(e) => e.kind(),
        }
    }
}

/// Checks Feast's `to` of a push: only "online" is served.
pub fn check_push_mode(to: &str) -> Result<(), WriteError> {
    match to {
        "online" => Ok(()),
        "offline" | "online_and_offline" => Err(WriteError::Offline(to.to_owned())),
        other => Err(WriteError::PushMode(other.to_owned())),
    }
}

/// The write side of the server: the same registry and store the reads use.
#[derive(Debug, Clone)]
pub struct Writer {
    registry: Arc<Registry>,
    store: Store,
}

impl Writer {
    /// Writes through `store`, resolving names in `registry`'s current snapshot.
    pub fn new(registry: Arc<Registry>, store: Store) -> Self {
        Self { registry, store }
    }

    /// Validates the whole request against one snapshot, then writes each target view.
    pub async fn write(&self, req: &WriteRequest<'_>) -> Result<WriteSummary, WriteError> {
        let snapshot = self.registry.snapshot();
        let prepared = prepare(&snapshot, req)?;
        let mut summary = WriteSummary::default();
        for view in prepared {
            let written = self.store.write(&view.version.layout, view.rows).await?;
            let labels = [("view", view.version.name.clone())];
            metrics::counter!(m::ONLINE_WRITE_ROWS, &labels).increment(written.written as u64);
            metrics::counter!(m::ONLINE_WRITE_SKIPPED, &labels).increment(written.skipped as u64);
            summary.views.push(ViewWritten {
                view: view.version.name.clone(),
                version: view.version.version,
                written: written.written,
                skipped: written.skipped,
            });
        }
        Ok(summary)
    }
}

/// One target view's rows, ready for the store.
#[derive(Debug)]
pub struct Prepared {
    /// The view version written.
    pub version: Arc<ViewVersion>,
    /// Its rows.
    pub rows: Vec<EntityWrite>,
}

/// Resolves and converts a request against `snapshot` without writing anything.
pub fn prepare(snapshot: &Snapshot, req: &WriteRequest<'_>) -> Result<Vec<Prepared>, WriteError> {
    let project = &snapshot.settings.project;
    let targets: Vec<Arc<ViewVersion>> = match req.target {
        Target::View { name, version } => {
            let entry = snapshot
                .view(name)
                .ok_or_else(|| WriteError::ViewNotFound {
                    view: name.to_owned(),
                    project: project.clone(),
                })?;
            let version = match version {
                None => entry.active.clone(),
                Some(n) => {
                    if !snapshot.settings.versioning && n != entry.active.version {
                        return Err(WriteError::VersioningDisabled {
                            view: name.to_owned(),
                            version: n,
                        });
                    }
                    entry
                        .version(n)
                        .cloned()
                        .ok_or_else(|| WriteError::VersionNotFound {
                            view: name.to_owned(),
                            version: n,
                            project: project.clone(),
                        })?
                }
            };
            vec![version]
        }
        Target::PushSource(source) => snapshot
            .push_source_views(source)
            .ok_or_else(|| WriteError::PushSourceNotFound(source.to_owned()))?
            .iter()
            .filter_map(|name| snapshot.view(name).map(|e| e.active.clone()))
            .collect(),
    };
    if let Some(caller) = req.caller {
        let permissions = snapshot.permissions();
        for target in &targets {
            permissions.check(
                crate::permissions::Resource::view(target),
                crate::permissions::Action::WriteOnline,
                caller,
            )?;
        }
    }
    let Some(first) = req.columns.first() else {
        return Err(WriteError::NoColumns);
    };
    let rows = first.cells.len();
    for column in &req.columns {
        if column.cells.len() != rows {
            return Err(WriteError::RowCount {
                column: column.name.to_owned(),
                got: column.cells.len(),
                first: first.name.to_owned(),
                expected: rows,
            });
        }
    }
    if !matches!(req.event_times.len(), 0 | 1) && req.event_times.len() != rows {
        return Err(WriteError::TimestampCount {
            got: req.event_times.len(),
            rows,
        });
    }
    // A column must be known to at least one target: a push source feeds views that
    // each take their own subset of its columns.
    for column in &req.columns {
        let known = targets.iter().any(|v| takes(v, &mapped(v, column.name)));
        if !known {
            let view = &targets[0];
            return Err(WriteError::UnknownColumn {
                column: column.name.to_owned(),
                view: view.name.clone(),
                expected: expected_columns(view),
            });
        }
    }
    targets
        .into_iter()
        .map(|version| {
            let rows = prepare_view(&version, snapshot.settings.key_serialization, req, rows)?;
            Ok(Prepared { version, rows })
        })
        .collect()
}

/// A pushed column's name as the view knows it, after the source's `field_mapping`.
fn mapped<'a>(view: &'a ViewVersion, name: &'a str) -> std::borrow::Cow<'a, str> {
    view.write
        .field_mapping
        .iter()
        .find(|(from, _)| from == name)
        .map_or(std::borrow::Cow::Borrowed(name), |(_, to)| {
            std::borrow::Cow::Borrowed(to.as_str())
        })
}

fn takes(view: &ViewVersion, name: &str) -> bool {
    view.join_keys.iter().any(|k| k.name == name)
        || view.layout.feature_index.contains_key(name)
        || (!view.write.timestamp_field.is_empty() && view.write.timestamp_field == name)
        || view.write.created_column.as_deref() == Some(name)
}

fn expected_columns(view: &ViewVersion) -> String {
    let mut names: Vec<&str> = view.join_keys.iter().map(|k| k.name.as_str()).collect();
    names.extend(view.layout.features.iter().map(String::as_str));
    if !view.write.timestamp_field.is_empty() {
        names.push(&view.write.timestamp_field);
    }
    if let Some(c) = &view.write.created_column {
        names.push(c);
    }
    names.join(", ")
}

fn prepare_view(
    view: &ViewVersion,
    serialization: KeySerialization,
    req: &WriteRequest<'_>,
    rows: usize,
) -> Result<Vec<EntityWrite>, WriteError> {
    if let ViewKind::OnDemand { .. } = view.kind {
        return Err(WriteError::OnDemand(view.name.clone()));
    }
    if let Some(problem) = &view.problem {
        return Err(WriteError::Broken {
            view: view.name.clone(),
            problem: problem.clone(),
        });
    }
    // The view's columns by their mapped names.
    let mut by_name: HashMap<std::borrow::Cow<'_, str>, &Column<'_>> = HashMap::new();
    for column in &req.columns {
        let name = mapped(view, column.name);
        if !takes(view, &name) {
            continue;
        }
        if by_name.insert(name.clone(), column).is_some() {
            return Err(WriteError::DuplicateColumn(name.into_owned()));
        }
    }
    let sent = || {
        req.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = |column: &str, role: &'static str| WriteError::MissingColumn {
        view: view.name.clone(),
        column: column.to_owned(),
        role,
        sent: sent(),
    };
    let bad = |column: &str, row: usize, detail: String| WriteError::BadValue {
        view: view.name.clone(),
        column: column.to_owned(),
        row,
        detail,
    };

    // Entity keys: Feast's layout, join keys sorted by name.
    let mut keys_sorted: Vec<(&str, ValueType)> = view
        .join_keys
        .iter()
        .map(|k| (k.name.as_str(), k.value_type))
        .collect();
    keys_sorted.sort_by(|a, b| a.0.cmp(b.0));
    let key_columns = keys_sorted
        .iter()
        .map(|(name, _)| {
            by_name
                .get(*name)
                .copied()
                .ok_or_else(|| missing(name, "join key"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = if view.is_entityless() {
        key::key_prefix(&[DUMMY_ENTITY_ID], serialization)
    } else {
        let names: Vec<&str> = keys_sorted.iter().map(|(n, _)| *n).collect();
        key::key_prefix(&names, serialization)
    };
    let feature_columns = view
        .layout
        .features
        .iter()
        .map(|f| {
            by_name
                .get(f.as_str())
                .copied()
                .ok_or_else(|| missing(f, "feature"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ts_field = view.write.timestamp_field.as_str();
    let event_column = if ts_field.is_empty() {
        None
    } else {
        by_name.get(ts_field).copied()
    };
    if event_column.is_none() && req.event_times.is_empty() && req.default_event_time.is_none() {
        let column = if ts_field.is_empty() {
            "event_timestamp"
        } else {
            ts_field
        };
        return Err(missing(column, "event timestamp"));
    }
    let created_column = view
        .write
        .created_column
        .as_deref()
        .and_then(|c| by_name.get(c).copied());

    let mut out = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut entity_key = prefix.clone();
        if view.is_entityless() {
            key::push_value(&mut entity_key, &EntityValue::String("".into()));
        }
        for (column, (name, t)) in key_columns.iter().zip(&keys_sorted) {
            let owned;
            let value = match column.cells {
                Cells::Text(s) => {
                    owned = Value {
                        val: Some(Val::StringVal(s.to_owned())),
                    };
                    &owned
                }
                Cells::Typed(values) => &values[row],
                Cells::Json(values) => {
                    owned =
                        convert::json_key(&values[row]).map_err(|detail| bad(name, row, detail))?;
                    &owned
                }
            };
            let coerced = coerce(value, *t).map_err(|got| {
                bad(
                    name,
                    row,
                    format!("expected a {} join key, got {got}", type_label(*t)),
                )
            })?;
            key::push_value(&mut entity_key, &coerced);
        }
        let mut values = Vec::with_capacity(feature_columns.len());
        let mut texts = Vec::with_capacity(feature_columns.len());
        for ((column, name), t) in feature_columns
            .iter()
            .zip(&view.layout.features)
            .zip(&view.write.feature_types)
        {
            let val = match column.cells {
                Cells::Text(s) => convert::parse_text(s, *t),
                Cells::Typed(values) => convert::check_typed(&values[row], *t),
                Cells::Json(values) => convert::json_cell(&values[row], *t),
            }
            .map_err(|detail| bad(name, row, detail))?;
            let stored = crate::materialize::values::stored_value(val);
            values.push(stored.bytes);
            texts.push(stored.text);
        }
        let event_time = match (event_column, req.event_times) {
            (Some(column), _) => Timestamp {
                seconds: time_cell(column, row).map_err(|d| bad(ts_field, row, d))?,
                nanos: 0,
            },
            (None, [one]) => *one,
            (None, []) => req.default_event_time.unwrap_or_default(),
            (None, many) => many[row],
        };
        let created_time = match created_column {
            Some(column) => {
                let name = view.write.created_column.as_deref().unwrap_or_default();
                Some(Timestamp {
                    seconds: time_cell(column, row).map_err(|d| bad(name, row, d))?,
                    nanos: 0,
                })
            }
            None => None,
        };
        out.push(EntityWrite {
            entity_key,
            values,
            texts,
            event_time,
            created_time,
        });
    }
    Ok(out)
}

fn time_cell(column: &Column<'_>, row: usize) -> Result<i64, String> {
    match column.cells {
        Cells::Text(s) => convert::time_text(s.trim()).map_err(|_| {
            format!(
                "expected a time (ISO 8601, naive is UTC, or epoch seconds), got {:?}",
                crate::error::clip(s)
            )
        }),
        Cells::Typed(values) => convert::typed_time(&values[row]),
        Cells::Json(values) => convert::json_time(&values[row]),
    }
}
