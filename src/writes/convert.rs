//! Pushed cells to typed values: strings parsed as the declared type, typed values
//! checked against it. Never a silent coercion: a value that does not fit is an error
//! that says what was expected and what came.

use crate::error::clip;
use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::value_type::Enum as ValueType;
use crate::proto::feast::types::{
    BoolList, BytesList, DoubleList, FloatList, Int32List, Int64List, StringList, Value,
};
use crate::serving::entities::type_label;

/// A string cell as a value of type `t` (`None`: a null). Numbers as Rust and Python
/// both read them, booleans as `true`/`false` in any case or `1`/`0`, times as ISO 8601
/// (naive is UTC) or epoch seconds, lists as a JSON array of such items. An empty
/// string is a null for every type but STRING.
pub(crate) fn parse_text(text: &str, t: ValueType) -> Result<Option<Val>, String> {
    if text.is_empty() && t != ValueType::String {
        return Ok(None);
    }
    if let Some(item) = crate::definitions::list_item_type(t) {
        let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|_| {
            format!(
                "expected {} as a JSON array, got {:?}",
                type_label(t),
                clip(text)
            )
        })?;
        return list_of(&items, item, t).map(Some);
    }
    scalar_text(text, t).map(Some)
}

fn scalar_text(text: &str, t: ValueType) -> Result<Val, String> {
    let bad = || format!("expected {}, got {:?}", type_label(t), clip(text));
    let trimmed = text.trim();
    Ok(match t {
        ValueType::String => Val::StringVal(text.to_owned()),
        ValueType::Bytes => Val::BytesVal(text.as_bytes().to_vec()),
        ValueType::Int32 => Val::Int32Val(trimmed.parse().map_err(|_| bad())?),
        ValueType::Int64 => Val::Int64Val(trimmed.parse().map_err(|_| bad())?),
        ValueType::Float => Val::FloatVal(trimmed.parse().map_err(|_| bad())?),
        ValueType::Double => Val::DoubleVal(trimmed.parse().map_err(|_| bad())?),
        ValueType::Bool => Val::BoolVal(match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad()),
        }),
        ValueType::UnixTimestamp => Val::UnixTimestampVal(time_text(trimmed).map_err(|_| bad())?),
        other => return Err(format!("{} values cannot be written", type_label(other))),
    })
}

/// Epoch seconds from ISO 8601 text or an integer.
pub(crate) fn time_text(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    crate::times::parse_time(text).map(|us| us.div_euclid(1_000_000))
}

fn list_of(items: &[serde_json::Value], item: ValueType, t: ValueType) -> Result<Val, String> {
    let bad = |v: &serde_json::Value| {
        format!(
            "expected {} items, got {}",
            type_label(item),
            clip(&v.to_string())
        )
    };
    let ints = || -> Result<Vec<i64>, String> {
        items
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| bad(v)))
            .collect()
    };
    let floats = || -> Result<Vec<f64>, String> {
        items
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| bad(v)))
            .collect()
    };
    let strings = || -> Result<Vec<String>, String> {
        items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(v)))
            .collect()
    };
    Ok(match item {
        ValueType::Int64 => Val::Int64ListVal(Int64List { val: ints()? }),
        ValueType::Int32 => Val::Int32ListVal(Int32List {
            val: ints()?
                .into_iter()
                .map(|v| i32::try_from(v).map_err(|_| format!("{v} does not fit INT32")))
                .collect::<Result<_, _>>()?,
        }),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "FLOAT is 32-bit by declaration"
        )]
        ValueType::Float => Val::FloatListVal(FloatList {
            val: floats()?.into_iter().map(|v| v as f32).collect(),
        }),
        ValueType::Double => Val::DoubleListVal(DoubleList { val: floats()? }),
        ValueType::String => Val::StringListVal(StringList { val: strings()? }),
        ValueType::Bytes => Val::BytesListVal(BytesList {
            val: strings()?.into_iter().map(String::into_bytes).collect(),
        }),
        ValueType::Bool => Val::BoolListVal(BoolList {
            val: items
                .iter()
                .map(|v| v.as_bool().ok_or_else(|| bad(v)))
                .collect::<Result<_, _>>()?,
        }),
        _ => return Err(format!("{} values cannot be written", type_label(t))),
    })
}

