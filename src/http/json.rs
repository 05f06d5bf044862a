//! JSON text exactly as `feast serve` writes it (Python's `json.dumps` with
//! `ensure_ascii=False` and compact separators, over Feast's `convert_response_to_dict`).
//!
//! Owns: strings, Python's float `repr`, base64, RFC 3339 times with Feast's adaptive
//! precision, and a serialized `feast.types.Value` written as JSON straight from its
//! protobuf bytes (no message decoded, nothing allocated but the output).
//! Does not own: the response's layout (`response.rs`).

use std::io::Write as _;

use base64::Engine as _;

/// Appends `s` as a JSON string the way Python's `json.dumps(..., ensure_ascii=False)`
/// does: `"` `\` and control characters escaped, everything else as UTF-8.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escaped.is_empty() {
            // Python writes the remaining control characters as lowercase \u00XX.
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `s` as Python's `json.dumps(s)` with its defaults (`ensure_ascii=True`)
/// would: every non-ASCII character as `\uXXXX` (surrogate pairs above U+FFFF).
pub(crate) fn ascii_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push(b'"');
}

/// Appends an integer.
pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    let _ = write!(out, "{n}");
}

/// Appends `f` as Python's `json.dumps` writes a float that
/// `convert_response_to_dict` passed through: `repr(f)` when finite (shortest digits
/// that read back as `f`; exponent form below 1e-4 and from 1e16), else the protobuf
/// JSON strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(crate) fn float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
        return;
    }
    if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
        return;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python's repr,
    // as `d.ddde<exp>`; only the layout differs.
    let mut sci = [0u8; 40];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut sci[..]);
        let _ = write!(cursor, "{f:e}");
        cursor.position() as usize
    };
    let sci = &sci[..len];
    let (negative, sci) = match sci.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sci),
    };
    let e_at = sci.iter().position(|&b| b == b'e').unwrap_or(sci.len());
    let (mantissa, exponent) = sci.split_at(e_at);
    let exponent: i32 = std::str::from_utf8(exponent.get(1..).unwrap_or_default())
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 24];
    let mut n = 0;
    for &d in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        if n < digits.len() {
            digits[n] = d;
            n += 1;
        }
    }
    let digits = &digits[..n.max(1)];
    if negative {
        out.push(b'-');
    }
    if !(-5 < exponent && exponent < 16) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
        return;
    }
    // Fixed notation: the decimal point after `point` digits.
    let point = exponent + 1;
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else {
        let point = point as usize;
        if point < digits.len() {
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        } else {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', point - digits.len()));
            out.extend_from_slice(b".0");
        }
    }
}

/// Appends bytes as a JSON string of their standard base64 (with padding).
pub(crate) fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// Appends a `google.protobuf.Timestamp` as Feast's feature server writes it: RFC 3339
/// in UTC with `Z`, fractional seconds only when non-zero, as 3, 6 or 9 digits.
pub(crate) fn timestamp(out: &mut Vec<u8>, seconds: i64, nanos: i32) {
    out.push(b'"');
    civil(out, seconds);
    match nanos {
        n if n <= 0 || n >= 1_000_000_000 => {}
        n if n % 1_000_000 == 0 => {
            let _ = write!(out, ".{:03}", n / 1_000_000);
        }
        n if n % 1_000 == 0 => {
            let _ = write!(out, ".{:06}", n / 1_000);
        }
        n => {
            let _ = write!(out, ".{n:09}");
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// `YYYY-MM-DDTHH:MM:SS` of epoch seconds, UTC.
fn civil(out: &mut Vec<u8>, seconds: i64) {
    let _ = write!(out, "{}", crate::times::IsoUtc(seconds));
}

/// A serialized value that is not what `feast.types.Value` allows (the stores check
/// values before serving them, so this means a bug or a store changed underneath).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stored value is not a well-formed feast.types.Value (byte {0})")]
pub(crate) struct BadValue(pub usize);

/// Nesting followed before giving up (protobuf's recursion limit).
const MAX_DEPTH: u32 = 100;

/// Feast's null sentinel for timestamps (`NULL_TIMESTAMP_INT_VALUE`).
const NULL_TIMESTAMP: i64 = i64::MIN;

/// One field of a protobuf message.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the outermost value, for error positions.
    base: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn bad(&self) -> BadValue {
        BadValue(self.base + self.pos)
    }

    fn varint(&mut self) -> Result<u64, BadValue> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or_else(|| self.bad())?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift.min(63);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.bad())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BadValue> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.bad())?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(|| self.bad())?;
        self.pos = end;
        Ok(bytes)
    }

    /// The next field: its number, its payload and the payload's offset.
    fn next_field(&mut self) -> Result<Option<(u32, Field<'a>, usize)>, BadValue> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| self.bad())?;
        let at = self.base + self.pos;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(self.take(8)?.try_into().map_err(|_| self.bad())?),
            5 => Field::Fixed32(self.take(4)?.try_into().map_err(|_| self.bad())?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.bad())?;
                Field::Bytes(self.take(len)?)
            }
            _ => return Err(self.bad()),
        };
        Ok(Some((number, field, at)))
    }
}

