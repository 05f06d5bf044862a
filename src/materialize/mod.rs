//! Batch materialization: a view version's file source (Parquet) into the online
//! store, in Feast's layout, and its interval recorded per version.
//!
//! Owns: reading Parquet in record batches (memory bounded by the distinct entities
//! of the window, not by the file), keeping per entity the newest row in
//! [start, end) (ties broken by the created column), converting values to the bytes
//! Feast writes (`values`), and writing them (SQLite in one transaction per chunk;
//! Redis through the writer that keeps Feast's "older never overwrites newer" rule).
//! Does not own: the command line (`commands::materialize`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};

use crate::config::KeySerialization;
use crate::error::ErrorKind;
use crate::proto::feast::core as pb;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::registry::data_source::FileSource;
use crate::store::key::{self, EntityValue};

pub(crate) mod values;

/// Rows per Parquet record batch.
const BATCH_ROWS: usize = 8192;

/// Why a materialization failed.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The source cannot be read.
    #[error("cannot read {path}: {detail}")]
    Source {
        /// File or folder.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The source lacks a column the view needs, or holds one of the wrong type.
    #[error("{path}: column '{column}': {detail}")]
    Column {
        /// File.
        path: PathBuf,
        /// Column (as named in the file).
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// The view cannot be materialized (not a file source, no online flag, ...).
    #[error("{0}")]
    View(String),
}

impl MaterializeError {
    /// The transport-free kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MaterializeError::Source { .. } => ErrorKind::Unavailable,
            MaterializeError::Column { .. } | MaterializeError::View(_) => ErrorKind::BadRequest,
        }
    }
}

/// The newest row of one entity.
#[derive(Debug, Clone)]
pub struct LatestRow {
    /// Event time, microseconds since the epoch.
    pub event_us: i64,
    /// Created time, microseconds, when the source has the column.
    pub created_us: Option<i64>,
    /// Every value's serialized bytes, then every `value_text`, back to back (two
    /// allocations per entity, not one or two per value).
    data: Box<[u8]>,
    /// Where each value ends in `data`, in feature order; then, when texts were
    /// computed, where each text ends, with [`NO_TEXT`] set for a value without one.
    ends: Box<[u32]>,
    /// Features (values) in the row.
    features: u32,
}

/// Marks a value without `value_text` in [`LatestRow::ends`].
const NO_TEXT: u32 = 1 << 31;

impl LatestRow {
    /// Serialized values, in feature order.
    pub fn value_bytes(&self) -> impl Iterator<Item = &[u8]> {
        let n = self.features as usize;
        let ends = self.ends.get(..n).unwrap_or_default();
        ends.iter().scan(0usize, |start, &end| {
            let end = end as usize;
            let slice = self.data.get(*start..end).unwrap_or_default();
            *start = end;
            Some(slice)
        })
    }

    /// SQLite `value_text`s, in feature order (all `None` when not computed).
    pub fn value_texts(&self) -> impl Iterator<Item = Option<&str>> {
        let n = self.features as usize;
        let first = match n {
            0 => 0,
            _ => self.ends.get(n - 1).map_or(0, |&e| e as usize),
        };
        let texts = self.ends.get(n..).unwrap_or_default();
        let missing = n.saturating_sub(texts.len());
        texts
            .iter()
            .scan(first, |start, &end| {
                let stop = (end & !NO_TEXT) as usize;
                let text = (end & NO_TEXT == 0)
                    .then(|| self.data.get(*start..stop))
                    .flatten()
                    .and_then(|b| std::str::from_utf8(b).ok());
                *start = stop;
                Some(text)
            })
            .chain(std::iter::repeat_n(None, missing))
    }
}

/// Scratch buffers reused for every row of a read.
#[derive(Default)]
struct RowBuffers {
    bytes: Vec<u8>,
    text: String,
    ends: Vec<u32>,
    text_ends: Vec<u32>,
}

impl RowBuffers {
    /// The row of `cols` at `row` as a [`LatestRow`]; `None` past 2 GiB of values.
    fn build(
        &mut self,
        cols: &[(ArrayRef, ValueType)],
        row: usize,
        with_text: bool,
        (event_us, created_us): (i64, Option<i64>),
    ) -> Option<LatestRow> {
        self.bytes.clear();
        self.text.clear();
        self.ends.clear();
        self.text_ends.clear();
        for (c, t) in cols {
            let text = with_text.then_some(&mut self.text);
            let has_text = values::push_value(c, row, *t, &mut self.bytes, text);
            self.ends.push(u32::try_from(self.bytes.len()).ok()?);
            if with_text {
                let end = u32::try_from(self.text.len()).ok()?;
                self.text_ends
                    .push(if has_text { end } else { end | NO_TEXT });
            }
        }
        let base = u32::try_from(self.bytes.len()).ok()?;
        if u64::from(base) + self.text.len() as u64 >= u64::from(NO_TEXT) {
            return None;
        }
        let mut data = Vec::with_capacity(self.bytes.len() + self.text.len());
        data.extend_from_slice(&self.bytes);
        data.extend_from_slice(self.text.as_bytes());
        let mut ends = Vec::with_capacity(self.ends.len() + self.text_ends.len());
        ends.extend_from_slice(&self.ends);
        ends.extend(
            self.text_ends
                .iter()
                .map(|&e| ((e & !NO_TEXT) + base) | (e & NO_TEXT)),
        );
        Some(LatestRow {
            event_us,
            created_us,
            data: data.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            features: u32::try_from(cols.len()).ok()?,
        })
    }
}