/// A typed cell checked against type `t` (`None`: a null). Accepted besides an exact
/// match: integers of the other width when the value fits, a FLOAT for a DOUBLE, an
/// integer for a DOUBLE or FLOAT when it is exactly representable, and INT64 epoch
/// seconds for a UNIX_TIMESTAMP. Anything else is an error.
pub(crate) fn check_typed(value: &Value, t: ValueType) -> Result<Option<Val>, String> {
    let Some(val) = &value.val else {
        return Ok(None);
    };
    let mismatch = || format!("expected {}, got {}", type_label(t), describe(val));
    let exact = |v: f64| -> bool { v.abs() <= 2f64.powi(53) };
    #[expect(clippy::cast_precision_loss, reason = "checked exact above")]
    let converted = match (t, val) {
        (_, Val::NullVal(_)) => return Ok(None),
        (ValueType::Int32, Val::Int32Val(_))
        | (ValueType::Int64, Val::Int64Val(_))
        | (ValueType::Float, Val::FloatVal(_))
        | (ValueType::Double, Val::DoubleVal(_))
        | (ValueType::String, Val::StringVal(_))
        | (ValueType::Bytes, Val::BytesVal(_))
        | (ValueType::Bool, Val::BoolVal(_))
        | (ValueType::UnixTimestamp, Val::UnixTimestampVal(_))
        | (ValueType::Int32List, Val::Int32ListVal(_))
        | (ValueType::Int64List, Val::Int64ListVal(_))
        | (ValueType::FloatList, Val::FloatListVal(_))
        | (ValueType::DoubleList, Val::DoubleListVal(_))
        | (ValueType::StringList, Val::StringListVal(_))
        | (ValueType::BytesList, Val::BytesListVal(_))
        | (ValueType::BoolList, Val::BoolListVal(_))
        | (ValueType::UnixTimestampList, Val::UnixTimestampListVal(_)) => val.clone(),
        (ValueType::Int64, Val::Int32Val(v)) => Val::Int64Val(i64::from(*v)),
        (ValueType::Int32, Val::Int64Val(v)) => {
            Val::Int32Val(i32::try_from(*v).map_err(|_| format!("int64 {v} does not fit INT32"))?)
        }
        (ValueType::Double, Val::FloatVal(v)) => Val::DoubleVal(f64::from(*v)),
        (ValueType::Double, Val::Int32Val(v)) => Val::DoubleVal(f64::from(*v)),
        (ValueType::Double, Val::Int64Val(v)) if exact(*v as f64) => Val::DoubleVal(*v as f64),
        (ValueType::Float, Val::Int32Val(v)) if v.unsigned_abs() <= 1 << 24 => {
            Val::FloatVal(*v as f32)
        }
        (ValueType::UnixTimestamp, Val::Int64Val(v)) => Val::UnixTimestampVal(*v),
        _ => return Err(mismatch()),
    };
    Ok(Some(converted))
}

/// Epoch seconds of a typed time cell: a UNIX_TIMESTAMP or INT64 (seconds), or a string
/// as [`time_text`] reads it.
pub(crate) fn typed_time(value: &Value) -> Result<i64, String> {
    match &value.val {
        Some(Val::UnixTimestampVal(v) | Val::Int64Val(v)) => Ok(*v),
        Some(Val::StringVal(s)) => time_text(s.trim()),
        Some(other) => Err(format!(
            "expected a time (UNIX_TIMESTAMP, INT64 epoch seconds or an ISO 8601 string), got {}",
            describe(other)
        )),
        None => Err("expected a time, got a null".to_owned()),
    }
}