/// The element kind of a list or set field of `Value`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Element {
    Bytes,
    Str,
    Int32,
    Int64,
    Double,
    Float,
    Bool,
}

/// Appends the serialized `feast.types.Value` in `value` as Feast's
/// `_value_to_native` renders it (unset and `null_val` as `null`, bytes as base64,
/// float32 widened to double, lists as arrays, maps as objects).
pub(crate) fn value(out: &mut Vec<u8>, value: &[u8]) -> Result<(), BadValue> {
    value_at(out, value, 0, 0)
}

fn value_at(out: &mut Vec<u8>, bytes: &[u8], base: usize, depth: u32) -> Result<(), BadValue> {
    if depth > MAX_DEPTH {
        return Err(BadValue(base));
    }
    // `val` is a oneof: the last known member on the wire wins.
    let mut fields = Fields::new(bytes, base);
    let mut chosen = None;
    while let Some((number, field, at)) = fields.next_field()? {
        if matches!(number, 1..=8 | 11..=29 | 32..=48) {
            chosen = Some((number, field, at));
        }
    }
    let Some((number, field, at)) = chosen else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let bad = || BadValue(at);
    match (number, field) {
        (1, Field::Bytes(b)) => base64(out, b),
        (2 | 32 | 36 | 37 | 44, Field::Bytes(b)) => {
            string(out, std::str::from_utf8(b).map_err(|_| bad())?);
        }
        (3, Field::Varint(v)) => int(out, i64::from(v as i32)),
        (4 | 8, Field::Varint(v)) => int(out, v as i64),
        (5, Field::Fixed64(b)) => float(out, f64::from_le_bytes(b)),
        (6, Field::Fixed32(b)) => float(out, f64::from(f32::from_le_bytes(b))),
        (7, Field::Varint(v)) => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
        (11 | 22, Field::Bytes(b)) => list(out, b, at, Element::Bytes)?,
        (12 | 23 | 33 | 38..=41 | 45 | 46, Field::Bytes(b)) => list(out, b, at, Element::Str)?,
        (13 | 24, Field::Bytes(b)) => list(out, b, at, Element::Int32)?,
        (14 | 18 | 25 | 29, Field::Bytes(b)) => list(out, b, at, Element::Int64)?,
        (15 | 26, Field::Bytes(b)) => list(out, b, at, Element::Double)?,
        (16 | 27, Field::Bytes(b)) => list(out, b, at, Element::Float)?,
        (17 | 28, Field::Bytes(b)) => list(out, b, at, Element::Bool)?,
        (19 | 47, _) => out.extend_from_slice(b"null"),
        (20 | 34, Field::Bytes(b)) => map(out, b, at, depth)?,
        (21 | 35, Field::Bytes(b)) => {
            out.push(b'[');
            let mut maps = Fields::new(b, at);
            let mut first = true;
            while let Some((n, field, at)) = maps.next_field()? {
                if let (1, Field::Bytes(m)) = (n, field) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    map(out, m, at, depth)?;
                }
            }
            out.push(b']');
        }
        (42 | 43, Field::Bytes(b)) => {
            out.push(b'[');
            let mut items = Fields::new(b, at);
            let mut first = true;
            while let Some((n, field, at)) = items.next_field()? {
                if let (1, Field::Bytes(v)) = (n, field) {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    value_at(out, v, at, depth + 1)?;
                }
            }
            out.push(b']');
        }
        (48, Field::Bytes(b)) => zoned(out, b, at)?,
        _ => return Err(bad()),
    }
    Ok(())
}

