//! Entity columns of a request: validation, type coercion and key encoding.
//!
//! Owns: turning the request's columnar entity values into distinct serialized keys
//! per key set, with the map from each request row to its key (rows that repeat an
//! entity are read once and fanned out). Does not own: which join keys a view needs
//! (the plan says).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{clip, clipped, clipped_list};
use crate::proto::feast::types::Value;
use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::proto::tern::wire::Column;
use crate::store::{EntityValue, KeyBatch, key};

use super::plan::KeySetSpec;

/// A request's entity columns that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    /// `entities` is empty.
    #[error(
        "the request has no entity columns: set `entities` to one column per join key, e.g. {{\"driver_id\": [1001]}}"
    )]
    NoEntities,
    /// A column with no values.
    #[error("entity column '{column}' has no values: give at least one row")]
    EmptyColumn {
        /// Column name.
        column: String,
    },
    /// Columns of different lengths.
    #[error(
        "entity column '{column}' has {len} values but '{first}' has {first_len}: all entity columns must have one value per row"
    )]
    Ragged {
        /// The column that differs.
        column: String,
        /// Its length.
        len: usize,
        /// The first column.
        first: String,
        /// Its length.
        first_len: usize,
    },
    /// A join key a requested view needs is not in the request.
    #[error(
        "missing join key '{column}' needed by feature view '{view}': add an entity column '{column}' (the request has: {provided})"
    )]
    MissingJoinKey {
        /// Expected request column.
        column: String,
        /// A view needing it.
        view: String,
        /// Columns the request has, comma-separated.
        provided: String,
    },
    /// A value that cannot be converted to the join key's type.
    #[error("entity column '{column}' row {row}: cannot use {found} as a {target} join key value")]
    Coercion {
        /// Column name.
        column: String,
        /// Zero-based row.
        row: usize,
        /// The value given, described.
        found: String,
        /// The join key's type.
        target: &'static str,
    },
}

/// The request's entity columns, validated: distinct names in request order (a
/// repeated name keeps its first position and its last values, as a map would).
#[derive(Debug)]
pub struct EntityRows<'a> {
    /// Number of rows.
    pub rows: usize,
    /// `(name, values)` per column.
    pub columns: Vec<(&'a str, &'a [Value])>,
}

impl<'a> EntityRows<'a> {
    /// Validates the columns of a request.
    pub fn new(columns: &'a [Column]) -> Result<Self, EntityError> {
        let mut out: Vec<(&'a str, &'a [Value])> = Vec::with_capacity(columns.len());
        for c in columns {
            let values = c.value.as_ref().map_or(&[][..], |v| v.val.as_slice());
            match out.iter_mut().find(|(name, _)| *name == c.key) {
                Some(existing) => existing.1 = values,
                None => out.push((c.key.as_str(), values)),
            }
        }
        let Some(&(first, first_values)) = out.first() else {
            return Err(EntityError::NoEntities);
        };
        for &(name, values) in &out {
            if values.is_empty() {
                return Err(EntityError::EmptyColumn {
                    column: clipped(name),
                });
            }
            if values.len() != first_values.len() {
                return Err(EntityError::Ragged {
                    column: clipped(name),
                    len: values.len(),
                    first: clipped(first),
                    first_len: first_values.len(),
                });
            }
        }
        Ok(Self {
            rows: first_values.len(),
            columns: out,
        })
    }