/// A JSON cell (the HTTP API's `df`) as a value of type `t` (`None`: a null). Numbers
/// for numeric types (an integral number for integers), booleans for BOOL, arrays for
/// lists, and strings read as [`parse_text`] reads them (so `"2025-01-10T00:00:00"` for a
/// UNIX_TIMESTAMP, `"7"` for an INT64).
pub(crate) fn json_cell(v: &serde_json::Value, t: ValueType) -> Result<Option<Val>, String> {
    use serde_json::Value as J;
    let bad = || format!("expected {}, got {}", type_label(t), clip(&v.to_string()));
    Ok(Some(match v {
        J::Null => return Ok(None),
        J::String(s) => return parse_text(s, t),
        J::Array(items) => match crate::definitions::list_item_type(t) {
            Some(item) => list_of(items, item, t)?,
            None => return Err(bad()),
        },
        J::Bool(b) if t == ValueType::Bool => Val::BoolVal(*b),
        J::Number(n) => match t {
            ValueType::Int64 => Val::Int64Val(json_int(n).ok_or_else(bad)?),
            ValueType::Int32 => Val::Int32Val(
                json_int(n)
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(bad)?,
            ),
            ValueType::UnixTimestamp => Val::UnixTimestampVal(json_int(n).ok_or_else(bad)?),
            ValueType::Double => Val::DoubleVal(n.as_f64().ok_or_else(bad)?),
            #[expect(
                clippy::cast_possible_truncation,
                reason = "FLOAT is 32-bit by declaration"
            )]
            ValueType::Float => Val::FloatVal(n.as_f64().ok_or_else(bad)? as f32),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    }))
}

/// An integer, or a float with no fractional part (JSON writers may send `7.0`).
fn json_int(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// A JSON entity value (an HTTP request's entity column, or a join-key cell of a
/// write) as the `Value` the key coercion takes: integers as INT64, other numbers as
/// DOUBLE, strings and booleans as themselves, null as an empty value. Integers past
/// INT64, lists and objects are refused.
pub(crate) fn json_key(v: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    let val = match v {
        J::Null => None,
        J::Bool(b) => Some(Val::BoolVal(*b)),
        J::String(s) => Some(Val::StringVal(s.clone())),
        J::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Val::Int64Val(i),
            (None, _) if n.is_u64() => {
                return Err(format!(
                    "the integer {n} is out of range for an entity value (at most {})",
                    i64::MAX
                ));
            }
            (None, Some(f)) => Val::DoubleVal(f),
            (None, None) => return Err(format!("{n} is not a number an entity can have")),
        }),
        J::Array(_) => {
            return Err(
                "an entity value must be a string, number, boolean or null, not a list".into(),
            );
        }
        J::Object(_) => {
            return Err(
                "an entity value must be a string, number, boolean or null, not an object".into(),
            );
        }
    };
    Ok(Value { val })
}