/// What one view version's window holds: the newest row per serialized entity key.
#[derive(Debug, Default)]
pub struct Latest {
    /// Entity key (Feast's serialization, no project) → newest row.
    pub rows: HashMap<Vec<u8>, LatestRow>,
    /// Source rows read.
    pub rows_read: u64,
    /// Source rows inside the window.
    pub rows_in_window: u64,
}

/// The Parquet files of a source path: the file, or a folder's `*.parquet` files.
fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, MaterializeError> {
    let err = |detail: String| MaterializeError::Source {
        path: path.to_owned(),
        detail,
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| err(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.sort();
        Ok(files)
    } else if path.exists() {
        Ok(vec![path.to_owned()])
    } else {
        Err(err("no such file or folder".to_owned()))
    }
}

/// Rows in `spec`'s source, from the Parquet footers alone (for progress and ETA).
pub fn source_rows(spec: &pb::FeatureViewSpec, repo_dir: &Path) -> Result<u64, MaterializeError> {
    let (_, path) = source_of(spec, repo_dir)?;
    let mut rows = 0u64;
    for file in parquet_files(&path)? {
        let err = |detail: String| MaterializeError::Source {
            path: file.clone(),
            detail,
        };
        let f = std::fs::File::open(&file).map_err(|e| err(e.to_string()))?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| err(e.to_string()))?;
        rows += u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    }
    Ok(rows)
}

/// A view's file source, resolved against the repo folder.
pub fn source_of(
    spec: &pb::FeatureViewSpec,
    repo_dir: &Path,
) -> Result<(FileSource, PathBuf), MaterializeError> {
    let source = spec
        .batch_source
        .as_ref()
        .and_then(FileSource::from_proto)
        .ok_or_else(|| {
            MaterializeError::View(format!(
                "feature view '{}' has no file source; Tern materializes file (Parquet) sources",
                spec.name
            ))
        })?;
    let local = source.path.strip_prefix("file://").unwrap_or(&source.path);
    if local.contains("://") {
        return Err(MaterializeError::View(format!(
            "feature view '{}': source path '{}' is not a local file",
            spec.name, source.path
        )));
    }
    let path = if Path::new(local).is_absolute() {
        PathBuf::from(local)
    } else {
        repo_dir.join(local)
    };
    Ok((source, path))
}

fn micros(column: &ArrayRef, row: usize) -> Option<i64> {
    if column.is_null(row) {
        return None;
    }
    Some(
        column
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(row),
    )
}

/// One of N disjoint parts of the entities, by a hash of the entity key, so N
/// processes can share one window (`--shard K/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: u32,
    /// Parts in all (at least 1).
    pub count: u32,
}

impl Shard {
    /// Everything.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `K/N` with `0 <= K < N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("--shard '{text}': expected K/N with 0 <= K < N (e.g. 0/4)");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether the entity with serialized key `key` belongs to this part. The hash is
    /// over the key bytes (murmur3, seed 0): stable across processes and versions.
    pub fn owns(&self, key: &[u8]) -> bool {
        self.count <= 1 || mur3::murmurhash3_x86_32(key, 0) % self.count == self.index
    }
}