    /// Values of column `name`.
    pub fn column(&self, name: &str) -> Option<&'a [Value]> {
        self.columns
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// Distinct keys of one key set and, per request row, the index of its key.
#[derive(Debug)]
pub struct Keys {
    /// Distinct serialized keys.
    pub batch: Arc<KeyBatch>,
    /// `row_to_key[row]` indexes `batch`.
    pub row_to_key: Vec<u32>,
}

/// Encodes the keys of every row for one key set, deduplicated.
pub fn encode_keys(rows: &EntityRows<'_>, set: &KeySetSpec) -> Result<Keys, EntityError> {
    if set.entityless {
        let mut k = set.prefix.clone();
        key::push_value(&mut k, &EntityValue::String(Cow::Borrowed("")));
        let mut batch = KeyBatch::with_capacity(1, k.len());
        batch.push(&k);
        return Ok(Keys {
            batch: Arc::new(batch),
            row_to_key: vec![0; rows.rows],
        });
    }
    let mut columns = Vec::with_capacity(set.columns.len());
    for c in &set.columns {
        let values = rows
            .column(&c.request_column)
            .or_else(|| c.fallback_column.as_deref().and_then(|f| rows.column(f)))
            .ok_or_else(|| EntityError::MissingJoinKey {
                column: c.request_column.clone(),
                view: set.view.clone(),
                provided: clipped_list(rows.columns.iter().map(|(n, _)| *n)),
            })?;
        columns.push((c, values));
    }

    let approx = set.prefix.len() + 16 * columns.len();
    // Every row's key, written in place; most requests repeat no entity, and then
    // this is the batch that is read.
    let mut candidates = KeyBatch::with_capacity(rows.rows, approx);
    for row in 0..rows.rows {
        candidates.push_built(|buf| {
            buf.extend_from_slice(&set.prefix);
            for (c, values) in &columns {
                let value =
                    coerce(&values[row], c.value_type).map_err(|found| EntityError::Coercion {
                        column: c.request_column.clone(),
                        row,
                        found,
                        target: type_label(c.value_type),
                    })?;
                key::push_value(buf, &value);
            }
            Ok(())
        })?;
    }
    if rows.rows <= 1 {
        return Ok(Keys {
            batch: Arc::new(candidates),
            row_to_key: (0..rows.rows as u32).collect(),
        });
    }

    // Each distinct key is read once: rows map to their key's first occurrence.
    let mut row_to_key = Vec::with_capacity(rows.rows);
    let mut distinct: Vec<u32> = Vec::new();
    {
        let mut seen: HashMap<&[u8], u32, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(rows.rows, Default::default());
        for i in 0..candidates.len() {
            let next = u32::try_from(seen.len()).unwrap_or(u32::MAX);
            let idx = *seen.entry(candidates.get(i)).or_insert_with(|| {
                distinct.push(i as u32);
                next
            });
            row_to_key.push(idx);
        }
    }
    let batch = if distinct.len() == candidates.len() {
        candidates
    } else {
        let mut batch = KeyBatch::with_capacity(distinct.len(), approx);
        for &i in &distinct {
            batch.push(candidates.get(i as usize));
        }
        batch
    };
    Ok(Keys {
        batch: Arc::new(batch),
        row_to_key,
    })
}

/// Converts a request value to the join key's type. The type is part of the stored
/// key, so an int32 sent for an int64 key would otherwise silently miss. Accepted:
/// integers of either width (in range), integral finite floats, and decimal strings
/// for integer keys; integers for string keys. `Err` describes the value.
pub fn coerce(value: &Value, target: ValueType) -> Result<EntityValue<'_>, String> {
    let Some(val) = value.val.as_ref() else {
        return Err("an empty value (no value set)".into());
    };
    let as_i64 = || -> Option<i64> {
        match val {
            Val::Int64Val(v) | Val::UnixTimestampVal(v) => Some(*v),
            Val::Int32Val(v) => Some(i64::from(*v)),
            Val::DoubleVal(f) => integral(*f),
            Val::FloatVal(f) => integral(f64::from(*f)),
            Val::StringVal(s) => s.parse::<i64>().ok(),
            _ => None,
        }
    };
    let converted = match target {
        ValueType::Int64 => as_i64().map(EntityValue::Int64),
        ValueType::UnixTimestamp => as_i64().map(EntityValue::UnixTimestamp),
        ValueType::Int32 => as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .map(EntityValue::Int32),
        ValueType::String => match val {
            Val::StringVal(s) => Some(EntityValue::String(Cow::Borrowed(s))),
            Val::Int64Val(v) => Some(EntityValue::String(Cow::Owned(v.to_string()))),
            Val::Int32Val(v) => Some(EntityValue::String(Cow::Owned(v.to_string()))),
            _ => None,
        },
        ValueType::Bytes => match val {
            Val::BytesVal(b) => Some(EntityValue::Bytes(b)),
            _ => None,
        },
        // No declared type: use the value as sent, if it can be a key at all.
        ValueType::Invalid => match val {
            Val::StringVal(s) => Some(EntityValue::String(Cow::Borrowed(s))),
            Val::BytesVal(b) => Some(EntityValue::Bytes(b)),
            Val::Int32Val(v) => Some(EntityValue::Int32(*v)),
            Val::Int64Val(v) => Some(EntityValue::Int64(*v)),
            Val::UnixTimestampVal(v) => Some(EntityValue::UnixTimestamp(*v)),
            _ => None,
        },
        _ => None,
    };
    converted.ok_or_else(|| describe(val))
}