/// Epoch seconds of a JSON time cell: an ISO 8601 string (naive is UTC) or a number of
/// epoch seconds.
pub(crate) fn json_time(v: &serde_json::Value) -> Result<i64, String> {
    let bad = || {
        format!(
            "expected a time (ISO 8601, naive is UTC, or epoch seconds), got {}",
            clip(&v.to_string())
        )
    };
    match v {
        serde_json::Value::String(s) => time_text(s.trim()).map_err(|_| bad()),
        serde_json::Value::Number(n) => json_int(n).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A value for messages: the scalar forms as reads describe them, lists by item type.
fn describe(val: &Val) -> String {
    match val {
        Val::Int32ListVal(_) => "an int32 list".into(),
        Val::Int64ListVal(_) => "an int64 list".into(),
        Val::FloatListVal(_) => "a float list".into(),
        Val::DoubleListVal(_) => "a double list".into(),
        Val::StringListVal(_) => "a string list".into(),
        Val::BytesListVal(_) => "a bytes list".into(),
        Val::BoolListVal(_) => "a bool list".into(),
        Val::UnixTimestampListVal(_) => "a unix_timestamp list".into(),
        other => crate::serving::entities::describe(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_parse_as_the_declared_type_or_fail() {
        assert_eq!(
            parse_text("42", ValueType::Int64),
            Ok(Some(Val::Int64Val(42)))
        );
        assert_eq!(
            parse_text(" 0.5 ", ValueType::Double),
            Ok(Some(Val::DoubleVal(0.5)))
        );
        assert_eq!(
            parse_text("True", ValueType::Bool),
            Ok(Some(Val::BoolVal(true)))
        );
        assert_eq!(parse_text("", ValueType::Double), Ok(None));
        assert_eq!(
            parse_text("", ValueType::String),
            Ok(Some(Val::StringVal(String::new())))
        );
        assert_eq!(
            parse_text("2025-01-02T00:00:00Z", ValueType::UnixTimestamp),
            Ok(Some(Val::UnixTimestampVal(1_735_776_000)))
        );
        assert_eq!(
            parse_text("[1, 2]", ValueType::Int64List),
            Ok(Some(Val::Int64ListVal(Int64List { val: vec![1, 2] })))
        );
        let err = parse_text("abc", ValueType::Double).unwrap_err();
        assert_eq!(err, "expected DOUBLE, got \"abc\"");
        assert!(parse_text("3000000000", ValueType::Int32).is_err());
        assert!(parse_text("[1, \"x\"]", ValueType::Int64List).is_err());
        assert!(parse_text("yes", ValueType::Bool).is_err());
    }

    #[test]
    fn json_cells_convert_to_the_declared_type() {
        use serde_json::json;
        assert_eq!(
            json_cell(&json!(7), ValueType::Int64),
            Ok(Some(Val::Int64Val(7)))
        );
        assert_eq!(
            json_cell(&json!(7.0), ValueType::Int32),
            Ok(Some(Val::Int32Val(7)))
        );
        assert_eq!(
            json_cell(&json!(0.5), ValueType::Float),
            Ok(Some(Val::FloatVal(0.5)))
        );
        assert_eq!(
            json_cell(&json!(true), ValueType::Bool),
            Ok(Some(Val::BoolVal(true)))
        );
        assert_eq!(json_cell(&json!(null), ValueType::String), Ok(None));
        assert_eq!(
            json_cell(&json!("2025-01-02T00:00:00"), ValueType::UnixTimestamp),
            Ok(Some(Val::UnixTimestampVal(1_735_776_000)))
        );
        assert_eq!(
            json_cell(&json!([1.5, 2]), ValueType::DoubleList),
            Ok(Some(Val::DoubleListVal(DoubleList {
                val: vec![1.5, 2.0]
            })))
        );
        assert_eq!(
            json_cell(&json!("fast"), ValueType::Double).unwrap_err(),
            "expected DOUBLE, got \"fast\""
        );
        assert!(json_cell(&json!(0.5), ValueType::Int64).is_err());
        assert!(json_cell(&json!(1), ValueType::Bool).is_err());
        assert!(json_cell(&json!([1]), ValueType::Int64).is_err());
        assert_eq!(json_time(&json!("2025-01-02T00:00:00Z")), Ok(1_735_776_000));
        assert_eq!(json_time(&json!(1_735_776_000)), Ok(1_735_776_000));
        assert!(json_time(&json!(true)).is_err());
    }

    #[test]
    fn typed_values_must_match_or_widen_exactly() {
        let v = |val| Value { val: Some(val) };
        assert_eq!(
            check_typed(&v(Val::Int32Val(3)), ValueType::Int64),
            Ok(Some(Val::Int64Val(3)))
        );
        assert_eq!(check_typed(&Value::default(), ValueType::Int64), Ok(None));
        assert!(check_typed(&v(Val::StringVal("3".into())), ValueType::Int64).is_err());
        assert!(check_typed(&v(Val::DoubleVal(0.5)), ValueType::Float).is_err());
        assert!(check_typed(&v(Val::Int64Val(1 << 40)), ValueType::Int32).is_err());
        assert_eq!(
            check_typed(&v(Val::Int64Val(7)), ValueType::Double),
            Ok(Some(Val::DoubleVal(7.0)))
        );
    }
}