/// A list or set message (`repeated T val = 1`), packed or not.
fn list(out: &mut Vec<u8>, bytes: &[u8], base: usize, element: Element) -> Result<(), BadValue> {
    out.push(b'[');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    let mut fields = Fields::new(bytes, base);
    while let Some((number, field, at)) = fields.next_field()? {
        if number != 1 {
            continue;
        }
        match (element, field) {
            (Element::Bytes, Field::Bytes(b)) => {
                sep(out);
                base64(out, b);
            }
            (Element::Str, Field::Bytes(b)) => {
                sep(out);
                string(out, std::str::from_utf8(b).map_err(|_| BadValue(at))?);
            }
            (Element::Int32 | Element::Int64 | Element::Bool, Field::Varint(v)) => {
                sep(out);
                scalar(out, element, v);
            }
            (Element::Double, Field::Fixed64(b)) => {
                sep(out);
                float(out, f64::from_le_bytes(b));
            }
            (Element::Float, Field::Fixed32(b)) => {
                sep(out);
                float(out, f64::from(f32::from_le_bytes(b)));
            }
            // Packed: the elements back to back in one length-delimited field.
            (Element::Int32 | Element::Int64 | Element::Bool, Field::Bytes(b)) => {
                let mut packed = Fields::new(b, at);
                while packed.pos < b.len() {
                    let v = packed.varint()?;
                    sep(out);
                    scalar(out, element, v);
                }
            }
            (Element::Double, Field::Bytes(b)) => {
                let chunks = b.chunks_exact(8);
                if !chunks.remainder().is_empty() {
                    return Err(BadValue(at));
                }
                for c in chunks {
                    sep(out);
                    float(
                        out,
                        f64::from_le_bytes(c.try_into().map_err(|_| BadValue(at))?),
                    );
                }
            }
            (Element::Float, Field::Bytes(b)) => {
                let chunks = b.chunks_exact(4);
                if !chunks.remainder().is_empty() {
                    return Err(BadValue(at));
                }
                for c in chunks {
                    sep(out);
                    let f = f32::from_le_bytes(c.try_into().map_err(|_| BadValue(at))?);
                    float(out, f64::from(f));
                }
            }
            _ => return Err(BadValue(at)),
        }
    }
    out.push(b']');
    Ok(())
}

fn scalar(out: &mut Vec<u8>, element: Element, v: u64) {
    match element {
        Element::Int32 => int(out, i64::from(v as i32)),
        Element::Bool => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
        _ => int(out, v as i64),
    }
}

/// A `Map` message (`map<string, Value> val = 1`) as a JSON object, in wire order.
fn map(out: &mut Vec<u8>, bytes: &[u8], base: usize, depth: u32) -> Result<(), BadValue> {
    out.push(b'{');
    let mut first = true;
    let mut entries = Fields::new(bytes, base);
    while let Some((number, field, at)) = entries.next_field()? {
        let (1, Field::Bytes(entry)) = (number, field) else {
            continue;
        };
        let mut key = "";
        let mut val: (&[u8], usize) = (&[], at);
        let mut parts = Fields::new(entry, at);
        while let Some((n, part, part_at)) = parts.next_field()? {
            match (n, part) {
                (1, Field::Bytes(k)) => {
                    key = std::str::from_utf8(k).map_err(|_| BadValue(part_at))?;
                }
                (2, Field::Bytes(v)) => val = (v, part_at),
                _ => {}
            }
        }
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, key);
        out.push(b':');
        value_at(out, val.0, val.1, depth + 1)?;
    }
    out.push(b'}');
    Ok(())
}