fn integral(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything at or above it does not fit.
    (f.is_finite() && f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63))
        .then_some(f as i64)
}

/// A request value for messages (`string "abc"`, `int64 3`).
pub(crate) fn describe(val: &Val) -> String {
    match val {
        Val::StringVal(s) => format!("string {:?}", clip(s)),
        Val::Int32Val(v) => format!("int32 {v}"),
        Val::Int64Val(v) => format!("int64 {v}"),
        Val::DoubleVal(v) => format!("double {v}"),
        Val::FloatVal(v) => format!("float {v}"),
        Val::BoolVal(v) => format!("bool {v}"),
        Val::BytesVal(b) => format!("bytes of length {}", b.len()),
        Val::UnixTimestampVal(v) => format!("unix_timestamp {v}"),
        Val::NullVal(_) => "a null value".into(),
        _ => "a list, set or map value".into(),
    }
}

/// Name of a join key type in messages.
pub fn type_label(t: ValueType) -> &'static str {
    match t {
        ValueType::Int64 => "INT64",
        ValueType::Int32 => "INT32",
        ValueType::String => "STRING",
        ValueType::Bytes => "BYTES",
        ValueType::UnixTimestamp => "UNIX_TIMESTAMP",
        ValueType::Invalid => "untyped",
        other => other.as_str_name(),
    }
}