/// Reads `spec`'s source and keeps, per entity of `shard`, the newest row with an
/// event time in `[start_us, end_us)`. `with_text`: also compute each value's
/// `value_text` (SQLite stores it; Redis does not).
pub fn read_latest(
    spec: &pb::FeatureViewSpec,
    repo_dir: &Path,
    serialization: KeySerialization,
    window: (i64, i64),
    shard: Shard,
    with_text: bool,
    mut progress: impl FnMut(u64),
) -> Result<Latest, MaterializeError> {
    let (start_us, end_us) = window;
    let (source, path) = source_of(spec, repo_dir)?;
    // Columns are found by their name in the view (after `field_mapping`).
    let renamed = |file_column: &str| -> String {
        source
            .field_mapping
            .get(file_column)
            .cloned()
            .unwrap_or_else(|| file_column.to_owned())
    };
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, None);
    let mut join: Vec<(String, ValueType)> = spec
        .entity_columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                ValueType::try_from(c.value_type).unwrap_or(ValueType::Invalid),
            )
        })
        .collect();
    join.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = join.iter().map(|(n, _)| n.as_str()).collect();
    let prefix = key::key_prefix(&names, serialization);
    let features: Vec<(String, ValueType)> = spec
        .features
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                ValueType::try_from(f.value_type).unwrap_or(ValueType::Invalid),
            )
        })
        .collect();
    let mut latest = Latest::default();
    let mut buffers = RowBuffers::default();
    for file in parquet_files(&path)? {
        let src_err = |detail: String| MaterializeError::Source {
            path: file.clone(),
            detail,
        };
        let f = std::fs::File::open(&file).map_err(|e| src_err(e.to_string()))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| src_err(e.to_string()))?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| src_err(e.to_string()))?;
        for batch in reader {
            let batch: RecordBatch = batch.map_err(|e| src_err(e.to_string()))?;
            let by_name: HashMap<String, &ArrayRef> = batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| (renamed(f.name()), c))
                .collect();
            let column = |name: &str, to: &DataType| -> Result<ArrayRef, MaterializeError> {
                let c = by_name.get(name).ok_or_else(|| MaterializeError::Column {
                    path: file.clone(),
                    column: name.to_owned(),
                    detail: "missing".to_owned(),
                })?;
                cast(c, to).map_err(|e| MaterializeError::Column {
                    path: file.clone(),
                    column: name.to_owned(),
                    detail: format!("cannot be read as {to}: {e}"),
                })
            };
            let ts = column(&source.timestamp_field, &ts_type)?;
            let created = match &source.created_timestamp_column {
                Some(c) => Some(column(c, &ts_type)?),
                None => None,
            };
            let mut keys = Vec::with_capacity(join.len());
            for (name, t) in &join {
                let to = values::arrow_type(*t).ok_or_else(|| {
                    MaterializeError::View(format!(
                        "join key '{name}': type {} is not supported",
                        t.as_str_name()
                    ))
                })?;
                // Feast's hidden entity of entityless views is not in the file.
                if name == crate::registry::snapshot::DUMMY_ENTITY_ID && !by_name.contains_key(name)
                {
                    keys.push(None);
                    continue;
                }
                keys.push(Some((column(name, &to)?, *t)));
            }
            let mut cols = Vec::with_capacity(features.len());
            for (name, t) in &features {
                let to = values::arrow_type(*t).ok_or_else(|| {
                    MaterializeError::View(format!(
                        "feature '{name}': type {} is not supported",
                        t.as_str_name()
                    ))
                })?;
                cols.push((column(name, &to)?, *t));
            }
            for row in 0..batch.num_rows() {
                latest.rows_read += 1;
                let Some(event) = micros(&ts, row) else {
                    continue;
                };
                if event < start_us || event >= end_us {
                    continue;
                }
                latest.rows_in_window += 1;
                let created_us = created.as_ref().and_then(|c| micros(c, row));
                let mut k = prefix.clone();
                for key in &keys {
                    push_key(&mut k, key.as_ref(), row);
                }
                if !shard.owns(&k) {
                    continue;
                }
                let newer = match latest.rows.get(&k) {
                    None => true,
                    Some(old) => (event, created_us) > (old.event_us, old.created_us),
                };
                if newer {
                    let latest_row = buffers
                        .build(&cols, row, with_text, (event, created_us))
                        .ok_or_else(|| {
                            MaterializeError::View(format!(
                                "feature view '{}': a row's values exceed 2 GiB",
                                spec.name
                            ))
                        })?;
                    latest.rows.insert(k, latest_row);
                }
            }
            progress(batch.num_rows() as u64);
        }
    }
    Ok(latest)
}

fn push_key(k: &mut Vec<u8>, column: Option<&(ArrayRef, ValueType)>, row: usize) {
    let Some((c, t)) = column else {
        key::push_value(k, &EntityValue::String("".into()));
        return;
    };
    match t {
        ValueType::Int64 => key::push_value(
            k,
            &EntityValue::Int64(c.as_primitive::<arrow::datatypes::Int64Type>().value(row)),
        ),
        ValueType::Int32 => key::push_value(
            k,
            &EntityValue::Int32(c.as_primitive::<arrow::datatypes::Int32Type>().value(row)),
        ),
        ValueType::Bytes => {
            key::push_value(k, &EntityValue::Bytes(c.as_binary::<i32>().value(row)))
        }
        ValueType::UnixTimestamp => key::push_value(
            k,
            &EntityValue::UnixTimestamp(
                c.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .value(row)
                    .div_euclid(1_000_000),
            ),
        ),
        _ => key::push_value(
            k,
            &EntityValue::String(c.as_string::<i32>().value(row).into()),
        ),
    }
}
