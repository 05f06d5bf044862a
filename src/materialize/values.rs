//! Arrow values to Feast's stored bytes: the serialized `feast.types.Value` Feast's
//! materialization writes for each declared type, and the `value_text` its SQLite
//! store keeps beside it.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, TimeUnit};
use prost::Message;

use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::proto::feast::types::{
    BoolList, BytesList, DoubleList, FloatList, Int32List, Int64List, StringList, Value,
};

/// The Arrow type a column is cast to before conversion, for a declared Feast type.
pub(crate) fn arrow_type(t: ValueType) -> Option<DataType> {
    let scalar = |t: ValueType| -> Option<DataType> {
        Some(match t {
            ValueType::Int32 => DataType::Int32,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float => DataType::Float32,
            ValueType::Double => DataType::Float64,
            ValueType::String => DataType::Utf8,
            ValueType::Bytes => DataType::Binary,
            ValueType::Bool => DataType::Boolean,
            ValueType::UnixTimestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            _ => return None,
        })
    };
    let Some(item) = crate::definitions::list_item_type(t) else {
        return scalar(t);
    };
    Some(DataType::List(std::sync::Arc::new(Field::new(
        "item",
        scalar(item)?,
        true,
    ))))
}

/// One stored value: the serialized `Value` and the SQLite `value_text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) bytes: Vec<u8>,
    pub(crate) text: Option<String>,
}

/// Python's `repr` of a float (what `str()` gives Feast's `value_text`).
pub(crate) fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Shortest round-trip digits and the decimal exponent, as `d.ddde±x`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let s = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{s}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let e_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{e_sign}{:02}", exp.unsigned_abs())
    }
}

/// A value as stored, with the `value_text` Feast's SQLite store keeps beside it:
/// `str()` of a scalar, nothing for bytes, times, lists and nulls.
pub(crate) fn stored_value(val: Option<Val>) -> Stored {
    let text = match &val {
        Some(Val::Int32Val(v)) => Some(v.to_string()),
        Some(Val::Int64Val(v)) => Some(v.to_string()),
        Some(Val::FloatVal(v)) => Some(python_float(f64::from(*v))),
        Some(Val::DoubleVal(v)) => Some(python_float(*v)),
        Some(Val::StringVal(v)) => Some(v.clone()),
        Some(Val::BoolVal(v)) => Some(if *v { "True" } else { "False" }.to_owned()),
        _ => None,
    };
    stored(val, text)
}

fn stored(val: Option<Val>, text: Option<String>) -> Stored {
    match val {
        // Feast stores a null as an empty Value: no bytes at all.
        None => Stored {
            bytes: Vec::new(),
            text: None,
        },
        Some(v) => Stored {
            bytes: Value { val: Some(v) }.encode_to_vec(),
            text,
        },
    }
}

/// Microseconds to whole seconds, rounding down (pandas' `Timestamp.timestamp()` then
/// `int()` truncates toward zero; materialized times are whole seconds in practice).
fn seconds(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

/// Value `row` of `column`, already cast to [`arrow_type`] of `t`; with its
/// `value_text` when `text` (only SQLite stores it).
pub(crate) fn value(column: &ArrayRef, row: usize, t: ValueType, text: bool) -> Stored {
    if column.is_null(row) {
        // pandas turns a missing timestamp into NaT, which Feast writes as i64::MIN.
        if t == ValueType::UnixTimestamp {
            return stored(Some(Val::UnixTimestampVal(i64::MIN)), None);
        }
        return stored(None, None);
    }
    match t {
        ValueType::Int32 => {
            let v = column
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(row);
            stored(Some(Val::Int32Val(v)), text.then(|| v.to_string()))
        }
        ValueType::Int64 => {
            let v = column
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(row);
            stored(Some(Val::Int64Val(v)), text.then(|| v.to_string()))
        }
        ValueType::Float => {
            let v = column
                .as_primitive::<arrow::datatypes::Float32Type>()
                .value(row);
            stored(
                Some(Val::FloatVal(v)),
                text.then(|| python_float(f64::from(v))),
            )
        }
        ValueType::Double => {
            let v = column
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(row);
            stored(Some(Val::DoubleVal(v)), text.then(|| python_float(v)))
        }
        ValueType::String => {
            let v = column.as_string::<i32>().value(row).to_owned();
            stored(Some(Val::StringVal(v.clone())), text.then_some(v))
        }
        ValueType::Bytes => {
            let v = column.as_binary::<i32>().value(row).to_vec();
            stored(Some(Val::BytesVal(v)), None)
        }
        ValueType::Bool => {
            let v = column.as_boolean().value(row);
            stored(
                Some(Val::BoolVal(v)),
                text.then(|| if v { "True" } else { "False" }.to_owned()),
            )
        }
        ValueType::UnixTimestamp => {
            let v = column
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row);
            stored(Some(Val::UnixTimestampVal(seconds(v))), None)
        }
        list => {
            let items = column.as_list::<i32>().value(row);
            stored(list_value(&items, list), None)
        }
    }
}

fn list_value(items: &ArrayRef, t: ValueType) -> Option<Val> {
    let n = items.len();
    Some(match t {
        ValueType::Int32List => Val::Int32ListVal(Int32List {
            val: (0..n)
                .map(|i| items.as_primitive::<arrow::datatypes::Int32Type>().value(i))
                .collect(),
        }),
        ValueType::Int64List => Val::Int64ListVal(Int64List {
            val: (0..n)
                .map(|i| items.as_primitive::<arrow::datatypes::Int64Type>().value(i))
                .collect(),
        }),
        ValueType::FloatList => Val::FloatListVal(FloatList {
            val: (0..n)
                .map(|i| {
                    items
                        .as_primitive::<arrow::datatypes::Float32Type>()
                        .value(i)
                })
                .collect(),
        }),
        ValueType::DoubleList => Val::DoubleListVal(DoubleList {
            val: (0..n)
                .map(|i| {
                    items
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .value(i)
                })
                .collect(),
        }),
        ValueType::StringList => Val::StringListVal(StringList {
            val: (0..n)
                .map(|i| items.as_string::<i32>().value(i).to_owned())
                .collect(),
        }),
        ValueType::BytesList => Val::BytesListVal(BytesList {
            val: (0..n)
                .map(|i| items.as_binary::<i32>().value(i).to_vec())
                .collect(),
        }),
        ValueType::BoolList => Val::BoolListVal(BoolList {
            val: (0..n).map(|i| items.as_boolean().value(i)).collect(),
        }),
        ValueType::UnixTimestampList => Val::UnixTimestampListVal(Int64List {
            val: (0..n)
                .map(|i| {
                    seconds(
                        items
                            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                            .value(i),
                    )
                })
                .collect(),
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::python_float;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, want) in [
            (12.5, "12.5"),
            (0.0, "0.0"),
            (1234.5, "1234.5"),
            (f64::from(0.21_f32), "0.20999999344348907"),
            (1e16, "1e+16"),
            (123_456_789_012_345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (3.0, "3.0"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(python_float(x), want, "{x}");
        }
    }
}
