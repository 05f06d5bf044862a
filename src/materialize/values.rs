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

/// Python's `repr` of a float (what `str()` gives Feast's `value_text`). One
/// allocation: SQLite materialization calls it for every float it stores.
pub(crate) fn python_float(x: f64) -> String {
    use std::io::Write as _;
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Shortest round-trip digits and the decimal exponent, from `d.ddde±x`
    // (at most 17 digits, a sign, a point and a 4-character exponent).
    let mut sci = [0u8; 32];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut sci[..]);
        if write!(cursor, "{:e}", x.abs()).is_err() {
            return format!("{x}");
        }
        cursor.position() as usize
    };
    let sci = &sci[..len];
    let e = sci.iter().position(|&b| b == b'e').unwrap_or(len);
    let exp: i32 = std::str::from_utf8(&sci[(e + 1).min(len)..])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 32];
    let mut n = 0;
    for &b in sci[..e].iter().filter(|b| b.is_ascii_digit()) {
        digits[n] = b;
        n += 1;
    }
    let digits = &digits[..n];
    let mut out = String::with_capacity(n + 8);
    if x < 0.0 {
        out.push('-');
    }
    let push = |out: &mut String, bytes: &[u8]| {
        out.extend(bytes.iter().map(|&b| char::from(b)));
    };
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            push(&mut out, digits);
        } else if point as usize >= digits.len() {
            push(&mut out, digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
            out.push_str(".0");
        } else {
            let (a, b) = digits.split_at(point as usize);
            push(&mut out, a);
            out.push('.');
            push(&mut out, b);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        push(&mut out, first);
        if !rest.is_empty() {
            out.push('.');
            push(&mut out, rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            out.push('0');
        }
        out.push_str(&magnitude.to_string());
    }
    out
}

/// Appends `val`'s `value_text` (what Feast's SQLite store keeps beside a value: `str()`
/// of a scalar) to `out`; false, with nothing written, for bytes, times and lists.
fn push_text(val: &Val, out: &mut String) -> bool {
    use std::fmt::Write as _;
    match val {
        Val::Int32Val(v) => write!(out, "{v}").is_ok(),
        Val::Int64Val(v) => write!(out, "{v}").is_ok(),
        Val::FloatVal(v) => {
            out.push_str(&python_float(f64::from(*v)));
            true
        }
        Val::DoubleVal(v) => {
            out.push_str(&python_float(*v));
            true
        }
        Val::StringVal(v) => {
            out.push_str(v);
            true
        }
        Val::BoolVal(v) => {
            out.push_str(if *v { "True" } else { "False" });
            true
        }
        _ => false,
    }
}

/// A value as stored, with the `value_text` Feast's SQLite store keeps beside it:
/// `str()` of a scalar, nothing for bytes, times, lists and nulls.
pub(crate) fn stored_value(val: Option<Val>) -> Stored {
    let mut text = String::new();
    let has_text = val.as_ref().is_some_and(|v| push_text(v, &mut text));
    stored(val, has_text.then_some(text))
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

/// Appends value `row` of `column` (already cast to [`arrow_type`] of `t`) to `bytes` as
/// the serialized `Value` Feast stores (nothing for a null), and, when `text` is given
/// (only SQLite stores it), its `value_text` to it. Answers whether there is a text.
/// Appending to buffers shared by a row's values keeps materialization to a couple of
/// allocations per entity instead of one or two per value.
pub(crate) fn push_value(
    column: &ArrayRef,
    row: usize,
    t: ValueType,
    bytes: &mut Vec<u8>,
    text: Option<&mut String>,
) -> bool {
    let val = if column.is_null(row) {
        // pandas turns a missing timestamp into NaT, which Feast writes as i64::MIN;
        // any other null is stored as no bytes at all.
        if t != ValueType::UnixTimestamp {
            return false;
        }
        Some(Val::UnixTimestampVal(i64::MIN))
    } else {
        match t {
            ValueType::Int32 => Some(Val::Int32Val(
                column
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .value(row),
            )),
            ValueType::Int64 => Some(Val::Int64Val(
                column
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(row),
            )),
            ValueType::Float => Some(Val::FloatVal(
                column
                    .as_primitive::<arrow::datatypes::Float32Type>()
                    .value(row),
            )),
            ValueType::Double => Some(Val::DoubleVal(
                column
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .value(row),
            )),
            ValueType::String => Some(Val::StringVal(
                column.as_string::<i32>().value(row).to_owned(),
            )),
            ValueType::Bytes => Some(Val::BytesVal(column.as_binary::<i32>().value(row).to_vec())),
            ValueType::Bool => Some(Val::BoolVal(column.as_boolean().value(row))),
            ValueType::UnixTimestamp => Some(Val::UnixTimestampVal(seconds(
                column
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .value(row),
            ))),
            list => list_value(&column.as_list::<i32>().value(row), list),
        }
    };
    let Some(val) = val else {
        return false;
    };
    let has_text = text.is_some_and(|out| push_text(&val, out));
    // Encoding into a Vec cannot fail (it grows as needed).
    let _ = Value { val: Some(val) }.encode(bytes);
    has_text
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
            (-1.5e-300, "-1.5e-300"),
            (-0.00012, "-0.00012"),
            (1e22, "1e+22"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-0.0, "-0.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e15, "1000000000000000.0"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
        ] {
            assert_eq!(python_float(x), want, "{x}");
        }
    }
}