/// A `ZonedTimestamp` as Python's `datetime.isoformat()` in its zone: UTC and fixed
/// offsets (`UTC`, `+05:30`, `UTC-07:00`, `+0530`) exactly; other zone names in UTC.
fn zoned(out: &mut Vec<u8>, bytes: &[u8], base: usize) -> Result<(), BadValue> {
    let mut seconds = 0i64;
    let mut zone = "";
    let mut fields = Fields::new(bytes, base);
    while let Some((number, field, at)) = fields.next_field()? {
        match (number, field) {
            (1, Field::Varint(v)) => seconds = v as i64,
            (2, Field::Bytes(z)) => zone = std::str::from_utf8(z).map_err(|_| BadValue(at))?,
            _ => {}
        }
    }
    if seconds == NULL_TIMESTAMP {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let offset = fixed_offset(zone).unwrap_or(0);
    out.push(b'"');
    civil(out, seconds.saturating_add(offset));
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    let _ = write!(out, "{sign}{:02}:{:02}\"", abs / 3600, abs / 60 % 60);
    Ok(())
}

/// Seconds east of UTC of a fixed-offset zone name, as Feast writes them.
fn fixed_offset(zone: &str) -> Option<i64> {
    let rest = zone
        .strip_prefix("UTC")
        .or_else(|| zone.strip_prefix("GMT"))
        .unwrap_or(zone);
    if rest.is_empty() {
        return Some(0);
    }
    let (sign, hm) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (h, m) = match hm.split_once(':') {
        Some((h, m)) => (h, m),
        None if hm.len() == 4 => hm.split_at(2),
        None => (hm, "0"),
    };
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::feast::types::value::Val;
    use crate::proto::feast::types::{self as t, Value};
    use prost::Message;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn json(v: Val) -> String {
        let bytes = Value { val: Some(v) }.encode_to_vec();
        text(|out| value(out, &bytes).unwrap())
    }

    #[test]
    fn floats_as_python_repr() {
        // Each pair is (value, Python's repr), checked with CPython 3.11.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1234.5, "1234.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000123, "0.000123"),
            (0.0000123, "1.23e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e300, "1e+300"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::from(0.11f32), "0.10999999940395355"),
            (f64::NAN, "\"NaN\""),
            (f64::INFINITY, "\"Infinity\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ];
        for &(f, want) in cases {
            assert_eq!(text(|out| float(out, f)), want, "{f:e}");
        }
    }

    #[test]
    fn strings_as_python_json_dumps() {
        assert_eq!(
            text(|out| string(out, "a\"b\\c\nd\u{1}é☃")),
            "\"a\\\"b\\\\c\\nd\\u0001é☃\""
        );
        assert_eq!(
            text(|out| ascii_string(out, "é😀\"")),
            "\"\\u00e9\\ud83d\\ude00\\\"\""
        );
    }

    #[test]
    fn timestamps_with_adaptive_precision() {
        assert_eq!(text(|o| timestamp(o, 0, 0)), "\"1970-01-01T00:00:00Z\"");
        assert_eq!(
            text(|o| timestamp(o, 1_736_467_200, 0)),
            "\"2025-01-10T00:00:00Z\""
        );
        assert_eq!(
            text(|o| timestamp(o, 1_736_467_200, 5_000_000)),
            "\"2025-01-10T00:00:00.005Z\""
        );
        assert_eq!(
            text(|o| timestamp(o, 1_736_467_200, 5_000)),
            "\"2025-01-10T00:00:00.000005Z\""
        );
        assert_eq!(
            text(|o| timestamp(o, 1_736_467_200, 5)),
            "\"2025-01-10T00:00:00.000000005Z\""
        );
        assert_eq!(text(|o| timestamp(o, -1, 0)), "\"1969-12-31T23:59:59Z\"");
    }

    #[test]
    fn values_as_feast_renders_them() {
        assert_eq!(
            json(Val::Int64Val(9_007_199_254_740_993)),
            "9007199254740993"
        );
        assert_eq!(json(Val::Int32Val(-5)), "-5");
        assert_eq!(json(Val::FloatVal(0.11)), "0.10999999940395355");
        assert_eq!(json(Val::DoubleVal(0.91)), "0.91");
        assert_eq!(json(Val::BoolVal(true)), "true");
        assert_eq!(json(Val::StringVal("alice".into())), "\"alice\"");
        assert_eq!(json(Val::BytesVal(vec![0, 1, 255])), "\"AAH/\"");
        assert_eq!(
            json(Val::UnixTimestampVal(i64::MIN)),
            "-9223372036854775808"
        );
        assert_eq!(json(Val::NullVal(0)), "null");
        assert_eq!(
            text(|out| value(out, &Value { val: None }.encode_to_vec()).unwrap()),
            "null"
        );
        assert_eq!(
            json(Val::DoubleListVal(t::DoubleList {
                val: vec![4.5, 4.75]
            })),
            "[4.5,4.75]"
        );
        assert_eq!(
            json(Val::FloatListVal(t::FloatList {
                val: vec![0.5, f32::NAN]
            })),
            "[0.5,\"NaN\"]"
        );
        assert_eq!(
            json(Val::Int64ListVal(t::Int64List { val: vec![-5, 7] })),
            "[-5,7]"
        );
        assert_eq!(
            json(Val::Int32ListVal(t::Int32List { val: vec![-1] })),
            "[-1]"
        );
        assert_eq!(
            json(Val::BoolListVal(t::BoolList {
                val: vec![true, false]
            })),
            "[true,false]"
        );
        assert_eq!(
            json(Val::StringListVal(t::StringList { val: vec![] })),
            "[]"
        );
        assert_eq!(
            json(Val::BytesListVal(t::BytesList {
                val: vec![vec![1], vec![]]
            })),
            "[\"AQ==\",\"\"]"
        );
        assert_eq!(
            json(Val::ListVal(t::RepeatedValue {
                val: vec![
                    Value {
                        val: Some(Val::Int64Val(1))
                    },
                    Value { val: None }
                ]
            })),
            "[1,null]"
        );
        assert_eq!(
            json(Val::MapVal(t::Map {
                val: [(
                    "k".to_owned(),
                    Value {
                        val: Some(Val::StringVal("v".into()))
                    }
                )]
                .into()
            })),
            "{\"k\":\"v\"}"
        );
        assert_eq!(
            json(Val::ZonedTimestampVal(t::ZonedTimestamp {
                unix_timestamp: 1_736_467_200,
                zone: "+05:30".into()
            })),
            "\"2025-01-10T05:30:00+05:30\""
        );
        assert_eq!(
            json(Val::ZonedTimestampVal(t::ZonedTimestamp {
                unix_timestamp: 1_736_467_200,
                zone: String::new()
            })),
            "\"2025-01-10T00:00:00+00:00\""
        );
    }

    #[test]
    fn unpacked_lists_and_bad_bytes() {
        // An unpacked int64 list: two separate varint fields 1.
        let list = [0x08, 0x01, 0x08, 0x02];
        let mut bytes = vec![(14 << 3) | 2, list.len() as u8];
        bytes.extend_from_slice(&list);
        assert_eq!(text(|o| value(o, &bytes).unwrap()), "[1,2]");
        // A length running past the end.
        assert!(value(&mut Vec::new(), &[(2 << 3) | 2, 9, b'a']).is_err());
    }
}