/// The request value re-typed as the join key's type, as a `feast.types.Value` (what
/// the response echoes in entity columns). `None` when it cannot be converted.
pub fn coerced_value(value: &Value, target: ValueType) -> Option<Value> {
    let v = match coerce(value, target).ok()? {
        EntityValue::String(s) => Val::StringVal(s.into_owned()),
        EntityValue::Bytes(b) => Val::BytesVal(b.to_vec()),
        EntityValue::Int32(v) => Val::Int32Val(v),
        EntityValue::Int64(v) => Val::Int64Val(v),
        EntityValue::UnixTimestamp(v) => Val::UnixTimestampVal(v),
    };
    Some(Value { val: Some(v) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(val: Val) -> Value {
        Value { val: Some(val) }
    }

    #[test]
    fn coercion_table() {
        use ValueType::*;
        let ok = [
            (v(Val::Int64Val(1001)), Int64, EntityValue::Int64(1001)),
            (v(Val::Int32Val(7)), Int64, EntityValue::Int64(7)),
            (v(Val::DoubleVal(1001.0)), Int64, EntityValue::Int64(1001)),
            (v(Val::FloatVal(3.0)), Int64, EntityValue::Int64(3)),
            (
                v(Val::StringVal("1001".into())),
                Int64,
                EntityValue::Int64(1001),
            ),
            (
                v(Val::StringVal("-5".into())),
                Int64,
                EntityValue::Int64(-5),
            ),
            (v(Val::Int64Val(5)), Int32, EntityValue::Int32(5)),
            (
                v(Val::StringVal("12".into())),
                Int32,
                EntityValue::Int32(12),
            ),
            (
                v(Val::Int64Val(42)),
                String,
                EntityValue::String(Cow::Owned("42".into())),
            ),
            (
                v(Val::StringVal("c1".into())),
                String,
                EntityValue::String(Cow::Owned("c1".into())),
            ),
            (
                v(Val::BytesVal(vec![1, 2])),
                Bytes,
                EntityValue::Bytes(&[1, 2]),
            ),
            (
                v(Val::Int64Val(9)),
                UnixTimestamp,
                EntityValue::UnixTimestamp(9),
            ),
        ];
        for (value, target, expected) in ok {
            assert_eq!(
                coerce(&value, target).as_ref(),
                Ok(&expected),
                "{value:?} -> {target:?}"
            );
        }
        let bad = [
            (v(Val::StringVal("abc".into())), Int64),
            (v(Val::DoubleVal(1001.5)), Int64),
            (v(Val::DoubleVal(f64::NAN)), Int64),
            (v(Val::DoubleVal(1e300)), Int64),
            (v(Val::BoolVal(true)), Int64),
            (v(Val::BytesVal(vec![1])), Int64),
            (v(Val::Int64Val(1 << 40)), Int32),
            (v(Val::DoubleVal(1.0)), String),
            (v(Val::StringVal("x".into())), Bytes),
            (Value::default(), Int64),
            (v(Val::NullVal(0)), String),
        ];
        for (value, target) in bad {
            assert!(
                coerce(&value, target).is_err(),
                "{value:?} -> {target:?} should fail"
            );
        }
    }

    fn column(name: &str, values: Vec<Value>) -> Column {
        Column {
            key: name.into(),
            value: Some(crate::proto::feast::types::RepeatedValue { val: values }),
        }
    }

    #[test]
    fn duplicate_rows_share_one_key() {
        use crate::config::KeySerialization;
        use crate::serving::plan::{KeyColumn, KeySetSpec};
        let set = KeySetSpec {
            columns: vec![KeyColumn {
                request_column: "driver_id".into(),
                fallback_column: None,
                join_key: "driver_id".into(),
                value_type: ValueType::Int64,
            }],
            prefix: key::key_prefix(&["driver_id"], KeySerialization::V3),
            entityless: false,
            view: "v".into(),
        };
        let cols = [column(
            "driver_id",
            vec![
                v(Val::Int64Val(7)),
                v(Val::StringVal("8".into())),
                v(Val::Int32Val(7)),
                v(Val::Int64Val(7)),
            ],
        )];
        let keys = encode_keys(&EntityRows::new(&cols).unwrap(), &set).unwrap();
        assert_eq!(keys.batch.len(), 2, "7 is read once for its three rows");
        assert_eq!(keys.row_to_key, [0, 1, 0, 0]);
    }

    #[test]
    fn column_validation() {
        assert_eq!(EntityRows::new(&[]).unwrap_err(), EntityError::NoEntities);
        let ragged = [
            column("a", vec![v(Val::Int64Val(1)), v(Val::Int64Val(2))]),
            column("b", vec![v(Val::Int64Val(1))]),
        ];
        let err = EntityRows::new(&ragged).unwrap_err();
        assert!(
            err.to_string().contains("'b' has 1 values but 'a' has 2"),
            "{err}"
        );
        let empty = [column("a", vec![])];
        assert!(matches!(
            EntityRows::new(&empty),
            Err(EntityError::EmptyColumn { .. })
        ));
        let repeated = [
            column("a", vec![v(Val::Int64Val(1))]),
            column("b", vec![v(Val::Int64Val(5))]),
            column("a", vec![v(Val::Int64Val(2))]),
        ];
        let rows = EntityRows::new(&repeated).unwrap();
        assert_eq!(rows.columns.len(), 2);
        assert_eq!(rows.columns[0].0, "a");
        assert_eq!(
            rows.column("a").unwrap()[0],
            v(Val::Int64Val(2)),
            "last value wins"
        );
    }
}
